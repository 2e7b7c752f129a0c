//! How the projection runtime fails, recovers and shares its connections: statement errors,
//! panics, the one listener per process, scratch schemas of killed rebuilds, and the leader loop
//! of the process managers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use projections::maintenance;
use projections::notifications::Notifications;
use projections::read_models::{self, Orders};
use projections::runtime::{run_as_leader, CheckpointWatch, CHECKPOINT_CHANNEL, LOCK_NAMESPACE};
use projections::{Envelope, LogPosition, Projection, ProjectionError, Runtime, RuntimeSettings};
use secrecy::SecretString;
use shopfront::app::App;
use shopfront::config::ServeSettings;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    customer, eventually, open_shop, spawn_app, spawn_app_on, wait_for_projections, TestDb,
};
use crate::read_side::{start_runtime, workload, Blocking};

/// What a [`Probe`] does besides recording the events it applies.
#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    /// A statement that fails with `bigint out of range` when applying the event at this
    /// global position (a data exception: the same on every attempt).
    OutOfRange(i64),
    /// Panics on its first this many batches.
    Panic(usize),
}

/// A test projection: one row per event it applies in `probe_seen`.
struct Probe {
    fault: Fault,
    batches: AtomicUsize,
    /// Times it tried to apply the event `Fault::OutOfRange` names.
    poison_attempts: AtomicUsize,
}

impl Probe {
    fn new(fault: Fault) -> Arc<Probe> {
        Arc::new(Probe {
            fault,
            batches: AtomicUsize::new(0),
            poison_attempts: AtomicUsize::new(0),
        })
    }

    /// Creates the probe's table (it is no read model of the service, so no migration has it).
    async fn create_table(pool: &PgPool) {
        sqlx::query(
            "create table probe_seen (global_position bigint primary key, event_type text not null)",
        )
        .execute(pool)
        .await
        .expect("probe table");
    }
}

