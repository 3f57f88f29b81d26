//! Reports (`/generate-report`): the periods they cover, the figures the store counts for a
//! period, and the KPIs derived from them, each compared with the previous period. Pure
//! functions, no I/O; the store fills [`Figures`], a renderer turns a [`Report`] into HTML or
//! PDF.
//!
//! # Periods
//!
//! A period is a span of whole local days in the report's time zone (`reports.time_zone`):
//! a day, an ISO week (Monday to Sunday), a calendar month, or a custom range of days (both
//! ends included, at most [`MAX_CUSTOM_DAYS`]). Its instants run from the first day's local
//! midnight to the local midnight after the last day, so a day of a DST change lasts 23 or
//! 25 hours. A local midnight that does not exist (a zone that jumps over midnight) stands
//! for the first instant after the jump. The previous period is the one just before: the day
//! before, the week before, the month before, or the custom range of the same length that
//! ends the day before it starts.

use crate::{error::FieldError, interaction::string_enum, values::Language};
use chrono::{
    DateTime, Datelike as _, Days, LocalResult, Months, NaiveDate, TimeDelta, TimeZone as _, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::{fmt, str::FromStr};

/// The longest custom range, in days.
pub const MAX_CUSTOM_DAYS: i64 = 366;

string_enum!(
    /// The span a report covers.
    ReportPeriod, "period" {
        /// One local day.
        Daily = "daily",
        /// One ISO week, Monday to Sunday.
        Weekly = "weekly",
        /// One calendar month.
        Monthly = "monthly",
        /// Any range of whole days, both ends included.
        Custom = "custom",
    }
);

/// The local days and UTC instants a report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportRange {
    /// What kind of span this is.
    pub period: ReportPeriod,
    /// The first local day.
    pub first_day: NaiveDate,
    /// The last local day (included).
    pub last_day: NaiveDate,
    /// The zone the days are counted in.
    pub tz: Tz,
    /// The first instant (the first day's local midnight).
    pub start: DateTime<Utc>,
    /// The instant after the last (the local midnight after the last day).
    pub end: DateTime<Utc>,
}

/// The first instant of a local day: its midnight, or the first instant after a jump over it.
pub fn day_start(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    let midnight = day.and_time(chrono::NaiveTime::MIN);
    match tz.from_local_datetime(&midnight) {
        LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => at.with_timezone(&Utc),
        LocalResult::None => {
            // Midnight falls into a gap (a zone that springs forward at 00:00): the day starts
            // when the gap ends. Gaps are at most a few hours; look minute by minute.
            (1..=24 * 60)
                .find_map(
                    |m| match tz.from_local_datetime(&(midnight + TimeDelta::minutes(m))) {
                        LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => {
                            Some(at.with_timezone(&Utc))
                        }
                        LocalResult::None => None,
                    },
                )
                .unwrap_or_else(|| midnight.and_utc())
        }
    }
}

impl ReportRange {
    /// The range of `period` in `tz`.
    ///
    /// - daily, weekly, monthly: the period that contains `from` (default: `today`); `to`
    ///   must not be given.
    /// - custom: `from` and `to` are both required, `from` ≤ `to`, at most
    ///   [`MAX_CUSTOM_DAYS`] days.
    ///
    /// Every problem is reported with the field it concerns.
    pub fn resolve(
        period: ReportPeriod,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
        today: NaiveDate,
        tz: Tz,
    ) -> Result<Self, FieldError> {
        let (first_day, last_day) = match period {
            ReportPeriod::Custom => {
                let (Some(from), Some(to)) = (from, to) else {
                    return Err(FieldError::new(
                        if from.is_none() { "from" } else { "to" },
                        "required",
                        "a custom period needs both `from` and `to`",
                    ));
                };
                if from > to {
                    return Err(FieldError::new(
                        "to",
                        "range_reversed",
                        format!("`to` ({to}) lies before `from` ({from})"),
                    ));
                }
                let days = (to - from).num_days() + 1;
                if days > MAX_CUSTOM_DAYS {
                    return Err(FieldError::new(
                        "to",
                        "range_too_long",
                        format!("a custom period spans at most {MAX_CUSTOM_DAYS} days, not {days}"),
                    ));
                }
                (from, to)
            }
            _ if to.is_some() => {
                return Err(FieldError::new(
                    "to",
                    "unexpected",
                    format!(
                        "`to` applies to a custom period only; a {period} period is chosen by \
                         any day in it (`from`)"
                    ),
                ));
            }
            period => Self::span_of(period, from.unwrap_or(today)),
        };
        Ok(Self::from_days(period, first_day, last_day, tz))
    }

