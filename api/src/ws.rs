//! GraphQL subscriptions over WebSocket at `/graphql/ws` (`graphql-transport-ws`, and the older
//! `graphql-ws`).
//!
//! - The client authenticates in `connection_init` with `{"Authorization": "Bearer <token or
//!   API key>"}` (browsers cannot set headers on a WebSocket; a bare credential and an
//!   `Authorization` header on the upgrade request are accepted too). Without valid credentials
//!   the connection is closed before any operation runs.
//! - Only subscriptions are served here: queries and mutations go to `POST /graphql`, where every
//!   request is rate-limited per caller.
//! - The credential is checked again on every `subscribe`, so a revoked key or an expired token
//!   cannot start new subscriptions on an old connection; each operation gets fresh DataLoaders.
//! - `callTranscript` replays per subscriber, then joins its call's shared feed, which renders
//!   each live segment once per render key and writes the same bytes to every socket (see
//!   `graphql::transcripts`). Everything a socket sends passes one [`Outbox`]: straight into
//!   the socket while its writer task is idle, else queued for that task, which flushes once
//!   per batch.

use crate::websocket::{Connection, Direct, Frame};
use crate::{
    audit::RequestId,
    auth::Authenticator,
    error::code,
    graphql::{
        ApiContext, AppSchema,
        transcripts::{self, JoinSlot, Renderer},
    },
};
use async_graphql::{
    Data, ErrorExtensions as _, Executor, Request, Response,
    futures_util::stream::{self, BoxStream, StreamExt as _},
    http::WebSocketProtocols,
    parser::types::{ExecutableDocument, OperationType, Selection},
};
use futures_util::{Sink, SinkExt as _};
use std::{
    collections::VecDeque,
    pin::Pin,
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Waker},
};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::Message;

/// Most of async-graphql's messages that wait in one socket's outbox: beyond that its
/// subscription streams wait (and a lagging one re-reads from the event table).
const OUTBOX_BUDGET: usize = 64;

/// The request extension that carries the client's operation id from the socket to
/// [`SubscriptionsOnly::execute_stream`] (set, or overwritten, on every `subscribe`).
const OPERATION_ID: &str = "crmOperationId";

/// The schema as served over one WebSocket connection.
#[derive(Clone)]
pub(crate) struct SubscriptionsOnly {
    schema: AppSchema,
    context: ApiContext,
    authenticator: Authenticator,
    /// The credential given at `connection_init` (set once, by the init handler).
    credential: Arc<OnceLock<String>>,
    /// The socket's outbox, for the frames of shared transcript feeds.
    outbox: Outbox,
    protocol: WebSocketProtocols,
}

fn refusal(message: &str, code: &'static str) -> Response {
    let error = async_graphql::Error::new(message).extend_with(|_, ext| ext.set("code", code));
    Response::from_errors(vec![error.into_server_error(Default::default())])
}

impl SubscriptionsOnly {
    /// The executor of one connection.
    pub(crate) fn new(
        schema: AppSchema,
        context: ApiContext,
        authenticator: Authenticator,
        (outbox, protocol): (Outbox, WebSocketProtocols),
    ) -> Self {
        Self {
            schema,
            context,
            authenticator,
            credential: Arc::new(OnceLock::new()),
            outbox,
            protocol,
        }
    }

    /// Checks the credential of `connection_init`; on success, remembers it for every
    /// `subscribe`. `header` is the upgrade request's `Authorization`, if any.
    pub(crate) async fn init(
        &self,
        payload: &serde_json::Value,
        header: Option<String>,
    ) -> async_graphql::Result<Data> {
        let credential = ["Authorization", "authorization", "authToken"]
            .iter()
            .find_map(|key| payload.get(*key).and_then(|v| v.as_str()))
            .map(|c| {
                if c.contains(' ') {
                    c.to_owned()
                } else {
                    format!("Bearer {c}")
                }
            })
            .or(header)
            .unwrap_or_default();
        if let Err(error) = self
            .authenticator
            .authenticate(
                Some(&credential)
                    .filter(|c| !c.is_empty())
                    .map(String::as_str),
            )
            .await
        {
            tracing::warn!(target: "crm::security", reason = %error, "WebSocket authentication failed.");
            return Err(async_graphql::Error::new(error.to_string()));
        }
        let _ = self.credential.set(credential);
        Ok(Data::default())
    }
}

