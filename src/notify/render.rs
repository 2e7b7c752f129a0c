//! Notices in words for the notification center and e-mail: a title and a body in the
//! recipient's language, from the bot's translation files (`src/telegram/texts/`; the body is
//! the very text the bot sends, the title a `title_<kind>` key beside it). The facts the outbox
//! row does not carry (a product's name, a receipt's order total) come from the read models;
//! one not projected yet is left out rather than waited for.

use async_trait::async_trait;
use sqlx::PgPool;
use uuid::Uuid;

use crate::app::{AppError, NoticeRecipient, NoticeRenderer, OutboxNotice, RenderedNotice};
use crate::telegram::chats;
use crate::telegram::texts::{money, t, Language};
use aggregates::OrderId;
use projections::read_models::catalog::queries as catalog;
use projections::read_models::receipts::queries as receipts;

/// Renders from the translation files and the read models in `pool`.
pub struct Texts {
    pub pool: PgPool,
}

fn uuid_param(params: &serde_json::Value, name: &str) -> Option<Uuid> {
    params[name].as_str().and_then(|s| s.parse().ok())
}

impl Texts {
    /// The recipient's language: their choice, else their Telegram chat's, else English.
    async fn language(&self, recipient: &NoticeRecipient) -> Result<Language, AppError> {
        if let Some(language) = recipient.language.as_deref().and_then(Language::parse) {
            return Ok(language);
        }
        Ok(match recipient.telegram_user_id {
            Some(chat) => chats::language_of(&self.pool, chat).await?,
            None => None,
        }
        .unwrap_or(Language::En))
    }
}

#[async_trait]
impl NoticeRenderer for Texts {
    async fn render(
        &self,
        notice: &OutboxNotice,
        recipient: &NoticeRecipient,
    ) -> Result<RenderedNotice, AppError> {
        let language = self.language(recipient).await?;
        let params = &notice.params;
        let number = uuid_param(params, "order_id")
            .map(|id| OrderId(id).number())
            .unwrap_or_default();
        let text = |key: &str, args: &[(&str, &str)]| t(language, key, args);
        let title_args = [("number", number.as_str())];
        let (title, body) = match notice.kind.as_str() {
            "order_paid" => {
                let total = money(
                    params["amount_minor"].as_i64().unwrap_or(0),
                    params["currency"].as_str().unwrap_or_default(),
                );
                (
                    text("title_order_paid", &title_args),
                    text(
                        "notify_order_paid",
                        &[("number", &number), ("total", &total)],
                    ),
                )
            }
            "receipt_rejected" => (
                text("title_receipt_rejected", &title_args),
                text(
                    "notify_receipt_rejected",
                    &[
                        ("number", &number),
                        ("reason", params["reason"].as_str().unwrap_or_default()),
                    ],
                ),
            ),
            "order_cancelled" => {
                let reason = params["reason"]
                    .as_str()
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default();
                (
                    text("title_order_cancelled", &title_args),
                    text(
                        "notify_order_cancelled",
                        &[("number", &number), ("reason", &reason)],
                    ),
                )
            }
            "order_expired" => (
                text("title_order_expired", &title_args),
                text("notify_order_expired", &title_args),
            ),
            "order_fulfilled" => (
                text("title_order_fulfilled", &title_args),
                text("notify_order_fulfilled", &title_args),
            ),
            "order_cancelled_by_customer" => (
                text("title_customer_cancelled", &title_args),
                text("notify_customer_cancelled", &title_args),
            ),
            "receipt_submitted" => {
                let receipt = match uuid_param(params, "receipt_id") {
                    Some(id) => receipts::receipt(&self.pool, id).await?,
                    None => None,
                };
                let currency = receipt
                    .as_ref()
                    .and_then(|r| r.order_currency.clone())
                    .unwrap_or_default();
                let total = receipt
                    .as_ref()
                    .and_then(|r| r.order_total_minor)
                    .map(|total| money(total, &currency))
                    .unwrap_or_else(|| "…".to_owned());
                let claimed = params["claimed_amount_minor"]
                    .as_i64()
                    .map(|claimed| {
                        text("notify_claimed", &[("claimed", &money(claimed, &currency))])
                    })
                    .unwrap_or_default();
                let duplicate = if receipt.as_ref().is_some_and(|r| r.possible_duplicate()) {
                    text("notify_duplicate", &[])
                } else {
                    String::new()
                };
                (
                    text("title_receipt_submitted", &title_args),
                    text(
                        "notify_receipt_submitted",
                        &[
                            ("number", &number),
                            ("total", &total),
                            ("claimed", &claimed),
                            ("duplicate", &duplicate),
                        ],
                    ),
                )
            }
            "stock_low" | "stock_out" => {
                let product = match uuid_param(params, "product_id") {
                    Some(id) => catalog::product(&self.pool, id).await?.map(|p| p.name),
                    None => None,
                }
                .unwrap_or_default();
                if notice.kind == "stock_low" {
                    (
                        text("title_stock_low", &[("product", &product)]),
                        text(
                            "notify_stock_low",
                            &[
                                ("product", &product),
                                ("available", &params["available"].to_string()),
                                ("threshold", &params["threshold"].to_string()),
                            ],
                        ),
                    )
                } else {
                    (
                        text("title_stock_out", &[("product", &product)]),
                        text("notify_stock_out", &[("product", &product)]),
                    )
                }
            }
            "daily_summary" => {
                let store = match uuid_param(params, "store_id") {
                    Some(id) => catalog::store(&self.pool, id).await?.map(|s| s.name),
                    None => None,
                }
                .unwrap_or_default();
                let day = params["day"].as_str().unwrap_or_default();
                let revenue = money(
                    params["revenue_minor"].as_i64().unwrap_or(0),
                    params["currency"].as_str().unwrap_or_default(),
                );
                (
                    text("title_daily_summary", &[("store", &store), ("day", day)]),
                    text(
                        "notify_daily_summary",
                        &[
                            ("store", &store),
                            ("day", day),
                            ("orders", &params["orders"].to_string()),
                            ("paid", &params["paid"].to_string()),
                            ("revenue", &revenue),
                        ],
                    ),
                )
            }
            other => (other.replace('_', " "), String::new()),
        };
        Ok(RenderedNotice { title, body })
    }
}
