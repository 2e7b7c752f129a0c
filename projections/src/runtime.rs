//! The projection runtime: every projection follows the global log from its checkpoint.
//!
//! For each projection, one instance at a time (the holder of a Postgres advisory lock) runs a
//! loop on the very connection that holds the lock:
//!
//! 1. begin; lock the projection's checkpoint row;
//! 2. read the next batch of visible events after the checkpoint (`log::read_between`);
//! 3. apply each event to the projection's tables;
//! 4. advance the checkpoint, notify `shopfront_checkpoints`; commit.
//!
//! Effects and checkpoint commit together, so whatever crashes, every event's effect happens
//! exactly once. If the leader's connection dies, its transaction rolls back and its lock is
//! released with it; a standby instance (polling the lock) takes over from the checkpoint. An
//! event that cannot be decoded stops that projection with the reason in its checkpoint row
//! (`status = 'failed'`) rather than being skipped. Database errors are retried with backoff, so
//! a Postgres restart needs no service restart.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::event::{decode, Envelope, UnknownEvent};
use crate::log::{read_between, LogPosition, NOTIFY_CHANNEL};

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
    /// A database error: retried.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A sum the read model keeps went past what its type can hold (named by its column): the
    /// event cannot be applied as the read model stands.
    #[error("{0} is out of range")]
    OutOfRange(&'static str),
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
    /// How often a failed projection retries (a new build may have fixed the cause).
    pub failed_retry_interval: Duration,
    /// Longest wait between reconnection attempts after database errors.
    pub max_backoff: Duration,
    /// Shown as the leader in `pg_stat_activity` and `projections status`.
    pub instance_name: String,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
            standby_interval: Duration::from_secs(1),
            failed_retry_interval: Duration::from_secs(30),
            max_backoff: Duration::from_secs(5),
            instance_name: format!("shopfront pid {}", std::process::id()),
        }
    }
}

/// Runs a set of projections, one task each.
pub struct Runtime {
    pool: PgPool,
    projections: Vec<Arc<dyn Projection>>,
    settings: RuntimeSettings,
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
        }
    }

    /// Starts one task per projection; they stop when `stop` is cancelled.
    pub fn spawn(&self, stop: CancellationToken) -> Vec<JoinHandle<()>> {
        self.projections
            .iter()
            .map(|projection| {
                let (pool, projection, settings, stop) = (
                    self.pool.clone(),
                    projection.clone(),
                    self.settings.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move { run(pool, projection, settings, stop).await })
            })
            .collect()
    }
}

/// Keeps one projection running, reconnecting with backoff after database errors.
async fn run(
    pool: PgPool,
    projection: Arc<dyn Projection>,
    settings: RuntimeSettings,
    stop: CancellationToken,
) {
    let name = projection.name();
    let mut backoff = Duration::from_millis(100);
    loop {
        let leading_since = tokio::time::Instant::now();
        match lead(&pool, &*projection, &settings, &stop).await {
            Ok(()) => return,
            Err(err) => {
                // A failure after a long healthy run starts the backoff over.
                if leading_since.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_millis(100);
                }
                tracing::warn!(projection = name, error = %err, ?backoff, "projection runner lost its database; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(settings.max_backoff);
            }
        }
    }
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

async fn lead(
    pool: &PgPool,
    projection: &dyn Projection,
    settings: &RuntimeSettings,
    stop: &CancellationToken,
) -> Result<(), sqlx::Error> {
    let name = projection.name();
    let Some(mut conn) = acquire_leadership(pool, name, settings, stop).await? else {
        return Ok(());
    };
    sqlx::query("insert into projection_checkpoints (name) values ($1) on conflict do nothing")
        .bind(name)
        .execute(&mut conn)
        .await?;
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    loop {
        if stop.is_cancelled() {
            return Ok(());
        }
        match apply_batch(&mut conn, projection, settings.batch_size).await? {
            Batch::Applied(n) if n == settings.batch_size as usize => continue,
            Batch::Applied(_) | Batch::Empty => {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    notified = listener.recv() => { notified?; }
                    _ = tokio::time::sleep(settings.poll_interval) => {}
                }
            }
            Batch::Failed(reason) => {
                tracing::error!(projection = name, %reason, "projection stopped: it cannot read an event");
                sqlx::query(
                    "update projection_checkpoints set status = 'failed', last_error = $2, updated_at = now()
                      where name = $1",
                )
                .bind(name)
                .bind(&reason)
                .execute(&mut conn)
                .await?;
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(settings.failed_retry_interval) => {}
                }
            }
        }
    }
}

