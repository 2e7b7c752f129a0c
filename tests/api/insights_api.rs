//! What staff and auditors read over HTTP: customers (contact, lifetime value, blocking), stock
//! alerts, analytics and the audit trail. Every figure asserted here follows from the orders
//! the test places through the real server.

use aggregates::AccountId;
use chrono::Datelike;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{expect_json, problem_slug, spawn_app, Staff, TestApp};
use crate::receipts_api::{png, upload};

/// A store with one product (5 units at 890.00 RUB, alert threshold 3), two customers (Ann with
/// e-mail and Telegram id, Bob with a Telegram id only) and their orders: Ann 2 units, paid
/// (receipt verified); Bob 1 unit, awaiting payment.
struct Scene {
    owner: Staff,
    rival: Staff,
    store: String,
    rival_store: String,
    tea: String,
    ann: AccountId,
    bob: AccountId,
    ann_order: String,
    bob_order: String,
}

async fn customer(app: &TestApp, email: Option<&str>, telegram_user_id: i64) -> AccountId {
    shopfront::testing::register_account(&app.app, email, Some(telegram_user_id), false)
        .await
        .expect("register a customer")
}

async fn place(
    app: &TestApp,
    token: &str,
    store: &str,
    customer: AccountId,
    product: &str,
    n: i64,
) -> String {
    app.post_json(
        token,
        &format!("/api/v1/stores/{store}/orders"),
        json!({"customer_id": customer.0, "lines": [{"product_id": product, "quantity": n}]}),
        201,
    )
    .await["order_id"]
        .as_str()
        .expect("order id")
        .to_owned()
}

/// `customer` places an order for themselves, through the application layer.
async fn shop_as(app: &TestApp, customer: AccountId, store: &str, product: &str, n: i64) -> String {
    let caller = shopfront::testing::caller_for(customer, aggregates::Channel::Telegram);
    let order = shopfront::app::PlaceOrder {
        store_id: aggregates::StoreId(store.parse().expect("store id")),
        lines: vec![shopfront::app::OrderLineInput {
            product_id: aggregates::ProductId(product.parse().expect("product id")),
            quantity: n,
        }],
        contact: None,
    };
    app.app
        .place_order(&caller, order)
        .await
        .expect("placed")
        .outcome
        .to_string()
}

async fn scene(app: &TestApp) -> Scene {
    let admin = app.staff("platform@example.com", true).await;
    let owner = app.staff("owner@example.com", false).await;
    let rival = app.staff("rival@example.com", false).await;
    let store = app.open_store(&admin, &owner, "Tea house").await;
    let rival_store = app.open_store(&admin, &rival, "Rival").await;
    let tea = app
        .post_json(
            &owner.token,
            &format!("/api/v1/stores/{store}/products"),
            json!({"name": "Tea", "sku": "TEA", "price": {"amount_minor": 890_00, "currency": "RUB"},
                   "initial_stock": 5}),
            201,
        )
        .await["product_id"]
        .as_str()
        .expect("product")
        .to_owned();
    let threshold = app
        .call(
            Method::PUT,
            &owner.token,
            &format!("/api/v1/products/{tea}/stock/threshold"),
            Some(json!({"threshold": 3})),
        )
        .await;
    expect_json(threshold, 200, "threshold").await;
    let ann = customer(app, Some("ann@example.com"), 5001).await;
    let bob = customer(app, None, 5002).await;
    // Customers shop for themselves first (as through the bot); staff may then place orders
    // on behalf of customers their store knows.
    let ann_order = shop_as(app, ann, &store, &tea, 2).await;
    let bob_order = shop_as(app, bob, &store, &tea, 1).await;
    let receipt = expect_json(
        upload(app, &owner.token, &ann_order, &png(1), &[]).await,
        201,
        "upload",
    )
    .await;
    let receipt_id = receipt["receipt_id"].as_str().expect("receipt");
    app.post_json(
        &owner.token,
        &format!("/api/v1/receipts/{receipt_id}/verify"),
        json!({}),
        200,
    )
    .await;
    app.wait_for_projections().await;
    Scene {
        owner,
        rival,
        store,
        rival_store,
        tea,
        ann,
        bob,
        ann_order,
        bob_order,
    }
}

fn items(page: &Value) -> &Vec<Value> {
    page["items"].as_array().expect("a page has items")
}

