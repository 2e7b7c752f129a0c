//! Read model "accounts": each account's Telegram user id, e-mail and display name (sealed),
//! channel, platform-admin flag, platform-wide block and erasure. Personal data stays sealed
//! here; readers open it with the subject's key, so an erased person reads as erased. The
//! Telegram user id is sealed too, except as events of version 1.0 recorded it (a bare
//! number); `PersonalDataErased` drops all three, so a rebuild gives the erased state as well.

pub mod queries;

use std::collections::{BTreeMap, BTreeSet};

use aggregates::account::AccountEvent;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{load_rows, replace_rows};
use crate::event::{DomainEvent, Envelope};
use crate::{Projection, ProjectionError};

pub struct Accounts;

/// A row of `accounts`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct AccountRow {
    account_id: Uuid,
    /// A sealed value, or the bare number of a version 1.0 event.
    telegram_user: Option<serde_json::Value>,
    email: Option<serde_json::Value>,
    display_name: Option<serde_json::Value>,
    channel: String,
    platform_admin: bool,
    blocked_reason: Option<String>,
    blocked_by: Option<Uuid>,
    blocked_at: Option<DateTime<Utc>>,
    registered_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    erased_at: Option<DateTime<Utc>>,
}

fn sealed<T: Serialize>(value: &Option<T>) -> Option<serde_json::Value> {
    value.as_ref().and_then(|v| serde_json::to_value(v).ok())
}

#[async_trait]
impl Projection for Accounts {
    fn name(&self) -> &'static str {
        "accounts"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["accounts"]
    }

    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let mut touched = BTreeSet::new();
        for envelope in events {
            if let DomainEvent::Account(event) = &envelope.event {
                if !matches!(event, AccountEvent::AccountRegistered { .. }) {
                    touched.insert(envelope.aggregate_uuid()?);
                }
            }
        }
        let touched: Vec<Uuid> = touched.into_iter().collect();
        let mut rows: BTreeMap<Uuid, AccountRow> =
            load_rows::<AccountRow>(conn, "accounts", "account_id", &touched, "")
                .await?
                .into_iter()
                .map(|row| (row.account_id, row))
                .collect();
        let mut changed = BTreeSet::new();
        for envelope in events {
            let DomainEvent::Account(event) = &envelope.event else {
                continue;
            };
            let account_id = envelope.aggregate_uuid()?;
            apply(&mut rows, account_id, event);
            changed.insert(account_id);
        }
        let changed: Vec<&AccountRow> = changed.iter().filter_map(|id| rows.get(id)).collect();
        replace_rows(conn, "accounts", &["account_id"], &changed).await?;
        Ok(())
    }
}

fn apply(rows: &mut BTreeMap<Uuid, AccountRow>, account_id: Uuid, event: &AccountEvent) {
    if let AccountEvent::AccountRegistered {
        telegram_user,
        email,
        display_name,
        channel,
        platform_admin,
        registered_at,
        ..
    } = event
    {
        rows.insert(
            account_id,
            AccountRow {
                account_id,
                telegram_user: sealed(telegram_user),
                email: sealed(email),
                display_name: sealed(display_name),
                channel: channel.as_str().to_owned(),
                platform_admin: *platform_admin,
                blocked_reason: None,
                blocked_by: None,
                blocked_at: None,
                registered_at: *registered_at,
                updated_at: *registered_at,
                erased_at: None,
            },
        );
        return;
    }
    let Some(row) = rows.get_mut(&account_id) else {
        return;
    };
    match event {
        AccountEvent::AccountRegistered { .. } => {}
        AccountEvent::TelegramLinked {
            telegram_user, at, ..
        } => {
            row.telegram_user = serde_json::to_value(telegram_user).ok();
            row.updated_at = *at;
        }
        AccountEvent::PersonalDataErased { at, .. } => {
            row.telegram_user = None;
            row.email = None;
            row.display_name = None;
            row.erased_at = Some(*at);
            row.updated_at = *at;
        }
        AccountEvent::AccountContactChanged {
            email,
            display_name,
            at,
        } => {
            if email.is_some() {
                row.email = sealed(email);
            }
            if display_name.is_some() {
                row.display_name = sealed(display_name);
            }
            row.updated_at = *at;
        }
        AccountEvent::AccountBlocked {
            blocked_by,
            reason,
            at,
        } => {
            row.blocked_reason = Some(reason.clone());
            row.blocked_by = Some(blocked_by.0);
            row.blocked_at = Some(*at);
            row.updated_at = *at;
        }
        AccountEvent::AccountUnblocked { at, .. } => {
            row.blocked_reason = None;
            row.blocked_by = None;
            row.blocked_at = None;
            row.updated_at = *at;
        }
        AccountEvent::PlatformAdminGranted { at, .. } => {
            row.platform_admin = true;
            row.updated_at = *at;
        }
        AccountEvent::PlatformAdminRevoked { at, .. } => {
            row.platform_admin = false;
            row.updated_at = *at;
        }
        // Nothing this read model shows (the setting is kept with the credentials).
        AccountEvent::SecondFactorChanged { .. } => {}
    }
}
