//! What the bot does with a message or a button press: work out who and where (the caller, the
//! chat), call the application layer, and answer. Refusals of the application layer become
//! messages; nothing here decides what is allowed.

use std::collections::HashMap;
use std::sync::Arc;

use aggregates::order::{OrderError, OrderStatus};
use aggregates::receipt::ReceiptError;
use aggregates::stock::StockError;
use aggregates::store::StoreError;
use aggregates::{OrderId, ProductId, ReceiptId, StoreId};
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use teloxide::net::Download;
use teloxide::payloads::{AnswerCallbackQuerySetters, EditMessageTextSetters, SendMessageSetters};
use teloxide::prelude::*;
use teloxide::types::{
    CallbackQuery, ChatId, InlineKeyboardButton, InlineKeyboardMarkup, Message, MessageId, User,
};
use uuid::Uuid;

use super::chats::{self, Cart, Chat, ChatState};
use super::texts::{money, t, Language};
use super::ui::{button, keyboard, Action};
use super::{TgBot, TELEGRAM_DOWNLOAD_LIMIT};
use crate::app::{
    grant, App, AppError, AuthError, Caller, OrderLineInput, PlaceOrder, ReceiptUpload, Resource,
    TelegramUser,
};
use projections::read_models::catalog::queries::{self as catalog, ProductFilter};
use projections::read_models::orders::queries::{self as orders, NumberedAmong, OrderFilter};
use projections::read_models::receipts::queries::{self as receipts, ReceiptFilter};

type HandlerResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Receipts one bulk verification takes at most (what `/receipts` lists of one store).
const MAX_SELECTED: usize = 20;

/// Receipt files downloaded from Telegram at once (each up to 20 MB in memory).
const MAX_DOWNLOADS: usize = 4;

/// Products shown per page of a store's window.
const PAGE: i64 = 8;

/// What every handler shares.
pub struct Shop {
    app: Arc<App>,
    /// The bot without throttling, for file downloads.
    files: Bot,
    limiter: Arc<DefaultKeyedRateLimiter<i64>>,
    /// Chats told to slow down, at most once a minute each (a flood gets one answer).
    told: DefaultKeyedRateLimiter<i64>,
    /// Receipt downloads from Telegram at once, across all chats.
    downloads: tokio::sync::Semaphore,
}

impl Shop {
    pub fn new(app: Arc<App>, files: Bot, limiter: Arc<DefaultKeyedRateLimiter<i64>>) -> Self {
        Self {
            app,
            files,
            limiter,
            told: RateLimiter::keyed(Quota::per_minute(NonZeroU32::MIN)),
            downloads: tokio::sync::Semaphore::new(MAX_DOWNLOADS),
        }
    }

    /// Forgets the rate-limit state of chats quiet long enough to be back at their full quota
    /// (else every chat ever seen would stay in memory).
    pub fn forget_quiet_chats(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        self.told.retain_recent();
        self.told.shrink_to_fit();
    }
}

/// One update's conversation: who, in which chat, in which language.
struct Talk<'a> {
    shop: &'a Shop,
    bot: &'a TgBot,
    caller: Caller,
    telegram_user_id: i64,
    chat: Chat,
}

impl Talk<'_> {
    fn lang(&self) -> Language {
        self.chat.language
    }

    fn t(&self, key: &str, args: &[(&str, &str)]) -> String {
        t(self.lang(), key, args)
    }

    fn chat_id(&self) -> ChatId {
        ChatId(self.chat.chat_id)
    }

    fn app(&self) -> &App {
        &self.shop.app
    }

    async fn say(&self, text: String) -> HandlerResult {
        self.bot.send_message(self.chat_id(), text).await?;
        Ok(())
    }

    async fn say_with(&self, text: String, markup: InlineKeyboardMarkup) -> HandlerResult {
        self.bot
            .send_message(self.chat_id(), text)
            .reply_markup(markup)
            .await?;
        Ok(())
    }

    /// Shows `text` in place of the message a button was on, or as a new message.
    async fn show(
        &self,
        on: Option<MessageId>,
        text: String,
        markup: InlineKeyboardMarkup,
    ) -> HandlerResult {
        match on {
            Some(message_id) => {
                self.bot
                    .edit_message_text(self.chat_id(), message_id, text)
                    .reply_markup(markup)
                    .await?;
            }
            None => self.say_with(text, markup).await?,
        }
        Ok(())
    }

    async fn set_state(&mut self, state: ChatState) -> HandlerResult {
        chats::set_state(&self.shop.app.pool, self.chat.chat_id, &state).await?;
        self.chat.state = state;
        Ok(())
    }

    async fn save_cart(&self) -> HandlerResult {
        chats::set_cart(&self.shop.app.pool, self.chat.chat_id, &self.chat.cart).await?;
        Ok(())
    }

    /// Answers a refusal of the application layer in words; a fault of ours is logged.
    /// After a handler: a failure is logged and the person told something went wrong on our
    /// side (rather than left waiting); a failure to tell them is the dispatcher's to log.
    async fn failed(&self, handled: HandlerResult) -> HandlerResult {
        let Err(err) = handled else {
            return Ok(());
        };
        tracing::warn!(error = %err, request_id = %self.caller.origin.request_id, "a bot update failed");
        self.say(self.t("something_wrong", &[])).await
    }

    async fn refused(&self, err: AppError) -> HandlerResult {
        let text = match &err {
            AppError::Forbidden(_) => self.t("not_allowed", &[]),
            AppError::Order(OrderError::NotFound) => self.t("order_unknown", &[]),
            AppError::Stock(StockError::OutOfStock { available, .. }) => {
                self.t("out_of_stock", &[("available", &available.to_string())])
            }
            AppError::Store(StoreError::CustomerBlocked) => self.t("customer_blocked", &[]),
            AppError::Store(StoreError::NotFound) => self.t("store_unknown", &[]),
            AppError::Receipt(ReceiptError::AlreadyDecided { status }) => {
                let status = self.t(&format!("receipt_{}", status_name(*status)), &[]);
                self.t("already_decided", &[("status", &status)])
            }
            AppError::Unavailable(_) | AppError::Internal(_) | AppError::Conflict { .. } => {
                tracing::warn!(error = %err, "a bot request failed");
                self.t("something_wrong", &[])
            }
            other => self.t("order_refused", &[("reason", &other.to_string())]),
        };
        self.say(text).await
    }
}

