//! The HTTP front end: one module per resource, each returning a warp filter; this module holds
//! what they share — the API error type, JSON bodies with a size limit, the bearer-token filter,
//! idempotency keys — and the one `recover` that turns every rejection into the API's JSON error.
//! [`server`] is the accept loop that serves them, with the connection limits and timeouts;
//! [`upgrade`] answers the WebSocket handshake that [`ws`] serves; [`console`] serves the web app
//! at `/`, which uses the same API from the browser. [`endpoints`] is the table of every route:
//! requests no row matches never reach the resources, and [`openapi`] writes `/openapi.json` (and
//! the `/docs` page that renders it) from the same rows.

pub mod access_log;
pub mod auth;
pub mod cart;
pub mod catalog;
pub mod chat;
pub mod checkout;
pub mod client_addr;
mod console;
pub mod cors;
pub mod endpoints;
mod lean_socket;
pub mod openapi;
pub mod operations;
pub mod orders;
pub mod payments;
pub mod server;
pub mod upgrade;
pub mod webhooks;
pub mod ws;

use crate::app::App;
use crate::tokens::Caller;
use bazaar_actors::region::CallError;
use bazaar_actors::store::StoreError;
use bazaar_protocol::error::ErrorBody;
use bazaar_protocol::values::{refuse_nul, Invalid};
use bazaar_protocol::ErrorCode;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use tracing::warn;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Buf, Filter, Rejection, Reply};

/// An error answer of the API: a code (which fixes the status) and a message for people.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
    /// The products the refusal concerns (a checkout's `out_of_stock`).
    pub products: Option<Vec<String>>,
}

impl warp::reject::Reject for ApiError {}

impl ApiError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after: None, products: None }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// 401 `unauthorized`, the same for every token problem.
    pub fn unauthorized() -> Self {
        Self::new(ErrorCode::Unauthorized, "missing, malformed, expired or forged token")
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// 404 `not_found` for a kind of thing.
    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    /// 503 `unavailable` with `Retry-After: 1`.
    pub fn unavailable() -> Self {
        Self { retry_after: Some(1), ..Self::new(ErrorCode::Unavailable, "temporarily unavailable, retry shortly") }
    }

    /// Sets `Retry-After` (at least one second).
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// The JSON response for this error.
    pub fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = ErrorBody::new(self.code, self.message);
        body.error.products = self.products;
        let mut response = warp::reply::with_status(warp::reply::json(&body), status).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert("retry-after", HeaderValue::from(seconds));
        }
        if matches!(self.code, ErrorCode::PayloadTooLarge | ErrorCode::UnsupportedMediaType | ErrorCode::RequestTimeout)
        {
            // The rest of the body was never read: the connection cannot carry another request
            // after it.
            response.headers_mut().insert("connection", HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        Self::new(ErrorCode::Invalid, invalid.to_string())
    }
}

