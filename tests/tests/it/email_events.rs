//! SendGrid's signed Event Webhook through the real server: deliveries signed as SendGrid signs
//! them (ECDSA P-256 over SHA-256 of `timestamp ‖ raw body`, DER, base64) are stored once per
//! `sg_event_id`, set the email's last event and suppress bounced addresses; unsigned, stale,
//! tampered and foreign deliveries are refused, and without a key the route does not exist.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use chrono::{DateTime, Duration, Utc};
use crm_tests::{TestApp, TestBackend, error_code, on_both_backends};
use p256::{
    ecdsa::{Signature, SigningKey, signature::Signer as _},
    pkcs8::{EncodePublicKey as _, LineEnding},
};
use rand_core::OsRng;
use serde_json::{Value, json};

on_both_backends!(
    signed_events_are_stored_once_and_set_the_last_event,
    a_bounce_suppresses_the_address,
    unsigned_stale_tampered_and_foreign_deliveries_are_refused,
    without_a_public_key_the_route_does_not_exist,
);

const PATH: &str = "/webhooks/email/sendgrid";
const SIGNATURE_HEADER: &str = "X-Twilio-Email-Event-Webhook-Signature";
const TIMESTAMP_HEADER: &str = "X-Twilio-Email-Event-Webhook-Timestamp";

const SEND: &str = "mutation($c: ID!, $t: String!) { sendEmail(customerId: $c, template: $t) \
    { id status } }";

const EMAILS: &str = "query($c: ID!) { emails(customerId: $c) { nodes { id status lastEvent \
    events { kind at } } } }";

/// A fresh key pair: the signing key and the public key as SendGrid shows it (base64 of the
/// DER SubjectPublicKeyInfo).
fn key_pair() -> (SigningKey, String) {
    let signing = SigningKey::random(&mut OsRng);
    let der = signing.verifying_key().to_public_key_der().unwrap();
    let public = STANDARD.encode(der.as_bytes());
    (signing, public)
}

/// The same public key as PEM, the other format the config accepts.
fn pem(signing: &SigningKey) -> String {
    signing
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap()
}

/// The signature SendGrid would send for `timestamp` and `body`.
fn sign(key: &SigningKey, timestamp: &str, body: &[u8]) -> String {
    let mut message = timestamp.as_bytes().to_vec();
    message.extend_from_slice(body);
    let signature: Signature = key.sign(&message);
    STANDARD.encode(signature.to_der().as_bytes())
}

async fn spawn(backend: TestBackend, public_key: Option<String>) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.pipeline.start_on_create = false;
        c.email.sendgrid.event_public_key = public_key;
    })
    .await
}

fn now(app: &TestApp) -> DateTime<Utc> {
    crm_domain::Clock::now(app.clock.as_ref())
}

/// POSTs `body` with exactly `headers`; the status and the JSON answer.
async fn post(app: &TestApp, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    let mut request = app
        .client
        .post(format!("{}{PATH}", app.url))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("POST {PATH} answered {status} without JSON ({e}): {text}"));
    (status, json)
}

/// POSTs `body` signed with `key` at `timestamp` (unix seconds).
async fn post_signed(app: &TestApp, key: &SigningKey, timestamp: i64, body: &[u8]) -> (u16, Value) {
    let timestamp = timestamp.to_string();
    let signature = sign(key, &timestamp, body);
    post(
        app,
        &[
            (SIGNATURE_HEADER, signature.as_str()),
            (TIMESTAMP_HEADER, timestamp.as_str()),
        ],
        body,
    )
    .await
}

async fn customer(app: &TestApp, name: &str, email: &str) -> String {
    app.create_customer(json!({ "name": name, "email": email, "language": "de",
                                "consentEmail": true }))
        .await
}

/// Sends nurture-1 to `customer` through the outbox; the email's id.
async fn send(app: &TestApp, customer: &str) -> String {
    let sent = app
        .graphql_ok(SEND, json!({ "c": customer, "t": "nurture-1" }))
        .await["sendEmail"]
        .clone();
    assert_eq!(sent["status"], "queued", "{sent:#}");
    app.run_jobs().await;
    sent["id"].as_str().unwrap().to_owned()
}

