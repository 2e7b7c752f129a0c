//! shopfront: an event-sourced, Telegram-first multi-store commerce backend.
//!
//! Layout (docs/architecture.md): `app` is the application layer (the only way to issue
//! commands), `http` the HTTP adapter, `db` connection and migrations, `config` typed settings,
//! `console` the staff's web console, `startup` the service's life cycle, `cli` the command line, `telegram` the Telegram bot
//! adapter, `notify` delivery of notifications, `telemetry` logging. The benchmarks are not in
//! this library: they are part of the `shopfront` binary (src/main.rs, src/bench/).
#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
pub mod config;
pub mod console;
pub mod db;
pub mod http;
pub mod notify;
pub mod startup;
pub mod telegram;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod testing;
