//! Web forms that post leads: `POST /forms/{name}` with `application/x-www-form-urlencoded` or
//! `multipart/form-data`, as configured in `[[intake.forms]]`.
//!
//! - Fields are mapped by the form's `fields` table, then by the synonyms of their names; the
//!   submission is stored in the inbox (with the import job) before it is answered.
//! - Only the form's `allowed_origins` may post it from a browser (a foreign `Origin` gets 403),
//!   and they get the CORS headers for `fetch`; submissions are rate-limited per form and IP.
//! - A filled honeypot field is answered like a real submission, and dropped.
//! - A form creates leads; it never changes an existing customer, nor picks owner, source or
//!   tags (anyone may post it).

use crate::{
    config::FormConfig,
    error::code,
    http::{HttpState, client_ip, error_response, rate_limited},
};
use axum::{
    Json,
    extract::{ConnectInfo, FromRequest as _, Multipart, Path, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use crm_domain::lead::LeadField;
use crm_plugins::intake::{ImportOptions, OnDuplicate, import_lead_job};
use crm_store::inbox::{self, NewInboxEntry, Received};
use serde_json::{Map, Value, json};
use std::net::SocketAddr;

/// Most fields a submission may have.
const MAX_FIELDS: usize = 100;
/// Longest value of a field.
const MAX_VALUE_LEN: usize = 10_000;

fn form<'a>(state: &'a HttpState, name: &str) -> Option<&'a FormConfig> {
    state.intake.forms.iter().find(|f| f.name == name)
}

/// The origin to allow if the form allows the page posting it; `Err` with that origin if a
/// browser on another origin posts it.
fn cors(form: &FormConfig, headers: &HeaderMap) -> Result<Option<HeaderValue>, String> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(None); // Not from a browser page, or a same-origin navigation.
    };
    if form
        .allowed_origins
        .iter()
        .any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        Ok(HeaderValue::from_str(origin).ok())
    } else {
        tracing::warn!(target: "crm::security", form = %form.name, %origin, "Form post from a foreign origin refused.");
        Err(origin.to_owned())
    }
}

fn foreign(origin: &str) -> Response {
    error_response(
        StatusCode::FORBIDDEN,
        code::FORBIDDEN,
        format!("this form may not be posted from {origin}"),
    )
}

