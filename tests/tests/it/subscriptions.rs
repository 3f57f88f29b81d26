//! GraphQL subscriptions over WebSocket (`/graphql/ws`, graphql-transport-ws): authenticated in
//! `connection_init`, checked against the policy at subscribe time, scoped like the rows, and
//! resumable with `afterSeq`.

use crm_domain::Role;
use crm_tests::{TestApp, TestBackend, on_both_backends};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, client::IntoClientRequest as _},
};

on_both_backends!(
    pipeline_events_stream_as_runs_advance_and_resume_after_a_seq,
    subscriptions_need_credentials_a_rule_and_see_only_their_rows,
    the_socket_serves_only_subscriptions_and_rechecks_credentials,
    handshakes_that_are_not_websocket_upgrades_are_refused_clearly,
);

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

const EVENTS: &str = "subscription($after: Int) { pipelineEvents(afterSeq: $after) { \
    seq runId customerId step status runStatus detail } }";

/// Opens `/graphql/ws` and sends `connection_init` with `payload`; returns the socket and the
/// server's answer.
pub(crate) async fn connect(app: &TestApp, payload: Value) -> (Socket, Value) {
    let url = format!("{}/graphql/ws", app.url.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = connect_async(request).await.unwrap();
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": payload }),
    )
    .await;
    let answer = receive(&mut socket).await;
    (socket, answer)
}

pub(crate) async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .unwrap();
}

/// The next message, as JSON (a close frame as `{"type": "close", "code": …}`). The timeout only
/// keeps a broken test from hanging.
pub(crate) async fn receive(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .unwrap_or_else(|_| panic!("no message within 20 s"));
        match message {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] == "ping" || value["type"] == "pong" {
                    continue;
                }
                return value;
            }
            Some(Ok(Message::Close(frame))) => {
                return json!({ "type": "close", "code": frame.map(|f| u16::from(f.code)) });
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return json!({ "type": "close" }),
        }
    }
}

async fn subscribe(socket: &mut Socket, after: Option<i64>) {
    send(
        socket,
        json!({ "id": "1", "type": "subscribe",
                "payload": { "query": EVENTS, "variables": { "after": after } } }),
    )
    .await;
}

/// The error code of a `next` (or `error`) message.
fn code(message: &Value) -> &str {
    let errors = if message["type"] == "error" {
        &message["payload"]
    } else {
        &message["payload"]["errors"]
    };
    errors[0]["extensions"]["code"].as_str().unwrap_or_default()
}

async fn pipeline_events_stream_as_runs_advance_and_resume_after_a_seq(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for(Role::Manager, "mia");
    let (mut socket, ack) =
        connect(&app, json!({ "Authorization": format!("Bearer {token}") })).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    subscribe(&mut socket, Some(0)).await;

    let id = app
        .create_customer(json!({ "name": "Jürgen Müller", "email": "j@firma.de",
                                 "phone": "030 123456", "company": "Müller GmbH",
                                 "language": "de", "source": "webform" }))
        .await;
    let started = receive(&mut socket).await;
    assert_eq!(started["type"], "next", "{started}");
    let started = &started["payload"]["data"]["pipelineEvents"];
    assert_eq!(started["customerId"], id.as_str());
    assert_eq!(started["step"], "qualify-lead");
    assert_eq!(started["status"], "pending");
    assert_eq!(started["runStatus"], "RUNNING");
    assert_eq!(started["detail"]["cause"], "created");

    app.run_jobs().await;
    let scored = receive(&mut socket).await;
    let scored = &scored["payload"]["data"]["pipelineEvents"];
    assert_eq!(scored["status"], "done");
    assert_eq!(scored["runStatus"], "RUNNING", "voice-call is next");
    assert_eq!(scored["detail"]["score"], 55);
    assert_eq!(scored["detail"]["nextAction"], "call");
    assert_eq!(scored["runId"], started["runId"]);
    assert!(scored["seq"].as_i64() > started["seq"].as_i64());

    // A client that reconnects resumes after the last seq it saw.
    let (mut again, ack) =
        connect(&app, json!({ "Authorization": format!("Bearer {token}") })).await;
    assert_eq!(ack["type"], "connection_ack");
    subscribe(&mut again, started["seq"].as_i64()).await;
    let resumed = receive(&mut again).await;
    assert_eq!(
        resumed["payload"]["data"]["pipelineEvents"]["seq"],
        scored["seq"]
    );
}

