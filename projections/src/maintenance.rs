//! Looking after projections: status, rebuild-and-swap, verification, and clean-up.
//!
//! A rebuild replays the whole log into fresh copies of the projection's tables in a scratch
//! schema (`create table … (like public.t including all)`, written through `search_path`), while
//! the live tables keep serving queries. It then locks the projection's checkpoint row (which
//! pauses the live runner between batches), applies the last few events, and swaps the tables in
//! and the checkpoint forward in one transaction. Verification replays into a scratch schema up
//! to the live checkpoint and compares every table by checksum.
//!
//! A question about the past that the live tables cannot answer (a store's KPI figures as they
//! stood at some instant) is answered by replaying into temporary tables instead: private to
//! one session and gone with it ([`temporary_tables`], [`apply_temporary`]).
//!
//! A rebuild or verify holds an advisory lock on each of its scratch schemas, on a connection of
//! its own, from before it creates the schema until it is gone. A command that is killed loses
//! the connection and with it the lock, so [`drop_abandoned_scratch`] (run when `serve` and the
//! `projections` commands start, and by `projections clean`) can tell its leftovers from a
//! scratch schema another command is still working in.

use std::time::Instant;

use sqlx::{Connection, PgConnection, PgPool};

use crate::event::Envelope;
use crate::log::{last_committed, read_between, LogPosition};
use crate::read_models;
use crate::runtime::{
    advance_checkpoint, decode_prefix, dedicated_connection, Projection, ProjectionError,
    LOCK_NAMESPACE,
};

/// First key of the advisory lock held on a scratch schema while a rebuild or verify works in
/// it (the second is `hashtext(schema)`).
pub const SCRATCH_LOCK_NAMESPACE: i32 = 0x5343_5254; // "SCRT"

/// The names rebuild and verify give their scratch schemas: `<purpose>_<projection>_<uuid>`.
const SCRATCH_PATTERN: &str = "^(rebuild|verify)_[a-z0-9_]+_[0-9a-f]{32}$";

/// Events replayed per transaction during verification and a rebuild's swap.
const REPLAY_BATCH: i64 = 5_000;

/// Events per batch of a rebuild's replay. Larger than the live runtime's: a row that several
/// events of one batch change (a product's level, an order's state) is written once per batch,
/// and every batch costs each projection a transaction and its statements.
const REBUILD_BATCH: i64 = 25_000;

