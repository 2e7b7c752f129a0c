//! The live feeds (`/api/v1/ws`) through the real server and real WebSocket clients:
//! authentication, topics under the RBAC matrix, resume without gap or duplicate, two
//! instances on one database, slow clients, token expiry, revocation and shutdown.

use std::time::Duration;

use aggregates::{ProductId, StoreId, StoreRole};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use shopfront::app::{grant, App};
use shopfront::config::ServeSettings;
use shopfront::testing;
use sqlx::PgPool;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{
    customer, spawn_app, spawn_app_on, spawn_app_with, Shop, Staff, TestApp, TestDb,
};

/// How long a test waits for a message the server owes it before failing.
const OWED: Duration = Duration::from_secs(20);

/// What a client read.
#[derive(Debug)]
enum Read {
    Json(Value),
    Closed(Option<u16>, String),
}

/// A real WebSocket client of the live feeds.
pub(crate) struct Feed {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Feed {
    /// Connects, offering `token` as the `shopfront.bearer.` subprotocol.
    pub(crate) async fn connect(app: &TestApp, token: &str) -> Feed {
        let mut request = ws_url(app).into_client_request().expect("request");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            format!("shopfront.v1, shopfront.bearer.{token}")
                .parse()
                .expect("header"),
        );
        let (socket, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("the upgrade succeeds");
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some("shopfront.v1"),
            "the server picks the feed's protocol, never echoes the token"
        );
        let mut feed = Feed { socket };
        assert_eq!(feed.expect("authenticated").await["type"], "authenticated");
        feed
    }

    /// Connects without credentials (they are to come in the first message, or not at all).
    async fn connect_bare(app: &TestApp) -> Feed {
        let (socket, _) = tokio_tungstenite::connect_async(ws_url(app))
            .await
            .expect("the upgrade succeeds");
        Feed { socket }
    }

    async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .expect("send");
    }

    /// The next JSON message or the close, skipping protocol pings.
    async fn read(&mut self) -> Read {
        let deadline = tokio::time::Instant::now() + OWED;
        loop {
            let next = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .expect("the server sends something in time");
            match next {
                Some(Ok(Message::Text(text))) => {
                    return Read::Json(serde_json::from_str(&text).expect("JSON"))
                }
                Some(Ok(Message::Close(frame))) => {
                    return Read::Closed(
                        frame.as_ref().map(|f| u16::from(f.code)),
                        frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    )
                }
                Some(Ok(_)) => continue,
                Some(Err(err)) => return Read::Closed(None, err.to_string()),
                None => return Read::Closed(None, "ended".into()),
            }
        }
    }

    /// The next message, which must be JSON of type `kind`.
    pub(crate) async fn expect(&mut self, kind: &str) -> Value {
        match self.read().await {
            Read::Json(message) => {
                assert_eq!(message["type"], kind, "expected {kind}, got {message}");
                message
            }
            closed => panic!("expected {kind}, got {closed:?}"),
        }
    }

    /// The close frame's code, after any messages still in flight.
    async fn closed(&mut self) -> (Option<u16>, String) {
        loop {
            match self.read().await {
                Read::Json(_) => continue,
                Read::Closed(code, reason) => return (code, reason),
            }
        }
    }

    /// Subscribes and reads up to `caught_up`; the events replayed on the way.
    pub(crate) async fn subscribe(
        &mut self,
        topic: &str,
        store: Option<StoreId>,
        after: Option<i64>,
    ) -> Vec<Value> {
        self.send(json!({"type": "subscribe", "topic": topic, "store_id": store.map(|s| s.0), "after": after}))
            .await;
        let subscribed = self.expect("subscribed").await;
        assert_eq!(subscribed["topic"], topic);
        let mut replayed = Vec::new();
        loop {
            match self.read().await {
                Read::Json(m) if m["type"] == "caught_up" => {
                    assert_eq!(m["replayed"].as_u64(), Some(replayed.len() as u64));
                    return replayed;
                }
                Read::Json(m)
                    if ["event", "kpis", "notification"]
                        .contains(&m["type"].as_str().unwrap_or("")) =>
                {
                    replayed.push(m)
                }
                other => panic!("while subscribing to {topic}: {other:?}"),
            }
        }
    }

    /// A subscription the server refuses: its problem.
    async fn refused(&mut self, topic: &str, store: Option<StoreId>) -> Value {
        self.send(json!({"type": "subscribe", "topic": topic, "store_id": store.map(|s| s.0)}))
            .await;
        let error = self.expect("error").await;
        assert_eq!(error["topic"], topic);
        error["problem"].clone()
    }

    /// The next `n` events.
    async fn events(&mut self, n: usize) -> Vec<Value> {
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            match self.read().await {
                Read::Json(m) if m["type"] == "event" => events.push(m),
                Read::Json(_) => {}
                closed => panic!("closed after {} of {n} events: {closed:?}", events.len()),
            }
        }
        events
    }
}

