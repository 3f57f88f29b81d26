//! SendGrid's Signed Event Webhook with deliveries signed here as SendGrid signs them
//! (PROVIDERS.md §5.3–5.4): ECDSA P-256 over SHA-256 of `timestamp ‖ raw body`, DER, base64.

use crate::OrPanic as _;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use crm_domain::{EmailEventKind, WebhookError, WebhookRequest};
use crm_email::sendgrid::{
    Config, EventWebhook,
    webhook::{EventKey, SIGNATURE_HEADER, TIMESTAMP_HEADER, parse, verify},
};
use p256::{
    ecdsa::{Signature, SigningKey, signature::Signer as _},
    pkcs8::{EncodePublicKey as _, LineEnding},
};
use rand_core::OsRng;

const TIMESTAMP: &str = "1777888800";

/// The time of [`TIMESTAMP`].
fn signed_at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_777_888_800, 0).or_panic("a valid time")
}

/// A realistic delivery (PROVIDERS.md §5.3): one event of every kind, plus events to skip.
const BODY: &str = r#"[
  {"email":"ana@firma.example","timestamp":1777888790,"smtp-id":"<0192f3c4@acme.example>","event":"processed","category":"follow-up","sg_event_id":"cHJvY2Vzc2VkLTM4MTI5","sg_message_id":"W2dYcxfPQxKkw1Pd3sMtRg.recvd-5f8c7b9d6-abcde-1-6624E0A4-1.0","crm_email_id":"0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6071","customer_id":"c-42"},
  {"email":"ana@firma.example","timestamp":1777888795,"event":"deferred","response":"451 4.7.1 Greylisted, try again later","attempt":"1","sg_event_id":"ZGVmZXJyZWQtMQ","sg_message_id":"W2dYcxfPQxKkw1Pd3sMtRg.filter0001","crm_email_id":"0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6071"},
  {"email":"ana@firma.example","timestamp":1777888799,"event":"delivered","response":"250 2.0.0 OK","sg_event_id":"ZGVsaXZlcmVkLTA","sg_message_id":"W2dYcxfPQxKkw1Pd3sMtRg.filter0001","crm_email_id":"0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6071","category":["follow-up","de"]},
  {"email":"ana@firma.example","timestamp":"1777888900","event":"open","useragent":"Mozilla/5.0","ip":"192.0.2.10","sg_machine_open":false,"sg_event_id":"b3Blbi0x","sg_message_id":"W2dYcxfPQxKkw1Pd3sMtRg.filter0001","crm_email_id":"0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6071"},
  {"email":"ana@firma.example","timestamp":1777888950,"event":"click","url":"https://acme.example/termin?id=7","url_offset":{"index":0,"type":"html"},"sg_event_id":"Y2xpY2stMQ","sg_message_id":"W2dYcxfPQxKkw1Pd3sMtRg.filter0001","crm_email_id":"0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6071"},
  {"email":"bob@firma.example","timestamp":1777888960,"event":"bounce","type":"bounce","status":"5.1.1","reason":"550 5.1.1 The email account that you tried to reach does not exist.","sg_event_id":"Ym91bmNlLTE","crm_email_id":"e2"},
  {"email":"carl@firma.example","timestamp":1777888961,"event":"bounce","type":"blocked","status":"4.0.0","reason":"421 Service not available","sg_event_id":"YmxvY2tlZC0x","sg_message_id":"X.filter1","crm_email_id":"e3"},
  {"email":"dora@firma.example","timestamp":1777888962,"event":"dropped","reason":"Bounced Address","status":"5.0.0","sg_event_id":"ZHJvcHBlZC0x","sg_message_id":"Y.filter1","crm_email_id":"e4"},
  {"email":"eve@firma.example","timestamp":1777888963,"event":"spamreport","sg_event_id":"c3BhbS0x","sg_message_id":"Z.filter1","crm_email_id":"e5"},
  {"email":"fred@firma.example","timestamp":1777888964,"event":"unsubscribe","sg_event_id":"dW5zdWItMQ","sg_message_id":"U.filter1"},
  {"email":"gina@firma.example","timestamp":1777888965,"event":"group_unsubscribe","asm_group_id":7,"url":"https://sendgrid.example/unsub","sg_event_id":"Z3JvdXAtdW5zdWI","sg_message_id":"G.filter1","crm_email_id":"e7"},
  {"email":"gina@firma.example","timestamp":1777888966,"event":"group_resubscribe","asm_group_id":7,"sg_event_id":"Z3JvdXAtcmVzdWI"},
  {"email":"hans@firma.example","timestamp":1777888967,"event":"delivered","sg_message_id":"no-event-id"},
  {"email":"ina@firma.example","timestamp":1777888968,"event":"account_status_change","sg_event_id":"YWNjb3VudA"},
  {"timestamp":1777888969,"event":"delivered","sg_event_id":"bm8tZW1haWw"},
  {"email":"jan@firma.example","timestamp":"yesterday","event":"delivered","sg_event_id":"YmFkLXRpbWU"},
  42, null, "delivered", []
]"#;

