//! What a rendered report says, independent of the output format: the HTML and the PDF
//! renderer both walk the same [`Page`], so they cannot drift apart.
//!
//! Numbers are formatted the same way in every language (`1,234`, `12.5%`, `$1,234.56`):
//! the reports go to mixed-language teams, and one notation keeps them comparable.

use crate::labels::label;
use crm_domain::report::{Kpi, KpiUnit, Report, ReportPeriod};

/// The text of a missing value (a mean over nothing, a change from zero).
pub(crate) const MISSING: &str = "—";

/// How a table column aligns its cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    /// Text columns.
    Left,
    /// Number columns.
    Right,
}

/// One column of a [`Table`].
#[derive(Debug, Clone)]
pub(crate) struct Column {
    /// The header text.
    pub(crate) header: &'static str,
    /// How the cells align.
    pub(crate) align: Align,
    /// The share of the table's width (the shares of a table add up to 1).
    pub(crate) width: f32,
}

/// A titled table; `rows` hold the formatted (not yet escaped) cell texts.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    /// The section heading above the table.
    pub(crate) title: &'static str,
    /// The columns.
    pub(crate) columns: Vec<Column>,
    /// The rows, one text per column.
    pub(crate) rows: Vec<Vec<String>>,
    /// Shown in place of the rows when there are none.
    pub(crate) empty: &'static str,
}

/// Everything a report page shows, in order.
#[derive(Debug, Clone)]
pub(crate) struct Page {
    /// `Report – Weekly`.
    pub(crate) title: String,
    /// The language tag the labels are written in (`de`).
    pub(crate) language: String,
    /// `(label, value)` lines under the title: period, comparison, zone, generated, scope.
    pub(crate) meta: Vec<(&'static str, String)>,
    /// The "no data for this period" notice, for an empty report.
    pub(crate) notice: Option<&'static str>,
    /// KPIs, leads by source, calls by provider.
    pub(crate) tables: Vec<Table>,
    /// The heading of the charts section.
    pub(crate) charts_title: &'static str,
    /// The footer word for "page".
    pub(crate) page_word: &'static str,
}

/// Builds the page of `report`.
pub(crate) fn page(report: &Report) -> Page {
    let lang = report.language.primary();
    let l = |key: &str| label(key, lang);
    let period_key = match report.range.period {
        ReportPeriod::Daily => "period_daily",
        ReportPeriod::Weekly => "period_weekly",
        ReportPeriod::Monthly => "period_monthly",
        ReportPeriod::Custom => "period_custom",
    };
    let tz = report.range.tz;
    let generated = report
        .generated_at
        .with_timezone(&tz)
        .format("%Y-%m-%d %H:%M")
        .to_string();
    let meta = vec![
        (l("period"), report.range.to_string()),
        (l("compared_with"), report.previous_range.to_string()),
        (l("time_zone"), tz.name().to_owned()),
        (l("generated_at"), format!("{generated} ({})", tz.name())),
        (l("scope"), report.scope.clone()),
    ];
    Page {
        title: format!("{} – {}", l("report"), l(period_key)),
        language: lang.to_owned(),
        meta,
        notice: report.is_empty().then(|| l("no_data")),
        tables: vec![
            kpi_table(report, lang),
            sources_table(report, lang),
            providers_table(report, lang),
        ],
        charts_title: l("charts"),
        page_word: l("page"),
    }
}

fn kpi_table(report: &Report, lang: &str) -> Table {
    let rows = report
        .kpis()
        .iter()
        .map(|kpi| {
            vec![
                label(kpi.key, lang).to_owned(),
                format_value(kpi.unit, kpi.value),
                format_value(kpi.unit, kpi.previous),
                format_change(kpi),
            ]
        })
        .collect();
    Table {
        title: label("kpis", lang),
        columns: vec![
            column(label("kpi", lang), Align::Left, 0.40),
            column(label("value", lang), Align::Right, 0.21),
            column(label("previous", lang), Align::Right, 0.21),
            column(label("change", lang), Align::Right, 0.18),
        ],
        rows,
        empty: label("no_entries", lang),
    }
}

fn sources_table(report: &Report, lang: &str) -> Table {
    let total = report.current.leads_in;
    let rows = report
        .current
        .leads_by_source
        .iter()
        .map(|c| {
            let share = (total > 0).then(|| c.count as f64 / total as f64 * 100.0);
            vec![
                c.key.clone(),
                format_count(c.count as f64),
                format_value(KpiUnit::Percent, share),
            ]
        })
        .collect();
    Table {
        title: label("leads_by_source", lang),
        columns: vec![
            column(label("source", lang), Align::Left, 0.58),
            column(label("leads", lang), Align::Right, 0.21),
            column(label("share", lang), Align::Right, 0.21),
        ],
        rows,
        empty: label("no_entries", lang),
    }
}

fn providers_table(report: &Report, lang: &str) -> Table {
    let rows = report
        .current
        .providers
        .iter()
        .map(|p| {
            vec![
                p.provider.clone(),
                format_count(p.calls as f64),
                format_value(KpiUnit::Seconds, p.average_duration()),
                format_value(KpiUnit::Usd, Some(p.cost_usd)),
            ]
        })
        .collect();
    Table {
        title: label("providers", lang),
        columns: vec![
            column(label("provider", lang), Align::Left, 0.37),
            column(label("calls", lang), Align::Right, 0.21),
            column(label("average_duration", lang), Align::Right, 0.21),
            column(label("cost", lang), Align::Right, 0.21),
        ],
        rows,
        empty: label("no_entries", lang),
    }
}

fn column(header: &'static str, align: Align, width: f32) -> Column {
    Column {
        header,
        align,
        width,
    }
}

/// `value` in `unit`, or [`MISSING`]:
///
/// - count: `1,234`
/// - percent: `12.5%`
/// - score: `55.0`
/// - seconds: `42 s` under a minute, `2:05` under an hour, `1:02:05` beyond
/// - usd: `$1,234.56`
/// - minutes: `1,250 min (20.8 h)`
pub(crate) fn format_value(unit: KpiUnit, value: Option<f64>) -> String {
    let Some(v) = value.filter(|v| v.is_finite()) else {
        return MISSING.to_owned();
    };
    match unit {
        KpiUnit::Count => format_count(v),
        KpiUnit::Percent => format!("{}%", format_decimal(v, 1)),
        KpiUnit::Score => format_decimal(v, 1),
        KpiUnit::Seconds => format_seconds(v),
        KpiUnit::Usd => {
            let sign = if v < 0.0 { "-" } else { "" };
            format!("{sign}${}", format_decimal(v.abs(), 2))
        }
        KpiUnit::Minutes => format!(
            "{} min ({} h)",
            format_count(v),
            format_decimal(v / 60.0, 1)
        ),
    }
}

/// The change of `kpi` against the previous period: `▲ 50.0%`, `▼ 12.5%`, `0.0%`, or
/// [`MISSING`] when it is undefined.
pub(crate) fn format_change(kpi: &Kpi) -> String {
    match kpi.change_percent().filter(|c| c.is_finite()) {
        None => MISSING.to_owned(),
        Some(c) if c > 0.0 => format!("▲ {}%", format_decimal(c, 1)),
        Some(c) if c < 0.0 => format!("▼ {}%", format_decimal(c.abs(), 1)),
        Some(_) => "0.0%".to_owned(),
    }
}

/// A whole number with thousands separators (`-1,234`).
pub(crate) fn format_count(value: f64) -> String {
    let rounded = value.round();
    let sign = if rounded < 0.0 { "-" } else { "" };
    format!("{sign}{}", group(&format!("{:.0}", rounded.abs())))
}

/// `value` with `decimals` decimals and thousands separators (`1,234.56`).
fn format_decimal(value: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, value.abs());
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let sign = if value < 0.0 && text.chars().any(|c| ('1'..='9').contains(&c)) {
        "-"
    } else {
        ""
    };
    if fraction.is_empty() {
        format!("{sign}{}", group(whole))
    } else {
        format!("{sign}{}.{fraction}", group(whole))
    }
}

