//! The projection runtime: every projection follows the global log from its checkpoint.
//!
//! For each projection, one instance at a time (the holder of a Postgres advisory lock) runs a
//! loop on the very connection that holds the lock:
//!
//! 1. read the next batch of visible events after the checkpoint (`log::read_between`), outside
//!    any transaction: a wake-up with nothing to do costs one read-only statement;
//! 2. begin; lock the projection's checkpoint row (read again if a rebuild moved it);
//! 3. apply the batch to the projection's tables;
//! 4. advance the checkpoint, notify `shopfront_checkpoints`; commit;
//! 5. when the log is drained, wait for a notification (one shared listener per process,
//!    [`Notifications`]) or the poll interval.
//!
//! Effects and checkpoint commit together, so whatever crashes, every event's effect happens
//! exactly once. If the leader's connection dies, its transaction rolls back and its lock is
//! released with it; a standby instance (polling the lock) takes over from the checkpoint.
//!
//! What goes wrong is told apart, because retrying only helps some of it:
//!
//! - a **transient** database error (connection lost, server shutting down, serialization
//!   failure, deadlock, lock timeout, pool timeout: [`is_transient`]) ends the leadership and the
//!   runner competes again with backoff, so a Postgres restart needs no service restart;
//! - an **event the projection cannot apply** (an event this build cannot read, or a statement
//!   that fails on it: a data exception, a constraint, a bug) would fail the same way forever.
//!   The runner applies the batch again one event per transaction to find that event (the ones
//!   before it are applied), records it in the checkpoint row (`status = 'failed'`,
//!   `failed_position`, `failed_event_type`, `last_error`), logs it once at `ERROR`, and stops
//!   there: never skipping it, never retrying it in a loop. An unreadable event is tried again
//!   every `failed_retry_interval` (a build that can read it may be deployed); a statement
//!   error waits for a rebuild to replace the tables or for a restart;
//! - a **panic** in a projection is caught: the task restarts with backoff, and the checkpoint
//!   row counts it (`restarts`, `last_restart_reason`).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use sqlx::postgres::{PgConnectOptions, PgListener};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::event::{decode, Envelope, UnknownEvent};
use crate::log::{read_between, LogPosition};
pub use crate::notifications::Notifications;
use crate::notifications::{checkpoint_payload, CheckpointPositions};

/// Channel notified (with the projection's name) whenever a checkpoint advances.
pub const CHECKPOINT_CHANNEL: &str = "shopfront_checkpoints";

/// First key of every advisory lock we take (the second is `hashtext(name)`).
pub const LOCK_NAMESPACE: i32 = 0x5348_4f50; // "SHOP"

/// A read model (or a process manager's state) built from the global log.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable name: checkpoint key, lock key and CLI argument.
    fn name(&self) -> &'static str;

    /// The tables this projection owns and alone writes; rebuilt and verified together.
    fn tables(&self) -> &'static [&'static str];

    /// Applies consecutive events, in log order, inside the batch's transaction. Writes only the
    /// projection's own tables, by unqualified name (a rebuild points `search_path` at a scratch
    /// schema), and derives everything from the events (never the clock). The result must not
    /// depend on where batch boundaries fall: the live runner and a rebuild batch differently,
    /// and `projections verify` compares them.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[Envelope],
    ) -> Result<(), ProjectionError>;
}

/// Decodes a batch up to the first event this build cannot read: the readable prefix, and the
/// reason the rest cannot be read (if any).
pub fn decode_prefix(batch: Vec<crate::log::LoggedEvent>) -> (Vec<Envelope>, Option<UnknownEvent>) {
    let mut decoded = Vec::with_capacity(batch.len());
    for raw in batch {
        match decode(raw) {
            Ok(envelope) => decoded.push(envelope),
            Err(unknown) => return (decoded, Some(unknown)),
        }
    }
    (decoded, None)
}

