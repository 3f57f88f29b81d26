//! Reports: the [`Figures`] of a period counted over one scope of customers, and the stored
//! reports with their renderings and email deliveries.
//!
//! - Every count is a single aggregate statement over an index on the instant it counts by
//!   (created, scored, dialed, ended, sent …); rows of other tables join their customer, whose
//!   owner a restricted scope filters on, the same row-level rule as every list. Nothing is
//!   counted in memory row by row except small grouped results.
//! - Jobs belong to no customer, so dead jobs are counted only for [`CustomerScope::All`].
//! - A stored report keeps the scope it was made for ([`scope_key`]); whoever reads it later
//!   must be allowed that scope (see [`Stored::visible_to`]).
//! - A report made by a job carries a dedupe key: a retried job finds its report instead of
//!   making a second one. A delivery is claimed (`sending`) before the email goes out.

use crate::{
    Db, StoreError, StoreResult,
    audit::{AppendAudit as _, NewAuditEntry},
    db::with_conn,
    rows::{from_db_time, to_db_time},
    schema::{
        calls, customers, email_events, emails, jobs, lead_scores, nurture_enrollments,
        pipeline_runs, report_deliveries, reports, tasks,
    },
};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use crm_domain::{
    CustomerScope,
    report::{Count, Figures, ProviderFigures, ReportPeriod, ReportRange},
};
use diesel::{
    dsl::{count, count_star, max, sum},
    prelude::*,
};
use diesel_async::{AsyncConnection as _, RunQueryDsl};
use std::collections::BTreeMap;
use uuid::Uuid;

/// The stored form of a scope: `all`, `owner:<subject>`, `owner-or-unassigned:<subject>`.
pub fn scope_key(scope: &CustomerScope) -> String {
    match scope {
        CustomerScope::All => "all".to_owned(),
        CustomerScope::OwnedBy(s) => format!("owner:{s}"),
        CustomerScope::OwnedByOrUnassigned(s) => format!("owner-or-unassigned:{s}"),
    }
}

/// Expands `$body` once per kind of scope, with `$pred` bound to the predicate on `customers`
/// that keeps `$scope`'s customers (queries over other tables join their customer, a lookup
/// by key per row in the period), or a trivially true test for every customer. Grouped
/// queries cannot be boxed in diesel, hence one expansion per arm.
macro_rules! by_customer_scope {
    ($scope:expr, |$pred:ident| $body:expr) => {
        match $scope {
            CustomerScope::All => {
                let $pred = customers::id.is_not_null();
                $body
            }
            CustomerScope::OwnedBy(subject) => {
                let $pred = customers::owner.eq(subject.clone());
                $body
            }
            CustomerScope::OwnedByOrUnassigned(subject) => {
                let $pred = customers::owner
                    .eq(subject.clone())
                    .or(customers::owner.is_null());
                $body
            }
        }
    };
}

/// [`by_customer_scope!`] for queries that join their customer: the owner test is written so no
/// index can serve it (`owner || '' = ?`), so the planner starts from the joined table's time
/// index and looks each row's customer up by key. Otherwise SQLite starts from every customer
/// of the owner (its stats cannot tell how many there are) and probes the other table for each:
/// half a second per statement at 1,000,000 customers.
macro_rules! by_joined_scope {
    ($scope:expr, |$pred:ident| $body:expr) => {
        match $scope {
            CustomerScope::All => {
                let $pred = customers::id.is_not_null();
                $body
            }
            CustomerScope::OwnedBy(subject) => {
                let $pred = customers::owner.concat("").eq(subject.clone());
                $body
            }
            CustomerScope::OwnedByOrUnassigned(subject) => {
                let $pred = customers::owner
                    .concat("")
                    .eq(subject.clone())
                    .or(customers::owner.is_null());
                $body
            }
        }
    };
}

fn counts(rows: Vec<(Option<String>, i64)>) -> Vec<Count> {
    let mut merged: BTreeMap<String, i64> = BTreeMap::new();
    for (key, n) in rows {
        *merged
            .entry(key.unwrap_or_else(|| "(none)".to_owned()))
            .or_default() += n;
    }
    let mut out: Vec<Count> = merged
        .into_iter()
        .map(|(key, count)| Count { key, count })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    out
}

