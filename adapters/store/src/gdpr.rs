//! GDPR: the consent ledger, the export of everything held about a person, and erasure.
//!
//! - **Ledger.** Every grant and withdrawal is a row of `consents`; the customer's
//!   `consent_*` flags are its current state and change in the same transaction
//!   ([`record_consent`], or [`crate::effects::Effect::Consent`] beside a customer write).
//! - **Export** ([`export`]) gathers one JSON document: profile, consents, interactions,
//!   calls with transcripts and segments, emails with events, scores with reasons, tasks,
//!   pipeline runs, nurture, audit entries about the person and their records.
//! - **Erasure** ([`erase`]) replaces personal data with tombstones everywhere it lives, in one
//!   transaction (never half-erased), and is idempotent (a second erasure returns the first).
//!   Non-personal facts stay (status, source, owner, dates, call dispositions, durations,
//!   costs, email categories and events), so reports keep their totals. The email and phone
//!   survive only as keyed hashes in `erased_identities` (and in place of the person's
//!   suppression and do-not-call entries), so the person is never re-imported or re-contacted.
//!   Audit entries about the person lose their payload; the chain commits to each payload by
//!   hash, so `audit verify` still passes. Calls placed with a provider get a
//!   `provider_deletions` row and a deletion job each, enqueued in the same transaction.

use crate::{
    Db, StoreError, StoreResult,
    audit::{AppendAudit as _, NewAuditEntry},
    db::with_conn,
    effects::WriteEffects as _,
    jobs::NewJob,
    rows::{from_db_time, to_db_time},
    schema::{
        audit_log, call_segments, calls, consents, customer_tags, customers, do_not_call,
        email_events, emails, erased_identities, erasures, events, gdpr_keys, import_issues, inbox,
        interactions, jobs, lead_scores, nurture_enrollments, pipeline_runs, pipeline_steps,
        provider_deletions, suppressions, tasks,
    },
};
use chrono::{DateTime, NaiveDateTime, Utc};
use crm_domain::{ConsentRecord, CustomerId, consent::ConsentChannel};
use diesel::prelude::*;
use diesel_async::{AsyncConnection as _, RunQueryDsl};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

/// What replaces erased text.
pub const TOMBSTONE: &str = "[erased]";

/// A ledger entry to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConsent {
    /// Whose.
    pub customer_id: CustomerId,
    /// The grant or withdrawal.
    pub record: ConsentRecord,
    /// Who recorded it (a user, a key, a job).
    pub recorded_by: String,
}

/// A ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = consents)]
pub struct StoredConsent {
    /// Identity (UUIDv7).
    pub id: String,
    /// Whose.
    pub customer_id: String,
    /// `email`, `call`, `sms`.
    pub channel: String,
    /// `marketing`, `sales_follow_up`.
    pub purpose: String,
    /// `consent`, `contract`, `legitimate_interest`.
    pub basis: String,
    /// Granted or withdrawn.
    pub granted: bool,
    /// `form`, `import`, `call`, `api`, `unsubscribe`, `system`.
    pub source: String,
    /// What proves it.
    pub evidence: Option<String>,
    /// Who recorded it.
    pub recorded_by: String,
    /// When.
    pub at: NaiveDateTime,
}

impl StoredConsent {
    /// When, in UTC.
    pub fn at_utc(&self) -> DateTime<Utc> {
        from_db_time(self.at)
    }
}

/// A ledger row as written.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = consents)]
pub(crate) struct ConsentRow {
    id: String,
    customer_id: String,
    channel: &'static str,
    purpose: &'static str,
    basis: &'static str,
    granted: bool,
    source: &'static str,
    evidence: Option<String>,
    recorded_by: String,
    at: NaiveDateTime,
}

pub(crate) fn consent_row(new: &NewConsent, now: DateTime<Utc>) -> ConsentRow {
    let r = &new.record;
    ConsentRow {
        id: Uuid::now_v7().to_string(),
        customer_id: new.customer_id.to_string(),
        channel: r.channel.as_str(),
        purpose: r.purpose.as_str(),
        basis: r.basis.as_str(),
        granted: r.granted,
        source: r.source.as_str(),
        evidence: r.evidence.clone(),
        recorded_by: new.recorded_by.clone(),
        at: to_db_time(now),
    }
}

/// Consent rows as columns, for [`crate::bulk`].
pub(crate) fn consent_columns(rows: &[ConsentRow]) -> crate::bulk::Columns<'_> {
    use crate::bulk::{Values as V, col};
    crate::bulk::Columns::new("consents")
        .with("id", V::Text(col(rows, |r| r.id.as_str())))
        .with(
            "customer_id",
            V::Text(col(rows, |r| r.customer_id.as_str())),
        )
        .with("channel", V::Text(col(rows, |r| r.channel)))
        .with("purpose", V::Text(col(rows, |r| r.purpose)))
        .with("basis", V::Text(col(rows, |r| r.basis)))
        .with("granted", V::Bool(col(rows, |r| r.granted)))
        .with("source", V::Text(col(rows, |r| r.source)))
        .with("evidence", V::OptText(col(rows, |r| r.evidence.as_deref())))
        .with(
            "recorded_by",
            V::Text(col(rows, |r| r.recorded_by.as_str())),
        )
        .with("at", V::Time(col(rows, |r| r.at)))
}

/// The ledger of one customer, oldest first.
pub async fn consents(db: &Db, customer: CustomerId) -> StoreResult<Vec<StoredConsent>> {
    Ok(with_conn!(db, |conn| {
        consents::table
            .filter(consents::customer_id.eq(customer.to_string()))
            .order_by(consents::id.asc())
            .select(StoredConsent::as_select())
            .load(conn)
            .await
    })?)
}

