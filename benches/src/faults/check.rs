//! The checker: plain functions over a history and the final state that name every way the run
//! broke a promise of the API (a lost or doubled write, a double charge, stock not conserved, an
//! illegal status path, a gap or a conflict in a room's seq, a retry answered differently, an
//! order left pending) and count the operations by kind and outcome.
//!
//! Writes are tied to their requests by what the API gives back: orders and payments by the ids
//! acknowledgements carry (and, for the ones no answer named, by counting them against the
//! requests left undecided), products by their unique name, chat messages by their unique text.

use super::final_state::{FinalState, LedgerCharge, RoomHistory};
use super::history::{Call, ChatAck, ChatPostSent, CreateProductSent, Entry, Outcome, PaySent, PlaceOrderSent};
use bazaar_protocol::catalog::Product;
use bazaar_protocol::chat::ChatMessage;
use bazaar_protocol::orders::{Order, OrderStatus};
use bazaar_protocol::payments::{Payment, PaymentStatus};
use bazaar_protocol::{OrderId, PaymentId, ProductId, RoomId, UserId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Debug, Write as _};

/// An operation's kind, the rows of the results table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Signup,
    CreateProduct,
    PlaceOrder,
    GetOrder,
    Cancel,
    Pay,
    GetPayment,
    Refund,
    ChatPost,
    HistoryRead,
}

impl Kind {
    /// The spelling of the history's `kind` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Signup => "signup",
            Kind::CreateProduct => "create_product",
            Kind::PlaceOrder => "place_order",
            Kind::GetOrder => "get_order",
            Kind::Cancel => "cancel",
            Kind::Pay => "pay",
            Kind::GetPayment => "get_payment",
            Kind::Refund => "refund",
            Kind::ChatPost => "chat_post",
            Kind::HistoryRead => "history_read",
        }
    }
}

/// One row of the results table: operations issued and how they ended, and the writes the final
/// state lost or doubled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub issued: u64,
    pub acknowledged: u64,
    pub failed_clearly: u64,
    pub indefinite: u64,
    /// Acknowledged writes missing from the final state (or given back less than acknowledged).
    pub lost: u64,
    /// Writes the final state holds more often than their requests allow: twice, although every
    /// request for it failed clearly, or with no request at all.
    pub doubled: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.issued += other.issued;
        self.acknowledged += other.acknowledged;
        self.failed_clearly += other.failed_clearly;
        self.indefinite += other.indefinite;
        self.lost += other.lost;
        self.doubled += other.doubled;
    }
}

/// Which promise a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// An acknowledged write is missing from the final state.
    Lost,
    /// A write exists more often than its requests allow.
    Doubled,
    /// A retry with the same idempotency key or clientMsgId answered other than the first answer.
    RetryChanged,
    /// The gateway charged one order more than once.
    DoubleCharge,
    /// The gateway kept money for a payment that is not APPROVED (or REFUNDED, refunds counted).
    ChargeNotApproved,
    /// The gateway's ledger and the payment disagree on what was charged or given back.
    LedgerMismatch,
    /// A token that never charges (`tok_decline`, `tok_timeout`) ended in an approved payment.
    TokenIgnored,
    /// A product's initial stock is not its stock on hand plus the units open and paid orders hold.
    StockNotConserved,
    /// Observed statuses of an order or payment, in real-time order, are not a legal path.
    IllegalTransition,
    /// A room's seqs are not 1, 2, ... without a hole.
    SeqGap,
    /// One seq carried two different messages, or a message is stored at another seq than acked.
    SeqConflict,
    /// An order still PAYMENT_PENDING, or a payment still REQUESTED, after the faults healed.
    LeftPending,
    /// An order and its payment (or an acknowledgement and the stored row) disagree.
    Disagreement,
    /// One version of an entity was committed by two different events: two writers.
    TwoWriters,
    /// The history breaks a promise the runner makes (unique product names, unique chat texts).
    Malformed,
}

/// One broken promise, with what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: Rule,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.rule, self.message)
    }
}

/// What the checker found: counts per kind and every violation.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub counts: BTreeMap<Kind, Counts>,
    pub violations: Vec<Violation>,
}

impl Report {
    /// The counts over every kind.
    pub fn total(&self) -> Counts {
        let mut total = Counts::default();
        for counts in self.counts.values() {
            total.add(counts);
        }
        total
    }

    /// The rules broken, each once, in a fixed order.
    #[cfg(test)]
    pub fn rules(&self) -> std::collections::BTreeSet<Rule> {
        self.violations.iter().map(|v| v.rule).collect()
    }

