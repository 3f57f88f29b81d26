//! The lead chain (DESIGN.md §4, the seed's plan): import → qualify → decide → call or nurture
//! → follow-up, as configuration, with every pass of a lead recorded as a pipeline run.
//!
//! - A run starts inside the transaction of what caused it (a new lead, a new interaction, a
//!   due re-score) with its first step, `qualify-lead`, and that step's job.
//! - `qualify-lead` scores the lead and decides in one transaction: the branch is the score's
//!   next action (`call`, `follow_up`, `email`, `nurture`; `review` and `none` end the run), and
//!   the branch's first agent is added as the next step with its job — or, when this deployment
//!   does not run that agent (yet), as an `unavailable` step that halts the run where users can
//!   see it. A lead routed to nurture is re-scored after `rescore_after_days`.
//! - Every step's job carries the step id; a step finishes once (its first write claims it), so
//!   a replayed job changes nothing and a lead is never scored into the history twice for one
//!   step.

use crate::runner::{JobError, JobHandler, RetryPolicy};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use crm_domain::{
    Activity, Clock, Customer, CustomerId, LeadScore, NextAction, RunId, ScoreId, ScoringRules,
    StepId, scoring,
};
use crm_store::{
    Db, StoreError, customers,
    effects::Effect,
    interactions,
    jobs::NewJob,
    pipeline::{self, Advance, NewRun, NewStep, RunStatus, StepStatus},
    scores::{self, NewScore, StoredScore},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

/// The job kind that scores a lead and decides its branch.
pub const QUALIFY_LEAD: &str = "qualify-lead";
/// The job kind that starts a delayed re-scoring run.
pub const RESCORE_LEAD: &str = "rescore-lead";
/// The built-in decision step.
pub const DECIDE: &str = "decide";
/// The intake agent (the intake issue's `/import-lead`).
pub const IMPORT_LEAD: &str = "import-lead";
/// The event topic of pipeline runs.
pub use crm_store::pipeline::TOPIC;

/// How many interactions scoring reads (older ones have decayed to nothing).
const ACTIVITY_LIMIT: usize = 500;

/// The `[pipeline]` config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// A lead scoring above this is called (0–100).
    pub threshold: u8,
    /// A lead routed to nurture is re-scored after this many days (0: never).
    pub rescore_after_days: u32,
    /// Start a run for every new lead created through the API.
    pub start_on_create: bool,
    /// Start a run (re-score, and route if the next action changed) on every new interaction.
    pub rescore_on_interaction: bool,
    /// The agents each branch runs, in order, by next action (`call`, `follow_up`, `email`,
    /// `nurture`). Branches not listed end the run after the decision.
    pub branches: BTreeMap<String, Vec<String>>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            threshold: 50,
            rescore_after_days: 7,
            start_on_create: true,
            rescore_on_interaction: true,
            branches: [
                ("call", &["voice-call", "follow-up"][..]),
                ("follow_up", &["follow-up"][..]),
                ("email", &["send-email"][..]),
                ("nurture", &["nurture-email"][..]),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
            .collect(),
        }
    }
}

impl PipelineConfig {
    /// Every problem with this config and `rules`, or none.
    pub fn problems(&self, rules: &ScoringRules) -> Vec<String> {
        let mut problems = rules.problems();
        if self.threshold > 100 {
            problems.push(format!(
                "pipeline.threshold ({}) must lie in 0..=100",
                self.threshold
            ));
        }
        for (branch, agents) in &self.branches {
            if branch.parse::<NextAction>().is_err() {
                problems.push(format!(
                    "pipeline.branches: `{branch}` is not a next action (call, follow_up, email, nurture, review, none)"
                ));
            }
            if agents
                .iter()
                .any(|a| a.is_empty() || a == DECIDE || a == QUALIFY_LEAD)
            {
                problems.push(format!(
                    "pipeline.branches.{branch}: agents must be named and not `{QUALIFY_LEAD}` or `{DECIDE}`"
                ));
            }
        }
        problems
    }
}

/// The configured chain, as this deployment runs it.
#[derive(Debug, Clone)]
pub struct Pipeline {
    config: PipelineConfig,
    rules: ScoringRules,
    version: String,
    available: BTreeSet<String>,
}

/// One step of the definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinedStep {
    /// The step (agent job kind, or `decide`).
    pub name: String,
    /// The branch it belongs to (`None`: every lead passes it).
    pub branch: Option<String>,
    /// Whether this deployment runs it.
    pub available: bool,
}

