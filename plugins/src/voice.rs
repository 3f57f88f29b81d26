//! The voice-call agent (`/voice-call`): the call queue, dialling through a provider, the
//! ingest of provider events, and what a call's end brings (interaction, retry, re-score,
//! follow-up).
//!
//! - A call is queued ([`Voice::enqueue`]) by the pipeline's `voice-call` step, the API or the
//!   CLI, with a `voice-dial` job due at its `not_before` and ranked by the lead's score and age.
//!   Do-not-call and missing consent refuse it there.
//! - The `voice-dial` job checks everything again at dial time — do-not-call, consent, the
//!   calling hours in the lead's local time, the minimum interval between calls to one number,
//!   the provider's concurrency limit — and either places the call or moves it to the next
//!   allowed time. A placement whose outcome is unknown (a timeout) is never retried: a second
//!   call would be worse than a missed one.
//! - Provider events (webhooks, or the simulator's deliveries as `voice-deliver` jobs) go
//!   through [`Voice::ingest`]: idempotent, forward-only, persisted before they are published.
//! - When a call ends: an interaction of kind call is logged; an unanswered call is retried per
//!   the retry policy; the last attempt's end queues `voice-finish`, which re-scores the lead and
//!   moves its pipeline run on to the next agent (follow-up).

use crate::{
    pipeline::{Pipeline, StepPayload, to_record},
    runner::{JobError, JobHandler, RetryPolicy},
};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use crm_domain::{
    AgentSpec, CallId, CallStatus, CallUpdate, Clock, Customer, CustomerId, Direction, Disposition,
    Interaction, InteractionId, InteractionKind, ProviderError, ProviderKind, StartCall,
    VoiceProvider,
    calling::{self, CallingHours},
    interaction::BODY_MAX_LEN,
    voice::normalize_outcome,
};
use crm_store::{
    Db, StoreError,
    audit::NewAuditEntry,
    calls::{self, Attempts, Call, Claim, Dequeue, EndPlan, Ingested, NewCall},
    customers,
    effects::Effect,
    jobs::NewJob,
    pipeline::{self, Advance, RunStatus, StepStatus},
    scores,
};
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, sync::Arc};

/// The pipeline agent: queues a call for the step's lead.
pub const VOICE_CALL: &str = "voice-call";
/// Dials one queued call.
pub const VOICE_DIAL: &str = "voice-dial";
/// Ingests a delivery a provider scripted itself (the simulator).
pub const VOICE_DELIVER: &str = "voice-deliver";
/// Re-scores the lead and moves its run on after a call's final outcome.
pub const VOICE_FINISH: &str = "voice-finish";
/// Asks providers about calls whose final event never arrived.
pub const VOICE_RECONCILE: &str = "voice-reconcile";

/// A configured voice agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    /// The provider that runs it.
    pub kind: ProviderKind,
    /// What the provider needs.
    pub spec: AgentSpec,
}

/// The voice settings, validated.
#[derive(Debug, Clone)]
pub struct VoiceSettings {
    /// Agents by name.
    pub agents: BTreeMap<String, Agent>,
    /// The agent for leads whose language no agent speaks.
    pub default_agent: String,
    /// Calling hours in the lead's local time.
    pub hours: CallingHours,
    /// Retries of unanswered calls and the spacing of calls to one number.
    pub retry: calling::RetryPolicy,
    /// Simultaneous calls per provider.
    pub max_concurrent: BTreeMap<ProviderKind, u32>,
    /// The time zone of leads with neither a time zone nor a phone country we know.
    pub default_time_zone: Tz,
    /// Our public base URL, for providers that take a webhook URL per call
    /// (`{base}/webhooks/voice/{provider}`).
    pub public_url: Option<String>,
    /// A call handed to a provider this long ago and not ended is reconciled.
    pub reconcile_after: Duration,
    /// A queued call that could not be placed for this long fails (provider down).
    pub give_up_after: Duration,
}

impl Default for VoiceSettings {
    fn default() -> Self {
        let spec = AgentSpec {
            name: "en".to_owned(),
            language: "en".to_owned(),
            ..AgentSpec::default()
        };
        Self {
            agents: [(
                "en".to_owned(),
                Agent {
                    kind: ProviderKind::Simulator,
                    spec,
                },
            )]
            .into(),
            default_agent: "en".to_owned(),
            hours: CallingHours::default(),
            retry: calling::RetryPolicy::default(),
            max_concurrent: BTreeMap::new(),
            default_time_zone: chrono_tz::Europe::Berlin,
            public_url: None,
            reconcile_after: Duration::minutes(30),
            give_up_after: Duration::hours(24),
        }
    }
}