    /// The results table (one row per kind seen, and the total), then the violations.
    pub fn table(&self) -> String {
        let headers = ["operation", "issued", "acknowledged", "failed clearly", "indefinite", "lost", "doubled"];
        let row = |name: &str, c: &Counts| {
            [
                name.to_owned(),
                c.issued.to_string(),
                c.acknowledged.to_string(),
                c.failed_clearly.to_string(),
                c.indefinite.to_string(),
                c.lost.to_string(),
                c.doubled.to_string(),
            ]
        };
        let mut rows: Vec<[String; 7]> = self.counts.iter().map(|(kind, c)| row(kind.as_str(), c)).collect();
        rows.push(row("total", &self.total()));
        let widths: Vec<usize> = (0..headers.len())
            .map(|i| rows.iter().map(|r| r[i].len()).chain([headers[i].len()]).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        let line = |out: &mut String, cells: &[&str]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (cell, w))| if i == 0 { format!("{cell:<w$}") } else { format!("{cell:>w$}") })
                .collect();
            let _ = writeln!(out, "| {} |", padded.join(" | "));
        };
        line(&mut out, &headers);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        let _ = writeln!(out, "|-{}-|", rule.join("-|-"));
        for r in &rows {
            line(&mut out, &r.iter().map(String::as_str).collect::<Vec<_>>());
        }
        if self.violations.is_empty() {
            out.push_str("\nno violations\n");
        } else {
            let _ = writeln!(out, "\nviolations ({}):", self.violations.len());
            for v in &self.violations {
                let _ = writeln!(out, "- {v}");
            }
        }
        out
    }
}

/// Where one product's units are: what was put up is on hand, held by an open order, or sold;
/// cancelled and refunded orders gave theirs back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockBalance<'a> {
    pub product: &'a ProductId,
    pub created: i64,
    pub on_hand: i64,
    pub reserved: i64,
    pub sold: i64,
}

impl StockBalance<'_> {
    /// Whether every unit put up is accounted for.
    pub fn conserved(&self) -> bool {
        self.created == self.on_hand + self.reserved + self.sold
    }
}

impl fmt::Display for StockBalance<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "created with {}, now {} on hand + {} reserved + {} sold = {}",
            self.created,
            self.on_hand,
            self.reserved,
            self.sold,
            self.on_hand + self.reserved + self.sold
        )
    }
}

/// The stock balance of every final product a create request in `history` explains.
pub fn stock_balances<'a>(history: &'a [Entry], state: &'a FinalState) -> Vec<StockBalance<'a>> {
    let initial: HashMap<(&UserId, &str), i64> = history
        .iter()
        .filter_map(|entry| match &entry.call {
            Call::CreateProduct { request, .. } => Some(((&request.seller, request.name.as_str()), request.stock)),
            _ => None,
        })
        .collect();
    // By id: an order listed twice is the checker's `listed_once` finding, not twice the units.
    let orders: BTreeMap<&OrderId, &Order> = state.orders.iter().map(|o| (&o.id, o)).collect();
    let mut balances = Vec::new();
    for product in &state.products {
        let Some(&created) = initial.get(&(&product.seller_id, product.name.as_str())) else { continue };
        let (mut reserved, mut sold) = (0_i64, 0_i64);
        for order in orders.values().filter(|o| o.product_id == product.id) {
            match order.status {
                OrderStatus::Ordered | OrderStatus::PaymentPending => reserved += i64::from(order.quantity),
                OrderStatus::Paid => sold += i64::from(order.quantity),
                OrderStatus::Refunded | OrderStatus::Cancelled => {}
            }
        }
        balances.push(StockBalance { product: &product.id, created, on_hand: product.stock, reserved, sold });
    }
    balances
}

/// Checks a history against the final state read after the faults healed.
pub fn check(history: &[Entry], state: &FinalState) -> Report {
    let mut checker = Checker { history, state, report: Report::default() };
    checker.count();
    checker.products();
    checker.orders();
    checker.payments();
    checker.orders_and_payments();
    checker.refunds();
    checker.ledger();
    checker.statuses();
    checker.chat();
    checker.versions();
    checker.report
}

/// How an operation ended, for the counts.
enum Ended {
    Acknowledged,
    FailedClearly,
    Indefinite,
}

fn ended<T>(outcome: &Outcome<T>) -> Ended {
    match outcome {
        Outcome::Ok { .. } => Ended::Acknowledged,
        Outcome::Fail { .. } => Ended::FailedClearly,
        Outcome::Indefinite { .. } => Ended::Indefinite,
    }
}

fn kind_and_end(call: &Call) -> (Kind, Ended) {
    match call {
        Call::Signup { outcome, .. } => (Kind::Signup, ended(outcome)),
        Call::CreateProduct { outcome, .. } => (Kind::CreateProduct, ended(outcome)),
        Call::PlaceOrder { outcome, .. } => (Kind::PlaceOrder, ended(outcome)),
        Call::GetOrder { outcome, .. } => (Kind::GetOrder, ended(outcome)),
        Call::Cancel { outcome, .. } => (Kind::Cancel, ended(outcome)),
        Call::Pay { outcome, .. } => (Kind::Pay, ended(outcome)),
        Call::GetPayment { outcome, .. } => (Kind::GetPayment, ended(outcome)),
        Call::Refund { outcome, .. } => (Kind::Refund, ended(outcome)),
        Call::ChatPost { outcome, .. } => (Kind::ChatPost, ended(outcome)),
        Call::HistoryRead { outcome, .. } => (Kind::HistoryRead, ended(outcome)),
    }
}

/// The requests of one logical write (one key, one name, one clientMsgId) and their outcomes.
struct Attempts<'a, R, T> {
    tries: Vec<(&'a Entry, &'a R, &'a Outcome<T>)>,
}

