//! Notifications as Telegram messages: one delivery of the outbox rendered in its recipient's
//! language and sent (a receipt to review goes with its photo or PDF and Verify/Reject
//! buttons; a stock alert with a "received units" button). Also the second-factor prompts.

use aggregates::{OrderId, ReceiptId, StoreId};
use teloxide::payloads::{SendDocumentSetters, SendMessageSetters, SendPhotoSetters};
use teloxide::prelude::*;
use teloxide::types::{ChatId, InputFile};
use uuid::Uuid;

use super::chats;
use super::texts::{money, t, Language};
use super::ui::{button, keyboard, Action};
use crate::app::{grant, App, DueDelivery, SecondFactorPrompt};
use projections::read_models::catalog::queries as catalog;
use projections::read_models::receipts::queries as receipts;

/// Why a delivery could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Telegram (or the network) failed; worth trying again after the delay, if any.
    #[error("telegram: {0}")]
    Telegram(#[from] teloxide::RequestError),
    #[error("database: {0}")]
    Database(String),
}

impl From<crate::app::AppError> for SendError {
    fn from(err: crate::app::AppError) -> Self {
        SendError::Database(err.to_string())
    }
}

impl From<sqlx::Error> for SendError {
    fn from(err: sqlx::Error) -> Self {
        SendError::Database(err.to_string())
    }
}

fn uuid_param(params: &serde_json::Value, name: &str) -> Option<Uuid> {
    params[name].as_str().and_then(|s| s.parse().ok())
}

/// What became of a delivery that did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Telegram accepted the message.
    Delivered,
    /// Nothing was sent, for this reason: the recipient has no Telegram user, may no longer
    /// be told (blocked, or off the staff), or the notification names nothing that exists.
    Skipped(&'static str),
}

