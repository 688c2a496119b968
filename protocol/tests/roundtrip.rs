//! Property tests of the wire types: every body, view, frame and event survives
//! `serde_json` serialize → deserialize unchanged, and the order and payment status machines
//! never take a step the API forbids.
//!
//! The strategies are written by hand, one per type, so a new field fails to compile here until
//! it is generated too. Strings draw from all of Unicode (control characters, quotes, emoji,
//! Hangul) because they reach JSON escaping; times are whole milliseconds between 1900 and 2100.

use bazaar_protocol::auth::{Claims, LoginRequest, RefreshRequest, SignupRequest, TokenPair, UserView};
use bazaar_protocol::catalog::{CreateProduct, PatchProduct, Product};
use bazaar_protocol::chat::{ChatMessage, ClientFrame, HistoryPage, OpenRoomRequest, Room, ServerFrame};
use bazaar_protocol::error::{ErrorBody, ErrorCode, ErrorDetail};
use bazaar_protocol::events::{topics, Envelope, Event, StockChanged};
use bazaar_protocol::orders::{Order, OrderLine, OrderStatus, PlaceOrderRequest};
use bazaar_protocol::payments::{Payment, PaymentMethod, PaymentRequest, PaymentShare, PaymentStatus};
use bazaar_protocol::values::{Email, Quantity, Role};
use bazaar_protocol::{EventId, OrderId, Page, PaymentId, ProductId, RoomId, UserId};
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt::Debug;

// ---------------------------------------------------------------------------------------------
// The round trip itself.
// ---------------------------------------------------------------------------------------------

/// Checks that `value` comes back equal through JSON text and through `serde_json::Value`
/// (the node uses both: bodies as text, envelopes as values in the outbox).
fn assert_round_trip<T>(value: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let text = serde_json::to_string(value).map_err(|e| TestCaseError::fail(format!("serialize: {e}")))?;
    let back: T =
        serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("deserialize: {e}; json: {text}")))?;
    prop_assert_eq!(&back, value, "through text: {}", text);

    let tree = serde_json::to_value(value).map_err(|e| TestCaseError::fail(format!("to_value: {e}")))?;
    let back: T = serde_json::from_value(tree.clone())
        .map_err(|e| TestCaseError::fail(format!("from_value: {e}; json: {tree}")))?;
    prop_assert_eq!(&back, value, "through a value: {}", tree);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Leaves: text, ids, times, numbers, small enums.
// ---------------------------------------------------------------------------------------------

/// Any Unicode text up to `max` characters, biased towards the characters that need escaping.
fn text_up_to(max: usize) -> impl Strategy<Value = String> {
    let special = prop_oneof![
        Just('"'),
        Just('\\'),
        Just('\n'),
        Just('\u{0}'),
        Just('\u{7f}'),
        Just('\u{2028}'),
        Just('한'),
        Just('😀'),
        Just('é'),
    ];
    let any_char = prop_oneof![3 => any::<char>(), 1 => special];
    prop::collection::vec(any_char, 0..=max).prop_map(String::from_iter)
}

/// Short free text, the common case for names, messages and raw request fields.
fn text() -> impl Strategy<Value = String> {
    text_up_to(24)
}

/// An id as the server makes them (a UUID) or as a client might send one (any text).
fn id_text() -> impl Strategy<Value = String> {
    prop_oneof![any::<u128>().prop_map(|bits| uuid::Uuid::from_u128(bits).to_string()), text(),]
}

/// Any of the id newtypes.
fn id<T: From<String> + Debug>() -> impl Strategy<Value = T> {
    id_text().prop_map(T::from)
}

/// A time in whole milliseconds between 1900 and 2100.
fn time() -> impl Strategy<Value = DateTime<Utc>> {
    const FROM_1900: i64 = -2_208_988_800_000;
    const TO_2100: i64 = 4_102_444_799_999;
    (FROM_1900..=TO_2100).prop_map(|ms| DateTime::from_timestamp_millis(ms).expect("in chrono's range"))
}

