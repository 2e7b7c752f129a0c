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

use super::auth::BearerAuth;
use super::context::caller;
use super::error::ApiError;
use super::types::{decode_cursor, page_of, page_size, BulkOutcome, BulkResponse, MoneyView, Page};
use crate::app::grant;
use crate::app::{App, AppError, Contact, StoreAccess};

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

#[derive(sqlx::FromRow)]
struct CustomerRow {
    customer_id: Uuid,
    currency: String,
    first_order_at: DateTime<Utc>,
    last_order_at: DateTime<Utc>,
    orders: i32,
    paid_orders: i32,
    /// `numeric` in the table (a lifetime value can pass i64), read as text: exact.
    revenue_minor: String,
    blocked_reason: Option<String>,
    blocked_at: Option<DateTime<Utc>>,
}

impl CustomerRow {
    /// The lifetime value as the API shows it (see [`super::analytics::sum`]).
    fn lifetime_value(&self) -> Result<MoneyView, ApiError> {
        let minor: i128 = self
            .revenue_minor
            .parse()
            .map_err(|err| AppError::from(sqlx::Error::Decode(Box::new(err))))?;
        super::analytics::sum(minor, &self.currency)
    }
}

impl CustomerView {
    fn of(
        row: CustomerRow,
        lifetime_value: MoneyView,
        contacts: &mut HashMap<Uuid, Contact>,
    ) -> Self {
        let contact = contacts.remove(&row.customer_id).unwrap_or_default();
        Self {
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
        }
    }
}

const CUSTOMER_QUERY: &str = "select c.customer_id, c.currency, c.first_order_at, \
     c.last_order_at, c.orders, c.paid_orders, c.revenue_minor::text as revenue_minor, \
     b.reason as blocked_reason, \
     b.blocked_at from customers c left join customer_blocks b \
     on b.store_id = c.store_id and b.customer_id = c.customer_id";

/// An order in a customer's profile.
#[derive(Debug, Object, sqlx::FromRow)]
pub struct CustomerOrder {
    pub order_id: Uuid,
    pub status: String,
    pub total_minor: i64,
    pub currency: String,
    pub placed_at: DateTime<Utc>,
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
    async fn block(
        &self,
        access: &StoreAccess<grant::ManageCustomers>,
        customer_id: Uuid,
        action: BlockAction,
        reason: Option<String>,
    ) -> Result<(), ApiError> {
        let blocked = action == BlockAction::Block;
        if blocked && reason.is_none() {
            return Err(AppError::invalid("reason", "a block needs a reason").into());
        }
        self.app
            .set_customer_blocked(access, AccountId(customer_id), blocked, reason)
            .await?;
        Ok(())
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
        self.app
            .authorize::<grant::ViewCustomers>(&caller, StoreId(store_id.0))
            .await?;
        let limit = page_size(limit.0);
        let after: Option<(DateTime<Utc>, Uuid)> =
            cursor.0.as_deref().map(decode_cursor).transpose()?;
        let rows: Vec<CustomerRow> = sqlx::query_as(&format!(
            "{CUSTOMER_QUERY} where c.store_id = $1 \
               and ($2::boolean is null or (b.customer_id is not null) = $2) \
               and ($3::timestamptz is null or (c.last_order_at, c.customer_id) < ($3, $4)) \
               and ($6::bigint is null or exists (select 1 from telegram_identities t \
                    where t.account_id = c.customer_id and t.telegram_user_id = $6)) \
             order by c.last_order_at desc, c.customer_id desc limit $5"
        ))
        .bind(store_id.0)
        .bind(blocked.0)
        .bind(after.map(|a| a.0))
        .bind(after.map(|a| a.1))
        .bind(limit + 1)
        .bind(telegram_user_id.0)
        .fetch_all(&self.app.pool)
        .await
        .map_err(AppError::from)?;
        let people: Vec<Uuid> = rows.iter().map(|c| c.customer_id).collect();
        let mut contacts = self.app.contacts(&people).await?;
        let rows = rows
            .into_iter()
            .map(|row| Ok((row.lifetime_value()?, row)))
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok(Json(page_of(
            rows,
            limit,
            |(_, c)| (c.last_order_at, c.customer_id),
            |(lifetime_value, row)| CustomerView::of(row, lifetime_value, &mut contacts),
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
        self.app
            .authorize::<grant::ViewCustomers>(&caller, StoreId(store_id.0))
            .await?;
        let row: Option<CustomerRow> = sqlx::query_as(&format!(
            "{CUSTOMER_QUERY} where c.store_id = $1 and c.customer_id = $2"
        ))
        .bind(store_id.0)
        .bind(customer_id.0)
        .fetch_optional(&self.app.pool)
        .await
        .map_err(AppError::from)?;
        let customer = row.ok_or_else(customer_not_found)?;
        let mut contacts = self.app.contacts(&[customer.customer_id]).await?;
        let recent_orders: Vec<CustomerOrder> = sqlx::query_as(
            "select order_id, status, total_minor, currency, placed_at from orders \
             where store_id = $1 and customer_id = $2 order by placed_at desc limit 20",
        )
        .bind(store_id.0)
        .bind(customer_id.0)
        .fetch_all(&self.app.pool)
        .await
        .map_err(AppError::from)?;
        let lifetime_value = customer.lifetime_value()?;
        Ok(Json(CustomerProfile {
            customer: CustomerView::of(customer, lifetime_value, &mut contacts),
            recent_orders,
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
        self.block(
            &access,
            customer_id.0,
            BlockAction::Block,
            Some(body.0.reason),
        )
        .await?;
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
        self.block(&access, customer_id.0, BlockAction::Unblock, None)
            .await?;
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
        for customer_id in body.customer_ids {
            let outcome = self
                .block(&access, customer_id, body.action, body.reason.clone())
                .await;
            results.push((customer_id, outcome));
        }
        Ok(Json(BulkResponse::of(results)))
    }
}