#[async_trait]
impl Projection for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["probe_seen"]
    }

    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let batch = self.batches.fetch_add(1, Ordering::SeqCst);
        if let Fault::Panic(panics) = self.fault {
            if batch < panics {
                panic!("the probe panics on batch {batch}");
            }
        }
        for event in events {
            sqlx::query("insert into probe_seen values ($1, $2)")
                .bind(event.raw.global_position)
                .bind(&event.raw.event_type)
                .execute(&mut *conn)
                .await?;
            if let Fault::OutOfRange(poison) = self.fault {
                if event.raw.global_position == poison {
                    self.poison_attempts.fetch_add(1, Ordering::SeqCst);
                    sqlx::query("select $1::bigint * 2")
                        .bind(i64::MAX)
                        .execute(&mut *conn)
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// Log lines captured at ERROR for the duration of a test. `#[tokio::test]` runs every task on
/// the test's thread, so a thread-local subscriber sees the runtime's logs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn start() -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_max_level(tracing::Level::ERROR)
            .with_ansi(false)
            .finish();
        (
            captured.clone(),
            tracing::subscriber::set_default(subscriber),
        )
    }

    fn lines_with(&self, needles: &[&str]) -> usize {
        let text = String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned();
        text.lines()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .count()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn settings(instance_name: &str) -> RuntimeSettings {
    RuntimeSettings {
        standby_interval: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
        instance_name: instance_name.into(),
        ..RuntimeSettings::default()
    }
}

/// The status of projection `name` once `done` holds for it, woken by checkpoint
/// notifications (a runner announces its failure there too); fails the test after 20 s.
async fn await_status(
    pool: &PgPool,
    name: &str,
    done: impl Fn(&maintenance::ProjectionStatus) -> bool,
) -> maintenance::ProjectionStatus {
    let mut listener = PgListener::connect_with(pool).await.expect("listener");
    listener.listen(CHECKPOINT_CHANNEL).await.expect("listen");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = maintenance::status(pool, &[name])
            .await
            .expect("status")
            .remove(0);
        if done(&status) {
            return status;
        }
        tokio::time::timeout_at(deadline, listener.recv())
            .await
            .unwrap_or_else(|_| panic!("projection {name} never got there: {status:?}"))
            .expect("notification");
    }
}

/// Every event's position in log order.
async fn log_order(pool: &PgPool) -> Vec<(i64, i64, String)> {
    sqlx::query_as(
        "select transaction_id::text::bigint, global_position, event_type from events
          order by transaction_id, global_position",
    )
    .fetch_all(pool)
    .await
    .expect("events")
}

async fn head(pool: &PgPool) -> LogPosition {
    projections::log::last_committed(pool)
        .await
        .expect("head")
        .expect("events")
}

async fn caught_up(pool: &PgPool, names: &[&str]) -> bool {
    projections::runtime::wait_for_position(pool, names, head(pool).await, Duration::from_secs(20))
        .await
        .expect("wait")
}

#[tokio::test]
async fn a_statement_error_stops_the_projection_at_its_event_once_until_a_rebuild() {
    let (logs, _guard) = Captured::start();
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    Probe::create_table(&db.pool).await;
    workload(&app, 6).await;
    let events = log_order(&db.pool).await;
    // An event in the middle of the first batch (500 events): the batch fails as a whole.
    let (poison_tx, poison, poison_type) = events[events.len() / 2].clone();
    let before: Vec<i64> = events
        .iter()
        .filter(|(tx, gp, _)| (*tx, *gp) < (poison_tx, poison))
        .map(|(_, gp, _)| *gp)
        .collect();
    let (last_tx, last_before, _) = events[before.len() - 1].clone();

    let probe = Probe::new(Fault::OutOfRange(poison));
    let stop = CancellationToken::new();
    let tasks = Runtime::new(
        db.pool.clone(),
        vec![probe.clone(), Arc::new(Orders)],
        settings("statement-error"),
    )
    .spawn(stop.clone());

    let status = await_status(&db.pool, "probe", |s| s.status == "failed").await;
    assert_eq!(
        (
            status.failed_position,
            status.failed_event_type.as_deref(),
            status.position
        ),
        (
            Some(poison),
            Some(poison_type.as_str()),
            LogPosition {
                transaction_id: last_tx,
                global_position: last_before
            }
        ),
        "it stops right before the failing event"
    );
    let error = status.last_error.unwrap_or_default();
    assert!(error.contains("bigint out of range"), "{error}");
    assert!(
        error.contains(&format!("global position {poison}")),
        "{error}"
    );
    let seen: Vec<i64> = sqlx::query_scalar(
        "select p.global_position from probe_seen p join events e using (global_position)
          order by e.transaction_id, e.global_position",
    )
    .fetch_all(&db.pool)
    .await
    .expect("seen");
    assert_eq!(seen, before, "the events before it are applied, it is not");

    // The runtime carries on (another projection follows new events) while the failed one
    // waits: no retry loop, one ERROR.
    workload(&app, 2).await;
    assert!(caught_up(&db.pool, &["orders"]).await);
    assert_eq!(
        probe.poison_attempts.load(Ordering::SeqCst),
        3,
        "tried in the group's batch, in its own runner's batch, then alone, and not again"
    );
    assert_eq!(logs.lines_with(&["projection failed", "probe"]), 1);
    let status = &maintenance::status(&db.pool, &["probe"])
        .await
        .expect("status")[0];
    assert_eq!(
        (status.status.as_str(), status.failed_position),
        ("failed", Some(poison))
    );

    // Recovery: a rebuild with a build that applies the event replaces the tables; the
    // failed runner notices and follows the log from the rebuilt checkpoint.
    maintenance::rebuild(&db.pool, &*Probe::new(Fault::None), &|_, _| {})
        .await
        .expect("rebuild");
    workload(&app, 1).await;
    assert!(caught_up(&db.pool, &["probe"]).await);
    let status = &maintenance::status(&db.pool, &["probe"])
        .await
        .expect("status")[0];
    assert_eq!(
        (
            status.status.as_str(),
            status.failed_position,
            status.lag_events
        ),
        ("running", None, 0)
    );
    let (seen, events): (i64, i64) =
        sqlx::query_as("select (select count(*) from probe_seen), (select count(*) from events)")
            .fetch_one(&db.pool)
            .await
            .expect("counts");
    assert_eq!(seen, events);
    stop.cancel();
    for task in tasks {
        task.await.expect("runtime stops");
    }
}

#[tokio::test]
async fn a_failed_read_model_shows_in_status_and_readiness_until_it_is_rebuilt() {
    let app = spawn_app().await;
    let shop = open_shop(&app.app).await;
    let cheap = shop.product(&app.app, "CHEAP", 100_00, 10).await;
    let gold = shop
        .product(&app.app, "GOLD", aggregates::product::MAX_PRICE_MINOR, 10)
        .await;
    app.wait_for_projections().await;
    // A read-model constraint narrower than the events need (as a faulty migration could
    // leave it): the next large order fails with a check violation, every time. (Not a
    // narrowed column type: read models write with binary `COPY`, which refuses a value of
    // the wrong width for every row, not only for the large ones.)
    sqlx::query(
        "alter table orders add constraint orders_total_fits check (total_minor < 2147483648)",
    )
    .execute(&app.db.pool)
    .await
    .expect("narrow the column");
    let (_, ctx) = customer();
    shop.place(&app.app, &ctx, &[(cheap, 1)])
        .await
        .expect("placed");
    let large = shop
        .place(&app.app, &ctx, &[(gold, 1)])
        .await
        .expect("placed");
    let status = await_status(&app.db.pool, "orders", |s| s.status == "failed").await;
    let position: i64 = sqlx::query_scalar(
        "select global_position from events where aggregate_id = $1 and event_type = 'OrderPlaced'",
    )
    .bind(large.to_string())
    .fetch_one(&app.db.pool)
    .await
    .expect("position");
    assert_eq!(status.failed_position, Some(position));

    let ready: serde_json::Value = app
        .client
        .get(format!("{}/health/ready", app.address))
        .send()
        .await
        .expect("ready")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["failed_projections"][0]["name"], "orders", "{ready}");
    assert_eq!(ready["failed_projections"][0]["failed_position"], position);
    assert_eq!(
        ready["failed_projections"][0]["failed_event_type"],
        "OrderPlaced"
    );
    let detail = ready["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("projection orders stopped at global position")
            && detail.contains("orders_total_fits"),
        "{detail}"
    );

    let cli = crate::cli::shopfront(&["projections", "status"], &[("DATABASE_URL", &app.db.url)]);
    let table = String::from_utf8_lossy(&cli.stdout).into_owned();
    assert!(cli.status.success(), "{table}");
    let orders_lines: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.starts_with("orders "))
        .take(3)
        .collect();
    assert!(orders_lines[0].contains(" failed "), "{table}");
    assert!(
        orders_lines[1].contains(&format!(
            "stopped at: global position {position} (OrderPlaced)"
        )),
        "{table}"
    );
    assert!(orders_lines[2].contains("orders_total_fits"), "{table}");

    // The recovery docs/operations.md describes: fix the cause, rebuild.
    sqlx::query("alter table orders drop constraint orders_total_fits")
        .execute(&app.db.pool)
        .await
        .expect("drop the constraint");
    let rebuilt = crate::cli::shopfront(
        &["projections", "rebuild", "orders"],
        &[("DATABASE_URL", &app.db.url)],
    );
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    app.wait_for_projections().await;
    let total: i64 = sqlx::query_scalar("select total_minor from orders where order_id = $1")
        .bind(large.0)
        .fetch_one(&app.db.pool)
        .await
        .expect("the large order is in the read model");
    assert_eq!(total, aggregates::product::MAX_PRICE_MINOR);
    let ready: serde_json::Value = app
        .client
        .get(format!("{}/health/ready", app.address))
        .send()
        .await
        .expect("ready")
        .json()
        .await
        .expect("json");
    assert_eq!(ready, serde_json::json!({"status": "ok"}));
    app.stop().await;
}

