//! The history of a fault run: one JSON line per operation a client task issued, written when the
//! operation completed (or when the run gave up on it), with what was asked and what came back.
//!
//! Values that came back are kept in the API's own shapes (the `bazaar-protocol` view types), so
//! a client task stores the body it parsed and the checker reads the same fields a client would.

use bazaar_protocol::auth::UserView;
use bazaar_protocol::catalog::Product;
use bazaar_protocol::chat::HistoryPage;
use bazaar_protocol::orders::Order;
use bazaar_protocol::payments::Payment;
use bazaar_protocol::values::Role;
use bazaar_protocol::{OrderId, PaymentId, ProductId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// One operation: who issued it, when, and the call itself (its kind, request and outcome).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Unique in the run.
    pub op: u64,
    /// The client task that issued it; a client issues one operation at a time.
    pub client: u32,
    /// When the request was about to be sent, in monotonic ns since the run started.
    pub invoke_ns: u64,
    /// When its outcome was known (or the run gave up on it), in the same clock.
    pub complete_ns: u64,
    /// What was asked and what came back.
    #[serde(flatten)]
    pub call: Call,
}

/// An operation's kind, its request essentials and its outcome; the kind decides the type of the
/// value an acknowledgement carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Call {
    /// `POST /auth/signup`.
    Signup { request: SignupSent, outcome: Outcome<UserView> },
    /// `POST /products`.
    CreateProduct { request: CreateProductSent, outcome: Outcome<Product> },
    /// `POST /orders` with an `Idempotency-Key`.
    PlaceOrder { request: PlaceOrderSent, outcome: Outcome<Order> },
    /// `GET /orders/{id}`.
    GetOrder { request: GetOrderSent, outcome: Outcome<Order> },
    /// `POST /orders/{id}/cancel`.
    Cancel { request: CancelSent, outcome: Outcome<Order> },
    /// `POST /payments` with an `Idempotency-Key`.
    Pay { request: PaySent, outcome: Outcome<Payment> },
    /// `GET /payments/{id}`.
    GetPayment { request: GetPaymentSent, outcome: Outcome<Payment> },
    /// `POST /payments/{id}/refund`.
    Refund { request: RefundSent, outcome: Outcome<Payment> },
    /// A WebSocket `send` frame; acknowledged by its `ack` frame.
    ChatPost { request: ChatPostSent, outcome: Outcome<ChatAck> },
    /// `GET /chat/rooms/{id}/messages`.
    HistoryRead { request: HistoryReadSent, outcome: Outcome<HistoryPage> },
}

/// What came back: an acknowledgement, a clear refusal, or nothing certain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome<T> {
    /// A 2xx answer (or the WebSocket ack) with its parsed body.
    Ok {
        /// The HTTP status; absent for WebSocket frames.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        value: T,
    },
    /// A 4xx answer (or a WebSocket `error` frame for this request): the operation did not happen.
    Fail {
        /// The HTTP status; absent for WebSocket frames.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        /// The error body's `code`.
        code: String,
    },
    /// A timeout, a reset connection, a 5xx, an unparseable answer or a run that ended first:
    /// the operation may or may not have happened.
    Indefinite {
        /// What was seen instead of an answer, e.g. `timeout`, `connection reset`, `503 unavailable`.
        reason: String,
    },
}

impl<T> Outcome<T> {
    /// The outcome of an error answer: a 4xx is a clear refusal, anything else (a 5xx) leaves the
    /// operation undecided.
    pub fn refused(status: u16, code: impl Into<String>) -> Self {
        let code = code.into();
        if (400..500).contains(&status) {
            Outcome::Fail { status: Some(status), code }
        } else {
            Outcome::Indefinite { reason: format!("{status} {code}") }
        }
    }

    /// The acknowledged value, if any.
    pub fn acknowledged(&self) -> Option<&T> {
        match self {
            Outcome::Ok { value, .. } => Some(value),
            Outcome::Fail { .. } | Outcome::Indefinite { .. } => None,
        }
    }

    /// Whether nothing certain came back.
    pub fn is_indefinite(&self) -> bool {
        matches!(self, Outcome::Indefinite { .. })
    }
}

/// `POST /auth/signup`'s essentials (never the password).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignupSent {
    pub email: String,
    pub role: Role,
}

/// `POST /products`'s essentials. The runner gives every product a name unique in the run: the
/// name is what ties a product created by an unanswered request to that request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateProductSent {
    pub seller: UserId,
    pub name: String,
    pub price: i64,
    /// The initial stock, the base of the conservation check.
    pub stock: i64,
}

/// `POST /orders`'s essentials; retries of one order reuse its key (keys are per buyer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlaceOrderSent {
    pub buyer: UserId,
    pub product_id: ProductId,
    pub quantity: u32,
    pub idempotency_key: String,
}

/// `GET /orders/{id}`'s essentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetOrderSent {
    pub viewer: UserId,
    pub order_id: OrderId,
}

/// `POST /orders/{id}/cancel`'s essentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelSent {
    pub by: UserId,
    pub order_id: OrderId,
}

/// `POST /payments`'s essentials; retries of one payment reuse its key (keys are per buyer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaySent {
    pub buyer: UserId,
    pub order_id: OrderId,
    /// The simulated gateway's card token (`tok_ok`, `tok_decline`, `tok_timeout`, `tok_lost`,
    /// `tok_slow`), which decides what the charge should become.
    pub token: String,
    pub idempotency_key: String,
}

/// `GET /payments/{id}`'s essentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetPaymentSent {
    pub viewer: UserId,
    pub payment_id: PaymentId,
}

