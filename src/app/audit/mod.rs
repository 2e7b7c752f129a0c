//! What auditors ask of the log (docs/auditing.md): its history as it stands and as it stood,
//! and its integrity (the hash chain, signed checkpoints, verification).
//!
//! - `export`: the log, or a slice of it, as NDJSON lines (API, `audit export`, `audit tail`);
//! - `history`: one aggregate's events, its state as of a version or an instant, a store's
//!   KPI figures as of a day;
//! - `chain`: the canonical bytes of an event, the chain's hash step, signed checkpoints;
//! - `copy`: reading binary `COPY` output (the fast way through the whole log);
//! - `sealer`: the leader that extends the chain as events commit and signs checkpoints;
//! - `signing`: the checkpoint key (from configuration, or generated on first run);
//! - `verify`: recomputing the chain and finding the first altered event.

pub mod chain;
pub mod copy;
pub mod export;
pub mod history;
pub mod sealer;
pub mod signing;
pub mod verify;

use projections::log::LogPosition;
use sqlx::PgConnection;

use crate::app::authz::{grant, StoreAccess};
use crate::app::{App, AppError, Caller, PlatformAdmin};
use aggregates::StoreId;
use chain::{ChainEvent, Hash};
use copy::{CopyError, Tuple};

/// The last event the chain holds (or any row of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub chain_index: i64,
    pub transaction_id: i64,
    pub global_position: i64,
    pub hash: Hash,
}

impl ChainHead {
    /// The chain's last row, if it has any.
    pub async fn read(conn: &mut PgConnection) -> Result<Option<Self>, sqlx::Error> {
        let row: Option<(i64, i64, i64, Vec<u8>)> = sqlx::query_as(
            "select chain_index, transaction_id, global_position, hash
               from audit_chain order by chain_index desc limit 1",
        )
        .fetch_optional(conn)
        .await?;
        row.map(Self::from_row).transpose()
    }

    /// The chain row at `chain_index`, if there is one.
    pub async fn at(
        conn: &mut PgConnection,
        chain_index: i64,
    ) -> Result<Option<Self>, sqlx::Error> {
        let row: Option<(i64, i64, i64, Vec<u8>)> = sqlx::query_as(
            "select chain_index, transaction_id, global_position, hash
               from audit_chain where chain_index = $1",
        )
        .bind(chain_index)
        .fetch_optional(conn)
        .await?;
        row.map(Self::from_row).transpose()
    }

    fn from_row(
        (chain_index, transaction_id, global_position, hash): (i64, i64, i64, Vec<u8>),
    ) -> Result<Self, sqlx::Error> {
        let hash = Hash::try_from(hash.as_slice()).map_err(|_| {
            sqlx::Error::Decode(
                format!("audit_chain row {chain_index} has a malformed hash").into(),
            )
        })?;
        Ok(Self {
            chain_index,
            transaction_id,
            global_position,
            hash,
        })
    }

    /// Its event's place in the log.
    pub fn position(&self) -> LogPosition {
        LogPosition {
            transaction_id: self.transaction_id,
            global_position: self.global_position,
        }
    }
}

/// `COPY … TO STDOUT (FORMAT BINARY)` of the events after `after` (`None`: every event, even
/// one given a position before any real one) and not after `up_to`, in log order; with
/// `horizon`, only those below the visibility horizon (what a follower may read: nothing is
/// skipped). Columns as [`chain_event`] reads them.
pub fn events_copy_sql(
    after: Option<LogPosition>,
    up_to: Option<LogPosition>,
    limit: Option<i64>,
    horizon: bool,
) -> String {
    let after = after
        .map(|p| {
            format!(
                "and (transaction_id, global_position) > ('{}'::xid8, {})",
                p.transaction_id, p.global_position
            )
        })
        .unwrap_or_default();
    let up_to = up_to
        .map(|p| {
            format!(
                "and (transaction_id, global_position) <= ('{}'::xid8, {})",
                p.transaction_id, p.global_position
            )
        })
        .unwrap_or_default();
    let horizon = if horizon {
        "and transaction_id < pg_snapshot_xmin(pg_current_snapshot())"
    } else {
        ""
    };
    let limit = limit.map(|l| format!("limit {l}")).unwrap_or_default();
    format!(
        "copy (select transaction_id::text::bigint, global_position, aggregate_type, aggregate_id,
                      sequence, event_type, event_version, payload, metadata, recorded_at
                 from events
                where true {after} {up_to} {horizon}
                order by events.transaction_id, events.global_position {limit})
         to stdout with (format binary)"
    )
}

/// An event tuple of [`events_copy_sql`] as the chain sees it.
pub fn chain_event<'a>(tuple: &Tuple<'a>) -> Result<ChainEvent<'a>, CopyError> {
    Ok(ChainEvent {
        transaction_id: tuple.i64(0)?,
        global_position: tuple.i64(1)?,
        aggregate_type: tuple.required(2)?,
        aggregate_id: tuple.required(3)?,
        sequence: tuple.i64(4)?,
        event_type: tuple.required(5)?,
        event_version: tuple.required(6)?,
        payload: tuple.required(7)?,
        metadata: tuple.required(8)?,
        recorded_at_micros: chain::micros_from_pg(tuple.i64(9)?),
    })
}