/// Records a grant or withdrawal and sets the customer's flag it stands for, with its audit
/// entry, in one transaction. `NotFound` for an unknown, deleted or erased customer.
pub async fn record_consent(
    db: &Db,
    new: &NewConsent,
    audit: Option<NewAuditEntry>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let id = new.customer_id.to_string();
    let row = consent_row(new, now);
    let flag = new.record.flag();
    let granted = new.record.granted;
    let result: StoreResult<()> = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            // A write first (SQLite takes the write lock before it reads).
            let target = customers::table
                .filter(customers::id.eq(&id))
                .filter(customers::deleted_at.is_null());
            let changed = match flag {
                Some(ConsentChannel::Email) => {
                    diesel::update(target)
                        .set(customers::consent_email.eq(granted))
                        .execute(conn)
                        .await?
                }
                Some(ConsentChannel::Call) => {
                    diesel::update(target)
                        .set(customers::consent_call.eq(granted))
                        .execute(conn)
                        .await?
                }
                Some(ConsentChannel::Sms) => {
                    diesel::update(target)
                        .set(customers::consent_sms.eq(granted))
                        .execute(conn)
                        .await?
                }
                None => {
                    diesel::update(target)
                        .set(customers::id.eq(&id))
                        .execute(conn)
                        .await?
                }
            };
            if changed == 0 {
                return Err(StoreError::NotFound {
                    entity: "customer",
                    id: id.clone(),
                });
            }
            diesel::insert_into(consents::table)
                .values(row)
                .execute(conn)
                .await?;
            if let Some(entry) = &audit {
                conn.append_audit(entry).await?;
            }
            Ok(())
        })
        .await
    });
    result
}

/// The installation's key for identity hashes (created once, shared by replicas).
pub async fn identity_key(db: &Db, now: DateTime<Utc>) -> StoreResult<Vec<u8>> {
    const NAME: &str = "identity-hash";
    let candidate = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    with_conn!(db, |conn| {
        diesel::insert_into(gdpr_keys::table)
            .values((
                gdpr_keys::name.eq(NAME),
                gdpr_keys::value.eq(&candidate),
                gdpr_keys::created_at.eq(to_db_time(now)),
            ))
            .on_conflict_do_nothing()
            .execute(conn)
            .await
    })?;
    let value: String = with_conn!(db, |conn| {
        gdpr_keys::table
            .find(NAME)
            .select(gdpr_keys::value)
            .first(conn)
            .await
    })?;
    Ok(value.into_bytes())
}

/// The keyed hash of a normalized email or E.164 phone (`kind`: `email` or `phone`).
pub fn identity_hash(key: &[u8], kind: &str, value: &str) -> String {
    let mut h = Sha256::new();
    for part in [key, kind.as_bytes(), value.trim().to_lowercase().as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    crm_domain::hex::encode(&h.finalize())
}

/// How the audit log names a phone number (a do-not-call entry) without holding it: its keyed
/// hash, which the hash chain can keep after the person is erased.
pub async fn phone_ref(db: &Db, phone: &str, now: DateTime<Utc>) -> StoreResult<String> {
    let key = identity_key(db, now).await?;
    Ok(format!("phone:{}", identity_hash(&key, "phone", phone)))
}

/// Whether a normalized email or phone belongs to an erased person.
pub async fn is_erased(
    db: &Db,
    email: Option<&str>,
    phone: Option<&str>,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let emails: Vec<String> = email.map(str::to_owned).into_iter().collect();
    let phones: Vec<String> = phone.map(str::to_owned).into_iter().collect();
    Ok(!erased_among(db, &emails, &phones, now).await?.is_empty())
}

/// A customer's erasure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    /// Whose.
    pub customer_id: String,
    /// Why (as given).
    pub reason: String,
    /// Who erased.
    pub erased_by: String,
    /// When.
    pub erased_at: DateTime<Utc>,
    /// True when this call found the customer erased already (nothing was changed).
    pub already_erased: bool,
    /// Calls whose provider was asked to delete its data.
    pub provider_deletions: i64,
    /// The person's emails (their senders may keep copies to delete); empty when the customer
    /// was erased before.
    pub email_ids: Vec<String>,
}

