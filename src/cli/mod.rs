//! The command line: `serve`, `migrate`, `seed-demo`, `openapi`, `accounts …`, `projections …`,
//! `personal-data erase`, `audit …`, `bench …`.
//!
//! `projections` runs the `projections …` subcommands, `audit` the `audit …` ones, `seed` the
//! demo data of `seed-demo`.

mod audit;
mod chain;
mod projections;
mod seed;

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use futures::future::BoxFuture;

use crate::config::{
    AccountsCommand, BenchCommand, Cli, Command, DatabaseSettings, PersonalDataCommand,
};
use crate::db::Database;
use crate::startup::{shutdown_signal, Application};

/// Runs a `bench …` subcommand. The benchmarks are part of the `shopfront` binary, not of this
/// library (the service does not ship them), so the binary passes them in to [`main`].
pub type Bench =
    for<'a> fn(&'a DatabaseSettings, BenchCommand) -> BoxFuture<'a, anyhow::Result<()>>;

/// Parses the command line, runs it (`bench …` through `bench`), and turns errors into a
/// message and exit code 1.
pub fn main(bench: Bench) -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::init(&cli.telemetry);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, bench)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, bench: Bench) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(settings) => {
            let application = Application::build(&cli.database, settings).await?;
            application.run_until_stopped(shutdown_signal()).await
        }
        Command::Migrate => {
            let database = Database::connect(&cli.database).await?;
            database.migrate().await?;
            println!("migrations applied to {}", database.description);
            database.close().await;
            Ok(())
        }
        Command::SeedDemo { owner_email } => {
            let database = Database::connect(&cli.database).await?;
            database.migrate().await?;
            let app = crate::app::App::new(database.pool.clone());
            let outcome = seed::seed_demo(&app, owner_email.as_deref()).await;
            database.close().await;
            let summary = outcome.context("seeding the demo store")?;
            println!("{summary}");
            Ok(())
        }
        Command::Rbac => {
            print!("{}", crate::app::authz::render_markdown());
            Ok(())
        }
        Command::Problems => {
            print!("{}", crate::http::problems::render_markdown());
            Ok(())
        }
        Command::Openapi => {
            // The document does not depend on the database; a lazy pool never connects.
            let pool = sqlx::postgres::PgPoolOptions::new()
                .connect_lazy("postgres://localhost/unused")
                .context("building a placeholder pool")?;
            println!(
                "{}",
                crate::http::openapi_spec(std::sync::Arc::new(crate::app::App::new(pool)))
            );
            Ok(())
        }
        Command::Accounts(AccountsCommand::Create {
            email,
            password_stdin: _,
            platform_admin,
        }) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            let password = line.trim_end_matches(['\r', '\n']).to_owned();
            if password.is_empty() {
                bail!("no password on standard input (pipe it in: `printf %s \"$PASSWORD\" | shopfront accounts create --email … --password-stdin`)");
            }
            let database = Database::connect(&cli.database).await?;
            database.migrate().await?;
            let app = crate::app::App::new(database.pool.clone());
            let created = app
                .create_staff_account(
                    &email,
                    secrecy::SecretString::from(password),
                    platform_admin,
                )
                .await;
            database.close().await;
            let account_id = created.with_context(|| format!("creating the account {email}"))?;
            println!(
                "{}",
                serde_json::json!({ "account_id": account_id, "email": email.trim().to_lowercase(), "platform_admin": platform_admin })
            );
            Ok(())
        }
        Command::PersonalData(PersonalDataCommand::Erase {
            subject,
            storage_dir,
        }) => {
            let database = Database::connect(&cli.database).await?;
            database.migrate().await?;
            let files = crate::app::FileStore::local(&storage_dir)
                .with_context(|| format!("opening the file store {}", storage_dir.display()))?;
            let app = crate::app::App::new(database.pool.clone()).with_files(files);
            let erased = app
                .erase_person_from_console(aggregates::AccountId(subject))
                .await;
            database.close().await;
            let report =
                erased.with_context(|| format!("erasing the personal data of {subject}"))?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Projections(command) => {
            let database = Database::connect(&cli.database).await?;
            database.migrate().await?;
            let outcome = projections::run(&database.pool, command).await;
            database.close().await;
            outcome
        }
        Command::Audit(command) => audit::run(&cli.database, command).await,
        Command::Bench(command) => bench(&cli.database, command).await,
    }
}
