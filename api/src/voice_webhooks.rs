//! `POST /webhooks/voice/{provider}`: provider call events, verified over the raw body the
//! way each provider signs them, then ingested idempotently (DESIGN.md §5).
//!
//! Answers: 200 with what was applied (duplicates included: providers repeat deliveries and
//! must not retry them); 401 for a bad or missing signature; 400 for a body the provider would
//! never send; 404 for an unknown provider or a call we did not place (logged, so an operator
//! sees misrouted webhooks); 503 when storage is unavailable (the provider retries).

use crate::{
    error::code,
    graphql::ApiContext,
    http::{HttpState, error_response},
};
use axum::{
    Json,
    extract::{ConnectInfo, Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use crm_domain::{ProviderKind, WebhookError, WebhookRequest};
use crm_plugins::voice::VoiceError;
use crm_store::calls::Ingested;
use serde_json::json;
use std::{collections::HashSet, net::SocketAddr, sync::Mutex};

/// Largest voice webhook body taken (or `server.body_limit_bytes`, if larger): a provider's
/// final event carries the whole call (Retell's `call_analyzed` with every word's timing),
/// and one refused is lost for good (the call has ended, so reconciliation skips it). What is
/// stored of it is capped (transcript characters, segments).
pub(crate) const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Event types already logged as ignored (each is logged once per process).
static IGNORED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Whether `key` (provider and event type) is ignored for the first time in this process.
fn first_ignored(key: &str) -> bool {
    IGNORED
        .lock()
        .map(|mut seen| seen.get_or_insert_with(HashSet::new).insert(key.to_owned()))
        .unwrap_or(false)
}

/// `POST /webhooks/voice/{provider}`.
pub(crate) async fn receive(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    crate::http::RawBody(body): crate::http::RawBody,
) -> Response {
    let ip = crate::http::client_ip(peer, &headers, state.trust_forwarded_for);
    if let Err(refusal) = state.limits.check_ip(ip) {
        return crate::http::rate_limited(refusal, "client address", &ip.to_string());
    }
    let api: &ApiContext = &state.context;
    let Ok(kind) = provider.parse::<ProviderKind>() else {
        return error_response(
            StatusCode::NOT_FOUND,
            code::NOT_FOUND,
            format!("`{provider}` is not a voice provider (vapi, retell, bland, simulator)"),
        );
    };
    let Some(adapter) = api.voice.provider(kind).cloned() else {
        return error_response(
            StatusCode::NOT_FOUND,
            code::NOT_FOUND,
            format!("the voice provider `{kind}` is not configured"),
        );
    };
    let pairs = crate::http::header_pairs(&headers);
    let request = WebhookRequest {
        headers: &pairs,
        body: &body,
        received_at: api.clock.now(),
    };
    if let Err(error) = adapter.verify_webhook(&request) {
        tracing::warn!(target: "crm::security", provider = %kind, %error, "Voice webhook refused.");
        return error_response(
            StatusCode::UNAUTHORIZED,
            code::UNAUTHENTICATED,
            error.to_string(),
        );
    }
    let updates = match adapter.parse_webhook(&body) {
        Ok(updates) => updates,
        Err(WebhookError::Invalid(message) | WebhookError::Unauthenticated(message)) => {
            tracing::warn!(provider = %kind, %message, "Voice webhook body refused.");
            return error_response(StatusCode::BAD_REQUEST, code::BAD_REQUEST, message);
        }
    };
    if updates.is_empty() {
        let event = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.pointer("/message/type")
                    .or_else(|| v.get("event"))
                    .or_else(|| v.get("category"))
                    .and_then(|t| t.as_str().map(str::to_owned))
            })
            .unwrap_or_else(|| "unknown".to_owned());
        if first_ignored(&format!("{kind}:{event}")) {
            tracing::info!(provider = %kind, event, "Voice webhook event type not used; accepted and ignored.");
        }
        return (StatusCode::OK, Json(json!({ "ignored": event }))).into_response();
    }
    let mut applied = Vec::new();
    for update in &updates {
        match api.voice.ingest(kind, update).await {
            Ok(Ingested::Duplicate) => {
                applied.push(json!({ "event": update.event, "duplicate": true }))
            }
            Ok(Ingested::Applied {
                call,
                new_segments,
                ended,
            }) => applied.push(json!({
                "event": update.event,
                "callId": call.id.to_string(),
                "status": call.status.as_str(),
                "newSegments": new_segments,
                "ended": ended,
            })),
            Err(VoiceError::NotFound { id, .. }) => {
                tracing::warn!(provider = %kind, call = %id, event = %update.event, "Voice webhook for a call we did not place.");
                return error_response(
                    StatusCode::NOT_FOUND,
                    code::NOT_FOUND,
                    format!("no call {id} was placed through {kind}"),
                );
            }
            Err(VoiceError::Store(error)) => {
                tracing::error!(provider = %kind, %error, "Voice webhook not stored.");
                return error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    code::SERVICE_UNAVAILABLE,
                    "the event could not be stored; retry later",
                );
            }
            Err(other) => {
                return error_response(StatusCode::CONFLICT, code::CONFLICT, other.to_string());
            }
        }
    }
    (StatusCode::OK, Json(json!({ "applied": applied }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::first_ignored;

    #[test]
    fn an_ignored_event_type_is_logged_once_per_provider() {
        assert!(first_ignored("retell:test_only_event"));
        assert!(!first_ignored("retell:test_only_event"));
        assert!(first_ignored("vapi:test_only_event"));
        assert!(!first_ignored("vapi:test_only_event"));
    }
}
