//! Every projection a process leads, applied together: one read of the log, one decode, and
//! **one transaction per batch** for all of them (docs/adr/0011-grouped-projections.md).
//!
//! With one task per projection, every commit woke ten runners, and each read the same events,
//! decoded them, and committed a transaction of its own — ten transaction ids holding back the
//! log's visibility horizon for every reader (read-your-writes waits behind them) and ten
//! commits to flush, per batch, most of them moving a checkpoint past events the projection
//! does not even look at. The group does the same work once:
//!
//! 1. read the next batch after the *lowest* checkpoint it leads, outside any transaction (a
//!    wake-up with nothing to do costs one read-only statement);
//! 2. begin; lock every checkpoint row it leads (if one moved — a rebuild swapped its tables
//!    in — take the new positions and start over);
//! 3. give each projection the part of the batch after its own checkpoint;
//! 4. move every checkpoint that advanced and notify each position, in one statement; commit.
//!
//! Effects and checkpoints still commit together, so every event's effect happens exactly once.
//! Leadership stays per projection (the same advisory locks, held by the group's one
//! connection), so `projections status`, rebuilds and a standby instance behave as before; a
//! standby's group takes whichever locks it can get.
//!
//! A projection that fails in the group (a statement error, an event it cannot apply, a panic)
//! rolls the batch back for everyone and is handed to a runner of its own
//! ([`crate::runtime`]'s), which finds the event, records the failure and stands still exactly
//! as before; the others go on in the group. A transient database error ends the group's
//! leadership, which competes again with backoff.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::log::{read_between, LogPosition};
use crate::notifications::checkpoint_payload;
use crate::runtime::{
    changed, dedicated_connection, is_transient, panic_message, Notifications, Projection,
    ProjectionError, Runner, RuntimeSettings, CHECKPOINT_CHANNEL, LOCK_NAMESPACE,
};

/// The largest batch a group reads while it works through a backlog.
const CATCH_UP_BATCH: i64 = 10_000;

/// The group's task: the projections it may lead, and the runners of those it handed over.
pub(crate) struct Group {
    pub pool: PgPool,
    pub projections: Vec<Arc<dyn Projection>>,
    pub settings: RuntimeSettings,
    pub notifications: Notifications,
    pub stop: CancellationToken,
}

/// A projection the group leads, and where its checkpoint stands.
struct Led {
    projection: Arc<dyn Projection>,
    at: LogPosition,
}

