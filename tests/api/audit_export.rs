//! Exporting and following the log (`GET /api/v1/audit/export`, `GET /api/v1/audit/events.csv`,
//! `shopfront audit export`, `shopfront audit tail`): exactly the slice asked for, in log order,
//! with every field; only for those who may read it; streamed; personal data sealed, before and
//! after an erasure; the CLI writes what the API sends; a tail restarted from the last position
//! it printed misses nothing and repeats nothing.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use aggregates::{AccountId, Channel, ProductId};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::{json, Value};
use shopfront::app::{grant, ContactDetails, OrderLineInput, PlaceOrder};
use shopfront::testing;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use uuid::Uuid;

use crate::cli::shopfront;
use crate::helpers::{
    customer, expect_json, problem_slug, spawn_app, Shop, Staff, TestApp, TestDb,
};

/// How long a test waits for a line the tail owes it.
const OWED: Duration = Duration::from_secs(20);

/// Every key a line has (`store_id` only when the event belongs to a store).
const KEYS: [&str; 10] = [
    "position",
    "transaction_id",
    "recorded_at",
    "aggregate_type",
    "aggregate_id",
    "sequence",
    "event_type",
    "event_version",
    "payload",
    "metadata",
];

/// Two stores of two owners, a product and an order in each, and an auditor of the first with
/// an AUDITOR API token.
struct World {
    admin: Staff,
    owner: Staff,
    shop: Shop,
    other: Shop,
    product: ProductId,
    auditor_token: String,
    customer: AccountId,
}

async fn world(app: &TestApp) -> World {
    let admin = app.staff("platform@example.com", true).await;
    let owner = app.staff("owner@example.com", false).await;
    let other_owner = app.staff("other-owner@example.com", false).await;
    let auditor = app.staff("auditor@example.com", false).await;
    let shop = app.shop_of(&owner, "Audited tea").await;
    let other = app.shop_of(&other_owner, "Other tea").await;
    app.post_json(
        &owner.token,
        &format!("/api/v1/stores/{}/staff", shop.store_id),
        json!({"account_id": auditor.account_id.0, "role": "AUDITOR"}),
        200,
    )
    .await;
    let auditor_token = app
        .post_json(
            &auditor.token,
            "/api/v1/api-tokens",
            json!({"name": "audit export", "store_ids": [shop.store_id.0], "role": "AUDITOR"}),
            201,
        )
        .await["token"]
        .as_str()
        .expect("API token")
        .to_owned();
    let product = shop.product(&app.app, "TEA", 890_00, 20).await;
    let other_product = other.product(&app.app, "OTHER", 100_00, 20).await;
    let (customer, caller) = customer();
    shop.place(&app.app, &caller, &[(product, 2)])
        .await
        .expect("order");
    other
        .place(&app.app, &caller, &[(other_product, 1)])
        .await
        .expect("other order");
    app.wait_for_projections().await;
    World {
        admin,
        owner,
        shop,
        other,
        product,
        auditor_token,
        customer,
    }
}

/// An export's answer: status, headers, and its lines (or the problem body).
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    lines: Vec<Value>,
    text: String,
}

async fn export(app: &TestApp, token: &str, query: &str) -> Answer {
    let response = app
        .call(
            reqwest::Method::GET,
            token,
            &format!("/api/v1/audit/export?{query}"),
            None,
        )
        .await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let lines = if status == 200 {
        text.lines()
            .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
            .collect()
    } else {
        Vec::new()
    };
    Answer {
        status,
        headers,
        lines,
        text,
    }
}

fn positions(lines: &[Value]) -> Vec<i64> {
    lines
        .iter()
        .map(|line| line["position"].as_i64().expect("position"))
        .collect()
}

/// The global positions of the audit trail rows matching `condition` (SQL over
/// `audit_events`, the read model that decodes each event and learns its store on its own), in
/// log order.
async fn audit_trail(pool: &PgPool, condition: &str, binds: &[&str]) -> Vec<i64> {
    let sql = format!(
        "select global_position from audit_events where {condition}
          order by transaction_id, global_position"
    );
    let mut query = sqlx::query_scalar(&sql);
    for bind in binds {
        query = query.bind(*bind);
    }
    query.fetch_all(pool).await.expect("audit trail")
}

