//! Live transcripts rendered once and written to every socket that listens (BENCHMARKS.md,
//! "live transcripts": 10,000 `callTranscript` subscribers on one call).
//!
//! On `/graphql/ws` a `callTranscript` subscription is served in two parts:
//! - **Replay, per subscriber.** The operation runs through the schema like any other, with the
//!   caller's own principal: the policy rule, the row-level scope of the call's customer, and
//!   the stored segments after `afterSeq`; refusals come back with their codes as usual. Before
//!   it reads the call and what is stored, the resolver takes a lease on the call's feed, so
//!   nothing falls between the two.
//! - **Live, shared.** One feed per call and process follows the event hub (so LISTEN/NOTIFY
//!   across replicas and the re-read of a lagging broadcast still apply), keeps the segments it
//!   has seen, and renders each new segment once per [`RenderKey`]: the document, operation
//!   name and variables, and the caller's role and row-level scope. Callers whose visibility
//!   could differ therefore never share a render. The rendered `next` message is written, as
//!   the same bytes, to every socket subscribed with that key: straight into the socket from
//!   the feed (see [`Outbox`]), split over the cores when there are many. When the call
//!   ends, each subscription's stream ends, and the socket sends `complete` after the last
//!   segment.
//!
//! A subscriber joins with the last seq its replay sent; the feed first sends what it has seen
//! after that, then every new segment. Outboxes are unbounded: what one socket can hold is
//! bounded by one call's transcript, which the replay holds in memory too.

use super::{ApiContext, AppSchema, calls::SegmentNode};
use crate::{audit::RequestId, events::EventHub, websocket::Frame, ws::Outbox};
use async_graphql::{
    Request, Response, Variables, futures_util::StreamExt as _, http::WebSocketProtocols,
};
use crm_domain::{CallId, CustomerScope, Principal};
use crm_store::{calls, effects::Event};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock, PoisonError, Weak,
        atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::sync::{mpsc, oneshot};

/// Tells `callTranscript` to render this one segment (a feed's shared render).
#[derive(Debug)]
pub(crate) struct RenderSegment(pub(crate) SegmentNode);

/// Tells `callTranscript` to serve only the replay: once the caller has passed every check, the
/// resolver leaves the live part here for the socket to join.
#[derive(Debug, Clone, Default)]
pub(crate) struct JoinSlot(Arc<Mutex<Option<Joined>>>);

impl JoinSlot {
    pub(crate) fn fill(&self, joined: Joined) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(joined);
    }

    fn take(&self) -> Option<Joined> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// What a subscriber that passed the checks of `callTranscript` joins.
#[derive(Debug)]
pub(crate) struct Joined {
    /// The call's feed, leased before anything was read.
    pub(crate) feed: Arc<FeedHandle>,
    /// The last seq the replay holds (or `afterSeq`).
    pub(crate) last: i32,
    /// The call had ended when it was read: the replay is all there is.
    pub(crate) ended: bool,
    /// The caller.
    pub(crate) principal: Principal,
    /// The caller's row-level scope.
    pub(crate) scope: CustomerScope,
}

/// The running feeds, one per call with subscribers.
#[derive(Debug, Clone, Default)]
pub(crate) struct TranscriptFeeds(Arc<Mutex<HashMap<CallId, Weak<FeedHandle>>>>);

impl TranscriptFeeds {
    /// A lease on the feed of `call`, started if none runs. The feed is subscribed to the hub
    /// when this returns; it stops when the last lease is dropped.
    pub(crate) fn feed(&self, hub: &EventHub, call: CallId) -> Arc<FeedHandle> {
        let mut feeds = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(feed) = feeds.get(&call).and_then(Weak::upgrade) {
            return feed;
        }
        feeds.retain(|_, feed| feed.strong_count() > 0);
        let events = hub.stream(&[calls::TRANSCRIPT_TOPIC, calls::TOPIC], None);
        let (commands, inbox) = mpsc::unbounded_channel();
        let handle = Arc::new(FeedHandle { commands });
        feeds.insert(call, Arc::downgrade(&handle));
        tokio::spawn(Feed::new(call).run(events, inbox));
        handle
    }
}

