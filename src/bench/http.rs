//! `shopfront bench http`: placing orders over HTTP against `shopfront serve` as it runs in
//! production — a child process with the projection runtime, the process managers, the audit
//! sealer and read-your-writes live — at several numbers of keep-alive connections in turn, then
//! with two instances on one database. A logged-in owner sends `POST
//! /api/v1/stores/{id}/orders` with 1–3 lines over the catalogue (or one line of one product,
//! `--hot`); every 201 answer shows the order as the `orders` read model has it.
//!
//! Each step prints orders/s, latency percentiles, how the answers split (201; 202 when the
//! read model did not show the order within the wait; refusals; errors), every projection's lag
//! while it ran (sampled every 100 ms: the age of the oldest event a projection has not
//! applied) and the service's resident memory. pgbench's append transaction runs on the same
//! server after the service stopped, as the baseline of the same run.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use secrecy::SecretString;
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, PgPool};

use super::place_orders::{pgbench, set_up};
use super::service::Service;
use super::{round, with_scratch_database};
use shopfront::app::{App, CommandContext};
use shopfront::config::{DatabaseSettings, HttpBench, PlaceOrdersBench};

/// Units each product starts with: no order is refused for stock (the figure is placement).
const INITIAL_STOCK_ORDERS: usize = 2_000_000;

/// Runs the benchmark and prints its figures as JSON lines.
pub async fn http(settings: &DatabaseSettings, options: HttpBench) -> anyhow::Result<()> {
    if options.connections.contains(&0)
        || options.two_instances.contains(&0)
        || options.products == 0
        || options.seconds == 0
    {
        bail!("--connections, --two-instances, --products and --seconds must be at least 1");
    }
    with_scratch_database(settings, options.keep, |target| async move {
        run_in(&target, &options).await
    })
    .await
}

/// What the orders are placed on, and by whom.
struct Shop {
    store_id: uuid::Uuid,
    products: Vec<uuid::Uuid>,
    email: &'static str,
    password: &'static str,
    hot: bool,
}

impl Shop {
    /// The body of order `i`.
    fn order(&self, i: u64) -> serde_json::Value {
        if self.hot {
            return json!({"lines": [{"product_id": self.products[0], "quantity": 1}]});
        }
        let i = i as usize;
        let mut lines: Vec<(uuid::Uuid, i64)> = (0..1 + i % 3)
            .map(|k| {
                (
                    self.products[(i * 7 + k * 13) % self.products.len()],
                    1 + (i % 2) as i64,
                )
            })
            .collect();
        lines.sort();
        lines.dedup_by_key(|l| l.0);
        let lines: Vec<_> = lines
            .into_iter()
            .map(|(product_id, quantity)| json!({"product_id": product_id, "quantity": quantity}))
            .collect();
        json!({ "lines": lines })
    }
}

