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
//! A checkpoint notification also carries where the checkpoint now stands (`name@tx/position`,
//! [`checkpoint_payload`]); the task keeps the latest one per projection in
//! [`CheckpointPositions`], so a read-your-writes waiter compares positions in memory instead of
//! asking the database at every projection's every commit.
//!
//! A notification only says "look again": a subscriber marks the counter seen *before* it
//! reads, so a notification that arrives while it reads wakes it once more, and it still polls
//! as a fallback (an event can become visible without one, when the horizon moves). When the
//! connection is lost the task reconnects (with backoff) and then bumps both counters:
//! anything notified while nobody listened is lost, so everybody looks again.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::log::{LogPosition, NOTIFY_CHANNEL};
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
    positions: CheckpointPositions,
    told: broadcast::Sender<Told>,
}

/// The payload a checkpoint notification carries: the projection's name and where its
/// checkpoint now stands. A payload of the name alone (a failure, the audit sealer) says only
/// "look again".
pub fn checkpoint_payload(name: &str, at: LogPosition) -> String {
    format!("{name}@{}/{}", at.transaction_id, at.global_position)
}

fn parse_checkpoint_payload(payload: &str) -> (&str, Option<LogPosition>) {
    let Some((name, at)) = payload.split_once('@') else {
        return (payload, None);
    };
    let position = at.split_once('/').and_then(|(tx, position)| {
        Some(LogPosition {
            transaction_id: tx.parse().ok()?,
            global_position: position.parse().ok()?,
        })
    });
    (name, position)
}

/// Most projections a process follows the checkpoints of; past it, the map starts over (a
/// projection not in it is asked of the database, so forgetting is always safe).
const MAX_KNOWN_CHECKPOINTS: usize = 256;

/// The checkpoint positions the process's listener has been told of since it last (re)connected:
/// for each projection, the position of its latest notification. Notifications arrive in
/// commit order, so the latest is where the checkpoint stands. A projection missing here (none
/// told yet, or its latest notification carried no position) is not known.
#[derive(Clone, Debug, Default)]
pub struct CheckpointPositions {
    known: Arc<RwLock<HashMap<String, LogPosition>>>,
}

impl CheckpointPositions {
    /// Where `name`'s checkpoint stands, if the listener was told.
    pub fn get(&self, name: &str) -> Option<LogPosition> {
        self.known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
    }

    fn told(&self, payload: &str) {
        let (name, position) = parse_checkpoint_payload(payload);
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        match position {
            Some(position) => {
                if known.len() >= MAX_KNOWN_CHECKPOINTS && !known.contains_key(name) {
                    known.clear();
                }
                known.insert(name.to_owned(), position);
            }
            None => {
                known.remove(name);
            }
        }
    }

    fn forget_all(&self) {
        self.known
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl Notifications {
    /// Starts the listening task on the current Tokio runtime. It takes one connection from
    /// `pool` and keeps it.
    pub fn start(pool: PgPool) -> Self {
        let (events_tx, events) = watch::channel(0u64);
        let (checkpoints_tx, checkpoints) = watch::channel(0u64);
        let (told, _) = broadcast::channel(1024);
        let positions = CheckpointPositions::default();
        tokio::spawn(listen(
            pool,
            events_tx,
            checkpoints_tx,
            positions.clone(),
            told.clone(),
        ));
        Self {
            events,
            checkpoints,
            positions,
            told,
        }
    }

    /// Where each projection's checkpoint stands, as last notified (updated before
    /// [`Notifications::checkpoints`] changes).
    pub fn checkpoint_positions(&self) -> CheckpointPositions {
        self.positions.clone()
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
    positions: CheckpointPositions,
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
        positions.forget_all();
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
                            CHECKPOINT_CHANNEL => {
                                positions.told(notification.payload());
                                checkpoints.send_modify(bump);
                            }
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
                        positions.forget_all();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_payload_reads_back_as_its_name_and_position() {
        let at = LogPosition {
            transaction_id: 7_421,
            global_position: 90_001,
        };
        let payload = checkpoint_payload("orders", at);
        assert_eq!(parse_checkpoint_payload(&payload), ("orders", Some(at)));
        assert_eq!(
            parse_checkpoint_payload("audit-chain"),
            ("audit-chain", None)
        );
        assert_eq!(parse_checkpoint_payload("orders@x/1"), ("orders", None));
    }

    #[test]
    fn the_latest_notification_stands_and_a_bare_name_forgets() {
        let positions = CheckpointPositions::default();
        let at = |tx, gp| LogPosition {
            transaction_id: tx,
            global_position: gp,
        };
        positions.told(&checkpoint_payload("orders", at(10, 5)));
        positions.told(&checkpoint_payload("orders", at(9, 3)));
        // A reset moves a checkpoint back: the latest told is where it stands.
        assert_eq!(positions.get("orders"), Some(at(9, 3)));
        positions.told("orders");
        assert_eq!(positions.get("orders"), None);
        for i in 0..MAX_KNOWN_CHECKPOINTS + 10 {
            positions.told(&checkpoint_payload(&format!("p{i}"), at(1, 1)));
        }
        assert!(positions.known.read().unwrap().len() <= MAX_KNOWN_CHECKPOINTS);
    }
}
