//! Replaying history: an aggregate's events as the event store holds them, its state at any
//! version or instant, and a store's KPI figures as they stood at the end of a day.
//!
//! Everything here reads the log itself, never a projection: an audit must be complete even
//! while the read models lag, and must not depend on them being right.
//!
//! - **History**: the events of one aggregate in sequence order with their metadata (who, in
//!   what role, through which channel, under which request, correlation and causation), each
//!   payload as stored — personal data inside stays sealed, and the older shapes that held it in
//!   clear are withheld ([`LoggedEvent::visible_payload`], the rule the live feeds share).
//! - **Time travel**: the aggregate's state after its events up to a version, or recorded up to
//!   an instant, upcast exactly as the event store loads them and applied through the
//!   aggregate's own `cqrs_es::Aggregate::apply` ([`EventStore::replay_until`]).
//! - **KPIs as of a day**: the store's events recorded up to the end of that local day replayed
//!   through the KPI projection's own fold into temporary tables
//!   (`projections::read_models::kpis::as_of`, whose doc says why the live tables cannot
//!   answer it, and what it costs).
//!
//! **Who may read what.** `ViewAuditTrail` in the aggregate's store, the store its first event
//! names (a Store is its own). An aggregate that does not exist, or one of a store where the
//! caller holds no role, is "not found" (its type's own refusal), so ids of other stores cannot
//! be probed; a role without the permission is forbidden. Accounts belong to no store: only
//! platform admins read an account's history, and its state is not offered at all (an account
//! registered by older builds holds its Telegram user id in clear in its state).

use std::collections::HashMap;

use aggregates::account::Account;
use aggregates::order::Order;
use aggregates::product::Product;
use aggregates::receipt::PaymentReceipt;
use aggregates::stock::Stock;
use aggregates::store::Store;
use aggregates::{EventMetadata, StoreId};
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use projections::event::store_of_aggregate;
use projections::log::{first_event, read_aggregate, LoggedEvent};
use projections::maintenance::MaintenanceError;
use projections::read_models::kpis::as_of::dashboard_as_of;
use projections::read_models::kpis::queries::Dashboard;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::app::event_store::Replayed;
use crate::app::{grant, App, AppError, Caller, PlatformAdmin, StoreAccess, Stored};

/// The aggregate types whose history can be read, by the names the event store keeps them
/// under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AggregateKind {
    Order,
    PaymentReceipt,
    Stock,
    Product,
    Store,
    /// Platform admins only; history only (see the module doc).
    Account,
}

impl AggregateKind {
    /// The `aggregate_type` its events are stored under.
    pub fn as_str(self) -> &'static str {
        match self {
            AggregateKind::Order => <Order as cqrs_es::Aggregate>::TYPE,
            AggregateKind::PaymentReceipt => <PaymentReceipt as cqrs_es::Aggregate>::TYPE,
            AggregateKind::Stock => <Stock as cqrs_es::Aggregate>::TYPE,
            AggregateKind::Product => <Product as cqrs_es::Aggregate>::TYPE,
            AggregateKind::Store => <Store as cqrs_es::Aggregate>::TYPE,
            AggregateKind::Account => <Account as cqrs_es::Aggregate>::TYPE,
        }
    }

    /// The refusal for "no such aggregate" of this type (also what a caller of another store
    /// is told).
    fn not_found(self) -> AppError {
        match self {
            AggregateKind::Order => Order::not_found(),
            AggregateKind::PaymentReceipt => PaymentReceipt::not_found(),
            AggregateKind::Stock => Stock::not_found(),
            AggregateKind::Product => Product::not_found(),
            AggregateKind::Store => Store::not_found(),
            AggregateKind::Account => Account::not_found(),
        }
    }
}

/// Proof that a caller may read the history of one aggregate: only
/// [`App::authorize_aggregate`] makes one.
#[derive(Debug)]
pub struct AggregateAccess {
    kind: AggregateKind,
    id: Uuid,
    /// The proof the caller showed.
    by: Authority,
}

#[derive(Debug)]
enum Authority {
    Store(StoreAccess<grant::ViewAuditTrail>),
    Platform(PlatformAdmin),
}

