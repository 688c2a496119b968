//! `/webhooks`: a seller's outbound webhook endpoints, their deliveries and re-sends. The
//! endpoints and deliveries are kept by the actor side ([`bazaar_actors::webhooks`]), which
//! also checks each URL against the address rules and sends the deliveries.

use super::{caller, json, json_body, limit_param, query, render, text_param, ApiError, ApiResult};
use crate::app::App;
use crate::tokens::Caller;
use bazaar_actors::webhooks::WebhookError;
use bazaar_protocol::values::Role;
use bazaar_protocol::webhooks::CreateWebhookRequest;
use bazaar_protocol::{ErrorCode, Page};
use std::collections::HashMap;
use std::sync::Arc;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

impl From<WebhookError> for ApiError {
    fn from(error: WebhookError) -> Self {
        match error {
            WebhookError::NotFound => ApiError::not_found("webhook"),
            refused @ WebhookError::TooMany(_) => ApiError::new(ErrorCode::TooManyWebhooks, refused.to_string()),
            WebhookError::UrlNotAllowed(why) => ApiError::new(ErrorCode::UrlNotAllowed, why),
            WebhookError::Invalid(why) => ApiError::new(ErrorCode::Invalid, why),
            WebhookError::Store(e) => e.into(),
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
    let register = warp::path!("webhooks")
        .and(warp::post())
        .and(with_app.clone())
        .and(caller(app.clone()))
        .and(json_body::<CreateWebhookRequest>(limit))
        .and_then(|app, who, body| async move { render(register(app, who, body).await) });
    let list = warp::path!("webhooks")
        .and(warp::get())
        .and(with_app.clone())
        .and(caller(app.clone()))
        .and_then(|app, who| async move { render(list(app, who).await) });
    let delete = warp::path!("webhooks" / String)
        .and(warp::delete())
        .and(with_app.clone())
        .and(caller(app.clone()))
        .and_then(|id, app, who| async move { render(delete(app, who, id).await) });
    let rotate = warp::path!("webhooks" / String / "rotate-secret")
        .and(warp::post())
        .and(with_app.clone())
        .and(caller(app.clone()))
        .and_then(|id, app, who| async move { render(rotate(app, who, id).await) });
    let deliveries = warp::path!("webhooks" / String / "deliveries")
        .and(warp::get())
        .and(with_app.clone())
        .and(caller(app.clone()))
        .and(query())
        .and_then(|id, app, who, query| async move { render(deliveries(app, who, id, query).await) });
    let resend = warp::path!("webhooks" / String / "deliveries" / String / "resend")
        .and(warp::post())
        .and(with_app)
        .and(caller(app))
        .and_then(|id, delivery, app, who| async move { render(resend(app, who, id, delivery).await) });
    register.or(list).unify().or(delete).unify().or(rotate).unify().or(deliveries).unify().or(resend).unify().boxed()
}

fn seller_only(who: &Caller) -> Result<(), ApiError> {
    if who.role == Role::Seller {
        Ok(())
    } else {
        Err(ApiError::forbidden("only sellers register webhooks"))
    }
}

async fn register(app: Arc<App>, who: Caller, body: CreateWebhookRequest) -> ApiResult {
    seller_only(&who)?;
    let endpoint = app.webhooks.register(who.id.as_str(), body).await?;
    Ok(json(StatusCode::CREATED, &endpoint))
}

async fn list(app: Arc<App>, who: Caller) -> ApiResult {
    seller_only(&who)?;
    let items = app.webhooks.list(who.id.as_str()).await?;
    Ok(json(StatusCode::OK, &Page { items, next_cursor: None }))
}

async fn delete(app: Arc<App>, who: Caller, id: String) -> ApiResult {
    seller_only(&who)?;
    app.webhooks.delete(who.id.as_str(), &id, chrono::Utc::now()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn rotate(app: Arc<App>, who: Caller, id: String) -> ApiResult {
    seller_only(&who)?;
    let endpoint = app.webhooks.rotate(who.id.as_str(), &id, chrono::Utc::now()).await?;
    Ok(json(StatusCode::OK, &endpoint))
}

async fn deliveries(app: Arc<App>, who: Caller, id: String, query: HashMap<String, String>) -> ApiResult {
    seller_only(&who)?;
    let limit = limit_param(&query, 20, 100)?;
    let cursor = text_param(&query, "cursor")?;
    let page = app.webhooks.deliveries(who.id.as_str(), &id, cursor, limit).await?;
    Ok(json(StatusCode::OK, &page))
}

async fn resend(app: Arc<App>, who: Caller, id: String, delivery: String) -> ApiResult {
    seller_only(&who)?;
    app.webhooks.resend(who.id.as_str(), &id, &delivery, chrono::Utc::now()).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}