/// Erases a customer (see the module docs). `delete_job(call_id)` is the job that asks the
/// call's provider to delete its data. `NotFound` for an unknown customer; an erased one
/// returns its first erasure with `already_erased`.
pub async fn erase(
    db: &Db,
    customer: CustomerId,
    reason: &str,
    erased_by: &str,
    audit: NewAuditEntry,
    delete_job: impl Fn(&str) -> NewJob + Send + Sync,
    now: DateTime<Utc>,
) -> StoreResult<Erasure> {
    let id = customer.to_string();
    let key = identity_key(db, now).await?;
    let exists: Option<(Option<String>, Option<String>)> = with_conn!(db, |conn| {
        customers::table
            .find(&id)
            .select((customers::email, customers::phone))
            .first(conn)
            .await
            .optional()
    })?;
    if exists.is_none() {
        return Err(StoreError::NotFound {
            entity: "customer",
            id,
        });
    }
    let at = to_db_time(now);
    let result: StoreResult<Option<(i64, Vec<String>)>> = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            let first = diesel::insert_into(erasures::table)
                .values((
                    erasures::customer_id.eq(&id),
                    erasures::reason.eq(reason),
                    erasures::erased_by.eq(erased_by),
                    erasures::erased_at.eq(at),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            if first == 0 {
                return Ok(None);
            }
            // Read the identity inside the transaction (it may have changed since).
            let (email, phone): (Option<String>, Option<String>) = customers::table
                .find(&id)
                .select((customers::email, customers::phone))
                .first(conn)
                .await?;
            // Children first: their ids name the audit entries to clear.
            let interaction_ids: Vec<String> = interactions::table
                .filter(interactions::customer_id.eq(&id))
                .select(interactions::id)
                .load(conn)
                .await?;
            let call_rows: Vec<(String, String, Option<String>)> = calls::table
                .filter(calls::customer_id.eq(&id))
                .select((calls::id, calls::provider, calls::provider_call_id))
                .load(conn)
                .await?;
            let call_ids: Vec<String> = call_rows.iter().map(|(c, _, _)| c.clone()).collect();
            let email_ids: Vec<String> = emails::table
                .filter(emails::customer_id.eq(&id))
                .select(emails::id)
                .load(conn)
                .await?;
            let task_ids: Vec<String> = tasks::table
                .filter(tasks::customer_id.eq(&id))
                .select(tasks::id)
                .load(conn)
                .await?;
            let run_ids: Vec<String> = pipeline_runs::table
                .filter(pipeline_runs::customer_id.eq(&id))
                .select(pipeline_runs::id)
                .load(conn)
                .await?;

            diesel::update(customers::table.find(&id))
                .set((
                    customers::name.eq(TOMBSTONE),
                    customers::email.eq(None::<String>),
                    customers::phone.eq(None::<String>),
                    customers::company.eq(None::<String>),
                    customers::notes.eq(None::<String>),
                    customers::search_text.eq(""),
                    customers::tags.eq("[]"),
                    customers::consent_email.eq(false),
                    customers::consent_call.eq(false),
                    customers::consent_sms.eq(false),
                    customers::deleted_at.eq(Some(at)),
                ))
                .execute(conn)
                .await?;
            diesel::delete(customer_tags::table.filter(customer_tags::customer_id.eq(&id)))
                .execute(conn)
                .await?;
            diesel::update(interactions::table.filter(interactions::customer_id.eq(&id)))
                .set((
                    interactions::subject.eq(None::<String>),
                    interactions::body.eq(None::<String>),
                ))
                .execute(conn)
                .await?;
            diesel::update(calls::table.filter(calls::customer_id.eq(&id)))
                .set((
                    calls::to_number.eq(TOMBSTONE),
                    calls::summary.eq(None::<String>),
                    calls::transcript.eq(None::<String>),
                    calls::recording_url.eq(None::<String>),
                    calls::reason.eq(None::<String>),
                ))
                .execute(conn)
                .await?;
            diesel::delete(call_segments::table.filter(call_segments::call_id.eq_any(&call_ids)))
                .execute(conn)
                .await?;
            diesel::update(emails::table.filter(emails::customer_id.eq(&id)))
                .set((
                    emails::to_email.eq(TOMBSTONE),
                    emails::subject.eq(TOMBSTONE),
                    emails::variables.eq("{}"),
                    emails::error.eq(None::<String>),
                ))
                .execute(conn)
                .await?;
            let own_events = email_events::email_id.eq_any(email_ids.clone());
            let by_address = email_events::email.eq(email.clone().unwrap_or_default());
            diesel::update(email_events::table.filter(own_events.or(by_address)))
                .set((
                    email_events::email.eq(TOMBSTONE),
                    email_events::url.eq(None::<String>),
                    email_events::reason.eq(None::<String>),
                ))
                .execute(conn)
                .await?;
            diesel::update(tasks::table.filter(tasks::customer_id.eq(&id)))
                .set((tasks::title.eq(TOMBSTONE), tasks::notes.eq(None::<String>)))
                .execute(conn)
                .await?;
            diesel::update(pipeline_steps::table.filter(pipeline_steps::run_id.eq_any(&run_ids)))
                .set(pipeline_steps::detail.eq(None::<String>))
                .execute(conn)
                .await?;
            diesel::update(pipeline_runs::table.filter(pipeline_runs::customer_id.eq(&id)))
                .set(pipeline_runs::error.eq(None::<String>))
                .execute(conn)
                .await?;
            // Score reasons keep their rule and points, not their words (which may quote the
            // company or an outcome note).
            let scored: Vec<(String, String)> = lead_scores::table
                .filter(lead_scores::customer_id.eq(&id))
                .select((lead_scores::id, lead_scores::reasons))
                .load(conn)
                .await?;
            for (score_id, reasons) in scored {
                let mut parsed: Value = serde_json::from_str(&reasons).unwrap_or(Value::Null);
                if let Some(list) = parsed.as_array_mut() {
                    for reason in list {
                        if let Some(detail) = reason.get_mut("detail") {
                            *detail = Value::String(TOMBSTONE.to_owned());
                        }
                    }
                } else {
                    parsed = json!([]);
                }
                diesel::update(lead_scores::table.find(score_id))
                    .set(lead_scores::reasons.eq(parsed.to_string()))
                    .execute(conn)
                    .await?;
            }
            diesel::update(events::table.filter(events::customer_id.eq(&id)))
                .set(events::payload.eq(r#"{"erased":true}"#))
                .execute(conn)
                .await?;
            // Raw deliveries that became this customer.
            diesel::update(inbox::table.filter(inbox::result.like(format!("%{id}%"))))
                .set(inbox::payload.eq(r#"{"erased":true}"#))
                .execute(conn)
                .await?;
            // Jobs about the customer keep their ids, not their errors (which may quote data).
            diesel::update(jobs::table.filter(jobs::payload.like(format!("%{id}%"))))
                .set(jobs::last_error.eq(None::<String>))
                .execute(conn)
                .await?;
            // Payloads that carry the person's data (a provider's event with the transcript):
            // emptied; the ones still waiting are cancelled with them.
            let mut needles: Vec<String> = call_ids.iter().map(|c| format!("%{c}%")).collect();
            needles.extend(email.iter().map(|e| format!("%{e}%")));
            needles.extend(phone.iter().map(|p| format!("%{p}%")));
            for needle in &needles {
                let carrying = jobs::table
                    .filter(jobs::payload.like(needle.clone()))
                    .filter(jobs::kind.ne("voice-delete"));
                diesel::update(carrying.filter(jobs::status.eq_any(["queued", "running"])))
                    .set((
                        jobs::status.eq("cancelled"),
                        jobs::finished_at.eq(Some(at)),
                        jobs::locked_by.eq(None::<String>),
                        jobs::locked_until.eq(None::<NaiveDateTime>),
                    ))
                    .execute(conn)
                    .await?;
                diesel::update(
                    jobs::table
                        .filter(jobs::payload.like(needle.clone()))
                        .filter(jobs::kind.ne("voice-delete")),
                )
                .set(jobs::payload.eq(r#"{"erased":true}"#))
                .execute(conn)
                .await?;
            }
            let mut about: Vec<String> = vec![id.clone()];
            about.extend(
                phone
                    .iter()
                    .map(|p| format!("phone:{}", identity_hash(&key, "phone", p))),
            );
            about.extend(interaction_ids);
            about.extend(call_ids.iter().cloned());
            about.extend(email_ids.iter().cloned());
            about.extend(task_ids);
            diesel::update(audit_log::table.filter(audit_log::target_id.eq_any(&about)))
                .set(audit_log::payload.eq(None::<String>))
                .execute(conn)
                .await?;
            // The identity lives on only as keyed hashes.
            for (kind, value) in [("email", &email), ("phone", &phone)] {
                let Some(value) = value else { continue };
                let hash = identity_hash(&key, kind, value);
                diesel::insert_into(erased_identities::table)
                    .values((
                        erased_identities::hash.eq(&hash),
                        erased_identities::kind.eq(kind),
                        erased_identities::erased_at.eq(at),
                    ))
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?;
                let hashed = format!("erased:{hash}");
                if kind == "email" {
                    let listed: Option<(String, String)> = suppressions::table
                        .find(value)
                        .select((suppressions::reason, suppressions::source))
                        .first(conn)
                        .await
                        .optional()?;
                    if let Some((reason, source)) = listed {
                        diesel::delete(suppressions::table.find(value))
                            .execute(conn)
                            .await?;
                        diesel::insert_into(suppressions::table)
                            .values((
                                suppressions::email.eq(&hashed),
                                suppressions::reason.eq(reason),
                                suppressions::source.eq(source),
                                suppressions::created_at.eq(at),
                            ))
                            .on_conflict_do_nothing()
                            .execute(conn)
                            .await?;
                    }
                    diesel::update(
                        import_issues::table
                            .filter(import_issues::message.like(format!("%{value}%"))),
                    )
                    .set(import_issues::message.eq(TOMBSTONE))
                    .execute(conn)
                    .await?;
                } else {
                    let listed: Option<(String, String, String)> = do_not_call::table
                        .find(value)
                        .select((
                            do_not_call::reason,
                            do_not_call::source,
                            do_not_call::created_by,
                        ))
                        .first(conn)
                        .await
                        .optional()?;
                    if let Some((reason, source, created_by)) = listed {
                        diesel::delete(do_not_call::table.find(value))
                            .execute(conn)
                            .await?;
                        diesel::insert_into(do_not_call::table)
                            .values((
                                do_not_call::phone.eq(&hashed),
                                do_not_call::reason.eq(reason),
                                do_not_call::source.eq(source),
                                do_not_call::created_by.eq(created_by),
                                do_not_call::created_at.eq(at),
                            ))
                            .on_conflict_do_nothing()
                            .execute(conn)
                            .await?;
                    }
                }
            }
            // Ask each provider that holds a call to delete it.
            let mut deletions = 0_i64;
            let mut jobs_to_enqueue = Vec::new();
            for (call_id, provider, provider_call_id) in &call_rows {
                if provider_call_id.is_none() {
                    continue;
                }
                diesel::insert_into(provider_deletions::table)
                    .values((
                        provider_deletions::call_id.eq(call_id),
                        provider_deletions::customer_id.eq(&id),
                        provider_deletions::provider.eq(provider),
                        provider_deletions::provider_call_id.eq(provider_call_id),
                        provider_deletions::status.eq("pending"),
                        provider_deletions::created_at.eq(at),
                        provider_deletions::updated_at.eq(at),
                    ))
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?;
                jobs_to_enqueue.push(delete_job(call_id));
                deletions += 1;
            }
            if !jobs_to_enqueue.is_empty() {
                conn.enqueue_jobs(&jobs_to_enqueue, now).await?;
            }
            conn.append_audit(&audit).await?;
            Ok::<_, StoreError>(Some((deletions, email_ids)))
        })
        .await
    });
    let (deletions, email_ids) = match result? {
        Some((n, ids)) => (Some(n), ids),
        None => (None, Vec::new()),
    };
    let (reason, erased_by, erased_at): (String, String, NaiveDateTime) = with_conn!(db, |conn| {
        erasures::table
            .find(&id)
            .select((erasures::reason, erasures::erased_by, erasures::erased_at))
            .first(conn)
            .await
    })?;
    let provider_deletions = match deletions {
        Some(n) => n,
        None => with_conn!(db, |conn| {
            provider_deletions::table
                .filter(provider_deletions::customer_id.eq(&id))
                .count()
                .get_result(conn)
                .await
        })?,
    };
    if deletions.is_some() {
        db.committed(true, false);
    }
    Ok(Erasure {
        customer_id: id,
        reason,
        erased_by,
        erased_at: from_db_time(erased_at),
        already_erased: deletions.is_none(),
        provider_deletions,
        email_ids,
    })
}

/// The erasure of a customer, if erased.
pub async fn erasure(db: &Db, customer: CustomerId) -> StoreResult<Option<Erasure>> {
    let id = customer.to_string();
    let row: Option<(String, String, NaiveDateTime)> = with_conn!(db, |conn| {
        erasures::table
            .find(&id)
            .select((erasures::reason, erasures::erased_by, erasures::erased_at))
            .first(conn)
            .await
            .optional()
    })?;
    let Some((reason, erased_by, at)) = row else {
        return Ok(None);
    };
    let provider_deletions = with_conn!(db, |conn| {
        provider_deletions::table
            .filter(provider_deletions::customer_id.eq(&id))
            .count()
            .get_result(conn)
            .await
    })?;
    Ok(Some(Erasure {
        customer_id: id,
        reason,
        erased_by,
        erased_at: from_db_time(at),
        already_erased: true,
        provider_deletions,
        email_ids: Vec::new(),
    }))
}

/// A call whose provider is to delete its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderDeletion {
    /// Our call id.
    pub call_id: String,
    /// The provider kind.
    pub provider: String,
    /// The provider's id of the call.
    pub provider_call_id: Option<String>,
    /// `pending`, `deleted`, `not_found`, `unsupported`, `failed`.
    pub status: String,
}

/// One pending deletion.
pub async fn provider_deletion(db: &Db, call_id: &str) -> StoreResult<Option<ProviderDeletion>> {
    let row: Option<(String, String, Option<String>, String)> = with_conn!(db, |conn| {
        provider_deletions::table
            .find(call_id)
            .select((
                provider_deletions::call_id,
                provider_deletions::provider,
                provider_deletions::provider_call_id,
                provider_deletions::status,
            ))
            .first(conn)
            .await
            .optional()
    })?;
    Ok(row.map(
        |(call_id, provider, provider_call_id, status)| ProviderDeletion {
            call_id,
            provider,
            provider_call_id,
            status,
        },
    ))
}

/// Records how a deletion ended; once it is over, the provider's id is forgotten too.
pub async fn finish_provider_deletion(
    db: &Db,
    call_id: &str,
    status: &str,
    error: Option<String>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let done = status != "failed";
    with_conn!(db, |conn| {
        diesel::update(provider_deletions::table.find(call_id))
            .set((
                provider_deletions::status.eq(status),
                provider_deletions::error.eq(error),
                provider_deletions::updated_at.eq(to_db_time(now)),
            ))
            .execute(conn)
            .await?;
        if done {
            diesel::update(provider_deletions::table.find(call_id))
                .set(provider_deletions::provider_call_id.eq(None::<String>))
                .execute(conn)
                .await?;
            diesel::update(calls::table.find(call_id))
                .set(calls::provider_call_id.eq(None::<String>))
                .execute(conn)
                .await?;
        }
        Ok::<_, StoreError>(())
    })
}

fn time(at: NaiveDateTime) -> String {
    from_db_time(at).to_rfc3339()
}

fn opt_time(at: Option<NaiveDateTime>) -> Value {
    at.map_or(Value::Null, |t| Value::String(time(t)))
}

fn parsed(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// Everything held about a customer, as one JSON document; `None` for an unknown customer.
pub async fn export(
    db: &Db,
    customer: CustomerId,
    now: DateTime<Utc>,
) -> StoreResult<Option<Value>> {
    let id = customer.to_string();
    type Profile = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
        (bool, bool, bool),
        Option<String>,
        (NaiveDateTime, NaiveDateTime, Option<NaiveDateTime>),
    );
    let profile: Option<Profile> = with_conn!(db, |conn| {
        customers::table
            .find(&id)
            .select((
                customers::name,
                customers::email,
                customers::phone,
                customers::company,
                customers::status,
                customers::source,
                customers::language,
                customers::country,
                customers::time_zone,
                customers::owner,
                customers::tags,
                (
                    customers::consent_email,
                    customers::consent_call,
                    customers::consent_sms,
                ),
                customers::notes,
                (
                    customers::created_at,
                    customers::updated_at,
                    customers::deleted_at,
                ),
            ))
            .first(conn)
            .await
            .optional()
    })?;
    let Some((
        name,
        email,
        phone,
        company,
        status,
        source,
        language,
        country,
        time_zone,
        owner,
        tags,
        (consent_email, consent_call, consent_sms),
        notes,
        (created_at, updated_at, deleted_at),
    )) = profile
    else {
        return Ok(None);
    };

    let ledger: Vec<Value> = consents(db, customer)
        .await?
        .into_iter()
        .map(|c| {
            json!({ "channel": c.channel, "purpose": c.purpose, "basis": c.basis,
                    "granted": c.granted, "source": c.source, "evidence": c.evidence,
                    "recordedBy": c.recorded_by, "at": time(c.at) })
        })
        .collect();

    type InteractionOut = (
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        NaiveDateTime,
        Option<i32>,
        Option<String>,
    );
    let interaction_rows: Vec<InteractionOut> = with_conn!(db, |conn| {
        interactions::table
            .filter(interactions::customer_id.eq(&id))
            .order_by(interactions::occurred_at.asc())
            .select((
                interactions::id,
                interactions::kind,
                interactions::direction,
                interactions::subject,
                interactions::body,
                interactions::outcome,
                interactions::occurred_at,
                interactions::duration_seconds,
                interactions::author,
            ))
            .load(conn)
            .await
    })?;
    let interactions_out: Vec<Value> = interaction_rows
        .into_iter()
        .map(
            |(iid, kind, direction, subject, body, outcome, at, secs, author)| {
                json!({ "id": iid, "kind": kind, "direction": direction, "subject": subject,
                    "body": body, "outcome": outcome, "occurredAt": time(at),
                    "durationSeconds": secs, "author": author })
            },
        )
        .collect();

    type CallOut = (
        (String, i32, String, String, String, String, String),
        (Option<String>, Option<String>, Option<String>),
        (
            Option<NaiveDateTime>,
            Option<NaiveDateTime>,
            Option<f64>,
            Option<f64>,
        ),
        (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        ),
    );
    let call_rows: Vec<CallOut> = with_conn!(db, |conn| {
        calls::table
            .filter(calls::customer_id.eq(&id))
            .order_by(calls::created_at.asc())
            .select((
                (
                    calls::id,
                    calls::attempt,
                    calls::agent,
                    calls::provider,
                    calls::to_number,
                    calls::language,
                    calls::status,
                ),
                (calls::disposition, calls::outcome, calls::ended_reason),
                (
                    calls::started_at,
                    calls::ended_at,
                    calls::duration_secs,
                    calls::cost_usd,
                ),
                (
                    calls::summary,
                    calls::sentiment,
                    calls::recording_url,
                    calls::transcript,
                ),
            ))
            .load(conn)
            .await
    })?;
    let call_ids: Vec<String> = call_rows.iter().map(|c| c.0.0.clone()).collect();
    let segments: Vec<(String, i32, String, String, Option<i64>)> = with_conn!(db, |conn| {
        call_segments::table
            .filter(call_segments::call_id.eq_any(&call_ids))
            .order_by((call_segments::call_id, call_segments::seq))
            .select((
                call_segments::call_id,
                call_segments::seq,
                call_segments::role,
                call_segments::text,
                call_segments::offset_ms,
            ))
            .load(conn)
            .await
    })?;
    let calls_out: Vec<Value> = call_rows
        .into_iter()
        .map(
            |(
                (cid, attempt, agent, provider, to, lang, status),
                (disposition, outcome, ended_reason),
                (started, ended, secs, cost),
                (summary, sentiment, recording, transcript),
            )| {
                let own: Vec<Value> = segments
                    .iter()
                    .filter(|s| s.0 == cid)
                    .map(|(_, seq, role, text, offset)| {
                        json!({ "seq": seq, "role": role, "text": text, "offsetMs": offset })
                    })
                    .collect();
                json!({ "id": cid, "attempt": attempt, "agent": agent, "provider": provider,
                        "toNumber": to, "language": lang, "status": status,
                        "disposition": disposition, "outcome": outcome, "endedReason": ended_reason,
                        "startedAt": opt_time(started), "endedAt": opt_time(ended),
                        "durationSeconds": secs, "costUsd": cost, "summary": summary,
                        "sentiment": sentiment, "recordingUrl": recording,
                        "transcript": transcript, "segments": own })
            },
        )
        .collect();

    type EmailOut = (
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        Option<String>,
        NaiveDateTime,
        Option<NaiveDateTime>,
    );
    let email_rows: Vec<EmailOut> = with_conn!(db, |conn| {
        emails::table
            .filter(emails::customer_id.eq(&id))
            .order_by(emails::created_at.asc())
            .select((
                emails::id,
                emails::template,
                emails::language,
                emails::category,
                emails::to_email,
                emails::subject,
                emails::status,
                emails::last_event,
                emails::created_at,
                emails::sent_at,
            ))
            .load(conn)
            .await
    })?;
    let email_ids: Vec<Option<String>> = email_rows.iter().map(|e| Some(e.0.clone())).collect();
    let email_event_rows: Vec<(Option<String>, String, NaiveDateTime)> = with_conn!(db, |conn| {
        email_events::table
            .filter(email_events::email_id.eq_any(&email_ids))
            .order_by(email_events::at.asc())
            .select((email_events::email_id, email_events::kind, email_events::at))
            .load(conn)
            .await
    })?;
    let emails_out: Vec<Value> = email_rows
        .into_iter()
        .map(
            |(eid, template, lang, category, to, subject, status, last, created, sent)| {
                let own: Vec<Value> = email_event_rows
                    .iter()
                    .filter(|e| e.0.as_deref() == Some(eid.as_str()))
                    .map(|(_, kind, at)| json!({ "kind": kind, "at": time(*at) }))
                    .collect();
                json!({ "id": eid, "template": template, "language": lang, "category": category,
                        "to": to, "subject": subject, "status": status, "lastEvent": last,
                        "createdAt": time(created), "sentAt": opt_time(sent), "events": own })
            },
        )
        .collect();

    let score_rows: Vec<(i32, String, String, String, String, String, NaiveDateTime)> =
        with_conn!(db, |conn| {
            lead_scores::table
                .filter(lead_scores::customer_id.eq(&id))
                .order_by(lead_scores::scored_at.asc())
                .select((
                    lead_scores::score,
                    lead_scores::priority,
                    lead_scores::tags,
                    lead_scores::next_action,
                    lead_scores::reasons,
                    lead_scores::cause,
                    lead_scores::scored_at,
                ))
                .load(conn)
                .await
        })?;
    let scores_out: Vec<Value> = score_rows
        .into_iter()
        .map(|(score, priority, tags, next, reasons, cause, at)| {
            json!({ "score": score, "priority": priority, "tags": parsed(&tags),
                    "nextAction": next, "reasons": parsed(&reasons), "cause": cause,
                    "scoredAt": time(at) })
        })
        .collect();

    type TaskOut = (
        String,
        String,
        Option<String>,
        Option<NaiveDateTime>,
        Option<String>,
        String,
        NaiveDateTime,
    );
    let task_rows: Vec<TaskOut> = with_conn!(db, |conn| {
        tasks::table
            .filter(tasks::customer_id.eq(&id))
            .order_by(tasks::created_at.asc())
            .select((
                tasks::id,
                tasks::title,
                tasks::notes,
                tasks::due_at,
                tasks::assignee,
                tasks::status,
                tasks::created_at,
            ))
            .load(conn)
            .await
    })?;
    let tasks_out: Vec<Value> = task_rows
        .into_iter()
        .map(|(tid, title, notes, due, assignee, status, created)| {
            json!({ "id": tid, "title": title, "notes": notes, "dueAt": opt_time(due),
                    "assignee": assignee, "status": status, "createdAt": time(created) })
        })
        .collect();

    let run_rows: Vec<(String, String, String, Option<String>, NaiveDateTime)> =
        with_conn!(db, |conn| {
            pipeline_runs::table
                .filter(pipeline_runs::customer_id.eq(&id))
                .order_by(pipeline_runs::created_at.asc())
                .select((
                    pipeline_runs::id,
                    pipeline_runs::cause,
                    pipeline_runs::status,
                    pipeline_runs::branch,
                    pipeline_runs::created_at,
                ))
                .load(conn)
                .await
        })?;
    let runs_out: Vec<Value> = run_rows
        .into_iter()
        .map(|(rid, cause, status, branch, created)| {
            json!({ "id": rid, "cause": cause, "status": status, "branch": branch,
                    "createdAt": time(created) })
        })
        .collect();

    let nurture_rows: Vec<(i32, String, Option<String>, NaiveDateTime)> = with_conn!(db, |conn| {
        nurture_enrollments::table
            .filter(nurture_enrollments::customer_id.eq(&id))
            .select((
                nurture_enrollments::position,
                nurture_enrollments::status,
                nurture_enrollments::exit_reason,
                nurture_enrollments::enrolled_at,
            ))
            .load(conn)
            .await
    })?;
    let nurture_out: Vec<Value> = nurture_rows
        .into_iter()
        .map(|(position, status, exit, at)| {
            json!({ "position": position, "status": status, "exitReason": exit,
                    "enrolledAt": time(at) })
        })
        .collect();

    let mut about: Vec<String> = vec![id.clone()];
    about.extend(call_ids);
    about.extend(email_ids.into_iter().flatten());
    type AuditOut = (
        i64,
        NaiveDateTime,
        String,
        String,
        Option<String>,
        Option<String>,
    );
    let audit_rows: Vec<AuditOut> = with_conn!(db, |conn| {
        audit_log::table
            .filter(audit_log::target_id.eq_any(&about))
            .order_by(audit_log::seq.asc())
            .select((
                audit_log::seq,
                audit_log::at,
                audit_log::actor,
                audit_log::action,
                audit_log::target_type,
                audit_log::payload,
            ))
            .load(conn)
            .await
    })?;
    let audit_out: Vec<Value> = audit_rows
        .into_iter()
        .map(|(seq, at, actor, action, target, payload)| {
            json!({ "seq": seq, "at": time(at), "actor": actor, "action": action,
                    "targetType": target, "changes": payload.as_deref().map(parsed) })
        })
        .collect();

    let suppressed = match &email {
        Some(address) => with_conn!(db, |conn| {
            suppressions::table
                .find(address)
                .select(suppressions::reason)
                .first::<String>(conn)
                .await
                .optional()
        })?,
        None => None,
    };
    let do_not_call_reason = match &phone {
        Some(number) => with_conn!(db, |conn| {
            do_not_call::table
                .find(number)
                .select(do_not_call::reason)
                .first::<String>(conn)
                .await
                .optional()
        })?,
        None => None,
    };
    let erased = erasure(db, customer).await?.map(|e| {
        json!({ "reason": e.reason, "erasedBy": e.erased_by, "erasedAt": e.erased_at.to_rfc3339() })
    });

    Ok(Some(json!({
        "format": "crm.customer-export.v1",
        "exportedAt": now.to_rfc3339(),
        "customer": {
            "id": id, "name": name, "email": email, "phone": phone, "company": company,
            "status": status, "source": source, "language": language, "country": country,
            "timeZone": time_zone, "owner": owner, "tags": parsed(&tags), "notes": notes,
            "consent": { "email": consent_email, "call": consent_call, "sms": consent_sms },
            "createdAt": time(created_at), "updatedAt": time(updated_at),
            "deletedAt": opt_time(deleted_at),
        },
        "consents": ledger,
        "interactions": interactions_out,
        "calls": calls_out,
        "emails": emails_out,
        "scores": scores_out,
        "tasks": tasks_out,
        "pipelineRuns": runs_out,
        "nurture": nurture_out,
        "suppression": suppressed,
        "doNotCall": do_not_call_reason,
        "erasure": erased,
        "audit": audit_out,
    })))
}

/// Retention: removes the transcripts (text and segments) of calls that ended before
/// `before`; the call records stay. Returns how many calls lost their transcript.
pub async fn expire_transcripts(db: &Db, before: DateTime<Utc>) -> StoreResult<usize> {
    let cutoff = to_db_time(before);
    with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            // The write first (SQLite takes the write lock before it reads).
            let texts = diesel::update(
                calls::table.filter(calls::ended_at.lt(cutoff)).filter(
                    calls::transcript
                        .is_not_null()
                        .or(calls::summary.is_not_null()),
                ),
            )
            .set((
                calls::transcript.eq(None::<String>),
                calls::summary.eq(None::<String>),
            ))
            .execute(conn)
            .await?;
            let old = calls::table
                .filter(calls::ended_at.lt(cutoff))
                .select(calls::id);
            diesel::delete(call_segments::table.filter(call_segments::call_id.eq_any(old)))
                .execute(conn)
                .await?;
            Ok::<_, StoreError>(texts)
        })
        .await
    })
}

