//! Typed settings, parsed once from flags and the environment (every flag has an `env =`, so
//! the two always agree). Secrets are `SecretString`s and never reach a log line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

/// shopfront: an event-sourced, Telegram-first multi-store commerce backend.
#[derive(Debug, Parser)]
#[command(name = "shopfront", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub database: DatabaseSettings,

    #[command(flatten)]
    pub telemetry: TelemetrySettings,

    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up and matched once: the size of `Serve`'s settings costs nothing, and
// boxing them would only add noise where they are used.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (and the background workers) until SIGTERM or Ctrl-C.
    Serve(ServeSettings),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Create a demo store with products, stock and a few orders, so there is data to look at,
    /// and an owner login to look at it with (printed once, with its generated password).
    SeedDemo {
        /// The demo store's owner: an existing staff account's login e-mail, or a new account
        /// (its password is generated and printed). Default `owner@demo.shopfront.dev`. On an
        /// existing demo store, makes this account an owner too.
        #[arg(long, env = "SHOPFRONT_DEMO_OWNER_EMAIL")]
        owner_email: Option<String>,
    },
    /// Print the role/permission matrix as Markdown (it is checked in as docs/rbac.md).
    Rbac,
    /// Print the catalog of problem types the API answers with (checked in as docs/problems.md).
    Problems,
    /// Print the OpenAPI document the service serves (it is checked in under openapi/).
    Openapi,
    /// Staff accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Look after the read models: status, rebuild, verify.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Personal data: erase a person's.
    #[command(subcommand)]
    PersonalData(PersonalDataCommand),
    /// What auditors ask of the log (docs/auditing.md). These read the database only: they run
    /// no migrations and work with a read-only database role.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Benchmarks that print their figures as JSON lines.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Create a staff account that logs in with e-mail and password. The password is read from
    /// standard input (never a flag: flags show up in process lists and shell history).
    Create {
        #[arg(long)]
        email: String,
        /// Read the password from the first line of standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
        /// May create stores and name their owners.
        #[arg(long)]
        platform_admin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Write a slice of the log as NDJSON (one event per line, in log order; the line format of
    /// `GET /api/v1/audit/export`) to standard output or --output: the events after --after up
    /// to the log's head when the export starts, filtered. Personal data stays sealed.
    Export(AuditExportArgs),
    /// Print the events after global position --from as NDJSON lines as they commit, until
    /// Ctrl-C or SIGTERM. Restarted with --from the last `position` printed, it goes on with no
    /// gap and no duplicate.
    Tail(AuditTailArgs),
    /// Recompute the hash chain from the events and check every signed checkpoint. Prints a
    /// JSON report; exits 1 at the first modified, deleted, inserted or reordered event.
    Verify {
        /// Start from a checkpoint kept outside the database: a file of checkpoints as
        /// `audit checkpoints` writes them (one JSON object per line). The last one is where
        /// recomputation starts (the chain must still hold it); every one is checked.
        #[arg(long)]
        from_checkpoint: Option<PathBuf>,
        /// A public key (64 hex digits, from `/api/v1/audit/public-key`) checkpoints may be
        /// signed with; repeat for several. Without one, any key whose signature verifies is
        /// accepted, and the report says the keys were not pinned.
        #[arg(long = "trusted-key")]
        trusted_keys: Vec<String>,
    },
    /// Print the signed checkpoints as JSON lines, oldest first. Keep them outside the
    /// database: they are what `verify --from-checkpoint` starts from.
    Checkpoints {
        /// Only checkpoints after this chain index.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PersonalDataCommand {
    /// Erase a person's personal data (as `DELETE /api/v1/users/{id}/personal-data` does):
    /// their key, login e-mail, sessions, Telegram identity, request origins and receipt files.
    /// Prints what was removed as one JSON line. Running it again is harmless.
    Erase {
        /// The person's account id.
        #[arg(long)]
        subject: uuid::Uuid,
        /// Directory uploaded files are kept in (the same as `serve --storage-dir`).
        #[arg(long, env = "SHOPFRONT_STORAGE_DIR", default_value = "data/files")]
        storage_dir: PathBuf,
    },
}

#[derive(Debug, Clone, Args)]
pub struct AuditExportArgs {
    /// Events recorded at or after this time (RFC 3339, e.g. 2026-11-01T00:00:00Z).
    #[arg(long, env = "SHOPFRONT_AUDIT_SINCE", value_parser = parse_rfc3339)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Events recorded before this time (RFC 3339).
    #[arg(long, env = "SHOPFRONT_AUDIT_UNTIL", value_parser = parse_rfc3339)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// One store's events (its own and its orders', products', stock's, receipts').
    #[arg(long, env = "SHOPFRONT_AUDIT_STORE")]
    pub store: Option<uuid::Uuid>,
    /// One aggregate type's events: Order, PaymentReceipt, Stock, Product, Store, Account.
    #[arg(long, env = "SHOPFRONT_AUDIT_AGGREGATE_TYPE")]
    pub aggregate_type: Option<String>,
    /// Events of commands this account issued.
    #[arg(long, env = "SHOPFRONT_AUDIT_ACTOR")]
    pub actor: Option<uuid::Uuid>,
    /// Events after this global position (the last `position` of an earlier export, to go on
    /// from there; 0: from the beginning).
    #[arg(long, env = "SHOPFRONT_AUDIT_AFTER", value_parser = clap::value_parser!(i64).range(0..))]
    pub after: Option<i64>,
    /// Write to this file (created or truncated) instead of standard output; a progress bar
    /// shows on standard error when it is a terminal.
    #[arg(long, env = "SHOPFRONT_AUDIT_OUTPUT")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct AuditTailArgs {
    /// Print the events after this global position (the last `position` printed before, to
    /// resume; 0: from the beginning).
    #[arg(long, env = "SHOPFRONT_AUDIT_FROM", value_parser = clap::value_parser!(i64).range(0..))]
    pub from: i64,
    /// One store's events only.
    #[arg(long, env = "SHOPFRONT_AUDIT_STORE")]
    pub store: Option<uuid::Uuid>,
}

/// A time as RFC 3339 (`2026-11-01T00:00:00Z`, `2026-11-01T03:00:00+03:00`), in UTC.
fn parse_rfc3339(value: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|at| at.with_timezone(&chrono::Utc))
        .map_err(|err| format!("`{value}` is not an RFC 3339 time (2026-11-01T00:00:00Z): {err}"))
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Position, lag (events and seconds), state and leader of each projection.
    Status {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Replay the log from zero into fresh tables and swap them in; queries keep working
    /// meanwhile. Without names, every projection.
    Rebuild { names: Vec<String> },
    /// Replay into a scratch schema and compare with the live tables by checksum; exits 1 and
    /// names the projections that differ. Without names, every projection.
    Verify { names: Vec<String> },
    /// Drop the scratch schemas that killed rebuilds and verifies left behind (every
    /// `projections` command and `serve` also do it when they start); prints one JSON line
    /// per schema dropped. Scratch schemas of a rebuild or verify still running are kept.
    Clean,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Drive concurrent place-order commands in-process and report commands/s, events/s and
    /// latency; with --pgbench, run pgbench's read-one-aggregate-and-append-one-event transaction
    /// on the same server in the same run as the baseline.
    PlaceOrders(PlaceOrdersBench),
    /// Write a realistic history of --events events into a scratch database, then time reading
    /// the log with COPY (the baseline), a rebuild of every projection, and the analytics
    /// queries.
    Rebuild(RebuildBench),
    /// Load a hot product's Stock with --events events: from its saved state (what commands
    /// do) and, as the baseline, by replaying every event.
    StockLoad(StockLoadBench),
    /// Every order for one product (one unit each) from --concurrency callers in-process:
    /// orders/s, latency, placed vs refused, and an oversell check on the event store; with
    /// --pgbench, pgbench's rate on the same server in the same run as the baseline.
    HotProduct(HotProductBench),
    /// Place orders over HTTP against `shopfront serve` in a child process (projections,
    /// process managers and read-your-writes live, as it runs in production), at each of
    /// --connections keep-alive connections in turn: orders/s, latency, every projection's lag
    /// and the service's memory; then with two instances on one database; with --pgbench,
    /// pgbench's append transaction on the same server in the same run; with --plot, the
    /// scaling curve as SVG.
    Http(HttpBench),
    /// The live feeds against `shopfront serve` in a child process: the service's memory with
    /// --subscribers idle WebSocket subscribers, then commit → receive latency at --rate
    /// commands/s; with --pgbench, pgbench's rate on the same server too.
    Ws(WsBench),
    /// The audit chain on a generated history of --events events: the COPY read of the log
    /// (the baseline), hashing in memory, sealing from scratch and `audit verify`; then the
    /// sealing lag with `serve` running while events commit at --rate per second.
    Audit(AuditBench),
    /// Write a realistic history of --events events into a scratch database, then time, in
    /// the same run, reading the log with COPY (the floor) and the audit export (the code
    /// `audit export` and `GET /api/v1/audit/export` run) into a sink, and their ratio.
    AuditExport(AuditExportBench),
}

#[derive(Debug, Clone, Args)]
pub struct AuditBench {
    /// Events in the generated history sealed and verified.
    #[arg(long, env = "SHOPFRONT_BENCH_EVENTS", default_value_t = 1_000_000)]
    pub events: u64,
    /// Events committed per second while the sealing lag is measured (0: skip it).
    #[arg(long, env = "SHOPFRONT_BENCH_RATE", default_value_t = 2_000)]
    pub rate: u64,
    /// Seconds the lag is measured for.
    #[arg(long, env = "SHOPFRONT_BENCH_SECONDS", default_value_t = 20)]
    pub seconds: u64,
}

#[derive(Debug, Clone, Args)]
pub struct AuditExportBench {
    /// Events in the generated history.
    #[arg(long, env = "SHOPFRONT_BENCH_EVENTS", default_value_t = 1_000_000)]
    pub events: u64,
    /// Keep the scratch database the benchmark creates (it is dropped by default).
    #[arg(long, env = "SHOPFRONT_BENCH_KEEP")]
    pub keep: bool,
}

#[derive(Debug, Clone, Args)]
pub struct HttpBench {
    /// Keep-alive connections placing orders at once, one step each (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 4, 16, 32, 64, 256])]
    pub connections: Vec<usize>,
    /// Seconds each step is measured for (after its warm-up).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Seconds each step runs before it is measured.
    #[arg(long, default_value_t = 2)]
    pub warmup_seconds: u64,
    /// Products the orders spread over (1 to 3 lines each).
    #[arg(long, default_value_t = 200)]
    pub products: usize,
    /// Every order is for one product, one line (the hot-product case).
    #[arg(long)]
    pub hot: bool,
    /// Connection counts to measure again with two `serve` instances on the same database,
    /// the connections split between them (comma-separated; the flag alone: skip).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_values_t = [64usize])]
    pub two_instances: Vec<usize>,
    /// After the steps, keep placing orders (at 32 connections) until this many were placed in
    /// all, then report the service's resident memory (0: skip).
    #[arg(long, default_value_t = 100_000)]
    pub memory_orders: u64,
    /// Also run pgbench's read-one-aggregate-append-one-event transaction for the baseline.
    #[arg(long)]
    pub pgbench: bool,
    /// Seconds pgbench runs for.
    #[arg(long, default_value_t = 15)]
    pub pgbench_seconds: u32,
    /// pgbench clients.
    #[arg(long, default_value_t = 32)]
    pub pgbench_clients: usize,
    /// Write the scaling curve (orders/s and p99 against connections) to this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Keep the scratch database the benchmark creates (it is dropped by default).
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Clone, Args)]
pub struct WsBench {
    /// Idle WebSocket connections, each following a quiet store's orders.
    #[arg(long, env = "SHOPFRONT_BENCH_SUBSCRIBERS", default_value_t = 10_000)]
    pub subscribers: usize,
    /// Connections following the busy store's events, timing each delivery.
    #[arg(long, env = "SHOPFRONT_BENCH_WATCHERS", default_value_t = 10)]
    pub watchers: usize,
    /// Commands committed per second while the watchers time them.
    #[arg(long, env = "SHOPFRONT_BENCH_RATE", default_value_t = 500)]
    pub rate: u32,
    /// Seconds the commands are committed for.
    #[arg(long, env = "SHOPFRONT_BENCH_SECONDS", default_value_t = 20)]
    pub seconds: u32,
    /// Also run pgbench (after the service stopped) for the baseline.
    #[arg(long, env = "SHOPFRONT_BENCH_PGBENCH")]
    pub pgbench: bool,
    /// Seconds pgbench runs for.
    #[arg(long, env = "SHOPFRONT_BENCH_PGBENCH_SECONDS", default_value_t = 10)]
    pub pgbench_seconds: u32,
    /// Keep the scratch database the benchmark creates (it is dropped by default).
    #[arg(long, env = "SHOPFRONT_BENCH_KEEP")]
    pub keep: bool,
}

#[derive(Debug, Clone, Args)]
pub struct HotProductBench {
    /// Orders to place, one unit of the hot product each.
    #[arg(long, env = "SHOPFRONT_BENCH_ORDERS", default_value_t = 10_000)]
    pub orders: usize,
    /// Orders in flight at once (and pgbench clients).
    #[arg(long, env = "SHOPFRONT_BENCH_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,
    /// Units the product starts with (default: as many as orders, so none is refused for
    /// stock); fewer makes the rest "out of stock".
    #[arg(long, env = "SHOPFRONT_BENCH_STOCK")]
    pub stock: Option<usize>,
    /// Also run pgbench (must be on PATH or under /usr/lib/postgresql/*/bin) for the baseline.
    #[arg(long, env = "SHOPFRONT_BENCH_PGBENCH")]
    pub pgbench: bool,
    /// Seconds pgbench runs for.
    #[arg(long, env = "SHOPFRONT_BENCH_PGBENCH_SECONDS", default_value_t = 10)]
    pub pgbench_seconds: u32,
    /// Keep the scratch database the benchmark creates (it is dropped by default).
    #[arg(long, env = "SHOPFRONT_BENCH_KEEP")]
    pub keep: bool,
}

#[derive(Debug, Clone, Args)]
pub struct StockLoadBench {
    /// Events in the product's history.
    #[arg(long, env = "SHOPFRONT_BENCH_EVENTS", default_value_t = 100_000)]
    pub events: u64,
    /// Keep the scratch database the benchmark creates (it is dropped by default).
    #[arg(long, env = "SHOPFRONT_BENCH_KEEP")]
    pub keep: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RebuildBench {
    /// Events in the generated history.
    #[arg(long, env = "SHOPFRONT_BENCH_EVENTS", default_value_t = 1_000_000)]
    pub events: u64,
    /// Keep the scratch database the benchmark creates (it is dropped by default).
    #[arg(long, env = "SHOPFRONT_BENCH_KEEP")]
    pub keep: bool,
    /// Also time the live projection runtime catching up the whole history as a backlog
    /// (every read model emptied, then run as `serve` runs them until each reaches the head).
    #[arg(long, env = "SHOPFRONT_BENCH_CATCH_UP")]
    pub catch_up: bool,
    /// Events per transaction of the runtime in the catch-up (`serve` runs 500).
    #[arg(long, env = "SHOPFRONT_BENCH_CATCH_UP_BATCH", default_value_t = 500)]
    pub catch_up_batch: i64,
    /// After the catch-up, empty the read models again and time `shopfront serve` (a child
    /// process, as it runs in production) catching up the whole log; then its resident memory.
    #[arg(long, env = "SHOPFRONT_BENCH_CATCH_UP_SERVE")]
    pub catch_up_serve: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PlaceOrdersBench {
    /// Orders to place.
    #[arg(long, env = "SHOPFRONT_BENCH_ORDERS", default_value_t = 5_000)]
    pub orders: usize,
    /// Commands in flight at once (and pgbench clients).
    #[arg(long, env = "SHOPFRONT_BENCH_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Products the orders spread over (fewer means more contention per Stock aggregate).
    #[arg(long, env = "SHOPFRONT_BENCH_PRODUCTS", default_value_t = 200)]
    pub products: usize,
    /// Also run pgbench (must be on PATH or under /usr/lib/postgresql/*/bin) for the baseline.
    #[arg(long, env = "SHOPFRONT_BENCH_PGBENCH")]
    pub pgbench: bool,
    /// Seconds pgbench runs for.
    #[arg(long, env = "SHOPFRONT_BENCH_PGBENCH_SECONDS", default_value_t = 10)]
    pub pgbench_seconds: u32,
    /// Keep the scratch database the benchmark creates (it is dropped by default).
    #[arg(long, env = "SHOPFRONT_BENCH_KEEP")]
    pub keep: bool,
}

/// Where the data lives.
#[derive(Debug, Clone, Args)]
pub struct DatabaseSettings {
    /// Postgres URL. When unset, the local server is used, or a private cluster is started.
    #[arg(long, env = "DATABASE_URL", global = true, value_parser = parse_secret, hide_env_values = true)]
    pub database_url: Option<SecretString>,

    /// The local server tried when DATABASE_URL is unset (the database is created if missing).
    #[arg(
        long,
        env = "SHOPFRONT_LOCAL_DATABASE_URL",
        global = true,
        default_value = "postgres://postgres@127.0.0.1:5432/shopfront"
    )]
    pub local_database_url: String,

    /// Directory for local state: the private Postgres cluster (`pg/`) when one is needed.
    #[arg(
        long,
        env = "SHOPFRONT_DATA_DIR",
        global = true,
        default_value = ".shopfront"
    )]
    pub data_dir: PathBuf,

    /// Directory holding initdb and pg_ctl, if they are not found on their own.
    #[arg(long, env = "SHOPFRONT_PG_BIN_DIR", global = true)]
    pub pg_bin_dir: Option<PathBuf>,

    /// Connections in the pool.
    #[arg(
        long,
        env = "SHOPFRONT_DB_MAX_CONNECTIONS",
        global = true,
        default_value_t = 20
    )]
    pub max_connections: u32,

    /// Seconds a database operation waits for a pooled connection (including connecting)
    /// before giving up. While the database is down or restarting, a request fails with 503
    /// `database-unavailable` after about this long instead of waiting for it to come back.
    #[arg(
        long = "db-acquire-timeout-seconds",
        env = "SHOPFRONT_DB_ACQUIRE_TIMEOUT_SECONDS",
        global = true,
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..=300)
    )]
    pub acquire_timeout_seconds: u64,
}