/// Why applying an event failed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The event cannot be read by this build: the projection stops until it can.
    #[error(transparent)]
    Unknown(#[from] UnknownEvent),
    /// A database error: retried when it is transient ([`is_transient`]); otherwise the event
    /// cannot be applied, and the projection stops at it.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A sum the read model keeps went past what its type can hold (named by its column): the
    /// event cannot be applied as the read model stands.
    #[error("{0} is out of range")]
    OutOfRange(&'static str),
}

/// Whether a database error says nothing about the statement: the connection or the server
/// failed, or the transaction lost a race. Retrying (on a new connection) may succeed. A
/// statement error (bad data, a constraint, a missing table, a type that does not decode) fails
/// the same way again, so it is not retried.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| transient_sqlstate(&code)),
        _ => false,
    }
}

/// SQLSTATEs that say nothing about the statement that met them.
pub fn transient_sqlstate(code: &str) -> bool {
    matches!(
        code.get(..2),
        // connection exception; transaction rollback (serialization failure, deadlock, …);
        // insufficient resources (disk full, out of memory, too many connections);
        // system error (I/O)
        Some("08" | "40" | "53" | "58")
    ) || matches!(
        code,
        // admin / crash shutdown, cannot connect now, database dropped, idle session timeout
        "57P01" | "57P02" | "57P03" | "57P04" | "57P05"
        // query canceled (statement timeout, pg_cancel_backend), lock not available
        | "57014" | "55P03"
    )
}

/// How the runtime paces itself.
#[derive(Clone, Debug)]
pub struct RuntimeSettings {
    /// Events applied per transaction.
    pub batch_size: i64,
    /// Fallback poll when no notification arrives (an event can become visible without one,
    /// when a long transaction elsewhere ends).
    pub poll_interval: Duration,
    /// How often a standby instance tries to become the leader.
    pub standby_interval: Duration,
    /// How often a projection stopped by an unreadable event tries it again (a new build may
    /// read it), and how often a projection stopped by a statement error checks whether a
    /// rebuild has replaced its tables (it is also woken by checkpoint notifications).
    pub failed_retry_interval: Duration,
    /// Longest wait between reconnection attempts after database errors and panics.
    pub max_backoff: Duration,
    /// Shown as the leader in `pg_stat_activity` and `projections status`.
    pub instance_name: String,
    /// Apply every projection this process leads together, one transaction per batch
    /// ([`crate::group`]); `false`: one task and one transaction per projection.
    pub grouped: bool,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_millis(100),
            standby_interval: Duration::from_secs(1),
            failed_retry_interval: Duration::from_secs(30),
            max_backoff: Duration::from_secs(5),
            instance_name: format!("shopfront pid {}", std::process::id()),
            grouped: true,
        }
    }
}

/// Runs a set of projections, one task each, woken by one shared listener.
pub struct Runtime {
    pool: PgPool,
    projections: Vec<Arc<dyn Projection>>,
    settings: RuntimeSettings,
    notifications: Option<Notifications>,
}

impl Runtime {
    pub fn new(
        pool: PgPool,
        projections: Vec<Arc<dyn Projection>>,
        settings: RuntimeSettings,
    ) -> Self {
        Self {
            pool,
            projections,
            settings,
            notifications: None,
        }
    }

    /// Wakes the projections through `notifications`, the process's one listener (shared with
    /// read-your-writes waiters), instead of a listener of the runtime's own.
    pub fn with_notifications(mut self, notifications: Notifications) -> Self {
        self.notifications = Some(notifications);
        self
    }

    /// Starts the projections: one task for all of them ([`RuntimeSettings::grouped`]) or one
    /// each. They stop when `stop` is cancelled.
    pub fn spawn(&self, stop: CancellationToken) -> Vec<JoinHandle<()>> {
        let notifications = self
            .notifications
            .clone()
            .unwrap_or_else(|| Notifications::start(self.pool.clone()));
        if self.settings.grouped {
            let group = crate::group::Group {
                pool: self.pool.clone(),
                projections: self.projections.clone(),
                settings: self.settings.clone(),
                notifications,
                stop,
            };
            return vec![tokio::spawn(group.run())];
        }
        self.projections
            .iter()
            .map(|projection| {
                let runner = Runner {
                    pool: self.pool.clone(),
                    projection: projection.clone(),
                    settings: self.settings.clone(),
                    notifications: notifications.clone(),
                    stop: stop.clone(),
                };
                tokio::spawn(runner.run())
            })
            .collect()
    }
}

