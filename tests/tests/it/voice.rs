//! Voice calls through the built-in simulator, over the real GraphQL and WebSocket surface:
//! the call queue (calling hours in the lead's time zone, do-not-call at enqueue and at dial
//! time, concurrency, retry spacing), the call record and its interaction, the pipeline's
//! continuation, and live transcripts that resume after a reconnect.

use crate::subscriptions::{Socket, connect, receive, send};
use chrono::{DateTime, Duration, TimeZone as _, Utc};
use crm_domain::{Clock as _, Disposition, Role};
use crm_tests::{TestApp, TestBackend, error_code, on_both_backends};
use crm_voice::simulator::script;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

on_both_backends!(
    a_simulated_call_rings_talks_ends_and_is_logged,
    the_pipeline_calls_a_hot_lead_and_moves_on_after_the_call,
    unanswered_calls_are_retried_with_spacing_then_end,
    calls_wait_for_calling_hours_in_the_leads_time_zone,
    do_not_call_and_missing_consent_block_at_enqueue_and_at_dial_time,
    a_provider_at_its_concurrency_limit_defers_the_next_call,
    a_queued_call_can_be_cancelled_once,
    transcripts_stream_live_and_resume_after_a_reconnect,
    many_transcript_subscribers_get_every_segment_in_order,
    who_gets_the_next_segment_follows_joins_and_leaves_mid_call,
    shared_transcript_renders_stay_within_a_row_level_scope,
    call_events_stream_status_changes_to_integrations,
    a_call_whose_end_never_arrives_is_reconciled_with_the_provider,
    a_dial_cut_off_after_its_claim_ends_and_its_number_stays_spaced,
    an_appointment_is_proposed_with_an_invitation_and_a_task,
    calling_hours_hold_across_dst_changes_in_the_queue,
    a_retry_reaches_the_lead_the_first_call_missed,
    call_events_reach_only_those_who_may_see_the_customer,
    a_lead_asking_not_to_be_called_is_listed_and_not_called_again,
    a_lead_without_an_agent_of_its_language_gets_the_default_agent,
    the_pipeline_moves_on_after_the_last_unanswered_attempt,
    the_queue_serves_higher_scores_first_then_the_longer_wait,
);

const CALL: &str = "query($id: ID!) { call(id: $id) { id attempt status disposition outcome \
    reason isFinal providerCallId durationSeconds costUsd summary sentiment transcript \
    notBefore interactionId segments { seq role text offsetMs } customer { id } } }";

const START: &str = "mutation($c: ID!) { startVoiceCall(customerId: $c) { id status agent } }";

/// The simulator's default seed (crm.example.toml).
const SEED: u64 = 42;

/// The plan the simulator plays for attempt `attempt` to `number`.
fn plan(number: &str, attempt: u32) -> script::Plan {
    script::plan_attempt(SEED, number, attempt, "de", &|_| String::new())
}

/// The first `count` numbers starting with `prefix` (and four digits) that `wanted` accepts.
fn numbers_where(prefix: &str, count: usize, wanted: impl Fn(&str) -> bool) -> Vec<String> {
    (0..10_000)
        .map(|n| format!("{prefix}{n:04}"))
        .filter(|n| wanted(n))
        .take(count)
        .collect()
}

/// `count` numbers starting with `prefix` whose first call the simulator plays with
/// `disposition`.
fn numbers_with(prefix: &str, disposition: Disposition, count: usize) -> Vec<String> {
    numbers_where(prefix, count, |n| plan(n, 1).disposition == disposition)
}

/// A German number the simulator plays with `disposition`.
fn number_with(disposition: Disposition) -> String {
    numbers_with("+4930555", disposition, 1).remove(0)
}

async fn lead(app: &TestApp, phone: &str, extra: Value) -> String {
    let mut input = json!({
        "name": "Jürgen Müller", "email": format!("j{}@firma.de", &phone[phone.len() - 4..]),
        "phone": phone, "company": "Müller GmbH", "language": "de", "consentCall": true,
        "source": "webform",
    });
    input
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    app.create_customer(input).await
}

async fn call(app: &TestApp, id: &str) -> Value {
    app.graphql_ok(CALL, json!({ "id": id })).await["call"].clone()
}

async fn start(app: &TestApp, customer: &str) -> String {
    let data = app.graphql_ok(START, json!({ "c": customer })).await;
    assert_eq!(data["startVoiceCall"]["status"], "QUEUED");
    data["startVoiceCall"]["id"].as_str().unwrap().to_owned()
}

/// Moves the clock in small steps, running what is due after each, for `seconds`.
async fn play(app: &TestApp, seconds: i64) {
    for _ in 0..seconds {
        app.clock.advance(Duration::seconds(1));
        app.run_jobs().await;
    }
}

async fn manual(backend: TestBackend) -> TestApp {
    TestApp::spawn_with(backend, |c| c.pipeline.start_on_create = false).await
}

