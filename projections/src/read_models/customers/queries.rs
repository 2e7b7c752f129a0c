//! Queries of the customers read model: a store's customers with their lifetime value and
//! block (from the catalog read model's `customer_blocks`), and the customer summary of the
//! analytics. Lifetime values are `numeric` sums, read exactly as `i128`.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgPool, Row};
use uuid::Uuid;

use crate::read_models::minor;

/// A customer of a store in one currency, with the store's block if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Customer {
    pub customer_id: Uuid,
    pub currency: String,
    pub first_order_at: DateTime<Utc>,
    pub last_order_at: DateTime<Utc>,
    pub orders: i32,
    pub paid_orders: i32,
    /// Revenue of the customer's paid orders, in minor units.
    pub lifetime_value_minor: i128,
    pub blocked_reason: Option<String>,
    pub blocked_at: Option<DateTime<Utc>>,
}

impl FromRow<'_, PgRow> for Customer {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            customer_id: row.try_get("customer_id")?,
            currency: row.try_get("currency")?,
            first_order_at: row.try_get("first_order_at")?,
            last_order_at: row.try_get("last_order_at")?,
            orders: row.try_get("orders")?,
            paid_orders: row.try_get("paid_orders")?,
            lifetime_value_minor: minor(row, "revenue_minor")?,
            blocked_reason: row.try_get("blocked_reason")?,
            blocked_at: row.try_get("blocked_at")?,
        })
    }
}

/// Which customers [`customers`] lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CustomerFilter {
    /// Only blocked (`true`) or only not blocked (`false`) customers.
    pub blocked: Option<bool>,
    /// Only these customers, when given (found by means this read model does not hold, such
    /// as their Telegram user id).
    pub only: Option<Vec<Uuid>>,
}

const CUSTOMER_QUERY: &str = "select c.customer_id, c.currency, c.first_order_at, \
     c.last_order_at, c.orders, c.paid_orders, c.revenue_minor::text as revenue_minor, \
     b.reason as blocked_reason, b.blocked_at \
     from customers c left join customer_blocks b \
       on b.store_id = c.store_id and b.customer_id = c.customer_id";

/// A store's customers, most recent order first, keyed by `(last_order_at, customer_id)`.
pub async fn customers(
    pool: &PgPool,
    store_id: Uuid,
    filter: &CustomerFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Customer>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{CUSTOMER_QUERY} where c.store_id = $1 \
           and ($2::boolean is null or (b.customer_id is not null) = $2) \
           and ($3::timestamptz is null or (c.last_order_at, c.customer_id) < ($3, $4)) \
           and ($6::uuid[] is null or c.customer_id = any($6)) \
         order by c.last_order_at desc, c.customer_id desc limit $5"
    ))
    .bind(store_id)
    .bind(filter.blocked)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .bind(filter.only.as_deref())
    .fetch_all(pool)
    .await
}

/// One customer of a store (the first row of their currencies).
pub async fn customer(
    pool: &PgPool,
    store_id: Uuid,
    customer_id: Uuid,
) -> Result<Option<Customer>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{CUSTOMER_QUERY} where c.store_id = $1 and c.customer_id = $2"
    ))
    .bind(store_id)
    .bind(customer_id)
    .fetch_optional(pool)
    .await
}

/// Whether the store has had an order from `customer_id`.
pub async fn is_customer_of(
    pool: &PgPool,
    store_id: Uuid,
    customer_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "select exists (select 1 from customers where store_id = $1 and customer_id = $2)",
    )
    .bind(store_id)
    .bind(customer_id)
    .fetch_one(pool)
    .await
}

/// Customers of a store over a range of instants: those whose ordering history overlaps the
/// range (first order before its end, last order after its start), split into new (first order
/// in the range) and returning (first order before it), with their lifetime value. A customer
/// whose first and last orders straddle the range without an order inside it counts as
/// returning: the read model keeps first/last order times, not every order.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CustomerSummary {
    pub currency: String,
    pub customers: i64,
    pub new_customers: i64,
    pub returning_customers: i64,
    pub lifetime_value_minor: i128,
    /// Lifetime value per customer (integer division).
    pub average_lifetime_value_minor: i128,
}

impl FromRow<'_, PgRow> for CustomerSummary {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            currency: row.try_get("currency")?,
            customers: row.try_get("customers")?,
            new_customers: row.try_get("new_customers")?,
            returning_customers: row.try_get("returning_customers")?,
            lifetime_value_minor: minor(row, "lifetime_value_minor")?,
            average_lifetime_value_minor: minor(row, "average_lifetime_value_minor")?,
        })
    }
}

/// The customer summary of `store_id` for orders placed in `from..to`, per currency.
pub async fn summary(
    pool: &PgPool,
    store_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<CustomerSummary>, sqlx::Error> {
    sqlx::query_as(
        "select currency, count(*) as customers,
                count(*) filter (where first_order_at >= $2) as new_customers,
                count(*) filter (where first_order_at < $2) as returning_customers,
                sum(revenue_minor)::text as lifetime_value_minor,
                div(sum(revenue_minor), count(*))::text as average_lifetime_value_minor
           from customers
          where store_id = $1 and last_order_at >= $2 and first_order_at < $3
          group by currency order by currency",
    )
    .bind(store_id)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}
