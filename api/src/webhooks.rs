//! The signed lead webhook, `POST /webhooks/leads` (and `/webhooks/leads/{source}`), in the
//! Standard Webhooks scheme:
//!
//! - headers `webhook-id` (the delivery id), `webhook-timestamp` (Unix seconds) and
//!   `webhook-signature` (`v1,<base64>`, several separated by spaces while a secret rotates);
//! - the signature is HMAC-SHA256 over `{id}.{timestamp}.{raw body}` with the source's secret
//!   (`whsec_<base64>`), compared in constant time;
//! - a timestamp outside the replay window is refused; the delivery id is the idempotency key,
//!   so a repeated delivery returns the first result and creates nothing;
//! - the raw body is stored in the inbox, with the job that imports it, before the `202`.

use crate::{
    error::code,
    graphql::ApiContext,
    http::{HttpState, error_response},
};
use axum::{
    Json,
    body::Bytes,
    extract::{ConnectInfo, Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use crm_plugins::intake::{ImportOptions, import_lead_job};
use crm_store::inbox::{self, NewInboxEntry, Received};
use hmac::{Hmac, Mac as _};
use secrecy::ExposeSecret as _;
use serde_json::json;
use sha2::Sha256;
use std::net::SocketAddr;

/// Longest delivery id accepted.
const MAX_ID_LEN: usize = 256;

/// The keys of one source's secrets (`whsec_<base64>`, separated by spaces), or what is wrong.
pub fn parse_secrets(raw: &str) -> Result<Vec<Vec<u8>>, String> {
    let keys: Vec<Vec<u8>> = raw
        .split_whitespace()
        .map(|secret| {
            let encoded = secret
                .strip_prefix("whsec_")
                .ok_or("a secret must look like whsec_<base64>")?;
            let key = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| "the part after whsec_ is not base64")?;
            if key.len() < 16 {
                return Err("a secret must hold at least 16 bytes (24 to 64 recommended)");
            }
            Ok(key)
        })
        .collect::<Result<_, _>>()
        .map_err(str::to_owned)?;
    if keys.is_empty() {
        return Err("no secret given".into());
    }
    Ok(keys)
}

/// The HMAC of `{id}.{timestamp}.{body}` with `key`, not yet finalized.
fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// The signature of a delivery with `key`, base64 (what a sender puts after `v1,`).
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    mac(key, id, timestamp, body).map_or_else(String::new, |mac| {
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    })
}

/// Whether any `v1` signature in `header` is valid for any of `keys` (constant-time per
/// comparison).
pub fn verify(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let signatures: Vec<Vec<u8>> = header
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .collect();
    keys.iter().any(|key| {
        signatures.iter().any(|signature| {
            mac(key, id, timestamp, body).is_some_and(|mac| mac.verify_slice(signature).is_ok())
        })
    })
}

/// Why a delivery is refused.
fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    tracing::warn!(target: "crm::security", reason = message, "Webhook delivery refused.");
    error_response(status, code, message.to_owned())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// `POST /webhooks/leads`: the source is the one whose secret signed the delivery.
pub(crate) async fn leads(
    state: State<HttpState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    crate::http::RawBody(body): crate::http::RawBody,
) -> Response {
    receive(state, peer, None, headers, body).await
}

/// `POST /webhooks/leads/{source}`: only that source's secrets are tried.
pub(crate) async fn leads_from(
    state: State<HttpState>,
    peer: ConnectInfo<SocketAddr>,
    Path(source): Path<String>,
    headers: HeaderMap,
    crate::http::RawBody(body): crate::http::RawBody,
) -> Response {
    receive(state, peer, Some(source), headers, body).await
}

