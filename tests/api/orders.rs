use std::sync::Arc;

use aggregates::order::OrderStatus;
use aggregates::stock::StockError;
use chrono::{Duration, Utc};
use shopfront::app::{grant, App, AppError};

use crate::helpers::{count_events, customer, open_shop, TestDb};
use shopfront::testing;

#[tokio::test]
async fn placing_an_order_reserves_stock_and_fixes_the_total() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    let shop = open_shop(&app).await;
    let beans = shop.product(&app, "BEANS", 890_00, 10).await;
    let filters = shop.product(&app, "FILTERS", 350_00, 10).await;
    let (_customer_id, ctx) = customer();

    let order_id = app
        .place_order(&ctx, shop.order(&[(beans, 3), (filters, 1)]))
        .await
        .expect("order placed")
        .outcome;

    let order = testing::load::<aggregates::order::Order>(&app, order_id)
        .await
        .expect("load order");
    assert_eq!(order.status, OrderStatus::AwaitingPayment);
    assert_eq!(order.total_minor, 3 * 890_00 + 350_00);
    assert_eq!(order.lines[0].line_total_minor, 3 * 890_00);
    let due = order.payment_due_by.expect("deadline") - Utc::now();
    assert!(due > Duration::minutes(29) && due <= Duration::minutes(30));
    let stock = testing::load::<aggregates::stock::Stock>(&app, beans)
        .await
        .expect("load stock");
    assert_eq!(
        (stock.on_hand, stock.reserved, stock.available()),
        (10, 3, 7)
    );
    assert_eq!(stock.reservations.get(&order_id), Some(&3));
}

#[tokio::test]
async fn a_thousand_concurrent_orders_for_a_hundred_units_on_two_instances_reserve_exactly_a_hundred(
) {
    let db = TestDb::new().await;
    // Two application instances on one database: each queues its own placements on its own
    // in-process locks, so only the database's optimistic concurrency keeps them apart.
    let instances = [
        Arc::new(App::new(db.pool.clone())),
        Arc::new(App::new(db.pool.clone())),
    ];
    let app = &instances[0];
    let shop = open_shop(app).await;
    let product = shop.product(app, "HOT", 100_00, 100).await;
    let events_before: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&db.pool)
        .await
        .expect("count");

    let attempts: Vec<_> = (0..1000)
        .map(|n| {
            let app = instances[n % 2].clone();
            let order = shop.order(&[(product, 1)]);
            tokio::spawn(async move { app.place_order(&customer().1, order).await })
        })
        .collect();
    let mut placed = Vec::new();
    let mut out_of_stock = 0;
    for attempt in attempts {
        match attempt.await.expect("task") {
            Ok(order) => placed.push(order.outcome),
            Err(AppError::Stock(StockError::OutOfStock {
                requested: 1,
                available: 0,
            })) => out_of_stock += 1,
            Err(other) => panic!("unexpected refusal: {other:?}"),
        }
    }
    assert_eq!(placed.len(), 100);
    assert_eq!(out_of_stock, 900);

    let stock = testing::load::<aggregates::stock::Stock>(app, product)
        .await
        .expect("load stock");
    assert_eq!(
        (stock.on_hand, stock.reserved, stock.available()),
        (100, 100, 0)
    );
    for order_id in &placed {
        assert_eq!(
            stock.reservations.get(order_id),
            Some(&1),
            "order {order_id} holds one unit"
        );
    }
    // Exactly the accepted events, nothing lost and nothing extra.
    assert_eq!(count_events(&db.pool, "OrderPlaced").await, 100);
    assert_eq!(count_events(&db.pool, "StockReserved").await, 100);
    assert_eq!(count_events(&db.pool, "StockDepleted").await, 1);
    assert_eq!(count_events(&db.pool, "StockLevelLow").await, 1);
    let events_after: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(events_after - events_before, 100 + 100 + 2);
    let sequences: i64 = sqlx::query_scalar(
        "select max(sequence) from events where aggregate_type = 'Stock' and aggregate_id = $1",
    )
    .bind(product.to_string())
    .fetch_one(&db.pool)
    .await
    .expect("max sequence");
    let stock_events: i64 = sqlx::query_scalar(
        "select count(*) from events where aggregate_type = 'Stock' and aggregate_id = $1",
    )
    .bind(product.to_string())
    .fetch_one(&db.pool)
    .await
    .expect("count");
    assert_eq!(sequences, stock_events, "the stock's sequence has no gaps");
}