    /// The first and last day of the day, week or month containing `day`.
    fn span_of(period: ReportPeriod, day: NaiveDate) -> (NaiveDate, NaiveDate) {
        match period {
            ReportPeriod::Daily | ReportPeriod::Custom => (day, day),
            ReportPeriod::Weekly => {
                let monday = day - Days::new(u64::from(day.weekday().num_days_from_monday()));
                (monday, monday + Days::new(6))
            }
            ReportPeriod::Monthly => {
                let first = day.with_day(1).unwrap_or(day);
                let last = (first + Months::new(1)).pred_opt().unwrap_or(first);
                (first, last)
            }
        }
    }

    fn from_days(period: ReportPeriod, first_day: NaiveDate, last_day: NaiveDate, tz: Tz) -> Self {
        Self {
            period,
            first_day,
            last_day,
            tz,
            start: day_start(tz, first_day),
            end: day_start(tz, last_day.succ_opt().unwrap_or(last_day)),
        }
    }

    /// The number of local days covered.
    pub fn days(&self) -> i64 {
        (self.last_day - self.first_day).num_days() + 1
    }

    /// The period just before this one (see the module docs).
    pub fn previous(&self) -> Self {
        match self.period {
            ReportPeriod::Monthly => {
                let first = self.first_day - Months::new(1);
                let (first, last) = Self::span_of(ReportPeriod::Monthly, first);
                Self::from_days(self.period, first, last, self.tz)
            }
            _ => {
                let days = Days::new(self.days().unsigned_abs());
                Self::from_days(
                    self.period,
                    self.first_day - days,
                    self.last_day - days,
                    self.tz,
                )
            }
        }
    }

    /// The buckets of the "leads per day" series: the local hours of a daily report, the
    /// local days otherwise. Each is `(label, start, end)`, end exclusive.
    pub fn buckets(&self) -> Vec<Bucket> {
        if self.period == ReportPeriod::Daily {
            // Hours as instants, so a 25-hour day has 25 buckets and a 23-hour day 23.
            let mut buckets = Vec::with_capacity(25);
            let mut at = self.start;
            while at < self.end {
                let next = (at + TimeDelta::hours(1)).min(self.end);
                buckets.push(Bucket {
                    label: at.with_timezone(&self.tz).format("%H:00").to_string(),
                    start: at,
                    end: next,
                });
                at = next;
            }
            buckets
        } else {
            self.first_day
                .iter_days()
                .take_while(|d| *d <= self.last_day)
                .map(|d| Bucket {
                    label: d.format("%m-%d").to_string(),
                    start: day_start(self.tz, d),
                    end: day_start(self.tz, d.succ_opt().unwrap_or(d)),
                })
                .collect()
        }
    }
}

impl fmt::Display for ReportRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first_day == self.last_day {
            write!(f, "{}", self.first_day)
        } else {
            write!(f, "{} – {}", self.first_day, self.last_day)
        }
    }
}

/// One bucket of a time series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// `HH:00` (local) or `MM-DD`.
    pub label: String,
    /// First instant.
    pub start: DateTime<Utc>,
    /// Instant after the last.
    pub end: DateTime<Utc>,
}

/// A count under a name (a source, a disposition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    /// What was counted (`(none)` for a missing value).
    pub key: String,
    /// How many.
    pub count: i64,
}

/// Calls of one provider that ended in the period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderFigures {
    /// The provider kind (`vapi`, `retell`, `bland`, `simulator`).
    pub provider: String,
    /// Calls that ended.
    pub calls: i64,
    /// Their talk time in seconds, summed over the calls that report one.
    pub duration_secs: f64,
    /// How many of them report a duration.
    pub with_duration: i64,
    /// What they cost, in US dollars.
    pub cost_usd: f64,
}

impl ProviderFigures {
    /// Mean talk time in seconds, if any call reported one.
    pub fn average_duration(&self) -> Option<f64> {
        (self.with_duration > 0).then(|| self.duration_secs / self.with_duration as f64)
    }
}

