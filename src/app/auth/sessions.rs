//! Staff accounts with e-mail and password, sessions, access and refresh tokens
//! (docs/adr/0004-authentication.md).
//!
//! - Passwords are hashed with argon2id (default parameters) on a blocking thread.
//! - An access token is a short-lived JWT (HS256) naming the account and its session.
//! - A refresh token is 32 random bytes, shown once, stored as its SHA-256; each use rotates it.
//!   Presenting a token that was already rotated means it leaked: the whole session is revoked
//!   and the reason recorded.
//! - Every authenticated request checks that its session is still open, so a logout or a
//!   detected reuse takes effect at once, not when the access token expires.
//! - Password attempts are throttled per account (log-ins and re-authentications share one
//!   quota), besides the HTTP edge's per-IP limit, so guessing from many addresses is slow too.
//! - Changing how an account signs in (linking Telegram, the second factor) needs a recent
//!   re-authentication of the session, used once: a stolen session alone cannot lock its owner
//!   out. The change then revokes the account's other sessions.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use aggregates::account::AccountCommand;
use aggregates::AccountId;
use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::{DateTime, Utc};
use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::{
    random_secret, token_hash, AuthError, AuthSettings, PendingLogin, Tokens, API_TOKEN_PREFIX,
};
use crate::app::{App, AppError, CommandContext, Principal};

/// Shortest accepted password.
pub const MIN_PASSWORD_LEN: usize = 12;
const ISSUER: &str = "shopfront";

/// What a re-authentication leads to.
#[derive(Clone, Debug)]
pub enum Reauthentication {
    /// The session is re-authenticated until `until`.
    Done { until: DateTime<Utc> },
    /// Waiting for the approval of the account's Telegram user: poll it.
    ApprovalRequired(PendingLogin),
}

/// What a password login leads to.
#[derive(Clone, Debug)]
pub enum LoginOutcome {
    /// The session is open.
    Tokens(Tokens),
    /// The account confirms logins in Telegram: poll the pending login for the tokens.
    SecondFactorRequired(PendingLogin),
}

/// A session as its owner sees it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Session {
    pub session_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub user_agent: Option<String>,
    pub client_ip: Option<String>,
}

/// A refresh token with its session, locked for rotation.
#[derive(sqlx::FromRow)]
struct RefreshRow {
    session_id: Uuid,
    expires_at: DateTime<Utc>,
    rotated_at: Option<DateTime<Utc>>,
    account_id: Uuid,
    revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: Uuid,
    sid: Uuid,
    pa: bool,
    iss: String,
    iat: i64,
    exp: i64,
}

/// Signs and checks tokens (the secret is resolved once) and throttles password attempts.
pub struct Authenticator {
    pub settings: AuthSettings,
    secret: OnceCell<Vec<u8>>,
    attempts: Option<AttemptThrottle>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Default for Authenticator {
    fn default() -> Self {
        Self::new(AuthSettings::default())
    }
}

impl Authenticator {
    pub fn new(settings: AuthSettings) -> Self {
        let attempts = AttemptThrottle::new(settings.login_attempts_per_account);
        Self {
            settings,
            secret: OnceCell::new(),
            attempts,
        }
    }

    /// Counts a password attempt for `key`; `TooManyAttempts` when its quota is spent.
    fn attempt(&self, key: AttemptKey) -> Result<(), AppError> {
        match &self.attempts {
            Some(throttle) => throttle.check(key),
            None => Ok(()),
        }
    }
}

/// Whose password is being tried: the account when the e-mail is known, else the e-mail itself
/// (hashed, so keys have one size), so unknown and known e-mails are throttled alike.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum AttemptKey {
    Account(Uuid),
    Email([u8; 32]),
}

/// Password attempts per account: governor's GCRA, in memory, per instance.
struct AttemptThrottle {
    limiter: DefaultKeyedRateLimiter<AttemptKey>,
    checks: AtomicU64,
}

