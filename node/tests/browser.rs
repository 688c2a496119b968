//! The web console, as a browser gets it: the page and its files are served with the policy that
//! confines them (checked here over HTTP, always), and the buyer and seller flows run in a real
//! Chromium driven by Playwright (node/tests/browser/console.py, which starts its own node).
//!
//! The browser run needs Python with Playwright and a Chromium: scripts/test.sh installs them and
//! sets `BROWSER_TEST_PYTHON` to that Python. Without the variable the browser test says so and
//! passes; with it, the script's failure is this test's failure. (The name has no `BAZAAR_`
//! prefix: every node of every test inherits the environment, and refuses unknown `BAZAAR_`
//! settings.) `BROWSER_TEST_SCREENSHOTS` names a directory for the run's screenshots.

#[path = "common/mod.rs"]
mod common;

use common::{database_env, send_request, serve_command, server_env, spawn_until_ready, Body, NotReady, Reply};
use reqwest::Method;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// The script's own deadline is 150 s; this one only catches a Python that never starts.
const BROWSER_DEADLINE: Duration = Duration::from_secs(240);

/// A node of its own on port 0; returns it with its base URL.
async fn spawn_node(dir: &Path) -> (tokio::process::Child, String) {
    let data_dir = dir.join("data");
    let mut command = serve_command();
    command
        .args(["--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .envs(server_env(dir))
        .envs(database_env(&data_dir).await);
    let log = dir.join("node.log");
    let (child, line) = match spawn_until_ready(&mut command, &log, Duration::from_secs(60)).await {
        Ok(ready) => ready,
        Err(NotReady::Exited | NotReady::TimedOut) => panic!("the node did not start:\n{}", common::log_tail(&log, 40)),
    };
    let addr = line.split_whitespace().find_map(|field| field.strip_prefix("http=")).expect("the ready line's address");
    (child, format!("http://{addr}"))
}

/// One request without a token, read to the end.
async fn request(client: &reqwest::Client, method: Method, url: &str) -> Reply {
    send_request(client, method, url, None, Body::None, &[]).await.unwrap_or_else(|e| panic!("{url}: {e}"))
}

#[tokio::test]
async fn the_console_is_served_at_the_root_with_a_policy_that_allows_only_its_own_origin() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, base) = spawn_node(dir.path()).await;
    let client = common::http_client_builder().build().unwrap();
    let page = request(&client, Method::GET, &format!("{base}/")).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(page.header("content-type").as_deref(), Some("text/html; charset=utf-8"));
    assert!(page.text.contains(r#"<script src="/console/app.js""#), "{}", page.text);
    let policy = page.header("content-security-policy").expect("a Content-Security-Policy");
    assert!(policy.contains("default-src 'self'") && policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"), "{policy}");
    assert_eq!(page.header("x-content-type-options").as_deref(), Some("nosniff"));

    for (file, content_type, holds) in [
        ("app.js", "text/javascript; charset=utf-8", "new WebSocket("),
        ("style.css", "text/css; charset=utf-8", ".messages"),
    ] {
        let reply = request(&client, Method::GET, &format!("{base}/console/{file}")).await;
        assert_eq!(reply.status, 200, "{file}");
        assert_eq!(reply.header("content-type").as_deref(), Some(content_type), "{file}");
        assert!(reply.text.contains(holds), "{file}");
    }

    // Anything else under /console is the API's JSON 404, and the page is only read.
    let missing = request(&client, Method::GET, &format!("{base}/console/../Cargo.toml")).await;
    assert_eq!(missing.status, 404);
    let unknown = request(&client, Method::GET, &format!("{base}/console/secrets.js")).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json["error"]["code"], "not_found");
    let posted = request(&client, Method::POST, &format!("{base}/")).await;
    assert_eq!(posted.status, 405);
    assert_eq!(posted.json["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn a_buyer_and_a_seller_run_the_console_flows_in_a_real_browser() {
    let Some(python) = std::env::var_os("BROWSER_TEST_PYTHON").filter(|p| !p.is_empty()) else {
        eprintln!("skipped: BROWSER_TEST_PYTHON is unset (scripts/test.sh sets it to a Python with Playwright)");
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console.py");
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut command = tokio::process::Command::new(&python);
    command
        .arg(&script)
        .arg("--bin")
        .arg(env!("CARGO_BIN_EXE_bazaar"))
        // The node the script starts uses the suite's backends in its second pass, like any test's.
        .envs(server_env(dir.path()))
        .envs(database_env(&data_dir).await)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(shots) = std::env::var_os("BROWSER_TEST_SCREENSHOTS").filter(|p| !p.is_empty()) {
        command.arg("--screenshots").arg(shots);
    }
    if let Some(chromium) = std::env::var_os("BROWSER_TEST_CHROMIUM").filter(|p| !p.is_empty()) {
        command.arg("--chromium").arg(chromium);
    }
    let output = tokio::time::timeout(BROWSER_DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| panic!("the browser test ran past {BROWSER_DEADLINE:?}"))
        .expect("the Python of BROWSER_TEST_PYTHON runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the browser test failed ({}):\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("every check held"), "{stdout}\n{stderr}");
}