/// A lease on a call's feed (the feed runs while one is held).
#[derive(Debug)]
pub(crate) struct FeedHandle {
    commands: mpsc::UnboundedSender<Command>,
}

#[derive(Debug)]
enum Command {
    Join(Subscriber),
    Leave { key: Arc<str>, token: u64 },
}

/// What decides a render: callers with the same key get the same bytes.
type RenderKey = Arc<str>;

/// Renders one segment through the schema, as one subscriber of a key would see it.
pub(crate) struct Renderer {
    key: RenderKey,
    schema: AppSchema,
    context: ApiContext,
    query: String,
    operation_name: Option<String>,
    variables: Variables,
    principal: Principal,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Renderer {
    /// The renderer of the operation `(query, operation_name, variables)` for a caller with
    /// `principal` and `scope`.
    pub(crate) fn new(
        (schema, context): (AppSchema, ApiContext),
        (query, operation_name, variables): (String, Option<String>, Variables),
        principal: Principal,
        scope: &CustomerScope,
    ) -> Self {
        Self {
            key: render_key(
                &query,
                operation_name.as_deref(),
                &variables,
                &principal,
                scope,
            ),
            schema,
            context,
            query,
            operation_name,
            variables,
            principal,
        }
    }

    /// The `payload` of the `next` message for `segment` (a response, maybe with errors).
    async fn render(&self, segment: SegmentNode) -> Option<String> {
        let mut request = Request::new(self.query.clone())
            .variables(self.variables.clone())
            .data(self.principal.clone())
            .data(RequestId(uuid::Uuid::new_v4().to_string()))
            .data(RenderSegment(segment));
        if let Some(name) = &self.operation_name {
            request = request.operation_name(name.clone());
        }
        let request = self.context.loaders().attach(request);
        let response: Response = self.schema.execute_stream(request).next().await?;
        serde_json::to_string(&response).ok()
    }
}

/// What decides the bytes of a render: the operation, and what decides the caller's visibility
/// (the role, which the policy rules are written for, and the row-level scope). The subject
/// only counts through the scope: two admins share, two sales reps who own their leads do not.
fn render_key(
    query: &str,
    operation_name: Option<&str>,
    variables: &Variables,
    principal: &Principal,
    scope: &CustomerScope,
) -> RenderKey {
    let variables = serde_json::to_string(variables).unwrap_or_default();
    format!(
        "{}\n{scope:?}\n{operation_name:?}\n{variables}\n{query}",
        principal.role
    )
    .into()
}

/// Where a subscription's segments go: what a writer thread needs of one subscriber, shared by
/// the feed's target list and the socket's [`Lease`].
#[derive(Debug)]
struct Sink {
    token: u64,
    outbox: Outbox,
    /// Set when the subscription ends on the socket's side (see [`Outbox::send_frame_unless`]).
    left: AtomicBool,
    /// The last seq this subscriber has been sent (only the feed's task and its fan-outs, one
    /// at a time, change it).
    last: AtomicI32,
}

/// One socket's subscription to a feed.
#[derive(Debug)]
pub(crate) struct Subscriber {
    sink: Arc<Sink>,
    /// The operation id the client chose.
    id: Arc<str>,
    protocol: WebSocketProtocols,
    renderer: Arc<Renderer>,
    /// Dropped (or fired) when the feed is done with this subscriber.
    done: oneshot::Sender<()>,
}

/// Joins `joined`'s feed for the operation `id` of a socket; the returned lease leaves when
/// dropped, and the receiver resolves when the feed is done with the subscription (the call
/// ended). Returns `None` when the call had already ended.
pub(crate) fn join(
    joined: &JoinSlot,
    id: Arc<str>,
    protocol: WebSocketProtocols,
    outbox: Outbox,
    renderer: impl FnOnce(Principal, &CustomerScope) -> Renderer,
) -> Option<(Lease, oneshot::Receiver<()>)> {
    static TOKENS: AtomicU64 = AtomicU64::new(0);
    let joined = joined.take()?;
    if joined.ended {
        return None;
    }
    let renderer = Arc::new(renderer(joined.principal, &joined.scope));
    let (done, finished) = oneshot::channel();
    let sink = Arc::new(Sink {
        token: TOKENS.fetch_add(1, Ordering::Relaxed),
        outbox,
        left: AtomicBool::new(false),
        last: AtomicI32::new(joined.last),
    });
    let lease = Lease {
        key: renderer.key.clone(),
        feed: joined.feed,
        sink: sink.clone(),
    };
    let subscriber = Subscriber {
        sink,
        id,
        protocol,
        renderer,
        done,
    };
    // A feed that stopped drops the subscriber, and with it `done`: the stream completes.
    let _ = lease.feed.commands.send(Command::Join(subscriber));
    Some((lease, finished))
}

/// A socket's place in a feed; leaves it when dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    key: RenderKey,
    feed: Arc<FeedHandle>,
    sink: Arc<Sink>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Before the socket answers the client's `complete`: no segment follows it, even one
        // the feed writes before it has read the `Leave`.
        self.sink.left.store(true, Ordering::Release);
        let _ = self.feed.commands.send(Command::Leave {
            key: self.key.clone(),
            token: self.sink.token,
        });
    }
}

