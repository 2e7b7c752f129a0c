//! The reservation sweep: the order↔stock saga's recovery.
//!
//! Placement, cancellation, expiry and fulfilment each change an Order and then the Stocks it
//! reserved. If the process stops between the two, a reservation is left that no longer
//! matches its order. The sweep finds every open reservation and settles it by its order's
//! state: an order that never came into being (older than the grace period) or that was
//! cancelled or expired gets its units released; a fulfilled or completed one gets them
//! committed; a live order keeps them. Every step is idempotent, so sweeping twice, or
//! alongside the normal flow, is harmless.
//!
//! Candidates come from the `stock_reservations` read model (open reservations by product and
//! order); each is settled only after loading its Order aggregate, the source of truth, and every
//! command is idempotent, so a lagging read model can delay a settlement but never cause a wrong
//! one. (A reservation the read model has not seen yet is picked up by a later sweep.)

use aggregates::order::OrderStatus;
use aggregates::stock::{ReleaseReason, StockCommand};
use aggregates::{OrderId, ProductId};
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::{App, AppError, CommandContext};

/// What a sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Open reservations found.
    pub open: usize,
    pub released: usize,
    pub committed: usize,
    /// Reservations that could not be settled this time (logged; retried next sweep).
    pub failed: usize,
}

impl App {
    /// Settles every open reservation whose order has ended or never came into being.
    #[tracing::instrument(skip(self, ctx))]
    pub async fn sweep_reservations(
        &self,
        ctx: &CommandContext,
        now: DateTime<Utc>,
        orphan_grace: Duration,
    ) -> Result<SweepReport, AppError> {
        let open: Vec<(Uuid, Uuid, DateTime<Utc>)> = sqlx::query_as(
            "select product_id, order_id, reserved_at from stock_reservations order by reserved_at",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut report = SweepReport {
            open: open.len(),
            ..SweepReport::default()
        };
        for (product, order, reserved_at) in open {
            let (product_id, order_id) = (ProductId(product), OrderId(order));
            let status = match self.orders.load(&order_id.to_string()).await {
                Ok(order) => order.status,
                Err(err) => {
                    tracing::warn!(%order_id, error = %err, "cannot load the order of a reservation");
                    report.failed += 1;
                    continue;
                }
            };
            let command = match status {
                OrderStatus::New if now - reserved_at >= orphan_grace => StockCommand::Release {
                    order_id,
                    reason: ReleaseReason::OrderNotPlaced,
                    at: now,
                },
                OrderStatus::Cancelled => StockCommand::Release {
                    order_id,
                    reason: ReleaseReason::OrderCancelled,
                    at: now,
                },
                OrderStatus::Expired => StockCommand::Release {
                    order_id,
                    reason: ReleaseReason::OrderExpired,
                    at: now,
                },
                OrderStatus::Fulfilled | OrderStatus::Completed => {
                    StockCommand::Commit { order_id, at: now }
                }
                _ => continue,
            };
            let committing = matches!(command, StockCommand::Commit { .. });
            if let Err(err) = self
                .stock
                .execute(&product_id.to_string(), command, ctx)
                .await
            {
                tracing::warn!(%order_id, %product_id, error = %err, "cannot settle a reservation");
                report.failed += 1;
                continue;
            }
            if committing {
                report.committed += 1;
            } else {
                report.released += 1;
            }
        }
        if report.released + report.committed + report.failed > 0 {
            tracing::info!(?report, "reservation sweep settled reservations");
        }
        Ok(report)
    }
}
