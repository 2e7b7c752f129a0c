//! The order-expiry process manager's action: expire orders past their payment deadline.
//!
//! Deadlines come from the `order_deadlines` projection (durable: a restart loses none); each
//! expiry goes through the application layer with the `OrderPlaced` event's global position as
//! its causation, and releases the order's stock like any other expiry.

use aggregates::order::OrderError;
use aggregates::OrderId;
use chrono::{DateTime, Utc};
use projections::read_models::deadlines::queries::{self as deadlines, DueOrder};
use uuid::Uuid;

use super::{App, AppError, CommandContext};

impl App {
    /// Expires every order whose deadline is at or before `now`, reading the deadlines in
    /// pages of `page` (ordered by deadline, then id, so rows that cannot be expired yet —
    /// the projection lags a payment, say — never hide the ones after them). Returns how many
    /// were expired.
    #[tracing::instrument(skip(self, ctx))]
    pub(crate) async fn expire_due_orders(
        &self,
        ctx: &CommandContext,
        now: DateTime<Utc>,
        page: i64,
    ) -> Result<usize, AppError> {
        let mut expired = 0;
        let mut after: (DateTime<Utc>, Uuid) = (DateTime::<Utc>::UNIX_EPOCH, Uuid::nil());
        loop {
            let due = deadlines::due(&self.pool, now, after, page).await?;
            let full_page = due.len() as i64 == page;
            for DueOrder {
                due_at,
                order_id,
                placed_position,
            } in due
            {
                after = (due_at, order_id);
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
            if !full_page {
                return Ok(expired);
            }
        }
    }
}