impl Executor for SubscriptionsOnly {
    async fn execute(&self, _request: Request) -> Response {
        refusal(
            "only subscriptions are served at /graphql/ws; send queries and mutations to POST /graphql",
            code::BAD_REQUEST,
        )
    }

    fn execute_stream(
        &self,
        mut request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        let subscriptions_only = request.parsed_query().map(|document| {
            document
                .operations
                .iter()
                .all(|(_, op)| op.node.ty == OperationType::Subscription)
        });
        match subscriptions_only {
            Err(error) => {
                return stream::once(async move { Response::from_errors(vec![error]) }).boxed();
            }
            Ok(false) => {
                return stream::once(async {
                    refusal(
                        "only subscriptions are served at /graphql/ws; send queries and mutations to POST /graphql",
                        code::BAD_REQUEST,
                    )
                })
                .boxed();
            }
            Ok(true) => {}
        }
        let operation_id = request
            .extensions
            .remove(OPERATION_ID)
            .and_then(|id| match id {
                async_graphql::Value::String(id) => Some(Arc::<str>::from(id)),
                _ => None,
            });
        let transcript = operation_id.filter(|_| request.parsed_query().is_ok_and(is_transcript));
        let this = self.clone();
        stream::once(async move {
            let credential = this.credential.get().cloned();
            match this.authenticator.authenticate(credential.as_deref()).await {
                Ok(principal) => {
                    let request = this
                        .context
                        .loaders()
                        .attach(request)
                        .data(principal)
                        .data(RequestId(uuid::Uuid::new_v4().to_string()));
                    match transcript {
                        Some(id) => this.transcript(id, request, session_data),
                        None => Executor::execute_stream(&this.schema, request, session_data),
                    }
                }
                Err(error) => {
                    tracing::warn!(target: "crm::security", reason = %error, "WebSocket subscribe refused.");
                    stream::once(async move {
                        refusal(&error.to_string(), code::UNAUTHENTICATED)
                    })
                    .boxed()
                }
            }
        })
        .flatten()
        .boxed()
    }
}

impl SubscriptionsOnly {
    /// `callTranscript`: the replay runs for this caller alone; then, if the caller passed every
    /// check and the call goes on, the subscription joins the call's shared feed, which writes
    /// to the outbox directly. The stream stays open (yielding nothing) until the feed is done
    /// with it, so the socket sends `complete` after the last segment; a client's `complete`
    /// or a closed socket drops it, and with it the lease.
    fn transcript(
        &self,
        id: Arc<str>,
        request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        let slot = JoinSlot::default();
        let operation = (
            request.query.clone(),
            request.operation_name.clone(),
            request.variables.clone(),
        );
        let replay =
            Executor::execute_stream(&self.schema, request.data(slot.clone()), session_data);
        let (shared, outbox, protocol) = (
            (self.schema.clone(), self.context.clone()),
            self.outbox.clone(),
            self.protocol,
        );
        let live = stream::once(async move {
            let joined = transcripts::join(&slot, id, protocol, outbox, |principal, scope| {
                Renderer::new(shared, operation, principal, scope)
            });
            if let Some((lease, finished)) = joined {
                let _ = finished.await;
                drop(lease);
            }
        })
        .filter_map(|()| async { None::<Response> });
        replay.chain(live).boxed()
    }
}