impl From<CallError> for ApiError {
    fn from(error: CallError) -> Self {
        match error {
            CallError::TooLarge => {
                Self::new(ErrorCode::PayloadTooLarge, "the request is too large to route to the node that owns it")
            }
            CallError::Busy => Self::unavailable().with_retry_after(1),
            other => {
                warn!(reason = %other, "entity call failed");
                Self::unavailable()
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        warn!(reason = %error, "storage failed");
        Self::unavailable()
    }
}

/// A handler's outcome.
pub type ApiResult = Result<Response, ApiError>;

/// Renders a handler's outcome; errors become JSON responses here, not rejections, so a refused
/// request never falls through to other routes.
pub fn render(result: ApiResult) -> Result<Response, Rejection> {
    Ok(result.unwrap_or_else(ApiError::into_response))
}

/// A JSON body with a status.
pub fn json(status: StatusCode, body: &impl Serialize) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// Lets handlers write `answer?` for an entity reply that may fail twice (the call, the command).
pub fn settle<T, E: Into<ApiError>>(answer: Result<Result<T, E>, CallError>) -> Result<T, ApiError> {
    answer.map_err(ApiError::from)?.map_err(Into::into)
}

fn reject(error: ApiError) -> Rejection {
    warp::reject::custom(error)
}

/// Reads the body (at most `limit` bytes, whatever Content-Length claims, and within the
/// request's [`server::BodyDeadline`]) and parses it as `T`; the 400 names the field that was
/// missing or of the wrong type. A body that says it is not JSON is refused with 415 unread.
pub fn json_body<T: DeserializeOwned + Send + 'static>(limit: u64) -> BoxedFilter<(T,)> {
    header_value("content-type")
        .and(warp::ext::optional::<server::BodyDeadline>())
        .and(warp::body::stream())
        .and_then(move |content_type: Option<HeaderValue>, deadline: Option<server::BodyDeadline>, body| async move {
            if !is_json_media_type(content_type.as_ref()) {
                return Err(reject(ApiError::new(
                    ErrorCode::UnsupportedMediaType,
                    "the body must be JSON, sent with Content-Type: application/json",
                )));
            }
            read_limited(body, limit, deadline).await.and_then(|b| parse_json::<T>(&b)).map_err(reject)
        })
        .boxed()
}

/// Like [`json_body`], for a body that may be left out: no body (or an empty one) is `None`.
pub fn optional_json_body<T: DeserializeOwned + Send + 'static>(limit: u64) -> BoxedFilter<(Option<T>,)> {
    header_value("content-type")
        .and(warp::ext::optional::<server::BodyDeadline>())
        .and(warp::body::stream())
        .and_then(move |content_type: Option<HeaderValue>, deadline: Option<server::BodyDeadline>, body| async move {
            let bytes = read_limited(body, limit, deadline).await.map_err(reject)?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(None);
            }
            if !is_json_media_type(content_type.as_ref()) {
                return Err(reject(ApiError::new(
                    ErrorCode::UnsupportedMediaType,
                    "the body must be JSON, sent with Content-Type: application/json",
                )));
            }
            parse_json::<T>(&bytes).map(Some).map_err(reject)
        })
        .boxed()
}

/// The raw body, at most `limit` bytes (413 past it) and within the request's body deadline, for
/// a caller that parses it itself (a payment provider's notification).
pub fn raw_body(limit: u64) -> BoxedFilter<(Vec<u8>,)> {
    warp::ext::optional::<server::BodyDeadline>()
        .and(warp::body::stream())
        .and_then(move |deadline: Option<server::BodyDeadline>, body| async move {
            read_limited(body, limit, deadline).await.map_err(reject)
        })
        .boxed()
}

/// Whether a Content-Type announces JSON: `application/json` with any parameters, or an
/// `application/*+json` type. No Content-Type at all is taken as JSON: scripts and simple clients
/// often send none, and a browser's cross-site form always sends one (which is refused here).
fn is_json_media_type(content_type: Option<&HeaderValue>) -> bool {
    let Some(value) = content_type else { return true };
    let Ok(text) = value.to_str() else { return false };
    let essence = text.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A header's raw value, whatever bytes it holds: warp's typed header filters reject a value that
/// is not visible ASCII with a rejection that lets the request fall through to other routes (and
/// end as 405); handlers decide what such a value means.
fn header_value(name: &'static str) -> BoxedFilter<(Option<HeaderValue>,)> {
    warp::header::headers_cloned().map(move |headers: warp::http::HeaderMap| headers.get(name).cloned()).boxed()
}

async fn read_limited<S, B>(body: S, limit: u64, deadline: Option<server::BodyDeadline>) -> Result<Vec<u8>, ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut body = Box::pin(body);
    let mut bytes = Vec::new();
    loop {
        let next = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.at, body.next()).await.map_err(|_| {
                metrics::counter!("bazaar_http_body_timeouts_total").increment(1);
                ApiError::new(
                    ErrorCode::RequestTimeout,
                    format!("the request body did not arrive within {} ms", deadline.after.as_millis()),
                )
            })?,
            None => body.next().await,
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|_| ApiError::bad_request("the request body could not be read"))?;
        if bytes.len() + chunk.remaining() > limit as usize {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the request body is larger than {limit} bytes"),
            ));
        }
        bytes.extend_from_slice(chunk.chunk());
    }
    Ok(bytes)
}

/// Whether JSON text holds the escape `\u0000` (a raw NUL byte is not valid JSON anyway). Every
/// escape is skipped whole, so an escaped backslash followed by `u0000` is plain text.
fn holds_escaped_nul(bytes: &[u8]) -> bool {
    let mut i = 0;
    while let Some(offset) = bytes[i..].iter().position(|&b| b == b'\\') {
        let at = i + offset;
        if bytes.get(at + 1..at + 6) == Some(b"u0000".as_slice()) {
            return true;
        }
        i = at + 2;
        if i >= bytes.len() {
            return false;
        }
    }
    false
}