/// Counts the figures of `range` for the customers of `scope`. With `buckets`, also the
/// leads per bucket of [`ReportRange::buckets`] (the previous period does not need them).
pub async fn figures(
    db: &Db,
    range: &ReportRange,
    scope: &CustomerScope,
    buckets: bool,
) -> StoreResult<Figures> {
    let (start, end) = (to_db_time(range.start), to_db_time(range.end));
    let mut f = Figures::default();

    // Leads in, by source.
    let by_source: Vec<(Option<String>, i64)> = with_conn!(db, |conn| {
        by_customer_scope!(scope, |keep| {
            customers::table
                .filter(customers::created_at.ge(start))
                .filter(customers::created_at.lt(end))
                .filter(keep)
                .group_by(customers::source)
                .select((customers::source, count_star()))
                .load(conn)
                .await
        })
    })?;
    f.leads_by_source = counts(by_source);
    f.leads_in = f.leads_by_source.iter().map(|c| c.count).sum();

    if buckets {
        for bucket in range.buckets() {
            let (from, to) = (to_db_time(bucket.start), to_db_time(bucket.end));
            let n: i64 = if f.leads_in == 0 {
                0
            } else {
                with_conn!(db, |conn| {
                    by_customer_scope!(scope, |keep| {
                        customers::table
                            .filter(customers::created_at.ge(from))
                            .filter(customers::created_at.lt(to))
                            .filter(keep)
                            .select(count_star())
                            .get_result(conn)
                            .await
                    })
                })?
            };
            f.leads_per_bucket.push(n);
        }
    }

    // Scores: each customer's latest score in the period (ids are time-ordered UUIDv7).
    let scores: Vec<(i32, String, i64)> = with_conn!(db, |conn| {
        by_joined_scope!(scope, |keep| {
            let inner = diesel::alias!(lead_scores as inner_scores);
            let latest = inner
                .filter(inner.field(lead_scores::scored_at).ge(start))
                .filter(inner.field(lead_scores::scored_at).lt(end))
                .group_by(inner.field(lead_scores::customer_id))
                .select(max(inner.field(lead_scores::id)));
            lead_scores::table
                .inner_join(customers::table.on(customers::id.eq(lead_scores::customer_id)))
                .filter(lead_scores::id.nullable().eq_any(latest))
                .filter(keep)
                .group_by((lead_scores::score, lead_scores::priority))
                .select((lead_scores::score, lead_scores::priority, count_star()))
                .load(conn)
                .await
        })
    })?;
    for (score, priority, n) in scores {
        f.qualified += n;
        f.score_sum += i64::from(score) * n;
        let bucket = usize::try_from(score.clamp(0, 99) / 10).unwrap_or(0);
        f.score_histogram[bucket] += n;
        match priority.as_str() {
            "hot" => f.hot += n,
            "warm" => f.warm += n,
            _ => f.cold += n,
        }
    }

    // Calls placed (dialed) and the customers they reached for.
    let (placed, called): (i64, i64) = with_conn!(db, |conn| {
        by_joined_scope!(scope, |keep| {
            calls::table
                .inner_join(customers::table.on(customers::id.eq(calls::customer_id)))
                .filter(calls::dialed_at.ge(start))
                .filter(calls::dialed_at.lt(end))
                .filter(keep)
                .select((count_star(), count(calls::customer_id).aggregate_distinct()))
                .get_result(conn)
                .await
        })
    })?;
    f.calls_placed = placed;
    f.customers_called = called;

    // Calls that ended: dispositions, appointments, per provider.
    type Ended = (
        String,
        Option<String>,
        Option<String>,
        i64,
        Option<f64>,
        i64,
        Option<f64>,
    );
    let ended: Vec<Ended> = with_conn!(db, |conn| {
        by_joined_scope!(scope, |keep| {
            calls::table
                .inner_join(customers::table.on(customers::id.eq(calls::customer_id)))
                .filter(calls::ended_at.ge(start))
                .filter(calls::ended_at.lt(end))
                .filter(keep)
                .group_by((calls::provider, calls::disposition, calls::outcome))
                .select((
                    calls::provider,
                    calls::disposition,
                    calls::outcome,
                    count_star(),
                    sum(calls::duration_secs),
                    count(calls::duration_secs),
                    sum(calls::cost_usd),
                ))
                .load(conn)
                .await
        })
    })?;
    let mut providers: BTreeMap<String, ProviderFigures> = BTreeMap::new();
    let mut dispositions = Vec::new();
    for (provider, disposition, outcome, n, secs, timed, cost) in ended {
        if disposition.as_deref() == Some("answered") {
            f.calls_connected += n;
        }
        if outcome.as_deref() == Some("appointment") {
            f.appointments += n;
        }
        dispositions.push((disposition, n));
        let p = providers
            .entry(provider.clone())
            .or_insert_with(|| ProviderFigures {
                provider,
                calls: 0,
                duration_secs: 0.0,
                with_duration: 0,
                cost_usd: 0.0,
            });
        p.calls += n;
        p.duration_secs += secs.unwrap_or(0.0);
        p.with_duration += timed;
        p.cost_usd += cost.unwrap_or(0.0);
    }
    f.call_dispositions = counts(dispositions);
    f.providers = providers.into_values().collect();

    // Conversions: customers who are customers now and last changed in the period.
    f.converted = with_conn!(db, |conn| {
        by_customer_scope!(scope, |keep| {
            customers::table
                .filter(customers::status.eq("customer"))
                .filter(customers::updated_at.ge(start))
                .filter(customers::updated_at.lt(end))
                .filter(keep)
                .select(count_star())
                .get_result(conn)
                .await
        })
    })?;

    // Emails sent, by category.
    let sent: Vec<(String, i64)> = with_conn!(db, |conn| {
        by_joined_scope!(scope, |keep| {
            emails::table
                .inner_join(customers::table.on(customers::id.eq(emails::customer_id)))
                .filter(emails::sent_at.ge(start))
                .filter(emails::sent_at.lt(end))
                .filter(keep)
                .group_by(emails::category)
                .select((emails::category, count_star()))
                .load(conn)
                .await
        })
    })?;
    for (category, n) in sent {
        f.emails_sent += n;
        if category == "follow-up" {
            f.follow_ups += n;
        }
    }

    // Email events: distinct emails per kind.
    let events: Vec<(String, i64)> = with_conn!(db, |conn| {
        by_joined_scope!(scope, |keep| {
            email_events::table
                .inner_join(emails::table.on(email_events::email_id.eq(emails::id.nullable())))
                .inner_join(customers::table.on(customers::id.eq(emails::customer_id)))
                .filter(email_events::at.ge(start))
                .filter(email_events::at.lt(end))
                .filter(keep)
                .group_by(email_events::kind)
                .select((
                    email_events::kind,
                    count(email_events::email_id).aggregate_distinct(),
                ))
                .load(conn)
                .await
        })
    })?;
    for (kind, n) in events {
        match kind.as_str() {
            "delivered" => f.emails_delivered += n,
            "opened" => f.emails_opened += n,
            "bounced" | "dropped" => f.emails_bounced += n,
            "unsubscribed" | "complained" => f.emails_unsubscribed += n,
            _ => {}
        }
    }

    // Nurture enrolments and exits.
    f.nurture_enrolled = with_conn!(db, |conn| {
        by_joined_scope!(scope, |keep| {
            nurture_enrollments::table
                .inner_join(customers::table.on(customers::id.eq(nurture_enrollments::customer_id)))
                .filter(nurture_enrollments::enrolled_at.ge(start))
                .filter(nurture_enrollments::enrolled_at.lt(end))
                .filter(keep)
                .select(count_star())
                .get_result(conn)
                .await
        })
    })?;
    f.nurture_exited = with_conn!(db, |conn| {
        by_joined_scope!(scope, |keep| {
            nurture_enrollments::table
                .inner_join(customers::table.on(customers::id.eq(nurture_enrollments::customer_id)))
                .filter(nurture_enrollments::status.eq("exited"))
                .filter(nurture_enrollments::updated_at.ge(start))
                .filter(nurture_enrollments::updated_at.lt(end))
                .filter(keep)
                .select(count_star())
                .get_result(conn)
                .await
        })
    })?;

    // Tasks open at the end of the period (still open, or done only after it), and of
    // those, the ones due before the end.
    let open: Vec<(Option<NaiveDateTime>, i64)> = with_conn!(db, |conn| {
        by_joined_scope!(scope, |keep| {
            tasks::table
                .inner_join(customers::table.on(customers::id.eq(tasks::customer_id)))
                .filter(tasks::created_at.lt(end))
                .filter(
                    tasks::status
                        .eq("open")
                        .or(tasks::status.eq("done").and(tasks::completed_at.ge(end))),
                )
                .filter(keep)
                .group_by(tasks::due_at)
                .select((tasks::due_at, count_star()))
                .load(conn)
                .await
        })
    })?;
    for (due, n) in open {
        f.tasks_open += n;
        if due.is_some_and(|d| d < end) {
            f.tasks_overdue += n;
        }
    }

    // Pipeline runs that failed, and (for every customer only) dead jobs.
    f.pipeline_failures = with_conn!(db, |conn| {
        by_joined_scope!(scope, |keep| {
            pipeline_runs::table
                .inner_join(customers::table.on(customers::id.eq(pipeline_runs::customer_id)))
                .filter(pipeline_runs::status.eq("failed"))
                .filter(pipeline_runs::finished_at.ge(start))
                .filter(pipeline_runs::finished_at.lt(end))
                .filter(keep)
                .select(count_star())
                .get_result(conn)
                .await
        })
    })?;
    if *scope == CustomerScope::All {
        let dead: i64 = with_conn!(db, |conn| {
            jobs::table
                .filter(jobs::status.eq("dead"))
                .filter(jobs::finished_at.ge(start))
                .filter(jobs::finished_at.lt(end))
                .select(count_star())
                .get_result(conn)
                .await
        })?;
        f.dead_jobs = Some(dead);
    }

    // Reports generated for this scope.
    let key = scope_key(scope);
    f.reports = with_conn!(db, |conn| {
        reports::table
            .filter(reports::scope.eq(key.clone()))
            .filter(reports::created_at.ge(start))
            .filter(reports::created_at.lt(end))
            .select(count_star())
            .get_result(conn)
            .await
    })?;
    Ok(f)
}

