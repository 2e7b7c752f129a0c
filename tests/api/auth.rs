//! Authentication over HTTP: login, sessions, rotating refresh tokens with reuse detection,
//! logout, and clear problem+json 401s.

use std::io::Write;
use std::process::{Command, Stdio};

use secrecy::SecretString;
use serde_json::{json, Value};
use shopfront::app::{AppError, AuthError};

use crate::helpers::{spawn_app, TestApp, TestDb};

const PASSWORD: &str = "correct horse battery staple";

async fn staff(app: &TestApp, email: &str) -> aggregates::AccountId {
    app.app
        .create_staff_account(email, SecretString::from(PASSWORD), false)
        .await
        .expect("account created")
}

async fn post(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.client
        .post(format!("{}{path}", app.address))
        .header("user-agent", "auth-test/1.0")
        .json(&body)
        .send()
        .await
        .expect("request")
}

async fn sessions(app: &TestApp, access_token: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .get(format!("{}/api/v1/auth/sessions", app.address));
    if let Some(token) = access_token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request")
}

async fn problem(response: reqwest::Response, status: u16, kind: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
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
    assert_eq!(body["status"], status);
    body
}

#[tokio::test]
async fn a_session_lives_through_refreshes_and_dies_on_refresh_token_reuse() {
    let app = spawn_app().await;
    let account_id = staff(&app, "Admin@Example.com").await;

    let login = post(
        &app,
        "/api/v1/auth/login",
        json!({"email": "admin@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(login.status(), 200);
    let first: Value = login.json().await.expect("tokens");
    assert_eq!(
        (first["token_type"].as_str(), first["expires_in"].as_u64()),
        (Some("Bearer"), Some(900))
    );

    let listed: Value = sessions(&app, first["access_token"].as_str())
        .await
        .json()
        .await
        .expect("sessions");
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(listed[0]["current"], true);
    assert_eq!(listed[0]["user_agent"], "auth-test/1.0");
    assert_eq!(listed[0]["client_ip"], "127.0.0.1");
    assert_eq!(listed[0]["session_id"], first["session_id"]);

    // Rotation: a new refresh token each time, same session.
    let refreshed = post(
        &app,
        "/api/v1/auth/refresh",
        json!({"refresh_token": first["refresh_token"]}),
    )
    .await;
    assert_eq!(refreshed.status(), 200);
    let second: Value = refreshed.json().await.expect("tokens");
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(second["session_id"], first["session_id"]);
    assert_eq!(
        sessions(&app, second["access_token"].as_str())
            .await
            .status(),
        200
    );

    // The first refresh token, used again, has leaked: the whole session is revoked.
    let reused = post(
        &app,
        "/api/v1/auth/refresh",
        json!({"refresh_token": first["refresh_token"]}),
    )
    .await;
    problem(reused, 401, "refresh-token-reused").await;
    let after = post(
        &app,
        "/api/v1/auth/refresh",
        json!({"refresh_token": second["refresh_token"]}),
    )
    .await;
    problem(after, 401, "invalid-token").await;
    problem(
        sessions(&app, second["access_token"].as_str()).await,
        401,
        "invalid-token",
    )
    .await;
    let reason: String =
        sqlx::query_scalar("select revoked_reason from auth_sessions where account_id = $1")
            .bind(account_id.0)
            .fetch_one(&app.db.pool)
            .await
            .expect("session row");
    assert_eq!(reason, "refresh token reused");
    app.stop().await;
}

#[tokio::test]
async fn logging_out_ends_the_session_at_once() {
    let app = spawn_app().await;
    staff(&app, "vendor@example.com").await;
    let tokens: Value = post(
        &app,
        "/api/v1/auth/login",
        json!({"email": "vendor@example.com", "password": PASSWORD}),
    )
    .await
    .json()
    .await
    .expect("tokens");
    let out = post(
        &app,
        "/api/v1/auth/logout",
        json!({"refresh_token": tokens["refresh_token"]}),
    )
    .await;
    assert_eq!(out.status(), 204);
    problem(
        sessions(&app, tokens["access_token"].as_str()).await,
        401,
        "invalid-token",
    )
    .await;
    let refresh = post(
        &app,
        "/api/v1/auth/refresh",
        json!({"refresh_token": tokens["refresh_token"]}),
    )
    .await;
    problem(refresh, 401, "invalid-token").await;
    app.stop().await;
}

#[tokio::test]
async fn bad_credentials_and_bad_requests_get_clear_problems_never_500s() {
    let app = spawn_app().await;
    staff(&app, "owner@example.com").await;
    let wrong = post(
        &app,
        "/api/v1/auth/login",
        json!({"email": "owner@example.com", "password": "not the password"}),
    )
    .await;
    let body = problem(wrong, 401, "invalid-credentials").await;
    assert_eq!(body["detail"], "e-mail or password is wrong");
    // An unknown e-mail is indistinguishable from a wrong password.
    let unknown = post(
        &app,
        "/api/v1/auth/login",
        json!({"email": "nobody@example.com", "password": PASSWORD}),
    )
    .await;
    problem(unknown, 401, "invalid-credentials").await;

    problem(sessions(&app, None).await, 401, "unauthorized").await;
    problem(
        sessions(&app, Some("not-a-jwt")).await,
        401,
        "invalid-token",
    )
    .await;

    let malformed = app
        .client
        .post(format!("{}/api/v1/auth/login", app.address))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .expect("request");
    problem(malformed, 400, "invalid-request").await;
    // Bodies over 1 MiB are refused before anything reads them.
    let huge = app
        .client
        .post(format!("{}/api/v1/auth/login", app.address))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"email\": \"{}\", \"password\": \"x\"}}",
            "a".repeat(2 * 1024 * 1024)
        ))
        .send()
        .await
        .expect("request");
    problem(huge, 413, "payload-too-large").await;
    let chunked = app
        .client
        .post(format!("{}/api/v1/auth/login", app.address))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(
            (0..64).map(|_| Ok::<_, std::io::Error>(vec![b' '; 32 * 1024])),
        )))
        .send()
        .await
        .expect("request");
    problem(chunked, 413, "payload-too-large").await;
    let missing = app
        .client
        .get(format!("{}/api/v1/nothing-here", app.address))
        .send()
        .await
        .expect("request");
    problem(missing, 404, "not-found").await;
    app.stop().await;
}