impl<'a, R, T> Default for Attempts<'a, R, T> {
    fn default() -> Self {
        Self { tries: Vec::new() }
    }
}

impl<'a, R, T> Attempts<'a, R, T> {
    /// The acknowledged values, first answer first.
    fn acks(&self) -> Vec<(&'a Entry, &'a T)> {
        let mut acks: Vec<_> =
            self.tries.iter().filter_map(|(entry, _, outcome)| outcome.acknowledged().map(|v| (*entry, v))).collect();
        acks.sort_by_key(|(entry, _)| (entry.complete_ns, entry.op));
        acks
    }

    /// Whether some request got no certain answer.
    fn any_indefinite(&self) -> bool {
        self.tries.iter().any(|(_, _, outcome)| outcome.is_indefinite())
    }

    /// The first request's essentials.
    fn request(&self) -> &'a R {
        self.tries[0].1
    }
}

/// A status seen by a completed read (or the final state, at the end of time).
#[derive(Debug, Clone, Copy)]
struct Seen<S> {
    status: S,
    invoke_ns: u64,
    complete_ns: u64,
    /// The operation that saw it; `None` for the final state.
    op: Option<u64>,
}

impl<S> Seen<S> {
    fn by(entry: &Entry, status: S) -> Self {
        Self { status, invoke_ns: entry.invoke_ns, complete_ns: entry.complete_ns, op: Some(entry.op) }
    }

    fn last(status: S) -> Self {
        Self { status, invoke_ns: u64::MAX, complete_ns: u64::MAX, op: None }
    }

    fn who(&self) -> String {
        match self.op {
            Some(op) => format!("op {op}"),
            None => "the final state".to_owned(),
        }
    }
}

/// Whether `to` can follow `from` in zero or more legal steps of `step`.
fn reachable<S: Copy + Eq>(from: S, to: S, all: &[S], step: fn(S, S) -> bool) -> bool {
    let mut seen = vec![from];
    let mut next = vec![from];
    while let Some(at) = next.pop() {
        if at == to {
            return true;
        }
        for &candidate in all {
            if step(at, candidate) && !seen.contains(&candidate) {
                seen.push(candidate);
                next.push(candidate);
            }
        }
    }
    false
}

/// The first pair of observations, the earlier one completed before the later one was sent,
/// whose statuses are not joined by a legal path. Overlapping reads may have run in either order,
/// so they are not compared.
fn illegal_step<S: Copy + Eq>(seen: &[Seen<S>], all: &[S], step: fn(S, S) -> bool) -> Option<(Seen<S>, Seen<S>)> {
    for earlier in seen {
        for later in seen {
            if earlier.complete_ns < later.invoke_ns && !reachable(earlier.status, later.status, all, step) {
                return Some((*earlier, *later));
            }
        }
    }
    None
}

fn order_essentials(order: &Order) -> (&OrderId, &UserId, &ProductId, u32, i64) {
    (&order.id, &order.buyer_id, &order.product_id, order.quantity, order.amount)
}

struct Checker<'a> {
    history: &'a [Entry],
    state: &'a FinalState,
    report: Report,
}

impl<'a> Checker<'a> {
    fn flag(&mut self, rule: Rule, message: String) {
        self.report.violations.push(Violation { rule, message });
    }

    fn lost(&mut self, kind: Kind, message: String) {
        self.report.counts.entry(kind).or_default().lost += 1;
        self.flag(Rule::Lost, message);
    }

    fn doubled(&mut self, kind: Kind, extra: u64, message: String) {
        self.report.counts.entry(kind).or_default().doubled += extra;
        self.flag(Rule::Doubled, message);
    }

    /// Each id of the final state's list appears once; a copy is a doubled write.
    fn listed_once<'s, K: Ord + std::fmt::Display + 's>(
        &mut self,
        kind: Kind,
        what: &str,
        ids: impl Iterator<Item = &'s K>,
    ) {
        let mut listed: BTreeMap<&K, usize> = BTreeMap::new();
        for id in ids {
            *listed.entry(id).or_default() += 1;
        }
        for (id, copies) in listed {
            if copies > 1 {
                self.doubled(kind, (copies - 1) as u64, format!("{what} {id} is in the final state {copies} times"));
            }
        }
    }

    fn count(&mut self) {
        for entry in self.history {
            let (kind, end) = kind_and_end(&entry.call);
            let counts = self.report.counts.entry(kind).or_default();
            counts.issued += 1;
            match end {
                Ended::Acknowledged => counts.acknowledged += 1,
                Ended::FailedClearly => counts.failed_clearly += 1,
                Ended::Indefinite => counts.indefinite += 1,
            }
        }
    }

    /// Orders in the final state by id, each once (a second copy is reported by [`Self::orders`]).
    fn final_orders(&self) -> BTreeMap<&'a OrderId, &'a Order> {
        self.state.orders.iter().map(|o| (&o.id, o)).collect()
    }

