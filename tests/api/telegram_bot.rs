//! The Telegram bot end to end: the real service (`serve` with its projections, process
//! managers, the bot and the delivery worker) talking to a fake Bot API server. Customers shop
//! and pay in a chat; staff get the receipt with Verify/Reject buttons and the customer hears
//! the outcome. And what customers and staff must not get away with: files of the wrong type
//! or size, receipts for orders that are not theirs or not payable, verifying without the
//! right, in another store, or as a customer; flooding.

use aggregates::{OrderId, ProductId};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{json, Value};
use shopfront::config::{RateLimit, ServeSettings};
use shopfront::testing;

use crate::fake_telegram::{Failure, FakeTelegram, IncomingDocument, SentMessage, TgUser};
use crate::helpers::{open_store_for, spawn_app_with, Shop, Staff, TestApp, STAFF_PASSWORD};
use crate::receipts_api::png;
use crate::telegram_auth::{widget, BOT_TOKEN};

/// A store with one product on sale, served with the bot against a fake Telegram.
struct BotShop {
    fake: FakeTelegram,
    app: TestApp,
    owner: Staff,
    shop: Shop,
    tea: ProductId,
}

/// The tea's price: 1 250.00 RUB.
const TEA_PRICE: i64 = 125_000;
const TEA_STOCK: i64 = 10;
/// The tea's button in the store's window: name and price in the store's currency.
const TEA_BUTTON: &str = "Product TEA-1 — 1\u{a0}250.00 RUB";

async fn bot_shop_with(configure: impl FnOnce(&mut ServeSettings)) -> BotShop {
    bot_shop_on(FakeTelegram::start(BOT_TOKEN).await, configure).await
}

/// [`bot_shop_with`] on a fake Telegram the test has prepared.
async fn bot_shop_on(fake: FakeTelegram, configure: impl FnOnce(&mut ServeSettings)) -> BotShop {
    let mut settings = ServeSettings::for_tests();
    settings.telegram_bot_token = Some(SecretString::from(BOT_TOKEN));
    settings.telegram_bot_username = Some(fake.bot_username().to_owned());
    settings.telegram_api_url = fake.url();
    configure(&mut settings);
    let app = spawn_app_with(settings).await;
    let owner = app.staff("owner@example.com", false).await;
    let shop = app.shop_of(&owner, "Tea House").await;
    let tea = shop.product(&app.app, "TEA-1", TEA_PRICE, TEA_STOCK).await;
    app.wait_for_projections().await;
    BotShop {
        fake,
        app,
        owner,
        shop,
        tea,
    }
}

/// Links `staff`'s account to the Telegram user `telegram_user_id`, as a person does it:
/// re-authenticate with the password, then send the Login Widget's signed data.
pub(crate) async fn link_telegram(app: &TestApp, staff: &Staff, telegram_user_id: i64) {
    app.post_json(
        &staff.token,
        "/api/v1/auth/reauthenticate",
        json!({"password": STAFF_PASSWORD}),
        200,
    )
    .await;
    app.post_json(
        &staff.token,
        "/api/v1/auth/telegram/link",
        widget(telegram_user_id),
        200,
    )
    .await;
}

async fn bot_shop() -> BotShop {
    bot_shop_with(|_| {}).await
}

impl BotShop {
    /// A staff member of the store with `role`, whose Telegram user `telegram_user_id` is
    /// linked to their account (through the API, as a person does it).
    async fn staff_in_telegram(&self, email: &str, role: &str, telegram_user_id: i64) -> Staff {
        let staff = self.app.staff(email, false).await;
        link_telegram(&self.app, &staff, telegram_user_id).await;
        self.app
            .post_json(
                &self.owner.token,
                &format!("/api/v1/stores/{}/staff", self.shop.store_id),
                json!({"account_id": staff.account_id.0, "role": role}),
                200,
            )
            .await;
        staff
    }

    /// The order as the owner reads it over the API.
    async fn order(&self, order_id: OrderId) -> Value {
        self.app
            .get_json(&self.owner.token, &format!("/api/v1/orders/{order_id}"))
            .await
    }

