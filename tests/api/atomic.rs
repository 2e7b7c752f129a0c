//! One decision, one transaction: a decision that changes several aggregates commits all their
//! events (and saved states, and side rows) together, or nothing — whatever fails, whoever races.

use std::sync::Arc;

use aggregates::order::OrderStatus;
use aggregates::receipt::{ReceiptError, ReceiptStatus};
use aggregates::stock::Stock;
use reqwest::Method;
use shopfront::app::{grant, App, AppError, NewProduct};

use crate::helpers::{count_events, customer, open_shop, rub, spawn_app, TestDb};
use crate::personal_data::receipt_for;
use crate::receipts_api::{png, shop_with_orders, upload};
use shopfront::testing;

/// Every row of the event store and its saved states, to compare before and after a failure.
async fn store_contents(pool: &sqlx::PgPool) -> (i64, Vec<(String, String, i64, String)>) {
    let events: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(pool)
        .await
        .expect("count events");
    let saved = sqlx::query_as(
        "select aggregate_type, aggregate_id, last_sequence, payload::text from snapshots \
         order by aggregate_type, aggregate_id",
    )
    .fetch_all(pool)
    .await
    .expect("saved states");
    (events, saved)
}

#[tokio::test]
async fn a_placement_that_fails_at_any_step_of_its_commit_leaves_nothing_behind() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    let shop = open_shop(&app).await;
    let mut products = vec![
        shop.product(&app, "A", 100_00, 10).await,
        shop.product(&app, "B", 200_00, 10).await,
        shop.product(&app, "C", 300_00, 10).await,
    ];
    products.sort();
    let (_customer_id, ctx) = customer();
    let lines: Vec<_> = products.iter().map(|p| (*p, 2)).collect();
    sqlx::query(
        "create function inject_failure() returns trigger language plpgsql as $$
         begin raise exception 'injected failure: %', tg_argv[0]; end $$",
    )
    .execute(&db.pool)
    .await
    .expect("failure function");

    // Each fault breaks the placement's one transaction at a different step: after the first
    // reservation row was written, after every reservation was written, while writing the
    // stocks' saved states, and at COMMIT itself (a deferred constraint trigger).
    let faults = [
        format!(
            "create trigger inject_failure before insert on events for each row \
             when (new.event_type = 'StockReserved' and new.aggregate_id = '{}') \
             execute function inject_failure('second reservation')",
            products[1]
        ),
        "create trigger inject_failure before insert on events for each row \
         when (new.event_type = 'OrderPlaced') execute function inject_failure('order')"
            .to_owned(),
        format!(
            "create trigger inject_failure before update on snapshots for each row \
             when (new.aggregate_id = '{}') execute function inject_failure('saved state')",
            products[2]
        ),
        "create constraint trigger inject_failure after insert on events \
         deferrable initially deferred for each row when (new.event_type = 'OrderPlaced') \
         execute function inject_failure('commit')"
            .to_owned(),
    ];
    let before = store_contents(&db.pool).await;
    for fault in &faults {
        sqlx::query(fault)
            .execute(&db.pool)
            .await
            .expect("install the fault");
        let failed = app.place_order(&ctx, shop.order(&lines)).await;
        assert!(
            matches!(failed, Err(AppError::Internal(_))),
            "{fault}: {failed:?}"
        );
        assert_eq!(
            store_contents(&db.pool).await,
            before,
            "{fault}: nothing was written"
        );
        for product in &products {
            let stock = testing::load::<aggregates::stock::Stock>(&app, product)
                .await
                .expect("load");
            assert_eq!((stock.reserved, stock.available()), (0, 10), "{fault}");
        }
        for table in ["events", "snapshots"] {
            sqlx::query(&format!("drop trigger if exists inject_failure on {table}"))
                .execute(&db.pool)
                .await
                .expect("remove the fault");
        }
    }

    // With the faults gone the same order goes through: the order and all its reservations,
    // written by one transaction.
    let order_id = app
        .place_order(&ctx, shop.order(&lines))
        .await
        .expect("placed")
        .outcome;
    let (events, transactions): (i64, i64) = sqlx::query_as(
        "select count(*), count(distinct transaction_id) from events \
         where (aggregate_type = 'Order' and aggregate_id = $1) \
            or (event_type = 'StockReserved' and payload -> 'StockReserved' ->> 'order_id' = $1)",
    )
    .bind(order_id.to_string())
    .fetch_one(&db.pool)
    .await
    .expect("the order's events");
    assert_eq!((events, transactions), (4, 1));
    for product in &products {
        let stock = testing::load::<aggregates::stock::Stock>(&app, product)
            .await
            .expect("load");
        assert_eq!(stock.reservations.get(&order_id), Some(&2));
    }
}

