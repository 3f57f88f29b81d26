//! The follow-up agent (`/follow-up`): after a lead's call, an email personalized with the
//! call's outcome (with an appointment proposal as an ICS attachment when the call produced
//! one) and a task for the lead's owner. Every step is logged: the email as an interaction when
//! it is sent, the task in the tasks list, the step's detail in the pipeline run.

use crate::{
    email::{Draft, MailError, Mailer},
    pipeline::{Pipeline, StepPayload},
    runner::{JobError, JobHandler},
    templates::{AppointmentVars, CallVars},
};
use async_trait::async_trait;
use chrono::{DateTime, Datelike as _, Duration, NaiveTime, TimeZone as _, Utc, Weekday};
use crm_domain::{Customer, calling};
use crm_store::{
    StoreError, calls, customers,
    pipeline::{self, Advance, StepStatus},
    tasks::{self, NewTask, TaskId},
};
use std::sync::Arc;

/// The job kind and pipeline agent.
pub const FOLLOW_UP: &str = "follow-up";

/// The template the follow-up email uses.
pub const TEMPLATE: &str = "follow-up";

/// The follow-up agent.
#[derive(Debug)]
pub struct FollowUp {
    mailer: Mailer,
    pipeline: Arc<Pipeline>,
    default_time_zone: chrono_tz::Tz,
}

impl FollowUp {
    /// The agent.
    pub fn new(mailer: Mailer, pipeline: Arc<Pipeline>, default_time_zone: chrono_tz::Tz) -> Self {
        Self {
            mailer,
            pipeline,
            default_time_zone,
        }
    }
}

/// The lead's time zone: its own, else its phone's country's, else the default.
fn time_zone(customer: &Customer, default: chrono_tz::Tz) -> chrono_tz::Tz {
    let country = customer.phone.as_ref().and_then(|p| p.country());
    calling::time_zone_for(
        country.as_ref().map(|c| c.as_str()),
        customer.time_zone.as_ref().map(|t| t.tz()),
        default,
    )
}

/// The appointment a call's `appointment` outcome proposes: the next working day at 10:00 in
/// the lead's time zone.
pub fn proposed_appointment(now: DateTime<Utc>, tz: chrono_tz::Tz) -> DateTime<Utc> {
    let mut day = now.with_timezone(&tz).date_naive() + Duration::days(1);
    while matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
        day += Duration::days(1);
    }
    let ten = day.and_time(NaiveTime::from_hms_opt(10, 0, 0).unwrap_or_default());
    tz.from_local_datetime(&ten)
        .earliest()
        .map_or(now + Duration::days(1), |t| t.with_timezone(&Utc))
}

fn ics_time(at: DateTime<Utc>) -> String {
    at.format("%Y%m%dT%H%M%SZ").to_string()
}

fn ics_text(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace(';', "\\;")
        .replace(',', "\\,")
        .replace('\n', "\\n")
}

/// An iCalendar invitation (RFC 5545) for a 30-minute appointment.
pub fn invitation(
    uid: &str,
    start: DateTime<Utc>,
    summary: &str,
    organizer: &str,
    attendee: &str,
    now: DateTime<Utc>,
) -> Vec<u8> {
    let lines = [
        "BEGIN:VCALENDAR".to_owned(),
        "VERSION:2.0".to_owned(),
        "PRODID:-//crm//follow-up//EN".to_owned(),
        "METHOD:REQUEST".to_owned(),
        "BEGIN:VEVENT".to_owned(),
        format!("UID:{uid}"),
        format!("DTSTAMP:{}", ics_time(now)),
        format!("DTSTART:{}", ics_time(start)),
        format!("DTEND:{}", ics_time(start + Duration::minutes(30))),
        format!("SUMMARY:{}", ics_text(summary)),
        format!("ORGANIZER:mailto:{organizer}"),
        format!("ATTENDEE;RSVP=TRUE:mailto:{attendee}"),
        "END:VEVENT".to_owned(),
        "END:VCALENDAR".to_owned(),
    ];
    let mut out = lines.join("\r\n");
    out.push_str("\r\n");
    out.into_bytes()
}

/// The attachments of a stored email: the follow-up's invitation when its call proposed an
/// appointment (rebuilt from what the email recorded, so nothing binary is stored).
pub async fn attachments_for(
    mailer: &Mailer,
    email_id: &str,
) -> Result<Vec<crm_domain::Attachment>, JobError> {
    let Some(row) = crm_store::emails::get(mailer.db(), email_id)
        .await
        .map_err(|e| JobError::Retryable(e.to_string()))?
    else {
        return Ok(Vec::new());
    };
    let (_, call): (
        std::collections::BTreeMap<String, serde_json::Value>,
        Option<CallVars>,
    ) = serde_json::from_str(&row.variables).unwrap_or_default();
    let Some(start) = call
        .as_ref()
        .and_then(|c| c.appointment.as_ref())
        .and_then(|a| a.url.as_deref())
        .and_then(|u| u.strip_prefix("at:"))
        .and_then(|t| t.parse::<DateTime<Utc>>().ok())
    else {
        return Ok(Vec::new());
    };
    let ics = invitation(
        &format!("{email_id}@crm"),
        start,
        &row.subject,
        &mailer.sender_address(),
        &row.to_email,
        row.created(),
    );
    Ok(vec![crm_domain::Attachment {
        filename: "appointment.ics".to_owned(),
        content_type: "text/calendar; method=REQUEST; charset=UTF-8".to_owned(),
        content: ics,
    }])
}