/// What one grouped batch came to.
enum Outcome {
    /// Nothing visible after the lowest checkpoint.
    Empty,
    /// Applied (or positions refreshed); `full`: there may be more right away.
    Applied { full: bool },
    /// These projections cannot go on in the group: hand them to runners of their own.
    HandOver(Vec<&'static str>),
    /// This projection panicked: counted as a restart, and handed over.
    Panicked(&'static str, String),
}

impl Group {
    /// Leads (again, with backoff, after a transient error or a panic) until stopped, then
    /// waits for the runners it handed projections to.
    pub async fn run(self) {
        let mut handed: Vec<JoinHandle<()>> = Vec::new();
        let mut handed_names: HashSet<&'static str> = HashSet::new();
        let mut backoff = Duration::from_millis(100);
        loop {
            let leading_since = tokio::time::Instant::now();
            let led = AssertUnwindSafe(self.lead(&mut handed, &mut handed_names))
                .catch_unwind()
                .await;
            if leading_since.elapsed() > Duration::from_secs(60) {
                backoff = Duration::from_millis(100);
            }
            match led {
                Ok(Ok(())) => break,
                Ok(Err(err)) if is_transient(&err) => {
                    tracing::warn!(error = %err, ?backoff, "projection group lost its database; retrying");
                }
                Ok(Err(err)) => {
                    tracing::error!(error = %err, ?backoff, "projection group failed; retrying");
                }
                Err(panic) => {
                    let message = panic_message(panic.as_ref());
                    tracing::error!(panic = %message, ?backoff, "projection group panicked; restarting it");
                }
            }
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.settings.max_backoff);
        }
        for runner in handed {
            let _ = runner.await;
        }
    }

    async fn lead(
        &self,
        handed: &mut Vec<JoinHandle<()>>,
        handed_names: &mut HashSet<&'static str>,
    ) -> Result<(), sqlx::Error> {
        let settings = &self.settings;
        let mut conn = dedicated_connection(&self.pool, &settings.instance_name).await?;
        let mut led: Vec<Led> = Vec::new();
        let mut events = self.notifications.events();
        // Another projection's commit can move the log's horizon past events already
        // committed (and announced) while its transaction held it back: look again then too.
        let mut horizon = self.notifications.checkpoints();
        let mut compete_at = tokio::time::Instant::now();
        // Caught up, a batch is what arrived since the last one; behind (a backlog after a
        // restart or a takeover), each full batch doubles the next, up to `CATCH_UP_BATCH`:
        // fewer, larger transactions while nobody waits for them.
        let mut limit = settings.batch_size;
        loop {
            if self.stop.is_cancelled() {
                return Ok(());
            }
            let everyone = led.len() + handed_names.len() == self.projections.len();
            if !everyone && tokio::time::Instant::now() >= compete_at {
                let failed = self.compete(&mut conn, &mut led, handed_names).await?;
                self.hand_over(&mut conn, &mut led, failed, handed, handed_names)
                    .await?;
                compete_at = tokio::time::Instant::now() + settings.standby_interval;
            }
            // Seen before reading: events committed while this batch runs wake us again.
            events.borrow_and_update();
            horizon.borrow_and_update();
            let outcome = if led.is_empty() {
                Outcome::Empty
            } else {
                apply(&mut conn, &mut led, limit).await?
            };
            limit = match outcome {
                Outcome::Applied { full: true } => {
                    (limit * 2).min(CATCH_UP_BATCH.max(settings.batch_size))
                }
                _ => settings.batch_size,
            };
            match outcome {
                Outcome::Applied { full: true } => continue,
                Outcome::Applied { full: false } | Outcome::Empty => {}
                Outcome::HandOver(names) => {
                    self.hand_over(&mut conn, &mut led, names, handed, handed_names)
                        .await?;
                    continue;
                }
                Outcome::Panicked(name, message) => {
                    tracing::error!(projection = name, panic = %message, "projection panicked in its group; it restarts on its own");
                    sqlx::query(
                        "update projection_checkpoints
                            set restarts = restarts + 1, last_restart_reason = $2,
                                last_restart_at = now()
                          where name = $1",
                    )
                    .bind(name)
                    .bind(format!("panicked: {message}"))
                    .execute(&mut conn)
                    .await?;
                    self.hand_over(&mut conn, &mut led, vec![name], handed, handed_names)
                        .await?;
                    continue;
                }
            }
            let everyone = led.len() + handed_names.len() == self.projections.len();
            tokio::select! {
                _ = self.stop.cancelled() => return Ok(()),
                _ = changed(&mut events) => {}
                _ = changed(&mut horizon) => {}
                _ = tokio::time::sleep(settings.poll_interval) => {}
                _ = tokio::time::sleep_until(compete_at), if !everyone => {}
            }
        }
    }

    /// Takes the leadership of every projection nobody leads (its advisory lock, on the
    /// group's connection). Returns the ones that are marked failed: they go to runners of
    /// their own, which know how to wait for a failure to be cleared.
    async fn compete(
        &self,
        conn: &mut PgConnection,
        led: &mut Vec<Led>,
        handed_names: &HashSet<&'static str>,
    ) -> Result<Vec<&'static str>, sqlx::Error> {
        let mut failed = Vec::new();
        for projection in &self.projections {
            let name = projection.name();
            if handed_names.contains(name) || led.iter().any(|l| l.projection.name() == name) {
                continue;
            }
            let leading: bool = sqlx::query_scalar("select pg_try_advisory_lock($1, hashtext($2))")
                .bind(LOCK_NAMESPACE)
                .bind(name)
                .fetch_one(&mut *conn)
                .await?;
            if !leading {
                continue;
            }
            tracing::info!(name, "leading (in the projection group)");
            sqlx::query(
                "insert into projection_checkpoints (name) values ($1) on conflict do nothing",
            )
            .bind(name)
            .execute(&mut *conn)
            .await?;
            let (transaction_id, global_position, status): (i64, i64, String) = sqlx::query_as(
                "select transaction_id, global_position, status from projection_checkpoints
                  where name = $1",
            )
            .bind(name)
            .fetch_one(&mut *conn)
            .await?;
            led.push(Led {
                projection: projection.clone(),
                at: LogPosition {
                    transaction_id,
                    global_position,
                },
            });
            if status == "failed" {
                failed.push(name);
            }
        }
        Ok(failed)
    }

