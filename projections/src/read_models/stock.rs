//! Read model "stock": levels per product (`stock_levels`), every movement (`stock_history`) and
//! low/out-of-stock alerts (`stock_alerts`).

pub mod queries;

use std::collections::BTreeMap;

use aggregates::stock::{AdjustmentReason, ReleaseReason, StockEvent};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::copy_in::{copy_row, copy_rows};
use super::{load_typed, replace_keyed};
use crate::event::{DomainEvent, Envelope};
use crate::{Projection, ProjectionError};

pub struct StockLevels;

/// A row of `stock_levels`.
#[derive(sqlx::FromRow)]
struct Level {
    product_id: Uuid,
    store_id: Uuid,
    on_hand: i64,
    reserved: i64,
    available: i64,
    threshold_override: Option<i32>,
    store_default_threshold: i32,
    effective_threshold: i32,
    level: String,
    updated_at: DateTime<Utc>,
}

copy_row!(Level {
    product_id,
    store_id,
    on_hand,
    reserved,
    available,
    threshold_override,
    store_default_threshold,
    effective_threshold,
    level,
    updated_at,
});

/// A row of `stock_history`.
struct Movement {
    product_id: Uuid,
    global_position: i64,
    store_id: Uuid,
    movement: &'static str,
    on_hand_delta: i64,
    reserved_delta: i64,
    reason: Option<&'static str>,
    note: Option<String>,
    order_id: Option<Uuid>,
    on_hand_after: i64,
    reserved_after: i64,
    available_after: i64,
    actor_id: Option<Uuid>,
    recorded_at: DateTime<Utc>,
}

copy_row!(Movement {
    product_id,
    global_position,
    store_id,
    movement,
    on_hand_delta,
    reserved_delta,
    reason,
    note,
    order_id,
    on_hand_after,
    reserved_after,
    available_after,
    actor_id,
    recorded_at,
});

/// A row of `stock_alerts`.
#[derive(sqlx::FromRow)]
struct Alert {
    alert_id: i64,
    product_id: Uuid,
    store_id: Uuid,
    level: String,
    available: i64,
    threshold: i32,
    opened_at: DateTime<Utc>,
    resolved_at: Option<DateTime<Utc>>,
    acknowledged_at: Option<DateTime<Utc>>,
    acknowledged_by: Option<Uuid>,
}

copy_row!(Alert {
    alert_id,
    product_id,
    store_id,
    level,
    available,
    threshold,
    opened_at,
    resolved_at,
    acknowledged_at,
    acknowledged_by,
});

/// A row of `stock_reservations`.
struct Reservation {
    product_id: Uuid,
    order_id: Uuid,
    store_id: Uuid,
    quantity: i64,
    reserved_at: DateTime<Utc>,
}

copy_row!(Reservation {
    product_id,
    order_id,
    store_id,
    quantity,
    reserved_at
});

/// A movement's effect, before the store and actor are attached.
struct Change {
    kind: &'static str,
    on_hand_delta: i64,
    reserved_delta: i64,
    reason: Option<&'static str>,
    note: Option<String>,
    order_id: Option<Uuid>,
    on_hand: i64,
    available: i64,
    at: DateTime<Utc>,
}

#[derive(Default)]
struct Fold {
    levels: BTreeMap<Uuid, Level>,
    history: Vec<Movement>,
    /// Alerts by id; `open` points at each product's open one.
    alerts: BTreeMap<i64, Alert>,
    open: BTreeMap<Uuid, i64>,
    /// Reservations made in this batch (still open at its end), and those closed in it.
    reserved: BTreeMap<(Uuid, Uuid), Reservation>,
    closed: Vec<(Uuid, Uuid)>,
}