/// A three-letter currency, or any text (views carry what was stored, not re-validated).
fn currency() -> impl Strategy<Value = String> {
    prop_oneof!["[A-Z]{3}", text()]
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Buyer), Just(Role::Seller)]
}

fn order_status() -> impl Strategy<Value = OrderStatus> {
    prop::sample::select(OrderStatus::ALL.to_vec())
}

fn payment_status() -> impl Strategy<Value = PaymentStatus> {
    prop::sample::select(PaymentStatus::ALL.to_vec())
}

/// Every error code; the exhaustive match in `error_code_index` keeps this list complete.
const ERROR_CODES: [ErrorCode; 25] = [
    ErrorCode::BadRequest,
    ErrorCode::Unauthorized,
    ErrorCode::Forbidden,
    ErrorCode::NotFound,
    ErrorCode::MethodNotAllowed,
    ErrorCode::Conflict,
    ErrorCode::EmailTaken,
    ErrorCode::IdempotencyMismatch,
    ErrorCode::OutOfStock,
    ErrorCode::OrderNotCancellable,
    ErrorCode::OrderNotPayable,
    ErrorCode::PaymentNotRefundable,
    ErrorCode::PayloadTooLarge,
    ErrorCode::UnsupportedMediaType,
    ErrorCode::Invalid,
    ErrorCode::RateLimited,
    ErrorCode::Unavailable,
    ErrorCode::Internal,
    ErrorCode::RequestTimeout,
    ErrorCode::RefundExceedsPayment,
    ErrorCode::CartFull,
    ErrorCode::TooManyWebhooks,
    ErrorCode::UrlNotAllowed,
    ErrorCode::CartEmpty,
    ErrorCode::MixedCurrencies,
];

/// The position of a code in [`ERROR_CODES`]; no wildcard, so a new code breaks the build here.
fn error_code_index(code: ErrorCode) -> usize {
    match code {
        ErrorCode::BadRequest => 0,
        ErrorCode::Unauthorized => 1,
        ErrorCode::Forbidden => 2,
        ErrorCode::NotFound => 3,
        ErrorCode::MethodNotAllowed => 4,
        ErrorCode::Conflict => 5,
        ErrorCode::EmailTaken => 6,
        ErrorCode::IdempotencyMismatch => 7,
        ErrorCode::OutOfStock => 8,
        ErrorCode::OrderNotCancellable => 9,
        ErrorCode::OrderNotPayable => 10,
        ErrorCode::PaymentNotRefundable => 11,
        ErrorCode::PayloadTooLarge => 12,
        ErrorCode::UnsupportedMediaType => 13,
        ErrorCode::Invalid => 14,
        ErrorCode::RateLimited => 15,
        ErrorCode::Unavailable => 16,
        ErrorCode::Internal => 17,
        ErrorCode::RequestTimeout => 18,
        ErrorCode::RefundExceedsPayment => 19,
        ErrorCode::CartFull => 20,
        ErrorCode::TooManyWebhooks => 21,
        ErrorCode::UrlNotAllowed => 22,
        ErrorCode::CartEmpty => 23,
        ErrorCode::MixedCurrencies => 24,
    }
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(ERROR_CODES.to_vec())
}

/// A valid address with the casing and padding a client might send; parsed, so normalised.
fn email() -> impl Strategy<Value = Email> {
    ("[ ]{0,2}", "[a-zA-Z0-9._%+-]{1,20}", "[a-zA-Z0-9]{1,10}", "[a-zA-Z]{2,6}", "[ ]{0,2}").prop_map(
        |(before, local, host, tld, after)| {
            Email::parse(&format!("{before}{local}@{host}.{tld}{after}")).expect("generated addresses are valid")
        },
    )
}

fn quantity() -> impl Strategy<Value = Quantity> {
    (1i64..=1_000_000).prop_map(|n| Quantity::try_from(n).expect("in range"))
}

// ---------------------------------------------------------------------------------------------
// Auth.
// ---------------------------------------------------------------------------------------------