async fn a_simulated_call_rings_talks_ends_and_is_logged(backend: TestBackend) {
    let app = manual(backend).await;
    let customer = lead(&app, &number_with(Disposition::Answered), json!({})).await;
    let id = start(&app, &customer).await;

    app.run_jobs().await;
    let ringing = call(&app, &id).await;
    assert_eq!(ringing["status"], "RINGING", "{ringing:#}");
    assert_eq!(ringing["providerCallId"], format!("sim-{id}"));
    assert_eq!(ringing["customer"]["id"], customer.as_str());

    play(&app, 4).await;
    assert_eq!(call(&app, &id).await["status"], "IN_PROGRESS");

    play(&app, 30).await;
    let ended = call(&app, &id).await;
    assert_eq!(ended["status"], "ENDED", "{ended:#}");
    assert_eq!(ended["disposition"], "ANSWERED");
    assert_eq!(ended["isFinal"], true);
    assert!(ended["outcome"].is_string() && ended["sentiment"].is_string());
    assert!(ended["durationSeconds"].as_f64().unwrap() > 5.0);
    assert_eq!(ended["costUsd"], 0.0);
    let segments = ended["segments"].as_array().unwrap();
    assert!(segments.len() >= 5, "{ended:#}");
    assert_eq!(
        segments
            .iter()
            .map(|s| s["seq"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        (1..=segments.len() as i64).collect::<Vec<_>>()
    );
    assert_eq!(segments[0]["role"], "AGENT");
    assert!(
        segments[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Guten Tag Jürgen Müller"),
        "the lead's language and name: {}",
        segments[0]["text"]
    );
    assert!(ended["transcript"].as_str().unwrap().contains("customer: "));

    // The call is an interaction of the customer, and the lead was scored again.
    let data = app
        .graphql_ok(
            "query($id: ID!) { customer(id: $id) { interactions { id kind outcome \
             durationSeconds author } scoreHistory { nodes { cause } } } }",
            json!({ "id": customer }),
        )
        .await;
    let interactions = data["customer"]["interactions"].as_array().unwrap();
    assert_eq!(interactions.len(), 1, "{data:#}");
    assert_eq!(interactions[0]["kind"], "CALL");
    assert_eq!(interactions[0]["id"], ended["interactionId"]);
    assert_eq!(interactions[0]["outcome"], ended["outcome"]);
    assert_eq!(interactions[0]["author"], "voice-agent:de");
    let causes: Vec<&str> = data["customer"]["scoreHistory"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["cause"].as_str().unwrap())
        .collect();
    assert!(causes.contains(&"call"), "{causes:?}");
}

async fn the_pipeline_calls_a_hot_lead_and_moves_on_after_the_call(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let customer = lead(&app, &number_with(Disposition::Answered), json!({})).await;
    app.run_jobs().await; // qualify-lead → voice-call → voice-dial → ringing
    let data = app
        .graphql_ok(
            "query($c: ID!) { calls(filter: { customerId: $c }) { nodes { id status runId } } }",
            json!({ "c": customer }),
        )
        .await;
    let calls = data["calls"]["nodes"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{data:#}");
    assert_eq!(calls[0]["status"], "RINGING");
    let run = calls[0]["runId"].as_str().unwrap().to_owned();

    let steps = |data: &Value| -> Vec<(String, String)> {
        data["pipelineRun"]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_owned(),
                    s["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    const RUN: &str =
        "query($id: ID!) { pipelineRun(id: $id) { status steps { name status detail } } }";
    let during = app.graphql_ok(RUN, json!({ "id": run })).await;
    assert_eq!(during["pipelineRun"]["status"], "RUNNING");
    assert_eq!(steps(&during)[2], ("voice-call".into(), "PENDING".into()));

    play(&app, 40).await;
    let after = app.graphql_ok(RUN, json!({ "id": run })).await;
    assert_eq!(
        steps(&after)[2..],
        [
            ("voice-call".into(), "DONE".into()),
            ("follow-up".into(), "DONE".into())
        ],
        "{after:#}"
    );
    assert_eq!(after["pipelineRun"]["status"], "COMPLETED");
    let detail = &after["pipelineRun"]["steps"][2]["detail"];
    assert_eq!(detail["disposition"], "answered");
    assert_eq!(detail["attempts"], 1);

    // The follow-up: an email with the call's outcome (sent to the outbox) and a task.
    let follow_up = &after["pipelineRun"]["steps"][3]["detail"];
    let email = follow_up["emailId"].as_str().unwrap();
    assert!(follow_up["taskId"].is_string(), "{follow_up:#}");
    let sent = app
        .graphql_ok(
            "query($c: ID!) { emails(customerId: $c) { nodes { id status template category } } }",
            json!({ "c": customer }),
        )
        .await;
    let node = &sent["emails"]["nodes"][0];
    assert_eq!(node["id"], email);
    assert_eq!(node["status"], "sent", "{sent:#}");
    assert_eq!(node["template"], "follow-up");
    let outbox = std::path::Path::new(&app.config.email.outbox.dir).join(format!("{email}.eml"));
    let message = std::fs::read_to_string(&outbox).unwrap();
    assert!(message.contains("List-Unsubscribe"), "{message}");
}

/// A number the simulator leaves unanswered on each of `attempts` attempts (each rolls anew).
fn number_missed(attempts: u32) -> String {
    numbers_where("+4930555", 1, |n| {
        (1..=attempts).all(|a| plan(n, a).disposition == Disposition::NoAnswer)
    })
    .remove(0)
}

async fn unanswered_calls_are_retried_with_spacing_then_end(backend: TestBackend) {
    let app = manual(backend).await;
    let customer = lead(&app, &number_missed(3), json!({})).await;
    let first = start(&app, &customer).await;
    app.run_jobs().await;
    play(&app, 30).await;
    let ended = call(&app, &first).await;
    assert_eq!(ended["disposition"], "NO_ANSWER", "{ended:#}");
    assert_eq!(ended["isFinal"], false);

    let queued = queue(&app).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0]["attempt"], 2);
    let not_before: DateTime<Utc> = queued[0]["notBefore"].as_str().unwrap().parse().unwrap();
    let spacing = not_before - app.clock.now();
    assert!(
        spacing > Duration::minutes(59) && spacing <= Duration::minutes(60),
        "the first retry waits 60 minutes: {spacing}"
    );
    // Not before its time.
    app.clock.advance(Duration::minutes(30));
    app.run_jobs().await;
    assert_eq!(queue(&app).await.len(), 1);

    // Attempt 2 after an hour, attempt 3 four hours after that; then the outcome is final.
    app.clock.advance(Duration::minutes(31));
    app.run_jobs().await;
    play(&app, 30).await;
    let queued = queue(&app).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0]["attempt"], 3);
    app.clock.advance(Duration::minutes(241));
    app.run_jobs().await;
    play(&app, 30).await;
    assert!(queue(&app).await.is_empty(), "three attempts in all");
    let data = app
        .graphql_ok(
            "query($c: ID!) { calls(filter: { customerId: $c }) { nodes { attempt disposition isFinal } } }",
            json!({ "c": customer }),
        )
        .await;
    let attempts = data["calls"]["nodes"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0]["attempt"], 3, "newest first");
    assert_eq!(attempts[0]["isFinal"], true);
    assert!(attempts[1..].iter().all(|a| a["isFinal"] == false));
    assert!(attempts.iter().all(|a| a["disposition"] == "NO_ANSWER"));
}

async fn queue(app: &TestApp) -> Vec<Value> {
    app.graphql_ok("{ callQueue { id attempt notBefore status } }", json!({}))
        .await["callQueue"]
        .as_array()
        .unwrap()
        .clone()
}

/// 2026-11-28 is a Saturday.
fn saturday_noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap()
}

async fn calls_wait_for_calling_hours_in_the_leads_time_zone(backend: TestBackend) {
    let app = manual(backend).await;
    app.clock.set(saturday_noon());
    let new_yorker = lead(
        &app,
        &number_with(Disposition::Answered),
        json!({ "timeZone": "America/New_York" }),
    )
    .await;
    let id = start(&app, &new_yorker).await;
    app.run_jobs().await;
    let waiting = call(&app, &id).await;
    assert_eq!(waiting["status"], "QUEUED");
    assert!(
        waiting["reason"]
            .as_str()
            .unwrap()
            .contains("America/New_York"),
        "{waiting:#}"
    );
    // Monday 09:00 in New York (EST, UTC−5).
    assert_eq!(waiting["notBefore"], "2026-11-30T14:00:00+00:00");

    // A Bosnian number without a time zone of its own: Sarajevo's hours (CET, UTC+1).
    let bosnian = app
        .create_customer(json!({ "name": "Amra Hodžić", "phone": "+38761234567",
                                 "language": "bs", "consentCall": true }))
        .await;
    app.clock
        .set(Utc.with_ymd_and_hms(2026, 11, 30, 19, 30, 0).unwrap()); // 20:30 in Sarajevo
    let late = start(&app, &bosnian).await;
    app.run_jobs().await;
    let waiting = call(&app, &late).await;
    assert_eq!(waiting["status"], "QUEUED", "{waiting:#}");
    assert_eq!(waiting["notBefore"], "2026-12-01T08:00:00+00:00");

    // New York's hours opened meanwhile (14:00 UTC Monday): that call was placed.
    let placed = call(&app, &id).await;
    assert_ne!(placed["status"], "QUEUED", "{placed:#}");
    app.clock
        .set(Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).unwrap());
    app.run_jobs().await;
    assert_eq!(call(&app, &late).await["status"], "RINGING");
}

