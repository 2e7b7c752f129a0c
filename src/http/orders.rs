//! Orders: place on behalf of a customer, list and filter, read with timeline, cancel, fulfil,
//! complete.

use std::sync::Arc;

use aggregates::{AccountId, OrderId, ProductId, StoreId};
use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, Tags};
use uuid::Uuid;

use projections::read_models::orders::queries::{self as orders, OrderFilter};

use super::auth::BearerAuth;
use super::context::{caller, on_resource};
use super::error::ApiError;
use super::types::{decode_cursor, page_of, page_size, Changed, MoneyView, Page, PendingView};
use crate::app::{
    grant, App, AppError, Caller, ContactDetails, Grant, OrderFor, OrderLineInput, Resource,
    StaffOrder, StoreAccess,
};

/// The read model order views come from.
const ORDERS: &str = "orders";

#[derive(Tags)]
enum ApiTags {
    /// Orders and their life cycle.
    Orders,
}

/// Where an order stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[oai(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatusName {
    AwaitingPayment,
    ReceiptSubmitted,
    Paid,
    Fulfilled,
    Completed,
    Cancelled,
    Expired,
}

impl OrderStatusName {
    fn as_str(self) -> &'static str {
        match self {
            OrderStatusName::AwaitingPayment => "AWAITING_PAYMENT",
            OrderStatusName::ReceiptSubmitted => "RECEIPT_SUBMITTED",
            OrderStatusName::Paid => "PAID",
            OrderStatusName::Fulfilled => "FULFILLED",
            OrderStatusName::Completed => "COMPLETED",
            OrderStatusName::Cancelled => "CANCELLED",
            OrderStatusName::Expired => "EXPIRED",
        }
    }
}

/// A line to order; the price is the product's current one.
#[derive(Debug, Object)]
pub struct OrderLineRequest {
    pub product_id: Uuid,
    #[oai(validator(minimum(value = "1"), maximum(value = "1000000")))]
    pub quantity: i64,
}

/// Delivery and contact details (personal data: stored encrypted, erasable).
#[derive(Debug, Object)]
pub struct ContactRequest {
    #[oai(validator(max_length = 200))]
    pub recipient: Option<String>,
    #[oai(validator(max_length = 50))]
    pub phone: Option<String>,
    #[oai(validator(max_length = 1000))]
    pub address: Option<String>,
    #[oai(validator(max_length = 1000))]
    pub note: Option<String>,
}

/// An order to place on behalf of a customer.
#[derive(Debug, Object)]
pub struct PlaceOrderRequest {
    /// The customer's account; a walk-in customer (a new id) when absent.
    pub customer_id: Option<Uuid>,
    #[oai(validator(min_items = 1, max_items = 100))]
    pub lines: Vec<OrderLineRequest>,
    pub contact: Option<ContactRequest>,
}

/// Why a staff member cancels.
#[derive(Debug, Object)]
pub struct CancelRequest {
    #[oai(validator(max_length = 2000))]
    pub reason: Option<String>,
}

/// A line as placed, with its derived total.
#[derive(Debug, Object)]
#[oai(rename = "OrderLine")]
pub struct OrderLineView {
    pub product_id: Uuid,
    pub quantity: i64,
    pub unit_price_minor: i64,
    pub line_total_minor: i64,
}