/// The subscribers that share one render.
#[derive(Debug)]
struct Group {
    renderer: Arc<Renderer>,
    subscribers: HashMap<u64, Subscriber>,
    /// What a segment is written to, kept from one segment to the next until someone joins,
    /// leaves or is found gone.
    targets: Option<Targets>,
}

/// A group's sockets, each with its kind of frame: the frame of a segment differs only by the
/// protocol and the operation id a client chose, so one is encoded per distinct pair. (Clients
/// such as `graphql-ws` choose a fresh id for every subscription: then every socket has a kind
/// of its own, and the writer threads encode the frames.)
#[derive(Debug)]
struct Targets {
    kinds: Arc<[(WebSocketProtocols, Arc<str>)]>,
    sinks: Arc<[(Arc<Sink>, usize)]>,
}

impl Group {
    /// Adds a subscriber; the kept target list is rebuilt at the next segment.
    fn join(&mut self, subscriber: Subscriber) {
        self.targets = None;
        self.subscribers.insert(subscriber.sink.token, subscriber);
    }

    /// Removes a subscriber (one that left, or whose socket is gone), if it is still here.
    fn leave(&mut self, token: u64) {
        if self.subscribers.remove(&token).is_some() {
            self.targets = None;
        }
    }

    fn targets(&mut self) -> &Targets {
        self.targets.get_or_insert_with(|| {
            let mut kinds = Vec::new();
            let mut index: HashMap<(WebSocketProtocols, &str), usize> = HashMap::new();
            let sinks = self
                .subscribers
                .values()
                .map(|subscriber| {
                    let kind = *index
                        .entry((subscriber.protocol, &subscriber.id))
                        .or_insert_with(|| {
                            kinds.push((subscriber.protocol, subscriber.id.clone()));
                            kinds.len() - 1
                        });
                    (subscriber.sink.clone(), kind)
                })
                .collect();
            Targets {
                kinds: kinds.into(),
                sinks,
            }
        })
    }
}

/// One call's feed.
#[derive(Debug)]
struct Feed {
    call: CallId,
    call_key: String,
    /// Every segment seen since the feed started, for subscribers still replaying.
    seen: Vec<SegmentNode>,
    groups: HashMap<RenderKey, Group>,
    ended: bool,
}

impl Feed {
    fn new(call: CallId) -> Self {
        Self {
            call,
            call_key: call.to_string(),
            seen: Vec::new(),
            groups: HashMap::new(),
            ended: false,
        }
    }