/// The customer's one email.
async fn email(app: &TestApp, customer: &str) -> Value {
    let data = app.graphql_ok(EMAILS, json!({ "c": customer })).await;
    let nodes = data["emails"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{data:#}");
    nodes[0].clone()
}

fn kinds(email: &Value) -> Vec<String> {
    email["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn times(email: &Value) -> Vec<DateTime<Utc>> {
    email["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            DateTime::parse_from_rfc3339(e["at"].as_str().unwrap())
                .unwrap()
                .with_timezone(&Utc)
        })
        .collect()
}

async fn signed_events_are_stored_once_and_set_the_last_event(backend: TestBackend) {
    let (signing, public) = key_pair();
    let app = spawn(backend, Some(public)).await;
    let id = customer(&app, "Ana Kovač", "ana@firma.example").await;
    let email_id = send(&app, &id).await;
    let sent = email(&app, &id).await;
    assert_eq!(sent["status"], "sent", "{sent:#}");
    assert_eq!(sent["lastEvent"], Value::Null);
    assert_eq!(sent["events"], json!([]));

    let t0 = now(&app).timestamp();
    let events = json!([
        {"email": "ana@firma.example", "timestamp": t0 - 60, "event": "processed",
         "sg_event_id": "cHJvY2Vzc2VkLTE", "sg_message_id": "W2dY.recvd-1",
         "crm_email_id": email_id},
        {"email": "ana@firma.example", "timestamp": t0 - 50, "event": "delivered",
         "response": "250 2.0.0 OK", "sg_event_id": "ZGVsaXZlcmVkLTE",
         "sg_message_id": "W2dY.filter1", "crm_email_id": email_id},
        {"email": "ana@firma.example", "timestamp": t0 - 40, "event": "open",
         "useragent": "Mozilla/5.0", "ip": "192.0.2.10", "sg_event_id": "b3Blbi0x",
         "sg_message_id": "W2dY.filter1", "crm_email_id": email_id},
        {"email": "ana@firma.example", "timestamp": t0 - 30, "event": "click",
         "url": "https://acme.example/termin?id=7", "sg_event_id": "Y2xpY2stMQ",
         "sg_message_id": "W2dY.filter1", "crm_email_id": email_id},
    ]);
    let body = serde_json::to_vec(&events).unwrap();
    let timestamp = t0.to_string();
    let signature = sign(&signing, &timestamp, &body);
    let headers = [
        (SIGNATURE_HEADER, signature.as_str()),
        (TIMESTAMP_HEADER, timestamp.as_str()),
    ];
    let (status, answer) = post(&app, &headers, &body).await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(answer, json!({ "received": 4, "new": 4 }));

    let stored = email(&app, &id).await;
    assert_eq!(stored["id"], email_id.as_str());
    assert_eq!(stored["status"], "sent", "events do not change the status");
    assert_eq!(stored["lastEvent"], "clicked", "{stored:#}");
    assert_eq!(
        kinds(&stored),
        ["processed", "delivered", "opened", "clicked"],
        "{stored:#}"
    );
    let expected: Vec<DateTime<Utc>> = [60, 50, 40, 30]
        .into_iter()
        .map(|ago| DateTime::from_timestamp(t0 - ago, 0).unwrap())
        .collect();
    assert_eq!(times(&stored), expected, "{stored:#}");

    // SendGrid redelivers: the very same request, a little later but within the window…
    app.clock.advance(Duration::seconds(30));
    let (status, answer) = post(&app, &headers, &body).await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(answer, json!({ "received": 4, "new": 0 }));
    // …and the same body signed anew two minutes on.
    app.clock.advance(Duration::minutes(2));
    let (status, answer) = post_signed(&app, &signing, now(&app).timestamp(), &body).await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(answer, json!({ "received": 4, "new": 0 }));
    assert_eq!(email(&app, &id).await, stored, "a repeat changes nothing");

    // A repeat in a delivery with one new event stores only the new one.
    let bounce_free = json!([
        events[3].clone(),
        {"email": "ana@firma.example", "timestamp": t0 + 100, "event": "open",
         "sg_event_id": "b3Blbi0y", "sg_message_id": "W2dY.filter1", "crm_email_id": email_id},
    ]);
    let body = serde_json::to_vec(&bounce_free).unwrap();
    let (status, answer) = post_signed(&app, &signing, now(&app).timestamp(), &body).await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(answer, json!({ "received": 2, "new": 1 }));
    let after = email(&app, &id).await;
    assert_eq!(after["lastEvent"], "opened", "{after:#}");
    assert_eq!(
        kinds(&after),
        ["processed", "delivered", "opened", "clicked", "opened"]
    );
    // The send's interaction carries the furthest event (a later open does not undo the
    // click), which scoring reads.
    let logged = app
        .graphql_ok(
            "query($id: ID!) { customer(id: $id) { interactions { kind outcome } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        logged["customer"]["interactions"][0]["outcome"], "clicked",
        "{logged:#}"
    );

    // Opens and clicks suppress nothing: another email to Ana is accepted.
    let again = app
        .graphql(SEND, json!({ "c": id, "t": "nurture-2" }))
        .await;
    assert!(again.get("errors").is_none(), "{again:#}");
}

async fn a_bounce_suppresses_the_address(backend: TestBackend) {
    // The key configured as PEM this time.
    let (signing, _) = key_pair();
    let app = spawn(backend, Some(pem(&signing))).await;
    let bob = customer(&app, "Bob Berger", "bob@firma.example").await;
    let carl = customer(&app, "Carl Conrad", "carl@firma.example").await;
    let email_id = send(&app, &bob).await;

    let t0 = now(&app).timestamp();
    let body = serde_json::to_vec(&json!([
        {"email": "bob@firma.example", "timestamp": t0 - 5, "event": "bounce", "type": "bounce",
         "status": "5.1.1",
         "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
         "sg_event_id": "Ym91bmNlLTE", "crm_email_id": email_id},
    ]))
    .unwrap();
    let (status, answer) = post_signed(&app, &signing, t0, &body).await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(answer, json!({ "received": 1, "new": 1 }));
    let stored = email(&app, &bob).await;
    assert_eq!(stored["lastEvent"], "bounced", "{stored:#}");
    assert_eq!(kinds(&stored), ["bounced"]);

    // The address is suppressed: a new email to Bob is refused, and says why.
    let refused = app
        .graphql(SEND, json!({ "c": bob, "t": "nurture-2" }))
        .await;
    assert_eq!(error_code(&refused), "VALIDATION_FAILED", "{refused:#}");
    let message = refused["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("suppression"), "{message}");
    assert!(message.contains("bob@firma.example"), "{message}");
    assert!(message.contains("bounced"), "{message}");
    assert_eq!(
        app.graphql_ok(EMAILS, json!({ "c": bob })).await["emails"]["nodes"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "nothing was queued"
    );

    // Another address is not affected.
    let fine = app
        .graphql(SEND, json!({ "c": carl, "t": "nurture-1" }))
        .await;
    assert!(fine.get("errors").is_none(), "{fine:#}");
}

async fn unsigned_stale_tampered_and_foreign_deliveries_are_refused(backend: TestBackend) {
    let (signing, public) = key_pair();
    let (other, _) = key_pair();
    let app = spawn(backend, Some(public)).await;
    let id = customer(&app, "Dora Dietz", "dora@firma.example").await;

    let t0 = now(&app).timestamp();
    let timestamp = t0.to_string();
    // A bounce, so a delivery wrongly accepted would also show as a suppression.
    let body = serde_json::to_vec(&json!([
        {"email": "dora@firma.example", "timestamp": t0 - 5, "event": "bounce",
         "type": "bounce", "reason": "550 5.1.1 unknown user", "sg_event_id": "ZG9yYS0x"},
    ]))
    .unwrap();
    let signature = sign(&signing, &timestamp, &body);

    let unauthenticated = |(status, answer): (u16, Value), case: &str| {
        assert_eq!(status, 401, "{case}: {answer:#}");
        assert_eq!(error_code(&answer), "UNAUTHENTICATED", "{case}: {answer:#}");
        answer["errors"][0]["message"].as_str().unwrap().to_owned()
    };

    // The signature of another body.
    let tampered = String::from_utf8(body.clone())
        .unwrap()
        .replace("\"bounce\"", "\"delivered\"");
    assert_ne!(tampered.as_bytes(), body.as_slice());
    let message = unauthenticated(
        post(
            &app,
            &[
                (SIGNATURE_HEADER, signature.as_str()),
                (TIMESTAMP_HEADER, timestamp.as_str()),
            ],
            tampered.as_bytes(),
        )
        .await,
        "tampered body",
    );
    assert!(message.contains("signature"), "{message}");

    // The timestamp is signed: moving it breaks the signature.
    let moved = (t0 + 1).to_string();
    unauthenticated(
        post(
            &app,
            &[
                (SIGNATURE_HEADER, signature.as_str()),
                (TIMESTAMP_HEADER, moved.as_str()),
            ],
            &body,
        )
        .await,
        "moved timestamp",
    );

    // Correctly signed, but ten minutes old (or ten minutes ahead).
    for (case, at) in [("stale", t0 - 600), ("future", t0 + 600)] {
        let message = unauthenticated(post_signed(&app, &signing, at, &body).await, case);
        assert!(message.contains("away from now"), "{case}: {message}");
    }

    // Missing headers.
    let message = unauthenticated(post(&app, &[], &body).await, "no headers");
    assert!(
        message.to_lowercase().contains("signature"),
        "no headers: {message}"
    );
    let message = unauthenticated(
        post(&app, &[(SIGNATURE_HEADER, signature.as_str())], &body).await,
        "no timestamp",
    );
    assert!(
        message.to_lowercase().contains("timestamp"),
        "no timestamp: {message}"
    );
    unauthenticated(
        post(&app, &[(TIMESTAMP_HEADER, timestamp.as_str())], &body).await,
        "no signature",
    );
    unauthenticated(
        post(
            &app,
            &[
                (SIGNATURE_HEADER, "not base64!"),
                (TIMESTAMP_HEADER, timestamp.as_str()),
            ],
            &body,
        )
        .await,
        "garbage signature",
    );

    // Signed with another key.
    let message = unauthenticated(post_signed(&app, &other, t0, &body).await, "another key");
    assert!(message.contains("signature"), "{message}");

    // Validly signed, but not an array of events.
    for invalid in [
        &br#"{"event":"bounce","email":"dora@firma.example"}"#[..],
        b"not json",
    ] {
        let (status, answer) = post_signed(&app, &signing, t0, invalid).await;
        assert_eq!(status, 400, "{answer:#}");
        assert_eq!(error_code(&answer), "BAD_REQUEST", "{answer:#}");
    }

    // Nothing refused was stored: Dora can still be mailed, and the bounce is new when it
    // finally arrives properly signed.
    let fine = app
        .graphql(SEND, json!({ "c": id, "t": "nurture-1" }))
        .await;
    assert!(fine.get("errors").is_none(), "{fine:#}");
    let (status, answer) = post_signed(&app, &signing, t0, &body).await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(answer, json!({ "received": 1, "new": 1 }));
    let refused = app
        .graphql(SEND, json!({ "c": id, "t": "nurture-2" }))
        .await;
    assert_eq!(error_code(&refused), "VALIDATION_FAILED", "{refused:#}");
}

async fn without_a_public_key_the_route_does_not_exist(backend: TestBackend) {
    let (signing, _) = key_pair();
    let app = spawn(backend, None).await;
    let t0 = now(&app).timestamp();
    let body = serde_json::to_vec(&json!([
        {"email": "eve@firma.example", "timestamp": t0, "event": "spamreport",
         "sg_event_id": "c3BhbS0x"},
    ]))
    .unwrap();
    let (status, answer) = post_signed(&app, &signing, t0, &body).await;
    assert_eq!(status, 404, "{answer:#}");
    assert_eq!(error_code(&answer), "NOT_FOUND", "{answer:#}");
    let (status, _) = post(&app, &[], &body).await;
    assert_eq!(status, 404);
}
