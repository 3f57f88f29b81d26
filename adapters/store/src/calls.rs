//! Voice calls: the call queue, call records, transcript segments, ingest of provider events,
//! and the do-not-call list.
//!
//! - A call is one attempt; its queue entry is named by its first attempt (`first_call_id`).
//! - [`enqueue`] stores a queued call with its `voice-dial` job (and audit entry, and event) in
//!   one transaction.
//! - [`ingest`] applies one provider event to a call in one transaction: a delivery seen
//!   before changes nothing; the status only moves forward; new transcript segments get the
//!   next sequence numbers; every change is published as an event (topics [`TOPIC`] and
//!   [`TRANSCRIPT_TOPIC`]); and when the call ends, the caller's plan for the end (interaction,
//!   retry, follow-up job) commits with it.

use crate::{
    Db, StoreError, StoreResult,
    audit::{AppendAudit, NewAuditEntry},
    db::with_conn,
    effects::{Effect, NewEvent, WriteEffects},
    jobs::NewJob,
    rows::{InteractionRow, from_db_time, to_db_time},
    schema::{call_deliveries, call_segments, calls, customers, do_not_call, interactions},
};
use chrono::{DateTime, NaiveDateTime, Utc};
use crm_domain::{
    CallId, CallStatus, CallUpdate, CustomerId, CustomerScope, Disposition, Interaction, RunId,
    SpeakerRole, StepId,
};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use sha2::{Digest as _, Sha256};

/// The event topic of call status changes.
pub const TOPIC: &str = "calls";
/// The event topic of transcript segments.
pub const TRANSCRIPT_TOPIC: &str = "transcripts";
/// Longest segment text stored (characters).
pub const SEGMENT_MAX_CHARS: usize = 10_000;
/// Most segments stored per call (an enormous transcript keeps its first segments and the
/// full text, up to [`TRANSCRIPT_MAX_CHARS`]).
pub const MAX_SEGMENTS: i64 = 5_000;
/// Longest full transcript stored (characters).
pub const TRANSCRIPT_MAX_CHARS: usize = 200_000;

/// A stored call attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Identity.
    pub id: CallId,
    /// The customer called.
    pub customer_id: CustomerId,
    /// The queue entry: the first attempt's id.
    pub first_call_id: CallId,
    /// 1, 2, … of the queue entry.
    pub attempt: i32,
    /// Our voice agent.
    pub agent: String,
    /// The provider kind.
    pub provider: String,
    /// The provider's id, once dialled.
    pub provider_call_id: Option<String>,
    /// The number, E.164.
    pub to_number: String,
    /// The language of the agent.
    pub language: String,
    /// Where it is.
    pub status: CallStatus,
    /// How it ended.
    pub disposition: Option<Disposition>,
    /// The business outcome (`appointment`, `interested`, …).
    pub outcome: Option<String>,
    /// The provider's reason for the end.
    pub ended_reason: Option<String>,
    /// Why it waits, was blocked or failed (ours, for people).
    pub reason: Option<String>,
    /// Whether this attempt's end is the queue entry's final outcome.
    pub final_attempt: bool,
    /// Higher is dialled first.
    pub priority: i32,
    /// Not dialled before.
    pub not_before: DateTime<Utc>,
    /// The pipeline run that asked for it.
    pub run_id: Option<RunId>,
    /// The pipeline step that waits for it.
    pub step_id: Option<StepId>,
    /// Who asked for it (a user, a key, `pipeline`).
    pub requested_by: String,
    /// Handed to the provider.
    pub dialed_at: Option<DateTime<Utc>>,
    /// Connected.
    pub started_at: Option<DateTime<Utc>>,
    /// Ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Talk time, seconds.
    pub duration_secs: Option<f64>,
    /// Cost, USD.
    pub cost_usd: Option<f64>,
    /// The provider's summary.
    pub summary: Option<String>,
    /// `positive`, `neutral`, `negative`.
    pub sentiment: Option<String>,
    /// The recording.
    pub recording_url: Option<String>,
    /// The full transcript.
    pub transcript: Option<String>,
    /// The interaction logged for the ended call.
    pub interaction_id: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A call to queue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCall {
    /// Identity.
    pub id: CallId,
    /// The customer.
    pub customer_id: CustomerId,
    /// The queue entry (the id itself for a first attempt).
    pub first_call_id: CallId,
    /// 1 for a first attempt.
    pub attempt: i32,
    /// Our voice agent.
    pub agent: String,
    /// The provider kind.
    pub provider: String,
    /// E.164.
    pub to_number: String,
    /// The agent's language.
    pub language: String,
    /// Higher first.
    pub priority: i32,
    /// Not before.
    pub not_before: DateTime<Utc>,
    /// The run.
    pub run_id: Option<RunId>,
    /// The step waiting for it.
    pub step_id: Option<StepId>,
    /// Who asked.
    pub requested_by: String,
}

/// One transcript segment.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSegment {
    /// 1, 2, … in arrival order.
    pub seq: i32,
    /// Who spoke.
    pub role: SpeakerRole,
    /// What was said.
    pub text: String,
    /// Milliseconds from the start of the call.
    pub offset_ms: Option<i64>,
    /// Stored.
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = calls)]
#[diesel(treat_none_as_null = true)]
pub(crate) struct CallRow {
    id: String,
    customer_id: String,
    first_call_id: String,
    attempt: i32,
    agent: String,
    provider: String,
    provider_call_id: Option<String>,
    to_number: String,
    language: String,
    status: String,
    disposition: Option<String>,
    outcome: Option<String>,
    ended_reason: Option<String>,
    reason: Option<String>,
    final_attempt: bool,
    priority: i32,
    not_before: NaiveDateTime,
    run_id: Option<String>,
    step_id: Option<String>,
    requested_by: String,
    dialed_at: Option<NaiveDateTime>,
    started_at: Option<NaiveDateTime>,
    ended_at: Option<NaiveDateTime>,
    duration_secs: Option<f64>,
    cost_usd: Option<f64>,
    summary: Option<String>,
    sentiment: Option<String>,
    recording_url: Option<String>,
    transcript: Option<String>,
    interaction_id: Option<String>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt {
        entity: "call",
        id: String::new(),
        reason: format!("bad {what} `{value}`"),
    }
}