/// How `serve` groups its projections ([`ServeSettings::projection_groups`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProjectionGroups {
    /// Every projection in one group.
    One,
    /// The read models a command's answer waits for in one group, the rest in another.
    Two,
    /// One runner (and one transaction per batch) for each projection.
    Each,
}

/// How the service runs.
#[derive(Debug, Clone, Args)]
pub struct ServeSettings {
    /// Address the HTTP server listens on (port 0 picks a free port).
    #[arg(long, env = "SHOPFRONT_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Seconds in-flight requests get to finish on shutdown.
    #[arg(long, env = "SHOPFRONT_SHUTDOWN_GRACE_SECONDS", default_value_t = 10)]
    pub shutdown_grace_seconds: u64,

    /// HMAC secret for access tokens (at least 32 bytes). When unset, one is generated and kept
    /// in the database, shared by every instance.
    #[arg(long, env = "SHOPFRONT_JWT_SECRET", value_parser = parse_secret, hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,

    /// Lifetime of access tokens, in seconds.
    #[arg(long, env = "SHOPFRONT_ACCESS_TOKEN_TTL_SECONDS", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(30..=86_400))]
    pub access_token_ttl_seconds: u64,

    /// Lifetime of refresh tokens (each use rotates it), in days.
    #[arg(long, env = "SHOPFRONT_REFRESH_TOKEN_TTL_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=365))]
    pub refresh_token_ttl_days: u64,

