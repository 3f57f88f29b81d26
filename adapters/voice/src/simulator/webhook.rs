//! The simulator's deliveries: their JSON shape, signature check and parsing, and the script
//! of deliveries for one call.

use super::{Config, script};
use chrono::{DateTime, Duration, Utc};
use crm_domain::{
    CallId, CallStatus, CallUpdate, Disposition, ScriptedDelivery, Segment, Sentiment, SpeakerRole,
    StartCall, WebhookError, WebhookRequest,
};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The header carrying the hex HMAC-SHA256 of the raw body, for deliveries from outside.
pub const SIGNATURE_HEADER: &str = "x-simulator-signature";

/// One delivery of the simulator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum Delivery {
    /// The phone rings / the call connected.
    Status {
        /// The simulator's call id.
        provider_call_id: String,
        /// Ours.
        crm_call_id: Option<CallId>,
        /// `ringing` or `in_progress`.
        status: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// One transcript line.
    Segment {
        /// The simulator's call id.
        provider_call_id: String,
        /// Ours.
        crm_call_id: Option<CallId>,
        /// Its position in the transcript.
        position: u32,
        /// `agent` or `customer`.
        role: String,
        /// What was said.
        text: String,
        /// Milliseconds after the call connected.
        offset_ms: i64,
    },
    /// The call is over.
    Ended {
        /// The simulator's call id.
        provider_call_id: String,
        /// Ours.
        crm_call_id: Option<CallId>,
        /// How it ended.
        disposition: String,
        /// The business outcome.
        outcome: Option<String>,
        /// The sentiment.
        sentiment: Option<String>,
        /// The summary.
        summary: String,
        /// When it connected (answered calls).
        started_at: Option<DateTime<Utc>>,
        /// When it ended.
        ended_at: DateTime<Utc>,
        /// The whole transcript.
        transcript: String,
    },
}

pub(super) fn verify(
    secret: Option<&SecretString>,
    request: &WebhookRequest<'_>,
) -> Result<(), WebhookError> {
    let secret = secret.ok_or_else(|| {
        WebhookError::Unauthenticated(
            "the simulator accepts deliveries from outside only when \
             CRM_VOICE__PROVIDERS__SIMULATOR__WEBHOOK_SECRET is set"
                .to_owned(),
        )
    })?;
    let signature = request
        .header(SIGNATURE_HEADER)
        .ok_or_else(|| WebhookError::Unauthenticated(format!("`{SIGNATURE_HEADER}` is missing")))?;
    let signature = crate::http::hex_decode(signature.trim())
        .ok_or_else(|| WebhookError::Unauthenticated("the signature is not hex".to_owned()))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
        .map_err(|_| WebhookError::Unauthenticated("unusable secret".to_owned()))?;
    mac.update(request.body);
    mac.verify_slice(&signature)
        .map_err(|_| WebhookError::Unauthenticated("the signature does not match".to_owned()))
}

fn invalid(message: impl Into<String>) -> WebhookError {
    WebhookError::Invalid(message.into())
}

pub(super) fn parse(body: &[u8]) -> Result<Vec<CallUpdate>, WebhookError> {
    let delivery: Delivery =
        serde_json::from_slice(body).map_err(|error| invalid(error.to_string()))?;
    Ok(vec![match delivery {
        Delivery::Status {
            provider_call_id,
            crm_call_id,
            status,
            at,
        } => {
            let status: CallStatus = status.parse().map_err(|_| invalid("unknown status"))?;
            CallUpdate {
                provider_call_id,
                call_id: crm_call_id,
                event: "status".to_owned(),
                dedupe_key: format!("status:{status}"),
                status: Some(status),
                started_at: (status == CallStatus::InProgress).then_some(at),
                ..CallUpdate::default()
            }
        }
        Delivery::Segment {
            provider_call_id,
            crm_call_id,
            position,
            role,
            text,
            offset_ms,
        } => CallUpdate {
            provider_call_id,
            call_id: crm_call_id,
            event: "segment".to_owned(),
            dedupe_key: format!("segment:{position}"),
            status: Some(CallStatus::InProgress),
            segments: vec![Segment {
                position: Some(position),
                role: role
                    .parse::<SpeakerRole>()
                    .map_err(|_| invalid("unknown role"))?,
                text,
                offset_ms: Some(offset_ms),
            }],
            ..CallUpdate::default()
        },
        Delivery::Ended {
            provider_call_id,
            crm_call_id,
            disposition,
            outcome,
            sentiment,
            summary,
            started_at,
            ended_at,
            transcript,
        } => CallUpdate {
            provider_call_id,
            call_id: crm_call_id,
            event: "ended".to_owned(),
            dedupe_key: "ended".to_owned(),
            status: Some(CallStatus::Ended),
            disposition: Some(
                disposition
                    .parse::<Disposition>()
                    .map_err(|_| invalid("unknown disposition"))?,
            ),
            ended_reason: Some(disposition),
            outcome,
            duration_secs: Some(started_at.map_or(0.0, |started| {
                (ended_at - started).num_milliseconds() as f64 / 1000.0
            })),
            started_at,
            ended_at: Some(ended_at),
            cost_usd: Some(0.0),
            summary: Some(summary),
            sentiment: sentiment
                .map(|s| s.parse::<Sentiment>())
                .transpose()
                .map_err(|_| invalid("unknown sentiment"))?,
            transcript: Some(transcript),
            ..CallUpdate::default()
        },
    }])
}

