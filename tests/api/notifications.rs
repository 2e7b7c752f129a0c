//! Notifications end to end: the real service with a fake Telegram Bot API and an SMTP sink
//! written for the test. An order event reaches the customer's chat, their mailbox and their
//! notification center exactly once each, even when the delivery worker stops half-way and
//! another instance goes on; preferences choose channels and quiet hours defer; priorities
//! route; the center API reads and marks; failed deliveries show to platform admins.

use std::time::Duration;

use aggregates::{Channel, ProductId};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{json, Value};
use shopfront::config::ServeSettings;
use shopfront::testing;
use sqlx::PgPool;

use crate::fake_telegram::{Failure, FakeTelegram, Outcome, TgUser};
use crate::helpers::{
    expect_json, problem_slug, spawn_app_on, spawn_app_with, Shop, Staff, TestApp,
};
use crate::live_feeds::Feed;
use crate::receipts_api::{png, upload};
use crate::smtp_sink::{Behavior, SmtpSink};
use crate::telegram_auth::BOT_TOKEN;
use crate::telegram_bot::link_telegram;

/// How long a test waits for the worker (it runs every 500 ms; builds share the cores).
const WAIT: Duration = Duration::from_secs(30);

/// A store with a product, served with the bot (against a fake Telegram) and e-mail (into a
/// sink).
struct World {
    fake: FakeTelegram,
    sink: SmtpSink,
    app: TestApp,
    owner: Staff,
    shop: Shop,
    tea: ProductId,
}

fn settings_for(fake: &FakeTelegram, sink: &SmtpSink) -> ServeSettings {
    let mut settings = ServeSettings::for_tests();
    settings.telegram_bot_token = Some(SecretString::from(BOT_TOKEN));
    settings.telegram_bot_username = Some(fake.bot_username().to_owned());
    settings.telegram_api_url = fake.url();
    settings.smtp_url = Some(SecretString::from(sink.url()));
    settings.smtp_from = "Tea House <shop@tea.test>".into();
    settings
}

async fn world() -> World {
    let fake = FakeTelegram::start(BOT_TOKEN).await;
    let sink = SmtpSink::start().await;
    let app = spawn_app_with(settings_for(&fake, &sink)).await;
    let owner = app.staff("owner@example.com", false).await;
    let shop = app.shop_of(&owner, "Tea House").await;
    let tea = shop.product(&app.app, "TEA-1", 125_000, 10).await;
    app.wait_for_projections().await;
    World {
        fake,
        sink,
        app,
        owner,
        shop,
        tea,
    }
}

impl World {
    /// A customer with a login e-mail whose Telegram user is linked and has said hello to the
    /// bot (Telegram lets a bot write only to those who wrote to it).
    async fn customer(&self, email: &str, user: &TgUser) -> Staff {
        let customer = self.app.staff(email, false).await;
        link_telegram(&self.app, &customer, user.id).await;
        self.fake.command(user, "/start");
        self.fake.next_message_to(user.id).await;
        customer
    }

    /// `customer` orders a tea and uploads a receipt for it; returns the order and receipt ids.
    async fn order_with_receipt(&self, customer: &Staff, seed: u8) -> (String, String) {
        self.order_with_receipt_of(customer, 1, seed).await
    }

    /// `customer` orders `units` teas and uploads a receipt; returns the order and receipt ids.
    async fn order_with_receipt_of(
        &self,
        customer: &Staff,
        units: i64,
        seed: u8,
    ) -> (String, String) {
        order_with_receipt(&self.app, &self.shop, self.tea, customer, units, seed).await
    }
}

/// `customer` orders `units` of `product` in `shop` and uploads a receipt for it; returns the
/// order and receipt ids.
async fn order_with_receipt(
    app: &TestApp,
    shop: &Shop,
    product: ProductId,
    customer: &Staff,
    units: i64,
    seed: u8,
) -> (String, String) {
    {
        let caller = testing::caller_for(customer.account_id, Channel::Telegram);
        let order = shop
            .place(&app.app, &caller, &[(product, units)])
            .await
            .expect("the order is placed")
            .to_string();
        app.wait_for_projections().await;
        let uploaded = upload(app, &customer.token, &order, &png(seed), &[]).await;
        let receipt = expect_json(uploaded, 201, "upload").await["receipt_id"]
            .as_str()
            .expect("receipt id")
            .to_owned();
        (order, receipt)
    }
}

