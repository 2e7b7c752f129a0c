//! The permission matrix, walked over HTTP: every store-scoped endpoint × every role × own store
//! and a foreign one. A role the matrix allows gets past authorization (whatever the domain
//! then says); one it does not gets 403; nobody reaches another store's data (403 or 404), and
//! no request without a token gets anything but 401.

use aggregates::StoreRole;
use reqwest::Method;
use serde_json::{json, Value};
use shopfront::app::authz::{allows, Permission};

use crate::helpers::{spawn_app, Staff, TestApp};
use crate::receipts_api::{multipart, png, upload};

/// Ids of one store's things, to fill endpoint paths with.
struct Fixture {
    store: String,
    product: String,
    order: String,
    receipt: String,
    alert: String,
    customer: String,
    spare: String,
}

enum Body {
    None,
    Json(Value),
    Receipt,
}

struct Endpoint {
    method: Method,
    path: &'static str,
    body: Body,
    permission: Permission,
}

fn endpoints() -> Vec<Endpoint> {
    use Permission::*;
    let e = |method: Method, path: &'static str, body: Body, permission| Endpoint {
        method,
        path,
        body,
        permission,
    };
    let j = Body::Json;
    vec![
        e(Method::GET, "/api/v1/stores/{store}", Body::None, ViewStore),
        e(
            Method::PATCH,
            "/api/v1/stores/{store}",
            j(json!({"payment_instructions": "Bank Y"})),
            ChangeStoreSettings,
        ),
        e(
            Method::GET,
            "/api/v1/stores/{store}/staff",
            Body::None,
            ViewStaff,
        ),
        e(
            Method::POST,
            "/api/v1/stores/{store}/staff",
            j(json!({"account_id": "{spare}", "role": "VENDOR"})),
            ManageStaff,
        ),
        e(
            Method::POST,
            "/api/v1/stores/{store}/staff/bulk",
            j(json!({"changes": [{"account_id": "{spare}", "role": "AUDITOR"}]})),
            ManageStaff,
        ),
        e(
            Method::DELETE,
            "/api/v1/stores/{store}/staff/{spare}",
            Body::None,
            ManageStaff,
        ),
        e(
            Method::GET,
            "/api/v1/stores/{store}/products",
            Body::None,
            ViewProducts,
        ),
        e(
            Method::POST,
            "/api/v1/stores/{store}/products",
            j(
                json!({"name": "New", "sku": "{unique}", "price": {"amount_minor": 100, "currency": "RUB"}}),
            ),
            ManageProducts,
        ),
        e(
            Method::GET,
            "/api/v1/products/{product}",
            Body::None,
            ViewProducts,
        ),
        e(
            Method::PATCH,
            "/api/v1/products/{product}",
            j(json!({"description": "edited"})),
            ManageProducts,
        ),
        e(
            Method::GET,
            "/api/v1/products/{product}/stock",
            Body::None,
            ViewStock,
        ),
        e(
            Method::GET,
            "/api/v1/products/{product}/stock/history",
            Body::None,
            ViewStock,
        ),
        e(
            Method::POST,
            "/api/v1/products/{product}/stock/receive",
            j(json!({"quantity": 1})),
            ManageStock,
        ),
        e(
            Method::POST,
            "/api/v1/products/{product}/stock/adjust",
            j(json!({"delta": 1, "reason": "count"})),
            ManageStock,
        ),
        e(
            Method::PUT,
            "/api/v1/products/{product}/stock/threshold",
            j(json!({"threshold": 2})),
            ManageStock,
        ),
        e(
            Method::GET,
            "/api/v1/stores/{store}/alerts",
            Body::None,
            ViewStock,
        ),
        e(
            Method::POST,
            "/api/v1/alerts/{alert}/acknowledge",
            Body::None,
            AcknowledgeAlerts,
        ),
        e(
            Method::GET,
            "/api/v1/stores/{store}/orders",
            Body::None,
            ViewOrders,
        ),
        e(
            Method::POST,
            "/api/v1/stores/{store}/orders",
            j(json!({"lines": [{"product_id": "{product}", "quantity": 1}]})),
            PlaceOrdersForCustomers,
        ),
        e(
            Method::GET,
            "/api/v1/orders/{order}",
            Body::None,
            ViewOrders,
        ),
        e(
            Method::POST,
            "/api/v1/orders/{order}/receipts",
            Body::Receipt,
            SubmitReceipts,
        ),
        e(
            Method::GET,
            "/api/v1/stores/{store}/receipts",
            Body::None,
            ViewReceipts,
        ),
        e(
            Method::GET,
            "/api/v1/receipts/{receipt}",
            Body::None,
            ViewReceipts,
        ),
        e(
            Method::GET,
            "/api/v1/receipts/{receipt}/file",
            Body::None,
            ViewReceipts,
        ),
        e(
            Method::POST,
            "/api/v1/receipts/{receipt}/reject",
            j(json!({"reason": "unreadable"})),
            ReviewReceipts,
        ),
        e(
            Method::POST,
            "/api/v1/receipts/{receipt}/verify",
            Body::None,
            ReviewReceipts,
        ),
        e(
            Method::POST,
            "/api/v1/orders/{order}/fulfil",
            Body::None,
            FulfilOrders,
        ),
        e(
            Method::POST,
            "/api/v1/orders/{order}/complete",
            Body::None,
            FulfilOrders,
        ),
        e(
            Method::POST,
            "/api/v1/orders/{order}/cancel",
            j(json!({})),
            CancelOrders,
        ),
        e(
            Method::GET,
            "/api/v1/stores/{store}/customers",
            Body::None,
            ViewCustomers,
        ),
        e(
            Method::GET,
            "/api/v1/stores/{store}/customers/{customer}",
            Body::None,
            ViewCustomers,
        ),
        e(
            Method::POST,
            "/api/v1/stores/{store}/customers/{customer}/block",
            j(json!({"reason": "abuse"})),
            ManageCustomers,
        ),
        e(
            Method::POST,
            "/api/v1/stores/{store}/customers/{customer}/unblock",
            Body::None,
            ManageCustomers,
        ),
        e(
            Method::POST,
            "/api/v1/stores/{store}/customers/bulk",
            j(json!({"action": "unblock", "customer_ids": ["{customer}"]})),
            ManageCustomers,
        ),
        e(
            Method::GET,
            "/api/v1/analytics/dashboard?store_id={store}",
            Body::None,
            ViewAnalytics,
        ),
        e(
            Method::GET,
            "/api/v1/analytics/revenue?store_id={store}&period=week",
            Body::None,
            ViewAnalytics,
        ),
        e(
            Method::GET,
            "/api/v1/analytics/customers?store_id={store}",
            Body::None,
            ViewAnalytics,
        ),
        e(
            Method::GET,
            "/api/v1/analytics/inventory?store_id={store}",
            Body::None,
            ViewAnalytics,
        ),
        e(
            Method::GET,
            "/api/v1/analytics/stores?store_id={store}",
            Body::None,
            ViewAnalytics,
        ),
        e(
            Method::GET,
            "/api/v1/audit/events?store_id={store}",
            Body::None,
            ViewAuditTrail,
        ),
        e(
            Method::GET,
            "/api/v1/audit/aggregates/{order_type}/{order}/events",
            Body::None,
            ViewAuditTrail,
        ),
        e(
            Method::GET,
            "/api/v1/audit/events.csv?store_id={store}",
            Body::None,
            ViewAuditTrail,
        ),
        e(
            Method::GET,
            "/api/v1/audit/aggregates/{receipt_type}/{receipt}/state",
            Body::None,
            ViewAuditTrail,
        ),
        e(
            Method::GET,
            "/api/v1/audit/stores/{store}/kpis?as_of={today}",
            Body::None,
            ViewAuditTrail,
        ),
        // The chain covers every store; naming one where the caller reads the audit trail
        // is what lets them see it.
        e(
            Method::GET,
            "/api/v1/audit/chain?store_id={store}",
            Body::None,
            ViewAuditTrail,
        ),
        e(
            Method::GET,
            "/api/v1/audit/checkpoints?store_id={store}",
            Body::None,
            ViewAuditTrail,
        ),
        e(
            Method::POST,
            "/api/v1/audit/verify?store_id={store}",
            j(json!({})),
            ViewAuditTrail,
        ),
        e(
            Method::GET,
            "/api/v1/audit/export?store_id={store}",
            Body::None,
            ViewAuditTrail,
        ),
    ]
}

