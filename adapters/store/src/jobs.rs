//! The durable job queue (DESIGN.md §4): jobs persisted with their payload, claimed by leasing
//! them, completed or failed by the lease holder, retried at a time the caller computes
//! (backoff with jitter is the runner's policy), dead-lettered after the last attempt, and
//! replayable.
//!
//! Claiming is the one statement that differs per backend: PostgreSQL takes rows with
//! `FOR UPDATE SKIP LOCKED`, so concurrent claimers never wait on or take each other's rows;
//! SQLite runs one writer at a time, so the same `UPDATE … WHERE id IN (SELECT … LIMIT n)
//! RETURNING` is atomic there. Times come from the caller's clock, so tests control them.

use crate::{
    audit::{AppendAudit as _, NewAuditEntry},
    db::{Backend, Db, with_conn},
    effects::WriteEffects as _,
    error::{StoreError, StoreResult},
    pipeline::{RunStatus, StepStatus},
    rows::{DbTime, from_db_time, to_db_time},
    schema::{jobs, pipeline_runs, pipeline_steps},
};
use chrono::{DateTime, NaiveDateTime, Utc};
use crm_domain::JobId;
use diesel::{
    prelude::*,
    sql_types::{BigInt, Text, Timestamp},
};
use diesel_async::{AsyncConnection, RunQueryDsl};
use std::{fmt, str::FromStr};

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Waiting for `run_at`.
    Queued,
    /// Leased by a worker.
    Running,
    /// Finished.
    Done,
    /// Failed its last attempt (dead letter); `retry` queues it again.
    Dead,
    /// Cancelled before it ran.
    Cancelled,
}

impl JobStatus {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
        }
    }
}

impl FromStr for JobStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Self::Queued,
            Self::Running,
            Self::Done,
            Self::Dead,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
        .ok_or_else(|| format!("unknown job status `{s}`"))
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Identity.
    pub id: JobId,
    /// The job type (`qualify-lead`, …).
    pub kind: String,
    /// JSON payload.
    pub payload: String,
    /// Deduplication key, if any.
    pub dedupe_key: Option<String>,
    /// Higher runs first.
    pub priority: i32,
    /// Where it stands.
    pub status: JobStatus,
    /// Not before.
    pub run_at: DateTime<Utc>,
    /// Attempts started so far.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The worker holding the lease.
    pub locked_by: Option<String>,
    /// The lease ends at.
    pub locked_until: Option<DateTime<Utc>>,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
    /// Enqueued.
    pub created_at: DateTime<Utc>,
    /// Finished (done, dead or cancelled).
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, QueryableByName)]
#[diesel(table_name = jobs, treat_none_as_default_value = false)]
pub(crate) struct JobRow {
    pub(crate) id: String,
    pub(crate) kind: String,
    pub(crate) payload: String,
    pub(crate) dedupe_key: Option<String>,
    pub(crate) priority: i32,
    pub(crate) status: String,
    pub(crate) run_at: DbTime,
    pub(crate) attempts: i32,
    pub(crate) max_attempts: i32,
    pub(crate) locked_by: Option<String>,
    pub(crate) locked_until: Option<DbTime>,
    pub(crate) last_error: Option<String>,
    pub(crate) created_at: DbTime,
    pub(crate) updated_at: DbTime,
    pub(crate) finished_at: Option<DbTime>,
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;

    fn try_from(row: JobRow) -> Result<Self, Self::Error> {
        let corrupt = |reason: String| StoreError::Corrupt {
            entity: "job",
            id: row.id.clone(),
            reason,
        };
        Ok(Job {
            id: row.id.parse().map_err(|e| corrupt(format!("id: {e}")))?,
            status: row.status.parse().map_err(corrupt)?,
            kind: row.kind,
            payload: row.payload,
            dedupe_key: row.dedupe_key,
            priority: row.priority,
            run_at: from_db_time(row.run_at),
            attempts: row.attempts,
            max_attempts: row.max_attempts,
            locked_by: row.locked_by,
            locked_until: row.locked_until.map(from_db_time),
            last_error: row.last_error,
            created_at: from_db_time(row.created_at),
            finished_at: row.finished_at.map(from_db_time),
        })
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The job type.
    pub kind: String,
    /// JSON payload.
    pub payload: String,
    /// Deduplication key: a second job with the same key is not created.
    pub dedupe_key: Option<String>,
    /// Higher runs first (default 0).
    pub priority: i32,
    /// Not before.
    pub run_at: DateTime<Utc>,
    /// Attempts allowed (at least 1).
    pub max_attempts: i32,
}

/// The result of an enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// A new job.
    Created(JobId),
    /// A job with the same dedupe key already exists.
    Duplicate(JobId),
}