/// Whether `document` is one subscription selecting only `callTranscript` (the operations
/// served by a shared feed; anything else runs per subscriber).
fn is_transcript(document: &ExecutableDocument) -> bool {
    let mut operations = document.operations.iter();
    let (Some((_, operation)), None) = (operations.next(), operations.next()) else {
        return false;
    };
    let items = &operation.node.selection_set.node.items;
    operation.node.ty == OperationType::Subscription
        && items.len() == 1
        && items.first().is_some_and(|item| {
            matches!(&item.node, Selection::Field(field) if field.node.name.node == "callTranscript")
        })
}

/// The protocol a client asked for, chosen as async-graphql-axum's `GraphQLProtocol` does.
pub(crate) fn protocol_of(headers: &axum::http::HeaderMap) -> Option<WebSocketProtocols> {
    headers
        .get(axum::http::header::SEC_WEBSOCKET_PROTOCOL)?
        .to_str()
        .ok()?
        .split(',')
        .find_map(|p| p.trim().parse().ok())
}

/// An incoming message as the executor should see it: a `subscribe` (`start`) carries its
/// operation id into the request's extensions.
fn tag_operation(message: Message) -> Message {
    let Message::Text(text) = &message else {
        return message;
    };
    // Cheap test first: only subscribe messages are rewritten.
    if !(text.contains("subscribe") || text.contains("start")) {
        return message;
    }
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(text) else {
        return message;
    };
    if !matches!(value["type"].as_str(), Some("subscribe" | "start")) {
        return message;
    }
    let Some(id) = value["id"].as_str().map(str::to_owned) else {
        return message;
    };
    let Some(payload) = value.get_mut("payload").and_then(|p| p.as_object_mut()) else {
        return message;
    };
    let extensions = payload
        .entry("extensions")
        .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
    if let Some(extensions) = extensions.as_object_mut() {
        extensions.insert(OPERATION_ID.to_owned(), serde_json::Value::String(id));
    } else {
        return message;
    }
    Message::Text(value.to_string().into())
}

/// Serves the GraphQL WebSocket protocol on `socket`: the client's messages go to
/// async-graphql, its replies to the outbox.
pub(crate) async fn serve<E, F, R>(
    socket: Connection,
    outbox: Outbox,
    executor: E,
    protocol: WebSocketProtocols,
    init: F,
) where
    E: Executor,
    F: FnOnce(serde_json::Value) -> R + Send + 'static,
    R: Future<Output = async_graphql::Result<Data>> + Send + 'static,
{
    let input = socket
        .take_while(|message| std::future::ready(message.is_ok()))
        .filter_map(|message| {
            std::future::ready(match message.map(tag_operation) {
                Ok(Message::Text(text)) => Some(axum::body::Bytes::from(text)),
                Ok(Message::Binary(bytes)) => Some(bytes),
                _ => None,
            })
        });
    let replies =
        async_graphql::http::WebSocket::new(executor, input, protocol).on_connection_init(init);
    let sink = graphql_sink(outbox);
    futures_util::pin_mut!(replies, sink);
    while let Some(reply) = replies.next().await {
        let message = match reply {
            async_graphql::http::WsMessage::Text(text) => Message::Text(text.into()),
            async_graphql::http::WsMessage::Close(code, reason) => {
                Message::Close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                    code: code.into(),
                    reason: reason.into(),
                }))
            }
        };
        if sink.send(message).await.is_err() {
            break;
        }
    }
}

/// async-graphql's way into the outbox, waiting while [`OUTBOX_BUDGET`] messages wait.
pub(crate) fn graphql_sink(outbox: Outbox) -> impl Sink<Message, Error = ()> {
    let budget = Arc::new(Semaphore::new(OUTBOX_BUDGET));
    futures_util::sink::unfold(outbox, move |outbox, message: Message| {
        let budget = budget.clone();
        async move {
            let permit = budget.acquire_owned().await.map_err(|_| ())?;
            outbox.send(message, Some(permit)).map_err(|_| ())?;
            Ok(outbox)
        }
    })
}

