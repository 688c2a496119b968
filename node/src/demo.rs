//! `bazaar demo`: fills a running node with two sellers and their products, a buyer with one paid
//! order, and a chat room between buyer and seller, through the public HTTP API only (as any client would), then
//! prints how to log in. Running it again finds what is there and adds nothing twice.

use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::time::Duration;

/// One demo account.
struct Account {
    email: &'static str,
    password: &'static str,
    role: &'static str,
    name: &'static str,
}

const BUYER: Account =
    Account { email: "bea@demo.bazaar.test", password: "demo-buyer-pass", role: "BUYER", name: "Bea (demo buyer)" };

/// A demo product: name, price (KRW), stock, description.
type DemoProduct = (&'static str, i64, i64, &'static str);

const SELLERS: [(Account, &[DemoProduct]); 2] = [
    (
        Account { email: "sam@demo.bazaar.test", password: "demo-seller-pass", role: "SELLER", name: "Sam's Ceramics" },
        &[
            ("Celadon cup", 12_000, 8, "A hand-thrown cup in a pale green glaze."),
            ("Moon jar, small", 180_000, 2, "White porcelain, 20 cm."),
            ("Tea bowl", 35_000, 5, "Wood-fired stoneware."),
        ],
    ),
    (
        Account { email: "ria@demo.bazaar.test", password: "demo-seller-pass", role: "SELLER", name: "Ria's Paper" },
        &[
            ("Hanji notebook", 9_000, 30, "Mulberry paper, 64 pages."),
            ("Brush set", 27_000, 10, "Three brushes in a linen roll."),
            ("Ink stick", 15_000, 12, "Pine soot ink."),
        ],
    ),
];

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the demo order may take to become PAID.
const PAID_DEADLINE: Duration = Duration::from_secs(20);

/// Fills the node at `base` (`http://127.0.0.1:8080`) and prints the logins.
pub async fn run(base: &str) -> anyhow::Result<()> {
    let base = base.trim_end_matches('/');
    let client = Client { http: reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build()?, base };
    client
        .call(reqwest::Method::GET, "/readyz", None, None, &[])
        .await
        .with_context(|| format!("no bazaar node answers at {base}: start one first (`bazaar serve`)"))?;

    let mut sellers = Vec::new();
    for (account, products) in &SELLERS {
        let (id, token) = client.account(account).await?;
        let listed =
            client.call(reqwest::Method::GET, &format!("/products?sellerId={id}&limit=100"), None, None, &[]).await?;
        let names: Vec<&str> =
            listed["items"].as_array().into_iter().flatten().filter_map(|p| p["name"].as_str()).collect();
        let mut first = None;
        for (name, price, stock, description) in products.iter() {
            if names.contains(name) {
                continue;
            }
            let body = json!({"name": name, "price": price, "stock": stock, "description": description});
            let product = client.call(reqwest::Method::POST, "/products", Some(&token), Some(body), &[]).await?;
            first.get_or_insert(product);
        }
        sellers.push((id, token, first));
    }

    let (_, buyer) = client.account(&BUYER).await?;
    // A first order, paid, and a chat room: only on a fresh node (the first product was new).
    if let Some((seller_id, _, Some(product))) = sellers.first() {
        let product_id = product["id"].as_str().context("a product id")?;
        let order = client
            .call(
                reqwest::Method::POST,
                "/orders",
                Some(&buyer),
                Some(json!({"productId": product_id, "quantity": 1})),
                &[("Idempotency-Key", "demo-order-1")],
            )
            .await?;
        let order_id = order["id"].as_str().context("an order id")?.to_owned();
        let pay = json!({"orderId": order_id, "method": {"type": "card", "token": "tok_ok"}});
        client
            .call(reqwest::Method::POST, "/payments", Some(&buyer), Some(pay), &[("Idempotency-Key", "demo-pay-1")])
            .await?;
        let deadline = tokio::time::Instant::now() + PAID_DEADLINE;
        loop {
            let read =
                client.call(reqwest::Method::GET, &format!("/orders/{order_id}"), Some(&buyer), None, &[]).await?;
            if read["status"] == "PAID" {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the demo order is {} after {} s, not PAID", read["status"], PAID_DEADLINE.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let room = client
            .call(reqwest::Method::POST, "/chat/rooms", Some(&buyer), Some(json!({"peerId": seller_id})), &[])
            .await?;
        println!("demo chat room {} between Bea and Sam (join it over /ws)", room["id"].as_str().unwrap_or("?"));
    }

    println!("demo data is on {base}; log in (POST {base}/auth/login) with:");
    for account in SELLERS.iter().map(|(a, _)| a).chain([&BUYER]) {
        println!("  {:<6} {:<24} password {}", account.role, account.email, account.password);
    }
    Ok(())
}

/// The node's API, as a client sees it.
struct Client<'a> {
    http: reqwest::Client,
    base: &'a str,
}

impl Client<'_> {
    /// Signs `account` up (or finds it signed up) and logs in: its id and access token.
    async fn account(&self, account: &Account) -> anyhow::Result<(String, String)> {
        let signup =
            json!({"email": account.email, "password": account.password, "role": account.role, "name": account.name});
        match self.call(reqwest::Method::POST, "/auth/signup", None, Some(signup), &[]).await {
            Ok(_) => {}
            Err(e) if e.downcast_ref::<Refused>().is_some_and(|r| r.code == "email_taken") => {}
            Err(e) => return Err(e),
        }
        let login = json!({"email": account.email, "password": account.password});
        let tokens =
            self.call(reqwest::Method::POST, "/auth/login", None, Some(login), &[]).await.with_context(|| {
                format!("logging in as {} (an account of that e-mail with another password?)", account.email)
            })?;
        let token = tokens["accessToken"].as_str().context("an access token")?.to_owned();
        let me = self.call(reqwest::Method::GET, "/auth/me", Some(&token), None, &[]).await?;
        Ok((me["id"].as_str().context("a user id")?.to_owned(), token))
    }

    /// One request; an error names the route and the API's error code and message.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Value> {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let error = &body["error"];
            return Err(Refused {
                route: format!("{method} {path}"),
                status: status.as_u16(),
                code: error["code"].as_str().unwrap_or_default().to_owned(),
                message: error["message"].as_str().unwrap_or_default().to_owned(),
            }
            .into());
        }
        Ok(body)
    }
}

/// An error answer of the API.
#[derive(Debug, thiserror::Error)]
#[error("{route}: HTTP {status} {code}: {message}")]
struct Refused {
    route: String,
    status: u16,
    code: String,
    message: String,
}