fn retryable(error: impl std::fmt::Display) -> JobError {
    JobError::Retryable(error.to_string())
}

#[async_trait]
impl JobHandler for FollowUp {
    fn kind(&self) -> &'static str {
        FOLLOW_UP
    }

    async fn run(&self, payload: &str) -> Result<(), JobError> {
        let step: StepPayload = serde_json::from_str(payload)
            .map_err(|e| JobError::Fatal(format!("the payload does not deserialize: {e}")))?;
        let db = self.mailer.db();
        let now = self.mailer.now();
        let run = pipeline::get(db, step.run_id)
            .await
            .map_err(retryable)?
            .ok_or_else(|| JobError::Fatal(format!("run {} does not exist", step.run_id)))?;
        let customer = customers::get(db, step.customer_id)
            .await
            .map_err(retryable)?
            .filter(|c| c.deleted_at.is_none());
        let mut detail = serde_json::Map::new();
        if let Some(customer) = &customer {
            // The run's call: its last attempt.
            let call = calls::attempts(db, calls::Attempts::Run(run.id))
                .await
                .map_err(retryable)?
                .pop();
            let tz = time_zone(customer, self.default_time_zone);
            let outcome = call.as_ref().and_then(|c| {
                c.outcome
                    .clone()
                    .or(c.disposition.map(|d| d.as_str().to_owned()))
            });
            let appointment =
                (outcome.as_deref() == Some("appointment")).then(|| proposed_appointment(now, tz));
            let language = customer
                .language
                .as_ref()
                .map_or("en", |l| l.primary())
                .to_owned();
            let call_vars = call.as_ref().map(|c| CallVars {
                summary: c.summary.clone(),
                outcome: outcome.clone(),
                disposition: c.disposition.map(|d| d.as_str().to_owned()),
                appointment: appointment.map(|at| AppointmentVars {
                    url: Some(format!("at:{}", at.to_rfc3339())),
                    ..AppointmentVars::at(at.with_timezone(&tz).naive_local(), &language)
                }),
                duration_seconds: c.duration_secs.map(|d| d.max(0.0).round() as u64),
                agent: Some(c.agent.clone()),
            });
            // The email (when policy allows).
            let draft = Draft {
                template: TEMPLATE.to_owned(),
                category: "follow-up".to_owned(),
                variables: Default::default(),
                call: call_vars,
                call_id: call.as_ref().map(|c| c.id.to_string()),
                step: Some(step.clone()),
                dedupe: None,
            };
            match self
                .mailer
                .queue(customer.id, &draft, "pipeline", None)
                .await
            {
                Ok(email) => {
                    detail.insert("emailId".into(), email.id.into());
                    detail.insert(
                        "appointment".into(),
                        appointment.map(|a| a.to_rfc3339()).into(),
                    );
                }
                Err(MailError::Store(error)) => return Err(retryable(error)),
                Err(other) => {
                    detail.insert("emailSkipped".into(), other.to_string().into());
                }
            }
            // The task for the owner.
            let title = match (&outcome, appointment) {
                (_, Some(at)) => format!(
                    "Confirm the appointment with {} ({})",
                    customer.name,
                    at.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z")
                ),
                (Some(outcome), None) => format!(
                    "Follow up with {} after the call ({})",
                    customer.name,
                    outcome.replace('_', " ")
                ),
                (None, None) => format!("Follow up with {}", customer.name),
            };
            let task = NewTask {
                id: TaskId::new(),
                customer_id: customer.id,
                title: title.chars().take(300).collect(),
                notes: call.as_ref().and_then(|c| c.summary.clone()),
                due_at: Some(
                    appointment.map_or(now + Duration::days(1), |at| at - Duration::hours(1)),
                ),
                assignee: customer.owner.clone(),
                call_id: call.as_ref().map(|c| c.id),
                created_by: "pipeline".to_owned(),
            };
            let task = tasks::insert(db, &task, None, now)
                .await
                .map_err(|e: StoreError| retryable(e))?;
            detail.insert("taskId".into(), task.id.to_string().into());
        } else {
            detail.insert("skipped".into(), "the customer was deleted".into());
        }
        let detail = serde_json::Value::Object(detail);
        let (next, status) = self.pipeline.after_agent(
            run.branch.as_deref(),
            FOLLOW_UP,
            step.customer_id,
            run.id,
            now,
        );
        let advance = Advance {
            step_id: step.step_id,
            run_id: step.run_id,
            detail: Some(detail.to_string()),
            score: None,
            next,
            status,
            branch: None,
            effects: vec![pipeline::event(
                step.run_id,
                step.customer_id,
                FOLLOW_UP,
                StepStatus::Done,
                status,
                detail,
            )],
        };
        pipeline::advance(db, advance, now)
            .await
            .map_err(retryable)?;
        Ok(())
    }
}