/// The deliveries of one call placed at `placed_at`.
pub(super) fn script(
    config: &Config,
    call: &StartCall,
    provider_call_id: &str,
    placed_at: DateTime<Utc>,
) -> Vec<ScriptedDelivery> {
    let vars = |name: &str| -> String {
        call.variables
            .get(name)
            .or_else(|| call.agent.variables.get(name))
            .cloned()
            .or_else(|| match name {
                "name" => call.customer_name.clone(),
                "agent" => Some("Mia".to_owned()),
                "sender" => Some("crm".to_owned()),
                "company" => Some("your company".to_owned()),
                _ => None,
            })
            .unwrap_or_default()
    };
    let plan = script::plan_attempt(
        config.seed,
        &call.to,
        call.attempt,
        &call.agent.language,
        &vars,
    );
    let ids = || (provider_call_id.to_owned(), Some(call.call_id));
    let mut out = Vec::new();
    let mut push = |after_ms: i64, delivery: Delivery| {
        if let Ok(body) = serde_json::to_string(&delivery) {
            out.push(ScriptedDelivery { after_ms, body });
        }
    };
    let ring = config.ring_ms.max(0);
    let step = config.line_interval_ms.max(1);
    let (provider_call_id, crm_call_id) = ids();
    push(
        0,
        Delivery::Status {
            provider_call_id,
            crm_call_id,
            status: CallStatus::Ringing.as_str().to_owned(),
            at: placed_at,
        },
    );
    let answered = !plan.lines.is_empty();
    let started_at = placed_at + Duration::milliseconds(ring);
    if answered {
        let (provider_call_id, crm_call_id) = ids();
        push(
            ring,
            Delivery::Status {
                provider_call_id,
                crm_call_id,
                status: CallStatus::InProgress.as_str().to_owned(),
                at: started_at,
            },
        );
    }
    let mut transcript = String::new();
    for (position, (role, text)) in plan.lines.iter().enumerate() {
        let offset_ms = step * (position as i64 + 1);
        let (provider_call_id, crm_call_id) = ids();
        transcript.push_str(&format!("{role}: {text}\n"));
        push(
            ring + offset_ms,
            Delivery::Segment {
                provider_call_id,
                crm_call_id,
                position: u32::try_from(position).unwrap_or(u32::MAX),
                role: role.as_str().to_owned(),
                text: text.clone(),
                offset_ms,
            },
        );
    }
    let end_ms = ring + step * (plan.lines.len() as i64 + 1);
    let (provider_call_id, crm_call_id) = ids();
    push(
        end_ms,
        Delivery::Ended {
            provider_call_id,
            crm_call_id,
            disposition: plan.disposition.as_str().to_owned(),
            outcome: plan.outcome.map(str::to_owned),
            sentiment: plan.sentiment.map(|s| s.as_str().to_owned()),
            summary: plan.summary,
            started_at: answered.then_some(started_at),
            ended_at: placed_at + Duration::milliseconds(end_ms),
            transcript,
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_domain::{AgentSpec, CustomerId};

    fn call(number: &str) -> StartCall {
        StartCall {
            call_id: CallId::new(),
            customer_id: CustomerId::new(),
            to: number.to_owned(),
            attempt: 1,
            customer_name: Some("Jana Kovač".to_owned()),
            agent: AgentSpec {
                name: "de".to_owned(),
                language: "de".to_owned(),
                ..AgentSpec::default()
            },
            variables: Default::default(),
            webhook_url: None,
        }
    }

    fn all_updates(deliveries: &[ScriptedDelivery]) -> Vec<CallUpdate> {
        deliveries
            .iter()
            .flat_map(|d| parse(d.body.as_bytes()).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    #[test]
    fn an_answered_call_rings_connects_speaks_and_ends_in_order() {
        let config = Config::default();
        let now = Utc::now();
        let answered = (0..200)
            .map(|n| call(&format!("+4915112{n:05}")))
            .find(|c| {
                script::plan(config.seed, &c.to, "de", &|_| String::new()).disposition
                    == Disposition::Answered
            })
            .unwrap_or_else(|| panic!("some number answers"));
        let deliveries = script(&config, &answered, "sim-1", now);
        assert!(deliveries.windows(2).all(|w| w[0].after_ms < w[1].after_ms));
        let updates = all_updates(&deliveries);
        assert_eq!(updates[0].status, Some(CallStatus::Ringing));
        assert_eq!(updates[1].status, Some(CallStatus::InProgress));
        let last = updates.last().unwrap_or_else(|| panic!("an end"));
        assert_eq!(last.disposition, Some(Disposition::Answered));
        assert!(last.outcome.is_some() && last.sentiment.is_some());
        let segments: Vec<_> = updates.iter().flat_map(|u| u.segments.clone()).collect();
        assert!(segments.len() >= 5);
        assert!(
            segments[0].text.contains("Jana Kovač"),
            "{}",
            segments[0].text
        );
        assert!(last.duration_secs.unwrap_or_default() > 5.0);
        assert!(updates.iter().all(|u| u.call_id == Some(answered.call_id)));
    }

    #[test]
    fn unanswered_calls_end_without_a_conversation() {
        let config = Config::default();
        let unanswered = (0..200)
            .map(|n| call(&format!("+3876100{n:04}")))
            .find(|c| {
                script::plan(config.seed, &c.to, "bs", &|_| String::new()).disposition
                    == Disposition::NoAnswer
            })
            .unwrap_or_else(|| panic!("some number does not answer"));
        let updates = all_updates(&script(&config, &unanswered, "sim-2", Utc::now()));
        assert_eq!(updates.len(), 2);
        assert_eq!(updates[1].disposition, Some(Disposition::NoAnswer));
        assert_eq!(updates[1].started_at, None);
        assert_eq!(updates[1].duration_secs, Some(0.0));
    }

    #[test]
    fn deliveries_from_outside_need_the_secret() {
        let headers = vec![(
            SIGNATURE_HEADER.to_owned(),
            // HMAC-SHA256("secret", "{}") in hex.
            "3ef6a8a6f5b2a5bd7d8c2bb2d7c3b0d2b7b4b2f1c0a2f7e2f6f5f8e0b5a3c1d2".to_owned(),
        )];
        let request = WebhookRequest {
            headers: &headers,
            body: b"{}",
            received_at: Utc::now(),
        };
        assert!(matches!(
            verify(None, &request),
            Err(WebhookError::Unauthenticated(_))
        ));
        let secret = SecretString::from("secret");
        assert!(verify(Some(&secret), &request).is_err());
        let mut mac = Hmac::<Sha256>::new_from_slice(b"secret").unwrap_or_else(|_| panic!());
        mac.update(b"{}");
        let good = crate::http::hex_encode(&mac.finalize().into_bytes());
        let headers = vec![(SIGNATURE_HEADER.to_owned(), good)];
        let request = WebhookRequest {
            headers: &headers,
            ..request
        };
        assert_eq!(verify(Some(&secret), &request), Ok(()));
    }

    #[test]
    fn garbage_is_invalid() {
        assert!(matches!(parse(b"not json"), Err(WebhookError::Invalid(_))));
        assert!(matches!(
            parse(br#"{"event":"status","provider_call_id":"x","crm_call_id":null,"status":"flying","at":"2026-01-01T00:00:00Z"}"#),
            Err(WebhookError::Invalid(_))
        ));
    }
}
