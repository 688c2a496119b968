//! A WebSocket that gives back what a large frame made it grow.
//!
//! tungstenite keeps one read buffer per socket (a `BytesMut`) and reserves a whole frame's length
//! in it when a frame's header arrives; after the frame it reclaims that allocation for the next
//! reads rather than shrinking it, and its write buffer (a `Vec`) keeps the capacity of the
//! largest frame written. Neither can be shrunk from outside, and the socket cannot be rebuilt at
//! an arbitrary moment either: its read buffer may hold bytes of frames not yet returned.
//!
//! [`Tracked`] sits between tungstenite and the connection and follows the frame headers in the
//! bytes tungstenite reads (no copy, no buffer of its own). It knows when every byte read belongs
//! to a frame that tungstenite has already turned into a message, that is, when tungstenite's
//! read buffer is empty. At such a moment, after a frame larger than the read buffer went by (or
//! one was written), [`LeanSocket`] takes the connection out of the old socket and builds a fresh
//! one with the configured small buffers.

use futures_util::{FutureExt, Sink, SinkExt, Stream};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// Where the reader stands in the byte stream of client frames.
#[derive(Debug, Clone, Default)]
struct FrameCount {
    /// The header of the frame being read, as far as it has arrived.
    header: [u8; 14],
    /// Bytes of `header` that arrived.
    have: usize,
    /// Payload bytes of the current frame still to come (its header is complete).
    payload_left: u64,
    /// Frames seen whole after which tungstenite returns something (a control frame, or the final
    /// frame of a message).
    items: u64,
    /// A message's first frames arrived, not its last.
    fragmented: bool,
    /// A frame longer than `large` arrived since the flag was last cleared.
    saw_large: bool,
    /// The length past which a frame grows tungstenite's read buffer beyond its configured size.
    large: u64,
}

impl FrameCount {
    fn new(large: usize) -> Self {
        Self { large: large as u64, ..Self::default() }
    }

    /// The header's full length, once its first two bytes are known.
    fn header_len(&self) -> Option<usize> {
        if self.have < 2 {
            return None;
        }
        let extended = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        Some(2 + extended + mask)
    }

    fn payload_len(&self) -> u64 {
        match self.header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => u64::from_be_bytes(self.header[2..10].try_into().expect("eight bytes")),
            short => u64::from(short),
        }
    }

    fn frame_ended(&mut self) {
        let fin = self.header[0] & 0x80 != 0;
        let control = self.header[0] & 0x08 != 0;
        if control || fin {
            self.items += 1;
        }
        if !control {
            self.fragmented = !fin;
        }
    }

    /// Follows `bytes`, the next bytes tungstenite read from the connection.
    fn saw(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let taken = bytes.len().min(usize::try_from(self.payload_left).unwrap_or(usize::MAX));
                self.payload_left -= taken as u64;
                bytes = &bytes[taken..];
                if self.payload_left == 0 {
                    self.frame_ended();
                }
                continue;
            }
            self.header[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if self.header_len() == Some(self.have) {
                let length = self.payload_len();
                self.have = 0;
                self.saw_large |= length > self.large;
                if length == 0 {
                    self.frame_ended();
                } else {
                    self.payload_left = length;
                }
            }
        }
    }

    /// True when every byte seen belongs to a whole frame and tungstenite returned `returned`
    /// items: nothing is left in its read buffer.
    fn drained(&self, returned: u64) -> bool {
        self.have == 0 && self.payload_left == 0 && !self.fragmented && self.items == returned
    }
}