#[tokio::test]
async fn a_panicking_projection_is_restarted_and_catches_up() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    Probe::create_table(&db.pool).await;
    workload(&app, 3).await;
    let probe = Probe::new(Fault::Panic(2));
    let stop = CancellationToken::new();
    let tasks = Runtime::new(
        db.pool.clone(),
        vec![probe.clone(), Arc::new(Orders)],
        settings("panicking"),
    )
    .spawn(stop.clone());

    assert!(
        caught_up(&db.pool, &["probe", "orders"]).await,
        "the probe recovers from its panics"
    );
    let status = &maintenance::status(&db.pool, &["probe"])
        .await
        .expect("status")[0];
    assert_eq!((status.restarts, status.status.as_str()), (2, "running"));
    assert_eq!(
        status.last_restart_reason.as_deref(),
        Some("panicked: the probe panics on batch 1")
    );
    let (seen, distinct, events): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from probe_seen), (select count(distinct global_position) from probe_seen),
                (select count(*) from events)",
    )
    .fetch_one(&db.pool)
    .await
    .expect("counts");
    assert_eq!((seen, distinct), (events, events), "every event once");
    stop.cancel();
    for task in tasks {
        task.await.expect("the runtime stops");
    }
}

/// Backends of `application_name` on this database whose last statement was a `LISTEN` (a
/// listener runs nothing after it).
async fn listeners(pool: &PgPool, application_name: &str) -> Vec<String> {
    sqlx::query_scalar(
        "select query from pg_stat_activity
          where datname = current_database() and application_name = $1 and query ilike 'listen %'",
    )
    .bind(application_name)
    .fetch_all(pool)
    .await
    .expect("pg_stat_activity")
}

