//! `shopfront bench rebuild --events N`: writes a realistic history of N events into a scratch
//! database, then times, in the same run: reading the whole log with `COPY … TO STDOUT` (the
//! floor any replay pays), a rebuild of every projection, and the dashboard and revenue queries.

use std::time::Instant;

use futures::StreamExt;
use hdrhistogram::Histogram;
use projections::read_models::kpis::queries;
use projections::{maintenance, read_models};
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use super::{history, round, with_scratch_database};
use shopfront::config::{DatabaseSettings, RebuildBench};
use shopfront::db::MIGRATOR;

/// Runs the benchmark and prints one JSON line per figure.
pub async fn rebuild(settings: &DatabaseSettings, options: RebuildBench) -> anyhow::Result<()> {
    let keep = options.keep;
    with_scratch_database(settings, keep, |target| async move {
        let pool = PgPoolOptions::new().max_connections(12).connect_with(target).await?;
        MIGRATOR.run(&pool).await?;

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