/// The connection under a [`LeanSocket`], following the frames tungstenite reads from it.
#[derive(Debug)]
pub struct Tracked<S> {
    inner: S,
    frames: FrameCount,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let this = &mut *self;
        this.frames.saw(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// What happened on a [`LeanSocket`].
#[derive(Debug)]
pub enum SocketEvent {
    /// The client's next message; `None` when the connection ended.
    Received(Option<Result<Message, WsError>>),
    /// The write in progress completed (or failed).
    Written(Result<(), WsError>),
}

/// A server-side WebSocket whose buffers return to their configured size after a large frame.
pub struct LeanSocket<S> {
    /// `None` only while it is being rebuilt.
    socket: Option<WebSocketStream<Tracked<S>>>,
    config: WebSocketConfig,
    /// Items (messages, pings, pongs, closes) the socket returned.
    returned: u64,
    /// A frame larger than the read buffer was written since the last rebuild.
    wrote_large: bool,
    /// A message to write, not yet handed to tungstenite.
    outgoing: Option<Message>,
    /// A message was handed to tungstenite and is not flushed yet.
    flushing: bool,
    /// Rebuilds so far (for the metric and tests of this module).
    rebuilds: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> LeanSocket<S> {
    /// A socket on an upgraded connection, with `config`'s buffers.
    pub async fn new(io: S, config: WebSocketConfig) -> Self {
        let tracked = Tracked { inner: io, frames: FrameCount::new(config.read_buffer_size) };
        let socket = WebSocketStream::from_raw_socket(tracked, Role::Server, Some(config)).await;
        Self {
            socket: Some(socket),
            config,
            returned: 0,
            wrote_large: false,
            outgoing: None,
            flushing: false,
            rebuilds: 0,
        }
    }

    fn socket(&mut self) -> &mut WebSocketStream<Tracked<S>> {
        self.socket.as_mut().expect("the socket is only absent inside `shrink`")
    }

    /// Starts writing `message`; [`LeanSocket::next_event`] carries the write on and reports it.
    /// Only one message is written at a time: call it when [`LeanSocket::is_writing`] is false.
    pub fn start_write(&mut self, message: Message) {
        debug_assert!(!self.is_writing(), "one write at a time");
        self.wrote_large |= message.len() > self.config.read_buffer_size;
        self.outgoing = Some(message);
    }

    /// A write started and not yet reported done.
    pub fn is_writing(&self) -> bool {
        self.outgoing.is_some() || self.flushing
    }

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let socket = self.socket.as_mut().expect("present outside `shrink`");
        if let Some(message) = self.outgoing.take() {
            match Pin::new(&mut *socket).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    Pin::new(&mut *socket).start_send(message)?;
                    self.flushing = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.outgoing = Some(message);
                    return Poll::Pending;
                }
            }
        }
        if !self.flushing {
            return Poll::Ready(Ok(()));
        }
        let flushed = ready!(Pin::new(socket).poll_flush(cx));
        self.flushing = false;
        Poll::Ready(flushed)
    }

    /// The next thing to happen on the socket: the write in progress (if any) completes, or the
    /// client's next message (pings and pongs included) arrives, whichever comes first; a client
    /// that reads nothing does not stop its frames from being read. Cancel-safe.
    pub async fn next_event(&mut self) -> SocketEvent {
        poll_fn(|cx| {
            if self.is_writing() {
                if let Poll::Ready(written) = self.poll_write(cx) {
                    return Poll::Ready(SocketEvent::Written(written));
                }
            }
            let socket = self.socket.as_mut().expect("present outside `shrink`");
            let next = ready!(Pin::new(socket).poll_next(cx));
            if let Some(Ok(_)) = &next {
                self.returned += 1;
            }
            Poll::Ready(SocketEvent::Received(next))
        })
        .await
    }

    /// Writes one message and flushes it (after the write in progress, if any).
    pub async fn send(&mut self, message: Message) -> Result<(), WsError> {
        poll_fn(|cx| self.poll_write(cx)).await?;
        self.start_write(message);
        poll_fn(|cx| self.poll_write(cx)).await
    }

    /// Closes the socket (a close frame, unless one went out already) and flushes.
    pub async fn close(&mut self) -> Result<(), WsError> {
        SinkExt::close(self.socket()).await
    }

