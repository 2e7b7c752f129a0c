//! The bot's memory of a conversation, kept in Postgres (`telegram_chats`) so it survives
//! restarts and follows the polling leader to another instance: the chat's language, what the
//! bot waits for next, and the cart. Adapter state only: an order exists once it is an event.

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::texts::Language;

/// What the bot waits for in a chat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChatState {
    #[default]
    Idle,
    /// A photo or PDF of the receipt for this order.
    AwaitingReceipt { order_id: Uuid },
    /// The reason a staff member rejects this receipt.
    AwaitingRejectReason { receipt_id: Uuid },
    /// How many units of this product arrived.
    AwaitingUnits { product_id: Uuid },
    /// Receipts a staff member ticked for a bulk verification.
    SelectingReceipts { selected: Vec<Uuid> },
    /// A Yes/No on signing in another device (the deep link's token, until answered).
    ConfirmingLogin { token: String },
}

/// A cart: products of one store and their quantities.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    #[serde(default)]
    pub store_id: Option<Uuid>,
    #[serde(default)]
    pub lines: Vec<CartLine>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    pub product_id: Uuid,
    pub quantity: i64,
}

impl Cart {
    /// Adds `delta` units of a product of `store_id` (a cart holds one store's products: another
    /// store's empties it first; returns whether it did). Lines at zero disappear.
    pub fn change(&mut self, store_id: Uuid, product_id: Uuid, delta: i64) -> bool {
        let emptied = self.store_id.is_some_and(|s| s != store_id) && !self.lines.is_empty();
        if self.store_id != Some(store_id) {
            self.lines.clear();
            self.store_id = Some(store_id);
        }
        match self.lines.iter_mut().find(|l| l.product_id == product_id) {
            Some(line) => line.quantity = (line.quantity + delta).max(0),
            None if delta > 0 => self.lines.push(CartLine {
                product_id,
                quantity: delta,
            }),
            None => {}
        }
        self.lines.retain(|l| l.quantity > 0);
        emptied
    }

    pub fn count(&self) -> i64 {
        self.lines.iter().map(|l| l.quantity).sum()
    }
}

/// One private chat.
#[derive(Clone, Debug)]
pub struct Chat {
    pub chat_id: i64,
    pub language: Language,
    pub state: ChatState,
    pub cart: Cart,
}

/// Loads the chat, creating it in `language` (the user's Telegram language) on first contact.
pub async fn load(pool: &PgPool, chat_id: i64, language: Language) -> Result<Chat, sqlx::Error> {
    let row: (
        String,
        sqlx::types::Json<ChatState>,
        sqlx::types::Json<Cart>,
    ) = sqlx::query_as(
        "insert into telegram_chats (chat_id, language) values ($1, $2)
         on conflict (chat_id) do update set updated_at = telegram_chats.updated_at
         returning language, state, cart",
    )
    .bind(chat_id)
    .bind(language.code())
    .fetch_one(pool)
    .await?;
    Ok(Chat {
        chat_id,
        language: Language::parse(&row.0).unwrap_or(language),
        state: row.1 .0,
        cart: row.2 .0,
    })
}

/// The language of a chat, if the bot ever talked in it.
pub async fn language_of(pool: &PgPool, chat_id: i64) -> Result<Option<Language>, sqlx::Error> {
    let code: Option<String> =
        sqlx::query_scalar("select language from telegram_chats where chat_id = $1")
            .bind(chat_id)
            .fetch_optional(pool)
            .await?;
    Ok(code.as_deref().and_then(Language::parse))
}

pub async fn set_state(pool: &PgPool, chat_id: i64, state: &ChatState) -> Result<(), sqlx::Error> {
    sqlx::query("update telegram_chats set state = $2, updated_at = now() where chat_id = $1")
        .bind(chat_id)
        .bind(sqlx::types::Json(state))
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn set_cart(pool: &PgPool, chat_id: i64, cart: &Cart) -> Result<(), sqlx::Error> {
    sqlx::query("update telegram_chats set cart = $2, updated_at = now() where chat_id = $1")
        .bind(chat_id)
        .bind(sqlx::types::Json(cart))
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn set_language(
    pool: &PgPool,
    chat_id: i64,
    language: Language,
) -> Result<(), sqlx::Error> {
    sqlx::query("update telegram_chats set language = $2, updated_at = now() where chat_id = $1")
        .bind(chat_id)
        .bind(language.code())
        .execute(pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cart_holds_one_stores_products_and_drops_empty_lines() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let (tea, mug) = (Uuid::now_v7(), Uuid::now_v7());
        let mut cart = Cart::default();
        assert!(!cart.change(a, tea, 1));
        cart.change(a, tea, 1);
        cart.change(a, mug, 1);
        assert_eq!(cart.count(), 3);
        cart.change(a, mug, -1);
        assert_eq!(cart.lines.len(), 1);
        // Another store's product empties the cart first.
        assert!(cart.change(b, mug, 2));
        assert_eq!((cart.store_id, cart.count()), (Some(b), 2));
        let json = serde_json::to_value(ChatState::AwaitingReceipt { order_id: tea }).unwrap();
        assert_eq!(json["kind"], "awaiting_receipt");
    }
}
