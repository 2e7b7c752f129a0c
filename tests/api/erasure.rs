//! Erasure that really erases (ARCHITECTURE rule 3): once a customer and a staff member are
//! erased — one through the API, one through the CLI — no API response a platform admin, the
//! store's owner or its auditor can get, no table of the database and no log line holds their
//! e-mail, phone, name, address, IP address, user agent or Telegram id; the receipt file is gone;
//! they can no longer sign in; and the log still replays to the same read models.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use aggregates::{AccountId, Channel, ProductId, StoreId};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{json, Value};
use shopfront::app::{ContactDetails, OrderLineInput, PlaceOrder};
use shopfront::config::ServeSettings;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::fmt::MakeWriter;

use crate::cli::shopfront;
use crate::helpers::{expect_json, problem_slug, spawn_app_with, Staff, TestApp, STAFF_PASSWORD};
use crate::receipts_api::multipart;
use crate::telegram_auth::{init_data_named, widget, BOT_TOKEN};

/// Everything logged on this test's thread, as text. `#[tokio::test]` runs the service's tasks
/// (server, projections, process managers) on the test's own thread, so a subscriber set as this
/// thread's default sees every line the service writes while the test runs.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}

/// Where a person's requests come from (with `--trust-forwarded-for`, `X-Forwarded-For`).
struct Device {
    ip: &'static str,
    user_agent: &'static str,
}

// Each value distinctive enough that finding it anywhere means it leaked.
const CUSTOMER_TELEGRAM_ID: i64 = 7_734_129_586;
const CUSTOMER_FIRST_NAME: &str = "Zephyrine";
const CUSTOMER_LAST_NAME: &str = "Quillfeather";
const CUSTOMER_PHONE: &str = "+7 912 345-67-89";
const CUSTOMER_ADDRESS: &str = "Ulitsa Lomonosova 17";
const CUSTOMER_DEVICE: Device = Device {
    ip: "203.0.113.77",
    user_agent: "ErasureProbe/7.3 (customer phone)",
};
const STAFF_EMAIL: &str = "vesper.orloff@erasure-probe.example";
const STAFF_TELEGRAM_ID: i64 = 6_612_398_745;
const STAFF_DEVICE: Device = Device {
    ip: "198.51.100.23",
    user_agent: "ErasureProbe/7.3 (staff laptop)",
};

/// What must not be found anywhere after the erasure.
fn personal_data() -> Vec<String> {
    vec![
        CUSTOMER_TELEGRAM_ID.to_string(),
        CUSTOMER_FIRST_NAME.into(),
        CUSTOMER_LAST_NAME.into(),
        CUSTOMER_PHONE.into(),
        "912 345-67-89".into(),
        "Lomonosova".into(),
        CUSTOMER_DEVICE.ip.into(),
        CUSTOMER_DEVICE.user_agent.into(),
        STAFF_EMAIL.into(),
        "vesper.orloff".into(),
        STAFF_TELEGRAM_ID.to_string(),
        STAFF_DEVICE.ip.into(),
        STAFF_DEVICE.user_agent.into(),
    ]
}

fn leaks<'a>(text: &str, secrets: &'a [String]) -> Vec<&'a str> {
    secrets
        .iter()
        .filter(|secret| text.contains(secret.as_str()))
        .map(String::as_str)
        .collect()
}

/// A request from `device`, with `token` when given.
fn from(
    app: &TestApp,
    device: &Device,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> reqwest::RequestBuilder {
    let request = app
        .client
        .request(method, format!("{}{path}", app.address))
        .header("x-forwarded-for", device.ip)
        .header("user-agent", device.user_agent);
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    request.send().await.expect("request")
}

/// A PNG receipt no other test uploads (files are stored by content: erasing must delete this
/// one only).
fn unique_png() -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0".to_vec();
    bytes.extend_from_slice(uuid::Uuid::now_v7().as_bytes());
    bytes
}

/// Every file under `dir` whose content is `content`.
fn files_with(dir: &Path, content: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_with(&path, content));
        } else if std::fs::read(&path).is_ok_and(|bytes| bytes == content) {
            found.push(path);
        }
    }
    found
}

/// The people and places of the scene.
struct Scene {
    admin: Staff,
    owner: Staff,
    auditor: Staff,
    store: String,
    customer: AccountId,
    customer_token: String,
    staff: AccountId,
    staff_token: String,
    order: String,
    receipt: String,
    file: Vec<u8>,
}

