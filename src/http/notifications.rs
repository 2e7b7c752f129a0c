//! The notification center (`/api/v1/me/notifications`): the caller's own notifications with
//! their unread count, marking one or all read; the caller's notification preferences; and,
//! for platform admins, the deliveries that did not get through
//! (`/api/v1/admin/notification-deliveries`). Payloads are browser-friendly: a web client can
//! show each one as a native notification (title, body, link, sound hint).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi, Tags};
use uuid::Uuid;

use super::auth::BearerAuth;
use super::context::caller;
use super::error::ApiError;
use crate::app::{
    App, DeliveryStatus, DeliveryView, NotificationFilter, NotificationPreferences,
    NotificationView, PreferencesChange, Sound,
};
use projections::outbox::Priority;

#[derive(Tags)]
enum ApiTags {
    /// The caller's notification center and preferences; failed deliveries for platform admins.
    Notifications,
}

/// How pressing a notification is: `urgent` is pushed on every channel the person enabled,
/// `normal` on Telegram, `low` only shows here.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum NotificationPriority {
    Urgent,
    Normal,
    Low,
}

impl From<Priority> for NotificationPriority {
    fn from(priority: Priority) -> Self {
        match priority {
            Priority::Urgent => NotificationPriority::Urgent,
            Priority::Normal => NotificationPriority::Normal,
            Priority::Low => NotificationPriority::Low,
        }
    }
}

impl From<NotificationPriority> for Priority {
    fn from(priority: NotificationPriority) -> Self {
        match priority {
            NotificationPriority::Urgent => Priority::Urgent,
            NotificationPriority::Normal => Priority::Normal,
            NotificationPriority::Low => Priority::Low,
        }
    }
}

/// What a browser should sound like when it shows the notification.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum SoundHint {
    Alert,
    Default,
    None,
}

impl From<Sound> for SoundHint {
    fn from(sound: Sound) -> Self {
        match sound {
            Sound::Alert => SoundHint::Alert,
            Sound::Default => SoundHint::Default,
            Sound::None => SoundHint::None,
        }
    }
}

/// One notification, in the recipient's language.
#[derive(Debug, Object)]
#[oai(rename = "Notification")]
pub struct NotificationItem {
    pub notification_id: i64,
    /// The global position of the event that caused it.
    pub global_position: i64,
    /// e.g. `order_paid`, `receipt_rejected`, `receipt_submitted`, `stock_low`.
    pub kind: String,
    pub priority: NotificationPriority,
    pub title: String,
    pub body: String,
    /// The API resource it is about, if any.
    #[oai(skip_serializing_if_is_none)]
    pub link: Option<String>,
    pub sound: SoundHint,
    pub created_at: DateTime<Utc>,
    #[oai(skip_serializing_if_is_none)]
    pub read_at: Option<DateTime<Utc>>,
}

impl From<NotificationView> for NotificationItem {
    fn from(view: NotificationView) -> Self {
        Self {
            notification_id: view.notification_id,
            global_position: view.global_position,
            kind: view.kind,
            priority: view.priority.into(),
            title: view.title,
            body: view.body,
            link: view.link,
            sound: view.sound.into(),
            created_at: view.created_at,
            read_at: view.read_at,
        }
    }
}

/// A page of the caller's notifications, newest first.
#[derive(Debug, Object)]
pub struct NotificationList {
    pub items: Vec<NotificationItem>,
    /// All the caller's unread notifications, not only this page's.
    pub unread_count: i64,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub next_before: Option<i64>,
}

/// How many notifications a request marked read.
#[derive(Debug, Object)]
pub struct MarkedRead {
    pub marked: u64,
}

/// Quiet hours: only urgent notifications are pushed between `start` and `end` (local times,
/// `HH:MM`; may cross midnight) in `time_zone`; the rest wait for the end.
#[derive(Debug, Object)]
pub struct QuietHoursView {
    #[oai(validator(pattern = r"^\d{2}:\d{2}$"))]
    pub start: String,
    #[oai(validator(pattern = r"^\d{2}:\d{2}$"))]
    pub end: String,
    /// An IANA time zone, e.g. `Europe/Moscow`.
    #[oai(validator(min_length = 1, max_length = 64))]
    pub time_zone: String,
}

/// A language notifications are written in.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum NotificationLanguage {
    En,
    Ru,
}

impl NotificationLanguage {
    fn code(self) -> &'static str {
        match self {
            NotificationLanguage::En => "en",
            NotificationLanguage::Ru => "ru",
        }
    }
}

