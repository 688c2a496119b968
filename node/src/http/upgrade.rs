//! The WebSocket upgrade, owned here rather than by warp's `ws()` filter: warp 0.4 builds every
//! socket with tungstenite's default buffers (a 128 KiB read buffer, eagerly allocated and
//! zeroed, per connection) and offers no way to change them. The accept loop
//! ([`super::server`]) moves hyper's [`OnUpgrade`] into a [`PendingUpgrade`] that the `/ws` route
//! can read like any extension; [`handshake`] checks the request and computes the accept key;
//! [`accept`] answers 101 and, once hyper hands the connection over, serves it; the socket is
//! built on it with the [`socket_config`] of the node's settings.

use super::ApiError;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::debug;
use warp::http::{header, HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;

/// The connection under an accepted socket, as hyper gives it back.
pub type UpgradedIo = TokioIo<hyper::upgrade::Upgraded>;

/// Hyper's promise of the connection after a 101, put in the request's extensions by the accept
/// loop. Extensions that filters read must be `Clone`, and an [`OnUpgrade`] is not: this is a
/// shared slot that the first taker empties.
#[derive(Clone)]
pub struct PendingUpgrade(Arc<Mutex<Option<OnUpgrade>>>);

impl PendingUpgrade {
    /// Wraps hyper's promise.
    pub fn new(on_upgrade: OnUpgrade) -> Self {
        Self(Arc::new(Mutex::new(Some(on_upgrade))))
    }

    /// Takes the promise; `None` when it was taken already.
    fn take(&self) -> Option<OnUpgrade> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// How a socket's buffers are sized, from the settings.
#[derive(Debug, Clone, Copy)]
pub struct SocketBuffers {
    /// Bytes of the read buffer, and the most read from the connection at once.
    pub read_buffer: usize,
    /// The largest frame (and message) a client may send; past it the connection is dropped.
    pub hard_limit: usize,
}

/// The tungstenite configuration of a socket: a small read buffer, and no write buffer (each
/// frame is written out as it is sent, so nothing waits in one while the socket is idle).
pub fn socket_config(buffers: SocketBuffers) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(buffers.read_buffer)
        .write_buffer_size(0)
        .max_message_size(Some(buffers.hard_limit))
        .max_frame_size(Some(buffers.hard_limit))
}

/// Whether a comma-separated header holds `token` (case-insensitive), as `Connection: keep-alive,
/// Upgrade` does.
fn lists_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// Checks that a request asks for a WebSocket (RFC 6455 section 4.2.1) and returns the value
/// of its `Sec-WebSocket-Accept`; a 400 naming what is missing otherwise.
pub fn handshake(headers: &HeaderMap) -> Result<HeaderValue, ApiError> {
    if !lists_token(headers, header::CONNECTION, "upgrade") {
        return Err(ApiError::bad_request("not a WebSocket upgrade: the Connection header must include upgrade"));
    }
    if !lists_token(headers, header::UPGRADE, "websocket") {
        return Err(ApiError::bad_request("not a WebSocket upgrade: the Upgrade header must be websocket"));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) != Some(b"13") {
        return Err(ApiError::bad_request("Sec-WebSocket-Version: must be 13"));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(HeaderValue::as_bytes)
        .filter(|key| !key.is_empty())
        .ok_or_else(|| ApiError::bad_request("header sec-websocket-key is required"))?;
    HeaderValue::from_str(&derive_accept_key(key)).map_err(|_| ApiError::bad_request("Sec-WebSocket-Key: not valid"))
}

/// Takes hyper's promise of the connection; a 400 when there is none (an HTTP/1.0 request, which
/// hyper does not upgrade, or a second taker).
pub fn take_pending(pending: Option<&PendingUpgrade>) -> Result<OnUpgrade, ApiError> {
    pending
        .and_then(PendingUpgrade::take)
        .ok_or_else(|| ApiError::bad_request("this connection cannot be upgraded (HTTP/1.1 is required)"))
}

/// Answers 101 and, once hyper has switched the connection, runs `serve` on it in a task of its
/// own (`serve` builds the socket on it, with [`socket_config`]). `serve` is dropped unrun when
/// the upgrade never completes (the client went away after the request), so whatever it owns is
/// freed either way.
pub fn accept<F, Fut>(on_upgrade: OnUpgrade, accept_key: HeaderValue, serve: F) -> Response
where
    F: FnOnce(UpgradedIo) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => serve(TokioIo::new(upgraded)).await,
            Err(e) => debug!(reason = %e, "the upgrade did not complete"),
        }
    });
    let mut response = Response::default();
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept_key);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn the_accept_key_is_the_one_of_the_rfc_example() {
        let headers = request(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        assert_eq!(handshake(&headers).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn a_request_missing_any_part_of_the_handshake_is_a_bad_request_that_says_which() {
        let full = [
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        for (left_out, named) in [(0, "Connection"), (1, "Upgrade"), (2, "Version"), (3, "sec-websocket-key")] {
            let pairs: Vec<_> = full.iter().enumerate().filter(|(i, _)| *i != left_out).map(|(_, p)| *p).collect();
            let refused = handshake(&request(&pairs)).unwrap_err();
            assert_eq!(refused.code, bazaar_protocol::ErrorCode::BadRequest);
            assert!(refused.message.contains(named), "{}", refused.message);
        }
        let old = request(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "8"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        assert!(handshake(&old).is_err());
    }
}