    /// No entity version carries two events: the version check let only one writer commit it.
    fn versions(&mut self) {
        let mut seen: BTreeMap<(&str, i64), Vec<&str>> = BTreeMap::new();
        for version in &self.state.versions {
            seen.entry((&version.entity_id, version.seq)).or_default().push(&version.event_id);
        }
        for ((entity, seq), events) in seen {
            if events.len() > 1 {
                self.flag(
                    Rule::TwoWriters,
                    format!(
                        "entity {entity}: version {seq} was committed {} times (events {})",
                        events.len(),
                        events.join(", ")
                    ),
                );
            }
        }
    }

    fn final_payments(&self) -> BTreeMap<&'a PaymentId, &'a Payment> {
        self.state.payments.iter().map(|p| (&p.id, p)).collect()
    }

    /// The initial stock of every final product a create request explains, by product id.
    fn products(&mut self) {
        let mut creates: BTreeMap<(&UserId, &str), Attempts<CreateProductSent, Product>> = BTreeMap::new();
        for entry in self.history {
            if let Call::CreateProduct { request, outcome } = &entry.call {
                creates.entry((&request.seller, &request.name)).or_default().tries.push((entry, request, outcome));
            }
        }
        let mut stored: BTreeMap<(&UserId, &str), Vec<&Product>> = BTreeMap::new();
        for product in &self.state.products {
            stored.entry((&product.seller_id, &product.name)).or_default().push(product);
        }
        for ((seller, name), attempts) in &creates {
            if attempts.tries.len() > 1 {
                self.flag(
                    Rule::Malformed,
                    format!(
                        "seller {seller} sent {} creates named {name:?}: names must be unique",
                        attempts.tries.len()
                    ),
                );
            }
            let found = stored.get(&(*seller, *name)).map_or(&[][..], Vec::as_slice);
            let acks = attempts.acks();
            match acks.first() {
                Some((entry, acked)) if !found.iter().any(|p| p.id == acked.id) => self.lost(
                    Kind::CreateProduct,
                    format!(
                        "product {} ({name:?}) acknowledged to op {} is not in the final state",
                        acked.id, entry.op
                    ),
                ),
                Some(_) | None => {}
            }
            let allowed = usize::from(!acks.is_empty() || attempts.any_indefinite());
            if found.len() > allowed {
                let ids: Vec<&str> = found.iter().map(|p| p.id.as_str()).collect();
                self.doubled(
                    Kind::CreateProduct,
                    (found.len() - allowed) as u64,
                    format!(
                        "seller {seller} has {} products named {name:?} ({}) where its requests allow {allowed}",
                        found.len(),
                        ids.join(", ")
                    ),
                );
            }
        }
        for ((seller, name), found) in &stored {
            if !creates.contains_key(&(*seller, *name)) {
                self.doubled(
                    Kind::CreateProduct,
                    found.len() as u64,
                    format!("seller {seller} has product {} named {name:?} that no request created", found[0].id),
                );
            }
        }
        for balance in stock_balances(self.history, self.state) {
            if !balance.conserved() {
                self.flag(Rule::StockNotConserved, format!("product {}: {balance}", balance.product));
            }
        }
    }

    fn orders(&mut self) {
        let state = self.state;
        self.listed_once(Kind::PlaceOrder, "order", state.orders.iter().map(|order| &order.id));
        let stored = self.final_orders();
        let mut keys: BTreeMap<(&UserId, &str), Attempts<PlaceOrderSent, Order>> = BTreeMap::new();
        for entry in self.history {
            if let Call::PlaceOrder { request, outcome } = &entry.call {
                keys.entry((&request.buyer, &request.idempotency_key))
                    .or_default()
                    .tries
                    .push((entry, request, outcome));
            }
        }
        let mut answered: HashSet<&OrderId> = HashSet::new();
        let mut undecided: HashMap<(&UserId, &ProductId), usize> = HashMap::new();
        for ((buyer, key), attempts) in &keys {
            let acks = attempts.acks();
            answered.extend(acks.iter().map(|(_, order)| &order.id));
            let Some(&(first_entry, first)) = acks.first() else {
                if attempts.any_indefinite() {
                    *undecided.entry((buyer, &attempts.request().product_id)).or_default() += 1;
                }
                continue;
            };
            for (entry, retry) in &acks[1..] {
                if order_essentials(retry) != order_essentials(first) {
                    self.flag(
                        Rule::RetryChanged,
                        format!(
                            "buyer {buyer} key {key:?}: op {} was answered order {:?}, its retry op {} order {:?}",
                            first_entry.op,
                            order_essentials(first),
                            entry.op,
                            order_essentials(retry)
                        ),
                    );
                }
            }
            match stored.get(&first.id) {
                None => self.lost(
                    Kind::PlaceOrder,
                    format!("order {} acknowledged to op {} is not in the final state", first.id, first_entry.op),
                ),
                Some(found) if order_essentials(found) != order_essentials(first) => self.flag(
                    Rule::Disagreement,
                    format!(
                        "order {} was acknowledged as {:?} and is stored as {:?}",
                        first.id,
                        order_essentials(first),
                        order_essentials(found)
                    ),
                ),
                Some(_) => {}
            }
        }
        // Orders no answer named can only come from requests left undecided, one each.
        let mut unnamed: BTreeMap<(&UserId, &ProductId), Vec<&OrderId>> = BTreeMap::new();
        for order in stored.values().filter(|o| !answered.contains(&o.id)) {
            unnamed.entry((&order.buyer_id, &order.product_id)).or_default().push(&order.id);
        }
        for ((buyer, product), ids) in unnamed {
            let allowed = undecided.get(&(buyer, product)).copied().unwrap_or(0);
            if ids.len() > allowed {
                let ids: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
                self.doubled(
                    Kind::PlaceOrder,
                    (ids.len() - allowed) as u64,
                    format!(
                        "buyer {buyer} has {} orders of product {product} no answer named ({}), and only {allowed} \
                         undecided requests",
                        ids.len(),
                        ids.join(", ")
                    ),
                );
            }
        }
    }

