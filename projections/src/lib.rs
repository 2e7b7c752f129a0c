//! The shopfront read side.
//!
//! Today this crate holds the reader of the **global log** (`log`): the one ordered stream of
//! every event in the store, which projections and process managers follow from a checkpoint.
//! See docs/adr/0001-global-log.md for why it orders by `(transaction_id, global_position)` and
//! reads only below the visibility horizon.
#![forbid(unsafe_code)]

pub mod log;

pub use log::{GlobalLog, LogPosition, LoggedEvent, NOTIFY_CHANNEL};
