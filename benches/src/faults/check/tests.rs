//! Tests of the checker on hand-made histories: a clean run gives no violation, and each broken
//! promise, put into it by hand, is caught under its own rule and nothing else.

use super::{check, Kind, Rule};
use crate::faults::final_state::{EntityVersion, FinalState, LedgerCharge, RoomHistory};
use crate::faults::history::{
    Call, CancelSent, ChatAck, ChatPostSent, CreateProductSent, Entry, GetOrderSent, HistoryReadSent, Outcome, PaySent,
    PlaceOrderSent, RefundSent,
};
use bazaar_protocol::catalog::Product;
use bazaar_protocol::chat::{ChatMessage, HistoryPage};
use bazaar_protocol::orders::{Order, OrderStatus};
use bazaar_protocol::payments::{Payment, PaymentStatus};
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;

const SELLER: &str = "seller-1";
const BUYER: &str = "buyer-1";
const PRODUCT: &str = "product-1";
const ROOM: &str = "room-1";

fn at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

fn order(id: &str, quantity: u32, status: OrderStatus) -> Order {
    Order {
        id: id.into(),
        buyer_id: BUYER.into(),
        seller_id: SELLER.into(),
        product_id: PRODUCT.into(),
        quantity,
        amount: 100 * i64::from(quantity),
        currency: "KRW".into(),
        status,
        created_at: at(),
        updated_at: at(),
        expires_at: None,
        payment_id: None,
        lines: Vec::new(),
        checkout_id: None,
    }
}

fn paid(id: &str, quantity: u32, status: OrderStatus, payment: &str) -> Order {
    Order { payment_id: Some(payment.into()), ..order(id, quantity, status) }
}

fn payment(id: &str, order_id: &str, amount: i64, status: PaymentStatus, refunded: i64) -> Payment {
    Payment {
        id: id.into(),
        order_id: Some(order_id.into()),
        checkout_id: None,
        amount,
        status,
        reason: None,
        refunded_amount: refunded,
        orders: Vec::new(),
    }
}

fn product(stock: i64) -> Product {
    Product {
        id: PRODUCT.into(),
        seller_id: SELLER.into(),
        name: "lamp".into(),
        description: String::new(),
        price: 100,
        currency: "KRW".into(),
        stock,
    }
}

fn message(seq: i64, from: &str, text: &str) -> ChatMessage {
    ChatMessage { room: ROOM.into(), seq, id: format!("m{seq}"), from: from.into(), text: text.into(), sent_at: at() }
}

fn charge(payment_id: &str, amount: i64, outcome: &str, refunded: i64) -> LedgerCharge {
    LedgerCharge { payment_id: payment_id.into(), amount, outcome: outcome.into(), refunded_amount: refunded }
}

fn version(entity: &str, seq: i64, event: &str) -> EntityVersion {
    EntityVersion { entity_id: entity.into(), seq, event_id: event.into() }
}

fn ok<T>(value: T) -> Outcome<T> {
    Outcome::Ok { status: Some(200), value }
}

fn indefinite<T>() -> Outcome<T> {
    Outcome::Indefinite { reason: "timeout".into() }
}

fn place(key: &str, quantity: u32, outcome: Outcome<Order>) -> Call {
    Call::PlaceOrder {
        request: PlaceOrderSent {
            buyer: BUYER.into(),
            product_id: PRODUCT.into(),
            quantity,
            idempotency_key: key.into(),
        },
        outcome,
    }
}

fn get_order(id: &str, outcome: Outcome<Order>) -> Call {
    Call::GetOrder { request: GetOrderSent { viewer: BUYER.into(), order_id: id.into() }, outcome }
}

fn pay(order_id: &str, token: &str, key: &str, outcome: Outcome<Payment>) -> Call {
    Call::Pay {
        request: PaySent {
            buyer: BUYER.into(),
            order_id: order_id.into(),
            token: token.into(),
            idempotency_key: key.into(),
        },
        outcome,
    }
}

