//! Load generator for BENCHMARKS.md: N concurrent `callTranscript` subscribers on one server,
//! the latency from a segment's commit to its arrival at each subscriber, and the server's RSS.
//!
//!   bench/fanout.sh            # builds the release server and this generator, runs both
//!
//! Environment: CRM_URL (http://127.0.0.1:8099), CRM_TOKEN (an admin JWT), SUBSCRIBERS (10000),
//! SERVER_PID (to read the server's RSS and CPU time), CONNECT_CONCURRENCY (256).
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark tool fails loudly"
)]

use chrono::{DateTime, Utc};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::Semaphore;
use tokio_tungstenite::{
    connect_async_with_config,
    tungstenite::{Message, client::IntoClientRequest as _, protocol::WebSocketConfig},
};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn graphql(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    query: &str,
    vars: Value,
) -> Value {
    let response: Value = client
        .post(format!("{url}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": vars }))
        .send()
        .await
        .expect("the server answers")
        .json()
        .await
        .expect("JSON");
    assert!(response.get("errors").is_none(), "{response:#}");
    response["data"].clone()
}

const TRANSCRIPT: &str = "subscription($id: ID!) { callTranscript(callId: $id) { seq at } }";

/// CPU time (user + system, ms) a process has used so far.
fn cpu_ms(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) * 10.0) // clock ticks of 10 ms
}

/// One subscriber: connects, subscribes, and returns the latency (µs) of every segment. Keeps
/// its socket open until `release` so that closing 10,000 sockets is not counted as fan-out.
async fn subscriber(
    ws: String,
    token: String,
    call: String,
    ready: Arc<AtomicUsize>,
    (finished, release): (Arc<AtomicUsize>, tokio::sync::watch::Receiver<bool>),
) -> Vec<i64> {
    let mut request = ws.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    // Small buffers, like the server's: tungstenite zeroes its read buffer (128 KiB by
    // default) on every read, which made the generator the larger CPU cost of a delivery.
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let (mut socket, _) = connect_async_with_config(request, Some(config), true)
        .await
        .expect("a WebSocket");
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
    socket.send(Message::text(init.to_string())).await.unwrap();
    let subscribe = json!({ "id": "1", "type": "subscribe",
        "payload": { "query": TRANSCRIPT, "variables": { "id": call } } });
    let mut latencies = Vec::new();
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let received = Utc::now();
        // The generator shares the cores with the server: a `next` is read by slicing out its
        // `at`, not by parsing the whole message (the timestamp is still the server's).
        if text.starts_with(r#"{"type":"next""#) {
            let at = segment_at(&text).expect("a next message with `at`");
            latencies.push((received - at).num_microseconds().unwrap_or(i64::MAX));
            continue;
        }
        let message: Value = serde_json::from_str(&text).unwrap();
        match message["type"].as_str() {
            Some("connection_ack") => {
                socket
                    .send(Message::text(subscribe.to_string()))
                    .await
                    .unwrap();
                ready.fetch_add(1, Ordering::SeqCst);
            }
            Some("ping") => {
                let _ = socket
                    .send(Message::text(json!({ "type": "pong" }).to_string()))
                    .await;
            }
            Some("complete") | Some("error") => break,
            _ => {}
        }
    }
    finished.fetch_add(1, Ordering::SeqCst);
    let mut release = release;
    let _ = release.wait_for(|go| *go).await;
    drop(socket);
    latencies
}

