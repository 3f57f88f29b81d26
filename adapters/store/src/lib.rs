//! Storage of the crm: one query code base over SQLite (the embedded default) and PostgreSQL.
//!
//! - [`Db`] is the only handle; it hides which backend is in use (DESIGN.md §3).
//! - Every query lives in this crate, grouped by entity ([`customers`], [`interactions`]), and
//!   returns domain types from `crm-domain`; diesel never leaks out.
//! - Migrations are embedded per backend and applied by [`Db::open`] or [`run_migrations`].

pub mod api_keys;
pub mod audit;
mod bulk;
pub mod calls;
pub mod customers;
mod db;
pub mod effects;
pub mod emails;
mod error;
pub mod gdpr;
pub mod imports;
pub mod inbox;
pub mod interactions;
pub mod jobs;
pub mod nurture;
mod page;
pub mod pipeline;
pub mod reports;
mod rows;
mod schema;
pub mod scores;
pub mod seed;
pub mod tasks;

pub use db::{
    Backend, Db, DbOptions, check_url, embedded_migration_versions, redact, run_migrations,
};
pub use error::{StoreError, StoreResult};
pub use page::{Cursor, CursorError, CursorKey, Page, Seek};