fn post(from: &str, client_msg_id: &str, text: &str, outcome: Outcome<ChatAck>) -> Call {
    Call::ChatPost {
        request: ChatPostSent {
            from: from.into(),
            room: ROOM.into(),
            client_msg_id: client_msg_id.into(),
            text: text.into(),
        },
        outcome,
    }
}

/// A history whose operations run one after another, each 10 ns long.
#[derive(Default)]
struct History {
    entries: Vec<Entry>,
}

impl History {
    fn then(&mut self, call: Call) -> &mut Self {
        let op = self.entries.len() as u64 + 1;
        self.entries.push(Entry { op, client: 1, invoke_ns: op * 100, complete_ns: op * 100 + 10, call });
        self
    }
}

/// A run that kept every promise: a product of 10 units; order o1 (2 units, placed, retried)
/// paid with tok_ok and refunded 50; o2 placed without an answer and expired; o3 placed and
/// cancelled; o4 refused (out of stock); three chat posts, one retried and one unanswered.
fn clean() -> (History, FinalState) {
    let mut history = History::default();
    history
        .then(Call::CreateProduct {
            request: CreateProductSent { seller: SELLER.into(), name: "lamp".into(), price: 100, stock: 10 },
            outcome: ok(product(10)),
        })
        .then(place("k1", 2, ok(order("o1", 2, OrderStatus::Ordered))))
        .then(place("k1", 2, ok(order("o1", 2, OrderStatus::Ordered))))
        .then(place("k2", 1, indefinite()))
        .then(pay("o1", "tok_ok", "pk1", ok(payment("pay1", "o1", 200, PaymentStatus::Requested, 0))))
        .then(get_order("o1", ok(paid("o1", 2, OrderStatus::PaymentPending, "pay1"))))
        .then(get_order("o1", ok(paid("o1", 2, OrderStatus::Paid, "pay1"))))
        .then(Call::Refund {
            request: RefundSent {
                seller: SELLER.into(),
                payment_id: "pay1".into(),
                amount: Some(50),
                idempotency_key: Some("rk1".into()),
            },
            outcome: ok(payment("pay1", "o1", 200, PaymentStatus::Approved, 50)),
        })
        .then(place("k3", 3, ok(order("o3", 3, OrderStatus::Ordered))))
        .then(Call::Cancel {
            request: CancelSent { by: BUYER.into(), order_id: "o3".into() },
            outcome: ok(order("o3", 3, OrderStatus::Cancelled)),
        })
        .then(place("k4", 100, Outcome::Fail { status: Some(409), code: "out_of_stock".into() }))
        .then(post(BUYER, "c1", "hello", Outcome::Ok { status: None, value: ChatAck { seq: 1 } }))
        .then(post(BUYER, "c1", "hello", Outcome::Ok { status: None, value: ChatAck { seq: 1 } }))
        .then(post(SELLER, "c2", "hi there", indefinite()))
        .then(post(BUYER, "c3", "third", Outcome::Ok { status: None, value: ChatAck { seq: 3 } }))
        .then(Call::HistoryRead {
            request: HistoryReadSent { reader: BUYER.into(), room: ROOM.into(), before: None, limit: None },
            outcome: ok(HistoryPage {
                items: vec![message(3, BUYER, "third"), message(2, SELLER, "hi there"), message(1, BUYER, "hello")],
                next_before: None,
            }),
        });
    let state = FinalState {
        products: vec![product(8)],
        orders: vec![
            paid("o1", 2, OrderStatus::Paid, "pay1"),
            order("o2", 1, OrderStatus::Cancelled),
            order("o3", 3, OrderStatus::Cancelled),
        ],
        payments: vec![payment("pay1", "o1", 200, PaymentStatus::Approved, 50)],
        rooms: vec![RoomHistory {
            id: ROOM.into(),
            messages: vec![message(1, BUYER, "hello"), message(2, SELLER, "hi there"), message(3, BUYER, "third")],
        }],
        ledger: vec![charge("pay1", 200, "approved", 50)],
        versions: vec![version("o1", 1, "e1"), version("o1", 2, "e2"), version("pay1", 1, "e3")],
    };
    (history, state)
}

