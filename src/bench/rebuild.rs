//! `shopfront bench rebuild --events N`: writes a realistic history of N events into a scratch
//! database, then times, in the same run: reading the whole log with `COPY … TO STDOUT` (the
//! floor any replay pays), a rebuild of every projection, and the dashboard and revenue queries.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;

use futures::StreamExt;
use hdrhistogram::Histogram;
use projections::read_models::kpis::queries;
use projections::{maintenance, read_models, GlobalLog, Runtime, RuntimeSettings};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{history, round, with_scratch_database};
use shopfront::config::{DatabaseSettings, RebuildBench};

/// Runs the benchmark and prints one JSON line per figure.
pub async fn rebuild(settings: &DatabaseSettings, options: RebuildBench) -> anyhow::Result<()> {
    let keep = options.keep;
    with_scratch_database(settings, keep, |target| async move {
        let target_url = sqlx::ConnectOptions::to_url_lossy(&target).to_string();
        let pool = super::migrated_pool(&target, 12).await?;

        let started = Instant::now();
        let events = history::generate(&pool, options.events).await?;
        sqlx::query("vacuum analyze events").execute(&pool).await?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({"bench": "generate-history", "events": events, "seconds": round(seconds)})
        );

        let started = Instant::now();
        let mut conn = pool.acquire().await?;
        let mut bytes = 0usize;
        let mut copy = conn
            .copy_out_raw(
                "copy (select transaction_id, global_position, aggregate_type, aggregate_id, sequence,
                              event_type, event_version, payload, metadata, recorded_at
                         from events order by transaction_id, global_position) to stdout",
            )
            .await?;
        while let Some(chunk) = copy.next().await {
            bytes += chunk?.len();
        }
        drop(copy);
        drop(conn);
        let copy_seconds = started.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({
                "bench": "copy-log", "events": events, "bytes": bytes, "seconds": round(copy_seconds),
                "events_per_sec": round(events as f64 / copy_seconds),
            })
        );

        // Every projection rebuilt in one pass over the log, as `shopfront projections rebuild` does.
        let projections = read_models::all();
        let started = Instant::now();
        let all: Vec<&dyn projections::Projection> = projections.iter().map(|p| &**p).collect();
        let reports = maintenance::rebuild_many(&pool, &all, &|_, _| {}).await?;
        let total = started.elapsed().as_secs_f64();
        for report in reports {
            println!(
                "{}",
                serde_json::json!({
                    "bench": "rebuild-projection", "projection": report.name, "events": report.events,
                    "seconds": round(report.seconds), "events_per_sec": round(report.events_per_second),
                    "apply_seconds": round(report.apply_seconds),
                })
            );
        }
        println!(
            "{}",
            serde_json::json!({
                "bench": "rebuild-all", "events": events, "projections": projections.len(),
                "seconds": round(total), "events_per_sec": round(events as f64 / total),
                "copy_seconds": round(copy_seconds),
            })
        );

        if options.catch_up {
            catch_up(&pool, events, options.catch_up_batch).await?;
        }
        if options.catch_up_serve {
            catch_up_serve(&pool, &target_url, events).await?;
        }

        let stores: Vec<Uuid> = sqlx::query_scalar("select store_id from kpi_stores order by store_id")
            .fetch_all(&pool)
            .await?;
        let orders: i64 = sqlx::query_scalar("select count(*) from orders").fetch_one(&pool).await?;
        let days: (Option<chrono::NaiveDate>, Option<chrono::NaiveDate>) =
            sqlx::query_as("select min(day), max(day) from kpi_daily").fetch_one(&pool).await?;
        let (Some(first), Some(last)) = days else {
            // A small history is all set-up (stores, products, customers) and no orders yet.
            eprintln!("no orders in a history of {events} events: the analytics queries are skipped (give more --events)");
            pool.close().await;
            return Ok(());
        };
        let span = (last - first).num_days().max(1);
        for (name, query) in [("dashboard", 0), ("revenue-by-week", 1), ("revenue-by-day", 2)] {
            let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            for n in 0..300i64 {
                let store = stores[(n as usize) % stores.len()];
                let from = first + chrono::Duration::days((n * 37) % span);
                let to = (from + chrono::Duration::days(90)).min(last);
                let began = Instant::now();
                match query {
                    0 => {
                        queries::dashboard(&pool, store, from, to).await?;
                    }
                    1 => {
                        queries::revenue(&pool, store, queries::Period::Week, first, last).await?;
                    }
                    _ => {
                        queries::revenue(&pool, store, queries::Period::Day, from, to).await?;
                    }
                }
                latencies.record(began.elapsed().as_micros().max(1) as u64)?;
            }
            println!(
                "{}",
                serde_json::json!({
                    "bench": format!("query-{name}"), "orders": orders, "runs": 300,
                    "p50_ms": round(latencies.value_at_quantile(0.50) as f64 / 1000.0),
                    "p95_ms": round(latencies.value_at_quantile(0.95) as f64 / 1000.0),
                    "p99_ms": round(latencies.value_at_quantile(0.99) as f64 / 1000.0),
                })
            );
        }
        pool.close().await;
        Ok(())
    })
    .await
}

