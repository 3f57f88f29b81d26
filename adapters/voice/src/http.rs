//! Plumbing the Vapi, Retell and Bland adapters share: the HTTP client and how its outcomes map
//! to [`ProviderError`], plus the small helpers their webhooks need (HMAC, hex, time, text caps).
//!
//! Error policy (the one place it is decided):
//!
//! | What happened | Create call (not idempotent) | Get / stop / delete (safe to repeat) |
//! |---|---|---|
//! | 2xx with a readable body | `Ok` | `Ok` |
//! | 2xx with a body that does not parse | `Malformed` | `Malformed` |
//! | 408, 429 | `Unavailable` | `Unavailable`, retried |
//! | other 4xx | `Rejected { status, message }` | `Rejected { status, message }` |
//! | 5xx | `Unknown` (the call may exist) | `Unavailable`, retried |
//! | timeout, or the connection broke after sending | `Unknown` | `Unavailable`, retried |
//! | connection refused / DNS / TLS (nothing sent) | `Unavailable` | `Unavailable`, retried |
//!
//! A delete additionally reads 404 as [`CallDeletion::NotFound`] (nothing left to delete), not
//! as a refusal (see `ApiClient::delete`).
//!
//! Safe operations are retried inside the client up to [`SAFE_RETRIES`] times with a short
//! backoff; a create is never retried here, because a retry could place a second call. Redirects
//! are not followed (a provider API does not redirect its JSON endpoints).
//!
//! reqwest is built with `rustls-no-provider`: the binary must install a rustls crypto provider
//! (`rustls::crypto::ring::default_provider().install_default()`) before a provider is built,
//! or building the client panics inside reqwest.

use crate::ConfigError;
use chrono::{DateTime, NaiveDateTime, TimeZone as _, Utc};
use crm_domain::{CallDeletion, CallId, ProviderError, ProviderKind, WebhookError};
use hmac::{Hmac, Mac as _};
use reqwest::{
    Method, StatusCode,
    header::{HeaderName, HeaderValue},
};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll, Waker},
    time::Duration,
};

/// Default total timeout of one provider request, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
/// Default replay window of signed webhooks, in seconds.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;
/// How many times a safe operation (get, stop, delete) is retried after an `Unavailable` outcome.
pub const SAFE_RETRIES: u32 = 2;
/// The longest transcript segment kept, in characters.
pub const MAX_SEGMENT_CHARS: usize = 10_000;
/// The longest full transcript kept, in characters.
pub const MAX_TRANSCRIPT_CHARS: usize = 200_000;

/// The first backoff of a retried safe operation; it doubles per attempt.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// The most bytes read from one provider response (a call with a long transcript is a few
/// hundred KB).
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// Connect timeout; the total timeout is configured per provider.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest provider error message kept.
const MAX_ERROR_MESSAGE_CHARS: usize = 500;

/// Whether a request may be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idempotency {
    /// Places a call: never retried; after a timeout or 5xx the outcome is `Unknown`.
    PlacesCall,
    /// Reads, stops or deletes a call: retried on `Unavailable`.
    Safe,
}

/// A 2xx answer.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// The HTTP status.
    pub(crate) status: u16,
    /// The body (at most [`MAX_RESPONSE_BYTES`]).
    pub(crate) body: Vec<u8>,
}

/// A provider's HTTP API: base URL, auth header and a client with timeouts.
#[derive(Debug, Clone)]
pub(crate) struct ApiClient {
    kind: ProviderKind,
    http: reqwest::Client,
    /// Without a trailing slash; paths start with one.
    base_url: String,
    auth_name: HeaderName,
    auth_value: HeaderValue,
}