    async fn run(
        mut self,
        events: impl futures_util::Stream<Item = Arc<Event>> + Send,
        mut inbox: mpsc::UnboundedReceiver<Command>,
    ) {
        let mut events = std::pin::pin!(events);
        loop {
            tokio::select! {
                command = inbox.recv() => match command {
                    Some(Command::Join(subscriber)) => self.join(subscriber).await,
                    Some(Command::Leave { key, token }) => {
                        if let Some(group) = self.groups.get_mut(&key) {
                            group.leave(token);
                            if group.subscribers.is_empty() {
                                self.groups.remove(&key);
                            }
                        }
                    }
                    None => break, // The last lease is gone.
                },
                event = events.next(), if !self.ended => match event {
                    // Outside tokio's cooperative budget: the fan-out writes to thousands of
                    // sockets in one poll, and once the budget (128 operations) is spent, every
                    // further write would report "not ready" and fall back to the socket's
                    // writer task (a task wake-up per socket, which the direct write avoids).
                    Some(event) => tokio::task::unconstrained(self.event(&event)).await,
                    None => self.end(),
                },
            }
        }
    }

    async fn join(&mut self, mut subscriber: Subscriber) {
        // What the subscriber's replay missed, rendered for it alone (usually nothing).
        // Corrections too, even of seqs the replay held: a correction committed between the
        // replay's read and this join reached no group (sent twice at worst, which replaces a
        // line with the same text).
        let sink = subscriber.sink.clone();
        let last = sink.last.load(Ordering::Relaxed);
        let missed: Vec<SegmentNode> = self
            .seen
            .iter()
            .filter(|s| s.position() > last || s.is_correction())
            .cloned()
            .collect();
        for segment in missed {
            sink.last.fetch_max(segment.position(), Ordering::Relaxed);
            if let Some(payload) = subscriber.renderer.render(segment).await {
                let frame = next_frame(subscriber.protocol, &subscriber.id, &payload);
                if sink.outbox.send_frame_unless(&frame, &sink.left).is_err() {
                    return;
                }
            }
        }
        if self.ended {
            return; // Dropping `done` completes the subscription.
        }
        let group = self
            .groups
            .entry(subscriber.renderer.key.clone())
            .or_insert_with(|| Group {
                renderer: subscriber.renderer.clone(),
                subscribers: HashMap::new(),
                targets: None,
            });
        // One renderer per group: 10,000 subscribers do not each keep their own.
        subscriber.renderer = group.renderer.clone();
        group.join(subscriber);
    }

    async fn event(&mut self, event: &Event) {
        let Ok(payload) = serde_json::from_str::<serde_json::Value>(&event.payload) else {
            return;
        };
        if payload["callId"].as_str() != Some(self.call_key.as_str()) {
            return;
        }
        if super::calls::call_ended(event, &payload) {
            self.end();
            return;
        }
        let Some(segment) = SegmentNode::live(self.call, event, &payload) else {
            return;
        };
        let seq = segment.position();
        let corrected = segment.is_correction();
        match self
            .seen
            .iter_mut()
            .find(|s| corrected && s.position() == seq)
        {
            Some(earlier) => *earlier = segment.clone(),
            None => self.seen.push(segment.clone()),
        }
        let (received, mut rendering, mut sent) =
            (std::time::Instant::now(), Duration::ZERO, 0_usize);
        let mut shares = Vec::new();
        for group in self.groups.values_mut() {
            let render = std::time::Instant::now();
            let rendered = group.renderer.render(segment.clone()).await;
            rendering += render.elapsed();
            let Some(payload) = rendered else {
                continue;
            };
            let targets = group.targets();
            let write = Write {
                sinks: targets.sinks.clone(),
                frames: targets.kinds.iter().map(|_| OnceLock::new()).collect(),
                kinds: targets.kinds.clone(),
                payload,
                seq,
                corrected,
                next: AtomicUsize::new(0),
                began: std::time::Instant::now(),
            };
            // A socket whose writer has gone leaves.
            let (gone, written, spans) = fan_out(write).await;
            sent += written;
            shares.extend(spans);
            for token in gone {
                group.leave(token);
            }
        }
        self.groups.retain(|_, group| !group.subscribers.is_empty());
        tracing::debug!(
            call_id = %self.call,
            seq,
            sockets = sent,
            since_commit_us = (chrono::Utc::now() - event.created_at).num_microseconds(),
            render_us = rendering.as_micros(),
            total_us = received.elapsed().as_micros(),
            shares_us = ?shares,
            "Transcript segment fanned out."
        );
    }

