//! How each person wants to be told: which push channels are on (the notification center always
//! is), quiet hours, the language. Routing by priority (docs/architecture.md, "Notifications"):
//!
//! | priority | channels |
//! |---|---|
//! | urgent | every push channel the person enabled (Telegram, e-mail), at once, quiet hours or not |
//! | normal | Telegram if enabled; e-mail only if they opted in (`email_for_normal`) |
//! | low | none: the notification center only |
//!
//! During quiet hours a non-urgent delivery on a push channel is **deferred** to the end of the
//! quiet hours, never dropped; the notification center shows it at once.

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use projections::outbox::Priority;
use uuid::Uuid;

use super::{App, AppError, Caller};

/// A channel that reaches a person outside the service (the center is not one: always on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushChannel {
    Telegram,
    Email,
}

impl PushChannel {
    /// As stored in `notification_deliveries.channel`.
    pub fn as_str(self) -> &'static str {
        match self {
            PushChannel::Telegram => "telegram",
            PushChannel::Email => "email",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "telegram" => Some(PushChannel::Telegram),
            "email" => Some(PushChannel::Email),
            _ => None,
        }
    }
}

/// A daily window of local time in which only urgent notifications are pushed. It may cross
/// midnight (22:00–07:00).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
    pub time_zone: Tz,
}

impl QuietHours {
    /// `None` when `now` is outside the window; else the instant the window ends, when a
    /// deferred delivery may go.
    pub fn deferred_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.time_zone);
        let time = local.time();
        let today = local.date_naive();
        let end_day = if self.start < self.end {
            (self.start <= time && time < self.end).then_some(today)?
        } else if time >= self.start {
            today.succ_opt()?
        } else if time < self.end {
            today
        } else {
            return None;
        };
        let end = end_day.and_time(self.end);
        // A local time skipped by a clock change (spring forward) ends the window an hour on.
        self.time_zone
            .from_local_datetime(&end)
            .earliest()
            .or_else(|| {
                self.time_zone
                    .from_local_datetime(&(end + Duration::hours(1)))
                    .earliest()
            })
            .map(|end| end.with_timezone(&Utc))
    }
}

/// A person's notification preferences.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationPreferences {
    pub telegram: bool,
    pub email: bool,
    /// E-mail also carries normal notifications (else urgent ones only).
    pub email_for_normal: bool,
    pub quiet_hours: Option<QuietHours>,
    /// `en` or `ru`; none: the language of their Telegram chat, else English.
    pub language: Option<String>,
}

impl Default for NotificationPreferences {
    fn default() -> Self {
        Self {
            telegram: true,
            email: true,
            email_for_normal: false,
            quiet_hours: None,
            language: None,
        }
    }
}

impl NotificationPreferences {
    /// The push channels a notification of `priority` goes to (the module's table).
    pub fn channels(&self, priority: Priority) -> Vec<PushChannel> {
        let mut channels = Vec::new();
        match priority {
            Priority::Urgent => {
                if self.telegram {
                    channels.push(PushChannel::Telegram);
                }
                if self.email {
                    channels.push(PushChannel::Email);
                }
            }
            Priority::Normal => {
                if self.telegram {
                    channels.push(PushChannel::Telegram);
                }
                if self.email && self.email_for_normal {
                    channels.push(PushChannel::Email);
                }
            }
            Priority::Low => {}
        }
        channels
    }

    /// When a push delivery of `priority` made at `now` may first be tried: now, or the end
    /// of the quiet hours for anything but urgent.
    pub fn first_attempt_at(&self, priority: Priority, now: DateTime<Utc>) -> DateTime<Utc> {
        match (priority, &self.quiet_hours) {
            (Priority::Urgent, _) | (_, None) => now,
            (_, Some(quiet)) => quiet.deferred_until(now).unwrap_or(now),
        }
    }
}

/// Preferences as a person sets them (`PUT /api/v1/me/notification-preferences`), checked by
/// [`App::set_notification_preferences`].
#[derive(Clone, Debug, Default)]
pub struct PreferencesChange {
    pub telegram: bool,
    pub email: bool,
    pub email_for_normal: bool,
    /// `HH:MM` local times and an IANA time zone, all three or none.
    pub quiet_hours: Option<(String, String, String)>,
    pub language: Option<String>,
}

