//! A store's customers: list with lifetime value, profile with orders, block and unblock (one
//! by one or in bulk, with a result per customer).

use std::collections::HashMap;
use std::sync::Arc;

use aggregates::{AccountId, StoreId};
use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi, Tags};
use uuid::Uuid;

use projections::read_models::customers::queries::{self as customers, CustomerFilter};
use projections::read_models::orders::queries as orders;

use super::auth::BearerAuth;
use super::context::caller;
use super::error::ApiError;
use super::types::{decode_cursor, page_of, page_size, BulkOutcome, BulkResponse, MoneyView, Page};
use crate::app::grant;
use crate::app::{App, AppError, Contact, StoreAccess};

/// The read model a customer's block shows in.
const CATALOG: &str = "catalog";

/// How many of a customer's orders their profile shows.
const RECENT_ORDERS: i64 = 20;

#[derive(Tags)]
enum ApiTags {
    /// Customers, lifetime value, blocking.
    Customers,
}

/// A customer of the store.
#[derive(Debug, Object)]
#[oai(rename = "Customer")]
pub struct CustomerView {
    pub customer_id: Uuid,
    pub first_order_at: DateTime<Utc>,
    pub last_order_at: DateTime<Utc>,
    pub orders: i32,
    pub paid_orders: i32,
    /// Revenue from this customer's paid orders.
    pub lifetime_value: MoneyView,
    pub blocked: bool,
    #[oai(skip_serializing_if_is_none)]
    pub blocked_reason: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub blocked_at: Option<DateTime<Utc>>,
    pub contact: ContactView,
}

/// How to reach a customer, from their account. Name, e-mail and Telegram user id are absent
/// when unknown or when the person's data was erased (`erased`).
#[derive(Debug, Default, Object)]
#[oai(rename = "Contact")]
pub struct ContactView {
    #[oai(skip_serializing_if_is_none)]
    pub display_name: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub email: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub telegram_user_id: Option<i64>,
    pub erased: bool,
}

impl From<Contact> for ContactView {
    fn from(contact: Contact) -> Self {
        Self {
            display_name: contact.display_name,
            email: contact.email,
            telegram_user_id: contact.telegram_user_id,
            erased: contact.erased,
        }
    }
}

impl CustomerView {
    /// The view of `row` with its contact from `contacts`; a lifetime value past the API's
    /// int64 amounts is refused (see [`super::analytics::sum`]).
    fn of(
        row: customers::Customer,
        contacts: &mut HashMap<Uuid, Contact>,
    ) -> Result<Self, ApiError> {
        let lifetime_value = super::analytics::sum(row.lifetime_value_minor, &row.currency)?;
        let contact = contacts.remove(&row.customer_id).unwrap_or_default();
        Ok(Self {
            contact: contact.into(),
            customer_id: row.customer_id,
            first_order_at: row.first_order_at,
            last_order_at: row.last_order_at,
            orders: row.orders,
            paid_orders: row.paid_orders,
            lifetime_value,
            blocked: row.blocked_at.is_some(),
            blocked_reason: row.blocked_reason,
            blocked_at: row.blocked_at,
        })
    }
}

/// An order in a customer's profile.
#[derive(Debug, Object)]
pub struct CustomerOrder {
    pub order_id: Uuid,
    pub status: String,
    pub total_minor: i64,
    pub currency: String,
    pub placed_at: DateTime<Utc>,
}

impl From<orders::OrderSummary> for CustomerOrder {
    fn from(order: orders::OrderSummary) -> Self {
        Self {
            order_id: order.order_id,
            status: order.status,
            total_minor: order.total_minor,
            currency: order.currency,
            placed_at: order.placed_at,
        }
    }
}

/// A customer with their recent orders.
#[derive(Debug, Object)]
pub struct CustomerProfile {
    pub customer: CustomerView,
    /// The 20 most recent orders in this store.
    pub recent_orders: Vec<CustomerOrder>,
}

/// Why a customer is blocked.
#[derive(Debug, Object)]
pub struct BlockRequest {
    #[oai(validator(min_length = 1, max_length = 2000))]
    pub reason: String,
}

/// Block or unblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum BlockAction {
    Block,
    Unblock,
}

/// Block or unblock many customers at once.
#[derive(Debug, Object)]
pub struct BulkCustomersRequest {
    pub action: BlockAction,
    #[oai(validator(min_items = 1, max_items = 100, unique_items))]
    pub customer_ids: Vec<Uuid>,
    /// Required to block.
    #[oai(validator(min_length = 1, max_length = 2000))]
    pub reason: Option<String>,
}

pub struct CustomersApi {
    pub app: Arc<App>,
}

fn customer_not_found() -> ApiError {
    ApiError::not_found("customer-not-found", "no such customer in this store")
}

