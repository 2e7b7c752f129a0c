//! `/api/v1/audit/events`: the audit trail of a store, filtered and paginated. Every event with
//! who did it, through what, from where, under which request id. `/api/v1/audit/events.csv`:
//! the same rows as CSV, streamed. `/api/v1/audit/export`: a slice of the log itself as NDJSON,
//! streamed (the line format and its guarantees: `app::audit::export`).

use std::sync::Arc;

use aggregates::{AccountId, StoreId};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, TryStreamExt};
use poem::{Body, Request};
use poem_openapi::param::Query;
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use sqlx::PgPool;
use uuid::Uuid;

use projections::read_models::audit::queries::{self as audit, AuditFilter};

use super::auth::BearerAuth;
use super::context::caller;
use super::error::ApiError;
use super::types::{decode_cursor, page_of, page_size, Page};
use crate::app::audit::export::ExportFilter;
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

/// A slice of the log as NDJSON.
#[derive(ApiResponse)]
pub enum AuditExport {
    /// One event per line, in log order (docs/auditing.md: the line format), streamed as it is
    /// read. `X-Export-Up-To` is the global position the slice ends at (the log's head when the
    /// export started): export again `after` it for what came since. A body cut short ends
    /// with a whole line: resume `after` the last `position` received.
    #[oai(status = 200, content_type = "application/x-ndjson")]
    Ndjson(Binary<Body>, #[oai(header = "X-Export-Up-To")] i64),
}

/// The audit trail as CSV.
#[derive(ApiResponse)]
pub enum AuditCsv {
    /// A header row, then one row per event with the columns of `AuditEvent` (`payload` as JSON
    /// text), streamed as it is read.
    #[oai(status = 200, content_type = "text/csv; charset=utf-8")]
    Csv(Binary<Body>, #[oai(header = "Content-Disposition")] String),
}

/// The columns of the CSV, in order: the fields of [`AuditEventView`].
pub const CSV_COLUMNS: [&str; 18] = [
    "global_position",
    "aggregate_type",
    "aggregate_id",
    "sequence",
    "event_type",
    "event_version",
    "store_id",
    "actor_id",
    "actor_role",
    "channel",
    "request_id",
    "client_request_id",
    "correlation_id",
    "causation_position",
    "client_ip",
    "user_agent",
    "payload",
    "recorded_at",
];

/// Rows of the audit trail read per query for the CSV.
const CSV_PAGE: i64 = 1_000;

/// One CSV row of `event`. Texts a client chose (its request id, its user agent) that a
/// spreadsheet would run as a formula get a leading `'` (OWASP's advice on CSV injection).
fn csv_row(event: &audit::AuditEvent) -> [String; 18] {
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    let defused = |value: &Option<String>| match value.as_deref() {
        Some(v) if v.starts_with(['=', '+', '-', '@', '\t', '\r']) => format!("'{v}"),
        other => other.unwrap_or_default().to_owned(),
    };
    let shown = |value: Option<String>| value.unwrap_or_default();
    let payload = if aggregates::upcast::holds_clear_personal_data(
        &event.aggregate_type,
        &event.event_type,
        &event.event_version,
    ) {
        "null".to_owned()
    } else {
        event.payload.to_string()
    };
    [
        event.global_position.to_string(),
        event.aggregate_type.clone(),
        event.aggregate_id.clone(),
        event.sequence.to_string(),
        event.event_type.clone(),
        event.event_version.clone(),
        shown(event.store_id.map(|id| id.to_string())),
        shown(event.actor_id.map(|id| id.to_string())),
        event.actor_role.clone(),
        event.channel.clone(),
        event.request_id.clone(),
        defused(&event.client_request_id),
        shown(event.correlation_id.map(|id| id.to_string())),
        shown(event.causation_position.map(|p| p.to_string())),
        text(&event.client_ip),
        defused(&event.user_agent),
        payload,
        event
            .recorded_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    ]
}

/// Where a CSV export is.
struct CsvPages {
    pool: PgPool,
    store_id: Uuid,
    filter: AuditFilter,
    after: Option<i64>,
    /// Oldest first: the newest matching row when the export started (rows the audit trail
    /// gains meanwhile are left for the next export).
    bound: Option<i64>,
    header: bool,
    done: bool,
}

impl CsvPages {
    /// The next chunk of CSV (the header with the first), `None` at the end.
    async fn next(&mut self) -> Result<Option<Bytes>, std::io::Error> {
        if self.done {
            return Ok(None);
        }
        let mut writer = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(Vec::new());
        if !self.header {
            writer.write_record(CSV_COLUMNS)?;
            self.header = true;
        }
        let rows = audit::events(
            &self.pool,
            self.store_id,
            &self.filter,
            self.after,
            CSV_PAGE,
        )
        .await
        .map_err(|err| export_failed(AppError::from(err)))?;
        self.done = (rows.len() as i64) < CSV_PAGE;
        for row in &rows {
            if !self.filter.newest_first && self.bound.is_none_or(|b| row.global_position > b) {
                self.done = true;
                break;
            }
            writer.write_record(csv_row(row))?;
            self.after = Some(row.global_position);
        }
        let chunk = writer
            .into_inner()
            .map_err(|err| std::io::Error::other(err.to_string()))?;
        Ok(Some(Bytes::from(chunk)))
    }

