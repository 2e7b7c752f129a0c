//! Queries of the order-deadlines state: the orders whose payment deadline has passed.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// An unpaid order past its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct DueOrder {
    pub due_at: DateTime<Utc>,
    pub order_id: Uuid,
    /// Global position of the order's `OrderPlaced`: the cause an expiry names.
    pub placed_position: i64,
}

/// Active deadlines at or before `now`, by deadline then order id, after `after` (the
/// `(due_at, order_id)` of the last one of the previous page).
pub async fn due(
    pool: &PgPool,
    now: DateTime<Utc>,
    after: (DateTime<Utc>, Uuid),
    limit: i64,
) -> Result<Vec<DueOrder>, sqlx::Error> {
    sqlx::query_as(
        "select due_at, order_id, placed_position from order_deadlines
          where active and due_at <= $1 and (due_at, order_id) > ($2, $3)
          order by due_at, order_id limit $4",
    )
    .bind(now)
    .bind(after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(pool)
    .await
}
