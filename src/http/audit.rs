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

use super::auth::BearerAuth;
use super::context::caller;
use super::error::ApiError;
use super::types::{decode_cursor, page_of, page_size, Page};
use crate::app::grant;
use crate::app::{App, AppError};

#[derive(Tags)]
enum ApiTags {
    /// The audit trail.
    Audit,
}

/// One event of the log, with its metadata.
#[derive(Debug, Object, sqlx::FromRow)]
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
        self.app
            .authorize::<grant::ViewAuditTrail>(&caller, StoreId(store_id.0))
            .await?;
        let limit = page_size(limit.0);
        let after: Option<i64> = cursor.0.as_deref().map(decode_cursor).transpose()?;
        let (direction, comparison) = if newest_first.0.unwrap_or(false) {
            ("desc", "<")
        } else {
            ("asc", ">")
        };
        let rows: Vec<AuditEventView> = sqlx::query_as(&format!(
            "select e.global_position, e.aggregate_type, e.aggregate_id, e.sequence, \
                    e.event_type, e.event_version, e.store_id, e.actor_id, e.actor_role, \
                    e.channel, e.request_id, e.client_request_id, e.correlation_id, \
                    e.causation_position, o.client_ip, o.user_agent, e.payload, e.recorded_at \
               from audit_events e left join request_origins o on o.request_id = e.request_id \
              where e.store_id = $1 \
                and ($2::text is null or e.aggregate_type = $2) \
                and ($3::text is null or e.aggregate_id = $3) \
                and ($4::text is null or e.event_type = $4) \
                and ($5::uuid is null or e.actor_id = $5) \
                and ($6::text is null or e.request_id = $6) \
                and ($7::timestamptz is null or e.recorded_at >= $7) \
                and ($8::timestamptz is null or e.recorded_at < $8) \
                and ($9::bigint is null or e.global_position {comparison} $9) \
                and ($11::text is null or e.client_request_id = $11) \
              order by e.global_position {direction} limit $10"
        ))
        .bind(store_id.0)
        .bind(aggregate_type.0)
        .bind(aggregate_id.0)
        .bind(event_type.0)
        .bind(actor_id.0)
        .bind(request_id.0)
        .bind(from.0)
        .bind(to.0)
        .bind(after)
        .bind(limit + 1)
        .bind(client_request_id.0)
        .fetch_all(&self.app.pool)
        .await
        .map_err(AppError::from)?;
        Ok(Json(page_of(rows, limit, |e| e.global_position, |e| e)))
    }
}
