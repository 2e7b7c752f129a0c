//! Read model "orders": the current state of every order (`orders`) and every event that
//! touched it, with who did it and through what (`order_timeline`).

use aggregates::order::{CancelledBy, OrderEvent, OrderStatus};
use aggregates::receipt::ReceiptEvent;
use async_trait::async_trait;
use sqlx::PgConnection;
use uuid::Uuid;

use super::event_detail;
use crate::event::{DomainEvent, Envelope};
use crate::{Projection, ProjectionError};

pub struct Orders;

#[async_trait]
impl Projection for Orders {
    fn name(&self) -> &'static str {
        "orders"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["orders", "order_timeline"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
    ) -> Result<(), ProjectionError> {
        match &envelope.event {
            DomainEvent::Order(event) => {
                let order_id = envelope.aggregate_uuid()?;
                let status = apply_order_event(conn, order_id, event, envelope).await?;
                timeline(conn, order_id, status, envelope).await
            }
            DomainEvent::Receipt(event) => {
                let (order_id, receipt_status) = match event {
                    ReceiptEvent::PaymentReceiptSubmitted { order_id, .. } => {
                        (order_id, "SUBMITTED")
                    }
                    ReceiptEvent::PaymentReceiptVerified { order_id, .. } => (order_id, "VERIFIED"),
                    ReceiptEvent::PaymentReceiptRejected { order_id, .. } => (order_id, "REJECTED"),
                };
                let receipt_id = envelope.aggregate_uuid()?;
                // The receipt shown on the order is the latest one submitted for it.
                let status: Option<String> = sqlx::query_scalar(
                    "update orders set receipt_id = $2, receipt_status = $3, updated_at = $4, last_position = $5
                      where order_id = $1 and (receipt_id is null or receipt_id = $2 or $3 = 'SUBMITTED')
                      returning status",
                )
                .bind(order_id.0)
                .bind(receipt_id)
                .bind(receipt_status)
                .bind(envelope.raw.recorded_at)
                .bind(envelope.raw.global_position)
                .fetch_optional(&mut *conn)
                .await?;
                let status = match status {
                    Some(status) => status,
                    None => sqlx::query_scalar("select status from orders where order_id = $1")
                        .bind(order_id.0)
                        .fetch_optional(&mut *conn)
                        .await?
                        .unwrap_or_else(|| OrderStatus::New.as_str().to_owned()),
                };
                timeline(conn, order_id.0, status, envelope).await
            }
            _ => Ok(()),
        }
    }
}

/// Applies an order event to `orders`; returns the status after it.
async fn apply_order_event(
    conn: &mut PgConnection,
    order_id: Uuid,
    event: &OrderEvent,
    envelope: &Envelope,
) -> Result<String, ProjectionError> {
    let position = envelope.raw.global_position;
    let (status, at) = match event {
        OrderEvent::OrderPlaced {
            store_id,
            customer_id,
            lines,
            total_minor,
            currency,
            contact,
            payment_due_by,
            placed_at,
            ..
        } => {
            sqlx::query(
                "insert into orders (order_id, store_id, customer_id, status, currency, total_minor, lines,
                                     line_count, has_contact, placed_at, payment_due_by, updated_at, last_position)
                 values ($1, $2, $3, 'AWAITING_PAYMENT', $4, $5, $6, $7, $8, $9, $10, $9, $11)",
            )
            .bind(order_id)
            .bind(store_id.0)
            .bind(customer_id.0)
            .bind(currency.code())
            .bind(total_minor)
            .bind(serde_json::to_value(lines).unwrap_or_default())
            .bind(lines.len() as i32)
            .bind(contact.is_some())
            .bind(placed_at)
            .bind(payment_due_by)
            .bind(position)
            .execute(&mut *conn)
            .await?;
            return Ok(OrderStatus::AwaitingPayment.as_str().to_owned());
        }
        OrderEvent::OrderReceiptSubmitted { receipt_id, at, .. } => {
            sqlx::query(
                "update orders set receipt_id = $2, receipt_status = 'SUBMITTED', receipt_submitted_at = $3
                  where order_id = $1",
            )
            .bind(order_id)
            .bind(receipt_id.0)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            (OrderStatus::ReceiptSubmitted, at)
        }
        OrderEvent::OrderReceiptRejected { reason, at, .. } => {
            sqlx::query("update orders set status_reason = $2 where order_id = $1")
                .bind(order_id)
                .bind(reason)
                .execute(&mut *conn)
                .await?;
            (OrderStatus::AwaitingPayment, at)
        }
        OrderEvent::OrderPaid { receipt_id, at, .. } => {
            sqlx::query("update orders set paid_at = $2, receipt_id = $3, status_reason = null where order_id = $1")
                .bind(order_id)
                .bind(at)
                .bind(receipt_id.0)
                .execute(&mut *conn)
                .await?;
            (OrderStatus::Paid, at)
        }
        OrderEvent::OrderCancelled { by, reason, at, .. } => {
            let by = match by {
                CancelledBy::Customer => "customer",
                CancelledBy::Staff => "staff",
            };
            sqlx::query(
                "update orders set cancelled_at = $2, cancelled_by = $3, status_reason = $4 where order_id = $1",
            )
            .bind(order_id)
            .bind(at)
            .bind(by)
            .bind(reason)
            .execute(&mut *conn)
            .await?;
            (OrderStatus::Cancelled, at)
        }
        OrderEvent::OrderExpired { at, .. } => {
            sqlx::query("update orders set expired_at = $2 where order_id = $1")
                .bind(order_id)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            (OrderStatus::Expired, at)
        }
        OrderEvent::OrderFulfilled { at, .. } => {
            sqlx::query("update orders set fulfilled_at = $2 where order_id = $1")
                .bind(order_id)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            (OrderStatus::Fulfilled, at)
        }
        OrderEvent::OrderCompleted { at, .. } => {
            sqlx::query("update orders set completed_at = $2 where order_id = $1")
                .bind(order_id)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            (OrderStatus::Completed, at)
        }
    };
    sqlx::query(
        "update orders set status = $2, updated_at = $3, last_position = $4 where order_id = $1",
    )
    .bind(order_id)
    .bind(status.as_str())
    .bind(at)
    .bind(position)
    .execute(&mut *conn)
    .await?;
    Ok(status.as_str().to_owned())
}

async fn timeline(
    conn: &mut PgConnection,
    order_id: Uuid,
    status_after: String,
    envelope: &Envelope,
) -> Result<(), ProjectionError> {
    let metadata = &envelope.metadata;
    sqlx::query(
        "insert into order_timeline (order_id, global_position, aggregate_type, event_type, status_after,
                                     actor_id, actor_role, channel, detail, recorded_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(order_id)
    .bind(envelope.raw.global_position)
    .bind(&envelope.raw.aggregate_type)
    .bind(&envelope.raw.event_type)
    .bind(status_after)
    .bind(metadata.actor_id.map(|a| a.0))
    .bind(&metadata.actor_role)
    .bind(metadata.channel.as_str())
    .bind(event_detail(&envelope.raw.payload))
    .bind(envelope.raw.recorded_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