enum Batch {
    Empty,
    Applied(usize),
    Failed(String),
}

async fn apply_batch(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    batch_size: i64,
) -> Result<Batch, sqlx::Error> {
    let name = projection.name();
    let mut tx = conn.begin().await?;
    let (transaction_id, global_position): (i64, i64) = sqlx::query_as(
        "select transaction_id, global_position from projection_checkpoints where name = $1 for update",
    )
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    let after = LogPosition {
        transaction_id,
        global_position,
    };
    let batch = read_between(&mut *tx, after, None, batch_size).await?;
    if batch.is_empty() {
        tx.commit().await?;
        return Ok(Batch::Empty);
    }
    // Apply what can be read; stop at the first event that cannot (it is never skipped).
    let (events, unreadable) = decode_prefix(batch);
    if let Some(last) = events.last().map(Envelope::position) {
        match projection.apply_batch(&mut tx, &events).await {
            Ok(()) => {}
            Err(ProjectionError::Unknown(unknown)) => {
                tx.rollback().await?;
                return Ok(Batch::Failed(unknown.to_string()));
            }
            Err(err @ ProjectionError::OutOfRange(_)) => {
                tx.rollback().await?;
                return Ok(Batch::Failed(err.to_string()));
            }
            Err(ProjectionError::Database(err)) => return Err(err),
        }
        advance_checkpoint(&mut tx, name, last, events.len() as i64).await?;
    }
    tx.commit().await?;
    match unreadable {
        Some(unknown) => Ok(Batch::Failed(unknown.to_string())),
        None => Ok(Batch::Applied(events.len())),
    }
}

/// Moves a checkpoint forward (inside the caller's transaction) and tells waiters.
pub async fn advance_checkpoint(
    conn: &mut PgConnection,
    name: &str,
    to: LogPosition,
    applied: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update projection_checkpoints
            set transaction_id = $2, global_position = $3, events_applied = events_applied + $4,
                status = 'running', last_error = null, updated_at = now()
          where name = $1",
    )
    .bind(name)
    .bind(to.transaction_id)
    .bind(to.global_position)
    .bind(applied)
    .execute(&mut *conn)
    .await?;
    sqlx::query("select pg_notify($1, $2)")
        .bind(CHECKPOINT_CHANNEL)
        .bind(name)
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

/// One `LISTEN` on the checkpoint channel for a whole process, shared by every waiter: a
/// request that must read its own write waits on it without holding a connection of its own.
/// The listening task ends when the last clone is dropped or the pool is closed.
#[derive(Clone, Debug)]
pub struct CheckpointWatch {
    pool: PgPool,
    /// Bumped on every checkpoint notification (and when the listener had to reconnect).
    changes: tokio::sync::watch::Receiver<u64>,
}

impl CheckpointWatch {
    /// Starts the listening task (on the current Tokio runtime).
    pub fn start(pool: PgPool) -> Self {
        let (tx, changes) = tokio::sync::watch::channel(0u64);
        let listening = pool.clone();
        tokio::spawn(async move {
            while !listening.is_closed() && !tx.is_closed() {
                let mut listener = match PgListener::connect_with(&listening).await {
                    Ok(listener) => listener,
                    Err(err) => {
                        tracing::warn!(error = %err, "checkpoint watch cannot listen; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                if listener.listen(CHECKPOINT_CHANNEL).await.is_err() {
                    continue;
                }
                // Anything missed while (re)connecting is rechecked by the waiters.
                tx.send_modify(|n| *n += 1);
                loop {
                    tokio::select! {
                        _ = tx.closed() => return,
                        notification = listener.recv() => match notification {
                            Ok(_) => tx.send_modify(|n| *n += 1),
                            Err(_) => break,
                        },
                    }
                }
            }
        });
        Self { pool, changes }
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
            if caught_up(&self.pool, names, position).await? {
                return Ok(true);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Err(_) | Ok(Err(_)) => return Ok(false),
            }
        }
    }
}
