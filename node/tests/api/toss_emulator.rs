//! An emulator of the Toss Payments endpoints bazaar's `toss` gateway uses, written from Toss's
//! API reference (version 2022-11-16), served on 127.0.0.1 inside the test process. It is not
//! Toss: the real service cannot be reached from the test machine, so this checks bazaar against
//! Toss's documented protocol:
//!
//! - `POST /v1/billing/{billingKey}`: charges a billing key issued to a customer key (`customerKey`,
//!   `amount`, `orderId`, `orderName`); a second charge of one order number is refused with
//!   `DUPLICATED_ORDER_ID`, a card issued to decline is refused with `REJECT_CARD_PAYMENT`;
//! - `GET /v1/payments/orders/{orderId}`: the order's payment, or 404 `NOT_FOUND_PAYMENT`;
//! - `GET /v1/payments/{paymentKey}`: the payment of that key, or 404 `NOT_FOUND_PAYMENT`;
//! - `POST /v1/payments/{paymentKey}/cancel`: `cancelReason`, optional `cancelAmount`, never more
//!   than what is left.
//!
//! Every request must carry `Authorization: Basic base64(secretKey + ":")`; every POST an
//! `Idempotency-Key` (at most 300 characters), whose repeat is answered with the first answer, as
//! Toss does; a repeat with another body, a second charge of an order under a new key, a missing
//! key or a malformed body is recorded as a violation, which the tests assert never happens.
//! Faults are queued by the test: a slow answer (charged, answered late), a 5xx (nothing charged,
//! nothing remembered), a lost answer (charged, connection closed without a response), a bare
//! 4xx after charging (a proxy's page) and a charge recorded at another amount. An outage makes
//! charges and lookups by order number answer 5xx (lookups by payment key still work), and the
//! test may cancel a payment as Toss's dashboard would, outside bazaar.
//!
//! Webhooks: [`TossEmulator::webhook`] builds the `PAYMENT_STATUS_CHANGED` body Toss posts
//! (`{eventType, createdAt, data: Payment}`) from a payment as it is now; the test posts it to the
//! node, as often and as late as it likes (duplicates, stale copies).

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The secret key the emulator expects (Toss's test keys start with `test_sk_`).
pub const SECRET_KEY: &str = "test_sk_emulator_3Fq9zXb1LmP0";

/// What the emulator does to the next request of one kind instead of answering at once.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Does the work, then answers after this long.
    Slow(Duration),
    /// Answers 500 `FAILED_INTERNAL_SYSTEM_PROCESSING` without doing anything.
    ServerError,
    /// Does the work, then closes the connection without answering.
    LoseResponse,
    /// Does the work, then answers 400 with a body that is not Toss's error object (a proxy's
    /// page), which the node reads as `HTTP_400`.
    BareRefusalAfterCharging,
    /// Records the charge at this many won more than asked, and answers with it.
    ChargeMore(i64),
}

/// One payment as the emulator recorded it.
#[derive(Debug, Clone)]
pub struct TossPayment {
    pub payment_key: String,
    pub order_id: String,
    pub order_name: String,
    pub customer_key: String,
    pub status: &'static str,
    pub total_amount: i64,
    pub balance_amount: i64,
    /// The amounts given back, one per cancel.
    pub cancels: Vec<i64>,
    pub failure: Option<(&'static str, &'static str)>,
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct State {
    /// Billing key → (customer key, whether the card declines).
    billing_keys: HashMap<String, (String, bool)>,
    payments: Vec<TossPayment>,
    /// Idempotency key → (method and path and body, status, answer).
    answered: HashMap<String, (String, u16, Value)>,
    charge_faults: VecDeque<Fault>,
    cancel_faults: VecDeque<Fault>,
    /// Charges and lookups by order number answer 500 (queued faults still go first).
    outage: bool,
    violations: Vec<String>,
    seen: Vec<Seen>,
}

/// The running emulator; stops when dropped.
pub struct TossEmulator {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for TossEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TossEmulator {
    /// Starts the emulator on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding the emulator");
        let addr = listener.local_addr().expect("the emulator's address");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| handle(state.clone(), request));
                    // A lost answer ends the connection with an error: expected.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    /// The base URL to give the node as `BAZAAR_TOSS_API_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Issues a billing key for a customer, as Toss's billing authorization would.
    pub fn issue_billing_key(&self, customer_key: &str) -> String {
        self.issue(customer_key, false)
    }

