//! SendGrid (`api.sendgrid.com`): the v3 mail-send API and the Signed Event Webhook. Wire
//! facts: PROVIDERS.md §5.
//!
//! - Send: `POST /v3/mail/send` with `Authorization: Bearer <key>`; body `personalizations[{to}]`,
//!   `from`, `reply_to`, `subject`, `content` (`text/plain` first, then `text/html`),
//!   `attachments` (base64), `headers` (`List-Unsubscribe`, …; never `Message-ID` or other
//!   reserved headers), `categories`, `custom_args {crm_email_id, …}`. `202` answers with the
//!   `X-Message-ID` header, kept as `provider_message_id`.
//! - Outcomes: `400/401/403/404/413` and other 4xx → `Rejected` with SendGrid's
//!   `errors[].message`; `408`, `429` and `5xx` → retried here up to [`RETRIES`] more times,
//!   waiting as `Retry-After`/`X-RateLimit-Reset` ask (or a short backoff) within
//!   [`RETRY_BUDGET`] in all, then `Unavailable`; a refused connection → `Unavailable`; a
//!   timeout or a connection lost after the request was sent → `Unknown`.
//! - SendGrid takes no idempotency key. A `5xx` may come after SendGrid accepted the message,
//!   so a retried `5xx` can, rarely, deliver twice; the job layer records the send before
//!   calling and does not repeat an `Unknown` one blindly.
//! - Events: [`EventWebhook`] checks `X-Twilio-Email-Event-Webhook-Signature` (ECDSA P-256,
//!   SHA-256 over the timestamp header followed by the raw body) and the timestamp's age, and
//!   parses the JSON array into [`EmailEvent`](crm_domain::EmailEvent)s.

mod client;
mod config;
#[cfg(test)]
mod tests;
pub mod webhook;

pub use config::{Config, DEFAULT_BASE_URL, DEFAULT_EVENT_TOLERANCE_SECS, DEFAULT_TIMEOUT_SECS};
pub use webhook::{EventKey, EventWebhook};

use crate::ConfigError;
use crm_domain::{EmailSender, OutgoingEmail, SendError, SenderKind, SentEmail};
use reqwest::header::HeaderValue;
use secrecy::ExposeSecret as _;
use std::time::Duration;

/// How many times a `408`, `429` or `5xx` is retried inside one send.
pub const RETRIES: u32 = 2;
/// The most time one send spends waiting between attempts.
pub const RETRY_BUDGET: Duration = Duration::from_secs(2);

/// Connect timeout; the total timeout is configured.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The SendGrid sender.
#[derive(Debug, Clone)]
pub struct SendGrid {
    http: reqwest::Client,
    /// `{base_url}/v3/mail/send`.
    send_url: reqwest::Url,
    /// `Bearer <key>`, marked sensitive.
    authorization: HeaderValue,
}

impl SendGrid {
    /// Builds the sender; fails without an API key or with an unusable base URL.
    ///
    /// reqwest is built with `rustls-no-provider`: a rustls crypto provider must be installed
    /// first, or building the client panics inside reqwest.
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        let kind = SenderKind::Sendgrid;
        let key = config
            .api_key
            .as_ref()
            .map(|key| key.expose_secret().trim())
            .filter(|key| !key.is_empty())
            .ok_or_else(|| {
                ConfigError::new(
                    kind,
                    "api_key is missing (env CRM_EMAIL__SENDGRID__API_KEY)",
                )
            })?;
        let mut authorization = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
            ConfigError::new(kind, "api_key contains characters not allowed in a header")
        })?;
        authorization.set_sensitive(true);
        let send_url =
            send_url(&config.base_url).map_err(|message| ConfigError::new(kind, message))?;
        let timeout = Duration::from_secs(if config.timeout_secs == 0 {
            DEFAULT_TIMEOUT_SECS
        } else {
            config.timeout_secs
        });
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("crm-email/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| {
                ConfigError::new(kind, format!("cannot build the HTTP client: {error}"))
            })?;
        Ok(Self {
            http,
            send_url,
            authorization,
        })
    }
}

/// `{base_url}/v3/mail/send`, from a checked http(s) base URL.
fn send_url(raw: &str) -> Result<reqwest::Url, String> {
    let url =
        reqwest::Url::parse(raw.trim()).map_err(|error| format!("base_url `{raw}`: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "base_url `{raw}` must be an http(s) URL with a host"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "base_url `{raw}` must not have a query or fragment"
        ));
    }
    let base = url.as_str().trim_end_matches('/');
    reqwest::Url::parse(&format!("{base}/v3/mail/send"))
        .map_err(|error| format!("base_url `{raw}`: {error}"))
}

#[async_trait::async_trait]
impl EmailSender for SendGrid {
    fn kind(&self) -> SenderKind {
        SenderKind::Sendgrid
    }

    #[tracing::instrument(skip_all, fields(sender = "sendgrid", email_id = %email.id), err)]
    async fn send(&self, email: &OutgoingEmail) -> Result<SentEmail, SendError> {
        client::send(self, email).await
    }
}