/// The payload of a step's job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StepPayload {
    /// The lead.
    pub customer_id: CustomerId,
    /// The run.
    pub run_id: RunId,
    /// The step this job carries out.
    pub step_id: StepId,
}

impl Pipeline {
    /// The chain of `config` scored by `rules`, where `available` are the agent kinds this
    /// deployment runs. Refuses a bad config with every problem named.
    pub fn new(
        config: PipelineConfig,
        rules: ScoringRules,
        available: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Self, String> {
        let problems = config.problems(&rules);
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        // The version names the rules and the threshold (which shapes the next action).
        let canonical = serde_json::to_string(&(&rules, config.threshold))
            .map_err(|e| format!("scoring rules do not serialize: {e}"))?;
        let digest = Sha256::digest(canonical.as_bytes());
        let version = crm_domain::hex::encode(&digest[..6]);
        Ok(Self {
            config,
            rules,
            version,
            available: available.into_iter().map(Into::into).collect(),
        })
    }

    /// The config.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// The scoring rules.
    pub fn rules(&self) -> &ScoringRules {
        &self.rules
    }

    /// The version of the scoring config (a digest of the rules and the threshold).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether this deployment runs `agent`.
    pub fn is_available(&self, agent: &str) -> bool {
        agent == DECIDE || self.available.contains(agent)
    }

    /// The chain as configured: intake, qualify, decide, then each branch's agents.
    pub fn definition(&self) -> Vec<DefinedStep> {
        let mut steps: Vec<DefinedStep> = [IMPORT_LEAD, QUALIFY_LEAD, DECIDE]
            .into_iter()
            .map(|name| DefinedStep {
                name: name.to_owned(),
                branch: None,
                available: self.is_available(name),
            })
            .collect();
        for (branch, agents) in &self.config.branches {
            steps.extend(agents.iter().map(|agent| DefinedStep {
                name: agent.clone(),
                branch: Some(branch.clone()),
                available: self.is_available(agent),
            }));
        }
        steps
    }

    /// Scores a lead now from what is stored about it.
    pub async fn score(
        &self,
        db: &Db,
        customer: &Customer,
        now: DateTime<Utc>,
    ) -> Result<LeadScore, StoreError> {
        let activities: Vec<Activity> = interactions::recent_of(db, customer.id, ACTIVITY_LIMIT)
            .await?
            .into_iter()
            .map(|i| Activity {
                kind: i.kind,
                direction: i.direction,
                outcome: i.outcome,
                sentiment: None,
                occurred_at: i.occurred_at,
            })
            .collect();
        Ok(scoring::score(
            &self.rules,
            self.config.threshold,
            customer,
            &activities,
            now,
        ))
    }

    /// A run of the chain for a lead, starting with `qualify-lead`: write it as an effect of the
    /// change that caused it.
    pub fn start(&self, customer: CustomerId, cause: &str, now: DateTime<Utc>) -> NewRun {
        self.start_with_ids(customer, cause, RunId::new(), StepId::new(), now)
    }

    /// The effects that start a run for a lead: the run (with its first step and job) and its
    /// event. Write them with the change that caused the run.
    pub fn start_effects(
        &self,
        customer: CustomerId,
        cause: &str,
        now: DateTime<Utc>,
    ) -> Vec<Effect> {
        let run = self.start(customer, cause, now);
        let event = pipeline::event(
            run.id,
            customer,
            QUALIFY_LEAD,
            StepStatus::Pending,
            RunStatus::Running,
            serde_json::json!({ "cause": cause }),
        );
        vec![Effect::StartRun(run), event]
    }

    /// Like [`Pipeline::start`], with the ids chosen by the caller (a replayed job that starts a
    /// run must start the same run).
    pub fn start_with_ids(
        &self,
        customer: CustomerId,
        cause: &str,
        run_id: RunId,
        step_id: StepId,
        now: DateTime<Utc>,
    ) -> NewRun {
        let payload = StepPayload {
            customer_id: customer,
            run_id,
            step_id,
        };
        NewRun {
            id: run_id,
            customer_id: customer,
            cause: cause.to_owned(),
            steps: vec![NewStep {
                id: step_id,
                name: QUALIFY_LEAD.to_owned(),
                status: StepStatus::Pending,
                job: Some(step_job(QUALIFY_LEAD, &payload, now)),
                detail: None,
            }],
        }
    }
}

impl Pipeline {
    /// The step of `agent` in a run: pending with its job (the run goes on), or unavailable
    /// when this deployment does not run the agent (the run halts there).
    pub fn agent_step(
        &self,
        agent: &str,
        customer: CustomerId,
        run: RunId,
        now: DateTime<Utc>,
    ) -> (NewStep, RunStatus) {
        let id = StepId::new();
        if self.is_available(agent) {
            let payload = StepPayload {
                customer_id: customer,
                run_id: run,
                step_id: id,
            };
            let step = NewStep {
                id,
                name: agent.to_owned(),
                status: StepStatus::Pending,
                job: Some(step_job(agent, &payload, now)),
                detail: None,
            };
            (step, RunStatus::Running)
        } else {
            let step = NewStep {
                id,
                name: agent.to_owned(),
                status: StepStatus::Unavailable,
                job: None,
                detail: Some(
                    serde_json::json!({
                        "reason": format!("the agent `{agent}` does not run in this deployment")
                    })
                    .to_string(),
                ),
            };
            (step, RunStatus::Halted)
        }
    }

