//! Retell AI (`api.retellai.com`): outbound phone calls from a Retell number with an agent,
//! webhooks signed with the API key. Wire facts: PROVIDERS.md §2.
//!
//! - Place: `POST /v2/create-phone-call` with `from_number`, `to_number`,
//!   `override_agent_id`, `metadata {crm_call_id, crm_customer_id}`,
//!   `retell_llm_dynamic_variables` and, when needed, `agent_override` (`agent.language`,
//!   `agent.webhook_url`, `retell_llm.begin_message`).
//! - Read: `GET /v2/get-call/{id}`. Units: `duration_ms` → seconds, `combined_cost` cents →
//!   USD, timestamps in epoch milliseconds.
//! - Stop: `POST /v2/stop-call/{id}` (idempotent, retried like a read).
//! - Delete (erasure): `DELETE /v2/delete-call/{id}`; 2xx → deleted, 404 → not found
//!   (nothing left), retried like a read.
//! - Webhooks: `x-retell-signature: v=<ms>,d=<hex>` over the raw body followed by the
//!   timestamp, keyed with the API key; deliveries older or newer than `tolerance_secs` are
//!   refused.

mod client;
mod config;
#[cfg(test)]
mod tests;
mod webhook;

pub use config::{Config, DEFAULT_BASE_URL};

use crate::{ConfigError, http::ApiClient};
use crm_domain::{
    CallDeletion, CallUpdate, ProviderError, ProviderKind, StartCall, StartedCall, VoiceProvider,
    WebhookError, WebhookRequest,
};
use secrecy::{ExposeSecret as _, SecretString};

/// The Retell adapter.
#[derive(Debug)]
pub struct Retell {
    api: ApiClient,
    /// The API key, also the webhook HMAC key.
    api_key: SecretString,
    tolerance_secs: u64,
}

impl Retell {
    /// Builds the adapter; fails without an API key or with an unusable base URL.
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        let kind = ProviderKind::Retell;
        let key = config
            .api_key
            .as_ref()
            .map(|key| key.expose_secret().trim())
            .filter(|key| !key.is_empty())
            .ok_or_else(|| {
                ConfigError::new(
                    kind,
                    "api_key is missing (env CRM_VOICE__PROVIDERS__RETELL__API_KEY)",
                )
            })?;
        let api = ApiClient::new(
            kind,
            &config.base_url,
            config.timeout_secs,
            "authorization",
            &format!("Bearer {key}"),
        )?;
        Ok(Self {
            api,
            api_key: SecretString::from(key),
            tolerance_secs: config.tolerance_secs,
        })
    }
}

#[async_trait::async_trait]
impl VoiceProvider for Retell {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Retell
    }

    #[tracing::instrument(skip_all, fields(provider = "retell", call_id = %call.call_id), err)]
    async fn start_call(&self, call: &StartCall) -> Result<StartedCall, ProviderError> {
        client::start_call(&self.api, call).await
    }

    #[tracing::instrument(skip(self), fields(provider = "retell"), err)]
    async fn get_call(&self, provider_call_id: &str) -> Result<CallUpdate, ProviderError> {
        client::get_call(&self.api, provider_call_id).await
    }

    #[tracing::instrument(skip(self), fields(provider = "retell"), err)]
    async fn stop_call(&self, provider_call_id: &str) -> Result<(), ProviderError> {
        client::stop_call(&self.api, provider_call_id).await
    }

    #[tracing::instrument(skip(self), fields(provider = "retell"), err)]
    async fn delete_call(&self, provider_call_id: &str) -> Result<CallDeletion, ProviderError> {
        client::delete_call(&self.api, provider_call_id).await
    }

    fn verify_webhook(&self, request: &WebhookRequest<'_>) -> Result<(), WebhookError> {
        webhook::verify(
            self.api_key.expose_secret().as_bytes(),
            self.tolerance_secs,
            request,
        )
    }

    fn parse_webhook(&self, body: &[u8]) -> Result<Vec<CallUpdate>, WebhookError> {
        webhook::parse(body)
    }
}
