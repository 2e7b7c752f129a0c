//! The platform's user directory: platform admins find accounts, see their store roles, and
//! block them platform-wide (one by one or in bulk); a block ends the account's sessions and
//! refuses its sign-ins until lifted. Nobody else may do any of it.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{expect_json, problem_slug, spawn_app, TestApp, STAFF_PASSWORD};

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|u| u["account_id"].as_str().map(str::to_owned))
        .collect()
}

async fn login(app: &TestApp, email: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/api/v1/auth/login", app.address))
        .json(&json!({"email": email, "password": STAFF_PASSWORD}))
        .send()
        .await
        .expect("login")
}

#[tokio::test]
async fn platform_admins_find_and_block_accounts_and_a_block_ends_every_session() {
    let app = spawn_app().await;
    let admin = app.staff("platform@example.com", true).await;
    let owner = app.staff("owner@example.com", false).await;
    let customer = shopfront::testing::register_account(
        &app.app,
        Some("ann@example.com"),
        Some(777_123),
        false,
    )
    .await
    .expect("customer");
    let store = app.open_store(&admin, &owner, "Tea house").await;
    app.wait_for_projections().await;

    // Newest first; searched by e-mail, Telegram id or account id.
    let all = app.get_json(&admin.token, "/api/v1/users").await;
    assert_eq!(
        ids(&all),
        [
            customer.0.to_string(),
            owner.account_id.0.to_string(),
            admin.account_id.0.to_string()
        ]
    );
    let by_email = app.get_json(&admin.token, "/api/v1/users?q=OWNER@").await;
    assert_eq!(ids(&by_email), [owner.account_id.0.to_string()]);
    let by_telegram = app.get_json(&admin.token, "/api/v1/users?q=777123").await;
    assert_eq!(ids(&by_telegram), [customer.0.to_string()]);
    assert_eq!(
        by_telegram["items"][0]["contact"]["email"],
        "ann@example.com"
    );
    assert_eq!(by_telegram["items"][0]["channel"], "system");
    let admins = app
        .get_json(&admin.token, "/api/v1/users?platform_admin=true")
        .await;
    assert_eq!(ids(&admins), [admin.account_id.0.to_string()]);
    let page = app.get_json(&admin.token, "/api/v1/users?limit=2").await;
    let cursor = page["next_cursor"].as_str().expect("more");
    let rest = app
        .get_json(
            &admin.token,
            &format!("/api/v1/users?limit=2&cursor={cursor}"),
        )
        .await;
    assert_eq!(ids(&rest), [admin.account_id.0.to_string()]);

    let profile = app
        .get_json(
            &admin.token,
            &format!("/api/v1/users/{}", owner.account_id.0),
        )
        .await;
    assert_eq!(profile["user"]["contact"]["email"], "owner@example.com");
    assert_eq!(profile["user"]["platform_admin"], false);
    assert_eq!(
        profile["store_roles"],
        json!([{"store_id": store, "store_name": "Tea house", "role": "OWNER"}])
    );

    // Only platform admins: a store owner is refused everything here.
    for (method, path, body) in [
        (Method::GET, "/api/v1/users".to_owned(), None),
        (
            Method::GET,
            format!("/api/v1/users/{}", admin.account_id.0),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/users/{}/block", admin.account_id.0),
            Some(json!({"reason": "coup"})),
        ),
        (
            Method::POST,
            "/api/v1/users/bulk".to_owned(),
            Some(json!({"action": "unblock", "account_ids": [owner.account_id.0]})),
        ),
    ] {
        let response = app.call(method, &owner.token, &path, body).await;
        let problem = expect_json(response, 403, &path).await;
        assert_eq!(problem_slug(&problem), "forbidden");
    }

    // Blocked: the open session ends at once and signing in is refused.
    app.post_json(
        &admin.token,
        &format!("/api/v1/users/{}/block", owner.account_id.0),
        json!({"reason": "fraud report"}),
        200,
    )
    .await;
    let response = app
        .call(Method::GET, &owner.token, "/api/v1/stores", None)
        .await;
    expect_json(response, 401, "the blocked owner's session").await;
    let problem = expect_json(login(&app, "owner@example.com").await, 403, "login").await;
    assert_eq!(problem_slug(&problem), "account-blocked");
    let myself = app
        .post_json(
            &admin.token,
            &format!("/api/v1/users/{}/block", admin.account_id.0),
            json!({"reason": "oops"}),
            422,
        )
        .await;
    assert_eq!(myself["field"], "account_id");
    app.wait_for_projections().await;
    let blocked = app
        .get_json(&admin.token, "/api/v1/users?blocked=true")
        .await;
    assert_eq!(ids(&blocked), [owner.account_id.0.to_string()]);
    assert_eq!(blocked["items"][0]["blocked_reason"], "fraud report");

    // Bulk unblock: one result per account, in order.
    let nobody = uuid::Uuid::now_v7();
    let bulk = app
        .post_json(
            &admin.token,
            "/api/v1/users/bulk",
            json!({"action": "unblock", "account_ids": [owner.account_id.0, customer.0, nobody]}),
            200,
        )
        .await;
    let outcome: Vec<(bool, &str)> = bulk["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| (r["ok"] == true, problem_slug(&r["problem"])))
        .collect();
    assert_eq!(
        outcome,
        [
            (true, ""),
            (false, "account-not-blocked"),
            (false, "account-not-found")
        ]
    );
    expect_json(login(&app, "owner@example.com").await, 200, "login again").await;
    let (code, problem) = {
        let response = app
            .call(
                Method::GET,
                &admin.token,
                &format!("/api/v1/users/{nobody}"),
                None,
            )
            .await;
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap_or_default(),
        )
    };
    assert_eq!((code, problem_slug(&problem)), (404, "user-not-found"));
    app.stop().await;
}