    /// What follows `agent` in the run's `branch`: the next agent's step, or nothing (the run
    /// is completed).
    pub fn after_agent(
        &self,
        branch: Option<&str>,
        agent: &str,
        customer: CustomerId,
        run: RunId,
        now: DateTime<Utc>,
    ) -> (Vec<NewStep>, RunStatus) {
        let agents = branch
            .and_then(|b| self.config.branches.get(b))
            .map_or(&[][..], Vec::as_slice);
        let next = agents
            .iter()
            .position(|a| a == agent)
            .and_then(|i| agents.get(i + 1));
        match next {
            Some(next) => {
                let (step, status) = self.agent_step(next, customer, run, now);
                (vec![step], status)
            }
            None => (Vec::new(), RunStatus::Completed),
        }
    }
}

/// The job of a step.
fn step_job(kind: &str, payload: &StepPayload, now: DateTime<Utc>) -> NewJob {
    NewJob {
        kind: kind.to_owned(),
        payload: serde_json::to_string(payload).unwrap_or_default(),
        dedupe_key: Some(format!("step:{}", payload.step_id)),
        priority: 0,
        run_at: now,
        max_attempts: RetryPolicy::default().max_attempts,
    }
}

/// The score to record, unless the lead's newest scoring is the same result from the same
/// config (then scoring again changed nothing and the history keeps one entry).
pub fn to_record(
    pipeline: &Pipeline,
    latest: Option<&StoredScore>,
    customer: CustomerId,
    result: &LeadScore,
    cause: &str,
    now: DateTime<Utc>,
) -> Option<NewScore> {
    if latest.is_some_and(|l| l.same_as(result, pipeline.version())) {
        return None;
    }
    Some(NewScore {
        id: ScoreId::new(),
        customer_id: customer,
        result: result.clone(),
        config_version: pipeline.version().to_owned(),
        cause: cause.to_owned(),
        scored_at: now,
    })
}

/// `qualify-lead`: scores the lead, records the score, decides the branch and queues its first
/// agent.
#[derive(Debug)]
pub struct QualifyLead {
    db: Db,
    clock: Arc<dyn Clock>,
    pipeline: Arc<Pipeline>,
}

impl QualifyLead {
    /// The handler.
    pub fn new(db: Db, clock: Arc<dyn Clock>, pipeline: Arc<Pipeline>) -> Self {
        Self {
            db,
            clock,
            pipeline,
        }
    }
}

fn retryable(error: StoreError) -> JobError {
    JobError::Retryable(error.to_string())
}

fn parse_payload(payload: &str) -> Result<StepPayload, JobError> {
    serde_json::from_str(payload)
        .map_err(|e| JobError::Fatal(format!("the payload does not deserialize: {e}")))
}

#[async_trait]
impl JobHandler for QualifyLead {
    fn kind(&self) -> &'static str {
        QUALIFY_LEAD
    }

