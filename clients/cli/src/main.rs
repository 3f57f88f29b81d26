//! `crm`, the command-line client of the crm server.
//!
//! The CLI talks to the server only through GraphQL over HTTP
//! (`POST <url>/graphql`); see [`client::GraphqlClient`]. Each subcommand
//! lives in [`commands`], and human-readable rendering in [`output`].

mod client;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;

use crate::{
    client::GraphqlClient,
    commands::{Command, Context},
};

const GLOBAL: &str = "Global options";

const EXAMPLES: &str = "\
Examples:
  crm customers --status lead --first 20
  crm customer create --name 'Ada Lovelace' --email ada@example.com --tag vip
  crm customer update <ID> --status customer
  crm log-interaction <ID> --kind call --direction outbound --duration 300
  crm import-lead leads.csv --source messe --tag q4
  crm qualify-lead <ID>
  crm pipeline-runs --status halted
  crm query '{ customers(first: 5) { nodes { id name } } }'";

/// Command-line client of the crm server.
#[derive(Debug, Parser)]
#[command(name = "crm", version, after_help = EXAMPLES)]
struct Cli {
    /// Base URL of the crm server; requests go to <URL>/graphql.
    #[arg(
        long,
        env = "CRM_URL",
        default_value = "http://127.0.0.1:8080",
        global = true,
        help_heading = GLOBAL
    )]
    url: String,

    /// API token, sent as `Authorization: Bearer <TOKEN>`.
    #[arg(
        long,
        env = "CRM_TOKEN",
        global = true,
        hide_env_values = true,
        help_heading = GLOBAL
    )]
    token: Option<String>,

    /// Print the raw GraphQL `data` as JSON instead of tables.
    #[arg(long, global = true, help_heading = GLOBAL)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprint!("{}", report(&err));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = GraphqlClient::new(&cli.url, cli.token.as_deref())?;
    let ctx = Context {
        client,
        json: cli.json,
    };
    cli.command.run(&ctx).await
}

/// Formats `err` and its causes for stderr, one `error:` line each.
fn report(err: &anyhow::Error) -> String {
    format!("{err:#}")
        .lines()
        .map(|line| format!("error: {line}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::client::{CliError, graphql_errors};

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_are_accepted_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "crm",
            "customers",
            "--json",
            "--url",
            "http://crm.test",
            "--token",
            "t0k",
        ])
        .unwrap();
        assert!(cli.json);
        assert_eq!(cli.url, "http://crm.test");
        assert_eq!(cli.token.as_deref(), Some("t0k"));
    }

    #[test]
    fn graphql_errors_are_reported_one_per_line() {
        let body = serde_json::json!({"errors": [
            {"message": "invalid email", "extensions": {"code": "VALIDATION_FAILED", "field": "input.email"}},
            {"message": "boom"},
        ]});
        let err = anyhow::Error::from(CliError::Graphql(graphql_errors(&body)));
        assert_eq!(
            report(&err),
            "error: invalid email (code: VALIDATION_FAILED, field: input.email)\nerror: boom\n"
        );
    }
}
