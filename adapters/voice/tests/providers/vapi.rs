//! Vapi against a fake `api.vapi.ai` and with server messages authenticated as Vapi's
//! credentials do (PROVIDERS.md §1).

use crate::{
    Headers, closed_port_url, delivery,
    fake::{Fake, Reply},
    headers, hmac_hex, install_crypto, sample_agent, sample_call, time,
};
use chrono::Duration;
use crm_domain::{
    CallDeletion, CallStatus, Disposition, ProviderError, SpeakerRole, VoiceProvider, WebhookError,
};
use crm_voice::vapi::{Config, Vapi, WebhookAuth};
use serde_json::{Value, json};
use std::time::Instant;

fn vapi(base_url: &str) -> Vapi {
    vapi_with(Config {
        base_url: base_url.to_owned(),
        api_key: Some("vapi-private-key".into()),
        ..Config::default()
    })
}

fn vapi_with(config: Config) -> Vapi {
    install_crypto();
    match Vapi::new(&config) {
        Ok(vapi) => vapi,
        Err(error) => panic!("cannot build Vapi: {error}"),
    }
}

fn webhook_vapi(auth: WebhookAuth, header: &str) -> Vapi {
    vapi_with(Config {
        api_key: Some("vapi-private-key".into()),
        webhook_auth: auth,
        webhook_secret: Some("s3cret-token".into()),
        bearer_header: header.to_owned(),
        ..Config::default()
    })
}