fn status_name(status: aggregates::receipt::ReceiptStatus) -> &'static str {
    use aggregates::receipt::ReceiptStatus::*;
    match status {
        Submitted => "SUBMITTED",
        Verified => "VERIFIED",
        Rejected => "REJECTED",
        Voided => "VOIDED",
    }
}

/// Opens the conversation for an update from `user` in a private chat; `None` when the chat
/// floods (told to slow down, once) or the account is blocked.
async fn open<'a>(
    shop: &'a Shop,
    bot: &'a TgBot,
    user: &User,
    chat_id: ChatId,
    update: &str,
) -> Result<Option<Talk<'a>>, Box<dyn std::error::Error + Send + Sync>> {
    let language = Language::from_code(user.language_code.as_deref());
    if shop.limiter.check_key(&chat_id.0).is_err() {
        if shop.told.check_key(&chat_id.0).is_ok() {
            bot.send_message(chat_id, t(language, "slow_down", &[]))
                .await?;
        }
        return Ok(None);
    }
    let chat = chats::load(&shop.app.pool, chat_id.0, language).await?;
    let telegram_user = TelegramUser {
        id: user.id.0 as i64,
        first_name: Some(user.first_name.clone()),
        last_name: user.last_name.clone(),
        username: user.username.clone(),
    };
    let caller = match shop
        .app
        .telegram_caller(&telegram_user, update.to_owned())
        .await
    {
        Ok(caller) => caller,
        Err(AppError::Auth(AuthError::AccountBlocked)) => return Ok(None),
        Err(err) => return Err(Box::new(err)),
    };
    Ok(Some(Talk {
        shop,
        bot,
        caller,
        telegram_user_id: telegram_user.id,
        chat,
    }))
}

/// A message in a private chat: a command, a reply the chat waits for, or a receipt file.
pub async fn on_message(shop: Arc<Shop>, bot: TgBot, msg: Message) -> HandlerResult {
    if !msg.chat.is_private() {
        return Ok(());
    }
    let Some(user) = msg.from.clone() else {
        return Ok(());
    };
    let update = format!("telegram-message-{}-{}", msg.chat.id.0, msg.id.0);
    let Some(mut talk) = open(&shop, &bot, &user, msg.chat.id, &update).await? else {
        return Ok(());
    };
    let handled = if msg.photo().is_some() || msg.document().is_some() {
        receipt_file(&mut talk, &msg).await
    } else {
        match msg.text() {
            Some(text) => on_text(&mut talk, text.trim()).await,
            None => Ok(()),
        }
    };
    talk.failed(handled).await
}

async fn on_text(talk: &mut Talk<'_>, text: &str) -> HandlerResult {
    let (command, argument) = match text.split_once(char::is_whitespace) {
        Some((command, rest)) => (command, rest.trim()),
        None => (text, ""),
    };
    // `/start@shopfront_bot` in a menu is `/start`.
    let command = command.split('@').next().unwrap_or(command);
    match command {
        "/start" => start(talk, argument).await,
        "/help" => help(talk).await,
        "/language" => {
            let language = talk.lang().other();
            chats::set_language(&talk.app().pool, talk.chat.chat_id, language).await?;
            talk.chat.language = language;
            talk.say(talk.t("language_set", &[])).await
        }
        "/cart" => cart(talk, None).await,
        "/myorders" => my_orders(talk).await,
        "/orders" => {
            if staff_stores(talk, StaffView::Orders).await?.is_empty() {
                my_orders(talk).await
            } else {
                staff_orders(talk, argument).await
            }
        }
        "/order" => find_order(talk, argument).await,
        "/receipts" => receipts_to_review(talk, None).await,
        "/verify" => verify_command(talk, argument).await,
        "/reject" => reject_command(talk, argument).await,
        _ => match talk.chat.state.clone() {
            ChatState::AwaitingRejectReason { receipt_id } => {
                reject(talk, ReceiptId(receipt_id), text.to_owned()).await
            }
            ChatState::AwaitingUnits { product_id } => {
                units(talk, ProductId(product_id), text).await
            }
            ChatState::AwaitingReceipt { order_id } => {
                let number = OrderId(order_id).number();
                talk.say(talk.t("send_receipt_now", &[("number", &number)]))
                    .await
            }
            _ => help(talk).await,
        },
    }
}

async fn help(talk: &mut Talk<'_>) -> HandlerResult {
    let mut text = talk.t("help_customer", &[]);
    if !staff_stores(talk, StaffView::Orders).await?.is_empty() {
        text.push_str("\n\n");
        text.push_str(&talk.t("help_staff", &[]));
    }
    talk.say(text).await
}

/// `/start [store_<id> | order_<id> | login_<token>]`.
async fn start(talk: &mut Talk<'_>, payload: &str) -> HandlerResult {
    if let Some(store) = payload.strip_prefix("store_") {
        return match store.parse::<Uuid>() {
            Ok(store_id) => catalog(talk, store_id, None, None).await,
            Err(_) => talk.say(talk.t("store_unknown", &[])).await,
        };
    }
    if let Some(order) = payload.strip_prefix("order_") {
        return match order.parse::<Uuid>() {
            Ok(order_id) => order_detail(talk, OrderId(order_id), None).await,
            Err(_) => talk.say(talk.t("order_unknown", &[])).await,
        };
    }
    if let Some(token) = payload.strip_prefix(crate::app::QR_START_PREFIX) {
        return login_question(talk, token).await;
    }
    talk.set_state(ChatState::Idle).await?;
    talk.say(talk.t("welcome", &[])).await
}

// ----- customers: the window, the cart, checkout -----

