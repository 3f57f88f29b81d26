//! `[voice.providers.vapi]`: where Vapi is, its key, and how its webhooks authenticate.

use crate::http::{DEFAULT_TIMEOUT_SECS, DEFAULT_TOLERANCE_SECS};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Vapi's API (PROVIDERS.md §1.1).
pub const DEFAULT_BASE_URL: &str = "https://api.vapi.ai";

/// How Vapi authenticates its server messages: the kind of credential attached to the server
/// URL in Vapi (PROVIDERS.md §1.7). Vapi does not sign by default; without a credential every
/// delivery is refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookAuth {
    /// A Bearer credential: a token in a header (`authorization: Bearer <token>`, or the raw
    /// token in another header such as the legacy `x-vapi-secret`).
    #[default]
    Bearer,
    /// An HMAC credential with Vapi's defaults: SHA-256, hex, over `{timestamp}.{body}`.
    Hmac,
}

/// Vapi settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The API's base URL. Default `https://api.vapi.ai`; tests point it at a local fake.
    pub base_url: String,
    /// The private API key, sent as `Authorization: Bearer <key>`. Secret: env
    /// `CRM_VOICE__PROVIDERS__VAPI__API_KEY` only. Required.
    #[serde(skip_serializing)]
    pub api_key: Option<SecretString>,
    /// Total timeout of one request, in seconds. Default 10.
    pub timeout_secs: u64,
    /// How server messages authenticate: `bearer` (default) or `hmac`.
    pub webhook_auth: WebhookAuth,
    /// The Bearer token or the HMAC secret key of the Vapi credential. Secret: env
    /// `CRM_VOICE__PROVIDERS__VAPI__WEBHOOK_SECRET` only. Without it every delivery is refused.
    #[serde(skip_serializing)]
    pub webhook_secret: Option<SecretString>,
    /// Bearer: the header carrying the token. Default `authorization` (value
    /// `Bearer <token>`); any other header (e.g. `x-vapi-secret`) carries the raw token.
    pub bearer_header: String,
    /// HMAC: the signature header. Default `x-signature`; an optional `sha256=` prefix is
    /// accepted.
    pub hmac_signature_header: String,
    /// HMAC: the timestamp header. Default `x-timestamp` (unix seconds or milliseconds).
    pub hmac_timestamp_header: String,
    /// HMAC: how far a signed timestamp may be from now, in seconds. Default 300.
    pub tolerance_secs: u64,
    /// Our webhook URL, sent per call as `assistantOverrides.server.url` when a call does not
    /// bring its own. Unset: Vapi uses the assistant's, number's or org's server URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            api_key: None,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            webhook_auth: WebhookAuth::Bearer,
            webhook_secret: None,
            bearer_header: "authorization".into(),
            hmac_signature_header: "x-signature".into(),
            hmac_timestamp_header: "x-timestamp".into(),
            tolerance_secs: DEFAULT_TOLERANCE_SECS,
            server_url: None,
        }
    }
}
