//! Benchmarks that print their figures as JSON lines (`shopfront bench …`).
//!
//! Part of the `shopfront` binary only (src/main.rs), never of the library the service and the
//! tests link: they drive the library from outside, as its public API allows.

mod audit;
mod audit_export;
mod history;
mod hot_product;
mod http;
mod place_orders;
mod rebuild;
mod service;
mod stock_load;
mod ws;

use futures::future::BoxFuture;
use shopfront::config::{BenchCommand, DatabaseSettings};

/// Runs one `bench` subcommand against a scratch database on `database`'s server (the
/// library's command line calls it: see [`shopfront::cli::Bench`]).
pub fn run(
    database: &DatabaseSettings,
    command: BenchCommand,
) -> BoxFuture<'_, anyhow::Result<()>> {
    Box::pin(async move {
        match command {
            BenchCommand::PlaceOrders(options) => {
                place_orders::place_orders(database, options).await
            }
            BenchCommand::Http(options) => http::http(database, options).await,
            BenchCommand::Rebuild(options) => rebuild::rebuild(database, options).await,
            BenchCommand::StockLoad(options) => stock_load::stock_load(database, options).await,
            BenchCommand::HotProduct(options) => hot_product::hot_product(database, options).await,
            BenchCommand::Ws(options) => ws::ws(database, options).await,
            BenchCommand::Audit(options) => audit::audit(database, options).await,
            BenchCommand::AuditExport(options) => {
                audit_export::audit_export(database, options).await
            }
        }
    })
}

/// A pool of `connections` on a scratch database, migrated.
async fn migrated_pool(
    target: &sqlx::postgres::PgConnectOptions,
    connections: u32,
) -> anyhow::Result<sqlx::PgPool> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(connections)
        .connect_with(target.clone())
        .await?;
    shopfront::db::MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// Rounds to two decimals for printing.
fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Runs `bench` against a fresh database on the configured server, dropped afterwards unless
/// `keep`: benchmarks never touch real data.
async fn with_scratch_database<F, Fut>(
    settings: &DatabaseSettings,
    keep: bool,
    bench: F,
) -> anyhow::Result<()>
where
    F: FnOnce(sqlx::postgres::PgConnectOptions) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    use sqlx::Connection;

    let server = shopfront::db::Database::connect(settings).await?;
    let scratch = format!("shopfront_bench_{}", uuid::Uuid::now_v7().simple());
    let target = (*server.pool.connect_options()).clone().database(&scratch);
    shopfront::db::ensure_database_exists(&target).await?;
    let outcome = bench(target.clone()).await;
    if keep {
        eprintln!("kept scratch database {scratch}");
    } else {
        let mut conn = sqlx::PgConnection::connect_with(&target.database("postgres")).await?;
        sqlx::query(&format!(
            "drop database if exists {} with (force)",
            shopfront::db::quote_ident(&scratch)
        ))
        .execute(&mut conn)
        .await?;
    }
    server.close().await;
    outcome
}
