//! GDPR over GraphQL: the consent ledger (`consents`, `recordConsent`), the right of access
//! (`exportCustomerData`: one JSON document with everything held about the person) and the
//! right to erasure (`eraseCustomer`). Each is audited; the audit entries of an erasure and an
//! export carry no personal data (the reason of an erasure is the operator's words).

use super::{ApiContext, access::visible_customer, customers::parse_id};
use crate::{
    audit::Auditor,
    error::{ApiError, invalid},
};
use async_graphql::{Context, Enum, ID, InputObject, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use crm_domain::{
    ConsentRecord, CustomerId,
    consent::{ConsentChannel, ConsentPurpose, ConsentSource, LawfulBasis},
};
use crm_store::gdpr::{self, NewConsent, StoredConsent};
use serde_json::json;

/// Longest erasure reason accepted (characters).
const REASON_MAX_CHARS: usize = 500;
/// Longest consent evidence accepted (characters).
const EVIDENCE_MAX_CHARS: usize = 500;

/// How a person may be contacted.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "crm_domain::consent::ConsentChannel")]
pub(crate) enum Channel {
    /// Email.
    Email,
    /// Phone calls, AI voice calls included.
    Call,
    /// Text messages.
    Sms,
}

/// What the contact is for.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "crm_domain::consent::ConsentPurpose")]
pub(crate) enum Purpose {
    /// Marketing (the nurture sequence, offers).
    Marketing,
    /// Following up a conversation (sales follow-up, calls back).
    SalesFollowUp,
}

/// The lawful basis (GDPR Art. 6).
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "crm_domain::consent::LawfulBasis")]
pub(crate) enum Basis {
    /// Consent (Art. 6(1)(a)).
    Consent,
    /// A contract (Art. 6(1)(b)).
    Contract,
    /// Legitimate interest (Art. 6(1)(f)).
    LegitimateInterest,
}

/// One entry of the consent ledger.
#[derive(Debug)]
pub(crate) struct Consent(StoredConsent);

#[Object]
impl Consent {
    /// `email`, `call`, `sms`.
    async fn channel(&self) -> &str {
        &self.0.channel
    }
    /// `marketing`, `sales_follow_up`.
    async fn purpose(&self) -> &str {
        &self.0.purpose
    }
    /// `consent`, `contract`, `legitimate_interest`.
    async fn basis(&self) -> &str {
        &self.0.basis
    }
    /// Granted (true) or withdrawn (false).
    async fn granted(&self) -> bool {
        self.0.granted
    }
    /// `form`, `import`, `call`, `api`, `unsubscribe`, `system`.
    async fn source(&self) -> &str {
        &self.0.source
    }
    /// What proves it (a form submission, a webhook id, a request id, a call id).
    async fn evidence(&self) -> Option<&str> {
        self.0.evidence.as_deref()
    }
    /// Who recorded it.
    async fn recorded_by(&self) -> &str {
        &self.0.recorded_by
    }
    /// When.
    async fn at(&self) -> DateTime<Utc> {
        self.0.at_utc()
    }
}

/// A grant or withdrawal to record.
#[derive(InputObject, Debug)]
pub(crate) struct RecordConsentInput {
    /// Whose.
    customer_id: ID,
    /// The channel.
    channel: Channel,
    /// The purpose.
    purpose: Purpose,
    /// The lawful basis (default consent).
    #[graphql(default_with = "Basis::Consent")]
    basis: Basis,
    /// Granted (true) or withdrawn (false).
    granted: bool,
    /// What proves it (a form submission, a recording, a signed document).
    evidence: Option<String>,
}

/// A customer's erasure.
#[derive(SimpleObject, Debug)]
pub(crate) struct Erasure {
    /// Whose.
    customer_id: ID,
    /// Why.
    reason: String,
    /// Who erased.
    erased_by: String,
    /// When.
    erased_at: DateTime<Utc>,
    /// True when the customer was erased before (this request changed nothing).
    already_erased: bool,
    /// Calls whose provider is asked to delete its data (`voice-delete` jobs).
    provider_deletions: i64,
}

async fn ledger(api: &ApiContext, id: CustomerId) -> Result<Vec<Consent>, ApiError> {
    Ok(gdpr::consents(&api.db, id)
        .await?
        .into_iter()
        .map(Consent)
        .collect())
}

#[derive(Default, Debug)]
pub(crate) struct GdprQuery;

#[Object]
impl GdprQuery {
    /// The consent ledger of a customer, oldest first.
    async fn consents(
        &self,
        ctx: &Context<'_>,
        customer_id: ID,
    ) -> async_graphql::Result<Vec<Consent>> {
        let api = ctx.data::<ApiContext>()?;
        let id = parse_id::<CustomerId>("customerId", &customer_id)?;
        visible_customer(ctx, id).await?;
        Ok(ledger(api, id).await?)
    }

