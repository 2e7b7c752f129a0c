//! The event store as the application layer uses it: postgres-es's `events` and `snapshots`
//! tables, written one *decision* at a time (docs/adr/0005-one-decision-one-transaction.md).
//!
//! A decision (place an order, verify a receipt, create a product, …) may change several
//! aggregates. It runs as a [`Decision`] in a [`UnitOfWork`]:
//!
//! 1. load every aggregate the decision needs: its saved state plus any newer events (types
//!    that keep one, see [`Stored::SAVED_STATE`]) or all its events, remembering the version
//!    (last sequence) it was loaded at;
//! 2. run commands through each aggregate's own `handle` (cqrs-es's contract; aggregates stay
//!    pure); each command's events are applied to the loaded state at once, so a later command
//!    of the same decision sees them;
//! 3. commit: one Postgres transaction inserts every event of every aggregate, in the order the
//!    commands ran and with the same metadata, writes every changed saved state, and runs the
//!    decision's side writes (an sku claim, say). The `(aggregate_type, aggregate_id, sequence)`
//!    primary key is the optimistic lock: if anyone appended to one of these aggregates since
//!    step 1, the insert fails, nothing at all is written, and the decision runs again from
//!    step 1 on fresh state, up to [`MAX_ATTEMPTS`] times with jittered backoff.
//!
//! So a decision is all or nothing: an order exists with all its reservations or not at all; a
//! receipt is verified exactly when its order is paid by it. All events of a decision share one
//! `transaction_id`, so the global log and every projection see them together.
//!
//! Within one process, decisions on the same hot aggregate (a popular product's stock) also
//! queue on striped locks ([`AggregateLocks`]) before they load, so they do not burn their
//! retries on each other; across processes the database's optimistic lock alone keeps them
//! honest.

use std::collections::hash_map::DefaultHasher;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use aggregates::account::{Account, AccountError};
use aggregates::order::{Order, OrderError};
use aggregates::product::{Product, ProductError};
use aggregates::receipt::{PaymentReceipt, ReceiptError};
use aggregates::stock::{Stock, StockError};
use aggregates::store::{Store, StoreError};
use aggregates::StoreId;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Mutex, MutexGuard};

use super::{AppError, CommandContext};

/// How many times a decision is tried when another writer changed one of its aggregates first.
/// Within a process, decisions on one hot aggregate queue instead of colliding, so conflicts
/// come from other instances (one contender each); a few dozen short tries outlast any fair
/// race between them, and [`DECISION_DEADLINE`] bounds the worst case.
pub const MAX_ATTEMPTS: u32 = 50;

/// No decision retries past this long after it started.
pub const DECISION_DEADLINE: Duration = Duration::from_secs(5);

/// An aggregate type as this store keeps it.
pub trait Stored: Aggregate<Services = ()> + Clone + 'static {
    /// Whether the aggregate's state is saved beside its events with every commit, so a load
    /// reads one row instead of replaying its history. For the aggregates every request loads
    /// (Store: roles) and the ones with the longest, hottest histories (Stock).
    const SAVED_STATE: bool;

    /// The store an existing aggregate belongs to (`None` before it exists, and for accounts,
    /// which belong to no store).
    fn store_of(&self) -> Option<StoreId>;

    /// The refusal for "no such aggregate" — also what a caller of another store is told.
    fn not_found() -> AppError;
}

impl Stored for Store {
    const SAVED_STATE: bool = true;
    fn store_of(&self) -> Option<StoreId> {
        self.is_created().then_some(self.store_id)
    }
    fn not_found() -> AppError {
        StoreError::NotFound.into()
    }
}
impl Stored for Stock {
    const SAVED_STATE: bool = true;
    fn store_of(&self) -> Option<StoreId> {
        self.tracked.then_some(self.store_id)
    }
    fn not_found() -> AppError {
        StockError::NotFound.into()
    }
}
impl Stored for Product {
    const SAVED_STATE: bool = false;
    fn store_of(&self) -> Option<StoreId> {
        self.is_created().then(|| self.store_id())
    }
    fn not_found() -> AppError {
        ProductError::NotFound.into()
    }
}
impl Stored for Order {
    const SAVED_STATE: bool = false;
    fn store_of(&self) -> Option<StoreId> {
        self.currency.is_some().then_some(self.store_id)
    }
    fn not_found() -> AppError {
        OrderError::NotFound.into()
    }
}
impl Stored for PaymentReceipt {
    const SAVED_STATE: bool = false;
    fn store_of(&self) -> Option<StoreId> {
        self.is_created().then(|| self.store_id())
    }
    fn not_found() -> AppError {
        ReceiptError::NotFound.into()
    }
}
impl Stored for Account {
    const SAVED_STATE: bool = false;
    fn store_of(&self) -> Option<StoreId> {
        None
    }
    fn not_found() -> AppError {
        AccountError::NotFound.into()
    }
}

