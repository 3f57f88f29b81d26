//! A minimal GraphQL-over-HTTP client for the crm server, and its errors.

use std::{error::Error, fmt, time::Duration};

use anyhow::Context as _;
use reqwest::{
    StatusCode,
    header::{AUTHORIZATION, HeaderMap, HeaderValue},
};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Map, Value, json};

/// A GraphQL client bound to the `/graphql` endpoint of one crm server.
#[derive(Clone)]
pub(crate) struct GraphqlClient {
    http: reqwest::Client,
    endpoint: String,
    token: Option<String>,
}

impl fmt::Debug for GraphqlClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token never appears in debug output.
        f.debug_struct("GraphqlClient")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl GraphqlClient {
    /// Builds a client for the server at `base_url`, authenticating with
    /// `token` (as a bearer token) when it is given and not empty.
    pub(crate) fn new(base_url: &str, token: Option<&str>) -> anyhow::Result<Self> {
        let mut headers = HeaderMap::new();
        if let Some(token) = token.filter(|token| !token.is_empty()) {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the token contains characters not allowed in an HTTP header")?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("crm-cli/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            http,
            endpoint: endpoint(base_url),
            token: token.filter(|t| !t.is_empty()).map(str::to_owned),
        })
    }

    /// The subscription endpoint (`ws://…/graphql/ws`), or `None` for a TLS server (this
    /// client speaks WebSocket only without TLS; callers fall back to polling).
    pub(crate) fn ws_endpoint(&self) -> Option<String> {
        self.endpoint
            .strip_prefix("http://")
            .map(|rest| format!("ws://{rest}/ws"))
    }

    /// The bearer token, if any.
    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Runs `query` with `variables` and deserializes the response `data`.
    ///
    /// Any GraphQL error in the response fails the call with
    /// [`CliError::Graphql`], even when partial data came back.
    pub(crate) async fn execute<T: DeserializeOwned>(
        &self,
        query: &str,
        variables: Value,
    ) -> Result<T, CliError> {
        let body = self.execute_raw(query, variables).await?;
        self.data(body)
    }

    /// The `data` of a response, or its GraphQL errors.
    fn data<T: DeserializeOwned>(&self, mut body: Value) -> Result<T, CliError> {
        let errors = graphql_errors(&body);
        if !errors.is_empty() {
            return Err(CliError::Graphql(errors));
        }
        match body.get_mut("data").map(Value::take) {
            None | Some(Value::Null) => Err(CliError::NoData {
                url: self.endpoint.clone(),
            }),
            Some(data) => serde_json::from_value(data).map_err(|source| CliError::Decode {
                url: self.endpoint.clone(),
                source,
            }),
        }
    }

    /// Runs `query` with `variables` and returns the whole JSON response,
    /// GraphQL `errors` included.
    pub(crate) async fn execute_raw(
        &self,
        query: &str,
        variables: Value,
    ) -> Result<Value, CliError> {
        let transport = |source: reqwest::Error| CliError::Transport {
            url: self.endpoint.clone(),
            source,
        };
        let response = self
            .http
            .post(&self.endpoint)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        decode_response(&self.endpoint, status, &bytes)
    }
}

impl GraphqlClient {
    /// Downloads a file the server links to (a report's `/reports/{id}.pdf`), from the server
    /// this client talks to, with the same credentials.
    pub(crate) async fn download(&self, link: &str) -> anyhow::Result<Vec<u8>> {
        let path = link.find("/reports/").map_or(link, |i| &link[i..]);
        let base = self.endpoint.trim_end_matches("/graphql");
        let url = format!("{base}{path}");
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            anyhow::bail!("GET {url}: {status}: {}", body.trim());
        }
        Ok(response
            .bytes()
            .await
            .with_context(|| format!("GET {url}: the download broke off"))?
            .to_vec())
    }

    /// Runs `query` as a GraphQL multipart request with the file at `path` as the variable
    /// `file`, streamed from disk, and deserializes the response `data`.
    pub(crate) async fn upload<T: DeserializeOwned>(
        &self,
        query: &str,
        mut variables: Value,
        path: &std::path::Path,
        file_name: &str,
    ) -> Result<T, CliError> {
        let transport = |source: reqwest::Error| CliError::Transport {
            url: self.endpoint.clone(),
            source,
        };
        if let Some(vars) = variables.as_object_mut() {
            vars.insert("file".into(), Value::Null);
        }
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| CliError::File {
                path: path.display().to_string(),
                source,
            })?;
        let length = file.metadata().await.map(|m| m.len()).ok();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let part = match length {
            Some(length) => reqwest::multipart::Part::stream_with_length(body, length),
            None => reqwest::multipart::Part::stream(body),
        }
        .file_name(file_name.to_owned());
        let form = reqwest::multipart::Form::new()
            .text(
                "operations",
                json!({ "query": query, "variables": variables }).to_string(),
            )
            .text("map", json!({ "0": ["variables.file"] }).to_string())
            .part("0", part);
        let response = self
            .http
            .post(&self.endpoint)
            .multipart(form)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        self.data(decode_response(&self.endpoint, status, &bytes)?)
    }
}

