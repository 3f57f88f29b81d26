//! Effects: what a change brings along — jobs to run and events to publish — written in the
//! same transaction as the change, so that the change and its consequences commit or roll back
//! together (a lead is never stored without its pipeline job, a job never runs for a change that
//! rolled back). Enqueued jobs wake runners after the commit: in-process runners through
//! [`local_wake`], other processes through a PostgreSQL `NOTIFY` sent by [`Notifier`] outside the
//! writers' transactions (a notifying transaction would take a global lock at commit).

use crate::{
    inbox::InboxStatus,
    jobs::{self, Enqueued, NewJob},
    pipeline::{self, NewRun, RunStatus, StepStatus},
    rows::to_db_time,
    schema::{events, inbox, jobs as jobs_table, pipeline_runs, pipeline_steps},
};
use chrono::{DateTime, Utc};
use crm_domain::JobId;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::future::BoxFuture;
use std::sync::LazyLock;
use tokio::sync::Notify;

/// An event for subscribers (persisted, numbered in commit order).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The stream (`pipeline`, `calls`, …).
    pub topic: String,
    /// The customer it concerns, if any (subscribers see only customers in their scope).
    pub customer_id: Option<String>,
    /// JSON.
    pub payload: String,
}

/// One effect of a change.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Enqueue a job.
    Job(NewJob),
    /// Publish an event.
    Event(NewEvent),
    /// Start a pipeline run (its first steps' jobs are enqueued with it).
    StartRun(NewRun),
    /// Write a consent ledger entry (beside the customer write that set the flags).
    Consent(crate::gdpr::NewConsent),
    /// Finish an inbox entry with its result (JSON), if it is still waiting.
    FinishInbox {
        /// The entry.
        id: String,
        /// Processed or failed.
        status: InboxStatus,
        /// What became of it.
        result: String,
    },
}

/// Serializes event writers on PostgreSQL until their transaction ends, so that sequence
/// numbers become visible in order (a reader never skips a smaller seq that commits later).
/// A transaction that also appends to the audit log must append first (lock order: audit, then
/// events), or two writers could deadlock.
pub(crate) const EVENT_LOCK: i64 = 0x6372_6d5f_6576; // "crm_ev"

/// The in-process wake-up of job runners (SQLite has no NOTIFY; on PostgreSQL it saves the
/// round trip for a runner in the same process).
pub fn local_wake() -> &'static Notify {
    static WAKE: LazyLock<Notify> = LazyLock::new(Notify::new);
    &WAKE
}

/// The in-process wake-up of event readers.
pub fn event_wake() -> &'static Notify {
    static WAKE: LazyLock<Notify> = LazyLock::new(Notify::new);
    &WAKE
}

/// Writes effects inside a transaction the caller runs. Implemented for both backends'
/// connections, so one query body can call it in either arm of `with_conn!`.
pub(crate) trait WriteEffects {
    /// Enqueues jobs (a dedupe key already taken yields the existing job).
    fn enqueue_jobs<'a>(
        &'a mut self,
        jobs: &'a [NewJob],
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, QueryResult<Vec<Enqueued>>>;

    /// Writes every effect, in order.
    fn apply_effects<'a>(
        &'a mut self,
        effects: &'a [Effect],
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, QueryResult<()>>;

    /// Ends the pending steps carried out by the job `job_id`, which died or was cancelled
    /// (`status`: failed or cancelled), and their runs with `error`, with an event each.
    /// Returns how many steps it ended.
    fn end_job_steps<'a>(
        &'a mut self,
        job_id: &'a str,
        status: StepStatus,
        error: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, QueryResult<usize>>;

    /// Finishes an inbox entry that is waiting (or failed, and is processed again); false if it
    /// was processed already.
    fn finish_inbox<'a>(
        &'a mut self,
        id: &'a str,
        status: InboxStatus,
        result: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, QueryResult<bool>>;

    /// Appends events.
    fn emit_events<'a>(
        &'a mut self,
        events: &'a [NewEvent],
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, QueryResult<()>>;
}

