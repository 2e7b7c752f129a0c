//! Decoding logged events into the domain's typed events.
//!
//! Every event in the log must decode: an unknown aggregate type, an unknown version or a
//! payload that does not fit its type stops the projection reading it (with the reason in its
//! status) instead of being skipped. Evolving an event means a new version and an upcaster
//! (`aggregates::upcast`), applied here before the payload is deserialised.

use aggregates::account::AccountEvent;
use aggregates::order::OrderEvent;
use aggregates::product::ProductEvent;
use aggregates::receipt::ReceiptEvent;
use aggregates::stock::StockEvent;
use aggregates::store::StoreEvent;
use aggregates::EventMetadata;

use crate::log::{LogPosition, LoggedEvent};

/// A domain event of any aggregate.
#[derive(Clone, Debug, PartialEq)]
pub enum DomainEvent {
    Store(StoreEvent),
    Product(ProductEvent),
    Stock(StockEvent),
    Order(OrderEvent),
    Receipt(ReceiptEvent),
    Account(AccountEvent),
}

/// A logged event with its payload and metadata decoded.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub raw: LoggedEvent,
    pub event: DomainEvent,
    pub metadata: EventMetadata,
}

impl Envelope {
    pub fn position(&self) -> LogPosition {
        self.raw.position()
    }

    /// The aggregate id as a UUID (every aggregate of ours is keyed by one).
    pub fn aggregate_uuid(&self) -> Result<uuid::Uuid, UnknownEvent> {
        self.raw
            .aggregate_id
            .parse()
            .map_err(|_| self.unknown("aggregate id is not a UUID"))
    }

    fn unknown(&self, why: &str) -> UnknownEvent {
        UnknownEvent {
            global_position: self.raw.global_position,
            aggregate_type: self.raw.aggregate_type.clone(),
            event_type: self.raw.event_type.clone(),
            event_version: self.raw.event_version.clone(),
            reason: why.to_owned(),
        }
    }
}

/// An event this build cannot read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot read event at global position {global_position} ({aggregate_type}/{event_type} version {event_version}): {reason}")]
pub struct UnknownEvent {
    pub global_position: i64,
    pub aggregate_type: String,
    pub event_type: String,
    pub event_version: String,
    pub reason: String,
}

/// Decodes one logged event.
pub fn decode(raw: LoggedEvent) -> Result<Envelope, UnknownEvent> {
    let unknown = |reason: String| UnknownEvent {
        global_position: raw.global_position,
        aggregate_type: raw.aggregate_type.clone(),
        event_type: raw.event_type.clone(),
        event_version: raw.event_version.clone(),
        reason,
    };
    // Older versions are read in the current shape; `raw` keeps the payload as stored. The
    // current version (nearly every event) is read from the stored payload without a copy.
    let current = aggregates::upcast::current_version(&raw.aggregate_type, &raw.event_type)
        == raw.event_version;
    let upcast = if current {
        None
    } else {
        Some(
            aggregates::upcast(
                &raw.aggregate_type,
                &raw.event_type,
                &raw.event_version,
                raw.payload.clone(),
            )
            .map_err(|e| unknown(e.to_string()))?,
        )
    };
    let payload = upcast.as_ref().unwrap_or(&raw.payload);
    fn typed<T: serde::de::DeserializeOwned>(payload: &serde_json::Value) -> Result<T, String> {
        T::deserialize(payload).map_err(|e| format!("payload does not fit: {e}"))
    }
    let event = match raw.aggregate_type.as_str() {
        "Store" => typed(payload).map(DomainEvent::Store),
        "Product" => typed(payload).map(DomainEvent::Product),
        "Stock" => typed(payload).map(DomainEvent::Stock),
        "Order" => typed(payload).map(DomainEvent::Order),
        "PaymentReceipt" => typed(payload).map(DomainEvent::Receipt),
        "Account" => typed(payload).map(DomainEvent::Account),
        _ => Err("unknown aggregate type".into()),
    }
    .map_err(unknown)?;
    let metadata: std::collections::HashMap<String, String> =
        serde::Deserialize::deserialize(&raw.metadata)
            .map_err(|e| unknown(format!("metadata: {e}")))?;
    Ok(Envelope {
        metadata: EventMetadata::from_map(&metadata),
        event,
        raw,
    })
}

/// Which store an event's aggregate belongs to, as far as the event itself tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOf {
    /// A Store event: the aggregate is the store.
    Itself,
    /// The aggregate's first event names its store.
    Named(aggregates::StoreId),
    /// A later event of an aggregate whose first event named its store.
    Known,
    /// Not a store's business (accounts).
    None,
}

/// What `event` tells of its aggregate's store (the audit trail and the live feeds map
/// aggregates to stores with it).
pub fn store_of(event: &DomainEvent) -> StoreOf {
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

/// The store aggregate `aggregate_type`/`aggregate_id` belongs to, learned from its first event
/// in the log (committed, whatever the projections have read): a store is its own, any other
/// aggregate belongs to the store its first event names ([`store_of`]). `None` for an aggregate
/// without events, an account, or a first event this build cannot read.
pub async fn store_of_aggregate<'e, E>(
    executor: E,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Option<aggregates::StoreId>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    let first = crate::log::first_event(executor, aggregate_type, aggregate_id).await?;
    Ok(first
        .and_then(|first| decode(first).ok())
        .and_then(|first| match store_of(&first.event) {
            StoreOf::Named(store_id) => Some(store_id),
            StoreOf::Itself => first.aggregate_uuid().ok().map(aggregates::StoreId),
            StoreOf::Known | StoreOf::None => None,
        }))
}