/// A report to store.
#[derive(Debug, Clone)]
pub struct NewReport {
    /// Its id (UUIDv7).
    pub id: Uuid,
    /// The period covered.
    pub range: ReportRange,
    /// Whose customers it covers.
    pub scope: CustomerScope,
    /// The language of its labels.
    pub language: String,
    /// `api` or `schedule:<name>`.
    pub trigger: String,
    /// For a report made by a job: a key that makes a retry find this report.
    pub dedupe_key: Option<String>,
    /// Who asked for it.
    pub requested_by: String,
    /// The figures, as JSON (current and previous period).
    pub figures: String,
    /// The HTML rendering.
    pub html: String,
    /// The PDF rendering.
    pub pdf: Vec<u8>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// A stored report, without its renderings.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// Identity (UUIDv7).
    pub id: Uuid,
    /// The period kind.
    pub period: ReportPeriod,
    /// First local day.
    pub first_day: NaiveDate,
    /// Last local day.
    pub last_day: NaiveDate,
    /// The zone the days are counted in.
    pub time_zone: String,
    /// First instant.
    pub range_start: DateTime<Utc>,
    /// Instant after the last.
    pub range_end: DateTime<Utc>,
    /// Whose customers it covers ([`scope_key`]).
    pub scope: String,
    /// Its language.
    pub language: String,
    /// `api` or `schedule:<name>`.
    pub trigger: String,
    /// Who asked for it.
    pub requested_by: String,
    /// The figures, as JSON.
    pub figures: String,
    /// Size of the HTML rendering in bytes.
    pub html_bytes: i64,
    /// Size of the PDF rendering in bytes.
    pub pdf_bytes: i64,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

impl Stored {
    /// Whether a reader with `scope` may see this report: a reader who sees every customer
    /// sees every report; anyone else only reports made for exactly their scope.
    pub fn visible_to(&self, scope: &CustomerScope) -> bool {
        *scope == CustomerScope::All || self.scope == scope_key(scope)
    }
}

/// A rendering of a stored report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/html`.
    Html,
    /// `application/pdf`.
    Pdf,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = reports)]