fn ws_url(app: &TestApp) -> String {
    format!("{}/api/v1/ws", app.address.replacen("http", "ws", 1))
}

fn positions(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|e| e["position"].as_i64().expect("position"))
        .collect()
}

/// The global positions of the store's order and receipt events after `after`, in log order.
async fn order_events_after(pool: &PgPool, store: StoreId, after: i64) -> Vec<i64> {
    sqlx::query_scalar(
        "select e.global_position from events e
          where e.aggregate_type in ('Order', 'PaymentReceipt')
            and e.global_position > $2
            and exists (select 1 from events f where f.aggregate_type = e.aggregate_type
                          and f.aggregate_id = e.aggregate_id and f.sequence = 1
                          and f.payload -> (f.event_type) ->> 'store_id' = $1::text)
          order by e.transaction_id, e.global_position",
    )
    .bind(store.0)
    .bind(after)
    .fetch_all(pool)
    .await
    .expect("the store's order events")
}

/// An owner and a vendor on a store opened over HTTP, a product with plenty of stock, and a
/// second store the vendor has nothing to do with.
struct World {
    owner: Staff,
    vendor: Staff,
    shop: Shop,
    product: ProductId,
    other_store: StoreId,
}

async fn world(app: &TestApp) -> World {
    let admin = app.staff("admin@example.com", true).await;
    let owner = app.staff("owner@example.com", false).await;
    let vendor = app.staff("vendor@example.com", false).await;
    let other_owner = app.staff("other@example.com", false).await;
    let store_id = StoreId(
        app.open_store(&admin, &owner, "Live shop")
            .await
            .parse()
            .expect("id"),
    );
    let other_store = StoreId(
        app.open_store(&admin, &other_owner, "Elsewhere")
            .await
            .parse()
            .expect("id"),
    );
    let shop = Shop::of(&owner, store_id);
    app.app
        .assign_staff_role(
            &shop.access::<grant::ManageStaff>(&app.app).await,
            vendor.account_id,
            StoreRole::Vendor,
        )
        .await
        .expect("vendor assigned");
    let product = shop.product(&app.app, "TEA-1", 100_00, 100_000).await;
    World {
        owner,
        vendor,
        shop,
        product,
        other_store,
    }
}

/// Places `n` one-unit orders by new customers; the order ids.
async fn place_orders(app: &App, shop: &Shop, product: ProductId, n: usize) {
    for _ in 0..n {
        let (_, caller) = customer();
        shop.place(app, &caller, &[(product, 1)])
            .await
            .expect("order placed");
    }
}

