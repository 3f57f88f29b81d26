//! The lead chain over GraphQL: scoring (`qualifyLead`, `Customer.score`,
//! `Customer.scoreHistory`), the chain's definition, its runs, and manual runs.

use super::{
    ApiContext, CustomersLoader,
    access::{customer_scope, visible_customer},
    customers::{CustomerNode, parse_id},
    pagination::{PageInfo, first_or_default},
};
use crate::{
    audit::Auditor,
    error::{ApiError, invalid},
};
use async_graphql::{Context, Enum, ID, InputObject, Json, Object, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use crm_domain::{CustomerId, CustomerScope, JobId, RunId, ScoreId};
use crm_plugins::pipeline::{QUALIFY_LEAD, to_record};
use crm_store::effects::Event;
use crm_store::{
    Page, customers, jobs,
    pipeline::{self, Run, RunFilter, Step},
    scores::{self, StoredScore},
};
use futures_util::{Stream, StreamExt as _};
use std::{collections::HashMap, sync::Arc};

/// How hot a lead is.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "crm_domain::Priority")]
pub(crate) enum Priority {
    /// Call now.
    Hot,
    /// Worth a call.
    Warm,
    /// Nurture.
    Cold,
}

/// What should happen with a lead next.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "crm_domain::NextAction")]
pub(crate) enum NextAction {
    /// Above the threshold with a phone number: an AI voice call.
    Call,
    /// Above the threshold without a phone number: a personal email.
    Email,
    /// An appointment was made: follow up on it.
    FollowUp,
    /// Under the threshold, or not interested: the nurture sequence.
    Nurture,
    /// Neither phone nor email usable: a person has to look.
    Review,
    /// Already a customer or churned.
    None,
}

/// Where a pipeline run stands.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "crm_store::pipeline::RunStatus")]
pub(crate) enum PipelineRunStatus {
    /// A step is queued or running.
    Running,
    /// Every step ran.
    Completed,
    /// Reached a step whose agent this deployment does not run (yet).
    Halted,
    /// A step's job is dead; retrying the job resumes the run.
    Failed,
    /// A step's job was cancelled by an operator.
    Cancelled,
}

/// Where a pipeline step stands.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "crm_store::pipeline::StepStatus")]
pub(crate) enum PipelineStepStatus {
    /// Its job is queued or running.
    Pending,
    /// Done.
    Done,
    /// Not needed on this branch.
    Skipped,
    /// Its agent does not run in this deployment.
    Unavailable,
    /// Its job is dead.
    Failed,
    /// Its job was cancelled.
    Cancelled,
}

/// One rule's contribution to a score.
#[derive(SimpleObject, Debug)]
pub(crate) struct ScoreReason {
    /// `profile`, `engagement`, `calls`, `email` or `decay`.
    group: String,
    /// The rule (`has_phone`, `outcome:interested`, `cap`, …).
    rule: String,
    /// Points added (negative: taken).
    points: f64,
    /// What fired it.
    detail: String,
}

/// A scoring of a lead: the score with its reasons.
#[derive(Debug, Clone)]
pub(crate) struct LeadScoreNode(pub(crate) StoredScore);

#[Object(name = "LeadScore")]
impl LeadScoreNode {
    /// Identity.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// 0–100.
    async fn score(&self) -> i32 {
        i32::from(self.0.result.score)
    }
    /// From the configured cut-offs.
    async fn priority(&self) -> Priority {
        self.0.result.priority.into()
    }
    /// Labels (`hot`, `corporate`, `appointment`, …).
    async fn tags(&self) -> &[String] {
        &self.0.result.tags
    }
    /// The recommended next action.
    async fn next_action(&self) -> NextAction {
        self.0.result.next_action.into()
    }
    /// Every rule that contributed; the points add up to the score (before clamping to 0–100).
    async fn reasons(&self) -> Vec<ScoreReason> {
        self.0
            .result
            .reasons
            .iter()
            .map(|r| ScoreReason {
                group: r.group.clone(),
                rule: r.rule.clone(),
                points: r.points,
                detail: r.detail.clone(),
            })
            .collect()
    }
    /// The version of the scoring config that produced it.
    async fn config_version(&self) -> &str {
        &self.0.config_version
    }
    /// What caused it (`manual`, `created`, `interaction`, `rescore`).
    async fn cause(&self) -> &str {
        &self.0.cause
    }
    /// When.
    async fn scored_at(&self) -> DateTime<Utc> {
        self.0.scored_at
    }
}

/// A page of scorings, newest first.
#[derive(SimpleObject, Debug)]
pub(crate) struct LeadScoreConnection {
    /// The scorings.
    nodes: Vec<LeadScoreNode>,
    /// Paging.
    page_info: PageInfo,
}

/// `Customer.scoreHistory`.
pub(crate) async fn score_history(
    ctx: &Context<'_>,
    customer: CustomerId,
    first: Option<i32>,
    after: Option<String>,
) -> async_graphql::Result<LeadScoreConnection> {
    let api = ctx.data::<ApiContext>()?;
    let limit = first_or_default(first, api.pages)?;
    let before = after
        .map(|raw| {
            raw.parse::<ScoreId>()
                .map_err(|_| invalid("after", "invalid_cursor", "after: not a cursor of scorings"))
        })
        .transpose()?;
    let rows = scores::history(&api.db, customer, before, limit)
        .await
        .map_err(ApiError::from)?;
    let items = rows.into_iter().map(|s| (s.id.to_string(), s)).collect();
    let page = Page::forward(items, limit, before.is_some());
    Ok(LeadScoreConnection {
        page_info: PageInfo::of(&page),
        nodes: page
            .items
            .into_iter()
            .map(|(_, s)| LeadScoreNode(s))
            .collect(),
    })
}

/// Priority cut-offs.
#[derive(SimpleObject, Debug)]
pub(crate) struct PriorityCutoffs {
    /// Lowest Hot score.
    hot: i32,
    /// Lowest Warm score.
    warm: i32,
}

/// A step of the chain's definition.
#[derive(SimpleObject, Debug)]
pub(crate) struct PipelineDefinedStep {
    /// The agent (job kind) or `decide`.
    name: String,
    /// The branch (next action) it belongs to; none: every lead passes it.
    branch: Option<String>,
    /// Whether this deployment runs it; a run reaching an unavailable step halts there.
    available: bool,
}

/// The lead chain as configured.
#[derive(SimpleObject, Debug)]
pub(crate) struct PipelineDefinition {
    /// A lead scoring above this is called.
    threshold: i32,
    /// Nurtured leads are re-scored after this many days (0: never).
    rescore_after_days: i32,
    /// New leads start a run.
    start_on_create: bool,
    /// New interactions start a re-scoring run.
    rescore_on_interaction: bool,
    /// Priority cut-offs.
    priority_cutoffs: PriorityCutoffs,
    /// The version of the scoring config (recorded with every scoring).
    scoring_version: String,
    /// The steps: intake, qualify, decide, then each branch's agents.
    steps: Vec<PipelineDefinedStep>,
}

/// A step of a pipeline run.
#[derive(Debug, Clone)]
pub(crate) struct PipelineStepNode {
    step: Step,
    job: Option<jobs::Job>,
}

#[Object(name = "PipelineStep")]
impl PipelineStepNode {
    /// Identity.
    async fn id(&self) -> ID {
        ID(self.step.id.to_string())
    }
    /// 0, 1, … in the order taken.
    async fn position(&self) -> i32 {
        self.step.position
    }
    /// The agent (`qualify-lead`, `voice-call`, …) or `decide`.
    async fn name(&self) -> &str {
        &self.step.name
    }
    /// Where it stands.
    async fn status(&self) -> PipelineStepStatus {
        self.step.status.into()
    }
    /// What it produced, or why it stopped.
    async fn detail(&self) -> Option<Json<serde_json::Value>> {
        self.step
            .detail
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .map(Json)
    }
    /// The job carrying it out.
    async fn job_id(&self) -> Option<ID> {
        self.step.job_id.map(|id| ID(id.to_string()))
    }
    /// Attempts of its job so far.
    async fn attempts(&self) -> i32 {
        self.job.as_ref().map_or(0, |j| j.attempts)
    }
    /// The error of its job's last failed attempt.
    async fn last_error(&self) -> Option<&str> {
        self.job.as_ref().and_then(|j| j.last_error.as_deref())
    }
    /// Added to the run.
    async fn created_at(&self) -> DateTime<Utc> {
        self.step.created_at
    }
    /// Ended.
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.step.finished_at
    }
}

