//! `GET /openapi.json` and `GET /docs`: the document is served as JSON and is valid OpenAPI 3.1
//! (checked here, and by `openapi-spec-validator` when it is installed: scripts/test.sh puts it in
//! a venv and names its Python in `OPENAPI_TEST_PYTHON`); its routes are exactly the ones the node
//! serves and the ones docs/API.md names; each operation lists the error codes the contract gives
//! it; and the reference page comes with the console's Content-Security-Policy and loads nothing
//! from another origin.

use crate::support::*;
use reqwest::Method;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The methods the API uses, each probed on every documented path (a path serves only some).
const METHODS: [&str; 5] = ["GET", "POST", "PATCH", "PUT", "DELETE"];

async fn served_document(node: &TestNode) -> Value {
    let reply = node.api.get("/openapi.json").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("application/json"), "content type {content_type}");
    assert!(reply.json.is_object(), "the body is a JSON object");
    reply.json
}

fn contract() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/API.md")).expect("docs/API.md")
}

/// (method, path) of every operation in the document.
fn operations(document: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            if !matches!(method.as_str(), "parameters" | "summary" | "description" | "servers") {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// The Python with openapi-spec-validator: $OPENAPI_TEST_PYTHON, or the venv scripts/test.sh
/// makes.
fn validator_python() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("OPENAPI_TEST_PYTHON").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")));
    cache.map(|cache| cache.join("bazaar/openapi-spec-validator/bin/python")).filter(|path| path.is_file())
}

/// Every `$ref` under `value`, with where it is.
fn references(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(target)) => out.push((at.to_owned(), target.clone())),
                    _ => references(inner, &format!("{at}/{key}"), out),
                }
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                references(inner, &format!("{at}/{i}"), out);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
}

#[tokio::test]
async fn the_document_is_served_as_json_and_validates_as_openapi_3_1() {
    let node = TestNode::spawn().await;
    let document = served_document(&node).await;
    assert!(document["openapi"].as_str().unwrap_or_default().starts_with("3.1."), "{}", document["openapi"]);
    assert_eq!(document["info"]["title"], "bazaar");

    let mut found = Vec::new();
    references(&document, "", &mut found);
    assert!(found.iter().any(|(_, target)| target == "#/components/schemas/ErrorBody"));
    for (at, target) in &found {
        let pointer = target.strip_prefix('#').unwrap_or_else(|| panic!("{at}: {target} is not in the document"));
        assert!(document.pointer(pointer).is_some(), "{at}: {target} does not resolve");
    }

    for (path, item) in document["paths"].as_object().unwrap() {
        let in_template: Vec<&str> =
            path.split('/').filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}')).collect();
        for (method, op) in item.as_object().unwrap() {
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .map(|all| all.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
            assert_eq!(declared, in_template, "{method} {path}: its path parameters are its template's");
            for parameter in op["parameters"].as_array().into_iter().flatten() {
                if parameter["in"] == "path" {
                    assert_eq!(parameter["required"], true, "{method} {path}: a path parameter is required");
                }
            }
        }
    }

    let Some(python) = validator_python() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "openapi-spec-validator is missing, and CI must validate the document: scripts/test.sh installs it"
        );
        eprintln!(
            "SKIPPED: openapi-spec-validator is not installed (scripts/test.sh installs it into ~/.cache/bazaar)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&document).unwrap()).unwrap();
    let script = "import json, sys\n\
                  from openapi_spec_validator import OpenAPIV31SpecValidator, validate\n\
                  validate(json.load(open(sys.argv[1])), cls=OpenAPIV31SpecValidator)\n\
                  print('valid OpenAPI 3.1')\n";
    let output = Command::new(&python).arg("-c").arg(script).arg(&file).output().expect("the validator's Python runs");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success() && report.contains("valid OpenAPI 3.1"),
        "the document does not validate:\n{report}"
    );
}