    /// Issues a billing key whose card the issuer refuses.
    pub fn issue_declining_billing_key(&self, customer_key: &str) -> String {
        self.issue(customer_key, true)
    }

    fn issue(&self, customer_key: &str, declines: bool) -> String {
        let key = format!("bk{}", uuid::Uuid::new_v4().simple());
        self.lock().billing_keys.insert(key.clone(), (customer_key.to_owned(), declines));
        key
    }

    /// Queues faults for the next charges, one per request.
    pub fn fault_next_charges(&self, faults: &[Fault]) {
        self.lock().charge_faults.extend(faults.iter().copied());
    }

    /// Queues faults for the next cancels, one per request.
    pub fn fault_next_cancels(&self, faults: &[Fault]) {
        self.lock().cancel_faults.extend(faults.iter().copied());
    }

    /// Starts or ends an outage of charges and lookups by order number.
    pub fn set_outage(&self, on: bool) {
        self.lock().outage = on;
    }

    /// Cancels `amount` of the order's payment as Toss's dashboard would, outside bazaar.
    pub fn cancel_outside(&self, order_id: &str, amount: i64) {
        let mut state = self.lock();
        let payment = state.payments.iter_mut().find(|p| p.order_id == order_id).expect("a payment for the order");
        assert!(amount <= payment.balance_amount, "cancelling more than is left");
        payment.balance_amount -= amount;
        payment.cancels.push(amount);
        payment.status = if payment.balance_amount == 0 { "CANCELED" } else { "PARTIAL_CANCELED" };
    }

    /// The `PAYMENT_STATUS_CHANGED` webhook body Toss posts for the order's payment as it is now.
    pub fn webhook(&self, order_id: &str) -> Value {
        let state = self.lock();
        let payment = state.payments.iter().find(|p| p.order_id == order_id).expect("a payment for the order");
        json!({
            "eventType": "PAYMENT_STATUS_CHANGED",
            "createdAt": "2026-01-01T00:00:00.000000",
            "data": payment_json(payment),
        })
    }

    /// The payments recorded for an order number (Toss keeps at most one).
    pub fn payments_of(&self, order_id: &str) -> Vec<TossPayment> {
        self.lock().payments.iter().filter(|p| p.order_id == order_id).cloned().collect()
    }

    /// Every request that broke Toss's protocol.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// Every request received, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("the emulator's state")
    }
}

type Answer = Result<Response<Full<Bytes>>, Box<dyn std::error::Error + Send + Sync>>;

fn reply(status: u16, body: &Value) -> Answer {
    Ok(Response::builder()
        .status(StatusCode::from_u16(status)?)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?)
}

fn error_body(code: &str, message: &str) -> Value {
    json!({ "code": code, "message": message })
}