/// Inserts `,` every three digits from the right of a string of digits.
fn group(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn format_seconds(value: f64) -> String {
    let total = value.round().max(0.0) as u64;
    if total < 60 {
        format!("{total} s")
    } else if total < 3600 {
        format!("{}:{:02}", total / 60, total % 60)
    } else {
        format!(
            "{}:{:02}:{:02}",
            total / 3600,
            (total % 3600) / 60,
            total % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_by_their_unit() {
        let f = |unit, v| format_value(unit, Some(v));
        assert_eq!(f(KpiUnit::Count, 1_234_567.0), "1,234,567");
        assert_eq!(f(KpiUnit::Count, 999.0), "999");
        assert_eq!(f(KpiUnit::Count, 0.0), "0");
        assert_eq!(f(KpiUnit::Percent, 12.345), "12.3%");
        assert_eq!(f(KpiUnit::Score, 55.0), "55.0");
        assert_eq!(f(KpiUnit::Seconds, 42.4), "42 s");
        assert_eq!(f(KpiUnit::Seconds, 125.0), "2:05");
        assert_eq!(f(KpiUnit::Seconds, 3725.0), "1:02:05");
        assert_eq!(f(KpiUnit::Usd, 1234.564), "$1,234.56");
        assert_eq!(f(KpiUnit::Usd, -0.5), "-$0.50");
        assert_eq!(f(KpiUnit::Minutes, 1250.0), "1,250 min (20.8 h)");
        assert_eq!(format_value(KpiUnit::Count, None), MISSING);
        assert_eq!(format_value(KpiUnit::Percent, Some(f64::NAN)), MISSING);
    }

    #[test]
    fn changes_carry_an_arrow_or_a_dash() {
        let kpi = |value, previous| Kpi {
            key: "leads_in",
            unit: KpiUnit::Count,
            value,
            previous,
        };
        assert_eq!(format_change(&kpi(Some(30.0), Some(20.0))), "▲ 50.0%");
        assert_eq!(format_change(&kpi(Some(15.0), Some(20.0))), "▼ 25.0%");
        assert_eq!(format_change(&kpi(Some(0.0), Some(0.0))), "0.0%");
        assert_eq!(format_change(&kpi(Some(3.0), Some(0.0))), MISSING);
        assert_eq!(format_change(&kpi(None, Some(3.0))), MISSING);
    }
}
