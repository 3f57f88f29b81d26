//! Vapi server messages: authentication and parsing into [`CallUpdate`]s, plus the mapping of
//! a Vapi `Call` object (also used by `GET /call/{id}`).
//!
//! Body: `{"message": {"type": …, "call": {Call}, …}}` (PROVIDERS.md §1.6). Used types:
//! `status-update`, `transcript` (final only) and `end-of-call-report`; every other type is
//! accepted and ignored.

use super::config::{Config, HmacAlgorithm, Piece, SignatureEncoding, WebhookAuth};
use crate::http::{
    MAX_SEGMENT_CHARS, MAX_TRANSCRIPT_CHARS, at, call_id_at, check_tolerance, f64_at, fingerprint,
    hex_decode, json_webhook, parse_unix_timestamp, secrets_equal, secs_between, secs_to_ms,
    str_at, time_at, truncate_chars,
};
use base64::Engine as _;
use crm_domain::{
    CallId, CallStatus, CallUpdate, Disposition, Segment, SpeakerRole, WebhookError,
    WebhookRequest, voice::normalize_outcome,
};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret as _;
use serde_json::Value;

/// Checks a delivery against the configured credential: the bearer token, or the HMAC
/// credential read at start (`hmac`).
pub(super) fn verify(
    config: &Config,
    hmac: Option<&HmacPlan>,
    request: &WebhookRequest<'_>,
) -> Result<(), WebhookError> {
    let unconfigured =
        || WebhookError::Unauthenticated("no Vapi webhook secret is configured".into());
    match config.webhook_auth {
        WebhookAuth::Bearer => {
            let secret = config.webhook_secret.as_ref().ok_or_else(unconfigured)?;
            verify_bearer(config, secret.expose_secret().as_bytes(), request)
        }
        WebhookAuth::Hmac => verify_hmac_signature(config, hmac.ok_or_else(unconfigured)?, request),
    }
}

/// An HMAC credential as read once at start: what is signed, and the key.
#[derive(Debug)]
pub(super) struct HmacPlan {
    pieces: Vec<Piece>,
    key: secrecy::SecretSlice<u8>,
}

impl HmacPlan {
    /// The credential of `config`: `None` without a secret (every delivery is then refused),
    /// an error for a payload format or a key that cannot work.
    pub(super) fn new(config: &Config) -> Result<Option<Self>, String> {
        let pieces = config.payload_pieces()?;
        let Some(secret) = &config.webhook_secret else {
            return Ok(None);
        };
        let key = if config.hmac_secret_is_base64 {
            base64_key(secret.expose_secret())
                .ok_or("hmac_secret_is_base64 is set, but webhook_secret is not base64")?
        } else {
            secret.expose_secret().as_bytes().to_vec()
        };
        Ok(Some(Self {
            pieces,
            key: key.into(),
        }))
    }
}

fn verify_bearer(
    config: &Config,
    secret: &[u8],
    request: &WebhookRequest<'_>,
) -> Result<(), WebhookError> {
    let header = config.bearer_header.trim();
    let value = request
        .header(header)
        .ok_or_else(|| WebhookError::Unauthenticated(format!("no `{header}` header")))?
        .trim();
    let token = if header.eq_ignore_ascii_case("authorization") {
        match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => {
                return Err(WebhookError::Unauthenticated(
                    "the authorization header is not a Bearer token".into(),
                ));
            }
        }
    } else {
        value
    };
    if secrets_equal(secret, token.as_bytes()) {
        Ok(())
    } else {
        Err(WebhookError::Unauthenticated("wrong token".into()))
    }
}

/// The key of a base64 secret (`secretIsBase64`), standard or URL-safe alphabet, with or
/// without Svix's `whsec_` prefix.
fn base64_key(secret: &str) -> Option<Vec<u8>> {
    let secret = secret.trim();
    let secret = secret.strip_prefix("whsec_").unwrap_or(secret);
    base64::engine::general_purpose::STANDARD
        .decode(secret)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(secret))
        .ok()
}

