//! The real voice providers end to end through the server. Each provider's HTTP API is a local
//! fake (axum on 127.0.0.1:0, recording every request) configured as the provider's `base_url`;
//! a call is started through GraphQL, placed by the `voice-dial` job, and then driven by
//! webhooks signed exactly as Retell, Vapi and Bland sign them — the signatures are computed
//! here with hmac/sha2, independently of the adapters (PROVIDERS.md §1.7, §2.7, §3.5).

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
};
use chrono::Duration;
use crm_api::{Config, config::VoiceAgentConfig};
use crm_domain::Clock as _;
use crm_tests::{TestApp, TestBackend, on_both_backends};
use crm_voice::vapi::WebhookAuth;
use hmac::{Hmac, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

on_both_backends!(
    retell_places_the_call_and_signed_events_drive_it_to_the_end,
    retell_events_out_of_order_never_move_a_call_back,
    retell_webhooks_are_verified_before_anything_is_read,
    retell_rejecting_the_call_fails_it_for_good,
    retell_server_error_on_create_is_never_retried,
    retell_unavailable_is_retried_a_minute_later,
    vapi_places_the_call_and_bearer_authenticated_messages_drive_it,
    vapi_hmac_credential_signs_the_timestamp_and_the_body,
    vapi_rejecting_the_call_fails_it,
    bland_places_the_call_and_signed_webhooks_drive_it,
    bland_refusal_inside_a_success_answer_fails_the_call,
    retell_event_before_the_create_answer_still_places_and_logs_the_call,
    vapi_live_transcript_and_the_final_report_store_each_utterance_once,
    bland_live_speech_and_the_post_call_transcript_store_each_utterance_once,
    retell_utterance_growing_while_spoken_is_corrected_in_place,
    retell_voicemail_found_by_the_analysis_reopens_the_entry_for_a_retry,
    retell_call_failed_as_unknown_then_reported_by_retell_is_logged,
    retell_enormous_transcript_is_capped_or_refused_never_a_panic,
    erasing_a_customer_asks_retell_to_delete_their_call,
    vapi_messages_out_of_order_never_move_a_call_back,
    bland_webhooks_out_of_order_never_move_a_call_back,
    a_vapi_call_whose_report_never_arrives_is_reconciled_with_get_call,
    a_webhook_into_one_replica_reaches_subscribers_on_another,
    an_agent_with_a_regional_locale_serves_its_language,
    a_call_under_way_is_stopped_at_the_provider_and_stays_canceled,
    a_webhook_while_the_database_is_away_is_refused_and_applied_when_sent_again,
);

// ---------------------------------------------------------------------------------------------
// The fake provider.

/// A request the fake provider received.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Debug, Clone)]
struct FakeState {
    /// The create-call path; every other request is answered 404.
    create_path: &'static str,
    received: Arc<Mutex<Vec<Received>>>,
    /// The answers to create requests, in turn; the last one repeats.
    answers: Arc<Mutex<VecDeque<(u16, Value)>>>,
    /// Deliveries the fake posts, in order, before it answers the next create: a webhook
    /// that beats the provider's own answer to the create.
    early: Arc<Mutex<Vec<Early>>>,
    /// The app's answers to those deliveries: status and JSON (null when there is none).
    early_answers: Arc<Mutex<Vec<(u16, Value)>>>,
    /// The answers to GET requests (a call looked up), in turn; the last one repeats. None:
    /// 404.
    gets: Arc<Mutex<VecDeque<(u16, Value)>>>,
}

/// A delivery the fake provider posts before answering a create.
#[derive(Debug, Clone)]
struct Early {
    url: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// A provider's HTTP API on 127.0.0.1: answers create-call requests as scripted and records
/// every request it receives.
#[derive(Debug)]
struct FakeProvider {
    url: String,
    state: FakeState,
}

impl FakeProvider {
    async fn start(create_path: &'static str, answers: Vec<(u16, Value)>) -> Self {
        assert!(!answers.is_empty());
        let state = FakeState {
            create_path,
            received: Arc::default(),
            answers: Arc::new(Mutex::new(answers.into())),
            early: Arc::default(),
            early_answers: Arc::default(),
            gets: Arc::default(),
        };
        let router = Router::new()
            .fallback(fake_answer)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { url, state }
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// The create requests received so far.
    fn creates(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path == self.state.create_path)
            .collect()
    }

    /// Before it answers the next create, the fake posts `body` with `headers` to `url` and
    /// waits for the answer (see [`FakeProvider::early_answers`]).
    fn post_before_answering(&self, url: String, headers: &[(&str, &str)], body: String) {
        self.state.early.lock().unwrap().push(Early {
            url,
            headers: headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            body,
        });
    }

    /// Answers GET requests with `answers`, in turn (the last one repeats).
    fn answer_gets(&self, answers: Vec<(u16, Value)>) {
        *self.state.gets.lock().unwrap() = answers.into();
    }

    /// The GET requests received so far.
    fn gets(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.method == "GET")
            .collect()
    }

    /// The app's answers to the deliveries posted before a create was answered.
    fn early_answers(&self) -> Vec<(u16, Value)> {
        self.state.early_answers.lock().unwrap().clone()
    }
}

/// Retell's `POST /v2/stop-call/{id}` and Bland's `POST /v1/calls/{id}/stop`: accepted.
fn path_is_stop(uri: &Uri) -> bool {
    uri.path().starts_with("/v2/stop-call/") || uri.path().ends_with("/stop")
}

async fn fake_answer(
    State(state): State<FakeState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let path = uri.path().to_owned();
    let is_create = method == Method::POST && path == state.create_path;
    state.received.lock().unwrap().push(Received {
        method: method.to_string(),
        path,
        headers: headers
            .iter()
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    if method == Method::POST && path_is_stop(&uri) {
        return (StatusCode::NO_CONTENT, Json(Value::Null));
    }
    if method == Method::GET {
        let mut gets = state.gets.lock().unwrap();
        let answer = if gets.len() > 1 {
            gets.pop_front()
        } else {
            gets.front().cloned()
        };
        if let Some((status, body)) = answer {
            return (StatusCode::from_u16(status).unwrap(), Json(body));
        }
    }
    if !is_create {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "message": "no such route in the fake" })),
        );
    }
    let early = std::mem::take(&mut *state.early.lock().unwrap());
    for delivery in early {
        let mut request = reqwest::Client::new()
            .post(&delivery.url)
            .header("content-type", "application/json")
            .body(delivery.body);
        for (name, value) in &delivery.headers {
            request = request.header(name, value);
        }
        let answer = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                (status, serde_json::from_str(&text).unwrap_or(Value::Null))
            }
            Err(error) => (0, json!({ "error": error.to_string() })),
        };
        state.early_answers.lock().unwrap().push(answer);
    }
    let (status, body) = {
        let mut answers = state.answers.lock().unwrap();
        if answers.len() > 1 {
            answers.pop_front().unwrap()
        } else {
            answers.front().cloned().unwrap()
        }
    };
    (StatusCode::from_u16(status).unwrap(), Json(body))
}

// ---------------------------------------------------------------------------------------------
// The app, the lead and the call.

const PUBLIC_URL: &str = "https://crm.example.com";

const START: &str = "mutation($c: ID!) { startVoiceCall(customerId: $c) { \
    id status provider agent toNumber } }";

const CALL: &str = "query($id: ID!) { call(id: $id) { id status disposition outcome endedReason \
    reason attempt isFinal providerCallId durationSeconds costUsd summary sentiment transcript \
    recordingUrl dialedAt startedAt endedAt interactionId segments { seq role text offsetMs } } }";

const CALLS: &str = "query($c: ID) { calls(filter: {customerId: $c}) { nodes { \
    id attempt status disposition } } }";

const INTERACTIONS: &str = "query($id: ID!) { customer(id: $id) { interactions { \
    id kind direction outcome durationSeconds author } } }";

/// Makes `agent` the only (and default) voice agent. The lead chain stays out of the way: these
/// tests start their calls themselves, and an ended call's interaction must not route the lead
/// into another call.
fn only_agent(config: &mut Config, name: &str, agent: VoiceAgentConfig) {
    config.pipeline.start_on_create = false;
    config.pipeline.rescore_on_interaction = false;
    config.voice.public_url = PUBLIC_URL.to_owned();
    config.voice.agents = [(name.to_owned(), agent)].into();
    config.voice.default_agent = name.to_owned();
}

/// A lead that may be called now: consent, a German number (13:00 in Berlin on a Wednesday).
fn callable_lead() -> Value {
    json!({
        "name": "Jürgen Müller",
        "phone": "030 123456",
        "company": "Müller GmbH",
        "language": "de",
        "consentCall": true,
    })
}

/// Starts a call through GraphQL and returns its id (queued, nothing dialled yet).
async fn start_call(app: &TestApp, customer: &str, provider: &str, agent: &str) -> String {
    let data = app.graphql_ok(START, json!({ "c": customer })).await;
    let call = &data["startVoiceCall"];
    assert_eq!(call["status"], "QUEUED", "{call:#}");
    assert_eq!(call["provider"], provider);
    assert_eq!(call["agent"], agent);
    assert_eq!(call["toNumber"], "+4930123456");
    call["id"].as_str().unwrap().to_owned()
}

async fn call(app: &TestApp, id: &str) -> Value {
    app.graphql_ok(CALL, json!({ "id": id })).await["call"].clone()
}

/// `(seq, role, text, offsetMs)` of each segment.
fn segments(call: &Value) -> Vec<(i64, String, String, Option<i64>)> {
    call["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["seq"].as_i64().unwrap(),
                s["role"].as_str().unwrap().to_owned(),
                s["text"].as_str().unwrap().to_owned(),
                s["offsetMs"].as_i64(),
            )
        })
        .collect()
}

fn segment(seq: i64, role: &str, text: &str, offset_ms: i64) -> (i64, String, String, Option<i64>) {
    (seq, role.to_owned(), text.to_owned(), Some(offset_ms))
}

async fn calls_of(app: &TestApp, customer: &str) -> Vec<Value> {
    app.graphql_ok(CALLS, json!({ "c": customer })).await["calls"]["nodes"]
        .as_array()
        .unwrap()
        .clone()
}

async fn interactions_of(app: &TestApp, customer: &str) -> Vec<Value> {
    app.graphql_ok(INTERACTIONS, json!({ "id": customer }))
        .await["customer"]["interactions"]
        .as_array()
        .unwrap()
        .clone()
}

/// The one interaction of the customer: a logged outbound call, the call's interaction.
async fn the_call_interaction(app: &TestApp, customer: &str, call: &Value) -> Value {
    let interactions = interactions_of(app, customer).await;
    assert_eq!(interactions.len(), 1, "{interactions:#?}");
    let interaction = interactions[0].clone();
    assert_eq!(interaction["kind"], "CALL");
    assert_eq!(interaction["direction"], "OUTBOUND");
    assert_eq!(interaction["id"], call["interactionId"]);
    interaction
}

