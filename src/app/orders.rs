//! Orders, and their stock reservations, changed together.
//!
//! Every decision here touches an Order and the Stock of each of its lines, and commits all of
//! it in one transaction (docs/adr/0005-one-decision-one-transaction.md):
//!
//! - **place**: every line's `Reserve`, then `OrderPlaced`. Either the order exists with all its
//!   reservations, or nothing was written (a shortage on any line refuses the whole order with
//!   `StockError::OutOfStock` naming it);
//! - **cancel**: `OrderCancelled`, every line's `Release`, and the receipt under review (if any)
//!   voided so it leaves the verification queue;
//! - **expire**: `OrderExpired` and every line's `Release`;
//! - **fulfil**: `OrderFulfilled` and every line's `Commit` (the units leave the store).
//!
//! Stock can never oversell: each `Reserve` is checked by the Stock aggregate against the state
//! it was loaded at, and the commit fails if any Stock moved since (optimistic concurrency on
//! its event sequence); the decision then runs again on fresh state.
//!
//! All four queue on their lines' stocks and are *folded* (docs/adr/0010-command-folding.md):
//! the placements (and cancellations, expiries, fulfilments) waiting on the same products are
//! decided one after another on one load of those stocks and committed together, each with its
//! own answer and its own metadata, so a hot product takes one commit per batch, not per order.

use aggregates::order::{validate_placement, CancelledBy, LineRequest, Order, OrderCommand};
use aggregates::order::{OrderError, OrderStatus};
use aggregates::product::ProductError;
use aggregates::receipt::{PaymentReceipt, ReceiptCommand, VoidReason};
use aggregates::stock::{ReleaseReason, Stock, StockCommand};
use aggregates::store::{Store, StoreError};
use aggregates::{AccountId, ActorRole, OrderId, ProductId, StoreId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use projections::read_models::customers::queries as customers;

use super::authz::{grant, StoreAccess};
use super::event_store::{AggregateKey, Decided, Decision, Loaded, Stored, UnitOfWork};
use super::{App, AppError, Caller, CommandContext};

/// A line as the customer asks for it; the price comes from the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLineInput {
    pub product_id: ProductId,
    pub quantity: i64,
}

/// Delivery and contact details: personal data, sealed before it enters an event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactDetails {
    pub recipient: Option<String>,
    pub phone: Option<String>,
    pub address: Option<String>,
    pub note: Option<String>,
}

/// An order a customer places in a store.
#[derive(Clone, Debug)]
pub struct PlaceOrder {
    pub store_id: StoreId,
    pub lines: Vec<OrderLineInput>,
    pub contact: Option<ContactDetails>,
}

/// Whom staff place an order for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderFor {
    /// A customer who already ordered in this store.
    KnownCustomer(AccountId),
    /// Someone at the counter, without an account: the order gets a customer id of its own.
    WalkIn,
}

impl App {
    /// A customer places an order for themselves, reserving stock for every line; refused as a
    /// whole if any line cannot be reserved (`StockError::OutOfStock` names the shortfall).
    #[tracing::instrument(skip(self, caller, order), fields(store_id = %order.store_id))]
    pub async fn place_order(
        &self,
        caller: &Caller,
        order: PlaceOrder,
    ) -> Result<Decided<OrderId>, AppError> {
        let ctx = caller.context(ActorRole::Customer);
        let store = self.stores.load(&order.store_id.to_string()).await?;
        self.place(&ctx, &store, caller.account_id(), order).await
    }

    /// Staff place an order on behalf of a customer of their store (or a walk-in). Only a
    /// customer this store already knows may be named: staff cannot attach an arbitrary
    /// account to their store and so reach its contact details.
    #[tracing::instrument(skip(self, access, order))]
    pub async fn place_order_for(
        &self,
        access: &StoreAccess<grant::PlaceOrdersForCustomers>,
        customer: OrderFor,
        order: StaffOrder,
    ) -> Result<Decided<OrderId>, AppError> {
        let customer_id = match customer {
            OrderFor::WalkIn => AccountId::new(),
            OrderFor::KnownCustomer(customer_id) => {
                let known =
                    customers::is_customer_of(&self.pool, access.store_id().0, customer_id.0)
                        .await?;
                if !known {
                    return Err(AppError::CustomerNotFound);
                }
                customer_id
            }
        };
        let order = PlaceOrder {
            store_id: access.store_id(),
            lines: order.lines,
            contact: order.contact,
        };
        // The Store loaded to authorize the caller, a moment ago in this request.
        self.place(access.ctx(), access.store(), customer_id, order)
            .await
    }

