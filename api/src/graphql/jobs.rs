//! The job queue over GraphQL: what is queued, running, dead; replay and cancel (operators).

use super::{
    ApiContext,
    customers::parse_id,
    pagination::{PageInfo, first_or_default},
};
use crate::{
    audit::Auditor,
    error::{ApiError, invalid},
};
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use crm_domain::JobId;
use crm_store::{Page, jobs};

/// Where a job stands.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "crm_store::jobs::JobStatus")]
pub(crate) enum JobStatus {
    /// Waiting for its time.
    Queued,
    /// Leased by a worker.
    Running,
    /// Finished.
    Done,
    /// Failed its last attempt (dead letter); `retryJob` queues it again.
    Dead,
    /// Cancelled before it ran.
    Cancelled,
}

/// A job of the durable queue.
#[derive(Debug)]
pub(crate) struct JobNode(jobs::Job);

#[Object(name = "Job")]
impl JobNode {
    /// Identity.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The agent that runs it (`qualify-lead`, …).
    async fn kind(&self) -> &str {
        &self.0.kind
    }
    /// Where it stands.
    async fn status(&self) -> JobStatus {
        self.0.status.into()
    }
    /// Higher runs first.
    async fn priority(&self) -> i32 {
        self.0.priority
    }
    /// Not before.
    async fn run_at(&self) -> DateTime<Utc> {
        self.0.run_at
    }
    /// Attempts started.
    async fn attempts(&self) -> i32 {
        self.0.attempts
    }
    /// Attempts allowed.
    async fn max_attempts(&self) -> i32 {
        self.0.max_attempts
    }
    /// The error of the last failed attempt.
    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }
    /// Deduplication key.
    async fn dedupe_key(&self) -> Option<&str> {
        self.0.dedupe_key.as_deref()
    }
    /// Enqueued.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// Finished.
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
}

/// A page of jobs, newest first.
#[derive(SimpleObject, Debug)]
pub(crate) struct JobConnection {
    /// The jobs.
    nodes: Vec<JobNode>,
    /// Paging.
    page_info: PageInfo,
}

async fn page(
    ctx: &Context<'_>,
    status: Option<JobStatus>,
    kind: Option<String>,
    first: Option<i32>,
    after: Option<String>,
) -> async_graphql::Result<JobConnection> {
    let api = ctx.data::<ApiContext>()?;
    let limit = first_or_default(first, api.pages)?;
    let before = after
        .map(|raw| {
            raw.parse::<JobId>()
                .map_err(|_| invalid("after", "invalid_cursor", "after: not a cursor of jobs"))
        })
        .transpose()?;
    let rows = jobs::list(
        &api.db,
        status.map(Into::into),
        kind.as_deref(),
        before,
        limit,
    )
    .await
    .map_err(ApiError::from)?;
    let items: Vec<(String, jobs::Job)> = rows.into_iter().map(|j| (j.id.to_string(), j)).collect();
    let page = Page::forward(items, limit, before.is_some());
    let page_info = PageInfo::of(&page);
    Ok(JobConnection {
        nodes: page.items.into_iter().map(|(_, j)| JobNode(j)).collect(),
        page_info,
    })
}

/// Which jobs to list. All given conditions must hold.
#[derive(InputObject, Default, Debug)]
pub(crate) struct JobFilter {
    /// In this status.
    status: Option<JobStatus>,
    /// Of this kind (`qualify-lead`, …).
    kind: Option<String>,
}

/// Job queries.
#[derive(Default, Debug)]
pub(crate) struct JobQuery;

#[Object]
impl JobQuery {
    /// Jobs, newest first, by status and kind.
    #[graphql(
        complexity = "usize::try_from(first.unwrap_or(20)).unwrap_or(1).clamp(1, 1000).saturating_mul(child_complexity)"
    )]
    async fn jobs(
        &self,
        ctx: &Context<'_>,
        filter: Option<JobFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<JobConnection> {
        let filter = filter.unwrap_or_default();
        page(ctx, filter.status, filter.kind, first, after).await
    }

    /// The dead letter: jobs that failed their last attempt, newest first.
    #[graphql(
        complexity = "usize::try_from(first.unwrap_or(20)).unwrap_or(1).clamp(1, 1000).saturating_mul(child_complexity)"
    )]
    async fn dead_jobs(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<JobConnection> {
        page(ctx, Some(JobStatus::Dead), None, first, after).await
    }
}

/// Job mutations.
#[derive(Default, Debug)]
pub(crate) struct JobMutation;

#[Object]
impl JobMutation {
    /// Queues a dead job again with fresh attempts. `NOT_FOUND` unless the job is dead.
    async fn retry_job(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<JobNode> {
        let api = ctx.data::<ApiContext>()?;
        let id: JobId = parse_id("id", &id)?;
        let entry =
            Auditor::of(ctx)?.entry("job.retry", "job", id.to_string(), serde_json::Map::new());
        let job = jobs::retry(&api.db, id, api.clock.now(), Some(entry))
            .await
            .map_err(ApiError::from)?;
        Ok(JobNode(job))
    }

    /// Cancels a queued job. `NOT_FOUND` unless the job is queued.
    async fn cancel_job(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<JobNode> {
        let api = ctx.data::<ApiContext>()?;
        let id: JobId = parse_id("id", &id)?;
        let entry =
            Auditor::of(ctx)?.entry("job.cancel", "job", id.to_string(), serde_json::Map::new());
        let job = jobs::cancel(&api.db, id, api.clock.now(), Some(entry))
            .await
            .map_err(ApiError::from)?;
        Ok(JobNode(job))
    }
}
