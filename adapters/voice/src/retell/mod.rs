//! PLACEHOLDER: being written (session 3). Replaced by config/client/webhook modules.

use crate::ConfigError;
use crm_domain::{
    CallUpdate, ProviderError, ProviderKind, StartCall, StartedCall, VoiceProvider, WebhookError,
    WebhookRequest,
};
use serde::{Deserialize, Serialize};

/// Settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {}

/// The adapter.
#[derive(Debug)]
pub struct Retell;

impl Retell {
    /// Builds it.
    pub fn new(_config: &Config) -> Result<Self, ConfigError> {
        Err(ConfigError::new(ProviderKind::Retell, "not available yet"))
    }
}

#[async_trait::async_trait]
impl VoiceProvider for Retell {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Retell
    }
    async fn start_call(&self, _call: &StartCall) -> Result<StartedCall, ProviderError> {
        Err(ProviderError::Unavailable("not available yet".into()))
    }
    async fn get_call(&self, _id: &str) -> Result<CallUpdate, ProviderError> {
        Err(ProviderError::Unavailable("not available yet".into()))
    }
    async fn stop_call(&self, _id: &str) -> Result<(), ProviderError> {
        Err(ProviderError::Unavailable("not available yet".into()))
    }
    fn verify_webhook(&self, _r: &WebhookRequest<'_>) -> Result<(), WebhookError> {
        Err(WebhookError::Unauthenticated("not available yet".into()))
    }
    fn parse_webhook(&self, _body: &[u8]) -> Result<Vec<CallUpdate>, WebhookError> {
        Ok(Vec::new())
    }
}