fn rules(history: &History, state: &FinalState) -> BTreeSet<Rule> {
    let report = check(&history.entries, state);
    eprint!("{}", report.table());
    report.rules()
}

fn only(rule: Rule) -> BTreeSet<Rule> {
    BTreeSet::from([rule])
}

#[test]
fn a_clean_history_gives_no_violation_and_counts_every_operation() {
    let (history, state) = clean();
    let report = check(&history.entries, &state);
    assert!(report.violations.is_empty(), "{}", report.table());
    let total = report.total();
    assert_eq!((total.issued, total.acknowledged, total.failed_clearly, total.indefinite), (16, 13, 1, 2));
    assert_eq!((total.lost, total.doubled), (0, 0));
    let orders = report.counts[&Kind::PlaceOrder];
    assert_eq!((orders.issued, orders.acknowledged, orders.failed_clearly, orders.indefinite), (5, 3, 1, 1));
    assert!(report.table().contains("| place_order "), "{}", report.table());
}

#[test]
fn a_lost_acknowledged_order_is_caught() {
    let (history, mut state) = clean();
    state.orders.retain(|o| o.id.as_str() != "o3");
    assert_eq!(rules(&history, &state), only(Rule::Lost));
    assert_eq!(check(&history.entries, &state).counts[&Kind::PlaceOrder].lost, 1);
}

#[test]
fn a_lost_acknowledged_chat_message_is_caught() {
    let (history, mut state) = clean();
    state.rooms[0].messages.retain(|m| m.seq != 3);
    assert_eq!(rules(&history, &state), only(Rule::Lost));
    assert_eq!(check(&history.entries, &state).counts[&Kind::ChatPost].lost, 1);
}

#[test]
fn an_acknowledged_refund_the_payment_does_not_show_is_lost() {
    let (history, mut state) = clean();
    state.payments[0].refunded_amount = 0;
    state.ledger[0].refunded_amount = 0;
    assert_eq!(rules(&history, &state), only(Rule::Lost));
    assert_eq!(check(&history.entries, &state).counts[&Kind::Refund].lost, 1);
}

#[test]
fn an_order_more_than_the_undecided_requests_explain_is_doubled() {
    let (history, mut state) = clean();
    // k2 was left undecided and may have made one order (o2), not two.
    state.orders.push(order("o5", 1, OrderStatus::Cancelled));
    assert_eq!(rules(&history, &state), only(Rule::Doubled));
    assert_eq!(check(&history.entries, &state).counts[&Kind::PlaceOrder].doubled, 1);
}

#[test]
fn a_second_payment_of_one_order_charged_again_is_a_double_charge() {
    let (history, mut state) = clean();
    state.payments.push(payment("pay2", "o1", 200, PaymentStatus::Approved, 0));
    state.ledger.push(charge("pay2", 200, "approved", 0));
    assert_eq!(rules(&history, &state), BTreeSet::from([Rule::Doubled, Rule::DoubleCharge]));
    assert_eq!(check(&history.entries, &state).counts[&Kind::Pay].doubled, 1);
}

#[test]
fn the_gateway_charging_one_payment_twice_is_a_double_charge() {
    let (history, mut state) = clean();
    state.ledger.push(charge("pay1", 200, "approved", 0));
    assert_eq!(rules(&history, &state), only(Rule::DoubleCharge));
    assert_eq!(check(&history.entries, &state).counts[&Kind::Pay].doubled, 1);
}

