//! `shopfront bench http`: placing orders over HTTP against the service as `serve` runs it (the
//! real `Application`: routes on a local port, the projection runtime, the process managers and
//! read-your-writes), a logged-in owner sending JSON, beside placing the same orders in-process
//! through the same running service, in one run on one database: what the HTTP layer
//! (parsing, authentication, authorization, serialisation, waiting for the read models to show
//! the order) costs per command.

use std::sync::Arc;

use std::sync::atomic::{AtomicUsize, Ordering};

use aggregates::Channel;
use anyhow::{bail, Context};
use secrecy::SecretString;
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions as _;

use super::place_orders::{drive, pgbench, set_up};
use super::{round, with_scratch_database};
use shopfront::app::{grant, Caller, CommandContext, OrderFor, OrderLineInput, StaffOrder};
use shopfront::config::{DatabaseSettings, PlaceOrdersBench, ServeSettings};
use shopfront::startup::Application;

/// Runs the benchmark and prints its figures as JSON lines.
pub async fn http(settings: &DatabaseSettings, options: PlaceOrdersBench) -> anyhow::Result<()> {
    if options.orders == 0 || options.concurrency == 0 || options.products == 0 {
        bail!("--orders, --concurrency and --products must be at least 1");
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
    options: &PlaceOrdersBench,
) -> anyhow::Result<()> {
    // The service as `serve` runs it, on the scratch database: migrations, the projection
    // runtime and the process managers, the HTTP edge without rate limits (the figure is the
    // cost of serving, not of being refused) and the production read-your-writes wait.
    let database = DatabaseSettings {
        database_url: Some(SecretString::from(target.to_url_lossy().to_string())),
        max_connections: options.concurrency as u32 + 20,
        ..settings.clone()
    };
    let serve = ServeSettings {
        read_your_writes_wait_ms: 2_000,
        expiry_interval_seconds: 10,
        ..ServeSettings::for_tests()
    };
    let storage_dir = serve.storage_dir.clone();
    let application = Application::build(&database, serve).await?;
    let port = application.port();
    let app = application.app();
    let pool = app.pool.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let (store_id, _, products) = set_up(&app, options).await?;

    // The owner logs in over HTTP, as an admin client would.
    let system = CommandContext::system("bench");
    let password = "bench password, long enough";
    let owner = app
        .create_staff_account(
            "http-bench@shopfront.dev",
            SecretString::from(password),
            false,
        )
        .await?;
    app.grant_owner(&system, store_id, owner).await?;
    let placing = Arc::new(
        app.authorize::<grant::PlaceOrdersForCustomers>(
            &Caller::service(owner, Channel::Api),
            store_id,
        )
        .await?,
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(options.concurrency)
        .build()?;
    let login: serde_json::Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({"email": "http-bench@shopfront.dev", "password": password}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = login["access_token"]
        .as_str()
        .context("no access token")?
        .to_owned();

    let lines_of = |i: usize, products: &[aggregates::ProductId]| {
        let mut lines = (0..1 + i % 3)
            .map(|k| OrderLineInput {
                product_id: products[(i * 7 + k * 13) % products.len()],
                quantity: 1 + (i % 2) as i64,
            })
            .collect::<Vec<_>>();
        lines.sort_by_key(|l| l.product_id);
        lines.dedup_by_key(|l| l.product_id);
        lines
    };

    let in_process = {
        let (app, products) = (app.clone(), products.clone());
        drive(&pool, options.concurrency, options.orders, move |i| {
            let (app, products, placing) = (app.clone(), products.clone(), placing.clone());
            async move {
                let order = StaffOrder {
                    lines: lines_of(i, &products),
                    contact: None,
                };
                app.place_order_for(&placing, OrderFor::WalkIn, order)
                    .await
                    .is_ok()
            }
        })
        .await?
    };
    in_process.print("place-orders-in-process", options);

    let pending = Arc::new(AtomicUsize::new(0));
    let over_http = {
        let (client, products, url) = (
            client.clone(),
            products.clone(),
            format!("{base}/api/v1/stores/{store_id}/orders"),
        );
        let token = Arc::new(token);
        let pending = pending.clone();
        drive(&pool, options.concurrency, options.orders, move |i| {
            let (client, products, url, token, pending) = (
                client.clone(),
                products.clone(),
                url.clone(),
                token.clone(),
                pending.clone(),
            );
            async move {
                let lines: Vec<_> = lines_of(i, &products)
                    .into_iter()
                    .map(|l| serde_json::json!({"product_id": l.product_id.0, "quantity": l.quantity}))
                    .collect();
                let response = client
                    .post(&url)
                    .bearer_auth(token.as_str())
                    .json(&serde_json::json!({ "lines": lines }))
                    .send()
                    .await;
                // 201 with the order, or 202: placed, but the read models did not show it
                // within the read-your-writes wait (counted apart).
                match response.map(|r| r.status().as_u16()) {
                    Ok(201) => true,
                    Ok(202) => {
                        pending.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                    _ => false,
                }
            }
        })
        .await?
    };
    over_http.print("place-orders-http", options);
    println!(
        "{}",
        serde_json::json!({
            "bench": "http-vs-in-process",
            "http_commands_per_sec": round(over_http.commands_per_sec()),
            "in_process_commands_per_sec": round(in_process.commands_per_sec()),
            "http_vs_in_process": round(over_http.commands_per_sec() / in_process.commands_per_sec()),
            "http_answered_202": pending.load(Ordering::Relaxed),
        })
    );
    // The service stops first: pgbench appends events of its own kind, which the projections
    // would (rightly) refuse to read.
    let _ = stop.send(());
    server.await??;
    if options.pgbench {
        // The baseline on the same server in the same run.
        let tps = pgbench(target, options).await?;
        println!(
            "{}",
            serde_json::json!({
                "bench": "pgbench-read-aggregate-append-event",
                "tps": round(tps),
                "seconds": options.pgbench_seconds,
                "clients": options.concurrency,
                "http_vs_pgbench": round(over_http.commands_per_sec() / tps),
                "in_process_vs_pgbench": round(in_process.commands_per_sec() / tps),
            })
        );
    }
    let _ = std::fs::remove_dir_all(storage_dir);
    Ok(())
}
