//! Queries of the audit read model: a store's events with their metadata, and where each
//! request came from (`request_origins`, the log's side table of client IPs and user agents,
//! personal data kept beside the log rather than in it).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// One event of the log with its metadata (`audit_events`).
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct AuditEvent {
    pub global_position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub store_id: Option<Uuid>,
    pub actor_id: Option<Uuid>,
    pub actor_role: String,
    pub channel: String,
    pub request_id: String,
    pub client_request_id: Option<String>,
    pub correlation_id: Option<Uuid>,
    pub causation_position: Option<i64>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    /// The event as stored (personal data inside is sealed).
    pub payload: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

/// Which events [`events`] lists; every field narrows the list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    pub event_type: Option<String>,
    pub actor_id: Option<Uuid>,
    /// The id this service gave the request.
    pub request_id: Option<String>,
    /// The `X-Request-Id` the client sent.
    pub client_request_id: Option<String>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
    /// Newest first (else oldest first).
    pub newest_first: bool,
}

/// A store's events in log order (or reversed), keyed by global position.
pub async fn events(
    pool: &PgPool,
    store_id: Uuid,
    filter: &AuditFilter,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditEvent>, sqlx::Error> {
    let (direction, comparison) = if filter.newest_first {
        ("desc", "<")
    } else {
        ("asc", ">")
    };
    sqlx::query_as(&format!(
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
    .bind(store_id)
    .bind(filter.aggregate_type.as_deref())
    .bind(filter.aggregate_id.as_deref())
    .bind(filter.event_type.as_deref())
    .bind(filter.actor_id)
    .bind(filter.request_id.as_deref())
    .bind(filter.from)
    .bind(filter.to)
    .bind(after)
    .bind(limit)
    .bind(filter.client_request_id.as_deref())
    .fetch_all(pool)
    .await
}
