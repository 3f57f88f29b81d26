//! The email agents (`/send-email`, `/follow-up`): templated emails sent as idempotent jobs, and
//! the follow-up after a call (an email with the call's outcome, an appointment proposal as an
//! ICS attachment, and a task for the lead's owner).
//!
//! - [`Mailer::queue`] checks policy (an address, the suppression list, consent for marketing),
//!   renders the template once to fail early, and records the email with its `send-email` job.
//! - `send-email` claims the email (`queued` → `sending`) before calling the sender, so a retry
//!   never sends a second copy: an attempt that died mid-send is not sent again (except by the
//!   outbox, whose writes are idempotent by the email's id). Suppression is checked again at
//!   send time. Every send is logged as an interaction of kind email.
//! - Marketing mail carries a signed unsubscribe link and `List-Unsubscribe` headers.

use crate::{
    pipeline::StepPayload,
    runner::{JobError, JobHandler, RetryPolicy},
    templates::{
        CallVars, Context as TemplateContext, CustomerVars, Rendered, SenderVars, Templates,
    },
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crm_domain::hex::encode as hex;
use crm_domain::{
    Clock, Customer, CustomerId, Direction, EmailSender, Interaction, InteractionId,
    InteractionKind, Mailbox, OutgoingEmail, SendError,
};
use crm_store::{
    Db, StoreError,
    audit::NewAuditEntry,
    customers,
    emails::{self, EmailRow, EmailStatus, Outcome},
    jobs::NewJob,
};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::{collections::BTreeMap, sync::Arc};

/// Sends one recorded email.
pub const SEND_EMAIL: &str = "send-email";

/// Categories that are marketing: they need consent to email.
pub const MARKETING: &[&str] = &["nurture"];
/// Categories that carry an unsubscribe link and `List-Unsubscribe` headers.
pub const UNSUBSCRIBABLE: &[&str] = &["nurture", "follow-up"];

/// Who sends, and where links point.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// The sender's mailbox.
    pub from: Mailbox,
    /// Replies go here.
    pub reply_to: Option<Mailbox>,
    /// The sender's signature (`sender.name`, `sender.company`, …).
    pub signature: SenderVars,
    /// Our public base URL, for unsubscribe links.
    pub public_url: String,
    /// The key signing unsubscribe links.
    pub unsubscribe_key: Vec<u8>,
}

/// Why an email cannot be queued or sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// Policy forbids it (no address, suppressed, no consent).
    #[error("{0}")]
    Blocked(String),
    /// No such customer or email.
    #[error("{entity} {id} does not exist")]
    NotFound {
        /// What.
        entity: &'static str,
        /// Its id.
        id: String,
    },
    /// The template is unknown or does not render.
    #[error("{0}")]
    Template(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The email agent.
#[derive(Debug, Clone)]
pub struct Mailer {
    db: Db,
    clock: Arc<dyn Clock>,
    templates: Arc<Templates>,
    sender: Arc<dyn EmailSender>,
    settings: Arc<EmailSettings>,
}

/// The payload of `send-email`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SendPayload {
    /// The email.
    pub email_id: String,
}

/// What to send.
#[derive(Debug, Clone, Default)]
pub struct Draft {
    /// The template.
    pub template: String,
    /// `follow-up`, `nurture`, `transactional`.
    pub category: String,
    /// Per-send variables (`vars.*` in templates).
    pub variables: BTreeMap<String, serde_json::Value>,
    /// The call it follows up (`call.*`).
    pub call: Option<CallVars>,
    /// The call's id.
    pub call_id: Option<String>,
    /// The pipeline step that sends it.
    pub step: Option<StepPayload>,
    /// Makes queueing idempotent without a step: a second draft with the same key and
    /// template returns the first email (`nurture:{run}`).
    pub dedupe: Option<String>,
}