impl ApiClient {
    /// Builds the client; `auth_value` is sent in `auth_name` on every request (marked
    /// sensitive, so it is never logged).
    pub(crate) fn new(
        kind: ProviderKind,
        base_url: &str,
        timeout_secs: u64,
        auth_name: &'static str,
        auth_value: &str,
    ) -> Result<Self, ConfigError> {
        let base_url = parse_base_url(kind, base_url)?;
        let auth_name = HeaderName::from_static(auth_name);
        let mut auth_value = HeaderValue::from_str(auth_value).map_err(|_| {
            ConfigError::new(kind, "api_key contains characters not allowed in a header")
        })?;
        auth_value.set_sensitive(true);
        let timeout = Duration::from_secs(if timeout_secs == 0 {
            DEFAULT_TIMEOUT_SECS
        } else {
            timeout_secs
        });
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("crm-voice/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| {
                ConfigError::new(kind, format!("cannot build the HTTP client: {error}"))
            })?;
        Ok(Self {
            kind,
            http,
            base_url,
            auth_name,
            auth_value,
        })
    }

    /// Sends a request (with a JSON body when given) and returns the body of a 2xx answer.
    /// Safe requests are retried on `Unavailable` outcomes.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency: Idempotency,
    ) -> Result<Answer, ProviderError> {
        let url = format!("{}{path}", self.base_url);
        self.request(method, &url, true, body, idempotency).await
    }

    /// Deletes a call's data with `DELETE {path}`: a 2xx is [`CallDeletion::Deleted`] (the body
    /// is not read), a 404 [`CallDeletion::NotFound`]. Deleting is idempotent, so it is a safe
    /// request: 408, 429, 5xx, timeouts and broken connections are retried, then `Unavailable`;
    /// any other 4xx is `Rejected`.
    pub(crate) async fn delete(&self, path: &str) -> Result<CallDeletion, ProviderError> {
        match self
            .send(Method::DELETE, path, None, Idempotency::Safe)
            .await
        {
            Ok(_) => Ok(CallDeletion::Deleted),
            Err(ProviderError::Rejected { status: 404, .. }) => Ok(CallDeletion::NotFound),
            Err(error) => Err(error),
        }
    }

    /// Posts `body` to `url`, an address the provider handed out for one call (Vapi's
    /// `monitor.controlUrl`), without our credential: the address itself is the capability,
    /// and it need not be on the API's host. Safe to repeat (it asks for an end that happens
    /// once), so retried on `Unavailable`.
    pub(crate) async fn post_to(&self, url: &str, body: &Value) -> Result<Answer, ProviderError> {
        // The address is a secret (whoever has it can speak into the call): it appears in no
        // message or log.
        let parsed = reqwest::Url::parse(url).map_err(|error| {
            ProviderError::Malformed(format!("the call's control address is no URL: {error}"))
        })?;
        if !matches!(parsed.scheme(), "https" | "http") || parsed.host_str().is_none() {
            return Err(ProviderError::Malformed(
                "the call's control address is not an http(s) URL".into(),
            ));
        }
        self.request(Method::POST, url, false, Some(body), Idempotency::Safe)
            .await
    }

    /// One request to `url` (`authorized`: with our key), retried on `Unavailable` when it
    /// is safe to repeat.
    async fn request(
        &self,
        method: Method,
        url: &str,
        authorized: bool,
        body: Option<&Value>,
        idempotency: Idempotency,
    ) -> Result<Answer, ProviderError> {
        let attempts = match idempotency {
            Idempotency::PlacesCall => 1,
            Idempotency::Safe => 1 + SAFE_RETRIES,
        };
        let mut backoff = RETRY_BACKOFF;
        let mut attempt = 1;
        loop {
            match self
                .request_once(method.clone(), url, authorized, body, idempotency)
                .await
            {
                Err(ProviderError::Unavailable(message)) if attempt < attempts => {
                    tracing::warn!(
                        provider = %self.kind,
                        %method,
                        path = self.log_path(url),
                        attempt,
                        error = %message,
                        "Retrying a safe provider request"
                    );
                    Delay::new(backoff).await;
                    backoff = backoff.saturating_mul(2);
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// What a log line says of `url`: its path on the API, never an address handed out as a
    /// capability.
    fn log_path<'a>(&self, url: &'a str) -> &'a str {
        url.strip_prefix(self.base_url.as_str())
            .unwrap_or("(a call's own address)")
    }

    async fn request_once(
        &self,
        method: Method,
        url: &str,
        authorized: bool,
        body: Option<&Value>,
        idempotency: Idempotency,
    ) -> Result<Answer, ProviderError> {
        let path = self.log_path(url);
        let mut request = self
            .http
            .request(method.clone(), url)
            .header(reqwest::header::ACCEPT, "application/json");
        if authorized {
            request = request.header(self.auth_name.clone(), self.auth_value.clone());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        // A reqwest error names its URL: not one handed out as a capability.
        let transport = |error: reqwest::Error| {
            let error = if authorized {
                error
            } else {
                error.without_url()
            };
            transport_error(&error, idempotency)
        };
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        let bytes = read_capped(&mut response).await.map_err(transport)?;
        tracing::debug!(
            provider = %self.kind,
            %method,
            path,
            status = status.as_u16(),
            "Provider answered"
        );
        if status.is_success() {
            return Ok(Answer {
                status: status.as_u16(),
                body: bytes,
            });
        }
        Err(status_error(status, &bytes, idempotency))
    }
}

/// Reads a response body, refusing more than [`MAX_RESPONSE_BYTES`].
async fn read_capped(response: &mut reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
            // Truncated bodies fail to parse and become `Malformed`.
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Maps a failed exchange (nothing or no complete answer received).
fn transport_error(error: &reqwest::Error, idempotency: Idempotency) -> ProviderError {
    // `is_connect` covers refused connections, DNS, TLS and connect timeouts: the request
    // never left, so even a create may be retried.
    if error.is_connect() || error.is_builder() {
        return ProviderError::Unavailable(format!("could not connect: {error}"));
    }
    let what = if error.is_timeout() {
        "timed out"
    } else {
        "the connection failed"
    };
    match idempotency {
        Idempotency::PlacesCall => ProviderError::Unknown(format!(
            "{what} after the request was sent; the call may have been placed: {error}"
        )),
        Idempotency::Safe => ProviderError::Unavailable(format!("{what}: {error}")),
    }
}

/// Maps a non-2xx status.
fn status_error(status: StatusCode, body: &[u8], idempotency: Idempotency) -> ProviderError {
    let code = status.as_u16();
    let message = error_message(body)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("no message").to_owned());
    match code {
        408 | 429 => ProviderError::Unavailable(format!("HTTP {code}: {message}")),
        400..=499 => ProviderError::Rejected {
            status: code,
            message,
        },
        500..=599 => match idempotency {
            Idempotency::PlacesCall => ProviderError::Unknown(format!(
                "HTTP {code} after the request was sent; the call may have been placed: {message}"
            )),
            Idempotency::Safe => ProviderError::Unavailable(format!("HTTP {code}: {message}")),
        },
        _ => ProviderError::Malformed(format!("unexpected HTTP {code}: {message}")),
    }
}

/// The provider's message from an error body: `message` (string or list), `error`, `errors[]`
/// (strings or objects with `message`/`error`), `detail`; otherwise the text itself.
pub(crate) fn error_message(body: &[u8]) -> Option<String> {
    let message = match serde_json::from_slice::<Value>(body) {
        Ok(json) => message_of(&json),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            (!text.is_empty()).then(|| text.to_owned())
        }
    }?;
    Some(truncate_chars(message, MAX_ERROR_MESSAGE_CHARS))
}

fn message_of(json: &Value) -> Option<String> {
    fn text(value: &Value) -> Option<String> {
        match value {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Value::Array(items) => {
                let parts: Vec<String> = items.iter().filter_map(text).collect();
                (!parts.is_empty()).then(|| parts.join("; "))
            }
            Value::Object(_) => ["message", "error", "detail"]
                .iter()
                .find_map(|key| value.get(key).and_then(text)),
            _ => None,
        }
    }
    ["message", "errors", "error", "detail"]
        .iter()
        .find_map(|key| json.get(key).and_then(text))
}

/// A provider's `base_url`, checked and without a trailing slash.
pub(crate) fn parse_base_url(kind: ProviderKind, raw: &str) -> Result<String, ConfigError> {
    let url = reqwest::Url::parse(raw.trim())
        .map_err(|error| ConfigError::new(kind, format!("base_url `{raw}`: {error}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::new(
            kind,
            format!("base_url `{raw}` must be an http(s) URL with a host"),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(
            kind,
            format!("base_url `{raw}` must not have a query or fragment"),
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// A provider call id as one URL path segment (percent-encoded, so `/`, `?` and `#` stay
/// inside it). Refused before anything is sent: an empty id (it would address the list
/// endpoint instead) and `.` or `..`, which URL parsing resolves as dot segments even when
/// percent-encoded, so they would address a different path.
pub(crate) fn path_segment(id: &str) -> Result<String, ProviderError> {
    let id = id.trim();
    if id.is_empty() {
        return Err(ProviderError::Rejected {
            status: 400,
            message: "the provider call id is empty (request not sent)".into(),
        });
    }
    if id == "." || id == ".." {
        return Err(ProviderError::Rejected {
            status: 400,
            message: format!(
                "the provider call id `{id}` is not a path segment (request not sent)"
            ),
        });
    }
    let mut out = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(out)
}

/// A required request field that our configuration lacks: refused before anything is sent.
pub(crate) fn missing(what: &str) -> ProviderError {
    ProviderError::Rejected {
        status: 400,
        message: format!("{what} (request not sent)"),
    }
}

/// Parses a 2xx body as JSON.
pub(crate) fn json_response(body: &[u8]) -> Result<Value, ProviderError> {
    serde_json::from_slice(body)
        .map_err(|error| ProviderError::Malformed(format!("the body is not JSON: {error}")))
}

/// Parses a webhook body as a JSON object.
pub(crate) fn json_webhook(body: &[u8]) -> Result<Value, WebhookError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(json @ Value::Object(_)) => Ok(json),
        Ok(_) => Err(WebhookError::Invalid(
            "the body is not a JSON object".into(),
        )),
        Err(error) => Err(WebhookError::Invalid(format!(
            "the body is not JSON: {error}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// JSON access: provider payloads are read leniently (absent or oddly typed fields become
// `None`), never by indexing, so no input can panic.

/// The value at a path of object keys.
pub(crate) fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter()
        .try_fold(value, |value, key| value.get(key))
        .filter(|value| !value.is_null())
}

/// A non-empty string at a path (numbers are rendered as text).
pub(crate) fn str_at(value: &Value, path: &[&str]) -> Option<String> {
    match at(value, path)? {
        Value::String(s) => {
            let s = s.trim();
            (!s.is_empty()).then(|| s.to_owned())
        }
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A number at a path; numeric strings (`"12.5"`) count.
pub(crate) fn f64_at(value: &Value, path: &[&str]) -> Option<f64> {
    match at(value, path)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|n| n.is_finite())
}

/// A boolean at a path (`true`/`"true"`).
pub(crate) fn bool_at(value: &Value, path: &[&str]) -> Option<bool> {
    match at(value, path)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Our call id, when the provider echoes it back (`metadata.crm_call_id`).
pub(crate) fn call_id_at(value: &Value, path: &[&str]) -> Option<CallId> {
    str_at(value, path)?.parse().ok()
}

/// A time: RFC 3339, `YYYY-MM-DD HH:MM:SS[.f]` (UTC), or a number of epoch milliseconds.
pub(crate) fn time_at(value: &Value, path: &[&str]) -> Option<DateTime<Utc>> {
    match at(value, path)? {
        Value::Number(n) => from_millis(n.as_f64()?),
        Value::String(s) => parse_time(s),
        _ => None,
    }
}

/// Parses a textual time.
pub(crate) fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(raw) {
        return Some(time.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f %z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(time) = DateTime::parse_from_str(raw, format) {
            return Some(time.with_timezone(&Utc));
        }
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(time) = NaiveDateTime::parse_from_str(raw, format) {
            return Some(Utc.from_utc_datetime(&time));
        }
    }
    None
}

/// Epoch milliseconds as a time.
pub(crate) fn from_millis(ms: f64) -> Option<DateTime<Utc>> {
    if !ms.is_finite() || ms.abs() > 1e15 {
        return None;
    }
    // Bounded above, so the conversion cannot overflow.
    DateTime::from_timestamp_millis(ms.round() as i64)
}

/// Seconds from `start` to `end`, when both are known and in order.
pub(crate) fn secs_between(
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
) -> Option<f64> {
    let millis = (end? - start?).num_milliseconds();
    (millis >= 0).then(|| millis as f64 / 1000.0)
}

/// Seconds (relative audio time) as whole milliseconds.
pub(crate) fn secs_to_ms(secs: f64) -> Option<i64> {
    (0.0..1e9)
        .contains(&secs)
        .then(|| (secs * 1000.0).round() as i64)
}

/// Cuts `text` to at most `max` characters, on a character boundary.
pub(crate) fn truncate_chars(mut text: String, max: usize) -> String {
    if let Some((index, _)) = text.char_indices().nth(max) {
        text.truncate(index);
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Signatures.

type HmacSha256 = Hmac<Sha256>;

/// The HMAC-SHA256 of the concatenated `parts` under `key`.
fn hmac_of(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this never fails; the fallback keeps it total.
    let mut mac = HmacSha256::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default()));
    for part in parts {
        mac.update(part);
    }
    mac
}

/// Checks a signature (raw bytes) over the concatenated `parts`, in constant time.
pub(crate) fn verify_hmac(key: &[u8], parts: &[&[u8]], signature: &[u8]) -> bool {
    hmac_of(key, parts).verify_slice(signature).is_ok()
}

/// Compares two secrets in constant time (for bearer tokens): both are MACed under a fixed
/// key and the tags compared with `verify_slice`, so neither length nor content leaks.
pub(crate) fn secrets_equal(expected: &[u8], received: &[u8]) -> bool {
    const KEY: &[u8] = b"crm-voice bearer comparison";
    let expected_tag = hmac_of(KEY, &[expected]).finalize().into_bytes();
    hmac_of(KEY, &[received])
        .verify_slice(&expected_tag)
        .is_ok()
}

pub(crate) use crm_domain::hex::{decode as hex_decode, encode as hex_encode};

/// A short stable fingerprint (first 16 bytes of SHA-256, hex) of the parts, separated so
/// that `("ab", "c")` and `("a", "bc")` differ: used in dedupe keys.
pub(crate) fn fingerprint(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    hex_encode(digest.get(..16).unwrap_or(&digest))
}

/// A webhook timestamp (unix seconds or milliseconds, integer or fractional) as a time.
pub(crate) fn parse_unix_timestamp(raw: &str) -> Option<DateTime<Utc>> {
    let number: f64 = raw.trim().parse().ok()?;
    // Anything above 10^11 is in milliseconds (10^11 s is the year 5138).
    let millis = if number.abs() >= 1e11 {
        number
    } else {
        number * 1000.0
    };
    from_millis(millis)
}

/// Refuses a signed timestamp further than `tolerance_secs` from `now`, either way.
pub(crate) fn check_tolerance(
    signed_at: DateTime<Utc>,
    now: DateTime<Utc>,
    tolerance_secs: u64,
) -> Result<(), WebhookError> {
    let skew = (now - signed_at).num_milliseconds().unsigned_abs();
    if skew > tolerance_secs.saturating_mul(1000) {
        return Err(WebhookError::Unauthenticated(format!(
            "the signed timestamp is {} s away from now (tolerance {tolerance_secs} s)",
            skew / 1000
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Backoff without a runtime dependency: this crate does not depend on tokio, so the retry
// backoff sleeps on a short-lived helper thread and wakes the task. It only runs after a
// failed safe request (at most SAFE_RETRIES per operation).

#[derive(Debug, Default)]
struct DelayState {
    done: bool,
    waker: Option<Waker>,
}

/// A future that completes after a duration.
#[derive(Debug)]
struct Delay {
    duration: Duration,
    started: bool,
    state: Arc<Mutex<DelayState>>,
}

impl Delay {
    fn new(duration: Duration) -> Self {
        Self {
            duration,
            started: false,
            state: Arc::default(),
        }
    }
}

impl Future for Delay {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        {
            let mut state = this.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.done {
                return Poll::Ready(());
            }
            state.waker = Some(cx.waker().clone());
        }
        if !this.started {
            this.started = true;
            let state = Arc::clone(&this.state);
            let duration = this.duration;
            let spawned = std::thread::Builder::new()
                .name("crm-voice-backoff".into())
                .spawn(move || {
                    std::thread::sleep(duration);
                    let waker = {
                        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                        state.done = true;
                        state.waker.take()
                    };
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                });
            if spawned.is_err() {
                // No thread: retry at once rather than never.
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_github_test_vector() {
        let signature =
            hex_decode("757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17").unwrap();
        assert!(verify_hmac(
            b"It's a Secret to Everybody",
            &[b"Hello, ", b"World!"],
            &signature
        ));
        assert!(!verify_hmac(b"wrong", &[b"Hello, World!"], &signature));
        assert!(!verify_hmac(
            b"It's a Secret to Everybody",
            &[b"Hello, World!"],
            &[]
        ));
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(secrets_equal(b"token", b"token"));
        assert!(!secrets_equal(b"token", b"token2"));
        assert!(!secrets_equal(b"token", b""));
    }

    #[test]
    fn truncation_keeps_character_boundaries() {
        assert_eq!(truncate_chars("čćžšđ".into(), 3), "čćž");
        assert_eq!(truncate_chars("abc".into(), 10), "abc");
        assert_eq!(truncate_chars(String::new(), 0), "");
    }

    #[test]
    fn error_messages_are_found_in_common_shapes() {
        assert_eq!(
            error_message(br#"{"status":"error","message":"Invalid phone number"}"#).unwrap(),
            "Invalid phone number"
        );
        assert_eq!(
            error_message(br#"{"message":["a","b"],"statusCode":400}"#).unwrap(),
            "a; b"
        );
        assert_eq!(
            error_message(
                br#"{"data":null,"errors":[{"error":"AUTH_FAILURE","message":"bad key"}]}"#
            )
            .unwrap(),
            "bad key"
        );
        assert_eq!(error_message(b"plain text").unwrap(), "plain text");
        assert_eq!(error_message(b"  "), None);
    }

    #[test]
    fn status_codes_map_by_idempotency() {
        let create = Idempotency::PlacesCall;
        let safe = Idempotency::Safe;
        assert!(matches!(
            status_error(StatusCode::BAD_REQUEST, b"{}", create),
            ProviderError::Rejected { status: 400, .. }
        ));
        assert!(matches!(
            status_error(StatusCode::TOO_MANY_REQUESTS, b"", create),
            ProviderError::Unavailable(_)
        ));
        assert!(matches!(
            status_error(StatusCode::REQUEST_TIMEOUT, b"", safe),
            ProviderError::Unavailable(_)
        ));
        assert!(matches!(
            status_error(StatusCode::BAD_GATEWAY, b"", create),
            ProviderError::Unknown(_)
        ));
        assert!(matches!(
            status_error(StatusCode::BAD_GATEWAY, b"", safe),
            ProviderError::Unavailable(_)
        ));
    }

    #[test]
    fn base_urls_are_checked() {
        let kind = ProviderKind::Vapi;
        assert_eq!(
            parse_base_url(kind, "https://api.vapi.ai/").unwrap(),
            "https://api.vapi.ai"
        );
        assert_eq!(
            parse_base_url(kind, "http://127.0.0.1:9/prefix/").unwrap(),
            "http://127.0.0.1:9/prefix"
        );
        assert!(parse_base_url(kind, "not a url").is_err());
        assert!(parse_base_url(kind, "ftp://example.com").is_err());
        assert!(parse_base_url(kind, "https://example.com/?a=1").is_err());
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(path_segment("abc-123_x.y~").unwrap(), "abc-123_x.y~");
        assert_eq!(path_segment("a/b?c").unwrap(), "a%2Fb%3Fc");
        assert_eq!(path_segment("../x?y#z").unwrap(), "..%2Fx%3Fy%23z");
        assert_eq!(path_segment("...").unwrap(), "...");
        for dots in [".", "..", " .. "] {
            assert!(
                matches!(
                    path_segment(dots),
                    Err(ProviderError::Rejected { status: 400, .. })
                ),
                "{dots:?}"
            );
        }
        assert!(matches!(
            path_segment(" "),
            Err(ProviderError::Rejected { status: 400, .. })
        ));
    }

    #[test]
    fn times_are_parsed_leniently() {
        let expected = DateTime::parse_from_rfc3339("2026-05-04T10:00:00Z").unwrap();
        assert_eq!(parse_time("2026-05-04T10:00:00.000Z").unwrap(), expected);
        assert_eq!(parse_time("2026-05-04 10:00:00").unwrap(), expected);
        assert_eq!(parse_time("2026-05-04 12:00:00 +02:00").unwrap(), expected);
        assert!(parse_time("yesterday").is_none());
        assert_eq!(parse_unix_timestamp("1777888800").unwrap(), expected);
        assert_eq!(parse_unix_timestamp("1777888800000").unwrap(), expected);
        assert!(parse_unix_timestamp("1e300").is_none());
        assert!(parse_unix_timestamp("NaN").is_none());
        assert_eq!(secs_between(Some(expected.into()), None), None);
    }

    #[test]
    fn json_access_never_panics_on_odd_types() {
        let json: Value = serde_json::json!({"a": {"b": "7.5", "c": 3, "d": null, "e": [1]}});
        assert_eq!(f64_at(&json, &["a", "b"]), Some(7.5));
        assert_eq!(str_at(&json, &["a", "c"]).as_deref(), Some("3"));
        assert_eq!(str_at(&json, &["a", "d"]), None);
        assert_eq!(str_at(&json, &["a", "e"]), None);
        assert_eq!(f64_at(&json, &["a", "b", "x"]), None);
        assert_eq!(bool_at(&json, &["a"]), None);
    }

    #[test]
    fn fingerprints_separate_their_parts() {
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
        assert_eq!(fingerprint(&["x"]).len(), 32);
    }
}
