//! `[email.smtp]`: where the SMTP server is, how the connection is secured and the login.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Default total timeout of one SMTP step (connect, a command, the message), in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;

/// How the connection to the server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain connection upgraded with `STARTTLS`, which the server must offer (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte ("SMTPS", port 465).
    Tls,
    /// No encryption: only for a relay on this machine (`localhost`, `127.0.0.1`, `::1`).
    None,
}

/// SMTP settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The server's host name (also the name its TLS certificate must carry). Default
    /// `localhost`.
    pub host: String,
    /// The port. Default 587 (submission with STARTTLS); SMTPS is 465.
    pub port: u16,
    /// `starttls` (default), `tls` or `none`. `none` is refused for any host but `localhost`,
    /// `127.0.0.1` and `::1`.
    pub security: Security,
    /// The login; none means no `AUTH`. With a username a password is required.
    pub username: Option<String>,
    /// The password (for SendGrid's relay: the API key, with username `apikey`). Secret: env
    /// `CRM_EMAIL__SMTP__PASSWORD` only.
    #[serde(skip_serializing)]
    pub password: Option<SecretString>,
    /// Timeout of each step of the conversation (connect, TLS, each command, the message
    /// transfer), in seconds. Default 10.
    pub timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 587,
            security: Security::default(),
            username: None,
            password: None,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
        }
    }
}
