//! The report agent (`/generate-report`): counts a period's figures for one scope of
//! customers, renders them (HTML and PDF, `crm-reports`), stores the report, and for the
//! scheduled `generate-report` job mails it to the configured recipients.
//!
//! - Each recipient gets the report of **their own** scope (`reports.recipients`, resolved
//!   from their role by the policy when the server starts): a sales recipient's report never
//!   counts another owner's leads. Recipients with the same scope and language share one report.
//! - The job is idempotent: a report is stored under a key of (period, days, scope, language),
//!   so a retry finds it instead of making another, and each delivery is claimed before its
//!   email goes out, so a retry never mails twice. A send whose outcome is unknown is not
//!   repeated (except by the outbox, which writes each id once).
//! - A schedule with no recipients still stores the report (for every customer), so it can be
//!   downloaded; the log says nobody was mailed.

use crate::{
    email::Mailer,
    runner::{JobError, JobHandler, RetryPolicy},
    templates::ReportVars,
};
use async_trait::async_trait;
use chrono::NaiveDate;
use chrono_tz::Tz;
use crm_domain::{
    Attachment, Clock, CustomerScope, FieldError, Language, Mailbox, SendError,
    report::{ManualMinutes, Report, ReportPeriod, ReportRange},
};
use crm_store::{
    Db, StoreError,
    audit::{ActorKind, NewAuditEntry},
    reports::{self, Claim, NewReport, Stored, scope_key},
};
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, sync::Arc};

/// The job kind.
pub const GENERATE_REPORT: &str = "generate-report";

/// Who receives scheduled reports, with the scope their role allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// Their address.
    pub email: String,
    /// Their name, for the greeting and the `To:` header.
    pub name: Option<String>,
    /// Their role (`manager`, `sales` …), for the log.
    pub role: String,
    /// The customers their reports cover.
    pub scope: CustomerScope,
    /// The language of their reports (default: `reports.language`).
    pub language: Option<Language>,
}

