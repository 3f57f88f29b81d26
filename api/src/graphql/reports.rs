//! Reports over GraphQL: `report` (KPIs and chart series as data, computed now, for
//! frontends), `generateReport` (rendered to HTML and PDF and stored), and `reports` (the
//! stored ones). The renderings download from `GET /reports/{id}.html` and `.pdf`.
//!
//! Every report covers exactly the customers the caller may see (their row-level scope): a
//! sales user's report never counts another owner's leads, and a stored report is listed and
//! served only to callers who see every customer or have exactly the scope it was made for.

use super::{
    ApiContext,
    access::{caller, customer_scope},
    pagination::{PageInfo, first_or_default},
};
use crate::{
    audit::Auditor,
    error::{ApiError, invalid},
};
use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use chrono::{DateTime, NaiveDate, Utc};
use crm_domain::{
    CustomerScope, Language,
    report::{self as domain, Report},
};
use crm_plugins::report::{ReportError, report_audit};
use crm_store::{
    Page,
    reports::{self as store, Stored},
};

/// The span a report covers.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "crm_domain::report::ReportPeriod")]
pub(crate) enum ReportPeriod {
    /// One local day (in `reports.time_zone`).
    Daily,
    /// One ISO week, Monday to Sunday.
    Weekly,
    /// One calendar month.
    Monthly,
    /// `from` to `to`, both days included (at most 366 days).
    Custom,
}

/// A rendering of a report.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) enum ReportFormat {
    /// A self-contained HTML file with inline SVG charts.
    Html,
    /// A paginated A4 PDF with embedded fonts.
    #[default]
    Pdf,
}

/// How a KPI's value reads.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "crm_domain::report::KpiUnit")]
pub(crate) enum KpiUnit {
    /// A number of things.
    Count,
    /// A share, 0–100.
    Percent,
    /// A lead score, 0–100.
    Score,
    /// Seconds.
    Seconds,
    /// US dollars.
    Usd,
    /// Minutes.
    Minutes,
}

/// One KPI, compared with the previous period.
#[derive(SimpleObject, Debug)]
pub(crate) struct Kpi {
    /// Stable key (`leads_in`, `connect_rate`, `minutes_saved` …).
    key: &'static str,
    /// The label in the report's language.
    label: &'static str,
    /// How the value reads.
    unit: KpiUnit,
    /// The value in the period (null: undefined, e.g. a mean over nothing).
    value: Option<f64>,
    /// The value in the previous period.
    previous: Option<f64>,
    /// The change in percent (null when either value is missing, or from zero).
    change_percent: Option<f64>,
}

/// A count under a name.
#[derive(SimpleObject, Debug)]
pub(crate) struct NamedCount {
    /// What was counted (a source, a disposition, a funnel stage).
    key: String,
    /// How many.
    count: i64,
}

/// Calls of one provider that ended in the period.
#[derive(SimpleObject, Debug)]
pub(crate) struct ProviderStats {
    /// `vapi`, `retell`, `bland` or `simulator`.
    provider: String,
    /// Calls that ended.
    calls: i64,
    /// Mean talk time in seconds.
    average_duration_seconds: Option<f64>,
    /// Their cost in US dollars.
    cost_usd: f64,
}

/// The series behind the report's charts.
#[derive(SimpleObject, Debug)]
pub(crate) struct ReportSeries {
    /// Leads created per local hour (daily report) or per day (`label` `HH:00` or `MM-DD`).
    leads_per_bucket: Vec<NamedCount>,
    /// Leads in → qualified → customers called → connected → appointments → converted.
    funnel: Vec<NamedCount>,
    /// Calls that ended, by disposition.
    dispositions: Vec<NamedCount>,
    /// The latest scores of the leads scored in the period, in ten buckets (`0-9` … `90-100`).
    score_distribution: Vec<NamedCount>,
}

/// A report's KPIs and chart series.
#[derive(Debug)]
pub(crate) struct ReportData(pub(crate) Report);

