//! `[voice.providers.simulator]`.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Settings of the simulator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Seeds every call's plan: the same seed, number and attempt always play the same call.
    pub seed: u64,
    /// Milliseconds the phone rings before it is answered (or not).
    pub ring_ms: i64,
    /// Milliseconds between two transcript lines.
    pub line_interval_ms: i64,
    /// The key of `x-simulator-signature` (hex HMAC-SHA256 of the raw body) for deliveries
    /// posted to `/webhooks/voice/simulator` from outside; only from the environment
    /// (`CRM_VOICE__PROVIDERS__SIMULATOR__WEBHOOK_SECRET`). Without it, only the simulator's
    /// own deliveries (jobs) are ingested.
    #[serde(skip_serializing)]
    pub webhook_secret: Option<SecretString>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            seed: 42,
            ring_ms: 3_000,
            line_interval_ms: 1_500,
            webhook_secret: None,
        }
    }
}
