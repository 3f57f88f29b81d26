//! Email over GraphQL (`/send-email`): preview a template for a customer, send it as an
//! idempotent job, and list what was sent with its provider events.

use super::{
    ApiContext,
    access::{customer_scope, visible_customer},
    customers::parse_id,
    pagination::{PageInfo, first_or_default},
};
use crate::{
    audit::Auditor,
    error::{ApiError, invalid},
};
use async_graphql::{Context, ID, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use crm_domain::CustomerId;
use crm_plugins::email::{Draft, MailError};
use crm_store::{Page, emails};
use std::collections::BTreeMap;

/// A rendered email, not sent.
#[derive(SimpleObject, Debug)]
pub(crate) struct EmailPreview {
    /// The language used (after fallback).
    language: String,
    /// Subject.
    subject: String,
    /// Plain-text part.
    text: String,
    /// HTML part.
    html: Option<String>,
}

/// A recorded email.
#[derive(Debug)]
pub(crate) struct EmailNode(emails::EmailRow);

#[Object(name = "Email")]
impl EmailNode {
    /// Identity (also the Message-ID and the idempotency key of the send).
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// The customer.
    async fn customer_id(&self) -> ID {
        ID(self.0.customer_id.clone())
    }
    /// The template.
    async fn template(&self) -> &str {
        &self.0.template
    }
    /// The language it was rendered in.
    async fn language(&self) -> &str {
        &self.0.language
    }
    /// `follow-up`, `nurture`, `transactional`.
    async fn category(&self) -> &str {
        &self.0.category
    }
    /// The recipient.
    async fn to(&self) -> &str {
        &self.0.to_email
    }
    /// Subject.
    async fn subject(&self) -> &str {
        &self.0.subject
    }
    /// `queued`, `sending`, `sent`, `failed`, `suppressed`.
    async fn status(&self) -> &str {
        &self.0.status
    }
    /// `outbox`, `smtp`, `sendgrid`.
    async fn sender(&self) -> &str {
        &self.0.sender
    }
    /// The provider's id of the message.
    async fn provider_message_id(&self) -> Option<&str> {
        self.0.provider_message_id.as_deref()
    }
    /// Why it failed or was suppressed.
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// The newest provider event (`delivered`, `opened`, `bounced`, …).
    async fn last_event(&self) -> Option<&str> {
        self.0.last_event.as_deref()
    }
    /// The interaction logged for the send.
    async fn interaction_id(&self) -> Option<ID> {
        self.0.interaction_id.clone().map(ID)
    }
    /// Queued.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created()
    }
    /// Sent.
    async fn sent_at(&self) -> Option<DateTime<Utc>> {
        self.0.sent()
    }
    /// Provider events, oldest first.
    async fn events(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<EmailEventNode>> {
        let api = ctx.data::<ApiContext>()?;
        Ok(emails::events_of(&api.db, &self.0.id)
            .await
            .map_err(ApiError::from)?
            .into_iter()
            .map(|(kind, at)| EmailEventNode { kind, at })
            .collect())
    }
}

/// A provider event of an email.
#[derive(SimpleObject, Debug)]
#[graphql(name = "EmailEvent")]
pub(crate) struct EmailEventNode {
    /// `delivered`, `opened`, `clicked`, `bounced`, …
    kind: String,
    /// When.
    at: DateTime<Utc>,
}

/// A page of emails.
#[derive(SimpleObject, Debug)]
pub(crate) struct EmailConnection {
    /// Newest first.
    nodes: Vec<EmailNode>,
    /// Paging.
    page_info: PageInfo,
}

fn mail_error(error: MailError) -> ApiError {
    match error {
        MailError::Blocked(reason) => invalid("customerId", "email_blocked", reason),
        MailError::Template(message) => invalid("template", "invalid_template", message),
        MailError::NotFound { entity, id } => ApiError::NotFound { entity, id },
        MailError::Store(error) => error.into(),
    }
}

fn draft(template: String, variables: Option<Json<BTreeMap<String, serde_json::Value>>>) -> Draft {
    // The shipped sequences keep their category (and so their consent rule and unsubscribe
    // link) when sent by hand.
    let category = if template.starts_with("nurture") {
        "nurture"
    } else if template == crm_plugins::follow_up::TEMPLATE {
        "follow-up"
    } else {
        "transactional"
    };
    Draft {
        template,
        category: category.to_owned(),
        variables: variables.map(|v| v.0).unwrap_or_default(),
        ..Draft::default()
    }
}

/// Email queries.
#[derive(Default, Debug)]
pub(crate) struct EmailQuery;

#[Object]
impl EmailQuery {
    /// Renders `template` for a customer in their language, without sending.
    async fn preview_email(
        &self,
        ctx: &Context<'_>,
        template: String,
        customer_id: ID,
        variables: Option<Json<BTreeMap<String, serde_json::Value>>>,
    ) -> async_graphql::Result<EmailPreview> {
        let api = ctx.data::<ApiContext>()?;
        let id: CustomerId = parse_id("customerId", &customer_id)?;
        let customer = visible_customer(ctx, id).await?;
        let rendered = api
            .mailer
            .render(&customer, &draft(template, variables))
            .map_err(mail_error)?;
        Ok(EmailPreview {
            language: rendered.language,
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
        })
    }

    /// Emails, newest first, of the customers the caller may see.
    async fn emails(
        &self,
        ctx: &Context<'_>,
        customer_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<EmailConnection> {
        let api = ctx.data::<ApiContext>()?;
        let limit = first_or_default(first, api.pages)?;
        let customer = customer_id
            .as_ref()
            .map(|id| parse_id::<CustomerId>("customerId", id))
            .transpose()?;
        if let Some(after) = &after
            && uuid::Uuid::try_parse(after).is_err()
        {
            return Err(invalid("after", "invalid_cursor", "after: not a cursor of emails").into());
        }
        let rows = emails::list(
            &api.db,
            customer,
            &customer_scope(ctx)?,
            after.as_deref(),
            limit,
        )
        .await
        .map_err(ApiError::from)?;
        let items = rows.into_iter().map(|r| (r.id.clone(), r)).collect();
        let page = Page::forward(items, limit, after.is_some());
        let page_info = PageInfo::of(&page);
        Ok(EmailConnection {
            nodes: page.items.into_iter().map(|(_, r)| EmailNode(r)).collect(),
            page_info,
        })
    }
}

/// Email mutations.
#[derive(Default, Debug)]
pub(crate) struct EmailMutation;

#[Object]
impl EmailMutation {
    /// `/send-email`: renders `template` for the customer and sends it as a job (the outbox,
    /// SMTP or SendGrid, as configured). Refused (`VALIDATION_FAILED`, code `email_blocked`)
    /// without an address or for a suppressed one.
    async fn send_email(
        &self,
        ctx: &Context<'_>,
        customer_id: ID,
        template: String,
        variables: Option<Json<BTreeMap<String, serde_json::Value>>>,
    ) -> async_graphql::Result<EmailNode> {
        let api = ctx.data::<ApiContext>()?;
        let id: CustomerId = parse_id("customerId", &customer_id)?;
        visible_customer(ctx, id).await?;
        let auditor = Auditor::of(ctx)?;
        let mut changed = serde_json::Map::new();
        changed.insert("template".into(), template.clone().into());
        let entry = auditor.entry("email.send", "customer", id.to_string(), changed);
        let row = api
            .mailer
            .queue(
                id,
                &draft(template, variables),
                &auditor.actor(),
                Some(entry),
            )
            .await
            .map_err(mail_error)?;
        Ok(EmailNode(row))
    }
}
