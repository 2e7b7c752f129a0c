//! Stock: the units of one product a store holds, and the units promised to open orders.
//!
//! Invariants, whatever the command sequence:
//! - `on_hand >= 0`, `reserved >= 0`, and `reserved <= on_hand` (so `available >= 0`): stock never
//!   oversells and is never over-reserved;
//! - one reservation per order; reserving again for the same order with the same quantity is a
//!   no-op, so the order↔stock saga can retry any step;
//! - releasing or committing a reservation that is not held is a no-op, for the same reason;
//! - whenever `available` moves across the effective low-stock threshold, an alert-state event
//!   (`StockLevelLow`, `StockDepleted`, `StockReplenished`) is emitted after the movement, carrying
//!   the level and threshold, so read models never re-derive the rule.
//!
//! The aggregate id is the product id: one Stock per product.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::values::{non_empty_text, AccountId, OrderId, ProductId, StoreId, MAX_TEXT_LEN};

/// Largest quantity one command may move, to keep every sum far from `i64` overflow.
pub const MAX_QUANTITY: i64 = 1_000_000_000;

/// Why units were added or removed outside the order flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdjustmentReason {
    /// A physical count found a different number of units.
    Count,
    /// Units were damaged or lost.
    Damage,
    /// Units came back from a customer.
    Return,
}

/// Why a reservation was given back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    OrderCancelled,
    OrderExpired,
    /// Placement failed after this reservation was made (another line was out of stock, or the
    /// process stopped before the order was recorded).
    OrderNotPlaced,
}

/// Where the available quantity stands against the effective threshold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StockLevel {
    #[default]
    Normal,
    Low,
    Out,
}

impl StockLevel {
    /// `normal`, `low` or `out`, as stored in read models.
    pub fn as_str(self) -> &'static str {
        match self {
            StockLevel::Normal => "normal",
            StockLevel::Low => "low",
            StockLevel::Out => "out",
        }
    }
}

/// The stock of one product.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stock {
    pub product_id: ProductId,
    pub store_id: StoreId,
    pub tracked: bool,
    pub on_hand: i64,
    pub reserved: i64,
    /// Open reservations by order.
    pub reservations: BTreeMap<OrderId, i64>,
    /// The product's own threshold, overriding the store default when set.
    pub threshold_override: Option<u32>,
    /// The store's default threshold, as last applied to this product.
    pub store_default_threshold: u32,
    pub level: StockLevel,
    /// Whether staff acknowledged the alert open since the level last left Normal.
    #[serde(default)]
    pub alert_acknowledged: bool,
}

impl Stock {
    /// Units that can still be promised to new orders.
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }

    /// The threshold in force: the product's own, else the store's default.
    pub fn effective_threshold(&self) -> u32 {
        self.threshold_override
            .unwrap_or(self.store_default_threshold)
    }

    fn level_for(available: i64, threshold: u32) -> StockLevel {
        if available <= 0 {
            StockLevel::Out
        } else if available <= i64::from(threshold) {
            StockLevel::Low
        } else {
            StockLevel::Normal
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum StockCommand {
    /// Starts tracking stock for a new product (zero units).
    Track {
        product_id: ProductId,
        store_id: StoreId,
        store_default_threshold: u32,
        at: DateTime<Utc>,
    },
    /// Units arrived.
    Receive {
        quantity: i64,
        note: Option<String>,
        at: DateTime<Utc>,
    },
    /// Units added (positive) or removed (negative) for a reason.
    Adjust {
        delta: i64,
        reason: AdjustmentReason,
        note: Option<String>,
        at: DateTime<Utc>,
    },
    /// Promise units to an order.
    Reserve {
        order_id: OrderId,
        quantity: i64,
        at: DateTime<Utc>,
    },
    /// Give an order's units back.
    Release {
        order_id: OrderId,
        reason: ReleaseReason,
        at: DateTime<Utc>,
    },
    /// The order was fulfilled: its units leave the store.
    Commit {
        order_id: OrderId,
        at: DateTime<Utc>,
    },
    /// Set (`Some`) or clear (`None`) the product's own threshold.
    SetThreshold {
        threshold: Option<u32>,
        at: DateTime<Utc>,
    },
    /// The store's default threshold changed.
    ApplyStoreDefaultThreshold { threshold: u32, at: DateTime<Utc> },
    /// Staff saw the open low/out-of-stock alert.
    AcknowledgeAlert {
        acknowledged_by: AccountId,
        at: DateTime<Utc>,
    },
}

impl StockCommand {
    /// When the command was issued (every command carries its time; handlers read no clock).
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            StockCommand::Track { at, .. }
            | StockCommand::Receive { at, .. }
            | StockCommand::Adjust { at, .. }
            | StockCommand::Reserve { at, .. }
            | StockCommand::Release { at, .. }
            | StockCommand::Commit { at, .. }
            | StockCommand::SetThreshold { at, .. }
            | StockCommand::ApplyStoreDefaultThreshold { at, .. }
            | StockCommand::AcknowledgeAlert { at, .. } => *at,
        }
    }
}