async fn do_not_call_and_missing_consent_block_at_enqueue_and_at_dial_time(backend: TestBackend) {
    let app = manual(backend).await;
    let phone = number_with(Disposition::Answered);
    let customer = lead(&app, &phone, json!({})).await;

    // Queued on a Saturday, so it waits for Monday.
    app.clock.set(saturday_noon());
    let id = start(&app, &customer).await;
    app.run_jobs().await;
    assert_eq!(call(&app, &id).await["status"], "QUEUED");

    // The person asks not to be called; the number is listed (in a national format).
    let national = format!("0{}", &phone[3..]);
    let added = app
        .graphql_ok(
            "mutation($p: String!) { addDoNotCall(phone: $p, reason: \"asked by email\") { phone source } }",
            json!({ "p": national }),
        )
        .await;
    assert_eq!(added["addDoNotCall"]["phone"], phone.as_str());
    assert_eq!(added["addDoNotCall"]["source"], "api");

    // At dial time the call is blocked, and nothing is placed.
    app.clock
        .set(Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap());
    app.run_jobs().await;
    let blocked = call(&app, &id).await;
    assert_eq!(blocked["status"], "ENDED", "{blocked:#}");
    assert_eq!(blocked["disposition"], "BLOCKED");
    assert_eq!(blocked["providerCallId"], Value::Null);
    assert!(blocked["reason"].as_str().unwrap().contains("do-not-call"));

    // A new call is refused at once.
    let refused = app.graphql(START, json!({ "c": customer })).await;
    assert_eq!(error_code(&refused), "VALIDATION_FAILED", "{refused:#}");
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("do-not-call")
    );

    // Without consent to calls, too.
    let unconsenting = app
        .create_customer(json!({ "name": "Ana", "phone": "+38161555444" }))
        .await;
    let refused = app.graphql(START, json!({ "c": unconsenting })).await;
    assert_eq!(error_code(&refused), "VALIDATION_FAILED");
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("consent")
    );

    // Taken off the list (managers only), the customer can be called again.
    let sales = app.token_for(Role::Sales, "sam");
    let forbidden = app
        .graphql_as(
            &sales,
            "mutation($p: String!) { removeDoNotCall(phone: $p) }",
            json!({ "p": phone }),
        )
        .await;
    assert_eq!(error_code(&forbidden), "FORBIDDEN");
    let removed = app
        .graphql_ok(
            "mutation($p: String!) { removeDoNotCall(phone: $p) }",
            json!({ "p": phone }),
        )
        .await;
    assert_eq!(removed["removeDoNotCall"], true);
    start(&app, &customer).await;
}

async fn a_provider_at_its_concurrency_limit_defers_the_next_call(backend: TestBackend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.pipeline.start_on_create = false;
        c.voice.max_concurrent.insert("simulator".into(), 1);
    })
    .await;
    let answered = number_with(Disposition::Answered);
    let first = lead(&app, &answered, json!({})).await;
    let other = numbers_with("+4940555", Disposition::Answered, 1).remove(0);
    let second = lead(&app, &other, json!({})).await;
    let a = start(&app, &first).await;
    let b = start(&app, &second).await;
    app.run_jobs().await;
    let (a1, b1) = (call(&app, &a).await, call(&app, &b).await);
    let statuses = [
        a1["status"].as_str().unwrap(),
        b1["status"].as_str().unwrap(),
    ];
    assert!(
        statuses.contains(&"RINGING") && statuses.contains(&"QUEUED"),
        "one at a time: {statuses:?}"
    );
    let waiting = if a1["status"] == "QUEUED" { &a1 } else { &b1 };
    assert!(
        waiting["reason"].as_str().unwrap().contains("limit of 1"),
        "{waiting:#}"
    );
    // When the first has ended, the second is placed.
    play(&app, 60).await;
    assert_eq!(call(&app, &a).await["status"], "ENDED");
    assert_eq!(call(&app, &b).await["status"], "ENDED");
}

async fn a_queued_call_can_be_cancelled_once(backend: TestBackend) {
    let app = manual(backend).await;
    let customer = lead(&app, &number_with(Disposition::Answered), json!({})).await;
    let later = app
        .graphql_ok(
            "mutation($c: ID!, $at: DateTime!) { enqueueCall(customerId: $c, notBefore: $at) { id notBefore } }",
            json!({ "c": customer, "at": "2026-11-26T10:00:00Z" }),
        )
        .await;
    let id = later["enqueueCall"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        later["enqueueCall"]["notBefore"],
        "2026-11-26T10:00:00+00:00"
    );
    const CANCEL: &str = "mutation($id: ID!) { cancelQueuedCall(id: $id, reason: \"lead replied\") { status disposition reason } }";
    let cancelled = app.graphql_ok(CANCEL, json!({ "id": id })).await;
    assert_eq!(cancelled["cancelQueuedCall"]["status"], "ENDED");
    assert_eq!(cancelled["cancelQueuedCall"]["disposition"], "CANCELED");
    assert_eq!(cancelled["cancelQueuedCall"]["reason"], "lead replied");
    let again = app.graphql(CANCEL, json!({ "id": id })).await;
    assert_eq!(error_code(&again), "CONFLICT", "{again:#}");
    // Its dial job finds it ended and places nothing.
    app.clock.advance(Duration::days(1));
    app.run_jobs().await;
    assert_eq!(call(&app, &id).await["providerCallId"], Value::Null);
}

const TRANSCRIPT: &str = "subscription($id: ID!, $after: Int) { callTranscript(callId: $id, \
    afterSeq: $after) { seq role text } }";

async fn subscribe_transcript(socket: &mut Socket, call: &str, after: Option<i64>) {
    send(
        socket,
        json!({ "id": "t", "type": "subscribe",
                "payload": { "query": TRANSCRIPT, "variables": { "id": call, "after": after } } }),
    )
    .await;
}

