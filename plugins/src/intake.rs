//! `/import-lead`: validates a lead, normalizes it, finds the customer it duplicates, and
//! creates, updates, merges or skips — starting the pipeline for every lead it creates or
//! changes, in the same transaction.
//!
//! [`Intake::import`] serves every channel (webhook inbox, bulk import, forms); the
//! `import-lead` job processes one inbox entry with it and finishes the entry in the transaction
//! that stores the lead, so a crash at any point leaves the entry to be processed again, and a
//! second processing finds the lead it created the first time.

use crate::{
    pipeline::Pipeline,
    runner::{JobError, JobHandler},
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crm_domain::{
    Clock, Customer, CustomerId, CustomerScope, FieldError, NewCustomer, PhoneRegion, Tag,
    lead::{LeadField, LeadValue, RawLead},
};
use crm_store::{
    Db, StoreError,
    audit::NewAuditEntry,
    customers,
    effects::Effect,
    inbox::{self, InboxStatus},
    jobs::NewJob,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The job kind that processes one inbox entry.
pub const IMPORT_LEAD: &str = crate::pipeline::IMPORT_LEAD;

/// What to do with a lead whose email or phone belongs to a customer already.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDuplicate {
    /// Leave the customer as it is.
    Skip,
    /// Overwrite the customer's fields with the lead's non-empty ones; tags are added.
    Update,
    /// Fill only the customer's empty fields from the lead; tags are added.
    #[default]
    Merge,
}

/// How leads are imported.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ImportOptions {
    /// Report what would happen, change nothing.
    pub dry_run: bool,
    /// Duplicates of existing customers.
    pub on_duplicate: OnDuplicate,
    /// Region for national phone numbers of leads without a country (else the configured
    /// default).
    pub default_country: Option<String>,
    /// Source of leads that name none.
    pub source: Option<String>,
    /// Tags added to every lead.
    pub tags: Vec<String>,
}

/// A problem with one field of a lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    /// The field (`email`, `phone`, …), or `lead` for the whole lead.
    pub field: String,
    /// Stable code (`invalid_email`, `required`, `duplicate_conflict`, …).
    pub code: String,
    /// In words.
    pub message: String,
}

impl From<&FieldError> for Issue {
    fn from(e: &FieldError) -> Self {
        Self {
            field: e.field.clone(),
            code: e.code.to_owned(),
            message: e.message.clone(),
        }
    }
}

/// What became of a lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A new customer.
    Created {
        /// It.
        customer_id: CustomerId,
    },
    /// An existing customer, its fields overwritten.
    Updated {
        /// It.
        customer_id: CustomerId,
    },
    /// An existing customer, its empty fields filled.
    Merged {
        /// It.
        customer_id: CustomerId,
    },
    /// A duplicate left alone (or a merge that changed nothing).
    Skipped {
        /// The customer it duplicates.
        customer_id: CustomerId,
        /// Why.
        reason: String,
    },
    /// Not importable.
    Invalid {
        /// Every problem.
        issues: Vec<Issue>,
    },
}

impl Outcome {
    /// The customer it concerns, if any.
    pub fn customer_id(&self) -> Option<CustomerId> {
        match self {
            Self::Created { customer_id }
            | Self::Updated { customer_id }
            | Self::Merged { customer_id }
            | Self::Skipped { customer_id, .. } => Some(*customer_id),
            Self::Invalid { .. } => None,
        }
    }
}

/// Builds the audit entries of intake's changes (the API's auditor, or a system one for jobs).
pub trait CustomerAudit: Send + Sync {
    /// The entry of a change to a customer (`before` absent for a create).
    fn customer(
        &self,
        action: &str,
        before: Option<&Customer>,
        after: &Customer,
    ) -> Option<NewAuditEntry>;
}

/// Imports leads.
#[derive(Debug, Clone)]
pub struct Intake {
    db: Db,
    clock: Arc<dyn Clock>,
    pipeline: Arc<Pipeline>,
    region: PhoneRegion,
}

impl Intake {
    /// Intake over `db`, reading national phone numbers in `region` unless told otherwise.
    pub fn new(
        db: Db,
        clock: Arc<dyn Clock>,
        pipeline: Arc<Pipeline>,
        region: PhoneRegion,
    ) -> Self {
        Self {
            db,
            clock,
            pipeline,
            region,
        }
    }

