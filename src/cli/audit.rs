//! `shopfront audit export` and `shopfront audit tail`: the log as NDJSON for auditors, written
//! by the application layer's one line format (`app::audit::export`).
//!
//! Both only read: they run no migrations (an auditor may connect with a read-only role), and
//! say so plainly when the database holds no event log.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;

use crate::app::audit::export::{log_schema_present, ExportFilter, LogExport};
use crate::app::{App, AppError};
use crate::config::{AuditCommand, AuditExportArgs, AuditTailArgs, DatabaseSettings};
use crate::db::Database;
use crate::startup::shutdown_signal;

/// Runs an `audit …` subcommand.
pub async fn run(settings: &DatabaseSettings, command: AuditCommand) -> anyhow::Result<()> {
    let database = Database::connect(settings).await?;
    let outcome = match log_schema_present(&database.pool).await {
        Ok(true) => {
            let app = App::new(database.pool.clone());
            match command {
                AuditCommand::Export(args) => export(&app, args).await,
                AuditCommand::Tail(args) => tail(&app, args).await,
                AuditCommand::Verify {
                    from_checkpoint,
                    trusted_keys,
                } => {
                    super::chain::verify(&database.pool, from_checkpoint.as_deref(), trusted_keys)
                        .await
                }
                AuditCommand::Checkpoints { after, output } => {
                    super::chain::checkpoints(&database.pool, after, output).await
                }
            }
        }
        Ok(false) => Err(anyhow::anyhow!(
            "{} holds no shopfront event log (no `events` table with its global-log columns): \
             point DATABASE_URL at the service's database (audit commands never migrate)",
            database.description
        )),
        Err(err) => Err(err).context("looking for the event log"),
    };
    database.close().await;
    outcome
}

async fn export(app: &App, args: AuditExportArgs) -> anyhow::Result<()> {
    let filter = ExportFilter {
        store_id: args.store.map(aggregates::StoreId),
        aggregate_type: args.aggregate_type,
        from: args.since,
        to: args.until,
        actor_id: args.actor.map(aggregates::AccountId),
    };
    let mut export = app
        .audit_export_from_console(filter, args.after)
        .await
        .map_err(|err| match (err, args.after) {
            (AppError::Invalid { field: "after", .. }, Some(after)) => {
                anyhow::anyhow!("--after {after}: no event has this global position")
            }
            (err, _) => anyhow::Error::new(err),
        })?;
    let (mut sink, target): (Box<dyn Write>, String) = match &args.output {
        Some(path) => (
            Box::new(std::io::BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            )),
            path.display().to_string(),
        ),
        None => (
            Box::new(std::io::BufWriter::with_capacity(
                1 << 20,
                std::io::stdout(),
            )),
            "standard output".to_owned(),
        ),
    };
    // A bar on the terminal while the lines go elsewhere: never into what is being written.
    let stderr_is_terminal = std::io::stderr().is_terminal();
    let show_progress =
        stderr_is_terminal && (args.output.is_some() || !std::io::stdout().is_terminal());
    let progress = show_progress.then(|| progress_bar(&export));

    let mut buffer = Vec::new();
    let written = loop {
        buffer.clear();
        let batch = match export.next_batch(&mut buffer).await {
            Ok(batch) => batch,
            Err(err) => break Err(anyhow::Error::new(err)),
        };
        let Some(_) = batch else { break Ok(()) };
        if let Err(err) = sink.write_all(&buffer) {
            break Err(err).with_context(|| format!("writing to {target}"));
        }
        if let Some(bar) = &progress {
            bar.set_position(done_of(&export));
            bar.set_message(format!("{} events", export.lines()));
        }
    };
    let flushed = sink.flush().with_context(|| format!("writing to {target}"));
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if let Err(err) = written.and(flushed) {
        let resume = match export.last_position() {
            Some(position) => format!("; go on with --after {position}"),
            None => String::new(),
        };
        return Err(err.context(format!(
            "the export stopped after {} events{resume}",
            export.lines()
        )));
    }
    if args.output.is_some() || stderr_is_terminal {
        eprintln!(
            "exported {} events to {target} (up to global position {}: go on later with --after {})",
            export.lines(),
            export.end().global_position,
            export.end().global_position,
        );
    }
    Ok(())
}

/// How far through the slice the export is, in global positions (they are nearly dense, and
/// nearly in log order).
fn done_of(export: &LogExport) -> u64 {
    let start = export.start().global_position;
    let at = export.cursor().global_position.max(start);
    u64::try_from(at - start).unwrap_or(0)
}

fn progress_bar(export: &LogExport) -> indicatif::ProgressBar {
    let span = export.end().global_position - export.start().global_position;
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(u64::try_from(span).unwrap_or(0)),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% of the log, {msg} (eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

async fn tail(app: &App, args: AuditTailArgs) -> anyhow::Result<()> {
    let filter = ExportFilter {
        store_id: args.store.map(aggregates::StoreId),
        ..ExportFilter::default()
    };
    let notifications = projections::notifications::Notifications::start(app.pool.clone());
    let mut tail = app
        .audit_tail_from_console(filter, args.from, &notifications)
        .await
        .map_err(|err| match err {
            AppError::Invalid { field: "from", .. } => {
                anyhow::anyhow!("--from {}: no event has this global position", args.from)
            }
            err => anyhow::Error::new(err),
        })?;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut backoff = Duration::from_millis(100);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        let batch = tokio::select! {
            _ = &mut stop => return Ok(()),
            batch = tail.next_batch(&mut buffer) => batch,
        };
        if let Err(err) = batch {
            // The database restarting, say: the tail waits and goes on from where it was.
            eprintln!("warning: cannot read the log ({err}); retrying in {backoff:?}");
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        }
        backoff = Duration::from_millis(100);
        let mut stdout = std::io::stdout().lock();
        for line in buffer.split_inclusive(|byte| *byte == b'\n') {
            let written = stdout.write_all(line).and_then(|()| stdout.flush());
            match written {
                Ok(()) => {}
                // The reader went away (`| head`): nothing more to do.
                Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                Err(err) => return Err(err).context("writing to standard output"),
            }
        }
    }
}
