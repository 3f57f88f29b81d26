//! Voice calls over GraphQL (`/voice-call`): the call queue, call records with transcripts,
//! the do-not-call list, and live transcript and call-event subscriptions.

use super::{
    ApiContext, CustomersLoader,
    access::{customer_scope, visible_customer},
    customers::{CustomerNode, parse_id},
    pagination::{PageInfo, first_or_default},
    transcripts::{JoinSlot, Joined, RenderSegment},
};
use crate::{
    audit::Auditor,
    error::{ApiError, invalid},
};
use async_graphql::{Context, Enum, ID, InputObject, Json, Object, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use crm_domain::{CallId, CustomerId, CustomerScope, Phone, Principal};
use crm_plugins::voice::VoiceError;
use crm_store::{
    Page,
    calls::{self, Call, CallFilter as StoreFilter, StoredSegment},
    customers,
    effects::Event,
};
use futures_util::{
    Stream, StreamExt as _,
    stream::{self, BoxStream},
};
use std::sync::Arc;

/// Most segments one `segments` selection returns.
const MAX_SEGMENTS: i64 = 5_000;

/// Where a call is.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "crm_domain::CallStatus")]
pub(crate) enum CallStatus {
    /// Waiting in the call queue.
    Queued,
    /// Handed to the provider.
    Dialing,
    /// Ringing.
    Ringing,
    /// Connected.
    InProgress,
    /// Over.
    Ended,
}

/// How a call ended.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "crm_domain::Disposition")]
pub(crate) enum CallDisposition {
    /// A person answered.
    Answered,
    /// Nobody answered.
    NoAnswer,
    /// Busy.
    Busy,
    /// A mailbox answered.
    Voicemail,
    /// Could not be placed, or broke.
    Failed,
    /// Stopped before or during the call.
    Canceled,
    /// Not placed: do-not-call, no consent, or no phone number.
    Blocked,
}

/// Who spoke.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "crm_domain::SpeakerRole")]
pub(crate) enum SpeakerRole {
    /// Our voice agent.
    Agent,
    /// The person called.
    Customer,
    /// Tool calls, transfers and other provider notes.
    System,
}

/// One utterance of a call's transcript.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "TranscriptSegment")]
pub(crate) struct SegmentNode {
    /// The call.
    call_id: ID,
    /// 1, 2, … in order: pass the last one seen as `afterSeq` to resume.
    seq: i32,
    /// Who spoke.
    role: SpeakerRole,
    /// What was said.
    text: String,
    /// Milliseconds from the start of the call, when the provider says.
    offset_ms: Option<i64>,
    /// Received.
    at: DateTime<Utc>,
    /// True when the provider corrected what was said (Retell refines a turn while it is
    /// spoken): a live transcript may send a `seq` again with the new text, which replaces any
    /// line already shown with this seq.
    corrected: bool,
}

/// Whether `event` (with its parsed `payload`) is the end of its call.
pub(crate) fn call_ended(event: &Event, payload: &serde_json::Value) -> bool {
    event.topic == calls::TOPIC && payload["status"] == "ended"
}

impl SegmentNode {
    /// The segment a transcript event of `call` carries (`None` for other events).
    pub(crate) fn live(call: CallId, event: &Event, payload: &serde_json::Value) -> Option<Self> {
        if event.topic != calls::TRANSCRIPT_TOPIC {
            return None;
        }
        Some(Self {
            call_id: ID(call.to_string()),
            seq: i32::try_from(payload["seq"].as_i64()?).ok()?,
            role: payload["role"]
                .as_str()
                .and_then(|r| r.parse::<crm_domain::SpeakerRole>().ok())
                .unwrap_or(crm_domain::SpeakerRole::System)
                .into(),
            text: payload["text"].as_str().unwrap_or_default().to_owned(),
            offset_ms: payload["offsetMs"].as_i64(),
            at: event.created_at,
            corrected: payload["corrected"].as_bool().unwrap_or(false),
        })
    }

    /// Its place in the transcript.
    pub(crate) fn position(&self) -> i32 {
        self.seq
    }

    /// Whether it re-sends an earlier seq with corrected text.
    pub(crate) fn is_correction(&self) -> bool {
        self.corrected
    }

    fn of(call: CallId, segment: StoredSegment) -> Self {
        Self {
            call_id: ID(call.to_string()),
            seq: segment.seq,
            role: segment.role.into(),
            text: segment.text,
            offset_ms: segment.offset_ms,
            at: segment.created_at,
            corrected: false,
        }
    }
}

/// A voice call attempt.
#[derive(Debug)]
pub(crate) struct CallNode(pub(crate) Call);

#[Object(name = "Call")]
impl CallNode {
    /// Identity.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The queue entry this attempt belongs to (the first attempt's id).
    async fn first_call_id(&self) -> ID {
        ID(self.0.first_call_id.to_string())
    }
    /// 1 for the first attempt; retries after no answer, busy or voicemail count up.
    async fn attempt(&self) -> i32 {
        self.0.attempt
    }
    /// Our voice agent.
    async fn agent(&self) -> &str {
        &self.0.agent
    }
    /// The provider (`vapi`, `retell`, `bland`, `simulator`).
    async fn provider(&self) -> &str {
        &self.0.provider
    }
    /// The provider's id of the call, once placed.
    async fn provider_call_id(&self) -> Option<&str> {
        self.0.provider_call_id.as_deref()
    }
    /// The number called (E.164).
    async fn to_number(&self) -> &str {
        &self.0.to_number
    }
    /// The agent's language.
    async fn language(&self) -> &str {
        &self.0.language
    }
    /// Where it is.
    async fn status(&self) -> CallStatus {
        self.0.status.into()
    }
    /// How it ended.
    async fn disposition(&self) -> Option<CallDisposition> {
        self.0.disposition.map(Into::into)
    }
    /// The business outcome (`appointment`, `interested`, `callback`, `not_interested`,
    /// `do_not_call`), when the conversation produced one.
    async fn outcome(&self) -> Option<&str> {
        self.0.outcome.as_deref()
    }
    /// The provider's own reason for the end.
    async fn ended_reason(&self) -> Option<&str> {
        self.0.ended_reason.as_deref()
    }
    /// Why it waits (calling hours, spacing, a busy provider), was blocked or failed.
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    /// Whether this attempt's end is the final outcome of its queue entry.
    async fn is_final(&self) -> bool {
        self.0.final_attempt
    }
    /// Higher is dialled first (lead score, then age).
    async fn priority(&self) -> i32 {
        self.0.priority
    }
    /// Not dialled before (UTC).
    async fn not_before(&self) -> DateTime<Utc> {
        self.0.not_before
    }
    /// Handed to the provider.
    async fn dialed_at(&self) -> Option<DateTime<Utc>> {
        self.0.dialed_at
    }
    /// Connected.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }
    /// Ended.
    async fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.0.ended_at
    }
    /// Talk time in seconds.
    async fn duration_seconds(&self) -> Option<f64> {
        self.0.duration_secs
    }
    /// Cost in US dollars.
    async fn cost_usd(&self) -> Option<f64> {
        self.0.cost_usd
    }
    /// The provider's summary.
    async fn summary(&self) -> Option<&str> {
        self.0.summary.as_deref()
    }
    /// `positive`, `neutral` or `negative`.
    async fn sentiment(&self) -> Option<&str> {
        self.0.sentiment.as_deref()
    }
    /// The recording.
    async fn recording_url(&self) -> Option<&str> {
        self.0.recording_url.as_deref()
    }
    /// The full transcript as text (as the provider sent it at the end).
    async fn transcript(&self) -> Option<&str> {
        self.0.transcript.as_deref()
    }
    /// The transcript's segments after `afterSeq`, in order.
    async fn segments(
        &self,
        ctx: &Context<'_>,
        after_seq: Option<i32>,
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<SegmentNode>> {
        let api = ctx.data::<ApiContext>()?;
        let limit = first.map_or(MAX_SEGMENTS, |f| i64::from(f).clamp(1, MAX_SEGMENTS));
        let segments = calls::segments(&api.db, self.0.id, after_seq.unwrap_or(0), limit)
            .await
            .map_err(ApiError::from)?;
        Ok(segments
            .into_iter()
            .map(|s| SegmentNode::of(self.0.id, s))
            .collect())
    }
    /// The pipeline run that asked for the call.
    async fn run_id(&self) -> Option<ID> {
        self.0.run_id.map(|r| ID(r.to_string()))
    }
    /// The interaction logged when the call ended.
    async fn interaction_id(&self) -> Option<ID> {
        self.0.interaction_id.clone().map(ID)
    }
    /// Who asked for the call.
    async fn requested_by(&self) -> &str {
        &self.0.requested_by
    }
    /// Queued.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// Last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// The customer called.
    async fn customer(&self, ctx: &Context<'_>) -> async_graphql::Result<CustomerNode> {
        let loader = ctx.data::<CustomersLoader>()?;
        let customer = loader
            .load_one(self.0.customer_id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| {
                ApiError::Internal(format!(
                    "call {} has no customer {}",
                    self.0.id, self.0.customer_id
                ))
            })?;
        Ok(CustomerNode(customer))
    }
}

/// A page of calls.
#[derive(SimpleObject, Debug)]
pub(crate) struct CallConnection {
    /// The calls, newest first.
    nodes: Vec<CallNode>,
    /// Paging.
    page_info: PageInfo,
}

/// Which calls to list.
#[derive(InputObject, Debug, Default)]
pub(crate) struct CallFilter {
    /// Of one customer.
    customer_id: Option<ID>,
    /// In any of these statuses.
    status: Option<Vec<CallStatus>>,
    /// Through one provider (`retell`, …).
    provider: Option<String>,
}

/// Which queued calls to list.
#[derive(InputObject, Debug, Default)]
pub(crate) struct CallQueueFilter {
    /// Through one provider.
    provider: Option<String>,
}

/// A number that must never be called.
#[derive(SimpleObject, Debug)]
pub(crate) struct DoNotCallEntry {
    /// E.164.
    phone: String,
    /// Why.
    reason: String,
    /// `api`, `call` (the person asked during a call), `import`.
    source: String,
    /// Who added it.
    created_by: String,
    /// When.
    created_at: DateTime<Utc>,
}

fn voice_error(error: VoiceError) -> ApiError {
    match error {
        VoiceError::Blocked(reason) => invalid("customerId", "call_blocked", reason),
        VoiceError::UnknownAgent(agent) => invalid(
            "agent",
            "unknown_agent",
            format!("`{agent}` is not a configured voice agent"),
        ),
        VoiceError::NoProvider(kind) => invalid(
            "agent",
            "provider_not_configured",
            format!("the voice provider `{kind}` is not configured"),
        ),
        VoiceError::NotFound { entity, id } => ApiError::NotFound { entity, id },
        VoiceError::Conflict(message) => ApiError::Conflict(message),
        VoiceError::Store(error) => error.into(),
    }
}

async fn visible_call(ctx: &Context<'_>, id: CallId) -> Result<Call, ApiError> {
    let api = ctx
        .data::<ApiContext>()
        .map_err(|e| ApiError::Internal(e.message))?;
    let not_found = || ApiError::NotFound {
        entity: "call",
        id: id.to_string(),
    };
    let call = calls::get(&api.db, id).await?.ok_or_else(not_found)?;
    visible_customer(ctx, call.customer_id)
        .await
        .map_err(|_| not_found())?;
    Ok(call)
}

fn parse_phone(api: &ApiContext, raw: &str) -> Result<Phone, ApiError> {
    Phone::parse(raw, api.region).map_err(|e| invalid("phone", "invalid_phone", e.message))
}

/// Call queries.
#[derive(Default, Debug)]
pub(crate) struct CallQuery;

#[Object]
impl CallQuery {
    /// Voice calls, newest first, of the customers the caller may see.
    #[graphql(
        complexity = "usize::try_from(first.unwrap_or(20)).unwrap_or(1).clamp(1, 1000).saturating_mul(child_complexity)"
    )]
    async fn calls(
        &self,
        ctx: &Context<'_>,
        filter: Option<CallFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<CallConnection> {
        let api = ctx.data::<ApiContext>()?;
        let limit = first_or_default(first, api.pages)?;
        let filter = filter.unwrap_or_default();
        let before = after
            .map(|raw| {
                raw.parse::<CallId>()
                    .map_err(|_| invalid("after", "invalid_cursor", "after: not a cursor of calls"))
            })
            .transpose()?;
        let store_filter = StoreFilter {
            customer_id: filter
                .customer_id
                .as_ref()
                .map(|id| parse_id("filter.customerId", id))
                .transpose()?,
            statuses: filter
                .status
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
            provider: filter.provider,
            scope: customer_scope(ctx)?,
        };
        let found = calls::list(&api.db, &store_filter, before, limit)
            .await
            .map_err(ApiError::from)?;
        let items = found.into_iter().map(|c| (c.id.to_string(), c)).collect();
        let page = Page::forward(items, limit, before.is_some());
        let page_info = PageInfo::of(&page);
        Ok(CallConnection {
            nodes: page.items.into_iter().map(|(_, c)| CallNode(c)).collect(),
            page_info,
        })
    }

    /// One call; `NOT_FOUND` if it does not exist or its customer is not visible.
    async fn call(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<CallNode> {
        let id: CallId = parse_id("id", &id)?;
        Ok(CallNode(visible_call(ctx, id).await?))
    }

    /// The call queue in dial order: highest priority (lead score, then age) first, then the
    /// earliest due.
    async fn call_queue(
        &self,
        ctx: &Context<'_>,
        filter: Option<CallQueueFilter>,
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<CallNode>> {
        let api = ctx.data::<ApiContext>()?;
        let limit = first_or_default(first, api.pages)?;
        let filter = filter.unwrap_or_default();
        let queued = calls::queue(
            &api.db,
            filter.provider.as_deref(),
            &customer_scope(ctx)?,
            i64::try_from(limit).unwrap_or(i64::MAX),
        )
        .await
        .map_err(ApiError::from)?;
        Ok(queued.into_iter().map(CallNode).collect())
    }

    /// The do-not-call list, by number, after the number `after`.
    async fn do_not_call_list(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Vec<DoNotCallEntry>> {
        let api = ctx.data::<ApiContext>()?;
        let limit = first_or_default(first, api.pages)?;
        let entries = calls::list_do_not_call(
            &api.db,
            after.as_deref(),
            i64::try_from(limit).unwrap_or(i64::MAX),
        )
        .await
        .map_err(ApiError::from)?;
        Ok(entries
            .into_iter()
            .map(|e| DoNotCallEntry {
                phone: e.phone,
                reason: e.reason,
                source: e.source,
                created_by: e.created_by,
                created_at: DateTime::from_naive_utc_and_offset(e.created_at, Utc),
            })
            .collect())
    }
}

/// Call mutations.
#[derive(Default, Debug)]
pub(crate) struct CallMutation;

impl CallMutation {
    async fn queue(
        ctx: &Context<'_>,
        customer_id: &ID,
        agent: Option<&str>,
        not_before: Option<DateTime<Utc>>,
        action: &str,
    ) -> Result<CallNode, ApiError> {
        let api = ctx
            .data::<ApiContext>()
            .map_err(|e| ApiError::Internal(e.message))?;
        let id: CustomerId = parse_id("customerId", customer_id)?;
        let customer = visible_customer(ctx, id).await?;
        if customer.deleted_at.is_some() {
            return Err(ApiError::NotFound {
                entity: "customer",
                id: id.to_string(),
            });
        }
        let auditor = Auditor::of(ctx)?;
        let mut changed = serde_json::Map::new();
        changed.insert("agent".into(), agent.into());
        changed.insert(
            "notBefore".into(),
            not_before.map(|t| t.to_rfc3339()).into(),
        );
        let entry = auditor.entry(action, "customer", id.to_string(), changed);
        let call = api
            .voice
            .enqueue(id, agent, not_before, &auditor.actor(), None, Some(entry))
            .await
            .map_err(voice_error)?;
        tracing::info!(call_id = %call.id, customer_id = %id, "Call queued.");
        Ok(CallNode(call))
    }
}

#[Object]
impl CallMutation {
    /// `/voice-call`: calls a customer now through the call queue (calling hours, spacing,
    /// concurrency and do-not-call still apply; the call waits if it must). `agent` picks a
    /// configured voice agent; by default the one speaking the customer's language.
    async fn start_voice_call(
        &self,
        ctx: &Context<'_>,
        customer_id: ID,
        agent: Option<String>,
    ) -> async_graphql::Result<CallNode> {
        Ok(Self::queue(ctx, &customer_id, agent.as_deref(), None, "call.start").await?)
    }

    /// Queues a call for `notBefore` (default now).
    async fn enqueue_call(
        &self,
        ctx: &Context<'_>,
        customer_id: ID,
        agent: Option<String>,
        not_before: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<CallNode> {
        Ok(Self::queue(
            ctx,
            &customer_id,
            agent.as_deref(),
            not_before,
            "call.enqueue",
        )
        .await?)
    }

    /// Cancels a queued call (`CONFLICT` once it has ended); a call in progress is stopped at
    /// the provider.
    async fn cancel_queued_call(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: Option<String>,
    ) -> async_graphql::Result<CallNode> {
        let api = ctx.data::<ApiContext>()?;
        let id: CallId = parse_id("id", &id)?;
        visible_call(ctx, id).await?;
        let auditor = Auditor::of(ctx)?;
        let reason = reason.unwrap_or_else(|| format!("canceled by {}", auditor.actor()));
        let mut changed = serde_json::Map::new();
        changed.insert("reason".into(), reason.clone().into());
        let entry = auditor.entry("call.cancel", "call", id.to_string(), changed);
        let call = api
            .voice
            .cancel(id, &reason, Some(entry))
            .await
            .map_err(voice_error)?;
        Ok(CallNode(call))
    }

    /// Puts a number on the do-not-call list: queued calls to it are blocked at dial time.
    async fn add_do_not_call(
        &self,
        ctx: &Context<'_>,
        phone: String,
        reason: String,
    ) -> async_graphql::Result<DoNotCallEntry> {
        let api = ctx.data::<ApiContext>()?;
        let phone = parse_phone(api, &phone)?;
        let reason = reason.trim().to_owned();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(invalid("reason", "invalid_length", "reason: 1 to 500 characters").into());
        }
        let auditor = Auditor::of(ctx)?;
        let mut changed = serde_json::Map::new();
        changed.insert("reason".into(), reason.clone().into());
        let now = api.clock.now();
        // The number itself stays out of the hash-chained record (GDPR erasure).
        let target = crm_store::gdpr::phone_ref(&api.db, phone.as_str(), now)
            .await
            .map_err(ApiError::from)?;
        let entry = auditor.entry("do_not_call.add", "phone", target, changed);
        calls::add_do_not_call(
            &api.db,
            phone.as_str(),
            &reason,
            "api",
            &auditor.actor(),
            Some(entry),
            now,
        )
        .await
        .map_err(ApiError::from)?;
        let entry = calls::list_do_not_call(&api.db, None, i64::MAX)
            .await
            .map_err(ApiError::from)?
            .into_iter()
            .find(|e| e.phone == phone.as_str())
            .ok_or_else(|| ApiError::Internal("the entry just added is missing".into()))?;
        Ok(DoNotCallEntry {
            phone: entry.phone,
            reason: entry.reason,
            source: entry.source,
            created_by: entry.created_by,
            created_at: DateTime::from_naive_utc_and_offset(entry.created_at, Utc),
        })
    }

    /// Takes a number off the do-not-call list; false if it was not listed.
    async fn remove_do_not_call(
        &self,
        ctx: &Context<'_>,
        phone: String,
    ) -> async_graphql::Result<bool> {
        let api = ctx.data::<ApiContext>()?;
        let phone = parse_phone(api, &phone)?;
        let target = crm_store::gdpr::phone_ref(&api.db, phone.as_str(), api.clock.now())
            .await
            .map_err(ApiError::from)?;
        let entry = Auditor::of(ctx)?.entry(
            "do_not_call.remove",
            "phone",
            target,
            serde_json::Map::new(),
        );
        Ok(
            calls::remove_do_not_call(&api.db, phone.as_str(), Some(entry))
                .await
                .map_err(ApiError::from)?,
        )
    }
}

/// A change of a call (status, end, outcome).
#[derive(Debug)]
pub(crate) struct CallEventNode(Arc<Event>, serde_json::Value);

#[Object(name = "CallEvent")]
impl CallEventNode {
    /// Its place in the event stream: pass the last one seen as `afterSeq` to resume.
    async fn seq(&self) -> i64 {
        self.0.seq
    }
    /// The call.
    async fn call_id(&self) -> ID {
        ID(self.1["callId"].as_str().unwrap_or_default().to_owned())
    }
    /// The customer.
    async fn customer_id(&self) -> ID {
        ID(self.1["customerId"].as_str().unwrap_or_default().to_owned())
    }
    /// The attempt.
    async fn attempt(&self) -> i32 {
        self.1["attempt"]
            .as_i64()
            .and_then(|a| i32::try_from(a).ok())
            .unwrap_or(1)
    }
    /// Where the call is now.
    async fn status(&self) -> Option<CallStatus> {
        self.1["status"]
            .as_str()
            .and_then(|s| s.parse::<crm_domain::CallStatus>().ok())
            .map(Into::into)
    }
    /// How it ended.
    async fn disposition(&self) -> Option<CallDisposition> {
        self.1["disposition"]
            .as_str()
            .and_then(|s| s.parse::<crm_domain::Disposition>().ok())
            .map(Into::into)
    }
    /// The outcome.
    async fn outcome(&self) -> Option<&str> {
        self.1["outcome"].as_str()
    }
    /// Whether this is the final outcome of the queue entry.
    async fn is_final(&self) -> bool {
        self.1["final"].as_bool().unwrap_or(false)
    }
    /// Everything the event carries.
    async fn detail(&self) -> Json<serde_json::Value> {
        Json(self.1.clone())
    }
    /// When.
    async fn at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// Which call events to stream.
#[derive(InputObject, Debug, Default)]
pub(crate) struct CallEventFilter {
    /// Of one call.
    call_id: Option<ID>,
    /// Of one customer's calls.
    customer_id: Option<ID>,
}

/// Call subscriptions.
#[derive(Default, Debug)]
pub(crate) struct CallSubscription;

#[Subscription]
impl CallSubscription {
    /// The call's transcript as it is spoken: first the stored segments after `afterSeq`, then
    /// each new one as it commits; ends when the call has ended. Resume after a disconnect with
    /// the last `seq` seen.
    async fn call_transcript(
        &self,
        ctx: &Context<'_>,
        call_id: ID,
        after_seq: Option<i32>,
    ) -> async_graphql::Result<BoxStream<'static, SegmentNode>> {
        crate::authz::require(ctx, "Subscription.callTranscript")?;
        // A feed rendering one live segment for subscribers who passed the checks below.
        if let Some(RenderSegment(segment)) = ctx.data_opt::<RenderSegment>() {
            return Ok(stream::once(std::future::ready(segment.clone())).boxed());
        }
        let api = ctx.data::<ApiContext>()?;
        let id: CallId = parse_id("callId", &call_id)?;
        let join = ctx.data_opt::<JoinSlot>();
        // Subscribe first, then read what is stored: nothing falls between the two.
        let (live, feed) = match join {
            Some(_) => (None, Some(api.transcripts.feed(&api.events, id))),
            None => (
                Some(
                    api.events
                        .stream(&[calls::TRANSCRIPT_TOPIC, calls::TOPIC], None),
                ),
                None,
            ),
        };
        let call = visible_call(ctx, id).await?;
        let stored = calls::segments(&api.db, id, after_seq.unwrap_or(0), i64::MAX)
            .await
            .map_err(ApiError::from)?;
        let last = stored.last().map_or(after_seq.unwrap_or(0), |s| s.seq);
        let replay: Vec<SegmentNode> = stored.into_iter().map(|s| SegmentNode::of(id, s)).collect();
        let ended = call.status == crm_domain::CallStatus::Ended;
        let replay = stream::iter(replay);
        // On `/graphql/ws` the live part is the call's shared feed (see `transcripts`): this
        // subscriber has passed the policy and the row-level check, and joins with its scope.
        if let (Some(slot), Some(feed)) = (join, feed) {
            slot.fill(Joined {
                feed,
                last,
                ended,
                principal: ctx.data::<Principal>()?.clone(),
                scope: customer_scope(ctx)?,
            });
            return Ok(replay.boxed());
        }
        let Some(live) = live else {
            return Ok(replay.boxed());
        };
        let key = id.to_string();
        let live = live
            .map(move |event| {
                let payload: serde_json::Value =
                    serde_json::from_str(&event.payload).unwrap_or_default();
                (event, payload)
            })
            .filter(move |(_, payload)| {
                let ours = payload["callId"].as_str() == Some(key.as_str());
                async move { ours }
            })
            .take_while(|(event, payload)| {
                let open = !call_ended(event, payload);
                async move { open }
            })
            .filter_map(move |(event, payload)| async move {
                SegmentNode::live(id, &event, &payload).filter(|s| s.seq > last || s.corrected)
            });
        let live = if ended {
            live.take(0).boxed()
        } else {
            live.boxed()
        };
        Ok(replay.chain(live).boxed())
    }

    /// Call status changes and ends of the customers the caller may see, as they commit.
    /// With `afterSeq`, first every stored event after it.
    async fn call_events(
        &self,
        ctx: &Context<'_>,
        filter: Option<CallEventFilter>,
        after_seq: Option<i64>,
    ) -> async_graphql::Result<impl Stream<Item = CallEventNode> + use<>> {
        crate::authz::require(ctx, "Subscription.callEvents")?;
        let api = ctx.data::<ApiContext>()?;
        let scope = customer_scope(ctx)?;
        let filter = filter.unwrap_or_default();
        let call: Option<String> = filter
            .call_id
            .as_ref()
            .map(|id| parse_id::<CallId>("filter.callId", id).map(|id| id.to_string()))
            .transpose()?;
        let customer: Option<String> = filter
            .customer_id
            .as_ref()
            .map(|id| parse_id::<CustomerId>("filter.customerId", id).map(|id| id.to_string()))
            .transpose()?;
        let db = api.db.clone();
        Ok(api
            .events
            .stream(&[calls::TOPIC], after_seq)
            .filter_map(move |event| {
                let (db, scope, call, customer) =
                    (db.clone(), scope.clone(), call.clone(), customer.clone());
                async move {
                    let id = event.customer_id.as_deref()?;
                    if customer.as_deref().is_some_and(|c| c != id) {
                        return None;
                    }
                    let payload: serde_json::Value = serde_json::from_str(&event.payload).ok()?;
                    if call
                        .as_deref()
                        .is_some_and(|c| payload["callId"].as_str() != Some(c))
                    {
                        return None;
                    }
                    if scope != CustomerScope::All {
                        let id: CustomerId = id.parse().ok()?;
                        let lead = customers::get(&db, id).await.ok().flatten()?;
                        if !scope.covers(lead.owner.as_deref()) {
                            return None;
                        }
                    }
                    Some(CallEventNode(event, payload))
                }
            }))
    }
}