/// One aggregate instance: its type and id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AggregateKey {
    pub aggregate_type: &'static str,
    pub id: String,
}

impl AggregateKey {
    pub fn of<A: Aggregate>(id: impl ToString) -> Self {
        Self {
            aggregate_type: A::TYPE,
            id: id.to_string(),
        }
    }
}

/// An aggregate loaded for a decision: its state (read it through `Deref`) and the version it
/// was loaded at.
#[derive(Debug)]
pub struct Loaded<A> {
    id: String,
    state: A,
    /// Sequence of the last event applied (0: the aggregate has no events).
    version: i64,
    saved: SavedRow,
}

impl<A> Loaded<A> {
    /// The state, owned.
    pub fn into_state(self) -> A {
        self.state
    }
}

impl<A> std::ops::Deref for Loaded<A> {
    type Target = A;
    fn deref(&self) -> &A {
        &self.state
    }
}

/// The saved-state row of an aggregate as it was when loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SavedRow {
    /// The type keeps no saved state.
    NotKept,
    /// No row yet: the commit inserts one.
    Missing,
    /// A row at this sequence: the commit updates it in place, if it is still there.
    At(i64),
}

/// Work the commit does in the decision's transaction besides appending events: a claim on a
/// unique key, say. It may refuse with a domain error (which aborts the whole decision).
pub type SideWrite = Box<
    dyn for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<(), AppError>> + Send + Sync,
>;

/// One decision's pending changes: events (in the order their commands ran), saved states and
/// side writes, committed together by [`UnitOfWork::commit`].
pub struct UnitOfWork<'s> {
    store: &'s EventStore,
    events: Vec<PendingEvent>,
    saved_states: Vec<PendingState>,
    side_writes: Vec<SideWrite>,
    /// Aggregate types whose commands ran, for the command counter.
    commands: Vec<&'static str>,
    /// Every aggregate loaded, at the version it was loaded at: what the decision read.
    read: Vec<(&'static str, String, i64)>,
}

struct PendingEvent {
    aggregate_type: &'static str,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: String,
}

struct PendingState {
    aggregate_type: &'static str,
    aggregate_id: String,
    row: SavedRow,
    last_sequence: i64,
    payload: String,
}

impl<'s> UnitOfWork<'s> {
    fn new(store: &'s EventStore) -> Self {
        Self {
            store,
            events: Vec::new(),
            saved_states: Vec::new(),
            side_writes: Vec::new(),
            commands: Vec::new(),
            read: Vec::new(),
        }
    }

    /// Loads aggregate `id` (the default state if it has no events).
    pub async fn load<A: Stored>(&mut self, id: impl ToString) -> Result<Loaded<A>, AppError> {
        let loaded = self.store.load::<A>(&id.to_string()).await?;
        self.read.push((A::TYPE, loaded.id.clone(), loaded.version));
        Ok(loaded)
    }