async fn run_in(target: &PgConnectOptions, options: &HttpBench) -> anyhow::Result<()> {
    let url = target.to_url_lossy().to_string();
    let pool = super::migrated_pool(target, 4).await?;
    let shop = {
        let app = App::new(pool.clone());
        let setup = PlaceOrdersBench {
            orders: INITIAL_STOCK_ORDERS,
            concurrency: 1,
            products: if options.hot { 1 } else { options.products },
            pgbench: false,
            pgbench_seconds: 0,
            keep: false,
        };
        let (store_id, _, products) = set_up(&app, &setup).await?;
        let (email, password) = ("http-bench@shopfront.dev", "bench password, long enough");
        let owner = app
            .create_staff_account(email, SecretString::from(password), false)
            .await?;
        app.grant_owner(&CommandContext::system("bench"), store_id, owner)
            .await?;
        Shop {
            store_id: store_id.0,
            products: products.iter().map(|p| p.0).collect(),
            email,
            password,
            hot: options.hot,
        }
    };
    let shop = Arc::new(shop);
    let placed = Arc::new(AtomicU64::new(0));
    let mut curve = Vec::new();

    let service = Service::start(&url, &[]).await?;
    let token = service.log_in(shop.email, shop.password).await?;
    println!(
        "{}",
        json!({"bench": "http-service-started", "service_rss_mib": mib(service.rss_kib()?)})
    );
    for &connections in &options.connections {
        let step = measure(
            &pool,
            &[&service],
            &token,
            &shop,
            &placed,
            connections,
            options,
        )
        .await?;
        step.print("one-instance", connections, &[&service])?;
        curve.push((connections, step.orders_per_sec(), step.quantile_ms(0.99)));
    }

    let mut two = Vec::new();
    if !options.two_instances.is_empty() {
        let second = Service::start(&url, &[]).await?;
        for &connections in &options.two_instances {
            let step = measure(
                &pool,
                &[&service, &second],
                &token,
                &shop,
                &placed,
                connections,
                options,
            )
            .await?;
            step.print("two-instances", connections, &[&service, &second])?;
            two.push((connections, step.orders_per_sec(), step.quantile_ms(0.99)));
        }
        second.stop().await?;
    }

    if options.memory_orders > 0 {
        let rss_before = service.rss_kib()?;
        let mut rounds = 0;
        while placed.load(Ordering::Relaxed) < options.memory_orders && rounds < 1_000 {
            measure(&pool, &[&service], &token, &shop, &placed, 32, options).await?;
            rounds += 1;
        }
        println!(
            "{}",
            json!({
                "bench": "http-service-memory",
                "orders_placed": placed.load(Ordering::Relaxed),
                "events": count(&pool, "select count(*) from events").await?,
                "service_rss_mib_before_soak": mib(rss_before),
                "service_rss_mib": mib(service.rss_kib()?),
            })
        );
    }
    if options.hot {
        check_no_oversell(&pool, &shop, placed.load(Ordering::Relaxed)).await?;
    }
    service.stop().await?;

    if options.pgbench {
        // After the service stopped: pgbench appends events of a kind the projections would
        // (rightly) refuse to read.
        let tps = pgbench(target, options.pgbench_clients, options.pgbench_seconds).await?;
        let best = curve
            .iter()
            .map(|(_, rate, _)| *rate)
            .fold(0.0f64, f64::max);
        println!(
            "{}",
            json!({
                "bench": "pgbench-read-aggregate-append-event",
                "clients": options.pgbench_clients,
                "seconds": options.pgbench_seconds,
                "tps": round(tps),
                "best_orders_per_sec_vs_pgbench": round(best / tps),
            })
        );
    }
    if let Some(path) = &options.plot {
        plot(path, &curve, &two, options.hot)?;
        println!("{}", json!({"bench": "http-plot", "written": path}));
    }
    pool.close().await;
    Ok(())
}

/// One step's figures.
struct Step {
    seconds: f64,
    latencies: Histogram<u64>,
    /// Answers by kind: `created` (201), `pending` (202), `refused` (4xx), `failed`.
    answers: BTreeMap<&'static str, u64>,
    /// Per projection, the largest lag seen while the step was measured, in ms.
    lag_ms: BTreeMap<String, f64>,
    events: i64,
}

impl Step {
    fn orders(&self) -> u64 {
        self.answers.get("created").copied().unwrap_or(0)
            + self.answers.get("pending").copied().unwrap_or(0)
    }

    fn orders_per_sec(&self) -> f64 {
        self.orders() as f64 / self.seconds
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        round(self.latencies.value_at_quantile(q) as f64 / 1000.0)
    }

    fn print(&self, bench: &str, connections: usize, services: &[&Service]) -> anyhow::Result<()> {
        let rss: Vec<f64> = services
            .iter()
            .map(|s| s.rss_kib().map(mib))
            .collect::<anyhow::Result<_>>()?;
        let worst_lag = self.lag_ms.values().copied().fold(0.0f64, f64::max);
        println!(
            "{}",
            json!({
                "bench": format!("http-{bench}"),
                "connections": connections,
                "instances": services.len(),
                "seconds": round(self.seconds),
                "orders_per_sec": round(self.orders_per_sec()),
                "events_per_sec": round(self.events as f64 / self.seconds),
                "answers": self.answers,
                "p50_ms": self.quantile_ms(0.5),
                "p90_ms": self.quantile_ms(0.9),
                "p99_ms": self.quantile_ms(0.99),
                "max_ms": round(self.latencies.max() as f64 / 1000.0),
                "max_projection_lag_ms": round(worst_lag),
                "projection_lag_ms": self.lag_ms,
                "service_rss_mib": rss,
            })
        );
        Ok(())
    }
}

