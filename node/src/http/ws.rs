//! `/ws`: the WebSocket upgrade and the socket's loop. [`super::upgrade`] answers the handshake
//! with the node's buffer sizes; then one task per socket does everything, in one select loop:
//! it reads frames (enforcing the frame-size and frame-rate limits, parsing them into the
//! session's mailbox), runs the [`Session`] on its mailbox, writes what the session queues, and
//! sends the session `Expired` when the token runs out. A writer task, a session actor and a
//! timer task of their own would each cost every idle socket more than the loop's state does.
//! [`LeanSocket`] gives the buffers back after a large frame.

use super::lean_socket::{LeanSocket, SocketEvent};
use super::server::ConnectionSlot;
use super::upgrade::{self, PendingUpgrade, SocketBuffers, UpgradedIo};
use super::{bearer, describe_json_error, render, ApiError};
use crate::app::App;
use crate::rate_limit::Bucket;
use crate::tokens::Caller;
use bazaar_actors::session::{
    close, error_frame, Outbound, ReplaySettings, Session, SessionArgs, SessionMsg, SessionRef,
};
use bazaar_protocol::chat::ClientFrame;
use bazaar_protocol::ErrorCode;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Utf8Bytes};
use tokio_tungstenite::tungstenite::Message;
use tracing::debug;
use warp::filters::BoxedFilter;
use warp::http::HeaderMap;
use warp::reply::Response;
use warp::Filter;

/// The routes of this resource.
pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let with_app = warp::any().map(move || app.clone());
    warp::path!("ws")
        .and(warp::get())
        .and(with_app)
        .and(warp::header::headers_cloned())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::ext::optional::<ConnectionSlot>())
        .and(warp::ext::optional::<PendingUpgrade>())
        .and_then(
            |app: Arc<App>,
             headers: HeaderMap,
             query: HashMap<String, String>,
             connection: Option<ConnectionSlot>,
             pending: Option<PendingUpgrade>| async move {
                render(open(app, &headers, &query, connection, pending.as_ref()))
            },
        )
        .boxed()
}

/// The buffer sizes and the hard frame limit of the node's sockets.
pub fn socket_buffers(settings: &crate::config::Settings) -> SocketBuffers {
    // Frames above the soft limit get an error frame; the hard limit protects the node from a
    // frame it would have to buffer whole (past it the connection is dropped).
    SocketBuffers {
        read_buffer: settings.ws_read_buffer_bytes,
        hard_limit: (settings.ws_max_frame_bytes * 16).max(1 << 20),
    }
}

fn open(
    app: Arc<App>,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    connection: Option<ConnectionSlot>,
    pending: Option<&PendingUpgrade>,
) -> Result<Response, ApiError> {
    let accept_key = upgrade::handshake(headers)?;
    let header = headers.get("authorization").and_then(|value| value.to_str().ok());
    let token = header.and_then(bearer).or_else(|| query.get("token").map(String::as_str));
    let who = token.and_then(|t| app.tokens.verify(t.trim())).ok_or_else(ApiError::unauthorized)?;
    let on_upgrade = upgrade::take_pending(pending)?;
    let Some(slot) = app.open_socket(&who.id) else {
        metrics::counter!("bazaar_rate_limited_total", "limit" => "ws_connections").increment(1);
        return Err(ApiError::new(ErrorCode::RateLimited, "too many open sockets for this user").with_retry_after(5));
    };
    let config = upgrade::socket_config(socket_buffers(&app.settings));
    // The closure owns both slots: they are dropped, and the places freed, when the socket ends
    // or when the upgrade never completes (the closure is then dropped unrun).
    Ok(upgrade::accept(on_upgrade, accept_key, move |io: UpgradedIo| async move {
        let _slot = slot;
        let _connection = connection;
        let socket = LeanSocket::new(io, config).await;
        serve(app, who, socket).await;
    }))
}

fn error_text(code: ErrorCode, message: impl Into<String>) -> Outbound {
    Outbound::Text(error_frame(code.as_str(), message))
}

/// A session handling one message, moved into the future for as long as it runs, and what it
/// decided (false: it is over).
type Busy = Pin<Box<dyn Future<Output = (Session, bool)> + Send>>;

