//! Bland webhooks: `X-Webhook-Signature` verification and parsing into [`CallUpdate`]s, plus
//! the mapping of a Bland call object (also used by `GET /v1/calls/{id}`).
//!
//! Two kinds of body reach the webhook URL (PROVIDERS.md §3.4):
//! - the post-call webhook: the call object (`call_id`, `status`, `completed`, …), once right
//!   after the call and, when enabled, once more 30–60 s later with `corrected_transcript`
//!   and `citations` (the "enriched" one);
//! - live `webhook_events` log lines `{call_id, message, category, log_level}`: agent and user
//!   speech become segments, "Call connected" means in progress, the rest is ignored.
//!
//! Bland's signature has no timestamp, so there is no replay window: a replayed delivery is
//! caught only by its dedupe key (`post-call`, `post-call:enriched`, a hash of a log line).

use crate::http::{
    MAX_SEGMENT_CHARS, MAX_TRANSCRIPT_CHARS, at, bool_at, call_id_at, f64_at, fingerprint,
    hex_decode, json_webhook, secs_to_ms, str_at, time_at, truncate_chars, verify_hmac,
};
use chrono::{DateTime, Duration, Utc};
use crm_domain::{
    CallStatus, CallUpdate, Disposition, Segment, SpeakerRole, WebhookError, WebhookRequest,
    voice::normalize_outcome,
};
use serde_json::Value;

/// The signature header.
const SIGNATURE_HEADER: &str = "x-webhook-signature";

/// Checks `X-Webhook-Signature`: hex HMAC-SHA256 of the raw body with the signing secret
/// (PROVIDERS.md §3.5).
pub(super) fn verify(
    secret: Option<&[u8]>,
    request: &WebhookRequest<'_>,
) -> Result<(), WebhookError> {
    let Some(secret) = secret else {
        return Err(WebhookError::Unauthenticated(
            "no Bland webhook secret is configured".into(),
        ));
    };
    let signature = request
        .header(SIGNATURE_HEADER)
        .ok_or_else(|| WebhookError::Unauthenticated(format!("no `{SIGNATURE_HEADER}` header")))?;
    let signature = hex_decode(signature.trim())
        .ok_or_else(|| WebhookError::Unauthenticated("the signature is not hex".into()))?;
    if verify_hmac(secret, &[request.body], &signature) {
        Ok(())
    } else {
        Err(WebhookError::Unauthenticated("wrong signature".into()))
    }
}

/// Parses a verified delivery.
pub(super) fn parse(body: &[u8]) -> Result<Vec<CallUpdate>, WebhookError> {
    let json = json_webhook(body)?;
    let base = base_update(&json, "post-call")
        .ok_or_else(|| WebhookError::Invalid("no `call_id`".into()))?;
    if at(&json, &["log_level"]).is_some() || at(&json, &["category"]).is_some() {
        return Ok(log_update(base, &json).into_iter().collect());
    }
    let is_call = [
        "status",
        "completed",
        "queue_status",
        "concatenated_transcript",
        "corrected_transcript",
        "call_length",
    ]
    .iter()
    .any(|key| at(&json, &[key]).is_some());
    if !is_call {
        return Ok(Vec::new());
    }
    let enriched =
        at(&json, &["corrected_transcript"]).is_some() || at(&json, &["citations"]).is_some();
    let dedupe_key = if enriched {
        "post-call:enriched"
    } else {
        "post-call"
    };
    Ok(vec![call_update(base, &json, dedupe_key.into(), true)])
}

/// The update every mapping starts from; `None` without a call id.
pub(super) fn base_update(json: &Value, event: &str) -> Option<CallUpdate> {
    Some(CallUpdate {
        provider_call_id: str_at(json, &["call_id"]).or_else(|| str_at(json, &["c_id"]))?,
        call_id: call_id_at(json, &["metadata", "crm_call_id"]),
        event: event.to_owned(),
        ..CallUpdate::default()
    })
}

