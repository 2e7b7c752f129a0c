//! `GET /metrics`: Prometheus text with requests labelled by operation, domain counters and
//! projection lag. The registry is per process and tests run in parallel in one process, so
//! counters are compared before and after, never to absolute values.

use secrecy::SecretString;

use crate::helpers::{spawn_app, TestApp};

async fn scrape(app: &TestApp) -> String {
    let response = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .expect("request");
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
    for name in projections::read_models::names() {
        let series = format!("shopfront_projection_lag_events{{projection=\"{name}\"}}");
        assert!(after.contains(&series), "{series}");
    }
    app.stop().await;
}
