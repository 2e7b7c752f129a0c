//! Read model "orders": the current state of every order (`orders`) and every event that
//! touched it, with who did it and through what (`order_timeline`).
//!
//! A batch loads the orders it touches, applies its events to them in memory, and writes the
//! changed rows and the new timeline rows back with one statement each.

pub mod queries;

use std::collections::{BTreeMap, HashMap};

use aggregates::order::{CancelledBy, OrderEvent, OrderStatus};
use aggregates::receipt::ReceiptEvent;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::copy_in::{copy_row, copy_rows};
use super::{event_detail, load_typed, replace_keyed};
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

    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let touched: Vec<Uuid> = events
            .iter()
            .filter_map(|e| match &e.event {
                DomainEvent::Order(OrderEvent::OrderPlaced { .. }) => None,
                DomainEvent::Order(_) => e.aggregate_uuid().ok(),
                DomainEvent::Receipt(event) => Some(receipt_order(event)),
                _ => None,
            })
            .collect();
        let mut orders: HashMap<Uuid, OrderRow> =
            load_typed::<OrderRow>(conn, "orders", "order_id", &touched, "")
                .await?
                .into_iter()
                .map(|row| (row.order_id, row))
                .collect();
        let mut changed: BTreeMap<Uuid, ()> = BTreeMap::new();
        let mut timeline: Vec<TimelineRow> = Vec::new();
        for envelope in events {
            let order_id = match &envelope.event {
                DomainEvent::Order(event) => {
                    let order_id = envelope.aggregate_uuid()?;
                    apply_order_event(&mut orders, order_id, event, envelope);
                    order_id
                }
                DomainEvent::Receipt(event) => {
                    let order_id = receipt_order(event);
                    apply_receipt_event(&mut orders, order_id, event, envelope)?;
                    order_id
                }
                _ => continue,
            };
            let status_after = orders
                .get(&order_id)
                .map(|o| o.status.clone())
                .unwrap_or_else(|| OrderStatus::New.as_str().to_owned());
            if orders.contains_key(&order_id) {
                changed.insert(order_id, ());
            }
            timeline.push(TimelineRow::new(order_id, status_after, envelope));
        }
        let rows: Vec<&OrderRow> = changed.keys().filter_map(|id| orders.get(id)).collect();
        let keys = rows.iter().map(|row| row.order_id).collect();
        replace_keyed(conn, "orders", "order_id", keys, rows).await?;
        copy_rows(conn, "order_timeline", &timeline).await?;
        Ok(())
    }
}

/// A row of `orders` (field names are column names).
#[derive(Clone, Debug, sqlx::FromRow)]
struct OrderRow {
    order_id: Uuid,
    store_id: Uuid,
    customer_id: Uuid,
    status: String,
    currency: String,
    total_minor: i64,
    lines: serde_json::Value,
    line_count: i32,
    has_contact: bool,
    receipt_id: Option<Uuid>,
    receipt_status: Option<String>,
    placed_at: DateTime<Utc>,
    payment_due_by: DateTime<Utc>,
    receipt_submitted_at: Option<DateTime<Utc>>,
    paid_at: Option<DateTime<Utc>>,
    fulfilled_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    cancelled_at: Option<DateTime<Utc>>,
    expired_at: Option<DateTime<Utc>>,
    cancelled_by: Option<String>,
    status_reason: Option<String>,
    updated_at: DateTime<Utc>,
    last_position: i64,
}

copy_row!(OrderRow {
    order_id,
    store_id,
    customer_id,
    status,
    currency,
    total_minor,
    lines: json,
    line_count,
    has_contact,
    receipt_id,
    receipt_status,
    placed_at,
    payment_due_by,
    receipt_submitted_at,
    paid_at,
    fulfilled_at,
    completed_at,
    cancelled_at,
    expired_at,
    cancelled_by,
    status_reason,
    updated_at,
    last_position,
});

/// A row of `order_timeline`.
struct TimelineRow {
    order_id: Uuid,
    global_position: i64,
    aggregate_type: String,
    event_type: String,
    status_after: String,
    actor_id: Option<Uuid>,
    actor_role: String,
    channel: &'static str,
    detail: serde_json::Value,
    recorded_at: DateTime<Utc>,
}

impl TimelineRow {
    fn new(order_id: Uuid, status_after: String, envelope: &Envelope) -> Self {
        let metadata = &envelope.metadata;
        Self {
            order_id,
            global_position: envelope.raw.global_position,
            aggregate_type: envelope.raw.aggregate_type.clone(),
            event_type: envelope.raw.event_type.clone(),
            status_after,
            actor_id: metadata.actor_id.map(|a| a.0),
            actor_role: metadata.actor_role.as_str().to_owned(),
            channel: metadata.channel.as_str(),
            detail: event_detail(&envelope.raw.payload),
            recorded_at: envelope.raw.recorded_at,
        }
    }
}