/// How the caller wants to be told. The notification center always has everything; `urgent`
/// notifications go to every enabled channel, `normal` ones to Telegram (and e-mail only with
/// `email_for_normal`), `low` ones to the center only.
#[derive(Debug, Object)]
pub struct NotificationPreferencesView {
    pub telegram: bool,
    pub email: bool,
    /// E-mail also carries normal notifications (default: urgent only).
    #[oai(default)]
    pub email_for_normal: bool,
    #[oai(skip_serializing_if_is_none)]
    pub quiet_hours: Option<QuietHoursView>,
    /// Absent: the Telegram chat's language, else English.
    #[oai(skip_serializing_if_is_none)]
    pub language: Option<NotificationLanguage>,
}

impl From<NotificationPreferences> for NotificationPreferencesView {
    fn from(prefs: NotificationPreferences) -> Self {
        Self {
            telegram: prefs.telegram,
            email: prefs.email,
            email_for_normal: prefs.email_for_normal,
            quiet_hours: prefs.quiet_hours.map(|q| QuietHoursView {
                start: q.start.format("%H:%M").to_string(),
                end: q.end.format("%H:%M").to_string(),
                time_zone: q.time_zone.name().to_owned(),
            }),
            language: match prefs.language.as_deref() {
                Some("ru") => Some(NotificationLanguage::Ru),
                Some("en") => Some(NotificationLanguage::En),
                _ => None,
            },
        }
    }
}

/// A delivery's state.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum DeliveryState {
    Pending,
    Sent,
    Failed,
    Skipped,
}

impl From<DeliveryStatus> for DeliveryState {
    fn from(status: DeliveryStatus) -> Self {
        match status {
            DeliveryStatus::Pending => DeliveryState::Pending,
            DeliveryStatus::Sent => DeliveryState::Sent,
            DeliveryStatus::Failed => DeliveryState::Failed,
            DeliveryStatus::Skipped => DeliveryState::Skipped,
        }
    }
}

impl From<DeliveryState> for DeliveryStatus {
    fn from(state: DeliveryState) -> Self {
        match state {
            DeliveryState::Pending => DeliveryStatus::Pending,
            DeliveryState::Sent => DeliveryStatus::Sent,
            DeliveryState::Failed => DeliveryStatus::Failed,
            DeliveryState::Skipped => DeliveryStatus::Skipped,
        }
    }
}

/// A push channel.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum DeliveryChannel {
    Telegram,
    Email,
}

impl DeliveryChannel {
    fn as_str(self) -> &'static str {
        match self {
            DeliveryChannel::Telegram => "telegram",
            DeliveryChannel::Email => "email",
        }
    }
}

/// One delivery of a notification on one channel.
#[derive(Debug, Object)]
#[oai(rename = "NotificationDelivery")]
pub struct DeliveryItem {
    /// The delivery's id: an e-mail's `Message-ID` is made of it.
    pub delivery_id: Uuid,
    pub account_id: Uuid,
    /// `telegram` or `email`.
    pub channel: String,
    pub status: DeliveryState,
    pub attempts: i32,
    /// The last failure.
    #[oai(skip_serializing_if_is_none)]
    pub last_error: Option<String>,
    /// Why nothing was sent.
    #[oai(skip_serializing_if_is_none)]
    pub skipped_reason: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    #[oai(skip_serializing_if_is_none)]
    pub sent_at: Option<DateTime<Utc>>,
    pub kind: String,
    /// The store, for notifications to a store's staff.
    #[oai(skip_serializing_if_is_none)]
    pub store_id: Option<Uuid>,
    /// When the event that caused it was recorded.
    pub created_at: DateTime<Utc>,
}

impl From<DeliveryView> for DeliveryItem {
    fn from(view: DeliveryView) -> Self {
        Self {
            delivery_id: view.delivery_id,
            account_id: view.account_id,
            channel: view.channel,
            status: view.status.into(),
            attempts: view.attempts,
            last_error: view.last_error,
            skipped_reason: view.skipped_reason,
            next_attempt_at: view.next_attempt_at,
            sent_at: view.sent_at,
            kind: view.kind,
            store_id: view.store_id,
            created_at: view.created_at,
        }
    }
}

fn notification_not_found() -> ApiError {
    ApiError::not_found("notification-not-found", "no such notification of yours")
}