/// One event in an order's life, with who did it and through what.
#[derive(Debug, Object)]
#[oai(rename = "OrderTimelineEntry")]
pub struct TimelineView {
    pub global_position: i64,
    pub event_type: String,
    pub status_after: String,
    #[oai(skip_serializing_if_is_none)]
    pub actor_id: Option<Uuid>,
    pub actor_role: String,
    pub channel: String,
    pub detail: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

/// An order, as the orders read model shows it.
#[derive(Debug, Object)]
#[oai(rename = "Order")]
pub struct OrderView {
    pub order_id: Uuid,
    pub store_id: Uuid,
    pub customer_id: Uuid,
    pub status: String,
    pub total: MoneyView,
    pub lines: Vec<OrderLineView>,
    /// Whether delivery/contact details were given (they are personal data, not shown here).
    pub has_contact: bool,
    #[oai(skip_serializing_if_is_none)]
    pub receipt_id: Option<Uuid>,
    #[oai(skip_serializing_if_is_none)]
    pub receipt_status: Option<String>,
    pub placed_at: DateTime<Utc>,
    pub payment_due_by: DateTime<Utc>,
    #[oai(skip_serializing_if_is_none)]
    pub receipt_submitted_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    pub paid_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    pub fulfilled_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    pub completed_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    pub cancelled_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    pub expired_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    pub cancelled_by: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub status_reason: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// Every event of the order, oldest first (only on `GET /orders/{id}`).
    #[oai(skip_serializing_if_is_none)]
    pub timeline: Option<Vec<TimelineView>>,
}

impl From<orders::TimelineEntry> for TimelineView {
    fn from(entry: orders::TimelineEntry) -> Self {
        Self {
            global_position: entry.global_position,
            event_type: entry.event_type,
            status_after: entry.status_after,
            actor_id: entry.actor_id,
            actor_role: entry.actor_role,
            channel: entry.channel,
            detail: entry.detail,
            recorded_at: entry.recorded_at,
        }
    }
}

impl From<orders::Order> for OrderView {
    fn from(row: orders::Order) -> Self {
        Self {
            order_id: row.order_id,
            store_id: row.store_id,
            customer_id: row.customer_id,
            status: row.status,
            total: MoneyView::new(row.total_minor, row.currency),
            lines: row
                .lines
                .into_iter()
                .map(|l| OrderLineView {
                    product_id: l.product_id,
                    quantity: l.quantity,
                    unit_price_minor: l.unit_price_minor,
                    line_total_minor: l.line_total_minor,
                })
                .collect(),
            has_contact: row.has_contact,
            receipt_id: row.receipt_id,
            receipt_status: row.receipt_status,
            placed_at: row.placed_at,
            payment_due_by: row.payment_due_by,
            receipt_submitted_at: row.receipt_submitted_at,
            paid_at: row.paid_at,
            fulfilled_at: row.fulfilled_at,
            completed_at: row.completed_at,
            cancelled_at: row.cancelled_at,
            expired_at: row.expired_at,
            cancelled_by: row.cancelled_by,
            status_reason: row.status_reason,
            updated_at: row.updated_at,
            timeline: None,
        }
    }
}

#[derive(ApiResponse)]
pub enum OrderPlaced {
    /// The order is placed and its stock reserved until `payment_due_by`.
    #[oai(status = 201)]
    Created(Json<OrderView>, #[oai(header = "Location")] String),
    /// The order is placed, but the orders read model did not show it in time (2 s by
    /// default): GET `Location` shortly (do not place it again).
    #[oai(status = 202)]
    Pending(Json<PendingView>, #[oai(header = "Location")] String),
}

/// Newest or oldest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum SortOrder {
    Desc,
    Asc,
}

pub struct OrdersApi {
    pub app: Arc<App>,
}

fn order_not_found() -> ApiError {
    ApiError::not_found("order-not-found", "no such order")
}

impl OrdersApi {
    /// Proof of `P` on an order's store; other stores' orders do not exist for the caller.
    async fn on_order<P: Grant>(
        &self,
        caller: &Caller,
        order_id: OrderId,
    ) -> Result<StoreAccess<P>, ApiError> {
        on_resource(
            &self.app,
            caller,
            Resource::Order(order_id),
            order_not_found,
        )
        .await
    }

    /// The order's view once the orders read model has reached `position` (`None`: not
    /// within the wait).
    async fn order_after<P: Grant>(
        &self,
        access: &StoreAccess<P>,
        order_id: OrderId,
        position: Option<i64>,
    ) -> Result<Option<OrderView>, ApiError> {
        let order = self
            .app
            .read_after(&[ORDERS], position, || {
                orders::order(&self.app.pool, order_id.0)
            })
            .await?;
        Ok(order
            .filter(|o| o.store_id == access.store_id().0)
            .map(OrderView::from))
    }

    /// The answer to a change of an order: its view once the read model shows the change.
    async fn changed<P: Grant>(
        &self,
        access: &StoreAccess<P>,
        order_id: OrderId,
        position: Option<i64>,
    ) -> Result<Changed<OrderView>, ApiError> {
        Ok(Changed::of(
            self.order_after(access, order_id, position).await?,
            format!("/api/v1/orders/{order_id}"),
            position,
        ))
    }
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Orders")]
impl OrdersApi {
    /// Place an order on behalf of a customer: every line's stock is reserved, or nothing is
    /// (a shortage names the product and how many are available).
    #[oai(
        path = "/stores/:store_id/orders",
        method = "post",
        operation_id = "orders_place"
    )]
    async fn place(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Path<Uuid>,
        body: Json<PlaceOrderRequest>,
    ) -> Result<OrderPlaced, ApiError> {
        let caller = caller(req, auth.0);
        let store_id = StoreId(store_id.0);
        let access = self
            .app
            .authorize::<grant::PlaceOrdersForCustomers>(&caller, store_id)
            .await?;
        let body = body.0;
        let customer = match body.customer_id {
            Some(id) => OrderFor::KnownCustomer(AccountId(id)),
            None => OrderFor::WalkIn,
        };
        let order = StaffOrder {
            lines: body
                .lines
                .iter()
                .map(|l| OrderLineInput {
                    product_id: ProductId(l.product_id),
                    quantity: l.quantity,
                })
                .collect(),
            contact: body.contact.map(|c| ContactDetails {
                recipient: c.recipient,
                phone: c.phone,
                address: c.address,
                note: c.note,
            }),
        };
        let written = self.app.place_order_for(&access, customer, order).await?;
        let order_id = written.outcome;
        let location = format!("/api/v1/orders/{order_id}");
        Ok(
            match self
                .order_after(&access, order_id, written.position)
                .await?
            {
                Some(view) => OrderPlaced::Created(Json(view), location),
                None => OrderPlaced::Pending(
                    Json(PendingView::new(location.clone(), written.position)),
                    location,
                ),
            },
        )
    }

