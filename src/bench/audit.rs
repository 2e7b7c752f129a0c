//! `shopfront bench audit`: the audit chain's figures, each beside its baseline in the same run.
//!
//! 1. A realistic history of `--events` events in a scratch database; reading it whole with
//!    binary `COPY` is the floor any walk over the log pays.
//! 2. Hashing in memory (canonical form + SHA-256, and SHA-256 alone) on part of it.
//! 3. Sealing the whole log from scratch (the sealer's own batch step) and `audit verify`.
//! 4. The sealing lag with `serve` running (projections, process managers, the sealer) while
//!    the events of another generated history commit at `--rate` per second, as they would
//!    from a busy shop: commit → sealed, per transaction.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use hdrhistogram::Histogram;
use projections::log::LogPosition;
use secrecy::SecretString;
use sha2::Digest;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolCopyExt};
use sqlx::{ConnectOptions, PgPool};

use super::{history, round, with_scratch_database};
use shopfront::app::audit::chain::{canonical, next_hash, GENESIS};
use shopfront::app::audit::copy::CopyReader;
use shopfront::app::audit::sealer::{seal_batch, SealerSettings, SEALER};
use shopfront::app::audit::verify::{verify, VerifyOptions};
use shopfront::app::audit::{chain_event, events_copy_sql, ChainHead};
use shopfront::config::{AuditBench, DatabaseSettings, ServeSettings};
use shopfront::startup::Application;

/// Events hashed in memory for the hashing figures.
const IN_MEMORY: i64 = 200_000;

/// Runs the benchmark and prints one JSON line per figure.
pub async fn audit(settings: &DatabaseSettings, options: AuditBench) -> anyhow::Result<()> {
    println!("{}", machine());
    with_scratch_database(settings, false, |target| async move {
        chain_figures(&target, options.events).await
    })
    .await?;
    if options.rate > 0 {
        lag(settings, &options).await?;
    }
    Ok(())
}

/// The machine the figures were measured on.
fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    serde_json::json!({
        "bench": "machine",
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu": cpu,
    })
}

async fn chain_figures(target: &PgConnectOptions, events: u64) -> anyhow::Result<()> {
    let pool = super::migrated_pool(target, 8).await?;
    let started = Instant::now();
    let written = history::generate(&pool, events).await?;
    sqlx::query("vacuum analyze events").execute(&pool).await?;
    println!(
        "{}",
        serde_json::json!({"bench": "audit-history", "events": written,
                           "seconds": round(started.elapsed().as_secs_f64())})
    );

    // The floor: the whole log, as the verifier reads it, to nowhere.
    let started = Instant::now();
    let mut copy = pool
        .copy_out_raw(&events_copy_sql(None, None, None, false))
        .await?;
    let mut bytes = 0u64;
    while let Some(chunk) = copy.try_next().await? {
        bytes += chunk.len() as u64;
    }
    let copy_seconds = started.elapsed().as_secs_f64();
    let copy_rate = written as f64 / copy_seconds;
    println!(
        "{}",
        serde_json::json!({"bench": "copy-log", "events": written, "mb": round(bytes as f64 / 1e6),
                           "seconds": round(copy_seconds), "events_per_sec": round(copy_rate),
                           "mb_per_sec": round(bytes as f64 / 1e6 / copy_seconds)})
    );

    hashing_figures(&pool).await?;

    // Sealing from nothing: the sealer's own batch step, until it finds nothing more.
    let sealer = SealerSettings {
        key: ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng),
        checkpoint_events: 10_000,
        checkpoint_interval: Duration::from_secs(600),
        poll_interval: Duration::from_millis(500),
    };
    let mut conn = pool.acquire().await?;
    let started = Instant::now();
    let mut sealed = 0;
    loop {
        let batch = seal_batch(&mut conn, &sealer, shopfront::app::now()).await?;
        if batch == 0 {
            break;
        }
        sealed += batch;
    }
    drop(conn);
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"bench": "audit-seal", "events": sealed, "seconds": round(seconds),
                           "events_per_sec": round(sealed as f64 / seconds),
                           "batch": shopfront::app::audit::sealer::SEAL_BATCH})
    );

    let report = verify(&pool, &VerifyOptions::default()).await?;
    anyhow::ensure!(
        report.intact,
        "the untouched log does not verify: {report:?}"
    );
    println!(
        "{}",
        serde_json::json!({"bench": "audit-verify", "events": report.verified_events,
                           "checkpoints": report.checkpoints_checked,
                           "seconds": round(report.seconds),
                           "events_per_sec": round(report.events_per_second),
                           "copy_events_per_sec": round(copy_rate),
                           "ratio_to_copy": round(report.events_per_second / copy_rate)})
    );
    pool.close().await;
    Ok(())
}

