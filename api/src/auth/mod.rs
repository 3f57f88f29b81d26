//! Authentication: who is calling. A request presents `Authorization: Bearer <credential>`,
//! where the credential is either a JWT (HS256 with `CRM_AUTH__JWT_SECRET`, or RS256/ES256 with
//! the public keys of an external identity provider) or an API key (`crm_…`). Anything else —
//! missing, malformed, wrongly signed, expired, not yet valid, revoked — is `UNAUTHENTICATED`,
//! logged as a security event without the credential.

mod jwt;
mod keys;

pub use jwt::{Claims, JwtVerifier, LEEWAY_SECS, mint_token};
pub use keys::{API_KEY_PREFIX, GeneratedKey, generate_key, hash_key};

use crm_domain::{Clock, Credential, Principal};
use crm_store::{Db, StoreError, api_keys};
use std::sync::Arc;

/// Why a request could not be authenticated. The message is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("credentials required: send `Authorization: Bearer <token or API key>`")]
    Missing,
    /// A header that is not `Bearer <credential>`.
    #[error("malformed Authorization header: expected `Bearer <token or API key>`")]
    Malformed,
    /// A JWT that failed verification.
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
    /// An API key that is unknown, revoked or expired.
    #[error("invalid API key: {0}")]
    InvalidKey(&'static str),
    /// The key store could not be asked.
    #[error("authentication is unavailable, try again later")]
    Unavailable,
}

/// Checks credentials.
#[derive(Debug, Clone)]
pub struct Authenticator {
    jwt: Arc<JwtVerifier>,
    db: Db,
    clock: Arc<dyn Clock>,
}

impl Authenticator {
    /// Builds an authenticator.
    pub fn new(jwt: JwtVerifier, db: Db, clock: Arc<dyn Clock>) -> Self {
        Self {
            jwt: Arc::new(jwt),
            db,
            clock,
        }
    }

    /// Authenticates the value of an `Authorization` header.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let (scheme, credential) = header.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") || credential.trim().is_empty() {
            return Err(AuthError::Malformed);
        }
        let credential = credential.trim();
        if credential.starts_with(API_KEY_PREFIX) {
            self.authenticate_key(credential).await
        } else {
            let claims = self.jwt.verify(credential, self.clock.now())?;
            Ok(Principal {
                subject: claims.sub,
                role: claims.role,
                credential: Credential::Token,
            })
        }
    }

    async fn authenticate_key(&self, key: &str) -> Result<Principal, AuthError> {
        let stored = api_keys::find_by_hash(&self.db, &hash_key(key))
            .await
            .map_err(|error| match error {
                StoreError::Unavailable(_) => AuthError::Unavailable,
                other => {
                    tracing::error!(error = %other, "API key look-up failed.");
                    AuthError::Unavailable
                }
            })?;
        let key = stored.ok_or(AuthError::InvalidKey("unknown key"))?;
        if key.revoked_at.is_some() {
            return Err(AuthError::InvalidKey("the key was revoked"));
        }
        if key.expires_at.is_some_and(|at| at <= self.clock.now()) {
            return Err(AuthError::InvalidKey("the key has expired"));
        }
        Ok(Principal {
            subject: key.subject,
            role: key.role,
            credential: Credential::ApiKey(key.id),
        })
    }
}
