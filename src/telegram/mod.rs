//! The Telegram bot: customers browse, order and pay; staff verify payments and answer stock
//! alerts (docs/adr/0007-telegram-bot.md).
//!
//! An adapter like the HTTP API: it turns updates into calls of the application layer — with
//! the same authorization proofs (`App::authorize…`) — and the results into messages. It holds
//! no business rule: whether an order may be placed, a receipt accepted or a payment verified is
//! decided by the same services an API client reaches. Telegram vouches for the sender of each
//! update (`App::telegram_caller`).
//!
//! With several instances, one polls Telegram at a time: the holder of the advisory lock
//! `telegram-bot` (as projections are led); the others wait and take over when it goes. What a
//! chat is in the middle of (its language, cart, the reply it waits for) lives in Postgres, so a
//! restart or a new leader carries on. Sends go through teloxide's throttling adaptor (Telegram's
//! rate limits) and a per-chat rate limit protects everyone else from one flooding chat.

pub(crate) mod chats;
pub(crate) mod deliveries;
mod handlers;
pub mod texts;
mod ui;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use secrecy::{ExposeSecret, SecretString};
use teloxide::adaptors::throttle::{Limits, Throttle};
use teloxide::dispatching::{Dispatcher, UpdateFilterExt};
use teloxide::error_handlers::LoggingErrorHandler;
use teloxide::requests::RequesterExt;
use teloxide::types::Update;
use teloxide::update_listeners::Polling;
use teloxide::Bot;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::app::App;
use projections::RuntimeSettings;

pub use handlers::Shop;

/// The bot as handlers use it: every request throttled to Telegram's limits.
pub type TgBot = Throttle<Bot>;

/// How the bot reaches Telegram.
#[derive(Clone, Debug)]
pub struct TelegramSettings {
    pub token: SecretString,
    /// The Bot API server (Telegram's public one by default; a self-hosted one, or a fake one
    /// in tests).
    pub api_url: Url,
    /// How long one `getUpdates` waits for news.
    pub poll_timeout: Duration,
    /// Messages (and button presses) a minute one chat may send before it is asked to slow
    /// down, and the burst it may make at once.
    pub chat_rate: (u32, u32),
}

/// Telegram's public Bot API.
pub const TELEGRAM_API_URL: &str = "https://api.telegram.org";

/// Largest file a bot can download from Telegram's public Bot API.
pub const TELEGRAM_DOWNLOAD_LIMIT: u64 = 20 * 1024 * 1024;

impl TelegramSettings {
    /// A bot client for these settings (unthrottled; the dispatcher throttles its own).
    pub fn bot(&self) -> Bot {
        Bot::new(self.token.expose_secret()).set_api_url(self.api_url.clone())
    }
}

/// Runs the bot until `stop`: competes for the polling lock, and while it holds it, dispatches
/// updates. Losing the lock's connection stops dispatching until it is won again.
pub async fn run(
    app: Arc<App>,
    settings: TelegramSettings,
    runtime: RuntimeSettings,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let leader = match projections::runtime::acquire_leadership(
            &app.pool,
            "telegram-bot",
            &runtime,
            &stop,
        )
        .await
        {
            Ok(Some(conn)) => conn,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(error = %err, "the bot cannot compete for the polling lock");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(runtime.max_backoff);
                continue;
            }
        };
        tracing::info!("the Telegram bot polls for updates");
        let began = std::time::Instant::now();
        lead(app.clone(), &settings, &runtime, leader, &stop).await;
        if began.elapsed() > Duration::from_secs(60) {
            // It led for a while: this is a new failure, not the same one again.
            backoff = Duration::from_millis(200);
        }
        // Back from leading without a stop: Telegram or the lock's connection failed. Wait a
        // little (longer each time) before competing again.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(runtime.max_backoff);
    }
}

/// Dispatches updates while `leader` (the connection holding the lock) lives and `stop` is not
/// cancelled.
async fn lead(
    app: Arc<App>,
    settings: &TelegramSettings,
    runtime: &RuntimeSettings,
    mut leader: sqlx::PgConnection,
    stop: &CancellationToken,
) {
    use sqlx::Connection as _;
    let raw = settings.bot();
    let bot: TgBot = raw.clone().throttle(Limits::default());
    let (per_minute, burst) = settings.chat_rate;
    let quota = Quota::per_minute(NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN));
    let limiter: Arc<DefaultKeyedRateLimiter<i64>> = Arc::new(RateLimiter::keyed(quota));
    let shop = Arc::new(Shop::new(app, raw, limiter));
    let deps = shop.clone();
    let handler = teloxide::dptree::entry()
        .branch(Update::filter_message().endpoint(handlers::on_message))
        .branch(Update::filter_callback_query().endpoint(handlers::on_callback));
    let mut dispatcher = Dispatcher::builder(bot.clone(), handler)
        .dependencies(teloxide::dptree::deps![deps])
        // Edited messages, stickers in groups, channel posts…: nothing to do, nothing to crash.
        .default_handler(|_| async {})
        .error_handler(LoggingErrorHandler::with_custom_text(
            "a Telegram update handler failed",
        ))
        .build();
    let shutdown = dispatcher.shutdown_token();
    let listener = Polling::builder(bot)
        .timeout(settings.poll_timeout)
        .delete_webhook()
        .await
        .build();
    // `try_`: Telegram out of reach at the start (`getMe` fails) is an error to wait out, not
    // a panic that would end the bot for the life of the process.
    let dispatching = dispatcher.try_dispatch_with_listener(
        listener,
        LoggingErrorHandler::with_custom_text("polling Telegram failed"),
    );
    tokio::pin!(dispatching);
    let mut checks = tokio::time::interval(runtime.standby_interval);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruning = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            dispatched = &mut dispatching => {
                if let Err(err) = dispatched {
                    tracing::warn!(error = %err, "the bot cannot reach Telegram; trying again");
                }
                return;
            }
            _ = stop.cancelled() => break,
            _ = pruning.tick() => shop.forget_quiet_chats(),
            _ = checks.tick() => {
                match tokio::time::timeout(Duration::from_secs(5), leader.ping()).await {
                    Ok(Ok(())) => continue,
                    _ => {
                        tracing::warn!("the bot lost its polling lock's connection; stopping");
                        break;
                    }
                }
            }
        }
    }
    // The dispatcher stops only while its future is driven: wait for both together.
    match shutdown.shutdown() {
        Ok(done) => {
            let _ = tokio::join!(done, dispatching);
        }
        Err(_) => {
            let _ = dispatching.await;
        }
    };
}