/// What the store counts for one period and one scope of customers. Every figure concerns
/// the period's instants `[start, end)` unless it says "at the end".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Customers created.
    pub leads_in: i64,
    /// The same, by source, largest first.
    pub leads_by_source: Vec<Count>,
    /// The same, per bucket of [`ReportRange::buckets`].
    pub leads_per_bucket: Vec<i64>,
    /// Customers scored in the period (at least once).
    pub qualified: i64,
    /// Of those, by the priority of their latest score in the period.
    pub hot: i64,
    /// See `hot`.
    pub warm: i64,
    /// See `hot`.
    pub cold: i64,
    /// The sum of those latest scores (for the mean).
    pub score_sum: i64,
    /// Those latest scores in ten buckets: 0–9, 10–19, … 90–100.
    pub score_histogram: [i64; 10],
    /// Call attempts handed to a provider (dialed).
    pub calls_placed: i64,
    /// Distinct customers called (dialed at least once).
    pub customers_called: i64,
    /// Calls that ended answered by a person.
    pub calls_connected: i64,
    /// Calls that ended, by disposition.
    pub call_dispositions: Vec<Count>,
    /// Calls that ended, per provider.
    pub providers: Vec<ProviderFigures>,
    /// Calls that ended with an appointment.
    pub appointments: i64,
    /// Customers whose status is `customer` and who last changed in the period.
    pub converted: i64,
    /// Emails sent.
    pub emails_sent: i64,
    /// Emails with a delivery event in the period.
    pub emails_delivered: i64,
    /// Emails opened (first open or click) in the period.
    pub emails_opened: i64,
    /// Emails bounced or dropped in the period.
    pub emails_bounced: i64,
    /// Unsubscribes and spam complaints in the period.
    pub emails_unsubscribed: i64,
    /// Follow-up emails sent (the chain's follow-up step).
    pub follow_ups: i64,
    /// Leads enrolled in the nurture sequence.
    pub nurture_enrolled: i64,
    /// Leads that left it (by any reason).
    pub nurture_exited: i64,
    /// Tasks open at the end of the period.
    pub tasks_open: i64,
    /// Of those, due before the end of the period.
    pub tasks_overdue: i64,
    /// Pipeline runs that failed.
    pub pipeline_failures: i64,
    /// Jobs that died (exhausted their attempts). Jobs belong to no customer: counted only
    /// for a report that covers every customer, `None` otherwise.
    pub dead_jobs: Option<i64>,
    /// Reports generated.
    pub reports: i64,
}

impl Figures {
    /// Mean of the latest scores, if anyone was scored.
    pub fn average_score(&self) -> Option<f64> {
        (self.qualified > 0).then(|| self.score_sum as f64 / self.qualified as f64)
    }

    /// Mean talk time over every provider.
    pub fn average_call_duration(&self) -> Option<f64> {
        let (secs, n) = self.providers.iter().fold((0.0, 0), |(s, n), p| {
            (s + p.duration_secs, n + p.with_duration)
        });
        (n > 0).then(|| secs / n as f64)
    }

    /// Total cost of the calls, in US dollars.
    pub fn call_cost(&self) -> f64 {
        self.providers.iter().map(|p| p.cost_usd).sum()
    }

    /// The manual minutes the chain saved (the seed's ROI view).
    pub fn minutes_saved(&self, minutes: &ManualMinutes) -> i64 {
        self.leads_in * minutes.enter_lead
            + self.qualified * minutes.qualify_lead
            + self.calls_placed * minutes.call
            + self.follow_ups * minutes.follow_up
            + self.reports * minutes.report
    }
}

/// Minutes each step took by hand before the chain did it (`reports.manual_minutes`; the
/// seed's numbers are the defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManualMinutes {
    /// Entering a lead (5).
    pub enter_lead: i64,
    /// Qualifying a lead (15).
    pub qualify_lead: i64,
    /// Placing a call (10).
    pub call: i64,
    /// Planning a follow-up (5).
    pub follow_up: i64,
    /// Writing a report (30).
    pub report: i64,
}

impl Default for ManualMinutes {
    fn default() -> Self {
        Self {
            enter_lead: 5,
            qualify_lead: 15,
            call: 10,
            follow_up: 5,
            report: 30,
        }
    }
}