    /// Whether any aggregate this decision loaded has moved on since. A refusal decided on
    /// such a mix of old and new states (a receipt read before a rival's decision, its order
    /// after it) is not trusted: the decision runs again on fresh state.
    async fn read_moved_on(&self) -> Result<bool, AppError> {
        if self.read.is_empty() {
            return Ok(false);
        }
        let moved: bool = sqlx::query_scalar(
            "select exists (
               select 1 from unnest($1::text[], $2::text[], $3::bigint[]) as r(t, i, v)
                where exists (select 1 from events e
                               where e.aggregate_type = r.t and e.aggregate_id = r.i
                                 and e.sequence > r.v))",
        )
        .bind(self.read.iter().map(|r| r.0).collect::<Vec<_>>())
        .bind(self.read.iter().map(|r| r.1.as_str()).collect::<Vec<_>>())
        .bind(self.read.iter().map(|r| r.2).collect::<Vec<_>>())
        .fetch_one(&self.store.pool)
        .await?;
        Ok(moved)
    }

    /// Loads aggregate `id` of the caller's store: any other store's (or a missing one) is
    /// "not found", so ids of other stores cannot be probed.
    pub async fn load_in<A: Stored>(
        &mut self,
        store_id: StoreId,
        id: impl ToString,
    ) -> Result<Loaded<A>, AppError> {
        let loaded = self.load::<A>(id).await?;
        if loaded.store_of() == Some(store_id) {
            Ok(loaded)
        } else {
            Err(A::not_found())
        }
    }

    /// A new aggregate under an id this decision just minted (a UUID v7): nothing to load.
    /// Were the id taken after all, the commit's optimistic lock would refuse it.
    pub fn create<A: Stored>(&mut self, id: impl ToString) -> Loaded<A> {
        Loaded {
            id: id.to_string(),
            state: A::default(),
            version: 0,
            saved: if A::SAVED_STATE {
                SavedRow::Missing
            } else {
                SavedRow::NotKept
            },
        }
    }

    /// Runs `command` on `aggregate` with the aggregate's own rules; its events are applied to
    /// `aggregate` and kept for the commit. A refusal leaves both untouched.
    pub async fn execute<A: Stored>(
        &mut self,
        aggregate: &mut Loaded<A>,
        command: A::Command,
    ) -> Result<(), AppError>
    where
        AppError: From<A::Error>,
    {
        // The aggregate decides on a copy, so a refused command cannot leave half its events
        // applied to the state this decision goes on reading.
        let mut decided = aggregate.state.clone();
        let sink = EventSink::default();
        if let Err(refusal) = decided.handle(command, &(), &sink).await {
            super::metrics::record_command(A::TYPE, super::metrics::Outcome::Refused);
            return Err(refusal.into());
        }
        let events = sink.collect().await;
        self.commands.push(A::TYPE);
        if events.is_empty() {
            return Ok(());
        }
        aggregate.state = decided;
        for event in &events {
            aggregate.version += 1;
            self.events.push(PendingEvent {
                aggregate_type: A::TYPE,
                aggregate_id: aggregate.id.clone(),
                sequence: aggregate.version,
                event_type: event.event_type(),
                event_version: event.event_version(),
                payload: serde_json::to_string(event).map_err(internal)?,
            });
        }
        if aggregate.saved != SavedRow::NotKept {
            let payload = serde_json::to_string(&aggregate.state).map_err(internal)?;
            let pending = PendingState {
                aggregate_type: A::TYPE,
                aggregate_id: aggregate.id.clone(),
                row: aggregate.saved,
                last_sequence: aggregate.version,
                payload,
            };
            match self.saved_states.iter_mut().find(|s| {
                s.aggregate_type == pending.aggregate_type && s.aggregate_id == pending.aggregate_id
            }) {
                Some(earlier) => *earlier = pending,
                None => self.saved_states.push(pending),
            }
        }
        Ok(())
    }

    /// Adds work to the decision's transaction (runs after the events are appended).
    pub fn also(&mut self, write: SideWrite) {
        self.side_writes.push(write);
    }

    /// Commits everything in one transaction; returns the global position of the last event
    /// appended (`None` if the decision changed nothing).
    async fn commit(self, ctx: &CommandContext) -> Result<Option<i64>, Commit> {
        if self.events.is_empty() && self.side_writes.is_empty() {
            return Ok(None);
        }
        let metadata = serde_json::to_string(&ctx.metadata().to_map())
            .map_err(|e| Commit::Failed(internal(e)))?;
        let mut tx = self.store.pool.begin().await.map_err(Commit::from_sqlx)?;
        let mut position = None;
        if !self.events.is_empty() {
            // Payloads go in as jsonb: Postgres refuses what a `json` column would keep but no
            // reader could use (a `\u0000` escape: 422, not a stalled projection), and the rows
            // read back as the same normalised text postgres-es always wrote.
            let columns = EventColumns::from(&self.events);
            // The request's origin (client IP, user agent: personal data) goes beside the log,
            // not into it, in the same round trip.
            let origin = &ctx.origin;
            position = sqlx::query_scalar::<_, Option<i64>>(
                "with origin as (
                   insert into request_origins (request_id, account_id, client_ip, user_agent)
                   select $8, $9, $10, $11 where $10::text is not null or $11::text is not null
                   on conflict (request_id) do nothing),
                 appended as (
                   insert into events
                          (aggregate_type, aggregate_id, sequence, event_type, event_version,
                           payload, metadata)
                   select t, i, s, et, ev, p::jsonb, $7::jsonb
                     from unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                                 $6::text[]) as e(t, i, s, et, ev, p)
                   returning global_position)
                 select max(global_position) from appended",
            )
            .bind(&columns.types)
            .bind(&columns.ids)
            .bind(&columns.sequences)
            .bind(&columns.event_types)
            .bind(&columns.event_versions)
            .bind(&columns.payloads)
            .bind(&metadata)
            .bind(&origin.request_id)
            .bind(ctx.actor_id.map(|id| id.0))
            .bind(&origin.client_ip)
            .bind(&origin.user_agent)
            .fetch_one(&mut *tx)
            .await
            .map_err(Commit::from_sqlx)?;
        }
        write_saved_states(&mut tx, &self.saved_states).await?;
        for write in self.side_writes {
            write(&mut tx).await.map_err(Commit::Failed)?;
        }
        tx.commit().await.map_err(Commit::from_sqlx)?;
        for aggregate_type in &self.commands {
            super::metrics::record_command(aggregate_type, super::metrics::Outcome::Executed);
        }
        super::metrics::record_events(self.events.iter().map(|e| e.aggregate_type));
        Ok(position)
    }
}