/// A request path for a template: each `{name}` becomes a value the route accepts as that kind.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| match segment {
            "{file}" => "index.html",
            s if s.starts_with('{') => "0193a000-0000-7000-8000-000000000000",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn the_document_names_exactly_the_routes_the_node_serves_and_the_contract_lists() {
    let node = TestNode::spawn().await;
    let document = served_document(&node).await;
    let documented = operations(&document);
    assert!(documented.len() >= 30, "{documented:?}");

    // Every documented operation is served: the node answers it with something other than the
    // "no such route" 404 and the 405 of a path it serves with other methods; every other method
    // on a documented path is 405.
    let mut paths: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (method, path) in &documented {
        paths.entry(path.as_str()).or_default().push(method.as_str());
    }
    for (template, methods) in &paths {
        let path = concrete(template);
        for method in METHODS {
            let reply =
                node.api.send(Method::from_bytes(method.as_bytes()).unwrap(), &path, None, Body::None, &[]).await;
            if methods.contains(&method) {
                assert_ne!(reply.status, 405, "{method} {path} is documented but not served: {}", reply.text);
                assert!(
                    !(reply.status == 404 && reply.message() == "no such route"),
                    "{method} {path} is documented but not served: {}",
                    reply.text
                );
            } else {
                assert_eq!(
                    (reply.status, reply.code()),
                    (405, "method_not_allowed"),
                    "{method} {path} is served but not documented: {}",
                    reply.text
                );
            }
        }
    }
    let unknown = node.api.get("/no/such/route").await;
    assert_eq!((unknown.status, unknown.code()), (404, "not_found"));

    // The contract names the same routes: in its tables (`| METHOD | path |`) or in its text
    // (`METHOD path` in backquotes).
    let text = contract();
    let mut in_contract = BTreeSet::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() > 3 && METHODS.contains(&cells[1]) {
            in_contract.insert((cells[1].to_owned(), cells[2].to_owned()));
        }
        for quoted in line.split('`').skip(1).step_by(2) {
            if let Some((method, path)) = quoted.split_once(' ') {
                if METHODS.contains(&method) && path.starts_with('/') && !path.contains(' ') {
                    in_contract.insert((method.to_owned(), path.to_owned()));
                }
            }
        }
    }
    // The contract may name a route by an instance of its template (`POST /payments/webhooks/toss`).
    let fits = |(method, path): &(String, String)| {
        documented.iter().any(|(m, template)| {
            let (want, got): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
            m == method
                && want.len() == got.len()
                && want.iter().zip(&got).all(|(w, g)| w == g || (w.starts_with('{') && !g.is_empty()))
        })
    };
    let missing: Vec<_> = in_contract.iter().filter(|route| !fits(route)).collect();
    let unnamed: Vec<_> = documented.difference(&in_contract).collect();
    assert!(missing.is_empty(), "docs/API.md names routes the document lacks: {missing:?}");
    assert!(unnamed.is_empty(), "the document has routes docs/API.md does not name: {unnamed:?}");
}

/// docs/API.md's table of codes: code → status.
fn contract_statuses(text: &str) -> BTreeMap<String, u16> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() == 4 && cells[1].starts_with('`') {
            let status: u16 = cells[2].split_whitespace().next().and_then(|s| s.parse().ok()).unwrap_or(0);
            for code in cells[1].split(',') {
                out.insert(code.trim().trim_matches('`').to_owned(), status);
            }
        }
    }
    out
}