/// Everything the platform admin, the owner and the auditor can read about the scene, as one
/// text: user directory (list, search, profiles), staff, customers, orders, receipts, the audit
/// trail.
async fn everything_visible(app: &TestApp, s: &Scene) -> String {
    let store = &s.store;
    let audit = format!("/api/v1/audit/events?store_id={store}&limit=200");
    let reads: Vec<(&Staff, String)> = vec![
        (&s.admin, "/api/v1/users?limit=200".into()),
        (&s.admin, format!("/api/v1/users/{}", s.customer)),
        (&s.admin, format!("/api/v1/users/{}", s.staff)),
        (&s.admin, format!("/api/v1/users?q={STAFF_EMAIL}")),
        (&s.admin, "/api/v1/users?q=vesper".into()),
        (&s.admin, format!("/api/v1/users?q={CUSTOMER_TELEGRAM_ID}")),
        (&s.admin, format!("/api/v1/users?q={STAFF_TELEGRAM_ID}")),
        (&s.owner, format!("/api/v1/stores/{store}/staff")),
        (&s.owner, format!("/api/v1/stores/{store}/customers")),
        (
            &s.owner,
            format!("/api/v1/stores/{store}/customers/{}", s.customer),
        ),
        (
            &s.owner,
            format!("/api/v1/stores/{store}/customers?telegram_user_id={CUSTOMER_TELEGRAM_ID}"),
        ),
        (&s.owner, format!("/api/v1/stores/{store}/orders")),
        (&s.owner, format!("/api/v1/orders/{}", s.order)),
        (&s.owner, format!("/api/v1/stores/{store}/receipts")),
        (&s.owner, format!("/api/v1/receipts/{}", s.receipt)),
        (&s.owner, audit.clone()),
        (&s.auditor, audit),
        (&s.auditor, format!("/api/v1/stores/{store}/orders")),
    ];
    let mut text = String::new();
    for (who, path) in reads {
        let (status, body) = app.status_of(Method::GET, &who.token, &path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        text.push_str(&body.to_string());
        text.push('\n');
    }
    text
}

/// Every row of every table (all schemas of the database but the system's), as text, searched
/// for each secret: `row::text` renders every column, whatever its type (text, json, bigint,
/// bytea as hex). Returns `table: secret` for each hit.
async fn found_in_tables(pool: &sqlx::PgPool, secrets: &[String]) -> Vec<String> {
    let tables: Vec<(String, String)> = sqlx::query_as(
        "select table_schema, table_name from information_schema.tables
          where table_type = 'BASE TABLE'
            and table_schema not in ('pg_catalog', 'information_schema')",
    )
    .fetch_all(pool)
    .await
    .expect("tables");
    assert!(tables.len() > 30, "every table: {tables:?}");
    let mut hits = Vec::new();
    for (schema, table) in tables {
        let sql = format!(
            "select count(*) from {}.{} t where strpos(t::text, $1) > 0",
            shopfront::db::quote_ident(&schema),
            shopfront::db::quote_ident(&table)
        );
        for secret in secrets {
            let n: i64 = sqlx::query_scalar(&sql)
                .bind(secret)
                .fetch_one(pool)
                .await
                .expect("scan a table");
            if n > 0 {
                hits.push(format!("{schema}.{table}: {secret}"));
            }
        }
    }
    hits
}

/// A store with an owner, an auditor and a product; a customer who signed in from the Mini App,
/// ordered with delivery details and uploaded a receipt; a staff member who logs in with an
/// e-mail, linked Telegram and verified that receipt. Every request from its device.
async fn scene(app: &TestApp) -> Scene {
    let admin = app.staff("platform@erasure-probe.example", true).await;
    let owner = app.staff("owner@erasure-probe.example", false).await;
    let auditor = app.staff("auditor@erasure-probe.example", false).await;
    let store = app.open_store(&admin, &owner, "Erasure tea").await;
    app.post_json(
        &owner.token,
        &format!("/api/v1/stores/{store}/staff"),
        json!({"account_id": auditor.account_id.0, "role": "AUDITOR"}),
        200,
    )
    .await;
    let product = app
        .post_json(
            &owner.token,
            &format!("/api/v1/stores/{store}/products"),
            json!({"name": "Tea", "sku": "TEA", "initial_stock": 10,
                   "price": {"amount_minor": 890_00, "currency": "RUB"}}),
            201,
        )
        .await["product_id"]
        .as_str()
        .expect("product")
        .to_owned();

    // The customer signs in from the Mini App (and so registers).
    let init_data = init_data_named(
        CUSTOMER_TELEGRAM_ID,
        CUSTOMER_FIRST_NAME,
        CUSTOMER_LAST_NAME,
        chrono::Utc::now().timestamp(),
    );
    let signed_in = expect_json(
        send(
            from(
                app,
                &CUSTOMER_DEVICE,
                Method::POST,
                "/api/v1/auth/telegram/webapp",
                None,
            )
            .json(&json!({ "init_data": init_data })),
        )
        .await,
        200,
        "Mini App sign-in",
    )
    .await;
    let customer = AccountId(
        signed_in["account_id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("account id"),
    );
    let customer_token = signed_in["tokens"]["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    // Their order, placed through the bot (the application, as the bot calls it).
    let order = app
        .app
        .place_order(
            &shopfront::testing::caller_for(customer, Channel::Telegram),
            PlaceOrder {
                store_id: StoreId(store.parse().expect("store id")),
                lines: vec![OrderLineInput {
                    product_id: ProductId(product.parse().expect("product id")),
                    quantity: 1,
                }],
                contact: Some(ContactDetails {
                    recipient: Some(format!("{CUSTOMER_FIRST_NAME} {CUSTOMER_LAST_NAME}")),
                    phone: Some(CUSTOMER_PHONE.into()),
                    address: Some(CUSTOMER_ADDRESS.into()),
                    note: None,
                }),
            },
        )
        .await
        .expect("order placed")
        .outcome
        .to_string();
    let file = unique_png();
    let (content_type, body) = multipart(&file, &[]);
    let uploaded = expect_json(
        send(
            from(
                app,
                &CUSTOMER_DEVICE,
                Method::POST,
                &format!("/api/v1/orders/{order}/receipts"),
                Some(&customer_token),
            )
            .header("content-type", content_type)
            .body(body),
        )
        .await,
        201,
        "receipt upload",
    )
    .await;
    let receipt = uploaded["receipt_id"].as_str().expect("receipt").to_owned();

    // The staff member logs in with their e-mail, joins the store (named by e-mail), links
    // Telegram and verifies the receipt.
    let staff = app
        .app
        .create_staff_account(STAFF_EMAIL, SecretString::from(STAFF_PASSWORD), false)
        .await
        .expect("staff account");
    let login = expect_json(
        send(
            from(app, &STAFF_DEVICE, Method::POST, "/api/v1/auth/login", None)
                .json(&json!({"email": STAFF_EMAIL, "password": STAFF_PASSWORD})),
        )
        .await,
        200,
        "staff login",
    )
    .await;
    let staff_token = login["access_token"].as_str().expect("token").to_owned();
    app.post_json(
        &owner.token,
        &format!("/api/v1/stores/{store}/staff"),
        json!({"email": STAFF_EMAIL, "role": "ADMIN"}),
        200,
    )
    .await;
    // Linking Telegram needs a fresh proof that it is them (ADR 0004).
    expect_json(
        send(
            from(
                app,
                &STAFF_DEVICE,
                Method::POST,
                "/api/v1/auth/reauthenticate",
                Some(&staff_token),
            )
            .json(&json!({"password": STAFF_PASSWORD})),
        )
        .await,
        200,
        "re-authenticate",
    )
    .await;
    expect_json(
        send(
            from(
                app,
                &STAFF_DEVICE,
                Method::POST,
                "/api/v1/auth/telegram/link",
                Some(&staff_token),
            )
            .json(&widget(STAFF_TELEGRAM_ID)),
        )
        .await,
        200,
        "link Telegram",
    )
    .await;
    expect_json(
        send(
            from(
                app,
                &STAFF_DEVICE,
                Method::POST,
                &format!("/api/v1/receipts/{receipt}/verify"),
                Some(&staff_token),
            )
            .json(&json!({})),
        )
        .await,
        200,
        "verify",
    )
    .await;
    app.wait_for_projections().await;
    Scene {
        admin,
        owner,
        auditor,
        store,
        customer,
        customer_token,
        staff,
        staff_token,
        order,
        receipt,
        file,
    }
}

#[tokio::test]
async fn after_erasure_no_response_table_or_log_line_holds_the_persons_data_and_the_log_replays() {
    let logs = LogBuffer::default();
    // tracing caches per call site whether anyone listens. With a single subscriber registered
    // it asks only the *current thread's* one, so a line first reached on another test's thread
    // (no subscriber there) would be cached as unwanted and never reach ours. A second,
    // do-nothing subscriber makes tracing ask every registered one instead.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("debug")
        // Span fields are logged when a span opens, whether or not anything is logged inside.
        .with_span_events(FmtSpan::NEW | FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(logs.clone())
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let mut settings = ServeSettings::for_tests();
    settings.telegram_bot_token = Some(SecretString::from(BOT_TOKEN));
    settings.edge.trust_forwarded_for = true;
    let app = spawn_app_with(settings).await;
    let s = scene(&app).await;
    let secrets = personal_data();

    // Before: the data is there to be found, so the searches below can find a leak.
    let visible = everything_visible(&app, &s).await;
    for secret in [
        CUSTOMER_FIRST_NAME.to_string(),
        CUSTOMER_TELEGRAM_ID.to_string(),
        STAFF_EMAIL.into(),
        STAFF_TELEGRAM_ID.to_string(),
        CUSTOMER_DEVICE.ip.into(),
        STAFF_DEVICE.user_agent.into(),
    ] {
        assert!(
            visible.contains(&secret),
            "{secret} is shown before erasure"
        );
    }
    assert!(
        found_in_tables(&app.db.pool, &secrets).await.len() >= 8,
        "the data is in the tables before erasure"
    );
    let file = app
        .call(
            Method::GET,
            &s.owner.token,
            &format!("/api/v1/receipts/{}/file", s.receipt),
            None,
        )
        .await;
    assert_eq!(file.status(), 200);
    assert_eq!(file.bytes().await.expect("file").to_vec(), s.file);

    // Only a platform admin erases, never themselves; an unknown id is a clear 404.
    let path = |id: &dyn std::fmt::Display| format!("/api/v1/users/{id}/personal-data");
    let (status, body) = app
        .status_of(Method::DELETE, &s.owner.token, &path(&s.customer), None)
        .await;
    assert_eq!((status, problem_slug(&body)), (403, "forbidden"));
    let (status, body) = app
        .status_of(
            Method::DELETE,
            &s.admin.token,
            &path(&s.admin.account_id),
            None,
        )
        .await;
    assert_eq!((status, problem_slug(&body)), (422, "invalid-account-id"));
    let (status, body) = app
        .status_of(
            Method::DELETE,
            &s.admin.token,
            &path(&uuid::Uuid::now_v7()),
            None,
        )
        .await;
    assert_eq!((status, problem_slug(&body)), (404, "account-not-found"));

    // The customer, through the API.
    let erased = expect_json(
        app.call(Method::DELETE, &s.admin.token, &path(&s.customer), None)
            .await,
        200,
        "erase the customer",
    )
    .await;
    assert_eq!(erased["account_id"], s.customer.to_string());
    assert_eq!(erased["event_recorded"], true, "{erased}");
    assert_eq!(erased["key_deleted"], true);
    assert_eq!(erased["telegram_identities_deleted"], 1);
    assert_eq!(erased["sessions_deleted"], 1);
    assert_eq!(erased["request_origins_deleted"], 2, "sign-up and upload");
    assert_eq!(erased["receipt_files_deleted"], 1);
    // Again: nothing left to do, and nothing goes wrong.
    let again = expect_json(
        app.call(Method::DELETE, &s.admin.token, &path(&s.customer), None)
            .await,
        200,
        "erase again",
    )
    .await;
    assert_eq!(
        (&again["event_recorded"], &again["key_deleted"]),
        (&json!(false), &json!(false))
    );

    // The staff member, through the CLI (a process of its own: its output is checked too).
    let url = app.db.url.clone();
    let storage = app.storage_dir.display().to_string();
    let subject = s.staff.to_string();
    let unknown = uuid::Uuid::now_v7().to_string();
    let (cli, cli_unknown) = tokio::task::spawn_blocking(move || {
        let env = [
            ("DATABASE_URL", url.as_str()),
            ("SHOPFRONT_STORAGE_DIR", storage.as_str()),
        ];
        (
            shopfront(&["personal-data", "erase", "--subject", &subject], &env),
            shopfront(&["personal-data", "erase", "--subject", &unknown], &env),
        )
    })
    .await
    .expect("the CLI ran");
    let stdout = String::from_utf8_lossy(&cli.stdout);
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(cli.status.success(), "{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(report["subject_id"], s.staff.to_string());
    assert_eq!(report["event_recorded"], true, "{report}");
    assert_eq!(report["login_email_deleted"], true);
    assert_eq!(report["telegram_identities_deleted"], 1);
    assert_eq!(report["sessions_deleted"], 1);
    assert_eq!(report["request_origins_deleted"], 2, "link and verify");
    assert!(leaks(&format!("{stdout}{stderr}"), &secrets).is_empty());
    assert_eq!(cli_unknown.status.code(), Some(1));
    let unknown_error = String::from_utf8_lossy(&cli_unknown.stderr);
    assert!(
        unknown_error.contains("account not found") && !unknown_error.contains("panicked"),
        "{unknown_error}"
    );
    app.wait_for_projections().await;

    // They can no longer sign in or use what they held.
    for token in [&s.customer_token, &s.staff_token] {
        let (status, _) = app
            .status_of(Method::GET, token, "/api/v1/auth/me", None)
            .await;
        assert_eq!(status, 401);
    }
    let login = app
        .client
        .post(format!("{}/api/v1/auth/login", app.address))
        .json(&json!({"email": STAFF_EMAIL, "password": STAFF_PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(
        problem_slug(&expect_json(login, 401, "password login").await),
        "invalid-credentials"
    );
    let widget_login = app
        .client
        .post(format!("{}/api/v1/auth/telegram", app.address))
        .json(&widget(STAFF_TELEGRAM_ID))
        .send()
        .await
        .expect("widget login");
    assert_eq!(
        problem_slug(&expect_json(widget_login, 401, "widget login").await),
        "unknown-telegram-user"
    );

    // The receipt stays (ids, amounts, statuses), its file does not.
    let gone = app
        .call(
            Method::GET,
            &s.owner.token,
            &format!("/api/v1/receipts/{}/file", s.receipt),
            None,
        )
        .await;
    assert_eq!(
        problem_slug(&expect_json(gone, 410, "erased file").await),
        "receipt-file-erased"
    );
    assert!(files_with(&app.storage_dir, &s.file).is_empty());

    // No response shows anything of them; views say they were erased.
    let visible = everything_visible(&app, &s).await;
    assert_eq!(leaks(&visible, &secrets), Vec::<&str>::new(), "{visible}");
    for person in [s.customer, s.staff] {
        let profile = app
            .get_json(&s.admin.token, &format!("/api/v1/users/{person}"))
            .await;
        assert_eq!(profile["user"]["contact"]["erased"], true, "{profile}");
    }

    // The log replays: every read model rebuilt from zero matches the live one, and holds the
    // erased state (the table scan below runs on the rebuilt tables).
    let projections = projections::read_models::all();
    let refs: Vec<&dyn projections::Projection> = projections.iter().map(|p| &**p).collect();
    projections::maintenance::rebuild_many(&app.db.pool, &refs, &|_, _| {})
        .await
        .expect("rebuild");
    app.wait_for_projections().await;
    for projection in &projections {
        let report = projections::maintenance::verify(&app.db.pool, &**projection)
            .await
            .expect("verify");
        assert!(report.matches(), "{report:?}");
    }
    let visible = everything_visible(&app, &s).await;
    assert_eq!(leaks(&visible, &secrets), Vec::<&str>::new(), "{visible}");

    // No table holds any of it in clear.
    assert_eq!(
        found_in_tables(&app.db.pool, &secrets).await,
        Vec::<String>::new()
    );

    // Nor does any log line the service wrote (the capture did see the service's lines).
    let log = logs.text();
    assert!(log.contains("personal data erased"), "the capture works");
    assert!(log.contains("sign_in"), "the log-in span is captured");
    assert_eq!(leaks(&log, &secrets), Vec::<&str>::new());
    app.stop().await;
}

#[tokio::test]
async fn accounts_that_older_builds_recorded_with_clear_telegram_ids_still_read_and_erase() {
    let app = crate::helpers::spawn_app().await;
    let admin = app.staff("platform@example.com", true).await;
    let account = AccountId::new();
    let (first, second) = (5_550_001_234_i64, 5_550_004_321_i64);
    // Version 1.0 events, exactly as builds before the sealed Telegram id wrote them.
    let legacy = [
        (
            "AccountRegistered",
            json!({"AccountRegistered": {"account_id": account, "telegram_user_id": first,
                   "email": null, "display_name": null, "platform_admin": false,
                   "channel": "telegram", "registered_at": "2026-11-20T10:00:00Z"}}),
        ),
        (
            "TelegramLinked",
            json!({"TelegramLinked": {"telegram_user_id": second,
                   "previous_telegram_user_id": first, "at": "2026-11-21T10:00:00Z"}}),
        ),
    ];
    for (n, (event_type, payload)) in legacy.iter().enumerate() {
        sqlx::query(
            "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                                 payload, metadata)
             values ('Account', $1, $2, $3, '1.0', $4,
                     '{\"actor_role\": \"SYSTEM\", \"channel\": \"system\", \"request_id\": \"old\"}')",
        )
        .bind(account.to_string())
        .bind(n as i64 + 1)
        .bind(event_type)
        .bind(payload)
        .execute(&app.db.pool)
        .await
        .expect("a version 1.0 event");
    }
    sqlx::query("insert into telegram_identities (telegram_user_id, account_id) values ($1, $2)")
        .bind(second)
        .bind(account.0)
        .execute(&app.db.pool)
        .await
        .expect("identity");
    app.wait_for_projections().await;

    // The write side and the read side both read them, through the upcasters.
    let state = shopfront::testing::load::<aggregates::account::Account>(&app.app, account)
        .await
        .expect("load");
    assert_eq!(
        state.telegram_user(),
        Some(&aggregates::TelegramId::Legacy(second))
    );
    let profile = app
        .get_json(&admin.token, &format!("/api/v1/users/{account}"))
        .await;
    assert_eq!(profile["user"]["contact"]["telegram_user_id"], second);
    let found = app
        .get_json(&admin.token, &format!("/api/v1/users?q={second}"))
        .await;
    assert_eq!(found["items"].as_array().map(Vec::len), Some(1));

    let erased = expect_json(
        app.call(
            Method::DELETE,
            &admin.token,
            &format!("/api/v1/users/{account}/personal-data"),
            None,
        )
        .await,
        200,
        "erase",
    )
    .await;
    assert_eq!(erased["event_recorded"], true);
    assert_eq!(erased["telegram_identities_deleted"], 1);
    app.wait_for_projections().await;
    let profile = app
        .get_json(&admin.token, &format!("/api/v1/users/{account}"))
        .await;
    assert_eq!(profile["user"]["contact"]["erased"], true);
    assert!(profile["user"]["contact"].get("telegram_user_id").is_none());

    // The read models drop the clear ids (the audit trail blanks them in its copies); only the
    // old events themselves keep them, since the log is never rewritten (docs/events.md).
    let outside_the_log: i64 = sqlx::query_scalar(
        "select (select count(*) from audit_events a
                  where strpos(a::text, $1) > 0 or strpos(a::text, $2) > 0)
              + (select count(*) from accounts a
                  where strpos(a::text, $1) > 0 or strpos(a::text, $2) > 0)",
    )
    .bind(first.to_string())
    .bind(second.to_string())
    .fetch_one(&app.db.pool)
    .await
    .expect("scan");
    assert_eq!(outside_the_log, 0);
    let versions: Vec<(String, String)> = sqlx::query_as(
        "select event_type, event_version from events where aggregate_id = $1 order by sequence",
    )
    .bind(account.to_string())
    .fetch_all(&app.db.pool)
    .await
    .expect("events");
    assert_eq!(
        versions,
        [
            ("AccountRegistered".to_owned(), "1.0".to_owned()),
            ("TelegramLinked".to_owned(), "1.0".to_owned()),
            ("PersonalDataErased".to_owned(), "1.0".to_owned()),
        ]
    );
    for projection in projections::read_models::all() {
        let report = projections::maintenance::verify(&app.db.pool, &*projection)
            .await
            .expect("verify");
        assert!(report.matches(), "{report:?}");
    }
    app.stop().await;
}
