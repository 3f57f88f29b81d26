//! Load generator for BENCHMARKS.md: N concurrent `callTranscript` subscribers on one server,
//! the latency from a segment's commit to its arrival at each subscriber, and the server's RSS.
//!
//!   bench/fanout.sh            # builds the release server and this generator, runs both
//!
//! Environment: CRM_URL (http://127.0.0.1:8099), CRM_TOKEN (an admin JWT), SUBSCRIBERS (10000),
//! SERVER_PID (to read the server's RSS and CPU time), CONNECT_CONCURRENCY (256), QUIET (unset),
//! OPERATION_IDS (`same`: every subscriber's operation id is "1"; `distinct`: one of its own,
//! UUID-shaped, as the `graphql-ws` client chooses).
//!
//! With QUIET=1 the generator stays off the server's cores while a segment is fanned out, as
//! clients on other hosts would: one subscriber (the sentinel) reads as it arrives; every other
//! socket is taken out of the generator's event loop once subscribed (its frames wait in the
//! kernel, no thread is woken for them) and is read QUIET_DELAY_MS (600) after the sentinel saw
//! a segment, in one pass, long before the next segment (the simulator speaks a line every
//! 1.5 s). The kernel's receive timestamp of each frame is when it reached the client's socket;
//! a read that finds two segments' frames at once cannot tell their arrivals apart, so those are
//! counted, not measured (a valid run has none).
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
    MaybeTlsStream, connect_async_with_config,
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

/// How a subscriber's socket is read once it has subscribed.
enum Mode {
    /// As frames arrive; each segment is reported on the channel (the sentinel of a quiet run).
    Active(Option<tokio::sync::watch::Sender<usize>>),
    /// Handed over, out of the event loop, to the quiet reader.
    Quiet(tokio::sync::mpsc::UnboundedSender<QuietSocket>),
}

/// One subscriber: connects, subscribes, and returns the latency (µs) of every segment. Keeps
/// its socket open until `release` so that closing 10,000 sockets is not counted as fan-out.
async fn subscriber(
    ws: String,
    token: String,
    call: String,
    (ready, mode, id): (Arc<AtomicUsize>, Mode, String),
    (finished, release): (Arc<AtomicUsize>, tokio::sync::watch::Receiver<bool>),
) -> Latencies {
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
    let subscribe = json!({ "id": id, "type": "subscribe",
        "payload": { "query": TRANSCRIPT, "variables": { "id": call } } });
    // Connect, authenticate and subscribe through tungstenite; the server sends nothing more
    // until the call starts (no segment is stored yet, so the replay is empty).
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let message: Value = serde_json::from_str(&text).unwrap();
        if message["type"] == "connection_ack" {
            socket
                .send(Message::text(subscribe.to_string()))
                .await
                .unwrap();
            break;
        }
    }
    // Then the frames are read straight off the socket: the generator shares the two cores
    // with the server, and tungstenite's per-message work (a second `recv` to see the socket
    // drained, UTF-8 checks, an owned message) was most of the generator's CPU per delivery.
    let MaybeTlsStream::Plain(mut tcp) = socket.into_inner() else {
        panic!("a plain TCP connection");
    };
    let sentinel = match mode {
        Mode::Quiet(reader) => {
            let tcp = tcp.into_std().expect("out of the event loop");
            nix::sys::socket::setsockopt(
                &tcp,
                nix::sys::socket::sockopt::ReceiveTimestampns,
                &true,
            )
            .expect("SO_TIMESTAMPNS");
            reader
                .send(QuietSocket {
                    tcp,
                    frames: Frames::default(),
                    latencies: Latencies::default(),
                    done: false,
                })
                .expect("the quiet reader");
            ready.fetch_add(1, Ordering::SeqCst);
            return Latencies::default();
        }
        Mode::Active(sentinel) => sentinel,
    };
    ready.fetch_add(1, Ordering::SeqCst);
    let latencies = read_segments(&mut tcp, sentinel).await;
    finished.fetch_add(1, Ordering::SeqCst);
    let mut release = release;
    let _ = release.wait_for(|go| *go).await;
    drop(tcp);
    latencies
}

