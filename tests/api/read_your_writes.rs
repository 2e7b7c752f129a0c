//! Read-your-writes over HTTP (docs/adr/0006-read-your-writes.md): a command answers with the
//! view a GET of its `Location` gives, read from the read model once it has the change; when
//! the read model cannot get there in time the command answers `202` with where the view will
//! be, never a view built from the write side.

use reqwest::Method;
use serde_json::{json, Value};
use shopfront::config::ServeSettings;
use sqlx::Connection;

use crate::helpers::{expect_json, open_store_for, spawn_app, spawn_app_with, Staff, TestApp};
use crate::receipts_api::{png, upload};

/// `POST path` with `body`; the status, the `Location` header and the JSON body.
async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> (u16, String, Value) {
    let response = app.call(Method::POST, token, path, Some(body)).await;
    let status = response.status().as_u16();
    let location = location_of(&response);
    let body = expect_json(response, status, &format!("POST {path}")).await;
    (status, location, body)
}

fn location_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The order a GET shows, without the timeline only `GET /orders/{id}` carries.
async fn order_view(app: &TestApp, token: &str, order: &str) -> Value {
    let mut view = app
        .get_json(token, &format!("/api/v1/orders/{order}"))
        .await;
    view.as_object_mut().expect("an object").remove("timeline");
    view
}

async fn shop(app: &TestApp) -> (Staff, String) {
    let admin = app.staff("platform@example.com", true).await;
    let owner = app.staff("owner@example.com", false).await;
    let store = app.open_store(&admin, &owner, "Tea house").await;
    (owner, store)
}

