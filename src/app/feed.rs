//! Live feeds (docs/adr/0008-live-feeds.md): what a WebSocket client (or any other push
//! adapter) follows, authorized with the same proofs as every request, with no gap and no
//! duplicate across reconnects.
//!
//! Every instance tails the global log itself (no broker): one task per process reads each
//! event once, in log order, decodes it, learns its store, and hands it to the topics it
//! belongs to, each a bounded `tokio::sync::broadcast` that exists while somebody follows it.
//! An event wakes only the connections following one of its topics (ten thousand idle
//! connections on other stores cost nothing per event). A subscription that cannot keep up
//! finds it has lagged and its connection is closed with the position to resume from; memory
//! never grows with a slow client.
//!
//! **Resume.** [`LiveLog::subscribe`] returns a receiver of a topic and the tail position `T`
//! the tailer has handed out, taken together under one lock that the tailer also holds while
//! it hands out a batch and moves `T`: the receiver gets exactly the topic's events after `T`.
//! A client that asks for everything after position `P` is sent `(P, T]` read from the log,
//! then the live events after `max(P, T)`: no gap, no duplicate, on whichever instance it
//! reconnects to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aggregates::order::OrderEvent;
use aggregates::receipt::ReceiptEvent;
use aggregates::stock::StockEvent;
use aggregates::{AccountId, StoreId};
use chrono::Utc;
use projections::event::{decode, store_of, DomainEvent, StoreOf};
use projections::log::{read_between, GlobalLog, LogPosition, LoggedEvent};
use projections::notifications::Notifications;
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::authz::grant;
use super::{App, AppError, Caller};

/// How the live feeds behave (`serve`'s settings).
#[derive(Clone, Copy, Debug)]
pub struct LiveSettings {
    /// Events of a topic a subscriber may hold unread before it counts as too far behind (one
    /// ring per topic followed, shared by its subscribers).
    pub buffer: usize,
    /// How often a connection's session and subscriptions are checked again.
    pub recheck: Duration,
    /// How often a connection is pinged (below the idle timeout: a pong is traffic).
    pub ping: Duration,
    /// Live connections one account may hold on this instance at once.
    pub connections_per_account: usize,
}

/// An account's place among the live connections of this instance; given back when dropped.
pub struct Admission {
    live: LiveLog,
    account_id: AccountId,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut connections = self.live.connections();
        if let Some(count) = connections.get_mut(&self.account_id) {
            *count -= 1;
            if *count == 0 {
                connections.remove(&self.account_id);
            }
        }
    }
}

/// Events read from the log per query, when tailing and when replaying.
const READ_BATCH: i64 = 500;

/// Replays (reads of the log for a resuming subscriber) running at once per instance.
pub const REPLAYS: usize = 4;

/// How often the tailer looks at the log when no notification woke it (the visibility horizon
/// can move without one).
const POLL: Duration = Duration::from_millis(100);

/// Aggregates whose store the tailer remembers before it forgets them all and looks them up
/// again from their first events.
const STORE_CACHE: usize = 200_000;

/// One event as the live feeds hand it out.
#[derive(Clone, Debug)]
pub struct FeedEvent {
    pub position: LogPosition,
    /// The store the event's aggregate belongs to (`None`: an account's, or unreadable).
    pub store_id: Option<StoreId>,
    pub raw: LoggedEvent,
    /// The decoded event; `None` if this build cannot read it (it is still in the raw log
    /// feed).
    pub event: Option<DomainEvent>,
    /// The metadata's known keys only (what older events kept beside them, client IPs and
    /// user agents, is never handed out).
    pub metadata: std::collections::HashMap<String, String>,
}

impl FeedEvent {
    /// The payload as clients may see it: as stored, except `Account` events of version 1.0,
    /// which held the Telegram user id in clear (docs/events.md): withheld (`None`).
    pub fn visible_payload(&self) -> Option<&serde_json::Value> {
        let clear_personal_data = super::personal_data::payload_holds_clear_personal_data(
            &self.raw.aggregate_type,
            &self.raw.event_version,
        );
        (!clear_personal_data).then_some(&self.raw.payload)
    }
}

impl FeedEvent {
    /// The event's global position (what clients resume after).
    pub fn global_position(&self) -> i64 {
        self.position.global_position
    }
}

