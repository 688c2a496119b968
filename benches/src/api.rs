//! The setup calls against bazaar's HTTP API (docs/API.md): sign-up, login, products, orders, rooms.
//! Not measured.

use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::net::SocketAddr;

pub const PASSWORD: &str = "bench-password-1";

#[derive(Clone)]
pub struct Api {
    base: String,
    client: reqwest::Client,
}

/// A signed-up, logged-in user.
#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub token: String,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Self {
        Self { base: format!("http://{addr}"), client: reqwest::Client::new() }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.client.request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body).header("idempotency-key", uuid::Uuid::new_v4().to_string());
        }
        let response = req.send().await.with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{method} {path}: {status}: {text}");
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {path}: not JSON: {text}"))
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    /// A GET whose answer is text (`/metrics`).
    pub async fn text(&self, path: &str) -> anyhow::Result<String> {
        let response =
            self.client.get(format!("{}{path}", self.base)).send().await.with_context(|| format!("GET {path}"))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("GET {path}: {status}: {text}");
        }
        Ok(text)
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, token, Some(body)).await
    }

    /// Signs up and logs in a fresh user with `role` (`BUYER` or `SELLER`).
    pub async fn user(&self, role: &str) -> anyhow::Result<User> {
        let email = format!("{}-{}@bench.example", role.to_lowercase(), uuid::Uuid::new_v4().simple());
        let created = self
            .post("/auth/signup", None, json!({"email": email, "password": PASSWORD, "role": role, "name": "bench"}))
            .await?;
        let id = str_field(&created, "id")?;
        let login = self.post("/auth/login", None, json!({"email": email, "password": PASSWORD})).await?;
        Ok(User { id, token: str_field(&login, "accessToken")? })
    }

    pub async fn product(&self, seller: &User, stock: i64) -> anyhow::Result<String> {
        let body = json!({"name": "bench item", "price": 1000, "stock": stock, "description": "load benchmark"});
        str_field(&self.post("/products", Some(&seller.token), body).await?, "id")
    }

    pub async fn order(&self, buyer: &User, product: &str) -> anyhow::Result<String> {
        str_field(&self.post("/orders", Some(&buyer.token), json!({"productId": product, "quantity": 1})).await?, "id")
    }

    pub async fn room(&self, buyer: &User, seller: &User) -> anyhow::Result<String> {
        str_field(&self.post("/chat/rooms", Some(&buyer.token), json!({"peerId": seller.id})).await?, "id")
    }
}

pub fn str_field(value: &Value, key: &str) -> anyhow::Result<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned).with_context(|| format!("no {key} in {value}"))
}