/// Places orders with `connections` workers (each its own keep-alive connection, spread over
/// `services`) for the warm-up, then measures for `--seconds`.
async fn measure(
    pool: &PgPool,
    services: &[&Service],
    token: &str,
    shop: &Arc<Shop>,
    placed: &Arc<AtomicU64>,
    connections: usize,
    options: &HttpBench,
) -> anyhow::Result<Step> {
    let measuring = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..connections)
        .map(|n| {
            let url = format!(
                "{}/api/v1/stores/{}/orders",
                services[n % services.len()].base,
                shop.store_id
            );
            let (token, shop, placed) = (token.to_owned(), shop.clone(), placed.clone());
            let (measuring, done) = (measuring.clone(), done.clone());
            tokio::spawn(async move {
                // One client per worker: one keep-alive connection each.
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()?;
                let mut latencies = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
                let mut answers: BTreeMap<&'static str, u64> = BTreeMap::new();
                while !done.load(Ordering::Relaxed) {
                    let i = placed.fetch_add(1, Ordering::Relaxed);
                    let began = Instant::now();
                    let answer = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&shop.order(i))
                        .send()
                        .await
                        .map(|r| r.status().as_u16());
                    let kind = match answer {
                        Ok(201) => "created",
                        Ok(202) => "pending",
                        Ok(400..=499) => "refused",
                        _ => "failed",
                    };
                    if kind != "created" && kind != "pending" {
                        placed.fetch_sub(1, Ordering::Relaxed);
                    }
                    if measuring.load(Ordering::Relaxed) && !done.load(Ordering::Relaxed) {
                        latencies.record(began.elapsed().as_micros().max(1) as u64)?;
                        *answers.entry(kind).or_default() += 1;
                    }
                }
                anyhow::Ok((latencies, answers))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(options.warmup_seconds)).await;
    let events_before = count(pool, "select count(*) from events").await?;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let lag_ms = Arc::new(Mutex::new(BTreeMap::<String, f64>::new()));
    let sampler = {
        let (pool, lag_ms, done) = (pool.clone(), lag_ms.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                for (name, lag) in projection_lags(&pool).await? {
                    let mut worst = lag_ms.lock().expect("lock");
                    let entry = worst.entry(name).or_insert(0.0);
                    *entry = entry.max(lag);
                }
                // A sampling period: the lag is a level to read, not an event to await.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(())
        })
    };
    tokio::time::sleep(Duration::from_secs(options.seconds)).await;
    done.store(true, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let events = count(pool, "select count(*) from events").await? - events_before;
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut answers = BTreeMap::new();
    for worker in workers {
        let (histogram, counted) = worker.await??;
        latencies.add(histogram)?;
        for (kind, n) in counted {
            *answers.entry(kind).or_default() += n;
        }
    }
    sampler.await??;
    let lag_ms = lag_ms.lock().expect("lock").clone();
    Ok(Step {
        seconds,
        latencies,
        answers,
        lag_ms,
        events,
    })
}

/// Every projection's lag now: the age of the oldest committed event after its checkpoint (0
/// when it has applied everything).
async fn projection_lags(pool: &PgPool) -> anyhow::Result<Vec<(String, f64)>> {
    Ok(sqlx::query_as(
        "select c.name,
                coalesce((select extract(epoch from clock_timestamp() - e.recorded_at) * 1000
                            from events e
                           where (e.transaction_id, e.global_position)
                                 > (c.transaction_id::text::xid8, c.global_position)
                           order by e.transaction_id, e.global_position
                           limit 1), 0)::float8
           from projection_checkpoints c",
    )
    .fetch_all(pool)
    .await?)
}

async fn count(pool: &PgPool, sql: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(pool).await?)
}

