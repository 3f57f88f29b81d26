//! Reports through the real server: KPIs checked against numbers computed independently from
//! a seeded dataset (both periods, two scopes), period boundaries across DST, the stored
//! renderings (PDF text via `pdftotext`, HTML with inline SVG), scheduled delivery to
//! recipients of different roles (each sees only their scope, mailed once), and bad input.

use chrono::{DateTime, Duration, TimeZone as _, Utc};
use crm_domain::{Clock as _, Role};
use crm_store::jobs::{self, NewJob};
use crm_tests::{TestApp, TestBackend, error_code, on_both_backends};
use serde_json::{Value, json};
use std::collections::BTreeMap;

on_both_backends!(
    kpis_match_a_seeded_dataset_counted_independently,
    a_sales_report_counts_only_their_leads,
    daily_periods_follow_local_days_across_dst,
    generated_reports_download_as_pdf_and_html_for_their_scope_only,
    scheduled_reports_reach_each_recipient_once_with_their_scope,
    bad_report_requests_are_refused_clearly,
    a_schedule_without_recipients_stores_the_report,
);

const REPORT: &str = "query($p: ReportPeriod!, $from: NaiveDate, $to: NaiveDate, $l: String) { \
    report(period: $p, from: $from, to: $to, language: $l) { period firstDay lastDay timeZone start end \
    previousFirstDay previousLastDay scope empty \
    kpis { key label unit value previous changePercent } \
    leadsBySource { key count } providers { provider calls averageDurationSeconds costUsd } \
    series { leadsPerBucket { key count } funnel { key count } dispositions { key count } \
    scoreDistribution { key count } } } }";

const GENERATE: &str = "mutation($p: ReportPeriod!, $f: ReportFormat, $from: NaiveDate, $to: NaiveDate, $l: String) { \
    generateReport(period: $p, format: $f, from: $from, to: $to, language: $l) { url format \
    report { id period firstDay lastDay scope trigger htmlUrl pdfUrl } \
    data { kpis { key value } } } }";

/// A small deterministic generator (xorshift), so the dataset is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::try_from(self.below(items.len() as u64)).unwrap()]
    }
}

fn sql_time(at: DateTime<Utc>) -> String {
    format!("'{}'", at.format("%Y-%m-%d %H:%M:%S"))
}

fn sql_opt_time(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "NULL".to_owned(), sql_time)
}

fn sql_text(v: Option<&str>) -> String {
    v.map_or_else(|| "NULL".to_owned(), |v| format!("'{v}'"))
}

/// An id that sorts by `at` (as UUIDv7 ids do), unique by `n`.
fn time_id(at: DateTime<Utc>, n: usize) -> String {
    format!(
        "{:08x}-{:04x}-7000-8000-{:012x}",
        at.timestamp(),
        at.timestamp_subsec_micros() % 0xffff,
        n
    )
}

struct SeedCustomer {
    id: String,
    owner: Option<&'static str>,
    source: Option<&'static str>,
    created_at: DateTime<Utc>,
    status: &'static str,
    updated_at: DateTime<Utc>,
}

struct SeedScore {
    customer: usize,
    at: DateTime<Utc>,
    score: i64,
}

struct SeedCall {
    customer: usize,
    provider: &'static str,
    dialed_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    disposition: Option<&'static str>,
    outcome: Option<&'static str>,
    duration: Option<f64>,
    cost: Option<f64>,
}

