//! Emails: each message is recorded (queued) with its `send-email` job before anything is sent;
//! a send claims the row (`sending`) before the provider is called, so a retried job never sends
//! a second copy; the outcome commits with its interaction. Also the suppression list checked
//! before every send, and provider events (deduplicated by their id).

use crate::{
    Db, StoreError, StoreResult,
    audit::{AppendAudit, NewAuditEntry},
    db::with_conn,
    effects::{Effect, NewEvent, WriteEffects},
    jobs::NewJob,
    rows::{InteractionRow, from_db_time, to_db_time},
    schema::{customers, email_events, emails, suppressions},
};
use chrono::{DateTime, NaiveDateTime, Utc};
use crm_domain::{CustomerId, CustomerScope, EmailEvent, EmailEventKind, Interaction};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

/// The event topic of email status changes.
pub const TOPIC: &str = "emails";

macro_rules! status {
    ($($variant:ident = $text:literal),+ $(,)?) => {
        /// Where an email stands.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum EmailStatus {
            $(#[doc = $text] $variant),+
        }

        impl EmailStatus {
            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl std::str::FromStr for EmailStatus {
            type Err = StoreError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(StoreError::Corrupt {
                        entity: "email",
                        id: String::new(),
                        reason: format!("bad status `{other}`"),
                    }),
                }
            }
        }
    };
}

status!(
    Queued = "queued",
    Sending = "sending",
    Sent = "sent",
    Failed = "failed",
    Suppressed = "suppressed",
);

/// A stored email.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = emails)]
pub struct EmailRow {
    /// Identity (also the idempotency key of the send and the Message-ID).
    pub id: String,
    /// The recipient customer.
    pub customer_id: String,
    /// The template.
    pub template: String,
    /// The language it was rendered in.
    pub language: String,
    /// `follow-up`, `nurture`, `transactional`, `report`.
    pub category: String,
    /// The address.
    pub to_email: String,
    /// The rendered subject.
    pub subject: String,
    /// `queued`, `sending`, `sent`, `failed`, `suppressed`.
    pub status: String,
    /// The sender kind.
    pub sender: String,
    /// The provider's id of the message.
    pub provider_message_id: Option<String>,
    /// Why it failed or was suppressed.
    pub error: Option<String>,
    /// The newest provider event (`delivered`, `opened`, `bounced`).
    pub last_event: Option<String>,
    /// Per-send variables (JSON).
    pub variables: String,
    /// The pipeline run.
    pub run_id: Option<String>,
    /// The pipeline step.
    pub step_id: Option<String>,
    /// The call it follows up.
    pub call_id: Option<String>,
    /// The interaction logged for the send.
    pub interaction_id: Option<String>,
    /// Who asked.
    pub requested_by: String,
    /// Queued.
    pub created_at: NaiveDateTime,
    /// Last changed.
    pub updated_at: NaiveDateTime,
    /// Sent.
    pub sent_at: Option<NaiveDateTime>,
}

impl EmailRow {
    /// The status.
    pub fn status(&self) -> StoreResult<EmailStatus> {
        self.status.parse()
    }

    /// Queued.
    pub fn created(&self) -> DateTime<Utc> {
        from_db_time(self.created_at)
    }

    /// Sent.
    pub fn sent(&self) -> Option<DateTime<Utc>> {
        self.sent_at.map(from_db_time)
    }

    /// Last changed.
    pub fn updated(&self) -> DateTime<Utc> {
        from_db_time(self.updated_at)
    }
}

fn event(row: &EmailRow) -> Effect {
    Effect::Event(NewEvent {
        topic: TOPIC.to_owned(),
        customer_id: Some(row.customer_id.clone()),
        payload: serde_json::json!({
            "emailId": row.id,
            "customerId": row.customer_id,
            "template": row.template,
            "status": row.status,
            "lastEvent": row.last_event,
            "error": row.error,
        })
        .to_string(),
    })
}

