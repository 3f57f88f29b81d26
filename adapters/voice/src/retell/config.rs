//! `[voice.providers.retell]`: where Retell is and its key.

use crate::http::{DEFAULT_TIMEOUT_SECS, DEFAULT_TOLERANCE_SECS};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Retell's API (PROVIDERS.md §2.1).
pub const DEFAULT_BASE_URL: &str = "https://api.retellai.com";

/// Retell settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The API's base URL. Default `https://api.retellai.com`; tests point it at a local fake.
    pub base_url: String,
    /// The API key, sent as `Authorization: Bearer <key>`; also the HMAC key of
    /// `x-retell-signature` (use the key with the "webhook" badge). Secret: env
    /// `CRM_VOICE__PROVIDERS__RETELL__API_KEY` only. Required.
    #[serde(skip_serializing)]
    pub api_key: Option<SecretString>,
    /// Total timeout of one request, in seconds. Default 10.
    pub timeout_secs: u64,
    /// How far a webhook's signed timestamp may be from now, in seconds. Default 300 (the
    /// SDK's 5 minutes).
    pub tolerance_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            api_key: None,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            tolerance_secs: DEFAULT_TOLERANCE_SECS,
        }
    }
}
