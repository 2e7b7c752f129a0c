//! `/api/v1/auth`: log in with e-mail and password, refresh (rotating), log out, list sessions.

use std::sync::Arc;

use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, SecurityScheme, Tags};
use secrecy::SecretString;

use super::context::client_of;
use super::error::ApiError;
use crate::app::{App, Principal, Tokens};

#[derive(Tags)]
enum ApiTags {
    /// Logging in and out, sessions.
    Auth,
}

/// A bearer access token from `POST /api/v1/auth/login` or `/refresh`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "check_bearer")]
pub struct BearerAuth(pub Principal);

async fn check_bearer(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
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
    /// Log in with e-mail and password; opens a session.
    #[oai(path = "/login", method = "post", operation_id = "auth_login")]
    async fn login(
        &self,
        req: &Request,
        body: Json<LoginRequest>,
    ) -> Result<Json<TokenResponse>, ApiError> {
        let (ip, agent) = client_of(req);
        let tokens = self
            .app
            .login(
                &body.0.email,
                SecretString::from(body.0.password),
                ip,
                agent,
            )
            .await?;
        Ok(Json(tokens.into()))
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
                    current: s.session_id == auth.0.session_id,
                    session_id: s.session_id,
                    created_at: s.created_at,
                    last_seen_at: s.last_seen_at,
                    user_agent: s.user_agent,
                    client_ip: s.client_ip,
                })
                .collect(),
        ))
    }
}