/// Records an email as queued with its send job (and `audit`), unless the step already
/// queued this template (then the existing email).
pub async fn queue(
    db: &Db,
    row: EmailRow,
    job: NewJob,
    audit: Option<NewAuditEntry>,
    now: DateTime<Utc>,
) -> StoreResult<EmailRow> {
    if let Some(step) = &row.step_id {
        let existing: Option<EmailRow> = with_conn!(db, |conn| {
            emails::table
                .filter(emails::step_id.eq(step))
                .filter(emails::template.eq(&row.template))
                .select(EmailRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        if let Some(existing) = existing {
            return Ok(existing);
        }
    }
    let effects = vec![Effect::Job(job), event(&row)];
    let customer = row.customer_id.clone();
    with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            diesel::insert_into(emails::table)
                .values(&row)
                .execute(conn)
                .await?;
            let alive: i64 = customers::table
                .filter(customers::id.eq(&customer))
                .filter(customers::deleted_at.is_null())
                .count()
                .get_result(conn)
                .await?;
            if alive == 0 {
                return Err(StoreError::NotFound {
                    entity: "customer",
                    id: customer.clone(),
                });
            }
            if let Some(entry) = &audit {
                conn.append_audit(entry).await?;
            }
            conn.apply_effects(&effects, now).await?;
            Ok::<_, StoreError>(())
        })
        .await
    })?;
    db.committed_all(&effects, false);
    Ok(row)
}

/// The email with this id.
pub async fn get(db: &Db, id: &str) -> StoreResult<Option<EmailRow>> {
    Ok(with_conn!(db, |conn| {
        emails::table
            .find(id)
            .select(EmailRow::as_select())
            .first(conn)
            .await
            .optional()
    })?)
}

/// Emails of customers in `scope` (of one customer), newest first, before `before`, up to
/// `limit + 1`.
pub async fn list(
    db: &Db,
    customer: Option<CustomerId>,
    scope: &CustomerScope,
    before: Option<&str>,
    limit: usize,
) -> StoreResult<Vec<EmailRow>> {
    let probe = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
    Ok(with_conn!(db, |conn| {
        let mut query = emails::table.select(EmailRow::as_select()).into_boxed();
        if let Some(customer) = customer {
            query = query.filter(emails::customer_id.eq(customer.to_string()));
        }
        match scope {
            CustomerScope::All => {}
            CustomerScope::OwnedBy(subject) => {
                query = query.filter(
                    emails::customer_id.eq_any(
                        customers::table
                            .filter(customers::owner.eq(subject.clone()))
                            .select(customers::id),
                    ),
                );
            }
            CustomerScope::OwnedByOrUnassigned(subject) => {
                query = query.filter(
                    emails::customer_id.eq_any(
                        customers::table
                            .filter(
                                customers::owner
                                    .eq(subject.clone())
                                    .or(customers::owner.is_null()),
                            )
                            .select(customers::id),
                    ),
                );
            }
        }
        if let Some(before) = before {
            query = query.filter(emails::id.lt(before.to_owned()));
        }
        query
            .order_by(emails::id.desc())
            .limit(probe)
            .load(conn)
            .await
    })?)
}

/// Claims a queued email for sending (`queued` → `sending`); the row if claimed, `None` if
/// it is no longer queued.
pub async fn claim(db: &Db, id: &str, now: DateTime<Utc>) -> StoreResult<Option<EmailRow>> {
    let at = to_db_time(now);
    Ok(with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            let claimed = diesel::update(
                emails::table
                    .filter(emails::id.eq(id))
                    .filter(emails::status.eq(EmailStatus::Queued.as_str())),
            )
            .set((
                emails::status.eq(EmailStatus::Sending.as_str()),
                emails::updated_at.eq(at),
            ))
            .execute(conn)
            .await?;
            if claimed == 0 {
                return Ok::<_, diesel::result::Error>(None);
            }
            emails::table
                .find(id)
                .select(EmailRow::as_select())
                .first(conn)
                .await
                .map(Some)
        })
        .await
    })?)
}

/// How a send ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Handed to the provider.
    Sent {
        /// The provider's id.
        provider_message_id: Option<String>,
        /// The interaction of kind email to log.
        interaction: Interaction,
    },
    /// Not sent: failed (`Failed`) or forbidden by policy (`Suppressed`), with the reason.
    NotSent {
        /// `failed` or `suppressed`.
        status: EmailStatus,
        /// Why.
        error: String,
    },
    /// Back to the queue (the provider was unavailable; the job retries).
    Requeue {
        /// Why.
        error: String,
    },
}

