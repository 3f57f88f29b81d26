//! `crm-server`: serve the API, migrate, export the schema, check a config, seed demo data.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use crm_api::{Application, Config, telemetry};
use std::{path::PathBuf, process::ExitCode, time::Instant};

/// The crm server: GraphQL API for leads, customers and interactions.
#[derive(Debug, Parser)]
#[command(name = "crm-server", version, about)]
struct Cli {
    /// TOML config file (see crm.example.toml); env CRM_<SECTION>__<KEY> overrides it.
    #[arg(long, global = true, env = "CRM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (the default): migrates the database first, then listens on server.bind.
    Serve,
    /// Run jobs only (no HTTP), with `jobs.worker_concurrency` at once; scale these apart from
    /// the API. Stops on Ctrl-C/SIGTERM after the jobs in hand finish.
    Worker,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the GraphQL schema (SDL), as committed in schema.graphql.
    PrintSchema,
    /// Mint a JWT signed with CRM_AUTH__JWT_SECRET and print it.
    Token {
        /// Role: admin, manager, sales, integration or viewer.
        #[arg(long)]
        role: String,
        /// Subject: the user name (owner for row-level rules).
        #[arg(long)]
        subject: String,
        /// Lifetime in seconds (default: auth.token_ttl_secs).
        #[arg(long)]
        ttl_secs: Option<u64>,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// GDPR tools: export everything held about a person, or erase them.
    Gdpr {
        #[command(subcommand)]
        command: GdprCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Fill the database with synthetic customers and interactions (batched inserts).
    Seed {
        /// Customers to create.
        #[arg(long, default_value_t = 1000)]
        customers: usize,
        /// Interactions per customer.
        #[arg(long, default_value_t = 5)]
        interactions_per_customer: usize,
        /// A number that keeps this run's emails and phones apart from other runs (0–99).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..100))]
        run: u32,
    },
}

#[derive(Debug, Subcommand)]
enum GdprCommand {
    /// Print (or write with --out) one JSON document with everything held about a person.
    Export {
        /// The customer's id, or their email address.
        who: String,
        /// Write the document to this file instead of standard output.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Erase a person: personal data replaced by tombstones, never re-imported or contacted.
    Erase {
        /// The customer's id, or their email address.
        who: String,
        /// Why (recorded with the erasure and in the audit log).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain of the audit log; exit 1 at the first changed or missing entry.
    Verify,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the configuration, print what is wrong, or the effective config (secrets
    /// left out) when it is fine.
    Check,
}

fn main() -> ExitCode {
    // reqwest is built without a crypto provider of its own (DEPENDENCIES.md: ring only).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    if let Some(Command::PrintSchema) = cli.command {
        print!("{}", crm_api::graphql::sdl());
        return ExitCode::SUCCESS;
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Config {
        command: ConfigCommand::Check,
    }) = cli.command
    {
        println!("# The configuration is valid. Effective values (secrets not shown):\n");
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    telemetry::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command.unwrap_or(Command::Serve), config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let app = Application::build(&config).await?;
            if let Some(key) = app.bootstrap_key() {
                // Printed once, to the terminal only: never logged, never stored in clear.
                println!(
                    "\nFirst start: created an admin API key. It is shown only now; store it safely:\n\n    {key}\n\n\
                     Use it as `Authorization: Bearer <key>`. Create more keys with the createApiKey mutation, \
                     or mint a token with `crm-server token --role admin --subject <you>` (needs CRM_AUTH__JWT_SECRET).\n"
                );
            }
            app.run_until(shutdown_signal()).await
        }
        Command::Audit {
            command: AuditCommand::Verify,
        } => {
            let db = crm_store::Db::connect(&config.database.db_options()).await?;
            match crm_store::audit::verify(&db).await? {
                crm_store::audit::Verification::Intact { entries } => {
                    println!("The audit log is intact: {entries} entries verified.");
                    Ok(())
                }
                crm_store::audit::Verification::Broken { seq, reason } => {
                    anyhow::bail!("the audit log is broken at entry {seq}: {reason}")
                }
            }
        }
        Command::Gdpr { command } => gdpr_command(&config, command).await,
        Command::Token {
            role,
            subject,
            ttl_secs,
        } => {
            let role: crm_domain::Role = role
                .parse()
                .map_err(|e: crm_domain::FieldError| anyhow::anyhow!(e.message))?;
            let secret = config
                .auth
                .jwt_secret
                .as_ref()
                .context("set CRM_AUTH__JWT_SECRET to mint tokens")?;
            let ttl = chrono::Duration::seconds(
                i64::try_from(ttl_secs.unwrap_or(config.auth.token_ttl_secs))
                    .unwrap_or(i64::MAX / 1000),
            );
            let token = crm_api::auth::mint_token(
                secret,
                &subject,
                role,
                chrono::Utc::now(),
                ttl,
                config.auth.issuer.as_deref(),
            )?;
            println!("{token}");
            Ok(())
        }
        Command::Worker => {
            let db = crm_store::Db::open(&config.database.db_options()).await?;
            let clock: std::sync::Arc<dyn crm_domain::Clock> =
                std::sync::Arc::new(crm_domain::SystemClock);
            let pipeline = crm_api::app::pipeline(&config)?;
            let authorizer = crm_api::authz::Authorizer::from_files(
                config.auth.model_file.as_deref(),
                config.auth.policy_file.as_deref(),
            )
            .await?;
            let runner = crm_api::app::job_runner(
                &config,
                db.clone(),
                clock.clone(),
                &pipeline,
                &authorizer,
                config.jobs.worker_concurrency.max(1),
            )?;
            // Workers fire the schedules too: with N replicas each firing still runs once.
            let scheduler = crm_api::app::scheduler(&config, db, clock)?;
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let scheduler = scheduler.map(|scheduler| {
                let mut stopped = stopped.clone();
                tokio::spawn(
                    scheduler.run_until(crm_api::app::SCHEDULER_TICK, async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    }),
                )
            });
            runner
                .run_until(async move {
                    shutdown_signal().await;
                    let _ = stop.send(true);
                })
                .await;
            if let Some(scheduler) = scheduler {
                let _ = scheduler.await;
            }
            Ok(())
        }
        Command::Migrate => {
            let applied = crm_store::run_migrations(&config.database.db_options().url).await?;
            if applied.is_empty() {
                println!("The database is up to date.");
            } else {
                println!(
                    "Applied {} migration(s): {}",
                    applied.len(),
                    applied.join(", ")
                );
            }
            Ok(())
        }
        Command::Seed {
            customers,
            interactions_per_customer,
            run,
        } => {
            let db = crm_store::Db::open(&config.database.db_options()).await?;
            let started = Instant::now();
            let report = crm_store::seed::seed(
                &db,
                run,
                customers,
                interactions_per_customer,
                chrono::Utc::now(),
                |done| {
                    if done % 100_000 < 2_000 || done == customers {
                        eprintln!(
                            "  {done}/{customers} customers, {:.0}/s",
                            done as f64 / started.elapsed().as_secs_f64()
                        );
                    }
                },
            )
            .await
            .context("seeding failed (seeding the same --run twice collides on unique emails)")?;
            println!(
                "Seeded {} customers and {} interactions in {:.1} s.",
                report.customers,
                report.interactions,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::PrintSchema | Command::Config { .. } => Ok(()),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "Cannot listen for Ctrl-C.");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "Cannot listen for SIGTERM.");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("Shutting down.");
}

/// Finds a customer by id or email.
async fn find_customer(db: &crm_store::Db, who: &str) -> anyhow::Result<crm_domain::CustomerId> {
    if let Ok(id) = who.trim().parse::<crm_domain::CustomerId>() {
        return Ok(id);
    }
    let email = crm_domain::Email::parse(who)
        .map_err(|_| anyhow::anyhow!("`{who}` is neither a customer id nor an email address"))?;
    let found = crm_store::customers::find_by_contact(db, Some(email.as_str()), None).await?;
    found
        .first()
        .map(|c| c.id)
        .ok_or_else(|| anyhow::anyhow!("no customer has the email {}", email.as_str()))
}

/// `crm-server gdpr …`: run at the console, audited as the operator's action.
async fn gdpr_command(config: &crm_api::Config, command: GdprCommand) -> anyhow::Result<()> {
    let db = crm_store::Db::connect(&config.database.db_options()).await?;
    let clock: std::sync::Arc<dyn crm_domain::Clock> = std::sync::Arc::new(crm_domain::SystemClock);
    let now = clock.now();
    let entry = |action: &str, id: crm_domain::CustomerId, payload: Option<String>| {
        crm_store::audit::NewAuditEntry {
            at: now,
            actor_kind: crm_store::audit::ActorKind::System,
            actor: "crm-server gdpr".to_owned(),
            action: action.to_owned(),
            target_type: Some("customer".to_owned()),
            target_id: Some(id.to_string()),
            request_id: None,
            payload,
        }
    };
    match command {
        GdprCommand::Export { who, out } => {
            let id = find_customer(&db, &who).await?;
            let document = crm_store::gdpr::export(&db, id, now)
                .await?
                .ok_or_else(|| anyhow::anyhow!("customer {id} does not exist"))?;
            crm_store::gdpr::record_audit(&db, &entry("customer.export", id, None), now).await?;
            let text = serde_json::to_string_pretty(&document)?;
            match out {
                Some(path) => std::fs::write(&path, text)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?,
                None => println!("{text}"),
            }
            Ok(())
        }
        GdprCommand::Erase { who, reason } => {
            let reason = reason.trim().to_owned();
            anyhow::ensure!(
                !reason.is_empty(),
                "--reason must say why the customer is erased"
            );
            let id = find_customer(&db, &who).await?;
            let pipeline = crm_api::app::pipeline(config)?;
            let voice = crm_api::app::voice(config, &db, &clock, &pipeline)?;
            let gdpr = crm_api::app::gdpr(
                config,
                &db,
                &clock,
                voice,
                crm_api::app::mailer(config, &db, &clock)?,
            )?;
            let payload = serde_json::json!({ "reason": { "after": reason } }).to_string();
            let erasure = gdpr
                .erase(
                    id,
                    &reason,
                    "crm-server gdpr",
                    entry("customer.erase", id, Some(payload)),
                )
                .await?;
            if erasure.already_erased {
                println!("Customer {id} was erased before, on {}.", erasure.erased_at);
            } else {
                println!(
                    "Customer {id} erased; {} call(s) to delete at their provider.",
                    erasure.provider_deletions
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;
    use crm_api::config::ConfigError;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_errors_are_shown_not_debugged() {
        let error = ConfigError::Invalid(vec!["server.bind is wrong".into()]);
        assert!(error.to_string().contains("  - server.bind is wrong"));
    }
}
