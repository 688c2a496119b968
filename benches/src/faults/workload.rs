//! The workload of a fault run: the accounts, products and rooms set up before the faults start,
//! and the client tasks that, each as one buyer, issue a random mix of orders (keyed, retried),
//! payments with every simulated card token, cancels, refunds (by the product's seller), chat
//! posts over a WebSocket (with clientMsgIds, retried) and reads, one operation at a time, and
//! record every request and its outcome in the history.
//!
//! A write whose answer is not certain (a timeout, a dropped connection, a 5xx) is retried with
//! the same key, clientMsgId or text on another node, a few times, as a careful client would;
//! each try is its own history entry, so the checker sees every answer a retry got.

use super::history::{
    Call, CancelSent, ChatAck, ChatPostSent, CreateProductSent, GetOrderSent, GetPaymentSent, HistoryReadSent, Outcome,
    PaySent, PlaceOrderSent, Recorder, RefundSent, SignupSent,
};
use crate::ws::{self, Ws};
use anyhow::{bail, Context};
use bazaar_protocol::auth::{TokenPair, UserView};
use bazaar_protocol::catalog::Product;
use bazaar_protocol::chat::{HistoryPage, Room, ServerFrame};
use bazaar_protocol::orders::{Order, OrderStatus};
use bazaar_protocol::payments::{Payment, PaymentStatus};
use bazaar_protocol::values::Role;
use bazaar_protocol::{OrderId, PaymentId, ProductId, RoomId, UserId};
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// The password of every account of a run.
const PASSWORD: &str = "fault-run-password-1";
/// How long one request (or one WebSocket send) may take before its outcome counts as unknown.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries of one write whose answers stay uncertain.
const TRIES: u32 = 4;
/// The simulated gateway's tokens, `tok_visa` (approves) weighted up so most orders get paid.
const TOKENS: [&str; 8] =
    ["tok_visa", "tok_visa", "tok_visa", "tok_visa", "tok_decline", "tok_timeout", "tok_lost", "tok_slow"];

/// A signed-up, logged-in account.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: UserId,
    pub token: String,
}

/// A product of the run, and the index of its seller.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: ProductId,
    pub seller: usize,
}

/// What the client tasks share: the nodes, the sellers, the products.
pub struct World {
    pub nodes: Vec<SocketAddr>,
    pub sellers: Vec<Account>,
    pub products: Vec<Listed>,
    pub recorder: Arc<Recorder>,
    pub http: reqwest::Client,
}

/// A buyer of the run with the rooms it shares with every seller.
#[derive(Debug, Clone)]
pub struct Buyer {
    pub account: Account,
    pub rooms: Vec<RoomId>,
}

/// Sends one request and classifies the answer.
async fn call<T: DeserializeOwned>(
    http: &reqwest::Client,
    node: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    key: Option<&str>,
) -> Outcome<T> {
    let mut request = http.request(method, format!("http://{node}{path}")).timeout(REQUEST_TIMEOUT);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) if e.is_timeout() => return Outcome::Indefinite { reason: "timeout".into() },
        Err(e) if e.is_connect() => return Outcome::Indefinite { reason: "connection refused".into() },
        Err(e) => return Outcome::Indefinite { reason: format!("request failed: {e}") },
    };
    let status = response.status().as_u16();
    let text = match response.text().await {
        Ok(text) => text,
        Err(e) => return Outcome::Indefinite { reason: format!("{status}, body cut off: {e}") },
    };
    if (200..300).contains(&status) {
        match serde_json::from_str(&text) {
            Ok(value) => Outcome::Ok { status: Some(status), value },
            Err(e) => Outcome::Indefinite { reason: format!("{status}, unparseable body: {e}") },
        }
    } else {
        let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let code = parsed["error"]["code"].as_str().unwrap_or("no_code");
        Outcome::refused(status, code)
    }
}

/// One request of the workload: what is sent, to whichever node.
struct Ask<'a> {
    method: Method,
    path: &'a str,
    token: &'a str,
    body: Option<&'a Value>,
    key: Option<&'a str>,
}

impl<'a> Ask<'a> {
    fn get(path: &'a str, token: &'a str) -> Self {
        Ask { method: Method::GET, path, token, body: None, key: None }
    }

    fn post(path: &'a str, token: &'a str, body: Option<&'a Value>) -> Self {
        Ask { method: Method::POST, path, token, body, key: None }
    }