/// Why a call cannot be queued, placed or ingested.
#[derive(Debug, thiserror::Error)]
pub enum VoiceError {
    /// Policy forbids calling this lead (do-not-call, no consent, no phone).
    #[error("{0}")]
    Blocked(String),
    /// No such agent.
    #[error("unknown voice agent `{0}`")]
    UnknownAgent(String),
    /// No such customer or call.
    #[error("{entity} {id} does not exist")]
    NotFound {
        /// What.
        entity: &'static str,
        /// Its id.
        id: String,
    },
    /// The call cannot change now (it is no longer queued).
    #[error("{0}")]
    Conflict(String),
    /// The provider is not configured in this deployment.
    #[error("the voice provider `{0}` is not configured")]
    NoProvider(ProviderKind),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The voice agent: queue, dialling, ingest.
#[derive(Debug, Clone)]
pub struct Voice {
    db: Db,
    clock: Arc<dyn Clock>,
    pipeline: Arc<Pipeline>,
    settings: Arc<VoiceSettings>,
    providers: Arc<BTreeMap<ProviderKind, Arc<dyn VoiceProvider>>>,
}

/// The payload of `voice-dial` and `voice-finish`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CallPayload {
    /// The call.
    pub call_id: CallId,
}

/// The payload of `voice-deliver`: one scripted delivery, and the ones after it. A call's
/// deliveries run one after the other: each job, once its body is ingested, queues the next
/// (at its time), so that lines due close together (or a worker's batch of due jobs run at
/// once) cannot overtake each other, and the end never comes before the last line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeliveryPayload {
    /// The provider whose parser reads the body.
    pub provider: String,
    /// The body, as the provider would post it.
    pub body: String,
    /// The call, and this delivery's place in its script (for the next one's dedupe key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<(CallId, usize)>,
    /// The deliveries still to come: when, and the body.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub next: Vec<(DateTime<Utc>, String)>,
}

impl DeliveryPayload {
    /// The job of delivery `n` of `call`'s script, at `at`, with the rest after it.
    fn job(
        provider: &str,
        call: CallId,
        n: usize,
        at: DateTime<Utc>,
        body: String,
        next: Vec<(DateTime<Utc>, String)>,
    ) -> NewJob {
        NewJob {
            kind: VOICE_DELIVER.to_owned(),
            payload: serde_json::to_string(&Self {
                provider: provider.to_owned(),
                body,
                call: Some((call, n)),
                next,
            })
            .unwrap_or_default(),
            dedupe_key: Some(format!("{VOICE_DELIVER}:{call}:{n}")),
            priority: 10,
            run_at: at,
            max_attempts: RetryPolicy::default().max_attempts,
        }
    }
}