impl ManualMinutes {
    /// Every minute must be zero or more.
    pub fn validate(&self) -> Result<(), String> {
        let all = [
            ("enter_lead", self.enter_lead),
            ("qualify_lead", self.qualify_lead),
            ("call", self.call),
            ("follow_up", self.follow_up),
            ("report", self.report),
        ];
        match all.iter().find(|(_, m)| *m < 0) {
            Some((name, m)) => Err(format!(
                "reports.manual_minutes.{name} must not be negative, not {m}"
            )),
            None => Ok(()),
        }
    }
}

string_enum!(
    /// How a KPI's value reads.
    KpiUnit, "unit" {
        /// A number of things.
        Count = "count",
        /// A share, 0–100.
        Percent = "percent",
        /// A lead score, 0–100.
        Score = "score",
        /// Seconds.
        Seconds = "seconds",
        /// US dollars.
        Usd = "usd",
        /// Minutes.
        Minutes = "minutes",
    }
);

/// One KPI of a report, with its value in the previous period.
#[derive(Debug, Clone, PartialEq)]
pub struct Kpi {
    /// Stable key (`leads_in`, `connect_rate`, …); renderers look labels up by it.
    pub key: &'static str,
    /// How the value reads.
    pub unit: KpiUnit,
    /// The value in the period (`None`: not defined, e.g. a mean over nothing).
    pub value: Option<f64>,
    /// The value in the previous period.
    pub previous: Option<f64>,
}

impl Kpi {
    /// The change from the previous period in percent (`None` when either value is missing
    /// or the previous one is zero while this one is not).
    pub fn change_percent(&self) -> Option<f64> {
        let (value, previous) = (self.value?, self.previous?);
        if previous == 0.0 {
            return (value == 0.0).then_some(0.0);
        }
        Some((value - previous) / previous.abs() * 100.0)
    }
}

/// The KPI keys, in report order.
pub const KPI_KEYS: &[&str] = &[
    "leads_in",
    "qualified",
    "hot",
    "warm",
    "cold",
    "average_score",
    "calls_placed",
    "calls_connected",
    "connect_rate",
    "average_call_duration",
    "call_cost",
    "appointments",
    "appointment_rate",
    "converted",
    "emails_sent",
    "emails_delivered",
    "emails_opened",
    "emails_bounced",
    "emails_unsubscribed",
    "nurture_enrolled",
    "nurture_exited",
    "tasks_open",
    "tasks_overdue",
    "pipeline_failures",
    "dead_jobs",
    "minutes_saved",
];

fn ratio(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64 * 100.0)
}

fn kpi_value(key: &str, f: &Figures, minutes: &ManualMinutes) -> (KpiUnit, Option<f64>) {
    let count = |n: i64| (KpiUnit::Count, Some(n as f64));
    match key {
        "leads_in" => count(f.leads_in),
        "qualified" => count(f.qualified),
        "hot" => count(f.hot),
        "warm" => count(f.warm),
        "cold" => count(f.cold),
        "average_score" => (KpiUnit::Score, f.average_score()),
        "calls_placed" => count(f.calls_placed),
        "calls_connected" => count(f.calls_connected),
        "connect_rate" => {
            let ended: i64 = f.providers.iter().map(|p| p.calls).sum();
            (KpiUnit::Percent, ratio(f.calls_connected, ended))
        }
        "average_call_duration" => (KpiUnit::Seconds, f.average_call_duration()),
        "call_cost" => (KpiUnit::Usd, Some(f.call_cost())),
        "appointments" => count(f.appointments),
        "appointment_rate" => (KpiUnit::Percent, ratio(f.appointments, f.calls_connected)),
        "converted" => count(f.converted),
        "emails_sent" => count(f.emails_sent),
        "emails_delivered" => count(f.emails_delivered),
        "emails_opened" => count(f.emails_opened),
        "emails_bounced" => count(f.emails_bounced),
        "emails_unsubscribed" => count(f.emails_unsubscribed),
        "nurture_enrolled" => count(f.nurture_enrolled),
        "nurture_exited" => count(f.nurture_exited),
        "tasks_open" => count(f.tasks_open),
        "tasks_overdue" => count(f.tasks_overdue),
        "pipeline_failures" => count(f.pipeline_failures),
        "dead_jobs" => (KpiUnit::Count, f.dead_jobs.map(|n| n as f64)),
        "minutes_saved" => (KpiUnit::Minutes, Some(f.minutes_saved(minutes) as f64)),
        _ => (KpiUnit::Count, None),
    }
}