#[Object]
impl ReportData {
    /// The kind of period.
    async fn period(&self) -> ReportPeriod {
        self.0.range.period.into()
    }
    /// The first local day covered.
    async fn first_day(&self) -> NaiveDate {
        self.0.range.first_day
    }
    /// The last local day covered.
    async fn last_day(&self) -> NaiveDate {
        self.0.range.last_day
    }
    /// The time zone the days are counted in.
    async fn time_zone(&self) -> &str {
        self.0.range.tz.name()
    }
    /// The first instant covered.
    async fn start(&self) -> DateTime<Utc> {
        self.0.range.start
    }
    /// The instant after the last one covered.
    async fn end(&self) -> DateTime<Utc> {
        self.0.range.end
    }
    /// The first day of the period compared with.
    async fn previous_first_day(&self) -> NaiveDate {
        self.0.previous_range.first_day
    }
    /// The last day of the period compared with.
    async fn previous_last_day(&self) -> NaiveDate {
        self.0.previous_range.last_day
    }
    /// Whose customers it counts, in words.
    async fn scope(&self) -> &str {
        &self.0.scope
    }
    /// The language of its labels.
    async fn language(&self) -> String {
        self.0.language.to_string()
    }
    /// True when nothing at all happened in the period.
    async fn empty(&self) -> bool {
        self.0.is_empty()
    }
    /// When it was computed.
    async fn generated_at(&self) -> DateTime<Utc> {
        self.0.generated_at
    }
    /// Every KPI with its previous value.
    async fn kpis(&self) -> Vec<Kpi> {
        let language = self.0.language.primary();
        self.0
            .kpis()
            .into_iter()
            .map(|k| Kpi {
                key: k.key,
                label: crm_reports::label(k.key, language),
                unit: k.unit.into(),
                value: k.value,
                previous: k.previous,
                change_percent: k.change_percent(),
            })
            .collect()
    }
    /// Leads created, by source.
    async fn leads_by_source(&self) -> Vec<NamedCount> {
        named(&self.0.current.leads_by_source)
    }
    /// Calls per provider.
    async fn providers(&self) -> Vec<ProviderStats> {
        self.0
            .current
            .providers
            .iter()
            .map(|p| ProviderStats {
                provider: p.provider.clone(),
                calls: p.calls,
                average_duration_seconds: p.average_duration(),
                cost_usd: p.cost_usd,
            })
            .collect()
    }
    /// The chart series.
    async fn series(&self) -> ReportSeries {
        let current = &self.0.current;
        ReportSeries {
            leads_per_bucket: self
                .0
                .range
                .buckets()
                .into_iter()
                .zip(current.leads_per_bucket.iter())
                .map(|(b, n)| NamedCount {
                    key: b.label,
                    count: *n,
                })
                .collect(),
            funnel: named(&self.0.funnel()),
            dispositions: named(&current.call_dispositions),
            score_distribution: current
                .score_histogram
                .iter()
                .enumerate()
                .map(|(i, n)| NamedCount {
                    key: if i == 9 {
                        "90-100".to_owned()
                    } else {
                        format!("{}-{}", i * 10, i * 10 + 9)
                    },
                    count: *n,
                })
                .collect(),
        }
    }
}

fn named(counts: &[domain::Count]) -> Vec<NamedCount> {
    counts
        .iter()
        .map(|c| NamedCount {
            key: c.key.clone(),
            count: c.count,
        })
        .collect()
}

/// A stored report.
#[derive(Debug)]
pub(crate) struct StoredReport {
    stored: Stored,
    html_url: String,
    pdf_url: String,
}

#[Object]
impl StoredReport {
    /// Identity (UUID).
    async fn id(&self) -> ID {
        ID(self.stored.id.to_string())
    }
    /// The kind of period.
    async fn period(&self) -> ReportPeriod {
        self.stored.period.into()
    }
    /// The first local day covered.
    async fn first_day(&self) -> NaiveDate {
        self.stored.first_day
    }
    /// The last local day covered.
    async fn last_day(&self) -> NaiveDate {
        self.stored.last_day
    }
    /// The time zone the days are counted in.
    async fn time_zone(&self) -> &str {
        &self.stored.time_zone
    }
    /// Whose customers it covers: `all`, `owner:<subject>` or `owner-or-unassigned:<subject>`.
    async fn scope(&self) -> &str {
        &self.stored.scope
    }
    /// Its language.
    async fn language(&self) -> &str {
        &self.stored.language
    }
    /// `api` or `schedule`.
    async fn trigger(&self) -> &str {
        &self.stored.trigger
    }
    /// Who asked for it.
    async fn requested_by(&self) -> &str {
        &self.stored.requested_by
    }
    /// When it was made.
    async fn created_at(&self) -> DateTime<Utc> {
        self.stored.created_at
    }
    /// Where its HTML downloads (`GET`, with the same credentials).
    async fn html_url(&self) -> &str {
        &self.html_url
    }
    /// Where its PDF downloads (`GET`, with the same credentials).
    async fn pdf_url(&self) -> &str {
        &self.pdf_url
    }
}

impl StoredReport {
    fn new(api: &ApiContext, stored: Stored) -> Self {
        Self {
            html_url: api.reporter.url(&stored.id, "html"),
            pdf_url: api.reporter.url(&stored.id, "pdf"),
            stored,
        }
    }
}

