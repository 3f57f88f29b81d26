//! Unit tests of the SendGrid config, body and tables; the HTTP behaviour is tested against a
//! fake SendGrid in `tests/senders/sendgrid.rs`, the webhook in `tests/senders/webhook.rs`.

use super::{
    Config, SendGrid,
    client::{body, error_message, retry_hint},
    send_url,
};
use chrono::{DateTime, Utc};
use crm_domain::{Attachment, Mailbox, OutgoingEmail, SendError};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::json;
use std::{collections::BTreeMap, time::Duration};

fn email() -> OutgoingEmail {
    OutgoingEmail {
        id: "0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6071".into(),
        from: Mailbox {
            email: "vertrieb@acme.example".into(),
            name: Some("Acme Vertrieb".into()),
        },
        reply_to: Some(Mailbox {
            email: "lena@acme.example".into(),
            name: None,
        }),
        to: Mailbox {
            email: "ana@firma.example".into(),
            name: Some("Ana Hodžić".into()),
        },
        subject: "Ihr Termin".into(),
        text: "Hallo Ana".into(),
        html: Some("<p>Hallo Ana</p>".into()),
        headers: vec![(
            "List-Unsubscribe".into(),
            "<https://crm.example/u/abc>".into(),
        )],
        attachments: vec![Attachment {
            filename: "termin.ics".into(),
            content_type: "text/calendar; method=REQUEST".into(),
            content: b"BEGIN:VCALENDAR".to_vec(),
        }],
        category: Some("follow-up".into()),
        custom_args: BTreeMap::from([
            ("crm_email_id".to_owned(), "spoofed".to_owned()),
            ("customer".to_owned(), "c-1".to_owned()),
        ]),
    }
}

#[test]
fn config_defaults_and_the_key_stays_out_of_serialized_form() {
    let config: Config = serde_json::from_str(r#"{"api_key": "SG.abc.def"}"#).unwrap();
    assert_eq!(config.base_url, "https://api.sendgrid.com");
    assert_eq!(config.timeout_secs, 10);
    assert_eq!(config.event_tolerance_secs, 300);
    assert_eq!(config.event_public_key, None);
    let written = serde_json::to_string(&config).unwrap();
    assert!(!written.contains("SG.abc.def"), "{written}");
    assert!(serde_json::from_str::<Config>(r#"{"apikey": "x"}"#).is_err());
    assert!(SendGrid::new(&Config::default()).is_err());
    let blank = Config {
        api_key: Some(" ".into()),
        ..Config::default()
    };
    assert!(SendGrid::new(&blank).is_err());
}

#[test]
fn base_urls_are_checked() {
    assert_eq!(
        send_url("https://api.sendgrid.com/").unwrap().as_str(),
        "https://api.sendgrid.com/v3/mail/send"
    );
    assert_eq!(
        send_url("http://127.0.0.1:9/prefix").unwrap().as_str(),
        "http://127.0.0.1:9/prefix/v3/mail/send"
    );
    assert!(send_url("not a url").is_err());
    assert!(send_url("ftp://example.com").is_err());
    assert!(send_url("https://example.com/?a=1").is_err());
}

#[test]
fn the_body_has_the_documented_shape() {
    let body = body(&email()).unwrap();
    assert_eq!(
        body["personalizations"],
        json!([{"to": [{"email": "ana@firma.example", "name": "Ana Hodžić"}]}])
    );
    assert_eq!(
        body["from"],
        json!({"email": "vertrieb@acme.example", "name": "Acme Vertrieb"})
    );
    assert_eq!(body["reply_to"], json!({"email": "lena@acme.example"}));
    assert_eq!(
        body["content"],
        json!([
            {"type": "text/plain", "value": "Hallo Ana"},
            {"type": "text/html", "value": "<p>Hallo Ana</p>"}
        ])
    );
    assert_eq!(body["attachments"][0]["content"], "QkVHSU46VkNBTEVOREFS");
    assert_eq!(body["categories"], json!(["follow-up"]));
    // Our id wins over a custom arg of the same name.
    assert_eq!(
        body["custom_args"],
        json!({"crm_email_id": "0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6071", "customer": "c-1"})
    );
    assert_eq!(
        body["headers"],
        json!({"List-Unsubscribe": "<https://crm.example/u/abc>"})
    );
    assert!(body.get("Message-ID").is_none());

    let mut minimal = email();
    minimal.html = None;
    minimal.reply_to = None;
    minimal.headers.clear();
    minimal.attachments.clear();
    minimal.category = None;
    let body = super::client::body(&minimal).unwrap();
    for absent in ["reply_to", "headers", "attachments", "categories"] {
        assert!(body.get(absent).is_none(), "{absent}: {body}");
    }
    assert_eq!(body["content"].as_array().unwrap().len(), 1);
}

#[test]
fn emails_every_sender_refuses_are_refused_before_sending() {
    let mut bad = email();
    bad.headers.push(("Message-ID".into(), "<x@y>".into()));
    assert!(matches!(
        super::client::body(&bad),
        Err(SendError::Rejected(_))
    ));
    let mut bad = email();
    bad.to.email = "nobody".into();
    assert!(matches!(
        super::client::body(&bad),
        Err(SendError::Rejected(_))
    ));
}

#[test]
fn retry_hints_are_read_from_either_header() {
    let now: DateTime<Utc> = DateTime::from_timestamp(1_777_888_800, 0).unwrap();
    let headers = |pairs: &[(&'static str, &'static str)]| {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    };
    assert_eq!(
        retry_hint(&headers(&[("retry-after", "1")]), now),
        Some(Duration::from_secs(1))
    );
    assert_eq!(
        retry_hint(&headers(&[("x-ratelimit-reset", "1777888802")]), now),
        Some(Duration::from_secs(2))
    );
    assert_eq!(
        retry_hint(&headers(&[("x-ratelimit-reset", "1777888000")]), now),
        Some(Duration::ZERO)
    );
    assert_eq!(
        retry_hint(
            &headers(&[("retry-after", "Mon, 04 May 2026 10:00:03 GMT")]),
            now
        ),
        Some(Duration::from_secs(3))
    );
    assert_eq!(retry_hint(&headers(&[("retry-after", "soon")]), now), None);
    assert_eq!(retry_hint(&HeaderMap::new(), now), None);
}

#[test]
fn error_messages_are_joined() {
    assert_eq!(
        error_message(
            br#"{"errors":[{"message":"The from email does not contain a valid address.","field":"from.email","help":"http://sendgrid.com"},{"message":"Bad","field":null}]}"#
        )
        .unwrap(),
        "The from email does not contain a valid address. (from.email); Bad"
    );
    assert_eq!(error_message(b"oops").unwrap(), "oops");
    assert_eq!(error_message(br#"{"errors":[]}"#), None);
    assert_eq!(error_message(b""), None);
}