    /// Gives the grown buffers back when there are any and tungstenite holds nothing unread and
    /// nothing unwritten; otherwise a later call does it. Call it after each message handled and
    /// each message written.
    pub async fn shrink_if_grown(&mut self) {
        let due = {
            let frames = &self.socket.as_ref().expect("present outside `shrink`").get_ref().frames;
            (frames.saw_large || self.wrote_large) && frames.drained(self.returned)
        };
        if !due {
            return;
        }
        let socket = self.socket();
        // A pong tungstenite queued, or a frame the connection did not take yet, must not be lost
        // with the old socket; if it cannot go out right now, the next call tries again.
        if !matches!(socket.flush().now_or_never(), Some(Ok(()))) {
            return;
        }
        let old = self.socket.take().expect("present outside `shrink`");
        let mut tracked = old.into_inner();
        tracked.frames.saw_large = false;
        self.socket = Some(WebSocketStream::from_raw_socket(tracked, Role::Server, Some(self.config)).await);
        self.wrote_large = false;
        self.rebuilds += 1;
        metrics::counter!("bazaar_ws_buffers_released_total").increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

    impl<S: AsyncRead + AsyncWrite + Unpin> LeanSocket<S> {
        /// The next message, for tests that write nothing meanwhile.
        async fn next(&mut self) -> Option<Result<Message, WsError>> {
            match self.next_event().await {
                SocketEvent::Received(next) => next,
                SocketEvent::Written(_) => panic!("no write was started"),
            }
        }
    }
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![(u8::from(fin) << 7) | opcode];
        let len = payload.len();
        if len < 126 {
            bytes.push(0x80 | len as u8);
        } else if len <= usize::from(u16::MAX) {
            bytes.push(0x80 | 126);
            bytes.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            bytes.push(0x80 | 127);
            bytes.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mask = [1, 2, 3, 4];
        bytes.extend_from_slice(&mask);
        bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        bytes
    }

    #[test]
    fn frames_are_followed_across_any_split_of_the_bytes() {
        let mut wire = frame(true, 1, b"hello");
        wire.extend(frame(false, 1, &[b'a'; 300]));
        wire.extend(frame(true, 9, b"ping"));
        wire.extend(frame(true, 0, &[b'b'; 70_000]));
        wire.extend(frame(true, 2, b""));
        for chunk in [1, 2, 3, 7, 13, 4096, wire.len()] {
            let mut frames = FrameCount::new(4096);
            for piece in wire.chunks(chunk) {
                frames.saw(piece);
            }
            // hello, the ping, the fragmented message (its last frame), the empty binary.
            assert_eq!(frames.items, 4, "chunks of {chunk}");
            assert!(frames.drained(4));
            assert!(!frames.drained(3), "one item not returned yet");
            assert!(frames.saw_large, "the 70,000-byte frame is larger than the buffer");
        }
        let mut frames = FrameCount::new(4096);
        let first = frame(true, 1, b"hello");
        frames.saw(&first[..first.len() - 1]);
        assert!(!frames.drained(0), "half a frame is not drained");
        frames.saw(&first[first.len() - 1..]);
        assert!(frames.drained(1));
        frames.saw(&frame(false, 1, b"first half"));
        assert!(!frames.drained(1), "a message whose last frame has not come");
        assert!(!frames.saw_large);
    }

    async fn pair(read_buffer: usize) -> (LeanSocket<DuplexStream>, WebSocketStream<DuplexStream>) {
        let (server, client) = duplex(1 << 20);
        let config = WebSocketConfig::default().read_buffer_size(read_buffer).write_buffer_size(0);
        let server = LeanSocket::new(server, config).await;
        let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        (server, client)
    }

    #[tokio::test]
    async fn a_large_frame_is_followed_by_a_rebuild_and_the_socket_still_works_both_ways() {
        let (mut server, mut client) = pair(1024).await;
        client.send(Message::text("x".repeat(200_000))).await.unwrap();
        client.send(Message::text("small after")).await.unwrap();
        let large = server.next().await.unwrap().unwrap();
        assert_eq!(large.len(), 200_000);
        drop(large);
        server.shrink_if_grown().await;
        // The small frame may already sit in tungstenite's buffer: then the rebuild waits for it.
        let small = server.next().await.unwrap().unwrap();
        assert_eq!(small.to_text().unwrap(), "small after");
        server.shrink_if_grown().await;
        assert_eq!(server.rebuilds, 1);
        server.send(Message::text("y".repeat(50_000))).await.unwrap();
        server.shrink_if_grown().await;
        assert_eq!(server.rebuilds, 2, "a large write is given back too");
        assert_eq!(client.next().await.unwrap().unwrap().len(), 50_000);
        client.send(Message::Ping(b"p".to_vec().into())).await.unwrap();
        client.send(Message::text("after the rebuilds")).await.unwrap();
        assert!(server.next().await.unwrap().unwrap().is_ping());
        assert_eq!(server.next().await.unwrap().unwrap().to_text().unwrap(), "after the rebuilds");
        assert!(client.next().await.unwrap().unwrap().is_pong(), "the ping was answered");
        server.shrink_if_grown().await;
        assert_eq!(server.rebuilds, 2, "small frames need no rebuild");
    }

    #[tokio::test]
    async fn frames_pipelined_behind_a_large_one_are_not_lost_to_the_rebuild() {
        let (server, mut client) = duplex(1 << 22);
        let config = WebSocketConfig::default().read_buffer_size(512).write_buffer_size(0);
        let mut server = LeanSocket::new(server, config).await;
        // Everything at once, so tungstenite reads past the large frame into the next ones.
        let mut wire = frame(true, 1, "z".repeat(5000).as_bytes());
        for n in 0..50 {
            wire.extend(frame(true, 1, format!("m{n}").as_bytes()));
        }
        client.write_all(&wire).await.unwrap();
        assert_eq!(server.next().await.unwrap().unwrap().len(), 5000);
        server.shrink_if_grown().await;
        for n in 0..50 {
            let message = server.next().await.unwrap().unwrap();
            assert_eq!(message.to_text().unwrap(), format!("m{n}"));
            server.shrink_if_grown().await;
        }
        assert_eq!(server.rebuilds, 1);
        server.send(Message::text("bye")).await.unwrap();
        let mut answer = [0u8; 5];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer[2..], b"bye");
    }
}
