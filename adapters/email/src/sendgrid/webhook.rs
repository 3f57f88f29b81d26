//! SendGrid's Signed Event Webhook (PROVIDERS.md §5.3–5.4): signature verification over the
//! raw body and parsing into [`EmailEvent`]s.
//!
//! Signature: `X-Twilio-Email-Event-Webhook-Signature` is the base64 of an ASN.1 DER ECDSA
//! signature with the account's P-256 key, over SHA-256 of the
//! `X-Twilio-Email-Event-Webhook-Timestamp` value immediately followed by the raw body (no
//! separator). SendGrid documents no replay window, so the timestamp must be within
//! `event_tolerance_secs` of the delivery; deliveries still repeat, so events carry
//! `sg_event_id` to dedupe on.
//!
//! Body: a JSON array of events. Mapping of `event`: `processed`, `delivered`, `deferred`,
//! `bounce` (`type` `bounce` or `blocked`) → bounced, `dropped`, `open` → opened, `click` →
//! clicked, `spamreport` → complained, `unsubscribe` and `group_unsubscribe` → unsubscribed.
//! `group_resubscribe`, `account_status_change` and unknown events are skipped, as is any
//! event without `sg_event_id`, `email` or a readable `timestamp`.

use super::Config;
use crate::ConfigError;
use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD},
};
use chrono::{DateTime, Utc};
use crm_domain::{EmailEvent, EmailEventKind, SenderKind, WebhookError, WebhookRequest};
use p256::{
    ecdsa::{Signature, VerifyingKey, signature::Verifier as _},
    pkcs8::DecodePublicKey as _,
};
use serde_json::Value;
use std::fmt;

/// The signature header (base64 ASN.1 DER).
pub const SIGNATURE_HEADER: &str = "x-twilio-email-event-webhook-signature";
/// The signed timestamp header (unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-twilio-email-event-webhook-timestamp";

/// The longest text kept from an event field (reasons, URLs).
const MAX_FIELD_CHARS: usize = 2_000;

/// The Event Webhook's public key (ECDSA P-256).
#[derive(Clone, PartialEq, Eq)]
pub struct EventKey(VerifyingKey);

impl fmt::Debug for EventKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventKey(P-256)")
    }
}

impl EventKey {
    /// Reads the key as SendGrid shows it: base64 of the DER SubjectPublicKeyInfo (whitespace
    /// ignored), or the same wrapped as PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.starts_with("-----BEGIN") {
            return VerifyingKey::from_public_key_pem(text)
                .map(Self)
                .map_err(|error| format!("the PEM is not a P-256 public key: {error}"));
        }
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        if compact.is_empty() {
            return Err("the key is empty".into());
        }
        let der = STANDARD
            .decode(&compact)
            .or_else(|_| STANDARD_NO_PAD.decode(compact.trim_end_matches('=')))
            .map_err(|error| format!("the key is not base64: {error}"))?;
        VerifyingKey::from_public_key_der(&der)
            .map(Self)
            .map_err(|error| format!("the key is not a P-256 SubjectPublicKeyInfo: {error}"))
    }

    /// Wraps a key (tests, or keys obtained otherwise).
    pub fn from_verifying_key(key: VerifyingKey) -> Self {
        Self(key)
    }
}

/// Checks one delivery's signature and age.
///
/// `signature_b64` and `timestamp` are the two header values, `raw_body` the exact bytes
/// received; the timestamp (unix seconds) must be at most `tolerance_secs` from `now`, either
/// way.
pub fn verify(
    public_key: &EventKey,
    signature_b64: &str,
    timestamp: &str,
    raw_body: &[u8],
    now: DateTime<Utc>,
    tolerance_secs: u64,
) -> Result<(), WebhookError> {
    let timestamp = timestamp.trim();
    let signed_at = (!timestamp.is_empty() && timestamp.bytes().all(|b| b.is_ascii_digit()))
        .then(|| timestamp.parse::<i64>().ok())
        .flatten()
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
        .ok_or_else(|| {
            WebhookError::Unauthenticated("the signed timestamp is not unix seconds".into())
        })?;
    let signature_b64 = signature_b64.trim();
    let der = STANDARD
        .decode(signature_b64)
        .or_else(|_| STANDARD_NO_PAD.decode(signature_b64.trim_end_matches('=')))
        .map_err(|_| WebhookError::Unauthenticated("the signature is not base64".into()))?;
    let signature = Signature::from_der(&der).map_err(|_| {
        WebhookError::Unauthenticated("the signature is not an ASN.1 DER ECDSA signature".into())
    })?;
    let mut signed = Vec::with_capacity(timestamp.len() + raw_body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.extend_from_slice(raw_body);
    public_key
        .0
        .verify(&signed, &signature)
        .map_err(|_| WebhookError::Unauthenticated("wrong signature".into()))?;
    let skew = (now - signed_at).num_seconds().unsigned_abs();
    if skew > tolerance_secs {
        return Err(WebhookError::Unauthenticated(format!(
            "the signed timestamp is {skew} s away from now (tolerance {tolerance_secs} s)"
        )));
    }
    Ok(())
}

/// Parses a verified delivery: the JSON array of events, mapped and filtered as the module
/// docs say. Only a body that is not a JSON array is an error.
pub fn parse(body: &[u8]) -> Result<Vec<EmailEvent>, WebhookError> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|error| WebhookError::Invalid(format!("the body is not JSON: {error}")))?;
    let Value::Array(items) = json else {
        return Err(WebhookError::Invalid(
            "the body is not a JSON array of events".into(),
        ));
    };
    Ok(items.iter().filter_map(event).collect())
}

