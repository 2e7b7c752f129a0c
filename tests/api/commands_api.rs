//! Commands over HTTP end to end: retried commands with an `Idempotency-Key` record once, staff
//! changes in bulk report each item and never escalate, and a paid order is fulfilled and
//! completed with its stock committed.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{count_events, expect_json, problem_slug, spawn_app, Staff, TestApp};
use crate::receipts_api::{multipart, png, upload};

/// A store owned by `owner` with one product of `units` units; returns (store, product).
async fn shop(app: &TestApp, owner: &Staff, units: i64) -> (String, String) {
    let admin = app.staff("platform@example.com", true).await;
    let store = app.open_store(&admin, owner, "Tea house").await;
    let product = app
        .post_json(
            &owner.token,
            &format!("/api/v1/stores/{store}/products"),
            json!({"name": "Tea", "sku": "TEA", "price": {"amount_minor": 890_00, "currency": "RUB"},
                   "initial_stock": units}),
            201,
        )
        .await["product_id"]
        .as_str()
        .expect("product")
        .to_owned();
    (store, product)
}

/// POSTs `body` (JSON, or multipart when `content_type` is given) with an `Idempotency-Key`.
async fn post_with_key(
    app: &TestApp,
    token: &str,
    path: &str,
    key: &str,
    body: Vec<u8>,
    content_type: &str,
) -> reqwest::Response {
    app.client
        .post(format!("{}{path}", app.address))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("post")
}