/// A page of `store_id`'s window: its products on sale by name, from the first or after
/// `after` (a product of the store).
async fn catalog(
    talk: &mut Talk<'_>,
    store_id: Uuid,
    after: Option<&catalog::Product>,
    on: Option<MessageId>,
) -> HandlerResult {
    let pool = &talk.app().pool;
    let Some(store) = catalog::store(pool, store_id).await? else {
        return talk.say(talk.t("store_unknown", &[])).await;
    };
    let filter = ProductFilter {
        status: Some("ACTIVE"),
        ..ProductFilter::default()
    };
    let key = after.map(|p| (p.name.clone(), p.product_id));
    let mut products = catalog::products(pool, store_id, &filter, key, PAGE + 1).await?;
    let more = products.len() as i64 > PAGE;
    products.truncate(PAGE as usize);
    if products.is_empty() && after.is_none() {
        return talk.say(talk.t("catalog_empty", &[])).await;
    }
    let mut rows: Vec<Vec<InlineKeyboardButton>> = products
        .iter()
        .map(|product| {
            vec![button(
                format!(
                    "{} — {}",
                    product.name,
                    money(product.price_minor, &product.currency)
                ),
                Action::Product(product.product_id),
            )]
        })
        .collect();
    let mut nav = Vec::new();
    if after.is_some() {
        nav.push(button(
            talk.t("button_first_page", &[]),
            Action::Catalog(store_id),
        ));
    }
    if let (true, Some(last)) = (more, products.last()) {
        nav.push(button(
            talk.t("button_next", &[]),
            Action::CatalogAfter(last.product_id),
        ));
    }
    if !nav.is_empty() {
        rows.push(nav);
    }
    let count = talk.chat.cart.count().to_string();
    rows.push(vec![button(
        talk.t("button_cart", &[("count", &count)]),
        Action::Cart,
    )]);
    let text = talk.t("store_header", &[("store", &store.name)]);
    talk.show(on, text, keyboard(rows)).await
}

/// The page of a window after `product_id`.
async fn catalog_after(
    talk: &mut Talk<'_>,
    product_id: Uuid,
    on: Option<MessageId>,
) -> HandlerResult {
    match catalog::product(&talk.app().pool, product_id).await? {
        Some(product) => catalog(talk, product.store_id, Some(&product), on).await,
        None => talk.say(talk.t("product_unknown", &[])).await,
    }
}

async fn product_card(
    talk: &mut Talk<'_>,
    product_id: Uuid,
    on: Option<MessageId>,
) -> HandlerResult {
    let Some(card) = catalog::product(&talk.app().pool, product_id).await? else {
        return talk.say(talk.t("product_unknown", &[])).await;
    };
    let availability = match card.available {
        _ if card.status != "ACTIVE" => talk.t("not_on_sale", &[]),
        Some(n) if n > 0 => talk.t("available", &[("available", &n.to_string())]),
        _ => talk.t("sold_out", &[]),
    };
    let text = talk.t(
        "product_card",
        &[
            ("name", &card.name),
            ("description", &card.description),
            ("price", &money(card.price_minor, &card.currency)),
            ("availability", &availability),
        ],
    );
    let count = talk.chat.cart.count().to_string();
    let rows = vec![
        vec![button(talk.t("button_add", &[]), Action::Add(product_id))],
        vec![
            button(talk.t("button_back", &[]), Action::Catalog(card.store_id)),
            button(talk.t("button_cart", &[("count", &count)]), Action::Cart),
        ],
    ];
    talk.show(on, text, keyboard(rows)).await
}

/// Adds (`delta` > 0) or removes units of a product in the cart; returns the answer to show.
async fn change_cart(
    talk: &mut Talk<'_>,
    product_id: Uuid,
    delta: i64,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let Some(card) = catalog::product(&talk.app().pool, product_id).await? else {
        return Ok(talk.t("product_unknown", &[]));
    };
    let emptied = talk.chat.cart.change(card.store_id, product_id, delta);
    talk.save_cart().await?;
    let quantity = talk
        .chat
        .cart
        .lines
        .iter()
        .find(|l| l.product_id == product_id)
        .map_or(0, |l| l.quantity);
    let mut answer = talk.t(
        "added",
        &[("name", &card.name), ("quantity", &quantity.to_string())],
    );
    if emptied {
        let store = catalog::store(&talk.app().pool, card.store_id)
            .await?
            .map(|s| s.name)
            .unwrap_or_default();
        answer = format!(
            "{}\n{answer}",
            talk.t("cart_other_store", &[("store", &store)])
        );
    }
    Ok(answer)
}

async fn cart(talk: &mut Talk<'_>, on: Option<MessageId>) -> HandlerResult {
    let Cart { store_id, lines } = talk.chat.cart.clone();
    let (Some(store_id), false) = (store_id, lines.is_empty()) else {
        return talk.say(talk.t("cart_empty", &[])).await;
    };
    let pool = &talk.app().pool;
    let store = catalog::store(pool, store_id).await?;
    let mut text_lines = Vec::new();
    let mut rows = Vec::new();
    let mut total = 0i64;
    let mut currency = store
        .as_ref()
        .map(|s| s.currency.clone())
        .unwrap_or_default();
    for line in &lines {
        let Some(card) = catalog::product(pool, line.product_id).await? else {
            continue;
        };
        let line_total = card.price_minor.saturating_mul(line.quantity);
        total = total.saturating_add(line_total);
        currency = card.currency.clone();
        text_lines.push(talk.t(
            "cart_line",
            &[
                ("name", &card.name),
                ("quantity", &line.quantity.to_string()),
                ("total", &money(line_total, &card.currency)),
            ],
        ));
        rows.push(vec![
            button(
                talk.t("button_minus", &[("name", &card.name)]),
                Action::Less(card.product_id),
            ),
            button(
                talk.t("button_plus", &[("name", &card.name)]),
                Action::More(card.product_id),
            ),
        ]);
    }
    rows.push(vec![button(
        talk.t("button_checkout", &[]),
        Action::Checkout,
    )]);
    rows.push(vec![
        button(talk.t("button_clear", &[]), Action::ClearCart),
        button(talk.t("button_back", &[]), Action::Catalog(store_id)),
    ]);
    let text = talk.t(
        "cart",
        &[
            ("store", &store.map(|s| s.name).unwrap_or_default()),
            ("lines", &text_lines.join("\n")),
            ("total", &money(total, &currency)),
        ],
    );
    talk.show(on, text, keyboard(rows)).await
}

