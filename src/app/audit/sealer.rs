//! The sealing process: one leader (advisory lock `audit-chain`) follows the global log and
//! extends the hash chain, committing each batch's chain rows in one transaction. It signs a
//! checkpoint at every `checkpoint_events`-th event (wherever batches end), and at the head
//! when the last checkpoint is older than `checkpoint_interval` and something was sealed since.
//!
//! 1. begin; read the chain's head (its last row);
//! 2. read the next visible events after the head's position with binary `COPY` (the same
//!    horizon rule as every reader: only below `pg_snapshot_xmin`, so nothing is skipped);
//! 3. hash them in order off the async threads;
//! 4. insert their chain rows; sign a checkpoint if one is due; notify; commit;
//! 5. when the log is drained, wait for an events notification, a checkpoint notification
//!    (a transaction that held the horizon back ended) or the poll interval.
//!
//! A second sealer (a leadership lost and taken over mid-batch) cannot fork the chain: chain
//! indexes are a primary key, so one of two racing batches fails and is redone on the head.

use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use futures::TryStreamExt;
use projections::runtime::{acquire_leadership, Notifications, RuntimeSettings};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use super::chain::{canonical, next_hash, Checkpoint, Hash, GENESIS};
use super::copy::{CopyError, CopyReader};
use super::events_copy_sql;
use super::ChainHead;

/// The sealer's leader lock.
pub const SEALER: &str = "audit-chain";

/// Events sealed per transaction.
pub const SEAL_BATCH: i64 = 5_000;

/// When the sealer signs.
#[derive(Clone, Debug)]
pub struct SealerSettings {
    /// The key checkpoints are signed with.
    pub key: SigningKey,
    /// Events between checkpoints.
    pub checkpoint_events: i64,
    /// Longest time between checkpoints while events arrive.
    pub checkpoint_interval: Duration,
    /// Fallback poll when no notification arrives.
    pub poll_interval: Duration,
}

/// Why a batch could not be sealed (the leadership is given up and competed for again).
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error("the chain row {0} holds a hash of the wrong length")]
    BadHead(i64),
    #[error("hashing stopped: {0}")]
    Hashing(String),
}

/// Runs the sealer until `stop`: competes for the leadership, seals while leading, and after a
/// database error competes again with backoff.
pub async fn run(
    pool: PgPool,
    notifications: Notifications,
    settings: SealerSettings,
    runtime: RuntimeSettings,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut leader = match acquire_leadership(&pool, SEALER, &runtime, &stop).await {
            Ok(Some(conn)) => conn,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(error = %err, "the sealer cannot compete for leadership; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(runtime.max_backoff);
                continue;
            }
        };
        // A transient failure after a spell of leading is retried soon again.
        let led_since = std::time::Instant::now();
        match lead(&mut leader, &notifications, &settings, &stop).await {
            Ok(()) => return,
            Err(SealError::Database(err))
                if !projections::runtime::is_transient(&err) && !lost_a_race(&err) =>
            {
                // Not the connection, nor another sealer first: a statement the database
                // refuses every time (a sealed event moved past the head). Sealing stays
                // stopped until someone looks: it must not skip an event.
                tracing::error!(error = %err,
                    "the sealer cannot extend the audit chain; run `shopfront audit verify`");
                drop(leader);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(runtime.failed_retry_interval) => {}
                }
            }
            Err(err) => {
                if led_since.elapsed() > runtime.max_backoff {
                    backoff = Duration::from_millis(100);
                }
                tracing::warn!(error = %err, "the sealer stopped leading; competing again");
                drop(leader);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(runtime.max_backoff);
            }
        }
    }
}

/// Whether another sealer committed the same chain index first (a leadership taken over
/// while the old leader's batch was still running): its batch stands, this one is redone on
/// the new head.
fn lost_a_race(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|e| e.constraint())
        .is_some_and(|constraint| constraint == "audit_chain_pkey")
}

async fn lead(
    conn: &mut PgConnection,
    notifications: &Notifications,
    settings: &SealerSettings,
    stop: &CancellationToken,
) -> Result<(), SealError> {
    let mut woken = notifications.events();
    let mut horizon = notifications.checkpoints();
    loop {
        woken.borrow_and_update();
        horizon.borrow_and_update();
        let sealed = seal_batch(conn, settings, crate::app::now()).await?;
        if sealed > 0 {
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = woken.changed() => {}
            _ = horizon.changed() => {}
            _ = tokio::time::sleep(settings.poll_interval) => {}
        }
    }
}

