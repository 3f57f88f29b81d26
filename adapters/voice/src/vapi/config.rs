//! `[voice.providers.vapi]`: where Vapi is, its key, and how its webhooks authenticate.

use crate::http::{DEFAULT_TIMEOUT_SECS, DEFAULT_TOLERANCE_SECS};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Vapi's API (PROVIDERS.md §1.1).
pub const DEFAULT_BASE_URL: &str = "https://api.vapi.ai";

/// How Vapi authenticates its server messages: the kind of credential attached to the server
/// URL in Vapi (PROVIDERS.md §1.7). Vapi does not sign by default; without a credential every
/// delivery is refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookAuth {
    /// A Bearer credential: a token in a header (`authorization: Bearer <token>`, or the raw
    /// token in another header such as the legacy `x-vapi-secret`).
    #[default]
    Bearer,
    /// An HMAC credential: by Vapi's defaults SHA-256, hex, over `{timestamp}.{body}`; each
    /// of its settings is configurable (`hmac_*`).
    Hmac,
}

/// The hash of an HMAC credential (Vapi's `algorithm`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    /// HMAC-SHA256 (Vapi's default).
    #[default]
    Sha256,
    /// HMAC-SHA512.
    Sha512,
    /// HMAC-SHA1.
    Sha1,
}

impl HmacAlgorithm {
    /// The name, as in a `sha256=` prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
            Self::Sha1 => "sha1",
        }
    }
}

/// How an HMAC credential writes the signature (Vapi's `signatureEncoding`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    /// Lower-case hex (Vapi's default).
    #[default]
    Hex,
    /// Standard base64.
    Base64,
}

/// Vapi settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The API's base URL. Default `https://api.vapi.ai`; tests point it at a local fake.
    pub base_url: String,
    /// The private API key, sent as `Authorization: Bearer <key>`. Secret: env
    /// `CRM_VOICE__PROVIDERS__VAPI__API_KEY` only. Required.
    #[serde(skip_serializing)]
    pub api_key: Option<SecretString>,
    /// Total timeout of one request, in seconds. Default 10.
    pub timeout_secs: u64,
    /// How server messages authenticate: `bearer` (default) or `hmac`.
    pub webhook_auth: WebhookAuth,
    /// The Bearer token or the HMAC secret key of the Vapi credential. Secret: env
    /// `CRM_VOICE__PROVIDERS__VAPI__WEBHOOK_SECRET` only. Without it every delivery is refused.
    #[serde(skip_serializing)]
    pub webhook_secret: Option<SecretString>,
    /// Bearer: the header carrying the token. Default `authorization` (value
    /// `Bearer <token>`); any other header (e.g. `x-vapi-secret`) carries the raw token.
    pub bearer_header: String,
    /// HMAC: the signature header. Default `x-signature`; an optional `sha256=` prefix is
    /// accepted.
    pub hmac_signature_header: String,
    /// HMAC: the timestamp header. Default `x-timestamp` (unix seconds or milliseconds).
    pub hmac_timestamp_header: String,
    /// HMAC: how far a signed timestamp may be from now, in seconds. Default 300.
    pub tolerance_secs: u64,
    /// HMAC: the hash, `sha256` (default), `sha512` or `sha1`.
    pub hmac_algorithm: HmacAlgorithm,
    /// HMAC: the credential's `signaturePrefix` (e.g. `sha256=`), stripped before decoding.
    /// Default none; a `<algorithm>=` prefix is accepted anyway.
    pub hmac_signature_prefix: String,
    /// HMAC: whether Vapi sends (and signs) a timestamp. Default true. Without one there is no
    /// replay window: a replayed delivery is caught only as a duplicate event.
    pub hmac_include_timestamp: bool,
    /// HMAC: what is signed (the credential's `payloadFormat`), with the tokens `{body}`,
    /// `{timestamp}`, `{method}` (POST), `{url}` (`server_url`, which must then be set) and
    /// `{svix-id}` (the `hmac_message_id_header` value). Default `{timestamp}.{body}`.
    pub hmac_payload_format: String,
    /// HMAC: the header carrying the message id of `{svix-id}`. Default `svix-id`.
    pub hmac_message_id_header: String,
    /// HMAC: `hex` (default) or `base64`; the other is accepted too.
    pub hmac_signature_encoding: SignatureEncoding,
    /// HMAC: whether `webhook_secret` is base64 (the credential's `secretIsBase64`): then the
    /// decoded bytes are the key. Default false.
    pub hmac_secret_is_base64: bool,
    /// Our webhook URL, sent per call as `assistantOverrides.server.url` when a call does not
    /// bring its own. Unset: Vapi uses the assistant's, number's or org's server URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            api_key: None,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            webhook_auth: WebhookAuth::Bearer,
            webhook_secret: None,
            bearer_header: "authorization".into(),
            hmac_signature_header: "x-signature".into(),
            hmac_timestamp_header: "x-timestamp".into(),
            tolerance_secs: DEFAULT_TOLERANCE_SECS,
            hmac_algorithm: HmacAlgorithm::Sha256,
            hmac_signature_prefix: String::new(),
            hmac_include_timestamp: true,
            hmac_payload_format: "{timestamp}.{body}".into(),
            hmac_message_id_header: "svix-id".into(),
            hmac_signature_encoding: SignatureEncoding::Hex,
            hmac_secret_is_base64: false,
            server_url: None,
        }
    }
}

/// One piece of an HMAC payload format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Piece {
    /// Literal text.
    Text(String),
    /// The raw body.
    Body,
    /// The timestamp header's value.
    Timestamp,
    /// The HTTP method (POST).
    Method,
    /// The URL Vapi posted to.
    Url,
    /// The message id header's value.
    MessageId,
}

impl Config {
    /// The HMAC payload format, split into its pieces; an unknown token, a `{timestamp}`
    /// without timestamps or a `{url}` without `server_url` is an error.
    pub(super) fn payload_pieces(&self) -> Result<Vec<Piece>, String> {
        let mut pieces = Vec::new();
        let mut rest = self.hmac_payload_format.as_str();
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!(
                    "hmac_payload_format `{}` has an unclosed `{{`",
                    self.hmac_payload_format
                ));
            };
            let token = &rest[open + 1..open + close];
            pieces.push(match token {
                "body" => Piece::Body,
                "timestamp" if self.hmac_include_timestamp => Piece::Timestamp,
                "timestamp" => {
                    return Err(
                        "hmac_payload_format signs {timestamp}, but hmac_include_timestamp is false"
                            .into(),
                    );
                }
                "method" => Piece::Method,
                "url" if self.server_url.is_some() => Piece::Url,
                "url" => {
                    return Err(
                        "hmac_payload_format signs {url}: set server_url to the URL Vapi posts to"
                            .into(),
                    );
                }
                "svix-id" => Piece::MessageId,
                other => {
                    return Err(format!(
                        "hmac_payload_format: unknown token {{{other}}} (known: {{body}}, \
                         {{timestamp}}, {{method}}, {{url}}, {{svix-id}})"
                    ));
                }
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        if !pieces.contains(&Piece::Body) {
            return Err("hmac_payload_format must sign the {body}".into());
        }
        if self.hmac_include_timestamp && !pieces.contains(&Piece::Timestamp) {
            return Err(
                "hmac_payload_format does not sign {timestamp}: an unsigned timestamp proves \
                 nothing, so add it to the format or set hmac_include_timestamp = false"
                    .into(),
            );
        }
        Ok(pieces)
    }
}
