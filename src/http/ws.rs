//! `GET /api/v1/ws`: the live feeds over WebSocket (docs/realtime.md; ADR 0008). The adapter
//! only speaks the protocol: authentication, topics and what they carry are the application
//! layer's (`app::feed`), with the same proofs as every HTTP request.
//!
//! One connection: authenticate (a `shopfront.bearer.<token>` subprotocol offered beside
//! `shopfront.v1`, or `{"type":"auth","token":…}` as the first message within
//! [`AUTH_TIMEOUT`], or from the console, the session cookie of a same-origin page), then subscribe to topics, each optionally resuming `after` a position.
//! Every message the server sends is one JSON object with a `type`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use poem::web::websocket::{CloseCode, Message, WebSocket, WebSocketConfig, WebSocketStream};
use poem::web::Data;
use poem::{handler, IntoResponse, Request, Response};
use projections::log::LogPosition;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::context::origin_of;
use super::error::ApiError;
use super::problem::Problem;
use crate::app::feed::{Admission, FeedEvent, LiveLog, Topic, TopicName, TopicRefused};
use crate::app::{App, AppError, Caller, Origin};
use aggregates::{AccountId, StoreId};
use projections::notifications::Told;

/// The subprotocol of this feed (`Sec-WebSocket-Protocol`).
pub const PROTOCOL: &str = "shopfront.v1";
/// A subprotocol offered as `shopfront.bearer.<token>` carries the token (browsers cannot set
/// `Authorization` on the upgrade).
pub const BEARER_PROTOCOL_PREFIX: &str = "shopfront.bearer.";

/// How long a connection may stay unauthenticated.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long before its token expires a connection is told to send a fresh one.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(60);
/// Longest a single message may take to leave before the client counts as too slow.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Subscriptions one connection may hold.
pub const MAX_SUBSCRIPTIONS: usize = 32;
/// Notifications sent per query when catching up on the notification center.
const CENTER_BATCH: i64 = 200;

/// Close codes (4000–4999 are the application's).
pub mod close {
    /// Not authenticated: no, a bad, an expired or a revoked token.
    pub const UNAUTHENTICATED: u16 = 4001;
    /// No authentication within [`super::AUTH_TIMEOUT`].
    pub const AUTH_TIMEOUT: u16 = 4008;
    /// Too far behind: resume with `after` = the `resume_after` just sent.
    pub const TOO_SLOW: u16 = 4029;
    /// The service is shutting down (the standard "going away").
    pub const GOING_AWAY: u16 = 1001;
    /// The client stopped answering pings.
    pub const SILENT: u16 = 4002;
    /// The account holds as many live connections on this instance as it may.
    pub const TOO_MANY_CONNECTIONS: u16 = 4009;
}

/// A message from the client.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    /// Authenticate, or replace the token of this connection with a fresh one (same account).
    Auth { token: String },
    /// Follow a topic; with `after`, first everything after that position (a global position
    /// of the log, or for `notifications` a notification id; `0`: from the beginning).
    Subscribe {
        topic: TopicName,
        store_id: Option<Uuid>,
        after: Option<i64>,
    },
    Unsubscribe {
        topic: TopicName,
        store_id: Option<Uuid>,
    },
    /// An application-level ping (browsers cannot send protocol pings): answered `pong`.
    Ping,
}

/// The endpoint (routed at `/api/v1/ws`).
#[handler]
pub fn ws(req: &Request, websocket: WebSocket, app: Data<&Arc<App>>) -> Response {
    let Some(live) = app.live_log().cloned() else {
        return Problem::new(
            "live-feeds-unavailable",
            "Live feeds unavailable",
            503,
            "this instance does not serve live feeds".to_owned(),
        )
        .to_response();
    };
    let offered_token = req
        .headers()
        .get_all(poem::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|protocol| protocol.trim().strip_prefix(BEARER_PROTOCOL_PREFIX))
        .map(str::to_owned)
        // The console's pages: the session cookie of a page of this very service.
        .or_else(|| crate::console::session_secret_for_websocket(req));
    let origin = origin_of(req);
    let app = app.0.clone();
    websocket
        .protocols([PROTOCOL])
        .config(
            WebSocketConfig::default()
                // Clients send small control messages only; what the server writes waits in
                // at most this much before the client counts as too slow.
                .read_buffer_size(4 * 1024)
                .write_buffer_size(0)
                .max_write_buffer_size(1024 * 1024)
                .max_message_size(Some(64 * 1024))
                .max_frame_size(Some(64 * 1024)),
        )
        .on_upgrade(move |socket| async move {
            let (sink, stream) = socket.split();
            let (kpis_ready_tx, kpis_ready) = mpsc::channel(MAX_SUBSCRIPTIONS);
            let connection = Connection {
                app,
                live,
                origin,
                sink,
                session: None,
                subscriptions: Vec::new(),
                center: None,
                kpis_due: HashMap::new(),
                kpis_in_flight: HashSet::new(),
                kpis_ready,
                kpis_ready_tx,
            };
            connection.run(stream, offered_token).await;
        })
        .into_response()
}