/// Retention: leads (status lead) not erased, unchanged since `before`, with no interaction
/// and no call since then; at most `limit`.
pub async fn inactive_leads(
    db: &Db,
    before: DateTime<Utc>,
    limit: i64,
) -> StoreResult<Vec<CustomerId>> {
    let cutoff = to_db_time(before);
    let ids: Vec<String> = with_conn!(db, |conn| {
        let recent_interactions = interactions::table
            .filter(interactions::occurred_at.ge(cutoff))
            .select(interactions::customer_id);
        let recent_calls = calls::table
            .filter(calls::created_at.ge(cutoff))
            .select(calls::customer_id);
        let erased = erasures::table.select(erasures::customer_id);
        customers::table
            .filter(customers::status.eq("lead"))
            .filter(customers::updated_at.lt(cutoff))
            .filter(customers::id.ne_all(recent_interactions))
            .filter(customers::id.ne_all(recent_calls))
            .filter(customers::id.ne_all(erased))
            .order_by(customers::updated_at.asc())
            .limit(limit)
            .select(customers::id)
            .load(conn)
            .await
    })?;
    Ok(ids.into_iter().filter_map(|id| id.parse().ok()).collect())
}

/// Appends an audit entry that comes with no other write (what a retention run did).
pub async fn record_audit(db: &Db, entry: &NewAuditEntry, now: DateTime<Utc>) -> StoreResult<()> {
    identity_key(db, now).await?;
    with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            // A write first, so SQLite holds the write lock before the append reads the head.
            diesel::update(gdpr_keys::table.find("identity-hash"))
                .set(gdpr_keys::created_at.eq(gdpr_keys::created_at))
                .execute(conn)
                .await?;
            conn.append_audit(entry).await?;
            Ok::<_, StoreError>(())
        })
        .await
    })
}