struct StoredRow {
    id: String,
    period: String,
    first_day: String,
    last_day: String,
    time_zone: String,
    range_start: NaiveDateTime,
    range_end: NaiveDateTime,
    scope: String,
    language: String,
    trigger_name: String,
    requested_by: String,
    figures: String,
    created_at: NaiveDateTime,
}

type Sizes = (i64, i64);

fn stored(row: StoredRow, (html_bytes, pdf_bytes): Sizes) -> StoreResult<Stored> {
    let corrupt = |what: &str, value: &str| StoreError::Corrupt {
        entity: "report",
        id: row.id.clone(),
        reason: format!("bad {what} `{value}`"),
    };
    let day = |d: &str| NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| corrupt("day", d));
    Ok(Stored {
        id: Uuid::try_parse(&row.id).map_err(|_| corrupt("id", &row.id))?,
        period: row
            .period
            .parse()
            .map_err(|_| corrupt("period", &row.period))?,
        first_day: day(&row.first_day)?,
        last_day: day(&row.last_day)?,
        time_zone: row.time_zone,
        range_start: from_db_time(row.range_start),
        range_end: from_db_time(row.range_end),
        scope: row.scope,
        language: row.language,
        trigger: row.trigger_name,
        requested_by: row.requested_by,
        figures: row.figures,
        html_bytes,
        pdf_bytes,
        created_at: from_db_time(row.created_at),
    })
}

