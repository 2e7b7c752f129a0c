//! `shopfront bench ws`: the live feeds as `serve` runs them — a child `shopfront serve`
//! (projections, process managers and the live log tail on), on a scratch database, so the
//! memory measured is the service's own:
//!
//! 1. **Idle subscribers**: `--subscribers` WebSocket connections, each authenticated and
//!    following the orders of a store where nothing happens (every connection reads, so it
//!    answers pings); the service's resident memory before and after.
//! 2. **Commit → receive latency**: `--watchers` connections follow the busy store's event
//!    feed while this process commits `--rate` stock receipts a second (over 50 products) for
//!    `--seconds`
//!    (through the library, as a second instance on the same database would: the service
//!    learns of them from the log, as of any other instance's). Latency runs from the moment
//!    the command's commit returned to the moment a watcher read the event.
//!
//! With `--pgbench`, pgbench's read-aggregate-append-event transaction on the same server in
//! the same run, after the service stopped, as the baseline of what the database commits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aggregates::Channel;
use anyhow::bail;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use secrecy::SecretString;
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions as _;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::place_orders::{pgbench, set_up};
use super::service::Service;
use super::{round, with_scratch_database};
use shopfront::app::{grant, App, Caller, CommandContext};
use shopfront::config::{DatabaseSettings, PlaceOrdersBench, WsBench};

/// The note of every timed stock receipt (and its number).
const NOTE: &str = "ws-bench-";

/// Runs the benchmark and prints its figures as JSON lines.
pub async fn ws(settings: &DatabaseSettings, options: WsBench) -> anyhow::Result<()> {
    if options.rate == 0 || options.seconds == 0 || options.watchers == 0 {
        bail!("--rate, --seconds and --watchers must be at least 1");
    }
    let keep = options.keep;
    with_scratch_database(settings, keep, |target| async move {
        run_in(settings, &target, &options).await
    })
    .await
}