#[test]
fn money_kept_for_a_declined_payment_is_caught() {
    let (mut history, mut state) = clean();
    history.then(place("k6", 1, ok(order("o6", 1, OrderStatus::Ordered)))).then(pay(
        "o6",
        "tok_decline",
        "pk6",
        ok(payment("pay6", "o6", 100, PaymentStatus::Requested, 0)),
    ));
    state.orders.push(paid("o6", 1, OrderStatus::Cancelled, "pay6"));
    state.payments.push(payment("pay6", "o6", 100, PaymentStatus::Declined, 0));
    state.ledger.push(charge("pay6", 100, "card_declined", 0));
    assert!(rules(&history, &state).is_empty(), "declined and not charged is clean");
    state.ledger.pop();
    state.ledger.push(charge("pay6", 100, "approved", 0));
    assert_eq!(rules(&history, &state), only(Rule::ChargeNotApproved));
}

#[test]
fn a_declining_token_that_ends_approved_is_caught() {
    let (mut history, mut state) = clean();
    history.then(place("k6", 1, ok(order("o6", 1, OrderStatus::Ordered)))).then(pay(
        "o6",
        "tok_decline",
        "pk6",
        ok(payment("pay6", "o6", 100, PaymentStatus::Requested, 0)),
    ));
    state.products[0].stock -= 1;
    state.orders.push(paid("o6", 1, OrderStatus::Paid, "pay6"));
    state.payments.push(payment("pay6", "o6", 100, PaymentStatus::Approved, 0));
    state.ledger.push(charge("pay6", 100, "approved", 0));
    assert_eq!(rules(&history, &state), only(Rule::TokenIgnored));
}

#[test]
fn a_gap_in_a_rooms_seq_is_caught() {
    let (history, mut state) = clean();
    // c2 was never acknowledged, so its absence alone is allowed; the hole at seq 2 is not.
    state.rooms[0].messages.retain(|m| m.seq != 2);
    assert_eq!(rules(&history, &state), only(Rule::SeqGap));
}

#[test]
fn two_messages_seen_on_one_seq_are_caught() {
    let (mut history, state) = clean();
    history.then(Call::HistoryRead {
        request: HistoryReadSent { reader: SELLER.into(), room: ROOM.into(), before: Some(3), limit: Some(1) },
        outcome: ok(HistoryPage {
            items: vec![ChatMessage { id: "m-other".into(), ..message(2, SELLER, "something else") }],
            next_before: Some(2),
        }),
    });
    assert_eq!(rules(&history, &state), only(Rule::SeqConflict));
}

#[test]
fn a_message_stored_twice_is_doubled() {
    let (history, mut state) = clean();
    state.rooms[0].messages.push(message(4, BUYER, "hello"));
    assert_eq!(rules(&history, &state), only(Rule::Doubled));
    assert_eq!(check(&history.entries, &state).counts[&Kind::ChatPost].doubled, 1);
}

#[test]
fn a_chat_post_refused_clearly_that_is_stored_anyway_is_doubled() {
    let (mut history, mut state) = clean();
    history.then(post(SELLER, "c4", "refused", Outcome::Fail { status: None, code: "rate_limited".into() }));
    state.rooms[0].messages.push(message(4, SELLER, "refused"));
    assert_eq!(rules(&history, &state), only(Rule::Doubled));
}

#[test]
fn a_message_nobody_posted_is_doubled() {
    let (history, mut state) = clean();
    state.rooms[0].messages.push(message(4, SELLER, "from nowhere"));
    assert_eq!(rules(&history, &state), only(Rule::Doubled));
}

#[test]
fn a_refund_given_back_twice_is_doubled() {
    let (mut history, mut state) = clean();
    // The retry of rk1 must not give back again.
    history.then(Call::Refund {
        request: RefundSent {
            seller: SELLER.into(),
            payment_id: "pay1".into(),
            amount: Some(50),
            idempotency_key: Some("rk1".into()),
        },
        outcome: ok(payment("pay1", "o1", 200, PaymentStatus::Approved, 100)),
    });
    state.payments[0].refunded_amount = 100;
    state.ledger[0].refunded_amount = 100;
    assert_eq!(rules(&history, &state), only(Rule::Doubled));
    assert_eq!(check(&history.entries, &state).counts[&Kind::Refund].doubled, 1);
}

