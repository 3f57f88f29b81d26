//! `GET /imports/{id}/issues.csv`: every problem of a file import as a CSV download, streamed
//! page by page (an import of millions of rows may have millions of issues).

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
use crm_store::imports;
use futures_util::stream;
use std::net::SocketAddr;

/// Issues read per page.
const PAGE: usize = 5_000;

/// The header of an issues CSV.
pub(crate) const ISSUES_HEADER: &str = "row,field,code,message\n";

/// One issue as a CSV line.
pub(crate) fn issue_line(row: i32, field: &str, code: &str, message: &str) -> String {
    fn cell(value: &str) -> String {
        if value.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", value.replace('"', "\"\""))
        } else {
            value.to_owned()
        }
    }
    format!("{row},{},{},{}\n", cell(field), cell(code), cell(message))
}

/// The download. Who may read the import (`leadImport`) may download its issues.
pub(crate) async fn issues_csv(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
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
    if !state
        .authorizer
        .may_call(principal.role, "Query.leadImport")
    {
        return error_response(
            StatusCode::FORBIDDEN,
            code::FORBIDDEN,
            format!("role {} may not read imports", principal.role),
        );
    }
    let db = state.context.db.clone();
    let all_rows =
        state.authorizer.customer_scope(&principal) == Some(crm_domain::CustomerScope::All);
    let import = match imports::get(&db, &id).await {
        Ok(Some(import)) if all_rows || import.created_by == principal.subject => import,
        Ok(_) => {
            return error_response(
                StatusCode::NOT_FOUND,
                code::NOT_FOUND,
                format!("import `{id}` not found"),
            );
        }
        Err(error) => {
            tracing::error!(%error, "Cannot read an import.");
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                code::SERVICE_UNAVAILABLE,
                "the import cannot be read; try again",
            );
        }
    };
    // Header first, then one chunk per page of issues.
    let pages = stream::unfold(Some(None), move |cursor| {
        let (db, id) = (db.clone(), import.id.clone());
        async move {
            let after = cursor?;
            match imports::issues(&db, &id, after, PAGE).await {
                Ok(page) => {
                    let next = (page.len() == PAGE)
                        .then(|| page.last().map(|(position, _)| *position))
                        .flatten();
                    let mut chunk = String::new();
                    for (_, issue) in &page {
                        chunk.push_str(&issue_line(
                            issue.row,
                            &issue.field,
                            &issue.code,
                            &issue.message,
                        ));
                    }
                    let following = next.map(Some);
                    Some((Ok::<_, std::io::Error>(chunk), following))
                }
                Err(error) => Some((Err(std::io::Error::other(error.to_string())), None)),
            }
        }
    });
    let header_line = stream::once(async { Ok::<_, std::io::Error>(ISSUES_HEADER.to_owned()) });
    let body = Body::from_stream(futures_util::StreamExt::chain(header_line, pages));
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(value) =
        HeaderValue::from_str(&format!("attachment; filename=\"import-{id}-issues.csv\""))
    {
        h.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}
