//! `[email.outbox]`: where the `.eml` files go.

use serde::{Deserialize, Serialize};

/// The default folder, relative to the working directory.
pub const DEFAULT_DIR: &str = "data/outbox";

/// Outbox settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The folder the messages are written to (created when missing). Default `data/outbox`.
    pub dir: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            dir: DEFAULT_DIR.into(),
        }
    }
}