impl AggregateAccess {
    pub fn kind(&self) -> AggregateKind {
        self.kind
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The account reading.
    pub fn reader(&self) -> aggregates::AccountId {
        match &self.by {
            Authority::Store(access) => access.account_id(),
            Authority::Platform(admin) => admin.account_id(),
        }
    }

    /// The aggregate's store (`None` for an account, read on a platform admin's authority).
    pub fn store_id(&self) -> Option<StoreId> {
        match &self.by {
            Authority::Store(access) => Some(access.store_id()),
            Authority::Platform(_) => None,
        }
    }
}

/// One event of an aggregate's history.
#[derive(Clone, Debug)]
pub struct HistoryEvent {
    pub global_position: i64,
    pub transaction_id: i64,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub recorded_at: DateTime<Utc>,
    /// As stored; `None` when withheld (an older shape holding personal data in clear).
    pub payload: Option<serde_json::Value>,
    /// The metadata's known keys (never what older events kept beside them: client IPs, user
    /// agents).
    pub metadata: EventMetadata,
}

impl From<LoggedEvent> for HistoryEvent {
    fn from(raw: LoggedEvent) -> Self {
        let metadata = metadata_of(&raw);
        Self {
            payload: raw.visible_payload().cloned(),
            global_position: raw.global_position,
            transaction_id: raw.transaction_id,
            sequence: raw.sequence,
            event_type: raw.event_type,
            event_version: raw.event_version,
            recorded_at: raw.recorded_at,
            metadata,
        }
    }
}

/// The metadata of `raw`, read leniently: it describes an event, it never stops one being read.
fn metadata_of(raw: &LoggedEvent) -> EventMetadata {
    let map: HashMap<String, String> = raw
        .metadata
        .as_object()
        .map(|object| {
            object
                .iter()
                .filter_map(|(key, value)| value.as_str().map(|v| (key.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    EventMetadata::from_map(&map)
}

/// Which point of an aggregate's history to replay to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointInTime {
    /// Every event so far.
    Latest,
    /// The events up to this sequence.
    Version(i64),
    /// The events recorded at or before this instant.
    AsOf(DateTime<Utc>),
}

/// An aggregate's state at a point of its history.
#[derive(Clone, Debug)]
pub struct PastState {
    pub kind: AggregateKind,
    pub id: Uuid,
    /// Sequence of the last event applied.
    pub version: i64,
    /// Sequence of the aggregate's last event now.
    pub latest_version: i64,
    /// When the last event applied was recorded.
    pub recorded_at: DateTime<Utc>,
    /// The aggregate's state as it serializes (its own `Serialize`: an object).
    pub state: serde_json::Map<String, serde_json::Value>,
}

/// Why a point of history cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum PastRefused {
    /// Before its first event (version 0, or an instant before it was recorded).
    #[error("it did not exist then: no event of it was recorded by that point")]
    DidNotExistThen,
    /// Beyond what has happened so far: a version after its last event, or an instant (a day)
    /// still to come.
    #[error("that point has not been reached (yet): its history so far ends at version {latest_version}")]
    NotReached { latest_version: i64 },
    /// A store that did not exist by the end of the day asked for.
    #[error("the store did not exist by the end of that day")]
    StoreDidNotExistThen,
    /// A day that has not begun yet in the store's time zone.
    #[error("that day has not begun yet in the store's time zone")]
    DayNotReached,
    #[error(transparent)]
    App(#[from] AppError),
}

/// A store's KPI figures as they stood at the end of a local day.
#[derive(Clone, Debug)]
pub struct KpisAsOf {
    pub store_id: StoreId,
    /// The day asked for (the last day of the figures' range).
    pub day: NaiveDate,
    /// The first day of the figures' range.
    pub from: NaiveDate,
    /// The store's time zone at the end of that day, which decides when the day ended.
    pub timezone: String,
    /// The last instant counted: the end of the day, or now while the day has not ended.
    pub until: DateTime<Utc>,
    /// Whether the day has ended (else the figures are as they stand now and may still move).
    pub day_ended: bool,
    /// Events replayed to compute the figures.
    pub events_replayed: u64,
    /// `None` when no event of the store counted by then moved a figure.
    pub dashboard: Option<Dashboard>,
    /// The store's currency.
    pub currency: String,
}

/// The longest range of days one KPI request may cover (as the analytics do).
const MAX_KPI_DAYS: i64 = 3 * 366;

/// KPI replays running at once in this process: each holds a connection and works through a
/// store's history, so a burst of them must not take the pool from everything else.
static KPI_REPLAYS: Semaphore = Semaphore::const_new(2);

impl App {
    /// Proof that `caller` may read the history of aggregate `id` of type `kind` (see the
    /// module doc): the aggregate's own not-found refusal when it does not exist or belongs to
    /// a store where the caller holds no role, `Forbidden` for a role without
    /// `ViewAuditTrail` (and for accounts, anyone but a platform admin signed in themselves).
    #[tracing::instrument(skip(self, caller))]
    pub async fn authorize_aggregate(
        &self,
        caller: &Caller,
        kind: AggregateKind,
        id: Uuid,
    ) -> Result<AggregateAccess, AppError> {
        let key = id.to_string();
        let by = match kind {
            AggregateKind::Account => {
                let admin = self.require_platform_admin(caller).await?;
                if first_event(&self.pool, kind.as_str(), &key)
                    .await?
                    .is_none()
                {
                    return Err(kind.not_found());
                }
                Authority::Platform(admin)
            }
            _ => {
                let store = store_of_aggregate(&self.pool, kind.as_str(), &key)
                    .await?
                    .ok_or_else(|| kind.not_found())?;
                let access = self
                    .authorize_visible::<grant::ViewAuditTrail>(caller, store)
                    .await?
                    .ok_or_else(|| kind.not_found())?;
                Authority::Store(access)
            }
        };
        Ok(AggregateAccess { kind, id, by })
    }

    /// Up to `limit` events of the aggregate after sequence `after` (0: from its first), in
    /// sequence order, from the event store itself.
    #[tracing::instrument(
        skip(self, access),
        fields(reader = %access.reader(), kind = ?access.kind, id = %access.id)
    )]
    pub async fn aggregate_history(
        &self,
        access: &AggregateAccess,
        after: i64,
        limit: i64,
    ) -> Result<Vec<HistoryEvent>, AppError> {
        let events = read_aggregate(
            &self.pool,
            access.kind.as_str(),
            &access.id.to_string(),
            after,
            limit,
        )
        .await?;
        Ok(events.into_iter().map(HistoryEvent::from).collect())
    }

    /// The aggregate's state at `at`, replayed from its first event.
    #[tracing::instrument(
        skip(self, access),
        fields(reader = %access.reader(), kind = ?access.kind, id = %access.id)
    )]
    pub async fn aggregate_state(
        &self,
        access: &AggregateAccess,
        at: PointInTime,
    ) -> Result<PastState, PastRefused> {
        match access.kind {
            AggregateKind::Order => self.past::<Order>(access, at).await,
            AggregateKind::PaymentReceipt => self.past::<PaymentReceipt>(access, at).await,
            AggregateKind::Stock => self.past::<Stock>(access, at).await,
            AggregateKind::Product => self.past::<Product>(access, at).await,
            AggregateKind::Store => self.past::<Store>(access, at).await,
            AggregateKind::Account => Err(AppError::invalid(
                "type",
                "an account's state is not offered: older accounts hold their Telegram user id \
                 in clear in it; read its history instead",
            )
            .into()),
        }
    }

    async fn past<A: Stored + serde::Serialize>(
        &self,
        access: &AggregateAccess,
        at: PointInTime,
    ) -> Result<PastState, PastRefused> {
        let (up_to, until) = match at {
            PointInTime::Latest => (None, None),
            PointInTime::Version(version) => (Some(version), None),
            PointInTime::AsOf(instant) => (None, Some(instant)),
        };
        let Replayed {
            state,
            version,
            recorded_at,
            latest_version,
        } = self
            .events
            .replay_until::<A>(&access.id.to_string(), up_to, until)
            .await?;
        let beyond = match at {
            PointInTime::Latest => false,
            PointInTime::Version(asked) => asked > latest_version,
            // An instant still to come: what it will show is not known yet.
            PointInTime::AsOf(instant) => instant > crate::app::now(),
        };
        if beyond {
            return Err(PastRefused::NotReached { latest_version });
        }
        let Some(recorded_at) = recorded_at.filter(|_| version > 0) else {
            return Err(PastRefused::DidNotExistThen);
        };
        let state = match serde_json::to_value(&state) {
            Ok(serde_json::Value::Object(fields)) => fields,
            Ok(_) => {
                return Err(AppError::Internal(
                    format!("{} state does not serialize as an object", A::TYPE).into(),
                )
                .into())
            }
            Err(err) => return Err(AppError::Internal(Box::new(err)).into()),
        };
        Ok(PastState {
            kind: access.kind,
            id: access.id,
            version,
            latest_version,
            recorded_at,
            state,
        })
    }

    /// The KPI figures of the store for its local days `from..=day`, as they stood at the end
    /// of `day` in the store's time zone: only events recorded by then count (replayed, see
    /// the module doc). A day still under way gives the figures as they stand now.
    #[tracing::instrument(
        skip(self, access),
        fields(reader = %access.account_id(), store_id = %access.store_id())
    )]
    pub async fn store_kpis_as_of(
        &self,
        access: &StoreAccess<grant::ViewAuditTrail>,
        day: NaiveDate,
        from: Option<NaiveDate>,
    ) -> Result<KpisAsOf, PastRefused> {
        use chrono::Datelike;
        let from = from.unwrap_or(day);
        for (field, date) in [("as_of", day), ("from", from)] {
            if !(1..=9999).contains(&date.year()) {
                return Err(AppError::invalid(field, "a day between the years 1 and 9999").into());
            }
        }
        if from > day {
            return Err(AppError::invalid("from", "`from` must not be after `as_of`").into());
        }
        if (day - from).num_days() >= MAX_KPI_DAYS {
            return Err(AppError::invalid(
                "from",
                format!("a range may span at most {MAX_KPI_DAYS} days"),
            )
            .into());
        }
        let store_id = access.store_id();
        let (zone, store) = self.zone_at_end_of(store_id, day).await?;
        let Some(store) = store else {
            return Err(PastRefused::StoreDidNotExistThen);
        };
        let now = crate::app::now();
        if day_start(zone, day) > now {
            return Err(PastRefused::DayNotReached);
        }
        let end = day_end(zone, day);
        let (until, day_ended) = if end > now { (now, false) } else { (end, true) };
        let _turn = KPI_REPLAYS
            .acquire()
            .await
            .map_err(|_| AppError::Unavailable("KPI replays are closed".into()))?;
        let replayed = dashboard_as_of(&self.pool, store_id.0, until, from, day)
            .await
            .map_err(|err| match err {
                MaintenanceError::Database(err) => AppError::from(err),
                other => AppError::Internal(Box::new(other)),
            })?;
        Ok(KpisAsOf {
            store_id,
            day,
            from,
            timezone: zone.name().to_owned(),
            until,
            day_ended,
            events_replayed: replayed.events,
            dashboard: replayed.dashboard,
            currency: store
                .currency()
                .map(|c| c.code().to_owned())
                .unwrap_or_default(),
        })
    }

    /// The store's time zone in force when `day` ended there, and the store as it was then
    /// (`None`: not created by then). The end of a day depends on the zone, and the zone on
    /// when a change of it was recorded: starting from today's zone, the store is replayed to
    /// the end of the day in the zone it had then, until the two agree (a zone changed twice
    /// around one midnight settles within a few rounds; the last one is kept).
    async fn zone_at_end_of(
        &self,
        store_id: StoreId,
        day: NaiveDate,
    ) -> Result<(Tz, Option<Store>), AppError> {
        let zone_of = |store: &Store| store.timezone().parse::<Tz>().unwrap_or(chrono_tz::UTC);
        let mut zone = zone_of(&self.stores.load(&store_id.to_string()).await?);
        let mut then = None;
        for _ in 0..4 {
            let replayed = self
                .events
                .replay_until::<Store>(&store_id.to_string(), None, Some(day_end(zone, day)))
                .await?;
            if !replayed.state.is_created() {
                return Ok((zone, None));
            }
            let zone_then = zone_of(&replayed.state);
            then = Some(replayed.state);
            if zone_then == zone {
                break;
            }
            zone = zone_then;
        }
        Ok((zone, then))
    }
}