    /// Validates and normalizes a lead into a new customer, or says everything wrong with it.
    pub fn parse(
        &self,
        lead: &RawLead,
        options: &ImportOptions,
        now: DateTime<Utc>,
    ) -> Result<Customer, Vec<Issue>> {
        let draft = lead
            .to_draft(options.source.as_deref(), &options.tags)
            .map_err(|errors| {
                errors
                    .into_iter()
                    .map(|(field, message)| Issue {
                        field: field.as_str().to_owned(),
                        code: "invalid_flag".to_owned(),
                        message,
                    })
                    .collect::<Vec<_>>()
            })?;
        // A national number is read in the lead's own country, else the import's default.
        let region = [draft.country.as_deref(), options.default_country.as_deref()]
            .into_iter()
            .flatten()
            .find_map(|c| PhoneRegion::parse(c).ok())
            .unwrap_or(self.region);
        let mut issues = Vec::new();
        if let Some(default) = options.default_country.as_deref()
            && PhoneRegion::parse(default).is_err()
        {
            issues.push(Issue {
                field: "defaultCountry".into(),
                code: "invalid_region".into(),
                message: format!("`{default}` is not a known ISO 3166-1 alpha-2 region"),
            });
        }
        match NewCustomer::parse(draft, region, now) {
            Ok(NewCustomer(customer)) if issues.is_empty() => Ok(customer),
            Ok(_) => Err(issues),
            Err(errors) => {
                issues.extend(errors.errors().iter().map(Issue::from));
                Err(issues)
            }
        }
    }