/// Sends one delivery to its recipient's private chat.
pub async fn send(app: &App, bot: &Bot, delivery: &DueDelivery) -> Result<Sent, SendError> {
    let Some(telegram_user_id) = delivery.telegram_user_id else {
        return Ok(Sent::Skipped("no Telegram user is linked to the account"));
    };
    let chat_id = ChatId(telegram_user_id);
    let language = chats::language_of(&app.pool, chat_id.0)
        .await?
        .unwrap_or(Language::En);
    let Some(recipient) = app.recipient(delivery).await? else {
        // Blocked, or no longer on the staff with the right: nothing to tell them.
        tracing::info!(delivery_id = %delivery.delivery_id, "the recipient may no longer be told");
        return Ok(Sent::Skipped("the recipient may no longer be told"));
    };
    let params = &delivery.params;
    let order = uuid_param(params, "order_id");
    let number = order.map(|id| OrderId(id).number()).unwrap_or_default();
    let text = |key: &str, args: &[(&str, &str)]| t(language, key, args);
    match delivery.kind.as_str() {
        "order_paid" => {
            let total = money(
                params["amount_minor"].as_i64().unwrap_or(0),
                params["currency"].as_str().unwrap_or_default(),
            );
            let body = text(
                "notify_order_paid",
                &[("number", &number), ("total", &total)],
            );
            bot.send_message(chat_id, body).await?;
        }
        "receipt_rejected" => {
            let reason = params["reason"].as_str().unwrap_or_default();
            let body = text(
                "notify_receipt_rejected",
                &[("number", &number), ("reason", reason)],
            );
            let mut message = bot.send_message(chat_id, body);
            if let Some(order_id) = order {
                message = message.reply_markup(keyboard(vec![vec![button(
                    text("button_pay", &[]),
                    Action::Pay(order_id),
                )]]));
            }
            message.await?;
        }
        "order_cancelled" => {
            let reason = params["reason"]
                .as_str()
                .map(|r| format!(" {r}"))
                .unwrap_or_default();
            let body = text(
                "notify_order_cancelled",
                &[("number", &number), ("reason", &reason)],
            );
            bot.send_message(chat_id, body).await?;
        }
        "order_expired" => {
            bot.send_message(
                chat_id,
                text("notify_order_expired", &[("number", &number)]),
            )
            .await?;
        }
        "order_fulfilled" => {
            bot.send_message(
                chat_id,
                text("notify_order_fulfilled", &[("number", &number)]),
            )
            .await?;
        }
        "order_cancelled_by_customer" => {
            bot.send_message(
                chat_id,
                text("notify_customer_cancelled", &[("number", &number)]),
            )
            .await?;
        }
        "receipt_submitted" => {
            let Some(receipt_id) = uuid_param(params, "receipt_id") else {
                return Ok(Sent::Skipped("the notification names no receipt"));
            };
            let Some(receipt) = receipts::receipt(&app.pool, receipt_id).await? else {
                // Not projected yet: the worker tries again shortly.
                return Err(SendError::Database(
                    "the receipt is not projected yet".into(),
                ));
            };
            let store_id = StoreId(receipt.store_id);
            let Some(access) = app
                .authorize_visible::<grant::ViewReceipts>(&recipient, store_id)
                .await?
            else {
                // No longer staff of the store: nothing to show them.
                tracing::info!(delivery_id = %delivery.delivery_id, "the recipient may no longer see the receipt");
                return Ok(Sent::Skipped("the recipient may no longer see the receipt"));
            };
            let currency = receipt.order_currency.clone().unwrap_or_default();
            let total = money(receipt.order_total_minor.unwrap_or(0), &currency);
            let claimed = receipt
                .claimed_amount_minor
                .map(|claimed| text("notify_claimed", &[("claimed", &money(claimed, &currency))]))
                .unwrap_or_default();
            let duplicate = if receipt.possible_duplicate() {
                text("notify_duplicate", &[])
            } else {
                String::new()
            };
            let caption = text(
                "notify_receipt_submitted",
                &[
                    ("number", &number),
                    ("total", &total),
                    ("claimed", &claimed),
                    ("duplicate", &duplicate),
                ],
            );
            let buttons = keyboard(vec![vec![
                button(text("button_verify", &[]), Action::Verify(receipt_id)),
                button(text("button_reject", &[]), Action::Reject(receipt_id)),
            ]]);
            let (stored, content) = app.receipt_file(&access, ReceiptId(receipt_id)).await?;
            let media_type = stored.media_type;
            let name = format!(
                "receipt-{number}.{}",
                match media_type.as_str() {
                    "image/png" => "png",
                    "image/webp" => "webp",
                    "application/pdf" => "pdf",
                    _ => "jpg",
                }
            );
            let file = InputFile::memory(content).file_name(name);
            if media_type.starts_with("image/") && media_type != "image/webp" {
                bot.send_photo(chat_id, file)
                    .caption(caption)
                    .reply_markup(buttons)
                    .await?;
            } else {
                bot.send_document(chat_id, file)
                    .caption(caption)
                    .reply_markup(buttons)
                    .await?;
            }
        }
        "stock_low" | "stock_out" => {
            let Some(product_id) = uuid_param(params, "product_id") else {
                return Ok(Sent::Skipped("the notification names no product"));
            };
            let product = catalog::product(&app.pool, product_id)
                .await?
                .map(|p| p.name)
                .unwrap_or_default();
            let body = if delivery.kind == "stock_low" {
                text(
                    "notify_stock_low",
                    &[
                        ("product", &product),
                        ("available", &params["available"].to_string()),
                        ("threshold", &params["threshold"].to_string()),
                    ],
                )
            } else {
                text("notify_stock_out", &[("product", &product)])
            };
            bot.send_message(chat_id, body)
                .reply_markup(keyboard(vec![vec![button(
                    text("button_received", &[]),
                    Action::Received(product_id),
                )]]))
                .await?;
        }
        other => {
            tracing::warn!(kind = other, "a notification of an unknown kind is skipped");
            return Ok(Sent::Skipped("no Telegram message for this kind"));
        }
    }
    Ok(Sent::Delivered)
}

/// Puts a second-factor request to its Telegram user with Approve/Deny buttons.
pub async fn prompt(app: &App, bot: &Bot, prompt: &SecondFactorPrompt) -> Result<(), SendError> {
    let chat_id = ChatId(prompt.telegram_user_id);
    let language = chats::language_of(&app.pool, chat_id.0)
        .await?
        .unwrap_or(Language::En);
    let device = super::handlers::device(&prompt.user_agent, &prompt.client_ip);
    let question = if prompt.purpose == "reauthentication" {
        "reauthentication_question"
    } else {
        "second_factor_question"
    };
    bot.send_message(chat_id, t(language, question, &[("device", &device)]))
        .reply_markup(keyboard(vec![vec![
            button(
                t(language, "button_yes", &[]),
                Action::SecondFactor {
                    approve: true,
                    login_id: prompt.login_id,
                },
            ),
            button(
                t(language, "button_no", &[]),
                Action::SecondFactor {
                    approve: false,
                    login_id: prompt.login_id,
                },
            ),
        ]]))
        .await?;
    Ok(())
}
