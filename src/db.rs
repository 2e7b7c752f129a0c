//! Connecting to Postgres, with a default that works on a developer's machine.
//!
//! Resolution order when `DATABASE_URL` is not set:
//! 1. the local server at `--local-database-url` (default `postgres://postgres@127.0.0.1:5432/shopfront`),
//!    creating the database if it is missing;
//! 2. if nothing answers there and PostgreSQL server binaries are installed (`initdb`, `pg_ctl`),
//!    a private cluster in `<data dir>/pg` on a free port, started (and later stopped) by us;
//! 3. otherwise a clear error saying what to install or set.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use crate::config::DatabaseSettings;

/// Embedded migrations: the event store, the global log and every table we own.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A connected database, and the private cluster behind it when we started one.
pub struct Database {
    pub pool: PgPool,
    /// Where the pool points, without credentials (for logs and CLI output).
    pub description: String,
    cluster: Option<LocalCluster>,
}

impl Database {
    /// Connects as configured (see the module docs), creating the database if needed.
    pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Database> {
        if let Some(url) = &settings.database_url {
            let options = parse_url(url.expose_secret())
                .context("DATABASE_URL is not a valid postgres:// URL")?;
            ensure_database_exists(&options).await?;
            return Self::open(settings, options, None).await;
        }
        let options = parse_url(&settings.local_database_url)
            .context("--local-database-url is not a valid postgres:// URL")?;
        match ensure_database_exists(&options).await {
            Ok(()) => Self::open(settings, options, None).await,
            Err(err) if is_unreachable(&err) => {
                tracing::info!(
                    url = %describe(&options),
                    "no PostgreSQL server answers; starting a private cluster"
                );
                let cluster =
                    LocalCluster::start(&settings.data_dir, settings.pg_bin_dir.as_deref())?;
                let options = options
                    .host("127.0.0.1")
                    .port(cluster.port)
                    .username("postgres");
                ensure_database_exists(&options).await?;
                Self::open(settings, options, Some(cluster)).await
            }
            Err(err) => Err(err),
        }
    }

    async fn open(
        settings: &DatabaseSettings,
        options: PgConnectOptions,
        cluster: Option<LocalCluster>,
    ) -> anyhow::Result<Database> {
        let description = describe(&options);
        // Every pooled query waits at most this long for a connection, so while the database
        // is down a request fails (503) in bounded time; sqlx keeps retrying a refused connect
        // within that window, and discards dead connections on their next use (it pings them
        // first), so the pool recovers by itself once the server is back.
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_secs(settings.acquire_timeout_seconds))
            .connect_with(options.log_statements(tracing::log::LevelFilter::Trace))
            .await
            .with_context(|| format!("cannot connect to {description}"))?;
        Ok(Database {
            pool,
            description,
            cluster,
        })
    }

    /// Applies pending migrations (idempotent; concurrent runs are serialised by sqlx's lock).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .context("running database migrations")
    }

    /// Whether we started a private cluster for this process.
    pub fn started_private_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// Closes the pool, then stops the private cluster if this process started it (dropping a
    /// `Database` without closing it stops the cluster too, on every exit path).
    pub async fn close(self) {
        self.pool.close().await;
        drop(self.cluster);
    }
}

/// Parses a `postgres://` or `postgresql://` URL (sqlx alone accepts other schemes).
fn parse_url(url: &str) -> anyhow::Result<PgConnectOptions> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!("the URL must start with postgres:// or postgresql://");
    }
    Ok(url.parse()?)
}

/// `postgres://user@host:port/db`, never with the password.
fn describe(options: &PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("postgres")
    )
}

/// True when the error means no server is listening (as opposed to a refused login, say).
fn is_unreachable(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<sqlx::Error>(),
            Some(sqlx::Error::Io(_)) | Some(sqlx::Error::PoolTimedOut)
        )
    })
}

/// Makes sure the target database exists: connects to it, and only if the server says it does
/// not exist, creates it through the server's `postgres` database (a user who may connect to
/// their own database but not to `postgres` is fine as long as the database exists).
pub async fn ensure_database_exists(options: &PgConnectOptions) -> anyhow::Result<()> {
    let database = options.get_database().unwrap_or("postgres").to_owned();
    match connect_within(options, Duration::from_secs(5)).await {
        Ok(conn) => {
            conn.close().await.ok();
            return Ok(());
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot reach PostgreSQL at {}", describe(options)))
        }
    }
    let maintenance = options.clone().database("postgres");
    let mut conn = connect_within(&maintenance, Duration::from_secs(5))
        .await
        .with_context(|| {
            format!(
                "cannot reach PostgreSQL at {} to create {database}",
                describe(&maintenance)
            )
        })?;
    let statement = format!("create database {}", quote_ident(&database));
    match sqlx::query(&statement).execute(&mut conn).await {
        Ok(_) => tracing::info!(%database, "created database"),
        // Another process created it between our connect and our create.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
        Err(e) => return Err(e).with_context(|| format!("creating database {database}")),
    }
    conn.close().await.ok();
    Ok(())
}