#[tokio::test]
async fn verify_and_reject_raced_two_hundred_times_decide_each_receipt_exactly_once() {
    let db = TestDb::new().await;
    // Two instances, so nothing in-process orders the two decisions.
    let first = Arc::new(App::new(db.pool.clone()));
    let second = Arc::new(App::new(db.pool.clone()));
    let shop = open_shop(&first).await;
    let product = shop.product(&first, "RACE", 100_00, 200).await;
    let mut receipts = Vec::new();
    for _ in 0..200 {
        let (customer_id, ctx) = customer();
        let order_id = shop
            .place(&first, &ctx, &[(product, 1)])
            .await
            .expect("placed");
        let receipt_id = testing::submit_receipt(&first, &ctx, receipt_for(order_id, customer_id))
            .await
            .expect("submitted");
        receipts.push((order_id, receipt_id));
    }

    let races: Vec<_> = receipts
        .iter()
        .map(|&(_, receipt_id)| {
            let (first, second, owner) = (first.clone(), second.clone(), shop.owner.clone());
            let store_id = shop.store_id;
            tokio::spawn(async move {
                let verify = async {
                    let access = first
                        .authorize::<grant::ReviewReceipts>(&owner, store_id)
                        .await?;
                    first.verify_receipt(&access, receipt_id).await.map(|_| ())
                };
                let reject = async {
                    let access = second
                        .authorize::<grant::ReviewReceipts>(&owner, store_id)
                        .await?;
                    second
                        .reject_receipt(&access, receipt_id, "does not match".into())
                        .await
                        .map(|_| ())
                };
                tokio::join!(verify, reject)
            })
        })
        .collect();
    let (mut verified, mut rejected) = (0, 0);
    for (race, &(order_id, receipt_id)) in races.into_iter().zip(&receipts) {
        let (verify, reject) = race.await.expect("race");
        let receipt = testing::load::<aggregates::receipt::PaymentReceipt>(&first, receipt_id)
            .await
            .expect("receipt");
        let order = testing::load::<aggregates::order::Order>(&first, order_id)
            .await
            .expect("order");
        let loser = match (&verify, &reject) {
            (Ok(()), Err(loser)) => {
                verified += 1;
                assert_eq!(receipt.status(), Some(ReceiptStatus::Verified));
                assert_eq!(
                    (order.status, order.paid_with),
                    (OrderStatus::Paid, Some(receipt_id))
                );
                loser
            }
            (Err(loser), Ok(())) => {
                rejected += 1;
                assert_eq!(receipt.status(), Some(ReceiptStatus::Rejected));
                assert_eq!(order.status, OrderStatus::AwaitingPayment);
                assert!(order.rejected_receipts.contains(&receipt_id));
                loser
            }
            other => panic!("receipt {receipt_id}: not exactly one decision: {other:?}"),
        };
        assert!(
            matches!(
                loser,
                AppError::Receipt(ReceiptError::AlreadyDecided { .. })
            ),
            "the loser is told the receipt was decided: {loser:?}"
        );
    }
    assert_eq!(verified + rejected, 200);
    assert_eq!(
        count_events(&db.pool, "PaymentReceiptVerified").await
            + count_events(&db.pool, "PaymentReceiptRejected").await,
        200
    );
    assert_eq!(count_events(&db.pool, "OrderPaid").await, verified);
    assert_eq!(
        count_events(&db.pool, "OrderReceiptRejected").await,
        rejected
    );
}