    async fn run(&self, payload: &str) -> Result<(), JobError> {
        let step = parse_payload(payload)?;
        let run = pipeline::get(&self.db, step.run_id)
            .await
            .map_err(retryable)?
            .ok_or_else(|| JobError::Fatal(format!("run {} does not exist", step.run_id)))?;
        let now = self.clock.now();
        let customer = customers::get(&self.db, step.customer_id)
            .await
            .map_err(retryable)?;
        let Some(customer) = customer.filter(|c| c.deleted_at.is_none()) else {
            // The lead was deleted (or erased) since: the run ends without scoring.
            let reason = serde_json::json!({ "skipped": "the customer was deleted" });
            let advance = Advance {
                step_id: step.step_id,
                run_id: step.run_id,
                detail: Some(reason.to_string()),
                score: None,
                next: Vec::new(),
                status: RunStatus::Completed,
                branch: None,
                effects: vec![pipeline::event(
                    step.run_id,
                    step.customer_id,
                    QUALIFY_LEAD,
                    StepStatus::Done,
                    RunStatus::Completed,
                    reason,
                )],
            };
            pipeline::advance(&self.db, advance, now)
                .await
                .map_err(retryable)?;
            return Ok(());
        };
        let pipeline = &self.pipeline;
        let result = pipeline
            .score(&self.db, &customer, now)
            .await
            .map_err(retryable)?;
        let latest = scores::latest_for_customers(&self.db, &[customer.id])
            .await
            .map_err(retryable)?
            .into_iter()
            .next();
        let score = to_record(
            pipeline,
            latest.as_ref(),
            customer.id,
            &result,
            &run.cause,
            now,
        );

        // The decision.
        let action = result.next_action;
        let unchanged = run.cause == "interaction"
            && latest
                .as_ref()
                .is_some_and(|l| l.result.next_action == action);
        let agents: &[String] = if unchanged {
            &[]
        } else {
            pipeline
                .config
                .branches
                .get(action.as_str())
                .map_or(&[], Vec::as_slice)
        };
        let decision = serde_json::json!({
            "score": result.score,
            "priority": result.priority.as_str(),
            "threshold": pipeline.config.threshold,
            "nextAction": action.as_str(),
            "branch": (!agents.is_empty()).then(|| action.as_str()),
            "reason": if unchanged {
                "the next action did not change since the last scoring"
            } else if agents.is_empty() {
                "no agents are configured for this next action"
            } else {
                "routed by the score"
            },
        });
        let mut next = vec![NewStep {
            id: StepId::new(),
            name: DECIDE.to_owned(),
            status: StepStatus::Done,
            job: None,
            detail: Some(decision.to_string()),
        }];
        let mut status = RunStatus::Completed;
        if let Some(agent) = agents.first() {
            let (step, agent_status) = pipeline.agent_step(agent, customer.id, run.id, now);
            next.push(step);
            status = agent_status;
        }
        let mut effects = vec![pipeline::event(
            run.id,
            customer.id,
            QUALIFY_LEAD,
            StepStatus::Done,
            status,
            serde_json::json!({
                "score": result.score,
                "priority": result.priority.as_str(),
                "nextAction": action.as_str(),
            }),
        )];
        if action == NextAction::Nurture && !unchanged && pipeline.config.rescore_after_days > 0 {
            effects.push(Effect::Job(rescore_job(
                customer.id,
                now + Duration::days(i64::from(pipeline.config.rescore_after_days)),
                now,
            )));
        }
        let scored = serde_json::json!({
            "score": result.score,
            "priority": result.priority.as_str(),
            "tags": result.tags,
            "nextAction": action.as_str(),
            "configVersion": pipeline.version(),
            "recorded": score.is_some(),
        });
        let advance = Advance {
            step_id: step.step_id,
            run_id: step.run_id,
            detail: Some(scored.to_string()),
            score,
            next,
            status,
            branch: (!agents.is_empty()).then(|| action.as_str().to_owned()),
            effects,
        };
        if !pipeline::advance(&self.db, advance, now)
            .await
            .map_err(retryable)?
        {
            tracing::info!(run_id = %step.run_id, step_id = %step.step_id, "Step already done; replay ignored.");
        }
        Ok(())
    }
}

/// The payload of a delayed re-scoring: the ids of the run it starts, chosen when it was
/// scheduled, so that a replayed job starts the same run once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RescorePayload {
    /// The lead.
    pub customer_id: CustomerId,
    /// The run to start.
    pub run_id: RunId,
    /// Its qualify step.
    pub step_id: StepId,
}

/// A `rescore-lead` job due at `at`.
pub fn rescore_job(customer: CustomerId, at: DateTime<Utc>, now: DateTime<Utc>) -> NewJob {
    let payload = RescorePayload {
        customer_id: customer,
        run_id: RunId::new(),
        step_id: StepId::new(),
    };
    NewJob {
        kind: RESCORE_LEAD.to_owned(),
        payload: serde_json::to_string(&payload).unwrap_or_default(),
        // One re-score per lead and day, however often it was routed to nurture that day.
        dedupe_key: Some(format!("rescore:{customer}:{}", at.format("%Y-%m-%d"))),
        priority: 0,
        run_at: at.max(now),
        max_attempts: RetryPolicy::default().max_attempts,
    }
}

