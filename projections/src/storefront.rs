//! What the Telegram bot shows, read from the read models (never the aggregates): a store's
//! window (its active products with what is available), a customer's orders, a store's recent
//! orders and its receipts waiting for review. Each function reads the tables of the read
//! models named in its doc; callers authorize first (the bot gets its store from a proof).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// A store as customers see it (`catalog`).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct StoreCard {
    pub store_id: Uuid,
    pub name: String,
    pub currency: String,
    pub timezone: String,
    pub payment_instructions: String,
}

/// A product on sale, with the units that can still be ordered (`catalog`, `stock`).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ProductCard {
    pub product_id: Uuid,
    pub store_id: Uuid,
    pub name: String,
    pub description: String,
    pub sku: String,
    pub price_minor: i64,
    pub currency: String,
    /// `None` while the stock is not projected yet.
    pub available: Option<i64>,
}

/// An order as its customer or the store's staff see it (`orders`, `catalog`).
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct OrderCard {
    pub order_id: Uuid,
    pub store_id: Uuid,
    pub store_name: Option<String>,
    pub customer_id: Uuid,
    pub status: String,
    pub total_minor: i64,
    pub currency: String,
    /// `[{"product_id", "quantity", "unit_price_minor", "line_total_minor"}]`.
    pub lines: serde_json::Value,
    pub receipt_id: Option<Uuid>,
    pub receipt_status: Option<String>,
    pub placed_at: DateTime<Utc>,
    pub payment_due_by: DateTime<Utc>,
}

/// A receipt waiting for review (`receipts`, `orders`).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct PendingReceipt {
    pub receipt_id: Uuid,
    pub order_id: Uuid,
    pub store_id: Uuid,
    pub media_type: String,
    pub storage_key: String,
    pub claimed_amount_minor: Option<i64>,
    pub order_total_minor: Option<i64>,
    pub currency: Option<String>,
    pub possible_duplicate: bool,
    pub submitted_at: DateTime<Utc>,
}

const ORDER_COLUMNS: &str = "o.order_id, o.store_id, s.name as store_name, o.customer_id, \
     o.status, o.total_minor, o.currency, o.lines, o.receipt_id, o.receipt_status, o.placed_at, \
     o.payment_due_by";

/// The store `store_id`.
pub async fn store(pool: &PgPool, store_id: Uuid) -> Result<Option<StoreCard>, sqlx::Error> {
    sqlx::query_as(
        "select store_id, name, currency, timezone, payment_instructions from stores \
         where store_id = $1",
    )
    .bind(store_id)
    .fetch_optional(pool)
    .await
}

/// The store's active products by name, `limit` from `offset`, and whether more follow.
pub async fn window(
    pool: &PgPool,
    store_id: Uuid,
    offset: i64,
    limit: i64,
) -> Result<(Vec<ProductCard>, bool), sqlx::Error> {
    let mut cards: Vec<ProductCard> = sqlx::query_as(
        "select p.product_id, p.store_id, p.name, p.description, p.sku, p.price_minor, \
                p.currency, l.available \
           from products p left join stock_levels l on l.product_id = p.product_id \
          where p.store_id = $1 and p.status = 'ACTIVE' \
          order by p.name, p.product_id offset $2 limit $3",
    )
    .bind(store_id)
    .bind(offset)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let more = cards.len() as i64 > limit;
    cards.truncate(limit.max(0) as usize);
    Ok((cards, more))
}

/// One product, active or not.
pub async fn product(pool: &PgPool, product_id: Uuid) -> Result<Option<ProductCard>, sqlx::Error> {
    sqlx::query_as(
        "select p.product_id, p.store_id, p.name, p.description, p.sku, p.price_minor, \
                p.currency, l.available \
           from products p left join stock_levels l on l.product_id = p.product_id \
          where p.product_id = $1",
    )
    .bind(product_id)
    .fetch_optional(pool)
    .await
}

/// A customer's orders, newest first.
pub async fn customer_orders(
    pool: &PgPool,
    customer_id: Uuid,
    limit: i64,
) -> Result<Vec<OrderCard>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {ORDER_COLUMNS} from orders o left join stores s on s.store_id = o.store_id \
          where o.customer_id = $1 order by o.placed_at desc, o.order_id desc limit $2"
    ))
    .bind(customer_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One order.
pub async fn order(pool: &PgPool, order_id: Uuid) -> Result<Option<OrderCard>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {ORDER_COLUMNS} from orders o left join stores s on s.store_id = o.store_id \
          where o.order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(pool)
    .await
}

/// The order numbered `number` (see `OrderId::number`) among `customer_id`'s orders, or, with
/// `store_ids`, among those stores' orders.
pub async fn order_by_number(
    pool: &PgPool,
    number: &str,
    customer_id: Option<Uuid>,
    store_ids: &[Uuid],
) -> Result<Option<OrderCard>, sqlx::Error> {
    let suffix = number.trim().trim_start_matches('#').to_ascii_lowercase();
    if suffix.len() != 8 || !suffix.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(None);
    }
    sqlx::query_as(&format!(
        "select {ORDER_COLUMNS} from orders o left join stores s on s.store_id = o.store_id \
          where right(replace(o.order_id::text, '-', ''), 8) = $1 \
            and (($2::uuid is not null and o.customer_id = $2) or o.store_id = any($3)) \
          order by o.placed_at desc limit 1"
    ))
    .bind(&suffix)
    .bind(customer_id)
    .bind(store_ids)
    .fetch_optional(pool)
    .await
}

/// A store's orders, newest first, optionally in one status (`AWAITING_PAYMENT`, …).
pub async fn store_orders(
    pool: &PgPool,
    store_id: Uuid,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<OrderCard>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {ORDER_COLUMNS} from orders o left join stores s on s.store_id = o.store_id \
          where o.store_id = $1 and ($2::text is null or o.status = $2) \
          order by o.placed_at desc, o.order_id desc limit $3"
    ))
    .bind(store_id)
    .bind(status)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The store's receipts waiting for review, oldest first.
pub async fn pending_receipts(
    pool: &PgPool,
    store_id: Uuid,
    limit: i64,
) -> Result<Vec<PendingReceipt>, sqlx::Error> {
    sqlx::query_as(
        "select r.receipt_id, r.order_id, r.store_id, r.media_type, r.storage_key, \
                r.claimed_amount_minor, o.total_minor as order_total_minor, o.currency, \
                (cardinality(r.duplicate_of) > 0 or r.duplicates_elsewhere > 0) \
                  as possible_duplicate, r.submitted_at \
           from receipts r left join orders o on o.order_id = r.order_id \
          where r.store_id = $1 and r.status = 'SUBMITTED' \
          order by r.submitted_at, r.receipt_id limit $2",
    )
    .bind(store_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One receipt with its order's total (`receipts`, `orders`), whatever its status.
pub async fn receipt(pool: &PgPool, receipt_id: Uuid) -> Result<Option<PendingReceipt>, sqlx::Error> {
    sqlx::query_as(
        "select r.receipt_id, r.order_id, r.store_id, r.media_type, r.storage_key, \
                r.claimed_amount_minor, o.total_minor as order_total_minor, o.currency, \
                (cardinality(r.duplicate_of) > 0 or r.duplicates_elsewhere > 0) \
                  as possible_duplicate, r.submitted_at \
           from receipts r left join orders o on o.order_id = r.order_id \
          where r.receipt_id = $1",
    )
    .bind(receipt_id)
    .fetch_optional(pool)
    .await
}