/// The ledger entries `records` as effects of a customer write.
pub fn consent_effects(
    customer: CustomerId,
    records: Vec<ConsentRecord>,
    recorded_by: &str,
) -> Vec<crate::effects::Effect> {
    records
        .into_iter()
        .map(|record| {
            crate::effects::Effect::Consent(NewConsent {
                customer_id: customer,
                record,
                recorded_by: recorded_by.to_owned(),
            })
        })
        .collect()
}

/// Of these normalized emails and phones, the ones that belong to erased people (one query;
/// none at all while nobody was erased).
pub async fn erased_among(
    db: &Db,
    emails: &[String],
    phones: &[String],
    now: DateTime<Utc>,
) -> StoreResult<std::collections::HashSet<String>> {
    let mut found = std::collections::HashSet::new();
    if emails.is_empty() && phones.is_empty() {
        return Ok(found);
    }
    let any: Option<String> = with_conn!(db, |conn| {
        erased_identities::table
            .select(erased_identities::hash)
            .first(conn)
            .await
            .optional()
    })?;
    if any.is_none() {
        return Ok(found);
    }
    let key = identity_key(db, now).await?;
    let hashed: Vec<(String, &String)> = emails
        .iter()
        .map(|e| (identity_hash(&key, "email", e), e))
        .chain(phones.iter().map(|p| (identity_hash(&key, "phone", p), p)))
        .collect();
    let hashes: Vec<String> = hashed.iter().map(|(h, _)| h.clone()).collect();
    let hits: Vec<String> = with_conn!(db, |conn| {
        erased_identities::table
            .filter(erased_identities::hash.eq_any(&hashes))
            .select(erased_identities::hash)
            .load(conn)
            .await
    })?;
    for (hash, value) in hashed {
        if hits.contains(&hash) {
            found.insert(value.clone());
        }
    }
    Ok(found)
}