/// What a socket sends.
pub(crate) enum Outgoing {
    /// async-graphql's message, with the permit that bounds how much of its output may wait.
    Message(Message, Option<OwnedSemaphorePermit>),
    /// A shared feed's frame, encoded once for all its sockets (one call's transcript bounds
    /// how many may wait).
    Frame(Frame),
}

/// The sending side of a socket.
type Socket = Connection;

/// Everything one socket sends passes here, in order: async-graphql's messages and the frames
/// of shared transcript feeds. While the socket's writer task has nothing to do, a sender
/// writes its message straight into the socket (no queue, no task wake-up: a feed's segment
/// reaches 10,000 sockets as 10,000 writes). A
/// message that cannot go out at once (the socket's buffer is full, or its reader holds it for
/// a moment) waits in the queue for the writer task, which waits for the socket to drain.
#[derive(Clone)]
pub(crate) struct Outbox(Arc<OutboxState>);

struct OutboxState {
    queue: Mutex<Queue>,
    ready: Notify,
    socket: Socket,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Outbox").field(&*self.queue()).finish()
    }
}

#[derive(Default)]
struct Queue {
    messages: VecDeque<Outgoing>,
    /// The writer task waits: senders may write to the socket themselves.
    idle: bool,
    /// A sender's write did not finish flushing: the writer task flushes the rest.
    unflushed: bool,
    closed: bool,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("messages", &self.messages.len())
            .field("idle", &self.idle)
            .field("unflushed", &self.unflushed)
            .field("closed", &self.closed)
            .finish()
    }
}

/// The outbox was closed: its socket is gone.
#[derive(Debug)]
pub(crate) struct Closed;

/// What a sender hands the outbox: its own message, or a feed's frame that many sockets share
/// (a reference to it is taken only if it must wait in the queue: no reference count goes up
/// and down per socket).
enum Pending<'a> {
    Message(Message, Option<OwnedSemaphorePermit>),
    Frame(&'a Frame),
}

impl Pending<'_> {
    fn into_owned(self) -> Outgoing {
        match self {
            Self::Message(message, permit) => Outgoing::Message(message, permit),
            Self::Frame(frame) => Outgoing::Frame(frame.clone()),
        }
    }
}

/// Writes `message` into `socket` without waiting: a frame as its bytes, a message through
/// tungstenite, polled once with a waker that does nothing (a write that must wait is handed
/// to the writer task, which polls again with its own waker).
fn write_now(socket: &Socket, message: Pending<'_>) -> (Direct, Option<Outgoing>) {
    let (message, permit) = match message {
        Pending::Frame(frame) => {
            return match socket.write_frame(frame) {
                Direct::Busy => (Direct::Busy, Some(Outgoing::Frame(frame.clone()))),
                done => (done, None),
            };
        }
        Pending::Message(message, permit) => (message, permit),
    };
    let mut cx = Context::from_waker(Waker::noop());
    let mut socket = socket.clone();
    let mut socket = Pin::new(&mut socket);
    match socket.as_mut().poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(_)) => return (Direct::Failed, None),
        Poll::Pending => return (Direct::Busy, Some(Outgoing::Message(message, permit))),
    }
    // The permit is returned once its message is in the socket's buffer.
    let _permit = permit;
    if socket.as_mut().start_send(message).is_err() {
        return (Direct::Failed, None);
    }
    match socket.poll_flush(&mut cx) {
        Poll::Ready(Ok(())) => (Direct::Sent, None),
        Poll::Ready(Err(_)) => (Direct::Failed, None),
        Poll::Pending => (Direct::Unflushed, None),
    }
}

impl Outbox {
    /// The outbox of `socket`; its writer task is [`write`].
    pub(crate) fn new(socket: Socket) -> Self {
        Self(Arc::new(OutboxState {
            queue: Mutex::default(),
            ready: Notify::new(),
            socket,
        }))
    }

