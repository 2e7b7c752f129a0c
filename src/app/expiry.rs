//! The order-expiry process manager's action: expire orders past their payment deadline.
//!
//! Deadlines come from the `order_deadlines` projection (durable: a restart loses none); each
//! expiry goes through the application layer with the `OrderPlaced` event's global position as
//! its causation, and releases the order's stock like any other expiry.

use aggregates::order::OrderError;
use aggregates::OrderId;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{App, AppError, CommandContext};

impl App {
    /// Expires up to `limit` orders whose deadline is at or before `now`; returns how many
    /// were expired. Orders that moved on meanwhile (paid, cancelled) are skipped.
    #[tracing::instrument(skip(self, ctx))]
    pub async fn expire_due_orders(
        &self,
        ctx: &CommandContext,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<usize, AppError> {
        let due: Vec<(Uuid, i64)> = sqlx::query_as(
            "select order_id, placed_position from order_deadlines
              where active and due_at <= $1 order by due_at limit $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut expired = 0;
        for (order_id, placed_position) in due {
            let ctx = ctx.caused_by(placed_position);
            match self.expire_order(&ctx, OrderId(order_id), now).await {
                Ok(()) => expired += 1,
                // The projection lags the order: it was paid, cancelled or already expired.
                Err(AppError::Order(
                    OrderError::InvalidTransition { .. } | OrderError::NotYetDue { .. },
                )) => {}
                Err(err) => {
                    tracing::warn!(%order_id, error = %err, "expiring an order failed; will retry")
                }
            }
        }
        Ok(expired)
    }
}