impl Enqueued {
    /// The job's id, new or existing.
    pub fn id(self) -> JobId {
        match self {
            Self::Created(id) | Self::Duplicate(id) => id,
        }
    }
}

/// The PostgreSQL channel on which enqueues wake idle runners in every process.
pub const CHANNEL: &str = "crm_jobs";

/// The row of a new job.
pub(crate) fn row(id: JobId, new: &NewJob, now: DateTime<Utc>) -> JobRow {
    JobRow {
        id: id.to_string(),
        kind: new.kind.clone(),
        payload: new.payload.clone(),
        dedupe_key: new.dedupe_key.clone(),
        priority: new.priority,
        status: JobStatus::Queued.as_str().to_owned(),
        run_at: DbTime(to_db_time(new.run_at)),
        attempts: 0,
        max_attempts: new.max_attempts.max(1),
        locked_by: None,
        locked_until: None,
        last_error: None,
        created_at: DbTime(to_db_time(now)),
        updated_at: DbTime(to_db_time(now)),
        finished_at: None,
    }
}

/// Job rows as columns, for [`crate::bulk`].
pub(crate) fn columns(rows: &[JobRow]) -> crate::bulk::Columns<'_> {
    use crate::bulk::{Values as V, col};
    crate::bulk::Columns::new("jobs")
        .with("id", V::Text(col(rows, |r| r.id.as_str())))
        .with("kind", V::Text(col(rows, |r| r.kind.as_str())))
        .with("payload", V::Text(col(rows, |r| r.payload.as_str())))
        .with(
            "dedupe_key",
            V::OptText(col(rows, |r| r.dedupe_key.as_deref())),
        )
        .with("priority", V::Int(col(rows, |r| r.priority)))
        .with("status", V::Text(col(rows, |r| r.status.as_str())))
        .with("run_at", V::Time(col(rows, |r| r.run_at.0)))
        .with("attempts", V::Int(col(rows, |r| r.attempts)))
        .with("max_attempts", V::Int(col(rows, |r| r.max_attempts)))
        .with(
            "locked_by",
            V::OptText(col(rows, |r| r.locked_by.as_deref())),
        )
        .with(
            "locked_until",
            V::OptTime(col(rows, |r| r.locked_until.map(|t| t.0))),
        )
        .with(
            "last_error",
            V::OptText(col(rows, |r| r.last_error.as_deref())),
        )
        .with("created_at", V::Time(col(rows, |r| r.created_at.0)))
        .with("updated_at", V::Time(col(rows, |r| r.updated_at.0)))
        .with(
            "finished_at",
            V::OptTime(col(rows, |r| r.finished_at.map(|t| t.0))),
        )
}

/// A stored job id.
pub(crate) fn parse_id(stored: &str) -> diesel::QueryResult<JobId> {
    stored
        .parse()
        .map_err(|e: crm_domain::IdError| diesel::result::Error::DeserializationError(Box::new(e)))
}

/// Enqueues a job at `now`, and wakes runners (in this process, and through [`CHANNEL`] on
/// PostgreSQL). To enqueue together with a change, use the change's effects instead.
pub async fn enqueue(db: &Db, new: &NewJob, now: DateTime<Utc>) -> StoreResult<Enqueued> {
    let enqueued = with_conn!(db, |conn| {
        conn.enqueue_jobs(std::slice::from_ref(new), now).await?
    });
    db.committed(true, false);
    enqueued
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Unavailable("enqueue returned no job".into()))
}

