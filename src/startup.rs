//! Building and running the service: `Application::build` binds the listener, connects and
//! migrates the database and prepares the workers; `run_until_stopped` serves until shutdown,
//! then drains requests and stops workers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use poem::Server;
use tokio_util::sync::CancellationToken;

use projections::notifications::Notifications;
use projections::{maintenance, read_models};
use projections::{Runtime, RuntimeSettings};

use crate::app::audit::sealer::SealerSettings;
use crate::app::feed::{LiveLog, LiveSettings};
use crate::app::{App, AppError, CommandContext, FileStore};
use crate::config::{DatabaseSettings, ProjectionGroups, ServeSettings};
use crate::db::Database;
use crate::http;

/// The read models adapters wait for before answering a command (read-your-writes,
/// `App::read_after` and friends): applied in a group of their own.
const ANSWERING_READ_MODELS: [&str; 5] = ["orders", "catalog", "stock", "receipts", "accounts"];

/// The service, built and bound but not yet serving.
pub struct Application {
    acceptor: TcpAcceptor,
    port: u16,
    database: Database,
    app: Arc<App>,
    settings: ServeSettings,
    /// The process's one `LISTEN` connection: projections and read-your-writes share it.
    notifications: Notifications,
    /// Cancelled as shutdown begins: live feeds stop and their connections close.
    closing: CancellationToken,
    /// The notification worker's push channels.
    channels: crate::notify::Channels,
    /// The key the sealer signs audit checkpoints with.
    audit_key: ed25519_dalek::SigningKey,
}

