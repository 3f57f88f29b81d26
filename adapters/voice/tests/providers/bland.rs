//! Bland against a fake `api.bland.ai` and with webhooks signed as Bland signs them
//! (PROVIDERS.md §3).

use crate::{
    Headers, delivery,
    fake::{Fake, Reply},
    headers, hmac_hex, install_crypto, sample_agent, sample_call, time,
};
use crm_domain::{
    CallDeletion, CallStatus, CallUpdate, Disposition, ProviderError, SpeakerRole, VoiceProvider,
    WebhookError,
};
use crm_voice::bland::{Bland, Config};
use serde_json::{Value, json};

const API_KEY: &str = "org_3f9a1b7c";
const WEBHOOK_SECRET: &str = "whsec_bland_5e2d";

fn bland(base_url: &str) -> Bland {
    bland_with(Config {
        base_url: base_url.to_owned(),
        api_key: Some(API_KEY.into()),
        webhook_secret: Some(WEBHOOK_SECRET.into()),
        ..Config::default()
    })
}

fn bland_with(config: Config) -> Bland {
    install_crypto();
    match Bland::new(&config) {
        Ok(bland) => bland,
        Err(error) => panic!("cannot build Bland: {error}"),
    }
}

/// A finished call as `GET /v1/calls/{id}` and the post-call webhook carry it.
fn completed_call(crm_call_id: &str) -> Value {
    json!({
        "call_id": "4c7f2a9e-1d3b-4e8a-9f6c-2b5d8e1a7c30",
        "c_id": "4c7f2a9e-1d3b-4e8a-9f6c-2b5d8e1a7c30",
        "to": "+4915112345678",
        "from": "+4930123456",
        "inbound": false,
        "status": "completed",
        "completed": true,
        "queue_status": "complete",
        "answered_by": "human",
        "call_ended_by": "USER",
        "created_at": "2026-05-04T09:59:55.000Z",
        "started_at": "2026-05-04T10:00:00.000Z",
        "end_at": "2026-05-04T10:30:00.000Z",
        "call_length": 2.0916667,
        "corrected_duration": "125",
        "price": 0.19,
        "metadata": {"crm_call_id": crm_call_id, "crm_customer_id": "x"},
        "request_data": {"first_name": "Amela"},
        "summary": "Interested; send pricing.",
        "disposition_tag": "Not Interested",
        "recording_url": "https://server.aws.dialpad.com/rec.mp3",
        "concatenated_transcript": "assistant: Guten Tag \n user: Hallo",
        "transcripts": [
            {"id": 1, "created_at": "2026-05-04T10:00:01.500Z", "text": "Guten Tag, hier ist Lena von Acme.", "user": "assistant"},
            {"id": 2, "created_at": "2026-05-04T10:00:04.000Z", "text": "Hallo, worum geht es?", "user": "user"},
            {"id": 3, "created_at": "2026-05-04T10:00:05.000Z", "text": "Transferring", "user": "agent-action"}
        ],
        "error_message": null
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn start_call_posts_the_documented_body_with_the_raw_key() {
    let fake = Fake::start(vec![Reply::json(
        200,
        json!({"status": "success", "message": "Call successfully queued.",
               "call_id": "4c7f2a9e-1d3b-4e8a-9f6c-2b5d8e1a7c30", "batch_id": null}),
    )])
    .await;
    let mut agent = sample_agent();
    agent.task = Some("You are Lena from Acme. Book a demo.".into());
    let call = sample_call(agent);

    let started = bland(&fake.base_url).start_call(&call).await.unwrap();

    assert_eq!(
        started.provider_call_id,
        "4c7f2a9e-1d3b-4e8a-9f6c-2b5d8e1a7c30"
    );
    assert_eq!(started.status, CallStatus::Dialing);
    let request = fake.only_request();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/calls");
    assert_eq!(
        request.header("authorization"),
        Some(API_KEY),
        "raw key, no Bearer"
    );
    assert_eq!(
        request.json(),
        json!({
            "phone_number": "+4915112345678",
            "task": "You are Lena from Acme. Book a demo.",
            "pathway_id": "agent-123",
            "first_sentence": "Guten Tag, hier ist Lena von Acme.",
            "language": "de",
            "from": "+4930123456",
            "request_data": crate::expected_variables(),
            "metadata": {
                "crm_call_id": call.call_id.to_string(),
                "crm_customer_id": call.customer_id.to_string(),
            },
            "webhook": "https://crm.example.com/webhooks/voice",
            "webhook_events": ["call"],
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn start_call_maps_error_bodies_refusals_and_failures() {
    let call = sample_call(sample_agent());

    let fake = Fake::start(vec![Reply::json(
        200,
        json!({"status": "error", "message": "Invalid phone number"}),
    )])
    .await;
    assert_eq!(
        bland(&fake.base_url).start_call(&call).await.unwrap_err(),
        ProviderError::Rejected {
            status: 200,
            message: "Invalid phone number".into()
        }
    );

    let fake = Fake::start(vec![Reply::json(
        401,
        json!({"data": null, "errors": [{"error": "AUTH_FAILURE", "message": "Invalid API key"}]}),
    )])
    .await;
    assert_eq!(
        bland(&fake.base_url).start_call(&call).await.unwrap_err(),
        ProviderError::Rejected {
            status: 401,
            message: "Invalid API key".into()
        }
    );

    let fake = Fake::start(vec![Reply::json(
        429,
        json!({"status": "error", "message": "Rate limit exceeded"}),
    )])
    .await;
    let error = bland(&fake.base_url).start_call(&call).await.unwrap_err();
    assert!(matches!(error, ProviderError::Unavailable(_)), "{error:?}");

    let fake = Fake::start(vec![Reply::json(
        500,
        json!({"status": "error", "message": "internal"}),
    )])
    .await;
    let error = bland(&fake.base_url).start_call(&call).await.unwrap_err();
    assert!(matches!(error, ProviderError::Unknown(_)), "{error:?}");
    assert_eq!(fake.requests().len(), 1, "a create is never retried");

    let fake = Fake::start(vec![
        Reply::json(200, json!({"status": "success", "call_id": "late"}))
            .after(std::time::Duration::from_secs(3)),
    ])
    .await;
    let slow = bland_with(Config {
        base_url: fake.base_url.clone(),
        api_key: Some(API_KEY.into()),
        timeout_secs: 1,
        ..Config::default()
    });
    let error = slow.start_call(&call).await.unwrap_err();
    assert!(matches!(error, ProviderError::Unknown(_)), "{error:?}");

    let mut no_agent = call.clone();
    no_agent.agent.provider_agent_id = None;
    no_agent.agent.task = None;
    let error = bland(&fake.base_url)
        .start_call(&no_agent)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProviderError::Rejected { status: 400, .. }),
        "{error:?}"
    );
    assert_eq!(
        fake.requests().len(),
        1,
        "nothing is sent without a task or pathway"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn get_call_converts_units_and_maps_the_status() {
    let crm_call_id = crm_domain::CallId::new().to_string();
    let fake = Fake::start(vec![Reply::json(200, completed_call(&crm_call_id))]).await;

    let update = bland(&fake.base_url)
        .get_call("4c7f2a9e-1d3b-4e8a-9f6c-2b5d8e1a7c30")
        .await
        .unwrap();

    let request = fake.only_request();
    assert_eq!(request.method, "GET");
    assert_eq!(
        request.path,
        "/v1/calls/4c7f2a9e-1d3b-4e8a-9f6c-2b5d8e1a7c30"
    );
    assert_eq!(request.header("authorization"), Some(API_KEY));
    assert_eq!(update.call_id.map(|id| id.to_string()), Some(crm_call_id));
    assert_eq!(update.status, Some(CallStatus::Ended));
    assert_eq!(update.disposition, Some(Disposition::Answered));
    assert_eq!(update.duration_secs, Some(125.0), "corrected_duration wins");
    assert_eq!(update.started_at, Some(time("2026-05-04T10:00:00Z")));
    assert_eq!(
        update.ended_at,
        Some(time("2026-05-04T10:02:05Z")),
        "not end_at"
    );
    assert_eq!(update.cost_usd, Some(0.19));
    assert_eq!(update.outcome.as_deref(), Some("not_interested"));
    assert_eq!(update.summary.as_deref(), Some("Interested; send pricing."));
    assert_eq!(
        update.recording_url.as_deref(),
        Some("https://server.aws.dialpad.com/rec.mp3")
    );
    let segments: Vec<_> = update
        .segments
        .iter()
        .map(|s| (s.position, s.role, s.offset_ms))
        .collect();
    assert_eq!(
        segments,
        [
            (Some(0), SpeakerRole::Agent, Some(1500)),
            (Some(1), SpeakerRole::Customer, Some(4000)),
            (Some(2), SpeakerRole::System, Some(5000)),
        ]
    );

    // Minutes only, answered by a mailbox.
    let mut voicemail = completed_call("x");
    voicemail["corrected_duration"] = Value::Null;
    voicemail["call_length"] = json!(2.5);
    voicemail["answered_by"] = json!("voicemail");
    let fake = Fake::start(vec![Reply::json(200, voicemail)]).await;
    let update = bland(&fake.base_url).get_call("c-1").await.unwrap();
    assert_eq!(update.duration_secs, Some(150.0));
    assert_eq!(update.disposition, Some(Disposition::Voicemail));

    // Still running.
    let live = json!({"call_id": "c-1", "status": "unknown", "completed": false, "queue_status": "started"});
    let fake = Fake::start(vec![Reply::json(200, live)]).await;
    let update = bland(&fake.base_url).get_call("c-1").await.unwrap();
    assert_eq!(update.status, Some(CallStatus::InProgress));
    assert_eq!(update.disposition, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_call_retries_server_errors_and_stop_posts_to_stop() {
    let fake = Fake::start(vec![Reply::raw(502, "Bad Gateway")]).await;
    let error = bland(&fake.base_url).get_call("c-1").await.unwrap_err();
    assert!(matches!(error, ProviderError::Unavailable(_)), "{error:?}");
    assert_eq!(fake.requests().len(), 3, "one request and two retries");

    let fake = Fake::start(vec![Reply::json(
        200,
        json!({"status": "error", "message": "Call not found"}),
    )])
    .await;
    let error = bland(&fake.base_url).get_call("c-1").await.unwrap_err();
    assert!(matches!(error, ProviderError::Rejected { .. }), "{error:?}");

    let fake = Fake::start(vec![Reply::json(
        200,
        json!({"status": "success", "message": "Call ended successfully."}),
    )])
    .await;
    bland(&fake.base_url).stop_call("c-1").await.unwrap();
    let request = fake.only_request();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/calls/c-1/stop");
    assert_eq!(request.header("authorization"), Some(API_KEY));

    let fake = Fake::start(vec![Reply::json(
        200,
        json!({"status": "error", "message": "Call is not active"}),
    )])
    .await;
    let error = bland(&fake.base_url).stop_call("c-1").await.unwrap_err();
    assert!(matches!(error, ProviderError::Rejected { .. }), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_call_is_unsupported_without_a_request() {
    // PROVIDERS.md §3.3 documents no endpoint that deletes a Bland call's data.
    let fake = Fake::start(vec![Reply::json(200, json!({"status": "success"}))]).await;
    let deletion = bland(&fake.base_url).delete_call("c-1").await.unwrap();
    assert_eq!(deletion, CallDeletion::Unsupported);
    assert!(fake.requests().is_empty());
}

#[test]
fn webhooks_are_verified_over_the_raw_body() {
    let bland = bland("https://api.bland.ai");
    let body = completed_call("x").to_string();
    let body = body.as_bytes();
    let now = time("2026-05-04T10:00:00Z");
    let signature = hmac_hex(WEBHOOK_SECRET.as_bytes(), &[body]);

    let valid = headers(&[("x-webhook-signature", &signature)]);
    assert_eq!(bland.verify_webhook(&delivery(&valid, body, now)), Ok(()));
    let upper = headers(&[("x-webhook-signature", &signature.to_uppercase())]);
    assert_eq!(bland.verify_webhook(&delivery(&upper, body, now)), Ok(()));

    let mut tampered = body.to_vec();
    if let Some(byte) = tampered.iter_mut().find(|b| **b == b'5') {
        *byte = b'6';
    }
    let wrong_secret = hmac_hex(b"whsec_other", &[body]);
    let cases: Vec<(Headers, &[u8])> = vec![
        (valid.clone(), &tampered),
        (headers(&[("x-webhook-signature", &wrong_secret)]), body),
        (headers(&[]), body),
        (headers(&[("x-webhook-signature", "not-hex")]), body),
    ];
    for (headers, body) in cases {
        assert!(
            matches!(
                bland.verify_webhook(&delivery(&headers, body, now)),
                Err(WebhookError::Unauthenticated(_))
            ),
            "{headers:?}"
        );
    }

    let unconfigured = bland_with(Config {
        api_key: Some(API_KEY.into()),
        ..Config::default()
    });
    assert!(matches!(
        unconfigured.verify_webhook(&delivery(&valid, body, now)),
        Err(WebhookError::Unauthenticated(_))
    ));
}

fn parse(body: &Value) -> Result<Vec<CallUpdate>, WebhookError> {
    bland("https://api.bland.ai").parse_webhook(body.to_string().as_bytes())
}

fn one(body: &Value) -> CallUpdate {
    match parse(body) {
        Ok(mut updates) if updates.len() == 1 => updates.remove(0),
        other => panic!("expected one update, got {other:?}"),
    }
}

#[test]
fn post_call_webhooks_are_final_updates() {
    let crm_call_id = crm_domain::CallId::new();
    let body = completed_call(&crm_call_id.to_string());
    let update = one(&body);
    assert_eq!(update.event, "post-call");
    assert_eq!(update.dedupe_key, "post-call");
    assert_eq!(update.call_id, Some(crm_call_id));
    assert_eq!(update.status, Some(CallStatus::Ended));
    assert_eq!(update.disposition, Some(Disposition::Answered));
    assert_eq!(
        update.transcript.as_deref(),
        Some("assistant: Guten Tag \n user: Hallo")
    );
    assert_eq!(one(&body), update, "a repeated delivery is identical");

    let mut enriched = body.clone();
    enriched["corrected_transcript"] = json!([
        {"start": 0.5, "end": 2.1, "speaker": 0, "speaker_label": "assistant", "text": "Guten Tag.", "confidence": 0.98},
        {"start": 3.25, "end": 4.0, "speaker": 1, "speaker_label": "user", "text": "Hallo.", "confidence": 0.95}
    ]);
    enriched["citations"] = json!([]);
    let update = one(&enriched);
    assert_eq!(update.dedupe_key, "post-call:enriched");
    let segments: Vec<_> = update
        .segments
        .iter()
        .map(|s| (s.role, s.text.as_str(), s.offset_ms))
        .collect();
    assert_eq!(
        segments,
        [
            (SpeakerRole::Agent, "Guten Tag.", Some(500)),
            (SpeakerRole::Customer, "Hallo.", Some(3250)),
        ]
    );

    let busy = json!({"call_id": "c-2", "status": "busy", "completed": false, "answered_by": null,
                      "error_message": "Call failed. The number you dialed is busy."});
    let update = one(&busy);
    assert_eq!(update.disposition, Some(Disposition::Busy));
    assert_eq!(
        update.ended_reason.as_deref(),
        Some("Call failed. The number you dialed is busy.")
    );
    let no_answer = json!({"call_id": "c-3", "status": "no-answer", "completed": false});
    assert_eq!(one(&no_answer).disposition, Some(Disposition::NoAnswer));
    let canceled = json!({"call_id": "c-4", "status": "canceled", "completed": false});
    assert_eq!(one(&canceled).disposition, Some(Disposition::Canceled));
    let failed = json!({"call_id": "c-5", "status": "failed", "completed": false});
    assert_eq!(one(&failed).disposition, Some(Disposition::Failed));
}

#[test]
fn live_log_events_become_segments_or_are_ignored() {
    let log = |message: &str| json!({"call_id": "c-1", "message": message, "category": "call", "log_level": "info"});

    let agent = one(&log("Agent speech: Guten Tag, hier ist Lena."));
    assert_eq!(agent.event, "call-log");
    assert_eq!(agent.segments[0].role, SpeakerRole::Agent);
    assert_eq!(agent.segments[0].text, "Guten Tag, hier ist Lena.");
    assert_eq!(
        one(&log("Agent speech: Guten Tag, hier ist Lena.")).dedupe_key,
        agent.dedupe_key
    );

    let user = one(&log("Handling user speech: Hallo?"));
    assert_eq!(user.segments[0].role, SpeakerRole::Customer);
    assert_eq!(user.segments[0].text, "Hallo?");
    assert_ne!(user.dedupe_key, agent.dedupe_key);
    assert_eq!(
        one(&log("User speech: Ja.")).segments[0].role,
        SpeakerRole::Customer
    );

    let connected = one(&log("Call connected"));
    assert_eq!(connected.status, Some(CallStatus::InProgress));
    assert!(connected.segments.is_empty());

    assert_eq!(parse(&log("Latency: 812ms")).unwrap(), []);
    assert_eq!(parse(&log("Agent speech:   ")).unwrap(), []);
    assert_eq!(
        parse(&json!({"call_id": "c-1", "event_type": "citations"})).unwrap(),
        []
    );
}

#[test]
fn garbage_and_missing_call_ids_are_invalid() {
    let bland = bland("https://api.bland.ai");
    for garbage in [
        &b"<xml/>"[..],
        b"\"text\"",
        b"{\"status\": \"completed\"}",
        b"{\"message\": \"Agent speech: hi\", \"category\": \"call\"}",
        b"{\"call_id\": 42.5e999}",
    ] {
        assert!(
            matches!(bland.parse_webhook(garbage), Err(WebhookError::Invalid(_))),
            "{:?}",
            String::from_utf8_lossy(garbage)
        );
    }
}
