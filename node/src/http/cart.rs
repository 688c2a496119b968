//! `/cart`: a buyer's cart. The buyer's user entity keeps the lines (product and quantity); this
//! module prices them as of now by asking each product, so what the buyer sees is never a price
//! remembered from when the line was added. A cart reserves nothing.

use super::{caller, json, json_body, render, settle, ApiError, ApiResult};
use crate::app::App;
use crate::tokens::Caller;
use bazaar_actors::cart;
use bazaar_actors::product::{GetProduct, ProductError};
use bazaar_actors::user::{GetCart, RemoveCartItem, SetCartItem};
use bazaar_protocol::cart::{Cart, CartItem, SetCartItemRequest};
use bazaar_protocol::values::{Quantity, Role};
use bazaar_protocol::ProductId;
use futures_util::future::join_all;
use std::sync::Arc;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

/// The routes of this resource.
pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let limit = app.settings.body_limit_bytes;
    let with_app = {
        let app = app.clone();
        warp::any().map(move || app.clone())
    };
    let get = warp::path!("cart")
        .and(warp::get())
        .and(with_app.clone())
        .and(caller(app.clone()))
        .and_then(|app, who| async move { render(get(app, who).await) });
    let set = warp::path!("cart" / "items" / String)
        .and(warp::put())
        .and(with_app.clone())
        .and(caller(app.clone()))
        .and(json_body::<SetCartItemRequest>(limit))
        .and_then(|product, app, who, body| async move { render(set(app, who, product, body).await) });
    let remove = warp::path!("cart" / "items" / String)
        .and(warp::delete())
        .and(with_app)
        .and(caller(app))
        .and_then(|product, app, who| async move { render(remove(app, who, product).await) });
    get.or(set).unify().or(remove).unify().boxed()
}

fn buyer_only(who: &Caller) -> Result<(), ApiError> {
    if who.role == Role::Buyer {
        Ok(())
    } else {
        Err(ApiError::forbidden("only buyers have a cart"))
    }
}

async fn get(app: Arc<App>, who: Caller) -> ApiResult {
    buyer_only(&who)?;
    let items = settle(app.regions.users.ask(who.id.as_str(), GetCart).await)?;
    Ok(json(StatusCode::OK, &priced(&app, items).await?))
}

async fn set(app: Arc<App>, who: Caller, product: String, body: SetCartItemRequest) -> ApiResult {
    buyer_only(&who)?;
    let quantity = Quantity::try_from(body.quantity)?;
    // Only a product that exists goes in a cart (404 otherwise); its price is read again below.
    settle(app.regions.products.ask(&product, GetProduct).await)?;
    let cmd = SetCartItem { product_id: ProductId::from(product), quantity };
    let items = settle(app.regions.users.ask(who.id.as_str(), cmd).await)?;
    Ok(json(StatusCode::OK, &priced(&app, items).await?))
}

async fn remove(app: Arc<App>, who: Caller, product: String) -> ApiResult {
    buyer_only(&who)?;
    let cmd = RemoveCartItem { product_id: product.into() };
    let items = settle(app.regions.users.ask(who.id.as_str(), cmd).await)?;
    Ok(json(StatusCode::OK, &priced(&app, items).await?))
}

/// The cart with every line priced as each product is now (the products asked side by side).
async fn priced(app: &App, items: Vec<CartItem>) -> Result<Cart, ApiError> {
    let asks = items.iter().map(|item| app.regions.products.ask(item.product_id.as_str(), GetProduct));
    let mut products = Vec::with_capacity(items.len());
    for answer in join_all(asks).await {
        products.push(match answer.map_err(ApiError::from)? {
            Ok(product) => Some(product),
            Err(ProductError::NotFound) => None,
            Err(other) => return Err(other.into()),
        });
    }
    Ok(cart::priced(items, products))
}