fn signup_request() -> impl Strategy<Value = SignupRequest> {
    (text(), text(), prop_oneof![Just("BUYER".to_owned()), Just("SELLER".to_owned()), text()], prop::option::of(text()))
        .prop_map(|(email, password, role, name)| SignupRequest { email, password, role, name })
}

fn login_request() -> impl Strategy<Value = LoginRequest> {
    (text(), text()).prop_map(|(email, password)| LoginRequest { email, password })
}

fn refresh_request() -> impl Strategy<Value = RefreshRequest> {
    text_up_to(200).prop_map(|refresh_token| RefreshRequest { refresh_token })
}

fn token_pair() -> impl Strategy<Value = TokenPair> {
    (text_up_to(200), text_up_to(200), any::<u64>()).prop_map(|(access_token, refresh_token, expires_in)| TokenPair {
        access_token,
        refresh_token,
        expires_in,
    })
}

fn user_view() -> impl Strategy<Value = UserView> {
    (id(), email(), role(), text()).prop_map(|(id, email, role, name)| UserView {
        id,
        email: email.as_str().to_owned(),
        role,
        name,
    })
}

fn claims() -> impl Strategy<Value = Claims> {
    (id_text(), role(), any::<i64>(), any::<i64>(), id_text(), proptest::option::of(id_text()))
        .prop_map(|(sub, role, exp, iat, jti, sid)| Claims { sub, role, exp, iat, jti, sid })
}

// ---------------------------------------------------------------------------------------------
// Catalog.
// ---------------------------------------------------------------------------------------------

fn create_product() -> impl Strategy<Value = CreateProduct> {
    (text(), any::<i64>(), prop::option::of(currency()), any::<i64>(), prop::option::of(text_up_to(100))).prop_map(
        |(name, price, currency, stock, description)| CreateProduct { name, price, currency, stock, description },
    )
}

fn patch_product() -> impl Strategy<Value = PatchProduct> {
    (
        prop::option::of(any::<i64>()),
        prop::option::of(any::<i64>()),
        prop::option::of(text()),
        prop::option::of(text_up_to(100)),
    )
        .prop_map(|(price, stock, name, description)| PatchProduct { price, stock, name, description })
}