#[tokio::test]
async fn over_http_racing_staff_never_leave_an_order_paid_by_a_rejected_receipt() {
    let app = spawn_app().await;
    let admin = app.staff("platform@example.com", true).await;
    let owner = app.staff("owner@example.com", false).await;
    let admin_staff = app.staff("manager@example.com", false).await;
    let (store, orders) = shop_with_orders(&app, &admin, &owner, 40).await;
    app.post_json(
        &owner.token,
        &format!("/api/v1/stores/{store}/staff"),
        serde_json::json!({"email": "manager@example.com", "role": "ADMIN"}),
        200,
    )
    .await;
    let mut receipts = Vec::new();
    for (n, order) in orders.iter().enumerate() {
        let uploaded = upload(&app, &owner.token, order, &png(n as u8), &[]).await;
        let body = crate::helpers::expect_json(uploaded, 201, "upload").await;
        receipts.push(body["receipt_id"].as_str().expect("id").to_owned());
    }

    let app = Arc::new(app);
    let races: Vec<_> = receipts
        .iter()
        .map(|receipt| {
            let (app, receipt) = (app.clone(), receipt.clone());
            let (owner, manager) = (owner.token.clone(), admin_staff.token.clone());
            tokio::spawn(async move {
                let (verify, reject) = (
                    format!("/api/v1/receipts/{receipt}/verify"),
                    format!("/api/v1/receipts/{receipt}/reject"),
                );
                let verify = app.status_of(Method::POST, &owner, &verify, None);
                let reject = app.status_of(
                    Method::POST,
                    &manager,
                    &reject,
                    Some(serde_json::json!({"reason": "amount does not match"})),
                );
                tokio::join!(verify, reject)
            })
        })
        .collect();
    for (race, (order, receipt)) in races.into_iter().zip(orders.iter().zip(&receipts)) {
        let ((verify, verify_body), (reject, reject_body)) = race.await.expect("race");
        let winner = match (verify, reject) {
            (200, 409) => "VERIFIED",
            (409, 200) => "REJECTED",
            other => panic!("{receipt}: {other:?} {verify_body} {reject_body}"),
        };
        let loser_body = if winner == "VERIFIED" {
            &reject_body
        } else {
            &verify_body
        };
        assert_eq!(
            crate::helpers::problem_slug(loser_body),
            "receipt-already-decided"
        );
        app.wait_for_projections().await;
        let shown = app
            .get_json(&owner.token, &format!("/api/v1/receipts/{receipt}"))
            .await;
        assert_eq!(shown["status"], winner);
        let order = app
            .get_json(&owner.token, &format!("/api/v1/orders/{order}"))
            .await;
        let paid = order["status"] == "PAID";
        assert_eq!(paid, winner == "VERIFIED", "{order}");
    }
}

#[tokio::test]
async fn cancelling_an_order_under_review_voids_its_receipt_in_the_same_commit() {
    let service = spawn_app().await;
    let app = &*service.app;
    let shop = open_shop(app).await;
    let product = shop.product(app, "VOID", 100_00, 5).await;
    let (customer_id, ctx) = customer();
    let order_id = shop
        .place(app, &ctx, &[(product, 2)])
        .await
        .expect("placed");
    let receipt_id = testing::submit_receipt(app, &ctx, receipt_for(order_id, customer_id))
        .await
        .expect("submitted");

    app.cancel_own_order(&ctx, order_id, None)
        .await
        .expect("cancelled");

    let receipt = testing::load::<aggregates::receipt::PaymentReceipt>(app, receipt_id)
        .await
        .expect("load");
    assert_eq!(receipt.status(), Some(ReceiptStatus::Voided));
    let stock = testing::load::<aggregates::stock::Stock>(app, product)
        .await
        .expect("load");
    assert_eq!((stock.reserved, stock.available()), (0, 5));
    let transactions: i64 = sqlx::query_scalar(
        "select count(distinct transaction_id) from events \
         where event_type in ('OrderCancelled', 'StockReservationReleased', 'PaymentReceiptVoided')",
    )
    .fetch_one(&service.db.pool)
    .await
    .expect("transactions");
    assert_eq!(transactions, 1);
    // The voided receipt can no longer be decided, and it has left the verification queue.
    let late = app
        .verify_receipt(&shop.access::<grant::ReviewReceipts>(app).await, receipt_id)
        .await;
    assert!(matches!(
        late,
        Err(AppError::Receipt(ReceiptError::AlreadyDecided {
            status: ReceiptStatus::Voided
        }))
    ));
    service.wait_for_projections().await;
    let (status, reason): (String, Option<String>) =
        sqlx::query_as("select status, void_reason from receipts where receipt_id = $1")
            .bind(receipt_id.0)
            .fetch_one(&service.db.pool)
            .await
            .expect("receipt row");
    assert_eq!(
        (status.as_str(), reason.as_deref()),
        ("VOIDED", Some("order_cancelled"))
    );
    let waiting: i64 =
        sqlx::query_scalar("select count(*) from receipts where status = 'SUBMITTED'")
            .fetch_one(&service.db.pool)
            .await
            .expect("queue");
    assert_eq!(waiting, 0);
    service.stop().await;
}