/// Parses JSON into `T`, naming the offending field in the error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request("a JSON body is required"));
    }
    if holds_escaped_nul(bytes) {
        // No stored value may hold U+0000 (PostgreSQL text cannot), ids and tokens included:
        // refused here once for every field of every body.
        return Err(ApiError::new(ErrorCode::Invalid, "a string holds U+0000 (NUL), which no field may contain"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, T>(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        ApiError::bad_request(describe_json_error(&path, e.inner()))
    })?;
    deserializer.end().map_err(|e| ApiError::bad_request(format!("malformed JSON: {}", without_position(&e))))?;
    Ok(value)
}

/// serde_json's message without its " at line L column C" suffix.
fn without_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// Says what a client should send instead, for a JSON body (or frame) that did not fit its type,
/// naming the field at `path` (`.` for the body itself) and never a Rust type: serde's
/// "invalid type: string, expected i64" becomes "price: must be a whole number".
pub fn describe_json_error(path: &str, error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let text = without_position(error);
    if matches!(error.classify(), Category::Syntax | Category::Eof | Category::Io) {
        return format!("malformed JSON: {text}");
    }
    let field = |name: &str| if path == "." { name.to_owned() } else { format!("{path}.{name}") };
    let subject = if path == "." { "the body".to_owned() } else { path.to_owned() };
    if let Some(name) = quoted_after(&text, "missing field ") {
        return format!("{}: is required", field(name));
    }
    if let Some(name) = quoted_after(&text, "unknown field ") {
        return format!("{}: is not a field of this body", field(name));
    }
    if let Some(name) = quoted_after(&text, "duplicate field ") {
        return format!("{}: appears more than once", field(name));
    }
    if let Some(rest) = text.strip_prefix("unknown variant ") {
        let allowed = rest.split_once("expected ").map(|(_, allowed)| allowed.trim_start_matches("one of "));
        return match allowed {
            Some(allowed) => format!("{subject}: must be one of {allowed}"),
            None => format!("{subject}: is not one of the documented values"),
        };
    }
    for prefix in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(rest) = text.strip_prefix(prefix) {
            if let Some((_, expected)) = rest.split_once(", expected ") {
                return format!("{subject}: must be {}", plain_expectation(expected));
            }
        }
    }
    // A message of our own (a domain type's parse), already written for people.
    if path == "." {
        text
    } else {
        format!("{path}: {text}")
    }
}

/// The text between backquotes right after `prefix` (serde writes names as `name`).
fn quoted_after<'t>(text: &'t str, prefix: &str) -> Option<&'t str> {
    let rest = text.strip_prefix(prefix)?.strip_prefix('`')?;
    rest.split_once('`').map(|(name, _)| name)
}

/// What serde's "expected ..." means in the API's words.
fn plain_expectation(expected: &str) -> String {
    let expected = expected.trim();
    let words = match expected {
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number, 0 or more",
        "f32" | "f64" => "a number",
        "a string" | "string" | "a borrowed string" | "a character" | "char" => "a string",
        "a boolean" | "bool" => "true or false",
        "unit" => "null",
        "a sequence" | "a tuple" => "a JSON array",
        "a map" => "a JSON object",
        _ if expected.starts_with("struct ")
            || expected.starts_with("internally tagged enum")
            || expected.starts_with("adjacently tagged enum")
            || expected.starts_with("a map") =>
        {
            "a JSON object"
        }
        _ if expected.starts_with("a sequence") || expected.starts_with("tuple") => "a JSON array",
        _ if expected.starts_with("enum ") || expected.contains("variant") => "one of the documented values",
        // A domain type's own expectation ("an RFC 3339 timestamp"), already in plain words.
        _ if expected.starts_with("a ") || expected.starts_with("an ") => return expected.to_owned(),
        _ => "a value of the documented type",
    };
    words.to_owned()
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let token = header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer "))?;
    Some(token.trim())
}