/// Idle keys are dropped every this many checks, so memory follows recent activity without a
/// background task.
const PURGE_ATTEMPTS_EVERY: u64 = 1024;

impl AttemptThrottle {
    fn new(limit: crate::config::RateLimit) -> Option<Self> {
        let rate = NonZeroU32::new(limit.per_minute)?;
        let burst = NonZeroU32::new(limit.burst).unwrap_or(rate);
        Some(Self {
            limiter: RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst)),
            checks: AtomicU64::new(0),
        })
    }

    fn check(&self, key: AttemptKey) -> Result<(), AppError> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PURGE_ATTEMPTS_EVERY
            == PURGE_ATTEMPTS_EVERY - 1
        {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter.check_key(&key).map_err(|not_until| {
            let retry_after = not_until.wait_time_from(self.limiter.clock().now());
            match key {
                AttemptKey::Account(account_id) => {
                    tracing::warn!(%account_id, "password attempts throttled")
                }
                AttemptKey::Email(_) => {
                    tracing::warn!("password attempts for an unknown e-mail throttled")
                }
            }
            AuthError::TooManyAttempts { retry_after }.into()
        })
    }
}

impl App {
    /// Creates a staff account that logs in with e-mail and password (the CLI's `accounts
    /// create`, on the system's authority: no caller is involved).
    pub async fn create_staff_account(
        &self,
        email: &str,
        password: SecretString,
        platform_admin: bool,
    ) -> Result<AccountId, AppError> {
        let email = normalise_email(email)?;
        if password.expose_secret().chars().count() < MIN_PASSWORD_LEN {
            return Err(AuthError::WeakPassword.into());
        }
        let hash = hash_password(password).await?;
        let account_id = AccountId::new();
        let ctx = &CommandContext::system("accounts-create");
        // The e-mail is reserved first (unique), so a taken address never creates an account.
        let reserved = sqlx::query(
            "insert into credentials (account_id, email, password_hash) values ($1, $2, $3)
             on conflict (email) do nothing",
        )
        .bind(account_id.0)
        .bind(&email)
        .bind(&hash)
        .execute(&self.pool)
        .await?;
        if reserved.rows_affected() == 0 {
            return Err(AuthError::EmailTaken.into());
        }
        let registered = async {
            let sealed = self.personal_data.seal(account_id, &email).await?;
            let command = AccountCommand::Register {
                account_id,
                telegram_user: None,
                email: Some(sealed),
                display_name: None,
                platform_admin,
                channel: ctx.channel(),
                at: crate::app::now(),
            };
            self.accounts
                .execute(&account_id.to_string(), command, ctx)
                .await
        }
        .await;
        if let Err(err) = registered {
            sqlx::query("delete from credentials where account_id = $1")
                .bind(account_id.0)
                .execute(&self.pool)
                .await?;
            return Err(err);
        }
        Ok(account_id)
    }

    /// Checks e-mail and password and opens a session. For an account with the Telegram second
    /// factor this fails with `SecondFactorRequired`: adapters use [`App::sign_in`].
    pub async fn login(
        &self,
        email: &str,
        password: SecretString,
        client_ip: Option<String>,
        user_agent: Option<String>,
    ) -> Result<Tokens, AppError> {
        match self.sign_in(email, password, client_ip, user_agent).await? {
            LoginOutcome::Tokens(tokens) => Ok(tokens),
            LoginOutcome::SecondFactorRequired(_) => Err(AuthError::SecondFactorRequired.into()),
        }
    }

