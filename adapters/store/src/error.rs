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
    Database(DieselError),
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

impl From<DieselError> for StoreError {
    /// A lost connection is [`StoreError::Unavailable`] (try again later), not a failure of the
    /// statement: the connection was closed, could not take the command, or its server ended
    /// it (an operator's `pg_terminate_backend`, a shutdown, a crash of another backend:
    /// SQLSTATE 57P01 and 57P02, "terminating connection …").
    fn from(error: DieselError) -> Self {
        match &error {
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            ) => Self::Unavailable(error.to_string()),
            DieselError::DatabaseError(DatabaseErrorKind::Unknown, info)
                if info.message().starts_with("terminating connection") =>
            {
                Self::Unavailable(error.to_string())
            }
            _ => Self::Database(error),
        }
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for StoreError {
    fn from(error: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

/// Results of the storage layer.
pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn database(kind: DatabaseErrorKind, message: &str) -> StoreError {
        DieselError::DatabaseError(kind, Box::new(message.to_owned())).into()
    }

    #[test]
    fn a_lost_connection_is_unavailable_and_a_refusal_is_not() {
        let lost = [
            database(DatabaseErrorKind::ClosedConnection, "closed"),
            database(DatabaseErrorKind::UnableToSendCommand, "connection closed"),
            database(
                DatabaseErrorKind::Unknown,
                "terminating connection due to administrator command",
            ),
        ];
        for error in lost {
            assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
        }
        let refused = database(
            DatabaseErrorKind::Unknown,
            "invalid byte sequence for encoding \"UTF8\": 0x00",
        );
        assert!(matches!(refused, StoreError::Database(_)), "{refused:?}");
        assert!(matches!(
            StoreError::from(DieselError::NotFound),
            StoreError::Database(DieselError::NotFound)
        ));
    }
}