#[tokio::test]
async fn every_operation_lists_the_error_statuses_and_codes_the_contract_gives_it() {
    let node = TestNode::spawn().await;
    let document = served_document(&node).await;
    let text = contract();
    let statuses = contract_statuses(&text);
    assert!(statuses.len() >= 20, "the contract's code table: {statuses:?}");

    // The codes are the contract's, in the schema as in the table.
    let schema_codes: BTreeSet<String> = document["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode is an enum")
        .iter()
        .map(|code| code.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(schema_codes, statuses.keys().cloned().collect::<BTreeSet<_>>());

    // Every error response is the error body, with one example per code, each of the status it
    // is listed under.
    for (method, path) in operations(&document) {
        let responses = &document["paths"][&path][method.to_lowercase()]["responses"];
        for (status, response) in responses.as_object().unwrap() {
            if !status.starts_with('4') && !status.starts_with('5') {
                continue;
            }
            let media = &response["content"]["application/json"];
            assert_eq!(media["schema"]["$ref"], "#/components/schemas/ErrorBody", "{method} {path} {status}");
            let examples = media["examples"].as_object().unwrap_or_else(|| panic!("{method} {path} {status}"));
            assert!(!examples.is_empty(), "{method} {path} {status} names no code");
            for (code, example) in examples {
                assert_eq!(example["value"]["error"]["code"], code.as_str());
                assert_eq!(
                    statuses.get(code).map(u16::to_string).as_deref(),
                    Some(status.as_str()),
                    "{method} {path}: {code}"
                );
            }
            if status == "429" || status == "503" {
                assert!(response["headers"]["Retry-After"].is_object(), "{method} {path} {status}: Retry-After");
            }
        }
    }

    // What each row of the contract's tables says an operation answers is in its responses: the
    // codes the row names (at their status) and the error statuses it names.
    let listed = |method: &str, path: &str, status: u16, code: Option<&str>| {
        let response = &document["paths"][path][method.to_lowercase()]["responses"][status.to_string()];
        assert!(response.is_object(), "{method} {path}: the contract gives {status}, the document does not");
        if let Some(code) = code {
            assert!(
                response["content"]["application/json"]["examples"][code].is_object(),
                "{method} {path}: the contract gives {code} ({status}), the document does not"
            );
        }
    };
    let mut rows = 0;
    for line in text.lines() {
        // `\|` is a pipe inside a cell (`"BUYER"\|"SELLER"`), not a cell's end.
        let line = line.replace("\\|", "/");
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 7 || !METHODS.contains(&cells[1]) {
            continue;
        }
        rows += 1;
        let (method, path, success) = (cells[1], cells[2], cells[5]);
        for quoted in success.split('`').skip(1).step_by(2) {
            if let Some(status) = statuses.get(quoted) {
                listed(method, path, *status, Some(quoted));
            }
        }
        for word in success.split(|c: char| !c.is_ascii_digit()) {
            if let Ok(status @ 400..=599) = word.parse::<u16>() {
                listed(method, path, status, None);
            }
        }
        if cells[3] != "anyone" && !cells[3].starts_with("the payment provider") {
            listed(method, path, 401, Some("unauthorized"));
        }
    }
    assert!(rows >= 20, "the contract's route tables: {rows} rows");
}

#[tokio::test]
async fn the_reference_page_is_served_with_its_policy_and_loads_only_from_its_own_origin() {
    let node = TestNode::spawn().await;
    let page = node.api.get("/docs").await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap_or_default().starts_with("text/html"));
    let policy = page.header("content-security-policy").expect("a Content-Security-Policy");
    for directive in ["default-src 'self'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
        assert!(policy.contains(directive), "{directive} in {policy}");
    }
    assert!(!policy.contains("unsafe-inline") && !policy.contains("http"), "{policy}");
    assert_eq!(page.header("x-content-type-options").as_deref(), Some("nosniff"));

    // Everything the page loads is a path on this node, and is there.
    let mut loaded = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for rest in page.text.split(attribute).skip(1) {
            loaded.push(rest.split('"').next().unwrap().to_owned());
        }
    }
    assert!(loaded.iter().any(|l| l == "/docs/reference.js"), "{loaded:?}");
    assert!(
        !page.text.contains("<script>") && !page.text.contains("style="),
        "nothing inline, which the policy forbids"
    );
    let script = node.api.get("/docs/reference.js").await;
    assert_eq!(script.status, 200);
    assert!(script.header("content-type").unwrap_or_default().starts_with("text/javascript"));
    for rest in script.text.split("fetch(").skip(1) {
        loaded.push(rest.trim_start_matches(['"', '\'']).split(['"', '\'']).next().unwrap().to_owned());
    }
    assert!(loaded.iter().any(|l| l == "/openapi.json"), "the page renders the document: {loaded:?}");
    for body in [&page.text, &script.text] {
        assert!(!body.contains("http://") && !body.contains("https://") && !body.contains("//cdn"), "no other origin");
    }
    for target in loaded.iter().filter(|target| !target.starts_with('#')) {
        assert!(target.starts_with('/') && !target.starts_with("//"), "{target} is not a path of this origin");
        let reply = node.api.get(target).await;
        assert_eq!(reply.status, 200, "the page loads {target}, which answers {}", reply.status);
    }
}
