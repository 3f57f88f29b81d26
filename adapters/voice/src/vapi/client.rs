//! Vapi's HTTP API (PROVIDERS.md §1.2–1.4): `POST /call`, `GET /call/{id}`,
//! `DELETE /call/{id}`, and a live call's `monitor.controlUrl` to end it.

use super::webhook::{final_update, our_call_id, status};
use crate::http::{
    ApiClient, Idempotency, fingerprint, json_response, missing, path_segment, str_at,
    truncate_chars,
};
use crm_domain::{CallDeletion, CallStatus, CallUpdate, ProviderError, StartCall, StartedCall};
use reqwest::Method;
use serde_json::{Map, Value, json};

/// Vapi's limit on `customer.name` (CreateCustomerDto; unconfirmed in PROVIDERS.md, so we cut
/// rather than risk a 400 for a long name).
const MAX_CUSTOMER_NAME_CHARS: usize = 40;

/// The server messages Vapi posts for our calls: its default list (PROVIDERS.md §1.6) plus
/// final `transcript` messages, which are not in it and carry the live transcript.
const SERVER_MESSAGES: &[&str] = &[
    "conversation-update",
    "end-of-call-report",
    "function-call",
    "hang",
    "speech-update",
    "status-update",
    "tool-calls",
    "transfer-destination-request",
    "handoff-destination-request",
    "user-interrupted",
    "assistant.started",
    "transcript[transcriptType=\"final\"]",
];

/// The `POST /call` body of an outbound phone call.
pub(super) fn create_body(
    call: &StartCall,
    server_url: Option<&str>,
) -> Result<Value, ProviderError> {
    let assistant_id = call.agent.provider_agent_id.as_deref().ok_or_else(|| {
        missing(&format!(
            "agent `{}` has no Vapi assistant id (provider_agent_id)",
            call.agent.name
        ))
    })?;
    let phone_number_id = call.agent.from_number.as_deref().ok_or_else(|| {
        missing(&format!(
            "agent `{}` has no Vapi phone number id (from_number)",
            call.agent.name
        ))
    })?;

    let mut customer = Map::new();
    customer.insert("number".into(), json!(call.to));
    if let Some(name) = call
        .customer_name
        .as_deref()
        .filter(|n| !n.trim().is_empty())
    {
        let name = truncate_chars(name.trim().to_owned(), MAX_CUSTOMER_NAME_CHARS);
        customer.insert("name".into(), json!(name));
    }
    customer.insert("externalId".into(), json!(call.customer_id.to_string()));

    let mut variables = call.agent.variables.clone();
    variables.extend(call.variables.clone());

    let mut overrides = Map::new();
    overrides.insert("variableValues".into(), json!(variables));
    overrides.insert(
        "metadata".into(),
        json!({
            "crm_call_id": call.call_id.to_string(),
            "crm_customer_id": call.customer_id.to_string(),
        }),
    );
    if let Some(first) = call.agent.first_message.as_deref() {
        overrides.insert("firstMessage".into(), json!(first));
    }
    if let Some(url) = call.webhook_url.as_deref().or(server_url) {
        overrides.insert("server".into(), json!({ "url": url }));
    }
    overrides.insert("serverMessages".into(), json!(SERVER_MESSAGES));
    // A control URL per call (`monitor.controlUrl`), so that a call can be ended from here.
    overrides.insert("monitorPlan".into(), json!({ "controlEnabled": true }));

    Ok(json!({
        "assistantId": assistant_id,
        "phoneNumberId": phone_number_id,
        "customer": customer,
        "name": call.call_id.to_string(),
        "assistantOverrides": overrides,
    }))
}

/// Places the call; the answer is a `Call` (201).
pub(super) async fn start_call(
    api: &ApiClient,
    call: &StartCall,
    server_url: Option<&str>,
) -> Result<StartedCall, ProviderError> {
    let body = create_body(call, server_url)?;
    let answer = api
        .send(Method::POST, "/call", Some(&body), Idempotency::PlacesCall)
        .await?;
    let json = json_response(&answer.body)?;
    let provider_call_id = str_at(&json, &["id"])
        .ok_or_else(|| ProviderError::Malformed("the created call has no `id`".into()))?;
    let status = str_at(&json, &["status"])
        .as_deref()
        .and_then(status)
        .unwrap_or(CallStatus::Dialing);
    Ok(StartedCall {
        provider_call_id,
        status,
    })
}

/// Reads a call and maps it like an end-of-call report.
pub(super) async fn get_call(
    api: &ApiClient,
    provider_call_id: &str,
) -> Result<CallUpdate, ProviderError> {
    let path = format!("/call/{}", path_segment(provider_call_id)?);
    let answer = api
        .send(Method::GET, &path, None, Idempotency::Safe)
        .await?;
    let json = json_response(&answer.body)?;
    let id = str_at(&json, &["id"])
        .ok_or_else(|| ProviderError::Malformed("the call has no `id`".into()))?;
    let base = CallUpdate {
        provider_call_id: id,
        call_id: our_call_id(&json),
        event: "get-call".into(),
        ..CallUpdate::default()
    };
    // The same state read twice gives the same key; any change (even `updatedAt`) a new one.
    let dedupe_key = format!(
        "get-call:{}",
        fingerprint(&[&String::from_utf8_lossy(&answer.body)])
    );
    Ok(final_update(base, None, &json, dedupe_key))
}

/// Deletes the call's data: `DELETE /call/{id}` (200; 404 → nothing left to delete).
pub(super) async fn delete_call(
    api: &ApiClient,
    provider_call_id: &str,
) -> Result<CallDeletion, ProviderError> {
    let path = format!("/call/{}", path_segment(provider_call_id)?);
    api.delete(&path).await
}

/// Ends a live call: reads it (`GET /call/{id}`) for its `monitor.controlUrl` and posts
/// `{"type": "end-call"}` there (Vapi's live call control; the URL exists because every call
/// is placed with `monitorPlan.controlEnabled`). A call already over, or one without a control
/// URL (placed before, or not yet connected), cannot be ended from here: refused (409).
pub(super) async fn stop_call(
    api: &ApiClient,
    provider_call_id: &str,
) -> Result<(), ProviderError> {
    let path = format!("/call/{}", path_segment(provider_call_id)?);
    let answer = api
        .send(Method::GET, &path, None, Idempotency::Safe)
        .await?;
    let json = json_response(&answer.body)?;
    if str_at(&json, &["status"]).as_deref() == Some("ended") {
        // Not a cancellation: the call ended as it did, and its report (or the reconciler)
        // says how.
        return Err(ProviderError::Rejected {
            status: 409,
            message: "the call has already ended at Vapi".into(),
        });
    }
    let Some(control_url) = str_at(&json, &["monitor", "controlUrl"]) else {
        return Err(ProviderError::Rejected {
            status: 409,
            message: "the call has no monitor.controlUrl (placed without \
                      monitorPlan.controlEnabled, or not connected yet); it ends by the \
                      assistant's end-call rules or maxDurationSeconds"
                .into(),
        });
    };
    api.post_to(&control_url, &json!({ "type": "end-call" }))
        .await
        .map(drop)
}