impl TryFrom<CallRow> for Call {
    type Error = StoreError;

    fn try_from(row: CallRow) -> StoreResult<Self> {
        fn id<T: std::str::FromStr>(raw: &str, what: &str) -> StoreResult<T> {
            raw.parse().map_err(|_| corrupt(what, raw))
        }
        Ok(Self {
            id: id(&row.id, "id")?,
            customer_id: id(&row.customer_id, "customer id")?,
            first_call_id: id(&row.first_call_id, "first call id")?,
            attempt: row.attempt,
            agent: row.agent,
            provider: row.provider,
            provider_call_id: row.provider_call_id,
            to_number: row.to_number,
            language: row.language,
            status: row
                .status
                .parse()
                .map_err(|_| corrupt("status", &row.status))?,
            disposition: row
                .disposition
                .as_deref()
                .map(|d| d.parse().map_err(|_| corrupt("disposition", d)))
                .transpose()?,
            outcome: row.outcome,
            ended_reason: row.ended_reason,
            reason: row.reason,
            final_attempt: row.final_attempt,
            priority: row.priority,
            not_before: from_db_time(row.not_before),
            run_id: row.run_id.as_deref().map(|r| id(r, "run id")).transpose()?,
            step_id: row
                .step_id
                .as_deref()
                .map(|s| id(s, "step id"))
                .transpose()?,
            requested_by: row.requested_by,
            dialed_at: row.dialed_at.map(from_db_time),
            started_at: row.started_at.map(from_db_time),
            ended_at: row.ended_at.map(from_db_time),
            duration_secs: row.duration_secs,
            cost_usd: row.cost_usd,
            summary: row.summary,
            sentiment: row.sentiment,
            recording_url: row.recording_url,
            transcript: row.transcript,
            interaction_id: row.interaction_id,
            created_at: from_db_time(row.created_at),
            updated_at: from_db_time(row.updated_at),
        })
    }
}

impl CallRow {
    fn new(new: &NewCall, now: DateTime<Utc>) -> Self {
        let at = to_db_time(now);
        Self {
            id: new.id.to_string(),
            customer_id: new.customer_id.to_string(),
            first_call_id: new.first_call_id.to_string(),
            attempt: new.attempt,
            agent: new.agent.clone(),
            provider: new.provider.clone(),
            provider_call_id: None,
            to_number: new.to_number.clone(),
            language: new.language.clone(),
            status: CallStatus::Queued.as_str().to_owned(),
            disposition: None,
            outcome: None,
            ended_reason: None,
            reason: None,
            final_attempt: false,
            priority: new.priority,
            not_before: to_db_time(new.not_before),
            run_id: new.run_id.map(|r| r.to_string()),
            step_id: new.step_id.map(|s| s.to_string()),
            requested_by: new.requested_by.clone(),
            dialed_at: None,
            started_at: None,
            ended_at: None,
            duration_secs: None,
            cost_usd: None,
            summary: None,
            sentiment: None,
            recording_url: None,
            transcript: None,
            interaction_id: None,
            created_at: at,
            updated_at: at,
        }
    }
}

/// The event published for a call's change.
pub fn event(call: &Call) -> Effect {
    let payload = serde_json::json!({
        "callId": call.id.to_string(),
        "firstCallId": call.first_call_id.to_string(),
        "customerId": call.customer_id.to_string(),
        "attempt": call.attempt,
        "agent": call.agent,
        "provider": call.provider,
        "status": call.status.as_str(),
        "disposition": call.disposition.map(Disposition::as_str),
        "outcome": call.outcome,
        "reason": call.reason,
        "final": call.final_attempt,
    });
    Effect::Event(NewEvent {
        topic: TOPIC.to_owned(),
        customer_id: Some(call.customer_id.to_string()),
        payload: payload.to_string(),
    })
}

/// Queues a call with its dial job (and `audit`), unless the step already queued this
/// attempt (then the existing call). Fails with `NotFound` for a customer that does not exist.
pub async fn enqueue(
    db: &Db,
    new: &NewCall,
    dial: NewJob,
    audit: Option<NewAuditEntry>,
    now: DateTime<Utc>,
) -> StoreResult<Call> {
    if let Some(step) = new.step_id
        && let Some(existing) = by_step(db, step, new.attempt).await?
    {
        return Ok(existing);
    }
    let row = CallRow::new(new, now);
    let call = Call::try_from(row.clone())?;
    let effects = vec![Effect::Job(dial), event(&call)];
    let customer = row.customer_id.clone();
    let result: StoreResult<()> = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            diesel::insert_into(calls::table)
                .values(&row)
                .execute(conn)
                .await?;
            let alive: i64 = customers::table
                .filter(customers::id.eq(&customer))
                .filter(customers::deleted_at.is_null())
                .count()
                .get_result(conn)
                .await?;
            if alive == 0 {
                return Err(StoreError::NotFound {
                    entity: "customer",
                    id: customer.clone(),
                });
            }
            if let Some(entry) = &audit {
                conn.append_audit(entry).await?;
            }
            conn.apply_effects(&effects, now).await?;
            Ok(())
        })
        .await
    });
    match result {
        Ok(()) => {
            db.committed_all(&effects, false);
            Ok(call)
        }
        Err(StoreError::Database(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::ForeignKeyViolation,
            _,
        ))) => Err(StoreError::NotFound {
            entity: "customer",
            id: new.customer_id.to_string(),
        }),
        Err(other) => Err(other),
    }
}