    /// Imports one lead: creates it, or handles the customer it duplicates as `options` say;
    /// starts a pipeline run for every lead created or changed. `finish` is written with the
    /// change (an inbox entry's result). Nothing is written on a dry run.
    /// `scope` is the caller's row-level rule: a duplicate of a customer outside it is skipped,
    /// never changed (and not named). `id`, if given, is the id of the customer it creates (a
    /// file import's row names its own, so that a replay of the row finds it).
    pub async fn import(
        &self,
        lead: &RawLead,
        options: &ImportOptions,
        scope: &CustomerScope,
        audit: &dyn CustomerAudit,
        finish: Option<&str>,
        id: Option<CustomerId>,
    ) -> Result<Outcome, StoreError> {
        let now = self.clock.now();
        let mut new = match self.parse(lead, options, now) {
            Ok(customer) => customer,
            Err(issues) => return self.done(Outcome::Invalid { issues }, finish, now).await,
        };
        if let Some(id) = id {
            new.id = id;
        }
        if crm_store::gdpr::is_erased(
            &self.db,
            new.email.as_ref().map(|e| e.as_str()),
            new.phone.as_ref().map(|p| p.as_str()),
            now,
        )
        .await?
        {
            let issue = Issue {
                field: "lead".into(),
                code: "erased".into(),
                message:
                    "this person's data was erased at their request; they are not imported again"
                        .into(),
            };
            return self
                .done(
                    Outcome::Invalid {
                        issues: vec![issue],
                    },
                    finish,
                    now,
                )
                .await;
        }
        let holders = customers::find_by_contact(
            &self.db,
            new.email.as_ref().map(|e| e.as_str()),
            new.phone.as_ref().map(|p| p.as_str()),
        )
        .await?;
        // A holder outside the caller's scope is never changed, nor named.
        if holders.iter().any(|h| !scope.covers(h.owner.as_deref())) {
            let issue = Issue {
                field: "lead".into(),
                code: "duplicate_not_visible".into(),
                message: "the email or phone belongs to a customer of another owner".into(),
            };
            return self
                .done(
                    Outcome::Invalid {
                        issues: vec![issue],
                    },
                    finish,
                    now,
                )
                .await;
        }
        let existing = match holders.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            [first, second, ..] => {
                let issue = Issue {
                    field: "lead".into(),
                    code: "duplicate_conflict".into(),
                    message: format!(
                        "the email belongs to customer {} and the phone to customer {}; merge them first",
                        first.id, second.id
                    ),
                };
                return self
                    .done(
                        Outcome::Invalid {
                            issues: vec![issue],
                        },
                        finish,
                        now,
                    )
                    .await;
            }
        };
        let Some(existing) = existing else {
            if options.dry_run {
                return Ok(Outcome::Created {
                    customer_id: new.id,
                });
            }
            let outcome = Outcome::Created {
                customer_id: new.id,
            };
            let mut effects = self.run_effects(&new, "import", now);
            effects.extend(Self::consent_effects(
                &new,
                finish.map_or("import", |inbox| inbox),
            ));
            effects.extend(finish_effect(finish, &outcome));
            let entry = audit.customer("customer.import", None, &new);
            return match customers::insert(&self.db, NewCustomer(new), entry, &effects).await {
                Ok(_) => Ok(outcome),
                // The customer with the id asked for exists: a replay of the file import that
                // created it, after its contacts were edited or it was merged away (so the
                // look-up by contact missed it). Created already, not stored twice.
                Err(error @ (StoreError::Duplicate { .. } | StoreError::Conflict { .. })) => {
                    match id {
                        Some(id) if customers::get(&self.db, id).await?.is_some() => {
                            Ok(Outcome::Skipped {
                                customer_id: id,
                                reason: "created by this import already".into(),
                            })
                        }
                        // Created by a concurrent delivery between the look-up and the
                        // insert: the next attempt of the job finds it and merges.
                        _ => Err(error),
                    }
                }
                Err(error) => Err(error),
            };
        };
        if existing.deleted_at.is_some() {
            let outcome = Outcome::Skipped {
                customer_id: existing.id,
                reason: "the customer it duplicates is deleted; restore it to import into it"
                    .into(),
            };
            return self.done(outcome, finish, now).await;
        }
        let id = existing.id;
        let mut changed = existing.clone();
        let applied = match options.on_duplicate {
            OnDuplicate::Skip => false,
            OnDuplicate::Update => overwrite(&mut changed, &new),
            OnDuplicate::Merge => fill(&mut changed, &new),
        };
        if !applied {
            let reason = match options.on_duplicate {
                OnDuplicate::Skip => "a duplicate of an existing customer (onDuplicate: SKIP)",
                _ => "a duplicate of an existing customer that adds nothing new",
            };
            let outcome = Outcome::Skipped {
                customer_id: id,
                reason: reason.into(),
            };
            return self.done(outcome, finish, now).await;
        }
        let outcome = match options.on_duplicate {
            OnDuplicate::Update => Outcome::Updated { customer_id: id },
            _ => Outcome::Merged { customer_id: id },
        };
        if options.dry_run {
            return Ok(outcome);
        }
        changed.updated_at = now;
        let mut effects = self.run_effects(&changed, "import", now);
        effects.extend(finish_effect(finish, &outcome));
        let action = match outcome {
            Outcome::Updated { .. } => "customer.import_update",
            _ => "customer.import_merge",
        };
        customers::update(
            &self.db,
            id,
            |c| {
                // The lead is applied again to the state being written (optimistic retry), so
                // a concurrent change to other fields survives.
                match options.on_duplicate {
                    OnDuplicate::Update => overwrite(c, &new),
                    _ => fill(c, &new),
                };
                c.updated_at = now;
                Ok(())
            },
            |before, after| audit.customer(action, Some(before), after),
            &effects,
        )
        .await?;
        Ok(outcome)
    }

    /// Like [`Intake::import`], for a report that must account for every lead: a second attempt
    /// settles a race with a concurrent import of the same person (the insert found the email
    /// taken: it then merges), and a lead the database refused twice is reported as not stored.
    pub async fn import_reported(
        &self,
        lead: &RawLead,
        options: &ImportOptions,
        scope: &CustomerScope,
        audit: &dyn CustomerAudit,
        id: Option<CustomerId>,
    ) -> Outcome {
        let mut last = None;
        for _ in 0..2 {
            match self.import(lead, options, scope, audit, None, id).await {
                Ok(outcome) => return outcome,
                Err(error) => last = Some(error),
            }
        }
        if let Some(error) = last {
            tracing::error!(%error, "A lead could not be stored.");
        }
        Outcome::Invalid {
            issues: vec![Issue {
                field: "lead".into(),
                code: "not_stored".into(),
                message: "the lead could not be stored; import it again".into(),
            }],
        }
    }

    /// The pipeline run a lead starts (and its event), if it is a lead or prospect.
    pub(crate) fn run_effects(
        &self,
        customer: &Customer,
        cause: &str,
        now: DateTime<Utc>,
    ) -> Vec<Effect> {
        use crm_domain::CustomerStatus::{Lead, Prospect};
        if !matches!(customer.status, Lead | Prospect) {
            return Vec::new();
        }
        self.pipeline.start_effects(customer.id, cause, now)
    }

    /// What a new lead consented to, as ledger entries beside its insert.
    pub(crate) fn consent_effects(customer: &Customer, evidence: &str) -> Vec<Effect> {
        crm_store::gdpr::consent_effects(
            customer.id,
            crm_domain::ConsentRecord::from_flags(
                customer.consent_email,
                customer.consent_call,
                customer.consent_sms,
                crm_domain::ConsentSource::Import,
                Some(evidence.to_owned()),
            ),
            "import-lead",
        )
    }

    /// Records an outcome that changes no customer (in the inbox entry, if any).
    async fn done(
        &self,
        outcome: Outcome,
        finish: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Outcome, StoreError> {
        if let Some(id) = finish {
            let status = match outcome {
                Outcome::Invalid { .. } => InboxStatus::Failed,
                _ => InboxStatus::Processed,
            };
            inbox::finish(&self.db, id, status, &result_json(&outcome), now).await?;
        }
        Ok(outcome)
    }
}