/// A `Call` as `GET /call/{id}` returns it after the call.
fn ended_call(crm_call_id: &str) -> Value {
    json!({
        "id": "9f1c1c2e-0b7a-4a36-9a55-2b1f1b2f5e10",
        "orgId": "org-1",
        "type": "outboundPhoneCall",
        "status": "ended",
        "endedReason": "customer-ended-call",
        "createdAt": "2026-05-04T09:59:50.000Z",
        "updatedAt": "2026-05-04T10:02:10.000Z",
        "startedAt": "2026-05-04T10:00:00.000Z",
        "endedAt": "2026-05-04T10:02:05.500Z",
        "cost": 0.4213,
        "costBreakdown": {"transport": 0.02, "stt": 0.05, "llm": 0.1, "tts": 0.2, "vapi": 0.05, "total": 0.4213},
        "assistantId": "agent-123",
        "name": crm_call_id,
        "assistantOverrides": {"metadata": {"crm_call_id": crm_call_id, "crm_customer_id": "x"}},
        "customer": {"number": "+4915112345678"},
        "analysis": {
            "summary": "The customer wants a demo next week.",
            "structuredData": {"outcome": "Appointment"},
            "successEvaluation": "true"
        },
        "artifact": {
            "transcript": "AI: Guten Tag\nUser: Hallo",
            "recordingUrl": "https://storage.vapi.ai/rec.wav",
            "messages": [
                {"role": "system", "message": "You are Lena, a sales agent…", "time": 1777888800000_i64, "secondsFromStart": 0},
                {"role": "bot", "message": "Guten Tag, hier ist Lena von Acme.", "time": 1777888801000_i64, "endTime": 1777888803000_i64, "secondsFromStart": 1.2, "duration": 2000},
                {"role": "user", "message": "Hallo, worum geht es?", "time": 1777888804000_i64, "secondsFromStart": 4.05, "duration": 1500},
                {"role": "tool_calls", "toolCalls": [{"id": "t1"}], "secondsFromStart": 6}
            ]
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn start_call_posts_the_documented_body_with_bearer_auth() {
    let fake = Fake::start(vec![Reply::json(
        201,
        json!({"id": "9f1c1c2e-0b7a-4a36-9a55-2b1f1b2f5e10", "orgId": "org-1", "status": "queued",
               "createdAt": "2026-05-04T10:00:00.000Z", "updatedAt": "2026-05-04T10:00:00.000Z",
               "subscriptionLimits": {"concurrencyBlocked": false, "concurrencyLimit": 10, "remainingConcurrentCalls": 9}}),
    )])
    .await;
    let mut agent = sample_agent();
    agent.from_number = Some("pn-7d3c".into());
    let call = sample_call(agent);

    let started = vapi(&fake.base_url).start_call(&call).await.unwrap();

    assert_eq!(
        started.provider_call_id,
        "9f1c1c2e-0b7a-4a36-9a55-2b1f1b2f5e10"
    );
    assert_eq!(started.status, CallStatus::Dialing);
    let request = fake.only_request();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/call");
    assert_eq!(
        request.header("authorization"),
        Some("Bearer vapi-private-key")
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.json(),
        json!({
            "assistantId": "agent-123",
            "phoneNumberId": "pn-7d3c",
            "customer": {
                "number": "+4915112345678",
                "name": "Amela Hodžić",
                "externalId": call.customer_id.to_string(),
            },
            "name": call.call_id.to_string(),
            "assistantOverrides": {
                "variableValues": crate::expected_variables(),
                "metadata": {
                    "crm_call_id": call.call_id.to_string(),
                    "crm_customer_id": call.customer_id.to_string(),
                },
                "firstMessage": "Guten Tag, hier ist Lena von Acme.",
                "server": {"url": "https://crm.example.com/webhooks/voice"},
                "serverMessages": [
                    "conversation-update", "end-of-call-report", "function-call", "hang",
                    "speech-update", "status-update", "tool-calls",
                    "transfer-destination-request", "handoff-destination-request",
                    "user-interrupted", "assistant.started",
                    "transcript[transcriptType=\"final\"]",
                ],
                "monitorPlan": {"controlEnabled": true},
            },
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn start_call_uses_the_configured_server_url_and_needs_an_assistant() {
    let fake = Fake::start(vec![Reply::json(
        201,
        json!({"id": "c-2", "status": "queued"}),
    )])
    .await;
    let vapi = vapi_with(Config {
        base_url: fake.base_url.clone(),
        api_key: Some("vapi-private-key".into()),
        server_url: Some("https://crm.example.com/hooks/vapi".into()),
        ..Config::default()
    });
    let mut call = sample_call(sample_agent());
    call.webhook_url = None;
    vapi.start_call(&call).await.unwrap();
    assert_eq!(
        fake.only_request().json()["assistantOverrides"]["server"],
        json!({"url": "https://crm.example.com/hooks/vapi"})
    );

    call.agent.provider_agent_id = None;
    let error = vapi.start_call(&call).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::Rejected { status: 400, .. }),
        "{error:?}"
    );
    assert_eq!(
        fake.requests().len(),
        1,
        "nothing is sent without an assistant"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn start_call_maps_refusals_and_server_errors() {
    let call = sample_call(sample_agent());

    let fake = Fake::start(vec![Reply::json(
        400,
        json!({"message": ["customer.number must be a valid phone number in the E.164 format"],
               "error": "Bad Request", "statusCode": 400}),
    )])
    .await;
    match vapi(&fake.base_url).start_call(&call).await {
        Err(ProviderError::Rejected { status, message }) => {
            assert_eq!(status, 400);
            assert!(message.contains("E.164"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }

    let fake = Fake::start(vec![Reply::raw(500, "Internal Server Error")]).await;
    let error = vapi(&fake.base_url).start_call(&call).await.unwrap_err();
    assert!(matches!(error, ProviderError::Unknown(_)), "{error:?}");
    assert_eq!(fake.requests().len(), 1, "a create is never retried");

    let fake = Fake::start(vec![Reply::json(
        429,
        json!({"message": "Too Many Requests"}),
    )])
    .await;
    let error = vapi(&fake.base_url).start_call(&call).await.unwrap_err();
    assert!(matches!(error, ProviderError::Unavailable(_)), "{error:?}");
    assert_eq!(fake.requests().len(), 1);

    let fake = Fake::start(vec![Reply::raw(201, "<html>oops</html>")]).await;
    let error = vapi(&fake.base_url).start_call(&call).await.unwrap_err();
    assert!(matches!(error, ProviderError::Malformed(_)), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn start_call_timeout_is_unknown_and_a_refused_connection_unavailable() {
    let fake = Fake::start(vec![
        Reply::json(201, json!({"id": "late", "status": "queued"}))
            .after(std::time::Duration::from_secs(3)),
    ])
    .await;
    let slow = vapi_with(Config {
        base_url: fake.base_url.clone(),
        api_key: Some("vapi-private-key".into()),
        timeout_secs: 1,
        ..Config::default()
    });
    let began = Instant::now();
    let error = slow
        .start_call(&sample_call(sample_agent()))
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::Unknown(_)), "{error:?}");
    assert!(began.elapsed() < std::time::Duration::from_millis(2500));
    assert_eq!(fake.requests().len(), 1);

    let closed = vapi(&closed_port_url().await);
    let error = closed
        .start_call(&sample_call(sample_agent()))
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::Unavailable(_)), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn get_call_maps_a_finished_call_and_derives_the_duration() {
    let crm_call_id = crm_domain::CallId::new().to_string();
    let fake = Fake::start(vec![Reply::json(200, ended_call(&crm_call_id))]).await;

    let update = vapi(&fake.base_url)
        .get_call("9f1c1c2e-0b7a-4a36-9a55-2b1f1b2f5e10")
        .await
        .unwrap();

    let request = fake.only_request();
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, "/call/9f1c1c2e-0b7a-4a36-9a55-2b1f1b2f5e10");
    assert_eq!(
        request.header("authorization"),
        Some("Bearer vapi-private-key")
    );
    assert_eq!(
        update.provider_call_id,
        "9f1c1c2e-0b7a-4a36-9a55-2b1f1b2f5e10"
    );
    assert_eq!(update.call_id.map(|id| id.to_string()), Some(crm_call_id));
    assert_eq!(update.status, Some(CallStatus::Ended));
    assert_eq!(update.disposition, Some(Disposition::Answered));
    assert_eq!(update.ended_reason.as_deref(), Some("customer-ended-call"));
    assert_eq!(update.started_at, Some(time("2026-05-04T10:00:00Z")));
    assert_eq!(update.ended_at, Some(time("2026-05-04T10:02:05.500Z")));
    assert_eq!(update.duration_secs, Some(125.5));
    assert_eq!(update.cost_usd, Some(0.4213));
    assert_eq!(
        update.summary.as_deref(),
        Some("The customer wants a demo next week.")
    );
    assert_eq!(update.outcome.as_deref(), Some("appointment"));
    assert_eq!(
        update.recording_url.as_deref(),
        Some("https://storage.vapi.ai/rec.wav")
    );
    assert_eq!(
        update.transcript.as_deref(),
        Some("AI: Guten Tag\nUser: Hallo")
    );
    let segments: Vec<_> = update
        .segments
        .iter()
        .map(|s| (s.position, s.role, s.text.as_str(), s.offset_ms))
        .collect();
    assert_eq!(
        segments,
        [
            (
                Some(1),
                SpeakerRole::Agent,
                "Guten Tag, hier ist Lena von Acme.",
                Some(1200)
            ),
            (
                Some(2),
                SpeakerRole::Customer,
                "Hallo, worum geht es?",
                Some(4050)
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn get_call_retries_server_errors_then_reports_unavailable() {
    let fake = Fake::start(vec![Reply::raw(503, "Service Unavailable")]).await;
    let error = vapi(&fake.base_url).get_call("c-1").await.unwrap_err();
    assert!(matches!(error, ProviderError::Unavailable(_)), "{error:?}");
    assert_eq!(fake.requests().len(), 3, "one request and two retries");

    let fake = Fake::start(vec![
        Reply::raw(502, "Bad Gateway"),
        Reply::json(200, ended_call("not-a-uuid")),
    ])
    .await;
    let update = vapi(&fake.base_url).get_call("c-1").await.unwrap();
    assert_eq!(update.status, Some(CallStatus::Ended));
    assert_eq!(
        update.call_id, None,
        "a foreign metadata value is not our id"
    );
    assert_eq!(fake.requests().len(), 2);

    let fake = Fake::start(vec![Reply::json(404, json!({"message": "Call not found"}))]).await;
    let error = vapi(&fake.base_url).get_call("missing").await.unwrap_err();
    assert_eq!(
        error,
        ProviderError::Rejected {
            status: 404,
            message: "Call not found".into()
        }
    );
    assert_eq!(fake.requests().len(), 1, "a refusal is not retried");

    let fake = Fake::start(vec![Reply::raw(200, "{\"status\":")]).await;
    let error = vapi(&fake.base_url).get_call("c-1").await.unwrap_err();
    assert!(matches!(error, ProviderError::Malformed(_)), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_call_posts_end_call_to_the_calls_control_url_without_the_key() {
    // Vapi's control URL lives on another host than the API.
    let control = Fake::start(vec![Reply::json(200, json!({}))]).await;
    let control_url = format!(
        "{}/9f1c1c2e-0b7a-4a36-9a55-2b1f1b2f5e10/control",
        control.base_url
    );
    let api = Fake::start(vec![Reply::json(
        200,
        json!({"id": "9f1c1c2e-0b7a-4a36-9a55-2b1f1b2f5e10", "orgId": "org-1",
               "status": "in-progress", "monitor": {"controlUrl": control_url}}),
    )])
    .await;

    vapi(&api.base_url)
        .stop_call("9f1c1c2e-0b7a-4a36-9a55-2b1f1b2f5e10")
        .await
        .unwrap();

    let read = api.only_request();
    assert_eq!(read.method, "GET");
    assert_eq!(read.path, "/call/9f1c1c2e-0b7a-4a36-9a55-2b1f1b2f5e10");
    assert_eq!(
        read.header("authorization"),
        Some("Bearer vapi-private-key")
    );
    let end = control.only_request();
    assert_eq!(end.method, "POST");
    assert_eq!(end.path, "/9f1c1c2e-0b7a-4a36-9a55-2b1f1b2f5e10/control");
    assert_eq!(end.json(), json!({"type": "end-call"}));
    assert_eq!(
        end.header("authorization"),
        None,
        "the key stays with the API"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_call_of_an_ended_call_or_one_without_control_is_refused_and_posts_nothing() {
    let api = Fake::start(vec![Reply::json(
        200,
        json!({"id": "c-1", "status": "ended"}),
    )])
    .await;
    // An ended call is not canceled after the fact: its report says how it ended.
    let error = vapi(&api.base_url).stop_call("c-1").await.unwrap_err();
    assert!(
        matches!(&error, ProviderError::Rejected { status: 409, message } if message.contains("ended")),
        "{error:?}"
    );
    assert_eq!(api.requests().len(), 1);

    let api = Fake::start(vec![Reply::json(
        200,
        json!({"id": "c-1", "status": "queued"}),
    )])
    .await;
    let error = vapi(&api.base_url).stop_call("c-1").await.unwrap_err();
    assert!(
        matches!(&error, ProviderError::Rejected { status: 409, message } if message.contains("controlUrl")),
        "{error:?}"
    );
    assert_eq!(api.requests().len(), 1);

    // A control URL that is no URL is the provider's malformed answer, not a request.
    let api = Fake::start(vec![Reply::json(
        200,
        json!({"id": "c-1", "status": "in-progress", "monitor": {"controlUrl": "file:///etc/passwd"}}),
    )])
    .await;
    let error = vapi(&api.base_url).stop_call("c-1").await.unwrap_err();
    assert!(matches!(error, ProviderError::Malformed(_)), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_call_retries_an_unavailable_control_url_then_gives_up() {
    let control = Fake::start(vec![Reply::json(503, json!({"message": "busy"}))]).await;
    let api = Fake::start(vec![Reply::json(
        200,
        json!({"id": "c-1", "status": "in-progress",
               "monitor": {"controlUrl": format!("{}/c-1/control", control.base_url)}}),
    )])
    .await;
    let error = vapi(&api.base_url).stop_call("c-1").await.unwrap_err();
    assert!(matches!(error, ProviderError::Unavailable(_)), "{error:?}");
    assert!(control.requests().len() > 1, "ending is safe to repeat");
    // The control address (a capability) is in no error: here its host refuses.
    let closed = closed_port_url().await;
    let api = Fake::start(vec![Reply::json(
        200,
        json!({"id": "c-1", "status": "in-progress",
               "monitor": {"controlUrl": format!("{closed}/secret-control-path")}}),
    )])
    .await;
    let error = vapi(&api.base_url).stop_call("c-1").await.unwrap_err();
    assert!(matches!(error, ProviderError::Unavailable(_)), "{error:?}");
    assert!(
        !format!("{error:?}").contains("secret-control-path"),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_call_sends_delete_with_bearer_auth_and_confirms() {
    let fake = Fake::start(vec![Reply::json(
        200,
        json!({"id": "9f1c1c2e-0b7a-4a36-9a55-2b1f1b2f5e10", "orgId": "org-1", "status": "ended"}),
    )])
    .await;

    let deletion = vapi(&fake.base_url)
        .delete_call("9f1c1c2e-0b7a-4a36-9a55-2b1f1b2f5e10")
        .await
        .unwrap();

    assert_eq!(deletion, CallDeletion::Deleted);
    let request = fake.only_request();
    assert_eq!(request.method, "DELETE");
    assert_eq!(request.path, "/call/9f1c1c2e-0b7a-4a36-9a55-2b1f1b2f5e10");
    assert_eq!(request.query, None);
    assert_eq!(
        request.header("authorization"),
        Some("Bearer vapi-private-key")
    );
    assert!(request.body.is_empty(), "a delete sends no body");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_call_maps_not_found_refusals_and_server_errors() {
    let fake = Fake::start(vec![Reply::json(404, json!({"message": "Call not found"}))]).await;
    let deletion = vapi(&fake.base_url).delete_call("gone").await.unwrap();
    assert_eq!(deletion, CallDeletion::NotFound);
    assert_eq!(fake.requests().len(), 1);

    let fake = Fake::start(vec![Reply::json(
        400,
        json!({"message": ["id must be a UUID"], "error": "Bad Request", "statusCode": 400}),
    )])
    .await;
    let error = vapi(&fake.base_url).delete_call("c-1").await.unwrap_err();
    assert_eq!(
        error,
        ProviderError::Rejected {
            status: 400,
            message: "id must be a UUID".into()
        }
    );
    assert_eq!(fake.requests().len(), 1, "a refusal is not retried");

    let fake = Fake::start(vec![Reply::raw(503, "Service Unavailable")]).await;
    let error = vapi(&fake.base_url).delete_call("c-1").await.unwrap_err();
    assert!(matches!(error, ProviderError::Unavailable(_)), "{error:?}");
    assert_eq!(fake.requests().len(), 3, "one request and two retries");
    assert!(fake.requests().iter().all(|r| r.method == "DELETE"));

    let fake = Fake::start(vec![Reply::raw(429, ""), Reply::json(200, json!({}))]).await;
    let deletion = vapi(&fake.base_url).delete_call("c-1").await.unwrap();
    assert_eq!(
        deletion,
        CallDeletion::Deleted,
        "a delete is safe to repeat"
    );
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_call_timeout_and_refused_connection_are_unavailable() {
    let fake = Fake::start(vec![
        Reply::json(200, json!({})).after(std::time::Duration::from_secs(3)),
    ])
    .await;
    let slow = vapi_with(Config {
        base_url: fake.base_url.clone(),
        api_key: Some("vapi-private-key".into()),
        timeout_secs: 1,
        ..Config::default()
    });
    let error = slow.delete_call("c-1").await.unwrap_err();
    assert!(matches!(error, ProviderError::Unavailable(_)), "{error:?}");
    assert_eq!(
        fake.requests().len(),
        3,
        "unlike a create, a timed-out delete is retried"
    );

    let closed = vapi(&closed_port_url().await);
    let error = closed.delete_call("c-1").await.unwrap_err();
    assert!(matches!(error, ProviderError::Unavailable(_)), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_call_keeps_an_odd_id_inside_its_path_segment() {
    let fake = Fake::start(vec![Reply::json(200, json!({}))]).await;
    let deletion = vapi(&fake.base_url).delete_call("../x?y#z").await.unwrap();
    assert_eq!(deletion, CallDeletion::Deleted);
    let request = fake.only_request();
    assert_eq!(request.path, "/call/..%2Fx%3Fy%23z");
    assert_eq!(request.query, None);

    for id in ["", "  ", ".", ".."] {
        let error = vapi(&fake.base_url).delete_call(id).await.unwrap_err();
        assert!(
            matches!(error, ProviderError::Rejected { status: 400, .. }),
            "{id:?}: {error:?}"
        );
    }
    assert_eq!(fake.requests().len(), 1, "refused ids send nothing");
}

#[test]
fn bearer_credentials_must_match_the_configured_token() {
    let body = br#"{"message":{"type":"status-update","status":"ringing","call":{"id":"c-1"}}}"#;
    let now = time("2026-05-04T10:00:00Z");
    let vapi = webhook_vapi(WebhookAuth::Bearer, "authorization");

    let valid = headers(&[("authorization", "Bearer s3cret-token")]);
    assert_eq!(vapi.verify_webhook(&delivery(&valid, body, now)), Ok(()));
    let lower = headers(&[("authorization", "bearer s3cret-token")]);
    assert_eq!(vapi.verify_webhook(&delivery(&lower, body, now)), Ok(()));

    for bad in [
        headers(&[("authorization", "Bearer s3cret-tokem")]),
        headers(&[("authorization", "s3cret-token")]),
        headers(&[("authorization", "Basic czNjcmV0LXRva2Vu")]),
        headers(&[("x-vapi-secret", "s3cret-token")]),
        headers(&[]),
    ] {
        assert!(
            matches!(
                vapi.verify_webhook(&delivery(&bad, body, now)),
                Err(WebhookError::Unauthenticated(_))
            ),
            "{bad:?}"
        );
    }

    let legacy = webhook_vapi(WebhookAuth::Bearer, "x-vapi-secret");
    let raw = headers(&[("x-vapi-secret", "s3cret-token")]);
    assert_eq!(legacy.verify_webhook(&delivery(&raw, body, now)), Ok(()));
    let prefixed = headers(&[("x-vapi-secret", "Bearer s3cret-token")]);
    assert!(
        legacy
            .verify_webhook(&delivery(&prefixed, body, now))
            .is_err()
    );

    let unconfigured = vapi_with(Config {
        api_key: Some("k".into()),
        ..Config::default()
    });
    assert!(matches!(
        unconfigured.verify_webhook(&delivery(&valid, body, now)),
        Err(WebhookError::Unauthenticated(_))
    ));
}

#[test]
fn hmac_credentials_sign_timestamp_and_raw_body() {
    let vapi = webhook_vapi(WebhookAuth::Hmac, "authorization");
    let body = br#"{"message":{"type":"end-of-call-report","call":{"id":"c-1"}}}"#;
    let now = time("2026-05-04T10:00:00Z");
    let ts = now.timestamp().to_string();
    let signature = hmac_hex(b"s3cret-token", &[ts.as_bytes(), b".", body]);

    let valid = headers(&[("x-signature", &signature), ("x-timestamp", &ts)]);
    assert_eq!(vapi.verify_webhook(&delivery(&valid, body, now)), Ok(()));

    // Milliseconds and a `sha256=` prefix are accepted too.
    let ts_ms = now.timestamp_millis().to_string();
    let signature_ms = format!(
        "sha256={}",
        hmac_hex(b"s3cret-token", &[ts_ms.as_bytes(), b".", body])
    );
    let ms = headers(&[("x-signature", &signature_ms), ("x-timestamp", &ts_ms)]);
    assert_eq!(vapi.verify_webhook(&delivery(&ms, body, now)), Ok(()));

    let tampered = br#"{"message":{"type":"end-of-call-report","call":{"id":"c-2"}}}"#;
    let wrong_secret = hmac_hex(b"other", &[ts.as_bytes(), b".", body]);
    let cases: Vec<(Headers, &[u8], chrono::DateTime<chrono::Utc>)> = vec![
        (valid.clone(), tampered, now),
        (valid.clone(), body, now + Duration::seconds(301)),
        (valid.clone(), body, now - Duration::seconds(301)),
        (
            headers(&[("x-signature", &wrong_secret), ("x-timestamp", &ts)]),
            body,
            now,
        ),
        (headers(&[("x-timestamp", &ts)]), body, now),
        (headers(&[("x-signature", &signature)]), body, now),
        (
            headers(&[("x-signature", "zz"), ("x-timestamp", &ts)]),
            body,
            now,
        ),
        (
            headers(&[("x-signature", &signature), ("x-timestamp", "soon")]),
            body,
            now,
        ),
    ];
    for (headers, body, received_at) in cases {
        assert!(
            matches!(
                vapi.verify_webhook(&delivery(&headers, body, received_at)),
                Err(WebhookError::Unauthenticated(_))
            ),
            "{headers:?} at {received_at}"
        );
    }
    assert_eq!(
        vapi.verify_webhook(&delivery(&valid, body, now + Duration::seconds(299))),
        Ok(())
    );
}

/// A Vapi adapter with an HMAC credential configured by `configure`.
fn hmac_vapi(configure: impl FnOnce(&mut Config)) -> Result<Vapi, crm_voice::ConfigError> {
    install_crypto();
    let mut config = Config {
        api_key: Some("vapi-private-key".into()),
        webhook_auth: WebhookAuth::Hmac,
        webhook_secret: Some("s3cret-token".into()),
        ..Config::default()
    };
    configure(&mut config);
    Vapi::new(&config)
}

fn mac<M: hmac::Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = match <M as hmac::digest::KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(error) => panic!("hmac key: {error}"),
    };
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

#[test]
fn hmac_credentials_with_other_algorithms_formats_and_encodings_verify() {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let body = br#"{"message":{"type":"status-update","call":{"id":"c-1"}}}"#;
    let now = time("2026-05-04T10:00:00Z");
    let ts = now.timestamp().to_string();
    let signed = [ts.as_bytes(), b".", body].concat();

    // SHA-512, base64, with the credential's own prefix.
    let vapi = hmac_vapi(|c| {
        c.hmac_algorithm = crm_voice::vapi::HmacAlgorithm::Sha512;
        c.hmac_signature_encoding = crm_voice::vapi::SignatureEncoding::Base64;
        c.hmac_signature_prefix = "v1=".into();
    })
    .unwrap();
    let signature = format!(
        "v1={}",
        b64(&mac::<hmac::Hmac<sha2::Sha512>>(b"s3cret-token", &signed))
    );
    let valid = headers(&[("x-signature", &signature), ("x-timestamp", &ts)]);
    assert_eq!(vapi.verify_webhook(&delivery(&valid, body, now)), Ok(()));
    // The SHA-256 of the same payload is not a SHA-512 signature.
    let sha256 = format!(
        "v1={}",
        b64(&mac::<hmac::Hmac<sha2::Sha256>>(b"s3cret-token", &signed))
    );
    let wrong = headers(&[("x-signature", &sha256), ("x-timestamp", &ts)]);
    assert!(vapi.verify_webhook(&delivery(&wrong, body, now)).is_err());

    // SHA-1 over the body alone, no timestamp at all (no replay window either).
    let vapi = hmac_vapi(|c| {
        c.hmac_algorithm = crm_voice::vapi::HmacAlgorithm::Sha1;
        c.hmac_include_timestamp = false;
        c.hmac_payload_format = "{body}".into();
        c.hmac_signature_header = "x-vapi-signature".into();
    })
    .unwrap();
    let signature = crm_domain::hex::encode(&mac::<hmac::Hmac<sha1::Sha1>>(b"s3cret-token", body));
    let valid = headers(&[("x-vapi-signature", &signature)]);
    assert_eq!(
        vapi.verify_webhook(&delivery(&valid, body, now + Duration::days(30))),
        Ok(())
    );
    let tampered = br#"{"message":{"type":"status-update","call":{"id":"c-2"}}}"#;
    assert!(
        vapi.verify_webhook(&delivery(&valid, tampered, now))
            .is_err()
    );

    // Svix style: `{svix-id}.{timestamp}.{body}` under a base64 secret, with method and URL.
    let key = b"a key of random bytes \x00\x01\xff";
    let vapi = hmac_vapi(|c| {
        c.webhook_secret = Some(b64(key).into());
        c.hmac_secret_is_base64 = true;
        c.hmac_payload_format = "{method} {url}\n{svix-id}.{timestamp}.{body}".into();
        c.hmac_timestamp_header = "svix-timestamp".into();
        c.hmac_signature_header = "svix-signature".into();
        c.server_url = Some("https://crm.example.com/webhooks/voice/vapi".into());
    })
    .unwrap();
    let payload = [
        b"POST https://crm.example.com/webhooks/voice/vapi\nmsg_2Lh9".as_slice(),
        b".",
        ts.as_bytes(),
        b".",
        body,
    ]
    .concat();
    let signature = crm_domain::hex::encode(&mac::<hmac::Hmac<sha2::Sha256>>(key, &payload));
    let valid = headers(&[
        ("svix-signature", &signature),
        ("svix-timestamp", &ts),
        ("svix-id", "msg_2Lh9"),
    ]);
    assert_eq!(vapi.verify_webhook(&delivery(&valid, body, now)), Ok(()));
    // Svix style: `v1,<base64>` signatures, several while a secret rotates, a `whsec_` key.
    let vapi_svix = hmac_vapi(|c| {
        c.webhook_secret = Some(format!("whsec_{}", b64(key)).into());
        c.hmac_secret_is_base64 = true;
        c.hmac_payload_format = "{method} {url}\n{svix-id}.{timestamp}.{body}".into();
        c.hmac_timestamp_header = "svix-timestamp".into();
        c.hmac_signature_header = "svix-signature".into();
        c.hmac_signature_prefix = "v1,".into();
        c.hmac_signature_encoding = crm_voice::vapi::SignatureEncoding::Base64;
        c.server_url = Some("https://crm.example.com/webhooks/voice/vapi".into());
    })
    .unwrap();
    let rotated = format!(
        "v1,{} v1,{}",
        b64(&mac::<hmac::Hmac<sha2::Sha256>>(b"the old key", &payload)),
        b64(&mac::<hmac::Hmac<sha2::Sha256>>(key, &payload))
    );
    let both = headers(&[
        ("svix-signature", &rotated),
        ("svix-timestamp", &ts),
        ("svix-id", "msg_2Lh9"),
    ]);
    assert_eq!(
        vapi_svix.verify_webhook(&delivery(&both, body, now)),
        Ok(())
    );
    let old_only = format!(
        "v1,{}",
        b64(&mac::<hmac::Hmac<sha2::Sha256>>(b"the old key", &payload))
    );
    let stale = headers(&[
        ("svix-signature", &old_only),
        ("svix-timestamp", &ts),
        ("svix-id", "msg_2Lh9"),
    ]);
    assert!(
        vapi_svix
            .verify_webhook(&delivery(&stale, body, now))
            .is_err()
    );
    let other_id = headers(&[
        ("svix-signature", &signature),
        ("svix-timestamp", &ts),
        ("svix-id", "msg_other"),
    ]);
    assert!(
        vapi.verify_webhook(&delivery(&other_id, body, now))
            .is_err()
    );
    let no_id = headers(&[("svix-signature", &signature), ("svix-timestamp", &ts)]);
    assert!(vapi.verify_webhook(&delivery(&no_id, body, now)).is_err());
    assert!(
        vapi.verify_webhook(&delivery(&valid, body, now + Duration::seconds(301)))
            .is_err(),
        "the window still applies"
    );
}

#[test]
fn unusable_hmac_settings_are_refused_at_start() {
    for (setting, configure) in [
        (
            "{nonce}",
            Box::new(|c: &mut Config| c.hmac_payload_format = "{nonce}.{body}".into())
                as Box<dyn FnOnce(&mut Config)>,
        ),
        (
            "hmac_include_timestamp",
            Box::new(|c: &mut Config| c.hmac_include_timestamp = false),
        ),
        (
            "server_url",
            Box::new(|c: &mut Config| c.hmac_payload_format = "{url}{body}".into()),
        ),
        (
            "{body}",
            Box::new(|c: &mut Config| c.hmac_payload_format = "{timestamp}".into()),
        ),
        (
            "does not sign {timestamp}",
            Box::new(|c: &mut Config| c.hmac_payload_format = "{body}".into()),
        ),
        (
            "not base64",
            Box::new(|c: &mut Config| {
                c.hmac_secret_is_base64 = true;
                c.webhook_secret = Some("s3cret token!".into());
            }),
        ),
    ] {
        let Err(error) = hmac_vapi(configure) else {
            panic!("{setting}: accepted");
        };
        assert!(error.to_string().contains(setting), "{setting}: {error}");
    }
}

fn parse(body: &Value) -> Result<Vec<crm_domain::CallUpdate>, WebhookError> {
    webhook_vapi(WebhookAuth::Bearer, "authorization").parse_webhook(body.to_string().as_bytes())
}

#[test]
fn status_updates_map_and_repeat_with_the_same_key() {
    let crm_call_id = crm_domain::CallId::new();
    let call = json!({"id": "c-1", "startedAt": null,
                      "assistantOverrides": {"metadata": {"crm_call_id": crm_call_id.to_string()}}});
    let ringing = json!({"message": {"type": "status-update", "status": "ringing", "call": call,
                                     "timestamp": 1777888800000_i64}});
    let updates = parse(&ringing).unwrap();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].status, Some(CallStatus::Ringing));
    assert_eq!(updates[0].dedupe_key, "status:ringing");
    assert_eq!(updates[0].event, "status-update");
    assert_eq!(updates[0].call_id, Some(crm_call_id));
    assert_eq!(
        parse(&ringing).unwrap(),
        updates,
        "a repeated delivery is identical"
    );

    let ended = json!({"message": {"type": "status-update", "status": "ended",
                                   "endedReason": "customer-did-not-answer", "call": call}});
    let updates = parse(&ended).unwrap();
    assert_eq!(updates[0].status, Some(CallStatus::Ended));
    assert_eq!(updates[0].disposition, Some(Disposition::NoAnswer));
    assert_eq!(
        updates[0].ended_reason.as_deref(),
        Some("customer-did-not-answer")
    );
    assert_eq!(updates[0].dedupe_key, "status:ended");

    let odd = json!({"message": {"type": "status-update", "status": "not-found", "call": call}});
    assert_eq!(parse(&odd).unwrap(), []);
}

#[test]
fn final_transcripts_become_one_segment_and_partials_are_ignored() {
    let call = json!({"id": "c-1", "startedAt": "2026-05-04T10:00:00.000Z"});
    let final_line = json!({"message": {"type": "transcript", "role": "user", "transcriptType": "final",
                                        "transcript": "Ja, nächste Woche passt.", "timestamp": 1777888812500_i64,
                                        "call": call}});
    let updates = parse(&final_line).unwrap();
    assert_eq!(updates.len(), 1);
    let segment = &updates[0].segments[0];
    assert_eq!(segment.role, SpeakerRole::Customer);
    assert_eq!(segment.text, "Ja, nächste Woche passt.");
    assert_eq!(segment.offset_ms, Some(12_500));
    assert_eq!(segment.position, None);
    assert!(updates[0].dedupe_key.starts_with("transcript:"));
    assert_eq!(
        parse(&final_line).unwrap()[0].dedupe_key,
        updates[0].dedupe_key
    );

    let mut agent_line = final_line.clone();
    agent_line["message"]["role"] = json!("assistant");
    let agent = parse(&agent_line).unwrap();
    assert_eq!(agent[0].segments[0].role, SpeakerRole::Agent);
    assert_ne!(agent[0].dedupe_key, updates[0].dedupe_key);

    let mut partial = final_line.clone();
    partial["message"]["transcriptType"] = json!("partial");
    assert_eq!(parse(&partial).unwrap(), []);

    let mut huge = final_line;
    huge["message"]["transcript"] = json!("ž".repeat(50_000));
    let updates = parse(&huge).unwrap();
    assert_eq!(updates[0].segments[0].text.chars().count(), 10_000);
}

#[test]
fn the_end_of_call_report_is_the_full_final_update() {
    let crm_call_id = crm_domain::CallId::new().to_string();
    let call = ended_call(&crm_call_id);
    let report = json!({"message": {
        "type": "end-of-call-report",
        "timestamp": 1777888935000_i64,
        "endedReason": "voicemail",
        "startedAt": "2026-05-04T10:00:00.000Z",
        "endedAt": "2026-05-04T10:00:42.250Z",
        "cost": 0.08,
        "analysis": {"summary": "Reached the mailbox."},
        "artifact": call["artifact"].clone(),
        "call": call,
    }});
    let updates = parse(&report).unwrap();
    assert_eq!(updates.len(), 1);
    let update = &updates[0];
    assert_eq!(update.event, "end-of-call-report");
    assert_eq!(update.dedupe_key, "end-of-call-report");
    assert_eq!(update.call_id.map(|id| id.to_string()), Some(crm_call_id));
    assert_eq!(update.status, Some(CallStatus::Ended));
    assert_eq!(update.disposition, Some(Disposition::Voicemail));
    assert_eq!(update.duration_secs, Some(42.25));
    assert_eq!(update.cost_usd, Some(0.08));
    assert_eq!(update.summary.as_deref(), Some("Reached the mailbox."));
    assert_eq!(
        update.recording_url.as_deref(),
        Some("https://storage.vapi.ai/rec.wav")
    );
    assert_eq!(update.segments.len(), 2);
    assert_eq!(parse(&report).unwrap(), updates);
}

#[test]
fn unknown_messages_are_ignored_and_garbage_is_invalid() {
    for kind in [
        "conversation-update",
        "speech-update",
        "hang",
        "tool-calls",
        "brand-new-type",
    ] {
        let body = json!({"message": {"type": kind, "call": {"id": "c-1"}}});
        assert_eq!(parse(&body).unwrap(), [], "{kind}");
    }
    let vapi = webhook_vapi(WebhookAuth::Bearer, "authorization");
    for garbage in [
        &b"not json"[..],
        b"",
        b"[]",
        b"{}",
        b"{\"message\": 5}",
        b"{\"message\": {\"type\": \"status-update\", \"status\": \"ended\"}}",
        b"{\"message\": {\"call\": {\"id\": \"c-1\"}}}",
        &[0xff, 0xfe, 0x00],
    ] {
        assert!(
            matches!(vapi.parse_webhook(garbage), Err(WebhookError::Invalid(_))),
            "{:?}",
            String::from_utf8_lossy(garbage)
        );
    }
}