async fn transcripts_stream_live_and_resume_after_a_reconnect(backend: TestBackend) {
    let app = manual(backend).await;
    // On PostgreSQL the subscriber sits on another replica: events cross by LISTEN/NOTIFY.
    let replica = match backend {
        TestBackend::Postgres => Some(app.sibling().await),
        TestBackend::Sqlite => None,
    };
    let listener = replica.as_ref().unwrap_or(&app);
    let customer = lead(&app, &number_with(Disposition::Answered), json!({})).await;
    let id = start(&app, &customer).await;
    let token = app.token_for(Role::Sales, "sam");
    let (mut socket, ack) = connect(
        listener,
        json!({ "Authorization": format!("Bearer {token}") }),
    )
    .await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    subscribe_transcript(&mut socket, &id, None).await;

    app.run_jobs().await;
    play(&app, 8).await; // rings 3 s, then a line every 1.5 s
    let first = receive(&mut socket).await;
    assert_eq!(first["type"], "next", "{first}");
    let first = &first["payload"]["data"]["callTranscript"];
    assert_eq!(first["seq"], 1);
    assert_eq!(first["role"], "AGENT");
    let second = receive(&mut socket).await;
    assert_eq!(second["payload"]["data"]["callTranscript"]["seq"], 2);
    drop(socket);

    // Reconnect after seq 2: the rest arrives, stored and live, then the stream completes
    // when the call ends.
    let (mut again, _) = connect(
        listener,
        json!({ "Authorization": format!("Bearer {token}") }),
    )
    .await;
    subscribe_transcript(&mut again, &id, Some(2)).await;
    play(&app, 30).await;
    let total = call(&app, &id).await["segments"].as_array().unwrap().len() as i64;
    let mut seqs = Vec::new();
    loop {
        let message = receive(&mut again).await;
        if message["type"] == "complete" {
            break;
        }
        assert_eq!(message["type"], "next", "{message}");
        seqs.push(
            message["payload"]["data"]["callTranscript"]["seq"]
                .as_i64()
                .unwrap(),
        );
    }
    assert_eq!(seqs, (3..=total).collect::<Vec<_>>());

    // Another owner's sales rep cannot listen in.
    app.graphql_ok(
        "mutation($id: ID!) { updateCustomer(id: $id, input: { owner: \"olga\" }) { id } }",
        json!({ "id": customer }),
    )
    .await;
    let (mut stranger, _) = connect(
        listener,
        json!({ "Authorization": format!("Bearer {token}") }),
    )
    .await;
    subscribe_transcript(&mut stranger, &id, None).await;
    let refused = receive(&mut stranger).await;
    assert_eq!(refused["type"], "next", "{refused}");
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{refused}"
    );
    drop(replica);
}

/// Every message of a transcript subscription until `complete`: (operation id, seq, text).
async fn transcript_until_complete(socket: &mut Socket, field: &str) -> Vec<(String, i64, String)> {
    let mut seen = Vec::new();
    loop {
        let message = receive(socket).await;
        if message["type"] == "complete" {
            return seen;
        }
        assert!(
            message["type"] == "next" || message["type"] == "data",
            "{message}"
        );
        assert!(message["payload"]["errors"].is_null(), "{message}");
        let segment = &message["payload"]["data"][field];
        seen.push((
            message["id"].as_str().unwrap().to_owned(),
            segment["seq"].as_i64().unwrap(),
            segment["text"].as_str().unwrap().to_owned(),
        ));
    }
}

/// Opens `/graphql/ws` with the older `graphql-ws` protocol and initializes it with `token`.
async fn connect_legacy(app: &TestApp, token: &str) -> Socket {
    let url = format!("{}/graphql/ws", app.url.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "graphql-ws".parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } }),
    )
    .await;
    let ack = receive(&mut socket).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    socket
}

/// Nothing arrives on `socket` for a while (or it is closed).
async fn silent(socket: &mut Socket) {
    let next = tokio::time::timeout(std::time::Duration::from_millis(300), socket.next()).await;
    if let Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text)))) = next {
        panic!("unexpected message: {text}");
    }
}

