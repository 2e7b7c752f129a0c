//! `/api/v1/auth`: log in with e-mail and password (and the Telegram second factor), refresh
//! (rotating), log out, sessions (list, revoke one, revoke the others), re-authenticate before
//! a sensitive change, the second factor, who am I. Telegram sign-in and QR login are in
//! `telegram_auth`, API tokens in `api_tokens`.

use std::sync::Arc;

use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::param::{Header, Path};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, SecurityScheme, Tags};
use secrecy::SecretString;
use uuid::Uuid;

use super::api_tokens::ApiTokenRole;
use super::context::{caller, client_of};
use super::error::ApiError;
use crate::app::{
    App, LoginKind, LoginOutcome, LoginPoll, PendingLogin, Principal, Reauthentication,
    ReauthenticationPoll, Tokens,
};

#[derive(Tags)]
pub(super) enum ApiTags {
    /// Logging in and out, sessions, Telegram sign-in, QR login, the second factor.
    Auth,
    /// Long-lived tokens for API clients and auditors.
    ApiTokens,
}

/// A bearer token: an access token (JWT) from a login or `/refresh`, or an API token (`sfp_…`)
/// from `POST /api/v1/api-tokens`.
#[derive(SecurityScheme)]
#[oai(
    ty = "bearer",
    bearer_format = "JWT or sfp_ API token",
    checker = "check_bearer"
)]
pub struct BearerAuth(pub Principal);

/// The edge may have authenticated this very credential already (rate limits, idempotency,
/// uploads): then its principal is used, so a request costs one session lookup.
async fn check_bearer(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    if let Some(principal) = super::client::authenticated(req, &bearer.token) {
        return Ok(principal);
    }
    let app = req
        .data::<Arc<App>>()
        .ok_or_else(|| poem::Error::from_status(poem::http::StatusCode::INTERNAL_SERVER_ERROR))?;
    app.authenticate(&bearer.token)
        .await
        .map_err(|err| ApiError::from(err).into())
}

/// E-mail and password.
#[derive(Object)]
pub struct LoginRequest {
    #[oai(validator(max_length = 254))]
    pub email: String,
    #[oai(validator(max_length = 1024))]
    pub password: String,
}

/// A refresh token (shown once, at login or on the previous refresh).
#[derive(Object)]
pub struct RefreshRequest {
    #[oai(validator(max_length = 256))]
    pub refresh_token: String,
}

/// Tokens for a session.
#[derive(Object)]
pub struct TokenResponse {
    /// Send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Exchange at `/api/v1/auth/refresh` before the access token expires; valid once.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub session_id: uuid::Uuid,
}

impl From<Tokens> for TokenResponse {
    fn from(tokens: Tokens) -> Self {
        Self {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            token_type: "Bearer".into(),
            expires_in: tokens.expires_in.as_secs(),
            session_id: tokens.session_id,
        }
    }
}