/// One pass of a lead through the chain.
#[derive(Debug, Clone)]
pub(crate) struct PipelineRunNode {
    run: Run,
    steps: Vec<PipelineStepNode>,
}

#[Object(name = "PipelineRun")]
impl PipelineRunNode {
    /// Identity.
    async fn id(&self) -> ID {
        ID(self.run.id.to_string())
    }
    /// The lead's id.
    async fn customer_id(&self) -> ID {
        ID(self.run.customer_id.to_string())
    }
    /// The lead (null once deleted for good).
    async fn customer(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<CustomerNode>> {
        let loader = ctx.data::<CustomersLoader>()?;
        let found = loader
            .load_one(self.run.customer_id)
            .await
            .map_err(ApiError::from)?;
        Ok(found.map(CustomerNode))
    }
    /// What started it (`created`, `interaction`, `rescore`, `manual`).
    async fn cause(&self) -> &str {
        &self.run.cause
    }
    /// Where it stands.
    async fn status(&self) -> PipelineRunStatus {
        self.run.status.into()
    }
    /// The branch the decision took (`call`, `nurture`, …).
    async fn branch(&self) -> Option<&str> {
        self.run.branch.as_deref()
    }
    /// Why it failed.
    async fn error(&self) -> Option<&str> {
        self.run.error.as_deref()
    }
    /// The steps, in order.
    async fn steps(&self) -> &[PipelineStepNode] {
        &self.steps
    }
    /// Started.
    async fn created_at(&self) -> DateTime<Utc> {
        self.run.created_at
    }
    /// Last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.run.updated_at
    }
    /// Ended.
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.run.finished_at
    }
}

