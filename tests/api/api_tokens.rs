//! Long-lived API tokens: shown once and stored hashed, scoped to stores and a role (never more
//! than the account's current role), read-only when asked, revocable, dead with a blocked
//! account. Store-scoped endpoints come later, so scope is checked through `App::authorize`
//! with the principal the bearer checker builds from the token.

use aggregates::{AccountId, Channel, StoreId, StoreRole};
use secrecy::SecretString;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shopfront::app::{grant, AppError, Grant, NewStore};
use shopfront::testing;

use crate::helpers::{rub, spawn_app, TestApp};

const PASSWORD: &str = "correct horse battery staple";

/// A staff account with a password, signed in: (account id, access token).
async fn staff(app: &TestApp, email: &str) -> (AccountId, String) {
    let account_id = app
        .app
        .create_staff_account(email, SecretString::from(PASSWORD), false)
        .await
        .expect("account created");
    let tokens: Value = app
        .client
        .post(format!("{}/api/v1/auth/login", app.address))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("tokens");
    (
        account_id,
        tokens["access_token"].as_str().expect("token").to_owned(),
    )
}

async fn store_of(app: &TestApp, owner_id: AccountId) -> StoreId {
    testing::open_store(
        &app.app,
        NewStore {
            owner_id,
            name: aggregates::store::StoreName::parse("Token shop").expect("name"),
            currency: rub(),
            timezone: aggregates::store::TimeZone::parse("Europe/Moscow").expect("zone"),
            payment_instructions: "Bank X".into(),
            default_low_stock_threshold: 5,
            reservation_ttl_minutes: 30,
        },
    )
    .await
    .expect("store")
}

async fn create(app: &TestApp, bearer: &str, body: Value) -> reqwest::Response {
    app.client
        .post(format!("{}/api/v1/api-tokens", app.address))
        .bearer_auth(bearer)
        .json(&body)
        .send()
        .await
        .expect("request")
}

async fn get(app: &TestApp, path: &str, bearer: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{path}", app.address))
        .bearer_auth(bearer)
        .send()
        .await
        .expect("request")
}

async fn problem(response: reqwest::Response, status: u16, kind: &str) {
    assert_eq!(response.status(), status, "expected {kind}");
    if status == 401 {
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"shopfront\""
        );
    }
    let body: Value = response.json().await.expect("problem json");
    assert_eq!(
        body["type"],
        format!("https://shopfront.dev/problems/{kind}"),
        "{body}"
    );
}

/// Creates a token and returns (token id, secret).
async fn token(app: &TestApp, bearer: &str, body: Value) -> (String, String) {
    let response = create(app, bearer, body).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.expect("json");
    (
        created["token_id"].as_str().expect("id").to_owned(),
        created["token"].as_str().expect("secret").to_owned(),
    )
}

async fn authorize<P: Grant>(
    app: &TestApp,
    token: &str,
    store_id: StoreId,
) -> Result<StoreRole, AppError> {
    let caller = testing::caller_with_token(&app.app, token)
        .await
        .expect("valid token");
    app.app
        .authorize::<P>(&caller, store_id)
        .await
        .map(|access| access.role())
}