    /// Reads a word of the outbox's state and of its connection's, so that a pass over many
    /// outboxes brings them into the cache side by side (see `transcripts`).
    pub(crate) fn warm(&self) -> usize {
        Arc::strong_count(&self.0).wrapping_add(self.0.socket.warm())
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.0.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends async-graphql's `message` (its `permit` returned once it is in the socket's
    /// buffer): straight into the socket if nothing waits before it and the writer task is
    /// idle, else through the writer task.
    pub(crate) fn send(
        &self,
        message: Message,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<(), Closed> {
        self.pass(Pending::Message(message, permit), &AtomicBool::new(false))
            .map(|_| ())
    }

    /// Sends a feed's `frame` unless `left` is set, which is read under the outbox's lock: a
    /// subscription that sets it before its socket sends `complete` gets nothing after that.
    /// The frame is cloned (a reference count) only if it has to wait. `Ok(false)`: not sent,
    /// the subscription had left.
    pub(crate) fn send_frame_unless(
        &self,
        frame: &Frame,
        left: &AtomicBool,
    ) -> Result<bool, Closed> {
        self.pass(Pending::Frame(frame), left)
    }

    /// Sends `message` unless `left` is set: `Ok(true)` once it is written or queued.
    fn pass(&self, message: Pending<'_>, left: &AtomicBool) -> Result<bool, Closed> {
        let mut guard = self.queue();
        let queue = &mut *guard;
        if queue.closed {
            return Err(Closed);
        }
        if left.load(Ordering::Acquire) {
            return Ok(false);
        }
        let message = if queue.idle && queue.messages.is_empty() && !queue.unflushed {
            match write_now(&self.0.socket, message) {
                (Direct::Sent, _) => return Ok(true),
                (Direct::Unflushed, _) => {
                    queue.unflushed = true;
                    None
                }
                (Direct::Busy, message) => message,
                (Direct::Failed, _) => {
                    // Nothing was queued (a direct write needs an empty queue).
                    queue.closed = true;
                    drop(guard);
                    self.0.ready.notify_one();
                    return Err(Closed);
                }
            }
        } else {
            Some(message.into_owned())
        };
        queue.messages.extend(message);
        drop(guard);
        self.0.ready.notify_one();
        Ok(true)
    }

    /// Closes the outbox: what waits is still written, later sends fail.
    pub(crate) fn close(&self) {
        self.queue().closed = true;
        self.0.ready.notify_one();
    }
}

/// The socket's writer task: writes what waits in the outbox, flushing once per batch, and
/// leaves the socket to the senders while nothing waits. Ends when the outbox is closed and
/// empty (then closes the socket), or the socket fails (then closes the outbox).
pub(crate) async fn write(outbox: Outbox) {
    let mut writing = outbox.0.socket.clone();
    let mut batch = VecDeque::new();
    loop {
        // `notify_one` leaves a permit when nobody waits: no wake-up is lost.
        let ready = outbox.0.ready.notified();
        let idle = {
            let mut queue = outbox.queue();
            queue.idle = queue.messages.is_empty() && !queue.unflushed;
            if queue.idle && queue.closed {
                break;
            }
            if !queue.idle {
                // What a sender's direct write left unflushed goes with this batch's flush.
                std::mem::swap(&mut queue.messages, &mut batch);
                queue.unflushed = false;
            }
            queue.idle
        };
        if idle {
            ready.await;
            continue;
        }
        let mut failed = false;
        for outgoing in batch.drain(..) {
            let (message, _permit) = match outgoing {
                Outgoing::Message(message, permit) => (message, permit),
                Outgoing::Frame(frame) => (frame.message(), None),
            };
            if writing.feed(message).await.is_err() {
                failed = true;
                break;
            }
        }
        if failed || writing.flush().await.is_err() {
            outbox.close();
            return;
        }
    }
    let _ = writing.close().await;
}
