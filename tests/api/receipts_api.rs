//! Receipt uploads over HTTP (bounded, sniffed, content-addressed, duplicate-flagged), the
//! verification queue, verify / reject one by one and in bulk, and the file download.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{expect_json, problem_slug, spawn_app, Staff, TestApp};

/// A tiny PNG (its signature is what content sniffing looks at).
pub fn png(seed: u8) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0".to_vec();
    bytes.extend_from_slice(&[seed; 32]);
    bytes
}

/// A multipart/form-data body with a `file` part and optional text fields.
pub fn multipart(file: &[u8], fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    let boundary = "shopfront-test-boundary-7f3a";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"receipt.bin\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Uploads `file` for an order as `token`; returns the response.
pub async fn upload(
    app: &TestApp,
    token: &str,
    order_id: &str,
    file: &[u8],
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let (content_type, body) = multipart(file, fields);
    app.client
        .post(format!("{}/api/v1/orders/{order_id}/receipts", app.address))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("upload")
}

/// A store run by `owner` with one product, and `n` orders of 1 unit each (890.00 RUB).
pub async fn shop_with_orders(
    app: &TestApp,
    admin: &Staff,
    owner: &Staff,
    n: usize,
) -> (String, Vec<String>) {
    let store = app.open_store(admin, owner, "Tea house").await;
    let product = app
        .post_json(
            &owner.token,
            &format!("/api/v1/stores/{store}/products"),
            json!({"name": "Tea", "sku": "TEA", "price": {"amount_minor": 890_00, "currency": "RUB"}, "initial_stock": 100}),
            201,
        )
        .await["product_id"]
        .as_str()
        .expect("product")
        .to_owned();
    let mut orders = Vec::new();
    for _ in 0..n {
        let order = app
            .post_json(
                &owner.token,
                &format!("/api/v1/stores/{store}/orders"),
                json!({"lines": [{"product_id": product, "quantity": 1}]}),
                201,
            )
            .await;
        orders.push(order["order_id"].as_str().expect("order").to_owned());
    }
    (store, orders)
}

#[tokio::test]
async fn receipts_are_uploaded_sniffed_flagged_and_decided() {
    let app = spawn_app().await;
    let admin = app.staff("platform@example.com", true).await;
    let owner = app.staff("owner@example.com", false).await;
    let rival = app.staff("rival@example.com", false).await;
    let (store, orders) = shop_with_orders(&app, &admin, &owner, 4).await;

    // Only images and PDFs, judged by content: a text file named anything is refused.
    let refused = upload(
        &app,
        &owner.token,
        &orders[0],
        b"just some text, not a receipt",
        &[],
    )
    .await;
    let problem = expect_json(refused, 415, "text upload").await;
    assert_eq!(problem_slug(&problem), "unsupported-media-type");
    // An amount in another currency is refused by the receipt's rules.
    let wrong = upload(
        &app,
        &owner.token,
        &orders[0],
        &png(1),
        &[("amount", "100"), ("currency", "USD")],
    )
    .await;
    assert_eq!(
        problem_slug(&expect_json(wrong, 422, "usd").await),
        "receipt-currency-mismatch"
    );

    let first = upload(
        &app,
        &owner.token,
        &orders[0],
        &png(1),
        &[("amount", "89000")],
    )
    .await;
    let first = expect_json(first, 201, "first upload").await;
    assert_eq!(first["status"], "SUBMITTED");
    assert_eq!(first["media_type"], "image/png");
    assert_eq!(
        first["claimed_amount"],
        json!({"amount_minor": 890_00, "currency": "RUB"})
    );
    assert_eq!(first["possible_duplicate"], false);
    let first_id = first["receipt_id"].as_str().expect("id").to_owned();

    // A second receipt for the same order is refused while the first is under review.
    let again = upload(&app, &owner.token, &orders[0], &png(2), &[]).await;
    assert_eq!(
        expect_json(again, 409, "second receipt").await["status"],
        409
    );

    // The same file for another order is flagged to the verifier.
    app.wait_for_projections().await;
    let reused = upload(&app, &owner.token, &orders[1], &png(1), &[]).await;
    let reused = expect_json(reused, 201, "reused file").await;
    assert_eq!(reused["possible_duplicate"], true);
    assert_eq!(reused["duplicate_of"], json!([first_id]));
    assert_eq!(reused["sha256"], first["sha256"]);
    let reused_id = reused["receipt_id"].as_str().expect("id").to_owned();
    let third = expect_json(
        upload(&app, &owner.token, &orders[2], &png(3), &[]).await,
        201,
        "third",
    )
    .await;
    let third_id = third["receipt_id"].as_str().expect("id").to_owned();

    // The queue: oldest first, with the order totals; the duplicate filter.
    app.wait_for_projections().await;
    let queue = app
        .get_json(&owner.token, &format!("/api/v1/stores/{store}/receipts"))
        .await;
    let ids: Vec<&str> = queue["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["receipt_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [first_id.as_str(), reused_id.as_str(), third_id.as_str()]
    );
    assert_eq!(
        queue["items"][0]["order_total"],
        json!({"amount_minor": 890_00, "currency": "RUB"})
    );
    let flagged = app
        .get_json(
            &owner.token,
            &format!("/api/v1/stores/{store}/receipts?possible_duplicate=true"),
        )
        .await;
    assert_eq!(flagged["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(flagged["items"][0]["receipt_id"], reused_id.as_str());

    // The file comes back as uploaded, to staff of the store only.
    let file = app
        .call(
            Method::GET,
            &owner.token,
            &format!("/api/v1/receipts/{first_id}/file"),
            None,
        )
        .await;
    assert_eq!(file.status(), 200);
    assert_eq!(file.headers()["x-receipt-media-type"], "image/png");
    assert_eq!(file.headers()["x-content-type-options"], "nosniff");
    assert!(file.headers()["content-disposition"]
        .to_str()
        .unwrap_or_default()
        .contains(".png"));
    assert_eq!(file.bytes().await.expect("bytes").to_vec(), png(1));
    let hidden = app
        .call(
            Method::GET,
            &rival.token,
            &format!("/api/v1/receipts/{first_id}/file"),
            None,
        )
        .await;
    assert_eq!(hidden.status(), 404);

    // Verify one; reject the reused one with a reason; the order pays or waits again.
    let verified = app
        .post_json(
            &owner.token,
            &format!("/api/v1/receipts/{first_id}/verify"),
            json!({}),
            200,
        )
        .await;
    assert_eq!(verified["status"], "VERIFIED");
    let twice = app
        .post_json(
            &owner.token,
            &format!("/api/v1/receipts/{first_id}/verify"),
            json!({}),
            409,
        )
        .await;
    assert_eq!(problem_slug(&twice), "receipt-already-decided");
    let no_reason = app
        .post_json(
            &owner.token,
            &format!("/api/v1/receipts/{reused_id}/reject"),
            json!({}),
            400,
        )
        .await;
    assert_eq!(no_reason["status"], 400);
    let rejected = app
        .post_json(
            &owner.token,
            &format!("/api/v1/receipts/{reused_id}/reject"),
            json!({"reason": "same screenshot as another order"}),
            200,
        )
        .await;
    assert_eq!(rejected["status"], "REJECTED");
    assert_eq!(
        rejected["rejection_reason"],
        "same screenshot as another order"
    );

    // Bulk: one good, one already decided, one of another store, one unknown.
    let rival_store = app
        .post_json(
            &admin.token,
            "/api/v1/stores",
            json!({"name": "Rival", "currency": "RUB", "timezone": "UTC", "payment_instructions": "x", "owner_id": rival.account_id.0}),
            201,
        )
        .await;
    assert!(rival_store["store_id"].is_string());
    let unknown = uuid::Uuid::now_v7().to_string();
    let bulk = app
        .post_json(
            &owner.token,
            "/api/v1/receipts/bulk",
            json!({"action": "verify", "receipt_ids": [third_id, first_id, unknown]}),
            200,
        )
        .await;
    assert_eq!(bulk["succeeded"], 1);
    assert_eq!(bulk["failed"], 2);
    assert_eq!(bulk["results"][0]["ok"], true);
    assert_eq!(
        problem_slug(&bulk["results"][1]["problem"]),
        "receipt-already-decided"
    );
    assert_eq!(
        problem_slug(&bulk["results"][2]["problem"]),
        "receipt-not-found"
    );
    let by_rival = app
        .post_json(
            &rival.token,
            "/api/v1/receipts/bulk",
            json!({"action": "reject", "receipt_ids": [reused_id], "reason": "x"}),
            200,
        )
        .await;
    assert_eq!(by_rival["failed"], 1);
    assert_eq!(
        problem_slug(&by_rival["results"][0]["problem"]),
        "receipt-not-found"
    );

    app.wait_for_projections().await;
    let paid = app
        .get_json(&owner.token, &format!("/api/v1/orders/{}", orders[0]))
        .await;
    assert_eq!(paid["status"], "PAID");
    let waiting = app
        .get_json(&owner.token, &format!("/api/v1/orders/{}", orders[1]))
        .await;
    assert_eq!(waiting["status"], "AWAITING_PAYMENT");
    assert_eq!(waiting["status_reason"], "same screenshot as another order");
    let verified_list = app
        .get_json(
            &owner.token,
            &format!("/api/v1/stores/{store}/receipts?status=verified"),
        )
        .await;
    assert_eq!(verified_list["items"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn uploads_over_the_limit_are_refused_before_they_are_stored() {
    let app = spawn_app().await;
    let admin = app.staff("platform@example.com", true).await;
    let owner = app.staff("owner@example.com", false).await;
    let (_store, orders) = shop_with_orders(&app, &admin, &owner, 1).await;

    // Within the framing allowance but over the file limit: refused by the file's size.
    let mut just_over = png(9);
    just_over.resize(10 * 1024 * 1024 + 1, 0);
    let response = upload(&app, &owner.token, &orders[0], &just_over, &[]).await;
    assert_eq!(
        problem_slug(&expect_json(response, 413, "10 MiB + 1").await),
        "payload-too-large"
    );
    let events: i64 =
        sqlx::query_scalar("select count(*) from events where aggregate_type = 'PaymentReceipt'")
            .fetch_one(&app.db.pool)
            .await
            .expect("count");
    assert_eq!(events, 0);

    // Exactly at the limit is accepted.
    let mut at_limit = png(9);
    at_limit.resize(10 * 1024 * 1024, 0);
    let response = upload(&app, &owner.token, &orders[0], &at_limit, &[]).await;
    let receipt: Value = expect_json(response, 201, "10 MiB").await;
    assert_eq!(receipt["size_bytes"], 10 * 1024 * 1024);
}
