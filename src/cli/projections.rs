//! `shopfront projections status | rebuild | verify | clean`.

use std::sync::Arc;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use projections::maintenance;
use projections::{read_models, Projection};
use sqlx::PgPool;

use crate::config::ProjectionsCommand;

/// Runs one `projections` subcommand; `verify` fails when any projection differs. Every
/// subcommand first drops the scratch schemas a killed rebuild or verify left behind.
pub async fn run(pool: &PgPool, command: ProjectionsCommand) -> anyhow::Result<()> {
    let dropped = maintenance::drop_abandoned_scratch(pool)
        .await
        .context("dropping abandoned scratch schemas")?;
    match command {
        ProjectionsCommand::Clean => {
            for schema in &dropped {
                println!("{}", serde_json::json!({ "dropped": schema }));
            }
            Ok(())
        }
        ProjectionsCommand::Status { json } => {
            let statuses = maintenance::status(pool, &read_models::names()).await?;
            if json {
                for status in &statuses {
                    println!("{}", serde_json::to_string(status)?);
                }
            } else {
                println!(
                    "{:<16} {:>12} {:>10} {:>10} {:>9}  {:<9} leader",
                    "projection", "position", "applied", "lag", "lag s", "state"
                );
                for s in &statuses {
                    println!(
                        "{:<16} {:>12} {:>10} {:>10} {:>9.1}  {:<9} {}",
                        s.name,
                        s.position.global_position,
                        s.events_applied,
                        s.lag_events,
                        s.lag_seconds,
                        s.status,
                        s.leader.as_deref().unwrap_or("-")
                    );
                    if let (Some(position), Some(event_type)) =
                        (s.failed_position, &s.failed_event_type)
                    {
                        println!(
                            "{:<16} stopped at: global position {position} ({event_type})",
                            ""
                        );
                    }
                    if let Some(error) = &s.last_error {
                        println!("{:<16} error: {error}", "");
                    }
                    if s.restarts > 0 {
                        println!(
                            "{:<16} restarts: {} (last: {})",
                            "",
                            s.restarts,
                            s.last_restart_reason.as_deref().unwrap_or("-")
                        );
                    }
                }
            }
            Ok(())
        }
        ProjectionsCommand::Rebuild { names } => {
            // One pass over the log feeds every projection being rebuilt.
            let selected = select(&names)?;
            let projections: Vec<&dyn Projection> = selected.iter().map(|p| &**p).collect();
            let names: Vec<&str> = projections.iter().map(|p| p.name()).collect();
            let bar = ProgressBar::new(0).with_message(names.join(", "));
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {pos}/{len} events  {per_sec}  ETA {eta}",
                )
                .context("progress bar template")?
                .progress_chars("=> "),
            );
            let reports = maintenance::rebuild_many(pool, &projections, &|done, total| {
                bar.set_length(total.max(done));
                bar.set_position(done);
            })
            .await?;
            bar.finish();
            for report in reports {
                println!("{}", serde_json::to_string(&report)?);
            }
            Ok(())
        }
        ProjectionsCommand::Verify { names } => {
            let mut differing = Vec::new();
            for projection in select(&names)? {
                let report = maintenance::verify(pool, &*projection).await?;
                println!("{}", serde_json::to_string(&report)?);
                if !report.matches() {
                    differing.push(report.name);
                }
            }
            if !differing.is_empty() {
                bail!(
                    "the live tables differ from a fresh replay for: {} (run `shopfront projections rebuild {}`)",
                    differing.join(", "),
                    differing.join(" ")
                );
            }
            Ok(())
        }
    }
}

/// The projections named (all when none are), refusing unknown names.
fn select(names: &[String]) -> anyhow::Result<Vec<Arc<dyn Projection>>> {
    if names.is_empty() {
        return Ok(read_models::all());
    }
    names
        .iter()
        .map(|name| {
            read_models::by_name(name).with_context(|| {
                format!(
                    "no projection is called {name:?}; known: {}",
                    read_models::names().join(", ")
                )
            })
        })
        .collect()
}
