//! Any SMTP server (lettre over rustls with the ring provider): submission with STARTTLS
//! (default, port 587), implicit TLS (port 465) or, for a relay on this machine only, no
//! encryption. Wire facts: RFC 5321; SendGrid's relay: PROVIDERS.md §5.2.
//!
//! One connection per email: connect (TLS / `STARTTLS`), `EHLO`, optional `AUTH PLAIN/LOGIN`,
//! `MAIL FROM`, `RCPT TO`, `DATA`, the message (the same MIME as the outbox), `QUIT`. lettre's
//! connection is driven step by step (instead of its pooled `AsyncSmtpTransport`, which
//! reports neither where a failure happened nor times out a silent server after connecting),
//! so every step has the configured timeout and a failure is classified by how far the
//! conversation got:
//!
//! | What happened | Outcome |
//! |---|---|
//! | permanent 5xx reply to `MAIL`, `RCPT`, `DATA` or the message | `Rejected` |
//! | transient 4xx reply at any step | `Unavailable` |
//! | refused connection, DNS, TLS, timeout or broken connection before the message was sent | `Unavailable` |
//! | 5xx to the greeting, `EHLO`, `STARTTLS` or `AUTH` (the server or the login, not the email) | `Unavailable` |
//! | the server lacks `SMTPUTF8`/`8BITMIME` the email needs | `Rejected` |
//! | timeout or broken connection after the message was sent, before the final reply | `Unknown` |
//!
//! `SentEmail::provider_message_id` is the queue id from the final reply (`250 2.0.0 Ok:
//! queued as 4Bf8Yq1z`, Exim's `id=…`) when there is one, else the `Message-ID` without its
//! angle brackets.

mod client;
mod config;
#[cfg(test)]
mod tests;

pub use config::{Config, DEFAULT_TIMEOUT_SECS, Security};

use crate::{ConfigError, mime};
use crm_domain::{EmailSender, OutgoingEmail, SendError, SenderKind, SentEmail};
use lettre::transport::smtp::{
    authentication::Credentials, client::TlsParameters, extension::ClientId,
};
use secrecy::{ExposeSecret as _, SecretString};
use std::{fmt, time::Duration};

/// Hosts that `security = "none"` may be used with.
const LOOPBACK_HOSTS: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// The SMTP sender.
pub struct Smtp {
    host: String,
    port: u16,
    security: Security,
    /// The certificate check for `host` (unused with `Security::None`).
    tls: Option<TlsParameters>,
    login: Option<(String, SecretString)>,
    hello: ClientId,
    timeout: Duration,
}

impl fmt::Debug for Smtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Smtp")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.login.as_ref().map(|(user, _)| user))
            .field("hello", &self.hello)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Smtp {
    /// Builds the sender; fails on an empty host, an unencrypted connection to another
    /// machine, or half a login. Nothing is connected yet.
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        let kind = SenderKind::Smtp;
        let host = config.host.trim().to_owned();
        if host.is_empty() {
            return Err(ConfigError::new(kind, "host is empty"));
        }
        if config.port == 0 {
            return Err(ConfigError::new(kind, "port 0 is not a port"));
        }
        let tls = match config.security {
            Security::None => {
                if !LOOPBACK_HOSTS
                    .iter()
                    .any(|loopback| loopback.eq_ignore_ascii_case(&host))
                {
                    return Err(ConfigError::new(
                        kind,
                        format!(
                            "security `none` sends mail and passwords unencrypted; it is only \
                             allowed for localhost/127.0.0.1/::1, not `{host}`"
                        ),
                    ));
                }
                None
            }
            Security::Starttls | Security::Tls => {
                Some(TlsParameters::new(host.clone()).map_err(|error| {
                    ConfigError::new(kind, format!("cannot set up TLS for `{host}`: {error}"))
                })?)
            }
        };
        let username = config
            .username
            .as_deref()
            .map(str::trim)
            .filter(|user| !user.is_empty());
        let password = config
            .password
            .as_ref()
            .map(|password| password.expose_secret())
            .filter(|password| !password.is_empty());
        let login = match (username, password) {
            (Some(user), Some(password)) => {
                Some((user.to_owned(), SecretString::from(password.to_owned())))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    kind,
                    "username is set but the password is missing (env CRM_EMAIL__SMTP__PASSWORD)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    kind,
                    "a password is set (env CRM_EMAIL__SMTP__PASSWORD) but no username",
                ));
            }
        };
        let timeout = Duration::from_secs(if config.timeout_secs == 0 {
            DEFAULT_TIMEOUT_SECS
        } else {
            config.timeout_secs
        });
        Ok(Self {
            host,
            port: config.port,
            security: config.security,
            tls,
            login,
            hello: ClientId::default(),
            timeout,
        })
    }

    fn credentials(&self) -> Option<Credentials> {
        self.login.as_ref().map(|(user, password)| {
            Credentials::new(user.clone(), password.expose_secret().to_owned())
        })
    }
}

#[async_trait::async_trait]
impl EmailSender for Smtp {
    fn kind(&self) -> SenderKind {
        SenderKind::Smtp
    }

    #[tracing::instrument(skip_all, fields(sender = "smtp", email_id = %email.id), err)]
    async fn send(&self, email: &OutgoingEmail) -> Result<SentEmail, SendError> {
        let message = mime::build(email)?;
        let reply = client::send(self, message.envelope(), &message.formatted())
            .await
            .map_err(client::classify)?;
        let provider_message_id = client::queue_id(&reply).or_else(|| {
            mime::message_id(email)
                .ok()
                .map(|id| id.trim_start_matches('<').trim_end_matches('>').to_owned())
        });
        tracing::debug!(provider_message_id, "SMTP server accepted the email");
        Ok(SentEmail {
            provider_message_id,
        })
    }
}
