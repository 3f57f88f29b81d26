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
use crate::{
    audit::RequestId,
    events::EventHub,
    websocket::Frame,
    ws::{Outbox, Outgoing},
};
use async_graphql::{
    Request, Response, Variables, futures_util::StreamExt as _, http::WebSocketProtocols,
};
use crm_domain::{CallId, CustomerScope, Principal};
use crm_store::{calls, effects::Event};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
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

/// One socket's subscription to a feed.
#[derive(Debug)]
pub(crate) struct Subscriber {
    token: u64,
    /// The operation id the client chose.
    id: Arc<str>,
    protocol: WebSocketProtocols,
    outbox: Outbox,
    renderer: Arc<Renderer>,
    /// The last seq this subscriber has been sent.
    last: i32,
    /// Set when the subscription ends on the socket's side (see [`Outbox::send_unless`]).
    left: Arc<AtomicBool>,
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
    let token = TOKENS.fetch_add(1, Ordering::Relaxed);
    let (done, finished) = oneshot::channel();
    let left = Arc::new(AtomicBool::new(false));
    let lease = Lease {
        key: renderer.key.clone(),
        token,
        feed: joined.feed,
        left: left.clone(),
    };
    let subscriber = Subscriber {
        token,
        id,
        protocol,
        outbox,
        renderer,
        last: joined.last,
        left,
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
    token: u64,
    feed: Arc<FeedHandle>,
    left: Arc<AtomicBool>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Before the socket answers the client's `complete`: no segment follows it, even one
        // the feed writes before it has read the `Leave`.
        self.left.store(true, Ordering::Release);
        let _ = self.feed.commands.send(Command::Leave {
            key: self.key.clone(),
            token: self.token,
        });
    }
}

/// The subscribers that share one render.
#[derive(Debug)]
struct Group {
    renderer: Arc<Renderer>,
    subscribers: HashMap<u64, Subscriber>,
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
                            group.subscribers.remove(&token);
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
        let missed: Vec<SegmentNode> = self
            .seen
            .iter()
            .filter(|s| s.position() > subscriber.last || s.is_correction())
            .cloned()
            .collect();
        for segment in missed {
            subscriber.last = subscriber.last.max(segment.position());
            if let Some(payload) = subscriber.renderer.render(segment).await {
                let frame = next_frame(subscriber.protocol, &subscriber.id, &payload);
                if subscriber
                    .outbox
                    .send_unless(Outgoing::Frame(frame), &subscriber.left)
                    .is_err()
                {
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
            });
        // One renderer per group: 10,000 subscribers do not each keep their own.
        subscriber.renderer = group.renderer.clone();
        group.subscribers.insert(subscriber.token, subscriber);
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
            // Usually every socket of a group chose the same operation id: one frame for all.
            let mut frames: Vec<(WebSocketProtocols, Arc<str>, Frame)> = Vec::new();
            let mut targets = Vec::with_capacity(group.subscribers.len());
            for (token, subscriber) in &mut group.subscribers {
                // A correction goes to everyone; anything else once per subscriber.
                if subscriber.last >= seq && !corrected {
                    continue;
                }
                subscriber.last = subscriber.last.max(seq);
                let frame = match frames
                    .iter()
                    .find(|(p, id, _)| *p == subscriber.protocol && *id == subscriber.id)
                {
                    Some((_, _, frame)) => frame.clone(),
                    None => {
                        let frame = next_frame(subscriber.protocol, &subscriber.id, &payload);
                        frames.push((subscriber.protocol, subscriber.id.clone(), frame.clone()));
                        frame
                    }
                };
                targets.push(Target {
                    token: *token,
                    outbox: subscriber.outbox.clone(),
                    left: subscriber.left.clone(),
                    frame,
                });
            }
            sent += targets.len();
            // A socket whose writer has gone leaves.
            let (gone, spans) = fan_out(targets).await;
            shares.extend(spans);
            for token in gone {
                group.subscribers.remove(&token);
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

/// One socket's frame of a segment.
struct Target {
    token: u64,
    outbox: Outbox,
    left: Arc<AtomicBool>,
    frame: Frame,
}

/// Writes each frame to its socket; returns the tokens whose socket has gone, and each share's
/// start and end (µs) for the debug log. Many sockets are written from every core at once, one
/// share per writer thread (see [`super::writers`]): each write is a system call that, on a
/// local network, also runs the receiving side's TCP, so 10,000 of them take tens of
/// milliseconds on one core.
async fn fan_out(mut targets: Vec<Target>) -> (Vec<u64>, Vec<(u128, u128)>) {
    fn write(began: std::time::Instant, targets: Vec<Target>) -> (Vec<u64>, (u128, u128)) {
        let start = began.elapsed().as_micros();
        let gone = targets
            .into_iter()
            .filter_map(|target| {
                target
                    .outbox
                    .send_unless(Outgoing::Frame(target.frame), &target.left)
                    .is_err()
                    .then_some(target.token)
            })
            .collect();
        (gone, (start, began.elapsed().as_micros()))
    }
    let began = std::time::Instant::now();
    let writers = super::writers::Writers::get();
    if writers.len() < 2 || targets.len() < SHARD_MIN {
        let (gone, span) = write(began, targets);
        return (gone, vec![span]);
    }
    let share = targets.len().div_ceil(writers.len());
    let mut shares = Vec::with_capacity(writers.len());
    while !targets.is_empty() {
        let shard = targets.split_off(targets.len().saturating_sub(share));
        shares.push(writers.run(shares.len(), move || write(began, shard)));
    }
    let (mut gone, mut spans) = (Vec::new(), Vec::with_capacity(shares.len()));
    for share in shares {
        // A share whose thread panicked wrote what it could; its sockets stay until they fail
        // again.
        if let Ok((more, span)) = share.await {
            gone.extend(more);
            spans.push(span);
        }
    }
    (gone, spans)
}

/// The `next` message (`data` in the older `graphql-ws` protocol) of operation `id` with a
/// rendered `payload`, as async-graphql writes it.
fn next_frame(protocol: WebSocketProtocols, id: &str, payload: &str) -> Frame {
    let kind = match protocol {
        WebSocketProtocols::SubscriptionsTransportWS => "data",
        WebSocketProtocols::GraphQLWS => "next",
    };
    let id = serde_json::to_string(id).unwrap_or_else(|_| "\"\"".to_owned());
    Frame::text(&format!(
        r#"{{"type":"{kind}","id":{id},"payload":{payload}}}"#
    ))
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
