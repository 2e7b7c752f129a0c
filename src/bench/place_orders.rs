//! `shopfront bench place-orders`: in-process throughput and latency of placing orders, and
//! (with `--pgbench`) pgbench's rate for the bare database work of one command (read one
//! aggregate's events, append one event) on the same server in the same run, as the baseline.
//!
//! Runs in a scratch database on the configured server, dropped afterwards unless `--keep`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use aggregates::product::Sku;
use aggregates::store::{StoreName, TimeZone};
use aggregates::{AccountId, Channel, Money, ProductId, StoreId};
use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;

use super::{round, with_scratch_database};
use shopfront::app::{
    grant, App, Caller, CommandContext, NewProduct, NewStore, OrderLineInput, PlaceOrder,
};
use shopfront::config::{DatabaseSettings, PlaceOrdersBench};

/// The pgbench transaction: what one command costs the database at least.
const PGBENCH_SCRIPT: &str = r"\set agg random(1, 1000)
BEGIN;
SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata FROM events WHERE aggregate_type = 'PgBench' AND aggregate_id = concat(:client_id::int, '-', :agg::int) ORDER BY sequence;
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) SELECT 'PgBench', concat(:client_id::int, '-', :agg::int), coalesce(max(sequence), 0) + 1, 'BenchEvent', '1.0', '{}', '{}' FROM events WHERE aggregate_type = 'PgBench' AND aggregate_id = concat(:client_id::int, '-', :agg::int);
END;
";

/// Runs the benchmark and prints its figures as JSON lines.
pub async fn place_orders(
    settings: &DatabaseSettings,
    options: PlaceOrdersBench,
) -> anyhow::Result<()> {
    if options.orders == 0 || options.concurrency == 0 || options.products == 0 {
        bail!("--orders, --concurrency and --products must be at least 1");
    }
    let keep = options.keep;
    with_scratch_database(settings, keep, |target| async move {
        run_in(&target, &options).await
    })
    .await
}

async fn run_in(target: &PgConnectOptions, options: &PlaceOrdersBench) -> anyhow::Result<()> {
    let pool = super::migrated_pool(target, options.concurrency as u32 + 4).await?;
    let app = Arc::new(App::new(pool.clone()));
    let (store_id, owner_id, products) = set_up(&app, options).await?;

    let placing = {
        let (app, products) = (app.clone(), products.clone());
        drive(&pool, options.concurrency, options.orders, move |i| {
            let (app, products) = (app.clone(), products.clone());
            async move {
                let customer = Caller::service(aggregates::AccountId::new(), Channel::Api);
                // One to three lines on products spread over the catalogue.
                let mut lines = (0..1 + i % 3)
                    .map(|k| OrderLineInput {
                        product_id: products[(i * 7 + k * 13) % products.len()],
                        quantity: 1 + (i % 2) as i64,
                    })
                    .collect::<Vec<_>>();
                lines.sort_by_key(|l| l.product_id);
                lines.dedup_by_key(|l| l.product_id);
                let order = PlaceOrder {
                    store_id,
                    lines,
                    contact: None,
                };
                app.place_order(&customer, order).await.is_ok()
            }
        })
        .await?
    };
    placing.print("place-orders", options);

    // The same framework path with the saga taken away: one command loads one aggregate and
    // appends one event, the shape of pgbench's transaction below.
    let owner = Caller::service(owner_id, Channel::Api);
    let stock = Arc::new(
        app.authorize::<grant::ManageStock>(&owner, store_id)
            .await?,
    );
    let receiving = {
        let (app, products) = (app.clone(), products.clone());
        drive(&pool, options.concurrency, options.orders, move |i| {
            let (app, products, stock) = (app.clone(), products.clone(), stock.clone());
            async move {
                let product_id = products[(i * 7) % products.len()];
                app.receive_stock(&stock, product_id, 1, None).await.is_ok()
            }
        })
        .await?
    };
    receiving.print("receive-stock", options);

    if options.pgbench {
        let tps = pgbench(target, options.concurrency, options.pgbench_seconds).await?;
        println!(
            "{}",
            serde_json::json!({
                "bench": "pgbench-read-aggregate-append-event",
                "clients": options.concurrency,
                "seconds": options.pgbench_seconds,
                "tps": round(tps),
                "place_orders_vs_pgbench": round(placing.commands_per_sec() / tps),
                "place_orders_events_vs_pgbench": round(placing.events_per_sec() / tps),
                "receive_stock_vs_pgbench": round(receiving.commands_per_sec() / tps),
            })
        );
    }
    pool.close().await;
    Ok(())
}

/// What one timed run measured.
pub(super) struct Run {
    commands: usize,
    failed: usize,
    seconds: f64,
    events: i64,
    latencies: Histogram<u64>,
}

impl Run {
    pub(super) fn seconds(&self) -> f64 {
        self.seconds
    }

    pub(super) fn commands_per_sec(&self) -> f64 {
        self.commands as f64 / self.seconds
    }

    fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.seconds
    }

    pub(super) fn print(&self, name: &str, options: &PlaceOrdersBench) {
        println!(
            "{}",
            serde_json::json!({
                "bench": name,
                "commands": self.commands,
                "failed": self.failed,
                "concurrency": options.concurrency,
                "products": options.products,
                "seconds": round(self.seconds),
                "commands_per_sec": round(self.commands_per_sec()),
                "events": self.events,
                "events_per_sec": round(self.events_per_sec()),
                "p50_ms": round(self.latencies.value_at_quantile(0.50) as f64 / 1000.0),
                "p99_ms": round(self.latencies.value_at_quantile(0.99) as f64 / 1000.0),
                "max_ms": round(self.latencies.max() as f64 / 1000.0),
            })
        );
    }
}

/// Runs `command(i)` for i in 0..total with `concurrency` in flight, timing each.
pub(super) async fn drive<F, Fut>(
    pool: &PgPool,
    concurrency: usize,
    total: usize,
    command: F,
) -> anyhow::Result<Run>
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let count_events = "select count(*) from events";
    let events_before: i64 = sqlx::query_scalar(count_events).fetch_one(pool).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, command) = (next.clone(), command.clone());
            tokio::spawn(async move {
                let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
                let mut failed = 0usize;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let began = Instant::now();
                    let ok = command(i).await;
                    latencies.record(began.elapsed().as_micros().max(1) as u64)?;
                    failed += usize::from(!ok);
                }
                anyhow::Ok((latencies, failed))
            })
        })
        .collect();
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut failed = 0;
    for worker in workers {
        let (histogram, f) = worker.await??;
        latencies.add(histogram)?;
        failed += f;
    }
    let seconds = started.elapsed().as_secs_f64();
    let events_after: i64 = sqlx::query_scalar(count_events).fetch_one(pool).await?;
    Ok(Run {
        commands: total,
        failed,
        seconds,
        events: events_after - events_before,
        latencies,
    })
}

/// A RUB store on UTC named `name`, owned by `owner_id`.
pub(super) async fn open_bench_store(
    app: &App,
    owner_id: AccountId,
    name: &str,
) -> anyhow::Result<StoreId> {
    Ok(app
        .open_store(
            &CommandContext::system("bench"),
            NewStore {
                owner_id,
                name: StoreName::parse(name)?,
                currency: "RUB".parse().context("currency")?,
                timezone: TimeZone::parse("UTC")?,
                payment_instructions: "Bench bank".into(),
                default_low_stock_threshold: 5,
                reservation_ttl_minutes: 60,
            },
        )
        .await?
        .outcome)
}

pub(super) async fn set_up(
    app: &App,
    options: &PlaceOrdersBench,
) -> anyhow::Result<(StoreId, AccountId, Arc<Vec<ProductId>>)> {
    let system = CommandContext::system("bench");
    let owner_id = app
        .register_account(&system, Some("bench@shopfront.dev"), None, false)
        .await?;
    let rub = "RUB".parse().context("currency")?;
    let store_id = open_bench_store(app, owner_id, "Bench store").await?;
    let owner = Caller::service(owner_id, Channel::Api);
    let manage = app
        .authorize::<grant::ManageProducts>(&owner, store_id)
        .await?;
    let mut products = Vec::with_capacity(options.products);
    for n in 0..options.products {
        let product_id = app
            .create_product(
                &manage,
                NewProduct {
                    name: format!("Bench product {n}"),
                    description: String::new(),
                    sku: Sku::parse(&format!("BENCH-{n}"))?,
                    price: Money::new(100_00 + n as i64, rub),
                    // Enough that no order is refused for stock: the figure measures placement.
                    initial_stock: Some((options.orders * 6) as i64 + 10),
                    low_stock_threshold: None,
                },
            )
            .await?
            .outcome;
        products.push(product_id);
    }
    Ok((store_id, owner_id, Arc::new(products)))
}

/// pgbench's rate (tps) for the bare database work of one command, with `clients` clients for
/// `seconds` on `target`'s server.
pub(super) async fn pgbench(
    target: &PgConnectOptions,
    clients: usize,
    seconds: u32,
) -> anyhow::Result<f64> {
    let binary = ["pgbench".to_owned()]
        .into_iter()
        .chain(
            std::fs::read_dir("/usr/lib/postgresql")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().join("bin/pgbench").display().to_string()),
        )
        .find(|candidate| {
            std::process::Command::new(candidate)
                .arg("--version")
                .output()
                .is_ok()
        })
        .context("pgbench was not found (install the PostgreSQL client tools)")?;
    let script = std::env::temp_dir().join(format!("shopfront-pgbench-{}.sql", std::process::id()));
    std::fs::write(&script, PGBENCH_SCRIPT)?;
    let output = tokio::process::Command::new(&binary)
        .args(["-n", "-M", "prepared", "-j", "2"])
        .arg("-c")
        .arg(clients.to_string())
        .arg("-T")
        .arg(seconds.to_string())
        .arg("-f")
        .arg(&script)
        .arg("-h")
        .arg(target.get_host())
        .arg("-p")
        .arg(target.get_port().to_string())
        .arg("-U")
        .arg(target.get_username())
        .arg(target.get_database().unwrap_or("postgres"))
        .output()
        .await
        .context("running pgbench")?;
    let _ = std::fs::remove_file(&script);
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed: {}{}",
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no tps figure in pgbench's output: {stdout}"))
}