async fn connect_within(
    options: &PgConnectOptions,
    limit: Duration,
) -> Result<PgConnection, sqlx::Error> {
    tokio::time::timeout(limit, PgConnection::connect_with(options))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)?
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A PostgreSQL cluster of our own, in a data directory, run with the system's server binaries.
///
/// Stopped when dropped (`pg_ctl -m fast stop`), but only if this process started it: a second
/// command that finds it running (a `seed-demo` beside a `serve`) leaves it to the first.
/// Public so tests can run the service against a server they stop and start themselves.
pub struct LocalCluster {
    pg_ctl: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres_user: bool,
    started_here: bool,
}

impl LocalCluster {
    /// Starts the cluster in `<data_dir>/pg`, creating it first (`initdb`, a free port kept in
    /// `<data_dir>/pg.port`) if there is none; one that is already running is used as it is.
    /// Starting it again after it was dropped reuses its data and its port.
    pub fn start(data_dir: &Path, bin_dir: Option<&Path>) -> anyhow::Result<LocalCluster> {
        let bin = find_server_binaries(bin_dir).ok_or_else(|| {
            anyhow::anyhow!(
                "no PostgreSQL server answered at the local address and no PostgreSQL server \
                 binaries (initdb, pg_ctl) were found.\n\
                 Either install PostgreSQL (Debian/Ubuntu: `apt-get install postgresql`; \
                 macOS: `brew install postgresql`) and run this command again, \
                 or point DATABASE_URL at a running server."
            )
        })?;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data directory {}", data_dir.display()))?;
        let data_dir = data_dir.canonicalize()?;
        let dir = data_dir.join("pg");
        let as_postgres_user = running_as_root();
        let mut cluster = LocalCluster {
            pg_ctl: bin.join("pg_ctl"),
            dir: dir.clone(),
            port: 0,
            as_postgres_user,
            started_here: false,
        };
        let port_file = data_dir.join("pg.port");
        if !dir.join("PG_VERSION").exists() {
            cluster.init(&bin.join("initdb"), &data_dir)?;
            let port = free_port()?;
            std::fs::write(dir.join("postgresql.auto.conf"), cluster.config(port))?;
            std::fs::write(&port_file, port.to_string())?;
        }
        let port: u16 = std::fs::read_to_string(&port_file)
            .with_context(|| format!("reading {}", port_file.display()))?
            .trim()
            .parse()
            .with_context(|| format!("{} does not hold a port number", port_file.display()))?;
        cluster.port = port;
        if !cluster.is_running() {
            let log = data_dir.join("pg.log");
            let status = cluster
                .command(&cluster.pg_ctl)
                .arg("-D")
                .arg(&dir)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "start"])
                .status()
                .context("running pg_ctl start")?;
            if !status.success() {
                bail!(
                    "the private PostgreSQL cluster in {} did not start; see {}",
                    dir.display(),
                    log.display()
                );
            }
            cluster.started_here = true;
        }
        tracing::info!(dir = %dir.display(), port, "private PostgreSQL cluster running");
        Ok(cluster)
    }

    /// The port the cluster listens on, at 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn init(&self, initdb: &Path, data_dir: &Path) -> anyhow::Result<()> {
        if self.as_postgres_user {
            // initdb refuses to run as root: the cluster belongs to the `postgres` user, who
            // must be able to reach the data directory.
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(data_dir)
                .status()
                .context("running chown for the private cluster")?;
            if !status.success() {
                bail!("cannot give {} to the postgres user", data_dir.display());
            }
            set_traversable(data_dir)?;
        }
        let output = self
            .command(initdb)
            .arg("-D")
            .arg(&self.dir)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .context("running initdb")?;
        if !output.status.success() {
            bail!(
                "initdb failed for {}: {}",
                self.dir.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    fn config(&self, port: u16) -> String {
        format!(
            "# written by shopfront for its private cluster\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{}'\n\
             max_connections = 100\n",
            self.dir.display()
        )
    }

    fn is_running(&self) -> bool {
        self.command(&self.pg_ctl)
            .arg("-D")
            .arg(&self.dir)
            .arg("status")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    fn stop(&mut self) {
        if !std::mem::take(&mut self.started_here) {
            return;
        }
        let result = self
            .command(&self.pg_ctl)
            .arg("-D")
            .arg(&self.dir)
            .args(["-m", "fast", "-w", "stop"])
            .output();
        match result {
            Ok(o) if o.status.success() => tracing::info!("private PostgreSQL cluster stopped"),
            other => tracing::warn!(?other, "stopping the private PostgreSQL cluster failed"),
        }
    }

    /// A command for a server binary, run as `postgres` when we are root.
    fn command(&self, program: &Path) -> Command {
        if self.as_postgres_user {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The directory holding `initdb` and `pg_ctl`: the one given, else `PATH`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian/Ubuntu) or `/usr/local/opt/postgresql*/bin` (Homebrew).
fn find_server_binaries(given: Option<&Path>) -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = given {
        return has_both(dir).then(|| dir.to_path_buf());
    }
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(dir) = std::env::split_paths(&path).find(|d| has_both(d)) {
            return Some(dir);
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = ["/usr/lib/postgresql", "/usr/local/opt"]
        .iter()
        .filter_map(|root| std::fs::read_dir(root).ok())
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version: u32 = name
                .trim_start_matches("postgresql@")
                .trim_start_matches("postgresql")
                .parse()
                .unwrap_or(0);
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, dir)| dir)
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn set_traversable(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut permissions = std::fs::metadata(dir)?.permissions();
    permissions.set_mode(permissions.mode() | 0o711);
    std::fs::set_permissions(dir, permissions)?;
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}
