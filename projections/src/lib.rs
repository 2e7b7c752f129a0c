//! The shopfront read side.
//!
//! - `log`: the reader of the **global log**, the one ordered stream of every event, which
//!   projections and process managers follow from a checkpoint (docs/adr/0001-global-log.md);
//! - `event`: decoding logged events into the domain's typed events;
//! - `runtime`: running projections exactly-once in effect, one leader per projection
//!   (docs/adr/0003-projection-runtime.md);
//! - `notifications`: the process's one `LISTEN` connection, shared by every projection and
//!   read-your-writes waiter;
//! - `maintenance`: status, rebuild-and-swap, verification and scratch clean-up of projections;
//! - `read_models`: the read models (and process-manager state) themselves.
#![forbid(unsafe_code)]

pub mod event;
mod group;
pub mod log;
pub mod maintenance;
pub mod notifications;
pub mod outbox;
pub mod read_models;
pub mod runtime;

pub use event::{decode, DomainEvent, Envelope, UnknownEvent};
pub use log::{GlobalLog, LogPosition, LoggedEvent, NOTIFY_CHANNEL};
pub use runtime::{Projection, ProjectionError, Runtime, RuntimeSettings, CHECKPOINT_CHANNEL};
