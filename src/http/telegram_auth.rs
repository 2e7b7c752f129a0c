//! `/api/v1/auth/telegram*` and `/api/v1/auth/qr*`: signing in with Telegram (Login Widget for
//! staff, Mini App `initData` for customers), linking a Telegram account, and QR login.

use std::collections::BTreeMap;
use std::sync::Arc;

use poem::Request;
use poem_openapi::param::{Header, Path};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

use super::auth::{ApiTags, BearerAuth, PollResponse, TokenResponse};
use super::context::{caller, client_of};
use super::error::ApiError;
use crate::app::{App, LoginKind};

/// The fields the Telegram Login Widget hands to its callback, unchanged. `hash` signs all
/// the others.
#[derive(Object)]
pub struct TelegramWidgetData {
    /// Telegram user id.
    pub id: i64,
    #[oai(validator(max_length = 256))]
    pub first_name: Option<String>,
    #[oai(validator(max_length = 256))]
    pub last_name: Option<String>,
    #[oai(validator(max_length = 64))]
    pub username: Option<String>,
    #[oai(validator(max_length = 2048))]
    pub photo_url: Option<String>,
    /// Unix time of the sign-in; older than the server's window is refused.
    pub auth_date: i64,
    /// Hex HMAC-SHA256 of the other fields, keyed with SHA-256 of the bot token.
    #[oai(validator(max_length = 128))]
    pub hash: String,
}

impl TelegramWidgetData {
    /// The fields as received, for the data-check string (absent ones are not part of it).
    fn fields(self) -> BTreeMap<String, String> {
        let mut fields = BTreeMap::new();
        fields.insert("id".to_owned(), self.id.to_string());
        fields.insert("auth_date".to_owned(), self.auth_date.to_string());
        fields.insert("hash".to_owned(), self.hash);
        for (key, value) in [
            ("first_name", self.first_name),
            ("last_name", self.last_name),
            ("username", self.username),
            ("photo_url", self.photo_url),
        ] {
            if let Some(value) = value {
                fields.insert(key.to_owned(), value);
            }
        }
        fields
    }
}

/// A Mini App's `Telegram.WebApp.initData`, the raw query string.
#[derive(Object)]
pub struct WebAppRequest {
    #[oai(validator(min_length = 1, max_length = 8192))]
    pub init_data: String,
}

/// A Mini App user's session.
#[derive(Object)]
pub struct WebAppLoginResponse {
    pub account_id: Uuid,
    /// Whether this sign-in created the customer account.
    pub registered: bool,
    pub tokens: TokenResponse,
}

/// The Telegram user now linked to the caller's account.
#[derive(Object)]
pub struct TelegramLinked {
    pub telegram_user_id: i64,
}

/// A QR login to show. Poll `GET /api/v1/auth/qr/{login_id}` with `X-Poll-Secret`.
#[derive(Object)]
pub struct QrLoginView {
    pub login_id: Uuid,
    /// Shown once, only to this client; never put it in the QR code or a URL.
    pub poll_secret: String,
    /// `https://t.me/<bot>?start=login_<token>`: opening it and confirming in the bot signs
    /// this client in as the confirming Telegram user's account.
    pub deep_link: String,
    /// The deep link as an SVG QR code.
    pub qr_svg: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

pub struct TelegramAuthApi {
    pub app: Arc<App>,
}

#[OpenApi(prefix_path = "/api/v1/auth", tag = "ApiTags::Auth")]
impl TelegramAuthApi {
    /// Sign in with the Telegram Login Widget. The Telegram user must be linked to an account
    /// (staff are never created here): unknown users get 401 `unknown-telegram-user`.
    #[oai(path = "/telegram", method = "post", operation_id = "auth_telegram")]
    async fn telegram(
        &self,
        req: &Request,
        body: Json<TelegramWidgetData>,
    ) -> Result<Json<TokenResponse>, ApiError> {
        let (ip, agent) = client_of(req);
        let tokens = self
            .app
            .login_with_telegram(&body.0.fields(), ip, agent)
            .await?;
        Ok(Json(tokens.into()))
    }

    /// Link the caller's account to the Telegram user of Login Widget data (replacing an
    /// earlier link). A Telegram user belongs to one account at most (409
    /// `telegram-already-linked`). A new link needs a re-authentication first
    /// (`POST /api/v1/auth/reauthenticate`; else 403 `reauthentication-required`), uses it up,
    /// and revokes the caller's other sessions.
    #[oai(
        path = "/telegram/link",
        method = "post",
        operation_id = "auth_telegram_link"
    )]
    async fn link(
        &self,
        req: &Request,
        auth: BearerAuth,
        body: Json<TelegramWidgetData>,
    ) -> Result<Json<TelegramLinked>, ApiError> {
        let caller = caller(req, auth.0);
        let telegram_user_id = self.app.link_telegram(&caller, &body.0.fields()).await?;
        Ok(Json(TelegramLinked { telegram_user_id }))
    }

    /// Sign in from the shop's Telegram Mini App with its `initData`; a Telegram user without
    /// an account becomes a customer. Customers only (a staff account is 403
    /// `mini-app-customers-only`), and each `initData` once (again: 401
    /// `telegram-data-replayed`).
    #[oai(
        path = "/telegram/webapp",
        method = "post",
        operation_id = "auth_telegram_webapp"
    )]
    async fn webapp(
        &self,
        req: &Request,
        body: Json<WebAppRequest>,
    ) -> Result<Json<WebAppLoginResponse>, ApiError> {
        let (ip, agent) = client_of(req);
        let login = self
            .app
            .login_with_web_app(&body.0.init_data, ip, agent)
            .await?;
        Ok(Json(WebAppLoginResponse {
            account_id: login.account_id.0,
            registered: login.registered,
            tokens: login.tokens.into(),
        }))
    }

    /// Start a QR login: show `qr_svg` (or `deep_link`), keep `poll_secret` to yourself, and
    /// poll until someone confirms it in the bot.
    #[oai(path = "/qr", method = "post", operation_id = "auth_qr_start")]
    async fn qr_start(&self, req: &Request) -> Result<Json<QrLoginView>, ApiError> {
        let (ip, agent) = client_of(req);
        let qr = self.app.start_qr_login(ip, agent).await?;
        Ok(Json(QrLoginView {
            login_id: qr.pending.login_id,
            poll_secret: qr.pending.poll_secret,
            deep_link: qr.deep_link,
            qr_svg: qr.qr_svg,
            expires_at: qr.pending.expires_at,
        }))
    }

    /// Poll a QR login: 202 while pending, 200 with the tokens once confirmed (once only), 410
    /// `login-expired` / `login-completed`.
    #[oai(path = "/qr/:login_id", method = "get", operation_id = "auth_qr_poll")]
    async fn qr_poll(
        &self,
        login_id: Path<Uuid>,
        /// The `poll_secret` the QR login answered with.
        #[oai(
            name = "X-Poll-Secret",
            validator(max_length = 128, pattern = "^[!-~]+$")
        )]
        poll_secret: Header<String>,
    ) -> Result<PollResponse, ApiError> {
        let poll = self
            .app
            .poll_login(LoginKind::Qr, login_id.0, &poll_secret.0)
            .await?;
        Ok(PollResponse::from_poll(login_id.0, poll))
    }
}
