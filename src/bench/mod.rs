//! Benchmarks that print their figures as JSON lines (`shopfront bench …`).

mod history;
mod http;
mod place_orders;
mod rebuild;
mod stock_load;

pub use http::http;
pub use place_orders::place_orders;
pub use rebuild::rebuild;
pub use stock_load::stock_load;

/// Rounds to two decimals for printing.
fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Runs `bench` against a fresh database on the configured server, dropped afterwards unless
/// `keep`: benchmarks never touch real data.
async fn with_scratch_database<F, Fut>(
    settings: &crate::config::DatabaseSettings,
    keep: bool,
    bench: F,
) -> anyhow::Result<()>
where
    F: FnOnce(sqlx::postgres::PgConnectOptions) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    use sqlx::Connection;

    let server = crate::db::Database::connect(settings).await?;
    let scratch = format!("shopfront_bench_{}", uuid::Uuid::now_v7().simple());
    let target = (*server.pool.connect_options()).clone().database(&scratch);
    crate::db::ensure_database_exists(&target).await?;
    let outcome = bench(target.clone()).await;
    if keep {
        eprintln!("kept scratch database {scratch}");
    } else {
        let mut conn = sqlx::PgConnection::connect_with(&target.database("postgres")).await?;
        sqlx::query(&format!(
            "drop database if exists {} with (force)",
            crate::db::quote_ident(&scratch)
        ))
        .execute(&mut conn)
        .await?;
    }
    server.close().await;
    outcome
}