async fn checkout(talk: &mut Talk<'_>) -> HandlerResult {
    let Cart { store_id, lines } = talk.chat.cart.clone();
    let (Some(store_id), false) = (store_id, lines.is_empty()) else {
        return talk.say(talk.t("cart_empty", &[])).await;
    };
    let order = PlaceOrder {
        store_id: StoreId(store_id),
        lines: lines
            .iter()
            .map(|l| OrderLineInput {
                product_id: ProductId(l.product_id),
                quantity: l.quantity,
            })
            .collect(),
        contact: None,
    };
    let placed = match talk.app().place_order(&talk.caller, order).await {
        Ok(placed) => placed,
        Err(err) => return talk.refused(err).await,
    };
    let order_id = placed.outcome;
    talk.chat.cart = Cart::default();
    talk.save_cart().await?;
    talk.set_state(ChatState::AwaitingReceipt {
        order_id: order_id.0,
    })
    .await?;
    let order = talk.app().own_order(&talk.caller, order_id).await?;
    let store = catalog::store(&talk.app().pool, store_id).await?;
    let (instructions, zone) = store
        .map(|s| (s.payment_instructions, s.timezone))
        .unwrap_or_default();
    let zone: chrono_tz::Tz = zone.parse().unwrap_or(chrono_tz::UTC);
    let due = order
        .payment_due_by
        .map(|due| due.with_timezone(&zone).format("%d.%m %H:%M").to_string())
        .unwrap_or_default();
    let total = order
        .total()
        .map(|m| money(m.amount_minor, m.currency.code()))
        .unwrap_or_default();
    let number = order_id.number();
    talk.say(talk.t(
        "order_placed",
        &[
            ("number", &number),
            ("total", &total),
            ("instructions", &instructions),
            ("due", &due),
        ],
    ))
    .await
}

// ----- customers: orders and receipts -----

async fn my_orders(talk: &mut Talk<'_>) -> HandlerResult {
    let pool = &talk.app().pool;
    let mine = orders::orders_of_customer(pool, talk.caller.account_id().0, 10).await?;
    if mine.is_empty() {
        return talk.say(talk.t("orders_none", &[])).await;
    }
    let names = store_names(pool, &mine).await?;
    let mut lines = vec![talk.t("orders_header", &[])];
    let mut rows = Vec::new();
    for order in &mine {
        let number = OrderId(order.order_id).number();
        lines.push(order_line(talk, order, &names, &number));
        rows.push(vec![button(
            talk.t("button_open", &[("number", &number)]),
            Action::Order(order.order_id),
        )]);
    }
    talk.say_with(lines.join("\n"), keyboard(rows)).await
}

/// The names of the stores of `orders`.
async fn store_names(
    pool: &sqlx::PgPool,
    orders: &[orders::Order],
) -> Result<HashMap<Uuid, String>, sqlx::Error> {
    let mut ids: Vec<Uuid> = orders.iter().map(|o| o.store_id).collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(catalog::stores_by_id(pool, &ids)
        .await?
        .into_iter()
        .map(|store| (store.store_id, store.name))
        .collect())
}

fn order_line(
    talk: &Talk<'_>,
    order: &orders::Order,
    stores: &HashMap<Uuid, String>,
    number: &str,
) -> String {
    talk.t(
        "order_line",
        &[
            ("number", number),
            (
                "store",
                stores.get(&order.store_id).map_or("", String::as_str),
            ),
            ("total", &money(order.total_minor, &order.currency)),
            ("status", &talk.t(&format!("status_{}", order.status), &[])),
        ],
    )
}

/// An order of the caller's (a customer) or of a store the caller works in (staff).
async fn order_detail(
    talk: &mut Talk<'_>,
    order_id: OrderId,
    on: Option<MessageId>,
) -> HandlerResult {
    let pool = &talk.app().pool;
    let Some(order) = orders::order(pool, order_id.0).await? else {
        return talk.say(talk.t("order_unknown", &[])).await;
    };
    let own = order.customer_id == talk.caller.account_id().0;
    if !own
        && talk
            .app()
            .authorize_visible::<grant::ViewOrders>(&talk.caller, StoreId(order.store_id))
            .await?
            .is_none()
    {
        return talk.say(talk.t("order_unknown", &[])).await;
    }
    let number = order_id.number();
    let mut lines = Vec::new();
    for line in &order.lines {
        let name = catalog::product(pool, line.product_id)
            .await?
            .map(|p| p.name)
            .unwrap_or_default();
        lines.push(talk.t(
            "cart_line",
            &[
                ("name", &name),
                ("quantity", &line.quantity.to_string()),
                ("total", &money(line.line_total_minor, &order.currency)),
            ],
        ));
    }
    let store = catalog::store(pool, order.store_id)
        .await?
        .map(|s| s.name)
        .unwrap_or_default();
    let text = talk.t(
        "order_detail",
        &[
            ("number", &number),
            ("store", &store),
            ("lines", &lines.join("\n")),
            ("total", &money(order.total_minor, &order.currency)),
            ("status", &talk.t(&format!("status_{}", order.status), &[])),
        ],
    );
    let mut rows = Vec::new();
    if own && order.status == "AWAITING_PAYMENT" {
        rows.push(vec![button(
            talk.t("button_pay", &[]),
            Action::Pay(order.order_id),
        )]);
    }
    if own
        && matches!(
            order.status.as_str(),
            "AWAITING_PAYMENT" | "RECEIPT_SUBMITTED"
        )
    {
        rows.push(vec![button(
            talk.t("button_cancel_order", &[]),
            Action::CancelOrder(order.order_id),
        )]);
    }
    if !own && order.receipt_status.as_deref() == Some("SUBMITTED") {
        if let Some(receipt_id) = order.receipt_id {
            rows.push(review_buttons(talk, receipt_id));
        }
    }
    talk.show(on, text, keyboard(rows)).await
}

/// `/order <number>`: among the caller's own orders, else among their stores' orders.
async fn find_order(talk: &mut Talk<'_>, argument: &str) -> HandlerResult {
    if let Ok(order_id) = argument.parse::<Uuid>() {
        return order_detail(talk, OrderId(order_id), None).await;
    }
    let pool = &talk.app().pool;
    let mut found = orders::order_numbered(
        pool,
        argument,
        NumberedAmong::Customer(talk.caller.account_id().0),
    )
    .await?;
    if found.is_none() {
        let stores = staff_stores(talk, StaffView::Orders).await?;
        found = orders::order_numbered(pool, argument, NumberedAmong::Stores(&stores)).await?;
    }
    match found {
        Some(order) => order_detail(talk, OrderId(order.order_id), None).await,
        None => talk.say(talk.t("order_unknown", &[])).await,
    }
}

