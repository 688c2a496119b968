//! Every endpoint of the API in one table, [`ENDPOINTS`]: its method and path template, who may
//! call it, what it reads, what it answers and which error codes it can give. The table is the
//! one list of routes: [`known`] stands in front of the router and answers 404 (or 405) for any
//! request no row matches, so a route added to a resource's filter without its row is never
//! reached, and [`super::openapi`] writes `/openapi.json` from the same rows. The codes listed here
//! are the ones an endpoint gives itself; what follows from its kind (a bearer token, a JSON
//! body, the node's request gate) is added by [`Endpoint::error_codes`].

use super::ApiError;
use bazaar_protocol::auth::{LoginRequest, RefreshRequest, SignupRequest, TokenPair, UserView};
use bazaar_protocol::cart::{Cart, SetCartItemRequest};
use bazaar_protocol::catalog::{CreateProduct, PatchProduct, Product};
use bazaar_protocol::chat::{HistoryPage, OpenRoomRequest, Room};
use bazaar_protocol::checkout::Checkout;
use bazaar_protocol::orders::{Order, OrderTimeline, PlaceOrderRequest};
use bazaar_protocol::payments::{Payment, PaymentRequest, RefundRequest};
use bazaar_protocol::webhooks::{CreateWebhookRequest, WebhookDelivery, WebhookEndpoint};
use bazaar_protocol::ErrorCode;
use std::borrow::Cow;
use utoipa::openapi::{RefOr, Schema};
use utoipa::ToSchema;
use warp::filters::BoxedFilter;
use warp::http::Method;
use warp::Filter;
use ErrorCode::*;

/// The HTTP methods the API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
    Patch,
    Put,
    Delete,
}

impl Verb {
    /// The method as the router sees it.
    pub fn method(self) -> Method {
        match self {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
            Verb::Patch => Method::PATCH,
            Verb::Put => Method::PUT,
            Verb::Delete => Method::DELETE,
        }
    }
}

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed.
    Anyone,
    /// `Authorization: Bearer <access token>`; the rows name who, among the callers, is allowed.
    Bearer,
    /// A bearer token in the header or, for browsers, as `?token=` (the WebSocket upgrade).
    BearerOrQueryToken,
}

/// A protocol type whose schema the document carries, named by the type itself so the document
/// and the handler read the same definition.
#[derive(Clone, Copy)]
pub struct Typed {
    /// The schema's name in `components.schemas`.
    pub name: fn() -> Cow<'static, str>,
    /// Adds the schema and every schema it refers to.
    pub collect: fn(&mut Vec<(String, RefOr<Schema>)>),
}

/// The schema of `T`.
pub const fn typed<T: ToSchema>() -> Typed {
    Typed { name: T::name, collect: collect::<T> }
}

fn collect<T: ToSchema>(into: &mut Vec<(String, RefOr<Schema>)>) {
    into.push((T::name().into_owned(), T::schema()));
    T::schemas(into);
}

/// What an endpoint reads as its body.
#[derive(Clone, Copy)]
pub enum Input {
    /// Nothing.
    Nothing,
    /// A JSON body of this type, required.
    Json(Typed),
    /// A JSON body of this type that may be left out (no body, or an empty one).
    OptionalJson(Typed),
    /// Bytes the handler parses itself, described in words.
    Raw(&'static str),
}

/// What a successful answer carries.
#[derive(Clone, Copy)]
pub enum Output {
    /// No body.
    Empty,
    /// A JSON body of this type.
    Json(Typed),
    /// `{items: [T], nextCursor}`, one page of a listing.
    Page(Typed),
    /// A JSON object described in words (operations views built ad hoc).
    Object,
    /// A body of this content type that is not JSON.
    Text(&'static str),
}

/// One successful status of an endpoint.
#[derive(Clone, Copy)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// When it is given.
    pub description: &'static str,
    /// What it carries.
    pub body: Output,
}

/// The type of a query parameter.
#[derive(Debug, Clone, Copy)]
pub enum QueryType {
    /// Free text.
    Text,
    /// A whole number.
    Integer,
    /// One of these spellings.
    OneOf(&'static [&'static str]),
}

/// A query parameter an endpoint reads; all are optional.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    /// Its name.
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// What it holds.
    pub kind: QueryType,
}

/// Whether an endpoint reads `Idempotency-Key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// It does not.
    Unused,
    /// It must be sent (400 without).
    Required,
    /// It may be sent; the description says when it is needed.
    Optional,
}

