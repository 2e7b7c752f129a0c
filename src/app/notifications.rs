//! Deliveries of the notification outbox (`projections::outbox` records who is to be told
//! what): expanded into one notification-center row per recipient (`notifications`, rendered
//! in their language) and one delivery per recipient and push channel, chosen by the row's
//! priority and the recipient's preferences (`notification_preferences.rs`); sent at least once
//! by the delivery worker (`src/notify/`), retried with backoff, and marked with their outcome
//! so failures stay visible.
//!
//! Exactly once per recipient: `notifications` is unique on `(account_id, outbox_id)` and
//! `notification_deliveries` on `(outbox_id, account_id, channel)`, so expanding a row again
//! (a crash before `expanded_at` was set) adds nothing. A delivery's id (a UUID) is what a
//! receiver can drop duplicates by: e-mails carry it as their `Message-ID`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use projections::outbox::Priority;
use uuid::Uuid;

use aggregates::{AccountId, Channel, StoreId, StoreRole};

use super::authz::{grant, MATRIX};
use super::notification_preferences::{preferences_of, NotificationPreferences, PushChannel};
use super::{App, AppError, Caller, Origin, Principal};

/// Attempts before a delivery is given up (marked `failed`).
pub const MAX_DELIVERY_ATTEMPTS: i32 = 8;

/// The `NOTIFY` channel a new notification-center row is announced on (by a trigger, at
/// commit); the payload is the recipient's account id. Every instance listens on it (the
/// process's one listener, `projections::notifications`) and pushes the rows after the last
/// one it sent ([`App::notifications_after`]) to that account's live sessions (`app::feed`).
pub const NOTIFICATIONS_CHANNEL: &str = projections::notifications::CENTER_CHANNEL;

/// A delivery whose time has come.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct DueDelivery {
    pub delivery_id: Uuid,
    pub outbox_id: i64,
    pub account_id: Uuid,
    /// `telegram` or `email` ([`PushChannel`]).
    pub channel: String,
    /// The Telegram user (and private chat) to write to, if the account has one.
    pub telegram_user_id: Option<i64>,
    pub kind: String,
    pub params: serde_json::Value,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    /// For staff notifications: the store and the permission its recipients need.
    pub store_id: Option<Uuid>,
    pub permission: Option<String>,
}

impl DueDelivery {
    pub fn channel(&self) -> Option<PushChannel> {
        PushChannel::parse(&self.channel)
    }
}

/// An outbox row being expanded, as a renderer sees it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct OutboxNotice {
    pub outbox_id: i64,
    pub global_position: i64,
    pub kind: String,
    pub params: serde_json::Value,
    pub created_at: DateTime<Utc>,
    account_id: Option<Uuid>,
    store_id: Option<Uuid>,
    permission: Option<String>,
    priority: String,
}

impl OutboxNotice {
    pub fn priority(&self) -> Priority {
        Priority::parse(&self.priority).unwrap_or(Priority::Normal)
    }
}

/// Whom a notice is rendered for.
#[derive(Clone, Debug)]
pub struct NoticeRecipient {
    pub account_id: AccountId,
    /// Their chosen language (`en`, `ru`), if they chose one.
    pub language: Option<String>,
    pub telegram_user_id: Option<i64>,
}

/// A notice in words: what the notification center shows and an e-mail says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedNotice {
    pub title: String,
    pub body: String,
}

/// Puts notices into words. The texts are the adapters' (the bot's translation files), so the
/// delivery worker passes its renderer in; the application layer decides who, when and where.
#[async_trait]
pub trait NoticeRenderer: Send + Sync {
    async fn render(
        &self,
        notice: &OutboxNotice,
        recipient: &NoticeRecipient,
    ) -> Result<RenderedNotice, AppError>;
}

/// What a browser should sound like when it shows a notification (`notifications.sound`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Sound {
    /// An attention-grabbing sound: something to act on now.
    Alert,
    /// The platform's usual notification sound.
    Default,
    /// Silent.
    None,
}

/// The sound hint of a notification of `priority`.
pub fn sound_of(priority: Priority) -> Sound {
    match priority {
        Priority::Urgent => Sound::Alert,
        Priority::Normal => Sound::Default,
        Priority::Low => Sound::None,
    }
}

/// Where a notification leads a web client: the API resource it is about.
pub fn link_of(kind: &str, params: &serde_json::Value) -> Option<String> {
    let id = |name: &str| params[name].as_str().map(str::to_owned);
    match kind {
        "receipt_submitted" => id("receipt_id").map(|r| format!("/api/v1/receipts/{r}")),
        "stock_low" | "stock_out" => id("product_id").map(|p| format!("/api/v1/products/{p}")),
        "daily_summary" => {
            id("store_id").map(|s| format!("/api/v1/analytics/dashboard?store_id={s}"))
        }
        _ => id("order_id").map(|o| format!("/api/v1/orders/{o}")),
    }
}