/// `bytes` with every `from` replaced by `to`.
fn replace_bytes(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fn replayed(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

#[tokio::test]
async fn a_retried_order_and_upload_replay_the_first_answer_and_record_once() {
    let app = spawn_app().await;
    let owner = app.staff("owner@example.com", false).await;
    let (store, tea) = shop(&app, &owner, 5).await;
    let orders = format!("/api/v1/stores/{store}/orders");
    let body =
        serde_json::to_vec(&json!({"lines": [{"product_id": tea, "quantity": 2}]})).expect("json");

    let first = post_with_key(
        &app,
        &owner.token,
        &orders,
        "order-1",
        body.clone(),
        "application/json",
    )
    .await;
    assert!(!replayed(&first));
    let first = expect_json(first, 201, "place").await;
    let retry = post_with_key(
        &app,
        &owner.token,
        &orders,
        "order-1",
        body,
        "application/json",
    )
    .await;
    assert!(replayed(&retry), "the retry is a replay");
    let retry = expect_json(retry, 201, "retry").await;
    assert_eq!(retry, first, "the same order, not a second one");
    assert_eq!(count_events(&app.db.pool, "OrderPlaced").await, 1);
    app.wait_for_projections().await;
    let stock = app
        .get_json(&owner.token, &format!("/api/v1/products/{tea}/stock"))
        .await;
    assert_eq!(stock["available"], 3, "reserved once: {stock}");

    // The same for an upload, even when the retry frames the form with another boundary (as a
    // client that builds the form again does).
    let order_id = first["order_id"].as_str().expect("order");
    let path = format!("/api/v1/orders/{order_id}/receipts");
    let (content_type, upload) = multipart(&png(7), &[]);
    let first = post_with_key(
        &app,
        &owner.token,
        &path,
        "upload-1",
        upload.clone(),
        &content_type,
    )
    .await;
    let first = expect_json(first, 201, "upload").await;
    let reframed = replace_bytes(
        &upload,
        b"shopfront-test-boundary-7f3a",
        b"another-boundary-91c2",
    );
    let reframed_type =
        content_type.replace("shopfront-test-boundary-7f3a", "another-boundary-91c2");
    assert_ne!(reframed, upload);
    let retry = post_with_key(
        &app,
        &owner.token,
        &path,
        "upload-1",
        reframed,
        &reframed_type,
    )
    .await;
    assert!(replayed(&retry));
    let retry = expect_json(retry, 201, "upload retry").await;
    assert_eq!(retry["receipt_id"], first["receipt_id"]);
    assert_eq!(
        count_events(&app.db.pool, "PaymentReceiptSubmitted").await,
        1
    );

    // The same key with another body is the client's mistake, and nothing runs.
    let other =
        serde_json::to_vec(&json!({"lines": [{"product_id": tea, "quantity": 1}]})).expect("json");
    let reused = post_with_key(
        &app,
        &owner.token,
        &orders,
        "order-1",
        other,
        "application/json",
    )
    .await;
    let problem = expect_json(reused, 422, "key reused").await;
    assert_eq!(problem_slug(&problem), "idempotency-key-reused");
    assert_eq!(count_events(&app.db.pool, "OrderPlaced").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn staff_changes_in_bulk_report_each_one_and_never_escalate() {
    let app = spawn_app().await;
    let owner = app.staff("owner@example.com", false).await;
    let (store, _) = shop(&app, &owner, 1).await;
    let manager = app.staff("manager@example.com", false).await;
    let clerk = app.staff("clerk@example.com", false).await;
    let climber = app.staff("climber@example.com", false).await;
    let staff = format!("/api/v1/stores/{store}/staff");

    // The owner names an admin by e-mail.
    let assigned = app
        .post_json(
            &owner.token,
            &staff,
            json!({"email": "MANAGER@example.com", "role": "ADMIN"}),
            200,
        )
        .await;
    assert_eq!(assigned["account_id"], manager.account_id.0.to_string());
    assert_eq!(assigned["role"], "ADMIN");

    // The admin's bulk request: a vendor is fine; an owner, or touching the owner, is not.
    let bulk = app
        .post_json(
            &manager.token,
            &format!("{staff}/bulk"),
            json!({"changes": [
                {"account_id": clerk.account_id.0, "role": "VENDOR"},
                {"account_id": climber.account_id.0, "role": "OWNER"},
                {"account_id": owner.account_id.0},
                {"account_id": uuid::Uuid::now_v7(), "role": "VENDOR"},
            ]}),
            200,
        )
        .await;
    assert_eq!(bulk["succeeded"], 1, "{bulk}");
    assert_eq!(bulk["failed"], 3);
    let results = bulk["results"].as_array().expect("results");
    let outcome: Vec<(bool, &str)> = results
        .iter()
        .map(|r| (r["ok"] == true, problem_slug(&r["problem"])))
        .collect();
    assert_eq!(outcome[0], (true, ""));
    assert_eq!(outcome[1], (false, "forbidden"));
    assert_eq!(outcome[2], (false, "forbidden"));
    assert!(!outcome[3].0);
    assert_eq!(results[0]["id"], clerk.account_id.0.to_string());

    app.wait_for_projections().await;
    let listed = app.get_json(&owner.token, &staff).await;
    let mut roles: Vec<(String, String)> = listed
        .as_array()
        .expect("staff")
        .iter()
        .map(|s| {
            (
                s["email"].as_str().unwrap_or_default().to_owned(),
                s["role"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    roles.sort();
    assert_eq!(
        roles,
        [
            ("clerk@example.com".to_owned(), "VENDOR".to_owned()),
            ("manager@example.com".to_owned(), "ADMIN".to_owned()),
            ("owner@example.com".to_owned(), "OWNER".to_owned()),
        ]
    );

    // The clerk, a vendor, may change no one.
    let (code, _) = {
        let response = app
            .call(
                Method::POST,
                &clerk.token,
                &format!("{staff}/bulk"),
                Some(json!({"changes": [{"account_id": climber.account_id.0, "role": "VENDOR"}]})),
            )
            .await;
        let code = response.status().as_u16();
        (code, response.text().await.unwrap_or_default())
    };
    assert_eq!(code, 403);
    app.stop().await;
}

#[tokio::test]
async fn a_paid_order_is_fulfilled_and_completed_and_its_stock_leaves_the_shelf() {
    let app = spawn_app().await;
    let owner = app.staff("owner@example.com", false).await;
    let (store, tea) = shop(&app, &owner, 5).await;
    let placed = app
        .post_json(
            &owner.token,
            &format!("/api/v1/stores/{store}/orders"),
            json!({"lines": [{"product_id": tea, "quantity": 2}]}),
            201,
        )
        .await;
    let order = placed["order_id"].as_str().expect("order").to_owned();

    // Straight after the 201, the order can be read (the query waits for its projection).
    let read = app
        .get_json(&owner.token, &format!("/api/v1/orders/{order}"))
        .await;
    assert_eq!(read["status"], "AWAITING_PAYMENT");

    let uploaded = upload(&app, &owner.token, &order, &png(3), &[("amount", "178000")]).await;
    let receipt = expect_json(uploaded, 201, "upload").await;
    let receipt_id = receipt["receipt_id"].as_str().expect("receipt");
    let shown = app
        .get_json(&owner.token, &format!("/api/v1/receipts/{receipt_id}"))
        .await;
    assert_eq!(shown["status"], "SUBMITTED", "{shown}");
    app.post_json(
        &owner.token,
        &format!("/api/v1/receipts/{receipt_id}/verify"),
        json!({}),
        200,
    )
    .await;

    let fulfilled = app
        .post_json(
            &owner.token,
            &format!("/api/v1/orders/{order}/fulfil"),
            json!({}),
            200,
        )
        .await;
    assert_eq!(fulfilled["status"], "FULFILLED");
    let completed = app
        .post_json(
            &owner.token,
            &format!("/api/v1/orders/{order}/complete"),
            json!({}),
            200,
        )
        .await;
    assert_eq!(completed["status"], "COMPLETED");
    let late = app
        .post_json(
            &owner.token,
            &format!("/api/v1/orders/{order}/cancel"),
            json!({}),
            409,
        )
        .await;
    assert_eq!(problem_slug(&late), "order-invalid-transition");

    app.wait_for_projections().await;
    let stock = app
        .get_json(&owner.token, &format!("/api/v1/products/{tea}/stock"))
        .await;
    assert_eq!(
        (&stock["on_hand"], &stock["reserved"], &stock["available"]),
        (&json!(3), &json!(0), &json!(3)),
        "{stock}"
    );
    let detail = app
        .get_json(&owner.token, &format!("/api/v1/orders/{order}"))
        .await;
    let timeline: Vec<&str> = detail["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter_map(|e: &Value| e["event_type"].as_str())
        .collect();
    assert_eq!(timeline.first(), Some(&"OrderPlaced"));
    assert_eq!(
        &timeline[timeline.len() - 2..],
        ["OrderFulfilled", "OrderCompleted"]
    );
    assert!(timeline.contains(&"OrderPaid"), "{timeline:?}");
    assert!(detail["completed_at"].is_string());
    app.stop().await;
}