/// Empties every read model and its checkpoint, starts the live runtime (`projections::Runtime`,
/// every read model, settings as `serve` runs them but for the batch size) on the whole history as a backlog,
/// and times until each checkpoint reaches the head of the log. Prints one line per projection
/// (when it got there) and one for all.
async fn catch_up(pool: &PgPool, events: u64, batch_size: i64) -> anyhow::Result<()> {
    let projections = read_models::all();
    let names = read_models::names();
    let head = empty_read_models(pool).await?;
    let settings = RuntimeSettings {
        instance_name: "shopfront bench catch-up".into(),
        batch_size,
        ..RuntimeSettings::default()
    };
    let stop = CancellationToken::new();
    let started = Instant::now();
    let tasks = Runtime::new(pool.clone(), projections, settings).spawn(stop.clone());
    let reached = await_head(pool, &names, head, started).await?;
    let seconds = started.elapsed().as_secs_f64();
    stop.cancel();
    for task in tasks {
        task.await?;
    }
    for name in &names {
        let took = reached.get(*name).copied();
        println!(
            "{}",
            serde_json::json!({
                "bench": "catch-up-projection", "projection": name, "events": events,
                "seconds": took.map(round),
                "events_per_sec": took.map(|t| round(events as f64 / t)),
            })
        );
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": "catch-up-all", "events": events, "projections": names.len(),
            "batch_size": batch_size, "caught_up": reached.len() == names.len(),
            "seconds": round(seconds), "events_per_sec": round(events as f64 / seconds),
        })
    );
    Ok(())
}

/// Empties every read model and its checkpoint; the head of the log they will catch up to.
async fn empty_read_models(pool: &PgPool) -> anyhow::Result<projections::LogPosition> {
    let projections = read_models::all();
    let tables: Vec<&str> = projections
        .iter()
        .flat_map(|p| p.tables().iter().copied())
        .collect();
    sqlx::query(&format!("truncate {}", tables.join(", ")))
        .execute(pool)
        .await?;
    sqlx::query("delete from projection_checkpoints where name = any($1)")
        .bind(read_models::names())
        .execute(pool)
        .await?;
    GlobalLog::new(pool.clone())
        .head()
        .await?
        .context("the generated log is empty")
}

/// Waits (polling the checkpoints: a benchmark reading a level) until every one of `names` is at
/// `head`, at most an hour; when each got there, in seconds since `started`.
async fn await_head(
    pool: &PgPool,
    names: &[&str],
    head: projections::LogPosition,
    started: Instant,
) -> anyhow::Result<HashMap<String, f64>> {
    let mut reached: HashMap<String, f64> = HashMap::new();
    let deadline = Duration::from_secs(3600);
    while reached.len() < names.len() && started.elapsed() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let at_head: Vec<String> = sqlx::query_scalar(
            "select name from projection_checkpoints
              where name = any($1) and (transaction_id, global_position) >= ($2, $3)",
        )
        .bind(names)
        .bind(head.transaction_id)
        .bind(head.global_position)
        .fetch_all(pool)
        .await?;
        for name in at_head {
            reached
                .entry(name)
                .or_insert_with(|| started.elapsed().as_secs_f64());
        }
    }
    Ok(reached)
}

/// `shopfront serve` (a child process: projections, outbox, sealer, process managers) started on
/// the whole log as a backlog with every read model empty: how long until every read model is
/// at the head, and the service's resident memory then.
async fn catch_up_serve(pool: &PgPool, url: &str, events: u64) -> anyhow::Result<()> {
    let names = read_models::names();
    let head = empty_read_models(pool).await?;
    let started = Instant::now();
    let service = super::service::Service::start(url, &[]).await?;
    let reached = await_head(pool, &names, head, started).await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "bench": "catch-up-serve", "events": events, "projections": names.len(),
            "caught_up": reached.len() == names.len(), "seconds": round(seconds),
            "events_per_sec": round(events as f64 / seconds),
            "service_rss_mib": round(service.rss_kib()? as f64 / 1024.0),
        })
    );
    service.stop().await?;
    Ok(())
}