    /// The product as the owner reads it over the API.
    async fn product(&self) -> Value {
        self.app
            .get_json(&self.owner.token, &format!("/api/v1/products/{}", self.tea))
            .await
    }

    /// `user` walks from the store's link to a placed order of `units` teas; returns the
    /// order and the bot's "order placed" message.
    async fn buy(&self, user: &TgUser, units: usize) -> (OrderId, SentMessage) {
        let fake = &self.fake;
        fake.command(user, &format!("/start store_{}", self.shop.store_id));
        let window = fake.next_message_to(user.id).await;
        fake.press(user, &window, TEA_BUTTON);
        let card = fake.next_message_to(user.id).await;
        for _ in 0..units {
            let pressed = fake.press(user, &card, "Add to cart");
            fake.answered_callback(&pressed).await;
        }
        fake.command(user, "/cart");
        let cart = fake.next_message_to(user.id).await;
        fake.press(user, &cart, "✅ Place the order");
        let placed = fake.next_message_to(user.id).await;
        let order_id = self.only_order_awaiting_payment_of(user).await;
        (order_id, placed)
    }

    /// The one order of `user`'s account awaiting payment, from the customer's own view.
    async fn only_order_awaiting_payment_of(&self, user: &TgUser) -> OrderId {
        let account = self
            .app
            .app
            .account_by_telegram(user.id)
            .await
            .expect("lookup")
            .expect("the user has an account");
        self.app.wait_for_projections().await;
        let filter = projections::read_models::orders::queries::OrderFilter {
            status: Some("AWAITING_PAYMENT"),
            customer_id: Some(account.0),
            ..Default::default()
        };
        let orders = projections::read_models::orders::queries::orders(
            &self.app.db.pool,
            self.shop.store_id.0,
            &filter,
            None,
            10,
        )
        .await
        .expect("orders");
        assert_eq!(orders.len(), 1, "{orders:?}");
        OrderId(orders[0].order_id)
    }
}

#[tokio::test]
async fn a_customer_shops_pays_with_a_photo_and_hears_that_the_payment_is_confirmed() {
    let s = bot_shop().await;
    let ann = TgUser::en(7_001, "Ann");

    // The store's link opens its window: the product with its price in the store's currency.
    s.fake
        .command(&ann, &format!("/start store_{}", s.shop.store_id));
    let window = s.fake.next_message_to(ann.id).await;
    assert!(window.text.contains("Tea House"), "{}", window.text);
    assert!(
        window.button_texts().contains(&TEA_BUTTON),
        "{:?}",
        window.button_texts()
    );

    // The product card says what is available; two units go into the cart.
    s.fake.press(&ann, &window, TEA_BUTTON);
    let card = s.fake.next_message_to(ann.id).await;
    assert_eq!(
        card.method, "editMessageText",
        "the window turns into the card"
    );
    assert!(card.text.contains("In stock: 10"), "{}", card.text);
    let first = s.fake.press(&ann, &card, "Add to cart");
    assert_eq!(
        s.fake.answered_callback(&first).await.text.as_deref(),
        Some("Added Product TEA-1 × 1.")
    );
    let second = s.fake.press(&ann, &card, "Add to cart");
    assert_eq!(
        s.fake.answered_callback(&second).await.text.as_deref(),
        Some("Added Product TEA-1 × 2.")
    );

    // The cart, then checkout: the order is placed with the stock reserved, and the customer
    // is told the amount, the number and how to pay.
    s.fake.command(&ann, "/cart");
    let cart = s.fake.next_message_to(ann.id).await;
    assert!(
        cart.text.contains("× 2 = 2\u{a0}500.00 RUB"),
        "{}",
        cart.text
    );
    s.fake.press(&ann, &cart, "✅ Place the order");
    let placed = s.fake.next_message_to(ann.id).await;
    let order_id = s.only_order_awaiting_payment_of(&ann).await;
    let number = order_id.number();
    assert!(
        placed
            .text
            .contains(&format!("Order {number} is placed: 2\u{a0}500.00 RUB")),
        "{}",
        placed.text
    );
    assert!(placed.text.contains("Bank X, account 1"), "{}", placed.text);
    let order = s.order(order_id).await;
    assert_eq!(order["status"], "AWAITING_PAYMENT");
    assert_eq!(order["total"]["amount_minor"], 250_000);
    assert_eq!(s.product().await["stock"]["available"], TEA_STOCK - 2);

    // A photo right after checkout is the receipt of that order.
    let receipt = png(1);
    s.fake.photo(&ann, receipt.clone(), None);
    let received = s.fake.next_message_to(ann.id).await;
    assert!(
        received
            .text
            .contains(&format!("The receipt for order {number} is received")),
        "{}",
        received.text
    );
    s.app.wait_for_projections().await;
    let order = s.order(order_id).await;
    assert_eq!(order["status"], "RECEIPT_SUBMITTED");
    let receipt_id = order["receipt_id"].as_str().expect("receipt").to_owned();
    // The file stored is the full-size photo, not Telegram's thumbnail.
    let file = s
        .app
        .call(
            Method::GET,
            &s.owner.token,
            &format!("/api/v1/receipts/{receipt_id}/file"),
            None,
        )
        .await;
    assert_eq!(file.status(), 200);
    assert_eq!(file.bytes().await.expect("file").to_vec(), receipt);

    // Staff verify it over the API; the customer is told in Telegram.
    s.app
        .post_json(
            &s.owner.token,
            &format!("/api/v1/receipts/{receipt_id}/verify"),
            json!({}),
            200,
        )
        .await;
    let paid = s.fake.next_message_to(ann.id).await;
    assert_eq!(
        paid.text,
        format!("✅ Your payment for order {number} is confirmed: 2\u{a0}500.00 RUB.")
    );

    // "My orders" shows it paid.
    s.fake.command(&ann, "/myorders");
    let mine = s.fake.next_message_to(ann.id).await;
    assert!(
        mine.text
            .contains(&format!("{number} · Tea House · 2\u{a0}500.00 RUB · paid")),
        "{}",
        mine.text
    );
}

