//! Unit tests of the SMTP config and tables; the conversation is tested against a real SMTP
//! server process in `tests/senders/smtp.rs`.

use super::{
    Config, Security, Smtp,
    client::{Cause, Failure, Stage, classify, queue_id},
};
use crm_domain::SendError;
use lettre::transport::smtp::response::Response;
use std::{str::FromStr as _, time::Duration};

fn reply(text: &str) -> Response {
    Response::from_str(text).unwrap()
}

#[test]
fn config_defaults_and_the_password_stays_out_of_serialized_form() {
    let config: Config =
        serde_json::from_str(r#"{"username": "apikey", "password": "SG.secret"}"#).unwrap();
    assert_eq!(config.host, "localhost");
    assert_eq!(config.port, 587);
    assert_eq!(config.security, Security::Starttls);
    assert_eq!(config.timeout_secs, 10);
    let written = serde_json::to_string(&config).unwrap();
    assert!(!written.contains("SG.secret"), "{written}");
    assert!(written.contains(r#""security":"starttls""#), "{written}");
    assert!(Smtp::new(&config).is_ok());
    assert!(serde_json::from_str::<Config>(r#"{"security": "ssl"}"#).is_err());
    assert!(serde_json::from_str::<Config>(r#"{"tls": true}"#).is_err());
}

#[test]
fn unencrypted_connections_are_only_allowed_on_this_machine() {
    for host in ["localhost", "127.0.0.1", "::1", "LOCALHOST"] {
        let config = Config {
            host: host.into(),
            security: Security::None,
            ..Config::default()
        };
        assert!(Smtp::new(&config).is_ok(), "{host}");
    }
    for host in ["smtp.example.com", "10.0.0.5", "127.0.0.2"] {
        let config = Config {
            host: host.into(),
            security: Security::None,
            ..Config::default()
        };
        let error = Smtp::new(&config).unwrap_err().to_string();
        assert!(error.contains("only"), "{host}: {error}");
    }
    let tls = Config {
        host: "smtp.example.com".into(),
        port: 465,
        security: Security::Tls,
        ..Config::default()
    };
    assert!(Smtp::new(&tls).is_ok());
}

#[test]
fn half_a_login_and_empty_hosts_are_refused() {
    let no_password = Config {
        username: Some("apikey".into()),
        ..Config::default()
    };
    assert!(Smtp::new(&no_password).is_err());
    let no_user = Config {
        password: Some("secret".into()),
        ..Config::default()
    };
    assert!(Smtp::new(&no_user).is_err());
    let blank = Config {
        host: "  ".into(),
        ..Config::default()
    };
    assert!(Smtp::new(&blank).is_err());
    let debug = format!(
        "{:?}",
        Smtp::new(&Config {
            username: Some("apikey".into()),
            password: Some("SG.secret".into()),
            ..Config::default()
        })
        .unwrap()
    );
    assert!(!debug.contains("SG.secret"), "{debug}");
}

#[test]
fn timeouts_are_unknown_only_after_the_message_was_sent() {
    let timed_out = |stage| Failure {
        stage,
        cause: Cause::TimedOut(Duration::from_secs(10)),
    };
    for stage in [Stage::Connect, Stage::Login, Stage::Envelope] {
        assert!(
            matches!(classify(timed_out(stage)), SendError::Unavailable(_)),
            "{stage:?}"
        );
    }
    assert!(matches!(
        classify(timed_out(Stage::Message)),
        SendError::Unknown(_)
    ));
    assert!(matches!(
        classify(Failure {
            stage: Stage::Envelope,
            cause: Cause::Unsupported("no SMTPUTF8"),
        }),
        SendError::Rejected(_)
    ));
}

#[test]
fn queue_ids_are_read_from_common_replies() {
    assert_eq!(
        queue_id(&reply("250 2.0.0 Ok: queued as 4Bf8Yq1zLXz9vQ\r\n")).as_deref(),
        Some("4Bf8Yq1zLXz9vQ")
    );
    assert_eq!(
        queue_id(&reply("250 Ok: queued as <abc-123>.\r\n")).as_deref(),
        Some("abc-123")
    );
    assert_eq!(
        queue_id(&reply("250 OK id=1iJ9Xo-0001AB-Cd\r\n")).as_deref(),
        Some("1iJ9Xo-0001AB-Cd")
    );
    assert_eq!(queue_id(&reply("250 OK\r\n")), None);
    assert_eq!(queue_id(&reply("250 queued as \r\n")), None);
}
