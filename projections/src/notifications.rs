//! One `LISTEN` connection per process, shared by every projection runner, every
//! read-your-writes waiter and every live feed.
//!
//! A `PgListener` keeps a pool connection for as long as it listens. One per projection runner
//! (and one more for checkpoint waiters) pinned ten of a default twenty. Instead one task
//! listens on the events trigger's channel ([`NOTIFY_CHANNEL`]) and the checkpoints'
//! ([`CHECKPOINT_CHANNEL`]), and bumps a counter per channel in a `tokio::sync::watch`, which any
//! number of subscribers await; and on the notification center's ([`CENTER_CHANNEL`]), whose
//! payload (the account told) it passes on through a `tokio::sync::broadcast`.
//!
//! A notification only says "look again": a subscriber marks the counter seen *before* it
//! reads, so a notification that arrives while it reads wakes it once more, and it still polls
//! as a fallback (an event can become visible without one, when the horizon moves). When the
//! connection is lost the task reconnects (with backoff) and then bumps both counters:
//! anything notified while nobody listened is lost, so everybody looks again.

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::log::NOTIFY_CHANNEL;
use crate::runtime::CHECKPOINT_CHANNEL;

/// The channel the notification center's insert trigger notifies, with the account told as
/// payload.
pub const CENTER_CHANNEL: &str = "shopfront_notifications";

/// Who has new notifications in the center: one account, or `Everyone` after the listener was
/// lost for a while (whatever was notified meanwhile is unknown, so everybody looks again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Told {
    Account(Uuid),
    Everyone,
}

/// Longest wait between attempts to listen again after the connection was lost.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Subscriptions to the process's one listener. Cheap to clone; the listening task ends when
/// every clone and subscription is dropped, or when the pool is closed.
#[derive(Clone, Debug)]
pub struct Notifications {
    events: watch::Receiver<u64>,
    checkpoints: watch::Receiver<u64>,
    told: broadcast::Sender<Told>,
}

impl Notifications {
    /// Starts the listening task on the current Tokio runtime. It takes one connection from
    /// `pool` and keeps it.
    pub fn start(pool: PgPool) -> Self {
        let (events_tx, events) = watch::channel(0u64);
        let (checkpoints_tx, checkpoints) = watch::channel(0u64);
        let (told, _) = broadcast::channel(1024);
        tokio::spawn(listen(pool, events_tx, checkpoints_tx, told.clone()));
        Self {
            events,
            checkpoints,
            told,
        }
    }

    /// Changes whenever events may have been appended to the log.
    pub fn events(&self) -> watch::Receiver<u64> {
        self.events.clone()
    }

    /// Changes whenever a projection's checkpoint may have advanced.
    pub fn checkpoints(&self) -> watch::Receiver<u64> {
        self.checkpoints.clone()
    }

    /// The accounts the notification center has new rows for, as they are committed. A
    /// receiver that lags (`RecvError::Lagged`) must look again for its account.
    pub fn told(&self) -> broadcast::Receiver<Told> {
        self.told.subscribe()
    }
}

fn bump(counter: &mut u64) {
    *counter = counter.wrapping_add(1);
}

/// Resolves once nobody subscribes to either channel any more.
async fn unsubscribed(events: &watch::Sender<u64>, checkpoints: &watch::Sender<u64>) {
    events.closed().await;
    checkpoints.closed().await;
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener
        .listen_all([NOTIFY_CHANNEL, CHECKPOINT_CHANNEL, CENTER_CHANNEL])
        .await?;
    Ok(listener)
}

async fn listen(
    pool: PgPool,
    events: watch::Sender<u64>,
    checkpoints: watch::Sender<u64>,
    told: broadcast::Sender<Told>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut lost = false;
    while !pool.is_closed() {
        if lost {
            tokio::select! {
                _ = unsubscribed(&events, &checkpoints) => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        lost = true;
        let mut listener = match connect(&pool).await {
            Ok(listener) => listener,
            Err(err) => {
                if !pool.is_closed() {
                    tracing::warn!(error = %err, ?backoff, "cannot listen for log notifications; retrying");
                }
                continue;
            }
        };
        // Listening (again): whatever was notified before is lost, so everybody looks again.
        events.send_modify(bump);
        checkpoints.send_modify(bump);
        let _ = told.send(Told::Everyone);
        loop {
            tokio::select! {
                _ = unsubscribed(&events, &checkpoints) => return,
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) => {
                        backoff = Duration::from_millis(100);
                        match notification.channel() {
                            NOTIFY_CHANNEL => events.send_modify(bump),
                            CHECKPOINT_CHANNEL => checkpoints.send_modify(bump),
                            CENTER_CHANNEL => {
                                if let Ok(account) = notification.payload().parse() {
                                    let _ = told.send(Told::Account(account));
                                }
                            }
                            _ => {}
                        }
                    }
                    // The connection was lost and the listener already listens again on a new
                    // one: what was notified in between is lost.
                    Ok(None) => {
                        tracing::info!("log notifications listener reconnected");
                        events.send_modify(bump);
                        checkpoints.send_modify(bump);
                        let _ = told.send(Told::Everyone);
                    }
                    Err(err) => {
                        if !pool.is_closed() {
                            tracing::warn!(error = %err, "lost the log notifications listener; reconnecting");
                        }
                        break;
                    }
                },
            }
        }
    }
}