/// The call with this id.
pub async fn get(db: &Db, id: CallId) -> StoreResult<Option<Call>> {
    let key = id.to_string();
    let row: Option<CallRow> = with_conn!(db, |conn| {
        calls::table
            .find(&key)
            .select(CallRow::as_select())
            .first(conn)
            .await
            .optional()
    })?;
    row.map(Call::try_from).transpose()
}

/// The calls with these ids (any order).
pub async fn by_ids(db: &Db, ids: &[CallId]) -> StoreResult<Vec<Call>> {
    let keys: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let rows: Vec<CallRow> = with_conn!(db, |conn| {
        calls::table
            .filter(calls::id.eq_any(&keys))
            .select(CallRow::as_select())
            .load(conn)
            .await
    })?;
    rows.into_iter().map(Call::try_from).collect()
}

async fn by_step(db: &Db, step: StepId, attempt: i32) -> StoreResult<Option<Call>> {
    let key = step.to_string();
    let row: Option<CallRow> = with_conn!(db, |conn| {
        calls::table
            .filter(calls::step_id.eq(&key))
            .filter(calls::attempt.eq(attempt))
            .select(CallRow::as_select())
            .first(conn)
            .await
            .optional()
    })?;
    row.map(Call::try_from).transpose()
}

/// The call a provider knows as `provider_call_id`.
pub async fn by_provider(
    db: &Db,
    provider: &str,
    provider_call_id: &str,
) -> StoreResult<Option<Call>> {
    let row: Option<CallRow> = with_conn!(db, |conn| {
        calls::table
            .filter(calls::provider.eq(provider))
            .filter(calls::provider_call_id.eq(provider_call_id))
            .select(CallRow::as_select())
            .first(conn)
            .await
            .optional()
    })?;
    row.map(Call::try_from).transpose()
}

/// Which calls to list.
#[derive(Debug, Clone)]
pub struct CallFilter {
    /// Of one customer.
    pub customer_id: Option<CustomerId>,
    /// In these statuses.
    pub statuses: Vec<CallStatus>,
    /// Through one provider.
    pub provider: Option<String>,
    /// Of customers in this scope.
    pub scope: CustomerScope,
}