/// How long a rebuild waits for committed events hidden behind another transaction.
const HORIZON_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A failed maintenance operation.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error("projection {0}: {1}")]
    Projection(&'static str, ProjectionError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// One projection's state, as `shopfront projections status` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProjectionStatus {
    pub name: String,
    pub position: LogPosition,
    pub events_applied: i64,
    pub status: String,
    pub last_error: Option<String>,
    /// The global position of the event a failed projection stopped at.
    pub failed_position: Option<i64>,
    /// That event's type.
    pub failed_event_type: Option<String>,
    /// Times the runner restarted after a panic (never reset).
    pub restarts: i32,
    /// Why it last restarted (the panic's message).
    pub last_restart_reason: Option<String>,
    pub last_restart_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Events in the log after the checkpoint.
    pub lag_events: i64,
    /// Age of the oldest event not applied yet.
    pub lag_seconds: f64,
    /// `application_name` of the connection holding the projection's lock, if any.
    pub leader: Option<String>,
}

/// The state of each named projection (those that never ran show position zero).
pub async fn status(pool: &PgPool, names: &[&str]) -> Result<Vec<ProjectionStatus>, sqlx::Error> {
    let mut statuses = Vec::with_capacity(names.len());
    for &name in names {
        let row: Option<CheckpointRow> = sqlx::query_as(
            "select transaction_id, global_position, events_applied, status, last_error,
                    failed_position, failed_event_type, restarts, last_restart_reason, last_restart_at
               from projection_checkpoints where name = $1",
        )
        .bind(name)
        .fetch_optional(pool)
        .await?;
        let row = row.unwrap_or_else(|| CheckpointRow {
            status: "never run".into(),
            ..CheckpointRow::default()
        });
        let (transaction_id, global_position) = (row.transaction_id, row.global_position);
        let (lag_events, lag_seconds): (i64, f64) = sqlx::query_as(
            "select count(*), coalesce(extract(epoch from now() - min(recorded_at))::float8, 0)
               from events
              where (transaction_id, global_position) > ($1::bigint::text::xid8, $2)",
        )
        .bind(transaction_id)
        .bind(global_position)
        .fetch_one(pool)
        .await?;
        let leader: Option<String> = sqlx::query_scalar(
            "select a.application_name from pg_locks l join pg_stat_activity a on a.pid = l.pid
              where l.locktype = 'advisory' and l.granted and l.objsubid = 2
                and l.database = (select oid from pg_database where datname = current_database())
                and l.classid::bigint = $1 and l.objid::bigint = (hashtext($2)::bigint & 4294967295)
              limit 1",
        )
        .bind(i64::from(LOCK_NAMESPACE))
        .bind(name)
        .fetch_optional(pool)
        .await?;
        statuses.push(ProjectionStatus {
            name: name.to_owned(),
            position: LogPosition {
                transaction_id,
                global_position,
            },
            events_applied: row.events_applied,
            status: row.status,
            last_error: row.last_error,
            failed_position: row.failed_position,
            failed_event_type: row.failed_event_type,
            restarts: row.restarts,
            last_restart_reason: row.last_restart_reason,
            last_restart_at: row.last_restart_at,
            lag_events,
            lag_seconds,
            leader,
        });
    }
    Ok(statuses)
}

#[derive(Default, sqlx::FromRow)]
struct CheckpointRow {
    transaction_id: i64,
    global_position: i64,
    events_applied: i64,
    status: String,
    last_error: Option<String>,
    failed_position: Option<i64>,
    failed_event_type: Option<String>,
    restarts: i32,
    last_restart_reason: Option<String>,
    last_restart_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A projection stopped at an event it cannot apply.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct FailedProjection {
    pub name: String,
    /// Global position of the event it stopped at.
    pub failed_position: Option<i64>,
    pub failed_event_type: Option<String>,
    pub last_error: Option<String>,
}

/// Those of the named projections that are stopped at an event (`status = 'failed'`), by name.
pub async fn failed(pool: &PgPool, names: &[&str]) -> Result<Vec<FailedProjection>, sqlx::Error> {
    sqlx::query_as(
        "select name, failed_position, failed_event_type, last_error from projection_checkpoints
          where status = 'failed' and name = any($1) order by name",
    )
    .bind(names)
    .fetch_all(pool)
    .await
}

/// What a rebuild did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RebuildReport {
    pub name: String,
    pub events: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    pub position: LogPosition,
    /// Time spent applying batches to this projection's tables (they run beside the other
    /// projections' and the reader's, so these add up to more than `seconds`).
    pub apply_seconds: f64,
}

/// Replays the log into fresh tables and swaps them in. `progress(done, total)` is called after
/// every batch (`total` is the number of events in the log when the rebuild started).
pub async fn rebuild(
    pool: &PgPool,
    projection: &dyn Projection,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<RebuildReport, MaintenanceError> {
    let mut reports = rebuild_many(pool, &[projection], progress).await?;
    reports
        .pop()
        .ok_or(MaintenanceError::Database(sqlx::Error::RowNotFound))
}

/// Rebuilds several projections in one pass over the log: a reader task reads and decodes each
/// batch once (the next one while the current is applied), and the batch is applied to every
/// projection's scratch tables concurrently (each in its own transaction); finally each
/// projection's tables are swapped in on their own.
pub async fn rebuild_many(
    pool: &PgPool,
    projections: &[&dyn Projection],
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Vec<RebuildReport>, MaintenanceError> {
    let started = Instant::now();
    let schemas: Vec<String> = projections
        .iter()
        .map(|p| scratch_schema("rebuild", p.name()))
        .collect();
    let claim = claim_scratch(pool, &schemas).await?;
    let outcome = async {
        let mut conn = pool.acquire().await?;
        let mut deferred = Vec::new();
        for (projection, schema) in projections.iter().zip(&schemas) {
            prepare_scratch(&mut conn, schema, projection.tables()).await?;
            deferred.extend(defer_indexes(&mut conn, schema, projection.tables()).await?);
        }
        let total: i64 = sqlx::query_scalar("select count(*) from events")
            .fetch_one(&mut *conn)
            .await?;
        // Everything committed before the rebuild started is in it, even events a long
        // transaction elsewhere still hides below the horizon (we wait for them).
        let committed = last_committed(&mut *conn).await?;
        drop(conn);
        // A reader task reads and decodes the next batch while this one is applied.
        let mut batches = spawn_reader(pool.clone(), committed);
        let (mut position, mut events) = (LogPosition::START, 0u64);
        let mut busy = vec![std::time::Duration::ZERO; projections.len()];
        while let Some(batch) = batches.recv().await {
            let decoded = batch.map_err(|e| match e {
                ReadError::Database(e) => MaintenanceError::Database(e),
                ReadError::Unreadable(unknown) => {
                    let name = projections.first().map(|p| p.name()).unwrap_or("rebuild");
                    MaintenanceError::Projection(name, unknown.into())
                }
            })?;
            let took = futures::future::try_join_all(projections.iter().zip(&schemas).map(
                |(projection, schema)| {
                    let decoded = &decoded;
                    async move {
                        let began = Instant::now();
                        let mut tx = pool.begin().await?;
                        // Nobody reads the scratch tables before the swap, whose own commit
                        // waits for the WAL (and with it every batch's): no flush per batch.
                        sqlx::query("set local synchronous_commit = off")
                            .execute(&mut *tx)
                            .await?;
                        apply_decoded(&mut tx, *projection, schema, decoded).await?;
                        tx.commit().await?;
                        Ok::<_, MaintenanceError>(began.elapsed())
                    }
                },
            ))
            .await?;
            for (sum, took) in busy.iter_mut().zip(took) {
                *sum += took;
            }
            position = decoded.last().map(Envelope::position).unwrap_or(position);
            events += decoded.len() as u64;
            progress(events, total.max(0) as u64);
        }
        build_indexes(pool, &deferred).await?;
        let mut reports = Vec::with_capacity(projections.len());
        for ((projection, schema), busy) in projections.iter().zip(&schemas).zip(busy) {
            let (at, applied) = swap_in(pool, *projection, schema, position, events).await?;
            let seconds = started.elapsed().as_secs_f64();
            reports.push(RebuildReport {
                name: projection.name().to_owned(),
                events: applied,
                seconds,
                events_per_second: applied as f64 / seconds.max(f64::EPSILON),
                position: at,
                apply_seconds: busy.as_secs_f64(),
            });
        }
        progress(events, events);
        Ok::<_, MaintenanceError>(reports)
    }
    .await;
    if outcome.is_err() {
        for schema in &schemas {
            drop_scratch(pool, schema).await;
        }
    }
    release_scratch(claim).await;
    outcome
}

/// Swaps the rebuilt tables in (see `try_swap_in`), retrying when a long query on a live table
/// keeps the swap from its lock: waiting would queue every new query behind the swap.
async fn swap_in(
    pool: &PgPool,
    projection: &dyn Projection,
    schema: &str,
    position: LogPosition,
    events: u64,
) -> Result<(LogPosition, u64), MaintenanceError> {
    let mut attempt = 1;
    loop {
        match try_swap_in(pool, projection, schema, position, events).await {
            Err(MaintenanceError::Database(sqlx::Error::Database(e)))
                if e.code().as_deref() == Some("55P03") && attempt < 10 =>
            {
                tracing::warn!(
                    projection = projection.name(),
                    attempt,
                    "a live table is busy; retrying the swap"
                );
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
}

enum ReadError {
    Database(sqlx::Error),
    Unreadable(crate::event::UnknownEvent),
}

/// Reads the log from the start in batches, decoded, into a channel two batches deep, until
/// nothing more is visible and everything committed before `committed` has been read (waiting
/// up to `HORIZON_WAIT` for events hidden behind a long transaction elsewhere).
fn spawn_reader(
    pool: PgPool,
    committed: Option<LogPosition>,
) -> tokio::sync::mpsc::Receiver<Result<Vec<Envelope>, ReadError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + HORIZON_WAIT;
        let mut position = LogPosition::START;
        let (mut reading, mut decoding) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
        loop {
            let began = Instant::now();
            let read = read_between(&pool, position, None, REBUILD_BATCH).await;
            reading += began.elapsed();
            let batch = match read {
                Ok(batch) => batch,
                Err(err) => {
                    let _ = tx.send(Err(ReadError::Database(err))).await;
                    return;
                }
            };
            if batch.is_empty() {
                let hidden = committed.is_some_and(|target| position < target);
                if hidden && tokio::time::Instant::now() < deadline {
                    // No notification announces the horizon moving: look again shortly.
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
                tracing::info!(
                    reading = reading.as_secs_f64(),
                    decoding = decoding.as_secs_f64(),
                    "rebuild: the log is read"
                );
                return;
            }
            let began = Instant::now();
            let (decoded, unreadable) = decode_prefix(batch);
            decoding += began.elapsed();
            if let Some(unknown) = unreadable {
                let _ = tx.send(Err(ReadError::Unreadable(unknown))).await;
                return;
            }
            position = decoded.last().map(Envelope::position).unwrap_or(position);
            if tx.send(Ok(decoded)).await.is_err() {
                return; // the rebuild stopped
            }
        }
    });
    rx
}

/// Pauses the live runner (checkpoint row lock), applies what arrived since the replay, and
/// exchanges the projection's tables and checkpoint, all in one transaction.
async fn try_swap_in(
    pool: &PgPool,
    projection: &dyn Projection,
    schema: &str,
    mut position: LogPosition,
    mut events: u64,
) -> Result<(LogPosition, u64), MaintenanceError> {
    let name = projection.name();
    let mut tx = pool.begin().await?;
    // Never wait long for a lock here: a waiting `drop table` blocks every reader behind it.
    sqlx::query("set local lock_timeout = '2s'")
        .execute(&mut *tx)
        .await?;
    sqlx::query("insert into projection_checkpoints (name) values ($1) on conflict do nothing")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    sqlx::query("select 1 from projection_checkpoints where name = $1 for update")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    loop {
        let (last, applied) = apply_into(&mut tx, projection, schema, position, None).await?;
        if applied == 0 {
            break;
        }
        position = last;
        events += applied;
    }
    for table in projection.tables() {
        // The copies' indexes got generated names; give them back the live ones, so later
        // migrations that name an index find it.
        let live = index_shapes(&mut tx, "public", table).await?;
        let rebuilt = index_shapes(&mut tx, schema, table).await?;
        sqlx::query(&format!("drop table public.{table}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("alter table {schema}.{table} set schema public"))
            .execute(&mut *tx)
            .await?;
        for (name, shape) in rebuilt {
            if let Some((original, _)) = live.iter().find(|(n, s)| *s == shape && *n != name) {
                sqlx::query(&format!("alter index public.{name} rename to {original}"))
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    sqlx::query(&format!("drop schema {schema}"))
        .execute(&mut *tx)
        .await?;
    sqlx::query("update projection_checkpoints set events_applied = 0 where name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    advance_checkpoint(&mut tx, name, position, events as i64).await?;
    tx.commit().await?;
    Ok((position, events))
}

/// One table compared between the live projection and a fresh replay.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TableComparison {
    pub table: String,
    pub live_rows: i64,
    pub rebuilt_rows: i64,
    pub equal: bool,
}

/// The outcome of verifying one projection.
#[derive(Clone, Debug, serde::Serialize)]
pub struct VerifyReport {
    pub name: String,
    pub position: LogPosition,
    pub tables: Vec<TableComparison>,
}

impl VerifyReport {
    pub fn matches(&self) -> bool {
        self.tables.iter().all(|t| t.equal)
    }
}

/// Replays the log into a scratch schema up to the live checkpoint and compares every table
/// with the live one by checksum. Takes no locks and holds nothing back: the live checkpoint and
/// tables are read in one repeatable-read snapshot (they commit together), then the scratch copy
/// is replayed to exactly that position.
pub async fn verify(
    pool: &PgPool,
    projection: &dyn Projection,
) -> Result<VerifyReport, MaintenanceError> {
    let name = projection.name();
    let mut snapshot = pool.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *snapshot)
        .await?;
    let live = checkpoint(&mut snapshot, name).await?;
    let mut live_sums = Vec::new();
    for table in projection.tables() {
        live_sums.push(checksum(&mut snapshot, "public", table).await?);
    }
    snapshot.commit().await?;

    let schema = scratch_schema("verify", name);
    let claim = claim_scratch(pool, std::slice::from_ref(&schema)).await?;
    let outcome = async {
        let mut conn = pool.acquire().await?;
        prepare_scratch(&mut conn, &schema, projection.tables()).await?;
        replay(
            &mut conn,
            projection,
            &schema,
            LogPosition::START,
            (Some(live), Some(live)),
            |_| {},
        )
        .await?;
        let mut tables = Vec::new();
        for (table, (live_sum, live_rows)) in projection.tables().iter().zip(live_sums) {
            let (rebuilt_sum, rebuilt_rows) = checksum(&mut conn, &schema, table).await?;
            tables.push(TableComparison {
                table: (*table).to_owned(),
                live_rows,
                rebuilt_rows,
                equal: live_sum == rebuilt_sum && live_rows == rebuilt_rows,
            });
        }
        Ok::<_, MaintenanceError>(VerifyReport {
            name: name.to_owned(),
            position: live,
            tables,
        })
    }
    .await;
    drop_scratch(pool, &schema).await;
    release_scratch(claim).await;
    outcome
}

/// A scratch schema's name (matches `SCRATCH_PATTERN`).
fn scratch_schema(purpose: &str, name: &str) -> String {
    format!("{purpose}_{name}_{}", uuid::Uuid::now_v7().simple())
}

/// Takes the advisory lock of each scratch schema (before it exists) on a connection of its
/// own: held until [`release_scratch`], or until the command dies with its connection.
async fn claim_scratch(pool: &PgPool, schemas: &[String]) -> Result<PgConnection, sqlx::Error> {
    let application_name = pool
        .connect_options()
        .get_application_name()
        .unwrap_or("shopfront projections")
        .to_owned();
    let mut conn = dedicated_connection(pool, &application_name).await?;
    for schema in schemas {
        sqlx::query("select pg_advisory_lock($1, hashtext($2))")
            .bind(SCRATCH_LOCK_NAMESPACE)
            .bind(schema)
            .execute(&mut conn)
            .await?;
    }
    Ok(conn)
}

/// Ends a claim once its schemas are gone (swapped in or dropped): closing the connection
/// releases the locks.
async fn release_scratch(claim: PgConnection) {
    if let Err(err) = claim.close().await {
        tracing::debug!(error = %err, "closing the scratch claim connection");
    }
}

/// Drops the scratch schemas that rebuilds or verifies left behind when they were killed
/// (those whose advisory lock nobody holds) and returns their names. A scratch schema that a
/// running command holds is left alone.
pub async fn drop_abandoned_scratch(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let schemas: Vec<String> = sqlx::query_scalar(
        "select nspname::text from pg_namespace where nspname ~ $1 order by nspname",
    )
    .bind(SCRATCH_PATTERN)
    .fetch_all(&mut *conn)
    .await?;
    let mut dropped = Vec::new();
    for schema in schemas {
        let abandoned: bool = sqlx::query_scalar("select pg_try_advisory_lock($1, hashtext($2))")
            .bind(SCRATCH_LOCK_NAMESPACE)
            .bind(&schema)
            .fetch_one(&mut *conn)
            .await?;
        if !abandoned {
            tracing::debug!(%schema, "a scratch schema in use by a running rebuild or verify");
            continue;
        }
        // The name matched SCRATCH_PATTERN: it needs no quoting.
        let outcome = sqlx::query(&format!("drop schema if exists {schema} cascade"))
            .execute(&mut *conn)
            .await;
        sqlx::query("select pg_advisory_unlock($1, hashtext($2))")
            .bind(SCRATCH_LOCK_NAMESPACE)
            .bind(&schema)
            .execute(&mut *conn)
            .await?;
        outcome?;
        tracing::info!(%schema, "dropped a scratch schema left by a killed rebuild or verify");
        dropped.push(schema);
    }
    Ok(dropped)
}

async fn prepare_scratch(
    conn: &mut PgConnection,
    schema: &str,
    tables: &[&str],
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("create schema {schema}"))
        .execute(&mut *conn)
        .await?;
    for table in tables {
        sqlx::query(&format!(
            "create table {schema}.{table} (like public.{table} including all)"
        ))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Drops the scratch copies' non-unique indexes that no projection reads while it applies
/// ([`read_models::INDEXES_READ_WHILE_APPLYING`]) and returns their definitions, for
/// [`build_indexes`] once the replay is done: one sort per index instead of an index update per
/// row written.
async fn defer_indexes(
    conn: &mut PgConnection,
    schema: &str,
    tables: &[&str],
) -> Result<Vec<String>, sqlx::Error> {
    let mut deferred = Vec::new();
    for table in tables {
        let live = index_shapes(conn, "public", table).await?;
        for (name, shape) in index_shapes(conn, schema, table).await? {
            let unique = shape.starts_with("true ");
            let read = live.iter().any(|(live_name, live_shape)| {
                *live_shape == shape
                    && read_models::INDEXES_READ_WHILE_APPLYING.contains(&live_name.as_str())
            });
            if unique || read {
                continue;
            }
            // Scratch index names are generated from the columns: no quoting needed.
            let definition: String =
                sqlx::query_scalar("select pg_get_indexdef(($1 || '.' || $2)::regclass)")
                    .bind(schema)
                    .bind(&name)
                    .fetch_one(&mut *conn)
                    .await?;
            sqlx::query(&format!("drop index {schema}.{name}"))
                .execute(&mut *conn)
                .await?;
            deferred.push(definition);
        }
    }
    Ok(deferred)
}

/// Builds the indexes [`defer_indexes`] put off, a few at once.
async fn build_indexes(pool: &PgPool, definitions: &[String]) -> Result<(), sqlx::Error> {
    for some in definitions.chunks(3) {
        futures::future::try_join_all(some.iter().map(|definition| build_index(pool, definition)))
            .await?;
    }
    Ok(())
}

async fn build_index(pool: &PgPool, definition: &str) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("set local maintenance_work_mem = '256MB'")
        .execute(&mut *tx)
        .await?;
    sqlx::query(definition).execute(&mut *tx).await?;
    tx.commit().await
}

async fn drop_scratch(pool: &PgPool, schema: &str) {
    if let Err(err) = sqlx::query(&format!("drop schema if exists {schema} cascade"))
        .execute(pool)
        .await
    {
        tracing::warn!(%schema, error = %err, "could not drop a scratch schema");
    }
}

async fn checkpoint(conn: &mut PgConnection, name: &str) -> Result<LogPosition, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "select transaction_id, global_position from projection_checkpoints where name = $1",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row
        .map(|(transaction_id, global_position)| LogPosition {
            transaction_id,
            global_position,
        })
        .unwrap_or(LogPosition::START))
}

/// Replays from `after` (to `up_to`, or to the end of the visible log) into `schema`, one
/// transaction per batch. Returns the last position and the number of events applied.
/// `bounds` is (stop after, keep going until at least): the second waits, up to
/// `HORIZON_WAIT`, for committed events still hidden behind the visibility horizon.
async fn replay(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    schema: &str,
    mut after: LogPosition,
    bounds: (Option<LogPosition>, Option<LogPosition>),
    progress: impl Fn(u64),
) -> Result<(LogPosition, u64), MaintenanceError> {
    let (up_to, at_least) = bounds;
    let deadline = tokio::time::Instant::now() + HORIZON_WAIT;
    let mut events = 0u64;
    loop {
        let mut tx = conn.begin().await?;
        let (last, applied) = apply_into(&mut tx, projection, schema, after, up_to).await?;
        tx.commit().await?;
        if applied == 0 {
            let hidden = at_least.is_some_and(|target| after < target);
            if hidden && tokio::time::Instant::now() < deadline {
                // No notification announces the horizon moving: look again shortly.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
            if hidden {
                tracing::warn!(projection = projection.name(), "events stayed hidden behind a long transaction; the live runner will apply them");
            }
            return Ok((after, events));
        }
        after = last;
        events += applied;
        progress(events);
    }
}

/// Applies one batch after `after` into `schema`, inside the caller's transaction.
async fn apply_into(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    schema: &str,
    after: LogPosition,
    up_to: Option<LogPosition>,
) -> Result<(LogPosition, u64), MaintenanceError> {
    let name = projection.name();
    let batch = read_between(&mut *conn, after, up_to, REPLAY_BATCH).await?;
    let count = batch.len() as u64;
    let (events, unreadable) = decode_prefix(batch);
    if let Some(unknown) = unreadable {
        return Err(MaintenanceError::Projection(name, unknown.into()));
    }
    apply_decoded(conn, projection, schema, &events).await?;
    let last = events.last().map(|e| e.position()).unwrap_or(after);
    Ok((last, count))
}

/// Applies decoded events to the projection's tables in `schema`, inside the caller's
/// transaction (`search_path` points there for the projection's unqualified table names).
async fn apply_decoded(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    schema: &str,
    events: &[Envelope],
) -> Result<(), MaintenanceError> {
    sqlx::query(&format!("set local search_path to {schema}, public"))
        .execute(&mut *conn)
        .await?;
    projection
        .apply_batch(conn, events)
        .await
        .map_err(|e| MaintenanceError::Projection(projection.name(), e))?;
    sqlx::query("set local search_path to public")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Empty temporary copies of `projection`'s tables, for a replay that only answers one question
/// (`kpis::as_of`). They live in the session's own temporary schema: nobody else sees them, and
/// they go with the session, so a connection of its own that is closed afterwards (or dies)
/// leaves nothing behind — no claim or clean-up as for scratch schemas. Filled batch by batch in
/// short transactions ([`apply_temporary`]), so a long replay never holds the log's visibility
/// horizon back the way one long writing transaction would.
pub async fn temporary_tables(
    conn: &mut PgConnection,
    projection: &dyn Projection,
) -> Result<(), sqlx::Error> {
    for table in projection.tables() {
        sqlx::query(&format!(
            "create temporary table {table} (like public.{table} including all)"
        ))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Applies decoded events to the temporary tables [`temporary_tables`] made, inside the
/// caller's transaction. The `search_path` is the temporary schema alone while the projection
/// writes, so a table it has no temporary copy of is an error, never a write to the live table.
pub async fn apply_temporary(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    events: &[Envelope],
) -> Result<(), MaintenanceError> {
    sqlx::query("set local search_path to pg_temp")
        .execute(&mut *conn)
        .await?;
    projection
        .apply_batch(conn, events)
        .await
        .map_err(|e| MaintenanceError::Projection(projection.name(), e))?;
    sqlx::query("set local search_path to default")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A table's indexes: (name, definition without its name and table), comparable across schemas.
async fn index_shapes(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "select c.relname::text, pg_get_indexdef(i.indexrelid)
           from pg_index i join pg_class c on c.oid = i.indexrelid
          where i.indrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, definition)| {
            let unique = definition.starts_with("CREATE UNIQUE");
            let using = definition
                .split_once(" USING ")
                .map(|(_, rest)| rest.to_owned())
                .unwrap_or(definition);
            (name, format!("{unique} {using}"))
        })
        .collect())
}

/// An order-independent checksum of a table's rows (the sum of a 60-bit hash of each row's
/// text, streamed: no table is ever held in one value), and its row count.
async fn checksum(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<(String, i64), sqlx::Error> {
    sqlx::query_as(&format!(
        "select coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint::numeric), 0)::text, count(*)
           from {schema}.{table} t"
    ))
    .fetch_one(&mut *conn)
    .await
}
