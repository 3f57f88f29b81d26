//! Unit tests of the Vapi tables and config; the HTTP and webhook behaviour is tested against
//! a fake Vapi in `tests/providers/vapi.rs`.

use super::{
    Config, WebhookAuth,
    webhook::{disposition, role, status},
};
use crm_domain::{CallStatus, Disposition, SpeakerRole};

#[test]
fn config_defaults_and_secrets_stay_out_of_serialized_form() {
    let config: Config = serde_json::from_str(
        r#"{"api_key": "sk", "webhook_secret": "tok", "webhook_auth": "hmac"}"#,
    )
    .unwrap();
    assert_eq!(config.base_url, "https://api.vapi.ai");
    assert_eq!(config.timeout_secs, 10);
    assert_eq!(config.tolerance_secs, 300);
    assert_eq!(config.webhook_auth, WebhookAuth::Hmac);
    assert_eq!(config.bearer_header, "authorization");
    assert_eq!(config.hmac_signature_header, "x-signature");
    assert_eq!(config.hmac_timestamp_header, "x-timestamp");
    let written = serde_json::to_string(&config).unwrap();
    assert!(!written.contains("sk"), "{written}");
    assert!(!written.contains("tok"), "{written}");
    assert!(!written.contains("api_key"), "{written}");
    assert!(serde_json::from_str::<Config>(r#"{"apikey": "x"}"#).is_err());
    assert!(serde_json::from_str::<Config>(r#"{"webhook_auth": "oauth"}"#).is_err());
}

#[test]
fn missing_key_or_bad_url_is_a_config_error() {
    assert!(super::Vapi::new(&Config::default()).is_err());
    let config = Config {
        api_key: Some("sk".into()),
        base_url: "::nope".into(),
        ..Config::default()
    };
    assert!(super::Vapi::new(&config).is_err());
}

#[test]
fn ended_reasons_map_to_dispositions() {
    let cases = [
        ("customer-did-not-answer", Disposition::NoAnswer),
        ("customer-busy", Disposition::Busy),
        ("voicemail", Disposition::Voicemail),
        ("customer-ended-call", Disposition::Answered),
        (
            "assistant-ended-call-with-hangup-task",
            Disposition::Answered,
        ),
        ("customer-ended-call-during-transfer", Disposition::Answered),
        ("assistant-said-end-call-phrase", Disposition::Answered),
        ("assistant-forwarded-call", Disposition::Answered),
        ("exceeded-max-duration", Disposition::Answered),
        ("silence-timed-out", Disposition::Answered),
        ("manually-canceled", Disposition::Canceled),
        ("call-deleted", Disposition::Canceled),
        ("scheduled-call-deleted", Disposition::Canceled),
        ("twilio-failed-to-connect-call", Disposition::Failed),
        ("twilio-reported-customer-misdialed", Disposition::Failed),
        ("vonage-rejected", Disposition::Failed),
        (
            "call.start.error-subscription-insufficient-credits",
            Disposition::Failed,
        ),
        (
            "call.in-progress.error-vapifault-openai-llm-failed",
            Disposition::Failed,
        ),
        ("pipeline-error-openai-llm-failed", Disposition::Failed),
        ("assistant-not-found", Disposition::Failed),
        ("assistant-request-failed", Disposition::Failed),
        (
            "call-start-error-neither-assistant-nor-server-set",
            Disposition::Failed,
        ),
    ];
    for (reason, expected) in cases {
        assert_eq!(disposition(reason, true), expected, "{reason}");
    }
    assert_eq!(disposition("hangup", true), Disposition::Answered);
    assert_eq!(disposition("hangup", false), Disposition::Failed);
}

#[test]
fn statuses_and_roles_map() {
    assert_eq!(status("queued"), Some(CallStatus::Dialing));
    assert_eq!(status("scheduled"), Some(CallStatus::Dialing));
    assert_eq!(status("ringing"), Some(CallStatus::Ringing));
    assert_eq!(status("in-progress"), Some(CallStatus::InProgress));
    assert_eq!(status("forwarding"), Some(CallStatus::InProgress));
    assert_eq!(status("ended"), Some(CallStatus::Ended));
    assert_eq!(status("not-found"), None);
    assert_eq!(role("user"), SpeakerRole::Customer);
    assert_eq!(role("assistant"), SpeakerRole::Agent);
    assert_eq!(role("bot"), SpeakerRole::Agent);
    assert_eq!(role("tool_call_result"), SpeakerRole::System);
}