/// Why a connection ends.
enum End {
    /// The client closed or vanished: nothing more to send.
    Gone,
    /// Close with this code and reason.
    Close(u16, String),
}

type Sink = SplitSink<WebSocketStream, Message>;

/// Who the connection acts for, until when.
struct Session {
    caller: Caller,
    /// The account's place among this instance's live connections.
    _admission: Admission,
    token: String,
    expires_at: Option<DateTime<Utc>>,
    warned: bool,
}

struct Subscription {
    topic: Topic,
    /// The topic's live events (`None` for the notification center, followed apart).
    receiver: Option<Receiver<Arc<FeedEvent>>>,
    /// Live events up to here were already sent by this subscription's replay (or asked to be
    /// skipped by the client's `after`).
    skip_until: LogPosition,
    /// The last position the receiver gave (or the tail it started after): where the client
    /// resumes if this subscription falls behind.
    seen: LogPosition,
}

/// The notification center's cursor of a connection following `notifications`.
struct Center {
    account_id: AccountId,
    after: i64,
    told: Receiver<Told>,
}

struct Connection {
    app: Arc<App>,
    live: LiveLog,
    origin: Origin,
    sink: Sink,
    session: Option<Session>,
    subscriptions: Vec<Subscription>,
    center: Option<Center>,
    /// KPI topics with figures to send, and the event they must show.
    kpis_due: HashMap<StoreId, LogPosition>,
    /// KPI figures being read (off the connection's loop: reading waits for the read model).
    kpis_in_flight: HashSet<StoreId>,
    kpis_ready: mpsc::Receiver<(StoreId, Result<Option<Value>, AppError>)>,
    kpis_ready_tx: mpsc::Sender<(StoreId, Result<Option<Value>, AppError>)>,
}

impl Connection {
    async fn run(mut self, mut stream: SplitStream<WebSocketStream>, token: Option<String>) {
        let end = match self.serve(&mut stream, token).await {
            Ok(()) => End::Gone,
            Err(end) => end,
        };
        if let End::Close(code, reason) = end {
            let _ = tokio::time::timeout(
                SEND_TIMEOUT,
                self.sink
                    .send(Message::Close(Some((CloseCode::from(code), reason)))),
            )
            .await;
        }
        // A client that reads nothing cannot hold the connection open: bounded like a send.
        let _ = tokio::time::timeout(SEND_TIMEOUT, self.sink.close()).await;
    }