impl World {
    async fn reject(&self, receipt: &str, reason: &str) {
        self.app
            .post_json(
                &self.owner.token,
                &format!("/api/v1/receipts/{receipt}/reject"),
                json!({ "reason": reason }),
                200,
            )
            .await;
    }

    /// The bot's accepted `sendMessage`s to `chat` whose text contains `needle`.
    fn telegram_messages(&self, chat: i64, needle: &str) -> usize {
        self.fake
            .requests("sendMessage")
            .iter()
            .filter(|r| {
                r.params["chat_id"] == json!(chat)
                    && r.outcome == Outcome::Answered
                    && r.params["text"]
                        .as_str()
                        .is_some_and(|text| text.contains(needle))
            })
            .count()
    }
}

/// `(channel, status)` of every delivery to `account` of notifications of `kind`.
async fn deliveries(pool: &PgPool, account: uuid::Uuid, kind: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "select d.channel, d.status from notification_deliveries d
           join notification_outbox o on o.outbox_id = d.outbox_id
          where d.account_id = $1 and o.kind = $2 order by d.channel",
    )
    .bind(account)
    .bind(kind)
    .fetch_all(pool)
    .await
    .expect("deliveries")
}

async fn wait_until(what: &str, condition: impl AsyncFn() -> bool) {
    let mut ticks = tokio::time::interval(Duration::from_millis(50));
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        ticks.tick().await;
        if condition().await {
            return;
        }
    }
    panic!("{what}: not within {WAIT:?}");
}

/// The caller's notification center.
async fn center(app: &TestApp, token: &str, query: &str) -> Value {
    app.get_json(token, &format!("/api/v1/me/notifications{query}"))
        .await
}

