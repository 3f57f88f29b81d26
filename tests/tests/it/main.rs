//! The one integration test binary: the real server over HTTP, on both storage backends.
#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected shapes")]

mod audit;
mod auth;
mod customers;
mod dataloader;
mod duplicates;
mod email;
mod email_events;
mod forms;
mod gdpr;
mod http;
mod intake;
mod interactions;
mod jobs;
mod pipeline;
mod reports;
mod schema;
mod subscriptions;
mod tasks;
mod voice;
mod voice_providers;