    async fn serve(
        &mut self,
        stream: &mut SplitStream<WebSocketStream>,
        token: Option<String>,
    ) -> Result<(), End> {
        let token = match token {
            Some(token) => token,
            None => self.first_message_token(stream).await?,
        };
        self.authenticate(token).await?;
        let closing = self.live.closing().clone();
        let settings = self.live.settings();
        // A client silent for two pings is gone.
        let mut ping = tokio::time::interval(settings.ping);
        ping.reset();
        let mut recheck = tokio::time::interval(settings.recheck);
        recheck.reset();
        let mut last_heard = Instant::now();
        loop {
            let expiry = self.expiry_deadline();
            tokio::select! {
                // Shutdown, then the deadlines (expiry, rechecks, pings) before whatever the
                // client or the log sends: a busy connection cannot starve them.
                biased;
                _ = closing.cancelled() => {
                    return Err(End::Close(close::GOING_AWAY, "the service is shutting down".into()));
                }
                _ = sleep_until(expiry) => self.on_expiry().await?,
                _ = recheck.tick() => self.recheck().await?,
                _ = ping.tick() => {
                    if last_heard.elapsed() > settings.ping * 2 {
                        return Err(End::Close(close::SILENT, "no answer to pings".into()));
                    }
                    self.send(Message::Ping(Vec::new())).await?;
                }
                message = stream.next() => {
                    match message {
                        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                        Some(Ok(Message::Text(text))) => self.on_message(&text).await?,
                        Some(Ok(Message::Binary(_))) => {
                            self.send_error(None, bad_message("send JSON text messages")).await?
                        }
                        Some(Ok(_)) => {} // pings are answered by the protocol, pongs noted
                    }
                    // Heard now, after whatever the message made the server do (a replay).
                    last_heard = Instant::now();
                }
                (index, event) = next_live(&mut self.subscriptions) => self.on_live(index, event).await?,
                told = next_told(&mut self.center) => self.on_told(told).await?,
                Some((store_id, figures)) = self.kpis_ready.recv() => {
                    self.on_kpis(store_id, figures).await?
                }
            }
            self.send_due_kpis().await?;
        }
    }

    /// The token of the first message, which must be `auth`, within [`AUTH_TIMEOUT`].
    async fn first_message_token(
        &mut self,
        stream: &mut SplitStream<WebSocketStream>,
    ) -> Result<String, End> {
        let deadline = Instant::now() + AUTH_TIMEOUT;
        loop {
            let message = tokio::time::timeout_at(deadline, stream.next())
                .await
                .map_err(|_| {
                    End::Close(
                        close::AUTH_TIMEOUT,
                        format!(
                            "authenticate within {} s: send {{\"type\":\"auth\",\"token\":\"…\"}}",
                            AUTH_TIMEOUT.as_secs()
                        ),
                    )
                })?;
            match message {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Err(End::Gone),
                Some(Ok(Message::Text(text))) => {
                    return match serde_json::from_str::<ClientMessage>(&text) {
                        Ok(ClientMessage::Auth { token }) => Ok(token),
                        _ => Err(End::Close(
                            close::UNAUTHENTICATED,
                            "the first message must be {\"type\":\"auth\",\"token\":\"…\"}".into(),
                        )),
                    };
                }
                Some(Ok(_)) => {}
            }
        }
    }

    async fn authenticate(&mut self, token: String) -> Result<(), End> {
        let authenticated = if token.starts_with(crate::app::BROWSER_SESSION_PREFIX) {
            // The console's session cookie (`session_secret_for_websocket`).
            self.app.authenticate_browser(&token).await
        } else {
            self.app.authenticate_until(&token).await
        };
        let (principal, expires_at) = match authenticated {
            Ok(found) => found,
            Err(AppError::Auth(err)) => {
                return Err(End::Close(close::UNAUTHENTICATED, err.to_string()))
            }
            Err(err) => return Err(internal(err)),
        };
        if let Some(session) = &self.session {
            if session.caller.account_id() != principal.account_id() {
                return Err(End::Close(
                    close::UNAUTHENTICATED,
                    "a connection's token may only be replaced by one of the same account".into(),
                ));
            }
        }
        let caller = Caller::new(principal, self.origin.clone());
        let account_id = caller.account_id();
        let admission = match self.session.take() {
            // A fresh token on this connection keeps its place.
            Some(session) => session._admission,
            None => self.live.admit(account_id).ok_or_else(|| {
                End::Close(
                    close::TOO_MANY_CONNECTIONS,
                    format!(
                        "this account holds {} live connections on this instance already",
                        self.live.settings().connections_per_account
                    ),
                )
            })?,
        };
        self.session = Some(Session {
            caller,
            _admission: admission,
            token,
            expires_at,
            warned: false,
        });
        self.send_json(json!({
            "type": "authenticated",
            "account_id": account_id.0,
            "expires_at": expires_at,
        }))
        .await
    }

    fn caller(&self) -> &Caller {
        &self
            .session
            .as_ref()
            .expect("a connection serves only once authenticated")
            .caller
    }