#[tokio::test]
async fn a_rejected_receipt_reaches_chat_mailbox_and_center_exactly_once_across_a_worker_restart() {
    let w = world().await;
    let ann = TgUser::en(7_101, "Ann");
    let customer = w.customer("ann@example.com", &ann).await;
    // The owner follows their notifications live, on a WebSocket.
    let mut owner_feed = Feed::connect(&w.app, &w.owner.token).await;
    assert!(owner_feed
        .subscribe("notifications", None, None)
        .await
        .is_empty());
    let (order, receipt) = w.order_with_receipt(&customer, 1).await;
    let pushed = owner_feed.expect("notification").await;
    assert_eq!(pushed["kind"], "receipt_submitted");
    assert_eq!(pushed["topic"], "notifications");
    let submitted: i64 = sqlx::query_scalar(
        "select global_position from events where aggregate_id = $1 and sequence = 1",
    )
    .bind(&receipt)
    .fetch_one(&w.app.db.pool)
    .await
    .expect("the receipt's first event");
    assert_eq!(
        pushed["position"], submitted,
        "it carries its event's position"
    );
    drop(owner_feed);

    // Telegram asks the first instance to wait (flood control) and the first SMTP connection
    // for Ann breaks after the message went out but before the server's answer.
    w.fake.fail_next("sendMessage", Failure::RetryAfter(6));
    // The owner's "new receipt" e-mail comes first: it goes through.
    wait_until("the owner hears of the receipt", async || {
        !w.sink.mails_to("owner@example.com").is_empty()
    })
    .await;
    w.sink.next_connections(&[Behavior::DropAfterData]);
    w.reject(&receipt, "the amount does not match").await;

    // Ann's e-mail goes through on the second try; Telegram's attempt was refused.
    wait_until("Ann's e-mail arrives", async || {
        w.sink.mails_to("ann@example.com").len() == 1
    })
    .await;
    wait_until("Telegram refused the first attempt", async || {
        w.fake
            .requests("sendMessage")
            .iter()
            .any(|r| r.params["chat_id"] == json!(ann.id) && r.outcome != Outcome::Answered)
    })
    .await;
    assert_eq!(w.telegram_messages(ann.id, "was not accepted"), 0);

    // The instance stops half-way: the e-mail is sent, the Telegram message is not. As if it
    // had crashed before marking its outbox rows expanded, expansion will run again too.
    let World {
        fake,
        sink,
        mut app,
        owner,
        ..
    } = w;
    let database = app.db.hand_over().await;
    app.stop().await;
    sqlx::query("update notification_outbox set expanded_at = null")
        .execute(&database.pool)
        .await
        .expect("expansion is undone");

    // Another instance goes on: Telegram now answers.
    let db_settings = database.settings();
    let second = spawn_app_on(database, &db_settings, settings_for(&fake, &sink)).await;
    let pool = second.db.pool.clone();
    wait_until("Ann hears in Telegram", async || {
        deliveries(&pool, customer.account_id.0, "receipt_rejected").await
            == vec![
                ("email".to_owned(), "sent".to_owned()),
                ("telegram".to_owned(), "sent".to_owned()),
            ]
    })
    .await;

    // Exactly once each: one message in the chat, one e-mail, one row in the center.
    let number = aggregates::OrderId(order.parse().expect("uuid")).number();
    let told = fake
        .requests("sendMessage")
        .into_iter()
        .filter(|r| {
            r.params["chat_id"] == json!(ann.id)
                && r.outcome == Outcome::Answered
                && r.params["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("was not accepted"))
        })
        .collect::<Vec<_>>();
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].params["text"]
            .as_str()
            .is_some_and(|t| t.contains(&number) && t.contains("the amount does not match")),
        "{:?}",
        told[0].params
    );
    let mails = sink.mails_to("ann@example.com");
    assert_eq!(mails.len(), 1, "{mails:?}");
    let delivery_id: uuid::Uuid = sqlx::query_scalar(
        "select delivery_id from notification_deliveries
          where account_id = $1 and channel = 'email'",
    )
    .bind(customer.account_id.0)
    .fetch_one(&pool)
    .await
    .expect("the e-mail delivery");
    assert_eq!(
        mails[0].header("Message-ID"),
        Some(format!("<{delivery_id}@tea.test>"))
    );
    assert_eq!(
        mails[0].header("X-Shopfront-Delivery-Id"),
        Some(delivery_id.to_string())
    );
    assert_eq!(
        mails[0].header("Subject").as_deref(),
        Some(format!("Receipt not accepted: order {number}").as_str())
    );
    assert!(mails[0].body().contains("the amount does not match"));
    assert!(mails[0].body().contains(&format!("/api/v1/orders/{order}")));
    assert_eq!(mails[0].from, "shop@tea.test");
    // Three SMTP conversations in all: the owner's e-mail, Ann's dropped one and its retry.
    assert_eq!(sink.connections(), 3);
    let center = center(&second, &customer.token, "?kind=receipt_rejected").await;
    assert_eq!(
        center["items"].as_array().map(Vec::len),
        Some(1),
        "{center}"
    );
    let item = &center["items"][0];
    assert_eq!(item["priority"], "urgent");
    assert_eq!(item["sound"], "alert");
    assert_eq!(item["link"], format!("/api/v1/orders/{order}"));
    assert!(
        item["body"]
            .as_str()
            .is_some_and(|b| b.contains("the amount does not match")),
        "{item}"
    );
    // Expanding again made no second delivery of anything.
    let counts: (i64, i64) = sqlx::query_as(
        "select (select count(*) from notifications),
                (select count(*) from notification_deliveries)",
    )
    .fetch_one(&pool)
    .await
    .expect("counts");
    // The owner: "new receipt" (center + e-mail + telegram skipped); Ann: the rejection
    // (center + e-mail + telegram).
    assert_eq!(counts, (2, 4));
    // And on the WebSocket of the other instance, from the start: one notification each.
    for (token, kind) in [
        (&owner.token, "receipt_submitted"),
        (&customer.token, "receipt_rejected"),
    ] {
        let mut feed = Feed::connect(&second, token).await;
        let replayed = feed.subscribe("notifications", None, Some(0)).await;
        let kinds: Vec<&str> = replayed.iter().filter_map(|n| n["kind"].as_str()).collect();
        assert_eq!(kinds, vec![kind]);
    }
    second.stop().await;
}

