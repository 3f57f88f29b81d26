//! The WebSocket connection of `/graphql/ws`, owned here rather than by axum, so that a shared
//! transcript frame can be written to the socket as the bytes it already is.
//!
//! tungstenite frames every message into a buffer of its own per socket and writes that. For
//! a segment fanned out to 10,000 sockets, that is 10,000 copies, and the first frame larger
//! than a socket's buffer grows it: 10,000 `realloc`s at once, from every writer thread, on the
//! arenas of the threads that set the sockets up, where the writers waited for each other
//! (BENCHMARKS.md, session 13). A [`Frame`] is encoded once; [`Connection::write_frame`] hands
//! it to the socket directly whenever nothing of tungstenite's is waiting, and [`Wire`] keeps
//! the byte order when a write is cut short.
//!
//! The handshake is RFC 6455's over HTTP/1.1 (`GET` with `Upgrade: websocket`); the
//! connection then runs tokio-tungstenite over the upgraded stream.

use axum::{
    body::{Body, Bytes},
    extract::FromRequestParts,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts},
    response::{IntoResponse as _, Response},
};
use futures_util::{Sink, Stream};
use hyper_util::rt::TokioIo;
use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll, Waker, ready},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message, Utf8Bytes,
        protocol::{Role, WebSocketConfig},
    },
};

/// An accepted WebSocket handshake, not yet answered.
pub(crate) struct Upgrade {
    key: HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

/// A refused handshake, in the API's error shape.
fn refuse(status: StatusCode, message: &'static str) -> Response {
    crate::http::error_response(status, crate::error::code::BAD_REQUEST, message)
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
        if parts.method != Method::GET {
            return Err(refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "a WebSocket handshake is a GET request",
            ));
        }
        if !has_token(&parts.headers, header::CONNECTION, "upgrade")
            || !has_token(&parts.headers, header::UPGRADE, "websocket")
        {
            return Err(refuse(
                StatusCode::UPGRADE_REQUIRED,
                "`Connection: upgrade` and `Upgrade: websocket` are required",
            ));
        }
        if parts
            .headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Version: 13` is required",
            ));
        }
        let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Key` is required",
            ));
        };
        let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
            return Err(refuse(
                StatusCode::UPGRADE_REQUIRED,
                "this connection cannot be upgraded",
            ));
        };
        Ok(Self { key, on_upgrade })
    }
}

impl Upgrade {
    /// Answers the handshake with `protocol` and runs `serve` on the connection once the
    /// client has it.
    pub(crate) fn on_upgrade<F, Fut>(
        self,
        protocol: &'static str,
        config: WebSocketConfig,
        serve: F,
    ) -> Response
    where
        F: FnOnce(Connection) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept =
            tokio_tungstenite::tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let wire = Wire::new(TokioIo::new(upgraded));
            let socket = WebSocketStream::from_raw_socket(wire, Role::Server, Some(config)).await;
            serve(Connection(Arc::new(Mutex::new(socket)))).await;
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept)
            .header(header::SEC_WEBSOCKET_PROTOCOL, protocol)
            .body(Body::empty())
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }
}

/// A text message encoded once as a server frame (unmasked, unfragmented), for any number of
/// sockets.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    bytes: Bytes,
    header: usize,
}

impl Frame {
    /// The text frame of `parts` joined, encoded in one buffer.
    pub(crate) fn text(parts: &[&str]) -> Self {
        let len = parts.iter().map(|part| part.len()).sum::<usize>();
        let mut bytes = Vec::with_capacity(len + 10);
        bytes.push(0x81); // FIN, text
        match (u8::try_from(len), u16::try_from(len)) {
            (Ok(short), _) if short < 126 => bytes.push(short),
            (_, Ok(medium)) => {
                bytes.push(126);
                bytes.extend_from_slice(&medium.to_be_bytes());
            }
            _ => {
                bytes.push(127);
                bytes.extend_from_slice(&u64::try_from(len).unwrap_or(u64::MAX).to_be_bytes());
            }
        }
        let header = bytes.len();
        for part in parts {
            bytes.extend_from_slice(part.as_bytes());
        }
        Self {
            bytes: bytes.into(),
            header,
        }
    }

    /// The frame as a message for tungstenite (when it must wait its turn behind others).
    pub(crate) fn message(&self) -> Message {
        match Utf8Bytes::try_from(self.bytes.slice(self.header..)) {
            Ok(text) => Message::Text(text),
            // Built from a `&str`: always text.
            Err(_) => Message::Binary(self.bytes.slice(self.header..)),
        }
    }
}

/// The upgraded stream under tungstenite: passes everything through, and keeps what a direct
/// frame write left unwritten, to be written before anything else.
pub(crate) struct Wire<S = TokioIo<hyper::upgrade::Upgraded>> {
    io: S,
    /// The unwritten end of a direct frame write.
    rest: Bytes,
    /// A write of tungstenite's had to wait: its buffer may hold part of a frame until it
    /// flushes.
    stalled: bool,
    /// A close frame was received or sent: no data frame may follow.
    closed: bool,
}

impl<S: AsyncWrite + Unpin> Wire<S> {
    fn new(io: S) -> Self {
        Self {
            io,
            rest: Bytes::new(),
            stalled: false,
            closed: false,
        }
    }