impl Voice {
    /// The agent over `providers` (one per kind used by an agent).
    pub fn new(
        db: Db,
        clock: Arc<dyn Clock>,
        pipeline: Arc<Pipeline>,
        settings: VoiceSettings,
        providers: BTreeMap<ProviderKind, Arc<dyn VoiceProvider>>,
    ) -> Self {
        Self {
            db,
            clock,
            pipeline,
            settings: Arc::new(settings),
            providers: Arc::new(providers),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &VoiceSettings {
        &self.settings
    }

    /// The provider of `kind`, if configured.
    pub fn provider(&self, kind: ProviderKind) -> Option<&Arc<dyn VoiceProvider>> {
        self.providers.get(&kind)
    }

    /// The agent named `requested`, or the one speaking the lead's language, or the default.
    pub fn agent_for(
        &self,
        customer: &Customer,
        requested: Option<&str>,
    ) -> Result<(&str, &Agent), VoiceError> {
        if let Some(name) = requested {
            return self
                .settings
                .agents
                .get_key_value(name)
                .map(|(k, a)| (k.as_str(), a))
                .ok_or_else(|| VoiceError::UnknownAgent(name.to_owned()));
        }
        // The agent of the lead's exact language tag, else of its language, else one whose
        // locale has that language (`sr-RS` serves an `sr` lead); the first by name on a tie.
        let by_language = customer.language.as_ref().and_then(|language| {
            let (tag, primary) = (language.as_str(), language.primary());
            self.settings
                .agents
                .iter()
                .filter_map(|agent| {
                    let theirs = agent.1.spec.language.as_str();
                    let rank = if theirs.eq_ignore_ascii_case(tag) {
                        0
                    } else if theirs.eq_ignore_ascii_case(primary) {
                        1
                    } else if theirs
                        .split(['-', '_'])
                        .next()
                        .is_some_and(|p| p.eq_ignore_ascii_case(primary))
                    {
                        2
                    } else {
                        return None;
                    };
                    Some((rank, agent))
                })
                .min_by_key(|(rank, _)| *rank)
                .map(|(_, agent)| agent)
        });
        by_language
            .or_else(|| {
                self.settings
                    .agents
                    .get_key_value(&self.settings.default_agent)
            })
            .map(|(k, a)| (k.as_str(), a))
            .ok_or_else(|| VoiceError::UnknownAgent(self.settings.default_agent.clone()))
    }

    /// Why this lead must not be called now, if it must not.
    pub async fn blocked(&self, customer: &Customer) -> Result<Option<String>, VoiceError> {
        if customer.deleted_at.is_some() {
            return Ok(Some("the customer was deleted".to_owned()));
        }
        let Some(phone) = &customer.phone else {
            return Ok(Some("the customer has no phone number".to_owned()));
        };
        if !customer.consent_call {
            return Ok(Some(
                "the customer has not consented to calls (consentCall is false)".to_owned(),
            ));
        }
        if calls::is_do_not_call(&self.db, phone.as_str()).await? {
            return Ok(Some(format!(
                "{} is on the do-not-call list",
                phone.as_str()
            )));
        }
        Ok(None)
    }

    fn time_zone(&self, customer: &Customer) -> Tz {
        let country = customer.phone.as_ref().and_then(|p| p.country());
        calling::time_zone_for(
            country.as_ref().map(|c| c.as_str()),
            customer.time_zone.as_ref().map(|t| t.tz()),
            self.settings.default_time_zone,
        )
    }

    async fn customer(&self, id: CustomerId) -> Result<Customer, VoiceError> {
        customers::get(&self.db, id)
            .await?
            .ok_or_else(|| VoiceError::NotFound {
                entity: "customer",
                id: id.to_string(),
            })
    }

    /// Queues a call to `customer_id` (checked against policy now and again at dial time).
    pub async fn enqueue(
        &self,
        customer_id: CustomerId,
        agent: Option<&str>,
        not_before: Option<DateTime<Utc>>,
        requested_by: &str,
        step: Option<&StepPayload>,
        audit: Option<NewAuditEntry>,
    ) -> Result<Call, VoiceError> {
        let customer = self.customer(customer_id).await?;
        if let Some(reason) = self.blocked(&customer).await? {
            return Err(VoiceError::Blocked(reason));
        }
        let (agent_name, agent) = self.agent_for(&customer, agent)?;
        if !self.providers.contains_key(&agent.kind) {
            return Err(VoiceError::NoProvider(agent.kind));
        }
        let now = self.clock.now();
        let score = scores::latest_for_customers(&self.db, &[customer.id])
            .await?
            .into_iter()
            .next()
            .map(|s| i32::from(s.result.score));
        let id = CallId::new();
        let not_before = not_before.unwrap_or(now).max(now);
        let new = NewCall {
            id,
            customer_id,
            first_call_id: id,
            attempt: 1,
            agent: agent_name.to_owned(),
            provider: agent.kind.as_str().to_owned(),
            to_number: customer
                .phone
                .as_ref()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            language: agent.spec.language.clone(),
            priority: calling::queue_priority(score),
            not_before,
            run_id: step.map(|s| s.run_id),
            step_id: step.map(|s| s.step_id),
            requested_by: requested_by.to_owned(),
        };
        let job = dial_job(new.id, new.priority, not_before);
        Ok(calls::enqueue(&self.db, &new, job, audit, now).await?)
    }

    /// Cancels a queued call (a call already ringing is stopped at the provider).
    pub async fn cancel(
        &self,
        id: CallId,
        reason: &str,
        audit: Option<NewAuditEntry>,
    ) -> Result<Call, VoiceError> {
        let call = calls::get(&self.db, id)
            .await?
            .ok_or_else(|| VoiceError::NotFound {
                entity: "call",
                id: id.to_string(),
            })?;
        let now = self.clock.now();
        let effects = self.finish_effects(&call, now);
        let ended = Dequeue::Ended {
            disposition: Disposition::Canceled,
            reason: reason.to_owned(),
            effects,
        };
        if let Some(call) =
            calls::dequeue(&self.db, id, CallStatus::Queued, ended, audit.clone(), now).await?
        {
            return Ok(call);
        }
        if call.status == CallStatus::Ended {
            return Err(VoiceError::Conflict(format!("call {id} has already ended")));
        }
        // In flight: ask the provider to stop; its final event ends the record.
        let kind: ProviderKind = call
            .provider
            .parse()
            .map_err(|_| VoiceError::Conflict(format!("unknown provider {}", call.provider)))?;
        let provider = self.provider(kind).ok_or(VoiceError::NoProvider(kind))?;
        if let Some(provider_id) = &call.provider_call_id {
            provider.stop_call(provider_id).await.map_err(|e| {
                VoiceError::Conflict(format!("the provider did not stop the call: {e}"))
            })?;
        }
        let update = CallUpdate {
            provider_call_id: call.provider_call_id.clone().unwrap_or_default(),
            call_id: Some(id),
            event: "canceled".to_owned(),
            dedupe_key: "canceled".to_owned(),
            status: Some(CallStatus::Ended),
            disposition: Some(Disposition::Canceled),
            ended_reason: Some(reason.to_owned()),
            ..CallUpdate::default()
        };
        match self.apply(&call, &update, audit).await? {
            Ingested::Applied { call, .. } => Ok(*call),
            Ingested::Duplicate => Ok(call),
        }
    }

    /// The pipeline continuation of a call's final outcome.
    fn finish_effects(&self, call: &Call, now: DateTime<Utc>) -> Vec<Effect> {
        vec![Effect::Job(NewJob {
            kind: VOICE_FINISH.to_owned(),
            payload: serde_json::to_string(&CallPayload {
                call_id: call.first_call_id,
            })
            .unwrap_or_default(),
            // One per attempt: the job finds out whether the entry's outcome is final.
            dedupe_key: Some(format!("{VOICE_FINISH}:{}", call.id)),
            priority: 0,
            run_at: now,
            max_attempts: RetryPolicy::default().max_attempts,
        })]
    }

    /// What a call's end brings: its interaction, a retry or the final outcome's follow-up,
    /// and a do-not-call entry when the person asked for it.
    fn end_plan(&self, call: &Call, now: DateTime<Utc>) -> EndPlan {
        let disposition = call.disposition.unwrap_or(Disposition::Failed);
        let ended_at = call.ended_at.unwrap_or(now);
        let retry_at = self
            .settings
            .retry
            .next_attempt(
                disposition,
                u32::try_from(call.attempt).unwrap_or(u32::MAX),
                ended_at,
            )
            .map(|at| at.max(now));
        let retry = retry_at.map(|at| {
            let id = CallId::new();
            let new = NewCall {
                id,
                customer_id: call.customer_id,
                first_call_id: call.first_call_id,
                attempt: call.attempt + 1,
                agent: call.agent.clone(),
                provider: call.provider.clone(),
                to_number: call.to_number.clone(),
                language: call.language.clone(),
                priority: call.priority,
                not_before: at,
                run_id: call.run_id,
                step_id: call.step_id,
                requested_by: call.requested_by.clone(),
            };
            let job = dial_job(new.id, new.priority, at);
            (new, job)
        });
        let outcome = call.outcome.as_deref().and_then(normalize_outcome);
        let placed_at = call.started_at.or(call.dialed_at).unwrap_or(ended_at);
        let interaction = Some(placed_at).map(|placed_at| {
            let mut body = String::new();
            if let Some(summary) = &call.summary {
                body.push_str(summary);
                body.push_str("\n\n");
            }
            if let Some(transcript) = &call.transcript {
                body.push_str(transcript);
            }
            let body = match body.char_indices().nth(BODY_MAX_LEN) {
                Some((cut, _)) => body[..cut].to_owned(),
                None => body,
            };
            Interaction {
                id: InteractionId::new(),
                customer_id: call.customer_id,
                kind: InteractionKind::Call,
                direction: Some(Direction::Outbound),
                subject: Some(format!(
                    "Voice call ({}, attempt {}): {}",
                    call.agent,
                    call.attempt,
                    outcome
                        .as_deref()
                        .unwrap_or(disposition.as_str())
                        .replace('_', " ")
                )),
                body: (!body.trim().is_empty()).then(|| body.trim_end().to_owned()),
                outcome: Some(
                    outcome
                        .clone()
                        .unwrap_or_else(|| disposition.as_str().to_owned()),
                ),
                occurred_at: placed_at,
                duration_seconds: call
                    .duration_secs
                    .map(|d| d.round().clamp(0.0, 86_400.0) as i32),
                author: Some(format!("voice-agent:{}", call.agent)),
                created_at: now,
                updated_at: now,
            }
        });
        let do_not_call = (outcome.as_deref() == Some("do_not_call"))
            .then(|| "the person asked not to be called again".to_owned());
        let final_attempt = retry.is_none();
        EndPlan {
            interaction,
            final_attempt,
            retry,
            do_not_call,
            effects: if final_attempt {
                self.finish_effects(call, now)
            } else {
                Vec::new()
            },
        }
    }

    async fn apply(
        &self,
        call: &Call,
        update: &CallUpdate,
        audit: Option<NewAuditEntry>,
    ) -> Result<Ingested, VoiceError> {
        let now = self.clock.now();
        let this = self.clone();
        let plan = move |ended: &Call| this.end_plan(ended, now);
        Ok(calls::ingest(&self.db, call.id, update, &plan, audit, now).await?)
    }

    /// Applies a verified provider event. An event for a call we do not know is an error
    /// (`NotFound`), never a new call.
    pub async fn ingest(
        &self,
        kind: ProviderKind,
        update: &CallUpdate,
    ) -> Result<Ingested, VoiceError> {
        let call = match update.call_id {
            Some(id) => calls::get(&self.db, id).await?,
            None => None,
        };
        let call = match call {
            Some(call) => Some(call),
            None if !update.provider_call_id.is_empty() => {
                calls::by_provider(&self.db, kind.as_str(), &update.provider_call_id).await?
            }
            None => None,
        };
        let call = call
            .filter(|c| c.provider == kind.as_str())
            .ok_or_else(|| VoiceError::NotFound {
                entity: "call",
                id: update
                    .call_id
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| format!("{kind}:{}", update.provider_call_id)),
            })?;
        self.apply(&call, update, None).await
    }

    /// Dials a queued call, or moves it to when it may be dialled.
    pub async fn dial(&self, id: CallId) -> Result<(), JobError> {
        let store = |e: StoreError| JobError::Retryable(e.to_string());
        let Some(call) = calls::get(&self.db, id).await.map_err(store)? else {
            return Err(JobError::Fatal(format!("call {id} does not exist")));
        };
        if call.status != CallStatus::Queued {
            return Ok(()); // Dialled, ended or cancelled meanwhile: a replay.
        }
        let now = self.clock.now();
        let customer = customers::get(&self.db, call.customer_id)
            .await
            .map_err(store)?;
        let blocked = match &customer {
            None => Some("the customer no longer exists".to_owned()),
            Some(customer) => self
                .blocked(customer)
                .await
                .map_err(|e| JobError::Retryable(e.to_string()))?,
        };
        if let Some(reason) = blocked {
            return self
                .end_unplaced(&call, CallStatus::Queued, Disposition::Blocked, reason, now)
                .await;
        }
        let Some(customer) = customer else {
            return Ok(());
        };
        let phone = customer
            .phone
            .as_ref()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        if phone != call.to_number {
            tracing::info!(call_id = %id, "The lead's number changed since the call was queued; dialling the new one.");
        }
        // Inside the lead's calling hours? (The spacing between calls to one number is
        // checked by the claim, under its lock.)
        let tz = self.time_zone(&customer);
        let not_before = call.not_before.max(now);
        let open_at = calling::next_allowed(&self.settings.hours, tz, not_before);
        if open_at > not_before {
            let reason = format!("outside calling hours in {tz}");
            return self
                .defer(&call, CallStatus::Queued, open_at, reason, now)
                .await;
        }
        let kind: ProviderKind = call
            .provider
            .parse()
            .map_err(|_| JobError::Fatal(format!("unknown provider {}", call.provider)))?;
        let Some(provider) = self.provider(kind).cloned() else {
            return self
                .end_unplaced(
                    &call,
                    CallStatus::Queued,
                    Disposition::Failed,
                    format!("the voice provider `{kind}` is not configured"),
                    now,
                )
                .await;
        };
        // Claim it within the provider's concurrency limit.
        let limit = i64::from(
            self.settings
                .max_concurrent
                .get(&kind)
                .copied()
                .unwrap_or(10),
        );
        let rules = calls::ClaimRules {
            provider: kind.as_str(),
            limit,
            number: &phone,
            min_interval: self.settings.retry.min_interval(),
            reconcile: &reconcile_job(call.id, now + self.settings.reconcile_after),
        };
        match calls::claim(&self.db, id, rules, now)
            .await
            .map_err(store)?
        {
            Claim::Claimed => {}
            Claim::Gone => return Ok(()),
            // The number was dialled less than the minimum interval ago.
            Claim::Spaced(last) => {
                let at = calling::next_allowed(
                    &self.settings.hours,
                    tz,
                    last + self.settings.retry.min_interval(),
                );
                return self
                    .defer(
                        &call,
                        CallStatus::Queued,
                        at,
                        "the number was called recently".to_owned(),
                        now,
                    )
                    .await;
            }
            Claim::Full => {
                return self
                    .defer(
                        &call,
                        CallStatus::Queued,
                        now + Duration::seconds(15),
                        format!("{kind} is at its limit of {limit} simultaneous calls"),
                        now,
                    )
                    .await;
            }
        }
        let Some((agent_name, agent)) = self
            .settings
            .agents
            .get_key_value(&call.agent)
            .map(|(k, a)| (k.clone(), a.clone()))
        else {
            return self
                .end_unplaced(
                    &call,
                    CallStatus::Dialing,
                    Disposition::Failed,
                    format!("the voice agent `{}` is no longer configured", call.agent),
                    now,
                )
                .await;
        };
        let mut variables = agent.spec.variables.clone();
        variables.insert("name".to_owned(), customer.name.clone());
        if let Some(company) = &customer.company {
            variables.insert("company".to_owned(), company.clone());
        }
        let start = StartCall {
            call_id: call.id,
            customer_id: customer.id,
            to: phone,
            attempt: u32::try_from(call.attempt).unwrap_or(1),
            customer_name: Some(customer.name.clone()),
            agent: AgentSpec {
                name: agent_name,
                ..agent.spec.clone()
            },
            variables,
            webhook_url: self
                .settings
                .public_url
                .as_ref()
                .map(|base| format!("{}/webhooks/voice/{kind}", base.trim_end_matches('/'))),
        };
        match provider.start_call(&start).await {
            Ok(started) => {
                // The first scripted delivery, carrying the rest (see `DeliveryPayload`).
                let mut script = provider
                    .scripted_deliveries(&start, &started, now)
                    .into_iter()
                    .map(|d| (now + Duration::milliseconds(d.after_ms), d.body));
                let mut jobs: Vec<NewJob> = script
                    .next()
                    .map(|(at, body)| {
                        DeliveryPayload::job(kind.as_str(), call.id, 0, at, body, script.collect())
                    })
                    .into_iter()
                    .collect();
                if jobs.is_empty() {
                    // A provider that posts webhooks: look it up if its end never arrives.
                    jobs.push(reconcile_job(call.id, now + self.settings.reconcile_after));
                }
                let dialed = Dequeue::Dialed {
                    provider_call_id: started.provider_call_id,
                    jobs,
                };
                calls::dequeue(&self.db, id, CallStatus::Dialing, dialed, None, now)
                    .await
                    .map_err(store)?;
                Ok(())
            }
            Err(ProviderError::Unavailable(message))
                if now - call.created_at < self.settings.give_up_after =>
            {
                self.defer(
                    &call,
                    CallStatus::Dialing,
                    now + Duration::seconds(60),
                    format!("the provider is unavailable: {message}"),
                    now,
                )
                .await
            }
            Err(error) => {
                let reason = match &error {
                    ProviderError::Unknown(_) => {
                        format!("{error}; not retried, because a retry could place a second call")
                    }
                    _ => error.to_string(),
                };
                self.end_unplaced(&call, CallStatus::Dialing, Disposition::Failed, reason, now)
                    .await
            }
        }
    }

    async fn defer(
        &self,
        call: &Call,
        from: CallStatus,
        not_before: DateTime<Utc>,
        reason: String,
        now: DateTime<Utc>,
    ) -> Result<(), JobError> {
        let job = dial_job(call.id, call.priority, not_before);
        let change = Dequeue::Deferred {
            not_before,
            reason,
            job,
        };
        calls::dequeue(&self.db, call.id, from, change, None, now)
            .await
            .map_err(|e| JobError::Retryable(e.to_string()))?;
        Ok(())
    }

    async fn end_unplaced(
        &self,
        call: &Call,
        from: CallStatus,
        disposition: Disposition,
        reason: String,
        now: DateTime<Utc>,
    ) -> Result<(), JobError> {
        tracing::info!(call_id = %call.id, %disposition, %reason, "Call not placed.");
        let change = Dequeue::Ended {
            disposition,
            reason,
            effects: self.finish_effects(call, now),
        };
        calls::dequeue(&self.db, call.id, from, change, None, now)
            .await
            .map_err(|e| JobError::Retryable(e.to_string()))?;
        Ok(())
    }

    /// After a call's final outcome: re-scores the lead and moves its run on.
    pub async fn finish(&self, first_call_id: CallId) -> Result<(), JobError> {
        let store = |e: StoreError| JobError::Retryable(e.to_string());
        let Some(first) = calls::get(&self.db, first_call_id).await.map_err(store)? else {
            return Err(JobError::Fatal(format!(
                "call {first_call_id} does not exist"
            )));
        };
        let now = self.clock.now();
        let customer = customers::get(&self.db, first.customer_id)
            .await
            .map_err(store)?;
        // The last attempt of the entry holds the outcome.
        let entry = calls::attempts(&self.db, Attempts::Entry(first.first_call_id))
            .await
            .map_err(store)?;
        if entry.iter().any(|c| c.status != CallStatus::Ended) {
            return Ok(()); // Another attempt is queued or in flight: its end finishes.
        }
        let last = entry.last().unwrap_or(&first);
        let detail = serde_json::json!({
            "callId": last.id.to_string(),
            "attempts": last.attempt,
            "disposition": last.disposition.map(Disposition::as_str),
            "outcome": last.outcome,
            "reason": last.reason,
        });
        let score = match customer.as_ref().filter(|c| c.deleted_at.is_none()) {
            Some(customer) => {
                let result = self
                    .pipeline
                    .score(&self.db, customer, now)
                    .await
                    .map_err(store)?;
                let latest = scores::latest_for_customers(&self.db, &[customer.id])
                    .await
                    .map_err(store)?
                    .into_iter()
                    .next();
                to_record(
                    &self.pipeline,
                    latest.as_ref(),
                    customer.id,
                    &result,
                    "call",
                    now,
                )
            }
            None => None,
        };
        let (Some(run_id), Some(step_id)) = (first.run_id, first.step_id) else {
            if let Some(score) = score {
                scores::record(&self.db, &score, None)
                    .await
                    .map_err(store)?;
            }
            return Ok(());
        };
        let run = pipeline::get(&self.db, run_id)
            .await
            .map_err(store)?
            .ok_or_else(|| JobError::Fatal(format!("run {run_id} does not exist")))?;
        let (next, status) = self.pipeline.after_agent(
            run.branch.as_deref(),
            VOICE_CALL,
            first.customer_id,
            run_id,
            now,
        );
        let advance = Advance {
            step_id,
            run_id,
            detail: Some(detail.to_string()),
            score,
            next,
            status,
            branch: None,
            effects: vec![pipeline::event(
                run_id,
                first.customer_id,
                VOICE_CALL,
                StepStatus::Done,
                status,
                detail,
            )],
        };
        pipeline::advance(&self.db, advance, now)
            .await
            .map_err(store)?;
        Ok(())
    }

    /// Reconciles calls whose final event never arrived (Vapi does not retry webhooks):
    /// every call handed to a provider longer than `reconcile_after` ago. Returns how many
    /// calls it looked at.
    pub async fn reconcile(&self) -> Result<usize, JobError> {
        let now = self.clock.now();
        let stale = calls::unfinished_before(&self.db, now - self.settings.reconcile_after, 200)
            .await
            .map_err(|e| JobError::Retryable(e.to_string()))?;
        let checked = stale.len();
        for call in stale {
            self.reconcile_call(&call).await?;
        }
        Ok(checked)
    }

    /// Asks the provider about one call that has not ended and ingests what it says; while
    /// the call goes on, looks again `reconcile_after` later, and gives up (failed) once the
    /// call is older than `give_up_after`.
    pub async fn reconcile_call(&self, call: &Call) -> Result<(), JobError> {
        let store = |e: StoreError| JobError::Retryable(e.to_string());
        if call.status == CallStatus::Ended || call.status == CallStatus::Queued {
            return Ok(());
        }
        let now = self.clock.now();
        let Some(provider_id) = call.provider_call_id.clone() else {
            // Claimed but never confirmed by the provider (a worker died mid-dial): it may or
            // may not ring, so it is never dialled again.
            return self
                .end_unplaced(
                    call,
                    CallStatus::Dialing,
                    Disposition::Failed,
                    "dialling was interrupted before the provider confirmed the call; not retried"
                        .to_owned(),
                    now,
                )
                .await;
        };
        let kind: ProviderKind = call
            .provider
            .parse()
            .map_err(|_| JobError::Fatal(format!("unknown provider {}", call.provider)))?;
        if let Some(provider) = self.provider(kind).cloned() {
            match provider.get_call(&provider_id).await {
                Ok(mut update) => {
                    update.call_id = Some(call.id);
                    update.dedupe_key = format!(
                        "reconcile:{}:{}",
                        update.status.map_or("none", CallStatus::as_str),
                        update.disposition.map_or("none", Disposition::as_str)
                    );
                    self.apply(call, &update, None).await.map_err(|e| match e {
                        VoiceError::Store(e) => store(e),
                        other => JobError::Fatal(other.to_string()),
                    })?;
                }
                Err(error) => {
                    tracing::warn!(call_id = %call.id, %error, "Reconciliation could not read the call from the provider.");
                }
            }
        }
        let Some(current) = calls::get(&self.db, call.id).await.map_err(store)? else {
            return Ok(());
        };
        if current.status == CallStatus::Ended {
            return Ok(());
        }
        let since = current.dialed_at.unwrap_or(current.created_at);
        if now - since >= self.settings.give_up_after {
            let update = CallUpdate {
                provider_call_id: provider_id,
                call_id: Some(call.id),
                event: "reconcile".to_owned(),
                dedupe_key: "reconcile:give-up".to_owned(),
                status: Some(CallStatus::Ended),
                disposition: Some(Disposition::Failed),
                ended_reason: Some(
                    "the provider never reported the end of the call; given up".to_owned(),
                ),
                ..CallUpdate::default()
            };
            self.apply(&current, &update, None)
                .await
                .map_err(|e| JobError::Retryable(e.to_string()))?;
            return Ok(());
        }
        let next = reconcile_job(call.id, now + self.settings.reconcile_after);
        crm_store::jobs::enqueue(&self.db, &next, now)
            .await
            .map_err(store)?;
        Ok(())
    }
}

/// The dial job of a call due at `run_at`.
fn dial_job(call_id: CallId, priority: i32, run_at: DateTime<Utc>) -> NewJob {
    NewJob {
        kind: VOICE_DIAL.to_owned(),
        payload: serde_json::to_string(&CallPayload { call_id }).unwrap_or_default(),
        dedupe_key: Some(format!(
            "{VOICE_DIAL}:{call_id}:{}",
            run_at.timestamp_millis()
        )),
        priority,
        run_at,
        max_attempts: RetryPolicy::default().max_attempts,
    }
}

/// The reconciliation of one call at `run_at`.
fn reconcile_job(call_id: CallId, run_at: DateTime<Utc>) -> NewJob {
    NewJob {
        kind: VOICE_RECONCILE.to_owned(),
        payload: serde_json::to_string(&CallPayload { call_id }).unwrap_or_default(),
        dedupe_key: Some(format!(
            "{VOICE_RECONCILE}:{call_id}:{}",
            run_at.timestamp_millis()
        )),
        priority: 0,
        run_at,
        max_attempts: RetryPolicy::default().max_attempts,
    }
}

fn parse<T: for<'de> Deserialize<'de>>(payload: &str) -> Result<T, JobError> {
    serde_json::from_str(payload)
        .map_err(|e| JobError::Fatal(format!("the payload does not deserialize: {e}")))
}

/// `voice-call`: the pipeline step that queues a call for its lead.
#[derive(Debug)]
pub struct VoiceCallStep(pub Voice);

#[async_trait]
impl JobHandler for VoiceCallStep {
    fn kind(&self) -> &'static str {
        VOICE_CALL
    }

