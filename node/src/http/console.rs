//! The web console: a small app (plain HTML, CSS and JavaScript, no framework, no build step)
//! embedded in the binary and served at `/` and `/console/...`. It speaks only the public API, from
//! the same origin: the pages it is served from can reach nothing else, which the
//! Content-Security-Policy below enforces.

use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

/// One embedded file of the console.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// Every file the console has; the names are what `/console/NAME` serves.
const ASSETS: [Asset; 3] = [
    Asset { name: "index.html", content_type: "text/html; charset=utf-8", body: include_str!("console/index.html") },
    Asset { name: "app.js", content_type: "text/javascript; charset=utf-8", body: include_str!("console/app.js") },
    Asset { name: "style.css", content_type: "text/css; charset=utf-8", body: include_str!("console/style.css") },
];

/// Scripts and styles only from this origin (no inline script, so an injected `<script>` or
/// `onclick=` never runs), requests only to this origin and its WebSocket, never framed (no
/// clickjacking), no `<base>` rewriting and forms that post nowhere else. `ws:`/`wss:` are named
/// because `'self'` does not match a WebSocket URL in every browser.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

/// `GET /` (the console's page) and `GET /console/NAME` (its files); an unknown file is the API's
/// 404, as for any unknown route.
pub fn routes() -> BoxedFilter<(Response,)> {
    let index = warp::path::end().and(warp::get()).map(|| serve("index.html"));
    let file = warp::path!("console" / String).and(warp::get()).and_then(|name: String| async move {
        if ASSETS.iter().any(|asset| asset.name == name) {
            Ok(serve(&name))
        } else {
            Err(warp::reject::not_found())
        }
    });
    index.or(file).unify().boxed()
}

/// The response for an embedded file; `name` is one of [`ASSETS`].
fn serve(name: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|asset| asset.name == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    embedded_file(asset.body, asset.content_type)
}

/// A file embedded in the binary (the console's, the reference page's), under the console's
/// Content-Security-Policy.
pub(super) fn embedded_file(body: &'static str, content_type: &'static str) -> Response {
    let mut response = warp::reply::with_status(body, StatusCode::OK).into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(content_type));
    headers.insert("content-security-policy", HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    // The files change with the binary: a browser revalidates rather than run an old app.js
    // against a newer node.
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_files_that_are_embedded() {
        let page = ASSETS[0].body;
        for asset in &ASSETS[1..] {
            assert!(page.contains(&format!("/console/{}", asset.name)), "index.html loads {}", asset.name);
        }
        assert!(!page.contains("http://") && !page.contains("https://"), "nothing is fetched from elsewhere");
        assert!(!page.contains("<script>"), "no inline script, which the policy forbids");
        for handler in ["onclick=", "onload=", "onsubmit=", "oninput=", "style="] {
            assert!(!page.contains(handler), "no inline {handler}, which the policy forbids");
        }
    }
}
