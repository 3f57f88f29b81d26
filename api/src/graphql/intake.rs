//! `/import-lead` over GraphQL: `importLeads` takes a list of leads and reports, per lead, what
//! became of it.

use super::{ApiContext, access::customer_scope};
use crate::{audit::Auditor, error::ApiError};
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject, Upload};
use crm_domain::{
    CustomerScope,
    lead::{LeadField, LeadValue, RawLead},
};
use crm_plugins::{
    import_file::{Format, IMPORT_FILE, ImportFilePayload, StoredOptions, scope_to_string},
    intake::{ImportOptions, Issue, Outcome, owned_by},
};
use crm_store::imports;

/// What to do with a lead whose email or phone belongs to an existing customer.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug, Default)]
#[graphql(remote = "crm_plugins::intake::OnDuplicate")]
pub(crate) enum OnDuplicate {
    /// Leave the customer as it is.
    Skip,
    /// Overwrite its fields with the lead's non-empty ones; add tags.
    Update,
    /// Fill only its empty fields; add tags.
    #[default]
    Merge,
}

/// One lead. Either `name` or `firstName`/`lastName`; an email or a phone.
#[derive(InputObject, Debug, Default)]
pub(crate) struct LeadInput {
    name: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    company: Option<String>,
    /// Where it came from (default: the import's `source`).
    source: Option<String>,
    /// Language tag (`de`, `bs`, `sr-Latn`).
    language: Option<String>,
    /// ISO 3166-1 alpha-2; national phone numbers are read in it.
    country: Option<String>,
    /// IANA time zone.
    time_zone: Option<String>,
    tags: Option<Vec<String>>,
    notes: Option<String>,
    /// The owning user (scoped callers may only name themselves).
    owner: Option<String>,
    consent_email: Option<bool>,
    consent_call: Option<bool>,
    consent_sms: Option<bool>,
}

impl LeadInput {
    fn into_raw(self) -> RawLead {
        let mut lead = RawLead::default();
        let mut text = |field: LeadField, value: Option<String>| {
            if let Some(value) = value {
                lead.fields.insert(field, LeadValue::Text(value));
            }
        };
        text(LeadField::Name, self.name);
        text(LeadField::FirstName, self.first_name);
        text(LeadField::LastName, self.last_name);
        text(LeadField::Email, self.email);
        text(LeadField::Phone, self.phone);
        text(LeadField::Company, self.company);
        text(LeadField::Source, self.source);
        text(LeadField::Language, self.language);
        text(LeadField::Country, self.country);
        text(LeadField::TimeZone, self.time_zone);
        text(LeadField::Notes, self.notes);
        text(LeadField::Owner, self.owner);
        if let Some(tags) = self.tags {
            lead.fields.insert(LeadField::Tags, LeadValue::List(tags));
        }
        for (field, value) in [
            (LeadField::ConsentEmail, self.consent_email),
            (LeadField::ConsentCall, self.consent_call),
            (LeadField::ConsentSms, self.consent_sms),
        ] {
            if let Some(value) = value {
                lead.fields.insert(field, LeadValue::Bool(value));
            }
        }
        lead
    }
}

/// How to import.
#[derive(InputObject, Debug, Default)]
pub(crate) struct ImportOptionsInput {
    /// Report what would happen; change nothing.
    #[graphql(default = false)]
    dry_run: bool,
    /// Leads that duplicate a customer (same normalized email or phone).
    #[graphql(default)]
    on_duplicate: OnDuplicate,
    /// Region for national phone numbers of leads without a country.
    default_country: Option<String>,
    /// Source of leads that name none (default `import`).
    source: Option<String>,
    /// Tags added to every lead.
    #[graphql(default)]
    tags: Vec<String>,
}

impl From<ImportOptionsInput> for ImportOptions {
    fn from(input: ImportOptionsInput) -> Self {
        Self {
            dry_run: input.dry_run,
            on_duplicate: input.on_duplicate.into(),
            default_country: input.default_country,
            source: Some(input.source.unwrap_or_else(|| "import".to_owned())),
            tags: input.tags,
        }
    }
}

/// What became of a lead.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ImportOutcome {
    /// A new customer.
    Created,
    /// An existing customer, overwritten.
    Updated,
    /// An existing customer, its empty fields filled.
    Merged,
    /// A duplicate left alone.
    Skipped,
    /// Not importable: see the issues.
    Invalid,
}