/// Enqueues several jobs in one transaction (all or none), and wakes runners.
pub async fn enqueue_many(
    db: &Db,
    new: &[NewJob],
    now: DateTime<Utc>,
) -> StoreResult<Vec<Enqueued>> {
    let enqueued = with_conn!(db, |conn| {
        conn.transaction(async |conn| conn.enqueue_jobs(new, now).await)
            .await?
    });
    db.committed(true, false);
    Ok(enqueued)
}

/// Leases up to `limit` due jobs (running with an expired lease first, then queued and due,
/// highest priority first) to `worker` until `lease_until`, and counts an attempt for each.
pub async fn claim(
    db: &Db,
    worker: &str,
    limit: usize,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> StoreResult<Vec<Job>> {
    // Two statements, each served by its own index (an OR of both conditions would scan the
    // table): expired leases by `jobs_lease_idx`, due jobs in claim order by `jobs_ready_idx`.
    let mut claimed = claim_where(
        db,
        worker,
        limit,
        now,
        lease_until,
        "status = 'running' AND locked_until < {now}",
        "locked_until",
    )
    .await?;
    if claimed.len() < limit {
        let more = claim_where(
            db,
            worker,
            limit - claimed.len(),
            now,
            lease_until,
            "status = 'queued' AND run_at <= {now}",
            "priority DESC, run_at",
        )
        .await?;
        claimed.extend(more);
    }
    claimed.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.run_at.cmp(&b.run_at)));
    Ok(claimed)
}