/// Records a send's outcome with its interaction and `effects`, if the email is still
/// `sending` (or `queued`, for an outcome decided before the claim).
pub async fn finish(
    db: &Db,
    id: &str,
    outcome: Outcome,
    effects: Vec<Effect>,
    now: DateTime<Utc>,
) -> StoreResult<Option<EmailRow>> {
    let at = to_db_time(now);
    let result: Option<(EmailRow, Vec<Effect>)> = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            let target = emails::table.filter(emails::id.eq(id)).filter(
                emails::status
                    .eq_any([EmailStatus::Sending.as_str(), EmailStatus::Queued.as_str()]),
            );
            let changed = match &outcome {
                Outcome::Sent {
                    provider_message_id,
                    interaction,
                } => {
                    let changed = diesel::update(target)
                        .set((
                            emails::status.eq(EmailStatus::Sent.as_str()),
                            emails::provider_message_id.eq(provider_message_id),
                            emails::interaction_id.eq(interaction.id.to_string()),
                            emails::error.eq(None::<String>),
                            emails::sent_at.eq(Some(at)),
                            emails::updated_at.eq(at),
                        ))
                        .execute(conn)
                        .await?;
                    if changed == 1 {
                        diesel::insert_into(crate::schema::interactions::table)
                            .values(InteractionRow::from(interaction))
                            .execute(conn)
                            .await?;
                    }
                    changed
                }
                Outcome::NotSent { status, error } => {
                    diesel::update(target)
                        .set((
                            emails::status.eq(status.as_str()),
                            emails::error.eq(error),
                            emails::updated_at.eq(at),
                        ))
                        .execute(conn)
                        .await?
                }
                Outcome::Requeue { error } => {
                    diesel::update(target)
                        .set((
                            emails::status.eq(EmailStatus::Queued.as_str()),
                            emails::error.eq(error),
                            emails::updated_at.eq(at),
                        ))
                        .execute(conn)
                        .await?
                }
            };
            if changed == 0 {
                return Ok::<_, StoreError>(None);
            }
            let row: EmailRow = emails::table
                .find(id)
                .select(EmailRow::as_select())
                .first(conn)
                .await?;
            let mut all = effects.clone();
            all.push(event(&row));
            conn.apply_effects(&all, now).await?;
            Ok(Some((row, all)))
        })
        .await
    })?;
    Ok(result.map(|(row, effects)| {
        db.committed_all(&effects, false);
        row
    }))
}

/// Why an address is suppressed, if it is.
pub async fn suppression(db: &Db, email: &str) -> StoreResult<Option<String>> {
    let key = email.trim().to_lowercase();
    Ok(with_conn!(db, |conn| {
        suppressions::table
            .find(&key)
            .select(suppressions::reason)
            .first(conn)
            .await
            .optional()
    })?)
}

/// Suppresses an address (false if it was already).
pub async fn suppress(
    db: &Db,
    email: &str,
    reason: &str,
    source: &str,
    audit: Option<NewAuditEntry>,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let key = email.trim().to_lowercase();
    let at = to_db_time(now);
    Ok(with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            let added = diesel::insert_into(suppressions::table)
                .values((
                    suppressions::email.eq(&key),
                    suppressions::reason.eq(reason),
                    suppressions::source.eq(source),
                    suppressions::created_at.eq(at),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            if added == 1
                && let Some(entry) = &audit
            {
                conn.append_audit(entry).await?;
            }
            Ok::<_, StoreError>(added == 1)
        })
        .await
    })?)
}