/// A page of runs, newest first.
#[derive(SimpleObject, Debug)]
pub(crate) struct PipelineRunConnection {
    /// The runs.
    nodes: Vec<PipelineRunNode>,
    /// Paging.
    page_info: PageInfo,
}

/// Which runs to list. All given conditions must hold.
#[derive(InputObject, Debug, Default)]
pub(crate) struct PipelineRunFilter {
    /// Of this lead.
    customer_id: Option<ID>,
    /// In this status.
    status: Option<PipelineRunStatus>,
}

/// Runs with their steps and the steps' jobs, in three statements for any number of runs.
async fn with_steps(
    api: &ApiContext,
    runs: Vec<Run>,
) -> async_graphql::Result<Vec<PipelineRunNode>> {
    let ids: Vec<RunId> = runs.iter().map(|r| r.id).collect();
    let steps = pipeline::steps_of(&api.db, &ids)
        .await
        .map_err(ApiError::from)?;
    let job_ids: Vec<JobId> = steps.iter().filter_map(|s| s.job_id).collect();
    let mut jobs: HashMap<JobId, jobs::Job> = jobs::by_ids(&api.db, &job_ids)
        .await
        .map_err(ApiError::from)?
        .into_iter()
        .map(|j| (j.id, j))
        .collect();
    let mut by_run: HashMap<RunId, Vec<PipelineStepNode>> = HashMap::new();
    for step in steps {
        let job = step.job_id.and_then(|id| jobs.remove(&id));
        by_run
            .entry(step.run_id)
            .or_default()
            .push(PipelineStepNode { step, job });
    }
    Ok(runs
        .into_iter()
        .map(|run| PipelineRunNode {
            steps: by_run.remove(&run.id).unwrap_or_default(),
            run,
        })
        .collect())
}

/// Pipeline queries.
#[derive(Default, Debug)]
pub(crate) struct PipelineQuery;