#[tokio::test]
async fn staff_verify_a_receipt_from_its_notification_and_the_customer_is_notified() {
    let s = bot_shop().await;
    let admin = s
        .staff_in_telegram("admin@example.com", "ADMIN", 8_001)
        .await;
    let reviewer = TgUser::ru(8_001, "Ольга");
    // Telegram refuses to write to someone who never wrote to the bot: the admin says hello.
    s.fake.command(&reviewer, "/start");
    s.fake.next_message_to(reviewer.id).await;

    let boris = TgUser::en(7_002, "Boris");
    let (order_id, _) = s.buy(&boris, 1).await;
    let number = order_id.number();
    let receipt = png(2);
    s.fake
        .photo(&boris, receipt.clone(), Some(&format!("paid for {number}")));
    s.fake.next_message_to(boris.id).await;

    // The admin gets the receipt itself, with the order's total and Verify/Reject buttons,
    // in their language.
    let notification = s.fake.next_message_to(reviewer.id).await;
    assert_eq!(notification.method, "sendPhoto");
    assert_eq!(
        notification.photo.as_ref().and_then(|p| p.bytes.clone()),
        Some(receipt)
    );
    assert!(
        notification.text.contains(&number) && notification.text.contains("1\u{a0}250.00 RUB"),
        "{}",
        notification.text
    );
    assert_eq!(
        notification.button_texts(),
        vec!["✅ Подтвердить", "❌ Отклонить"]
    );
    s.fake.press(&reviewer, &notification, "✅ Подтвердить");
    let verified = s.fake.next_message_to(reviewer.id).await;
    assert!(verified.text.contains(&number), "{}", verified.text);

    let paid = s.fake.next_message_to(boris.id).await;
    assert!(
        paid.text.contains(&format!("order {number} is confirmed")),
        "{}",
        paid.text
    );
    s.app.wait_for_projections().await;
    let order = s.order(order_id).await;
    assert_eq!(order["status"], "PAID");
    // The decision is the admin's, made through Telegram.
    let receipt = s
        .app
        .get_json(
            &s.owner.token,
            &format!(
                "/api/v1/receipts/{}",
                order["receipt_id"].as_str().expect("id")
            ),
        )
        .await;
    assert_eq!(receipt["decided_by"], json!(admin.account_id.0));
    assert_eq!(receipt["status"], "VERIFIED");
}