    /// Checks e-mail and password; opens a session, or, when the account confirms logins in
    /// Telegram, records a pending login for its Telegram user to approve.
    // The e-mail, IP and user agent are personal data: never in a span or log line.
    #[tracing::instrument(skip_all)]
    pub async fn sign_in(
        &self,
        email: &str,
        password: SecretString,
        client_ip: Option<String>,
        user_agent: Option<String>,
    ) -> Result<LoginOutcome, AppError> {
        let email = email.trim().to_lowercase();
        let found: Option<(Uuid, String)> =
            sqlx::query_as("select account_id, password_hash from credentials where email = $1")
                .bind(&email)
                .fetch_optional(&self.pool)
                .await?;
        self.auth.attempt(match &found {
            Some((account_id, _)) => AttemptKey::Account(*account_id),
            None => AttemptKey::Email(Sha256::digest(email.as_bytes()).into()),
        })?;
        // Unknown e-mails cost the same hashing time as known ones.
        let (account_id, hash) = match found {
            Some(found) => found,
            None => (Uuid::nil(), dummy_hash().to_owned()),
        };
        let valid = verify_password(password, hash).await?;
        if !valid || account_id.is_nil() {
            return Err(AuthError::InvalidCredentials.into());
        }
        let account = self.accounts.load(&account_id.to_string()).await?;
        if account.is_blocked() {
            return Err(AuthError::AccountBlocked.into());
        }
        if let Some(telegram_user_id) = self.second_factor_of(AccountId(account_id)).await? {
            let pending = self
                .start_second_factor(
                    AccountId(account_id),
                    telegram_user_id,
                    client_ip,
                    user_agent,
                )
                .await?;
            return Ok(LoginOutcome::SecondFactorRequired(pending));
        }
        let now = crate::app::now();
        let mut tx = self.pool.begin().await?;
        let session_id = open_session(&mut tx, account_id, &client_ip, &user_agent, now).await?;
        let tokens = self
            .issue_tokens(
                &mut tx,
                account_id,
                session_id,
                account.is_platform_admin(),
                now,
            )
            .await?;
        tx.commit().await?;
        Ok(LoginOutcome::Tokens(tokens))
    }

    /// Opens a session for an account already identified some other way (Telegram, a
    /// confirmed QR or second-factor login), inside the caller's transaction.
    pub(super) async fn open_session_for(
        &self,
        conn: &mut sqlx::PgConnection,
        account_id: AccountId,
        client_ip: &Option<String>,
        user_agent: &Option<String>,
    ) -> Result<Tokens, AppError> {
        let account = self.accounts.load(&account_id.to_string()).await?;
        if !account.is_created() {
            // Only a registration still in flight (a concurrent Mini App sign-in) looks so.
            return Err(AppError::Conflict {
                aggregate: "Account",
                id: account_id.to_string(),
            });
        }
        if account.is_blocked() {
            return Err(AuthError::AccountBlocked.into());
        }
        let now = crate::app::now();
        let session_id = open_session(conn, account_id.0, client_ip, user_agent, now).await?;
        self.issue_tokens(
            conn,
            account_id.0,
            session_id,
            account.is_platform_admin(),
            now,
        )
        .await
    }