    /// Token of the Telegram bot (from @BotFather). It verifies Telegram Login and Mini App
    /// data and enables QR login and the Telegram second factor; without it those answer 503
    /// `telegram-not-configured`.
    #[arg(long, env = "SHOPFRONT_TELEGRAM_BOT_TOKEN", value_parser = parse_secret, hide_env_values = true)]
    pub telegram_bot_token: Option<SecretString>,

    /// The bot's username (without `@`), for QR login deep links `https://t.me/<bot>?start=…`.
    #[arg(long, env = "SHOPFRONT_TELEGRAM_BOT_USERNAME", value_parser = parse_bot_username)]
    pub telegram_bot_username: Option<String>,

    /// Oldest `auth_date` accepted from Telegram Login and Mini App data, in seconds.
    #[arg(long, env = "SHOPFRONT_TELEGRAM_AUTH_MAX_AGE_SECONDS", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(60..=2_592_000))]
    pub telegram_auth_max_age_seconds: u64,

    /// The Telegram Bot API server the bot talks to: Telegram's by default, a self-hosted
    /// `telegram-bot-api`, or a fake one in tests.
    #[arg(
        long,
        env = "SHOPFRONT_TELEGRAM_API_URL",
        default_value = crate::telegram::TELEGRAM_API_URL
    )]
    pub telegram_api_url: url::Url,

    /// Seconds one `getUpdates` long poll waits for news.
    #[arg(long, env = "SHOPFRONT_TELEGRAM_POLL_TIMEOUT_SECONDS", default_value_t = 25,
          value_parser = clap::value_parser!(u64).range(1..=50))]
    pub telegram_poll_timeout_seconds: u64,

    /// Messages and button presses a minute one chat may send to the bot (`RATE[:BURST]`);
    /// beyond it the chat is asked to slow down, and other chats are unaffected.
    #[arg(long, env = "SHOPFRONT_TELEGRAM_CHAT_RATE", default_value = "30:10")]
    pub telegram_chat_rate: RateLimit,

    /// The SMTP server notification e-mails go through: `smtp://host:port` (plain, as a local
    /// relay), `smtp://host?tls=required` (STARTTLS) or `smtps://user:password@host` (TLS).
    /// Without it the e-mail channel is off: e-mail deliveries are marked `skipped`.
    #[arg(long, env = "SHOPFRONT_SMTP_URL", value_parser = parse_secret, hide_env_values = true)]
    pub smtp_url: Option<SecretString>,

    /// The sender of notification e-mails (`Name <address>` or an address); its domain names
    /// the messages' `Message-ID`s.
    #[arg(
        long,
        env = "SHOPFRONT_SMTP_FROM",
        default_value = "shopfront <notifications@shopfront.localhost>"
    )]
    pub smtp_from: String,

    /// Seconds a QR login or a second-factor request waits for its confirmation in Telegram.
    #[arg(long, env = "SHOPFRONT_LOGIN_CHALLENGE_TTL_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(30..=3_600))]
    pub login_challenge_ttl_seconds: u64,

    /// Password attempts per account a minute (log-ins and re-authentications together, counted
    /// by account, or by e-mail when no account has it), as `RATE` or `RATE:BURST`; `0` turns
    /// the throttle off. On top of the per-IP log-in limit, so many addresses guessing one
    /// account's password are slowed down too.
    #[arg(
        long,
        env = "SHOPFRONT_RATE_LIMIT_LOGIN_ACCOUNT",
        default_value = "3:10"
    )]
    pub rate_limit_login_account: RateLimit,

    /// Seconds a re-authentication (the password again, or an approval in Telegram) lets its
    /// session make one sensitive change: link Telegram, turn the second factor on or off.
    #[arg(long, env = "SHOPFRONT_REAUTHENTICATION_TTL_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(30..=3_600))]
    pub reauthentication_ttl_seconds: u64,

    /// Seconds between runs of the order-expiry process manager (expires unpaid orders past
    /// their store's reservation time-to-live and releases their stock).
    #[arg(long, env = "SHOPFRONT_EXPIRY_INTERVAL_SECONDS", default_value_t = 10)]
    pub expiry_interval_seconds: u64,

    /// Directory uploaded files (payment receipts) are kept in, content-addressed by SHA-256.
    #[arg(long, env = "SHOPFRONT_STORAGE_DIR", default_value = "data/files")]
    pub storage_dir: PathBuf,

    /// Largest accepted receipt file, in bytes (enforced while the upload streams in).
    #[arg(long, env = "SHOPFRONT_MAX_RECEIPT_BYTES", default_value_t = 10 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=52_428_800))]
    pub max_receipt_bytes: u64,

    /// Milliseconds a command's answer waits for the read models to show its change (and a
    /// query by id for something written a moment ago); past it, a command answers `202` with
    /// where its view will be (docs/adr/0006-read-your-writes.md).
    #[arg(long, env = "SHOPFRONT_READ_YOUR_WRITES_WAIT_MS", default_value_t = 2_000,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub read_your_writes_wait_ms: u64,

    /// How the projections are grouped, each group applying its batches in one transaction
    /// (docs/adr/0011-grouped-projections.md): `one` (all together), `two` (the read models
    /// answers wait for, and the rest), `each` (one runner and one transaction per projection).
    #[arg(long, env = "SHOPFRONT_PROJECTION_GROUPS", value_enum, default_value_t = ProjectionGroups::One)]
    pub projection_groups: ProjectionGroups,

    /// Events each live topic (`/api/v1/ws`) holds for a subscriber that has not taken them
    /// yet; one that falls further behind is told where to resume and disconnected (close
    /// 4029).
    #[arg(long, env = "SHOPFRONT_LIVE_BUFFER", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(16..=1_000_000))]
    pub live_buffer: u64,

    /// Seconds between checks of a live connection's session and subscriptions (a revoked
    /// session closes it, a role taken away ends the subscriptions it allowed).
    #[arg(long, env = "SHOPFRONT_LIVE_RECHECK_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub live_recheck_seconds: u64,

    /// Live connections (`/api/v1/ws`) one account may hold on one instance at once; one more
    /// is closed with 4009.
    #[arg(long, env = "SHOPFRONT_LIVE_CONNECTIONS_PER_ACCOUNT", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub live_connections_per_account: u64,

    #[command(flatten)]
    pub audit: AuditSettings,

    #[command(flatten)]
    pub edge: EdgeSettings,
}

