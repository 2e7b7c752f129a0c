//! Process-manager state "order deadlines": the payment deadline of every order, active while
//! the order awaits payment with no receipt under review. The expiry worker (in the service)
//! expires active orders past their deadline through the application layer, naming the
//! `OrderPlaced` event's position as the cause.

pub mod queries;

use std::collections::BTreeMap;

use aggregates::order::OrderEvent;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::copy_in::copy_row;
use super::{load_typed, replace_keyed};
use crate::event::{DomainEvent, Envelope};
use crate::{Projection, ProjectionError};

pub struct OrderDeadlines;

/// A row of `order_deadlines`.
#[derive(sqlx::FromRow)]
struct Deadline {
    order_id: Uuid,
    store_id: Uuid,
    due_at: DateTime<Utc>,
    active: bool,
    placed_position: i64,
}

copy_row!(Deadline {
    order_id,
    store_id,
    due_at,
    active,
    placed_position
});

#[async_trait]
impl Projection for OrderDeadlines {
    fn name(&self) -> &'static str {
        "order_deadlines"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["order_deadlines"]
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
                _ => None,
            })
            .collect();
        let mut deadlines: BTreeMap<Uuid, Deadline> =
            load_typed::<Deadline>(conn, "order_deadlines", "order_id", &touched, "")
                .await?
                .into_iter()
                .map(|d| (d.order_id, d))
                .collect();
        for envelope in events {
            let DomainEvent::Order(event) = &envelope.event else {
                continue;
            };
            let order_id = envelope.aggregate_uuid()?;
            match event {
                OrderEvent::OrderPlaced {
                    store_id,
                    payment_due_by,
                    ..
                } => {
                    deadlines.insert(
                        order_id,
                        Deadline {
                            order_id,
                            store_id: store_id.0,
                            due_at: *payment_due_by,
                            active: true,
                            placed_position: envelope.raw.global_position,
                        },
                    );
                }
                other => {
                    if let Some(deadline) = deadlines.get_mut(&order_id) {
                        // Back to awaiting payment after a rejected receipt: the deadline applies again.
                        deadline.active = matches!(other, OrderEvent::OrderReceiptRejected { .. });
                    }
                }
            }
        }
        let keys = deadlines.keys().copied().collect();
        replace_keyed(
            conn,
            "order_deadlines",
            "order_id",
            keys,
            deadlines.values(),
        )
        .await?;
        Ok(())
    }
}
