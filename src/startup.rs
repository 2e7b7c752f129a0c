//! Building and running the service: `Application::build` binds the listener, connects and
//! migrates the database and prepares the workers; `run_until_stopped` serves until shutdown,
//! then drains requests and stops workers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use poem::Server;
use tokio_util::sync::CancellationToken;

use crate::app::{App, CommandContext};
use crate::config::{DatabaseSettings, ServeSettings};
use crate::db::Database;
use crate::http;

/// The service, built and bound but not yet serving.
pub struct Application {
    acceptor: TcpAcceptor,
    port: u16,
    database: Database,
    app: Arc<App>,
    settings: ServeSettings,
}

impl Application {
    /// Connects (and migrates) the database and binds the HTTP listener.
    pub async fn build(
        database: &DatabaseSettings,
        settings: ServeSettings,
    ) -> anyhow::Result<Self> {
        let database = Database::connect(database).await?;
        database.migrate().await?;
        let acceptor = TcpListener::bind(settings.http_addr)
            .into_acceptor()
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.http_addr))?;
        let port = acceptor
            .local_addr()
            .first()
            .and_then(|addr| addr.as_socket_addr().map(|a| a.port()))
            .ok_or_else(|| anyhow::anyhow!("the listener has no TCP address"))?;
        let app = Arc::new(App::new(database.pool.clone()));
        Ok(Self {
            acceptor,
            port,
            database,
            app,
            settings,
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
    /// period), stops the workers, and closes the database.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let sweeper = tokio::spawn(sweep_reservations(
            self.app.clone(),
            self.settings.clone(),
            stop.clone(),
        ));
        tracing::info!(port = self.port, database = %self.database.description, "serving");
        let routes = http::routes(self.database.pool.clone());
        let served = Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(
                routes,
                shutdown,
                Some(Duration::from_secs(self.settings.shutdown_grace_seconds)),
            )
            .await;
        stop.cancel();
        if let Err(err) = sweeper.await {
            tracing::error!(error = %err, "the reservation sweeper panicked");
        }
        self.database.close().await;
        tracing::info!("stopped");
        served.map_err(Into::into)
    }
}

/// Settles leftover reservations periodically (the order↔stock saga's recovery).
async fn sweep_reservations(app: Arc<App>, settings: ServeSettings, stop: CancellationToken) {
    let mut interval = tokio::time::interval(Duration::from_secs(
        settings.reservation_sweep_seconds.max(1),
    ));
    let grace = chrono::Duration::seconds(settings.orphan_reservation_grace_seconds);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {
                let ctx = CommandContext::system("reservation-sweep");
                // The database's clock: the same one that stamped `recorded_at`, so clock
                // differences between instances cannot shorten the grace period.
                let now = sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>("select now()")
                    .fetch_one(&app.pool)
                    .await;
                let swept = match now {
                    Ok(now) => app.sweep_reservations(&ctx, now, grace).await,
                    Err(err) => Err(err.into()),
                };
                if let Err(err) = swept {
                    tracing::warn!(error = %err, "reservation sweep failed; will retry");
                }
            }
        }
    }
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
