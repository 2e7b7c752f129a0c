//! Test harness: a fresh database per test (created, migrated, dropped afterwards) and the real
//! service on a free port. Quiet unless `TEST_LOG=1`.

use std::future::Future;
use std::sync::{Arc, Once};
use std::time::Duration;

use aggregates::{AccountId, Channel, Money, OrderId, ProductId, StoreId};
use secrecy::SecretString;
use shopfront::app::{
    grant, App, AppError, Caller, Grant, NewProduct, NewStore, OrderLineInput, PlaceOrder,
    StoreAccess,
};
use shopfront::config::{DatabaseSettings, LogFormat, ServeSettings, TelemetrySettings};
use shopfront::db::{quote_ident, MIGRATOR};
use shopfront::startup::Application;
use shopfront::testing;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::oneshot;

/// The server tests create their databases on.
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            shopfront::telemetry::init(&TelemetrySettings {
                filter: "info,shopfront=debug".into(),
                log_format: LogFormat::Pretty,
            });
        }
    });
}

/// A uniquely named database that is dropped when this value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
    /// Whether dropping this handle drops the database (false for [`TestDb::another_handle`]).
    owned: bool,
}

impl TestDb {
    /// Creates and migrates a fresh database.
    pub async fn new() -> TestDb {
        let db = Self::empty().await;
        MIGRATOR.run(&db.pool).await.expect("migrations apply");
        db
    }

    /// Creates a fresh database without migrating it.
    pub async fn empty() -> TestDb {
        init_logging();
        let name = format!("shopfront_test_{}", uuid::Uuid::now_v7().simple());
        let mut conn = PgConnection::connect(&format!("{}/postgres", server_url()))
            .await
            .expect("Postgres answers at TEST_DATABASE_URL (default 127.0.0.1:5432)");
        sqlx::query(&format!("create database {}", quote_ident(&name)))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let url = format!("{}/{}", server_url(), name);
        let pool = PgPoolOptions::new()
            .max_connections(30)
            .connect(&url)
            .await
            .expect("connect to the test database");
        TestDb {
            name,
            url,
            pool,
            owned: true,
        }
    }

    /// Hands the database over to a new handle (its own pool), which drops it when dropped;
    /// this one no longer does. For a test that stops the service holding it and goes on.
    pub async fn hand_over(&mut self) -> TestDb {
        let mut handle = self.another_handle().await;
        handle.owned = std::mem::replace(&mut self.owned, false);
        handle
    }

    /// A second handle on this database (its own pool) for a second service instance; the
    /// database is dropped with the first handle only.
    pub async fn another_handle(&self) -> TestDb {
        let pool = PgPoolOptions::new()
            .max_connections(30)
            .connect(&self.url)
            .await
            .expect("connect to the test database");
        TestDb {
            name: self.name.clone(),
            url: self.url.clone(),
            pool,
            owned: false,
        }
    }

    /// Database settings pointing at this database.
    pub fn settings(&self) -> DatabaseSettings {
        DatabaseSettings {
            database_url: Some(SecretString::from(self.url.clone())),
            local_database_url: "postgres://postgres@127.0.0.1:1/unused".into(),
            data_dir: std::env::temp_dir().join("shopfront-tests-unused"),
            pg_bin_dir: None,
            max_connections: 30,
            acquire_timeout_seconds: 5,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let name = self.name.clone();
        // Drop runs outside async; a short-lived thread with its own runtime does the work.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let mut conn = PgConnection::connect(&format!("{}/postgres", server_url())).await?;
                sqlx::query(&format!(
                    "drop database if exists {} with (force)",
                    quote_ident(&name)
                ))
                .execute(&mut conn)
                .await
                .map(|_| ())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

/// The real service running on a free port against its own database.
pub struct TestApp {
    pub address: String,
    pub app: Arc<App>,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// Where this instance keeps uploaded files (its own directory, removed on drop).
    pub storage_dir: std::path::PathBuf,
    // Dropped last: the database outlives the server using it.
    pub db: TestDb,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.storage_dir);
    }
}

impl TestApp {
    /// Waits until every projection has applied every event visible now.
    pub async fn wait_for_projections(&self) {
        wait_for_projections(&self.db.pool).await;
    }

    /// Stops the server gracefully and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stops cleanly");
        }
    }
}

/// Builds the service on a free port against a fresh database and starts serving.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(ServeSettings::for_tests()).await
}

/// [`spawn_app`] with settings of the test's choosing (start from `ServeSettings::for_tests()`).
pub async fn spawn_app_with(settings: ServeSettings) -> TestApp {
    let db = TestDb::empty().await;
    let database = db.settings();
    spawn_app_on(db, &database, settings).await
}

