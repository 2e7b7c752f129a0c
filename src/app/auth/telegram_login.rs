//! Signing in with Telegram: the Login Widget (staff), Mini App `initData` (customers), and the
//! table that makes a Telegram user id belong to at most one account.
//!
//! Telegram signs both payloads with the bot token, so only a server that knows the token can
//! check them (docs/adr/0004-authentication.md):
//! - Login Widget: `hash = HMAC-SHA256(key = SHA-256(bot_token), data_check_string)`;
//! - Mini App: `hash = HMAC-SHA256(key = HMAC-SHA256(key = "WebAppData", bot_token),
//!   data_check_string)`;
//!
//! where `data_check_string` is every received field but `hash`, as `key=value`, sorted by key,
//! joined by `\n`. Hashes are compared in constant time; `auth_date` must lie within the
//! configured window (and not in the future beyond a small clock skew), so a captured payload
//! stops working.
//!
//! `telegram_identities` (telegram_user_id → account_id, unique both ways) is kept here: a row
//! is reserved before an account is registered or linked with a Telegram id, and released if
//! the command then fails.

use std::collections::BTreeMap;
use std::time::Duration;

use aggregates::account::{AccountCommand, AccountError};
use aggregates::{AccountId, ActorRole, Channel, TelegramId};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::TelegramBot;
use crate::app::{App, AppError, AuthError, Caller, CommandContext, Tokens};

type HmacSha256 = Hmac<Sha256>;

/// How far in the future an `auth_date` may lie (clocks differ a little).
const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(60);

/// A Telegram user whose data carried a valid signature of our bot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelegramUser {
    pub id: i64,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: Option<String>,
}

impl TelegramUser {
    /// "First Last", or `None` when Telegram sent neither.
    fn display_name(&self) -> Option<String> {
        let name = [self.first_name.as_deref(), self.last_name.as_deref()]
            .into_iter()
            .flatten()
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        (!name.is_empty()).then(|| name.chars().take(200).collect())
    }
}

/// The result of a Mini App sign-in.
#[derive(Clone, Debug)]
pub struct WebAppLogin {
    pub account_id: AccountId,
    /// Whether this sign-in created the customer account.
    pub registered: bool,
    pub tokens: Tokens,
}

/// Checks Login Widget data: `fields` are the fields Telegram sent (`id`, `first_name`, ...,
/// `auth_date`, `hash`), values exactly as received.
pub fn verify_login_widget(
    bot_token: &str,
    fields: &BTreeMap<String, String>,
    now: DateTime<Utc>,
    max_age: Duration,
) -> Result<TelegramUser, AppError> {
    let key = Sha256::digest(bot_token.as_bytes());
    verify_signed(&key, fields)?;
    check_auth_date(fields, now, max_age)?;
    let id = fields
        .get("id")
        .and_then(|id| id.parse::<i64>().ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| AppError::invalid("id", "not a Telegram user id"))?;
    Ok(TelegramUser {
        id,
        first_name: fields.get("first_name").cloned(),
        last_name: fields.get("last_name").cloned(),
        username: fields.get("username").cloned(),
    })
}

/// Checks a Mini App's `initData` (the query string `Telegram.WebApp.initData`) and returns
/// the user it names.
pub fn verify_web_app_init_data(
    bot_token: &str,
    init_data: &str,
    now: DateTime<Utc>,
    max_age: Duration,
) -> Result<TelegramUser, AppError> {
    let mut fields = BTreeMap::new();
    for (key, value) in url::form_urlencoded::parse(init_data.as_bytes()) {
        if fields
            .insert(key.into_owned(), value.into_owned())
            .is_some()
        {
            return Err(AppError::invalid("init_data", "a field appears twice"));
        }
    }
    let mut mac = HmacSha256::new_from_slice(b"WebAppData")
        .map_err(|e| AppError::Internal(e.to_string().into()))?;
    mac.update(bot_token.as_bytes());
    let key = mac.finalize().into_bytes();
    verify_signed(&key, &fields)?;
    check_auth_date(&fields, now, max_age)?;

    #[derive(Deserialize)]
    struct User {
        id: i64,
        first_name: Option<String>,
        last_name: Option<String>,
        username: Option<String>,
    }
    let user: User = fields
        .get("user")
        .and_then(|user| serde_json::from_str(user).ok())
        .ok_or_else(|| AppError::invalid("init_data", "no user in the Mini App data"))?;
    if user.id <= 0 {
        return Err(AppError::invalid("init_data", "not a Telegram user id"));
    }
    Ok(TelegramUser {
        id: user.id,
        first_name: user.first_name,
        last_name: user.last_name,
        username: user.username,
    })
}

