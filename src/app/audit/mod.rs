//! Auditors' tools over the global log.

pub mod export;