    async fn place(
        &self,
        ctx: &CommandContext,
        store: &Store,
        customer_id: AccountId,
        order: PlaceOrder,
    ) -> Result<Decided<OrderId>, AppError> {
        let now = super::now();
        let currency = store
            .currency()
            .ok_or(AppError::Store(StoreError::NotFound))?;
        if store.is_customer_blocked(customer_id) {
            return Err(StoreError::CustomerBlocked.into());
        }

        let mut lines = Vec::with_capacity(order.lines.len());
        let ids: Vec<String> = order
            .lines
            .iter()
            .map(|l| l.product_id.to_string())
            .collect();
        let products = self.products.load_all(&ids).await?;
        for (line, product) in order.lines.iter().zip(products) {
            if !product.is_created() || product.store_id() != order.store_id {
                return Err(ProductError::NotFound.into());
            }
            if !product.is_active() {
                return Err(ProductError::Archived.into());
            }
            let unit_price = product.price().ok_or(ProductError::NotFound)?;
            lines.push(LineRequest {
                product_id: line.product_id,
                quantity: line.quantity,
                unit_price,
            });
        }

        let order_id = OrderId::new();
        let contact = match &order.contact {
            Some(contact) => Some(self.personal_data.seal(customer_id, contact).await?),
            None => None,
        };
        let place = OrderCommand::Place {
            order_id,
            store_id: order.store_id,
            customer_id,
            currency,
            lines,
            contact,
            payment_due_by: now
                + chrono::Duration::minutes(i64::from(store.reservation_ttl_minutes())),
            at: now,
        };
        // Every rule of the order is checked before any stock is loaded.
        validate_placement(&place).await?;
        // Placements of one hot product fold into one commit (ADR 0010).
        let decided = self
            .events
            .decide_folded(
                ctx,
                Placement {
                    order_id,
                    place,
                    at: now,
                },
            )
            .await?;
        Ok(decided.map(|()| order_id))
    }

    /// A customer cancels their own order before it is paid: its stock is given back and a
    /// receipt still under review is voided.
    #[tracing::instrument(skip(self, caller))]
    pub async fn cancel_own_order(
        &self,
        caller: &Caller,
        order_id: OrderId,
        reason: Option<String>,
    ) -> Result<Decided<()>, AppError> {
        let at = super::now();
        let command = OrderCommand::Cancel {
            by: CancelledBy::Customer,
            actor_id: caller.account_id(),
            reason,
            at,
        };
        let settle = Settle::Release(ReleaseReason::OrderCancelled);
        let mut change = self.order_change(order_id, command, settle, at).await?;
        change.scope = Scope::Customer(caller.account_id());
        self.events
            .decide_folded(&caller.context(ActorRole::Customer), change)
            .await
    }

    /// Staff cancel an order of their store (before fulfilment): its stock is given back and a
    /// receipt still under review is voided.
    #[tracing::instrument(skip(self, access))]
    pub async fn cancel_order(
        &self,
        access: &StoreAccess<grant::CancelOrders>,
        order_id: OrderId,
        reason: Option<String>,
    ) -> Result<Decided<()>, AppError> {
        let at = super::now();
        let command = OrderCommand::Cancel {
            by: CancelledBy::Staff,
            actor_id: access.account_id(),
            reason,
            at,
        };
        let settle = Settle::Release(ReleaseReason::OrderCancelled);
        let mut change = self.order_change(order_id, command, settle, at).await?;
        change.scope = Scope::Store(access.store_id());
        self.events.decide_folded(access.ctx(), change).await
    }

    /// Expires an unpaid order whose payment deadline has passed and gives its stock back (the
    /// order-expiry process manager).
    #[tracing::instrument(skip(self, ctx))]
    pub(crate) async fn expire_order(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
        now: DateTime<Utc>,
    ) -> Result<(), AppError> {
        let change = self
            .order_change(
                order_id,
                OrderCommand::Expire { now },
                Settle::Release(ReleaseReason::OrderExpired),
                now,
            )
            .await?;
        self.events.decide_folded(ctx, change).await?;
        Ok(())
    }

    /// Marks a paid order of the store shipped; its reserved units leave the store.
    #[tracing::instrument(skip(self, access))]
    pub async fn fulfil_order(
        &self,
        access: &StoreAccess<grant::FulfilOrders>,
        order_id: OrderId,
    ) -> Result<Decided<()>, AppError> {
        let at = super::now();
        let mut change = self
            .order_change(order_id, OrderCommand::Fulfil { at }, Settle::Commit, at)
            .await?;
        change.scope = Scope::Store(access.store_id());
        self.events.decide_folded(access.ctx(), change).await
    }

    /// Marks a fulfilled order of the store completed.
    pub async fn complete_order(
        &self,
        access: &StoreAccess<grant::FulfilOrders>,
        order_id: OrderId,
    ) -> Result<Decided<()>, AppError> {
        let command = OrderCommand::Complete { at: super::now() };
        self.orders
            .execute_in(
                access.store_id(),
                &order_id.to_string(),
                command,
                access.ctx(),
            )
            .await
    }