    async fn run(&self, payload: &str) -> Result<(), JobError> {
        let step: StepPayload = parse(payload)?;
        let voice = &self.0;
        match voice
            .enqueue(step.customer_id, None, None, "pipeline", Some(&step), None)
            .await
        {
            Ok(_) => Ok(()), // The step finishes when the call's final outcome is known.
            Err(VoiceError::Store(error)) => Err(JobError::Retryable(error.to_string())),
            Err(error) => {
                // Not callable: the step ends with the reason, and the run with it.
                let now = voice.clock.now();
                let detail = serde_json::json!({ "blocked": error.to_string() });
                let advance = Advance {
                    step_id: step.step_id,
                    run_id: step.run_id,
                    detail: Some(detail.to_string()),
                    score: None,
                    next: Vec::new(),
                    status: RunStatus::Completed,
                    branch: None,
                    effects: vec![pipeline::event(
                        step.run_id,
                        step.customer_id,
                        VOICE_CALL,
                        StepStatus::Done,
                        RunStatus::Completed,
                        detail,
                    )],
                };
                pipeline::advance(&voice.db, advance, now)
                    .await
                    .map_err(|e| JobError::Retryable(e.to_string()))?;
                Ok(())
            }
        }
    }
}

/// `voice-dial`.
#[derive(Debug)]
pub struct VoiceDial(pub Voice);

