//! `/payments`: paying an order (idempotent), reading a payment, refunding it.

use super::{caller, idempotency, idempotency_key, json, json_body, render, settle, ApiError, ApiResult};
use crate::app::App;
use crate::tokens::Caller;
use bazaar_actors::order::RequestPayment;
use bazaar_actors::payment::{GetPayment, PaymentError, RefundPayment};
use bazaar_actors::store;
use bazaar_protocol::payments::{PaymentRequest, PaymentStatus};
use bazaar_protocol::values::{Invalid, Role};
use bazaar_protocol::{ErrorCode, PaymentId};
use std::sync::Arc;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

impl From<PaymentError> for ApiError {
    fn from(error: PaymentError) -> Self {
        let message = error.to_string();
        match error {
            PaymentError::NotFound => ApiError::not_found("payment"),
            PaymentError::Forbidden => ApiError::forbidden(message),
            PaymentError::NotRefundable(..) => ApiError::new(ErrorCode::PaymentNotRefundable, message),
            PaymentError::Unavailable => ApiError::unavailable(),
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
    let pay = warp::path!("payments")
        .and(warp::post())
        .and(with_app.clone())
        .and(caller(app.clone()))
        .and(idempotency_key())
        .and(json_body::<PaymentRequest>(limit))
        .and_then(|app, who, key, body| async move { render(pay(app, who, key, body).await) });
    let get = warp::path!("payments" / String)
        .and(warp::get())
        .and(with_app.clone())
        .and(caller(app.clone()))
        .and_then(|id, app, who| async move { render(get(app, who, id).await) });
    let refund = warp::path!("payments" / String / "refund")
        .and(warp::post())
        .and(with_app)
        .and(caller(app))
        .and_then(|id, app, who| async move { render(refund(app, who, id).await) });
    pay.or(get).unify().or(refund).unify().boxed()
}

fn status_of(status: PaymentStatus) -> StatusCode {
    // 202 while the gateway decides; a retry after the decision gets the final state with 200.
    if status == PaymentStatus::Requested {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    }
}

async fn pay(app: Arc<App>, who: Caller, key: String, body: PaymentRequest) -> ApiResult {
    if who.role != Role::Buyer {
        return Err(ApiError::forbidden("only the order's buyer pays it"));
    }
    if body.method.kind != "card" {
        return Err(Invalid::new("method.type", "must be card").into());
    }
    if body.method.token.is_empty() || body.method.token.len() > 200 {
        return Err(Invalid::new("method.token", "must be 1 to 200 characters").into());
    }
    let key = idempotency(&who, key, "POST /payments", &body);
    if let Some(earlier) = store::peek_idempotency(&app.store, &key.user_id, &key.key).await? {
        if earlier.request_hash != key.request_hash {
            return Err(ApiError::new(
                ErrorCode::IdempotencyMismatch,
                "this Idempotency-Key was used with a different request",
            ));
        }
        let viewer = who.id.clone();
        let payment = settle(app.regions.payments.ask(&earlier.result_id, GetPayment { viewer }).await)?;
        return Ok(json(status_of(payment.status), &payment));
    }
    let cmd = RequestPayment {
        payment_id: PaymentId::generate(),
        buyer_id: who.id,
        token: body.method.token.clone(),
        idempotency: key,
    };
    let payment = settle(app.regions.orders.ask(&body.order_id, cmd).await)?;
    Ok(json(status_of(payment.status), &payment))
}

async fn get(app: Arc<App>, who: Caller, id: String) -> ApiResult {
    let viewer = who.id;
    let payment = settle(app.regions.payments.ask(&id, GetPayment { viewer }).await)?;
    Ok(json(StatusCode::OK, &payment))
}

async fn refund(app: Arc<App>, who: Caller, id: String) -> ApiResult {
    let by = who.id;
    let payment = settle(app.regions.payments.ask(&id, RefundPayment { by }).await)?;
    Ok(json(StatusCode::OK, &payment))
}
