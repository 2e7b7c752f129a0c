//! The service across an outage of its database: Postgres stopped and started again under load.
//!
//! During the outage every request fails fast and clearly (503 `database-unavailable` with
//! `Retry-After`, within the pool's acquire timeout); afterwards the service, every projection
//! and the process managers carry on by themselves, and nothing that was acknowledged is lost.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use aggregates::store::Store;
use aggregates::Channel;
use secrecy::SecretString;
use shopfront::app::{App, AppError, NewStore};
use shopfront::config::{DatabaseSettings, ServeSettings};
use shopfront::db::LocalCluster;
use shopfront::startup::Application;
use shopfront::testing;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::helpers::{
    eventually, init_logging, problem_slug, rub, wait_for_projections, Shop, TestDb, STAFF_PASSWORD,
};

/// The pool's acquire timeout in this test: the longest a request may wait for the database.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long an accepted order's answer waits for the read models before it says 202 with the
/// order's `Location` instead (`--read-your-writes-wait-ms`): after a restart the projections
/// reconnect, and the commands committed meanwhile must not wait for them longer than this.
const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(1);

/// What a request may take on top of `ACQUIRE_TIMEOUT` (the rest of its work, a loaded machine).
const LATENCY_MARGIN: Duration = Duration::from_millis(1500);

/// Clients placing orders at the same time, each on a product of its own.
const CLIENTS: usize = 6;

/// Where the PostgreSQL 15 server binaries are (Debian's layout).
const PG_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// A private PostgreSQL cluster in a temporary directory, started with `serve`'s own code
/// (`shopfront::db::LocalCluster`). Stopped and deleted when dropped, also when a test fails.
struct PrivateCluster {
    dir: PathBuf,
    port: u16,
    running: Option<LocalCluster>,
}

impl PrivateCluster {
    fn start() -> PrivateCluster {
        let dir =
            std::env::temp_dir().join(format!("shopfront-restart-{}", Uuid::now_v7().simple()));
        let mut cluster = PrivateCluster {
            dir,
            port: 0,
            running: None,
        };
        cluster.start_again();
        cluster
    }

    /// Starts the stopped cluster on its data and port (initialising it the first time).
    fn start_again(&mut self) {
        let running = LocalCluster::start(&self.dir, Some(PG_BIN_DIR.as_ref()))
            .expect("the private cluster starts");
        self.port = running.port();
        self.running = Some(running);
    }

    /// `pg_ctl -m fast -w stop`: open connections are ended, new ones refused.
    fn stop(&mut self) {
        drop(self.running.take());
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err(),
            "the private cluster is stopped"
        );
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        drop(self.running.take());
        if let Err(err) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("warning: could not remove {}: {err}", self.dir.display());
        }
    }
}

/// One request of a client and how it went.
#[derive(Debug)]
struct Outcome {
    started: Instant,
    latency: Duration,
    /// 0: no answer within the client's timeout (a hang) or no connection.
    status: u16,
    content_type: String,
    retry_after: Option<String>,
    problem: String,
    order_id: Option<Uuid>,
}

/// Places an order for one unit of `product_id` (`url`: the store's orders) and records how
/// it went.
async fn place_order(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    product_id: Uuid,
) -> Outcome {
    let started = Instant::now();
    let sent = client
        .post(url)
        .bearer_auth(token)
        .json(&serde_json::json!({"lines": [{"product_id": product_id, "quantity": 1}]}))
        .send()
        .await;
    let mut outcome = Outcome {
        started,
        latency: Duration::ZERO,
        status: 0,
        content_type: String::new(),
        retry_after: None,
        problem: String::new(),
        order_id: None,
    };
    if let Ok(response) = sent {
        outcome.status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        outcome.content_type = header("content-type").unwrap_or_default();
        outcome.retry_after = header("retry-after");
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        outcome.problem = problem_slug(&body).to_owned();
        // 201 with the order, or 202 (committed, not yet in the read models) with its location.
        outcome.order_id = body["order_id"]
            .as_str()
            .or_else(|| body["location"].as_str()?.rsplit('/').next())
            .and_then(|id| id.parse().ok());
    }
    outcome.latency = started.elapsed();
    outcome
}

/// Whether the service took the order: 201 (shown) or 202 (committed, shown shortly).
fn acknowledged(status: u16) -> bool {
    status == 201 || status == 202
}

/// Advisory locks (of `names`) that no connection of the service holds right now.
async fn leaderless(pool: &PgPool, names: &[&str]) -> Vec<String> {
    sqlx::query_scalar(
        "select n.name from unnest($2::text[]) as n(name)
          where not exists (
                select 1 from pg_locks l join pg_stat_activity a using (pid)
                 where l.locktype = 'advisory' and l.granted and l.objsubid = 2
                   and l.database = (select oid from pg_database where datname = current_database())
                   and l.classid = $1::int4::oid and l.objid = hashtext(n.name)::oid
                   and a.application_name like 'shopfront %')",
    )
    .bind(projections::runtime::LOCK_NAMESPACE)
    .bind(names)
    .fetch_all(pool)
    .await
    .expect("read pg_locks")
}