/// Records a provider event once (by its id): the email's `last_event`, and for bounces,
/// complaints and unsubscribes the suppression of the address. False for a repeat.
pub async fn record_event(db: &Db, event: &EmailEvent, now: DateTime<Utc>) -> StoreResult<bool> {
    let at = to_db_time(now);
    let when = to_db_time(event.at);
    let address = event.email.trim().to_lowercase();
    let suppress = match event.kind {
        EmailEventKind::Bounced => Some("bounced"),
        EmailEventKind::Complained => Some("complained"),
        EmailEventKind::Unsubscribed => Some("unsubscribed"),
        _ => None,
    };
    let result: Option<Vec<Effect>> = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            let fresh = diesel::insert_into(email_events::table)
                .values((
                    email_events::event_id.eq(&event.event_id),
                    email_events::email_id.eq(&event.email_id),
                    email_events::kind.eq(event.kind.as_str()),
                    email_events::email.eq(&address),
                    email_events::reason.eq(&event.reason),
                    email_events::url.eq(&event.url),
                    email_events::at.eq(when),
                    email_events::received_at.eq(at),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            if fresh == 0 {
                return Ok::<_, StoreError>(None);
            }
            let mut effects = Vec::new();
            let target: Option<EmailRow> = match (&event.email_id, &event.provider_message_id) {
                (Some(id), _) => emails::table
                    .find(id)
                    .select(EmailRow::as_select())
                    .first(conn)
                    .await
                    .optional()?,
                (None, Some(message)) => {
                    // SendGrid's sg_message_id starts with the X-Message-ID it answered.
                    let prefix = message.split('.').next().unwrap_or(message).to_owned();
                    emails::table
                        .filter(emails::provider_message_id.eq(prefix))
                        .select(EmailRow::as_select())
                        .first(conn)
                        .await
                        .optional()?
                }
                (None, None) => None,
            };
            if let Some(mut row) = target {
                // The send's interaction carries its furthest event, which scoring reads
                // (opened, clicked, bounced …).
                if let Some(interaction) = &row.interaction_id {
                    let current: Option<String> = crate::schema::interactions::table
                        .find(interaction)
                        .select(crate::schema::interactions::outcome)
                        .first(conn)
                        .await
                        .optional()?
                        .flatten();
                    if outcome_rank(event.kind.as_str())
                        > outcome_rank(current.as_deref().unwrap_or("sent"))
                    {
                        diesel::update(crate::schema::interactions::table.find(interaction))
                            .set((
                                crate::schema::interactions::outcome.eq(event.kind.as_str()),
                                crate::schema::interactions::updated_at.eq(at),
                            ))
                            .execute(conn)
                            .await?;
                    }
                }
                row.last_event = Some(event.kind.as_str().to_owned());
                diesel::update(emails::table.find(&row.id))
                    .set((
                        emails::last_event.eq(&row.last_event),
                        emails::updated_at.eq(at),
                    ))
                    .execute(conn)
                    .await?;
                effects.push(self::event(&row));
            }
            if let Some(reason) = suppress {
                diesel::insert_into(suppressions::table)
                    .values((
                        suppressions::email.eq(&address),
                        suppressions::reason.eq(reason),
                        suppressions::source.eq("provider"),
                        suppressions::created_at.eq(at),
                    ))
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?;
            }
            conn.apply_effects(&effects, now).await?;
            Ok(Some(effects))
        })
        .await
    })?;
    Ok(match result {
        Some(effects) => {
            db.committed_all(&effects, false);
            true
        }
        None => false,
    })
}

/// How far an email got: an event never moves its interaction's outcome back (an open after a
/// click stays a click); a bounce, complaint or unsubscribe outranks everything.
fn outcome_rank(outcome: &str) -> u8 {
    match outcome {
        "sent" => 0,
        "processed" | "deferred" => 1,
        "delivered" => 2,
        "opened" => 3,
        "clicked" => 4,
        "bounced" | "dropped" | "complained" | "unsubscribed" => 5,
        _ => 0,
    }
}

/// The events of an email, oldest first: (kind, at).
pub async fn events_of(db: &Db, id: &str) -> StoreResult<Vec<(String, DateTime<Utc>)>> {
    let rows: Vec<(String, NaiveDateTime)> = with_conn!(db, |conn| {
        email_events::table
            .filter(email_events::email_id.eq(id))
            .order_by(email_events::at.asc())
            .select((email_events::kind, email_events::at))
            .load(conn)
            .await
    })?;
    Ok(rows
        .into_iter()
        .map(|(kind, at)| (kind, from_db_time(at)))
        .collect())
}