    fn expiry_deadline(&self) -> Option<Instant> {
        let session = self.session.as_ref()?;
        let expires_at = session.expires_at?;
        let at = if session.warned {
            expires_at
        } else {
            expires_at - chrono::Duration::from_std(EXPIRY_WARNING).unwrap_or_default()
        };
        let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        Some(Instant::now() + wait)
    }

    async fn on_expiry(&mut self) -> Result<(), End> {
        let Some(session) = self.session.as_mut() else {
            return Ok(());
        };
        if session.warned {
            return Err(End::Close(
                close::UNAUTHENTICATED,
                "the token expired; connect again with a fresh one".into(),
            ));
        }
        session.warned = true;
        let expires_at = session.expires_at;
        self.send_json(json!({
            "type": "token_expiring",
            "expires_at": expires_at,
            "detail": "send {\"type\":\"auth\",\"token\":\"…\"} with a fresh token to stay connected",
        }))
        .await
    }

    async fn on_message(&mut self, text: &str) -> Result<(), End> {
        let message = match serde_json::from_str::<ClientMessage>(text) {
            Ok(message) => message,
            Err(err) => return self.send_error(None, bad_message(&err.to_string())).await,
        };
        match message {
            ClientMessage::Auth { token } => self.authenticate(token).await,
            ClientMessage::Ping => self.send_json(json!({"type": "pong"})).await,
            ClientMessage::Subscribe {
                topic,
                store_id,
                after,
            } => self.subscribe(topic, store_id.map(StoreId), after).await,
            ClientMessage::Unsubscribe { topic, store_id } => {
                let store_id = store_id.map(StoreId);
                let before = self.subscriptions.len();
                self.subscriptions
                    .retain(|s| !(s.topic.name() == topic && s.topic.store_id() == store_id));
                if topic == TopicName::Notifications {
                    self.center = None;
                }
                if topic == TopicName::Kpis {
                    if let Some(store_id) = store_id {
                        self.kpis_due.remove(&store_id);
                    }
                }
                let removed =
                    before != self.subscriptions.len() || topic == TopicName::Notifications;
                self.send_json(json!({
                    "type": "unsubscribed",
                    "topic": topic,
                    "store_id": store_id.map(|s| s.0),
                    "was_subscribed": removed,
                }))
                .await
            }
        }
    }

