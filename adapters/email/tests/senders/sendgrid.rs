//! SendGrid against a fake `api.sendgrid.com` (PROVIDERS.md §5.1).

use crate::{
    ICS, OrPanic as _,
    fake::{Fake, Reply},
    install_crypto, logo_bytes, sample_email,
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use crm_domain::{EmailSender as _, SendError};
use crm_email::sendgrid::{Config, SendGrid};
use serde_json::json;
use std::time::{Duration, Instant};

const API_KEY: &str = "SG.test-key.0123456789";
const ID: &str = "0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6071";

fn sendgrid(base_url: &str, timeout_secs: u64) -> SendGrid {
    install_crypto();
    SendGrid::new(&Config {
        base_url: base_url.to_owned(),
        api_key: Some(API_KEY.into()),
        timeout_secs,
        ..Config::default()
    })
    .or_panic("the sender builds")
}

fn accepted() -> Reply {
    Reply::status(202).header("x-message-id", "W2dYcxfPQxKkw1Pd3sMtRg")
}

#[tokio::test(flavor = "multi_thread")]
async fn send_posts_the_documented_request() {
    let fake = Fake::start(vec![accepted()]).await;
    let email = sample_email(ID, "ana@firma.example");
    let sent = sendgrid(&fake.base_url, 10)
        .send(&email)
        .await
        .or_panic("the send succeeds");
    assert_eq!(
        sent.provider_message_id.as_deref(),
        Some("W2dYcxfPQxKkw1Pd3sMtRg")
    );

    let request = fake.only_request();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v3/mail/send");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    let body = request.json();
    assert_eq!(
        body["personalizations"],
        json!([{"to": [{"email": "ana@firma.example", "name": "Ana Hodžić"}]}])
    );
    assert_eq!(
        body["from"],
        json!({"email": "vertrieb@acme.example", "name": "Acme Vertrieb"})
    );
    assert_eq!(
        body["reply_to"],
        json!({"email": "lena@acme.example", "name": "Lena Berger"})
    );
    assert_eq!(body["subject"], email.subject);
    assert_eq!(
        body["content"],
        json!([
            {"type": "text/plain", "value": email.text},
            {"type": "text/html", "value": email.html},
        ])
    );
    assert_eq!(
        body["headers"],
        json!({
            "List-Unsubscribe": "<https://crm.example.com/unsubscribe/abc123>, <mailto:unsubscribe@acme.example?subject=abc123>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        })
    );
    assert_eq!(body["categories"], json!(["follow-up"]));
    assert_eq!(
        body["custom_args"],
        json!({"crm_email_id": ID, "customer_id": "c-42"})
    );
    let attachments = body["attachments"].as_array().or_panic("attachments");
    assert_eq!(attachments.len(), 2);
    assert_eq!(attachments[0]["filename"], "termin.ics");
    assert_eq!(attachments[0]["type"], "text/calendar; method=REQUEST");
    assert_eq!(attachments[0]["disposition"], "attachment");
    assert_eq!(
        STANDARD
            .decode(attachments[0]["content"].as_str().or_panic("base64"))
            .or_panic("valid base64"),
        ICS.as_bytes()
    );
    assert_eq!(attachments[1]["type"], "image/png");
    assert_eq!(
        STANDARD
            .decode(attachments[1]["content"].as_str().or_panic("base64"))
            .or_panic("valid base64"),
        logo_bytes()
    );
    let raw = String::from_utf8_lossy(&request.body);
    assert!(!raw.to_ascii_lowercase().contains("message-id"), "{raw}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_request_is_rejected_with_sendgrid_messages() {
    let fake = Fake::start(vec![Reply::json(
        400,
        json!({"errors": [
            {"message": "The from email does not contain a valid address.", "field": "from.email", "help": "http://sendgrid.com/docs"},
            {"message": "Invalid type. Expected: array, given: object.", "field": "personalizations"}
        ]}),
    )])
    .await;
    let error = sendgrid(&fake.base_url, 10)
        .send(&sample_email(ID, "ana@firma.example"))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        SendError::Rejected(
            "HTTP 400: The from email does not contain a valid address. (from.email); \
             Invalid type. Expected: array, given: object. (personalizations)"
                .into()
        )
    );
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_is_rejected_without_retries() {
    let fake = Fake::start(vec![Reply::json(
        401,
        json!({"errors": [{"field": null, "message": "The provided authorization grant is invalid, expired, or revoked"}]}),
    )])
    .await;
    let error = sendgrid(&fake.base_url, 10)
        .send(&sample_email(ID, "ana@firma.example"))
        .await
        .unwrap_err();
    match error {
        SendError::Rejected(message) => {
            assert!(
                message.starts_with("HTTP 401: The provided authorization grant"),
                "{message}"
            );
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_is_retried_after_the_asked_wait() {
    let fake = Fake::start(vec![
        Reply::json(
            429,
            json!({"errors": [{"field": null, "message": "too many requests"}]}),
        )
        .header("retry-after", "1"),
        accepted(),
    ])
    .await;
    let started = Instant::now();
    let sent = sendgrid(&fake.base_url, 10)
        .send(&sample_email(ID, "ana@firma.example"))
        .await
        .or_panic("the retry succeeds");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        sent.provider_message_id.as_deref(),
        Some("W2dYcxfPQxKkw1Pd3sMtRg")
    );
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    // The retry is the same request.
    assert_eq!(requests[0].body, requests[1].body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_rate_limit_wait_gives_up_at_once() {
    let fake = Fake::start(vec![
        Reply::json(
            429,
            json!({"errors": [{"field": null, "message": "too many requests"}]}),
        )
        .header("retry-after", "60"),
    ])
    .await;
    let error = sendgrid(&fake.base_url, 10)
        .send(&sample_email(ID, "ana@firma.example"))
        .await
        .unwrap_err();
    match error {
        SendError::Unavailable(message) => {
            assert!(message.contains("too many requests"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_error_storm_is_unavailable_after_three_attempts() {
    let fake = Fake::start(vec![Reply::json(
        500,
        json!({"errors": [{"field": null, "message": "internal error"}]}),
    )])
    .await;
    let error = sendgrid(&fake.base_url, 10)
        .send(&sample_email(ID, "ana@firma.example"))
        .await
        .unwrap_err();
    match error {
        SendError::Unavailable(message) => {
            assert!(message.contains("HTTP 500: internal error"), "{message}");
            assert!(message.contains("3 attempts"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_after_sending_is_unknown() {
    let fake = Fake::start(vec![accepted().after(Duration::from_secs(5))]).await;
    let error = sendgrid(&fake.base_url, 1)
        .send(&sample_email(ID, "ana@firma.example"))
        .await
        .unwrap_err();
    assert!(matches!(error, SendError::Unknown(_)), "{error:?}");
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_connection_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").or_panic("bind");
    let url = format!("http://{}", listener.local_addr().or_panic("an address"));
    drop(listener);
    let error = sendgrid(&url, 10)
        .send(&sample_email(ID, "ana@firma.example"))
        .await
        .unwrap_err();
    assert!(matches!(error, SendError::Unavailable(_)), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_email_is_refused_before_any_request() {
    let fake = Fake::start(vec![accepted()]).await;
    let mut email = sample_email("../escape", "ana@firma.example");
    email.headers.clear();
    let error = sendgrid(&fake.base_url, 10).send(&email).await.unwrap_err();
    assert!(matches!(error, SendError::Rejected(_)), "{error:?}");
    assert!(fake.requests().is_empty());
}