#[async_trait]
impl JobHandler for VoiceDial {
    fn kind(&self) -> &'static str {
        VOICE_DIAL
    }

    async fn run(&self, payload: &str) -> Result<(), JobError> {
        let call: CallPayload = parse(payload)?;
        self.0.dial(call.call_id).await
    }
}

/// `voice-deliver`.
#[derive(Debug)]
pub struct VoiceDeliver(pub Voice);

#[async_trait]
impl JobHandler for VoiceDeliver {
    fn kind(&self) -> &'static str {
        VOICE_DELIVER
    }

    async fn run(&self, payload: &str) -> Result<(), JobError> {
        let delivery: DeliveryPayload = parse(payload)?;
        let kind: ProviderKind = delivery
            .provider
            .parse()
            .map_err(|_| JobError::Fatal(format!("unknown provider {}", delivery.provider)))?;
        let provider = self
            .0
            .provider(kind)
            .ok_or_else(|| JobError::Fatal(format!("the provider `{kind}` is not configured")))?;
        let updates = provider
            .parse_webhook(delivery.body.as_bytes())
            .map_err(|e| JobError::Fatal(e.to_string()))?;
        for update in &updates {
            match self.0.ingest(kind, update).await {
                Ok(_) => {}
                Err(VoiceError::Store(error)) => {
                    return Err(JobError::Retryable(error.to_string()));
                }
                Err(error) => return Err(JobError::Fatal(error.to_string())),
            }
        }
        // Then the next delivery of the script (once: its dedupe key is its place).
        if let (Some((call, n)), Some((at, body))) = (delivery.call, delivery.next.first().cloned())
        {
            let job = DeliveryPayload::job(
                &delivery.provider,
                call,
                n + 1,
                at,
                body,
                delivery.next[1..].to_vec(),
            );
            crm_store::jobs::enqueue(&self.0.db, &job, self.0.clock.now())
                .await
                .map_err(|e| JobError::Retryable(e.to_string()))?;
        }
        Ok(())
    }
}