pub struct NotificationsApi {
    pub app: Arc<App>,
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Notifications")]
impl NotificationsApi {
    /// The caller's notifications, newest first, with their unread count.
    #[oai(
        path = "/me/notifications",
        method = "get",
        operation_id = "notifications_list"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        req: &Request,
        auth: BearerAuth,
        /// Only unread ones.
        unread: Query<Option<bool>>,
        /// Only this kind (e.g. `order_paid`).
        #[oai(validator(max_length = 64))]
        kind: Query<Option<String>>,
        priority: Query<Option<NotificationPriority>>,
        /// Only those older than this notification id (the `next_before` of a page).
        before: Query<Option<i64>>,
        /// Page size, 1 to 200 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<Option<i64>>,
    ) -> Result<Json<NotificationList>, ApiError> {
        let caller = caller(req, auth.0);
        let page = self
            .app
            .notification_center(
                &caller,
                &NotificationFilter {
                    unread_only: unread.0.unwrap_or(false),
                    kind: kind.0,
                    priority: priority.0.map(Priority::from),
                    before: before.0,
                    limit: limit.0.unwrap_or(50),
                },
            )
            .await?;
        Ok(Json(NotificationList {
            items: page.items.into_iter().map(NotificationItem::from).collect(),
            unread_count: page.unread_count,
            next_before: page.next_before,
        }))
    }

    /// Mark one of the caller's notifications read.
    #[oai(
        path = "/me/notifications/:notification_id/read",
        method = "post",
        operation_id = "notifications_read"
    )]
    async fn read(
        &self,
        req: &Request,
        auth: BearerAuth,
        notification_id: Path<i64>,
    ) -> Result<Json<NotificationItem>, ApiError> {
        let caller = caller(req, auth.0);
        let view = self
            .app
            .mark_notification_read(&caller, notification_id.0)
            .await?
            .ok_or_else(notification_not_found)?;
        Ok(Json(view.into()))
    }

    /// Mark all the caller's notifications read.
    #[oai(
        path = "/me/notifications/read-all",
        method = "post",
        operation_id = "notifications_read_all"
    )]
    async fn read_all(
        &self,
        req: &Request,
        auth: BearerAuth,
    ) -> Result<Json<MarkedRead>, ApiError> {
        let caller = caller(req, auth.0);
        let marked = self.app.mark_all_notifications_read(&caller).await?;
        Ok(Json(MarkedRead { marked }))
    }

    /// The caller's notification preferences (the defaults until they set some).
    #[oai(
        path = "/me/notification-preferences",
        method = "get",
        operation_id = "notification_preferences_get"
    )]
    async fn preferences(
        &self,
        req: &Request,
        auth: BearerAuth,
    ) -> Result<Json<NotificationPreferencesView>, ApiError> {
        let caller = caller(req, auth.0);
        let prefs = self.app.notification_preferences(&caller).await?;
        Ok(Json(prefs.into()))
    }

    /// Replace the caller's notification preferences.
    #[oai(
        path = "/me/notification-preferences",
        method = "put",
        operation_id = "notification_preferences_put"
    )]
    async fn set_preferences(
        &self,
        req: &Request,
        auth: BearerAuth,
        body: Json<NotificationPreferencesView>,
    ) -> Result<Json<NotificationPreferencesView>, ApiError> {
        let caller = caller(req, auth.0);
        let body = body.0;
        let change = PreferencesChange {
            telegram: body.telegram,
            email: body.email,
            email_for_normal: body.email_for_normal,
            quiet_hours: body.quiet_hours.map(|q| (q.start, q.end, q.time_zone)),
            language: body.language.map(|l| l.code().to_owned()),
        };
        let prefs = self
            .app
            .set_notification_preferences(&caller, change)
            .await?;
        Ok(Json(prefs.into()))
    }

    /// Notification deliveries across the platform, newest first (platform admins): filter by
    /// `status=failed` to see what did not get through and why.
    #[oai(
        path = "/admin/notification-deliveries",
        method = "get",
        operation_id = "notification_deliveries_list"
    )]
    async fn deliveries(
        &self,
        req: &Request,
        auth: BearerAuth,
        status: Query<Option<DeliveryState>>,
        channel: Query<Option<DeliveryChannel>>,
        /// At most this many, 1 to 200 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<Option<i64>>,
    ) -> Result<Json<Vec<DeliveryItem>>, ApiError> {
        let caller = caller(req, auth.0);
        let admin = self.app.require_platform_admin(&caller).await?;
        let rows = self
            .app
            .notification_deliveries(
                &admin,
                status.0.map(DeliveryStatus::from),
                channel.0.map(DeliveryChannel::as_str),
                limit.0.unwrap_or(50),
            )
            .await?;
        Ok(Json(rows.into_iter().map(DeliveryItem::from).collect()))
    }
}
