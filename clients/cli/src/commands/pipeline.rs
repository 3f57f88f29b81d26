//! `crm qualify-lead` (the seed's `/qualify-lead`) and `crm pipeline-runs`: lead scores with
//! their reasons, and the runs of the lead chain.

use clap::Args;
use serde::Serialize;
use serde_json::json;

use super::{Context, PageArgs, variables};
use crate::output::{self, Connection, LeadScore, PipelineRun};

const QUALIFY: &str = "mutation QualifyLead($id: ID!) { qualifyLead(customerId: $id) { \
     score priority tags nextAction configVersion cause scoredAt \
     reasons { group rule points detail } } }";

const RUNS: &str = "query PipelineRuns($filter: PipelineRunFilter, $first: Int, $after: String) { \
     pipelineRuns(filter: $filter, first: $first, after: $after) { \
     nodes { id customerId cause status branch error createdAt \
     steps { position name status attempts lastError } } \
     pageInfo { hasNextPage endCursor } } }";

/// Flags of `crm qualify-lead`.
#[derive(Debug, Args)]
pub(crate) struct QualifyArgs {
    /// Id of the lead (customer) to score.
    customer_id: String,
}

impl QualifyArgs {
    /// Scores the lead now and prints the score with its reasons.
    pub(crate) async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        ctx.show(
            QUALIFY,
            json!({ "id": self.customer_id }),
            "qualifyLead",
            |score: LeadScore| Ok(output::lead_score(&score)),
        )
        .await
    }
}

/// Run status filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum RunStatus {
    Running,
    Completed,
    Halted,
    Failed,
}

/// Flags of `crm pipeline-runs`.
#[derive(Debug, Args, Serialize)]
pub(crate) struct RunsArgs {
    #[command(flatten)]
    filter: RunFilterArgs,
    #[command(flatten)]
    #[serde(flatten)]
    page: PageArgs,
}

#[derive(Debug, Args, Serialize)]
#[serde(rename_all = "camelCase")]
struct RunFilterArgs {
    /// Only runs of this lead.
    #[arg(long = "customer", value_name = "ID")]
    customer_id: Option<String>,
    /// Only runs in this status.
    #[arg(long, value_enum, ignore_case = true)]
    status: Option<RunStatus>,
}

impl RunsArgs {
    /// Lists one page of runs with their steps.
    pub(crate) async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        ctx.show(
            RUNS,
            variables(&self),
            "pipelineRuns",
            |page: Connection<PipelineRun>| Ok(output::pipeline_runs(&page)),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{Command, parse};

    #[test]
    fn runs_filter_by_customer_and_status() {
        let Command::PipelineRuns(args) =
            parse(&["pipeline-runs", "--customer", "c1", "--status", "halted"])
        else {
            panic!("not a pipeline-runs command");
        };
        assert_eq!(
            variables(&args),
            json!({"filter": {"customerId": "c1", "status": "HALTED"}})
        );
    }
}
