//! Logins completed in Telegram: QR login and the Telegram second factor
//! (docs/adr/0004-authentication.md).
//!
//! Both are a row in `auth_login_challenges` that a client polls until Telegram decides it:
//! - **QR login**: `start_qr_login` returns a deep link `https://t.me/<bot>?start=login_<token>`
//!   (and its QR code). Whoever opens it in Telegram and confirms in the bot
//!   ([`App::confirm_login`]) signs the polling client in as the account linked to their
//!   Telegram user.
//! - **Second factor**: a correct password for an account that has it on gives a pending login;
//!   the account's own Telegram user approves or denies it in the bot
//!   ([`App::approve_second_factor`]).
//! - **Re-authentication by Telegram**: a signed-in session about to change how its account
//!   signs in proves itself again; the same approval as the second factor (purpose
//!   `reauthentication`, tied to the session), and the poll marks the session re-authenticated
//!   instead of opening one. A re-authentication can never be collected as a login.
//!
//! Invariants: the client polls with a secret only it received (`poll_secret`, stored hashed);
//! the deep-link token is another secret, so a shoulder-surfer who sees the QR code cannot
//! collect the tokens; the tokens are handed out once (the row is locked and marked
//! `completed` in the transaction that opens the session); nothing is decided or collected
//! after `expires_at`.

use aggregates::account::AccountCommand;
use aggregates::{AccountId, ActorRole};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::sessions::revoke_other_sessions;
use super::{random_secret, token_hash};
use crate::app::event_store::SideWrite;
use crate::app::{App, AppError, AuthError, Caller, Principal, Tokens};

/// The start of a QR deep link's `start` parameter.
pub const QR_START_PREFIX: &str = "login_";

/// A login waiting for Telegram, as its client sees it.
#[derive(Clone, Debug)]
pub struct PendingLogin {
    pub login_id: Uuid,
    /// Shown once; the client polls with it. Never sent to Telegram.
    pub poll_secret: String,
    pub expires_at: DateTime<Utc>,
}

/// A QR login: what the client shows and how it polls.
#[derive(Clone, Debug)]
pub struct QrLogin {
    pub pending: PendingLogin,
    /// `https://t.me/<bot>?start=login_<token>`.
    pub deep_link: String,
    /// The deep link as an SVG QR code.
    pub qr_svg: String,
}

/// What kind of pending login a poll expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginKind {
    Qr,
    SecondFactor,
}

impl LoginKind {
    fn as_str(self) -> &'static str {
        match self {
            LoginKind::Qr => "qr",
            LoginKind::SecondFactor => "second_factor",
        }
    }
}

/// The answer to a poll.
#[derive(Clone, Debug)]
pub enum LoginPoll {
    /// Not decided yet; poll again before `expires_at`.
    Pending { expires_at: DateTime<Utc> },
    /// Approved: the session is open. This answer is given once.
    Completed(Tokens),
}

/// What a second-factor approval is for (`auth_login_challenges.purpose`; the bot words its
/// prompt by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    /// A password login waiting for its second factor: approving it opens a session.
    Login,
    /// A session proving itself again before a sensitive change: approving it opens nothing.
    Reauthentication,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Login => "login",
            Purpose::Reauthentication => "reauthentication",
        }
    }
}

/// The answer to a re-authentication poll.
#[derive(Clone, Debug)]
pub enum ReauthenticationPoll {
    /// Not decided yet; poll again before `expires_at`.
    Pending { expires_at: DateTime<Utc> },
    /// Approved: the session is re-authenticated until `until`. Given once.
    Completed { until: DateTime<Utc> },
}

/// A QR login as the bot shows it before its user confirms: who is asking to sign in.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct LoginRequest {
    pub login_id: Uuid,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct ChallengeRow {
    kind: String,
    purpose: String,
    session_id: Option<Uuid>,
    status: String,
    account_id: Option<Uuid>,
    telegram_user_id: Option<i64>,
    client_ip: Option<String>,
    user_agent: Option<String>,
    expires_at: DateTime<Utc>,
}

