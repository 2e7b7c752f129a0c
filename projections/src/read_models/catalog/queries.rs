//! Queries of the catalog read model: stores, who works where, products (with their stock from
//! the stock read model's `stock_levels`, which a product's view shows beside its price).
//!
//! Rows are plain data; adapters map them to their own response types. Lists are keyset pages:
//! `after` is the key of the last row of the previous page, `limit` the most rows returned (ask
//! for one more than a page shows to learn whether another follows).

use aggregates::StoreRole;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// A store and its settings (`stores`).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Store {
    pub store_id: Uuid,
    pub name: String,
    pub currency: String,
    pub timezone: String,
    pub payment_instructions: String,
    pub default_low_stock_threshold: i32,
    pub reservation_ttl_minutes: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A store with the role one account holds there (`None`: no role, e.g. a platform admin's
/// view of every store).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct MemberStore {
    #[sqlx(flatten)]
    pub store: Store,
    pub role: Option<String>,
}

/// Which stores [`stores`] lists for `account_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreFilter {
    /// The account whose role is shown beside each store.
    pub account_id: Uuid,
    /// Every store, not only those where the account holds a role (platform admins).
    pub every_store: bool,
    /// Only these stores (an API token's scope); `None`: no such limit.
    pub only: Option<Vec<Uuid>>,
}

const STORE_COLUMNS: &str = "s.store_id, s.name, s.currency, s.timezone, s.payment_instructions, \
     s.default_low_stock_threshold, s.reservation_ttl_minutes, s.created_at, s.updated_at";

/// One store.
pub async fn store(pool: &PgPool, store_id: Uuid) -> Result<Option<Store>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {STORE_COLUMNS} from stores s where s.store_id = $1"
    ))
    .bind(store_id)
    .fetch_optional(pool)
    .await
}

/// The stores named in `store_ids` that the read model has (in no particular order).
pub async fn stores_by_id(pool: &PgPool, store_ids: &[Uuid]) -> Result<Vec<Store>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {STORE_COLUMNS} from stores s where s.store_id = any($1)"
    ))
    .bind(store_ids)
    .fetch_all(pool)
    .await
}

/// Stores by creation (oldest first), keyed by `(created_at, store_id)`.
pub async fn stores(
    pool: &PgPool,
    filter: &StoreFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<MemberStore>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {STORE_COLUMNS}, st.role \
           from stores s left join store_staff st \
             on st.store_id = s.store_id and st.account_id = $1 \
          where (st.account_id is not null or $2) \
            and ($3::timestamptz is null or (s.created_at, s.store_id) > ($3, $4)) \
            and ($6::uuid[] is null or s.store_id = any($6)) \
          order by s.created_at, s.store_id limit $5"
    ))
    .bind(filter.account_id)
    .bind(filter.every_store)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .bind(filter.only.as_deref())
    .fetch_all(pool)
    .await
}

/// Someone on a store's staff (`store_staff`).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct StaffMember {
    pub store_id: Uuid,
    pub account_id: Uuid,
    /// `OWNER`, `ADMIN`, `VENDOR` or `AUDITOR`.
    pub role: String,
    pub assigned_by: Uuid,
    pub assigned_at: DateTime<Utc>,
}

const STAFF_COLUMNS: &str = "store_id, account_id, role, assigned_by, assigned_at";

/// A store's staff, by assignment (oldest first).
pub async fn staff(pool: &PgPool, store_id: Uuid) -> Result<Vec<StaffMember>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {STAFF_COLUMNS} from store_staff where store_id = $1 \
          order by assigned_at, account_id"
    ))
    .bind(store_id)
    .fetch_all(pool)
    .await
}

/// One account's place on a store's staff, if it has one.
pub async fn staff_member(
    pool: &PgPool,
    store_id: Uuid,
    account_id: Uuid,
) -> Result<Option<StaffMember>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {STAFF_COLUMNS} from store_staff where store_id = $1 and account_id = $2"
    ))
    .bind(store_id)
    .bind(account_id)
    .fetch_optional(pool)
    .await
}

/// A role one account holds in one store, with the store's name.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct StoreRoleOf {
    pub store_id: Uuid,
    pub store_name: String,
    /// `OWNER`, `ADMIN`, `VENDOR` or `AUDITOR`.
    pub role: String,
}

impl StoreRoleOf {
    /// The role as the domain names it (`None` for a name this build does not know).
    pub fn store_role(&self) -> Option<StoreRole> {
        store_role(&self.role)
    }
}