/// The authenticated caller, from `Authorization: Bearer <jwt>`; 401 otherwise.
pub fn caller(app: Arc<App>) -> BoxedFilter<(Caller,)> {
    header_value("authorization")
        .and_then(move |header: Option<HeaderValue>| {
            let app = app.clone();
            async move {
                let mut caller = header
                    .as_ref()
                    .and_then(|value| value.to_str().ok())
                    .and_then(bearer)
                    .and_then(|token| app.tokens.verify(token))
                    .ok_or_else(|| reject(ApiError::unauthorized()))?;
                let Some(slot) = app.user_slots.acquire(caller.id.as_str()) else {
                    metrics::counter!("bazaar_rate_limited_total", "limit" => "user_in_flight").increment(1);
                    return Err(reject(
                        ApiError::new(ErrorCode::RateLimited, "too many requests in flight for this user")
                            .with_retry_after(1),
                    ));
                };
                caller.slot = Some(Arc::new(slot));
                Ok(caller)
            }
        })
        .boxed()
}

/// The raw `Idempotency-Key` header, required: 1 to 200 visible ASCII characters, else 400.
pub fn idempotency_key() -> BoxedFilter<(String,)> {
    header_value("idempotency-key")
        .and_then(|key: Option<HeaderValue>| async move {
            let Some(key) = key else {
                return Err(reject(ApiError::bad_request("the Idempotency-Key header is required")));
            };
            checked_idempotency_key(&key).map_err(reject)
        })
        .boxed()
}

/// The raw `Idempotency-Key` header where it may be left out; when sent, checked as
/// [`idempotency_key`] checks it.
pub fn optional_idempotency_key() -> BoxedFilter<(Option<String>,)> {
    header_value("idempotency-key")
        .and_then(|key: Option<HeaderValue>| async move {
            key.map(|key| checked_idempotency_key(&key)).transpose().map_err(reject)
        })
        .boxed()
}

fn checked_idempotency_key(key: &HeaderValue) -> Result<String, ApiError> {
    match key.to_str() {
        Ok(key) if !key.trim().is_empty() && key.len() <= 200 => Ok(key.to_owned()),
        Ok(_) => Err(ApiError::bad_request("Idempotency-Key: must be 1 to 200 characters")),
        Err(_) => Err(ApiError::bad_request("Idempotency-Key: must be visible ASCII characters (a UUID, say)")),
    }
}

/// The query string as a map (empty when absent).
pub fn query() -> BoxedFilter<(HashMap<String, String>,)> {
    warp::query::<HashMap<String, String>>().boxed()
}

/// Reads `limit` from a query: default when absent, clamped to `max`; 400 when not a number.
pub fn limit_param(query: &HashMap<String, String>, default: u32, max: u32) -> Result<u32, ApiError> {
    match query.get("limit") {
        None => Ok(default),
        Some(raw) => {
            let n: i64 = raw.parse().map_err(|_| ApiError::bad_request("limit: must be a whole number"))?;
            Ok(n.clamp(1, i64::from(max)) as u32)
        }
    }
}

/// Reads a free-text query parameter (a cursor, an id to filter by): `None` when absent or empty,
/// 400 when it holds U+0000, which no stored value can hold (PostgreSQL text cannot).
pub fn text_param<'q>(query: &'q HashMap<String, String>, name: &'static str) -> Result<Option<&'q str>, ApiError> {
    match query.get(name).filter(|s| !s.is_empty()) {
        Some(raw) => {
            refuse_nul(name, raw)?;
            Ok(Some(raw.as_str()))
        }
        None => Ok(None),
    }
}

/// Which listener a set of routes is for (see `ops_http_addr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The API's listener (`http_addr`): every route, and `/metrics` and `/cluster` too unless
    /// they have a listener of their own.
    Api,
    /// The operations listener (`ops_http_addr`): the probes, `/metrics`, `/cluster`, `/info`.
    Operations,
}

