//! Signing in with Telegram over HTTP: the Login Widget and linking, Mini App `initData`, QR
//! login, the Telegram second factor, and re-authentication before changing either. Payloads are signed here with a test bot token, as
//! Telegram would; the bot's side is driven through the application calls it will make
//! (`confirm_login`, `approve_second_factor`).

use hmac::{Hmac, Mac};
use secrecy::SecretString;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shopfront::app::{AppError, AuthError};
use shopfront::config::ServeSettings;
use uuid::Uuid;

use crate::helpers::{count_events, spawn_app, spawn_app_with, TestApp};
use shopfront::testing;

pub(crate) const BOT_TOKEN: &str = "123456789:TEST-only-bot-token";
const BOT_USERNAME: &str = "shopfront_test_bot";
const PASSWORD: &str = "correct horse battery staple";

pub(crate) async fn telegram_app() -> TestApp {
    let mut settings = ServeSettings::for_tests();
    settings.telegram_bot_token = Some(SecretString::from(BOT_TOKEN));
    settings.telegram_bot_username = Some(BOT_USERNAME.into());
    spawn_app_with(settings).await
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn hmac_hex(key: &[u8], data: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(data.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn data_check_string(fields: &serde_json::Map<String, Value>) -> String {
    let mut pairs: Vec<String> = fields
        .iter()
        .filter(|(k, _)| k.as_str() != "hash")
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    pairs.sort();
    pairs.join("\n")
}

/// Login Widget data for `telegram_user_id`, signed with `bot_token` as Telegram does.
fn widget_signed(bot_token: &str, telegram_user_id: i64, auth_date: i64) -> Value {
    let mut data = json!({
        "id": telegram_user_id,
        "first_name": "Ann",
        "username": "ann_staff",
        "photo_url": "https://t.me/i/userpic/320/ann.jpg",
        "auth_date": auth_date,
    });
    let fields = data.as_object_mut().expect("object");
    let key = Sha256::digest(bot_token.as_bytes());
    let hash = hmac_hex(&key, &data_check_string(fields));
    fields.insert("hash".into(), hash.into());
    data
}

pub(crate) fn widget(telegram_user_id: i64) -> Value {
    widget_signed(BOT_TOKEN, telegram_user_id, now())
}

/// Mini App `initData` for `telegram_user_id`, signed as Telegram does. The same arguments give
/// the same payload (a Mini App launch's `initData`).
fn init_data(telegram_user_id: i64, auth_date: i64) -> String {
    init_data_named(telegram_user_id, "Bob", "Customer", auth_date)
}

/// Mini App `initData` for a Telegram user with this name, signed as Telegram does.
pub(crate) fn init_data_named(
    telegram_user_id: i64,
    first_name: &str,
    last_name: &str,
    auth_date: i64,
) -> String {
    let user = json!({"id": telegram_user_id, "first_name": first_name, "last_name": last_name,
                      "language_code": "en"})
    .to_string();
    let fields = [
        ("auth_date", auth_date.to_string()),
        ("query_id", "AAHdF6IQAAAAAN0XohDhrOrc".to_owned()),
        ("user", user),
    ];
    let dcs = fields
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n");
    let secret_key = {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"WebAppData").expect("key");
        mac.update(BOT_TOKEN.as_bytes());
        mac.finalize().into_bytes()
    };
    let hash = hmac_hex(&secret_key, &dcs);
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields.iter().map(|(k, v)| (*k, v.as_str())))
        .append_pair("hash", &hash)
        .finish()
}

pub(crate) async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app
        .client
        .request(method, format!("{}{path}", app.address))
        .header("user-agent", "telegram-test/1.0");
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("request")
}

pub(crate) async fn post(
    app: &TestApp,
    path: &str,
    bearer: Option<&str>,
    body: Value,
) -> reqwest::Response {
    send(app, reqwest::Method::POST, path, bearer, Some(body)).await
}

/// A poll of a re-authentication: by its session, with its secret.
async fn send_polled(app: &TestApp, path: &str, access: &str, secret: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{path}", app.address))
        .bearer_auth(access)
        .header("x-poll-secret", secret)
        .send()
        .await
        .expect("request")
}

