//! Products and their stock: `/api/v1/stores/{store_id}/products`, `/api/v1/products/{id}`,
//! `/api/v1/products/{id}/stock…`.

use std::sync::Arc;

use aggregates::product::Sku;
use aggregates::stock::AdjustmentReason;
use aggregates::{ProductId, StoreId};
use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, Tags};
use uuid::Uuid;

use projections::read_models::catalog::queries::{self as catalog, ProductFilter};
use projections::read_models::stock::queries as stock;

use super::auth::BearerAuth;
use super::context::{caller, on_resource};
use super::error::ApiError;
use super::types::{decode_cursor, page_of, page_size, Changed, MoneyView, Page, PendingView};
use crate::app::{
    grant, App, AppError, Caller, Grant, NewProduct, ProductChange, Resource, StoreAccess,
};

/// The read models a product's view comes from: the catalog, with the stock beside it.
const PRODUCT_READ_MODELS: &[&str] = &["catalog", "stock"];
/// The read model stock views come from.
const STOCK: &str = "stock";

#[derive(Tags)]
enum ApiTags {
    /// The catalog: products, prices, archive.
    Products,
    /// Stock levels, movements and thresholds.
    Stock,
}

/// Whether a product can be ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[oai(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProductStatus {
    Active,
    Archived,
}

/// A product to create, priced in the store's currency.
#[derive(Debug, Object)]
pub struct CreateProductRequest {
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: String,
    #[oai(validator(max_length = 2000))]
    pub description: Option<String>,
    /// Unique within the store (case-insensitive).
    #[oai(validator(min_length = 1, max_length = 64))]
    pub sku: String,
    /// In the store's currency; another currency is refused.
    pub price: MoneyView,
    /// Units on hand to record at once (a "received" movement).
    #[oai(validator(minimum(value = "1"), maximum(value = "1000000000")))]
    pub initial_stock: Option<i64>,
    /// The product's own low-stock threshold (else the store's default).
    #[oai(validator(maximum(value = "1000000")))]
    pub low_stock_threshold: Option<u32>,
}

/// Changes; absent fields stay as they are, unknown ones are refused (a misspelt field would
/// otherwise change nothing without a word).
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct UpdateProductRequest {
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Option<String>,
    /// An empty string clears the description.
    #[oai(validator(max_length = 2000))]
    pub description: Option<String>,
    #[oai(validator(min_length = 1, max_length = 64))]
    pub sku: Option<String>,
    /// A new price, in the store's currency.
    pub price: Option<MoneyView>,
    /// `ARCHIVED` takes the product off sale; `ACTIVE` puts it back.
    pub status: Option<ProductStatus>,
}

/// Stock figures of a product.
#[derive(Debug, Object)]
#[oai(rename = "StockLevel")]
pub struct StockView {
    pub product_id: Uuid,
    pub on_hand: i64,
    pub reserved: i64,
    /// Units that can still be promised to new orders.
    pub available: i64,
    /// `normal`, `low` or `out`.
    pub level: String,
    /// The product's own threshold, when set.
    #[oai(skip_serializing_if_is_none)]
    pub threshold_override: Option<i32>,
    /// The threshold in force (own, else the store's default).
    pub effective_threshold: i32,
    pub updated_at: DateTime<Utc>,
}

/// A product with its current price and stock.
#[derive(Debug, Object)]
#[oai(rename = "Product")]
pub struct ProductView {
    pub product_id: Uuid,
    pub store_id: Uuid,
    pub name: String,
    pub description: String,
    pub sku: String,
    pub price: MoneyView,
    pub status: ProductStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Absent until the stock projection has seen the product.
    #[oai(skip_serializing_if_is_none)]
    pub stock: Option<StockView>,
}

impl From<stock::StockLevel> for StockView {
    fn from(level: stock::StockLevel) -> Self {
        Self {
            product_id: level.product_id,
            on_hand: level.on_hand,
            reserved: level.reserved,
            available: level.available,
            level: level.level,
            threshold_override: level.threshold_override,
            effective_threshold: level.effective_threshold,
            updated_at: level.updated_at,
        }
    }
}