/// The GraphQL endpoint of the server at `base_url`.
fn endpoint(base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    if base.ends_with("/graphql") {
        base.to_owned()
    } else {
        format!("{base}/graphql")
    }
}

/// Accepts a JSON body when the status is a success or the body carries
/// GraphQL errors (servers answer some errors with a 4xx and such a body).
fn decode_response(url: &str, status: StatusCode, bytes: &[u8]) -> Result<Value, CliError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(body) if status.is_success() || !graphql_errors(&body).is_empty() => Ok(body),
        Err(source) if status.is_success() => Err(CliError::Decode {
            url: url.to_owned(),
            source,
        }),
        _ => Err(CliError::Status {
            url: url.to_owned(),
            status,
            body: String::from_utf8_lossy(bytes)
                .trim()
                .chars()
                .take(300)
                .collect(),
        }),
    }
}

/// The well-formed GraphQL errors of a response body, if any.
pub(crate) fn graphql_errors(body: &Value) -> Vec<GraphqlError> {
    body.get("errors")
        .and_then(|errors| Vec::deserialize(errors).ok())
        .unwrap_or_default()
}

/// One entry of a GraphQL response's `errors`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct GraphqlError {
    message: String,
    #[serde(default)]
    extensions: Option<Map<String, Value>>,
}

impl GraphqlError {
    fn extension(&self, key: &str) -> Option<&str> {
        self.extensions.as_ref()?.get(key)?.as_str()
    }
}

impl fmt::Display for GraphqlError {
    /// `message (code: CODE, field: FIELD)`, omitting absent extensions.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        let details: Vec<String> = ["code", "field"]
            .into_iter()
            .filter_map(|key| Some(format!("{key}: {}", self.extension(key)?)))
            .collect();
        if !details.is_empty() {
            write!(f, " ({})", details.join(", "))?;
        }
        Ok(())
    }
}

/// Why a GraphQL call failed.
#[derive(Debug)]
pub(crate) enum CliError {
    /// The request could not be sent or its response not read.
    Transport {
        /// The endpoint that was called.
        url: String,
        /// The underlying HTTP error.
        source: reqwest::Error,
    },
    /// The server answered a non-2xx status without GraphQL errors.
    Status {
        /// The endpoint that was called.
        url: String,
        /// The HTTP status.
        status: StatusCode,
        /// The start of the response body.
        body: String,
    },
    /// The response was not the expected JSON.
    Decode {
        /// The endpoint that was called.
        url: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The response had neither `data` nor `errors`.
    NoData {
        /// The endpoint that was called.
        url: String,
    },
    /// The server reported GraphQL errors.
    Graphql(Vec<GraphqlError>),
    /// A local file could not be read.
    File {
        /// Its path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transport { url, .. } => write!(f, "cannot reach the crm server at {url}"),
            Self::Status { url, status, body } if body.is_empty() => {
                write!(f, "the crm server at {url} answered HTTP {status}")
            }
            Self::Status { url, status, body } => {
                write!(f, "the crm server at {url} answered HTTP {status}: {body}")
            }
            Self::Decode { url, .. } => {
                write!(f, "unexpected response from the crm server at {url}")
            }
            Self::NoData { url } => write!(f, "the crm server at {url} returned no data"),
            Self::File { path, source } => write!(f, "cannot read {path}: {source}"),
            Self::Graphql(errors) => {
                let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
                f.write_str(&lines.join("\n"))
            }
        }
    }
}

