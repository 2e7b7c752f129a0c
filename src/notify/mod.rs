//! Delivery of notifications recorded in the outbox (ARCHITECTURE rule 7): each delivery is
//! sent at least once, retried with backoff, and marked with its outcome. Telegram is the one
//! channel so far.

pub mod telegram;