/// The events of one commit as column arrays, for one `insert … select from unnest(…)`.
struct EventColumns<'e> {
    types: Vec<&'static str>,
    ids: Vec<&'e str>,
    sequences: Vec<i64>,
    event_types: Vec<&'e str>,
    event_versions: Vec<&'e str>,
    payloads: Vec<&'e str>,
}

impl<'e> From<&'e Vec<PendingEvent>> for EventColumns<'e> {
    fn from(events: &'e Vec<PendingEvent>) -> Self {
        Self {
            types: events.iter().map(|e| e.aggregate_type).collect(),
            ids: events.iter().map(|e| e.aggregate_id.as_str()).collect(),
            sequences: events.iter().map(|e| e.sequence).collect(),
            event_types: events.iter().map(|e| e.event_type.as_str()).collect(),
            event_versions: events.iter().map(|e| e.event_version.as_str()).collect(),
            payloads: events.iter().map(|e| e.payload.as_str()).collect(),
        }
    }
}

/// Inserts the saved states that had no row and updates the others in place, each only if it
/// is still at the version the decision loaded (else another writer got there first).
async fn write_saved_states(tx: &mut PgConnection, states: &[PendingState]) -> Result<(), Commit> {
    let (new, existing): (Vec<&PendingState>, Vec<&PendingState>) =
        states.iter().partition(|s| s.row == SavedRow::Missing);
    if !new.is_empty() {
        sqlx::query(
            "insert into snapshots
                    (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload)
             select t, i, s, 1, p::jsonb
               from unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) as u(t, i, s, p)",
        )
        .bind(new.iter().map(|s| s.aggregate_type).collect::<Vec<_>>())
        .bind(
            new.iter()
                .map(|s| s.aggregate_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(new.iter().map(|s| s.last_sequence).collect::<Vec<_>>())
        .bind(new.iter().map(|s| s.payload.as_str()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .map_err(Commit::from_sqlx)?;
    }
    if !existing.is_empty() {
        let expected: Vec<i64> = existing
            .iter()
            .map(|s| match s.row {
                SavedRow::At(sequence) => sequence,
                SavedRow::NotKept | SavedRow::Missing => -1,
            })
            .collect();
        let updated = sqlx::query(
            "update snapshots s
                set last_sequence = u.s, current_snapshot = s.current_snapshot + 1,
                    payload = u.p::jsonb
               from unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[])
                    as u(t, i, expected, s, p)
              where s.aggregate_type = u.t and s.aggregate_id = u.i
                and s.last_sequence = u.expected",
        )
        .bind(
            existing
                .iter()
                .map(|s| s.aggregate_type)
                .collect::<Vec<_>>(),
        )
        .bind(
            existing
                .iter()
                .map(|s| s.aggregate_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(&expected)
        .bind(existing.iter().map(|s| s.last_sequence).collect::<Vec<_>>())
        .bind(
            existing
                .iter()
                .map(|s| s.payload.as_str())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await
        .map_err(Commit::from_sqlx)?
        .rows_affected();
        if updated != existing.len() as u64 {
            return Err(Commit::Conflict);
        }
    }
    Ok(())
}

/// Why a commit did not happen.
enum Commit {
    /// Another writer changed one of the decision's aggregates first: run it again.
    Conflict,
    Failed(AppError),
}

impl Commit {
    fn from_sqlx(err: sqlx::Error) -> Self {
        // A unique violation on the event or saved-state keys is the optimistic lock.
        if let sqlx::Error::Database(db) = &err {
            if db.code().as_deref() == Some("23505")
                && matches!(db.constraint(), Some("events_pkey" | "snapshots_pkey"))
            {
                return Commit::Conflict;
            }
        }
        Commit::Failed(err.into())
    }
}

/// A use case's decision over one or more aggregates, run by [`EventStore::decide`] and retried
/// from scratch when another writer got in first. `decide` must be a pure function of what it
/// loads through the unit of work (and of `self`): no side effects outside it, since it may run
/// several times.
pub trait Decision: Sync {
    type Outcome: Send;

    /// Aggregates to queue on in this process before loading (the hot ones this decision will
    /// change); the rest rely on the optimistic lock alone.
    fn serialise_on(&self) -> Vec<AggregateKey> {
        Vec::new()
    }

    fn decide(
        &self,
        uow: &mut UnitOfWork<'_>,
    ) -> impl Future<Output = Result<Self::Outcome, AppError>> + Send;
}

/// What a committed decision produced.
#[derive(Debug)]
pub struct Decided<T> {
    pub outcome: T,
    /// Global position of the decision's last event (`None`: it changed nothing). A read
    /// model that has reached it reflects the decision.
    pub position: Option<i64>,
}

/// Loads and commits aggregates on one database.
pub struct EventStore {
    pool: PgPool,
    locks: Arc<AggregateLocks>,
}

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            locks: Arc::new(AggregateLocks::new(4096)),
        }
    }

    /// Runs `decision` and commits what it decided in one transaction, retrying on conflicts.
    pub async fn decide<D: Decision>(
        &self,
        ctx: &CommandContext,
        decision: &D,
    ) -> Result<Decided<D::Outcome>, AppError> {
        let keys = decision.serialise_on();
        let _serialised = self.locks.lock_all(&keys).await;
        let started = std::time::Instant::now();
        let mut attempt = 1;
        loop {
            let mut uow = UnitOfWork::new(self);
            let outcome = match decision.decide(&mut uow).await {
                Ok(outcome) => outcome,
                Err(refusal) if is_refusal(&refusal) && attempt < MAX_ATTEMPTS => {
                    if uow.read_moved_on().await? {
                        tracing::debug!(attempt, "refused on stale state; deciding again");
                        attempt += 1;
                        continue;
                    }
                    return Err(refusal);
                }
                Err(err) => return Err(err),
            };
            let commands = uow.commands.clone();
            match uow.commit(ctx).await {
                Ok(position) => return Ok(Decided { outcome, position }),
                Err(Commit::Conflict)
                    if attempt < MAX_ATTEMPTS && started.elapsed() < DECISION_DEADLINE =>
                {
                    tracing::debug!(attempt, "optimistic-lock conflict; deciding again");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(Commit::Conflict) => {
                    record_all(&commands, super::metrics::Outcome::Conflict);
                    return Err(AppError::Conflict {
                        aggregate: commands.first().copied().unwrap_or("aggregate"),
                        id: keys.first().map(|k| k.id.clone()).unwrap_or_default(),
                    });
                }
                Err(Commit::Failed(err)) => {
                    record_all(&commands, super::metrics::Outcome::of(&err));
                    return Err(err);
                }
            }
        }
    }

    /// The current state of aggregate `id` and the version it is at.
    pub async fn load<A: Stored>(&self, id: &str) -> Result<Loaded<A>, AppError> {
        if A::SAVED_STATE {
            self.load_saved(id).await
        } else {
            let (state, version) = self.replay(id, A::default(), 0).await?;
            Ok(Loaded {
                id: id.to_owned(),
                state,
                version,
                saved: SavedRow::NotKept,
            })
        }
    }

    /// The current states of aggregates `ids` of a type that keeps no saved state, replayed
    /// from their events in one query (the default state for an id without events), in the
    /// order of `ids`.
    pub async fn load_all<A: Stored>(&self, ids: &[String]) -> Result<Vec<A>, AppError> {
        if A::SAVED_STATE {
            let mut states = Vec::with_capacity(ids.len());
            for id in ids {
                states.push(self.load::<A>(id).await?.into_state());
            }
            return Ok(states);
        }
        let rows: Vec<(String, i64, serde_json::Value, String, String)> = sqlx::query_as(
            "select aggregate_id, sequence, payload, event_type, event_version from events
              where aggregate_type = $1 and aggregate_id = any($2)
              order by aggregate_id, sequence",
        )
        .bind(A::TYPE)
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        let mut states: std::collections::HashMap<String, A> = std::collections::HashMap::new();
        for (id, sequence, payload, event_type, event_version) in rows {
            let event = decode_event::<A>(payload, &event_type, &event_version, sequence)?;
            states.entry(id).or_default().apply(event);
        }
        Ok(ids
            .iter()
            .map(|id| states.get(id).cloned().unwrap_or_default())
            .collect())
    }

    /// The state of aggregate `id` replayed from all its events, whatever its saved state says
    /// (to check a saved state, or as a benchmark's baseline).
    pub async fn load_from_events<A: Stored>(&self, id: &str) -> Result<A, AppError> {
        Ok(self.replay(id, A::default(), 0).await?.0)
    }

    /// Saved state plus any newer events, in one round trip. A saved state this build cannot
    /// read (its shape changed) is rebuilt from all the events and written back in place by
    /// the next commit: never a second row.
    async fn load_saved<A: Stored>(&self, id: &str) -> Result<Loaded<A>, AppError> {
        let rows: Vec<(bool, i64, serde_json::Value, String, String)> = sqlx::query_as(
            "select * from (
               select true as saved, last_sequence as sequence, payload,
                      '' as event_type, '' as event_version from snapshots
                where aggregate_type = $1 and aggregate_id = $2
               union all
               select false, sequence, payload, event_type, event_version from events
                where aggregate_type = $1 and aggregate_id = $2
                  and sequence > coalesce((select max(last_sequence) from snapshots
                                            where aggregate_type = $1 and aggregate_id = $2), 0)
             ) rows order by saved desc, sequence",
        )
        .bind(A::TYPE)
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let mut rows = rows.into_iter().peekable();
        let saved = rows.next_if(|(is_state, ..)| *is_state);
        let (mut state, mut version, saved_row) = match saved {
            None => (A::default(), 0, SavedRow::Missing),
            Some((_, last_sequence, payload, ..)) => match serde_json::from_value::<A>(payload) {
                Ok(state) => (state, last_sequence, SavedRow::At(last_sequence)),
                Err(err) => {
                    tracing::warn!(
                        aggregate = A::TYPE, id, error = %err,
                        "saved state cannot be read; rebuilding it from the events"
                    );
                    let (state, version) = self.replay(id, A::default(), 0).await?;
                    self.rewrite_saved_state(id, &state, last_sequence, version)
                        .await?;
                    return Ok(Loaded {
                        id: id.to_owned(),
                        state,
                        version,
                        saved: SavedRow::At(version),
                    });
                }
            },
        };
        for (_, sequence, payload, event_type, event_version) in rows {
            state.apply(decode_event::<A>(
                payload,
                &event_type,
                &event_version,
                sequence,
            )?);
            version = sequence;
        }
        Ok(Loaded {
            id: id.to_owned(),
            state,
            version,
            saved: saved_row,
        })
    }

    /// Replaces an unreadable saved state, in place, by one rebuilt from the events, unless
    /// another writer replaced it first (then theirs stands and a commit on this load conflicts
    /// and reloads).
    async fn rewrite_saved_state<A: Stored>(
        &self,
        id: &str,
        state: &A,
        was_at: i64,
        now_at: i64,
    ) -> Result<(), AppError> {
        let payload = serde_json::to_string(state).map_err(internal)?;
        sqlx::query(
            "update snapshots
                set last_sequence = $4, current_snapshot = current_snapshot + 1,
                    payload = $5::jsonb
              where aggregate_type = $1 and aggregate_id = $2 and last_sequence = $3",
        )
        .bind(A::TYPE)
        .bind(id)
        .bind(was_at)
        .bind(now_at)
        .bind(payload)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Applies the events of `id` after `version` to `state`.
    async fn replay<A: Stored>(
        &self,
        id: &str,
        mut state: A,
        mut version: i64,
    ) -> Result<(A, i64), AppError> {
        let rows: Vec<(i64, serde_json::Value, String, String)> = sqlx::query_as(
            "select sequence, payload, event_type, event_version from events
              where aggregate_type = $1 and aggregate_id = $2 and sequence > $3
              order by sequence",
        )
        .bind(A::TYPE)
        .bind(id)
        .bind(version)
        .fetch_all(&self.pool)
        .await?;
        for (sequence, payload, event_type, event_version) in rows {
            state.apply(decode_event::<A>(
                payload,
                &event_type,
                &event_version,
                sequence,
            )?);
            version = sequence;
        }
        Ok((state, version))
    }

    /// The state of aggregate `id` after its events up to sequence `up_to` and recorded at or
    /// before `until` (each `None`: no bound): replayed from its first event through the same
    /// upcasters and `apply` as every load, never from a saved state. An aggregate's events are
    /// recorded in sequence order (each is decided on the committed one before), so either bound
    /// cuts its history at one version.
    pub async fn replay_until<A: Stored>(
        &self,
        id: &str,
        up_to: Option<i64>,
        until: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Replayed<A>, AppError> {
        let rows: Vec<(
            i64,
            serde_json::Value,
            String,
            String,
            chrono::DateTime<chrono::Utc>,
        )> = sqlx::query_as(
            "select sequence, payload, event_type, event_version, recorded_at from events
                  where aggregate_type = $1 and aggregate_id = $2
                    and ($3::bigint is null or sequence <= $3)
                    and ($4::timestamptz is null or recorded_at <= $4)
                  order by sequence",
        )
        .bind(A::TYPE)
        .bind(id)
        .bind(up_to)
        .bind(until)
        .fetch_all(&self.pool)
        .await?;
        let latest: Option<i64> = sqlx::query_scalar(
            "select max(sequence) from events where aggregate_type = $1 and aggregate_id = $2",
        )
        .bind(A::TYPE)
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        let mut replayed = Replayed {
            state: A::default(),
            version: 0,
            recorded_at: None,
            latest_version: latest.unwrap_or(0),
        };
        for (sequence, payload, event_type, event_version, recorded_at) in rows {
            replayed.state.apply(decode_event::<A>(
                payload,
                &event_type,
                &event_version,
                sequence,
            )?);
            replayed.version = sequence;
            replayed.recorded_at = Some(recorded_at);
        }
        Ok(replayed)
    }

    /// Writes the saved state of every aggregate of type `A` whose events exist without one,
    /// by replaying its events once. Needed when events are restored or written without the
    /// `snapshots` table. Returns how many were repaired.
    pub async fn repair_saved_states<A: Stored>(&self) -> Result<usize, AppError> {
        if !A::SAVED_STATE {
            return Ok(0);
        }
        let missing: Vec<String> = sqlx::query_scalar(
            "select distinct e.aggregate_id from events e
              where e.aggregate_type = $1
                and not exists (select 1 from snapshots s
                                 where s.aggregate_type = $1 and s.aggregate_id = e.aggregate_id)",
        )
        .bind(A::TYPE)
        .fetch_all(&self.pool)
        .await?;
        for id in &missing {
            let _serialised = self.locks.lock_all(&[AggregateKey::of::<A>(id)]).await;
            let (state, version) = self.replay(id, A::default(), 0).await?;
            let payload = serde_json::to_string(&state).map_err(internal)?;
            sqlx::query(
                "insert into snapshots
                        (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload)
                 values ($1, $2, $3, 1, $4::jsonb) on conflict do nothing",
            )
            .bind(A::TYPE)
            .bind(id)
            .bind(version)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        }
        if !missing.is_empty() {
            tracing::warn!(
                aggregate = A::TYPE,
                repaired = missing.len(),
                "saved aggregate states were missing; rebuilt from events"
            );
        }
        Ok(missing.len())
    }
}

/// An aggregate's state at a point of its history ([`EventStore::replay_until`]).
#[derive(Debug)]
pub struct Replayed<A> {
    pub state: A,
    /// Sequence of the last event applied (0: none was).
    pub version: i64,
    /// When the last event applied was recorded.
    pub recorded_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Sequence of the aggregate's last event now (0: it has none).
    pub latest_version: i64,
}

/// An event as stored, brought to its current shape by its upcaster (older versions) first.
fn decode_event<A: Aggregate>(
    payload: serde_json::Value,
    event_type: &str,
    event_version: &str,
    sequence: i64,
) -> Result<A::Event, AppError> {
    let payload =
        aggregates::upcast(A::TYPE, event_type, event_version, payload).map_err(|err| {
            AppError::Internal(
                format!(
                    "{} event {sequence} ({event_type} {event_version}) cannot be read by this build: {err}",
                    A::TYPE
                )
                .into(),
            )
        })?;
    serde_json::from_value(payload).map_err(|err| {
        AppError::Internal(
            format!(
                "{} event {sequence} cannot be read by this build: {err}",
                A::TYPE
            )
            .into(),
        )
    })
}

fn internal(err: serde_json::Error) -> AppError {
    AppError::Internal(Box::new(err))
}

/// Whether `err` is a rule saying no (rather than infrastructure failing).
fn is_refusal(err: &AppError) -> bool {
    !matches!(
        err,
        AppError::Unavailable(_) | AppError::Internal(_) | AppError::Conflict { .. }
    )
}

fn record_all(commands: &[&'static str], outcome: super::metrics::Outcome) {
    for aggregate_type in commands {
        super::metrics::record_command(aggregate_type, outcome);
    }
}

/// Exponential backoff with full jitter, from up to 1 ms to at most 16 ms. Kept short: the usual
/// rival is one other instance whose next decision is already in flight, and a long sleep would
/// hand it every round; the jitter breaks lockstep.
fn backoff(attempt: u32) -> Duration {
    let ceiling_ms = 2u64.saturating_pow(attempt.saturating_sub(1).min(4));
    Duration::from_micros(100 + rand::random::<u64>() % (ceiling_ms * 1000))
}

/// Striped in-process locks, one stripe per aggregate (modulo collisions).
///
/// Decisions on one hot aggregate from this process run one at a time, so they never conflict
/// with each other: a product's 1,000 concurrent reservations become a queue instead of 1,000
/// optimistic-lock failures. A decision takes all its stripes at once, in stripe order, and
/// holds them only while it runs, so two decisions can never wait on each other in a cycle.
pub struct AggregateLocks {
    stripes: Vec<Mutex<()>>,
}

impl AggregateLocks {
    pub fn new(stripes: usize) -> Self {
        Self {
            stripes: (0..stripes.max(1)).map(|_| Mutex::new(())).collect(),
        }
    }

    async fn lock_all(&self, keys: &[AggregateKey]) -> Vec<MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = keys
            .iter()
            .map(|key| {
                let mut hasher = DefaultHasher::new();
                (key.aggregate_type, &key.id).hash(&mut hasher);
                (hasher.finish() % self.stripes.len() as u64) as usize
            })
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for stripe in stripes {
            guards.push(self.stripes[stripe].lock().await);
        }
        guards
    }
}
