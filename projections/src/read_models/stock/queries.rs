//! Queries of the stock read model: a product's level, its movements, a store's alerts (with
//! the product's name from the catalog read model's `products`).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// A product's stock figures (`stock_levels`).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct StockLevel {
    pub product_id: Uuid,
    pub store_id: Uuid,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    /// `normal`, `low` or `out`.
    pub level: String,
    pub threshold_override: Option<i32>,
    pub effective_threshold: i32,
    pub updated_at: DateTime<Utc>,
}

/// One product's level, whatever its store (the caller authorizes on the row's `store_id`).
pub async fn level(pool: &PgPool, product_id: Uuid) -> Result<Option<StockLevel>, sqlx::Error> {
    sqlx::query_as(
        "select product_id, store_id, on_hand, reserved, available, level, threshold_override, \
                effective_threshold, updated_at \
           from stock_levels where product_id = $1",
    )
    .bind(product_id)
    .fetch_optional(pool)
    .await
}

/// One stock movement (`stock_history`).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Movement {
    pub global_position: i64,
    /// `received`, `adjusted`, `reserved`, `released`, `committed`.
    pub movement: String,
    pub on_hand_delta: i64,
    pub reserved_delta: i64,
    pub reason: Option<String>,
    pub note: Option<String>,
    pub order_id: Option<Uuid>,
    pub on_hand_after: i64,
    pub reserved_after: i64,
    pub available_after: i64,
    pub actor_id: Option<Uuid>,
    pub recorded_at: DateTime<Utc>,
}

/// A product's movements in the store, newest first, keyed by global position (`before`: the
/// position of the last movement of the previous page).
pub async fn history(
    pool: &PgPool,
    store_id: Uuid,
    product_id: Uuid,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Movement>, sqlx::Error> {
    sqlx::query_as(
        "select global_position, movement, on_hand_delta, reserved_delta, reason, note, \
                order_id, on_hand_after, reserved_after, available_after, actor_id, recorded_at \
           from stock_history \
          where product_id = $1 and store_id = $2 \
            and ($3::bigint is null or global_position < $3) \
          order by global_position desc limit $4",
    )
    .bind(product_id)
    .bind(store_id)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A low- or out-of-stock alert (`stock_alerts`), with the product's name and what is
/// available now.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Alert {
    pub alert_id: i64,
    pub product_id: Uuid,
    pub store_id: Uuid,
    pub product_name: Option<String>,
    /// `low` or `out`.
    pub level: String,
    /// Units available when the stock reached this level.
    pub available: i64,
    pub available_now: Option<i64>,
    pub threshold: i32,
    pub opened_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<Uuid>,
}

/// Which alerts [`alerts`] lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertState {
    /// Not resolved (acknowledged or not).
    Open,
    /// Open and not acknowledged.
    Unacknowledged,
    Resolved,
    All,
}

impl AlertState {
    fn condition(self) -> &'static str {
        match self {
            AlertState::Open => "a.resolved_at is null",
            AlertState::Unacknowledged => "a.resolved_at is null and a.acknowledged_at is null",
            AlertState::Resolved => "a.resolved_at is not null",
            AlertState::All => "true",
        }
    }
}

const ALERT_QUERY: &str = "select a.alert_id, a.product_id, a.store_id, p.name as product_name, \
     a.level, a.available, a.threshold, a.opened_at, a.resolved_at, a.acknowledged_at, \
     a.acknowledged_by, l.available as available_now from stock_alerts a \
     left join products p on p.product_id = a.product_id \
     left join stock_levels l on l.product_id = a.product_id";

/// One alert, whatever its store (the caller authorizes on the row's `store_id`).
pub async fn alert(pool: &PgPool, alert_id: i64) -> Result<Option<Alert>, sqlx::Error> {
    sqlx::query_as(&format!("{ALERT_QUERY} where a.alert_id = $1"))
        .bind(alert_id)
        .fetch_optional(pool)
        .await
}

/// A store's alerts in `state`, newest first, keyed by alert id (`before`: the id of the last
/// alert of the previous page).
pub async fn alerts(
    pool: &PgPool,
    store_id: Uuid,
    state: AlertState,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Alert>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{ALERT_QUERY} where a.store_id = $1 and {} \
           and ($2::bigint is null or a.alert_id < $2) \
         order by a.alert_id desc limit $3",
        state.condition()
    ))
    .bind(store_id)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}
