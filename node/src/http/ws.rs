//! `/ws`: the WebSocket upgrade and the socket's two halves. The reader enforces the frame-size
//! and frame-rate limits and parses frames for the session actor; the writer drains the session's
//! bounded queue into the socket.

use super::server::ConnectionSlot;
use super::{bearer, describe_json_error, render, ApiError};
use crate::app::App;
use crate::rate_limit::Bucket;
use crate::tokens::Caller;
use bazaar_actors::session::{close, error_frame, Outbound, ReplaySettings, Session, SessionArgs, SessionMsg};
use bazaar_protocol::chat::ClientFrame;
use bazaar_protocol::ErrorCode;
use futures_util::{SinkExt, StreamExt};
use ractor::Actor;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::debug;
use warp::filters::ws::{Message, WebSocket, Ws};
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Reply};

/// The routes of this resource.
pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let with_app = warp::any().map(move || app.clone());
    warp::path!("ws")
        .and(warp::get())
        .and(with_app)
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::ext::optional::<ConnectionSlot>())
        .and(warp::ws())
        .and_then(
            |app: Arc<App>,
             header: Option<String>,
             query: HashMap<String, String>,
             connection: Option<ConnectionSlot>,
             ws: Ws| async move { render(upgrade(app, header, query, connection, ws)) },
        )
        .boxed()
}

fn upgrade(
    app: Arc<App>,
    header: Option<String>,
    query: HashMap<String, String>,
    connection: Option<ConnectionSlot>,
    ws: Ws,
) -> Result<Response, ApiError> {
    let token = header.as_deref().and_then(bearer).or_else(|| query.get("token").map(String::as_str));
    let who = token.and_then(|t| app.tokens.verify(t.trim())).ok_or_else(ApiError::unauthorized)?;
    let Some(slot) = app.open_socket(&who.id) else {
        metrics::counter!("bazaar_rate_limited_total", "limit" => "ws_connections").increment(1);
        return Err(ApiError::new(ErrorCode::RateLimited, "too many open sockets for this user").with_retry_after(5));
    };
    // Frames above the soft limit get an error frame; the hard limit protects the node from a
    // frame it would have to buffer whole (past it the connection is dropped).
    let hard_limit = (app.settings.ws_max_frame_bytes * 16).max(1 << 20);
    Ok(ws
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        // The closure owns both slots: they are dropped, and the places freed, when the socket
        // ends or when the upgrade never completes (warp drops the closure unrun).
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            let _connection = connection;
            serve(app, who, socket).await;
        })
        .into_response())
}

fn error_text(code: ErrorCode, message: impl Into<String>) -> Outbound {
    Outbound::Text(error_frame(code.as_str(), message))
}

async fn serve(app: Arc<App>, who: Caller, socket: WebSocket) {
    let settings = &app.settings;
    let (mut sink, mut stream) = socket.split();
    let (out, mut queued) = mpsc::channel::<Outbound>(settings.ws_send_queue);
    let expires_in = Duration::from_secs((who.expires_at - chrono::Utc::now().timestamp()).max(0) as u64);
    let args = SessionArgs {
        user: who.id.clone(),
        out: out.clone(),
        expires_in,
        gateway: app.gateway.clone(),
        rooms: app.regions.rooms.clone(),
        store: app.store.clone(),
        replay: ReplaySettings {
            page: settings.chat_replay_page,
            send_timeout: Duration::from_millis(settings.ws_replay_send_timeout_ms),
        },
    };
    let Ok((session, session_done)) = Actor::spawn(None, Session, args).await else {
        let _ = sink.send(Message::close_with(1011u16, "unavailable")).await;
        return;
    };
    let mut writer = tokio::spawn(async move {
        while let Some(next) = queued.recv().await {
            match next {
                Outbound::Text(text) => {
                    if sink.send(Message::text(text.as_ref())).await.is_err() {
                        break;
                    }
                }
                Outbound::Close(code, reason) => {
                    let _ = sink.send(Message::close_with(code, reason)).await;
                    break;
                }
            }
        }
        let _ = sink.close().await;
    });
    let mut session_done = session_done;
    let mut writer_done = false;
    let mut bucket = Bucket::new(settings.ws_burst, f64::from(settings.ws_messages_per_second));
    let max_frame = settings.ws_max_frame_bytes;
    loop {
        tokio::select! {
            incoming = stream.next() => {
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
                if message.is_ping() || message.is_pong() {
                    continue;
                }
                let reply = if message.as_bytes().len() > max_frame {
                    Some(error_text(ErrorCode::PayloadTooLarge, format!("frames are limited to {max_frame} bytes")))
                } else if !message.is_text() {
                    Some(error_text(ErrorCode::BadRequest, "frames are JSON text"))
                } else {
                    let mut deserializer = serde_json::Deserializer::from_slice(message.as_bytes());
                    match serde_path_to_error::deserialize::<_, ClientFrame>(&mut deserializer) {
                        Ok(frame) => {
                            let _ = session.send_message(SessionMsg::Frame(frame));
                            None
                        }
                        Err(e) => {
                            let path = e.path().to_string();
                            let reason = describe_json_error(&path, e.inner()).replacen("the body", "the frame", 1);
                            Some(error_text(ErrorCode::BadRequest, format!("not a valid frame: {reason}")))
                        }
                    }
                };
                if let Some(reply) = reply {
                    if out.try_send(reply).is_err() {
                        break;
                    }
                }
            }
            _ = &mut writer => {
                // A finished JoinHandle must not be polled again (it panics).
                writer_done = true;
                break;
            }
            _ = &mut session_done => break,
        }
    }
    debug!(user = %who.id, "socket closed");
    session.stop(None);
    drop(out);
    if !writer_done {
        // Let a queued close frame go out before the socket is dropped.
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut writer).await;
        writer.abort();
    }
}
