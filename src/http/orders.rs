//! Orders: place on behalf of a customer, list and filter, read with timeline, cancel, fulfil,
//! complete.

use std::sync::Arc;

use aggregates::order::Order;
use aggregates::{AccountId, OrderId, ProductId, StoreId};
use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, Tags};
use uuid::Uuid;

use super::auth::BearerAuth;
use super::context::{caller, on_resource};
use super::error::ApiError;
use super::types::{decode_cursor, page_of, page_size, MoneyView, Page};
use crate::app::{
    grant, App, AppError, Caller, ContactDetails, Grant, OrderFor, OrderLineInput, Resource,
    StaffOrder, StoreAccess,
};

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
#[derive(Debug, Object, serde::Deserialize)]
#[oai(rename = "OrderLine")]
pub struct OrderLineView {
    pub product_id: Uuid,
    pub quantity: i64,
    pub unit_price_minor: i64,
    pub line_total_minor: i64,
}

/// An order as the write side holds it right after a command.
#[derive(Debug, Object)]
#[oai(rename = "OrderState")]
pub struct OrderStateView {
    pub order_id: Uuid,
    pub store_id: Uuid,
    pub customer_id: Uuid,
    pub status: String,
    pub total: MoneyView,
    pub lines: Vec<OrderLineView>,
    pub payment_due_by: DateTime<Utc>,
}

/// One event in an order's life, with who did it and through what.
#[derive(Debug, Object, sqlx::FromRow)]
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

#[derive(sqlx::FromRow)]
struct OrderRow {
    order_id: Uuid,
    store_id: Uuid,
    customer_id: Uuid,
    status: String,
    currency: String,
    total_minor: i64,
    lines: sqlx::types::Json<Vec<OrderLineView>>,
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
}

impl From<OrderRow> for OrderView {
    fn from(row: OrderRow) -> Self {
        Self {
            order_id: row.order_id,
            store_id: row.store_id,
            customer_id: row.customer_id,
            status: row.status,
            total: MoneyView::new(row.total_minor, row.currency),
            lines: row.lines.0,
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

const ORDER_COLUMNS: &str = "order_id, store_id, customer_id, status, currency, total_minor, \
     lines, has_contact, receipt_id, receipt_status, placed_at, payment_due_by, \
     receipt_submitted_at, paid_at, fulfilled_at, completed_at, cancelled_at, expired_at, \
     cancelled_by, status_reason, updated_at";

#[derive(ApiResponse)]
pub enum OrderPlaced {
    /// The order is placed and its stock reserved until `payment_due_by`.
    #[oai(status = 201)]
    Created(Json<OrderStateView>, #[oai(header = "Location")] String),
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

fn state_view(order: &Order) -> Result<OrderStateView, ApiError> {
    let total = order.total().ok_or_else(order_not_found)?;
    Ok(OrderStateView {
        order_id: order.order_id.0,
        store_id: order.store_id.0,
        customer_id: order.customer_id.0,
        status: order.status.as_str().to_owned(),
        total: total.into(),
        lines: order
            .lines
            .iter()
            .map(|l| OrderLineView {
                product_id: l.product_id.0,
                quantity: l.quantity,
                unit_price_minor: l.unit_price_minor,
                line_total_minor: l.line_total_minor,
            })
            .collect(),
        payment_due_by: order.payment_due_by.unwrap_or_default(),
    })
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

    /// The order as the write side holds it right after a command.
    async fn state<P: Grant>(
        &self,
        access: &StoreAccess<P>,
        order_id: OrderId,
    ) -> Result<Json<OrderStateView>, ApiError> {
        let order = self.app.order_state(access, order_id).await?;
        Ok(Json(state_view(&order)?))
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
        let order_id = self.app.place_order_for(&access, customer, order).await?;
        let Json(view) = self.state(&access, order_id).await?;
        Ok(OrderPlaced::Created(
            Json(view),
            format!("/api/v1/orders/{order_id}"),
        ))
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
        let store_id = StoreId(store_id.0);
        self.app
            .authorize::<grant::ViewOrders>(&caller, store_id)
            .await?;
        let limit = page_size(limit.0);
        let after: Option<(DateTime<Utc>, Uuid)> =
            cursor.0.as_deref().map(decode_cursor).transpose()?;
        let ascending = sort.0 == Some(SortOrder::Asc);
        let (direction, comparison) = if ascending {
            ("asc", ">")
        } else {
            ("desc", "<")
        };
        let rows: Vec<OrderRow> = sqlx::query_as(&format!(
            "select {ORDER_COLUMNS} from orders where store_id = $1 \
               and ($2::text is null or status = $2) \
               and ($3::uuid is null or customer_id = $3) \
               and ($4::timestamptz is null or placed_at >= $4) \
               and ($5::timestamptz is null or placed_at < $5) \
               and ($6::timestamptz is null or (placed_at, order_id) {comparison} ($6, $7)) \
             order by placed_at {direction}, order_id {direction} limit $8"
        ))
        .bind(store_id.0)
        .bind(status.0.map(|s| s.as_str()))
        .bind(customer_id.0)
        .bind(from.0)
        .bind(to.0)
        .bind(after.map(|a| a.0))
        .bind(after.map(|a| a.1))
        .bind(limit + 1)
        .fetch_all(&self.app.pool)
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
        let row: OrderRow = self
            .app
            .fetch_projected(
                "orders",
                "Order",
                order_id.0,
                &format!("select {ORDER_COLUMNS} from orders where order_id = $1"),
            )
            .await?
            .ok_or_else(order_not_found)?;
        self.app
            .authorize_visible::<grant::ViewOrders>(&caller, StoreId(row.store_id))
            .await?
            .ok_or_else(order_not_found)?;
        let timeline: Vec<TimelineView> = sqlx::query_as(
            "select global_position, event_type, status_after, actor_id, actor_role, channel, \
             detail, recorded_at from order_timeline where order_id = $1 order by global_position",
        )
        .bind(order_id.0)
        .fetch_all(&self.app.pool)
        .await
        .map_err(AppError::from)?;
        let mut view = OrderView::from(row);
        view.timeline = Some(timeline);
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
    ) -> Result<Json<OrderStateView>, ApiError> {
        let caller = caller(req, auth.0);
        let order_id = OrderId(order_id.0);
        let access = self
            .on_order::<grant::CancelOrders>(&caller, order_id)
            .await?;
        self.app
            .cancel_order(&access, order_id, body.0.reason)
            .await?;
        self.state(&access, order_id).await
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
    ) -> Result<Json<OrderStateView>, ApiError> {
        let caller = caller(req, auth.0);
        let order_id = OrderId(order_id.0);
        let access = self
            .on_order::<grant::FulfilOrders>(&caller, order_id)
            .await?;
        self.app.fulfil_order(&access, order_id).await?;
        self.state(&access, order_id).await
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
    ) -> Result<Json<OrderStateView>, ApiError> {
        let caller = caller(req, auth.0);
        let order_id = OrderId(order_id.0);
        let access = self
            .on_order::<grant::FulfilOrders>(&caller, order_id)
            .await?;
        self.app.complete_order(&access, order_id).await?;
        self.state(&access, order_id).await
    }
}