async fn run_in(
    settings: &DatabaseSettings,
    target: &PgConnectOptions,
    options: &WsBench,
) -> anyhow::Result<()> {
    let url = target.to_url_lossy().to_string();
    let database = shopfront::db::Database::connect(&DatabaseSettings {
        database_url: Some(SecretString::from(url.clone())),
        max_connections: 20,
        ..settings.clone()
    })
    .await?;
    database.migrate().await?;
    let app = Arc::new(App::new(database.pool.clone()));

    // Two stores: a busy one (the watchers') and a quiet one (the idle subscribers').
    let setup = PlaceOrdersBench {
        orders: 0,
        // pgbench's clients, as in the other benchmarks.
        concurrency: 16,
        // Receipts spread over products: one Stock aggregate would serialise them.
        products: 50,
        pgbench: options.pgbench,
        pgbench_seconds: options.pgbench_seconds,
        keep: options.keep,
    };
    let (busy_store, _, products) = set_up(&app, &setup).await?;
    let system = CommandContext::system("bench");
    let password = "bench password, long enough";
    let owner = app
        .create_staff_account(
            "ws-bench@shopfront.dev",
            SecretString::from(password),
            false,
        )
        .await?;
    app.grant_owner(&system, busy_store, owner).await?;
    let quiet_store = super::place_orders::open_bench_store(&app, owner, "Quiet").await?;
    let stocking = Arc::new(
        app.authorize::<grant::ManageStock>(&Caller::service(owner, Channel::Api), busy_store)
            .await?,
    );

    // The service, as `serve` runs it, in its own process; every connection is the bench
    // account's.
    let service = Service::start(
        &url,
        &[("SHOPFRONT_LIVE_CONNECTIONS_PER_ACCOUNT", "1000000")],
    )
    .await?;
    let token = service.log_in("ws-bench@shopfront.dev", password).await?;
    let ws_url = format!("{}/api/v1/ws", service.base.replacen("http", "ws", 1));
    let rss_before = service.rss_kib()?;

    // 1. Idle subscribers.
    let closed_early = Arc::new(AtomicUsize::new(0));
    let connecting = Instant::now();
    let idle = futures::stream::iter(0..options.subscribers)
        .map(|_| {
            let (url, token, closed_early) = (ws_url.clone(), token.clone(), closed_early.clone());
            async move {
                let mut socket = follow(
                    &url,
                    &token,
                    json!({"topic": "orders", "store_id": quiet_store.0}),
                )
                .await?;
                // Read (answering pings) until the end.
                Ok::<_, anyhow::Error>(tokio::spawn(async move {
                    while let Some(message) = socket.next().await {
                        if matches!(message, Ok(Message::Close(_)) | Err(_)) {
                            closed_early.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }))
            }
        })
        .buffer_unordered(100)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let connect_seconds = connecting.elapsed().as_secs_f64();
    let rss_idle = service.rss_kib()?;
    let per_subscriber = if options.subscribers > 0 {
        (rss_idle.saturating_sub(rss_before)) as f64 / options.subscribers as f64
    } else {
        0.0
    };
    println!(
        "{}",
        json!({
            "bench": "ws-idle-subscribers",
            "subscribers": options.subscribers,
            "connect_seconds": round(connect_seconds),
            "service_rss_mib_before": round(rss_before as f64 / 1024.0),
            "service_rss_mib_with_subscribers": round(rss_idle as f64 / 1024.0),
            "kib_per_subscriber": round(per_subscriber),
        })
    );

    // 2. Commit → receive latency under load.
    let committed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let latencies = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let received = Arc::new(AtomicUsize::new(0));
    let mut watchers = Vec::new();
    for _ in 0..options.watchers {
        let mut socket = follow(
            &ws_url,
            &token,
            json!({"topic": "events", "store_id": busy_store.0}),
        )
        .await?;
        let (committed, latencies, received) =
            (committed.clone(), latencies.clone(), received.clone());
        watchers.push(tokio::spawn(async move {
            while let Some(Ok(message)) = socket.next().await {
                let at = Instant::now();
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&text) else {
                    continue;
                };
                let Some(note) = event["payload"]["StockReceived"]["note"].as_str() else {
                    continue;
                };
                if !note.starts_with(NOTE) {
                    continue;
                }
                // Not there yet: the event arrived before its commit call returned here (the
                // service is that quick, or this process that slow): counted as 0 ms.
                let commit = committed.lock().expect("lock").get(note).copied();
                let micros = commit.map_or(0, |c| at.saturating_duration_since(c).as_micros());
                let _ = latencies
                    .lock()
                    .expect("lock")
                    .record((micros as u64).max(1));
                received.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let total = options.rate as usize * options.seconds as usize;
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / options.rate as f64));
    let failed = Arc::new(AtomicUsize::new(0));
    let driving = Instant::now();
    let mut commands = Vec::with_capacity(total);
    for i in 0..total {
        ticks.tick().await;
        let (app, stocking, committed, failed) = (
            app.clone(),
            stocking.clone(),
            committed.clone(),
            failed.clone(),
        );
        let product = products[i % products.len()];
        commands.push(tokio::spawn(async move {
            let note = format!("{NOTE}{i}");
            match app
                .receive_stock(&stocking, product, 1, Some(note.clone()))
                .await
            {
                Ok(_) => {
                    committed.lock().expect("lock").insert(note, Instant::now());
                }
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for command in commands {
        command.await?;
    }
    let driven = driving.elapsed().as_secs_f64();
    let ok = total - failed.load(Ordering::Relaxed);
    let expected = ok * options.watchers;
    let waiting = Instant::now();
    while received.load(Ordering::Relaxed) < expected && waiting.elapsed() < Duration::from_secs(30)
    {
        // Waiting for the last deliveries to be counted by the watcher tasks.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let histogram = latencies.lock().expect("lock").clone();
    let ms = |q: f64| round(histogram.value_at_quantile(q) as f64 / 1000.0);
    println!(
        "{}",
        json!({
            "bench": "ws-commit-to-receive",
            "rate_asked": options.rate,
            "commands": ok,
            "failed": failed.load(Ordering::Relaxed),
            "commands_per_sec": round(ok as f64 / driven),
            "watchers": options.watchers,
            "delivered": received.load(Ordering::Relaxed),
            "expected": expected,
            "p50_ms": ms(0.5),
            "p90_ms": ms(0.9),
            "p99_ms": ms(0.99),
            "max_ms": round(histogram.max() as f64 / 1000.0),
            "idle_subscribers_connected": options.subscribers - closed_early.load(Ordering::Relaxed),
            "service_rss_mib_after": round(service.rss_kib()? as f64 / 1024.0),
        })
    );

    // The service stops (SIGTERM would be kinder; kill is what `kill_on_drop` does anyway).
    for watcher in watchers {
        watcher.abort();
    }
    for task in idle {
        task.abort();
    }
    service.stop().await?;
    if options.pgbench {
        let tps = pgbench(target, setup.concurrency, setup.pgbench_seconds).await?;
        println!(
            "{}",
            json!({
                "bench": "pgbench-read-aggregate-append-event",
                "seconds": options.pgbench_seconds,
                "tps": round(tps),
            })
        );
    }
    database.close().await;
    Ok(())
}

/// A connection authenticated through the subprotocol, following `subscription`, read up to
/// its `caught_up`.
async fn follow(
    url: &str,
    token: &str,
    subscription: serde_json::Value,
) -> anyhow::Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("shopfront.v1, shopfront.bearer.{token}").parse()?,
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    let mut message = subscription;
    message["type"] = json!("subscribe");
    socket
        .send(Message::Text(message.to_string().into()))
        .await?;
    while let Some(message) = socket.next().await {
        if let Message::Text(text) = message? {
            let reply: serde_json::Value = serde_json::from_str(&text)?;
            match reply["type"].as_str() {
                Some("caught_up") => return Ok(socket),
                Some("error") => bail!("subscription refused: {reply}"),
                _ => {}
            }
        }
    }
    bail!("the service closed the connection while subscribing")
}
