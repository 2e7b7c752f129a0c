//! The projection runtime and the read models, through the real runtime against real Postgres.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use projections::maintenance;
use projections::read_models;
use projections::{LogPosition, Projection, Runtime, RuntimeSettings};
use shopfront::app::{grant, App};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::helpers::{customer, eventually, open_shop, spawn_app, wait_for_projections, TestDb};
use crate::personal_data::receipt_for;
use shopfront::testing;

#[tokio::test]
async fn the_orders_read_model_follows_an_order_through_its_life() {
    let app = spawn_app().await;
    let shop = open_shop(&app.app).await;
    let product = shop.product(&app.app, "BEANS", 890_00, 10).await;
    let (customer_id, ctx) = customer();
    let order_id = shop
        .place(&app.app, &ctx, &[(product, 2)])
        .await
        .expect("placed");
    let receipt_id = testing::submit_receipt(&app.app, &ctx, receipt_for(order_id, customer_id))
        .await
        .expect("receipt");
    app.app
        .verify_receipt(
            &shop.access::<grant::ReviewReceipts>(&app.app).await,
            receipt_id,
        )
        .await
        .expect("verified");
    app.app
        .fulfil_order(
            &shop.access::<grant::FulfilOrders>(&app.app).await,
            order_id,
        )
        .await
        .expect("fulfilled");
    app.wait_for_projections().await;

    let (status, total, currency, receipt_status, paid, fulfilled, lines): (String, i64, String, String, bool, bool, i32) =
        sqlx::query_as(
            "select status, total_minor, currency, receipt_status, paid_at is not null, fulfilled_at is not null, line_count
               from orders where order_id = $1",
        )
        .bind(order_id.0)
        .fetch_one(&app.db.pool)
        .await
        .expect("order row");
    assert_eq!(
        (
            status.as_str(),
            total,
            currency.as_str(),
            receipt_status.as_str(),
            paid,
            fulfilled,
            lines
        ),
        ("FULFILLED", 2 * 890_00, "RUB", "VERIFIED", true, true, 1)
    );

    let timeline: Vec<(String, String, Option<uuid::Uuid>, String, String)> = sqlx::query_as(
        "select event_type, status_after, actor_id, actor_role, channel from order_timeline
          where order_id = $1 order by global_position",
    )
    .bind(order_id.0)
    .fetch_all(&app.db.pool)
    .await
    .expect("timeline");
    let customer_row = |event: &str, status: &str| {
        (
            event.to_owned(),
            status.to_owned(),
            Some(customer_id.0),
            "CUSTOMER".to_owned(),
            "telegram".to_owned(),
        )
    };
    let owner_row = |event: &str, status: &str| {
        (
            event.to_owned(),
            status.to_owned(),
            Some(shop.owner_id.0),
            "OWNER".to_owned(),
            "api".to_owned(),
        )
    };
    assert_eq!(
        timeline,
        vec![
            customer_row("OrderPlaced", "AWAITING_PAYMENT"),
            customer_row("PaymentReceiptSubmitted", "AWAITING_PAYMENT"),
            customer_row("OrderReceiptSubmitted", "RECEIPT_SUBMITTED"),
            // One decision: the receipt is verified and the order paid in one commit, in that
            // order.
            owner_row("PaymentReceiptVerified", "RECEIPT_SUBMITTED"),
            owner_row("OrderPaid", "PAID"),
            owner_row("OrderFulfilled", "FULFILLED"),
        ]
    );
    app.stop().await;
}

/// movement, on-hand delta, reserved delta, reason, order, available after.
type Movement = (String, i64, i64, Option<String>, Option<uuid::Uuid>, i64);

