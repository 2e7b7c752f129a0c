//! A store's KPI figures as they stood at an instant: what an auditor means by "as of the end of
//! that day" — only the events recorded up to then count.
//!
//! The live tables cannot say that. Their day buckets are keyed by the time inside each event
//! (`placed_at`, `at`, `verified_at`: when the command was decided), which may fall on the day
//! before the one the event was recorded on (a decision at 23:59:59.9 commits after midnight);
//! and `kpi_order_status` holds only the current count per status, which every later
//! transition changes. So the store's own events recorded up to the instant are replayed through
//! the projection's own [`Kpis::apply_batch`] into temporary copies of its tables
//! (`maintenance::temporary_tables`) and the dashboard query runs on those: the same code that
//! built the live figures builds these.
//!
//! Two connections: the events are read in one read-only repeatable-read transaction (one
//! snapshot for every page, so a transaction committing meanwhile cannot slip in before a
//! position already passed; a read-only transaction takes no transaction id, so it holds no
//! reader of the log back), and applied on a session of its own, one short transaction per
//! batch (a writing transaction does take one, and a long one would hold back every projection
//! and live feed until it ended). The session is closed at the end, and its temporary tables
//! with it, whatever happened.
//!
//! Cost: one pass over the log up to the instant (the store filter looks up each aggregate's
//! first event by primary key), and the store's `Store`, `Order` and `PaymentReceipt` events
//! through the fold, in batches, plus a connection opened for the replay. It grows with the
//! store's history, not with the number of requests the live tables serve; the application
//! layer bounds how many run at once.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use super::queries::{dashboard_on, Dashboard};
use super::Kpis;
use crate::log::{read_store_recorded_until, LogPosition};
use crate::maintenance::{apply_temporary, temporary_tables, MaintenanceError};
use crate::runtime::{decode_prefix, dedicated_connection};

/// The aggregate types whose events the KPI projection reads (it skips every other one).
const KPI_AGGREGATES: [&str; 3] = ["Store", "Order", "PaymentReceipt"];

/// Events read and applied per batch.
const BATCH: i64 = 5_000;

/// The figures of a store as they stood at an instant.
#[derive(Clone, Debug, PartialEq)]
pub struct DashboardAsOf {
    /// `None` when no event of the store was recorded by then.
    pub dashboard: Option<Dashboard>,
    /// Events replayed to compute it.
    pub events: u64,
}

/// The dashboard of `store_id` for local days `from..=to` as it stood at `until`, replayed from
/// the store's events recorded at or before `until` (see the module doc).
pub async fn dashboard_as_of(
    pool: &PgPool,
    store_id: Uuid,
    until: DateTime<Utc>,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<DashboardAsOf, MaintenanceError> {
    let name = pool
        .connect_options()
        .get_application_name()
        .unwrap_or("shopfront")
        .to_owned();
    let mut scratch = dedicated_connection(pool, &name).await?;
    let outcome = replay(pool, &mut scratch, store_id, until, from, to).await;
    if let Err(err) = scratch.close().await {
        tracing::debug!(error = %err, "closing the KPI replay's connection");
    }
    outcome
}

async fn replay(
    pool: &PgPool,
    scratch: &mut PgConnection,
    store_id: Uuid,
    until: DateTime<Utc>,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<DashboardAsOf, MaintenanceError> {
    temporary_tables(scratch, &Kpis).await?;
    let mut log = pool.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *log)
        .await?;
    let (mut after, mut events) = (LogPosition::START, 0u64);
    loop {
        let batch =
            read_store_recorded_until(&mut *log, store_id, &KPI_AGGREGATES, until, after, BATCH)
                .await?;
        let Some(last) = batch.last().map(|e| e.position()) else {
            break;
        };
        let read = batch.len();
        let (decoded, unreadable) = decode_prefix(batch);
        if let Some(unknown) = unreadable {
            return Err(MaintenanceError::Projection("kpis", unknown.into()));
        }
        let mut tx = scratch.begin().await?;
        apply_temporary(&mut tx, &Kpis, &decoded).await?;
        tx.commit().await?;
        events += read as u64;
        after = last;
        if (read as i64) < BATCH {
            break;
        }
    }
    log.commit().await?;
    let mut tx = scratch.begin().await?;
    // The temporary tables alone: the live ones are never read by mistake.
    sqlx::query("set local search_path to pg_temp")
        .execute(&mut *tx)
        .await?;
    let dashboard = dashboard_on(&mut tx, store_id, from, to).await?;
    tx.commit().await?;
    Ok(DashboardAsOf { dashboard, events })
}
