//! Voice calls: the `VoiceProvider` port that Vapi, Retell, Bland and the simulator implement,
//! and the normalized call vocabulary every provider's wire format is mapped into.
//!
//! A provider adapter does three things: it places, reads and stops calls through the
//! provider's HTTP API; it verifies a webhook delivery over the raw body exactly as the provider
//! signs it; and it parses a delivery into [`CallUpdate`]s. Everything after that — the call
//! record, transcript segments, interactions, re-scoring, subscriptions — is provider-neutral.

use crate::{
    error::FieldError,
    ids::{CallId, CustomerId},
    interaction::string_enum,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::{collections::BTreeMap, fmt, str::FromStr};

string_enum!(
    /// The provider kinds an admin can pick per voice agent (`kind = "retell"`).
    ProviderKind, "provider" {
        /// Vapi (`api.vapi.ai`).
        Vapi = "vapi",
        /// Retell AI (`api.retellai.com`).
        Retell = "retell",
        /// Bland AI (`api.bland.ai`).
        Bland = "bland",
        /// The built-in simulator: believable calls with no network.
        Simulator = "simulator",
    }
);

string_enum!(
    /// Where a call is in its life. Statuses only move forward (see [`CallStatus::rank`]), so
    /// an event that arrives late cannot take a call back.
    CallStatus, "status" {
        /// Waiting in the call queue.
        Queued = "queued",
        /// Handed to the provider; not ringing yet.
        Dialing = "dialing",
        /// The phone is ringing.
        Ringing = "ringing",
        /// Connected: someone (or a mailbox) answered.
        InProgress = "in_progress",
        /// Over; the disposition says how it went.
        Ended = "ended",
    }
);

impl CallStatus {
    /// The order of the lifecycle: a call never moves to a lower rank.
    pub fn rank(self) -> u8 {
        match self {
            Self::Queued => 0,
            Self::Dialing => 1,
            Self::Ringing => 2,
            Self::InProgress => 3,
            Self::Ended => 4,
        }
    }
}

string_enum!(
    /// How a call ended, in one vocabulary for every provider.
    Disposition, "disposition" {
        /// A person answered and the conversation took place.
        Answered = "answered",
        /// Nobody answered.
        NoAnswer = "no_answer",
        /// The line was busy.
        Busy = "busy",
        /// A mailbox answered.
        Voicemail = "voicemail",
        /// The call could not be placed or broke (provider error, invalid number, …).
        Failed = "failed",
        /// Stopped by us or an admin before or during the call.
        Canceled = "canceled",
        /// Not placed: policy forbade it (do-not-call, missing consent, outside calling
        /// hours until its deadline).
        Blocked = "blocked",
    }
);

impl Disposition {
    /// Whether another attempt may reach the person later (no answer, busy, voicemail).
    pub fn retryable(self) -> bool {
        matches!(self, Self::NoAnswer | Self::Busy | Self::Voicemail)
    }
}

string_enum!(
    /// Who spoke a transcript segment.
    SpeakerRole, "role" {
        /// Our voice agent.
        Agent = "agent",
        /// The person called.
        Customer = "customer",
        /// Anything else the provider logs into the transcript (tool calls, transfers).
        System = "system",
    }
);

string_enum!(
    /// The overall sentiment of a conversation.
    Sentiment, "sentiment" {
        /// Positive.
        Positive = "positive",
        /// Neutral.
        Neutral = "neutral",
        /// Negative.
        Negative = "negative",
    }
);

/// One utterance of a transcript.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// The provider's position of the utterance in the whole transcript, when the provider
    /// numbers them (Retell sends the whole list each time); deliveries repeat, so the
    /// position — or, without one, the content — makes a segment idempotent.
    pub position: Option<u32>,
    /// Who spoke.
    pub role: SpeakerRole,
    /// What was said.
    pub text: String,
    /// Milliseconds from the start of the call, when known.
    pub offset_ms: Option<i64>,
}