/// A problem with one field of one lead.
#[derive(SimpleObject, Debug, Clone)]
pub(crate) struct ImportIssue {
    /// The lead's position, from 1.
    row: i32,
    /// The field (`email`, `phone`, …), or `lead`.
    field: String,
    /// Stable code (`invalid_email`, `contact_required`, …).
    code: String,
    /// In words.
    message: String,
}

/// One lead of an import.
#[derive(SimpleObject, Debug)]
pub(crate) struct ImportRow {
    /// Its position, from 1.
    row: i32,
    /// What became of it.
    outcome: ImportOutcome,
    /// The customer it created or changed (or duplicates).
    customer_id: Option<ID>,
    /// Why it was skipped.
    reason: Option<String>,
    /// What is wrong with it.
    issues: Vec<ImportIssue>,
}

/// What an import did.
#[derive(SimpleObject, Debug, Default)]
#[graphql(complex)]
pub(crate) struct ImportReport {
    /// Nothing was changed.
    dry_run: bool,
    /// Leads read.
    total: i32,
    /// New customers.
    created: i32,
    /// Customers overwritten.
    updated: i32,
    /// Customers filled.
    merged: i32,
    /// Duplicates left alone.
    skipped: i32,
    /// Leads not importable.
    invalid: i32,
    /// Every lead, in order.
    rows: Vec<ImportRow>,
}

#[async_graphql::ComplexObject]
impl ImportReport {
    /// The issues as CSV (`row,field,code,message`), to download.
    async fn issues_csv(&self) -> String {
        let mut out = String::from(crate::imports::ISSUES_HEADER);
        for issue in self.rows.iter().flat_map(|r| &r.issues) {
            out.push_str(&crate::imports::issue_line(
                issue.row,
                &issue.field,
                &issue.code,
                &issue.message,
            ));
        }
        out
    }
}

/// The largest issues CSV returned in one response; page through `issues` for the rest.
const MAX_ISSUES_CSV_BYTES: usize = 16 * 1024 * 1024;

impl ImportReport {
    pub(crate) fn add(&mut self, row: i32, outcome: Outcome, visible: bool) {
        self.total += 1;
        let issue = |i: Issue| ImportIssue {
            row,
            field: i.field,
            code: i.code,
            message: i.message,
        };
        let id = |id: crm_domain::CustomerId| visible.then(|| ID(id.to_string()));
        let (kind, customer_id, reason, issues) = match outcome {
            Outcome::Created { customer_id } => {
                (ImportOutcome::Created, id(customer_id), None, vec![])
            }
            Outcome::Updated { customer_id } => {
                (ImportOutcome::Updated, id(customer_id), None, vec![])
            }
            Outcome::Merged { customer_id } => {
                (ImportOutcome::Merged, id(customer_id), None, vec![])
            }
            Outcome::Skipped {
                customer_id,
                reason,
            } => (
                ImportOutcome::Skipped,
                id(customer_id),
                Some(reason),
                vec![],
            ),
            Outcome::Invalid { issues } => (
                ImportOutcome::Invalid,
                None,
                None,
                issues.into_iter().map(issue).collect(),
            ),
        };
        match kind {
            ImportOutcome::Created => self.created += 1,
            ImportOutcome::Updated => self.updated += 1,
            ImportOutcome::Merged => self.merged += 1,
            ImportOutcome::Skipped => self.skipped += 1,
            ImportOutcome::Invalid => self.invalid += 1,
        }
        self.rows.push(ImportRow {
            row,
            outcome: kind,
            customer_id,
            reason,
            issues,
        });
    }
}

/// Intake mutations.
#[derive(Default, Debug)]
pub(crate) struct IntakeMutation;