impl From<catalog::Product> for ProductView {
    fn from(row: catalog::Product) -> Self {
        let stock = match (row.on_hand, row.reserved, row.available, row.level) {
            (Some(on_hand), Some(reserved), Some(available), Some(level)) => Some(StockView {
                product_id: row.product_id,
                on_hand,
                reserved,
                available,
                level,
                threshold_override: row.threshold_override,
                effective_threshold: row.effective_threshold.unwrap_or_default(),
                updated_at: row.stock_updated_at.unwrap_or(row.updated_at),
            }),
            _ => None,
        };
        Self {
            product_id: row.product_id,
            store_id: row.store_id,
            name: row.name,
            description: row.description,
            sku: row.sku,
            price: MoneyView::new(row.price_minor, row.currency),
            status: if row.status == "ARCHIVED" {
                ProductStatus::Archived
            } else {
                ProductStatus::Active
            },
            created_at: row.created_at,
            updated_at: row.updated_at,
            stock,
        }
    }
}

/// Why units are adjusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum AdjustReason {
    /// A count found a different number.
    Count,
    /// Damaged or lost.
    Damage,
    /// Came back from a customer.
    Return,
}

/// Units arriving.
#[derive(Debug, Object)]
pub struct ReceiveStockRequest {
    #[oai(validator(minimum(value = "1"), maximum(value = "1000000000")))]
    pub quantity: i64,
    #[oai(validator(max_length = 2000))]
    pub note: Option<String>,
}

/// Units added (positive) or removed (negative) outside the order flow.
#[derive(Debug, Object)]
pub struct AdjustStockRequest {
    #[oai(validator(minimum(value = "-1000000000"), maximum(value = "1000000000")))]
    pub delta: i64,
    pub reason: AdjustReason,
    #[oai(validator(max_length = 2000))]
    pub note: Option<String>,
}

/// The product's own low-stock threshold; `null` falls back to the store's default.
#[derive(Debug, Object)]
pub struct ThresholdRequest {
    #[oai(validator(maximum(value = "1000000")))]
    pub threshold: Option<u32>,
}

/// One stock movement.
#[derive(Debug, Object)]
#[oai(rename = "StockMovement")]
pub struct MovementView {
    pub global_position: i64,
    /// `received`, `adjusted`, `reserved`, `released`, `committed`, ...
    pub movement: String,
    pub on_hand_delta: i64,
    pub reserved_delta: i64,
    #[oai(skip_serializing_if_is_none)]
    pub reason: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub note: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub order_id: Option<Uuid>,
    pub on_hand_after: i64,
    pub reserved_after: i64,
    pub available_after: i64,
    #[oai(skip_serializing_if_is_none)]
    pub actor_id: Option<Uuid>,
    pub recorded_at: DateTime<Utc>,
}

impl From<stock::Movement> for MovementView {
    fn from(movement: stock::Movement) -> Self {
        Self {
            global_position: movement.global_position,
            movement: movement.movement,
            on_hand_delta: movement.on_hand_delta,
            reserved_delta: movement.reserved_delta,
            reason: movement.reason,
            note: movement.note,
            order_id: movement.order_id,
            on_hand_after: movement.on_hand_after,
            reserved_after: movement.reserved_after,
            available_after: movement.available_after,
            actor_id: movement.actor_id,
            recorded_at: movement.recorded_at,
        }
    }
}

