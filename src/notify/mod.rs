//! Delivery of notifications recorded in the outbox (ARCHITECTURE rule 7): on one instance at a
//! time (the holder of the advisory lock `notification-delivery`), the worker expands new
//! outbox rows into notification-center rows and deliveries (`App::expand_outbox`, rendered by
//! [`render::Texts`]), then sends each due delivery on its channel — Telegram
//! ([`telegram`]), e-mail ([`email`]) — at least once, retried with backoff, and marks the
//! outcome. It runs whatever channels are configured: with neither a bot token nor an SMTP
//! server it still fills the notification center (and marks push deliveries `skipped`, saying
//! why). WebSocket sessions are pushed center rows through `NOTIFICATIONS_CHANNEL`.
//!
//! At least once: a delivery is marked sent after its channel accepted it (Telegram answered,
//! the SMTP server said 250 to the message); a crash in between sends it again, with the same
//! delivery id (an e-mail's `Message-ID`), so a receiver can drop the duplicate.

pub mod email;
pub mod render;
pub mod telegram;

use std::sync::Arc;
use std::time::Duration;

use teloxide::Bot;
use tokio_util::sync::CancellationToken;

use crate::app::{App, AppError, PushChannel};
use projections::RuntimeSettings;

/// How often the worker looks for work: a notification waits at most this long.
pub const DELIVERY_INTERVAL: Duration = Duration::from_millis(500);

/// The push channels this instance can send on.
#[derive(Clone, Default)]
pub struct Channels {
    /// The bot, when a token is configured.
    pub telegram: Option<Bot>,
    /// Telegram's limits on what a bot sends, kept by waiting.
    pub telegram_limits: Arc<TelegramLimits>,
    /// The SMTP mailer, when an SMTP URL is configured.
    pub email: Option<email::Mailer>,
    /// The Telegram chat (the admins' channel) signed audit checkpoints are posted to.
    pub checkpoint_chat: Option<i64>,
}

/// Telegram's limits on a bot's messages: about 30 a second in all and about one a second
/// per chat (<https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this>).
/// The worker waits for its turn under both instead of sending into a 429; Telegram's
/// `retry_after`, when it still answers one, reschedules the delivery.
pub struct TelegramLimits {
    all: governor::DefaultDirectRateLimiter,
    per_chat: governor::DefaultKeyedRateLimiter<i64>,
}

impl Default for TelegramLimits {
    fn default() -> Self {
        use governor::{Quota, RateLimiter};
        use std::num::NonZeroU32;
        let per_second = |n| Quota::per_second(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        Self {
            all: RateLimiter::direct(per_second(25)),
            per_chat: RateLimiter::keyed(per_second(1)),
        }
    }
}

impl TelegramLimits {
    /// Waits until a message to `chat` may go.
    pub async fn wait_for(&self, chat: Option<i64>) {
        if let Some(chat) = chat {
            self.per_chat.until_key_ready(&chat).await;
            self.per_chat.retain_recent();
        }
        self.all.until_ready().await;
    }
}

/// What became of one attempt at a delivery.
#[derive(Debug)]
pub enum Outcome {
    /// The channel accepted it.
    Sent,
    /// Nothing was sent, on purpose, for this reason.
    Skipped(String),
    /// It failed: tried again after `retry_in`, or (`None`) failed for good.
    Failed {
        error: String,
        retry_in: Option<Duration>,
    },
}

/// Runs the worker until `stop`.
pub async fn run(
    app: Arc<App>,
    channels: Channels,
    runtime: RuntimeSettings,
    stop: CancellationToken,
) {
    let pool = app.pool.clone();
    let channels = Arc::new(channels);
    projections::runtime::run_as_leader(
        pool,
        "notification-delivery",
        DELIVERY_INTERVAL,
        runtime,
        stop,
        move |_now| {
            let (app, channels) = (app.clone(), channels.clone());
            async move { step(&app, &channels).await }
        },
    )
    .await;
}

/// One round: expand, send what is due, put second-factor requests.
pub async fn step(app: &App, channels: &Channels) -> Result<(), AppError> {
    let texts = render::Texts {
        pool: app.pool.clone(),
    };
    while app.expand_outbox(100, &texts).await? == 100 {}
    for delivery in app.due_deliveries(50).await? {
        let outcome = match (delivery.channel(), &channels.telegram, &channels.email) {
            (Some(PushChannel::Telegram), Some(bot), _) => {
                channels
                    .telegram_limits
                    .wait_for(delivery.telegram_user_id)
                    .await;
                telegram::deliver(app, bot, &delivery).await
            }
            (Some(PushChannel::Telegram), None, _) => {
                Outcome::Skipped("Telegram is not configured (no bot token)".into())
            }
            (Some(PushChannel::Email), _, Some(mailer)) => {
                email::deliver(app, mailer, &delivery).await
            }
            (Some(PushChannel::Email), _, None) => {
                Outcome::Skipped("e-mail is not configured (no SMTP URL)".into())
            }
            (None, _, _) => Outcome::Skipped(format!("unknown channel {}", delivery.channel)),
        };
        match outcome {
            Outcome::Sent => app.delivery_sent(delivery.delivery_id).await?,
            Outcome::Skipped(reason) => {
                tracing::info!(
                    delivery_id = %delivery.delivery_id, channel = %delivery.channel,
                    kind = %delivery.kind, %reason, "a notification delivery is skipped"
                );
                app.delivery_skipped(delivery.delivery_id, &reason).await?
            }
            Outcome::Failed { error, retry_in } => {
                tracing::warn!(
                    delivery_id = %delivery.delivery_id, channel = %delivery.channel,
                    kind = %delivery.kind, attempts = delivery.attempts + 1, %error,
                    "a notification was not delivered"
                );
                // Past MAX_DELIVERY_ATTEMPTS it is failed for good whatever `retry_in` says.
                app.delivery_failed(delivery.delivery_id, &error, retry_in)
                    .await?;
            }
        }
    }
    if let Some(bot) = &channels.telegram {
        telegram::prompt_second_factors(app, bot).await?;
        if let Some(chat) = channels.checkpoint_chat {
            channels.telegram_limits.wait_for(Some(chat)).await;
            telegram::post_checkpoint(app, bot, chat).await?;
        }
    }
    Ok(())
}

/// The usual wait before trying a failed delivery again: 1, 2, 4 … seconds, at most ten
/// minutes.
pub fn backoff(attempts: i32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(attempts.max(0) as u32).min(600))
}
