//! The Telegram channel: a delivery rendered by the bot (`src/telegram/deliveries.rs`) and sent
//! to the recipient's private chat; also the second-factor prompts the same worker puts.
//!
//! Failures are retried with exponential backoff (Telegram's `retry_after` when it asks for
//! one); a chat that blocked the bot, or one Telegram does not know, fails at once.

use teloxide::{ApiError, Bot, RequestError};

use super::{backoff, Outcome};
use crate::app::{App, AppError, DueDelivery};
use crate::telegram::deliveries::{self, SendError, Sent};

/// Sends one delivery.
pub async fn deliver(app: &App, bot: &Bot, delivery: &DueDelivery) -> Outcome {
    match deliveries::send(app, bot, delivery).await {
        Ok(Sent::Delivered) => Outcome::Sent,
        Ok(Sent::Skipped(reason)) => Outcome::Skipped(reason.into()),
        Err(err) => Outcome::Failed {
            retry_in: retry_delay(&err, delivery.attempts),
            error: err.to_string(),
        },
    }
}

/// Puts pending second-factor requests to their Telegram users.
pub async fn prompt_second_factors(app: &App, bot: &Bot) -> Result<(), AppError> {
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

/// Posts the latest signed audit checkpoint not posted yet to `chat` (the admins' channel), so
/// a copy lives outside the database; older unposted ones are covered by it and marked too.
/// A failure is logged and tried again at the next round.
pub async fn post_checkpoint(app: &App, bot: &Bot, chat: i64) -> Result<(), AppError> {
    let Some(checkpoint) = app.unposted_audit_checkpoint().await? else {
        return Ok(());
    };
    let line = serde_json::to_string(&checkpoint).map_err(|e| AppError::Internal(e.into()))?;
    let text = format!(
        "shopfront audit checkpoint\nchain index {}, global position {}\nhash {}\nsigned at {}\n\nSave the line below as a file for `shopfront audit verify --from-checkpoint`:\n{line}",
        checkpoint.chain_index,
        checkpoint.global_position,
        checkpoint.hash,
        checkpoint.signed_at.to_rfc3339(),
    );
    use teloxide::requests::Requester;
    match bot.send_message(teloxide::types::ChatId(chat), text).await {
        Ok(_) => app.audit_checkpoint_posted(checkpoint.chain_index).await,
        Err(err) => {
            tracing::warn!(chat, chain_index = checkpoint.chain_index, error = %err,
                "the audit checkpoint was not posted to Telegram; will retry");
            Ok(())
        }
    }
}

/// When to try a failed delivery again; `None` to give up (a chat that blocked the bot, or one
/// Telegram does not know).
fn retry_delay(err: &SendError, attempts: i32) -> Option<std::time::Duration> {
    match err {
        SendError::Telegram(RequestError::RetryAfter(seconds)) => Some(seconds.duration()),
        SendError::Telegram(RequestError::Api(
            ApiError::BotBlocked | ApiError::ChatNotFound | ApiError::UserDeactivated,
        )) => None,
        _ => Some(backoff(attempts)),
    }
}
