//! `audit verify` and `audit checkpoints`: the hash chain from the command line. They read the
//! database only (no migrations), so an auditor can run them with a read-only role.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use sqlx::PgPool;

use crate::app::audit::chain::Checkpoint;
use crate::app::audit::verify::{self, VerifyOptions};

/// Fails clearly when the database has no audit chain (migrations never ran there).
pub async fn require_chain(pool: &PgPool) -> anyhow::Result<()> {
    let present: bool = sqlx::query_scalar(
        "select to_regclass('audit_chain') is not null and to_regclass('audit_checkpoints') is not null",
    )
    .fetch_one(pool)
    .await
    .context("asking the database for the audit chain")?;
    if !present {
        bail!("this database has no audit chain: run `shopfront migrate` (or `serve`) against it first");
    }
    Ok(())
}

/// Verifies the chain; prints the report as one JSON line and fails if the log was altered.
pub async fn verify(
    pool: &PgPool,
    from_checkpoint: Option<&Path>,
    trusted_keys: Vec<String>,
) -> anyhow::Result<()> {
    require_chain(pool).await?;
    let mut options = VerifyOptions {
        trusted_keys,
        ..VerifyOptions::default()
    };
    if let Some(file) = from_checkpoint {
        let mut checkpoints = read_checkpoints(file)?;
        checkpoints.sort_by_key(|c| c.chain_index);
        options.from = checkpoints.pop();
        options.anchors = checkpoints;
    }
    let report = verify::verify(pool, &options).await?;
    println!("{}", serde_json::to_string(&report)?);
    match &report.problem {
        None => Ok(()),
        Some(problem) => bail!(
            "the log was altered: {} at global position {}: {}",
            problem.kind.as_str(),
            problem.global_position,
            problem.detail
        ),
    }
}

/// Writes the checkpoints after `after` as JSON lines to `output` (standard output if none).
pub async fn checkpoints(pool: &PgPool, after: i64, output: Option<PathBuf>) -> anyhow::Result<()> {
    require_chain(pool).await?;
    let checkpoints = verify::checkpoints_after(pool, after, i64::MAX).await?;
    let mut out: Box<dyn Write> = match &output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    for checkpoint in &checkpoints {
        serde_json::to_writer(&mut out, checkpoint)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// The checkpoints of a file: one JSON object per line (blank lines ignored).
fn read_checkpoints(file: &Path) -> anyhow::Result<Vec<Checkpoint>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading checkpoints from {}", file.display()))?;
    let checkpoints = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(number, line)| {
            serde_json::from_str::<Checkpoint>(line).with_context(|| {
                format!("{} line {}: not a checkpoint", file.display(), number + 1)
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if checkpoints.is_empty() {
        bail!("{} holds no checkpoint", file.display());
    }
    Ok(checkpoints)
}