macro_rules! write_effects {
    ($conn:ty, $postgres:expr) => {
        impl WriteEffects for $conn {
            fn enqueue_jobs<'a>(
                &'a mut self,
                new_jobs: &'a [NewJob],
                now: DateTime<Utc>,
            ) -> BoxFuture<'a, QueryResult<Vec<Enqueued>>> {
                Box::pin(async move {
                    let mut enqueued = Vec::with_capacity(new_jobs.len());
                    for new in new_jobs {
                        let id = JobId::new();
                        let inserted = diesel::insert_into(jobs_table::table)
                            .values(&jobs::row(id, new, now))
                            .on_conflict_do_nothing()
                            .execute(&mut *self)
                            .await?;
                        if inserted == 1 {
                            enqueued.push(Enqueued::Created(id));
                        } else {
                            let key = new.dedupe_key.clone().unwrap_or_default();
                            let existing: String = jobs_table::table
                                .filter(jobs_table::dedupe_key.eq(&key))
                                .select(jobs_table::id)
                                .first(&mut *self)
                                .await?;
                            enqueued.push(Enqueued::Duplicate(jobs::parse_id(&existing)?));
                        }
                    }
                    Ok(enqueued)
                })
            }

            fn apply_effects<'a>(
                &'a mut self,
                effects: &'a [Effect],
                now: DateTime<Utc>,
            ) -> BoxFuture<'a, QueryResult<()>> {
                Box::pin(async move {
                    for effect in effects {
                        match effect {
                            Effect::Job(job) => {
                                self.enqueue_jobs(std::slice::from_ref(job), now).await?;
                            }
                            Effect::Event(event) => {
                                self.emit_events(std::slice::from_ref(event), now).await?;
                            }
                            Effect::FinishInbox { id, status, result } => {
                                self.finish_inbox(id, *status, result, now).await?;
                            }
                            Effect::Consent(consent) => {
                                diesel::insert_into(crate::schema::consents::table)
                                    .values(crate::gdpr::consent_row(consent, now))
                                    .execute(&mut *self)
                                    .await?;
                            }
                            Effect::StartRun(run) => {
                                diesel::insert_into(pipeline_runs::table)
                                    .values(pipeline::run_row(run, now))
                                    .execute(&mut *self)
                                    .await?;
                                for (position, step) in (0..).zip(&run.steps) {
                                    let job_id = match &step.job {
                                        Some(job) => Some(
                                            self.enqueue_jobs(std::slice::from_ref(job), now)
                                                .await?[0]
                                                .id(),
                                        ),
                                        None => None,
                                    };
                                    diesel::insert_into(pipeline_steps::table)
                                        .values(pipeline::step_row(
                                            run.id, position, step, job_id, now,
                                        ))
                                        .execute(&mut *self)
                                        .await?;
                                }
                            }
                        }
                    }
                    Ok(())
                })
            }

            fn end_job_steps<'a>(
                &'a mut self,
                job_id: &'a str,
                status: StepStatus,
                error: &'a str,
                now: DateTime<Utc>,
            ) -> BoxFuture<'a, QueryResult<usize>> {
                Box::pin(async move {
                    let at = to_db_time(now);
                    let ended: Vec<(String, String)> = diesel::update(
                        pipeline_steps::table
                            .filter(pipeline_steps::job_id.eq(job_id))
                            .filter(pipeline_steps::status.eq(StepStatus::Pending.as_str())),
                    )
                    .set((
                        pipeline_steps::status.eq(status.as_str()),
                        pipeline_steps::finished_at.eq(Some(at)),
                    ))
                    .returning((pipeline_steps::run_id, pipeline_steps::name))
                    .get_results(&mut *self)
                    .await?;
                    let run_status = match status {
                        StepStatus::Cancelled => RunStatus::Cancelled,
                        _ => RunStatus::Failed,
                    };
                    for (run_id, step) in &ended {
                        let customer: String = diesel::update(pipeline_runs::table.find(run_id))
                            .set((
                                pipeline_runs::status.eq(run_status.as_str()),
                                pipeline_runs::error.eq(Some(error)),
                                pipeline_runs::updated_at.eq(at),
                                pipeline_runs::finished_at.eq(Some(at)),
                            ))
                            .returning(pipeline_runs::customer_id)
                            .get_result(&mut *self)
                            .await?;
                        let (Ok(run), Ok(customer)) = (run_id.parse(), customer.parse()) else {
                            continue;
                        };
                        let event = pipeline::event(
                            run,
                            customer,
                            step,
                            status,
                            run_status,
                            serde_json::json!({ "error": error }),
                        );
                        self.apply_effects(std::slice::from_ref(&event), now).await?;
                    }
                    Ok(ended.len())
                })
            }

            fn finish_inbox<'a>(
                &'a mut self,
                id: &'a str,
                status: InboxStatus,
                result: &'a str,
                now: DateTime<Utc>,
            ) -> BoxFuture<'a, QueryResult<bool>> {
                Box::pin(async move {
                    let updated = diesel::update(
                        inbox::table
                            .filter(inbox::id.eq(id))
                            .filter(inbox::status.ne(InboxStatus::Processed.as_str())),
                    )
                    .set((
                        inbox::status.eq(status.as_str()),
                        inbox::result.eq(Some(result)),
                        inbox::processed_at.eq(Some(to_db_time(now))),
                    ))
                    .execute(&mut *self)
                    .await?;
                    Ok(updated == 1)
                })
            }

            fn emit_events<'a>(
                &'a mut self,
                new_events: &'a [NewEvent],
                now: DateTime<Utc>,
            ) -> BoxFuture<'a, QueryResult<()>> {
                Box::pin(async move {
                    if new_events.is_empty() {
                        return Ok(());
                    }
                    if $postgres {
                        diesel::sql_query(format!("SELECT pg_advisory_xact_lock({EVENT_LOCK})"))
                            .execute(&mut *self)
                            .await?;
                    }
                    let at = to_db_time(now);
                    let rows: Vec<_> = new_events
                        .iter()
                        .map(|e| {
                            (
                                events::topic.eq(&e.topic),
                                events::customer_id.eq(&e.customer_id),
                                events::payload.eq(&e.payload),
                                events::created_at.eq(at),
                            )
                        })
                        .collect();
                    for row in rows {
                        diesel::insert_into(events::table)
                            .values(row)
                            .execute(&mut *self)
                            .await?;
                    }
                    Ok(())
                })
            }
        }
    };
}