/// Stores a report with its audit entry, in one transaction; with a dedupe key already
/// taken, returns the report that took it (and writes nothing).
pub async fn insert(
    db: &Db,
    report: &NewReport,
    audit: Option<NewAuditEntry>,
) -> StoreResult<Stored> {
    if let Some(key) = &report.dedupe_key
        && let Some(existing) = by_dedupe_key(db, key).await?
    {
        return Ok(existing);
    }
    let id = report.id;
    let row = (
        reports::id.eq(id.to_string()),
        reports::period.eq(report.range.period.as_str()),
        reports::first_day.eq(report.range.first_day.to_string()),
        reports::last_day.eq(report.range.last_day.to_string()),
        reports::time_zone.eq(report.range.tz.name()),
        reports::range_start.eq(to_db_time(report.range.start)),
        reports::range_end.eq(to_db_time(report.range.end)),
        reports::scope.eq(scope_key(&report.scope)),
        reports::language.eq(report.language.clone()),
        reports::trigger_name.eq(report.trigger.clone()),
        reports::dedupe_key.eq(report.dedupe_key.clone()),
        reports::requested_by.eq(report.requested_by.clone()),
        reports::figures.eq(report.figures.clone()),
        reports::html.eq(report.html.clone()),
        reports::pdf.eq(report.pdf.clone()),
        reports::created_at.eq(to_db_time(report.created_at)),
    );
    let inserted: StoreResult<usize> = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            let n = diesel::insert_into(reports::table)
                .values(row)
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            if n == 1
                && let Some(entry) = &audit
            {
                conn.append_audit(entry).await?;
            }
            Ok::<_, StoreError>(n)
        })
        .await
    });
    if inserted? == 0
        && let Some(key) = &report.dedupe_key
        && let Some(existing) = by_dedupe_key(db, key).await?
    {
        // A concurrent run of the same job stored it first.
        return Ok(existing);
    }
    get(db, id)
        .await?
        .ok_or_else(|| StoreError::Unavailable("a stored report vanished".into()))
}

async fn by_dedupe_key(db: &Db, key: &str) -> StoreResult<Option<Stored>> {
    let id: Option<String> = with_conn!(db, |conn| {
        reports::table
            .filter(reports::dedupe_key.eq(key))
            .select(reports::id)
            .first(conn)
            .await
            .optional()
    })?;
    match id.and_then(|id| Uuid::try_parse(&id).ok()) {
        Some(id) => get(db, id).await,
        None => Ok(None),
    }
}

/// One report's metadata.
pub async fn get(db: &Db, id: Uuid) -> StoreResult<Option<Stored>> {
    let row: Option<(StoredRow, Vec<u8>, String)> = with_conn!(db, |conn| {
        reports::table
            .find(id.to_string())
            .select((StoredRow::as_select(), reports::pdf, reports::html))
            .first(conn)
            .await
            .optional()
    })?;
    row.map(|(row, pdf, html)| stored(row, (len(html.len()), len(pdf.len()))))
        .transpose()
}

