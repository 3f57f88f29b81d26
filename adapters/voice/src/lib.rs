//! Voice providers of the crm: Vapi, Retell, Bland and the built-in simulator, each behind the
//! [`VoiceProvider`] port of `crm-domain`, chosen per voice agent by `kind` in configuration.
//!
//! Every provider module has the same files (DESIGN.md §5): `config` (serde,
//! `deny_unknown_fields`; secrets only from the environment), `client` (the port, speaking the
//! provider's real HTTP API with a configurable base URL), `webhook` (signature verification over
//! the raw body and parsing into [`CallUpdate`]s) and tests against a local fake of the
//! provider. This crate depends on `crm-domain` only, never on storage or GraphQL.

pub mod bland;
pub mod http;
pub mod retell;
pub mod simulator;
pub mod vapi;

use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub use crm_domain::voice::*;

/// `[voice.providers]`: the settings of every provider kind (only the kinds that agents use
/// need credentials).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvidersConfig {
    /// Vapi.
    pub vapi: vapi::Config,
    /// Retell AI.
    pub retell: retell::Config,
    /// Bland AI.
    pub bland: bland::Config,
    /// The simulator.
    pub simulator: simulator::Config,
}

/// A provider that cannot be built from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("voice provider `{kind}`: {message}")]
pub struct ConfigError {
    /// The provider.
    pub kind: ProviderKind,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(kind: ProviderKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Builds the provider of `kind` from its configuration: the one place that maps a kind to
/// an adapter (DESIGN.md §5).
pub fn build(
    kind: ProviderKind,
    config: &ProvidersConfig,
) -> Result<Arc<dyn VoiceProvider>, ConfigError> {
    Ok(match kind {
        ProviderKind::Vapi => Arc::new(vapi::Vapi::new(&config.vapi)?),
        ProviderKind::Retell => Arc::new(retell::Retell::new(&config.retell)?),
        ProviderKind::Bland => Arc::new(bland::Bland::new(&config.bland)?),
        ProviderKind::Simulator => Arc::new(simulator::Simulator::new(&config.simulator)),
    })
}
