//! `Idempotency-Key` on POSTs under /api/v1: retries replay the first response and the handler
//! does not run twice; reuse with another body, retries in flight, expiry, scoping.
//!
//! The auth endpoints stand in for command endpoints: each run has an effect we can count
//! (a session opened, a refresh token rotated) and running one twice is visibly different.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{json, Value};

use crate::helpers::{eventually, spawn_app, TestApp};

const PASSWORD: &str = "correct horse battery staple";

async fn staff(app: &TestApp, email: &str) {
    app.app
        .create_staff_account(email, SecretString::from(PASSWORD), false)
        .await
        .expect("account created");
}

async fn post(
    client: &reqwest::Client,
    app: &TestApp,
    path: &str,
    key: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut request = client.post(format!("{}{path}", app.address)).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.expect("request")
}

async fn login(app: &TestApp, key: Option<&str>, password: &str) -> reqwest::Response {
    post(
        &app.client,
        app,
        "/api/v1/auth/login",
        key,
        &json!({"email": "staff@example.com", "password": password}),
    )
    .await
}

async fn sessions(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from auth_sessions")
        .fetch_one(&app.db.pool)
        .await
        .expect("count sessions")
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

#[tokio::test]
async fn a_retry_gets_the_first_response_and_the_handler_runs_once() {
    let app = spawn_app().await;
    staff(&app, "staff@example.com").await;
    let key = uuid::Uuid::now_v7().to_string();

    let first = login(&app, Some(&key), PASSWORD).await;
    assert_eq!(first.status(), 200);
    assert!(!replayed(&first));
    let first_body = first.text().await.expect("body");

    let retry = login(&app, Some(&key), PASSWORD).await;
    assert_eq!(retry.status(), 200);
    assert!(replayed(&retry));
    assert_eq!(
        retry.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    assert!(retry.headers().contains_key("x-request-id"));
    assert_eq!(retry.text().await.expect("body"), first_body);
    assert_eq!(
        sessions(&app).await,
        1,
        "the retry opened no second session"
    );

    // The same key for another request is a client bug, said as such.
    let reused = login(&app, Some(&key), "another password entirely").await;
    assert_eq!(reused.status(), 422);
    assert_eq!(
        problem_type(reused).await,
        "https://shopfront.dev/problems/idempotency-key-reused"
    );

    // Without a key nothing is deduplicated.
    assert_eq!(login(&app, None, PASSWORD).await.status(), 200);
    assert_eq!(login(&app, None, PASSWORD).await.status(), 200);
    assert_eq!(sessions(&app).await, 3);
    app.stop().await;
}

#[tokio::test]
async fn a_retried_refresh_returns_the_same_tokens_instead_of_revoking_the_session() {
    let app = spawn_app().await;
    staff(&app, "staff@example.com").await;
    let tokens: Value = login(&app, None, PASSWORD)
        .await
        .json()
        .await
        .expect("tokens");
    let body = json!({"refresh_token": tokens["refresh_token"]});
    let key = uuid::Uuid::now_v7().to_string();

    let first = post(&app.client, &app, "/api/v1/auth/refresh", Some(&key), &body).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.expect("tokens");
    // Without the key, presenting the refresh token again would revoke the session.
    let retry = post(&app.client, &app, "/api/v1/auth/refresh", Some(&key), &body).await;
    assert_eq!(retry.status(), 200);
    assert!(replayed(&retry));
    let retry: Value = retry.json().await.expect("tokens");
    assert_eq!(retry, first);

    let listed = app
        .client
        .get(format!("{}/api/v1/auth/sessions", app.address))
        .bearer_auth(first["access_token"].as_str().expect("token"))
        .send()
        .await
        .expect("request");
    assert_eq!(listed.status(), 200, "the session is still open");
    let rotated: i64 =
        sqlx::query_scalar("select count(*) from refresh_tokens where rotated_at is not null")
            .fetch_one(&app.db.pool)
            .await
            .expect("count");
    assert_eq!(rotated, 1);

    // What is stored cannot be read without the key: no token appears in the table.
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("select body from idempotency_keys")
        .fetch_all(&app.db.pool)
        .await
        .expect("stored bodies");
    assert_eq!(stored.len(), 1);
    let needle = first["refresh_token"].as_str().expect("token").as_bytes();
    assert!(!stored[0].windows(needle.len()).any(|w| w == needle));
    app.stop().await;
}

#[tokio::test]
async fn a_retry_while_the_first_still_runs_is_409_and_later_replays() {
    let app = spawn_app().await;
    staff(&app, "staff@example.com").await;
    let key = uuid::Uuid::now_v7().to_string();

    // Hold the first request inside its handler: opening a session waits for this lock.
    let mut blocker = app.db.pool.begin().await.expect("transaction");
    sqlx::query("lock table auth_sessions in exclusive mode")
        .execute(&mut *blocker)
        .await
        .expect("lock");
    let first = tokio::spawn({
        let client = app.client.clone();
        let url = format!("{}/api/v1/auth/login", app.address);
        let key = key.clone();
        async move {
            client
                .post(url)
                .header("Idempotency-Key", key)
                .json(&json!({"email": "staff@example.com", "password": PASSWORD}))
                .send()
                .await
                .expect("request")
        }
    });
    let pool = app.db.pool.clone();
    let waiting = eventually(Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "select exists (select 1 from pg_locks
                  where not granted and relation = 'auth_sessions'::regclass
                    and database = (select oid from pg_database where datname = current_database()))",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or(false)
        }
    })
    .await;
    assert!(waiting, "the first request reached its handler");

    let second = login(&app, Some(&key), PASSWORD).await;
    assert_eq!(second.status(), 409);
    assert_eq!(
        problem_type(second).await,
        "https://shopfront.dev/problems/idempotency-key-in-flight"
    );

    blocker.rollback().await.expect("unlock");
    let first = first.await.expect("first request");
    assert_eq!(first.status(), 200);
    let first_body = first.text().await.expect("body");
    let third = login(&app, Some(&key), PASSWORD).await;
    assert!(replayed(&third));
    assert_eq!(third.text().await.expect("body"), first_body);
    assert_eq!(sessions(&app).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn an_expired_key_is_a_new_request_and_is_purged() {
    let app = spawn_app().await;
    staff(&app, "staff@example.com").await;
    let key = "order-2024-0001";
    assert_eq!(login(&app, Some(key), PASSWORD).await.status(), 200);

    sqlx::query("update idempotency_keys set expires_at = now() - interval '1 second'")
        .execute(&app.db.pool)
        .await
        .expect("expire");
    let again = login(&app, Some(key), PASSWORD).await;
    assert_eq!(again.status(), 200);
    assert!(!replayed(&again));
    assert_eq!(sessions(&app).await, 2);

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
async fn refusals_are_replayed_with_their_headers_and_keys_are_per_caller() {
    let app = spawn_app().await;
    staff(&app, "staff@example.com").await;
    let key = uuid::Uuid::now_v7().to_string();

    let refused = login(&app, Some(&key), "wrong password, quite long").await;
    assert_eq!(refused.status(), 401);
    let retry = login(&app, Some(&key), "wrong password, quite long").await;
    assert_eq!(retry.status(), 401);
    assert!(replayed(&retry));
    assert_eq!(
        retry.headers()["www-authenticate"],
        "Bearer realm=\"shopfront\""
    );
    assert_eq!(
        problem_type(retry).await,
        "https://shopfront.dev/problems/invalid-credentials"
    );

    // An anonymous caller's keys belong to its address: another client's same key is new.
    let elsewhere = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .expect("client");
    let other = post(
        &elsewhere,
        &app,
        "/api/v1/auth/login",
        Some(&key),
        &json!({"email": "staff@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(other.status(), 200);
    assert!(!replayed(&other));
    app.stop().await;
}

#[tokio::test]
async fn a_malformed_key_is_a_400_problem_and_nothing_runs() {
    let app = spawn_app().await;
    staff(&app, "staff@example.com").await;
    let too_long = "k".repeat(256);
    for key in ["has space", "", too_long.as_str()] {
        let response = login(&app, Some(key), PASSWORD).await;
        assert_eq!(response.status(), 400, "{key:?}");
        assert_eq!(
            problem_type(response).await,
            "https://shopfront.dev/problems/invalid-idempotency-key"
        );
    }
    assert_eq!(sessions(&app).await, 0);
    // The longest valid key works.
    let longest = "k".repeat(255);
    assert_eq!(login(&app, Some(&longest), PASSWORD).await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn the_document_lists_the_header_on_every_api_post_only() {
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
            let expected = method == "post" && path.starts_with("/api/v1/");
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
    assert!(posts >= 3, "the auth POSTs at least");
    app.stop().await;
}