#[tokio::test]
async fn preferences_turn_a_channel_off_and_quiet_hours_defer_what_is_not_urgent() {
    let w = world().await;
    let bob = TgUser::en(7_102, "Bob");
    let customer = w.customer("bob@example.com", &bob).await;
    let path = "/api/v1/me/notification-preferences";
    assert_eq!(
        w.app.get_json(&customer.token, path).await,
        json!({"telegram": true, "email": true, "email_for_normal": false})
    );

    // Bad input is refused clearly, and changes nothing.
    for (body, status, slug) in [
        (
            json!({"telegram": true, "email": true,
                   "quiet_hours": {"start": "22:00", "end": "07:00", "time_zone": "Mars/Base"}}),
            422,
            "invalid-time-zone",
        ),
        (
            json!({"telegram": true, "email": true,
                   "quiet_hours": {"start": "25:00", "end": "07:00", "time_zone": "UTC"}}),
            422,
            "invalid-quiet-hours-start",
        ),
        (
            json!({"telegram": true, "email": true,
                   "quiet_hours": {"start": "7pm", "end": "07:00", "time_zone": "UTC"}}),
            400,
            "invalid-request",
        ),
        (
            json!({"telegram": true, "email": true, "language": "de"}),
            400,
            "invalid-request",
        ),
    ] {
        let (got, problem) = w
            .app
            .status_of(Method::PUT, &customer.token, path, Some(body.clone()))
            .await;
        assert_eq!((got, problem_slug(&problem)), (status, slug), "{body}");
    }

    // Telegram off, e-mail for normal notifications too, quiet hours around now, in Russian.
    let now = chrono::Utc::now();
    let start = (now - chrono::Duration::hours(1))
        .format("%H:%M")
        .to_string();
    let end = (now + chrono::Duration::hours(1))
        .format("%H:%M")
        .to_string();
    let wanted = json!({
        "telegram": false, "email": true, "email_for_normal": true,
        "quiet_hours": {"start": start, "end": end, "time_zone": "UTC"},
        "language": "ru",
    });
    let response = w
        .app
        .call(Method::PUT, &customer.token, path, Some(wanted.clone()))
        .await;
    assert_eq!(expect_json(response, 200, "PUT preferences").await, wanted);
    assert_eq!(w.app.get_json(&customer.token, path).await, wanted);

    // Urgent (a receipt rejected): by e-mail at once, quiet hours or not; not in Telegram.
    let (order, receipt) = w.order_with_receipt(&customer, 2).await;
    w.reject(&receipt, "wrong amount").await;
    let pool = w.app.db.pool.clone();
    wait_until("Bob's e-mail arrives", async || {
        w.sink.mails_to("bob@example.com").len() == 1
    })
    .await;
    assert_eq!(
        deliveries(&pool, customer.account_id.0, "receipt_rejected").await,
        vec![("email".to_owned(), "sent".to_owned())]
    );

    // Normal (the store cancels the order): in the center at once, in Russian; the e-mail
    // waits for the end of the quiet hours.
    let cancelled = w
        .app
        .call(
            Method::POST,
            &w.owner.token,
            &format!("/api/v1/orders/{order}/cancel"),
            Some(json!({"reason": "out of tea"})),
        )
        .await;
    assert!(cancelled.status().is_success(), "{}", cancelled.status());
    let number = aggregates::OrderId(order.parse().expect("uuid")).number();
    wait_until("the cancellation is in the center", async || {
        center(&w.app, &customer.token, "?kind=order_cancelled").await["items"]
            .as_array()
            .is_some_and(|items| items.len() == 1)
    })
    .await;
    let listed = center(&w.app, &customer.token, "?kind=order_cancelled").await;
    assert_eq!(
        listed["items"][0]["title"],
        format!("Заказ {number} отменён")
    );
    assert_eq!(listed["items"][0]["priority"], "normal");
    assert_eq!(listed["items"][0]["sound"], "default");
    let (channel, status, due): (String, String, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "select d.channel, d.status, d.next_attempt_at from notification_deliveries d
               join notification_outbox o on o.outbox_id = d.outbox_id
              where d.account_id = $1 and o.kind = 'order_cancelled'",
    )
    .bind(customer.account_id.0)
    .fetch_one(&pool)
    .await
    .expect("the deferred e-mail");
    assert_eq!((channel.as_str(), status.as_str()), ("email", "pending"));
    let quiet_end = now + chrono::Duration::hours(1);
    assert!(
        (due - quiet_end).num_seconds().abs() <= 61,
        "due {due}, quiet hours end {quiet_end}"
    );
    assert_eq!(w.sink.mails_to("bob@example.com").len(), 1);
    // Telegram was off throughout: only the bot's greeting reached Bob's chat.
    assert_eq!(
        w.fake
            .requests("sendMessage")
            .iter()
            .filter(|r| r.params["chat_id"] == json!(bob.id))
            .count(),
        1
    );
}

