//! `/payments`: paying an order (idempotent), reading a payment, refunding it (in part or in
//! full, idempotent by key), and the payment provider's notifications
//! (`POST /payments/webhooks/{gateway}`), which only ever make the payment ask the provider.

use super::client_addr::client_addr;
use super::{
    caller, idempotency_key, json, json_body, optional_idempotency_key, optional_json_body, raw_body, render, settle,
    ApiError, ApiResult,
};
use crate::app::App;
use crate::rate_limit::client_key;
use crate::tokens::Caller;
use bazaar_actors::checkout::entity::{CheckoutError, PayCheckout, PaymentOfCheckout};
use bazaar_actors::checkout::pay_checkout;
use bazaar_actors::idempotency::IdempotencyKey;
use bazaar_actors::order::{OrderError, PaymentOfOrder, RequestPayment};
use bazaar_actors::payment::{GetPayment, PaymentError, ReconcilePayment, RefundPayment};
use bazaar_actors::payment_gateway::NoticeError;
use bazaar_actors::region::CallError;
use bazaar_protocol::payments::{PaymentRequest, PaymentStatus, RefundRequest};
use bazaar_protocol::values::{Invalid, Role};
use bazaar_protocol::{ErrorCode, PaymentId};
use std::net::SocketAddr;
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
            PaymentError::RefundExceedsPayment { .. } => ApiError::new(ErrorCode::RefundExceedsPayment, message),
            PaymentError::IdempotencyMismatch => {
                ApiError::new(ErrorCode::IdempotencyMismatch, "this Idempotency-Key was used with a different request")
            }
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
        .and(with_app.clone())
        .and(caller(app.clone()))
        .and(optional_idempotency_key())
        .and(optional_json_body::<RefundRequest>(limit))
        .and_then(|id, app, who, key, body| async move { render(refund(app, who, id, key, body).await) });
    // Unauthenticated (the provider calls it): nothing in the body is believed but the ids the
    // payment then looks up at the provider.
    let webhook = warp::path!("payments" / "webhooks" / String)
        .and(warp::post())
        .and(webhook_sender(app.clone()))
        .and(with_app)
        .and(raw_body(app.settings.webhook_body_limit_bytes))
        .and_then(|gateway, app, body| async move { render(webhook(app, gateway, body).await) });
    webhook.or(pay).unify().or(get).unify().or(refund).unify().boxed()
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
    let paying = match (&body.order_id, &body.checkout_id) {
        (Some(order), None) => Paying::Order(order.clone()),
        (None, Some(checkout)) => Paying::Checkout(checkout.clone()),
        // A body naming neither is a body missing its field (400, as any other), and one naming
        // both is no clearer.
        _ => return Err(ApiError::bad_request("the body needs exactly one of orderId and checkoutId")),
    };
    if body.method.kind != "card" {
        return Err(Invalid::new("method.type", "must be card").into());
    }
    if body.method.token.is_empty() || body.method.token.len() > 200 {
        return Err(Invalid::new("method.token", "must be 1 to 200 characters").into());
    }
    // The order's (or the checkout's) command checks the key: a retry is answered with the
    // payment it made.
    let key = IdempotencyKey::new(who.id.as_str(), key, "POST /payments", &body);
    let (payment_id, buyer_id, token) = (PaymentId::generate(), who.id, body.method.token.clone());
    let payment = match paying {
        Paying::Order(order) => {
            let cmd = RequestPayment { payment_id, buyer_id, token, idempotency: key };
            settle(app.regions.orders.ask(&order, cmd).await)?
        }
        Paying::Checkout(checkout) => {
            let cmd = PayCheckout { payment_id, buyer_id, token, idempotency: key };
            pay_checkout(&app.regions, &checkout, cmd).await?
        }
    };
    Ok(json(status_of(payment.status), &payment))
}

/// What `POST /payments` pays.
enum Paying {
    Order(String),
    Checkout(String),
}

async fn get(app: Arc<App>, who: Caller, id: String) -> ApiResult {
    let viewer = who.id;
    let payment = settle(app.regions.payments.ask(&id, GetPayment { viewer }).await)?;
    Ok(json(StatusCode::OK, &payment))
}

