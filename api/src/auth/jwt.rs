//! JWT verification and minting.
//!
//! Accepted: HS256 signed with `auth.jwt_secret`, and RS256/ES256 signed by a key in
//! `auth.public_keys_file` (PEM or JWKS, picked by `kid`). The algorithm must match the key
//! (no `alg: none`, no HS256 signed with a public key). `exp` and `sub` are required; `exp` and
//! `nbf` are checked against the server's clock with [`LEEWAY_SECS`] of tolerance; `iss`/`aud`
//! when configured.

use super::AuthError;
use chrono::{DateTime, Utc};
use crm_domain::Role;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, jwk::JwkSet};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: i64 = 30;

/// The claims of a crm token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: the user name.
    pub sub: String,
    /// Role.
    #[serde(with = "role_serde")]
    pub role: Role,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

mod role_serde {
    use crm_domain::Role;
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(role: &Role, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(role.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Role, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse()
            .map_err(|_| serde::de::Error::custom("unknown role"))
    }
}

struct PublicKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Verifies tokens.
pub struct JwtVerifier {
    secret: Option<DecodingKey>,
    public: Vec<PublicKey>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("hs256", &self.secret.is_some())
            .field("public_keys", &self.public.len())
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl JwtVerifier {
    /// Builds a verifier from the secret and the text of a PEM or JWKS file (either optional).
    pub fn new(
        secret: Option<&SecretString>,
        public_keys: Option<&str>,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> anyhow::Result<Self> {
        let secret = secret.map(|s| DecodingKey::from_secret(s.expose_secret().as_bytes()));
        let public = match public_keys {
            None => Vec::new(),
            Some(text) if text.trim_start().starts_with('{') => {
                let set: JwkSet = serde_json::from_str(text)?;
                let mut keys = Vec::new();
                for jwk in &set.keys {
                    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, KeyAlgorithm};
                    // The algorithm comes from `alg`, or else from the key type and curve.
                    let algorithm = match (jwk.common.key_algorithm, &jwk.algorithm) {
                        (Some(KeyAlgorithm::RS256), _) => Some(Algorithm::RS256),
                        (Some(KeyAlgorithm::ES256), _) => Some(Algorithm::ES256),
                        (None, AlgorithmParameters::RSA(_)) => Some(Algorithm::RS256),
                        (None, AlgorithmParameters::EllipticCurve(ec))
                            if ec.curve == EllipticCurve::P256 =>
                        {
                            Some(Algorithm::ES256)
                        }
                        _ => None,
                    };
                    match (algorithm, DecodingKey::from_jwk(jwk)) {
                        (Some(algorithm), Ok(key)) => keys.push(PublicKey {
                            kid: jwk.common.key_id.clone(),
                            algorithm,
                            key,
                        }),
                        // Identity providers publish keys for other uses too; skip, do not fail.
                        _ => {
                            tracing::warn!(kid = ?jwk.common.key_id, "Skipping a JWK that is not an RS256 or ES256 signing key.")
                        }
                    }
                }
                anyhow::ensure!(!keys.is_empty(), "the JWKS holds no RS256 or ES256 key");
                keys
            }
            Some(pem) => {
                let (algorithm, key) = match DecodingKey::from_rsa_pem(pem.as_bytes()) {
                    Ok(key) => (Algorithm::RS256, key),
                    Err(_) => (Algorithm::ES256, DecodingKey::from_ec_pem(pem.as_bytes())?),
                };
                vec![PublicKey {
                    kid: None,
                    algorithm,
                    key,
                }]
            }
        };
        Ok(Self {
            secret,
            public,
            issuer,
            audience,
        })
    }

    /// True if no way to verify a token is configured (only API keys work).
    pub fn is_disabled(&self) -> bool {
        self.secret.is_none() && self.public.is_empty()
    }

    /// Verifies a token at `now`.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::InvalidToken("malformed token"))?;
        let keys: Vec<&DecodingKey> = match header.alg {
            Algorithm::HS256 => {
                vec![
                    self.secret
                        .as_ref()
                        .ok_or(AuthError::InvalidToken("HS256 tokens are not accepted"))?,
                ]
            }
            Algorithm::RS256 | Algorithm::ES256 => self
                .public
                .iter()
                .filter(|k| k.algorithm == header.alg)
                .filter(|k| header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
                .map(|k| &k.key)
                .collect(),
            _ => return Err(AuthError::InvalidToken("algorithm not accepted")),
        };
        if keys.is_empty() {
            return Err(AuthError::InvalidToken(
                "no key for this algorithm and key id",
            ));
        }
        let mut validation = Validation::new(header.alg);
        // Time claims are checked below against the server's clock, which tests control.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let mut required = vec!["exp", "sub"];
        if self.issuer.is_some() {
            required.push("iss");
        }
        if self.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        match &self.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        // Without a `kid`, several keys may match (rotation): the first that verifies wins.
        let mut last = None;
        let mut verified = None;
        for key in keys {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => {
                    verified = Some(data.claims);
                    break;
                }
                Err(error) => last = Some(error),
            }
        }
        let claims = match (verified, last) {
            (Some(claims), _) => claims,
            (None, error) => {
                use jsonwebtoken::errors::ErrorKind;
                return Err(AuthError::InvalidToken(
                    match error.as_ref().map(|e| e.kind()) {
                        Some(ErrorKind::InvalidSignature) => "bad signature",
                        Some(ErrorKind::InvalidIssuer) => "wrong issuer",
                        Some(ErrorKind::InvalidAudience) => "wrong audience",
                        Some(ErrorKind::MissingRequiredClaim(_)) => "a required claim is missing",
                        Some(ErrorKind::Json(_)) => "invalid claims",
                        _ => "malformed token",
                    },
                ));
            }
        };
        let now = now.timestamp();
        if claims.exp + LEEWAY_SECS <= now {
            return Err(AuthError::InvalidToken("the token has expired"));
        }
        if claims.nbf.is_some_and(|nbf| nbf - LEEWAY_SECS > now) {
            return Err(AuthError::InvalidToken("the token is not valid yet"));
        }
        Ok(claims)
    }
}

/// Signs an HS256 token for `subject` with `role`, valid for `ttl` from `now`.
pub fn mint_token(
    secret: &SecretString,
    subject: &str,
    role: Role,
    now: DateTime<Utc>,
    ttl: chrono::Duration,
    issuer: Option<&str>,
) -> Result<String, jsonwebtoken::errors::Error> {
    let expires = now
        .checked_add_signed(ttl)
        .ok_or(jsonwebtoken::errors::ErrorKind::ExpiredSignature)?;
    let claims = Claims {
        sub: subject.to_owned(),
        role,
        exp: expires.timestamp(),
        iat: Some(now.timestamp()),
        nbf: Some(now.timestamp()),
        iss: issuer.map(str::to_owned),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

    fn secret() -> SecretString {
        SecretString::from("a-test-secret-that-is-long-enough-for-hs256")
    }

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(Some(&secret()), None, None, None).unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_072_000, 0).unwrap()
    }

