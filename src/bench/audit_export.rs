//! `shopfront bench audit-export --events N`: writes a realistic history of N events into a
//! scratch database, then times in the same run, twice each and alternating (the better run
//! counts): reading the whole log with `COPY … TO STDOUT` (the floor any export pays), and the
//! audit export of the whole log into a sink through the code `shopfront audit export` and
//! `GET /api/v1/audit/export` run (`LogExport::next_batch`); then the export of the busiest
//! store's slice, which the database filters.

use std::io::Write;
use std::time::Instant;

use futures::StreamExt;
use sqlx::PgPool;
use uuid::Uuid;

use super::{history, round, with_scratch_database};
use shopfront::app::audit::export::ExportFilter;
use shopfront::app::App;
use shopfront::config::{AuditExportBench, DatabaseSettings};

/// What one timed pass read.
struct Pass {
    seconds: f64,
    bytes: usize,
    events: u64,
}

/// Runs the benchmark and prints one JSON line per figure.
pub async fn audit_export(
    settings: &DatabaseSettings,
    options: AuditExportBench,
) -> anyhow::Result<()> {
    let keep = options.keep;
    with_scratch_database(settings, keep, |target| async move {
        let pool = super::migrated_pool(&target, 4).await?;

        let started = Instant::now();
        let events = history::generate(&pool, options.events).await?;
        sqlx::query("vacuum analyze events").execute(&pool).await?;
        println!(
            "{}",
            serde_json::json!({
                "bench": "generate-history", "events": events,
                "seconds": round(started.elapsed().as_secs_f64()),
            })
        );

        let app = App::new(pool.clone());
        // A first read of everything warms the caches for both.
        copy(&pool).await?;
        let mut best_copy: Option<Pass> = None;
        let mut best_export: Option<Pass> = None;
        for _ in 0..2 {
            let pass = copy(&pool).await?;
            if best_copy
                .as_ref()
                .is_none_or(|best| pass.seconds < best.seconds)
            {
                best_copy = Some(pass);
            }
            let pass = export(&app, ExportFilter::default()).await?;
            if best_export
                .as_ref()
                .is_none_or(|best| pass.seconds < best.seconds)
            {
                best_export = Some(pass);
            }
        }
        let (Some(floor), Some(exported)) = (best_copy, best_export) else {
            anyhow::bail!("no pass ran");
        };
        if exported.events != events {
            anyhow::bail!("the export wrote {} events of {events}", exported.events);
        }
        let floor_rate = events as f64 / floor.seconds;
        let export_rate = events as f64 / exported.seconds;
        println!(
            "{}",
            serde_json::json!({
                "bench": "copy-log", "events": events, "bytes": floor.bytes,
                "seconds": round(floor.seconds), "events_per_sec": round(floor_rate),
            })
        );
        println!(
            "{}",
            serde_json::json!({
                "bench": "audit-export", "events": exported.events, "bytes": exported.bytes,
                "seconds": round(exported.seconds), "events_per_sec": round(export_rate),
                "ratio_to_copy": round(export_rate / floor_rate),
            })
        );

        let busiest: Option<Uuid> = sqlx::query_scalar(
            "select (payload -> event_type ->> 'store_id')::uuid from events
              where sequence = 1 and payload -> event_type ->> 'store_id' is not null
              group by 1 order by count(*) desc limit 1",
        )
        .fetch_optional(&pool)
        .await?;
        if let Some(store) = busiest {
            let filter = ExportFilter {
                store_id: Some(aggregates::StoreId(store)),
                ..ExportFilter::default()
            };
            let pass = export(&app, filter).await?;
            println!(
                "{}",
                serde_json::json!({
                    "bench": "audit-export-one-store", "log_events": events,
                    "events": pass.events, "bytes": pass.bytes, "seconds": round(pass.seconds),
                    "log_events_per_sec": round(events as f64 / pass.seconds),
                })
            );
        }
        pool.close().await;
        Ok(())
    })
    .await
}

/// The whole log with `COPY (select …) TO STDOUT`, as `bench rebuild` reads it.
async fn copy(pool: &PgPool) -> anyhow::Result<Pass> {
    let started = Instant::now();
    let mut conn = pool.acquire().await?;
    let mut bytes = 0usize;
    let mut copy = conn
        .copy_out_raw(
            "copy (select transaction_id, global_position, recorded_at, aggregate_type,
                          aggregate_id, sequence, event_type, event_version, payload, metadata
                     from events order by transaction_id, global_position) to stdout",
        )
        .await?;
    while let Some(chunk) = copy.next().await {
        bytes += chunk?.len();
    }
    Ok(Pass {
        seconds: started.elapsed().as_secs_f64(),
        bytes,
        events: 0,
    })
}

/// The audit export of `filter`'s slice of the whole log into a sink, batch by batch as the
/// CLI writes it.
async fn export(app: &App, filter: ExportFilter) -> anyhow::Result<Pass> {
    let started = Instant::now();
    let mut export = app.audit_export_from_console(filter, None).await?;
    let mut sink = std::io::sink();
    let mut buffer = Vec::new();
    let mut bytes = 0usize;
    loop {
        buffer.clear();
        if export.next_batch(&mut buffer).await?.is_none() {
            break;
        }
        bytes += buffer.len();
        sink.write_all(&buffer)?;
    }
    Ok(Pass {
        seconds: started.elapsed().as_secs_f64(),
        bytes,
        events: export.lines(),
    })
}
