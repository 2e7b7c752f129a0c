//! The application layer: the only place that turns a caller's intent into commands.
//!
//! Adapters (HTTP, Telegram, CLI) build a [`CommandContext`] and call a service here; a
//! service loads what its decision needs and commits it through the [`EventStore`]: one
//! decision, however many aggregates it changes (an order and its stock reservations, a
//! receipt and its order), is one transaction (`event_store`,
//! docs/adr/0005-one-decision-one-transaction.md). Every event gets the context as metadata.

pub mod audit;
mod auth;
pub mod authz;
mod catalog;
mod contacts;
mod context;
mod daily_summaries;
mod directory;
mod erasure;
mod error;
pub(crate) mod event_store;
mod executor;
mod expiry;
pub mod feed;
mod files;
pub(crate) mod idempotency_keys;
pub mod metrics;
mod notification_center;
mod notification_preferences;
mod notifications;
mod orders;
mod personal_data;
mod projected;
mod receipts;
mod telegram_bot;
mod users;

use std::sync::Arc;

use event_store::EventStore;
use executor::Executor;

use aggregates::account::Account;
use aggregates::order::Order;
use aggregates::product::Product;
use aggregates::receipt::PaymentReceipt;
use aggregates::stock::Stock;
use aggregates::store::Store;
use sqlx::PgPool;

pub use auth::{
    verify_login_widget, verify_web_app_init_data, ApiToken, AuthError, AuthSettings,
    Authenticator, BrowserSession, CreatedApiToken, Credential, LoginKind, LoginOutcome, LoginPoll,
    LoginRequest, NewApiToken, PendingLogin, Principal, QrLogin, Reauthentication,
    ReauthenticationPoll, Session, TelegramBot, TelegramUser, TokenScope, Tokens, WebAppLogin,
    API_TOKEN_PREFIX, BROWSER_SESSION_PREFIX, MIN_PASSWORD_LEN, QR_START_PREFIX,
};
pub use authz::{grant, Grant, Resource, StoreAccess};
pub use catalog::{NewProduct, NewStore, ProductChange, StoreSettingsChange};
pub use contacts::Contact;
pub use context::{Caller, CommandContext, Origin};
pub use daily_summaries::DAILY_SUMMARY_INTERVAL;
pub use directory::{StaffMember, UserQuery};
pub use erasure::ErasureReport;
pub use error::AppError;
pub use event_store::{Decided, Stored, MAX_ATTEMPTS};
pub use files::{FileStore, StoredFile, RECEIPT_MEDIA_TYPES};
pub use notification_center::{
    DeliveryStatus, DeliveryView, NotificationFilter, NotificationPage, NotificationView,
    MAX_NOTIFICATIONS_PAGE,
};
pub use notification_preferences::{
    NotificationPreferences, PreferencesChange, PushChannel, QuietHours,
};
pub use notifications::{
    link_of, sound_of, DueDelivery, EmailNotice, NoticeRecipient, NoticeRenderer, OutboxNotice,
    RenderedNotice, Sound, MAX_DELIVERY_ATTEMPTS, NOTIFICATIONS_CHANNEL,
};
pub use orders::{ContactDetails, OrderFor, OrderLineInput, PlaceOrder, StaffOrder};
pub use personal_data::{open_with, PersonalDataVault, Revealed, SubjectKeys};
pub use projected::READ_YOUR_WRITES_WAIT;
pub use receipts::{ReceiptUpload, SubmitReceipt};
pub use telegram_bot::SecondFactorPrompt;
pub use users::PlatformAdmin;

/// The time a command happens, as the application layer tells aggregates: UTC, truncated to
/// the microsecond Postgres stores, so an event's times read back from a table equal the ones
/// in the event itself (read models folded in memory and rebuilt from rows agree exactly).
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}

/// Largest receipt file accepted unless configured otherwise (10 MiB).
pub const DEFAULT_MAX_RECEIPT_BYTES: u64 = 10 * 1024 * 1024;