fn result_json(outcome: &Outcome) -> String {
    serde_json::to_string(outcome).unwrap_or_else(|_| "{}".into())
}

fn finish_effect(finish: Option<&str>, outcome: &Outcome) -> Option<Effect> {
    finish.map(|id| Effect::FinishInbox {
        id: id.to_owned(),
        status: InboxStatus::Processed,
        result: result_json(outcome),
    })
}

/// Copies the lead's set fields over the customer's (name and email/phone included); adds
/// tags. True if anything changed.
fn overwrite(customer: &mut Customer, lead: &Customer) -> bool {
    let before = customer.clone();
    customer.name.clone_from(&lead.name);
    macro_rules! take {
        ($($field:ident),*) => {$(
            if lead.$field.is_some() {
                customer.$field.clone_from(&lead.$field);
            }
        )*};
    }
    take!(
        email, phone, company, source, language, country, time_zone, owner, notes
    );
    add_tags(customer, &lead.tags);
    customer.consent_email |= lead.consent_email;
    customer.consent_call |= lead.consent_call;
    customer.consent_sms |= lead.consent_sms;
    *customer != before
}

/// Fills the customer's empty fields from the lead; adds tags. True if anything changed.
fn fill(customer: &mut Customer, lead: &Customer) -> bool {
    let before = customer.clone();
    macro_rules! fill {
        ($($field:ident),*) => {$(
            if customer.$field.is_none() {
                customer.$field.clone_from(&lead.$field);
            }
        )*};
    }
    fill!(
        email, phone, company, source, language, country, time_zone, owner, notes
    );
    add_tags(customer, &lead.tags);
    customer.consent_email |= lead.consent_email;
    customer.consent_call |= lead.consent_call;
    customer.consent_sms |= lead.consent_sms;
    *customer != before
}

fn add_tags(customer: &mut Customer, tags: &[Tag]) {
    for tag in tags {
        if !customer.tags.contains(tag) {
            customer.tags.push(tag.clone());
        }
    }
    customer.tags.sort();
}

/// Scoped callers import their own leads: a lead without an owner becomes theirs, one naming
/// another owner is refused.
pub fn owned_by(lead: &mut RawLead, scope: &CustomerScope) -> Option<Issue> {
    let subject = scope.subject()?;
    match lead.fields.get(&LeadField::Owner) {
        Some(LeadValue::Text(owner)) if !owner.trim().is_empty() && owner.trim() != subject => {
            Some(Issue {
                field: "owner".into(),
                code: "owner_not_allowed".into(),
                message: format!("{subject} may only import leads for themselves"),
            })
        }
        _ => {
            lead.fields
                .insert(LeadField::Owner, LeadValue::Text(subject.to_owned()));
            None
        }
    }
}

/// A lead from JSON: an object whose keys are field names or their synonyms.
pub fn lead_from_json(value: &serde_json::Value) -> Result<RawLead, Issue> {
    let object = value.as_object().ok_or_else(|| Issue {
        field: "lead".into(),
        code: "not_an_object".into(),
        message: "a lead must be a JSON object of fields".into(),
    })?;
    let mut lead = RawLead::default();
    for (key, value) in object {
        let value = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::Bool(b) => LeadValue::Bool(*b),
            serde_json::Value::String(s) => LeadValue::Text(s.clone()),
            serde_json::Value::Number(n) => LeadValue::Text(n.to_string()),
            serde_json::Value::Array(items) => LeadValue::List(
                items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect(),
            ),
            serde_json::Value::Object(_) => {
                lead.unknown.push(key.clone());
                continue;
            }
        };
        lead.set(key, value);
    }
    Ok(lead)
}

