//! Email's HTTP endpoints: the signed unsubscribe link (`GET /unsubscribe/{token}` shows a
//! confirmation page in the customer's language; `POST` is RFC 8058 one-click) and SendGrid's
//! event webhook (`POST /webhooks/email/sendgrid`, ECDSA-verified over the raw body).

use crate::{
    error::code,
    graphql::ApiContext,
    http::{HttpState, error_response},
};
use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use crm_domain::WebhookRequest;
use crm_plugins::email::MailError;
use serde_json::json;

fn page(language: &str, done: bool) -> String {
    let (title, text) = match (language, done) {
        ("de", true) => ("Abgemeldet", "Sie erhalten von uns keine E-Mails mehr."),
        ("bs", true) => ("Odjavljeni ste", "Više nećete primati naše e-mailove."),
        ("sr", true) => ("Одјављени сте", "Више нећете примати наше е-поруке."),
        (_, true) => (
            "Unsubscribed",
            "You will not receive emails from us any more.",
        ),
        ("de", false) => ("Link ungültig", "Dieser Abmeldelink ist nicht gültig."),
        ("bs", false) => ("Neispravan link", "Ovaj link za odjavu nije ispravan."),
        ("sr", false) => ("Неисправан линк", "Овај линк за одјаву није исправан."),
        (_, false) => ("Invalid link", "This unsubscribe link is not valid."),
    };
    format!(
        "<!doctype html><html lang=\"{language}\"><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\">\
         <h1>{title}</h1><p>{text}</p></body></html>"
    )
}

/// `GET /unsubscribe/{token}` (the link) and `POST` (RFC 8058 one-click).
pub(crate) async fn unsubscribe(
    State(state): State<HttpState>,
    Path(token): Path<String>,
) -> Response {
    let api: &ApiContext = &state.context;
    match api.mailer.unsubscribe(&token).await {
        Ok(customer) => {
            tracing::info!(customer_id = %customer.id, "Unsubscribed by link.");
            let language = customer.language.as_ref().map_or("en", |l| l.primary());
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                page(language, true),
            )
                .into_response()
        }
        Err(MailError::Store(error)) => {
            tracing::error!(%error, "Unsubscribe not stored.");
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                code::SERVICE_UNAVAILABLE,
                "try again later",
            )
        }
        Err(_) => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            page("en", false),
        )
            .into_response(),
    }
}

/// `POST /webhooks/email/sendgrid`.
pub(crate) async fn sendgrid_events(
    State(state): State<HttpState>,
    headers: HeaderMap,
    crate::http::RawBody(body): crate::http::RawBody,
) -> Response {
    let api: &ApiContext = &state.context;
    let Some(webhook) = state.sendgrid_events.as_ref() else {
        return error_response(
            StatusCode::NOT_FOUND,
            code::NOT_FOUND,
            "the SendGrid event webhook is not configured (email.sendgrid.event_public_key)",
        );
    };
    let pairs = crate::http::header_pairs(&headers);
    let request = WebhookRequest {
        headers: &pairs,
        body: &body,
        received_at: api.clock.now(),
    };
    if let Err(error) = webhook.verify(&request) {
        tracing::warn!(target: "crm::security", %error, "SendGrid event webhook refused.");
        return error_response(
            StatusCode::UNAUTHORIZED,
            code::UNAUTHENTICATED,
            error.to_string(),
        );
    }
    let events = match webhook.parse(&body) {
        Ok(events) => events,
        Err(error) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                code::BAD_REQUEST,
                error.to_string(),
            );
        }
    };
    let now = api.clock.now();
    let mut fresh = 0;
    for event in &events {
        match crm_store::emails::record_event(&api.db, event, now).await {
            Ok(true) => fresh += 1,
            Ok(false) => {}
            Err(error) => {
                tracing::error!(%error, "SendGrid events not stored.");
                return error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    code::SERVICE_UNAVAILABLE,
                    "the events could not be stored; retry later",
                );
            }
        }
    }
    (
        StatusCode::OK,
        Json(json!({ "received": events.len(), "new": fresh })),
    )
        .into_response()
}
