//! Duplicates: `findDuplicates` scores look-alike customers (name and company, fuzzy, across
//! spellings and scripts) and says why; `mergeCustomers` merges them by a survivorship rule —
//! never silently, always audited.

use super::{
    ApiContext,
    access::{customer_scope, visible_customer},
    customers::{CustomerNode, parse_id},
};
use crate::{audit::Auditor, error::ApiError};
use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use crm_domain::{
    Customer, CustomerId,
    similarity::{jaro_winkler, normalize_company, normalize_name},
};
use crm_store::customers;
use std::collections::HashSet;

/// A customer that may be the same person.
#[derive(SimpleObject, Debug)]
pub(crate) struct DuplicateCandidate {
    /// The look-alike.
    customer: CustomerNode,
    /// 0–1: how alike (name, and company when both have one).
    score: f64,
    /// Why it matched (`name 0.97`, `company 0.93`, `same email domain firma.de`).
    reasons: Vec<String>,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// How alike two customers are, with the reasons.
fn likeness(a: &Customer, b: &Customer) -> (f64, Vec<String>) {
    let name = jaro_winkler(&normalize_name(&a.name), &normalize_name(&b.name));
    let mut reasons = vec![format!("name {:.2}", name)];
    let score = match (&a.company, &b.company) {
        (Some(x), Some(y)) => {
            let company = jaro_winkler(&normalize_company(x), &normalize_company(y));
            reasons.push(format!("company {:.2}", company));
            0.75 * name + 0.25 * company
        }
        _ => name,
    };
    if let (Some(x), Some(y)) = (&a.email, &b.email)
        && x.domain() == y.domain()
    {
        reasons.push(format!("same email domain {}", x.domain()));
    }
    if a.phone.is_some() && a.phone == b.phone {
        reasons.push("same phone".into());
    }
    (round2(score), reasons)
}

/// Which value survives a merge (`intake.survivorship` in config, `survivorship` per merge).
#[derive(
    Enum, Clone, Copy, PartialEq, Eq, Debug, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Survivorship {
    /// The primary's values; its empty fields filled from the duplicates, newest first.
    #[default]
    KeepNonEmpty,
    /// Per field, the value of the most recently changed customer that has one.
    Newest,
    /// The primary's values as they are.
    Primary,
}

/// The merged customer: `primary` with the duplicates' values as `rule` says; tags are
/// united and consents kept if any of them gave one.
fn survive(primary: &Customer, duplicates: &[Customer], rule: Survivorship) -> Customer {
    let mut merged = primary.clone();
    let mut newest_first: Vec<&Customer> = duplicates.iter().collect();
    newest_first.sort_by_key(|c| std::cmp::Reverse(c.updated_at));
    macro_rules! field {
        ($($f:ident),*) => {$(
            merged.$f = match rule {
                Survivorship::Primary => primary.$f.clone(),
                Survivorship::KeepNonEmpty => primary
                    .$f
                    .clone()
                    .or_else(|| newest_first.iter().find_map(|c| c.$f.clone())),
                Survivorship::Newest => std::iter::once(primary)
                    .chain(newest_first.iter().copied())
                    .filter(|c| c.$f.is_some())
                    .max_by_key(|c| c.updated_at)
                    .and_then(|c| c.$f.clone()),
            };
        )*};
    }
    field!(
        email, phone, company, source, language, country, time_zone, owner, notes
    );
    if rule == Survivorship::Newest
        && let Some(newest) = std::iter::once(primary)
            .chain(newest_first.iter().copied())
            .max_by_key(|c| c.updated_at)
    {
        merged.name.clone_from(&newest.name);
        merged.status = newest.status;
    }
    for customer in duplicates {
        for tag in &customer.tags {
            if !merged.tags.contains(tag) {
                merged.tags.push(tag.clone());
            }
        }
        merged.consent_email |= customer.consent_email;
        merged.consent_call |= customer.consent_call;
        merged.consent_sms |= customer.consent_sms;
    }
    merged.tags.sort();
    merged
}

/// What a merge did (or would do).
#[derive(SimpleObject, Debug)]
pub(crate) struct MergeResult {
    /// Nothing was changed.
    dry_run: bool,
    /// The primary as merged.
    customer: CustomerNode,
    /// The duplicates merged into it (soft-deleted, their email and phone cleared).
    merged: Vec<ID>,
    /// Interactions moved to the primary.
    moved_interactions: i32,
    /// Scorings, pipeline runs, calls, emails, tasks and nurture enrolments moved to the
    /// primary.
    moved_history: i32,
}

/// Duplicate queries.
#[derive(Default, Debug)]
pub(crate) struct DuplicateQuery;

#[Object]
impl DuplicateQuery {
    /// Customers that may be the same person as this one, best first: fuzzy on name and
    /// company (Jaro-Winkler over normalized, transliterated tokens), at or above `threshold`
    /// (default `intake.duplicate_threshold`). Never merged by this; see `mergeCustomers`.
    async fn find_duplicates(
        &self,
        ctx: &Context<'_>,
        customer_id: ID,
        threshold: Option<f64>,
        #[graphql(default = 10)] first: i32,
    ) -> async_graphql::Result<Vec<DuplicateCandidate>> {
        let api = ctx.data::<ApiContext>()?;
        let id: CustomerId = parse_id("customerId", &customer_id)?;
        let customer = visible_customer(ctx, id).await?;
        let scope = customer_scope(ctx)?;
        let threshold = threshold.unwrap_or(api.duplicate_threshold).clamp(0.0, 1.0);
        let mut tokens: Vec<String> = normalize_name(&customer.name)
            .split(' ')
            .chain(
                customer
                    .company
                    .as_deref()
                    .map(normalize_company)
                    .iter()
                    .flat_map(|c| c.split(' '))
                    .collect::<Vec<_>>(),
            )
            .filter(|t| t.chars().count() >= 3)
            .map(str::to_owned)
            .collect();
        tokens.sort();
        tokens.dedup();
        let found = customers::candidates(&api.db, &tokens, id, &scope, 500)
            .await
            .map_err(ApiError::from)?;
        let mut candidates: Vec<DuplicateCandidate> = found
            .into_iter()
            .filter(|c| scope.covers(c.owner.as_deref()))
            .filter_map(|c| {
                let (score, reasons) = likeness(&customer, &c);
                (score >= threshold).then_some(DuplicateCandidate {
                    customer: CustomerNode(c),
                    score,
                    reasons,
                })
            })
            .collect();
        candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
        candidates.truncate(usize::try_from(first.clamp(1, 100)).unwrap_or(10));
        Ok(candidates)
    }
}

/// Duplicate mutations.
#[derive(Default, Debug)]
pub(crate) struct DuplicateMutation;

#[Object]
impl DuplicateMutation {
    /// Merges duplicates into a primary customer: field values by `survivorship`, tags united,
    /// interactions, scorings and pipeline runs moved to the primary; the duplicates are
    /// soft-deleted with their email and phone cleared. Audited; `dryRun` shows the result
    /// without changing anything (default false). `survivorship` defaults to
    /// `intake.survivorship` in config (KEEP_NON_EMPTY unless changed).
    /// The merged lead is re-scored.
    async fn merge_customers(
        &self,
        ctx: &Context<'_>,
        primary_id: ID,
        duplicate_ids: Vec<ID>,
        dry_run: Option<bool>,
        survivorship: Option<Survivorship>,
    ) -> async_graphql::Result<MergeResult> {
        let api = ctx.data::<ApiContext>()?;
        let dry_run = dry_run.unwrap_or(false);
        let survivorship = survivorship.unwrap_or(api.survivorship);
        let primary_id: CustomerId = parse_id("primaryId", &primary_id)?;
        let mut ids = Vec::new();
        for (n, raw) in duplicate_ids.iter().enumerate() {
            let id: CustomerId = parse_id(&format!("duplicateIds.{n}"), raw)?;
            if id == primary_id {
                return Err(crate::error::invalid(
                    format!("duplicateIds.{n}"),
                    "is_primary",
                    "the primary cannot be merged into itself",
                )
                .into());
            }
            ids.push(id);
        }
        if ids.is_empty() || ids.len() > 50 {
            return Err(crate::error::invalid(
                "duplicateIds",
                "count",
                "merge 1 to 50 duplicates at once",
            )
            .into());
        }
        let unique: HashSet<CustomerId> = ids.iter().copied().collect();
        if unique.len() != ids.len() {
            return Err(crate::error::invalid(
                "duplicateIds",
                "repeated",
                "a duplicate is named twice",
            )
            .into());
        }
        let live = |c: Customer| {
            if c.deleted_at.is_some() {
                Err(ApiError::NotFound {
                    entity: "customer",
                    id: c.id.to_string(),
                })
            } else {
                Ok(c)
            }
        };
        let primary = live(visible_customer(ctx, primary_id).await?)?;
        let mut duplicates = Vec::with_capacity(ids.len());
        for id in &ids {
            duplicates.push(live(visible_customer(ctx, *id).await?)?);
        }
        let now = api.clock.now();
        let mut merged = survive(&primary, &duplicates, survivorship);
        merged.updated_at = now;
        let merged_ids: Vec<ID> = ids.iter().map(|id| ID(id.to_string())).collect();
        if dry_run {
            return Ok(MergeResult {
                dry_run,
                customer: CustomerNode(merged),
                merged: merged_ids,
                moved_interactions: 0,
                moved_history: 0,
            });
        }
        let auditor = Auditor::of(ctx)?;
        let mut audit: Vec<_> = auditor
            .customer("customer.merge", Some(&primary), &merged)
            .into_iter()
            .collect();
        for duplicate in &duplicates {
            // The contact data the merge clears, so it can be traced (redacted as configured).
            let mut fields = serde_json::Map::new();
            fields.insert("mergedInto".into(), primary_id.to_string().into());
            let shown = |field: &str, value: Option<&str>| -> serde_json::Value {
                match value {
                    None => serde_json::Value::Null,
                    Some(_) if api.redact.iter().any(|r| r == field) => "[redacted]".into(),
                    Some(v) => v.into(),
                }
            };
            fields.insert(
                "email".into(),
                shown("email", duplicate.email.as_ref().map(|e| e.as_str())),
            );
            fields.insert(
                "phone".into(),
                shown("phone", duplicate.phone.as_ref().map(|p| p.as_str())),
            );
            audit.push(auditor.entry(
                "customer.merged_into",
                "customer",
                duplicate.id.to_string(),
                fields,
            ));
        }
        let effects = api.run_for(&merged, "merge");
        let versions: Vec<_> = duplicates.iter().map(|d| (d.id, d.updated_at)).collect();
        let moved = customers::merge(
            &api.db,
            &merged,
            primary.updated_at,
            &versions,
            &audit,
            &effects,
        )
        .await
        .map_err(|e| ApiError::from_store("duplicateIds", e))?;
        tracing::info!(customer_id = %primary_id, merged = ids.len(), "Customers merged.");
        Ok(MergeResult {
            dry_run,
            customer: CustomerNode(merged),
            merged: merged_ids,
            moved_interactions: i32::try_from(moved.interactions).unwrap_or(i32::MAX),
            moved_history: i32::try_from(moved.history).unwrap_or(i32::MAX),
        })
    }
}
