//! `POST /v3/mail/send` (PROVIDERS.md §5.1): the body, the retries and how answers map to
//! [`SendError`].

use super::{RETRIES, RETRY_BUDGET, SendGrid};
use crate::mime;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use crm_domain::{Mailbox, OutgoingEmail, SendError, SentEmail};
use reqwest::{StatusCode, header::HeaderMap};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// The first wait before a retry without a hint from SendGrid; it doubles per attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The most bytes of an error body read.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// The longest error message kept.
const MAX_ERROR_MESSAGE_CHARS: usize = 500;

/// `{email, name?}`.
fn address(mailbox: &Mailbox) -> Value {
    let mut object = Map::new();
    object.insert("email".into(), json!(mailbox.email.trim()));
    if let Some(name) = mailbox
        .name
        .as_deref()
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        object.insert("name".into(), json!(name));
    }
    Value::Object(object)
}

/// The request body. The email is first checked exactly as SMTP and the outbox check it
/// (addresses, id, headers, attachments), so every sender refuses the same emails.
pub(super) fn body(email: &OutgoingEmail) -> Result<Value, SendError> {
    mime::build(email)?;
    let headers = mime::extra_headers(email)?;

    let mut body = Map::new();
    body.insert(
        "personalizations".into(),
        json!([{ "to": [address(&email.to)] }]),
    );
    body.insert("from".into(), address(&email.from));
    if let Some(reply_to) = &email.reply_to {
        body.insert("reply_to".into(), address(reply_to));
    }
    body.insert("subject".into(), json!(email.subject));

    let html = email.html.as_deref().filter(|html| !html.trim().is_empty());
    let mut content = Vec::new();
    // SendGrid wants text/plain first and refuses empty values.
    if !email.text.is_empty() || html.is_none() {
        content.push(json!({"type": "text/plain", "value": email.text}));
    }
    if let Some(html) = html {
        content.push(json!({"type": "text/html", "value": html}));
    }
    body.insert("content".into(), Value::Array(content));

    if !email.attachments.is_empty() {
        let attachments = email
            .attachments
            .iter()
            .map(|attachment| {
                json!({
                    "content": STANDARD.encode(&attachment.content),
                    "type": attachment.content_type.trim(),
                    "filename": attachment.filename.trim(),
                    "disposition": "attachment",
                })
            })
            .collect();
        body.insert("attachments".into(), Value::Array(attachments));
    }
    if !headers.is_empty() {
        let headers: Map<String, Value> = headers
            .into_iter()
            .map(|(name, value)| (name, Value::String(value)))
            .collect();
        body.insert("headers".into(), Value::Object(headers));
    }
    if let Some(category) = email
        .category
        .as_deref()
        .map(str::trim)
        .filter(|category| !category.is_empty())
    {
        body.insert("categories".into(), json!([category]));
    }
    let mut custom_args: Map<String, Value> = email
        .custom_args
        .iter()
        .map(|(key, value)| (key.clone(), Value::String(value.clone())))
        .collect();
    custom_args.insert("crm_email_id".into(), json!(email.id));
    body.insert("custom_args".into(), Value::Object(custom_args));
    Ok(Value::Object(body))
}

/// What one attempt ended with.
#[derive(Debug)]
enum Attempt {
    /// Final: success or an error that a retry would not change.
    Done(Result<SentEmail, SendError>),
    /// Worth another attempt, after `wait` if SendGrid said how long.
    Retry {
        message: String,
        wait: Option<Duration>,
    },
}

/// Sends the email, retrying `408`/`429`/`5xx` within the budget.
pub(super) async fn send(
    sendgrid: &SendGrid,
    email: &OutgoingEmail,
) -> Result<SentEmail, SendError> {
    let body = body(email)?;
    let mut backoff = FIRST_BACKOFF;
    let mut waited = Duration::ZERO;
    let mut attempt = 1;
    loop {
        let (message, wait) = match send_once(sendgrid, &body).await {
            Attempt::Done(outcome) => return outcome,
            Attempt::Retry { message, wait } => (message, wait),
        };
        if attempt > RETRIES {
            return Err(SendError::Unavailable(format!(
                "{message} (after {attempt} attempts)"
            )));
        }
        let wait = wait.unwrap_or(backoff);
        if waited + wait > RETRY_BUDGET {
            return Err(SendError::Unavailable(format!(
                "{message}; SendGrid asks to wait {} s, more than this send waits",
                wait.as_secs_f32()
            )));
        }
        tracing::warn!(attempt, error = %message, wait_ms = wait.as_millis(), "Retrying a SendGrid send");
        tokio::time::sleep(wait).await;
        waited += wait;
        backoff = backoff.saturating_mul(2);
        attempt += 1;
    }
}