/// The latencies (µs) of one subscriber's segments: from the segment's commit (`at`) to its
/// arrival in this host's kernel (the socket's receive timestamp), and to the moment this
/// generator read it.
#[derive(Debug, Default)]
struct Latencies {
    arrived: Vec<i64>,
    read: Vec<i64>,
}

/// One `recvmsg` into `buf`, with the kernel's receive timestamp of the data read (realtime).
fn recv_stamped(
    tcp: &impl std::os::fd::AsRawFd,
    buf: &mut [u8],
) -> std::io::Result<(usize, Option<DateTime<Utc>>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut control = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let message = recvmsg::<()>(
        tcp.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::empty(),
    )
    .map_err(std::io::Error::from)?;
    let stamp = message.cmsgs().ok().and_then(|mut cmsgs| {
        cmsgs.find_map(|cmsg| match cmsg {
            ControlMessageOwned::ScmTimestampns(at) => {
                DateTime::from_timestamp(at.tv_sec(), u32::try_from(at.tv_nsec()).ok()?)
            }
            _ => None,
        })
    });
    Ok((message.bytes, stamp))
}

/// What a server frame said, as far as the benchmark cares.
enum Said {
    /// A `next` message: the commit time of its segment.
    Next(DateTime<Utc>),
    /// `complete`, `error` or a close: the subscription is over.
    End,
}

/// The bytes of one socket not yet parsed into frames.
#[derive(Default)]
struct Frames {
    buf: Vec<u8>,
    filled: usize,
}

impl Frames {
    /// Where the next read goes.
    fn space(&mut self) -> &mut [u8] {
        if self.buf.len() < 4096 {
            self.buf.resize(4096, 0);
        }
        if self.filled == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        &mut self.buf[self.filled..]
    }

