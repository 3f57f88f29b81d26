//! `[voice.providers.bland]`: where Bland is, its key and its webhook signing secret.

use crate::http::DEFAULT_TIMEOUT_SECS;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Bland's API (PROVIDERS.md §3.1).
pub const DEFAULT_BASE_URL: &str = "https://api.bland.ai";

/// Bland settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The API's base URL. Default `https://api.bland.ai`; tests point it at a local fake.
    pub base_url: String,
    /// The API key, sent raw in the `authorization` header. Secret: env
    /// `CRM_VOICE__PROVIDERS__BLAND__API_KEY` only. Required.
    #[serde(skip_serializing)]
    pub api_key: Option<SecretString>,
    /// The webhook signing secret (dashboard Settings → Keys) that keys `X-Webhook-Signature`.
    /// Secret: env `CRM_VOICE__PROVIDERS__BLAND__WEBHOOK_SECRET` only. Without it every
    /// delivery is refused.
    #[serde(skip_serializing)]
    pub webhook_secret: Option<SecretString>,
    /// Total timeout of one request, in seconds. Default 10.
    pub timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            api_key: None,
            webhook_secret: None,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
        }
    }
}
