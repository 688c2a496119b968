//! `GET /openapi.json` and `GET /docs`: the API described as an OpenAPI 3.1 document, and an
//! offline reference page that renders it. The operations are written from [`ENDPOINTS`], the
//! table whose rows are the only requests the router lets through; the schemas are utoipa's
//! derivations of the protocol types the handlers read and answer, so a field added to a body is
//! in the document without anyone writing it twice. Built once, on first request.

use super::endpoints::{Access, Answer, Endpoint, Idempotency, Input, Output, QueryType, Typed, Verb, ENDPOINTS};
use bazaar_protocol::chat::{ClientFrame, ServerFrame};
use bazaar_protocol::error::ErrorBody;
use bazaar_protocol::ErrorCode;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use utoipa::OpenApi;
use warp::filters::BoxedFilter;
use warp::http::HeaderValue;
use warp::reply::Response;
use warp::{Filter, Reply};

/// The document's frame and the schemas no operation names but the WebSocket's description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "bazaar",
        description = "The bazaar marketplace API: accounts, catalog, orders, payments and chat. Every error is \
                       `{\"error\": {\"code\", \"message\"}}` (the `ErrorBody` schema); each operation lists its \
                       statuses with the codes it gives. Any route answers 405 `method_not_allowed` for another \
                       method and 404 `not_found` for an unknown path; 500 `internal` carries no details. The \
                       contract in words is docs/API.md."
    ),
    components(schemas(ErrorBody, ErrorCode, ClientFrame, ServerFrame))
)]
struct Frame;

/// The document as served.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

fn build() -> Value {
    let mut document = serde_json::to_value(Frame::openapi()).unwrap_or_else(|_| json!({}));
    let mut schemas: Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::Schema>)> = Vec::new();
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for endpoint in ENDPOINTS {
        paths
            .entry(endpoint.path)
            .or_default()
            .insert(verb_name(endpoint.verb).to_owned(), operation(endpoint, &mut schemas));
    }
    let components = &mut document["components"];
    for (name, schema) in schemas {
        components["schemas"][name] = serde_json::to_value(schema).unwrap_or_else(|_| json!({}));
    }
    components["securitySchemes"] = json!({
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                   "description": "The `accessToken` of `POST /auth/login` or `POST /auth/refresh`."},
    });
    document["paths"] = serde_json::to_value(paths).unwrap_or_else(|_| json!({}));
    let mut tags: Vec<&str> = Vec::new();
    for endpoint in ENDPOINTS {
        if !tags.contains(&endpoint.tag) {
            tags.push(endpoint.tag);
        }
    }
    document["tags"] = tags.into_iter().map(|name| json!({"name": name})).collect();
    document
}

fn verb_name(verb: Verb) -> &'static str {
    match verb {
        Verb::Get => "get",
        Verb::Post => "post",
        Verb::Patch => "patch",
        Verb::Put => "put",
        Verb::Delete => "delete",
    }
}

/// `#/components/schemas/NAME` for a protocol type, whose schemas are added to `schemas`.
fn reference(typed: Typed, schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::Schema>)>) -> Value {
    (typed.collect)(schemas);
    json!({"$ref": format!("#/components/schemas/{}", (typed.name)())})
}

/// A stable id from the method and the path: `post_orders_id_cancel`.
fn operation_id(endpoint: &Endpoint) -> String {
    let mut id = verb_name(endpoint.verb).to_owned();
    for segment in endpoint.path.split(|c: char| !c.is_ascii_alphanumeric()).filter(|s| !s.is_empty()) {
        id.push('_');
        id.push_str(segment);
    }
    if endpoint.path == "/" {
        id.push_str("_root");
    }
    id
}