#[tokio::test]
async fn rejecting_asks_for_the_reason_and_the_customer_hears_it_and_may_pay_again() {
    let s = bot_shop().await;
    s.staff_in_telegram("admin@example.com", "ADMIN", 8_002)
        .await;
    let reviewer = TgUser::en(8_002, "Olga");
    s.fake.command(&reviewer, "/start");
    s.fake.next_message_to(reviewer.id).await;

    let carl = TgUser::en(7_003, "Carl");
    let (order_id, _) = s.buy(&carl, 1).await;
    let number = order_id.number();
    s.fake.photo(&carl, png(3), None);
    s.fake.next_message_to(carl.id).await;

    let notification = s.fake.next_message_to(reviewer.id).await;
    s.fake.press(&reviewer, &notification, "❌ Reject");
    let question = s.fake.next_message_to(reviewer.id).await;
    assert!(
        question.text.contains("Why is the receipt"),
        "{}",
        question.text
    );
    s.fake.text(&reviewer, "the amount does not match");
    let rejected = s.fake.next_message_to(reviewer.id).await;
    assert!(
        rejected.text.contains("the amount does not match"),
        "{}",
        rejected.text
    );

    let told = s.fake.next_message_to(carl.id).await;
    assert!(
        told.text.contains(&format!(
            "order {number} was not accepted: the amount does not match"
        )),
        "{}",
        told.text
    );
    // The order takes a new receipt: the button on the notification leads there.
    s.fake.press(&carl, &told, "Send a receipt");
    s.fake.next_message_to(carl.id).await;
    s.fake.photo(&carl, png(4), None);
    let again = s.fake.next_message_to(carl.id).await;
    assert!(again.text.contains("is received"), "{}", again.text);
    s.app.wait_for_projections().await;
    assert_eq!(s.order(order_id).await["status"], "RECEIPT_SUBMITTED");
}

#[tokio::test]
async fn receipts_of_the_wrong_kind_size_or_order_are_refused_clearly_and_nothing_is_recorded() {
    let s = bot_shop().await;
    let dana = TgUser::en(7_004, "Dana");
    let (order_id, _) = s.buy(&dana, 1).await;
    let number = order_id.number();

    // Not an image or a PDF, whatever the name says.
    s.fake.document(
        &dana,
        b"just some text, not a receipt".to_vec(),
        "receipt.pdf",
        "application/pdf",
        None,
    );
    let wrong = s.fake.next_message_to(dana.id).await;
    assert_eq!(
        wrong.text,
        "Please send a photo (JPEG, PNG, WebP) or a PDF of the receipt."
    );

    // Over the limits: refused before anything is downloaded.
    let fetched = s.fake.requests("getFile").len();
    s.fake.document_with(
        &dana,
        IncomingDocument {
            bytes: png(5),
            file_name: "receipt.png".into(),
            mime_type: "image/png".into(),
            caption: None,
            declared_size: Some(25 * 1024 * 1024),
        },
    );
    let large = s.fake.next_message_to(dana.id).await;
    assert!(
        large.text.starts_with("The file is too large"),
        "{}",
        large.text
    );
    assert_eq!(
        s.fake.requests("getFile").len(),
        fetched,
        "nothing was fetched"
    );

    // A number that is none of hers.
    s.fake.photo(&dana, png(6), Some("for order DEADBEEF"));
    let unknown = s.fake.next_message_to(dana.id).await;
    assert_eq!(unknown.text, "There is no order DEADBEEF of yours.");

    // Someone else's order, named by its number: not found either.
    let eve = TgUser::en(7_005, "Eve");
    s.fake.photo(&eve, png(7), Some(&format!("order {number}")));
    let foreign = s.fake.next_message_to(eve.id).await;
    assert_eq!(
        foreign.text,
        format!("There is no order {number} of yours.")
    );

    s.app.wait_for_projections().await;
    assert_eq!(s.order(order_id).await["status"], "AWAITING_PAYMENT");
    let receipts: i64 = sqlx::query_scalar("select count(*) from receipts")
        .fetch_one(&s.app.db.pool)
        .await
        .expect("count");
    assert_eq!(receipts, 0, "no receipt was recorded");

    // Cancelled from its card, the order takes no receipt any more.
    s.fake.command(&dana, &format!("/order {number}"));
    let detail = s.fake.next_message_to(dana.id).await;
    s.fake.press(&dana, &detail, "Cancel this order");
    let cancelled = s.fake.next_message_to(dana.id).await;
    assert!(
        cancelled.text.contains("is cancelled"),
        "{}",
        cancelled.text
    );
    assert_eq!(s.product().await["stock"]["available"], TEA_STOCK);
    s.fake.photo(&dana, png(8), Some(&number));
    let not_payable = s.fake.next_message_to(dana.id).await;
    assert_eq!(
        not_payable.text,
        format!("Order {number} does not take a receipt now (cancelled).")
    );
}

