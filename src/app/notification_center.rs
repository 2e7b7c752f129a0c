//! The notification center: everyone's notifications, rendered in their language when the
//! delivery worker expanded the outbox (`notifications.rs`), read and marked read by their
//! recipient only; and, for platform admins, the deliveries that failed.
//!
//! Not a read model: `notifications` is written by the delivery worker (and `read_at` by its
//! reader), so its row types and queries live here, in the layer that owns the table.

use chrono::{DateTime, Utc};
use projections::outbox::Priority;
use uuid::Uuid;

use aggregates::AccountId;

use super::notifications::Sound;
use super::{App, AppError, Caller, PlatformAdmin};

/// Most rows one call returns.
pub const MAX_NOTIFICATIONS_PAGE: i64 = 200;

/// A notification as the center and WebSocket sessions show it: browser-friendly (title, body,
/// a link into the API, a sound hint).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct NotificationView {
    pub notification_id: i64,
    /// The global position of the event that caused it.
    pub global_position: i64,
    pub kind: String,
    pub priority: Priority,
    pub title: String,
    pub body: String,
    pub link: Option<String>,
    pub sound: Sound,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
}

/// Which of the caller's notifications to list.
#[derive(Clone, Debug, Default)]
pub struct NotificationFilter {
    pub unread_only: bool,
    pub kind: Option<String>,
    pub priority: Option<Priority>,
    /// Only those with a smaller id (the page before).
    pub before: Option<i64>,
    /// Page size, 1 to [`MAX_NOTIFICATIONS_PAGE`].
    pub limit: i64,
}

/// One page of the center, newest first, with the caller's unread count (all of it, not just
/// this page's).
#[derive(Clone, Debug)]
pub struct NotificationPage {
    pub items: Vec<NotificationView>,
    pub unread_count: i64,
    /// The `before` of the next (older) page; `None` on the last one.
    pub next_before: Option<i64>,
}

/// A delivery's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Sent,
    Failed,
    Skipped,
}

/// One delivery of a notification on one channel, as platform admins see it.
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow)]
pub struct DeliveryView {
    pub delivery_id: Uuid,
    pub outbox_id: i64,
    pub account_id: Uuid,
    pub channel: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub skipped_reason: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub kind: String,
    pub store_id: Option<Uuid>,
    /// When the event that caused it was recorded.
    pub created_at: DateTime<Utc>,
}

const VIEW_COLUMNS: &str = "notification_id, global_position, kind, priority, title, body, \
                            link, sound, created_at, read_at";

impl App {
    /// The newest notification of `account_id` in the center (`0`: none yet): where a client
    /// that follows `notifications` without `after` starts.
    pub async fn latest_notification_id(&self, account_id: AccountId) -> Result<i64, AppError> {
        Ok(sqlx::query_scalar(
            "select coalesce(max(notification_id), 0) from notifications where account_id = $1",
        )
        .bind(account_id.0)
        .fetch_one(&self.pool)
        .await?)
    }

    /// `account`'s notifications with an id above `after_id`, oldest first, at most `limit`
    /// (1 to 200): what a WebSocket session sends after the last one it sent, when
    /// `NOTIFICATIONS_CHANNEL` announces a new row for the account. The caller (the session)
    /// has authenticated `account` already.
    pub async fn notifications_after(
        &self,
        account: AccountId,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<NotificationView>, AppError> {
        Ok(sqlx::query_as(&format!(
            "select {VIEW_COLUMNS} from notifications
              where account_id = $1 and notification_id > $2
              order by notification_id limit $3"
        ))
        .bind(account.0)
        .bind(after_id)
        .bind(limit.clamp(1, MAX_NOTIFICATIONS_PAGE))
        .fetch_all(&self.pool)
        .await?)
    }

    /// The caller's own notifications, newest first, with their unread count.
    pub async fn notification_center(
        &self,
        caller: &Caller,
        filter: &NotificationFilter,
    ) -> Result<NotificationPage, AppError> {
        let account = caller.account_id().0;
        let limit = filter.limit.clamp(1, MAX_NOTIFICATIONS_PAGE);
        let mut items: Vec<NotificationView> = sqlx::query_as(&format!(
            "select {VIEW_COLUMNS} from notifications
              where account_id = $1
                and (not $2 or read_at is null)
                and ($3::text is null or kind = $3)
                and ($4::text is null or priority = $4)
                and ($5::bigint is null or notification_id < $5)
              order by notification_id desc limit $6"
        ))
        .bind(account)
        .bind(filter.unread_only)
        .bind(&filter.kind)
        .bind(filter.priority)
        .bind(filter.before)
        // One more than the page: whether there is an older page.
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        let next_before = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|n| n.notification_id)
        } else {
            None
        };
        let unread_count = sqlx::query_scalar(
            "select count(*) from notifications where account_id = $1 and read_at is null",
        )
        .bind(account)
        .fetch_one(&self.pool)
        .await?;
        Ok(NotificationPage {
            items,
            unread_count,
            next_before,
        })
    }

    /// Marks one of the caller's notifications read (again: harmless, the first time stays).
    /// `None` when the caller has no such notification — someone else's is not theirs.
    pub async fn mark_notification_read(
        &self,
        caller: &Caller,
        notification_id: i64,
    ) -> Result<Option<NotificationView>, AppError> {
        Ok(sqlx::query_as(&format!(
            "update notifications set read_at = coalesce(read_at, now())
              where notification_id = $1 and account_id = $2
              returning {VIEW_COLUMNS}"
        ))
        .bind(notification_id)
        .bind(caller.account_id().0)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Marks every unread notification of the caller read; how many were unread.
    pub async fn mark_all_notifications_read(&self, caller: &Caller) -> Result<u64, AppError> {
        Ok(sqlx::query(
            "update notifications set read_at = now() where account_id = $1 and read_at is null",
        )
        .bind(caller.account_id().0)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Deliveries across the platform, newest first, optionally of one status and channel:
    /// what platform admins look at to see which notifications did not get through and why.
    pub async fn notification_deliveries(
        &self,
        _admin: &PlatformAdmin,
        status: Option<DeliveryStatus>,
        channel: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DeliveryView>, AppError> {
        Ok(sqlx::query_as(
            "select d.delivery_id, d.outbox_id, d.account_id, d.channel, d.status, d.attempts,
                    d.last_error, d.skipped_reason, d.next_attempt_at, d.sent_at, o.kind,
                    o.store_id, o.created_at
               from notification_deliveries d
               join notification_outbox o on o.outbox_id = d.outbox_id
              where ($1::text is null or d.status = $1)
                and ($2::text is null or d.channel = $2)
              order by d.outbox_id desc, d.delivery_id desc limit $3",
        )
        .bind(status)
        .bind(channel)
        .bind(limit.clamp(1, MAX_NOTIFICATIONS_PAGE))
        .fetch_all(&self.pool)
        .await?)
    }
}