#[tokio::test]
async fn an_order_refused_on_one_line_reserves_nothing() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    let shop = open_shop(&app).await;
    let plenty = shop.product(&app, "PLENTY", 100, 10).await;
    let scarce = shop.product(&app, "SCARCE", 100, 1).await;
    let (_customer_id, ctx) = customer();

    let refused = app
        .place_order(&ctx, shop.order(&[(plenty, 2), (scarce, 2)]))
        .await;
    assert!(matches!(
        refused,
        Err(AppError::Stock(StockError::OutOfStock {
            requested: 2,
            available: 1
        }))
    ));
    for (product, units) in [(plenty, 10), (scarce, 1)] {
        let stock = testing::load::<aggregates::stock::Stock>(&app, product)
            .await
            .expect("load");
        assert_eq!((stock.reserved, stock.available()), (0, units));
    }
    // One decision: the refusal on the scarce line means nothing at all was written, not a
    // reservation made and then released.
    assert_eq!(count_events(&db.pool, "OrderPlaced").await, 0);
    assert_eq!(count_events(&db.pool, "StockReserved").await, 0);
    assert_eq!(count_events(&db.pool, "StockReservationReleased").await, 0);
}

#[tokio::test]
async fn an_invalid_order_is_refused_before_any_stock_is_touched() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    let shop = open_shop(&app).await;
    let product = shop.product(&app, "ONE", 100, 10).await;
    let (_customer_id, ctx) = customer();
    let refused = app
        .place_order(&ctx, shop.order(&[(product, 1), (product, 2)]))
        .await;
    assert!(matches!(
        refused,
        Err(AppError::Order(aggregates::order::OrderError::DuplicateProduct(p))) if p == product
    ));
    assert_eq!(count_events(&db.pool, "StockReserved").await, 0);
}

#[tokio::test]
async fn cancelling_and_expiring_release_stock_and_fulfilling_commits_it() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    let shop = open_shop(&app).await;
    let product = shop.product(&app, "CYCLE", 100, 10).await;
    let (customer_id, ctx) = customer();
    let place = |n| shop.order(&[(product, n)]);

    let cancelled = app
        .place_order(&ctx, place(1))
        .await
        .expect("placed")
        .outcome;
    let expired = app
        .place_order(&ctx, place(2))
        .await
        .expect("placed")
        .outcome;
    let shipped = app
        .place_order(&ctx, place(3))
        .await
        .expect("placed")
        .outcome;
    async fn stock(app: &App, product: aggregates::ProductId) -> (i64, i64) {
        let s = testing::load::<aggregates::stock::Stock>(app, product)
            .await
            .expect("load");
        (s.on_hand, s.reserved)
    }
    assert_eq!(stock(&app, product).await, (10, 6));

    app.cancel_own_order(&ctx, cancelled, None)
        .await
        .expect("cancelled");
    assert_eq!(stock(&app, product).await, (10, 5));

    let too_early = testing::expire_order(&app, expired, Utc::now()).await;
    assert!(matches!(
        too_early,
        Err(AppError::Order(
            aggregates::order::OrderError::NotYetDue { .. }
        ))
    ));
    testing::expire_order(&app, expired, Utc::now() + Duration::minutes(31))
        .await
        .expect("expired");
    assert_eq!(stock(&app, product).await, (10, 3));

    let receipt = testing::submit_receipt(
        &app,
        &ctx,
        crate::personal_data::receipt_for(shipped, customer_id),
    )
    .await
    .expect("receipt submitted");
    app.verify_receipt(&shop.access::<grant::ReviewReceipts>(&app).await, receipt)
        .await
        .expect("verified");
    app.fulfil_order(&shop.access::<grant::FulfilOrders>(&app).await, shipped)
        .await
        .expect("fulfilled");
    assert_eq!(stock(&app, product).await, (7, 0));
    app.complete_order(&shop.access::<grant::FulfilOrders>(&app).await, shipped)
        .await
        .expect("completed");
    let order = testing::load::<aggregates::order::Order>(&app, shipped)
        .await
        .expect("load");
    assert_eq!(order.status, OrderStatus::Completed);
}

