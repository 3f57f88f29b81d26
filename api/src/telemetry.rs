//! Logging setup.

use crate::config::{LogConfig, LogFormat};
use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber: `RUST_LOG` if set, otherwise `log.filter`.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless; ignore it.
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