/// A live log line: speech becomes a segment, "Call connected" a status.
fn log_update(mut update: CallUpdate, json: &Value) -> Option<CallUpdate> {
    let message = str_at(json, &["message"])?;
    update.event = "call-log".into();
    if starts_with_ignore_case(&message, "call connected") {
        update.dedupe_key = "status:in_progress".into();
        update.status = Some(CallStatus::InProgress);
        return Some(update);
    }
    let (role, text) = [
        ("Agent speech:", SpeakerRole::Agent),
        ("Handling user speech:", SpeakerRole::Customer),
        ("User speech:", SpeakerRole::Customer),
    ]
    .iter()
    .find_map(|(prefix, role)| {
        starts_with_ignore_case(&message, prefix).then(|| {
            (
                *role,
                message.get(prefix.len()..).unwrap_or_default().trim(),
            )
        })
    })?;
    if text.is_empty() {
        return None;
    }
    // Log lines carry no position; a timestamp, when present, separates repeated words.
    let when = str_at(json, &["timestamp"])
        .or_else(|| str_at(json, &["created_at"]))
        .unwrap_or_default();
    update.dedupe_key = format!("log:{}", fingerprint(&[&message, &when]));
    update.segments.push(Segment {
        position: None,
        role,
        text: truncate_chars(text.to_owned(), MAX_SEGMENT_CHARS),
        offset_ms: None,
    });
    Some(update)
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// Everything a call object says. `ended` forces `Ended` (the post-call webhook); otherwise
/// the status comes from `status`, `completed` and `queue_status`.
pub(super) fn call_update(
    mut update: CallUpdate,
    call: &Value,
    dedupe_key: String,
    ended: bool,
) -> CallUpdate {
    let raw_status = str_at(call, &["status"]).map(|s| s.to_ascii_lowercase());
    let queue_status = str_at(call, &["queue_status"]).map(|s| s.to_ascii_lowercase());
    let completed = bool_at(call, &["completed"]) == Some(true);
    let queue_failed = queue_status
        .as_deref()
        .is_some_and(|q| q.ends_with("error"));
    let is_ended = ended
        || completed
        || queue_failed
        || queue_status.as_deref() == Some("complete")
        || matches!(
            raw_status.as_deref(),
            Some("completed" | "failed" | "busy" | "no-answer" | "canceled" | "cancelled")
        );

    update.dedupe_key = dedupe_key;
    update.status = if is_ended {
        Some(CallStatus::Ended)
    } else {
        match queue_status.as_deref() {
            Some("started") => Some(CallStatus::InProgress),
            Some("new" | "queued" | "allocated") => Some(CallStatus::Dialing),
            _ => None,
        }
    };
    update.started_at = time_at(call, &["started_at"]);
    // `corrected_duration` (seconds, a string) is the better figure; `call_length` is minutes.
    update.duration_secs = f64_at(call, &["corrected_duration"])
        .or_else(|| f64_at(call, &["call_length"]).map(|minutes| minutes * 60.0))
        .filter(|secs| *secs >= 0.0);
    // `end_at` is the max-duration auto-end time, not the real end: derive the end instead.
    update.ended_at = match (update.started_at, update.duration_secs) {
        (Some(start), Some(secs)) if is_ended => {
            secs_to_ms(secs).and_then(|ms| start.checked_add_signed(Duration::milliseconds(ms)))
        }
        _ => None,
    };
    update.ended_reason = str_at(call, &["error_message"])
        .or_else(|| str_at(call, &["call_ended_by"]))
        .or_else(|| raw_status.clone());
    if is_ended {
        let answered_by = str_at(call, &["answered_by"]).map(|s| s.to_ascii_lowercase());
        update.disposition = Some(disposition(
            raw_status.as_deref(),
            answered_by.as_deref(),
            completed,
            queue_failed,
            update.started_at.is_some() || update.duration_secs.is_some_and(|s| s > 0.0),
        ));
    }
    update.cost_usd = f64_at(call, &["price"]);
    update.summary = str_at(call, &["summary"]).map(|s| truncate_chars(s, MAX_TRANSCRIPT_CHARS));
    update.outcome = str_at(call, &["disposition_tag"])
        .as_deref()
        .and_then(normalize_outcome);
    update.recording_url = str_at(call, &["recording_url"]);
    update.transcript = str_at(call, &["concatenated_transcript"])
        .map(|text| truncate_chars(text, MAX_TRANSCRIPT_CHARS));
    update.segments = corrected_segments(call);
    if update.segments.is_empty() {
        update.segments = plain_segments(call, update.started_at);
    }
    update
}

/// `corrected_transcript[]` (enriched webhook): offsets from `start` seconds.
fn corrected_segments(call: &Value) -> Vec<Segment> {
    let Some(Value::Array(items)) = at(call, &["corrected_transcript"]) else {
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(index, item)| {
            let text = str_at(item, &["text"])?;
            let label = str_at(item, &["speaker_label"])
                .or_else(|| str_at(item, &["speaker"]))
                .unwrap_or_default();
            Some(Segment {
                position: u32::try_from(index).ok(),
                role: role(&label),
                text: truncate_chars(text, MAX_SEGMENT_CHARS),
                offset_ms: f64_at(item, &["start"]).and_then(secs_to_ms),
            })
        })
        .collect()
}

/// `transcripts[]`: offsets from `created_at` (wall clock) relative to the call's start.
fn plain_segments(call: &Value, started_at: Option<DateTime<Utc>>) -> Vec<Segment> {
    let Some(Value::Array(items)) = at(call, &["transcripts"]) else {
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(index, item)| {
            let text = str_at(item, &["text"])?;
            let offset_ms = time_at(item, &["created_at"])
                .zip(started_at)
                .map(|(at, start)| (at - start).num_milliseconds())
                .filter(|ms| *ms >= 0);
            Some(Segment {
                position: u32::try_from(index).ok(),
                role: role(str_at(item, &["user"]).as_deref().unwrap_or_default()),
                text: truncate_chars(text, MAX_SEGMENT_CHARS),
                offset_ms,
            })
        })
        .collect()
}

/// Bland speaker → ours: `user` is the customer, `assistant`/`robot` our agent,
/// `agent-action` and anything unknown `System`. `corrected_transcript` labels are
/// unconfirmed, so `customer`/`human` and `agent` are accepted too.
pub(super) fn role(raw: &str) -> SpeakerRole {
    match raw.trim().to_ascii_lowercase().as_str() {
        "user" | "customer" | "human" => SpeakerRole::Customer,
        "assistant" | "robot" | "agent" => SpeakerRole::Agent,
        _ => SpeakerRole::System,
    }
}

/// Bland `status` (+ `answered_by`) → disposition (PROVIDERS.md §3.4; the grouping is ours).
///
/// | `status` | `answered_by` | disposition |
/// |---|---|---|
/// | `completed` | `voicemail` | `Voicemail` |
/// | `completed` | `no-answer` | `NoAnswer` |
/// | `completed` | `human`, `unknown`, none | `Answered` |
/// | `busy` | | `Busy` |
/// | `no-answer` | | `NoAnswer` |
/// | `canceled` | | `Canceled` |
/// | `failed` | | `Failed` |
/// | other / none | | as `completed` when `completed` is true; `Failed` after a queue error; else `Answered` if it connected, `Failed` if not |
pub(super) fn disposition(
    status: Option<&str>,
    answered_by: Option<&str>,
    completed: bool,
    queue_failed: bool,
    connected: bool,
) -> Disposition {
    let by_answer = || match answered_by {
        Some("voicemail") => Disposition::Voicemail,
        Some("no-answer") => Disposition::NoAnswer,
        _ => Disposition::Answered,
    };
    match status {
        Some("completed") => by_answer(),
        Some("busy") => Disposition::Busy,
        Some("no-answer") => Disposition::NoAnswer,
        Some("canceled" | "cancelled") => Disposition::Canceled,
        Some("failed") => Disposition::Failed,
        _ if completed => by_answer(),
        _ if queue_failed => Disposition::Failed,
        _ if connected => Disposition::Answered,
        _ => Disposition::Failed,
    }
}