/// Canonical form + SHA-256 (the chain step) and SHA-256 alone, in memory on one core.
async fn hashing_figures(pool: &PgPool) -> anyhow::Result<()> {
    let chunks: Vec<Bytes> = pool
        .copy_out_raw(&events_copy_sql(None, None, Some(IN_MEMORY), false))
        .await?
        .try_collect()
        .await?;
    let (events, canonical_bytes, chain_seconds, canonicals) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mut chunks = chunks.into_iter();
            let mut reader = CopyReader::new(move || Ok(chunks.next()));
            let mut scratch = Vec::with_capacity(4096);
            let mut canonicals: Vec<Vec<u8>> = Vec::new();
            let mut hash = GENESIS;
            let mut events = 0u64;
            let mut total = 0usize;
            let started = Instant::now();
            while let Some(tuple) = reader.next_tuple()? {
                let event = chain_event(&tuple)?;
                canonical(&event, &mut scratch);
                hash = next_hash(&hash, &scratch);
                total += scratch.len();
                events += 1;
                canonicals.push(scratch.clone());
            }
            let seconds = started.elapsed().as_secs_f64();
            std::hint::black_box(hash);
            Ok((events, total, seconds, canonicals))
        })
        .await??;
    let started = Instant::now();
    let mut hash = GENESIS;
    for bytes in &canonicals {
        let mut hasher = sha2::Sha256::new();
        hasher.update(hash);
        hasher.update(bytes);
        hash = hasher.finalize().into();
    }
    std::hint::black_box(hash);
    let sha_seconds = started.elapsed().as_secs_f64();
    let mb = canonical_bytes as f64 / 1e6;
    println!(
        "{}",
        serde_json::json!({"bench": "audit-hash", "events": events, "canonical_mb": round(mb),
                           "bytes_per_event": canonical_bytes as u64 / events.max(1),
                           "chain_step_events_per_sec": round(events as f64 / chain_seconds),
                           "chain_step_mb_per_sec": round(mb / chain_seconds),
                           "sha256_mb_per_sec": round(mb / sha_seconds)})
    );
    Ok(())
}

/// One generated event, as the event store holds it.
#[derive(sqlx::FromRow)]
struct Row {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: String,
    metadata: String,
}

/// Commits waiting to be sealed (their position and when they committed) and the lags of those
/// sealed, in microseconds; `drained` is told whenever the watcher took some.
#[derive(Default)]
struct Sealing {
    waiting: Mutex<VecDeque<(LogPosition, Instant)>>,
    lags: Mutex<Vec<u64>>,
    drained: tokio::sync::Notify,
}

type Pending = Arc<Sealing>;

impl Sealing {
    fn waiting(&self) -> std::sync::MutexGuard<'_, VecDeque<(LogPosition, Instant)>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn lag(settings: &DatabaseSettings, options: &AuditBench) -> anyhow::Result<()> {
    let per_tick = (options.rate / 100).max(1) as usize;
    let needed = per_tick as u64 * 100 * options.seconds + 5_000;
    // The events to commit: another generated history, read into memory in log order.
    let mut rows: Vec<Row> = Vec::new();
    with_scratch_database(settings, false, |source| {
        let rows = &mut rows;
        async move {
            let pool = super::migrated_pool(&source, 4).await?;
            history::generate(&pool, needed).await?;
            *rows = sqlx::query_as(
                "select aggregate_type, aggregate_id, sequence, event_type, event_version,
                        payload::text as payload, metadata::text as metadata
                   from events order by global_position",
            )
            .fetch_all(&pool)
            .await?;
            pool.close().await;
            Ok(())
        }
    })
    .await?;

