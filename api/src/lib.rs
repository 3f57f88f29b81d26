//! `crm-api`: configuration, the composition root, and the HTTP and GraphQL surface of the crm.
//!
//! Only this crate names concrete adapters; `main` stays thin and calls [`Application`].

pub mod app;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod config;
mod email_routes;
pub mod error;
pub mod events;
mod forms;
pub mod graphql;
mod http;
mod imports;
pub mod ratelimit;
mod report_routes;
pub mod telemetry;
mod voice_webhooks;
pub mod webhooks;
mod websocket;
mod ws;

pub use app::Application;
pub use config::Config;