/// An `events` row: position, transaction, time, aggregate type and id, sequence, event type
/// and version, payload, metadata.
type StoredRow = (
    i64,
    i64,
    DateTime<Utc>,
    String,
    String,
    i64,
    String,
    String,
    Value,
    Value,
);

/// The stored event at each position: its columns as the log holds them.
async fn stored(pool: &PgPool, positions: &[i64]) -> HashMap<i64, Value> {
    let rows: Vec<StoredRow> = sqlx::query_as(
        "select global_position, transaction_id::text::bigint, recorded_at, aggregate_type,
                    aggregate_id, sequence, event_type, event_version, payload, metadata
               from events where global_position = any($1)",
    )
    .bind(positions)
    .fetch_all(pool)
    .await
    .expect("events");
    rows.into_iter()
        .map(|r| {
            (
                r.0,
                json!({"position": r.0, "transaction_id": r.1, "recorded_at": r.2,
                       "aggregate_type": r.3, "aggregate_id": r.4, "sequence": r.5,
                       "event_type": r.6, "event_version": r.7, "payload": r.8, "metadata": r.9}),
            )
        })
        .collect()
}

/// Asserts each line holds exactly the stored event at its position (and `store_id`).
async fn assert_lines_are_the_stored_events(pool: &PgPool, lines: &[Value], store: Option<Uuid>) {
    let stored = stored(pool, &positions(lines)).await;
    for line in lines {
        let position = line["position"].as_i64().expect("position");
        let event = &stored[&position];
        for key in KEYS {
            if key == "recorded_at" {
                let exported: DateTime<Utc> = line[key]
                    .as_str()
                    .and_then(|at| at.parse().ok())
                    .expect("RFC 3339 time");
                let at: DateTime<Utc> = serde_json::from_value(event[key].clone()).expect("time");
                assert_eq!(exported, at, "{line}");
                assert!(line[key].as_str().is_some_and(|at| at.ends_with('Z')));
            } else {
                assert_eq!(line[key], event[key], "{key} of {line}");
            }
        }
        if let Some(store) = store {
            assert_eq!(line["store_id"], store.to_string(), "{line}");
        }
        let keys = line.as_object().expect("object").len();
        assert_eq!(
            keys,
            KEYS.len() + usize::from(line.get("store_id").is_some())
        );
    }
}

#[tokio::test]
async fn a_stores_export_is_exactly_its_slice_of_the_log_in_log_order_with_every_field() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let store = w.shop.store_id.0;

    let answer = export(&app, &w.auditor_token, &format!("store_id={store}")).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.headers["content-type"], "application/x-ndjson");
    let expected = audit_trail(&app.db.pool, "store_id = $1::uuid", &[&store.to_string()]).await;
    assert!(
        expected.len() >= 6,
        "store, product, stock, order: {expected:?}"
    );
    assert_eq!(
        positions(&answer.lines),
        expected,
        "exactly the store's events, in log order"
    );
    assert_lines_are_the_stored_events(&app.db.pool, &answer.lines, Some(store)).await;
    let others = audit_trail(
        &app.db.pool,
        "store_id = $1::uuid",
        &[&w.other.store_id.0.to_string()],
    )
    .await;
    assert!(positions(&answer.lines).iter().all(|p| !others.contains(p)));
    // The slice ends at the log's head when the export started: what came since follows after.
    let up_to: i64 = answer.headers["x-export-up-to"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("X-Export-Up-To");
    let head = projections::log::last_committed(&app.db.pool)
        .await
        .expect("head")
        .expect("events");
    assert_eq!(up_to, head.global_position);
    w.shop
        .place(&app.app, &customer().1, &[(w.product, 1)])
        .await
        .expect("one more order");
    // Readers see a commit once no older transaction is open (the sealer's or a projection's
    // may be, for a moment): the projections having applied it says it is visible.
    app.wait_for_projections().await;
    let since = export(
        &app,
        &w.auditor_token,
        &format!("store_id={store}&after={up_to}"),
    )
    .await;
    let placed: Vec<&str> = since
        .lines
        .iter()
        .filter_map(|line| line["event_type"].as_str())
        .collect();
    assert!(placed.contains(&"OrderPlaced"), "{placed:?}");
    let first = positions(&answer.lines);
    assert!(positions(&since.lines).iter().all(|p| !first.contains(p)));
    app.stop().await;
}