    /// With an `Idempotency-Key`.
    fn keyed(self, key: Option<&'a str>) -> Self {
        Ask { key, ..self }
    }
}

impl World {
    /// Sends one request to `node`, records it with `record`, and returns its outcome.
    async fn once<T: DeserializeOwned + Clone>(
        &self,
        client: u32,
        node: usize,
        ask: &Ask<'_>,
        record: impl Fn(Outcome<T>) -> Call,
    ) -> anyhow::Result<Outcome<T>> {
        let invocation = self.recorder.invoke(client);
        let node = self.nodes[node % self.nodes.len()];
        let outcome: Outcome<T> =
            call(&self.http, node, ask.method.clone(), ask.path, Some(ask.token), ask.body, ask.key).await;
        self.recorder.complete(invocation, record(outcome.clone())).context("writing the history")?;
        Ok(outcome)
    }

    /// Like [`World::once`], retried on the next node while the outcome stays uncertain.
    async fn retried<T: DeserializeOwned + Clone>(
        &self,
        client: u32,
        node: usize,
        ask: &Ask<'_>,
        record: impl Fn(Outcome<T>) -> Call,
    ) -> anyhow::Result<Outcome<T>> {
        let mut outcome = Outcome::Indefinite { reason: "not sent".into() };
        for attempt in 0..TRIES {
            outcome = self.once(client, node + attempt as usize, ask, &record).await?;
            if !outcome.is_indefinite() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt + 1))).await;
        }
        Ok(outcome)
    }
}

