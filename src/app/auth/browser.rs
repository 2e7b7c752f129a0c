//! Sessions of the console in a browser (src/console/, docs/console.md).
//!
//! A browser never holds an access or refresh token: any login (password, second factor, QR,
//! Telegram) opens an ordinary session, whose refresh token is dropped at once, and the browser
//! gets an opaque secret (`sfb_` + 32 random bytes) in an HttpOnly cookie instead; only its
//! SHA-256 is kept. The session is listed and revoked like any other, and a blocked account's
//! browser sessions stop working with its tokens.
//!
//! Forms are protected by a CSRF token bound to the session: an HMAC of its id under the
//! service's signing secret, so it needs no storage and dies with the session.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use super::sessions::revoke;
use super::{random_secret, token_hash, AuthError, Tokens};
use crate::app::{App, AppError, Principal};
use aggregates::AccountId;

/// Every browser-session secret starts with this, told apart from API tokens and JWTs.
pub const BROWSER_SESSION_PREFIX: &str = "sfb_";

/// A browser session left unused this long ends (a console left open on a shop counter).
pub const BROWSER_IDLE_HOURS: i32 = 12;

/// A session opened for a browser: the secret for its cookie, and until when it holds.
#[derive(Debug)]
pub struct BrowserSession {
    pub secret: String,
    pub session_id: Uuid,
    pub expires_at: DateTime<Utc>,
}

impl App {
    /// Turns a just-opened session into a browser session: its refresh token is dropped (the
    /// browser never sees one) and a cookie secret, valid as long as a refresh token would
    /// be, is issued in its place.
    pub async fn open_browser_session(&self, tokens: Tokens) -> Result<BrowserSession, AppError> {
        let secret = format!("{BROWSER_SESSION_PREFIX}{}", random_secret());
        let now = crate::app::now();
        let ttl = chrono::Duration::from_std(self.auth.settings.refresh_token_ttl)
            .map_err(|e| AppError::Internal(Box::new(e)))?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("delete from refresh_tokens where session_id = $1")
            .bind(tokens.session_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "insert into browser_sessions (secret_hash, session_id, created_at, expires_at)
             values ($1, $2, $3, $4)",
        )
        .bind(token_hash(&secret))
        .bind(tokens.session_id)
        .bind(now)
        .bind(now + ttl)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(BrowserSession {
            secret,
            session_id: tokens.session_id,
            expires_at: now + ttl,
        })
    }

    /// The caller a browser-session secret (the console's cookie) stands for, and until when:
    /// the session must be open, unexpired, used within [`BROWSER_IDLE_HOURS`], and its
    /// account not blocked. Touches the session's `last_seen_at` at most once a minute. Only
    /// the console and its live feed call this: the secret is no bearer token for the API.
    pub async fn authenticate_browser(
        &self,
        secret: &str,
    ) -> Result<(Principal, Option<DateTime<Utc>>), AppError> {
        let now = crate::app::now();
        let row: Option<(Uuid, Uuid, DateTime<Utc>, bool)> = sqlx::query_as(
            "with live as (
               select s.session_id, s.account_id, b.expires_at
                 from browser_sessions b
                 join auth_sessions s on s.session_id = b.session_id
                where b.secret_hash = $1 and b.expires_at > $2 and s.revoked_at is null
                  and s.last_seen_at > $2 - make_interval(hours => $3)
                  and not exists (select 1 from accounts a
                                   where a.account_id = s.account_id and a.blocked_at is not null)
             ), seen as (
               update auth_sessions s set last_seen_at = $2
                 from live
                where s.session_id = live.session_id and s.last_seen_at < $2 - interval '1 minute'
             )
             select live.session_id, live.account_id, live.expires_at,
                    coalesce((select a.platform_admin from accounts a
                               where a.account_id = live.account_id), false)
               from live",
        )
        .bind(token_hash(secret))
        .bind(now)
        .bind(BROWSER_IDLE_HOURS)
        .fetch_optional(&self.pool)
        .await?;
        let Some((session_id, account_id, expires_at, platform_admin)) = row else {
            return Err(AuthError::InvalidToken.into());
        };
        Ok((
            Principal::session(AccountId(account_id), session_id, platform_admin),
            Some(expires_at),
        ))
    }

    /// Signs a browser out: its session ends (every credential of it stops working at once).
    /// An unknown or already ended secret is not an error: signing out is idempotent.
    pub async fn end_browser_session(&self, secret: &str) -> Result<(), AppError> {
        let mut tx = self.pool.begin().await?;
        let session: Option<Uuid> =
            sqlx::query_scalar("select session_id from browser_sessions where secret_hash = $1")
                .bind(token_hash(secret))
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(session_id) = session {
            revoke(&mut tx, session_id, "logout", crate::app::now()).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Signs a browser in with Telegram Login Widget data, each signed payload once: the
    /// callback's URL is no credential for whoever finds it later (history, proxy logs).
    pub async fn login_with_telegram_once(
        &self,
        fields: &std::collections::BTreeMap<String, String>,
        client_ip: Option<String>,
        user_agent: Option<String>,
    ) -> Result<Tokens, AppError> {
        let hash = fields.get("hash").cloned().unwrap_or_default();
        let now = crate::app::now();
        let first = sqlx::query(
            "with old as (delete from telegram_widget_logins where used_at < $2 - interval '2 days')
             insert into telegram_widget_logins (hash, used_at) values ($1, $2)
             on conflict (hash) do nothing",
        )
        .bind(&hash)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        if !first {
            return Err(AuthError::InvalidToken.into());
        }
        self.login_with_telegram(fields, client_ip, user_agent)
            .await
    }

    /// The CSRF token of session `session_id`: what every form of the console carries.
    pub async fn csrf_token(&self, session_id: Uuid) -> Result<String, AppError> {
        Ok(hex::encode(
            self.csrf_mac(session_id).await?.finalize().into_bytes(),
        ))
    }

    /// Whether `token` is the CSRF token of session `session_id` (compared in constant time).
    pub async fn csrf_token_is_valid(
        &self,
        session_id: Uuid,
        token: &str,
    ) -> Result<bool, AppError> {
        let Ok(token) = hex::decode(token) else {
            return Ok(false);
        };
        Ok(self
            .csrf_mac(session_id)
            .await?
            .verify_slice(&token)
            .is_ok())
    }

    async fn csrf_mac(&self, session_id: Uuid) -> Result<Hmac<Sha256>, AppError> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.signing_secret().await?)
            .map_err(|e| AppError::Internal(Box::new(e)))?;
        mac.update(b"shopfront console csrf\0");
        mac.update(session_id.as_bytes());
        Ok(mac)
    }
}