/// What a client can follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// A store's orders and payment receipts (`ViewOrders`).
    Orders(StoreId),
    /// A store's stock alerts and the stock received or adjusted (`ViewStock`).
    Inventory(StoreId),
    /// The store's dashboard figures for today, after every change to them (`ViewAnalytics`).
    Kpis(StoreId),
    /// The caller's own notification center.
    Notifications(AccountId),
    /// Every event of a store (`ViewAuditTrail`), or of the whole platform (platform admins).
    Events(Option<StoreId>),
}

/// A topic as a client names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicName {
    Orders,
    Inventory,
    Kpis,
    Notifications,
    Events,
}

impl Topic {
    pub fn name(&self) -> TopicName {
        match self {
            Topic::Orders(_) => TopicName::Orders,
            Topic::Inventory(_) => TopicName::Inventory,
            Topic::Kpis(_) => TopicName::Kpis,
            Topic::Notifications(_) => TopicName::Notifications,
            Topic::Events(_) => TopicName::Events,
        }
    }

    /// The store the topic is about, if it is a store's.
    pub fn store_id(&self) -> Option<StoreId> {
        match self {
            Topic::Orders(store) | Topic::Inventory(store) | Topic::Kpis(store) => Some(*store),
            Topic::Events(store) => *store,
            Topic::Notifications(_) => None,
        }
    }

    /// Whether `event` belongs to this topic (the notification center follows its own table,
    /// not the log: never).
    pub fn matches(&self, event: &FeedEvent) -> bool {
        topics_of(event).contains(self)
    }
}

/// Every log topic `event` belongs to.
pub fn topics_of(event: &FeedEvent) -> Vec<Topic> {
    let mut topics = vec![Topic::Events(None)];
    let Some(store) = event.store_id else {
        return topics;
    };
    topics.push(Topic::Events(Some(store)));
    match &event.event {
        Some(DomainEvent::Order(_) | DomainEvent::Receipt(_)) => topics.push(Topic::Orders(store)),
        Some(DomainEvent::Stock(
            StockEvent::StockReceived { .. }
            | StockEvent::StockAdjusted { .. }
            | StockEvent::StockThresholdChanged { .. }
            | StockEvent::StockLevelLow { .. }
            | StockEvent::StockDepleted { .. }
            | StockEvent::StockAlertAcknowledged { .. },
        )) => topics.push(Topic::Inventory(store)),
        _ => {}
    }
    if event.event.as_ref().is_some_and(changes_kpis) {
        topics.push(Topic::Kpis(store));
    }
    topics
}

/// The events the dashboard's figures move with.
fn changes_kpis(event: &DomainEvent) -> bool {
    matches!(
        event,
        DomainEvent::Order(
            OrderEvent::OrderPlaced { .. }
                | OrderEvent::OrderPaid { .. }
                | OrderEvent::OrderCancelled { .. }
                | OrderEvent::OrderExpired { .. }
                | OrderEvent::OrderFulfilled { .. }
        ) | DomainEvent::Receipt(ReceiptEvent::PaymentReceiptVerified { .. })
    )
}

/// The instance's tail of the global log, handed out to every live connection.
#[derive(Clone)]
pub struct LiveLog {
    inner: Arc<Inner>,
}

struct Inner {
    /// The last position handed out and the topics' channels: one lock, so a subscriber's
    /// receiver and tail are taken at one point between two batches.
    hub: Mutex<Hub>,
    stores: StoreResolver,
    notifications: Notifications,
    pool: PgPool,
    /// Cancelled when the service begins to shut down: connections close (1001).
    closing: CancellationToken,
    settings: LiveSettings,
    /// Turns for replays ([`REPLAYS`]).
    replays: tokio::sync::Semaphore,
    /// Live connections per account on this instance.
    connections: Mutex<HashMap<AccountId, usize>>,
}

/// The tail and the channel of every topic followed on this instance.
struct Hub {
    tail: LogPosition,
    channels: HashMap<Topic, broadcast::Sender<Arc<FeedEvent>>>,
}

impl std::fmt::Debug for LiveLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveLog").finish_non_exhaustive()
    }
}

impl LiveLog {
    /// Starts tailing the log from its head, woken by `notifications`, until `closing`.
    pub async fn start(
        pool: PgPool,
        notifications: &Notifications,
        closing: CancellationToken,
        settings: LiveSettings,
    ) -> Result<Self, sqlx::Error> {
        let head = GlobalLog::new(pool.clone())
            .head()
            .await?
            .unwrap_or(LogPosition::START);
        let live = Self {
            inner: Arc::new(Inner {
                hub: Mutex::new(Hub {
                    tail: head,
                    channels: HashMap::new(),
                }),
                stores: StoreResolver::new(pool.clone()),
                notifications: notifications.clone(),
                pool,
                closing,
                settings,
                replays: tokio::sync::Semaphore::new(REPLAYS),
                connections: Mutex::new(HashMap::new()),
            }),
        };
        tokio::spawn(live.clone().tail());
        Ok(live)
    }

