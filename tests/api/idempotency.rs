//! `Idempotency-Key` on the POSTs under /api/v1 that act for a signed-in caller: retries replay
//! the first response and the handler does not run twice; reuse with another body, retries in
//! flight, expiry, scoping to the authenticated principal. And what an attacker tried: keys of
//! anonymous or logged-out callers, and the auth endpoints, never replay anything.
//!
//! Store creation stands in for a command: each run records a `StoreCreated` event we can
//! count, so running it twice is visible.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{count_events, eventually, spawn_app, TestApp, STAFF_PASSWORD};

fn store_body(name: &str) -> Value {
    json!({"name": name, "currency": "RUB", "timezone": "Europe/Moscow",
           "payment_instructions": "Bank X, account 1"})
}

async fn post(
    app: &TestApp,
    path: &str,
    bearer: Option<&str>,
    key: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut request = app.client.post(format!("{}{path}", app.address)).json(body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.expect("request")
}

async fn create_store(
    app: &TestApp,
    bearer: &str,
    key: Option<&str>,
    name: &str,
) -> reqwest::Response {
    post(app, "/api/v1/stores", Some(bearer), key, &store_body(name)).await
}

async fn stores_created(app: &TestApp) -> i64 {
    count_events(&app.db.pool, "StoreCreated").await
}

async fn stored_keys(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from idempotency_keys")
        .fetch_one(&app.db.pool)
        .await
        .expect("count keys")
}

fn replayed(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

async fn problem_type(response: reqwest::Response) -> String {
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.expect("problem");
    body["type"].as_str().unwrap_or_default().to_owned()
}

/// Logs `email` in over HTTP: (access token, refresh token).
async fn log_in(app: &TestApp, email: &str) -> (String, String) {
    let response = post(
        app,
        "/api/v1/auth/login",
        None,
        None,
        &json!({"email": email, "password": STAFF_PASSWORD}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let tokens: Value = response.json().await.expect("tokens");
    (
        tokens["access_token"].as_str().expect("access").to_owned(),
        tokens["refresh_token"]
            .as_str()
            .expect("refresh")
            .to_owned(),
    )
}

#[tokio::test]
async fn a_retry_gets_the_first_response_and_the_handler_runs_once() {
    let app = spawn_app().await;
    let admin = app.staff("admin@example.com", true).await;
    let key = uuid::Uuid::now_v7().to_string();

    let first = create_store(&app, &admin.token, Some(&key), "Tea house").await;
    assert_eq!(first.status(), 201);
    assert!(!replayed(&first));
    let location = first.headers()["location"].clone();
    let first_body = first.text().await.expect("body");

    let retry = create_store(&app, &admin.token, Some(&key), "Tea house").await;
    assert_eq!(retry.status(), 201);
    assert!(replayed(&retry));
    assert_eq!(retry.headers()["location"], location);
    assert_eq!(
        retry.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    assert!(retry.headers().contains_key("x-request-id"));
    assert_eq!(retry.text().await.expect("body"), first_body);
    assert_eq!(stores_created(&app).await, 1, "the retry created nothing");

    // The same key for another request is a client bug, said as such.
    let reused = create_store(&app, &admin.token, Some(&key), "Coffee house").await;
    assert_eq!(reused.status(), 422);
    assert_eq!(
        problem_type(reused).await,
        "https://shopfront.dev/problems/idempotency-key-reused"
    );

    // Another session of the same account is the same caller: its retry is answered too.
    let (other_session, _) = log_in(&app, "admin@example.com").await;
    let elsewhere = create_store(&app, &other_session, Some(&key), "Tea house").await;
    assert!(replayed(&elsewhere));

    // Without a key nothing is deduplicated.
    assert_eq!(
        create_store(&app, &admin.token, None, "A").await.status(),
        201
    );
    assert_eq!(
        create_store(&app, &admin.token, None, "A").await.status(),
        201
    );
    assert_eq!(stores_created(&app).await, 3);
    app.stop().await;
}

#[tokio::test]
async fn a_retry_while_the_first_still_runs_is_409_and_later_replays() {
    let app = spawn_app().await;
    let admin = app.staff("admin@example.com", true).await;
    let key = uuid::Uuid::now_v7().to_string();

    // Hold the first request inside its handler: appending its event waits for this lock.
    let mut blocker = app.db.pool.begin().await.expect("transaction");
    sqlx::query("lock table events in exclusive mode")
        .execute(&mut *blocker)
        .await
        .expect("lock");
    let first = tokio::spawn({
        let client = app.client.clone();
        let url = format!("{}/api/v1/stores", app.address);
        let key = key.clone();
        let token = admin.token.clone();
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .header("Idempotency-Key", key)
                .json(&store_body("Tea house"))
                .send()
                .await
                .expect("request")
        }
    });
    // Nothing announces that a backend started waiting for a lock: poll pg_locks.
    let pool = app.db.pool.clone();
    let waiting = eventually(Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "select exists (select 1 from pg_locks
                  where not granted and relation = 'events'::regclass
                    and database = (select oid from pg_database where datname = current_database()))",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or(false)
        }
    })
    .await;
    assert!(waiting, "the first request reached its handler");

    let second = create_store(&app, &admin.token, Some(&key), "Tea house").await;
    assert_eq!(second.status(), 409);
    assert_eq!(
        problem_type(second).await,
        "https://shopfront.dev/problems/idempotency-key-in-flight"
    );

    blocker.rollback().await.expect("unlock");
    let first = first.await.expect("first request");
    assert_eq!(first.status(), 201);
    let first_body = first.text().await.expect("body");
    let third = create_store(&app, &admin.token, Some(&key), "Tea house").await;
    assert!(replayed(&third));
    assert_eq!(third.text().await.expect("body"), first_body);
    assert_eq!(stores_created(&app).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn an_expired_key_is_a_new_request_and_is_purged() {
    let app = spawn_app().await;
    let admin = app.staff("admin@example.com", true).await;
    let key = "store-2024-0001";
    assert_eq!(
        create_store(&app, &admin.token, Some(key), "A")
            .await
            .status(),
        201
    );

    sqlx::query("update idempotency_keys set expires_at = now() - interval '1 second'")
        .execute(&app.db.pool)
        .await
        .expect("expire");
    let again = create_store(&app, &admin.token, Some(key), "A").await;
    assert_eq!(again.status(), 201);
    assert!(!replayed(&again));
    assert_eq!(stores_created(&app).await, 2);

    sqlx::query("update idempotency_keys set expires_at = now() - interval '1 second'")
        .execute(&app.db.pool)
        .await
        .expect("expire");
    let purged = shopfront::http::idempotency::purge(&app.db.pool)
        .await
        .expect("purge");
    assert_eq!(purged, 1);
    app.stop().await;
}

#[tokio::test]
async fn refusals_are_replayed_and_keys_belong_to_the_authenticated_caller() {
    let app = spawn_app().await;
    let admin = app.staff("admin@example.com", true).await;
    let other_admin = app.staff("other@example.com", true).await;
    let key = uuid::Uuid::now_v7().to_string();
    let bad = json!({"name": "Tea", "currency": "XXX?", "timezone": "Europe/Moscow",
                     "payment_instructions": "Bank X"});

    let refused = post(&app, "/api/v1/stores", Some(&admin.token), Some(&key), &bad).await;
    let status = refused.status();
    assert!(
        status.is_client_error() && status != 409 && status != 429,
        "{status}"
    );
    let refused_type = problem_type(refused).await;
    let retry = post(&app, "/api/v1/stores", Some(&admin.token), Some(&key), &bad).await;
    assert_eq!(retry.status(), status);
    assert!(replayed(&retry));
    assert_eq!(problem_type(retry).await, refused_type);

    // Another account's same key is its own request, from the same address or not.
    let other = create_store(&app, &other_admin.token, Some(&key), "Tea house").await;
    assert_eq!(other.status(), 201);
    assert!(!replayed(&other));
    app.stop().await;
}

#[tokio::test]
async fn a_malformed_key_is_a_400_problem_and_nothing_runs() {
    let app = spawn_app().await;
    let admin = app.staff("admin@example.com", true).await;
    let too_long = "k".repeat(256);
    for key in ["has space", "", too_long.as_str()] {
        let response = create_store(&app, &admin.token, Some(key), "A").await;
        assert_eq!(response.status(), 400, "{key:?}");
        assert_eq!(
            problem_type(response).await,
            "https://shopfront.dev/problems/invalid-idempotency-key"
        );
    }
    assert_eq!(stores_created(&app).await, 0);
    // The longest valid key works.
    let longest = "k".repeat(255);
    assert_eq!(
        create_store(&app, &admin.token, Some(&longest), "A")
            .await
            .status(),
        201
    );
    app.stop().await;
}

/// The attack: send one refresh request twice with one key. Replaying the first answer would
/// hand out the same fresh tokens twice and silence reuse detection; instead the second
/// presentation is a reuse, and the session is revoked.
#[tokio::test]
async fn a_refresh_sent_twice_with_one_key_is_a_detected_reuse_not_a_replay() {
    let app = spawn_app().await;
    app.staff("staff@example.com", false).await;
    let (access, refresh) = log_in(&app, "staff@example.com").await;
    let body = json!({"refresh_token": refresh});
    let key = uuid::Uuid::now_v7().to_string();

    // The client sends its (still valid) access token along, as many client libraries do.
    let first = post(
        &app,
        "/api/v1/auth/refresh",
        Some(&access),
        Some(&key),
        &body,
    )
    .await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.expect("tokens");
    let second = post(
        &app,
        "/api/v1/auth/refresh",
        Some(&access),
        Some(&key),
        &body,
    )
    .await;
    assert!(!replayed(&second));
    assert_eq!(second.status(), 401);
    let second_text = second.text().await.expect("body");
    assert!(
        second_text.contains("refresh-token-reused"),
        "{second_text}"
    );
    assert!(!second_text.contains(first["refresh_token"].as_str().expect("refresh")));

    // The session is revoked: the tokens of the first answer no longer work.
    let listed = app
        .client
        .get(format!("{}/api/v1/auth/sessions", app.address))
        .bearer_auth(first["access_token"].as_str().expect("token"))
        .send()
        .await
        .expect("request");
    assert_eq!(listed.status(), 401);
    assert_eq!(stored_keys(&app).await, 0, "auth requests claim no keys");
    app.stop().await;
}

/// The attack: two clients behind one address (one NAT) and a guessable key. The second must
/// not receive the first one's QR poll secret, nor a second copy of a log-in's session.
#[tokio::test]
async fn auth_endpoints_answer_every_request_afresh_whatever_its_key() {
    let mut settings = shopfront::config::ServeSettings::for_tests();
    settings.telegram_bot_token =
        Some(secrecy::SecretString::from("123456789:TEST-only-bot-token"));
    settings.telegram_bot_username = Some("shopfront_test_bot".into());
    let app = crate::helpers::spawn_app_with(settings).await;
    let staff = app.staff("staff@example.com", false).await;
    let key = "qr-1";

    let mine: Value = post(&app, "/api/v1/auth/qr", None, Some(key), &json!({}))
        .await
        .json()
        .await
        .expect("qr");
    let theirs = post(&app, "/api/v1/auth/qr", None, Some(key), &json!({})).await;
    assert_eq!(theirs.status(), 200);
    assert!(!replayed(&theirs));
    let theirs: Value = theirs.json().await.expect("qr");
    assert_ne!(theirs["login_id"], mine["login_id"]);
    assert_ne!(theirs["poll_secret"], mine["poll_secret"]);

    // Signed in or not, the auth endpoints are never deduplicated.
    let signed_in: Value = post(
        &app,
        "/api/v1/auth/qr",
        Some(&staff.token),
        Some(key),
        &json!({}),
    )
    .await
    .json()
    .await
    .expect("qr");
    let again = post(
        &app,
        "/api/v1/auth/qr",
        Some(&staff.token),
        Some(key),
        &json!({}),
    )
    .await;
    assert!(!replayed(&again));
    let again: Value = again.json().await.expect("qr");
    assert_ne!(again["poll_secret"], signed_in["poll_secret"]);

    let login = json!({"email": "staff@example.com", "password": STAFF_PASSWORD});
    let a: Value = post(
        &app,
        "/api/v1/auth/login",
        Some(&staff.token),
        Some(key),
        &login,
    )
    .await
    .json()
    .await
    .expect("tokens");
    let b = post(
        &app,
        "/api/v1/auth/login",
        Some(&staff.token),
        Some(key),
        &login,
    )
    .await;
    assert!(!replayed(&b));
    let b: Value = b.json().await.expect("tokens");
    assert_ne!(a["session_id"], b["session_id"]);
    assert_eq!(stored_keys(&app).await, 0);
    app.stop().await;
}

/// The attack: an access token captured before its owner logged out still carries a valid
/// signature for a few minutes. With the key of an API-token creation it must not fetch the
/// stored answer (which holds the token's secret).
#[tokio::test]
async fn a_logged_out_token_replays_nothing_and_anonymous_keys_claim_nothing() {
    let app = spawn_app().await;
    let admin = app.staff("admin@example.com", true).await;
    let store: Value = create_store(&app, &admin.token, None, "Tea house")
        .await
        .json()
        .await
        .expect("store");
    let (access, refresh) = log_in(&app, "admin@example.com").await;
    let key = uuid::Uuid::now_v7().to_string();
    let token_request =
        json!({"name": "export", "store_ids": [store["store_id"]], "role": "AUDITOR"});

    let created = post(
        &app,
        "/api/v1/api-tokens",
        Some(&access),
        Some(&key),
        &token_request,
    )
    .await;
    assert_eq!(created.status(), 201);
    let secret = created.json::<Value>().await.expect("token")["token"]
        .as_str()
        .expect("secret")
        .to_owned();
    let logged_out = post(
        &app,
        "/api/v1/auth/logout",
        None,
        None,
        &json!({"refresh_token": refresh}),
    )
    .await;
    assert_eq!(logged_out.status(), 204);

    let stolen = post(
        &app,
        "/api/v1/api-tokens",
        Some(&access),
        Some(&key),
        &token_request,
    )
    .await;
    assert_eq!(stolen.status(), 401);
    assert!(!replayed(&stolen));
    assert!(!stolen.text().await.expect("body").contains(&secret));

    // Made-up credentials (or none) with a key: no claim, no replay, just the 401.
    let keys_before = stored_keys(&app).await;
    for bearer in [Some("forged.jwt.value"), Some("sfp_made-up"), None] {
        let response = create_store_as(&app, bearer, &key).await;
        assert_eq!(response.status(), 401, "{bearer:?}");
        assert!(!replayed(&response));
    }
    assert_eq!(stored_keys(&app).await, keys_before);
    app.stop().await;
}

async fn create_store_as(app: &TestApp, bearer: Option<&str>, key: &str) -> reqwest::Response {
    post(
        app,
        "/api/v1/stores",
        bearer,
        Some(key),
        &store_body("Tea house"),
    )
    .await
}

#[tokio::test]
async fn the_document_lists_the_header_on_every_api_post_but_the_auth_ones() {
    let app = spawn_app().await;
    let document: Value = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let paths = document["paths"].as_object().expect("paths");
    let mut posts = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("path item") {
            let documented = operation["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == "Idempotency-Key"));
            let expected = method == "post"
                && path.starts_with("/api/v1/")
                && !path.starts_with("/api/v1/auth/");
            assert_eq!(documented, expected, "{method} {path}");
            if expected {
                posts += 1;
                for status in ["409", "422", "429"] {
                    assert!(
                        operation["responses"][status].is_object(),
                        "{path} {status}"
                    );
                }
            }
        }
    }
    assert!(posts >= 10, "the command POSTs");
    app.stop().await;
}
