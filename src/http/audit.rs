//! `/api/v1/audit/events`: the audit trail of a store, filtered and paginated. Every event with
//! who did it, through what, from where, under which request id.

use std::sync::Arc;

use aggregates::StoreId;
use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, Tags};
use uuid::Uuid;

use projections::read_models::audit::queries::{self as audit, AuditFilter};

use super::auth::BearerAuth;
use super::context::caller;
use super::error::ApiError;
use super::types::{decode_cursor, page_of, page_size, Page};
use crate::app::grant;
use crate::app::{App, AppError};

#[derive(Tags)]
pub(super) enum ApiTags {
    /// The audit trail.
    Audit,
}

/// One event of the log, with its metadata.
#[derive(Debug, Object)]
#[oai(rename = "AuditEvent")]
pub struct AuditEventView {
    /// Position in the global log (gap-free order of commits).
    pub global_position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    #[oai(skip_serializing_if_is_none)]
    pub store_id: Option<Uuid>,
    #[oai(skip_serializing_if_is_none)]
    pub actor_id: Option<Uuid>,
    pub actor_role: String,
    pub channel: String,
    /// The id this service gave the request.
    pub request_id: String,
    /// The `X-Request-Id` the client sent, if any.
    #[oai(skip_serializing_if_is_none)]
    pub client_request_id: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub correlation_id: Option<Uuid>,
    /// The event that caused this one (process managers).
    #[oai(skip_serializing_if_is_none)]
    pub causation_position: Option<i64>,
    /// Where the request came from (personal data: kept beside the log, gone once the person
    /// is erased).
    #[oai(skip_serializing_if_is_none)]
    pub client_ip: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub user_agent: Option<String>,
    /// The event as stored (personal data inside is sealed).
    pub payload: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

impl From<audit::AuditEvent> for AuditEventView {
    fn from(event: audit::AuditEvent) -> Self {
        Self {
            global_position: event.global_position,
            aggregate_type: event.aggregate_type,
            aggregate_id: event.aggregate_id,
            sequence: event.sequence,
            event_type: event.event_type,
            event_version: event.event_version,
            store_id: event.store_id,
            actor_id: event.actor_id,
            actor_role: event.actor_role,
            channel: event.channel,
            request_id: event.request_id,
            client_request_id: event.client_request_id,
            correlation_id: event.correlation_id,
            causation_position: event.causation_position,
            client_ip: event.client_ip,
            user_agent: event.user_agent,
            payload: event.payload,
            recorded_at: event.recorded_at,
        }
    }
}

pub struct AuditApi {
    pub app: Arc<App>,
}

#[OpenApi(prefix_path = "/api/v1/audit", tag = "ApiTags::Audit")]
impl AuditApi {
    /// A store's events, oldest first (or newest first with `sort=desc`), filtered by aggregate,
    /// event type, actor, request and time.
    #[oai(path = "/events", method = "get", operation_id = "audit_events")]
    #[allow(clippy::too_many_arguments)]
    async fn events(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Query<Uuid>,
        /// `Order`, `PaymentReceipt`, `Stock`, `Product`, `Store`.
        #[oai(validator(max_length = 50))]
        aggregate_type: Query<Option<String>>,
        #[oai(validator(max_length = 100))] aggregate_id: Query<Option<String>>,
        #[oai(validator(max_length = 100))] event_type: Query<Option<String>>,
        actor_id: Query<Option<Uuid>>,
        /// The id this service gave the request (its `X-Request-Id` response header).
        #[oai(validator(max_length = 200))]
        request_id: Query<Option<String>>,
        /// The `X-Request-Id` the client sent with its request.
        #[oai(validator(max_length = 200))]
        client_request_id: Query<Option<String>>,
        /// Recorded at or after.
        from: Query<Option<DateTime<Utc>>>,
        /// Recorded before.
        to: Query<Option<DateTime<Utc>>>,
        /// `true` for newest first.
        newest_first: Query<Option<bool>>,
        cursor: Query<Option<String>>,
        /// Page size, 1 to 200 (default 50).
        limit: Query<Option<u32>>,
    ) -> Result<Json<Page<AuditEventView>>, ApiError> {
        let caller = caller(req, auth.0);
        let access = self
            .app
            .authorize::<grant::ViewAuditTrail>(&caller, StoreId(store_id.0))
            .await?;
        let limit = page_size(limit.0);
        let after: Option<i64> = cursor.0.as_deref().map(decode_cursor).transpose()?;
        let filter = AuditFilter {
            aggregate_type: aggregate_type.0,
            aggregate_id: aggregate_id.0,
            event_type: event_type.0,
            actor_id: actor_id.0,
            request_id: request_id.0,
            client_request_id: client_request_id.0,
            from: from.0,
            to: to.0,
            newest_first: newest_first.0.unwrap_or(false),
        };
        let rows = audit::events(
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
            |e| e.global_position,
            AuditEventView::from,
        )))
    }
}