async fn serve(app: Arc<App>, who: Caller, mut socket: LeanSocket<UpgradedIo>) {
    let settings = &app.settings;
    let (out, mut queued) = mpsc::channel::<Outbound>(settings.ws_send_queue);
    let (me, mut mailbox) = SessionRef::new();
    let args = SessionArgs {
        user: who.id.clone(),
        out: out.clone(),
        hub: Arc::new(app.socket_hub.clone()),
        rooms: app.regions.rooms.clone(),
        reads: app.reads.clone(),
        replay: ReplaySettings {
            page: settings.chat_replay_page,
            send_timeout: Duration::from_millis(settings.ws_replay_send_timeout_ms),
        },
    };
    let Ok(session) = Session::start(args, me.clone()) else {
        let _ = Box::pin(socket.send(close_message(1011, "unavailable"))).await;
        return;
    };
    // The session runs here, one message of its mailbox at a time (as an actor would): `idle`
    // while it waits, moved into `busy` while it handles one. Only the idle state is held inline;
    // the task keeps its future, sized for its largest state, for as long as the socket is open.
    let mut idle = Some(session);
    let mut busy: Option<Busy> = None;
    let expires_in = Duration::from_secs((who.expires_at - chrono::Utc::now().timestamp()).max(0) as u64);
    let expiry = tokio::time::sleep(expires_in);
    tokio::pin!(expiry);
    let mut expired = false;
    // A close frame is being written: the loop ends once it is out.
    let mut closing = false;
    let mut bucket = Bucket::new(settings.ws_burst, f64::from(settings.ws_messages_per_second));
    let max_frame = settings.ws_max_frame_bytes;
    // Client frames handed to the session and not yet taken from its mailbox.
    let mut waiting_frames: usize = 0;
    let max_waiting = settings.ws_send_queue.max(settings.ws_burst as usize);
    loop {
        let (is_busy, is_writing) = (busy.is_some(), socket.is_writing());
        tokio::select! {
            event = socket.next_event() => match event {
                SocketEvent::Received(incoming) => {
                    let Some(Ok(message)) = incoming else { break };
                    if message.is_close() {
                        break;
                    }
                    // Every frame counts, pings and pongs included: each costs the node a wake-up
                    // (and a ping an answer).
                    if bucket.take(Instant::now()).is_err() {
                        metrics::counter!("bazaar_rate_limited_total", "limit" => "ws_frames").increment(1);
                        let _ = out.try_send(Outbound::Close(close::FLOODING, "too many frames"));
                        break;
                    }
                    let handed_over = matches!(message, Message::Text(_));
                    if let Some(reply) = answer(&message, max_frame, &me) {
                        if out.try_send(reply).is_err() {
                            break;
                        }
                    } else if handed_over {
                        waiting_frames += 1;
                    }
                    // Frames wait in the mailbox while the session is busy (a long replay to a
                    // slow reader): as many as its send queue holds or a burst may bring
                    // (pipelined sends within the rate limit stay below that), not an unbounded
                    // heap of them.
                    if waiting_frames > max_waiting {
                        metrics::counter!("bazaar_rate_limited_total", "limit" => "ws_waiting_frames").increment(1);
                        let _ = out.try_send(Outbound::Close(close::FLOODING, "too many frames waiting"));
                        break;
                    }
                    drop(message);
                    Box::pin(socket.shrink_if_grown()).await;
                }
                SocketEvent::Written(written) => {
                    if written.is_err() || closing {
                        break;
                    }
                    Box::pin(socket.shrink_if_grown()).await;
                }
            },
            // A write in progress (a client that reads slowly, or nothing) holds the next ones
            // back; the session notices its queue filling up and ends.
            Some(next) = queued.recv(), if !is_writing => {
                let (message, last) = outbound_message(next);
                socket.start_write(message);
                closing |= last;
            }
            Some(msg) = mailbox.recv(), if !is_busy => {
                if matches!(msg, SessionMsg::Frame(_)) {
                    waiting_frames = waiting_frames.saturating_sub(1);
                }
                let mut session = idle.take().expect("a session waits whenever none is busy");
                busy = Some(Box::pin(async move {
                    let alive = session.handle(msg).await;
                    (session, alive)
                }));
            }
            (session, alive) = async { busy.as_mut().expect("polled only when busy").await }, if is_busy => {
                busy = None;
                if !alive {
                    break;
                }
                idle = Some(session);
            }
            () = &mut expiry, if !expired => {
                expired = true;
                // In the mailbox like any message: the session closes with 4401 after what came
                // before it.
                let _ = me.send_message(SessionMsg::Expired);
            }
        }
    }
    debug!(user = %who.id, "socket closed");
    // The session ends here (the hub forgets it), whether it was waiting or mid-message.
    drop((idle, busy));
    drop(out);
    // Let frames already queued (a close frame with its code, say) go out before the socket is
    // dropped, within a bound.
    let _ = tokio::time::timeout(Duration::from_secs(1), Box::pin(drain(&mut socket, &mut queued))).await;
}

/// Writes what is queued (up to a close frame), then closes the socket.
async fn drain(socket: &mut LeanSocket<UpgradedIo>, queued: &mut mpsc::Receiver<Outbound>) {
    while let Ok(next) = queued.try_recv() {
        let (message, last) = outbound_message(next);
        if socket.send(message).await.is_err() || last {
            break;
        }
    }
    let _ = socket.close().await;
}

fn close_message(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: Utf8Bytes::from_static(reason) }))
}

/// The frame to write for what the session queued, and whether it is the last one.
fn outbound_message(next: Outbound) -> (Message, bool) {
    match next {
        Outbound::Text(text) => (Message::text(text.as_ref()), false),
        Outbound::Close(code, reason) => (close_message(code, reason), true),
    }
}

/// Hands a client frame to the session, or returns the error frame it deserves.
fn answer(message: &Message, max_frame: usize, session: &SessionRef) -> Option<Outbound> {
    let size = match message {
        Message::Text(text) => text.len(),
        Message::Binary(bytes) => bytes.len(),
        Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => return None,
    };
    if size > max_frame {
        return Some(error_text(ErrorCode::PayloadTooLarge, format!("frames are limited to {max_frame} bytes")));
    }
    let Message::Text(text) = message else {
        return Some(error_text(ErrorCode::BadRequest, "frames are JSON text"));
    };
    let mut deserializer = serde_json::Deserializer::from_str(text.as_str());
    match serde_path_to_error::deserialize::<_, ClientFrame>(&mut deserializer) {
        Ok(frame) => {
            let _ = session.send_message(SessionMsg::Frame(Box::new(frame)));
            None
        }
        Err(e) => {
            let path = e.path().to_string();
            let reason = describe_json_error(&path, e.inner()).replacen("the body", "the frame", 1);
            Some(error_text(ErrorCode::BadRequest, format!("not a valid frame: {reason}")))
        }
    }
}