/// The PostgreSQL channel on which event writers wake readers in every process.
pub const EVENT_CHANNEL: &str = "crm_events";

write_effects!(diesel_async::AsyncPgConnection, true);
write_effects!(crate::db::SqliteConn, false);

impl crate::Db {
    /// Wakes runners and event readers — in this process at once, in others through a
    /// coalesced PostgreSQL `NOTIFY` sent after the commit — once a transaction with `effects`
    /// (and, if `more_jobs`, other enqueues) committed.
    pub(crate) fn committed_all(&self, effects: &[Effect], more_jobs: bool) {
        let jobs = more_jobs
            || effects
                .iter()
                .any(|e| matches!(e, Effect::Job(_) | Effect::StartRun(_)));
        let events = effects.iter().any(|e| matches!(e, Effect::Event(_)));
        self.committed(jobs, events);
    }

    /// Like [`crate::Db::committed_all`], for jobs and events written otherwise.
    pub(crate) fn committed(&self, jobs: bool, events: bool) {
        if jobs {
            // Wake every idle runner, and leave a permit for one that is just about to wait.
            local_wake().notify_waiters();
            local_wake().notify_one();
        }
        if events {
            event_wake().notify_waiters();
        }
        if let Some(notifier) = self.notifier() {
            notifier.request(jobs, events);
        }
    }
}