struct SeedEmail {
    customer: usize,
    id: String,
    category: &'static str,
    sent_at: Option<DateTime<Utc>>,
    events: Vec<(&'static str, DateTime<Utc>)>,
}

struct SeedTask {
    customer: usize,
    created_at: DateTime<Utc>,
    status: &'static str,
    completed_at: Option<DateTime<Utc>>,
    due_at: Option<DateTime<Utc>>,
}

struct Seed {
    customers: Vec<SeedCustomer>,
    scores: Vec<SeedScore>,
    calls: Vec<SeedCall>,
    emails: Vec<SeedEmail>,
    nurture: Vec<(usize, DateTime<Utc>, &'static str, DateTime<Utc>)>,
    tasks: Vec<SeedTask>,
    failed_runs: Vec<(usize, DateTime<Utc>)>,
    dead_jobs: Vec<DateTime<Utc>>,
}

/// 150 customers with scores, calls, emails, nurture, tasks, failed runs and dead jobs spread
/// over 2026-11-05 .. 2026-11-29 (both compared weeks and around them).
fn seed_data() -> Seed {
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let base = Utc.with_ymd_and_hms(2026, 11, 5, 0, 0, 0).unwrap();
    let span = 24 * 24 * 60; // minutes
    let at = |rng: &mut Rng| base + Duration::minutes(i64::try_from(rng.below(span)).unwrap());
    let mut seed = Seed {
        customers: Vec::new(),
        scores: Vec::new(),
        calls: Vec::new(),
        emails: Vec::new(),
        nurture: Vec::new(),
        tasks: Vec::new(),
        failed_runs: Vec::new(),
        dead_jobs: Vec::new(),
    };
    for i in 0..150 {
        let created_at = at(&mut rng);
        let converted = rng.below(6) == 0;
        let updated_at = created_at + Duration::minutes(i64::try_from(rng.below(9000)).unwrap());
        seed.customers.push(SeedCustomer {
            id: format!("00000000-0000-4000-8000-{i:012}"),
            owner: rng.pick(&[Some("ana"), Some("ben"), None]),
            source: rng.pick(&[Some("web"), Some("messe"), Some("partner"), None]),
            created_at,
            status: if converted { "customer" } else { "lead" },
            updated_at,
        });
        for _ in 0..rng.below(3) {
            seed.scores.push(SeedScore {
                customer: i,
                at: at(&mut rng),
                score: i64::try_from(rng.below(101)).unwrap(),
            });
        }
        for _ in 0..rng.below(3) {
            let dialed = (rng.below(5) != 0).then(|| at(&mut rng));
            let ended = dialed
                .filter(|_| rng.below(6) != 0)
                .map(|d| d + Duration::minutes(i64::try_from(rng.below(30)).unwrap()));
            let disposition = ended.map(|_| {
                rng.pick(&[
                    "answered",
                    "answered",
                    "no_answer",
                    "busy",
                    "voicemail",
                    "failed",
                ])
            });
            let answered = disposition == Some("answered");
            seed.calls.push(SeedCall {
                customer: i,
                provider: rng.pick(&["simulator", "retell"]),
                dialed_at: dialed,
                ended_at: ended,
                disposition,
                outcome: if answered {
                    rng.pick(&[Some("appointment"), Some("interested"), None])
                } else {
                    None
                },
                duration: answered.then(|| f64::from(u32::try_from(rng.below(600)).unwrap())),
                cost: ended.map(|_| f64::from(u32::try_from(rng.below(300)).unwrap()) / 100.0),
            });
        }
        for k in 0..rng.below(3) {
            let sent = (rng.below(4) != 0).then(|| at(&mut rng));
            let mut events = Vec::new();
            if let Some(sent) = sent {
                for kind in ["delivered", "opened", "bounced", "unsubscribed", "clicked"] {
                    if rng.below(3) == 0 {
                        events.push((
                            kind,
                            sent + Duration::minutes(i64::try_from(rng.below(4000)).unwrap()),
                        ));
                    }
                }
            }
            seed.emails.push(SeedEmail {
                customer: i,
                id: format!(
                    "00000000-0000-4000-9000-{:012}",
                    i * 10 + usize::try_from(k).unwrap()
                ),
                category: rng.pick(&["follow-up", "nurture"]),
                sent_at: sent,
                events,
            });
        }
        if rng.below(3) == 0 {
            let enrolled = at(&mut rng);
            let status = rng.pick(&["active", "exited"]);
            let updated = enrolled + Duration::minutes(i64::try_from(rng.below(8000)).unwrap());
            seed.nurture.push((i, enrolled, status, updated));
        }
        for _ in 0..rng.below(3) {
            let created_at = at(&mut rng);
            let status = rng.pick(&["open", "done", "canceled"]);
            seed.tasks.push(SeedTask {
                customer: i,
                created_at,
                status,
                completed_at: (status == "done").then(|| {
                    created_at + Duration::minutes(i64::try_from(rng.below(9000)).unwrap())
                }),
                due_at: (rng.below(3) != 0).then(|| at(&mut rng)),
            });
        }
        if rng.below(8) == 0 {
            seed.failed_runs.push((i, at(&mut rng)));
        }
    }
    for _ in 0..7 {
        seed.dead_jobs.push(at(&mut rng));
    }
    seed
}

async fn insert_seed(app: &TestApp, seed: &Seed) {
    let mut sql = String::new();
    for c in &seed.customers {
        sql.push_str(&format!(
            "INSERT INTO customers (id, name, status, source, owner, tags, search_text, created_at, updated_at) \
             VALUES ('{}', 'Kunde {}', '{}', {}, {}, '[]', '', {}, {});\n",
            c.id,
            c.id,
            c.status,
            sql_text(c.source),
            sql_text(c.owner),
            sql_time(c.created_at),
            sql_time(c.updated_at)
        ));
    }
    for (n, s) in seed.scores.iter().enumerate() {
        let priority = match s.score {
            70.. => "hot",
            40.. => "warm",
            _ => "cold",
        };
        sql.push_str(&format!(
            "INSERT INTO lead_scores (id, customer_id, score, priority, tags, next_action, reasons, config_version, cause, scored_at) \
             VALUES ('{}', '{}', {}, '{priority}', '[]', 'call', '[]', 'v', 'test', {});\n",
            time_id(s.at, n),
            seed.customers[s.customer].id,
            s.score,
            sql_time(s.at)
        ));
    }
    for (n, c) in seed.calls.iter().enumerate() {
        let id = format!("00000000-0000-4000-a000-{n:012}");
        sql.push_str(&format!(
            "INSERT INTO calls (id, customer_id, first_call_id, attempt, agent, provider, to_number, language, status, \
             disposition, outcome, final_attempt, priority, not_before, requested_by, dialed_at, ended_at, duration_secs, \
             cost_usd, created_at, updated_at) VALUES ('{id}', '{}', '{id}', 1, 'de', '{}', '+4930123456', 'de', '{}', \
             {}, {}, TRUE, 0, {}, 'test', {}, {}, {}, {}, {}, {});\n",
            seed.customers[c.customer].id,
            c.provider,
            if c.ended_at.is_some() { "ended" } else { "dialing" },
            sql_text(c.disposition),
            sql_text(c.outcome),
            sql_time(seed.customers[c.customer].created_at),
            sql_opt_time(c.dialed_at),
            sql_opt_time(c.ended_at),
            c.duration.map_or("NULL".to_owned(), |d| format!("{d:.1}")),
            c.cost.map_or("NULL".to_owned(), |d| format!("{d:.2}")),
            sql_time(seed.customers[c.customer].created_at),
            sql_time(seed.customers[c.customer].created_at),
        ));
    }
    for e in &seed.emails {
        sql.push_str(&format!(
            "INSERT INTO emails (id, customer_id, template, language, category, to_email, subject, status, sender, \
             variables, requested_by, created_at, updated_at, sent_at) VALUES ('{}', '{}', 'follow-up', 'de', '{}', \
             'x@example.com', 'Hallo', '{}', 'outbox', '{{}}', 'test', {}, {}, {});\n",
            e.id,
            seed.customers[e.customer].id,
            e.category,
            if e.sent_at.is_some() { "sent" } else { "queued" },
            sql_time(seed.customers[e.customer].created_at),
            sql_time(seed.customers[e.customer].created_at),
            sql_opt_time(e.sent_at)
        ));
        for (k, (kind, at)) in e.events.iter().enumerate() {
            sql.push_str(&format!(
                "INSERT INTO email_events (event_id, email_id, kind, email, at, received_at) \
                 VALUES ('{}-{k}', '{}', '{kind}', 'x@example.com', {}, {});\n",
                e.id,
                e.id,
                sql_time(*at),
                sql_time(*at)
            ));
        }
    }
    for (n, (c, enrolled, status, updated)) in seed.nurture.iter().enumerate() {
        sql.push_str(&format!(
            "INSERT INTO nurture_enrollments (customer_id, run_id, position, status, enrolled_at, updated_at) \
             VALUES ('{}', 'run-{n}', 1, '{status}', {}, {});\n",
            seed.customers[*c].id,
            sql_time(*enrolled),
            sql_time(*updated)
        ));
    }
    for (n, t) in seed.tasks.iter().enumerate() {
        sql.push_str(&format!(
            "INSERT INTO tasks (id, customer_id, title, status, created_by, created_at, updated_at, completed_at, due_at) \
             VALUES ('00000000-0000-4000-b000-{n:012}', '{}', 'Rückruf', '{}', 'test', {}, {}, {}, {});\n",
            seed.customers[t.customer].id,
            t.status,
            sql_time(t.created_at),
            sql_time(t.created_at),
            sql_opt_time(t.completed_at),
            sql_opt_time(t.due_at)
        ));
    }
    for (n, (c, finished)) in seed.failed_runs.iter().enumerate() {
        sql.push_str(&format!(
            "INSERT INTO pipeline_runs (id, customer_id, cause, status, created_at, updated_at, finished_at) \
             VALUES ('00000000-0000-4000-c000-{n:012}', '{}', 'created', 'failed', {}, {}, {});\n",
            seed.customers[*c].id,
            sql_time(*finished),
            sql_time(*finished),
            sql_time(*finished)
        ));
    }
    for (n, finished) in seed.dead_jobs.iter().enumerate() {
        sql.push_str(&format!(
            "INSERT INTO jobs (id, kind, payload, priority, status, run_at, attempts, max_attempts, created_at, updated_at, finished_at) \
             VALUES ('00000000-0000-4000-d000-{n:012}', 'import-lead', '{{}}', 0, 'dead', {}, 5, 5, {}, {}, {});\n",
            sql_time(*finished),
            sql_time(*finished),
            sql_time(*finished),
            sql_time(*finished)
        ));
    }
    app.db.execute_raw(&sql).await.unwrap();
}

/// The KPIs of `[start, end)` for owners `visible`, computed straight from the seed.
fn expected(
    seed: &Seed,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    visible: &dyn Fn(Option<&str>) -> bool,
) -> BTreeMap<&'static str, Option<f64>> {
    let within = |at: DateTime<Utc>| at >= start && at < end;
    let seen = |customer: usize| visible(seed.customers[customer].owner);
    let count = |n: usize| Some(n as f64);
    let leads = seed
        .customers
        .iter()
        .filter(|c| visible(c.owner) && within(c.created_at))
        .count();
    // Each customer's latest score in the period.
    let mut latest: BTreeMap<usize, (DateTime<Utc>, i64)> = BTreeMap::new();
    for s in seed
        .scores
        .iter()
        .filter(|s| seen(s.customer) && within(s.at))
    {
        let entry = latest.entry(s.customer).or_insert((s.at, s.score));
        if s.at >= entry.0 {
            *entry = (s.at, s.score);
        }
    }
    let scores: Vec<i64> = latest.values().map(|(_, s)| *s).collect();
    let dialed: Vec<&SeedCall> = seed
        .calls
        .iter()
        .filter(|c| seen(c.customer) && c.dialed_at.is_some_and(within))
        .collect();
    let ended: Vec<&SeedCall> = seed
        .calls
        .iter()
        .filter(|c| seen(c.customer) && c.ended_at.is_some_and(within))
        .collect();
    let connected = ended
        .iter()
        .filter(|c| c.disposition == Some("answered"))
        .count();
    let appointments = ended
        .iter()
        .filter(|c| c.outcome == Some("appointment"))
        .count();
    let durations: Vec<f64> = ended.iter().filter_map(|c| c.duration).collect();
    let sent: Vec<&SeedEmail> = seed
        .emails
        .iter()
        .filter(|e| seen(e.customer) && e.sent_at.is_some_and(within))
        .collect();
    let event_count = |kinds: &[&str]| {
        seed.emails
            .iter()
            .filter(|e| seen(e.customer))
            .map(|e| {
                kinds
                    .iter()
                    .filter(|kind| e.events.iter().any(|(k, at)| k == *kind && within(*at)))
                    .count()
            })
            .sum::<usize>()
    };
    let open_tasks: Vec<&SeedTask> = seed
        .tasks
        .iter()
        .filter(|t| {
            seen(t.customer)
                && t.created_at < end
                && (t.status == "open"
                    || (t.status == "done" && t.completed_at.is_some_and(|c| c >= end)))
        })
        .collect();
    let follow_ups = sent.iter().filter(|e| e.category == "follow-up").count();
    let all = visible(Some("ben")) && visible(Some("ana"));
    let minutes = leads * 5 + scores.len() * 15 + dialed.len() * 10 + follow_ups * 5;
    let pct = |part: usize, whole: usize| (whole > 0).then(|| part as f64 / whole as f64 * 100.0);
    BTreeMap::from([
        ("leads_in", count(leads)),
        ("qualified", count(scores.len())),
        ("hot", count(scores.iter().filter(|s| **s >= 70).count())),
        (
            "warm",
            count(scores.iter().filter(|s| (40..70).contains(*s)).count()),
        ),
        ("cold", count(scores.iter().filter(|s| **s < 40).count())),
        (
            "average_score",
            (!scores.is_empty()).then(|| scores.iter().sum::<i64>() as f64 / scores.len() as f64),
        ),
        ("calls_placed", count(dialed.len())),
        ("calls_connected", count(connected)),
        ("connect_rate", pct(connected, ended.len())),
        (
            "average_call_duration",
            (!durations.is_empty()).then(|| durations.iter().sum::<f64>() / durations.len() as f64),
        ),
        (
            "call_cost",
            Some(ended.iter().filter_map(|c| c.cost).sum::<f64>()),
        ),
        ("appointments", count(appointments)),
        ("appointment_rate", pct(appointments, connected)),
        (
            "converted",
            count(
                seed.customers
                    .iter()
                    .filter(|c| visible(c.owner) && c.status == "customer" && within(c.updated_at))
                    .count(),
            ),
        ),
        ("emails_sent", count(sent.len())),
        ("emails_delivered", count(event_count(&["delivered"]))),
        ("emails_opened", count(event_count(&["opened"]))),
        (
            "emails_bounced",
            count(event_count(&["bounced", "dropped"])),
        ),
        (
            "emails_unsubscribed",
            count(event_count(&["unsubscribed", "complained"])),
        ),
        (
            "nurture_enrolled",
            count(
                seed.nurture
                    .iter()
                    .filter(|(c, at, _, _)| seen(*c) && within(*at))
                    .count(),
            ),
        ),
        (
            "nurture_exited",
            count(
                seed.nurture
                    .iter()
                    .filter(|(c, _, status, at)| seen(*c) && *status == "exited" && within(*at))
                    .count(),
            ),
        ),
        ("tasks_open", count(open_tasks.len())),
        (
            "tasks_overdue",
            count(
                open_tasks
                    .iter()
                    .filter(|t| t.due_at.is_some_and(|d| d < end))
                    .count(),
            ),
        ),
        (
            "pipeline_failures",
            count(
                seed.failed_runs
                    .iter()
                    .filter(|(c, at)| seen(*c) && within(*at))
                    .count(),
            ),
        ),
        (
            "dead_jobs",
            all.then(|| seed.dead_jobs.iter().filter(|at| within(**at)).count() as f64),
        ),
        ("minutes_saved", count(minutes)),
    ])
}

fn actual(kpis: &Value, field: &str) -> BTreeMap<String, Option<f64>> {
    kpis.as_array()
        .unwrap()
        .iter()
        .map(|k| (k["key"].as_str().unwrap().to_owned(), k[field].as_f64()))
        .collect()
}

fn assert_kpis(kpis: &Value, field: &str, expected: &BTreeMap<&'static str, Option<f64>>) {
    let actual = actual(kpis, field);
    assert_eq!(actual.len(), expected.len(), "KPI keys: {actual:?}");
    for (key, want) in expected {
        let got = actual.get(*key).copied().flatten();
        match (got, want) {
            (Some(g), Some(w)) => assert!(
                (g - w).abs() < 1e-6,
                "{field} of {key}: the server says {g}, the seed says {w}"
            ),
            (g, w) => assert_eq!(g, *w, "{field} of {key}"),
        }
    }
}

async fn kpis_match_a_seeded_dataset_counted_independently(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let seed = seed_data();
    insert_seed(&app, &seed).await;
    let data = app
        .graphql_ok(REPORT, json!({ "p": "WEEKLY", "from": "2026-11-18" }))
        .await;
    let r = &data["report"];
    assert_eq!(r["firstDay"], "2026-11-16");
    assert_eq!(r["lastDay"], "2026-11-22");
    assert_eq!(r["previousFirstDay"], "2026-11-09");
    assert_eq!(r["timeZone"], "Europe/Berlin");
    assert_eq!(r["empty"], false);
    // Local midnights in Berlin (CET, UTC+1).
    let start = Utc.with_ymd_and_hms(2026, 11, 15, 23, 0, 0).unwrap();
    let end = start + Duration::days(7);
    let everyone = |_: Option<&str>| true;
    let want = expected(&seed, start, end, &everyone);
    assert!(
        want["leads_in"].unwrap() > 20.0 && want["calls_placed"].unwrap() > 5.0,
        "the seed reaches the period: {want:?}"
    );
    assert_kpis(&r["kpis"], "value", &want);
    let before = expected(&seed, start - Duration::days(7), start, &everyone);
    assert_kpis(&r["kpis"], "previous", &before);

    // Leads by source and per day, dispositions and providers, score buckets.
    let mut by_source: BTreeMap<String, i64> = BTreeMap::new();
    let mut per_day = [0_i64; 7];
    for c in seed
        .customers
        .iter()
        .filter(|c| c.created_at >= start && c.created_at < end)
    {
        *by_source
            .entry(c.source.unwrap_or("(none)").to_owned())
            .or_default() += 1;
        per_day[usize::try_from((c.created_at - start).num_days()).unwrap()] += 1;
    }
    let got: BTreeMap<String, i64> = r["leadsBySource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap().to_owned(),
                c["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, by_source);
    let buckets: Vec<i64> = r["series"]["leadsPerBucket"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_i64().unwrap())
        .collect();
    assert_eq!(buckets, per_day);
    assert_eq!(r["series"]["leadsPerBucket"][0]["key"], "11-16");
    let mut dispositions: BTreeMap<String, i64> = BTreeMap::new();
    let mut providers: BTreeMap<String, i64> = BTreeMap::new();
    for c in seed
        .calls
        .iter()
        .filter(|c| c.ended_at.is_some_and(|at| at >= start && at < end))
    {
        *dispositions
            .entry(c.disposition.unwrap().to_owned())
            .or_default() += 1;
        *providers.entry(c.provider.to_owned()).or_default() += 1;
    }
    let got: BTreeMap<String, i64> = r["series"]["dispositions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap().to_owned(),
                c["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, dispositions);
    let got: BTreeMap<String, i64> = r["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["provider"].as_str().unwrap().to_owned(),
                p["calls"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, providers);
    let histogram: i64 = r["series"]["scoreDistribution"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_i64().unwrap())
        .sum();
    assert_eq!(histogram as f64, want["qualified"].unwrap());
    let funnel = &r["series"]["funnel"];
    assert_eq!(funnel[0]["key"], "leads_in");
    assert_eq!(funnel[0]["count"].as_f64(), want["leads_in"]);
}

async fn a_sales_report_counts_only_their_leads(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let seed = seed_data();
    insert_seed(&app, &seed).await;
    let ana = app.token_for(Role::Sales, "ana");
    let response = app
        .graphql_as(
            &ana,
            REPORT,
            json!({ "p": "CUSTOM", "from": "2026-11-10", "to": "2026-11-24" }),
        )
        .await;
    assert!(response.get("errors").is_none(), "{response:#}");
    let r = &response["data"]["report"];
    let start = Utc.with_ymd_and_hms(2026, 11, 9, 23, 0, 0).unwrap();
    let end = Utc.with_ymd_and_hms(2026, 11, 24, 23, 0, 0).unwrap();
    let own_or_unassigned = |owner: Option<&str>| owner.is_none_or(|o| o == "ana");
    let want = expected(&seed, start, end, &own_or_unassigned);
    assert_kpis(&r["kpis"], "value", &want);
    let everyone = expected(&seed, start, end, &|_: Option<&str>| true);
    assert!(
        want["leads_in"] < everyone["leads_in"],
        "ben's leads are left out: {:?} < {:?}",
        want["leads_in"],
        everyone["leads_in"]
    );
    assert_eq!(
        want["dead_jobs"], None,
        "jobs belong to nobody: not in a sales report"
    );
    assert!(r["scope"].as_str().unwrap().contains("ana"));
}

async fn daily_periods_follow_local_days_across_dst(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    // 01:30 CEST on the day summer time ends (23:30 UTC the day before), and 23:30 CET that
    // evening (22:30 UTC): both belong to 2026-10-25 in Berlin.
    for (name, at) in [
        ("Früh", "2026-10-24 23:30:00"),
        ("Spät", "2026-10-25 22:30:00"),
        ("Danach", "2026-10-25 23:30:00"),
    ] {
        app.db
            .execute_raw(&format!(
                "INSERT INTO customers (id, name, status, tags, search_text, created_at, updated_at) \
                 VALUES ('{}', '{name}', 'lead', '[]', '', '{at}', '{at}')",
                uuid::Uuid::new_v4()
            ))
            .await
            .unwrap();
    }
    let data = app
        .graphql_ok(REPORT, json!({ "p": "DAILY", "from": "2026-10-25" }))
        .await;
    let r = &data["report"];
    assert_eq!(r["start"], "2026-10-24T22:00:00+00:00");
    assert_eq!(r["end"], "2026-10-25T23:00:00+00:00", "a 25-hour day");
    let buckets = r["series"]["leadsPerBucket"].as_array().unwrap();
    assert_eq!(buckets.len(), 25);
    assert_eq!(buckets[0]["key"], "00:00");
    assert_eq!(buckets[2]["key"], "02:00", "02:00 CEST");
    assert_eq!(buckets[3]["key"], "02:00", "02:00 CET, the hour repeated");
    let leads = actual(&r["kpis"], "value");
    assert_eq!(leads["leads_in"], Some(2.0));
    assert_eq!(buckets[1]["count"], 1, "01:30 CEST");
    assert_eq!(buckets[24]["count"], 1, "23:30 CET");
    let previous = actual(&r["kpis"], "previous");
    assert_eq!(previous["leads_in"], Some(0.0));
    // The spring day has 23 hours.
    let spring = app
        .graphql_ok(REPORT, json!({ "p": "DAILY", "from": "2026-03-29" }))
        .await;
    assert_eq!(
        spring["report"]["series"]["leadsPerBucket"]
            .as_array()
            .unwrap()
            .len(),
        23
    );
    // The next day's report has the lead created after midnight.
    let next = app
        .graphql_ok(REPORT, json!({ "p": "DAILY", "from": "2026-10-26" }))
        .await;
    assert_eq!(
        actual(&next["report"]["kpis"], "value")["leads_in"],
        Some(1.0)
    );
    assert_eq!(
        actual(&next["report"]["kpis"], "previous")["leads_in"],
        Some(2.0)
    );
}

async fn download(app: &TestApp, token: &str, url: &str) -> reqwest::Response {
    let path = url.find("/reports/").map_or(url, |i| &url[i..]);
    app.client
        .get(format!("{}{path}", app.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

fn pdf_text(pdf: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.pdf");
    std::fs::write(&file, pdf).unwrap();
    let out = std::process::Command::new("pdftotext")
        .args(["-layout", file.to_str().unwrap(), "-"])
        .output()
        .unwrap_or_else(|e| panic!("pdftotext (poppler-utils) must be installed: {e}"));
    assert!(out.status.success(), "pdftotext parses the PDF: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

async fn generated_reports_download_as_pdf_and_html_for_their_scope_only(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    for (name, owner, source) in [
        ("Jürgen Müller", Some("ben"), "Messe München"),
        ("Ана Петровић", None, "Сајам"),
        ("Lejla Hodžić", Some("ana"), "web"),
    ] {
        let mut input = json!({ "name": name, "source": source, "email": format!("{}@example.com", uuid::Uuid::new_v4().simple()) });
        if let Some(owner) = owner {
            input["owner"] = json!(owner);
        }
        app.create_customer(input).await;
    }
    let data = app
        .graphql_ok(GENERATE, json!({ "p": "DAILY", "f": "PDF", "l": "de" }))
        .await;
    let generated = &data["generateReport"];
    assert_eq!(generated["format"], "PDF");
    assert_eq!(generated["report"]["scope"], "all");
    assert_eq!(generated["report"]["trigger"], "api");
    assert!(
        generated["url"].as_str().unwrap().ends_with(".pdf"),
        "{generated}"
    );
    let response = download(&app, &app.token, generated["url"].as_str().unwrap()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/pdf");
    let pdf = response.bytes().await.unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    let text = pdf_text(&pdf);
    assert!(text.contains("Bericht"), "German title: {text}");
    assert!(text.contains("Messe München"), "umlauts survive: {text}");
    assert!(text.contains("Сајам"), "Cyrillic survives: {text}");
    let leads_label = crm_reports::label("leads_in", "de");
    let line = text
        .lines()
        .find(|l| l.contains(leads_label))
        .unwrap_or_else(|| panic!("the KPI {leads_label} is in the PDF: {text}"));
    assert!(line.contains('3'), "three leads today: {line}");

    // The HTML: self-contained, four inline charts.
    let html_url = generated["report"]["htmlUrl"].as_str().unwrap();
    let response = download(&app, &app.token, html_url).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    assert_eq!(html.matches("<svg").count(), 4);
    assert!(html.contains("Messe München"));

    // A sales user's report is theirs: it counts their and unassigned leads, and they cannot
    // fetch the admin's report, nor see it listed.
    let ana = app.token_for(Role::Sales, "ana");
    let own = app
        .graphql_as(&ana, GENERATE, json!({ "p": "DAILY", "f": "HTML" }))
        .await;
    assert!(own.get("errors").is_none(), "{own:#}");
    let own = &own["data"]["generateReport"];
    assert_eq!(own["report"]["scope"], "owner-or-unassigned:ana");
    let leads = own["data"]["kpis"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"] == "leads_in")
        .unwrap()["value"]
        .clone();
    assert_eq!(
        leads, 2.0,
        "Lejla (ana) and Ана (unassigned), not Jürgen (ben)"
    );
    let refused = download(&app, &ana, generated["url"].as_str().unwrap()).await;
    assert_eq!(refused.status(), 404, "the admin's report is not hers");
    let mine = download(&app, &ana, own["url"].as_str().unwrap()).await;
    assert_eq!(mine.status(), 200);
    assert!(!mine.text().await.unwrap().contains("Messe München"));
    let listed = app
        .graphql_as(&ana, "{ reports { nodes { id scope } } }", json!({}))
        .await;
    let nodes = listed["data"]["reports"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{listed}");
    assert_eq!(nodes[0]["id"], own["report"]["id"]);
    let all = app
        .graphql_ok("{ reports { nodes { id } } }", json!({}))
        .await;
    assert_eq!(all["reports"]["nodes"].as_array().unwrap().len(), 2);

    // No credentials, an integration key (no report rights), a bad id.
    let anonymous = app
        .client
        .get(format!(
            "{}/reports/{}.pdf",
            app.url,
            own["report"]["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let integration = app.token_for(Role::Integration, "zap");
    let forbidden = download(&app, &integration, own["url"].as_str().unwrap()).await;
    assert_eq!(forbidden.status(), 403);
    let denied = app
        .graphql_as(&integration, GENERATE, json!({ "p": "DAILY" }))
        .await;
    assert_eq!(error_code(&denied), "FORBIDDEN");
    let missing = download(&app, &app.token, "/reports/not-a-report.pdf").await;
    assert_eq!(missing.status(), 404);

    // Generating is audited.
    let audit = app
        .graphql_ok(
            "{ auditLog(filter: { action: \"report.generate\" }) { nodes { actor targetId } } }",
            json!({}),
        )
        .await;
    let entries = audit["auditLog"]["nodes"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{audit}");
}

fn outbox_files(app: &TestApp) -> Vec<String> {
    let dir = std::path::Path::new(&app.config.email.outbox.dir);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<String> = entries
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    files.sort();
    files
}

async fn enqueue_report(app: &TestApp, payload: Value) {
    jobs::enqueue(
        &app.db,
        &NewJob {
            kind: "generate-report".into(),
            payload: payload.to_string(),
            dedupe_key: None,
            priority: 0,
            run_at: app.clock.now(),
            max_attempts: 3,
        },
        app.clock.now(),
    )
    .await
    .unwrap();
}

async fn scheduled_reports_reach_each_recipient_once_with_their_scope(backend: TestBackend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.reports.recipients = vec![
            crm_api::config::ReportRecipient {
                email: "chefin@example.com".into(),
                name: "Maria Weber".into(),
                role: "manager".into(),
                ..Default::default()
            },
            crm_api::config::ReportRecipient {
                email: "leiter@example.com".into(),
                role: "admin".into(),
                ..Default::default()
            },
            crm_api::config::ReportRecipient {
                email: "ana@example.com".into(),
                role: "sales".into(),
                subject: "ana".into(),
                language: "bs".into(),
                ..Default::default()
            },
        ];
        config.jobs.schedules = vec![crm_api::config::ScheduleConfig {
            name: "daily-report".into(),
            cron: "0 18 * * *".into(),
            time_zone: "Europe/Berlin".into(),
            kind: "generate-report".into(),
            payload: r#"{"period": "daily"}"#.into(),
            catch_up_hours: 5,
        }];
    })
    .await;
    app.create_customer(json!({ "name": "Ben's Lead", "owner": "ben", "source": "Messe Wien", "email": "ben.lead@example.com" }))
        .await;
    app.create_customer(json!({ "name": "Ana's Lead", "owner": "ana", "source": "web", "email": "ana.lead@example.com" }))
        .await;
    // The scheduler fires the 18:00 report once, however often it ticks.
    let firing = Utc.with_ymd_and_hms(2026, 11, 25, 17, 0, 0).unwrap();
    app.clock.set(firing + Duration::minutes(1));
    let clock: std::sync::Arc<dyn crm_domain::Clock> = app.clock.clone();
    let scheduler = crm_api::app::scheduler(&app.config, app.db.clone(), clock)
        .unwrap()
        .unwrap();
    assert_eq!(scheduler.tick().await.unwrap().len(), 1);
    scheduler.tick().await.unwrap();
    app.run_jobs().await;
    let mails = outbox_files(&app);
    assert_eq!(mails.len(), 3, "one mail per recipient");
    for mail in &mails {
        assert!(mail.contains("application/pdf"), "the PDF is attached");
        assert!(mail.contains("/reports/"), "with a link to the HTML");
    }
    assert!(mails.iter().any(|m| m.contains("ana@example.com")));
    // Manager and admin share the all-customers report; ana has her own, in Bosnian.
    let stored = app
        .graphql_ok(
            "{ reports { nodes { id scope trigger language firstDay } } }",
            json!({}),
        )
        .await;
    let nodes = stored["reports"]["nodes"].as_array().unwrap();
    let mut scopes: Vec<&str> = nodes.iter().map(|n| n["scope"].as_str().unwrap()).collect();
    scopes.sort_unstable();
    assert_eq!(scopes, ["all", "owner-or-unassigned:ana"]);
    assert!(nodes.iter().all(|n| n["trigger"] == "schedule"));
    assert!(nodes.iter().all(|n| n["firstDay"] == "2026-11-25"));
    let ana_report = nodes
        .iter()
        .find(|n| n["scope"] == "owner-or-unassigned:ana")
        .unwrap();
    assert_eq!(ana_report["language"], "bs");
    let ana = app.token_for(Role::Sales, "ana");
    let pdf = download(
        &app,
        &ana,
        &format!("/reports/{}.pdf", ana_report["id"].as_str().unwrap()),
    )
    .await
    .bytes()
    .await
    .unwrap();
    let text = pdf_text(&pdf);
    assert!(text.contains("Izvještaj"), "Bosnian: {text}");
    assert!(
        !text.contains("Messe Wien"),
        "ben's lead is not in ana's report"
    );
    // The job again (a retry, or a second replica's firing): nothing new, nobody mailed twice.
    enqueue_report(&app, json!({ "period": "daily" })).await;
    app.run_jobs().await;
    assert_eq!(outbox_files(&app).len(), 3);
    let again = app
        .graphql_ok("{ reports { nodes { id } } }", json!({}))
        .await;
    assert_eq!(again["reports"]["nodes"].as_array().unwrap().len(), 2);
    // Only the managers, weekly.
    enqueue_report(&app, json!({ "period": "weekly", "roles": ["manager"] })).await;
    app.run_jobs().await;
    let mails = outbox_files(&app);
    assert_eq!(mails.len(), 4);
}

async fn bad_report_requests_are_refused_clearly(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let reversed = app
        .graphql(
            REPORT,
            json!({ "p": "CUSTOM", "from": "2026-11-20", "to": "2026-11-10" }),
        )
        .await;
    assert_eq!(error_code(&reversed), "VALIDATION_FAILED");
    assert!(
        reversed.to_string().contains("range_reversed"),
        "{reversed}"
    );
    let missing = app
        .graphql(REPORT, json!({ "p": "CUSTOM", "from": "2026-11-20" }))
        .await;
    assert_eq!(error_code(&missing), "VALIDATION_FAILED");
    let stray = app
        .graphql(REPORT, json!({ "p": "DAILY", "to": "2026-11-20" }))
        .await;
    assert_eq!(error_code(&stray), "VALIDATION_FAILED");
    let unknown = app.graphql(REPORT, json!({ "p": "HOURLY" })).await;
    assert!(unknown.get("errors").is_some(), "{unknown}");
    let bad_date = app
        .graphql(REPORT, json!({ "p": "DAILY", "from": "2026-13-40" }))
        .await;
    assert!(bad_date.get("errors").is_some(), "{bad_date}");
    let language = app
        .graphql(REPORT, json!({ "p": "DAILY", "l": "not a language" }))
        .await;
    assert_eq!(error_code(&language), "VALIDATION_FAILED");
    // An empty period is an honest "no data" report.
    let empty = app
        .graphql_ok(REPORT, json!({ "p": "MONTHLY", "from": "2020-02-10" }))
        .await;
    assert_eq!(empty["report"]["empty"], true);
    assert_eq!(empty["report"]["lastDay"], "2020-02-29");
    let values = actual(&empty["report"]["kpis"], "value");
    assert_eq!(values["leads_in"], Some(0.0));
    assert_eq!(values["average_score"], None);
    // A job with a bad payload dies with a clear error; the runner goes on.
    enqueue_report(&app, json!({ "period": "hourly" })).await;
    enqueue_report(
        &app,
        json!({ "period": "custom", "from": "2026-11-20", "to": "2026-11-10" }),
    )
    .await;
    app.run_jobs().await;
    let dead = app
        .graphql_ok(
            "{ jobs(filter: { status: DEAD }) { nodes { kind lastError } } }",
            json!({}),
        )
        .await;
    let errors: Vec<&str> = dead["jobs"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["lastError"].as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 2, "{dead}");
    assert!(errors.iter().any(|e| e.contains("hourly")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("before")), "{errors:?}");
}

async fn a_schedule_without_recipients_stores_the_report(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    app.create_customer(json!({ "name": "Solo", "email": "solo@example.com" }))
        .await;
    enqueue_report(&app, json!({ "period": "daily" })).await;
    app.run_jobs().await;
    assert!(outbox_files(&app).is_empty(), "nobody to mail");
    let stored = app
        .graphql_ok("{ reports { nodes { scope trigger pdfUrl } } }", json!({}))
        .await;
    let nodes = stored["reports"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["scope"], "all");
    let pdf = download(&app, &app.token, nodes[0]["pdfUrl"].as_str().unwrap()).await;
    assert_eq!(pdf.status(), 200);
}
