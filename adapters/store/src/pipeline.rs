//! Pipeline runs and their steps (DESIGN.md §4): one run per pass of a lead through the chain,
//! each step with the job that carries it out. A step's attempts and last error are its job's.
//!
//! Runs start inside the transaction of the change that caused them (see
//! [`crate::effects::Effect::StartRun`]) and advance in one transaction per step
//! ([`advance`]), whose first write claims the step: a replayed job finds its step done and
//! changes nothing.

use crate::{
    audit::{AppendAudit as _, NewAuditEntry},
    db::{Db, with_conn},
    effects::{Effect, WriteEffects as _},
    error::{StoreError, StoreResult},
    jobs::NewJob,
    rows::{DbTime, from_db_time, to_db_time},
    schema::{lead_scores, pipeline_runs, pipeline_steps},
    scores::{NewScore, ScoreRow},
};
use chrono::{DateTime, Utc};
use crm_domain::{CustomerId, CustomerScope, JobId, RunId, StepId};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use std::{fmt, str::FromStr};

macro_rules! status_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| format!("unknown {} `{s}`", stringify!($name)))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status_enum!(
    /// Where a run stands.
    RunStatus {
        /// A step is queued or running.
        Running = "running",
        /// Every step ran; the chain ended here.
        Completed = "completed",
        /// The chain reached a step whose agent this deployment does not run.
        Halted = "halted",
        /// A step's job failed its last attempt (dead letter); replaying the job resumes the run.
        Failed = "failed",
        /// A step's job was cancelled by an operator.
        Cancelled = "cancelled",
    }
);

status_enum!(
    /// Where a step stands.
    StepStatus {
        /// Its job is queued or running.
        Pending = "pending",
        /// Done.
        Done = "done",
        /// Not needed on this branch.
        Skipped = "skipped",
        /// Its agent does not exist in this deployment (yet).
        Unavailable = "unavailable",
        /// Its job is dead.
        Failed = "failed",
        /// Its job was cancelled.
        Cancelled = "cancelled",
    }
);

/// A pipeline run.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Identity.
    pub id: RunId,
    /// The lead.
    pub customer_id: CustomerId,
    /// What started it (`created`, `interaction`, `rescore`, `manual`, `import`).
    pub cause: String,
    /// Where it stands.
    pub status: RunStatus,
    /// The branch the decision took (`call`, `nurture`, …), once decided.
    pub branch: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Started.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A step of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Identity.
    pub id: StepId,
    /// The run.
    pub run_id: RunId,
    /// 0, 1, … in the order the steps were taken.
    pub position: i32,
    /// The step (`qualify-lead`, `decide`, `voice-call`, …).
    pub name: String,
    /// Where it stands.
    pub status: StepStatus,
    /// The job carrying it out, if it is one.
    pub job_id: Option<JobId>,
    /// What it produced or why it stopped (JSON).
    pub detail: Option<String>,
    /// Added to the run.
    pub created_at: DateTime<Utc>,
    /// Ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A step to add to a run; with a job, it is pending until the job finishes it.
#[derive(Debug, Clone)]
pub struct NewStep {
    /// Identity (the job's payload names it).
    pub id: StepId,
    /// The step.
    pub name: String,
    /// Its status when added.
    pub status: StepStatus,
    /// The job to enqueue for it.
    pub job: Option<NewJob>,
    /// What it produced or why it stopped (JSON).
    pub detail: Option<String>,
}

/// A run to start.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Identity.
    pub id: RunId,
    /// The lead.
    pub customer_id: CustomerId,
    /// What started it.
    pub cause: String,
    /// Its first steps.
    pub steps: Vec<NewStep>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = pipeline_runs, treat_none_as_default_value = false)]
pub(crate) struct RunRow {
    id: String,
    customer_id: String,
    cause: String,
    status: String,
    branch: Option<String>,
    error: Option<String>,
    created_at: DbTime,
    updated_at: DbTime,
    finished_at: Option<DbTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = pipeline_steps, treat_none_as_default_value = false)]
pub(crate) struct StepRow {
    id: String,
    run_id: String,
    position: i32,
    name: String,
    status: String,
    job_id: Option<String>,
    detail: Option<String>,
    created_at: DbTime,
    finished_at: Option<DbTime>,
}

fn corrupt(entity: &'static str, id: &str, reason: impl fmt::Display) -> StoreError {
    StoreError::Corrupt {
        entity,
        id: id.to_owned(),
        reason: reason.to_string(),
    }
}

impl TryFrom<RunRow> for Run {
    type Error = StoreError;

