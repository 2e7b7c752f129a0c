//! Application metrics: commands by outcome and events appended, per aggregate type.
//!
//! Kept in Prometheus's process-wide default registry (registered once per process however
//! many `App`s a test binary builds); the HTTP adapter renders that registry at `/metrics`.
//! A metric that cannot be registered is logged and skipped: metrics never fail a command.

use std::sync::LazyLock;

use async_trait::async_trait;
use cqrs_es::{Aggregate, EventEnvelope, Query};
use prometheus::{IntCounterVec, Opts};

use super::AppError;

static COMMANDS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter_vec(
        "shopfront_commands_total",
        "Commands run, by aggregate type and outcome (executed, refused, conflict, failed).",
        &["aggregate", "outcome"],
    )
});

static EVENTS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter_vec(
        "shopfront_events_appended_total",
        "Events committed by this process, by aggregate type.",
        &["aggregate"],
    )
});

/// A counter family registered in the default registry, or `None` (logged) if it cannot be.
pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> Option<IntCounterVec> {
    let registered = IntCounterVec::new(Opts::new(name, help), labels).and_then(|counter| {
        prometheus::register(Box::new(counter.clone()))?;
        Ok(counter)
    });
    registered
        .inspect_err(|err| tracing::error!(error = %err, metric = name, "metric not registered"))
        .ok()
}

/// Counts one command on `aggregate` by how it ended: `executed`, `refused` (a rule or the
/// caller's input said no), `conflict` (optimistic retries ran out) or `failed` (infrastructure).
pub fn record_command(aggregate: &str, result: &Result<(), AppError>) {
    let outcome = match result {
        Ok(()) => "executed",
        Err(AppError::Conflict { .. }) => "conflict",
        Err(AppError::Unavailable(_) | AppError::Internal(_)) => "failed",
        Err(_) => "refused",
    };
    if let Some(commands) = &*COMMANDS {
        commands.with_label_values(&[aggregate, outcome]).inc();
    }
}

/// A cqrs-es query that counts the events of every commit (dispatched right after it).
pub struct EventsAppended;

#[async_trait]
impl<A: Aggregate> Query<A> for EventsAppended {
    async fn dispatch(&self, _aggregate_id: &str, events: &[EventEnvelope<A>]) {
        if let Some(counter) = &*EVENTS {
            counter
                .with_label_values(&[A::TYPE])
                .inc_by(events.len() as u64);
        }
    }
}