#[Object]
impl IntakeMutation {
    /// `/import-lead` for a list: validates and normalizes each lead, merges duplicates of
    /// existing customers (and of earlier leads of the same list) as `options.onDuplicate` says,
    /// starts the lead chain for every lead created or changed, and reports each lead. At most
    /// `intake.max_leads_per_request` leads per call.
    async fn import_leads(
        &self,
        ctx: &Context<'_>,
        leads: Vec<LeadInput>,
        options: Option<ImportOptionsInput>,
    ) -> async_graphql::Result<ImportReport> {
        let api = ctx.data::<ApiContext>()?;
        if leads.len() > api.max_import {
            return Err(crate::error::invalid(
                "leads",
                "too_many",
                format!(
                    "at most {} leads per call; send the rest in further calls or as a file",
                    api.max_import
                ),
            )
            .into());
        }
        let options: ImportOptions = options.unwrap_or_default().into();
        let scope = customer_scope(ctx)?;
        let auditor = Auditor::of(ctx)?;
        let mut report = ImportReport {
            dry_run: options.dry_run,
            ..ImportReport::default()
        };
        for (n, input) in leads.into_iter().enumerate() {
            let row = i32::try_from(n + 1).unwrap_or(i32::MAX);
            let mut lead = input.into_raw();
            let outcome = match owned_by(&mut lead, &scope) {
                Some(issue) => Outcome::Invalid {
                    issues: vec![issue],
                },
                None => {
                    api.intake
                        .import_reported(&lead, &options, &scope, &auditor, None)
                        .await
                }
            };
            report.add(row, outcome, true);
        }
        tracing::info!(
            total = report.total,
            created = report.created,
            merged = report.merged,
            invalid = report.invalid,
            dry_run = report.dry_run,
            "Leads imported."
        );
        Ok(report)
    }
}

/// A column of a lead file and the field it holds.
#[derive(InputObject, Debug)]
pub(crate) struct ColumnMapping {
    /// The column's header, as in the file.
    column: String,
    /// The lead field (`email`, `phone`, `firstName`, … or a synonym).
    field: String,
}

/// A file import of leads, run as a job.
#[derive(Debug)]
pub(crate) struct LeadImportNode(imports::Import);

#[Object(name = "LeadImport")]
impl LeadImportNode {
    /// Identity.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// The uploaded file's name.
    async fn file_name(&self) -> &str {
        &self.0.file_name
    }
    /// `csv`, `json` or `ndjson`.
    async fn format(&self) -> &str {
        &self.0.format
    }
    /// `queued`, `running`, `completed` or `failed`.
    async fn status(&self) -> &str {
        &self.0.status
    }
    /// Rows handled so far.
    async fn rows_done(&self) -> i32 {
        self.0.rows_done
    }
    /// New customers.
    async fn created(&self) -> i32 {
        self.0.counts.created
    }
    /// Customers overwritten.
    async fn updated(&self) -> i32 {
        self.0.counts.updated
    }
    /// Customers filled.
    async fn merged(&self) -> i32 {
        self.0.counts.merged
    }
    /// Duplicates left alone.
    async fn skipped(&self) -> i32 {
        self.0.counts.skipped
    }
    /// Rows not importable.
    async fn invalid(&self) -> i32 {
        self.0.counts.invalid
    }
    /// Why the file as a whole could not be imported (rows before it were).
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// Started.
    async fn created_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.created_at
    }
    /// Ended.
    async fn finished_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0.finished_at
    }
    /// The rows' problems in row order, `first` of them after row `afterRow`.
    async fn issues(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 100)] first: i32,
        after_row: Option<i32>,
    ) -> async_graphql::Result<Vec<ImportIssue>> {
        let api = ctx.data::<ApiContext>()?;
        let limit = usize::try_from(first.clamp(1, 10_000)).unwrap_or(100);
        let after = after_row.map(|row| (row, i32::MAX));
        let found = imports::issues(&api.db, &self.0.id, after, limit)
            .await
            .map_err(ApiError::from)?;
        Ok(found.into_iter().map(|(_, i)| import_issue(i)).collect())
    }
    /// All problems as CSV (`row,field,code,message`), to download.
    async fn issues_csv(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        let api = ctx.data::<ApiContext>()?;
        let mut out = String::from(crate::imports::ISSUES_HEADER);
        let mut after = None;
        loop {
            let page = imports::issues(&api.db, &self.0.id, after, 5_000)
                .await
                .map_err(ApiError::from)?;
            for (_, issue) in &page {
                out.push_str(&crate::imports::issue_line(
                    issue.row,
                    &issue.field,
                    &issue.code,
                    &issue.message,
                ));
            }
            match page.last() {
                Some((position, _)) if page.len() == 5_000 => after = Some(*position),
                _ => return Ok(out),
            }
            if out.len() > MAX_ISSUES_CSV_BYTES {
                out.push_str("…,,truncated,the list goes on: page through issues(afterRow)\n");
                return Ok(out);
            }
        }
    }
}

fn import_issue(i: imports::RowIssue) -> ImportIssue {
    ImportIssue {
        row: i.row,
        field: i.field,
        code: i.code,
        message: i.message,
    }
}