/// Stored as `{"VariantName": {...}}`; the variant name is the event type (`strum`
/// derives it, so the two cannot drift apart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum StockEvent {
    StockTracked {
        product_id: ProductId,
        store_id: StoreId,
        store_default_threshold: u32,
        at: DateTime<Utc>,
    },
    StockReceived {
        quantity: i64,
        note: Option<String>,
        on_hand: i64,
        available: i64,
        at: DateTime<Utc>,
    },
    StockAdjusted {
        delta: i64,
        reason: AdjustmentReason,
        note: Option<String>,
        on_hand: i64,
        available: i64,
        at: DateTime<Utc>,
    },
    StockReserved {
        order_id: OrderId,
        quantity: i64,
        reserved: i64,
        available: i64,
        at: DateTime<Utc>,
    },
    StockReservationReleased {
        order_id: OrderId,
        quantity: i64,
        reason: ReleaseReason,
        reserved: i64,
        available: i64,
        at: DateTime<Utc>,
    },
    StockReservationCommitted {
        order_id: OrderId,
        quantity: i64,
        on_hand: i64,
        reserved: i64,
        at: DateTime<Utc>,
    },
    StockThresholdChanged {
        threshold_override: Option<u32>,
        store_default_threshold: u32,
        previous_effective_threshold: u32,
        effective_threshold: u32,
        at: DateTime<Utc>,
    },
    /// Available stock fell to or below the threshold (but not to zero).
    StockLevelLow {
        available: i64,
        threshold: u32,
        at: DateTime<Utc>,
    },
    /// Available stock reached zero.
    StockDepleted { threshold: u32, at: DateTime<Utc> },
    /// Staff acknowledged the open alert (the level is still low or out).
    StockAlertAcknowledged {
        acknowledged_by: AccountId,
        level: StockLevel,
        at: DateTime<Utc>,
    },
    /// Available stock rose above the threshold again.
    StockReplenished {
        available: i64,
        threshold: u32,
        previous_level: StockLevel,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StockError {
    #[error("stock is not tracked for this product")]
    NotFound,
    #[error("stock is already tracked for this product")]
    AlreadyExists,
    #[error("quantity must be between 1 and {MAX_QUANTITY}")]
    InvalidQuantity,
    #[error("an adjustment must change the quantity by 1 to {MAX_QUANTITY} units either way")]
    InvalidAdjustment,
    #[error("the note is too long (at most {MAX_TEXT_LEN} characters)")]
    NoteTooLong,
    #[error("out of stock: {requested} requested, {available} available")]
    OutOfStock { requested: i64, available: i64 },
    #[error("the adjustment would leave {would_be_available} units available; on hand {on_hand}, reserved {reserved}")]
    AdjustmentBelowReserved {
        on_hand: i64,
        reserved: i64,
        would_be_available: i64,
    },
    #[error(
        "order {order_id} already holds a reservation of {held} units (asked for {requested})"
    )]
    ReservationMismatch {
        order_id: OrderId,
        held: i64,
        requested: i64,
    },
    #[error("threshold must be at most 1000000")]
    InvalidThreshold,
    #[error("there is no open stock alert: the level is normal")]
    NoOpenAlert,
    #[error("the open stock alert is already acknowledged")]
    AlertAlreadyAcknowledged,
}