/// Calls matching `filter`, newest first, before `before` (keyset paging), up to `limit + 1`
/// (the extra row tells the caller there is a next page).
pub async fn list(
    db: &Db,
    filter: &CallFilter,
    before: Option<CallId>,
    limit: usize,
) -> StoreResult<Vec<Call>> {
    let probe = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
    let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
    let rows: Vec<CallRow> = with_conn!(db, |conn| {
        let mut query = calls::table.select(CallRow::as_select()).into_boxed();
        if let Some(customer) = filter.customer_id {
            query = query.filter(calls::customer_id.eq(customer.to_string()));
        }
        if !statuses.is_empty() {
            query = query.filter(calls::status.eq_any(statuses.clone()));
        }
        if let Some(provider) = &filter.provider {
            query = query.filter(calls::provider.eq(provider.clone()));
        }
        match &filter.scope {
            CustomerScope::All => {}
            CustomerScope::OwnedBy(subject) => {
                query = query.filter(
                    calls::customer_id.eq_any(
                        customers::table
                            .filter(customers::owner.eq(subject.clone()))
                            .select(customers::id),
                    ),
                );
            }
            CustomerScope::OwnedByOrUnassigned(subject) => {
                query = query.filter(
                    calls::customer_id.eq_any(
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
            query = query.filter(calls::id.lt(before.to_string()));
        }
        query
            .order_by(calls::id.desc())
            .limit(probe)
            .load(conn)
            .await
    })?;
    rows.into_iter().map(Call::try_from).collect()
}

/// The call queue in dial order (priority, then due time), of customers in `scope`.
pub async fn queue(
    db: &Db,
    provider: Option<&str>,
    scope: &CustomerScope,
    limit: i64,
) -> StoreResult<Vec<Call>> {
    let rows: Vec<CallRow> = with_conn!(db, |conn| {
        let mut query = calls::table
            .filter(calls::status.eq(CallStatus::Queued.as_str()))
            .select(CallRow::as_select())
            .into_boxed();
        if let Some(provider) = provider {
            query = query.filter(calls::provider.eq(provider.to_owned()));
        }
        match scope {
            CustomerScope::All => {}
            CustomerScope::OwnedBy(subject) => {
                query = query.filter(
                    calls::customer_id.eq_any(
                        customers::table
                            .filter(customers::owner.eq(subject.clone()))
                            .select(customers::id),
                    ),
                );
            }
            CustomerScope::OwnedByOrUnassigned(subject) => {
                query = query.filter(
                    calls::customer_id.eq_any(
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
        query
            .order_by((
                calls::priority.desc(),
                calls::not_before.asc(),
                calls::id.asc(),
            ))
            .limit(limit)
            .load(conn)
            .await
    })?;
    rows.into_iter().map(Call::try_from).collect()
}

/// Every attempt of the queue entry `first_call_id`, or of the pipeline run `run_id`.
pub async fn attempts(db: &Db, of: Attempts) -> StoreResult<Vec<Call>> {
    let rows: Vec<CallRow> = with_conn!(db, |conn| {
        let mut query = calls::table.select(CallRow::as_select()).into_boxed();
        query = match of {
            Attempts::Entry(first) => query.filter(calls::first_call_id.eq(first.to_string())),
            Attempts::Run(run) => query.filter(calls::run_id.eq(run.to_string())),
        };
        query.order_by(calls::attempt.asc()).load(conn).await
    })?;
    rows.into_iter().map(Call::try_from).collect()
}

/// Whose attempts [`attempts`] reads.
#[derive(Debug, Clone, Copy)]
pub enum Attempts {
    /// One queue entry's (its first attempt's id).
    Entry(CallId),
    /// One pipeline run's.
    Run(RunId),
}

/// Calls that may be stuck: handed to a provider before `before` and not ended (for
/// reconciliation), oldest first.
pub async fn unfinished_before(
    db: &Db,
    before: DateTime<Utc>,
    limit: i64,
) -> StoreResult<Vec<Call>> {
    let active = [
        CallStatus::Dialing.as_str(),
        CallStatus::Ringing.as_str(),
        CallStatus::InProgress.as_str(),
    ];
    let at = to_db_time(before);
    let rows: Vec<CallRow> = with_conn!(db, |conn| {
        calls::table
            .filter(calls::status.eq_any(active))
            .filter(calls::dialed_at.lt(at))
            .order_by(calls::dialed_at.asc())
            .limit(limit)
            .select(CallRow::as_select())
            .load(conn)
            .await
    })?;
    rows.into_iter().map(Call::try_from).collect()
}

/// The result of [`claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Ours to dial (status `dialing`).
    Claimed,
    /// The provider already has `limit` calls in flight; the call stays queued.
    Full,
    /// No longer queued (dialled, ended or cancelled meanwhile).
    Gone,
    /// Another call dialled the number at this time, less than the minimum interval ago; the
    /// call stays queued.
    Spaced(DateTime<Utc>),
}

/// What [`claim`] dials, and the rules it claims under.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRules<'a> {
    /// The provider.
    pub provider: &'a str,
    /// Most calls in flight at the provider.
    pub limit: i64,
    /// The number to dial (recorded as the call's `to_number`).
    pub number: &'a str,
    /// Least time between two calls to one number.
    pub min_interval: chrono::TimeDelta,
    /// Enqueued with the claim: the look at the call after a while, which ends a claim whose
    /// worker died before the provider answered.
    pub reconcile: &'a NewJob,
}

/// Claims a queued call for dialling (status `dialing`, `dialed_at` now, and the `reconcile`
/// job, so that a claim whose worker dies before the provider answers is looked at), unless its provider
/// already has `limit` calls in flight or another call dialled the number less than
/// `min_interval` ago. Claimers of one provider, and of one number, are serialized (advisory
/// locks on PostgreSQL, taken in that order; SQLite has one writer), so both rules hold under
/// concurrent workers.
pub async fn claim(
    db: &Db,
    id: CallId,
    rules: ClaimRules<'_>,
    now: DateTime<Utc>,
) -> StoreResult<Claim> {
    /// Rolls a claim back when the provider is full or the number was called recently.
    #[derive(Debug)]
    enum Refused {
        Full,
        Spaced(NaiveDateTime),
        Store(StoreError),
    }
    impl From<diesel::result::Error> for Refused {
        fn from(error: diesel::result::Error) -> Self {
            Self::Store(error.into())
        }
    }
    let ClaimRules {
        provider,
        limit,
        number,
        min_interval,
        reconcile,
    } = rules;
    let reconcile = [Effect::Job(reconcile.clone())];
    let key = id.to_string();
    let at = to_db_time(now);
    let spaced_after = to_db_time(now - min_interval);
    let postgres = db.backend() == crate::Backend::Postgres;
    let lock = |name: String| {
        let digest = Sha256::digest(name.as_bytes());
        i64::from_be_bytes([
            digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
        ])
    };
    let (provider_lock, number_lock) = (
        lock(format!("crm_calls:{provider}")),
        lock(format!("crm_calls_to:{number}")),
    );
    let active = [
        CallStatus::Dialing.as_str(),
        CallStatus::Ringing.as_str(),
        CallStatus::InProgress.as_str(),
    ];
    let result: Result<bool, Refused> = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            if postgres {
                diesel::sql_query(format!(
                    "SELECT pg_advisory_xact_lock({provider_lock}), \
                     pg_advisory_xact_lock({number_lock})"
                ))
                .execute(conn)
                .await?;
            }
            let claimed = diesel::update(
                calls::table
                    .filter(calls::id.eq(&key))
                    .filter(calls::status.eq(CallStatus::Queued.as_str())),
            )
            .set((
                calls::status.eq(CallStatus::Dialing.as_str()),
                calls::reason.eq(None::<String>),
                calls::to_number.eq(number),
                calls::dialed_at.eq(Some(at)),
                calls::updated_at.eq(at),
            ))
            .execute(conn)
            .await?;
            if claimed == 0 {
                return Ok(false);
            }
            let last: Option<NaiveDateTime> = calls::table
                .filter(calls::to_number.eq(number))
                .filter(calls::id.ne(&key))
                .filter(calls::dialed_at.gt(spaced_after))
                .select(diesel::dsl::max(calls::dialed_at))
                .first(conn)
                .await?;
            if let Some(last) = last {
                return Err(Refused::Spaced(last));
            }
            let in_flight: i64 = calls::table
                .filter(calls::status.eq_any(active))
                .filter(calls::provider.eq(provider))
                .count()
                .get_result(conn)
                .await?;
            if in_flight > limit {
                return Err(Refused::Full);
            }
            conn.apply_effects(&reconcile, now).await?;
            Ok(true)
        })
        .await
    });
    match result {
        Ok(true) => Ok(Claim::Claimed),
        Ok(false) => Ok(Claim::Gone),
        Err(Refused::Full) => Ok(Claim::Full),
        Err(Refused::Spaced(last)) => Ok(Claim::Spaced(from_db_time(last))),
        Err(Refused::Store(error)) => Err(error),
    }
}

/// How a queued call left the queue without ringing, or moved within it.
#[derive(Debug, Clone)]
pub enum Dequeue {
    /// Handed to the provider, which knows it as `provider_call_id`.
    Dialed {
        /// The provider's id.
        provider_call_id: String,
        /// Jobs the provider's placement brings (the simulator's deliveries).
        jobs: Vec<NewJob>,
    },
    /// Waits until `not_before` (calling hours, spacing, a full provider), with its next
    /// dial job.
    Deferred {
        /// Not before.
        not_before: DateTime<Utc>,
        /// Why.
        reason: String,
        /// The dial job at `not_before`.
        job: NewJob,
    },
    /// Ends without a conversation: `blocked` by policy, `failed` at the provider, or
    /// `canceled`; `effects` (the pipeline's continuation) commit with it.
    Ended {
        /// How.
        disposition: Disposition,
        /// Why.
        reason: String,
        /// What the end brings along.
        effects: Vec<Effect>,
    },
}

/// Moves a call out of (or within) the queue; `from` is the status it must still have
/// (`queued` to defer or block it; `dialing` to record the placement or end it). False if the
/// call moved on meanwhile (another worker, a cancel).
pub async fn dequeue(
    db: &Db,
    id: CallId,
    from: CallStatus,
    change: Dequeue,
    audit: Option<NewAuditEntry>,
    now: DateTime<Utc>,
) -> StoreResult<Option<Call>> {
    let key = id.to_string();
    let at = to_db_time(now);
    let result: Option<CallRow> = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            let target = calls::table
                .filter(calls::id.eq(&key))
                .filter(calls::status.eq(from.as_str()));
            let changed = match &change {
                Dequeue::Dialed {
                    provider_call_id, ..
                } => {
                    // Whatever the call's events did meanwhile (a webhook may beat the
                    // provider's answer), unless one of them recorded the provider's id.
                    diesel::update(
                        calls::table
                            .filter(calls::id.eq(&key))
                            .filter(calls::status.ne(CallStatus::Queued.as_str()))
                            .filter(calls::provider_call_id.is_null()),
                    )
                    .set((
                        calls::provider_call_id.eq(provider_call_id),
                        calls::dialed_at.eq(at),
                        calls::updated_at.eq(at),
                    ))
                    .execute(conn)
                    .await?
                }
                Dequeue::Deferred {
                    not_before, reason, ..
                } => {
                    diesel::update(target)
                        .set((
                            // Back in the queue (a claim undone: the provider was
                            // unavailable, so the call was not placed and does not count as
                            // a dial of its number).
                            calls::status.eq(CallStatus::Queued.as_str()),
                            calls::not_before.eq(to_db_time(*not_before)),
                            calls::reason.eq(reason),
                            calls::dialed_at.eq(None::<NaiveDateTime>),
                            calls::updated_at.eq(at),
                        ))
                        .execute(conn)
                        .await?
                }
                Dequeue::Ended {
                    disposition,
                    reason,
                    ..
                } => {
                    diesel::update(target)
                        .set((
                            calls::status.eq(CallStatus::Ended.as_str()),
                            calls::disposition.eq(disposition.as_str()),
                            calls::reason.eq(reason),
                            calls::final_attempt.eq(true),
                            calls::ended_at.eq(at),
                            calls::updated_at.eq(at),
                        ))
                        .execute(conn)
                        .await?
                }
            };
            if changed == 0 {
                return Ok::<_, StoreError>(None);
            }
            let row: CallRow = calls::table
                .find(&key)
                .select(CallRow::as_select())
                .first(conn)
                .await?;
            let call = Call::try_from(row.clone())?;
            let mut effects = match &change {
                Dequeue::Dialed { jobs, .. } => jobs.iter().cloned().map(Effect::Job).collect(),
                Dequeue::Deferred { job, .. } => vec![Effect::Job(job.clone())],
                Dequeue::Ended { effects, .. } => effects.clone(),
            };
            effects.push(event(&call));
            if let Some(entry) = &audit {
                conn.append_audit(entry).await?;
            }
            conn.apply_effects(&effects, now).await?;
            Ok(Some(row))
        })
        .await
    })?;
    match result {
        Some(row) => {
            // Jobs, and always the call's own event: its readers are woken now, not at their
            // next poll.
            db.committed(true, true);
            Ok(Some(Call::try_from(row)?))
        }
        None => Ok(None),
    }
}