/// Every route of `listener`, with the in-flight gate, CORS, the access log and one `recover`.
pub fn routes(app: Arc<App>, listener: Listener) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let in_flight = app.in_flight.clone();
    // A bounded number of requests at once: past it, 503 at the door instead of queues that grow
    // in unbounded actor mailboxes.
    let gate = warp::any().and_then(move || {
        let in_flight = in_flight.clone();
        async move {
            in_flight.try_acquire_owned().map_err(|_| {
                metrics::counter!("bazaar_rate_limited_total", "limit" => "node_in_flight").increment(1);
                reject(
                    ApiError::new(ErrorCode::Unavailable, "the node is at capacity, retry shortly").with_retry_after(1),
                )
            })
        }
    });
    let own_ops_listener = !app.settings.ops_http_addr.is_empty();
    let api: BoxedFilter<(Response,)> = match listener {
        // Not behind the API's gate: a node swamped with API requests still shows its metrics
        // (the reason to look at them) on a listener of their own.
        Listener::Operations => operations::routes(app.clone(), true),
        Listener::Api => gate
            .and(api_routes(app.clone(), !own_ops_listener))
            .map(|_permit: tokio::sync::OwnedSemaphorePermit, reply: Response| reply)
            .boxed(),
    };
    // The probes answer whatever the requests in flight are doing: an orchestrator that sees 503
    // from /healthz restarts a node that is merely busy.
    let origins = app.settings.cors_origins().unwrap_or_default();
    // Only the table's rows are served: a route missing from it (and so from /openapi.json) is
    // never reached.
    let served = endpoints::known().and(operations::probes(app).or(api).unify()).recover(recover).unify().boxed();
    let served = cors::wrap(served, &origins);
    // `start` never rejects; the second `recover` only gives the whole the type warp serves.
    access_log::start()
        .and(served)
        .map(access_log::finish)
        .recover(recover)
        .unify()
        .with(warp::log::custom(record_request))
}

/// The routes of the API's listener; `/metrics` and `/cluster` with `internal`.
fn api_routes(app: Arc<App>, internal: bool) -> BoxedFilter<(Response,)> {
    auth::routes(app.clone())
        .or(catalog::routes(app.clone()))
        .unify()
        .or(orders::routes(app.clone()))
        .unify()
        .or(cart::routes(app.clone()))
        .unify()
        .or(checkout::routes(app.clone()))
        .unify()
        .or(payments::routes(app.clone()))
        .unify()
        .or(chat::routes(app.clone()))
        .unify()
        .or(webhooks::routes(app.clone()))
        .unify()
        .or(ws::routes(app.clone()))
        .unify()
        .or(operations::routes(app.clone(), internal))
        .unify()
        .or(console::routes())
        .unify()
        .or(openapi::routes())
        .unify()
        .boxed()
}

/// Turns every rejection into the API's JSON error body.
async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let error = if let Some(api) = rejection.find::<ApiError>() {
        ApiError {
            code: api.code,
            message: api.message.clone(),
            retry_after: api.retry_after,
            products: api.products.clone(),
        }
    } else if rejection.is_not_found() {
        ApiError::new(ErrorCode::NotFound, "no such route")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed on this route")
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
    } else if let Some(header) = rejection.find::<warp::reject::InvalidHeader>() {
        ApiError::bad_request(format!("header {}: not valid", header.name()))
    } else if let Some(header) = rejection.find::<warp::reject::MissingHeader>() {
        ApiError::bad_request(format!("header {} is required", header.name()))
    } else if rejection.find::<warp::reject::InvalidQuery>().is_some() {
        ApiError::bad_request("the query string is malformed")
    } else if let Some(refused) = rejection.find::<warp::cors::CorsForbidden>() {
        ApiError::new(ErrorCode::Forbidden, format!("cross-origin request refused: {refused}"))
    } else if rejection.find::<warp::reject::UnsupportedMediaType>().is_some() {
        ApiError::new(ErrorCode::UnsupportedMediaType, "unsupported content type")
    } else {
        // Whatever else warp refuses with (a bad upgrade, a length error) is the client's doing.
        ApiError::bad_request("the request could not be handled")
    };
    Ok(error.into_response())
}

/// The route template of a path, so metrics have few labels (ids are replaced by `{id}`).
fn route_label(path: &str) -> String {
    let mut label = String::new();
    for (index, segment) in path.split('/').filter(|s| !s.is_empty()).enumerate() {
        let fixed = matches!(
            segment,
            "auth"
                | "signup"
                | "login"
                | "refresh"
                | "logout"
                | "me"
                | "user"
                | "products"
                | "orders"
                | "cart"
                | "items"
                | "cancel"
                | "events"
                | "payments"
                | "refund"
                | "webhooks"
                | "chat"
                | "rooms"
                | "messages"
                | "ws"
                | "healthz"
                | "readyz"
                | "metrics"
                | "cluster"
                | "info"
                | "console"
                | "docs"
                | "reference.js"
                | "openapi.json"
        );
        if index > 5 {
            return "other".into();
        }
        label.push('/');
        label.push_str(if fixed { segment } else { "{id}" });
    }
    if label.is_empty() {
        "/".into()
    } else {
        label
    }
}