#[tokio::test]
async fn staff_follow_their_store_live_within_the_rbac_matrix() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let mut owner = Feed::connect(&app, &w.owner.token).await;
    assert!(owner
        .subscribe("orders", Some(w.shop.store_id), None)
        .await
        .is_empty());

    place_orders(&app.app, &w.shop, w.product, 1).await;
    let placed = owner.events(1).await.remove(0);
    assert_eq!(placed["topic"], "orders");
    assert_eq!(placed["event_type"], "OrderPlaced");
    assert_eq!(placed["store_id"], json!(w.shop.store_id.0));
    assert!(placed["position"].as_i64().expect("position") > 0);
    assert!(
        placed.get("metadata").is_none(),
        "who did what is for the audit feed only"
    );
    assert_eq!(
        positions(&[placed]),
        order_events_after(&app.db.pool, w.shop.store_id, 0).await
    );

    // The RBAC matrix, as over HTTP: another store is not found, the audit feed is not a
    // vendor's, the whole log only a platform admin's, and a store topic needs its store.
    let mut vendor = Feed::connect(&app, &w.vendor.token).await;
    let problem = vendor.refused("orders", Some(w.other_store)).await;
    assert_eq!(
        (
            problem["status"].as_u64(),
            problem["type"].as_str().map(slug)
        ),
        (Some(404), Some("store-not-found"))
    );
    let problem = vendor.refused("events", Some(w.shop.store_id)).await;
    assert_eq!(problem["status"], 403, "{problem}");
    let problem = vendor.refused("events", None).await;
    assert_eq!(problem["status"], 403, "{problem}");
    let problem = vendor.refused("inventory", None).await;
    assert_eq!(
        (problem["status"].as_u64(), problem["field"].as_str()),
        (Some(422), Some("store_id"))
    );
    assert!(vendor
        .subscribe("inventory", Some(w.shop.store_id), None)
        .await
        .is_empty());

    // Bad messages answer an error and keep the connection.
    vendor
        .send(json!({"type": "subscribe", "topic": "gossip"}))
        .await;
    assert_eq!(
        slug(
            vendor.expect("error").await["problem"]["type"]
                .as_str()
                .expect("type")
        ),
        "invalid-message"
    );
    vendor.send(json!({"type": "ping"})).await;
    vendor.expect("pong").await;

    // Stock received is inventory news for the vendor; orders are not theirs to follow here.
    app.app
        .receive_stock(
            &w.shop.access::<grant::ManageStock>(&app.app).await,
            w.product,
            5,
            None,
        )
        .await
        .expect("received");
    let received = vendor.events(1).await.remove(0);
    assert_eq!(
        (received["topic"].as_str(), received["event_type"].as_str()),
        (Some("inventory"), Some("StockReceived"))
    );
}

/// The last path segment of a problem type URI.
fn slug(problem_type: &str) -> &str {
    problem_type.rsplit('/').next().unwrap_or(problem_type)
}

#[tokio::test]
async fn authentication_is_required_promptly_and_checked() {
    let app = spawn_app().await;
    let w = world(&app).await;

    // Nothing sent: closed with 4008 after the authentication timeout.
    let mut silent = Feed::connect_bare(&app).await;
    let (code, reason) = silent.closed().await;
    assert_eq!(code, Some(4008), "{reason}");

    // A bad token, as the first message or as the subprotocol: 4001.
    let mut bad = Feed::connect_bare(&app).await;
    bad.send(json!({"type": "auth", "token": "not-a-token"}))
        .await;
    assert_eq!(bad.closed().await.0, Some(4001));
    let mut request = ws_url(&app).into_client_request().expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "shopfront.v1, shopfront.bearer.forged"
            .parse()
            .expect("header"),
    );
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    assert_eq!(Feed { socket }.closed().await.0, Some(4001));

    // Something else first: 4001 with what to send.
    let mut rude = Feed::connect_bare(&app).await;
    rude.send(json!({"type": "subscribe", "topic": "orders"}))
        .await;
    let (code, reason) = rude.closed().await;
    assert_eq!(code, Some(4001));
    assert!(reason.contains("auth"), "{reason}");

    // The first message may carry the token (what a browser does).
    let mut browser = Feed::connect_bare(&app).await;
    browser
        .send(json!({"type": "auth", "token": w.owner.token}))
        .await;
    let authenticated = browser.expect("authenticated").await;
    assert_eq!(authenticated["account_id"], json!(w.owner.account_id.0));
    assert!(authenticated["expires_at"].is_string());
    // Another account's token cannot take the connection over.
    browser
        .send(json!({"type": "auth", "token": w.vendor.token}))
        .await;
    assert_eq!(browser.closed().await.0, Some(4001));
}