#[tokio::test]
async fn the_service_listens_on_one_connection_for_every_projection_and_waiter() {
    let db = TestDb::new().await;
    let mut database = db.settings();
    database.database_url = Some(SecretString::from(format!(
        "{}?application_name=one-listener",
        db.url
    )));
    let app = spawn_app_on(db, &database, ServeSettings::for_tests()).await;
    let shop = open_shop(&app.app).await;
    let product = shop.product(&app.app, "LISTEN", 100, 5).await;
    app.wait_for_projections().await;
    // A read-your-writes wait, as a query for a resource created a moment ago does.
    assert!(app
        .app
        .await_projected("catalog", "Product", &product.to_string())
        .await
        .expect("waited"));

    let listening = listeners(&app.db.pool, "one-listener").await;
    assert_eq!(
        listening,
        vec![
            r#"LISTEN "shopfront_events";LISTEN "shopfront_checkpoints";LISTEN "shopfront_notifications";"#
                .to_owned()
        ],
        "one listener for {} projections, the checkpoint waiters and the live feeds",
        read_models::names().len()
    );
    app.stop().await;
}

#[tokio::test]
async fn the_shared_listener_listens_again_after_losing_its_connection_and_wakes_everybody() {
    let db = TestDb::new().await;
    let pool = PgPoolOptions::new()
        .max_connections(3)
        .connect_with(
            db.url
                .parse::<sqlx::postgres::PgConnectOptions>()
                .expect("url")
                .application_name("shared-listener"),
        )
        .await
        .expect("pool");
    let notifications = Notifications::start(pool.clone());
    let mut events = notifications.events();
    let mut checkpoints = notifications.checkpoints();
    // Listening: the first bump says so.
    for counter in [&mut events, &mut checkpoints] {
        tokio::time::timeout(Duration::from_secs(10), counter.changed())
            .await
            .expect("listening")
            .expect("sender");
        counter.borrow_and_update();
    }

    let killed: i64 = sqlx::query_scalar(
        "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity
          where datname = current_database() and application_name = 'shared-listener'
            and query ilike 'listen %') t",
    )
    .fetch_one(&db.pool)
    .await
    .expect("terminate");
    assert_eq!(killed, 1);
    // Notifications sent while nobody listened are lost: everybody is woken to look again.
    for counter in [&mut events, &mut checkpoints] {
        tokio::time::timeout(Duration::from_secs(10), counter.changed())
            .await
            .expect("woken after the reconnection")
            .expect("sender");
        counter.borrow_and_update();
    }
    // The terminated backend leaves pg_stat_activity on its own time: nothing announces it.
    let one = eventually(Duration::from_secs(10), || async {
        listeners(&db.pool, "shared-listener").await.len() == 1
    })
    .await;
    assert!(one, "exactly one listener again");
    sqlx::query("select pg_notify($1, 'x')")
        .bind(projections::NOTIFY_CHANNEL)
        .execute(&db.pool)
        .await
        .expect("notify");
    tokio::time::timeout(Duration::from_secs(10), events.changed())
        .await
        .expect("the new connection hears notifications")
        .expect("sender");

    // A waiter on the same listener is woken by a checkpoint.
    let watch = CheckpointWatch::new(pool.clone(), &notifications);
    let waiting = tokio::spawn(async move {
        watch
            .wait_for_position(
                &["manual"],
                LogPosition {
                    transaction_id: 0,
                    global_position: 1,
                },
                Duration::from_secs(10),
            )
            .await
    });
    sqlx::query("insert into projection_checkpoints (name, global_position) values ('manual', 1)")
        .execute(&db.pool)
        .await
        .expect("checkpoint");
    sqlx::query("select pg_notify($1, 'manual')")
        .bind(CHECKPOINT_CHANNEL)
        .execute(&db.pool)
        .await
        .expect("notify");
    assert!(waiting.await.expect("task").expect("wait"));
}