/// An unrecorded setup call that must succeed (logins, rooms); retried while the cluster settles.
async fn setup_call<T: DeserializeOwned>(
    world: &World,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> anyhow::Result<T> {
    let mut last = String::new();
    for attempt in 0..10u32 {
        let node = world.nodes[attempt as usize % world.nodes.len()];
        match call::<T>(&world.http, node, method.clone(), path, token, Some(body), None).await {
            Outcome::Ok { value, .. } => return Ok(value),
            Outcome::Fail { status, code } => bail!("{method} {path}: {status:?} {code}"),
            Outcome::Indefinite { reason } => last = reason,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("{method} {path}: no certain answer in 10 tries (last: {last})")
}

/// Signs up (recorded) and logs in (not recorded) a fresh account of `role`.
pub async fn account(world: &World, run: &str, role: Role, n: usize) -> anyhow::Result<Account> {
    let email = format!("{}-{n}-{run}@faults.example", role.as_str().to_lowercase());
    let body = json!({"email": email, "password": PASSWORD, "role": role.as_str(), "name": format!("fault {n}")});
    let request = SignupSent { email: email.clone(), role };
    let invocation = world.recorder.invoke(0);
    let outcome: Outcome<UserView> =
        call(&world.http, world.nodes[n % world.nodes.len()], Method::POST, "/auth/signup", None, Some(&body), None)
            .await;
    world.recorder.complete(invocation, Call::Signup { request, outcome: outcome.clone() })?;
    let Outcome::Ok { value: user, .. } = outcome else { bail!("signing up {email}: {outcome:?}") };
    let pair: TokenPair =
        setup_call(world, Method::POST, "/auth/login", None, &json!({"email": email, "password": PASSWORD})).await?;
    Ok(Account { id: user.id, token: pair.access_token })
}

/// Lists a product (recorded) with a name unique in the run.
pub async fn product(world: &World, run: &str, seller: usize, n: usize, stock: i64) -> anyhow::Result<Listed> {
    let account = &world.sellers[seller];
    let request = CreateProductSent {
        seller: account.id.clone(),
        name: format!("fault product {n} {run}"),
        price: 1000 + 100 * (n as i64 % 7),
        stock,
    };
    let body = json!({"name": request.name, "price": request.price, "stock": stock, "description": "fault run"});
    let outcome: Outcome<Product> = world
        .once(0, n, &Ask::post("/products", &account.token, Some(&body)), |outcome| Call::CreateProduct {
            request: request.clone(),
            outcome,
        })
        .await?;
    let Outcome::Ok { value, .. } = outcome else { bail!("listing {}: {outcome:?}", request.name) };
    Ok(Listed { id: value.id, seller })
}

/// Opens the buyer's room with every seller (not recorded: rooms are not part of the check).
pub async fn rooms(world: &World, buyer: &Account) -> anyhow::Result<Vec<RoomId>> {
    let mut rooms = Vec::new();
    for seller in &world.sellers {
        let room: Room =
            setup_call(world, Method::POST, "/chat/rooms", Some(&buyer.token), &json!({"peerId": seller.id})).await?;
        rooms.push(room.id);
    }
    Ok(rooms)
}

/// What a client knows of one of its orders, from the answers it got.
#[derive(Debug, Clone)]
struct Known {
    id: OrderId,
    product: usize,
    status: OrderStatus,
    payment: Option<PaymentId>,
    amount: i64,
    payment_status: Option<PaymentStatus>,
    refunded: i64,
}

/// One client task: a buyer issuing operations until `until`.
pub struct Client {
    id: u32,
    world: Arc<World>,
    buyer: Buyer,
    rng: StdRng,
    orders: Vec<Known>,
    socket: Option<Ws>,
    next: u64,
}

impl Client {
    pub fn new(id: u32, world: Arc<World>, buyer: Buyer, seed: u64) -> Client {
        Client { id, world, buyer, rng: StdRng::seed_from_u64(seed), orders: Vec::new(), socket: None, next: 0 }
    }

    fn fresh(&mut self, what: &str) -> String {
        self.next += 1;
        format!("c{}-{what}{}", self.id, self.next)
    }

    fn node(&mut self) -> usize {
        self.rng.gen_range(0..self.world.nodes.len())
    }

    fn token(&self) -> &str {
        &self.buyer.account.token
    }

    /// Issues operations until `until`, then returns how many it issued.
    pub async fn run(mut self, until: Instant) -> anyhow::Result<u64> {
        let mut issued = 0;
        while Instant::now() < until {
            let roll = self.rng.gen_range(0..100);
            match roll {
                0..=24 => self.place_order().await?,
                25..=44 => self.pay().await?,
                45..=54 => self.get_order().await?,
                55..=59 => self.cancel().await?,
                60..=64 => self.get_payment().await?,
                65..=71 => self.refund().await?,
                72..=93 => self.chat_post().await?,
                _ => self.history_read().await?,
            }
            issued += 1;
        }
        Ok(issued)
    }

    fn learn_order(&mut self, order: &Order) {
        if let Some(known) = self.orders.iter_mut().find(|k| k.id == order.id) {
            known.status = order.status;
            if order.payment_id.is_some() {
                known.payment.clone_from(&order.payment_id);
            }
        }
    }

    fn learn_payment(&mut self, payment: &Payment) {
        if let Some(known) = self.orders.iter_mut().find(|k| payment.order_id.as_ref() == Some(&k.id)) {
            known.payment = Some(payment.id.clone());
            known.amount = payment.amount;
            known.payment_status = Some(payment.status);
            known.refunded = payment.refunded_amount;
        }
    }

    /// An order of this client whose last known state passes `filter`, at random.
    fn pick(&mut self, filter: impl Fn(&Known) -> bool) -> Option<Known> {
        let candidates: Vec<&Known> = self.orders.iter().filter(|k| filter(k)).collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[self.rng.gen_range(0..candidates.len())].clone())
    }

    async fn place_order(&mut self) -> anyhow::Result<()> {
        let product = self.rng.gen_range(0..self.world.products.len());
        let request = PlaceOrderSent {
            buyer: self.buyer.account.id.clone(),
            product_id: self.world.products[product].id.clone(),
            quantity: self.rng.gen_range(1..=3),
            idempotency_key: self.fresh("order"),
        };
        let body = json!({"productId": request.product_id, "quantity": request.quantity});
        let node = self.node();
        let outcome: Outcome<Order> = self
            .world
            .retried(
                self.id,
                node,
                &Ask::post("/orders", self.token(), Some(&body)).keyed(Some(&request.idempotency_key)),
                |outcome| Call::PlaceOrder { request: request.clone(), outcome },
            )
            .await?;
        if let Outcome::Ok { value, .. } = outcome {
            self.orders.push(Known {
                id: value.id,
                product,
                status: value.status,
                payment: None,
                amount: value.amount,
                payment_status: None,
                refunded: 0,
            });
        }
        Ok(())
    }

    async fn pay(&mut self) -> anyhow::Result<()> {
        let Some(order) = self.pick(|k| k.status == OrderStatus::Ordered) else { return self.place_order().await };
        let request = PaySent {
            buyer: self.buyer.account.id.clone(),
            order_id: order.id.clone(),
            token: TOKENS[self.rng.gen_range(0..TOKENS.len())].to_owned(),
            idempotency_key: self.fresh("pay"),
        };
        let body = json!({"orderId": request.order_id, "method": {"type": "card", "token": request.token}});
        let node = self.node();
        let outcome: Outcome<Payment> = self
            .world
            .retried(
                self.id,
                node,
                &Ask::post("/payments", self.token(), Some(&body)).keyed(Some(&request.idempotency_key)),
                |outcome| Call::Pay { request: request.clone(), outcome },
            )
            .await?;
        match outcome {
            Outcome::Ok { value, .. } => {
                self.learn_payment(&value);
                if let Some(known) = self.orders.iter_mut().find(|k| k.id == order.id) {
                    known.status = OrderStatus::PaymentPending;
                }
            }
            // Paid by an earlier try, or cancelled meanwhile: a read will tell.
            Outcome::Fail { .. } | Outcome::Indefinite { .. } => {
                if let Some(known) = self.orders.iter_mut().find(|k| k.id == order.id) {
                    known.status = OrderStatus::PaymentPending;
                }
            }
        }
        Ok(())
    }

    async fn get_order(&mut self) -> anyhow::Result<()> {
        let Some(order) = self.pick(|_| true) else { return self.place_order().await };
        let request = GetOrderSent { viewer: self.buyer.account.id.clone(), order_id: order.id.clone() };
        let path = format!("/orders/{}", order.id);
        let node = self.node();
        let outcome: Outcome<Order> = self
            .world
            .once(self.id, node, &Ask::get(&path, self.token()), |outcome| Call::GetOrder {
                request: request.clone(),
                outcome,
            })
            .await?;
        if let Outcome::Ok { value, .. } = outcome {
            self.learn_order(&value);
        }
        Ok(())
    }

    async fn cancel(&mut self) -> anyhow::Result<()> {
        // Mostly orders still ORDERED, sometimes any: a refused cancel is part of the contract too.
        let any = self.rng.gen_bool(0.2);
        let Some(order) = self.pick(|k| any || k.status == OrderStatus::Ordered) else { return Ok(()) };
        let request = CancelSent { by: self.buyer.account.id.clone(), order_id: order.id.clone() };
        let path = format!("/orders/{}/cancel", order.id);
        let node = self.node();
        // Not retried: a retry of a cancel that happened answers 409, which tells nothing new.
        let outcome: Outcome<Order> = self
            .world
            .once(self.id, node, &Ask::post(&path, self.token(), None), |outcome| Call::Cancel {
                request: request.clone(),
                outcome,
            })
            .await?;
        if let Outcome::Ok { value, .. } = outcome {
            self.learn_order(&value);
        }
        Ok(())
    }

    async fn get_payment(&mut self) -> anyhow::Result<()> {
        let Some(payment_id) = self.pick(|k| k.payment.is_some()).and_then(|k| k.payment) else {
            return self.get_order().await;
        };
        let request = GetPaymentSent { viewer: self.buyer.account.id.clone(), payment_id: payment_id.clone() };
        let path = format!("/payments/{payment_id}");
        let node = self.node();
        let outcome: Outcome<Payment> = self
            .world
            .once(self.id, node, &Ask::get(&path, self.token()), |outcome| Call::GetPayment {
                request: request.clone(),
                outcome,
            })
            .await?;
        if let Outcome::Ok { value, .. } = outcome {
            self.learn_payment(&value);
        }
        Ok(())
    }

    async fn refund(&mut self) -> anyhow::Result<()> {
        let Some(order) = self.pick(|k| {
            k.payment.is_some() && (k.status == OrderStatus::Paid || k.payment_status == Some(PaymentStatus::Approved))
        }) else {
            return self.get_payment().await;
        };
        let Some(payment_id) = order.payment.clone() else { return Ok(()) };
        let seller = &self.world.sellers[self.world.products[order.product].seller];
        let (seller_id, token) = (seller.id.clone(), seller.token.clone());
        let left = order.amount - order.refunded;
        let partial = left > 3 && self.rng.gen_bool(0.6);
        let amount = if partial { Some(self.rng.gen_range(1..=left / 3)) } else { None };
        let idempotency_key = if partial { Some(self.fresh("refund")) } else { None };
        let request = RefundSent { seller: seller_id, payment_id: payment_id.clone(), amount, idempotency_key };
        let body = request.amount.map_or(json!({}), |amount| json!({"amount": amount}));
        let path = format!("/payments/{payment_id}/refund");
        let node = self.node();
        let record = |outcome| Call::Refund { request: request.clone(), outcome };
        // A refund of all that is left has no key: it is sent once (a retry would find nothing left).
        let outcome: Outcome<Payment> = if partial {
            let key = request.idempotency_key.clone();
            let ask = Ask::post(&path, &token, Some(&body)).keyed(key.as_deref());
            self.world.retried(self.id, node, &ask, record).await?
        } else {
            self.world.once(self.id, node, &Ask::post(&path, &token, Some(&body)), record).await?
        };
        if let Outcome::Ok { value, .. } = outcome {
            self.learn_payment(&value);
        }
        Ok(())
    }

    async fn history_read(&mut self) -> anyhow::Result<()> {
        let room = self.buyer.rooms[self.rng.gen_range(0..self.buyer.rooms.len())].clone();
        let limit = self.rng.gen_range(10..=100);
        let request = HistoryReadSent {
            reader: self.buyer.account.id.clone(),
            room: room.clone(),
            before: None,
            limit: Some(limit),
        };
        let path = format!("/chat/rooms/{room}/messages?limit={limit}");
        let node = self.node();
        self.world
            .once::<HistoryPage>(self.id, node, &Ask::get(&path, self.token()), |outcome| Call::HistoryRead {
                request: request.clone(),
                outcome,
            })
            .await?;
        Ok(())
    }

    async fn chat_post(&mut self) -> anyhow::Result<()> {
        let room = self.buyer.rooms[self.rng.gen_range(0..self.buyer.rooms.len())].clone();
        let client_msg_id = self.fresh("msg");
        let request = ChatPostSent {
            from: self.buyer.account.id.clone(),
            room,
            text: format!("message {client_msg_id}"),
            client_msg_id,
        };
        for attempt in 0..TRIES {
            let invocation = self.world.recorder.invoke(self.id);
            let outcome = self.send_frame(&request).await;
            self.world
                .recorder
                .complete(invocation, Call::ChatPost { request: request.clone(), outcome: outcome.clone() })?;
            if !outcome.is_indefinite() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt + 1))).await;
        }
        Ok(())
    }

    /// Sends one `send` frame (connecting first if needed) and waits for its ack or error. A
    /// socket whose answer did not come is dropped: the next try connects anew, maybe elsewhere.
    async fn send_frame(&mut self, request: &ChatPostSent) -> Outcome<ChatAck> {
        if self.socket.is_none() {
            let index = self.node();
            let node = self.world.nodes[index];
            match tokio::time::timeout(REQUEST_TIMEOUT, ws::open(node, "/ws", Some(&self.buyer.account.token), None))
                .await
            {
                Ok(Ok(socket)) => self.socket = Some(socket),
                Ok(Err(e)) => return Outcome::Indefinite { reason: format!("connect: {e:#}") },
                Err(_) => return Outcome::Indefinite { reason: "connect: timeout".into() },
            }
        }
        let Some(socket) = self.socket.as_mut() else { return Outcome::Indefinite { reason: "no socket".into() } };
        let frame =
            json!({"type": "send", "room": request.room, "text": request.text, "clientMsgId": request.client_msg_id});
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, async {
            if let Err(e) = socket.send(Message::Text(frame.to_string().into())).await {
                return Outcome::Indefinite { reason: format!("send: {e}") };
            }
            loop {
                let text = match socket.next().await {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(close))) => {
                        return Outcome::Indefinite { reason: format!("closed: {close:?}") };
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Outcome::Indefinite { reason: format!("read: {e}") },
                    None => return Outcome::Indefinite { reason: "connection closed".into() },
                };
                match serde_json::from_str::<ServerFrame>(&text) {
                    Ok(ServerFrame::Ack { client_msg_id, seq }) if client_msg_id == request.client_msg_id => {
                        return Outcome::Ok { status: None, value: ChatAck { seq } };
                    }
                    Ok(ServerFrame::Error { code, .. }) if code == "unavailable" => {
                        return Outcome::Indefinite { reason: "error frame: unavailable".into() };
                    }
                    Ok(ServerFrame::Error { code, .. }) => return Outcome::Fail { status: None, code },
                    // Pushes of the buyer's orders, and acks of nothing this try sent.
                    Ok(_) | Err(_) => continue,
                }
            }
        })
        .await
        .unwrap_or(Outcome::Indefinite { reason: "timeout".into() });
        if outcome.is_indefinite() {
            self.socket = None;
        }
        outcome
    }
}