fn key_pair() -> (SigningKey, EventKey, String) {
    let signing = SigningKey::random(&mut OsRng);
    let der = signing
        .verifying_key()
        .to_public_key_der()
        .or_panic("the key encodes");
    let base64 = STANDARD.encode(der.as_bytes());
    let key = EventKey::parse(&base64).or_panic("SendGrid's key format parses");
    (signing, key, base64)
}

/// The signature SendGrid would send for `timestamp` and `body`.
fn sign(key: &SigningKey, timestamp: &str, body: &[u8]) -> String {
    let mut message = timestamp.as_bytes().to_vec();
    message.extend_from_slice(body);
    let signature: Signature = key.sign(&message);
    STANDARD.encode(signature.to_der().as_bytes())
}

fn unauthenticated(outcome: Result<(), WebhookError>) -> String {
    match outcome {
        Err(WebhookError::Unauthenticated(message)) => message,
        other => panic!("expected Unauthenticated, got {other:?}"),
    }
}

#[test]
fn a_signed_delivery_verifies() {
    let (signing, key, _) = key_pair();
    let signature = sign(&signing, TIMESTAMP, BODY.as_bytes());
    verify(
        &key,
        &signature,
        TIMESTAMP,
        BODY.as_bytes(),
        signed_at(),
        300,
    )
    .or_panic("valid");
    // Within the window either way.
    let late = signed_at() + chrono::Duration::seconds(300);
    verify(&key, &signature, TIMESTAMP, BODY.as_bytes(), late, 300).or_panic("valid");
    let early = signed_at() - chrono::Duration::seconds(300);
    verify(&key, &signature, TIMESTAMP, BODY.as_bytes(), early, 300).or_panic("valid");
}

#[test]
fn a_high_s_signature_verifies_too() {
    // Signers other than RustCrypto (SendGrid's) do not normalize `s`; both halves are valid.
    let (signing, key, _) = key_pair();
    let mut message = TIMESTAMP.as_bytes().to_vec();
    message.extend_from_slice(BODY.as_bytes());
    let low: Signature = signing.sign(&message);
    let high = Signature::from_scalars(low.r(), -low.s()).or_panic("a signature");
    assert_ne!(low, high);
    let encoded = STANDARD.encode(high.to_der().as_bytes());
    verify(&key, &encoded, TIMESTAMP, BODY.as_bytes(), signed_at(), 300).or_panic("valid");
}