/// One projection's task.
pub(crate) struct Runner {
    pub(crate) pool: PgPool,
    pub(crate) projection: Arc<dyn Projection>,
    pub(crate) settings: RuntimeSettings,
    pub(crate) notifications: Notifications,
    pub(crate) stop: CancellationToken,
}

impl Runner {
    /// Keeps the projection running: competes for leadership and leads, again (with backoff)
    /// after a transient database error or a panic.
    pub(crate) async fn run(self) {
        let name = self.projection.name();
        let mut backoff = Duration::from_millis(100);
        loop {
            let leading_since = tokio::time::Instant::now();
            // A projection keeps no state between batches (its tables are its state, and the
            // open transaction rolls back with the dropped connection), so leading again after
            // a panic starts from a sound state.
            let led = AssertUnwindSafe(self.lead()).catch_unwind().await;
            // A failure after a long healthy run starts the backoff over.
            if leading_since.elapsed() > Duration::from_secs(60) {
                backoff = Duration::from_millis(100);
            }
            match led {
                Ok(Ok(())) => return,
                Ok(Err(err)) if is_transient(&err) => {
                    tracing::warn!(projection = name, error = %err, ?backoff, "projection runner lost its database; retrying");
                }
                // Not about any one event (the runtime's own statements failed): nothing to stop
                // at, so it is retried like a lost connection, but loudly.
                Ok(Err(err)) => {
                    tracing::error!(projection = name, error = %err, ?backoff, "projection runner failed; retrying");
                }
                Err(panic) => {
                    let message = panic_message(panic.as_ref());
                    tracing::error!(projection = name, panic = %message, ?backoff, "projection runner panicked; restarting it");
                    self.record_restart(&format!("panicked: {message}")).await;
                }
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.settings.max_backoff);
        }
    }

    /// Counts a restart in the checkpoint row, for `projections status`.
    async fn record_restart(&self, reason: &str) {
        let recorded = sqlx::query(
            "update projection_checkpoints
                set restarts = restarts + 1, last_restart_reason = $2, last_restart_at = now()
              where name = $1",
        )
        .bind(self.projection.name())
        .bind(reason)
        .execute(&self.pool)
        .await;
        if let Err(err) = recorded {
            tracing::warn!(projection = self.projection.name(), error = %err, "cannot record the restart");
        }
    }

    /// Waits for leadership, then applies batches until stopped. Returns an error only for a
    /// transient database error (the caller competes again).
    async fn lead(&self) -> Result<(), sqlx::Error> {
        let (projection, settings, stop) = (&*self.projection, &self.settings, &self.stop);
        let name = projection.name();
        let Some(mut conn) = acquire_leadership(&self.pool, name, settings, stop).await? else {
            return Ok(());
        };
        sqlx::query("insert into projection_checkpoints (name) values ($1) on conflict do nothing")
            .bind(name)
            .execute(&mut conn)
            .await?;
        let mut events = self.notifications.events();
        // Another projection's commit can move the log's horizon past events already
        // committed (and announced) while its transaction held it back: look again then too.
        let mut horizon = self.notifications.checkpoints();
        // After a batch of several events failed on one of them, events are applied one per
        // transaction up to the end of that batch: the ones before the failing event get
        // applied, and the failure names that event.
        let mut one_by_one_until: Option<LogPosition> = None;
        // Where this leader left the checkpoint: only it moves the row, except a rebuild's swap,
        // which `apply_batch` notices under the row lock.
        let mut known: Option<LogPosition> = None;
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            // Seen before reading: events committed while this batch runs wake us again.
            events.borrow_and_update();
            horizon.borrow_and_update();
            let limit = if one_by_one_until.is_some() {
                1
            } else {
                settings.batch_size
            };
            match apply_batch(&mut conn, projection, limit, &mut known).await? {
                Batch::Applied { events, last } => {
                    if one_by_one_until.is_some_and(|until| last >= until) {
                        one_by_one_until = None;
                    }
                    if events as i64 == limit {
                        continue;
                    }
                }
                Batch::Empty => one_by_one_until = None,
                Batch::Isolate { until } => {
                    one_by_one_until = Some(until);
                    continue;
                }
                Batch::Failed(failure) => {
                    one_by_one_until = None;
                    // Whatever ends the failure (a rebuild, most likely) moves the row.
                    known = None;
                    if !self.stand_still(&mut conn, &failure).await? {
                        return Ok(());
                    }
                    continue;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = changed(&mut events) => {}
                _ = changed(&mut horizon) => {}
                _ = tokio::time::sleep(settings.poll_interval) => {}
            }
        }
    }