    async fn subscribe(
        &mut self,
        name: TopicName,
        store_id: Option<StoreId>,
        after: Option<i64>,
    ) -> Result<(), End> {
        let echo = (name, store_id);
        if self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            let problem = Problem::new(
                "too-many-subscriptions",
                "Too many subscriptions",
                422,
                format!("a connection may follow at most {MAX_SUBSCRIPTIONS} topics"),
            );
            return self.send_error(Some(echo), problem).await;
        }
        let topic = match self
            .app
            .authorize_topic(self.caller(), name, store_id)
            .await
        {
            Ok(topic) => topic,
            Err(refused) => return self.send_error(Some(echo), refusal(refused)).await,
        };
        if self.subscriptions.iter().any(|s| s.topic == topic) {
            let problem = Problem::new(
                "already-subscribed",
                "Already subscribed",
                409,
                "this connection already follows the topic".to_owned(),
            );
            return self.send_error(Some(echo), problem).await;
        }
        if after.is_some_and(|after| after < 0) {
            let problem = Problem::new(
                "invalid-after",
                "Invalid value",
                422,
                "`after` is a position: 0 or more".to_owned(),
            )
            .with_field("after");
            return self.send_error(Some(echo), problem).await;
        }
        if let Topic::Notifications(account_id) = topic {
            return self.follow_center(topic, account_id, after).await;
        }
        let after = match after {
            None => None,
            Some(after) => match self.app.feed_position(after).await.map_err(internal)? {
                Some(position) => Some(position),
                None => {
                    let problem = Problem::new(
                        "unknown-position",
                        "Unknown position",
                        422,
                        format!("there is no event at global position {after}"),
                    )
                    .with_field("after");
                    return self.send_error(Some(echo), problem).await;
                }
            },
        };
        let (receiver, live_from) = self.live.subscribe(topic);
        self.send_json(json!({
            "type": "subscribed",
            "topic": name,
            "store_id": topic.store_id().map(|s| s.0),
            "live_from": live_from.global_position,
        }))
        .await?;
        // What was missed, read from the log up to where the live events take over.
        let mut replayed = 0usize;
        if let (Some(after), false) = (after, matches!(topic, Topic::Kpis(_))) {
            let mut cursor = Some(after);
            while let Some(from) = cursor.filter(|c| *c < live_from) {
                if self.live.closing().is_cancelled() {
                    return Err(End::Close(
                        close::GOING_AWAY,
                        "the service is shutting down".into(),
                    ));
                }
                let (batch, next) = self
                    .live
                    .replay(&topic, from, live_from)
                    .await
                    .map_err(internal)?;
                cursor = next;
                for event in batch.iter().filter(|e| topic.matches(e)) {
                    self.send_event(&topic, event).await?;
                    replayed += 1;
                }
            }
        }
        self.subscriptions.push(Subscription {
            topic,
            receiver: Some(receiver),
            skip_until: after.map_or(live_from, |after| after.max(live_from)),
            seen: live_from,
        });
        if let Topic::Kpis(store_id) = topic {
            self.kpis_due.insert(store_id, live_from);
        }
        self.send_json(json!({
            "type": "caught_up",
            "topic": name,
            "store_id": topic.store_id().map(|s| s.0),
            "replayed": replayed,
            "live_from": live_from.global_position,
        }))
        .await
    }

    async fn follow_center(
        &mut self,
        topic: Topic,
        account_id: AccountId,
        after: Option<i64>,
    ) -> Result<(), End> {
        // Listen first, then read: a row committed in between is read now or told later.
        let told = self.live.notifications().told();
        let after = match after {
            Some(after) => after,
            None => self
                .app
                .latest_notification_id(account_id)
                .await
                .map_err(internal)?,
        };
        self.center = Some(Center {
            account_id,
            after,
            told,
        });
        self.subscriptions.push(Subscription {
            topic,
            receiver: None,
            skip_until: LogPosition::START,
            seen: LogPosition::START,
        });
        self.send_json(json!({
            "type": "subscribed",
            "topic": TopicName::Notifications,
            "notification_id": after,
        }))
        .await?;
        let replayed = self.send_center().await?;
        self.send_json(json!({
            "type": "caught_up",
            "topic": TopicName::Notifications,
            "replayed": replayed,
        }))
        .await
    }

    /// Sends the notification center's rows after the cursor; how many.
    async fn send_center(&mut self) -> Result<usize, End> {
        let mut sent = 0;
        loop {
            let Some(center) = &self.center else {
                return Ok(sent);
            };
            let rows = self
                .app
                .notifications_after(center.account_id, center.after, CENTER_BATCH)
                .await
                .map_err(internal)?;
            let done = (rows.len() as i64) < CENTER_BATCH;
            for row in rows {
                let id = row.notification_id;
                let mut message = serde_json::to_value(&row).unwrap_or(Value::Null);
                if let Value::Object(fields) = &mut message {
                    fields.insert("type".into(), json!("notification"));
                    fields.insert("topic".into(), json!(TopicName::Notifications));
                    fields.insert("position".into(), json!(row.global_position));
                }
                self.send_json(message).await?;
                if let Some(center) = &mut self.center {
                    center.after = id;
                }
                sent += 1;
            }
            if done {
                return Ok(sent);
            }
        }
    }

    async fn on_told(&mut self, told: Result<Told, RecvError>) -> Result<(), End> {
        let Some(center) = &self.center else {
            return Ok(());
        };
        let mine = match told {
            Ok(Told::Account(account)) => account == center.account_id.0,
            // Everyone looks again; so does a receiver that missed some.
            Ok(Told::Everyone) | Err(RecvError::Lagged(_)) => true,
            Err(RecvError::Closed) => false,
        };
        if mine {
            self.send_center().await?;
        }
        Ok(())
    }

    async fn on_live(
        &mut self,
        index: usize,
        event: Result<Arc<FeedEvent>, RecvError>,
    ) -> Result<(), End> {
        let subscription = &mut self.subscriptions[index];
        let topic = subscription.topic;
        let event = match event {
            Ok(event) => event,
            Err(RecvError::Lagged(missed)) => {
                // Not before what the client said it had (`after`), nor what it was sent.
                let resume_after = subscription
                    .seen
                    .max(subscription.skip_until)
                    .global_position;
                self.send_json(json!({
                    "type": "lagging",
                    "topic": topic.name(),
                    "store_id": topic.store_id().map(|s| s.0),
                    "resume_after": resume_after,
                    "detail": format!(
                        "this subscription fell {missed} events behind; reconnect and subscribe \
                         with after = resume_after"
                    ),
                }))
                .await?;
                return Err(End::Close(close::TOO_SLOW, "too far behind".into()));
            }
            Err(RecvError::Closed) => {
                return Err(End::Close(
                    close::GOING_AWAY,
                    "the service is shutting down".into(),
                ))
            }
        };
        subscription.seen = event.position;
        if event.position <= subscription.skip_until {
            return Ok(());
        }
        match topic {
            Topic::Kpis(store_id) => {
                self.kpis_due.insert(store_id, event.position);
                Ok(())
            }
            topic => self.send_event(&topic, &event).await,
        }
    }

    /// Starts reading figures for KPI topics that changed, once no live event is waiting
    /// (several changes in a row make one message), one read per store at a time. A read waits
    /// for the KPI read model to show the change, so it runs beside the connection's loop and
    /// comes back through `kpis_ready`.
    async fn send_due_kpis(&mut self) -> Result<(), End> {
        let waiting = self
            .subscriptions
            .iter()
            .any(|s| s.receiver.as_ref().is_some_and(|r| !r.is_empty()));
        if self.kpis_due.is_empty() || waiting {
            return Ok(());
        }
        let due: Vec<(StoreId, LogPosition)> = self
            .kpis_due
            .iter()
            .filter(|(store, _)| !self.kpis_in_flight.contains(store))
            .map(|(store, position)| (*store, *position))
            .collect();
        for (store_id, position) in due {
            self.kpis_due.remove(&store_id);
            self.kpis_in_flight.insert(store_id);
            let (app, ready) = (self.app.clone(), self.kpis_ready_tx.clone());
            tokio::spawn(async move {
                let topic = Topic::Kpis(store_id);
                let wait_for = (position > LogPosition::START).then_some(position);
                let figures = app.live_kpis(&topic, wait_for).await.map(|kpis| {
                    kpis.map(|kpis| {
                        json!({
                            "type": "kpis",
                            "topic": TopicName::Kpis,
                            "store_id": store_id.0,
                            "position": position.global_position,
                            "day": kpis.day,
                            "figures": kpis.figures,
                        })
                    })
                });
                // The connection may have ended meanwhile: nobody to tell.
                let _ = ready.send((store_id, figures)).await;
            });
        }
        Ok(())
    }

    /// Figures read for a KPI topic: sent if the topic is still followed.
    async fn on_kpis(
        &mut self,
        store_id: StoreId,
        figures: Result<Option<Value>, AppError>,
    ) -> Result<(), End> {
        self.kpis_in_flight.remove(&store_id);
        let followed = self
            .subscriptions
            .iter()
            .any(|s| s.topic == Topic::Kpis(store_id));
        match figures.map_err(internal)? {
            Some(message) if followed => self.send_json(message).await,
            _ => Ok(()),
        }
    }

    /// Checks the token (a revoked session or a blocked account ends the connection) and every
    /// subscription (one no longer allowed ends, with the reason).
    async fn recheck(&mut self) -> Result<(), End> {
        let Some(session) = &self.session else {
            return Ok(());
        };
        let token = session.token.clone();
        let warned = session.warned;
        match self.app.authenticate_until(&token).await {
            Ok(_) => {}
            Err(AppError::Auth(err)) => {
                return Err(End::Close(close::UNAUTHENTICATED, err.to_string()))
            }
            Err(err) => return Err(internal(err)),
        }
        if let Some(session) = &mut self.session {
            session.warned = warned;
        }
        let topics: Vec<Topic> = self.subscriptions.iter().map(|s| s.topic).collect();
        for topic in topics {
            let refused = match self
                .app
                .authorize_topic(self.caller(), topic.name(), topic.store_id())
                .await
            {
                Ok(_) => continue,
                Err(TopicRefused::App(err)) if !refusal_is_final(&err) => {
                    return Err(internal(err))
                }
                Err(refused) => refusal(refused),
            };
            self.subscriptions.retain(|s| s.topic != topic);
            if let Topic::Kpis(store_id) = topic {
                self.kpis_due.remove(&store_id);
            }
            if matches!(topic, Topic::Notifications(_)) {
                self.center = None;
            }
            self.send_json(json!({
                "type": "unsubscribed",
                "topic": topic.name(),
                "store_id": topic.store_id().map(|s| s.0),
                "was_subscribed": true,
                "problem": refused,
            }))
            .await?;
        }
        Ok(())
    }

    async fn send_event(&mut self, topic: &Topic, event: &FeedEvent) -> Result<(), End> {
        let raw = &event.raw;
        let mut message = json!({
            "type": "event",
            "topic": topic.name(),
            "store_id": event.store_id.map(|s| s.0),
            "position": raw.global_position,
            "transaction_id": raw.transaction_id,
            "aggregate_type": raw.aggregate_type,
            "aggregate_id": raw.aggregate_id,
            "sequence": raw.sequence,
            "event_type": raw.event_type,
            "event_version": raw.event_version,
            "recorded_at": raw.recorded_at,
            "payload": event.visible_payload(),
        });
        // Who did what, through which channel: the audit view only.
        if matches!(topic, Topic::Events(_)) {
            message["metadata"] = json!(event.metadata);
        }
        self.send_json(message).await
    }

    async fn send_error(
        &mut self,
        topic: Option<(TopicName, Option<StoreId>)>,
        problem: Problem,
    ) -> Result<(), End> {
        let mut message = json!({ "type": "error", "problem": problem });
        if let Some((name, store_id)) = topic {
            message["topic"] = json!(name);
            message["store_id"] = json!(store_id.map(|s| s.0));
        }
        self.send_json(message).await
    }

    async fn send_json(&mut self, message: Value) -> Result<(), End> {
        self.send(Message::Text(message.to_string())).await
    }

    async fn send(&mut self, message: Message) -> Result<(), End> {
        match tokio::time::timeout(SEND_TIMEOUT, self.sink.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => Err(End::Close(
                close::TOO_SLOW,
                "the client does not read what it is sent".into(),
            )),
        }
    }
}

