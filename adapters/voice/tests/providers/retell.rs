//! Retell against a fake `api.retellai.com` and with webhooks signed as Retell signs them
//! (PROVIDERS.md §2).

use crate::{
    Headers, closed_port_url, delivery,
    fake::{Fake, Reply},
    headers, hmac_hex, install_crypto, sample_agent, sample_call, time,
};
use chrono::{DateTime, Duration, Utc};
use crm_domain::{
    CallDeletion, CallStatus, CallUpdate, Disposition, ProviderError, Sentiment, SpeakerRole,
    VoiceProvider, WebhookError,
};
use crm_voice::retell::{Config, Retell};
use serde_json::{Value, json};

const API_KEY: &str = "key_6b1c2a9f0d";

fn retell(base_url: &str) -> Retell {
    retell_with(Config {
        base_url: base_url.to_owned(),
        api_key: Some(API_KEY.into()),
        ..Config::default()
    })
}

fn retell_with(config: Config) -> Retell {
    install_crypto();
    match Retell::new(&config) {
        Ok(retell) => retell,
        Err(error) => panic!("cannot build Retell: {error}"),
    }
}

/// A finished call object as `GET /v2/get-call/{id}` and `call_ended` carry it.
fn ended_call(crm_call_id: &str) -> Value {
    json!({
        "call_id": "Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6",
        "call_type": "phone_call",
        "agent_id": "agent-123",
        "call_status": "ended",
        "direction": "outbound",
        "from_number": "+4930123456",
        "to_number": "+4915112345678",
        "metadata": {"crm_call_id": crm_call_id, "crm_customer_id": "x"},
        "retell_llm_dynamic_variables": {"first_name": "Amela"},
        "start_timestamp": 1777888800000_i64,
        "end_timestamp": 1777888925500_i64,
        "duration_ms": 125500,
        "disconnection_reason": "user_hangup",
        "transcript": "Agent: Guten Tag\nUser: Hallo",
        "transcript_object": [
            {"role": "agent", "content": "Guten Tag, hier ist Lena von Acme.",
             "words": [{"word": "Guten", "start": 0.64, "end": 0.9}, {"word": "Tag", "start": 0.9, "end": 1.1}]},
            {"role": "user", "content": "Hallo, worum geht es?",
             "words": [{"word": "Hallo", "start": 4.2, "end": 4.6}]},
            {"role": "transfer_target", "content": "Vertrieb, guten Tag.", "words": []}
        ],
        "recording_url": "https://dxc03zgurdly9.cloudfront.net/rec.wav",
        "public_log_url": "https://dxc03zgurdly9.cloudfront.net/log.txt",
        "call_cost": {
            "product_costs": [{"product": "elevenlabs_tts", "unit_price": 0.1167, "cost": 14.6}],
            "total_duration_seconds": 126,
            "total_duration_unit_price": 0.56,
            "combined_cost": 70.5
        },
        "telephony_identifier": {"twilio_call_sid": "CA123"}
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn start_call_posts_the_documented_body() {
    let fake = Fake::start(vec![Reply::json(
        201,
        json!({"call_id": "Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6", "call_type": "phone_call",
               "call_status": "registered", "agent_id": "agent-123", "direction": "outbound",
               "from_number": "+4930123456", "to_number": "+4915112345678"}),
    )])
    .await;
    let call = sample_call(sample_agent());

    let started = retell(&fake.base_url).start_call(&call).await.unwrap();

    assert_eq!(started.provider_call_id, "Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6");
    assert_eq!(started.status, CallStatus::Dialing);
    let request = fake.only_request();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v2/create-phone-call");
    assert_eq!(
        request.header("authorization"),
        Some("Bearer key_6b1c2a9f0d")
    );
    assert_eq!(
        request.json(),
        json!({
            "from_number": "+4930123456",
            "to_number": "+4915112345678",
            "override_agent_id": "agent-123",
            "metadata": {
                "crm_call_id": call.call_id.to_string(),
                "crm_customer_id": call.customer_id.to_string(),
            },
            "retell_llm_dynamic_variables": crate::expected_variables(),
            "agent_override": {
                "agent": {
                    "language": "de-DE",
                    "webhook_url": "https://crm.example.com/webhooks/voice",
                    "webhook_events":
                        ["call_started", "call_ended", "call_analyzed", "transcript_updated"],
                },
                "retell_llm": {"begin_message": "Guten Tag, hier ist Lena von Acme."},
            },
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn start_call_without_overrides_sends_only_the_live_transcript_opt_in() {
    let fake = Fake::start(vec![Reply::json(
        201,
        json!({"call_id": "c-2", "call_status": "registered"}),
    )])
    .await;
    let mut call = sample_call(sample_agent());
    call.agent.language = "bs".into();
    call.agent.first_message = None;
    call.webhook_url = None;
    retell(&fake.base_url).start_call(&call).await.unwrap();
    let body = fake.only_request().json();
    assert_eq!(
        body["agent_override"],
        json!({ "agent": { "webhook_events":
            ["call_started", "call_ended", "call_analyzed", "transcript_updated"] } }),
        "no language, webhook URL or opening line of ours: {body}"
    );

    call.agent.from_number = None;
    let error = retell(&fake.base_url).start_call(&call).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::Rejected { status: 400, .. }),
        "{error:?}"
    );
    assert_eq!(
        fake.requests().len(),
        1,
        "nothing is sent without a from number"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn start_call_maps_refusals_server_errors_and_timeouts() {
    let call = sample_call(sample_agent());

    let fake = Fake::start(vec![Reply::json(
        422,
        json!({"error_message": "x", "message": "to_number is invalid"}),
    )])
    .await;
    let error = retell(&fake.base_url).start_call(&call).await.unwrap_err();
    assert_eq!(
        error,
        ProviderError::Rejected {
            status: 422,
            message: "to_number is invalid".into()
        }
    );

    let fake = Fake::start(vec![Reply::json(500, json!({"message": "internal"}))]).await;
    let error = retell(&fake.base_url).start_call(&call).await.unwrap_err();
    assert!(matches!(error, ProviderError::Unknown(_)), "{error:?}");
    assert_eq!(fake.requests().len(), 1, "a create is never retried");

    let fake = Fake::start(vec![
        Reply::json(201, json!({"call_id": "late"})).after(std::time::Duration::from_secs(3)),
    ])
    .await;
    let slow = retell_with(Config {
        base_url: fake.base_url.clone(),
        api_key: Some(API_KEY.into()),
        timeout_secs: 1,
        ..Config::default()
    });
    let error = slow.start_call(&call).await.unwrap_err();
    assert!(matches!(error, ProviderError::Unknown(_)), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn get_call_converts_milliseconds_and_cents() {
    let crm_call_id = crm_domain::CallId::new().to_string();
    let mut call = ended_call(&crm_call_id);
    call["call_analysis"] = json!({
        "call_summary": "Demo booked for Tuesday.",
        "in_voicemail": false,
        "user_sentiment": "Positive",
        "call_successful": true,
        "custom_analysis_data": {"outcome": "Appointment"}
    });
    let fake = Fake::start(vec![Reply::json(200, call)]).await;

    let update = retell(&fake.base_url)
        .get_call("Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6")
        .await
        .unwrap();

    let request = fake.only_request();
    assert_eq!(request.method, "GET");
    assert_eq!(
        request.path,
        "/v2/get-call/Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6"
    );
    assert_eq!(
        request.header("authorization"),
        Some("Bearer key_6b1c2a9f0d")
    );
    assert_eq!(update.call_id.map(|id| id.to_string()), Some(crm_call_id));
    assert_eq!(update.status, Some(CallStatus::Ended));
    assert_eq!(update.disposition, Some(Disposition::Answered));
    assert_eq!(update.ended_reason.as_deref(), Some("user_hangup"));
    assert_eq!(update.duration_secs, Some(125.5));
    assert_eq!(update.cost_usd, Some(0.705));
    assert_eq!(update.started_at, Some(time("2026-05-04T10:00:00Z")));
    assert_eq!(update.ended_at, Some(time("2026-05-04T10:02:05.500Z")));
    assert_eq!(update.summary.as_deref(), Some("Demo booked for Tuesday."));
    assert_eq!(update.sentiment, Some(Sentiment::Positive));
    assert_eq!(update.outcome.as_deref(), Some("appointment"));
    assert_eq!(
        update.recording_url.as_deref(),
        Some("https://dxc03zgurdly9.cloudfront.net/rec.wav")
    );
    let segments: Vec<_> = update
        .segments
        .iter()
        .map(|s| (s.position, s.role, s.offset_ms))
        .collect();
    assert_eq!(
        segments,
        [
            (Some(0), SpeakerRole::Agent, Some(640)),
            (Some(1), SpeakerRole::Customer, Some(4200)),
            (Some(2), SpeakerRole::System, None),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn get_call_retries_server_errors_then_reports_unavailable() {
    let fake = Fake::start(vec![Reply::json(500, json!({"message": "oops"}))]).await;
    let error = retell(&fake.base_url).get_call("c-1").await.unwrap_err();
    assert!(matches!(error, ProviderError::Unavailable(_)), "{error:?}");
    assert_eq!(fake.requests().len(), 3, "one request and two retries");

    let fake = Fake::start(vec![Reply::json(200, json!({"call_status": "ongoing"}))]).await;
    let error = retell(&fake.base_url).get_call("c-1").await.unwrap_err();
    assert!(matches!(error, ProviderError::Malformed(_)), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_call_posts_to_stop_call_and_is_retried() {
    let fake = Fake::start(vec![Reply::raw(503, ""), Reply::raw(204, "")]).await;
    retell(&fake.base_url).stop_call("c/1").await.unwrap();
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].method, "POST");
    assert_eq!(requests[1].path, "/v2/stop-call/c%2F1");
    assert_eq!(
        requests[1].header("authorization"),
        Some("Bearer key_6b1c2a9f0d")
    );

    let fake = Fake::start(vec![Reply::json(404, json!({"message": "Call not found"}))]).await;
    let error = retell(&fake.base_url).stop_call("c-1").await.unwrap_err();
    assert!(
        matches!(error, ProviderError::Rejected { status: 404, .. }),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_call_sends_delete_to_delete_call_with_bearer_auth() {
    let fake = Fake::start(vec![Reply::raw(204, "")]).await;

    let deletion = retell(&fake.base_url)
        .delete_call("Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6")
        .await
        .unwrap();

    assert_eq!(deletion, CallDeletion::Deleted);
    let request = fake.only_request();
    assert_eq!(request.method, "DELETE");
    assert_eq!(
        request.path,
        "/v2/delete-call/Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6"
    );
    assert_eq!(request.query, None);
    assert_eq!(
        request.header("authorization"),
        Some("Bearer key_6b1c2a9f0d")
    );
    assert!(request.body.is_empty(), "a delete sends no body");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_call_maps_not_found_refusals_and_server_errors() {
    let fake = Fake::start(vec![Reply::json(404, json!({"message": "Call not found"}))]).await;
    let deletion = retell(&fake.base_url).delete_call("gone").await.unwrap();
    assert_eq!(deletion, CallDeletion::NotFound);
    assert_eq!(fake.requests().len(), 1);

    let fake = Fake::start(vec![Reply::json(
        400,
        json!({"message": "call_id is invalid"}),
    )])
    .await;
    let error = retell(&fake.base_url).delete_call("c-1").await.unwrap_err();
    assert_eq!(
        error,
        ProviderError::Rejected {
            status: 400,
            message: "call_id is invalid".into()
        }
    );
    assert_eq!(fake.requests().len(), 1, "a refusal is not retried");

    let fake = Fake::start(vec![Reply::raw(503, "Service Unavailable")]).await;
    let error = retell(&fake.base_url).delete_call("c-1").await.unwrap_err();
    assert!(matches!(error, ProviderError::Unavailable(_)), "{error:?}");
    assert_eq!(fake.requests().len(), 3, "one request and two retries");
    assert!(fake.requests().iter().all(|r| r.method == "DELETE"));

    let fake = Fake::start(vec![Reply::raw(429, ""), Reply::json(200, json!({}))]).await;
    let deletion = retell(&fake.base_url).delete_call("c-1").await.unwrap();
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
    let slow = retell_with(Config {
        base_url: fake.base_url.clone(),
        api_key: Some(API_KEY.into()),
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

    let closed = retell(&closed_port_url().await);
    let error = closed.delete_call("c-1").await.unwrap_err();
    assert!(matches!(error, ProviderError::Unavailable(_)), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_call_keeps_an_odd_id_inside_its_path_segment() {
    let fake = Fake::start(vec![Reply::json(200, json!({}))]).await;
    let deletion = retell(&fake.base_url)
        .delete_call("../x?y#z")
        .await
        .unwrap();
    assert_eq!(deletion, CallDeletion::Deleted);
    let request = fake.only_request();
    assert_eq!(request.path, "/v2/delete-call/..%2Fx%3Fy%23z");
    assert_eq!(request.query, None);

    for id in ["", "  ", ".", ".."] {
        let error = retell(&fake.base_url).delete_call(id).await.unwrap_err();
        assert!(
            matches!(error, ProviderError::Rejected { status: 400, .. }),
            "{id:?}: {error:?}"
        );
    }
    assert_eq!(fake.requests().len(), 1, "refused ids send nothing");
}

/// Signs as Retell's SDKs do: `v=<ms>,d=hex(HMAC-SHA256(key, body + ms))`.
fn signature(key: &str, body: &[u8], at: DateTime<Utc>) -> String {
    let ms = at.timestamp_millis().to_string();
    format!(
        "v={ms},d={}",
        hmac_hex(key.as_bytes(), &[body, ms.as_bytes()])
    )
}

#[test]
fn webhooks_are_verified_over_raw_body_and_timestamp() {
    let retell = retell("https://api.retellai.com");
    let body = br#"{"event":"call_started","call":{"call_id":"c-1","call_status":"ongoing"}}"#;
    let now = time("2026-05-04T10:00:00Z");

    let valid = headers(&[("x-retell-signature", &signature(API_KEY, body, now))]);
    assert_eq!(retell.verify_webhook(&delivery(&valid, body, now)), Ok(()));
    assert_eq!(
        retell.verify_webhook(&delivery(&valid, body, now + Duration::seconds(299))),
        Ok(())
    );

    let tampered = br#"{"event":"call_started","call":{"call_id":"c-2","call_status":"ongoing"}}"#;
    let cases: Vec<(Headers, &[u8], DateTime<Utc>)> = vec![
        (valid.clone(), tampered, now),
        (valid.clone(), body, now + Duration::seconds(301)),
        (valid.clone(), body, now - Duration::seconds(301)),
        (
            headers(&[("x-retell-signature", &signature("key_other", body, now))]),
            body,
            now,
        ),
        (headers(&[]), body, now),
        (headers(&[("x-retell-signature", "garbage")]), body, now),
        (headers(&[("x-retell-signature", "v=abc,d=00")]), body, now),
        (
            headers(&[("x-retell-signature", "v=1777888800000,d=xyz")]),
            body,
            now,
        ),
    ];
    for (headers, body, received_at) in cases {
        assert!(
            matches!(
                retell.verify_webhook(&delivery(&headers, body, received_at)),
                Err(WebhookError::Unauthenticated(_))
            ),
            "{headers:?} at {received_at}"
        );
    }
}

fn parse(body: &Value) -> Result<Vec<CallUpdate>, WebhookError> {
    retell("https://api.retellai.com").parse_webhook(body.to_string().as_bytes())
}

fn one(body: &Value) -> CallUpdate {
    match parse(body) {
        Ok(mut updates) if updates.len() == 1 => updates.remove(0),
        other => panic!("expected one update, got {other:?}"),
    }
}

#[test]
fn call_events_map_without_regressing() {
    let crm_call_id = crm_domain::CallId::new();
    let call = ended_call(&crm_call_id.to_string());

    let mut started_call = call.clone();
    started_call["call_status"] = json!("ongoing");
    let started = one(&json!({"event": "call_started", "call": started_call}));
    assert_eq!(started.status, Some(CallStatus::InProgress));
    assert_eq!(started.started_at, Some(time("2026-05-04T10:00:00Z")));
    assert_eq!(started.call_id, Some(crm_call_id));
    assert_eq!(started.dedupe_key, "call_started");
    assert_eq!(started.disposition, None);

    let ended_body = json!({"event": "call_ended", "call": call});
    let ended = one(&ended_body);
    assert_eq!(ended.dedupe_key, "call_ended");
    assert_eq!(ended.status, Some(CallStatus::Ended));
    assert_eq!(ended.disposition, Some(Disposition::Answered));
    assert_eq!(ended.duration_secs, Some(125.5));
    assert_eq!(ended.cost_usd, Some(0.705));
    assert_eq!(ended.segments.len(), 3);
    assert_eq!(one(&ended_body), ended, "a repeated delivery is identical");

    let mut analyzed_call = call.clone();
    analyzed_call["call_analysis"] = json!({"call_summary": "Left a message.", "in_voicemail": true,
                                            "user_sentiment": "Unknown", "call_successful": false});
    let analyzed = one(&json!({"event": "call_analyzed", "call": analyzed_call}));
    assert_eq!(analyzed.dedupe_key, "call_analyzed");
    assert_eq!(analyzed.status, Some(CallStatus::Ended));
    assert_eq!(analyzed.disposition, Some(Disposition::Voicemail));
    assert_eq!(analyzed.summary.as_deref(), Some("Left a message."));
    assert_eq!(analyzed.sentiment, None);
    assert_eq!(analyzed.duration_secs, ended.duration_secs);
    assert_eq!(analyzed.segments, ended.segments);

    let not_connected = json!({"event": "call_ended", "call": {
        "call_id": "c-9", "call_status": "not_connected", "disconnection_reason": "dial_no_answer"}});
    let update = one(&not_connected);
    assert_eq!(update.disposition, Some(Disposition::NoAnswer));
    assert_eq!(update.started_at, None);
    let errored =
        json!({"event": "call_ended", "call": {"call_id": "c-9", "call_status": "error"}});
    assert_eq!(one(&errored).disposition, Some(Disposition::Failed));
}

#[test]
fn transcript_updates_number_their_utterances() {
    let call = ended_call(&crm_domain::CallId::new().to_string());
    let body = json!({"event": "transcript_updated", "call": call});
    let update = one(&body);
    assert_eq!(update.status, None);
    let positions: Vec<_> = update.segments.iter().map(|s| s.position).collect();
    assert_eq!(positions, [Some(0), Some(1), Some(2)]);
    assert!(
        update.dedupe_key.starts_with("transcript_updated:3:"),
        "{}",
        update.dedupe_key
    );
    assert_eq!(one(&body).dedupe_key, update.dedupe_key);

    let mut longer = body.clone();
    longer["call"]["transcript_object"][2]["content"] =
        json!("Vertrieb, guten Tag. Wie kann ich helfen?");
    assert_ne!(one(&longer).dedupe_key, update.dedupe_key);
}

#[test]
fn unknown_events_are_ignored_and_garbage_is_invalid() {
    for event in ["transfer_started", "transfer_bridged", "call_flagged"] {
        let body = json!({"event": event, "call": {"call_id": "c-1"}});
        assert_eq!(parse(&body).unwrap(), [], "{event}");
    }
    let retell = retell("https://api.retellai.com");
    for garbage in [
        &b"{"[..],
        b"null",
        b"{\"event\": \"call_ended\"}",
        b"{\"event\": \"call_ended\", \"call\": {}}",
        b"{\"event\": \"call_ended\", \"call\": \"c-1\"}",
        b"{\"call\": {\"call_id\": \"c-1\"}}",
    ] {
        assert!(
            matches!(retell.parse_webhook(garbage), Err(WebhookError::Invalid(_))),
            "{:?}",
            String::from_utf8_lossy(garbage)
        );
    }
    let mut huge = ended_call("x");
    huge["transcript"] = json!("a".repeat(300_000));
    let update = one(&json!({"event": "call_ended", "call": huge}));
    assert_eq!(update.transcript.map(|t| t.len()), Some(200_000));
}