impl Error for CliError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Transport { source, .. } => Some(source),
            Self::Decode { source, .. } => Some(source),
            Self::File { source, .. } => Some(source),
            Self::Status { .. } | Self::NoData { .. } | Self::Graphql(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        net::TcpListener,
        thread,
    };

    use super::*;

    const URL: &str = "http://crm.test/graphql";

    #[test]
    fn endpoint_appends_graphql_once() {
        assert_eq!(endpoint("http://h:1"), "http://h:1/graphql");
        assert_eq!(endpoint("http://h:1/"), "http://h:1/graphql");
        assert_eq!(endpoint("http://h:1/graphql/"), "http://h:1/graphql");
    }

    #[test]
    fn graphql_error_shows_message_code_and_field() {
        let body = br#"{"data":null,"errors":[{"message":"invalid email","extensions":{"code":"VALIDATION_FAILED","field":"input.email"}},{"message":"not found","extensions":{"code":"NOT_FOUND"}}]}"#;
        let body = decode_response(URL, StatusCode::OK, body).unwrap();
        assert_eq!(
            CliError::Graphql(graphql_errors(&body)).to_string(),
            "invalid email (code: VALIDATION_FAILED, field: input.email)\nnot found (code: NOT_FOUND)"
        );
    }

    #[test]
    fn non_2xx_with_graphql_errors_keeps_the_errors() {
        let body =
            br#"{"errors":[{"message":"missing token","extensions":{"code":"UNAUTHENTICATED"}}]}"#;
        let body = decode_response(URL, StatusCode::UNAUTHORIZED, body).unwrap();
        assert_eq!(
            graphql_errors(&body)[0].to_string(),
            "missing token (code: UNAUTHENTICATED)"
        );
    }

    #[test]
    fn non_2xx_without_graphql_errors_is_a_status_error() {
        let err =
            decode_response(URL, StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the crm server at http://crm.test/graphql answered HTTP 502 Bad Gateway: <html>bad gateway</html>"
        );
        let err = decode_response(URL, StatusCode::OK, b"not json").unwrap_err();
        assert!(matches!(err, CliError::Decode { .. }), "{err:?}");
    }

    /// Serves one canned HTTP response and hands back the raw request.
    fn serve_once(
        status: &'static str,
        body: &'static str,
    ) -> (String, thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0; 4096];
            // Read the headers, then as many body bytes as announced.
            loop {
                let n = stream.read(&mut buf).unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .map_or(0, |len| len.trim().parse::<usize>().unwrap());
                    if request.len() >= end + 4 + length || n == 0 {
                        break;
                    }
                }
            }
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).unwrap();
            String::from_utf8(request).unwrap()
        });
        (url, handle)
    }

    #[tokio::test]
    async fn execute_sends_variables_and_token_and_surfaces_errors() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (url, server) = serve_once(
            "400 Bad Request",
            r#"{"errors":[{"message":"bad input","extensions":{"code":"VALIDATION_FAILED","field":"id"}}]}"#,
        );
        let client = GraphqlClient::new(&url, Some("s3cret")).unwrap();
        let err = client
            .execute::<Value>(
                "query($id: ID!) { customer(id: $id) { id } }",
                json!({"id": "c1"}),
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad input (code: VALIDATION_FAILED, field: id)"
        );

        let request = server.join().unwrap();
        assert!(request.starts_with("POST /graphql "), "{request}");
        assert!(
            request
                .to_lowercase()
                .contains("authorization: bearer s3cret")
        );
        let body: Value = serde_json::from_str(request.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["variables"], json!({"id": "c1"}));
        assert!(!format!("{client:?}").contains("s3cret"));
    }

    #[tokio::test]
    async fn execute_returns_data() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (url, server) = serve_once("200 OK", r#"{"data":{"customer":{"id":"c1"}}}"#);
        let client = GraphqlClient::new(&url, None).unwrap();
        let data: Value = client
            .execute("{ customer { id } }", json!({}))
            .await
            .unwrap();
        assert_eq!(data, json!({"customer": {"id": "c1"}}));
        server.join().unwrap();
    }
}
