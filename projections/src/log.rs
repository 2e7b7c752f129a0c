//! The global log: every event of every aggregate, in one gap-free order.
//!
//! postgres-es orders events only within an aggregate. Our migration adds `global_position`
//! (a sequence), `transaction_id` (the writer's `xid8`) and `recorded_at` to its `events` table.
//! A sequence value is taken when a row is inserted, not when its transaction commits, so a
//! reader that followed `global_position` alone could pass position 7 before the transaction
//! holding position 6 commits, and never see 6. This reader therefore
//!
//! - orders by `(transaction_id, global_position)`, and
//! - returns only rows whose transaction is older than every transaction still running
//!   (`transaction_id < pg_snapshot_xmin(pg_current_snapshot())`).
//!
//! Every transaction below that horizon has ended, so no row can later appear before a position
//! already returned: reading after a checkpoint returns each event exactly once, in one order that
//! every reader (and every rebuild) sees identically. The price is that a long-running
//! transaction holds readers back until it ends (docs/adr/0001-global-log.md).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use sqlx::{FromRow, PgPool};

/// The channel the `events` insert trigger notifies (once per writing transaction).
pub const NOTIFY_CHANNEL: &str = "shopfront_events";

/// A place in the global log. Positions are totally ordered; `START` is before every event.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogPosition {
    /// The writing transaction's id (`xid8`, which never wraps around).
    pub transaction_id: i64,
    /// The event's `global_position` (unique, increasing within a transaction).
    pub global_position: i64,
}

impl LogPosition {
    /// Before the first event.
    pub const START: LogPosition = LogPosition {
        transaction_id: 0,
        global_position: 0,
    };
}

/// One event as the global log returns it.
#[derive(Clone, Debug, PartialEq, FromRow)]
pub struct LoggedEvent {
    pub transaction_id: i64,
    pub global_position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

impl LoggedEvent {
    /// This event's place in the global log.
    pub fn position(&self) -> LogPosition {
        LogPosition {
            transaction_id: self.transaction_id,
            global_position: self.global_position,
        }
    }

    /// The payload as it may be handed out: as stored (personal data inside is sealed), except
    /// the older shapes that held personal data in clear
    /// ([`aggregates::upcast::holds_clear_personal_data`]), which are withheld (`None`).
    pub fn visible_payload(&self) -> Option<&serde_json::Value> {
        let clear = aggregates::upcast::holds_clear_personal_data(
            &self.aggregate_type,
            &self.event_type,
            &self.event_version,
        );
        (!clear).then_some(&self.payload)
    }
}

/// The columns of a [`LoggedEvent`], for every query that reads whole events.
const LOGGED_EVENT: &str = "e.transaction_id::text::bigint as transaction_id, e.global_position, \
     e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, e.event_version, e.payload, \
     e.metadata, e.recorded_at";

/// Whether event `e` belongs to store `$1` (a uuid): the Store aggregate itself, or an aggregate
/// whose first event names the store (`projections::event::store_of`'s `Named` events all carry
/// it as `store_id`). Accounts belong to no store.
const OF_STORE: &str = "((e.aggregate_type = 'Store' and e.aggregate_id = $1::text) \
     or exists (select 1 from events f \
                 where f.aggregate_type = e.aggregate_type \
                   and f.aggregate_id = e.aggregate_id and f.sequence = 1 \
                   and f.payload -> f.event_type ->> 'store_id' = $1::text))";

/// Reads the global log. Cheap to clone (it holds a pool).
#[derive(Clone, Debug)]
pub struct GlobalLog {
    pool: PgPool,
}

impl GlobalLog {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Up to `limit` events after `after`, in log order, all from committed transactions below
    /// the visibility horizon. An empty result means "nothing more visible yet", not "the end".
    pub async fn read_after(
        &self,
        after: LogPosition,
        limit: i64,
    ) -> Result<Vec<LoggedEvent>, sqlx::Error> {
        read_between(&self.pool, after, None, limit).await
    }

    /// The position of the last event visible to readers now, if any.
    pub async fn head(&self) -> Result<Option<LogPosition>, sqlx::Error> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "select transaction_id::text::bigint, global_position
               from events
              where transaction_id < pg_snapshot_xmin(pg_current_snapshot())
              order by transaction_id desc, global_position desc
              limit 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(transaction_id, global_position)| LogPosition {
            transaction_id,
            global_position,
        }))
    }

    /// A listener woken (at commit) whenever events are appended. Notifications only say
    /// "look again": a reader still reads from its checkpoint, and also polls as a fallback.
    pub async fn listen(&self) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        Ok(listener)
    }
}

/// Up to `limit` visible events after `after` and, when `up_to` is given, not after it, in log
/// order, read through any executor (a projection reads inside its own transaction).
pub async fn read_between<'e, E>(
    executor: E,
    after: LogPosition,
    up_to: Option<LogPosition>,
    limit: i64,
) -> Result<Vec<LoggedEvent>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    let up_to = up_to.unwrap_or(LogPosition {
        transaction_id: i64::MAX,
        global_position: i64::MAX,
    });
    sqlx::query_as::<_, LoggedEvent>(
        "select transaction_id::text::bigint as transaction_id, global_position,
                aggregate_type, aggregate_id, sequence, event_type, event_version,
                payload, metadata, recorded_at
           from events
          where (transaction_id, global_position) > ($1::bigint::text::xid8, $2)
            and (transaction_id, global_position) <= ($3::bigint::text::xid8, $4)
            and transaction_id < pg_snapshot_xmin(pg_current_snapshot())
          -- qualified: the bare name would sort by the output alias (a cast), not the index
          order by events.transaction_id, events.global_position
          limit $5",
    )
    .bind(after.transaction_id)
    .bind(after.global_position)
    .bind(up_to.transaction_id)
    .bind(up_to.global_position)
    .bind(limit)
    .fetch_all(executor)
    .await
}