/// One event, or `None` when it is skipped.
fn event(item: &Value) -> Option<EmailEvent> {
    let name = text(item, "event")?;
    let kind = match name.as_str() {
        "processed" => EmailEventKind::Processed,
        "delivered" => EmailEventKind::Delivered,
        "deferred" => EmailEventKind::Deferred,
        "bounce" => EmailEventKind::Bounced,
        "dropped" => EmailEventKind::Dropped,
        "open" => EmailEventKind::Opened,
        "click" => EmailEventKind::Clicked,
        "spamreport" => EmailEventKind::Complained,
        "unsubscribe" | "group_unsubscribe" => EmailEventKind::Unsubscribed,
        _ => return None,
    };
    let Some(event_id) = text(item, "sg_event_id") else {
        tracing::warn!(event = %name, "Skipping a SendGrid event without sg_event_id");
        return None;
    };
    let (Some(email), Some(at)) = (text(item, "email"), timestamp(item)) else {
        tracing::warn!(event = %name, event_id, "Skipping a SendGrid event without email or timestamp");
        return None;
    };
    let reason = text(item, "reason").or_else(|| match kind {
        // A deferral's reason is the receiving server's reply.
        EmailEventKind::Deferred => text(item, "response"),
        _ => None,
    });
    Some(EmailEvent {
        event_id,
        kind,
        email,
        at,
        email_id: text(item, "crm_email_id"),
        provider_message_id: text(item, "sg_message_id"),
        reason,
        url: text(item, "url").filter(|_| kind == EmailEventKind::Clicked),
    })
}

/// A non-empty string field (numbers rendered as text), capped.
fn text(item: &Value, key: &str) -> Option<String> {
    let value = match item.get(key)? {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    if value.is_empty() {
        return None;
    }
    Some(match value.char_indices().nth(MAX_FIELD_CHARS) {
        Some((index, _)) => value.get(..index).unwrap_or_default().to_owned(),
        None => value,
    })
}

/// `timestamp`: unix seconds (an integer, a float or a numeric string).
fn timestamp(item: &Value) -> Option<DateTime<Utc>> {
    let secs = match item.get("timestamp")? {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f.floor() as i64))?,
        Value::String(s) => s.trim().parse::<i64>().ok()?,
        _ => return None,
    };
    DateTime::from_timestamp(secs, 0)
}

/// The configured Event Webhook: key and replay window.
#[derive(Debug, Clone)]
pub struct EventWebhook {
    key: EventKey,
    tolerance_secs: u64,
}

impl EventWebhook {
    /// Builds it from `[email.sendgrid]`; fails without a usable `event_public_key`.
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        let kind = SenderKind::Sendgrid;
        let raw = config
            .event_public_key
            .as_deref()
            .filter(|key| !key.trim().is_empty())
            .ok_or_else(|| {
                ConfigError::new(
                    kind,
                    "event_public_key is missing (config or env CRM_EMAIL__SENDGRID__EVENT_PUBLIC_KEY)",
                )
            })?;
        let key = EventKey::parse(raw)
            .map_err(|message| ConfigError::new(kind, format!("event_public_key: {message}")))?;
        Ok(Self {
            key,
            tolerance_secs: config.event_tolerance_secs,
        })
    }

    /// Checks a delivery's signature headers and age.
    pub fn verify(&self, request: &WebhookRequest<'_>) -> Result<(), WebhookError> {
        let signature = request.header(SIGNATURE_HEADER).ok_or_else(|| {
            WebhookError::Unauthenticated(format!("no `{SIGNATURE_HEADER}` header"))
        })?;
        let timestamp = request.header(TIMESTAMP_HEADER).ok_or_else(|| {
            WebhookError::Unauthenticated(format!("no `{TIMESTAMP_HEADER}` header"))
        })?;
        verify(
            &self.key,
            signature,
            timestamp,
            request.body,
            request.received_at,
            self.tolerance_secs,
        )
    }

    /// Parses a verified delivery.
    pub fn parse(&self, body: &[u8]) -> Result<Vec<EmailEvent>, WebhookError> {
        parse(body)
    }
}
