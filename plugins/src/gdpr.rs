//! GDPR agents: erasure (with provider-side deletion of the person's calls), and retention.
//!
//! - [`Gdpr::erase`] erases a customer in one transaction (see `crm_store::gdpr::erase`) and
//!   enqueues, in that transaction, one `voice-delete` job per call a provider holds; then the
//!   email sender forgets its copies of the person's emails (the outbox's `.eml` files).
//! - `voice-delete` asks the call's provider to delete its data (Vapi `DELETE /call/{id}`,
//!   Retell `DELETE /v2/delete-call/{id}`); deletion is idempotent, so an unavailable provider
//!   is simply asked again later. A provider without deletion (Bland) is recorded as
//!   `unsupported`; the provider's call id is forgotten once the deletion is over.
//! - `gdpr-retention` (schedule it daily) removes transcripts older than
//!   `gdpr.retention.transcripts_days` and erases leads inactive for
//!   `gdpr.retention.inactive_leads_days` (0: keep forever), and records what it did in the
//!   audit log (counts only).

use crate::{
    email::Mailer,
    runner::{JobError, JobHandler, RetryPolicy},
    voice::Voice,
};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use crm_domain::{CallDeletion, Clock, CustomerId, ProviderError, ProviderKind};
use crm_store::{
    Db, StoreError, StoreResult,
    audit::{ActorKind, NewAuditEntry},
    gdpr::{self, Erasure},
    jobs::NewJob,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Asks a provider to delete a call's data.
pub const VOICE_DELETE: &str = "voice-delete";
/// Applies the retention periods.
pub const GDPR_RETENTION: &str = "gdpr-retention";

/// How long data is kept (`gdpr.retention`), in days; 0 keeps it forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Call transcripts (text and segments).
    pub transcripts_days: u32,
    /// Leads with no change, interaction or call.
    pub inactive_leads_days: u32,
}

/// The GDPR agent.
#[derive(Debug, Clone)]
pub struct Gdpr {
    db: Db,
    clock: Arc<dyn Clock>,
    voice: Voice,
    mailer: Mailer,
    retention: Retention,
}

/// The payload of `voice-delete`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeletePayload {
    /// Our call id.
    pub call_id: String,
}

fn delete_job(call_id: &str, now: DateTime<Utc>) -> NewJob {
    NewJob {
        kind: VOICE_DELETE.to_owned(),
        payload: serde_json::json!({ "call_id": call_id }).to_string(),
        dedupe_key: Some(format!("voice-delete:{call_id}")),
        priority: 0,
        run_at: now,
        max_attempts: 10,
    }
}

impl Gdpr {
    /// The agent.
    pub fn new(
        db: Db,
        clock: Arc<dyn Clock>,
        voice: Voice,
        mailer: Mailer,
        retention: Retention,
    ) -> Self {
        Self {
            db,
            clock,
            voice,
            mailer,
            retention,
        }
    }

    /// Erases `customer` (atomic, idempotent); `audit` is the entry that records it.
    pub async fn erase(
        &self,
        customer: CustomerId,
        reason: &str,
        erased_by: &str,
        audit: NewAuditEntry,
    ) -> StoreResult<Erasure> {
        let now = self.clock.now();
        let erasure = gdpr::erase(
            &self.db,
            customer,
            reason,
            erased_by,
            audit,
            |call_id| delete_job(call_id, now),
            now,
        )
        .await?;
        // The sender's copies of their emails (the outbox's files) go too.
        self.mailer.forget(&erasure.email_ids).await;
        Ok(erasure)
    }

