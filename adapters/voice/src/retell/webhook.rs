//! Retell webhooks: `x-retell-signature` verification and parsing into [`CallUpdate`]s, plus
//! the mapping of a Retell call object (also used by `GET /v2/get-call/{id}`).
//!
//! Body: `{"event": …, "call": {call object}}` (PROVIDERS.md §2.6). Used events:
//! `call_started`, `call_ended`, `call_analyzed`, `transcript_updated`; every other event is
//! accepted and ignored. Retell may deliver an event twice, so each update carries the event
//! name as its dedupe key.

use crate::http::{
    MAX_SEGMENT_CHARS, MAX_TRANSCRIPT_CHARS, at, bool_at, call_id_at, check_tolerance, f64_at,
    fingerprint, hex_decode, json_webhook, parse_unix_timestamp, secs_between, secs_to_ms, str_at,
    time_at, truncate_chars, verify_hmac,
};
use crm_domain::{
    CallStatus, CallUpdate, Disposition, Segment, Sentiment, SpeakerRole, WebhookError,
    WebhookRequest, voice::normalize_outcome,
};
use serde_json::Value;

/// The signature header.
const SIGNATURE_HEADER: &str = "x-retell-signature";

/// Checks `x-retell-signature: v=<unix ms>,d=<hex>`: HMAC-SHA256 with the API key over the
/// raw body immediately followed by the timestamp digits, and the timestamp within
/// `tolerance_secs` of the delivery (PROVIDERS.md §2.7).
pub(super) fn verify(
    api_key: &[u8],
    tolerance_secs: u64,
    request: &WebhookRequest<'_>,
) -> Result<(), WebhookError> {
    let header = request
        .header(SIGNATURE_HEADER)
        .ok_or_else(|| WebhookError::Unauthenticated(format!("no `{SIGNATURE_HEADER}` header")))?;
    let (mut timestamp, mut digest) = (None, None);
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("v", value)) => timestamp = Some(value.trim()),
            Some(("d", value)) => digest = Some(value.trim()),
            _ => {}
        }
    }
    let (Some(timestamp), Some(digest)) = (timestamp, digest) else {
        return Err(WebhookError::Unauthenticated(
            "the signature is not `v=<timestamp>,d=<digest>`".into(),
        ));
    };
    if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WebhookError::Unauthenticated(
            "the signature timestamp is not a number".into(),
        ));
    }
    let digest = hex_decode(digest)
        .ok_or_else(|| WebhookError::Unauthenticated("the signature digest is not hex".into()))?;
    if !verify_hmac(api_key, &[request.body, timestamp.as_bytes()], &digest) {
        return Err(WebhookError::Unauthenticated("wrong signature".into()));
    }
    let signed_at = parse_unix_timestamp(timestamp).ok_or_else(|| {
        WebhookError::Unauthenticated("the signature timestamp is out of range".into())
    })?;
    check_tolerance(signed_at, request.received_at, tolerance_secs)
}

/// Parses a verified delivery.
pub(super) fn parse(body: &[u8]) -> Result<Vec<CallUpdate>, WebhookError> {
    let json = json_webhook(body)?;
    let event =
        str_at(&json, &["event"]).ok_or_else(|| WebhookError::Invalid("no `event`".into()))?;
    let call = at(&json, &["call"])
        .filter(|call| call.is_object())
        .ok_or_else(|| WebhookError::Invalid("no `call` object".into()))?;
    let base = base_update(call, &event)
        .ok_or_else(|| WebhookError::Invalid("no `call.call_id`".into()))?;
    let update = match event.as_str() {
        "call_started" => Some(CallUpdate {
            dedupe_key: event.clone(),
            status: Some(CallStatus::InProgress),
            started_at: time_at(call, &["start_timestamp"]),
            ..base
        }),
        // `call_analyzed` carries the whole call again plus `call_analysis`, so mapping it in
        // full repeats what `call_ended` said and adds the analysis: nothing regresses.
        "call_ended" | "call_analyzed" => Some(full_update(base, call, event.clone(), true)),
        "transcript_updated" => Some(transcript_update(base, call)),
        _ => None,
    };
    Ok(update.into_iter().collect())
}

/// The update every mapping starts from: ids and event name; `None` without a call id.
pub(super) fn base_update(call: &Value, event: &str) -> Option<CallUpdate> {
    Some(CallUpdate {
        provider_call_id: str_at(call, &["call_id"])?,
        call_id: call_id_at(call, &["metadata", "crm_call_id"]),
        event: event.to_owned(),
        ..CallUpdate::default()
    })
}

fn transcript_update(mut update: CallUpdate, call: &Value) -> CallUpdate {
    update.segments = segments(call);
    // Each delivery repeats the whole list; the count and the last utterance (which grows
    // while it is spoken) identify it.
    let last = update
        .segments
        .last()
        .map(|segment| segment.text.as_str())
        .unwrap_or_default();
    update.dedupe_key = format!(
        "transcript_updated:{}:{}",
        update.segments.len(),
        fingerprint(&[last])
    );
    update
}

