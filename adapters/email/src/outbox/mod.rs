//! The outbox: every email becomes `{dir}/{id}.eml`, the complete RFC 5322 message SMTP would
//! send (same MIME, via lettre), and nothing leaves the machine. The embedded default, for
//! development and for deployments that hand mail to another system by folder.
//!
//! Writes are atomic (a temporary file in the same folder, synced, then linked into place) and
//! idempotent by email id: when `{id}.eml` exists a repeated send writes nothing and succeeds.
//! `SentEmail::provider_message_id` is the file name.

mod client;
mod config;
#[cfg(test)]
mod tests;

pub use config::{Config, DEFAULT_DIR};

use crate::{ConfigError, mime};
use crm_domain::{EmailSender, OutgoingEmail, SendError, SenderKind, SentEmail};
use std::path::PathBuf;

/// The outbox sender.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    /// Builds the sender; fails on an empty `dir`. The folder is created on the first send.
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        let dir = config.dir.trim();
        if dir.is_empty() {
            return Err(ConfigError::new(SenderKind::Outbox, "dir is empty"));
        }
        Ok(Self {
            dir: PathBuf::from(dir),
        })
    }

    /// The folder the messages are written to.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

#[async_trait::async_trait]
impl EmailSender for Outbox {
    fn kind(&self) -> SenderKind {
        SenderKind::Outbox
    }

    async fn forget(&self, email_id: &str) -> Result<bool, SendError> {
        // Ids are ours (UUIDs); anything with a path separator is not one of them.
        if email_id.is_empty() || email_id.contains(['/', '\\']) || email_id.starts_with('.') {
            return Ok(false);
        }
        let path = self.dir.join(format!("{email_id}.eml"));
        let removed = tokio::task::spawn_blocking(move || std::fs::remove_file(&path))
            .await
            .map_err(|e| SendError::Unavailable(e.to_string()))?;
        match removed {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(SendError::Unavailable(format!(
                "cannot delete the outbox file: {e}"
            ))),
        }
    }

    #[tracing::instrument(skip_all, fields(sender = "outbox", email_id = %email.id), err)]
    async fn send(&self, email: &OutgoingEmail) -> Result<SentEmail, SendError> {
        let message = mime::build(email)?;
        let file_name = format!("{}.eml", email.id);
        let dir = self.dir.clone();
        let name = file_name.clone();
        let bytes = message.formatted();
        let written = tokio::task::spawn_blocking(move || client::write_once(&dir, &name, &bytes))
            .await
            .map_err(|error| SendError::Unavailable(format!("the write task failed: {error}")))?
            .map_err(|error| {
                SendError::Unavailable(format!(
                    "cannot write {}: {error}",
                    self.dir.join(&file_name).display()
                ))
            })?;
        if written {
            tracing::debug!(file = %self.dir.join(&file_name).display(), "Email written to the outbox");
        } else {
            tracing::debug!(file = %self.dir.join(&file_name).display(), "Email already in the outbox");
        }
        Ok(SentEmail {
            provider_message_id: Some(file_name),
        })
    }
}