impl Application {
    /// Connects (and migrates) the database and binds the HTTP listener.
    pub async fn build(
        database: &DatabaseSettings,
        settings: ServeSettings,
    ) -> anyhow::Result<Self> {
        // Settings are checked before anything is started (a private cluster, a listener).
        if let Some(secret) = &settings.jwt_secret {
            use secrecy::ExposeSecret;
            if secret.expose_secret().len() < 32 {
                anyhow::bail!("SHOPFRONT_JWT_SECRET must be at least 32 bytes");
            }
        }
        let channels = settings.notification_channels()?;
        let audit_key = settings.audit.signing_key()?;
        let database = Database::connect(database).await?;
        database.migrate().await?;
        // What a killed `projections rebuild|verify` left behind; not worth refusing to start.
        if let Err(err) = maintenance::drop_abandoned_scratch(&database.pool).await {
            tracing::warn!(error = %err, "cannot look for abandoned scratch schemas");
        }
        let acceptor = TcpListener::bind(settings.http_addr)
            .into_acceptor()
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.http_addr))?;
        let port = acceptor
            .local_addr()
            .first()
            .and_then(|addr| addr.as_socket_addr().map(|a| a.port()))
            .ok_or_else(|| anyhow::anyhow!("the listener has no TCP address"))?;
        let files = FileStore::local(&settings.storage_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot use {} for uploaded files: {e:?}",
                settings.storage_dir.display()
            )
        })?;
        let notifications = Notifications::start(database.pool.clone());
        let closing = CancellationToken::new();
        let live = LiveLog::start(
            database.pool.clone(),
            &notifications,
            closing.clone(),
            LiveSettings {
                buffer: usize::try_from(settings.live_buffer).unwrap_or(usize::MAX),
                recheck: Duration::from_secs(settings.live_recheck_seconds),
                // Pings keep a quiet connection from the idle timeout (a pong is traffic).
                ping: Duration::from_secs(settings.edge.idle_timeout_seconds)
                    .div_f64(2.0)
                    .clamp(Duration::from_millis(500), Duration::from_secs(20)),
                connections_per_account: usize::try_from(settings.live_connections_per_account)
                    .unwrap_or(usize::MAX),
            },
        )
        .await?;
        let mut app = App::with_auth(database.pool.clone(), settings.auth())
            .with_files(files)
            .with_notifications(&notifications)
            .with_live_log(live)
            .with_audit_public_key(crate::app::audit::signing::public_key_hex(&audit_key));
        app.max_receipt_bytes = settings.max_receipt_bytes;
        app.read_your_writes_wait =
            std::time::Duration::from_millis(settings.read_your_writes_wait_ms);
        let app = Arc::new(app);
        app.stock.repair_saved_states().await?;
        app.stores.repair_saved_states().await?;
        Ok(Self {
            acceptor,
            port,
            database,
            app,
            settings,
            notifications,
            closing,
            channels,
            audit_key,
        })
    }

    /// The port the HTTP server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The application services (for embedding and tests).
    pub fn app(&self) -> Arc<App> {
        self.app.clone()
    }

    /// Serves until `shutdown` completes, then drains in-flight requests (up to the grace
    /// period), stops the projection runtime and process managers, and closes the database.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let runtime_settings = RuntimeSettings {
            instance_name: instance_name(self.port),
            ..RuntimeSettings::default()
        };
        // The outbox is not a read model (it is not rebuilt or verified: rebuilding it would
        // notify everyone again), but it follows the log the same way.
        let mut projections = read_models::all();
        projections.push(Arc::new(projections::outbox::NotificationOutbox));
        // Each group applies a batch in one transaction (docs/adr/0011-grouped-projections.md).
        let groups = match self.settings.projection_groups {
            ProjectionGroups::Two => {
                let (answering, background): (Vec<_>, Vec<_>) = projections
                    .into_iter()
                    .partition(|p| ANSWERING_READ_MODELS.contains(&p.name()));
                vec![answering, background]
            }
            ProjectionGroups::One | ProjectionGroups::Each => vec![projections],
        };
        let grouped = RuntimeSettings {
            grouped: self.settings.projection_groups != ProjectionGroups::Each,
            ..runtime_settings.clone()
        };
        let mut workers = Vec::new();
        for group in groups {
            workers.extend(
                Runtime::new(self.database.pool.clone(), group, grouped.clone())
                    .with_notifications(self.notifications.clone())
                    .spawn(stop.clone()),
            );
        }
        workers.push(tokio::spawn(crate::app::audit::sealer::run(
            self.database.pool.clone(),
            self.notifications.clone(),
            SealerSettings {
                key: self.audit_key.clone(),
                checkpoint_events: i64::try_from(self.settings.audit.audit_checkpoint_events)
                    .unwrap_or(i64::MAX),
                checkpoint_interval: Duration::from_secs(
                    self.settings.audit.audit_checkpoint_seconds,
                ),
                poll_interval: runtime_settings.poll_interval,
            },
            runtime_settings.clone(),
            stop.clone(),
        )));
        let app = self.app.clone();
        workers.push(tokio::spawn(run_as_leader(
            "order-expiry",
            Duration::from_secs(self.settings.expiry_interval_seconds.max(1)),
            self.app.clone(),
            runtime_settings.clone(),
            stop.clone(),
            move |now| {
                let app = app.clone();
                async move {
                    let ctx = CommandContext::system("order-expiry");
                    app.expire_due_orders(&ctx, now, 500).await.map(|_| ())
                }
            },
        )));
        let app = self.app.clone();
        workers.push(tokio::spawn(run_as_leader(
            "daily-summaries",
            crate::app::DAILY_SUMMARY_INTERVAL,
            self.app.clone(),
            runtime_settings.clone(),
            stop.clone(),
            move |now| {
                let app = app.clone();
                async move { app.record_daily_summaries(now).await.map(|_| ()) }
            },
        )));
        // The delivery worker runs whatever channels there are: the notification center is
        // always filled, and a channel that is not configured marks its deliveries skipped.
        workers.push(tokio::spawn(crate::notify::run(
            self.app.clone(),
            self.channels.clone(),
            runtime_settings.clone(),
            stop.clone(),
        )));
        match self.settings.telegram() {
            Some(telegram) => {
                workers.push(tokio::spawn(crate::telegram::run(
                    self.app.clone(),
                    telegram,
                    runtime_settings.clone(),
                    stop.clone(),
                )));
            }
            None => tracing::info!(
                "no Telegram bot token (SHOPFRONT_TELEGRAM_BOT_TOKEN): the bot is off"
            ),
        }
        if self.settings.smtp_url.is_none() {
            tracing::info!("no SMTP server (SHOPFRONT_SMTP_URL): notification e-mails are off");
        }
        tracing::info!(port = self.port, database = %self.database.description, "serving");
        let routes = http::routes(self.app.clone(), &self.settings.edge);
        // A connection silent for the idle timeout is closed (slow or abandoned clients hold
        // no socket for long); a body's own timeouts are the HTTP edge's (`http::BodyRules`).
        // WebSocket connections are not requests the server drains: they are told to close
        // (1001) as soon as shutdown begins.
        let closing = self.closing.clone();
        let shutdown = async move {
            shutdown.await;
            closing.cancel();
        };
        let served = Server::new_with_acceptor(self.acceptor)
            .idle_timeout(Duration::from_secs(self.settings.edge.idle_timeout_seconds))
            .run_with_graceful_shutdown(
                routes,
                shutdown,
                Some(Duration::from_secs(self.settings.shutdown_grace_seconds)),
            )
            .await;
        self.closing.cancel();
        stop.cancel();
        for worker in workers {
            if let Err(err) = worker.await {
                tracing::error!(error = %err, "a background worker panicked");
            }
        }
        self.database.close().await;
        tracing::info!("stopped");
        served.map_err(Into::into)
    }
}

/// How this instance shows up as a leader (`projections status`, `pg_stat_activity`).
fn instance_name(port: u16) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("shopfront {host}:{port} pid {}", std::process::id())
}

/// Runs `work(now)` every `every` on one instance at a time, the holder of the advisory lock
/// `name` ([`projections::runtime::run_as_leader`], where it is tested).
async fn run_as_leader<F, Fut>(
    name: &'static str,
    every: Duration,
    app: Arc<App>,
    settings: RuntimeSettings,
    stop: CancellationToken,
    work: F,
) where
    F: Fn(chrono::DateTime<chrono::Utc>) -> Fut,
    Fut: Future<Output = Result<(), AppError>>,
{
    projections::runtime::run_as_leader(app.pool.clone(), name, every, settings, stop, work).await
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown requested");
}