/// One endpoint: a method on a path template, and what it does.
#[derive(Clone, Copy)]
pub struct Endpoint {
    /// The method.
    pub verb: Verb,
    /// The path template; `{name}` is one non-empty path segment.
    pub path: &'static str,
    /// The group it is listed under (the resource).
    pub tag: &'static str,
    /// One line.
    pub summary: &'static str,
    /// The rules, as docs/API.md states them.
    pub description: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Whether it is served before the node's in-flight request gate (the probes), so it never
    /// answers that gate's 503.
    pub ungated: bool,
    /// Its body.
    pub input: Input,
    /// Its query parameters.
    pub query: &'static [Query],
    /// Whether it reads `Idempotency-Key`.
    pub idempotency: Idempotency,
    /// Its successful answers.
    pub answers: &'static [Answer],
    /// The error codes it gives itself, besides those of its kind.
    pub errors: &'static [ErrorCode],
}

impl Endpoint {
    /// Every error code the endpoint can answer with: its own, then those its kind brings (a
    /// token's 401 and the per-user in-flight 429, a body's 400/408/413/415/422, the gate's 503).
    pub fn error_codes(&self) -> Vec<ErrorCode> {
        let mut codes = self.errors.to_vec();
        let mut add = |code: ErrorCode| {
            if !codes.contains(&code) {
                codes.push(code);
            }
        };
        match self.access {
            Access::Anyone => {}
            Access::Bearer | Access::BearerOrQueryToken => {
                add(ErrorCode::Unauthorized);
                add(ErrorCode::RateLimited);
            }
        }
        match self.input {
            Input::Nothing => {}
            Input::Json(_) | Input::OptionalJson(_) => {
                add(ErrorCode::BadRequest);
                add(ErrorCode::RequestTimeout);
                add(ErrorCode::PayloadTooLarge);
                add(ErrorCode::UnsupportedMediaType);
                // A string holding U+0000 is refused for every body (see `parse_json`).
                add(ErrorCode::Invalid);
            }
            Input::Raw(_) => {
                add(ErrorCode::BadRequest);
                add(ErrorCode::RequestTimeout);
                add(ErrorCode::PayloadTooLarge);
            }
        }
        match self.idempotency {
            Idempotency::Unused => {}
            Idempotency::Required | Idempotency::Optional => add(ErrorCode::BadRequest),
        }
        if !self.ungated {
            add(ErrorCode::Unavailable);
        }
        codes
    }

    /// The names of the template's `{name}` segments, in order.
    pub fn path_parameters(&self) -> Vec<&'static str> {
        self.path.split('/').filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}')).collect()
    }

    /// Whether `path` (as the request sent it) fits the template, the way warp's `path!` matches
    /// it: one trailing slash is allowed, a `{name}` segment is any non-empty segment.
    pub fn fits(&self, path: &str) -> bool {
        self.fits_segments(&segments(path))
    }

    fn fits_segments(&self, given: &[&str]) -> bool {
        let wanted = segments(self.path);
        wanted.len() == given.len()
            && wanted.iter().zip(given).all(|(want, got)| match want.strip_prefix('{') {
                Some(_) => !got.is_empty(),
                None => want == got,
            })
    }
}

/// A path's segments after its leading slash, one trailing slash dropped (`/` has none).
fn segments(path: &str) -> Vec<&str> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() && !path.ends_with("//") {
        Vec::new()
    } else {
        rest.split('/').collect()
    }
}

/// What the table says of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A row matches the method and the path.
    Served,
    /// Rows match the path, none the method.
    OtherMethod,
    /// No row matches the path.
    Unknown,
}

/// Looks a request up in the table.
pub fn lookup(method: &Method, path: &str) -> Lookup {
    let given = segments(path);
    let mut found = Lookup::Unknown;
    for endpoint in ENDPOINTS.iter().filter(|endpoint| endpoint.fits_segments(&given)) {
        if endpoint.verb.method() == method {
            return Lookup::Served;
        }
        found = Lookup::OtherMethod;
    }
    found
}

/// Lets through only the requests a row of the table matches: 404 for an unknown path, 405 for a
/// known path with another method (as warp itself answers them).
pub fn known() -> BoxedFilter<()> {
    warp::method()
        .and(warp::path::full())
        .and_then(|method: Method, path: warp::path::FullPath| async move {
            match lookup(&method, path.as_str()) {
                Lookup::Served => Ok(()),
                Lookup::OtherMethod => Err(warp::reject::custom(ApiError::new(
                    ErrorCode::MethodNotAllowed,
                    "method not allowed on this route",
                ))),
                Lookup::Unknown => Err(warp::reject::not_found()),
            }
        })
        .untuple_one()
        .boxed()
}

