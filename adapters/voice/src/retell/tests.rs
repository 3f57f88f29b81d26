//! Unit tests of the Retell tables and config; the HTTP and webhook behaviour is tested
//! against a fake Retell in `tests/providers/retell.rs`.

use super::{
    Config,
    client::locale,
    webhook::{disposition, role, status},
};
use crm_domain::{CallStatus, Disposition, SpeakerRole};

#[test]
fn config_defaults_and_the_key_stays_out_of_serialized_form() {
    let config: Config = serde_json::from_str(r#"{"api_key": "key_abc"}"#).unwrap();
    assert_eq!(config.base_url, "https://api.retellai.com");
    assert_eq!(config.timeout_secs, 10);
    assert_eq!(config.tolerance_secs, 300);
    let written = serde_json::to_string(&config).unwrap();
    assert!(!written.contains("key_abc"), "{written}");
    assert!(serde_json::from_str::<Config>(r#"{"webhook_secret": "x"}"#).is_err());
    assert!(super::Retell::new(&Config::default()).is_err());
    let blank = Config {
        api_key: Some("  ".into()),
        ..Config::default()
    };
    assert!(super::Retell::new(&blank).is_err());
}

#[test]
fn disconnection_reasons_map_to_dispositions() {
    let cases = [
        ("dial_no_answer", Disposition::NoAnswer),
        ("user_declined", Disposition::NoAnswer),
        ("dial_busy", Disposition::Busy),
        ("voicemail_reached", Disposition::Voicemail),
        ("ivr_reached", Disposition::Voicemail),
        ("user_hangup", Disposition::Answered),
        ("agent_hangup", Disposition::Answered),
        ("call_transfer", Disposition::Answered),
        ("inactivity", Disposition::Answered),
        ("max_duration_reached", Disposition::Answered),
        ("transfer_bridged", Disposition::Answered),
        ("transfer_cancelled", Disposition::Answered),
        ("manual_stopped", Disposition::Canceled),
        ("dial_failed", Disposition::Failed),
        ("invalid_destination", Disposition::Failed),
        ("error_llm_websocket_open", Disposition::Failed),
        ("error_unknown", Disposition::Failed),
        ("concurrency_limit_reached", Disposition::Failed),
        ("no_valid_payment", Disposition::Failed),
        ("telephony_provider_unavailable", Disposition::Failed),
        ("marked_as_spam", Disposition::Failed),
    ];
    for (reason, expected) in cases {
        assert_eq!(disposition(reason, true), expected, "{reason}");
    }
    assert_eq!(disposition("something_new", true), Disposition::Answered);
    assert_eq!(disposition("something_new", false), Disposition::Failed);
}

#[test]
fn statuses_roles_and_locales_map() {
    assert_eq!(status("registered"), Some(CallStatus::Dialing));
    assert_eq!(status("ongoing"), Some(CallStatus::InProgress));
    assert_eq!(status("ended"), Some(CallStatus::Ended));
    assert_eq!(status("not_connected"), Some(CallStatus::Ended));
    assert_eq!(status("error"), Some(CallStatus::Ended));
    assert_eq!(status("weird"), None);
    assert_eq!(role("agent"), SpeakerRole::Agent);
    assert_eq!(role("user"), SpeakerRole::Customer);
    assert_eq!(role("transfer_target"), SpeakerRole::System);
    assert_eq!(locale("de").as_deref(), Some("de-DE"));
    assert_eq!(locale("EN").as_deref(), Some("en-US"));
    assert_eq!(locale("de-AT").as_deref(), Some("de-AT"));
    assert_eq!(locale("sr-rs").as_deref(), Some("sr-RS"));
    assert_eq!(locale("hr_HR").as_deref(), Some("hr-HR"));
    assert_eq!(locale("bs"), None);
    assert_eq!(locale("sr"), None);
    assert_eq!(locale(""), None);
}
