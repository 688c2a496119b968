//! `/orders`: placing (idempotent, stock reserved), reading, listing and cancelling orders.

use super::{
    caller, idempotency_key, json, json_body, limit_param, query, render, settle, text_param, ApiError, ApiResult,
};
use crate::app::App;
use crate::tokens::Caller;
use bazaar_actors::idempotency::IdempotencyKey;
use bazaar_actors::order::{CancelOrder, GetOrder, GetOrderTimeline, OrderError};
use bazaar_actors::product::PlaceOrder;
use bazaar_actors::read_side::Side;
use bazaar_protocol::orders::{OrderStatus, PlaceOrderRequest};
use bazaar_protocol::values::{Quantity, Role};
use bazaar_protocol::{ErrorCode, OrderId};
use std::collections::HashMap;
use std::sync::Arc;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

impl From<OrderError> for ApiError {
    fn from(error: OrderError) -> Self {
        let message = error.to_string();
        match error {
            OrderError::NotFound => ApiError::not_found("order"),
            OrderError::NotCancellable(..) => ApiError::new(ErrorCode::OrderNotCancellable, message),
            OrderError::NotPayable(..) => ApiError::new(ErrorCode::OrderNotPayable, message),
            OrderError::IdempotencyMismatch => {
                ApiError::new(ErrorCode::IdempotencyMismatch, "this Idempotency-Key was used with a different request")
            }
            OrderError::Unavailable => ApiError::unavailable(),
        }
    }
}

/// The routes of this resource.
pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let limit = app.settings.body_limit_bytes;
    let with_app = {
        let app = app.clone();
        warp::any().map(move || app.clone())
    };
    let place = warp::path!("orders")
        .and(warp::post())
        .and(with_app.clone())
        .and(caller(app.clone()))
        .and(idempotency_key())
        .and(json_body::<PlaceOrderRequest>(limit))
        .and_then(|app, who, key, body| async move { render(place(app, who, key, body).await) });
    let list = warp::path!("orders")
        .and(warp::get())
        .and(with_app.clone())
        .and(caller(app.clone()))
        .and(query())
        .and_then(|app, who, query| async move { render(list(app, who, query).await) });
    let get = warp::path!("orders" / String)
        .and(warp::get())
        .and(with_app.clone())
        .and(caller(app.clone()))
        .and_then(|id, app, who| async move { render(get(app, who, id).await) });
    let timeline = warp::path!("orders" / String / "events")
        .and(warp::get())
        .and(with_app.clone())
        .and(caller(app.clone()))
        .and_then(|id, app, who| async move { render(timeline(app, who, id).await) });
    let cancel = warp::path!("orders" / String / "cancel")
        .and(warp::post())
        .and(with_app)
        .and(caller(app))
        .and_then(|id, app, who| async move { render(cancel(app, who, id).await) });
    place.or(list).unify().or(get).unify().or(timeline).unify().or(cancel).unify().boxed()
}

async fn place(app: Arc<App>, who: Caller, key: String, body: PlaceOrderRequest) -> ApiResult {
    if who.role != Role::Buyer {
        return Err(ApiError::forbidden("only buyers place orders"));
    }
    // The product's command checks the key (a retry is answered with the order it made).
    let key = IdempotencyKey::new(who.id.as_str(), key, "POST /orders", &body);
    let quantity = Quantity::try_from(body.quantity)?;
    let cmd = PlaceOrder { order_id: OrderId::generate(), buyer_id: who.id, quantity, idempotency: key };
    let placed = settle(app.regions.products.ask(&body.product_id, cmd).await)?;
    let status = if placed.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(json(status, &placed.order))
}

async fn list(app: Arc<App>, who: Caller, query: HashMap<String, String>) -> ApiResult {
    let limit = limit_param(&query, 20, 100)?;
    let side = match query.get("role").map(String::as_str) {
        None | Some("") => match who.role {
            Role::Buyer => Side::Buyer,
            Role::Seller => Side::Seller,
        },
        Some("buyer") => Side::Buyer,
        Some("seller") => Side::Seller,
        Some(_) => return Err(ApiError::bad_request("role: must be buyer or seller")),
    };
    let status = match query.get("status").filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(OrderStatus::parse(raw).ok_or_else(|| {
            ApiError::bad_request("status: must be ORDERED, PAYMENT_PENDING, PAID, REFUNDED or CANCELLED")
        })?),
    };
    let cursor = text_param(&query, "cursor")?;
    let page = app.reads.orders(who.id.as_str(), side, status, limit, cursor).await?;
    Ok(json(StatusCode::OK, &page))
}

async fn get(app: Arc<App>, who: Caller, id: String) -> ApiResult {
    let viewer = who.id;
    let order = settle(app.regions.orders.ask(&id, GetOrder { viewer }).await)?;
    Ok(json(StatusCode::OK, &order))
}

async fn timeline(app: Arc<App>, who: Caller, id: String) -> ApiResult {
    let viewer = who.id;
    let timeline = settle(app.regions.orders.ask(&id, GetOrderTimeline { viewer }).await)?;
    Ok(json(StatusCode::OK, &timeline))
}

async fn cancel(app: Arc<App>, who: Caller, id: String) -> ApiResult {
    let by = who.id;
    let order = settle(app.regions.orders.ask(&id, CancelOrder { by }).await)?;
    Ok(json(StatusCode::OK, &order))
}
