//! Read model "audit": one row per event with aggregate, type, actor, role, channel, client,
//! request and correlation ids, time and payload (`audit_events`), filterable by store through
//! the store each aggregate belongs to (`audit_aggregate_stores`, learned from its first event).
//!
//! Payloads are kept as stored, with one exception: `Account` events of version 1.0 carried the
//! Telegram user id in clear, so when the person is erased (`PersonalDataErased`) those ids are
//! blanked (`null`) in their rows here. Events of version 2.0 hold the id sealed.

pub mod queries;

use aggregates::account::AccountEvent;
use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::PgConnection;
use uuid::Uuid;

use super::copy_in::CopyRows;
use crate::event::{store_of, DomainEvent, Envelope, StoreOf};
use crate::{Projection, ProjectionError};

pub struct AuditTrail;

#[async_trait]
impl Projection for AuditTrail {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["audit_events", "audit_aggregate_stores"]
    }

    /// One statement for the batch's store mappings, one to look up the stores of aggregates
    /// named in earlier batches, one to insert every row.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let mut stores: HashMap<(&str, &str), Uuid> = HashMap::new();
        let mut named: (Vec<&str>, Vec<&str>, Vec<Uuid>) = Default::default();
        let mut lookups: (Vec<&str>, Vec<&str>) = Default::default();
        for envelope in events {
            let key = (
                envelope.raw.aggregate_type.as_str(),
                envelope.raw.aggregate_id.as_str(),
            );
            match store_of(&envelope.event) {
                StoreOf::Named(store_id) if stores.insert(key, store_id.0).is_none() => {
                    named.0.push(key.0);
                    named.1.push(key.1);
                    named.2.push(store_id.0);
                }
                StoreOf::Known if !stores.contains_key(&key) => {
                    lookups.0.push(key.0);
                    lookups.1.push(key.1);
                }
                _ => {}
            }
        }
        if !lookups.0.is_empty() {
            let found: Vec<(String, String, Uuid)> = sqlx::query_as(
                "select m.aggregate_type, m.aggregate_id, m.store_id
                   from audit_aggregate_stores m
                   join unnest($1::text[], $2::text[]) as k(t, id)
                     on m.aggregate_type = k.t and m.aggregate_id = k.id",
            )
            .bind(&lookups.0)
            .bind(&lookups.1)
            .fetch_all(&mut *conn)
            .await?;
            let found: HashMap<(String, String), Uuid> = found
                .into_iter()
                .map(|(t, id, store)| ((t, id), store))
                .collect();
            for envelope in events {
                let raw = &envelope.raw;
                let key = (raw.aggregate_type.clone(), raw.aggregate_id.clone());
                if let Some(store_id) = found.get(&key) {
                    stores.insert(
                        (raw.aggregate_type.as_str(), raw.aggregate_id.as_str()),
                        *store_id,
                    );
                }
            }
        }
        if !named.0.is_empty() {
            sqlx::query(
                "insert into audit_aggregate_stores (aggregate_type, aggregate_id, store_id)
                 select * from unnest($1::text[], $2::text[], $3::uuid[]) on conflict do nothing",
            )
            .bind(&named.0)
            .bind(&named.1)
            .bind(&named.2)
            .execute(&mut *conn)
            .await?;
        }

        let mut rows = AuditRows::default();
        for envelope in events {
            let raw = &envelope.raw;
            let store_id = match store_of(&envelope.event) {
                StoreOf::Itself => Some(envelope.aggregate_uuid()?),
                StoreOf::None => None,
                _ => stores
                    .get(&(raw.aggregate_type.as_str(), raw.aggregate_id.as_str()))
                    .copied(),
            };
            rows.push(envelope, store_id);
        }
        rows.insert(conn).await?;
        let erased: Vec<&str> = events
            .iter()
            .filter(|e| {
                matches!(
                    e.event,
                    DomainEvent::Account(AccountEvent::PersonalDataErased { .. })
                )
            })
            .map(|e| e.raw.aggregate_id.as_str())
            .collect();
        if !erased.is_empty() {
            blank_clear_telegram_ids(conn, &erased).await?;
        }
        Ok(())
    }
}

/// Blanks the Telegram user ids that `Account` events of version 1.0 of the erased `accounts`
/// carry in clear (after the rows of the batch are in, so the erasure's own batch is covered).
async fn blank_clear_telegram_ids(
    conn: &mut PgConnection,
    accounts: &[&str],
) -> Result<(), ProjectionError> {
    sqlx::query(
        "update audit_events
            set payload = case event_type
                  when 'AccountRegistered'
                    then jsonb_set(payload, '{AccountRegistered,telegram_user_id}', 'null')
                  else jsonb_set(jsonb_set(payload, '{TelegramLinked,telegram_user_id}', 'null'),
                                 '{TelegramLinked,previous_telegram_user_id}', 'null')
                end
          where aggregate_type = 'Account' and aggregate_id = any($1)
            and event_version = '1.0'
            and event_type in ('AccountRegistered', 'TelegramLinked')",
    )
    .bind(accounts)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The columns of `audit_events` the projection writes, in the order [`AuditRows::push`]
/// encodes them.
const AUDIT_COLUMNS: &[&str] = &[
    "global_position",
    "transaction_id",
    "aggregate_type",
    "aggregate_id",
    "sequence",
    "event_type",
    "event_version",
    "store_id",
    "actor_id",
    "actor_role",
    "channel",
    "request_id",
    "client_request_id",
    "correlation_id",
    "causation_position",
    "payload",
    "recorded_at",
];

/// The batch's rows of `audit_events`, for one binary `COPY`.
struct AuditRows(CopyRows);

impl Default for AuditRows {
    fn default() -> Self {
        Self(CopyRows::new())
    }
}

impl AuditRows {
    fn push(&mut self, envelope: &Envelope, store_id: Option<Uuid>) {
        let (raw, m, out) = (&envelope.raw, &envelope.metadata, &mut self.0);
        out.row(AUDIT_COLUMNS.len());
        out.field(&raw.global_position);
        out.field(&raw.transaction_id);
        out.field(&raw.aggregate_type);
        out.field(&raw.aggregate_id);
        out.field(&raw.sequence);
        out.field(&raw.event_type);
        out.field(&raw.event_version);
        out.field(&store_id);
        out.field(&m.actor_id.map(|a| a.0));
        out.field(&m.actor_role.as_str());
        out.field(&m.channel.as_str());
        out.field(&m.request_id);
        out.field(&m.client_request_id);
        out.field(&(!m.correlation_id.is_nil()).then_some(m.correlation_id));
        out.field(&m.causation_position);
        out.json(&raw.payload);
        out.field(&raw.recorded_at);
    }

    async fn insert(self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        self.0.write(conn, "audit_events", AUDIT_COLUMNS).await?;
        Ok(())
    }
}