#[tokio::test]
async fn a_token_is_shown_once_stored_hashed_listed_and_revoked() {
    let app = spawn_app().await;
    let (owner, access) = staff(&app, "owner@example.com").await;
    let store = store_of(&app, owner).await;

    let response = create(
        &app,
        &access,
        json!({"name": "accounting export", "store_ids": [store.0], "role": "ADMIN"}),
    )
    .await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.expect("json");
    let secret = created["token"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("sfp_") && secret.len() > 40, "{secret}");
    assert_eq!(created["role"], "ADMIN");
    assert_eq!(created["read_only"], false);
    assert!(secret.starts_with(created["token_prefix"].as_str().expect("prefix")));

    // Stored as its SHA-256 only.
    let (hashed, in_clear): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where token_hash = $1),
                count(*) filter (where token_prefix = $2 or name = $2)
           from api_tokens",
    )
    .bind(Sha256::digest(secret.as_bytes()).to_vec())
    .bind(&secret)
    .fetch_one(&app.db.pool)
    .await
    .expect("rows");
    assert_eq!((hashed, in_clear), (1, 0));

    // The token works as a bearer token and shows its scope.
    let me: Value = get(&app, "/api/v1/auth/me", &secret)
        .await
        .json()
        .await
        .expect("me");
    assert_eq!(me["account_id"], owner.to_string());
    assert_eq!(me["api_token"]["role"], "ADMIN");
    assert_eq!(me["api_token"]["store_ids"], json!([store.0]));
    assert!(me.get("session_id").is_none());

    // Listed without the secret, with its last use.
    let listed: Value = get(&app, "/api/v1/api-tokens", &access)
        .await
        .json()
        .await
        .expect("list");
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert!(listed[0].get("token").is_none());
    assert!(!listed.to_string().contains(&secret));
    assert!(listed[0]["last_used_at"].is_string());

    // A token cannot manage credentials: no sessions, no tokens, no second factor.
    problem(
        get(&app, "/api/v1/auth/sessions", &secret).await,
        403,
        "session-required",
    )
    .await;
    problem(
        create(
            &app,
            &secret,
            json!({"name": "child", "store_ids": [store.0], "role": "VENDOR"}),
        )
        .await,
        403,
        "session-required",
    )
    .await;

    // Revoked: at once invalid; revoking again or someone else's is 404.
    let token_id = created["token_id"].as_str().expect("id");
    let (_, stranger) = staff(&app, "stranger@example.com").await;
    let delete = |bearer: String| {
        let app = &app;
        let path = format!("{}/api/v1/api-tokens/{token_id}", app.address);
        async move {
            app.client
                .delete(path)
                .bearer_auth(bearer)
                .send()
                .await
                .expect("request")
        }
    };
    problem(delete(stranger).await, 404, "api-token-not-found").await;
    assert_eq!(delete(access.clone()).await.status(), 204);
    problem(
        get(&app, "/api/v1/auth/me", &secret).await,
        401,
        "invalid-token",
    )
    .await;
    problem(delete(access.clone()).await, 404, "api-token-not-found").await;
    problem(
        get(&app, "/api/v1/auth/me", "sfp_not-a-token").await,
        401,
        "invalid-token",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_token_acts_only_in_its_stores_within_its_role_and_its_owners_current_role() {
    let app = spawn_app().await;
    let (owner, owner_access) = staff(&app, "owner@example.com").await;
    let store = store_of(&app, owner).await;
    let other_store = store_of(&app, owner).await;
    let (admin, admin_access) = staff(&app, "admin@example.com").await;
    let owner_caller = testing::caller_for(owner, Channel::Api);
    let manage_staff = app
        .app
        .authorize::<grant::ManageStaff>(&owner_caller, store)
        .await
        .expect("the owner manages staff");
    app.app
        .assign_staff_role(&manage_staff, admin, StoreRole::Admin)
        .await
        .expect("admin");

    // What a caller may mint: never above their own role, only where they hold one.
    problem(
        create(
            &app,
            &admin_access,
            json!({"name": "x", "store_ids": [store.0], "role": "OWNER"}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    problem(
        create(
            &app,
            &admin_access,
            json!({"name": "x", "store_ids": [store.0], "role": "AUDITOR"}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    problem(
        create(
            &app,
            &admin_access,
            json!({"name": "x", "store_ids": [store.0, other_store.0], "role": "VENDOR"}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    problem(
        create(
            &app,
            &admin_access,
            json!({"name": "x", "store_ids": [store.0], "role": "VENDOR",
                   "expires_at": "2020-01-01T00:00:00Z"}),
        )
        .await,
        422,
        "invalid-expires-at",
    )
    .await;
    problem(
        create(
            &app,
            &admin_access,
            json!({"name": "x", "store_ids": [], "role": "VENDOR"}),
        )
        .await,
        400,
        "invalid-request",
    )
    .await;

    // The owner's ADMIN token: its store only, an admin's rights only.
    let (_, owner_token) = token(
        &app,
        &owner_access,
        json!({"name": "ops", "store_ids": [store.0], "role": "ADMIN"}),
    )
    .await;
    assert_eq!(
        authorize::<grant::ReviewReceipts>(&app, &owner_token, store)
            .await
            .expect("allowed"),
        StoreRole::Admin
    );
    let forbidden = |r: Result<StoreRole, AppError>| matches!(r, Err(AppError::Forbidden(_)));
    assert!(forbidden(
        authorize::<grant::ViewStore>(&app, &owner_token, other_store).await
    ));
    assert!(forbidden(
        authorize::<grant::ViewAuditTrail>(&app, &owner_token, store).await
    ));

    // Read-only: views, never changes.
    let (_, read_only) = token(
        &app,
        &owner_access,
        json!({"name": "dashboard", "store_ids": [store.0, other_store.0], "role": "OWNER",
               "read_only": true}),
    )
    .await;
    assert!(
        authorize::<grant::ViewAuditTrail>(&app, &read_only, other_store)
            .await
            .is_ok()
    );
    assert!(forbidden(
        authorize::<grant::ManageStock>(&app, &read_only, store).await
    ));
    assert!(forbidden(
        authorize::<grant::ChangeStoreSettings>(&app, &read_only, store).await
    ));

    // The admin's ADMIN token follows the admin's role: lowered to vendor, then revoked.
    let (_, admin_token) = token(
        &app,
        &admin_access,
        json!({"name": "admin tool", "store_ids": [store.0], "role": "ADMIN"}),
    )
    .await;
    assert!(authorize::<grant::CancelOrders>(&app, &admin_token, store)
        .await
        .is_ok());
    app.app
        .assign_staff_role(&manage_staff, admin, StoreRole::Vendor)
        .await
        .expect("lowered");
    assert!(forbidden(
        authorize::<grant::CancelOrders>(&app, &admin_token, store).await
    ));
    assert_eq!(
        authorize::<grant::ManageStock>(&app, &admin_token, store)
            .await
            .expect("a vendor's right"),
        StoreRole::Vendor
    );
    app.app
        .revoke_staff_role(&manage_staff, admin)
        .await
        .expect("revoked");
    assert!(forbidden(
        authorize::<grant::ViewStore>(&app, &admin_token, store).await
    ));

    // Expired and blocked-account tokens stop working.
    sqlx::query(
        "update api_tokens set expires_at = now() - interval '1 second' where account_id = $1",
    )
    .bind(admin.0)
    .execute(&app.db.pool)
    .await
    .expect("expire");
    problem(
        get(&app, "/api/v1/auth/me", &admin_token).await,
        401,
        "invalid-token",
    )
    .await;
    testing::block_account(&app.app, owner, "left the company")
        .await
        .expect("blocked");
    problem(
        get(&app, "/api/v1/auth/me", &owner_token).await,
        403,
        "account-blocked",
    )
    .await;
    app.stop().await;
}