#[async_trait]
impl Projection for StockLevels {
    fn name(&self) -> &'static str {
        "stock"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "stock_levels",
            "stock_history",
            "stock_alerts",
            "stock_reservations",
        ]
    }

    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let mut touched: Vec<Uuid> = events
            .iter()
            .filter(|e| matches!(e.event, DomainEvent::Stock(_)))
            .filter_map(|e| e.aggregate_uuid().ok())
            .collect();
        touched.sort();
        touched.dedup();
        let mut fold = Fold::default();
        for level in load_typed::<Level>(conn, "stock_levels", "product_id", &touched, "").await? {
            fold.levels.insert(level.product_id, level);
        }
        for alert in load_typed::<Alert>(
            conn,
            "stock_alerts",
            "product_id",
            &touched,
            "and resolved_at is null",
        )
        .await?
        {
            fold.open.insert(alert.product_id, alert.alert_id);
            fold.alerts.insert(alert.alert_id, alert);
        }
        for envelope in events {
            if let DomainEvent::Stock(event) = &envelope.event {
                fold.apply(envelope.aggregate_uuid()?, event, envelope);
            }
        }
        let keys = fold.levels.keys().copied().collect();
        replace_keyed(
            conn,
            "stock_levels",
            "product_id",
            keys,
            fold.levels.values(),
        )
        .await?;
        copy_rows(conn, "stock_history", &fold.history).await?;
        let keys = fold.alerts.keys().copied().collect();
        replace_keyed(conn, "stock_alerts", "alert_id", keys, fold.alerts.values()).await?;
        if !fold.closed.is_empty() {
            let (products, orders): (Vec<Uuid>, Vec<Uuid>) = fold.closed.iter().copied().unzip();
            sqlx::query(
                "delete from stock_reservations r using unnest($1::uuid[], $2::uuid[]) as c(product_id, order_id)
                  where r.product_id = c.product_id and r.order_id = c.order_id",
            )
            .bind(&products)
            .bind(&orders)
            .execute(&mut *conn)
            .await?;
        }
        copy_rows(conn, "stock_reservations", fold.reserved.values()).await?;
        Ok(())
    }
}