    with_scratch_database(settings, false, |target| async move {
        let database = DatabaseSettings {
            database_url: Some(SecretString::from(target.to_url_lossy().to_string())),
            ..settings.clone()
        };
        // `serve` as it runs: projections, process managers, the sealer.
        let serve = ServeSettings {
            expiry_interval_seconds: 10,
            ..ServeSettings::for_tests()
        };
        let key_file = serve.audit.audit_signing_key_file.clone();
        let storage_dir = serve.storage_dir.clone();
        let application = Application::build(&database, serve).await?;
        let pool = application.app().pool.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(application.run_until_stopped(async {
            let _ = stopped.await;
        }));

        let pending: Pending = Arc::default();
        let mut latencies = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        let watcher = tokio::spawn(watch_sealing(pool.clone(), pending.clone()));
        let mut ticks = tokio::time::interval(Duration::from_millis(10));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        let mut committed = 0usize;
        let mut batches = rows.chunks(per_tick);
        while started.elapsed() < Duration::from_secs(options.seconds) {
            ticks.tick().await;
            let Some(batch) = batches.next() else { break };
            let last = insert(&pool, batch).await?;
            pending.waiting().push_back((last, Instant::now()));
            committed += batch.len();
        }
        let writing = started.elapsed().as_secs_f64();
        // Let the sealer take the rest, then collect every commit's lag.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let drained = pending.drained.notified();
            if pending.waiting().is_empty()
                || tokio::time::timeout_at(deadline, drained).await.is_err()
            {
                break;
            }
        }
        if watcher.is_finished() {
            watcher.await??;
            anyhow::bail!("the sealing watcher stopped early");
        }
        watcher.abort();
        let recorded = std::mem::take(&mut *pending.lags.lock().unwrap_or_else(|e| e.into_inner()));
        for micros in &recorded {
            latencies.record((*micros).max(1))?;
        }
        let unsealed = pending.waiting().len();
        println!(
            "{}",
            serde_json::json!({
                "bench": "audit-seal-lag", "rate": options.rate, "events": committed,
                "seconds": round(writing), "events_per_sec": round(committed as f64 / writing),
                "transactions": recorded.len(), "unsealed_transactions": unsealed,
                "p50_ms": round(latencies.value_at_quantile(0.5) as f64 / 1000.0),
                "p90_ms": round(latencies.value_at_quantile(0.9) as f64 / 1000.0),
                "p99_ms": round(latencies.value_at_quantile(0.99) as f64 / 1000.0),
                "max_ms": round(latencies.max() as f64 / 1000.0),
                "with": "serve (projections, process managers, sealer)",
            })
        );
        let _ = stop.send(());
        server.await??;
        let _ = std::fs::remove_file(key_file);
        let _ = std::fs::remove_dir_all(storage_dir);
        Ok(())
    })
    .await
}

/// Commits `batch` in one transaction, as one writer would; its last event's position.
async fn insert(pool: &PgPool, batch: &[Row]) -> anyhow::Result<LogPosition> {
    let column = |f: fn(&Row) -> &str| batch.iter().map(f).collect::<Vec<&str>>();
    let sequences: Vec<i64> = batch.iter().map(|r| r.sequence).collect();
    let (transaction_id, global_position): (i64, i64) = sqlx::query_as(
        "with written as (
             insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                                 payload, metadata)
             select t, id, seq, ty, v, p::json, m::json
               from unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                           $6::text[], $7::text[]) as u(t, id, seq, ty, v, p, m)
             returning transaction_id, global_position)
         select transaction_id::text::bigint, global_position from written
          order by global_position desc limit 1",
    )
    .bind(column(|r| &r.aggregate_type))
    .bind(column(|r| &r.aggregate_id))
    .bind(&sequences)
    .bind(column(|r| &r.event_type))
    .bind(column(|r| &r.event_version))
    .bind(column(|r| &r.payload))
    .bind(column(|r| &r.metadata))
    .fetch_one(pool)
    .await?;
    Ok(LogPosition {
        transaction_id,
        global_position,
    })
}

/// Woken by the sealer's commits: every pending commit the chain now holds is sealed, its lag
/// recorded.
async fn watch_sealing(pool: PgPool, pending: Pending) -> anyhow::Result<()> {
    let mut listener = PgListener::connect_with(&pool).await?;
    listener
        .listen(projections::runtime::CHECKPOINT_CHANNEL)
        .await?;
    loop {
        // A notification, or a look every 100 ms should one be missed.
        if let Ok(notification) =
            tokio::time::timeout(Duration::from_millis(100), listener.recv()).await
        {
            if notification?.payload() != SEALER {
                continue;
            }
        }
        let mut conn = pool.acquire().await?;
        let Some(head) = ChainHead::read(&mut conn).await? else {
            continue;
        };
        let seen = Instant::now();
        {
            let mut waiting = pending.waiting();
            let mut lags = pending.lags.lock().unwrap_or_else(|e| e.into_inner());
            while let Some((position, at)) = waiting.front().copied() {
                if position > head.position() {
                    break;
                }
                lags.push(seen.duration_since(at).as_micros() as u64);
                waiting.pop_front();
            }
        }
        pending.drained.notify_waiters();
    }
}
