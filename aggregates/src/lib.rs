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
pub mod values;

pub use metadata::EventMetadata;
pub use values::*;

/// Version written on every event type this crate defines today. A new shape of an event gets a
/// new version and an upcaster; see docs/events.md.
pub const EVENT_VERSION_1: &str = "1.0";