    /// Records `failure` (logged at `ERROR` the first time only) and waits: for the retry
    /// interval after an unreadable event, until the checkpoint row is no longer failed after a
    /// statement error (a rebuild swapped in tables past the event). `false` when stopped.
    async fn stand_still(
        &self,
        conn: &mut PgConnection,
        failure: &Failure,
    ) -> Result<bool, sqlx::Error> {
        let name = self.projection.name();
        let already = record_failure(conn, name, failure).await?;
        if already {
            tracing::debug!(
                projection = name,
                position = failure.global_position,
                "projection still failed at the same event"
            );
        } else {
            tracing::error!(
                projection = name,
                position = failure.global_position,
                event_type = %failure.event_type,
                error = %failure.error,
                "projection failed: it stops at this event (not skipped, not retried in a loop); see `shopfront projections status`"
            );
        }
        let stop = &self.stop;
        if failure.kind == FailureKind::Unreadable {
            tokio::select! {
                _ = stop.cancelled() => return Ok(false),
                _ = tokio::time::sleep(self.settings.failed_retry_interval) => return Ok(true),
            }
        }
        let mut checkpoints = self.notifications.checkpoints();
        loop {
            checkpoints.borrow_and_update();
            // Read on the leader connection: a lost connection also ends the wait.
            let status: String =
                sqlx::query_scalar("select status from projection_checkpoints where name = $1")
                    .bind(name)
                    .fetch_one(&mut *conn)
                    .await?;
            if status != "failed" {
                tracing::info!(projection = name, "projection no longer failed; resuming");
                return Ok(true);
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(false),
                _ = changed(&mut checkpoints) => {}
                _ = tokio::time::sleep(self.settings.failed_retry_interval) => {}
            }
        }
    }
}

/// Resolves when `counter` changes; never if its sender is gone (the caller also polls).
pub(crate) async fn changed(counter: &mut watch::Receiver<u64>) {
    if counter.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The message a panic was raised with.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// A dedicated connection (not from the pool: it lives as long as the leadership it holds).
pub async fn dedicated_connection(
    pool: &PgPool,
    instance_name: &str,
) -> Result<PgConnection, sqlx::Error> {
    let options: PgConnectOptions = (*pool.connect_options()).clone();
    options
        .application_name(instance_name)
        // The server probes an idle leader connection and drops it within ~25 s if the
        // leader's host is gone, which frees the advisory lock for a standby.
        .options([
            ("tcp_keepalives_idle", "10"),
            ("tcp_keepalives_interval", "5"),
            ("tcp_keepalives_count", "3"),
        ])
        .log_statements(tracing::log::LevelFilter::Trace)
        .connect()
        .await
}

/// Waits (on its own connection) until this instance holds the advisory lock `name`; returns
/// the connection holding it, or `None` if stopped first. The lock lives as long as the
/// connection: whoever uses the connection acts as the leader, and a dead connection frees it.
pub async fn acquire_leadership(
    pool: &PgPool,
    name: &str,
    settings: &RuntimeSettings,
    stop: &CancellationToken,
) -> Result<Option<PgConnection>, sqlx::Error> {
    let mut conn = dedicated_connection(pool, &settings.instance_name).await?;
    loop {
        let leading: bool = sqlx::query_scalar("select pg_try_advisory_lock($1, hashtext($2))")
            .bind(LOCK_NAMESPACE)
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
        if leading {
            tracing::info!(name, "leading");
            return Ok(Some(conn));
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            _ = tokio::time::sleep(settings.standby_interval) => {}
        }
    }
}

/// Runs `work(now)` every `every` on one instance at a time: the holder of the advisory lock
/// `name` (a process manager's step). `now` is the database's clock, the one that stamps
/// events, so instances with skewed clocks agree on deadlines. Each tick first reads it on the
/// connection holding the lock: if that connection is gone, so is the leadership, and the loop
/// competes again instead of running the step beside a new leader. A failing step is logged
/// and tried again at the next tick.
/// How long a process manager's leader connection may take to answer its liveness check.
const LEADER_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run_as_leader<F, Fut, E>(
    pool: PgPool,
    name: &'static str,
    every: Duration,
    settings: RuntimeSettings,
    stop: CancellationToken,
    work: F,
) where
    F: Fn(chrono::DateTime<chrono::Utc>) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut leader = match acquire_leadership(&pool, name, &settings, &stop).await {
            Ok(Some(conn)) => conn,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(name, error = %err, "cannot compete for leadership; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(settings.max_backoff);
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let mut ticks = tokio::time::interval(every);
        // A step that overruns delays the next one instead of triggering a burst.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The lock's connection is checked every `standby_interval` between steps, not only at
        // the next step: after a database restart the lock is gone with the connection, and
        // with a long interval (an hour, say) nobody would hold it until then.
        let mut checks = tokio::time::interval(settings.standby_interval);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = checks.tick() => {
                    // Bounded: a connection cut off without a reset must not hold up shutdown.
                    match tokio::time::timeout(LEADER_CHECK_TIMEOUT, leader.ping()).await {
                        Ok(Ok(())) => continue,
                        Ok(Err(err)) => {
                            tracing::warn!(name, error = %err, "lost the leader connection");
                            break;
                        }
                        Err(_) => {
                            tracing::warn!(name, "the leader connection does not answer");
                            break;
                        }
                    }
                }
                _ = ticks.tick() => {}
            }
            let now = match sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>("select now()")
                .fetch_one(&mut leader)
                .await
            {
                Ok(now) => now,
                Err(err) => {
                    tracing::warn!(name, error = %err, "lost the leader connection");
                    break;
                }
            };
            if let Err(err) = work(now).await {
                tracing::warn!(name, error = %err, "process manager step failed; will retry");
            }
        }
    }
}