#[tokio::test]
async fn the_owners_daily_summary_is_low_priority_and_goes_to_the_center_only() {
    let w = world().await;
    let owner_tg = TgUser::en(8_101, "Olga");
    link_telegram(&w.app, &w.owner, owner_tg.id).await;
    w.fake.command(&owner_tg, "/start");
    w.fake.next_message_to(owner_tg.id).await;
    // The owners' daily summary (low priority) of a day the store was open for in full: once,
    // however often the job runs.
    let later = chrono::Utc::now() + chrono::Duration::days(2);
    assert_eq!(
        w.app
            .app
            .record_daily_summaries(later)
            .await
            .expect("recorded"),
        1
    );
    assert_eq!(
        w.app
            .app
            .record_daily_summaries(later)
            .await
            .expect("again"),
        0
    );
    let day = (later.with_timezone(&chrono_tz::Europe::Moscow).date_naive()
        - chrono::Duration::days(1))
    .to_string();
    wait_until("the summary is in the center", async || {
        center(&w.app, &w.owner.token, "").await["unread_count"] == 1
    })
    .await;
    let listed = center(&w.app, &w.owner.token, "?priority=low").await;
    let item = &listed["items"][0];
    assert_eq!(item["kind"], "daily_summary");
    assert_eq!(item["sound"], "none");
    assert_eq!(item["title"], format!("Tea House: summary of {day}"));
    assert_eq!(
        item["body"],
        format!("Tea House on {day}: 0 orders placed, 0 paid, revenue 0.00 RUB.")
    );
    assert_eq!(
        item["link"],
        format!("/api/v1/analytics/dashboard?store_id={}", w.shop.store_id)
    );
    assert!(
        deliveries(&w.app.db.pool, w.owner.account_id.0, "daily_summary")
            .await
            .is_empty()
    );
    assert!(w.sink.mails().is_empty());
    assert_eq!(
        w.fake
            .requests("sendMessage")
            .iter()
            .filter(|r| r.params["chat_id"] == json!(owner_tg.id))
            .count(),
        1,
        "only the greeting"
    );
}