#[tokio::test]
async fn the_same_file_for_a_second_order_is_accepted_but_flagged_to_the_customer() {
    let s = bot_shop().await;
    let fay = TgUser::en(7_006, "Fay");
    let (first, _) = s.buy(&fay, 1).await;
    s.fake.photo(&fay, png(9), Some(&first.number()));
    s.fake.next_message_to(fay.id).await;

    let (second, _) = s.buy(&fay, 1).await;
    s.fake.photo(&fay, png(9), Some(&second.number()));
    let flagged = s.fake.next_message_to(fay.id).await;
    assert!(
        flagged
            .text
            .contains("this very file was already sent for another order"),
        "{}",
        flagged.text
    );
}

#[tokio::test]
async fn verifying_needs_the_right_in_the_receipts_store() {
    let s = bot_shop().await;
    // A vendor of this store (no ReviewReceipts) and the admin of another store.
    s.staff_in_telegram("vendor@example.com", "VENDOR", 8_010)
        .await;
    let vendor = TgUser::en(8_010, "Vic");
    let other_owner = s.app.staff("other-owner@example.com", false).await;
    let other_store = open_store_for(&s.app.app, other_owner.account_id, "Other shop").await;
    let outsider = s.app.staff("outsider@example.com", false).await;
    link_telegram(&s.app, &outsider, 8_011).await;
    s.app
        .post_json(
            &other_owner.token,
            &format!("/api/v1/stores/{other_store}/staff"),
            json!({"account_id": outsider.account_id.0, "role": "ADMIN"}),
            200,
        )
        .await;
    let other_admin = TgUser::en(8_011, "Oscar");

    let gus = TgUser::en(7_007, "Gus");
    let (order_id, _) = s.buy(&gus, 1).await;
    s.fake.photo(&gus, png(10), None);
    s.fake.next_message_to(gus.id).await;
    s.app.wait_for_projections().await;
    let receipt_id = s.order(order_id).await["receipt_id"]
        .as_str()
        .expect("receipt")
        .to_owned();

    for (who, text) in [
        (&vendor, format!("/verify {receipt_id}")),
        (&other_admin, format!("/verify {receipt_id}")),
        (&gus, format!("/verify {receipt_id}")),
        (&other_admin, format!("/verify {}", order_id.number())),
    ] {
        s.fake.command(who, &text);
        let answer = s.fake.next_message_to(who.id).await;
        assert!(
            answer.text == "You are not allowed to do this in this store."
                || answer
                    .text
                    .starts_with("No receipt waiting for review was found"),
            "{text} by {}: {}",
            who.first_name,
            answer.text
        );
    }
    // Forged button data for the receipt, pressed by the other store's admin under any message.
    let pressed = s.fake.callback(&other_admin, 1, &format!("v:{receipt_id}"));
    s.fake.answered_callback(&pressed).await;
    let answer = s.fake.next_message_to(other_admin.id).await;
    assert_eq!(answer.text, "You are not allowed to do this in this store.");

    s.app.wait_for_projections().await;
    assert_eq!(s.order(order_id).await["status"], "RECEIPT_SUBMITTED");
    let decided: i64 = sqlx::query_scalar(
        "select count(*) from events where event_type in ('PaymentReceiptVerified', 'PaymentReceiptRejected')",
    )
    .fetch_one(&s.app.db.pool)
    .await
    .expect("count");
    assert_eq!(decided, 0, "no decision was recorded");
}

