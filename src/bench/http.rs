//! `shopfront bench http`: placing orders over HTTP (the real routes on a local port, a
//! logged-in owner, JSON in and out) beside placing the same orders in-process, in one run on
//! one database: what the HTTP layer (parsing, authentication, authorization, serialisation)
//! costs per command.

use std::sync::Arc;

use aggregates::Channel;
use anyhow::{bail, Context};
use poem::listener::{Acceptor, Listener, TcpListener};
use secrecy::SecretString;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::place_orders::{drive, set_up};
use super::{round, with_scratch_database};
use shopfront::app::{grant, App, Caller, CommandContext, OrderFor, OrderLineInput, StaffOrder};
use shopfront::config::{DatabaseSettings, PlaceOrdersBench};
use shopfront::db::MIGRATOR;

/// Runs the benchmark and prints its figures as JSON lines.
pub async fn http(settings: &DatabaseSettings, options: PlaceOrdersBench) -> anyhow::Result<()> {
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
    let pool = PgPoolOptions::new()
        .max_connections(options.concurrency as u32 + 4)
        .connect_with(target.clone())
        .await?;
    MIGRATOR.run(&pool).await?;
    let app = Arc::new(App::new(pool.clone()));
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
    let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await?;
    let port = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().map(|s| s.port()))
        .context("the listener has no port")?;
    // No rate limits: the figure is the cost of serving, not of being refused.
    let edge = shopfront::config::EdgeSettings::for_tests();
    let server = tokio::spawn(
        poem::Server::new_with_acceptor(acceptor).run(shopfront::http::routes(app.clone(), &edge)),
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

    let over_http = {
        let (client, products, url) = (
            client.clone(),
            products.clone(),
            format!("{base}/api/v1/stores/{store_id}/orders"),
        );
        let token = Arc::new(token);
        drive(&pool, options.concurrency, options.orders, move |i| {
            let (client, products, url, token) =
                (client.clone(), products.clone(), url.clone(), token.clone());
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
                matches!(response, Ok(r) if r.status() == 201)
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
        })
    );
    server.abort();
    pool.close().await;
    Ok(())
}
