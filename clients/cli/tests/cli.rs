//! The `crm` binary against a real server (the `TestApp` of crm-tests; the import on both
//! storage backends, the rest on SQLite).
#![expect(
    clippy::expect_used,
    reason = "a test fails loudly when the binary cannot run"
)]

use crm_tests::{TestApp, TestBackend, on_both_backends};
use std::process::{Command, Output, Stdio};

fn crm(app: &TestApp, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crm"))
        .args(args)
        .env("CRM_URL", &app.url)
        .env("CRM_TOKEN", &app.token)
        .output()
        .expect("the crm binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_list_and_errors_through_the_cli() {
    let app = TestApp::spawn(TestBackend::Sqlite).await;
    let created = tokio::task::block_in_place(|| {
        crm(
            &app,
            &[
                "--json",
                "customer",
                "create",
                "--name",
                "Ana Hodžić",
                "--email",
                "Ana@Firma.ba",
                "--tag",
                "Messe",
            ],
        )
    });
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&created.stdout).expect("JSON output");
    assert_eq!(json["createCustomer"]["email"], "ana@firma.ba");

    let listed = tokio::task::block_in_place(|| crm(&app, &["customers", "--text", "hodžić"]));
    assert!(listed.status.success());
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(
        table.contains("Ana Hodžić") && table.contains("messe"),
        "{table}"
    );

    let duplicate = tokio::task::block_in_place(|| {
        crm(
            &app,
            &[
                "customer",
                "create",
                "--name",
                "Twin",
                "--email",
                "ana@firma.ba",
            ],
        )
    });
    assert_eq!(duplicate.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&duplicate.stderr);
    assert!(stderr.contains("DUPLICATE"), "{stderr}");

    let invalid = tokio::task::block_in_place(|| {
        crm(
            &app,
            &["customer", "create", "--name", "X", "--email", "nope"],
        )
    });
    assert_eq!(invalid.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&invalid.stderr);
    assert!(
        stderr.contains("VALIDATION_FAILED") && stderr.contains("input.email"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qualify_lead_prints_the_score_with_its_reasons() {
    let app = TestApp::spawn(TestBackend::Sqlite).await;
    let id = app
        .create_customer(serde_json::json!({
            "name": "Jürgen Müller", "email": "j@firma.de", "phone": "030 123456",
            "company": "Müller GmbH", "language": "de", "source": "webform",
        }))
        .await;
    let scored = tokio::task::block_in_place(|| crm(&app, &["qualify-lead", &id]));
    assert!(
        scored.status.success(),
        "{}",
        String::from_utf8_lossy(&scored.stderr)
    );
    let text = String::from_utf8_lossy(&scored.stdout);
    for expected in [
        "55 / 100",
        "WARM",
        "CALL",
        "+15.0",
        "has_phone",
        "corporate address at firma.de",
    ] {
        assert!(text.contains(expected), "`{expected}` missing in:\n{text}");
    }

    app.run_jobs().await;
    let runs = tokio::task::block_in_place(|| crm(&app, &["pipeline-runs", "--customer", &id]));
    let text = String::from_utf8_lossy(&runs.stdout);
    let steps: Vec<Vec<&str>> = text
        .lines()
        .map(|line| line.split_whitespace().collect())
        .filter(|words: &Vec<&str>| words.len() >= 3 && words[0].parse::<u32>().is_ok())
        .collect();
    assert_eq!(
        steps.iter().map(|w| (w[1], w[2])).collect::<Vec<_>>(),
        [
            ("qualify-lead", "done"),
            ("decide", "done"),
            ("voice-call", "done")
        ],
        "{text}"
    );
    assert!(text.contains("completed"), "{text}");

    let missing = tokio::task::block_in_place(|| crm(&app, &["qualify-lead", "nope"]));
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("VALIDATION_FAILED"));
}

on_both_backends!(import_lead_uploads_follows_and_reports);

/// Runs `crm` with `input` on its standard input.
fn crm_with_stdin(app: &TestApp, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_crm"))
        .args(args)
        .env("CRM_URL", &app.url)
        .env("CRM_TOKEN", &app.token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the crm binary runs");
    child
        .stdin
        .take()
        .expect("a stdin pipe")
        .write_all(input)
        .expect("the input is written");
    child.wait_with_output().expect("crm ends")
}

async fn customer_count(app: &TestApp) -> usize {
    app.graphql_ok(
        "{ customers(first: 100) { nodes { id } } }",
        serde_json::json!({}),
    )
    .await["customers"]["nodes"]
        .as_array()
        .map_or(0, Vec::len)
}

async fn import_lead_uploads_follows_and_reports(backend: TestBackend) {
    // The server runs its own worker here, as `crm-server serve` does.
    let app = TestApp::spawn_with(backend, |c| c.jobs.workers = 1).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("Messe.csv");
    std::fs::write(
        &file,
        "Name;E-Mail;Telefon;Notiz\nAna Hodžić;ana@firma.ba;+387 33 250 300;\"Stand 4\nHalle 2\"\nKein Kontakt;;;\nJürgen;j@firma.de;030 123456;\n",
    )
    .expect("the file is written");
    let path = file.display().to_string();

    // A dry run reports what would happen and changes nothing.
    let dry = tokio::task::block_in_place(|| crm(&app, &["import-lead", &path, "--dry-run"]));
    let stdout = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(
        stdout.contains(
            "completed (dry run: nothing was changed): 3 rows — 2 created, 0 updated, 0 merged, 0 skipped, 1 invalid"
        ),
        "{stdout}"
    );
    assert_eq!(customer_count(&app).await, 0);

    let issues = dir.path().join("issues.csv");
    let issues_path = issues.display().to_string();
    let imported = tokio::task::block_in_place(|| {
        crm(
            &app,
            &[
                "import-lead",
                &path,
                "--tag",
                "q4",
                "--issues-csv",
                &issues_path,
            ],
        )
    });
    let stdout = String::from_utf8_lossy(&imported.stdout);
    assert!(
        imported.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    assert!(
        stdout.contains("completed: 3 rows — 2 created, 0 updated, 0 merged, 0 skipped, 1 invalid"),
        "{stdout}"
    );
    assert!(stdout.contains("row 2: email contact_required"), "{stdout}");
    let csv = std::fs::read_to_string(&issues).expect("the issues file");
    assert!(
        csv.starts_with("row,field,code,message\n2,email,contact_required,"),
        "{csv}"
    );
    assert_eq!(customer_count(&app).await, 2);

    // NDJSON on standard input (`-`): a known lead is skipped, a new one created.
    let ndjson = "{\"name\": \"Ana\", \"email\": \"ANA@firma.ba\"}\n\
                  {\"name\": \"Марко Марковић\", \"phone\": \"+381 11 3334455\"}\n";
    let piped = tokio::task::block_in_place(|| {
        crm_with_stdin(
            &app,
            &["--json", "import-lead", "-", "--on-duplicate", "skip"],
            ndjson.as_bytes(),
        )
    });
    assert!(
        piped.status.success(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&piped.stdout).expect("JSON output");
    assert_eq!(report["status"], "completed", "{report:#}");
    assert_eq!(
        (&report["rows"], &report["created"], &report["skipped"]),
        (
            &serde_json::json!(2),
            &serde_json::json!(1),
            &serde_json::json!(1)
        ),
        "{report:#}"
    );
    assert_eq!(customer_count(&app).await, 3);

    // A JSON array cut off midway: the rows before the cut are kept and the CLI says it failed.
    let cut = tokio::task::block_in_place(|| {
        crm_with_stdin(
            &app,
            &["import-lead", "-"],
            br#"[{"name": "Lena Huber", "email": "lena@firma.at"}, {"name": "#,
        )
    });
    let stdout = String::from_utf8_lossy(&cut.stdout);
    assert_eq!(cut.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("failed: 1 rows — 1 created")
            && stdout.contains("The file could not be imported to the end"),
        "{stdout}"
    );

    let missing = tokio::task::block_in_place(|| crm(&app, &["import-lead", "/nonexistent.csv"]));
    assert_eq!(missing.status.code(), Some(1));
}

/// A TCP proxy in front of the app that can cut its WebSocket connections (a flaky network).
struct Proxy {
    url: String,
    sockets: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    opened: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    async fn start(app: &TestApp) -> Self {
        let target = app.url.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let sockets = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let opened = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (held, count) = (sockets.clone(), opened.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let mut head = [0u8; 32];
                let n = client.peek(&mut head).await.unwrap_or(0);
                let websocket = head[..n].starts_with(b"GET /graphql/ws");
                let task = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                if websocket {
                    held.lock().expect("the list").push(task.abort_handle());
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        Self {
            url,
            sockets,
            opened,
        }
    }

    /// WebSocket connections opened so far.
    fn websockets(&self) -> usize {
        self.opened.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Drops every WebSocket connection open now.
    fn cut(&self) {
        for socket in self.sockets.lock().expect("the list").drain(..) {
            socket.abort();
        }
    }
}

/// The segments of the customer's (one) call.
async fn segments_of(app: &TestApp, customer: &str) -> Vec<serde_json::Value> {
    app.graphql_ok(
        "query($c: ID) { calls(filter: {customerId: $c}) { nodes { segments { seq text } } } }",
        serde_json::json!({ "c": customer }),
    )
    .await["calls"]["nodes"][0]["segments"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `crm voice-call --agent en --follow` prints the transcript live; the connection breaks in
/// the middle of the call and the CLI resumes after the last line it printed, so every line
/// appears once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voice_call_follows_the_transcript_live() {
    let app = TestApp::spawn_with(TestBackend::Sqlite, |c| {
        c.pipeline.start_on_create = false;
    })
    .await;
    // A number the simulator (seed 42) answers.
    let phone = (0..10_000)
        .map(|n| format!("+4930555{n:04}"))
        .find(|n| {
            crm_voice::simulator::script::plan(42, n, "de", &|_| String::new()).disposition
                == crm_domain::Disposition::Answered
        })
        .expect("some number answers");
    let id = app
        .create_customer(serde_json::json!({ "name": "Jürgen Müller", "phone": phone,
            "language": "de", "consentCall": true }))
        .await;
    let proxy = Proxy::start(&app).await;
    let (url, token, customer) = (proxy.url.clone(), app.token.clone(), id.clone());
    let follower = std::thread::spawn(move || {
        Command::new(env!("CARGO_BIN_EXE_crm"))
            .args(["voice-call", &customer, "--agent", "en", "--follow"])
            .env("CRM_URL", url)
            .env("CRM_TOKEN", token)
            .output()
            .expect("the crm binary runs")
    });
    // The simulator's events come due as the clock moves; the CLI prints them as they commit.
    // Once two lines are out, the connection is cut.
    let mut cut = false;
    while !follower.is_finished() {
        app.clock.advance(chrono::Duration::milliseconds(500));
        app.run_jobs().await;
        if !cut && proxy.websockets() == 1 && segments_of(&app, &id).await.len() >= 2 {
            // Give the CLI a moment to print what it was sent, then break the connection.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            proxy.cut();
            cut = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let output = follower.join().expect("the follower thread");
    let text = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}\n{stderr}");
    assert!(cut, "the connection was cut mid-call");
    assert!(proxy.websockets() >= 2, "it reconnected: {stderr}");
    assert!(stderr.contains("connection lost"), "{stderr}");
    assert!(text.contains("queued: agent en (simulator)"), "{text}");
    assert!(
        text.contains("   agent: Hello Jürgen Müller"),
        "the English agent, line by line: {text}"
    );
    let said = segments_of(&app, &id).await;
    assert_eq!(said.len(), 6, "{said:?}");
    for segment in &said {
        let spoken = segment["text"].as_str().expect("a text");
        assert_eq!(
            text.matches(spoken).count(),
            1,
            "each line once, also across the reconnect: {spoken}\n{text}"
        );
    }
    assert!(text.contains("Ended: answered"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_email_previews_and_queues() {
    let app =
        TestApp::spawn_with(TestBackend::Sqlite, |c| c.pipeline.start_on_create = false).await;
    let id = app
        .create_customer(
            serde_json::json!({ "name": "Amra Hodžić", "email": "amra@firma.ba",
            "language": "bs", "consentEmail": true }),
        )
        .await;
    let preview =
        tokio::task::block_in_place(|| crm(&app, &["send-email", &id, "nurture-1", "--preview"]));
    let text = String::from_utf8_lossy(&preview.stdout);
    assert!(preview.status.success(), "{text}");
    assert!(
        text.contains("Language: bs") && text.contains("/unsubscribe/"),
        "{text}"
    );
    let sent = tokio::task::block_in_place(|| crm(&app, &["send-email", &id, "nurture-1"]));
    let text = String::from_utf8_lossy(&sent.stdout);
    assert!(sent.status.success(), "{text}");
    assert!(text.contains("to amra@firma.ba queued"), "{text}");
    app.run_jobs().await;
    let files = std::fs::read_dir(&app.config.email.outbox.dir)
        .expect("the outbox exists")
        .count();
    assert_eq!(files, 1);
    let bad = tokio::task::block_in_place(|| {
        crm(&app, &["send-email", &id, "nurture-1", "--var", "oops"])
    });
    assert!(!bad.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_report_prints_kpis_and_writes_the_pdf() {
    let app = TestApp::spawn(TestBackend::Sqlite).await;
    app.create_customer(serde_json::json!({ "name": "Jürgen Müller", "email": "j@firma.de" }))
        .await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let out = dir.path().join("report.pdf");
    let out_arg = out.to_str().expect("a UTF-8 path").to_owned();
    let generated = tokio::task::block_in_place(|| {
        crm(
            &app,
            &[
                "generate-report",
                "--period",
                "daily",
                "--format",
                "pdf",
                "--out",
                &out_arg,
                "--language",
                "de",
            ],
        )
    });
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let printed = String::from_utf8_lossy(&generated.stdout);
    assert!(printed.contains("2026-11-25"), "{printed}");
    let leads = printed
        .lines()
        .find(|l| l.starts_with("Neue Leads"))
        .unwrap_or_else(|| panic!("a leads line: {printed}"));
    assert!(leads.contains('1'), "{leads}");
    let pdf = std::fs::read(&out).expect("the PDF was written");
    assert!(pdf.starts_with(b"%PDF-"), "a PDF");

    let bad = tokio::task::block_in_place(|| {
        crm(
            &app,
            &[
                "generate-report",
                "--period",
                "custom",
                "--from",
                "2026-11-20",
                "--to",
                "2026-11-10",
            ],
        )
    });
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("VALIDATION_FAILED"), "{err}");
}