/// Vapi's HMAC credential as configured (`hmac_*`; by default HMAC-SHA256 over
/// `{timestamp}.{body}`, hex): the signature, after its prefix, must be the MAC of the payload
/// format filled from this delivery, and the timestamp (when included) inside the window.
fn verify_hmac_signature(
    config: &Config,
    plan: &HmacPlan,
    request: &WebhookRequest<'_>,
) -> Result<(), WebhookError> {
    let signature_header = config.hmac_signature_header.trim();
    let signature = request
        .header(signature_header)
        .ok_or_else(|| WebhookError::Unauthenticated(format!("no `{signature_header}` header")))?
        .trim();
    let timestamp = if config.hmac_include_timestamp {
        let timestamp_header = config.hmac_timestamp_header.trim();
        let timestamp = request
            .header(timestamp_header)
            .ok_or_else(|| {
                WebhookError::Unauthenticated(format!("no `{timestamp_header}` header"))
            })?
            .trim();
        let signed_at = parse_unix_timestamp(timestamp).ok_or_else(|| {
            WebhookError::Unauthenticated(format!("`{timestamp_header}` is not a unix timestamp"))
        })?;
        Some((timestamp, signed_at))
    } else {
        None
    };
    // Several signatures may be sent, separated by spaces (Svix style, while a secret
    // rotates): any one that verifies will do.
    let prefix = config.hmac_signature_prefix.trim();
    let algorithm_prefix = format!("{}=", config.hmac_algorithm.as_str());
    let decode = |signature: &str| {
        let signature = [prefix, algorithm_prefix.as_str()]
            .into_iter()
            .filter(|p| !p.is_empty())
            .find_map(|p| {
                signature
                    .get(..p.len())
                    .filter(|head| head.eq_ignore_ascii_case(p))
                    .and_then(|_| signature.get(p.len()..))
            })
            .unwrap_or(signature);
        let base64 = || {
            base64::engine::general_purpose::STANDARD
                .decode(signature)
                .ok()
        };
        match config.hmac_signature_encoding {
            SignatureEncoding::Hex => hex_decode(signature).or_else(base64),
            SignatureEncoding::Base64 => base64().or_else(|| hex_decode(signature)),
        }
    };
    let signatures: Vec<Vec<u8>> = signature.split_whitespace().filter_map(decode).collect();
    if signatures.is_empty() {
        return Err(WebhookError::Unauthenticated(
            "the signature is not hex or base64".into(),
        ));
    }
    let key = plan.key.expose_secret();
    let mut message = Vec::with_capacity(request.body.len() + 64);
    for piece in &plan.pieces {
        match piece {
            Piece::Text(text) => message.extend_from_slice(text.as_bytes()),
            Piece::Body => message.extend_from_slice(request.body),
            Piece::Timestamp => {
                message.extend_from_slice(timestamp.map_or("", |(raw, _)| raw).as_bytes());
            }
            Piece::Method => message.extend_from_slice(b"POST"),
            Piece::Url => {
                message.extend_from_slice(config.server_url.as_deref().unwrap_or("").as_bytes());
            }
            Piece::MessageId => {
                let header = config.hmac_message_id_header.trim();
                let id = request.header(header).ok_or_else(|| {
                    WebhookError::Unauthenticated(format!("no `{header}` header"))
                })?;
                message.extend_from_slice(id.trim().as_bytes());
            }
        }
    }
    let valid = signatures
        .iter()
        .any(|signature| match config.hmac_algorithm {
            HmacAlgorithm::Sha256 => mac_matches::<Hmac<sha2::Sha256>>(key, &message, signature),
            HmacAlgorithm::Sha512 => mac_matches::<Hmac<sha2::Sha512>>(key, &message, signature),
            HmacAlgorithm::Sha1 => mac_matches::<Hmac<sha1::Sha1>>(key, &message, signature),
        });
    if !valid {
        return Err(WebhookError::Unauthenticated("wrong signature".into()));
    }
    // Checked after the MAC, so a forged timestamp learns nothing.
    match timestamp {
        Some((_, signed_at)) => {
            check_tolerance(signed_at, request.received_at, config.tolerance_secs)
        }
        None => Ok(()),
    }
}