/// Scratch schemas of rebuilds and verifies.
async fn scratch_schemas(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "select nspname::text from pg_namespace where nspname ~ '^(rebuild|verify)_' order by 1",
    )
    .fetch_all(pool)
    .await
    .expect("schemas")
}

async fn orders_checksum(pool: &PgPool) -> (i64, String) {
    sqlx::query_as(
        "select count(*), coalesce(md5(string_agg(o::text, ',' order by order_id)), '') from orders o",
    )
    .fetch_one(pool)
    .await
    .expect("checksum")
}

#[tokio::test]
async fn the_scratch_schema_of_a_killed_rebuild_is_dropped_when_the_service_starts() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    workload(&app, 4).await;
    let (_pool, stop, tasks) = start_runtime(&db, "live", 500).await;
    wait_for_projections(&db.pool).await;
    stop.cancel();
    for task in tasks {
        task.await.expect("runtime stops");
    }
    let live = orders_checksum(&db.pool).await;
    assert!(live.0 > 0);

    // A rebuild of `orders`, killed while it replays into its scratch schema.
    let rebuild_pool = PgPoolOptions::new()
        .max_connections(3)
        .connect_with(
            db.url
                .parse::<sqlx::postgres::PgConnectOptions>()
                .expect("url")
                .application_name("killed-rebuild"),
        )
        .await
        .expect("pool");
    let (entered, mut inside) = tokio::sync::mpsc::unbounded_channel();
    let blocking = Blocking::new(Arc::new(Orders), 0, entered);
    let rebuild = tokio::spawn(async move {
        let _ = maintenance::rebuild(&rebuild_pool, &blocking, &|_, _| {}).await;
    });
    inside.recv().await.expect("the rebuild is replaying");
    rebuild.abort();
    let _ = rebuild.await;
    sqlx::query(
        "select pg_terminate_backend(pid) from pg_stat_activity
          where datname = current_database() and application_name = 'killed-rebuild'",
    )
    .execute(&db.pool)
    .await
    .expect("kill");
    let left = scratch_schemas(&db.pool).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with("rebuild_orders_"), "{left:?}");

    let application =
        shopfront::startup::Application::build(&db.settings(), ServeSettings::for_tests())
            .await
            .expect("the service starts");
    assert_eq!(scratch_schemas(&db.pool).await, Vec::<String>::new());
    assert_eq!(
        orders_checksum(&db.pool).await,
        live,
        "live tables untouched"
    );
    drop(application);
}

