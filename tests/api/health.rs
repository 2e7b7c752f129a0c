use sqlx::Connection as _;

use crate::helpers::spawn_app;

#[tokio::test]
async fn liveness_and_readiness_answer_ok_with_our_own_request_id() {
    let app = spawn_app().await;
    for path in ["/health/live", "/health/ready"] {
        let response = app
            .client
            .get(format!("{}{path}", app.address))
            .header("X-Request-Id", "probe-1")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200, "{path}");
        // Our own id, never the client's (which anyone could forge).
        let id = response.headers()["x-request-id"].to_str().expect("ascii");
        assert!(id.parse::<uuid::Uuid>().is_ok() && id != "probe-1", "{id}");
        let body: serde_json::Value = response.json().await.expect("json body");
        assert_eq!(body["status"], "ok");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_request_without_an_id_gets_a_generated_one() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/health/live", app.address))
        .send()
        .await
        .expect("request");
    let id = response.headers()["x-request-id"].to_str().expect("ascii");
    assert!(
        uuid::Uuid::parse_str(id).is_ok(),
        "generated id {id} is a UUID"
    );
    app.stop().await;
}

#[tokio::test]
async fn readiness_reports_a_problem_when_the_database_is_gone() {
    let app = spawn_app().await;
    // Cut the service off from its database: refuse new connections and end the open ones.
    let mut admin =
        sqlx::PgConnection::connect(&format!("{}/postgres", crate::helpers::server_url()))
            .await
            .expect("admin connection");
    sqlx::query(&format!(
        "alter database \"{}\" with allow_connections false",
        app.db.name
    ))
    .execute(&mut admin)
    .await
    .expect("disallow connections");
    sqlx::query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1")
        .bind(&app.db.name)
        .execute(&mut admin)
        .await
        .expect("terminate connections");
    let response = app
        .client
        .get(format!("{}/health/ready", app.address))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(
        response.headers()["retry-after"],
        "2",
        "probe again shortly"
    );
    let problem: serde_json::Value = response.json().await.expect("json");
    assert_eq!(
        problem["type"],
        "https://shopfront.dev/problems/database-unavailable"
    );
    assert_eq!(problem["status"], 503);
    // Liveness does not depend on the database.
    let live = app
        .client
        .get(format!("{}/health/live", app.address))
        .send()
        .await
        .expect("request");
    assert_eq!(live.status(), 200);
    sqlx::query(&format!(
        "alter database \"{}\" with allow_connections true",
        app.db.name
    ))
    .execute(&mut admin)
    .await
    .expect("allow connections again");
    app.stop().await;
}

#[tokio::test]
async fn the_served_openapi_document_matches_the_checked_in_one() {
    let app = spawn_app().await;
    let served: serde_json::Value = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let checked_in: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("openapi/openapi.json exists"),
    )
    .expect("openapi/openapi.json is JSON");
    assert!(
        served == checked_in,
        "openapi/openapi.json is out of date: run `cargo run -- openapi > openapi/openapi.json`"
    );
    assert!(served["paths"]["/health/ready"]["get"]["responses"]["503"].is_object());
    let docs = app
        .client
        .get(format!("{}/docs", app.address))
        .send()
        .await
        .expect("request");
    assert_eq!(docs.status(), 200);
    app.stop().await;
}
