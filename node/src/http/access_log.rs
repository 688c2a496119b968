//! One line per request (target `bazaar::access`, level info) and a request id on every answer.
//!
//! The id is the client's own `X-Request-Id` when it sent a short, printable one (so a gateway's
//! id follows the request through), otherwise a fresh UUID; either way it comes back as the
//! `X-Request-Id` header and is in the line. The line has the method, the path without its query
//! (a WebSocket's `?token=` never reaches a log), the status, the time taken and the client's
//! address. `BAZAAR_LOG=info,bazaar::access=off` turns the lines off.

use super::client_addr::client_addr;
use std::net::SocketAddr;
use std::time::Instant;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, Method};
use warp::path::FullPath;
use warp::reply::Response;
use warp::Filter;

/// The header that carries the id, both ways.
pub const HEADER: &str = "x-request-id";

/// The longest client-given id that is kept.
const MAX_GIVEN_LEN: usize = 128;

/// What is known of a request before it is served.
pub struct Started {
    at: Instant,
    method: Method,
    path: FullPath,
    id: HeaderValue,
    client: Option<SocketAddr>,
}

/// Reads what the line needs; never rejects.
pub fn start() -> BoxedFilter<(Started,)> {
    let given = warp::header::value(HEADER).map(Some).or(warp::any().map(|| None)).unify();
    warp::any()
        .map(Instant::now)
        .and(warp::method())
        .and(warp::path::full())
        .and(given)
        .and(client_addr())
        .map(|at, method, path, given: Option<HeaderValue>, client| Started {
            at,
            method,
            path,
            id: given.filter(acceptable).unwrap_or_else(fresh_id),
            client,
        })
        .boxed()
}

/// Puts the id on the answer and writes the line.
pub fn finish(started: Started, mut response: Response) -> Response {
    let status = response.status().as_u16();
    let id = started.id.to_str().unwrap_or_default();
    let client = started.client.map(|c| c.to_string()).unwrap_or_default();
    tracing::info!(
        target: "bazaar::access",
        request_id = id,
        method = %started.method,
        path = started.path.as_str(),
        status,
        millis = started.at.elapsed().as_secs_f64() * 1000.0,
        client = client.as_str(),
        "request"
    );
    response.headers_mut().insert(HEADER, started.id);
    response
}

/// A client's id is kept when it is short and printable ASCII, so a log line cannot be forged
/// with line breaks or flooded with a huge value.
fn acceptable(given: &HeaderValue) -> bool {
    let bytes = given.as_bytes();
    !bytes.is_empty() && bytes.len() <= MAX_GIVEN_LEN && bytes.iter().all(|b| b.is_ascii_graphic())
}

fn fresh_id() -> HeaderValue {
    HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("a UUID is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_printable_ids_are_taken_from_the_client() {
        assert!(acceptable(&HeaderValue::from_static("gw-7f3a.1")));
        assert!(!acceptable(&HeaderValue::from_static("")));
        assert!(!acceptable(&HeaderValue::from_static("two words")));
        assert!(!acceptable(&HeaderValue::from_str(&"x".repeat(MAX_GIVEN_LEN + 1)).unwrap()));
        assert!(acceptable(&fresh_id()));
    }
}
