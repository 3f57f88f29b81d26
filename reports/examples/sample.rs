//! Writes a sample German report to `/tmp/crm-report-sample.html` and
//! `/tmp/crm-report-sample.pdf`, to look at the layout:
//!
//! ```sh
//! cargo run -p crm-reports --example sample
//! pdftoppm -png -r 60 /tmp/crm-report-sample.pdf /tmp/crm-report-sample
//! ```
//!
//! Arguments: a language other than German (`cargo run … -- sr`), and `empty` for an empty
//! daily report instead (`-- en empty`).

use chrono::NaiveDate;
use crm_domain::report::{
    Count, Figures, ManualMinutes, ProviderFigures, Report, ReportPeriod, ReportRange,
};
use crm_domain::values::Language;
use std::error::Error;

fn count(key: &str, count: i64) -> Count {
    Count {
        key: key.to_owned(),
        count,
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let language = args
        .iter()
        .find(|a| *a != "empty")
        .map_or("de", String::as_str);
    let empty = args.iter().any(|a| a == "empty");
    let today = NaiveDate::from_ymd_opt(2026, 12, 5).ok_or("bad date")?;
    let period = if empty {
        ReportPeriod::Daily
    } else {
        ReportPeriod::Weekly
    };
    let range = ReportRange::resolve(period, Some(today), None, today, chrono_tz::Europe::Berlin)?;
    let report = Report {
        range,
        previous_range: range.previous(),
        current: Figures {
            leads_in: 1234,
            leads_by_source: vec![
                count("Messe München", 512),
                count("Website-Formular", 398),
                count("Empfehlung", 201),
                count("LinkedIn-Kampagne „Winter“", 88),
                count("(none)", 35),
            ],
            leads_per_bucket: vec![150, 210, 180, 240, 200, 134, 120],
            qualified: 800,
            hot: 180,
            warm: 320,
            cold: 300,
            score_sum: 800 * 57,
            score_histogram: [12, 25, 44, 81, 118, 156, 149, 112, 68, 35],
            calls_placed: 520,
            customers_called: 470,
            calls_connected: 312,
            call_dispositions: vec![
                count("answered", 312),
                count("voicemail", 104),
                count("no_answer", 71),
                count("busy", 22),
                count("failed", 11),
            ],
            providers: vec![
                ProviderFigures {
                    provider: "vapi".into(),
                    calls: 410,
                    duration_secs: 410.0 * 131.0,
                    with_duration: 410,
                    cost_usd: 1234.56,
                },
                ProviderFigures {
                    provider: "retell".into(),
                    calls: 110,
                    duration_secs: 110.0 * 47.0,
                    with_duration: 100,
                    cost_usd: 98.1,
                },
            ],
            appointments: 61,
            converted: 24,
            emails_sent: 910,
            emails_delivered: 884,
            emails_opened: 415,
            emails_bounced: 26,
            emails_unsubscribed: 6,
            follow_ups: 140,
            nurture_enrolled: 75,
            nurture_exited: 13,
            tasks_open: 33,
            tasks_overdue: 4,
            pipeline_failures: 1,
            dead_jobs: Some(0),
            reports: 1,
        },
        previous: Figures {
            leads_in: 1010,
            qualified: 700,
            score_sum: 700 * 54,
            calls_placed: 600,
            calls_connected: 280,
            appointments: 50,
            converted: 24,
            emails_sent: 800,
            tasks_open: 40,
            ..Figures::default()
        },
        manual_minutes: ManualMinutes::default(),
        generated_at: chrono::Utc::now(),
        scope: "alle Kunden".into(),
        language: Language::parse(language)?,
    };
    let report = if empty {
        Report {
            current: Figures::default(),
            previous: Figures::default(),
            ..report
        }
    } else {
        report
    };
    std::fs::write("/tmp/crm-report-sample.html", crm_reports::html(&report))?;
    std::fs::write("/tmp/crm-report-sample.pdf", crm_reports::pdf(&report)?)?;
    println!("wrote /tmp/crm-report-sample.html and /tmp/crm-report-sample.pdf");
    Ok(())
}
