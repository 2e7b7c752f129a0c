//! Commands on one aggregate type: the single-aggregate case of a decision
//! ([`event_store`](super::event_store)), with the same serialisation, retries and metadata.

use std::marker::PhantomData;
use std::sync::Arc;

use aggregates::StoreId;

use super::event_store::{
    AggregateKey, Decided, Decision, EventStore, SideWrite, Stored, UnitOfWork,
};
use super::{AppError, CommandContext};

/// Executes commands on, and loads the state of, aggregates of type `A`.
pub struct Executor<A> {
    store: Arc<EventStore>,
    aggregate: PhantomData<fn() -> A>,
}

impl<A> Executor<A>
where
    A: Stored,
    A::Command: Clone + Send + Sync,
    AppError: From<A::Error>,
{
    pub fn new(store: Arc<EventStore>) -> Self {
        Self {
            store,
            aggregate: PhantomData,
        }
    }

    /// Runs `command` on aggregate `id`, storing its events with the context's metadata.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        ctx: &CommandContext,
    ) -> Result<(), AppError> {
        self.decide(id, command, ctx).await.map(|_| ())
    }

    /// [`Executor::execute`], saying where in the global log the events went (for an adapter
    /// that shows the change once the read models have it).
    #[tracing::instrument(skip(self, command, ctx), fields(aggregate = A::TYPE))]
    pub async fn decide(
        &self,
        id: &str,
        command: A::Command,
        ctx: &CommandContext,
    ) -> Result<Decided<()>, AppError> {
        let one = One::<A> {
            id,
            command: &command,
            in_store: None,
            side_write: None,
        };
        self.store.decide(ctx, &one).await
    }

    /// Runs `command` on aggregate `id` and, in the same transaction, the write `side_write`
    /// makes (called once per attempt): a setting the event stands for, say. Either both are
    /// committed or neither.
    pub async fn execute_with(
        &self,
        id: &str,
        command: A::Command,
        ctx: &CommandContext,
        side_write: &(dyn Fn() -> SideWrite + Sync),
    ) -> Result<(), AppError> {
        let one = One::<A> {
            id,
            command: &command,
            in_store: None,
            side_write: Some(side_write),
        };
        self.store.decide(ctx, &one).await.map(|_| ())
    }

    /// Runs `command` on aggregate `id` of store `store_id` (as the caller's proof names it):
    /// an aggregate of another store is "not found". The position tells an adapter when the
    /// read models show the change.
    pub async fn execute_in(
        &self,
        store_id: StoreId,
        id: &str,
        command: A::Command,
        ctx: &CommandContext,
    ) -> Result<Decided<()>, AppError> {
        let one = One::<A> {
            id,
            command: &command,
            in_store: Some(store_id),
            side_write: None,
        };
        self.store.decide(ctx, &one).await
    }

    /// The current state of aggregate `id` (the default state if it has no events).
    pub async fn load(&self, id: &str) -> Result<A, AppError> {
        Ok(self.store.load::<A>(id).await?.into_state())
    }

    /// The current states of aggregates `ids`, in their order, in one round trip for a type
    /// without saved state (the default state for an id without events).
    pub async fn load_all(&self, ids: &[String]) -> Result<Vec<A>, AppError> {
        self.store.load_all::<A>(ids).await
    }

    /// Writes the saved state of every aggregate of this type whose events exist without one
    /// (see [`EventStore::repair_saved_states`]). Returns how many were repaired.
    pub async fn repair_saved_states(&self) -> Result<usize, AppError> {
        self.store.repair_saved_states::<A>().await
    }
}

/// One command on one aggregate.
struct One<'c, A: Stored> {
    id: &'c str,
    command: &'c A::Command,
    /// The store the aggregate must belong to, when the caller acts in one.
    in_store: Option<StoreId>,
    /// Makes the write committed with the command's events, if any.
    side_write: Option<&'c (dyn Fn() -> SideWrite + Sync)>,
}

impl<A> Decision for One<'_, A>
where
    A: Stored,
    A::Command: Clone + Send + Sync,
    AppError: From<A::Error>,
{
    type Outcome = ();

    fn serialise_on(&self) -> Vec<AggregateKey> {
        vec![AggregateKey::of::<A>(self.id)]
    }

    async fn decide(&self, uow: &mut UnitOfWork<'_>) -> Result<(), AppError> {
        let mut aggregate = match self.in_store {
            Some(store_id) => uow.load_in::<A>(store_id, self.id).await?,
            None => uow.load::<A>(self.id).await?,
        };
        uow.execute(&mut aggregate, self.command.clone()).await?;
        if let Some(side_write) = self.side_write {
            uow.also(side_write());
        }
        Ok(())
    }
}
