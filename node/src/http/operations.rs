//! Operations: liveness and readiness ([`probes`], outside the request limit), Prometheus metrics,
//! the cluster view, and what this node is (`/info`).

use crate::app::App;
use bazaar_actors::cluster::router::{NodeStats, RouterMsg};
use bazaar_actors::store::backend::Backend;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

/// Liveness and readiness, served before the node's in-flight request limit so they never queue
/// behind (or get refused with) the requests it is busy with.
pub fn probes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let with_app = warp::any().map(move || app.clone());
    let healthz =
        warp::path!("healthz").and(warp::get()).map(|| warp::reply::json(&json!({"status": "ok"})).into_response());
    let readyz = warp::path!("readyz").and(warp::get()).and(with_app.clone()).then(|app: Arc<App>| async move {
        if app.reads.ping().await {
            warp::reply::json(&json!({"status": "ready"})).into_response()
        } else {
            let body = json!({"error": {"code": "unavailable", "message": "storage is unreachable"}});
            let mut response =
                warp::reply::with_status(warp::reply::json(&body), StatusCode::SERVICE_UNAVAILABLE).into_response();
            response.headers_mut().insert("retry-after", warp::http::HeaderValue::from(1));
            response
        }
    });
    healthz.or(readyz).unify().boxed()
}

/// The other operations routes: `/info`, and with `internal` the metrics and the cluster view
/// (which name every node, its address and its load: for the operators' network only, see
/// `ops_http_addr`).
pub fn routes(app: Arc<App>, internal: bool) -> BoxedFilter<(Response,)> {
    let with_app = warp::any().map(move || app.clone());
    let metrics = warp::path!("metrics").and(warp::get()).and(with_app.clone()).map(|app: Arc<App>| {
        // Read off the gate at scrape time (this scrape counts itself): no bookkeeping per request.
        let in_flight = app.settings.max_in_flight_requests.saturating_sub(app.in_flight.available_permits());
        metrics::gauge!("bazaar_http_requests_in_flight").set(in_flight as f64);
        if let Some(heap) = crate::allocator::usage() {
            metrics::gauge!("bazaar_heap_bytes", "state" => "in_use").set(heap.in_use as f64);
            metrics::gauge!("bazaar_heap_bytes", "state" => "free").set(heap.free as f64);
            metrics::gauge!("bazaar_heap_bytes", "state" => "mapped").set(heap.mapped as f64);
        }
        metrics::gauge!("bazaar_sqlite_memory_bytes").set(crate::allocator::sqlite_in_use() as f64);
        warp::reply::with_header(app.metrics.render(), "content-type", "text/plain; version=0.0.4").into_response()
    });
    let info = warp::path!("info")
        .and(warp::get())
        .and(with_app.clone())
        .map(|app: Arc<App>| warp::reply::json(&info(&app)).into_response());
    let cluster = warp::path!("cluster")
        .and(warp::get())
        .and(with_app)
        .then(|app: Arc<App>| async move { warp::reply::json(&cluster_view(&app).await).into_response() });
    match internal {
        true => metrics.or(cluster).unify().or(info).unify().boxed(),
        false => info.boxed(),
    }
}

/// `GET /info`: the version and build, the node's name, and which backends it runs on, by kind
/// only (a URL can hold a password; none is shown).
fn info(app: &App) -> serde_json::Value {
    let settings = &app.settings;
    let database = match app.reads.backend() {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
        Backend::Mysql => "mysql",
    };
    json!({
        "name": "bazaar",
        "version": env!("CARGO_PKG_VERSION"),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "node": settings.node_name,
        "clustered": app.view.is_some(),
        "backends": {
            "database": database,
            "eventLog": if settings.kafka_brokers.trim().is_empty() { "embedded" } else { "kafka" },
            "cache": if settings.redis_url.trim().is_empty() { "none" } else { "redis" },
            "paymentGateway": settings.gateway,
        },
    })
}

/// `GET /cluster`: every configured node with its status and live entities, and the entities of
/// each kind per node.
async fn cluster_view(app: &App) -> serde_json::Value {
    let name = app.settings.node_name.clone();
    let mut stats: BTreeMap<String, NodeStats> = BTreeMap::new();
    stats.insert(name.clone(), NodeStats { entities: app.regions.live().await });
    let peers = app.view.as_ref().map(|view| view.peer_routers()).unwrap_or_default();
    let asks = peers.iter().map(|(peer, router)| async move {
        let answer = ractor::call_t!(router, RouterMsg::Stats, 500, String::new());
        let parsed = answer.ok().and_then(|text| serde_json::from_str::<NodeStats>(&text).ok());
        (peer.clone(), parsed)
    });
    for (peer, answer) in futures_util::future::join_all(asks).await {
        stats.insert(peer, answer.unwrap_or_default());
    }
    let mut members = Vec::new();
    let http_of = |node: &str| app.nodes.iter().find(|n| n.name == node).map(|n| n.http_addr.to_string());
    members.push(json!({
        "name": name,
        "httpAddr": app.settings.http_addr.to_string(),
        "status": "up",
        "entities": stats[&name].entities.values().sum::<usize>(),
    }));
    for (peer, _) in &peers {
        members.push(json!({
            "name": peer,
            "httpAddr": http_of(peer),
            "status": "up",
            "entities": stats.get(peer).map_or(0, |s| s.entities.values().sum::<usize>()),
        }));
    }
    for configured in app.nodes.iter().filter(|n| n.name != name && !peers.iter().any(|(p, _)| p == &n.name)) {
        members.push(json!({
            "name": configured.name,
            "httpAddr": configured.http_addr.to_string(),
            "status": "down",
            "entities": 0,
        }));
    }
    let mut shards: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for (node, node_stats) in &stats {
        for (kind, count) in &node_stats.entities {
            shards.entry(kind.clone()).or_default().insert(node.clone(), *count);
        }
    }
    json!({ "self": name, "members": members, "shards": shards })
}
