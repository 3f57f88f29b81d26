//! Email: the `EmailSender` port that SMTP, SendGrid and the outbox implement, and the
//! normalized email events (delivered, opened, bounced, …) a provider's event webhook is parsed
//! into.

use crate::{error::FieldError, interaction::string_enum};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::{collections::BTreeMap, fmt, str::FromStr};

string_enum!(
    /// The senders an admin can pick (`[email] kind`).
    SenderKind, "kind" {
        /// Any SMTP server (lettre; STARTTLS or TLS via rustls).
        Smtp = "smtp",
        /// SendGrid's v3 mail-send HTTP API.
        Sendgrid = "sendgrid",
        /// `.eml` files in a folder: the embedded default, no network.
        Outbox = "outbox",
    }
);

/// A mailbox: address and display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The address (already validated and normalized).
    pub email: String,
    /// The display name.
    pub name: Option<String>,
}

/// A file attached to an email (an appointment's `.ics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// File name (`appointment.ics`).
    pub filename: String,
    /// MIME type (`text/calendar; method=REQUEST`).
    pub content_type: String,
    /// The bytes.
    pub content: Vec<u8>,
}

/// An email to send, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEmail {
    /// Our id of the email: the idempotency key of the send, the `Message-ID`'s local part,
    /// and the correlation id SendGrid echoes in its events (`custom_args.crm_email_id`).
    pub id: String,
    /// Sender.
    pub from: Mailbox,
    /// Replies go here.
    pub reply_to: Option<Mailbox>,
    /// Recipient.
    pub to: Mailbox,
    /// Subject line.
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part.
    pub html: Option<String>,
    /// Extra headers (`List-Unsubscribe`, `List-Unsubscribe-Post`).
    pub headers: Vec<(String, String)>,
    /// Attachments.
    pub attachments: Vec<Attachment>,
    /// The kind of mail (`follow-up`, `nurture`, `report`), a SendGrid category.
    pub category: Option<String>,
    /// Non-personal correlation values echoed by providers in their events.
    pub custom_args: BTreeMap<String, String>,
}

/// What a sender answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentEmail {
    /// The provider's id of the message (SendGrid `X-Message-ID`, the SMTP queue id, the
    /// outbox file name).
    pub provider_message_id: Option<String>,
}

/// A send that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Refused for good (a 4xx from SendGrid, a permanent 5xx SMTP reply): not retried.
    #[error("the email was rejected: {0}")]
    Rejected(String),
    /// Not sent now (429, a refused connection, a transient 4xx SMTP reply): retried later.
    #[error("the email provider is unavailable: {0}")]
    Unavailable(String),
    /// May or may not have been sent (a timeout after the message was handed over).
    #[error("the send's outcome is unknown: {0}")]
    Unknown(String),
}

/// The port of an email sender.
#[async_trait]
pub trait EmailSender: Send + Sync + fmt::Debug {
    /// Which sender this is.
    fn kind(&self) -> SenderKind;

    /// Sends one email. A retry of the same `email.id` must not produce a second copy where
    /// the provider allows avoiding it.
    async fn send(&self, email: &OutgoingEmail) -> Result<SentEmail, SendError>;

    /// Deletes what this sender keeps of a sent email (the outbox's `.eml` file), for an
    /// erasure; `false` when it keeps nothing. Senders that hand mail over (SMTP, SendGrid)
    /// keep nothing.
    async fn forget(&self, _email_id: &str) -> Result<bool, SendError> {
        Ok(false)
    }
}

string_enum!(
    /// What happened to a sent email, in one vocabulary for every provider.
    EmailEventKind, "event" {
        /// Accepted by the provider.
        Processed = "processed",
        /// Delivered to the receiving server.
        Delivered = "delivered",
        /// Delayed; the provider keeps trying.
        Deferred = "deferred",
        /// Bounced (hard) or blocked.
        Bounced = "bounced",
        /// Dropped by the provider (suppressed address, invalid).
        Dropped = "dropped",
        /// Opened.
        Opened = "opened",
        /// A link was clicked.
        Clicked = "clicked",
        /// Marked as spam.
        Complained = "complained",
        /// Unsubscribed.
        Unsubscribed = "unsubscribed",
    }
);

/// One event about a sent email.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailEvent {
    /// The provider's unique id of the event (SendGrid `sg_event_id`): deliveries repeat.
    pub event_id: String,
    /// What happened.
    pub kind: EmailEventKind,
    /// The recipient.
    pub email: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Our id of the email, when echoed (`crm_email_id`).
    pub email_id: Option<String>,
    /// The provider's id of the message.
    pub provider_message_id: Option<String>,
    /// Why (bounce reason, drop reason).
    pub reason: Option<String>,
    /// The clicked URL.
    pub url: Option<String>,
}
