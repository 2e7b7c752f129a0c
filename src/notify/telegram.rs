//! The Telegram delivery worker: on one instance at a time (the holder of the advisory lock
//! `notification-delivery`), expands new outbox rows into deliveries, sends the due ones, and
//! puts pending second-factor requests to their Telegram users.
//!
//! At least once: a delivery is marked sent after Telegram accepted it; a crash in between sends
//! it again. Failures are retried with exponential backoff (Telegram's `retry_after` when it
//! asks for one) up to `MAX_DELIVERY_ATTEMPTS`, then marked `failed` with the error.

use std::sync::Arc;
use std::time::Duration;

use teloxide::{ApiError, Bot, RequestError};
use tokio_util::sync::CancellationToken;

use crate::app::{App, AppError, MAX_DELIVERY_ATTEMPTS};
use crate::telegram::deliveries::{self, SendError, Sent};
use projections::RuntimeSettings;

/// How often the worker looks for work (it is also woken by nothing else: a notification waits
/// at most this long).
pub const DELIVERY_INTERVAL: Duration = Duration::from_millis(500);

/// Runs the worker until `stop`.
pub async fn run(app: Arc<App>, bot: Bot, runtime: RuntimeSettings, stop: CancellationToken) {
    let pool = app.pool.clone();
    projections::runtime::run_as_leader(
        pool,
        "notification-delivery",
        DELIVERY_INTERVAL,
        runtime,
        stop,
        move |_now| {
            let (app, bot) = (app.clone(), bot.clone());
            async move { step(&app, &bot).await }
        },
    )
    .await;
}

/// One round: expand, send what is due, put second-factor requests.
pub async fn step(app: &App, bot: &Bot) -> Result<(), AppError> {
    while app.expand_outbox(100).await? == 100 {}
    for delivery in app.due_deliveries(50).await? {
        match deliveries::send(app, bot, &delivery).await {
            Ok(Sent::Delivered) => app.delivery_sent(delivery.delivery_id).await?,
            Ok(Sent::Skipped) => app.delivery_skipped(delivery.delivery_id).await?,
            Err(err) => {
                let retry_in = retry_delay(&err, delivery.attempts);
                tracing::warn!(
                    delivery_id = %delivery.delivery_id, kind = %delivery.kind,
                    attempts = delivery.attempts + 1, error = %err,
                    "a Telegram notification was not delivered"
                );
                app.delivery_failed(delivery.delivery_id, &err.to_string(), retry_in)
                    .await?;
            }
        }
    }
    for prompt in app.second_factor_prompts(20).await? {
        match deliveries::prompt(app, bot, &prompt).await {
            Ok(()) => app.second_factor_prompted(prompt.login_id).await?,
            Err(err) => {
                tracing::warn!(login_id = %prompt.login_id, error = %err, "a second-factor prompt was not delivered")
            }
        }
    }
    Ok(())
}

/// When to try a failed delivery again; `None` to give up (a chat that blocked the bot, a
/// request Telegram refuses as such, or attempts used up).
fn retry_delay(err: &SendError, attempts: i32) -> Option<Duration> {
    if attempts + 1 >= MAX_DELIVERY_ATTEMPTS {
        return None;
    }
    match err {
        SendError::Telegram(RequestError::RetryAfter(seconds)) => Some(seconds.duration()),
        SendError::Telegram(RequestError::Api(
            ApiError::BotBlocked | ApiError::ChatNotFound | ApiError::UserDeactivated,
        )) => None,
        _ => Some(Duration::from_secs(
            2u64.saturating_pow(attempts as u32).min(600),
        )),
    }
}
