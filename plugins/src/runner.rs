//! The job runner: claims due jobs with a lease, runs their handlers concurrently, and records
//! the outcome — done, retried after an exponential backoff with jitter, or dead-lettered after
//! the last attempt (or at once for a job that can never succeed: unknown kind, bad payload).
//!
//! [`Runner::run_once`] processes one batch and returns; tests drain the queue with it, with a
//! controlled clock and no sleeps. [`Runner::run_until`] loops until shutdown, waking on
//! [`Runner::wake`] (in-process enqueue) or after the poll interval; on shutdown it stops
//! claiming and lets the jobs it holds finish.

use async_trait::async_trait;
use chrono::Duration;
use crm_domain::Clock;
use crm_store::{Db, StoreResult, jobs};
use futures_util::future::join_all;
use std::{collections::HashMap, fmt, future::Future, sync::Arc};
use tokio::sync::Notify;

/// Why a job run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// Worth another attempt (a provider timed out, the database was busy).
    Retryable(String),
    /// Will fail the same way every time (bad payload, a rule refuses): dead letter at once.
    Fatal(String),
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Retryable(reason) => write!(f, "{reason}"),
            Self::Fatal(reason) => write!(f, "fatal: {reason}"),
        }
    }
}

/// When to retry a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Delay after the first failure.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Each delay is drawn from ±this fraction around the exponential value (0.2 = ±20 %), so
    /// jobs that failed together do not retry together.
    pub jitter: f64,
    /// Attempts in all, the first included.
    pub max_attempts: i32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::seconds(10),
            max: Duration::hours(1),
            jitter: 0.2,
            max_attempts: 5,
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1`, after `attempt` failures (`unit` in `[0, 1)`
    /// picks the point in the jitter band; 0.5 is the middle).
    pub fn delay(&self, attempt: i32, unit: f64) -> Duration {
        let exponent = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let raw = self
            .base
            .num_milliseconds()
            .saturating_mul(1_i64 << exponent);
        let capped = raw.min(self.max.num_milliseconds()) as f64;
        let factor = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::milliseconds((capped * factor).round() as i64)
    }
}

/// The code of one job kind.
#[async_trait]
pub trait JobHandler: Send + Sync {
    /// The stable kind this handler runs (`qualify-lead`).
    fn kind(&self) -> &'static str;

    /// How failures are retried.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    /// Runs one job. Must be idempotent: after a lost lease the job runs again.
    async fn run(&self, payload: &str) -> Result<(), JobError>;

    /// Called after the job went to the dead letter, to record the failure where users look
    /// (an import's status, an inbox entry). Best effort: pipeline steps are failed by the
    /// store in the dead letter's own transaction instead.
    async fn dead(&self, _payload: &str, _error: &str) {}
}

/// Every job kind the runner knows, by kind.
#[derive(Default, Clone)]
pub struct Registry {
    handlers: HashMap<&'static str, Arc<dyn JobHandler>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// Adds a handler; a second handler for the same kind replaces the first.
    #[must_use]
    pub fn with(mut self, handler: Arc<dyn JobHandler>) -> Self {
        self.handlers.insert(handler.kind(), handler);
        self
    }

    /// The kinds registered.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds: Vec<_> = self.handlers.keys().copied().collect();
        kinds.sort_unstable();
        kinds
    }
}

/// How a runner works.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// Names this runner's leases (host and process, for operators).
    pub worker_id: String,
    /// Jobs run at once.
    pub concurrency: usize,
    /// How long a claimed job is leased; a job that runs longer may run twice.
    pub lease: Duration,
    /// How often an idle runner looks for due jobs without being woken.
    pub poll_interval: std::time::Duration,
}

/// Claims and runs jobs.
#[derive(Clone)]
pub struct Runner {
    db: Db,
    registry: Registry,
    clock: Arc<dyn Clock>,
    options: RunnerOptions,
    wake: Arc<Notify>,
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field("options", &self.options)
            .field("registry", &self.registry)
            .finish()
    }
}

fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1_u64 << 53) as f64
}

impl Runner {
    /// Builds a runner.
    pub fn new(db: Db, registry: Registry, clock: Arc<dyn Clock>, options: RunnerOptions) -> Self {
        Self {
            db,
            registry,
            clock,
            options,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Wakes an idle runner (call after enqueueing in this process).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Claims one batch of due jobs, runs them concurrently, records each outcome, and returns
    /// how many it ran.
    pub async fn run_once(&self) -> StoreResult<usize> {
        let now = self.clock.now();
        let claimed = jobs::claim(
            &self.db,
            &self.options.worker_id,
            self.options.concurrency.max(1),
            now,
            now + self.options.lease,
        )
        .await?;
        let count = claimed.len();
        let outcomes = join_all(claimed.into_iter().map(|job| self.run_job(job))).await;
        // Successes are recorded together, in one statement; failures were recorded one by one.
        let mut succeeded = Vec::new();
        for outcome in outcomes {
            if let Some(id) = outcome? {
                succeeded.push(id);
            }
        }
        let now = self.clock.now();
        let recorded =
            jobs::complete_many(&self.db, &succeeded, &self.options.worker_id, now).await?;
        if recorded.len() < succeeded.len() {
            tracing::warn!(
                lost = succeeded.len() - recorded.len(),
                "Leases lost before jobs finished; their results are dropped."
            );
        }
        Ok(count)
    }

    /// Runs one job; returns its id if it succeeded (to be completed with its batch).
    async fn run_job(&self, job: jobs::Job) -> StoreResult<Option<crm_domain::JobId>> {
        let worker = self.options.worker_id.as_str();
        let Some(handler) = self.registry.handlers.get(job.kind.as_str()).cloned() else {
            tracing::error!(job_id = %job.id, kind = %job.kind, "Unknown job kind: dead letter.");
            let reason = format!("unknown job kind `{}`", job.kind);
            jobs::fail(&self.db, job.id, worker, &reason, None, self.clock.now()).await?;
            return Ok(None);
        };
        // Run on its own task, so that a panicking handler fails its job, not the runner.
        let payload = job.payload.clone();
        let task = tokio::spawn({
            let handler = handler.clone();
            async move { handler.run(&payload).await }
        });
        let result = match task.await {
            Ok(result) => result,
            Err(join) => Err(JobError::Retryable(format!("the handler panicked: {join}"))),
        };
        let now = self.clock.now();
        let (error, retry_at) = match result {
            Ok(()) => return Ok(Some(job.id)),
            Err(JobError::Fatal(reason)) => (reason, None),
            Err(JobError::Retryable(reason)) => {
                let policy = handler.retry_policy();
                let retry_at = (job.attempts < policy.max_attempts.min(job.max_attempts))
                    .then(|| now + policy.delay(job.attempts, random_unit()));
                (reason, retry_at)
            }
        };
        if jobs::fail(&self.db, job.id, worker, &error, retry_at, now).await? {
            tracing::warn!(job_id = %job.id, kind = %job.kind, attempt = job.attempts, %error, dead = retry_at.is_none(), "Job failed.");
            if retry_at.is_none() {
                handler.dead(&job.payload, &error).await;
            }
        } else {
            tracing::warn!(job_id = %job.id, kind = %job.kind, "Lease lost before the job failed; its outcome is dropped.");
        }
        Ok(None)
    }

    /// Runs batches until `shutdown` resolves; then finishes the batch in hand and returns.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        tracing::info!(worker = %self.options.worker_id, kinds = ?self.registry.kinds(), "Job runner started.");
        // Enqueues in other processes wake this runner through PostgreSQL NOTIFY.
        let listener = {
            let (db, wake) = (self.db.clone(), self.wake.clone());
            tokio::spawn(async move {
                loop {
                    if let Err(error) = db.listen(jobs::CHANNEL, || wake.notify_one()).await {
                        tracing::warn!(%error, "Job notifications lost; polling until reconnected.");
                    } else {
                        break; // This backend has no notifications.
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            })
        };
        loop {
            let ran = match self.run_once().await {
                Ok(ran) => ran,
                Err(error) => {
                    tracing::error!(%error, "Job runner could not claim jobs.");
                    0
                }
            };
            if ran > 0 {
                continue;
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = self.wake.notified() => {},
                () = crm_store::effects::local_wake().notified() => {},
                () = tokio::time::sleep(self.options.poll_interval) => {},
            }
        }
        listener.abort();
        tracing::info!(worker = %self.options.worker_id, "Job runner stopped.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(1, 0.5), Duration::seconds(10));
        assert_eq!(policy.delay(2, 0.5), Duration::seconds(20));
        assert_eq!(policy.delay(4, 0.5), Duration::seconds(80));
        assert_eq!(policy.delay(30, 0.5), Duration::hours(1), "capped");
        assert_eq!(policy.delay(1, 0.0), Duration::seconds(8), "-20 %");
        assert_eq!(policy.delay(1, 1.0), Duration::seconds(12), "+20 %");
        let unit = random_unit();
        assert!((0.0..1.0).contains(&unit));
    }
}