#[tokio::test]
async fn a_client_resuming_after_a_position_gets_every_missed_event_exactly_once() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let mut first = Feed::connect(&app, &w.owner.token).await;
    first.subscribe("orders", Some(w.shop.store_id), None).await;
    place_orders(&app.app, &w.shop, w.product, 3).await;
    let seen = first.events(3).await;
    let last_seen = *positions(&seen).last().expect("three events");
    drop(first);

    // Missed while away, and more placed concurrently with the reconnection: the replay and
    // the live events meet without a gap or a duplicate.
    place_orders(&app.app, &w.shop, w.product, 5).await;
    let busy = {
        let (app, shop) = (app.app.clone(), w.shop.clone());
        let product = w.product;
        tokio::spawn(async move { place_orders(&app, &shop, product, 20).await })
    };
    let mut again = Feed::connect(&app, &w.owner.token).await;
    let mut received = again
        .subscribe("orders", Some(w.shop.store_id), Some(last_seen))
        .await;
    // (What this instance had not handed out yet when the client subscribed comes live.)
    busy.await.expect("orders placed");
    let expected = order_events_after(&app.db.pool, w.shop.store_id, last_seen).await;
    assert_eq!(expected.len(), 25);
    let more = expected.len() - received.len();
    received.extend(again.events(more).await);
    assert_eq!(
        positions(&received),
        expected,
        "every event after the resume point, once, in log order"
    );

    // Nothing more was owed: the next event is a new one.
    place_orders(&app.app, &w.shop, w.product, 1).await;
    let next = again.events(1).await;
    assert_eq!(
        positions(&next),
        order_events_after(
            &app.db.pool,
            w.shop.store_id,
            *expected.last().expect("some")
        )
        .await
    );

    // `after` must name an event of the log.
    again.send(json!({"type": "subscribe", "topic": "events", "store_id": w.shop.store_id.0, "after": 999_999_999})).await;
    let error = again.expect("error").await;
    assert_eq!(
        slug(error["problem"]["type"].as_str().expect("type")),
        "unknown-position"
    );
}

