//! `GET /reports/{id}.html` and `GET /reports/{id}.pdf`: a stored report's renderings, for
//! the same credentials as GraphQL (`Authorization: Bearer …`). The caller's role must be
//! allowed `Query.reports`, and the report must be visible to their row-level scope (made for
//! exactly that scope, or the caller sees every customer); otherwise it is `404`, as if it
//! did not exist.

use crate::{
    error::code,
    http::{HttpState, client_ip, error_response, rate_limited, unauthenticated},
};
use axum::{
    body::Body,
    extract::{ConnectInfo, Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use crm_store::reports::{self, Format};
use std::net::SocketAddr;

pub(crate) async fn download(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let ip = client_ip(peer, &headers, state.trust_forwarded_for);
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
    if !state.authorizer.may_call(principal.role, "Query.reports") {
        return error_response(
            StatusCode::FORBIDDEN,
            code::FORBIDDEN,
            format!("role {} may not read reports", principal.role),
        );
    }
    let not_found = || {
        error_response(
            StatusCode::NOT_FOUND,
            code::NOT_FOUND,
            format!("report `{file}` not found"),
        )
    };
    let Some((id, format, content_type)) = file
        .strip_suffix(".pdf")
        .map(|id| (id, Format::Pdf, "application/pdf"))
        .or_else(|| {
            file.strip_suffix(".html")
                .map(|id| (id, Format::Html, "text/html; charset=utf-8"))
        })
    else {
        return not_found();
    };
    let Ok(id) = uuid::Uuid::try_parse(id) else {
        return not_found();
    };
    let Some(scope) = state.authorizer.customer_scope(&principal) else {
        return not_found();
    };
    match reports::rendering(&state.context.db, id, format).await {
        Ok(Some((report, bytes))) if report.visible_to(&scope) => {
            let disposition = format!(
                "{}; filename=\"report-{}-{}.{}\"",
                if format == Format::Pdf {
                    "attachment"
                } else {
                    "inline"
                },
                report.period,
                report.first_day,
                if format == Format::Pdf { "pdf" } else { "html" }
            );
            let mut response = (StatusCode::OK, Body::from(bytes)).into_response();
            let h = response.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            if let Ok(value) = HeaderValue::from_str(&disposition) {
                h.insert(header::CONTENT_DISPOSITION, value);
            }
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-store"),
            );
            // The HTML is self-contained: nothing may load, no script may run.
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
                ),
            );
            response
        }
        Ok(_) => not_found(),
        Err(error) => {
            tracing::error!(%error, "Cannot read a report.");
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                code::SERVICE_UNAVAILABLE,
                "the report cannot be read now; try again".to_owned(),
            )
        }
    }
}