#[tokio::test]
async fn a_low_stock_alert_takes_received_units_from_the_vendor() {
    let s = bot_shop().await;
    s.staff_in_telegram("vendor@example.com", "VENDOR", 8_020)
        .await;
    let vendor = TgUser::en(8_020, "Vic");
    s.fake.command(&vendor, "/start");
    s.fake.next_message_to(vendor.id).await;

    // Buying 6 of 10 leaves 4, under the store's threshold of 5.
    let hal = TgUser::en(7_008, "Hal");
    s.buy(&hal, 6).await;
    let alert = s.fake.next_message_to(vendor.id).await;
    assert!(
        alert
            .text
            .contains("Product TEA-1: only 4 left (threshold 5)"),
        "{}",
        alert.text
    );
    s.fake.press(&vendor, &alert, "📦 Received units");
    let question = s.fake.next_message_to(vendor.id).await;
    assert!(
        question.text.contains("How many units"),
        "{}",
        question.text
    );
    s.fake.text(&vendor, "none");
    let again = s.fake.next_message_to(vendor.id).await;
    assert_eq!(again.text, "Please send a whole number greater than zero.");
    s.fake.text(&vendor, "20");
    let done = s.fake.next_message_to(vendor.id).await;
    assert_eq!(done.text, "Recorded: 20 units of Product TEA-1 received.");
    s.app.wait_for_projections().await;
    assert_eq!(s.product().await["stock"]["available"], 24);
}

#[tokio::test]
async fn a_flooding_chat_is_asked_to_slow_down_and_other_chats_are_served() {
    let s = bot_shop_with(|settings| {
        // Three at once, then one a minute: the test's six messages come within seconds.
        settings.telegram_chat_rate = RateLimit::new(1, 3);
    })
    .await;
    let ivy = TgUser::en(7_009, "Ivy");
    let jon = TgUser::en(7_010, "Jon");
    for _ in 0..6 {
        s.fake.command(&ivy, "/help");
    }
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(s.fake.next_message_to(ivy.id).await.text);
    }
    assert!(
        answers[..3].iter().all(|a| a.contains("/orders")),
        "{answers:?}"
    );
    assert_eq!(
        answers[3],
        "Please slow down a little and try again in a minute."
    );

    s.fake.command(&jon, "/help");
    assert!(s
        .fake
        .next_message_to(jon.id)
        .await
        .text
        .contains("/orders"));
    // Ivy was told once, not once per message.
    let told: usize = s
        .fake
        .requests("sendMessage")
        .iter()
        .filter(|r| r.params["chat_id"] == json!(ivy.id))
        .filter(|r| {
            r.params["text"]
                .as_str()
                .is_some_and(|t| t.contains("slow down"))
        })
        .count();
    assert_eq!(told, 1);
}

#[tokio::test]
async fn one_instance_polls_and_another_takes_over_with_the_chats_state_from_postgres() {
    let s = bot_shop().await;
    // A second instance of the service on the same database: it waits while the first polls.
    let mut settings = ServeSettings::for_tests();
    settings.telegram_bot_token = Some(SecretString::from(BOT_TOKEN));
    settings.telegram_api_url = s.fake.url();
    let second = crate::helpers::spawn_app_on(
        s.app.db.another_handle().await,
        &s.app.db.settings(),
        settings,
    )
    .await;

    let kim = TgUser::en(7_011, "Kim");
    s.fake
        .command(&kim, &format!("/start store_{}", s.shop.store_id));
    let window = s.fake.next_message_to(kim.id).await;
    s.fake.press(&kim, &window, TEA_BUTTON);
    let card = s.fake.next_message_to(kim.id).await;
    let added = s.fake.press(&kim, &card, "Add to cart");
    s.fake.answered_callback(&added).await;

    // The first instance goes; the second takes over polling and knows Kim's cart, and the
    // updates the first handled are not handled again.
    // Each instance that starts polling first asks Telegram about webhooks: while both ran,
    // only one did.
    let BotShop { fake, mut app, .. } = s;
    assert_eq!(
        fake.requests("getWebhookInfo").len(),
        1,
        "one poller while both run"
    );
    let database = app.db.hand_over().await;
    app.stop().await;
    fake.command(&kim, "/cart");
    let cart = fake.next_message_to(kim.id).await;
    assert!(cart.text.contains("Product TEA-1 × 1 ="), "{}", cart.text);
    assert_eq!(
        fake.requests("getWebhookInfo").len(),
        2,
        "the second instance polls now"
    );
    second.stop().await;
    drop(database);
}

