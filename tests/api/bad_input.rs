//! Input no handler expects — NUL characters, dates Postgres cannot hold, days at the edge of
//! chrono's range — is the caller's mistake: a 4xx problem, never a 500 or a dropped
//! connection, and nothing is recorded.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{count_events, expect_json, problem_slug, spawn_app};

#[tokio::test]
async fn values_the_database_cannot_hold_are_refused_as_invalid_input() {
    let app = spawn_app().await;
    let admin = app.staff("platform@example.com", true).await;
    let store = app
        .post_json(
            &admin.token,
            "/api/v1/stores",
            json!({"name": "Tea house", "currency": "RUB", "timezone": "Europe/Moscow",
                   "payment_instructions": "Bank X"}),
            201,
        )
        .await["store_id"]
        .as_str()
        .expect("store")
        .to_owned();

    // A NUL in a log-in, unauthenticated.
    let response = app
        .client
        .post(format!("{}/api/v1/auth/login", app.address))
        .json(&json!({"email": "a\u{0}b@example.com", "password": "whatever it is"}))
        .send()
        .await
        .expect("login");
    let status = response.status().as_u16();
    assert!((400..500).contains(&status), "login with NUL: {status}");

    // A NUL in text that would go into an event: refused, nothing appended.
    let before = count_events(&app.db.pool, "StoreSettingsChanged").await;
    let response = app
        .call(
            Method::PATCH,
            &admin.token,
            &format!("/api/v1/stores/{store}"),
            Some(json!({"name": "Tea\u{0}house"})),
        )
        .await;
    let problem = expect_json(response, 422, "PATCH with NUL").await;
    assert_eq!(problem_slug(&problem), "invalid-value", "{problem}");
    assert_eq!(
        count_events(&app.db.pool, "StoreSettingsChanged").await,
        before
    );

    // A NUL in a query filter.
    let response = app
        .call(
            Method::GET,
            &admin.token,
            &format!("/api/v1/stores/{store}/products?q=te%00a"),
            None,
        )
        .await;
    expect_json(response, 422, "search with NUL").await;

    // Instants and days outside what Postgres (or chrono's arithmetic) can hold.
    let response = app
        .call(
            Method::GET,
            &admin.token,
            &format!("/api/v1/stores/{store}/orders?from=-5000-01-01T00:00:00Z"),
            None,
        )
        .await;
    expect_json(response, 422, "orders from 5000 BC").await;
    for range in [
        "from=-5000-01-01&to=-5000-01-02",
        "to=-262143-01-01",
        "from=+262142-12-31&to=+262142-12-31",
    ] {
        for report in ["dashboard", "revenue", "customers", "inventory"] {
            let response = app
                .call(
                    Method::GET,
                    &admin.token,
                    &format!("/api/v1/analytics/{report}?store_id={store}&{range}"),
                    None,
                )
                .await;
            let status = response.status().as_u16();
            assert!(
                (400..500).contains(&status),
                "{report}?{range}: {status} {}",
                response.text().await.unwrap_or_default()
            );
        }
    }
    app.stop().await;
}

/// The attack: feed values Postgres refuses and read its error text back (it names types,
/// encodings and, elsewhere, columns and constraints). The answer says what is wrong in fixed
/// words; the database's message stays in the log.
#[tokio::test]
async fn database_messages_never_reach_the_client() {
    let app = spawn_app().await;
    let admin = app.staff("platform@example.com", true).await;
    let store = app
        .post_json(
            &admin.token,
            "/api/v1/stores",
            json!({"name": "Tea house", "currency": "RUB", "timezone": "Europe/Moscow",
                   "payment_instructions": "Bank X"}),
            201,
        )
        .await["store_id"]
        .as_str()
        .expect("store")
        .to_owned();
    let probes = [
        (
            Method::PATCH,
            format!("/api/v1/stores/{store}"),
            Some(json!({"name": "Tea\u{0}house"})),
        ),
        (
            Method::GET,
            format!("/api/v1/stores/{store}/products?q=te%00a"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/stores/{store}/orders?from=-5000-01-01T00:00:00Z"),
            None,
        ),
    ];
    for (method, path, body) in probes {
        let response = app.call(method.clone(), &admin.token, &path, body).await;
        let problem = expect_json(response, 422, &format!("{method} {path}")).await;
        let detail = problem["detail"].as_str().unwrap_or_default().to_owned();
        for words in [
            "UTF8",
            "0x00",
            "byte sequence",
            "out of range",
            "timestamp",
            "syntax",
        ] {
            assert!(
                !detail.contains(words),
                "{method} {path} shows the database's words: {detail}"
            );
        }
        if problem_slug(&problem) == "invalid-value" {
            assert!(
                detail.starts_with("a value in the request cannot be stored"),
                "{detail}"
            );
        }
    }
    app.stop().await;
}