async fn claim_where(
    db: &Db,
    worker: &str,
    limit: usize,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    condition: &str,
    order: &str,
) -> StoreResult<Vec<Job>> {
    let (p1, p2, p3, p4, p5) = match db.backend() {
        Backend::Postgres => ("$1", "$2", "$3", "$4", "$5"),
        Backend::Sqlite => ("?1", "?2", "?3", "?4", "?5"),
    };
    let lock = match db.backend() {
        Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let condition = condition.replace("{now}", p4);
    let sql = format!(
        "UPDATE jobs SET status = 'running', locked_by = {p1}, locked_until = {p2}, \
                attempts = attempts + 1, updated_at = {p3} \
         WHERE id IN (SELECT id FROM jobs WHERE {condition} ORDER BY {order} LIMIT {p5} {lock}) \
         RETURNING *"
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let (now, lease_until) = (to_db_time(now), to_db_time(lease_until));
    let rows: Vec<JobRow> = with_conn!(db, |conn| {
        diesel::sql_query(sql.clone())
            .bind::<Text, _>(worker)
            .bind::<Timestamp, _>(lease_until)
            .bind::<Timestamp, _>(now)
            .bind::<Timestamp, _>(now)
            .bind::<BigInt, _>(limit)
            .load(conn)
            .await?
    });
    rows.into_iter().map(Job::try_from).collect()
}

/// Marks a job done, if `worker` still holds its lease. False if the lease was lost (it ran out
/// and another worker took the job): the caller's result must then be discarded.
pub async fn complete(db: &Db, id: JobId, worker: &str, now: DateTime<Utc>) -> StoreResult<bool> {
    let key = id.to_string();
    let now = to_db_time(now);
    let updated = with_conn!(db, |conn| {
        diesel::update(
            jobs::table
                .filter(jobs::id.eq(&key))
                .filter(jobs::locked_by.eq(worker))
                .filter(jobs::status.eq("running")),
        )
        .set((
            jobs::status.eq(JobStatus::Done.as_str()),
            jobs::locked_by.eq(None::<String>),
            jobs::locked_until.eq(None::<NaiveDateTime>),
            jobs::updated_at.eq(now),
            jobs::finished_at.eq(Some(now)),
        ))
        .execute(conn)
        .await?
    });
    Ok(updated == 1)
}

/// Marks many jobs done in one statement (a runner's finished batch); returns the ids whose
/// lease `worker` still held — the others' results must be discarded.
pub async fn complete_many(
    db: &Db,
    ids: &[JobId],
    worker: &str,
    now: DateTime<Utc>,
) -> StoreResult<Vec<JobId>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let now = to_db_time(now);
    let done: Vec<String> = with_conn!(db, |conn| {
        diesel::update(
            jobs::table
                .filter(jobs::id.eq_any(&keys))
                .filter(jobs::locked_by.eq(worker))
                .filter(jobs::status.eq("running")),
        )
        .set((
            jobs::status.eq(JobStatus::Done.as_str()),
            jobs::locked_by.eq(None::<String>),
            jobs::locked_until.eq(None::<NaiveDateTime>),
            jobs::updated_at.eq(now),
            jobs::finished_at.eq(Some(now)),
        ))
        .returning(jobs::id)
        .get_results(conn)
        .await?
    });
    done.iter()
        .map(|id| {
            id.parse().map_err(|e| StoreError::Corrupt {
                entity: "job",
                id: id.clone(),
                reason: format!("id: {e}"),
            })
        })
        .collect()
}

/// Records a failed attempt by the lease holder: queued again at `retry_at`, or dead (dead
/// letter) when `retry_at` is `None` or the attempts are used up. A job that dies fails the
/// pipeline step it carries out, and that step's run, in the same transaction (so no run waits
/// forever on a dead job). False if the lease was lost.
pub async fn fail(
    db: &Db,
    id: JobId,
    worker: &str,
    error: &str,
    retry_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let key = id.to_string();
    let at = to_db_time(now);
    let error: String = error.chars().take(4000).collect();
    let retry_at = retry_at.map(to_db_time);
    let (updated, ended) = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            let target = jobs::table
                .filter(jobs::id.eq(&key))
                .filter(jobs::locked_by.eq(worker))
                .filter(jobs::status.eq("running"));
            let retried = match retry_at {
                Some(retry_at) => {
                    diesel::update(target.filter(jobs::attempts.lt(jobs::max_attempts)))
                        .set((
                            jobs::status.eq(JobStatus::Queued.as_str()),
                            jobs::run_at.eq(retry_at),
                            jobs::locked_by.eq(None::<String>),
                            jobs::locked_until.eq(None::<NaiveDateTime>),
                            jobs::last_error.eq(Some(error.clone())),
                            jobs::updated_at.eq(at),
                        ))
                        .execute(conn)
                        .await?
                }
                None => 0,
            };
            if retried == 1 {
                return Ok::<_, diesel::result::Error>((1, 0));
            }
            let dead = diesel::update(target)
                .set((
                    jobs::status.eq(JobStatus::Dead.as_str()),
                    jobs::locked_by.eq(None::<String>),
                    jobs::locked_until.eq(None::<NaiveDateTime>),
                    jobs::last_error.eq(Some(error.clone())),
                    jobs::updated_at.eq(at),
                    jobs::finished_at.eq(Some(at)),
                ))
                .execute(conn)
                .await?;
            let ended = if dead == 1 {
                conn.end_job_steps(&key, StepStatus::Failed, &error, now)
                    .await?
            } else {
                0
            };
            Ok((dead, ended))
        })
        .await?
    });
    if ended > 0 {
        db.committed(false, true);
    }
    Ok(updated == 1)
}

/// Queues a dead job again with fresh attempts (replay from the dead letter).
pub async fn retry(
    db: &Db,
    id: JobId,
    now: DateTime<Utc>,
    audit: Option<NewAuditEntry>,
) -> StoreResult<Job> {
    let key = id.to_string();
    let now = to_db_time(now);
    let row: Option<JobRow> = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            let row = diesel::update(
                jobs::table
                    .filter(jobs::id.eq(&key))
                    .filter(jobs::status.eq(JobStatus::Dead.as_str())),
            )
            .set((
                jobs::status.eq(JobStatus::Queued.as_str()),
                jobs::attempts.eq(0),
                jobs::run_at.eq(now),
                jobs::updated_at.eq(now),
                jobs::finished_at.eq(None::<NaiveDateTime>),
            ))
            .returning(JobRow::as_returning())
            .get_result(conn)
            .await
            .optional()?;
            if row.is_some() {
                if let Some(entry) = &audit {
                    conn.append_audit(entry).await?;
                }
                // The step this job carries out waits for it again, and so does its run.
                let runs: Vec<String> = diesel::update(
                    pipeline_steps::table
                        .filter(pipeline_steps::job_id.eq(&key))
                        .filter(pipeline_steps::status.eq(StepStatus::Failed.as_str())),
                )
                .set((
                    pipeline_steps::status.eq(StepStatus::Pending.as_str()),
                    pipeline_steps::finished_at.eq(None::<NaiveDateTime>),
                ))
                .returning(pipeline_steps::run_id)
                .get_results(conn)
                .await?;
                diesel::update(pipeline_runs::table.filter(pipeline_runs::id.eq_any(&runs)))
                    .set((
                        pipeline_runs::status.eq(RunStatus::Running.as_str()),
                        pipeline_runs::error.eq(None::<String>),
                        pipeline_runs::updated_at.eq(now),
                        pipeline_runs::finished_at.eq(None::<NaiveDateTime>),
                    ))
                    .execute(conn)
                    .await?;
            }
            Ok::<_, diesel::result::Error>(row)
        })
        .await?
    });
    row.ok_or(StoreError::NotFound {
        entity: "dead job",
        id: key,
    })?
    .try_into()
}