impl Aggregate for Stock {
    const TYPE: &'static str = "Stock";
    type Command = StockCommand;
    type Event = StockEvent;
    type Error = StockError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let at = command.at();
        match command {
            StockCommand::Track {
                product_id,
                store_id,
                store_default_threshold,
                at,
            } => {
                if self.tracked {
                    return Err(StockError::AlreadyExists);
                }
                check_threshold(store_default_threshold)?;
                let event = StockEvent::StockTracked {
                    product_id,
                    store_id,
                    store_default_threshold,
                    at,
                };
                sink.write(event, self).await;
            }
            _ if !self.tracked => return Err(StockError::NotFound),
            StockCommand::Receive { quantity, note, at } => {
                check_quantity(quantity)?;
                let note = check_note(note)?;
                let on_hand = self.on_hand + quantity;
                let event = StockEvent::StockReceived {
                    quantity,
                    note,
                    on_hand,
                    available: on_hand - self.reserved,
                    at,
                };
                sink.write(event, self).await;
            }
            StockCommand::Adjust {
                delta,
                reason,
                note,
                at,
            } => {
                if delta == 0 || delta.abs() > MAX_QUANTITY {
                    return Err(StockError::InvalidAdjustment);
                }
                let note = check_note(note)?;
                let on_hand = self.on_hand + delta;
                if on_hand < self.reserved {
                    return Err(StockError::AdjustmentBelowReserved {
                        on_hand: self.on_hand,
                        reserved: self.reserved,
                        would_be_available: on_hand - self.reserved,
                    });
                }
                let event = StockEvent::StockAdjusted {
                    delta,
                    reason,
                    note,
                    on_hand,
                    available: on_hand - self.reserved,
                    at,
                };
                sink.write(event, self).await;
            }
            StockCommand::Reserve {
                order_id,
                quantity,
                at,
            } => {
                check_quantity(quantity)?;
                if let Some(&held) = self.reservations.get(&order_id) {
                    return if held == quantity {
                        Ok(())
                    } else {
                        Err(StockError::ReservationMismatch {
                            order_id,
                            held,
                            requested: quantity,
                        })
                    };
                }
                if quantity > self.available() {
                    return Err(StockError::OutOfStock {
                        requested: quantity,
                        available: self.available(),
                    });
                }
                let reserved = self.reserved + quantity;
                let event = StockEvent::StockReserved {
                    order_id,
                    quantity,
                    reserved,
                    available: self.on_hand - reserved,
                    at,
                };
                sink.write(event, self).await;
            }
            StockCommand::Release {
                order_id,
                reason,
                at,
            } => {
                let Some(&quantity) = self.reservations.get(&order_id) else {
                    return Ok(());
                };
                let reserved = self.reserved - quantity;
                let event = StockEvent::StockReservationReleased {
                    order_id,
                    quantity,
                    reason,
                    reserved,
                    available: self.on_hand - reserved,
                    at,
                };
                sink.write(event, self).await;
            }
            StockCommand::Commit { order_id, at } => {
                let Some(&quantity) = self.reservations.get(&order_id) else {
                    return Ok(());
                };
                let event = StockEvent::StockReservationCommitted {
                    order_id,
                    quantity,
                    on_hand: self.on_hand - quantity,
                    reserved: self.reserved - quantity,
                    at,
                };
                sink.write(event, self).await;
            }
            StockCommand::SetThreshold { threshold, at } => {
                if let Some(t) = threshold {
                    check_threshold(t)?;
                }
                if threshold == self.threshold_override {
                    return Ok(());
                }
                let event = StockEvent::StockThresholdChanged {
                    threshold_override: threshold,
                    store_default_threshold: self.store_default_threshold,
                    previous_effective_threshold: self.effective_threshold(),
                    effective_threshold: threshold.unwrap_or(self.store_default_threshold),
                    at,
                };
                sink.write(event, self).await;
            }
            StockCommand::ApplyStoreDefaultThreshold { threshold, at } => {
                check_threshold(threshold)?;
                if threshold == self.store_default_threshold {
                    return Ok(());
                }
                let event = StockEvent::StockThresholdChanged {
                    threshold_override: self.threshold_override,
                    store_default_threshold: threshold,
                    previous_effective_threshold: self.effective_threshold(),
                    effective_threshold: self.threshold_override.unwrap_or(threshold),
                    at,
                };
                sink.write(event, self).await;
            }
            StockCommand::AcknowledgeAlert {
                acknowledged_by,
                at,
            } => {
                if self.level == StockLevel::Normal {
                    return Err(StockError::NoOpenAlert);
                }
                if self.alert_acknowledged {
                    return Err(StockError::AlertAlreadyAcknowledged);
                }
                let event = StockEvent::StockAlertAcknowledged {
                    acknowledged_by,
                    level: self.level,
                    at,
                };
                sink.write(event, self).await;
            }
        }
        self.emit_level_change(sink, at).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            StockEvent::StockTracked {
                product_id,
                store_id,
                store_default_threshold,
                ..
            } => {
                self.product_id = product_id;
                self.store_id = store_id;
                self.store_default_threshold = store_default_threshold;
                self.tracked = true;
                // A new product has nothing on hand: it starts out of stock without an alert;
                // the first receipt of units reports the crossing (`StockReplenished`/`Low`).
                self.level = StockLevel::Out;
            }
            StockEvent::StockReceived { on_hand, .. }
            | StockEvent::StockAdjusted { on_hand, .. } => {
                self.on_hand = on_hand;
            }
            StockEvent::StockReserved {
                order_id,
                quantity,
                reserved,
                ..
            } => {
                self.reservations.insert(order_id, quantity);
                self.reserved = reserved;
            }
            StockEvent::StockReservationReleased {
                order_id, reserved, ..
            } => {
                self.reservations.remove(&order_id);
                self.reserved = reserved;
            }
            StockEvent::StockReservationCommitted {
                order_id,
                on_hand,
                reserved,
                ..
            } => {
                self.reservations.remove(&order_id);
                self.on_hand = on_hand;
                self.reserved = reserved;
            }
            StockEvent::StockThresholdChanged {
                threshold_override,
                store_default_threshold,
                ..
            } => {
                self.threshold_override = threshold_override;
                self.store_default_threshold = store_default_threshold;
            }
            StockEvent::StockLevelLow { .. } | StockEvent::StockDepleted { .. } => {
                // Escalating from low to out keeps the same alert (and its acknowledgement).
                if self.level == StockLevel::Normal {
                    self.alert_acknowledged = false;
                }
                self.level = match event {
                    StockEvent::StockDepleted { .. } => StockLevel::Out,
                    _ => StockLevel::Low,
                };
            }
            StockEvent::StockReplenished { .. } => {
                self.level = StockLevel::Normal;
                self.alert_acknowledged = false;
            }
            StockEvent::StockAlertAcknowledged { .. } => self.alert_acknowledged = true,
        }
    }
}