/// The `at` of a `next` message's segment (`{"type":"next",…,"at":"<RFC 3339>"…}`).
fn segment_at(text: &str) -> Option<DateTime<Utc>> {
    let start = text.find(r#""at":""#)? + 6;
    let end = start + text.get(start..)?.find('"')?;
    text.get(start..end)?.parse().ok()
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = env("CRM_URL", "http://127.0.0.1:8099");
    let token = std::env::var("CRM_TOKEN").expect("CRM_TOKEN: an admin JWT");
    let subscribers: usize = env("SUBSCRIBERS", "10000").parse().unwrap();
    let concurrency: usize = env("CONNECT_CONCURRENCY", "256").parse().unwrap();
    let pid = std::env::var("SERVER_PID").ok();
    let client = reqwest::Client::new();

    // A lead the simulator (seed 42) answers, and a call queued far enough ahead for every
    // subscriber to connect first.
    let phone = (0..10_000)
        .map(|n| format!("+4930777{n:04}"))
        .find(|n| {
            crm_voice::simulator::script::plan(42, n, "de", &|_| String::new()).disposition
                == crm_domain::Disposition::Answered
        })
        .unwrap();
    let customer = graphql(
        &client,
        &url,
        &token,
        "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { id } }",
        json!({ "i": { "name": "Fan Out", "phone": phone, "language": "de", "consentCall": true,
                       "email": format!("fanout-{}@example.com", Utc::now().timestamp_micros()) } }),
    )
    .await["createCustomer"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let lead_time = Duration::from_secs(20 + (subscribers / 250) as u64);
    let not_before = Utc::now() + chrono::Duration::from_std(lead_time).unwrap();
    let call = graphql(
        &client,
        &url,
        &token,
        "mutation($c: ID!, $at: DateTime!) { enqueueCall(customerId: $c, notBefore: $at) { id } }",
        json!({ "c": customer, "at": not_before.to_rfc3339() }),
    )
    .await["enqueueCall"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let rss_before = pid.as_deref().and_then(rss_kib);
    let ws = format!("{}/graphql/ws", url.replacen("http", "ws", 1));
    let ready = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let (release, released) = tokio::sync::watch::channel(false);
    let gate = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let (ws, token, call, ready) = (ws.clone(), token.clone(), call.clone(), ready.clone());
        let done = (finished.clone(), released.clone());
        let counted = ready.clone();
        tasks.push(tokio::spawn(async move {
            let before = counted.load(Ordering::SeqCst);
            let run = subscriber(ws, token, call, ready, done);
            tokio::pin!(run);
            // Hold the permit until this one has subscribed (or finished).
            let mut permit = Some(permit);
            loop {
                tokio::select! {
                    out = &mut run => { drop(permit.take()); return out; }
                    () = tokio::time::sleep(Duration::from_millis(5)), if permit.is_some() => {
                        if counted.load(Ordering::SeqCst) > before { drop(permit.take()); }
                    }
                }
            }
        }));
    }
    while ready.load(Ordering::SeqCst) < subscribers {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            Utc::now() < not_before,
            "only {} of {subscribers} subscribed before the call started; raise the lead time",
            ready.load(Ordering::SeqCst)
        );
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let rss_connected = pid.as_deref().and_then(rss_kib);
    eprintln!(
        "{subscribers} subscribed in {connect_secs:.1} s; waiting for the call at {not_before}"
    );

    // CPU from an idle server with every subscription in place to "every subscription
    // complete": the call's fan-out (and the simulator's few requests), before any socket
    // closes. A subscriber counts as ready once it has sent `subscribe`, so wait for the
    // server to finish the subscriptions (stop using CPU) first.
    loop {
        let before = pid.as_deref().and_then(cpu_ms);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = pid.as_deref().and_then(cpu_ms);
        if before.zip(after).is_none_or(|(b, a)| a - b <= 10.0) {
            break;
        }
    }
    assert!(
        Utc::now() < not_before,
        "the server was still busy with the subscriptions when the call started; raise the lead time"
    );
    let cpu_before = (pid.as_deref().and_then(cpu_ms), cpu_ms("self"));
    while finished.load(Ordering::SeqCst) < subscribers {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu_after = (pid.as_deref().and_then(cpu_ms), cpu_ms("self"));
    let _ = release.send(true);
    let mut all = Vec::new();
    let mut per_subscriber = Vec::new();
    for task in tasks {
        let latencies = task.await.unwrap();
        per_subscriber.push(latencies.len());
        all.extend(latencies);
    }
    let rss_after = pid.as_deref().and_then(rss_kib);
    all.sort_unstable();
    let segments = per_subscriber.iter().copied().max().unwrap_or(0);
    let complete = per_subscriber.iter().filter(|&&n| n == segments).count();
    println!("subscribers: {subscribers} (connected in {connect_secs:.1} s)");
    println!("segments per subscriber: {segments}; subscribers that got all: {complete}");
    println!("deliveries: {}", all.len());
    println!(
        "fan-out latency commit -> client (ms): p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        percentile(&all, 50.0),
        percentile(&all, 90.0),
        percentile(&all, 99.0),
        percentile(&all, 100.0)
    );
    if let ((Some(s0), Some(g0)), (Some(s1), Some(g1))) = (cpu_before, cpu_after) {
        let per = |ms: f64| ms * 1000.0 / all.len().max(1) as f64;
        println!(
            "CPU during the call (ms): server {:.0} ({:.1} µs per delivery), generator {:.0} ({:.1} µs per delivery)",
            s1 - s0,
            per(s1 - s0),
            g1 - g0,
            per(g1 - g0)
        );
    }
    if let (Some(before), Some(connected), Some(after)) = (rss_before, rss_connected, rss_after) {
        println!(
            "server RSS (MiB): before {:.1}, with {subscribers} subscribers {:.1}, after the call {:.1}",
            before as f64 / 1024.0,
            connected as f64 / 1024.0,
            after as f64 / 1024.0
        );
    }
}
