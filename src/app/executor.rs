//! Running commands against one aggregate type: per-aggregate serialisation in this process,
//! bounded retries on optimistic-concurrency conflicts across processes, metadata on every event.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, CqrsFramework, EventStore};
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;
use tokio::sync::{Mutex, MutexGuard};

use super::{AppError, CommandContext};

/// How many times a command is tried when another writer appended to the same aggregate first.
pub const MAX_ATTEMPTS: u32 = 10;

type Store<A> = PersistedEventStore<PostgresEventRepository, A>;

/// Striped in-process locks, one stripe per aggregate (modulo collisions).
///
/// Commands on one aggregate from this process run one at a time, so they never conflict with
/// each other: a hot product's 1,000 concurrent reservations become a queue instead of 1,000
/// optimistic-lock failures. Other instances are still kept honest by postgres-es's optimistic
/// concurrency (the `(aggregate_type, aggregate_id, sequence)` primary key) and our retries.
/// A lock is held for one command only, never across two, so stripes cannot deadlock.
pub struct AggregateLocks {
    stripes: Vec<Mutex<()>>,
}

impl AggregateLocks {
    pub fn new(stripes: usize) -> Self {
        Self {
            stripes: (0..stripes.max(1)).map(|_| Mutex::new(())).collect(),
        }
    }

    async fn lock(&self, aggregate_type: &str, id: &str) -> MutexGuard<'_, ()> {
        let mut hasher = DefaultHasher::new();
        (aggregate_type, id).hash(&mut hasher);
        let stripe = (hasher.finish() % self.stripes.len() as u64) as usize;
        self.stripes[stripe].lock().await
    }
}

/// Executes commands on, and loads the state of, aggregates of type `A`.
pub struct Executor<A: Aggregate> {
    cqrs: CqrsFramework<A, Store<A>>,
    store: Store<A>,
    locks: Arc<AggregateLocks>,
}

impl<A> Executor<A>
where
    A: Aggregate<Services = ()> + 'static,
    A::Command: Clone,
    AppError: From<A::Error>,
{
    /// An executor whose aggregates are rebuilt from all their events on load.
    pub fn new(pool: PgPool, locks: Arc<AggregateLocks>) -> Self {
        let cqrs = CqrsFramework::new(
            PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone())),
            vec![Box::new(super::metrics::EventsAppended)],
            (),
        );
        let store = PersistedEventStore::new_event_store(PostgresEventRepository::new(pool));
        Self { cqrs, store, locks }
    }

    /// An executor whose aggregate state is saved beside its events on every commit
    /// (postgres-es's aggregate store): a load reads one row instead of replaying events. The
    /// events stay the source of truth for everything else (read models, audits, rebuilds).
    pub fn with_saved_state(pool: PgPool, locks: Arc<AggregateLocks>) -> Self {
        let cqrs = CqrsFramework::new(
            PersistedEventStore::new_aggregate_store(PostgresEventRepository::new(pool.clone())),
            vec![Box::new(super::metrics::EventsAppended)],
            (),
        );
        let store = PersistedEventStore::new_aggregate_store(PostgresEventRepository::new(pool));
        Self { cqrs, store, locks }
    }

    /// Runs `command` on aggregate `id`, storing its events with the context's metadata.
    #[tracing::instrument(skip(self, command, ctx), fields(aggregate = A::TYPE))]
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        ctx: &CommandContext,
    ) -> Result<(), AppError> {
        let result = self.execute_serialised(id, command, ctx).await;
        super::metrics::record_command(A::TYPE, &result);
        result
    }

    async fn execute_serialised(
        &self,
        id: &str,
        command: A::Command,
        ctx: &CommandContext,
    ) -> Result<(), AppError> {
        let metadata = ctx.metadata().to_map();
        let _serialised = self.locks.lock(A::TYPE, id).await;
        for attempt in 1..=MAX_ATTEMPTS {
            match self
                .cqrs
                .execute_with_metadata(id, command.clone(), metadata.clone())
                .await
            {
                Ok(()) => return Ok(()),
                Err(AggregateError::AggregateConflict) if attempt < MAX_ATTEMPTS => {
                    tracing::debug!(attempt, "optimistic-lock conflict; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(err) => return Err(map_error(err, A::TYPE, id)),
            }
        }
        Err(AppError::Conflict {
            aggregate: A::TYPE,
            id: id.to_owned(),
        })
    }

    /// Writes the saved state of every aggregate of this type whose events exist without one,
    /// by replaying its events once. Needed only by executors `with_saved_state`: postgres-es
    /// would load such an aggregate as new (and every command on it would then conflict).
    /// That happens when events are restored or written without the `snapshots` table. Returns
    /// how many were repaired.
    pub async fn repair_saved_states(&self, pool: &PgPool) -> Result<usize, AppError> {
        let missing: Vec<(String, i64)> = sqlx::query_as(
            "select e.aggregate_id, max(e.sequence) from events e
              where e.aggregate_type = $1
                and not exists (select 1 from snapshots s
                                 where s.aggregate_type = $1 and s.aggregate_id = e.aggregate_id)
              group by e.aggregate_id",
        )
        .bind(A::TYPE)
        .fetch_all(pool)
        .await?;
        let replay = PersistedEventStore::<_, A>::new_event_store(PostgresEventRepository::new(
            pool.clone(),
        ));
        for (id, last_sequence) in &missing {
            let _serialised = self.locks.lock(A::TYPE, id).await;
            let state = replay
                .load_aggregate(id)
                .await
                .map_err(|err| map_error(err, A::TYPE, id))?
                .aggregate;
            let payload =
                serde_json::to_value(&state).map_err(|e| AppError::Internal(Box::new(e)))?;
            sqlx::query(
                "insert into snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload)
                 values ($1, $2, $3, 1, $4) on conflict do nothing",
            )
            .bind(A::TYPE)
            .bind(id)
            .bind(last_sequence)
            .bind(payload)
            .execute(pool)
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

    /// The current state of aggregate `id` (the default state if it has no events).
    pub async fn load(&self, id: &str) -> Result<A, AppError> {
        let context = self
            .store
            .load_aggregate(id)
            .await
            .map_err(|err| map_error(err, A::TYPE, id))?;
        Ok(context.aggregate)
    }
}

/// Exponential backoff with full jitter: up to 2, 4, 8 … ms, capped at 64 ms, so instances
/// contending for one hot aggregate spread out instead of colliding again in lockstep.
fn backoff(attempt: u32) -> Duration {
    let ceiling = 2u64.saturating_pow(attempt.min(6));
    Duration::from_micros(500 + rand::random::<u64>() % (ceiling * 1000))
}

fn map_error<E>(err: AggregateError<E>, aggregate: &'static str, id: &str) -> AppError
where
    E: std::error::Error,
    AppError: From<E>,
{
    match err {
        AggregateError::UserError(e) => e.into(),
        AggregateError::AggregateConflict => AppError::Conflict {
            aggregate,
            id: id.to_owned(),
        },
        AggregateError::DatabaseConnectionError(e) => AppError::Unavailable(e),
        AggregateError::DeserializationError(e) => AppError::Internal(e),
        // postgres-es reports most database errors as unexpected: input the database cannot
        // hold (a NUL in a reason, say) is refused, and an outage (a pool timeout, a server
        // shutting down) is a 503, neither a 500.
        AggregateError::UnexpectedError(e) => AppError::from_persistence(e),
    }
}