impl App {
    /// Turns the Telegram second factor on or off for the caller. Turning it on needs a
    /// configured bot and a linked Telegram user (else nobody could approve the next login).
    /// A change needs the session's recent re-authentication (used up by it), is recorded as
    /// `SecondFactorChanged`, and revokes the account's other sessions; asking for the setting
    /// it already has changes nothing and needs nothing.
    #[tracing::instrument(skip_all, fields(account_id = %caller.account_id()))]
    pub async fn set_second_factor(&self, caller: &Caller, enabled: bool) -> Result<(), AppError> {
        let principal = caller.principal();
        let session_id = principal.require_session()?;
        let account_id = principal.account_id();
        if self.second_factor_enabled(account_id).await? == enabled {
            return Ok(());
        }
        if enabled {
            self.telegram_bot()?;
            if self.telegram_of(account_id).await?.is_none() {
                return Err(AuthError::TelegramNotLinked.into());
            }
        }
        self.consume_reauthentication(principal).await?;
        // The event, the setting and the revocation of the other sessions commit together (the
        // aggregate refuses a blocked account): a setting never differs from its record.
        let command = AccountCommand::ChangeSecondFactor {
            enabled,
            at: crate::app::now(),
        };
        let apply = move || -> SideWrite {
            Box::new(move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "insert into auth_account_settings
                                (account_id, second_factor_telegram, updated_at)
                         values ($1, $2, now())
                         on conflict (account_id) do update
                            set second_factor_telegram = excluded.second_factor_telegram,
                                updated_at = now()",
                    )
                    .bind(account_id.0)
                    .bind(enabled)
                    .execute(&mut *conn)
                    .await?;
                    revoke_other_sessions(
                        conn,
                        account_id,
                        session_id,
                        "second factor changed from another session",
                    )
                    .await?;
                    Ok(())
                })
            })
        };
        self.accounts
            .execute_with(
                &account_id.to_string(),
                command,
                &caller.context(ActorRole::Account),
                &apply,
            )
            .await
    }

    /// Whether the account confirms logins in Telegram.
    pub async fn second_factor_enabled(&self, account_id: AccountId) -> Result<bool, AppError> {
        Ok(sqlx::query_scalar(
            "select second_factor_telegram from auth_account_settings where account_id = $1",
        )
        .bind(account_id.0)
        .fetch_optional(&self.pool)
        .await?
        .unwrap_or(false))
    }

    /// The Telegram user who must approve the account's logins, if it has the second factor
    /// on. Fails closed: with the factor on but no bot or no linked user, nobody can log in
    /// with the password alone.
    pub(super) async fn second_factor_of(
        &self,
        account_id: AccountId,
    ) -> Result<Option<i64>, AppError> {
        if !self.second_factor_enabled(account_id).await? {
            return Ok(None);
        }
        self.telegram_bot()?;
        match self.telegram_of(account_id).await? {
            Some(telegram_user_id) => Ok(Some(telegram_user_id)),
            None => Err(AuthError::TelegramNotLinked.into()),
        }
    }

    /// Records a second-factor request for the bot to send to `telegram_user_id` (it is woken
    /// by `NOTIFY auth_login_challenges`).
    pub(super) async fn start_second_factor(
        &self,
        account_id: AccountId,
        telegram_user_id: i64,
        client_ip: Option<String>,
        user_agent: Option<String>,
    ) -> Result<PendingLogin, AppError> {
        self.record_approval_request(
            Purpose::Login,
            None,
            account_id,
            telegram_user_id,
            client_ip,
            user_agent,
        )
        .await
    }

    /// Asks the Telegram user linked to the caller's account to approve a re-authentication of
    /// the caller's session (the second factor's approval, for a sensitive change rather than a
    /// login). Poll it with [`App::poll_reauthentication`].
    #[tracing::instrument(skip_all, fields(account_id = %principal.account_id()))]
    pub async fn start_telegram_reauthentication(
        &self,
        principal: &Principal,
        client_ip: Option<String>,
        user_agent: Option<String>,
    ) -> Result<PendingLogin, AppError> {
        let session_id = principal.require_session()?;
        self.telegram_bot()?;
        let telegram_user_id = self
            .telegram_of(principal.account_id())
            .await?
            .ok_or(AuthError::TelegramNotLinked)?;
        self.record_approval_request(
            Purpose::Reauthentication,
            Some(session_id),
            principal.account_id(),
            telegram_user_id,
            client_ip,
            user_agent,
        )
        .await
    }

    /// Records a pending approval for `telegram_user_id` and wakes the bot.
    async fn record_approval_request(
        &self,
        purpose: Purpose,
        session_id: Option<Uuid>,
        account_id: AccountId,
        telegram_user_id: i64,
        client_ip: Option<String>,
        user_agent: Option<String>,
    ) -> Result<PendingLogin, AppError> {
        let pending = self.new_pending_login()?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "insert into auth_login_challenges
                    (login_id, kind, purpose, session_id, account_id, telegram_user_id,
                     poll_secret_hash, client_ip, user_agent, created_at, expires_at)
             values ($1, 'second_factor', $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(pending.login_id)
        .bind(purpose.as_str())
        .bind(session_id)
        .bind(account_id.0)
        .bind(telegram_user_id)
        .bind(token_hash(&pending.poll_secret))
        .bind(&client_ip)
        .bind(&user_agent)
        .bind(crate::app::now())
        .bind(pending.expires_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query("select pg_notify('auth_login_challenges', $1)")
            .bind(pending.login_id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(login_id = %pending.login_id, %account_id, purpose = purpose.as_str(), "Telegram approval requested");
        Ok(pending)
    }

    /// Starts a QR login: a deep link into the bot (and its QR code) and the client's poll
    /// secret. Needs the bot's token and username.
    #[tracing::instrument(skip_all)]
    pub async fn start_qr_login(
        &self,
        client_ip: Option<String>,
        user_agent: Option<String>,
    ) -> Result<QrLogin, AppError> {
        let username = self
            .telegram_bot()?
            .username
            .as_deref()
            .ok_or(AuthError::TelegramNotConfigured)?;
        let pending = self.new_pending_login()?;
        let deep_link_token = random_secret();
        let deep_link = format!("https://t.me/{username}?start={QR_START_PREFIX}{deep_link_token}");
        let qr_svg = qrcode::QrCode::new(deep_link.as_bytes())
            .map_err(|e| AppError::Internal(e.to_string().into()))?
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(256, 256)
            .build();
        sqlx::query(
            "insert into auth_login_challenges
                    (login_id, kind, poll_secret_hash, deep_link_hash, client_ip, user_agent,
                     created_at, expires_at)
             values ($1, 'qr', $2, $3, $4, $5, $6, $7)",
        )
        .bind(pending.login_id)
        .bind(token_hash(&pending.poll_secret))
        .bind(token_hash(&deep_link_token))
        .bind(&client_ip)
        .bind(&user_agent)
        .bind(crate::app::now())
        .bind(pending.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(QrLogin {
            pending,
            deep_link,
            qr_svg,
        })
    }

    /// For the bot, before it asks its user to confirm a QR login: which device asked (so a
    /// user sent someone else's QR code can tell it is not their own login).
    pub async fn describe_qr_login(&self, token: &str) -> Result<LoginRequest, AppError> {
        let found: Option<LoginRequest> = sqlx::query_as(
            "select login_id, client_ip, user_agent, created_at, expires_at
               from auth_login_challenges
              where deep_link_hash = $1 and kind = 'qr' and status = 'pending'",
        )
        .bind(token_hash(deep_link_token(token)))
        .fetch_optional(&self.pool)
        .await?;
        match found {
            Some(request) if request.expires_at > crate::app::now() => Ok(request),
            Some(_) => Err(AuthError::LoginExpired.into()),
            None => Err(AuthError::LoginNotFound.into()),
        }
    }

    /// Called by the bot when `telegram_user_id` confirms the QR login whose deep link carried
    /// `token` (with or without the `login_` prefix): the polling client will be signed in as
    /// the account linked to that Telegram user. Returns the login's id.
    // The Telegram user id is personal data: not a span field.
    #[tracing::instrument(skip(self, telegram_user_id, token))]
    pub async fn confirm_login(
        &self,
        telegram_user_id: i64,
        token: &str,
    ) -> Result<Uuid, AppError> {
        let account_id = self
            .account_by_telegram(telegram_user_id)
            .await?
            .ok_or(AuthError::UnknownTelegramUser)?;
        let account = self.accounts.load(&account_id.to_string()).await?;
        if account.is_blocked() {
            return Err(AuthError::AccountBlocked.into());
        }
        let mut tx = self.pool.begin().await?;
        let found: Option<(Uuid, String, DateTime<Utc>)> = sqlx::query_as(
            "select login_id, status, expires_at from auth_login_challenges
              where deep_link_hash = $1 and kind = 'qr' for update",
        )
        .bind(token_hash(deep_link_token(token)))
        .fetch_optional(&mut *tx)
        .await?;
        let Some((login_id, status, expires_at)) = found else {
            return Err(AuthError::LoginNotFound.into());
        };
        let now = crate::app::now();
        if status != "pending" {
            return Err(AuthError::LoginAlreadyDecided.into());
        }
        if expires_at <= now {
            return Err(AuthError::LoginExpired.into());
        }
        sqlx::query(
            "update auth_login_challenges
                set status = 'approved', account_id = $2, telegram_user_id = $3, decided_at = $4
              where login_id = $1",
        )
        .bind(login_id)
        .bind(account_id.0)
        .bind(telegram_user_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(%login_id, %account_id, "QR login confirmed");
        Ok(login_id)
    }

    /// The Telegram user's "no" to the QR login of `token` (see [`App::describe_qr_login`]): a
    /// pending request is denied, so the device asking gets `LoginDenied` instead of waiting
    /// for it to expire. Answers nothing about the request (it may be gone or decided).
    pub async fn deny_qr_login(&self, telegram_user_id: i64, token: &str) -> Result<(), AppError> {
        let Some(account_id) = self.account_by_telegram(telegram_user_id).await? else {
            return Ok(());
        };
        sqlx::query(
            "update auth_login_challenges
                set status = 'denied', account_id = $2, telegram_user_id = $3, decided_at = $4
              where deep_link_hash = $1 and kind = 'qr' and status = 'pending'",
        )
        .bind(token_hash(deep_link_token(token)))
        .bind(account_id.0)
        .bind(telegram_user_id)
        .bind(crate::app::now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Called by the bot when `telegram_user_id` presses approve or deny on a second-factor
    /// request. Only the Telegram user linked to the account may decide; for anyone else the
    /// login does not exist.
    #[tracing::instrument(skip(self, telegram_user_id))]
    pub async fn approve_second_factor(
        &self,
        telegram_user_id: i64,
        login_id: Uuid,
        approve: bool,
    ) -> Result<(), AppError> {
        let mut tx = self.pool.begin().await?;
        let found: Option<ChallengeRow> = sqlx::query_as(
            "select kind, purpose, session_id, status, account_id, telegram_user_id, client_ip,
                    user_agent, expires_at
               from auth_login_challenges where login_id = $1 for update",
        )
        .bind(login_id)
        .fetch_optional(&mut *tx)
        .await?;
        let row = match found {
            Some(row)
                if row.kind == LoginKind::SecondFactor.as_str()
                    && row.telegram_user_id == Some(telegram_user_id) =>
            {
                row
            }
            _ => return Err(AuthError::LoginNotFound.into()),
        };
        // The account may have been linked to another Telegram user since the request.
        let linked = self.account_by_telegram(telegram_user_id).await?;
        if linked.map(|a| a.0) != row.account_id {
            return Err(AuthError::LoginNotFound.into());
        }
        if row.status != "pending" {
            return Err(AuthError::LoginAlreadyDecided.into());
        }
        let now = crate::app::now();
        if row.expires_at <= now {
            return Err(AuthError::LoginExpired.into());
        }
        sqlx::query(
            "update auth_login_challenges set status = $2, decided_at = $3 where login_id = $1",
        )
        .bind(login_id)
        .bind(if approve { "approved" } else { "denied" })
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(%login_id, approve, "second factor decided");
        Ok(())
    }

    /// The client's poll: pending, or the tokens (once). Denied, expired, already completed and
    /// unknown logins (or a wrong secret, or the other kind) are errors.
    pub async fn poll_login(
        &self,
        kind: LoginKind,
        login_id: Uuid,
        poll_secret: &str,
    ) -> Result<LoginPoll, AppError> {
        let mut tx = self.pool.begin().await?;
        let found: Option<ChallengeRow> = sqlx::query_as(
            "select kind, purpose, session_id, status, account_id, telegram_user_id, client_ip,
                    user_agent, expires_at
               from auth_login_challenges
              where login_id = $1 and poll_secret_hash = $2
                for update",
        )
        .bind(login_id)
        .bind(token_hash(poll_secret))
        .fetch_optional(&mut *tx)
        .await?;
        // A re-authentication is never a login: approving one must not open a session.
        let row = match found {
            Some(row) if row.kind == kind.as_str() && row.purpose == Purpose::Login.as_str() => row,
            _ => return Err(AuthError::LoginNotFound.into()),
        };
        let now = crate::app::now();
        match row.status.as_str() {
            "denied" => return Err(AuthError::LoginDenied.into()),
            "completed" => return Err(AuthError::LoginCompleted.into()),
            _ if row.expires_at <= now => return Err(AuthError::LoginExpired.into()),
            "pending" => {
                return Ok(LoginPoll::Pending {
                    expires_at: row.expires_at,
                })
            }
            _ => {}
        }
        let account_id = row
            .account_id
            .map(AccountId)
            .ok_or_else(|| AppError::Internal("an approved login names its account".into()))?;
        let tokens = self
            .open_session_for(&mut tx, account_id, &row.client_ip, &row.user_agent)
            .await?;
        sqlx::query(
            "update auth_login_challenges
                set status = 'completed', completed_at = $2, session_id = $3
              where login_id = $1",
        )
        .bind(login_id)
        .bind(now)
        .bind(tokens.session_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(LoginPoll::Completed(tokens))
    }

    /// The caller's poll of a re-authentication by Telegram: pending, or (once) done, which
    /// marks the caller's session re-authenticated. Only the session that asked may collect
    /// it; denied, expired, completed and unknown ones (or a wrong secret) are errors.
    pub async fn poll_reauthentication(
        &self,
        principal: &Principal,
        login_id: Uuid,
        poll_secret: &str,
    ) -> Result<ReauthenticationPoll, AppError> {
        let session_id = principal.require_session()?;
        let mut tx = self.pool.begin().await?;
        let found: Option<ChallengeRow> = sqlx::query_as(
            "select kind, purpose, session_id, status, account_id, telegram_user_id, client_ip,
                    user_agent, expires_at
               from auth_login_challenges
              where login_id = $1 and poll_secret_hash = $2
                for update",
        )
        .bind(login_id)
        .bind(token_hash(poll_secret))
        .fetch_optional(&mut *tx)
        .await?;
        let row = match found {
            Some(row)
                if row.purpose == Purpose::Reauthentication.as_str()
                    && row.session_id == Some(session_id)
                    && row.account_id == Some(principal.account_id().0) =>
            {
                row
            }
            _ => return Err(AuthError::LoginNotFound.into()),
        };
        let now = crate::app::now();
        match row.status.as_str() {
            "denied" => return Err(AuthError::LoginDenied.into()),
            "completed" => return Err(AuthError::LoginCompleted.into()),
            _ if row.expires_at <= now => return Err(AuthError::LoginExpired.into()),
            "pending" => {
                return Ok(ReauthenticationPoll::Pending {
                    expires_at: row.expires_at,
                })
            }
            _ => {}
        }
        let until = self.mark_reauthenticated(&mut tx, principal).await?;
        sqlx::query(
            "update auth_login_challenges set status = 'completed', completed_at = $2
              where login_id = $1",
        )
        .bind(login_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ReauthenticationPoll::Completed { until })
    }

    fn new_pending_login(&self) -> Result<PendingLogin, AppError> {
        let ttl = chrono::Duration::from_std(self.auth.settings.login_challenge_ttl)
            .map_err(|e| AppError::Internal(Box::new(e)))?;
        Ok(PendingLogin {
            login_id: Uuid::now_v7(),
            poll_secret: random_secret(),
            expires_at: crate::app::now() + ttl,
        })
    }
}

/// The token of a deep link's `start` parameter, with or without its `login_` prefix.
fn deep_link_token(token: &str) -> &str {
    token.strip_prefix(QR_START_PREFIX).unwrap_or(token)
}
