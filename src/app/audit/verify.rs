//! Verification: recompute the chain from the events and find the first place the log differs
//! from what was sealed.
//!
//! Two binary `COPY` streams are read side by side — the events in log order and the chain
//! rows in chain order, both bounded by the chain's head when verification starts — while one
//! blocking thread puts each event in canonical form, hashes it onto the previous hash and
//! compares it with its chain row and with any signed checkpoint at that index. The first
//! difference is classified:
//!
//! - **modified**: the event at a sealed position hashes differently (its row or its chain
//!   row was changed);
//! - **deleted**: the chain holds a position no event has any more;
//! - **inserted**: an event sits inside the sealed range where the chain has none;
//! - **reordered**: an event still exists but sorts elsewhere (its transaction id changed);
//! - **chain_rewritten**: chain rows are missing, or disagree with a checkpoint held outside
//!   the database (`--from-checkpoint`);
//! - **checkpoint_mismatch**: events and chain agree but a signed checkpoint does not (both
//!   were rewritten together, and only the signature tells);
//! - **bad_signature** / **untrusted_key**: a checkpoint row was altered or signed by a key
//!   the auditor does not trust.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::mpsc;

use super::chain::{canonical, next_hash, Checkpoint, CheckpointError, Hash, GENESIS};
use super::copy::{CopyError, CopyReader};
use super::{chain_event, events_copy_sql, ChainHead, LogAuditor};
use crate::app::{App, AppError};
use projections::log::LogPosition;

/// What to check against besides the database itself.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Start from this checkpoint (kept outside the database, verified before) instead of the
    /// first event: the chain row at its index must still hold its hash.
    pub from: Option<Checkpoint>,
    /// More checkpoints kept outside the database: each must match the chain.
    pub anchors: Vec<Checkpoint>,
    /// Public keys (hex) checkpoints may be signed with. Empty: any key whose signature
    /// verifies (the report says the keys were not pinned).
    pub trusted_keys: Vec<String>,
}

/// Why verification could not start (the caller's input, not the log's state).
#[derive(Debug, thiserror::Error)]
pub enum VerifyInputError {
    #[error("the checkpoint at chain index {chain_index} you gave: {source}")]
    Checkpoint {
        chain_index: i64,
        source: CheckpointError,
    },
    #[error("the checkpoint at chain index {0} you gave is signed by a key you do not trust")]
    UntrustedCheckpoint(i64),
    #[error("a trusted key must be 64 hex digits")]
    MalformedKey,
}

/// What verification found.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// No difference found.
    pub intact: bool,
    /// The first difference, if any.
    pub problem: Option<Tampering>,
    /// Where recomputation started (0: the first event).
    pub started_after_chain_index: i64,
    /// The chain's head when verification started.
    pub sealed_through: Option<ChainPoint>,
    /// Events recomputed and found as sealed.
    pub verified_events: i64,
    /// Events committed after the head, not sealed yet (not an error: the sealer follows).
    pub unsealed_events: i64,
    /// Signed checkpoints the recomputed chain was checked against.
    pub checkpoints_checked: i64,
    /// The latest signed checkpoint in the database (export it: it is the anchor for next time).
    pub latest_checkpoint: Option<Checkpoint>,
    /// Whether checkpoint keys were checked against keys the auditor gave.
    pub keys_pinned: bool,
    pub seconds: f64,
    pub events_per_second: f64,
}

/// A place in the chain.
#[derive(Clone, Debug, Serialize)]
pub struct ChainPoint {
    pub chain_index: i64,
    pub global_position: i64,
    pub transaction_id: i64,
    /// The chain hash there, hex.
    pub hash: String,
}

impl From<ChainHead> for ChainPoint {
    fn from(head: ChainHead) -> Self {
        Self {
            chain_index: head.chain_index,
            global_position: head.global_position,
            transaction_id: head.transaction_id,
            hash: hex::encode(head.hash),
        }
    }
}

/// The first difference between the log and its chain.
#[derive(Clone, Debug, Serialize)]
pub struct Tampering {
    pub kind: TamperKind,
    /// The global position it concerns.
    pub global_position: i64,
    /// The chain index it concerns, when there is one.
    pub chain_index: Option<i64>,
    pub detail: String,
}