/// A report: the figures of a period and of the one before, for one scope of customers.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The period covered.
    pub range: ReportRange,
    /// The period compared with.
    pub previous_range: ReportRange,
    /// The figures of `range`.
    pub current: Figures,
    /// The figures of `previous_range`.
    pub previous: Figures,
    /// The minutes each step took by hand.
    pub manual_minutes: ManualMinutes,
    /// When it was computed.
    pub generated_at: DateTime<Utc>,
    /// Whose customers it covers, in words (`all customers`, `owner ana`).
    pub scope: String,
    /// The language its labels are written in.
    pub language: Language,
}

impl Report {
    /// Every KPI in [`KPI_KEYS`] order, with the previous period's value.
    pub fn kpis(&self) -> Vec<Kpi> {
        KPI_KEYS
            .iter()
            .map(|key| {
                let (unit, value) = kpi_value(key, &self.current, &self.manual_minutes);
                let (_, previous) = kpi_value(key, &self.previous, &self.manual_minutes);
                Kpi {
                    key,
                    unit,
                    value,
                    previous,
                }
            })
            .collect()
    }

    /// True when nothing at all happened in the period (an honest "no data" report).
    pub fn is_empty(&self) -> bool {
        let f = &self.current;
        f.leads_in == 0
            && f.qualified == 0
            && f.calls_placed == 0
            && f.providers.is_empty()
            && f.emails_sent == 0
            && f.nurture_enrolled == 0
            && f.nurture_exited == 0
            && f.tasks_open == 0
            && f.pipeline_failures == 0
            && f.dead_jobs.unwrap_or(0) == 0
            && f.converted == 0
    }

    /// The funnel: leads in → qualified → called → connected → appointments → converted.
    pub fn funnel(&self) -> Vec<Count> {
        let f = &self.current;
        [
            ("leads_in", f.leads_in),
            ("qualified", f.qualified),
            ("customers_called", f.customers_called),
            ("calls_connected", f.calls_connected),
            ("appointments", f.appointments),
            ("converted", f.converted),
        ]
        .into_iter()
        .map(|(key, count)| Count {
            key: key.to_owned(),
            count,
        })
        .collect()
    }
}

impl FromStr for ReportRange {
    type Err = FieldError;