    fn payments(&mut self) {
        let state = self.state;
        self.listed_once(Kind::Pay, "payment", state.payments.iter().map(|payment| &payment.id));
        let stored = self.final_payments();
        let mut keys: BTreeMap<(&UserId, &str), Attempts<PaySent, Payment>> = BTreeMap::new();
        for entry in self.history {
            if let Call::Pay { request, outcome } = &entry.call {
                keys.entry((&request.buyer, &request.idempotency_key))
                    .or_default()
                    .tries
                    .push((entry, request, outcome));
            }
        }
        let essentials = |p: &Payment| (p.id.clone(), p.order_id.clone(), p.amount);
        // The token each stored payment was asked with, where one request explains it.
        let mut tokens: HashMap<&PaymentId, &str> = HashMap::new();
        let mut undecided: HashMap<&OrderId, Vec<&str>> = HashMap::new();
        for ((buyer, key), attempts) in &keys {
            let acks = attempts.acks();
            for (_, payment) in &acks {
                tokens.insert(&payment.id, &attempts.request().token);
            }
            let Some(&(first_entry, first)) = acks.first() else {
                if attempts.any_indefinite() {
                    undecided.entry(&attempts.request().order_id).or_default().push(&attempts.request().token);
                }
                continue;
            };
            for (entry, retry) in &acks[1..] {
                if essentials(retry) != essentials(first) {
                    self.flag(
                        Rule::RetryChanged,
                        format!(
                            "buyer {buyer} key {key:?}: op {} was answered payment {:?}, its retry op {} payment {:?}",
                            first_entry.op,
                            essentials(first),
                            entry.op,
                            essentials(retry)
                        ),
                    );
                }
            }
            if !stored.contains_key(&first.id) {
                self.lost(
                    Kind::Pay,
                    format!("payment {} acknowledged to op {} is not in the final state", first.id, first_entry.op),
                );
            }
        }
        let mut per_order: BTreeMap<&OrderId, Vec<&PaymentId>> = BTreeMap::new();
        for payment in stored.values() {
            per_order.entry(paid_order(payment)).or_default().push(&payment.id);
        }
        for (order, ids) in &per_order {
            if ids.len() > 1 {
                let ids: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
                self.doubled(
                    Kind::Pay,
                    (ids.len() - 1) as u64,
                    format!("order {order} has {} payments ({})", ids.len(), ids.join(", ")),
                );
            }
        }
        for payment in stored.values() {
            // A second payment of one order is counted once, above.
            let alone = per_order.get(paid_order(payment)).is_none_or(|ids| ids.len() == 1);
            if !tokens.contains_key(&payment.id) {
                match undecided.get(paid_order(payment)) {
                    None if !alone => {}
                    None => self.doubled(
                        Kind::Pay,
                        1,
                        format!("payment {} of order {} answers no request", payment.id, paid_order(payment)),
                    ),
                    Some(asked) if asked.iter().all(|t| *t == asked[0]) => {
                        tokens.insert(&payment.id, asked[0]);
                    }
                    Some(_) => {}
                }
            }
            if payment.status == PaymentStatus::Requested {
                self.flag(Rule::LeftPending, format!("payment {} is still REQUESTED", payment.id));
            }
            let never_charges = matches!(tokens.get(&payment.id), Some(&("tok_decline" | "tok_timeout")));
            let charged = match payment.status {
                PaymentStatus::Approved | PaymentStatus::Refunded => true,
                PaymentStatus::Requested | PaymentStatus::Declined => false,
            };
            if never_charges && charged {
                self.flag(
                    Rule::TokenIgnored,
                    format!("payment {} with {} ended {}", payment.id, tokens[&payment.id], payment.status.as_str()),
                );
            }
        }
    }