/// Every role `account_id` holds, by store name; only in `among` when given (an API token's
/// stores). Which of them allow what is the application's matrix to say, not this query's.
pub async fn roles_of(
    pool: &PgPool,
    account_id: Uuid,
    among: Option<&[Uuid]>,
) -> Result<Vec<StoreRoleOf>, sqlx::Error> {
    sqlx::query_as(
        "select st.store_id, s.name as store_name, st.role from store_staff st \
           join stores s on s.store_id = st.store_id \
          where st.account_id = $1 and ($2::uuid[] is null or st.store_id = any($2)) \
          order by s.name, st.store_id",
    )
    .bind(account_id)
    .bind(among)
    .fetch_all(pool)
    .await
}

/// The domain's role for its stored name.
pub fn store_role(name: &str) -> Option<StoreRole> {
    [
        StoreRole::Owner,
        StoreRole::Admin,
        StoreRole::Vendor,
        StoreRole::Auditor,
    ]
    .into_iter()
    .find(|role| role.as_str() == name)
}

/// A product with its price and, once the stock read model has seen it, its stock.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Product {
    pub product_id: Uuid,
    pub store_id: Uuid,
    pub name: String,
    pub description: String,
    pub sku: String,
    pub price_minor: i64,
    pub currency: String,
    /// `ACTIVE` or `ARCHIVED`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub on_hand: Option<i64>,
    pub reserved: Option<i64>,
    pub available: Option<i64>,
    pub level: Option<String>,
    pub threshold_override: Option<i32>,
    pub effective_threshold: Option<i32>,
    pub stock_updated_at: Option<DateTime<Utc>>,
}

/// Which products [`products`] lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProductFilter {
    /// `ACTIVE` or `ARCHIVED`.
    pub status: Option<&'static str>,
    /// A case-insensitive substring of the name or sku (matched literally: `%` and `_` are not
    /// wildcards).
    pub text: Option<String>,
    /// `normal`, `low` or `out`.
    pub level: Option<String>,
}

const PRODUCT_QUERY: &str = "select p.product_id, p.store_id, p.name, p.description, p.sku, \
     p.price_minor, p.currency, p.status, p.created_at, p.updated_at, \
     l.on_hand, l.reserved, l.available, l.level, l.threshold_override, l.effective_threshold, \
     l.updated_at as stock_updated_at \
     from products p left join stock_levels l on l.product_id = p.product_id";

/// One product, whatever its store (the caller authorizes on the row's `store_id`).
pub async fn product(pool: &PgPool, product_id: Uuid) -> Result<Option<Product>, sqlx::Error> {
    sqlx::query_as(&format!("{PRODUCT_QUERY} where p.product_id = $1"))
        .bind(product_id)
        .fetch_optional(pool)
        .await
}

/// The products among `product_ids` that exist (one query for a page listing many lines).
pub async fn products_by_id(
    pool: &PgPool,
    product_ids: &[Uuid],
) -> Result<Vec<Product>, sqlx::Error> {
    sqlx::query_as(&format!("{PRODUCT_QUERY} where p.product_id = any($1)"))
        .bind(product_ids)
        .fetch_all(pool)
        .await
}

/// A store's products by name, keyed by `(name, product_id)`.
pub async fn products(
    pool: &PgPool,
    store_id: Uuid,
    filter: &ProductFilter,
    after: Option<(String, Uuid)>,
    limit: i64,
) -> Result<Vec<Product>, sqlx::Error> {
    let pattern = filter.text.as_deref().map(|text| {
        format!(
            "%{}%",
            text.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        )
    });
    let (after_name, after_id) = after.unzip();
    sqlx::query_as(&format!(
        "{PRODUCT_QUERY} where p.store_id = $1 \
           and ($2::text is null or p.status = $2) \
           and ($3::text is null or p.name ilike $3 or p.sku ilike $3) \
           and ($4::text is null or l.level = $4) \
           and ($5::text is null or (p.name, p.product_id) > ($5, $6)) \
         order by p.name, p.product_id limit $7"
    ))
    .bind(store_id)
    .bind(filter.status)
    .bind(pattern)
    .bind(filter.level.as_deref())
    .bind(after_name)
    .bind(after_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_reads_back_from_its_stored_name() {
        for role in [
            StoreRole::Owner,
            StoreRole::Admin,
            StoreRole::Vendor,
            StoreRole::Auditor,
        ] {
            assert_eq!(store_role(role.as_str()), Some(role));
        }
        assert_eq!(store_role("owner"), None);
    }
}

/// A store's time zone and when it was opened: what the owners' daily summary needs to know
/// which local day has ended.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct StoreZone {
    pub store_id: Uuid,
    pub timezone: String,
    pub created_at: DateTime<Utc>,
}

/// Every store's time zone, by store id.
pub async fn store_zones(pool: &PgPool) -> Result<Vec<StoreZone>, sqlx::Error> {
    sqlx::query_as("select store_id, timezone, created_at from stores order by store_id")
        .fetch_all(pool)
        .await
}