    fn into_stream(self) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        futures::stream::try_unfold(self, |mut pages| async move {
            Ok(pages.next().await?.map(|chunk| (chunk, pages)))
        })
    }
}

/// What a stream that fails after its first byte does: log why, and end the body (the client
/// sees it cut short, never a half line).
fn export_failed(err: AppError) -> std::io::Error {
    tracing::warn!(error = %err, "an audit export stopped");
    std::io::Error::other(err.to_string())
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

    /// A store's audit trail as CSV (the rows of `GET /api/v1/audit/events`, with the same
    /// filters, all of them rather than a page), streamed.
    #[oai(
        path = "/events.csv",
        method = "get",
        operation_id = "audit_events_csv"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn events_csv(
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
    ) -> Result<AuditCsv, ApiError> {
        let caller = caller(req, auth.0);
        let access = self
            .app
            .authorize::<grant::ViewAuditTrail>(&caller, StoreId(store_id.0))
            .await?;
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
        let store_id = access.store_id().0;
        // Oldest first ends at the newest row there is now: an export under a busy store ends.
        let bound = if filter.newest_first {
            None
        } else {
            let newest = AuditFilter {
                newest_first: true,
                ..filter.clone()
            };
            audit::events(&self.app.pool, store_id, &newest, None, 1)
                .await
                .map_err(AppError::from)?
                .first()
                .map(|row| row.global_position)
        };
        let pages = CsvPages {
            pool: self.app.pool.clone(),
            store_id,
            done: !filter.newest_first && bound.is_none(),
            filter,
            after: None,
            bound,
            header: false,
        };
        Ok(AuditCsv::Csv(
            Binary(Body::from_bytes_stream(pages.into_stream())),
            format!("attachment; filename=\"audit-events-{store_id}.csv\""),
        ))
    }

    /// A slice of the log as NDJSON, streamed: a store's events (`ViewAuditTrail` there, as an
    /// AUDITOR's API token has) or, without `store_id`, the whole platform's (platform admins),
    /// after `after` and up to the log's head when the export starts, filtered. Payloads and
    /// metadata as stored, personal data sealed (docs/auditing.md).
    #[oai(path = "/export", method = "get", operation_id = "audit_export")]
    #[allow(clippy::too_many_arguments)]
    async fn export(
        &self,
        req: &Request,
        auth: BearerAuth,
        /// The store whose events to export; without it, the whole platform's.
        store_id: Query<Option<Uuid>>,
        /// `Order`, `PaymentReceipt`, `Stock`, `Product`, `Store`, `Account`.
        #[oai(validator(max_length = 50))]
        aggregate_type: Query<Option<String>>,
        /// Recorded at or after.
        from: Query<Option<DateTime<Utc>>>,
        /// Recorded before.
        to: Query<Option<DateTime<Utc>>>,
        /// Events of commands this account issued.
        actor_id: Query<Option<Uuid>>,
        /// Only events after this global position (the last `position` received, to resume;
        /// `0`: from the beginning). A position no event has is refused (422).
        after: Query<Option<i64>>,
    ) -> Result<AuditExport, ApiError> {
        let caller = caller(req, auth.0);
        let filter = ExportFilter {
            store_id: store_id.0.map(StoreId),
            aggregate_type: aggregate_type.0,
            from: from.0,
            to: to.0,
            actor_id: actor_id.0.map(AccountId),
        };
        let export = self.app.audit_export(&caller, filter, after.0).await?;
        let up_to = export.end().global_position;
        let body = export.into_stream().map_err(export_failed);
        Ok(AuditExport::Ndjson(
            Binary(Body::from_bytes_stream(body)),
            up_to,
        ))
    }
}