/// Everything a call object says. `ended` forces `Ended` (the `call_ended`/`call_analyzed`
/// events); otherwise the status comes from `call_status`.
pub(super) fn full_update(
    mut update: CallUpdate,
    call: &Value,
    dedupe_key: String,
    ended: bool,
) -> CallUpdate {
    let call_status = str_at(call, &["call_status"]);
    update.dedupe_key = dedupe_key;
    update.status = if ended {
        Some(CallStatus::Ended)
    } else {
        call_status.as_deref().and_then(status)
    };
    update.started_at = time_at(call, &["start_timestamp"]);
    update.ended_at = time_at(call, &["end_timestamp"]);
    update.duration_secs = f64_at(call, &["duration_ms"])
        .map(|ms| ms / 1000.0)
        .or_else(|| secs_between(update.started_at, update.ended_at));
    update.ended_reason = str_at(call, &["disconnection_reason"]);
    if update.status == Some(CallStatus::Ended) {
        update.disposition = Some(
            if bool_at(call, &["call_analysis", "in_voicemail"]) == Some(true) {
                Disposition::Voicemail
            } else if call_status.as_deref() == Some("error") {
                Disposition::Failed
            } else {
                match update.ended_reason.as_deref() {
                    Some(reason) => disposition(reason, update.started_at.is_some()),
                    // `not_connected` without a reason: it never connected.
                    None if call_status.as_deref() == Some("not_connected") => Disposition::Failed,
                    None if update.started_at.is_some() => Disposition::Answered,
                    None => Disposition::Failed,
                }
            },
        );
    }
    update.cost_usd = f64_at(call, &["call_cost", "combined_cost"]).map(|cents| cents / 100.0);
    update.summary = str_at(call, &["call_analysis", "call_summary"])
        .map(|s| truncate_chars(s, MAX_TRANSCRIPT_CHARS));
    update.sentiment = str_at(call, &["call_analysis", "user_sentiment"])
        .and_then(|raw| raw.parse::<Sentiment>().ok());
    update.outcome = str_at(call, &["call_analysis", "custom_analysis_data", "outcome"])
        .as_deref()
        .and_then(normalize_outcome);
    update.recording_url = str_at(call, &["recording_url"]);
    update.transcript =
        str_at(call, &["transcript"]).map(|text| truncate_chars(text, MAX_TRANSCRIPT_CHARS));
    update.segments = segments(call);
    update
}

/// `transcript_object` as segments, numbered by their index; the offset is the first word's
/// start (seconds of audio).
fn segments(call: &Value) -> Vec<Segment> {
    let Some(Value::Array(items)) = at(call, &["transcript_object"]) else {
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(index, item)| {
            let text = str_at(item, &["content"])?;
            let offset_ms = match at(item, &["words"]) {
                Some(Value::Array(words)) => words
                    .first()
                    .and_then(|word| f64_at(word, &["start"]))
                    .and_then(secs_to_ms),
                _ => None,
            };
            Some(Segment {
                position: u32::try_from(index).ok(),
                role: role(str_at(item, &["role"]).as_deref().unwrap_or_default()),
                text: truncate_chars(text, MAX_SEGMENT_CHARS),
                offset_ms,
            })
        })
        .collect()
}

/// Retell `call_status` → ours.
///
/// | Retell | ours |
/// |---|---|
/// | `registered` | `Dialing` |
/// | `ongoing` | `InProgress` |
/// | `ended`, `not_connected`, `error` | `Ended` |
pub(super) fn status(raw: &str) -> Option<CallStatus> {
    Some(match raw {
        "registered" => CallStatus::Dialing,
        "ongoing" => CallStatus::InProgress,
        "ended" | "not_connected" | "error" => CallStatus::Ended,
        _ => return None,
    })
}

/// Retell transcript `role` → ours.
pub(super) fn role(raw: &str) -> SpeakerRole {
    match raw {
        "agent" => SpeakerRole::Agent,
        "user" => SpeakerRole::Customer,
        _ => SpeakerRole::System, // `transfer_target`, tool calls
    }
}

/// Retell `disconnection_reason` → disposition (PROVIDERS.md §2.5; the grouping is ours).
/// An `in_voicemail` analysis and `call_status: error` override it (see [`full_update`]).
///
/// | `disconnection_reason` | disposition |
/// |---|---|
/// | `dial_no_answer`, `user_declined` (the callee rejected the ring: not reached, worth another try) | `NoAnswer` |
/// | `dial_busy` | `Busy` |
/// | `voicemail_reached`, `ivr_reached` (a machine answered) | `Voicemail` |
/// | `user_hangup`, `agent_hangup`, `call_transfer`, `inactivity`, `max_duration_reached`, `transfer_bridged`, `transfer_cancelled`, `call_take_over` | `Answered` |
/// | `manual_stopped` | `Canceled` |
/// | `dial_failed`, `invalid_destination`, `error_*`, `concurrency_limit_reached`, `no_concurrency_fallback`, `no_valid_payment`, `scam_detected`, `telephony_provider_*`, `sip_routing_error`, `marked_as_spam`, `registered_call_timeout` | `Failed` |
/// | any other value | `Answered` if the call started, else `Failed` |
pub(super) fn disposition(reason: &str, started: bool) -> Disposition {
    match reason {
        "dial_no_answer" | "user_declined" => Disposition::NoAnswer,
        "dial_busy" => Disposition::Busy,
        "voicemail_reached" | "ivr_reached" => Disposition::Voicemail,
        "user_hangup"
        | "agent_hangup"
        | "call_transfer"
        | "inactivity"
        | "max_duration_reached"
        | "transfer_bridged"
        | "transfer_cancelled"
        | "call_take_over" => Disposition::Answered,
        "manual_stopped" => Disposition::Canceled,
        "dial_failed"
        | "invalid_destination"
        | "concurrency_limit_reached"
        | "no_concurrency_fallback"
        | "no_valid_payment"
        | "scam_detected"
        | "sip_routing_error"
        | "marked_as_spam"
        | "registered_call_timeout" => Disposition::Failed,
        r if r.starts_with("error_") || r.starts_with("telephony_provider_") => Disposition::Failed,
        _ if started => Disposition::Answered,
        _ => Disposition::Failed,
    }
}