#[derive(ApiResponse)]
pub enum ProductCreated {
    /// The product exists and its stock is tracked.
    #[oai(status = 201)]
    Created(Json<ProductView>, #[oai(header = "Location")] String),
    /// The product exists, but the catalog did not show it in time (2 s by default): GET
    /// `Location` shortly (do not create it again).
    #[oai(status = 202)]
    Pending(Json<PendingView>, #[oai(header = "Location")] String),
}

pub struct ProductsApi {
    pub app: Arc<App>,
}

fn product_not_found() -> ApiError {
    ApiError::not_found("product-not-found", "no such product")
}

impl ProductsApi {
    /// The product's view once the catalog and stock read models have reached `position`
    /// (`None`: not within the wait).
    async fn product_after<P: Grant>(
        &self,
        access: &StoreAccess<P>,
        product_id: ProductId,
        position: Option<i64>,
    ) -> Result<Option<ProductView>, ApiError> {
        let product = self
            .app
            .read_after(PRODUCT_READ_MODELS, position, || {
                catalog::product(&self.app.pool, product_id.0)
            })
            .await?;
        Ok(product
            .filter(|p| p.store_id == access.store_id().0)
            .map(ProductView::from))
    }

    /// The product's stock once the stock read model has reached `position`.
    async fn stock_after(
        &self,
        access: &StoreAccess<grant::ManageStock>,
        product_id: ProductId,
        position: Option<i64>,
    ) -> Result<Changed<StockView>, ApiError> {
        let level = self
            .app
            .read_after(&[STOCK], position, || {
                stock::level(&self.app.pool, product_id.0)
            })
            .await?;
        Ok(Changed::of(
            level
                .filter(|l| l.store_id == access.store_id().0)
                .map(StockView::from),
            format!("/api/v1/products/{product_id}/stock"),
            position,
        ))
    }

    /// The product's stock level row (waiting briefly for one written a moment ago) and the
    /// caller's proof of `P` in its store; a product the caller cannot see is "not found".
    async fn level_of<P: Grant>(
        &self,
        caller: &Caller,
        product_id: ProductId,
    ) -> Result<(stock::StockLevel, StoreAccess<P>), ApiError> {
        let level = self
            .app
            .read_projected(&[STOCK], "Stock", &product_id.to_string(), || {
                stock::level(&self.app.pool, product_id.0)
            })
            .await?
            .ok_or_else(product_not_found)?;
        let access = self
            .app
            .authorize_visible::<P>(caller, StoreId(level.store_id))
            .await?
            .ok_or_else(product_not_found)?;
        Ok((level, access))
    }

    /// Proof of `P` on a product's store (a product of a store the caller has no role in is
    /// "not found").
    async fn on_product<P: Grant>(
        &self,
        caller: &Caller,
        product_id: ProductId,
    ) -> Result<StoreAccess<P>, ApiError> {
        on_resource(
            &self.app,
            caller,
            Resource::Product(product_id),
            product_not_found,
        )
        .await
    }
}

#[OpenApi(prefix_path = "/api/v1")]
impl ProductsApi {
    /// Create a product (and start tracking its stock).
    #[oai(
        path = "/stores/:store_id/products",
        method = "post",
        operation_id = "products_create",
        tag = "ApiTags::Products"
    )]
    async fn create(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Path<Uuid>,
        body: Json<CreateProductRequest>,
    ) -> Result<ProductCreated, ApiError> {
        let caller = caller(req, auth.0);
        let store_id = StoreId(store_id.0);
        let access = self
            .app
            .authorize::<grant::ManageProducts>(&caller, store_id)
            .await?;
        let body = body.0;
        let product = NewProduct {
            name: body.name,
            description: body.description.unwrap_or_default(),
            sku: Sku::parse(&body.sku).map_err(AppError::from)?,
            price: body.price.to_money("price")?,
            initial_stock: body.initial_stock,
            low_stock_threshold: body.low_stock_threshold,
        };
        let written = self.app.create_product(&access, product).await?;
        let product_id = written.outcome;
        let location = format!("/api/v1/products/{product_id}");
        Ok(
            match self
                .product_after(&access, product_id, written.position)
                .await?
            {
                Some(view) => ProductCreated::Created(Json(view), location),
                None => ProductCreated::Pending(
                    Json(PendingView::new(location.clone(), written.position)),
                    location,
                ),
            },
        )
    }