#[tokio::test]
async fn the_center_counts_unread_filters_pages_and_marks_read_for_its_owner_only() {
    let w = world().await;
    let customer = w.app.staff("cy@example.com", false).await;
    // Six teas leave four (below the threshold of five): a low-stock alert (normal), and two
    // receipts to check (urgent), all for the owner.
    let coffee = w.shop.product(&w.app.app, "COFFEE-1", 90_000, 100).await;
    w.order_with_receipt_of(&customer, 6, 3).await;
    order_with_receipt(&w.app, &w.shop, coffee, &customer, 1, 4).await;
    let owner = &w.owner.token;
    wait_until("three notifications for the owner", async || {
        center(&w.app, owner, "").await["unread_count"] == 3
    })
    .await;
    let all = center(&w.app, owner, "").await;
    let kinds: Vec<&str> = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["kind"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        kinds,
        vec!["receipt_submitted", "receipt_submitted", "stock_low"],
        "newest first"
    );
    assert_eq!(all["items"][2]["title"], "Low stock: Product TEA-1");
    assert_eq!(all["items"][0]["priority"], "urgent");
    let ids: Vec<i64> = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["notification_id"].as_i64().expect("id"))
        .collect();

    // Filters and pages.
    let urgent = center(&w.app, owner, "?priority=urgent").await;
    assert_eq!(urgent["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        urgent["unread_count"], 3,
        "the count is of everything unread"
    );
    let stock = center(&w.app, owner, "?kind=stock_low").await;
    assert_eq!(stock["items"][0]["notification_id"], ids[2]);
    let first = center(&w.app, owner, "?limit=2").await;
    assert_eq!(first["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(first["next_before"], ids[1]);
    let next = center(&w.app, owner, &format!("?limit=2&before={}", ids[1])).await;
    assert_eq!(next["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(next["items"][0]["notification_id"], ids[2]);
    assert!(next.get("next_before").is_none());

    // Read one: it stays read, the count drops.
    let read = w
        .app
        .post_json(
            owner,
            &format!("/api/v1/me/notifications/{}/read", ids[0]),
            json!({}),
            200,
        )
        .await;
    assert!(read["read_at"].is_string(), "{read}");
    let unread = center(&w.app, owner, "?unread=true").await;
    assert_eq!(unread["unread_count"], 2);
    assert_eq!(unread["items"].as_array().map(Vec::len), Some(2));

    // Someone else's notification is not theirs to see or mark; bad ids are bad requests.
    let (status, problem) = w
        .app
        .status_of(
            Method::POST,
            &customer.token,
            &format!("/api/v1/me/notifications/{}/read", ids[1]),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, problem_slug(&problem)),
        (404, "notification-not-found")
    );
    assert_eq!(
        center(&w.app, &customer.token, "").await["items"],
        json!([]),
        "the customer sees none of the owner's"
    );
    let (status, _) = w
        .app
        .status_of(
            Method::POST,
            owner,
            "/api/v1/me/notifications/abc/read",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = w
        .app
        .status_of(Method::GET, owner, "/api/v1/me/notifications?limit=0", None)
        .await;
    assert_eq!(status, 400);
    let anonymous = w
        .app
        .client
        .get(format!("{}/api/v1/me/notifications", w.app.address))
        .send()
        .await
        .expect("request");
    assert_eq!(anonymous.status(), 401);

    // Read all.
    let marked = w
        .app
        .post_json(owner, "/api/v1/me/notifications/read-all", json!({}), 200)
        .await;
    assert_eq!(marked["marked"], 2);
    assert_eq!(center(&w.app, owner, "").await["unread_count"], 0);
}

#[tokio::test]
async fn a_refused_email_is_failed_and_shown_to_platform_admins_only() {
    let w = world().await;
    let admin = w.app.staff("root@example.com", true).await;
    let customer = w.app.staff("dee@example.com", false).await;
    let (_, receipt) = w.order_with_receipt(&customer, 5).await;
    wait_until("the owner hears of the receipt", async || {
        !w.sink.mails_to("owner@example.com").is_empty()
    })
    .await;
    w.sink.next_connections(&[Behavior::Refuse550]);
    w.reject(&receipt, "blurry").await;
    let pool = w.app.db.pool.clone();
    wait_until("the e-mail to Dee has failed", async || {
        deliveries(&pool, customer.account_id.0, "receipt_rejected")
            .await
            .contains(&("email".to_owned(), "failed".to_owned()))
    })
    .await;
    assert!(w.sink.mails_to("dee@example.com").is_empty());

    let failed = w
        .app
        .get_json(
            &admin.token,
            "/api/v1/admin/notification-deliveries?status=failed",
        )
        .await;
    let failed = failed.as_array().expect("a list");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["account_id"], json!(customer.account_id.0));
    assert_eq!(failed[0]["channel"], "email");
    assert_eq!(failed[0]["kind"], "receipt_rejected");
    assert_eq!(
        failed[0]["attempts"], 1,
        "a permanent refusal is not retried"
    );
    assert!(
        failed[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("550")),
        "{:?}",
        failed[0]
    );
    // Dee has no Telegram user: that delivery is skipped, saying why.
    let skipped = w
        .app
        .get_json(
            &admin.token,
            "/api/v1/admin/notification-deliveries?status=skipped&channel=telegram",
        )
        .await;
    assert!(skipped
        .as_array()
        .expect("a list")
        .iter()
        .any(|d| d["account_id"] == json!(customer.account_id.0)
            && d["skipped_reason"]
                .as_str()
                .is_some_and(|r| r.contains("no Telegram user"))));
    // The store's owner is no platform admin.
    let (status, problem) = w
        .app
        .status_of(
            Method::GET,
            &w.owner.token,
            "/api/v1/admin/notification-deliveries?status=failed",
            None,
        )
        .await;
    assert_eq!((status, problem_slug(&problem)), (403, "forbidden"));
}

#[tokio::test]
async fn without_a_bot_or_an_smtp_server_the_center_still_fills_and_pushes_are_skipped() {
    let app = spawn_app_with(ServeSettings::for_tests()).await;
    let owner = app.staff("owner@example.com", false).await;
    let shop = app.shop_of(&owner, "Tea House").await;
    let tea = shop.product(&app.app, "TEA-1", 125_000, 10).await;
    let customer = app.staff("eve@example.com", false).await;
    order_with_receipt(&app, &shop, tea, &customer, 1, 6).await;
    wait_until("the owner's center has the receipt", async || {
        center(&app, &owner.token, "").await["unread_count"] == 1
    })
    .await;
    let pool = app.db.pool.clone();
    wait_until("both pushes are settled", async || {
        deliveries(&pool, owner.account_id.0, "receipt_submitted").await
            == vec![
                ("email".to_owned(), "skipped".to_owned()),
                ("telegram".to_owned(), "skipped".to_owned()),
            ]
    })
    .await;
    let reasons: Vec<String> = sqlx::query_scalar(
        "select skipped_reason from notification_deliveries where account_id = $1
          order by channel",
    )
    .bind(owner.account_id.0)
    .fetch_all(&pool)
    .await
    .expect("reasons");
    assert!(
        reasons[0].contains("e-mail is not configured"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("no Telegram user"), "{reasons:?}");
}

#[tokio::test]
async fn expanding_the_outbox_from_several_workers_at_once_notifies_each_person_once() {
    let app = spawn_app_with(ServeSettings::for_tests()).await;
    let owner = app.staff("owner@example.com", false).await;
    let shop = app.shop_of(&owner, "Tea House").await;
    let tea = shop.product(&app.app, "TEA-1", 125_000, 50).await;
    let customer = app.staff("eve@example.com", false).await;
    for seed in 0..5 {
        order_with_receipt(&app, &shop, tea, &customer, 1, 10 + seed).await;
    }
    wait_until("the owner's center has the five receipts", async || {
        center(&app, &owner.token, "").await["unread_count"] == 5
    })
    .await;
    let pool = app.db.pool.clone();
    let counts = async || -> (i64, i64) {
        sqlx::query_as(
            "select (select count(*) from notifications),
                    (select count(*) from notification_deliveries)",
        )
        .fetch_one(&pool)
        .await
        .expect("counts")
    };
    let before = counts().await;

    // As if every worker had crashed before marking its rows: four expanders (and the
    // instance's own worker) race over the same rows.
    sqlx::query("update notification_outbox set expanded_at = null")
        .execute(&pool)
        .await
        .expect("expansion undone");
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let app = app.app.clone();
            let texts = shopfront::notify::render::Texts {
                pool: app.pool.clone(),
            };
            tokio::spawn(async move {
                while app.expand_outbox(2, &texts).await.expect("expanded") > 0 {}
            })
        })
        .collect();
    for racer in racers {
        racer.await.expect("racer");
    }
    let unexpanded: i64 =
        sqlx::query_scalar("select count(*) from notification_outbox where expanded_at is null")
            .fetch_one(&pool)
            .await
            .expect("pending rows");
    assert_eq!(unexpanded, 0);
    assert_eq!(counts().await, before, "no second center row or delivery");
    assert_eq!(center(&app, &owner.token, "").await["unread_count"], 5);
}
