//! `crm log-interaction` and `crm interactions`: the customer timeline.

use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::json;

use super::{Context, PageArgs, variables};
use crate::output::{self, Connection, Interaction};

const LOG: &str = concat!(
    "mutation LogInteraction($input: LogInteractionInput!) { \
     logInteraction(input: $input) { ...InteractionFields } } ",
    interaction_fields!()
);
const LIST: &str = concat!(
    "query Interactions($filter: InteractionFilter, $first: Int, $after: String) { \
     interactions(filter: $filter, first: $first, after: $after) { \
     nodes { ...InteractionFields } pageInfo { hasNextPage endCursor } } } ",
    interaction_fields!()
);

/// Channel of an interaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum InteractionKind {
    Call,
    Email,
    Meeting,
    Note,
}

/// Who initiated an interaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum Direction {
    Inbound,
    Outbound,
}

/// Flags of `crm log-interaction`.
#[derive(Debug, Args, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LogArgs {
    /// Id of the customer the interaction was with.
    customer_id: String,
    /// Kind of interaction.
    #[arg(long, value_enum, ignore_case = true)]
    kind: InteractionKind,
    /// Who initiated it.
    #[arg(long, value_enum, ignore_case = true)]
    direction: Option<Direction>,
    /// Subject or title.
    #[arg(long)]
    subject: Option<String>,
    /// Content: email body, call summary, meeting minutes, note text.
    #[arg(long)]
    body: Option<String>,
    /// Outcome (e.g. "booked demo", "no answer").
    #[arg(long)]
    outcome: Option<String>,
    /// Duration in seconds.
    #[arg(long = "duration", value_name = "SECONDS", value_parser = clap::value_parser!(i32).range(0..))]
    duration_seconds: Option<i32>,
    /// When it happened, RFC 3339 (default: now).
    #[arg(long, value_name = "RFC3339")]
    occurred_at: Option<String>,
    /// Who handled it (default: decided by the server).
    #[arg(long)]
    author: Option<String>,
}

impl LogArgs {
    /// Logs the interaction.
    pub(crate) async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let vars = variables(&json!({ "input": self }));
        ctx.show(LOG, vars, "logInteraction", |i: Interaction| {
            Ok(format!(
                "Logged interaction {}.\n\n{}",
                i.id,
                output::interaction(&i)
            ))
        })
        .await
    }
}

/// Flags of `crm interactions`.
#[derive(Debug, Args, Serialize)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    #[serde(flatten)]
    page: PageArgs,
}

#[derive(Debug, Args, Serialize)]
#[serde(rename_all = "camelCase")]
struct FilterArgs {
    /// Only interactions with this customer.
    #[arg(long = "customer", value_name = "ID")]
    customer_id: Option<String>,
    /// Only interactions of this kind.
    #[arg(long, value_enum, ignore_case = true)]
    kind: Option<InteractionKind>,
    /// Only interactions that happened at or after this time (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    occurred_after: Option<String>,
    /// Only interactions that happened before this time (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    occurred_before: Option<String>,
}

impl ListArgs {
    /// Lists one page of interactions.
    pub(crate) async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        ctx.show(
            LIST,
            variables(&self),
            "interactions",
            |page: Connection<Interaction>| Ok(output::interaction_list(&page)),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{Command, parse};

    #[test]
    fn log_sends_given_fields_under_their_graphql_names() {
        let Command::LogInteraction(args) = parse(&[
            "log-interaction",
            "c1",
            "--kind",
            "call",
            "--direction",
            "outbound",
            "--duration",
            "300",
            "--occurred-at",
            "2025-01-02T03:04:05Z",
        ]) else {
            panic!("not a log-interaction command");
        };
        assert_eq!(
            variables(&json!({ "input": args })),
            json!({"input": {
                "customerId": "c1",
                "kind": "CALL",
                "direction": "OUTBOUND",
                "durationSeconds": 300,
                "occurredAt": "2025-01-02T03:04:05Z",
            }})
        );
    }

    #[test]
    fn log_requires_a_known_kind() {
        use clap::Parser as _;
        let parsed = crate::Cli::try_parse_from(["crm", "log-interaction", "c1", "--kind", "fax"]);
        assert!(parsed.is_err());
    }

    #[test]
    fn list_filters_by_customer_and_kind() {
        let Command::Interactions(args) = parse(&[
            "interactions",
            "--customer",
            "c1",
            "--kind",
            "note",
            "--after",
            "cur",
        ]) else {
            panic!("not an interactions command");
        };
        assert_eq!(
            variables(&args),
            json!({"filter": {"customerId": "c1", "kind": "NOTE"}, "after": "cur"})
        );
    }
}
