//! Who a request is from, as authentication found it: an account and the credential it used.
//! Only [`App::authenticate`](crate::app::App::authenticate) makes a [`Principal`], so holding one
//! means the credential was checked (the session open, the account not blocked).

use aggregates::AccountId;
use uuid::Uuid;

use super::api_tokens::TokenScope;
use crate::app::{AppError, AuthError};

/// The credential a caller presented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// An access token of this session (a person signed in).
    Session(Uuid),
    /// An API token, with the limits it puts on its account's store roles.
    ApiToken(TokenScope),
    /// The service itself acting for an account it set up or verified on its own (the CLI's
    /// demo seeding, benchmarks). Never reachable from a request.
    Service,
    /// A Telegram user writing to the bot: Telegram vouches for who sent an update (only it
    /// knows the bot's token), as a session does for a browser.
    Telegram(i64),
}

/// An authenticated caller: an account through a session or an API token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    account_id: AccountId,
    /// From the access token's claims; re-checked on the Account before it grants anything.
    platform_admin: bool,
    credential: Credential,
}

impl Principal {
    /// A caller signed in through `session_id`.
    pub(crate) fn session(account_id: AccountId, session_id: Uuid, platform_admin: bool) -> Self {
        Self {
            account_id,
            platform_admin,
            credential: Credential::Session(session_id),
        }
    }

    /// A caller using an API token (tokens never act as a platform admin).
    pub(crate) fn api_token(account_id: AccountId, scope: TokenScope) -> Self {
        Self {
            account_id,
            platform_admin: false,
            credential: Credential::ApiToken(scope),
        }
    }

    /// The service acting for `account_id` (see [`Credential::Service`]).
    pub(crate) fn service(account_id: AccountId) -> Self {
        Self {
            account_id,
            platform_admin: false,
            credential: Credential::Service,
        }
    }

    /// The Telegram user `telegram_user_id`, whose account is `account_id`, writing to the bot.
    pub(crate) fn telegram(account_id: AccountId, telegram_user_id: i64) -> Self {
        Self {
            account_id,
            platform_admin: false,
            credential: Credential::Telegram(telegram_user_id),
        }
    }

    pub fn account_id(&self) -> AccountId {
        self.account_id
    }

    /// Whether the access token claims platform-admin rights (an API token never does).
    pub fn claims_platform_admin(&self) -> bool {
        self.platform_admin
    }

    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// The session, for a signed-in person; `None` for an API token.
    pub fn session_id(&self) -> Option<Uuid> {
        match &self.credential {
            Credential::Session(id) => Some(*id),
            Credential::ApiToken(_) | Credential::Service | Credential::Telegram(_) => None,
        }
    }

    /// The API token's limits, for an API token; `None` for a session.
    pub fn token_scope(&self) -> Option<&TokenScope> {
        match &self.credential {
            Credential::Session(_) | Credential::Service | Credential::Telegram(_) => None,
            Credential::ApiToken(scope) => Some(scope),
        }
    }

    /// The caller's session; API tokens are refused (`SessionRequired`), so a leaked token can
    /// neither mint credentials nor change how its account signs in.
    pub fn require_session(&self) -> Result<Uuid, AppError> {
        self.session_id()
            .ok_or_else(|| AuthError::SessionRequired.into())
    }
}
