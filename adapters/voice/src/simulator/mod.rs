//! The simulator: the embedded default voice provider. It plays a believable call in the
//! lead's language — ringing, connected, transcript lines a second or two apart, ended with a
//! summary, sentiment and outcome — with no network at all.
//!
//! It speaks through the same path as the real providers: [`Simulator::start_call`] places
//! nothing, and [`Simulator::scripted_deliveries`] returns the webhook bodies the call will
//! produce and when; the app stores them as a chain of jobs (each due at its time, each
//! queueing the next once it has run, so they never overtake each other), and each job feeds
//! its body to [`Simulator::parse_webhook`] and the common ingest, exactly as a provider's
//! webhook would. The plan of a call is deterministic under `seed`, the dialled number and the attempt
//! (see [`script`]).

mod config;
pub mod script;
mod webhook;

pub use config::Config;
pub use webhook::{Delivery, SIGNATURE_HEADER};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crm_domain::{
    CallDeletion, CallStatus, CallUpdate, ProviderError, ProviderKind, ScriptedDelivery, StartCall,
    StartedCall, VoiceProvider, WebhookError, WebhookRequest,
};

/// The simulator provider.
#[derive(Debug, Clone)]
pub struct Simulator {
    config: Config,
}

impl Simulator {
    /// A simulator with `config`.
    pub fn new(config: &Config) -> Self {
        Self {
            config: config.clone(),
        }
    }

    /// The provider's id of our call `call`.
    fn provider_id(call: &StartCall) -> String {
        format!("sim-{}", call.call_id)
    }
}

#[async_trait]
impl VoiceProvider for Simulator {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Simulator
    }

    async fn start_call(&self, call: &StartCall) -> Result<StartedCall, ProviderError> {
        Ok(StartedCall {
            provider_call_id: Self::provider_id(call),
            status: CallStatus::Dialing,
        })
    }

    async fn get_call(&self, provider_call_id: &str) -> Result<CallUpdate, ProviderError> {
        Err(ProviderError::Rejected {
            status: 404,
            message: format!(
                "the simulator keeps no state of `{provider_call_id}`: its events are durable jobs"
            ),
        })
    }

    async fn stop_call(&self, _provider_call_id: &str) -> Result<(), ProviderError> {
        // Nothing rings: the app marks the call canceled, and the remaining deliveries find
        // it ended.
        Ok(())
    }

    async fn delete_call(&self, _provider_call_id: &str) -> Result<CallDeletion, ProviderError> {
        // The simulator keeps no remote data: the call's events live only in our own jobs
        // and records, which the erasure deletes itself.
        Ok(CallDeletion::Deleted)
    }

    fn verify_webhook(&self, request: &WebhookRequest<'_>) -> Result<(), WebhookError> {
        webhook::verify(self.config.webhook_secret.as_ref(), request)
    }

    fn parse_webhook(&self, body: &[u8]) -> Result<Vec<CallUpdate>, WebhookError> {
        webhook::parse(body)
    }

    fn scripted_deliveries(
        &self,
        call: &StartCall,
        started: &StartedCall,
        placed_at: DateTime<Utc>,
    ) -> Vec<ScriptedDelivery> {
        webhook::script(&self.config, call, &started.provider_call_id, placed_at)
    }
}

#[cfg(test)]
mod tests;