    /// Exchanges a refresh token for new tokens (rotation). A token already rotated revokes
    /// its session.
    #[tracing::instrument(skip_all)]
    pub async fn refresh(
        &self,
        refresh_token: &str,
        client_ip: Option<String>,
        user_agent: Option<String>,
    ) -> Result<Tokens, AppError> {
        let now = crate::app::now();
        let mut tx = self.pool.begin().await?;
        let row: Option<RefreshRow> = sqlx::query_as(
            "select t.session_id, t.expires_at, t.rotated_at, s.account_id, s.revoked_at
               from refresh_tokens t join auth_sessions s using (session_id)
              where t.token_hash = $1
              for update of t, s",
        )
        .bind(token_hash(refresh_token))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(RefreshRow {
            session_id,
            expires_at,
            rotated_at,
            account_id,
            revoked_at,
        }) = row
        else {
            return Err(AuthError::InvalidToken.into());
        };
        if revoked_at.is_some() || expires_at <= now {
            return Err(AuthError::InvalidToken.into());
        }
        if rotated_at.is_some() {
            revoke(&mut tx, session_id, "refresh token reused", now).await?;
            tx.commit().await?;
            tracing::warn!(%session_id, %account_id, "refresh token reuse: session revoked");
            return Err(AuthError::RefreshTokenReused.into());
        }
        sqlx::query("update refresh_tokens set rotated_at = $2 where token_hash = $1")
            .bind(token_hash(refresh_token))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "update auth_sessions set last_seen_at = $2, client_ip = coalesce($3, client_ip),
                                      user_agent = coalesce($4, user_agent)
              where session_id = $1",
        )
        .bind(session_id)
        .bind(now)
        .bind(&client_ip)
        .bind(&user_agent)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let account = self.accounts.load(&account_id.to_string()).await?;
        if account.is_blocked() {
            return Err(AuthError::AccountBlocked.into());
        }
        let mut conn = self.pool.acquire().await?;
        self.issue_tokens(
            &mut conn,
            account_id,
            session_id,
            account.is_platform_admin(),
            now,
        )
        .await
    }

    /// Ends the session a refresh token belongs to (its access tokens stop working at once).
    pub async fn logout(&self, refresh_token: &str) -> Result<(), AppError> {
        let mut tx = self.pool.begin().await?;
        let session: Option<Uuid> =
            sqlx::query_scalar("select session_id from refresh_tokens where token_hash = $1")
                .bind(token_hash(refresh_token))
                .fetch_optional(&mut *tx)
                .await?;
        let Some(session_id) = session else {
            return Err(AuthError::InvalidToken.into());
        };
        revoke(&mut tx, session_id, "logout", crate::app::now()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Checks a bearer token: an API token (`sfp_…`), or an access token whose session must
    /// still be open.
    pub async fn authenticate(&self, access_token: &str) -> Result<Principal, AppError> {
        Ok(self.authenticate_until(access_token).await?.0)
    }

    /// [`App::authenticate`], also telling until when the token is good (`None`: an API token
    /// without an expiry). A long-lived connection (the live feeds) holds its caller no longer.
    pub async fn authenticate_until(
        &self,
        access_token: &str,
    ) -> Result<(Principal, Option<chrono::DateTime<chrono::Utc>>), AppError> {
        if access_token.starts_with(API_TOKEN_PREFIX) {
            return self.authenticate_api_token(access_token).await;
        }
        if access_token.starts_with(super::BROWSER_SESSION_PREFIX) {
            // A browser's cookie is not a bearer token: it only opens the console and its
            // live feed (`App::authenticate_browser`).
            return Err(AuthError::InvalidToken.into());
        }
        let secret = self.signing_secret().await?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = 5;
        let claims = jsonwebtoken::decode::<Claims>(
            access_token,
            &DecodingKey::from_secret(secret),
            &validation,
        )
        .map_err(|_| AuthError::InvalidToken)?
        .claims;
        let open: Option<bool> = sqlx::query_scalar(
            "select s.revoked_at is null and not exists \
               (select 1 from accounts a where a.account_id = s.account_id \
                  and a.blocked_at is not null) \
             from auth_sessions s where s.session_id = $1 and s.account_id = $2",
        )
        .bind(claims.sid)
        .bind(claims.sub)
        .fetch_optional(&self.pool)
        .await?;
        if open != Some(true) {
            return Err(AuthError::InvalidToken.into());
        }
        let expires_at = chrono::DateTime::from_timestamp(claims.exp, 0);
        Ok((
            Principal::session(AccountId(claims.sub), claims.sid, claims.pa),
            expires_at,
        ))
    }

    /// The caller's open sessions, newest first.
    pub async fn sessions(&self, principal: &Principal) -> Result<Vec<Session>, AppError> {
        principal.require_session()?;
        Ok(sqlx::query_as(
            "select session_id, created_at, last_seen_at, user_agent, client_ip from auth_sessions
              where account_id = $1 and revoked_at is null order by created_at desc",
        )
        .bind(principal.account_id().0)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes one of the caller's own open sessions (another account's, or a closed one, is
    /// `SessionNotFound`: ids of others' sessions are not confirmed).
    pub async fn revoke_session(
        &self,
        principal: &Principal,
        session_id: Uuid,
    ) -> Result<(), AppError> {
        principal.require_session()?;
        let revoked = sqlx::query(
            "update auth_sessions set revoked_at = $3, revoked_reason = 'revoked by its owner'
              where session_id = $1 and account_id = $2 and revoked_at is null",
        )
        .bind(session_id)
        .bind(principal.account_id().0)
        .bind(crate::app::now())
        .execute(&self.pool)
        .await?;
        if revoked.rows_affected() == 0 {
            return Err(AuthError::SessionNotFound.into());
        }
        Ok(())
    }

    /// Revokes every open session of the caller except the current one; returns how many.
    pub async fn revoke_other_sessions(&self, principal: &Principal) -> Result<u64, AppError> {
        let current = principal.require_session()?;
        let revoked = sqlx::query(
            "update auth_sessions set revoked_at = $3, revoked_reason = 'revoked from another session'
              where account_id = $1 and session_id <> $2 and revoked_at is null",
        )
        .bind(principal.account_id().0)
        .bind(current)
        .bind(crate::app::now())
        .execute(&self.pool)
        .await?;
        Ok(revoked.rows_affected())
    }

    /// Proves the caller again with the account's password (a session only, never an API
    /// token): the session may then make one change to how the account signs in (link Telegram,
    /// the second factor) within `reauthentication_ttl`. An account with the Telegram second
    /// factor proves itself as it logs in, with both: the right password asks its Telegram user
    /// for approval ([`App::poll_reauthentication`]), so a stolen session plus a phished
    /// password cannot turn the factor off. Attempts are throttled with log-ins, per account, so
    /// a stolen session cannot guess the password faster than a log-in form could.
    #[tracing::instrument(skip_all, fields(account_id = %principal.account_id()))]
    pub async fn reauthenticate_with_password(
        &self,
        principal: &Principal,
        password: SecretString,
        client_ip: Option<String>,
        user_agent: Option<String>,
    ) -> Result<Reauthentication, AppError> {
        principal.require_session()?;
        let hash: Option<String> =
            sqlx::query_scalar("select password_hash from credentials where account_id = $1")
                .bind(principal.account_id().0)
                .fetch_optional(&self.pool)
                .await?;
        let Some(hash) = hash else {
            return Err(AuthError::PasswordNotSet.into());
        };
        self.auth
            .attempt(AttemptKey::Account(principal.account_id().0))?;
        if !verify_password(password, hash).await? {
            tracing::warn!(session_id = ?principal.session_id(), "re-authentication with a wrong password");
            return Err(AuthError::ReauthenticationFailed.into());
        }
        if self
            .second_factor_of(principal.account_id())
            .await?
            .is_some()
        {
            let pending = self
                .start_telegram_reauthentication(principal, client_ip, user_agent)
                .await?;
            return Ok(Reauthentication::ApprovalRequired(pending));
        }
        let mut conn = self.pool.acquire().await?;
        let until = self.mark_reauthenticated(&mut conn, principal).await?;
        Ok(Reauthentication::Done { until })
    }

    /// Records that the principal's session proved itself again now, in the caller's
    /// connection; returns until when that counts.
    pub(super) async fn mark_reauthenticated(
        &self,
        conn: &mut sqlx::PgConnection,
        principal: &Principal,
    ) -> Result<DateTime<Utc>, AppError> {
        let session_id = principal.require_session()?;
        let now = crate::app::now();
        let ttl = chrono::Duration::from_std(self.auth.settings.reauthentication_ttl)
            .map_err(|e| AppError::Internal(Box::new(e)))?;
        let marked = sqlx::query(
            "update auth_sessions set reauthenticated_at = $3
              where session_id = $1 and account_id = $2 and revoked_at is null",
        )
        .bind(session_id)
        .bind(principal.account_id().0)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        if marked.rows_affected() == 0 {
            return Err(AuthError::InvalidToken.into());
        }
        tracing::info!(%session_id, "session re-authenticated");
        Ok(now + ttl)
    }

    /// Uses up the session's re-authentication for one change to how the account signs in:
    /// `ReauthenticationRequired` without one younger than `reauthentication_ttl`. Used once, so
    /// each such change is confirmed on its own.
    pub(super) async fn consume_reauthentication(
        &self,
        principal: &Principal,
    ) -> Result<(), AppError> {
        let session_id = principal.require_session()?;
        let ttl = chrono::Duration::from_std(self.auth.settings.reauthentication_ttl)
            .map_err(|e| AppError::Internal(Box::new(e)))?;
        let used = sqlx::query(
            "update auth_sessions set reauthenticated_at = null
              where session_id = $1 and account_id = $2 and revoked_at is null
                and reauthenticated_at > $3",
        )
        .bind(session_id)
        .bind(principal.account_id().0)
        .bind(crate::app::now() - ttl)
        .execute(&self.pool)
        .await?;
        if used.rows_affected() == 0 {
            return Err(AuthError::ReauthenticationRequired.into());
        }
        Ok(())
    }

    /// After a change to how the account signs in: revokes every other open session of the
    /// principal's account, so a session stolen before the change ends with it. Returns how
    /// many.
    pub(super) async fn revoke_sessions_after_change(
        &self,
        principal: &Principal,
        reason: &str,
    ) -> Result<u64, AppError> {
        let session_id = principal.require_session()?;
        let mut conn = self.pool.acquire().await?;
        revoke_other_sessions(&mut conn, principal.account_id(), session_id, reason).await
    }

    /// A new refresh token for the session and an access token naming it.
    async fn issue_tokens(
        &self,
        conn: &mut sqlx::PgConnection,
        account_id: Uuid,
        session_id: Uuid,
        platform_admin: bool,
        now: DateTime<Utc>,
    ) -> Result<Tokens, AppError> {
        let refresh_token = self.issue_refresh_token(conn, session_id, now).await?;
        let access_token = self
            .access_token(account_id, session_id, platform_admin, now)
            .await?;
        Ok(Tokens {
            access_token,
            refresh_token,
            expires_in: self.auth.settings.access_token_ttl,
            session_id,
        })
    }

    async fn issue_refresh_token(
        &self,
        conn: &mut sqlx::PgConnection,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<String, AppError> {
        let token = random_secret();
        let ttl = chrono::Duration::from_std(self.auth.settings.refresh_token_ttl)
            .map_err(|e| AppError::Internal(Box::new(e)))?;
        sqlx::query("insert into refresh_tokens (token_hash, session_id, issued_at, expires_at) values ($1, $2, $3, $4)")
            .bind(token_hash(&token))
            .bind(session_id)
            .bind(now)
            .bind(now + ttl)
            .execute(&mut *conn)
            .await?;
        Ok(token)
    }

    async fn access_token(
        &self,
        account_id: Uuid,
        session_id: Uuid,
        platform_admin: bool,
        now: DateTime<Utc>,
    ) -> Result<String, AppError> {
        let secret = self.signing_secret().await?;
        let claims = Claims {
            sub: account_id,
            sid: session_id,
            pa: platform_admin,
            iss: ISSUER.into(),
            iat: now.timestamp(),
            exp: now.timestamp() + self.auth.settings.access_token_ttl.as_secs() as i64,
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .map_err(|e| AppError::Internal(Box::new(e)))
    }

    /// The configured secret, else the database's (created on first use).
    pub(super) async fn signing_secret(&self) -> Result<&[u8], AppError> {
        let secret = self
            .auth
            .secret
            .get_or_try_init(|| async {
                if let Some(secret) = &self.auth.settings.jwt_secret {
                    return Ok::<_, AppError>(secret.expose_secret().as_bytes().to_vec());
                }
                let mut fresh = [0u8; 32];
                OsRng.fill_bytes(&mut fresh);
                sqlx::query("insert into auth_signing_keys (id, secret) values (1, $1) on conflict do nothing")
                    .bind(&fresh[..])
                    .execute(&self.pool)
                    .await?;
                Ok(sqlx::query_scalar("select secret from auth_signing_keys where id = 1")
                    .fetch_one(&self.pool)
                    .await?)
            })
            .await?;
        Ok(secret.as_slice())
    }
}

/// Records a new session (one row per login; the refresh-token family).
async fn open_session(
    conn: &mut sqlx::PgConnection,
    account_id: Uuid,
    client_ip: &Option<String>,
    user_agent: &Option<String>,
    now: DateTime<Utc>,
) -> Result<Uuid, sqlx::Error> {
    let session_id = Uuid::now_v7();
    sqlx::query(
        "insert into auth_sessions (session_id, account_id, created_at, last_seen_at, user_agent, client_ip)
         values ($1, $2, $3, $3, $4, $5)",
    )
    .bind(session_id)
    .bind(account_id)
    .bind(now)
    .bind(user_agent)
    .bind(client_ip)
    .execute(&mut *conn)
    .await?;
    Ok(session_id)
}

pub(super) async fn revoke(
    conn: &mut sqlx::PgConnection,
    session_id: Uuid,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update auth_sessions set revoked_at = $2, revoked_reason = $3 where session_id = $1 and revoked_at is null",
    )
    .bind(session_id)
    .bind(now)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn normalise_email(email: &str) -> Result<String, AppError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !email.chars().any(char::is_whitespace);
    if valid {
        Ok(email)
    } else {
        Err(AuthError::InvalidEmail.into())
    }
}

async fn hash_password(password: SecretString) -> Result<String, AppError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.expose_secret().as_bytes(), &salt)
            .map(|hash| hash.to_string())
    })
    .await
    .map_err(|e| AppError::Internal(Box::new(e)))?
    .map_err(|e| AppError::Internal(e.to_string().into()))
}

