//! Cross-origin requests from the origins `cors_allowed_origins` names (none by default; checked
//! by `Settings::cors_origins`), so a
//! front end served elsewhere can call the API. warp's CORS filter answers preflights and adds
//! the headers; it refuses any request whose `Origin` is not listed, so same-origin requests (a
//! browser sends `Origin` on a same-origin POST too, as from the node's own pages) and requests
//! without `Origin` (every non-browser client) bypass it.

use std::time::Duration;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, Method};
use warp::reply::Response;
use warp::{Filter, Reply};

/// How long a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// `served` with CORS for `origins`; `served` itself when there are none.
pub fn wrap(served: BoxedFilter<(Response,)>, origins: &[String]) -> BoxedFilter<(Response,)> {
    if origins.is_empty() {
        return served;
    }
    let cors = warp::cors()
        .allow_origins(origins.iter().map(String::as_str))
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::PUT, Method::DELETE])
        .allow_headers(["authorization", "content-type", "idempotency-key", "x-request-id"])
        .expose_headers(["x-request-id", "retry-after"])
        .max_age(PREFLIGHT_MAX_AGE);
    let not_cross_origin = warp::header::optional::<HeaderValue>("origin")
        .and(warp::header::optional::<HeaderValue>("host"))
        .and_then(|origin: Option<HeaderValue>, host: Option<HeaderValue>| async move {
            match origin {
                Some(origin) if !same_origin(&origin, host.as_ref()) => Err(warp::reject()),
                _ => Ok(()),
            }
        })
        .untuple_one();
    // A refused origin becomes the API's JSON 403 here, so it is logged and carries its id.
    not_cross_origin
        .and(served.clone())
        .or(served.with(cors).map(Reply::into_response))
        .unify()
        .recover(super::recover)
        .unify()
        .boxed()
}

/// Whether `origin` names the host the request was sent to (any scheme: TLS may end in front).
fn same_origin(origin: &HeaderValue, host: Option<&HeaderValue>) -> bool {
    let authority = origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, authority)| authority);
    match (authority, host.and_then(|h| h.to_str().ok())) {
        (Some(authority), Some(host)) => authority.eq_ignore_ascii_case(host),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_compares_the_host_the_request_was_sent_to() {
        let origin = HeaderValue::from_static("http://127.0.0.1:8080");
        assert!(same_origin(&origin, Some(&HeaderValue::from_static("127.0.0.1:8080"))));
        assert!(!same_origin(&origin, Some(&HeaderValue::from_static("127.0.0.1:8081"))));
        assert!(!same_origin(&origin, None));
    }
}
