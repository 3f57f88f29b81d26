//! Unit tests of the Bland tables and config; the HTTP and webhook behaviour is tested
//! against a fake Bland in `tests/providers/bland.rs`.

use super::{
    Config,
    client::language,
    webhook::{disposition, role},
};
use crm_domain::{Disposition, SpeakerRole};

#[test]
fn config_defaults_and_secrets_stay_out_of_serialized_form() {
    let config: Config =
        serde_json::from_str(r#"{"api_key": "org_key", "webhook_secret": "whsec"}"#).unwrap();
    assert_eq!(config.base_url, "https://api.bland.ai");
    assert_eq!(config.timeout_secs, 10);
    let written = serde_json::to_string(&config).unwrap();
    assert!(!written.contains("org_key"), "{written}");
    assert!(!written.contains("whsec"), "{written}");
    assert!(serde_json::from_str::<Config>(r#"{"tolerance_secs": 5}"#).is_err());
    assert!(super::Bland::new(&Config::default()).is_err());
}

#[test]
fn statuses_map_to_dispositions() {
    let completed = Some("completed");
    assert_eq!(
        disposition(completed, Some("voicemail"), true, false, true),
        Disposition::Voicemail
    );
    assert_eq!(
        disposition(completed, Some("human"), true, false, true),
        Disposition::Answered
    );
    assert_eq!(
        disposition(completed, Some("unknown"), true, false, true),
        Disposition::Answered
    );
    assert_eq!(
        disposition(completed, None, true, false, true),
        Disposition::Answered
    );
    assert_eq!(
        disposition(Some("busy"), None, false, false, false),
        Disposition::Busy
    );
    assert_eq!(
        disposition(Some("no-answer"), None, false, false, false),
        Disposition::NoAnswer
    );
    assert_eq!(
        disposition(Some("canceled"), None, false, false, false),
        Disposition::Canceled
    );
    assert_eq!(
        disposition(Some("failed"), None, false, false, true),
        Disposition::Failed
    );
    assert_eq!(
        disposition(Some("unknown"), Some("voicemail"), true, false, true),
        Disposition::Voicemail
    );
    assert_eq!(
        disposition(None, None, false, true, false),
        Disposition::Failed
    );
    assert_eq!(
        disposition(None, None, false, false, true),
        Disposition::Answered
    );
    assert_eq!(
        disposition(None, None, false, false, false),
        Disposition::Failed
    );
}

#[test]
fn roles_and_languages_map() {
    assert_eq!(role("user"), SpeakerRole::Customer);
    assert_eq!(role("assistant"), SpeakerRole::Agent);
    assert_eq!(role("robot"), SpeakerRole::Agent);
    assert_eq!(role("agent-action"), SpeakerRole::System);
    assert_eq!(language("de").as_deref(), Some("de"));
    assert_eq!(language("EN").as_deref(), Some("en"));
    assert_eq!(language("babel-de").as_deref(), Some("babel-de"));
    assert_eq!(language("bs").as_deref(), Some("babel"));
    assert_eq!(language("sr").as_deref(), Some("babel"));
    assert_eq!(language(" "), None);
}