/// Sends `NOTIFY` for the job and event channels on PostgreSQL after commits, outside the
/// writers' transactions: a transaction that notifies takes a global lock at commit, which
/// would serialize every enqueue. Requests within a few milliseconds share one `NOTIFY`.
pub(crate) struct Notifier {
    jobs: std::sync::atomic::AtomicBool,
    events: std::sync::atomic::AtomicBool,
    closed: std::sync::atomic::AtomicBool,
    wake: Notify,
}

impl Notifier {
    /// Starts the sender over `pool`; it ends when [`Notifier::close`] is called.
    pub(crate) fn spawn(
        pool: deadpool::managed::Pool<
            diesel_async::pooled_connection::AsyncDieselConnectionManager<
                diesel_async::AsyncPgConnection,
            >,
        >,
    ) -> std::sync::Arc<Self> {
        use std::sync::atomic::Ordering::SeqCst;
        let notifier = std::sync::Arc::new(Self {
            jobs: false.into(),
            events: false.into(),
            closed: false.into(),
            wake: Notify::new(),
        });
        let this = notifier.clone();
        tokio::spawn(async move {
            loop {
                this.wake.notified().await;
                if std::sync::atomic::AtomicBool::load(&this.closed, SeqCst) {
                    return;
                }
                // Let the requests of concurrent commits gather.
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                let mut sql = String::new();
                if this.jobs.swap(false, SeqCst) {
                    sql.push_str(&format!("NOTIFY {};", jobs::CHANNEL));
                }
                if this.events.swap(false, SeqCst) {
                    sql.push_str(&format!("NOTIFY {EVENT_CHANNEL};"));
                }
                if sql.is_empty() {
                    continue;
                }
                let sent = match pool.get().await {
                    Ok(mut conn) => {
                        diesel_async::SimpleAsyncConnection::batch_execute(&mut *conn, &sql)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                };
                if let Err(error) = sent {
                    // Listeners in other processes fall back to polling.
                    tracing::warn!(%error, "Cannot send NOTIFY; other processes will poll.");
                }
            }
        });
        notifier
    }

    fn request(&self, jobs: bool, events: bool) {
        use std::sync::atomic::Ordering::SeqCst;
        if jobs {
            self.jobs.store(true, SeqCst);
        }
        if events {
            self.events.store(true, SeqCst);
        }
        self.wake.notify_one();
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its place in the stream: increasing in commit order.
    pub seq: i64,
    /// The stream.
    pub topic: String,
    /// The customer it concerns.
    pub customer_id: Option<String>,
    /// JSON.
    pub payload: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

type EventRow = (i64, String, Option<String>, String, chrono::NaiveDateTime);

/// Up to `limit` events after `after_seq`, oldest first (every topic, or one).
pub async fn events_after(
    db: &crate::Db,
    topic: Option<&str>,
    after_seq: i64,
    limit: usize,
) -> crate::StoreResult<Vec<Event>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows: Vec<EventRow> = crate::db::with_conn!(db, |conn| {
        let mut query = events::table.filter(events::seq.gt(after_seq)).into_boxed();
        if let Some(topic) = topic {
            query = query.filter(events::topic.eq(topic.to_owned()));
        }
        query
            .order_by(events::seq)
            .limit(limit)
            .select((
                events::seq,
                events::topic,
                events::customer_id,
                events::payload,
                events::created_at,
            ))
            .load(conn)
            .await?
    });
    Ok(rows
        .into_iter()
        .map(|(seq, topic, customer_id, payload, at)| Event {
            seq,
            topic,
            customer_id,
            payload,
            created_at: crate::rows::from_db_time(at),
        })
        .collect())
}

/// The newest event's seq (0 when there is none).
pub async fn head(db: &crate::Db) -> crate::StoreResult<i64> {
    let head: Option<i64> = crate::db::with_conn!(db, |conn| {
        events::table
            .select(diesel::dsl::max(events::seq))
            .first(conn)
            .await?
    });
    Ok(head.unwrap_or(0))
}