/// The audit chain's sealing and signing (docs/auditing.md).
#[derive(Debug, Clone, Args)]
pub struct AuditSettings {
    /// The ed25519 key that signs audit checkpoints, as 64 hex digits (its 32-byte seed). When
    /// unset, the key in --audit-signing-key-file is used (generated there on first run).
    /// Every instance must sign with the same key.
    #[arg(long, env = "SHOPFRONT_AUDIT_SIGNING_KEY", value_parser = parse_secret, hide_env_values = true)]
    pub audit_signing_key: Option<SecretString>,

    /// Where the checkpoint signing key is kept when not given directly (mode 0600).
    #[arg(
        long,
        env = "SHOPFRONT_AUDIT_SIGNING_KEY_FILE",
        default_value = "data/audit-signing.key"
    )]
    pub audit_signing_key_file: PathBuf,

    /// Events sealed between two signed checkpoints.
    #[arg(long, env = "SHOPFRONT_AUDIT_CHECKPOINT_EVENTS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub audit_checkpoint_events: u64,

    /// Longest time, in seconds, between two signed checkpoints while events are sealed.
    #[arg(long, env = "SHOPFRONT_AUDIT_CHECKPOINT_SECONDS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub audit_checkpoint_seconds: u64,

    /// A Telegram chat id (the admins' channel) the bot posts each signed checkpoint to, so a
    /// copy lives outside the database. Needs the bot token.
    #[arg(long, env = "SHOPFRONT_AUDIT_CHECKPOINT_CHAT")]
    pub audit_checkpoint_chat: Option<i64>,
}