#[tokio::test]
async fn exports_filter_by_aggregate_type_time_and_actor_and_resume_after_a_position() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let store = w.shop.store_id.0.to_string();
    let pool = &app.db.pool;
    let token = &w.auditor_token;

    let orders = export(
        &app,
        token,
        &format!("store_id={store}&aggregate_type=Order"),
    )
    .await;
    assert_eq!(
        positions(&orders.lines),
        audit_trail(
            pool,
            "store_id = $1::uuid and aggregate_type = 'Order'",
            &[&store]
        )
        .await
    );
    assert!(!orders.lines.is_empty());

    let customers = export(
        &app,
        token,
        &format!("store_id={store}&actor_id={}", w.customer),
    )
    .await;
    let by_customer = audit_trail(
        pool,
        "store_id = $1::uuid and actor_id = $2::uuid",
        &[&store, &w.customer.to_string()],
    )
    .await;
    assert!(!by_customer.is_empty());
    assert_eq!(positions(&customers.lines), by_customer);
    assert!(customers
        .lines
        .iter()
        .all(|l| l["metadata"]["actor_id"] == w.customer.to_string()));

    // From the order's time on, and before it.
    let all = export(&app, token, &format!("store_id={store}")).await;
    let placed = all
        .lines
        .iter()
        .find(|l| l["event_type"] == "OrderPlaced")
        .expect("the order");
    let at = placed["recorded_at"].as_str().expect("time").to_owned();
    let encoded = at.replace('+', "%2B");
    let since = export(&app, token, &format!("store_id={store}&from={encoded}")).await;
    let before = export(&app, token, &format!("store_id={store}&to={encoded}")).await;
    let at: DateTime<Utc> = at.parse().expect("time");
    let recorded = |l: &Value| -> DateTime<Utc> {
        l["recorded_at"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("time")
    };
    let expected_since: Vec<i64> = all
        .lines
        .iter()
        .filter(|l| recorded(l) >= at)
        .map(|l| l["position"].as_i64().expect("position"))
        .collect();
    assert!(expected_since.contains(&placed["position"].as_i64().expect("position")));
    assert_eq!(positions(&since.lines), expected_since);
    assert_eq!(
        positions(&since.lines).len() + positions(&before.lines).len(),
        all.lines.len()
    );
    assert!(before.lines.iter().all(|l| recorded(l) < at));

    // Resuming after any line gives exactly the rest.
    let all_positions = positions(&all.lines);
    for cut in [0, 1, all_positions.len() / 2, all_positions.len() - 1] {
        let after = all_positions[cut];
        let rest = export(&app, token, &format!("store_id={store}&after={after}")).await;
        assert_eq!(positions(&rest.lines), all_positions[cut + 1..].to_vec());
    }
    let from_zero = export(&app, token, &format!("store_id={store}&after=0")).await;
    assert_eq!(positions(&from_zero.lines), all_positions);
    app.stop().await;
}