#[tokio::test]
async fn a_product_is_created_with_its_stock_threshold_and_sku_in_one_commit_or_not_at_all() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    let shop = open_shop(&app).await;
    let new_product = |sku: &str, initial_stock| NewProduct {
        name: format!("Product {sku}"),
        description: String::new(),
        sku: aggregates::product::Sku::parse(sku).expect("sku"),
        price: aggregates::Money::new(500_00, rub()),
        initial_stock,
        low_stock_threshold: Some(3),
    };
    let product_id = app
        .create_product(
            &shop.access::<grant::ManageProducts>(&app).await,
            new_product("MUG", Some(12)),
        )
        .await
        .expect("created")
        .outcome;
    let transactions: i64 = sqlx::query_scalar(
        "select count(distinct transaction_id) from events where aggregate_id = $1",
    )
    .bind(product_id.to_string())
    .fetch_one(&db.pool)
    .await
    .expect("transactions");
    assert_eq!(transactions, 1);
    let stock = testing::load::<aggregates::stock::Stock>(&app, product_id)
        .await
        .expect("load");
    assert_eq!((stock.on_hand, stock.effective_threshold()), (12, 3));

    // The sku is taken (case-insensitively): refused, and nothing of the second product exists.
    let before: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    let taken = app
        .create_product(
            &shop.access::<grant::ManageProducts>(&app).await,
            new_product(" mug ", Some(5)),
        )
        .await;
    assert!(matches!(taken, Err(AppError::SkuTaken(_))), "{taken:?}");
    let after: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(after, before);
    // An invalid initial quantity refuses the whole product, sku claim included.
    let invalid = app
        .create_product(
            &shop.access::<grant::ManageProducts>(&app).await,
            new_product("BOWL", Some(0)),
        )
        .await;
    assert!(matches!(invalid, Err(AppError::Stock(_))), "{invalid:?}");
    app.create_product(
        &shop.access::<grant::ManageProducts>(&app).await,
        new_product("BOWL", None),
    )
    .await
    .expect("the sku was never claimed");
}

#[tokio::test]
async fn a_saved_state_that_cannot_be_read_is_rebuilt_in_place_never_duplicated() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    let shop = open_shop(&app).await;
    let product = shop.product(&app, "SHAPE", 100_00, 10).await;
    let (_customer_id, ctx) = customer();
    shop.place(&app, &ctx, &[(product, 4)])
        .await
        .expect("placed");
    // A saved state this build cannot read (as after a field was added without a default).
    sqlx::query(
        "update snapshots set payload = '{\"shape\": \"from another build\"}'::json \
         where aggregate_type = 'Stock' and aggregate_id = $1",
    )
    .bind(product.to_string())
    .execute(&db.pool)
    .await
    .expect("corrupt the saved state");

    let stock = testing::load::<aggregates::stock::Stock>(&app, product)
        .await
        .expect("load");
    assert_eq!((stock.on_hand, stock.reserved), (10, 4));
    app.receive_stock(
        &shop.access::<grant::ManageStock>(&app).await,
        product,
        1,
        None,
    )
    .await
    .expect("commands work on the rebuilt state");

    let rows: Vec<(i64, serde_json::Value)> = sqlx::query_as(
        "select last_sequence, payload::jsonb from snapshots \
         where aggregate_type = 'Stock' and aggregate_id = $1",
    )
    .bind(product.to_string())
    .fetch_all(&db.pool)
    .await
    .expect("saved states");
    assert_eq!(rows.len(), 1, "one row per aggregate");
    let events: i64 = sqlx::query_scalar(
        "select count(*) from events where aggregate_type = 'Stock' and aggregate_id = $1",
    )
    .bind(product.to_string())
    .fetch_one(&db.pool)
    .await
    .expect("count");
    assert_eq!(rows[0].0, events);
    let saved: Stock = serde_json::from_value(rows[0].1.clone()).expect("readable again");
    assert_eq!(
        saved,
        testing::replay::<Stock>(&app, product)
            .await
            .expect("replay")
    );
    assert_eq!(saved.on_hand, 11);
}