/// Seals the next batch of visible events (if any) and signs a checkpoint when one is due;
/// returns how many events it sealed.
pub async fn seal_batch(
    conn: &mut PgConnection,
    settings: &SealerSettings,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<usize, SealError> {
    let mut tx = conn.begin().await?;
    let head = ChainHead::read(&mut tx).await?;
    let sql = events_copy_sql(head.map(|h| h.position()), None, Some(SEAL_BATCH), true);
    let chunks: Vec<Bytes> = tx.copy_out_raw(&sql).await?.try_collect().await?;
    let (index, previous) = match head {
        Some(head) => (head.chain_index, head.hash),
        None => (0, GENESIS),
    };
    let rows = tokio::task::spawn_blocking(move || hash_chunks(chunks, index, previous))
        .await
        .map_err(|err| SealError::Hashing(err.to_string()))??;
    let new_head = rows.last().copied().or(head);
    if !rows.is_empty() {
        insert_rows(&mut tx, &rows).await?;
    }
    // Every `checkpoint_events`-th event gets a checkpoint, wherever batches end; and the head
    // gets one when the last is older than `checkpoint_interval`.
    let every = settings.checkpoint_events.max(1);
    let mut checkpointed = false;
    for row in rows.iter().filter(|row| row.chain_index % every == 0) {
        sign_checkpoint(&mut tx, &settings.key, row, now).await?;
        checkpointed = true;
    }
    if let Some(new_head) = new_head {
        if checkpoint_overdue(&mut tx, settings, &new_head, now).await? {
            sign_checkpoint(&mut tx, &settings.key, &new_head, now).await?;
            checkpointed = true;
        }
    }
    if !rows.is_empty() || checkpointed {
        // Readers of the log and waiters for the chain are woken at commit: this transaction
        // may have held their horizon back, and the chain moved.
        sqlx::query("select pg_notify($1, $2)")
            .bind(projections::runtime::CHECKPOINT_CHANNEL)
            .bind(SEALER)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(rows.len())
}

/// Hashes the events of one binary COPY, in order, continuing the chain from `(index, hash)`.
fn hash_chunks(
    chunks: Vec<Bytes>,
    index: i64,
    previous: Hash,
) -> Result<Vec<ChainHead>, SealError> {
    let mut chunks = chunks.into_iter();
    let mut reader = CopyReader::new(move || Ok(chunks.next()));
    let mut rows = Vec::new();
    let mut bytes = Vec::with_capacity(4096);
    let (mut index, mut hash) = (index, previous);
    while let Some(tuple) = reader.next_tuple()? {
        let event = super::chain_event(&tuple)?;
        canonical(&event, &mut bytes);
        hash = next_hash(&hash, &bytes);
        index += 1;
        rows.push(ChainHead {
            chain_index: index,
            transaction_id: event.transaction_id,
            global_position: event.global_position,
            hash,
        });
    }
    Ok(rows)
}

async fn insert_rows(conn: &mut PgConnection, rows: &[ChainHead]) -> Result<(), sqlx::Error> {
    let indexes: Vec<i64> = rows.iter().map(|r| r.chain_index).collect();
    let transactions: Vec<i64> = rows.iter().map(|r| r.transaction_id).collect();
    let positions: Vec<i64> = rows.iter().map(|r| r.global_position).collect();
    let hashes: Vec<Vec<u8>> = rows.iter().map(|r| r.hash.to_vec()).collect();
    sqlx::query(
        "insert into audit_chain (chain_index, transaction_id, global_position, hash)
         select * from unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bytea[])",
    )
    .bind(indexes)
    .bind(transactions)
    .bind(positions)
    .bind(hashes)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether the head needs a checkpoint because the last one is older than
/// `checkpoint_interval` (or there is none) and events were sealed since.
async fn checkpoint_overdue(
    conn: &mut PgConnection,
    settings: &SealerSettings,
    head: &ChainHead,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool, sqlx::Error> {
    let last: Option<(i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "select chain_index, signed_at from audit_checkpoints order by chain_index desc limit 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match last {
        None => true,
        Some((index, at)) => {
            head.chain_index > index
                && now - at
                    >= chrono::Duration::from_std(settings.checkpoint_interval).unwrap_or_default()
        }
    })
}

/// Signs and stores a checkpoint at `row`.
async fn sign_checkpoint(
    conn: &mut PgConnection,
    key: &SigningKey,
    row: &ChainHead,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    let checkpoint = Checkpoint::sign(
        key,
        row.chain_index,
        row.transaction_id,
        row.global_position,
        &row.hash,
        now,
    );
    sqlx::query(
        "insert into audit_checkpoints
             (chain_index, transaction_id, global_position, hash, signed_at, public_key, signature)
         values ($1, $2, $3, $4, $5, $6, $7)
         on conflict (chain_index) do nothing",
    )
    .bind(checkpoint.chain_index)
    .bind(checkpoint.transaction_id)
    .bind(checkpoint.global_position)
    .bind(&checkpoint.hash)
    .bind(checkpoint.signed_at)
    .bind(&checkpoint.public_key)
    .bind(&checkpoint.signature)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
