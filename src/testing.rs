//! Test support, compiled only with the `test-support` feature (which only this crate's own
//! black-box tests enable): setting up a world without an HTTP round trip per step, and
//! reading the write side's state to check what a decision committed. Nothing here is reachable
//! from the service.

use aggregates::{AccountId, Channel, OrderId, ReceiptId, StoreId};
use chrono::{DateTime, Utc};

use crate::app::{App, AppError, Caller, CommandContext, NewStore, Stored, SubmitReceipt};

/// A caller the service vouches for itself (as seeding does): authorization still applies.
pub fn caller_for(account_id: AccountId, channel: Channel) -> Caller {
    Caller::service(account_id, channel)
}

/// The system's own context (process managers, seeding).
pub fn system_context(job: &str) -> CommandContext {
    CommandContext::system(job)
}

/// Registers an account without credentials (a customer known by Telegram id, say).
pub async fn register_account(
    app: &App,
    email: Option<&str>,
    telegram_user_id: Option<i64>,
    platform_admin: bool,
) -> Result<AccountId, AppError> {
    app.register_account(
        &CommandContext::system("test"),
        email,
        telegram_user_id,
        platform_admin,
    )
    .await
}

/// Opens a store for `store.owner_id` on the system's authority.
pub async fn open_store(app: &App, store: NewStore) -> Result<StoreId, AppError> {
    app.open_store(&CommandContext::system("test"), store)
        .await
        .map(|decided| decided.outcome)
}

/// Submits a receipt whose file is already stored, as `caller` (the order's customer).
pub async fn submit_receipt(
    app: &App,
    caller: &Caller,
    receipt: SubmitReceipt,
) -> Result<ReceiptId, AppError> {
    let ctx = caller.context(aggregates::ActorRole::Customer);
    app.submit_receipt(&ctx, receipt)
        .await
        .map(|decided| decided.outcome)
}

/// Expires an order as the order-expiry process manager would at `now`.
pub async fn expire_order(
    app: &App,
    order_id: OrderId,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    app.expire_order(&CommandContext::system("test"), order_id, now)
        .await
}

/// The current state of aggregate `id`, as a decision would load it (saved state plus newer
/// events).
pub async fn load<A: Stored>(app: &App, id: impl ToString) -> Result<A, AppError> {
    Ok(app.events.load::<A>(&id.to_string()).await?.into_state())
}

/// How many decisions wait to be folded behind a running one (the event store's count).
pub fn queued_decisions(app: &App) -> tokio::sync::watch::Receiver<usize> {
    app.events.queued()
}

/// The state of aggregate `id` replayed from all its events, whatever its saved state says.
pub async fn replay<A: Stored>(app: &App, id: impl ToString) -> Result<A, AppError> {
    app.events.load_from_events::<A>(&id.to_string()).await
}

/// Writes missing saved states of type `A` (what `serve` does at start-up); how many.
pub async fn repair_saved_states<A: Stored>(app: &App) -> Result<usize, AppError> {
    app.events.repair_saved_states::<A>().await
}

/// Blocks an account platform-wide on the system's authority (as a platform admin would).
pub async fn block_account(app: &App, account_id: AccountId, reason: &str) -> Result<(), AppError> {
    let command = aggregates::account::AccountCommand::Block {
        blocked_by: AccountId::default(),
        reason: reason.to_owned(),
        at: crate::app::now(),
    };
    app.accounts
        .execute(
            &account_id.to_string(),
            command,
            &CommandContext::system("test"),
        )
        .await
}

/// The caller a request with `access_token` makes (as the HTTP adapter builds it).
pub async fn caller_with_token(app: &App, access_token: &str) -> Result<Caller, AppError> {
    let principal = app.authenticate(access_token).await?;
    Ok(Caller::new(
        principal,
        crate::app::Origin::new(Channel::Api),
    ))
}

/// Runs the order-expiry process manager's step at `now` (pages of `page`); how many expired.
pub async fn expire_due_orders(
    app: &App,
    now: DateTime<Utc>,
    page: i64,
) -> Result<usize, AppError> {
    app.expire_due_orders(&CommandContext::system("order-expiry"), now, page)
        .await
}