impl Mailer {
    /// The agent over `sender`.
    pub fn new(
        db: Db,
        clock: Arc<dyn Clock>,
        templates: Arc<Templates>,
        sender: Arc<dyn EmailSender>,
        settings: EmailSettings,
    ) -> Self {
        Self {
            db,
            clock,
            templates,
            sender,
            settings: Arc::new(settings),
        }
    }

    /// Deletes what the sender keeps of these emails (the outbox's files), for an erasure;
    /// returns how many it deleted. Failures are logged (without the email) and skipped.
    pub async fn forget(&self, email_ids: &[String]) -> usize {
        let mut deleted = 0;
        for id in email_ids {
            match self.sender.forget(id).await {
                Ok(true) => deleted += 1,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(email_id = %id, %error, "A sent email could not be forgotten.");
                }
            }
        }
        deleted
    }

    /// Whether a send of an id already handed over may be repeated without a second copy
    /// (the outbox writes each id once).
    pub fn idempotent_sender(&self) -> bool {
        self.sender.kind() == crm_domain::SenderKind::Outbox
    }

    /// Mails a report to a member of staff with the `report` template in `language`. Staff
    /// are not customers: no consent, suppression or interaction applies.
    pub async fn send_report(
        &self,
        id: &str,
        to: Mailbox,
        language: &str,
        report: crate::templates::ReportVars,
        attachments: Vec<crm_domain::Attachment>,
    ) -> Result<(), crm_domain::SendError> {
        let context = crate::templates::Context {
            sender: self.settings.signature.clone(),
            report: Some(report),
            ..crate::templates::Context::default()
        };
        let rendered = self
            .templates
            .render(crate::templates::REPORT, language, &context)
            .map_err(|e| crm_domain::SendError::Rejected(e.to_string()))?;
        let email = OutgoingEmail {
            id: id.to_owned(),
            from: self.settings.from.clone(),
            reply_to: self.settings.reply_to.clone(),
            to,
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
            headers: Vec::new(),
            attachments,
            category: Some("report".to_owned()),
            custom_args: [("crm_report_delivery".to_owned(), id.to_owned())].into(),
        };
        self.sender.send(&email).await.map(|_| ())
    }

    /// The templates.
    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    /// The signed token of a customer's unsubscribe link.
    pub fn unsubscribe_token(&self, customer: CustomerId) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.settings.unsubscribe_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(customer.to_string().as_bytes());
        let tag = mac.finalize().into_bytes();
        format!("{customer}.{}", hex(&tag[..16]))
    }

    /// The customer a token names, if its signature holds.
    pub fn verify_token(&self, token: &str) -> Option<CustomerId> {
        let (id, tag) = token.split_once('.')?;
        let customer: CustomerId = id.parse().ok()?;
        let tag: Vec<u8> = (0..tag.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(tag.get(i..i + 2)?, 16).ok())
            .collect::<Option<_>>()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.settings.unsubscribe_key).ok()?;
        mac.update(customer.to_string().as_bytes());
        mac.verify_truncated_left(&tag).ok()?;
        Some(customer)
    }

    fn unsubscribe_url(&self, customer: CustomerId) -> String {
        format!(
            "{}/unsubscribe/{}",
            self.settings.public_url.trim_end_matches('/'),
            self.unsubscribe_token(customer)
        )
    }

    fn context(&self, customer: &Customer, draft: &Draft) -> TemplateContext {
        TemplateContext {
            customer: CustomerVars {
                name: customer.name.clone(),
                first_name: customer.name.split_whitespace().next().map(str::to_owned),
                company: customer.company.clone(),
                email: customer
                    .email
                    .as_ref()
                    .map(|e| e.as_str().to_owned())
                    .unwrap_or_default(),
                phone: customer.phone.as_ref().map(|p| p.as_str().to_owned()),
                language: customer.language.as_ref().map(|l| l.as_str().to_owned()),
            },
            call: draft.call.clone(),
            sender: self.settings.signature.clone(),
            unsubscribe_url: Some(self.unsubscribe_url(customer.id)),
            report: None,
            vars: draft.variables.clone(),
        }
    }

    fn language(customer: &Customer) -> String {
        customer
            .language
            .as_ref()
            .map_or_else(|| "en".to_owned(), |l| l.as_str().to_owned())
    }

    /// Renders `draft` for `customer` (what `previewEmail` shows).
    pub fn render(&self, customer: &Customer, draft: &Draft) -> Result<Rendered, MailError> {
        self.templates
            .render(
                &draft.template,
                &Self::language(customer),
                &self.context(customer, draft),
            )
            .map_err(|e| MailError::Template(e.to_string()))
    }

    async fn customer(&self, id: CustomerId) -> Result<Customer, MailError> {
        customers::get(&self.db, id)
            .await?
            .filter(|c| c.deleted_at.is_none())
            .ok_or_else(|| MailError::NotFound {
                entity: "customer",
                id: id.to_string(),
            })
    }

    /// Why `customer` must not get mail of `category` now, if it must not.
    pub async fn blocked(
        &self,
        customer: &Customer,
        category: &str,
    ) -> Result<Option<String>, MailError> {
        let Some(address) = &customer.email else {
            return Ok(Some("the customer has no email address".to_owned()));
        };
        if let Some(reason) = emails::suppression(&self.db, address.as_str()).await? {
            return Ok(Some(format!(
                "{} is on the suppression list ({reason})",
                address.as_str()
            )));
        }
        if MARKETING.contains(&category) && !customer.consent_email {
            return Ok(Some(
                "the customer has not consented to email (consentEmail is false)".to_owned(),
            ));
        }
        Ok(None)
    }

    /// Records an email for `customer_id` with its send job.
    pub async fn queue(
        &self,
        customer_id: CustomerId,
        draft: &Draft,
        requested_by: &str,
        audit: Option<NewAuditEntry>,
    ) -> Result<EmailRow, MailError> {
        let customer = self.customer(customer_id).await?;
        if let Some(reason) = self.blocked(&customer, &draft.category).await? {
            return Err(MailError::Blocked(reason));
        }
        let rendered = self.render(&customer, draft)?;
        let now = self.clock.now();
        let id = uuid::Uuid::now_v7().to_string();
        let at = now.naive_utc();
        let row = EmailRow {
            id: id.clone(),
            customer_id: customer_id.to_string(),
            template: draft.template.clone(),
            language: Self::language(&customer),
            category: draft.category.clone(),
            to_email: customer
                .email
                .as_ref()
                .map(|e| e.as_str().to_owned())
                .unwrap_or_default(),
            subject: rendered.subject,
            status: EmailStatus::Queued.as_str().to_owned(),
            sender: self.sender.kind().as_str().to_owned(),
            provider_message_id: None,
            error: None,
            last_event: None,
            variables: serde_json::to_string(&(&draft.variables, &draft.call)).unwrap_or_default(),
            run_id: draft.step.as_ref().map(|s| s.run_id.to_string()),
            step_id: draft
                .step
                .as_ref()
                .map(|s| s.step_id.to_string())
                .or_else(|| draft.dedupe.clone()),
            call_id: draft.call_id.clone(),
            interaction_id: None,
            requested_by: requested_by.to_owned(),
            created_at: at,
            updated_at: at,
            sent_at: None,
        };
        let job = NewJob {
            kind: SEND_EMAIL.to_owned(),
            payload: serde_json::to_string(&SendPayload {
                email_id: id.clone(),
            })
            .unwrap_or_default(),
            dedupe_key: Some(format!("{SEND_EMAIL}:{id}")),
            priority: 0,
            run_at: now,
            max_attempts: RetryPolicy::default().max_attempts,
        };
        Ok(emails::queue(&self.db, row, job, audit, now).await?)
    }

    /// Sends a recorded email (the `send-email` job).
    pub async fn send(
        &self,
        id: &str,
        attachments: Vec<crm_domain::Attachment>,
    ) -> Result<(), JobError> {
        let store = |e: StoreError| JobError::Retryable(e.to_string());
        let now = self.clock.now();
        let row = match emails::claim(&self.db, id, now).await.map_err(store)? {
            Some(row) => row,
            None => {
                let Some(row) = emails::get(&self.db, id).await.map_err(store)? else {
                    return Err(JobError::Fatal(format!("email {id} does not exist")));
                };
                let interrupted = row.status == EmailStatus::Sending.as_str();
                if !interrupted {
                    return Ok(()); // Sent, failed or suppressed already: a replay.
                }
                if row.sender != crm_domain::SenderKind::Outbox.as_str() {
                    self.not_sent(
                        id,
                        EmailStatus::Failed,
                        "an earlier attempt was interrupted while sending; not sent again, to avoid a second copy",
                        now,
                    )
                    .await?;
                    return Ok(());
                }
                row // The outbox writes each id once: safe to repeat.
            }
        };
        let customer_id: CustomerId = row
            .customer_id
            .parse()
            .map_err(|_| JobError::Fatal(format!("email {id} has a bad customer id")))?;
        let customer = match self.customer(customer_id).await {
            Ok(customer) => customer,
            Err(MailError::Store(e)) => return Err(store(e)),
            Err(_) => {
                return self
                    .not_sent(
                        id,
                        EmailStatus::Failed,
                        "the customer no longer exists",
                        now,
                    )
                    .await;
            }
        };
        if let Some(reason) = self
            .blocked(&customer, &row.category)
            .await
            .map_err(|e| JobError::Retryable(e.to_string()))?
        {
            return self
                .not_sent(id, EmailStatus::Suppressed, &reason, now)
                .await;
        }
        let (variables, call): (BTreeMap<String, serde_json::Value>, Option<CallVars>) =
            serde_json::from_str(&row.variables).unwrap_or_default();
        let draft = Draft {
            template: row.template.clone(),
            category: row.category.clone(),
            variables,
            call,
            call_id: row.call_id.clone(),
            step: None,
            dedupe: None,
        };
        let rendered = match self.render(&customer, &draft) {
            Ok(rendered) => rendered,
            Err(error) => {
                return self
                    .not_sent(id, EmailStatus::Failed, &error.to_string(), now)
                    .await;
            }
        };
        let mut headers = Vec::new();
        if UNSUBSCRIBABLE.contains(&row.category.as_str()) {
            headers.push((
                "List-Unsubscribe".to_owned(),
                format!("<{}>", self.unsubscribe_url(customer.id)),
            ));
            headers.push((
                "List-Unsubscribe-Post".to_owned(),
                "List-Unsubscribe=One-Click".to_owned(),
            ));
        }
        let email = OutgoingEmail {
            id: id.to_owned(),
            from: self.settings.from.clone(),
            reply_to: self.settings.reply_to.clone(),
            to: Mailbox {
                email: row.to_email.clone(),
                name: Some(customer.name.clone()),
            },
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
            headers,
            attachments,
            category: Some(row.category.clone()),
            custom_args: [("crm_email_id".to_owned(), id.to_owned())].into(),
        };
        match self.sender.send(&email).await {
            Ok(sent) => {
                let interaction = Interaction {
                    id: InteractionId::new(),
                    customer_id: customer.id,
                    kind: InteractionKind::Email,
                    direction: Some(Direction::Outbound),
                    subject: Some(email.subject.clone()),
                    body: Some(email.text.chars().take(100_000).collect()),
                    outcome: Some("sent".to_owned()),
                    occurred_at: now,
                    duration_seconds: None,
                    author: Some(format!("email:{}", row.template)),
                    created_at: now,
                    updated_at: now,
                };
                emails::finish(
                    &self.db,
                    id,
                    Outcome::Sent {
                        provider_message_id: sent.provider_message_id,
                        interaction,
                    },
                    Vec::new(),
                    now,
                )
                .await
                .map_err(store)?;
                Ok(())
            }
            Err(SendError::Unavailable(message)) => {
                emails::finish(
                    &self.db,
                    id,
                    Outcome::Requeue {
                        error: message.clone(),
                    },
                    Vec::new(),
                    now,
                )
                .await
                .map_err(store)?;
                Err(JobError::Retryable(message))
            }
            Err(error @ SendError::Unknown(_)) => {
                self.not_sent(
                    id,
                    EmailStatus::Failed,
                    &format!("{error}; not sent again, to avoid a second copy"),
                    now,
                )
                .await
            }
            Err(error @ SendError::Rejected(_)) => {
                self.not_sent(id, EmailStatus::Failed, &error.to_string(), now)
                    .await
            }
        }
    }

    async fn not_sent(
        &self,
        id: &str,
        status: EmailStatus,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), JobError> {
        tracing::info!(email_id = %id, status = status.as_str(), %reason, "Email not sent.");
        emails::finish(
            &self.db,
            id,
            Outcome::NotSent {
                status,
                error: reason.to_owned(),
            },
            Vec::new(),
            now,
        )
        .await
        .map_err(|e| JobError::Retryable(e.to_string()))?;
        Ok(())
    }

    /// Unsubscribes the customer a link's token names: their address is suppressed. Returns
    /// the customer (for the page's language).
    pub async fn unsubscribe(&self, token: &str) -> Result<Customer, MailError> {
        let id = self
            .verify_token(token)
            .ok_or_else(|| MailError::Blocked("this unsubscribe link is not valid".to_owned()))?;
        let customer = customers::get(&self.db, id)
            .await?
            .ok_or_else(|| MailError::NotFound {
                entity: "customer",
                id: id.to_string(),
            })?;
        if let Some(address) = &customer.email {
            emails::suppress(
                &self.db,
                address.as_str(),
                "unsubscribed",
                "link",
                None,
                self.clock.now(),
            )
            .await?;
        }
        // The withdrawal is recorded in the consent ledger and takes effect at once.
        let withdrawal = crm_store::gdpr::NewConsent {
            customer_id: customer.id,
            record: crm_domain::ConsentRecord {
                channel: crm_domain::ConsentChannel::Email,
                purpose: crm_domain::ConsentPurpose::Marketing,
                basis: crm_domain::LawfulBasis::Consent,
                granted: false,
                source: crm_domain::ConsentSource::Unsubscribe,
                evidence: Some("unsubscribe link".to_owned()),
            },
            recorded_by: "unsubscribe".to_owned(),
        };
        match crm_store::gdpr::record_consent(&self.db, &withdrawal, None, self.clock.now()).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(customer)
    }
}

/// `send-email`.
#[derive(Debug)]
pub struct SendEmail(pub Mailer);

#[async_trait]
impl JobHandler for SendEmail {
    fn kind(&self) -> &'static str {
        SEND_EMAIL
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            base: chrono::Duration::seconds(30),
            ..RetryPolicy::default()
        }
    }

    async fn run(&self, payload: &str) -> Result<(), JobError> {
        let payload: SendPayload = serde_json::from_str(payload)
            .map_err(|e| JobError::Fatal(format!("the payload does not deserialize: {e}")))?;
        let attachments = crate::follow_up::attachments_for(&self.0, &payload.email_id).await?;
        self.0.send(&payload.email_id, attachments).await
    }

    async fn dead(&self, payload: &str, error: &str) {
        if let Ok(payload) = serde_json::from_str::<SendPayload>(payload) {
            let _ = self
                .0
                .not_sent(
                    &payload.email_id,
                    EmailStatus::Failed,
                    &format!("gave up after retries: {error}"),
                    self.0.clock.now(),
                )
                .await;
        }
    }
}

/// Shared with the follow-up agent.
impl Mailer {
    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub(crate) fn sender_address(&self) -> String {
        self.settings.from.email.clone()
    }
}
