//! The one mapping from failures to what a client sees.
//!
//! Policy:
//! - Every error that leaves the API carries a stable `extensions.code`:
//!   `VALIDATION_FAILED` (with `field` and `fields`: every failing input field as a path such as
//!   `input.email`), `NOT_FOUND`, `DUPLICATE` (with `field` and `existingId`), `CONFLICT`,
//!   `UNAUTHENTICATED`, `FORBIDDEN`, `RATE_LIMITED`, `SERVICE_UNAVAILABLE`, `INTERNAL`; request-level failures use `BAD_REQUEST`,
//!   `PAYLOAD_TOO_LARGE`, `GRAPHQL_PARSE_FAILED` and `GRAPHQL_VALIDATION_FAILED`.
//! - Internal details are logged here, once, with the request's span, and never returned:
//!   the client gets "internal error".
//! - Domain and store errors are converted only here, on purpose; nothing becomes a client
//!   error by accident.

use async_graphql::ErrorExtensions as _;
use crm_domain::{FieldError, ValidationErrors};
use crm_store::StoreError;

/// Stable error codes, as sent in `extensions.code`.
pub mod code {
    /// Input failed validation.
    pub const VALIDATION_FAILED: &str = "VALIDATION_FAILED";
    /// The thing asked for does not exist.
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// A unique value (email, phone) is taken.
    pub const DUPLICATE: &str = "DUPLICATE";
    /// No valid credentials.
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    /// The policy does not allow this operation for the caller's role.
    pub const FORBIDDEN: &str = "FORBIDDEN";
    /// Too many requests; retry after `Retry-After`.
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    /// A concurrent change won; retry.
    pub const CONFLICT: &str = "CONFLICT";
    /// The database is unreachable or overloaded.
    pub const SERVICE_UNAVAILABLE: &str = "SERVICE_UNAVAILABLE";
    /// A bug or an unexpected failure; details are in the server log.
    pub const INTERNAL: &str = "INTERNAL";
    /// The HTTP request is not a GraphQL request.
    pub const BAD_REQUEST: &str = "BAD_REQUEST";
    /// The body is larger than `server.body_limit_bytes`.
    pub const PAYLOAD_TOO_LARGE: &str = "PAYLOAD_TOO_LARGE";
    /// The query is not valid GraphQL syntax.
    pub const GRAPHQL_PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
    /// The query does not fit the schema or the depth/complexity limits.
    pub const GRAPHQL_VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
}

/// A failure inside a resolver.
///
/// Deliberately not `Display`: async-graphql converts any `Display` type into an error without
/// a code, so only the `From` impl below can turn an `ApiError` into a GraphQL error.
#[derive(Debug, Clone)]
pub enum ApiError {
    /// Input failed validation; each field error carries its full path.
    Validation(ValidationErrors),
    /// Not found.
    NotFound {
        /// `customer`, `interaction`.
        entity: &'static str,
        /// The id.
        id: String,
    },
    /// A unique value is taken.
    Duplicate {
        /// Path of the input field.
        field: String,
        /// Who holds it, when the caller may see that customer.
        existing_id: Option<String>,
    },
    /// Lost a race with a concurrent change.
    Conflict(String),
    /// The caller may not do this.
    Forbidden(String),
    /// Database down or overloaded.
    Unavailable(String),
    /// Anything else.
    Internal(String),
}

/// A validation failure of one field.
pub fn invalid(
    field: impl Into<String>,
    code: &'static str,
    message: impl Into<String>,
) -> ApiError {
    ApiError::Validation(FieldError::new(field, code, message).into())
}

/// `snake_case` field names of the domain to the `camelCase` of the GraphQL schema, under a
/// prefix (`time_zone` → `input.timeZone`, `tags[2]` → `input.tags[2]`).
fn graphql_path(prefix: &str, field: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + field.len() + 1);
    if !prefix.is_empty() {
        out.push_str(prefix);
        out.push('.');
    }
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

