//! Renders hand-built reports and checks the output: charts parse as SVG, the HTML carries
//! every KPI and escapes user data, the PDF's text (through `pdftotext`) has the values,
//! umlauts, Cyrillic and chart labels, and long tables spill onto more pages.

use super::*;
use crm_domain::report::{
    Count, Figures, KPI_KEYS, ManualMinutes, ProviderFigures, ReportPeriod, ReportRange,
};
use crm_domain::values::Language;
use std::process::Command;

const BERLIN: chrono_tz::Tz = chrono_tz::Europe::Berlin;
const SCRIPT_SOURCE: &str = "<script>alert(1)</script>";

fn day(s: &str) -> chrono::NaiveDate {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn count(key: &str, count: i64) -> Count {
    Count {
        key: key.to_owned(),
        count,
    }
}

/// A week (2026-11-30 – 2026-12-06) with something everywhere.
fn report(language: &str) -> Report {
    let range = ReportRange::resolve(
        ReportPeriod::Weekly,
        Some(day("2026-12-02")),
        None,
        day("2026-12-05"),
        BERLIN,
    )
    .unwrap();
    Report {
        range,
        previous_range: range.previous(),
        current: Figures {
            leads_in: 1234,
            leads_by_source: vec![
                count("Messe München", 700),
                count("web", 500),
                count(SCRIPT_SOURCE, 34),
            ],
            leads_per_bucket: vec![150, 210, 180, 240, 200, 134, 120],
            qualified: 800,
            hot: 200,
            warm: 300,
            cold: 300,
            score_sum: 800 * 55,
            score_histogram: [10, 20, 40, 80, 120, 160, 150, 110, 70, 40],
            calls_placed: 500,
            customers_called: 450,
            calls_connected: 300,
            call_dispositions: vec![
                count("answered", 300),
                count("voicemail", 120),
                count("no_answer", 80),
            ],
            providers: vec![
                ProviderFigures {
                    provider: "vapi".into(),
                    calls: 400,
                    duration_secs: 400.0 * 125.0,
                    with_duration: 400,
                    cost_usd: 1234.56,
                },
                ProviderFigures {
                    provider: "simulator".into(),
                    calls: 100,
                    duration_secs: 0.0,
                    with_duration: 0,
                    cost_usd: 0.0,
                },
            ],
            appointments: 60,
            converted: 25,
            emails_sent: 900,
            emails_delivered: 880,
            emails_opened: 410,
            emails_bounced: 20,
            emails_unsubscribed: 5,
            follow_ups: 10,
            nurture_enrolled: 70,
            nurture_exited: 12,
            tasks_open: 33,
            tasks_overdue: 4,
            pipeline_failures: 1,
            dead_jobs: Some(2),
            reports: 1,
        },
        previous: Figures {
            leads_in: 1000,
            calls_placed: 600,
            ..Figures::default()
        },
        manual_minutes: ManualMinutes::default(),
        generated_at: day("2026-12-07").and_hms_opt(6, 30, 0).unwrap().and_utc(),
        scope: "all customers".into(),
        language: Language::parse(language).unwrap(),
    }
}

fn empty_report(language: &str) -> Report {
    let full = report(language);
    let range = ReportRange::resolve(
        ReportPeriod::Daily,
        Some(day("2026-12-05")),
        None,
        day("2026-12-05"),
        BERLIN,
    )
    .unwrap();
    Report {
        range,
        previous_range: range.previous(),
        current: Figures::default(),
        previous: Figures::default(),
        ..full
    }
}

/// The values the KPI table must show for [`report`], worked out by hand.
const EXPECTED_VALUES: &[&str] = &[
    "1,234",                // leads in
    "▲ 23.4%",              // 1,234 against 1,000
    "55.0",                 // average score
    "60.0%",                // connect rate: 300 of 500 ended calls
    "2:05",                 // average call duration
    "$1,234.56",            // call cost
    "20.0%",                // appointment rate: 60 of 300
    "▼ 16.7%",              // calls placed: 500 against 600
    "23,250 min (387.5 h)", // 1234·5 + 800·15 + 500·10 + 10·5 + 1·30
];

fn write_pdf(report: &Report) -> (tempfile::TempDir, std::path::PathBuf) {
    let bytes = pdf(report).unwrap();
    assert!(bytes.starts_with(b"%PDF-"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.pdf");
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

fn pdf_text(report: &Report) -> String {
    let (_dir, path) = write_pdf(report);
    let out = Command::new("pdftotext")
        .arg("-layout")
        .arg(&path)
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils) must be installed");
    assert!(out.status.success(), "pdftotext failed: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn pdf_pages(report: &Report) -> usize {
    let (_dir, path) = write_pdf(report);
    let out = Command::new("pdfinfo")
        .arg(&path)
        .output()
        .expect("pdfinfo (poppler-utils) must be installed");
    let info = String::from_utf8(out.stdout).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("Pages:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn assert_valid_svg(name: &str, svg: &str) {
    usvg::roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{name}: bad XML: {e}"));
    usvg::Tree::from_str(svg, &usvg::Options::default())
        .unwrap_or_else(|e| panic!("{name}: usvg refused it: {e}"));
    assert!(!svg.contains("NaN"), "{name}: NaN in {svg}");
}

#[test]
fn charts_are_valid_svg_and_carry_their_labels() {
    let report = report("en");
    let charts = charts(&report);
    let expected: [(&str, &str, Vec<String>); 4] = [
        (
            "leads_per_day",
            &charts.leads_per_day,
            vec!["Leads per day".into(), "11-30".into(), "Day".into()],
        ),
        (
            "funnel",
            &charts.funnel,
            [
                "Funnel",
                "New leads",
                "Qualified",
                "Customers called",
                "Calls connected",
                "Appointments",
                "Converted",
                "1,234",
            ]
            .map(String::from)
            .to_vec(),
        ),
        (
            "dispositions",
            &charts.dispositions,
            vec![
                "Call outcomes".into(),
                "answered".into(),
                "voicemail".into(),
            ],
        ),
        (
            "score_distribution",
            &charts.score_distribution,
            std::iter::once("Score distribution".to_owned())
                .chain(charts::score_bucket_labels())
                .collect(),
        ),
    ];
    for (name, svg, labels) in expected {
        assert_valid_svg(name, svg);
        for label in labels {
            assert!(svg.contains(&label), "{name} lacks {label:?}");
        }
    }
    assert!(charts.score_distribution.contains("90–100"));
}

#[test]
fn charts_of_an_empty_daily_report_are_valid_and_say_so() {
    let report = empty_report("de");
    let charts = charts(&report);
    for (name, svg) in ["leads_per_day", "funnel", "dispositions", "score"]
        .into_iter()
        .zip(charts.all())
    {
        assert_valid_svg(name, svg);
        assert!(svg.contains("Keine Daten"), "{name} lacks the no-data note");
    }
    // A daily report counts per hour.
    assert!(charts.leads_per_day.contains("Leads pro Stunde"));
    assert!(charts.leads_per_day.contains("00:00"));
}

#[test]
fn charts_escape_their_labels_merge_small_outcomes_and_thin_out_long_axes() {
    let mut report = report("en");
    report.current.call_dispositions = (0..15)
        .map(|i| count(&format!("outcome <{i:02}> & co"), 100 - i))
        .collect();
    let range = ReportRange::resolve(
        ReportPeriod::Custom,
        Some(day("2026-01-01")),
        Some(day("2026-12-31")),
        day("2026-12-05"),
        BERLIN,
    )
    .unwrap();
    report.range = range;
    report.current.leads_per_bucket = (0..365).collect();
    let charts = charts(&report);
    assert_valid_svg("dispositions", &charts.dispositions);
    assert!(charts.dispositions.contains("outcome &lt;00&gt; &amp; co"));
    assert!(charts.dispositions.contains("outcome &lt;08&gt; &amp; co"));
    assert!(
        !charts.dispositions.contains("outcome &lt;09&gt;"),
        "merged into other"
    );
    assert!(charts.dispositions.contains("\nOther\n"));
    // 6 merged outcomes: 91 + 90 + … + 86.
    assert!(charts.dispositions.contains("\n531\n"));
    assert_valid_svg("leads_per_day", &charts.leads_per_day);
    assert!(charts.leads_per_day.contains("\n01-01\n"));
    let day_labels =
        charts.leads_per_day.matches(">12-").count() + charts.leads_per_day.matches(">01-").count();
    assert!(
        day_labels < 20,
        "a year of days is labelled sparsely: {day_labels}"
    );
}

#[test]
fn html_shows_every_kpi_escapes_user_data_and_loads_nothing() {
    let html = html(&report("en"));
    assert!(html.starts_with("<!DOCTYPE html>"));
    for key in KPI_KEYS {
        assert!(html.contains(label(key, "en")), "label of {key}");
    }
    for value in EXPECTED_VALUES {
        assert!(html.contains(value), "value {value}");
    }
    assert!(html.contains("Messe München"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains(SCRIPT_SOURCE));
    assert!(!html.to_lowercase().contains("<script"));
    assert_eq!(html.matches("<svg").count(), 4);
    assert!(html.contains("2026-11-30 – 2026-12-06"));
    assert!(html.contains("Europe/Berlin"));
    assert!(
        html.contains("2026-12-07 07:30 (Europe/Berlin)"),
        "generated in the zone"
    );
    assert!(html.contains("all customers"));
    assert!(html.contains("Report – Weekly"));
    assert!(!html.contains("No data for this period."));
    let lower = html.to_lowercase();
    for reference in ["src=", "href=", "url(", "@import", "<link"] {
        assert!(!lower.contains(reference), "external resource: {reference}");
    }
    for scheme in ["http://", "https://"] {
        // The only URL allowed is the SVG namespace, which loads nothing.
        let loaded = lower.matches(scheme).count();
        let namespaces = lower
            .matches("xmlns=\"http://www.w3.org/2000/svg\"")
            .count();
        assert_eq!(loaded, if scheme == "http://" { namespaces } else { 0 });
    }
}

#[test]
fn html_of_an_empty_report_says_so_and_still_has_the_table() {
    let html = html(&empty_report("en"));
    assert!(html.contains("No data for this period."));
    assert!(html.contains(label("leads_in", "en")));
    assert!(html.contains("<td class=\"num\">0</td>"));
    assert!(html.contains("Report – Daily"));
    assert_eq!(html.matches("<svg").count(), 4);
}

#[test]
fn pdf_text_has_values_umlauts_and_chart_labels() {
    let text = pdf_text(&report("de"));
    for value in EXPECTED_VALUES {
        assert!(text.contains(value), "value {value} in\n{text}");
    }
    assert!(text.contains("Messe München"), "{text}");
    assert!(text.contains("Geöffnete E-Mails"), "{text}");
    assert!(text.contains("Bericht – Wöchentlich"), "{text}");
    assert!(
        text.contains(SCRIPT_SOURCE),
        "the PDF shows user data as it is"
    );
    // Chart labels exist only inside the SVG charts: they survive only if `sans-serif` is
    // mapped to the bundled font (DEPENDENCIES.md pitfall 14).
    for chart_label in [
        "90–100",
        "Angerufene Kunden",
        "voicemail",
        "Anrufergebnisse",
    ] {
        assert!(
            text.contains(chart_label),
            "chart label {chart_label} in\n{text}"
        );
    }
}

#[test]
fn pdf_in_serbian_is_cyrillic() {
    let text = pdf_text(&report("sr"));
    assert!(text.contains("Извештај"), "{text}");
    assert!(text.contains("Кључни показатељи"), "{text}");
    assert!(text.contains("Расподела скора"), "chart title in\n{text}");
}

#[test]
fn pdf_tables_continue_on_further_pages() {
    let short = report("en");
    let mut long = report("en");
    long.current.leads_by_source = (0..120)
        .map(|i| count(&format!("source number {i:03}"), 120 - i))
        .collect();
    let (short_pages, long_pages) = (pdf_pages(&short), pdf_pages(&long));
    assert!(long_pages > 1);
    assert!(
        long_pages >= short_pages + 2,
        "120 rows need two more pages: {short_pages} → {long_pages}"
    );
    let text = pdf_text(&long);
    for i in [0, 59, 119] {
        assert!(text.contains(&format!("source number {i:03}")), "row {i}");
    }
    assert!(
        text.matches("Source").count() >= 2,
        "the header repeats on the next page"
    );
    assert!(text.contains(&format!("Page {long_pages} / {long_pages}")));
}

#[test]
fn pdf_of_an_empty_report_says_so() {
    let text = pdf_text(&empty_report("de"));
    assert!(text.contains("Keine Daten für diesen Zeitraum."), "{text}");
    assert!(text.contains("Neue Leads"), "{text}");
}
