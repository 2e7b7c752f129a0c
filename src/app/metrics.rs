//! Application metrics: commands by outcome and events appended, per aggregate type.
//!
//! Kept in Prometheus's process-wide default registry (registered once per process however
//! many `App`s a test binary builds); the HTTP adapter renders that registry at `/metrics`.
//! A metric that cannot be registered is logged and skipped: metrics never fail a command.

use std::sync::LazyLock;

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

/// How a command ended, for `shopfront_commands_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Committed.
    Executed,
    /// A rule or the caller's input said no.
    Refused,
    /// Optimistic retries ran out.
    Conflict,
    /// Infrastructure failed.
    Failed,
}

impl Outcome {
    /// The outcome a command had when its decision ended in `err`.
    pub fn of(err: &AppError) -> Self {
        match err {
            AppError::Conflict { .. } => Outcome::Conflict,
            AppError::Unavailable(_) | AppError::Internal(_) => Outcome::Failed,
            _ => Outcome::Refused,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::Executed => "executed",
            Outcome::Refused => "refused",
            Outcome::Conflict => "conflict",
            Outcome::Failed => "failed",
        }
    }
}

/// Counts one command on `aggregate` by how it ended.
pub fn record_command(aggregate: &str, outcome: Outcome) {
    if let Some(commands) = &*COMMANDS {
        commands
            .with_label_values(&[aggregate, outcome.label()])
            .inc();
    }
}

/// Counts committed events, one aggregate type per event.
pub fn record_events<'a>(aggregate_types: impl Iterator<Item = &'a str>) {
    if let Some(counter) = &*EVENTS {
        for aggregate_type in aggregate_types {
            counter.with_label_values(&[aggregate_type]).inc();
        }
    }
}