/// The first instant of local day `day` in `zone` (a midnight skipped by a clock change: the
/// first instant of the day that exists).
fn day_start(zone: Tz, day: NaiveDate) -> DateTime<Utc> {
    let midnight = day.and_time(NaiveTime::MIN);
    (0..=3)
        .find_map(|hours| {
            zone.from_local_datetime(&(midnight + Duration::hours(hours)))
                .earliest()
        })
        .map(|start| start.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&midnight))
}

/// The last instant of local day `day` in `zone` that the event store can record (it keeps
/// microseconds): just before the next day starts.
fn day_end(zone: Tz, day: NaiveDate) -> DateTime<Utc> {
    let next = day.succ_opt().unwrap_or(day);
    day_start(zone, next) - Duration::microseconds(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_ends_just_before_the_next_one_starts_in_the_stores_zone() {
        let moscow: Tz = "Europe/Moscow".parse().expect("zone");
        let day = NaiveDate::from_ymd_opt(2026, 11, 30).expect("day");
        assert_eq!(
            day_start(moscow, day).to_rfc3339(),
            "2026-11-29T21:00:00+00:00"
        );
        assert_eq!(
            day_end(moscow, day).to_rfc3339(),
            "2026-11-30T20:59:59.999999+00:00"
        );
    }

    #[test]
    fn a_midnight_skipped_by_a_clock_change_starts_the_day_at_its_first_hour() {
        // Santiago moved its clocks from 00:00 to 01:00 on 2022-09-11.
        let santiago: Tz = "America/Santiago".parse().expect("zone");
        let day = NaiveDate::from_ymd_opt(2022, 9, 11).expect("day");
        assert_eq!(
            day_start(santiago, day).to_rfc3339(),
            "2022-09-11T04:00:00+00:00"
        );
    }

    #[test]
    fn the_kinds_are_the_event_stores_type_names() {
        let names: Vec<&str> = [
            AggregateKind::Order,
            AggregateKind::PaymentReceipt,
            AggregateKind::Stock,
            AggregateKind::Product,
            AggregateKind::Store,
            AggregateKind::Account,
        ]
        .map(AggregateKind::as_str)
        .to_vec();
        assert_eq!(
            names,
            [
                "Order",
                "PaymentReceipt",
                "Stock",
                "Product",
                "Store",
                "Account"
            ]
        );
    }
}
