//! Operations: liveness, readiness, Prometheus metrics and the cluster view.

use crate::app::App;
use serde_json::json;
use std::sync::Arc;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let with_app = warp::any().map(move || app.clone());
    let healthz =
        warp::path!("healthz").and(warp::get()).map(|| warp::reply::json(&json!({"status": "ok"})).into_response());
    let readyz = warp::path!("readyz").and(warp::get()).and(with_app.clone()).then(|app: Arc<App>| async move {
        if app.store.ping().await {
            warp::reply::json(&json!({"status": "ready"})).into_response()
        } else {
            let body = json!({"error": {"code": "unavailable", "message": "storage is unreachable"}});
            let mut response =
                warp::reply::with_status(warp::reply::json(&body), StatusCode::SERVICE_UNAVAILABLE).into_response();
            response.headers_mut().insert("retry-after", warp::http::HeaderValue::from(1));
            response
        }
    });
    let metrics = warp::path!("metrics").and(warp::get()).and(with_app.clone()).map(|app: Arc<App>| {
        warp::reply::with_header(app.metrics.render(), "content-type", "text/plain; version=0.0.4").into_response()
    });
    let cluster = warp::path!("cluster").and(warp::get()).and(with_app).then(|app: Arc<App>| async move {
        let regions = &app.regions;
        let live = [
            ("user", regions.users.live().await),
            ("product", regions.products.live().await),
            ("order", regions.orders.live().await),
            ("payment", regions.payments.live().await),
            ("room", regions.rooms.live().await),
        ];
        let name = &app.settings.node_name;
        let entities: usize = live.iter().map(|(_, n)| n).sum();
        let shards: serde_json::Map<String, serde_json::Value> =
            live.iter().map(|(kind, n)| (kind.to_string(), json!({ name.clone(): n }))).collect();
        warp::reply::json(&json!({
            "self": name,
            "members": [{
                "name": name,
                "httpAddr": app.settings.http_addr.to_string(),
                "status": "up",
                "entities": entities,
            }],
            "shards": shards,
        }))
        .into_response()
    });
    healthz.or(readyz).unify().or(metrics).unify().or(cluster).unify().boxed()
}