#[tokio::test]
async fn projections_clean_drops_abandoned_scratch_schemas_but_not_one_in_use() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    workload(&app, 2).await;
    let (_pool, stop, tasks) = start_runtime(&db, "live", 500).await;
    wait_for_projections(&db.pool).await;
    stop.cancel();
    for task in tasks {
        task.await.expect("runtime stops");
    }
    let live = orders_checksum(&db.pool).await;
    // Named and built as rebuild and verify name and build theirs.
    let abandoned = format!("verify_orders_{}", uuid::Uuid::now_v7().simple());
    let in_use = format!("rebuild_orders_{}", uuid::Uuid::now_v7().simple());
    for schema in [&abandoned, &in_use] {
        sqlx::query(&format!("create schema {schema}"))
            .execute(&db.pool)
            .await
            .expect("schema");
        sqlx::query(&format!(
            "create table {schema}.orders (like public.orders including all)"
        ))
        .execute(&db.pool)
        .await
        .expect("table");
    }
    // A running rebuild holds its schema's lock.
    let mut holder = db.pool.acquire().await.expect("connection");
    sqlx::query("select pg_advisory_lock($1, hashtext($2))")
        .bind(maintenance::SCRATCH_LOCK_NAMESPACE)
        .bind(&in_use)
        .execute(&mut *holder)
        .await
        .expect("lock");

    let env = [("DATABASE_URL", db.url.as_str())];
    let out = crate::cli::shopfront(&["projections", "clean"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\n", serde_json::json!({ "dropped": abandoned }))
    );
    assert_eq!(scratch_schemas(&db.pool).await, vec![in_use.clone()]);
    assert_eq!(
        orders_checksum(&db.pool).await,
        live,
        "live tables untouched"
    );

    // Once its rebuild is gone, the next command drops it too.
    sqlx::query("select pg_advisory_unlock_all()")
        .execute(&mut *holder)
        .await
        .expect("unlock");
    let out = crate::cli::shopfront(&["projections", "status"], &env);
    assert!(out.status.success());
    assert_eq!(scratch_schemas(&db.pool).await, Vec::<String>::new());
}

/// The next step a process-manager instance ran, within 10 s.
async fn next_run(runs: &mut tokio::sync::mpsc::UnboundedReceiver<&'static str>) -> &'static str {
    tokio::time::timeout(Duration::from_secs(10), runs.recv())
        .await
        .expect("a step runs")
        .expect("runs channel")
}

#[tokio::test]
async fn a_standby_process_manager_takes_over_when_the_leaders_connection_is_killed() {
    let db = TestDb::new().await;
    let (runs_tx, mut runs) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let every = Duration::from_secs(1);
    // A checks its lock only at its steps (a second apart), B looks for the lock every 50 ms:
    // once A's connection is killed, B takes over before A could compete again, however busy
    // the machine.
    let start = |instance: &'static str, standby_interval: Duration| {
        let runs = runs_tx.clone();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_as_leader(
            db.pool.clone(),
            "test-manager",
            every,
            RuntimeSettings {
                standby_interval,
                instance_name: instance.into(),
                ..RuntimeSettings::default()
            },
            stop.clone(),
            move |_now| {
                let runs = runs.clone();
                async move { runs.send(instance).map_err(|e| e.to_string()) }
            },
        ));
        (stop, task)
    };
    let (stop_a, task_a) = start("manager-a", Duration::from_secs(10));
    assert_eq!(next_run(&mut runs).await, "manager-a");
    let (stop_b, task_b) = start("manager-b", Duration::from_millis(50));
    // B stands by: the next step is A's again, a second later.
    assert_eq!(next_run(&mut runs).await, "manager-a");

    // Right after A's step, kill the connection that holds the lock.
    let holders: Vec<(i32, String)> = sqlx::query_as(
        "select a.pid, a.application_name from pg_locks l join pg_stat_activity a on a.pid = l.pid
          where l.locktype = 'advisory' and l.granted and l.objsubid = 2
            and l.database = (select oid from pg_database where datname = current_database())
            and l.classid::bigint = $1 and l.objid::bigint = (hashtext('test-manager')::bigint & 4294967295)",
    )
    .bind(i64::from(LOCK_NAMESPACE))
    .fetch_all(&db.pool)
    .await
    .expect("the lock holder");
    assert_eq!(
        holders.iter().map(|h| h.1.as_str()).collect::<Vec<_>>(),
        vec!["manager-a"]
    );
    sqlx::query("select pg_terminate_backend($1)")
        .bind(holders[0].0)
        .execute(&db.pool)
        .await
        .expect("terminate the leader");
    let killed_at = tokio::time::Instant::now();

    // B takes over within its standby interval (A would notice only at its next tick, 1 s on).
    assert_eq!(next_run(&mut runs).await, "manager-b");
    assert!(
        killed_at.elapsed() < every,
        "took over in {:?}",
        killed_at.elapsed()
    );
    // A found its leadership gone and stands by: B alone runs the step from now on.
    for _ in 0..2 {
        assert_eq!(next_run(&mut runs).await, "manager-b");
    }
    for (stop, task) in [(stop_a, task_a), (stop_b, task_b)] {
        stop.cancel();
        task.await.expect("the loop stops");
    }
}