/// What the caller wants to happen when a call ends (decided from the ended call).
#[derive(Debug, Clone, Default)]
pub struct EndPlan {
    /// The interaction to log.
    pub interaction: Option<Interaction>,
    /// Whether this attempt's end is the final outcome (no retry follows).
    pub final_attempt: bool,
    /// The next attempt, with its dial job.
    pub retry: Option<(NewCall, NewJob)>,
    /// Put the number on the do-not-call list (the person asked), with this reason.
    pub do_not_call: Option<String>,
    /// Anything else (the pipeline's continuation, re-scoring).
    pub effects: Vec<Effect>,
}

/// What an ingest did.
#[derive(Debug, Clone, PartialEq)]
pub enum Ingested {
    /// The delivery was seen before: nothing changed.
    Duplicate,
    /// Applied.
    Applied {
        /// The call after the update.
        call: Box<Call>,
        /// How many new segments were stored.
        new_segments: usize,
        /// Whether this update ended the call.
        ended: bool,
    },
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => text[..cut].to_owned(),
        None => text.to_owned(),
    }
}

fn segment_dedupe(
    position: Option<u32>,
    role: SpeakerRole,
    text: &str,
    offset: Option<i64>,
) -> String {
    match position {
        Some(position) => format!("p{position}"),
        None => {
            let digest = Sha256::digest(format!("{role}\u{1f}{text}\u{1f}{offset:?}").as_bytes());
            crm_domain::hex::encode(&digest[..12])
        }
    }
}

