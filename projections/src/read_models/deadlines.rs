//! Process-manager state "order deadlines": the payment deadline of every order, active while
//! the order awaits payment with no receipt under review. The expiry worker (in the service)
//! expires active orders past their deadline through the application layer, naming the
//! `OrderPlaced` event's position as the cause.

use aggregates::order::OrderEvent;
use async_trait::async_trait;
use sqlx::PgConnection;

use crate::event::{DomainEvent, Envelope};
use crate::{Projection, ProjectionError};

pub struct OrderDeadlines;

#[async_trait]
impl Projection for OrderDeadlines {
    fn name(&self) -> &'static str {
        "order_deadlines"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["order_deadlines"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
    ) -> Result<(), ProjectionError> {
        let DomainEvent::Order(event) = &envelope.event else {
            return Ok(());
        };
        let order_id = envelope.aggregate_uuid()?;
        let active = match event {
            OrderEvent::OrderPlaced {
                store_id,
                payment_due_by,
                ..
            } => {
                sqlx::query(
                    "insert into order_deadlines (order_id, store_id, due_at, active, placed_position)
                     values ($1, $2, $3, true, $4)",
                )
                .bind(order_id)
                .bind(store_id.0)
                .bind(payment_due_by)
                .bind(envelope.raw.global_position)
                .execute(&mut *conn)
                .await?;
                return Ok(());
            }
            // Back to awaiting payment: the original deadline applies again.
            OrderEvent::OrderReceiptRejected { .. } => true,
            _ => false,
        };
        sqlx::query("update order_deadlines set active = $2 where order_id = $1")
            .bind(order_id)
            .bind(active)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}