    #[test]
    fn a_minted_token_verifies() {
        let token = mint_token(
            &secret(),
            "alice",
            Role::Sales,
            now(),
            chrono::Duration::hours(1),
            None,
        )
        .unwrap();
        let claims = verifier().verify(&token, now()).unwrap();
        assert_eq!((claims.sub.as_str(), claims.role), ("alice", Role::Sales));
    }

    #[test]
    fn bad_tokens_are_refused() {
        let v = verifier();
        let token = mint_token(
            &secret(),
            "alice",
            Role::Admin,
            now(),
            chrono::Duration::hours(1),
            None,
        )
        .unwrap();
        // Expired (beyond the leeway) and not yet valid.
        assert_eq!(
            v.verify(&token, now() + chrono::Duration::hours(2))
                .unwrap_err(),
            AuthError::InvalidToken("the token has expired")
        );
        assert_eq!(
            v.verify(&token, now() - chrono::Duration::minutes(5))
                .unwrap_err(),
            AuthError::InvalidToken("the token is not valid yet")
        );
        // Wrong secret.
        let other = SecretString::from("another-secret-another-secret-another");
        let forged = mint_token(
            &other,
            "alice",
            Role::Admin,
            now(),
            chrono::Duration::hours(1),
            None,
        )
        .unwrap();
        assert_eq!(
            v.verify(&forged, now()).unwrap_err(),
            AuthError::InvalidToken("bad signature")
        );
        // Tampered payload: the role raised from sales to admin.
        let sales = mint_token(
            &secret(),
            "alice",
            Role::Sales,
            now(),
            chrono::Duration::hours(1),
            None,
        )
        .unwrap();
        let parts: Vec<&str> = sales.split('.').collect();
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap())
            .unwrap()
            .replace("sales", "admin");
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(payload),
            parts[2]
        );
        assert_eq!(
            v.verify(&tampered, now()).unwrap_err(),
            AuthError::InvalidToken("bad signature")
        );
        // alg: none.
        let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let unsigned = format!("{none_header}.{}.", parts[1]);
        assert!(v.verify(&unsigned, now()).is_err());
        // An RS256 header when no public key is configured.
        let rs_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#);
        assert!(
            v.verify(&format!("{rs_header}.{}.{}", parts[1], parts[2]), now())
                .is_err()
        );
        assert!(v.verify("garbage", now()).is_err());
        // An unknown role.
        let claims =
            serde_json::json!({ "sub": "x", "role": "root", "exp": now().timestamp() + 60 });
        let token = jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"a-test-secret-that-is-long-enough-for-hs256"),
        )
        .unwrap();
        assert_eq!(
            v.verify(&token, now()).unwrap_err(),
            AuthError::InvalidToken("invalid claims")
        );
    }

    /// A throw-away P-256 key pair made for this test (`openssl ecparam -name prime256v1`).
    const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgivZ1A2+eEsPM6OQq\nYLP21IiTDvrsLAYvktW9EXClo7OhRANCAAR3Bdp5fMBddpXoJwnsSuai78KxxPkd\np6oi+/kwV6hd9aTxyNmdEaLhZRhj02GNOxQgSxhNsas0l9MnFTakbatE\n-----END PRIVATE KEY-----\n";
    const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEdwXaeXzAXXaV6CcJ7Ermou/CscT5\nHaeqIvv5MFeoXfWk8cjZnRGi4WUYY9NhjTsUIEsYTbGrNJfTJxU2pG2rRA==\n-----END PUBLIC KEY-----\n";

    #[test]
    fn identity_provider_tokens_verify_with_the_public_key_only() {
        let verifier = JwtVerifier::new(
            None,
            Some(EC_PUBLIC),
            Some("https://idp.example.com/".into()),
            Some("crm".into()),
        )
        .unwrap();
        let claims = serde_json::json!({
            "sub": "idp-user", "role": "manager", "exp": now().timestamp() + 600,
            "iss": "https://idp.example.com/", "aud": "crm"
        });
        let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap();
        let verified = verifier.verify(&token, now()).unwrap();
        assert_eq!(
            (verified.sub.as_str(), verified.role),
            ("idp-user", Role::Manager)
        );
        // Another issuer, or an HS256 token, is refused when only public keys are configured.
        let mut foreign = claims.clone();
        foreign["iss"] = serde_json::json!("https://evil.example.com/");
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &foreign, &key).unwrap();
        assert_eq!(
            verifier.verify(&token, now()).unwrap_err(),
            AuthError::InvalidToken("wrong issuer")
        );
        let hs = mint_token(
            &secret(),
            "x",
            Role::Admin,
            now(),
            chrono::Duration::hours(1),
            None,
        )
        .unwrap();
        assert_eq!(
            verifier.verify(&hs, now()).unwrap_err(),
            AuthError::InvalidToken("HS256 tokens are not accepted")
        );
    }

    #[test]
    fn a_jwks_without_alg_and_with_foreign_keys_still_verifies_by_kid() {
        // The same P-256 key as EC_PUBLIC, as a JWK without `alg`, next to an encryption key.
        let jwks = r#"{"keys": [
            {"kty": "oct", "kid": "enc", "use": "enc", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "sig-1", "crv": "P-256", "x": "dwXaeXzAXXaV6CcJ7Ermou_CscT5HaeqIvv5MFeoXfU", "y": "pPHI2Z0RouFlGGPTYY07FCBLGE2xqzSX0ycVNqRtq0Q"}
        ]}"#;
        let verifier = JwtVerifier::new(None, Some(jwks), None, None).unwrap();
        let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
        let claims =
            serde_json::json!({ "sub": "u", "role": "viewer", "exp": now().timestamp() + 60 });
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("sig-1".into());
        let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        assert_eq!(verifier.verify(&token, now()).unwrap().role, Role::Viewer);
        header.kid = Some("unknown".into());
        let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        assert_eq!(
            verifier.verify(&token, now()).unwrap_err(),
            AuthError::InvalidToken("no key for this algorithm and key id")
        );
    }
}