impl Stock {
    /// Emits the alert-state event when the movement just applied moved `available` into a
    /// different level (Normal / Low / Out) than the one recorded.
    async fn emit_level_change(&mut self, sink: &EventSink<Self>, at: DateTime<Utc>) {
        let threshold = self.effective_threshold();
        let available = self.available();
        let level = Self::level_for(available, threshold);
        if level == self.level {
            return;
        }
        let event = match level {
            StockLevel::Low => StockEvent::StockLevelLow {
                available,
                threshold,
                at,
            },
            StockLevel::Out => StockEvent::StockDepleted { threshold, at },
            StockLevel::Normal => StockEvent::StockReplenished {
                available,
                threshold,
                previous_level: self.level,
                at,
            },
        };
        sink.write(event, self).await;
    }
}

fn check_quantity(quantity: i64) -> Result<(), StockError> {
    if (1..=MAX_QUANTITY).contains(&quantity) {
        Ok(())
    } else {
        Err(StockError::InvalidQuantity)
    }
}

fn check_threshold(threshold: u32) -> Result<(), StockError> {
    if threshold <= 1_000_000 {
        Ok(())
    } else {
        Err(StockError::InvalidThreshold)
    }
}

fn check_note(note: Option<String>) -> Result<Option<String>, StockError> {
    match note {
        None => Ok(None),
        Some(text) if text.trim().is_empty() => Ok(None),
        Some(text) => non_empty_text(&text, MAX_TEXT_LEN)
            .map(Some)
            .ok_or(StockError::NoteTooLong),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;
    use cqrs_es::DomainEvent as _;
    use proptest::prelude::*;

    type StockTest = TestFramework<Stock>;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    fn product() -> ProductId {
        ProductId(uuid::Uuid::from_u128(1))
    }

    fn store() -> StoreId {
        StoreId(uuid::Uuid::from_u128(2))
    }

    fn order(n: u128) -> OrderId {
        OrderId(uuid::Uuid::from_u128(100 + n))
    }

    fn tracked(threshold: u32) -> StockEvent {
        StockEvent::StockTracked {
            product_id: product(),
            store_id: store(),
            store_default_threshold: threshold,
            at: at(),
        }
    }

    fn received(quantity: i64, on_hand: i64, available: i64) -> StockEvent {
        StockEvent::StockReceived {
            quantity,
            note: None,
            on_hand,
            available,
            at: at(),
        }
    }

    fn reserved(n: u128, quantity: i64, reserved: i64, available: i64) -> StockEvent {
        StockEvent::StockReserved {
            order_id: order(n),
            quantity,
            reserved,
            available,
            at: at(),
        }
    }

    fn replenished(available: i64, threshold: u32, previous_level: StockLevel) -> StockEvent {
        StockEvent::StockReplenished {
            available,
            threshold,
            previous_level,
            at: at(),
        }
    }

    /// Tracked with threshold 5 and 10 units received.
    fn ten_on_hand() -> Vec<StockEvent> {
        vec![
            tracked(5),
            received(10, 10, 10),
            replenished(10, 5, StockLevel::Out),
        ]
    }

    fn reserve(n: u128, quantity: i64) -> StockCommand {
        StockCommand::Reserve {
            order_id: order(n),
            quantity,
            at: at(),
        }
    }

    #[test]
    fn tracking_a_product_starts_it_at_zero_without_an_alert() {
        StockTest::with(())
            .given_no_previous_events()
            .when(StockCommand::Track {
                product_id: product(),
                store_id: store(),
                store_default_threshold: 5,
                at: at(),
            })
            .then_expect_events(vec![tracked(5)]);
    }

    #[test]
    fn tracking_twice_is_refused() {
        StockTest::with(())
            .given(vec![tracked(5)])
            .when(StockCommand::Track {
                product_id: product(),
                store_id: store(),
                store_default_threshold: 5,
                at: at(),
            })
            .then_expect_error(StockError::AlreadyExists);
    }

    #[test]
    fn commands_on_untracked_stock_are_refused() {
        StockTest::with(())
            .given_no_previous_events()
            .when(reserve(1, 1))
            .then_expect_error(StockError::NotFound);
    }

    #[test]
    fn receiving_units_above_the_threshold_reports_replenishment() {
        StockTest::with(())
            .given(vec![tracked(5)])
            .when(StockCommand::Receive {
                quantity: 10,
                note: Some("  pallet 7 ".into()),
                at: at(),
            })
            .then_expect_events(vec![
                StockEvent::StockReceived {
                    quantity: 10,
                    note: Some("pallet 7".into()),
                    on_hand: 10,
                    available: 10,
                    at: at(),
                },
                replenished(10, 5, StockLevel::Out),
            ]);
    }

    #[test]
    fn receiving_units_up_to_the_threshold_reports_low_stock() {
        StockTest::with(())
            .given(vec![tracked(5)])
            .when(StockCommand::Receive {
                quantity: 3,
                note: None,
                at: at(),
            })
            .then_expect_events(vec![
                received(3, 3, 3),
                StockEvent::StockLevelLow {
                    available: 3,
                    threshold: 5,
                    at: at(),
                },
            ]);
    }

    #[test]
    fn receiving_a_non_positive_quantity_is_refused() {
        for quantity in [0, -1, MAX_QUANTITY + 1] {
            StockTest::with(())
                .given(vec![tracked(5)])
                .when(StockCommand::Receive {
                    quantity,
                    note: None,
                    at: at(),
                })
                .then_expect_error(StockError::InvalidQuantity);
        }
    }

    #[test]
    fn a_note_longer_than_the_limit_is_refused() {
        StockTest::with(())
            .given(vec![tracked(5)])
            .when(StockCommand::Receive {
                quantity: 1,
                note: Some("x".repeat(MAX_TEXT_LEN + 1)),
                at: at(),
            })
            .then_expect_error(StockError::NoteTooLong);
    }

    #[test]
    fn reserving_available_units_holds_them_for_the_order() {
        StockTest::with(())
            .given(ten_on_hand())
            .when(reserve(1, 4))
            .then_expect_events(vec![reserved(1, 4, 4, 6)]);
    }

    #[test]
    fn reserving_into_the_threshold_reports_low_stock() {
        StockTest::with(())
            .given(ten_on_hand())
            .when(reserve(1, 6))
            .then_expect_events(vec![
                reserved(1, 6, 6, 4),
                StockEvent::StockLevelLow {
                    available: 4,
                    threshold: 5,
                    at: at(),
                },
            ]);
    }

    #[test]
    fn reserving_the_last_units_reports_depletion() {
        StockTest::with(())
            .given(ten_on_hand())
            .when(reserve(1, 10))
            .then_expect_events(vec![
                reserved(1, 10, 10, 0),
                StockEvent::StockDepleted {
                    threshold: 5,
                    at: at(),
                },
            ]);
    }

    #[test]
    fn reserving_more_than_available_is_refused_as_out_of_stock() {
        StockTest::with(())
            .given(ten_on_hand())
            .and(vec![reserved(1, 8, 8, 2)])
            .when(reserve(2, 3))
            .then_expect_error(StockError::OutOfStock {
                requested: 3,
                available: 2,
            });
    }

    #[test]
    fn reserving_again_for_the_same_order_and_quantity_is_a_no_op() {
        StockTest::with(())
            .given(ten_on_hand())
            .and(vec![reserved(1, 4, 4, 6)])
            .when(reserve(1, 4))
            .then_expect_events(vec![]);
    }

    #[test]
    fn reserving_again_for_the_same_order_with_another_quantity_is_refused() {
        StockTest::with(())
            .given(ten_on_hand())
            .and(vec![reserved(1, 4, 4, 6)])
            .when(reserve(1, 5))
            .then_expect_error(StockError::ReservationMismatch {
                order_id: order(1),
                held: 4,
                requested: 5,
            });
    }

    #[test]
    fn releasing_a_reservation_makes_its_units_available_again() {
        StockTest::with(())
            .given(ten_on_hand())
            .and(vec![
                reserved(1, 10, 10, 0),
                StockEvent::StockDepleted {
                    threshold: 5,
                    at: at(),
                },
            ])
            .when(StockCommand::Release {
                order_id: order(1),
                reason: ReleaseReason::OrderExpired,
                at: at(),
            })
            .then_expect_events(vec![
                StockEvent::StockReservationReleased {
                    order_id: order(1),
                    quantity: 10,
                    reason: ReleaseReason::OrderExpired,
                    reserved: 0,
                    available: 10,
                    at: at(),
                },
                replenished(10, 5, StockLevel::Out),
            ]);
    }

    #[test]
    fn releasing_a_reservation_that_is_not_held_is_a_no_op() {
        StockTest::with(())
            .given(ten_on_hand())
            .when(StockCommand::Release {
                order_id: order(9),
                reason: ReleaseReason::OrderNotPlaced,
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn committing_a_reservation_removes_its_units_from_hand() {
        StockTest::with(())
            .given(ten_on_hand())
            .and(vec![reserved(1, 4, 4, 6)])
            .when(StockCommand::Commit {
                order_id: order(1),
                at: at(),
            })
            .then_expect_events(vec![StockEvent::StockReservationCommitted {
                order_id: order(1),
                quantity: 4,
                on_hand: 6,
                reserved: 0,
                at: at(),
            }]);
    }

    #[test]
    fn committing_twice_is_a_no_op() {
        StockTest::with(())
            .given(ten_on_hand())
            .and(vec![
                reserved(1, 4, 4, 6),
                StockEvent::StockReservationCommitted {
                    order_id: order(1),
                    quantity: 4,
                    on_hand: 6,
                    reserved: 0,
                    at: at(),
                },
            ])
            .when(StockCommand::Commit {
                order_id: order(1),
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn adjusting_for_damage_removes_units() {
        StockTest::with(())
            .given(ten_on_hand())
            .when(StockCommand::Adjust {
                delta: -2,
                reason: AdjustmentReason::Damage,
                note: Some("crushed box".into()),
                at: at(),
            })
            .then_expect_events(vec![StockEvent::StockAdjusted {
                delta: -2,
                reason: AdjustmentReason::Damage,
                note: Some("crushed box".into()),
                on_hand: 8,
                available: 8,
                at: at(),
            }]);
    }

    #[test]
    fn an_adjustment_below_the_reserved_units_is_refused() {
        StockTest::with(())
            .given(ten_on_hand())
            .and(vec![reserved(1, 8, 8, 2)])
            .when(StockCommand::Adjust {
                delta: -3,
                reason: AdjustmentReason::Count,
                note: None,
                at: at(),
            })
            .then_expect_error(StockError::AdjustmentBelowReserved {
                on_hand: 10,
                reserved: 8,
                would_be_available: -1,
            });
    }

    #[test]
    fn a_zero_adjustment_is_refused() {
        StockTest::with(())
            .given(ten_on_hand())
            .when(StockCommand::Adjust {
                delta: 0,
                reason: AdjustmentReason::Return,
                note: None,
                at: at(),
            })
            .then_expect_error(StockError::InvalidAdjustment);
    }

    #[test]
    fn a_product_threshold_overrides_the_store_default_and_reports_the_crossing() {
        StockTest::with(())
            .given(ten_on_hand())
            .when(StockCommand::SetThreshold {
                threshold: Some(12),
                at: at(),
            })
            .then_expect_events(vec![
                StockEvent::StockThresholdChanged {
                    threshold_override: Some(12),
                    store_default_threshold: 5,
                    previous_effective_threshold: 5,
                    effective_threshold: 12,
                    at: at(),
                },
                StockEvent::StockLevelLow {
                    available: 10,
                    threshold: 12,
                    at: at(),
                },
            ]);
    }

    #[test]
    fn a_store_default_does_not_override_a_product_threshold() {
        StockTest::with(())
            .given(ten_on_hand())
            .and(vec![StockEvent::StockThresholdChanged {
                threshold_override: Some(2),
                store_default_threshold: 5,
                previous_effective_threshold: 5,
                effective_threshold: 2,
                at: at(),
            }])
            .when(StockCommand::ApplyStoreDefaultThreshold {
                threshold: 50,
                at: at(),
            })
            .then_expect_events(vec![StockEvent::StockThresholdChanged {
                threshold_override: Some(2),
                store_default_threshold: 50,
                previous_effective_threshold: 2,
                effective_threshold: 2,
                at: at(),
            }]);
    }

    #[test]
    fn setting_the_same_threshold_is_a_no_op_and_an_absurd_one_is_refused() {
        StockTest::with(())
            .given(ten_on_hand())
            .when(StockCommand::SetThreshold {
                threshold: None,
                at: at(),
            })
            .then_expect_events(vec![]);
        StockTest::with(())
            .given(ten_on_hand())
            .when(StockCommand::SetThreshold {
                threshold: Some(1_000_001),
                at: at(),
            })
            .then_expect_error(StockError::InvalidThreshold);
    }

    #[test]
    fn staff_acknowledge_an_open_alert_once() {
        let depleted = StockEvent::StockDepleted {
            threshold: 5,
            at: at(),
        };
        let acknowledge = || StockCommand::AcknowledgeAlert {
            acknowledged_by: AccountId(uuid::Uuid::from_u128(9)),
            at: at(),
        };
        let acknowledged = StockEvent::StockAlertAcknowledged {
            acknowledged_by: AccountId(uuid::Uuid::from_u128(9)),
            level: StockLevel::Out,
            at: at(),
        };
        StockTest::with(())
            .given(ten_on_hand())
            .and(vec![reserved(1, 10, 10, 0), depleted.clone()])
            .when(acknowledge())
            .then_expect_events(vec![acknowledged.clone()]);
        StockTest::with(())
            .given(ten_on_hand())
            .and(vec![reserved(1, 10, 10, 0), depleted, acknowledged])
            .when(acknowledge())
            .then_expect_error(StockError::AlertAlreadyAcknowledged);
        StockTest::with(())
            .given(ten_on_hand())
            .when(acknowledge())
            .then_expect_error(StockError::NoOpenAlert);
    }

    #[test]
    fn events_serialise_with_their_type_as_the_tag() {
        let event = reserved(1, 2, 2, 8);
        let json = serde_json::to_value(&event).unwrap();
        assert!(json.get("StockReserved").is_some(), "{json}");
        assert_eq!(event.event_type(), "StockReserved");
        assert_eq!(event.event_version(), "1.0");
        let back: StockEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }

    fn arbitrary_command() -> impl Strategy<Value = StockCommand> {
        let order_id = (0u128..6).prop_map(order);
        prop_oneof![
            (-5i64..50).prop_map(|quantity| StockCommand::Receive {
                quantity,
                note: None,
                at: at()
            }),
            (-30i64..30).prop_map(|delta| StockCommand::Adjust {
                delta,
                reason: AdjustmentReason::Count,
                note: None,
                at: at()
            }),
            (order_id.clone(), -2i64..25).prop_map(|(order_id, quantity)| StockCommand::Reserve {
                order_id,
                quantity,
                at: at()
            }),
            order_id.clone().prop_map(|order_id| StockCommand::Release {
                order_id,
                reason: ReleaseReason::OrderCancelled,
                at: at()
            }),
            order_id.prop_map(|order_id| StockCommand::Commit { order_id, at: at() }),
            proptest::option::of(0u32..20).prop_map(|threshold| StockCommand::SetThreshold {
                threshold,
                at: at()
            }),
        ]
    }

    proptest! {
        /// No command sequence drives stock negative or over-reserves it, and the recorded
        /// level always matches the quantities.
        #[test]
        fn stock_never_goes_negative_nor_over_reserved(
            commands in proptest::collection::vec(arbitrary_command(), 1..60)
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut stock = Stock::default();
            stock.apply(tracked(3));
            for command in commands {
                let sink = EventSink::default();
                let mut candidate = stock.clone();
                if runtime.block_on(candidate.handle(command, &(), &sink)).is_ok() {
                    // Rebuild from the emitted events, as a load from the store would.
                    for event in runtime.block_on(sink.collect()) {
                        stock.apply(event);
                    }
                    prop_assert_eq!(&stock, &candidate);
                }
                prop_assert!(stock.on_hand >= 0);
                prop_assert!(stock.reserved >= 0);
                prop_assert!(stock.reserved <= stock.on_hand);
                prop_assert_eq!(stock.reserved, stock.reservations.values().sum::<i64>());
                prop_assert_eq!(
                    stock.level,
                    Stock::level_for(stock.available(), stock.effective_threshold())
                );
            }
        }
    }
}