impl ApiError {
    /// Validation errors of a domain input, with field paths under `prefix` (`input`).
    pub fn validation(prefix: &str, errors: ValidationErrors) -> Self {
        let mut mapped = ValidationErrors::default();
        for e in errors {
            mapped.push(FieldError::new(
                graphql_path(prefix, &e.field),
                e.code,
                e.message,
            ));
        }
        Self::Validation(mapped)
    }

    /// A store error, with input field paths under `prefix`.
    pub fn from_store(prefix: &str, error: StoreError) -> Self {
        match error {
            StoreError::NotFound { entity, id } => Self::NotFound { entity, id },
            StoreError::Duplicate { field, existing_id } => Self::Duplicate {
                field: graphql_path(prefix, field),
                existing_id: Some(existing_id),
            },
            StoreError::Invalid(errors) => Self::validation(prefix, errors),
            StoreError::Conflict { entity, id } => Self::Conflict(format!(
                "{entity} `{id}` was changed concurrently, try again"
            )),
            StoreError::Unavailable(reason) => Self::Unavailable(reason),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl ApiError {
    /// The message a client sees.
    pub fn message(&self) -> String {
        match self {
            Self::Validation(errors) => format!("invalid input: {errors}"),
            Self::NotFound { entity, id } => format!("{entity} `{id}` not found"),
            Self::Duplicate {
                field,
                existing_id: Some(existing_id),
            } => {
                format!("{field} is already taken by customer {existing_id}")
            }
            Self::Duplicate {
                field,
                existing_id: None,
            } => format!("{field} is already taken"),
            Self::Conflict(message) | Self::Forbidden(message) => message.clone(),
            Self::Unavailable(_) => "the database is unavailable, try again later".into(),
            Self::Internal(_) => "internal error".into(),
        }
    }
}

impl From<std::sync::Arc<ApiError>> for ApiError {
    fn from(error: std::sync::Arc<ApiError>) -> Self {
        (*error).clone()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        Self::from_store("", error)
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(error: ApiError) -> Self {
        match &error {
            ApiError::Unavailable(reason) => tracing::warn!(%reason, "Database unavailable."),
            ApiError::Internal(reason) => tracing::error!(%reason, "Internal error in a resolver."),
            _ => {}
        }
        let message = error.message();
        async_graphql::Error::new(message).extend_with(|_, ext| match &error {
            ApiError::Validation(errors) => {
                ext.set("code", code::VALIDATION_FAILED);
                if let Some(first) = errors.errors().first() {
                    ext.set("field", first.field.as_str());
                }
                let fields: Vec<async_graphql::Value> = errors
                    .errors()
                    .iter()
                    .map(|e| {
                        let mut entry = async_graphql::indexmap::IndexMap::new();
                        entry.insert(async_graphql::Name::new("field"), e.field.as_str().into());
                        entry.insert(async_graphql::Name::new("code"), e.code.into());
                        entry.insert(
                            async_graphql::Name::new("message"),
                            e.message.as_str().into(),
                        );
                        async_graphql::Value::Object(entry)
                    })
                    .collect();
                ext.set("fields", fields);
            }
            ApiError::NotFound { .. } => ext.set("code", code::NOT_FOUND),
            ApiError::Duplicate { field, existing_id } => {
                ext.set("code", code::DUPLICATE);
                ext.set("field", field.as_str());
                if let Some(existing_id) = existing_id {
                    ext.set("existingId", existing_id.as_str());
                }
            }
            ApiError::Conflict(_) => ext.set("code", code::CONFLICT),
            ApiError::Forbidden(_) => ext.set("code", code::FORBIDDEN),
            ApiError::Unavailable(_) => ext.set("code", code::SERVICE_UNAVAILABLE),
            ApiError::Internal(_) => ext.set("code", code::INTERNAL),
        })
    }
}

/// Results of resolvers.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_are_camel_case() {
        assert_eq!(graphql_path("input", "time_zone"), "input.timeZone");
        assert_eq!(graphql_path("input", "tags[2]"), "input.tags[2]");
        assert_eq!(graphql_path("", "duration_seconds"), "durationSeconds");
    }

    #[test]
    fn internals_are_not_sent() {
        let error: async_graphql::Error = ApiError::Internal("secret table detail".into()).into();
        assert_eq!(error.message, "internal error");
    }
}