    /// Releases `names` and starts a runner of its own for each (it competes for the lock the
    /// group just released).
    async fn hand_over(
        &self,
        conn: &mut PgConnection,
        led: &mut Vec<Led>,
        names: Vec<&'static str>,
        handed: &mut Vec<JoinHandle<()>>,
        handed_names: &mut HashSet<&'static str>,
    ) -> Result<(), sqlx::Error> {
        for name in names {
            let Some(index) = led.iter().position(|l| l.projection.name() == name) else {
                continue;
            };
            let Led { projection, .. } = led.remove(index);
            sqlx::query("select pg_advisory_unlock($1, hashtext($2))")
                .bind(LOCK_NAMESPACE)
                .bind(name)
                .execute(&mut *conn)
                .await?;
            tracing::warn!(
                projection = name,
                "projection left the group: it runs on its own from now on"
            );
            handed_names.insert(name);
            let runner = Runner {
                pool: self.pool.clone(),
                projection,
                settings: self.settings.clone(),
                notifications: self.notifications.clone(),
                stop: self.stop.clone(),
            };
            handed.push(tokio::spawn(runner.run()));
        }
        Ok(())
    }
}

/// One grouped batch (see the module's steps).
async fn apply(
    conn: &mut PgConnection,
    led: &mut [Led],
    limit: i64,
) -> Result<Outcome, sqlx::Error> {
    let Some(from) = led.iter().map(|l| l.at).min() else {
        return Ok(Outcome::Empty);
    };
    let batch = read_between(&mut *conn, from, None, limit).await?;
    if batch.is_empty() {
        return Ok(Outcome::Empty);
    }
    let full = batch.len() as i64 == limit;
    let mut tx = conn.begin().await?;
    let names: Vec<&str> = led.iter().map(|l| l.projection.name()).collect();
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "select name, transaction_id, global_position from projection_checkpoints
          where name = any($1) order by name for update",
    )
    .bind(&names)
    .fetch_all(&mut *tx)
    .await?;
    let mut moved = false;
    for (name, transaction_id, global_position) in rows {
        let at = LogPosition {
            transaction_id,
            global_position,
        };
        if let Some(l) = led.iter_mut().find(|l| l.projection.name() == name) {
            if l.at != at {
                l.at = at;
                moved = true;
            }
        }
    }
    if moved {
        // A rebuild moved a checkpoint: read again from the positions as they stand.
        tx.commit().await?;
        return Ok(Outcome::Applied { full: true });
    }
    let (events, unreadable) = crate::runtime::decode_prefix(batch);
    let mut advanced: Vec<(usize, LogPosition, i64)> = Vec::new();
    for (index, l) in led.iter().enumerate() {
        let start = events.partition_point(|e| e.position() <= l.at);
        let part = &events[start..];
        let Some(last) = part.last() else {
            continue;
        };
        let applied = AssertUnwindSafe(l.projection.apply_batch(&mut tx, part))
            .catch_unwind()
            .await;
        match applied {
            Ok(Ok(())) => advanced.push((index, last.position(), part.len() as i64)),
            Ok(Err(ProjectionError::Database(err))) if is_transient(&err) => {
                let _ = tx.rollback().await;
                return Err(err);
            }
            // Not the group's to diagnose: its own runner finds the event and stops there.
            Ok(Err(_)) => {
                tx.rollback().await?;
                return Ok(Outcome::HandOver(vec![l.projection.name()]));
            }
            Err(panic) => {
                tx.rollback().await?;
                return Ok(Outcome::Panicked(
                    l.projection.name(),
                    panic_message(panic.as_ref()),
                ));
            }
        }
    }
    if !advanced.is_empty() {
        let names: Vec<&str> = advanced
            .iter()
            .map(|(i, ..)| led[*i].projection.name())
            .collect();
        let payloads: Vec<String> = advanced
            .iter()
            .map(|(i, at, _)| checkpoint_payload(led[*i].projection.name(), *at))
            .collect();
        sqlx::query(
            "with moved as (
               update projection_checkpoints c
                  set transaction_id = u.tx, global_position = u.gp,
                      events_applied = c.events_applied + u.n, status = 'running',
                      last_error = null, failed_position = null, failed_event_type = null,
                      updated_at = now()
                 from unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[])
                      as u(name, tx, gp, n, payload)
                where c.name = u.name
               returning u.payload)
             select pg_notify($6, payload) from moved",
        )
        .bind(&names)
        .bind(
            advanced
                .iter()
                .map(|a| a.1.transaction_id)
                .collect::<Vec<_>>(),
        )
        .bind(
            advanced
                .iter()
                .map(|a| a.1.global_position)
                .collect::<Vec<_>>(),
        )
        .bind(advanced.iter().map(|a| a.2).collect::<Vec<_>>())
        .bind(&payloads)
        .bind(CHECKPOINT_CHANNEL)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    for (index, at, _) in advanced {
        led[index].at = at;
    }
    if unreadable.is_some() {
        // An event this build cannot read stops every projection at it: each one's own
        // runner records it and tries it again now and then.
        return Ok(Outcome::HandOver(
            led.iter().map(|l| l.projection.name()).collect(),
        ));
    }
    Ok(Outcome::Applied { full })
}
