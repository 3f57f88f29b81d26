//! The HTTP surface: `/graphql` (POST; GET for GraphiQL and for queries), `/healthz`,
//! `/readyz`, and the layers every request passes (request id, trace, timeout, body limit).

use crate::{
    audit::RequestId,
    auth::{AuthError, Authenticator},
    error::code,
    graphql::{ApiContext, AppSchema},
    ratelimit::{RateLimits, Refusal},
    ws::SubscriptionsOnly,
};
use async_graphql::{ServerError, http::GraphiQLSource};
use async_graphql_axum::GraphQLProtocol;
use axum::{
    Json, Router,
    extract::{ConnectInfo, DefaultBodyLimit, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::json;
use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::TraceLayer,
};

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub(crate) struct HttpState {
    pub(crate) schema: AppSchema,
    pub(crate) context: ApiContext,
    pub(crate) authenticator: Authenticator,
    pub(crate) authorizer: crate::authz::Authorizer,
    pub(crate) limits: RateLimits,
    pub(crate) trust_forwarded_for: bool,
    pub(crate) graphiql: bool,
    pub(crate) intake: std::sync::Arc<crate::config::IntakeConfig>,
    pub(crate) body_limit: usize,
    /// SendGrid's event webhook, when its public key is configured.
    pub(crate) sendgrid_events: Option<crm_email::sendgrid::EventWebhook>,
}

/// Builds the router. CORS is closed unless origins are configured.
pub(crate) fn router(
    state: HttpState,
    body_limit: usize,
    timeout: Duration,
    cors_origins: &[String],
) -> anyhow::Result<Router> {
    let request_id = axum::http::HeaderName::from_static("x-request-id");
    let origins = cors_origins
        .iter()
        .map(|o| HeaderValue::from_str(o))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("invalid CORS origin: {e}"))?;
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600));
    // The API's CORS policy (server.cors_allowed_origins) covers GraphQL; web forms answer
    // CORS themselves, per form.
    let graphql = Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/graphql/ws", get(graphql_ws))
        .layer(cors);
    Ok(Router::new()
        .merge(graphql)
        .route("/webhooks/leads", post(crate::webhooks::leads))
        .route(
            "/forms/{name}",
            post(crate::forms::submit).options(crate::forms::preflight),
        )
        .route(
            "/webhooks/leads/{source}",
            post(crate::webhooks::leads_from),
        )
        .route(
            "/webhooks/voice/{provider}",
            post(crate::voice_webhooks::receive).layer(DefaultBodyLimit::max(
                body_limit.max(crate::voice_webhooks::BODY_LIMIT),
            )),
        )
        .route(
            "/webhooks/email/sendgrid",
            post(crate::email_routes::sendgrid_events),
        )
        .route(
            "/unsubscribe/{token}",
            get(crate::email_routes::unsubscribe).post(crate::email_routes::unsubscribe),
        )
        .route("/imports/{id}/issues.csv", get(crate::imports::issues_csv))
        .route("/reports/{file}", get(crate::report_routes::download))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid)))
}

/// GraphQL subscriptions over WebSocket (see [`crate::ws`]).
async fn graphql_ws(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    // Refuses an upgrade without a GraphQL protocol (its value is private: `protocol_of`).
    _protocol: GraphQLProtocol,
    upgrade: crate::websocket::Upgrade,
) -> Response {
    let ip = client_ip(peer, &headers, state.trust_forwarded_for);
    if let Err(refusal) = state.limits.check_ip(ip) {
        return rate_limited(refusal, "client address", &ip.to_string());
    }
    let Some(wire_protocol) = crate::ws::protocol_of(&headers) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Small buffers (they grow for a large message): 10,000 idle subscribers must not hold
    // 128 KiB each of read and write buffer.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_message_size(Some(256 * 1024));
    upgrade.on_upgrade(
        wire_protocol.sec_websocket_protocol(),
        config,
        move |socket| async move {
            // Everything this socket sends passes one outbox: async-graphql's messages and the
            // frames of shared transcript feeds (see `crate::ws`).
            let outbox = crate::ws::Outbox::new(socket.clone());
            let writer = tokio::spawn(crate::ws::write(outbox.clone()));
            let executor = SubscriptionsOnly::new(
                state.schema.clone(),
                state.context.clone(),
                state.authenticator.clone(),
                (outbox.clone(), wire_protocol),
            );
            let init = executor.clone();
            crate::ws::serve(
                socket,
                outbox.clone(),
                executor,
                wire_protocol,
                move |payload| async move { init.init(&payload, header).await },
            )
            .await;
            // What waits is still written (a close frame, a last `complete`); feeds that send
            // later find the outbox closed and drop the subscriber.
            outbox.close();
            let _ = writer.await;
        },
    )
}