    /// Takes `n` more bytes and returns what the complete frames among them said.
    fn take(&mut self, n: usize) -> Vec<Said> {
        self.filled += n;
        let (buf, filled) = (&self.buf, self.filled);
        let mut said = Vec::new();
        let mut at = 0;
        while let Some((header, len, opcode)) = frame_header(&buf[at..filled]) {
            if filled - at < header + len {
                break;
            }
            let payload = &buf[at + header..at + header + len];
            at += header + len;
            match opcode {
                0x1 if payload.starts_with(br#"{"type":"next""#) => {
                    let text = std::str::from_utf8(payload).expect("UTF-8 text");
                    said.push(Said::Next(
                        segment_at(text).expect("a next message with `at`"),
                    ));
                }
                0x1 if payload.starts_with(br#"{"type":"complete""#)
                    || payload.starts_with(br#"{"type":"error""#) =>
                {
                    said.push(Said::End);
                }
                0x8 => said.push(Said::End),
                _ => {}
            }
        }
        self.buf.copy_within(at..filled, 0);
        self.filled -= at;
        said
    }
}

/// The latency (µs) from `sent` to `t`.
fn micros(sent: DateTime<Utc>, t: DateTime<Utc>) -> i64 {
    (t - sent).num_microseconds().unwrap_or(i64::MAX)
}

/// Reads server frames (unmasked, unfragmented) until `complete`, `error` or a close, and
/// returns the latencies of every `next` message; reports each on `sentinel`, if given.
async fn read_segments(
    tcp: &mut tokio::net::TcpStream,
    sentinel: Option<tokio::sync::watch::Sender<usize>>,
) -> Latencies {
    nix::sys::socket::setsockopt(&*tcp, nix::sys::socket::sockopt::ReceiveTimestampns, &true)
        .expect("SO_TIMESTAMPNS");
    let mut latencies = Latencies::default();
    let mut frames = Frames::default();
    loop {
        if tcp.readable().await.is_err() {
            return latencies;
        }
        let mut got = None;
        // A read that did not fill the buffer drained the socket: it is reported as
        // `WouldBlock` so that tokio clears the readiness (no second `recvmsg` to learn that).
        let space = frames.space();
        let room = space.len();
        let drained = tcp.try_io(tokio::io::Interest::READABLE, || {
            let (n, stamp) = recv_stamped(tcp, space)?;
            got = Some((n, stamp));
            if n > 0 && n < room {
                Err(std::io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        let (n, stamp) = match (got, drained) {
            (Some(got), _) => got,
            (None, Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            (None, _) => return latencies,
        };
        if n == 0 {
            return latencies;
        }
        let received = Utc::now();
        for said in frames.take(n) {
            match said {
                Said::Next(sent) => {
                    latencies.read.push(micros(sent, received));
                    latencies
                        .arrived
                        .push(micros(sent, stamp.expect("a receive timestamp")));
                    if let Some(sentinel) = &sentinel {
                        sentinel.send_modify(|seen| *seen += 1);
                    }
                }
                Said::End => return latencies,
            }
        }
    }
}

/// A socket the quiet reader reads between segments.
struct QuietSocket {
    tcp: std::net::TcpStream,
    frames: Frames,
    latencies: Latencies,
    done: bool,
}

impl QuietSocket {
    /// Reads what has arrived; returns how many `next` frames came in a read with others (their
    /// arrivals cannot be told apart).
    fn read(&mut self) -> usize {
        let mut unstamped = 0;
        while !self.done {
            let (n, stamp) = match recv_stamped(&self.tcp, self.frames.space()) {
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => (0, None),
            };
            if n == 0 {
                self.done = true;
                break;
            }
            let said = self.frames.take(n);
            let nexts = said.iter().filter(|s| matches!(s, Said::Next(_))).count();
            for said in said {
                match said {
                    Said::Next(sent) if nexts == 1 => self
                        .latencies
                        .arrived
                        .push(micros(sent, stamp.expect("a receive timestamp"))),
                    Said::Next(_) => unstamped += 1,
                    Said::End => self.done = true,
                }
            }
        }
        unstamped
    }
}

/// Reads the quiet sockets one pass after each segment the sentinel saw, until the sentinel's
/// subscription is over and a last pass found every socket done. Returns their latencies and
/// how many frames could not be timed.
async fn quiet_reader(
    mut sockets: Vec<QuietSocket>,
    mut seen: tokio::sync::watch::Receiver<usize>,
    delay: Duration,
) -> (Vec<QuietSocket>, usize) {
    async fn pass(sockets: Vec<QuietSocket>) -> (Vec<QuietSocket>, usize) {
        tokio::task::spawn_blocking(move || {
            let mut sockets = sockets;
            let unstamped = sockets.iter_mut().map(QuietSocket::read).sum();
            (sockets, unstamped)
        })
        .await
        .expect("a pass")
    }
    let mut unstamped = 0;
    loop {
        let over = seen.changed().await.is_err();
        tokio::time::sleep(delay).await;
        let (read, more) = pass(sockets).await;
        (sockets, unstamped) = (read, unstamped + more);
        if over {
            break;
        }
    }
    if !sockets.iter().all(|s| s.done) {
        tokio::time::sleep(delay).await;
        let (read, more) = pass(sockets).await;
        (sockets, unstamped) = (read, unstamped + more);
    }
    (sockets, unstamped)
}

/// A server frame's header length, payload length and opcode, once the header is complete.
fn frame_header(bytes: &[u8]) -> Option<(usize, usize, u8)> {
    let (&first, &second) = (bytes.first()?, bytes.get(1)?);
    let opcode = first & 0x0f;
    match second & 0x7f {
        126 => Some((
            4,
            u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]).into(),
            opcode,
        )),
        127 => {
            let len: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
            Some((10, usize::try_from(u64::from_be_bytes(len)).ok()?, opcode))
        }
        len => Some((2, len.into(), opcode)),
    }
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
    let quiet = std::env::var("QUIET").is_ok_and(|v| !v.is_empty() && v != "0");
    let distinct = match env("OPERATION_IDS", "same").as_str() {
        "same" => false,
        "distinct" => true,
        other => panic!("OPERATION_IDS: same or distinct, not {other}"),
    };
    let delay = Duration::from_millis(env("QUIET_DELAY_MS", "600").parse().unwrap());
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
    // A quiet run: subscriber 0 is the sentinel, the others go to the quiet reader.
    let (to_reader, mut handed_over) = tokio::sync::mpsc::unbounded_channel();
    let (sentinel, seen) = tokio::sync::watch::channel(0_usize);
    let mut sentinel = Some(sentinel);
    for n in 0..subscribers {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let (ws, token, call, ready) = (ws.clone(), token.clone(), call.clone(), ready.clone());
        let done = (finished.clone(), released.clone());
        let counted = ready.clone();
        let id = if distinct {
            format!(
                "{n:08x}-{:04x}-4{:03x}-8000-{:012x}",
                n >> 16,
                n & 0xfff,
                n * 7919
            )
        } else {
            "1".to_owned()
        };
        let mode = match (quiet, n) {
            (true, 0) => Mode::Active(sentinel.take()),
            (true, _) => Mode::Quiet(to_reader.clone()),
            (false, _) => Mode::Active(None),
        };
        tasks.push(tokio::spawn(async move {
            let before = counted.load(Ordering::SeqCst);
            let run = subscriber(ws, token, call, (ready, mode, id), done);
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
    drop((to_reader, sentinel));
    let reader = quiet.then(|| {
        let mut sockets = Vec::with_capacity(subscribers);
        while let Ok(socket) = handed_over.try_recv() {
            sockets.push(socket);
        }
        assert_eq!(
            sockets.len(),
            subscribers - 1,
            "every quiet socket handed over"
        );
        tokio::spawn(quiet_reader(sockets, seen, delay))
    });
    let cpu_before = (pid.as_deref().and_then(cpu_ms), cpu_ms("self"));
    let active = if quiet { 1 } else { subscribers };
    while finished.load(Ordering::SeqCst) < active {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (quiet_sockets, unstamped) = match reader {
        Some(reader) => reader.await.unwrap(),
        None => (Vec::new(), 0),
    };
    let cpu_after = (pid.as_deref().and_then(cpu_ms), cpu_ms("self"));
    let _ = release.send(true);
    let mut results = Vec::with_capacity(subscribers);
    for task in tasks {
        results.push(task.await.unwrap());
    }
    if quiet {
        // The quiet subscribers' tasks ended at the hand-over; the reader has their latencies.
        results.truncate(1);
        results.extend(quiet_sockets.into_iter().map(|s| s.latencies));
    }
    let (mut all, mut arrived) = (Vec::new(), Vec::new());
    let mut per_subscriber = Vec::new();
    for latencies in results {
        per_subscriber.push(latencies.arrived.len());
        all.extend(latencies.read);
        arrived.extend(latencies.arrived);
    }
    let rss_after = pid.as_deref().and_then(rss_kib);
    all.sort_unstable();
    arrived.sort_unstable();
    let segments = per_subscriber.iter().copied().max().unwrap_or(0);
    let complete = per_subscriber.iter().filter(|&&n| n == segments).count();
    println!("subscribers: {subscribers} (connected in {connect_secs:.1} s)");
    println!("segments per subscriber: {segments}; subscribers that got all: {complete}");
    println!("deliveries: {}", arrived.len());
    if quiet {
        println!(
            "quiet run: read {} ms after each segment; frames that arrived with another (not timed): {unstamped}",
            delay.as_millis()
        );
    }
    let mut lines = vec![(
        "commit -> client socket (kernel receive timestamp)",
        &arrived,
    )];
    if !quiet {
        lines.push(("commit -> read by the generator", &all));
    }
    for (name, latencies) in lines {
        println!(
            "fan-out latency {name} (ms): p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            percentile(latencies, 50.0),
            percentile(latencies, 90.0),
            percentile(latencies, 99.0),
            percentile(latencies, 100.0)
        );
    }
    if let ((Some(s0), Some(g0)), (Some(s1), Some(g1))) = (cpu_before, cpu_after) {
        let per = |ms: f64| ms * 1000.0 / arrived.len().max(1) as f64;
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
