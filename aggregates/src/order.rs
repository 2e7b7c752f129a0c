//! Order: what a customer bought in one store, and where it stands.
//!
//! State graph (every transition is an event naming the previous state; docs/orders.md):
//!
//! ```text
//!                  ┌──────────── receipt rejected ────────────┐
//!                  ▼                                          │
//! placed ─▶ AWAITING_PAYMENT ── receipt submitted ──▶ RECEIPT_SUBMITTED
//!             │  │                                      │  │  │
//!             │  │                   payment confirmed ─┘  │  └──▶ PAID ─▶ FULFILLED ─▶ COMPLETED
//!             │  │                   (its receipt verified) │        │
//!             │  └─ expired (past payment deadline)         │        │
//!             │        ▼                                    │        │
//!             │     EXPIRED                                 │        │
//!             └── cancelled (customer or staff) ◀───────────┘        │
//!                    ▼                                               │
//!                 CANCELLED  ◀───────── cancelled by staff ──────────┘
//! ```
//!
//! Invariants: lines, total and currency are fixed at placement (each line carries its unit
//! price and line total; every price is in the order's currency; sums never overflow);
//! customers may cancel only before payment, staff any time before fulfilment; only an unpaid
//! order with no receipt under review expires, and only once its payment deadline has passed;
//! payment is confirmed only by the receipt under review, and a receipt the order saw rejected
//! can never pay it.
//! Contact details are personal data and arrive sealed (crypto-shredding).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::values::{
    non_empty_text, AccountId, Currency, Money, OrderId, ProductId, ReceiptId, SealedPersonalData,
    StoreId, MAX_TEXT_LEN,
};

/// Most lines one order may have.
pub const MAX_LINES: usize = 100;
/// Most units of one product per line.
pub const MAX_LINE_QUANTITY: i64 = 10_000;

/// Where an order stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Not placed yet (the state of an aggregate with no events).
    #[default]
    New,
    AwaitingPayment,
    ReceiptSubmitted,
    Paid,
    Fulfilled,
    Completed,
    Cancelled,
    Expired,
}

impl OrderStatus {
    /// Whether a payment receipt may be submitted now.
    pub fn accepts_receipt(self) -> bool {
        self == OrderStatus::AwaitingPayment
    }

    /// Whether the order still holds a stock reservation in this state.
    pub fn holds_reservation(self) -> bool {
        matches!(
            self,
            OrderStatus::AwaitingPayment | OrderStatus::ReceiptSubmitted | OrderStatus::Paid
        )
    }

    /// The stable name used in events, APIs and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::New => "NEW",
            OrderStatus::AwaitingPayment => "AWAITING_PAYMENT",
            OrderStatus::ReceiptSubmitted => "RECEIPT_SUBMITTED",
            OrderStatus::Paid => "PAID",
            OrderStatus::Fulfilled => "FULFILLED",
            OrderStatus::Completed => "COMPLETED",
            OrderStatus::Cancelled => "CANCELLED",
            OrderStatus::Expired => "EXPIRED",
        }
    }
}

impl OrderStatus {
    /// Every status, in the order an order can go through them.
    pub const ALL: [OrderStatus; 8] = [
        OrderStatus::New,
        OrderStatus::AwaitingPayment,
        OrderStatus::ReceiptSubmitted,
        OrderStatus::Paid,
        OrderStatus::Fulfilled,
        OrderStatus::Completed,
        OrderStatus::Cancelled,
        OrderStatus::Expired,
    ];
}

impl std::str::FromStr for OrderStatus {
    type Err = String;

    /// Reads the stable name ([`OrderStatus::as_str`]).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        OrderStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == name)
            .ok_or_else(|| format!("no order status is called {name:?}"))
    }
}

impl std::fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who cancelled an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelledBy {
    Customer,
    Staff,
}

/// A line as requested: the application layer fills in the product's current price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineRequest {
    pub product_id: ProductId,
    pub quantity: i64,
    pub unit_price: Money,
}

/// A line as placed, with its derived total (readers never multiply).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: ProductId,
    pub quantity: i64,
    pub unit_price_minor: i64,
    pub line_total_minor: i64,
}

/// One order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: OrderId,
    pub store_id: StoreId,
    pub customer_id: AccountId,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub total_minor: i64,
    pub currency: Option<Currency>,
    pub payment_due_by: Option<DateTime<Utc>>,
    /// The receipt under review, while `ReceiptSubmitted`.
    pub receipt_under_review: Option<ReceiptId>,
    /// The receipt whose verification paid the order.
    pub paid_with: Option<ReceiptId>,
    /// Receipts rejected for this order: none of them may ever pay it.
    #[serde(default)]
    pub rejected_receipts: BTreeSet<ReceiptId>,
}