/// What one provider event says about a call: every field is optional, and a call record
/// takes the fields an update carries (never moving its status backwards).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallUpdate {
    /// The provider's id of the call.
    pub provider_call_id: String,
    /// Our id, when the provider echoes our metadata.
    pub call_id: Option<CallId>,
    /// The provider's name of the event (`call_ended`, `status-update`), for logs.
    pub event: String,
    /// What makes this delivery unique, so a repeated delivery is ignored (`call_ended`,
    /// `status:ringing`, a hash of a transcript line).
    pub dedupe_key: String,
    /// The status the event reports.
    pub status: Option<CallStatus>,
    /// How the call ended.
    pub disposition: Option<Disposition>,
    /// The provider's own reason for the end (`customer-did-not-answer`, `dial_busy`).
    pub ended_reason: Option<String>,
    /// The business outcome when the provider's analysis names one (`appointment`,
    /// `interested`, `not_interested`, `do_not_call`, `callback`).
    pub outcome: Option<String>,
    /// When the call connected.
    pub started_at: Option<DateTime<Utc>>,
    /// When the call ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Talk time in seconds (converted from each provider's unit).
    pub duration_secs: Option<f64>,
    /// What the call cost, in US dollars (converted from each provider's unit).
    pub cost_usd: Option<f64>,
    /// The provider's summary.
    pub summary: Option<String>,
    /// The sentiment of the conversation.
    pub sentiment: Option<Sentiment>,
    /// Where the recording is.
    pub recording_url: Option<String>,
    /// The full transcript as text.
    pub transcript: Option<String>,
    /// Utterances: new ones or the whole list.
    pub segments: Vec<Segment>,
}

/// The voice agent a call is placed with: our configuration of a provider's agent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentSpec {
    /// Our name of the agent (`de`).
    pub name: String,
    /// The provider's agent or assistant id (Vapi `assistantId`, Retell
    /// `override_agent_id`, Bland `pathway_id`).
    pub provider_agent_id: Option<String>,
    /// The number to call from (E.164), or the provider's id of it (Vapi `phoneNumberId`).
    pub from_number: Option<String>,
    /// The language of the conversation (`de`, `bs`, `sr`, `en`).
    pub language: String,
    /// The opening line.
    pub first_message: Option<String>,
    /// The agent's instructions, for providers that take them per call (Bland `task`).
    pub task: Option<String>,
    /// Fixed script variables of the agent.
    pub variables: BTreeMap<String, String>,
}

/// A call to place.
#[derive(Debug, Clone, PartialEq)]
pub struct StartCall {
    /// Our id of the call, sent as metadata so every webhook can be matched; also the
    /// idempotency key of the attempt.
    pub call_id: CallId,
    /// The customer called.
    pub customer_id: CustomerId,
    /// The number to dial, E.164.
    pub to: String,
    /// Which attempt this is: 1 for the first call, 2 for its first retry, and so on.
    pub attempt: u32,
    /// The customer's name, for the provider's customer record.
    pub customer_name: Option<String>,
    /// The agent.
    pub agent: AgentSpec,
    /// Script variables for this call (the agent's own, then the lead's: name, company …).
    pub variables: BTreeMap<String, String>,
    /// Where the provider should post this call's events, when configured.
    pub webhook_url: Option<String>,
}

/// What the provider answered to a placed call.
#[derive(Debug, Clone, PartialEq)]
pub struct StartedCall {
    /// The provider's id of the call.
    pub provider_call_id: String,
    /// The status the provider reported.
    pub status: CallStatus,
}

/// A webhook delivery as received: raw body and headers (names in lower case).
#[derive(Debug, Clone, Copy)]
pub struct WebhookRequest<'a> {
    /// Header names (lower case) and values.
    pub headers: &'a [(String, String)],
    /// The raw body: signatures cover these exact bytes.
    pub body: &'a [u8],
    /// When it was received (for replay windows).
    pub received_at: DateTime<Utc>,
}

impl WebhookRequest<'_> {
    /// The first value of a header (the name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// A provider call that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider refused the request and will refuse it again (4xx: a bad number, a
    /// missing agent, no balance). Not retried.
    #[error("the provider rejected the request ({status}): {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// The provider could not take the request now and did not act on it (429, a refused
    /// connection, 5xx on a safe read): worth retrying.
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    /// The request may or may not have been acted on (a timeout or 5xx after a call was
    /// sent): never retried blindly, because a retry could place a second call.
    #[error("the provider's answer is unknown: {0}")]
    Unknown(String),
    /// The provider's answer could not be understood.
    #[error("the provider's answer could not be read: {0}")]
    Malformed(String),
}

/// What a provider answered when asked to delete a call's data (recordings, transcripts,
/// analysis) for an erasure. Every variant means there is nothing more to ask of the provider
/// for this call; a failure is a [`ProviderError`] instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallDeletion {
    /// The provider confirmed the deletion (a 2xx answer).
    Deleted,
    /// The provider does not know the call (404): nothing is left to delete there.
    NotFound,
    /// This provider offers no way to delete a call's data; the erasure records that the
    /// provider-side data could not be removed by us.
    Unsupported,
}