impl AuditSettings {
    /// Settings for tests: a key file of the instance's own, checkpoints every 100 events.
    pub fn for_tests() -> Self {
        Self {
            audit_signing_key: None,
            audit_signing_key_file: std::env::temp_dir()
                .join("shopfront-test-keys")
                .join(format!("{}.key", uuid::Uuid::now_v7().simple())),
            audit_checkpoint_events: 100,
            audit_checkpoint_seconds: 600,
            audit_checkpoint_chat: None,
        }
    }

    /// The signing key: configured, read from the key file, or generated there.
    pub fn signing_key(&self) -> anyhow::Result<ed25519_dalek::SigningKey> {
        crate::app::audit::signing::load_or_generate(
            self.audit_signing_key.as_ref(),
            &self.audit_signing_key_file,
        )
        .map_err(Into::into)
    }
}

/// Logging.
#[derive(Debug, Clone, Args)]
pub struct TelemetrySettings {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info,shopfront=debug`.
    #[arg(
        long = "log",
        env = "SHOPFRONT_LOG",
        global = true,
        default_value = "info"
    )]
    pub filter: String,

    /// Log line format.
    #[arg(long, env = "SHOPFRONT_LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

fn parse_secret(value: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(value.to_owned()))
}

/// A Telegram bot username: 5–32 letters, digits or underscores (a leading `@` is dropped).
fn parse_bot_username(value: &str) -> Result<String, String> {
    let name = value.trim().trim_start_matches('@');
    let valid = (5..=32).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(name.to_owned())
    } else {
        Err("a bot username is 5 to 32 letters, digits or underscores".into())
    }
}

impl ServeSettings {
    /// The authentication settings these flags describe.
    /// The bot's settings, when a bot token is configured.
    pub fn telegram(&self) -> Option<crate::telegram::TelegramSettings> {
        self.telegram_bot_token
            .clone()
            .map(|token| crate::telegram::TelegramSettings {
                token,
                api_url: self.telegram_api_url.clone(),
                poll_timeout: std::time::Duration::from_secs(self.telegram_poll_timeout_seconds),
                chat_rate: (
                    self.telegram_chat_rate.per_minute,
                    self.telegram_chat_rate.burst,
                ),
            })
    }

    /// The notification worker's channels: the bot when a token is configured, e-mail when an
    /// SMTP URL is.
    pub fn notification_channels(&self) -> anyhow::Result<crate::notify::Channels> {
        Ok(crate::notify::Channels {
            telegram: self.telegram().map(|telegram| telegram.bot()),
            telegram_limits: Default::default(),
            email: self
                .smtp_url
                .as_ref()
                .map(|url| crate::notify::email::Mailer::new(url, &self.smtp_from))
                .transpose()?,
            checkpoint_chat: self.audit.audit_checkpoint_chat,
        })
    }

    pub fn auth(&self) -> crate::app::AuthSettings {
        crate::app::AuthSettings {
            access_token_ttl: std::time::Duration::from_secs(self.access_token_ttl_seconds),
            refresh_token_ttl: std::time::Duration::from_secs(
                self.refresh_token_ttl_days * 24 * 3600,
            ),
            jwt_secret: self.jwt_secret.clone(),
            telegram: self
                .telegram_bot_token
                .clone()
                .map(|token| crate::app::TelegramBot {
                    token,
                    username: self.telegram_bot_username.clone(),
                }),
            telegram_auth_max_age: std::time::Duration::from_secs(
                self.telegram_auth_max_age_seconds,
            ),
            login_challenge_ttl: std::time::Duration::from_secs(self.login_challenge_ttl_seconds),
            login_attempts_per_account: self.rate_limit_login_account,
            reauthentication_ttl: std::time::Duration::from_secs(self.reauthentication_ttl_seconds),
        }
    }
}

impl ServeSettings {
    /// Settings for tests and embedding: a free port on loopback and quick timings.
    pub fn for_tests() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            shutdown_grace_seconds: 5,
            jwt_secret: None,
            access_token_ttl_seconds: 900,
            refresh_token_ttl_days: 30,
            telegram_bot_token: None,
            telegram_bot_username: None,
            telegram_auth_max_age_seconds: 86_400,
            // Tests never reach Telegram: with a token but no fake Bot API server, the bot
            // polls a closed local port (the discard port) and gets nowhere.
            telegram_api_url: url::Url::parse("http://127.0.0.1:9/").expect("a valid URL"),
            telegram_poll_timeout_seconds: 1,
            telegram_chat_rate: RateLimit::new(600, 100),
            smtp_url: None,
            smtp_from: "shopfront <notifications@shopfront.localhost>".into(),
            login_challenge_ttl_seconds: 300,
            rate_limit_login_account: RateLimit::OFF,
            reauthentication_ttl_seconds: 300,
            expiry_interval_seconds: 3600,
            // One directory per instance: erasure deletes files, and another test's file with
            // the same content (files are stored by content) must not go with it.
            storage_dir: std::env::temp_dir()
                .join("shopfront-test-files")
                .join(uuid::Uuid::now_v7().simple().to_string()),
            max_receipt_bytes: 10 * 1024 * 1024,
            // Tests share a couple of cores with builds: a projection may lag seconds there.
            // A test of the `202` answer sets its own.
            read_your_writes_wait_ms: 20_000,
            projection_groups: ProjectionGroups::One,
            live_buffer: 1024,
            live_recheck_seconds: 60,
            live_connections_per_account: 50,
            audit: AuditSettings::for_tests(),
            edge: EdgeSettings::for_tests(),
        }
    }
}

/// The HTTP edge: rate limits and idempotency keys (src/http/rate_limit.rs,
/// src/http/idempotency.rs; docs/operations.md).
#[derive(Debug, Clone, Args)]
pub struct EdgeSettings {
    /// Requests per minute per client IP, as `RATE` or `RATE:BURST`; `0` turns the limit off.
    /// Health probes and `/metrics` are not limited.
    #[arg(long, env = "SHOPFRONT_RATE_LIMIT_PER_IP", default_value = "600:100")]
    pub rate_limit_per_ip: RateLimit,

    /// Requests per minute per authenticated caller (the access token's account, or the
    /// credential itself when it is not an access token), as `RATE` or `RATE:BURST`.
    #[arg(long, env = "SHOPFRONT_RATE_LIMIT_PER_USER", default_value = "300:60")]
    pub rate_limit_per_user: RateLimit,

    /// POSTs to `/api/v1/auth/*` (log-ins, refreshes) per minute per client IP.
    #[arg(long, env = "SHOPFRONT_RATE_LIMIT_LOGIN", default_value = "10:5")]
    pub rate_limit_login: RateLimit,

    /// Uploads (multipart POSTs and POSTs to `…/receipts`) per minute per caller.
    #[arg(long, env = "SHOPFRONT_RATE_LIMIT_UPLOAD", default_value = "10:3")]
    pub rate_limit_upload: RateLimit,

    /// Take the client IP from the last `X-Forwarded-For` entry. Set it only behind a reverse
    /// proxy that appends the address it saw; otherwise any client can pick its own IP.
    #[arg(long, env = "SHOPFRONT_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,

    /// Mark the console's cookies `Secure` (sent over HTTPS only). Set it when browsers reach
    /// the service over TLS (a TLS-terminating proxy in front of it).
    #[arg(long, env = "SHOPFRONT_SECURE_COOKIES")]
    pub secure_cookies: bool,

    /// Hours a POST's `Idempotency-Key` and its stored response are kept for retries.
    #[arg(long, env = "SHOPFRONT_IDEMPOTENCY_TTL_HOURS", default_value_t = 24,
          value_parser = clap::value_parser!(u64).range(1..=720))]
    pub idempotency_ttl_hours: u64,

    /// Seconds a request body may take to arrive in full; a slower one is cut off with 408 and
    /// its connection closed, so slow senders cannot hold memory and connections for long.
    #[arg(long, env = "SHOPFRONT_BODY_READ_TIMEOUT_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub body_read_timeout_seconds: u64,

    /// Seconds a connection, or a request body being read, may stay silent (no byte either
    /// way) before it is closed (a body: cut off with 408).
    #[arg(long, env = "SHOPFRONT_IDLE_TIMEOUT_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub idle_timeout_seconds: u64,

    /// The bearer token `GET /metrics` requires (at least 16 characters). Without it the
    /// endpoint is off (404): metrics describe the business and must not be public.
    #[arg(long, env = "SHOPFRONT_METRICS_TOKEN", value_parser = parse_metrics_token, hide_env_values = true)]
    pub metrics_token: Option<SecretString>,
}

impl EdgeSettings {
    /// For tests: no rate limits (tests that need them set their own), keys kept 24 h, the
    /// default timeouts, and metrics behind [`TEST_METRICS_TOKEN`].
    pub fn for_tests() -> Self {
        Self {
            rate_limit_per_ip: RateLimit::OFF,
            rate_limit_per_user: RateLimit::OFF,
            rate_limit_login: RateLimit::OFF,
            rate_limit_upload: RateLimit::OFF,
            trust_forwarded_for: false,
            secure_cookies: false,
            idempotency_ttl_hours: 24,
            body_read_timeout_seconds: 60,
            idle_timeout_seconds: 30,
            metrics_token: Some(SecretString::from(TEST_METRICS_TOKEN)),
        }
    }
}

/// The metrics token of [`EdgeSettings::for_tests`]; never use it in production.
pub const TEST_METRICS_TOKEN: &str = "shopfront-test-metrics-token";

/// A metrics token: at least 16 characters, no whitespace (it travels in a header).
fn parse_metrics_token(value: &str) -> Result<SecretString, String> {
    if value.chars().count() < 16 || value.chars().any(char::is_whitespace) {
        return Err("the metrics token must be at least 16 characters, without spaces".into());
    }
    Ok(SecretString::from(value.to_owned()))
}

/// A request quota: `per_minute` requests a minute on average, at most `burst` at once.
/// Written `RATE` (burst = rate) or `RATE:BURST`; a rate of 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_minute: u32,
    pub burst: u32,
}

impl RateLimit {
    /// No limit.
    pub const OFF: RateLimit = RateLimit {
        per_minute: 0,
        burst: 0,
    };

    /// `per_minute` a minute with bursts of `burst` (at least 1).
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self { per_minute, burst }
    }

    pub fn is_off(&self) -> bool {
        self.per_minute == 0
    }
}

impl std::str::FromStr for RateLimit {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let number = |part: &str| {
            part.trim()
                .parse::<u32>()
                .map_err(|_| format!("`{value}` is not RATE or RATE:BURST (whole numbers)"))
        };
        let (per_minute, burst) = match value.split_once(':') {
            Some((rate, burst)) => (number(rate)?, number(burst)?),
            None => {
                let rate = number(value)?;
                (rate, rate)
            }
        };
        if per_minute > 0 && burst == 0 {
            return Err(format!("`{value}`: the burst must be at least 1"));
        }
        Ok(Self { per_minute, burst })
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.per_minute, self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimit;

    #[test]
    fn a_rate_limit_is_a_rate_with_an_optional_burst_and_zero_turns_it_off() {
        assert_eq!("600:100".parse(), Ok(RateLimit::new(600, 100)));
        assert_eq!("10".parse(), Ok(RateLimit::new(10, 10)));
        assert!("0".parse::<RateLimit>().is_ok_and(|limit| limit.is_off()));
        assert!("5:0".parse::<RateLimit>().is_err());
        assert!("ten".parse::<RateLimit>().is_err());
        assert!("-1".parse::<RateLimit>().is_err());
        assert_eq!(RateLimit::new(600, 100).to_string(), "600:100");
    }
}