/// The service on a database the test prepared; `database` points at `db` (e.g. with an
/// `application_name` in its URL, to find the service's connections).
pub async fn spawn_app_on(
    db: TestDb,
    database: &DatabaseSettings,
    settings: ServeSettings,
) -> TestApp {
    let storage_dir = settings.storage_dir.clone();
    let application = Application::build(database, settings)
        .await
        .expect("the application builds");
    let address = format!("http://127.0.0.1:{}", application.port());
    let app = application.app();
    let (tx, rx) = oneshot::channel();
    let server = tokio::spawn(application.run_until_stopped(async {
        let _ = rx.await;
    }));
    TestApp {
        address,
        app,
        client: reqwest::Client::new(),
        shutdown: Some(tx),
        server: Some(server),
        storage_dir,
        db,
    }
}

/// A store with an owner, and a caller acting as that owner.
#[derive(Clone)]
pub struct Shop {
    pub owner: Caller,
    pub owner_id: AccountId,
    pub store_id: StoreId,
}

/// Registers an owner and creates a RUB store with a 30-minute reservation TTL.
pub async fn open_shop(app: &App) -> Shop {
    let owner_id = testing::register_account(app, Some("owner@example.com"), None, false)
        .await
        .expect("register owner");
    let store_id = open_store_for(app, owner_id, "Test shop").await;
    Shop {
        owner: testing::caller_for(owner_id, Channel::Api),
        owner_id,
        store_id,
    }
}

/// A RUB store on Moscow time with a 30-minute reservation TTL, owned by `owner_id`, opened
/// through the application layer (no HTTP round trip, no read-your-writes wait).
pub async fn open_store_for(app: &App, owner_id: AccountId, name: &str) -> StoreId {
    testing::open_store(
        app,
        NewStore {
            owner_id,
            name: aggregates::store::StoreName::parse(name).expect("name"),
            currency: rub(),
            timezone: aggregates::store::TimeZone::parse("Europe/Moscow").expect("zone"),
            payment_instructions: "Bank X, account 1".into(),
            default_low_stock_threshold: 5,
            reservation_ttl_minutes: 30,
        },
    )
    .await
    .expect("create store")
}

impl Shop {
    /// The store `store_id` of `owner` (a staff account), acting as them.
    pub fn of(owner: &Staff, store_id: StoreId) -> Shop {
        Shop {
            owner: testing::caller_for(owner.account_id, Channel::Api),
            owner_id: owner.account_id,
            store_id,
        }
    }

    /// The owner's proof of `P` in the shop, from the application layer's own check.
    pub async fn access<P: Grant>(&self, app: &App) -> StoreAccess<P> {
        app.authorize::<P>(&self.owner, self.store_id)
            .await
            .expect("the owner may")
    }

    /// A product priced `price` kopecks with `units` received.
    pub async fn product(&self, app: &App, sku: &str, price: i64, units: i64) -> ProductId {
        app.create_product(
            &self.access::<grant::ManageProducts>(app).await,
            NewProduct {
                name: format!("Product {sku}"),
                description: String::new(),
                sku: aggregates::product::Sku::parse(sku).expect("sku"),
                price: Money::new(price, rub()),
                initial_stock: (units > 0).then_some(units),
                low_stock_threshold: None,
            },
        )
        .await
        .expect("create product")
        .outcome
    }

    /// Places an order for the customer `caller` with `(product, quantity)` lines and no
    /// contact details.
    pub async fn place(
        &self,
        app: &App,
        caller: &Caller,
        lines: &[(ProductId, i64)],
    ) -> Result<OrderId, AppError> {
        app.place_order(caller, self.order(lines))
            .await
            .map(|placed| placed.outcome)
    }

    /// The `PlaceOrder` with `(product, quantity)` lines.
    pub fn order(&self, lines: &[(ProductId, i64)]) -> PlaceOrder {
        PlaceOrder {
            store_id: self.store_id,
            lines: lines
                .iter()
                .map(|&(product_id, quantity)| OrderLineInput {
                    product_id,
                    quantity,
                })
                .collect(),
            contact: None,
        }
    }
}

pub fn rub() -> aggregates::Currency {
    "RUB".parse().expect("RUB is a currency")
}

/// A customer (a new account id) and a caller acting as them through Telegram.
pub fn customer() -> (AccountId, Caller) {
    let id = AccountId::new();
    (id, testing::caller_for(id, Channel::Telegram))
}

/// Awaits `condition` becoming true, checking every 10 ms, for at most `within`. For conditions
/// that no notification announces (the global log's visibility horizon moving).
pub async fn eventually<F, Fut>(within: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        ticks.tick().await;
        if condition().await {
            return true;
        }
    }
    false
}

