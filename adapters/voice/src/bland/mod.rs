//! Bland AI (`api.bland.ai`): outbound calls with a task prompt or a pathway, post-call and
//! live-event webhooks signed with a separate secret. Wire facts: PROVIDERS.md §3.
//!
//! - Place: `POST /v1/calls` (header `authorization: <key>`, raw) with `phone_number`,
//!   `task`, `pathway_id` (the agent's provider id), `first_sentence`, `language`, `from`,
//!   `request_data` (script variables), `metadata {crm_call_id, crm_customer_id}`, `webhook`.
//!   A 2xx with `status: "error"` is a refusal.
//! - Read: `GET /v1/calls/{id}`. Units: `corrected_duration` (seconds, a string) or
//!   `call_length` (minutes) → seconds; `price` is USD.
//! - Stop: `POST /v1/calls/{id}/stop` (idempotent, retried like a read).
//! - Delete (erasure): PROVIDERS.md §3.3 documents no endpoint that deletes a call's data, so
//!   the port's default applies: [`VoiceProvider::delete_call`] answers
//!   [`CallDeletion::Unsupported`](crm_domain::CallDeletion::Unsupported) without a request.
//! - Webhooks: `X-Webhook-Signature`, hex HMAC-SHA256 of the raw body with `webhook_secret`.
//!   No timestamp is signed, so there is no replay window; repeated deliveries are dropped by
//!   their dedupe key per call.

mod client;
mod config;
#[cfg(test)]
mod tests;
mod webhook;

pub use config::{Config, DEFAULT_BASE_URL};

use crate::{ConfigError, http::ApiClient};
use crm_domain::{
    CallUpdate, ProviderError, ProviderKind, StartCall, StartedCall, VoiceProvider, WebhookError,
    WebhookRequest,
};
use secrecy::{ExposeSecret as _, SecretString};

/// The Bland adapter.
#[derive(Debug)]
pub struct Bland {
    api: ApiClient,
    webhook_secret: Option<SecretString>,
}

impl Bland {
    /// Builds the adapter; fails without an API key or with an unusable base URL.
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        let kind = ProviderKind::Bland;
        let key = config
            .api_key
            .as_ref()
            .map(|key| key.expose_secret().trim())
            .filter(|key| !key.is_empty())
            .ok_or_else(|| {
                ConfigError::new(
                    kind,
                    "api_key is missing (env CRM_VOICE__PROVIDERS__BLAND__API_KEY)",
                )
            })?;
        let api = ApiClient::new(
            kind,
            &config.base_url,
            config.timeout_secs,
            "authorization",
            key,
        )?;
        let webhook_secret = config
            .webhook_secret
            .as_ref()
            .filter(|secret| !secret.expose_secret().is_empty())
            .cloned();
        Ok(Self {
            api,
            webhook_secret,
        })
    }
}

#[async_trait::async_trait]
impl VoiceProvider for Bland {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Bland
    }

    #[tracing::instrument(skip_all, fields(provider = "bland", call_id = %call.call_id), err)]
    async fn start_call(&self, call: &StartCall) -> Result<StartedCall, ProviderError> {
        client::start_call(&self.api, call).await
    }

    #[tracing::instrument(skip(self), fields(provider = "bland"), err)]
    async fn get_call(&self, provider_call_id: &str) -> Result<CallUpdate, ProviderError> {
        client::get_call(&self.api, provider_call_id).await
    }

    #[tracing::instrument(skip(self), fields(provider = "bland"), err)]
    async fn stop_call(&self, provider_call_id: &str) -> Result<(), ProviderError> {
        client::stop_call(&self.api, provider_call_id).await
    }

    fn verify_webhook(&self, request: &WebhookRequest<'_>) -> Result<(), WebhookError> {
        webhook::verify(
            self.webhook_secret
                .as_ref()
                .map(|secret| secret.expose_secret().as_bytes()),
            request,
        )
    }

    fn parse_webhook(&self, body: &[u8]) -> Result<Vec<CallUpdate>, WebhookError> {
        webhook::parse(body)
    }
}