/// How the log differs (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TamperKind {
    Modified,
    Deleted,
    Inserted,
    Reordered,
    ChainRewritten,
    CheckpointMismatch,
    BadSignature,
    UntrustedKey,
}

impl TamperKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TamperKind::Modified => "modified",
            TamperKind::Deleted => "deleted",
            TamperKind::Inserted => "inserted",
            TamperKind::Reordered => "reordered",
            TamperKind::ChainRewritten => "chain_rewritten",
            TamperKind::CheckpointMismatch => "checkpoint_mismatch",
            TamperKind::BadSignature => "bad_signature",
            TamperKind::UntrustedKey => "untrusted_key",
        }
    }
}

/// Why verification failed to run.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Input(#[from] VerifyInputError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error("verification stopped: {0}")]
    Worker(String),
}

impl From<VerifyError> for AppError {
    fn from(err: VerifyError) -> Self {
        match err {
            VerifyError::Input(input) => AppError::invalid("checkpoint", input.to_string()),
            VerifyError::Database(err) => err.into(),
            other => AppError::Internal(Box::new(other)),
        }
    }
}

impl App {
    /// Verifies the chain for `auditor` (one verification at a time per instance; another
    /// caller meanwhile is told to come back).
    pub async fn verify_audit_chain(
        &self,
        auditor: &LogAuditor,
        options: VerifyOptions,
    ) -> Result<VerifyReport, AppError> {
        self.may_verify_again(auditor)?;
        let _turn = self.audit_verifications.try_acquire().map_err(|_| {
            AppError::Busy(
                "a verification of the audit chain is already running; retry later".into(),
            )
        })?;
        let mut options = options;
        if options.trusted_keys.is_empty() {
            // Pinned to this instance's key unless the auditor names theirs: otherwise whoever
            // writes to the database could sign checkpoints with a key of their own.
            options
                .trusted_keys
                .extend(self.audit_public_key().map(str::to_owned));
        }
        let report = verify(&self.pool, &options).await?;
        self.verified(auditor);
        Ok(report)
    }
}

/// How often an account auditing one store may verify the chain over the API.
const VERIFY_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl App {
    /// Refuses a store's auditor who verified within the last [`VERIFY_EVERY`]: a
    /// verification keeps a core busy for seconds, and one tenant must not hold the
    /// instance's one slot. Platform admins (and the CLI, on the operator's authority) are not
    /// limited.
    fn may_verify_again(&self, auditor: &LogAuditor) -> Result<(), AppError> {
        let LogAuditor::Store(_) = auditor else {
            return Ok(());
        };
        let now = std::time::Instant::now();
        let mut verified = self
            .audit_verified_by
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        verified.retain(|_, at| now.duration_since(*at) < VERIFY_EVERY);
        if let Some(at) = verified.get(&auditor.account_id()) {
            return Err(AppError::TooSoon {
                what: "one verification a minute per store auditor",
                retry_after: VERIFY_EVERY.saturating_sub(now.duration_since(*at)),
            });
        }
        Ok(())
    }

    /// Remembers that `auditor` verified now.
    fn verified(&self, auditor: &LogAuditor) {
        if let LogAuditor::Store(_) = auditor {
            self.audit_verified_by
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(auditor.account_id(), std::time::Instant::now());
        }
    }
}

