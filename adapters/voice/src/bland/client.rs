//! Bland's HTTP API (PROVIDERS.md §3.2–3.4): `POST /v1/calls`, `GET /v1/calls/{id}`,
//! `POST /v1/calls/{id}/stop`.

use super::webhook::{base_update, call_update};
use crate::http::{
    Answer, ApiClient, Idempotency, error_message, fingerprint, json_response, missing,
    path_segment, str_at,
};
use crm_domain::{CallStatus, CallUpdate, ProviderError, StartCall, StartedCall};
use reqwest::Method;
use serde_json::{Map, Value, json};

/// The `language` values Bland documents (PROVIDERS.md §3.2).
const LANGUAGES: &[&str] = &[
    "babel", "fluent", "auto", "en", "es", "fr", "de", "it", "pt", "nl", "pl", "ru", "sv", "da",
    "fi", "no", "tr", "uk", "ja", "ko", "zh", "hi", "vi", "id", "ms", "el", "hu", "bg", "cs", "ro",
    "sk",
];

/// Our language → Bland's `language`: documented codes (and `babel-xx` variants) as they are,
/// a locale by its language (`de-AT` → `de`); any other language (`bs`, `sr`, `hr`) → `babel`, Bland's multilingual mode (the task and
/// first sentence, written in that language, steer it). Unconfirmed: whether Bland has a
/// dedicated code for them. Empty → not sent (Bland's default `babel-en`).
pub(super) fn language(ours: &str) -> Option<String> {
    let ours = ours.trim().to_ascii_lowercase();
    if ours.is_empty() {
        return None;
    }
    if LANGUAGES.contains(&ours.as_str()) || ours.starts_with("babel-") {
        return Some(ours);
    }
    // A locale (`de-AT`) by its language.
    let primary = ours.split(['-', '_']).next().unwrap_or_default();
    if LANGUAGES.contains(&primary) {
        return Some(primary.to_owned());
    }
    Some("babel".into())
}

/// The `POST /v1/calls` body.
pub(super) fn create_body(call: &StartCall) -> Result<Value, ProviderError> {
    if call.agent.task.is_none() && call.agent.provider_agent_id.is_none() {
        return Err(missing(&format!(
            "agent `{}` has neither a Bland task nor a pathway id",
            call.agent.name
        )));
    }
    let mut variables = call.agent.variables.clone();
    variables.extend(call.variables.clone());

    let mut body = Map::new();
    body.insert("phone_number".into(), json!(call.to));
    if let Some(task) = call.agent.task.as_deref() {
        body.insert("task".into(), json!(task));
    }
    if let Some(pathway) = call.agent.provider_agent_id.as_deref() {
        body.insert("pathway_id".into(), json!(pathway));
    }
    if let Some(first) = call.agent.first_message.as_deref() {
        body.insert("first_sentence".into(), json!(first));
    }
    if let Some(language) = language(&call.agent.language) {
        body.insert("language".into(), json!(language));
    }
    if let Some(from) = call.agent.from_number.as_deref() {
        body.insert("from".into(), json!(from));
    }
    body.insert("request_data".into(), json!(variables));
    body.insert(
        "metadata".into(),
        json!({
            "crm_call_id": call.call_id.to_string(),
            "crm_customer_id": call.customer_id.to_string(),
        }),
    );
    if let Some(url) = call.webhook_url.as_deref() {
        body.insert("webhook".into(), json!(url));
        // The live transcript: `call` log lines ("Agent speech: …") to the same URL.
        body.insert("webhook_events".into(), json!(["call"]));
    }
    Ok(Value::Object(body))
}

/// Bland answers some refusals with a 2xx and `{"status": "error", "message": …}`.
fn refused(answer: &Answer, json: &Value) -> Option<ProviderError> {
    (str_at(json, &["status"]).as_deref() == Some("error")).then(|| ProviderError::Rejected {
        status: answer.status,
        message: error_message(&answer.body).unwrap_or_else(|| "status: error".into()),
    })
}

/// Places the call; the answer is `{status: "success", call_id}`.
pub(super) async fn start_call(
    api: &ApiClient,
    call: &StartCall,
) -> Result<StartedCall, ProviderError> {
    let body = create_body(call)?;
    let answer = api
        .send(
            Method::POST,
            "/v1/calls",
            Some(&body),
            Idempotency::PlacesCall,
        )
        .await?;
    let json = json_response(&answer.body)?;
    if let Some(error) = refused(&answer, &json) {
        return Err(error);
    }
    let provider_call_id = str_at(&json, &["call_id"])
        .ok_or_else(|| ProviderError::Malformed("the answer has no `call_id`".into()))?;
    Ok(StartedCall {
        provider_call_id,
        status: CallStatus::Dialing,
    })
}

/// Reads a call.
pub(super) async fn get_call(
    api: &ApiClient,
    provider_call_id: &str,
) -> Result<CallUpdate, ProviderError> {
    let path = format!("/v1/calls/{}", path_segment(provider_call_id)?);
    let answer = api
        .send(Method::GET, &path, None, Idempotency::Safe)
        .await?;
    let json = json_response(&answer.body)?;
    let Some(base) = base_update(&json, "get-call") else {
        return Err(refused(&answer, &json)
            .unwrap_or_else(|| ProviderError::Malformed("the call has no `call_id`".into())));
    };
    let dedupe_key = format!(
        "get-call:{}",
        fingerprint(&[&String::from_utf8_lossy(&answer.body)])
    );
    Ok(call_update(base, &json, dedupe_key, false))
}

/// Ends a live call or cancels a scheduled one (idempotent, so retried like a read).
pub(super) async fn stop_call(
    api: &ApiClient,
    provider_call_id: &str,
) -> Result<(), ProviderError> {
    let path = format!("/v1/calls/{}/stop", path_segment(provider_call_id)?);
    let answer = api
        .send(Method::POST, &path, None, Idempotency::Safe)
        .await?;
    // An empty or non-JSON 2xx counts as done; only an explicit `status: error` refuses.
    if let Ok(json) = serde_json::from_slice::<Value>(&answer.body)
        && let Some(error) = refused(&answer, &json)
    {
        return Err(error);
    }
    Ok(())
}