async fn handle(state: Arc<Mutex<State>>, request: Request<Incoming>) -> Answer {
    let (parts, body) = request.into_parts();
    let bytes = body.collect().await?.to_bytes();
    let path = parts.uri.path().to_owned();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let idempotency_key = header("idempotency-key");
    let body: Value =
        if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
    let (status, answer, fault) = {
        let mut state = state.lock().expect("the emulator's state");
        state.seen.push(Seen {
            method: parts.method.to_string(),
            path: path.clone(),
            idempotency_key: idempotency_key.clone(),
            body: body.clone(),
        });
        let expected = format!("Basic {}", base64(format!("{SECRET_KEY}:").as_bytes()));
        if header("authorization").as_deref() != Some(expected.as_str()) {
            state.violations.push(format!("{} {path}: wrong or missing Basic auth", parts.method));
            return reply(401, &error_body("UNAUTHORIZED_KEY", "인증되지 않은 시크릿 키 혹은 클라이언트 키 입니다."));
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (&parts.method, segments.as_slice()) {
            (&Method::GET, ["v1", "payments", "orders", order_id]) => {
                let (status, answer) = match state.payments.iter().find(|p| p.order_id == *order_id) {
                    _ if state.outage => {
                        (500, error_body("FAILED_INTERNAL_SYSTEM_PROCESSING", "내부 시스템 처리 작업이 실패했습니다."))
                    }
                    Some(payment) => (200, payment_json(payment)),
                    None => (404, error_body("NOT_FOUND_PAYMENT", "존재하지 않는 결제 정보 입니다.")),
                };
                (status, answer, None)
            }
            (&Method::GET, ["v1", "payments", payment_key]) => {
                let (status, answer) = match state.payments.iter().find(|p| p.payment_key == *payment_key) {
                    Some(payment) => (200, payment_json(payment)),
                    None => (404, error_body("NOT_FOUND_PAYMENT", "존재하지 않는 결제 정보 입니다.")),
                };
                (status, answer, None)
            }
            (&Method::POST, ["v1", "billing", billing_key]) => {
                let fault = state.charge_faults.pop_front();
                let billing_key = (*billing_key).to_owned();
                let extra = match fault {
                    Some(Fault::ChargeMore(extra)) => extra,
                    _ => 0,
                };
                let (status, answer) = match fault {
                    Some(Fault::ServerError) => {
                        (500, error_body("FAILED_INTERNAL_SYSTEM_PROCESSING", "내부 시스템 처리 작업이 실패했습니다."))
                    }
                    None if state.outage => {
                        (500, error_body("FAILED_INTERNAL_SYSTEM_PROCESSING", "내부 시스템 처리 작업이 실패했습니다."))
                    }
                    _ => idempotent(&mut state, &parts.method, &path, idempotency_key.as_deref(), &body, |state| {
                        charge(state, &billing_key, &body, extra)
                    }),
                };
                (status, answer, fault)
            }
            (&Method::POST, ["v1", "payments", payment_key, "cancel"]) => {
                let fault = state.cancel_faults.pop_front();
                let payment_key = (*payment_key).to_owned();
                let (status, answer) = match fault {
                    Some(Fault::ServerError) => {
                        (500, error_body("FAILED_INTERNAL_SYSTEM_PROCESSING", "내부 시스템 처리 작업이 실패했습니다."))
                    }
                    _ => idempotent(&mut state, &parts.method, &path, idempotency_key.as_deref(), &body, |state| {
                        cancel(state, &payment_key, &body)
                    }),
                };
                (status, answer, fault)
            }
            _ => {
                state.violations.push(format!("{} {path}: not an endpoint bazaar should call", parts.method));
                (404, error_body("NOT_FOUND", "존재하지 않는 정보 입니다."), None)
            }
        }
    };
    match fault {
        Some(Fault::Slow(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::LoseResponse) => return Err("the answer is lost".into()),
        Some(Fault::BareRefusalAfterCharging) => {
            return Ok(Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .header("content-type", "text/html")
                .body(Full::new(Bytes::from_static(b"<html>400 Bad Request</html>")))?);
        }
        Some(Fault::ServerError | Fault::ChargeMore(_)) | None => {}
    }
    reply(status, &answer)
}

/// Runs `work` once per idempotency key; a repeat gets the first answer. Toss keeps a key's
/// answer; a 5xx that did nothing is not kept (so a retry with the key is processed).
fn idempotent(
    state: &mut State,
    method: &Method,
    path: &str,
    key: Option<&str>,
    body: &Value,
    work: impl FnOnce(&mut State) -> (u16, Value),
) -> (u16, Value) {
    let Some(key) = key.filter(|k| !k.is_empty() && k.len() <= 300) else {
        state.violations.push(format!("{method} {path}: no valid Idempotency-Key on a call that moves money"));
        return (400, error_body("INVALID_REQUEST", "잘못된 요청입니다."));
    };
    let fingerprint = format!("{method} {path} {body}");
    if let Some((earlier, status, answer)) = state.answered.get(key) {
        if *earlier != fingerprint {
            let violation = format!("Idempotency-Key {key} reused for another request: {fingerprint}");
            state.violations.push(violation);
            return (422, error_body("INVALID_REQUEST", "잘못된 요청입니다."));
        }
        return (*status, answer.clone());
    }
    let (status, answer) = work(state);
    state.answered.insert(key.to_owned(), (fingerprint, status, answer.clone()));
    (status, answer)
}

fn charge(state: &mut State, billing_key: &str, body: &Value, extra: i64) -> (u16, Value) {
    let customer_key = body["customerKey"].as_str().unwrap_or_default().to_owned();
    let amount = body["amount"].as_i64().unwrap_or(0);
    let order_id = body["orderId"].as_str().unwrap_or_default().to_owned();
    let order_name = body["orderName"].as_str().unwrap_or_default().to_owned();
    let order_id_ok = (6..=64).contains(&order_id.len())
        && order_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !(2..=300).contains(&customer_key.len())
        || amount <= 0
        || body["amount"].as_f64().is_some_and(|a| a.fract() != 0.0)
        || !order_id_ok
        || order_name.is_empty()
        || order_name.chars().count() > 100
    {
        state.violations.push(format!("billing charge with a malformed body: {body}"));
        return (400, error_body("INVALID_REQUEST", "잘못된 요청입니다."));
    }
    let Some((owner, declines)) = state.billing_keys.get(billing_key).cloned() else {
        return (404, error_body("NOT_FOUND", "존재하지 않는 정보 입니다."));
    };
    if owner != customer_key {
        return (
            400,
            error_body("NOT_MATCHES_CUSTOMER_KEY", "빌링 인증 고객키와 결제 요청 고객키가 일치하지 않습니다."),
        );
    }
    if state.payments.iter().any(|p| p.order_id == order_id) {
        // Toss refuses it; for bazaar it means a charge was repeated under a new key.
        state.violations.push(format!("order {order_id} charged again under a new Idempotency-Key"));
        return (400, error_body("DUPLICATED_ORDER_ID", "이미 승인 및 취소가 진행된 중복된 주문번호 입니다."));
    }
    let mut payment = TossPayment {
        payment_key: format!("tpk{}", uuid::Uuid::new_v4().simple()),
        order_id,
        order_name,
        customer_key,
        status: "DONE",
        total_amount: amount + extra,
        balance_amount: amount + extra,
        cancels: Vec::new(),
        failure: None,
    };
    if declines {
        let failure = ("REJECT_CARD_PAYMENT", "한도초과 혹은 잔액부족으로 결제에 실패했습니다.");
        payment.status = "ABORTED";
        payment.failure = Some(failure);
        state.payments.push(payment);
        return (403, error_body(failure.0, failure.1));
    }
    let answer = payment_json(&payment);
    state.payments.push(payment);
    (200, answer)
}

fn cancel(state: &mut State, payment_key: &str, body: &Value) -> (u16, Value) {
    let reason = body["cancelReason"].as_str().unwrap_or_default();
    let amount = &body["cancelAmount"];
    if reason.is_empty()
        || reason.chars().count() > 200
        || !(amount.is_null() || amount.as_i64().is_some_and(|a| a > 0))
    {
        state.violations.push(format!("cancel with a malformed body: {body}"));
        return (400, error_body("INVALID_REQUEST", "잘못된 요청입니다."));
    }
    let Some(payment) = state.payments.iter_mut().find(|p| p.payment_key == payment_key) else {
        return (404, error_body("NOT_FOUND_PAYMENT", "존재하지 않는 결제 정보 입니다."));
    };
    match payment.status {
        "CANCELED" => return (400, error_body("ALREADY_CANCELED_PAYMENT", "이미 취소된 결제 입니다.")),
        "DONE" | "PARTIAL_CANCELED" => {}
        _ => return (403, error_body("NOT_CANCELABLE_PAYMENT", "취소 할 수 없는 결제 입니다.")),
    }
    let amount = amount.as_i64().unwrap_or(payment.balance_amount);
    if amount > payment.balance_amount {
        return (403, error_body("NOT_CANCELABLE_AMOUNT", "취소 할 수 없는 금액 입니다."));
    }
    payment.balance_amount -= amount;
    payment.cancels.push(amount);
    payment.status = if payment.balance_amount == 0 { "CANCELED" } else { "PARTIAL_CANCELED" };
    (200, payment_json(payment))
}

/// Toss's Payment object, with the fields a billing payment has.
fn payment_json(payment: &TossPayment) -> Value {
    json!({
        "mId": "tvivarepublica",
        "version": "2022-11-16",
        "paymentKey": payment.payment_key,
        "type": "BILLING",
        "orderId": payment.order_id,
        "orderName": payment.order_name,
        "currency": "KRW",
        "method": "카드",
        "status": payment.status,
        "totalAmount": payment.total_amount,
        "balanceAmount": payment.balance_amount,
        "cancels": if payment.cancels.is_empty() {
            Value::Null
        } else {
            payment.cancels.iter().map(|a| json!({"cancelAmount": a, "cancelReason": "requested"})).collect()
        },
        "failure": payment.failure.map(|(code, message)| json!({"code": code, "message": message})),
    })
}

/// Standard base64 with padding (what HTTP Basic auth uses).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_matches_the_basic_auth_example_of_tosss_docs() {
    // Toss's docs show this header for the test key `test_sk_zXLkKEypNArWmo50nX3lmeaxYG5R`.
    assert_eq!(
        base64(b"test_sk_zXLkKEypNArWmo50nX3lmeaxYG5R:"),
        "dGVzdF9za196WExrS0V5cE5BcldtbzUwblgzbG1lYXhZRzVSOg=="
    );
}