    /// An order's status and its payment's status go together, and so do a payment's status and
    /// its refunded amount.
    fn orders_and_payments(&mut self) {
        let orders = self.final_orders();
        let payments = self.final_payments();
        let mut of_order: HashMap<&OrderId, Vec<&Payment>> = HashMap::new();
        for payment in payments.values() {
            of_order.entry(paid_order(payment)).or_default().push(payment);
        }
        for order in orders.values() {
            let paying = of_order.get(&order.id).map_or(&[][..], Vec::as_slice);
            let expected: &[PaymentStatus] = match order.status {
                OrderStatus::PaymentPending => {
                    self.flag(Rule::LeftPending, format!("order {} is still PAYMENT_PENDING", order.id));
                    continue;
                }
                // An order starts its payment as it leaves ORDERED.
                OrderStatus::Ordered => &[],
                OrderStatus::Cancelled => &[PaymentStatus::Declined],
                OrderStatus::Paid => &[PaymentStatus::Approved],
                OrderStatus::Refunded => &[PaymentStatus::Refunded],
            };
            for payment in paying {
                if !expected.contains(&payment.status) {
                    self.flag(
                        Rule::Disagreement,
                        format!(
                            "order {} is {} but its payment {} is {}",
                            order.id,
                            order.status.as_str(),
                            payment.id,
                            payment.status.as_str()
                        ),
                    );
                }
            }
            let settled = matches!(order.status, OrderStatus::Paid | OrderStatus::Refunded);
            let named = order.payment_id.as_ref().and_then(|id| payments.get(id));
            if settled && named.is_none_or(|p| paid_order(p) != &order.id) {
                self.flag(
                    Rule::Disagreement,
                    format!(
                        "order {} is {} but names no payment of its own ({:?})",
                        order.id,
                        order.status.as_str(),
                        order.payment_id
                    ),
                );
            }
        }
        for payment in payments.values() {
            match orders.get(paid_order(payment)) {
                None => self.flag(
                    Rule::Disagreement,
                    format!(
                        "payment {} pays order {}, which is not in the final state",
                        payment.id,
                        paid_order(payment)
                    ),
                ),
                Some(order) if order.amount != payment.amount => self.flag(
                    Rule::Disagreement,
                    format!(
                        "payment {} is for {} but its order {} costs {}",
                        payment.id, payment.amount, order.id, order.amount
                    ),
                ),
                Some(_) => {}
            }
            let consistent = match payment.status {
                PaymentStatus::Requested | PaymentStatus::Declined => payment.refunded_amount == 0,
                PaymentStatus::Approved => (0..payment.amount).contains(&payment.refunded_amount),
                PaymentStatus::Refunded => payment.refunded_amount == payment.amount,
            };
            if !consistent {
                self.flag(
                    Rule::Disagreement,
                    format!(
                        "payment {} is {} with {} of {} refunded",
                        payment.id,
                        payment.status.as_str(),
                        payment.refunded_amount,
                        payment.amount
                    ),
                );
            }
        }
    }

    /// What a payment gave back lies between what acknowledged refunds gave and what they and the
    /// undecided ones could have; a retried key gives back once.
    fn refunds(&mut self) {
        #[derive(Default)]
        struct Asked {
            /// Amount per key, acknowledged.
            acked: BTreeMap<String, i64>,
            /// Amount per key, left undecided (and not acknowledged by a retry).
            undecided: BTreeMap<String, i64>,
            /// A refund of all that is left was acknowledged, or left undecided.
            all_acked: bool,
            all_undecided: bool,
        }
        let mut asked: HashMap<&PaymentId, Asked> = HashMap::new();
        for entry in self.history {
            let Call::Refund { request, outcome } = &entry.call else { continue };
            let slot = asked.entry(&request.payment_id).or_default();
            let indefinite = outcome.is_indefinite();
            let acked = outcome.acknowledged().is_some();
            match (&request.amount, &request.idempotency_key) {
                (Some(amount), Some(key)) => {
                    if acked {
                        slot.acked.insert(key.clone(), *amount);
                    } else if indefinite {
                        slot.undecided.insert(key.clone(), *amount);
                    }
                }
                (Some(_), None) => {} // refused with 400: an amount needs a key
                (None, _) => {
                    slot.all_acked |= acked;
                    slot.all_undecided |= indefinite;
                }
            }
        }
        for payment in self.final_payments().values() {
            let none = Asked::default();
            let slot = asked.get(&payment.id).unwrap_or(&none);
            let acked: i64 = slot.acked.values().sum();
            let could: i64 = acked
                + slot.undecided.iter().filter(|(k, _)| !slot.acked.contains_key(*k)).map(|(_, a)| a).sum::<i64>();
            let least = if slot.all_acked { payment.amount } else { acked.min(payment.amount) };
            let most = if slot.all_acked || slot.all_undecided { payment.amount } else { could.min(payment.amount) };
            if payment.refunded_amount < least {
                self.lost(
                    Kind::Refund,
                    format!(
                        "payment {}: refunds acknowledged give back {least}, it has {} refunded",
                        payment.id, payment.refunded_amount
                    ),
                );
            } else if payment.refunded_amount > most {
                self.doubled(
                    Kind::Refund,
                    1,
                    format!(
                        "payment {}: its refund requests allow at most {most} back, it has {} refunded",
                        payment.id, payment.refunded_amount
                    ),
                );
            }
        }
    }