/// What one batch came to.
enum Batch {
    /// Nothing visible after the checkpoint.
    Empty,
    /// `events` applied and checkpointed, the last at `last`.
    Applied { events: usize, last: LogPosition },
    /// One of several events failed to apply (nothing was): apply them one by one up to
    /// `until` to find it.
    Isolate { until: LogPosition },
    /// This event cannot be applied: the projection stops before it.
    Failed(Failure),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FailureKind {
    /// This build cannot read the event: tried again now and then (a new build may).
    Unreadable,
    /// Applying the event fails (a statement error, a sum out of range): the same again on
    /// every attempt, so it waits for a rebuild or a restart.
    Statement,
}

/// The event a projection stopped at, and why.
struct Failure {
    global_position: i64,
    event_type: String,
    error: String,
    kind: FailureKind,
}

impl Failure {
    fn unreadable(unknown: &UnknownEvent) -> Self {
        Self {
            global_position: unknown.global_position,
            event_type: unknown.event_type.clone(),
            error: unknown.to_string(),
            kind: FailureKind::Unreadable,
        }
    }

    fn applying(event: &Envelope, err: &ProjectionError) -> Self {
        match err {
            ProjectionError::Unknown(unknown) => Self::unreadable(unknown),
            _ => Self {
                global_position: event.raw.global_position,
                event_type: event.raw.event_type.clone(),
                error: format!(
                    "cannot apply event at global position {} ({}/{}): {err}",
                    event.raw.global_position, event.raw.aggregate_type, event.raw.event_type
                ),
                kind: FailureKind::Statement,
            },
        }
    }
}

/// Marks the projection failed at `failure` (outside any batch) and tells checkpoint waiters.
/// `true` when it already was, at the same event: the failure was reported before.
async fn record_failure(
    conn: &mut PgConnection,
    name: &str,
    failure: &Failure,
) -> Result<bool, sqlx::Error> {
    // The CTE reads the row as it was before the update.
    let already = sqlx::query_scalar(
        "with before as (select status, failed_position from projection_checkpoints where name = $1)
         update projection_checkpoints c
            set status = 'failed', last_error = $2, failed_position = $3, failed_event_type = $4,
                updated_at = now()
           from before
          where c.name = $1
      returning before.status = 'failed' and before.failed_position is not distinct from $3",
    )
    .bind(name)
    .bind(&failure.error)
    .bind(failure.global_position)
    .bind(&failure.event_type)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("select pg_notify($1, $2)")
        .bind(CHECKPOINT_CHANNEL)
        .bind(name)
        .execute(&mut *conn)
        .await?;
    Ok(already)
}

/// The projection's checkpoint as it stands (on the leader's connection, outside any batch).
async fn read_checkpoint(conn: &mut PgConnection, name: &str) -> Result<LogPosition, sqlx::Error> {
    let (transaction_id, global_position): (i64, i64) = sqlx::query_as(
        "select transaction_id, global_position from projection_checkpoints where name = $1",
    )
    .bind(name)
    .fetch_one(&mut *conn)
    .await?;
    Ok(LogPosition {
        transaction_id,
        global_position,
    })
}

/// Applies the next batch after the checkpoint. `known` is where the leader last left the
/// checkpoint (`None`: not known, read it): the log is first read after it outside any
/// transaction, so a wake-up with nothing to do costs one read-only statement — no transaction
/// id (which would hold back the log's horizon for every reader), no row lock. Only a batch
/// with events opens a transaction, locks the checkpoint row and, should the row have moved
/// meanwhile (a rebuild swapped its tables in), reads again from where it now stands.
async fn apply_batch(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    limit: i64,
    known: &mut Option<LogPosition>,
) -> Result<Batch, sqlx::Error> {
    let name = projection.name();
    let after = match *known {
        Some(at) => at,
        None => read_checkpoint(conn, name).await?,
    };
    *known = Some(after);
    let mut batch = read_between(&mut *conn, after, None, limit).await?;
    if batch.is_empty() {
        return Ok(Batch::Empty);
    }
    let mut tx = conn.begin().await?;
    let (transaction_id, global_position): (i64, i64) = sqlx::query_as(
        "select transaction_id, global_position from projection_checkpoints where name = $1 for update",
    )
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    let locked = LogPosition {
        transaction_id,
        global_position,
    };
    if locked != after {
        *known = Some(locked);
        batch = read_between(&mut *tx, locked, None, limit).await?;
        if batch.is_empty() {
            tx.commit().await?;
            return Ok(Batch::Empty);
        }
    }
    // Apply what can be read; stop at the first event that cannot (it is never skipped).
    let (events, unreadable) = decode_prefix(batch);
    let mut applied = None;
    if let (Some(first), Some(last)) = (events.first(), events.last()) {
        if let Err(err) = projection.apply_batch(&mut tx, &events).await {
            let rolled_back = tx.rollback().await;
            let err = match err {
                // The connection is likely gone: its error, not the rollback's, is the news.
                ProjectionError::Database(err) if is_transient(&err) => return Err(err),
                err => err,
            };
            rolled_back?;
            return Ok(if events.len() > 1 {
                Batch::Isolate {
                    until: last.position(),
                }
            } else {
                Batch::Failed(Failure::applying(first, &err))
            });
        }
        advance_checkpoint(&mut tx, name, last.position(), events.len() as i64).await?;
        applied = Some(last.position());
    }
    tx.commit().await?;
    if let Some(last) = applied {
        *known = Some(last);
    }
    match (unreadable, applied) {
        (Some(unknown), _) => Ok(Batch::Failed(Failure::unreadable(&unknown))),
        (None, Some(last)) => Ok(Batch::Applied {
            events: events.len(),
            last,
        }),
        (None, None) => Ok(Batch::Empty),
    }
}

/// Moves a checkpoint forward (inside the caller's transaction) and tells waiters where it
/// now stands, in one statement.
pub async fn advance_checkpoint(
    conn: &mut PgConnection,
    name: &str,
    to: LogPosition,
    applied: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "with moved as (
           update projection_checkpoints
              set transaction_id = $2, global_position = $3, events_applied = events_applied + $4,
                  status = 'running', last_error = null, failed_position = null,
                  failed_event_type = null, updated_at = now()
            where name = $1
           returning name)
         select pg_notify($5, $6) from moved",
    )
    .bind(name)
    .bind(to.transaction_id)
    .bind(to.global_position)
    .bind(applied)
    .bind(CHECKPOINT_CHANNEL)
    .bind(checkpoint_payload(name, to))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Whether every named projection's checkpoint is at or past `position`.