async fn refund(app: Arc<App>, who: Caller, id: String, key: Option<String>, body: Option<RefundRequest>) -> ApiResult {
    let body = body.unwrap_or_default();
    if body.amount.is_some_and(|amount| amount < 1) {
        return Err(Invalid::new("amount", "must be at least 1").into());
    }
    // Without a key a retried partial refund would give back twice; a refund of all that is
    // left may go without one (its retry finds nothing left: 409).
    if body.amount.is_some() && key.is_none() {
        return Err(ApiError::bad_request("the Idempotency-Key header is required for a refund with an amount"));
    }
    let idempotency =
        key.map(|key| IdempotencyKey::new(who.id.as_str(), key, &format!("POST /payments/{id}/refund"), &body));
    let cmd = RefundPayment { by: who.id, amount: body.amount, idempotency };
    let payment = settle(app.regions.payments.ask(&id, cmd).await)?;
    Ok(json(StatusCode::OK, &payment))
}

/// Takes a payment provider's notification: parsed by the gateway the route names, then the
/// order's payment asks the provider what it recorded and follows that. 200 for anything
/// understood (the provider retries otherwise), also for orders this node does not know.
/// Counts a notice against its sender's budget (`webhook_notices_per_minute`) before its body is
/// read: a flood of notices, well-formed or not, is refused without reading or parsing them.
fn webhook_sender(app: Arc<App>) -> BoxedFilter<()> {
    client_addr()
        .and_then(move |sender: Option<SocketAddr>| {
            let app = app.clone();
            async move {
                app.webhook_senders.attempt(&client_key(sender.map(|s| s.ip()))).map_err(|wait| {
                    metrics::counter!("bazaar_rate_limited_total", "limit" => "webhook_per_sender").increment(1);
                    warp::reject::custom(
                        ApiError::new(ErrorCode::RateLimited, "too many notifications from this address, retry later")
                            .with_retry_after(wait.as_secs() + 1),
                    )
                })
            }
        })
        .untuple_one()
        .boxed()
}

async fn webhook(app: Arc<App>, gateway: String, body: Vec<u8>) -> ApiResult {
    let provider = &app.payment_gateway;
    let no_route = || ApiError::not_found(&format!("webhook for gateway {gateway:?} on this node"));
    if gateway != provider.name() {
        return Err(no_route());
    }
    let notice = match provider.notice(&body) {
        Ok(notice) => notice,
        Err(NoticeError::NotAccepted) => return Err(no_route()),
        Err(NoticeError::Malformed(why)) => return Err(ApiError::bad_request(why)),
        Err(NoticeError::Ignored(why)) => {
            return Ok(json(StatusCode::OK, &serde_json::json!({"received": true, "ignored": why})))
        }
    };
    let payment_id = match payment_of(&app, &notice.order_id).await {
        Ok(Ok(Some(payment_id))) => payment_id,
        Ok(Ok(None) | Err(OrderError::NotFound)) => {
            // Not an order of bazaar's, or one never paid: nothing to follow, and nothing a
            // retry would change.
            return Ok(json(
                StatusCode::OK,
                &serde_json::json!({"received": true, "ignored": "no payment for the order"}),
            ));
        }
        Ok(Err(e)) => return Err(ApiError::from(e)),
        Err(e) => return Err(ApiError::from(e)),
    };
    let reconcile = ReconcilePayment { reference: notice.reference };
    let payment = settle(app.regions.payments.ask(payment_id.as_str(), reconcile).await)?;
    Ok(json(StatusCode::OK, &serde_json::json!({"received": true, "status": payment.status})))
}

/// The payment behind the id a provider knows a charge by: an order's, or a checkout's for the
/// one payment of its orders (`NotFound` when it is neither).
async fn payment_of(app: &App, id: &str) -> Result<Result<Option<PaymentId>, OrderError>, CallError> {
    match app.regions.orders.ask(id, PaymentOfOrder).await? {
        Err(OrderError::NotFound) => {}
        found => return Ok(found),
    }
    Ok(match app.regions.checkouts.ask(id, PaymentOfCheckout).await? {
        Ok(payment) => Ok(payment),
        Err(CheckoutError::NotFound) => Err(OrderError::NotFound),
        Err(_) => Err(OrderError::Unavailable),
    })
}