#[tokio::test]
async fn a_stock_loads_from_its_saved_state_to_the_same_state_as_a_full_replay() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    let shop = open_shop(&app).await;
    let product = shop.product(&app, "LONG", 100, 1).await;
    let (_customer_id, ctx) = customer();
    let order_id = app
        .place_order(&ctx, shop.order(&[(product, 1)]))
        .await
        .expect("placed")
        .outcome;
    for _ in 0..250 {
        app.receive_stock(
            &shop.access::<grant::ManageStock>(&app).await,
            product,
            1,
            None,
        )
        .await
        .expect("receive");
    }
    let (saved_at, events): (i64, i64) = sqlx::query_as(
        "select (select last_sequence from snapshots where aggregate_type = 'Stock' and aggregate_id = $1),
                (select count(*) from events where aggregate_type = 'Stock' and aggregate_id = $1)",
    )
    .bind(product.to_string())
    .fetch_one(&db.pool)
    .await
    .expect("saved state");
    assert_eq!(
        saved_at, events,
        "the saved state is as new as the last event"
    );

    let from_saved_state = testing::load::<aggregates::stock::Stock>(&app, product)
        .await
        .expect("load");
    let from_events = testing::replay::<aggregates::stock::Stock>(&app, product)
        .await
        .expect("replay");
    assert_eq!(from_saved_state, from_events);
    assert_eq!((from_events.on_hand, from_events.reserved), (251, 1));
    assert_eq!(from_events.reservations.get(&order_id), Some(&1));
}

#[tokio::test]
async fn a_stock_whose_saved_state_is_lost_is_repaired_from_its_events() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    let shop = open_shop(&app).await;
    let product = shop.product(&app, "RESTORED", 100, 10).await;
    let (_customer_id, ctx) = customer();
    let order_id = shop
        .place(&app, &ctx, &[(product, 3)])
        .await
        .expect("placed");
    // Events restored without the snapshots table: loads replay the events, so the state is
    // right before any repair, and the start-up repair writes the saved state back once.
    sqlx::query("delete from snapshots where aggregate_type = 'Stock'")
        .execute(&db.pool)
        .await
        .expect("lose saved states");
    let replayed = testing::load::<aggregates::stock::Stock>(&app, product)
        .await
        .expect("load");
    assert_eq!((replayed.on_hand, replayed.reserved), (10, 3));

    assert_eq!(
        testing::repair_saved_states::<aggregates::stock::Stock>(&app)
            .await
            .expect("repair"),
        1
    );
    assert_eq!(
        testing::repair_saved_states::<aggregates::stock::Stock>(&app)
            .await
            .expect("repair"),
        0,
        "idempotent"
    );
    let stock = testing::load::<aggregates::stock::Stock>(&app, product)
        .await
        .expect("load");
    assert_eq!((stock.on_hand, stock.reserved), (10, 3));
    assert_eq!(stock.reservations.get(&order_id), Some(&3));
    app.receive_stock(
        &shop.access::<grant::ManageStock>(&app).await,
        product,
        1,
        None,
    )
    .await
    .expect("commands work again");
    assert_eq!(
        testing::load::<aggregates::stock::Stock>(&app, product)
            .await
            .expect("load")
            .on_hand,
        11
    );
}

#[tokio::test]
async fn a_store_loads_from_its_saved_state_and_is_repaired_when_it_is_lost() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    let shop = open_shop(&app).await;
    let staff = shop.access::<grant::ManageStaff>(&app).await;
    for n in 0..30 {
        let vendor =
            testing::register_account(&app, Some(&format!("vendor{n}@example.com")), None, false)
                .await
                .expect("register");
        app.assign_staff_role(&staff, vendor, aggregates::StoreRole::Vendor)
            .await
            .expect("assign");
        block_a_customer(&app, &shop).await;
    }
    let id = shop.store_id.to_string();
    let from_events = testing::replay::<aggregates::store::Store>(&app, &id)
        .await
        .expect("replay");
    assert_eq!(
        testing::load::<aggregates::store::Store>(&app, &id)
            .await
            .expect("load"),
        from_events
    );
    assert_eq!(
        (from_events.staff.len(), from_events.blocked_customers.len()),
        (31, 30)
    );

    // Events restored without the snapshots table: repaired once, then commands work.
    sqlx::query("delete from snapshots where aggregate_type = 'Store'")
        .execute(&db.pool)
        .await
        .expect("lose saved states");
    assert_eq!(
        testing::repair_saved_states::<aggregates::store::Store>(&app)
            .await
            .expect("repair"),
        1
    );
    assert_eq!(
        testing::load::<aggregates::store::Store>(&app, &id)
            .await
            .expect("load"),
        from_events
    );
    // Commands work again.
    block_a_customer(&app, &shop).await;
}

/// The store of `shop` blocks a new customer (one more Store event).
async fn block_a_customer(app: &App, shop: &crate::helpers::Shop) {
    app.set_customer_blocked(
        &shop.access::<grant::ManageCustomers>(app).await,
        customer().0,
        true,
        Some("spam".into()),
    )
    .await
    .expect("block");
}
