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
use super::context::Caller;
use super::error::ApiError;
use super::types::{decode_cursor, page_of, page_size, Page};
use crate::app::authz::Permission;
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
    pub request_id: String,
    #[oai(skip_serializing_if_is_none)]
    pub correlation_id: Option<Uuid>,
    /// The event that caused this one (process managers).
    #[oai(skip_serializing_if_is_none)]
    pub causation_position: Option<i64>,
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
        #[oai(validator(max_length = 200))] request_id: Query<Option<String>>,
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
        let caller = Caller::new(req, auth.0);
        caller
            .in_store(&self.app, StoreId(store_id.0), Permission::ViewAuditTrail)
            .await?;
        let limit = page_size(limit.0);
        let after: Option<i64> = cursor.0.as_deref().map(decode_cursor).transpose()?;
        let (direction, comparison) = if newest_first.0.unwrap_or(false) {
            ("desc", "<")
        } else {
            ("asc", ">")
        };
        let rows: Vec<AuditEventView> = sqlx::query_as(&format!(
            "select global_position, aggregate_type, aggregate_id, sequence, event_type, \
                    event_version, store_id, actor_id, actor_role, channel, request_id, \
                    correlation_id, causation_position, client_ip, user_agent, payload, recorded_at \
               from audit_events where store_id = $1 \
                and ($2::text is null or aggregate_type = $2) \
                and ($3::text is null or aggregate_id = $3) \
                and ($4::text is null or event_type = $4) \
                and ($5::uuid is null or actor_id = $5) \
                and ($6::text is null or request_id = $6) \
                and ($7::timestamptz is null or recorded_at >= $7) \
                and ($8::timestamptz is null or recorded_at < $8) \
                and ($9::bigint is null or global_position {comparison} $9) \
              order by global_position {direction} limit $10"
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
        .fetch_all(&self.app.pool)
        .await
        .map_err(AppError::from)?;
        Ok(Json(page_of(rows, limit, |e| e.global_position, |e| e)))
    }
}