impl CustomersApi {
    /// Blocks or unblocks one customer; the global position of the change.
    async fn block(
        &self,
        access: &StoreAccess<grant::ManageCustomers>,
        customer_id: Uuid,
        action: BlockAction,
        reason: Option<String>,
    ) -> Result<Option<i64>, ApiError> {
        let blocked = action == BlockAction::Block;
        if blocked && reason.is_none() {
            return Err(AppError::invalid("reason", "a block needs a reason").into());
        }
        let written = self
            .app
            .set_customer_blocked(access, AccountId(customer_id), blocked, reason)
            .await?;
        Ok(written.position)
    }
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Customers")]
impl CustomersApi {
    /// The store's customers, most recent first, with lifetime value.
    #[oai(
        path = "/stores/:store_id/customers",
        method = "get",
        operation_id = "customers_list"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Path<Uuid>,
        /// Only blocked (true) or only not blocked (false) customers.
        blocked: Query<Option<bool>>,
        /// Only the customer with this Telegram user id.
        telegram_user_id: Query<Option<i64>>,
        cursor: Query<Option<String>>,
        /// Page size, 1 to 200 (default 50).
        limit: Query<Option<u32>>,
    ) -> Result<Json<Page<CustomerView>>, ApiError> {
        let caller = caller(req, auth.0);
        let access = self
            .app
            .authorize::<grant::ViewCustomers>(&caller, StoreId(store_id.0))
            .await?;
        let limit = page_size(limit.0);
        let after: Option<(DateTime<Utc>, Uuid)> =
            cursor.0.as_deref().map(decode_cursor).transpose()?;
        // Telegram ids are looked up where erasure can remove them (not in the read model).
        let only = match telegram_user_id.0 {
            Some(id) => Some(
                self.app
                    .account_by_telegram(id)
                    .await?
                    .map(|account| account.0)
                    .into_iter()
                    .collect(),
            ),
            None => None,
        };
        let filter = CustomerFilter {
            blocked: blocked.0,
            only,
        };
        let rows = customers::customers(
            &self.app.pool,
            access.store_id().0,
            &filter,
            after,
            limit + 1,
        )
        .await
        .map_err(AppError::from)?;
        let people: Vec<Uuid> = rows.iter().map(|c| c.customer_id).collect();
        let mut contacts = self.app.contacts(&people).await?;
        let views = rows
            .into_iter()
            .map(|row| CustomerView::of(row, &mut contacts))
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok(Json(page_of(
            views,
            limit,
            |c| (c.last_order_at, c.customer_id),
            |c| c,
        )))
    }

    /// One customer: lifetime value, block status and recent orders.
    #[oai(
        path = "/stores/:store_id/customers/:customer_id",
        method = "get",
        operation_id = "customers_get"
    )]
    async fn get(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Path<Uuid>,
        customer_id: Path<Uuid>,
    ) -> Result<Json<CustomerProfile>, ApiError> {
        let caller = caller(req, auth.0);
        let access = self
            .app
            .authorize::<grant::ViewCustomers>(&caller, StoreId(store_id.0))
            .await?;
        let store_id = access.store_id().0;
        let customer = customers::customer(&self.app.pool, store_id, customer_id.0)
            .await
            .map_err(AppError::from)?
            .ok_or_else(customer_not_found)?;
        let mut contacts = self.app.contacts(&[customer.customer_id]).await?;
        let recent_orders =
            orders::recent_orders_of(&self.app.pool, store_id, customer_id.0, RECENT_ORDERS)
                .await
                .map_err(AppError::from)?;
        Ok(Json(CustomerProfile {
            customer: CustomerView::of(customer, &mut contacts)?,
            recent_orders: recent_orders.into_iter().map(CustomerOrder::from).collect(),
        }))
    }

    /// Stop taking orders from this customer in this store.
    #[oai(
        path = "/stores/:store_id/customers/:customer_id/block",
        method = "post",
        operation_id = "customers_block"
    )]
    async fn block_one(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Path<Uuid>,
        customer_id: Path<Uuid>,
        body: Json<BlockRequest>,
    ) -> Result<Json<BulkOutcome>, ApiError> {
        let caller = caller(req, auth.0);
        let store_id = StoreId(store_id.0);
        let access = self
            .app
            .authorize::<grant::ManageCustomers>(&caller, store_id)
            .await?;
        let position = self
            .block(
                &access,
                customer_id.0,
                BlockAction::Block,
                Some(body.0.reason),
            )
            .await?;
        // Answered once the customer list shows it (or after the wait, regardless).
        self.app.reached(&[CATALOG], position).await?;
        Ok(Json(BulkOutcome {
            id: customer_id.0,
            ok: true,
            problem: None,
        }))
    }

    /// Take orders from this customer again.
    #[oai(
        path = "/stores/:store_id/customers/:customer_id/unblock",
        method = "post",
        operation_id = "customers_unblock"
    )]
    async fn unblock_one(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Path<Uuid>,
        customer_id: Path<Uuid>,
    ) -> Result<Json<BulkOutcome>, ApiError> {
        let caller = caller(req, auth.0);
        let store_id = StoreId(store_id.0);
        let access = self
            .app
            .authorize::<grant::ManageCustomers>(&caller, store_id)
            .await?;
        let position = self
            .block(&access, customer_id.0, BlockAction::Unblock, None)
            .await?;
        self.app.reached(&[CATALOG], position).await?;
        Ok(Json(BulkOutcome {
            id: customer_id.0,
            ok: true,
            problem: None,
        }))
    }

    /// Block or unblock up to 100 customers; each gets its own result.
    #[oai(
        path = "/stores/:store_id/customers/bulk",
        method = "post",
        operation_id = "customers_bulk"
    )]
    async fn bulk(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Path<Uuid>,
        body: Json<BulkCustomersRequest>,
    ) -> Result<Json<BulkResponse>, ApiError> {
        let caller = caller(req, auth.0);
        let store_id = StoreId(store_id.0);
        let access = self
            .app
            .authorize::<grant::ManageCustomers>(&caller, store_id)
            .await?;
        let body = body.0;
        if body.action == BlockAction::Block && body.reason.is_none() {
            return Err(AppError::invalid("reason", "a block needs a reason").into());
        }
        let mut results = Vec::with_capacity(body.customer_ids.len());
        let mut last = None;
        for customer_id in body.customer_ids {
            let outcome = self
                .block(&access, customer_id, body.action, body.reason.clone())
                .await;
            last = outcome.as_ref().ok().copied().flatten().max(last);
            results.push((customer_id, outcome.map(|_| ())));
        }
        self.app.reached(&[CATALOG], last).await?;
        Ok(Json(BulkResponse::of(results)))
    }
}
