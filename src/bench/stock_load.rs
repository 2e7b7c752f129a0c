//! `shopfront bench stock-load --events N`: how long loading a hot product's Stock takes when
//! it has N events, from its saved state (what every command on it does) and, as the baseline,
//! by replaying all its events.

use std::time::Instant;

use aggregates::stock::Stock;
use hdrhistogram::Histogram;

use super::{history, round, with_scratch_database};
use shopfront::app::App;
use shopfront::config::{DatabaseSettings, StockLoadBench};

/// Runs the benchmark and prints one JSON line per figure.
pub async fn stock_load(
    settings: &DatabaseSettings,
    options: StockLoadBench,
) -> anyhow::Result<()> {
    with_scratch_database(settings, options.keep, |target| async move {
        let pool = super::migrated_pool(&target, 4).await?;
        let product_id = history::hot_product(&pool, options.events).await?;
        let events: i64 = sqlx::query_scalar("select count(*) from events")
            .fetch_one(&pool)
            .await?;
        let id = product_id.to_string();
        let app = App::new(pool.clone());

        // Written in bulk, the history has no saved state yet: the start-up repair makes it.
        let started = Instant::now();
        app.repair_saved_states::<Stock>().await?;
        let repair_seconds = started.elapsed().as_secs_f64();

        let mut saved = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        let mut replayed = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        for _ in 0..200 {
            let began = Instant::now();
            let state = app.load_state::<Stock>(&id).await?;
            saved.record(began.elapsed().as_micros().max(1) as u64)?;
            anyhow::ensure!(state.tracked, "the saved state loads");
        }
        for _ in 0..5 {
            let began = Instant::now();
            app.replay_state::<Stock>(&id).await?;
            replayed.record(began.elapsed().as_micros().max(1) as u64)?;
        }
        let open = app.load_state::<Stock>(&id).await?.reservations.len();
        println!(
            "{}",
            serde_json::json!({
                "bench": "stock-load", "events": events, "open_reservations": open,
                "saved_state_p50_ms": round(saved.value_at_quantile(0.5) as f64 / 1000.0),
                "saved_state_p99_ms": round(saved.value_at_quantile(0.99) as f64 / 1000.0),
                "full_replay_p50_ms": round(replayed.value_at_quantile(0.5) as f64 / 1000.0),
                "repair_seconds": round(repair_seconds),
            })
        );
        pool.close().await;
        Ok(())
    })
    .await
}