#[tokio::test]
async fn staff_accounts_need_a_valid_unique_email_and_a_long_password() {
    let db = TestDb::new().await;
    let app = shopfront::app::App::new(db.pool.clone());
    let create = |email: &'static str, password: &'static str| {
        let app = &app;
        async move {
            app.create_staff_account(email, SecretString::from(password), false)
                .await
        }
    };
    assert!(matches!(
        create("a@example.com", "short").await,
        Err(AppError::Auth(AuthError::WeakPassword))
    ));
    assert!(matches!(
        create("not-an-email", PASSWORD).await,
        Err(AppError::Auth(AuthError::InvalidEmail))
    ));
    let first = create("a@example.com", PASSWORD).await.expect("created");
    assert!(matches!(
        create(" A@EXAMPLE.com ", PASSWORD).await,
        Err(AppError::Auth(AuthError::EmailTaken))
    ));
    // The account is in the log with its e-mail sealed, never in clear; the hash is argon2id.
    let registered: i64 = sqlx::query_scalar(
        "select count(*) from events where event_type = 'AccountRegistered' and payload::text not like '%example.com%'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("count");
    assert_eq!(registered, 1);
    let hash: String =
        sqlx::query_scalar("select password_hash from credentials where account_id = $1")
            .bind(first.0)
            .fetch_one(&db.pool)
            .await
            .expect("hash");
    assert!(hash.starts_with("$argon2id$"));
}

#[tokio::test]
async fn the_cli_creates_an_account_from_a_password_on_stdin() {
    let db = TestDb::new().await;
    let run = |stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shopfront"))
            .args([
                "accounts",
                "create",
                "--email",
                "ops@example.com",
                "--password-stdin",
                "--platform-admin",
            ])
            .env("DATABASE_URL", &db.url)
            .env("SHOPFRONT_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write");
        child.wait_with_output().expect("output")
    };
    let created = run(&format!("{PASSWORD}\n"));
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let out: Value = serde_json::from_slice(&created.stdout).expect("json");
    assert_eq!(
        (out["email"].as_str(), out["platform_admin"].as_bool()),
        (Some("ops@example.com"), Some(true))
    );

    let again = run(&format!("{PASSWORD}\n"));
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr)
        .contains("an account with this e-mail already exists"));

    let app = shopfront::app::App::new(db.pool.clone());
    let tokens = app
        .login("ops@example.com", SecretString::from(PASSWORD), None, None)
        .await
        .expect("logs in");
    let principal = app
        .authenticate(&tokens.access_token)
        .await
        .expect("valid token");
    assert!(principal.claims_platform_admin());
    assert_eq!(
        principal.account_id().to_string(),
        out["account_id"].as_str().unwrap_or_default()
    );
}