async fn send_once(sendgrid: &SendGrid, body: &Value) -> Attempt {
    let response = sendgrid
        .http
        .post(sendgrid.send_url.clone())
        .header(
            reqwest::header::AUTHORIZATION,
            sendgrid.authorization.clone(),
        )
        .header(reqwest::header::ACCEPT, "application/json")
        .json(body)
        .send()
        .await;
    let mut response = match response {
        Ok(response) => response,
        Err(error) => return Attempt::Done(Err(transport_error(&error))),
    };
    let status = response.status();
    if status.is_success() {
        let provider_message_id = response
            .headers()
            .get("x-message-id")
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_owned);
        tracing::debug!(
            status = status.as_u16(),
            provider_message_id,
            "SendGrid accepted the email"
        );
        return Attempt::Done(Ok(SentEmail {
            provider_message_id,
        }));
    }
    let wait = retry_hint(response.headers(), Utc::now());
    let message = format!(
        "HTTP {}: {}",
        status.as_u16(),
        error_message(&read_capped(&mut response).await)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("no message").to_owned())
    );
    tracing::debug!(status = status.as_u16(), error = %message, "SendGrid refused the request");
    match status {
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => {
            Attempt::Retry { message, wait }
        }
        status if status.is_server_error() => Attempt::Retry { message, wait },
        status if status.is_client_error() => Attempt::Done(Err(SendError::Rejected(message))),
        _ => Attempt::Done(Err(SendError::Unavailable(format!("unexpected {message}")))),
    }
}

/// Maps a failed exchange (no status received).
fn transport_error(error: &reqwest::Error) -> SendError {
    // Refused connections, DNS, TLS and connect timeouts: the request never left.
    if error.is_connect() || error.is_builder() {
        return SendError::Unavailable(format!("could not connect to SendGrid: {error}"));
    }
    let what = if error.is_timeout() {
        "timed out"
    } else {
        "the connection failed"
    };
    SendError::Unknown(format!(
        "{what} after the request was sent; SendGrid may have accepted the email: {error}"
    ))
}

/// How long SendGrid asks to wait: `Retry-After` (seconds or an HTTP date), else
/// `X-RateLimit-Reset` (unix seconds).
pub(super) fn retry_hint(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
    };
    let until = |at: DateTime<Utc>| (at - now).to_std().unwrap_or(Duration::ZERO);
    if let Some(value) = header("retry-after") {
        if let Ok(secs) = value.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(at) = DateTime::parse_from_rfc2822(value) {
            return Some(until(at.with_timezone(&Utc)));
        }
    }
    let reset = header("x-ratelimit-reset")?.parse::<i64>().ok()?;
    DateTime::from_timestamp(reset, 0).map(until)
}

/// Reads at most [`MAX_ERROR_BODY_BYTES`] of an error body (a failure to read gives what was
/// read so far: the status already decided the outcome).
async fn read_capped(response: &mut reqwest::Response) -> Vec<u8> {
    let mut bytes = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        if bytes.len() + chunk.len() > MAX_ERROR_BODY_BYTES {
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    bytes
}

/// SendGrid's `{errors: [{message, field?}]}`, joined with `; `; otherwise the text.
pub(super) fn error_message(body: &[u8]) -> Option<String> {
    let message = match serde_json::from_slice::<Value>(body) {
        Ok(json) => {
            let parts: Vec<String> = json
                .get("errors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|error| {
                    let message = error.get("message").and_then(Value::as_str)?.trim();
                    if message.is_empty() {
                        return None;
                    }
                    Some(match error.get("field").and_then(Value::as_str) {
                        Some(field) if !field.trim().is_empty() => {
                            format!("{message} ({})", field.trim())
                        }
                        _ => message.to_owned(),
                    })
                })
                .collect();
            (!parts.is_empty()).then(|| parts.join("; "))
        }
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            (!text.is_empty()).then(|| text.to_owned())
        }
    }?;
    Some(match message.char_indices().nth(MAX_ERROR_MESSAGE_CHARS) {
        Some((index, _)) => message.get(..index).unwrap_or_default().to_owned(),
        None => message,
    })
}