/// Recomputes the chain (see the module doc). The CLI calls it directly.
pub async fn verify(pool: &PgPool, options: &VerifyOptions) -> Result<VerifyReport, VerifyError> {
    let started = Instant::now();
    let trusted: HashSet<String> = options
        .trusted_keys
        .iter()
        .map(|key| {
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(key.trim(), &mut bytes)
                .map(|()| hex::encode(bytes))
                .map_err(|_| VerifyInputError::MalformedKey)
        })
        .collect::<Result<_, _>>()?;
    let given: Vec<&Checkpoint> = options.from.iter().chain(&options.anchors).collect();
    for checkpoint in &given {
        checkpoint
            .verify_signature()
            .map_err(|source| VerifyInputError::Checkpoint {
                chain_index: checkpoint.chain_index,
                source,
            })?;
        if !trusted.is_empty() && !trusted.contains(&checkpoint.public_key) {
            return Err(VerifyInputError::UntrustedCheckpoint(checkpoint.chain_index).into());
        }
    }

    let mut conn = pool.acquire().await?;
    let head = ChainHead::read(&mut conn).await?;
    let stored = stored_checkpoints(pool).await?;
    let mut report = VerifyReport {
        intact: true,
        problem: None,
        started_after_chain_index: options.from.as_ref().map_or(0, |c| c.chain_index),
        sealed_through: head.map(ChainPoint::from),
        verified_events: 0,
        unsealed_events: super::after_head(&mut conn, head).await?.0,
        checkpoints_checked: 0,
        latest_checkpoint: stored.last().cloned(),
        keys_pinned: !trusted.is_empty(),
        seconds: 0.0,
        events_per_second: 0.0,
    };
    let finish = |mut report: VerifyReport, problem: Option<Tampering>| {
        report.intact = problem.is_none();
        report.problem = problem;
        report.seconds = started.elapsed().as_secs_f64();
        report.events_per_second = report.verified_events as f64 / report.seconds.max(1e-9);
        Ok(report)
    };

    // The database's checkpoints: each must be signed, by a trusted key when keys are pinned
    // (checked off the async threads: a year of checkpoints is tens of thousands).
    let (stored, first_bad) = {
        let trusted = trusted.clone();
        tokio::task::spawn_blocking(move || {
            let bad = stored.iter().find_map(|checkpoint| {
                let problem = match checkpoint.verify_signature() {
                    Err(err) => Some((TamperKind::BadSignature, err.to_string())),
                    Ok(()) if !trusted.is_empty() && !trusted.contains(&checkpoint.public_key) => {
                        Some((
                            TamperKind::UntrustedKey,
                            format!("signed by {}, not a key you trust", checkpoint.public_key),
                        ))
                    }
                    Ok(()) => None,
                };
                problem.map(|(kind, detail)| {
                    tampering(
                        kind,
                        checkpoint.global_position,
                        Some(checkpoint.chain_index),
                        detail,
                    )
                })
            });
            (stored, bad)
        })
        .await
        .map_err(|err| VerifyError::Worker(err.to_string()))?
    };
    if let Some(problem) = first_bad {
        return finish(report, Some(problem));
    }

    // Where to start: the first event, or a checkpoint held outside the database (which the
    // chain must still hold, as must every earlier one given).
    // From the first event: every event up to the head, even one given a position before any
    // real one (an insertion no follower would ever read).
    let (start_index, start_hash, start_position) = match &options.from {
        None => (0, GENESIS, None),
        Some(from) => (
            from.chain_index,
            from.hash().map_err(|source| VerifyInputError::Checkpoint {
                chain_index: from.chain_index,
                source,
            })?,
            Some(LogPosition {
                transaction_id: from.transaction_id,
                global_position: from.global_position,
            }),
        ),
    };
    for checkpoint in given.iter().filter(|c| c.chain_index <= start_index) {
        let row = ChainHead::at(&mut conn, checkpoint.chain_index).await?;
        let hash = checkpoint
            .hash()
            .map_err(|source| VerifyInputError::Checkpoint {
                chain_index: checkpoint.chain_index,
                source,
            })?;
        let holds = row.is_some_and(|row| {
            row.hash == hash
                && row.global_position == checkpoint.global_position
                && row.transaction_id == checkpoint.transaction_id
        });
        if !holds {
            let problem = tampering(
                TamperKind::ChainRewritten,
                checkpoint.global_position,
                Some(checkpoint.chain_index),
                "the chain no longer holds this checkpoint you kept: the log was rewritten at or before it".into(),
            );
            return finish(report, Some(problem));
        }
    }
    drop(conn);
    // A checkpoint you kept past the chain's end: the log and its chain were cut back.
    let end = head.map_or(0, |h| h.chain_index);
    if let Some(beyond) = options
        .anchors
        .iter()
        .filter(|c| c.chain_index > end)
        .min_by_key(|c| c.chain_index)
    {
        let problem = tampering(
            TamperKind::ChainRewritten,
            beyond.global_position,
            Some(beyond.chain_index),
            format!("the chain ends at index {end}, before this checkpoint you kept: events and their chain were removed from the end"),
        );
        return finish(report, Some(problem));
    }
    let Some(head) = head.filter(|head| head.chain_index > start_index) else {
        return finish(report, None);
    };

    // Every signed checkpoint past the start is a hash the recomputed chain must reach.
    let mut expected: HashMap<i64, Vec<(Hash, i64, &'static str)>> = HashMap::new();
    for (checkpoint, source) in stored
        .iter()
        .map(|c| (c, "a signed checkpoint in the database"))
        .chain(options.anchors.iter().map(|c| (c, "a checkpoint you kept")))
        .filter(|(c, _)| c.chain_index > start_index)
    {
        let hash = checkpoint
            .hash()
            .map_err(|source| VerifyInputError::Checkpoint {
                chain_index: checkpoint.chain_index,
                source,
            })?;
        expected.entry(checkpoint.chain_index).or_default().push((
            hash,
            checkpoint.global_position,
            source,
        ));
    }

    let events = stream(
        pool.clone(),
        events_copy_sql(start_position, Some(head.position()), None, false),
    );
    let chain = stream(
        pool.clone(),
        format!(
            "copy (select chain_index, transaction_id, global_position, hash from audit_chain
                    where chain_index > {start_index} and chain_index <= {}
                    order by chain_index)
             to stdout with (format binary)",
            head.chain_index
        ),
    );
    // Dropping this future (a client gone) stops the walk, and with it both COPY streams.
    let cancel = tokio_util::sync::CancellationToken::new();
    let _stop_walk = cancel.clone().drop_guard();
    let walked = tokio::task::spawn_blocking(move || {
        walk(events, chain, start_index, start_hash, &expected, &cancel)
    })
    .await
    .map_err(|err| VerifyError::Worker(err.to_string()))??;
    report.verified_events = walked.verified;
    report.checkpoints_checked = walked.checkpoints_checked;
    let problem = match walked.stop {
        None => None,
        Some(stop) => Some(classify(pool, stop).await?),
    };
    finish(report, problem)
}