    /// The store's orders, newest first by default; filter by status, customer and time.
    #[oai(
        path = "/stores/:store_id/orders",
        method = "get",
        operation_id = "orders_list"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Path<Uuid>,
        status: Query<Option<OrderStatusName>>,
        customer_id: Query<Option<Uuid>>,
        /// Placed at or after (RFC 3339).
        from: Query<Option<DateTime<Utc>>>,
        /// Placed before (RFC 3339).
        to: Query<Option<DateTime<Utc>>>,
        /// By placement time: `desc` (default) or `asc`.
        sort: Query<Option<SortOrder>>,
        cursor: Query<Option<String>>,
        /// Page size, 1 to 200 (default 50).
        limit: Query<Option<u32>>,
    ) -> Result<Json<Page<OrderView>>, ApiError> {
        let caller = caller(req, auth.0);
        let access = self
            .app
            .authorize::<grant::ViewOrders>(&caller, StoreId(store_id.0))
            .await?;
        let limit = page_size(limit.0);
        let after: Option<(DateTime<Utc>, Uuid)> =
            cursor.0.as_deref().map(decode_cursor).transpose()?;
        let filter = OrderFilter {
            status: status.0.map(|s| s.as_str()),
            customer_id: customer_id.0,
            from: from.0,
            to: to.0,
            ascending: sort.0 == Some(SortOrder::Asc),
        };
        let rows = orders::orders(
            &self.app.pool,
            access.store_id().0,
            &filter,
            after,
            limit + 1,
        )
        .await
        .map_err(AppError::from)?;
        Ok(Json(page_of(
            rows,
            limit,
            |o| (o.placed_at, o.order_id),
            OrderView::from,
        )))
    }

    /// One order with its timeline.
    #[oai(
        path = "/orders/:order_id",
        method = "get",
        operation_id = "orders_get"
    )]
    async fn get(
        &self,
        req: &Request,
        auth: BearerAuth,
        order_id: Path<Uuid>,
    ) -> Result<Json<OrderView>, ApiError> {
        let caller = caller(req, auth.0);
        let order_id = order_id.0;
        // An order placed a moment ago may not be in the read model yet: wait for it, briefly.
        let order = self
            .app
            .read_projected(&[ORDERS], "Order", &order_id.to_string(), || {
                orders::order(&self.app.pool, order_id)
            })
            .await?
            .ok_or_else(order_not_found)?;
        self.app
            .authorize_visible::<grant::ViewOrders>(&caller, StoreId(order.store_id))
            .await?
            .ok_or_else(order_not_found)?;
        let timeline = orders::timeline(&self.app.pool, order_id)
            .await
            .map_err(AppError::from)?;
        let mut view = OrderView::from(order);
        view.timeline = Some(timeline.into_iter().map(TimelineView::from).collect());
        Ok(Json(view))
    }

    /// Cancel an order before it is fulfilled; its reserved stock is released.
    #[oai(
        path = "/orders/:order_id/cancel",
        method = "post",
        operation_id = "orders_cancel"
    )]
    async fn cancel(
        &self,
        req: &Request,
        auth: BearerAuth,
        order_id: Path<Uuid>,
        body: Json<CancelRequest>,
    ) -> Result<Changed<OrderView>, ApiError> {
        let caller = caller(req, auth.0);
        let order_id = OrderId(order_id.0);
        let access = self
            .on_order::<grant::CancelOrders>(&caller, order_id)
            .await?;
        let written = self
            .app
            .cancel_order(&access, order_id, body.0.reason)
            .await?;
        self.changed(&access, order_id, written.position).await
    }

    /// Mark a paid order fulfilled (handed over or shipped); its reserved stock leaves the shelf.
    #[oai(
        path = "/orders/:order_id/fulfil",
        method = "post",
        operation_id = "orders_fulfil"
    )]
    async fn fulfil(
        &self,
        req: &Request,
        auth: BearerAuth,
        order_id: Path<Uuid>,
    ) -> Result<Changed<OrderView>, ApiError> {
        let caller = caller(req, auth.0);
        let order_id = OrderId(order_id.0);
        let access = self
            .on_order::<grant::FulfilOrders>(&caller, order_id)
            .await?;
        let written = self.app.fulfil_order(&access, order_id).await?;
        self.changed(&access, order_id, written.position).await
    }

    /// Mark a fulfilled order completed.
    #[oai(
        path = "/orders/:order_id/complete",
        method = "post",
        operation_id = "orders_complete"
    )]
    async fn complete(
        &self,
        req: &Request,
        auth: BearerAuth,
        order_id: Path<Uuid>,
    ) -> Result<Changed<OrderView>, ApiError> {
        let caller = caller(req, auth.0);
        let order_id = OrderId(order_id.0);
        let access = self
            .on_order::<grant::FulfilOrders>(&caller, order_id)
            .await?;
        let written = self.app.complete_order(&access, order_id).await?;
        self.changed(&access, order_id, written.position).await
    }
}