    fn try_from(row: RunRow) -> Result<Self, Self::Error> {
        Ok(Run {
            id: row.id.parse().map_err(|e| corrupt("run", &row.id, e))?,
            customer_id: row
                .customer_id
                .parse()
                .map_err(|e| corrupt("run", &row.id, e))?,
            status: row.status.parse().map_err(|e| corrupt("run", &row.id, e))?,
            cause: row.cause,
            branch: row.branch,
            error: row.error,
            created_at: from_db_time(row.created_at),
            updated_at: from_db_time(row.updated_at),
            finished_at: row.finished_at.map(from_db_time),
        })
    }
}

impl TryFrom<StepRow> for Step {
    type Error = StoreError;

    fn try_from(row: StepRow) -> Result<Self, Self::Error> {
        Ok(Step {
            id: row.id.parse().map_err(|e| corrupt("step", &row.id, e))?,
            run_id: row
                .run_id
                .parse()
                .map_err(|e| corrupt("step", &row.id, e))?,
            status: row
                .status
                .parse()
                .map_err(|e| corrupt("step", &row.id, e))?,
            job_id: row
                .job_id
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| corrupt("step", &row.id, e))?,
            position: row.position,
            name: row.name,
            detail: row.detail,
            created_at: from_db_time(row.created_at),
            finished_at: row.finished_at.map(from_db_time),
        })
    }
}

pub(crate) fn run_row(run: &NewRun, now: DateTime<Utc>) -> RunRow {
    let now = to_db_time(now);
    RunRow {
        id: run.id.to_string(),
        customer_id: run.customer_id.to_string(),
        cause: run.cause.clone(),
        status: RunStatus::Running.as_str().to_owned(),
        branch: None,
        error: None,
        created_at: DbTime(now),
        updated_at: DbTime(now),
        finished_at: None,
    }
}

pub(crate) fn step_row(
    run_id: RunId,
    position: i32,
    step: &NewStep,
    job_id: Option<JobId>,
    now: DateTime<Utc>,
) -> StepRow {
    let finished = !matches!(step.status, StepStatus::Pending);
    StepRow {
        id: step.id.to_string(),
        run_id: run_id.to_string(),
        position,
        name: step.name.clone(),
        status: step.status.as_str().to_owned(),
        job_id: job_id.map(|id| id.to_string()),
        detail: step.detail.clone(),
        created_at: DbTime(to_db_time(now)),
        finished_at: finished.then(|| DbTime(to_db_time(now))),
    }
}

/// Run rows as columns, for [`crate::bulk`].
pub(crate) fn run_columns(rows: &[RunRow]) -> crate::bulk::Columns<'_> {
    use crate::bulk::{Values as V, col};
    crate::bulk::Columns::new("pipeline_runs")
        .with("id", V::Text(col(rows, |r| r.id.as_str())))
        .with(
            "customer_id",
            V::Text(col(rows, |r| r.customer_id.as_str())),
        )
        .with("cause", V::Text(col(rows, |r| r.cause.as_str())))
        .with("status", V::Text(col(rows, |r| r.status.as_str())))
        .with("branch", V::OptText(col(rows, |r| r.branch.as_deref())))
        .with("error", V::OptText(col(rows, |r| r.error.as_deref())))
        .with("created_at", V::Time(col(rows, |r| r.created_at.0)))
        .with("updated_at", V::Time(col(rows, |r| r.updated_at.0)))
        .with(
            "finished_at",
            V::OptTime(col(rows, |r| r.finished_at.map(|t| t.0))),
        )
}

/// Step rows as columns, for [`crate::bulk`].
pub(crate) fn step_columns(rows: &[StepRow]) -> crate::bulk::Columns<'_> {
    use crate::bulk::{Values as V, col};
    crate::bulk::Columns::new("pipeline_steps")
        .with("id", V::Text(col(rows, |r| r.id.as_str())))
        .with("run_id", V::Text(col(rows, |r| r.run_id.as_str())))
        .with("position", V::Int(col(rows, |r| r.position)))
        .with("name", V::Text(col(rows, |r| r.name.as_str())))
        .with("status", V::Text(col(rows, |r| r.status.as_str())))
        .with("job_id", V::OptText(col(rows, |r| r.job_id.as_deref())))
        .with("detail", V::OptText(col(rows, |r| r.detail.as_deref())))
        .with("created_at", V::Time(col(rows, |r| r.created_at.0)))
        .with(
            "finished_at",
            V::OptTime(col(rows, |r| r.finished_at.map(|t| t.0))),
        )
}

/// How a run changes when a step finishes.
#[derive(Debug, Clone)]
pub struct Advance {
    /// The step that finished (must be pending).
    pub step_id: StepId,
    /// Its run.
    pub run_id: RunId,
    /// What it produced.
    pub detail: Option<String>,
    /// A scoring to record with it.
    pub score: Option<NewScore>,
    /// The steps that follow (appended in order; pending ones enqueue their jobs).
    pub next: Vec<NewStep>,
    /// The run's status afterwards.
    pub status: RunStatus,
    /// The run's branch afterwards (kept when `None`).
    pub branch: Option<String>,
    /// Written with it (events, further jobs such as a delayed re-score).
    pub effects: Vec<Effect>,
}

