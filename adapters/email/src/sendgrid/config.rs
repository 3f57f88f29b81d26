//! `[email.sendgrid]`: where SendGrid is, its key, and the Event Webhook's public key.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// SendGrid's API (PROVIDERS.md §5.1); EU subusers use `https://api.eu.sendgrid.com`.
pub const DEFAULT_BASE_URL: &str = "https://api.sendgrid.com";
/// Default total timeout of one request, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
/// Default replay window of signed Event Webhook deliveries, in seconds.
pub const DEFAULT_EVENT_TOLERANCE_SECS: u64 = 300;

/// SendGrid settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The API's base URL. Default `https://api.sendgrid.com`; tests point it at a local fake.
    pub base_url: String,
    /// The API key (Mail Send permission), sent as `Authorization: Bearer <key>`. Secret: env
    /// `CRM_EMAIL__SENDGRID__API_KEY` only. Required to send.
    #[serde(skip_serializing)]
    pub api_key: Option<SecretString>,
    /// Total timeout of one request, in seconds. Default 10.
    pub timeout_secs: u64,
    /// The Signed Event Webhook's public key as SendGrid shows it (base64 of the DER
    /// SubjectPublicKeyInfo, `MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE…`) or as PEM. Not a secret;
    /// config or env `CRM_EMAIL__SENDGRID__EVENT_PUBLIC_KEY`. Required to accept events.
    pub event_public_key: Option<String>,
    /// How far a delivery's signed timestamp may be from now, in seconds. Default 300.
    pub event_tolerance_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            api_key: None,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            event_public_key: None,
            event_tolerance_secs: DEFAULT_EVENT_TOLERANCE_SECS,
        }
    }
}
