//! The nurture agent (`/nurture-email`): leads under the threshold are enrolled in a sequence of
//! emails with delays (`[email.nurture] steps`). Before every step the lead may leave the
//! sequence: it replied (an inbound email), unsubscribed or bounced (suppressed), withdrew its
//! consent, or a re-score moved its next action away from nurture (then the chain routes it,
//! e.g. to a call). The re-score itself is scheduled by the qualification step
//! (`pipeline.rescore_after_days`).

use crate::{
    email::{Draft, MailError, Mailer},
    pipeline::{Pipeline, StepPayload},
    runner::{JobError, JobHandler, RetryPolicy},
};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use crm_domain::{CustomerId, Direction, InteractionKind, NextAction, RunId};
use crm_store::{
    customers,
    effects::Effect,
    interactions,
    jobs::NewJob,
    nurture::{self, Move},
    pipeline::{self, Advance, StepStatus},
    scores,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The pipeline agent that enrolls a lead.
pub const NURTURE_EMAIL: &str = "nurture-email";
/// Sends one step of the sequence.
pub const NURTURE_SEND: &str = "nurture-send";

/// One step of the sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NurtureStep {
    /// The template.
    pub template: String,
    /// Days after the previous step (after enrollment, for the first).
    pub after_days: u32,
}

/// The default sequence: now, after 3 days, after another 4.
pub fn default_steps() -> Vec<NurtureStep> {
    [("nurture-1", 0), ("nurture-2", 3), ("nurture-3", 4)]
        .into_iter()
        .map(|(template, after_days)| NurtureStep {
            template: template.to_owned(),
            after_days,
        })
        .collect()
}

/// The payload of `nurture-send`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SendStep {
    /// The lead.
    pub customer_id: CustomerId,
    /// The run that enrolled it.
    pub run_id: RunId,
    /// The step's index.
    pub position: i32,
}

fn send_job(step: &SendStep, run_at: DateTime<Utc>) -> NewJob {
    NewJob {
        kind: NURTURE_SEND.to_owned(),
        payload: serde_json::to_string(step).unwrap_or_default(),
        dedupe_key: Some(format!(
            "{NURTURE_SEND}:{}:{}:{}",
            step.customer_id, step.run_id, step.position
        )),
        priority: 0,
        run_at,
        max_attempts: RetryPolicy::default().max_attempts,
    }
}

/// The nurture agent.
#[derive(Debug, Clone)]
pub struct Nurture {
    mailer: Mailer,
    pipeline: Arc<Pipeline>,
    steps: Arc<[NurtureStep]>,
}

fn retryable(error: impl std::fmt::Display) -> JobError {
    JobError::Retryable(error.to_string())
}

impl Nurture {
    /// The agent with `steps`.
    pub fn new(mailer: Mailer, pipeline: Arc<Pipeline>, steps: Vec<NurtureStep>) -> Self {
        Self {
            mailer,
            pipeline,
            steps: steps.into(),
        }
    }

    /// Why the lead leaves the sequence now, if it does.
    async fn exit_reason(
        &self,
        customer_id: CustomerId,
        enrolled_at: DateTime<Utc>,
    ) -> Result<Option<String>, JobError> {
        let db = self.mailer.db();
        let Some(customer) = customers::get(db, customer_id)
            .await
            .map_err(retryable)?
            .filter(|c| c.deleted_at.is_none())
        else {
            return Ok(Some("the customer was deleted".to_owned()));
        };
        let replied = interactions::recent_of(db, customer_id, 50)
            .await
            .map_err(retryable)?
            .into_iter()
            .any(|i| {
                i.kind == InteractionKind::Email
                    && i.direction == Some(Direction::Inbound)
                    && i.occurred_at >= enrolled_at
            });
        if replied {
            return Ok(Some("the lead replied".to_owned()));
        }
        let latest = scores::latest_for_customers(db, &[customer_id])
            .await
            .map_err(retryable)?
            .into_iter()
            .next();
        if let Some(latest) = latest
            && latest.result.next_action != NextAction::Nurture
        {
            return Ok(Some(format!(
                "re-scored to {} (score {}): the chain routes it on",
                latest.result.next_action.as_str(),
                latest.result.score
            )));
        }
        match self.mailer.blocked(&customer, "nurture").await {
            Ok(reason) => Ok(reason),
            Err(MailError::Store(error)) => Err(retryable(error)),
            Err(other) => Ok(Some(other.to_string())),
        }
    }
}

/// `nurture-email`: enrolls the step's lead and moves the run on.
#[derive(Debug)]
pub struct NurtureEmail(pub Nurture);

