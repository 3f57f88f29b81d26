//! Retell's HTTP API (PROVIDERS.md §2.2–2.4): `POST /v2/create-phone-call`,
//! `GET /v2/get-call/{id}`, `POST /v2/stop-call/{id}`, `DELETE /v2/delete-call/{id}`.

use super::webhook::{base_update, full_update, status};
use crate::http::{
    ApiClient, Idempotency, fingerprint, json_response, missing, path_segment, str_at,
};
use crm_domain::{CallDeletion, CallStatus, CallUpdate, ProviderError, StartCall, StartedCall};
use reqwest::Method;
use serde_json::{Map, Value, json};

/// Our language (ISO 639-1) → Retell's `agent_override.agent.language` locale.
///
/// Only locales in every SDK version's enum are sent. `bs`, `sr`, `hr` and any other
/// language get no override: the Retell agent's own language applies, so configure those
/// agents in Retell (a locale Retell does not know would make every call a 400). A value that
/// already is a locale (`de-AT`) is sent as is.
pub(super) fn locale(language: &str) -> Option<String> {
    let language = language.trim();
    // A locale as Retell writes it (`sr-RS`, `en-US`), whatever case the config used.
    if let Some((primary, region)) = language.split_once(['-', '_']) {
        return Some(format!(
            "{}-{}",
            primary.to_ascii_lowercase(),
            region.to_ascii_uppercase()
        ));
    }
    Some(
        match language.to_ascii_lowercase().as_str() {
            "de" => "de-DE",
            "en" => "en-US",
            "es" => "es-ES",
            "fr" => "fr-FR",
            "it" => "it-IT",
            "nl" => "nl-NL",
            "pl" => "pl-PL",
            "pt" => "pt-PT",
            "ru" => "ru-RU",
            "tr" => "tr-TR",
            _ => return None,
        }
        .to_owned(),
    )
}

/// The `POST /v2/create-phone-call` body.
pub(super) fn create_body(call: &StartCall) -> Result<Value, ProviderError> {
    let from_number = call.agent.from_number.as_deref().ok_or_else(|| {
        missing(&format!(
            "agent `{}` has no Retell from_number",
            call.agent.name
        ))
    })?;
    let mut variables = call.agent.variables.clone();
    variables.extend(call.variables.clone());

    let mut body = Map::new();
    body.insert("from_number".into(), json!(from_number));
    body.insert("to_number".into(), json!(call.to));
    if let Some(agent_id) = call.agent.provider_agent_id.as_deref() {
        body.insert("override_agent_id".into(), json!(agent_id));
    }
    body.insert(
        "metadata".into(),
        json!({
            "crm_call_id": call.call_id.to_string(),
            "crm_customer_id": call.customer_id.to_string(),
        }),
    );
    body.insert("retell_llm_dynamic_variables".into(), json!(variables));

    let mut agent = Map::new();
    if let Some(language) = locale(&call.agent.language) {
        agent.insert("language".into(), json!(language));
    }
    if let Some(url) = call.webhook_url.as_deref() {
        agent.insert("webhook_url".into(), json!(url));
    }
    // Retell's defaults, plus `transcript_updated`: the live transcript is opt-in
    // (PROVIDERS.md §2.6).
    agent.insert(
        "webhook_events".into(),
        json!([
            "call_started",
            "call_ended",
            "call_analyzed",
            "transcript_updated"
        ]),
    );
    let mut agent_override = Map::new();
    if !agent.is_empty() {
        agent_override.insert("agent".into(), Value::Object(agent));
    }
    if let Some(first) = call.agent.first_message.as_deref() {
        agent_override.insert("retell_llm".into(), json!({ "begin_message": first }));
    }
    if !agent_override.is_empty() {
        body.insert("agent_override".into(), Value::Object(agent_override));
    }
    Ok(Value::Object(body))
}

/// Places the call; the answer is the call object with `call_status: registered`.
pub(super) async fn start_call(
    api: &ApiClient,
    call: &StartCall,
) -> Result<StartedCall, ProviderError> {
    let body = create_body(call)?;
    let answer = api
        .send(
            Method::POST,
            "/v2/create-phone-call",
            Some(&body),
            Idempotency::PlacesCall,
        )
        .await?;
    let json = json_response(&answer.body)?;
    let provider_call_id = str_at(&json, &["call_id"])
        .ok_or_else(|| ProviderError::Malformed("the created call has no `call_id`".into()))?;
    let status = str_at(&json, &["call_status"])
        .as_deref()
        .and_then(status)
        .unwrap_or(CallStatus::Dialing);
    Ok(StartedCall {
        provider_call_id,
        status,
    })
}

/// Reads a call.
pub(super) async fn get_call(
    api: &ApiClient,
    provider_call_id: &str,
) -> Result<CallUpdate, ProviderError> {
    let path = format!("/v2/get-call/{}", path_segment(provider_call_id)?);
    let answer = api
        .send(Method::GET, &path, None, Idempotency::Safe)
        .await?;
    let json = json_response(&answer.body)?;
    let base = base_update(&json, "get-call")
        .ok_or_else(|| ProviderError::Malformed("the call has no `call_id`".into()))?;
    let dedupe_key = format!(
        "get-call:{}",
        fingerprint(&[&String::from_utf8_lossy(&answer.body)])
    );
    Ok(full_update(base, &json, dedupe_key, false))
}

/// Ends a live call (idempotent, so retried like a read).
pub(super) async fn stop_call(
    api: &ApiClient,
    provider_call_id: &str,
) -> Result<(), ProviderError> {
    let path = format!("/v2/stop-call/{}", path_segment(provider_call_id)?);
    api.send(Method::POST, &path, None, Idempotency::Safe)
        .await?;
    Ok(())
}

/// Deletes the call's data: `DELETE /v2/delete-call/{id}` (2xx; 404 → nothing left to delete).
pub(super) async fn delete_call(
    api: &ApiClient,
    provider_call_id: &str,
) -> Result<CallDeletion, ProviderError> {
    let path = format!("/v2/delete-call/{}", path_segment(provider_call_id)?);
    api.delete(&path).await
}