fn tampering(
    kind: TamperKind,
    global_position: i64,
    chain_index: Option<i64>,
    detail: String,
) -> Tampering {
    Tampering {
        kind,
        global_position,
        chain_index,
        detail,
    }
}

/// The latest checkpoint in the database.
pub async fn latest_checkpoint(pool: &PgPool) -> Result<Option<Checkpoint>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {} from audit_checkpoints order by chain_index desc limit 1",
        super::CHECKPOINT_COLUMNS
    ))
    .fetch_optional(pool)
    .await
}

/// Every checkpoint in the database, oldest first.
pub async fn stored_checkpoints(pool: &PgPool) -> Result<Vec<Checkpoint>, sqlx::Error> {
    checkpoints_after(pool, 0, i64::MAX).await
}

/// Up to `limit` checkpoints after chain index `after`, oldest first.
pub async fn checkpoints_after(
    pool: &PgPool,
    after: i64,
    limit: i64,
) -> Result<Vec<Checkpoint>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {} from audit_checkpoints where chain_index > $1 order by chain_index limit $2",
        super::CHECKPOINT_COLUMNS
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

type Chunks = mpsc::Receiver<Result<Bytes, sqlx::Error>>;

/// Runs `COPY` on its own pooled connection, handing its chunks over as they arrive; stops
/// when the receiver is gone. A connection left in the middle of a `COPY` is closed, not put
/// back in the pool (the next user would read the rest of it).
fn stream(pool: PgPool, sql: String) -> Chunks {
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut conn = match pool.acquire().await {
            Ok(conn) => conn,
            Err(err) => {
                let _ = sender.send(Err(err)).await;
                return;
            }
        };
        let finished = match conn.copy_out_raw(&sql).await {
            Err(err) => {
                let _ = sender.send(Err(err)).await;
                true
            }
            // Postgres sends a message per row: hand them over in batches of whatever has
            // arrived, or the channel's per-message cost exceeds the hashing.
            Ok(copy) => {
                let mut copy = copy.ready_chunks(1024);
                loop {
                    let Some(messages) = copy.next().await else {
                        break true;
                    };
                    let size = messages
                        .iter()
                        .map(|m| m.as_ref().map_or(0, Bytes::len))
                        .sum();
                    let mut batch = bytes::BytesMut::with_capacity(size);
                    let mut failed = None;
                    for message in messages {
                        match message {
                            Ok(bytes) => batch.extend_from_slice(&bytes),
                            Err(err) => {
                                failed = Some(err);
                                break;
                            }
                        }
                    }
                    let mut gone = sender.send(Ok(batch.freeze())).await.is_err();
                    if let Some(err) = failed {
                        gone = gone || sender.send(Err(err)).await.is_err();
                    }
                    if gone {
                        break false;
                    }
                }
            }
        };
        if !finished {
            conn.close_on_drop();
        }
    });
    receiver
}