/// The hot product never oversold: what its Stock reserved and committed is within what it
/// received, and every unit the orders read model counts is one the Stock reserved.
async fn check_no_oversell(pool: &PgPool, shop: &Shop, answered: u64) -> anyhow::Result<()> {
    let product = shop.products[0].to_string();
    let (received, taken): (i64, i64) = sqlx::query_as(
        "select coalesce(sum((payload -> event_type ->> 'quantity')::bigint)
                           filter (where event_type = 'StockReceived'), 0)::bigint,
                coalesce(sum((payload -> event_type ->> 'quantity')::bigint)
                           filter (where event_type = 'StockReserved'), 0)::bigint
           from events where aggregate_type = 'Stock' and aggregate_id = $1",
    )
    .bind(&product)
    .fetch_one(pool)
    .await
    .context("reading the hot product's stock")?;
    println!(
        "{}",
        json!({
            "bench": "http-hot-product-oversell-check",
            "received": received,
            "reserved": taken,
            "orders_answered_placed": answered,
            "oversold": taken > received,
        })
    );
    if taken > received {
        bail!("the hot product oversold: {taken} reserved of {received} received");
    }
    Ok(())
}

fn mib(kib: u64) -> f64 {
    round(kib as f64 / 1024.0)
}

/// The scaling curve: orders/s (left) and p99 (right, dashed) against connections (log scale),
/// one instance and, as points, two.
fn plot(
    path: &Path,
    one: &[(usize, f64, f64)],
    two: &[(usize, f64, f64)],
    hot: bool,
) -> anyhow::Result<()> {
    use plotters::prelude::*;

    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_connections = one
        .iter()
        .chain(two)
        .map(|(c, ..)| *c)
        .max()
        .unwrap_or(1)
        .max(2) as f64;
    let max_rate = one
        .iter()
        .chain(two)
        .map(|(_, r, _)| *r)
        .fold(1.0f64, f64::max)
        * 1.15;
    let max_p99 = one
        .iter()
        .chain(two)
        .map(|(.., p)| *p)
        .fold(1.0f64, f64::max)
        * 1.15;
    let title = if hot {
        "shopfront serve: orders/s and p99 by connections (one hot product)"
    } else {
        "shopfront serve: orders/s and p99 by connections"
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .right_y_label_area_size(60)
        .build_cartesian_2d((1.0f64..max_connections * 1.2).log_scale(), 0.0..max_rate)?
        .set_secondary_coord((1.0f64..max_connections * 1.2).log_scale(), 0.0..max_p99);
    chart
        .configure_mesh()
        .x_desc("keep-alive connections")
        .y_desc("orders/s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("p99 latency (ms)")
        .draw()?;
    let rate: Vec<(f64, f64)> = one.iter().map(|(c, r, _)| (*c as f64, *r)).collect();
    let p99: Vec<(f64, f64)> = one.iter().map(|(c, _, p)| (*c as f64, *p)).collect();
    chart
        .draw_series(LineSeries::new(rate.clone(), BLUE.stroke_width(2)))?
        .label("orders/s, one instance")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart.draw_series(rate.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))?;
    chart
        .draw_secondary_series(LineSeries::new(p99.clone(), RED.stroke_width(2)))?
        .label("p99 ms, one instance")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart.draw_secondary_series(p99.iter().map(|p| Circle::new(*p, 4, RED.filled())))?;
    if !two.is_empty() {
        chart
            .draw_series(
                two.iter()
                    .map(|(c, r, _)| TriangleMarker::new((*c as f64, *r), 7, BLUE.filled())),
            )?
            .label("orders/s, two instances")
            .legend(|(x, y)| TriangleMarker::new((x + 10, y), 6, BLUE.filled()));
        chart
            .draw_secondary_series(
                two.iter()
                    .map(|(c, _, p)| TriangleMarker::new((*c as f64, *p), 7, RED.filled())),
            )?
            .label("p99 ms, two instances")
            .legend(|(x, y)| TriangleMarker::new((x + 10, y), 6, RED.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