impl Fold {
    fn apply(&mut self, product_id: Uuid, event: &StockEvent, envelope: &Envelope) {
        let position = envelope.raw.global_position;
        let change = match event {
            StockEvent::StockTracked {
                store_id,
                store_default_threshold,
                at,
                ..
            } => {
                self.levels.insert(
                    product_id,
                    Level {
                        product_id,
                        store_id: store_id.0,
                        on_hand: 0,
                        reserved: 0,
                        available: 0,
                        threshold_override: None,
                        store_default_threshold: *store_default_threshold as i32,
                        effective_threshold: *store_default_threshold as i32,
                        level: "out".into(),
                        updated_at: *at,
                    },
                );
                return;
            }
            StockEvent::StockReceived {
                quantity,
                note,
                on_hand,
                available,
                at,
            } => Change {
                kind: "received",
                on_hand_delta: *quantity,
                reserved_delta: 0,
                reason: None,
                note: note.clone(),
                order_id: None,
                on_hand: *on_hand,
                available: *available,
                at: *at,
            },
            StockEvent::StockAdjusted {
                delta,
                reason,
                note,
                on_hand,
                available,
                at,
            } => Change {
                kind: "adjusted",
                on_hand_delta: *delta,
                reserved_delta: 0,
                reason: Some(adjustment_reason(*reason)),
                note: note.clone(),
                order_id: None,
                on_hand: *on_hand,
                available: *available,
                at: *at,
            },
            StockEvent::StockReserved {
                order_id,
                quantity,
                reserved,
                available,
                at,
            } => Change {
                kind: "reserved",
                on_hand_delta: 0,
                reserved_delta: *quantity,
                reason: None,
                note: None,
                order_id: Some(order_id.0),
                on_hand: available + reserved,
                available: *available,
                at: *at,
            },
            StockEvent::StockReservationReleased {
                order_id,
                quantity,
                reason,
                reserved,
                available,
                at,
            } => Change {
                kind: "released",
                on_hand_delta: 0,
                reserved_delta: -quantity,
                reason: Some(release_reason(*reason)),
                note: None,
                order_id: Some(order_id.0),
                on_hand: available + reserved,
                available: *available,
                at: *at,
            },
            StockEvent::StockReservationCommitted {
                order_id,
                quantity,
                on_hand,
                reserved,
                at,
            } => Change {
                kind: "committed",
                on_hand_delta: -quantity,
                reserved_delta: -quantity,
                reason: None,
                note: None,
                order_id: Some(order_id.0),
                on_hand: *on_hand,
                available: on_hand - reserved,
                at: *at,
            },
            StockEvent::StockThresholdChanged {
                threshold_override,
                store_default_threshold,
                effective_threshold,
                at,
                ..
            } => {
                if let Some(level) = self.levels.get_mut(&product_id) {
                    level.threshold_override = threshold_override.map(|t| t as i32);
                    level.store_default_threshold = *store_default_threshold as i32;
                    level.effective_threshold = *effective_threshold as i32;
                    level.updated_at = *at;
                }
                return;
            }
            StockEvent::StockLevelLow {
                available,
                threshold,
                at,
            } => {
                self.alert(product_id, position, "low", *available, *threshold, *at);
                return;
            }
            StockEvent::StockDepleted { threshold, at } => {
                self.alert(product_id, position, "out", 0, *threshold, *at);
                return;
            }
            StockEvent::StockReplenished { at, .. } => {
                self.set_level(product_id, "normal", *at);
                if let Some(alert) = self
                    .open
                    .remove(&product_id)
                    .and_then(|id| self.alerts.get_mut(&id))
                {
                    alert.resolved_at = Some(*at);
                }
                return;
            }
            StockEvent::StockAlertAcknowledged {
                acknowledged_by,
                at,
                ..
            } => {
                if let Some(alert) = self
                    .open
                    .get(&product_id)
                    .and_then(|id| self.alerts.get_mut(id))
                {
                    alert.acknowledged_at = Some(*at);
                    alert.acknowledged_by = Some(acknowledged_by.0);
                }
                return;
            }
        };
        let Some(level) = self.levels.get_mut(&product_id) else {
            return;
        };
        if let Some(order_id) = change.order_id {
            let key = (product_id, order_id);
            if change.kind == "reserved" {
                self.reserved.insert(
                    key,
                    Reservation {
                        product_id,
                        order_id,
                        store_id: level.store_id,
                        quantity: change.reserved_delta,
                        reserved_at: change.at,
                    },
                );
            } else if self.reserved.remove(&key).is_none() {
                // Opened in an earlier batch: delete the stored row.
                self.closed.push(key);
            }
        }
        let reserved = change.on_hand - change.available;
        level.on_hand = change.on_hand;
        level.reserved = reserved;
        level.available = change.available;
        level.updated_at = change.at;
        self.history.push(Movement {
            product_id,
            global_position: position,
            store_id: level.store_id,
            movement: change.kind,
            on_hand_delta: change.on_hand_delta,
            reserved_delta: change.reserved_delta,
            reason: change.reason,
            note: change.note,
            order_id: change.order_id,
            on_hand_after: change.on_hand,
            reserved_after: reserved,
            available_after: change.available,
            actor_id: envelope.metadata.actor_id.map(|a| a.0),
            recorded_at: change.at,
        });
    }

    fn set_level(&mut self, product_id: Uuid, level: &str, at: DateTime<Utc>) {
        if let Some(row) = self.levels.get_mut(&product_id) {
            row.level = level.to_owned();
            row.updated_at = at;
        }
    }

    /// Opens an alert, or escalates/de-escalates the open one (one open alert per product).
    fn alert(
        &mut self,
        product_id: Uuid,
        position: i64,
        level: &str,
        available: i64,
        threshold: u32,
        at: DateTime<Utc>,
    ) {
        self.set_level(product_id, level, at);
        if let Some(alert) = self
            .open
            .get(&product_id)
            .and_then(|id| self.alerts.get_mut(id))
        {
            alert.level = level.to_owned();
            alert.available = available;
            alert.threshold = threshold as i32;
            return;
        }
        let Some(store_id) = self.levels.get(&product_id).map(|l| l.store_id) else {
            return;
        };
        self.open.insert(product_id, position);
        self.alerts.insert(
            position,
            Alert {
                alert_id: position,
                product_id,
                store_id,
                level: level.to_owned(),
                available,
                threshold: threshold as i32,
                opened_at: at,
                resolved_at: None,
                acknowledged_at: None,
                acknowledged_by: None,
            },
        );
    }
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
