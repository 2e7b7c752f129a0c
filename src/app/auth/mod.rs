//! Authentication: proving who a caller is, by password and session, by Telegram, or by an API
//! token (docs/adr/0004-authentication.md). What that caller may then do in a store is
//! authorization, in `super::authz`.
//!
//! - `sessions`: staff accounts with e-mail and password, sessions, access and refresh tokens,
//!   re-authentication before a change to how an account signs in;
//! - `telegram_login`: the Telegram Login Widget (staff), Mini App `initData` (customers), and
//!   `telegram_identities` (a Telegram user belongs to at most one account);
//! - `login_challenges`: logins decided in Telegram (QR login, the second factor,
//!   re-authentication by Telegram);
//! - `browser`: sessions of the console in a browser (a cookie secret, CSRF tokens);
//! - `api_tokens`: long-lived API tokens for API clients and auditors;
//! - `principal`: what authentication hands the rest of the application, a [`Principal`] and
//!   the [`Credential`] it presented.
//!
//! This module holds what they share: the error, the settings, the tokens a login returns, and
//! how secrets are made and stored. Credentials and tokens live in ordinary tables, never in
//! events.

mod api_tokens;
mod browser;
mod login_challenges;
mod principal;
mod sessions;
mod telegram_login;

use std::time::Duration;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use api_tokens::{ApiToken, CreatedApiToken, NewApiToken, TokenScope, API_TOKEN_PREFIX};
pub use browser::{BrowserSession, BROWSER_SESSION_PREFIX};
pub use login_challenges::{
    LoginKind, LoginPoll, LoginRequest, PendingLogin, QrLogin, ReauthenticationPoll,
    QR_START_PREFIX,
};
pub use principal::{Credential, Principal};
pub use sessions::{Authenticator, LoginOutcome, Reauthentication, Session, MIN_PASSWORD_LEN};
pub use telegram_login::{
    verify_login_widget, verify_web_app_init_data, TelegramUser, WebAppLogin,
};

/// Why authentication failed. Messages are safe to show: they never say whether an e-mail exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("e-mail or password is wrong")]
    InvalidCredentials,
    #[error("the token is missing, malformed, expired or revoked")]
    InvalidToken,
    #[error("this refresh token was already used; the session has been revoked")]
    RefreshTokenReused,
    #[error("the account is blocked")]
    AccountBlocked,
    #[error("an account with this e-mail already exists")]
    EmailTaken,
    #[error("the password must be at least {MIN_PASSWORD_LEN} characters")]
    WeakPassword,
    #[error("the e-mail address is not valid")]
    InvalidEmail,
    /// No bot token (or, for QR login, no bot username) is configured.
    #[error("Telegram sign-in is not configured on this server")]
    TelegramNotConfigured,
    /// The hash does not match: the data was not signed for our bot, or was altered.
    #[error("the Telegram data is not signed by this service's bot")]
    InvalidTelegramSignature,
    /// `auth_date` is older than the accepted window (or in the future).
    #[error("the Telegram data is too old or not yet valid; sign in again")]
    TelegramAuthExpired,
    /// A verified Telegram user that no account is linked to.
    #[error("no account is linked to this Telegram user")]
    UnknownTelegramUser,
    #[error("this Telegram user is already linked to another account")]
    TelegramAlreadyLinked,
    #[error("link a Telegram account first")]
    TelegramNotLinked,
    /// A password login that needs its second factor: use `sign_in` to get the pending login.
    #[error("this account confirms logins in Telegram")]
    SecondFactorRequired,
    #[error("no such pending login")]
    LoginNotFound,
    #[error("the login request has expired; start again")]
    LoginExpired,
    #[error("the login was denied in Telegram")]
    LoginDenied,
    /// The tokens of this login were already handed out (they are handed out once).
    #[error("this login has already been completed")]
    LoginCompleted,
    /// The bot tried to approve or deny a login that was already decided.
    #[error("this login was already approved or denied")]
    LoginAlreadyDecided,
    /// Managing sessions, tokens and sign-in settings needs a signed-in session, not an API token.
    #[error("this needs a signed-in session; API tokens cannot manage credentials")]
    SessionRequired,
    #[error("no such session")]
    SessionNotFound,
    #[error("no such API token")]
    ApiTokenNotFound,
    /// The account's password was tried too often lately (from anywhere).
    #[error("too many sign-in attempts for this account; retry in {} s", whole_seconds(*retry_after))]
    TooManyAttempts { retry_after: Duration },
    /// A change to how the account signs in needs the session to prove itself again first.
    #[error(
        "confirm it is you first: POST /api/v1/auth/reauthenticate with your password (or \
         approve in Telegram), then repeat this request"
    )]
    ReauthenticationRequired,
    /// The password given to re-authenticate is wrong.
    #[error("the password is wrong")]
    ReauthenticationFailed,
    /// Re-authentication by password for an account that has none (it signs in with Telegram).
    #[error("this account has no password; re-authenticate with Telegram instead")]
    PasswordNotSet,
    /// Mini App sign-in is for customers; staff sign in with their password or the widget.
    #[error("the Mini App signs in customers only; staff sign in with their password or the Telegram Login Widget")]
    MiniAppCustomersOnly,
    /// This Mini App `initData` was already used to sign in.
    #[error("this Telegram sign-in data was already used; open the Mini App again")]
    TelegramDataReplayed,
}

/// A wait as whole seconds, rounded up, at least 1 (as `Retry-After` says it).
fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// Token lifetimes and the signing secret.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// HS256 secret for access tokens; when unset, one is generated and kept in the database.
    pub jwt_secret: Option<SecretString>,
    /// The Telegram bot that signs sign-in data and confirms logins; `None` turns the Telegram
    /// flows off (they answer `TelegramNotConfigured`).
    pub telegram: Option<TelegramBot>,
    /// Oldest `auth_date` accepted from the Login Widget or a Mini App.
    pub telegram_auth_max_age: Duration,
    /// How long a QR login or a second-factor request waits for Telegram.
    pub login_challenge_ttl: Duration,
    /// Password attempts a minute per account (log-ins and re-authentications).
    pub login_attempts_per_account: crate::config::RateLimit,
    /// How long a re-authentication stays usable (for one sensitive change).
    pub reauthentication_ttl: Duration,
}

/// The bot whose token verifies Telegram data. The username is needed only for QR deep links.
#[derive(Clone, Debug)]
pub struct TelegramBot {
    pub token: SecretString,
    pub username: Option<String>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            jwt_secret: None,
            telegram: None,
            telegram_auth_max_age: Duration::from_secs(24 * 3600),
            login_challenge_ttl: Duration::from_secs(300),
            login_attempts_per_account: crate::config::RateLimit::new(3, 10),
            reauthentication_ttl: Duration::from_secs(300),
        }
    }
}

/// What a login or refresh returns.
#[derive(Clone, Debug)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: Duration,
    pub session_id: Uuid,
}

/// SHA-256 of a secret, as stored: a database leak does not reveal usable tokens.
fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// 32 random bytes, base64url: refresh tokens, API tokens, poll and deep-link secrets.
fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}