async fn verify_password(password: SecretString, hash: String) -> Result<bool, AppError> {
    tokio::task::spawn_blocking(move || {
        let parsed =
            PasswordHash::new(&hash).map_err(|e| AppError::Internal(e.to_string().into()))?;
        Ok(Argon2::default()
            .verify_password(password.expose_secret().as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(|e| AppError::Internal(Box::new(e)))?
}

/// A valid argon2id hash of a random password, verified against when the e-mail is unknown.
fn dummy_hash() -> &'static str {
    "$argon2id$v=19$m=19456,t=2,p=1$c2hvcGZyb250ZHVtbXk$3vD0nJm+Jo5HEgYXf3TxGQ6Pn6vD5m8y2J4dQkz2v1A"
}

/// Revokes every open session of `account_id` but `keep` (the one making a change to how the
/// account signs in), so a session stolen before the change ends with it. Returns how many.
pub(super) async fn revoke_other_sessions(
    conn: &mut sqlx::PgConnection,
    account_id: AccountId,
    keep: Uuid,
    reason: &str,
) -> Result<u64, AppError> {
    let revoked = sqlx::query(
        "update auth_sessions set revoked_at = $3, revoked_reason = $4
          where account_id = $1 and session_id <> $2 and revoked_at is null",
    )
    .bind(account_id.0)
    .bind(keep)
    .bind(crate::app::now())
    .bind(reason)
    .execute(conn)
    .await?
    .rows_affected();
    tracing::info!(%account_id, revoked, reason, "other sessions revoked");
    Ok(revoked)
}