async fn poll(app: &TestApp, path: &str, secret: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{path}", app.address))
        .header("x-poll-secret", secret)
        .send()
        .await
        .expect("request")
}

async fn problem(response: reqwest::Response, status: u16, kind: &str) -> Value {
    assert_eq!(response.status(), status, "expected {kind}");
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
    body
}

async fn json_of(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    response.json().await.expect("json")
}

/// A staff account with a password, signed in: (account id, access token).
pub(crate) async fn signed_in_staff(app: &TestApp, email: &str) -> (aggregates::AccountId, String) {
    let account_id = app
        .app
        .create_staff_account(email, SecretString::from(PASSWORD), false)
        .await
        .expect("account created");
    let tokens = json_of(
        post(
            app,
            "/api/v1/auth/login",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await,
        200,
    )
    .await;
    let access = tokens["access_token"].as_str().expect("token").to_owned();
    (account_id, access)
}

/// Proves the session of `access` again with the password (an account without the second
/// factor): it may then make one sign-in change.
pub(crate) async fn reauthenticate(app: &TestApp, access: &str) {
    let done = json_of(
        post(
            app,
            "/api/v1/auth/reauthenticate",
            Some(access),
            json!({"password": PASSWORD}),
        )
        .await,
        200,
    )
    .await;
    assert!(done["reauthenticated_until"].is_string(), "{done}");
}

async fn me(app: &TestApp, access_token: &str) -> Value {
    json_of(
        send(
            app,
            reqwest::Method::GET,
            "/api/v1/auth/me",
            Some(access_token),
            None,
        )
        .await,
        200,
    )
    .await
}

#[tokio::test]
async fn without_a_bot_token_the_telegram_flows_say_so() {
    let app = spawn_app().await;
    let (_, access) = signed_in_staff(&app, "staff@example.com").await;
    problem(
        post(&app, "/api/v1/auth/telegram", None, widget(42)).await,
        503,
        "telegram-not-configured",
    )
    .await;
    problem(
        post(
            &app,
            "/api/v1/auth/telegram/webapp",
            None,
            json!({"init_data": init_data(42, now())}),
        )
        .await,
        503,
        "telegram-not-configured",
    )
    .await;
    problem(
        post(&app, "/api/v1/auth/qr", None, json!({})).await,
        503,
        "telegram-not-configured",
    )
    .await;
    problem(
        send(
            &app,
            reqwest::Method::PUT,
            "/api/v1/auth/second-factor",
            Some(&access),
            Some(json!({"enabled": true})),
        )
        .await,
        503,
        "telegram-not-configured",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn linked_staff_sign_in_with_the_login_widget_and_forged_or_stale_data_is_refused() {
    let app = telegram_app().await;
    let (account_id, access) = signed_in_staff(&app, "ann@example.com").await;

    // Not linked yet: the Telegram user is unknown.
    problem(
        post(&app, "/api/v1/auth/telegram", None, widget(4242)).await,
        401,
        "unknown-telegram-user",
    )
    .await;
    reauthenticate(&app, &access).await;
    let linked = json_of(
        post(
            &app,
            "/api/v1/auth/telegram/link",
            Some(&access),
            widget(4242),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(linked["telegram_user_id"], 4242);
    assert_eq!(
        app.app.account_by_telegram(4242).await.expect("lookup"),
        Some(account_id)
    );
    let account = testing::load::<aggregates::account::Account>(&app.app, account_id)
        .await
        .expect("account");
    // The event holds the id sealed with the account's key, never in clear.
    let Some(aggregates::TelegramId::Sealed(sealed)) = account.telegram_user() else {
        panic!("the Telegram id is sealed: {account:?}");
    };
    assert_eq!(
        app.app
            .personal_data
            .open::<i64>(sealed)
            .await
            .expect("open"),
        shopfront::app::Revealed::Data(4242)
    );
    assert_eq!(
        count_events(&app.db.pool, "TelegramLinked").await,
        1,
        "linked once"
    );
    // Linking the same id again records nothing.
    json_of(
        post(
            &app,
            "/api/v1/auth/telegram/link",
            Some(&access),
            widget(4242),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(count_events(&app.db.pool, "TelegramLinked").await, 1);

    let tokens = json_of(
        post(&app, "/api/v1/auth/telegram", None, widget(4242)).await,
        200,
    )
    .await;
    let who = me(&app, tokens["access_token"].as_str().expect("token")).await;
    assert_eq!(who["account_id"], account_id.to_string());
    assert_eq!(who["telegram_user_id"], 4242);

    // Altered, signed for another bot, too old, from the future: refused.
    let mut altered = widget(4242);
    altered["first_name"] = "Mallory".into();
    problem(
        post(&app, "/api/v1/auth/telegram", None, altered).await,
        401,
        "invalid-telegram-signature",
    )
    .await;
    problem(
        post(
            &app,
            "/api/v1/auth/telegram",
            None,
            widget_signed("987:another-bot", 4242, now()),
        )
        .await,
        401,
        "invalid-telegram-signature",
    )
    .await;
    problem(
        post(
            &app,
            "/api/v1/auth/telegram",
            None,
            widget_signed(BOT_TOKEN, 4242, now() - 86_400 - 60),
        )
        .await,
        401,
        "telegram-auth-expired",
    )
    .await;
    problem(
        post(
            &app,
            "/api/v1/auth/telegram",
            None,
            widget_signed(BOT_TOKEN, 4242, now() + 3600),
        )
        .await,
        401,
        "telegram-auth-expired",
    )
    .await;
    let mut unsigned = widget(4242);
    unsigned["hash"] = "zz-not-hex".into();
    problem(
        post(&app, "/api/v1/auth/telegram", None, unsigned).await,
        401,
        "invalid-telegram-signature",
    )
    .await;

    // A Telegram user belongs to one account.
    let (_, other_access) = signed_in_staff(&app, "bob@example.com").await;
    reauthenticate(&app, &other_access).await;
    problem(
        post(
            &app,
            "/api/v1/auth/telegram/link",
            Some(&other_access),
            widget(4242),
        )
        .await,
        409,
        "telegram-already-linked",
    )
    .await;
    assert!(matches!(
        testing::register_account(&app.app, None, Some(4242), false).await,
        Err(AppError::Auth(AuthError::TelegramAlreadyLinked))
    ));
    // Accounts registered with a Telegram id are found by it.
    let registered = testing::register_account(&app.app, None, Some(5151), false)
        .await
        .expect("registered");
    assert_eq!(
        app.app.account_by_telegram(5151).await.expect("lookup"),
        Some(registered)
    );
    // Re-linking moves the account to the new Telegram user.
    reauthenticate(&app, &access).await;
    let relinked = post(
        &app,
        "/api/v1/auth/telegram/link",
        Some(&access),
        widget(4343),
    )
    .await;
    assert_eq!(relinked.status(), 200);
    assert_eq!(
        app.app.account_by_telegram(4242).await.expect("lookup"),
        None
    );
    assert_eq!(
        app.app.account_by_telegram(4343).await.expect("lookup"),
        Some(account_id)
    );
    app.stop().await;
}

#[tokio::test]
async fn a_mini_app_user_becomes_a_customer_once_and_signs_in_again() {
    let app = telegram_app().await;
    let first = json_of(
        post(
            &app,
            "/api/v1/auth/telegram/webapp",
            None,
            json!({"init_data": init_data(777_001, now())}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(first["registered"], true);
    // A later launch of the Mini App signs in with its own initData.
    let again = json_of(
        post(
            &app,
            "/api/v1/auth/telegram/webapp",
            None,
            json!({"init_data": init_data(777_001, now() - 60)}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(again["registered"], false);
    assert_eq!(again["account_id"], first["account_id"]);
    let who = me(
        &app,
        again["tokens"]["access_token"].as_str().expect("token"),
    )
    .await;
    assert_eq!(who["account_id"], first["account_id"]);
    assert_eq!(who["telegram_user_id"], 777_001);

    // Registered once, through the Account aggregate, channel telegram, name sealed.
    assert_eq!(count_events(&app.db.pool, "AccountRegistered").await, 1);
    let payload: serde_json::Value =
        sqlx::query_scalar("select payload from events where event_type = 'AccountRegistered'")
            .fetch_one(&app.db.pool)
            .await
            .expect("event");
    assert_eq!(
        payload["AccountRegistered"]["channel"], "telegram",
        "{payload}"
    );
    assert!(
        !payload.to_string().contains("Bob"),
        "the name is sealed: {payload}"
    );

    let tampered = init_data(777_001, now()).replace("Bob", "Eve");
    problem(
        post(
            &app,
            "/api/v1/auth/telegram/webapp",
            None,
            json!({"init_data": tampered}),
        )
        .await,
        401,
        "invalid-telegram-signature",
    )
    .await;
    problem(
        post(
            &app,
            "/api/v1/auth/telegram/webapp",
            None,
            json!({"init_data": init_data(777_002, now() - 2 * 86_400)}),
        )
        .await,
        401,
        "telegram-auth-expired",
    )
    .await;
    // A bogus hash is refused like a forged one.
    problem(
        post(
            &app,
            "/api/v1/auth/telegram/webapp",
            None,
            json!({"init_data": "auth_date=1&hash=00"}),
        )
        .await,
        401,
        "invalid-telegram-signature",
    )
    .await;
    assert_eq!(count_events(&app.db.pool, "AccountRegistered").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_qr_login_confirmed_in_the_bot_hands_its_tokens_to_the_poller_once() {
    let app = telegram_app().await;
    let staff = testing::register_account(&app.app, Some("qr@example.com"), Some(9090), false)
        .await
        .expect("account");

    let qr = json_of(post(&app, "/api/v1/auth/qr", None, json!({})).await, 200).await;
    let login_id = qr["login_id"].as_str().expect("id").to_owned();
    let secret = qr["poll_secret"].as_str().expect("secret").to_owned();
    let deep_link = qr["deep_link"].as_str().expect("link").to_owned();
    let prefix = format!("https://t.me/{BOT_USERNAME}?start=login_");
    assert!(deep_link.starts_with(&prefix), "{deep_link}");
    let start_token = deep_link.trim_start_matches(&prefix).to_owned();
    assert!(qr["qr_svg"].as_str().expect("svg").contains("<svg"));
    assert!(!deep_link.contains(&secret) && !deep_link.contains(&login_id));
    let path = format!("/api/v1/auth/qr/{login_id}");

    let pending = json_of(poll(&app, &path, &secret).await, 202).await;
    assert_eq!(pending["status"], "pending");
    assert!(pending.get("poll_secret").is_none());
    // Whoever sees the QR code holds the deep-link token, which is not the poll secret.
    problem(
        poll(&app, &path, &start_token).await,
        404,
        "login-not-found",
    )
    .await;
    let missing = app
        .client
        .get(format!("{}{path}", app.address))
        .send()
        .await
        .expect("request");
    assert_eq!(missing.status(), 400);

    // The bot: an unknown Telegram user cannot confirm; a linked one can, once.
    let request = app
        .app
        .describe_qr_login(&format!("login_{start_token}"))
        .await
        .expect("described");
    assert_eq!(request.login_id.to_string(), login_id);
    assert_eq!(request.user_agent.as_deref(), Some("telegram-test/1.0"));
    assert!(matches!(
        app.app.confirm_login(1111, &start_token).await,
        Err(AppError::Auth(AuthError::UnknownTelegramUser))
    ));
    let confirmed = app
        .app
        .confirm_login(9090, &format!("login_{start_token}"))
        .await
        .expect("confirmed");
    assert_eq!(confirmed.to_string(), login_id);
    assert!(matches!(
        app.app.confirm_login(9090, &start_token).await,
        Err(AppError::Auth(AuthError::LoginAlreadyDecided))
    ));

    let tokens = json_of(poll(&app, &path, &secret).await, 200).await;
    let who = me(&app, tokens["access_token"].as_str().expect("token")).await;
    assert_eq!(who["account_id"], staff.to_string());
    problem(poll(&app, &path, &secret).await, 410, "login-completed").await;
    // A QR login is not a second-factor login.
    problem(
        poll(&app, &format!("/api/v1/auth/login/{login_id}"), &secret).await,
        404,
        "login-not-found",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn an_expired_qr_login_can_be_neither_confirmed_nor_collected() {
    let app = telegram_app().await;
    testing::register_account(&app.app, None, Some(9191), false)
        .await
        .expect("account");
    let qr = json_of(post(&app, "/api/v1/auth/qr", None, json!({})).await, 200).await;
    let login_id: Uuid = qr["login_id"].as_str().expect("id").parse().expect("uuid");
    let secret = qr["poll_secret"].as_str().expect("secret");
    let start_token = qr["deep_link"]
        .as_str()
        .expect("link")
        .rsplit("start=")
        .next()
        .expect("token")
        .to_owned();
    sqlx::query(
        "update auth_login_challenges set expires_at = now() - interval '1 second' where login_id = $1",
    )
    .bind(login_id)
    .execute(&app.db.pool)
    .await
    .expect("expire");
    assert!(matches!(
        app.app.confirm_login(9191, &start_token).await,
        Err(AppError::Auth(AuthError::LoginExpired))
    ));
    problem(
        poll(&app, &format!("/api/v1/auth/qr/{login_id}"), secret).await,
        410,
        "login-expired",
    )
    .await;
    app.stop().await;
}

/// Starts a password login for an account with the second factor on: (login id, secret).
async fn second_factor_login(app: &TestApp, email: &str) -> (Uuid, String) {
    let pending = json_of(
        post(
            app,
            "/api/v1/auth/login",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await,
        202,
    )
    .await;
    assert_eq!(pending["status"], "second_factor_required");
    assert!(pending.get("access_token").is_none());
    (
        pending["login_id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("uuid"),
        pending["poll_secret"].as_str().expect("secret").to_owned(),
    )
}

#[tokio::test]
async fn the_second_factor_is_approved_or_denied_by_the_accounts_own_telegram_user() {
    let app = telegram_app().await;
    let (account_id, access) = signed_in_staff(&app, "twofa@example.com").await;
    let enable = |access: String| {
        let app = &app;
        async move {
            send(
                app,
                reqwest::Method::PUT,
                "/api/v1/auth/second-factor",
                Some(&access),
                Some(json!({"enabled": true})),
            )
            .await
        }
    };
    // Nobody could approve a login before a Telegram account is linked.
    problem(enable(access.clone()).await, 409, "telegram-not-linked").await;
    reauthenticate(&app, &access).await;
    let linked = post(
        &app,
        "/api/v1/auth/telegram/link",
        Some(&access),
        widget(6060),
    )
    .await;
    assert_eq!(linked.status(), 200);
    // The link used the re-authentication up: the next change needs its own.
    problem(
        enable(access.clone()).await,
        403,
        "reauthentication-required",
    )
    .await;
    reauthenticate(&app, &access).await;
    assert_eq!(enable(access.clone()).await.status(), 200);
    assert_eq!(me(&app, &access).await["second_factor"], true);
    assert_eq!(count_events(&app.db.pool, "SecondFactorChanged").await, 1);

    // Approved: the tokens, once.
    let (login_id, secret) = second_factor_login(&app, "twofa@example.com").await;
    let path = format!("/api/v1/auth/login/{login_id}");
    assert_eq!(
        json_of(poll(&app, &path, &secret).await, 202).await["status"],
        "pending"
    );
    // What the bot reads: a pending prompt for the account's Telegram user.
    let (telegram_user_id, notified): (i64, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as(
            "select telegram_user_id, notified_at from auth_login_challenges
              where login_id = $1 and kind = 'second_factor' and status = 'pending'",
        )
        .bind(login_id)
        .fetch_one(&app.db.pool)
        .await
        .expect("challenge row");
    assert_eq!((telegram_user_id, notified), (6060, None));
    assert!(matches!(
        app.app.approve_second_factor(7070, login_id, true).await,
        Err(AppError::Auth(AuthError::LoginNotFound))
    ));
    app.app
        .approve_second_factor(6060, login_id, true)
        .await
        .expect("approved");
    assert!(matches!(
        app.app.approve_second_factor(6060, login_id, false).await,
        Err(AppError::Auth(AuthError::LoginAlreadyDecided))
    ));
    let tokens = json_of(poll(&app, &path, &secret).await, 200).await;
    assert_eq!(
        me(&app, tokens["access_token"].as_str().expect("token")).await["account_id"],
        account_id.to_string()
    );
    problem(poll(&app, &path, &secret).await, 410, "login-completed").await;
    problem(
        poll(&app, &path, "a-guessed-secret").await,
        404,
        "login-not-found",
    )
    .await;

    // Denied.
    let (login_id, secret) = second_factor_login(&app, "twofa@example.com").await;
    app.app
        .approve_second_factor(6060, login_id, false)
        .await
        .expect("denied");
    problem(
        poll(&app, &format!("/api/v1/auth/login/{login_id}"), &secret).await,
        401,
        "login-denied",
    )
    .await;

    // Expired: neither approvable nor collectable.
    let (login_id, secret) = second_factor_login(&app, "twofa@example.com").await;
    sqlx::query(
        "update auth_login_challenges set expires_at = now() - interval '1 second' where login_id = $1",
    )
    .bind(login_id)
    .execute(&app.db.pool)
    .await
    .expect("expire");
    assert!(matches!(
        app.app.approve_second_factor(6060, login_id, true).await,
        Err(AppError::Auth(AuthError::LoginExpired))
    ));
    problem(
        poll(&app, &format!("/api/v1/auth/login/{login_id}"), &secret).await,
        410,
        "login-expired",
    )
    .await;

    // The password alone never yields tokens for this account.
    assert!(matches!(
        app.app
            .login(
                "twofa@example.com",
                SecretString::from(PASSWORD),
                None,
                None
            )
            .await,
        Err(AppError::Auth(AuthError::SecondFactorRequired))
    ));
    // Turning it off: the password alone no longer re-authenticates, the Telegram user must
    // approve as for a log-in.
    let pending = json_of(
        post(
            &app,
            "/api/v1/auth/reauthenticate",
            Some(&access),
            json!({"password": PASSWORD}),
        )
        .await,
        202,
    )
    .await;
    assert_eq!(pending["status"], "approval_required");
    let reauth_id: Uuid = pending["login_id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    let reauth_secret = pending["poll_secret"].as_str().expect("secret").to_owned();
    app.app
        .approve_second_factor(6060, reauth_id, true)
        .await
        .expect("approved");
    let done = json_of(
        send_polled(
            &app,
            &format!("/api/v1/auth/reauthenticate/{reauth_id}"),
            &access,
            &reauth_secret,
        )
        .await,
        200,
    )
    .await;
    assert!(done["reauthenticated_until"].is_string());
    // Turned off, the password suffices again.
    let off = send(
        &app,
        reqwest::Method::PUT,
        "/api/v1/auth/second-factor",
        Some(&access),
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(off.status(), 200);
    let tokens = post(
        &app,
        "/api/v1/auth/login",
        None,
        json!({"email": "twofa@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(tokens.status(), 200);
    app.stop().await;
}

/// Logs `email` in once more (another device): its access token.
async fn another_session(app: &TestApp, email: &str) -> String {
    let tokens = json_of(
        post(
            app,
            "/api/v1/auth/login",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await,
        200,
    )
    .await;
    tokens["access_token"].as_str().expect("token").to_owned()
}

async fn second_factor(app: &TestApp, access: &str, enabled: bool) -> reqwest::Response {
    send(
        app,
        reqwest::Method::PUT,
        "/api/v1/auth/second-factor",
        Some(access),
        Some(json!({"enabled": enabled})),
    )
    .await
}

/// The attack: someone holds a copy of the victim's session (its tokens), not the password nor
/// the victim's Telegram. Linking their own Telegram or turning the second factor off would
/// make the theft permanent; both need a re-authentication they cannot give.
#[tokio::test]
async fn a_stolen_session_can_neither_relink_telegram_nor_turn_the_second_factor_off() {
    let app = telegram_app().await;
    let (account_id, session) = signed_in_staff(&app, "victim@example.com").await;
    reauthenticate(&app, &session).await;
    assert_eq!(
        post(
            &app,
            "/api/v1/auth/telegram/link",
            Some(&session),
            widget(5_001)
        )
        .await
        .status(),
        200
    );
    reauthenticate(&app, &session).await;
    assert_eq!(second_factor(&app, &session, true).await.status(), 200);
    let stolen = session.clone();

    problem(
        post(
            &app,
            "/api/v1/auth/telegram/link",
            Some(&stolen),
            widget(6_666),
        )
        .await,
        403,
        "reauthentication-required",
    )
    .await;
    problem(
        second_factor(&app, &stolen, false).await,
        403,
        "reauthentication-required",
    )
    .await;
    problem(
        post(
            &app,
            "/api/v1/auth/reauthenticate",
            Some(&stolen),
            json!({"password": "a guess at the password"}),
        )
        .await,
        403,
        "reauthentication-failed",
    )
    .await;
    // Even the right password (phished) only asks the victim's Telegram for approval.
    let pending = json_of(
        post(
            &app,
            "/api/v1/auth/reauthenticate",
            Some(&stolen),
            json!({"password": PASSWORD}),
        )
        .await,
        202,
    )
    .await;
    let login_id: Uuid = pending["login_id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    assert!(matches!(
        app.app.approve_second_factor(6_666, login_id, true).await,
        Err(AppError::Auth(AuthError::LoginNotFound))
    ));
    problem(
        second_factor(&app, &stolen, false).await,
        403,
        "reauthentication-required",
    )
    .await;

    assert_eq!(
        app.app.telegram_of(account_id).await.expect("lookup"),
        Some(5_001)
    );
    assert_eq!(me(&app, &session).await["second_factor"], true);
    assert_eq!(count_events(&app.db.pool, "TelegramLinked").await, 1);
    assert_eq!(count_events(&app.db.pool, "SecondFactorChanged").await, 1);
    app.stop().await;
}

/// A confirmed change ends every other session of the account (a session stolen earlier ends
/// with it) and is recorded as an Account event by its actor.
#[tokio::test]
async fn a_confirmed_sign_in_change_ends_the_other_sessions_and_is_recorded() {
    let app = telegram_app().await;
    let (account_id, mine) = signed_in_staff(&app, "ann@example.com").await;
    let elsewhere = another_session(&app, "ann@example.com").await;

    reauthenticate(&app, &mine).await;
    let linked = post(
        &app,
        "/api/v1/auth/telegram/link",
        Some(&mine),
        widget(7_007),
    )
    .await;
    assert_eq!(linked.status(), 200);
    problem(
        send(
            &app,
            reqwest::Method::GET,
            "/api/v1/auth/me",
            Some(&elsewhere),
            None,
        )
        .await,
        401,
        "invalid-token",
    )
    .await;
    assert_eq!(me(&app, &mine).await["telegram_user_id"], 7_007);
    let actor: Option<String> = sqlx::query_scalar(
        "select metadata ->> 'actor_id' from events where event_type = 'TelegramLinked'",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("event");
    assert_eq!(actor, Some(account_id.to_string()));

    let elsewhere = another_session(&app, "ann@example.com").await;
    reauthenticate(&app, &mine).await;
    assert_eq!(second_factor(&app, &mine, true).await.status(), 200);
    problem(
        send(
            &app,
            reqwest::Method::GET,
            "/api/v1/auth/me",
            Some(&elsewhere),
            None,
        )
        .await,
        401,
        "invalid-token",
    )
    .await;
    let changed: Value =
        sqlx::query_scalar("select payload from events where event_type = 'SecondFactorChanged'")
            .fetch_one(&app.db.pool)
            .await
            .expect("event");
    assert_eq!(changed["SecondFactorChanged"]["enabled"], true, "{changed}");
    // Asking for the setting it already has changes nothing and needs no re-authentication.
    assert_eq!(second_factor(&app, &mine, true).await.status(), 200);
    assert_eq!(count_events(&app.db.pool, "SecondFactorChanged").await, 1);
    app.stop().await;
}

/// An account without a password (a Mini App customer) re-authenticates by approving in
/// Telegram. The approval counts for the session that asked, once, and never opens a session.
#[tokio::test]
async fn a_telegram_reauthentication_serves_its_own_session_once_and_opens_none() {
    let app = telegram_app().await;
    let first = json_of(
        post(
            &app,
            "/api/v1/auth/telegram/webapp",
            None,
            json!({"init_data": init_data(777_100, now())}),
        )
        .await,
        200,
    )
    .await;
    let mine = first["tokens"]["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let other = json_of(
        post(
            &app,
            "/api/v1/auth/telegram/webapp",
            None,
            json!({"init_data": init_data(777_100, now() - 60)}),
        )
        .await,
        200,
    )
    .await;
    let other = other["tokens"]["access_token"]
        .as_str()
        .expect("token")
        .to_owned();

    problem(
        post(
            &app,
            "/api/v1/auth/reauthenticate",
            Some(&mine),
            json!({"password": PASSWORD}),
        )
        .await,
        409,
        "password-not-set",
    )
    .await;
    let pending = json_of(
        post(&app, "/api/v1/auth/reauthenticate", Some(&mine), json!({})).await,
        202,
    )
    .await;
    let login_id: Uuid = pending["login_id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    let secret = pending["poll_secret"].as_str().expect("secret").to_owned();
    let path = format!("/api/v1/auth/reauthenticate/{login_id}");
    assert_eq!(
        json_of(send_polled(&app, &path, &mine, &secret).await, 202).await["status"],
        "pending"
    );
    app.app
        .approve_second_factor(777_100, login_id, true)
        .await
        .expect("approved");
    // Not a login: the login poll does not know it, approved or not.
    problem(
        poll(&app, &format!("/api/v1/auth/login/{login_id}"), &secret).await,
        404,
        "login-not-found",
    )
    .await;
    // Not the other session's.
    problem(
        send_polled(&app, &path, &other, &secret).await,
        404,
        "login-not-found",
    )
    .await;
    let done = json_of(send_polled(&app, &path, &mine, &secret).await, 200).await;
    assert!(done["reauthenticated_until"].is_string());
    problem(
        send_polled(&app, &path, &mine, &secret).await,
        410,
        "login-completed",
    )
    .await;
    let sessions: i64 = sqlx::query_scalar("select count(*) from auth_sessions")
        .fetch_one(&app.db.pool)
        .await
        .expect("sessions");
    assert_eq!(sessions, 2, "the approval opened no session");

    // The re-authenticated session may now move the account to another Telegram user.
    let relinked = post(
        &app,
        "/api/v1/auth/telegram/link",
        Some(&mine),
        widget(777_101),
    )
    .await;
    assert_eq!(relinked.status(), 200);
    problem(
        send(
            &app,
            reqwest::Method::GET,
            "/api/v1/auth/me",
            Some(&other),
            None,
        )
        .await,
        401,
        "invalid-token",
    )
    .await;
    app.stop().await;
}

/// The attacks: replay a captured `initData` (it stays fresh for a day), and use the Mini App
/// to get a staff account's session without its password.
#[tokio::test]
async fn the_mini_app_signs_in_customers_only_and_each_init_data_once() {
    let app = telegram_app().await;
    let data = init_data(777_200, now());
    assert_eq!(
        post(
            &app,
            "/api/v1/auth/telegram/webapp",
            None,
            json!({"init_data": data})
        )
        .await
        .status(),
        200
    );
    problem(
        post(
            &app,
            "/api/v1/auth/telegram/webapp",
            None,
            json!({"init_data": data}),
        )
        .await,
        401,
        "telegram-data-replayed",
    )
    .await;
    // The same signature spelt in capitals is the same payload.
    let hash = data.rsplit("hash=").next().expect("hash").to_owned();
    let shouted = data.replace(&hash, &hash.to_uppercase());
    assert_ne!(shouted, data);
    problem(
        post(
            &app,
            "/api/v1/auth/telegram/webapp",
            None,
            json!({"init_data": shouted}),
        )
        .await,
        401,
        "telegram-data-replayed",
    )
    .await;

    // A staff account linked to a Telegram user: the Mini App refuses it.
    let (_, access) = signed_in_staff(&app, "staff@example.com").await;
    reauthenticate(&app, &access).await;
    assert_eq!(
        post(
            &app,
            "/api/v1/auth/telegram/link",
            Some(&access),
            widget(777_300)
        )
        .await
        .status(),
        200
    );
    problem(
        post(
            &app,
            "/api/v1/auth/telegram/webapp",
            None,
            json!({"init_data": init_data(777_300, now())}),
        )
        .await,
        403,
        "mini-app-customers-only",
    )
    .await;
    app.stop().await;
}