#[async_trait]
impl JobHandler for NurtureEmail {
    fn kind(&self) -> &'static str {
        NURTURE_EMAIL
    }

    async fn run(&self, payload: &str) -> Result<(), JobError> {
        let step: StepPayload = serde_json::from_str(payload)
            .map_err(|e| JobError::Fatal(format!("the payload does not deserialize: {e}")))?;
        let agent = &self.0;
        let db = agent.mailer.db();
        let now = agent.mailer.now();
        let first = agent
            .steps
            .first()
            .ok_or_else(|| JobError::Fatal("the nurture sequence has no steps".to_owned()))?;
        let due = now + Duration::days(i64::from(first.after_days));
        // A lead walks the sequence once: a later re-score that routes it to nurture again
        // does not start it over.
        let earlier = nurture::latest_of(db, &step.customer_id.to_string())
            .await
            .map_err(retryable)?
            .filter(|e| e.run_id != step.run_id.to_string());
        let job = send_job(
            &SendStep {
                customer_id: step.customer_id,
                run_id: step.run_id,
                position: 0,
            },
            due,
        );
        if earlier.is_none() {
            nurture::enroll(
                db,
                &step.customer_id.to_string(),
                &step.run_id.to_string(),
                due,
                &[Effect::Job(job)],
                now,
            )
            .await
            .map_err(retryable)?;
        }
        let run = pipeline::get(db, step.run_id)
            .await
            .map_err(retryable)?
            .ok_or_else(|| JobError::Fatal(format!("run {} does not exist", step.run_id)))?;
        let detail = serde_json::json!({
            "enrolled": earlier.is_none(),
            "earlier": earlier.as_ref().map(|e| serde_json::json!({
                "status": e.status, "exitReason": e.exit_reason, "enrolledAt": e.enrolled(),
            })),
            "steps": agent.steps.iter().map(|s| &s.template).collect::<Vec<_>>(),
        });
        let (next, status) = agent.pipeline.after_agent(
            run.branch.as_deref(),
            NURTURE_EMAIL,
            step.customer_id,
            step.run_id,
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
                NURTURE_EMAIL,
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

/// `nurture-send`.
#[derive(Debug)]
pub struct NurtureSend(pub Nurture);

#[async_trait]
impl JobHandler for NurtureSend {
    fn kind(&self) -> &'static str {
        NURTURE_SEND
    }

    async fn run(&self, payload: &str) -> Result<(), JobError> {
        let step: SendStep = serde_json::from_str(payload)
            .map_err(|e| JobError::Fatal(format!("the payload does not deserialize: {e}")))?;
        let agent = &self.0;
        let db = agent.mailer.db();
        let now = agent.mailer.now();
        let key = (step.customer_id.to_string(), step.run_id.to_string());
        let Some(enrollment) = nurture::get(db, &key.0, &key.1).await.map_err(retryable)? else {
            return Err(JobError::Fatal("no such enrollment".to_owned()));
        };
        if enrollment.status != "active" || enrollment.position != step.position {
            return Ok(()); // A replay, or it left the sequence.
        }
        let keys = (key.0.as_str(), key.1.as_str());
        if let Some(reason) = agent
            .exit_reason(step.customer_id, enrollment.enrolled())
            .await?
        {
            tracing::info!(customer_id = %step.customer_id, %reason, "Left the nurture sequence.");
            nurture::advance(db, keys, step.position, Move::Exited(&reason), &[], now)
                .await
                .map_err(retryable)?;
            return Ok(());
        }
        let index = usize::try_from(step.position).unwrap_or(usize::MAX);
        let Some(current) = agent.steps.get(index) else {
            nurture::advance(db, keys, step.position, Move::Completed, &[], now)
                .await
                .map_err(retryable)?;
            return Ok(());
        };
        let draft = Draft {
            template: current.template.clone(),
            category: "nurture".to_owned(),
            dedupe: Some(format!("nurture:{}", step.run_id)),
            ..Draft::default()
        };
        match agent
            .mailer
            .queue(step.customer_id, &draft, "nurture", None)
            .await
        {
            Ok(_) => {}
            Err(MailError::Store(error)) => return Err(retryable(error)),
            Err(other) => {
                let reason = other.to_string();
                nurture::advance(db, keys, step.position, Move::Exited(&reason), &[], now)
                    .await
                    .map_err(retryable)?;
                return Ok(());
            }
        }
        match agent.steps.get(index + 1) {
            Some(next) => {
                let due = now + Duration::days(i64::from(next.after_days));
                let job = send_job(
                    &SendStep {
                        position: step.position + 1,
                        ..step.clone()
                    },
                    due,
                );
                nurture::advance(
                    db,
                    keys,
                    step.position,
                    Move::Next(due),
                    &[Effect::Job(job)],
                    now,
                )
                .await
                .map_err(retryable)?;
            }
            None => {
                nurture::advance(db, keys, step.position, Move::Completed, &[], now)
                    .await
                    .map_err(retryable)?;
            }
        }
        Ok(())
    }
}
