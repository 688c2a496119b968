//! `/products`: listing, reading and changing products.

use super::{caller, json, json_body, limit_param, query, render, settle, text_param, ApiError, ApiResult};
use crate::app::App;
use crate::tokens::Caller;
use bazaar_actors::product::{GetProduct, ListProduct, NewProduct, ProductChanges, ProductError, UpdateProduct};
use bazaar_protocol::catalog::{CreateProduct, PatchProduct};
use bazaar_protocol::values::{
    parse_currency, parse_name, parse_price, parse_stock, refuse_nul, Invalid, Role, MAX_STOCK,
};
use bazaar_protocol::{ErrorCode, ProductId};
use std::collections::HashMap;
use std::sync::Arc;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

impl From<ProductError> for ApiError {
    fn from(error: ProductError) -> Self {
        match error {
            ProductError::NotFound => ApiError::not_found("product"),
            ProductError::Forbidden => ApiError::forbidden("only the product's seller may change it"),
            ProductError::OutOfStock => ApiError::new(ErrorCode::OutOfStock, "not enough stock for this quantity"),
            ProductError::IdempotencyMismatch => {
                ApiError::new(ErrorCode::IdempotencyMismatch, "this Idempotency-Key was used with a different request")
            }
            ProductError::AlreadyExists => ApiError::new(ErrorCode::Conflict, "the product exists"),
            ProductError::StockAboveMaximum { reserved } => ApiError::new(
                ErrorCode::Invalid,
                format!(
                    "stock: open orders hold {reserved} more units, which come back when they are cancelled; \
                     send a stock of at most {} so the total stays within {MAX_STOCK}",
                    (MAX_STOCK - reserved).max(0)
                ),
            ),
            ProductError::Withdrawn => ApiError::new(ErrorCode::Conflict, "this reservation was given up"),
            ProductError::Unavailable => ApiError::unavailable(),
        }
    }
}

/// The most characters a product name and description may have.
const MAX_NAME: usize = 200;
const MAX_DESCRIPTION: usize = 5000;

fn description(raw: &str) -> Result<String, Invalid> {
    refuse_nul("description", raw)?;
    if raw.chars().count() > MAX_DESCRIPTION {
        return Err(Invalid::new("description", format!("must be at most {MAX_DESCRIPTION} characters")));
    }
    Ok(raw.to_owned())
}

/// The routes of this resource.
pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let limit = app.settings.body_limit_bytes;
    let with_app = {
        let app = app.clone();
        warp::any().map(move || app.clone())
    };
    let create = warp::path!("products")
        .and(warp::post())
        .and(with_app.clone())
        .and(caller(app.clone()))
        .and(json_body::<CreateProduct>(limit))
        .and_then(|app, who, body| async move { render(create(app, who, body).await) });
    let list = warp::path!("products")
        .and(warp::get())
        .and(with_app.clone())
        .and(query())
        .and_then(|app, query| async move { render(list(app, query).await) });
    let get = warp::path!("products" / String)
        .and(warp::get())
        .and(with_app.clone())
        .and_then(|id, app| async move { render(get(app, id).await) });
    let patch = warp::path!("products" / String)
        .and(warp::patch())
        .and(with_app)
        .and(caller(app))
        .and(json_body::<PatchProduct>(limit))
        .and_then(|id, app, who, body| async move { render(patch(app, who, id, body).await) });
    create.or(list).unify().or(get).unify().or(patch).unify().boxed()
}

async fn create(app: Arc<App>, who: Caller, body: CreateProduct) -> ApiResult {
    if who.role != Role::Seller {
        return Err(ApiError::forbidden("only sellers list products"));
    }
    let new = NewProduct {
        seller_id: who.id,
        name: parse_name("name", &body.name, MAX_NAME)?,
        description: description(body.description.as_deref().unwrap_or_default())?,
        price: parse_price(body.price)?,
        currency: parse_currency(body.currency.as_deref().unwrap_or(&app.settings.default_currency))?,
        stock: parse_stock(body.stock)?,
    };
    let id = ProductId::generate();
    let product = settle(app.regions.products.ask(id.as_str(), ListProduct(new)).await)?;
    Ok(json(StatusCode::CREATED, &product))
}

async fn list(app: Arc<App>, query: HashMap<String, String>) -> ApiResult {
    let limit = limit_param(&query, 20, 100)?;
    let seller = text_param(&query, "sellerId")?;
    let cursor = text_param(&query, "cursor")?;
    let page = app.reads.products(seller, limit, cursor).await?;
    Ok(json(StatusCode::OK, &page))
}

async fn get(app: Arc<App>, id: String) -> ApiResult {
    let product = settle(app.regions.products.ask(&id, GetProduct).await)?;
    Ok(json(StatusCode::OK, &product))
}

async fn patch(app: Arc<App>, who: Caller, id: String, body: PatchProduct) -> ApiResult {
    let changes = ProductChanges {
        price: body.price.map(parse_price).transpose()?,
        stock: body.stock.map(parse_stock).transpose()?,
        name: body.name.as_deref().map(|n| parse_name("name", n, MAX_NAME)).transpose()?,
        description: body.description.as_deref().map(description).transpose()?,
    };
    let seller = who.id.clone();
    let product = settle(app.regions.products.ask(&id, UpdateProduct { seller, changes }).await)?;
    Ok(json(StatusCode::OK, &product))
}