#[derive(sqlx::FromRow)]
struct PreferencesRow {
    account_id: Uuid,
    telegram: bool,
    email: bool,
    email_for_normal: bool,
    quiet_start: Option<NaiveTime>,
    quiet_end: Option<NaiveTime>,
    time_zone: Option<String>,
    language: Option<String>,
}

impl From<PreferencesRow> for NotificationPreferences {
    fn from(row: PreferencesRow) -> Self {
        let quiet_hours = match (row.quiet_start, row.quiet_end, row.time_zone) {
            (Some(start), Some(end), Some(zone)) => {
                zone.parse::<Tz>().ok().map(|time_zone| QuietHours {
                    start,
                    end,
                    time_zone,
                })
            }
            _ => None,
        };
        Self {
            telegram: row.telegram,
            email: row.email,
            email_for_normal: row.email_for_normal,
            quiet_hours,
            language: row.language,
        }
    }
}

fn parse_time(field: &'static str, value: &str) -> Result<NaiveTime, AppError> {
    NaiveTime::parse_from_str(value, "%H:%M")
        .map_err(|_| AppError::invalid(field, format!("'{value}' is not a time as HH:MM")))
}

impl App {
    /// The caller's own notification preferences (the defaults until they set some).
    pub async fn notification_preferences(
        &self,
        caller: &Caller,
    ) -> Result<NotificationPreferences, AppError> {
        let account = caller.account_id().0;
        Ok(preferences_of(&self.pool, &[account])
            .await?
            .remove(&account)
            .unwrap_or_default())
    }

    /// Replaces the caller's notification preferences. Quiet hours need a real IANA time zone
    /// and a start different from their end.
    #[tracing::instrument(skip(self, caller, change), fields(account_id = %caller.account_id()))]
    pub async fn set_notification_preferences(
        &self,
        caller: &Caller,
        change: PreferencesChange,
    ) -> Result<NotificationPreferences, AppError> {
        let quiet = match &change.quiet_hours {
            None => None,
            Some((start, end, zone)) => {
                let start = parse_time("quiet_hours_start", start)?;
                let end = parse_time("quiet_hours_end", end)?;
                if start == end {
                    return Err(AppError::invalid(
                        "quiet_hours_end",
                        "quiet hours end when they start: leave them out instead",
                    ));
                }
                let time_zone = zone.parse::<Tz>().map_err(|_| {
                    AppError::invalid("time_zone", format!("'{zone}' is not an IANA time zone"))
                })?;
                Some(QuietHours {
                    start,
                    end,
                    time_zone,
                })
            }
        };
        if let Some(language) = &change.language {
            if !matches!(language.as_str(), "en" | "ru") {
                return Err(AppError::invalid("language", "either 'en' or 'ru'"));
            }
        }
        sqlx::query(
            "insert into notification_preferences
                    (account_id, telegram, email, email_for_normal, quiet_start, quiet_end,
                     time_zone, language, updated_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, now())
             on conflict (account_id) do update
                set telegram = excluded.telegram, email = excluded.email,
                    email_for_normal = excluded.email_for_normal,
                    quiet_start = excluded.quiet_start, quiet_end = excluded.quiet_end,
                    time_zone = excluded.time_zone, language = excluded.language,
                    updated_at = now()",
        )
        .bind(caller.account_id().0)
        .bind(change.telegram)
        .bind(change.email)
        .bind(change.email_for_normal)
        .bind(quiet.map(|q| q.start))
        .bind(quiet.map(|q| q.end))
        .bind(quiet.map(|q| q.time_zone.name().to_owned()))
        .bind(&change.language)
        .execute(&self.pool)
        .await?;
        self.notification_preferences(caller).await
    }
}

/// The preferences of `accounts` that set some (the others use the defaults).
pub(crate) async fn preferences_of<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    accounts: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, NotificationPreferences>, AppError> {
    let rows: Vec<PreferencesRow> = sqlx::query_as(
        "select account_id, telegram, email, email_for_normal, quiet_start, quiet_end,
                time_zone, language
           from notification_preferences where account_id = any($1)",
    )
    .bind(accounts)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.account_id, NotificationPreferences::from(row)))
        .collect())
}