fn product() -> impl Strategy<Value = Product> {
    (id(), id(), text(), text_up_to(100), any::<i64>(), currency(), any::<i64>()).prop_map(
        |(id, seller_id, name, description, price, currency, stock)| Product {
            id,
            seller_id,
            name,
            description,
            price,
            currency,
            stock,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Orders and payments.
// ---------------------------------------------------------------------------------------------

fn place_order_request() -> impl Strategy<Value = PlaceOrderRequest> {
    (id_text(), any::<i64>()).prop_map(|(product_id, quantity)| PlaceOrderRequest { product_id, quantity })
}

fn order() -> BoxedStrategy<Order> {
    (
        (id(), id(), id(), id()),
        (any::<u32>(), any::<i64>(), currency(), order_status()),
        (time(), time(), prop::option::of(time()), prop::option::of(id())),
        (prop::collection::vec(order_line(), 0..4), prop::option::of(id())),
    )
        .prop_map(
            |(
                (id, buyer_id, seller_id, product_id),
                (quantity, amount, currency, status),
                (created_at, updated_at, expires_at, payment_id),
                (lines, checkout_id),
            )| Order {
                id,
                buyer_id,
                seller_id,
                product_id,
                quantity,
                amount,
                currency,
                status,
                created_at,
                updated_at,
                expires_at,
                payment_id,
                lines,
                checkout_id,
            },
        )
        .boxed()
}

fn order_line() -> impl Strategy<Value = OrderLine> {
    (id(), any::<u32>(), any::<i64>(), any::<i64>()).prop_map(|(product_id, quantity, unit_price, amount)| OrderLine {
        product_id,
        quantity,
        unit_price,
        amount,
    })
}

fn payment_method() -> impl Strategy<Value = PaymentMethod> {
    (prop_oneof![Just("card".to_owned()), text()], prop_oneof!["tok_[a-z]{1,10}", text()])
        .prop_map(|(kind, token)| PaymentMethod { kind, token })
}

fn payment_request() -> impl Strategy<Value = PaymentRequest> {
    (prop::option::of(id_text()), prop::option::of(id_text()), payment_method())
        .prop_map(|(order_id, checkout_id, method)| PaymentRequest { order_id, checkout_id, method })
}

fn payment_share() -> impl Strategy<Value = PaymentShare> {
    (id(), id(), any::<i64>(), any::<i64>()).prop_map(|(order_id, seller_id, amount, refunded_amount)| PaymentShare {
        order_id,
        seller_id,
        amount,
        refunded_amount,
    })
}

fn payment() -> BoxedStrategy<Payment> {
    (
        (id(), prop::option::of(id()), prop::option::of(id())),
        any::<i64>(),
        payment_status(),
        prop::option::of(prop_oneof![Just("card_declined".to_owned()), Just("gateway_timeout".to_owned()), text()]),
        any::<i64>(),
        prop::collection::vec(payment_share(), 0..4),
    )
        .prop_map(|((id, order_id, checkout_id), amount, status, reason, refunded_amount, orders)| Payment {
            id,
            order_id,
            checkout_id,
            amount,
            status,
            reason,
            refunded_amount,
            orders,
        })
        .boxed()
}

// ---------------------------------------------------------------------------------------------
// Chat.
// ---------------------------------------------------------------------------------------------

fn open_room_request() -> impl Strategy<Value = OpenRoomRequest> {
    id_text().prop_map(|peer_id| OpenRoomRequest { peer_id })
}

fn chat_message() -> BoxedStrategy<ChatMessage> {
    // Mostly short texts, sometimes up to the 4000-character cap.
    let body = prop_oneof![4 => text(), 1 => text_up_to(4000)];
    (id(), any::<i64>(), id_text(), id(), body, time())
        .prop_map(|(room, seq, id, from, text, sent_at)| ChatMessage { room, seq, id, from, text, sent_at })
        .boxed()
}

fn room() -> BoxedStrategy<Room> {
    (id(), id(), id(), time(), prop::option::of(chat_message()))
        .prop_map(|(id, buyer, seller, created_at, last_message)| Room {
            id,
            members: [buyer, seller],
            created_at,
            last_message,
        })
        .boxed()
}

fn history_page() -> impl Strategy<Value = HistoryPage> {
    (prop::collection::vec(chat_message(), 0..4), prop::option::of(any::<i64>()))
        .prop_map(|(items, next_before)| HistoryPage { items, next_before })
}

fn client_frame() -> BoxedStrategy<ClientFrame> {
    prop_oneof![
        (id(), prop::option::of(any::<i64>())).prop_map(|(room, since)| ClientFrame::Join { room, since }),
        (id(), text(), id_text()).prop_map(|(room, text, client_msg_id)| ClientFrame::Send {
            room,
            text,
            client_msg_id
        }),
        id().prop_map(|room| ClientFrame::Leave { room }),
        id().prop_map(|room| ClientFrame::Typing { room }),
        (id(), any::<i64>()).prop_map(|(room, seq)| ClientFrame::Read { room, seq }),
    ]
    .boxed()
}

/// The position of a client frame's variant; no wildcard, so a new variant breaks the build here.
fn client_frame_index(frame: &ClientFrame) -> usize {
    match frame {
        ClientFrame::Join { .. } => 0,
        ClientFrame::Send { .. } => 1,
        ClientFrame::Leave { .. } => 2,
        ClientFrame::Typing { .. } => 3,
        ClientFrame::Read { .. } => 4,
    }
}

fn server_frame() -> BoxedStrategy<ServerFrame> {
    prop_oneof![
        (id(), any::<i64>()).prop_map(|(room, last_seq)| ServerFrame::Joined { room, last_seq }),
        chat_message().prop_map(ServerFrame::Message),
        (id_text(), any::<i64>()).prop_map(|(client_msg_id, seq)| ServerFrame::Ack { client_msg_id, seq }),
        (id(), id()).prop_map(|(room, from)| ServerFrame::Typing { room, from }),
        (id(), id(), any::<i64>()).prop_map(|(room, from, seq)| ServerFrame::Read { room, from, seq }),
        (id(), prop::collection::vec(id(), 0..4)).prop_map(|(room, online)| ServerFrame::Presence { room, online }),
        order().prop_map(|order| ServerFrame::Order { order }),
        (error_code().prop_map(|code| code.as_str().to_owned()), text())
            .prop_map(|(code, message)| ServerFrame::Error { code, message }),
    ]
    .boxed()
}

/// The position of a server frame's variant; no wildcard, so a new variant breaks the build here.
fn server_frame_index(frame: &ServerFrame) -> usize {
    match frame {
        ServerFrame::Joined { .. } => 0,
        ServerFrame::Message(_) => 1,
        ServerFrame::Ack { .. } => 2,
        ServerFrame::Typing { .. } => 3,
        ServerFrame::Read { .. } => 4,
        ServerFrame::Presence { .. } => 5,
        ServerFrame::Order { .. } => 6,
        ServerFrame::Error { .. } => 7,
    }
}

// ---------------------------------------------------------------------------------------------
// Events.
// ---------------------------------------------------------------------------------------------

fn stock_changed() -> impl Strategy<Value = StockChanged> {
    (id(), any::<i64>(), any::<i64>(), prop::option::of(id()))
        .prop_map(|(product_id, stock, delta, order_id)| StockChanged { product_id, stock, delta, order_id })
}

fn event() -> BoxedStrategy<Event> {
    prop_oneof![
        user_view().prop_map(|user| Event::UserRegistered { user }),
        product().prop_map(|product| Event::ProductListed { product }),
        stock_changed().prop_map(Event::StockChanged),
        order().prop_map(|order| Event::OrderPlaced { order }),
        (order(), text()).prop_map(|(order, reason)| Event::OrderCancelled { order, reason }),
        (payment(), order(), prop::collection::vec(order(), 0..3))
            .prop_map(|(payment, order, more_orders)| Event::PaymentRequested { payment, order, more_orders }),
        payment().prop_map(|payment| Event::PaymentApproved { payment }),
        payment().prop_map(|payment| Event::PaymentDeclined { payment }),
        (payment(), prop::option::of(any::<i64>()), any::<bool>(), prop::option::of(id())).prop_map(
            |(payment, amount, at_provider, order_id)| Event::PaymentRefunded {
                payment,
                amount,
                at_provider,
                order_id
            }
        ),
        order().prop_map(|order| Event::OrderPaid { order }),
        order().prop_map(|order| Event::OrderRefunded { order }),
        room().prop_map(|room| Event::ChatRoomOpened { room }),
        chat_message().prop_map(|message| Event::ChatMessagePosted { message }),
    ]
    .boxed()
}

/// The position of an event's variant; no wildcard, so a new variant breaks the build here.
fn event_index(event: &Event) -> usize {
    match event {
        Event::UserRegistered { .. } => 0,
        Event::ProductListed { .. } => 1,
        Event::StockChanged(_) => 2,
        Event::OrderPlaced { .. } => 3,
        Event::OrderCancelled { .. } => 4,
        Event::PaymentRequested { .. } => 5,
        Event::PaymentApproved { .. } => 6,
        Event::PaymentDeclined { .. } => 7,
        Event::PaymentRefunded { .. } => 8,
        Event::OrderPaid { .. } => 9,
        Event::OrderRefunded { .. } => 10,
        Event::ChatRoomOpened { .. } => 11,
        Event::ChatMessagePosted { .. } => 12,
    }
}

const EVENT_VARIANTS: usize = 13;

fn envelope() -> impl Strategy<Value = Envelope> {
    (id::<EventId>(), id_text(), any::<i64>(), time(), event()).prop_map(|(id, entity_id, seq, at, event)| Envelope {
        id,
        entity_id,
        seq,
        at,
        event,
    })
}

fn error_body() -> impl Strategy<Value = ErrorBody> {
    (error_code(), text_up_to(200))
        .prop_map(|(code, message)| ErrorBody { error: ErrorDetail { code, message, products: None } })
}

/// Draws `count` values from `strategy` with a fixed seed and returns the variant indexes seen.
fn variants_drawn<T>(strategy: impl Strategy<Value = T>, index: impl Fn(&T) -> usize, count: usize) -> BTreeSet<usize> {
    let mut runner = TestRunner::deterministic();
    (0..count).map(|_| index(&strategy.new_tree(&mut runner).expect("strategy draws a value").current())).collect()
}

// ---------------------------------------------------------------------------------------------
// Round-trip properties.
// ---------------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn ids_of_every_kind_survive_json(
        user in id::<UserId>(),
        product in id::<ProductId>(),
        order in id::<OrderId>(),
        payment in id::<PaymentId>(),
        room in id::<RoomId>(),
        event in id::<EventId>(),
    ) {
        assert_round_trip(&user)?;
        assert_round_trip(&product)?;
        assert_round_trip(&order)?;
        assert_round_trip(&payment)?;
        assert_round_trip(&room)?;
        assert_round_trip(&event)?;
        // Transparent: an id is a bare JSON string, not an object.
        prop_assert_eq!(serde_json::to_value(&user).unwrap(), serde_json::Value::String(user.0.clone()));
    }

    #[test]
    fn domain_values_survive_json(
        email in email(),
        quantity in quantity(),
        role in role(),
        order_status in order_status(),
        payment_status in payment_status(),
        code in error_code(),
    ) {
        assert_round_trip(&email)?;
        assert_round_trip(&quantity)?;
        assert_round_trip(&role)?;
        assert_round_trip(&order_status)?;
        assert_round_trip(&payment_status)?;
        assert_round_trip(&code)?;
    }

    #[test]
    fn auth_bodies_survive_json(
        signup in signup_request(),
        login in login_request(),
        refresh in refresh_request(),
        pair in token_pair(),
        user in user_view(),
        claims in claims(),
    ) {
        assert_round_trip(&signup)?;
        assert_round_trip(&login)?;
        assert_round_trip(&refresh)?;
        assert_round_trip(&pair)?;
        assert_round_trip(&user)?;
        assert_round_trip(&claims)?;
    }

    #[test]
    fn catalog_bodies_survive_json(create in create_product(), patch in patch_product(), product in product()) {
        assert_round_trip(&create)?;
        assert_round_trip(&patch)?;
        assert_round_trip(&product)?;
    }

    #[test]
    fn order_and_payment_bodies_survive_json(
        place in place_order_request(),
        order in order(),
        pay in payment_request(),
        payment in payment(),
    ) {
        assert_round_trip(&place)?;
        assert_round_trip(&order)?;
        assert_round_trip(&pay)?;
        assert_round_trip(&payment)?;
    }

    #[test]
    fn chat_bodies_survive_json(
        open in open_room_request(),
        room in room(),
        message in chat_message(),
        history in history_page(),
    ) {
        assert_round_trip(&open)?;
        assert_round_trip(&room)?;
        assert_round_trip(&message)?;
        assert_round_trip(&history)?;
    }

    #[test]
    fn pages_of_every_listing_survive_json(
        products in prop::collection::vec(product(), 0..4),
        orders in prop::collection::vec(order(), 0..4),
        rooms in prop::collection::vec(room(), 0..3),
        cursor in prop::option::of(text()),
    ) {
        assert_round_trip(&Page { items: products, next_cursor: cursor.clone() })?;
        assert_round_trip(&Page { items: orders, next_cursor: cursor.clone() })?;
        assert_round_trip(&Page { items: rooms, next_cursor: cursor })?;
    }

    #[test]
    fn every_client_frame_survives_json(frame in client_frame()) {
        assert_round_trip(&frame)?;
    }

    #[test]
    fn every_server_frame_survives_json(frame in server_frame()) {
        assert_round_trip(&frame)?;
    }

    #[test]
    fn every_event_survives_json_inside_its_envelope(envelope in envelope()) {
        assert_round_trip(&envelope)?;
        let json = serde_json::to_value(&envelope).unwrap();
        let keys: BTreeSet<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        prop_assert_eq!(keys, BTreeSet::from(["at", "data", "entityId", "id", "seq", "type"]));
        prop_assert_eq!(json["type"].as_str(), Some(envelope.event.type_name()));
        prop_assert!(topics::ALL.contains(&envelope.event.topic()));
    }

    #[test]
    fn error_bodies_survive_json_with_the_documented_shape(body in error_body()) {
        assert_round_trip(&body)?;
        let json = serde_json::to_value(&body).unwrap();
        prop_assert_eq!(json["error"]["code"].as_str(), Some(body.error.code.as_str()));
        prop_assert_eq!(json["error"]["message"].as_str(), Some(body.error.message.as_str()));
    }
}

#[test]
fn the_strategies_draw_every_event_and_frame_variant() {
    assert_eq!(variants_drawn(event(), event_index, 2_000).len(), EVENT_VARIANTS);
    assert_eq!(variants_drawn(client_frame(), client_frame_index, 500).len(), 5);
    assert_eq!(variants_drawn(server_frame(), server_frame_index, 1_000).len(), 8);
}

#[test]
fn every_error_code_has_one_wire_name_and_a_client_or_server_error_status() {
    let mut names = BTreeSet::new();
    for (position, code) in ERROR_CODES.into_iter().enumerate() {
        assert_eq!(error_code_index(code), position, "{code:?} is listed once, in order");
        assert_eq!(serde_json::to_value(code).unwrap(), serde_json::Value::from(code.as_str()));
        assert!((400..600).contains(&code.status()), "{code:?}");
        assert!(names.insert(code.as_str()), "{} is used twice", code.as_str());
    }
}

// ---------------------------------------------------------------------------------------------
// State machines.
// ---------------------------------------------------------------------------------------------

/// Applies each requested status only where `may_become` allows it; returns the statuses taken.
fn walk<S: Copy + PartialEq>(start: S, requests: &[S], may_become: impl Fn(S, S) -> bool) -> Vec<S> {
    let mut path = vec![start];
    for &next in requests {
        let current = *path.last().expect("the path starts non-empty");
        if may_become(current, next) {
            path.push(next);
        }
    }
    path
}

#[test]
fn order_status_allows_exactly_the_documented_transitions() {
    use OrderStatus::*;
    let documented = [
        (Ordered, PaymentPending),
        (Ordered, Cancelled),
        (PaymentPending, Paid),
        (PaymentPending, Cancelled),
        (Paid, Refunded),
    ];
    for from in OrderStatus::ALL {
        for to in OrderStatus::ALL {
            assert_eq!(from.may_become(to), documented.contains(&(from, to)), "{from:?} → {to:?}");
        }
    }
}

#[test]
fn payment_status_allows_exactly_the_documented_transitions() {
    use PaymentStatus::*;
    let documented = [(Requested, Approved), (Requested, Declined), (Approved, Refunded)];
    for from in PaymentStatus::ALL {
        for to in PaymentStatus::ALL {
            assert_eq!(from.may_become(to), documented.contains(&(from, to)), "{from:?} → {to:?}");
        }
    }
}

proptest! {
    #[test]
    fn any_sequence_of_order_requests_follows_the_api_path(
        requests in prop::collection::vec(order_status(), 0..40),
    ) {
        use OrderStatus::*;
        let path = walk(Ordered, &requests, OrderStatus::may_become);
        let happy = [Ordered, PaymentPending, Paid, Refunded];
        let allowed = path.len() <= happy.len() && path[..] == happy[..path.len()]
            || path[..] == [Ordered, Cancelled]
            || path[..] == [Ordered, PaymentPending, Cancelled];
        prop_assert!(allowed, "path {:?} from requests {:?}", path, requests);

        for (position, status) in path.iter().enumerate() {
            if matches!(status, Cancelled | Refunded) {
                prop_assert_eq!(position, path.len() - 1, "nothing leaves {:?}: {:?}", status, path);
            }
            if *status == Refunded {
                prop_assert_eq!(path[position - 1], Paid, "REFUNDED only after PAID: {:?}", path);
            }
            if *status == Cancelled {
                prop_assert!(matches!(path[position - 1], Ordered | PaymentPending), "{:?}", path);
            }
        }
    }

    #[test]
    fn any_sequence_of_payment_requests_follows_the_api_path(
        requests in prop::collection::vec(payment_status(), 0..40),
    ) {
        use PaymentStatus::*;
        let path = walk(Requested, &requests, PaymentStatus::may_become);
        let approved = [Requested, Approved, Refunded];
        let allowed = path.len() <= approved.len() && path[..] == approved[..path.len()]
            || path[..] == [Requested, Declined];
        prop_assert!(allowed, "path {:?} from requests {:?}", path, requests);

        for (position, status) in path.iter().enumerate() {
            if matches!(status, Declined | Refunded) {
                prop_assert_eq!(position, path.len() - 1, "nothing leaves {:?}: {:?}", status, path);
            }
            if *status == Refunded {
                prop_assert_eq!(path[position - 1], Approved, "REFUNDED only after APPROVED: {:?}", path);
            }
        }
    }

    #[test]
    fn a_final_status_refuses_every_request(
        order_requests in prop::collection::vec(order_status(), 1..10),
        payment_requests in prop::collection::vec(payment_status(), 1..10),
    ) {
        for start in [OrderStatus::Cancelled, OrderStatus::Refunded] {
            prop_assert_eq!(walk(start, &order_requests, OrderStatus::may_become), vec![start]);
        }
        for start in [PaymentStatus::Declined, PaymentStatus::Refunded] {
            prop_assert_eq!(walk(start, &payment_requests, PaymentStatus::may_become), vec![start]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// E-mail parsing.
// ---------------------------------------------------------------------------------------------

/// Strings that look like addresses often enough to reach every branch of `Email::parse`,
/// including letters whose lower case is longer or context-dependent (İ, Σ, K-as-Kelvin, ẞ).
fn email_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-zA-Z0-9]{1,8}",
        Just("@".to_owned()),
        Just(".".to_owned()),
        Just("-".to_owned()),
        Just(" ".to_owned()),
        Just("\t".to_owned()),
        Just("İ".to_owned()),
        Just("Σ".to_owned()),
        Just("\u{212A}".to_owned()),
        Just("ẞ".to_owned()),
        Just("한".to_owned()),
        text_up_to(3),
    ];
    // Nearly valid: a local part and dotted labels, so the normalised (`Ok`) branch is common.
    let nearly_valid = (
        "[ \t]{0,2}",
        "[a-zA-Z0-9._+İΣ\u{212A}ẞ한-]{1,12}",
        prop::collection::vec("[a-zA-Z0-9Σ\u{212A}ẞ한]{1,6}(-[a-z0-9]{1,3})?", 1..4),
        "[ ]{0,2}",
    )
        .prop_map(|(before, local, labels, after)| format!("{before}{local}@{}{after}", labels.join(".")));
    prop_oneof![
        3 => nearly_valid,
        2 => prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat()),
        1 => any::<String>(),
        1 => "[ ]{0,2}[a-zA-Z0-9.+-]{0,70}@[a-zA-Z0-9.-]{0,200}[ ]{0,2}",
    ]
}

proptest! {
    #[test]
    fn email_parse_is_idempotent_and_never_panics(raw in email_like()) {
        let once = Email::parse(&raw);
        let twice = once.clone().and_then(|email| Email::parse(email.as_str()));
        prop_assert_eq!(&twice, &once, "raw: {:?}", raw);
        if let Ok(email) = once {
            let normalised = email.as_str();
            prop_assert_eq!(normalised, normalised.trim());
            prop_assert_eq!(normalised, normalised.to_lowercase());
            prop_assert_eq!(normalised.matches('@').count(), 1, "one @: {}", normalised);
        }
    }
}