fn record_request(info: warp::log::Info<'_>) {
    let route = route_label(info.path());
    let status = info.status().as_u16().to_string();
    let method = info.method().to_string();
    metrics::counter!("bazaar_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("bazaar_http_request_duration_seconds", "method" => method, "route" => route)
        .record(info.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_do_not_become_metric_labels() {
        assert_eq!(route_label("/orders/0193abc/cancel"), "/orders/{id}/cancel");
        assert_eq!(route_label("/chat/rooms/r1/messages"), "/chat/rooms/{id}/messages");
        assert_eq!(route_label("/"), "/");
    }

    #[test]
    fn an_escaped_nul_anywhere_in_a_body_is_found_and_an_escaped_backslash_is_not_one() {
        assert!(holds_escaped_nul(br#"{"token":"tok\u0000"}"#));
        assert!(holds_escaped_nul(br#"{"a":"\n\u0000"}"#));
        assert!(!holds_escaped_nul(br#"{"a":"\\u0000"}"#), "a backslash, then the text u0000");
        assert!(!holds_escaped_nul(br#"\u000"#), "a cut-off escape");
        assert!(!holds_escaped_nul(br#"{"a":"\u0001 \\"}"#));
        assert!(!holds_escaped_nul(b"\\"));
        let refused = parse_json::<serde_json::Value>(br#"{"productId":"\u0000"}"#).unwrap_err();
        assert_eq!(refused.code, ErrorCode::Invalid);
    }

    #[test]
    fn type_errors_say_what_to_send_in_the_api_words_and_name_no_rust_type() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Body {
            price: i64,
            stock: u32,
            name: String,
            tags: Vec<String>,
        }
        for (body, wanted) in [
            (r#"{"price":"x","stock":1,"name":"n","tags":[]}"#, "price: must be a whole number"),
            (r#"{"price":1,"stock":-1,"name":"n","tags":[]}"#, "stock: must be a whole number, 0 or more"),
            (r#"{"price":1.5,"stock":1,"name":"n","tags":[]}"#, "price: must be a whole number"),
            (r#"{"price":1,"stock":1,"name":7,"tags":[]}"#, "name: must be a string"),
            (r#"{"price":1,"stock":1,"name":"n","tags":"x"}"#, "tags: must be a JSON array"),
            (r#"{"stock":1,"name":"n","tags":[]}"#, "price: is required"),
            ("[]", "the body: must be a JSON object"),
            ("null", "the body: must be a JSON object"),
            (r#"{"price":1,"#, "malformed JSON: EOF while parsing a value"),
        ] {
            let refused = parse_json::<Body>(body.as_bytes()).unwrap_err();
            assert_eq!(refused.message, wanted, "for {body}");
        }
    }

    #[test]
    fn only_json_media_types_are_read_as_json() {
        let value = |text: &str| HeaderValue::from_str(text).unwrap();
        for json in ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/ld+json"] {
            assert!(is_json_media_type(Some(&value(json))), "{json}");
        }
        assert!(is_json_media_type(None), "no Content-Type is read as JSON");
        for other in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "json", ""]
        {
            assert!(!is_json_media_type(Some(&value(other))), "{other}");
        }
        let opaque = HeaderValue::from_bytes("application/jsón".as_bytes()).unwrap();
        assert!(!is_json_media_type(Some(&opaque)));
    }

    #[test]
    fn parse_errors_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        struct Body {
            #[allow(dead_code)]
            price: i64,
        }
        let wrong = parse_json::<Body>(br#"{"price":"x"}"#).unwrap_err();
        assert!(wrong.message.contains("price"), "{}", wrong.message);
        let missing = parse_json::<Body>(b"{}").unwrap_err();
        assert!(missing.message.contains("price"), "{}", missing.message);
        assert!(parse_json::<Body>(b"{\"price\":1} x").is_err());
    }
}