/// How reports are made.
#[derive(Debug, Clone)]
pub struct ReportSettings {
    /// The zone days are counted in.
    pub time_zone: Tz,
    /// The default language of labels and mails.
    pub language: Language,
    /// Minutes each step took by hand.
    pub manual_minutes: ManualMinutes,
    /// Who gets scheduled reports.
    pub recipients: Vec<Recipient>,
    /// Our public base URL, for links to reports.
    pub public_url: String,
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The request is invalid (a reversed range, a `to` on a daily report …).
    #[error("{0}")]
    Invalid(FieldError),
    /// Rendering failed.
    #[error("the report could not be rendered: {0}")]
    Render(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The report agent.
#[derive(Debug, Clone)]
pub struct Reporter {
    db: Db,
    clock: Arc<dyn Clock>,
    settings: Arc<ReportSettings>,
    mailer: Mailer,
}

/// A scope in words, for the report's header.
pub fn describe(scope: &CustomerScope) -> String {
    match scope {
        CustomerScope::All => "all customers".to_owned(),
        CustomerScope::OwnedBy(subject) => format!("customers of {subject}"),
        CustomerScope::OwnedByOrUnassigned(subject) => {
            format!("customers of {subject} and unassigned ones")
        }
    }
}

impl Reporter {
    /// The agent.
    pub fn new(db: Db, clock: Arc<dyn Clock>, settings: ReportSettings, mailer: Mailer) -> Self {
        Self {
            db,
            clock,
            settings: Arc::new(settings),
            mailer,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &ReportSettings {
        &self.settings
    }

    /// The range of `period` (see [`ReportRange::resolve`]), "today" being the current day in
    /// the report zone.
    pub fn range(
        &self,
        period: ReportPeriod,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
    ) -> Result<ReportRange, ReportError> {
        let today = self
            .clock
            .now()
            .with_timezone(&self.settings.time_zone)
            .date_naive();
        ReportRange::resolve(period, from, to, today, self.settings.time_zone)
            .map_err(ReportError::Invalid)
    }

    /// Counts the figures of `range` and of the period before it for `scope`.
    pub async fn compute(
        &self,
        range: ReportRange,
        scope: &CustomerScope,
        language: Option<Language>,
    ) -> Result<Report, ReportError> {
        let previous_range = range.previous();
        let current = reports::figures(&self.db, &range, scope, true).await?;
        let previous = reports::figures(&self.db, &previous_range, scope, false).await?;
        Ok(Report {
            range,
            previous_range,
            current,
            previous,
            manual_minutes: self.settings.manual_minutes.clone(),
            generated_at: self.clock.now(),
            scope: describe(scope),
            language: language.unwrap_or_else(|| self.settings.language.clone()),
        })
    }

    /// Renders `report` (off the async threads) and stores it for `scope`, with the audit
    /// entry `audit(id)` in the same transaction. With `dedupe`, a report stored before under
    /// that key is returned instead.
    pub async fn store(
        &self,
        report: Report,
        scope: &CustomerScope,
        trigger: &str,
        dedupe: Option<String>,
        requested_by: &str,
        audit: impl FnOnce(&uuid::Uuid) -> Option<NewAuditEntry>,
    ) -> Result<Stored, ReportError> {
        let id = uuid::Uuid::now_v7();
        let audit = audit(&id);
        let figures = serde_json::json!({
            "current": report.current,
            "previous": report.previous,
        })
        .to_string();
        let language = report.language.to_string();
        let range = report.range;
        let created_at = report.generated_at;
        let (html, pdf) = tokio::task::spawn_blocking(move || {
            let html = crm_reports::html(&report);
            crm_reports::pdf(&report).map(|pdf| (html, pdf))
        })
        .await
        .map_err(|e| ReportError::Render(e.to_string()))?
        .map_err(|e| ReportError::Render(e.to_string()))?;
        Ok(reports::insert(
            &self.db,
            &NewReport {
                id,
                range,
                scope: scope.clone(),
                language,
                trigger: trigger.to_owned(),
                dedupe_key: dedupe,
                requested_by: requested_by.to_owned(),
                figures,
                html,
                pdf,
                created_at,
            },
            audit,
        )
        .await?)
    }

    /// A link to a stored report's rendering (`html` or `pdf`).
    pub fn url(&self, id: &uuid::Uuid, extension: &str) -> String {
        format!(
            "{}/reports/{id}.{extension}",
            self.settings.public_url.trim_end_matches('/')
        )
    }

    /// Mails `report` to `recipient` once: claimed first, so a retry does not mail twice.
    async fn deliver(&self, report: &Stored, recipient: &Recipient) -> Result<(), JobError> {
        let retry = |e: StoreError| JobError::Retryable(e.to_string());
        let now = self.clock.now();
        match reports::claim_delivery(&self.db, report.id, &recipient.email, now)
            .await
            .map_err(retry)?
        {
            Claim::AlreadySent => return Ok(()),
            Claim::Interrupted if !self.mailer.idempotent_sender() => {
                tracing::warn!(report = %report.id, role = %recipient.role,
                    "a report mail was interrupted while sending; not sent again, to avoid a second copy");
                return reports::finish_delivery(
                    &self.db,
                    report.id,
                    &recipient.email,
                    Err("interrupted while sending; not sent again".to_owned()),
                    now,
                )
                .await
                .map_err(retry);
            }
            Claim::Claimed | Claim::Interrupted => {}
        }
        let Some((_, pdf)) = reports::rendering(&self.db, report.id, reports::Format::Pdf)
            .await
            .map_err(retry)?
        else {
            return Err(JobError::Fatal(format!("report {} vanished", report.id)));
        };
        let language = recipient
            .language
            .clone()
            .unwrap_or_else(|| self.settings.language.clone());
        let vars = ReportVars {
            period: if report.first_day == report.last_day {
                report.first_day.format("%d.%m.%Y").to_string()
            } else {
                format!(
                    "{} – {}",
                    report.first_day.format("%d.%m.%Y"),
                    report.last_day.format("%d.%m.%Y")
                )
            },
            from: Some(report.first_day.format("%d.%m.%Y").to_string()),
            to: Some(report.last_day.format("%d.%m.%Y").to_string()),
            url: Some(self.url(&report.id, "html")),
        };
        let attachment = Attachment {
            filename: format!("report-{}.pdf", report.first_day),
            content_type: "application/pdf".to_owned(),
            content: pdf,
        };
        // One id per (report, recipient): the provider's idempotency key.
        let id = uuid::Uuid::new_v5(
            &report.id,
            format!("delivery:{}", recipient.email).as_bytes(),
        )
        .to_string();
        let to = Mailbox {
            email: recipient.email.clone(),
            name: recipient.name.clone(),
        };
        let sent = self
            .mailer
            .send_report(&id, to, language.primary(), vars, vec![attachment])
            .await;
        let now = self.clock.now();
        let outcome = sent.as_ref().map(|_| ()).map_err(ToString::to_string);
        reports::finish_delivery(&self.db, report.id, &recipient.email, outcome, now)
            .await
            .map_err(retry)?;
        match sent {
            Ok(()) => Ok(()),
            // Failed for now: the failed delivery may be claimed again by the retry.
            Err(SendError::Unavailable(e)) => Err(JobError::Retryable(e)),
            // Refused for good, or perhaps sent: recorded, not repeated.
            Err(e @ (SendError::Rejected(_) | SendError::Unknown(_))) => {
                tracing::warn!(report = %report.id, role = %recipient.role, error = %e,
                    "a report mail was not delivered");
                Ok(())
            }
        }
    }
}

/// The audit entry of a generated report (`report.generate`): the period and scope, no
/// figures.
pub fn report_audit(
    at: chrono::DateTime<chrono::Utc>,
    actor_kind: ActorKind,
    actor: &str,
    request_id: Option<String>,
    id: &uuid::Uuid,
    range: &ReportRange,
    scope: &CustomerScope,
) -> NewAuditEntry {
    NewAuditEntry {
        at,
        actor_kind,
        actor: actor.to_owned(),
        action: "report.generate".to_owned(),
        target_type: Some("report".to_owned()),
        target_id: Some(id.to_string()),
        request_id,
        payload: Some(
            serde_json::json!({
                "period": {"after": range.period.as_str()},
                "first_day": {"after": range.first_day.to_string()},
                "last_day": {"after": range.last_day.to_string()},
                "scope": {"after": scope_key(scope)},
            })
            .to_string(),
        ),
    }
}

/// The payload of `generate-report` (`[[jobs.schedules]] payload`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GeneratePayload {
    /// `daily`, `weekly`, `monthly` or `custom`.
    pub period: String,
    /// Any day of the period (default: today in the report zone); a custom period's first day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<NaiveDate>,
    /// A custom period's last day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<NaiveDate>,
    /// Only the recipients with these roles (default: every recipient).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
}

/// `generate-report`.
#[derive(Debug)]
pub struct GenerateReport(pub Reporter);

#[async_trait]
impl JobHandler for GenerateReport {
    fn kind(&self) -> &'static str {
        GENERATE_REPORT
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            base: chrono::Duration::seconds(60),
            ..RetryPolicy::default()
        }
    }

    async fn run(&self, payload: &str) -> Result<(), JobError> {
        let payload: GeneratePayload = serde_json::from_str(payload)
            .map_err(|e| JobError::Fatal(format!("the payload does not deserialize: {e}")))?;
        let period: ReportPeriod = payload
            .period
            .parse()
            .map_err(|e: FieldError| JobError::Fatal(e.message))?;
        let reporter = &self.0;
        let range = reporter
            .range(period, payload.from, payload.to)
            .map_err(|e| JobError::Fatal(e.to_string()))?;
        let settings = reporter.settings();
        let recipients: Vec<&Recipient> = settings
            .recipients
            .iter()
            .filter(|r| {
                payload
                    .roles
                    .as_ref()
                    .is_none_or(|roles| roles.iter().any(|role| role == &r.role))
            })
            .collect();
        if recipients.is_empty() {
            tracing::warn!(%period, first_day = %range.first_day,
                "no report recipients configured for this schedule: the report is stored, nobody is mailed");
        }
        // Recipients with the same scope and language share one report.
        let mut groups: BTreeMap<(String, String), (CustomerScope, Language, Vec<&Recipient>)> =
            BTreeMap::new();
        if recipients.is_empty() {
            groups.insert(
                (
                    scope_key(&CustomerScope::All),
                    settings.language.to_string(),
                ),
                (CustomerScope::All, settings.language.clone(), Vec::new()),
            );
        }
        for recipient in recipients {
            let language = recipient
                .language
                .clone()
                .unwrap_or_else(|| settings.language.clone());
            groups
                .entry((scope_key(&recipient.scope), language.to_string()))
                .or_insert_with(|| (recipient.scope.clone(), language, Vec::new()))
                .2
                .push(recipient);
        }
        let mut retry = None;
        for ((scope_name, language_name), (scope, language, members)) in groups {
            let dedupe = format!(
                "schedule:{period}:{}:{}:{scope_name}:{language_name}",
                range.first_day, range.last_day
            );
            let report = reporter
                .compute(range, &scope, Some(language))
                .await
                .map_err(|e| JobError::Retryable(e.to_string()))?;
            let at = reporter.clock.now();
            let stored = reporter
                .store(
                    report,
                    &scope,
                    "schedule",
                    Some(dedupe),
                    GENERATE_REPORT,
                    |id| {
                        Some(report_audit(
                            at,
                            ActorKind::System,
                            GENERATE_REPORT,
                            None,
                            id,
                            &range,
                            &scope,
                        ))
                    },
                )
                .await
                .map_err(|e| match e {
                    ReportError::Store(e) => JobError::Retryable(e.to_string()),
                    e => JobError::Fatal(e.to_string()),
                })?;
            for recipient in members {
                if let Err(e) = reporter.deliver(&stored, recipient).await {
                    // Deliver to everyone else first; the retry resumes the failed ones.
                    tracing::warn!(report = %stored.id, role = %recipient.role, error = %e,
                        "a report mail failed; will retry");
                    retry = Some(e);
                }
            }
        }
        retry.map_or(Ok(()), Err)
    }
}
