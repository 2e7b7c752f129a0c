//! Queries of the orders read model: one order, a store's orders, an order's timeline, a
//! customer's recent orders.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

/// A line as placed, with its derived total (an element of `orders.lines`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub quantity: i64,
    pub unit_price_minor: i64,
    pub line_total_minor: i64,
}

/// An order's current state (`orders`).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Order {
    pub order_id: Uuid,
    pub store_id: Uuid,
    pub customer_id: Uuid,
    pub status: String,
    pub currency: String,
    pub total_minor: i64,
    #[sqlx(json)]
    pub lines: Vec<OrderLine>,
    pub has_contact: bool,
    pub receipt_id: Option<Uuid>,
    pub receipt_status: Option<String>,
    pub placed_at: DateTime<Utc>,
    pub payment_due_by: DateTime<Utc>,
    pub receipt_submitted_at: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    pub fulfilled_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub expired_at: Option<DateTime<Utc>>,
    pub cancelled_by: Option<String>,
    pub status_reason: Option<String>,
    pub updated_at: DateTime<Utc>,
}

const ORDER_COLUMNS: &str = "order_id, store_id, customer_id, status, currency, total_minor, \
     lines, has_contact, receipt_id, receipt_status, placed_at, payment_due_by, \
     receipt_submitted_at, paid_at, fulfilled_at, completed_at, cancelled_at, expired_at, \
     cancelled_by, status_reason, updated_at";

/// One order, whatever its store (the caller authorizes on the row's `store_id`).
pub async fn order(pool: &PgPool, order_id: Uuid) -> Result<Option<Order>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {ORDER_COLUMNS} from orders where order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(pool)
    .await
}

/// The orders among `order_ids` that exist, in no particular order (one query for a page that
/// shows many: the console's payment desk). The caller authorizes on each row's `store_id`.
pub async fn orders_by_id(pool: &PgPool, order_ids: &[Uuid]) -> Result<Vec<Order>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {ORDER_COLUMNS} from orders where order_id = any($1)"
    ))
    .bind(order_ids)
    .fetch_all(pool)
    .await
}

/// Which orders [`orders`] lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrderFilter {
    /// `AWAITING_PAYMENT`, `PAID`, … (`OrderStatus::as_str`).
    pub status: Option<&'static str>,
    pub customer_id: Option<Uuid>,
    /// Placed at or after.
    pub from: Option<DateTime<Utc>>,
    /// Placed before.
    pub to: Option<DateTime<Utc>>,
    /// Oldest first (else newest first).
    pub ascending: bool,
}

/// A store's orders by placement time, keyed by `(placed_at, order_id)`.
pub async fn orders(
    pool: &PgPool,
    store_id: Uuid,
    filter: &OrderFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Order>, sqlx::Error> {
    let (direction, comparison) = if filter.ascending {
        ("asc", ">")
    } else {
        ("desc", "<")
    };
    sqlx::query_as(&format!(
        "select {ORDER_COLUMNS} from orders where store_id = $1 \
           and ($2::text is null or status = $2) \
           and ($3::uuid is null or customer_id = $3) \
           and ($4::timestamptz is null or placed_at >= $4) \
           and ($5::timestamptz is null or placed_at < $5) \
           and ($6::timestamptz is null or (placed_at, order_id) {comparison} ($6, $7)) \
         order by placed_at {direction}, order_id {direction} limit $8"
    ))
    .bind(store_id)
    .bind(filter.status)
    .bind(filter.customer_id)
    .bind(filter.from)
    .bind(filter.to)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One event in an order's life (`order_timeline`).
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct TimelineEntry {
    pub global_position: i64,
    pub event_type: String,
    pub status_after: String,
    pub actor_id: Option<Uuid>,
    pub actor_role: String,
    pub channel: String,
    /// The event's fields, without personal data.
    pub detail: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

/// Every event of an order, oldest first.
pub async fn timeline(pool: &PgPool, order_id: Uuid) -> Result<Vec<TimelineEntry>, sqlx::Error> {
    sqlx::query_as(
        "select global_position, event_type, status_after, actor_id, actor_role, channel, \
                detail, recorded_at \
           from order_timeline where order_id = $1 order by global_position",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await
}

/// An order as a customer's profile lists it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct OrderSummary {
    pub order_id: Uuid,
    pub status: String,
    pub total_minor: i64,
    pub currency: String,
    pub placed_at: DateTime<Utc>,
}

/// A customer's `limit` most recent orders in a store, newest first.
pub async fn recent_orders_of(
    pool: &PgPool,
    store_id: Uuid,
    customer_id: Uuid,
    limit: i64,
) -> Result<Vec<OrderSummary>, sqlx::Error> {
    sqlx::query_as(
        "select order_id, status, total_minor, currency, placed_at from orders \
          where store_id = $1 and customer_id = $2 order by placed_at desc limit $3",
    )
    .bind(store_id)
    .bind(customer_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A customer's `limit` most recent orders in every store, newest first (what the customer
/// sees of their own orders).
pub async fn orders_of_customer(
    pool: &PgPool,
    customer_id: Uuid,
    limit: i64,
) -> Result<Vec<Order>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {ORDER_COLUMNS} from orders where customer_id = $1 \
         order by placed_at desc, order_id desc limit $2"
    ))
    .bind(customer_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Where an order numbered `number` (`OrderId::number`: the last 8 hex digits of its id) is
/// looked for: among one customer's orders, or among some stores' orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumberedAmong<'a> {
    Customer(Uuid),
    Stores(&'a [Uuid]),
}

/// The most recent order numbered `number` (case-insensitive, a leading `#` allowed) within
/// `among`; `None` when there is none or `number` is not 8 hex digits.
pub async fn order_numbered(
    pool: &PgPool,
    number: &str,
    among: NumberedAmong<'_>,
) -> Result<Option<Order>, sqlx::Error> {
    let suffix = number.trim().trim_start_matches('#').to_ascii_lowercase();
    if suffix.len() != 8 || !suffix.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let (customer, stores) = match among {
        NumberedAmong::Customer(customer) => (Some(customer), &[][..]),
        NumberedAmong::Stores(stores) => (None, stores),
    };
    sqlx::query_as(&format!(
        "select {ORDER_COLUMNS} from orders \
          where right(replace(order_id::text, '-', ''), 8) = $1 \
            and (customer_id = $2 or store_id = any($3)) \
          order by placed_at desc limit 1"
    ))
    .bind(&suffix)
    .bind(customer)
    .bind(stores)
    .fetch_optional(pool)
    .await
}
