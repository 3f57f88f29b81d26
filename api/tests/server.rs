//! The `crm-server` binary as an operator runs it: first start, tokens, keys, logs, refusals.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use serde_json::{Value, json};
use std::{
    io::{BufRead as _, BufReader, Read as _},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const SECRET: &str = "operator-secret-0123456789-0123456789-xyz";

fn server(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crm-server"));
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "CRM_DATABASE__URL",
            format!("sqlite://{}", dir.join("crm.db").display()),
        )
        .env("CRM_SERVER__BIND", "127.0.0.1:0")
        .env("CRM_AUTH__JWT_SECRET", SECRET);
    command
}

/// A running `crm-server`, killed when dropped: also when a test fails before [`stop`].
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve` with trace logs; returns the server, its base URL and the bootstrap key.
fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> (Server, String, String) {
    let (mut child, key) = spawn_serve(dir, env, true);
    let url = listening(&mut child);
    (Server(child), url, key)
}

/// Starts `serve` again over an existing database (no bootstrap key is printed then).
fn start_again(dir: &std::path::Path, env: &[(&str, &str)]) -> (Server, String, String) {
    let (mut child, key) = spawn_serve(dir, env, false);
    let url = listening(&mut child);
    (Server(child), url, key)
}

fn spawn_serve(dir: &std::path::Path, env: &[(&str, &str)], first: bool) -> (Child, String) {
    let mut child = server(dir)
        .arg("serve")
        .env("CRM_LOG__FILTER", "trace")
        .env("CRM_LOG__FORMAT", "json")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut key = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while first && key.is_empty() && Instant::now() < deadline {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(k) = line.split_whitespace().find(|w| w.starts_with("crm_")) {
            key = k.to_owned();
        }
    }
    assert!(
        !first || !key.is_empty(),
        "the first start prints an admin key"
    );
    (child, key)
}

/// The base URL from the `Listening.` log line; the rest of stderr is kept for [`stop`].
fn listening(child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut url = String::new();
    let mut early = String::new();
    while url.is_empty() && Instant::now() < deadline {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break;
        }
        early.push_str(&line);
        if line.contains("Listening.") {
            let value: Value = serde_json::from_str(&line).unwrap();
            url = format!("http://{}", value["fields"]["addr"].as_str().unwrap());
        }
    }
    assert!(!url.is_empty(), "no Listening line in: {early}");
    // Keep draining stderr into a file-like buffer on a thread, for the secrets check.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        let _ = tx.send(early + rest.as_str());
    });
    LOGS.with(|logs| *logs.borrow_mut() = Some(rx));
    url
}

thread_local! {
    static LOGS: std::cell::RefCell<Option<std::sync::mpsc::Receiver<String>>> = const { std::cell::RefCell::new(None) };
}

fn stop(server: Server) -> String {
    drop(server);
    LOGS.with(|logs| {
        logs.borrow_mut()
            .take()
            .unwrap()
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
    })
}

async fn graphql(client: &reqwest::Client, url: &str, credential: &str, query: &str) -> Value {
    client
        .post(format!("{url}/graphql"))
        .bearer_auth(credential)
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_session_never_logs_a_secret() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    // No schedules: the audit log then holds exactly this session's two actions.
    let (child, url, bootstrap) = start(dir.path(), &[("CRM_JOBS__SCHEDULES", "[]")]);
    let client = reqwest::Client::new();

    let token = String::from_utf8(
        server(dir.path())
            .args(["token", "--role", "sales", "--subject", "ana"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    let me = graphql(&client, &url, &token, "{ me { subject role } }").await;
    assert_eq!(
        me["data"]["me"],
        json!({ "subject": "ana", "role": "SALES" })
    );

    let created = graphql(
        &client,
        &url,
        &bootstrap,
        "mutation { createApiKey(input: { name: \"zapier\", role: INTEGRATION }) { key } }",
    )
    .await;
    let key = created["data"]["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let lead = graphql(
        &client,
        &url,
        &key,
        "mutation { createCustomer(input: { name: \"L\", email: \"l@example.com\" }) { id } }",
    )
    .await;
    assert!(lead.get("errors").is_none(), "{lead}");
    let bad = graphql(&client, &url, &format!("{token}x"), "{ me { role } }").await;
    assert_eq!(bad["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");

    let logs = stop(child);
    assert!(
        logs.contains("Authentication failed."),
        "security events are logged"
    );
    assert!(logs.contains("API key created."));
    for secret in [SECRET, bootstrap.as_str(), token.as_str(), key.as_str()] {
        assert!(
            !logs.contains(secret),
            "a secret reached the log: {}…",
            &secret[..12]
        );
    }

    // A second start over the same database creates no new key.
    let mut restarted = server(dir.path())
        .arg("serve")
        .env("CRM_JOBS__SCHEDULES", "[]")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it listens: by then the bootstrap step has run.
    let mut stderr = BufReader::new(restarted.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("Listening.") {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break;
        }
    }
    let _ = restarted.kill();
    let _ = restarted.wait();
    let mut printed = String::new();
    restarted
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut printed)
        .unwrap();
    assert!(
        !printed.contains("crm_"),
        "the bootstrap key is printed only on the first start"
    );

    let verify = server(dir.path())
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(String::from_utf8_lossy(&verify.stdout).contains("intact: 2 entries"));
}

#[test]
fn production_mode_refuses_a_weak_secret() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["config", "check"][..], &["serve"][..]] {
        let output = server(dir.path())
            .args(args)
            .env("CRM_SERVER__MODE", "production")
            .env("CRM_AUTH__JWT_SECRET", "short")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("CRM_AUTH__JWT_SECRET") && !stderr.contains("short\""),
            "{stderr}"
        );
    }
    let ok = server(dir.path())
        .args(["config", "check"])
        .env("CRM_SERVER__MODE", "production")
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "a 40-byte secret is enough: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&ok.stdout).contains(SECRET),
        "config check never prints secrets"
    );
}

/// The signature of a delivery (Standard Webhooks), as a sender computes it.
fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    format!(
        "v1,{}",
        crm_api::webhooks::sign(key, id, timestamp, body.as_bytes())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_acknowledged_before_a_crash_is_imported_after_the_restart_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("crm.db").display());
    acknowledged_then_killed(dir.path(), &url).await;
}

#[cfg_attr(
    not(crm_pg),
    ignore = "set CRM_TEST_POSTGRES_URL to run the PostgreSQL tests"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_acknowledged_before_a_crash_is_imported_after_the_restart_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let database = PgDatabase::create().await;
    acknowledged_then_killed(dir.path(), &database.url).await;
    database.drop().await;
}

/// A fresh PostgreSQL database on the server `CRM_TEST_POSTGRES_URL` names.
struct PgDatabase {
    admin: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create() -> Self {
        let admin = std::env::var("CRM_TEST_POSTGRES_URL").unwrap();
        let prefix = std::env::var("CRM_TEST_DB_PREFIX").unwrap_or_else(|_| "crm_test_".to_owned());
        let name = format!("{prefix}server_{}", std::process::id());
        Self::admin(&admin, &format!("CREATE DATABASE \"{name}\"")).await;
        // The admin URL with this database instead of its own.
        let (base, query) = admin.split_once('?').unwrap_or((&admin, ""));
        let scheme_end = base.find("://").unwrap() + 3;
        let host = base[scheme_end..]
            .find('/')
            .map_or(base, |i| &base[..scheme_end + i]);
        let url = match query {
            "" => format!("{host}/{name}"),
            query => format!("{host}/{name}?{query}"),
        };
        Self { admin, name, url }
    }

    async fn admin(url: &str, sql: &str) {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let connection = tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap();
        drop(client);
        let _ = connection.await;
    }

    async fn drop(self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        Self::admin(&self.admin, &sql).await;
    }
}

/// A signed lead is acknowledged, the server is killed (SIGKILL) before any job ran; after a
/// restart the lead is imported, once.
async fn acknowledged_then_killed(dir: &std::path::Path, database_url: &str) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let key = b"a webhook secret of 24 b";
    let secret = format!("whsec_{}", base64_encode(key));
    // No workers: the delivery is acknowledged and then the process dies before any job ran.
    // Info, not trace: the server's stderr is not read until it prints its key on stdout, and
    // PostgreSQL's trace logs would fill the pipe before that.
    let env = [
        ("CRM_DATABASE__URL", database_url),
        ("CRM_LOG__FILTER", "info"),
        ("CRM_JOBS__WORKERS", "0"),
        ("CRM_INTAKE__WEBHOOK_SECRETS__WEBSITE", secret.as_str()),
    ];
    let (child, url, bootstrap) = start(dir, &env);
    let client = reqwest::Client::new();
    let body = r#"{"name": "Jürgen Müller", "email": "j@firma.de"}"#;
    let timestamp = chrono::Utc::now().timestamp();
    let response = client
        .post(format!("{url}/webhooks/leads"))
        .header("webhook-id", "msg_crash")
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", sign(key, "msg_crash", timestamp, body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    stop(child); // SIGKILL: no graceful shutdown.

    // After the restart, with workers, the lead appears.
    let env = [
        ("CRM_DATABASE__URL", database_url),
        ("CRM_LOG__FILTER", "info"),
        ("CRM_INTAKE__WEBHOOK_SECRETS__WEBSITE", secret.as_str()),
    ];
    let restarted = Server(
        server(dir)
            .envs(env.iter().copied())
            .env("CRM_SERVER__BIND", "127.0.0.1:0")
            .arg("worker")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (child, url, _) = start_again(dir, &env);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut found = Value::Null;
    while Instant::now() < deadline {
        found = graphql(
            &client,
            &url,
            &bootstrap,
            "{ customers { nodes { name email source } } }",
        )
        .await;
        if found["data"]["customers"]["nodes"]
            .as_array()
            .is_some_and(|n| !n.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(restarted);
    let _ = stop(child);
    assert_eq!(
        found["data"]["customers"]["nodes"],
        json!([{ "name": "Jürgen Müller", "email": "j@firma.de", "source": "website" }])
    );
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Polls `query` until `done` holds for its `data` (a real server on the real clock).
async fn wait_for(
    client: &reqwest::Client,
    url: &str,
    credential: &str,
    query: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let data = graphql(client, url, credential, query).await;
        if done(&data["data"]) || Instant::now() > deadline {
            return data;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_never_reaches_the_log_at_info_level() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let key = b"a webhook secret of 24 b";
    let secret = format!("whsec_{}", base64_encode(key));
    let outbox = dir.path().join("outbox");
    let phone = (0..10_000)
        .map(|n| format!("+4930555{n:04}"))
        .find(|n| {
            crm_voice::simulator::script::plan(42, n, "de", &|_| String::new()).disposition
                == crm_domain::Disposition::Answered
        })
        .unwrap();
    let env = [
        ("CRM_LOG__FILTER", "info"),
        // Every lead is called, so the cycle runs import → qualify → call → follow-up email.
        ("CRM_PIPELINE__THRESHOLD", "0"),
        ("CRM_INTAKE__WEBHOOK_SECRETS__WEBSITE", secret.as_str()),
        ("CRM_EMAIL__OUTBOX__DIR", outbox.to_str().unwrap()),
        ("CRM_VOICE__PROVIDERS__SIMULATOR__RING_MS", "50"),
        ("CRM_VOICE__PROVIDERS__SIMULATOR__LINE_INTERVAL_MS", "50"),
        ("CRM_VOICE__CALLING_WINDOW__START", "00:00"),
        ("CRM_VOICE__CALLING_WINDOW__END", "23:59"),
        (
            "CRM_VOICE__CALLING_WINDOW__WEEKDAYS",
            "[mon,tue,wed,thu,fri,sat,sun]",
        ),
    ];
    let (child, url, admin) = start(dir.path(), &env);
    let client = reqwest::Client::new();
    let (name, email, company) = (
        "Jovana Petrović-Privat",
        "jovana.privat@primer.rs",
        "Privat Trgovina",
    );
    // Import: a signed webhook.
    let body = json!({ "name": name, "email": email, "phone": phone, "company": company,
                       "language": "de", "consentCall": true, "consentEmail": true })
    .to_string();
    let timestamp = chrono::Utc::now().timestamp();
    let response = client
        .post(format!("{url}/webhooks/leads"))
        .header("webhook-id", "msg_pii")
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", sign(key, "msg_pii", timestamp, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    let found = wait_for(
        &client,
        &url,
        &admin,
        "{ customers { nodes { id } } }",
        |d| {
            d["customers"]["nodes"]
                .as_array()
                .is_some_and(|n| !n.is_empty())
        },
    )
    .await;
    assert!(found["data"]["customers"]["nodes"][0]["id"].is_string());
    // The chain goes on by itself: qualified, called (threshold 0), followed up by email.
    let ended = wait_for(
        &client,
        &url,
        &admin,
        "{ calls { nodes { status segments { text } } } emails { nodes { status template } } }",
        |d| {
            d["calls"]["nodes"]
                .as_array()
                .is_some_and(|n| n.iter().any(|c| c["status"] == "ENDED"))
                && d["emails"]["nodes"]
                    .as_array()
                    .is_some_and(|n| n.iter().any(|e| e["status"] == "sent"))
        },
    )
    .await;
    let calls = ended["data"]["calls"]["nodes"].as_array().unwrap();
    assert!(
        calls
            .iter()
            .any(|c| c["status"] == "ENDED" && !c["segments"].as_array().unwrap().is_empty()),
        "a call with a transcript: {ended}"
    );
    assert!(
        std::fs::read_dir(&outbox).unwrap().count() >= 1,
        "the email went out"
    );
    let logs = stop(child);
    assert!(
        logs.contains("\"level\":\"INFO\""),
        "info lines were logged"
    );
    let national = phone.trim_start_matches("+49");
    for personal in [name, "Petrović", email, phone.as_str(), national, company] {
        let leaked: Vec<&str> = logs.lines().filter(|l| l.contains(personal)).collect();
        assert!(
            leaked.is_empty(),
            "`{personal}` reached the log: {leaked:?}"
        );
    }

    // The operator's GDPR tools on the same database: export by email, then erase.
    let export = server(dir.path())
        .args(["gdpr", "export", email])
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let document: Value = serde_json::from_slice(&export.stdout).unwrap();
    assert_eq!(document["customer"]["email"], email);
    assert!(
        !document["calls"][0]["segments"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(!document["emails"].as_array().unwrap().is_empty());
    let erase = server(dir.path())
        .args(["gdpr", "erase", email, "--reason", "asked by letter"])
        .output()
        .unwrap();
    assert!(
        erase.status.success(),
        "{}",
        String::from_utf8_lossy(&erase.stderr)
    );
    assert!(String::from_utf8_lossy(&erase.stdout).contains("erased"));
    let again = server(dir.path())
        .args(["gdpr", "export", email])
        .output()
        .unwrap();
    assert!(
        !again.status.success(),
        "the email is gone, so nobody has it"
    );
    let verify = server(dir.path())
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "the chain verifies after the erasure: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// `crm-server serve` on a fresh machine (SQLite, the simulator, the outbox) with no network:
/// a lead is created, qualified and called, and its transcript streams live to a WebSocket
/// subscriber line by line as the simulator speaks, then the subscription completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_streams_a_simulated_call_live() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let phone = (0..10_000)
        .map(|n| format!("+4930555{n:04}"))
        .find(|n| {
            crm_voice::simulator::script::plan(42, n, "de", &|_| String::new()).disposition
                == crm_domain::Disposition::Answered
        })
        .unwrap();
    let env = [
        ("CRM_LOG__FILTER", "info"),
        ("CRM_PIPELINE__START_ON_CREATE", "false"),
        ("CRM_VOICE__PROVIDERS__SIMULATOR__RING_MS", "500"),
        ("CRM_VOICE__PROVIDERS__SIMULATOR__LINE_INTERVAL_MS", "800"),
        ("CRM_VOICE__CALLING_WINDOW__START", "00:00"),
        ("CRM_VOICE__CALLING_WINDOW__END", "23:59"),
        (
            "CRM_VOICE__CALLING_WINDOW__WEEKDAYS",
            "[mon,tue,wed,thu,fri,sat,sun]",
        ),
    ];
    let (child, url, admin) = start(dir.path(), &env);
    let client = reqwest::Client::new();
    let created = graphql(
        &client,
        &url,
        &admin,
        &format!(
            "mutation {{ createCustomer(input: {{ name: \"Jürgen Müller\", phone: \"{phone}\", \
             language: \"de\", consentCall: true }}) {{ id }} }}"
        ),
    )
    .await;
    let customer = created["data"]["createCustomer"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    let scored = graphql(
        &client,
        &url,
        &admin,
        &format!("mutation {{ qualifyLead(customerId: \"{customer}\") {{ score }} }}"),
    )
    .await;
    assert!(
        scored["data"]["qualifyLead"]["score"].is_number(),
        "{scored}"
    );
    let started = graphql(
        &client,
        &url,
        &admin,
        &format!("mutation {{ startVoiceCall(customerId: \"{customer}\") {{ id agent }} }}"),
    )
    .await;
    let call = started["data"]["startVoiceCall"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{started}"))
        .to_owned();

    let mut request = format!("{}/graphql/ws", url.replacen("http", "ws", 1))
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let send = |message: Value| Message::text(message.to_string());
    socket
        .send(send(json!({ "type": "connection_init",
                           "payload": { "Authorization": format!("Bearer {admin}") } })))
        .await
        .unwrap();
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .unwrap_or_else(|_| panic!("silence after {lines:?}"))
            .unwrap()
            .unwrap();
        let Message::Text(text) = message else {
            continue;
        };
        let message: Value = serde_json::from_str(&text).unwrap();
        match message["type"].as_str() {
            Some("connection_ack") => {
                socket
                    .send(send(json!({ "id": "t", "type": "subscribe", "payload": {
                        "query": "subscription($id: ID!) { callTranscript(callId: $id) { seq role text } }",
                        "variables": { "id": call } } })))
                    .await
                    .unwrap();
            }
            Some("next") => {
                let segment = &message["payload"]["data"]["callTranscript"];
                lines.push((
                    segment["seq"].as_i64().unwrap(),
                    segment["text"].as_str().unwrap().to_owned(),
                    Instant::now(),
                ));
            }
            Some("complete") => break,
            _ => {}
        }
        assert!(Instant::now() < deadline, "{lines:?}");
    }
    let seqs: Vec<i64> = lines.iter().map(|(seq, _, _)| *seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6], "{lines:?}");
    assert!(
        lines[0].1.starts_with("Guten Tag Jürgen Müller"),
        "{lines:?}"
    );
    // Live, not a replay at the end: the lines arrive as they are spoken, 0.8 s apart.
    let spread = lines[5].2 - lines[0].2;
    assert!(
        spread >= Duration::from_secs(2),
        "all at once ({spread:?}): {lines:?}"
    );
    let ended = graphql(
        &client,
        &url,
        &admin,
        &format!("{{ call(id: \"{call}\") {{ status disposition interactionId }} }}"),
    )
    .await;
    assert_eq!(ended["data"]["call"]["status"], "ENDED", "{ended}");
    assert_eq!(ended["data"]["call"]["disposition"], "ANSWERED");
    stop(child);
}