/// `hash` must be the hex HMAC-SHA256 of the other fields' data-check string under `key`.
fn verify_signed(key: &[u8], fields: &BTreeMap<String, String>) -> Result<(), AppError> {
    let hash = fields
        .get("hash")
        .and_then(|hash| hex::decode(hash).ok())
        .ok_or(AuthError::InvalidTelegramSignature)?;
    let data_check_string = fields
        .iter()
        .filter(|(key, _)| key.as_str() != "hash")
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut mac =
        HmacSha256::new_from_slice(key).map_err(|e| AppError::Internal(e.to_string().into()))?;
    mac.update(data_check_string.as_bytes());
    // `verify_slice` compares in constant time.
    mac.verify_slice(&hash)
        .map_err(|_| AuthError::InvalidTelegramSignature.into())
}

fn check_auth_date(
    fields: &BTreeMap<String, String>,
    now: DateTime<Utc>,
    max_age: Duration,
) -> Result<(), AppError> {
    let auth_date = fields
        .get("auth_date")
        .and_then(|date| date.parse::<i64>().ok())
        .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0))
        .ok_or_else(|| AppError::invalid("auth_date", "missing or not a Unix time"))?;
    let max_age = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
    if auth_date > now + CLOCK_SKEW || now - auth_date > max_age {
        return Err(AuthError::TelegramAuthExpired.into());
    }
    Ok(())
}

/// What [`App::reserve_telegram_identity`] did.
enum Reserved {
    /// The row is new, replacing the account's previous Telegram id (if any).
    New { previous: Option<i64> },
    /// The account already had this id.
    AlreadyOurs,
}

impl App {
    /// The configured bot, or `TelegramNotConfigured`.
    pub(super) fn telegram_bot(&self) -> Result<&TelegramBot, AppError> {
        self.auth
            .settings
            .telegram
            .as_ref()
            .ok_or_else(|| AuthError::TelegramNotConfigured.into())
    }

    /// The account a Telegram user is linked to.
    pub async fn account_by_telegram(
        &self,
        telegram_user_id: i64,
    ) -> Result<Option<AccountId>, AppError> {
        let found: Option<uuid::Uuid> = sqlx::query_scalar(
            "select account_id from telegram_identities where telegram_user_id = $1",
        )
        .bind(telegram_user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.map(AccountId))
    }