async fn caught_up(
    pool: &PgPool,
    names: &[&str],
    position: LogPosition,
) -> Result<bool, sqlx::Error> {
    let behind: i64 = sqlx::query_scalar(
        "select count(*) from unnest($1::text[]) as wanted(name)
           left join projection_checkpoints c using (name)
          where c.name is null or (c.transaction_id, c.global_position) < ($2, $3)",
    )
    .bind(names)
    .bind(position.transaction_id)
    .bind(position.global_position)
    .fetch_one(pool)
    .await?;
    Ok(behind == 0)
}

/// Waits until every named projection's checkpoint is at or past `position`, with a listener
/// of its own (for tests and one-off commands; a service shares one [`CheckpointWatch`]).
/// Woken by checkpoint notifications.
pub async fn wait_for_position(
    pool: &PgPool,
    names: &[&str],
    position: LogPosition,
    within: Duration,
) -> Result<bool, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHECKPOINT_CHANNEL).await?;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if caught_up(pool, names, position).await? {
            return Ok(true);
        }
        match tokio::time::timeout_at(deadline, listener.recv()).await {
            Err(_) => return Ok(false),
            Ok(notification) => {
                notification?;
            }
        }
    }
}

/// Read-your-writes waits on the process's one listener ([`Notifications`]): a request that
/// must read its own write waits without holding a connection of its own, and compares
/// positions in memory ([`CheckpointPositions`]) once the listener has been told where each
/// projection it waits for stands; only a projection it has not been told of is asked of the
/// database.
#[derive(Clone, Debug)]
pub struct CheckpointWatch {
    pool: PgPool,
    /// Bumped on every checkpoint notification (and when the listener had to reconnect).
    changes: watch::Receiver<u64>,
    positions: CheckpointPositions,
}