#[test]
fn tampering_other_keys_and_garbage_are_refused() {
    let (signing, key, _) = key_pair();
    let (_, other_key, _) = key_pair();
    let signature = sign(&signing, TIMESTAMP, BODY.as_bytes());
    let now = signed_at();

    let tampered = BODY.replace("\"bounce\",\"type\"", "\"delivered\",\"type\"");
    assert_ne!(tampered, BODY);
    assert_eq!(
        unauthenticated(verify(
            &key,
            &signature,
            TIMESTAMP,
            tampered.as_bytes(),
            now,
            300
        )),
        "wrong signature"
    );
    assert_eq!(
        unauthenticated(verify(
            &other_key,
            &signature,
            TIMESTAMP,
            BODY.as_bytes(),
            now,
            300
        )),
        "wrong signature"
    );
    // The timestamp is signed: moving it breaks the signature.
    assert_eq!(
        unauthenticated(verify(
            &key,
            &signature,
            "1777888801",
            BODY.as_bytes(),
            now,
            300
        )),
        "wrong signature"
    );
    for garbage in [
        "",
        "not base64!",
        "AAAA",
        &STANDARD.encode([0x30, 0x03, 0x02, 0x01, 0x00]),
    ] {
        let message = unauthenticated(verify(&key, garbage, TIMESTAMP, BODY.as_bytes(), now, 300));
        assert!(message.contains("signature"), "{garbage}: {message}");
    }
    for timestamp in ["", "17778888OO", "-1", "1.5"] {
        let signature = sign(&signing, timestamp, BODY.as_bytes());
        let message = unauthenticated(verify(
            &key,
            &signature,
            timestamp,
            BODY.as_bytes(),
            now,
            300,
        ));
        assert!(message.contains("timestamp"), "{timestamp}: {message}");
    }
}

#[test]
fn stale_and_future_timestamps_are_refused() {
    let (signing, key, _) = key_pair();
    let signature = sign(&signing, TIMESTAMP, BODY.as_bytes());
    // A replay ten minutes later, and a delivery claiming to come from the future.
    for now in [
        signed_at() + chrono::Duration::seconds(301),
        signed_at() + chrono::Duration::minutes(10),
        signed_at() - chrono::Duration::seconds(301),
    ] {
        let message = unauthenticated(verify(
            &key,
            &signature,
            TIMESTAMP,
            BODY.as_bytes(),
            now,
            300,
        ));
        assert!(message.contains("away from now"), "{message}");
    }
}

#[test]
fn the_configured_webhook_reads_the_headers_and_both_key_formats() {
    let (signing, _, base64) = key_pair();
    let pem = signing
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .or_panic("the key encodes");
    let signature = sign(&signing, TIMESTAMP, BODY.as_bytes());
    let headers = vec![
        (SIGNATURE_HEADER.to_owned(), signature),
        (TIMESTAMP_HEADER.to_owned(), TIMESTAMP.to_owned()),
    ];
    let request = WebhookRequest {
        headers: &headers,
        body: BODY.as_bytes(),
        received_at: signed_at() + chrono::Duration::seconds(12),
    };
    // SendGrid's UI shows the key as one base64 line; some people paste it wrapped or as PEM.
    let wrapped = base64
        .as_bytes()
        .chunks(64)
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    for public_key in [base64.clone(), wrapped, pem] {
        let webhook = EventWebhook::new(&Config {
            event_public_key: Some(public_key),
            ..Config::default()
        })
        .or_panic("the webhook builds");
        webhook.verify(&request).or_panic("valid");
        assert_eq!(webhook.parse(request.body).or_panic("parses").len(), 11);
    }

    let webhook = EventWebhook::new(&Config {
        event_public_key: Some(base64),
        event_tolerance_secs: 10,
        ..Config::default()
    })
    .or_panic("the webhook builds");
    assert!(unauthenticated(webhook.verify(&request)).contains("tolerance 10 s"));
    let missing = WebhookRequest {
        headers: &headers[..1],
        ..request
    };
    assert!(unauthenticated(webhook.verify(&missing)).contains(TIMESTAMP_HEADER));

    assert!(EventWebhook::new(&Config::default()).is_err());
    for bad in [
        "",
        "bm90IGEga2V5",
        "%%%",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
    ] {
        let config = Config {
            event_public_key: Some(bad.into()),
            ..Config::default()
        };
        assert!(EventWebhook::new(&config).is_err(), "{bad}");
    }
}