    /// A receiver of `topic`'s events after the returned position, and that position.
    pub fn subscribe(&self, topic: Topic) -> (broadcast::Receiver<Arc<FeedEvent>>, LogPosition) {
        let mut hub = self.hub();
        let capacity = self.inner.settings.buffer.max(1);
        let receiver = hub
            .channels
            .entry(topic)
            .or_insert_with(|| broadcast::channel(capacity).0)
            .subscribe();
        (receiver, hub.tail)
    }

    /// A place for one more live connection of `account_id`, or `None` when the account holds
    /// [`LiveSettings::connections_per_account`] already.
    pub fn admit(&self, account_id: AccountId) -> Option<Admission> {
        let mut connections = self.connections();
        let count = connections.entry(account_id).or_insert(0);
        if *count >= self.inner.settings.connections_per_account {
            return None;
        }
        *count += 1;
        Some(Admission {
            live: self.clone(),
            account_id,
        })
    }

    fn connections(&self) -> std::sync::MutexGuard<'_, HashMap<AccountId, usize>> {
        self.inner
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The last position handed out.
    pub fn tail_position(&self) -> LogPosition {
        self.hub().tail
    }

    fn hub(&self) -> std::sync::MutexGuard<'_, Hub> {
        self.inner.hub.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn settings(&self) -> LiveSettings {
        self.inner.settings
    }

    /// Cancelled when the service begins to shut down.
    pub fn closing(&self) -> &CancellationToken {
        &self.inner.closing
    }

    /// The process's listener (for the notification center's pushes).
    pub fn notifications(&self) -> &Notifications {
        &self.inner.notifications
    }

    /// Up to [`READ_BATCH`] events after `after` and not after `up_to`, as the live feed hands
    /// them out, and where the next read starts (`None`: done). For a store's topic only its
    /// events are read (filtered in SQL by the store each aggregate's first event names), so a
    /// replay from the start of a large log costs a scan, not a decode of every event. At most
    /// [`REPLAYS`] run at once per instance.
    pub async fn replay(
        &self,
        topic: &Topic,
        after: LogPosition,
        up_to: LogPosition,
    ) -> Result<(Vec<Arc<FeedEvent>>, Option<LogPosition>), AppError> {
        let _turn = self
            .inner
            .replays
            .acquire()
            .await
            .map_err(|_| AppError::Unavailable("the live feeds are shutting down".into()))?;
        let batch = match topic.store_id() {
            None => read_between(&self.inner.pool, after, Some(up_to), READ_BATCH).await?,
            Some(store) => read_store_between(&self.inner.pool, store, after, up_to).await?,
        };
        let next = (batch.len() as i64 == READ_BATCH)
            .then(|| batch.last().map(LoggedEvent::position))
            .flatten();
        let mut events = Vec::with_capacity(batch.len());
        for raw in batch {
            events.push(Arc::new(self.inner.stores.prepare(raw).await?));
        }
        Ok((events, next))
    }

    /// Hands out `prepared` (the next events, in order) to the topics followed, and moves the
    /// tail past them, under the lock [`LiveLog::subscribe`] takes. Topics nobody follows any
    /// more are dropped.
    fn hand_out(&self, prepared: Vec<Arc<FeedEvent>>) {
        let mut hub = self.hub();
        hub.channels.retain(|_, sender| sender.receiver_count() > 0);
        for event in prepared {
            hub.tail = event.position;
            for topic in topics_of(&event) {
                if let Some(sender) = hub.channels.get(&topic) {
                    // Its last receiver may have gone since: not an error.
                    let _ = sender.send(event.clone());
                }
            }
        }
    }