/// The service, built on the private cluster and serving on a free port.
struct Service {
    address: String,
    app: Arc<App>,
    shutdown: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Service {
    /// Builds the real `Application` against `database` on the cluster and starts serving.
    async fn start(cluster: &PrivateCluster, database: &str) -> Service {
        let settings = DatabaseSettings {
            database_url: Some(SecretString::from(cluster.url(database))),
            local_database_url: "postgres://postgres@127.0.0.1:1/unused".into(),
            data_dir: std::env::temp_dir().join("shopfront-tests-unused"),
            pg_bin_dir: None,
            max_connections: 30,
            acquire_timeout_seconds: ACQUIRE_TIMEOUT.as_secs(),
        };
        // The process managers step once an hour (`for_tests`): only their leadership shows.
        let serve = ServeSettings {
            read_your_writes_wait_ms: READ_YOUR_WRITES_WAIT.as_millis() as u64,
            ..ServeSettings::for_tests()
        };
        let application = Application::build(&settings, serve)
            .await
            .expect("the application builds");
        let address = format!("http://127.0.0.1:{}", application.port());
        let app = application.app();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(application.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Service {
            address,
            app,
            shutdown,
            server,
        }
    }

    /// An owner with a password, their store, and `count` well-stocked products; returns the
    /// store, the products and the owner's access token (logged in over HTTP).
    async fn open_store(&self, http: &reqwest::Client, count: usize) -> (Uuid, Vec<Uuid>, String) {
        let app = &self.app;
        let owner_id = app
            .create_staff_account(
                "owner@example.com",
                SecretString::from(STAFF_PASSWORD),
                false,
            )
            .await
            .expect("owner account");
        let owner = testing::caller_for(owner_id, Channel::Api);
        let store_id = testing::open_store(
            app,
            NewStore {
                owner_id,
                name: aggregates::store::StoreName::parse("Restart shop").expect("name"),
                currency: rub(),
                timezone: aggregates::store::TimeZone::parse("Europe/Moscow").expect("zone"),
                payment_instructions: "Bank X, account 1".into(),
                default_low_stock_threshold: 5,
                reservation_ttl_minutes: 30,
            },
        )
        .await
        .expect("store");
        let shop = Shop {
            owner,
            owner_id,
            store_id,
        };
        let mut products = Vec::new();
        for n in 0..count {
            let product = shop.product(app, &format!("SKU-{n}"), 1_000, 100_000).await;
            products.push(product.0);
        }
        let login: serde_json::Value = http
            .post(format!("{}/api/v1/auth/login", self.address))
            .json(&serde_json::json!({"email": "owner@example.com", "password": STAFF_PASSWORD}))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("tokens");
        let token = login["access_token"].as_str().expect("access token");
        (store_id.0, products, token.to_owned())
    }

    async fn ready(&self, http: &reqwest::Client) -> (reqwest::Response, Duration) {
        let started = Instant::now();
        let response = http
            .get(format!("{}/health/ready", self.address))
            .send()
            .await
            .expect("readiness probe");
        (response, started.elapsed())
    }

    async fn stop(self) {
        let _ = self.shutdown.send(());
        self.server
            .await
            .expect("server task")
            .expect("the server stops cleanly");
    }
}

/// A client placing orders for one unit of `product_id`, one after another, reporting each to
/// `outcomes`, until it has had an order accepted that it sent after `restarted` was set.
fn spawn_client(
    http: reqwest::Client,
    url: String,
    token: String,
    product_id: Uuid,
    restarted: Arc<OnceLock<Instant>>,
    outcomes: mpsc::UnboundedSender<Outcome>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let give_up = Instant::now() + Duration::from_secs(60);
        while Instant::now() < give_up {
            let outcome = place_order(&http, &url, &token, product_id).await;
            let accepted = acknowledged(outcome.status);
            let done = accepted && restarted.get().is_some_and(|at| outcome.started > *at);
            if outcomes.send(outcome).is_err() || done {
                return;
            }
            if !accepted {
                // A real client would wait `Retry-After`; a short pause keeps the load on
                // without spinning should an error ever come back at once.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    })
}

/// Every outcome, timed from the moment the stop began: printed when the test fails.
fn timeline(outcomes: &[Outcome], stopping: Instant) -> String {
    let since_stop = |t: Instant| match t.checked_duration_since(stopping) {
        Some(after) => after.as_millis() as i64,
        None => -((stopping - t).as_millis() as i64),
    };
    outcomes
        .iter()
        .map(|o| {
            format!(
                "{:>6} ms +{:>5} ms {} {} {:?}",
                since_stop(o.started),
                o.latency.as_millis(),
                o.status,
                o.problem,
                o.retry_after
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_restart_under_load_answers_503s_and_the_service_recovers_by_itself() {
    init_logging();
    let mut cluster = tokio::task::spawn_blocking(PrivateCluster::start)
        .await
        .expect("cluster task");
    let database = format!("shopfront_test_{}", Uuid::now_v7().simple());
    let service = Service::start(&cluster, &database).await;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&cluster.url(&database))
        .await
        .expect("test pool");
    let http = reqwest::Client::builder()
        // Far past any acceptable answer: a request still open then is a hang, not a wait.
        .timeout(ACQUIRE_TIMEOUT * 10)
        .build()
        .expect("http client");
    let (store_id, products, token) = service.open_store(&http, CLIENTS).await;

    // Clients place orders, each on its own product (so none queues behind another's lock).
    let restarted: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let (report, mut outcomes) = mpsc::unbounded_channel::<Outcome>();
    let url = format!("{}/api/v1/stores/{store_id}/orders", service.address);
    let clients: Vec<_> = products
        .iter()
        .map(|&product| {
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            spawn_client(http, url, token, product, restarted.clone(), report.clone())
        })
        .collect();
    drop(report);
    let mut seen: Vec<Outcome> = Vec::new();
    while seen.iter().filter(|o| acknowledged(o.status)).count() < CLIENTS * 3 {
        seen.push(outcomes.recv().await.expect("clients are running"));
    }

    // The database goes away: `pg_ctl stop -m fast` ends every connection.
    let stopping = Instant::now();
    let mut cluster = tokio::task::spawn_blocking(move || {
        cluster.stop();
        cluster
    })
    .await
    .expect("stop task");
    let stopped_at = Instant::now();
    let (ready, probe_latency) = service.ready(&http).await;
    assert_eq!(ready.status(), 503, "not ready while the database is down");
    assert_eq!(ready.headers()["content-type"], "application/problem+json");
    assert!(ready.headers().contains_key("retry-after"));
    assert!(
        probe_latency < Duration::from_secs(2) + LATENCY_MARGIN,
        "readiness answers within its 2 s: {probe_latency:?}"
    );
    // Each client has two requests start after the stop, and answered.
    while seen.iter().filter(|o| o.started > stopped_at).count() < CLIENTS * 2 {
        seen.push(outcomes.recv().await.expect("clients are running"));
    }

    // The database comes back; the clients go on until each has had an order accepted.
    let restarting = Instant::now();
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.start_again();
        cluster
    })
    .await
    .expect("start task");
    let restarted_at = Instant::now();
    restarted.set(restarted_at).expect("restarted once");
    while let Some(outcome) = outcomes.recv().await {
        seen.push(outcome);
    }
    for client in clients {
        client.await.expect("client task");
    }
    eprintln!(
        "stop took {:?}, outage {:?}, restart took {:?}\n{}",
        stopped_at - stopping,
        restarting - stopped_at,
        restarted_at - restarting,
        timeline(&seen, stopping)
    );

    // Every failure was a 503 problem with Retry-After, never a 500 or a hang.
    for outcome in &seen {
        assert!(
            acknowledged(outcome.status) || outcome.status == 503,
            "only 201, 202 or 503: {outcome:?}"
        );
        if outcome.status == 503 {
            assert_eq!(
                outcome.content_type, "application/problem+json",
                "{outcome:?}"
            );
            assert_eq!(outcome.problem, "database-unavailable", "{outcome:?}");
            assert!(outcome.retry_after.is_some(), "Retry-After: {outcome:?}");
        }
        // A request waits for a connection at most once: a placement is one transaction, so
        // when its commit fails there is nothing to compensate (ADR 0005). An accepted one then
        // waits for the read models at most the read-your-writes wait (ADR 0006).
        assert!(
            outcome.latency <= ACQUIRE_TIMEOUT + READ_YOUR_WRITES_WAIT + LATENCY_MARGIN,
            "answered within one acquire timeout: {outcome:?}"
        );
    }
    let during: Vec<&Outcome> = seen
        .iter()
        .filter(|o| o.started > stopped_at && o.started + o.latency < restarting)
        .collect();
    assert!(during.len() >= CLIENTS, "requests during the outage");
    assert!(during.iter().all(|o| o.status == 503), "{during:?}");
    let accepted_after = seen
        .iter()
        .filter(|o| acknowledged(o.status) && o.started > restarted_at)
        .count();
    assert_eq!(
        accepted_after, CLIENTS,
        "every client's orders succeed again"
    );
    let (ready, _) = service.ready(&http).await;
    assert_eq!(ready.status(), 200, "ready once the database is back");

    // Nothing acknowledged was lost: each 201's OrderPlaced event, and, once every projection
    // has caught up with the log, its row in the orders read model.
    let accepted: Vec<Uuid> = seen.iter().filter_map(|o| o.order_id).collect();
    assert_eq!(
        accepted.len(),
        seen.iter().filter(|o| acknowledged(o.status)).count()
    );
    let logged: i64 = sqlx::query_scalar(
        "select count(distinct aggregate_id) from events
          where aggregate_type = 'Order' and event_type = 'OrderPlaced'
            and aggregate_id = any($1)",
    )
    .bind(accepted.iter().map(Uuid::to_string).collect::<Vec<_>>())
    .fetch_one(&pool)
    .await
    .expect("count events");
    assert_eq!(
        logged as usize,
        accepted.len(),
        "every accepted order is in the log"
    );
    wait_for_projections(&pool).await;
    let projected: i64 = sqlx::query_scalar("select count(*) from orders where order_id = any($1)")
        .bind(&accepted)
        .fetch_one(&pool)
        .await
        .expect("count orders");
    assert_eq!(
        projected as usize,
        accepted.len(),
        "every accepted order is projected"
    );
    for projection in projections::read_models::all() {
        let report = projections::maintenance::verify(&pool, &*projection)
            .await
            .expect("verify");
        let name = projection.name();
        assert!(
            report.matches(),
            "{name} matches a fresh replay: {report:?}"
        );
    }

    // Every projection and the order-expiry process manager has a leader again. The process
    // managers take their lock back on their own schedule and announce nothing: polled.
    let mut names = projections::read_models::names();
    names.push("order-expiry");
    let led = eventually(Duration::from_secs(10), || async {
        leaderless(&pool, &names).await.is_empty()
    })
    .await;
    assert!(
        led,
        "no leader after the restart: {:?}",
        leaderless(&pool, &names).await
    );

    service.stop().await;
    pool.close().await;
    drop(cluster);
}

/// An error as the service sees it, classified by the application layer.
fn classified(err: sqlx::Error) -> AppError {
    AppError::from(err)
}

#[tokio::test]
async fn every_sign_of_an_unreachable_database_is_unavailable_not_internal() {
    // Nothing listens on port 1: connection refused.
    let refused = PgConnection::connect("postgres://postgres@127.0.0.1:1/postgres")
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(classified(refused), AppError::Unavailable(_)));

    // The pool gives up after its acquire timeout.
    let nowhere = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy("postgres://postgres@127.0.0.1:1/postgres")
        .expect("lazy pool");
    let timed_out = sqlx::query("select 1")
        .execute(&nowhere)
        .await
        .expect_err("no server");
    assert!(
        matches!(timed_out, sqlx::Error::PoolTimedOut),
        "{timed_out:?}"
    );
    assert!(matches!(classified(timed_out), AppError::Unavailable(_)));

    // The same through the application's event store loading an aggregate.
    let app = App::new(nowhere.clone());
    let loaded = testing::load::<Store>(&app, Uuid::now_v7()).await;
    assert!(
        matches!(loaded, Err(AppError::Unavailable(_))),
        "{loaded:?}"
    );

    // A closed pool.
    nowhere.close().await;
    let closed = sqlx::query("select 1")
        .execute(&nowhere)
        .await
        .expect_err("closed");
    assert!(matches!(classified(closed), AppError::Unavailable(_)));

    // The server ends the connection (SQLSTATE 57P01, as on `pg_ctl stop -m fast`).
    let db = TestDb::empty().await;
    let mut conn = PgConnection::connect(&db.url).await.expect("connect");
    let terminated = sqlx::query("select pg_terminate_backend(pg_backend_pid())")
        .execute(&mut conn)
        .await
        .expect_err("the server ends this connection");
    let code = terminated.as_database_error().and_then(|e| e.code());
    assert_eq!(code.as_deref(), Some("57P01"), "{terminated:?}");
    assert!(matches!(classified(terminated), AppError::Unavailable(_)));
    // Using the connection it ended: an I/O error.
    let broken = sqlx::query("select 1")
        .execute(&mut conn)
        .await
        .expect_err("dead");
    assert!(matches!(classified(broken), AppError::Unavailable(_)));

    // Whereas a bug stays a bug.
    let mut conn = PgConnection::connect(&db.url).await.expect("connect");
    let bug = sqlx::query("select * from no_such_table")
        .execute(&mut conn)
        .await
        .expect_err("no such table");
    assert!(matches!(classified(bug), AppError::Internal(_)));
}