/// Applies one provider event to the call `id`; `on_end` plans what the call's end brings
/// (called once, inside the transaction, with the ended call).
pub async fn ingest(
    db: &Db,
    id: CallId,
    update: &CallUpdate,
    on_end: &(dyn Fn(&Call) -> EndPlan + Send + Sync),
    audit: Option<NewAuditEntry>,
    now: DateTime<Utc>,
) -> StoreResult<Ingested> {
    let key = id.to_string();
    let at = to_db_time(now);
    let dedupe = truncate(&update.dedupe_key, 200);
    let result: Option<(CallRow, usize, bool, Vec<Effect>)> = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            // The delivery's first write claims it (and, on SQLite, the write lock).
            let fresh = diesel::insert_into(call_deliveries::table)
                .values((
                    call_deliveries::call_id.eq(&key),
                    call_deliveries::dedupe.eq(&dedupe),
                    call_deliveries::received_at.eq(at),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            if fresh == 0 {
                return Ok::<_, StoreError>(None);
            }
            // Lock the call (an UPDATE locks the row on PostgreSQL; SQLite holds the database).
            diesel::update(calls::table.find(&key))
                .set(calls::updated_at.eq(at))
                .execute(conn)
                .await?;
            let mut row: CallRow = calls::table
                .find(&key)
                .select(CallRow::as_select())
                .first(conn)
                .await?;
            let before = Call::try_from(row.clone())?;
            let mut effects = Vec::new();
            // What the end brings, published after the call's own event.
            let mut after = Vec::new();
            let mut changed = false;

            // Status: forward only.
            if let Some(status) = update.status
                && status.rank() > before.status.rank()
            {
                row.status = status.as_str().to_owned();
                changed = true;
            }
            let ended_now =
                before.status != CallStatus::Ended && row.status == CallStatus::Ended.as_str();
            let from_provider = !update.provider_call_id.is_empty();
            // The provider knows the call: it was placed, even if its answer to the placement
            // came after this event, or never (a timeout).
            if from_provider && row.provider_call_id.is_none() {
                row.provider_call_id = Some(truncate(&update.provider_call_id, 200));
                changed = true;
            }
            if from_provider && row.dialed_at.is_none() {
                row.dialed_at = Some(at);
                changed = true;
            }
            // Ended as "not placed" (the placement timed out), then the provider reports the
            // real call's end: it is logged like any ended call.
            let late_end = before.status == CallStatus::Ended
                && before.interaction_id.is_none()
                && from_provider
                && update.status == Some(CallStatus::Ended);
            let was_retryable = before.disposition.is_some_and(Disposition::retryable);
            // Disposition: set or refined, except that a cancel by us stands.
            if let Some(disposition) = update.disposition
                && before.disposition != Some(Disposition::Canceled)
                && before.disposition != Some(disposition)
                && (ended_now || before.status == CallStatus::Ended)
            {
                row.disposition = Some(disposition.as_str().to_owned());
                changed = true;
            }
            macro_rules! take {
                ($field:ident, $value:expr) => {
                    if let Some(value) = $value {
                        if row.$field.as_ref() != Some(&value) {
                            row.$field = Some(value);
                            changed = true;
                        }
                    }
                };
            }
            take!(
                ended_reason,
                update.ended_reason.as_deref().map(|r| truncate(r, 200))
            );
            take!(outcome, update.outcome.as_deref().map(|r| truncate(r, 200)));
            take!(started_at, update.started_at.map(to_db_time));
            take!(ended_at, update.ended_at.map(to_db_time));
            take!(
                duration_secs,
                update.duration_secs.filter(|d| d.is_finite() && *d >= 0.0)
            );
            take!(
                cost_usd,
                update.cost_usd.filter(|c| c.is_finite() && *c >= 0.0)
            );
            take!(
                summary,
                update.summary.as_deref().map(|s| truncate(s, 20_000))
            );
            take!(sentiment, update.sentiment.map(|s| s.as_str().to_owned()));
            take!(
                recording_url,
                update.recording_url.as_deref().map(|s| truncate(s, 2_000))
            );
            take!(
                transcript,
                update
                    .transcript
                    .as_deref()
                    .map(|s| truncate(s, TRANSCRIPT_MAX_CHARS))
            );
            if ended_now && row.ended_at.is_none() {
                row.ended_at = Some(at);
            }

            // Segments: the next numbers, once each. A positioned segment (a provider's full
            // list) that repeats an utterance already streamed without a position is the same
            // utterance; one whose text grew (Retell's live turn) is corrected in place.
            let mut new_segments = 0;
            if !update.segments.is_empty() {
                let stored: Vec<(i32, String, String, String)> = call_segments::table
                    .filter(call_segments::call_id.eq(&key))
                    .select((
                        call_segments::seq,
                        call_segments::dedupe,
                        call_segments::role,
                        call_segments::text,
                    ))
                    .load(conn)
                    .await?;
                let mut seq = stored.iter().map(|s| s.0).max().unwrap_or(0);
                let mut streamed: Vec<(String, String)> = stored
                    .iter()
                    .filter(|s| !s.1.starts_with('p'))
                    .map(|s| (s.2.clone(), s.3.trim().to_owned()))
                    .collect();
                let positioned: std::collections::HashMap<&str, (i32, &str)> = stored
                    .iter()
                    .filter(|s| s.1.starts_with('p'))
                    .map(|s| (s.1.as_str(), (s.0, s.3.as_str())))
                    .collect();
                // What the final full list said, for live lines arriving after the call
                // ended (webhooks are not ordered): the same utterance again, not a new one.
                // (A list read while the call goes on, by the reconciler, leaves later live
                // lines alone: the customer may say "Ja." twice.)
                let listed: std::collections::HashSet<(&str, &str)> = stored
                    .iter()
                    .filter(|s| before.status == CallStatus::Ended && s.1.starts_with('p'))
                    .map(|s| (s.2.as_str(), s.3.trim()))
                    .collect();
                // `corrected`: an earlier seq sent again with the provider's corrected text.
                let mut publish =
                    |seq: i32, segment: &crm_domain::Segment, text: &str, corrected: bool| {
                        effects.push(Effect::Event(NewEvent {
                            topic: TRANSCRIPT_TOPIC.to_owned(),
                            customer_id: Some(row.customer_id.clone()),
                            payload: serde_json::json!({
                                "callId": key,
                                "seq": seq,
                                "role": segment.role.as_str(),
                                "text": text,
                                "offsetMs": segment.offset_ms,
                                "at": now,
                                "corrected": corrected,
                            })
                            .to_string(),
                        }));
                    };
                for segment in &update.segments {
                    let text = truncate(&segment.text, SEGMENT_MAX_CHARS);
                    let dedupe =
                        segment_dedupe(segment.position, segment.role, &text, segment.offset_ms);
                    if segment.position.is_some() {
                        if let Some((existing, old)) = positioned.get(dedupe.as_str()) {
                            if *old != text {
                                diesel::update(
                                    call_segments::table
                                        .filter(call_segments::call_id.eq(&key))
                                        .filter(call_segments::seq.eq(*existing)),
                                )
                                .set((
                                    call_segments::text.eq(&text),
                                    call_segments::offset_ms.eq(segment.offset_ms),
                                ))
                                .execute(conn)
                                .await?;
                                publish(*existing, segment, &text, true);
                            }
                            continue;
                        }
                        let said = (segment.role.as_str().to_owned(), text.trim().to_owned());
                        if let Some(i) = streamed.iter().position(|s| *s == said) {
                            streamed.swap_remove(i);
                            continue;
                        }
                    } else if listed.contains(&(segment.role.as_str(), text.trim())) {
                        continue;
                    }
                    if i64::from(seq) >= MAX_SEGMENTS {
                        break;
                    }
                    let inserted = diesel::insert_into(call_segments::table)
                        .values((
                            call_segments::call_id.eq(&key),
                            call_segments::seq.eq(seq + 1),
                            call_segments::dedupe.eq(&dedupe),
                            call_segments::role.eq(segment.role.as_str()),
                            call_segments::text.eq(&text),
                            call_segments::offset_ms.eq(segment.offset_ms),
                            call_segments::created_at.eq(at),
                        ))
                        .on_conflict_do_nothing()
                        .execute(conn)
                        .await?;
                    if inserted == 1 {
                        seq += 1;
                        new_segments += 1;
                        publish(seq, segment, &text, false);
                    }
                }
            }

            // A final, answered end that later analysis finds was a mailbox (Retell's
            // call_analyzed): the retry it deserves is planned now.
            let reopened = before.status == CallStatus::Ended
                && before.final_attempt
                && !late_end
                && !was_retryable
                && row
                    .disposition
                    .as_deref()
                    .and_then(|d| d.parse::<Disposition>().ok())
                    .is_some_and(Disposition::retryable);
            if ended_now || late_end {
                if late_end {
                    row.reason = None;
                }
                let ended = Call::try_from(row.clone())?;
                let plan = on_end(&ended);
                row.final_attempt = plan.final_attempt;
                if let Some(interaction) = plan
                    .interaction
                    .as_ref()
                    .filter(|_| row.interaction_id.is_none())
                {
                    diesel::insert_into(interactions::table)
                        .values(InteractionRow::from(interaction))
                        .execute(conn)
                        .await?;
                    row.interaction_id = Some(interaction.id.to_string());
                }
                if let Some((retry, job)) = &plan.retry {
                    diesel::insert_into(calls::table)
                        .values(CallRow::new(retry, now))
                        .on_conflict_do_nothing()
                        .execute(conn)
                        .await?;
                    after.push(Effect::Job(job.clone()));
                    let queued = Call::try_from(CallRow::new(retry, now))?;
                    after.push(event(&queued));
                }
                if let Some(reason) = &plan.do_not_call {
                    diesel::insert_into(do_not_call::table)
                        .values((
                            do_not_call::phone.eq(&row.to_number),
                            do_not_call::reason.eq(reason),
                            do_not_call::source.eq("call"),
                            do_not_call::created_by.eq(format!("voice-agent:{}", row.agent)),
                            do_not_call::created_at.eq(at),
                        ))
                        .on_conflict_do_nothing()
                        .execute(conn)
                        .await?;
                    // "Do not call me" withdraws the consent to calls, recorded in the ledger.
                    if let Ok(customer_id) = row.customer_id.parse() {
                        let withdrawal = crate::gdpr::NewConsent {
                            customer_id,
                            record: crm_domain::ConsentRecord {
                                channel: crm_domain::ConsentChannel::Call,
                                purpose: crm_domain::ConsentPurpose::SalesFollowUp,
                                basis: crm_domain::LawfulBasis::Consent,
                                granted: false,
                                source: crm_domain::ConsentSource::Call,
                                evidence: Some(format!("call {}", row.id)),
                            },
                            recorded_by: format!("voice-agent:{}", row.agent),
                        };
                        diesel::update(customers::table.find(&row.customer_id))
                            .set(customers::consent_call.eq(false))
                            .execute(conn)
                            .await?;
                        diesel::insert_into(crate::schema::consents::table)
                            .values(crate::gdpr::consent_row(&withdrawal, now))
                            .execute(conn)
                            .await?;
                    }
                }
                after.extend(plan.effects);
                changed = true;
            } else if reopened {
                let plan = on_end(&Call::try_from(row.clone())?);
                if let Some((retry, job)) = &plan.retry {
                    diesel::insert_into(calls::table)
                        .values(CallRow::new(retry, now))
                        .on_conflict_do_nothing()
                        .execute(conn)
                        .await?;
                    after.push(Effect::Job(job.clone()));
                    after.push(event(&Call::try_from(CallRow::new(retry, now))?));
                    row.final_attempt = false;
                }
            }
            if before.status == CallStatus::Ended
                && changed
                && let Some(interaction) = &row.interaction_id
            {
                // Late analysis (Retell's call_analyzed): the logged interaction learns it.
                diesel::update(interactions::table.find(interaction))
                    .set((
                        interactions::outcome.eq(row.outcome.clone().or(row.disposition.clone())),
                        interactions::updated_at.eq(at),
                    ))
                    .execute(conn)
                    .await?;
            }
            diesel::update(calls::table.find(&key))
                .set(&row)
                .execute(conn)
                .await?;
            if changed {
                effects.push(event(&Call::try_from(row.clone())?));
            }
            effects.append(&mut after);
            if let Some(entry) = &audit {
                conn.append_audit(entry).await?;
            }
            conn.apply_effects(&effects, now).await?;
            Ok(Some((row, new_segments, ended_now || late_end, effects)))
        })
        .await
    })?;
    match result {
        None => Ok(Ingested::Duplicate),
        Some((row, new_segments, ended, effects)) => {
            db.committed_all(&effects, false);
            Ok(Ingested::Applied {
                call: Box::new(Call::try_from(row)?),
                new_segments,
                ended,
            })
        }
    }
}

