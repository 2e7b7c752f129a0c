//! `/api/v1/audit/aggregates/*` and `/api/v1/audit/stores/{store_id}/kpis`: replaying history.
//! One aggregate's events from the event store itself, its state at a version or an instant,
//! and a store's KPI figures as they stood at the end of a day (`app::audit::history`).

use std::collections::BTreeMap;
use std::sync::Arc;

use aggregates::store::StoreError;
use aggregates::StoreId;
use chrono::{DateTime, NaiveDate, Utc};
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};
use uuid::Uuid;

use super::analytics::{dashboard_view, DashboardView};
use super::audit::ApiTags;
use super::auth::BearerAuth;
use super::context::caller;
use super::error::ApiError;
use super::problem::Problem;
use super::types::{decode_cursor, page_of, page_size, Page};
use crate::app::audit::history::{
    AggregateKind, HistoryEvent, KpisAsOf, PastRefused, PastState, PointInTime,
};
use crate::app::{grant, App, AppError};

/// An aggregate type whose history can be read. `Account`: platform admins only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[oai(rename = "AuditAggregateType")]
pub enum AggregateTypeName {
    Order,
    PaymentReceipt,
    Stock,
    Product,
    Store,
    Account,
}

impl From<AggregateTypeName> for AggregateKind {
    fn from(name: AggregateTypeName) -> Self {
        match name {
            AggregateTypeName::Order => AggregateKind::Order,
            AggregateTypeName::PaymentReceipt => AggregateKind::PaymentReceipt,
            AggregateTypeName::Stock => AggregateKind::Stock,
            AggregateTypeName::Product => AggregateKind::Product,
            AggregateTypeName::Store => AggregateKind::Store,
            AggregateTypeName::Account => AggregateKind::Account,
        }
    }
}

/// An aggregate type whose past state can be computed (not `Account`: older accounts hold
/// their Telegram user id in clear in their state).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[oai(rename = "AuditStateAggregateType")]
pub enum StateTypeName {
    Order,
    PaymentReceipt,
    Stock,
    Product,
    Store,
}

impl From<StateTypeName> for AggregateKind {
    fn from(name: StateTypeName) -> Self {
        match name {
            StateTypeName::Order => AggregateKind::Order,
            StateTypeName::PaymentReceipt => AggregateKind::PaymentReceipt,
            StateTypeName::Stock => AggregateKind::Stock,
            StateTypeName::Product => AggregateKind::Product,
            StateTypeName::Store => AggregateKind::Store,
        }
    }
}

/// One event of an aggregate's history, with its metadata.
#[derive(Debug, Object)]
#[oai(rename = "AuditAggregateEvent")]
pub struct AggregateEventView {
    /// Position in the global log.
    pub global_position: i64,
    /// The writing transaction's id: events of one decision share it.
    pub transaction_id: i64,
    /// Position in the aggregate's own history (1 for its first event).
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// When the event was recorded (its transaction began).
    pub recorded_at: DateTime<Utc>,
    /// The event as stored (personal data inside is sealed); absent when withheld.
    #[oai(skip_serializing_if_is_none)]
    pub payload: Option<serde_json::Value>,
    /// The payload is withheld: an older shape that held personal data in clear (`Account`
    /// events of version 1.0 with a Telegram user id).
    pub payload_withheld: bool,
    /// The account that issued the command (absent: the system itself).
    #[oai(skip_serializing_if_is_none)]
    pub actor_id: Option<Uuid>,
    /// The capacity it acted in (`OWNER`, `CUSTOMER`, `SYSTEM`, ...).
    pub actor_role: String,
    /// `api`, `telegram` or `system`.
    pub channel: String,
    /// The id this service gave the request (its `X-Request-Id` response header), the bot
    /// update or the job.
    pub request_id: String,
    /// The `X-Request-Id` the client sent, if any.
    #[oai(skip_serializing_if_is_none)]
    pub client_request_id: Option<String>,
    /// Shared by every command issued for one intent.
    #[oai(skip_serializing_if_is_none)]
    pub correlation_id: Option<Uuid>,
    /// The global position of the event that caused this one (process managers).
    #[oai(skip_serializing_if_is_none)]
    pub causation_position: Option<i64>,
}

