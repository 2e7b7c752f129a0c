//! Auditing: reading the event store itself, as it stands and as it stood.

pub mod history;