#[tokio::test]
async fn a_user_revokes_one_session_or_all_others_but_never_someone_elses() {
    let app = spawn_app().await;
    staff(&app, "many@example.com").await;
    staff(&app, "other@example.com").await;
    let login = |email: &'static str| {
        let app = &app;
        async move {
            let tokens: Value = post(
                app,
                "/api/v1/auth/login",
                json!({"email": email, "password": PASSWORD}),
            )
            .await
            .json()
            .await
            .expect("tokens");
            (
                tokens["access_token"].as_str().expect("token").to_owned(),
                tokens["session_id"].as_str().expect("sid").to_owned(),
            )
        }
    };
    let (laptop, _) = login("many@example.com").await;
    let (phone, phone_session) = login("many@example.com").await;
    let (tablet, _) = login("many@example.com").await;
    let (_, foreign_session) = login("other@example.com").await;
    let delete = |bearer: String, session: String| {
        let app = &app;
        async move {
            app.client
                .delete(format!("{}/api/v1/auth/sessions/{session}", app.address))
                .bearer_auth(bearer)
                .send()
                .await
                .expect("request")
        }
    };

    problem(
        delete(laptop.clone(), foreign_session.clone()).await,
        404,
        "session-not-found",
    )
    .await;
    assert_eq!(
        delete(laptop.clone(), phone_session.clone()).await.status(),
        204
    );
    problem(
        sessions(&app, Some(phone.as_str())).await,
        401,
        "invalid-token",
    )
    .await;
    problem(
        delete(laptop.clone(), phone_session).await,
        404,
        "session-not-found",
    )
    .await;

    let revoked: Value = app
        .client
        .post(format!(
            "{}/api/v1/auth/sessions/revoke-others",
            app.address
        ))
        .bearer_auth(&laptop)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(revoked["revoked"], 1);
    problem(
        sessions(&app, Some(tablet.as_str())).await,
        401,
        "invalid-token",
    )
    .await;
    let left: Value = sessions(&app, Some(laptop.as_str()))
        .await
        .json()
        .await
        .expect("sessions");
    assert_eq!(left.as_array().map(Vec::len), Some(1));
    assert_eq!(left[0]["current"], true);
    // The other account's session is untouched.
    let open: i64 = sqlx::query_scalar(
        "select count(*) from auth_sessions where session_id = $1::uuid and revoked_at is null",
    )
    .bind(&foreign_session)
    .fetch_one(&app.db.pool)
    .await
    .expect("count");
    assert_eq!(open, 1);
    app.stop().await;
}

/// A client whose requests come from `127.0.0.<last>` (the whole of 127/8 is this machine).
fn from_address(last: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::V4(std::net::Ipv4Addr::new(
            127, 0, 0, last,
        )))
        .build()
        .expect("client")
}

async fn log_in_from(app: &TestApp, last: u8, email: &str, password: &str) -> reqwest::Response {
    from_address(last)
        .post(format!("{}/api/v1/auth/login", app.address))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("request")
}

/// Asserts a 429 `login-throttled` problem with a `Retry-After` within the quota's minute.
async fn assert_throttled(response: reqwest::Response) {
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds");
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    let body = problem(response, 429, "login-throttled").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("retry in"),
        "{body}"
    );
}

/// The attack: guess one account's password from many addresses, each under the per-IP
/// log-in limit. The per-account throttle stops it, for unknown e-mails alike (so a 429 does
/// not reveal that an account exists), and a stolen session's re-authentication shares it.
#[tokio::test]
async fn password_guesses_are_throttled_per_account_from_any_address() {
    let mut settings = shopfront::config::ServeSettings::for_tests();
    settings.rate_limit_login_account = shopfront::config::RateLimit::new(1, 3);
    let app = crate::helpers::spawn_app_with(settings).await;
    staff(&app, "victim@example.com").await;
    staff(&app, "bystander@example.com").await;

    for last in 2..=4 {
        let guess = log_in_from(&app, last, "victim@example.com", "guess number one, two").await;
        problem(guess, 401, "invalid-credentials").await;
    }
    // The quota is spent: even the right password, from yet another address, waits.
    assert_throttled(log_in_from(&app, 5, "victim@example.com", PASSWORD).await).await;
    // Other accounts are not affected.
    assert_eq!(
        log_in_from(&app, 5, "bystander@example.com", PASSWORD)
            .await
            .status(),
        200
    );
    // Unknown e-mails are throttled the same way.
    for last in 2..=4 {
        let guess = log_in_from(&app, last, "nobody@example.com", "guess number one, two").await;
        problem(guess, 401, "invalid-credentials").await;
    }
    assert_throttled(log_in_from(&app, 5, "nobody@example.com", PASSWORD).await).await;

    // Re-authentication from a stolen session counts against the same quota.
    let tokens: Value = log_in_from(&app, 6, "bystander@example.com", PASSWORD)
        .await
        .json()
        .await
        .expect("tokens");
    let access = tokens["access_token"].as_str().expect("token");
    let reauthenticate = |password: &'static str| {
        app.client
            .post(format!("{}/api/v1/auth/reauthenticate", app.address))
            .bearer_auth(access)
            .json(&json!({"password": password}))
            .send()
    };
    // Two log-ins of the bystander spent two attempts; one guess spends the third.
    problem(
        reauthenticate("a guessed password, wrong")
            .await
            .expect("request"),
        403,
        "reauthentication-failed",
    )
    .await;
    assert_throttled(reauthenticate(PASSWORD).await.expect("request")).await;
    app.stop().await;
}