impl From<HistoryEvent> for AggregateEventView {
    fn from(event: HistoryEvent) -> Self {
        let metadata = event.metadata;
        Self {
            global_position: event.global_position,
            transaction_id: event.transaction_id,
            sequence: event.sequence,
            event_type: event.event_type,
            event_version: event.event_version,
            recorded_at: event.recorded_at,
            payload_withheld: event.payload.is_none(),
            payload: event.payload,
            actor_id: metadata.actor_id.map(|id| id.0),
            actor_role: metadata.actor_role.as_str().to_owned(),
            channel: metadata.channel.as_str().to_owned(),
            request_id: metadata.request_id,
            client_request_id: metadata.client_request_id,
            correlation_id: Some(metadata.correlation_id).filter(|id| !id.is_nil()),
            causation_position: metadata.causation_position,
        }
    }
}

/// An aggregate's state at a point of its history.
#[derive(Debug, Object)]
#[oai(rename = "AuditAggregateState")]
pub struct AggregateStateView {
    pub aggregate_type: String,
    pub aggregate_id: Uuid,
    /// The version reached: the sequence of the last event applied.
    pub version: i64,
    /// The aggregate's version now (its last event's sequence).
    pub latest_version: i64,
    /// When the last event applied was recorded.
    pub recorded_at: DateTime<Utc>,
    /// The aggregate's state as it serializes, a free-form object whose shape is the
    /// aggregate's own (`aggregates/src/<aggregate>.rs`); personal data in it stays sealed.
    pub state: BTreeMap<String, serde_json::Value>,
}

impl From<PastState> for AggregateStateView {
    fn from(past: PastState) -> Self {
        Self {
            aggregate_type: past.kind.as_str().to_owned(),
            aggregate_id: past.id,
            version: past.version,
            latest_version: past.latest_version,
            recorded_at: past.recorded_at,
            state: past.state.into_iter().collect(),
        }
    }
}

/// A store's KPI figures as they stood at the end of a local day.
#[derive(Debug, Object)]
#[oai(rename = "AuditKpisAsOf")]
pub struct KpisAsOfView {
    pub store_id: Uuid,
    /// The day asked for: the figures count only events recorded by its end.
    pub as_of: NaiveDate,
    /// The store's time zone when that day ended, which decides when it ended.
    pub timezone: String,
    /// The last instant counted: the end of the day, or now while it has not ended.
    pub until: DateTime<Utc>,
    /// `false` while the day is still under way (the figures may still move).
    pub day_ended: bool,
    /// Events of the store replayed to compute the figures.
    pub events_replayed: i64,
    /// The figures for local days `from..=as_of` (`orders_by_status`: as the orders stood at
    /// `until`).
    pub figures: DashboardView,
}

impl KpisAsOfView {
    fn of(kpis: KpisAsOf) -> Result<Self, ApiError> {
        Ok(Self {
            store_id: kpis.store_id.0,
            as_of: kpis.day,
            timezone: kpis.timezone,
            until: kpis.until,
            day_ended: kpis.day_ended,
            events_replayed: i64::try_from(kpis.events_replayed).unwrap_or(i64::MAX),
            figures: dashboard_view(
                kpis.dashboard,
                kpis.store_id.0,
                kpis.from,
                kpis.day,
                kpis.currency,
            )?,
        })
    }
}

impl From<PastRefused> for ApiError {
    fn from(refused: PastRefused) -> Self {
        let detail = refused.to_string();
        match refused {
            PastRefused::DidNotExistThen | PastRefused::StoreDidNotExistThen => {
                ApiError::not_found("did-not-exist-then", detail)
            }
            PastRefused::NotReached { .. } | PastRefused::DayNotReached => ApiError::Conflict(
                Json(Problem::new("not-reached-yet", "Conflict", 409, detail)),
            ),
            PastRefused::App(err) => err.into(),
        }
    }
}

pub struct AuditHistoryApi {
    pub app: Arc<App>,
}