#[Object]
impl PipelineQuery {
    /// The lead chain as configured, and which of its agents this deployment runs.
    async fn pipeline_definition(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<PipelineDefinition> {
        let api = ctx.data::<ApiContext>()?;
        let pipeline = &api.pipeline;
        let config = pipeline.config();
        Ok(PipelineDefinition {
            threshold: i32::from(config.threshold),
            rescore_after_days: i32::try_from(config.rescore_after_days).unwrap_or(i32::MAX),
            start_on_create: config.start_on_create,
            rescore_on_interaction: config.rescore_on_interaction,
            priority_cutoffs: PriorityCutoffs {
                hot: i32::from(pipeline.rules().priority.hot),
                warm: i32::from(pipeline.rules().priority.warm),
            },
            scoring_version: pipeline.version().to_owned(),
            steps: pipeline
                .definition()
                .into_iter()
                .map(|s| PipelineDefinedStep {
                    name: s.name,
                    branch: s.branch,
                    available: s.available,
                })
                .collect(),
        })
    }

    /// Pipeline runs, newest first, of the leads the caller may see.
    #[graphql(
        complexity = "usize::try_from(first.unwrap_or(20)).unwrap_or(1).clamp(1, 1000).saturating_mul(child_complexity)"
    )]
    async fn pipeline_runs(
        &self,
        ctx: &Context<'_>,
        filter: Option<PipelineRunFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<PipelineRunConnection> {
        let api = ctx.data::<ApiContext>()?;
        let limit = first_or_default(first, api.pages)?;
        let filter = filter.unwrap_or_default();
        let before = after
            .map(|raw| {
                raw.parse::<RunId>()
                    .map_err(|_| invalid("after", "invalid_cursor", "after: not a cursor of runs"))
            })
            .transpose()?;
        let store_filter = RunFilter {
            customer_id: filter
                .customer_id
                .as_ref()
                .map(|id| parse_id("filter.customerId", id))
                .transpose()?,
            status: filter.status.map(Into::into),
            scope: customer_scope(ctx)?,
        };
        let runs = pipeline::list(&api.db, &store_filter, before, limit)
            .await
            .map_err(ApiError::from)?;
        let items = runs.into_iter().map(|r| (r.id.to_string(), r)).collect();
        let page = Page::forward(items, limit, before.is_some());
        let page_info = PageInfo::of(&page);
        let runs = page.items.into_iter().map(|(_, r)| r).collect();
        Ok(PipelineRunConnection {
            nodes: with_steps(api, runs).await?,
            page_info,
        })
    }

    /// One pipeline run; `NOT_FOUND` if it does not exist or its lead is not visible.
    async fn pipeline_run(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<PipelineRunNode> {
        let api = ctx.data::<ApiContext>()?;
        let id: RunId = parse_id("id", &id)?;
        let not_found = || ApiError::NotFound {
            entity: "pipeline run",
            id: id.to_string(),
        };
        let run = pipeline::get(&api.db, id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(not_found)?;
        visible_customer(ctx, run.customer_id)
            .await
            .map_err(|_| not_found())?;
        let mut nodes = with_steps(api, vec![run]).await?;
        Ok(nodes.pop().ok_or_else(not_found)?)
    }
}

/// Pipeline mutations.
#[derive(Default, Debug)]
pub(crate) struct PipelineMutation;

#[Object]
impl PipelineMutation {
    /// `/qualify-lead`: scores a live lead now and returns the score with its reasons, priority,
    /// tags and next action. The scoring is recorded in the lead's history unless it equals the
    /// newest one (same result, same config), so asking twice never counts anything twice.
    /// Only scores: routing the lead is the pipeline's (`runPipeline`).
    async fn qualify_lead(
        &self,
        ctx: &Context<'_>,
        customer_id: ID,
    ) -> async_graphql::Result<LeadScoreNode> {
        let api = ctx.data::<ApiContext>()?;
        let id: CustomerId = parse_id("customerId", &customer_id)?;
        let customer = visible_customer(ctx, id).await?;
        if customer.deleted_at.is_some() {
            return Err(ApiError::NotFound {
                entity: "customer",
                id: id.to_string(),
            }
            .into());
        }
        let now = api.clock.now();
        let result = api
            .pipeline
            .score(&api.db, &customer, now)
            .await
            .map_err(ApiError::from)?;
        let latest = scores::latest_for_customers(&api.db, &[id])
            .await
            .map_err(ApiError::from)?
            .into_iter()
            .next();
        let Some(new) = to_record(&api.pipeline, latest.as_ref(), id, &result, "manual", now)
        else {
            return Ok(LeadScoreNode(latest.ok_or_else(|| {
                ApiError::Internal("an unchanged score without a previous one".into())
            })?));
        };
        let mut changed = serde_json::Map::new();
        changed.insert("score".into(), result.score.into());
        changed.insert("priority".into(), result.priority.as_str().into());
        changed.insert("nextAction".into(), result.next_action.as_str().into());
        changed.insert("configVersion".into(), api.pipeline.version().into());
        let entry = Auditor::of(ctx)?.entry("lead.qualify", "customer", id.to_string(), changed);
        let stored = scores::record(&api.db, &new, Some(entry))
            .await
            .map_err(ApiError::from)?;
        tracing::info!(customer_id = %id, score = result.score, "Lead qualified.");
        Ok(LeadScoreNode(stored))
    }

    /// Starts a pipeline run for a live lead now (cause `manual`): score, decide, route.
    async fn run_pipeline(
        &self,
        ctx: &Context<'_>,
        customer_id: ID,
    ) -> async_graphql::Result<PipelineRunNode> {
        let api = ctx.data::<ApiContext>()?;
        let id: CustomerId = parse_id("customerId", &customer_id)?;
        let customer = visible_customer(ctx, id).await?;
        if customer.deleted_at.is_some() {
            return Err(ApiError::NotFound {
                entity: "customer",
                id: id.to_string(),
            }
            .into());
        }
        let now = api.clock.now();
        let run = api.pipeline.start(id, "manual", now);
        let run_id = run.id;
        let event = pipeline::event(
            run_id,
            customer.id,
            QUALIFY_LEAD,
            pipeline::StepStatus::Pending,
            pipeline::RunStatus::Running,
            serde_json::json!({ "cause": "manual" }),
        );
        let entry = Auditor::of(ctx)?.entry(
            "pipeline.run",
            "customer",
            id.to_string(),
            serde_json::Map::from_iter([("runId".to_owned(), run_id.to_string().into())]),
        );
        pipeline::start(&api.db, run, vec![event], Some(entry), now)
            .await
            .map_err(ApiError::from)?;
        let run = pipeline::get(&api.db, run_id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::Internal("the run just started is missing".into()))?;
        let mut nodes = with_steps(api, vec![run]).await?;
        Ok(nodes
            .pop()
            .ok_or_else(|| ApiError::Internal("the run just started is missing".into()))?)
    }
}

/// A change in a pipeline run.
#[derive(Debug)]
pub(crate) struct PipelineEventNode(Arc<Event>, serde_json::Value);

#[Object(name = "PipelineEvent")]
impl PipelineEventNode {
    /// Its place in the event stream: pass the last one seen as `afterSeq` to resume.
    async fn seq(&self) -> i64 {
        self.0.seq
    }
    /// The run.
    async fn run_id(&self) -> ID {
        ID(self.1["runId"].as_str().unwrap_or_default().to_owned())
    }
    /// The lead.
    async fn customer_id(&self) -> ID {
        ID(self.1["customerId"].as_str().unwrap_or_default().to_owned())
    }
    /// The step that changed (`qualify-lead`, …).
    async fn step(&self) -> &str {
        self.1["step"].as_str().unwrap_or_default()
    }
    /// The step's status (`pending`, `done`, `failed`).
    async fn status(&self) -> &str {
        self.1["status"].as_str().unwrap_or_default()
    }
    /// The run's status afterwards.
    async fn run_status(&self) -> Option<PipelineRunStatus> {
        self.1["runStatus"]
            .as_str()
            .and_then(|s| s.parse::<pipeline::RunStatus>().ok())
            .map(Into::into)
    }
    /// What happened (score, next action, error, cause).
    async fn detail(&self) -> Json<serde_json::Value> {
        Json(self.1["detail"].clone())
    }
    /// When.
    async fn at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// Pipeline subscriptions.
#[derive(Default, Debug)]
pub(crate) struct PipelineSubscription;

#[Subscription]
impl PipelineSubscription {
    /// Changes in pipeline runs of the leads the caller may see, as they commit. With
    /// `afterSeq`, first every stored event after it (resume after a disconnect).
    async fn pipeline_events(
        &self,
        ctx: &Context<'_>,
        after_seq: Option<i64>,
        customer_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = PipelineEventNode> + use<>> {
        crate::authz::require(ctx, "Subscription.pipelineEvents")?;
        let api = ctx.data::<ApiContext>()?;
        let scope = customer_scope(ctx)?;
        let customer: Option<String> = customer_id
            .as_ref()
            .map(|id| parse_id::<CustomerId>("customerId", id).map(|id| id.to_string()))
            .transpose()?;
        let db = api.db.clone();
        Ok(api
            .events
            .stream(&[crm_plugins::pipeline::TOPIC], after_seq)
            .filter_map(move |event| {
                let (db, scope, customer) = (db.clone(), scope.clone(), customer.clone());
                async move {
                    let id = event.customer_id.as_deref()?;
                    if customer.as_deref().is_some_and(|c| c != id) {
                        return None;
                    }
                    // The lead's owner now, not when the event happened: a reassigned lead's
                    // history follows it to its new owner.
                    if scope != CustomerScope::All {
                        let id: CustomerId = id.parse().ok()?;
                        let lead = customers::get(&db, id).await.ok().flatten()?;
                        if !scope.covers(lead.owner.as_deref()) {
                            return None;
                        }
                    }
                    let payload = serde_json::from_str(&event.payload).ok()?;
                    Some(PipelineEventNode(event, payload))
                }
            }))
    }
}
