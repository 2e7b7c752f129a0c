//! Read model "audit": one row per event with aggregate, type, actor, role, channel, client,
//! request and correlation ids, time and payload (`audit_events`), filterable by store through
//! the store each aggregate belongs to (`audit_aggregate_stores`, learned from its first event).

use aggregates::order::OrderEvent;
use aggregates::product::ProductEvent;
use aggregates::receipt::ReceiptEvent;
use aggregates::stock::StockEvent;
use aggregates::StoreId;
use async_trait::async_trait;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::event::{DomainEvent, Envelope};
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

    async fn apply(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
    ) -> Result<(), ProjectionError> {
        let raw = &envelope.raw;
        let store_id = match store_of(&envelope.event) {
            StoreOf::Itself => Some(envelope.aggregate_uuid()?),
            StoreOf::Named(store_id) => {
                sqlx::query(
                    "insert into audit_aggregate_stores (aggregate_type, aggregate_id, store_id) values ($1, $2, $3)
                     on conflict do nothing",
                )
                .bind(&raw.aggregate_type)
                .bind(&raw.aggregate_id)
                .bind(store_id.0)
                .execute(&mut *conn)
                .await?;
                Some(store_id.0)
            }
            StoreOf::Known => {
                sqlx::query_scalar::<_, Uuid>(
                    "select store_id from audit_aggregate_stores where aggregate_type = $1 and aggregate_id = $2",
                )
                .bind(&raw.aggregate_type)
                .bind(&raw.aggregate_id)
                .fetch_optional(&mut *conn)
                .await?
            }
            StoreOf::None => None,
        };
        let m = &envelope.metadata;
        sqlx::query(
            "insert into audit_events (global_position, transaction_id, aggregate_type, aggregate_id, sequence,
                                       event_type, event_version, store_id, actor_id, actor_role, channel,
                                       request_id, correlation_id, causation_position, client_ip, user_agent,
                                       payload, recorded_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        )
        .bind(raw.global_position)
        .bind(raw.transaction_id)
        .bind(&raw.aggregate_type)
        .bind(&raw.aggregate_id)
        .bind(raw.sequence)
        .bind(&raw.event_type)
        .bind(&raw.event_version)
        .bind(store_id)
        .bind(m.actor_id.map(|a| a.0))
        .bind(&m.actor_role)
        .bind(m.channel.as_str())
        .bind(&m.request_id)
        .bind((!m.correlation_id.is_nil()).then_some(m.correlation_id))
        .bind(m.causation_position)
        .bind(&m.client_ip)
        .bind(&m.user_agent)
        .bind(&raw.payload)
        .bind(raw.recorded_at)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

enum StoreOf {
    /// A Store event: the aggregate is the store.
    Itself,
    /// The aggregate's first event names its store.
    Named(StoreId),
    /// A later event of an aggregate whose store is already known.
    Known,
    /// Not a store's business (accounts).
    None,
}

fn store_of(event: &DomainEvent) -> StoreOf {
    match event {
        DomainEvent::Store(_) => StoreOf::Itself,
        DomainEvent::Product(ProductEvent::ProductCreated { store_id, .. })
        | DomainEvent::Stock(StockEvent::StockTracked { store_id, .. })
        | DomainEvent::Order(OrderEvent::OrderPlaced { store_id, .. })
        | DomainEvent::Receipt(ReceiptEvent::PaymentReceiptSubmitted { store_id, .. }) => {
            StoreOf::Named(*store_id)
        }
        DomainEvent::Account(_) => StoreOf::None,
        _ => StoreOf::Known,
    }
}