#[test]
fn a_delivery_parses_into_normalized_events() {
    let events = parse(BODY.as_bytes()).or_panic("parses");
    let summary: Vec<(&str, EmailEventKind, &str)> = events
        .iter()
        .map(|event| (event.event_id.as_str(), event.kind, event.email.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "cHJvY2Vzc2VkLTM4MTI5",
                EmailEventKind::Processed,
                "ana@firma.example"
            ),
            (
                "ZGVmZXJyZWQtMQ",
                EmailEventKind::Deferred,
                "ana@firma.example"
            ),
            (
                "ZGVsaXZlcmVkLTA",
                EmailEventKind::Delivered,
                "ana@firma.example"
            ),
            ("b3Blbi0x", EmailEventKind::Opened, "ana@firma.example"),
            ("Y2xpY2stMQ", EmailEventKind::Clicked, "ana@firma.example"),
            ("Ym91bmNlLTE", EmailEventKind::Bounced, "bob@firma.example"),
            (
                "YmxvY2tlZC0x",
                EmailEventKind::Bounced,
                "carl@firma.example"
            ),
            (
                "ZHJvcHBlZC0x",
                EmailEventKind::Dropped,
                "dora@firma.example"
            ),
            ("c3BhbS0x", EmailEventKind::Complained, "eve@firma.example"),
            (
                "dW5zdWItMQ",
                EmailEventKind::Unsubscribed,
                "fred@firma.example"
            ),
            (
                "Z3JvdXAtdW5zdWI",
                EmailEventKind::Unsubscribed,
                "gina@firma.example"
            ),
        ]
    );

    let processed = &events[0];
    assert_eq!(
        processed.email_id.as_deref(),
        Some("0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6071")
    );
    assert_eq!(
        processed.provider_message_id.as_deref(),
        Some("W2dYcxfPQxKkw1Pd3sMtRg.recvd-5f8c7b9d6-abcde-1-6624E0A4-1.0")
    );
    assert_eq!(
        processed.at,
        DateTime::from_timestamp(1_777_888_790, 0).or_panic("time")
    );
    assert_eq!(processed.reason, None);
    assert_eq!(
        events[1].reason.as_deref(),
        Some("451 4.7.1 Greylisted, try again later")
    );
    assert_eq!(
        events[2].reason, None,
        "a delivery's response is not a reason"
    );
    assert_eq!(
        events[3].at,
        DateTime::from_timestamp(1_777_888_900, 0).or_panic("time")
    );
    assert_eq!(
        events[4].url.as_deref(),
        Some("https://acme.example/termin?id=7")
    );
    assert_eq!(
        events[5].reason.as_deref(),
        Some("550 5.1.1 The email account that you tried to reach does not exist.")
    );
    assert_eq!(
        events[5].provider_message_id, None,
        "async bounces have no sg_message_id"
    );
    assert_eq!(events[5].email_id.as_deref(), Some("e2"));
    assert_eq!(events[7].reason.as_deref(), Some("Bounced Address"));
    assert_eq!(events[9].email_id, None);
    assert_eq!(events[10].url, None, "only clicks carry a URL");
}

#[test]
fn bodies_that_are_not_event_arrays_are_invalid_and_nothing_panics() {
    for body in [
        &b"{}"[..],
        b"",
        b"not json",
        b"{\"event\":\"delivered\"}",
        b"\xff\xfe",
    ] {
        assert!(
            matches!(parse(body), Err(WebhookError::Invalid(_))),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(parse(b"[]").or_panic("parses"), []);
    let odd = br#"[{"event":7,"sg_event_id":"x","email":"a@b.c","timestamp":1},
                   {"event":"delivered","sg_event_id":["x"],"email":"a@b.c","timestamp":1},
                   {"event":"delivered","sg_event_id":"x","email":"a@b.c","timestamp":1e300},
                   {"event":"delivered","sg_event_id":"","email":"a@b.c","timestamp":1},
                   {"event":"delivered","sg_event_id":"ok","email":"a@b.c","timestamp":1.9}]"#;
    let events = parse(odd).or_panic("parses");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_id, "ok");
    assert_eq!(
        events[0].at,
        DateTime::from_timestamp(1, 0).or_panic("time")
    );
}
