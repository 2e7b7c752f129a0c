//! Low- and out-of-stock alerts: list a store's alerts, acknowledge one.

use std::sync::Arc;

use aggregates::{ProductId, StoreId};
use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi, Tags};
use uuid::Uuid;

use super::auth::BearerAuth;
use super::context::caller;
use super::error::ApiError;
use super::types::{decode_cursor, page_of, page_size, Page};
use crate::app::{grant, App, AppError};

#[derive(Tags)]
enum ApiTags {
    /// Low- and out-of-stock alerts.
    Alerts,
}

/// A stock alert: opened when a product's available units fall to its threshold (`low`) or to
/// zero (`out`), resolved when stock recovers.
#[derive(Debug, Object, sqlx::FromRow)]
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

const ALERT_QUERY: &str = "select a.alert_id, a.product_id, a.store_id, p.name as product_name, \
     a.level, a.available, a.threshold, a.opened_at, a.resolved_at, a.acknowledged_at, \
     a.acknowledged_by, l.available as available_now from stock_alerts a \
     left join products p on p.product_id = a.product_id \
     left join stock_levels l on l.product_id = a.product_id";

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
        self.app
            .authorize::<grant::ViewStock>(&caller, StoreId(store_id.0))
            .await?;
        let condition = match state.0.unwrap_or(AlertState::Open) {
            AlertState::Open => "a.resolved_at is null",
            AlertState::Unacknowledged => "a.resolved_at is null and a.acknowledged_at is null",
            AlertState::Resolved => "a.resolved_at is not null",
            AlertState::All => "true",
        };
        let limit = page_size(limit.0);
        let before: Option<i64> = cursor.0.as_deref().map(decode_cursor).transpose()?;
        let rows: Vec<AlertView> = sqlx::query_as(&format!(
            "{ALERT_QUERY} where a.store_id = $1 and {condition} \
               and ($2::bigint is null or a.alert_id < $2) \
             order by a.alert_id desc limit $3"
        ))
        .bind(store_id.0)
        .bind(before)
        .bind(limit + 1)
        .fetch_all(&self.app.pool)
        .await
        .map_err(AppError::from)?;
        Ok(Json(page_of(rows, limit, |a| a.alert_id, |a| a)))
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
    ) -> Result<Json<AlertView>, ApiError> {
        let caller = caller(req, auth.0);
        let alert: Option<AlertView> =
            sqlx::query_as(&format!("{ALERT_QUERY} where a.alert_id = $1"))
                .bind(alert_id.0)
                .fetch_optional(&self.app.pool)
                .await
                .map_err(AppError::from)?;
        let mut alert = alert.ok_or_else(alert_not_found)?;
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
        self.app
            .acknowledge_stock_alert(&access, ProductId(alert.product_id))
            .await?;
        alert.acknowledged_at = Some(crate::app::now());
        alert.acknowledged_by = Some(caller.account_id().0);
        Ok(Json(alert))
    }
}
