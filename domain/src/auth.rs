//! Who is calling: roles and principals. Authentication (tokens, keys) and the authorization
//! policy live in `crm-api`; the domain only names the actors so that rules and audit entries
//! can speak about them.

use crate::{error::FieldError, ids::ApiKeyId};
use std::{fmt, str::FromStr};

/// A role; what each may do is the casbin policy shipped with the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything, including keys and users.
    Admin,
    /// All customers and reports; no key management.
    Manager,
    /// Their own (and, per policy, unassigned) customers.
    Sales,
    /// Machine access: import leads, read call events; no key or user management.
    Integration,
    /// Read only.
    Viewer,
}

impl Role {
    /// Every role.
    pub const ALL: [Self; 5] = [
        Self::Admin,
        Self::Manager,
        Self::Sales,
        Self::Integration,
        Self::Viewer,
    ];

    /// The lower-case name used in tokens, keys and the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Manager => "manager",
            Self::Sales => "sales",
            Self::Integration => "integration",
            Self::Viewer => "viewer",
        }
    }
}

impl FromStr for Role {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                FieldError::new(
                    "role",
                    "invalid_role",
                    format!("`{s}` is not a role (admin, manager, sales, integration, viewer)"),
                )
            })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A signed JWT.
    Token,
    /// An API key.
    ApiKey(ApiKeyId),
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user name or key subject; owner of customers for row-level rules.
    pub subject: String,
    /// The role.
    pub role: Role,
    /// How it authenticated.
    pub credential: Credential,
}

/// Which customers a principal may see and change (row-level rule, from the policy).
/// Deliberately without a default: every query must say whose rows it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerScope {
    /// Every customer.
    All,
    /// Only customers owned by this subject.
    OwnedBy(String),
    /// Customers owned by this subject or by nobody.
    OwnedByOrUnassigned(String),
}

impl CustomerScope {
    /// True if the scope covers a customer with this owner.
    pub fn covers(&self, owner: Option<&str>) -> bool {
        match self {
            Self::All => true,
            Self::OwnedBy(subject) => owner == Some(subject.as_str()),
            Self::OwnedByOrUnassigned(subject) => owner.is_none_or(|o| o == subject),
        }
    }

    /// The subject the scope is limited to, if any.
    pub fn subject(&self) -> Option<&str> {
        match self {
            Self::All => None,
            Self::OwnedBy(s) | Self::OwnedByOrUnassigned(s) => Some(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_cover_owners() {
        let own = CustomerScope::OwnedBy("ana".into());
        let open = CustomerScope::OwnedByOrUnassigned("ana".into());
        assert!(own.covers(Some("ana")) && !own.covers(None) && !own.covers(Some("bob")));
        assert!(open.covers(Some("ana")) && open.covers(None) && !open.covers(Some("bob")));
        assert!(CustomerScope::All.covers(Some("bob")));
    }

    #[test]
    fn roles_parse() {
        assert_eq!("Sales".parse::<Role>().unwrap(), Role::Sales);
        assert_eq!("root".parse::<Role>().unwrap_err().code, "invalid_role");
    }
}