/// What `GET /ws` does, for the document: OpenAPI has no words for frames, so they are told here
/// and their schemas (`ClientFrame`, `ServerFrame`) are in the components.
pub const WS_DESCRIPTION: &str = "Upgrades to a WebSocket. The access token goes in `Authorization: Bearer ...` or, \
     for browsers, as `?token=`; an upgrade without a valid token is refused with 401 before the handshake. Text \
     frames carry one JSON object each. Client to server (`ClientFrame`): `join` {room, since?} (replays the \
     messages after `since`, then streams new ones), `send` {room, text, clientMsgId} (text 1..4000 characters; a \
     resent clientMsgId is acked again with the original seq), `leave` {room}, `typing` {room}, `read` {room, seq}. \
     Server to client (`ServerFrame`): `joined` {room, lastSeq}, `message` {room, seq, id, from, text, sentAt}, \
     `ack` {clientMsgId, seq}, `typing` {room, from}, `read` {room, from, seq}, `presence` {room, online}, `order` \
     {order}, `error` {code, message}. A bad frame gets an `error` frame and the socket stays open; a non-member \
     join, an expired token or flooding closes it (close codes 4403, 4401, 4429). Past \
     `ws_max_connections_per_user` sockets, one more upgrade is 429 `rate_limited`.";

const LIMIT: Query =
    Query { name: "limit", description: "Items per page: 20 by default, at most 100.", kind: QueryType::Integer };
const CURSOR: Query =
    Query { name: "cursor", description: "The `nextCursor` of the page before.", kind: QueryType::Text };