    /// `YYYY-MM-DD..YYYY-MM-DD` in UTC, for tests and the CLI.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || FieldError::new("range", "invalid_range", format!("`{s}` is not FROM..TO"));
        let (from, to) = s.split_once("..").ok_or_else(bad)?;
        let parse = |d: &str| NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d").map_err(|_| bad());
        let (from, to) = (parse(from)?, parse(to)?);
        Self::resolve(ReportPeriod::Custom, Some(from), Some(to), from, Tz::UTC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    const BERLIN: Tz = chrono_tz::Europe::Berlin;

    #[test]
    fn a_day_across_the_spring_change_lasts_23_hours_and_has_23_buckets() {
        let r = ReportRange::resolve(
            ReportPeriod::Daily,
            Some(day("2026-03-29")),
            None,
            day("2026-12-05"),
            BERLIN,
        )
        .unwrap();
        assert_eq!(r.start.to_rfc3339(), "2026-03-28T23:00:00+00:00");
        assert_eq!(r.end.to_rfc3339(), "2026-03-29T22:00:00+00:00");
        assert_eq!(r.buckets().len(), 23);
        let autumn = ReportRange::resolve(
            ReportPeriod::Daily,
            Some(day("2026-10-25")),
            None,
            day("2026-12-05"),
            BERLIN,
        )
        .unwrap();
        assert_eq!((autumn.end - autumn.start).num_hours(), 25);
        assert_eq!(autumn.buckets().len(), 25);
    }

    #[test]
    fn weeks_run_monday_to_sunday_and_months_by_the_calendar() {
        let today = day("2026-12-05"); // a Saturday
        let w = ReportRange::resolve(ReportPeriod::Weekly, None, None, today, BERLIN).unwrap();
        assert_eq!(
            (w.first_day, w.last_day),
            (day("2026-11-30"), day("2026-12-06"))
        );
        assert_eq!(w.previous().first_day, day("2026-11-23"));
        let m = ReportRange::resolve(
            ReportPeriod::Monthly,
            Some(day("2026-03-15")),
            None,
            today,
            BERLIN,
        )
        .unwrap();
        assert_eq!(
            (m.first_day, m.last_day),
            (day("2026-03-01"), day("2026-03-31"))
        );
        let p = m.previous();
        assert_eq!(
            (p.first_day, p.last_day),
            (day("2026-02-01"), day("2026-02-28"))
        );
        assert_eq!(m.buckets().len(), 31);
    }

    #[test]
    fn custom_ranges_are_checked_and_compared_with_the_same_length_before() {
        let today = day("2026-12-05");
        let c = ReportRange::resolve(
            ReportPeriod::Custom,
            Some(day("2026-11-10")),
            Some(day("2026-11-19")),
            today,
            BERLIN,
        )
        .unwrap();
        assert_eq!(c.days(), 10);
        let p = c.previous();
        assert_eq!(
            (p.first_day, p.last_day),
            (day("2026-10-31"), day("2026-11-09"))
        );
        let reversed = ReportRange::resolve(
            ReportPeriod::Custom,
            Some(day("2026-11-19")),
            Some(day("2026-11-10")),
            today,
            BERLIN,
        )
        .unwrap_err();
        assert_eq!(
            (reversed.field.as_str(), reversed.code),
            ("to", "range_reversed")
        );
        let missing = ReportRange::resolve(ReportPeriod::Custom, Some(today), None, today, BERLIN)
            .unwrap_err();
        assert_eq!(missing.code, "required");
        let stray = ReportRange::resolve(ReportPeriod::Daily, None, Some(today), today, BERLIN)
            .unwrap_err();
        assert_eq!(stray.code, "unexpected");
        let long = ReportRange::resolve(
            ReportPeriod::Custom,
            Some(day("2024-01-01")),
            Some(day("2026-01-01")),
            today,
            BERLIN,
        )
        .unwrap_err();
        assert_eq!(long.code, "range_too_long");
    }

    #[test]
    fn a_zone_that_skips_midnight_starts_the_day_after_the_gap() {
        // America/Santiago sprang forward at 00:00 on 2026-09-06 (midnight did not exist).
        let tz: Tz = "America/Santiago".parse().unwrap();
        let start = day_start(tz, day("2026-09-06"));
        assert_eq!(
            start.with_timezone(&tz).format("%H:%M").to_string(),
            "01:00"
        );
    }

    #[test]
    fn kpis_compare_with_the_previous_period() {
        let r = ReportRange::resolve(ReportPeriod::Daily, None, None, day("2026-12-05"), BERLIN)
            .unwrap();
        let report = Report {
            range: r,
            previous_range: r.previous(),
            current: Figures {
                leads_in: 30,
                qualified: 10,
                score_sum: 550,
                calls_placed: 4,
                follow_ups: 2,
                reports: 1,
                ..Figures::default()
            },
            previous: Figures {
                leads_in: 20,
                ..Figures::default()
            },
            manual_minutes: ManualMinutes::default(),
            generated_at: r.start,
            scope: "all customers".into(),
            language: Language::parse("en").unwrap(),
        };
        let kpis = report.kpis();
        assert_eq!(kpis.len(), KPI_KEYS.len());
        let leads = &kpis[0];
        assert_eq!((leads.value, leads.previous), (Some(30.0), Some(20.0)));
        assert_eq!(leads.change_percent(), Some(50.0));
        let saved = kpis.iter().find(|k| k.key == "minutes_saved").unwrap();
        assert_eq!(
            saved.value,
            Some((30 * 5 + 10 * 15 + 4 * 10 + 2 * 5 + 30) as f64)
        );
        let avg = kpis.iter().find(|k| k.key == "average_score").unwrap();
        assert_eq!(
            (avg.value, avg.previous, avg.change_percent()),
            (Some(55.0), None, None),
            "a mean over nobody is undefined"
        );
        let qualified = kpis.iter().find(|k| k.key == "qualified").unwrap();
        assert_eq!(qualified.change_percent(), None, "from zero: no percentage");
        assert!(!report.is_empty());
    }
}