fn reader(mut chunks: Chunks) -> CopyReader<impl FnMut() -> Result<Option<Bytes>, CopyError>> {
    CopyReader::new(move || match chunks.blocking_recv() {
        Some(Ok(chunk)) => Ok(Some(chunk)),
        Some(Err(err)) => Err(CopyError::Database(err)),
        None => Ok(None),
    })
}

/// Where the walk stopped, before classification.
enum Stop {
    /// The event at a sealed position does not hash to its chain row.
    Modified {
        chain_index: i64,
        global_position: i64,
    },
    /// It does, but a signed checkpoint at that index says otherwise.
    CheckpointMismatch {
        chain_index: i64,
        global_position: i64,
        source: &'static str,
    },
    /// Chain rows are missing between `expected` and `found`, where `event` is.
    ChainGap {
        expected: i64,
        found: ChainHead,
        event: i64,
    },
    /// The next event and the next chain row are not the same event.
    Mismatch {
        event: Option<LogPosition>,
        chain: Option<ChainHead>,
    },
}

struct Walked {
    verified: i64,
    checkpoints_checked: i64,
    stop: Option<Stop>,
}

fn walk(
    events: Chunks,
    chain: Chunks,
    start_index: i64,
    start_hash: Hash,
    expected: &HashMap<i64, Vec<(Hash, i64, &'static str)>>,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<Walked, CopyError> {
    let mut events = reader(events);
    let mut chain = reader(chain);
    let mut bytes = Vec::with_capacity(4096);
    let (mut index, mut hash) = (start_index, start_hash);
    let mut walked = Walked {
        verified: 0,
        checkpoints_checked: 0,
        stop: None,
    };
    loop {
        let row = match chain.next_tuple()? {
            Some(tuple) => Some(chain_row(&tuple)?),
            None => None,
        };
        let event = match events.next_tuple()? {
            Some(tuple) => Some(chain_event(&tuple)?),
            None => None,
        };
        let (event, row) = match (event, row) {
            (None, None) => return Ok(walked),
            (Some(event), Some(row)) => (event, row),
            (event, chain) => {
                let event = event.map(|e| LogPosition {
                    transaction_id: e.transaction_id,
                    global_position: e.global_position,
                });
                walked.stop = Some(Stop::Mismatch { event, chain });
                return Ok(walked);
            }
        };
        if row.chain_index != index + 1 {
            walked.stop = Some(Stop::ChainGap {
                expected: index + 1,
                found: row,
                event: event.global_position,
            });
            return Ok(walked);
        }
        if (event.transaction_id, event.global_position)
            != (row.transaction_id, row.global_position)
        {
            walked.stop = Some(Stop::Mismatch {
                event: Some(LogPosition {
                    transaction_id: event.transaction_id,
                    global_position: event.global_position,
                }),
                chain: Some(row),
            });
            return Ok(walked);
        }
        if walked.verified % 4096 == 0 && cancel.is_cancelled() {
            return Err(CopyError::Cancelled);
        }
        canonical(&event, &mut bytes);
        let next = next_hash(&hash, &bytes);
        if next != row.hash {
            walked.stop = Some(Stop::Modified {
                chain_index: row.chain_index,
                global_position: row.global_position,
            });
            return Ok(walked);
        }
        if let Some(checkpoints) = expected.get(&row.chain_index) {
            for (hash, position, source) in checkpoints {
                if *hash != next || *position != row.global_position {
                    walked.stop = Some(Stop::CheckpointMismatch {
                        chain_index: row.chain_index,
                        global_position: row.global_position,
                        source,
                    });
                    return Ok(walked);
                }
                walked.checkpoints_checked += 1;
            }
        }
        hash = next;
        index = row.chain_index;
        walked.verified += 1;
    }
}

fn chain_row(tuple: &super::copy::Tuple<'_>) -> Result<ChainHead, CopyError> {
    Ok(ChainHead {
        chain_index: tuple.i64(0)?,
        transaction_id: tuple.i64(1)?,
        global_position: tuple.i64(2)?,
        hash: tuple
            .required(3)?
            .try_into()
            .map_err(|_| CopyError::Column(3))?,
    })
}

/// Names what happened where the walk stopped, looking up where the events involved went.
async fn classify(pool: &PgPool, stop: Stop) -> Result<Tampering, sqlx::Error> {
    Ok(match stop {
        Stop::Modified {
            chain_index,
            global_position,
        } => tampering(
            TamperKind::Modified,
            global_position,
            Some(chain_index),
            format!("the event at global position {global_position} does not hash to what was sealed at chain index {chain_index}: the event (or its chain row) was changed"),
        ),
        Stop::CheckpointMismatch {
            chain_index,
            global_position,
            source,
        } => tampering(
            TamperKind::CheckpointMismatch,
            global_position,
            Some(chain_index),
            format!("the events and chain rows agree, but {source} at chain index {chain_index} does not: the log and its chain were rewritten together at or before global position {global_position}"),
        ),
        Stop::ChainGap {
            expected,
            found,
            event,
        } => tampering(
            TamperKind::ChainRewritten,
            event,
            Some(expected),
            format!(
                "chain rows {expected} to {} are missing",
                found.chain_index - 1
            ),
        ),
        Stop::Mismatch { event, chain } => {
            let event_first = match (event, chain) {
                (Some(event), Some(row)) => event < row.position(),
                (Some(_), None) => true,
                _ => false,
            };
            match (event, chain) {
                (Some(event), _) if event_first => {
                    let sealed: Option<(i64, i64)> = sqlx::query_as(
                        "select chain_index, transaction_id from audit_chain where global_position = $1",
                    )
                    .bind(event.global_position)
                    .fetch_optional(pool)
                    .await?;
                    match sealed {
                        Some((chain_index, transaction_id)) => tampering(
                            TamperKind::Reordered,
                            event.global_position,
                            Some(chain_index),
                            format!("the event at global position {} was sealed with transaction id {transaction_id} at chain index {chain_index}; it now has transaction id {} and sorts elsewhere", event.global_position, event.transaction_id),
                        ),
                        None => tampering(
                            TamperKind::Inserted,
                            event.global_position,
                            None,
                            format!("the event at global position {} (transaction id {}) sorts inside the sealed part of the log, where the chain has no event", event.global_position, event.transaction_id),
                        ),
                    }
                }
                (_, Some(row)) => {
                    let now: Option<i64> = sqlx::query_scalar(
                        "select transaction_id::text::bigint from events where global_position = $1",
                    )
                    .bind(row.global_position)
                    .fetch_optional(pool)
                    .await?;
                    match now {
                        Some(transaction_id) => tampering(
                            TamperKind::Reordered,
                            row.global_position,
                            Some(row.chain_index),
                            format!("the event at global position {} was sealed with transaction id {} at chain index {}; it now has transaction id {transaction_id} and sorts elsewhere", row.global_position, row.transaction_id, row.chain_index),
                        ),
                        None => tampering(
                            TamperKind::Deleted,
                            row.global_position,
                            Some(row.chain_index),
                            format!("the event sealed at chain index {} (global position {}) is gone", row.chain_index, row.global_position),
                        ),
                    }
                }
                // Unreachable: an event with no chain row sorts first, and the walk stops on a
                // mismatch only when one side has a row.
                (Some(_), None) | (None, None) => tampering(
                    TamperKind::ChainRewritten,
                    0,
                    None,
                    "the chain and the log disagree".into(),
                ),
            }
        }
    })
}