    /// The call ended (or the hub stopped): every subscription completes after what it was sent.
    fn end(&mut self) {
        self.ended = true;
        for group in std::mem::take(&mut self.groups).into_values() {
            for subscriber in group.subscribers.into_values() {
                let _ = subscriber.done.send(());
            }
        }
    }
}

/// Below this many sockets a segment is written from the feed's own task alone. Debug builds
/// (the test suite) share out from two sockets on, so that the tests run the sharded path.
const SHARD_MIN: usize = if cfg!(debug_assertions) { 2 } else { 1024 };

/// How many sockets a writer takes at a time. Shares are taken, not dealt: a thread that
/// writes faster (its core less busy with anything else) writes more, and every thread
/// finishes within one chunk of the others.
const CHUNK: usize = if cfg!(debug_assertions) { 1 } else { 64 };

/// One segment's write to a group's sockets, shared by the writer threads.
struct Write {
    sinks: Arc<[(Arc<Sink>, usize)]>,
    /// The rendered `payload` of the segment's `next` message.
    payload: String,
    /// The protocol and operation id of each kind (see [`Targets`]).
    kinds: Arc<[(WebSocketProtocols, Arc<str>)]>,
    /// The frame of each kind, encoded by the first thread that needs it.
    frames: Box<[OnceLock<Frame>]>,
    seq: i32,
    /// A correction goes to everyone; anything else once per subscriber.
    corrected: bool,
    /// The first socket no thread has taken yet.
    next: AtomicUsize,
    began: std::time::Instant,
}

/// What one thread did of a [`Write`]: the tokens whose socket has gone, how many frames it
/// wrote, and when it started and ended (µs after the fan-out began, for the debug log).
struct Share {
    gone: Vec<u64>,
    written: usize,
    span: (u128, u128),
}

impl Write {
    fn share(&self) -> Share {
        let start = self.began.elapsed().as_micros();
        let (mut gone, mut written) = (Vec::new(), 0);
        loop {
            let from = self.next.fetch_add(CHUNK, Ordering::Relaxed);
            let Some(chunk) = self.sinks.get(from..self.sinks.len().min(from + CHUNK)) else {
                break;
            };
            if chunk.is_empty() {
                break;
            }
            // Each target's state (its sink, outbox and connection) is read once for the whole
            // chunk first: independent reads whose cache misses overlap, where the writes below
            // would wait for them one after another.
            std::hint::black_box(
                chunk
                    .iter()
                    .map(|(sink, _)| sink.outbox.warm())
                    .fold(0_usize, usize::wrapping_add),
            );
            for (sink, kind) in chunk {
                // A sink is in one group once, and only this fan-out writes `last` now: a plain
                // read and write (no locked instruction, which would wait for its cache miss).
                let last = sink.last.load(Ordering::Relaxed);
                if last >= self.seq && !self.corrected {
                    continue;
                }
                sink.last.store(last.max(self.seq), Ordering::Relaxed);
                let (Some(frame), Some((protocol, id))) =
                    (self.frames.get(*kind), self.kinds.get(*kind))
                else {
                    continue;
                };
                let frame = frame.get_or_init(|| next_frame(*protocol, id, &self.payload));
                match sink.outbox.send_frame_unless(frame, &sink.left) {
                    Ok(true) => written += 1,
                    Ok(false) => {}
                    Err(_) => gone.push(sink.token),
                }
            }
        }
        Share {
            gone,
            written,
            span: (start, self.began.elapsed().as_micros()),
        }
    }
}