/// A request's headers as (lower-case name, trimmed value) pairs, for provider webhook
/// verification in the domain's `WebhookRequest` (values that are not text are left out).
pub(crate) fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            value
                .to_str()
                .ok()
                .map(|v| (name.as_str().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// A GraphQL-shaped error response for failures before execution.
pub(crate) fn error_response(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
) -> Response {
    let body = json!({ "errors": [{ "message": message.into(), "extensions": { "code": code } }] });
    (status, Json(body)).into_response()
}

/// The raw request body, for handlers that verify a signature over it. A body over the limit
/// (or one that cannot be read) is refused with the API's JSON error, like every other refusal.
pub(crate) struct RawBody(pub(crate) axum::body::Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for RawBody {
    type Rejection = Response;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Response> {
        axum::body::Bytes::from_request(request, state)
            .await
            .map(Self)
            .map_err(|rejection| {
                let status = rejection.status();
                let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    code::PAYLOAD_TOO_LARGE
                } else {
                    code::BAD_REQUEST
                };
                error_response(status, code, rejection.body_text())
            })
    }
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        code::NOT_FOUND,
        "no such route; GraphQL is served at /graphql",
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<HttpState>) -> Response {
    match state.context.db.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(error) => {
            tracing::warn!(%error, "Readiness check failed.");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

/// Authenticates the caller, runs one request through the schema with fresh DataLoaders, and
/// gives every error that has no code yet (parse, schema validation, limits) a stable one.
async fn execute(
    state: &HttpState,
    peer: SocketAddr,
    headers: &HeaderMap,
    request: async_graphql::Request,
) -> Response {
    let ip = client_ip(peer, headers, state.trust_forwarded_for);
    if let Err(refusal) = state.limits.check_ip(ip) {
        return rate_limited(refusal, "client address", &ip.to_string());
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    let principal = match state.authenticator.authenticate(authorization).await {
        Ok(principal) => principal,
        Err(error) => return unauthenticated(&error),
    };
    let bucket = match principal.credential {
        crm_domain::Credential::Token => format!("user:{}", principal.subject),
        crm_domain::Credential::ApiKey(id) => format!("key:{id}"),
    };
    if let Err(refusal) = state.limits.check_principal(&bucket) {
        return rate_limited(refusal, "caller", &bucket);
    }
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut request = state
        .context
        .loaders()
        .attach(request)
        .data(principal)
        .data(RequestId(request_id));
    if let Err(error) = request.parsed_query() {
        return error_response(
            StatusCode::BAD_REQUEST,
            code::GRAPHQL_PARSE_FAILED,
            error.message,
        );
    }
    let mut response = state.schema.execute(request).await;
    for error in &mut response.errors {
        tag_uncoded(error);
    }
    Json(response).into_response()
}

/// A GraphQL multipart request (file uploads): credentials are checked before the upload is
/// read, and the file streams into a temporary file, never whole into memory.
async fn graphql_multipart(
    state: &HttpState,
    peer: SocketAddr,
    headers: &HeaderMap,
    content_type: &str,
    body: axum::body::Body,
) -> Response {
    let ip = client_ip(peer, headers, state.trust_forwarded_for);
    if let Err(refusal) = state.limits.check_ip(ip) {
        return rate_limited(refusal, "client address", &ip.to_string());
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    let principal = match state.authenticator.authenticate(authorization).await {
        Ok(principal) => principal,
        Err(error) => return unauthenticated(&error),
    };
    // Uploads exist for file imports only: refuse callers who may not import before reading
    // (up to intake.max_file_bytes of) their body.
    if !state
        .authorizer
        .may_call(principal.role, "Mutation.importLeadsFile")
    {
        return error_response(
            StatusCode::FORBIDDEN,
            code::FORBIDDEN,
            format!("role {} may not upload files", principal.role),
        );
    }
    use futures_util::TryStreamExt as _;
    use tokio_util::compat::TokioAsyncReadCompatExt as _;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let reader = tokio_util::io::StreamReader::new(stream).compat();
    let options = async_graphql::http::MultipartOptions::default()
        .max_num_files(1)
        .max_file_size(state.intake.max_file_bytes);
    match async_graphql::http::receive_body(Some(content_type), reader, options).await {
        Ok(request) => execute(state, peer, headers, request).await,
        Err(async_graphql::ParseRequestError::PayloadTooLarge) => error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            code::PAYLOAD_TOO_LARGE,
            format!(
                "the file is larger than {} bytes (intake.max_file_bytes)",
                state.intake.max_file_bytes
            ),
        ),
        Err(error) => error_response(
            StatusCode::BAD_REQUEST,
            code::BAD_REQUEST,
            format!("not a GraphQL multipart request: {error}"),
        ),
    }
}

/// The client's address: the peer, or — behind a trusted proxy — the hop that proxy added,
/// which is the **last** `X-Forwarded-For` entry (the ones before it are the client's to forge).
pub(crate) fn client_ip(
    peer: SocketAddr,
    headers: &HeaderMap,
    trust_forwarded_for: bool,
) -> IpAddr {
    if trust_forwarded_for
        && let Some(ip) = headers
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return ip;
    }
    peer.ip()
}

pub(crate) fn rate_limited(refusal: Refusal, what: &str, key: &str) -> Response {
    let seconds = refusal.retry_after.as_secs() + u64::from(refusal.retry_after.subsec_nanos() > 0);
    tracing::warn!(target: "crm::security", limited = what, key, retry_after_secs = seconds, "Rate limit exceeded.");
    let mut response = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        code::RATE_LIMITED,
        format!("too many requests from this {what}; retry in {seconds} s"),
    );
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    headers.insert("ratelimit-limit", HeaderValue::from(refusal.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(0u32));
    headers.insert("ratelimit-reset", HeaderValue::from(seconds));
    response
}

pub(crate) fn unauthenticated(error: &AuthError) -> Response {
    if *error == AuthError::Unavailable {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            code::SERVICE_UNAVAILABLE,
            error.to_string(),
        );
    }
    tracing::warn!(target: "crm::security", reason = %error, "Authentication failed.");
    let mut response = error_response(
        StatusCode::UNAUTHORIZED,
        code::UNAUTHENTICATED,
        error.to_string(),
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn tag_uncoded(error: &mut ServerError) {
    let extensions = error.extensions.get_or_insert_with(Default::default);
    if extensions.get("code").is_none() {
        extensions.set("code", code::GRAPHQL_VALIDATION_FAILED);
    }
}

async fn graphql_post(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if content_type.starts_with("multipart/form-data") {
        return graphql_multipart(&state, peer, &headers, &content_type, body).await;
    }
    let body = match axum::body::to_bytes(body, state.body_limit).await {
        Ok(body) => body,
        Err(_) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                code::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than {} bytes (server.body_limit_bytes); send files as a multipart upload",
                    state.body_limit
                ),
            );
        }
    };
    let json_content = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.starts_with("application/json") || v.starts_with("application/graphql-response+json")
        });
    if !json_content {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::BAD_REQUEST,
            "send the GraphQL request as JSON with Content-Type: application/json",
        );
    }
    match serde_json::from_slice::<async_graphql::Request>(&body) {
        Ok(request) => execute(&state, peer, &headers, request).await,
        Err(error) => error_response(
            StatusCode::BAD_REQUEST,
            code::BAD_REQUEST,
            format!(
                "the body is not a GraphQL request ({{\"query\": …, \"variables\": …}}): {error}"
            ),
        ),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetParams {
    query: Option<String>,
    variables: Option<String>,
    operation_name: Option<String>,
}

async fn graphql_get(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    params: Query<GetParams>,
) -> Response {
    let Query(params) = params;
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    let Some(query) = params.query else {
        if wants_html && state.graphiql {
            let page = GraphiQLSource::build()
                .endpoint("/graphql")
                .subscription_endpoint("/graphql/ws")
                .title("crm GraphQL")
                .finish();
            let mut response = Html(page).into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return response;
        }
        return error_response(
            StatusCode::BAD_REQUEST,
            code::BAD_REQUEST,
            "GET /graphql needs a `query` parameter",
        );
    };
    let mut request = async_graphql::Request::new(query);
    if let Some(name) = params.operation_name {
        request = request.operation_name(name);
    }
    if let Some(raw) = params.variables {
        match serde_json::from_str::<serde_json::Value>(&raw) {
            Ok(value) => request = request.variables(async_graphql::Variables::from_json(value)),
            Err(error) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    code::BAD_REQUEST,
                    format!("variables are not JSON: {error}"),
                );
            }
        }
    }
    // GET must not change anything (it may be cached or prefetched): refuse mutations.
    let wanted = request.operation_name.clone();
    let is_mutation = match request.parsed_query() {
        Ok(document) => document.operations.iter().any(|(name, op)| {
            let selected = wanted
                .as_deref()
                .is_none_or(|wanted| name.is_some_and(|n| n.as_str() == wanted));
            selected && op.node.ty == async_graphql::parser::types::OperationType::Mutation
        }),
        Err(error) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                code::GRAPHQL_PARSE_FAILED,
                error.message,
            );
        }
    };
    if is_mutation {
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            code::BAD_REQUEST,
            "mutations must be sent with POST",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    execute(&state, peer, &headers, request).await
}
