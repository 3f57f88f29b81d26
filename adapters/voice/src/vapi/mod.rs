//! Vapi (`api.vapi.ai`): outbound phone calls with a saved assistant, server messages as
//! webhooks. Wire facts: PROVIDERS.md §1.
//!
//! - Place: `POST /call` with `assistantId`, `phoneNumberId` (the agent's `from_number` is the
//!   Vapi id of the number), `customer {number, name, externalId = our customer id}`,
//!   `name` = our call id, and `assistantOverrides {variableValues, metadata {crm_call_id,
//!   crm_customer_id}, firstMessage, server.url}`.
//! - Read: `GET /call/{id}`, mapped like an end-of-call report. Vapi has no duration field:
//!   it is derived from `endedAt − startedAt`. Cost is in USD already.
//! - Stop: the REST API has no endpoint that ends a live call (`DELETE /call/{id}` deletes
//!   the call's data, `PATCH` only renames); Vapi's live call control does. Every call is
//!   placed with `monitorPlan.controlEnabled`, and [`VoiceProvider::stop_call`] reads the call
//!   for its `monitor.controlUrl` and posts `{"type": "end-call"}` there (without our key:
//!   the URL is the capability, so it appears in no message or log). A call already ended,
//!   or one without a control URL, is `Rejected { status: 409 }`.
//! - Delete (erasure): `DELETE /call/{id}` removes the call's data; 2xx → deleted, 404 → not
//!   found (nothing left), retried like a read. Vapi's status `deletion-failed` and its
//!   `call.delete.failed` server message suggest the deletion may finish asynchronously; a 2xx
//!   is taken as the confirmation.
//! - Webhooks: Vapi signs nothing by default; the server URL needs a credential, either a
//!   Bearer token or an HMAC key ([`WebhookAuth`]). Without `webhook_secret` every delivery is
//!   refused.

mod client;
mod config;
#[cfg(test)]
mod tests;
mod webhook;

pub use config::{Config, DEFAULT_BASE_URL, HmacAlgorithm, SignatureEncoding, WebhookAuth};

use crate::{ConfigError, http::ApiClient};
use crm_domain::{
    CallDeletion, CallUpdate, ProviderError, ProviderKind, StartCall, StartedCall, VoiceProvider,
    WebhookError, WebhookRequest,
};
use secrecy::ExposeSecret as _;

/// The Vapi adapter.
#[derive(Debug)]
pub struct Vapi {
    config: Config,
    api: ApiClient,
    /// The HMAC credential, when server messages are signed with one.
    hmac: Option<webhook::HmacPlan>,
}

impl Vapi {
    /// Builds the adapter; fails without an API key or with an unusable base URL.
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        let kind = ProviderKind::Vapi;
        let key = config
            .api_key
            .as_ref()
            .filter(|key| !key.expose_secret().trim().is_empty())
            .ok_or_else(|| {
                ConfigError::new(
                    kind,
                    "api_key is missing (env CRM_VOICE__PROVIDERS__VAPI__API_KEY)",
                )
            })?;
        let api = ApiClient::new(
            kind,
            &config.base_url,
            config.timeout_secs,
            "authorization",
            &format!("Bearer {}", key.expose_secret().trim()),
        )?;
        let hmac = match config.webhook_auth {
            WebhookAuth::Hmac => {
                webhook::HmacPlan::new(config).map_err(|problem| ConfigError::new(kind, problem))?
            }
            WebhookAuth::Bearer => None,
        };
        Ok(Self {
            config: config.clone(),
            api,
            hmac,
        })
    }
}

#[async_trait::async_trait]
impl VoiceProvider for Vapi {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Vapi
    }

    #[tracing::instrument(skip_all, fields(provider = "vapi", call_id = %call.call_id), err)]
    async fn start_call(&self, call: &StartCall) -> Result<StartedCall, ProviderError> {
        client::start_call(&self.api, call, self.config.server_url.as_deref()).await
    }

    #[tracing::instrument(skip(self), fields(provider = "vapi"), err)]
    async fn get_call(&self, provider_call_id: &str) -> Result<CallUpdate, ProviderError> {
        client::get_call(&self.api, provider_call_id).await
    }

    #[tracing::instrument(skip(self), fields(provider = "vapi"), err)]
    async fn stop_call(&self, provider_call_id: &str) -> Result<(), ProviderError> {
        client::stop_call(&self.api, provider_call_id).await
    }

    #[tracing::instrument(skip(self), fields(provider = "vapi"), err)]
    async fn delete_call(&self, provider_call_id: &str) -> Result<CallDeletion, ProviderError> {
        client::delete_call(&self.api, provider_call_id).await
    }

    fn verify_webhook(&self, request: &WebhookRequest<'_>) -> Result<(), WebhookError> {
        webhook::verify(&self.config, self.hmac.as_ref(), request)
    }

    fn parse_webhook(&self, body: &[u8]) -> Result<Vec<CallUpdate>, WebhookError> {
        webhook::parse(body)
    }
}
