//! `shopfront bench hot-product`: every order for one product, one unit each, placed
//! in-process by `--concurrency` callers at once (`App::place_order`, as the API runs it), and
//! (with `--pgbench`) pgbench's rate for the bare database work of one command on the same
//! server in the same run, as the baseline.
//!
//! Besides orders/s and latency it prints how many orders were placed and refused, and checks
//! that nothing was oversold: the units reserved never exceed the units received, the Stock's
//! saved state equals a replay of its events, and every placed order has its one reservation.
//!
//! Runs in a scratch database on the configured server, dropped afterwards unless `--keep`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use aggregates::product::Sku;
use aggregates::stock::{Stock, StockError};
use aggregates::{Channel, Money};
use anyhow::{bail, Context};

use super::place_orders::{drive, open_bench_store, pgbench};
use super::{round, with_scratch_database};
use shopfront::app::PlaceOrder;
use shopfront::app::{grant, App, AppError, Caller, CommandContext, NewProduct, OrderLineInput};
use shopfront::config::{DatabaseSettings, HotProductBench, PlaceOrdersBench};

/// Runs the benchmark and prints its figures as JSON lines.
pub async fn hot_product(
    settings: &DatabaseSettings,
    options: HotProductBench,
) -> anyhow::Result<()> {
    if options.orders == 0 || options.concurrency == 0 {
        bail!("--orders and --concurrency must be at least 1");
    }
    with_scratch_database(settings, options.keep, |target| async move {
        // The figures print through the place-orders bench's own printer and pgbench runner.
        let as_place_orders = PlaceOrdersBench {
            orders: options.orders,
            concurrency: options.concurrency,
            products: 1,
            pgbench: options.pgbench,
            pgbench_seconds: options.pgbench_seconds,
            keep: options.keep,
        };
        let pool = super::migrated_pool(&target, options.concurrency as u32 + 4).await?;
        let app = Arc::new(App::new(pool.clone()));

        let system = CommandContext::system("bench");
        let owner_id = app
            .register_account(&system, Some("bench@shopfront.dev"), None, false)
            .await?;
        let store_id = open_bench_store(&app, owner_id, "Hot product store").await?;
        let owner = Caller::service(owner_id, Channel::Api);
        let manage = app
            .authorize::<grant::ManageProducts>(&owner, store_id)
            .await?;
        let units = options.stock.unwrap_or(options.orders);
        let product_id = app
            .create_product(
                &manage,
                NewProduct {
                    name: "The hot product".into(),
                    description: String::new(),
                    sku: Sku::parse("HOT-1")?,
                    price: Money::new(100_00, "RUB".parse().context("currency")?),
                    initial_stock: Some(units as i64),
                    low_stock_threshold: None,
                },
            )
            .await?
            .outcome;

        let placed = Arc::new(AtomicUsize::new(0));
        let out_of_stock = Arc::new(AtomicUsize::new(0));
        let run = {
            let (app, placed, out_of_stock) = (app.clone(), placed.clone(), out_of_stock.clone());
            drive(&pool, options.concurrency, options.orders, move |_| {
                let (app, placed, out_of_stock) =
                    (app.clone(), placed.clone(), out_of_stock.clone());
                async move {
                    let customer = Caller::service(aggregates::AccountId::new(), Channel::Api);
                    let order = PlaceOrder {
                        store_id,
                        lines: vec![OrderLineInput {
                            product_id,
                            quantity: 1,
                        }],
                        contact: None,
                    };
                    match app.place_order(&customer, order).await {
                        Ok(_) => {
                            placed.fetch_add(1, Ordering::Relaxed);
                            true
                        }
                        Err(AppError::Stock(StockError::OutOfStock { .. })) => {
                            out_of_stock.fetch_add(1, Ordering::Relaxed);
                            true
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "placing a hot order failed");
                            false
                        }
                    }
                }
            })
            .await?
        };
        run.print("hot-product", &as_place_orders);

        // Oversell check, on the event store itself.
        let id = product_id.to_string();
        let saved = app.load_state::<Stock>(&id).await?;
        let replayed = app.replay_state::<Stock>(&id).await?;
        let (received, reserved_events, reserved_units, orders_placed): (i64, i64, i64, i64) =
            sqlx::query_as(
                "select
                   coalesce(sum((payload->'StockReceived'->>'quantity')::bigint)
                              filter (where event_type = 'StockReceived'), 0)::bigint,
                   count(*) filter (where event_type = 'StockReserved'),
                   coalesce(sum((payload->'StockReserved'->>'quantity')::bigint)
                              filter (where event_type = 'StockReserved'), 0)::bigint,
                   (select count(*) from events where event_type = 'OrderPlaced')
                 from events where aggregate_type = 'Stock' and aggregate_id = $1",
            )
            .bind(&id)
            .fetch_one(&pool)
            .await?;
        let placed = placed.load(Ordering::Relaxed);
        let oversold = reserved_units > received
            || saved.reserved > saved.on_hand
            || saved.reserved != reserved_units
            || saved.reservations.len() != placed
            || reserved_events != placed as i64
            || orders_placed != placed as i64;
        println!(
            "{}",
            serde_json::json!({
                "bench": "hot-product-outcome",
                "orders": options.orders,
                "units": units,
                "placed": placed,
                "out_of_stock": out_of_stock.load(Ordering::Relaxed),
                "failed": options.orders
                    - placed
                    - out_of_stock.load(Ordering::Relaxed),
                "placed_per_sec": round(placed as f64 / run.seconds()),
                "units_received": received,
                "units_reserved": reserved_units,
                "reservation_events": reserved_events,
                "orders_placed_events": orders_placed,
                "saved_state_equals_replay": saved == replayed,
                "oversold": oversold,
            })
        );
        if oversold || saved != replayed {
            bail!("the hot product's stock is inconsistent (see the line above)");
        }

        // The bench's own connections are closed first: pgbench's clients need their slots.
        pool.close().await;
        if options.pgbench {
            // 16 clients, as every pgbench baseline in docs/performance.md.
            let baseline = PlaceOrdersBench {
                concurrency: 16,
                ..as_place_orders
            };
            let tps = pgbench(&target, baseline.concurrency, baseline.pgbench_seconds).await?;
            println!(
                "{}",
                serde_json::json!({
                    "bench": "pgbench-read-aggregate-append-event",
                    "clients": baseline.concurrency,
                    "seconds": options.pgbench_seconds,
                    "tps": round(tps),
                    "hot_orders_vs_pgbench": round(run.commands_per_sec() / tps),
                })
            );
        }
        Ok(())
    })
    .await
}