/// A call's segments after `after_seq`, in order, up to `limit`.
pub async fn segments(
    db: &Db,
    id: CallId,
    after_seq: i32,
    limit: i64,
) -> StoreResult<Vec<StoredSegment>> {
    let key = id.to_string();
    let rows: Vec<(i32, String, String, Option<i64>, NaiveDateTime)> = with_conn!(db, |conn| {
        call_segments::table
            .filter(call_segments::call_id.eq(&key))
            .filter(call_segments::seq.gt(after_seq))
            .order_by(call_segments::seq.asc())
            .limit(limit)
            .select((
                call_segments::seq,
                call_segments::role,
                call_segments::text,
                call_segments::offset_ms,
                call_segments::created_at,
            ))
            .load(conn)
            .await
    })?;
    rows.into_iter()
        .map(|(seq, role, text, offset_ms, created_at)| {
            Ok(StoredSegment {
                seq,
                role: role.parse().map_err(|_| corrupt("role", &role))?,
                text,
                offset_ms,
                created_at: from_db_time(created_at),
            })
        })
        .collect()
}

/// An entry of the do-not-call list.
#[derive(Debug, Clone, PartialEq, Queryable)]
pub struct DoNotCall {
    /// E.164.
    pub phone: String,
    /// Why.
    pub reason: String,
    /// `api`, `call`, `import`.
    pub source: String,
    /// Who added it.
    pub created_by: String,
    /// When.
    pub created_at: NaiveDateTime,
}

