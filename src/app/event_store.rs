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
//!    commands ran and with its decision's metadata, writes every changed saved state, and runs the
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
//!
//! Decisions that queue on exactly the same stripes can be *folded*
//! ([`EventStore::decide_folded`], docs/adr/0010-command-folding.md): the next to run takes
//! the waiting ones with it, loads their aggregates once, decides each in turn on the state its
//! predecessors left (a refused one is rolled back and answered with its refusal), and commits
//! all the accepted ones in one transaction, each event with its own decision's metadata. A
//! hot product then costs one load and one commit per batch instead of per order.

use std::any::Any;
use std::borrow::{Borrow, Cow};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
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
use tokio::sync::{oneshot, Mutex, MutexGuard};

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

/// The pending changes of one decision, or of several folded into one commit
/// ([`EventStore::decide_folded`]): events (in the order their commands ran, each tagged with
/// the decision that made it), the current state of every aggregate touched, and side writes,
/// committed together by [`UnitOfWork::commit`].
///
/// Folded decisions run one after another on the same unit of work: a decision that loads an
/// aggregate an earlier one loaded or changed gets that state, with its events, not the
/// database's (so the later one sees its predecessors' reservations). A refused decision is
/// rolled back ([`UnitOfWork::roll_back`]) and leaves no trace for the ones after it.
pub struct UnitOfWork<'s> {
    store: &'s EventStore,
    /// The decision deciding now: its index in the commit's list of decisions.
    decision: usize,
    events: Vec<PendingEvent>,
    side_writes: Vec<SideWrite>,
    /// Aggregate types whose commands ran, by decision, for the command counter.
    commands: Vec<(usize, &'static str)>,
    /// Every aggregate loaded, by decision, at the version the database had it at when it was
    /// first loaded: what each decision read.
    read: Vec<Read>,
    /// The current state of every aggregate loaded or changed, in a canonical (type, id) order
    /// so concurrent commits write saved states in one order.
    current: BTreeMap<(&'static str, String), Current>,
    /// Where the deciding decision began: what [`UnitOfWork::roll_back`] goes back to.
    mark: Mark,
}

struct Read {
    decision: usize,
    aggregate_type: &'static str,
    aggregate_id: String,
    version: i64,
}

struct PendingEvent {
    decision: usize,
    aggregate_type: &'static str,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: String,
}

/// An aggregate as the decisions so far left it.
struct Current {
    state: Box<dyn Any + Send + Sync>,
    version: i64,
    /// The version it had in the database (0: created here): changed when `version` is past it.
    base: i64,
    saved: SavedRow,
    /// Serialises `state` (of the type it was made for) as its saved state.
    to_json: fn(&(dyn Any + Send + Sync)) -> Result<String, AppError>,
}

#[derive(Default)]
struct Mark {
    events: usize,
    side_writes: usize,
    commands: usize,
    /// The states the deciding decision replaced (`None`: it added one), oldest first.
    replaced: Vec<((&'static str, String), Option<Current>)>,
}

fn state_json<A: Stored>(state: &(dyn Any + Send + Sync)) -> Result<String, AppError> {
    let state = state
        .downcast_ref::<A>()
        .ok_or_else(|| AppError::Internal(format!("a {} state of another type", A::TYPE).into()))?;
    serde_json::to_string(state).map_err(internal)
}

impl<'s> UnitOfWork<'s> {
    fn new(store: &'s EventStore) -> Self {
        Self {
            store,
            decision: 0,
            events: Vec::new(),
            side_writes: Vec::new(),
            commands: Vec::new(),
            read: Vec::new(),
            current: BTreeMap::new(),
            mark: Mark::default(),
        }
    }

    /// Loads aggregate `id` (the default state if it has no events): the state an earlier
    /// decision of this unit of work left it in, or the database's.
    pub async fn load<A: Stored>(&mut self, id: impl ToString) -> Result<Loaded<A>, AppError> {
        let key = (A::TYPE, id.to_string());
        if let Some(current) = self.current.get(&key) {
            let state = current.state.downcast_ref::<A>().ok_or_else(|| {
                AppError::Internal(format!("{} {} loaded as another type", A::TYPE, key.1).into())
            })?;
            self.read.push(Read {
                decision: self.decision,
                aggregate_type: A::TYPE,
                aggregate_id: key.1.clone(),
                version: current.base,
            });
            return Ok(Loaded {
                id: key.1,
                state: state.clone(),
                version: current.version,
                saved: current.saved,
            });
        }
        let loaded = self.store.load::<A>(&key.1).await?;
        self.read.push(Read {
            decision: self.decision,
            aggregate_type: A::TYPE,
            aggregate_id: loaded.id.clone(),
            version: loaded.version,
        });
        // Kept for a later decision of this unit of work; never replaced by a roll-back (it is
        // the database's state, which no decision here changed).
        self.current.insert(
            key,
            Current {
                state: Box::new(loaded.state.clone()),
                version: loaded.version,
                base: loaded.version,
                saved: loaded.saved,
                to_json: state_json::<A>,
            },
        );
        Ok(loaded)
    }

    /// Whether any aggregate one of `decisions` loaded has moved on in the database since. A
    /// refusal decided on such a mix of old and new states (a receipt read before a rival's
    /// decision, its order after it) is not trusted: the decision runs again on fresh state.
    async fn read_moved_on(&self, decisions: &[usize]) -> Result<bool, AppError> {
        let read: Vec<&Read> = self
            .read
            .iter()
            .filter(|r| decisions.contains(&r.decision))
            .collect();
        if read.is_empty() {
            return Ok(false);
        }
        let moved: bool = sqlx::query_scalar(
            "select exists (
               select 1 from unnest($1::text[], $2::text[], $3::bigint[]) as r(t, i, v)
                where exists (select 1 from events e
                               where e.aggregate_type = r.t and e.aggregate_id = r.i
                                 and e.sequence > r.v))",
        )
        .bind(read.iter().map(|r| r.aggregate_type).collect::<Vec<_>>())
        .bind(
            read.iter()
                .map(|r| r.aggregate_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(read.iter().map(|r| r.version).collect::<Vec<_>>())
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
        self.commands.push((self.decision, A::TYPE));
        if events.is_empty() {
            return Ok(());
        }
        let before = aggregate.version;
        aggregate.state = decided;
        for event in &events {
            aggregate.version += 1;
            self.events.push(PendingEvent {
                decision: self.decision,
                aggregate_type: A::TYPE,
                aggregate_id: aggregate.id.clone(),
                sequence: aggregate.version,
                event_type: event.event_type(),
                event_version: event.event_version(),
                payload: serde_json::to_string(event).map_err(internal)?,
            });
        }
        // The state the next command (of this decision or a later one) starts from, and the
        // saved state the commit writes (serialised once, whatever the number of commands).
        let key = (A::TYPE, aggregate.id.clone());
        let base = self.current.get(&key).map_or(before, |c| c.base);
        let replaced = self.current.insert(
            key.clone(),
            Current {
                state: Box::new(aggregate.state.clone()),
                version: aggregate.version,
                base,
                saved: aggregate.saved,
                to_json: state_json::<A>,
            },
        );
        self.mark.replaced.push((key, replaced));
        Ok(())
    }

    /// Adds work to the decision's transaction (runs after the events are appended).
    pub fn also(&mut self, write: SideWrite) {
        self.side_writes.push(write);
    }

    /// Starts decision `decision` of a fold: what it adds is its own from here on, and is
    /// taken back by [`UnitOfWork::roll_back`] if it is refused.
    fn begin(&mut self, decision: usize) {
        self.decision = decision;
        self.mark = Mark {
            events: self.events.len(),
            side_writes: self.side_writes.len(),
            commands: self.commands.len(),
            replaced: Vec::new(),
        };
    }

    /// Takes back everything the deciding decision added: its events, side writes, commands
    /// and the states it changed (what it loaded stays: it is the database's state).
    fn roll_back(&mut self) {
        self.events.truncate(self.mark.events);
        self.side_writes.truncate(self.mark.side_writes);
        self.commands.truncate(self.mark.commands);
        while let Some((key, replaced)) = self.mark.replaced.pop() {
            match replaced {
                Some(earlier) => self.current.insert(key, earlier),
                None => self.current.remove(&key),
            };
        }
    }

    /// Aggregate types whose commands `decision` ran.
    fn commands_of(&self, decision: usize) -> Vec<&'static str> {
        self.commands
            .iter()
            .filter(|(d, _)| *d == decision)
            .map(|(_, t)| *t)
            .collect()
    }

    /// Commits everything in one transaction, each event with the metadata of the decision
    /// that made it (`decisions`, by index); returns, for each decision, the global position
    /// of its last event appended (`None` if it changed nothing).
    async fn commit(self, decisions: &[Meta<'_>]) -> Result<Vec<Option<i64>>, Commit> {
        let mut positions = vec![None; decisions.len()];
        if self.events.is_empty() && self.side_writes.is_empty() {
            return Ok(positions);
        }
        let mut saved_states = Vec::new();
        for ((aggregate_type, aggregate_id), current) in &self.current {
            if current.saved != SavedRow::NotKept && current.version > current.base {
                saved_states.push(PendingState {
                    aggregate_type,
                    aggregate_id,
                    row: current.saved,
                    last_sequence: current.version,
                    payload: (current.to_json)(current.state.as_ref()).map_err(Commit::Failed)?,
                });
            }
        }
        let mut tx = self.store.pool.begin().await.map_err(Commit::from_sqlx)?;
        if !self.events.is_empty() {
            // Payloads go in as jsonb: Postgres refuses what a `json` column would keep but no
            // reader could use (a `\u0000` escape: 422, not a stalled projection), and the rows
            // read back as the same normalised text postgres-es always wrote.
            let columns = EventColumns::from(&self.events);
            // Each request's origin (client IP, user agent: personal data) goes beside the
            // log, not into it, in the same round trip: one row per decision that appended.
            let mut appended = vec![false; decisions.len()];
            for event in &self.events {
                appended[event.decision] = true;
            }
            let origins: Vec<&Meta> = decisions
                .iter()
                .zip(&appended)
                .filter(|(_, appended)| **appended)
                .map(|(meta, _)| meta)
                .collect();
            let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
                "with origin as (
                   insert into request_origins (request_id, account_id, client_ip, user_agent)
                   select r, a, ip, ua
                     from unnest($9::text[], $10::uuid[], $11::text[], $12::text[])
                          as o(r, a, ip, ua)
                    where ip is not null or ua is not null
                   on conflict (request_id) do nothing),
                 appended as (
                   insert into events
                          (aggregate_type, aggregate_id, sequence, event_type, event_version,
                           payload, metadata)
                   select t, i, s, et, ev, p::jsonb, ($8::text[])[d]::jsonb
                     from unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                                 $6::text[], $7::int[]) with ordinality
                          as e(t, i, s, et, ev, p, d, n)
                    order by n
                   returning aggregate_type, aggregate_id, sequence, global_position)
                 select aggregate_type, aggregate_id, sequence, global_position from appended",
            )
            .bind(&columns.types)
            .bind(&columns.ids)
            .bind(&columns.sequences)
            .bind(&columns.event_types)
            .bind(&columns.event_versions)
            .bind(&columns.payloads)
            .bind(&columns.decisions)
            .bind(
                decisions
                    .iter()
                    .map(|m| m.metadata.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(origins.iter().map(|m| m.request_id).collect::<Vec<_>>())
            .bind(origins.iter().map(|m| m.account_id).collect::<Vec<_>>())
            .bind(origins.iter().map(|m| m.client_ip).collect::<Vec<_>>())
            .bind(origins.iter().map(|m| m.user_agent).collect::<Vec<_>>())
            .fetch_all(&mut *tx)
            .await
            .map_err(Commit::from_sqlx)?;
            let decision_of: HashMap<(&str, &str, i64), usize> = self
                .events
                .iter()
                .map(|e| {
                    (
                        (e.aggregate_type, e.aggregate_id.as_str(), e.sequence),
                        e.decision,
                    )
                })
                .collect();
            for (aggregate_type, aggregate_id, sequence, position) in &rows {
                let decision = decision_of
                    .get(&(aggregate_type.as_str(), aggregate_id.as_str(), *sequence))
                    .copied()
                    .ok_or_else(|| {
                        Commit::Failed(AppError::Internal(
                            "an appended event that no decision made".into(),
                        ))
                    })?;
                let last = &mut positions[decision];
                *last = Some(last.map_or(*position, |p: i64| p.max(*position)));
            }
        }
        write_saved_states(&mut tx, &saved_states).await?;
        for write in self.side_writes {
            write(&mut tx).await.map_err(Commit::Failed)?;
        }
        tx.commit().await.map_err(Commit::from_sqlx)?;
        for (_, aggregate_type) in &self.commands {
            super::metrics::record_command(aggregate_type, super::metrics::Outcome::Executed);
        }
        super::metrics::record_events(self.events.iter().map(|e| e.aggregate_type));
        Ok(positions)
    }
}

/// What one decision's events carry (its request's metadata) and what its origin row says.
struct Meta<'c> {
    metadata: String,
    request_id: &'c str,
    account_id: Option<uuid::Uuid>,
    client_ip: Option<&'c str>,
    user_agent: Option<&'c str>,
}

impl<'c> Meta<'c> {
    fn of(ctx: &'c CommandContext) -> Result<Self, AppError> {
        Ok(Self {
            metadata: serde_json::to_string(&ctx.metadata().to_map()).map_err(internal)?,
            request_id: &ctx.origin.request_id,
            account_id: ctx.actor_id.map(|id| id.0),
            client_ip: ctx.origin.client_ip.as_deref(),
            user_agent: ctx.origin.user_agent.as_deref(),
        })
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
    /// The decision of each event, 1-based (Postgres arrays are), for its metadata.
    decisions: Vec<i32>,
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
            decisions: events.iter().map(|e| e.decision as i32 + 1).collect(),
        }
    }
}

/// A saved state the commit writes.
struct PendingState<'u> {
    aggregate_type: &'static str,
    aggregate_id: &'u str,
    row: SavedRow,
    last_sequence: i64,
    payload: String,
}

