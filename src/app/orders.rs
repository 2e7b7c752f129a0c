//! Orders, and keeping stock reservations in step with them.
//!
//! Placing an order is a saga over several aggregates (docs/adr/0002-order-stock-reservations.md):
//!
//! 1. validate the whole order in memory with the Order aggregate's own rules (no events yet);
//! 2. reserve every line on its product's Stock, in product-id order, each keyed by the new
//!    order's id (idempotent, so any step can be retried);
//! 3. on any refusal, release what was reserved (`OrderNotPlaced`) and report the refusal;
//! 4. record the order (`OrderPlaced`).
//!
//! Stock can never oversell: each reservation is checked and appended atomically on its Stock
//! aggregate (optimistic concurrency). No reservation leaks: if the process stops between 2 and
//! 4, the reservation sweep (`reservations`) releases reservations whose order never came into
//! being; cancellation, expiry and fulfilment release or commit reservations here, and the same
//! sweep finishes the job if the process stopped half-way.

use std::time::{Duration, Instant};

use aggregates::order::{validate_placement, CancelledBy, LineRequest, OrderCommand, OrderError};
use aggregates::product::ProductError;
use aggregates::stock::{ReleaseReason, StockCommand};
use aggregates::store::StoreError;
use aggregates::{AccountId, OrderId, ProductId, StoreId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{App, AppError, CommandContext};

/// Placement gives up (and releases its reservations) if reserving took longer than this, so it
/// can never record an order after the sweep released its reservations (the sweep waits at least
/// `--orphan-reservation-grace-seconds`, which must exceed this).
pub const PLACEMENT_DEADLINE: Duration = Duration::from_secs(30);

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

/// An order to place.
#[derive(Clone, Debug)]
pub struct PlaceOrder {
    pub store_id: StoreId,
    pub customer_id: AccountId,
    pub lines: Vec<OrderLineInput>,
    pub contact: Option<ContactDetails>,
}

impl App {
    /// Places an order, reserving stock for every line; refused as a whole if any line cannot
    /// be reserved (`StockError::OutOfStock` names the shortfall).
    #[tracing::instrument(skip(self, ctx, order), fields(store_id = %order.store_id))]
    pub async fn place_order(
        &self,
        ctx: &CommandContext,
        order: PlaceOrder,
    ) -> Result<OrderId, AppError> {
        let started = Instant::now();
        let now = super::now();
        let store = self.stores.load(&order.store_id.to_string()).await?;
        let currency = store
            .currency()
            .ok_or(AppError::Store(StoreError::NotFound))?;
        if store.is_customer_blocked(order.customer_id) {
            return Err(StoreError::CustomerBlocked.into());
        }

        let mut lines = Vec::with_capacity(order.lines.len());
        for line in &order.lines {
            let product = self.products.load(&line.product_id.to_string()).await?;
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
            Some(contact) => Some(self.personal_data.seal(order.customer_id, contact).await?),
            None => None,
        };
        let place = OrderCommand::Place {
            order_id,
            store_id: order.store_id,
            customer_id: order.customer_id,
            currency,
            lines: lines.clone(),
            contact,
            payment_due_by: now
                + chrono::Duration::minutes(i64::from(store.reservation_ttl_minutes())),
            at: now,
        };
        // Every rule of the order is checked before any stock is touched.
        validate_placement(&place).await?;

        let mut reserved = Vec::with_capacity(lines.len());
        let mut by_product: Vec<&LineRequest> = lines.iter().collect();
        by_product.sort_by_key(|line| line.product_id);
        for line in by_product {
            let reserve = StockCommand::Reserve {
                order_id,
                quantity: line.quantity,
                at: now,
            };
            if let Err(err) = self
                .stock
                .execute(&line.product_id.to_string(), reserve, ctx)
                .await
            {
                self.release_all(ctx, order_id, &reserved, ReleaseReason::OrderNotPlaced)
                    .await;
                return Err(err);
            }
            reserved.push(line.product_id);
        }

        if started.elapsed() > PLACEMENT_DEADLINE {
            self.release_all(ctx, order_id, &reserved, ReleaseReason::OrderNotPlaced)
                .await;
            return Err(AppError::Conflict {
                aggregate: "Order",
                id: order_id.to_string(),
            });
        }
        if let Err(err) = self.orders.execute(&order_id.to_string(), place, ctx).await {
            self.release_all(ctx, order_id, &reserved, ReleaseReason::OrderNotPlaced)
                .await;
            return Err(err);
        }
        Ok(order_id)
    }

    /// Cancels an order and gives its stock back.
    #[tracing::instrument(skip(self, ctx))]
    pub async fn cancel_order(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
        by: CancelledBy,
        reason: Option<String>,
    ) -> Result<(), AppError> {
        let command = OrderCommand::Cancel {
            by,
            actor_id: ctx.actor.account_id.unwrap_or_default(),
            reason,
            at: super::now(),
        };
        self.orders
            .execute(&order_id.to_string(), command, ctx)
            .await?;
        let products = self.order_products(order_id).await?;
        self.release_all(ctx, order_id, &products, ReleaseReason::OrderCancelled)
            .await;
        Ok(())
    }

    /// Expires an unpaid order whose payment deadline has passed and gives its stock back.
    #[tracing::instrument(skip(self, ctx))]
    pub async fn expire_order(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
        now: DateTime<Utc>,
    ) -> Result<(), AppError> {
        self.orders
            .execute(&order_id.to_string(), OrderCommand::Expire { now }, ctx)
            .await?;
        let products = self.order_products(order_id).await?;
        self.release_all(ctx, order_id, &products, ReleaseReason::OrderExpired)
            .await;
        Ok(())
    }

    /// Marks a paid order shipped; its reserved units leave the store.
    #[tracing::instrument(skip(self, ctx))]
    pub async fn fulfil_order(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
    ) -> Result<(), AppError> {
        let at = super::now();
        self.orders
            .execute(&order_id.to_string(), OrderCommand::Fulfil { at }, ctx)
            .await?;
        for product_id in self.order_products(order_id).await? {
            let commit = StockCommand::Commit { order_id, at };
            if let Err(err) = self
                .stock
                .execute(&product_id.to_string(), commit, ctx)
                .await
            {
                // The sweep commits it later; the order is fulfilled either way.
                tracing::warn!(%order_id, %product_id, error = %err, "committing stock failed");
            }
        }
        Ok(())
    }

    /// Marks a fulfilled order completed.
    pub async fn complete_order(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
    ) -> Result<(), AppError> {
        let command = OrderCommand::Complete { at: super::now() };
        self.orders
            .execute(&order_id.to_string(), command, ctx)
            .await
    }

    async fn order_products(&self, order_id: OrderId) -> Result<Vec<ProductId>, AppError> {
        let order = self.orders.load(&order_id.to_string()).await?;
        if order.lines.is_empty() {
            return Err(OrderError::NotFound.into());
        }
        Ok(order.lines.iter().map(|line| line.product_id).collect())
    }

    /// Releases an order's reservations; failures are logged and left to the sweep.
    pub(super) async fn release_all(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
        products: &[ProductId],
        reason: ReleaseReason,
    ) {
        for product_id in products {
            let release = StockCommand::Release {
                order_id,
                reason,
                at: super::now(),
            };
            if let Err(err) = self
                .stock
                .execute(&product_id.to_string(), release, ctx)
                .await
            {
                tracing::warn!(%order_id, %product_id, error = %err, "releasing a reservation failed; the sweep will retry");
            }
        }
    }
}
