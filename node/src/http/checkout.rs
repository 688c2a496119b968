//! `/checkout`: a buyer's cart becomes one order per seller, every line reserved or none
//! (idempotent); `/checkouts/{id}` reads one back with its orders as they are now.

use super::{caller, idempotency_key, json, render, settle, ApiError, ApiResult};
use crate::app::App;
use crate::tokens::Caller;
use bazaar_actors::checkout::entity::{CheckoutError, GetCheckout};
use bazaar_actors::checkout::plan::CartPick;
use bazaar_actors::checkout::CheckoutRecord;
use bazaar_actors::checkout::{self, CheckoutRefused};
use bazaar_actors::idempotency::{Earlier, IdempotencyKey};
use bazaar_actors::order::GetOrder;
use bazaar_actors::product::{GetProduct, ProductError};
use bazaar_actors::user::GetCart;
use bazaar_protocol::checkout::Checkout;
use bazaar_protocol::values::Role;
use bazaar_protocol::{ErrorCode, UserId};
use futures_util::future::join_all;
use std::sync::Arc;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

impl From<CheckoutError> for ApiError {
    fn from(error: CheckoutError) -> Self {
        match error {
            CheckoutError::NotFound => ApiError::not_found("checkout"),
            CheckoutError::IdempotencyMismatch => {
                ApiError::new(ErrorCode::IdempotencyMismatch, "this Idempotency-Key was used with a different request")
            }
            CheckoutError::NotPayable(why) => ApiError::new(ErrorCode::OrderNotPayable, why),
            CheckoutError::Unavailable => ApiError::unavailable(),
        }
    }
}

impl From<CheckoutRefused> for ApiError {
    fn from(refused: CheckoutRefused) -> Self {
        let message = refused.to_string();
        match refused {
            CheckoutRefused::Short(products) => ApiError {
                products: Some(products.into_iter().map(|p| p.0).collect()),
                ..ApiError::new(ErrorCode::OutOfStock, message)
            },
            CheckoutRefused::MixedCurrencies => ApiError::new(ErrorCode::MixedCurrencies, message),
            CheckoutRefused::TooLarge => ApiError::new(ErrorCode::Invalid, message),
            CheckoutRefused::TimedOut => {
                ApiError::new(ErrorCode::Conflict, format!("{message}: check out again with a new Idempotency-Key"))
            }
            CheckoutRefused::Checkout(error) => error.into(),
            CheckoutRefused::Unavailable => ApiError::unavailable(),
        }
    }
}

/// The routes of this resource.
pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let with_app = {
        let app = app.clone();
        warp::any().map(move || app.clone())
    };
    let check_out = warp::path!("checkout")
        .and(warp::post())
        .and(with_app.clone())
        .and(caller(app.clone()))
        .and(idempotency_key())
        .and_then(|app, who, key| async move { render(check_out(app, who, key).await) });
    let get = warp::path!("checkouts" / String)
        .and(warp::get())
        .and(with_app)
        .and(caller(app))
        .and_then(|id, app, who| async move { render(get(app, who, id).await) });
    check_out.or(get).unify().boxed()
}

async fn check_out(app: Arc<App>, who: Caller, key: String) -> ApiResult {
    if who.role != Role::Buyer {
        return Err(ApiError::forbidden("only buyers check out"));
    }
    // The request is the cart, which the buyer's entity holds: the body takes no part.
    let key = IdempotencyKey::new(who.id.as_str(), key, "POST /checkout", &());
    let timeout = std::time::Duration::from_millis(app.settings.checkout_timeout_ms);
    // A retry carries on with the checkout the key made, whatever the cart holds now (the first
    // request emptied it).
    match app.reads.earlier(&key).await? {
        Earlier::Nothing => {}
        Earlier::Mismatch => return Err(CheckoutError::IdempotencyMismatch.into()),
        Earlier::Done(id) => {
            let record = checkout::resume(&app.regions, &id, &who.id, timeout).await?;
            return Ok(json(StatusCode::OK, &view(&record, record.orders.clone())));
        }
    }
    let items = settle(app.regions.users.ask(who.id.as_str(), GetCart).await)?;
    if items.is_empty() {
        // A retry racing its first request may find the cart that request has just emptied.
        if let Earlier::Done(id) = app.reads.earlier(&key).await? {
            let record = checkout::resume(&app.regions, &id, &who.id, timeout).await?;
            return Ok(json(StatusCode::OK, &view(&record, record.orders.clone())));
        }
        return Err(ApiError::new(ErrorCode::CartEmpty, "the cart is empty"));
    }
    // Each product's seller (which never changes) decides which order its line goes into; the
    // price and the stock are decided by the product itself when the line is reserved.
    let asks = items.iter().map(|item| app.regions.products.ask(item.product_id.as_str(), GetProduct));
    let mut picks = Vec::with_capacity(items.len());
    let mut gone = Vec::new();
    let mut currencies = Vec::new();
    for (item, answer) in items.iter().zip(join_all(asks).await) {
        match answer.map_err(ApiError::from)? {
            Ok(product) => {
                if !currencies.contains(&product.currency) {
                    currencies.push(product.currency.clone());
                }
                picks.push(CartPick { product_id: product.id, seller_id: product.seller_id, quantity: item.quantity });
            }
            Err(ProductError::NotFound) => gone.push(item.product_id.clone()),
            Err(other) => return Err(other.into()),
        }
    }
    if !gone.is_empty() {
        return Err(CheckoutRefused::Short(gone).into());
    }
    if currencies.len() > 1 {
        return Err(CheckoutRefused::MixedCurrencies.into());
    }
    let (record, created) = checkout::check_out(&app.regions, &who.id, &picks, key, timeout).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(json(status, &view(&record, record.orders.clone())))
}

async fn get(app: Arc<App>, who: Caller, id: String) -> ApiResult {
    let record = settle(app.regions.checkouts.ask(&id, GetCheckout { viewer: who.id.clone() }).await)?;
    let orders = current_orders(&app, &who.id, &record).await?;
    Ok(json(StatusCode::OK, &view(&record, orders)))
}

/// The checkout's orders as their entities hold them now (paid, cancelled since).
async fn current_orders(
    app: &App,
    viewer: &UserId,
    record: &CheckoutRecord,
) -> Result<Vec<bazaar_protocol::orders::Order>, ApiError> {
    let asks = record
        .orders
        .iter()
        .map(|order| app.regions.orders.ask(order.id.as_str(), GetOrder { viewer: viewer.clone() }));
    join_all(asks).await.into_iter().map(settle).collect()
}

fn view(record: &CheckoutRecord, orders: Vec<bazaar_protocol::orders::Order>) -> Checkout {
    Checkout {
        id: record.id.clone(),
        buyer_id: record.buyer_id.clone(),
        status: record.phase.status(),
        orders,
        total: record.total,
        currency: record.currency.clone(),
        expires_at: record.expires_at,
        payment_id: record.payment_id.clone(),
        created_at: record.created_at,
    }
}