/// Counts stored events of one type.
pub async fn count_events(pool: &PgPool, event_type: &str) -> i64 {
    sqlx::query_scalar("select count(*) from events where event_type = $1")
        .bind(event_type)
        .fetch_one(pool)
        .await
        .expect("count events")
}

/// Waits until every projection has applied every event committed so far (woken by checkpoint
/// notifications; fails the test after 20 s). "Committed", not "visible": an event hidden
/// behind another session's open transaction is waited for too.
pub async fn wait_for_projections(pool: &PgPool) {
    let Some(head) = projections::log::last_committed(pool)
        .await
        .expect("last event")
    else {
        return;
    };
    let names = projections::read_models::names();
    let caught_up =
        projections::runtime::wait_for_position(pool, &names, head, Duration::from_secs(20))
            .await
            .expect("wait for projections");
    assert!(caught_up, "projections did not reach {head:?} within 20 s");
}

/// The password every test staff account uses.
pub const STAFF_PASSWORD: &str = "correct horse battery staple";

/// A staff account logged in over HTTP.
pub struct Staff {
    pub account_id: AccountId,
    pub token: String,
}

impl TestApp {
    /// Creates a staff account (as the CLI does) and logs it in over HTTP.
    pub async fn staff(&self, email: &str, platform_admin: bool) -> Staff {
        let account_id = self
            .app
            .create_staff_account(email, SecretString::from(STAFF_PASSWORD), platform_admin)
            .await
            .expect("staff account created");
        Staff {
            account_id,
            token: self.staff_login(email).await,
        }
    }

    /// Logs a staff account in (again) over HTTP: a new session's access token.
    pub async fn staff_login(&self, email: &str) -> String {
        let response = self
            .client
            .post(format!("{}/api/v1/auth/login", self.address))
            .json(&serde_json::json!({"email": email, "password": STAFF_PASSWORD}))
            .send()
            .await
            .expect("login request");
        assert_eq!(response.status(), 200, "login of {email}");
        let body: serde_json::Value = response.json().await.expect("tokens");
        body["access_token"]
            .as_str()
            .expect("access token")
            .to_owned()
    }

    /// `owner` (a staff account) opens a RUB store on Moscow time named `name` through the
    /// application layer; the shop, acting as them.
    pub async fn shop_of(&self, owner: &Staff, name: &str) -> Shop {
        Shop::of(
            owner,
            open_store_for(&self.app, owner.account_id, name).await,
        )
    }

    /// `admin` (a platform admin) opens a RUB store on Moscow time named `name` for `owner`;
    /// returns its id.
    pub async fn open_store(&self, admin: &Staff, owner: &Staff, name: &str) -> String {
        let body = serde_json::json!({
            "name": name,
            "currency": "RUB",
            "timezone": "Europe/Moscow",
            "payment_instructions": "Bank X, account 1",
            "owner_id": owner.account_id.0,
        });
        self.post_json(&admin.token, "/api/v1/stores", body, 201)
            .await["store_id"]
            .as_str()
            .expect("store id")
            .to_owned()
    }

    /// Sends `method path` with `token` and an optional JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request")
    }

    /// Sends `method path` and returns the status with the JSON body (null when not JSON).
    pub async fn status_of(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let response = self.call(method, token, path, body).await;
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or_default())
    }

    /// `GET path` as `token`, expecting 200, as JSON.
    pub async fn get_json(&self, token: &str, path: &str) -> serde_json::Value {
        let response = self.call(reqwest::Method::GET, token, path, None).await;
        let status = response.status();
        let body: serde_json::Value = response.json().await.expect("json body");
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// `POST path` with `body` as `token`, expecting `status`, as JSON (null when empty).
    pub async fn post_json(
        &self,
        token: &str,
        path: &str,
        body: serde_json::Value,
        status: u16,
    ) -> serde_json::Value {
        let response = self
            .call(reqwest::Method::POST, token, path, Some(body))
            .await;
        expect_json(response, status, &format!("POST {path}")).await
    }
}

/// Asserts the status of `response` and returns its JSON body (null when empty); a problem
/// response must be `application/problem+json`.
pub async fn expect_json(
    response: reqwest::Response,
    status: u16,
    what: &str,
) -> serde_json::Value {
    let actual = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("body");
    assert_eq!(actual, status, "{what}: {text}");
    if actual >= 400 {
        assert_eq!(content_type, "application/problem+json", "{what}");
    }
    if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).expect("json body")
    }
}

/// The `type` slug of a problem body (`https://shopfront.dev/problems/<slug>`).
pub fn problem_slug(body: &serde_json::Value) -> &str {
    body["type"]
        .as_str()
        .and_then(|t| t.rsplit('/').next())
        .unwrap_or_default()
}