/// Posts a webhook body with `headers` to `/webhooks/voice/{provider}`; the status and the JSON
/// answer (null when there is none).
async fn deliver(
    app: &TestApp,
    provider: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut request = app
        .client
        .post(format!("{}/webhooks/voice/{provider}", app.url))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Lower-case hex of HMAC-SHA256 over the concatenated `parts`.
fn hmac_hex(key: &str, parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `target`'s fields plus `extra`'s (which win).
fn with(mut target: Value, extra: Value) -> Value {
    if let (Some(target), Value::Object(extra)) = (target.as_object_mut(), extra) {
        target.extend(extra);
    }
    target
}

// ---------------------------------------------------------------------------------------------
// Retell (PROVIDERS.md §2).

const RETELL_KEY: &str = "key_test_retell_webhook_badge";
const RETELL_CREATE: &str = "/v2/create-phone-call";
const RETELL_CALL: &str = "call_7c1e0e9d2b4f4a8e9f00";
const RETELL_AGENT: &str = "agent_retell_de_0001";

fn retell_config(config: &mut Config, base_url: &str) {
    config.voice.providers.retell.base_url = base_url.to_owned();
    config.voice.providers.retell.api_key = Some(RETELL_KEY.into());
    only_agent(
        config,
        "retell-de",
        VoiceAgentConfig {
            kind: "retell".into(),
            language: "de".into(),
            agent_id: RETELL_AGENT.into(),
            from_number: "+4930555000".into(),
            first_message: "Guten Tag, hier ist Anna.".into(),
            variables: [("product".to_owned(), "CRM".to_owned())].into(),
            ..VoiceAgentConfig::default()
        },
    );
}

/// Retell's answer to a create: the call object, `registered`.
fn retell_created() -> Value {
    json!({
        "call_id": RETELL_CALL,
        "call_type": "phone_call",
        "call_status": "registered",
        "agent_id": RETELL_AGENT,
        "direction": "outbound",
        "from_number": "+4930555000",
        "to_number": "+4930123456",
    })
}

/// A Retell call object of our call `id` with `fields`.
fn retell_call(id: &str, fields: Value) -> Value {
    with(
        json!({
            "call_id": RETELL_CALL,
            "call_type": "phone_call",
            "agent_id": RETELL_AGENT,
            "direction": "outbound",
            "from_number": "+4930555000",
            "to_number": "+4930123456",
            "metadata": { "crm_call_id": id },
        }),
        fields,
    )
}

/// One `transcript_object` item: words 0.3 s apart from `start_secs`.
fn utterance(role: &str, content: &str, start_secs: f64) -> Value {
    let words: Vec<Value> = content
        .split_whitespace()
        .enumerate()
        .map(|(i, word)| {
            let start = start_secs + 0.3 * i as f64;
            json!({ "word": word, "start": start, "end": start + 0.25 })
        })
        .collect();
    json!({ "role": role, "content": content, "words": words })
}

/// `x-retell-signature`: `v=<ms>,d=<hex HMAC-SHA256 of body ‖ ms, keyed with the API key>`.
fn retell_signature(key: &str, body: &str, at_ms: i64) -> String {
    let digest = hmac_hex(key, &[body.as_bytes(), at_ms.to_string().as_bytes()]);
    format!("v={at_ms},d={digest}")
}

fn retell_body(event: &str, call: Value) -> String {
    json!({ "event": event, "call": call }).to_string()
}

/// Posts a Retell event signed now (by the app's clock).
async fn retell_event(app: &TestApp, event: &str, call: Value) -> (u16, Value) {
    let body = retell_body(event, call);
    let signature = retell_signature(RETELL_KEY, &body, app.clock.now().timestamp_millis());
    deliver(app, "retell", &body, &[("x-retell-signature", &signature)]).await
}

/// A Retell call for a callable lead, placed: the fake, the app, the customer and the call.
async fn placed_retell_call(backend: TestBackend) -> (FakeProvider, TestApp, String, String) {
    let fake = FakeProvider::start(RETELL_CREATE, vec![(201, retell_created())]).await;
    let app = TestApp::spawn_with(backend, |c| retell_config(c, &fake.url)).await;
    let customer = app.create_customer(callable_lead()).await;
    let id = start_call(&app, &customer, "retell", "retell-de").await;
    app.run_jobs().await;
    assert_eq!(fake.creates().len(), 1);
    let placed = call(&app, &id).await;
    assert_eq!(placed["status"], "DIALING", "{placed:#}");
    assert_eq!(placed["providerCallId"], RETELL_CALL);
    (fake, app, customer, id)
}

const RETELL_TRANSCRIPT: &str = "Agent: Guten Tag, hier ist Anna.\nUser: Hallo, worum geht es?\n\
    Agent: Hätten Sie Interesse an einer kurzen Demo?\nUser: Ja, gerne.";

/// The fields of the ended call (`call_ended`; `call_analyzed` adds the analysis).
fn retell_ended_fields(t0_ms: i64) -> Value {
    json!({
        "call_status": "ended",
        "start_timestamp": t0_ms + 2_000,
        "end_timestamp": t0_ms + 44_500,
        "duration_ms": 42_500,
        "disconnection_reason": "user_hangup",
        "call_cost": { "combined_cost": 12.5, "product_costs": [], "total_duration_seconds": 43 },
        "recording_url": "https://dxc03zgurdly9.cloudfront.net/call_7c1e/recording.wav",
        "transcript": RETELL_TRANSCRIPT,
        "transcript_object": [
            utterance("agent", "Guten Tag, hier ist Anna.", 0.4),
            utterance("user", "Hallo, worum geht es?", 3.25),
            utterance("agent", "Hätten Sie Interesse an einer kurzen Demo?", 6.0),
            utterance("user", "Ja, gerne.", 9.1),
        ],
    })
}

async fn retell_places_the_call_and_signed_events_drive_it_to_the_end(backend: TestBackend) {
    let fake = FakeProvider::start(RETELL_CREATE, vec![(201, retell_created())]).await;
    let app = TestApp::spawn_with(backend, |c| retell_config(c, &fake.url)).await;
    let customer = app.create_customer(callable_lead()).await;
    let id = start_call(&app, &customer, "retell", "retell-de").await;
    assert!(
        fake.received().is_empty(),
        "nothing is dialled before the job runs"
    );

    // The dial job places exactly one call, as Retell documents the request.
    app.run_jobs().await;
    let received = fake.received();
    assert_eq!(received.len(), 1, "{received:#?}");
    let create = &received[0];
    assert_eq!(create.method, "POST");
    assert_eq!(create.path, RETELL_CREATE);
    let bearer = format!("Bearer {RETELL_KEY}");
    assert_eq!(create.header("authorization"), Some(bearer.as_str()));
    assert!(
        create
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{create:#?}"
    );
    let body = &create.body;
    assert_eq!(body["from_number"], "+4930555000");
    assert_eq!(body["to_number"], "+4930123456");
    assert_eq!(body["override_agent_id"], RETELL_AGENT);
    assert_eq!(body["metadata"]["crm_call_id"], id.as_str());
    assert_eq!(body["metadata"]["crm_customer_id"], customer.as_str());
    let variables = &body["retell_llm_dynamic_variables"];
    assert_eq!(variables["name"], "Jürgen Müller");
    assert_eq!(variables["company"], "Müller GmbH");
    assert_eq!(variables["product"], "CRM");
    assert_eq!(body["agent_override"]["agent"]["language"], "de-DE");
    assert_eq!(
        body["agent_override"]["agent"]["webhook_url"],
        format!("{PUBLIC_URL}/webhooks/voice/retell")
    );
    assert_eq!(
        body["agent_override"]["retell_llm"]["begin_message"],
        "Guten Tag, hier ist Anna."
    );
    // The live transcript is opt-in at Retell.
    assert_eq!(
        body["agent_override"]["agent"]["webhook_events"],
        json!([
            "call_started",
            "call_ended",
            "call_analyzed",
            "transcript_updated"
        ])
    );
    let dialing = call(&app, &id).await;
    assert_eq!(dialing["status"], "DIALING");
    assert_eq!(dialing["providerCallId"], RETELL_CALL);
    assert!(dialing["dialedAt"].is_string());
    assert!(dialing["disposition"].is_null());

    // call_started: connected.
    let t0 = app.clock.now().timestamp_millis();
    let (status, answer) = retell_event(
        &app,
        "call_started",
        retell_call(
            &id,
            json!({ "call_status": "ongoing", "start_timestamp": t0 + 2_000 }),
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["callId"], id.as_str());
    assert_eq!(answer["applied"][0]["status"], "in_progress");
    let live = call(&app, &id).await;
    assert_eq!(live["status"], "IN_PROGRESS");
    assert_eq!(live["startedAt"], "2026-11-25T12:00:02+00:00");

    // transcript_updated repeats the whole list each turn: each utterance is stored once, in
    // order, with its offset; a repeated delivery answers 200 and changes nothing.
    let two_turns = json!({
        "call_status": "ongoing",
        "transcript_object": [
            utterance("agent", "Guten Tag, hier ist Anna.", 0.4),
            utterance("user", "Hallo, worum geht es?", 3.25),
        ],
    });
    let (status, answer) = retell_event(
        &app,
        "transcript_updated",
        retell_call(&id, two_turns.clone()),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["newSegments"], 2);
    let (status, answer) =
        retell_event(&app, "transcript_updated", retell_call(&id, two_turns)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["duplicate"], true, "{answer}");
    assert_eq!(segments(&call(&app, &id).await).len(), 2);
    let three_turns = json!({
        "call_status": "ongoing",
        "transcript_object": [
            utterance("agent", "Guten Tag, hier ist Anna.", 0.4),
            utterance("user", "Hallo, worum geht es?", 3.25),
            utterance("agent", "Hätten Sie Interesse an einer kurzen Demo?", 6.0),
        ],
    });
    let (status, answer) =
        retell_event(&app, "transcript_updated", retell_call(&id, three_turns)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["newSegments"], 1);
    assert_eq!(
        segments(&call(&app, &id).await),
        [
            segment(1, "AGENT", "Guten Tag, hier ist Anna.", 400),
            segment(2, "CUSTOMER", "Hallo, worum geht es?", 3_250),
            segment(
                3,
                "AGENT",
                "Hätten Sie Interesse an einer kurzen Demo?",
                6_000
            ),
        ]
    );

    // call_ended: ms → s, cents → USD, the reason → a disposition; the interaction is logged.
    let (status, answer) = retell_event(
        &app,
        "call_ended",
        retell_call(&id, retell_ended_fields(t0)),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["ended"], true, "{answer}");
    assert_eq!(answer["applied"][0]["newSegments"], 1);
    let ended = call(&app, &id).await;
    assert_eq!(ended["status"], "ENDED", "{ended:#}");
    assert_eq!(ended["disposition"], "ANSWERED");
    assert_eq!(ended["endedReason"], "user_hangup");
    assert_eq!(ended["durationSeconds"].as_f64(), Some(42.5));
    assert_eq!(ended["costUsd"].as_f64(), Some(0.125));
    assert_eq!(ended["transcript"], RETELL_TRANSCRIPT);
    assert_eq!(ended["startedAt"], "2026-11-25T12:00:02+00:00");
    assert_eq!(ended["endedAt"], "2026-11-25T12:00:44.500+00:00");
    assert_eq!(ended["isFinal"], true);
    assert!(ended["interactionId"].is_string(), "{ended:#}");
    assert!(ended["summary"].is_null());
    assert_eq!(
        segments(&ended)[3],
        segment(4, "CUSTOMER", "Ja, gerne.", 9_100)
    );
    let interaction = the_call_interaction(&app, &customer, &ended).await;
    assert_eq!(interaction["outcome"], "answered");
    assert_eq!(interaction["durationSeconds"], 43);
    assert_eq!(interaction["author"], "voice-agent:retell-de");

    // call_analyzed: the analysis arrives later; the interaction learns the outcome.
    let analyzed = with(
        retell_ended_fields(t0),
        json!({
            "call_analysis": {
                "call_summary": "Herr Müller möchte eine Demo am Freitag.",
                "user_sentiment": "Positive",
                "call_successful": true,
                "in_voicemail": false,
                "custom_analysis_data": { "outcome": "Appointment" },
            },
        }),
    );
    let (status, answer) =
        retell_event(&app, "call_analyzed", retell_call(&id, analyzed.clone())).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["ended"], false, "{answer}");
    let done = call(&app, &id).await;
    assert_eq!(done["status"], "ENDED");
    assert_eq!(done["disposition"], "ANSWERED");
    assert_eq!(done["summary"], "Herr Müller möchte eine Demo am Freitag.");
    assert_eq!(done["sentiment"], "positive");
    assert_eq!(done["outcome"], "appointment");
    assert_eq!(done["durationSeconds"].as_f64(), Some(42.5));
    assert_eq!(done["costUsd"].as_f64(), Some(0.125));
    assert_eq!(done["interactionId"], ended["interactionId"]);
    assert_eq!(segments(&done).len(), 4);
    let interaction = the_call_interaction(&app, &customer, &done).await;
    assert_eq!(interaction["outcome"], "appointment");

    // Retell repeats deliveries: each repeat answers 200, marked a duplicate, and changes nothing.
    for (event, fields) in [
        ("call_ended", retell_ended_fields(t0)),
        ("call_analyzed", analyzed),
    ] {
        let (status, answer) = retell_event(&app, event, retell_call(&id, fields)).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["applied"][0]["duplicate"], true, "{event}: {answer}");
    }
    assert_eq!(call(&app, &id).await, done);
    assert_eq!(interactions_of(&app, &customer).await.len(), 1);

    // Answered: no retry; the call went to Retell once.
    app.run_jobs().await;
    let calls = calls_of(&app, &customer).await;
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(fake.creates().len(), 1);
}

async fn retell_events_out_of_order_never_move_a_call_back(backend: TestBackend) {
    let (_fake, app, customer, id) = placed_retell_call(backend).await;
    let t0 = app.clock.now().timestamp_millis();

    // call_ended arrives first (call_started was lost or is late).
    let (status, answer) = retell_event(
        &app,
        "call_ended",
        retell_call(&id, retell_ended_fields(t0)),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let ended = call(&app, &id).await;
    assert_eq!(ended["status"], "ENDED");
    assert_eq!(ended["disposition"], "ANSWERED");
    assert_eq!(segments(&ended).len(), 4);

    // A late transcript_updated and a late call_started are accepted but move nothing back.
    let (status, answer) = retell_event(
        &app,
        "transcript_updated",
        retell_call(
            &id,
            json!({
                "call_status": "ongoing",
                "transcript_object": [
                    utterance("agent", "Guten Tag, hier ist Anna.", 0.4),
                    utterance("user", "Hallo, worum geht es?", 3.25),
                ],
            }),
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = retell_event(
        &app,
        "call_started",
        retell_call(
            &id,
            json!({ "call_status": "ongoing", "start_timestamp": t0 + 2_000 }),
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["status"], "ended", "{answer}");
    let after = call(&app, &id).await;
    assert_eq!(after["status"], "ENDED");
    assert_eq!(after["disposition"], "ANSWERED");
    assert_eq!(after["endedAt"], ended["endedAt"]);
    assert_eq!(after["durationSeconds"].as_f64(), Some(42.5));
    assert_eq!(segments(&after), segments(&ended));
    assert_eq!(interactions_of(&app, &customer).await.len(), 1);
}

async fn retell_webhooks_are_verified_before_anything_is_read(backend: TestBackend) {
    let (_fake, app, _customer, id) = placed_retell_call(backend).await;
    let now_ms = app.clock.now().timestamp_millis();
    let body = retell_body(
        "call_started",
        retell_call(
            &id,
            json!({ "call_status": "ongoing", "start_timestamp": now_ms }),
        ),
    );
    let refused = |answer: &Value| {
        assert_eq!(
            answer["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
            "{answer}"
        );
    };

    // A body changed after signing.
    let signature = retell_signature(RETELL_KEY, &body, now_ms);
    let tampered = body.replace("ongoing", "ended");
    assert_ne!(tampered, body);
    let (status, answer) = deliver(
        &app,
        "retell",
        &tampered,
        &[("x-retell-signature", &signature)],
    )
    .await;
    assert_eq!(status, 401, "{answer}");
    refused(&answer);

    // Signed with another key.
    let signature = retell_signature("key_someone_else", &body, now_ms);
    let (status, _) = deliver(&app, "retell", &body, &[("x-retell-signature", &signature)]).await;
    assert_eq!(status, 401);

    // The timestamp is signed: moving it breaks the signature.
    let signature = retell_signature(RETELL_KEY, &body, now_ms).replacen(
        &format!("v={now_ms}"),
        &format!("v={}", now_ms + 1),
        1,
    );
    let (status, _) = deliver(&app, "retell", &body, &[("x-retell-signature", &signature)]).await;
    assert_eq!(status, 401);

    // Correctly signed, but more than 5 minutes old or ahead.
    for skew in [-301_000, 301_000] {
        let signature = retell_signature(RETELL_KEY, &body, now_ms + skew);
        let (status, answer) =
            deliver(&app, "retell", &body, &[("x-retell-signature", &signature)]).await;
        assert_eq!(status, 401, "skew {skew}: {answer}");
        refused(&answer);
    }

    // No signature, or not in Retell's format.
    let (status, answer) = deliver(&app, "retell", &body, &[]).await;
    assert_eq!(status, 401, "{answer}");
    refused(&answer);
    let digest_only = retell_signature(RETELL_KEY, &body, now_ms)
        .split(',')
        .nth(1)
        .unwrap()
        .to_owned();
    for header in [digest_only.as_str(), "v=abc,d=00", "garbage", ""] {
        let (status, _) = deliver(&app, "retell", &body, &[("x-retell-signature", header)]).await;
        assert_eq!(status, 401, "{header}");
    }

    // Nothing refused reached the call.
    let untouched = call(&app, &id).await;
    assert_eq!(untouched["status"], "DIALING");
    assert!(untouched["startedAt"].is_null());

    // Correctly signed garbage is a bad request, not a server error.
    for garbage in [
        "not json",
        "[1, 2]",
        r#"{"event": "call_started"}"#,
        r#"{"event": "call_started", "call": {"call_status": "ongoing"}}"#,
        r#"{"call": {"call_id": "call_7c1e0e9d2b4f4a8e9f00"}}"#,
    ] {
        let signature = retell_signature(RETELL_KEY, garbage, now_ms);
        let (status, answer) = deliver(
            &app,
            "retell",
            garbage,
            &[("x-retell-signature", &signature)],
        )
        .await;
        assert_eq!(status, 400, "{garbage}: {answer}");
    }

    // A call we never placed: 404, whether named by our id or only by Retell's.
    let stranger = uuid::Uuid::new_v4().to_string();
    for call_object in [
        with(
            retell_call(&stranger, json!({ "call_status": "ongoing" })),
            json!({ "call_id": "call_nobody_placed" }),
        ),
        json!({ "call_id": "call_nobody_placed", "call_status": "ongoing" }),
    ] {
        let (status, answer) = retell_event(&app, "call_started", call_object).await;
        assert_eq!(status, 404, "{answer}");
    }

    // An event type we do not use: accepted and ignored.
    let (status, answer) = retell_event(
        &app,
        "transfer_started",
        retell_call(&id, json!({ "call_status": "ongoing" })),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ignored"], "transfer_started");
    let (status, answer) =
        retell_event(&app, "call_resurrected", retell_call(&id, json!({}))).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ignored"], "call_resurrected");

    // Providers that do not exist or are not configured here.
    let signature = retell_signature(RETELL_KEY, &body, now_ms);
    for provider in ["twilio", "vapi", "bland"] {
        let (status, _) =
            deliver(&app, provider, &body, &[("x-retell-signature", &signature)]).await;
        assert_eq!(status, 404, "{provider}");
    }
    assert_eq!(call(&app, &id).await["status"], "DIALING");

    // Inside the window (just under 5 minutes old), the same event is applied.
    let signature = retell_signature(RETELL_KEY, &body, now_ms - 299_000);
    let (status, answer) =
        deliver(&app, "retell", &body, &[("x-retell-signature", &signature)]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(call(&app, &id).await["status"], "IN_PROGRESS");
}

async fn retell_rejecting_the_call_fails_it_for_good(backend: TestBackend) {
    let fake = FakeProvider::start(
        RETELL_CREATE,
        vec![(
            400,
            json!({ "status": 400, "message": "to_number is not a valid E.164 number" }),
        )],
    )
    .await;
    let app = TestApp::spawn_with(backend, |c| retell_config(c, &fake.url)).await;
    let customer = app.create_customer(callable_lead()).await;
    let id = start_call(&app, &customer, "retell", "retell-de").await;

    app.run_jobs().await;
    assert_eq!(fake.creates().len(), 1);
    let failed = call(&app, &id).await;
    assert_eq!(failed["status"], "ENDED", "{failed:#}");
    assert_eq!(failed["disposition"], "FAILED");
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("rejected"), "{reason}");
    assert!(reason.contains("400"), "{reason}");
    assert!(
        reason.contains("to_number is not a valid E.164 number"),
        "{reason}"
    );
    assert!(failed["providerCallId"].is_null());
    assert_eq!(failed["isFinal"], true);
    // Never placed: nothing to log as a conversation.
    assert!(failed["interactionId"].is_null());
    assert!(interactions_of(&app, &customer).await.is_empty());

    // A rejection is final: no later attempt reaches Retell.
    app.clock.advance(Duration::hours(6));
    app.run_jobs().await;
    assert_eq!(fake.creates().len(), 1);
    assert_eq!(calls_of(&app, &customer).await.len(), 1);
}

async fn retell_server_error_on_create_is_never_retried(backend: TestBackend) {
    let fake = FakeProvider::start(
        RETELL_CREATE,
        vec![(500, json!({ "message": "internal server error" }))],
    )
    .await;
    let app = TestApp::spawn_with(backend, |c| retell_config(c, &fake.url)).await;
    let customer = app.create_customer(callable_lead()).await;
    let id = start_call(&app, &customer, "retell", "retell-de").await;

    app.run_jobs().await;
    assert_eq!(fake.creates().len(), 1);
    let failed = call(&app, &id).await;
    assert_eq!(failed["status"], "ENDED", "{failed:#}");
    assert_eq!(failed["disposition"], "FAILED");
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("500"), "{reason}");
    assert!(reason.contains("not retried"), "{reason}");
    assert_eq!(failed["isFinal"], true);

    // The call may exist at Retell: a second create could ring the lead twice, so none is made,
    // neither by the job runner's retries nor later.
    for hours in [1, 24] {
        app.clock.advance(Duration::hours(hours));
        app.run_jobs().await;
    }
    let creates = fake.creates();
    assert_eq!(creates.len(), 1, "{creates:#?}");
    let calls = calls_of(&app, &customer).await;
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(call(&app, &id).await["status"], "ENDED");
}

async fn retell_unavailable_is_retried_a_minute_later(backend: TestBackend) {
    let fake = FakeProvider::start(
        RETELL_CREATE,
        vec![
            (429, json!({ "message": "Too many requests" })),
            (201, retell_created()),
        ],
    )
    .await;
    let app = TestApp::spawn_with(backend, |c| retell_config(c, &fake.url)).await;
    let customer = app.create_customer(callable_lead()).await;
    let id = start_call(&app, &customer, "retell", "retell-de").await;

    // 429: Retell did not act on it, so the call waits in the queue for a minute.
    app.run_jobs().await;
    assert_eq!(fake.creates().len(), 1);
    let waiting = call(&app, &id).await;
    assert_eq!(waiting["status"], "QUEUED", "{waiting:#}");
    let reason = waiting["reason"].as_str().unwrap();
    assert!(reason.contains("unavailable"), "{reason}");
    assert!(waiting["providerCallId"].is_null());
    app.clock.advance(Duration::seconds(30));
    app.run_jobs().await;
    assert_eq!(fake.creates().len(), 1, "not before the minute is up");

    app.clock.advance(Duration::seconds(31));
    app.run_jobs().await;
    let creates = fake.creates();
    assert_eq!(creates.len(), 2);
    assert_eq!(
        creates[1].body, creates[0].body,
        "the same call, asked again"
    );
    let placed = call(&app, &id).await;
    assert_eq!(placed["status"], "DIALING", "{placed:#}");
    assert_eq!(placed["providerCallId"], RETELL_CALL);
    assert_eq!(placed["attempt"], 1);
    assert_eq!(calls_of(&app, &customer).await.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Vapi (PROVIDERS.md §1).

const VAPI_KEY: &str = "vapi_private_key_test";
const VAPI_SECRET: &str = "vapi_server_credential_test";
const VAPI_CREATE: &str = "/call";
const VAPI_CALL: &str = "5b2d1c9e-6f0a-4e34-9b8e-2f4d7a1c0e11";

fn vapi_config(config: &mut Config, base_url: &str, auth: WebhookAuth) {
    config.voice.providers.vapi.base_url = base_url.to_owned();
    config.voice.providers.vapi.api_key = Some(VAPI_KEY.into());
    config.voice.providers.vapi.webhook_auth = auth;
    config.voice.providers.vapi.webhook_secret = Some(VAPI_SECRET.into());
    only_agent(
        config,
        "vapi-de",
        VoiceAgentConfig {
            kind: "vapi".into(),
            language: "de".into(),
            agent_id: "asst_de_0001".into(),
            from_number: "pn_de_0001".into(),
            first_message: "Guten Tag, hier ist Anna.".into(),
            ..VoiceAgentConfig::default()
        },
    );
}

/// Vapi's answer to a create: a `Call`, `queued`.
fn vapi_created() -> Value {
    json!({
        "id": VAPI_CALL,
        "orgId": "org_test",
        "type": "outboundPhoneCall",
        "status": "queued",
        "assistantId": "asst_de_0001",
        "phoneNumberId": "pn_de_0001",
        "createdAt": "2026-11-25T12:00:00.000Z",
        "updatedAt": "2026-11-25T12:00:00.000Z",
    })
}

/// A server message `{"message": {type, call, …fields}}` about our call `id`.
fn vapi_message(id: &str, kind: &str, fields: Value) -> String {
    let message = with(
        json!({
            "type": kind,
            "timestamp": 1_795_521_600_000_i64,
            "call": {
                "id": VAPI_CALL,
                "orgId": "org_test",
                "type": "outboundPhoneCall",
                "name": id,
                "assistantOverrides": { "metadata": { "crm_call_id": id } },
            },
        }),
        fields,
    );
    json!({ "message": message }).to_string()
}

/// Posts a server message with the Bearer credential.
async fn vapi_deliver(app: &TestApp, body: &str) -> (u16, Value) {
    let bearer = format!("Bearer {VAPI_SECRET}");
    deliver(app, "vapi", body, &[("authorization", &bearer)]).await
}

async fn placed_vapi_call(
    backend: TestBackend,
    auth: WebhookAuth,
) -> (FakeProvider, TestApp, String, String) {
    let fake = FakeProvider::start(VAPI_CREATE, vec![(201, vapi_created())]).await;
    let app = TestApp::spawn_with(backend, |c| vapi_config(c, &fake.url, auth)).await;
    let customer = app.create_customer(callable_lead()).await;
    let id = start_call(&app, &customer, "vapi", "vapi-de").await;
    app.run_jobs().await;
    (fake, app, customer, id)
}

async fn vapi_places_the_call_and_bearer_authenticated_messages_drive_it(backend: TestBackend) {
    let (fake, app, customer, id) = placed_vapi_call(backend, WebhookAuth::Bearer).await;

    let received = fake.received();
    assert_eq!(received.len(), 1, "{received:#?}");
    let create = &received[0];
    assert_eq!(create.method, "POST");
    assert_eq!(create.path, VAPI_CREATE);
    let bearer = format!("Bearer {VAPI_KEY}");
    assert_eq!(create.header("authorization"), Some(bearer.as_str()));
    let body = &create.body;
    assert_eq!(body["assistantId"], "asst_de_0001");
    assert_eq!(body["phoneNumberId"], "pn_de_0001");
    assert_eq!(body["customer"]["number"], "+4930123456");
    assert_eq!(body["customer"]["name"], "Jürgen Müller");
    assert_eq!(body["customer"]["externalId"], customer.as_str());
    assert_eq!(body["name"], id.as_str());
    let overrides = &body["assistantOverrides"];
    assert_eq!(overrides["metadata"]["crm_call_id"], id.as_str());
    assert_eq!(overrides["metadata"]["crm_customer_id"], customer.as_str());
    assert_eq!(overrides["variableValues"]["name"], "Jürgen Müller");
    assert_eq!(overrides["variableValues"]["company"], "Müller GmbH");
    assert_eq!(overrides["firstMessage"], "Guten Tag, hier ist Anna.");
    assert_eq!(
        overrides["server"]["url"],
        format!("{PUBLIC_URL}/webhooks/voice/vapi")
    );
    // The live transcript is not among Vapi's default server messages: asked for, with the
    // ones we read.
    let messages = overrides["serverMessages"].as_array().unwrap();
    for wanted in [
        "status-update",
        "end-of-call-report",
        "transcript[transcriptType=\"final\"]",
    ] {
        assert!(messages.contains(&json!(wanted)), "{wanted}: {messages:?}");
    }
    let dialing = call(&app, &id).await;
    assert_eq!(dialing["status"], "DIALING");
    assert_eq!(dialing["providerCallId"], VAPI_CALL);

    // The Bearer credential: missing, wrong or not Bearer → 401, and nothing changes.
    let ringing = vapi_message(&id, "status-update", json!({ "status": "ringing" }));
    let wrong = "Bearer not-the-token".to_owned();
    let basic = format!("Basic {VAPI_SECRET}");
    for headers in [
        vec![],
        vec![("authorization", wrong.as_str())],
        vec![("authorization", basic.as_str())],
        vec![("x-vapi-secret", VAPI_SECRET)],
    ] {
        let (status, answer) = deliver(&app, "vapi", &ringing, &headers).await;
        assert_eq!(status, 401, "{headers:?}: {answer}");
    }
    assert_eq!(call(&app, &id).await["status"], "DIALING");

    // status-update ringing, then in-progress.
    let (status, answer) = vapi_deliver(&app, &ringing).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["status"], "ringing");
    assert_eq!(call(&app, &id).await["status"], "RINGING");
    let (status, answer) = vapi_deliver(&app, &ringing).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["duplicate"], true);
    let (status, answer) = vapi_deliver(
        &app,
        &vapi_message(&id, "status-update", json!({ "status": "in-progress" })),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(call(&app, &id).await["status"], "IN_PROGRESS");

    // Partial transcripts and message types we do not use are accepted and ignored.
    for (kind, fields) in [
        (
            "transcript",
            json!({ "role": "user", "transcriptType": "partial", "transcript": "Hal" }),
        ),
        (
            "speech-update",
            json!({ "status": "started", "role": "assistant" }),
        ),
        ("conversation-update", json!({ "messages": [] })),
    ] {
        let (status, answer) = vapi_deliver(&app, &vapi_message(&id, kind, fields)).await;
        assert_eq!(status, 200, "{kind}: {answer}");
        assert_eq!(answer["ignored"], kind);
    }
    // Also one that names no call (an assistant-level message).
    let (status, answer) = vapi_deliver(
        &app,
        &json!({ "message": { "type": "assistant.started", "timestamp": 1 } }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ignored"], "assistant.started");
    assert!(segments(&call(&app, &id).await).is_empty());

    // end-of-call-report: duration from startedAt/endedAt, cost in USD, the analysis, the
    // messages as segments (the system prompt left out).
    let report = vapi_message(
        &id,
        "end-of-call-report",
        json!({
            "endedReason": "customer-ended-call",
            "cost": 0.42,
            "startedAt": "2026-11-25T12:00:05.000Z",
            "endedAt": "2026-11-25T12:01:05.500Z",
            "analysis": {
                "summary": "Bittet um Rückruf morgen früh.",
                "structuredData": { "outcome": "Callback" },
                "successEvaluation": "true",
            },
            "artifact": {
                "transcript": "AI: Guten Tag, hier ist Anna.\nUser: Rufen Sie mich morgen an.",
                "recordingUrl": "https://storage.vapi.ai/5b2d1c9e-mono.wav",
                "messages": [
                    { "role": "system", "message": "Du bist Anna.", "time": 1_795_521_605_000_i64 },
                    { "role": "bot", "message": "Guten Tag, hier ist Anna.", "secondsFromStart": 0.6 },
                    { "role": "user", "message": "Rufen Sie mich morgen an.", "secondsFromStart": 2.4 },
                ],
            },
        }),
    );
    let (status, answer) = vapi_deliver(&app, &report).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["ended"], true, "{answer}");
    let ended = call(&app, &id).await;
    assert_eq!(ended["status"], "ENDED", "{ended:#}");
    assert_eq!(ended["disposition"], "ANSWERED");
    assert_eq!(ended["endedReason"], "customer-ended-call");
    assert_eq!(ended["durationSeconds"].as_f64(), Some(60.5));
    assert_eq!(ended["costUsd"].as_f64(), Some(0.42));
    assert_eq!(ended["summary"], "Bittet um Rückruf morgen früh.");
    assert_eq!(ended["outcome"], "callback");
    assert_eq!(
        ended["recordingUrl"],
        "https://storage.vapi.ai/5b2d1c9e-mono.wav"
    );
    assert_eq!(
        segments(&ended),
        [
            segment(1, "AGENT", "Guten Tag, hier ist Anna.", 600),
            segment(2, "CUSTOMER", "Rufen Sie mich morgen an.", 2_400),
        ]
    );
    let interaction = the_call_interaction(&app, &customer, &ended).await;
    assert_eq!(interaction["outcome"], "callback");
    assert_eq!(interaction["durationSeconds"], 61);

    // A repeated report and a late status-update change nothing.
    let (status, answer) = vapi_deliver(&app, &report).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["duplicate"], true);
    let (status, answer) = vapi_deliver(
        &app,
        &vapi_message(&id, "status-update", json!({ "status": "forwarding" })),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let after = call(&app, &id).await;
    assert_eq!(after["status"], "ENDED");
    assert_eq!(after["disposition"], "ANSWERED");
    assert_eq!(segments(&after).len(), 2);

    // Signed garbage is a bad request; a call we never placed is not found.
    for garbage in [
        "{oops",
        r#"{"message": {"type": "status-update"}}"#,
        r#"{"type": "x"}"#,
    ] {
        let (status, answer) = vapi_deliver(&app, garbage).await;
        assert_eq!(status, 400, "{garbage}: {answer}");
    }
    let stranger = vapi_message(
        &uuid::Uuid::new_v4().to_string(),
        "status-update",
        json!({ "status": "ringing", "call": { "id": "vapi-call-nobody-placed" } }),
    );
    let (status, answer) = vapi_deliver(&app, &stranger).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(fake.creates().len(), 1);
}

async fn vapi_hmac_credential_signs_the_timestamp_and_the_body(backend: TestBackend) {
    let (_fake, app, _customer, id) = placed_vapi_call(backend, WebhookAuth::Hmac).await;
    assert_eq!(call(&app, &id).await["status"], "DIALING");
    let body = vapi_message(&id, "status-update", json!({ "status": "ringing" }));
    let now = app.clock.now().timestamp();
    // Vapi's HMAC credential with its defaults: hex HMAC-SHA256 over `{timestamp}.{body}`.
    let sign = |timestamp: i64, body: &str| {
        hmac_hex(
            VAPI_SECRET,
            &[timestamp.to_string().as_bytes(), b".", body.as_bytes()],
        )
    };

    let bearer = format!("Bearer {VAPI_SECRET}");
    let stale = (now - 301).to_string();
    let stale_signature = sign(now - 301, &body);
    let tampered = body.replace("ringing", "in-progress");
    let signature = sign(now, &body);
    let timestamp = now.to_string();
    let other_timestamp = (now + 1).to_string();
    for (what, payload, headers) in [
        (
            "a Bearer token",
            &body,
            vec![("authorization", bearer.as_str())],
        ),
        (
            "no timestamp",
            &body,
            vec![("x-signature", signature.as_str())],
        ),
        (
            "no signature",
            &body,
            vec![("x-timestamp", timestamp.as_str())],
        ),
        (
            "a tampered body",
            &tampered,
            vec![
                ("x-signature", signature.as_str()),
                ("x-timestamp", timestamp.as_str()),
            ],
        ),
        (
            "another timestamp",
            &body,
            vec![
                ("x-signature", signature.as_str()),
                ("x-timestamp", other_timestamp.as_str()),
            ],
        ),
        (
            "a stale timestamp",
            &body,
            vec![
                ("x-signature", stale_signature.as_str()),
                ("x-timestamp", stale.as_str()),
            ],
        ),
    ] {
        let (status, answer) = deliver(&app, "vapi", payload, &headers).await;
        assert_eq!(status, 401, "{what}: {answer}");
    }
    assert_eq!(call(&app, &id).await["status"], "DIALING");

    let prefixed = format!("sha256={signature}");
    let (status, answer) = deliver(
        &app,
        "vapi",
        &body,
        &[
            ("x-signature", prefixed.as_str()),
            ("x-timestamp", timestamp.as_str()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(call(&app, &id).await["status"], "RINGING");
}

async fn vapi_rejecting_the_call_fails_it(backend: TestBackend) {
    let fake = FakeProvider::start(
        VAPI_CREATE,
        vec![(
            400,
            json!({
                "message": ["customer.number must be a valid phone number in the E.164 format"],
                "error": "Bad Request",
                "statusCode": 400,
            }),
        )],
    )
    .await;
    let app =
        TestApp::spawn_with(backend, |c| vapi_config(c, &fake.url, WebhookAuth::Bearer)).await;
    let customer = app.create_customer(callable_lead()).await;
    let id = start_call(&app, &customer, "vapi", "vapi-de").await;

    app.run_jobs().await;
    let failed = call(&app, &id).await;
    assert_eq!(failed["status"], "ENDED", "{failed:#}");
    assert_eq!(failed["disposition"], "FAILED");
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("rejected"), "{reason}");
    assert!(reason.contains("must be a valid phone number"), "{reason}");
    app.clock.advance(Duration::hours(2));
    app.run_jobs().await;
    assert_eq!(fake.creates().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Bland (PROVIDERS.md §3).

const BLAND_KEY: &str = "org_bland_key_test";
const BLAND_SECRET: &str = "bland_signing_secret_test";
const BLAND_CREATE: &str = "/v1/calls";
const BLAND_CALL: &str = "9a8b7c6d-1e2f-4a3b-8c9d-0e1f2a3b4c5d";

fn bland_config(config: &mut Config, base_url: &str) {
    config.voice.providers.bland.base_url = base_url.to_owned();
    config.voice.providers.bland.api_key = Some(BLAND_KEY.into());
    config.voice.providers.bland.webhook_secret = Some(BLAND_SECRET.into());
    only_agent(
        config,
        "bland-de",
        VoiceAgentConfig {
            kind: "bland".into(),
            language: "de".into(),
            agent_id: "pathway_de_0001".into(),
            task: "Qualifiziere den Lead freundlich.".into(),
            from_number: "+4930555000".into(),
            first_message: "Guten Tag, hier ist Anna.".into(),
            ..VoiceAgentConfig::default()
        },
    );
}

/// Posts a Bland delivery with `X-Webhook-Signature` (hex HMAC-SHA256 of the raw body).
async fn bland_deliver(app: &TestApp, body: &str) -> (u16, Value) {
    let signature = hmac_hex(BLAND_SECRET, &[body.as_bytes()]);
    deliver(app, "bland", body, &[("x-webhook-signature", &signature)]).await
}

async fn bland_places_the_call_and_signed_webhooks_drive_it(backend: TestBackend) {
    let fake = FakeProvider::start(
        BLAND_CREATE,
        vec![(
            200,
            json!({
                "status": "success",
                "message": "Call successfully queued.",
                "call_id": BLAND_CALL,
                "batch_id": null,
            }),
        )],
    )
    .await;
    let app = TestApp::spawn_with(backend, |c| bland_config(c, &fake.url)).await;
    let customer = app.create_customer(callable_lead()).await;
    let id = start_call(&app, &customer, "bland", "bland-de").await;

    app.run_jobs().await;
    let received = fake.received();
    assert_eq!(received.len(), 1, "{received:#?}");
    let create = &received[0];
    assert_eq!(create.method, "POST");
    assert_eq!(create.path, BLAND_CREATE);
    // Bland takes the raw key, no Bearer.
    assert_eq!(create.header("authorization"), Some(BLAND_KEY));
    let body = &create.body;
    assert_eq!(body["phone_number"], "+4930123456");
    assert_eq!(body["pathway_id"], "pathway_de_0001");
    assert_eq!(body["task"], "Qualifiziere den Lead freundlich.");
    assert_eq!(body["first_sentence"], "Guten Tag, hier ist Anna.");
    assert_eq!(body["language"], "de");
    assert_eq!(body["from"], "+4930555000");
    assert_eq!(body["request_data"]["name"], "Jürgen Müller");
    assert_eq!(body["metadata"]["crm_call_id"], id.as_str());
    assert_eq!(body["metadata"]["crm_customer_id"], customer.as_str());
    assert_eq!(
        body["webhook"],
        format!("{PUBLIC_URL}/webhooks/voice/bland")
    );
    assert_eq!(
        body["webhook_events"],
        json!(["call"]),
        "the live transcript"
    );
    let dialing = call(&app, &id).await;
    assert_eq!(dialing["status"], "DIALING");
    assert_eq!(dialing["providerCallId"], BLAND_CALL);

    // A live event carries only Bland's call id: it is matched by that.
    let connected = json!({
        "call_id": BLAND_CALL,
        "message": "Call connected",
        "category": "call",
        "log_level": "info",
    })
    .to_string();
    let wrong = hmac_hex("another_secret", &[connected.as_bytes()]);
    let tampered_signature = hmac_hex(BLAND_SECRET, &[connected.as_bytes()]);
    let tampered = connected.replace("info", "debug");
    for (payload, headers) in [
        (&connected, vec![]),
        (&connected, vec![("x-webhook-signature", wrong.as_str())]),
        (&connected, vec![("x-webhook-signature", "not hex")]),
        (
            &tampered,
            vec![("x-webhook-signature", tampered_signature.as_str())],
        ),
    ] {
        let (status, answer) = deliver(&app, "bland", payload, &headers).await;
        assert_eq!(status, 401, "{headers:?}: {answer}");
    }
    assert_eq!(call(&app, &id).await["status"], "DIALING");
    let (status, answer) = bland_deliver(&app, &connected).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(call(&app, &id).await["status"], "IN_PROGRESS");

    // The post-call webhook: call_length minutes → seconds, price in USD, the transcript.
    let post_call = json!({
        "call_id": BLAND_CALL,
        "c_id": BLAND_CALL,
        "to": "+4930123456",
        "from": "+4930555000",
        "status": "completed",
        "completed": true,
        "queue_status": "complete",
        "answered_by": "human",
        "call_length": 1.5,
        "price": 0.135,
        "created_at": "2026-11-25T12:00:00.000Z",
        "started_at": "2026-11-25T12:00:04.000Z",
        "end_at": "2026-11-25T12:30:04.000Z",
        "call_ended_by": "USER",
        "summary": "Interesse an einem Angebot.",
        "concatenated_transcript": "assistant: Guten Tag, hier ist Anna. \n user: Ja, erzählen Sie.",
        "transcripts": [
            { "id": 1, "created_at": "2026-11-25T12:00:05.000Z", "text": "Guten Tag, hier ist Anna.", "user": "assistant" },
            { "id": 2, "created_at": "2026-11-25T12:00:08.250Z", "text": "Ja, erzählen Sie.", "user": "user" },
        ],
        "disposition_tag": "Interested",
        "metadata": { "crm_call_id": id, "crm_customer_id": customer },
        "recording_url": null,
    })
    .to_string();
    let (status, answer) = bland_deliver(&app, &post_call).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["ended"], true, "{answer}");
    let ended = call(&app, &id).await;
    assert_eq!(ended["status"], "ENDED", "{ended:#}");
    assert_eq!(ended["disposition"], "ANSWERED");
    assert_eq!(ended["durationSeconds"].as_f64(), Some(90.0));
    assert_eq!(ended["costUsd"].as_f64(), Some(0.135));
    assert_eq!(ended["summary"], "Interesse an einem Angebot.");
    assert_eq!(ended["outcome"], "interested");
    assert_eq!(ended["startedAt"], "2026-11-25T12:00:04+00:00");
    assert_eq!(ended["endedAt"], "2026-11-25T12:01:34+00:00");
    assert_eq!(
        segments(&ended),
        [
            segment(1, "AGENT", "Guten Tag, hier ist Anna.", 1_000),
            segment(2, "CUSTOMER", "Ja, erzählen Sie.", 4_250),
        ]
    );
    let interaction = the_call_interaction(&app, &customer, &ended).await;
    assert_eq!(interaction["outcome"], "interested");
    assert_eq!(interaction["durationSeconds"], 90);

    // A repeated post-call webhook (Bland retries on non-2xx and offers resends) is a no-op;
    // a late "Call connected" moves nothing back.
    let (status, answer) = bland_deliver(&app, &post_call).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["duplicate"], true, "{answer}");
    let (status, answer) = bland_deliver(&app, &connected).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(call(&app, &id).await, ended);

    // Signed garbage → 400; a call we never placed → 404; a body that is no call → ignored.
    for garbage in ["not json", "42", r#"{"status": "completed"}"#] {
        let (status, answer) = bland_deliver(&app, garbage).await;
        assert_eq!(status, 400, "{garbage}: {answer}");
    }
    let stranger =
        json!({ "call_id": "bland-call-nobody-placed", "status": "completed", "completed": true })
            .to_string();
    let (status, answer) = bland_deliver(&app, &stranger).await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = bland_deliver(
        &app,
        &json!({ "call_id": BLAND_CALL, "event_type": "evals" }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.get("ignored").is_some(), "{answer}");
    assert_eq!(fake.creates().len(), 1);
}

async fn bland_refusal_inside_a_success_answer_fails_the_call(backend: TestBackend) {
    // Bland answers some refusals with a 2xx and `status: error`.
    let fake = FakeProvider::start(
        BLAND_CREATE,
        vec![(
            200,
            json!({ "status": "error", "message": "Phone number is on your do-not-call list" }),
        )],
    )
    .await;
    let app = TestApp::spawn_with(backend, |c| bland_config(c, &fake.url)).await;
    let customer = app.create_customer(callable_lead()).await;
    let id = start_call(&app, &customer, "bland", "bland-de").await;

    app.run_jobs().await;
    let failed = call(&app, &id).await;
    assert_eq!(failed["status"], "ENDED", "{failed:#}");
    assert_eq!(failed["disposition"], "FAILED");
    assert!(failed["providerCallId"].is_null());
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("rejected"), "{reason}");
    assert!(reason.contains("do-not-call list"), "{reason}");
    app.clock.advance(Duration::hours(2));
    app.run_jobs().await;
    assert_eq!(fake.creates().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Regressions: events that race the placement, transcripts told twice, late analysis, a call
// given up on that the provider placed after all, and transcripts of any size.

/// A Bland call for a callable lead, placed: the fake, the app, the customer and the call.
async fn placed_bland_call(backend: TestBackend) -> (FakeProvider, TestApp, String, String) {
    let fake = FakeProvider::start(
        BLAND_CREATE,
        vec![(
            200,
            json!({
                "status": "success",
                "message": "Call successfully queued.",
                "call_id": BLAND_CALL,
                "batch_id": null,
            }),
        )],
    )
    .await;
    let app = TestApp::spawn_with(backend, |c| bland_config(c, &fake.url)).await;
    let customer = app.create_customer(callable_lead()).await;
    let id = start_call(&app, &customer, "bland", "bland-de").await;
    app.run_jobs().await;
    assert_eq!(fake.creates().len(), 1);
    let placed = call(&app, &id).await;
    assert_eq!(placed["status"], "DIALING", "{placed:#}");
    assert_eq!(placed["providerCallId"], BLAND_CALL);
    (fake, app, customer, id)
}

/// `(seq, role, text)` of each segment.
fn said(call: &Value) -> Vec<(i64, String, String)> {
    segments(call)
        .into_iter()
        .map(|(seq, role, text, _)| (seq, role, text))
        .collect()
}

fn line(seq: i64, role: &str, text: &str) -> (i64, String, String) {
    (seq, role.to_owned(), text.to_owned())
}

async fn retell_event_before_the_create_answer_still_places_and_logs_the_call(
    backend: TestBackend,
) {
    let fake = FakeProvider::start(RETELL_CREATE, vec![(201, retell_created())]).await;
    let app = TestApp::spawn_with(backend, |c| retell_config(c, &fake.url)).await;
    let customer = app.create_customer(callable_lead()).await;
    let id = start_call(&app, &customer, "retell", "retell-de").await;

    // Retell reports the call started while the dial job still waits for its 201.
    let t0 = app.clock.now().timestamp_millis();
    let started = retell_body(
        "call_started",
        retell_call(
            &id,
            json!({ "call_status": "ongoing", "start_timestamp": t0 + 2_000 }),
        ),
    );
    let signature = retell_signature(RETELL_KEY, &started, t0);
    fake.post_before_answering(
        format!("{}/webhooks/voice/retell", app.url),
        &[("x-retell-signature", &signature)],
        started,
    );
    app.run_jobs().await;
    assert_eq!(fake.creates().len(), 1);
    let early = fake.early_answers();
    assert_eq!(early.len(), 1, "{early:?}");
    let (status, answer) = &early[0];
    assert_eq!(*status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["callId"], id.as_str(), "{answer}");
    assert_eq!(answer["applied"][0]["status"], "in_progress", "{answer}");

    // The late 201 still records the placement; the event's progress stands.
    let placed = call(&app, &id).await;
    assert_eq!(placed["status"], "IN_PROGRESS", "{placed:#}");
    assert_eq!(placed["providerCallId"], RETELL_CALL, "{placed:#}");
    assert!(placed["dialedAt"].is_string(), "{placed:#}");
    assert_eq!(placed["startedAt"], "2026-11-25T12:00:02+00:00");

    // Known by Retell's id: an event without our metadata finds the call.
    let (status, answer) = retell_event(
        &app,
        "transcript_updated",
        json!({
            "call_id": RETELL_CALL,
            "call_status": "ongoing",
            "transcript_object": [utterance("agent", "Guten Tag, hier ist Anna.", 0.4)],
        }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["callId"], id.as_str(), "{answer}");

    // Its end is logged as the conversation it was.
    let (status, answer) = retell_event(
        &app,
        "call_ended",
        retell_call(&id, retell_ended_fields(t0)),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["ended"], true, "{answer}");
    let ended = call(&app, &id).await;
    assert_eq!(ended["status"], "ENDED", "{ended:#}");
    assert_eq!(ended["disposition"], "ANSWERED");
    assert_eq!(ended["providerCallId"], RETELL_CALL);
    assert!(ended["dialedAt"].is_string(), "{ended:#}");
    assert!(ended["interactionId"].is_string(), "{ended:#}");
    assert_eq!(segments(&ended).len(), 4);
    let interaction = the_call_interaction(&app, &customer, &ended).await;
    assert_eq!(interaction["outcome"], "answered");
    assert_eq!(interaction["durationSeconds"], 43);

    app.run_jobs().await;
    assert_eq!(fake.creates().len(), 1);
    assert_eq!(calls_of(&app, &customer).await.len(), 1);
}

async fn vapi_live_transcript_and_the_final_report_store_each_utterance_once(backend: TestBackend) {
    let (_fake, app, customer, id) = placed_vapi_call(backend, WebhookAuth::Bearer).await;
    let (status, answer) = vapi_deliver(
        &app,
        &vapi_message(&id, "status-update", json!({ "status": "in-progress" })),
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    // Live: each final `transcript` message is one utterance, without a position.
    let greeting = "Guten Tag, hier ist Anna.";
    let reply = "Rufen Sie mich morgen an.";
    let promise = "Gerne, ich rufe Sie morgen um neun Uhr an.";
    for (n, (role, text)) in [("assistant", greeting), ("user", reply)]
        .into_iter()
        .enumerate()
    {
        let message = vapi_message(
            &id,
            "transcript",
            json!({
                "role": role,
                "transcriptType": "final",
                "transcript": text,
                "timestamp": 1_795_521_606_000_i64 + 2_000 * n as i64,
            }),
        );
        let (status, answer) = vapi_deliver(&app, &message).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["applied"][0]["newSegments"], 1, "{answer}");
    }
    assert_eq!(
        said(&call(&app, &id).await),
        [line(1, "AGENT", greeting), line(2, "CUSTOMER", reply)]
    );

    // The report lists the whole conversation again, positioned: what was streamed is not
    // repeated, what only the report has is added.
    let report = vapi_message(
        &id,
        "end-of-call-report",
        json!({
            "endedReason": "customer-ended-call",
            "startedAt": "2026-11-25T12:00:05.000Z",
            "endedAt": "2026-11-25T12:00:15.000Z",
            "artifact": {
                "transcript": format!("AI: {greeting}\nUser: {reply}\nAI: {promise}"),
                "messages": [
                    { "role": "system", "message": "Du bist Anna.", "time": 1_795_521_605_000_i64 },
                    { "role": "bot", "message": greeting, "secondsFromStart": 0.6 },
                    { "role": "user", "message": reply, "secondsFromStart": 2.4 },
                    { "role": "bot", "message": promise, "secondsFromStart": 4.1 },
                ],
            },
        }),
    );
    let (status, answer) = vapi_deliver(&app, &report).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["ended"], true, "{answer}");
    assert_eq!(answer["applied"][0]["newSegments"], 1, "{answer}");
    let ended = call(&app, &id).await;
    assert_eq!(ended["status"], "ENDED", "{ended:#}");
    assert_eq!(
        said(&ended),
        [
            line(1, "AGENT", greeting),
            line(2, "CUSTOMER", reply),
            line(3, "AGENT", promise),
        ]
    );
    assert_eq!(segments(&ended)[2], segment(3, "AGENT", promise, 4_100));
    the_call_interaction(&app, &customer, &ended).await;

    // A repeated report is a duplicate.
    let (status, answer) = vapi_deliver(&app, &report).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["duplicate"], true, "{answer}");
    assert_eq!(segments(&call(&app, &id).await).len(), 3);
}

async fn bland_live_speech_and_the_post_call_transcript_store_each_utterance_once(
    backend: TestBackend,
) {
    let (_fake, app, customer, id) = placed_bland_call(backend).await;
    let log = |message: &str, at: &str| {
        json!({
            "call_id": BLAND_CALL,
            "message": message,
            "category": "call",
            "log_level": "info",
            "timestamp": at,
        })
        .to_string()
    };
    let (status, answer) =
        bland_deliver(&app, &log("Call connected", "2026-11-25T12:00:04.000Z")).await;
    assert_eq!(status, 200, "{answer}");

    // Live: speech log lines, without positions.
    let greeting = "Guten Tag, hier ist Anna.";
    let reply = "Ja, erzählen Sie.";
    let offer = "Gerne. Ich schicke Ihnen heute noch ein Angebot.";
    for (message, at) in [
        (
            format!("Agent speech: {greeting}"),
            "2026-11-25T12:00:05.000Z",
        ),
        (format!("User speech: {reply}"), "2026-11-25T12:00:08.250Z"),
    ] {
        let (status, answer) = bland_deliver(&app, &log(&message, at)).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["applied"][0]["newSegments"], 1, "{answer}");
    }
    assert_eq!(
        said(&call(&app, &id).await),
        [line(1, "AGENT", greeting), line(2, "CUSTOMER", reply)]
    );

    // The post-call webhook's `transcripts` repeat them and add the last one.
    let post_call = json!({
        "call_id": BLAND_CALL,
        "status": "completed",
        "completed": true,
        "queue_status": "complete",
        "answered_by": "human",
        "call_length": 0.25,
        "started_at": "2026-11-25T12:00:04.000Z",
        "call_ended_by": "USER",
        "concatenated_transcript": format!("assistant: {greeting} \n user: {reply} \n assistant: {offer}"),
        "transcripts": [
            { "id": 1, "created_at": "2026-11-25T12:00:05.000Z", "text": greeting, "user": "assistant" },
            { "id": 2, "created_at": "2026-11-25T12:00:08.250Z", "text": reply, "user": "user" },
            { "id": 3, "created_at": "2026-11-25T12:00:11.500Z", "text": offer, "user": "assistant" },
        ],
        "metadata": { "crm_call_id": id, "crm_customer_id": customer },
    })
    .to_string();
    let (status, answer) = bland_deliver(&app, &post_call).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["ended"], true, "{answer}");
    assert_eq!(answer["applied"][0]["newSegments"], 1, "{answer}");
    let ended = call(&app, &id).await;
    assert_eq!(ended["status"], "ENDED", "{ended:#}");
    assert_eq!(
        said(&ended),
        [
            line(1, "AGENT", greeting),
            line(2, "CUSTOMER", reply),
            line(3, "AGENT", offer),
        ]
    );
    assert_eq!(segments(&ended)[2], segment(3, "AGENT", offer, 7_500));
    the_call_interaction(&app, &customer, &ended).await;
}

async fn retell_utterance_growing_while_spoken_is_corrected_in_place(backend: TestBackend) {
    let (_fake, app, _customer, id) = placed_retell_call(backend).await;
    let t0 = app.clock.now().timestamp_millis();
    let (status, answer) = retell_event(
        &app,
        "call_started",
        retell_call(
            &id,
            json!({ "call_status": "ongoing", "start_timestamp": t0 + 2_000 }),
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    // The agent's turn is still being spoken: its text so far.
    let (status, answer) = retell_event(
        &app,
        "transcript_updated",
        retell_call(
            &id,
            json!({
                "call_status": "ongoing",
                "transcript_object": [
                    utterance("user", "Hallo?", 0.2),
                    utterance("agent", "Guten Tag, hier", 1.0),
                ],
            }),
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["newSegments"], 2, "{answer}");
    assert_eq!(
        segments(&call(&app, &id).await),
        [
            segment(1, "CUSTOMER", "Hallo?", 200),
            segment(2, "AGENT", "Guten Tag, hier", 1_000),
        ]
    );

    // The same position, grown: the stored segment takes the whole text, under its number.
    let full = "Guten Tag, hier ist Anna von Müller.";
    let (status, answer) = retell_event(
        &app,
        "transcript_updated",
        retell_call(
            &id,
            json!({
                "call_status": "ongoing",
                "transcript_object": [
                    utterance("user", "Hallo?", 0.2),
                    utterance("agent", full, 1.0),
                ],
            }),
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["duplicate"], Value::Null, "{answer}");
    assert_eq!(answer["applied"][0]["newSegments"], 0, "{answer}");
    assert_eq!(
        segments(&call(&app, &id).await),
        [
            segment(1, "CUSTOMER", "Hallo?", 200),
            segment(2, "AGENT", full, 1_000),
        ]
    );

    // The end's full list agrees and adds only what is new.
    let (status, answer) = retell_event(
        &app,
        "call_ended",
        retell_call(
            &id,
            with(
                retell_ended_fields(t0),
                json!({
                    "transcript": format!("User: Hallo?\nAgent: {full}\nUser: Worum geht es?"),
                    "transcript_object": [
                        utterance("user", "Hallo?", 0.2),
                        utterance("agent", full, 1.0),
                        utterance("user", "Worum geht es?", 4.0),
                    ],
                }),
            ),
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["newSegments"], 1, "{answer}");
    assert_eq!(
        segments(&call(&app, &id).await),
        [
            segment(1, "CUSTOMER", "Hallo?", 200),
            segment(2, "AGENT", full, 1_000),
            segment(3, "CUSTOMER", "Worum geht es?", 4_000),
        ]
    );
}

const QUEUE: &str = "{ callQueue { id attempt status notBefore } }";

async fn retell_voicemail_found_by_the_analysis_reopens_the_entry_for_a_retry(
    backend: TestBackend,
) {
    const SECOND_CALL: &str = "call_2d0f3b7a9c1e4e5fb6a1";
    let fake = FakeProvider::start(
        RETELL_CREATE,
        vec![
            (201, retell_created()),
            (
                201,
                with(retell_created(), json!({ "call_id": SECOND_CALL })),
            ),
        ],
    )
    .await;
    let app = TestApp::spawn_with(backend, |c| retell_config(c, &fake.url)).await;
    let customer = app.create_customer(callable_lead()).await;
    let id = start_call(&app, &customer, "retell", "retell-de").await;
    app.run_jobs().await;
    assert_eq!(call(&app, &id).await["providerCallId"], RETELL_CALL);
    let t0 = app.clock.now().timestamp_millis();

    // The agent hung up on what sounded like a person: answered, final.
    let hung_up = with(
        retell_ended_fields(t0),
        json!({ "disconnection_reason": "agent_hangup" }),
    );
    let (status, answer) =
        retell_event(&app, "call_ended", retell_call(&id, hung_up.clone())).await;
    assert_eq!(status, 200, "{answer}");
    let ended = call(&app, &id).await;
    assert_eq!(ended["status"], "ENDED", "{ended:#}");
    assert_eq!(ended["disposition"], "ANSWERED");
    assert_eq!(ended["isFinal"], true);
    assert_eq!(ended["endedAt"], "2026-11-25T12:00:44.500+00:00");
    let interaction = the_call_interaction(&app, &customer, &ended).await;
    assert_eq!(interaction["outcome"], "answered");
    assert!(
        app.graphql_ok(QUEUE, json!({})).await["callQueue"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // The analysis finds it was the mailbox: a voicemail, retried like one.
    let analyzed = with(
        hung_up,
        json!({
            "call_analysis": {
                "call_summary": "Die Mailbox hat abgenommen.",
                "call_successful": false,
                "in_voicemail": true,
            },
        }),
    );
    let (status, answer) =
        retell_event(&app, "call_analyzed", retell_call(&id, analyzed.clone())).await;
    assert_eq!(status, 200, "{answer}");
    let done = call(&app, &id).await;
    assert_eq!(done["status"], "ENDED", "{done:#}");
    assert_eq!(done["disposition"], "VOICEMAIL", "{done:#}");
    assert_eq!(done["isFinal"], false, "{done:#}");
    assert_eq!(done["summary"], "Die Mailbox hat abgenommen.");
    assert_eq!(done["interactionId"], ended["interactionId"]);
    let calls = calls_of(&app, &customer).await;
    assert_eq!(calls.len(), 2, "{calls:#?}");
    let second = calls
        .iter()
        .find(|c| c["attempt"] == 2)
        .unwrap_or_else(|| panic!("no second attempt: {calls:#?}"));
    assert_eq!(second["status"], "QUEUED", "{second:#}");
    let queue = app.graphql_ok(QUEUE, json!({})).await["callQueue"].clone();
    assert_eq!(
        queue,
        json!([{
            "id": second["id"],
            "attempt": 2,
            "status": "QUEUED",
            // The voicemail's spacing (60 minutes) after the call ended.
            "notBefore": "2026-11-25T13:00:44.500+00:00",
        }])
    );
    let interaction = the_call_interaction(&app, &customer, &done).await;
    assert_eq!(interaction["outcome"], "voicemail");

    // A repeated analysis changes nothing.
    let (status, answer) = retell_event(&app, "call_analyzed", retell_call(&id, analyzed)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["duplicate"], true, "{answer}");
    assert_eq!(calls_of(&app, &customer).await.len(), 2);

    // Not before the hour is up; then attempt 2 goes to Retell.
    app.run_jobs().await;
    assert_eq!(fake.creates().len(), 1);
    app.clock.advance(Duration::minutes(61));
    app.run_jobs().await;
    let creates = fake.creates();
    assert_eq!(creates.len(), 2, "{creates:#?}");
    assert_eq!(creates[1].body["metadata"]["crm_call_id"], second["id"]);
    let redial = call(&app, second["id"].as_str().unwrap()).await;
    assert_eq!(redial["status"], "DIALING", "{redial:#}");
    assert_eq!(redial["attempt"], 2);
    assert_eq!(redial["providerCallId"], SECOND_CALL);
}

async fn retell_call_failed_as_unknown_then_reported_by_retell_is_logged(backend: TestBackend) {
    let fake = FakeProvider::start(
        RETELL_CREATE,
        vec![(500, json!({ "message": "internal server error" }))],
    )
    .await;
    let app = TestApp::spawn_with(backend, |c| retell_config(c, &fake.url)).await;
    let customer = app.create_customer(callable_lead()).await;
    let id = start_call(&app, &customer, "retell", "retell-de").await;
    app.run_jobs().await;
    let failed = call(&app, &id).await;
    assert_eq!(failed["status"], "ENDED", "{failed:#}");
    assert_eq!(failed["disposition"], "FAILED");
    assert!(
        failed["reason"].as_str().unwrap().contains("not retried"),
        "{failed:#}"
    );
    assert!(failed["providerCallId"].is_null());
    assert!(failed["interactionId"].is_null());

    // Retell placed the call after all, and reports it under our id.
    let t0 = app.clock.now().timestamp_millis();
    let (status, answer) = retell_event(
        &app,
        "call_started",
        retell_call(
            &id,
            json!({ "call_status": "ongoing", "start_timestamp": t0 + 2_000 }),
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = retell_event(
        &app,
        "call_ended",
        retell_call(&id, retell_ended_fields(t0)),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let ended = call(&app, &id).await;
    assert_eq!(ended["status"], "ENDED", "{ended:#}");
    assert_eq!(ended["disposition"], "ANSWERED", "{ended:#}");
    assert_eq!(ended["providerCallId"], RETELL_CALL, "{ended:#}");
    assert!(ended["reason"].is_null(), "{ended:#}");
    assert_eq!(ended["durationSeconds"].as_f64(), Some(42.5));
    assert_eq!(ended["transcript"], RETELL_TRANSCRIPT);
    assert_eq!(segments(&ended).len(), 4);
    assert!(ended["interactionId"].is_string(), "{ended:#}");
    let interaction = the_call_interaction(&app, &customer, &ended).await;
    assert_eq!(interaction["outcome"], "answered");
    assert_eq!(interaction["durationSeconds"], 43);

    // Still one call: nothing is dialled again.
    app.clock.advance(Duration::hours(2));
    app.run_jobs().await;
    assert_eq!(fake.creates().len(), 1);
    assert_eq!(calls_of(&app, &customer).await.len(), 1);
    assert_eq!(interactions_of(&app, &customer).await.len(), 1);
}

async fn retell_enormous_transcript_is_capped_or_refused_never_a_panic(backend: TestBackend) {
    let (_fake, app, _customer, id) = placed_retell_call(backend).await;
    let t0 = app.clock.now().timestamp_millis();
    let limit = app.config.server.body_limit_bytes;
    // 6,000 utterances (without words, to keep them small), and a transcript of `bytes`.
    let utterances: Vec<Value> = (0..6_000)
        .map(|n| {
            let role = if n % 2 == 0 { "agent" } else { "user" };
            json!({ "role": role, "content": format!("Satz {n}.") })
        })
        .collect();
    let sentence = "Agent: Grüße aus München, hier spricht Anna. Hätten Sie fünf Minuten?\n";
    let ended = |transcript: &str| {
        retell_body(
            "call_ended",
            retell_call(
                &id,
                with(
                    retell_ended_fields(t0),
                    json!({ "transcript": transcript, "transcript_object": utterances }),
                ),
            ),
        )
    };
    let post = |body: String| {
        let signature = retell_signature(RETELL_KEY, &body, app.clock.now().timestamp_millis());
        let app = &app;
        async move { deliver(app, "retell", &body, &[("x-retell-signature", &signature)]).await }
    };

    // Over 16 MiB (the voice webhooks' limit): refused by its length, before it is read. The
    // server then closes the connection, so it is sent on one of its own (the app's client
    // would otherwise pick the closed connection for its next request).
    let huge = ended(&sentence.repeat(17 * 1024 * 1024 / sentence.len()));
    let signature = retell_signature(RETELL_KEY, &huge, app.clock.now().timestamp_millis());
    let response = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
        .post(format!("{}/webhooks/voice/retell", app.url))
        .header("content-type", "application/json")
        .header("x-retell-signature", signature)
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        crm_tests::error_code(&answer),
        "PAYLOAD_TOO_LARGE",
        "{answer}"
    );
    let untouched = call(&app, &id).await;
    assert_eq!(untouched["status"], "DIALING", "{untouched:#}");
    assert!(segments(&untouched).is_empty());

    // A 2 MB transcript, beyond the other routes' limit (1 MiB), is taken: a final event
    // refused would be lost. Stored capped at 5,000 segments and 200,000 characters.
    let large = sentence.repeat(2_000_000 / sentence.len());
    assert!(large.chars().count() > 200_000);
    let body = ended(&large);
    assert!(body.len() > limit, "{} bytes", body.len());
    let (status, answer) = post(body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["ended"], true, "{answer}");
    assert_eq!(answer["applied"][0]["newSegments"], 5_000, "{answer}");
    let stored = app
        .graphql_ok(
            "query($id: ID!) { call(id: $id) { status disposition transcript interactionId \
             tail: segments(afterSeq: 4998) { seq text } \
             beyond: segments(afterSeq: 5000) { seq } } }",
            json!({ "id": id }),
        )
        .await["call"]
        .clone();
    assert_eq!(stored["status"], "ENDED");
    assert_eq!(stored["disposition"], "ANSWERED");
    assert!(stored["interactionId"].is_string());
    let transcript = stored["transcript"].as_str().unwrap();
    assert_eq!(transcript.chars().count(), 200_000);
    assert!(large.starts_with(transcript));
    assert_eq!(
        stored["tail"],
        json!([
            { "seq": 4_999, "text": "Satz 4998." },
            { "seq": 5_000, "text": "Satz 4999." },
        ])
    );
    assert_eq!(stored["beyond"], json!([]));

    // The repeat of such a delivery is a duplicate like any other.
    let (status, answer) = post(ended(&large)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["duplicate"], true, "{answer}");
}

async fn erasing_a_customer_asks_retell_to_delete_their_call(backend: TestBackend) {
    let (fake, app, customer, id) = placed_retell_call(backend).await;
    let erased = app
        .graphql_ok(
            "mutation($c: ID!) { eraseCustomer(customerId: $c, reason: \"Art. 17\") { providerDeletions } }",
            json!({ "c": customer }),
        )
        .await;
    assert_eq!(erased["eraseCustomer"]["providerDeletions"], 1);
    app.run_jobs().await;
    let deletes: Vec<Received> = fake
        .received()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(deletes[0].path, format!("/v2/delete-call/{RETELL_CALL}"));
    assert_eq!(
        deletes[0].header("authorization"),
        Some(format!("Bearer {RETELL_KEY}").as_str())
    );
    // The fake does not know the call (404): nothing is left to delete there; the provider's
    // id is forgotten too.
    let deletion = crm_store::gdpr::provider_deletion(&app.db, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deletion.status, "not_found");
    assert_eq!(deletion.provider_call_id, None);
    assert_eq!(call(&app, &id).await["providerCallId"], Value::Null);
}

// ---------------------------------------------------------------------------------------------
// Out of order, reconciled, and across replicas.

async fn vapi_messages_out_of_order_never_move_a_call_back(backend: TestBackend) {
    let (_fake, app, customer, id) = placed_vapi_call(backend, WebhookAuth::Bearer).await;
    let greeting = "Guten Tag, hier ist Anna.";
    let reply = "Rufen Sie mich morgen an.";
    // The end-of-call report comes first (Vapi does not order its server messages).
    let report = vapi_message(
        &id,
        "end-of-call-report",
        json!({
            "endedReason": "customer-ended-call",
            "cost": 0.12,
            "startedAt": "2026-11-25T12:00:05.000Z",
            "endedAt": "2026-11-25T12:00:35.000Z",
            "artifact": {
                "messages": [
                    { "role": "bot", "message": greeting, "secondsFromStart": 0.6 },
                    { "role": "user", "message": reply, "secondsFromStart": 2.4 },
                ],
            },
        }),
    );
    let (status, answer) = vapi_deliver(&app, &report).await;
    assert_eq!(status, 200, "{answer}");
    let ended = call(&app, &id).await;
    assert_eq!(ended["status"], "ENDED", "{ended:#}");
    assert_eq!(ended["disposition"], "ANSWERED");
    assert_eq!(ended["durationSeconds"].as_f64(), Some(30.0));

    // Then the status updates and a live transcript line it already holds: accepted, and
    // nothing moves back or is stored twice.
    for late in [
        vapi_message(&id, "status-update", json!({ "status": "ringing" })),
        vapi_message(&id, "status-update", json!({ "status": "in-progress" })),
        vapi_message(
            &id,
            "transcript",
            json!({ "role": "user", "transcriptType": "final", "transcript": reply }),
        ),
        vapi_message(
            &id,
            "status-update",
            json!({ "status": "ended", "endedReason": "customer-ended-call" }),
        ),
    ] {
        let (status, answer) = vapi_deliver(&app, &late).await;
        assert_eq!(status, 200, "{late}: {answer}");
    }
    let after = call(&app, &id).await;
    assert_eq!(after["status"], "ENDED");
    assert_eq!(after["disposition"], "ANSWERED", "{after:#}");
    assert_eq!(after["endedReason"], "customer-ended-call");
    assert_eq!(after["endedAt"], ended["endedAt"]);
    assert_eq!(after["durationSeconds"].as_f64(), Some(30.0));
    assert_eq!(
        said(&after),
        [line(1, "AGENT", greeting), line(2, "CUSTOMER", reply)]
    );
    assert_eq!(interactions_of(&app, &customer).await.len(), 1);
}

async fn bland_webhooks_out_of_order_never_move_a_call_back(backend: TestBackend) {
    let (_fake, app, customer, id) = placed_bland_call(backend).await;
    let greeting = "Guten Tag, hier ist Anna.";
    let reply = "Ja, erzählen Sie.";
    // The post-call webhook comes first; the live log lines after it.
    let post_call = json!({
        "call_id": BLAND_CALL,
        "status": "completed",
        "completed": true,
        "queue_status": "complete",
        "answered_by": "human",
        "call_length": 0.5,
        "started_at": "2026-11-25T12:00:04.000Z",
        "transcripts": [
            { "id": 1, "created_at": "2026-11-25T12:00:05.000Z", "text": greeting, "user": "assistant" },
            { "id": 2, "created_at": "2026-11-25T12:00:08.250Z", "text": reply, "user": "user" },
        ],
        "metadata": { "crm_call_id": id, "crm_customer_id": customer },
    })
    .to_string();
    let (status, answer) = bland_deliver(&app, &post_call).await;
    assert_eq!(status, 200, "{answer}");
    let ended = call(&app, &id).await;
    assert_eq!(ended["status"], "ENDED", "{ended:#}");
    assert_eq!(
        ended["durationSeconds"].as_f64(),
        Some(30.0),
        "minutes → seconds"
    );

    let log = |message: &str, at: &str| {
        json!({ "call_id": BLAND_CALL, "message": message, "category": "call",
                "log_level": "info", "timestamp": at })
        .to_string()
    };
    for late in [
        log("Call connected", "2026-11-25T12:00:04.000Z"),
        log(
            &format!("Agent speech: {greeting}"),
            "2026-11-25T12:00:05.000Z",
        ),
        log(&format!("User speech: {reply}"), "2026-11-25T12:00:08.250Z"),
    ] {
        let (status, answer) = bland_deliver(&app, &late).await;
        assert_eq!(status, 200, "{late}: {answer}");
    }
    // And the post-call webhook again (Bland retries it).
    let (status, answer) = bland_deliver(&app, &post_call).await;
    assert_eq!(status, 200, "{answer}");
    let after = call(&app, &id).await;
    assert_eq!(after["status"], "ENDED");
    assert_eq!(after["disposition"], "ANSWERED", "{after:#}");
    assert_eq!(after["endedAt"], ended["endedAt"]);
    assert_eq!(
        said(&after),
        [line(1, "AGENT", greeting), line(2, "CUSTOMER", reply)]
    );
    assert_eq!(interactions_of(&app, &customer).await.len(), 1);
}

/// Vapi does not retry its webhooks: a call whose end-of-call report was lost is looked up
/// with `GET /call/{id}` after `voice.reconcile_after_minutes` and ended from what Vapi says.
async fn a_vapi_call_whose_report_never_arrives_is_reconciled_with_get_call(backend: TestBackend) {
    let (fake, app, customer, id) = placed_vapi_call(backend, WebhookAuth::Bearer).await;
    let in_progress = with(
        vapi_created(),
        json!({ "status": "in-progress", "startedAt": "2026-11-25T12:00:05.000Z" }),
    );
    let over = with(
        vapi_created(),
        json!({
            "status": "ended",
            "endedReason": "assistant-ended-call",
            "startedAt": "2026-11-25T12:00:05.000Z",
            "endedAt": "2026-11-25T12:01:20.000Z",
            "cost": 0.31,
            "analysis": { "summary": "Interessiert, Angebot per E-Mail." },
            "artifact": {
                "messages": [
                    { "role": "bot", "message": "Guten Tag, hier ist Anna.", "secondsFromStart": 0.5 },
                    { "role": "user", "message": "Schicken Sie mir ein Angebot.", "secondsFromStart": 3.0 },
                ],
            },
        }),
    );
    fake.answer_gets(vec![(200, in_progress), (200, over)]);

    app.clock.advance(Duration::minutes(31));
    app.run_jobs().await;
    let gets = fake.gets();
    assert_eq!(gets.len(), 1, "{gets:#?}");
    assert_eq!(gets[0].path, format!("/call/{VAPI_CALL}"));
    let bearer = format!("Bearer {VAPI_KEY}");
    assert_eq!(gets[0].header("authorization"), Some(bearer.as_str()));
    assert_eq!(call(&app, &id).await["status"], "IN_PROGRESS");

    app.clock.advance(Duration::minutes(31));
    app.run_jobs().await;
    let ended = call(&app, &id).await;
    assert_eq!(ended["status"], "ENDED", "{ended:#}");
    assert_eq!(ended["disposition"], "ANSWERED");
    assert_eq!(ended["endedReason"], "assistant-ended-call");
    assert_eq!(ended["durationSeconds"].as_f64(), Some(75.0));
    assert_eq!(ended["costUsd"].as_f64(), Some(0.31));
    assert_eq!(ended["summary"], "Interessiert, Angebot per E-Mail.");
    assert_eq!(
        said(&ended),
        [
            line(1, "AGENT", "Guten Tag, hier ist Anna."),
            line(2, "CUSTOMER", "Schicken Sie mir ein Angebot.")
        ]
    );
    the_call_interaction(&app, &customer, &ended).await;
    app.clock.advance(Duration::hours(2));
    app.run_jobs().await;
    assert_eq!(fake.gets().len(), 2, "nothing more is asked once it ended");
}

/// A Retell webhook posted to one replica reaches a transcript subscriber and a `callEvents`
/// subscriber (filtered to the call) on another (on PostgreSQL, through LISTEN/NOTIFY; on
/// SQLite the one instance plays both parts).
async fn a_webhook_into_one_replica_reaches_subscribers_on_another(backend: TestBackend) {
    use crate::subscriptions::{connect, receive, send};
    let (_fake, app, _customer, id) = placed_retell_call(backend).await;
    let replica = match backend {
        TestBackend::Postgres => Some(app.sibling().await),
        TestBackend::Sqlite => None,
    };
    let listener = replica.as_ref().unwrap_or(&app);
    // Another call of another customer, whose events the filter keeps out.
    let other = app
        .create_customer(json!({ "name": "Ana Hodžić", "phone": "+387 33 250 300",
                                 "language": "bs", "consentCall": true }))
        .await;

    let token = app.token_for(crm_domain::Role::Integration, "zapier");
    let auth = json!({ "Authorization": format!("Bearer {token}") });
    let (mut socket, ack) = connect(listener, auth.clone()).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    send(
        &mut socket,
        json!({ "id": "t", "type": "subscribe", "payload": {
            "query": "subscription($id: ID!) { callTranscript(callId: $id) { seq role text corrected } }",
            "variables": { "id": id } } }),
    )
    .await;
    let (mut events, _) = connect(listener, auth).await;
    send(
        &mut events,
        json!({ "id": "e", "type": "subscribe", "payload": {
            "query": "subscription($id: ID!) { callEvents(filter: { callId: $id }) { seq callId status disposition } }",
            "variables": { "id": id } } }),
    )
    .await;
    // Let both subscriptions register before anything commits.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    app.graphql_ok(
        "mutation($c: ID!) { enqueueCall(customerId: $c) { id } }",
        json!({ "c": other }),
    )
    .await;

    let t0 = app.clock.now().timestamp_millis();
    let (status, answer) = retell_event(
        &app,
        "call_started",
        retell_call(
            &id,
            json!({ "call_status": "ongoing", "start_timestamp": t0 }),
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = retell_event(
        &app,
        "transcript_updated",
        retell_call(
            &id,
            json!({
                "call_status": "ongoing",
                "transcript_object": [
                    utterance("agent", "Guten Tag, hier ist Anna.", 0.4),
                    utterance("user", "Hallo, worum geht es?", 3.25),
                ],
            }),
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    for seq in 1..=2 {
        let message = receive(&mut socket).await;
        assert_eq!(message["type"], "next", "{message}");
        assert_eq!(message["payload"]["data"]["callTranscript"]["seq"], seq);
        assert_eq!(
            message["payload"]["data"]["callTranscript"]["corrected"],
            false
        );
    }
    // Retell refines the customer's turn while it is spoken: seq 2 comes again, corrected.
    let grown = "Hallo, worum geht es? Ich habe wenig Zeit.";
    let (status, answer) = retell_event(
        &app,
        "transcript_updated",
        retell_call(
            &id,
            json!({
                "call_status": "ongoing",
                "transcript_object": [
                    utterance("agent", "Guten Tag, hier ist Anna.", 0.4),
                    utterance("user", grown, 3.25),
                ],
            }),
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let message = receive(&mut socket).await;
    let again = &message["payload"]["data"]["callTranscript"];
    assert_eq!(
        (&again["seq"], &again["text"], &again["corrected"]),
        (&json!(2), &json!(grown), &json!(true)),
        "{message}"
    );
    let mut ended = retell_ended_fields(t0);
    ended["transcript_object"][1] = utterance("user", grown, 3.25);
    let (status, answer) = retell_event(&app, "call_ended", retell_call(&id, ended)).await;
    assert_eq!(status, 200, "{answer}");
    let mut rest = Vec::new();
    loop {
        let message = receive(&mut socket).await;
        if message["type"] == "complete" {
            break;
        }
        assert_eq!(message["type"], "next", "{message}");
        rest.push(message["payload"]["data"]["callTranscript"]["seq"].clone());
    }
    assert_eq!(rest, [json!(3), json!(4)], "the lines only the end carried");

    let mut statuses = Vec::new();
    loop {
        let message = receive(&mut events).await;
        assert_eq!(message["type"], "next", "{message}");
        let event = &message["payload"]["data"]["callEvents"];
        assert_eq!(event["callId"], id.as_str(), "only this call: {event}");
        statuses.push(event["status"].as_str().unwrap().to_owned());
        if event["status"] == "ENDED" {
            assert_eq!(event["disposition"], "ANSWERED");
            break;
        }
    }
    assert_eq!(statuses, ["IN_PROGRESS", "ENDED"]);
    drop(replica);
}

/// An agent whose language is a provider's locale (`sr-RS`) serves the leads of its language
/// (`sr`), and the locale goes to Retell as it is.
async fn an_agent_with_a_regional_locale_serves_its_language(backend: TestBackend) {
    let fake = FakeProvider::start(RETELL_CREATE, vec![(201, retell_created())]).await;
    let app = TestApp::spawn_with(backend, |c| {
        retell_config(c, &fake.url);
        c.voice.agents.insert(
            "retell-sr".into(),
            VoiceAgentConfig {
                kind: "retell".into(),
                language: "sr-RS".into(),
                agent_id: "agent_retell_sr_0001".into(),
                from_number: "+381115550000".into(),
                first_message: "Добар дан, овде Ана.".into(),
                ..VoiceAgentConfig::default()
            },
        );
    })
    .await;
    let marko = app
        .create_customer(
            json!({ "name": "Марко Марковић", "phone": "+381 11 3334455",
                                 "language": "sr", "consentCall": true }),
        )
        .await;
    let call = app.graphql_ok(START, json!({ "c": marko })).await["startVoiceCall"].clone();
    assert_eq!(call["agent"], "retell-sr", "{call:#}");
    app.run_jobs().await;
    let creates = fake.creates();
    assert_eq!(creates.len(), 1);
    let body = &creates[0].body;
    assert_eq!(body["override_agent_id"], "agent_retell_sr_0001");
    assert_eq!(body["agent_override"]["agent"]["language"], "sr-RS");
    assert_eq!(body["from_number"], "+381115550000");
}

/// `cancelQueuedCall` on a call under way asks Retell to hang up (`POST /v2/stop-call/{id}`)
/// and ends the record as canceled; Retell's own `call_ended` arriving afterwards fills in what
/// it knows but leaves the cancel standing, and the call is logged once.
async fn a_call_under_way_is_stopped_at_the_provider_and_stays_canceled(backend: TestBackend) {
    let (fake, app, customer, id) = placed_retell_call(backend).await;
    let t0 = app.clock.now().timestamp_millis();
    let (status, answer) = retell_event(
        &app,
        "call_started",
        retell_call(
            &id,
            json!({ "call_status": "ongoing", "start_timestamp": t0 }),
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(call(&app, &id).await["status"], "IN_PROGRESS");

    let canceled = app
        .graphql_ok(
            "mutation($id: ID!) { cancelQueuedCall(id: $id, reason: \"wrong number\") { status disposition reason } }",
            json!({ "id": id }),
        )
        .await["cancelQueuedCall"]
        .clone();
    assert_eq!(
        (&canceled["status"], &canceled["disposition"]),
        (&json!("ENDED"), &json!("CANCELED")),
        "{canceled:#}"
    );
    let stops: Vec<Received> = fake
        .received()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.starts_with("/v2/stop-call/"))
        .collect();
    assert_eq!(stops.len(), 1, "{stops:#?}");
    assert_eq!(stops[0].path, format!("/v2/stop-call/{RETELL_CALL}"));
    let bearer = format!("Bearer {RETELL_KEY}");
    assert_eq!(stops[0].header("authorization"), Some(bearer.as_str()));

    // Retell reports the end it made.
    let mut ended = retell_ended_fields(t0);
    ended["disconnection_reason"] = json!("manual_stopped");
    let (status, answer) = retell_event(&app, "call_ended", retell_call(&id, ended)).await;
    assert_eq!(status, 200, "{answer}");
    let after = call(&app, &id).await;
    assert_eq!(after["status"], "ENDED");
    assert_eq!(after["disposition"], "CANCELED", "{after:#}");
    assert_eq!(after["durationSeconds"].as_f64(), Some(42.5));
    assert_eq!(interactions_of(&app, &customer).await.len(), 1);
    // Canceling it again is a conflict, and nothing more is sent to Retell.
    let again = app
        .graphql(
            "mutation($id: ID!) { cancelQueuedCall(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(crm_tests::error_code(&again), "CONFLICT", "{again:#}");
    assert_eq!(
        fake.received()
            .iter()
            .filter(|r| r.path.starts_with("/v2/stop-call/"))
            .count(),
        1
    );
}

/// While the database is unreachable a provider's webhook gets 503 (so the provider sends it
/// again) and nothing is acknowledged; sent again afterwards it is applied, once. PostgreSQL
/// only: an embedded SQLite database cannot be taken away from a running server.
async fn a_webhook_while_the_database_is_away_is_refused_and_applied_when_sent_again(
    backend: TestBackend,
) {
    if backend == TestBackend::Sqlite {
        return;
    }
    let fake = FakeProvider::start(RETELL_CREATE, vec![(201, retell_created())]).await;
    let app = TestApp::spawn_with(backend, |c| {
        retell_config(c, &fake.url);
        c.database.acquire_timeout_ms = 1_000;
    })
    .await;
    let customer = app.create_customer(callable_lead()).await;
    let id = start_call(&app, &customer, "retell", "retell-de").await;
    app.run_jobs().await;
    assert_eq!(call(&app, &id).await["status"], "DIALING");

    app.take_database_away().await;
    let t0 = app.clock.now().timestamp_millis();
    let started = retell_call(
        &id,
        json!({ "call_status": "ongoing", "start_timestamp": t0 }),
    );
    let (status, answer) = retell_event(&app, "call_started", started.clone()).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "SERVICE_UNAVAILABLE",
        "{answer}"
    );

    app.give_database_back().await;
    let (status, answer) = retell_event(&app, "call_started", started.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["status"], "in_progress", "{answer}");
    let (status, answer) = retell_event(&app, "call_started", started).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["duplicate"], true, "{answer}");
    assert_eq!(call(&app, &id).await["status"], "IN_PROGRESS");
}