/// A report just generated.
#[derive(SimpleObject, Debug)]
pub(crate) struct GeneratedReport {
    /// The stored report.
    report: StoredReport,
    /// The format asked for.
    format: ReportFormat,
    /// Where that format downloads.
    url: String,
    /// Its KPIs and series.
    data: ReportData,
}

/// A page of stored reports, newest first.
#[derive(SimpleObject, Debug)]
pub(crate) struct StoredReportConnection {
    /// The reports.
    nodes: Vec<StoredReport>,
    /// Paging.
    page_info: PageInfo,
}

fn report_error(error: ReportError) -> ApiError {
    match error {
        ReportError::Invalid(e) => invalid(e.field, e.code, e.message),
        ReportError::Render(e) => ApiError::Internal(e),
        ReportError::Store(e) => e.into(),
    }
}

fn language(raw: Option<String>) -> Result<Option<Language>, ApiError> {
    raw.filter(|l| !l.trim().is_empty())
        .map(|l| Language::parse(&l).map_err(|e| invalid("language", e.code, e.message)))
        .transpose()
}

async fn compute(
    ctx: &Context<'_>,
    period: ReportPeriod,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    lang: Option<String>,
) -> Result<(Report, CustomerScope), ApiError> {
    let api = ctx
        .data::<ApiContext>()
        .map_err(|e| ApiError::Internal(e.message))?;
    let scope = customer_scope(ctx)?;
    let lang = language(lang)?;
    let range = api
        .reporter
        .range(period.into(), from, to)
        .map_err(report_error)?;
    let report = api
        .reporter
        .compute(range, &scope, lang)
        .await
        .map_err(report_error)?;
    Ok((report, scope))
}

#[derive(Default, Debug)]
pub(crate) struct ReportQuery;

#[Object]
impl ReportQuery {
    /// The KPIs and chart series of a period, computed now over the customers the caller may
    /// see. Daily, weekly and monthly periods are chosen by any day in them (`from`, default
    /// today in `reports.time_zone`); a custom period needs `from` and `to` (days, both
    /// included). A `to` before `from`, or a `to` on another period, is `VALIDATION_FAILED`.
    async fn report(
        &self,
        ctx: &Context<'_>,
        period: ReportPeriod,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
        language: Option<String>,
    ) -> async_graphql::Result<ReportData> {
        let (report, _) = compute(ctx, period, from, to, language).await?;
        Ok(ReportData(report))
    }

    /// Stored reports the caller may see, newest first.
    async fn reports(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<StoredReportConnection> {
        let api = ctx.data::<ApiContext>()?;
        let limit = first_or_default(first, api.pages)?;
        let before = after
            .map(|raw| {
                uuid::Uuid::try_parse(&raw).map_err(|_| {
                    invalid("after", "invalid_cursor", "after: not a cursor of reports")
                })
            })
            .transpose()?;
        let scope = customer_scope(ctx)?;
        let found = store::list(&api.db, &scope, before, limit)
            .await
            .map_err(ApiError::from)?;
        let items = found.into_iter().map(|r| (r.id.to_string(), r)).collect();
        let page = Page::forward(items, limit, before.is_some());
        let page_info = PageInfo::of(&page);
        Ok(StoredReportConnection {
            nodes: page
                .items
                .into_iter()
                .map(|(_, r)| StoredReport::new(api, r))
                .collect(),
            page_info,
        })
    }
}

#[derive(Default, Debug)]
pub(crate) struct ReportMutation;

#[Object]
impl ReportMutation {
    /// Computes a report over the customers the caller may see, renders it as HTML and PDF,
    /// and stores it; `url` is where `format` downloads. Arguments as for `report`.
    async fn generate_report(
        &self,
        ctx: &Context<'_>,
        period: ReportPeriod,
        #[graphql(default)] format: ReportFormat,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
        language: Option<String>,
    ) -> async_graphql::Result<GeneratedReport> {
        let api = ctx.data::<ApiContext>()?;
        let (report, scope) = compute(ctx, period, from, to, language).await?;
        let requested_by = caller(ctx)?.subject.clone();
        let auditor = Auditor::of(ctx)?;
        let range = report.range;
        let stored = api
            .reporter
            .store(report.clone(), &scope, "api", None, &requested_by, |id| {
                Some(report_audit(
                    auditor.at(),
                    auditor.actor_kind(),
                    &auditor.actor(),
                    auditor.request_id(),
                    id,
                    &range,
                    &scope,
                ))
            })
            .await
            .map_err(report_error)?;
        let report_node = StoredReport::new(api, stored);
        let url = match format {
            ReportFormat::Html => report_node.html_url.clone(),
            ReportFormat::Pdf => report_node.pdf_url.clone(),
        };
        Ok(GeneratedReport {
            report: report_node,
            format,
            url,
            data: ReportData(report),
        })
    }
}