/// The application services, with one executor per aggregate type.
pub struct App {
    pub pool: PgPool,
    /// Loads aggregates and commits decisions (one transaction each).
    pub(crate) events: Arc<EventStore>,
    pub(crate) stores: Executor<Store>,
    pub(crate) products: Executor<Product>,
    pub(crate) stock: Executor<Stock>,
    pub(crate) orders: Executor<Order>,
    pub(crate) receipts: Executor<PaymentReceipt>,
    pub(crate) accounts: Executor<Account>,
    pub personal_data: PersonalDataVault,
    pub auth: Authenticator,
    /// Uploaded files (receipts); in memory until [`App::with_files`] names a real store.
    pub files: FileStore,
    /// Largest accepted receipt file, in bytes.
    pub max_receipt_bytes: u64,
    /// How long a read waits for the read models to show a write ([`READ_YOUR_WRITES_WAIT`]
    /// unless configured otherwise).
    pub read_your_writes_wait: std::time::Duration,
    /// The process's one listener for projection checkpoints: the one `serve` shares with the
    /// projection runtime ([`App::with_notifications`]), or else one started by the first read
    /// that waits for a write (`projected.rs`).
    checkpoints: tokio::sync::OnceCell<projections::runtime::CheckpointWatch>,
    /// The instance's tail of the global log for live feeds (`serve` starts it; `None`: no
    /// live feeds, as in the CLI).
    live: Option<feed::LiveLog>,
    /// The public half of the key this instance signs audit checkpoints with (`None`: it does
    /// not seal, as in the CLI).
    audit_public_key: Option<String>,
    /// One verification of the audit chain at a time on this instance: it reads the whole log
    /// and keeps a core busy.
    audit_verifications: tokio::sync::Semaphore,
    /// When each store auditor last verified it (`audit::verify`: once a minute each).
    audit_verified_by:
        std::sync::Mutex<std::collections::HashMap<aggregates::AccountId, std::time::Instant>>,
}

impl App {
    /// The services with default authentication settings.
    pub fn new(pool: PgPool) -> Self {
        Self::with_auth(pool, AuthSettings::default())
    }

    pub fn with_auth(pool: PgPool, auth: AuthSettings) -> Self {
        let events = Arc::new(EventStore::new(pool.clone()));
        Self {
            stores: Executor::new(events.clone()),
            products: Executor::new(events.clone()),
            stock: Executor::new(events.clone()),
            orders: Executor::new(events.clone()),
            receipts: Executor::new(events.clone()),
            accounts: Executor::new(events.clone()),
            events,
            personal_data: PersonalDataVault::new(pool.clone()),
            auth: Authenticator::new(auth),
            files: FileStore::in_memory(),
            max_receipt_bytes: DEFAULT_MAX_RECEIPT_BYTES,
            read_your_writes_wait: READ_YOUR_WRITES_WAIT,
            checkpoints: tokio::sync::OnceCell::new(),
            live: None,
            audit_public_key: None,
            audit_verifications: tokio::sync::Semaphore::new(1),
            audit_verified_by: Default::default(),
            pool,
        }
    }

    /// The same services waiting for projections (read-your-writes) on `notifications`, the
    /// process's one listener, shared with the projection runtime.
    pub fn with_notifications(
        mut self,
        notifications: &projections::notifications::Notifications,
    ) -> Self {
        let watch = projections::runtime::CheckpointWatch::new(self.pool.clone(), notifications);
        self.checkpoints = tokio::sync::OnceCell::new_with(Some(watch));
        self
    }

    /// The same services with live feeds handed out by `live`.
    pub fn with_live_log(mut self, live: feed::LiveLog) -> Self {
        self.live = Some(live);
        self
    }

    /// The same services signing audit checkpoints with a key whose public half is `key`
    /// (hex), for `/api/v1/audit/public-key`.
    pub fn with_audit_public_key(mut self, key: String) -> Self {
        self.audit_public_key = Some(key);
        self
    }

    /// The public key (hex) this instance signs audit checkpoints with, if it seals.
    pub fn audit_public_key(&self) -> Option<&str> {
        self.audit_public_key.as_deref()
    }

    /// The instance's live feeds, if it serves them.
    pub fn live_log(&self) -> Option<&feed::LiveLog> {
        self.live.as_ref()
    }

    /// The same services storing uploaded files in `files`.
    pub fn with_files(mut self, files: FileStore) -> Self {
        self.files = files;
        self
    }
}

/// The write side's loading, as `shopfront bench stock-load` measures it. Public only for the
/// bench binary (`src/bench/`, outside this library) and hidden from the docs: not part of the
/// library's API (the service's own code uses the executors).
impl App {
    /// The state of aggregate `id` as a decision loads it: saved state plus newer events.
    #[doc(hidden)]
    pub async fn load_state<A: Stored>(&self, id: &str) -> Result<A, AppError> {
        Ok(self.events.load::<A>(id).await?.into_state())
    }

    /// The state of aggregate `id` replayed from all its events, whatever its saved state says.
    #[doc(hidden)]
    pub async fn replay_state<A: Stored>(&self, id: &str) -> Result<A, AppError> {
        self.events.load_from_events::<A>(id).await
    }

    /// Writes the missing saved states of type `A` (what `serve` does at start-up); how many.
    #[doc(hidden)]
    pub async fn repair_saved_states<A: Stored>(&self) -> Result<usize, AppError> {
        self.events.repair_saved_states::<A>().await
    }
}