async fn subscriptions_need_credentials_a_rule_and_see_only_their_rows(backend: TestBackend) {
    // A policy without the viewer's subscription row.
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.csv");
    let text = crm_api::authz::DEFAULT_POLICY
        .lines()
        .filter(|line| !line.contains("viewer, Subscription.pipelineEvents"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&policy, text).unwrap();
    let app = TestApp::spawn_with(backend, |c| c.auth.policy_file = Some(policy.clone())).await;

    let (_, refused) = connect(&app, json!({})).await;
    assert_eq!(
        refused["type"], "close",
        "no credentials, no connection: {refused}"
    );
    let (_, refused) = connect(&app, json!({ "Authorization": "Bearer forged.token.here" })).await;
    assert_eq!(refused["type"], "close", "{refused}");

    let viewer = app.token_for(Role::Viewer, "vera");
    let (mut socket, ack) = connect(&app, json!({ "Authorization": viewer })).await;
    assert_eq!(
        ack["type"], "connection_ack",
        "a bare token is accepted too"
    );
    subscribe(&mut socket, Some(0)).await;
    let error = receive(&mut socket).await;
    assert!(error["payload"]["data"].is_null(), "{error}");
    assert_eq!(
        error["payload"]["errors"][0]["extensions"]["code"],
        "FORBIDDEN"
    );

    // Sales see the events of their own (and unassigned) leads only.
    app.create_customer(json!({ "name": "Theirs", "email": "t@firma.de", "owner": "ben" }))
        .await;
    let mine = app
        .create_customer(json!({ "name": "Mine", "email": "m@firma.de", "owner": "anna" }))
        .await;
    let anna = app.token_for(Role::Sales, "anna");
    let (mut socket, _) = connect(&app, json!({ "Authorization": format!("Bearer {anna}") })).await;
    subscribe(&mut socket, Some(0)).await;
    let first = receive(&mut socket).await;
    assert_eq!(
        first["payload"]["data"]["pipelineEvents"]["customerId"],
        mine.as_str()
    );
}

async fn the_socket_serves_only_subscriptions_and_rechecks_credentials(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let created = app
        .graphql_ok(
            "mutation { createApiKey(input: {name: \"feed\", role: MANAGER}) { key apiKey { id } } }",
            json!({}),
        )
        .await["createApiKey"]
        .clone();
    let key = created["key"].as_str().unwrap();
    let (mut socket, ack) =
        connect(&app, json!({ "Authorization": format!("Bearer {key}") })).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");

    // Mutations and queries belong to POST /graphql (rate-limited per caller there).
    send(
        &mut socket,
        json!({ "id": "m", "type": "subscribe", "payload": {
            "query": "mutation { createCustomer(input: {name: \"Sneaky\", email: \"s@firma.de\"}) { id } }" } }),
    )
    .await;
    let refused = receive(&mut socket).await;
    assert_eq!(code(&refused), "BAD_REQUEST", "{refused}");
    let listed = app
        .graphql_ok("{ customers { nodes { id } } }", json!({}))
        .await;
    assert_eq!(
        listed["customers"]["nodes"],
        json!([]),
        "nothing was created"
    );

    // A key revoked after connecting cannot start another subscription.
    app.graphql_ok(
        "mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }",
        json!({ "id": created["apiKey"]["id"] }),
    )
    .await;
    send(
        &mut socket,
        json!({ "id": "2", "type": "subscribe", "payload": { "query": EVENTS } }),
    )
    .await;
    let refused = loop {
        let message = receive(&mut socket).await;
        if message["type"] != "complete" {
            break message;
        }
    };
    assert_eq!(code(&refused), "UNAUTHENTICATED", "{refused}");
}

async fn handshakes_that_are_not_websocket_upgrades_are_refused_clearly(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let url = format!("{}/graphql/ws", app.url);
    let handshake = |version: &str| {
        app.client
            .get(&url)
            .header("sec-websocket-protocol", "graphql-transport-ws")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", version)
            // RFC 6455's own example (section 1.3).
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    };
    // A plain GET asks for no upgrade.
    let plain = app
        .client
        .get(&url)
        .header("sec-websocket-protocol", "graphql-transport-ws")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 426);
    let body: Value = plain.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_REQUEST",
        "{body}"
    );
    // An older WebSocket version.
    let old = handshake("8").send().await.unwrap();
    assert_eq!(old.status(), 400);
    let body: Value = old.json().await.unwrap();
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Sec-WebSocket-Version: 13")),
        "{body}"
    );
    // A proper one: switched, with the RFC's accept key for that nonce and the protocol.
    let switched = handshake("13").send().await.unwrap();
    assert_eq!(switched.status(), 101);
    assert_eq!(
        switched.headers()["sec-websocket-accept"],
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    assert_eq!(
        switched.headers()["sec-websocket-protocol"],
        "graphql-transport-ws"
    );
}