#[tokio::test]
async fn the_stock_read_model_tracks_levels_movements_and_one_alert_per_shortage() {
    let app = spawn_app().await;
    let shop = open_shop(&app.app).await;
    let product = shop.product(&app.app, "KENYA", 100, 10).await;
    let (_customer_id, ctx) = customer();
    // 10 on hand, threshold 5: reserving 6 leaves 4 (low), then 4 more leaves 0 (out).
    let first = shop
        .place(&app.app, &ctx, &[(product, 6)])
        .await
        .expect("placed");
    app.app
        .acknowledge_stock_alert(
            &shop.access::<grant::AcknowledgeAlerts>(&app.app).await,
            product,
        )
        .await
        .expect("acknowledged");
    let second = shop
        .place(&app.app, &ctx, &[(product, 4)])
        .await
        .expect("placed");
    app.app
        .cancel_own_order(&ctx, second, None)
        .await
        .expect("cancelled");
    app.app
        .receive_stock(
            &shop.access::<grant::ManageStock>(&app.app).await,
            product,
            20,
            Some("restock".into()),
        )
        .await
        .expect("received");
    app.wait_for_projections().await;

    let level: (i64, i64, i64, String, i32) = sqlx::query_as(
        "select on_hand, reserved, available, level, effective_threshold from stock_levels where product_id = $1",
    )
    .bind(product.0)
    .fetch_one(&app.db.pool)
    .await
    .expect("level");
    assert_eq!(level, (30, 6, 24, "normal".to_owned(), 5));

    let movements: Vec<Movement> = sqlx::query_as(
        "select movement, on_hand_delta, reserved_delta, reason, order_id, available_after
           from stock_history where product_id = $1 order by global_position",
    )
    .bind(product.0)
    .fetch_all(&app.db.pool)
    .await
    .expect("history");
    assert_eq!(
        movements,
        vec![
            ("received".into(), 10, 0, None, None, 10),
            ("reserved".into(), 0, 6, None, Some(first.0), 4),
            ("reserved".into(), 0, 4, None, Some(second.0), 0),
            (
                "released".into(),
                0,
                -4,
                Some("order_cancelled".into()),
                Some(second.0),
                4
            ),
            ("received".into(), 20, 0, None, None, 24),
        ]
    );

    // One alert for the whole shortage: opened low, escalated to out, back to low, resolved.
    let alerts: Vec<(String, i64, bool, Option<uuid::Uuid>, bool)> = sqlx::query_as(
        "select level, available, acknowledged_at is not null, acknowledged_by, resolved_at is not null
           from stock_alerts where product_id = $1 order by alert_id",
    )
    .bind(product.0)
    .fetch_all(&app.db.pool)
    .await
    .expect("alerts");
    assert_eq!(
        alerts,
        vec![("low".into(), 4, true, Some(shop.owner_id.0), true)]
    );
    app.stop().await;
}