/// `rescore-lead`: starts a re-scoring run for a lead (scheduled after nurture).
#[derive(Debug)]
pub struct RescoreLead {
    db: Db,
    clock: Arc<dyn Clock>,
    pipeline: Arc<Pipeline>,
}

impl RescoreLead {
    /// The handler.
    pub fn new(db: Db, clock: Arc<dyn Clock>, pipeline: Arc<Pipeline>) -> Self {
        Self {
            db,
            clock,
            pipeline,
        }
    }
}

#[async_trait]
impl JobHandler for RescoreLead {
    fn kind(&self) -> &'static str {
        RESCORE_LEAD
    }

    async fn run(&self, payload: &str) -> Result<(), JobError> {
        let rescore: RescorePayload = serde_json::from_str(payload)
            .map_err(|e| JobError::Fatal(format!("the payload does not deserialize: {e}")))?;
        let customer = customers::get(&self.db, rescore.customer_id)
            .await
            .map_err(retryable)?;
        let Some(customer) = customer.filter(|c| c.deleted_at.is_none()) else {
            return Ok(()); // Deleted since: nothing to re-score.
        };
        let now = self.clock.now();
        let run = self.pipeline.start_with_ids(
            customer.id,
            "rescore",
            rescore.run_id,
            rescore.step_id,
            now,
        );
        let event = pipeline::event(
            run.id,
            customer.id,
            QUALIFY_LEAD,
            StepStatus::Pending,
            RunStatus::Running,
            serde_json::json!({ "cause": "rescore" }),
        );
        pipeline::start(&self.db, run, vec![event], None, now)
            .await
            .map_err(retryable)?;
        Ok(())
    }
}

/// The job kind that re-scores every live lead and prospect (for `[[jobs.schedules]]`, e.g.
/// nightly): it walks the leads page by page, queueing one `rescore-lead` per lead.
pub const RESCORE_LEADS: &str = "rescore-leads";

/// Leads per page of `rescore-leads`, unless its payload says otherwise.
const RESCORE_PAGE: usize = 500;

/// The payload of `rescore-leads`: where the walk stands (`{}` starts it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RescoreLeadsPayload {
    /// The last lead of the previous page.
    pub after: Option<CustomerId>,
    /// Leads per page (default 500, at most 5000).
    pub page_size: Option<usize>,
}

/// `rescore-leads`: queues a re-scoring run for one page of leads and, if there are more, the
/// next page as its own job — so a walk over a million leads is many short, retryable jobs.
/// Each lead is re-scored at most once a day however often the walk runs.
#[derive(Debug)]
pub struct RescoreLeads {
    db: Db,
    clock: Arc<dyn Clock>,
}

impl RescoreLeads {
    /// The handler.
    pub fn new(db: Db, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }
}

#[async_trait]
impl JobHandler for RescoreLeads {
    fn kind(&self) -> &'static str {
        RESCORE_LEADS
    }

    async fn run(&self, payload: &str) -> Result<(), JobError> {
        let page: RescoreLeadsPayload = serde_json::from_str(payload)
            .map_err(|e| JobError::Fatal(format!("the payload does not deserialize: {e}")))?;
        let now = self.clock.now();
        let size = page.page_size.unwrap_or(RESCORE_PAGE).clamp(1, 5_000);
        let leads = customers::leads_after(&self.db, page.after, size)
            .await
            .map_err(retryable)?;
        let mut jobs: Vec<NewJob> = leads.iter().map(|id| rescore_job(*id, now, now)).collect();
        let more = leads.len() == size;
        if more && let Some(last) = leads.last() {
            let next = RescoreLeadsPayload {
                after: Some(*last),
                page_size: page.page_size,
            };
            jobs.push(NewJob {
                kind: RESCORE_LEADS.to_owned(),
                payload: serde_json::to_string(&next).unwrap_or_default(),
                dedupe_key: Some(format!("{RESCORE_LEADS}:{last}:{}", now.format("%Y-%m-%d"))),
                priority: -1,
                run_at: now,
                max_attempts: RetryPolicy::default().max_attempts,
            });
        }
        crm_store::jobs::enqueue_many(&self.db, &jobs, now)
            .await
            .map_err(retryable)?;
        tracing::info!(
            leads = leads.len(),
            more,
            "Queued re-scoring of a page of leads."
        );
        Ok(())
    }
}