copy_row!(TimelineRow {
    order_id,
    global_position,
    aggregate_type,
    event_type,
    status_after,
    actor_id,
    actor_role,
    channel,
    detail: json,
    recorded_at,
});

fn receipt_order(event: &ReceiptEvent) -> Uuid {
    match event {
        ReceiptEvent::PaymentReceiptSubmitted { order_id, .. }
        | ReceiptEvent::PaymentReceiptVerified { order_id, .. }
        | ReceiptEvent::PaymentReceiptRejected { order_id, .. }
        | ReceiptEvent::PaymentReceiptVoided { order_id, .. } => order_id.0,
    }
}

fn apply_order_event(
    orders: &mut HashMap<Uuid, OrderRow>,
    order_id: Uuid,
    event: &OrderEvent,
    envelope: &Envelope,
) {
    let position = envelope.raw.global_position;
    if let OrderEvent::OrderPlaced {
        store_id,
        customer_id,
        lines,
        total_minor,
        currency,
        contact,
        payment_due_by,
        placed_at,
        ..
    } = event
    {
        orders.insert(
            order_id,
            OrderRow {
                order_id,
                store_id: store_id.0,
                customer_id: customer_id.0,
                status: OrderStatus::AwaitingPayment.as_str().to_owned(),
                currency: currency.code().to_owned(),
                total_minor: *total_minor,
                lines: serde_json::to_value(lines).unwrap_or_default(),
                line_count: lines.len() as i32,
                has_contact: contact.is_some(),
                receipt_id: None,
                receipt_status: None,
                placed_at: *placed_at,
                payment_due_by: *payment_due_by,
                receipt_submitted_at: None,
                paid_at: None,
                fulfilled_at: None,
                completed_at: None,
                cancelled_at: None,
                expired_at: None,
                cancelled_by: None,
                status_reason: None,
                updated_at: *placed_at,
                last_position: position,
            },
        );
        return;
    }
    let Some(order) = orders.get_mut(&order_id) else {
        return;
    };
    let (status, at) = match event {
        OrderEvent::OrderPlaced { .. } => return,
        OrderEvent::OrderReceiptSubmitted { receipt_id, at, .. } => {
            order.receipt_id = Some(receipt_id.0);
            order.receipt_status = Some("SUBMITTED".into());
            order.receipt_submitted_at = Some(*at);
            (OrderStatus::ReceiptSubmitted, at)
        }
        OrderEvent::OrderReceiptRejected { reason, at, .. } => {
            order.status_reason = Some(reason.clone());
            (OrderStatus::AwaitingPayment, at)
        }
        OrderEvent::OrderPaid { receipt_id, at, .. } => {
            order.paid_at = Some(*at);
            order.receipt_id = Some(receipt_id.0);
            order.status_reason = None;
            (OrderStatus::Paid, at)
        }
        OrderEvent::OrderCancelled { by, reason, at, .. } => {
            order.cancelled_at = Some(*at);
            order.cancelled_by = Some(
                match by {
                    CancelledBy::Customer => "customer",
                    CancelledBy::Staff => "staff",
                }
                .into(),
            );
            order.status_reason = reason.clone();
            (OrderStatus::Cancelled, at)
        }
        OrderEvent::OrderExpired { at, .. } => {
            order.expired_at = Some(*at);
            (OrderStatus::Expired, at)
        }
        OrderEvent::OrderFulfilled { at, .. } => {
            order.fulfilled_at = Some(*at);
            (OrderStatus::Fulfilled, at)
        }
        OrderEvent::OrderCompleted { at, .. } => {
            order.completed_at = Some(*at);
            (OrderStatus::Completed, at)
        }
    };
    order.status = status.as_str().to_owned();
    order.updated_at = *at;
    order.last_position = position;
}

/// The receipt shown on an order is the latest one submitted for it; a decision on an older
/// receipt does not overwrite a newer one's status.
fn apply_receipt_event(
    orders: &mut HashMap<Uuid, OrderRow>,
    order_id: Uuid,
    event: &ReceiptEvent,
    envelope: &Envelope,
) -> Result<(), ProjectionError> {
    let receipt_id = envelope.aggregate_uuid()?;
    let status = match event {
        ReceiptEvent::PaymentReceiptSubmitted { .. } => "SUBMITTED",
        ReceiptEvent::PaymentReceiptVerified { .. } => "VERIFIED",
        ReceiptEvent::PaymentReceiptRejected { .. } => "REJECTED",
        ReceiptEvent::PaymentReceiptVoided { .. } => "VOIDED",
    };
    if let Some(order) = orders.get_mut(&order_id) {
        if order.receipt_id.is_none()
            || order.receipt_id == Some(receipt_id)
            || status == "SUBMITTED"
        {
            order.receipt_id = Some(receipt_id);
            order.receipt_status = Some(status.into());
            order.updated_at = envelope.raw.recorded_at;
            order.last_position = envelope.raw.global_position;
        }
    }
    Ok(())
}