/// `POST /payments/{id}/refund`'s essentials: an amount (with its key) or all that is left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefundSent {
    pub seller: UserId,
    pub payment_id: PaymentId,
    /// Absent: all that is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    /// Required with an amount; retries of one refund reuse it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// A chat `send` frame's essentials. Messages in a room's history carry no clientMsgId, so the
/// runner gives every post a text unique in its room (a retry resends the same text): the text
/// is what ties a stored message to its post.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatPostSent {
    pub from: UserId,
    pub room: RoomId,
    pub client_msg_id: String,
    pub text: String,
}

/// A chat `ack` frame's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatAck {
    pub seq: i64,
}

/// `GET /chat/rooms/{id}/messages`'s essentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryReadSent {
    pub reader: UserId,
    pub room: RoomId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Reads a history file: one [`Entry`] per non-empty line.
pub fn read(path: &Path) -> anyhow::Result<Vec<Entry>> {
    let file = File::open(path).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    parse(BufReader::new(file)).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Parses history lines, naming the line of the first one that is not an [`Entry`].
pub fn parse(lines: impl BufRead) -> anyhow::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for (index, line) in lines.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let entry = serde_json::from_str(&line).map_err(|e| anyhow::anyhow!("line {}: {e}", index + 1))?;
        entries.push(entry);
    }
    Ok(entries)
}

/// Appends entries to a history file for many client tasks at once: it hands out operation ids
/// and times on one monotonic clock started with the run, and writes each entry as one line,
/// flushed, so the file holds every completed operation even if the runner itself is killed.
pub struct Recorder {
    started: Instant,
    next_op: AtomicU64,
    out: Mutex<BufWriter<File>>,
}

/// An operation about to be sent: its id, its client and its invoke time.
#[derive(Debug, Clone, Copy)]
pub struct Invocation {
    pub op: u64,
    pub client: u32,
    pub invoke_ns: u64,
}

impl Recorder {
    /// Creates (or truncates) the history file; the run's clock starts now.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            started: Instant::now(),
            next_op: AtomicU64::new(1),
            out: Mutex::new(BufWriter::new(File::create(path)?)),
        })
    }

    /// Monotonic ns since the run started.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Takes an operation id and the invoke time, just before `client` sends the request.
    pub fn invoke(&self, client: u32) -> Invocation {
        Invocation { op: self.next_op.fetch_add(1, Ordering::Relaxed), client, invoke_ns: self.now_ns() }
    }

    /// Records the operation's outcome, completing it now.
    pub fn complete(&self, invocation: Invocation, call: Call) -> std::io::Result<Entry> {
        let entry = Entry {
            op: invocation.op,
            client: invocation.client,
            invoke_ns: invocation.invoke_ns,
            complete_ns: self.now_ns(),
            call,
        };
        let line = serde_json::to_string(&entry).map_err(std::io::Error::other)?;
        // One lock per line: lines of concurrent clients never interleave.
        let mut out = self.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()?;
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_history_reads_back_entry_for_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let recorder = Recorder::create(&path).unwrap();
        let first = recorder.invoke(1);
        let second = recorder.invoke(2);
        let written = vec![
            recorder
                .complete(
                    second,
                    Call::ChatPost {
                        request: ChatPostSent {
                            from: "u1".into(),
                            room: "r1".into(),
                            client_msg_id: "c1".into(),
                            text: "hello".into(),
                        },
                        outcome: Outcome::Ok { status: None, value: ChatAck { seq: 1 } },
                    },
                )
                .unwrap(),
            recorder
                .complete(
                    first,
                    Call::Refund {
                        request: RefundSent {
                            seller: "s1".into(),
                            payment_id: "p1".into(),
                            amount: Some(5),
                            idempotency_key: Some("k".into()),
                        },
                        outcome: Outcome::refused(503, "unavailable"),
                    },
                )
                .unwrap(),
        ];
        assert_eq!(read(&path).unwrap(), written);
        assert_ne!(written[0].op, written[1].op);
        assert!(written.iter().all(|entry| entry.invoke_ns <= entry.complete_ns));
        assert!(matches!(&written[1].call, Call::Refund { outcome, .. } if outcome.is_indefinite()));
    }

    #[test]
    fn a_line_is_flat_json_with_its_kind_and_outcome_type() {
        let line = r#"{"op":7,"client":2,"invokeNs":10,"completeNs":20,"kind":"cancel",
            "request":{"by":"u1","orderId":"o1"},"outcome":{"type":"fail","status":409,"code":"order_not_cancellable"}}"#
            .replace('\n', "");
        let entries = parse(line.as_bytes()).unwrap();
        assert_eq!(
            entries[0].call,
            Call::Cancel {
                request: CancelSent { by: "u1".into(), order_id: "o1".into() },
                outcome: Outcome::Fail { status: Some(409), code: "order_not_cancellable".into() },
            }
        );
        let error = parse("\n{\"op\":1}\n".as_bytes()).unwrap_err().to_string();
        assert!(error.starts_with("line 2:"), "{error}");
    }

    #[test]
    fn a_4xx_is_a_clear_failure_and_a_5xx_is_indefinite() {
        assert_eq!(
            Outcome::<ChatAck>::refused(409, "out_of_stock"),
            Outcome::Fail { status: Some(409), code: "out_of_stock".into() }
        );
        assert!(Outcome::<ChatAck>::refused(503, "unavailable").is_indefinite());
        assert!(Outcome::<ChatAck>::refused(500, "internal").is_indefinite());
    }
}