impl CheckpointWatch {
    /// Waits on `notifications`, the listener the projection runtime shares.
    pub fn new(pool: PgPool, notifications: &Notifications) -> Self {
        Self {
            pool,
            changes: notifications.checkpoints(),
            positions: notifications.checkpoint_positions(),
        }
    }

    /// With a listener of its own (where no runtime shares one, e.g. a process that only
    /// serves queries).
    pub fn start(pool: PgPool) -> Self {
        let notifications = Notifications::start(pool.clone());
        Self::new(pool, &notifications)
    }

    /// Whether every named projection is told to be at or past `position`; `None` when one of
    /// them has not been told of.
    fn told_reached(&self, names: &[&str], position: LogPosition) -> Option<bool> {
        let mut reached = true;
        for name in names {
            reached &= self.positions.get(name)? >= position;
        }
        Some(reached)
    }

    /// [`wait_for_position`] on the shared listener.
    pub async fn wait_for_position(
        &self,
        names: &[&str],
        position: LogPosition,
        within: Duration,
    ) -> Result<bool, sqlx::Error> {
        let mut changes = self.changes.clone();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Seen before checking, so a checkpoint committed after the check still wakes us.
            changes.borrow_and_update();
            let reached = match self.told_reached(names, position) {
                Some(reached) => reached,
                None => caught_up(&self.pool, names, position).await?,
            };
            if reached {
                return Ok(true);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Err(_) | Ok(Err(_)) => return Ok(false),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::transient_sqlstate;

    #[test]
    fn connection_shutdown_and_lost_races_are_transient() {
        for code in [
            "08000", "08006", "57P01", "57P02", "57P03", "40001", "40P01", "55P03", "53300",
            "57014",
        ] {
            assert!(transient_sqlstate(code), "{code}");
        }
    }

    #[test]
    fn data_integrity_and_syntax_errors_are_not() {
        // bigint out of range, division by zero, unique and check violations, undefined
        // column and table, syntax error, internal error
        for code in [
            "22003", "22012", "23505", "23514", "42703", "42P01", "42601", "XX000",
        ] {
            assert!(!transient_sqlstate(code), "{code}");
        }
    }
}
