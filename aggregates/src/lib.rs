//! The shopfront domain: pure aggregates on `cqrs-es`, with no IO.
//!
//! Each aggregate is one module holding its state, commands, events, errors, the `Aggregate`
//! implementation and its given/when/then tests. Decisions that need the outside world (the
//! current time, a product's price, a store's currency) receive it as command fields, so every
//! handler is deterministic.
#![forbid(unsafe_code)]

pub mod account;
pub mod metadata;
pub mod order;
pub mod product;
pub mod receipt;
pub mod stock;
pub mod store;
pub mod upcast;
pub mod values;

pub use metadata::{ActorRole, EventMetadata};
pub use values::*;

/// The first version of every event type. A new shape of an event gets a new version and an
/// upcaster (`upcast`); see docs/events.md.
pub const EVENT_VERSION_1: &str = "1.0";

pub use upcast::{upcast, UpcastError, EVENT_VERSION_2};

/// Every event enum's type is its variant name (derived by `strum`, equal to the serde tag) and
/// every event of these enums is at version 1.0. An enum whose events move to a new version
/// leaves this list and implements `DomainEvent` itself (as `account::AccountEvent` does).
macro_rules! version_1_events {
    ($($events:ty),* $(,)?) => {
        $(
            impl cqrs_es::DomainEvent for $events {
                fn event_type(&self) -> String {
                    <&'static str>::from(self).to_owned()
                }

                fn event_version(&self) -> String {
                    EVENT_VERSION_1.to_owned()
                }
            }
        )*
    };
}

version_1_events!(
    order::OrderEvent,
    product::ProductEvent,
    receipt::ReceiptEvent,
    stock::StockEvent,
    store::StoreEvent,
);