/// The payload of `import-lead`: the inbox entry to process and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportLeadPayload {
    /// The inbox entry.
    pub inbox_id: String,
    /// How.
    #[serde(default)]
    pub options: ImportOptions,
}

/// The `import-lead` job of an inbox entry, due `now`.
pub fn import_lead_job(inbox_id: &str, options: ImportOptions, now: DateTime<Utc>) -> NewJob {
    NewJob {
        kind: IMPORT_LEAD.to_owned(),
        payload: serde_json::to_string(&ImportLeadPayload {
            inbox_id: inbox_id.to_owned(),
            options,
        })
        .unwrap_or_default(),
        dedupe_key: Some(format!("inbox:{inbox_id}")),
        priority: 10,
        run_at: now,
        max_attempts: 8,
    }
}

/// `import-lead`: processes one inbox entry (a webhook delivery).
pub struct ImportLead {
    db: Db,
    intake: Intake,
    audit: Arc<dyn CustomerAudit>,
}

impl std::fmt::Debug for ImportLead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportLead").finish_non_exhaustive()
    }
}

impl ImportLead {
    /// The handler; `audit` attributes its changes (to the system).
    pub fn new(db: Db, intake: Intake, audit: Arc<dyn CustomerAudit>) -> Self {
        Self { db, intake, audit }
    }
}

#[async_trait]
impl JobHandler for ImportLead {
    fn kind(&self) -> &'static str {
        IMPORT_LEAD
    }

    async fn run(&self, payload: &str) -> Result<(), JobError> {
        let job: ImportLeadPayload = serde_json::from_str(payload)
            .map_err(|e| JobError::Fatal(format!("the payload does not deserialize: {e}")))?;
        let entry = inbox::get(&self.db, &job.inbox_id)
            .await
            .map_err(|e| JobError::Retryable(e.to_string()))?
            .ok_or_else(|| {
                JobError::Fatal(format!("inbox entry {} does not exist", job.inbox_id))
            })?;
        // Processed before (a replayed job), or found invalid: done. An entry whose job died
        // (its result says `failed`) is processed again when the job is replayed.
        let job_died = entry
            .result
            .as_deref()
            .is_some_and(|r| r.contains(r#""outcome":"failed""#));
        if entry.status == InboxStatus::Processed
            || (entry.status == InboxStatus::Failed && !job_died)
        {
            return Ok(());
        }
        let lead = serde_json::from_str::<serde_json::Value>(&entry.payload)
            .map_err(|e| Issue {
                field: "lead".into(),
                code: "invalid_json".into(),
                message: format!("the payload is not JSON: {e}"),
            })
            .and_then(|value| lead_from_json(&value));
        let lead = match lead {
            Ok(lead) => lead,
            Err(issue) => {
                let outcome = Outcome::Invalid {
                    issues: vec![issue],
                };
                inbox::finish(
                    &self.db,
                    &entry.id,
                    InboxStatus::Failed,
                    &result_json(&outcome),
                    self.intake.clock.now(),
                )
                .await
                .map_err(|e| JobError::Retryable(e.to_string()))?;
                return Ok(());
            }
        };
        let outcome = self
            .intake
            .import(
                &lead,
                &job.options,
                &CustomerScope::All,
                self.audit.as_ref(),
                Some(&entry.id),
                None,
            )
            .await
            .map_err(|e| JobError::Retryable(e.to_string()))?;
        tracing::info!(inbox_id = %entry.id, source = %entry.source, outcome = ?outcome_name(&outcome), "Lead imported.");
        Ok(())
    }

    async fn dead(&self, payload: &str, error: &str) {
        // The raw delivery stays in the inbox, marked failed with the reason: replaying the
        // job from the dead letter processes it again (a failed entry is not reprocessed
        // otherwise).
        let Ok(job) = serde_json::from_str::<ImportLeadPayload>(payload) else {
            return;
        };
        let result = serde_json::json!({ "outcome": "failed", "error": error }).to_string();
        if let Err(e) = inbox::finish(
            &self.db,
            &job.inbox_id,
            InboxStatus::Failed,
            &result,
            self.intake.clock.now(),
        )
        .await
        {
            tracing::error!(error = %e, inbox_id = %job.inbox_id, "Cannot mark the inbox entry failed.");
        }
    }
}

fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Created { .. } => "created",
        Outcome::Updated { .. } => "updated",
        Outcome::Merged { .. } => "merged",
        Outcome::Skipped { .. } => "skipped",
        Outcome::Invalid { .. } => "invalid",
    }
}