/// `voice-finish`.
#[derive(Debug)]
pub struct VoiceFinish(pub Voice);

#[async_trait]
impl JobHandler for VoiceFinish {
    fn kind(&self) -> &'static str {
        VOICE_FINISH
    }

    async fn run(&self, payload: &str) -> Result<(), JobError> {
        let call: CallPayload = parse(payload)?;
        self.0.finish(call.call_id).await
    }
}

/// `voice-reconcile` (schedulable).
#[derive(Debug)]
pub struct VoiceReconcile(pub Voice);

#[async_trait]
impl JobHandler for VoiceReconcile {
    fn kind(&self) -> &'static str {
        VOICE_RECONCILE
    }

    /// `{"call_id": …}` looks at one call; an empty payload (`{}`, a schedule's) at every
    /// call handed to a provider longer than `reconcile_after` ago.
    async fn run(&self, payload: &str) -> Result<(), JobError> {
        let one: Option<CallPayload> = serde_json::from_str(payload).ok();
        match one {
            Some(CallPayload { call_id }) => {
                let call = calls::get(&self.0.db, call_id)
                    .await
                    .map_err(|e| JobError::Retryable(e.to_string()))?;
                match call {
                    Some(call) => self.0.reconcile_call(&call).await,
                    None => Ok(()),
                }
            }
            None => {
                let checked = self.0.reconcile().await?;
                tracing::info!(checked, "Voice calls reconciled.");
                Ok(())
            }
        }
    }
}