    /// The gateway took money once per order and only for approved payments, less what it gave back.
    fn ledger(&mut self) {
        let payments = self.final_payments();
        let mut rows: BTreeMap<&PaymentId, Vec<&LedgerCharge>> = BTreeMap::new();
        for charge in &self.state.ledger {
            rows.entry(&charge.payment_id).or_default().push(charge);
        }
        let mut charged_orders: BTreeMap<&OrderId, Vec<&PaymentId>> = BTreeMap::new();
        for (id, charges) in &rows {
            let taken = charges.iter().filter(|c| c.approved()).count();
            if taken > 1 {
                self.report.counts.entry(Kind::Pay).or_default().doubled += (taken - 1) as u64;
                self.flag(Rule::DoubleCharge, format!("the gateway charged payment {id} {taken} times"));
            }
            let Some(charge) = charges.iter().find(|c| c.approved()).or(charges.first()) else { continue };
            let Some(payment) = payments.get(id) else {
                if charge.approved() {
                    self.flag(
                        Rule::ChargeNotApproved,
                        format!("the gateway charged {} for payment {id}, which does not exist", charge.amount),
                    );
                }
                continue;
            };
            let approved = match payment.status {
                PaymentStatus::Approved | PaymentStatus::Refunded => true,
                PaymentStatus::Requested | PaymentStatus::Declined => false,
            };
            match (charge.approved(), approved) {
                (true, true) => {
                    charged_orders.entry(paid_order(payment)).or_default().push(id);
                    if (charge.amount, charge.refunded_amount) != (payment.amount, payment.refunded_amount) {
                        self.flag(
                            Rule::LedgerMismatch,
                            format!(
                                "payment {id}: the gateway charged {} and gave back {}, the payment says {} and {}",
                                charge.amount, charge.refunded_amount, payment.amount, payment.refunded_amount
                            ),
                        );
                    }
                }
                (true, false) => self.flag(
                    Rule::ChargeNotApproved,
                    format!(
                        "the gateway charged {} for payment {id}, which is {}",
                        charge.amount,
                        payment.status.as_str()
                    ),
                ),
                (false, true) => self.flag(
                    Rule::LedgerMismatch,
                    format!("payment {id} is {} but the gateway answered {}", payment.status.as_str(), charge.outcome),
                ),
                (false, false) => {}
            }
        }
        for payment in payments.values() {
            let approved = matches!(payment.status, PaymentStatus::Approved | PaymentStatus::Refunded);
            if approved && !rows.get(&payment.id).is_some_and(|c| c.iter().any(|c| c.approved())) {
                self.flag(
                    Rule::LedgerMismatch,
                    format!("payment {} is {} but the gateway never charged it", payment.id, payment.status.as_str()),
                );
            }
        }
        // Two charged payments of one order are already counted as a doubled payment.
        for (order, ids) in charged_orders {
            if ids.len() > 1 {
                let ids: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
                self.flag(
                    Rule::DoubleCharge,
                    format!("the gateway charged order {order} {} times ({})", ids.len(), ids.join(", ")),
                );
            }
        }
    }

    fn statuses(&mut self) {
        let mut orders: BTreeMap<&OrderId, Vec<Seen<OrderStatus>>> = BTreeMap::new();
        let mut payments: BTreeMap<&PaymentId, Vec<Seen<PaymentStatus>>> = BTreeMap::new();
        for entry in self.history {
            match &entry.call {
                Call::PlaceOrder { outcome, .. } | Call::GetOrder { outcome, .. } | Call::Cancel { outcome, .. } => {
                    if let Some(order) = outcome.acknowledged() {
                        orders.entry(&order.id).or_default().push(Seen::by(entry, order.status));
                    }
                }
                Call::Pay { outcome, .. } | Call::GetPayment { outcome, .. } | Call::Refund { outcome, .. } => {
                    if let Some(payment) = outcome.acknowledged() {
                        payments.entry(&payment.id).or_default().push(Seen::by(entry, payment.status));
                    }
                }
                Call::Signup { .. } | Call::CreateProduct { .. } | Call::ChatPost { .. } | Call::HistoryRead { .. } => {
                }
            }
        }
        for order in &self.state.orders {
            orders.entry(&order.id).or_default().push(Seen::last(order.status));
        }
        for payment in &self.state.payments {
            payments.entry(&payment.id).or_default().push(Seen::last(payment.status));
        }
        for (id, seen) in &orders {
            if let Some((a, b)) = illegal_step(seen, &OrderStatus::ALL, OrderStatus::may_become) {
                self.flag(
                    Rule::IllegalTransition,
                    format!(
                        "order {id}: {} saw {}, then {} saw {}",
                        a.who(),
                        a.status.as_str(),
                        b.who(),
                        b.status.as_str()
                    ),
                );
            }
        }
        for (id, seen) in &payments {
            if let Some((a, b)) = illegal_step(seen, &PaymentStatus::ALL, PaymentStatus::may_become) {
                self.flag(
                    Rule::IllegalTransition,
                    format!(
                        "payment {id}: {} saw {}, then {} saw {}",
                        a.who(),
                        a.status.as_str(),
                        b.who(),
                        b.status.as_str()
                    ),
                );
            }
        }
    }