fn fill(template: &str, f: &Fixture) -> String {
    template
        .replace("{store}", &f.store)
        .replace("{product}", &f.product)
        .replace("{order}", &f.order)
        .replace("{receipt}", &f.receipt)
        .replace("{alert}", &f.alert)
        .replace("{customer}", &f.customer)
        .replace("{spare}", &f.spare)
        .replace("{unique}", &uuid::Uuid::now_v7().simple().to_string())
        .replace("{order_type}", "Order")
        .replace("{receipt_type}", "PaymentReceipt")
        .replace(
            "{today}",
            &chrono::Utc::now()
                .with_timezone(&chrono_tz::Europe::Moscow)
                .date_naive()
                .to_string(),
        )
}

async fn send(app: &TestApp, token: Option<&str>, endpoint: &Endpoint, f: &Fixture) -> u16 {
    let url = format!("{}{}", app.address, fill(endpoint.path, f));
    let mut request = app.client.request(endpoint.method.clone(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request = match &endpoint.body {
        Body::None => request,
        Body::Json(body) => request
            .header("content-type", "application/json")
            .body(fill(&body.to_string(), f)),
        Body::Receipt => {
            let (content_type, body) = multipart(&png(7), &[]);
            request.header("content-type", content_type).body(body)
        }
    };
    request.send().await.expect("request").status().as_u16()
}

/// A store opened by `admin` for `owner`, with a product, an out-of-stock alert, two orders
/// (one with a receipt) and a spare staff account to assign roles to.
async fn fixture(app: &TestApp, admin: &Staff, owner: &Staff, spare: &Staff) -> Fixture {
    let store = app.open_store(admin, owner, "Shop").await;
    let product_for = |sku: &str, units: i64| json!({"name": sku, "sku": sku, "price": {"amount_minor": 500_00, "currency": "RUB"}, "initial_stock": units});
    let products = format!("/api/v1/stores/{store}/products");
    let product = app
        .post_json(&owner.token, &products, product_for("P", 1000), 201)
        .await["product_id"]
        .as_str()
        .expect("product")
        .to_owned();
    let scarce = app
        .post_json(&owner.token, &products, product_for("Q", 1), 201)
        .await["product_id"]
        .as_str()
        .expect("product")
        .to_owned();
    app.post_json(
        &owner.token,
        &format!("/api/v1/products/{scarce}/stock/adjust"),
        json!({"delta": -1, "reason": "damage"}),
        200,
    )
    .await;
    let orders = format!("/api/v1/stores/{store}/orders");
    let line = json!({"lines": [{"product_id": product, "quantity": 1}]});
    let order = app
        .post_json(&owner.token, &orders, line.clone(), 201)
        .await;
    let paid = app.post_json(&owner.token, &orders, line, 201).await;
    let paid_id = paid["order_id"].as_str().expect("order");
    let receipt = upload(app, &owner.token, paid_id, &png(1), &[]).await;
    assert_eq!(receipt.status(), 201);
    let receipt: Value = receipt.json().await.expect("receipt");
    app.wait_for_projections().await;
    let alerts = app
        .get_json(&owner.token, &format!("/api/v1/stores/{store}/alerts"))
        .await;
    Fixture {
        alert: alerts["items"][0]["alert_id"].to_string(),
        customer: order["customer_id"].as_str().expect("customer").to_owned(),
        order: order["order_id"].as_str().expect("order").to_owned(),
        receipt: receipt["receipt_id"].as_str().expect("receipt").to_owned(),
        spare: spare.account_id.0.to_string(),
        store,
        product,
    }
}

#[tokio::test]
async fn every_endpoint_answers_every_role_as_the_matrix_says_and_no_store_sees_another() {
    let app = spawn_app().await;
    let admin = app.staff("platform@example.com", true).await;
    let owner = app.staff("owner@a.example", false).await;
    let other_owner = app.staff("owner@b.example", false).await;
    let spare = app.staff("spare@a.example", false).await;
    let other_spare = app.staff("spare@b.example", false).await;
    let stranger = app.staff("stranger@example.com", false).await;
    let own = fixture(&app, &admin, &owner, &spare).await;
    let foreign = fixture(&app, &admin, &other_owner, &other_spare).await;

    let mut staff = vec![(StoreRole::Owner, owner)];
    for (role, name) in [
        (StoreRole::Admin, "ADMIN"),
        (StoreRole::Vendor, "VENDOR"),
        (StoreRole::Auditor, "AUDITOR"),
    ] {
        let member = app
            .staff(&format!("{name}@a.example").to_lowercase(), false)
            .await;
        app.post_json(
            &staff[0].1.token,
            &format!("/api/v1/stores/{}/staff", own.store),
            json!({"account_id": member.account_id.0, "role": name}),
            200,
        )
        .await;
        staff.push((role, member));
    }

    let mut checked = 0;
    for endpoint in endpoints() {
        let what = format!("{} {}", endpoint.method, endpoint.path);
        assert_eq!(
            send(&app, None, &endpoint, &own).await,
            401,
            "{what} without a token"
        );
        let status = send(&app, Some(&stranger.token), &endpoint, &own).await;
        assert!(
            matches!(status, 403 | 404),
            "{what} by a stranger: {status}"
        );
        for (role, member) in &staff {
            let status = send(&app, Some(&member.token), &endpoint, &own).await;
            if allows(*role, endpoint.permission) {
                assert!(
                    !matches!(status, 401 | 403 | 404 | 500),
                    "{what} as {role} in their store: {status}, but the matrix allows it"
                );
            } else {
                assert_eq!(
                    status, 403,
                    "{what} as {role} in their store: the matrix forbids it"
                );
            }
            let status = send(&app, Some(&member.token), &endpoint, &foreign).await;
            assert!(
                matches!(status, 403 | 404),
                "{what} as {role} of another store: {status}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, endpoints().len() * 4);

    // Bulk decisions name receipts, not a store: each item is judged like the single endpoint,
    // so a role without the permission gets `forbidden` per item, and another store's receipt
    // does not exist for anyone here.
    for (role, member) in &staff {
        let body = json!({"action": "reject", "reason": "blurry",
                          "receipt_ids": [own.receipt, foreign.receipt]});
        let bulk = app
            .post_json(&member.token, "/api/v1/receipts/bulk", body, 200)
            .await;
        let own_item = problem_slug_of(&bulk["results"][0]);
        if allows(*role, Permission::ReviewReceipts) {
            assert_ne!(own_item, "forbidden", "bulk as {role}: {bulk}");
            assert_ne!(own_item, "receipt-not-found", "bulk as {role}: {bulk}");
        } else {
            assert_eq!(own_item, "forbidden", "bulk as {role}: {bulk}");
        }
        assert_eq!(
            problem_slug_of(&bulk["results"][1]),
            "receipt-not-found",
            "bulk as {role} on another store's receipt: {bulk}"
        );
    }
}

fn problem_slug_of(result: &Value) -> &str {
    if result["ok"] == true {
        return "";
    }
    crate::helpers::problem_slug(&result["problem"])
}

/// Operations that are not about one store's data, so the walk above does not cover them (each
/// has its own tests): signing in and one's own sessions and tokens, health, the platform-wide
/// store list, store creation and a platform admin naming a store's owner (tests/api/newcomer.rs),
/// the user directory, one's own notifications and the platform's notification deliveries
/// (tests/api/notifications.rs), and bulk receipt decisions (per item, checked above).
const NOT_STORE_SCOPED: &[&str] = &[
    "/api/v1/api-tokens",
    "/api/v1/auth/",
    "/health/",
    "/api/v1/users",
    "/api/v1/me/",
    "/api/v1/admin/",
    "POST /api/v1/stores",
    "GET /api/v1/stores",
    "POST /api/v1/stores/{}/owners",
    "POST /api/v1/receipts/bulk",
    // Public: anyone holding a checkpoint may check its signature.
    "GET /api/v1/audit/public-key",
];

#[test]
fn the_walk_covers_every_store_scoped_operation_of_the_api() {
    let spec: Value =
        serde_json::from_str(include_str!("../../openapi/openapi.json")).expect("the spec");
    let normalise = |path: &str| {
        let path = path.split('?').next().unwrap_or_default();
        path.split('/')
            .map(|part| if part.starts_with('{') { "{}" } else { part })
            .collect::<Vec<_>>()
            .join("/")
    };
    let walked: Vec<String> = endpoints()
        .iter()
        .map(|e| format!("{} {}", e.method, normalise(e.path)))
        .collect();
    let mut missing = Vec::new();
    for (path, operations) in spec["paths"].as_object().expect("paths") {
        for method in operations.as_object().expect("operations").keys() {
            let operation = format!("{} {}", method.to_uppercase(), normalise(path));
            let exempt = NOT_STORE_SCOPED
                .iter()
                .any(|prefix| operation == *prefix || path.starts_with(prefix));
            if !exempt && !walked.contains(&operation) {
                missing.push(operation);
            }
        }
    }
    assert!(missing.is_empty(), "not walked by the matrix: {missing:?}");
}
