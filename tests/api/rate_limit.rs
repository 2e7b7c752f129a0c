//! Rate limits: 429 problems with `Retry-After`, per client IP, per caller and for log-ins;
//! probes and the metrics scrape are never limited; other clients are not affected; made-up
//! credentials buy no quota of their own.

use std::net::{IpAddr, Ipv4Addr};

use secrecy::SecretString;
use serde_json::{json, Value};
use shopfront::config::{RateLimit, ServeSettings, TEST_METRICS_TOKEN};

use crate::helpers::{spawn_app_with, TestApp};

const PASSWORD: &str = "correct horse battery staple";

/// A client whose requests come from 127.0.0.2 (the whole of 127/8 is this machine).
fn elsewhere() -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .expect("client")
}

async fn get(client: &reqwest::Client, app: &TestApp, path: &str) -> reqwest::Response {
    let mut request = client.get(format!("{}{path}", app.address));
    if path == "/metrics" {
        request = request.bearer_auth(TEST_METRICS_TOKEN);
    }
    request.send().await.expect("request")
}

async fn login(client: &reqwest::Client, app: &TestApp, email: &str) -> reqwest::Response {
    client
        .post(format!("{}/api/v1/auth/login", app.address))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .expect("request")
}

/// Asserts a 429 `rate-limited` problem and returns its `Retry-After`.
async fn assert_limited(response: reqwest::Response) -> u64 {
    assert_eq!(response.status(), 429);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds");
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(
        problem["type"],
        "https://shopfront.dev/problems/rate-limited"
    );
    assert_eq!(problem["status"], 429);
    retry_after
}

fn settings(configure: impl FnOnce(&mut ServeSettings)) -> ServeSettings {
    let mut settings = ServeSettings::for_tests();
    configure(&mut settings);
    settings
}

#[tokio::test]
async fn the_login_limit_answers_429_with_retry_after_to_that_address_only() {
    let app = spawn_app_with(settings(|s| s.edge.rate_limit_login = RateLimit::new(2, 2))).await;
    for _ in 0..2 {
        assert_eq!(
            login(&app.client, &app, "nobody@example.com")
                .await
                .status(),
            401
        );
    }
    let retry_after = assert_limited(login(&app.client, &app, "nobody@example.com").await).await;
    // Two a minute: the next one is due within 30 s.
    assert!((1..=30).contains(&retry_after), "Retry-After {retry_after}");

    // Other addresses and other routes are not affected.
    assert_eq!(
        login(&elsewhere(), &app, "nobody@example.com")
            .await
            .status(),
        401
    );
    assert_eq!(
        get(&app.client, &app, "/api/v1/auth/sessions")
            .await
            .status(),
        401
    );
    let metrics = get(&app.client, &app, "/metrics")
        .await
        .text()
        .await
        .expect("metrics");
    assert!(metrics.contains("shopfront_rate_limited_total{limit=\"login\"}"));
    app.stop().await;
}

#[tokio::test]
async fn the_per_ip_limit_spares_probes_the_scrape_and_other_addresses() {
    let app = spawn_app_with(settings(|s| {
        s.edge.rate_limit_per_ip = RateLimit::new(3, 3)
    }))
    .await;
    for _ in 0..3 {
        assert_eq!(get(&app.client, &app, "/openapi.json").await.status(), 200);
    }
    let retry_after = assert_limited(get(&app.client, &app, "/openapi.json").await).await;
    assert!((1..=20).contains(&retry_after), "Retry-After {retry_after}");
    assert_limited(login(&app.client, &app, "nobody@example.com").await).await;

    for path in ["/health/live", "/health/ready", "/metrics"] {
        for _ in 0..5 {
            assert_eq!(get(&app.client, &app, path).await.status(), 200, "{path}");
        }
    }
    assert_eq!(get(&elsewhere(), &app, "/openapi.json").await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn the_per_user_limit_counts_each_account_on_its_own() {
    let app = spawn_app_with(settings(|s| {
        s.edge.rate_limit_per_user = RateLimit::new(2, 2)
    }))
    .await;
    let mut tokens = Vec::new();
    for email in ["a@example.com", "b@example.com"] {
        app.app
            .create_staff_account(email, SecretString::from(PASSWORD), false)
            .await
            .expect("account");
        let body: Value = login(&app.client, &app, email)
            .await
            .json()
            .await
            .expect("tokens");
        tokens.push(body["access_token"].as_str().expect("token").to_owned());
    }
    let sessions = |token: &str| {
        app.client
            .get(format!("{}/api/v1/auth/sessions", app.address))
            .bearer_auth(token)
            .send()
    };
    for _ in 0..2 {
        assert_eq!(sessions(&tokens[0]).await.expect("request").status(), 200);
    }
    assert_limited(sessions(&tokens[0]).await.expect("request")).await;
    // Same address, another account: its own quota.
    assert_eq!(sessions(&tokens[1]).await.expect("request").status(), 200);
    // Anonymous requests are counted per address only.
    assert_eq!(
        get(&app.client, &app, "/api/v1/auth/sessions")
            .await
            .status(),
        401
    );
    app.stop().await;
}

/// The attack: every request of a flood carries a different made-up `Authorization` header, so
/// that each would count as a new caller with a fresh quota. Unverified credentials are the
/// anonymous client at its address: the upload limit holds.
#[tokio::test]
async fn made_up_credentials_share_their_address_quota() {
    let app = spawn_app_with(settings(|s| {
        s.edge.rate_limit_upload = RateLimit::new(2, 2)
    }))
    .await;
    let upload = |n: usize| {
        app.client
            .post(format!(
                "{}/api/v1/orders/{}/receipts",
                app.address,
                uuid::Uuid::now_v7()
            ))
            .bearer_auth(format!("forged-credential-{n}"))
            .header("content-type", "multipart/form-data; boundary=b")
            .body("--b--\r\n")
            .send()
    };
    for n in 0..2 {
        assert_eq!(upload(n).await.expect("request").status(), 401);
    }
    assert_limited(upload(2).await.expect("request")).await;
    assert_limited(upload(3).await.expect("request")).await;
    // Another address has its own quota.
    let elsewhere = elsewhere()
        .post(format!(
            "{}/api/v1/orders/{}/receipts",
            app.address,
            uuid::Uuid::now_v7()
        ))
        .bearer_auth("forged-credential-x")
        .header("content-type", "multipart/form-data; boundary=b")
        .body("--b--\r\n")
        .send()
        .await
        .expect("request");
    assert_eq!(elsewhere.status(), 401);
    app.stop().await;
}