/// Proof that a caller may audit the log: the audit trail permission in a store they name (a
/// store's slice of the log; the chain, which covers every store but whose positions, hashes
/// and counts reveal no store's events), or a platform admin (the whole platform's log).
pub enum LogAuditor {
    Store(StoreAccess<grant::ViewAuditTrail>),
    Platform(PlatformAdmin),
}

impl LogAuditor {
    /// Who is auditing.
    pub fn account_id(&self) -> aggregates::AccountId {
        match self {
            LogAuditor::Store(access) => access.account_id(),
            LogAuditor::Platform(admin) => admin.account_id(),
        }
    }
}

impl App {
    /// [`LogAuditor`] for `caller`: with `store_id`, `ViewAuditTrail` there; without, a
    /// platform admin (exports, the chain's state, checkpoints and verification ask this).
    pub async fn authorize_log_auditor(
        &self,
        caller: &Caller,
        store_id: Option<StoreId>,
    ) -> Result<LogAuditor, AppError> {
        Ok(match store_id {
            Some(store_id) => LogAuditor::Store(
                self.authorize::<grant::ViewAuditTrail>(caller, store_id)
                    .await?,
            ),
            None => LogAuditor::Platform(self.require_platform_admin(caller).await?),
        })
    }
}

/// Where sealing stands.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ChainStatus {
    /// The chain's head: the last event sealed.
    pub sealed_through: Option<verify::ChainPoint>,
    /// Events committed after it (the sealer follows within a second).
    pub unsealed_events: i64,
    /// The latest signed checkpoint.
    pub latest_checkpoint: Option<chain::Checkpoint>,
}

/// How far the sealer is behind: events committed after the chain's head, and the age in
/// seconds of the oldest of them (0 when none), as `/metrics` shows them.
pub async fn sealing_lag(pool: &sqlx::PgPool) -> Result<(i64, f64), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let head = ChainHead::read(&mut conn).await?;
    after_head(&mut conn, head).await
}

/// The events after `head` (every event while there is none), read through the log's index:
/// how many, and the age in seconds of the oldest.
async fn after_head(
    conn: &mut PgConnection,
    head: Option<ChainHead>,
) -> Result<(i64, f64), sqlx::Error> {
    let after = head.map(|h| h.position()).unwrap_or(LogPosition::START);
    sqlx::query_as(
        "select count(*),
                coalesce(extract(epoch from now() - min(recorded_at))::float8, 0)
           from events
          where (transaction_id, global_position) > ($1::bigint::text::xid8, $2)",
    )
    .bind(after.transaction_id)
    .bind(after.global_position)
    .fetch_one(conn)
    .await
}

/// The columns a [`chain::Checkpoint`] is read from, in its field order.
const CHECKPOINT_COLUMNS: &str =
    "chain_index, global_position, transaction_id, hash, signed_at, public_key, signature";

/// A key that signed checkpoints, and which.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SigningKeyUse {
    pub public_key: String,
    pub first_chain_index: i64,
    pub last_chain_index: i64,
    pub checkpoints: i64,
}

impl App {
    /// Where sealing stands.
    pub async fn audit_chain_status(&self, _auditor: &LogAuditor) -> Result<ChainStatus, AppError> {
        let mut conn = self.pool.acquire().await?;
        let head = ChainHead::read(&mut conn).await?;
        let (unsealed_events, _) = after_head(&mut conn, head).await?;
        drop(conn);
        Ok(ChainStatus {
            sealed_through: head.map(verify::ChainPoint::from),
            unsealed_events,
            latest_checkpoint: verify::latest_checkpoint(&self.pool).await?,
        })
    }

    /// Up to `limit` signed checkpoints after chain index `after`, oldest first.
    pub async fn audit_checkpoints(
        &self,
        _auditor: &LogAuditor,
        after: i64,
        limit: i64,
    ) -> Result<Vec<chain::Checkpoint>, AppError> {
        Ok(verify::checkpoints_after(&self.pool, after, limit).await?)
    }

    /// The latest checkpoint not posted to the admins' Telegram chat yet.
    pub async fn unposted_audit_checkpoint(&self) -> Result<Option<chain::Checkpoint>, AppError> {
        Ok(sqlx::query_as(&format!(
            "select {CHECKPOINT_COLUMNS} from audit_checkpoints where posted_at is null
              order by chain_index desc limit 1"
        ))
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Marks the checkpoint at `chain_index`, and every unposted one before it (it covers
    /// them), as posted.
    pub async fn audit_checkpoint_posted(&self, chain_index: i64) -> Result<(), AppError> {
        sqlx::query(
            "update audit_checkpoints set posted_at = now()
              where posted_at is null and chain_index <= $1",
        )
        .bind(chain_index)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every key that signed checkpoints here, oldest first (public: anyone may check a
    /// checkpoint).
    pub async fn audit_signing_keys(&self) -> Result<Vec<SigningKeyUse>, AppError> {
        let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "select public_key, min(chain_index), max(chain_index), count(*)
               from audit_checkpoints group by public_key order by min(chain_index)",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(public_key, first_chain_index, last_chain_index, checkpoints)| SigningKeyUse {
                    public_key,
                    first_chain_index,
                    last_chain_index,
                    checkpoints,
                },
            )
            .collect())
    }
}