/// Whether `phone` is on the do-not-call list.
pub async fn is_do_not_call(db: &Db, phone: &str) -> StoreResult<bool> {
    let found: i64 = with_conn!(db, |conn| {
        do_not_call::table
            .filter(do_not_call::phone.eq(phone))
            .count()
            .get_result(conn)
            .await
    })?;
    Ok(found > 0)
}

/// Adds `phone` (false if it was listed already), with `audit`.
pub async fn add_do_not_call(
    db: &Db,
    phone: &str,
    reason: &str,
    source: &str,
    created_by: &str,
    audit: Option<NewAuditEntry>,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let at = to_db_time(now);
    Ok(with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            let added = diesel::insert_into(do_not_call::table)
                .values((
                    do_not_call::phone.eq(phone),
                    do_not_call::reason.eq(reason),
                    do_not_call::source.eq(source),
                    do_not_call::created_by.eq(created_by),
                    do_not_call::created_at.eq(at),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            if added == 1
                && let Some(entry) = &audit
            {
                conn.append_audit(entry).await?;
            }
            Ok::<_, StoreError>(added == 1)
        })
        .await
    })?)
}

/// Removes `phone` (false if it was not listed), with `audit`.
pub async fn remove_do_not_call(
    db: &Db,
    phone: &str,
    audit: Option<NewAuditEntry>,
) -> StoreResult<bool> {
    Ok(with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            let removed = diesel::delete(do_not_call::table.find(phone))
                .execute(conn)
                .await?;
            if removed == 1
                && let Some(entry) = &audit
            {
                conn.append_audit(entry).await?;
            }
            Ok::<_, StoreError>(removed == 1)
        })
        .await
    })?)
}

/// The do-not-call list, by number, after `after`, up to `limit`.
pub async fn list_do_not_call(
    db: &Db,
    after: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<DoNotCall>> {
    Ok(with_conn!(db, |conn| {
        let mut query = do_not_call::table
            .select((
                do_not_call::phone,
                do_not_call::reason,
                do_not_call::source,
                do_not_call::created_by,
                do_not_call::created_at,
            ))
            .into_boxed();
        if let Some(after) = after {
            query = query.filter(do_not_call::phone.gt(after.to_owned()));
        }
        query
            .order_by(do_not_call::phone.asc())
            .limit(limit)
            .load(conn)
            .await
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("Ćevapi", 3), "Ćev");
        assert_eq!(truncate("ab", 5), "ab");
    }

    #[test]
    fn segments_without_a_position_dedupe_by_content() {
        let a = segment_dedupe(None, SpeakerRole::Agent, "Hallo", Some(10));
        assert_eq!(
            a,
            segment_dedupe(None, SpeakerRole::Agent, "Hallo", Some(10))
        );
        assert_ne!(
            a,
            segment_dedupe(None, SpeakerRole::Customer, "Hallo", Some(10))
        );
        assert_eq!(segment_dedupe(Some(3), SpeakerRole::Agent, "x", None), "p3");
    }
}
