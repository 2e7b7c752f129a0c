//! Replaying history (`/api/v1/audit/aggregates/*`, `/api/v1/audit/stores/{id}/kpis`): an
//! aggregate's events from the event store itself, in order with who did what; its state at
//! every version and instant; a store's KPI figures as they stood at the end of a day; who may
//! read them; and erased people staying erased in all of it.

use aggregates::{AccountId, Channel, OrderId, ProductId, StoreRole};
use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, TimeZone, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use shopfront::app::{grant, ContactDetails, OrderLineInput, PlaceOrder};
use shopfront::testing;
use sqlx::PgPool;

use crate::helpers::{customer, expect_json, problem_slug, spawn_app, Shop, Staff, TestApp};
use crate::personal_data::receipt_for;

const MOSCOW: chrono_tz::Tz = chrono_tz::Europe::Moscow;

fn events_path(kind: &str, id: impl std::fmt::Display) -> String {
    format!("/api/v1/audit/aggregates/{kind}/{id}/events")
}

fn state_path(kind: &str, id: impl std::fmt::Display, query: &str) -> String {
    format!("/api/v1/audit/aggregates/{kind}/{id}/state{query}")
}

/// An instant as a query parameter (UTC, `Z`: nothing to escape).
fn instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn at(value: &Value) -> DateTime<Utc> {
    value.as_str().expect("a time").parse().expect("RFC 3339")
}

/// Every event of an aggregate's history as `token` reads it, page by page (`limit` each).
async fn history(
    app: &TestApp,
    token: &str,
    kind: &str,
    id: impl std::fmt::Display,
    limit: u32,
) -> Vec<Value> {
    let mut events = Vec::new();
    let mut path = format!("{}?limit={limit}", events_path(kind, &id));
    loop {
        let page = app.get_json(token, &path).await;
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= limit as usize, "{page}");
        events.extend(items.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                path = format!("{}?limit={limit}&cursor={cursor}", events_path(kind, &id))
            }
            None => return events,
        }
    }
}

fn types(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["event_type"].as_str().expect("type"))
        .collect()
}

/// `GET path` as `token`, expecting `status` (a problem when 4xx); the body.
async fn get(app: &TestApp, token: &str, path: &str, status: u16) -> Value {
    expect_json(
        app.call(Method::GET, token, path, None).await,
        status,
        &format!("GET {path}"),
    )
    .await
}

/// A store of `owner` with a product, and `auditor` holding the AUDITOR role in it.
async fn audited_shop(app: &TestApp, owner: &Staff, auditor: &Staff, name: &str) -> Shop {
    let shop = app.shop_of(owner, name).await;
    give_role(app, &shop, auditor.account_id, StoreRole::Auditor).await;
    shop
}

async fn give_role(app: &TestApp, shop: &Shop, account_id: AccountId, role: StoreRole) {
    app.app
        .assign_staff_role(
            &shop.access::<grant::ManageStaff>(&app.app).await,
            account_id,
            role,
        )
        .await
        .expect("role given");
}