/// An e-mail to send for a delivery: the recipient's address and the notice in their words.
#[derive(Clone, Debug)]
pub struct EmailNotice {
    pub to: String,
    pub subject: String,
    pub body: String,
    pub link: Option<String>,
}

impl App {
    /// Turns outbox rows not yet expanded into notification-center rows (every recipient)
    /// and deliveries (per push channel the row's priority and the recipient's preferences
    /// pick; staff recipients are the store's staff *now*, by the matrix). A Telegram delivery
    /// to someone with no Telegram user is `skipped`; a non-urgent one during their quiet hours
    /// waits for the end of them. Returns how many rows were expanded.
    pub async fn expand_outbox(
        &self,
        limit: i64,
        renderer: &dyn NoticeRenderer,
    ) -> Result<usize, AppError> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<OutboxNotice> = sqlx::query_as(
            "select outbox_id, global_position, kind, params, created_at, account_id, store_id,
                    permission, priority
               from notification_outbox
              where expanded_at is null order by outbox_id limit $1 for update skip locked",
        )
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let now = super::now();
        for row in &rows {
            let recipients: Vec<Uuid> = match (&row.account_id, &row.store_id, &row.permission) {
                (Some(account), _, _) => vec![*account],
                (None, Some(store), Some(permission)) => {
                    let roles = roles_allowed(permission);
                    sqlx::query_scalar(
                        "select account_id from store_staff where store_id = $1 and role = any($2)
                          order by account_id",
                    )
                    .bind(store)
                    .bind(&roles)
                    .fetch_all(&mut *tx)
                    .await?
                }
                // A store without a permission: its owners (the daily summary).
                (None, Some(store), None) => {
                    sqlx::query_scalar(
                        "select account_id from store_staff where store_id = $1 and role = $2
                          order by account_id",
                    )
                    .bind(store)
                    .bind(StoreRole::Owner.as_str())
                    .fetch_all(&mut *tx)
                    .await?
                }
                _ => Vec::new(),
            };
            let preferences = preferences_of(&mut *tx, &recipients).await?;
            let telegram: std::collections::HashMap<Uuid, i64> = sqlx::query_as(
                "select account_id, telegram_user_id from telegram_identities
                  where account_id = any($1)",
            )
            .bind(&recipients)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
            let priority = row.priority();
            for account in &recipients {
                let prefs = preferences.get(account).cloned().unwrap_or_default();
                let recipient = NoticeRecipient {
                    account_id: AccountId(*account),
                    language: prefs.language.clone(),
                    telegram_user_id: telegram.get(account).copied(),
                };
                let rendered = renderer.render(row, &recipient).await?;
                sqlx::query(
                    "insert into notifications
                            (account_id, outbox_id, global_position, kind, priority, title, body,
                             link, sound, params)
                     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     on conflict (account_id, outbox_id) do nothing",
                )
                .bind(account)
                .bind(row.outbox_id)
                .bind(row.global_position)
                .bind(&row.kind)
                .bind(priority.as_str())
                .bind(&rendered.title)
                .bind(&rendered.body)
                .bind(link_of(&row.kind, &row.params))
                .bind(sound_of(priority))
                .bind(&row.params)
                .execute(&mut *tx)
                .await?;
                record_deliveries(&mut tx, row.outbox_id, &recipient, &prefs, priority, now)
                    .await?;
            }
            sqlx::query("update notification_outbox set expanded_at = now() where outbox_id = $1")
                .bind(row.outbox_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }

    /// Pending deliveries due now, oldest first.
    pub async fn due_deliveries(&self, limit: i64) -> Result<Vec<DueDelivery>, AppError> {
        Ok(sqlx::query_as(
            "select d.delivery_id, d.outbox_id, d.account_id, d.channel, t.telegram_user_id,
                    o.kind, o.params, d.attempts, o.created_at, o.store_id, o.permission
               from notification_deliveries d
               join notification_outbox o on o.outbox_id = d.outbox_id
               left join telegram_identities t on t.account_id = d.account_id
              where d.status = 'pending' and d.next_attempt_at <= now()
              order by d.next_attempt_at, o.outbox_id limit $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The recipient of `delivery` as a caller, if they may still be told: not a blocked
    /// account, and for a staff notification still holding its permission in the store (a
    /// role revoked since the event counts). What the notification then shows (a receipt's
    /// file, say) goes through the same authorization as any request, with their roles *now*.
    pub async fn recipient(&self, delivery: &DueDelivery) -> Result<Option<Caller>, AppError> {
        let account_id = AccountId(delivery.account_id);
        let account = self.accounts.load(&account_id.to_string()).await?;
        if account.is_blocked() {
            return Ok(None);
        }
        let (principal, channel) = match delivery.telegram_user_id {
            Some(telegram_user_id) => (
                Principal::telegram(account_id, telegram_user_id),
                Channel::Telegram,
            ),
            None => (Principal::service(account_id), Channel::System),
        };
        let origin = Origin {
            request_id: format!("notification-{}", delivery.delivery_id),
            ..Origin::new(channel)
        };
        let caller = Caller::new(principal, origin);
        let (Some(store_id), Some(permission)) = (delivery.store_id, &delivery.permission) else {
            return Ok(Some(caller));
        };
        let store_id = StoreId(store_id);
        let allowed = match permission.as_str() {
            "ReviewReceipts" => self
                .authorize_visible::<grant::ReviewReceipts>(&caller, store_id)
                .await?
                .is_some(),
            "ViewOrders" => self
                .authorize_visible::<grant::ViewOrders>(&caller, store_id)
                .await?
                .is_some(),
            "ManageStock" => self
                .authorize_visible::<grant::ManageStock>(&caller, store_id)
                .await?
                .is_some(),
            _ => false,
        };
        Ok(allowed.then_some(caller))
    }

    /// Marks a delivery sent.
    pub async fn delivery_sent(&self, delivery_id: Uuid) -> Result<(), AppError> {
        sqlx::query(
            "update notification_deliveries set status = 'sent', sent_at = now(),
                    attempts = attempts + 1, last_error = null
              where delivery_id = $1",
        )
        .bind(delivery_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks a delivery skipped: nothing was sent, on purpose (see `recipient`), for `reason`.
    pub async fn delivery_skipped(&self, delivery_id: Uuid, reason: &str) -> Result<(), AppError> {
        sqlx::query(
            "update notification_deliveries
                set status = 'skipped', attempts = attempts + 1, skipped_reason = $2
              where delivery_id = $1",
        )
        .bind(delivery_id)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a failed attempt: retried after `retry_in` (`None`: now failed for good, as
    /// after [`MAX_DELIVERY_ATTEMPTS`]).
    pub async fn delivery_failed(
        &self,
        delivery_id: Uuid,
        error: &str,
        retry_in: Option<std::time::Duration>,
    ) -> Result<(), AppError> {
        let seconds = retry_in.map(|d| d.as_secs_f64());
        sqlx::query(
            "update notification_deliveries
                set attempts = attempts + 1, last_error = left($2, 2000),
                    status = case when $3::float8 is null or attempts + 1 >= $4 then 'failed'
                                  else 'pending' end,
                    next_attempt_at = now() + make_interval(secs => coalesce($3, 0))
              where delivery_id = $1",
        )
        .bind(delivery_id)
        .bind(error)
        .bind(seconds)
        .bind(MAX_DELIVERY_ATTEMPTS)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl App {
    /// The e-mail for `delivery`: the recipient's address (opened from their sealed e-mail;
    /// none when they have none or were erased) and the notice as their notification center
    /// shows it. `Ok(None)`: there is nobody to write to.
    pub async fn email_notice(
        &self,
        delivery: &DueDelivery,
    ) -> Result<Option<EmailNotice>, AppError> {
        let contacts = self.contacts(&[delivery.account_id]).await?;
        let Some(to) = contacts
            .get(&delivery.account_id)
            .filter(|contact| !contact.erased)
            .and_then(|contact| contact.email.clone())
        else {
            return Ok(None);
        };
        let notice: Option<(String, String, Option<String>)> = sqlx::query_as(
            "select title, body, link from notifications where account_id = $1 and outbox_id = $2",
        )
        .bind(delivery.account_id)
        .bind(delivery.outbox_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(notice.map(|(subject, body, link)| EmailNotice {
            to,
            subject,
            body,
            link,
        }))
    }
}

/// The deliveries of one recipient of an outbox row: one per push channel their preferences
/// pick for `priority`, due now or at the end of their quiet hours.
async fn record_deliveries(
    tx: &mut sqlx::PgConnection,
    outbox_id: i64,
    recipient: &NoticeRecipient,
    prefs: &NotificationPreferences,
    priority: Priority,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    let due = prefs.first_attempt_at(priority, now);
    for channel in prefs.channels(priority) {
        let skipped = match channel {
            PushChannel::Telegram if recipient.telegram_user_id.is_none() => {
                Some("no Telegram user is linked to the account")
            }
            _ => None,
        };
        sqlx::query(
            "insert into notification_deliveries
                    (delivery_id, outbox_id, account_id, channel, status, next_attempt_at,
                     skipped_reason)
             values ($1, $2, $3, $4, $5, $6, $7)
             on conflict (outbox_id, account_id, channel) do nothing",
        )
        .bind(Uuid::now_v7())
        .bind(outbox_id)
        .bind(recipient.account_id.0)
        .bind(channel.as_str())
        .bind(if skipped.is_some() {
            "skipped"
        } else {
            "pending"
        })
        .bind(due)
        .bind(skipped)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// The store roles a permission (named as in the matrix, e.g. `ReviewReceipts`) is granted to.
fn roles_allowed(permission: &str) -> Vec<&'static str> {
    MATRIX
        .iter()
        .filter(|(p, _, _)| p.as_str() == permission)
        .flat_map(|(_, _, roles)| roles.iter().map(|r| r.as_str()))
        .collect()
}
