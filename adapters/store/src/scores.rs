//! The score history: every scoring of a lead with the config version that produced it; the
//! newest is the lead's current score.

use crate::{
    audit::{AppendAudit as _, NewAuditEntry},
    db::{Db, with_conn},
    error::{StoreError, StoreResult},
    rows::{from_db_time, to_db_time},
    schema::lead_scores,
};
use chrono::{DateTime, NaiveDateTime, Utc};
use crm_domain::{CustomerId, LeadScore, ScoreId};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

/// A stored scoring.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredScore {
    /// Identity.
    pub id: ScoreId,
    /// The lead.
    pub customer_id: CustomerId,
    /// The result.
    pub result: LeadScore,
    /// The version of the scoring config that produced it.
    pub config_version: String,
    /// What caused it (`manual`, `pipeline`, `interaction`, `rescore`, …).
    pub cause: String,
    /// When.
    pub scored_at: DateTime<Utc>,
}

impl StoredScore {
    /// Whether `result` is the same as this one from the same config (a re-scoring that changed
    /// nothing): the same score, priority, tags, next action and contributions. The words of a
    /// reason (`no activity for 23 days`) may drift while its points stay; they do not count.
    pub fn same_as(&self, result: &LeadScore, config_version: &str) -> bool {
        let (a, b) = (&self.result, result);
        self.config_version == config_version
            && (a.score, a.priority, a.next_action) == (b.score, b.priority, b.next_action)
            && a.tags == b.tags
            && a.reasons.len() == b.reasons.len()
            && a.reasons
                .iter()
                .zip(&b.reasons)
                .all(|(x, y)| (&x.group, &x.rule, x.points) == (&y.group, &y.rule, y.points))
    }
}

/// A scoring to record.
#[derive(Debug, Clone)]
pub struct NewScore {
    /// Identity.
    pub id: ScoreId,
    /// The lead.
    pub customer_id: CustomerId,
    /// The result.
    pub result: LeadScore,
    /// The config version.
    pub config_version: String,
    /// What caused it.
    pub cause: String,
    /// When.
    pub scored_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = lead_scores)]
pub(crate) struct ScoreRow {
    id: String,
    customer_id: String,
    score: i32,
    priority: String,
    tags: String,
    next_action: String,
    reasons: String,
    config_version: String,
    cause: String,
    scored_at: NaiveDateTime,
}

impl From<&NewScore> for ScoreRow {
    fn from(new: &NewScore) -> Self {
        Self {
            id: new.id.to_string(),
            customer_id: new.customer_id.to_string(),
            score: i32::from(new.result.score),
            priority: new.result.priority.as_str().to_owned(),
            tags: serde_json::to_string(&new.result.tags).unwrap_or_else(|_| "[]".into()),
            next_action: new.result.next_action.as_str().to_owned(),
            reasons: serde_json::to_string(&new.result.reasons).unwrap_or_else(|_| "[]".into()),
            config_version: new.config_version.clone(),
            cause: new.cause.clone(),
            scored_at: to_db_time(new.scored_at),
        }
    }
}

impl From<&NewScore> for StoredScore {
    fn from(new: &NewScore) -> Self {
        Self {
            id: new.id,
            customer_id: new.customer_id,
            result: new.result.clone(),
            config_version: new.config_version.clone(),
            cause: new.cause.clone(),
            scored_at: to_db_time(new.scored_at).and_utc(),
        }
    }
}

impl TryFrom<ScoreRow> for StoredScore {
    type Error = StoreError;

    fn try_from(row: ScoreRow) -> Result<Self, Self::Error> {
        let corrupt = |reason: String| StoreError::Corrupt {
            entity: "lead score",
            id: row.id.clone(),
            reason,
        };
        Ok(StoredScore {
            id: row.id.parse().map_err(|e| corrupt(format!("id: {e}")))?,
            customer_id: row
                .customer_id
                .parse()
                .map_err(|e| corrupt(format!("customer_id: {e}")))?,
            result: LeadScore {
                score: u8::try_from(row.score.clamp(0, 100)).unwrap_or_default(),
                priority: row.priority.parse().map_err(corrupt)?,
                tags: serde_json::from_str(&row.tags).map_err(|e| corrupt(format!("tags: {e}")))?,
                next_action: row.next_action.parse().map_err(corrupt)?,
                reasons: serde_json::from_str(&row.reasons)
                    .map_err(|e| corrupt(format!("reasons: {e}")))?,
            },
            config_version: row.config_version,
            cause: row.cause,
            scored_at: from_db_time(row.scored_at),
        })
    }
}

/// Records a scoring (with its audit entry, in one transaction).
pub async fn record(
    db: &Db,
    new: &NewScore,
    audit: Option<NewAuditEntry>,
) -> StoreResult<StoredScore> {
    let row = ScoreRow::from(new);
    with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            diesel::insert_into(lead_scores::table)
                .values(&row)
                .execute(conn)
                .await?;
            if let Some(entry) = &audit {
                conn.append_audit(entry).await?;
            }
            Ok::<_, diesel::result::Error>(())
        })
        .await?
    });
    Ok(StoredScore::from(new))
}

/// The newest scoring of each of these leads (those never scored are missing).
pub async fn latest_for_customers(
    db: &Db,
    customers: &[CustomerId],
) -> StoreResult<Vec<StoredScore>> {
    // One index probe per lead: `lead_scores_customer_idx` serves "newest of one customer".
    let mut latest = Vec::with_capacity(customers.len());
    let keys: Vec<String> = customers.iter().map(ToString::to_string).collect();
    let rows: Vec<ScoreRow> = with_conn!(db, |conn| {
        let mut rows = Vec::with_capacity(keys.len());
        for key in &keys {
            let row: Option<ScoreRow> = lead_scores::table
                .filter(lead_scores::customer_id.eq(key))
                .order_by(lead_scores::id.desc())
                .select(ScoreRow::as_select())
                .first(conn)
                .await
                .optional()?;
            rows.extend(row);
        }
        rows
    });
    for row in rows {
        latest.push(StoredScore::try_from(row)?);
    }
    Ok(latest)
}

/// A lead's scorings newest first, `limit + 1` of them before the scoring `before`.
pub async fn history(
    db: &Db,
    customer: CustomerId,
    before: Option<ScoreId>,
    limit: usize,
) -> StoreResult<Vec<StoredScore>> {
    let probe = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
    let key = customer.to_string();
    let rows: Vec<ScoreRow> = with_conn!(db, |conn| {
        let mut query = lead_scores::table
            .filter(lead_scores::customer_id.eq(&key))
            .select(ScoreRow::as_select())
            .into_boxed();
        if let Some(before) = before {
            query = query.filter(lead_scores::id.lt(before.to_string()));
        }
        query
            .order_by(lead_scores::id.desc())
            .limit(probe)
            .load(conn)
            .await?
    });
    rows.into_iter().map(StoredScore::try_from).collect()
}