/// Whether an order may get a receipt from this chat, as the read models show it.
enum Payable {
    Yes,
    /// Not an order of the caller's.
    Unknown,
    /// In a state it never leaves for one that takes a receipt (its name).
    No(&'static str),
}

async fn payable(
    talk: &Talk<'_>,
    order_id: OrderId,
) -> Result<Payable, Box<dyn std::error::Error + Send + Sync>> {
    let pool = &talk.app().pool;
    let id = order_id.0;
    // Just placed, the order may not be in the read model yet: wait for it then.
    let order = talk
        .app()
        .read_projected(&["orders"], "Order", &id.to_string(), || {
            orders::order(pool, id)
        })
        .await?;
    let Some(order) = order.filter(|o| o.customer_id == talk.caller.account_id().0) else {
        return Ok(Payable::Unknown);
    };
    // A status that can still lead back to awaiting payment (a receipt under review may be
    // rejected) is left to the upload to judge: the read model may be a step behind.
    Ok(match order.status.parse::<OrderStatus>() {
        Ok(
            status @ (OrderStatus::Paid
            | OrderStatus::Fulfilled
            | OrderStatus::Completed
            | OrderStatus::Cancelled
            | OrderStatus::Expired),
        ) => Payable::No(status.as_str()),
        _ => Payable::Yes,
    })
}

/// A photo or document: the receipt of the order the chat waits for, or of the order whose
/// number is in the caption, or of the customer's only order awaiting payment.
async fn receipt_file(talk: &mut Talk<'_>, msg: &Message) -> HandlerResult {
    let file = match (msg.photo(), msg.document()) {
        (Some(sizes), _) => sizes
            .iter()
            .max_by_key(|p| p.file.size)
            .map(|p| p.file.clone()),
        (None, Some(document)) => Some(document.file.clone()),
        _ => None,
    };
    let Some(file) = file else {
        return Ok(());
    };
    let caption = msg.caption().unwrap_or_default();
    let pool = &talk.app().pool;
    let customer = talk.caller.account_id().0;
    let mut order_id = None;
    if let Some(number) = caption
        .split(|c: char| !c.is_ascii_alphanumeric())
        .find(|word| word.len() == 8 && word.chars().all(|c| c.is_ascii_hexdigit()))
    {
        match orders::order_numbered(pool, number, NumberedAmong::Customer(customer)).await? {
            Some(order) => order_id = Some(OrderId(order.order_id)),
            None => {
                let number = number.to_ascii_uppercase();
                return talk
                    .say(talk.t("receipt_order_unknown", &[("number", &number)]))
                    .await;
            }
        }
    }
    if order_id.is_none() {
        if let ChatState::AwaitingReceipt { order_id: waiting } = talk.chat.state {
            order_id = Some(OrderId(waiting));
        }
    }
    if order_id.is_none() {
        let awaiting: Vec<_> = orders::orders_of_customer(pool, customer, 20)
            .await?
            .into_iter()
            .filter(|o| o.status == "AWAITING_PAYMENT")
            .collect();
        if let [only] = awaiting.as_slice() {
            order_id = Some(OrderId(only.order_id));
        }
    }
    let Some(order_id) = order_id else {
        let example = OrderId::new().number();
        return talk
            .say(talk.t("receipt_which_order", &[("example", &example)]))
            .await;
    };
    let number = order_id.number();
    // Before anything is downloaded: the order must be theirs and may still take a receipt
    // (the upload decides for good; this only spares downloads that cannot succeed).
    match payable(talk, order_id).await? {
        Payable::Yes => {}
        Payable::Unknown => {
            return talk
                .say(talk.t("receipt_order_unknown", &[("number", &number)]))
                .await
        }
        Payable::No(status) => {
            let status = talk.t(&format!("status_{status}"), &[]);
            return talk
                .say(talk.t(
                    "receipt_not_payable",
                    &[("number", &number), ("status", &status)],
                ))
                .await;
        }
    }
    let limit = talk.app().max_receipt_bytes.min(TELEGRAM_DOWNLOAD_LIMIT);
    if u64::from(file.size) > limit {
        let max = (limit / (1024 * 1024)).max(1).to_string();
        return talk
            .say(talk.t("receipt_too_large", &[("max", &max)]))
            .await;
    }
    let content = {
        // At most a few downloads at once, whoever sends them.
        let _slot = talk.shop.downloads.acquire().await?;
        let telegram_file = talk.shop.files.get_file(file.id.clone()).await?;
        let mut content = Vec::with_capacity(file.size as usize);
        talk.shop
            .files
            .download_file(&telegram_file.path, &mut content)
            .await?;
        content
    };
    let upload = ReceiptUpload {
        order_id,
        content: content.into(),
        claimed_amount_minor: None,
        claimed_currency: None,
    };
    match talk.app().upload_receipt(&talk.caller, upload).await {
        Ok(uploaded) => {
            talk.set_state(ChatState::Idle).await?;
            let mut text = talk.t("receipt_received", &[("number", &number)]);
            // The same file sent for another order before: the customer hears it at once (the
            // staff see the flag too). Shown when the receipts read model has it in time.
            let receipt_id = uploaded.outcome.0;
            let seen = talk
                .app()
                .read_after(&["receipts"], uploaded.position, || {
                    receipts::receipt(&talk.app().pool, receipt_id)
                })
                .await?;
            if seen.is_some_and(|receipt| receipt.possible_duplicate()) {
                text.push('\n');
                text.push_str(&talk.t("receipt_duplicate", &[]));
            }
            talk.say(text).await
        }
        Err(AppError::UnsupportedMediaType) => talk.say(talk.t("receipt_wrong_type", &[])).await,
        Err(AppError::FileTooLarge { max_bytes }) => {
            let max = (max_bytes / (1024 * 1024)).max(1).to_string();
            talk.say(talk.t("receipt_too_large", &[("max", &max)]))
                .await
        }
        Err(AppError::Receipt(ReceiptError::OrderNotPayable)) => {
            let status = orders::order(pool, order_id.0)
                .await?
                .map(|o| talk.t(&format!("status_{}", o.status), &[]))
                .unwrap_or_default();
            talk.say(talk.t(
                "receipt_not_payable",
                &[("number", &number), ("status", &status)],
            ))
            .await
        }
        Err(AppError::Order(OrderError::NotFound)) => {
            talk.say(talk.t("receipt_order_unknown", &[("number", &number)]))
                .await
        }
        Err(err) => talk.refused(err).await,
    }
}

// ----- staff -----

#[derive(Clone, Copy)]
enum StaffView {
    Orders,
    Receipts,
}

/// The stores the caller may see orders (or review receipts) in.
async fn staff_stores(
    talk: &Talk<'_>,
    view: StaffView,
) -> Result<Vec<Uuid>, Box<dyn std::error::Error + Send + Sync>> {
    let stores = match view {
        StaffView::Orders => {
            talk.app()
                .stores_allowing::<grant::ViewOrders>(&talk.caller)
                .await?
        }
        StaffView::Receipts => {
            talk.app()
                .stores_allowing::<grant::ReviewReceipts>(&talk.caller)
                .await?
        }
    };
    Ok(stores.into_iter().map(|s| s.0).collect())
}

/// `/orders [status]` for staff: the latest orders of their stores.
async fn staff_orders(talk: &mut Talk<'_>, status: &str) -> HandlerResult {
    let status = if status.is_empty() {
        None
    } else {
        match status.to_ascii_uppercase().parse::<OrderStatus>() {
            Ok(status) => Some(status.as_str()),
            Err(_) => return talk.say(talk.t("usage_orders", &[])).await,
        }
    };
    let pool = &talk.app().pool;
    let mut lines = Vec::new();
    let mut rows = Vec::new();
    for store_id in staff_stores(talk, StaffView::Orders).await? {
        let filter = OrderFilter {
            status,
            ..OrderFilter::default()
        };
        let latest = orders::orders(pool, store_id, &filter, None, 10).await?;
        let names = store_names(pool, &latest).await?;
        for order in latest {
            let number = OrderId(order.order_id).number();
            lines.push(order_line(talk, &order, &names, &number));
            rows.push(vec![button(
                talk.t("button_open", &[("number", &number)]),
                Action::Order(order.order_id),
            )]);
        }
    }
    if lines.is_empty() {
        return talk.say(talk.t("staff_orders_none", &[])).await;
    }
    talk.say_with(lines.join("\n"), keyboard(rows)).await
}

fn review_buttons(talk: &Talk<'_>, receipt_id: Uuid) -> Vec<InlineKeyboardButton> {
    vec![
        button(talk.t("button_verify", &[]), Action::Verify(receipt_id)),
        button(talk.t("button_reject", &[]), Action::Reject(receipt_id)),
    ]
}

/// `/receipts`: the receipts waiting in the caller's stores, to tick and verify together.
async fn receipts_to_review(talk: &mut Talk<'_>, on: Option<MessageId>) -> HandlerResult {
    let selected = match &talk.chat.state {
        ChatState::SelectingReceipts { selected } => selected.clone(),
        _ => Vec::new(),
    };
    let mut rows = Vec::new();
    for store_id in staff_stores(talk, StaffView::Receipts).await? {
        let queue = ReceiptFilter {
            status: "SUBMITTED",
            possible_duplicate: None,
        };
        for receipt in receipts::receipts(&talk.app().pool, store_id, &queue, None, 20).await? {
            let number = OrderId(receipt.order_id).number();
            let mark = if selected.contains(&receipt.receipt_id) {
                "☑"
            } else {
                "☐"
            };
            rows.push(vec![
                button(
                    talk.t("button_toggle", &[("mark", mark), ("number", &number)]),
                    Action::Toggle(receipt.receipt_id),
                ),
                button(
                    talk.t("button_verify", &[]),
                    Action::Verify(receipt.receipt_id),
                ),
            ]);
        }
    }
    if rows.is_empty() {
        return talk.say(talk.t("staff_receipts_none", &[])).await;
    }
    if !matches!(talk.chat.state, ChatState::SelectingReceipts { .. }) {
        talk.set_state(ChatState::SelectingReceipts {
            selected: Vec::new(),
        })
        .await?;
    }
    let count = selected.len().to_string();
    rows.push(vec![button(
        talk.t("button_verify_selected", &[("count", &count)]),
        Action::VerifySelected,
    )]);
    talk.show(on, talk.t("staff_receipts_header", &[]), keyboard(rows))
        .await
}

/// The receipt a `/verify` or `/reject` argument names: a receipt id, or an order (id or
/// number) of the caller's stores with a receipt under review.
async fn receipt_named(
    talk: &Talk<'_>,
    what: &str,
) -> Result<Option<ReceiptId>, Box<dyn std::error::Error + Send + Sync>> {
    let pool = &talk.app().pool;
    if let Ok(id) = what.parse::<Uuid>() {
        if receipts::receipt(pool, id).await?.is_some() {
            return Ok(Some(ReceiptId(id)));
        }
        return Ok(orders::order(pool, id)
            .await?
            .filter(|o| o.receipt_status.as_deref() == Some("SUBMITTED"))
            .and_then(|o| o.receipt_id)
            .map(ReceiptId));
    }
    let stores = staff_stores(talk, StaffView::Receipts).await?;
    Ok(
        orders::order_numbered(pool, what, NumberedAmong::Stores(&stores))
            .await?
            .filter(|o| o.receipt_status.as_deref() == Some("SUBMITTED"))
            .and_then(|o| o.receipt_id)
            .map(ReceiptId),
    )
}

async fn verify_command(talk: &mut Talk<'_>, argument: &str) -> HandlerResult {
    if argument.is_empty() {
        return talk.say(talk.t("usage_verify", &[])).await;
    }
    match receipt_named(talk, argument).await? {
        Some(receipt_id) => verify(talk, receipt_id, None).await,
        None => talk.say(talk.t("no_receipt", &[("what", argument)])).await,
    }
}

async fn reject_command(talk: &mut Talk<'_>, argument: &str) -> HandlerResult {
    let Some((what, reason)) = argument.split_once(char::is_whitespace) else {
        return talk.say(talk.t("usage_reject", &[])).await;
    };
    match receipt_named(talk, what).await? {
        Some(receipt_id) => reject(talk, receipt_id, reason.trim().to_owned()).await,
        None => talk.say(talk.t("no_receipt", &[("what", what)])).await,
    }
}

/// The number of the order a receipt pays, from the read model.
async fn number_of(talk: &Talk<'_>, receipt_id: ReceiptId) -> String {
    receipts::receipt(&talk.app().pool, receipt_id.0)
        .await
        .ok()
        .flatten()
        .map(|r| OrderId(r.order_id).number())
        .unwrap_or_default()
}

async fn verify(
    talk: &mut Talk<'_>,
    receipt_id: ReceiptId,
    quiet: Option<&mut (u32, u32)>,
) -> HandlerResult {
    let access = talk
        .app()
        .authorize_resource::<grant::ReviewReceipts>(&talk.caller, Resource::Receipt(receipt_id))
        .await;
    let result = match access {
        Ok(Some(access)) => talk.app().verify_receipt(&access, receipt_id).await,
        Ok(None) => Err(AppError::Forbidden("not in this store".into())),
        Err(err) => Err(err),
    };
    if let Some(counts) = quiet {
        match result {
            Ok(_) => counts.0 += 1,
            Err(_) => counts.1 += 1,
        }
        return Ok(());
    }
    match result {
        Ok(_) => {
            let number = number_of(talk, receipt_id).await;
            talk.say(talk.t("verified", &[("number", &number)])).await
        }
        Err(err) => talk.refused(err).await,
    }
}

async fn reject(talk: &mut Talk<'_>, receipt_id: ReceiptId, reason: String) -> HandlerResult {
    talk.set_state(ChatState::Idle).await?;
    let access = talk
        .app()
        .authorize_resource::<grant::ReviewReceipts>(&talk.caller, Resource::Receipt(receipt_id))
        .await?;
    let Some(access) = access else {
        return talk.say(talk.t("not_allowed", &[])).await;
    };
    match talk
        .app()
        .reject_receipt(&access, receipt_id, reason.clone())
        .await
    {
        Ok(_) => {
            let number = number_of(talk, receipt_id).await;
            talk.say(talk.t("rejected", &[("number", &number), ("reason", &reason)]))
                .await
        }
        Err(err) => talk.refused(err).await,
    }
}

async fn units(talk: &mut Talk<'_>, product_id: ProductId, text: &str) -> HandlerResult {
    let Some(quantity) = text.parse::<i64>().ok().filter(|n| *n > 0) else {
        return talk.say(talk.t("not_a_number", &[])).await;
    };
    talk.set_state(ChatState::Idle).await?;
    let access = talk
        .app()
        .authorize_resource::<grant::ManageStock>(&talk.caller, Resource::Product(product_id))
        .await?;
    let Some(access) = access else {
        return talk.say(talk.t("not_allowed", &[])).await;
    };
    match talk
        .app()
        .receive_stock(
            &access,
            product_id,
            quantity,
            Some("received (Telegram)".into()),
        )
        .await
    {
        Ok(_) => {
            let name = catalog::product(&talk.app().pool, product_id.0)
                .await?
                .map(|p| p.name)
                .unwrap_or_default();
            talk.say(talk.t(
                "units_received",
                &[("quantity", &quantity.to_string()), ("product", &name)],
            ))
            .await
        }
        Err(err) => talk.refused(err).await,
    }
}

// ----- signing in elsewhere -----

async fn login_question(talk: &mut Talk<'_>, token: &str) -> HandlerResult {
    match talk.app().describe_qr_login(token).await {
        Ok(request) => {
            talk.set_state(ChatState::ConfirmingLogin {
                token: token.to_owned(),
            })
            .await?;
            let device = device(&request.user_agent, &request.client_ip);
            let rows = vec![vec![
                button(talk.t("button_yes", &[]), Action::ConfirmLogin(true)),
                button(talk.t("button_no", &[]), Action::ConfirmLogin(false)),
            ]];
            talk.say_with(
                talk.t("login_question", &[("device", &device)]),
                keyboard(rows),
            )
            .await
        }
        Err(_) => talk.say(talk.t("login_gone", &[])).await,
    }
}

/// How a device is described to the person asked to let it in.
pub(crate) fn device(user_agent: &Option<String>, client_ip: &Option<String>) -> String {
    let agent: String = user_agent
        .as_deref()
        .unwrap_or("?")
        .chars()
        .take(120)
        .collect();
    match client_ip {
        Some(ip) => format!("{agent} ({ip})"),
        None => agent,
    }
}

// ----- button presses -----

/// A button press: the action in its data, then an answer so the button stops spinning.
pub async fn on_callback(shop: Arc<Shop>, bot: TgBot, query: CallbackQuery) -> HandlerResult {
    let Some(message) = query.message.as_ref() else {
        bot.answer_callback_query(query.id.clone()).await?;
        return Ok(());
    };
    let chat_id = message.chat().id;
    if !message.chat().is_private() {
        bot.answer_callback_query(query.id.clone()).await?;
        return Ok(());
    }
    let on = Some(message.id());
    let update = format!("telegram-callback-{}", query.id.0);
    let mut talk = match open(&shop, &bot, &query.from, chat_id, &update).await {
        Ok(Some(talk)) => talk,
        opened => {
            // Flooding, blocked, or the database failed: the button stops spinning anyway.
            bot.answer_callback_query(query.id.clone()).await?;
            return opened.map(|_| ());
        }
    };
    let mut toast: Option<String> = None;
    let action = query.data.as_deref().and_then(Action::parse);
    let handled = act(&mut talk, action, on, &mut toast).await;
    let mut answer = bot.answer_callback_query(query.id.clone());
    if let Some(text) = toast {
        answer = answer.text(text);
    }
    answer.await?;
    talk.failed(handled).await
}

/// What a button press does.
async fn act(
    talk: &mut Talk<'_>,
    action: Option<Action>,
    on: Option<MessageId>,
    toast: &mut Option<String>,
) -> HandlerResult {
    match action {
        None => Ok(()),
        Some(Action::Catalog(store_id)) => catalog(talk, store_id, None, on).await,
        Some(Action::CatalogAfter(product_id)) => catalog_after(talk, product_id, on).await,
        Some(Action::Product(id)) => product_card(talk, id, on).await,
        Some(Action::Add(id)) | Some(Action::More(id)) => {
            let answer = change_cart(talk, id, 1).await?;
            if matches!(action, Some(Action::More(_))) {
                cart(talk, on).await?;
            }
            *toast = Some(answer);
            Ok(())
        }
        Some(Action::Less(id)) => {
            change_cart(talk, id, -1).await?;
            cart(talk, on).await
        }
        Some(Action::Cart) => cart(talk, None).await,
        Some(Action::ClearCart) => {
            talk.chat.cart = Cart::default();
            talk.save_cart().await?;
            talk.say(talk.t("cart_empty", &[])).await
        }
        Some(Action::Checkout) => checkout(talk).await,
        Some(Action::Order(id)) => order_detail(talk, OrderId(id), None).await,
        Some(Action::CancelOrder(id)) => {
            let number = OrderId(id).number();
            match talk
                .app()
                .cancel_own_order(&talk.caller, OrderId(id), None)
                .await
            {
                Ok(_) => {
                    talk.set_state(ChatState::Idle).await?;
                    talk.say(talk.t("order_cancelled_by_you", &[("number", &number)]))
                        .await
                }
                Err(AppError::Order(OrderError::InvalidTransition { status, .. })) => {
                    let status = talk.t(&format!("status_{}", status.as_str()), &[]);
                    talk.say(talk.t(
                        "order_cannot_cancel",
                        &[("number", &number), ("status", &status)],
                    ))
                    .await
                }
                Err(err) => talk.refused(err).await,
            }
        }
        Some(Action::Pay(id)) => {
            let number = OrderId(id).number();
            match payable(talk, OrderId(id)).await? {
                Payable::Yes => {
                    talk.set_state(ChatState::AwaitingReceipt { order_id: id })
                        .await?;
                    talk.say(talk.t("send_receipt_now", &[("number", &number)]))
                        .await
                }
                Payable::Unknown => talk.say(talk.t("order_unknown", &[])).await,
                Payable::No(status) => {
                    let status = talk.t(&format!("status_{status}"), &[]);
                    talk.say(talk.t(
                        "receipt_not_payable",
                        &[("number", &number), ("status", &status)],
                    ))
                    .await
                }
            }
        }
        Some(Action::Verify(id)) => verify(talk, ReceiptId(id), None).await,
        Some(Action::Reject(id)) => {
            let receipt_id = ReceiptId(id);
            match talk
                .app()
                .authorize_resource::<grant::ReviewReceipts>(
                    &talk.caller,
                    Resource::Receipt(receipt_id),
                )
                .await
            {
                Ok(Some(_)) => {
                    talk.set_state(ChatState::AwaitingRejectReason { receipt_id: id })
                        .await?;
                    let number = number_of(talk, receipt_id).await;
                    talk.say(talk.t("ask_reject_reason", &[("number", &number)]))
                        .await
                }
                Ok(None) => talk.say(talk.t("not_allowed", &[])).await,
                Err(err) => talk.refused(err).await,
            }
        }
        Some(Action::Toggle(id)) => {
            let mut selected = match &talk.chat.state {
                ChatState::SelectingReceipts { selected } => selected.clone(),
                _ => Vec::new(),
            };
            match selected.iter().position(|s| *s == id) {
                Some(index) => {
                    selected.remove(index);
                }
                None if selected.len() < MAX_SELECTED => selected.push(id),
                None => {}
            }
            talk.set_state(ChatState::SelectingReceipts { selected })
                .await?;
            receipts_to_review(talk, on).await
        }
        Some(Action::VerifySelected) => {
            let selected = match &talk.chat.state {
                ChatState::SelectingReceipts { selected } => selected.clone(),
                _ => Vec::new(),
            };
            let mut counts = (0u32, 0u32);
            for id in selected {
                verify(talk, ReceiptId(id), Some(&mut counts)).await?;
            }
            talk.set_state(ChatState::Idle).await?;
            talk.say(talk.t(
                "bulk_result",
                &[
                    ("verified", &counts.0.to_string()),
                    ("failed", &counts.1.to_string()),
                ],
            ))
            .await
        }
        Some(Action::Received(id)) => {
            match talk
                .app()
                .authorize_resource::<grant::ManageStock>(
                    &talk.caller,
                    Resource::Product(ProductId(id)),
                )
                .await
            {
                Ok(Some(_)) => {
                    talk.set_state(ChatState::AwaitingUnits { product_id: id })
                        .await?;
                    let name = catalog::product(&talk.app().pool, id)
                        .await?
                        .map(|p| p.name)
                        .unwrap_or_default();
                    talk.say(talk.t("ask_units", &[("product", &name)])).await
                }
                Ok(None) => talk.say(talk.t("not_allowed", &[])).await,
                Err(err) => talk.refused(err).await,
            }
        }
        Some(Action::ConfirmLogin(yes)) => {
            let token = match &talk.chat.state {
                ChatState::ConfirmingLogin { token } => Some(token.clone()),
                _ => None,
            };
            talk.set_state(ChatState::Idle).await?;
            match (token, yes) {
                (Some(token), true) => {
                    match talk
                        .app()
                        .confirm_login(talk.telegram_user_id, &token)
                        .await
                    {
                        Ok(_) => talk.say(talk.t("login_confirmed", &[])).await,
                        Err(AppError::Auth(AuthError::UnknownTelegramUser)) => {
                            talk.say(talk.t("login_unknown_user", &[])).await
                        }
                        Err(_) => talk.say(talk.t("login_gone", &[])).await,
                    }
                }
                (Some(token), false) => {
                    talk.app()
                        .deny_qr_login(talk.telegram_user_id, &token)
                        .await?;
                    talk.say(talk.t("login_denied", &[])).await
                }
                (None, _) => talk.say(talk.t("login_gone", &[])).await,
            }
        }
        Some(Action::SecondFactor { approve, login_id }) => {
            match talk
                .app()
                .approve_second_factor(talk.telegram_user_id, login_id, approve)
                .await
            {
                Ok(()) if approve => talk.say(talk.t("login_confirmed", &[])).await,
                Ok(()) => talk.say(talk.t("login_denied", &[])).await,
                Err(_) => talk.say(talk.t("login_gone", &[])).await,
            }
        }
    }
}