#[tokio::test]
async fn only_a_stores_auditors_and_platform_admins_may_export_and_bad_input_is_a_problem() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let store = w.shop.store_id.0;
    let other = w.other.store_id.0;

    for (token, query, status, slug) in [
        // The auditor's token is for its store only.
        (
            w.auditor_token.as_str(),
            format!("store_id={other}"),
            403,
            "forbidden",
        ),
        (
            w.auditor_token.as_str(),
            format!("store_id={}", Uuid::now_v7()),
            403,
            "forbidden",
        ),
        // The whole platform is for platform admins (signed in themselves) only.
        (w.auditor_token.as_str(), String::new(), 403, "forbidden"),
        (w.owner.token.as_str(), String::new(), 403, "forbidden"),
        (
            w.owner.token.as_str(),
            format!("store_id={other}"),
            403,
            "forbidden",
        ),
        (
            w.auditor_token.as_str(),
            format!("store_id={store}&after=999999"),
            422,
            "invalid-after",
        ),
        (
            w.auditor_token.as_str(),
            format!("store_id={store}&after=-1"),
            422,
            "invalid-after",
        ),
        (
            w.auditor_token.as_str(),
            format!("store_id={store}&from=yesterday"),
            400,
            "invalid-request",
        ),
        (
            w.auditor_token.as_str(),
            "store_id=not-a-uuid".to_owned(),
            400,
            "invalid-request",
        ),
        (
            "not-a-token",
            format!("store_id={store}"),
            401,
            "invalid-token",
        ),
    ] {
        let response = app
            .call(
                reqwest::Method::GET,
                token,
                &format!("/api/v1/audit/export?{query}"),
                None,
            )
            .await;
        let body = expect_json(response, status, &query).await;
        assert_eq!(problem_slug(&body), slug, "{query}: {body}");
    }
    // The owner may read their own store's.
    let owners = export(&app, &w.owner.token, &format!("store_id={store}")).await;
    assert_eq!(owners.status, 200);

    // A platform admin gets the whole platform: both stores, and the accounts (no store).
    let platform = export(&app, &w.admin.token, "").await;
    assert_eq!(platform.status, 200, "{}", platform.text);
    let everything = audit_trail(&app.db.pool, "true", &[]).await;
    assert_eq!(positions(&platform.lines), everything);
    let stores: Vec<Option<&str>> = platform
        .lines
        .iter()
        .map(|l| l["store_id"].as_str())
        .collect();
    assert!(stores.contains(&Some(store.to_string().as_str())));
    assert!(stores.contains(&Some(other.to_string().as_str())));
    let accounts: Vec<&Value> = platform
        .lines
        .iter()
        .filter(|l| l["aggregate_type"] == "Account")
        .collect();
    assert!(!accounts.is_empty());
    assert!(accounts.iter().all(|l| l.get("store_id").is_none()));
    assert_lines_are_the_stored_events(&app.db.pool, &platform.lines, None).await;
    // Each line's store is the one the audit trail learned for it.
    let learned: Vec<(i64, Option<Uuid>)> =
        sqlx::query_as("select global_position, store_id from audit_events")
            .fetch_all(&app.db.pool)
            .await
            .expect("stores");
    let learned: HashMap<i64, Option<Uuid>> = learned.into_iter().collect();
    for line in &platform.lines {
        let position = line["position"].as_i64().expect("position");
        assert_eq!(
            line["store_id"].as_str().map(|s| s.parse().expect("uuid")),
            learned[&position],
            "{line}"
        );
    }
    app.stop().await;
}

/// Appends `count` `StockReceived` events to `product`'s Stock in one statement (a history too
/// long to make command by command); returns the product's stock aggregate id.
async fn receive_in_bulk(pool: &PgPool, product: ProductId, count: i64) {
    sqlx::query(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         select 'Stock', $1, last.sequence + g, 'StockReceived', '1.0',
                json_build_object('StockReceived', json_build_object(
                    'quantity', 1, 'note', null, 'on_hand', 1000 + g, 'available', 1000 + g,
                    'at', to_char(now() at time zone 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))),
                '{\"actor_role\":\"SYSTEM\",\"channel\":\"system\",\"request_id\":\"bulk\"}'
           from (select max(sequence) as sequence from events
                  where aggregate_type = 'Stock' and aggregate_id = $1) last,
                generate_series(1, $2) g",
    )
    .bind(product.to_string())
    .bind(count)
    .execute(pool)
    .await
    .expect("bulk events");
}

