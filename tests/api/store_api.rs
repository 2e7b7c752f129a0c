//! The store-scoped HTTP API as staff use it: stores and staff, products and stock, orders.
//! Every call goes through the real server with real tokens.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{expect_json, problem_slug, spawn_app, Staff, TestApp};

async fn product(
    app: &TestApp,
    owner: &Staff,
    store: &str,
    sku: &str,
    price: i64,
    units: i64,
) -> String {
    let mut body = json!({
        "name": format!("Product {sku}"),
        "sku": sku,
        "price": {"amount_minor": price, "currency": "RUB"},
    });
    // `initial_stock` must be at least 1 when given.
    if units > 0 {
        body["initial_stock"] = json!(units);
    }
    let product = app
        .post_json(
            &owner.token,
            &format!("/api/v1/stores/{store}/products"),
            body,
            201,
        )
        .await;
    product["product_id"]
        .as_str()
        .expect("product id")
        .to_owned()
}

#[tokio::test]
async fn a_platform_admin_opens_a_store_and_its_owner_runs_the_staff() {
    let app = spawn_app().await;
    let admin = app.staff("platform@example.com", true).await;
    let owner = app.staff("owner@example.com", false).await;
    let vendor = app.staff("vendor@example.com", false).await;

    // Only platform admins create stores.
    let refused = app
        .post_json(
            &owner.token,
            "/api/v1/stores",
            json!({"name": "Mine", "currency": "RUB", "timezone": "UTC", "payment_instructions": "x"}),
            403,
        )
        .await;
    assert_eq!(problem_slug(&refused), "forbidden");
    let bad_currency = app
        .post_json(
            &admin.token,
            "/api/v1/stores",
            json!({"name": "Shop", "currency": "ZZZ", "timezone": "UTC", "payment_instructions": "x"}),
            422,
        )
        .await;
    assert_eq!(problem_slug(&bad_currency), "invalid-currency");

    let response = app
        .call(
            Method::POST,
            &admin.token,
            "/api/v1/stores",
            Some(json!({
                "name": "Tea house",
                "currency": "RUB",
                "timezone": "Europe/Moscow",
                "payment_instructions": "Bank X, account 1",
                "owner_id": owner.account_id.0,
            })),
        )
        .await;
    let location = response.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let store = expect_json(response, 201, "create store").await;
    let store_id = store["store_id"].as_str().expect("id").to_owned();
    assert_eq!(location, format!("/api/v1/stores/{store_id}"));
    assert_eq!(store["currency"], "RUB");
    assert_eq!(store["reservation_ttl_minutes"], 60);
    assert!(
        store.get("my_role").is_none(),
        "the admin holds no role: {store}"
    );

    app.wait_for_projections().await;
    let mine = app.get_json(&owner.token, "/api/v1/stores").await;
    let items = mine["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["store_id"], store_id.as_str());
    assert_eq!(items[0]["my_role"], "OWNER");
    assert_eq!(
        app.get_json(&vendor.token, "/api/v1/stores").await["items"],
        json!([]),
        "a stranger sees no store"
    );

    // Settings: the owner changes them; a bad time zone is refused by the domain.
    let path = format!("/api/v1/stores/{store_id}");
    let (status, changed) = app
        .status_of(
            Method::PATCH,
            &owner.token,
            &path,
            Some(json!({"name": "Tea & co"})),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["name"], "Tea & co");
    assert_eq!(changed["my_role"], "OWNER");
    let (status, problem) = app
        .status_of(
            Method::PATCH,
            &owner.token,
            &path,
            Some(json!({"timezone": "Mars/Base"})),
        )
        .await;
    assert_eq!(
        (status, problem_slug(&problem)),
        (422, "store-invalid-timezone")
    );
    // The currency is fixed; a misspelt field is refused rather than ignored.
    let (status, problem) = app
        .status_of(
            Method::PATCH,
            &owner.token,
            &path,
            Some(json!({"currency": "EUR"})),
        )
        .await;
    assert_eq!(
        (status, problem_slug(&problem)),
        (422, "store-currency-immutable")
    );
    let (status, _) = app
        .status_of(
            Method::PATCH,
            &owner.token,
            &path,
            Some(json!({"currency": "rub", "name": "Tea & co"})),
        )
        .await;
    assert_eq!(status, 200, "its own currency may be restated");
    let (status, problem) = app
        .status_of(
            Method::PATCH,
            &owner.token,
            &path,
            Some(json!({"nmae": "Typo"})),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    let response = app
        .client
        .patch(format!("{}{path}", app.address))
        .bearer_auth(&owner.token)
        .header("content-type", "text/plain")
        .body("name=Tea")
        .send()
        .await
        .expect("patch");
    let problem = expect_json(response, 415, "a text body").await;
    assert_eq!(problem_slug(&problem), "unsupported-media-type");

    // Staff: the owner adds a vendor by e-mail; the vendor may see the store but not change it.
    let staff_path = format!("/api/v1/stores/{store_id}/staff");
    let added = app
        .post_json(
            &owner.token,
            &staff_path,
            json!({"email": "VENDOR@example.com", "role": "VENDOR"}),
            200,
        )
        .await;
    assert_eq!(added["account_id"], vendor.account_id.0.to_string());
    assert_eq!(added["role"], "VENDOR");
    let unknown = app
        .post_json(
            &owner.token,
            &staff_path,
            json!({"email": "nobody@example.com", "role": "VENDOR"}),
            422,
        )
        .await;
    assert_eq!(problem_slug(&unknown), "account-not-found");
    let seen = app.get_json(&vendor.token, &path).await;
    assert_eq!(seen["my_role"], "VENDOR");
    let (status, _) = app
        .status_of(
            Method::PATCH,
            &vendor.token,
            &path,
            Some(json!({"name": "Mine now"})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = app
        .status_of(Method::GET, &vendor.token, &staff_path, None)
        .await;
    assert_eq!(status, 403, "vendors do not list staff");

    app.wait_for_projections().await;
    let staff = app.get_json(&owner.token, &staff_path).await;
    let roles: Vec<(String, String)> = staff
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
    assert_eq!(
        roles,
        vec![
            ("owner@example.com".to_owned(), "OWNER".to_owned()),
            ("vendor@example.com".to_owned(), "VENDOR".to_owned())
        ]
    );

    // The last owner cannot be removed; the vendor can, and then loses access at once.
    let (status, problem) = app
        .status_of(
            Method::DELETE,
            &owner.token,
            &format!("{staff_path}/{}", owner.account_id.0),
            None,
        )
        .await;
    assert_eq!((status, problem_slug(&problem)), (409, "store-last-owner"));
    let (status, _) = app
        .status_of(
            Method::DELETE,
            &owner.token,
            &format!("{staff_path}/{}", vendor.account_id.0),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = app.status_of(Method::GET, &vendor.token, &path, None).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn products_and_stock_are_managed_within_the_store() {
    let app = spawn_app().await;
    let admin = app.staff("platform@example.com", true).await;
    let owner = app.staff("owner@example.com", false).await;
    let rival = app.staff("rival@example.com", false).await;
    let store = app.open_store(&admin, &owner, "Tea house").await;
    let _rival_store = app.open_store(&admin, &rival, "Rival").await;
    let products = format!("/api/v1/stores/{store}/products");

    let created = app
        .post_json(
            &owner.token,
            &products,
            json!({"name": "Green tea", "sku": "TEA-1", "price": {"amount_minor": 890_00, "currency": "RUB"}, "initial_stock": 10}),
            201,
        )
        .await;
    let tea = created["product_id"].as_str().expect("id").to_owned();
    assert_eq!(
        created["price"],
        json!({"amount_minor": 890_00, "currency": "RUB"})
    );
    assert_eq!(created["status"], "ACTIVE");
    assert_eq!(created["stock"]["on_hand"], 10);
    assert_eq!(created["stock"]["available"], 10);

    // A price in another currency, a taken sku (in any case), a bad body.
    let mismatch = app
        .post_json(
            &owner.token,
            &products,
            json!({"name": "Cup", "sku": "CUP", "price": {"amount_minor": 100, "currency": "USD"}}),
            422,
        )
        .await;
    assert_eq!(problem_slug(&mismatch), "product-currency-mismatch");
    let taken = app
        .post_json(&owner.token, &products, json!({"name": "Other tea", "sku": "tea-1", "price": {"amount_minor": 100, "currency": "RUB"}}), 409)
        .await;
    assert_eq!(problem_slug(&taken), "sku-taken");
    let malformed = app
        .post_json(&owner.token, &products, json!({"name": "No price"}), 400)
        .await;
    assert_eq!(problem_slug(&malformed), "invalid-request", "{malformed}");

    let cup = product(&app, &owner, &store, "CUP-1", 150_00, 0).await;

    // Edit, reprice, archive.
    let path = format!("/api/v1/products/{tea}");
    let (status, edited) = app.status_of(Method::PATCH,
        &owner.token,
        &path,
        Some(
            json!({"price": {"amount_minor": 990_00, "currency": "RUB"}, "description": "Sencha"}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["price"]["amount_minor"], 990_00);
    assert_eq!(edited["description"], "Sencha");
    let (status, problem) = app
        .status_of(
            Method::PATCH,
            &owner.token,
            &path,
            Some(json!({"price": {"amount_minor": 10_00, "currency": "EUR"}})),
        )
        .await;
    assert_eq!(
        (status, problem_slug(&problem)),
        (422, "product-currency-mismatch")
    );
    let (status, archived) = app
        .status_of(
            Method::PATCH,
            &owner.token,
            &format!("/api/v1/products/{cup}"),
            Some(json!({"status": "ARCHIVED"})),
        )
        .await;
    assert_eq!(
        (status, archived["status"].as_str()),
        (200, Some("ARCHIVED"))
    );

    // Stock: receive, adjust with a reason, a refused adjustment, a threshold.
    let received = app
        .post_json(
            &owner.token,
            &format!("{path}/stock/receive"),
            json!({"quantity": 5, "note": "delivery 7"}),
            200,
        )
        .await;
    assert_eq!(received["on_hand"], 15);
    let refused = app
        .post_json(
            &owner.token,
            &format!("{path}/stock/adjust"),
            json!({"delta": -16, "reason": "damage"}),
            409,
        )
        .await;
    assert_eq!(problem_slug(&refused), "stock-adjustment-below-reserved");
    let adjusted = app
        .post_json(
            &owner.token,
            &format!("{path}/stock/adjust"),
            json!({"delta": -3, "reason": "damage", "note": "broken box"}),
            200,
        )
        .await;
    assert_eq!(adjusted["on_hand"], 12);
    let (status, threshold) = app
        .status_of(
            Method::PUT,
            &owner.token,
            &format!("{path}/stock/threshold"),
            Some(json!({"threshold": 20})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(threshold["effective_threshold"], 20);
    assert_eq!(threshold["level"], "low");

    // Reads come from the read models.
    app.wait_for_projections().await;
    let one = app.get_json(&owner.token, &path).await;
    assert_eq!(one["stock"]["on_hand"], 12);
    assert_eq!(one["stock"]["level"], "low");
    let history = app
        .get_json(&owner.token, &format!("{path}/stock/history"))
        .await;
    let movements: Vec<(&str, i64)> = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| {
            (
                m["movement"].as_str().unwrap_or_default(),
                m["on_hand_delta"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        movements[..3],
        [("adjusted", -3), ("received", 5), ("received", 10)]
    );

    // Lists: search, filter, keyset pages.
    let found = app
        .get_json(&owner.token, &format!("{products}?q=green"))
        .await;
    assert_eq!(found["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(found["items"][0]["product_id"], tea.as_str());
    let archived = app
        .get_json(&owner.token, &format!("{products}?status=ARCHIVED"))
        .await;
    assert_eq!(archived["items"][0]["product_id"], cup.as_str());
    let first = app
        .get_json(&owner.token, &format!("{products}?limit=1"))
        .await;
    assert_eq!(first["items"][0]["name"], "Green tea");
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let second = app
        .get_json(&owner.token, &format!("{products}?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(second["items"][0]["name"], "Product CUP-1");
    assert!(second.get("next_cursor").is_none(), "{second}");
    let (status, problem) = app
        .status_of(
            Method::GET,
            &owner.token,
            &format!("{products}?cursor=garbage"),
            None,
        )
        .await;
    assert_eq!((status, problem_slug(&problem)), (400, "invalid-cursor"));

    // Another store's owner: the product does not exist for them; their store's list is theirs.
    let (status, problem) = app.status_of(Method::GET, &rival.token, &path, None).await;
    assert_eq!((status, problem_slug(&problem)), (404, "product-not-found"));
    let (status, _) = app
        .status_of(
            Method::POST,
            &rival.token,
            &format!("{path}/stock/receive"),
            Some(json!({"quantity": 1})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .status_of(Method::GET, &rival.token, &products, None)
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn staff_place_and_run_orders_and_every_event_names_the_request() {
    let app = spawn_app().await;
    let admin = app.staff("platform@example.com", true).await;
    let owner = app.staff("owner@example.com", false).await;
    let rival = app.staff("rival@example.com", false).await;
    let store = app.open_store(&admin, &owner, "Tea house").await;
    let _rival_store = app.open_store(&admin, &rival, "Rival").await;
    let tea = product(&app, &owner, &store, "TEA-1", 890_00, 3).await;
    let orders = format!("/api/v1/stores/{store}/orders");

    let response = app
        .client
        .post(format!("{}{orders}", app.address))
        .bearer_auth(&owner.token)
        .header("x-request-id", "req-place-1")
        .header("user-agent", "admin-console/2.1")
        .json(&json!({"lines": [{"product_id": tea, "quantity": 2}], "contact": {"phone": "+7 900 000-00-00"}}))
        .send()
        .await
        .expect("place");
    // The service names the request itself; the client's id is kept beside it.
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_ne!(request_id, "req-place-1");
    let placed = expect_json(response, 201, "place").await;
    let order_id = placed["order_id"].as_str().expect("id").to_owned();
    assert_eq!(placed["status"], "AWAITING_PAYMENT");
    assert_eq!(
        placed["total"],
        json!({"amount_minor": 1780_00, "currency": "RUB"})
    );

    let metadata: Value = sqlx::query_scalar(
        "select metadata from events where aggregate_id = $1 and event_type = 'OrderPlaced'",
    )
    .bind(&order_id)
    .fetch_one(&app.db.pool)
    .await
    .expect("the order's event");
    assert_eq!(metadata["request_id"], request_id);
    assert_eq!(metadata["client_request_id"], "req-place-1");
    // The device is personal data: beside the log, by request id, never in it.
    assert!(metadata.get("user_agent").is_none() && metadata.get("client_ip").is_none());
    let (ip, agent): (String, String) =
        sqlx::query_as("select client_ip, user_agent from request_origins where request_id = $1")
            .bind(&request_id)
            .fetch_one(&app.db.pool)
            .await
            .expect("the request's origin");
    assert_eq!(
        (ip.as_str(), agent.as_str()),
        ("127.0.0.1", "admin-console/2.1")
    );
    assert_eq!(metadata["actor_role"], "OWNER");
    assert_eq!(metadata["channel"], "api");
    assert_eq!(metadata["actor_id"], owner.account_id.0.to_string());

    // Refusals: a shortage, an unknown customer, an empty order.
    let short = app
        .post_json(
            &owner.token,
            &orders,
            json!({"lines": [{"product_id": tea, "quantity": 2}]}),
            409,
        )
        .await;
    assert_eq!(problem_slug(&short), "stock-out-of-stock");
    let unknown = app
        .post_json(&owner.token, &orders, json!({"customer_id": uuid::Uuid::now_v7(), "lines": [{"product_id": tea, "quantity": 1}]}), 422)
        .await;
    assert_eq!(problem_slug(&unknown), "customer-unknown-to-store");
    app.post_json(&owner.token, &orders, json!({"lines": []}), 400)
        .await;

    // Life cycle: fulfilment needs payment; cancelling gives the stock back.
    let path = format!("/api/v1/orders/{order_id}");
    let early = app
        .post_json(&owner.token, &format!("{path}/fulfil"), json!({}), 409)
        .await;
    assert_eq!(problem_slug(&early), "order-invalid-transition");
    let cancelled = app
        .post_json(
            &owner.token,
            &format!("{path}/cancel"),
            json!({"reason": "customer called"}),
            200,
        )
        .await;
    assert_eq!(cancelled["status"], "CANCELLED");
    let again = app
        .post_json(&owner.token, &format!("{path}/cancel"), json!({}), 409)
        .await;
    assert_eq!(problem_slug(&again), "order-invalid-transition");

    app.wait_for_projections().await;
    let stock = app
        .get_json(&owner.token, &format!("/api/v1/products/{tea}/stock"))
        .await;
    assert_eq!(stock["available"], 3);
    let order = app.get_json(&owner.token, &path).await;
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(order["cancelled_by"], "staff");
    assert_eq!(order["status_reason"], "customer called");
    assert_eq!(order["has_contact"], true);
    let timeline: Vec<&str> = order["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|e| e["event_type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(timeline, ["OrderPlaced", "OrderCancelled"]);

    // Filters and pages.
    let second = app
        .post_json(
            &owner.token,
            &orders,
            json!({"lines": [{"product_id": tea, "quantity": 1}]}),
            201,
        )
        .await;
    app.wait_for_projections().await;
    let open = app
        .get_json(&owner.token, &format!("{orders}?status=AWAITING_PAYMENT"))
        .await;
    let ids: Vec<&str> = open["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|o| o["order_id"].as_str())
        .collect();
    assert_eq!(ids, [second["order_id"].as_str().expect("id")]);
    let newest = app
        .get_json(&owner.token, &format!("{orders}?limit=1"))
        .await;
    assert_eq!(newest["items"][0]["order_id"], second["order_id"]);
    let cursor = newest["next_cursor"].as_str().expect("more");
    let older = app
        .get_json(&owner.token, &format!("{orders}?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(older["items"][0]["order_id"], order_id.as_str());
    let oldest_first = app
        .get_json(&owner.token, &format!("{orders}?sort=asc"))
        .await;
    assert_eq!(oldest_first["items"][0]["order_id"], order_id.as_str());

    // Another store's owner sees nothing of it.
    let (status, problem) = app.status_of(Method::GET, &rival.token, &path, None).await;
    assert_eq!((status, problem_slug(&problem)), (404, "order-not-found"));
    let (status, _) = app
        .status_of(
            Method::POST,
            &rival.token,
            &format!("{path}/cancel"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .status_of(Method::GET, &rival.token, &orders, None)
        .await;
    assert_eq!(status, 403);
}

/// The attack: an admin of one store probes which e-mails have accounts by "adding" them as
/// staff. An unknown e-mail, one whose account may not be added (blocked), and one that exists
/// but is asked for a role the admin may not give, must answer exactly like each other.
#[tokio::test]
async fn adding_staff_by_email_does_not_reveal_which_accounts_exist() {
    let app = spawn_app().await;
    let platform = app.staff("platform@example.com", true).await;
    let owner = app.staff("owner@example.com", false).await;
    let admin = app.staff("admin@example.com", false).await;
    app.staff("outsider@example.com", false).await;
    let blocked = app.staff("blocked@example.com", false).await;
    let store = app.open_store(&platform, &owner, "Tea house").await;
    let staff_path = format!("/api/v1/stores/{store}/staff");
    app.post_json(
        &owner.token,
        &staff_path,
        json!({"account_id": admin.account_id.0, "role": "ADMIN"}),
        200,
    )
    .await;
    app.post_json(
        &platform.token,
        &format!("/api/v1/users/{}/block", blocked.account_id.0),
        json!({"reason": "fraud report"}),
        200,
    )
    .await;
    // The lookup reads the block from the accounts read model.
    app.wait_for_projections().await;

    let add = |email: &'static str, role: &'static str| {
        app.status_of(
            Method::POST,
            &admin.token,
            &staff_path,
            Some(json!({"email": email, "role": role})),
        )
    };
    // A role the admin may not give is refused the same way for any e-mail.
    let unknown_owner = add("nobody@example.com", "OWNER").await;
    let known_owner = add("outsider@example.com", "OWNER").await;
    assert_eq!(unknown_owner.0, 403, "{}", unknown_owner.1);
    assert_eq!(known_owner, unknown_owner);

    // No such account, or one that may not be added: one answer.
    let unknown = add("nobody@example.com", "VENDOR").await;
    let not_addable = add("blocked@example.com", "VENDOR").await;
    assert_eq!(unknown.0, 422, "{}", unknown.1);
    assert_eq!(problem_slug(&unknown.1), "account-not-found");
    assert_eq!(not_addable, unknown);

    app.wait_for_projections().await;
    let staff = app.get_json(&owner.token, &staff_path).await;
    assert_eq!(staff.as_array().map(Vec::len), Some(2), "{staff}");
    app.stop().await;
}