fn operation(
    endpoint: &Endpoint,
    schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::Schema>)>,
) -> Value {
    let mut op = json!({
        "operationId": operation_id(endpoint),
        "tags": [endpoint.tag],
        "summary": endpoint.summary,
    });
    if !endpoint.description.is_empty() {
        op["description"] = json!(endpoint.description);
    }
    let mut parameters: Vec<Value> = endpoint
        .path_parameters()
        .into_iter()
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "minLength": 1}}))
        .collect();
    for query in endpoint.query {
        let schema = match query.kind {
            QueryType::Text => json!({"type": "string"}),
            QueryType::Integer => json!({"type": "integer"}),
            QueryType::OneOf(values) => json!({"type": "string", "enum": values}),
        };
        parameters.push(json!({"name": query.name, "in": "query", "required": false, "description": query.description, "schema": schema}));
    }
    match endpoint.idempotency {
        Idempotency::Unused => {}
        Idempotency::Required | Idempotency::Optional => parameters.push(json!({
            "name": "Idempotency-Key",
            "in": "header",
            "required": endpoint.idempotency == Idempotency::Required,
            "description": "1 to 200 visible ASCII characters, scoped to the caller; the same key with another body is 409 `idempotency_mismatch`.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 200},
        })),
    }
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    match endpoint.access {
        Access::Anyone => {}
        Access::Bearer | Access::BearerOrQueryToken => op["security"] = json!([{"bearer": []}]),
    }
    match endpoint.input {
        Input::Nothing => {}
        Input::Json(typed) | Input::OptionalJson(typed) => {
            op["requestBody"] = json!({
                "required": matches!(endpoint.input, Input::Json(_)),
                "content": {"application/json": {"schema": reference(typed, schemas)}},
            });
        }
        Input::Raw(description) => {
            op["requestBody"] = json!({
                "required": true,
                "description": description,
                "content": {"application/json": {"schema": {"type": "object"}}},
            });
        }
    }
    let mut responses = Map::new();
    for answer in endpoint.answers {
        responses.insert(answer.status.to_string(), success(answer, schemas));
    }
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for code in endpoint.error_codes() {
        by_status.entry(code.status()).or_default().push(code);
    }
    for (status, codes) in by_status {
        responses.insert(status.to_string(), failure(status, &codes));
    }
    op["responses"] = Value::Object(responses);
    op
}

fn success(answer: &Answer, schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::Schema>)>) -> Value {
    let content = match answer.body {
        Output::Empty => return json!({"description": answer.description}),
        Output::Json(typed) => json!({"application/json": {"schema": reference(typed, schemas)}}),
        Output::Page(typed) => json!({"application/json": {"schema": {
            "type": "object",
            "required": ["items", "nextCursor"],
            "properties": {
                "items": {"type": "array", "items": reference(typed, schemas)},
                "nextCursor": {"type": ["string", "null"], "description": "The cursor of the next page; null on the last one."},
            },
        }}}),
        Output::Object => json!({"application/json": {"schema": {"type": "object"}}}),
        Output::Text(content_type) => json!({content_type: {"schema": {"type": "string"}}}),
    };
    json!({"description": answer.description, "content": content})
}

/// One error status: the `ErrorBody` schema, the codes in words and one example per code.
fn failure(status: u16, codes: &[ErrorCode]) -> Value {
    let names: Vec<String> = codes.iter().map(|code| format!("`{}`", code.as_str())).collect();
    let examples: Map<String, Value> = codes
        .iter()
        .map(|code| {
            let body = ErrorBody::new(*code, example_message(*code));
            (code.as_str().to_owned(), json!({"value": body}))
        })
        .collect();
    let mut response = json!({
        "description": format!("Error: {}", names.join(", ")),
        "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/ErrorBody"},
            "examples": examples,
        }},
    });
    if status == 429 || status == 503 {
        response["headers"] = json!({"Retry-After": {
            "description": "Seconds to wait before trying again.",
            "schema": {"type": "integer", "minimum": 1},
        }});
    }
    response
}