#[tokio::test]
async fn every_command_answers_with_the_view_a_get_of_its_resource_gives() {
    let app = spawn_app().await;
    let (owner, store) = shop(&app).await;
    let token = &owner.token;

    let patched = app
        .call(
            Method::PATCH,
            token,
            &format!("/api/v1/stores/{store}"),
            Some(json!({"name": "Tea & co"})),
        )
        .await;
    let patched = expect_json(patched, 200, "PATCH store").await;
    assert_eq!(
        patched,
        app.get_json(token, &format!("/api/v1/stores/{store}"))
            .await
    );

    let (status, location, product) = post(
        &app,
        token,
        &format!("/api/v1/stores/{store}/products"),
        json!({"name": "Tea", "sku": "TEA", "price": {"amount_minor": 890_00, "currency": "RUB"},
               "initial_stock": 10, "low_stock_threshold": 3}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(product, app.get_json(token, &location).await);
    let product_id = product["product_id"].as_str().expect("product id");

    let (status, _, stock) = post(
        &app,
        token,
        &format!("/api/v1/products/{product_id}/stock/receive"),
        json!({"quantity": 5}),
    )
    .await;
    assert_eq!((status, stock["on_hand"].as_i64()), (200, Some(15)));
    assert_eq!(
        stock,
        app.get_json(token, &format!("/api/v1/products/{product_id}/stock"))
            .await
    );

    // An order: the answer is the `Order` a GET shows (not a state of the write side's own).
    let lines = json!({"lines": [{"product_id": product_id, "quantity": 2}]});
    let (status, location, order) = post(
        &app,
        token,
        &format!("/api/v1/stores/{store}/orders"),
        lines.clone(),
    )
    .await;
    assert_eq!(status, 201);
    let order_id = order["order_id"].as_str().expect("order id").to_owned();
    assert_eq!(location, format!("/api/v1/orders/{order_id}"));
    assert_eq!(order, order_view(&app, token, &order_id).await);

    // A receipt for it, then its verification: both answer with the receipt as the queue
    // shows it, the order's total and status included.
    let uploaded = upload(&app, token, &order_id, &png(1), &[]).await;
    let location = location_of(&uploaded);
    let receipt = expect_json(uploaded, 201, "upload").await;
    assert_eq!(receipt, app.get_json(token, &location).await);
    assert_eq!(receipt["order_status"], "RECEIPT_SUBMITTED");
    let receipt_id = receipt["receipt_id"].as_str().expect("receipt id");
    let (status, _, verified) = post(
        &app,
        token,
        &format!("/api/v1/receipts/{receipt_id}/verify"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(verified, app.get_json(token, &location).await);
    assert_eq!(
        (&verified["status"], &verified["order_status"]),
        (&json!("VERIFIED"), &json!("PAID"))
    );

    let (status, _, fulfilled) = post(
        &app,
        token,
        &format!("/api/v1/orders/{order_id}/fulfil"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(fulfilled, order_view(&app, token, &order_id).await);
    assert_eq!(fulfilled["status"], "FULFILLED");

    // A list read right after a command shows it: the command answered once it was there.
    let (_, _, second) = post(
        &app,
        token,
        &format!("/api/v1/stores/{store}/orders"),
        lines,
    )
    .await;
    let listed = app
        .get_json(token, &format!("/api/v1/stores/{store}/orders"))
        .await;
    assert_eq!(listed["items"][0], second, "newest first");
}

/// Holds the global log's visibility horizon: while this transaction (which has an id) stays
/// open, no event committed after it began is visible to any projection.
async fn hold_the_log(app: &TestApp) -> sqlx::PgConnection {
    let mut conn = sqlx::PgConnection::connect(&app.db.url)
        .await
        .expect("connect");
    sqlx::query("begin")
        .execute(&mut conn)
        .await
        .expect("begin");
    sqlx::query("select pg_current_xact_id()")
        .execute(&mut conn)
        .await
        .expect("an id for the transaction");
    conn
}

#[tokio::test]
async fn a_command_whose_read_model_lags_answers_202_with_where_its_view_will_be() {
    let mut settings = ServeSettings::for_tests();
    settings.read_your_writes_wait_ms = 300;
    let app = spawn_app_with(settings).await;
    // Set up without commands over HTTP (their answers would wait only 300 ms too).
    let owner = app.staff("owner@example.com", false).await;
    let store = open_store_for(&app.app, owner.account_id, "Tea house").await;
    let token = &owner.token;
    app.wait_for_projections().await;

    let mut held = hold_the_log(&app).await;
    let (status, location, pending) = post(
        &app,
        token,
        &format!("/api/v1/stores/{store}/products"),
        json!({"name": "Tea", "sku": "TEA", "price": {"amount_minor": 890_00, "currency": "RUB"}}),
    )
    .await;
    // Made, but not shown: the answer says where the view will be, and nothing else.
    assert_eq!(status, 202, "{pending}");
    assert!(location.starts_with("/api/v1/products/"), "{location}");
    assert_eq!(pending["location"], json!(location));
    assert!(pending["position"].as_i64().is_some(), "{pending}");
    assert!(pending.get("name").is_none(), "{pending}");

    let product_id = location.trim_start_matches("/api/v1/products/").to_owned();
    let (status, _, pending) = post(
        &app,
        token,
        &format!("/api/v1/products/{product_id}/stock/receive"),
        json!({"quantity": 4}),
    )
    .await;
    assert_eq!(status, 202, "{pending}");
    assert_eq!(
        pending["location"],
        json!(format!("/api/v1/products/{product_id}/stock"))
    );

    // Once the log moves on, the view is there with both changes.
    sqlx::query("commit")
        .execute(&mut held)
        .await
        .expect("commit");
    app.wait_for_projections().await;
    let product = app.get_json(token, &location).await;
    assert_eq!(product["name"], "Tea");
    assert_eq!(product["stock"]["on_hand"], 4);
}

/// Two instances on one database: only one of them leads the projections, so the other learns
/// where each checkpoint stands from the leader's notifications (their positions, kept in
/// memory: docs/adr/0011-grouped-projections.md). A command on either answers with its own
/// write, never an older view, and the other instance shows it at once.
#[tokio::test]
async fn commands_on_either_of_two_instances_answer_with_their_own_write() {
    let a = spawn_app().await;
    let (owner, store) = shop(&a).await;
    let database = a.db.settings();
    let b = crate::helpers::spawn_app_on(
        a.db.another_handle().await,
        &database,
        ServeSettings::for_tests(),
    )
    .await;
    let token = &owner.token;
    let (status, product, _) = post(
        &a,
        token,
        &format!("/api/v1/stores/{store}/products"),
        json!({"name": "Tea", "sku": "TEA", "price": {"amount_minor": 890_00, "currency": "RUB"},
               "initial_stock": 100}),
    )
    .await;
    assert_eq!(status, 201);
    let product_id = product.trim_start_matches("/api/v1/products/").to_owned();

    for n in 1..=12i64 {
        let (on, other) = if n % 2 == 0 { (&a, &b) } else { (&b, &a) };
        // The stock as it stands after this receipt: an answer from before it (a stale
        // checkpoint position) would show fewer units.
        let (status, _, stock) = post(
            on,
            token,
            &format!("/api/v1/products/{product_id}/stock/receive"),
            json!({"quantity": 1}),
        )
        .await;
        assert_eq!(status, 200, "receipt {n}: {stock}");
        assert_eq!(stock["on_hand"], json!(100 + n), "receipt {n}: {stock}");
        let shown = other
            .get_json(token, &format!("/api/v1/products/{product_id}/stock"))
            .await;
        assert_eq!(
            shown["on_hand"],
            json!(100 + n),
            "receipt {n} on the other instance"
        );

        let (status, location, order) = post(
            on,
            token,
            &format!("/api/v1/stores/{store}/orders"),
            json!({"lines": [{"product_id": product_id, "quantity": 1}]}),
        )
        .await;
        assert_eq!(status, 201, "order {n}: {order}");
        assert_eq!(order["lines"][0]["quantity"], 1, "{order}");
        let id = location.trim_start_matches("/api/v1/orders/");
        assert_eq!(
            order_view(other, token, id).await,
            order,
            "order {n} on the other instance"
        );
    }
    b.stop().await;
    a.stop().await;
}