/// Who started an import may read it; so may roles that see every customer.
async fn visible_import(ctx: &Context<'_>, id: &str) -> async_graphql::Result<imports::Import> {
    let api = ctx.data::<ApiContext>()?;
    let principal = ctx.data::<crm_domain::Principal>()?;
    let scope = customer_scope(ctx)?;
    match imports::get(&api.db, id).await.map_err(ApiError::from)? {
        Some(import) if scope == CustomerScope::All || import.created_by == principal.subject => {
            Ok(import)
        }
        _ => Err(ApiError::NotFound {
            entity: "import",
            id: id.to_owned(),
        }
        .into()),
    }
}

/// Intake queries.
#[derive(Default, Debug)]
pub(crate) struct IntakeQuery;

#[Object]
impl IntakeQuery {
    /// A file import: its progress, counts and problems.
    async fn lead_import(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<LeadImportNode> {
        Ok(LeadImportNode(visible_import(ctx, id.as_str()).await?))
    }
}

/// File import mutations.
#[derive(Default, Debug)]
pub(crate) struct FileImportMutation;

#[Object]
impl FileImportMutation {
    /// `/import-lead` for a file (CSV with `,` `;` or tab, UTF-8 with or without BOM; a JSON
    /// array; NDJSON), sent as a GraphQL multipart upload. The file is stored and imported by
    /// a job, row by row and never whole in memory; follow it with `leadImport(id)`. Headers
    /// are recognized in English, German and Bosnian/Serbian; `mapping` names others.
    async fn import_leads_file(
        &self,
        ctx: &Context<'_>,
        file: Upload,
        options: Option<ImportOptionsInput>,
        mapping: Option<Vec<ColumnMapping>>,
    ) -> async_graphql::Result<LeadImportNode> {
        let api = ctx.data::<ApiContext>()?;
        let principal = ctx.data::<crm_domain::Principal>()?;
        let scope = customer_scope(ctx)?;
        let upload = file.value(ctx)?;
        let mapping: Vec<(String, String)> = mapping
            .unwrap_or_default()
            .into_iter()
            .map(|m| (m.column, m.field))
            .collect();
        if let Some((_, field)) = mapping
            .iter()
            .find(|(_, f)| LeadField::from_header(f).is_none())
        {
            return Err(crate::error::invalid(
                "mapping",
                "unknown_field",
                format!("`{field}` is not a lead field"),
            )
            .into());
        }
        let id = uuid::Uuid::now_v7().to_string();
        let dir = api.import_dir.clone();
        let target = dir.join(&id);
        let file_name = upload.filename.clone();
        let content_type = upload.content_type.clone();
        // Copy the upload (a temporary file) into the import directory, keeping its head to
        // recognize the format.
        let head = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            use std::io::{Read as _, Seek as _};
            std::fs::create_dir_all(&dir)?;
            let mut content = upload.content;
            let mut head = vec![0u8; 512];
            let n = content.read(&mut head)?;
            head.truncate(n);
            content.rewind()?;
            let mut out = std::fs::File::create(&target)?;
            std::io::copy(&mut content, &mut out)?;
            out.sync_all()?;
            Ok(head)
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(format!("cannot store the upload: {e}")))?;
        let Some(format) = Format::detect(&file_name, content_type.as_deref(), &head) else {
            let _ = std::fs::remove_file(api.import_dir.join(&id));
            return Err(crate::error::invalid(
                "file",
                "unknown_format",
                "the file is not CSV, JSON or NDJSON (UTF-8)",
            )
            .into());
        };
        let stored = StoredOptions {
            options: options.unwrap_or_default().into(),
            mapping,
        };
        let now = api.clock.now();
        let new = imports::NewImport {
            id: id.clone(),
            file_name,
            format: format.as_str().to_owned(),
            options: serde_json::to_string(&stored).unwrap_or_default(),
            created_by: principal.subject.clone(),
            owner_scope: scope_to_string(&scope),
        };
        let job = crm_store::jobs::NewJob {
            kind: IMPORT_FILE.to_owned(),
            payload: serde_json::to_string(&ImportFilePayload {
                import_id: id.clone(),
            })
            .unwrap_or_default(),
            dedupe_key: Some(format!("import:{id}")),
            priority: 5,
            run_at: now,
            max_attempts: 3,
        };
        let import = imports::create(&api.db, new, job, now)
            .await
            .map_err(ApiError::from)?;
        tracing::info!(import_id = %import.id, format = %import.format, "Lead file import queued.");
        Ok(LeadImportNode(import))
    }
}