/// Whether `signature` is the MAC of `message` under `key` (compared in constant time).
fn mac_matches<M: Mac + hmac::digest::KeyInit>(
    key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> bool {
    let Ok(mut mac) = <M as hmac::digest::KeyInit>::new_from_slice(key) else {
        return false;
    };
    mac.update(message);
    mac.verify_slice(signature).is_ok()
}

/// Parses a verified delivery.
pub(super) fn parse(body: &[u8]) -> Result<Vec<CallUpdate>, WebhookError> {
    let json = json_webhook(body)?;
    let message = at(&json, &["message"])
        .filter(|message| message.is_object())
        .ok_or_else(|| WebhookError::Invalid("no `message` object".into()))?;
    let kind = str_at(message, &["type"])
        .ok_or_else(|| WebhookError::Invalid("no `message.type`".into()))?;
    let read = matches!(kind.as_str(), "status-update" | "end-of-call-report")
        || kind == "transcript"
        || kind.starts_with("transcript[");
    if !read {
        // Any other type (tool calls, speech updates, ones Vapi adds later) is accepted and
        // ignored, whether or not it names a call.
        return Ok(Vec::new());
    }
    let call = at(message, &["call"]).unwrap_or(&Value::Null);
    let provider_call_id = str_at(call, &["id"])
        .ok_or_else(|| WebhookError::Invalid("no `message.call.id`".into()))?;
    let base = CallUpdate {
        provider_call_id,
        call_id: our_call_id(call),
        event: kind.clone(),
        ..CallUpdate::default()
    };
    let update = match kind.as_str() {
        "status-update" => status_update(base, message, call),
        "end-of-call-report" => Some(final_update(
            base,
            Some(message),
            call,
            "end-of-call-report".into(),
        )),
        kind if kind == "transcript" || kind.starts_with("transcript[") => {
            transcript(base, message, call)
        }
        _ => None,
    };
    Ok(update.into_iter().collect())
}

/// Our call id: `assistantOverrides.metadata.crm_call_id` as sent, else `metadata`, else the
/// call's `name` (which we set to our call id too).
pub(super) fn our_call_id(call: &Value) -> Option<CallId> {
    call_id_at(call, &["assistantOverrides", "metadata", "crm_call_id"])
        .or_else(|| call_id_at(call, &["metadata", "crm_call_id"]))
        .or_else(|| call_id_at(call, &["name"]))
}

fn status_update(mut update: CallUpdate, message: &Value, call: &Value) -> Option<CallUpdate> {
    let raw = str_at(message, &["status"]).or_else(|| str_at(call, &["status"]))?;
    let status = status(&raw)?;
    update.dedupe_key = format!("status:{raw}");
    update.status = Some(status);
    update.started_at = time_at(call, &["startedAt"]);
    if status == CallStatus::Ended {
        update.ended_reason =
            str_at(message, &["endedReason"]).or_else(|| str_at(call, &["endedReason"]));
        update.ended_at = time_at(call, &["endedAt"]);
        update.disposition = update
            .ended_reason
            .as_deref()
            .map(|reason| disposition(reason, update.started_at.is_some()));
    }
    Some(update)
}

fn transcript(mut update: CallUpdate, message: &Value, call: &Value) -> Option<CallUpdate> {
    let kind = str_at(message, &["type"]).unwrap_or_default();
    let final_type = str_at(message, &["transcriptType"]).as_deref() == Some("final")
        || kind.contains("\"final\"");
    if !final_type {
        return None; // partial transcripts are superseded by the final one
    }
    let text = str_at(message, &["transcript"])?;
    let role_raw = str_at(message, &["role"]).unwrap_or_default();
    let seconds = f64_at(message, &["secondsFromStart"]);
    let timestamp = time_at(message, &["timestamp"]);
    let offset_ms = seconds.and_then(secs_to_ms).or_else(|| {
        let started = time_at(call, &["startedAt"])?;
        let millis = (timestamp? - started).num_milliseconds();
        (millis >= 0).then_some(millis)
    });
    let when = seconds
        .map(|s| s.to_string())
        .or_else(|| str_at(message, &["timestamp"]))
        .unwrap_or_default();
    update.dedupe_key = format!("transcript:{}", fingerprint(&[&role_raw, &text, &when]));
    update.segments.push(Segment {
        position: None,
        role: role(&role_raw),
        text: truncate_chars(text, MAX_SEGMENT_CHARS),
        offset_ms,
    });
    Some(update)
}

/// The full picture of an ended call, from an `end-of-call-report` (`report` = the message,
/// whose fields win) or from a `Call` object alone (`GET /call/{id}`, `report` = `None`).
pub(super) fn final_update(
    mut update: CallUpdate,
    report: Option<&Value>,
    call: &Value,
    dedupe_key: String,
) -> CallUpdate {
    let pick = |path: &[&str]| {
        report
            .and_then(|report| at(report, path))
            .or(at(call, path))
    };
    let pick_str = |path: &[&str]| {
        report
            .and_then(|report| str_at(report, path))
            .or_else(|| str_at(call, path))
    };
    let pick_time = |path: &[&str]| {
        report
            .and_then(|report| time_at(report, path))
            .or_else(|| time_at(call, path))
    };
    let pick_f64 = |path: &[&str]| {
        report
            .and_then(|report| f64_at(report, path))
            .or_else(|| f64_at(call, path))
    };

    update.dedupe_key = dedupe_key;
    update.status = if report.is_some() {
        Some(CallStatus::Ended)
    } else {
        str_at(call, &["status"]).as_deref().and_then(status)
    };
    update.started_at = pick_time(&["startedAt"]);
    update.ended_at = pick_time(&["endedAt"]);
    update.duration_secs =
        secs_between(update.started_at, update.ended_at).or_else(|| pick_f64(&["durationSeconds"]));
    update.ended_reason = pick_str(&["endedReason"]);
    if update.status == Some(CallStatus::Ended) {
        update.disposition = update
            .ended_reason
            .as_deref()
            .map(|reason| disposition(reason, update.started_at.is_some()));
    }
    update.cost_usd = pick_f64(&["cost"]);
    update.summary = pick_str(&["analysis", "summary"])
        .or_else(|| pick_str(&["summary"]))
        .map(|s| truncate_chars(s, MAX_TRANSCRIPT_CHARS));
    update.outcome = pick_str(&["analysis", "structuredData", "outcome"])
        .as_deref()
        .and_then(normalize_outcome);
    update.recording_url = [
        &["artifact", "recordingUrl"][..],
        &["recordingUrl"],
        &["artifact", "recording", "mono", "combinedUrl"],
        &["artifact", "stereoRecordingUrl"],
        &["artifact", "recording", "stereoUrl"],
    ]
    .iter()
    .find_map(|path| pick_str(path));
    update.transcript = pick_str(&["artifact", "transcript"])
        .or_else(|| pick_str(&["transcript"]))
        .map(|text| truncate_chars(text, MAX_TRANSCRIPT_CHARS));
    if let Some(Value::Array(messages)) =
        pick(&["artifact", "messages"]).or_else(|| pick(&["messages"]))
    {
        update.segments = segments(messages);
    }
    update
}

/// `artifact.messages` as segments, numbered by their index in that list. The `system` entry
/// (the assistant's prompt) and entries without text (tool calls) are left out.
fn segments(messages: &[Value]) -> Vec<Segment> {
    messages
        .iter()
        .enumerate()
        .filter_map(|(index, item)| {
            let role_raw = str_at(item, &["role"])?;
            if role_raw == "system" {
                return None;
            }
            let text = str_at(item, &["message"])?;
            Some(Segment {
                position: u32::try_from(index).ok(),
                role: role(&role_raw),
                text: truncate_chars(text, MAX_SEGMENT_CHARS),
                offset_ms: f64_at(item, &["secondsFromStart"]).and_then(secs_to_ms),
            })
        })
        .collect()
}

/// Vapi `status` → ours. `not-found` and `deletion-failed` say nothing about the call's
/// progress and map to nothing.
///
/// | Vapi | ours |
/// |---|---|
/// | `scheduled`, `queued` | `Dialing` |
/// | `ringing` | `Ringing` |
/// | `in-progress`, `forwarding` | `InProgress` |
/// | `ended` | `Ended` |
pub(super) fn status(raw: &str) -> Option<CallStatus> {
    Some(match raw {
        "scheduled" | "queued" => CallStatus::Dialing,
        "ringing" => CallStatus::Ringing,
        "in-progress" | "forwarding" => CallStatus::InProgress,
        "ended" => CallStatus::Ended,
        _ => return None,
    })
}

/// Vapi `role` → ours: `user` is the customer, `assistant`/`bot` our agent, anything else
/// (tool calls, system) `System`. PROVIDERS.md §1.4: the exact role set is unconfirmed.
pub(super) fn role(raw: &str) -> SpeakerRole {
    match raw {
        "user" | "customer" => SpeakerRole::Customer,
        "assistant" | "bot" => SpeakerRole::Agent,
        _ => SpeakerRole::System,
    }
}

/// Vapi `endedReason` → disposition (PROVIDERS.md §1.5; the grouping is ours).
///
/// | `endedReason` | disposition |
/// |---|---|
/// | `customer-did-not-answer` | `NoAnswer` |
/// | `customer-busy` | `Busy` |
/// | `voicemail` | `Voicemail` |
/// | `manually-canceled`, `call-deleted`, `scheduled-call-deleted` | `Canceled` |
/// | `*-ended-call*` (assistant/customer ended, incl. transfers), `assistant-said-end-call-phrase`, `assistant-forwarded-call`, `exceeded-max-duration`, `silence-timed-out` | `Answered` |
/// | `twilio-failed-to-connect-call`, `twilio-reported-customer-misdialed`, `vonage-*`, `call.start.error-*`, `call-start-error-*`, `call.in-progress.error-*`, `pipeline-error-*`, `*fault*`, `assistant-not-found`, `assistant-not-valid`, `assistant-request-*`, `assistant-join-timed-out`, anything else containing `error` | `Failed` |
/// | any other value (e.g. the docs' `hangup`) | `Answered` if the call started, else `Failed` |
pub(super) fn disposition(reason: &str, started: bool) -> Disposition {
    match reason {
        "customer-did-not-answer" => Disposition::NoAnswer,
        "customer-busy" => Disposition::Busy,
        "voicemail" => Disposition::Voicemail,
        "manually-canceled" | "call-deleted" | "scheduled-call-deleted" => Disposition::Canceled,
        "assistant-said-end-call-phrase"
        | "assistant-forwarded-call"
        | "exceeded-max-duration"
        | "silence-timed-out" => Disposition::Answered,
        r if r.contains("-ended-call") && !r.contains("error") => Disposition::Answered,
        "twilio-failed-to-connect-call"
        | "twilio-reported-customer-misdialed"
        | "assistant-not-found"
        | "assistant-not-valid"
        | "assistant-join-timed-out" => Disposition::Failed,
        r if r.starts_with("vonage-")
            || r.starts_with("call.start.error-")
            || r.starts_with("call-start-error-")
            || r.starts_with("call.in-progress.error-")
            || r.starts_with("pipeline-error-")
            || r.starts_with("assistant-request-")
            || r.contains("fault")
            || r.contains("error") =>
        {
            Disposition::Failed
        }
        _ if started => Disposition::Answered,
        _ => Disposition::Failed,
    }
}
