//! Low- and out-of-stock alerts: list a store's alerts, acknowledge one.

use std::sync::Arc;

use aggregates::{ProductId, StoreId};
use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi, Tags};
use uuid::Uuid;

use projections::read_models::stock::queries as stock;

use super::auth::BearerAuth;
use super::context::caller;
use super::error::ApiError;
use super::types::{decode_cursor, page_of, page_size, Changed, Page};
use crate::app::{grant, App, AppError};

/// The read models an alert's view comes from: the stock, with the product's name beside it.
const ALERT_READ_MODELS: &[&str] = &["stock", "catalog"];

#[derive(Tags)]
enum ApiTags {
    /// Low- and out-of-stock alerts.
    Alerts,
}

/// A stock alert: opened when a product's available units fall to its threshold (`low`) or to
/// zero (`out`), resolved when stock recovers.
#[derive(Debug, Object)]
#[oai(rename = "StockAlert")]
pub struct AlertView {
    pub alert_id: i64,
    pub product_id: Uuid,
    pub store_id: Uuid,
    /// Product name, from the catalog.
    #[oai(skip_serializing_if_is_none)]
    pub product_name: Option<String>,
    /// `low` or `out`.
    pub level: String,
    /// Units available when the stock reached this level.
    pub available: i64,
    /// Units available now.
    #[oai(skip_serializing_if_is_none)]
    pub available_now: Option<i64>,
    pub threshold: i32,
    pub opened_at: DateTime<Utc>,
    #[oai(skip_serializing_if_is_none)]
    pub resolved_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    pub acknowledged_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    pub acknowledged_by: Option<Uuid>,
}

/// Which alerts to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum AlertState {
    /// Not resolved yet (acknowledged or not).
    Open,
    /// Open and not acknowledged.
    Unacknowledged,
    Resolved,
    All,
}

impl From<stock::Alert> for AlertView {
    fn from(alert: stock::Alert) -> Self {
        Self {
            alert_id: alert.alert_id,
            product_id: alert.product_id,
            store_id: alert.store_id,
            product_name: alert.product_name,
            level: alert.level,
            available: alert.available,
            available_now: alert.available_now,
            threshold: alert.threshold,
            opened_at: alert.opened_at,
            resolved_at: alert.resolved_at,
            acknowledged_at: alert.acknowledged_at,
            acknowledged_by: alert.acknowledged_by,
        }
    }
}

pub struct AlertsApi {
    pub app: Arc<App>,
}

fn alert_not_found() -> ApiError {
    ApiError::not_found("alert-not-found", "no such alert")
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Alerts")]
impl AlertsApi {
    /// The store's stock alerts, newest first (default: open ones).
    #[oai(
        path = "/stores/:store_id/alerts",
        method = "get",
        operation_id = "alerts_list"
    )]
    async fn list(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Path<Uuid>,
        state: Query<Option<AlertState>>,
        cursor: Query<Option<String>>,
        /// Page size, 1 to 200 (default 50).
        limit: Query<Option<u32>>,
    ) -> Result<Json<Page<AlertView>>, ApiError> {
        let caller = caller(req, auth.0);
        let access = self
            .app
            .authorize::<grant::ViewStock>(&caller, StoreId(store_id.0))
            .await?;
        let state = match state.0.unwrap_or(AlertState::Open) {
            AlertState::Open => stock::AlertState::Open,
            AlertState::Unacknowledged => stock::AlertState::Unacknowledged,
            AlertState::Resolved => stock::AlertState::Resolved,
            AlertState::All => stock::AlertState::All,
        };
        let limit = page_size(limit.0);
        let before: Option<i64> = cursor.0.as_deref().map(decode_cursor).transpose()?;
        let rows = stock::alerts(
            &self.app.pool,
            access.store_id().0,
            state,
            before,
            limit + 1,
        )
        .await
        .map_err(AppError::from)?;
        Ok(Json(page_of(rows, limit, |a| a.alert_id, AlertView::from)))
    }

    /// Acknowledge an open alert (someone is on it); it stays open until stock recovers.
    #[oai(
        path = "/alerts/:alert_id/acknowledge",
        method = "post",
        operation_id = "alerts_acknowledge"
    )]
    async fn acknowledge(
        &self,
        req: &Request,
        auth: BearerAuth,
        alert_id: Path<i64>,
    ) -> Result<Changed<AlertView>, ApiError> {
        let caller = caller(req, auth.0);
        let alert_id = alert_id.0;
        let alert = stock::alert(&self.app.pool, alert_id)
            .await
            .map_err(AppError::from)?
            .ok_or_else(alert_not_found)?;
        let access = self
            .app
            .authorize_visible::<grant::AcknowledgeAlerts>(&caller, StoreId(alert.store_id))
            .await?
            .ok_or_else(alert_not_found)?;
        if alert.resolved_at.is_some() {
            return Err(ApiError::unprocessable(
                "alert-resolved",
                "the alert is resolved: stock recovered",
            ));
        }
        let written = self
            .app
            .acknowledge_stock_alert(&access, ProductId(alert.product_id))
            .await?;
        let alert = self
            .app
            .read_after(ALERT_READ_MODELS, written.position, || {
                stock::alert(&self.app.pool, alert_id)
            })
            .await?
            .filter(|a| a.store_id == access.store_id().0);
        Ok(Changed::of(
            alert.map(AlertView::from),
            format!("/api/v1/stores/{}/alerts", access.store_id()),
            written.position,
        ))
    }
}