    async fn delete_at_provider(&self, call_id: &str) -> Result<(), JobError> {
        let retry = |e: StoreError| JobError::Retryable(e.to_string());
        let now = self.clock.now();
        let Some(pending) = gdpr::provider_deletion(&self.db, call_id)
            .await
            .map_err(retry)?
        else {
            return Err(JobError::Fatal(format!(
                "no deletion is pending for call {call_id}"
            )));
        };
        if pending.status != "pending" {
            return Ok(()); // Done before: a replay.
        }
        let finish = |status: &'static str, error: Option<String>| {
            let db = self.db.clone();
            let call_id = call_id.to_owned();
            async move {
                gdpr::finish_provider_deletion(&db, &call_id, status, error, now)
                    .await
                    .map_err(retry)
            }
        };
        let Some(provider_call_id) = pending.provider_call_id else {
            return finish("not_found", None).await;
        };
        let provider = pending
            .provider
            .parse::<ProviderKind>()
            .ok()
            .and_then(|kind| self.voice.provider(kind).cloned());
        let Some(provider) = provider else {
            return finish(
                "failed",
                Some(format!(
                    "the provider {} is not configured any more; delete the call there by hand",
                    pending.provider
                )),
            )
            .await;
        };
        match provider.delete_call(&provider_call_id).await {
            Ok(CallDeletion::Deleted) => finish("deleted", None).await,
            Ok(CallDeletion::NotFound) => finish("not_found", None).await,
            Ok(CallDeletion::Unsupported) => finish("unsupported", None).await,
            Err(e @ (ProviderError::Unavailable(_) | ProviderError::Unknown(_))) => {
                Err(JobError::Retryable(e.to_string()))
            }
            Err(e @ (ProviderError::Rejected { .. } | ProviderError::Malformed(_))) => {
                finish("failed", Some(e.to_string())).await
            }
        }
    }

    async fn apply_retention(&self) -> Result<(), JobError> {
        let retry = |e: StoreError| JobError::Retryable(e.to_string());
        let now = self.clock.now();
        let mut transcripts = 0;
        if self.retention.transcripts_days > 0 {
            let before = now - Duration::days(i64::from(self.retention.transcripts_days));
            transcripts = gdpr::expire_transcripts(&self.db, before)
                .await
                .map_err(retry)?;
        }
        let mut erased = 0_usize;
        if self.retention.inactive_leads_days > 0 {
            let before = now - Duration::days(i64::from(self.retention.inactive_leads_days));
            loop {
                let batch = gdpr::inactive_leads(&self.db, before, 200)
                    .await
                    .map_err(retry)?;
                if batch.is_empty() {
                    break;
                }
                for customer in batch {
                    let reason = format!(
                        "retention: inactive for {} days",
                        self.retention.inactive_leads_days
                    );
                    self.erase(
                        customer,
                        &reason,
                        GDPR_RETENTION,
                        system_audit(now, "customer.erase", Some(customer), &reason),
                    )
                    .await
                    .map_err(retry)?;
                    erased += 1;
                }
            }
        }
        tracing::info!(
            transcripts_removed = transcripts,
            leads_erased = erased,
            "Retention applied."
        );
        let summary = serde_json::json!({
            "transcripts_removed": { "after": transcripts },
            "leads_erased": { "after": erased },
        });
        gdpr::record_audit(
            &self.db,
            &NewAuditEntry {
                payload: Some(summary.to_string()),
                ..system_audit(now, "gdpr.retention", None, "")
            },
            now,
        )
        .await
        .map_err(retry)
    }
}

/// An audit entry of the server itself (`actor` = the job kind).
pub fn system_audit(
    at: DateTime<Utc>,
    action: &str,
    customer: Option<CustomerId>,
    reason: &str,
) -> NewAuditEntry {
    NewAuditEntry {
        at,
        actor_kind: ActorKind::System,
        actor: GDPR_RETENTION.to_owned(),
        action: action.to_owned(),
        target_type: customer.map(|_| "customer".to_owned()),
        target_id: customer.map(|c| c.to_string()),
        request_id: None,
        payload: (!reason.is_empty())
            .then(|| serde_json::json!({ "reason": { "after": reason } }).to_string()),
    }
}

/// `voice-delete`.
#[derive(Debug)]
pub struct VoiceDelete(pub Gdpr);

#[async_trait]
impl JobHandler for VoiceDelete {
    fn kind(&self) -> &'static str {
        VOICE_DELETE
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            base: chrono::Duration::minutes(5),
            ..RetryPolicy::default()
        }
    }

    async fn run(&self, payload: &str) -> Result<(), JobError> {
        let payload: DeletePayload = serde_json::from_str(payload)
            .map_err(|e| JobError::Fatal(format!("the payload does not deserialize: {e}")))?;
        self.0.delete_at_provider(&payload.call_id).await
    }

    async fn dead(&self, payload: &str, error: &str) {
        if let Ok(payload) = serde_json::from_str::<DeletePayload>(payload) {
            let _ = gdpr::finish_provider_deletion(
                &self.0.db,
                &payload.call_id,
                "failed",
                Some(format!("gave up after retries: {error}")),
                self.0.clock.now(),
            )
            .await;
        }
    }
}

/// `gdpr-retention`.
#[derive(Debug)]
pub struct GdprRetention(pub Gdpr);

#[async_trait]
impl JobHandler for GdprRetention {
    fn kind(&self) -> &'static str {
        GDPR_RETENTION
    }

    async fn run(&self, _payload: &str) -> Result<(), JobError> {
        self.0.apply_retention().await
    }
}