impl App {
    /// Whether the caller's console plays a sound when a notification arrives (on unless
    /// they turned it off).
    pub async fn notification_sound(&self, caller: &Caller) -> Result<bool, AppError> {
        let on: Option<bool> = sqlx::query_scalar(
            "select console_sound from notification_preferences where account_id = $1",
        )
        .bind(caller.account_id().0)
        .fetch_optional(&self.pool)
        .await?;
        Ok(on.unwrap_or(true))
    }

    /// Turns the console's notification sound on or off for the caller (their other
    /// preferences are kept, or stay the defaults).
    pub async fn set_notification_sound(&self, caller: &Caller, on: bool) -> Result<(), AppError> {
        sqlx::query(
            "insert into notification_preferences (account_id, console_sound) values ($1, $2)
             on conflict (account_id) do update set console_sound = $2, updated_at = now()",
        )
        .bind(caller.account_id().0)
        .bind(on)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("a time")
            .with_timezone(&Utc)
    }

    fn quiet(start: &str, end: &str, zone: &str) -> QuietHours {
        QuietHours {
            start: NaiveTime::parse_from_str(start, "%H:%M").expect("start"),
            end: NaiveTime::parse_from_str(end, "%H:%M").expect("end"),
            time_zone: zone.parse().expect("zone"),
        }
    }

    #[test]
    fn urgent_goes_everywhere_enabled_normal_to_telegram_and_low_nowhere() {
        let all = NotificationPreferences::default();
        assert_eq!(
            all.channels(Priority::Urgent),
            vec![PushChannel::Telegram, PushChannel::Email]
        );
        assert_eq!(all.channels(Priority::Normal), vec![PushChannel::Telegram]);
        assert!(all.channels(Priority::Low).is_empty());
        let email_too = NotificationPreferences {
            email_for_normal: true,
            ..all.clone()
        };
        assert_eq!(
            email_too.channels(Priority::Normal),
            vec![PushChannel::Telegram, PushChannel::Email]
        );
        let no_telegram = NotificationPreferences {
            telegram: false,
            ..all
        };
        assert_eq!(
            no_telegram.channels(Priority::Urgent),
            vec![PushChannel::Email]
        );
        assert!(no_telegram.channels(Priority::Normal).is_empty());
    }

    #[test]
    fn quiet_hours_across_midnight_end_the_next_local_morning() {
        let night = quiet("22:00", "07:00", "Europe/Moscow");
        // 23:30 in Moscow (UTC+3) → 07:00 the next day.
        assert_eq!(
            night.deferred_until(at("2026-03-10T20:30:00Z")),
            Some(at("2026-03-11T04:00:00Z"))
        );
        // 03:00 → 07:00 the same day.
        assert_eq!(
            night.deferred_until(at("2026-03-11T00:00:00Z")),
            Some(at("2026-03-11T04:00:00Z"))
        );
        // 12:00: not quiet.
        assert_eq!(night.deferred_until(at("2026-03-11T09:00:00Z")), None);
        // 07:00 sharp is past the window.
        assert_eq!(night.deferred_until(at("2026-03-11T04:00:00Z")), None);
    }

    #[test]
    fn quiet_hours_within_a_day_and_only_for_non_urgent() {
        let lunch = quiet("12:00", "13:00", "UTC");
        assert_eq!(
            lunch.deferred_until(at("2026-03-10T12:15:00Z")),
            Some(at("2026-03-10T13:00:00Z"))
        );
        assert_eq!(lunch.deferred_until(at("2026-03-10T11:59:00Z")), None);
        let prefs = NotificationPreferences {
            quiet_hours: Some(lunch),
            ..NotificationPreferences::default()
        };
        let now = at("2026-03-10T12:15:00Z");
        assert_eq!(prefs.first_attempt_at(Priority::Urgent, now), now);
        assert_eq!(
            prefs.first_attempt_at(Priority::Normal, now),
            at("2026-03-10T13:00:00Z")
        );
    }

    #[test]
    fn a_window_ending_in_a_skipped_hour_ends_an_hour_later() {
        // Berlin skips 02:00–03:00 on 2026-03-29.
        let night = quiet("23:00", "02:30", "Europe/Berlin");
        assert_eq!(
            night.deferred_until(at("2026-03-28T23:00:00Z")),
            Some(at("2026-03-29T01:30:00Z"))
        );
    }
}
