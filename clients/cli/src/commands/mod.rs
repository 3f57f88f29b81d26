//! The `crm` subcommands, one module per family.
//!
//! To add a command: write its clap arguments and a `run(self, &Context)`
//! method in a module here, then add a variant to [`Command`] and a match arm
//! to [`Command::run`]. User input always travels as GraphQL variables.

/// GraphQL fragment `CustomerFields`: every scalar field of a customer.
macro_rules! customer_fields {
    () => {
        "fragment CustomerFields on Customer { id name email phone company status source \
         language country timeZone owner tags consentEmail consentCall consentSms notes \
         createdAt updatedAt deletedAt }"
    };
}

/// GraphQL fragment `InteractionFields`: every scalar field of an interaction.
macro_rules! interaction_fields {
    () => {
        "fragment InteractionFields on Interaction { id customerId kind direction subject body \
         outcome occurredAt durationSeconds author createdAt updatedAt }"
    };
}

mod customers;
mod email;
mod import;
mod interactions;
mod pipeline;
mod query;
mod report;
mod voice;

use std::io::{self, Write};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::client::GraphqlClient;

/// A `crm` subcommand.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List customers, one page at a time.
    Customers(customers::ListArgs),
    /// Show, create, update, delete or restore one customer.
    #[command(subcommand)]
    Customer(customers::CustomerCommand),
    /// Log a call, email, meeting or note with a customer.
    LogInteraction(interactions::LogArgs),
    /// List interactions, one page at a time.
    Interactions(interactions::ListArgs),
    /// Import leads from a CSV, JSON or NDJSON file (`-`: standard input), with a progress bar.
    ImportLead(import::ImportArgs),
    /// Score a lead now (`/qualify-lead`): score, priority, tags, next action and the reasons.
    QualifyLead(pipeline::QualifyArgs),
    /// List runs of the lead chain with their steps, one page at a time.
    PipelineRuns(pipeline::RunsArgs),
    /// Call a customer now with an AI voice agent (`/voice-call`); `--follow` prints the
    /// transcript live until the call ends.
    VoiceCall(voice::VoiceCallArgs),
    /// Send a templated email to a customer (`/send-email`), or `--preview` it.
    SendEmail(email::SendEmailArgs),
    /// Generate a report (`/generate-report`): KPIs of a day, week, month or custom range
    /// compared with the period before; `--out` downloads the PDF or HTML.
    GenerateReport(report::ReportArgs),
    /// Run a raw GraphQL document and print the whole JSON response.
    Query(query::QueryArgs),
}

impl Command {
    /// Runs the command against the server of `ctx`.
    pub(crate) async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        match self {
            Self::Customers(args) => args.run(ctx).await,
            Self::Customer(command) => command.run(ctx).await,
            Self::LogInteraction(args) => args.run(ctx).await,
            Self::Interactions(args) => args.run(ctx).await,
            Self::ImportLead(args) => args.run(ctx).await,
            Self::QualifyLead(args) => args.run(ctx).await,
            Self::PipelineRuns(args) => args.run(ctx).await,
            Self::VoiceCall(args) => args.run(ctx).await,
            Self::SendEmail(args) => args.run(ctx).await,
            Self::GenerateReport(args) => args.run(ctx).await,
            Self::Query(args) => args.run(ctx).await,
        }
    }
}

/// What every command needs: the server client and the output mode.
#[derive(Debug)]
pub(crate) struct Context {
    /// Client of the crm server.
    pub(crate) client: GraphqlClient,
    /// Print raw `data` JSON instead of human-readable output.
    pub(crate) json: bool,
}

impl Context {
    /// Runs `query`, then prints the raw `data` with `--json`, or else
    /// `render` applied to the `root` field of `data`.
    async fn show<T: DeserializeOwned>(
        &self,
        query: &str,
        variables: Value,
        root: &str,
        render: impl FnOnce(T) -> anyhow::Result<String>,
    ) -> anyhow::Result<()> {
        let mut data: Value = self.client.execute(query, variables).await?;
        if self.json {
            return print(&serde_json::to_string_pretty(&data)?);
        }
        let value = data.get_mut(root).map(Value::take).unwrap_or_default();
        let value = serde_json::from_value(value)
            .with_context(|| format!("unexpected `{root}` in the server response"))?;
        print(&render(value)?)
    }
}

/// Writes `text` and a newline to stdout; a closed pipe is not an error.
fn print(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match writeln!(out, "{}", text.trim_end()).and_then(|()| out.flush()) {
        Err(err) if err.kind() != io::ErrorKind::BrokenPipe => Err(err.into()),
        _ => Ok(()),
    }
}

/// Serializes `args` into GraphQL variables, dropping unset (null) fields
/// at any depth so that only the flags actually given are sent.
fn variables(args: &impl Serialize) -> Value {
    fn compact(value: Value) -> Value {
        match value {
            Value::Object(map) => map
                .into_iter()
                .filter(|(_, value)| !value.is_null())
                .map(|(key, value)| (key, compact(value)))
                .collect(),
            other => other,
        }
    }
    compact(serde_json::to_value(args).unwrap_or_default())
}

/// Cursor pagination flags shared by the list commands.
#[derive(Debug, Args, Serialize)]
pub(crate) struct PageArgs {
    /// Maximum number of items to return.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    first: Option<i32>,
    /// Return the items after this cursor (printed under the previous page).
    #[arg(long, value_name = "CURSOR")]
    after: Option<String>,
}

/// Parses a command line (without the program name) into its [`Command`].
#[cfg(test)]
fn parse(args: &[&str]) -> Command {
    use clap::Parser as _;
    crate::Cli::try_parse_from(std::iter::once("crm").chain(args.iter().copied()))
        .unwrap()
        .command
}