#[tokio::test]
async fn the_audit_trail_has_one_row_per_event_with_its_store_and_metadata() {
    let app = spawn_app().await;
    let shop = open_shop(&app.app).await;
    let product = shop.product(&app.app, "AUDIT", 100, 3).await;
    let (_customer_id, ctx) = customer();
    shop.place(&app.app, &ctx, &[(product, 1)])
        .await
        .expect("placed");
    app.wait_for_projections().await;

    let mismatches: i64 = sqlx::query_scalar(
        "select count(*) from events e full join audit_events a using (global_position)
          where a.global_position is null or e.global_position is null
             or a.event_type <> e.event_type or a.payload::text <> e.payload::jsonb::text
             or a.request_id <> e.metadata ->> 'request_id'
             or a.channel <> e.metadata ->> 'channel'",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("compare");
    assert_eq!(mismatches, 0, "every event has exactly its audit row");
    let by_store: Vec<(String, bool)> = sqlx::query_as(
        "select aggregate_type, bool_and(store_id = $1) from audit_events
          where aggregate_type <> 'Account' group by aggregate_type order by aggregate_type",
    )
    .bind(shop.store_id.0)
    .fetch_all(&app.db.pool)
    .await
    .expect("stores");
    assert_eq!(
        by_store,
        vec![
            ("Order".into(), true),
            ("Product".into(), true),
            ("Stock".into(), true),
            ("Store".into(), true)
        ]
    );
    let accounts_without_store: bool = sqlx::query_scalar(
        "select bool_and(store_id is null) from audit_events where aggregate_type = 'Account'",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("accounts");
    assert!(accounts_without_store);
    app.stop().await;
}

#[tokio::test]
async fn unpaid_orders_past_their_deadline_expire_through_the_process_manager() {
    let app = spawn_app().await;
    let shop = open_shop(&app.app).await;
    let product = shop.product(&app.app, "TTL", 100, 5).await;
    let (customer_id, ctx) = customer();
    let unpaid = shop
        .place(&app.app, &ctx, &[(product, 2)])
        .await
        .expect("placed");
    let under_review = shop
        .place(&app.app, &ctx, &[(product, 1)])
        .await
        .expect("placed");
    testing::submit_receipt(&app.app, &ctx, receipt_for(under_review, customer_id))
        .await
        .expect("receipt");
    app.wait_for_projections().await;

    let now = chrono::Utc::now();
    assert_eq!(
        testing::expire_due_orders(&app.app, now, 100)
            .await
            .expect("expire"),
        0,
        "nothing is due yet"
    );
    let later = now + chrono::Duration::minutes(31);
    assert_eq!(
        testing::expire_due_orders(&app.app, later, 100)
            .await
            .expect("expire"),
        1
    );

    let order = testing::load::<aggregates::order::Order>(&app.app, unpaid)
        .await
        .expect("load");
    assert_eq!(order.status, aggregates::order::OrderStatus::Expired);
    let stock = testing::load::<aggregates::stock::Stock>(&app.app, product)
        .await
        .expect("stock");
    assert_eq!(
        (stock.reserved, stock.available()),
        (1, 4),
        "the expired order's units are back"
    );
    let (placed_at, caused_by): (i64, String) = sqlx::query_as(
        "select (select global_position from events where event_type = 'OrderPlaced' and aggregate_id = $1),
                (select metadata ->> 'causation_position' from events where event_type = 'OrderExpired')",
    )
    .bind(unpaid.to_string())
    .fetch_one(&app.db.pool)
    .await
    .expect("causation");
    assert_eq!(
        caused_by,
        placed_at.to_string(),
        "the expiry names the placement as its cause"
    );

    app.wait_for_projections().await;
    assert_eq!(
        testing::expire_due_orders(&app.app, later, 100)
            .await
            .expect("expire"),
        0,
        "expired once"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_event_this_build_cannot_read_stops_the_projection_with_a_clear_status() {
    let app = spawn_app().await;
    let shop = open_shop(&app.app).await;
    app.wait_for_projections().await;
    sqlx::query(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         values ('Order', $1, 1, 'OrderTeleported', '9.0', '{}', '{}')",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .execute(&app.db.pool)
    .await
    .expect("insert");
    let pool = app.db.pool.clone();
    let failed = eventually(Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            let statuses = maintenance::status(&pool, &["orders"])
                .await
                .expect("status");
            statuses[0].status == "failed"
        }
    })
    .await;
    assert!(failed, "the orders projection stops");
    let status = &maintenance::status(&app.db.pool, &["orders"])
        .await
        .expect("status")[0];
    let error = status.last_error.as_deref().unwrap_or_default();
    assert!(error.contains("OrderTeleported version 9.0"), "{error}");
    assert_eq!(status.lag_events, 1, "the unreadable event is not skipped");
    let _ = shop;
    app.stop().await;
}

/// A runtime for all projections on its own pool, named so its connections can be found.
pub(crate) async fn start_runtime(
    db: &TestDb,
    name: &str,
    batch_size: i64,
) -> (PgPool, CancellationToken, Vec<tokio::task::JoinHandle<()>>) {
    start_runtime_of(db, name, batch_size, read_models::all(), true).await
}

/// [`start_runtime`] for the projections given, in one group or one runner each (`grouped`).
pub(crate) async fn start_runtime_of(
    db: &TestDb,
    name: &str,
    batch_size: i64,
    projections: Vec<Arc<dyn Projection>>,
    grouped: bool,
) -> (PgPool, CancellationToken, Vec<tokio::task::JoinHandle<()>>) {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect_with(
            db.url
                .parse::<sqlx::postgres::PgConnectOptions>()
                .expect("url")
                .application_name(name),
        )
        .await
        .expect("pool");
    let settings = RuntimeSettings {
        batch_size,
        standby_interval: Duration::from_millis(100),
        instance_name: name.into(),
        grouped,
        ..RuntimeSettings::default()
    };
    let stop = CancellationToken::new();
    let tasks = Runtime::new(pool.clone(), projections, settings).spawn(stop.clone());
    (pool, stop, tasks)
}

/// A projection that applies like `inner`, except that its batch number `blocks_in` (from 0)
/// applies and then never ends: `entered` tells the test it is there, with the batch's writes
/// made and not committed. A batch in flight for as long as the test wants.
pub(crate) struct Blocking {
    inner: Arc<dyn Projection>,
    blocks_in: usize,
    batches: AtomicUsize,
    entered: tokio::sync::mpsc::UnboundedSender<&'static str>,
}

impl Blocking {
    pub(crate) fn new(
        inner: Arc<dyn Projection>,
        blocks_in: usize,
        entered: tokio::sync::mpsc::UnboundedSender<&'static str>,
    ) -> Self {
        Self {
            inner,
            blocks_in,
            batches: AtomicUsize::new(0),
            entered,
        }
    }
}

#[async_trait::async_trait]
impl Projection for Blocking {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn tables(&self) -> &'static [&'static str] {
        self.inner.tables()
    }

    async fn apply_batch(
        &self,
        conn: &mut sqlx::PgConnection,
        events: &[projections::Envelope],
    ) -> Result<(), projections::ProjectionError> {
        self.inner.apply_batch(conn, events).await?;
        if self.batches.fetch_add(1, Ordering::SeqCst) == self.blocks_in {
            let _ = self.entered.send(self.inner.name());
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

/// Kills an instance as a crash would: its tasks end mid-flight and its connections drop.
pub(crate) async fn crash(
    db: &TestDb,
    name: &str,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) {
    for task in &tasks {
        task.abort();
    }
    stop.cancel();
    sqlx::query(
        "select pg_terminate_backend(pid) from pg_stat_activity
          where datname = current_database() and application_name = $1",
    )
    .bind(name)
    .execute(&db.pool)
    .await
    .expect("terminate");
}

pub(crate) async fn workload(app: &App, orders: usize) {
    let shop = open_shop(app).await;
    let a = shop.product(app, "A", 100, 1_000).await;
    let b = shop.product(app, "B", 250, 1_000).await;
    for n in 0..orders {
        let (customer_id, ctx) = customer();
        let order_id = shop
            .place(app, &ctx, &[(a, 1), (b, 1 + (n % 3) as i64)])
            .await
            .expect("placed");
        match n % 4 {
            0 => {
                app.cancel_own_order(&ctx, order_id, None)
                    .await
                    .expect("cancel")
                    .outcome
            }
            1 => {
                let receipt =
                    testing::submit_receipt(app, &ctx, receipt_for(order_id, customer_id))
                        .await
                        .expect("receipt");
                app.verify_receipt(&shop.access::<grant::ReviewReceipts>(app).await, receipt)
                    .await
                    .expect("verify");
                app.fulfil_order(&shop.access::<grant::FulfilOrders>(app).await, order_id)
                    .await
                    .expect("fulfil");
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_standby_runtime_takes_over_when_the_leader_dies() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    let (_pool_a, stop_a, tasks_a) = start_runtime(&db, "runtime-a", 500).await;
    workload(&app, 4).await;
    wait_for_projections(&db.pool).await;
    let (_pool_b, stop_b, tasks_b) = start_runtime(&db, "runtime-b", 500).await;
    let leaders = maintenance::status(&db.pool, &read_models::names())
        .await
        .expect("status");
    assert!(
        leaders
            .iter()
            .all(|s| s.leader.as_deref() == Some("runtime-a")),
        "{leaders:?}"
    );

    crash(&db, "runtime-a", stop_a, tasks_a).await;
    workload(&app, 4).await;
    wait_for_projections(&db.pool).await;
    let leaders = maintenance::status(&db.pool, &read_models::names())
        .await
        .expect("status");
    assert!(
        leaders
            .iter()
            .all(|s| s.leader.as_deref() == Some("runtime-b")),
        "{leaders:?}"
    );
    for projection in read_models::all() {
        let report = maintenance::verify(&db.pool, &*projection)
            .await
            .expect("verify");
        assert!(report.matches(), "{report:?}");
    }
    stop_b.cancel();
    for task in tasks_b {
        task.await.expect("runtime b stops");
    }
}

#[tokio::test]
async fn a_runtime_killed_mid_batch_resumes_to_the_tables_of_a_fresh_rebuild() {
    killed_mid_batch(false).await;
}

#[tokio::test]
async fn a_grouped_runtime_killed_mid_batch_resumes_to_the_tables_of_a_fresh_rebuild() {
    killed_mid_batch(true).await;
}

/// Every projection commits two batches (of 7 each; grouped, 7 then 14, as a group doubles its
/// batch through a backlog), then applies its third and is killed before that batch commits.
/// One runner each: a batch in flight in each of them when the runtime dies. Grouped: the
/// group's third batch in flight, with the first projection's writes made (the others wait
/// behind it in the same transaction).
async fn killed_mid_batch(grouped: bool) {
    const BATCH: i64 = 7;
    const COMMITTED: usize = 2;
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    workload(&app, 60).await;

    let (entered, mut inside) = tokio::sync::mpsc::unbounded_channel();
    let blocking: Vec<Arc<dyn Projection>> = read_models::all()
        .into_iter()
        .map(|inner| Arc::new(Blocking::new(inner, COMMITTED, entered.clone())) as _)
        .collect();
    let (_pool, stop, tasks) = start_runtime_of(&db, "crashing", BATCH, blocking, grouped).await;
    let in_flight_wanted = if grouped {
        1
    } else {
        read_models::names().len()
    };
    let mut in_flight = std::collections::BTreeSet::new();
    while in_flight.len() < in_flight_wanted {
        let name = tokio::time::timeout(Duration::from_secs(20), inside.recv())
            .await
            .expect("every projection reaches its third batch")
            .expect("channel");
        in_flight.insert(name);
    }
    crash(&db, "crashing", stop, tasks).await;

    // In the log's order, (transaction_id, global_position): every checkpoint is right after
    // the second batch, before the end of the log; nothing of the third batch survived.
    let log: Vec<LogPosition> = sqlx::query_as::<_, (i64, i64)>(
        "select transaction_id::text::bigint, global_position from events
          order by transaction_id, global_position",
    )
    .fetch_all(&db.pool)
    .await
    .expect("log")
    .into_iter()
    .map(|(transaction_id, global_position)| LogPosition {
        transaction_id,
        global_position,
    })
    .collect();
    // A group working through a backlog doubles its batch after each full one: 7, then 14.
    let committed = if grouped {
        BATCH + 2 * BATCH
    } else {
        COMMITTED as i64 * BATCH
    };
    let after_two_batches = log[committed as usize - 1];
    assert!(after_two_batches < log[log.len() - 1]);
    let checkpoints: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "select name, transaction_id, global_position, events_applied from projection_checkpoints
          where name = any($1) order by name",
    )
    .bind(read_models::names())
    .fetch_all(&db.pool)
    .await
    .expect("checkpoints");
    assert_eq!(checkpoints.len(), read_models::names().len());
    for (name, transaction_id, global_position, applied) in checkpoints {
        let at = LogPosition {
            transaction_id,
            global_position,
        };
        assert_eq!((at, applied), (after_two_batches, committed), "{name}");
    }

    let (_pool, stop, tasks) = start_runtime(&db, "restarted", 500).await;
    wait_for_projections(&db.pool).await;
    for projection in read_models::all() {
        let report = maintenance::verify(&db.pool, &*projection)
            .await
            .expect("verify");
        assert!(report.matches(), "{report:?}");
        assert!(report.tables.iter().any(|t| t.live_rows > 0), "{report:?}");
    }
    stop.cancel();
    for task in tasks {
        task.await.expect("runtime stops");
    }
}

#[tokio::test]
async fn a_rebuild_swaps_in_identical_tables_while_queries_keep_working() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    workload(&app, 20).await;
    let (_pool, stop, tasks) = start_runtime(&db, "live", 500).await;
    wait_for_projections(&db.pool).await;
    let checksum = "select md5(string_agg(o::text, ',' order by order_id)) from orders o";
    let before: String = sqlx::query_scalar(checksum)
        .fetch_one(&db.pool)
        .await
        .expect("checksum");
    let index_names = "select string_agg(indexname, ',' order by indexname) from pg_indexes
                        where schemaname = 'public' and tablename in ('orders', 'stock_alerts', 'audit_events')";
    let indexes_before: String = sqlx::query_scalar(index_names)
        .fetch_one(&db.pool)
        .await
        .expect("indexes");

    let reader = {
        let pool = db.pool.clone();
        let done = CancellationToken::new();
        let finished = done.clone();
        let handle = tokio::spawn(async move {
            let mut reads = 0u32;
            while !finished.is_cancelled() {
                let count: i64 = sqlx::query_scalar("select count(*) from orders")
                    .fetch_one(&pool)
                    .await
                    .expect("orders stay readable during the rebuild");
                assert_eq!(count, 20);
                reads += 1;
                tokio::task::yield_now().await;
            }
            reads
        });
        (done, handle)
    };
    for projection in read_models::all() {
        let report = maintenance::rebuild(&db.pool, &*projection, &|_, _| {})
            .await
            .expect("rebuild");
        assert!(report.events > 0);
    }
    reader.0.cancel();
    assert!(reader.1.await.expect("reader") > 0);

    let after: String = sqlx::query_scalar(checksum)
        .fetch_one(&db.pool)
        .await
        .expect("checksum");
    let indexes_after: String = sqlx::query_scalar(index_names)
        .fetch_one(&db.pool)
        .await
        .expect("indexes");
    assert_eq!(
        indexes_before, indexes_after,
        "rebuilt tables keep their index names"
    );
    assert!(indexes_after.contains("stock_alerts_one_open_per_product"));
    assert_eq!(before, after);
    // The live runtime carries on from the rebuilt checkpoint.
    workload(&app, 2).await;
    wait_for_projections(&db.pool).await;
    let orders: i64 = sqlx::query_scalar("select count(*) from orders")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(orders, 22);
    for projection in read_models::all() {
        assert!(maintenance::verify(&db.pool, &*projection)
            .await
            .expect("verify")
            .matches());
    }
    stop.cancel();
    for task in tasks {
        task.await.expect("runtime stops");
    }
}

#[tokio::test]
async fn analytics_roll_up_orders_revenue_customers_and_inventory_per_store_and_currency() {
    use projections::read_models::kpis::queries;

    let app = spawn_app().await;
    let shop = open_shop(&app.app).await;
    let beans = shop.product(&app.app, "BEANS", 500_00, 50).await;
    let cups = shop.product(&app.app, "CUPS", 100_00, 50).await;
    let idle = shop.product(&app.app, "IDLE", 100_00, 5).await;
    let (alice, alice_ctx) = customer();
    let (bob, bob_ctx) = customer();
    // Alice: two paid orders; Bob: one paid, one cancelled, one left unpaid.
    let mut paid = Vec::new();
    for (who, ctx, lines) in [
        (alice, &alice_ctx, vec![(beans, 2)]),
        (alice, &alice_ctx, vec![(beans, 1), (cups, 3)]),
        (bob, &bob_ctx, vec![(cups, 1)]),
    ] {
        let order_id = shop.place(&app.app, ctx, &lines).await.expect("placed");
        let receipt = testing::submit_receipt(&app.app, ctx, receipt_for(order_id, who))
            .await
            .expect("receipt");
        app.app
            .verify_receipt(
                &shop.access::<grant::ReviewReceipts>(&app.app).await,
                receipt,
            )
            .await
            .expect("verified");
        paid.push(order_id);
    }
    let cancelled = shop
        .place(&app.app, &bob_ctx, &[(beans, 1)])
        .await
        .expect("placed");
    app.app
        .cancel_own_order(&bob_ctx, cancelled, None)
        .await
        .expect("cancelled");
    shop.place(&app.app, &bob_ctx, &[(cups, 2)])
        .await
        .expect("placed");

    // A second store in another currency, compared side by side and never summed with RUB.
    let other = testing::open_store(
        &app.app,
        shopfront::app::NewStore {
            owner_id: shop.owner_id,
            name: aggregates::store::StoreName::parse("Euro shop").expect("name"),
            currency: "EUR".parse().expect("EUR"),
            timezone: aggregates::store::TimeZone::parse("Europe/Berlin").expect("zone"),
            payment_instructions: "IBAN DE00".into(),
            default_low_stock_threshold: 1,
            reservation_ttl_minutes: 30,
        },
    )
    .await
    .expect("second store");
    app.wait_for_projections().await;

    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Moscow)
        .date_naive();
    let range = (
        today - chrono::Duration::days(1),
        today + chrono::Duration::days(1),
    );
    let dashboard = queries::dashboard(&app.db.pool, shop.store_id.0, range.0, range.1)
        .await
        .expect("dashboard")
        .expect("known store");
    let revenue = 2 * 500_00 + (500_00 + 3 * 100_00) + 100_00;
    assert_eq!(
        (
            dashboard.currency.as_str(),
            dashboard.orders_placed,
            dashboard.orders_paid,
            dashboard.revenue_minor
        ),
        ("RUB", 5, 3, revenue)
    );
    assert_eq!(dashboard.average_order_value_minor, revenue / 3);
    assert!((dashboard.conversion - 0.6).abs() < 1e-9);
    assert_eq!(
        (
            dashboard.orders_cancelled,
            dashboard.orders_expired,
            dashboard.receipts_verified
        ),
        (1, 0, 3)
    );
    assert!(dashboard
        .receipt_verification_p50_seconds
        .is_some_and(|s| s >= 0.0));
    assert_eq!(
        dashboard.orders_by_status,
        vec![
            ("AWAITING_PAYMENT".into(), 1),
            ("CANCELLED".into(), 1),
            ("PAID".into(), 3)
        ]
    );
    assert_eq!(
        dashboard
            .top_products
            .iter()
            .map(|p| (p.product_id, p.units_sold))
            .collect::<Vec<_>>(),
        vec![(cups.0, 4), (beans.0, 3)]
    );

    let by_month = queries::revenue(
        &app.db.pool,
        shop.store_id.0,
        queries::Period::Month,
        range.0,
        range.1,
    )
    .await
    .expect("revenue");
    assert_eq!(
        by_month.iter().map(|r| r.revenue_minor).sum::<i128>(),
        revenue
    );
    assert!(by_month
        .iter()
        .all(|r| r.currency == "RUB" && r.period_start.format("%d").to_string() == "01"));

    let compared =
        queries::compare_stores(&app.db.pool, &[shop.store_id.0, other.0], range.0, range.1)
            .await
            .expect("compare");
    assert_eq!(
        compared
            .iter()
            .map(|c| (c.currency.as_str(), c.revenue_minor))
            .collect::<Vec<_>>(),
        vec![("EUR", 0), ("RUB", revenue)]
    );

    let now = chrono::Utc::now();
    let customers = projections::read_models::customers::queries::summary(
        &app.db.pool,
        shop.store_id.0,
        now - chrono::Duration::hours(1),
        now + chrono::Duration::hours(1),
    )
    .await
    .expect("customers");
    assert_eq!(customers.len(), 1);
    assert_eq!((customers[0].customers, customers[0].new_customers), (2, 2));
    assert_eq!(customers[0].lifetime_value_minor, revenue);

    let inventory = queries::inventory(&app.db.pool, shop.store_id.0, range.0, range.1, 30)
        .await
        .expect("inventory");
    let idle_row = inventory
        .iter()
        .find(|r| r.product_id == idle.0)
        .expect("idle product");
    assert!(idle_row.dead_stock && idle_row.units_sold == 0 && idle_row.days_of_cover.is_none());
    let cups_row = inventory
        .iter()
        .find(|r| r.product_id == cups.0)
        .expect("cups");
    assert_eq!((cups_row.units_sold, cups_row.dead_stock), (4, false));
    assert!(cups_row.days_of_cover.is_some());
    app.stop().await;
}

#[tokio::test]
async fn the_runtime_survives_its_database_connections_being_cut() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    let (_pool, stop, tasks) = start_runtime(&db, "resilient", 500).await;
    workload(&app, 3).await;
    wait_for_projections(&db.pool).await;

    // What a Postgres restart does to clients: every connection of the runtime is cut — the
    // group's (which holds every projection's lock) and the listener's at least.
    let cut: i64 = sqlx::query_scalar(
        "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity
          where datname = current_database() and application_name = 'resilient') t",
    )
    .fetch_one(&db.pool)
    .await
    .expect("terminate");
    assert!(
        cut >= 2,
        "the leader's and the listener's connections were cut ({cut})"
    );

    workload(&app, 3).await;
    wait_for_projections(&db.pool).await;
    let statuses = maintenance::status(&db.pool, &read_models::names())
        .await
        .expect("status");
    assert!(
        statuses
            .iter()
            .all(|s| s.leader.as_deref() == Some("resilient") && s.lag_events == 0),
        "{statuses:?}"
    );
    for projection in read_models::all() {
        assert!(maintenance::verify(&db.pool, &*projection)
            .await
            .expect("verify")
            .matches());
    }
    stop.cancel();
    for task in tasks {
        task.await.expect("runtime stops");
    }
}

#[tokio::test]
async fn rollups_sum_the_largest_orders_the_api_accepts_exactly() {
    use aggregates::order::{MAX_LINES, MAX_LINE_QUANTITY};
    use aggregates::product::MAX_PRICE_MINOR;
    use projections::read_models::kpis::queries;

    // The largest order placement accepts: MAX_LINES lines of MAX_LINE_QUANTITY units at the
    // highest price a product may have, 10^18 minor units. Ten of them paid is 10^19, past
    // i64::MAX (about 9.2 * 10^18): a bigint rollup cannot hold it.
    const PAID: i128 = 11;
    let order = MAX_LINES as i128 * i128::from(MAX_LINE_QUANTITY) * i128::from(MAX_PRICE_MINOR);
    let line = i128::from(MAX_LINE_QUANTITY) * i128::from(MAX_PRICE_MINOR);
    assert_eq!(order, 10_i128.pow(18));

    let app = spawn_app().await;
    // Staff who log in over HTTP, to read the same sums through the API.
    let admin = app.staff("admin@example.com", true).await;
    let owner = app.staff("owner@example.com", false).await;
    let store = app.open_store(&admin, &owner, "Gold").await;
    let shop = crate::helpers::Shop::of(
        &owner,
        aggregates::StoreId(store.parse().expect("store id")),
    );
    let mut products = Vec::with_capacity(MAX_LINES);
    for n in 0..MAX_LINES {
        let units = (PAID as i64 + 1) * MAX_LINE_QUANTITY;
        products.push(
            shop.product(&app.app, &format!("GOLD-{n}"), MAX_PRICE_MINOR, units)
                .await,
        );
    }
    let largest: Vec<_> = products.iter().map(|&p| (p, MAX_LINE_QUANTITY)).collect();
    let (alice, alice_ctx) = customer();
    let (bob, bob_ctx) = customer();
    // Alice pays ten orders (her lifetime value alone is past i64::MAX), Bob pays one and
    // leaves one unpaid.
    let mut placed = 0;
    for (who, ctx, pays) in [(alice, &alice_ctx, 10), (bob, &bob_ctx, 1)] {
        for _ in 0..pays {
            let order_id = shop
                .place(&app.app, ctx, &largest)
                .await
                .expect("the largest order is accepted");
            let receipt = testing::submit_receipt(&app.app, ctx, receipt_for(order_id, who))
                .await
                .expect("receipt");
            app.app
                .verify_receipt(
                    &shop.access::<grant::ReviewReceipts>(&app.app).await,
                    receipt,
                )
                .await
                .expect("verified");
            placed += 1;
        }
    }
    shop.place(&app.app, &bob_ctx, &largest)
        .await
        .expect("placed");
    placed += 1;
    app.wait_for_projections().await;

    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Moscow)
        .date_naive();
    let range = (
        today - chrono::Duration::days(1),
        today + chrono::Duration::days(1),
    );
    let dashboard = queries::dashboard(&app.db.pool, shop.store_id.0, range.0, range.1)
        .await
        .expect("dashboard")
        .expect("known store");
    assert_eq!(
        (
            dashboard.orders_placed,
            dashboard.orders_paid,
            dashboard.revenue_minor,
            dashboard.average_order_value_minor
        ),
        (placed, PAID as i64, PAID * order, order)
    );
    assert_eq!(dashboard.top_products.len(), 10);
    for product in &dashboard.top_products {
        assert_eq!(
            (product.units_sold, product.revenue_minor),
            (PAID as i64 * MAX_LINE_QUANTITY, PAID * line)
        );
    }
    let by_day = queries::revenue(
        &app.db.pool,
        shop.store_id.0,
        queries::Period::Day,
        range.0,
        range.1,
    )
    .await
    .expect("revenue");
    assert_eq!(
        by_day.iter().map(|r| r.revenue_minor).sum::<i128>(),
        PAID * order
    );
    let compared = queries::compare_stores(&app.db.pool, &[shop.store_id.0], range.0, range.1)
        .await
        .expect("compare");
    assert_eq!(compared[0].revenue_minor, PAID * order);
    let now = chrono::Utc::now();
    let customers = projections::read_models::customers::queries::summary(
        &app.db.pool,
        shop.store_id.0,
        now - chrono::Duration::hours(1),
        now + chrono::Duration::hours(1),
    )
    .await
    .expect("customers");
    assert_eq!(
        (
            customers[0].customers,
            customers[0].lifetime_value_minor,
            customers[0].average_lifetime_value_minor
        ),
        (2, PAID * order, PAID * order / 2)
    );

    // The rows themselves, read as text: exact, whatever their column type.
    let placed_minor: String =
        sqlx::query_scalar("select sum(placed_minor)::text from kpi_daily where store_id = $1")
            .bind(shop.store_id.0)
            .fetch_one(&app.db.pool)
            .await
            .expect("kpi_daily");
    assert_eq!(placed_minor, (i128::from(placed) * order).to_string());
    let lifetime: Vec<(uuid::Uuid, String)> = sqlx::query_as(
        "select customer_id, revenue_minor::text from customers where store_id = $1 order by revenue_minor desc",
    )
    .bind(shop.store_id.0)
    .fetch_all(&app.db.pool)
    .await
    .expect("customers");
    assert_eq!(
        lifetime,
        vec![
            (alice.0, (10 * order).to_string()),
            (bob.0, order.to_string())
        ]
    );
    for name in ["kpis", "customers"] {
        let projection = read_models::by_name(name).expect("projection");
        let report = maintenance::verify(&app.db.pool, &*projection)
            .await
            .expect("verify");
        assert!(report.matches(), "{report:?}");
    }

    // The API's amounts are int64: a sum past that is refused with a clear problem, never
    // shown wrong; a sum that fits is shown exactly.
    let (status, problem) = app
        .status_of(
            reqwest::Method::GET,
            &owner.token,
            &format!("/api/v1/analytics/dashboard?store_id={store}"),
            None,
        )
        .await;
    assert_eq!(
        (status, crate::helpers::problem_slug(&problem)),
        (422, "sum-out-of-range"),
        "{problem}"
    );
    let bob_profile = app
        .get_json(
            &owner.token,
            &format!("/api/v1/stores/{store}/customers/{}", bob.0),
        )
        .await;
    assert_eq!(
        bob_profile["customer"]["lifetime_value"]["amount_minor"],
        serde_json::json!(i64::try_from(order).expect("one order fits"))
    );
    app.stop().await;
}