    /// Everything held about a person, as one machine-readable JSON document (GDPR Art. 15
    /// and 20): profile, consents, interactions, calls with transcripts, emails, scores with
    /// reasons, tasks, pipeline runs, nurture, audit entries about them. The export is audited.
    async fn export_customer_data(
        &self,
        ctx: &Context<'_>,
        customer_id: ID,
    ) -> async_graphql::Result<Json<serde_json::Value>> {
        let api = ctx.data::<ApiContext>()?;
        let id = parse_id::<CustomerId>("customerId", &customer_id)?;
        visible_customer(ctx, id).await?;
        let now = api.clock.now();
        let document = gdpr::export(&api.db, id, now)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound {
                entity: "customer",
                id: id.to_string(),
            })?;
        let entry = Auditor::of(ctx)?.entry(
            "customer.export",
            "customer",
            id.to_string(),
            serde_json::Map::new(),
        );
        gdpr::record_audit(&api.db, &entry, now)
            .await
            .map_err(ApiError::from)?;
        Ok(Json(document))
    }
}

#[derive(Default, Debug)]
pub(crate) struct GdprMutation;

#[Object]
impl GdprMutation {
    /// Records a grant or withdrawal in the consent ledger; the customer's consent flag for
    /// that channel follows at once (a withdrawal blocks queued calls and scheduled marketing
    /// emails from then on). Returns the whole ledger.
    async fn record_consent(
        &self,
        ctx: &Context<'_>,
        input: RecordConsentInput,
    ) -> async_graphql::Result<Vec<Consent>> {
        let api = ctx.data::<ApiContext>()?;
        let id = parse_id::<CustomerId>("input.customerId", &input.customer_id)?;
        let evidence = input
            .evidence
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty());
        if evidence
            .as_ref()
            .is_some_and(|e| e.chars().count() > EVIDENCE_MAX_CHARS)
        {
            return Err(invalid(
                "input.evidence",
                "too_long",
                format!("at most {EVIDENCE_MAX_CHARS} characters"),
            )
            .into());
        }
        visible_customer(ctx, id).await?;
        let auditor = Auditor::of(ctx)?;
        let record = ConsentRecord {
            channel: ConsentChannel::from(input.channel),
            purpose: ConsentPurpose::from(input.purpose),
            basis: LawfulBasis::from(input.basis),
            granted: input.granted,
            source: ConsentSource::Api,
            evidence,
        };
        let mut changed = serde_json::Map::new();
        changed.insert(
            format!("consent.{}.{}", record.channel, record.purpose),
            json!({ "after": if record.granted { "granted" } else { "withdrawn" } }),
        );
        let entry = auditor.entry("customer.consent", "customer", id.to_string(), changed);
        let new = NewConsent {
            customer_id: id,
            record,
            recorded_by: auditor.actor(),
        };
        gdpr::record_consent(&api.db, &new, Some(entry), api.clock.now())
            .await
            .map_err(ApiError::from)?;
        Ok(ledger(api, id).await?)
    }

    /// Erases a person (GDPR Art. 17): their personal data is replaced by tombstones
    /// everywhere it lives, in one transaction; non-personal facts stay, so reports keep their
    /// totals; their email and phone are kept only as keyed hashes, so they are never imported
    /// or contacted again; providers holding their calls are asked to delete them. Erasing an
    /// erased customer returns the first erasure (`alreadyErased`); an unknown one is
    /// `NOT_FOUND`.
    async fn erase_customer(
        &self,
        ctx: &Context<'_>,
        customer_id: ID,
        reason: String,
    ) -> async_graphql::Result<Erasure> {
        let api = ctx.data::<ApiContext>()?;
        let id = parse_id::<CustomerId>("customerId", &customer_id)?;
        let reason = reason.trim().to_owned();
        if reason.is_empty() {
            return Err(invalid("reason", "required", "say why the customer is erased").into());
        }
        if reason.chars().count() > REASON_MAX_CHARS {
            return Err(invalid(
                "reason",
                "too_long",
                format!("at most {REASON_MAX_CHARS} characters"),
            )
            .into());
        }
        visible_customer(ctx, id).await?;
        let auditor = Auditor::of(ctx)?;
        let mut changed = serde_json::Map::new();
        changed.insert("reason".to_owned(), json!({ "after": reason }));
        let entry = auditor.entry("customer.erase", "customer", id.to_string(), changed);
        let erasure = api
            .gdpr
            .erase(id, &reason, &auditor.actor(), entry)
            .await
            .map_err(ApiError::from)?;
        Ok(Erasure {
            customer_id: ID(erasure.customer_id),
            reason: erasure.reason,
            erased_by: erasure.erased_by,
            erased_at: erasure.erased_at,
            already_erased: erasure.already_erased,
            provider_deletions: erasure.provider_deletions,
        })
    }
}