    async fn tail(self) {
        let mut woken = self.inner.notifications.events();
        // A projection committing its checkpoint ends a transaction that may have held the
        // visibility horizon back: events committed meanwhile may be readable now.
        let mut horizon = self.inner.notifications.checkpoints();
        let mut backoff = POLL;
        loop {
            woken.borrow_and_update();
            horizon.borrow_and_update();
            let after = self.tail_position();
            let batch = match read_between(&self.inner.pool, after, None, READ_BATCH).await {
                Ok(batch) => batch,
                Err(err) => {
                    if self.inner.pool.is_closed() {
                        return;
                    }
                    tracing::warn!(error = %err, "the live feed cannot read the log; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    tokio::select! {
                        _ = self.inner.closing.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => continue,
                    }
                }
            };
            backoff = POLL;
            if batch.is_empty() {
                tokio::select! {
                    _ = self.inner.closing.cancelled() => return,
                    _ = woken.changed() => {}
                    _ = horizon.changed() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
                continue;
            }
            let mut prepared = Vec::with_capacity(batch.len());
            let mut failed = false;
            for raw in batch {
                match self.inner.stores.prepare(raw).await {
                    Ok(event) => prepared.push(Arc::new(event)),
                    Err(err) => {
                        tracing::warn!(error = %err, "the live feed cannot learn an event's store; retrying");
                        failed = true;
                        break;
                    }
                }
            }
            self.hand_out(prepared);
            if failed {
                tokio::select! {
                    _ = self.inner.closing.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
        }
    }
}

/// [`read_between`] for one store's events: its own (the Store aggregate) and those of the
/// aggregates whose first event names it.
async fn read_store_between(
    pool: &PgPool,
    store: StoreId,
    after: LogPosition,
    up_to: LogPosition,
) -> Result<Vec<LoggedEvent>, sqlx::Error> {
    sqlx::query_as::<_, LoggedEvent>(
        "select e.transaction_id::text::bigint as transaction_id, e.global_position,
                e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, e.event_version,
                e.payload, e.metadata, e.recorded_at
           from events e
          where (e.transaction_id, e.global_position) > ($1::bigint::text::xid8, $2)
            and (e.transaction_id, e.global_position) <= ($3::bigint::text::xid8, $4)
            and ((e.aggregate_type = 'Store' and e.aggregate_id = $5::text)
                 or exists (select 1 from events f
                             where f.aggregate_type = e.aggregate_type
                               and f.aggregate_id = e.aggregate_id and f.sequence = 1
                               and f.payload -> f.event_type ->> 'store_id' = $5::text))
          order by e.transaction_id, e.global_position
          limit $6",
    )
    .bind(after.transaction_id)
    .bind(after.global_position)
    .bind(up_to.transaction_id)
    .bind(up_to.global_position)
    .bind(store.0)
    .bind(READ_BATCH)
    .fetch_all(pool)
    .await
}

/// Which store each aggregate belongs to: from the event itself when it names it, else from
/// the aggregate's first event (read once, then remembered).
struct StoreResolver {
    pool: PgPool,
    known: Mutex<HashMap<(String, String), Option<StoreId>>>,
}

impl StoreResolver {
    fn new(pool: PgPool) -> Self {
        Self {
            pool,
            known: Mutex::new(HashMap::new()),
        }
    }

    async fn prepare(&self, raw: LoggedEvent) -> Result<FeedEvent, AppError> {
        let position = raw.position();
        let (event, metadata) = match decode(raw.clone()) {
            Ok(envelope) => (Some(envelope.event), envelope.metadata.to_map()),
            Err(_) => (None, Default::default()),
        };
        let store_id = match &event {
            None => None,
            Some(event) => self.store_of(&raw, event).await?,
        };
        Ok(FeedEvent {
            position,
            store_id,
            raw,
            event,
            metadata,
        })
    }

    async fn store_of(
        &self,
        raw: &LoggedEvent,
        event: &DomainEvent,
    ) -> Result<Option<StoreId>, AppError> {
        let key = (raw.aggregate_type.clone(), raw.aggregate_id.clone());
        let found = match store_of(event) {
            StoreOf::None => return Ok(None),
            StoreOf::Itself => raw.aggregate_id.parse().ok().map(StoreId),
            StoreOf::Named(store_id) => Some(store_id),
            StoreOf::Known => {
                if let Some(known) = self.lock().get(&key) {
                    return Ok(*known);
                }
                let first: Option<LoggedEvent> = sqlx::query_as(
                    "select transaction_id::text::bigint as transaction_id, global_position,
                            aggregate_type, aggregate_id, sequence, event_type, event_version,
                            payload, metadata, recorded_at
                       from events where aggregate_type = $1 and aggregate_id = $2
                      order by sequence limit 1",
                )
                .bind(&raw.aggregate_type)
                .bind(&raw.aggregate_id)
                .fetch_optional(&self.pool)
                .await?;
                match first.and_then(|first| decode(first).ok()) {
                    Some(first) => match store_of(&first.event) {
                        StoreOf::Named(store_id) => Some(store_id),
                        _ => None,
                    },
                    None => None,
                }
            }
        };
        let mut known = self.lock();
        if known.len() >= STORE_CACHE {
            known.clear();
        }
        known.insert(key, found);
        Ok(found)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Option<StoreId>>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Today's figures of a store, as the `kpis` topic pushes them.
#[derive(Clone, Debug, Serialize)]
pub struct LiveKpis {
    pub store_id: Uuid,
    /// The store's local day the figures are for.
    pub day: chrono::NaiveDate,
    /// `None` until the KPI read model has seen the store.
    pub figures: Option<projections::read_models::kpis::queries::Dashboard>,
}

/// Refusals of a subscription.
#[derive(Debug, thiserror::Error)]
pub enum TopicRefused {
    #[error("topic `{0:?}` needs a `store_id`")]
    StoreRequired(TopicName),
    #[error("no such store")]
    NotFound,
    #[error(transparent)]
    App(#[from] AppError),
}

impl App {
    /// The topic `name` (of `store_id`, for a store's topics) if `caller` may follow it: the
    /// permission each topic needs in the store (see [`Topic`]), and only their own
    /// notifications. A store the caller holds no role in is `NotFound`, as over HTTP.
    pub async fn authorize_topic(
        &self,
        caller: &Caller,
        name: TopicName,
        store_id: Option<StoreId>,
    ) -> Result<Topic, TopicRefused> {
        let store = || store_id.ok_or(TopicRefused::StoreRequired(name));
        Ok(match name {
            TopicName::Notifications => Topic::Notifications(caller.account_id()),
            TopicName::Events if store_id.is_none() => {
                self.require_platform_admin(caller).await?;
                Topic::Events(None)
            }
            TopicName::Events => Topic::Events(Some(
                self.topic_store::<grant::ViewAuditTrail>(caller, store()?)
                    .await?,
            )),
            TopicName::Orders => Topic::Orders(
                self.topic_store::<grant::ViewOrders>(caller, store()?)
                    .await?,
            ),
            TopicName::Inventory => Topic::Inventory(
                self.topic_store::<grant::ViewStock>(caller, store()?)
                    .await?,
            ),
            TopicName::Kpis => Topic::Kpis(
                self.topic_store::<grant::ViewAnalytics>(caller, store()?)
                    .await?,
            ),
        })
    }

    /// `store` if `caller` holds `P` there: `NotFound` when they hold no role in it at all,
    /// `Forbidden` when their role lacks `P` (as over HTTP).
    async fn topic_store<P: super::Grant>(
        &self,
        caller: &Caller,
        store: StoreId,
    ) -> Result<StoreId, TopicRefused> {
        match self.authorize_visible::<P>(caller, store).await? {
            Some(access) => Ok(access.store_id()),
            None => Err(TopicRefused::NotFound),
        }
    }

    /// The position of the event at global position `position` (`0`: before the first); `None`
    /// if there is no such event.
    pub async fn feed_position(&self, position: i64) -> Result<Option<LogPosition>, AppError> {
        if position == 0 {
            return Ok(Some(LogPosition::START));
        }
        Ok(projections::log::position_of(&self.pool, position).await?)
    }

    /// Today's figures of `store_id` once the KPI read model has applied `position` (or after
    /// the read-your-writes wait, with what it shows then). Only for a [`Topic::Kpis`] the
    /// caller was authorized for.
    pub async fn live_kpis(
        &self,
        topic: &Topic,
        position: Option<LogPosition>,
    ) -> Result<Option<LiveKpis>, AppError> {
        let Topic::Kpis(store_id) = topic else {
            return Ok(None);
        };
        if let Some(position) = position {
            self.wait_for(&["kpis"], position).await?;
        }
        let timezone = projections::read_models::catalog::queries::store(&self.pool, store_id.0)
            .await?
            .map(|store| store.timezone)
            .unwrap_or_default();
        let tz: chrono_tz::Tz = timezone.parse().unwrap_or(chrono_tz::UTC);
        let day = Utc::now().with_timezone(&tz).date_naive();
        let figures =
            projections::read_models::kpis::queries::dashboard(&self.pool, store_id.0, day, day)
                .await?;
        Ok(Some(LiveKpis {
            store_id: store_id.0,
            day,
            figures,
        }))
    }
}