/// A webhook delivery that is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// No credential, a wrong signature, or a timestamp outside the replay window.
    #[error("webhook authentication failed: {0}")]
    Unauthenticated(String),
    /// The body is not what the provider sends.
    #[error("webhook body is invalid: {0}")]
    Invalid(String),
}

/// A delivery the simulator (or any provider that plays calls itself) will make, `after_ms`
/// after the call was placed.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedDelivery {
    /// Milliseconds after the call was placed.
    pub after_ms: i64,
    /// The webhook body, parsed by the provider's own `parse_webhook`.
    pub body: String,
}

/// The port of a voice provider.
#[async_trait]
pub trait VoiceProvider: Send + Sync + fmt::Debug {
    /// Which provider this is.
    fn kind(&self) -> ProviderKind;

    /// Places a call. Must not be retried on [`ProviderError::Unknown`].
    async fn start_call(&self, call: &StartCall) -> Result<StartedCall, ProviderError>;

    /// Reads a call's current state (for reconciliation when a final webhook never came).
    async fn get_call(&self, provider_call_id: &str) -> Result<CallUpdate, ProviderError>;

    /// Ends a call in progress or cancels a scheduled one.
    async fn stop_call(&self, provider_call_id: &str) -> Result<(), ProviderError>;

    /// Asks the provider to delete a call's data (recordings, transcripts, analysis), for the
    /// right to erasure.
    ///
    /// Deletion is idempotent: it is safe to retry after any error, including a timeout, and a
    /// call the provider no longer knows counts as deleted ([`CallDeletion::NotFound`]).
    /// [`ProviderError::Unavailable`] is worth retrying; [`ProviderError::Rejected`] is not.
    ///
    /// The default is for providers that offer no deletion: it sends nothing and answers
    /// [`CallDeletion::Unsupported`].
    async fn delete_call(&self, _provider_call_id: &str) -> Result<CallDeletion, ProviderError> {
        Ok(CallDeletion::Unsupported)
    }

    /// Checks a webhook's authenticity over the raw body, in constant time.
    fn verify_webhook(&self, request: &WebhookRequest<'_>) -> Result<(), WebhookError>;

    /// Parses a verified delivery into updates (none for an event type we do not use).
    fn parse_webhook(&self, body: &[u8]) -> Result<Vec<CallUpdate>, WebhookError>;

    /// The deliveries this provider makes itself for a call just placed (the simulator);
    /// real providers post their webhooks over HTTP and return none.
    fn scripted_deliveries(
        &self,
        _call: &StartCall,
        _started: &StartedCall,
        _placed_at: DateTime<Utc>,
    ) -> Vec<ScriptedDelivery> {
        Vec::new()
    }
}

/// The outcome names scoring knows, normalized from free text (`Not Interested` →
/// `not_interested`).
pub fn normalize_outcome(raw: &str) -> Option<String> {
    let normalized: String = raw
        .trim()
        .chars()
        .map(|c| match c {
            '-' | ' ' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    (!normalized.is_empty()).then_some(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_only_move_forward_by_rank() {
        let ranks: Vec<u8> = CallStatus::ALL.iter().map(|s| s.rank()).collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            "In_Progress".parse::<CallStatus>().unwrap(),
            CallStatus::InProgress
        );
    }

    #[test]
    fn only_unreached_dispositions_are_retried() {
        let retried: Vec<_> = Disposition::ALL.iter().filter(|d| d.retryable()).collect();
        assert_eq!(
            retried,
            [
                &Disposition::NoAnswer,
                &Disposition::Busy,
                &Disposition::Voicemail
            ]
        );
    }

    #[test]
    fn outcomes_are_normalized() {
        assert_eq!(
            normalize_outcome(" Not Interested").as_deref(),
            Some("not_interested")
        );
        assert_eq!(
            normalize_outcome("do-not-call").as_deref(),
            Some("do_not_call")
        );
        assert_eq!(normalize_outcome("  "), None);
    }

    #[test]
    fn headers_are_found_in_any_case() {
        let headers = vec![("x-retell-signature".to_owned(), "v=1,d=ab".to_owned())];
        let request = WebhookRequest {
            headers: &headers,
            body: b"{}",
            received_at: Utc::now(),
        };
        assert_eq!(request.header("X-Retell-Signature"), Some("v=1,d=ab"));
        assert_eq!(request.header("x-other"), None);
    }
}
