//! Read model "stock": levels per product (`stock_levels`), every movement (`stock_history`) and
//! low/out-of-stock alerts (`stock_alerts`).

use aggregates::stock::{AdjustmentReason, ReleaseReason, StockEvent};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::event::{DomainEvent, Envelope};
use crate::{Projection, ProjectionError};

pub struct StockLevels;

#[async_trait]
impl Projection for StockLevels {
    fn name(&self) -> &'static str {
        "stock"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["stock_levels", "stock_history", "stock_alerts"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
    ) -> Result<(), ProjectionError> {
        let DomainEvent::Stock(event) = &envelope.event else {
            return Ok(());
        };
        let product_id = envelope.aggregate_uuid()?;
        let position = envelope.raw.global_position;
        match event {
            StockEvent::StockTracked {
                store_id,
                store_default_threshold,
                at,
                ..
            } => {
                sqlx::query(
                    "insert into stock_levels (product_id, store_id, on_hand, reserved, available, threshold_override,
                                               store_default_threshold, effective_threshold, level, updated_at)
                     values ($1, $2, 0, 0, 0, null, $3, $3, 'out', $4)",
                )
                .bind(product_id)
                .bind(store_id.0)
                .bind(*store_default_threshold as i32)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            StockEvent::StockReceived {
                quantity,
                note,
                on_hand,
                available,
                at,
            } => {
                let movement = Movement {
                    kind: "received",
                    on_hand_delta: *quantity,
                    reserved_delta: 0,
                    reason: None,
                    note: note.as_deref(),
                    order_id: None,
                    on_hand: *on_hand,
                    available: *available,
                    at: *at,
                };
                movement.record(conn, product_id, envelope).await?;
            }
            StockEvent::StockAdjusted {
                delta,
                reason,
                note,
                on_hand,
                available,
                at,
            } => {
                let movement = Movement {
                    kind: "adjusted",
                    on_hand_delta: *delta,
                    reserved_delta: 0,
                    reason: Some(adjustment_reason(*reason)),
                    note: note.as_deref(),
                    order_id: None,
                    on_hand: *on_hand,
                    available: *available,
                    at: *at,
                };
                movement.record(conn, product_id, envelope).await?;
            }
            StockEvent::StockReserved {
                order_id,
                quantity,
                reserved,
                available,
                at,
            } => {
                let movement = Movement {
                    kind: "reserved",
                    on_hand_delta: 0,
                    reserved_delta: *quantity,
                    reason: None,
                    note: None,
                    order_id: Some(order_id.0),
                    on_hand: available + reserved,
                    available: *available,
                    at: *at,
                };
                movement.record(conn, product_id, envelope).await?;
            }
            StockEvent::StockReservationReleased {
                order_id,
                quantity,
                reason,
                reserved,
                available,
                at,
            } => {
                let movement = Movement {
                    kind: "released",
                    on_hand_delta: 0,
                    reserved_delta: -quantity,
                    reason: Some(release_reason(*reason)),
                    note: None,
                    order_id: Some(order_id.0),
                    on_hand: available + reserved,
                    available: *available,
                    at: *at,
                };
                movement.record(conn, product_id, envelope).await?;
            }
            StockEvent::StockReservationCommitted {
                order_id,
                quantity,
                on_hand,
                reserved,
                at,
            } => {
                let movement = Movement {
                    kind: "committed",
                    on_hand_delta: -quantity,
                    reserved_delta: -quantity,
                    reason: None,
                    note: None,
                    order_id: Some(order_id.0),
                    on_hand: *on_hand,
                    available: on_hand - reserved,
                    at: *at,
                };
                movement.record(conn, product_id, envelope).await?;
            }
            StockEvent::StockThresholdChanged {
                threshold_override,
                store_default_threshold,
                effective_threshold,
                at,
                ..
            } => {
                sqlx::query(
                    "update stock_levels set threshold_override = $2, store_default_threshold = $3,
                                             effective_threshold = $4, updated_at = $5
                      where product_id = $1",
                )
                .bind(product_id)
                .bind(threshold_override.map(|t| t as i32))
                .bind(*store_default_threshold as i32)
                .bind(*effective_threshold as i32)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            StockEvent::StockLevelLow {
                available,
                threshold,
                at,
            } => {
                alert(
                    conn, product_id, position, "low", *available, *threshold, *at,
                )
                .await?;
            }
            StockEvent::StockDepleted { threshold, at } => {
                alert(conn, product_id, position, "out", 0, *threshold, *at).await?;
            }
            StockEvent::StockReplenished { at, .. } => {
                set_level(conn, product_id, "normal", *at).await?;
                sqlx::query("update stock_alerts set resolved_at = $2 where product_id = $1 and resolved_at is null")
                    .bind(product_id)
                    .bind(at)
                    .execute(&mut *conn)
                    .await?;
            }
            StockEvent::StockAlertAcknowledged {
                acknowledged_by,
                at,
                ..
            } => {
                sqlx::query(
                    "update stock_alerts set acknowledged_at = $2, acknowledged_by = $3
                      where product_id = $1 and resolved_at is null",
                )
                .bind(product_id)
                .bind(at)
                .bind(acknowledged_by.0)
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }
}

/// A change of on-hand or reserved units, with the levels after it.
struct Movement<'a> {
    kind: &'static str,
    on_hand_delta: i64,
    reserved_delta: i64,
    reason: Option<&'static str>,
    note: Option<&'a str>,
    order_id: Option<Uuid>,
    on_hand: i64,
    available: i64,
    at: DateTime<Utc>,
}

impl Movement<'_> {
    async fn record(
        &self,
        conn: &mut PgConnection,
        product_id: Uuid,
        envelope: &Envelope,
    ) -> Result<(), ProjectionError> {
        let reserved = self.on_hand - self.available;
        let store_id: Uuid = sqlx::query_scalar(
            "update stock_levels set on_hand = $2, reserved = $3, available = $4, updated_at = $5
              where product_id = $1 returning store_id",
        )
        .bind(product_id)
        .bind(self.on_hand)
        .bind(reserved)
        .bind(self.available)
        .bind(self.at)
        .fetch_one(&mut *conn)
        .await?;
        sqlx::query(
            "insert into stock_history (product_id, global_position, store_id, movement, on_hand_delta, reserved_delta,
                                        reason, note, order_id, on_hand_after, reserved_after, available_after,
                                        actor_id, recorded_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(product_id)
        .bind(envelope.raw.global_position)
        .bind(store_id)
        .bind(self.kind)
        .bind(self.on_hand_delta)
        .bind(self.reserved_delta)
        .bind(self.reason)
        .bind(self.note)
        .bind(self.order_id)
        .bind(self.on_hand)
        .bind(reserved)
        .bind(self.available)
        .bind(envelope.metadata.actor_id.map(|a| a.0))
        .bind(self.at)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

async fn set_level(
    conn: &mut PgConnection,
    product_id: Uuid,
    level: &str,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("update stock_levels set level = $2, updated_at = $3 where product_id = $1")
        .bind(product_id)
        .bind(level)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Opens an alert, or escalates/de-escalates the open one (one open alert per product).
async fn alert(
    conn: &mut PgConnection,
    product_id: Uuid,
    position: i64,
    level: &str,
    available: i64,
    threshold: u32,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    set_level(conn, product_id, level, at).await?;
    let updated = sqlx::query(
        "update stock_alerts set level = $2, available = $3, threshold = $4
          where product_id = $1 and resolved_at is null",
    )
    .bind(product_id)
    .bind(level)
    .bind(available)
    .bind(threshold as i32)
    .execute(&mut *conn)
    .await?;
    if updated.rows_affected() == 0 {
        sqlx::query(
            "insert into stock_alerts (alert_id, product_id, store_id, level, available, threshold, opened_at)
             select $1, product_id, store_id, $3, $4, $5, $6 from stock_levels where product_id = $2",
        )
        .bind(position)
        .bind(product_id)
        .bind(level)
        .bind(available)
        .bind(threshold as i32)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

fn adjustment_reason(reason: AdjustmentReason) -> &'static str {
    match reason {
        AdjustmentReason::Count => "count",
        AdjustmentReason::Damage => "damage",
        AdjustmentReason::Return => "return",
    }
}

fn release_reason(reason: ReleaseReason) -> &'static str {
    match reason {
        ReleaseReason::OrderCancelled => "order_cancelled",
        ReleaseReason::OrderExpired => "order_expired",
        ReleaseReason::OrderNotPlaced => "order_not_placed",
    }
}