    /// The Telegram user an account is linked to.
    pub async fn telegram_of(&self, account_id: AccountId) -> Result<Option<i64>, AppError> {
        Ok(sqlx::query_scalar(
            "select telegram_user_id from telegram_identities where account_id = $1",
        )
        .bind(account_id.0)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Signs a staff member in with Login Widget data. Accounts are never created here: an
    /// unknown Telegram user is `UnknownTelegramUser`.
    #[tracing::instrument(skip_all)]
    pub async fn login_with_telegram(
        &self,
        fields: &BTreeMap<String, String>,
        client_ip: Option<String>,
        user_agent: Option<String>,
    ) -> Result<Tokens, AppError> {
        let bot = self.telegram_bot()?;
        let user = verify_login_widget(
            bot.token.expose_secret(),
            fields,
            crate::app::now(),
            self.auth.settings.telegram_auth_max_age,
        )?;
        let account_id = self
            .account_by_telegram(user.id)
            .await?
            .ok_or(AuthError::UnknownTelegramUser)?;
        let mut tx = self.pool.begin().await?;
        let tokens = self
            .open_session_for(&mut tx, account_id, &client_ip, &user_agent)
            .await?;
        tx.commit().await?;
        Ok(tokens)
    }

    /// Links the caller's account to the Telegram user of verified Login Widget data (replacing
    /// a previous link). Needed before the Telegram second factor or QR login work for an
    /// account made with an e-mail. Whoever is linked can sign in as the account, so a link
    /// needs the session's recent re-authentication (used up by it), and a new link revokes
    /// the account's other sessions; linking the Telegram user already linked changes nothing.
    #[tracing::instrument(skip(self, caller, fields))]
    pub async fn link_telegram(
        &self,
        caller: &Caller,
        fields: &BTreeMap<String, String>,
    ) -> Result<i64, AppError> {
        let principal = caller.principal();
        principal.require_session()?;
        let ctx = &caller.context(ActorRole::Account);
        let bot = self.telegram_bot()?;
        let user = verify_login_widget(
            bot.token.expose_secret(),
            fields,
            crate::app::now(),
            self.auth.settings.telegram_auth_max_age,
        )?;
        let account_id = principal.account_id();
        if self.telegram_of(account_id).await? == Some(user.id) {
            return Ok(user.id);
        }
        self.consume_reauthentication(principal).await?;
        let reserved = self.reserve_telegram_identity(user.id, account_id).await?;
        // The event holds the id sealed, so the aggregate cannot see a repeated link: the
        // same id linked again records nothing.
        let linked = async {
            if matches!(reserved, Reserved::AlreadyOurs)
                && self.has_telegram_linked(account_id, user.id).await?
            {
                return Ok(());
            }
            let command = AccountCommand::LinkTelegram {
                telegram_user: self.personal_data.seal(account_id, &user.id).await?,
                at: crate::app::now(),
            };
            self.accounts
                .execute(&account_id.to_string(), command, ctx)
                .await
        }
        .await;
        if let Err(err) = linked {
            if let Reserved::New { previous } = reserved {
                self.release_telegram_identity(account_id, previous).await?;
            }
            return Err(err);
        }
        self.revoke_sessions_after_change(principal, "Telegram linked from another session")
            .await?;
        Ok(user.id)
    }

    /// Signs a Mini App user in; a Telegram user without an account becomes a customer
    /// (registered through the Account aggregate, channel `telegram`). Each `initData` signs
    /// in once (a captured one cannot be replayed while it is fresh), and only customers: a
    /// staff account linked to the Telegram user is refused, so the Mini App never hands out a
    /// staff session without the password or the widget.
    #[tracing::instrument(skip_all)]
    pub async fn login_with_web_app(
        &self,
        init_data: &str,
        client_ip: Option<String>,
        user_agent: Option<String>,
    ) -> Result<WebAppLogin, AppError> {
        let bot = self.telegram_bot()?;
        let now = crate::app::now();
        let user = verify_web_app_init_data(
            bot.token.expose_secret(),
            init_data,
            now,
            self.auth.settings.telegram_auth_max_age,
        )?;
        self.use_init_data_once(init_data, now).await?;
        let (account_id, registered) = match self.account_by_telegram(user.id).await? {
            Some(account_id) if self.is_staff(account_id).await? => {
                tracing::warn!(%account_id, "Mini App sign-in of a staff account refused");
                return Err(AuthError::MiniAppCustomersOnly.into());
            }
            Some(account_id) => (account_id, false),
            None => {
                let mut ctx = CommandContext::for_actor(
                    AccountId::new(),
                    ActorRole::Customer,
                    Channel::Telegram,
                );
                ctx.origin.client_ip = client_ip.clone();
                ctx.origin.user_agent = user_agent.clone();
                (self.register_telegram_customer(&ctx, &user).await?, true)
            }
        };
        let mut tx = self.pool.begin().await?;
        let tokens = self
            .open_session_for(&mut tx, account_id, &client_ip, &user_agent)
            .await?;
        tx.commit().await?;
        Ok(WebAppLogin {
            account_id,
            registered,
            tokens,
        })
    }

    /// Records a verified `initData` as used; `TelegramDataReplayed` when it already was. Known
    /// by its signature, decoded (the same data re-encoded, or its hash in capitals, is the same
    /// sign-in), and kept until it would be too old anyway; older entries are dropped here.
    async fn use_init_data_once(
        &self,
        init_data: &str,
        now: DateTime<Utc>,
    ) -> Result<(), AppError> {
        let signature = url::form_urlencoded::parse(init_data.as_bytes())
            .find(|(key, _)| key == "hash")
            .and_then(|(_, hash)| hex::decode(hash.as_bytes()).ok())
            .ok_or(AuthError::InvalidTelegramSignature)?;
        let max_age = chrono::Duration::from_std(self.auth.settings.telegram_auth_max_age)
            .map_err(|e| AppError::Internal(Box::new(e)))?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("delete from telegram_web_app_sign_ins where expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let first = sqlx::query(
            "insert into telegram_web_app_sign_ins (signature, used_at, expires_at)
             values ($1, $2, $3) on conflict do nothing",
        )
        .bind(&signature)
        .bind(now)
        // An `auth_date` up to the clock skew ahead stays valid that much longer.
        .bind(now + max_age + CLOCK_SKEW)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if first.rows_affected() == 0 {
            tracing::warn!("a Mini App initData was presented again");
            return Err(AuthError::TelegramDataReplayed.into());
        }
        Ok(())
    }

    /// Whether an account is staff rather than a customer: it signs in with a password, is a
    /// platform admin, or holds a role in a store (as the `store_staff` read model shows).
    async fn is_staff(&self, account_id: AccountId) -> Result<bool, AppError> {
        let account = self.accounts.load(&account_id.to_string()).await?;
        if account.is_platform_admin() {
            return Ok(true);
        }
        Ok(sqlx::query_scalar(
            "select exists (select 1 from credentials where account_id = $1)
                 or exists (select 1 from store_staff where account_id = $1)",
        )
        .bind(account_id.0)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Registers a customer known by Telegram; the account id is the context's actor. When a
    /// concurrent sign-in of the same user won the race, its account is returned.
    pub(in crate::app) async fn register_telegram_customer(
        &self,
        ctx: &CommandContext,
        user: &TelegramUser,
    ) -> Result<AccountId, AppError> {
        let account_id = ctx
            .actor_id()
            .ok_or_else(|| AppError::Internal("a customer context names its account".into()))?;
        match self.reserve_telegram_identity(user.id, account_id).await {
            Ok(_) => {}
            Err(AppError::Auth(AuthError::TelegramAlreadyLinked)) => {
                return self.account_by_telegram(user.id).await?.ok_or_else(|| {
                    AppError::Conflict {
                        aggregate: "Account",
                        id: user.id.to_string(),
                    }
                });
            }
            Err(err) => return Err(err),
        }
        let registered = async {
            let display_name = match user.display_name() {
                Some(name) => Some(self.personal_data.seal(account_id, &name).await?),
                None => None,
            };
            let command = AccountCommand::Register {
                account_id,
                telegram_user: Some(self.personal_data.seal(account_id, &user.id).await?),
                email: None,
                display_name,
                platform_admin: false,
                channel: Channel::Telegram,
                at: crate::app::now(),
            };
            self.accounts
                .execute(&account_id.to_string(), command, ctx)
                .await
        }
        .await;
        if let Err(err) = registered {
            self.release_telegram_identity(account_id, None).await?;
            return Err(err);
        }
        Ok(account_id)
    }

    /// Whether the Account aggregate already records `telegram_user_id` as linked (opening
    /// the sealed id it holds).
    async fn has_telegram_linked(
        &self,
        account_id: AccountId,
        telegram_user_id: i64,
    ) -> Result<bool, AppError> {
        let account = self.accounts.load(&account_id.to_string()).await?;
        Ok(match account.telegram_user() {
            Some(TelegramId::Sealed(sealed)) => {
                self.personal_data.open::<i64>(sealed).await?
                    == crate::app::Revealed::Data(telegram_user_id)
            }
            Some(TelegramId::Legacy(id)) => *id == telegram_user_id,
            None => false,
        })
    }

    /// Makes `telegram_user_id` belong to `account_id`, replacing the account's previous id.
    /// `TelegramAlreadyLinked` when another account has it. Call before the command that records
    /// the id; on its failure, [`App::release_telegram_identity`].
    async fn reserve_telegram_identity(
        &self,
        telegram_user_id: i64,
        account_id: AccountId,
    ) -> Result<Reserved, AppError> {
        if telegram_user_id <= 0 {
            return Err(AccountError::InvalidTelegramUserId(telegram_user_id).into());
        }
        let mut tx = self.pool.begin().await?;
        // Serialises reservations of this account (first insert or a re-link).
        sqlx::query("select pg_advisory_xact_lock(hashtextextended($1::text, 13))")
            .bind(account_id.0)
            .execute(&mut *tx)
            .await?;
        let holder: Option<uuid::Uuid> = sqlx::query_scalar(
            "select account_id from telegram_identities where telegram_user_id = $1",
        )
        .bind(telegram_user_id)
        .fetch_optional(&mut *tx)
        .await?;
        match holder {
            Some(holder) if holder == account_id.0 => return Ok(Reserved::AlreadyOurs),
            Some(_) => return Err(AuthError::TelegramAlreadyLinked.into()),
            None => {}
        }
        let previous: Option<i64> = sqlx::query_scalar(
            "delete from telegram_identities where account_id = $1 returning telegram_user_id",
        )
        .bind(account_id.0)
        .fetch_optional(&mut *tx)
        .await?;
        let inserted = sqlx::query(
            "insert into telegram_identities (telegram_user_id, account_id) values ($1, $2)
             on conflict do nothing",
        )
        .bind(telegram_user_id)
        .bind(account_id.0)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            // Taken by another account between our read and our insert.
            return Err(AuthError::TelegramAlreadyLinked.into());
        }
        tx.commit().await?;
        Ok(Reserved::New { previous })
    }

    /// Undoes a reservation whose command failed, restoring the account's previous id.
    async fn release_telegram_identity(
        &self,
        account_id: AccountId,
        previous: Option<i64>,
    ) -> Result<(), AppError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("delete from telegram_identities where account_id = $1")
            .bind(account_id.0)
            .execute(&mut *tx)
            .await?;
        if let Some(previous) = previous {
            sqlx::query(
                "insert into telegram_identities (telegram_user_id, account_id) values ($1, $2)
                 on conflict do nothing",
            )
            .bind(previous)
            .bind(account_id.0)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Reserves the Telegram id of an account about to be registered (see
    /// [`App::register_account`]); returns whether a row was reserved and must be released
    /// should the registration fail.
    pub(in crate::app) async fn reserve_telegram_for_registration(
        &self,
        telegram_user_id: Option<i64>,
        account_id: AccountId,
    ) -> Result<bool, AppError> {
        match telegram_user_id {
            Some(id) => {
                self.reserve_telegram_identity(id, account_id).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Releases the reservation of a registration that failed.
    pub(in crate::app) async fn release_telegram_for_registration(
        &self,
        account_id: AccountId,
    ) -> Result<(), AppError> {
        self.release_telegram_identity(account_id, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "123456:TEST-bot-token";

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).expect("time")
    }

    fn sign(key: &[u8], fields: &BTreeMap<String, String>) -> String {
        let dcs = fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut mac = HmacSha256::new_from_slice(key).expect("key");
        mac.update(dcs.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn widget(auth_date: i64) -> BTreeMap<String, String> {
        let mut fields: BTreeMap<String, String> = [
            ("id", "42".to_owned()),
            ("first_name", "Ann".to_owned()),
            ("username", "ann".to_owned()),
            ("auth_date", auth_date.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let hash = sign(&Sha256::digest(TOKEN.as_bytes()), &fields);
        fields.insert("hash".into(), hash);
        fields
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_widget_payload_signed_with_the_bot_token_is_accepted() {
        let user =
            verify_login_widget(TOKEN, &widget(now().timestamp() - 10), now(), DAY).expect("valid");
        assert_eq!(user.id, 42);
        assert_eq!(user.display_name().as_deref(), Some("Ann"));
    }

    #[test]
    fn an_altered_or_foreign_widget_payload_is_refused() {
        let mut fields = widget(now().timestamp());
        fields.insert("id".into(), "43".into());
        assert!(matches!(
            verify_login_widget(TOKEN, &fields, now(), DAY),
            Err(AppError::Auth(AuthError::InvalidTelegramSignature))
        ));
        assert!(matches!(
            verify_login_widget("999:other", &widget(now().timestamp()), now(), DAY),
            Err(AppError::Auth(AuthError::InvalidTelegramSignature))
        ));
        let mut no_hash = widget(now().timestamp());
        no_hash.remove("hash");
        assert!(matches!(
            verify_login_widget(TOKEN, &no_hash, now(), DAY),
            Err(AppError::Auth(AuthError::InvalidTelegramSignature))
        ));
    }

    #[test]
    fn widget_payloads_outside_the_window_are_refused() {
        let old = widget(now().timestamp() - 86_401);
        assert!(matches!(
            verify_login_widget(TOKEN, &old, now(), DAY),
            Err(AppError::Auth(AuthError::TelegramAuthExpired))
        ));
        let future = widget(now().timestamp() + 120);
        assert!(matches!(
            verify_login_widget(TOKEN, &future, now(), DAY),
            Err(AppError::Auth(AuthError::TelegramAuthExpired))
        ));
        let skewed = widget(now().timestamp() + 30);
        assert!(verify_login_widget(TOKEN, &skewed, now(), DAY).is_ok());
    }

    #[test]
    fn mini_app_init_data_is_checked_with_the_web_app_key() {
        let user = r#"{"id":777,"first_name":"Bob","last_name":"Lee"}"#;
        let mut fields: BTreeMap<String, String> = [
            ("auth_date", now().timestamp().to_string()),
            ("query_id", "AAH".to_owned()),
            ("user", user.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut mac = HmacSha256::new_from_slice(b"WebAppData").expect("key");
        mac.update(TOKEN.as_bytes());
        let key = mac.finalize().into_bytes();
        fields.insert("hash".into(), sign(&key, &fields));
        let init_data = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&fields)
            .finish();
        let verified = verify_web_app_init_data(TOKEN, &init_data, now(), DAY).expect("valid");
        assert_eq!(verified.id, 777);
        assert_eq!(verified.display_name().as_deref(), Some("Bob Lee"));
        // The widget key does not verify Mini App data.
        let widget_key = Sha256::digest(TOKEN.as_bytes());
        fields.insert(
            "hash".into(),
            sign(&widget_key, &{
                let mut f = fields.clone();
                f.remove("hash");
                f
            }),
        );
        let forged = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&fields)
            .finish();
        assert!(matches!(
            verify_web_app_init_data(TOKEN, &forged, now(), DAY),
            Err(AppError::Auth(AuthError::InvalidTelegramSignature))
        ));
        assert!(matches!(
            verify_web_app_init_data(TOKEN, "hash=00&hash=00", now(), DAY),
            Err(AppError::Invalid { .. })
        ));
    }
}