/// Cancels a queued job.
pub async fn cancel(
    db: &Db,
    id: JobId,
    now: DateTime<Utc>,
    audit: Option<NewAuditEntry>,
) -> StoreResult<Job> {
    let key = id.to_string();
    let at = now;
    let now = to_db_time(now);
    let row: Option<JobRow> = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            let row = diesel::update(
                jobs::table
                    .filter(jobs::id.eq(&key))
                    .filter(jobs::status.eq(JobStatus::Queued.as_str())),
            )
            .set((
                jobs::status.eq(JobStatus::Cancelled.as_str()),
                jobs::updated_at.eq(now),
                jobs::finished_at.eq(Some(now)),
            ))
            .returning(JobRow::as_returning())
            .get_result(conn)
            .await
            .optional()?;
            if row.is_some() {
                if let Some(entry) = &audit {
                    conn.append_audit(entry).await?;
                }
                conn.end_job_steps(&key, StepStatus::Cancelled, "the job was cancelled", at)
                    .await?;
            }
            Ok::<_, diesel::result::Error>(row)
        })
        .await?
    });
    db.committed(false, true);
    row.ok_or(StoreError::NotFound {
        entity: "queued job",
        id: key,
    })?
    .try_into()
}

/// Jobs newest first (ids are time-ordered), optionally of one status and kind, `limit + 1` of
/// them after the cursor id `before` (to detect a next page).
pub async fn list(
    db: &Db,
    status: Option<JobStatus>,
    kind: Option<&str>,
    before: Option<JobId>,
    limit: usize,
) -> StoreResult<Vec<Job>> {
    let probe = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
    let rows: Vec<JobRow> = with_conn!(db, |conn| {
        let mut query = jobs::table.select(JobRow::as_select()).into_boxed();
        if let Some(status) = status {
            query = query.filter(jobs::status.eq(status.as_str()));
        }
        if let Some(kind) = kind {
            query = query.filter(jobs::kind.eq(kind.to_owned()));
        }
        if let Some(before) = before {
            query = query.filter(jobs::id.lt(before.to_string()));
        }
        query
            .order_by(jobs::id.desc())
            .limit(probe)
            .load(conn)
            .await?
    });
    rows.into_iter().map(Job::try_from).collect()
}

/// The job with this id.
pub async fn get(db: &Db, id: JobId) -> StoreResult<Option<Job>> {
    let key = id.to_string();
    let row: Option<JobRow> = with_conn!(db, |conn| {
        jobs::table
            .find(&key)
            .select(JobRow::as_select())
            .first(conn)
            .await
            .optional()?
    });
    row.map(Job::try_from).transpose()
}

/// The jobs with these ids (missing ones are left out).
pub async fn by_ids(db: &Db, ids: &[JobId]) -> StoreResult<Vec<Job>> {
    let keys: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let rows: Vec<JobRow> = with_conn!(db, |conn| {
        jobs::table
            .filter(jobs::id.eq_any(&keys))
            .select(JobRow::as_select())
            .load(conn)
            .await?
    });
    rows.into_iter().map(Job::try_from).collect()
}