/// Inserts the saved states that had no row and updates the others in place, each only if it
/// is still at the version the decision loaded (else another writer got there first).
async fn write_saved_states(
    tx: &mut PgConnection,
    states: &[PendingState<'_>],
) -> Result<(), Commit> {
    let (new, existing): (Vec<&PendingState<'_>>, Vec<&PendingState<'_>>) =
        states.iter().partition(|s| s.row == SavedRow::Missing);
    if !new.is_empty() {
        sqlx::query(
            "insert into snapshots
                    (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload)
             select t, i, s, 1, p::jsonb
               from unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) as u(t, i, s, p)",
        )
        .bind(new.iter().map(|s| s.aggregate_type).collect::<Vec<_>>())
        .bind(new.iter().map(|s| s.aggregate_id).collect::<Vec<_>>())
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
        .bind(existing.iter().map(|s| s.aggregate_id).collect::<Vec<_>>())
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

/// At most this many queued decisions are folded into one commit
/// (docs/adr/0010-command-folding.md): enough that a hot product's commits carry a few dozen
/// orders each, few enough that one batch's decisions (run one after another on one core) and
/// its insert stay in the low milliseconds.
pub const FOLD_LIMIT: usize = 128;

/// Loads and commits aggregates on one database.
#[derive(Clone)]
pub struct EventStore {
    pool: PgPool,
    locks: Arc<AggregateLocks>,
    /// Decisions waiting to be folded, by the stripes they queue on.
    lanes: Arc<Lanes>,
}

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            locks: Arc::new(AggregateLocks::new(4096)),
            lanes: Arc::new(Lanes::default()),
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
        let mut job = Pending::here(decision, ctx, keys);
        let mut jobs: [&mut dyn Job; 1] = [&mut job];
        self.run(&mut jobs).await;
        job.answer()
    }

    /// How many decisions wait in this process to be folded behind a running one (changes as
    /// they queue and as batches take them).
    pub fn queued(&self) -> tokio::sync::watch::Receiver<usize> {
        self.lanes.queued.subscribe()
    }

    /// [`EventStore::decide`], folded with the decisions queued on the same aggregates
    /// (docs/adr/0010-command-folding.md): when another decision of this process holds their
    /// locks, this one waits in their lane instead, and whoever runs next takes up to
    /// [`FOLD_LIMIT`] waiting decisions with it: one load of each aggregate, each decision in
    /// turn on the state its predecessors left (a refused one is rolled back and answered with
    /// its refusal), and one commit of all the accepted ones, each event with its own
    /// decision's metadata. A conflict decides them all again on fresh state; a failed commit
    /// fails every one of them (none is reported done that was not committed).
    ///
    /// When nothing is queued, the caller runs its decision itself, exactly as `decide` does.
    /// The decisions that queue behind it run in a task of their own, so a caller that goes
    /// away never takes its followers' answers with it.
    pub async fn decide_folded<D>(
        &self,
        ctx: &CommandContext,
        decision: D,
    ) -> Result<Decided<D::Outcome>, AppError>
    where
        D: Decision + Send + 'static,
        D::Outcome: 'static,
    {
        let keys = decision.serialise_on();
        let stripes = self.locks.stripes_of(&keys);
        if stripes.is_empty() {
            return self.decide(ctx, &decision).await;
        }
        let waiting = {
            let mut lanes = self.lanes.lock();
            match lanes.get_mut(&stripes) {
                Some(queue) => {
                    let (reply, answer) = oneshot::channel();
                    queue.push_back(Box::new(Pending::there(decision, ctx, keys, reply)));
                    self.lanes.publish(&lanes);
                    Err(answer)
                }
                None => {
                    lanes.insert(stripes.clone(), VecDeque::new());
                    Ok((decision, keys))
                }
            }
        };
        match waiting {
            Err(answer) => answer.await.unwrap_or_else(|_| {
                Err(AppError::Internal(
                    "the batch this decision was folded into ended without an answer".into(),
                ))
            }),
            Ok((decision, keys)) => {
                // This caller leads the lane: whatever queues behind it is handed to a task
                // when it is done (or dropped).
                let _lead = Lead {
                    store: self,
                    stripes: stripes.clone(),
                };
                let _serialised = self.locks.lock_stripes(&stripes).await;
                let mut job = Pending::here(&decision, ctx, keys);
                let mut jobs: [&mut dyn Job; 1] = [&mut job];
                self.run(&mut jobs).await;
                job.answer()
            }
        }
    }

    /// Runs the decisions queued in the lane of `stripes`, a batch at a time, until it is
    /// empty; then the lane closes ([`Lead`]'s drop).
    async fn drain(self, stripes: Vec<usize>) {
        let _lead = Lead {
            store: &self,
            stripes: stripes.clone(),
        };
        loop {
            let _serialised = self.locks.lock_stripes(&stripes).await;
            // Taken once the locks are held, so what queued meanwhile rides along.
            let mut batch: Vec<Box<dyn Job>> = {
                let mut lanes = self.lanes.lock();
                let Some(queue) = lanes.get_mut(&stripes) else {
                    return;
                };
                let mut batch = Vec::with_capacity(queue.len().min(FOLD_LIMIT));
                while batch.len() < FOLD_LIMIT {
                    match queue.pop_front() {
                        // A caller that went away before its turn is not decided for.
                        Some(job) if job.abandoned() => {}
                        Some(job) => batch.push(job),
                        None => break,
                    }
                }
                self.lanes.publish(&lanes);
                batch
            };
            if batch.is_empty() {
                return;
            }
            let mut jobs: Vec<&mut (dyn Job + 'static)> =
                batch.iter_mut().map(|job| &mut **job).collect();
            self.run(&mut jobs).await;
        }
    }

    /// Decides `jobs` one after another on one unit of work and commits the accepted ones in
    /// one transaction, retrying on conflicts; answers every job. One job is exactly the
    /// decision-at-a-time path of ADR 0005.
    async fn run(&self, jobs: &mut [&mut (dyn Job + '_)]) {
        // Groups of jobs committed together: all of them, unless a commit fails for one
        // decision's input (a value Postgres refuses, a side write's refusal), when each is
        // committed alone so the others do not pay for it.
        let mut groups = vec![(0..jobs.len()).collect::<Vec<_>>()];
        while let Some(group) = groups.pop() {
            if let Some(alone) = self.run_group(jobs, group).await {
                groups.extend(alone.into_iter().rev().map(|job| vec![job]));
            }
        }
    }

    /// One group of [`EventStore::run`]; returns the jobs still unanswered when the group
    /// must be split.
    async fn run_group(
        &self,
        jobs: &mut [&mut (dyn Job + '_)],
        mut live: Vec<usize>,
    ) -> Option<Vec<usize>> {
        let started = std::time::Instant::now();
        let mut attempt = 1;
        while !live.is_empty() {
            let mut uow = UnitOfWork::new(self);
            // What each job (by its place in `live`: its decision index in the commit) decided.
            let mut verdicts = Vec::with_capacity(live.len());
            for (decision, &job) in live.iter().enumerate() {
                uow.begin(decision);
                verdicts.push(match jobs[job].decide(&mut uow).await {
                    Ok(()) => Verdict::Accepted,
                    Err(refusal) if is_refusal(&refusal) => {
                        uow.roll_back();
                        Verdict::Refused(refusal)
                    }
                    // The infrastructure failing while this job decided is its answer at
                    // once; rolled back, it leaves the others' states as they were.
                    Err(err) => {
                        uow.roll_back();
                        jobs[job].finish(Err(err));
                        Verdict::Answered
                    }
                });
            }
            let refused: Vec<usize> = (0..live.len())
                .filter(|&d| matches!(verdicts[d], Verdict::Refused(_)))
                .collect();
            if !refused.is_empty() && attempt < MAX_ATTEMPTS {
                match uow.read_moved_on(&refused).await {
                    Ok(true) => {
                        tracing::debug!(attempt, "refused on stale state; deciding again");
                        live = unanswered(&live, &verdicts);
                        attempt += 1;
                        continue;
                    }
                    Ok(false) => {}
                    Err(err) => {
                        finish_all(jobs, &unanswered(&live, &verdicts), err);
                        return None;
                    }
                }
            }
            let commands: Vec<Vec<&'static str>> =
                (0..live.len()).map(|d| uow.commands_of(d)).collect();
            let metas: Result<Vec<Meta>, AppError> = live
                .iter()
                .map(|&job| Meta::of(jobs[job].context()))
                .collect();
            let committed = match metas {
                Ok(metas) => uow.commit(&metas).await,
                Err(err) => Err(Commit::Failed(err)),
            };
            match committed {
                Ok(positions) => {
                    for ((&job, verdict), position) in live.iter().zip(verdicts).zip(positions) {
                        match verdict {
                            Verdict::Accepted => jobs[job].finish(Ok(position)),
                            Verdict::Refused(refusal) => jobs[job].finish(Err(refusal)),
                            Verdict::Answered => {}
                        }
                    }
                    return None;
                }
                Err(Commit::Conflict)
                    if attempt < MAX_ATTEMPTS && started.elapsed() < DECISION_DEADLINE =>
                {
                    tracing::debug!(attempt, "optimistic-lock conflict; deciding again");
                    live = unanswered(&live, &verdicts);
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(Commit::Conflict) => {
                    for (decision, &job) in live.iter().enumerate() {
                        if matches!(verdicts[decision], Verdict::Answered) {
                            continue;
                        }
                        record_all(&commands[decision], super::metrics::Outcome::Conflict);
                        let conflict = AppError::Conflict {
                            aggregate: commands[decision].first().copied().unwrap_or("aggregate"),
                            id: jobs[job]
                                .keys()
                                .first()
                                .map(|k| k.id.clone())
                                .unwrap_or_default(),
                        };
                        jobs[job].finish(Err(conflict));
                    }
                    return None;
                }
                Err(Commit::Failed(err)) => {
                    let left = unanswered(&live, &verdicts);
                    if left.len() > 1 && is_refusal(&err) {
                        tracing::debug!(error = %err, "a folded commit was refused; committing each alone");
                        return Some(left);
                    }
                    for commands in &commands {
                        record_all(commands, super::metrics::Outcome::of(&err));
                    }
                    finish_all(jobs, &left, err);
                    return None;
                }
            }
        }
        None
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

/// What one job of a fold decided, in one attempt.
enum Verdict {
    Accepted,
    /// Refused by a rule: the answer if the fold commits (a conflict decides it again).
    Refused(AppError),
    /// Failed and already answered.
    Answered,
}

/// The jobs of `live` not answered yet.
fn unanswered(live: &[usize], verdicts: &[Verdict]) -> Vec<usize> {
    live.iter()
        .zip(verdicts)
        .filter(|(_, verdict)| !matches!(verdict, Verdict::Answered))
        .map(|(&job, _)| job)
        .collect()
}

/// Answers every job of `which` with `err` (the first with the error itself, the others with
/// an error of the same kind and message: they all failed for the same reason).
fn finish_all(jobs: &mut [&mut (dyn Job + '_)], which: &[usize], err: AppError) {
    let mut err = Some(err);
    for (n, &job) in which.iter().enumerate().rev() {
        let this = if n == 0 {
            err.take()
        } else {
            err.as_ref().map(same_failure)
        };
        if let Some(this) = this {
            jobs[job].finish(Err(this));
        }
    }
}

/// An error of the kind of `err` with its message, for another caller of the same fold.
fn same_failure(err: &AppError) -> AppError {
    match err {
        AppError::Unavailable(source) => AppError::Unavailable(source.to_string().into()),
        AppError::Conflict { aggregate, id } => AppError::Conflict {
            aggregate,
            id: id.clone(),
        },
        AppError::InvalidValue(message) => AppError::InvalidValue(message.clone()),
        other => AppError::Internal(other.to_string().into()),
    }
}

/// A decision with its caller's context, as [`EventStore::run`] decides it: one type for a
/// caller's own decision and for one queued in a lane.
trait Job: Send {
    /// Runs the decision on `uow`, keeping its outcome for the answer.
    fn decide<'a, 's: 'a>(
        &'a mut self,
        uow: &'a mut UnitOfWork<'s>,
    ) -> BoxFuture<'a, Result<(), AppError>>;
    fn context(&self) -> &CommandContext;
    /// The aggregates it queued on (the first names it in a conflict).
    fn keys(&self) -> &[AggregateKey];
    /// Whether nobody waits for its answer any more.
    fn abandoned(&self) -> bool;
    /// Answers the caller: the global position of its last event, or why not.
    fn finish(&mut self, result: Result<Option<i64>, AppError>);
}

type Answer<T> = Result<Decided<T>, AppError>;

/// A decision (`H`: borrowed from its caller, or owned by its lane) with its caller's context
/// and the way its answer goes back.
struct Pending<'d, D: Decision, H> {
    decision: H,
    ctx: Cow<'d, CommandContext>,
    keys: Vec<AggregateKey>,
    /// The outcome of the last time it decided.
    outcome: Option<D::Outcome>,
    reply: Reply<D::Outcome>,
    of: PhantomData<fn() -> D>,
}

enum Reply<T> {
    /// The caller runs it itself and takes the answer from here.
    Here(Option<Answer<T>>),
    /// The caller waits in a lane.
    There(Option<oneshot::Sender<Answer<T>>>),
}

impl<'d, D: Decision> Pending<'d, D, &'d D> {
    fn here(decision: &'d D, ctx: &'d CommandContext, keys: Vec<AggregateKey>) -> Self {
        Self {
            decision,
            ctx: Cow::Borrowed(ctx),
            keys,
            outcome: None,
            reply: Reply::Here(None),
            of: PhantomData,
        }
    }

    fn answer(self) -> Answer<D::Outcome> {
        match self.reply {
            Reply::Here(Some(answer)) => answer,
            Reply::Here(None) | Reply::There(_) => Err(AppError::Internal(
                "a decision ended without an answer".into(),
            )),
        }
    }
}

impl<D: Decision> Pending<'static, D, D> {
    fn there(
        decision: D,
        ctx: &CommandContext,
        keys: Vec<AggregateKey>,
        reply: oneshot::Sender<Answer<D::Outcome>>,
    ) -> Self {
        Self {
            decision,
            ctx: Cow::Owned(ctx.clone()),
            keys,
            outcome: None,
            reply: Reply::There(Some(reply)),
            of: PhantomData,
        }
    }
}

impl<D: Decision, H: Borrow<D> + Send> Job for Pending<'_, D, H> {
    fn decide<'a, 's: 'a>(
        &'a mut self,
        uow: &'a mut UnitOfWork<'s>,
    ) -> BoxFuture<'a, Result<(), AppError>> {
        Box::pin(async move {
            let decision: &D = self.decision.borrow();
            self.outcome = Some(decision.decide(uow).await?);
            Ok(())
        })
    }

    fn context(&self) -> &CommandContext {
        &self.ctx
    }

    fn keys(&self) -> &[AggregateKey] {
        &self.keys
    }

    fn abandoned(&self) -> bool {
        matches!(&self.reply, Reply::There(Some(reply)) if reply.is_closed())
    }

    fn finish(&mut self, result: Result<Option<i64>, AppError>) {
        let answer = result.and_then(|position| match self.outcome.take() {
            Some(outcome) => Ok(Decided { outcome, position }),
            None => Err(AppError::Internal(
                "a decision was committed without its outcome".into(),
            )),
        });
        match &mut self.reply {
            Reply::Here(slot) => *slot = Some(answer),
            Reply::There(reply) => {
                if let Some(reply) = reply.take() {
                    // Its caller may have gone away: the decision stands all the same.
                    let _ = reply.send(answer);
                }
            }
        }
    }
}

/// Decisions queued to be folded, by the stripes they queue on. A lane exists while someone
/// runs its decisions: its leader (a caller deciding by itself) or a task draining it.
#[derive(Default)]
struct Lanes {
    lanes: std::sync::Mutex<LaneMap>,
    /// How many decisions wait in all lanes, republished after every change (for
    /// [`EventStore::queued`]).
    queued: tokio::sync::watch::Sender<usize>,
}

/// Each lane's queue, by its stripes.
type LaneMap = HashMap<Vec<usize>, VecDeque<Box<dyn Job>>>;

impl Lanes {
    fn lock(&self) -> std::sync::MutexGuard<'_, LaneMap> {
        // Nothing panics while holding it; a poisoned map is still consistent.
        self.lanes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes how many decisions `lanes` (the locked map) hold.
    fn publish(&self, lanes: &LaneMap) {
        let queued = lanes.values().map(VecDeque::len).sum();
        self.queued.send_if_modified(|was| {
            let changed = *was != queued;
            *was = queued;
            changed
        });
    }
}

/// Whoever runs a lane's decisions. When it is done (or dropped: a caller that went away, a
/// task that panicked), the lane closes if nothing is queued, and is otherwise handed to a
/// task that drains it: queued decisions are never left waiting on no one.
struct Lead<'s> {
    store: &'s EventStore,
    stripes: Vec<usize>,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let mut lanes = self.store.lanes.lock();
        let queued = lanes
            .get(&self.stripes)
            .is_some_and(|queue| !queue.is_empty());
        if !queued {
            lanes.remove(&self.stripes);
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                drop(lanes);
                runtime.spawn(self.store.clone().drain(self.stripes.clone()));
            }
            // The runtime is going away: the queued callers are told their batch ended.
            Err(_) => {
                lanes.remove(&self.stripes);
                self.store.lanes.publish(&lanes);
            }
        }
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

    /// The stripes of `keys`, sorted and without repeats: the order they are taken in.
    fn stripes_of(&self, keys: &[AggregateKey]) -> Vec<usize> {
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
        stripes
    }

    async fn lock_all(&self, keys: &[AggregateKey]) -> Vec<MutexGuard<'_, ()>> {
        self.lock_stripes(&self.stripes_of(keys)).await
    }

    /// Takes `stripes` (sorted, as [`AggregateLocks::stripes_of`] gives them) in order.
    async fn lock_stripes(&self, stripes: &[usize]) -> Vec<MutexGuard<'_, ()>> {
        let mut guards = Vec::with_capacity(stripes.len());
        for &stripe in stripes {
            guards.push(self.stripes[stripe].lock().await);
        }
        guards
    }
}