/// A login waiting for Telegram. Poll its `GET` endpoint with the header
/// `X-Poll-Secret: <poll_secret>` until it answers 200 with the tokens.
#[derive(Object)]
pub struct PendingLoginView {
    pub login_id: Uuid,
    /// `second_factor_required` (approve in Telegram) or `pending` (still waiting).
    pub status: String,
    /// Shown once, only to this client; sent as `X-Poll-Secret` when polling.
    #[oai(skip_serializing_if_is_none)]
    pub poll_secret: Option<String>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

impl PendingLoginView {
    pub(super) fn started(pending: PendingLogin, status: &str) -> Self {
        Self {
            login_id: pending.login_id,
            status: status.into(),
            poll_secret: Some(pending.poll_secret),
            expires_at: pending.expires_at,
        }
    }
}

#[derive(ApiResponse)]
pub enum LoginResponse {
    /// Signed in.
    #[oai(status = 200)]
    Tokens(Json<TokenResponse>),
    /// The password is right and the account confirms logins in Telegram: approve it there,
    /// then poll `GET /api/v1/auth/login/{login_id}`.
    #[oai(status = 202)]
    SecondFactorRequired(Json<PendingLoginView>),
}

#[derive(ApiResponse)]
pub enum PollResponse {
    /// Approved: the session's tokens. Answered once; polling again is 410 `login-completed`.
    #[oai(status = 200)]
    Completed(Json<TokenResponse>),
    /// Not decided yet; poll again (every 1–2 s) until `expires_at`.
    #[oai(status = 202)]
    Pending(Json<PendingLoginView>),
}

impl PollResponse {
    pub(super) fn from_poll(login_id: Uuid, poll: LoginPoll) -> Self {
        match poll {
            LoginPoll::Completed(tokens) => PollResponse::Completed(Json(tokens.into())),
            LoginPoll::Pending { expires_at } => PollResponse::Pending(Json(PendingLoginView {
                login_id,
                status: "pending".into(),
                poll_secret: None,
                expires_at,
            })),
        }
    }
}

/// Whether the caller confirms logins in Telegram.
#[derive(Object)]
pub struct SecondFactorSetting {
    pub enabled: bool,
}

/// Prove it is you again, before a sensitive change.
#[derive(Object)]
pub struct ReauthenticateRequest {
    /// The account's password. Leave it out to approve in Telegram instead (the Telegram user
    /// linked to the account gets the request).
    #[oai(validator(max_length = 1024))]
    pub password: Option<String>,
}

/// The session may now make one sensitive change.
#[derive(Object)]
pub struct Reauthenticated {
    /// Until when the re-authentication can be used (once).
    pub reauthenticated_until: chrono::DateTime<chrono::Utc>,
}

#[derive(ApiResponse)]
pub enum ReauthenticateResponse {
    /// Re-authenticated: make the change before `reauthenticated_until`.
    #[oai(status = 200)]
    Done(Json<Reauthenticated>),
    /// Waiting for the approval in Telegram: poll
    /// `GET /api/v1/auth/reauthenticate/{login_id}` with `X-Poll-Secret`.
    #[oai(status = 202)]
    ApprovalRequired(Json<PendingLoginView>),
}

/// How many sessions were revoked.
#[derive(Object)]
pub struct RevokedSessions {
    pub revoked: u64,
}

/// The limits of the API token used for this request.
#[derive(Object)]
pub struct TokenScopeView {
    pub token_id: Uuid,
    pub store_ids: Vec<Uuid>,
    pub role: ApiTokenRole,
    pub read_only: bool,
}

/// Who the caller is.
#[derive(Object)]
pub struct Me {
    pub account_id: Uuid,
    pub platform_admin: bool,
    /// The session of the access token; absent for an API token.
    #[oai(skip_serializing_if_is_none)]
    pub session_id: Option<Uuid>,
    /// Present when the caller used an API token.
    #[oai(skip_serializing_if_is_none)]
    pub api_token: Option<TokenScopeView>,
    #[oai(skip_serializing_if_is_none)]
    pub telegram_user_id: Option<i64>,
    /// Whether logins with the password are confirmed in Telegram.
    pub second_factor: bool,
}

/// One open session of the caller.
#[derive(Object)]
pub struct SessionView {
    pub session_id: uuid::Uuid,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_seen_at: chrono::DateTime<chrono::Utc>,
    pub user_agent: Option<String>,
    pub client_ip: Option<String>,
    /// Whether this is the session of the token used for this request.
    pub current: bool,
}

#[derive(ApiResponse)]
pub enum LoggedOut {
    /// The session is closed; its tokens no longer work.
    #[oai(status = 204)]
    Done,
}

pub struct AuthApi {
    pub app: Arc<App>,
}

#[OpenApi(prefix_path = "/api/v1/auth", tag = "ApiTags::Auth")]
impl AuthApi {
    /// Log in with e-mail and password; opens a session. For an account with the Telegram
    /// second factor, answers 202 with a pending login to approve in Telegram.
    #[oai(path = "/login", method = "post", operation_id = "auth_login")]
    async fn login(
        &self,
        req: &Request,
        body: Json<LoginRequest>,
    ) -> Result<LoginResponse, ApiError> {
        let (ip, agent) = client_of(req);
        let outcome = self
            .app
            .sign_in(
                &body.0.email,
                SecretString::from(body.0.password),
                ip,
                agent,
            )
            .await?;
        Ok(match outcome {
            LoginOutcome::Tokens(tokens) => LoginResponse::Tokens(Json(tokens.into())),
            LoginOutcome::SecondFactorRequired(pending) => LoginResponse::SecondFactorRequired(
                Json(PendingLoginView::started(pending, "second_factor_required")),
            ),
        })
    }