/// The next live event of any subscription, with the subscription's index.
async fn next_live(
    subscriptions: &mut [Subscription],
) -> (usize, Result<Arc<FeedEvent>, RecvError>) {
    let receiving: Vec<_> = subscriptions
        .iter_mut()
        .enumerate()
        .filter_map(|(index, s)| {
            let receiver = s.receiver.as_mut()?;
            // `recv` is cancel-safe: the futures not chosen lose nothing.
            Some(Box::pin(async move { (index, receiver.recv().await) }))
        })
        .collect();
    if receiving.is_empty() {
        return std::future::pending().await;
    }
    futures::future::select_all(receiving).await.0
}

async fn next_told(center: &mut Option<Center>) -> Result<Told, RecvError> {
    match center {
        Some(center) => center.told.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn bad_message(detail: &str) -> Problem {
    Problem::new(
        "invalid-message",
        "Invalid message",
        400,
        format!(
            "{detail}; expected one of {{\"type\":\"auth\"|\"subscribe\"|\"unsubscribe\"|\"ping\", …}}"
        ),
    )
}

/// The problem a refused subscription answers, as the same refusal would over HTTP.
fn refusal(refused: TopicRefused) -> Problem {
    match refused {
        TopicRefused::StoreRequired(name) => Problem::new(
            "invalid-store_id",
            "Invalid value",
            422,
            format!(
                "topic `{}` needs a `store_id`",
                json!(name).as_str().unwrap_or("?")
            ),
        )
        .with_field("store_id"),
        TopicRefused::NotFound => Problem::new(
            "store-not-found",
            "Not found",
            404,
            "no such store".to_owned(),
        ),
        TopicRefused::App(err) => ApiError::from(err).problem(),
    }
}

/// A refusal that stands, not a failure to look (the database out of reach, a bug).
fn refusal_is_final(err: &AppError) -> bool {
    !matches!(
        err,
        AppError::Unavailable(_) | AppError::Internal(_) | AppError::Conflict { .. }
    )
}

fn internal(err: AppError) -> End {
    tracing::error!(error = %err, "a live feed connection failed");
    End::Close(1011, "internal error; reconnect and resume".into())
}