/// Every endpoint of the API, grouped by resource as docs/API.md lists them.
pub const ENDPOINTS: &[Endpoint] = &[
    // Auth
    Endpoint {
        verb: Verb::Post,
        path: "/auth/signup",
        tag: "auth",
        summary: "Creates an account",
        description: "Passwords have at least 8 characters; e-mails are trimmed, lower-cased and validated. \
                      503 `unavailable` (with `Retry-After: 1`) when the node's password hashing is full or its \
                      per-second limit is reached; 429 `rate_limited` when one client address sends too many.",
        access: Access::Anyone,
        ungated: false,
        input: Input::Json(typed::<SignupRequest>()),
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 201, description: "The account", body: Output::Json(typed::<UserView>()) }],
        errors: &[EmailTaken, Invalid, RateLimited, Unavailable],
    },
    Endpoint {
        verb: Verb::Post,
        path: "/auth/login",
        tag: "auth",
        summary: "Logs in",
        description: "`expiresIn` is the seconds until the access token expires. Bad credentials are 401 with the \
                      same code and message for an unknown e-mail and a wrong password.",
        access: Access::Anyone,
        ungated: false,
        input: Input::Json(typed::<LoginRequest>()),
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "A token pair", body: Output::Json(typed::<TokenPair>()) }],
        errors: &[Unauthorized, RateLimited, Unavailable],
    },
    Endpoint {
        verb: Verb::Post,
        path: "/auth/refresh",
        tag: "auth",
        summary: "Trades a refresh token for a new pair",
        description: "The old refresh token is spent. Presenting a spent refresh token again revokes that whole \
                      token family (401).",
        access: Access::Anyone,
        ungated: false,
        input: Input::Json(typed::<RefreshRequest>()),
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "A new token pair", body: Output::Json(typed::<TokenPair>()) }],
        errors: &[Unauthorized],
    },
    Endpoint {
        verb: Verb::Post,
        path: "/auth/logout",
        tag: "auth",
        summary: "Ends a session",
        description: "The refresh token's family is revoked, and the session's access tokens with it.",
        access: Access::Bearer,
        ungated: false,
        input: Input::Json(typed::<RefreshRequest>()),
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 204, description: "Logged out", body: Output::Empty }],
        errors: &[],
    },
    Endpoint {
        verb: Verb::Get,
        path: "/auth/me",
        tag: "auth",
        summary: "The caller's profile",
        description: "",
        access: Access::Bearer,
        ungated: false,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "The profile", body: Output::Json(typed::<UserView>()) }],
        errors: &[],
    },
    Endpoint {
        verb: Verb::Get,
        path: "/auth/user/{userId}",
        tag: "auth",
        summary: "A user's profile",
        description: "Anyone authenticated may read a SELLER's profile. A BUYER's profile may be read only by that \
                      buyer, and by a SELLER from whom that buyer has at least one order that reached PAID; 403 \
                      otherwise.",
        access: Access::Bearer,
        ungated: false,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "The profile", body: Output::Json(typed::<UserView>()) }],
        errors: &[Forbidden, NotFound],
    },
    // Catalog
    Endpoint {
        verb: Verb::Post,
        path: "/products",
        tag: "catalog",
        summary: "Lists a product (sellers)",
        description: "Only SELLERs list products (403 otherwise).",
        access: Access::Bearer,
        ungated: false,
        input: Input::Json(typed::<CreateProduct>()),
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 201, description: "The product", body: Output::Json(typed::<Product>()) }],
        errors: &[Forbidden, Invalid],
    },
    Endpoint {
        verb: Verb::Get,
        path: "/products",
        tag: "catalog",
        summary: "The catalog, in pages",
        description: "",
        access: Access::Anyone,
        ungated: false,
        input: Input::Nothing,
        query: &[
            Query { name: "sellerId", description: "Only this seller's products.", kind: QueryType::Text },
            LIMIT,
            CURSOR,
        ],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "One page", body: Output::Page(typed::<Product>()) }],
        errors: &[BadRequest, Invalid],
    },
    Endpoint {
        verb: Verb::Get,
        path: "/products/{id}",
        tag: "catalog",
        summary: "A product",
        description: "`stock` is what can still be ordered (units held by open orders are not in it).",
        access: Access::Anyone,
        ungated: false,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "The product", body: Output::Json(typed::<Product>()) }],
        errors: &[NotFound],
    },
    Endpoint {
        verb: Verb::Patch,
        path: "/products/{id}",
        tag: "catalog",
        summary: "Changes a product (its seller)",
        description: "422 if the stock, with the units open orders hold, would pass 10^9.",
        access: Access::Bearer,
        ungated: false,
        input: Input::Json(typed::<PatchProduct>()),
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "The product", body: Output::Json(typed::<Product>()) }],
        errors: &[Forbidden, NotFound, Invalid],
    },
    // Orders
    Endpoint {
        verb: Verb::Post,
        path: "/orders",
        tag: "orders",
        summary: "Places an order (buyers)",
        description: "The stock is reserved. Same key and same body again: the same order (200 or 201, same id). \
                      Same key and another body: 409 `idempotency_mismatch`. Not enough stock: 409 `out_of_stock`.",
        access: Access::Bearer,
        ungated: false,
        input: Input::Json(typed::<PlaceOrderRequest>()),
        query: &[],
        idempotency: Idempotency::Required,
        answers: &[
            Answer { status: 201, description: "Placed, status ORDERED", body: Output::Json(typed::<Order>()) },
            Answer {
                status: 200,
                description: "A retry: the order placed before",
                body: Output::Json(typed::<Order>()),
            },
        ],
        errors: &[Forbidden, NotFound, OutOfStock, IdempotencyMismatch, Invalid],
    },
    Endpoint {
        verb: Verb::Get,
        path: "/orders/{id}",
        tag: "orders",
        summary: "An order (its buyer or its seller)",
        description: "404 for anyone else: existence is not revealed.",
        access: Access::Bearer,
        ungated: false,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "The order", body: Output::Json(typed::<Order>()) }],
        errors: &[NotFound],
    },
    Endpoint {
        verb: Verb::Get,
        path: "/orders/{id}/events",
        tag: "orders",
        summary: "An order's timeline (its buyer or its seller)",
        description: "Every change of the order and of its payment, oldest first: when, by whom (BUYER, SELLER or \
                      SYSTEM), why, the status after it. At most `order_timeline_max_events` (500) changes; \
                      `truncated` says more were left out. 404 for anyone else.",
        access: Access::Bearer,
        ungated: false,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "The timeline", body: Output::Json(typed::<OrderTimeline>()) }],
        errors: &[NotFound],
    },
    Endpoint {
        verb: Verb::Get,
        path: "/orders",
        tag: "orders",
        summary: "The caller's own orders, in pages",
        description: "",
        access: Access::Bearer,
        ungated: false,
        input: Input::Nothing,
        query: &[
            Query {
                name: "role",
                description: "As buyer or as seller; the caller's role by default.",
                kind: QueryType::OneOf(&["buyer", "seller"]),
            },
            Query {
                name: "status",
                description: "Only orders in this status.",
                kind: QueryType::OneOf(&["ORDERED", "PAYMENT_PENDING", "PAID", "REFUNDED", "CANCELLED"]),
            },
            LIMIT,
            CURSOR,
        ],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "One page", body: Output::Page(typed::<Order>()) }],
        errors: &[BadRequest, Invalid],
    },
    Endpoint {
        verb: Verb::Post,
        path: "/orders/{id}/cancel",
        tag: "orders",
        summary: "Cancels an ORDERED order (its buyer or its seller)",
        description: "The stock is released once; 409 `order_not_cancellable` in any other status.",
        access: Access::Bearer,
        ungated: false,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "Status CANCELLED", body: Output::Json(typed::<Order>()) }],
        errors: &[NotFound, OrderNotCancellable],
    },
    // Cart
    Endpoint {
        verb: Verb::Get,
        path: "/cart",
        tag: "cart",
        summary: "The caller's cart, priced as of now (buyers)",
        description: "Each line shows the product's price and stock now, and whether the stock covers the \
                      quantity; `totals` sums the lines per currency. A cart reserves nothing.",
        access: Access::Bearer,
        ungated: false,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "The cart", body: Output::Json(typed::<Cart>()) }],
        errors: &[Forbidden],
    },
    Endpoint {
        verb: Verb::Put,
        path: "/cart/items/{productId}",
        tag: "cart",
        summary: "Sets how many units of a product the cart holds (buyers)",
        description: "Adds the line, or replaces its quantity. A product that does not exist: 404. A new product \
                      past `cart_max_items` (50): 409 `cart_full`. Sending the same body again changes nothing.",
        access: Access::Bearer,
        ungated: false,
        input: Input::Json(typed::<SetCartItemRequest>()),
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "The cart after it", body: Output::Json(typed::<Cart>()) }],
        errors: &[Forbidden, NotFound, CartFull, Invalid],
    },
    Endpoint {
        verb: Verb::Delete,
        path: "/cart/items/{productId}",
        tag: "cart",
        summary: "Takes a product out of the cart (buyers)",
        description: "A product the cart does not hold changes nothing: the same 200.",
        access: Access::Bearer,
        ungated: false,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "The cart after it", body: Output::Json(typed::<Cart>()) }],
        errors: &[Forbidden],
    },
    // Checkout
    Endpoint {
        verb: Verb::Post,
        path: "/checkout",
        tag: "checkout",
        summary: "Checks out the cart: one order per seller, every line reserved or none (buyers)",
        description: "Each line is reserved at its product at today's price (`lines[].unitPrice`); the orders \
                      (status ORDERED, with the reservation hold's `expiresAt`) are made only once every line is, \
                      and the checked-out products leave the cart. A line short of stock, or a product gone: 409 \
                      `out_of_stock` with `error.products` naming them, and nothing is held. No body. The same key \
                      again: the same checkout (200), whatever the cart holds now. An empty cart: 422 `cart_empty`; \
                      products in more than one currency: 422 `mixed_currencies`. Not done within \
                      `checkout_timeout_ms` (30 s): 503, and a retry with the same key carries on.",
        access: Access::Bearer,
        ungated: false,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Required,
        answers: &[
            Answer { status: 201, description: "Checked out, status OPEN", body: Output::Json(typed::<Checkout>()) },
            Answer {
                status: 200,
                description: "A retry: the checkout made before",
                body: Output::Json(typed::<Checkout>()),
            },
        ],
        errors: &[Forbidden, OutOfStock, IdempotencyMismatch, CartEmpty, MixedCurrencies, Conflict, Invalid],
    },
    Endpoint {
        verb: Verb::Get,
        path: "/checkouts/{id}",
        tag: "checkout",
        summary: "A checkout of the caller's, with its orders as they are now",
        description: "Another buyer's checkout, or none: 404.",
        access: Access::Bearer,
        ungated: false,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "The checkout", body: Output::Json(typed::<Checkout>()) }],
        errors: &[NotFound],
    },
    // Webhooks
    Endpoint {
        verb: Verb::Post,
        path: "/webhooks",
        tag: "webhooks",
        summary: "Registers a webhook endpoint (sellers)",
        description: "Events of the seller's products, orders and payments decided from now on are posted to `url`, \
                      signed with the secret in this answer (shown only here and on rotation): `Bazaar-Signature: \
                      t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">`. Unanswered deliveries are retried \
                      with backoff for `webhook_retry_for_secs` (3 days). A host that is or resolves to a loopback, \
                      private or link-local address: 422 `url_not_allowed`; past `webhook_max_endpoints` (10): 409 \
                      `too_many_webhooks`.",
        access: Access::Bearer,
        ungated: false,
        input: Input::Json(typed::<CreateWebhookRequest>()),
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer {
            status: 201,
            description: "The endpoint, with its secret",
            body: Output::Json(typed::<WebhookEndpoint>()),
        }],
        errors: &[Forbidden, TooManyWebhooks, UrlNotAllowed, Invalid],
    },
    Endpoint {
        verb: Verb::Get,
        path: "/webhooks",
        tag: "webhooks",
        summary: "The caller's webhook endpoints (sellers)",
        description: "Oldest first, without their secrets; one page holds them all.",
        access: Access::Bearer,
        ungated: false,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer {
            status: 200,
            description: "Every endpoint",
            body: Output::Page(typed::<WebhookEndpoint>()),
        }],
        errors: &[Forbidden],
    },
    Endpoint {
        verb: Verb::Delete,
        path: "/webhooks/{id}",
        tag: "webhooks",
        summary: "Deletes a webhook endpoint (its seller)",
        description: "Nothing more is sent to it: its pending deliveries end FAILED, unsent.",
        access: Access::Bearer,
        ungated: false,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 204, description: "Deleted", body: Output::Empty }],
        errors: &[Forbidden, NotFound],
    },
    Endpoint {
        verb: Verb::Post,
        path: "/webhooks/{id}/rotate-secret",
        tag: "webhooks",
        summary: "Gives a webhook endpoint a new signing secret (its seller)",
        description: "The new secret is in this answer only. The old one keeps signing, as a second `v1`, for \
                      `webhook_secret_overlap_secs` (24 hours), so the receiver can switch without losing a delivery.",
        access: Access::Bearer,
        ungated: false,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer {
            status: 200,
            description: "The endpoint, with its new secret",
            body: Output::Json(typed::<WebhookEndpoint>()),
        }],
        errors: &[Forbidden, NotFound],
    },
    Endpoint {
        verb: Verb::Get,
        path: "/webhooks/{id}/deliveries",
        tag: "webhooks",
        summary: "The deliveries to a webhook endpoint, each with its attempts (its seller)",
        description: "Newest first. Each shows its status (PENDING, DELIVERED, FAILED), when the next try is due, and \
                      its last 25 attempts with the receiver's status, the error and the time taken.",
        access: Access::Bearer,
        ungated: false,
        input: Input::Nothing,
        query: &[LIMIT, CURSOR],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "One page", body: Output::Page(typed::<WebhookDelivery>()) }],
        errors: &[Forbidden, NotFound, BadRequest],
    },
    Endpoint {
        verb: Verb::Post,
        path: "/webhooks/{id}/deliveries/{deliveryId}/resend",
        tag: "webhooks",
        summary: "Sends a delivery again (its seller)",
        description: "Whatever its status: it is due at once, with the same event id and delivery id.",
        access: Access::Bearer,
        ungated: false,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 202, description: "Due now", body: Output::Empty }],
        errors: &[Forbidden, NotFound],
    },
    // Payments
    Endpoint {
        verb: Verb::Post,
        path: "/payments",
        tag: "payments",
        summary: "Pays an order, or every order of a checkout with one charge (its buyer)",
        description: "`{orderId, method}` pays one order; `{checkoutId, method}` pays every order of the checkout \
                      still ORDERED with one payment, one share per order. 202 while the gateway decides (or 200 \
                      with the final state if already decided). Nothing left to pay (an order not ORDERED, a \
                      checkout paid before): 409 `order_not_payable`; neither or both ids: 400; the same key \
                      with another body: 409 `idempotency_mismatch`.",
        access: Access::Bearer,
        ungated: false,
        input: Input::Json(typed::<PaymentRequest>()),
        query: &[],
        idempotency: Idempotency::Required,
        answers: &[
            Answer { status: 202, description: "Status REQUESTED", body: Output::Json(typed::<Payment>()) },
            Answer { status: 200, description: "Already decided", body: Output::Json(typed::<Payment>()) },
        ],
        errors: &[Forbidden, NotFound, OrderNotPayable, IdempotencyMismatch, Invalid],
    },
    Endpoint {
        verb: Verb::Get,
        path: "/payments/{id}",
        tag: "payments",
        summary: "A payment (its buyer, or the seller of an order it pays)",
        description: "A seller sees only the shares of their own orders; 404 for anyone else.",
        access: Access::Bearer,
        ungated: false,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "The payment", body: Output::Json(typed::<Payment>()) }],
        errors: &[NotFound],
    },
    Endpoint {
        verb: Verb::Post,
        path: "/payments/{id}/refund",
        tag: "payments",
        summary: "Refunds a payment, in part or in full (the seller of an order it pays, their share only)",
        description: "`{\"amount\": N}` gives back N; no body (or `{}`) all that is left of the seller's order. A \
                      refund with an amount needs an `Idempotency-Key` (400 without). More than is left of it: \
                      409 `refund_exceeds_payment`; \
                      an amount under 1: 422 `invalid`; anything but an APPROVED payment: 409 \
                      `payment_not_refundable`; the same key with another body: 409 `idempotency_mismatch`.",
        access: Access::Bearer,
        ungated: false,
        input: Input::OptionalJson(typed::<RefundRequest>()),
        query: &[],
        idempotency: Idempotency::Optional,
        answers: &[Answer { status: 200, description: "The payment", body: Output::Json(typed::<Payment>()) }],
        errors: &[
            BadRequest,
            Forbidden,
            NotFound,
            PaymentNotRefundable,
            RefundExceedsPayment,
            IdempotencyMismatch,
            Invalid,
        ],
    },
    Endpoint {
        verb: Verb::Post,
        path: "/payments/webhooks/{gateway}",
        tag: "payments",
        summary: "The payment provider's notifications (no token)",
        description: "At most `webhook_body_limit_bytes` (64 KiB). 200 for anything understood (also an unknown \
                      order); 400 for a body that is not the provider's; 404 for a gateway that sends none \
                      (`simulated`); 429 past `webhook_notices_per_minute` (600) notices from one address; 503 \
                      when the provider cannot be asked.",
        access: Access::Anyone,
        ungated: false,
        input: Input::Raw("The provider's notification (Toss: `PAYMENT_STATUS_CHANGED`)."),
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "Received", body: Output::Object }],
        errors: &[BadRequest, NotFound, PayloadTooLarge, RateLimited, Unavailable],
    },
    // Chat
    Endpoint {
        verb: Verb::Post,
        path: "/chat/rooms",
        tag: "chat",
        summary: "Opens the room of a buyer and a seller",
        description: "One room per pair, the same from either side. 422 if both have the same role or the peer is \
                      the caller; 404 for an unknown peer.",
        access: Access::Bearer,
        ungated: false,
        input: Input::Json(typed::<OpenRoomRequest>()),
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[
            Answer { status: 201, description: "A new room", body: Output::Json(typed::<Room>()) },
            Answer { status: 200, description: "The existing room", body: Output::Json(typed::<Room>()) },
        ],
        errors: &[NotFound, Invalid],
    },
    Endpoint {
        verb: Verb::Get,
        path: "/chat/rooms",
        tag: "chat",
        summary: "The caller's rooms, in pages, with their last message",
        description: "",
        access: Access::Bearer,
        ungated: false,
        input: Input::Nothing,
        query: &[LIMIT, CURSOR],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "One page", body: Output::Page(typed::<Room>()) }],
        errors: &[BadRequest, Invalid],
    },
    Endpoint {
        verb: Verb::Get,
        path: "/chat/rooms/{id}/messages",
        tag: "chat",
        summary: "A room's history, newest first (members)",
        description: "Only messages with `seq < before`; `nextBefore` is null on the last page. 403 for non-members.",
        access: Access::Bearer,
        ungated: false,
        input: Input::Nothing,
        query: &[
            Query { name: "before", description: "Only messages before this seq.", kind: QueryType::Integer },
            Query {
                name: "limit",
                description: "Messages per page: 50 by default, at most 200 (larger is clamped).",
                kind: QueryType::Integer,
            },
        ],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "One page", body: Output::Json(typed::<HistoryPage>()) }],
        errors: &[BadRequest, Forbidden, NotFound],
    },
    Endpoint {
        verb: Verb::Get,
        path: "/ws",
        tag: "chat",
        summary: "The WebSocket: chat and order updates",
        description: WS_DESCRIPTION,
        access: Access::BearerOrQueryToken,
        ungated: false,
        input: Input::Nothing,
        query: &[Query {
            name: "token",
            description: "The access token, for browsers (which cannot set `Authorization` on an upgrade).",
            kind: QueryType::Text,
        }],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 101, description: "Switching Protocols: the socket is open", body: Output::Empty }],
        errors: &[BadRequest, Unauthorized, RateLimited],
    },
    // Operations
    Endpoint {
        verb: Verb::Get,
        path: "/healthz",
        tag: "operations",
        summary: "Liveness: the process is up",
        description: "Served before the node's request gate, so a busy node still answers.",
        access: Access::Anyone,
        ungated: true,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "`{status: \"ok\"}`", body: Output::Object }],
        errors: &[],
    },
    Endpoint {
        verb: Verb::Get,
        path: "/readyz",
        tag: "operations",
        summary: "Readiness: joined the cluster and storage reachable",
        description: "Served before the node's request gate.",
        access: Access::Anyone,
        ungated: true,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "`{status: \"ready\"}`", body: Output::Object }],
        errors: &[Unavailable],
    },
    Endpoint {
        verb: Verb::Get,
        path: "/metrics",
        tag: "operations",
        summary: "Prometheus metrics",
        description: "",
        access: Access::Anyone,
        ungated: false,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "Prometheus text format", body: Output::Text("text/plain") }],
        errors: &[],
    },
    Endpoint {
        verb: Verb::Get,
        path: "/info",
        tag: "operations",
        summary: "What this node is",
        description: "`{name, version, build, node, clustered, backends: {database, eventLog, cache, \
                      paymentGateway}}`; backends by kind only, never a URL.",
        access: Access::Anyone,
        ungated: false,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "The node", body: Output::Object }],
        errors: &[],
    },
    Endpoint {
        verb: Verb::Get,
        path: "/cluster",
        tag: "operations",
        summary: "The cluster as this node sees it",
        description: "`{self, members: [{name, httpAddr, status, entities}], shards}`; `members` includes the node \
                      itself.",
        access: Access::Anyone,
        ungated: false,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "The cluster", body: Output::Object }],
        errors: &[],
    },
    Endpoint {
        verb: Verb::Get,
        path: "/openapi.json",
        tag: "operations",
        summary: "This document",
        description: "OpenAPI 3.1, written from the same table and types that serve the API.",
        access: Access::Anyone,
        ungated: false,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "The document", body: Output::Object }],
        errors: &[],
    },
    Endpoint {
        verb: Verb::Get,
        path: "/docs",
        tag: "operations",
        summary: "The API reference page",
        description: "A page embedded in the binary that renders `/openapi.json`; it loads nothing from elsewhere.",
        access: Access::Anyone,
        ungated: false,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "HTML", body: Output::Text("text/html") }],
        errors: &[],
    },
    Endpoint {
        verb: Verb::Get,
        path: "/docs/reference.js",
        tag: "operations",
        summary: "The reference page's script",
        description: "",
        access: Access::Anyone,
        ungated: false,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "JavaScript", body: Output::Text("text/javascript") }],
        errors: &[],
    },
    Endpoint {
        verb: Verb::Get,
        path: "/",
        tag: "console",
        summary: "The web console's page",
        description: "Served with a Content-Security-Policy that confines the page to this origin.",
        access: Access::Anyone,
        ungated: false,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "HTML", body: Output::Text("text/html") }],
        errors: &[],
    },
    Endpoint {
        verb: Verb::Get,
        path: "/console/{file}",
        tag: "console",
        summary: "A file of the web console",
        description: "`index.html`, `app.js` or `style.css`; any other name is 404 `not_found`.",
        access: Access::Anyone,
        ungated: false,
        input: Input::Nothing,
        query: &[],
        idempotency: Idempotency::Unused,
        answers: &[Answer { status: 200, description: "The file", body: Output::Text("text/plain") }],
        errors: &[NotFound],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fit_templates_as_warp_matches_them() {
        let order = ENDPOINTS.iter().find(|e| e.path == "/orders/{id}/cancel").unwrap();
        assert!(order.fits("/orders/abc/cancel"));
        assert!(order.fits("/orders/abc/cancel/"), "one trailing slash, as warp allows");
        assert!(!order.fits("/orders//cancel"), "a parameter is never empty");
        assert!(!order.fits("/orders/abc/cancel//"));
        assert!(!order.fits("/orders/abc"));
        let root = ENDPOINTS.iter().find(|e| e.path == "/").unwrap();
        assert!(root.fits("/"));
        assert!(!root.fits("//"));
        assert!(!root.fits("/x"));
    }

    #[test]
    fn a_known_path_with_another_method_is_told_from_an_unknown_path() {
        assert_eq!(lookup(&Method::POST, "/orders"), Lookup::Served);
        assert_eq!(lookup(&Method::DELETE, "/orders"), Lookup::OtherMethod);
        assert_eq!(lookup(&Method::HEAD, "/healthz"), Lookup::OtherMethod);
        assert_eq!(lookup(&Method::GET, "/nowhere"), Lookup::Unknown);
        assert_eq!(lookup(&Method::GET, "/payments/webhooks"), Lookup::Served, "a payment whose id is webhooks");
        assert_eq!(lookup(&Method::POST, "/payments/webhooks/refund"), Lookup::Served);
        assert_eq!(lookup(&Method::GET, "/payments/webhooks/toss"), Lookup::OtherMethod);
    }

    #[test]
    fn no_two_rows_serve_the_same_method_and_template() {
        for (i, a) in ENDPOINTS.iter().enumerate() {
            for b in &ENDPOINTS[i + 1..] {
                assert!(!(a.verb == b.verb && a.path == b.path), "{:?} {} twice", a.verb, a.path);
            }
        }
    }
}