    /// Poll a login waiting for its second factor: 202 while pending, 200 with the tokens once
    /// approved (once only), 401 `login-denied`, 410 `login-expired` / `login-completed`.
    #[oai(
        path = "/login/:login_id",
        method = "get",
        operation_id = "auth_login_poll"
    )]
    async fn poll_login(
        &self,
        login_id: Path<Uuid>,
        /// The `poll_secret` the login answered with.
        #[oai(
            name = "X-Poll-Secret",
            validator(max_length = 128, pattern = "^[!-~]+$")
        )]
        poll_secret: Header<String>,
    ) -> Result<PollResponse, ApiError> {
        let poll = self
            .app
            .poll_login(LoginKind::SecondFactor, login_id.0, &poll_secret.0)
            .await?;
        Ok(PollResponse::from_poll(login_id.0, poll))
    }

    /// Exchange a refresh token for new tokens. Each refresh token works once; presenting one
    /// again revokes the whole session.
    #[oai(path = "/refresh", method = "post", operation_id = "auth_refresh")]
    async fn refresh(
        &self,
        req: &Request,
        body: Json<RefreshRequest>,
    ) -> Result<Json<TokenResponse>, ApiError> {
        let (ip, agent) = client_of(req);
        let tokens = self.app.refresh(&body.0.refresh_token, ip, agent).await?;
        Ok(Json(tokens.into()))
    }

    /// Close the session a refresh token belongs to.
    #[oai(path = "/logout", method = "post", operation_id = "auth_logout")]
    async fn logout(&self, body: Json<RefreshRequest>) -> Result<LoggedOut, ApiError> {
        self.app.logout(&body.0.refresh_token).await?;
        Ok(LoggedOut::Done)
    }

    /// The caller's open sessions, newest first.
    #[oai(path = "/sessions", method = "get", operation_id = "auth_sessions")]
    async fn sessions(&self, auth: BearerAuth) -> Result<Json<Vec<SessionView>>, ApiError> {
        let sessions = self.app.sessions(&auth.0).await?;
        Ok(Json(
            sessions
                .into_iter()
                .map(|s| SessionView {
                    current: Some(s.session_id) == auth.0.session_id(),
                    session_id: s.session_id,
                    created_at: s.created_at,
                    last_seen_at: s.last_seen_at,
                    user_agent: s.user_agent,
                    client_ip: s.client_ip,
                })
                .collect(),
        ))
    }

    /// Revoke one of the caller's sessions (its tokens stop working at once). Another
    /// account's session is 404.
    #[oai(
        path = "/sessions/:session_id",
        method = "delete",
        operation_id = "auth_revoke_session"
    )]
    async fn revoke_session(
        &self,
        auth: BearerAuth,
        session_id: Path<Uuid>,
    ) -> Result<LoggedOut, ApiError> {
        self.app.revoke_session(&auth.0, session_id.0).await?;
        Ok(LoggedOut::Done)
    }

    /// Revoke every session of the caller except the current one ("log out everywhere else").
    #[oai(
        path = "/sessions/revoke-others",
        method = "post",
        operation_id = "auth_revoke_other_sessions"
    )]
    async fn revoke_other_sessions(
        &self,
        auth: BearerAuth,
    ) -> Result<Json<RevokedSessions>, ApiError> {
        let revoked = self.app.revoke_other_sessions(&auth.0).await?;
        Ok(Json(RevokedSessions { revoked }))
    }

    /// Turn the Telegram second factor on or off for the caller. On needs a linked Telegram
    /// account (`POST /api/v1/auth/telegram/link`) and a configured bot. A change needs a
    /// re-authentication first (`POST /api/v1/auth/reauthenticate`; else 403
    /// `reauthentication-required`), uses it up, and revokes the caller's other sessions.
    #[oai(
        path = "/second-factor",
        method = "put",
        operation_id = "auth_set_second_factor"
    )]
    async fn set_second_factor(
        &self,
        req: &Request,
        auth: BearerAuth,
        body: Json<SecondFactorSetting>,
    ) -> Result<Json<SecondFactorSetting>, ApiError> {
        self.app
            .set_second_factor(&caller(req, auth.0), body.0.enabled)
            .await?;
        Ok(body)
    }

    /// Prove it is you again, with the password or an approval in Telegram, before changing
    /// how the account signs in (linking Telegram, the second factor). Good for one change
    /// within a few minutes. With the Telegram second factor on, the right password is
    /// followed by an approval in Telegram (202), as a log-in is. Password attempts are
    /// throttled per account (429 `login-throttled`); a wrong password is 403
    /// `reauthentication-failed`.
    #[oai(
        path = "/reauthenticate",
        method = "post",
        operation_id = "auth_reauthenticate"
    )]
    async fn reauthenticate(
        &self,
        req: &Request,
        auth: BearerAuth,
        body: Json<ReauthenticateRequest>,
    ) -> Result<ReauthenticateResponse, ApiError> {
        let (ip, agent) = client_of(req);
        let outcome = match body.0.password {
            Some(password) => {
                self.app
                    .reauthenticate_with_password(&auth.0, SecretString::from(password), ip, agent)
                    .await?
            }
            None => Reauthentication::ApprovalRequired(
                self.app
                    .start_telegram_reauthentication(&auth.0, ip, agent)
                    .await?,
            ),
        };
        Ok(match outcome {
            Reauthentication::Done { until } => {
                ReauthenticateResponse::Done(Json(Reauthenticated {
                    reauthenticated_until: until,
                }))
            }
            Reauthentication::ApprovalRequired(pending) => {
                ReauthenticateResponse::ApprovalRequired(Json(PendingLoginView::started(
                    pending,
                    "approval_required",
                )))
            }
        })
    }

    /// Poll a re-authentication waiting for its approval in Telegram (from the session that
    /// asked): 202 while pending, 200 once approved (once only), 401 `login-denied`, 410
    /// `login-expired` / `login-completed`.
    #[oai(
        path = "/reauthenticate/:login_id",
        method = "get",
        operation_id = "auth_reauthenticate_poll"
    )]
    async fn poll_reauthentication(
        &self,
        auth: BearerAuth,
        login_id: Path<Uuid>,
        /// The `poll_secret` the re-authentication answered with.
        #[oai(
            name = "X-Poll-Secret",
            validator(max_length = 128, pattern = "^[!-~]+$")
        )]
        poll_secret: Header<String>,
    ) -> Result<ReauthenticateResponse, ApiError> {
        let poll = self
            .app
            .poll_reauthentication(&auth.0, login_id.0, &poll_secret.0)
            .await?;
        Ok(match poll {
            ReauthenticationPoll::Completed { until } => {
                ReauthenticateResponse::Done(Json(Reauthenticated {
                    reauthenticated_until: until,
                }))
            }
            ReauthenticationPoll::Pending { expires_at } => {
                ReauthenticateResponse::ApprovalRequired(Json(PendingLoginView {
                    login_id: login_id.0,
                    status: "pending".into(),
                    poll_secret: None,
                    expires_at,
                }))
            }
        })
    }

    /// Who the caller is: account, session or API token scope, Telegram link, second factor.
    #[oai(path = "/me", method = "get", operation_id = "auth_me")]
    async fn me(&self, auth: BearerAuth) -> Result<Json<Me>, ApiError> {
        let principal = auth.0;
        let telegram_user_id = self.app.telegram_of(principal.account_id()).await?;
        let second_factor = self
            .app
            .second_factor_enabled(principal.account_id())
            .await?;
        Ok(Json(Me {
            account_id: principal.account_id().0,
            platform_admin: principal.claims_platform_admin(),
            session_id: principal.session_id(),
            api_token: principal.token_scope().map(|scope| TokenScopeView {
                token_id: scope.token_id,
                store_ids: scope.store_ids.iter().map(|s| s.0).collect(),
                role: scope.role.into(),
                read_only: scope.read_only,
            }),
            telegram_user_id,
            second_factor,
        }))
    }
}