    /// The store's products, by name; filter by status or search name and sku.
    #[oai(
        path = "/stores/:store_id/products",
        method = "get",
        operation_id = "products_list",
        tag = "ApiTags::Products"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Path<Uuid>,
        /// Only products with this status.
        status: Query<Option<ProductStatus>>,
        /// Case-insensitive substring of the name or sku.
        #[oai(validator(max_length = 200))]
        q: Query<Option<String>>,
        /// Only products at this stock level (`normal`, `low`, `out`).
        #[oai(validator(max_length = 10))]
        level: Query<Option<String>>,
        cursor: Query<Option<String>>,
        /// Page size, 1 to 200 (default 50).
        limit: Query<Option<u32>>,
    ) -> Result<Json<Page<ProductView>>, ApiError> {
        let caller = caller(req, auth.0);
        let access = self
            .app
            .authorize::<grant::ViewProducts>(&caller, StoreId(store_id.0))
            .await?;
        let limit = page_size(limit.0);
        let after: Option<(String, Uuid)> = cursor.0.as_deref().map(decode_cursor).transpose()?;
        let filter = ProductFilter {
            status: status.0.map(|s| match s {
                ProductStatus::Active => "ACTIVE",
                ProductStatus::Archived => "ARCHIVED",
            }),
            text: q.0,
            level: level.0,
        };
        let rows = catalog::products(
            &self.app.pool,
            access.store_id().0,
            &filter,
            after,
            limit + 1,
        )
        .await
        .map_err(crate::app::AppError::from)?;
        Ok(Json(page_of(
            rows,
            limit,
            |p| (p.name.clone(), p.product_id),
            ProductView::from,
        )))
    }

    /// One product with its price and stock.
    #[oai(
        path = "/products/:product_id",
        method = "get",
        operation_id = "products_get",
        tag = "ApiTags::Products"
    )]
    async fn get(
        &self,
        req: &Request,
        auth: BearerAuth,
        product_id: Path<Uuid>,
    ) -> Result<Json<ProductView>, ApiError> {
        let caller = caller(req, auth.0);
        let product_id = product_id.0;
        // A product created a moment ago may not be in the catalog yet: wait for it, briefly.
        let product = self
            .app
            .read_projected(&["catalog"], "Product", &product_id.to_string(), || {
                catalog::product(&self.app.pool, product_id)
            })
            .await?
            .ok_or_else(product_not_found)?;
        self.app
            .authorize_visible::<grant::ViewProducts>(&caller, StoreId(product.store_id))
            .await?
            .ok_or_else(product_not_found)?;
        Ok(Json(product.into()))
    }

    /// Change name, description, sku, price (in the store's currency) or status.
    #[oai(
        path = "/products/:product_id",
        method = "patch",
        operation_id = "products_update",
        tag = "ApiTags::Products"
    )]
    async fn update(
        &self,
        req: &Request,
        auth: BearerAuth,
        product_id: Path<Uuid>,
        body: Json<UpdateProductRequest>,
    ) -> Result<Changed<ProductView>, ApiError> {
        let caller = caller(req, auth.0);
        let product_id = ProductId(product_id.0);
        let access = self
            .on_product::<grant::ManageProducts>(&caller, product_id)
            .await?;
        let body = body.0;
        let changes = ProductChange {
            name: body.name,
            description: body.description,
            sku: body
                .sku
                .as_deref()
                .map(Sku::parse)
                .transpose()
                .map_err(AppError::from)?,
            price: body.price.map(|p| p.to_money("price")).transpose()?,
            archived: body.status.map(|s| s == ProductStatus::Archived),
        };
        let written = self
            .app
            .update_product(&access, product_id, changes)
            .await?;
        Ok(Changed::of(
            self.product_after(&access, product_id, written.position)
                .await?,
            format!("/api/v1/products/{product_id}"),
            written.position,
        ))
    }

    /// The product's stock figures.
    #[oai(
        path = "/products/:product_id/stock",
        method = "get",
        operation_id = "stock_get",
        tag = "ApiTags::Stock"
    )]
    async fn stock(
        &self,
        req: &Request,
        auth: BearerAuth,
        product_id: Path<Uuid>,
    ) -> Result<Json<StockView>, ApiError> {
        let caller = caller(req, auth.0);
        let (level, _) = self
            .level_of::<grant::ViewStock>(&caller, ProductId(product_id.0))
            .await?;
        Ok(Json(level.into()))
    }

    /// The product's stock movements, newest first.
    #[oai(
        path = "/products/:product_id/stock/history",
        method = "get",
        operation_id = "stock_history",
        tag = "ApiTags::Stock"
    )]
    async fn history(
        &self,
        req: &Request,
        auth: BearerAuth,
        product_id: Path<Uuid>,
        cursor: Query<Option<String>>,
        /// Page size, 1 to 200 (default 50).
        limit: Query<Option<u32>>,
    ) -> Result<Json<Page<MovementView>>, ApiError> {
        let caller = caller(req, auth.0);
        let limit = page_size(limit.0);
        let before: Option<i64> = cursor.0.as_deref().map(decode_cursor).transpose()?;
        let (level, access) = self
            .level_of::<grant::ViewStock>(&caller, ProductId(product_id.0))
            .await?;
        let rows = stock::history(
            &self.app.pool,
            access.store_id().0,
            level.product_id,
            before,
            limit + 1,
        )
        .await
        .map_err(crate::app::AppError::from)?;
        Ok(Json(page_of(
            rows,
            limit,
            |m| m.global_position,
            MovementView::from,
        )))
    }

    /// Record units arriving.
    #[oai(
        path = "/products/:product_id/stock/receive",
        method = "post",
        operation_id = "stock_receive",
        tag = "ApiTags::Stock"
    )]
    async fn receive(
        &self,
        req: &Request,
        auth: BearerAuth,
        product_id: Path<Uuid>,
        body: Json<ReceiveStockRequest>,
    ) -> Result<Changed<StockView>, ApiError> {
        let caller = caller(req, auth.0);
        let product_id = ProductId(product_id.0);
        let access = self
            .on_product::<grant::ManageStock>(&caller, product_id)
            .await?;
        let written = self
            .app
            .receive_stock(&access, product_id, body.0.quantity, body.0.note)
            .await?;
        self.stock_after(&access, product_id, written.position)
            .await
    }

    /// Add or remove units for a reason (a count, damage, a return); stock never goes below
    /// what is reserved for orders.
    #[oai(
        path = "/products/:product_id/stock/adjust",
        method = "post",
        operation_id = "stock_adjust",
        tag = "ApiTags::Stock"
    )]
    async fn adjust(
        &self,
        req: &Request,
        auth: BearerAuth,
        product_id: Path<Uuid>,
        body: Json<AdjustStockRequest>,
    ) -> Result<Changed<StockView>, ApiError> {
        let caller = caller(req, auth.0);
        let product_id = ProductId(product_id.0);
        let access = self
            .on_product::<grant::ManageStock>(&caller, product_id)
            .await?;
        let reason = match body.0.reason {
            AdjustReason::Count => AdjustmentReason::Count,
            AdjustReason::Damage => AdjustmentReason::Damage,
            AdjustReason::Return => AdjustmentReason::Return,
        };
        let written = self
            .app
            .adjust_stock(&access, product_id, body.0.delta, reason, body.0.note)
            .await?;
        self.stock_after(&access, product_id, written.position)
            .await
    }

    /// Set the product's own low-stock threshold, or clear it (`null`) to follow the store's.
    #[oai(
        path = "/products/:product_id/stock/threshold",
        method = "put",
        operation_id = "stock_threshold",
        tag = "ApiTags::Stock"
    )]
    async fn threshold(
        &self,
        req: &Request,
        auth: BearerAuth,
        product_id: Path<Uuid>,
        body: Json<ThresholdRequest>,
    ) -> Result<Changed<StockView>, ApiError> {
        let caller = caller(req, auth.0);
        let product_id = ProductId(product_id.0);
        let access = self
            .on_product::<grant::ManageStock>(&caller, product_id)
            .await?;
        let written = self
            .app
            .set_stock_threshold(&access, product_id, body.0.threshold)
            .await?;
        self.stock_after(&access, product_id, written.position)
            .await
    }
}