/// Writes a segment's frame to each socket of a group; returns the tokens whose socket has
/// gone, how many frames were written, and each share's start and end. Many sockets are
/// written from every core at once, one share per writer thread (see [`super::writers`]): each
/// write is a system call that, on a local network, also runs the receiving side's TCP, so
/// 10,000 of them take tens of milliseconds on one core.
async fn fan_out(write: Write) -> (Vec<u64>, usize, Vec<(u128, u128)>) {
    let writers = super::writers::Writers::get();
    if writers.len() < 2 || write.sinks.len() < SHARD_MIN {
        let share = write.share();
        return (share.gone, share.written, vec![share.span]);
    }
    let write = Arc::new(write);
    let shares: Vec<_> = (0..writers.len())
        .map(|index| {
            let write = write.clone();
            writers.run(index, move || write.share())
        })
        .collect();
    let (mut gone, mut written, mut spans) = (Vec::new(), 0, Vec::with_capacity(shares.len()));
    for share in shares {
        // A share whose thread panicked wrote what it could; its sockets stay until they fail
        // again.
        if let Ok(share) = share.await {
            gone.extend(share.gone);
            written += share.written;
            spans.push(share.span);
        }
    }
    (gone, written, spans)
}

/// The `next` message (`data` in the older `graphql-ws` protocol) of operation `id` with a
/// rendered `payload`, as async-graphql writes it, encoded in one buffer: with an operation id
/// of its own per subscription, every socket gets a frame of its own.
fn next_frame(protocol: WebSocketProtocols, id: &str, payload: &str) -> Frame {
    let kind = match protocol {
        WebSocketProtocols::SubscriptionsTransportWS => r#"{"type":"data","id":"#,
        WebSocketProtocols::GraphQLWS => r#"{"type":"next","id":"#,
    };
    // Ids are usually plain (a number, a UUID): quoted as they are; others as JSON escapes them.
    let escaped;
    let id: [&str; 3] = if id.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        ["\"", id, "\""]
    } else {
        escaped = serde_json::to_string(id).unwrap_or_else(|_| "\"\"".to_owned());
        ["", &escaped, ""]
    };
    Frame::text(&[kind, id[0], id[1], id[2], r#","payload":"#, payload, "}"])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_domain::{Credential, Role};

    fn key(role: Role, subject: &str, scope: CustomerScope, variables: &str) -> RenderKey {
        let principal = Principal {
            subject: subject.to_owned(),
            role,
            credential: Credential::Token,
        };
        let variables: Variables = serde_json::from_str(variables).unwrap();
        render_key(
            "subscription($id: ID!) { callTranscript(callId: $id) { seq text } }",
            None,
            &variables,
            &principal,
            &scope,
        )
    }

    #[test]
    fn next_frames_carry_the_operation_id_as_json_would() {
        use tokio_tungstenite::tungstenite::Message;
        for id in [
            "1",
            "0000002a-0000-4002-8000-00000001484f",
            "a\"b",
            "back\\slash",
            "tab\there",
            "ünï",
        ] {
            for (protocol, kind) in [
                (WebSocketProtocols::GraphQLWS, "next"),
                (WebSocketProtocols::SubscriptionsTransportWS, "data"),
            ] {
                let Message::Text(text) = next_frame(protocol, id, r#"{"data":{"n":1}}"#).message()
                else {
                    panic!("a text frame");
                };
                let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(
                    value,
                    serde_json::json!({ "type": kind, "id": id, "payload": { "data": { "n": 1 } } }),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn renders_are_shared_only_by_callers_who_see_the_same() {
        let call = r#"{"id": "0190"}"#;
        let admin = key(Role::Admin, "ada", CustomerScope::All, call);
        assert_eq!(admin, key(Role::Admin, "bob", CustomerScope::All, call));
        assert_ne!(admin, key(Role::Manager, "mia", CustomerScope::All, call));
        let olga = key(
            Role::Sales,
            "olga",
            CustomerScope::OwnedBy("olga".into()),
            call,
        );
        let sam = key(
            Role::Sales,
            "sam",
            CustomerScope::OwnedBy("sam".into()),
            call,
        );
        assert_ne!(olga, sam);
        assert_ne!(olga, admin);
        assert_ne!(
            admin,
            key(Role::Admin, "ada", CustomerScope::All, r#"{"id": "0191"}"#)
        );
    }
}