#[test]
fn an_order_seen_paid_then_ordered_is_an_illegal_transition() {
    let (mut history, state) = clean();
    history.then(get_order("o1", ok(order("o1", 2, OrderStatus::Ordered))));
    assert_eq!(rules(&history, &state), only(Rule::IllegalTransition));
}

#[test]
fn reads_that_overlap_may_have_run_in_either_order() {
    let (mut history, state) = clean();
    history.then(get_order("o1", ok(order("o1", 2, OrderStatus::Ordered))));
    // This read was sent before the ones that saw PAYMENT_PENDING (op 6) and PAID (op 7)
    // answered: it may have been served before both.
    let last = history.entries.last_mut().unwrap();
    last.invoke_ns = 605;
    assert!(rules(&history, &state).is_empty());
}

#[test]
fn an_idempotent_retry_answered_with_another_order_is_caught() {
    let (mut history, state) = clean();
    history.then(place("k1", 2, ok(order("o9", 2, OrderStatus::Ordered))));
    assert_eq!(rules(&history, &state), only(Rule::RetryChanged));
}

#[test]
fn a_retried_client_msg_id_acked_with_another_seq_is_caught() {
    let (mut history, state) = clean();
    history.then(post(BUYER, "c1", "hello", Outcome::Ok { status: None, value: ChatAck { seq: 4 } }));
    assert_eq!(rules(&history, &state), only(Rule::RetryChanged));
}

#[test]
fn stock_that_is_not_conserved_is_caught() {
    let (history, mut state) = clean();
    // o3's cancel gave its 3 units back twice.
    state.products[0].stock = 11;
    assert_eq!(rules(&history, &state), only(Rule::StockNotConserved));
}

#[test]
fn an_order_left_payment_pending_is_caught() {
    let (mut history, mut state) = clean();
    history.then(place("k7", 1, ok(order("o7", 1, OrderStatus::Ordered)))).then(pay(
        "o7",
        "tok_ok",
        "pk7",
        indefinite(),
    ));
    state.products[0].stock -= 1;
    state.orders.push(paid("o7", 1, OrderStatus::PaymentPending, "pay7"));
    state.payments.push(payment("pay7", "o7", 100, PaymentStatus::Requested, 0));
    assert_eq!(rules(&history, &state), only(Rule::LeftPending));
}

#[test]
fn check_history_reads_both_files_and_says_whether_the_run_kept_its_promises() {
    let dir = tempfile::tempdir().unwrap();
    let (history, mut state) = clean();
    let history_path = dir.path().join("history.jsonl");
    let lines: Vec<String> = history.entries.iter().map(|e| serde_json::to_string(e).unwrap()).collect();
    std::fs::write(&history_path, lines.join("\n")).unwrap();
    let final_path = dir.path().join("final.json");
    std::fs::write(&final_path, serde_json::to_string(&state).unwrap()).unwrap();
    assert!(crate::faults::check_files(&history_path, &final_path).unwrap());
    state.orders.clear();
    std::fs::write(&final_path, serde_json::to_string(&state).unwrap()).unwrap();
    assert!(!crate::faults::check_files(&history_path, &final_path).unwrap());
    let mut typo = serde_json::to_value(&state).unwrap();
    typo["ledgr"] = serde_json::json!([]);
    std::fs::write(&final_path, typo.to_string()).unwrap();
    assert!(crate::faults::check_files(&history_path, &final_path).is_err(), "an unknown field is an error");
}

#[test]
fn one_entity_version_committed_by_two_writers_is_caught() {
    let (history, mut state) = clean();
    state.versions.push(version("o1", 2, "e9"));
    assert_eq!(rules(&history, &state), only(Rule::TwoWriters));
}