    /// An order transition with its stock settlement. The order's products are read first (an
    /// order's lines never change) so the decision can queue on their stock like placements do.
    async fn order_change(
        &self,
        order_id: OrderId,
        command: OrderCommand,
        settle: Settle,
        at: DateTime<Utc>,
    ) -> Result<OrderChange, AppError> {
        let order = self.orders.load(&order_id.to_string()).await?;
        if order.status == OrderStatus::New {
            return Err(OrderError::NotFound.into());
        }
        Ok(OrderChange {
            order_id,
            products: order.lines.iter().map(|line| line.product_id).collect(),
            command,
            settle,
            scope: Scope::Any,
            at,
        })
    }
}

/// An order staff place: the lines and the delivery details.
#[derive(Clone, Debug)]
pub struct StaffOrder {
    pub lines: Vec<OrderLineInput>,
    pub contact: Option<ContactDetails>,
}

/// Whose orders a change may touch.
#[derive(Clone, Copy, Debug)]
enum Scope {
    /// The system's own (expiry).
    Any,
    /// Orders of this store (staff).
    Store(StoreId),
    /// This customer's own orders.
    Customer(AccountId),
}

/// Every line's reservation and the order, in one commit.
struct Placement {
    order_id: OrderId,
    /// `OrderCommand::Place`, already validated.
    place: OrderCommand,
    at: DateTime<Utc>,
}

impl Placement {
    fn lines(&self) -> &[LineRequest] {
        match &self.place {
            OrderCommand::Place { lines, .. } => lines,
            _ => &[],
        }
    }
}

impl Decision for Placement {
    type Outcome = ();

    fn serialise_on(&self) -> Vec<AggregateKey> {
        self.lines()
            .iter()
            .map(|line| AggregateKey::of::<Stock>(line.product_id))
            .collect()
    }

    async fn decide(&self, uow: &mut UnitOfWork<'_>) -> Result<(), AppError> {
        let mut lines: Vec<&LineRequest> = self.lines().iter().collect();
        lines.sort_by_key(|line| line.product_id);
        for line in lines {
            let mut stock = uow.load::<Stock>(line.product_id).await?;
            let reserve = StockCommand::Reserve {
                order_id: self.order_id,
                quantity: line.quantity,
                at: self.at,
            };
            uow.execute(&mut stock, reserve).await?;
        }
        let mut order = uow.create::<Order>(self.order_id);
        uow.execute(&mut order, self.place.clone()).await
    }
}

/// What happens to an order's reservations when it moves.
#[derive(Clone, Copy, Debug)]
enum Settle {
    Release(ReleaseReason),
    Commit,
}

/// An order's transition and its stock settlement (and, on cancellation, its receipt), in one
/// commit.
struct OrderChange {
    order_id: OrderId,
    products: Vec<ProductId>,
    command: OrderCommand,
    settle: Settle,
    scope: Scope,
    at: DateTime<Utc>,
}

impl Decision for OrderChange {
    type Outcome = ();

    fn serialise_on(&self) -> Vec<AggregateKey> {
        self.products
            .iter()
            .map(AggregateKey::of::<Stock>)
            .collect()
    }

    async fn decide(&self, uow: &mut UnitOfWork<'_>) -> Result<(), AppError> {
        let mut order: Loaded<Order> = uow.load(self.order_id).await?;
        let visible = match self.scope {
            Scope::Any => true,
            Scope::Store(store_id) => order.store_of() == Some(store_id),
            Scope::Customer(customer_id) => {
                order.store_of().is_some() && order.customer_id == customer_id
            }
        };
        if !visible {
            return Err(OrderError::NotFound.into());
        }
        let under_review = order.receipt_under_review;
        uow.execute(&mut order, self.command.clone()).await?;
        for line in &order.lines {
            let mut stock = uow.load::<Stock>(line.product_id).await?;
            let command = match self.settle {
                Settle::Release(reason) => StockCommand::Release {
                    order_id: self.order_id,
                    reason,
                    at: self.at,
                },
                Settle::Commit => StockCommand::Commit {
                    order_id: self.order_id,
                    at: self.at,
                },
            };
            uow.execute(&mut stock, command).await?;
        }
        // A receipt waiting for review when the order ends can no longer pay it.
        let ended = match order.status {
            OrderStatus::Cancelled => Some(VoidReason::OrderCancelled),
            OrderStatus::Expired => Some(VoidReason::OrderExpired),
            _ => None,
        };
        if let (Some(receipt_id), Some(reason)) = (under_review, ended) {
            let mut receipt = uow.load::<PaymentReceipt>(receipt_id).await?;
            let void = ReceiptCommand::Void {
                reason,
                at: self.at,
            };
            uow.execute(&mut receipt, void).await?;
        }
        Ok(())
    }
}