fn len(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One report's rendering, with its metadata.
pub async fn rendering(
    db: &Db,
    id: Uuid,
    format: Format,
) -> StoreResult<Option<(Stored, Vec<u8>)>> {
    let Some(meta) = get(db, id).await? else {
        return Ok(None);
    };
    let bytes: Vec<u8> = with_conn!(db, |conn| {
        match format {
            Format::Pdf => {
                reports::table
                    .find(id.to_string())
                    .select(reports::pdf)
                    .first(conn)
                    .await
            }
            Format::Html => reports::table
                .find(id.to_string())
                .select(reports::html)
                .first::<String>(conn)
                .await
                .map(String::into_bytes),
        }
    })?;
    Ok(Some((meta, bytes)))
}

/// Reports visible to `scope`, newest first, before the id `before`, at most `limit + 1`
/// (the extra one tells the caller there is a next page).
pub async fn list(
    db: &Db,
    scope: &CustomerScope,
    before: Option<Uuid>,
    limit: usize,
) -> StoreResult<Vec<Stored>> {
    let probe = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
    let key = scope_key(scope);
    let all = *scope == CustomerScope::All;
    let rows: Vec<StoredRow> = with_conn!(db, |conn| {
        let mut query = reports::table.select(StoredRow::as_select()).into_boxed();
        if !all {
            query = query.filter(reports::scope.eq(key.clone()));
        }
        if let Some(before) = before {
            query = query.filter(reports::id.lt(before.to_string()));
        }
        query
            .order_by(reports::id.desc())
            .limit(probe)
            .load(conn)
            .await
    })?;
    // Sizes are not needed in lists; 0 marks them unknown.
    rows.into_iter().map(|row| stored(row, (0, 0))).collect()
}

/// What happened to a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Claimed now: send it.
    Claimed,
    /// Sent before: nothing to do.
    AlreadySent,
    /// A send began before and its outcome is unknown (the worker died mid-send).
    Interrupted,
}

/// Claims the delivery of `report` to `recipient` before sending it.
pub async fn claim_delivery(
    db: &Db,
    report: Uuid,
    recipient: &str,
    now: DateTime<Utc>,
) -> StoreResult<Claim> {
    let at = to_db_time(now);
    let inserted = with_conn!(db, |conn| {
        diesel::insert_into(report_deliveries::table)
            .values((
                report_deliveries::report_id.eq(report.to_string()),
                report_deliveries::recipient.eq(recipient),
                report_deliveries::status.eq("sending"),
                report_deliveries::created_at.eq(at),
            ))
            .on_conflict_do_nothing()
            .execute(conn)
            .await
    })?;
    if inserted == 1 {
        return Ok(Claim::Claimed);
    }
    let status: String = with_conn!(db, |conn| {
        report_deliveries::table
            .find((report.to_string(), recipient))
            .select(report_deliveries::status)
            .first(conn)
            .await
    })?;
    Ok(match status.as_str() {
        "sent" => Claim::AlreadySent,
        "failed" => {
            // A failed delivery (refused by the sender) may be tried again.
            with_conn!(db, |conn| {
                diesel::update(report_deliveries::table.find((report.to_string(), recipient)))
                    .set(report_deliveries::status.eq("sending"))
                    .execute(conn)
                    .await
            })?;
            Claim::Claimed
        }
        _ => Claim::Interrupted,
    })
}

/// Records how a claimed delivery ended (`sent`, or `failed` with the error).
pub async fn finish_delivery(
    db: &Db,
    report: Uuid,
    recipient: &str,
    outcome: Result<(), String>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let (status, error, sent_at) = match outcome {
        Ok(()) => ("sent", None, Some(to_db_time(now))),
        Err(e) => ("failed", Some(e), None),
    };
    with_conn!(db, |conn| {
        diesel::update(report_deliveries::table.find((report.to_string(), recipient)))
            .set((
                report_deliveries::status.eq(status),
                report_deliveries::error.eq(error),
                report_deliveries::sent_at.eq(sent_at),
            ))
            .execute(conn)
            .await
    })?;
    Ok(())
}

/// The deliveries of a report: `(recipient, status, error)`.
pub async fn deliveries(
    db: &Db,
    report: Uuid,
) -> StoreResult<Vec<(String, String, Option<String>)>> {
    Ok(with_conn!(db, |conn| {
        report_deliveries::table
            .filter(report_deliveries::report_id.eq(report.to_string()))
            .order_by(report_deliveries::recipient)
            .select((
                report_deliveries::recipient,
                report_deliveries::status,
                report_deliveries::error,
            ))
            .load(conn)
            .await
    })?)
}
