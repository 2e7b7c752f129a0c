//! `GET /metrics`: Prometheus text with requests labelled by operation, domain counters and
//! projection lag, for the scraper holding the metrics token only, and never at the cost of a
//! database query. The registry is per process and tests run in parallel in one process, so
//! counters are compared before and after, never to absolute values.

use std::time::{Duration, Instant};

use secrecy::SecretString;
use shopfront::config::{ServeSettings, TEST_METRICS_TOKEN};

use crate::helpers::{eventually, spawn_app, spawn_app_with, TestApp};

async fn scrape_with(app: &TestApp, token: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(format!("{}/metrics", app.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request")
}

async fn scrape(app: &TestApp) -> String {
    let response = scrape_with(app, Some(TEST_METRICS_TOKEN)).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/plain; version=0.0.4"));
    response.text().await.expect("text")
}

/// The value of the sample `series` (name and labels, as rendered), 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().expect("a number"))
        .unwrap_or(0.0)
}

#[tokio::test]
async fn requests_are_counted_by_operation_and_unknown_routes_as_unmatched() {
    let app = spawn_app().await;
    let live = r#"http_requests_total{method="GET",operation="health_live",status="200"}"#;
    let unmatched = r#"http_requests_total{method="GET",operation="unmatched",status="404"}"#;
    let before = scrape(&app).await;

    let response = app
        .client
        .get(format!("{}/health/live", app.address))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let response = app
        .client
        .get(format!(
            "{}/no/such/route/{}",
            app.address,
            uuid::Uuid::now_v7()
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 404);

    let after = scrape(&app).await;
    assert!(
        sample(&after, live) >= sample(&before, live) + 1.0,
        "{after}"
    );
    assert!(sample(&after, unmatched) >= sample(&before, unmatched) + 1.0);
    assert!(after.contains(
        r#"http_request_duration_seconds_bucket{method="GET",operation="health_live",le="0.005"}"#
    ));
    // A raw path never becomes a label.
    assert!(!after.contains("/no/such/route"));
    app.stop().await;
}

#[tokio::test]
async fn commands_events_and_projection_lag_are_exported() {
    let app = spawn_app().await;
    let executed = r#"shopfront_commands_total{aggregate="Account",outcome="executed"}"#;
    let appended = r#"shopfront_events_appended_total{aggregate="Account"}"#;
    let before = scrape(&app).await;
    app.app
        .create_staff_account(
            "staff@example.com",
            SecretString::from("correct horse battery staple"),
            false,
        )
        .await
        .expect("account");
    let after = scrape(&app).await;
    assert!(sample(&after, executed) >= sample(&before, executed) + 1.0);
    assert!(sample(&after, appended) >= sample(&before, appended) + 1.0);
    // The lag gauges are filled by a background refresh, not by the scrape: nothing announces
    // its first run, so poll with a deadline.
    let every_projection = eventually(Duration::from_secs(20), || async {
        let text = scrape(&app).await;
        projections::read_models::names()
            .iter()
            .copied()
            .chain([shopfront::app::audit::sealer::SEALER])
            .all(|name| {
                text.contains(&format!(
                    "shopfront_projection_lag_events{{projection=\"{name}\"}}"
                ))
            })
    })
    .await;
    assert!(
        every_projection,
        "every projection's lag, and the sealer's, is exported"
    );
    app.stop().await;
}

#[tokio::test]
async fn metrics_are_served_only_to_the_holder_of_the_metrics_token() {
    let app = spawn_app().await;
    for token in [None, Some("not-the-metrics-token"), Some("")] {
        let response = scrape_with(&app, token).await;
        assert_eq!(response.status(), 401, "{token:?}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let text = response.text().await.expect("body");
        assert!(!text.contains("http_requests_total"), "{text}");
    }
    assert_eq!(
        scrape_with(&app, Some(TEST_METRICS_TOKEN)).await.status(),
        200
    );
    app.stop().await;

    // Without a configured token there is nothing to scrape.
    let mut settings = ServeSettings::for_tests();
    settings.edge.metrics_token = None;
    let app = spawn_app_with(settings).await;
    for token in [None, Some(TEST_METRICS_TOKEN)] {
        assert_eq!(scrape_with(&app, token).await.status(), 404, "{token:?}");
    }
    app.stop().await;
}

/// The attack: scrape `/metrics` in a loop so each scrape runs the projection-lag queries.
/// With the tables those queries read locked, a scrape that queried would wait (up to its 2 s
/// timeout); one that reads memory answers at once.
#[tokio::test]
async fn a_scrape_never_waits_for_the_database() {
    let app = spawn_app().await;
    scrape(&app).await;
    let mut blocker = app.db.pool.begin().await.expect("transaction");
    sqlx::query("lock table projection_checkpoints, events in access exclusive mode")
        .execute(&mut *blocker)
        .await
        .expect("lock");
    for _ in 0..3 {
        let started = Instant::now();
        let text = scrape(&app).await;
        assert!(text.contains("http_requests_total"));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a scrape took {:?}",
            started.elapsed()
        );
    }
    blocker.rollback().await.expect("unlock");
    app.stop().await;
}