/// The position of the last committed event, visible to readers yet or not (a long transaction
/// elsewhere can hide it below the horizon for a while). `None` for an empty log.
pub async fn last_committed<'e, E>(executor: E) -> Result<Option<LogPosition>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    let row: Option<(i64, i64)> = sqlx::query_as(
        "select transaction_id::text::bigint, global_position from events
          order by transaction_id desc, global_position desc limit 1",
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|(transaction_id, global_position)| LogPosition {
        transaction_id,
        global_position,
    }))
}

/// The full position of the event at `global_position` (its writer's transaction id beside
/// it), for a writer that knows only the global position of its last event and must wait for
/// readers to pass it. `None` when no event has that position.
pub async fn position_of<'e, E>(
    executor: E,
    global_position: i64,
) -> Result<Option<LogPosition>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    let transaction_id: Option<i64> = sqlx::query_scalar(
        "select transaction_id::text::bigint from events where global_position = $1",
    )
    .bind(global_position)
    .fetch_optional(executor)
    .await?;
    Ok(transaction_id.map(|transaction_id| LogPosition {
        transaction_id,
        global_position,
    }))
}

/// The first event of one aggregate (what names its store), committed, visible yet or not;
/// `None` when the aggregate has no events.
pub async fn first_event<'e, E>(
    executor: E,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Option<LoggedEvent>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    sqlx::query_as::<_, LoggedEvent>(&format!(
        "select {LOGGED_EVENT} from events e
          where e.aggregate_type = $1 and e.aggregate_id = $2
          order by e.sequence limit 1"
    ))
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_optional(executor)
    .await
}

/// Up to `limit` events of one aggregate after sequence `after`, in sequence order: its whole
/// committed history, whatever the projections have read. An aggregate's sequence has no gaps
/// that fill later (its next event is decided on the committed one before), so paging by
/// sequence never skips an event.
pub async fn read_aggregate<'e, E>(
    executor: E,
    aggregate_type: &str,
    aggregate_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<LoggedEvent>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    sqlx::query_as::<_, LoggedEvent>(&format!(
        "select {LOGGED_EVENT} from events e
          where e.aggregate_type = $1 and e.aggregate_id = $2 and e.sequence > $3
          order by e.sequence limit $4"
    ))
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(after)
    .bind(limit)
    .fetch_all(executor)
    .await
}

/// [`read_between`] for one store's events (see `OF_STORE`): up to `limit` after `after` and not
/// after `up_to`, in log order. Positions up to `up_to` are below the horizon already (the
/// caller got `up_to` from a reader that honours it).
pub async fn read_store_between<'e, E>(
    executor: E,
    store_id: uuid::Uuid,
    after: LogPosition,
    up_to: LogPosition,
    limit: i64,
) -> Result<Vec<LoggedEvent>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    sqlx::query_as::<_, LoggedEvent>(&format!(
        "select {LOGGED_EVENT} from events e
          where {OF_STORE}
            and (e.transaction_id, e.global_position) > ($2::bigint::text::xid8, $3)
            and (e.transaction_id, e.global_position) <= ($4::bigint::text::xid8, $5)
          order by e.transaction_id, e.global_position
          limit $6"
    ))
    .bind(store_id)
    .bind(after.transaction_id)
    .bind(after.global_position)
    .bind(up_to.transaction_id)
    .bind(up_to.global_position)
    .bind(limit)
    .fetch_all(executor)
    .await
}

/// Up to `limit` events of store `store_id` (see `OF_STORE`) of the given aggregate types,
/// recorded at or before `until`, after `after`, in log order: the store's history as it stood
/// at `until`. An event is recorded when its transaction began (`recorded_at`), so one whose
/// transaction began before `until` and committed after it counts once it has committed.
///
/// Read in one repeatable-read transaction when paging: a transaction committing between two
/// pages could otherwise land before a position already passed.
pub async fn read_store_recorded_until<'e, E>(
    executor: E,
    store_id: uuid::Uuid,
    aggregate_types: &[&str],
    until: DateTime<Utc>,
    after: LogPosition,
    limit: i64,
) -> Result<Vec<LoggedEvent>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    sqlx::query_as::<_, LoggedEvent>(&format!(
        "select {LOGGED_EVENT} from events e
          where e.aggregate_type = any($2) and e.recorded_at <= $3
            and (e.transaction_id, e.global_position) > ($4::bigint::text::xid8, $5)
            and {OF_STORE}
          order by e.transaction_id, e.global_position
          limit $6"
    ))
    .bind(store_id)
    .bind(aggregate_types)
    .bind(until)
    .bind(after.transaction_id)
    .bind(after.global_position)
    .bind(limit)
    .fetch_all(executor)
    .await
}