#[tokio::test]
async fn customers_show_contact_and_lifetime_value_and_can_be_blocked() {
    let app = spawn_app().await;
    let s = scene(&app).await;
    let customers = format!("/api/v1/stores/{}/customers", s.store);

    // Most recent first: Bob ordered last. Ann's paid order is her lifetime value.
    let page = app.get_json(&s.owner.token, &customers).await;
    let listed: Vec<&str> = items(&page)
        .iter()
        .filter_map(|c| c["customer_id"].as_str())
        .collect();
    assert_eq!(listed, [s.bob.0.to_string(), s.ann.0.to_string()]);
    let ann = &items(&page)[1];
    assert_eq!(ann["orders"], 1);
    assert_eq!(ann["paid_orders"], 1);
    assert_eq!(
        ann["lifetime_value"],
        json!({"amount_minor": 1780_00, "currency": "RUB"})
    );
    assert_eq!(ann["contact"]["email"], "ann@example.com");
    assert_eq!(ann["contact"]["telegram_user_id"], 5001);
    assert_eq!(ann["contact"]["erased"], false);
    let bob = &items(&page)[0];
    assert_eq!(bob["lifetime_value"]["amount_minor"], 0);
    assert!(bob["contact"].get("email").is_none(), "{bob}");

    // Search by Telegram id; page through one at a time.
    let found = app
        .get_json(
            &s.owner.token,
            &format!("{customers}?telegram_user_id=5002"),
        )
        .await;
    assert_eq!(items(&found).len(), 1);
    assert_eq!(items(&found)[0]["customer_id"], s.bob.0.to_string());
    let first = app
        .get_json(&s.owner.token, &format!("{customers}?limit=1"))
        .await;
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let second = app
        .get_json(
            &s.owner.token,
            &format!("{customers}?limit=1&cursor={cursor}"),
        )
        .await;
    assert_eq!(items(&second)[0]["customer_id"], s.ann.0.to_string());
    assert!(second["next_cursor"].is_null(), "{second}");
    let (code, problem) = app
        .status_of(
            Method::GET,
            &s.owner.token,
            &format!("{customers}?cursor=nonsense"),
            None,
        )
        .await;
    assert_eq!((code, problem_slug(&problem)), (400, "invalid-cursor"));

    // The profile lists the customer's orders in this store.
    let profile = app
        .get_json(&s.owner.token, &format!("{customers}/{}", s.ann.0))
        .await;
    assert_eq!(profile["customer"]["contact"]["email"], "ann@example.com");
    assert_eq!(
        profile["recent_orders"][0]["order_id"],
        s.ann_order.as_str()
    );
    assert_eq!(profile["recent_orders"][0]["status"], "PAID");
    let (code, problem) = app
        .status_of(
            Method::GET,
            &s.owner.token,
            &format!("{customers}/{}", uuid::Uuid::now_v7()),
            None,
        )
        .await;
    assert_eq!((code, problem_slug(&problem)), (404, "customer-not-found"));

    // Blocked: no new orders from Bob here; a block needs a reason; a second block is refused.
    app.post_json(
        &s.owner.token,
        &format!("{customers}/{}/block", s.bob.0),
        json!({"reason": "chargebacks"}),
        200,
    )
    .await;
    let refused = app
        .post_json(
            &s.owner.token,
            &format!("/api/v1/stores/{}/orders", s.store),
            json!({"customer_id": s.bob.0, "lines": [{"product_id": s.tea, "quantity": 1}]}),
            409,
        )
        .await;
    assert_eq!(problem_slug(&refused), "store-customer-blocked");
    let twice = app
        .post_json(
            &s.owner.token,
            &format!("{customers}/{}/block", s.bob.0),
            json!({"reason": "again"}),
            409,
        )
        .await;
    assert_eq!(problem_slug(&twice), "store-customer-already-blocked");
    app.post_json(
        &s.owner.token,
        &format!("{customers}/{}/block", s.ann.0),
        json!({"reason": ""}),
        400,
    )
    .await;
    app.wait_for_projections().await;
    let blocked = app
        .get_json(&s.owner.token, &format!("{customers}?blocked=true"))
        .await;
    assert_eq!(items(&blocked).len(), 1);
    assert_eq!(items(&blocked)[0]["customer_id"], s.bob.0.to_string());
    assert_eq!(items(&blocked)[0]["blocked_reason"], "chargebacks");

    // Bulk: each customer gets its own result; Ann was never blocked.
    let bulk = app
        .post_json(
            &s.owner.token,
            &format!("{customers}/bulk"),
            json!({"action": "unblock", "customer_ids": [s.bob.0, s.ann.0]}),
            200,
        )
        .await;
    assert_eq!(
        (bulk["succeeded"].as_u64(), bulk["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(bulk["results"][0]["ok"], true);
    assert_eq!(bulk["results"][1]["ok"], false);
    assert_eq!(
        problem_slug(&bulk["results"][1]["problem"]),
        "store-customer-not-blocked"
    );
    app.post_json(
        &s.owner.token,
        &format!("{customers}/bulk"),
        json!({"action": "block", "customer_ids": [s.ann.0]}),
        422,
    )
    .await;
    place(&app, &s.owner.token, &s.store, s.bob, &s.tea, 1).await;

    // Erased: the profile still counts the orders but the contact is gone, Telegram id too,
    // and the customer can no longer be found by it.
    let report = app
        .app
        .erase_person_from_console(s.ann)
        .await
        .expect("erase");
    assert!(report.key_deleted && report.event_recorded);
    let erased = app
        .get_json(&s.owner.token, &format!("{customers}/{}", s.ann.0))
        .await;
    assert_eq!(erased["customer"]["contact"]["erased"], true);
    assert!(erased["customer"]["contact"].get("email").is_none());
    assert!(
        erased["customer"]["contact"]
            .get("telegram_user_id")
            .is_none(),
        "{erased}"
    );
    assert_eq!(erased["customer"]["paid_orders"], 1);
    let by_telegram = app
        .get_json(
            &s.owner.token,
            &format!("{customers}?telegram_user_id=5001"),
        )
        .await;
    assert!(items(&by_telegram).is_empty(), "{by_telegram}");
    // Someone known only by their Telegram id reads as erased too.
    app.app
        .erase_person_from_console(s.bob)
        .await
        .expect("erase");
    let bob = app
        .get_json(&s.owner.token, &format!("{customers}/{}", s.bob.0))
        .await;
    assert_eq!(bob["customer"]["contact"]["erased"], true, "{bob}");
    assert!(bob["customer"]["contact"].get("telegram_user_id").is_none());

    // Another store's owner and a vendor without the permission are refused.
    let (code, _) = app
        .status_of(Method::GET, &s.rival.token, &customers, None)
        .await;
    assert_eq!(code, 403);
    let (code, _) = app
        .status_of(
            Method::POST,
            &s.rival.token,
            &format!(
                "/api/v1/stores/{}/customers/{}/block",
                s.rival_store, s.ann.0
            ),
            Some(json!({"reason": "not my customer"})),
        )
        .await;
    assert_eq!(
        code, 200,
        "a rival may block anyone in their own store only"
    );
    // Staff cannot attach a person their store does not know (and so reach their contact
    // details through the store's customer views): Ann never shopped at the rival's.
    let rival_product = app
        .post_json(
            &s.rival.token,
            &format!("/api/v1/stores/{}/products", s.rival_store),
            json!({"name": "Mate", "sku": "MATE", "price": {"amount_minor": 100_00, "currency": "RUB"},
                   "initial_stock": 5}),
            201,
        )
        .await["product_id"]
        .as_str()
        .expect("product")
        .to_owned();
    let refused = app
        .post_json(
            &s.rival.token,
            &format!("/api/v1/stores/{}/orders", s.rival_store),
            json!({"customer_id": s.ann.0, "lines": [{"product_id": rival_product, "quantity": 1}]}),
            422,
        )
        .await;
    assert_eq!(problem_slug(&refused), "customer-unknown-to-store");
    app.wait_for_projections().await;
    let (code, _) = app
        .status_of(
            Method::GET,
            &s.rival.token,
            &format!("/api/v1/stores/{}/customers/{}", s.rival_store, s.ann.0),
            None,
        )
        .await;
    assert_eq!(code, 404, "Ann is no customer of the rival's store");
    // Lists are read models: wait until they have seen every command above.
    app.wait_for_projections().await;
    let own = app
        .get_json(&s.owner.token, &format!("{customers}?blocked=true"))
        .await;
    assert!(
        items(&own).is_empty(),
        "the rival's block stays in the rival's store: {own}"
    );
    app.stop().await;
}

#[tokio::test]
async fn low_stock_raises_an_alert_that_staff_acknowledge() {
    let app = spawn_app().await;
    let s = scene(&app).await;
    let alerts = format!("/api/v1/stores/{}/alerts", s.store);

    // 5 received, 3 ordered: 2 available, under the threshold of 3.
    let open = app.get_json(&s.owner.token, &alerts).await;
    assert_eq!(items(&open).len(), 1, "{open}");
    let alert = &items(&open)[0];
    assert_eq!(alert["product_id"], s.tea.as_str());
    assert_eq!(alert["product_name"], "Tea");
    assert_eq!(alert["level"], "low");
    assert_eq!(alert["available"], 3, "Ann's order reached the threshold");
    assert_eq!(alert["available_now"], 2, "Bob's took one more");
    assert_eq!(alert["threshold"], 3);
    assert!(alert.get("acknowledged_at").is_none());
    let alert_id = alert["alert_id"].as_i64().expect("alert id");

    // Not someone else's to acknowledge.
    let (code, problem) = app
        .status_of(
            Method::POST,
            &s.rival.token,
            &format!("/api/v1/alerts/{alert_id}/acknowledge"),
            None,
        )
        .await;
    assert_eq!((code, problem_slug(&problem)), (404, "alert-not-found"));

    let acknowledged = app
        .post_json(
            &s.owner.token,
            &format!("/api/v1/alerts/{alert_id}/acknowledge"),
            json!({}),
            200,
        )
        .await;
    assert_eq!(
        acknowledged["acknowledged_by"],
        s.owner.account_id.0.to_string()
    );
    app.wait_for_projections().await;
    let unacknowledged = app
        .get_json(&s.owner.token, &format!("{alerts}?state=unacknowledged"))
        .await;
    assert!(items(&unacknowledged).is_empty(), "{unacknowledged}");

    // Restocking resolves it.
    app.post_json(
        &s.owner.token,
        &format!("/api/v1/products/{}/stock/receive", s.tea),
        json!({"quantity": 10}),
        200,
    )
    .await;
    app.wait_for_projections().await;
    let still_open = app.get_json(&s.owner.token, &alerts).await;
    assert!(items(&still_open).is_empty(), "{still_open}");
    let resolved = app
        .get_json(&s.owner.token, &format!("{alerts}?state=resolved"))
        .await;
    assert_eq!(items(&resolved)[0]["alert_id"], alert_id);
    assert!(items(&resolved)[0]["resolved_at"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn analytics_report_what_the_orders_did() {
    let app = spawn_app().await;
    let s = scene(&app).await;
    let query = format!("store_id={}", s.store);

    let dashboard = app
        .get_json(
            &s.owner.token,
            &format!("/api/v1/analytics/dashboard?{query}"),
        )
        .await;
    assert_eq!(dashboard["orders_placed"], 2, "{dashboard}");
    assert_eq!(dashboard["orders_paid"], 1);
    assert_eq!(
        dashboard["revenue"],
        json!({"amount_minor": 1780_00, "currency": "RUB"})
    );
    assert_eq!(dashboard["average_order_value"]["amount_minor"], 1780_00);
    assert_eq!(dashboard["receipts_verified"], 1);
    assert_eq!(dashboard["top_products"][0]["product_id"], s.tea.as_str());
    assert_eq!(dashboard["top_products"][0]["units_sold"], 2);

    // Days, weeks and months are the store's (Moscow's), whatever the server's clock says.
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Moscow)
        .date_naive();
    let monday = today - chrono::Duration::days(i64::from(today.weekday().num_days_from_monday()));
    for (period, start) in [("day", today), ("week", monday)] {
        let points = app
            .get_json(
                &s.owner.token,
                &format!(
                    "/api/v1/analytics/revenue?{query}&period={period}&from={today}&to={today}"
                ),
            )
            .await;
        assert_eq!(
            points,
            json!([{"period_start": start.to_string(),
                    "revenue": {"amount_minor": 1780_00, "currency": "RUB"},
                    "orders_paid": 1, "orders_placed": 2}]),
            "{period}"
        );
    }
    let revenue = app
        .get_json(
            &s.owner.token,
            &format!("/api/v1/analytics/revenue?{query}&period=month"),
        )
        .await;
    let points = revenue.as_array().expect("points");
    let total: i64 = points
        .iter()
        .filter_map(|p| p["revenue"]["amount_minor"].as_i64())
        .sum();
    assert_eq!(total, 1780_00, "{revenue}");
    let placed: i64 = points
        .iter()
        .filter_map(|p| p["orders_placed"].as_i64())
        .sum();
    assert_eq!(placed, 2);

    // One summary per currency the store sold in.
    let per_currency = app
        .get_json(
            &s.owner.token,
            &format!("/api/v1/analytics/customers?{query}"),
        )
        .await;
    assert_eq!(per_currency.as_array().map(Vec::len), Some(1));
    let customers = &per_currency[0];
    assert_eq!(customers["customers"], 2, "{customers}");
    assert_eq!(customers["new_customers"], 2);
    assert_eq!(customers["returning_customers"], 0);
    assert_eq!(customers["lifetime_value"]["amount_minor"], 1780_00);

    let inventory = app
        .get_json(
            &s.owner.token,
            &format!("/api/v1/analytics/inventory?{query}"),
        )
        .await;
    let tea = inventory
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["product_id"] == s.tea.as_str())
        .expect("the product is listed");
    assert_eq!(tea["available"], 2, "{inventory}");
    assert_eq!(tea["units_sold"], 2);
    assert_eq!(tea["dead_stock"], false);

    let stores = app
        .get_json(&s.owner.token, &format!("/api/v1/analytics/stores?{query}"))
        .await;
    let rows = stores.as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{stores}");
    assert_eq!(rows[0]["name"], "Tea house");
    assert_eq!(rows[0]["revenue"]["amount_minor"], 1780_00, "{stores}");

    // Bad ranges are the caller's mistake; another store's KPIs are not theirs to see.
    let (code, problem) = app
        .status_of(
            Method::GET,
            &s.owner.token,
            &format!("/api/v1/analytics/dashboard?{query}&from=2026-02-01&to=2026-01-01"),
            None,
        )
        .await;
    assert_eq!(
        (code, problem["field"].as_str()),
        (422, Some("from")),
        "{problem}"
    );
    let (code, _) = app
        .status_of(
            Method::GET,
            &s.rival.token,
            &format!("/api/v1/analytics/dashboard?{query}"),
            None,
        )
        .await;
    assert_eq!(code, 403);
    let (code, _) = app
        .status_of(
            Method::GET,
            &s.owner.token,
            &format!(
                "/api/v1/analytics/stores?store_id={}&store_id={}",
                s.store, s.rival_store
            ),
            None,
        )
        .await;
    assert_eq!(code, 403, "comparing with a store one does not work in");
    app.stop().await;
}

#[tokio::test]
async fn the_audit_trail_is_filtered_paged_and_names_who_did_what() {
    let app = spawn_app().await;
    let s = scene(&app).await;
    let audit = format!("/api/v1/audit/events?store_id={}", s.store);

    let placed = app
        .get_json(&s.owner.token, &format!("{audit}&event_type=OrderPlaced"))
        .await;
    let orders: Vec<&str> = items(&placed)
        .iter()
        .filter_map(|e| e["aggregate_id"].as_str())
        .collect();
    assert_eq!(orders, [s.ann_order.as_str(), s.bob_order.as_str()]);
    // Ann placed her order herself (through the bot's door); the owner verified its receipt.
    let event = &items(&placed)[0];
    assert_eq!(event["actor_id"], s.ann.0.to_string());
    assert_eq!(event["actor_role"], "CUSTOMER");
    assert_eq!(event["channel"], "telegram");
    assert_eq!(event["store_id"], s.store.as_str());
    let verified = app
        .get_json(
            &s.owner.token,
            &format!("{audit}&event_type=PaymentReceiptVerified"),
        )
        .await;
    let event = &items(&verified)[0];
    assert_eq!(event["actor_id"], s.owner.account_id.0.to_string());
    assert_eq!(event["actor_role"], "OWNER");
    assert_eq!(event["channel"], "api");
    assert_eq!(event["client_ip"], "127.0.0.1");

    // Newest first, one per page, until the trail ends; every page only this store's events.
    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    loop {
        let path = match &cursor {
            Some(c) => format!("{audit}&newest_first=true&limit=1&cursor={c}"),
            None => format!("{audit}&newest_first=true&limit=1"),
        };
        let page = app.get_json(&s.owner.token, &path).await;
        for event in items(&page) {
            assert_eq!(event["store_id"], s.store.as_str(), "{event}");
            seen.push(event["global_position"].as_i64().expect("position"));
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let all = app
        .get_json(&s.owner.token, &format!("{audit}&limit=200"))
        .await;
    let mut ascending: Vec<i64> = items(&all)
        .iter()
        .filter_map(|e| e["global_position"].as_i64())
        .collect();
    assert!(ascending.windows(2).all(|w| w[0] < w[1]), "{ascending:?}");
    ascending.reverse();
    assert_eq!(seen, ascending);

    // By aggregate: the paid order's own history.
    let history = app
        .get_json(
            &s.owner.token,
            &format!("{audit}&aggregate_id={}", s.ann_order),
        )
        .await;
    let types: Vec<&str> = items(&history)
        .iter()
        .filter_map(|e| e["event_type"].as_str())
        .collect();
    assert_eq!(types.first(), Some(&"OrderPlaced"));
    assert!(types.contains(&"OrderPaid"), "{types:?}");

    // By request, actor, aggregate type and time.
    let response = app
        .client
        .post(format!(
            "{}/api/v1/products/{}/stock/receive",
            app.address, s.tea
        ))
        .bearer_auth(&s.owner.token)
        .header("x-request-id", "audit-req-1")
        .json(&json!({"quantity": 4, "note": "delivery"}))
        .send()
        .await
        .expect("receive");
    expect_json(response, 200, "receive").await;
    app.wait_for_projections().await;
    let by_request = app
        .get_json(
            &s.owner.token,
            &format!("{audit}&client_request_id=audit-req-1"),
        )
        .await;
    let found: Vec<(&str, &str)> = items(&by_request)
        .iter()
        .map(|e| {
            (
                e["event_type"].as_str().unwrap_or_default(),
                e["client_request_id"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    // The service's own id for the same request finds the same events.
    let ours = items(&by_request)[0]["request_id"]
        .as_str()
        .expect("our id");
    assert_ne!(ours, "audit-req-1");
    let by_our_id = app
        .get_json(&s.owner.token, &format!("{audit}&request_id={ours}"))
        .await;
    assert_eq!(items(&by_our_id).len(), 2);
    // The delivery lifts the stock back over its threshold: both facts, one request.
    assert_eq!(
        found,
        [
            ("StockReceived", "audit-req-1"),
            ("StockReplenished", "audit-req-1")
        ],
        "{by_request}"
    );
    let by_actor = app
        .get_json(
            &s.owner.token,
            &format!(
                "{audit}&actor_id={}&aggregate_type=Order&limit=200",
                s.owner.account_id.0
            ),
        )
        .await;
    assert!(!items(&by_actor).is_empty());
    for event in items(&by_actor) {
        assert_eq!(
            event["actor_id"],
            s.owner.account_id.0.to_string(),
            "{event}"
        );
        assert_eq!(event["aggregate_type"], "Order", "{event}");
    }
    let future = app
        .get_json(
            &s.owner.token,
            &format!("{audit}&from=2999-01-01T00:00:00Z"),
        )
        .await;
    assert!(items(&future).is_empty(), "{future}");
    let past = app
        .get_json(&s.owner.token, &format!("{audit}&to=2000-01-01T00:00:00Z"))
        .await;
    assert!(items(&past).is_empty(), "{past}");

    let (code, _) = app
        .status_of(Method::GET, &s.rival.token, &audit, None)
        .await;
    assert_eq!(code, 403);
    let (code, _) = app
        .status_of(Method::GET, &s.owner.token, "/api/v1/audit/events", None)
        .await;
    assert_eq!(code, 400, "the store is required");
    app.stop().await;
}

#[tokio::test]
async fn a_missing_token_is_a_clear_401_with_a_challenge() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/api/v1/stores", app.address))
        .send()
        .await
        .expect("request");
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"shopfront\""
    );
    let problem = expect_json(response, 401, "no token").await;
    assert_eq!(problem_slug(&problem), "unauthorized");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("Authorization: Bearer"),
        "{problem}"
    );
    let response = app
        .client
        .get(format!("{}/api/v1/stores", app.address))
        .bearer_auth("not-a-token")
        .send()
        .await
        .expect("request");
    assert!(response.headers().contains_key("www-authenticate"));
    expect_json(response, 401, "bad token").await;
    app.stop().await;
}