#[tokio::test]
async fn an_orders_history_reads_in_order_with_who_did_it_and_replays_to_every_version() {
    let app = spawn_app().await;
    let owner = app.staff("owner@history.example", false).await;
    let auditor = app.staff("auditor@history.example", false).await;
    let shop = audited_shop(&app, &owner, &auditor, "History tea").await;
    let product = shop.product(&app.app, "TEA", 890_00, 10).await;
    let (customer_id, customer) = customer();
    let order = shop
        .place(&app.app, &customer, &[(product, 2)])
        .await
        .expect("placed");
    let receipt = testing::submit_receipt(&app.app, &customer, receipt_for(order, customer_id))
        .await
        .expect("submitted");
    // The owner verifies over HTTP, with a request id of their own, and fulfils.
    let verified = app
        .client
        .post(format!("{}/api/v1/receipts/{receipt}/verify", app.address))
        .bearer_auth(&owner.token)
        .header("x-request-id", "owner-verifies-7")
        .json(&json!({}))
        .send()
        .await
        .expect("request");
    expect_json(verified, 200, "verify").await;
    let fulfil = format!("/api/v1/orders/{order}/fulfil");
    expect_json(
        app.call(Method::POST, &owner.token, &fulfil, None).await,
        200,
        "fulfil",
    )
    .await;

    // Read page by page (two per page), in sequence order, with who did each and how.
    let events = history(&app, &auditor.token, "Order", order, 2).await;
    assert_eq!(
        types(&events),
        [
            "OrderPlaced",
            "OrderReceiptSubmitted",
            "OrderPaid",
            "OrderFulfilled"
        ]
    );
    for (n, event) in events.iter().enumerate() {
        assert_eq!(event["sequence"], n as i64 + 1);
        assert_eq!(event["event_version"], "1.0");
        assert_eq!(event["payload_withheld"], false);
        assert!(event["correlation_id"].is_string(), "{event}");
        assert!(!event["request_id"].as_str().unwrap_or_default().is_empty());
    }
    let positions: Vec<i64> = events
        .iter()
        .map(|e| e["global_position"].as_i64().expect("position"))
        .collect();
    assert!(positions.windows(2).all(|p| p[0] < p[1]), "{positions:?}");
    let (placed, paid, fulfilled) = (&events[0], &events[2], &events[3]);
    assert_eq!(placed["actor_id"], customer_id.to_string());
    assert_eq!(placed["actor_role"], "CUSTOMER");
    assert_eq!(placed["channel"], "telegram");
    assert_eq!(placed["payload"]["OrderPlaced"]["total_minor"], 1780_00);
    assert_eq!(paid["actor_id"], owner.account_id.to_string());
    assert_eq!(paid["actor_role"], "OWNER");
    assert_eq!(paid["channel"], "api");
    assert_eq!(paid["client_request_id"], "owner-verifies-7");
    assert_ne!(paid["request_id"], "owner-verifies-7", "ours, kept apart");
    assert_eq!(
        paid["payload"]["OrderPaid"]["receipt_id"],
        receipt.to_string()
    );
    assert!(paid.get("causation_position").is_none(), "a person acted");
    assert_eq!(fulfilled["actor_role"], "OWNER");

    // The receipt's verification and the order's payment were one decision: one transaction,
    // one request, one correlation.
    let receipt_events = history(&app, &auditor.token, "PaymentReceipt", receipt, 50).await;
    assert_eq!(
        types(&receipt_events),
        ["PaymentReceiptSubmitted", "PaymentReceiptVerified"]
    );
    let verification = &receipt_events[1];
    for key in [
        "transaction_id",
        "request_id",
        "correlation_id",
        "recorded_at",
    ] {
        assert_eq!(verification[key], paid[key], "{key}");
    }

    // Its state after each event, replayed through the order's own rules.
    for (version, status) in [
        (1, "AWAITING_PAYMENT"),
        (2, "RECEIPT_SUBMITTED"),
        (3, "PAID"),
        (4, "FULFILLED"),
    ] {
        let past = app
            .get_json(
                &auditor.token,
                &state_path("Order", order, &format!("?version={version}")),
            )
            .await;
        assert_eq!(past["aggregate_type"], "Order");
        assert_eq!(past["aggregate_id"], order.to_string());
        assert_eq!(past["version"], version);
        assert_eq!(past["latest_version"], 4);
        assert_eq!(past["recorded_at"], events[version - 1]["recorded_at"]);
        assert_eq!(past["state"]["status"], status, "{past}");
        assert_eq!(past["state"]["total_minor"], 1780_00);
    }
    let under_review = app
        .get_json(&auditor.token, &state_path("Order", order, "?version=2"))
        .await;
    assert_eq!(
        under_review["state"]["receipt_under_review"],
        receipt.to_string()
    );
    let paid_state = app
        .get_json(&auditor.token, &state_path("Order", order, "?version=3"))
        .await;
    assert_eq!(paid_state["state"]["paid_with"], receipt.to_string());
    let now = app
        .get_json(&auditor.token, &state_path("Order", order, ""))
        .await;
    assert_eq!(
        (now["version"].clone(), now["state"]["status"].clone()),
        (json!(4), json!("FULFILLED"))
    );

    // As of an instant: the events recorded by then (inclusive), between two events the
    // earlier one.
    let recorded: Vec<DateTime<Utc>> = events.iter().map(|e| at(&e["recorded_at"])).collect();
    assert!(recorded[2] < recorded[3], "two requests, two times");
    let between = recorded[2] + (recorded[3] - recorded[2]) / 2;
    let as_of = |t: DateTime<Utc>| state_path("Order", order, &format!("?as_of={}", instant(t)));
    let then = app.get_json(&auditor.token, &as_of(between)).await;
    assert_eq!(then["version"], 3);
    assert_eq!(then["state"]["status"], "PAID");
    assert_eq!(then["recorded_at"], events[2]["recorded_at"]);
    let first = app.get_json(&auditor.token, &as_of(recorded[0])).await;
    assert_eq!(first["version"], 1);

    // Before its first event it did not exist; past its last version, or in the future, it
    // has not got there (yet).
    for path in [
        state_path("Order", order, "?version=0"),
        as_of(recorded[0] - Duration::seconds(1)),
    ] {
        let refused = get(&app, &auditor.token, &path, 404).await;
        assert_eq!(problem_slug(&refused), "did-not-exist-then", "{path}");
    }
    for path in [
        state_path("Order", order, "?version=5"),
        as_of(Utc::now() + Duration::days(1)),
    ] {
        let refused = get(&app, &auditor.token, &path, 409).await;
        assert_eq!(problem_slug(&refused), "not-reached-yet", "{path}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_stock_items_history_pages_without_gap_and_names_the_event_a_process_manager_acted_on() {
    let app = spawn_app().await;
    let owner = app.staff("owner@stock-history.example", false).await;
    let auditor = app.staff("auditor@stock-history.example", false).await;
    let shop = audited_shop(&app, &owner, &auditor, "Stock history").await;
    let product = shop.product(&app.app, "JAM", 300_00, 10).await;
    let manage = shop.access::<grant::ManageStock>(&app.app).await;
    for _ in 0..3 {
        app.app
            .receive_stock(&manage, product, 5, None)
            .await
            .expect("received");
    }
    let (_, customer) = customer();
    let order = shop
        .place(&app.app, &customer, &[(product, 4)])
        .await
        .expect("placed");
    // The order-expiry process manager expires it once its deadline has passed.
    app.wait_for_projections().await;
    let expired = testing::expire_due_orders(&app.app, Utc::now() + Duration::minutes(31), 50)
        .await
        .expect("expiry runs");
    assert_eq!(expired, 1);

    // Pages of three, in order, no event twice or missing; the last page has no cursor.
    let pages = |cursor: Option<&str>| {
        let mut path = format!("{}?limit=3", events_path("Stock", product));
        if let Some(cursor) = cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        path
    };
    let mut sequences = Vec::new();
    let mut cursor: Option<String> = None;
    let mut page_sizes = Vec::new();
    loop {
        let page = app
            .get_json(&auditor.token, &pages(cursor.as_deref()))
            .await;
        let items = page["items"].as_array().expect("items");
        page_sizes.push(items.len());
        sequences.extend(items.iter().map(|e| e["sequence"].as_i64().expect("seq")));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(sequences, (1..=8).collect::<Vec<i64>>());
    assert_eq!(page_sizes, [3, 3, 2]);
    let stock = history(&app, &auditor.token, "Stock", product, 200).await;
    assert_eq!(
        types(&stock),
        [
            "StockTracked",
            "StockReceived",
            "StockReplenished",
            "StockReceived",
            "StockReceived",
            "StockReceived",
            "StockReserved",
            "StockReservationReleased"
        ]
    );

    // The expiry names the order's placement as its cause; the order and its stock were
    // changed in one decision of the system's own job.
    let order_events = history(&app, &auditor.token, "Order", order, 50).await;
    assert_eq!(types(&order_events), ["OrderPlaced", "OrderExpired"]);
    let (placed, expiry) = (&order_events[0], &order_events[1]);
    assert_eq!(expiry["causation_position"], placed["global_position"]);
    assert_eq!(expiry["actor_role"], "SYSTEM");
    assert_eq!(expiry["channel"], "system");
    assert_eq!(expiry["request_id"], "order-expiry");
    assert!(expiry.get("actor_id").is_none(), "{expiry}");
    let released = &stock[7];
    for key in [
        "causation_position",
        "transaction_id",
        "correlation_id",
        "request_id",
    ] {
        assert_eq!(released[key], expiry[key], "{key}");
    }
    assert_ne!(
        placed["correlation_id"], expiry["correlation_id"],
        "another intent"
    );

    // The stock level as of each version.
    for (version, on_hand, reserved) in [(2, 10, 0), (6, 25, 0), (7, 25, 4), (8, 25, 0)] {
        let past = app
            .get_json(
                &auditor.token,
                &state_path("Stock", product, &format!("?version={version}")),
            )
            .await;
        assert_eq!(past["version"], version);
        assert_eq!(past["latest_version"], 8);
        assert_eq!(
            past["state"]["on_hand"], on_hand,
            "version {version}: {past}"
        );
        assert_eq!(past["state"]["reserved"], reserved, "version {version}");
    }
    app.stop().await;
}

#[tokio::test]
async fn history_is_for_the_stores_auditors_and_owners_and_bad_requests_are_clear_problems() {
    let app = spawn_app().await;
    let admin = app.staff("platform@authz-history.example", true).await;
    let owner = app.staff("owner@authz-history.example", false).await;
    let auditor = app.staff("auditor@authz-history.example", false).await;
    let vendor = app.staff("vendor@authz-history.example", false).await;
    let stranger = app.staff("stranger@authz-history.example", false).await;
    let other_owner = app.staff("other@authz-history.example", false).await;
    let shop = audited_shop(&app, &owner, &auditor, "Audited").await;
    give_role(&app, &shop, vendor.account_id, StoreRole::Vendor).await;
    let other_shop = app.shop_of(&other_owner, "Elsewhere").await;
    let product = shop.product(&app.app, "TEA", 100_00, 5).await;
    let other_product = other_shop.product(&app.app, "TEA", 100_00, 5).await;
    let (_, customer) = customer();
    let order = shop
        .place(&app.app, &customer, &[(product, 1)])
        .await
        .expect("placed");
    let other_order = other_shop
        .place(&app.app, &customer, &[(other_product, 1)])
        .await
        .expect("placed");
    let order_events = events_path("Order", order);

    // The auditor's read-only API token reads it; so does the owner.
    let created = app
        .post_json(
            &auditor.token,
            "/api/v1/api-tokens",
            json!({"name": "audit tool", "store_ids": [shop.store_id.0], "role": "AUDITOR",
                   "read_only": true}),
            201,
        )
        .await;
    let token = created["token"].as_str().expect("secret");
    for reader in [token, owner.token.as_str()] {
        let page = app.get_json(reader, &order_events).await;
        assert_eq!(
            types(page["items"].as_array().expect("items")),
            ["OrderPlaced"]
        );
        app.get_json(reader, &state_path("Order", order, "?version=1"))
            .await;
        app.get_json(reader, &state_path("Store", shop.store_id, ""))
            .await;
        app.get_json(reader, &events_path("Product", product)).await;
    }

    // A vendor of the store may not (403); whoever holds no role there is told there is no
    // such order (404), as is anyone asking for an order that does not exist.
    let forbidden = get(&app, &vendor.token, &order_events, 403).await;
    assert_eq!(problem_slug(&forbidden), "forbidden");
    let vendor_state = state_path("Order", order, "");
    get(&app, &vendor.token, &vendor_state, 403).await;
    for (who, path) in [
        (stranger.token.as_str(), order_events.clone()),
        (other_owner.token.as_str(), order_events.clone()),
        (other_owner.token.as_str(), state_path("Order", order, "")),
        (auditor.token.as_str(), events_path("Order", other_order)),
        (auditor.token.as_str(), events_path("Order", OrderId::new())),
        (token, events_path("Order", other_order)),
    ] {
        let missing = get(&app, who, &path, 404).await;
        assert_eq!(problem_slug(&missing), "order-not-found", "{path}");
    }
    let no_store = get(
        &app,
        &stranger.token,
        &events_path("Store", shop.store_id),
        404,
    )
    .await;
    assert_eq!(problem_slug(&no_store), "store-not-found");
    let no_product = get(
        &app,
        &auditor.token,
        &events_path("Stock", ProductId::new()),
        404,
    )
    .await;
    assert_eq!(problem_slug(&no_product), "stock-not-found");

    // Accounts belong to no store: platform admins read their history, nobody else; nobody
    // gets their state.
    let account_events = events_path("Account", owner.account_id);
    let registered = app.get_json(&admin.token, &account_events).await;
    assert_eq!(
        registered["items"][0]["event_type"], "AccountRegistered",
        "{registered}"
    );
    get(&app, &owner.token, &account_events, 403).await;
    get(&app, &auditor.token, &account_events, 403).await;
    let unknown_account = get(
        &app,
        &admin.token,
        &events_path("Account", AccountId::new()),
        404,
    )
    .await;
    assert_eq!(problem_slug(&unknown_account), "account-not-found");
    get(
        &app,
        &admin.token,
        &state_path("Account", owner.account_id, ""),
        400,
    )
    .await;

    // Bad requests are 400 problems, never 500s.
    let both = get(
        &app,
        &auditor.token,
        &state_path(
            "Order",
            order,
            &format!("?version=1&as_of={}", instant(Utc::now())),
        ),
        400,
    )
    .await;
    assert_eq!(problem_slug(&both), "version-or-as-of");
    for path in [
        state_path("Order", order, "?as_of=yesterday"),
        state_path("Order", order, "?as_of=2026-13-45T00:00:00Z"),
        state_path("Order", order, "?version=-1"),
        state_path("Order", order, "?version=many"),
        events_path("Customer", order),
        events_path("Order", "not-a-uuid"),
        format!("{order_events}?cursor=garbage"),
        format!("{order_events}?limit=zero"),
    ] {
        let bad = get(&app, &auditor.token, &path, 400).await;
        assert!(bad["detail"].is_string(), "{path}: {bad}");
    }
    let cursor = get(
        &app,
        &auditor.token,
        &format!("{order_events}?cursor=garbage"),
        400,
    )
    .await;
    assert_eq!(problem_slug(&cursor), "invalid-cursor");

    // The KPIs as of a day: the same rule.
    let kpis = format!(
        "/api/v1/audit/stores/{}/kpis?as_of={}",
        shop.store_id,
        Utc::now().with_timezone(&MOSCOW).date_naive()
    );
    app.get_json(token, &kpis).await;
    get(&app, &vendor.token, &kpis, 403).await;
    let hidden = get(&app, &stranger.token, &kpis, 404).await;
    assert_eq!(problem_slug(&hidden), "store-not-found");
    let no_day = format!("/api/v1/audit/stores/{}/kpis", shop.store_id);
    for path in [
        no_day.clone(),
        format!("{no_day}?as_of=2026-02-30"),
        format!("{no_day}?as_of=today"),
    ] {
        get(&app, &auditor.token, &path, 400).await;
    }
    app.stop().await;
}

// Each value distinctive enough that finding it anywhere means it leaked.
const CUSTOMER_TELEGRAM_ID: i64 = 7_734_120_042;
const CUSTOMER_PHONE: &str = "+7 912 000-42-42";
const CUSTOMER_NAME: &str = "Ottoline Brackenridge";
const CUSTOMER_ADDRESS: &str = "Ulitsa Vavilova 42";
const LEGACY_TELEGRAM_ID: i64 = 5_550_007_777;

#[tokio::test]
async fn after_an_erasure_history_and_past_states_show_sealed_data_never_clear() {
    let app = spawn_app().await;
    let admin = app.staff("platform@erased-history.example", true).await;
    let owner = app.staff("owner@erased-history.example", false).await;
    let auditor = app.staff("auditor@erased-history.example", false).await;
    let shop = audited_shop(&app, &owner, &auditor, "Erased history").await;
    let product = shop.product(&app.app, "TEA", 100_00, 5).await;
    let customer_id = testing::register_account(&app.app, None, Some(CUSTOMER_TELEGRAM_ID), false)
        .await
        .expect("customer registered");
    let customer = testing::caller_for(customer_id, Channel::Telegram);
    let order = app
        .app
        .place_order(
            &customer,
            PlaceOrder {
                store_id: shop.store_id,
                lines: vec![OrderLineInput {
                    product_id: product,
                    quantity: 1,
                }],
                contact: Some(ContactDetails {
                    recipient: Some(CUSTOMER_NAME.into()),
                    phone: Some(CUSTOMER_PHONE.into()),
                    address: Some(CUSTOMER_ADDRESS.into()),
                    note: None,
                }),
            },
        )
        .await
        .expect("placed")
        .outcome;
    // An account older builds recorded with its Telegram id in clear (version 1.0).
    let legacy = AccountId::new();
    sqlx::query(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         values ('Account', $1, 1, 'AccountRegistered', '1.0', $2,
                 '{\"actor_role\": \"SYSTEM\", \"channel\": \"system\", \"request_id\": \"old\"}')",
    )
    .bind(legacy.to_string())
    .bind(
        json!({"AccountRegistered": {"account_id": legacy, "telegram_user_id": LEGACY_TELEGRAM_ID,
                 "email": null, "display_name": null, "platform_admin": false,
                 "channel": "telegram", "registered_at": "2026-11-20T10:00:00Z"}}),
    )
    .execute(&app.db.pool)
    .await
    .expect("a version 1.0 event");

    // The customer is erased (the log itself is never rewritten).
    for subject in [customer_id, legacy] {
        expect_json(
            app.call(
                Method::DELETE,
                &admin.token,
                &format!("/api/v1/users/{subject}/personal-data"),
                None,
            )
            .await,
            200,
            "erase",
        )
        .await;
    }

    let order_history = history(&app, &auditor.token, "Order", order, 50).await;
    let sealed = &order_history[0]["payload"]["OrderPlaced"]["contact"];
    assert_eq!(sealed["subject_id"], customer_id.to_string(), "{sealed}");
    assert!(
        sealed["ciphertext"].is_string(),
        "the contact, sealed: {sealed}"
    );
    let account_history = history(&app, &admin.token, "Account", customer_id, 50).await;
    assert_eq!(
        types(&account_history),
        ["AccountRegistered", "PersonalDataErased"]
    );
    assert!(
        account_history[0]["payload"]["AccountRegistered"]["telegram_user"]["ciphertext"]
            .is_string(),
        "{}",
        account_history[0]
    );
    let legacy_history = history(&app, &admin.token, "Account", legacy, 50).await;
    assert_eq!(
        types(&legacy_history),
        ["AccountRegistered", "PersonalDataErased"]
    );
    assert_eq!(legacy_history[0]["payload_withheld"], true);
    assert!(legacy_history[0].get("payload").is_none());
    assert_eq!(
        legacy_history[1]["payload_withheld"], false,
        "holds no personal data"
    );

    let mut seen = format!("{order_history:?}{account_history:?}{legacy_history:?}");
    for path in [
        state_path("Order", order, "?version=1"),
        state_path("Order", order, ""),
        state_path("Store", shop.store_id, ""),
    ] {
        seen.push_str(&app.get_json(&auditor.token, &path).await.to_string());
    }
    for secret in [
        CUSTOMER_TELEGRAM_ID.to_string(),
        LEGACY_TELEGRAM_ID.to_string(),
        CUSTOMER_PHONE.into(),
        "912 000-42-42".into(),
        CUSTOMER_NAME.into(),
        "Brackenridge".into(),
        CUSTOMER_ADDRESS.into(),
        "Vavilova".into(),
    ] {
        assert!(!seen.contains(&secret), "{secret} is shown in clear");
    }
    app.stop().await;
}

/// Moves the events `condition` (SQL over `events`) selects in time, as if they had happened
/// at another time: every RFC 3339 time in their payloads by `decided`, their `recorded_at` by
/// `recorded`. (How a test gets a store with a past; the service never rewrites its log.)
async fn move_events(pool: &PgPool, condition: &str, decided: Duration, recorded: Duration) {
    fn shift(value: &mut Value, by: Duration) {
        match value {
            Value::String(text) => {
                if let Ok(time) = DateTime::parse_from_rfc3339(text) {
                    *text = (time.with_timezone(&Utc) + by)
                        .to_rfc3339_opts(SecondsFormat::AutoSi, true);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| shift(v, by)),
            Value::Object(fields) => fields.values_mut().for_each(|v| shift(v, by)),
            _ => {}
        }
    }
    let rows: Vec<(i64, Value)> = sqlx::query_as(&format!(
        "select global_position, payload::jsonb from events where {condition}"
    ))
    .fetch_all(pool)
    .await
    .expect("events to move");
    assert!(!rows.is_empty(), "{condition}");
    for (position, mut payload) in rows {
        shift(&mut payload, decided);
        sqlx::query(
            "update events set payload = $2::text::json, recorded_at = recorded_at + $3
              where global_position = $1",
        )
        .bind(position)
        .bind(payload.to_string())
        .bind(recorded)
        .execute(pool)
        .await
        .expect("move an event");
    }
}

/// An instant of local day `day` in Moscow.
fn moscow(day: NaiveDate, h: u32, m: u32, s: u32, micros: u32) -> DateTime<Utc> {
    MOSCOW
        .from_local_datetime(
            &day.and_hms_micro_opt(h, m, s, micros)
                .expect("a time of day"),
        )
        .single()
        .expect("Moscow has no clock changes")
        .with_timezone(&Utc)
}

fn status_counts(figures: &Value) -> Vec<(String, i64)> {
    figures["orders_by_status"]
        .as_array()
        .expect("statuses")
        .iter()
        .map(|s| {
            (
                s["status"].as_str().expect("status").to_owned(),
                s["orders"].as_i64().expect("orders"),
            )
        })
        .collect()
}

#[tokio::test]
async fn kpis_as_of_a_day_count_only_what_was_recorded_by_its_end() {
    let app = spawn_app().await;
    let owner = app.staff("owner@kpi-history.example", false).await;
    let auditor = app.staff("auditor@kpi-history.example", false).await;
    let shop = audited_shop(&app, &owner, &auditor, "KPI history").await;
    let product = shop.product(&app.app, "TEA", 500_00, 10).await;
    let (customer_a, buyer_a) = customer();
    let order_a = shop
        .place(&app.app, &buyer_a, &[(product, 1)])
        .await
        .expect("placed");
    app.wait_for_projections().await;
    // Everything so far happened two days ago (day D): the store opened, order A was placed.
    let today = Utc::now().with_timezone(&MOSCOW).date_naive();
    let day = today - Duration::days(2);
    move_events(&app.db.pool, "true", -Duration::days(2), -Duration::days(2)).await;

    // Order C was decided at 23:59:59.5 on day D but recorded half a second after midnight:
    // its placement is in day D's bucket of the live tables, yet it had not happened by the end
    // of day D.
    let (_, buyer_c) = customer();
    let order_c = shop
        .place(&app.app, &buyer_c, &[(product, 1)])
        .await
        .expect("placed");
    let (placed_at, recorded_at): (String, DateTime<Utc>) = sqlx::query_as(
        "select payload -> 'OrderPlaced' ->> 'placed_at', recorded_at from events
          where aggregate_type = 'Order' and aggregate_id = $1 and sequence = 1",
    )
    .bind(order_c.to_string())
    .fetch_one(&app.db.pool)
    .await
    .expect("order C");
    let placed_at: DateTime<Utc> = placed_at.parse().expect("placed_at");
    move_events(
        &app.db.pool,
        &format!(
            "transaction_id = (select transaction_id from events
                                where aggregate_type = 'Order' and aggregate_id = '{order_c}')"
        ),
        moscow(day, 23, 59, 59, 500_000) - placed_at,
        moscow(day + Duration::days(1), 0, 0, 0, 500_000) - recorded_at,
    )
    .await;

    // Today order A is paid and order B placed.
    let receipt = testing::submit_receipt(&app.app, &buyer_a, receipt_for(order_a, customer_a))
        .await
        .expect("submitted");
    app.app
        .verify_receipt(
            &shop.access::<grant::ReviewReceipts>(&app.app).await,
            receipt,
        )
        .await
        .expect("verified");
    let (_, buyer_b) = customer();
    shop.place(&app.app, &buyer_b, &[(product, 1)])
        .await
        .expect("placed");

    let kpis = |as_of: NaiveDate, from: Option<NaiveDate>| {
        let mut path = format!("/api/v1/audit/stores/{}/kpis?as_of={as_of}", shop.store_id);
        if let Some(from) = from {
            path.push_str(&format!("&from={from}"));
        }
        path
    };

    // As of the end of day D: A placed and unpaid; C not yet recorded.
    let end_of_d = app.get_json(&auditor.token, &kpis(day, None)).await;
    assert_eq!(end_of_d["as_of"], day.to_string());
    assert_eq!(end_of_d["timezone"], "Europe/Moscow");
    assert_eq!(end_of_d["day_ended"], true);
    assert_eq!(
        at(&end_of_d["until"]),
        moscow(day, 23, 59, 59, 999_999),
        "the last microsecond of the day"
    );
    let figures = &end_of_d["figures"];
    assert_eq!(
        (figures["from"].clone(), figures["to"].clone()),
        (json!(day.to_string()), json!(day.to_string()))
    );
    assert_eq!(figures["orders_placed"], 1, "{end_of_d}");
    assert_eq!(figures["orders_paid"], 0);
    assert_eq!(figures["revenue"]["amount_minor"], 0);
    assert_eq!(status_counts(figures), [("AWAITING_PAYMENT".into(), 1)]);

    // A day later, day D's own figures have moved: C was recorded after midnight.
    let next_day = app
        .get_json(&auditor.token, &kpis(day + Duration::days(1), Some(day)))
        .await;
    assert_eq!(next_day["figures"]["orders_placed"], 2, "{next_day}");
    assert_eq!(
        status_counts(&next_day["figures"]),
        [("AWAITING_PAYMENT".into(), 2)]
    );

    // As of today (still under way): A paid today, B placed today.
    let so_far = app.get_json(&auditor.token, &kpis(today, None)).await;
    assert_eq!(so_far["day_ended"], false);
    let figures = &so_far["figures"];
    assert_eq!(figures["orders_placed"], 1, "{so_far}");
    assert_eq!(figures["orders_paid"], 1);
    assert_eq!(figures["revenue"]["amount_minor"], 500_00);
    assert_eq!(figures["receipts_verified"], 1);
    assert_eq!(
        status_counts(figures),
        [("AWAITING_PAYMENT".into(), 2), ("PAID".into(), 1)]
    );
    let all = app.get_json(&auditor.token, &kpis(today, Some(day))).await;
    assert_eq!(all["figures"]["orders_placed"], 3);
    assert_eq!(all["figures"]["orders_paid"], 1);
    assert!(
        all["events_replayed"].as_i64().expect("count")
            > end_of_d["events_replayed"].as_i64().expect("count")
    );

    // The live tables, rebuilt from the same log, cannot say how day D stood at its end: they
    // count C in day D (by the time it was decided), and only know today's statuses.
    let kpis_projection = projections::read_models::by_name("kpis").expect("kpis");
    projections::maintenance::rebuild(&app.db.pool, &*kpis_projection, &|_, _| {})
        .await
        .expect("rebuild");
    let live = app
        .get_json(
            &auditor.token,
            &format!(
                "/api/v1/analytics/dashboard?store_id={}&from={day}&to={day}",
                shop.store_id
            ),
        )
        .await;
    assert_eq!(live["orders_placed"], 2, "{live}");
    assert_ne!(status_counts(&live), status_counts(&end_of_d["figures"]));

    // Before the store existed, and days to come, are refused clearly.
    let before = get(
        &app,
        &auditor.token,
        &kpis(day - Duration::days(1), None),
        404,
    )
    .await;
    assert_eq!(problem_slug(&before), "did-not-exist-then");
    let tomorrow = get(
        &app,
        &auditor.token,
        &kpis(today + Duration::days(1), None),
        409,
    )
    .await;
    assert_eq!(problem_slug(&tomorrow), "not-reached-yet");
    let backwards = get(&app, &auditor.token, &kpis(day, Some(today)), 422).await;
    assert_eq!(problem_slug(&backwards), "invalid-from");
    app.stop().await;
}
