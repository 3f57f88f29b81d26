//! The Vapi, Retell and Bland adapters against local fakes of their HTTP APIs, and their
//! webhooks signed exactly as each provider signs them (signatures computed here,
//! independently of the adapters). One test binary for all three, to save link time.

mod bland;
mod fake;
mod retell;
mod vapi;

use chrono::{DateTime, Utc};
use crm_domain::{AgentSpec, CallId, CustomerId, StartCall, WebhookRequest};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use std::collections::BTreeMap;

/// reqwest is built with `rustls-no-provider`: a provider must exist before a client is built.
pub(crate) fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A call to place, with an agent whose provider fields the caller fills in.
pub(crate) fn sample_call(agent: AgentSpec) -> StartCall {
    StartCall {
        call_id: CallId::new(),
        customer_id: CustomerId::new(),
        to: "+4915112345678".into(),
        attempt: 1,
        customer_name: Some("Amela Hodžić".into()),
        agent,
        variables: BTreeMap::from([
            ("first_name".to_owned(), "Amela".to_owned()),
            ("company".to_owned(), "Acme GmbH".to_owned()),
        ]),
        webhook_url: Some("https://crm.example.com/webhooks/voice".into()),
    }
}

/// An agent with a fixed variable the call's variables partly override.
pub(crate) fn sample_agent() -> AgentSpec {
    AgentSpec {
        name: "de".into(),
        provider_agent_id: Some("agent-123".into()),
        from_number: Some("+4930123456".into()),
        language: "de".into(),
        first_message: Some("Guten Tag, hier ist Lena von Acme.".into()),
        task: None,
        variables: BTreeMap::from([
            ("company".to_owned(), "Placeholder".to_owned()),
            ("agent_name".to_owned(), "Lena".to_owned()),
        ]),
    }
}

/// The script variables every adapter must send: the agent's, then the call's.
pub(crate) fn expected_variables() -> serde_json::Value {
    serde_json::json!({"agent_name": "Lena", "company": "Acme GmbH", "first_name": "Amela"})
}

/// Lower-case hex HMAC-SHA256 of the concatenated parts.
pub(crate) fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(error) => panic!("hmac key: {error}"),
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A webhook delivery.
pub(crate) fn delivery<'a>(
    headers: &'a [(String, String)],
    body: &'a [u8],
    received_at: DateTime<Utc>,
) -> WebhookRequest<'a> {
    WebhookRequest {
        headers,
        body,
        received_at,
    }
}

/// Header names and values of a delivery.
pub(crate) type Headers = Vec<(String, String)>;

/// Header pairs from string slices.
pub(crate) fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

/// A time from RFC 3339.
pub(crate) fn time(rfc3339: &str) -> DateTime<Utc> {
    match DateTime::parse_from_rfc3339(rfc3339) {
        Ok(time) => time.with_timezone(&Utc),
        Err(error) => panic!("bad test time {rfc3339}: {error}"),
    }
}

/// An address nothing listens on (bound, then released).
pub(crate) async fn closed_port_url() -> String {
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(error) => panic!("cannot bind: {error}"),
    };
    let url = match listener.local_addr() {
        Ok(addr) => format!("http://{addr}"),
        Err(error) => panic!("no address: {error}"),
    };
    drop(listener);
    url
}