/// The event topic of pipeline runs.
pub const TOPIC: &str = "pipeline";

/// The event of a change in a run (subscribers see it if they may see the customer).
pub fn event(
    run_id: RunId,
    customer_id: CustomerId,
    step: &str,
    status: StepStatus,
    run_status: RunStatus,
    detail: serde_json::Value,
) -> Effect {
    /// The payload, with its keys in the order `json!` wrote them (sorted), so that the text
    /// is what it was; serialized without building a map (a file import writes one per lead).
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Payload<'a> {
        customer_id: &'a str,
        detail: serde_json::Value,
        run_id: String,
        run_status: &'a str,
        status: &'a str,
        step: &'a str,
    }
    let customer = customer_id.to_string();
    let payload = Payload {
        customer_id: &customer,
        detail,
        run_id: run_id.to_string(),
        run_status: run_status.as_str(),
        status: status.as_str(),
        step,
    };
    Effect::Event(crate::effects::NewEvent {
        topic: TOPIC.to_owned(),
        payload: serde_json::to_string(&payload).unwrap_or_default(),
        customer_id: Some(customer),
    })
}

/// Finishes a pending step and moves its run on, in one transaction. `Ok(false)` when the step
/// was not pending (a replayed job): then nothing is written.
pub async fn advance(db: &Db, advance: Advance, now: DateTime<Utc>) -> StoreResult<bool> {
    let step_key = advance.step_id.to_string();
    let run_key = advance.run_id.to_string();
    let at = to_db_time(now);
    let done = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            // The first write claims the step; a replay finds it done and stops here.
            let claimed = diesel::update(
                pipeline_steps::table
                    .filter(pipeline_steps::id.eq(&step_key))
                    .filter(
                        pipeline_steps::status
                            .eq_any([StepStatus::Pending.as_str(), StepStatus::Failed.as_str()]),
                    ),
            )
            .set((
                pipeline_steps::status.eq(StepStatus::Done.as_str()),
                pipeline_steps::detail.eq(&advance.detail),
                pipeline_steps::finished_at.eq(Some(at)),
            ))
            .execute(conn)
            .await?;
            if claimed == 0 {
                return Ok::<_, diesel::result::Error>(false);
            }
            if let Some(score) = &advance.score {
                diesel::insert_into(lead_scores::table)
                    .values(ScoreRow::from(score))
                    .execute(conn)
                    .await?;
            }
            let last: Option<i32> = pipeline_steps::table
                .filter(pipeline_steps::run_id.eq(&run_key))
                .select(diesel::dsl::max(pipeline_steps::position))
                .first(conn)
                .await?;
            let mut position = last.unwrap_or(-1);
            for step in &advance.next {
                position += 1;
                let job_id = match &step.job {
                    Some(job) => {
                        Some(conn.enqueue_jobs(std::slice::from_ref(job), now).await?[0].id())
                    }
                    None => None,
                };
                diesel::insert_into(pipeline_steps::table)
                    .values(step_row(advance.run_id, position, step, job_id, now))
                    .execute(conn)
                    .await?;
            }
            let finished = advance.status != RunStatus::Running;
            diesel::update(pipeline_runs::table.find(&run_key))
                .set((
                    pipeline_runs::status.eq(advance.status.as_str()),
                    pipeline_runs::error.eq(None::<String>),
                    pipeline_runs::updated_at.eq(at),
                    pipeline_runs::finished_at.eq(finished.then_some(at)),
                ))
                .execute(conn)
                .await?;
            if let Some(branch) = &advance.branch {
                diesel::update(pipeline_runs::table.find(&run_key))
                    .set(pipeline_runs::branch.eq(Some(branch)))
                    .execute(conn)
                    .await?;
            }
            conn.apply_effects(&advance.effects, now).await?;
            Ok(true)
        })
        .await?
    });
    if done {
        db.committed_all(
            &advance.effects,
            advance.next.iter().any(|s| s.job.is_some()),
        );
    }
    Ok(done)
}