#[tokio::test]
async fn a_blocked_admin_gets_no_receipts_and_a_forged_pay_button_gets_nothing_downloaded() {
    let s = bot_shop().await;
    let admin = s
        .staff_in_telegram("admin@example.com", "ADMIN", 8_030)
        .await;
    let reviewer = TgUser::en(8_030, "Olga");
    s.fake.command(&reviewer, "/start");
    s.fake.next_message_to(reviewer.id).await;
    // A platform admin blocks the admin's account; the store role stays.
    testing::block_account(&s.app.app, admin.account_id, "compromised")
        .await
        .expect("blocked");

    let lea = TgUser::en(7_012, "Lea");
    let (order_id, _) = s.buy(&lea, 1).await;
    s.fake.photo(&lea, png(11), None);
    s.fake.next_message_to(lea.id).await;
    // The admin's delivery is settled as skipped, and nothing went to their chat.
    let pool = s.app.db.pool.clone();
    let admin_id = admin.account_id.0;
    let settled = crate::helpers::eventually(std::time::Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "select status from notification_deliveries where account_id = $1",
            )
            .bind(admin_id)
            .fetch_optional(&pool)
            .await
            .ok()
            .flatten()
                == Some("skipped".to_owned())
        }
    })
    .await;
    assert!(settled, "the blocked admin's delivery is skipped");
    assert!(
        s.fake
            .all_requests()
            .iter()
            .all(|r| r.params["chat_id"] != json!(reviewer.id)
                || r.params["text"].is_string()
                    && !r.params["text"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("receipt")),
        "no receipt reached the blocked admin"
    );
    assert!(s.fake.requests("sendPhoto").is_empty());

    // Someone else presses a forged "Send a receipt" button for Lea's order, then sends a file:
    // nothing is fetched from Telegram, nothing recorded.
    let mallory = TgUser::en(7_013, "Mallory");
    let fetched = s.fake.requests("getFile").len();
    let pressed = s.fake.callback(&mallory, 1, &format!("y:{order_id}"));
    s.fake.answered_callback(&pressed).await;
    assert_eq!(
        s.fake.next_message_to(mallory.id).await.text,
        "There is no such order."
    );
    s.fake.photo(&mallory, png(12), None);
    let which = s.fake.next_message_to(mallory.id).await;
    assert!(
        which.text.starts_with("Which order is this receipt for?"),
        "{}",
        which.text
    );
    assert_eq!(s.fake.requests("getFile").len(), fetched);
}

#[tokio::test]
async fn a_qr_login_is_confirmed_or_denied_in_the_bot_after_it_shows_the_device() {
    let s = bot_shop().await;
    let staff = s.staff_in_telegram("qr@example.com", "VENDOR", 8_040).await;
    let me = TgUser::en(8_040, "Quinn");
    let start_qr = || async {
        let response = s
            .app
            .client
            .post(format!("{}/api/v1/auth/qr", s.app.address))
            .header("user-agent", "Firefox on the office laptop")
            .json(&json!({}))
            .send()
            .await
            .expect("request");
        let qr = crate::helpers::expect_json(response, 200, "start a QR login").await;
        let link = qr["deep_link"].as_str().expect("link");
        let payload = link.split("start=").nth(1).expect("payload").to_owned();
        (
            qr["login_id"].as_str().expect("id").to_owned(),
            qr["poll_secret"].as_str().expect("secret").to_owned(),
            payload,
        )
    };
    let app = &s.app;
    let poll = |login_id: String, secret: String| async move {
        app.client
            .get(format!("{}/api/v1/auth/qr/{login_id}", app.address))
            .header("x-poll-secret", secret)
            .send()
            .await
            .expect("poll")
    };

    // Scanned and confirmed: the device asking gets a session of the staff member.
    let (login_id, secret, payload) = start_qr().await;
    s.fake.command(&me, &format!("/start {payload}"));
    let question = s.fake.next_message_to(me.id).await;
    assert!(
        question.text.contains("Firefox on the office laptop"),
        "the device is shown: {}",
        question.text
    );
    s.fake.press(&me, &question, "Yes, it's me");
    assert_eq!(
        s.fake.next_message_to(me.id).await.text,
        "Done: the other device is signed in."
    );
    let tokens = crate::helpers::expect_json(poll(login_id, secret).await, 200, "collect").await;
    let who = s
        .app
        .get_json(
            tokens["access_token"].as_str().expect("token"),
            "/api/v1/auth/me",
        )
        .await;
    assert_eq!(who["account_id"], json!(staff.account_id.0));

    // Scanned and refused: the device is told at once, not left waiting for the expiry.
    let (login_id, secret, payload) = start_qr().await;
    s.fake.command(&me, &format!("/start {payload}"));
    let question = s.fake.next_message_to(me.id).await;
    s.fake.press(&me, &question, "No");
    assert_eq!(s.fake.next_message_to(me.id).await.text, "Sign-in denied.");
    let denied = crate::helpers::expect_json(poll(login_id, secret).await, 401, "denied").await;
    assert_eq!(crate::helpers::problem_slug(&denied), "login-denied");
}

