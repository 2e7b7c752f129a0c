//! A newcomer's first hour, as the README walks it: `serve`, `seed-demo`, sign in with the
//! login it prints, see the demo store; a platform admin names an owner for a store they did
//! not create.

use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::shopfront;
use crate::helpers::{expect_json, problem_slug, spawn_app, TestApp};

async fn login(app: &TestApp, email: &str, password: &str) -> String {
    let response = app
        .client
        .post(format!("{}/api/v1/auth/login", app.address))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login");
    expect_json(response, 200, "login").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned()
}

#[tokio::test]
async fn the_demo_store_is_seen_by_the_login_seed_demo_prints() {
    let app = spawn_app().await;
    let out = shopfront(&["seed-demo"], &[("DATABASE_URL", &app.db.url)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value =
        serde_json::from_slice(&out.stdout).expect("seed-demo prints a JSON summary");
    let email = summary["owner"]["email"].as_str().expect("owner e-mail");
    let password = summary["owner"]["password"]
        .as_str()
        .expect("a generated password, shown once");
    assert!(password.len() >= 20);

    // The README's next step: sign in, then an authenticated call.
    let token = login(&app, email, password).await;
    // Lists are read models: the service catches up with the seeding's events first.
    app.wait_for_projections().await;
    let stores = app.get_json(&token, "/api/v1/stores").await;
    let demo = &stores["items"][0];
    assert_eq!(demo["name"], "Demo Coffee Roasters");
    assert_eq!(demo["my_role"], "OWNER");
    let store = demo["store_id"].as_str().expect("store id");
    let orders = app
        .get_json(&token, &format!("/api/v1/stores/{store}/orders"))
        .await;
    assert_eq!(orders["items"].as_array().expect("orders").len(), 6);

    // Again: nothing is seeded twice, and no password is shown for an existing login.
    let again = shopfront(
        &["seed-demo", "--owner-email", email],
        &[("DATABASE_URL", &app.db.url)],
    );
    let again: Value = serde_json::from_slice(&again.stdout).expect("json");
    assert_eq!(again["seeded"], false);
    assert!(again["owner"]["password"].is_null(), "{again}");
    app.stop().await;
}

#[tokio::test]
async fn a_platform_admin_names_the_owner_of_a_store_they_hold_no_role_in() {
    let app = spawn_app().await;
    let admin = app.staff("platform@example.com", true).await;
    let first_owner = app.staff("first@example.com", false).await;
    let newcomer = app.staff("newcomer@example.com", false).await;
    let store = app.open_store(&admin, &first_owner, "Corner shop").await;
    let owners = format!("/api/v1/stores/{store}/owners");

    // The store's own owner may not use the platform's door, nor may the newcomer.
    for token in [&first_owner.token, &newcomer.token] {
        let (status, problem) = app
            .status_of(
                Method::POST,
                token,
                &owners,
                Some(json!({"email": "newcomer@example.com"})),
            )
            .await;
        assert_eq!((status, problem_slug(&problem)), (403, "forbidden"));
    }
    let named = app
        .post_json(
            &admin.token,
            &owners,
            json!({"email": "NEWCOMER@example.com"}),
            200,
        )
        .await;
    assert_eq!(named["account_id"], newcomer.account_id.0.to_string());
    assert_eq!(named["role"], "OWNER");
    // The newcomer runs the store now: staff list included.
    app.wait_for_projections().await;
    let staff = app
        .get_json(&newcomer.token, &format!("/api/v1/stores/{store}/staff"))
        .await;
    assert!(staff
        .as_array()
        .expect("staff")
        .iter()
        .any(
            |member| member["account_id"] == newcomer.account_id.0.to_string()
                && member["role"] == "OWNER"
        ));
    // An unknown login or store is a clear refusal, not a 500.
    let (status, problem) = app
        .status_of(
            Method::POST,
            &admin.token,
            &owners,
            Some(json!({"email": "nobody@example.com"})),
        )
        .await;
    assert_eq!((status, problem_slug(&problem)), (422, "account-not-found"));
    let (status, problem) = app
        .status_of(
            Method::POST,
            &admin.token,
            &format!("/api/v1/stores/{}/owners", uuid::Uuid::now_v7()),
            Some(json!({"account_id": newcomer.account_id.0})),
        )
        .await;
    assert_eq!((status, problem_slug(&problem)), (404, "store-not-found"));
    app.stop().await;
}