async fn receive(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    source: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ip = crate::http::client_ip(peer, &headers, state.trust_forwarded_for);
    if let Err(refusal) = state.limits.check_ip(ip) {
        return crate::http::rate_limited(refusal, "client address", &ip.to_string());
    }
    let api: &ApiContext = &state.context;
    let (Some(id), Some(timestamp), Some(signature)) = (
        header(&headers, "webhook-id"),
        header(&headers, "webhook-timestamp"),
        header(&headers, "webhook-signature"),
    ) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            code::UNAUTHENTICATED,
            "webhook-id, webhook-timestamp and webhook-signature headers are required",
        );
    };
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return refuse(
            StatusCode::BAD_REQUEST,
            code::BAD_REQUEST,
            "webhook-id must be 1 to 256 characters",
        );
    }
    let Ok(timestamp) = timestamp.parse::<i64>() else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            code::UNAUTHENTICATED,
            "webhook-timestamp must be Unix seconds",
        );
    };
    let now = api.clock.now();
    let window = i64::try_from(state.intake.replay_window_secs).unwrap_or(i64::MAX);
    let sent = DateTime::<Utc>::from_timestamp(timestamp, 0);
    if sent.is_none_or(|sent| (now - sent).num_seconds().abs() > window) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            code::UNAUTHENTICATED,
            "webhook-timestamp is outside the replay window",
        );
    }
    let matched = state
        .intake
        .webhook_secrets
        .iter()
        .filter(|(name, _)| source.as_ref().is_none_or(|s| s.eq_ignore_ascii_case(name)))
        .find(|(_, secrets)| {
            parse_secrets(secrets.expose_secret())
                .is_ok_and(|keys| verify(&keys, id, timestamp, &body, signature))
        })
        .map(|(name, _)| name.clone());
    let Some(source) = matched else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            code::UNAUTHENTICATED,
            "no valid signature for this delivery",
        );
    };
    if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
        return error_response(
            StatusCode::BAD_REQUEST,
            code::BAD_REQUEST,
            "the body must be a JSON object with the lead's fields".to_owned(),
        );
    }
    let Ok(payload) = String::from_utf8(body.to_vec()) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            code::BAD_REQUEST,
            "the body must be UTF-8 JSON".to_owned(),
        );
    };
    let options = ImportOptions {
        on_duplicate: state.intake.on_duplicate,
        source: Some(source.clone()),
        ..ImportOptions::default()
    };
    let new = NewInboxEntry {
        channel: "webhook".into(),
        source: source.clone(),
        idempotency_key: Some(format!("webhook:{source}:{id}")),
        content_type: header(&headers, header::CONTENT_TYPE.as_str()).map(str::to_owned),
        payload,
    };
    let job = |inbox_id: &str| import_lead_job(inbox_id, options, now);
    match inbox::receive(&api.db, new, job, now).await {
        Ok(Received::New(entry)) => {
            tracing::info!(inbox_id = %entry.id, %source, "Lead delivery received.");
            (
                StatusCode::ACCEPTED,
                Json(json!({ "id": entry.id, "status": entry.status.as_str() })),
            )
                .into_response()
        }
        Ok(Received::Repeat(entry)) => {
            let result = entry
                .result
                .as_deref()
                .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok());
            (
                StatusCode::OK,
                Json(json!({ "id": entry.id, "status": entry.status.as_str(), "result": result, "repeated": true })),
            )
                .into_response()
        }
        Err(error) => {
            tracing::error!(%error, "Cannot store a lead delivery.");
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                code::SERVICE_UNAVAILABLE,
                "the delivery could not be stored; retry later".to_owned(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_secrets;

    #[test]
    fn secrets_are_parsed_or_refused_with_the_reason() {
        let key = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let two = parse_secrets(&format!("  {key}   {key} ")).unwrap();
        assert_eq!(two.len(), 2, "several secrets, for rotation");
        assert_eq!(two[0].len(), 24);
        for (raw, reason) in [
            ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_"),
            ("whsec_%%%%", "not base64"),
            ("whsec_c2hvcnQ=", "at least 16 bytes"),
            ("   ", "no secret"),
        ] {
            let error = parse_secrets(raw).unwrap_err();
            assert!(error.contains(reason), "{raw}: {error}");
        }
    }
}