#[tokio::test]
async fn the_second_factor_is_approved_with_a_button_in_the_bot() {
    let s = bot_shop().await;
    let staff = s
        .staff_in_telegram("twofa@example.com", "VENDOR", 8_050)
        .await;
    let me = TgUser::en(8_050, "Tess");
    s.fake.command(&me, "/start");
    s.fake.next_message_to(me.id).await;
    s.app
        .post_json(
            &staff.token,
            "/api/v1/auth/reauthenticate",
            json!({"password": STAFF_PASSWORD}),
            200,
        )
        .await;
    let (status, _) = s
        .app
        .status_of(
            Method::PUT,
            &staff.token,
            "/api/v1/auth/second-factor",
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, 200);

    let login = s
        .app
        .client
        .post(format!("{}/api/v1/auth/login", s.app.address))
        .header("user-agent", "Safari on a new phone")
        .json(&json!({"email": "twofa@example.com", "password": STAFF_PASSWORD}))
        .send()
        .await
        .expect("login");
    let pending = crate::helpers::expect_json(login, 202, "login").await;
    let login_id = pending["login_id"].as_str().expect("id");
    let secret = pending["poll_secret"].as_str().expect("secret");

    let prompt = s.fake.next_message_to(me.id).await;
    assert!(
        prompt.text.contains("Someone is signing in")
            && prompt.text.contains("Safari on a new phone"),
        "{}",
        prompt.text
    );
    s.fake.press(&me, &prompt, "Yes, it's me");
    assert_eq!(
        s.fake.next_message_to(me.id).await.text,
        "Done: the other device is signed in."
    );
    let collected = s
        .app
        .client
        .get(format!("{}/api/v1/auth/login/{login_id}", s.app.address))
        .header("x-poll-secret", secret)
        .send()
        .await
        .expect("poll");
    let tokens = crate::helpers::expect_json(collected, 200, "collect").await;
    assert!(tokens["access_token"].is_string());
}

#[tokio::test]
async fn the_bot_waits_out_telegram_refusing_it_at_start_and_then_serves() {
    // Telegram answers the bot's first two `getMe` with an error: the bot must neither give up
    // nor crash, but try again and serve.
    let fake = FakeTelegram::start(BOT_TOKEN).await;
    for _ in 0..2 {
        fake.fail_next(
            "getMe",
            Failure::Api {
                status: 400,
                description: "Bad Request: not now".into(),
            },
        );
    }
    let s = bot_shop_on(fake, |_| {}).await;
    let uma = TgUser::en(7_014, "Uma");
    s.fake
        .command(&uma, &format!("/start store_{}", s.shop.store_id));
    let window = s.fake.next_message_to(uma.id).await;
    assert!(window.text.contains("Tea House"), "{}", window.text);
    assert!(
        s.fake.requests("getMe").len() >= 3,
        "asked again after the refusals"
    );
}