/// Starts a run with `effects` (its first event), unless a run with its id exists already (a
/// replayed job that starts runs): `Ok(false)` then, and nothing is written.
pub async fn start(
    db: &Db,
    run: NewRun,
    mut effects: Vec<Effect>,
    audit: Option<NewAuditEntry>,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let row = run_row(&run, now);
    effects.retain(|e| !matches!(e, Effect::StartRun(_)));
    let started = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            let inserted = diesel::insert_into(pipeline_runs::table)
                .values(&row)
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            if inserted == 0 {
                return Ok::<_, diesel::result::Error>(false);
            }
            for (position, step) in (0..).zip(&run.steps) {
                let job_id = match &step.job {
                    Some(job) => {
                        Some(conn.enqueue_jobs(std::slice::from_ref(job), now).await?[0].id())
                    }
                    None => None,
                };
                diesel::insert_into(pipeline_steps::table)
                    .values(step_row(run.id, position, step, job_id, now))
                    .execute(conn)
                    .await?;
            }
            // Audit before effects, as every writer does: the audit chain's lock is always
            // taken before the event stream's, so two writers never wait on each other.
            if let Some(entry) = &audit {
                conn.append_audit(entry).await?;
            }
            conn.apply_effects(&effects, now).await?;
            Ok(true)
        })
        .await?
    });
    if started {
        db.committed_all(&effects, true);
    }
    Ok(started)
}

/// Which runs a list returns.
#[derive(Debug, Clone)]
pub struct RunFilter {
    /// Of this lead.
    pub customer_id: Option<CustomerId>,
    /// In this status.
    pub status: Option<RunStatus>,
    /// Of leads in the caller's row-level scope.
    pub scope: CustomerScope,
}

/// Runs newest first, `limit + 1` of them before the run `before` (to detect a next page).
pub async fn list(
    db: &Db,
    filter: &RunFilter,
    before: Option<RunId>,
    limit: usize,
) -> StoreResult<Vec<Run>> {
    use crate::schema::customers;
    let probe = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
    let rows: Vec<RunRow> = with_conn!(db, |conn| {
        let mut query = pipeline_runs::table
            .select(RunRow::as_select())
            .into_boxed();
        if let Some(customer) = filter.customer_id {
            query = query.filter(pipeline_runs::customer_id.eq(customer.to_string()));
        }
        if let Some(status) = filter.status {
            query = query.filter(pipeline_runs::status.eq(status.as_str()));
        }
        match &filter.scope {
            CustomerScope::All => {}
            CustomerScope::OwnedBy(subject) => {
                query = query.filter(
                    pipeline_runs::customer_id.eq_any(
                        customers::table
                            .filter(customers::owner.eq(subject.clone()))
                            .select(customers::id),
                    ),
                );
            }
            CustomerScope::OwnedByOrUnassigned(subject) => {
                query = query.filter(
                    pipeline_runs::customer_id.eq_any(
                        customers::table
                            .filter(
                                customers::owner
                                    .eq(subject.clone())
                                    .or(customers::owner.is_null()),
                            )
                            .select(customers::id),
                    ),
                );
            }
        }
        if let Some(before) = before {
            query = query.filter(pipeline_runs::id.lt(before.to_string()));
        }
        query
            .order_by(pipeline_runs::id.desc())
            .limit(probe)
            .load(conn)
            .await?
    });
    rows.into_iter().map(Run::try_from).collect()
}

/// The run with this id.
pub async fn get(db: &Db, id: RunId) -> StoreResult<Option<Run>> {
    let key = id.to_string();
    let row: Option<RunRow> = with_conn!(db, |conn| {
        pipeline_runs::table
            .find(&key)
            .select(RunRow::as_select())
            .first(conn)
            .await
            .optional()?
    });
    row.map(Run::try_from).transpose()
}

/// The steps of these runs, in order.
pub async fn steps_of(db: &Db, runs: &[RunId]) -> StoreResult<Vec<Step>> {
    let keys: Vec<String> = runs.iter().map(ToString::to_string).collect();
    let rows: Vec<StepRow> = with_conn!(db, |conn| {
        pipeline_steps::table
            .filter(pipeline_steps::run_id.eq_any(&keys))
            .order_by((pipeline_steps::run_id, pipeline_steps::position))
            .select(StepRow::as_select())
            .load(conn)
            .await?
    });
    rows.into_iter().map(Step::try_from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_payload_is_the_text_json_wrote() {
        let (run, customer) = (RunId::new(), CustomerId::new());
        let detail = serde_json::json!({ "cause": "import", "score": 72 });
        let Effect::Event(event) = event(
            run,
            customer,
            "qualify-lead",
            StepStatus::Pending,
            RunStatus::Running,
            detail.clone(),
        ) else {
            panic!("not an event");
        };
        let expected = serde_json::json!({
            "runId": run.to_string(),
            "customerId": customer.to_string(),
            "step": "qualify-lead",
            "status": "pending",
            "runStatus": "running",
            "detail": detail,
        })
        .to_string();
        assert_eq!(event.payload, expected);
        assert_eq!(event.customer_id, Some(customer.to_string()));
        assert_eq!(event.topic, TOPIC);
    }
}