#[tokio::test]
async fn a_client_of_one_instance_sees_what_another_instance_committed() {
    let a = spawn_app().await;
    let w = world(&a).await;
    let db: TestDb = a.db.another_handle().await;
    let database = db.settings();
    let b = spawn_app_on(db, &database, ServeSettings::for_tests()).await;

    let mut on_b = Feed::connect(&b, &w.owner.token).await;
    // From the end of the set-up: B's tail may start while A's projections still hold the
    // set-up's last events below the log's horizon, and would then show them as they arrive.
    a.wait_for_projections().await;
    let set_up = projections::log::last_committed(&a.db.pool)
        .await
        .expect("log")
        .expect("the set-up wrote events");
    let replayed = on_b
        .subscribe(
            "events",
            Some(w.shop.store_id),
            Some(set_up.global_position),
        )
        .await;
    assert!(replayed.is_empty(), "{replayed:?}");
    // Handled by instance A, over its HTTP API.
    let (status, body) = a
        .status_of(
            reqwest::Method::POST,
            &w.owner.token,
            &format!("/api/v1/products/{}/stock/receive", w.product.0),
            Some(json!({"quantity": 7})),
        )
        .await;
    assert!(status == 200 || status == 202, "{status} {body}");
    let event = on_b.events(1).await.remove(0);
    assert_eq!(event["event_type"], "StockReceived");
    assert_eq!(event["payload"]["StockReceived"]["quantity"], 7, "{event}");
    assert_eq!(event["metadata"]["actor_id"], json!(w.owner.account_id.0));
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn a_client_too_far_behind_is_told_where_to_resume_and_disconnected() {
    let mut settings = ServeSettings::for_tests();
    settings.live_buffer = 16;
    let app = spawn_app_with(settings).await;
    let w = world(&app).await;
    let mut products = Vec::new();
    for n in 0..24 {
        products.push(
            w.shop
                .product(&app.app, &format!("LINE-{n}"), 100, 10)
                .await,
        );
    }
    // The instance's tail of the log has handed out the products' events (on a busy machine
    // it may still be behind): only the order's decision is to arrive live below.
    let head = projections::log::last_committed(&app.db.pool)
        .await
        .expect("head")
        .expect("events");
    let live = app.app.live_log().expect("serve runs the live feeds");
    let caught_up = crate::helpers::eventually(Duration::from_secs(20), || async {
        live.tail_position() >= head
    })
    .await;
    assert!(caught_up, "the live tail reaches {head:?}");
    let mut slow = Feed::connect(&app, &w.owner.token).await;
    slow.subscribe("events", Some(w.shop.store_id), None).await;

    // One decision of 25 events (24 reservations and the order): the instance hands them out
    // at once, more than the topic keeps for a subscriber that has not taken them yet.
    let (_, caller) = customer();
    let lines: Vec<_> = products.iter().map(|p| (*p, 1)).collect();
    w.shop
        .place(&app.app, &caller, &lines)
        .await
        .expect("order placed");
    let mut received = Vec::new();
    let resume_after = loop {
        match slow.read().await {
            Read::Json(m) if m["type"] == "event" => received.push(m),
            Read::Json(m) if m["type"] == "lagging" => {
                break m["resume_after"].as_i64().expect("resume_after")
            }
            other => panic!("expected lagging, got {other:?}"),
        }
    };
    assert_eq!(slow.closed().await.0, Some(4029));

    // Resuming there brings the whole decision, once each and in log order.
    let decision: Vec<i64> = sqlx::query_scalar(
        "select global_position from events
          where transaction_id = (select transaction_id from events
                                   where event_type = 'OrderPlaced')
          order by global_position",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("the decision's events");
    assert_eq!(decision.len(), 25);
    let mut again = Feed::connect(&app, &w.owner.token).await;
    let mut all = received;
    all.extend(
        again
            .subscribe("events", Some(w.shop.store_id), Some(resume_after))
            .await,
    );
    let counted = |all: &[Value]| {
        positions(all)
            .into_iter()
            .filter(|p| decision.contains(p))
            .count()
    };
    let owed = 25 - counted(&all);
    all.extend(again.events(owed).await);
    let all = positions(&all);
    let unique: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "no event twice");
    let got: Vec<i64> = all.into_iter().filter(|p| decision.contains(p)).collect();
    assert_eq!(got, decision, "the whole decision once, in log order");
}

#[tokio::test]
async fn tokens_expiring_are_announced_refreshed_and_enforced() {
    let mut settings = ServeSettings::for_tests();
    settings.access_token_ttl_seconds = 6;
    let app = spawn_app_with(settings).await;
    let w = world(&app).await;
    let mut feed = Feed::connect(&app, &w.owner.token).await;
    // Less than a minute left: announced at once.
    let expiring = feed.expect("token_expiring").await;
    assert!(expiring["expires_at"].is_string());
    // A fresh token of the same account keeps the connection.
    let fresh = app.staff_login("owner@example.com").await;
    feed.send(json!({"type": "auth", "token": fresh})).await;
    feed.expect("authenticated").await;
    feed.expect("token_expiring").await;
    // Without another one, it closes when the token expires.
    let (code, reason) = feed.closed().await;
    assert_eq!(code, Some(4001), "{reason}");
    assert!(reason.contains("expired"), "{reason}");
}

#[tokio::test]
async fn a_revoked_session_or_role_ends_what_it_allowed() {
    let mut settings = ServeSettings::for_tests();
    settings.live_recheck_seconds = 1;
    let app = spawn_app_with(settings).await;
    let w = world(&app).await;
    let mut vendor = Feed::connect(&app, &w.vendor.token).await;
    vendor
        .subscribe("orders", Some(w.shop.store_id), None)
        .await;
    app.app
        .revoke_staff_role(
            &w.shop.access::<grant::ManageStaff>(&app.app).await,
            w.vendor.account_id,
        )
        .await
        .expect("revoked");
    let ended = vendor.expect("unsubscribed").await;
    assert_eq!(ended["topic"], "orders");
    assert_eq!(ended["problem"]["status"], 404, "{ended}");
    // Orders placed now are not sent to them.
    place_orders(&app.app, &w.shop, w.product, 1).await;
    vendor.send(json!({"type": "ping"})).await;
    vendor.expect("pong").await;

    // The owner's account is blocked: the connection closes.
    let mut owner = Feed::connect(&app, &w.owner.token).await;
    testing::block_account(&app.app, w.owner.account_id, "a test")
        .await
        .expect("blocked");
    let (code, reason) = owner.closed().await;
    assert_eq!(code, Some(4001), "{reason}");
}

#[tokio::test]
async fn kpi_followers_get_todays_figures_as_they_change() {
    let app = spawn_app().await;
    let w = world(&app).await;
    app.wait_for_projections().await;
    let mut feed = Feed::connect(&app, &w.owner.token).await;
    feed.send(json!({"type": "subscribe", "topic": "kpis", "store_id": w.shop.store_id.0}))
        .await;
    feed.expect("subscribed").await;
    feed.expect("caught_up").await;
    let now = feed.expect("kpis").await;
    let placed_before = now["figures"]["orders_placed"].as_i64().unwrap_or(0);
    place_orders(&app.app, &w.shop, w.product, 2).await;
    // The figures follow: each message shows at least the orders placed up to its position.
    let mut placed = placed_before;
    while placed < placed_before + 2 {
        let kpis = feed.expect("kpis").await;
        assert_eq!(kpis["store_id"], json!(w.shop.store_id.0));
        placed = kpis["figures"]["orders_placed"].as_i64().expect("figures");
    }
    assert_eq!(placed, placed_before + 2);
}

#[tokio::test]
async fn shutting_down_closes_live_connections_with_going_away() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let mut feed = Feed::connect(&app, &w.owner.token).await;
    feed.subscribe("orders", Some(w.shop.store_id), None).await;
    let stopping = tokio::spawn(app.stop());
    assert_eq!(feed.closed().await.0, Some(1001));
    stopping.await.expect("stopped");
}

#[tokio::test]
async fn an_account_holds_a_bounded_number_of_live_connections() {
    let mut settings = ServeSettings::for_tests();
    settings.live_connections_per_account = 2;
    let app = spawn_app_with(settings).await;
    let w = world(&app).await;
    let mut first = Feed::connect(&app, &w.owner.token).await;
    let _second = Feed::connect(&app, &w.owner.token).await;
    // A third is refused; another account is not affected.
    let mut third = Feed::connect_bare(&app).await;
    third
        .send(json!({"type": "auth", "token": w.owner.token}))
        .await;
    let (code, reason) = third.closed().await;
    assert_eq!(code, Some(4009), "{reason}");
    let _vendor = Feed::connect(&app, &w.vendor.token).await;

    // A connection that ends gives its place back.
    first.socket.close(None).await.expect("close");
    assert_eq!(first.closed().await.0, None);
    let readmitted = crate::helpers::eventually(OWED, || async {
        let mut again = Feed::connect_bare(&app).await;
        again
            .send(json!({"type": "auth", "token": w.owner.token}))
            .await;
        matches!(again.read().await, Read::Json(m) if m["type"] == "authenticated")
    })
    .await;
    assert!(
        readmitted,
        "the place of the closed connection is free again"
    );
}
