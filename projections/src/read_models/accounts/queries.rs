//! Queries of the accounts read model: the platform's user directory and the sealed contact
//! details of people. Personal data stays sealed in what these return; the application opens it
//! with the person's key (so an erased person reads as erased).

use aggregates::{SealedPersonalData, TelegramId};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

/// An account as the user directory lists it (no personal data).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Account {
    pub account_id: Uuid,
    /// `api` (staff) or `telegram` (customers).
    pub channel: String,
    pub platform_admin: bool,
    pub blocked_reason: Option<String>,
    pub blocked_at: Option<DateTime<Utc>>,
    pub registered_at: DateTime<Utc>,
}

/// Which accounts [`accounts`] lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountFilter {
    pub blocked: Option<bool>,
    pub platform_admin: Option<bool>,
    /// Only accounts matching the search, when given.
    pub search: Option<AccountSearch>,
}

/// Accounts matching any of these (a search term read every way it can be read).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountSearch {
    pub account_id: Option<Uuid>,
    /// Accounts found by other means: their login e-mail or Telegram user id, which this read
    /// model does not hold in clear.
    pub among: Vec<Uuid>,
}

const ACCOUNT_QUERY: &str = "select a.account_id, a.channel, a.platform_admin, a.blocked_reason, \
     a.blocked_at, a.registered_at from accounts a";

/// One account.
pub async fn account(pool: &PgPool, account_id: Uuid) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as(&format!("{ACCOUNT_QUERY} where a.account_id = $1"))
        .bind(account_id)
        .fetch_optional(pool)
        .await
}

/// Accounts, newest first, keyed by `(registered_at, account_id)`.
pub async fn accounts(
    pool: &PgPool,
    filter: &AccountFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Account>, sqlx::Error> {
    let search = filter.search.as_ref();
    sqlx::query_as(&format!(
        "{ACCOUNT_QUERY} where ($1::boolean is null or (a.blocked_at is not null) = $1) \
           and ($2::boolean is null or a.platform_admin = $2) \
           and ($3::timestamptz is null or (a.registered_at, a.account_id) < ($3, $4)) \
           and (not $6 or a.account_id = $7 or a.account_id = any($8)) \
         order by a.registered_at desc, a.account_id desc limit $5"
    ))
    .bind(filter.blocked)
    .bind(filter.platform_admin)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .bind(search.is_some())
    .bind(search.and_then(|s| s.account_id))
    .bind(search.map(|s| s.among.as_slice()).unwrap_or_default())
    .fetch_all(pool)
    .await
}

/// A person's contact details as the read model keeps them: sealed.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SealedContact {
    pub account_id: Uuid,
    /// Sealed, or the bare number a version 1.0 event recorded.
    pub telegram_user: Option<Json<TelegramId>>,
    pub email: Option<Json<SealedPersonalData>>,
    pub display_name: Option<Json<SealedPersonalData>>,
    /// When the person's erasure was projected.
    pub erased_at: Option<DateTime<Utc>>,
}

/// The sealed contact details of `people` (ids without an account are left out).
pub async fn sealed_contacts(
    pool: &PgPool,
    people: &[Uuid],
) -> Result<Vec<SealedContact>, sqlx::Error> {
    sqlx::query_as(
        "select account_id, telegram_user, email, display_name, erased_at from accounts \
          where account_id = any($1)",
    )
    .bind(people)
    .fetch_all(pool)
    .await
}