fn with_cors(mut response: Response, origin: Option<HeaderValue>) -> Response {
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

/// `OPTIONS /forms/{name}`: the CORS preflight of a `fetch` submission.
pub(crate) async fn preflight(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(form) = form(&state, &name) else {
        return unknown(&name);
    };
    match cors(form, &headers) {
        Ok(origin) => {
            let mut response = with_cors(StatusCode::NO_CONTENT.into_response(), origin);
            let h = response.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("POST"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("content-type"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            response
        }
        Err(origin) => foreign(&origin),
    }
}

fn unknown(name: &str) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        code::NOT_FOUND,
        format!("no form named {name}"),
    )
}

/// `POST /forms/{name}`.
pub(crate) async fn submit(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    let headers = request.headers().clone();
    let Some(form) = form(&state, &name).cloned() else {
        return unknown(&name);
    };
    let origin = match cors(&form, &headers) {
        Ok(origin) => origin,
        Err(origin) => return foreign(&origin),
    };
    let ip = client_ip(peer, &headers, state.trust_forwarded_for);
    if let Err(refusal) = state.limits.check_form(&form.name, ip) {
        return with_cors(
            rate_limited(refusal, "client address", &ip.to_string()),
            origin,
        );
    }
    let fields = match read_fields(&state, request).await {
        Ok(fields) => fields,
        Err(response) => return with_cors(response, origin),
    };
    let answer = |id: Option<&str>| match &form.redirect {
        Some(to) => Redirect::to(to).into_response(),
        None => (
            StatusCode::ACCEPTED,
            Json(json!({ "id": id, "status": "received" })),
        )
            .into_response(),
    };
    if let Some(honeypot) = &form.honeypot
        && fields
            .iter()
            .any(|(k, v)| k == honeypot && !v.trim().is_empty())
    {
        tracing::info!(form = %form.name, "Form submission with a filled honeypot dropped.");
        return with_cors(answer(None), origin);
    }
    // The lead as JSON, with the form's own field names mapped to lead fields. An anonymous
    // page may not choose the owner, source or tags of a lead: those come from the config.
    let mut lead = Map::new();
    for (key, value) in fields {
        if form.honeypot.as_deref() == Some(key.as_str()) {
            continue;
        }
        let key = form.fields.get(&key).cloned().unwrap_or(key);
        if matches!(
            LeadField::from_header(&key),
            Some(LeadField::Owner | LeadField::Source | LeadField::Tags)
        ) {
            continue;
        }
        lead.entry(key).or_insert(Value::String(value));
    }
    let now = state.context.clock.now();
    // Anyone can post a form: it never changes an existing customer (whoever knows an email
    // must not rewrite or grant consent for that customer). A repeat is recorded as skipped.
    let options = ImportOptions {
        on_duplicate: OnDuplicate::Skip,
        source: Some(form.source.clone().unwrap_or_else(|| "webform".into())),
        tags: form.tags.clone(),
        ..ImportOptions::default()
    };
    let new = NewInboxEntry {
        channel: "form".into(),
        source: form.name.clone(),
        idempotency_key: None,
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        payload: Value::Object(lead).to_string(),
    };
    let job = |inbox_id: &str| import_lead_job(inbox_id, options, now);
    match inbox::receive(&state.context.db, new, job, now).await {
        Ok(Received::New(entry) | Received::Repeat(entry)) => {
            tracing::info!(inbox_id = %entry.id, form = %form.name, "Form submission received.");
            with_cors(answer(Some(&entry.id)), origin)
        }
        Err(error) => {
            tracing::error!(%error, "Cannot store a form submission.");
            with_cors(
                error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    code::SERVICE_UNAVAILABLE,
                    "the submission could not be stored; try again",
                ),
                origin,
            )
        }
    }
}

/// The text fields of an urlencoded or multipart body (files are ignored).
async fn read_fields(
    state: &HttpState,
    request: Request,
) -> Result<Vec<(String, String)>, Response> {
    let bad = |message: String| error_response(StatusCode::BAD_REQUEST, code::BAD_REQUEST, message);
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut fields = Vec::new();
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(request, state)
            .await
            .map_err(|e| bad(format!("not a multipart form: {e}")))?;
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| bad(format!("the form cannot be read: {e}")))?
        {
            if field.file_name().is_some() {
                continue;
            }
            let name = field.name().unwrap_or_default().to_owned();
            let value = field
                .text()
                .await
                .map_err(|e| bad(format!("the field {name} cannot be read: {e}")))?;
            fields.push((name, value));
            if fields.len() > MAX_FIELDS {
                return Err(bad(format!("at most {MAX_FIELDS} fields")));
            }
        }
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        let body = axum::body::to_bytes(request.into_body(), state.body_limit)
            .await
            .map_err(|_| {
                error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    code::PAYLOAD_TOO_LARGE,
                    "the form is too large",
                )
            })?;
        for (name, value) in form_urlencoded::parse(&body) {
            fields.push((name.into_owned(), value.into_owned()));
            if fields.len() > MAX_FIELDS {
                return Err(bad(format!("at most {MAX_FIELDS} fields")));
            }
        }
    } else {
        return Err(error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::BAD_REQUEST,
            "post the form as application/x-www-form-urlencoded or multipart/form-data",
        ));
    }
    if let Some((name, _)) = fields
        .iter()
        .find(|(_, v)| v.chars().count() > MAX_VALUE_LEN)
    {
        return Err(bad(format!(
            "the field {name} is longer than {MAX_VALUE_LEN} characters"
        )));
    }
    Ok(fields)
}