    fn chat(&mut self) {
        let mut posts: BTreeMap<(&RoomId, &str), Attempts<ChatPostSent, ChatAck>> = BTreeMap::new();
        for entry in self.history {
            if let Call::ChatPost { request, outcome } = &entry.call {
                posts.entry((&request.room, &request.client_msg_id)).or_default().tries.push((entry, request, outcome));
            }
        }
        let rooms: BTreeMap<&RoomId, &RoomHistory> = self.state.rooms.iter().map(|r| (&r.id, r)).collect();
        let mut texts: HashSet<(&RoomId, &str)> = HashSet::new();
        for ((room, client_msg_id), attempts) in &posts {
            let text = attempts.request().text.as_str();
            if attempts.tries.iter().any(|(_, request, _)| request.text != text) {
                self.flag(
                    Rule::Malformed,
                    format!("room {room}: clientMsgId {client_msg_id:?} was sent with different texts"),
                );
            }
            if !texts.insert((room, text)) {
                self.flag(
                    Rule::Malformed,
                    format!("room {room}: two posts share the text {text:?}: texts must be unique"),
                );
            }
            let found: Vec<&ChatMessage> =
                rooms.get(room).map_or(Vec::new(), |r| r.messages.iter().filter(|m| m.text == text).collect());
            let acks = attempts.acks();
            if let Some(&(first_entry, first)) = acks.first() {
                for (entry, retry) in &acks[1..] {
                    if retry.seq != first.seq {
                        self.flag(
                            Rule::RetryChanged,
                            format!(
                                "room {room} clientMsgId {client_msg_id:?}: op {} was acked seq {}, its retry op {} seq {}",
                                first_entry.op, first.seq, entry.op, retry.seq
                            ),
                        );
                    }
                }
                match found.as_slice() {
                    [] => self.lost(
                        Kind::ChatPost,
                        format!(
                            "room {room}: message {client_msg_id:?} acked as seq {} to op {} is not in the room's final history",
                            first.seq, first_entry.op
                        ),
                    ),
                    [only] if only.seq != first.seq => self.flag(
                        Rule::SeqConflict,
                        format!(
                            "room {room}: message {client_msg_id:?} was acked as seq {} and is stored as seq {}",
                            first.seq, only.seq
                        ),
                    ),
                    [_] | [_, _, ..] => {}
                }
            }
            let allowed = usize::from(!acks.is_empty() || attempts.any_indefinite());
            if found.len() > allowed {
                let seqs: Vec<String> = found.iter().map(|m| m.seq.to_string()).collect();
                self.doubled(
                    Kind::ChatPost,
                    (found.len() - allowed) as u64,
                    format!(
                        "room {room}: message {client_msg_id:?} is stored {} times (seq {}) where its requests allow {allowed}",
                        found.len(),
                        seqs.join(", ")
                    ),
                );
            }
        }
        // What each seq was seen to carry, by history reads and in the final state.
        let mut carried: BTreeMap<(&RoomId, i64), Vec<(&ChatMessage, String)>> = BTreeMap::new();
        for entry in self.history {
            if let Call::HistoryRead { request, outcome: Outcome::Ok { value, .. } } = &entry.call {
                for message in &value.items {
                    carried
                        .entry((&request.room, message.seq))
                        .or_default()
                        .push((message, format!("op {}", entry.op)));
                }
            }
        }
        for room in &self.state.rooms {
            let mut seqs: BTreeMap<i64, usize> = BTreeMap::new();
            for message in &room.messages {
                *seqs.entry(message.seq).or_default() += 1;
                carried.entry((&room.id, message.seq)).or_default().push((message, "the final state".to_owned()));
                if !texts.contains(&(&room.id, message.text.as_str())) {
                    self.doubled(
                        Kind::ChatPost,
                        1,
                        format!("room {}: seq {} ({:?}) was never posted", room.id, message.seq, message.text),
                    );
                }
            }
            for (seq, copies) in &seqs {
                if *copies > 1 {
                    self.flag(
                        Rule::SeqConflict,
                        format!("room {}: seq {seq} is in the history {copies} times", room.id),
                    );
                }
            }
            let last = seqs.keys().next_back().copied().unwrap_or(0);
            let holes: Vec<String> =
                (1..=last).filter(|s| !seqs.contains_key(s)).take(10).map(|s| s.to_string()).collect();
            let below: Vec<String> = seqs.keys().filter(|s| **s < 1).map(|s| s.to_string()).collect();
            if !holes.is_empty() || !below.is_empty() {
                self.flag(
                    Rule::SeqGap,
                    format!(
                        "room {}: seqs up to {last} miss {}{}",
                        room.id,
                        if holes.is_empty() { "none".to_owned() } else { holes.join(", ") },
                        if below.is_empty() {
                            String::new()
                        } else {
                            format!(", and hold seqs below 1: {}", below.join(", "))
                        }
                    ),
                );
            }
        }
        for ((room, seq), seen) in &carried {
            let (first, first_by) = &seen[0];
            if let Some((other, other_by)) =
                seen.iter().find(|(m, _)| (&m.id, &m.text, &m.from) != (&first.id, &first.text, &first.from))
            {
                self.flag(
                    Rule::SeqConflict,
                    format!(
                        "room {room}: seq {seq} carried {:?} ({first_by}) and {:?} ({other_by})",
                        first.text, other.text
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// The order payment `payment` pays: the workload pays orders one at a time, never a checkout's
/// (a payment without an order, were one found, names none: the empty id).
fn paid_order(payment: &Payment) -> &OrderId {
    static NO_ORDER: OrderId = OrderId(String::new());
    payment.order_id.as_ref().unwrap_or(&NO_ORDER)
}