/// A message of the kind the code comes with, for the examples (the real ones name the field,
/// the order, the amount left).
fn example_message(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadRequest => "price: must be a whole number",
        ErrorCode::Unauthorized => "missing, malformed, expired or forged token",
        ErrorCode::Forbidden => "only sellers list products",
        ErrorCode::NotFound => "order not found",
        ErrorCode::MethodNotAllowed => "method not allowed on this route",
        ErrorCode::Conflict => "the product exists",
        ErrorCode::EmailTaken => "the e-mail address is already registered",
        ErrorCode::IdempotencyMismatch => "this Idempotency-Key was used with a different request",
        ErrorCode::OutOfStock => "not enough stock for this quantity",
        ErrorCode::OrderNotCancellable => "order 0193... is PAID",
        ErrorCode::OrderNotPayable => "order 0193... is CANCELLED",
        ErrorCode::PaymentNotRefundable => "payment 0193... is DECLINED",
        ErrorCode::RefundExceedsPayment => "only 4000 of the payment is left to refund",
        ErrorCode::CartFull => "the cart holds at most 50 products",
        ErrorCode::TooManyWebhooks => "a seller registers at most 10 webhook endpoints",
        ErrorCode::CartEmpty => "the cart is empty",
        ErrorCode::MixedCurrencies => "the cart's products are priced in more than one currency",
        ErrorCode::UrlNotAllowed => "url: 127.0.0.1 is a loopback address; deliveries may not go there",
        ErrorCode::PayloadTooLarge => "the request body is larger than 65536 bytes",
        ErrorCode::UnsupportedMediaType => "the body must be JSON, sent with Content-Type: application/json",
        ErrorCode::Invalid => "password: must be at least 8 characters",
        ErrorCode::RateLimited => "too many requests in flight for this user",
        ErrorCode::Unavailable => "temporarily unavailable, retry shortly",
        ErrorCode::Internal => "internal error",
        ErrorCode::RequestTimeout => "the request body did not arrive within 10000 ms",
    }
}

const PAGE: &str = include_str!("docs/index.html");
const SCRIPT: &str = include_str!("docs/reference.js");

/// `GET /openapi.json`, `GET /docs` and `GET /docs/reference.js`.
pub fn routes() -> BoxedFilter<(Response,)> {
    let spec = warp::path!("openapi.json").and(warp::get()).map(|| {
        let mut response = warp::reply::json(document()).into_response();
        response.headers_mut().insert("cache-control", HeaderValue::from_static("no-cache"));
        response
    });
    let page = warp::path!("docs").and(warp::get()).map(|| asset(PAGE, "text/html; charset=utf-8"));
    let script =
        warp::path!("docs" / "reference.js").and(warp::get()).map(|| asset(SCRIPT, "text/javascript; charset=utf-8"));
    spec.or(page).unify().or(script).unify().boxed()
}

/// Under the console's policy: the page and its script come from this origin only, and the only
/// request it makes is for `/openapi.json` on this origin.
fn asset(body: &'static str, content_type: &'static str) -> Response {
    super::console::embedded_file(body, content_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` in `value`, with where it was found.
    fn references<'v>(value: &'v Value, at: String, out: &mut Vec<(String, &'v str)>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    if key == "$ref" {
                        out.push((at.clone(), inner.as_str().unwrap_or_default()));
                    } else {
                        references(inner, format!("{at}/{key}"), out);
                    }
                }
            }
            Value::Array(items) => {
                for (i, inner) in items.iter().enumerate() {
                    references(inner, format!("{at}/{i}"), out);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
        }
    }

    #[test]
    fn every_reference_of_the_document_resolves() {
        let document = document();
        let mut found = Vec::new();
        references(document, String::new(), &mut found);
        assert!(found.len() > 20, "the document refers to its schemas: {found:?}");
        for (at, target) in found {
            let pointer = target.strip_prefix('#').unwrap_or_else(|| panic!("{at}: {target} is not local"));
            assert!(document.pointer(pointer).is_some(), "{at}: {target} does not resolve");
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_with_every_row_of_the_table() {
        let document = document();
        assert!(document["openapi"].as_str().unwrap().starts_with("3.1."), "{}", document["openapi"]);
        for endpoint in ENDPOINTS {
            let op = &document["paths"][endpoint.path][verb_name(endpoint.verb)];
            assert!(op.is_object(), "{:?} {} is missing", endpoint.verb, endpoint.path);
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .map(|all| all.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
            assert_eq!(declared, endpoint.path_parameters(), "{}", endpoint.path);
        }
    }

    #[test]
    fn operation_ids_are_unique() {
        let mut ids: Vec<String> = ENDPOINTS.iter().map(operation_id).collect();
        ids.sort();
        let count = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), count);
    }
}
