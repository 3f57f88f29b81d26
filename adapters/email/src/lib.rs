//! Email senders of the crm: SMTP (lettre over rustls), SendGrid (v3 mail-send API) and the
//! local outbox (`.eml` files, the embedded default), each behind the [`EmailSender`] port of
//! `crm-domain`, chosen by `[email] kind` in configuration.
//!
//! Every sender module has the same files as the voice adapters (DESIGN.md §5): `config`
//! (serde, `deny_unknown_fields`; secrets only from the environment), `client` (the port) and
//! tests; SendGrid also has `webhook` (the signed Event Webhook: ECDSA verification over the
//! raw body and parsing into [`EmailEvent`]s). SMTP and the outbox write the same RFC 5322
//! message, built once in `mime`. This crate depends on `crm-domain` only, never on storage or
//! GraphQL.
//!
//! Outcomes follow [`SendError`]: `Rejected` is final, `Unavailable` means nothing was handed
//! over (retry later), `Unknown` means the message may have been accepted. None of the
//! providers takes an idempotency key, so the job layer records a send before calling
//! [`EmailSender::send`] and does not blindly repeat an `Unknown` one.
//!
//! reqwest is built with `rustls-no-provider`: the binary must install the ring provider
//! (`rustls::crypto::ring::default_provider().install_default()`) before the SendGrid sender
//! is built.

mod mime;
pub mod outbox;
pub mod sendgrid;
pub mod smtp;

use serde::{Deserialize, Serialize};
use std::{str::FromStr as _, sync::Arc};

pub use crm_domain::email::*;

/// `[email]`: which sender is used and the settings of every sender kind (only the chosen
/// kind needs credentials).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SendersConfig {
    /// The sender: `smtp`, `sendgrid` or `outbox`. Default `outbox` (no network).
    pub kind: String,
    /// `[email.smtp]`.
    pub smtp: smtp::Config,
    /// `[email.sendgrid]`.
    pub sendgrid: sendgrid::Config,
    /// `[email.outbox]`.
    pub outbox: outbox::Config,
}

impl Default for SendersConfig {
    fn default() -> Self {
        Self {
            kind: SenderKind::Outbox.as_str().to_owned(),
            smtp: smtp::Config::default(),
            sendgrid: sendgrid::Config::default(),
            outbox: outbox::Config::default(),
        }
    }
}

/// A sender that cannot be built from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `[email] kind` names no sender.
    #[error("[email] kind `{0}` is not one of smtp, sendgrid, outbox")]
    UnknownKind(String),
    /// The chosen sender's settings are unusable.
    #[error("email sender `{kind}`: {message}")]
    Invalid {
        /// The sender.
        kind: SenderKind,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn new(kind: SenderKind, message: impl Into<String>) -> Self {
        Self::Invalid {
            kind,
            message: message.into(),
        }
    }
}

/// Builds the sender `[email] kind` names from its configuration: the one place that maps a
/// kind to an adapter (DESIGN.md §5).
pub fn build(config: &SendersConfig) -> Result<Arc<dyn EmailSender>, ConfigError> {
    let kind = SenderKind::from_str(&config.kind)
        .map_err(|_| ConfigError::UnknownKind(config.kind.clone()))?;
    Ok(match kind {
        SenderKind::Smtp => Arc::new(smtp::Smtp::new(&config.smtp)?),
        SenderKind::Sendgrid => Arc::new(sendgrid::SendGrid::new(&config.sendgrid)?),
        SenderKind::Outbox => Arc::new(outbox::Outbox::new(&config.outbox)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_outbox_and_unknown_settings_are_refused() {
        let config: SendersConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config.kind, "outbox");
        assert_eq!(build(&config).unwrap().kind(), SenderKind::Outbox);
        assert!(serde_json::from_str::<SendersConfig>(r#"{"smpt": {}}"#).is_err());
        assert!(serde_json::from_str::<SendersConfig>(r#"{"smtp": {"hots": "x"}}"#).is_err());
    }

    #[test]
    fn build_picks_the_named_kind_and_refuses_unknown_ones() {
        let config = SendersConfig {
            kind: " SMTP ".into(),
            ..SendersConfig::default()
        };
        assert_eq!(build(&config).unwrap().kind(), SenderKind::Smtp);
        let config = SendersConfig {
            kind: "mailgun".into(),
            ..SendersConfig::default()
        };
        assert_eq!(
            build(&config).unwrap_err(),
            ConfigError::UnknownKind("mailgun".into())
        );
        // SendGrid without a key cannot be built.
        let config = SendersConfig {
            kind: "sendgrid".into(),
            ..SendersConfig::default()
        };
        assert!(matches!(
            build(&config).unwrap_err(),
            ConfigError::Invalid {
                kind: SenderKind::Sendgrid,
                ..
            }
        ));
    }
}