#[derive(QueryableByName)]
struct ColumnName {
    #[diesel(sql_type = diesel::sql_types::Text)]
    table_name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    column_name: String,
}

#[derive(QueryableByName)]
struct Hits {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    hits: i64,
}

/// Every text column of every table that holds `needle` (case-insensitive), with the number
/// of rows: a full-text search of the whole database, to prove an erasure left no trace.
/// Slow on a large database (one scan per column); for audits and tests.
pub async fn find_text(db: &Db, needle: &str) -> StoreResult<Vec<(String, String, i64)>> {
    let needle = needle.to_lowercase().replace('\'', "''");
    let columns: Vec<ColumnName> = with_conn!(
        db,
        postgres | conn | {
            diesel::sql_query(
                "SELECT table_name::text AS table_name, column_name::text AS column_name \
                 FROM information_schema.columns WHERE table_schema = current_schema() \
                 AND data_type IN ('text', 'character varying') ORDER BY 1, 2",
            )
            .load(conn)
            .await
        },
        sqlite | conn | {
            diesel::sql_query(
                "SELECT m.name AS table_name, p.name AS column_name FROM sqlite_master m \
                 JOIN pragma_table_info(m.name) p WHERE m.type = 'table' \
                 AND upper(p.type) IN ('TEXT', 'VARCHAR') ORDER BY 1, 2",
            )
            .load(conn)
            .await
        }
    )?;
    let mut found = Vec::new();
    for c in columns {
        let sql = format!(
            "SELECT count(*) AS hits FROM \"{}\" WHERE lower(\"{}\") LIKE '%{needle}%'",
            c.table_name, c.column_name
        );
        let hits: Vec<Hits> = with_conn!(db, |conn| diesel::sql_query(&sql).load(conn).await)?;
        let n = hits.iter().map(|h| h.hits).sum::<i64>();
        if n > 0 {
            found.push((c.table_name, c.column_name, n));
        }
    }
    Ok(found)
}