impl Order {
    /// The order's total, once placed.
    pub fn total(&self) -> Option<Money> {
        self.currency.map(|c| Money::new(self.total_minor, c))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum OrderCommand {
    Place {
        order_id: OrderId,
        store_id: StoreId,
        customer_id: AccountId,
        currency: Currency,
        lines: Vec<LineRequest>,
        contact: Option<SealedPersonalData>,
        /// Payment deadline: placement time plus the store's reservation time-to-live.
        payment_due_by: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    RecordReceiptSubmitted {
        receipt_id: ReceiptId,
        at: DateTime<Utc>,
    },
    RecordReceiptRejected {
        receipt_id: ReceiptId,
        reason: String,
        at: DateTime<Utc>,
    },
    ConfirmPayment {
        receipt_id: ReceiptId,
        at: DateTime<Utc>,
    },
    Cancel {
        by: CancelledBy,
        actor_id: AccountId,
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    Expire {
        now: DateTime<Utc>,
    },
    Fulfil {
        at: DateTime<Utc>,
    },
    Complete {
        at: DateTime<Utc>,
    },
}

/// Stored as `{"VariantName": {...}}`; the variant name is the event type (`strum`
/// derives it, so the two cannot drift apart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum OrderEvent {
    OrderPlaced {
        order_id: OrderId,
        store_id: StoreId,
        customer_id: AccountId,
        lines: Vec<OrderLine>,
        total_minor: i64,
        currency: Currency,
        contact: Option<SealedPersonalData>,
        payment_due_by: DateTime<Utc>,
        placed_at: DateTime<Utc>,
    },
    OrderReceiptSubmitted {
        receipt_id: ReceiptId,
        previous_status: OrderStatus,
        at: DateTime<Utc>,
    },
    OrderReceiptRejected {
        receipt_id: ReceiptId,
        reason: String,
        previous_status: OrderStatus,
        at: DateTime<Utc>,
    },
    OrderPaid {
        receipt_id: ReceiptId,
        amount_minor: i64,
        currency: Currency,
        previous_status: OrderStatus,
        at: DateTime<Utc>,
    },
    OrderCancelled {
        by: CancelledBy,
        actor_id: AccountId,
        reason: Option<String>,
        previous_status: OrderStatus,
        at: DateTime<Utc>,
    },
    OrderExpired {
        payment_due_by: DateTime<Utc>,
        previous_status: OrderStatus,
        at: DateTime<Utc>,
    },
    OrderFulfilled {
        previous_status: OrderStatus,
        at: DateTime<Utc>,
    },
    OrderCompleted {
        previous_status: OrderStatus,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("order not found")]
    NotFound,
    #[error("the order has already been placed")]
    AlreadyPlaced,
    #[error("an order needs between 1 and {MAX_LINES} lines")]
    InvalidLineCount,
    #[error("line quantity must be between 1 and {MAX_LINE_QUANTITY}")]
    InvalidQuantity,
    #[error("product {0} appears on more than one line")]
    DuplicateProduct(ProductId),
    #[error("unit prices must be positive")]
    InvalidPrice,
    #[error("price is in {got}, but the order is in {expected}")]
    CurrencyMismatch { expected: Currency, got: Currency },
    #[error("the order total is too large")]
    TotalOverflow,
    #[error("the payment deadline must be after placement")]
    InvalidDeadline,
    #[error("contact details must be sealed with the customer's own key")]
    ForeignPersonalData,
    #[error("the reason must be 1 to {MAX_TEXT_LEN} characters")]
    InvalidReason,
    #[error("cannot {action} an order that is {status}")]
    InvalidTransition {
        action: &'static str,
        status: OrderStatus,
    },
    #[error("receipt {0} is not the one under review for this order")]
    UnknownReceipt(ReceiptId),
    #[error("receipt {0} was rejected and can never pay this order")]
    ReceiptRejected(ReceiptId),
    #[error("the order is not due to expire until {payment_due_by}")]
    NotYetDue { payment_due_by: DateTime<Utc> },
}

impl Aggregate for Order {
    const TYPE: &'static str = "Order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            OrderCommand::Place {
                order_id,
                store_id,
                customer_id,
                currency,
                lines,
                contact,
                payment_due_by,
                at,
            } => {
                if self.status != OrderStatus::New {
                    return Err(OrderError::AlreadyPlaced);
                }
                if payment_due_by <= at {
                    return Err(OrderError::InvalidDeadline);
                }
                // Erasing the customer must erase their contact details too.
                if contact
                    .as_ref()
                    .is_some_and(|c| c.subject_id != customer_id)
                {
                    return Err(OrderError::ForeignPersonalData);
                }
                let (lines, total_minor) = price_lines(lines, currency)?;
                OrderEvent::OrderPlaced {
                    order_id,
                    store_id,
                    customer_id,
                    lines,
                    total_minor,
                    currency,
                    contact,
                    payment_due_by,
                    placed_at: at,
                }
            }
            OrderCommand::RecordReceiptSubmitted { receipt_id, at } => {
                self.require("submit a receipt for", &[OrderStatus::AwaitingPayment])?;
                OrderEvent::OrderReceiptSubmitted {
                    receipt_id,
                    previous_status: self.status,
                    at,
                }
            }
            OrderCommand::RecordReceiptRejected {
                receipt_id,
                reason,
                at,
            } => {
                self.require("reject a receipt of", &[OrderStatus::ReceiptSubmitted])?;
                self.require_receipt(receipt_id)?;
                let reason =
                    non_empty_text(&reason, MAX_TEXT_LEN).ok_or(OrderError::InvalidReason)?;
                OrderEvent::OrderReceiptRejected {
                    receipt_id,
                    reason,
                    previous_status: self.status,
                    at,
                }
            }
            OrderCommand::ConfirmPayment { receipt_id, at } => {
                if self.rejected_receipts.contains(&receipt_id) {
                    return Err(OrderError::ReceiptRejected(receipt_id));
                }
                self.require("confirm payment of", &[OrderStatus::ReceiptSubmitted])?;
                self.require_receipt(receipt_id)?;
                let total = self.total().ok_or(OrderError::NotFound)?;
                OrderEvent::OrderPaid {
                    receipt_id,
                    amount_minor: total.amount_minor,
                    currency: total.currency,
                    previous_status: self.status,
                    at,
                }
            }
            OrderCommand::Cancel {
                by,
                actor_id,
                reason,
                at,
            } => {
                let allowed: &[OrderStatus] = match by {
                    CancelledBy::Customer => {
                        &[OrderStatus::AwaitingPayment, OrderStatus::ReceiptSubmitted]
                    }
                    CancelledBy::Staff => &[
                        OrderStatus::AwaitingPayment,
                        OrderStatus::ReceiptSubmitted,
                        OrderStatus::Paid,
                    ],
                };
                self.require("cancel", allowed)?;
                let reason = match reason {
                    None => None,
                    Some(text) if text.trim().is_empty() => None,
                    Some(text) => {
                        Some(non_empty_text(&text, MAX_TEXT_LEN).ok_or(OrderError::InvalidReason)?)
                    }
                };
                OrderEvent::OrderCancelled {
                    by,
                    actor_id,
                    reason,
                    previous_status: self.status,
                    at,
                }
            }
            OrderCommand::Expire { now } => {
                self.require("expire", &[OrderStatus::AwaitingPayment])?;
                let payment_due_by = self.payment_due_by.ok_or(OrderError::NotFound)?;
                if now < payment_due_by {
                    return Err(OrderError::NotYetDue { payment_due_by });
                }
                OrderEvent::OrderExpired {
                    payment_due_by,
                    previous_status: self.status,
                    at: now,
                }
            }
            OrderCommand::Fulfil { at } => {
                self.require("fulfil", &[OrderStatus::Paid])?;
                OrderEvent::OrderFulfilled {
                    previous_status: self.status,
                    at,
                }
            }
            OrderCommand::Complete { at } => {
                self.require("complete", &[OrderStatus::Fulfilled])?;
                OrderEvent::OrderCompleted {
                    previous_status: self.status,
                    at,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            OrderEvent::OrderPlaced {
                order_id,
                store_id,
                customer_id,
                lines,
                total_minor,
                currency,
                payment_due_by,
                ..
            } => {
                self.order_id = order_id;
                self.store_id = store_id;
                self.customer_id = customer_id;
                self.lines = lines;
                self.total_minor = total_minor;
                self.currency = Some(currency);
                self.payment_due_by = Some(payment_due_by);
                self.status = OrderStatus::AwaitingPayment;
            }
            OrderEvent::OrderReceiptSubmitted { receipt_id, .. } => {
                self.receipt_under_review = Some(receipt_id);
                self.status = OrderStatus::ReceiptSubmitted;
            }
            OrderEvent::OrderReceiptRejected { receipt_id, .. } => {
                self.rejected_receipts.insert(receipt_id);
                self.receipt_under_review = None;
                self.status = OrderStatus::AwaitingPayment;
            }
            OrderEvent::OrderPaid { receipt_id, .. } => {
                self.receipt_under_review = None;
                self.paid_with = Some(receipt_id);
                self.status = OrderStatus::Paid;
            }
            OrderEvent::OrderCancelled { .. } => {
                self.receipt_under_review = None;
                self.status = OrderStatus::Cancelled;
            }
            OrderEvent::OrderExpired { .. } => self.status = OrderStatus::Expired,
            OrderEvent::OrderFulfilled { .. } => self.status = OrderStatus::Fulfilled,
            OrderEvent::OrderCompleted { .. } => self.status = OrderStatus::Completed,
        }
    }
}

impl Order {
    fn require(&self, action: &'static str, allowed: &[OrderStatus]) -> Result<(), OrderError> {
        if self.status == OrderStatus::New {
            return Err(OrderError::NotFound);
        }
        if allowed.contains(&self.status) {
            Ok(())
        } else {
            Err(OrderError::InvalidTransition {
                action,
                status: self.status,
            })
        }
    }

    fn require_receipt(&self, receipt_id: ReceiptId) -> Result<(), OrderError> {
        if self.receipt_under_review == Some(receipt_id) {
            Ok(())
        } else {
            Err(OrderError::UnknownReceipt(receipt_id))
        }
    }
}

/// Checks a `Place` command against every placement rule without emitting anything, so a caller
/// can refuse a bad order before touching other aggregates (stock reservations).
pub async fn validate_placement(command: &OrderCommand) -> Result<(), OrderError> {
    let sink = EventSink::default();
    Order::default().handle(command.clone(), &(), &sink).await
}

/// Validates the requested lines and derives each line total and the order total.
fn price_lines(
    requests: Vec<LineRequest>,
    currency: Currency,
) -> Result<(Vec<OrderLine>, i64), OrderError> {
    if requests.is_empty() || requests.len() > MAX_LINES {
        return Err(OrderError::InvalidLineCount);
    }
    let mut seen = BTreeSet::new();
    let mut total: i64 = 0;
    let mut lines = Vec::with_capacity(requests.len());
    for request in requests {
        if !(1..=MAX_LINE_QUANTITY).contains(&request.quantity) {
            return Err(OrderError::InvalidQuantity);
        }
        if !seen.insert(request.product_id) {
            return Err(OrderError::DuplicateProduct(request.product_id));
        }
        if request.unit_price.currency != currency {
            return Err(OrderError::CurrencyMismatch {
                expected: currency,
                got: request.unit_price.currency,
            });
        }
        if request.unit_price.amount_minor <= 0 {
            return Err(OrderError::InvalidPrice);
        }
        let line_total = request
            .unit_price
            .amount_minor
            .checked_mul(request.quantity)
            .ok_or(OrderError::TotalOverflow)?;
        total = total
            .checked_add(line_total)
            .ok_or(OrderError::TotalOverflow)?;
        lines.push(OrderLine {
            product_id: request.product_id,
            quantity: request.quantity,
            unit_price_minor: request.unit_price.amount_minor,
            line_total_minor: line_total,
        });
    }
    Ok((lines, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use cqrs_es::test::TestFramework;
    use cqrs_es::DomainEvent as _;
    use proptest::prelude::*;

    type OrderTest = TestFramework<Order>;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    fn due() -> DateTime<Utc> {
        at() + Duration::minutes(30)
    }

    fn rub() -> Currency {
        "RUB".parse().unwrap()
    }

    fn product(n: u128) -> ProductId {
        ProductId(uuid::Uuid::from_u128(n))
    }

    fn receipt() -> ReceiptId {
        ReceiptId(uuid::Uuid::from_u128(77))
    }

    fn customer() -> AccountId {
        AccountId(uuid::Uuid::from_u128(5))
    }

    fn line(n: u128, quantity: i64, price: i64) -> LineRequest {
        LineRequest {
            product_id: product(n),
            quantity,
            unit_price: Money::new(price, rub()),
        }
    }

    fn place(lines: Vec<LineRequest>) -> OrderCommand {
        OrderCommand::Place {
            order_id: OrderId(uuid::Uuid::from_u128(9)),
            store_id: StoreId(uuid::Uuid::from_u128(3)),
            customer_id: customer(),
            currency: rub(),
            lines,
            contact: None,
            payment_due_by: due(),
            at: at(),
        }
    }

    fn placed() -> OrderEvent {
        OrderEvent::OrderPlaced {
            order_id: OrderId(uuid::Uuid::from_u128(9)),
            store_id: StoreId(uuid::Uuid::from_u128(3)),
            customer_id: customer(),
            lines: vec![
                OrderLine {
                    product_id: product(1),
                    quantity: 2,
                    unit_price_minor: 150_00,
                    line_total_minor: 300_00,
                },
                OrderLine {
                    product_id: product(2),
                    quantity: 1,
                    unit_price_minor: 99_50,
                    line_total_minor: 99_50,
                },
            ],
            total_minor: 399_50,
            currency: rub(),
            contact: None,
            payment_due_by: due(),
            placed_at: at(),
        }
    }

    fn receipt_submitted() -> OrderEvent {
        OrderEvent::OrderReceiptSubmitted {
            receipt_id: receipt(),
            previous_status: OrderStatus::AwaitingPayment,
            at: at(),
        }
    }

    fn paid(previous_status: OrderStatus) -> OrderEvent {
        OrderEvent::OrderPaid {
            receipt_id: receipt(),
            amount_minor: 399_50,
            currency: rub(),
            previous_status,
            at: at(),
        }
    }

    fn fulfilled() -> OrderEvent {
        OrderEvent::OrderFulfilled {
            previous_status: OrderStatus::Paid,
            at: at(),
        }
    }

    fn cancel(by: CancelledBy) -> OrderCommand {
        OrderCommand::Cancel {
            by,
            actor_id: customer(),
            reason: Some("changed my mind".into()),
            at: at(),
        }
    }

    fn cancelled(by: CancelledBy, previous_status: OrderStatus) -> OrderEvent {
        OrderEvent::OrderCancelled {
            by,
            actor_id: customer(),
            reason: Some("changed my mind".into()),
            previous_status,
            at: at(),
        }
    }

    #[test]
    fn placing_an_order_fixes_line_totals_total_and_deadline() {
        OrderTest::with(())
            .given_no_previous_events()
            .when(place(vec![line(1, 2, 150_00), line(2, 1, 99_50)]))
            .then_expect_events(vec![placed()]);
    }

    #[test]
    fn placing_twice_is_refused() {
        OrderTest::with(())
            .given(vec![placed()])
            .when(place(vec![line(1, 1, 1)]))
            .then_expect_error(OrderError::AlreadyPlaced);
    }

    #[test]
    fn an_order_without_lines_is_refused() {
        OrderTest::with(())
            .given_no_previous_events()
            .when(place(vec![]))
            .then_expect_error(OrderError::InvalidLineCount);
    }

    #[test]
    fn an_order_with_too_many_lines_is_refused() {
        let lines = (0..=MAX_LINES as u128).map(|n| line(n, 1, 1)).collect();
        OrderTest::with(())
            .given_no_previous_events()
            .when(place(lines))
            .then_expect_error(OrderError::InvalidLineCount);
    }

    #[test]
    fn a_line_with_a_bad_quantity_is_refused() {
        for quantity in [0, -3, MAX_LINE_QUANTITY + 1] {
            OrderTest::with(())
                .given_no_previous_events()
                .when(place(vec![line(1, quantity, 100)]))
                .then_expect_error(OrderError::InvalidQuantity);
        }
    }

    #[test]
    fn the_same_product_on_two_lines_is_refused() {
        OrderTest::with(())
            .given_no_previous_events()
            .when(place(vec![line(1, 1, 100), line(1, 2, 100)]))
            .then_expect_error(OrderError::DuplicateProduct(product(1)));
    }

    #[test]
    fn a_price_in_another_currency_is_refused() {
        let mut foreign = line(1, 1, 100);
        foreign.unit_price.currency = "EUR".parse().unwrap();
        OrderTest::with(())
            .given_no_previous_events()
            .when(place(vec![foreign]))
            .then_expect_error(OrderError::CurrencyMismatch {
                expected: rub(),
                got: "EUR".parse().unwrap(),
            });
    }

    #[test]
    fn a_non_positive_price_is_refused() {
        OrderTest::with(())
            .given_no_previous_events()
            .when(place(vec![line(1, 1, 0)]))
            .then_expect_error(OrderError::InvalidPrice);
    }

    #[test]
    fn a_total_that_overflows_is_refused() {
        OrderTest::with(())
            .given_no_previous_events()
            .when(place(vec![line(1, 10_000, i64::MAX / 5_000)]))
            .then_expect_error(OrderError::TotalOverflow);
    }

    #[test]
    fn a_deadline_before_placement_is_refused() {
        let mut command = place(vec![line(1, 1, 100)]);
        if let OrderCommand::Place { payment_due_by, .. } = &mut command {
            *payment_due_by = at();
        }
        OrderTest::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_error(OrderError::InvalidDeadline);
    }

    #[test]
    fn contact_details_sealed_for_someone_else_are_refused() {
        let mut command = place(vec![line(1, 1, 100)]);
        if let OrderCommand::Place { contact, .. } = &mut command {
            *contact = Some(SealedPersonalData {
                subject_id: AccountId(uuid::Uuid::from_u128(6)),
                algorithm: "xchacha20poly1305".into(),
                nonce: "bm9uY2U=".into(),
                ciphertext: "c2VjcmV0".into(),
            });
        }
        OrderTest::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_error(OrderError::ForeignPersonalData);
    }

    #[test]
    fn commands_on_an_order_never_placed_are_refused() {
        OrderTest::with(())
            .given_no_previous_events()
            .when(OrderCommand::Fulfil { at: at() })
            .then_expect_error(OrderError::NotFound);
    }

    #[test]
    fn submitting_a_receipt_puts_the_order_under_review() {
        OrderTest::with(())
            .given(vec![placed()])
            .when(OrderCommand::RecordReceiptSubmitted {
                receipt_id: receipt(),
                at: at(),
            })
            .then_expect_events(vec![receipt_submitted()]);
    }

    #[test]
    fn submitting_a_second_receipt_while_one_is_under_review_is_refused() {
        OrderTest::with(())
            .given(vec![placed(), receipt_submitted()])
            .when(OrderCommand::RecordReceiptSubmitted {
                receipt_id: ReceiptId(uuid::Uuid::from_u128(78)),
                at: at(),
            })
            .then_expect_error(OrderError::InvalidTransition {
                action: "submit a receipt for",
                status: OrderStatus::ReceiptSubmitted,
            });
    }

    #[test]
    fn a_rejected_receipt_sends_the_order_back_to_awaiting_payment_with_the_reason() {
        OrderTest::with(())
            .given(vec![placed(), receipt_submitted()])
            .when(OrderCommand::RecordReceiptRejected {
                receipt_id: receipt(),
                reason: " amount does not match ".into(),
                at: at(),
            })
            .then_expect_events(vec![OrderEvent::OrderReceiptRejected {
                receipt_id: receipt(),
                reason: "amount does not match".into(),
                previous_status: OrderStatus::ReceiptSubmitted,
                at: at(),
            }]);
    }

    #[test]
    fn rejecting_a_receipt_that_is_not_under_review_is_refused() {
        OrderTest::with(())
            .given(vec![placed(), receipt_submitted()])
            .when(OrderCommand::RecordReceiptRejected {
                receipt_id: ReceiptId(uuid::Uuid::from_u128(78)),
                reason: "wrong".into(),
                at: at(),
            })
            .then_expect_error(OrderError::UnknownReceipt(ReceiptId(
                uuid::Uuid::from_u128(78),
            )));
    }

    #[test]
    fn rejecting_a_receipt_without_a_reason_is_refused() {
        OrderTest::with(())
            .given(vec![placed(), receipt_submitted()])
            .when(OrderCommand::RecordReceiptRejected {
                receipt_id: receipt(),
                reason: "   ".into(),
                at: at(),
            })
            .then_expect_error(OrderError::InvalidReason);
    }

    #[test]
    fn confirming_payment_of_the_receipt_under_review_marks_the_order_paid() {
        OrderTest::with(())
            .given(vec![placed(), receipt_submitted()])
            .when(OrderCommand::ConfirmPayment {
                receipt_id: receipt(),
                at: at(),
            })
            .then_expect_events(vec![paid(OrderStatus::ReceiptSubmitted)]);
    }

    #[test]
    fn confirming_payment_without_a_receipt_under_review_is_refused() {
        OrderTest::with(())
            .given(vec![placed()])
            .when(OrderCommand::ConfirmPayment {
                receipt_id: receipt(),
                at: at(),
            })
            .then_expect_error(OrderError::InvalidTransition {
                action: "confirm payment of",
                status: OrderStatus::AwaitingPayment,
            });
    }

    #[test]
    fn a_rejected_receipt_can_never_pay_the_order() {
        let rejected = OrderEvent::OrderReceiptRejected {
            receipt_id: receipt(),
            reason: "amount does not match".into(),
            previous_status: OrderStatus::ReceiptSubmitted,
            at: at(),
        };
        // Not while the order awaits payment again, nor once the same receipt id is somehow
        // under review again.
        OrderTest::with(())
            .given(vec![placed(), receipt_submitted(), rejected.clone()])
            .when(OrderCommand::ConfirmPayment {
                receipt_id: receipt(),
                at: at(),
            })
            .then_expect_error(OrderError::ReceiptRejected(receipt()));
        OrderTest::with(())
            .given(vec![
                placed(),
                receipt_submitted(),
                rejected,
                receipt_submitted(),
            ])
            .when(OrderCommand::ConfirmPayment {
                receipt_id: receipt(),
                at: at(),
            })
            .then_expect_error(OrderError::ReceiptRejected(receipt()));
    }

    #[test]
    fn confirming_payment_twice_is_refused() {
        OrderTest::with(())
            .given(vec![
                placed(),
                receipt_submitted(),
                paid(OrderStatus::ReceiptSubmitted),
            ])
            .when(OrderCommand::ConfirmPayment {
                receipt_id: receipt(),
                at: at(),
            })
            .then_expect_error(OrderError::InvalidTransition {
                action: "confirm payment of",
                status: OrderStatus::Paid,
            });
    }

    #[test]
    fn a_customer_may_cancel_before_payment() {
        OrderTest::with(())
            .given(vec![placed(), receipt_submitted()])
            .when(cancel(CancelledBy::Customer))
            .then_expect_events(vec![cancelled(
                CancelledBy::Customer,
                OrderStatus::ReceiptSubmitted,
            )]);
    }

    #[test]
    fn a_customer_may_not_cancel_a_paid_order() {
        OrderTest::with(())
            .given(vec![
                placed(),
                receipt_submitted(),
                paid(OrderStatus::ReceiptSubmitted),
            ])
            .when(cancel(CancelledBy::Customer))
            .then_expect_error(OrderError::InvalidTransition {
                action: "cancel",
                status: OrderStatus::Paid,
            });
    }

    #[test]
    fn staff_may_cancel_a_paid_order_before_fulfilment() {
        OrderTest::with(())
            .given(vec![
                placed(),
                receipt_submitted(),
                paid(OrderStatus::ReceiptSubmitted),
            ])
            .when(cancel(CancelledBy::Staff))
            .then_expect_events(vec![cancelled(CancelledBy::Staff, OrderStatus::Paid)]);
    }

    #[test]
    fn nobody_may_cancel_a_fulfilled_order() {
        OrderTest::with(())
            .given(vec![
                placed(),
                receipt_submitted(),
                paid(OrderStatus::ReceiptSubmitted),
                fulfilled(),
            ])
            .when(cancel(CancelledBy::Staff))
            .then_expect_error(OrderError::InvalidTransition {
                action: "cancel",
                status: OrderStatus::Fulfilled,
            });
    }

    #[test]
    fn an_unpaid_order_expires_once_its_deadline_has_passed() {
        OrderTest::with(())
            .given(vec![placed()])
            .when(OrderCommand::Expire { now: due() })
            .then_expect_events(vec![OrderEvent::OrderExpired {
                payment_due_by: due(),
                previous_status: OrderStatus::AwaitingPayment,
                at: due(),
            }]);
    }

    #[test]
    fn an_order_does_not_expire_before_its_deadline() {
        OrderTest::with(())
            .given(vec![placed()])
            .when(OrderCommand::Expire {
                now: due() - Duration::seconds(1),
            })
            .then_expect_error(OrderError::NotYetDue {
                payment_due_by: due(),
            });
    }

    #[test]
    fn an_order_with_a_receipt_under_review_does_not_expire() {
        OrderTest::with(())
            .given(vec![placed(), receipt_submitted()])
            .when(OrderCommand::Expire {
                now: due() + Duration::days(1),
            })
            .then_expect_error(OrderError::InvalidTransition {
                action: "expire",
                status: OrderStatus::ReceiptSubmitted,
            });
    }

    #[test]
    fn a_paid_order_is_fulfilled_then_completed() {
        OrderTest::with(())
            .given(vec![
                placed(),
                receipt_submitted(),
                paid(OrderStatus::ReceiptSubmitted),
            ])
            .when(OrderCommand::Fulfil { at: at() })
            .then_expect_events(vec![fulfilled()]);
        OrderTest::with(())
            .given(vec![
                placed(),
                receipt_submitted(),
                paid(OrderStatus::ReceiptSubmitted),
                fulfilled(),
            ])
            .when(OrderCommand::Complete { at: at() })
            .then_expect_events(vec![OrderEvent::OrderCompleted {
                previous_status: OrderStatus::Fulfilled,
                at: at(),
            }]);
    }

    #[test]
    fn an_unpaid_order_cannot_be_fulfilled_nor_completed() {
        OrderTest::with(())
            .given(vec![placed()])
            .when(OrderCommand::Fulfil { at: at() })
            .then_expect_error(OrderError::InvalidTransition {
                action: "fulfil",
                status: OrderStatus::AwaitingPayment,
            });
        OrderTest::with(())
            .given(vec![
                placed(),
                receipt_submitted(),
                paid(OrderStatus::ReceiptSubmitted),
            ])
            .when(OrderCommand::Complete { at: at() })
            .then_expect_error(OrderError::InvalidTransition {
                action: "complete",
                status: OrderStatus::Paid,
            });
    }

    #[test]
    fn events_serialise_with_their_type_as_the_tag() {
        let json = serde_json::to_value(placed()).unwrap();
        assert_eq!(json["OrderPlaced"]["currency"], "RUB");
        assert_eq!(json["OrderPlaced"]["lines"][0]["line_total_minor"], 300_00);
        assert_eq!(placed().event_type(), "OrderPlaced");
        let back: OrderEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, placed());
    }

    /// The documented graph (docs/orders.md), as pairs `from → to`.
    const GRAPH: &[(OrderStatus, OrderStatus)] = {
        use OrderStatus::*;
        &[
            (New, AwaitingPayment),
            (AwaitingPayment, ReceiptSubmitted),
            (AwaitingPayment, Cancelled),
            (AwaitingPayment, Expired),
            (ReceiptSubmitted, AwaitingPayment),
            (ReceiptSubmitted, Paid),
            (ReceiptSubmitted, Cancelled),
            (Paid, Fulfilled),
            (Paid, Cancelled),
            (Fulfilled, Completed),
        ]
    };

    fn arbitrary_command() -> impl Strategy<Value = OrderCommand> {
        let receipt_id = (77u128..79).prop_map(|n| ReceiptId(uuid::Uuid::from_u128(n)));
        prop_oneof![
            Just(place(vec![line(1, 1, 100)])),
            receipt_id
                .clone()
                .prop_map(|receipt_id| OrderCommand::RecordReceiptSubmitted {
                    receipt_id,
                    at: at()
                }),
            receipt_id
                .clone()
                .prop_map(|receipt_id| OrderCommand::RecordReceiptRejected {
                    receipt_id,
                    reason: "no".into(),
                    at: at()
                }),
            receipt_id.prop_map(|receipt_id| OrderCommand::ConfirmPayment {
                receipt_id,
                at: at()
            }),
            Just(cancel(CancelledBy::Customer)),
            Just(cancel(CancelledBy::Staff)),
            (0i64..60).prop_map(|m| OrderCommand::Expire {
                now: at() + Duration::minutes(m)
            }),
            Just(OrderCommand::Fulfil { at: at() }),
            Just(OrderCommand::Complete { at: at() }),
        ]
    }

    proptest! {
        /// Whatever commands arrive, the status moves only along the documented graph, and
        /// every transition event names the status it left.
        #[test]
        fn orders_move_only_along_the_documented_graph(
            commands in proptest::collection::vec(arbitrary_command(), 1..40)
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut order = Order::default();
            for command in commands {
                let before = order.status;
                let sink = EventSink::default();
                let mut candidate = order.clone();
                if runtime.block_on(candidate.handle(command, &(), &sink)).is_ok() {
                    for event in runtime.block_on(sink.collect()) {
                        let named_previous = match &event {
                            OrderEvent::OrderPlaced { .. } => OrderStatus::New,
                            OrderEvent::OrderReceiptSubmitted { previous_status, .. }
                            | OrderEvent::OrderReceiptRejected { previous_status, .. }
                            | OrderEvent::OrderPaid { previous_status, .. }
                            | OrderEvent::OrderCancelled { previous_status, .. }
                            | OrderEvent::OrderExpired { previous_status, .. }
                            | OrderEvent::OrderFulfilled { previous_status, .. }
                            | OrderEvent::OrderCompleted { previous_status, .. } => *previous_status,
                        };
                        prop_assert_eq!(named_previous, order.status);
                        order.apply(event);
                    }
                    prop_assert!(
                        GRAPH.contains(&(before, order.status)),
                        "{:?} -> {:?} is not in the graph", before, order.status
                    );
                } else {
                    prop_assert_eq!(candidate.status, before);
                }
            }
        }
    }

    #[test]
    fn every_status_reads_back_from_its_name() {
        for status in OrderStatus::ALL {
            assert_eq!(status.as_str().parse::<OrderStatus>(), Ok(status));
        }
        assert!("PAYED".parse::<OrderStatus>().is_err());
        assert!("paid".parse::<OrderStatus>().is_err());
    }
}