    fn poll_rest(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.rest.is_empty() {
            let written = ready!(Pin::new(&mut self.io).poll_write(cx, &self.rest))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let _ = self.rest.split_to(written);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Wire<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Wire<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.poll_rest(cx)?.is_pending() {
            this.stalled = true;
            return Poll::Pending;
        }
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if written.is_pending() {
            this.stalled = true;
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_rest(cx))?;
        let flushed = ready!(Pin::new(&mut this.io).poll_flush(cx));
        // tungstenite flushes the stream only once its own buffer is written.
        this.stalled = false;
        Poll::Ready(flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_rest(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// How a direct frame write went.
pub(crate) enum Direct {
    /// Written whole.
    Sent,
    /// Partly written: the rest goes out with the next flush.
    Unflushed,
    /// Not now (tungstenite has something waiting, or the socket is full): queue it.
    Busy,
    /// The socket failed or is closing.
    Failed,
}

type Socket<S> = WebSocketStream<Wire<S>>;

/// One WebSocket connection, shared by its reading and writing halves (each takes the lock
/// for one poll at a time).
pub(crate) struct Connection<S = TokioIo<hyper::upgrade::Upgraded>>(Arc<Mutex<Socket<S>>>);

impl<S> Clone for Connection<S> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    fn lock(&self) -> MutexGuard<'_, Socket<S>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads a word next to the connection's lock (see `Outbox::warm`).
    pub(crate) fn warm(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    /// Writes `frame` straight into the socket if nothing of tungstenite's waits before it.
    pub(crate) fn write_frame(&self, frame: &Frame) -> Direct {
        let mut socket = self.lock();
        let wire = socket.get_mut();
        if wire.closed {
            return Direct::Failed;
        }
        if wire.stalled || !wire.rest.is_empty() {
            return Direct::Busy;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut wire.io).poll_write(&mut cx, &frame.bytes) {
            Poll::Ready(Ok(written)) if written == frame.bytes.len() => Direct::Sent,
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Direct::Failed,
            Poll::Ready(Ok(written)) => {
                wire.rest = frame.bytes.slice(written..);
                Direct::Unflushed
            }
            Poll::Pending => Direct::Busy,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for Connection<S> {
    type Item = Result<Message, tokio_tungstenite::tungstenite::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut socket = self.lock();
        let next = Pin::new(&mut *socket).poll_next(cx);
        if let Poll::Ready(Some(Ok(Message::Close(_))) | Some(Err(_)) | None) = &next {
            socket.get_mut().closed = true;
        }
        next
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for Connection<S> {
    type Error = tokio_tungstenite::tungstenite::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut *self.lock()).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), Self::Error> {
        let mut socket = self.lock();
        if matches!(message, Message::Close(_)) {
            socket.get_mut().closed = true;
        }
        Pin::new(&mut *socket).start_send(message)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut *self.lock()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let mut socket = self.lock();
        socket.get_mut().closed = true;
        Pin::new(&mut *socket).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_length_as_rfc_6455_says() {
        let short = Frame::text(&["hi"]);
        assert_eq!(&short.bytes[..], b"\x81\x02hi");
        let medium = Frame::text(&[&"a".repeat(300)]);
        assert_eq!(&medium.bytes[..4], &[0x81, 126, 1, 44]);
        assert_eq!(medium.bytes.len(), 304);
        let long = Frame::text(&[&"b".repeat(70_000)]);
        assert_eq!(&long.bytes[..2], &[0x81, 127]);
        assert_eq!(&long.bytes[2..10], &70_000_u64.to_be_bytes());
        assert!(matches!(long.message(), Message::Text(text) if text.len() == 70_000));
        let joined = Frame::text(&["{", &"c".repeat(124), "}"]);
        assert_eq!(&joined.bytes[..4], &[0x81, 126, 0, 126]);
        assert_eq!(&joined.bytes[4..5], b"{");
        assert_eq!(joined.bytes.len(), 130);
    }

    /// Frames written as bytes (whole, cut short, or queued behind a cut one) and messages
    /// written by tungstenite reach the client intact and in the order they were sent, through
    /// a pipe too narrow for most frames; nothing is written after the close.
    #[tokio::test]
    async fn direct_frames_and_tungstenite_messages_keep_their_order() {
        use futures_util::{SinkExt as _, StreamExt as _};
        let (server, client) = tokio::io::duplex(64);
        let socket = WebSocketStream::from_raw_socket(Wire::new(server), Role::Server, None).await;
        let connection = Connection(Arc::new(Mutex::new(socket)));
        let mut client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(Ok(message)) = client.next().await {
                match message {
                    Message::Text(text) => got.push(text.to_string()),
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            got
        });
        let (mut writer, mut sent, mut ways) = (connection.clone(), Vec::new(), [0; 3]);
        for n in 0..60 {
            let text = format!("{n}:{}", "x".repeat(n * 5));
            if n % 4 == 0 {
                writer.send(Message::text(text.clone())).await.unwrap();
            } else {
                let frame = Frame::text(&[&text]);
                match connection.write_frame(&frame) {
                    Direct::Sent => ways[0] += 1,
                    // The rest goes out ahead of whatever tungstenite writes next.
                    Direct::Unflushed => ways[1] += 1,
                    Direct::Busy => {
                        ways[2] += 1;
                        writer.send(frame.message()).await.unwrap();
                    }
                    Direct::Failed => panic!("the pipe failed"),
                }
            }
            sent.push(text);
            // The client reads between the writes: a frame cut short is then followed by one
            // that would fit, and must still wait for the rest.
            tokio::task::yield_now().await;
        }
        writer.close().await.unwrap();
        assert!(ways.iter().all(|&n| n > 0), "every way was taken: {ways:?}");
        assert_eq!(reader.await.unwrap(), sent);
        assert!(matches!(
            connection.write_frame(&Frame::text(&["late"])),
            Direct::Failed
        ));
    }
}