#[OpenApi(prefix_path = "/api/v1/audit", tag = "ApiTags::Audit")]
impl AuditHistoryApi {
    /// Every event of one aggregate, oldest first, with its metadata: read from the event
    /// store itself, so complete even while the read models lag. Needs `ViewAuditTrail` in the
    /// aggregate's store (an `Account`: a platform admin); an aggregate of a store where the
    /// caller holds no role is not found.
    #[oai(
        path = "/aggregates/:type/:id/events",
        method = "get",
        operation_id = "audit_aggregate_events"
    )]
    async fn events(
        &self,
        req: &Request,
        auth: BearerAuth,
        /// `Order`, `PaymentReceipt`, `Stock`, `Product`, `Store` or `Account`.
        #[oai(name = "type")]
        aggregate_type: Path<AggregateTypeName>,
        /// The aggregate's id (a stock item's is its product's).
        id: Path<Uuid>,
        cursor: Query<Option<String>>,
        /// Page size, 1 to 200 (default 50).
        limit: Query<Option<u32>>,
    ) -> Result<Json<Page<AggregateEventView>>, ApiError> {
        let caller = caller(req, auth.0);
        let access = self
            .app
            .authorize_aggregate(&caller, aggregate_type.0.into(), id.0)
            .await?;
        let limit = page_size(limit.0);
        let after: i64 = cursor
            .0
            .as_deref()
            .map(decode_cursor)
            .transpose()?
            .unwrap_or(0);
        let events = self
            .app
            .aggregate_history(&access, after, limit + 1)
            .await?;
        Ok(Json(page_of(
            events,
            limit,
            |e| e.sequence,
            AggregateEventView::from,
        )))
    }

    /// The aggregate's state at a version (`version`: after its events up to that sequence)
    /// or an instant (`as_of`: after the events recorded by then), replayed from its events
    /// through the aggregate's own rules; its current state with neither. Before its first
    /// event: 404 `did-not-exist-then`; past its last version or in the future: 409
    /// `not-reached-yet`.
    #[oai(
        path = "/aggregates/:type/:id/state",
        method = "get",
        operation_id = "audit_aggregate_state"
    )]
    async fn state(
        &self,
        req: &Request,
        auth: BearerAuth,
        /// `Order`, `PaymentReceipt`, `Stock`, `Product` or `Store`.
        #[oai(name = "type")]
        aggregate_type: Path<StateTypeName>,
        id: Path<Uuid>,
        /// A sequence of the aggregate's events (0: before its first).
        #[oai(validator(minimum(value = "0")))]
        version: Query<Option<i64>>,
        /// An RFC 3339 instant (`+` in an offset must be sent as `%2B`).
        as_of: Query<Option<DateTime<Utc>>>,
    ) -> Result<Json<AggregateStateView>, ApiError> {
        let at = match (version.0, as_of.0) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "version-or-as-of",
                    "give `version` or `as_of`, not both",
                ))
            }
            (Some(version), None) => PointInTime::Version(version),
            (None, Some(instant)) => PointInTime::AsOf(instant),
            (None, None) => PointInTime::Latest,
        };
        let caller = caller(req, auth.0);
        let access = self
            .app
            .authorize_aggregate(&caller, aggregate_type.0.into(), id.0)
            .await?;
        let past = self.app.aggregate_state(&access, at).await?;
        Ok(Json(past.into()))
    }

    /// The store's KPI figures as they stood at the end of local day `as_of` in its time zone:
    /// only events recorded by then count (replayed from the log; a later payment never moves
    /// an earlier day's figures). Needs `ViewAuditTrail`. A day still under way gives the
    /// figures as they stand now (`day_ended: false`); a day to come: 409 `not-reached-yet`;
    /// before the store existed: 404 `did-not-exist-then`.
    #[oai(
        path = "/stores/:store_id/kpis",
        method = "get",
        operation_id = "audit_store_kpis"
    )]
    async fn kpis(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Path<Uuid>,
        /// The local day (`YYYY-MM-DD`) whose end the figures are as of.
        as_of: Query<NaiveDate>,
        /// The first local day of the figures (default: `as_of`, the day alone).
        from: Query<Option<NaiveDate>>,
    ) -> Result<Json<KpisAsOfView>, ApiError> {
        let caller = caller(req, auth.0);
        let access = self
            .app
            .authorize_visible::<grant::ViewAuditTrail>(&caller, StoreId(store_id.0))
            .await?
            .ok_or_else(|| ApiError::from(AppError::from(StoreError::NotFound)))?;
        let kpis = self.app.store_kpis_as_of(&access, as_of.0, from.0).await?;
        Ok(Json(KpisAsOfView::of(kpis)?))
    }
}