#[tokio::test]
async fn a_large_export_streams_and_the_cli_writes_the_same_lines_as_the_api() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let store = w.shop.store_id.0;
    // More than two batches of the export.
    receive_in_bulk(&app.db.pool, w.product, 12_000).await;
    app.wait_for_projections().await;

    let response = app
        .call(
            reqwest::Method::GET,
            &w.auditor_token,
            &format!("/api/v1/audit/export?store_id={store}"),
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    // Streamed: no length known up front, sent in chunks as it is read.
    assert!(response.headers().get("content-length").is_none());
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    let mut body = response.bytes_stream();
    let mut api = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = body.next().await {
        api.extend_from_slice(&chunk.expect("chunk"));
        chunks += 1;
    }
    assert!(chunks > 1);
    let lines: Vec<Value> = std::str::from_utf8(&api)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert!(lines.len() > 12_000);
    assert_eq!(
        positions(&lines),
        audit_trail(&app.db.pool, "store_id = $1::uuid", &[&store.to_string()]).await
    );

    // The CLI writes the same bytes for the same slice, to a file or to standard output.
    let file = std::env::temp_dir().join(format!("audit-export-{}.ndjson", Uuid::now_v7()));
    let (url, path) = (app.db.url.clone(), file.display().to_string());
    let (to_file, to_stdout, platform) = tokio::task::spawn_blocking(move || {
        let env = [("DATABASE_URL", url.as_str())];
        let store = store.to_string();
        (
            shopfront(
                &["audit", "export", "--store", &store, "--output", &path],
                &env,
            ),
            shopfront(&["audit", "export", "--store", &store], &env),
            shopfront(&["audit", "export"], &env),
        )
    })
    .await
    .expect("the CLI ran");
    for out in [&to_file, &to_stdout, &platform] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let written = std::fs::read(&file).expect("the export file");
    let _ = std::fs::remove_file(&file);
    assert!(written == api, "the CLI's file is the API's body");
    assert!(
        to_stdout.stdout == api,
        "the CLI's output is the API's body"
    );
    assert!(
        String::from_utf8_lossy(&to_file.stderr)
            .contains(&format!("exported {} events", lines.len())),
        "{}",
        String::from_utf8_lossy(&to_file.stderr)
    );
    let admins = app
        .call(
            reqwest::Method::GET,
            &w.admin.token,
            "/api/v1/audit/export",
            None,
        )
        .await
        .bytes()
        .await
        .expect("body");
    assert!(
        platform.stdout == admins.to_vec(),
        "the whole platform's, too"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_csv_of_the_audit_trail_has_the_views_columns_and_every_row() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let store = w.shop.store_id.0;

    let response = app
        .call(
            reqwest::Method::GET,
            &w.auditor_token,
            &format!("/api/v1/audit/events.csv?store_id={store}"),
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    assert!(response.headers().get("content-length").is_none());
    let text = response.text().await.expect("csv");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    let view = app
        .get_json(
            &w.auditor_token,
            &format!("/api/v1/audit/events?store_id={store}&limit=200"),
        )
        .await;
    let items = view["items"].as_array().expect("items");
    assert_eq!(
        header,
        [
            "global_position",
            "aggregate_type",
            "aggregate_id",
            "sequence",
            "event_type",
            "event_version",
            "store_id",
            "actor_id",
            "actor_role",
            "channel",
            "request_id",
            "client_request_id",
            "correlation_id",
            "causation_position",
            "client_ip",
            "user_agent",
            "payload",
            "recorded_at",
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), items.len());
    for (row, item) in rows.iter().zip(items) {
        for (column, cell) in header.iter().zip(row.iter()) {
            let expected = &item[column.as_str()];
            match column.as_str() {
                "payload" => {
                    let payload: Value = serde_json::from_str(cell).expect("payload JSON");
                    assert_eq!(&payload, expected);
                }
                "recorded_at" => {
                    let at: DateTime<Utc> = cell.parse().expect("time");
                    let view: DateTime<Utc> =
                        serde_json::from_value(expected.clone()).expect("time");
                    assert_eq!(at, view);
                }
                _ => {
                    let expected = match expected {
                        Value::Null => String::new(),
                        Value::String(text) => text.clone(),
                        other => other.to_string(),
                    };
                    assert_eq!(cell, expected, "{column}");
                }
            }
        }
    }
    // Newest first and filtered, as the JSON view.
    let newest = app
        .call(
            reqwest::Method::GET,
            &w.auditor_token,
            &format!(
                "/api/v1/audit/events.csv?store_id={store}&newest_first=true&aggregate_type=Order"
            ),
            None,
        )
        .await
        .text()
        .await
        .expect("csv");
    let positions: Vec<i64> = csv::Reader::from_reader(newest.as_bytes())
        .records()
        .map(|r| r.expect("row")[0].parse().expect("position"))
        .collect();
    let orders = app
        .get_json(
            &w.auditor_token,
            &format!(
                "/api/v1/audit/events?store_id={store}&newest_first=true&aggregate_type=Order"
            ),
        )
        .await;
    let expected: Vec<i64> = orders["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["global_position"].as_i64().expect("position"))
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(positions, expected);
    // Another store's trail is not the auditor's.
    let refused = app
        .call(
            reqwest::Method::GET,
            &w.auditor_token,
            &format!("/api/v1/audit/events.csv?store_id={}", w.other.store_id.0),
            None,
        )
        .await;
    assert_eq!(
        problem_slug(&expect_json(refused, 403, "another store").await),
        "forbidden"
    );
    app.stop().await;
}

// Distinctive enough that finding one anywhere means it leaked.
const TELEGRAM_ID: i64 = 7_734_129_586;
const RECIPIENT: &str = "Zephyrine Quillfeather";
const PHONE: &str = "+7 912 345-67-89";
const ADDRESS: &str = "Ulitsa Lomonosova 17";
const LEGACY_TELEGRAM_ID: i64 = 5_550_009_876;
const OLD_IP: &str = "203.0.113.77";
const OLD_AGENT: &str = "ErasureProbe/7.3";

#[tokio::test]
async fn exports_hold_no_clear_personal_data_before_or_after_an_erasure() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let store = w.shop.store_id;
    // A customer known by Telegram, ordering with delivery details (all sealed in the events).
    let customer = testing::register_account(&app.app, None, Some(TELEGRAM_ID), false)
        .await
        .expect("customer");
    app.app
        .place_order(
            &testing::caller_for(customer, Channel::Telegram),
            PlaceOrder {
                store_id: store,
                lines: vec![OrderLineInput {
                    product_id: w.product,
                    quantity: 1,
                }],
                contact: Some(ContactDetails {
                    recipient: Some(RECIPIENT.into()),
                    phone: Some(PHONE.into()),
                    address: Some(ADDRESS.into()),
                    note: None,
                }),
            },
        )
        .await
        .expect("order");
    // What older builds wrote: a version 1.0 account event with the Telegram id in clear, and
    // metadata with the client's IP address and user agent.
    let legacy = AccountId::new();
    sqlx::query(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         values ('Account', $1, 1, 'AccountRegistered', '1.0', $2, $3)",
    )
    .bind(legacy.to_string())
    .bind(
        json!({"AccountRegistered": {"account_id": legacy, "telegram_user_id": LEGACY_TELEGRAM_ID,
                 "email": null, "display_name": null, "platform_admin": false,
                 "channel": "telegram", "registered_at": "2026-11-20T10:00:00Z"}}),
    )
    .bind(
        json!({"actor_role": "SYSTEM", "channel": "system", "request_id": "old",
                 "client_ip": OLD_IP, "user_agent": OLD_AGENT}),
    )
    .execute(&app.db.pool)
    .await
    .expect("a version 1.0 event");
    app.wait_for_projections().await;
    let secrets = [
        TELEGRAM_ID.to_string(),
        LEGACY_TELEGRAM_ID.to_string(),
        RECIPIENT.into(),
        "Quillfeather".into(),
        PHONE.into(),
        "345-67-89".into(),
        ADDRESS.into(),
        "Lomonosova".into(),
        OLD_IP.into(),
        OLD_AGENT.into(),
    ];
    let leaks = |text: &str| -> Vec<String> {
        secrets
            .iter()
            .filter(|s| text.contains(s.as_str()))
            .cloned()
            .collect()
    };
    // The log does hold the legacy clear id: the search below can find a leak.
    let in_log: i64 =
        sqlx::query_scalar("select count(*) from events e where strpos(e::text, $1) > 0")
            .bind(LEGACY_TELEGRAM_ID.to_string())
            .fetch_one(&app.db.pool)
            .await
            .expect("scan");
    assert_eq!(in_log, 1);

    let exports = |app: &TestApp| {
        let url = app.db.url.clone();
        let admin = w.admin.token.clone();
        let auditor = w.auditor_token.clone();
        let address = app.address.clone();
        async move {
            let client = reqwest::Client::new();
            let mut text = String::new();
            for (token, query) in [
                (&admin, String::new()),
                (&auditor, format!("store_id={}", store.0)),
            ] {
                let response = client
                    .get(format!("{address}/api/v1/audit/export?{query}"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .expect("export");
                assert_eq!(response.status(), 200);
                text.push_str(&response.text().await.expect("body"));
            }
            let csv = client
                .get(format!(
                    "{address}/api/v1/audit/events.csv?store_id={}",
                    store.0
                ))
                .bearer_auth(&auditor)
                .send()
                .await
                .expect("csv");
            text.push_str(&csv.text().await.expect("csv"));
            let cli = tokio::task::spawn_blocking(move || {
                shopfront(&["audit", "export"], &[("DATABASE_URL", url.as_str())])
            })
            .await
            .expect("the CLI ran");
            assert!(cli.status.success());
            text.push_str(&String::from_utf8_lossy(&cli.stdout));
            text
        }
    };
    let before = exports(&app).await;
    assert_eq!(leaks(&before), Vec::<String>::new());
    let legacy_line: Value = before
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["aggregate_id"] == legacy.to_string())
        .expect("the legacy event is exported");
    assert_eq!(legacy_line["payload"], Value::Null, "withheld");
    assert_eq!(
        legacy_line["metadata"],
        json!({"actor_role": "SYSTEM", "channel": "system", "request_id": "old"})
    );
    let sealed_before: Vec<Value> = before
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| {
            l["event_type"] == "OrderPlaced" && l["metadata"]["actor_id"] == customer.to_string()
        })
        .map(|l| l["payload"].clone())
        .collect();
    assert!(!sealed_before.is_empty());

    for person in [customer, legacy] {
        app.app
            .erase_person_from_console(person)
            .await
            .expect("erased");
    }
    app.wait_for_projections().await;
    let after = exports(&app).await;
    assert_eq!(leaks(&after), Vec::<String>::new());
    // The sealed values leave as stored: ciphertext nobody can open any more.
    let sealed_after: Vec<Value> = after
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| {
            l["event_type"] == "OrderPlaced" && l["metadata"]["actor_id"] == customer.to_string()
        })
        .map(|l| l["payload"].clone())
        .collect();
    assert_eq!(sealed_after, sealed_before);
    assert!(after.contains("PersonalDataErased"));
    app.stop().await;
}

/// `shopfront audit tail` running against `url`, its lines read as they come.
struct Tail {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Tail {
    fn start(url: &str, args: &[&str]) -> Tail {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_shopfront"))
            .args(["audit", "tail"])
            .args(args)
            .env("DATABASE_URL", url)
            .env("SHOPFRONT_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the tail");
        let stdout = child.stdout.take().expect("stdout");
        Tail {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// Lines until one at `position` (each line parsed).
    async fn until(&mut self, position: i64) -> Vec<Value> {
        let mut read = Vec::new();
        loop {
            let line = tokio::time::timeout(OWED, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no line at {position} within {OWED:?}; read {read:?}"))
                .expect("read")
                .expect("the tail is running");
            let line: Value = serde_json::from_str(&line).expect("a JSON line");
            let at = line["position"].as_i64();
            read.push(line);
            if at == Some(position) {
                return read;
            }
        }
    }
}

#[tokio::test]
async fn a_tail_restarted_from_the_last_position_printed_misses_nothing_and_repeats_nothing() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let store = w.shop.store_id.0.to_string();
    let pool = &app.db.pool;
    let trail = || async { audit_trail(pool, "store_id = $1::uuid", &[store.as_str()]).await };
    let start = *trail().await.last().expect("events");
    let access = w.shop.access::<grant::ManageStock>(&app.app).await;
    let receive = |n: i64| {
        let (app, access, product) = (&app.app, &access, w.product);
        async move {
            for _ in 0..n {
                app.receive_stock(access, product, 1, None)
                    .await
                    .expect("received");
            }
        }
    };

    let mut first = Tail::start(
        &app.db.url,
        &["--from", &start.to_string(), "--store", &store],
    );
    receive(3).await;
    // Another store's events never show.
    w.other.product(&app.app, "ELSE", 1_00, 1).await;
    app.wait_for_projections().await;
    let wanted = trail().await;
    let mut seen = first.until(*wanted.last().expect("events")).await;
    first.child.kill().await.expect("killed");

    // While it is down.
    receive(2).await;
    w.shop
        .place(&app.app, &customer().1, &[(w.product, 1)])
        .await
        .expect("order");
    app.wait_for_projections().await;
    let last_printed = seen
        .last()
        .and_then(|l| l["position"].as_i64())
        .expect("a line");
    let mut second = Tail::start(
        &app.db.url,
        &["--from", &last_printed.to_string(), "--store", &store],
    );
    receive(1).await;
    app.wait_for_projections().await;
    let wanted = trail().await;
    seen.extend(second.until(*wanted.last().expect("events")).await);
    let expected: Vec<i64> = wanted.into_iter().filter(|p| *p > start).collect();
    assert_eq!(positions(&seen), expected, "every event once, in log order");
    assert_lines_are_the_stored_events(pool, &seen, Some(w.shop.store_id.0)).await;

    // SIGTERM ends it cleanly.
    let pid = second.child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(OWED, second.child.wait())
        .await
        .expect("the tail stops")
        .expect("status");
    assert!(status.success(), "{status:?}");

    // A position no event has is a clear error.
    let url = app.db.url.clone();
    let unknown = tokio::task::spawn_blocking(move || {
        shopfront(
            &["audit", "tail", "--from", "99999999"],
            &[("DATABASE_URL", url.as_str())],
        )
    })
    .await
    .expect("the CLI ran");
    assert_eq!(unknown.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("--from 99999999: no event has this global position"),
        "{stderr}"
    );
    app.stop().await;
}

#[tokio::test]
async fn audit_commands_never_migrate_and_say_when_there_is_no_log() {
    let db = TestDb::empty().await;
    let url = db.url.clone();
    let (export, tail) = tokio::task::spawn_blocking(move || {
        let env = [("DATABASE_URL", url.as_str())];
        (
            shopfront(&["audit", "export"], &env),
            shopfront(&["audit", "tail", "--from", "0"], &env),
        )
    })
    .await
    .expect("the CLI ran");
    for out in [export, tail] {
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("holds no shopfront event log"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
    let tables: i64 = sqlx::query_scalar(
        "select count(*) from information_schema.tables where table_schema = 'public'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("tables");
    assert_eq!(tables, 0, "nothing was migrated");
}

#[tokio::test]
async fn the_websocket_events_topic_resumed_after_a_position_carries_what_the_export_does() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let store = w.shop.store_id;
    let all = export(&app, &w.auditor_token, &format!("store_id={}", store.0)).await;
    let after = all.lines[1]["position"].as_i64().expect("position");
    let exported = export(
        &app,
        &w.auditor_token,
        &format!("store_id={}&after={after}", store.0),
    )
    .await
    .lines;
    assert!(exported.len() >= 4);

    let mut feed = crate::live_feeds::Feed::connect(&app, &w.auditor_token).await;
    let replayed = feed.subscribe("events", Some(store), Some(after)).await;
    assert_eq!(positions(&replayed), positions(&exported));
    for (message, line) in replayed.iter().zip(&exported) {
        for key in [
            "transaction_id",
            "store_id",
            "aggregate_type",
            "aggregate_id",
            "sequence",
            "event_type",
            "event_version",
            "payload",
            "metadata",
        ] {
            assert_eq!(message[key], line[key], "{key}: {message} / {line}");
        }
        let at = |v: &Value| -> DateTime<Utc> {
            v["recorded_at"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .expect("time")
        };
        assert_eq!(at(message), at(line));
    }
    app.stop().await;
}