async fn many_transcript_subscribers_get_every_segment_in_order(backend: TestBackend) {
    let app = manual(backend).await;
    let customer = lead(&app, &number_with(Disposition::Answered), json!({})).await;
    let id = start(&app, &customer).await;
    let admin = app.token_for(Role::Admin, "ada");
    let manager = app.token_for(Role::Manager, "mia");
    // Same document and variables (one shared render per role), different operation ids.
    let mut same = Vec::new();
    for (token, op) in [(&admin, "t"), (&admin, "t"), (&admin, "x"), (&manager, "t")] {
        let (mut socket, ack) =
            connect(&app, json!({ "Authorization": format!("Bearer {token}") })).await;
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        send(
            &mut socket,
            json!({ "id": op, "type": "subscribe",
                    "payload": { "query": TRANSCRIPT, "variables": { "id": id, "after": null } } }),
        )
        .await;
        same.push((op, socket));
    }
    // Another selection (its own render), and the older protocol.
    let (mut aliased, _) =
        connect(&app, json!({ "Authorization": format!("Bearer {admin}") })).await;
    send(
        &mut aliased,
        json!({ "id": "a", "type": "subscribe", "payload": {
            "query": "subscription($id: ID!) { said: callTranscript(callId: $id) { text seq } }",
            "variables": { "id": id } } }),
    )
    .await;
    let mut legacy = connect_legacy(&app, &admin).await;
    send(
        &mut legacy,
        json!({ "id": "l", "type": "start",
                "payload": { "query": TRANSCRIPT, "variables": { "id": id } } }),
    )
    .await;

    // One that stops listening mid-call.
    let (mut quitter, _) =
        connect(&app, json!({ "Authorization": format!("Bearer {admin}") })).await;
    subscribe_transcript(&mut quitter, &id, None).await;

    app.run_jobs().await;
    play(&app, 8).await;
    // One that arrives mid-call gets the stored segments first, then the live ones.
    let (mut late, _) = connect(&app, json!({ "Authorization": format!("Bearer {admin}") })).await;
    subscribe_transcript(&mut late, &id, None).await;
    send(&mut quitter, json!({ "id": "t", "type": "complete" })).await;
    let before_quitting = transcript_until_complete(&mut quitter, "callTranscript").await;
    play(&app, 30).await;

    let stored = call(&app, &id).await["segments"]
        .as_array()
        .unwrap()
        .clone();
    let expected: Vec<(i64, String)> = stored
        .iter()
        .map(|s| {
            (
                s["seq"].as_i64().unwrap(),
                s["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(expected.len() > 3, "{stored:?}");
    let strip = |seen: Vec<(String, i64, String)>, op: &str| -> Vec<(i64, String)> {
        seen.into_iter()
            .map(|(id, seq, text)| {
                assert_eq!(id, op, "each socket gets its own operation id");
                (seq, text)
            })
            .collect()
    };
    for (op, mut socket) in same {
        let seen = transcript_until_complete(&mut socket, "callTranscript").await;
        assert_eq!(strip(seen, op), expected, "subscriber {op}");
    }
    let seen = transcript_until_complete(&mut aliased, "said").await;
    assert_eq!(strip(seen, "a"), expected);
    let seen = transcript_until_complete(&mut legacy, "callTranscript").await;
    assert_eq!(strip(seen, "l"), expected);
    let seen = transcript_until_complete(&mut late, "callTranscript").await;
    assert_eq!(strip(seen, "t"), expected);
    // The one that quit got a prefix, then nothing more.
    let got = strip(before_quitting, "t");
    assert_eq!(got, expected[..got.len()]);
    silent(&mut quitter).await;
}

/// The seqs of the next `n` transcript messages on `socket`, each checked to carry `op`.
async fn next_seqs(socket: &mut Socket, op: &str, n: usize) -> Vec<i64> {
    let mut seqs = Vec::new();
    for _ in 0..n {
        let message = receive(socket).await;
        assert_eq!(message["type"], "next", "{message}");
        assert_eq!(message["id"], op, "{message}");
        seqs.push(
            message["payload"]["data"]["callTranscript"]["seq"]
                .as_i64()
                .unwrap(),
        );
    }
    seqs
}

async fn who_gets_the_next_segment_follows_joins_and_leaves_mid_call(backend: TestBackend) {
    let app = manual(backend).await;
    let customer = lead(&app, &number_with(Disposition::Answered), json!({})).await;
    let id = start(&app, &customer).await;
    let admin = json!({ "Authorization": format!("Bearer {}", app.token_for(Role::Admin, "ada")) });
    let subscribe = |op: &str| {
        json!({ "id": op, "type": "subscribe",
                "payload": { "query": TRANSCRIPT, "variables": { "id": id, "after": null } } })
    };
    // Two subscribers of one shared render: the feed writes the first lines to both.
    let (mut a, _) = connect(&app, admin.clone()).await;
    send(&mut a, subscribe("a")).await;
    let (mut b, _) = connect(&app, admin.clone()).await;
    send(&mut b, subscribe("b")).await;
    app.run_jobs().await;
    play(&app, 8).await; // rings 3 s, then a line every 1.5 s
    assert_eq!(next_seqs(&mut a, "a", 3).await, [1, 2, 3]);
    assert_eq!(next_seqs(&mut b, "b", 3).await, [1, 2, 3]);

    // A third joins the same render mid-call, with nobody leaving: it gets what is stored, then
    // every later line as it comes.
    let (mut c, _) = connect(&app, admin.clone()).await;
    send(&mut c, subscribe("c")).await;
    assert_eq!(next_seqs(&mut c, "c", 3).await, [1, 2, 3]);
    play(&app, 3).await;
    assert_eq!(next_seqs(&mut a, "a", 2).await, [4, 5]);
    assert_eq!(next_seqs(&mut c, "c", 2).await, [4, 5]);
    assert_eq!(next_seqs(&mut b, "b", 2).await, [4, 5]);

    // One leaves: the others go on to the end, the one who left gets nothing more.
    send(&mut b, json!({ "id": "b", "type": "complete" })).await;
    assert!(
        transcript_until_complete(&mut b, "callTranscript")
            .await
            .is_empty()
    );
    play(&app, 30).await;
    let total = call(&app, &id).await["segments"].as_array().unwrap().len() as i64;
    assert!(total > 5, "{total}");
    for (op, socket) in [("a", &mut a), ("c", &mut c)] {
        let seqs: Vec<i64> = transcript_until_complete(socket, "callTranscript")
            .await
            .into_iter()
            .map(|(id, seq, _)| {
                assert_eq!(id, op);
                seq
            })
            .collect();
        assert_eq!(seqs, (6..=total).collect::<Vec<_>>(), "subscriber {op}");
    }
    silent(&mut b).await;
}

async fn shared_transcript_renders_stay_within_a_row_level_scope(backend: TestBackend) {
    let app = manual(backend).await;
    let customer = lead(
        &app,
        &number_with(Disposition::Answered),
        json!({ "owner": "olga" }),
    )
    .await;
    let id = start(&app, &customer).await;
    // The same document and variables from an admin, the owner, and a sales rep who does not
    // own the lead.
    let mut sockets = Vec::new();
    for token in [
        app.token_for(Role::Admin, "ada"),
        app.token_for(Role::Sales, "olga"),
        app.token_for(Role::Sales, "sam"),
    ] {
        let (mut socket, ack) =
            connect(&app, json!({ "Authorization": format!("Bearer {token}") })).await;
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        subscribe_transcript(&mut socket, &id, None).await;
        sockets.push(socket);
    }
    let mut stranger = sockets.pop().unwrap();
    let refused = receive(&mut stranger).await;
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{refused}"
    );
    assert_eq!(receive(&mut stranger).await["type"], "complete");

    app.run_jobs().await;
    play(&app, 40).await;
    let total = call(&app, &id).await["segments"].as_array().unwrap().len() as i64;
    for mut socket in sockets {
        let seen = transcript_until_complete(&mut socket, "callTranscript").await;
        let seqs: Vec<i64> = seen.iter().map(|(_, seq, _)| *seq).collect();
        assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    }
    // The stranger's socket got none of the renders the others shared.
    silent(&mut stranger).await;
}

async fn call_events_stream_status_changes_to_integrations(backend: TestBackend) {
    let app = manual(backend).await;
    let customer = lead(&app, &number_with(Disposition::Voicemail), json!({})).await;
    let token = app.token_for(Role::Integration, "zapier");
    let (mut socket, ack) =
        connect(&app, json!({ "Authorization": format!("Bearer {token}") })).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    send(
        &mut socket,
        json!({ "id": "e", "type": "subscribe", "payload": {
            "query": "subscription($c: ID!) { callEvents(filter: { customerId: $c }) { seq callId \
                      attempt status disposition isFinal } }",
            "variables": { "c": customer } } }),
    )
    .await;
    // Let the subscription register before the first event commits.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let id = start(&app, &customer).await;
    app.run_jobs().await;
    play(&app, 20).await;
    let mut seen = Vec::new();
    loop {
        let message = receive(&mut socket).await;
        assert_eq!(message["type"], "next", "{message}");
        let event = message["payload"]["data"]["callEvents"].clone();
        assert_eq!(event["callId"], id.as_str());
        seen.push((
            event["status"].as_str().unwrap().to_owned(),
            event["disposition"].as_str().map(str::to_owned),
        ));
        if event["status"] == "ENDED" {
            assert_eq!(event["isFinal"], false, "a voicemail is tried again");
            break;
        }
    }
    let statuses: Vec<&str> = seen.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        statuses,
        ["QUEUED", "DIALING", "RINGING", "IN_PROGRESS", "ENDED"],
        "{seen:?}"
    );
    assert_eq!(seen[4].1.as_deref(), Some("VOICEMAIL"));
    // The retry is announced too, as attempt 2.
    let retry = receive(&mut socket).await;
    let retry = &retry["payload"]["data"]["callEvents"];
    assert_eq!(retry["status"], "QUEUED", "{retry}");
    assert_eq!(retry["attempt"], 2);
}

/// A Retell API that places every call and, asked later, reports it ended (its webhooks lost).
async fn retell_without_webhooks() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use axum::{
        Json, Router,
        extract::Path,
        routing::{get, post},
    };
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    let reads = Arc::new(AtomicUsize::new(0));
    let counted = reads.clone();
    let app = Router::new()
        .route(
            "/v2/create-phone-call",
            post(|| async { (axum::http::StatusCode::CREATED, Json(json!({ "call_id": "call_lost", "call_status": "registered" }))) }),
        )
        .route(
            "/v2/get-call/{id}",
            get(move |Path(id): Path<String>| {
                let reads = counted.clone();
                async move {
                    let n = reads.fetch_add(1, Ordering::SeqCst);
                    // Still talking at the first look; over at the second.
                    let call = if n == 0 {
                        json!({ "call_id": id, "call_status": "ongoing", "start_timestamp": 1_795_000_000_000_i64 })
                    } else {
                        json!({ "call_id": id, "call_status": "ended",
                                "disconnection_reason": "user_hangup",
                                "start_timestamp": 1_795_000_000_000_i64, "end_timestamp": 1_795_000_030_000_i64,
                                "duration_ms": 30_000, "transcript": "Agent: Hallo\nUser: Hallo",
                                "call_cost": { "combined_cost": 25.0 } })
                    };
                    Json(call)
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, reads)
}

async fn a_call_whose_end_never_arrives_is_reconciled_with_the_provider(backend: TestBackend) {
    let (fake, reads) = retell_without_webhooks().await;
    let app = TestApp::spawn_with(backend, |c| {
        c.pipeline.start_on_create = false;
        c.voice.default_agent = "retell".into();
        c.voice.agents.clear();
        c.voice.agents.insert(
            "retell".into(),
            crm_api::config::VoiceAgentConfig {
                kind: "retell".into(),
                language: "de".into(),
                agent_id: "agent_1".into(),
                from_number: "+4930000000".into(),
                ..Default::default()
            },
        );
        c.voice.providers.retell.base_url = fake;
        c.voice.providers.retell.api_key = Some("key_test".into());
    })
    .await;
    let customer = lead(&app, "+4930123456", json!({})).await;
    let id = start(&app, &customer).await;
    app.run_jobs().await;
    assert_eq!(call(&app, &id).await["status"], "DIALING");

    // No webhook ever comes. After reconcile_after (30 min) the provider is asked: still on.
    app.clock.advance(Duration::minutes(31));
    app.run_jobs().await;
    let ongoing = call(&app, &id).await;
    assert_eq!(ongoing["status"], "IN_PROGRESS", "{ongoing:#}");
    // Asked again 30 minutes later: over, with what the provider knows.
    app.clock.advance(Duration::minutes(31));
    app.run_jobs().await;
    let ended = call(&app, &id).await;
    assert_eq!(ended["status"], "ENDED", "{ended:#}");
    assert_eq!(ended["disposition"], "ANSWERED");
    assert_eq!(ended["durationSeconds"], 30.0);
    assert_eq!(ended["costUsd"], 0.25);
    assert!(ended["interactionId"].is_string());
    assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Nothing more is asked once it ended.
    app.clock.advance(Duration::hours(2));
    app.run_jobs().await;
    assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// A worker claims a call and dies before the provider answers: the claim counts as a dial of
/// the number at once (a second worker may not dial it too), and the look at the call that
/// the claim enqueued ends it later, as failed and never retried (it may have rung).
async fn a_dial_cut_off_after_its_claim_ends_and_its_number_stays_spaced(backend: TestBackend) {
    use crm_store::calls::{Claim, ClaimRules, claim};
    let app = TestApp::spawn_with(backend, |c| c.pipeline.start_on_create = false).await;
    let phone = number_with(Disposition::Answered);
    let customer = lead(&app, &phone, json!({})).await;
    let first = start(&app, &customer).await;
    let second = start(&app, &customer).await;

    // The claim of the worker that then dies.
    let now = app.clock.now();
    let reconcile = crm_store::jobs::NewJob {
        kind: "voice-reconcile".into(),
        payload: json!({ "call_id": first }).to_string(),
        dedupe_key: None,
        priority: 0,
        run_at: now + Duration::minutes(30),
        max_attempts: 3,
    };
    let rules = ClaimRules {
        provider: "simulator",
        limit: 10,
        number: &phone,
        min_interval: Duration::minutes(60),
        reconcile: &reconcile,
    };
    let id = |s: &str| s.parse().unwrap();
    assert_eq!(
        claim(&app.db, id(&first), rules, now).await.unwrap(),
        Claim::Claimed
    );
    // Another worker, for the other call to the same number, a moment later: refused.
    let later = now + Duration::seconds(1);
    match claim(&app.db, id(&second), rules, later).await.unwrap() {
        Claim::Spaced(last) => assert!((last - now).num_milliseconds().abs() < 1, "{last}"),
        other => panic!("the number was just claimed for a dial: {other:?}"),
    }
    // The dial jobs: the first call is someone else's (claimed), the second waits.
    app.run_jobs().await;
    assert_eq!(call(&app, &first).await["status"], "DIALING");
    let waiting = call(&app, &second).await;
    assert_eq!(waiting["status"], "QUEUED", "{waiting:#}");
    assert_eq!(waiting["reason"], "the number was called recently");

    // Half an hour on, the look at the first call ends it, unplaced and not retried.
    app.clock.advance(Duration::minutes(31));
    app.run_jobs().await;
    let ended = call(&app, &first).await;
    assert_eq!(
        (&ended["status"], &ended["disposition"], &ended["isFinal"]),
        (&json!("ENDED"), &json!("FAILED"), &json!(true)),
        "{ended:#}"
    );
    assert!(
        ended["reason"]
            .as_str()
            .is_some_and(|r| r.contains("interrupted")),
        "{ended:#}"
    );
}

async fn an_appointment_is_proposed_with_an_invitation_and_a_task(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    // A number whose simulated call ends with an appointment.
    let phone =
        numbers_where("+4930666", 1, |n| plan(n, 1).outcome == Some("appointment")).remove(0);
    let customer = lead(&app, &phone, json!({ "owner": "olga" })).await;
    app.run_jobs().await;
    play(&app, 40).await;

    let data = app
        .graphql_ok(
            "query($c: ID!) { emails(customerId: $c) { nodes { id status } } \
             tasks(filter: { customerId: $c }) { nodes { title assignee dueAt status } } }",
            json!({ "c": customer }),
        )
        .await;
    let email = &data["emails"]["nodes"][0];
    assert_eq!(email["status"], "sent", "{data:#}");
    let message = std::fs::read_to_string(
        std::path::Path::new(&app.config.email.outbox.dir)
            .join(format!("{}.eml", email["id"].as_str().unwrap())),
    )
    .unwrap();
    assert!(message.contains("appointment.ics"), "{message}");
    assert!(message.contains("text/calendar"), "{message}");
    // 2026-11-25 is a Wednesday: the proposal is Thursday 10:00 in Berlin (09:00 UTC).
    let task = &data["tasks"]["nodes"][0];
    assert_eq!(task["assignee"], "olga", "{data:#}");
    assert_eq!(task["status"], "OPEN");
    assert!(
        task["title"].as_str().unwrap().contains("2026-11-26 10:00"),
        "{task}"
    );
    assert_eq!(task["dueAt"], "2026-11-26T08:00:00+00:00");
}

/// The default window (09:00–20:00, weekdays) in the lead's local time, through the queue with
/// the clock, across both kinds of DST change: Berlin springs forward on Sunday 2027-03-28
/// (CET, UTC+1 → CEST, UTC+2), New York falls back on Sunday 2027-11-07 (EDT, UTC−4 → EST,
/// UTC−5). A call refused on the Friday evening waits for Monday 09:00 at the new offset, and
/// a call due before the window opens is deferred at dial time to the new offset too.
async fn calling_hours_hold_across_dst_changes_in_the_queue(backend: TestBackend) {
    let app = manual(backend).await;
    let numbers = numbers_with("+4930777", Disposition::Answered, 5);
    let at = |raw: &str| raw.parse::<DateTime<Utc>>().unwrap();
    let berliners = [
        lead(&app, &numbers[0], json!({})).await,
        lead(&app, &numbers[1], json!({})).await,
        lead(&app, &numbers[2], json!({})).await,
    ];

    // Friday 19:59:59 CET: still open.
    app.clock.set(at("2027-03-26T18:59:59Z"));
    let open = start(&app, &berliners[0]).await;
    app.run_jobs().await;
    assert_eq!(call(&app, &open).await["status"], "RINGING");
    // Friday 20:00 CET: closed until Monday 09:00, which is CEST by then (07:00 UTC, not 08:00).
    app.clock.set(at("2027-03-26T19:00:00Z"));
    let closed = start(&app, &berliners[1]).await;
    app.run_jobs().await;
    let waiting = call(&app, &closed).await;
    assert_eq!(waiting["status"], "QUEUED", "{waiting:#}");
    assert_eq!(waiting["notBefore"], "2027-03-29T07:00:00+00:00");
    // Asked for Monday 06:30 UTC (08:30 CEST): at that time the dial finds the window shut
    // and defers it to 07:00 UTC.
    let early = app
        .graphql_ok(
            "mutation($c: ID!, $at: DateTime!) { enqueueCall(customerId: $c, notBefore: $at) { id } }",
            json!({ "c": berliners[2], "at": "2027-03-29T06:30:00Z" }),
        )
        .await["enqueueCall"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.clock.set(at("2027-03-29T06:30:00Z"));
    app.run_jobs().await;
    let deferred = call(&app, &early).await;
    assert_eq!(deferred["status"], "QUEUED", "{deferred:#}");
    assert_eq!(deferred["notBefore"], "2027-03-29T07:00:00+00:00");
    assert_eq!(call(&app, &closed).await["status"], "QUEUED");
    app.clock.set(at("2027-03-29T07:00:00Z"));
    app.run_jobs().await;
    assert_eq!(call(&app, &closed).await["status"], "RINGING");
    assert_eq!(call(&app, &early).await["status"], "RINGING");

    // New York: Friday 19:59:59 EDT is open, 20:00 EDT is not; Monday 09:00 is EST (14:00 UTC).
    let new_yorkers = [
        lead(&app, &numbers[3], json!({ "timeZone": "America/New_York" })).await,
        lead(&app, &numbers[4], json!({ "timeZone": "America/New_York" })).await,
    ];
    app.clock.set(at("2027-11-05T23:59:59Z"));
    let open = start(&app, &new_yorkers[0]).await;
    app.run_jobs().await;
    assert_eq!(call(&app, &open).await["status"], "RINGING");
    app.clock.set(at("2027-11-06T00:00:00Z"));
    let closed = start(&app, &new_yorkers[1]).await;
    app.run_jobs().await;
    let waiting = call(&app, &closed).await;
    assert_eq!(waiting["status"], "QUEUED", "{waiting:#}");
    assert_eq!(waiting["notBefore"], "2027-11-08T14:00:00+00:00");
    app.clock.set(at("2027-11-08T13:59:59Z"));
    app.run_jobs().await;
    assert_eq!(call(&app, &closed).await["status"], "QUEUED");
    app.clock.set(at("2027-11-08T14:00:00Z"));
    app.run_jobs().await;
    assert_eq!(call(&app, &closed).await["status"], "RINGING");
}

/// `callQueue` lists what waits in the order it is served: the better lead first, and among
/// leads scored alike, the one that waited longer.
async fn the_queue_serves_higher_scores_first_then_the_longer_wait(backend: TestBackend) {
    let app = manual(backend).await;
    let numbers = numbers_with("+4940777", Disposition::Answered, 3);
    let hot = json!({ "source": "referral", "company": "Müller GmbH", "email": null });
    let first_hot = lead(&app, &numbers[0], hot.clone()).await;
    let cold = app
        .create_customer(json!({ "name": "Kalt", "phone": numbers[1], "consentCall": true }))
        .await;
    let second_hot = lead(&app, &numbers[2], hot).await;
    let mut scores = Vec::new();
    for customer in [&first_hot, &cold, &second_hot] {
        let scored = app
            .graphql_ok(
                "mutation($c: ID!) { qualifyLead(customerId: $c) { score } }",
                json!({ "c": customer }),
            )
            .await;
        scores.push(scored["qualifyLead"]["score"].as_i64().unwrap());
    }
    assert_eq!(scores[0], scores[2], "{scores:?}");
    assert!(scores[0] > scores[1], "{scores:?}");

    // Queued in the order first hot, cold, second hot (a minute apart), all for tomorrow.
    let mut queued = Vec::new();
    for customer in [&first_hot, &cold, &second_hot] {
        let id = app
            .graphql_ok(
                "mutation($c: ID!) { enqueueCall(customerId: $c, notBefore: \"2026-11-26T10:00:00Z\") { id } }",
                json!({ "c": customer }),
            )
            .await["enqueueCall"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        queued.push(id);
        app.clock.advance(Duration::minutes(1));
    }
    let order: Vec<String> = queue(&app)
        .await
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        order,
        [queued[0].clone(), queued[2].clone(), queued[1].clone()]
    );

    // The filters: by provider (the queue and the calls), by status.
    let count = |query: &'static str| {
        let app = &app;
        async move {
            let data = app.graphql_ok(query, json!({})).await;
            let list = data.as_object().unwrap().values().next().unwrap().clone();
            list.get("nodes").unwrap_or(&list).as_array().unwrap().len()
        }
    };
    assert_eq!(
        count("{ callQueue(filter: {provider: \"simulator\"}) { id } }").await,
        3
    );
    assert_eq!(
        count("{ callQueue(filter: {provider: \"retell\"}) { id } }").await,
        0
    );
    assert_eq!(
        count("{ calls(filter: {status: [QUEUED]}) { nodes { id } } }").await,
        3
    );
    assert_eq!(
        count("{ calls(filter: {status: [ENDED, DIALING]}) { nodes { id } } }").await,
        0
    );
    assert_eq!(
        count("{ calls(filter: {provider: \"vapi\"}) { nodes { id } } }").await,
        0
    );
    app.graphql_ok(
        "mutation($id: ID!) { cancelQueuedCall(id: $id) { id } }",
        json!({ "id": queued[1] }),
    )
    .await;
    assert_eq!(
        count("{ calls(filter: {status: [ENDED]}) { nodes { id } } }").await,
        1
    );
    assert_eq!(count("{ callQueue { id } }").await, 2);
}

/// The simulator rolls each attempt anew: a number missed at first answers its retry an hour
/// later, the conversation is logged, and no third attempt follows.
async fn a_retry_reaches_the_lead_the_first_call_missed(backend: TestBackend) {
    let app = manual(backend).await;
    let number = numbers_where("+4930555", 1, |n| {
        plan(n, 1).disposition == Disposition::NoAnswer
            && plan(n, 2).disposition == Disposition::Answered
    })
    .remove(0);
    let customer = lead(&app, &number, json!({})).await;
    let first = start(&app, &customer).await;
    app.run_jobs().await;
    play(&app, 30).await;
    assert_eq!(call(&app, &first).await["disposition"], "NO_ANSWER");
    app.clock.advance(Duration::minutes(61));
    app.run_jobs().await;
    play(&app, 40).await;
    let data = app
        .graphql_ok(
            "query($c: ID!) { calls(filter: { customerId: $c }) { nodes { id attempt status disposition isFinal segments { seq } } } }",
            json!({ "c": customer }),
        )
        .await;
    let attempts = data["calls"]["nodes"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    let retry = &attempts[0];
    assert_eq!(retry["attempt"], 2);
    assert_eq!(retry["status"], "ENDED", "{retry:#}");
    assert_eq!(retry["disposition"], "ANSWERED");
    assert_eq!(retry["isFinal"], true);
    assert_eq!(retry["segments"].as_array().unwrap().len(), 6);
    assert!(queue(&app).await.is_empty());
}

/// `callEvents` streams only what the caller may see: a sales rep who owns their leads gets
/// the events of their own customers' calls, and a `customerId` filter keeps one customer's.
async fn call_events_reach_only_those_who_may_see_the_customer(backend: TestBackend) {
    let app = manual(backend).await;
    let numbers = numbers_with("+4930888", Disposition::Answered, 2);
    let sams = lead(&app, &numbers[0], json!({ "owner": "sam" })).await;
    let olgas = lead(&app, &numbers[1], json!({ "owner": "olga" })).await;
    let subscribe = |filter: Value| {
        json!({ "id": "e", "type": "subscribe", "payload": {
            "query": "subscription($f: CallEventFilter) { callEvents(filter: $f) { callId status } }",
            "variables": { "f": filter } } })
    };
    let sam = app.token_for(Role::Sales, "sam");
    let (mut own, ack) = connect(&app, json!({ "Authorization": format!("Bearer {sam}") })).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    send(&mut own, subscribe(Value::Null)).await;
    let admin = app.token.clone();
    let (mut filtered, _) =
        connect(&app, json!({ "Authorization": format!("Bearer {admin}") })).await;
    send(&mut filtered, subscribe(json!({ "customerId": olgas }))).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let olgas_call = start(&app, &olgas).await;
    let sams_call = start(&app, &sams).await;
    app.run_jobs().await;
    // Each subscriber gets QUEUED then DIALING of the one call it may see, and nothing else.
    for (socket, call) in [(&mut own, &sams_call), (&mut filtered, &olgas_call)] {
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let message = receive(socket).await;
            assert_eq!(message["type"], "next", "{message}");
            let event = &message["payload"]["data"]["callEvents"];
            assert_eq!(event["callId"], call.as_str(), "{event}");
            seen.push(event["status"].as_str().unwrap().to_owned());
        }
        assert_eq!(seen, ["QUEUED", "DIALING"]);
    }
    // Sam was never sent Olga's: the next event on his socket is his own call ringing.
    play(&app, 4).await;
    let next = receive(&mut own).await;
    assert_eq!(
        next["payload"]["data"]["callEvents"]["callId"],
        sams_call.as_str()
    );
    assert_eq!(next["payload"]["data"]["callEvents"]["status"], "RINGING");
}

/// A lead that says during the call not to be called again is put on the do-not-call list
/// (source `call`): no retry, and a new call is refused.
async fn a_lead_asking_not_to_be_called_is_listed_and_not_called_again(backend: TestBackend) {
    let app = manual(backend).await;
    let phone =
        numbers_where("+4930555", 1, |n| plan(n, 1).outcome == Some("do_not_call")).remove(0);
    let customer = lead(&app, &phone, json!({})).await;
    let id = start(&app, &customer).await;
    app.run_jobs().await;
    play(&app, 30).await;
    let ended = call(&app, &id).await;
    assert_eq!(ended["status"], "ENDED", "{ended:#}");
    assert_eq!(ended["outcome"], "do_not_call");
    assert_eq!(ended["isFinal"], true);
    let listed = app
        .graphql_ok("{ doNotCallList { phone source } }", json!({}))
        .await;
    assert_eq!(
        listed["doNotCallList"],
        json!([{ "phone": phone, "source": "call" }])
    );
    assert!(queue(&app).await.is_empty(), "no retry");
    let refused = app.graphql(START, json!({ "c": customer })).await;
    assert_eq!(error_code(&refused), "VALIDATION_FAILED", "{refused:#}");
}

/// A lead whose language no agent speaks (or who has none) is called by the default agent.
async fn a_lead_without_an_agent_of_its_language_gets_the_default_agent(backend: TestBackend) {
    let app = manual(backend).await;
    let numbers = numbers_with("+4930999", Disposition::Answered, 2);
    let french = lead(&app, &numbers[0], json!({ "language": "fr" })).await;
    let unknown = lead(&app, &numbers[1], json!({ "language": null })).await;
    for customer in [french, unknown] {
        let started = app.graphql_ok(START, json!({ "c": customer })).await;
        assert_eq!(
            started["startVoiceCall"]["agent"],
            app.config.voice.default_agent.as_str(),
            "{started:#}"
        );
    }
    let unknown_agent = app
        .graphql(
            "mutation($c: ID!) { startVoiceCall(customerId: $c, agent: \"klingon\") { id } }",
            json!({ "c": lead(&app, "+4930111222", json!({})).await }),
        )
        .await;
    assert!(
        unknown_agent["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("klingon"),
        "{unknown_agent:#}"
    );
}

/// A hot lead the pipeline calls who never answers: the voice-call step waits through every
/// attempt (three, spaced 60 and 240 minutes) and only then completes with the final outcome,
/// and the run moves on to the follow-up.
async fn the_pipeline_moves_on_after_the_last_unanswered_attempt(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let customer = lead(&app, &number_missed(3), json!({})).await;
    app.run_jobs().await;
    const RUN: &str =
        "query($id: ID!) { pipelineRun(id: $id) { status steps { name status detail } } }";
    let calls = app
        .graphql_ok(
            "query($c: ID!) { calls(filter: { customerId: $c }) { nodes { runId } } }",
            json!({ "c": customer }),
        )
        .await;
    let run = calls["calls"]["nodes"][0]["runId"]
        .as_str()
        .unwrap()
        .to_owned();
    let step = |data: &Value, n: usize| data["pipelineRun"]["steps"][n].clone();
    for wait in [61, 241] {
        play(&app, 30).await;
        let during = app.graphql_ok(RUN, json!({ "id": run })).await;
        assert_eq!(during["pipelineRun"]["status"], "RUNNING", "{during:#}");
        assert_eq!(
            step(&during, 2)["status"],
            "PENDING",
            "a retry is due: {during:#}"
        );
        app.clock.advance(Duration::minutes(wait));
        app.run_jobs().await;
    }
    play(&app, 30).await;
    let after = app.graphql_ok(RUN, json!({ "id": run })).await;
    assert_eq!(after["pipelineRun"]["status"], "COMPLETED", "{after:#}");
    let call_step = step(&after, 2);
    assert_eq!(call_step["name"], "voice-call");
    assert_eq!(call_step["status"], "DONE");
    assert_eq!(
        call_step["detail"]["disposition"], "no_answer",
        "{call_step:#}"
    );
    assert_eq!(call_step["detail"]["attempts"], 3);
    assert_eq!(step(&after, 3)["name"], "follow-up");
    assert_eq!(step(&after, 3)["status"], "DONE", "{after:#}");
}
