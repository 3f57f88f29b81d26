//! API keys: `crm_` followed by 32 random bytes in base64url. Only the SHA-256 of a key is
//! stored: the key is high-entropy, so a fast hash is enough (no password stretching needed).

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest as _, Sha256};
use std::fmt;

/// Every API key starts with this; anything else in a Bearer header is read as a JWT.
pub const API_KEY_PREFIX: &str = "crm_";

/// A freshly generated key: the secret (shown once) and what is stored.
pub struct GeneratedKey {
    /// The whole key, to hand to the user once.
    pub secret: String,
    /// The first characters, stored to recognise the key in lists.
    pub prefix: String,
    /// SHA-256 of the key, hex.
    pub hash: String,
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Generates a key from the operating system's random source.
pub fn generate_key() -> Result<GeneratedKey, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let secret = format!("{API_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let prefix = secret.chars().take(API_KEY_PREFIX.len() + 8).collect();
    let hash = hash_key(&secret);
    Ok(GeneratedKey {
        secret,
        prefix,
        hash,
    })
}

/// SHA-256 of a key, hex.
pub fn hash_key(key: &str) -> String {
    crm_domain::hex::encode(&Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_hashed() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert!(a.secret.starts_with("crm_") && a.secret.len() == 4 + 43);
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.hash, hash_key(&a.secret));
        assert_eq!(a.hash.len(), 64);
        assert!(a.secret.starts_with(&a.prefix));
        assert!(!format!("{a:?}").contains(&a.secret));
    }
}
