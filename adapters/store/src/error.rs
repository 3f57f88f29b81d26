//! Storage errors. Policy: a failure that a caller can act on gets its own variant
//! (`NotFound`, `Duplicate`, `Conflict`, `Unavailable`); everything else is `Database` and ends
//! up as an internal error that is logged, never shown.

use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// What went wrong in the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The row does not exist.
    #[error("{entity} `{id}` not found")]
    NotFound {
        /// `customer`, `interaction`, …
        entity: &'static str,
        /// The id that was looked up.
        id: String,
    },
    /// A unique key is already taken.
    #[error("a customer with this {field} already exists ({existing_id})")]
    Duplicate {
        /// The field whose value is taken (`email`, `phone`).
        field: &'static str,
        /// The id of the row that holds it.
        existing_id: String,
    },
    /// A row changed under us too often to apply an update.
    #[error("{entity} `{id}` was changed concurrently, try again")]
    Conflict {
        /// `customer`, `interaction`, …
        entity: &'static str,
        /// The id.
        id: String,
    },
    /// A change was refused by a domain rule.
    #[error("invalid change: {0}")]
    Invalid(crm_domain::ValidationErrors),
    /// The database cannot be reached or the pool is exhausted.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be read back (data written by something else).
    #[error("corrupt {entity} row `{id}`: {reason}")]
    Corrupt {
        /// The table.
        entity: &'static str,
        /// The row id.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Any other database failure.
    #[error(transparent)]
    Database(#[from] DieselError),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migration(String),
}

impl StoreError {
    /// True if this is a unique-key violation from the database.
    pub(crate) fn is_unique_violation(error: &DieselError) -> bool {
        matches!(
            error,
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
        )
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for StoreError {
    fn from(error: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

/// Results of the storage layer.
pub type StoreResult<T> = Result<T, StoreError>;
