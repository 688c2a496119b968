//! compose.yaml cannot be started here (no Docker engine), so this checks what holds without one:
//! the services refer to each other and to files of the repository that exist, Prometheus and
//! Grafana point at what compose runs, and each bazaar node's flags, mounted cluster file and
//! environment are accepted by the real binary: `bazaar config` loads them exactly as `serve`
//! would and prints what arrived.

use bazaar_node::config::ClusterFile;
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Stand-ins for the variables a user exports before `docker compose up`.
const JWT_SECRET: &str = "compose-test-jwt-secret-0123456789abcdef";
const CLUSTER_COOKIE: &str = "compose-test-cluster-cookie";
const DB_PASSWORD: &str = "compose-test-db-password";
const GRAFANA_ADMIN_PASSWORD: &str = "compose-test-grafana-password";

/// Services the issue asks for; the bazaar nodes are the ones built from the Dockerfile.
const REQUIRED: [&str; 8] = ["kafka", "postgres", "redis", "node1", "node2", "node3", "prometheus", "grafana"];

/// Variables the binary reads itself rather than as settings (see `Settings::load`).
const NOT_SETTINGS: [&str; 2] = ["BAZAAR_CLUSTER_COOKIE", "BAZAAR_LOG"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// compose.yaml with its `<<: *anchor` merges applied, as compose reads it.
fn compose() -> Value {
    let text = std::fs::read_to_string(repo().join("compose.yaml")).unwrap();
    let mut compose: Value = serde_yaml_ng::from_str(&text).unwrap();
    compose.apply_merge().unwrap();
    compose
}

fn services(compose: &Value) -> BTreeMap<String, Value> {
    serde_yaml_ng::from_value(compose["services"].clone()).expect("services is a mapping")
}

/// The image built from this repository (by the one service with a `build`).
fn built_image(compose: &Value) -> String {
    let builders: Vec<(String, Value)> =
        services(compose).into_iter().filter(|(_, service)| !service["build"].is_null()).collect();
    assert_eq!(
        builders.len(),
        1,
        "one service builds the image: {:?}",
        builders.iter().map(|b| &b.0).collect::<Vec<_>>()
    );
    text(&builders[0].1["image"])
}

/// The bazaar nodes: the services that run the image built from this repository.
fn nodes(compose: &Value) -> BTreeMap<String, Value> {
    let image = built_image(compose);
    services(compose).into_iter().filter(|(_, service)| service["image"].as_str() == Some(image.as_str())).collect()
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

fn list(value: &Value) -> Vec<String> {
    value.as_sequence().map(|items| items.iter().map(text).collect()).unwrap_or_default()
}

/// A service's environment, in either of compose's two forms (mapping or `KEY=value` list).
fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Mapping(map) => map.iter().map(|(k, v)| (text(k), text(v))).collect(),
        Value::Sequence(_) => list(&service["environment"])
            .into_iter()
            .map(|line| {
                let (k, v) = line.split_once('=').unwrap_or((&line, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// Bind mounts (`./host:/container[:mode]`) as (repository path, container path).
fn bind_mounts(service: &Value) -> Vec<(PathBuf, String)> {
    list(&service["volumes"])
        .into_iter()
        .filter(|volume| volume.starts_with("./"))
        .map(|volume| {
            let mut parts = volume.split(':');
            let host = repo().join(parts.next().unwrap());
            (host, parts.next().expect("a bind mount names its container path").to_owned())
        })
        .collect()
}

/// The repository path mounted at `container_path`.
fn mounted(service: &Value, container_path: &str) -> PathBuf {
    let mounts = bind_mounts(service);
    let found = mounts.iter().find(|(_, inside)| inside == container_path);
    found.unwrap_or_else(|| panic!("nothing is mounted at {container_path}: {mounts:?}")).0.clone()
}

/// `[IP:]HOST:CONTAINER` port pairs, as (host, container).
fn ports(service: &Value) -> Vec<(u16, u16)> {
    published(service).into_iter().map(|(_, host, container)| (host, container)).collect()
}

/// `[IP:]HOST:CONTAINER` ports, as (the host address bound, or "" for all, host, container).
fn published(service: &Value) -> Vec<(String, u16, u16)> {
    list(&service["ports"])
        .into_iter()
        .map(|port| {
            let (rest, container) = port.rsplit_once(':').expect("ports are [IP:]HOST:CONTAINER");
            let (ip, host) = rest.rsplit_once(':').unwrap_or(("", rest));
            (ip.to_owned(), host.parse().unwrap(), container.parse().unwrap())
        })
        .collect()
}

/// The value after `flag` in a node's command.
fn flag<'a>(command: &'a [String], flag: &str) -> &'a str {
    let at = command.iter().position(|arg| arg == flag).unwrap_or_else(|| panic!("{flag} missing from {command:?}"));
    &command[at + 1]
}

/// Compose's variable interpolation: `$$`, `$NAME`, `${NAME}`, `${NAME:-default}`,
/// `${NAME-default}`, `${NAME:?message}` and `${NAME?message}`. A required variable that is
/// missing is an error, as it stops `docker compose up`.
fn interpolate(value: &str, vars: &BTreeMap<&str, &str>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(braced) = rest.strip_prefix('{') {
            // The closing brace of this expression: a default may hold `${...}` of its own.
            let mut depth = 0usize;
            let end = braced
                .char_indices()
                .find(|&(_, c)| match c {
                    '{' => {
                        depth += 1;
                        false
                    }
                    '}' if depth == 0 => true,
                    '}' => {
                        depth -= 1;
                        false
                    }
                    _ => false,
                })
                .map(|(at, _)| at)
                .ok_or_else(|| format!("unclosed ${{ in {value:?}"))?;
            let (expression, after) = (&braced[..end], &braced[end + 1..]);
            let name_end =
                expression.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(expression.len());
            let (name, modifier) = expression.split_at(name_end);
            let set = vars.get(name).copied();
            let set_nonempty = set.filter(|v| !v.is_empty());
            out.push_str(&match modifier {
                "" => set.unwrap_or_default().to_owned(),
                m if m.starts_with(":-") => match set_nonempty {
                    Some(set) => set.to_owned(),
                    None => interpolate(&m[2..], vars)?,
                },
                m if m.starts_with('-') => match set {
                    Some(set) => set.to_owned(),
                    None => interpolate(&m[1..], vars)?,
                },
                m if m.starts_with(":?") => set_nonempty.ok_or_else(|| format!("{name}: {}", &m[2..]))?.to_owned(),
                m if m.starts_with('?') => set.ok_or_else(|| format!("{name}: {}", &m[1..]))?.to_owned(),
                m => return Err(format!("unsupported interpolation {m:?} in {value:?}")),
            });
            rest = after;
        } else {
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            out.push_str(vars.get(&rest[..end]).copied().unwrap_or_default());
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn user_variables() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("JWT_SECRET", JWT_SECRET),
        ("CLUSTER_COOKIE", CLUSTER_COOKIE),
        ("DB_PASSWORD", DB_PASSWORD),
        ("GRAFANA_ADMIN_PASSWORD", GRAFANA_ADMIN_PASSWORD),
    ])
}

/// A node's environment as its container gets it, with the test's stand-in secrets.
fn node_environment(node: &Value) -> BTreeMap<String, String> {
    let vars = user_variables();
    environment(node).into_iter().map(|(k, v)| (k, interpolate(&v, &vars).unwrap())).collect()
}

/// Runs `bazaar config` with a node's flags (its `serve` swapped for `config`, the cluster file
/// at its repository path) and with exactly `env` besides PATH.
fn bazaar_config(node: &Value, env: &BTreeMap<String, String>) -> Output {
    let command = list(&node["command"]);
    assert_eq!(command.first().map(String::as_str), Some("serve"), "nodes run `bazaar serve`: {command:?}");
    let cluster_file = mounted(node, flag(&command, "--config"));
    let mut args: Vec<String> = vec!["config".into()];
    let mut rest = command[1..].iter();
    while let Some(arg) = rest.next() {
        args.push(arg.clone());
        if arg == "--config" {
            rest.next();
            args.push(cluster_file.display().to_string());
        }
    }
    Command::new(env!("CARGO_BIN_EXE_bazaar"))
        .args(&args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env)
        .output()
        .unwrap()
}

/// `scheme://user:***@host` for a URL with a password, as `bazaar config` prints it.
fn masked(url: &str) -> String {
    match url.split_once("://").and_then(|(scheme, rest)| Some((scheme, rest.rsplit_once('@')?))) {
        Some((scheme, (userinfo, host))) if userinfo.contains(':') => {
            format!("{scheme}://{}:***@{host}", userinfo.split_once(':').unwrap().0)
        }
        _ => url.to_owned(),
    }
}

#[test]
fn every_required_service_is_there_with_an_image_or_a_build() {
    let compose = compose();
    let services = services(&compose);
    for name in REQUIRED {
        let service = services.get(name).unwrap_or_else(|| panic!("compose.yaml has no service {name}"));
        assert!(!service["image"].is_null() || !service["build"].is_null(), "{name} has neither image nor build");
    }
    assert!(text(&services["kafka"]["image"]).starts_with("apache/kafka:"), "Kafka is the official image");
    let nodes = nodes(&compose);
    assert_eq!(nodes.keys().collect::<Vec<_>>(), ["node1", "node2", "node3"]);
    // One build for all nodes: node1 builds, the others run its image and never pull it.
    for (name, node) in &nodes {
        assert_eq!(text(&node["pull_policy"]), "never", "{name} would look for bazaar's image in a registry");
        if node["build"].is_null() {
            continue;
        }
        let context = match &node["build"] {
            Value::String(context) => context.clone(),
            build => text(&build["context"]),
        };
        assert!(repo().join(&context).join("Dockerfile").is_file(), "{name} builds {context}, which has no Dockerfile");
    }
    assert_eq!(nodes.values().filter(|node| !node["build"].is_null()).count(), 1, "the image is built once");
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("COPY . .") && dockerfile.contains("--locked -p bazaar-node"));
    assert!(dockerfile.contains(r#"ENTRYPOINT ["bazaar"]"#));
}

#[test]
fn dependencies_ports_and_volumes_refer_to_what_exists() {
    let compose = compose();
    let services = services(&compose);
    let named_volumes: BTreeSet<String> =
        compose["volumes"].as_mapping().map(|m| m.keys().map(text).collect()).unwrap_or_default();
    let mut host_ports = BTreeSet::new();
    for (name, service) in &services {
        let depends_on: Vec<(String, String)> = match &service["depends_on"] {
            Value::Mapping(map) => map.iter().map(|(k, v)| (text(k), text(&v["condition"]))).collect(),
            other => list(other).into_iter().map(|k| (k, "service_started".into())).collect(),
        };
        for (dependency, condition) in depends_on {
            let target = services.get(&dependency).unwrap_or_else(|| panic!("{name} depends on unknown {dependency}"));
            assert_ne!(&dependency, name);
            if condition == "service_healthy" {
                assert!(
                    !target["healthcheck"].is_null(),
                    "{name} waits for {dependency} to be healthy, which has no healthcheck"
                );
            }
        }
        for (host, _) in ports(service) {
            assert!(host_ports.insert(host), "host port {host} is published twice");
        }
        for volume in list(&service["volumes"]) {
            let source = volume.split(':').next().unwrap();
            if source.starts_with("./") {
                assert!(repo().join(source).exists(), "{name} mounts {source}, which is not in the repository");
            } else {
                assert!(named_volumes.contains(source), "{name} uses the undeclared volume {source}");
            }
        }
    }
    let published = |name: &str| ports(&services[name]).into_iter().map(|(host, _)| host).collect::<Vec<_>>();
    assert_eq!([published("node1"), published("node2"), published("node3")].concat(), [8081, 8082, 8083]);
    assert_eq!(published("prometheus"), [9090]);
    assert_eq!(published("grafana"), [3000]);
}

#[test]
fn each_node_runs_a_node_of_its_cluster_file_reached_by_its_service_name() {
    let compose = compose();
    // Peers are dialled by name, so nothing pins addresses: no subnet to collide with the host's.
    assert!(compose["networks"]["default"]["ipam"].is_null(), "compose.yaml pins a subnet again");
    let mut cluster_files = BTreeSet::new();
    let mut run = BTreeSet::new();
    for (name, node) in nodes(&compose) {
        let command = list(&node["command"]);
        let path = mounted(&node, flag(&command, "--config"));
        let entries = ClusterFile::read(&path).unwrap().nodes;
        let node_name = flag(&command, "--node");
        let entry = entries.iter().find(|entry| entry.name == node_name);
        let entry = entry.unwrap_or_else(|| panic!("{name} runs {node_name}, which {} does not list", path.display()));
        assert!(entry.http_addr.ip().is_unspecified(), "{name} must listen on every interface of its container");
        assert!(ports(&node).iter().any(|&(_, container)| container == entry.http_addr.port()));
        let cluster_addr = entry.cluster_addr.clone().unwrap_or_else(|| panic!("{node_name} has no cluster_addr"));
        // The service name is the container's name on the compose network, whatever its address.
        assert_eq!(cluster_addr.host(), name, "{name}: cluster_addr must name the service");
        assert!(node["networks"].is_null(), "{name} is given a network setup of its own: {:?}", node["networks"]);
        assert!(run.insert(node_name.to_owned()), "{node_name} is run twice");
        cluster_files.insert(path);
    }
    assert_eq!(cluster_files.len(), 1, "the nodes must share one cluster file");
    // A listed node nobody runs would be dialed forever.
    let listed: BTreeSet<String> =
        ClusterFile::read(cluster_files.first().unwrap()).unwrap().nodes.into_iter().map(|n| n.name).collect();
    assert_eq!(listed, run);
}

#[test]
fn prometheus_scrapes_exactly_the_nodes() {
    let compose = compose();
    let config = mounted(&services(&compose)["prometheus"], "/etc/prometheus/prometheus.yml");
    let config: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    let targets: BTreeSet<String> = config["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|job| job["static_configs"].as_sequence().cloned().unwrap_or_default())
        .flat_map(|statics| list(&statics["targets"]))
        .collect();
    // On the nodes' operations listener, which the compose network reaches and nothing publishes.
    let expected: BTreeSet<String> = nodes(&compose)
        .iter()
        .map(|(name, node)| {
            let ops = &node_environment(node)["BAZAAR_OPS_HTTP_ADDR"];
            format!("{name}:{}", ops.rsplit_once(':').unwrap().1)
        })
        .collect();
    assert_eq!(targets, expected);
}

#[test]
fn grafana_provisions_the_dashboard_of_deploy_from_prometheus() {
    let compose = compose();
    let services = services(&compose);
    let grafana = &services["grafana"];
    let provisioning = mounted(grafana, "/etc/grafana/provisioning");
    let read_yaml =
        |path: PathBuf| -> Value { serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap() };

    let datasources = read_yaml(provisioning.join("datasources/prometheus.yaml"));
    let datasource = &datasources["datasources"][0];
    assert_eq!(text(&datasource["url"]), format!("http://prometheus:{}", ports(&services["prometheus"])[0].1));

    let providers = read_yaml(provisioning.join("dashboards/bazaar.yaml"));
    let dashboards = mounted(grafana, &text(&providers["providers"][0]["options"]["path"]));
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dashboards.join("bazaar.json")).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(!panels.is_empty());
    for panel in panels {
        assert_eq!(
            panel["datasource"]["uid"],
            text(&datasource["uid"]),
            "panel {} uses another data source",
            panel["title"]
        );
    }
}

#[test]
fn secrets_come_from_the_callers_environment_and_are_required() {
    let compose = compose();
    for (name, node) in nodes(&compose) {
        let env = environment(&node);
        for (key, variable) in [("BAZAAR_JWT_SECRET", "JWT_SECRET"), ("BAZAAR_CLUSTER_COOKIE", "CLUSTER_COOKIE")] {
            let value = &env[key];
            assert!(
                value.starts_with(&format!("${{{variable}:?")),
                "{name}: {key} must be ${{{variable}:?...}}, got {value}"
            );
            assert!(interpolate(value, &BTreeMap::new()).is_err(), "{name}: {key} must be refused when unset");
        }
        // The database's password too, in the default URL.
        let mut vars = user_variables();
        vars.remove("DB_PASSWORD");
        assert!(interpolate(&env["BAZAAR_DATABASE_URL"], &vars).is_err(), "{name}: the URL needs DB_PASSWORD");
    }
    let services = services(&compose);
    for (service, key, variable) in [
        ("postgres", "POSTGRES_PASSWORD", "DB_PASSWORD"),
        ("mysql", "MYSQL_PASSWORD", "DB_PASSWORD"),
        ("grafana", "GF_SECURITY_ADMIN_PASSWORD", "GRAFANA_ADMIN_PASSWORD"),
    ] {
        let value = &environment(&services[service])[key];
        assert!(
            value.starts_with(&format!("${{{variable}:?")),
            "{service}: {key} must be ${{{variable}:?...}}, got {value}"
        );
    }
}

#[test]
fn no_password_is_written_in_the_file() {
    let file = std::fs::read_to_string(repo().join("compose.yaml")).unwrap();
    for (at, line) in file.lines().enumerate().filter(|(_, line)| !line.trim_start().starts_with('#')) {
        let lower = line.to_lowercase();
        // A URL's user information holds no literal password, and no *PASSWORD* key a literal value.
        if let Some((_, after)) = line.split_once("://") {
            if let Some((userinfo, _)) = after.split_once('@') {
                if let Some((_, password)) = userinfo.split_once(':') {
                    assert!(password.starts_with('$'), "line {}: a password in a URL: {line}", at + 1);
                }
            }
        }
        if lower.contains("password") {
            if let Some((key, value)) = line.split_once(": ") {
                let value = value.trim().trim_matches('"');
                let generated = key.trim() == "MYSQL_RANDOM_ROOT_PASSWORD" && value == "yes";
                assert!(value.starts_with('$') || generated || key.contains("test"), "line {}: {line}", at + 1);
            }
        }
        assert!(!lower.contains("-pbazaar") && !lower.contains(":bazaar@"), "line {}: {line}", at + 1);
    }
}

#[test]
fn every_image_is_pinned_to_an_exact_version() {
    let compose = compose();
    let image = built_image(&compose);
    for (name, service) in services(&compose) {
        let wanted = text(&service["image"]);
        if wanted == image {
            continue;
        }
        let (repository, tag) = wanted.rsplit_once(':').unwrap_or_else(|| panic!("{name}: {wanted} has no tag"));
        let tag = tag.trim_start_matches('v');
        let parts: Vec<&str> = tag.split('.').collect();
        let numeric = parts.iter().all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
        // PostgreSQL numbers a release MAJOR.MINOR (16.6); everyone else here MAJOR.MINOR.PATCH.
        let release_parts = if repository == "postgres" { 2 } else { 3 };
        let exact = wanted.contains("@sha256:") || (numeric && parts.len() == release_parts);
        assert!(exact, "{name}: {wanted} is not an exact version (MAJOR.MINOR.PATCH or a digest)");
    }
}

#[test]
fn published_ports_are_bound_to_loopback_and_metrics_and_the_cluster_view_stay_inside() {
    let compose = compose();
    let services = services(&compose);
    for (name, service) in &services {
        for (ip, host, _) in published(service) {
            assert_eq!(ip, "127.0.0.1", "{name} publishes {host} to every interface");
        }
    }
    for (name, node) in nodes(&compose) {
        let env = node_environment(&node);
        let ops = env.get("BAZAAR_OPS_HTTP_ADDR").unwrap_or_else(|| panic!("{name} serves /metrics on its API port"));
        let ops_port: u16 = ops.rsplit_once(':').unwrap().1.parse().unwrap();
        assert!(ports(&node).iter().all(|&(_, container)| container != ops_port), "{name} publishes {ops}");
        // The binary agrees: that listener is where /metrics and /cluster go.
        let output = bazaar_config(&node, &env);
        assert!(output.status.success(), "{name}: {}", String::from_utf8_lossy(&output.stderr));
        let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(printed["settings"]["ops_http_addr"], ops.as_str(), "{name}");
        assert_ne!(printed["settings"]["http_addr"], ops.as_str(), "{name}");
    }
}

#[test]
fn kafka_keeps_its_log_on_a_volume() {
    let compose = compose();
    let kafka = &services(&compose)["kafka"];
    let log_dirs = &environment(kafka)["KAFKA_LOG_DIRS"];
    let volumes = list(&kafka["volumes"]);
    let volume = volumes.iter().find(|v| v.split(':').nth(1) == Some(log_dirs.as_str()));
    let volume = volume.unwrap_or_else(|| panic!("nothing is mounted at KAFKA_LOG_DIRS={log_dirs}: {volumes:?}"));
    let source = volume.split(':').next().unwrap();
    assert!(!source.starts_with('.') && !source.starts_with('/'), "a named volume, not a host path: {volume}");
}

#[test]
fn every_nodes_environment_reaches_the_binary_as_its_settings() {
    let compose = compose();
    let nodes = nodes(&compose);
    for (name, node) in &nodes {
        let env = node_environment(node);
        let output = bazaar_config(node, &env);
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "{name}: bazaar config failed: {stderr}");
        assert!(!stdout.contains(JWT_SECRET) && !stdout.contains(CLUSTER_COOKIE), "{name}: a secret was printed");
        let printed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let settings = &printed["settings"];

        let mut checked = 0;
        for (key, value) in env.iter().filter(|(key, _)| key.starts_with("BAZAAR_")) {
            if NOT_SETTINGS.contains(&key.as_str()) {
                continue;
            }
            let setting = key["BAZAAR_".len()..].to_lowercase();
            let expected = match &settings[&setting] {
                serde_json::Value::Number(_) => serde_json::Value::from(value.parse::<u64>().unwrap()),
                _ if setting == "jwt_secret" => "***".into(),
                _ => masked(value).into(),
            };
            assert_eq!(settings[&setting], expected, "{name}: {key} did not arrive as {setting}");
            checked += 1;
        }
        assert!(checked >= 5, "{name}: only {checked} settings in its environment");
        assert_eq!(settings["redis_url"], text(&node["environment"]["BAZAAR_REDIS_URL"]));

        let command = list(&node["command"]);
        let node_name = flag(&command, "--node");
        assert_eq!(settings["node_name"], node_name);
        assert_eq!(settings["http_addr"], "0.0.0.0:8080");
        // The cookie arrived (from the variable, not a generated file) and the node has peers.
        let cluster = &printed["cluster"];
        assert_eq!(cluster["cookie"], "BAZAAR_CLUSTER_COOKIE", "{name}: {cluster}");
        assert_eq!(cluster["listen"], format!("{name}:7000"), "{name} binds where its own name resolves");
        assert_eq!(cluster["addr"], format!("{name}:7000"));
        let peers: BTreeMap<String, String> = serde_json::from_value(cluster["peers"].clone()).unwrap();
        let others: BTreeMap<String, String> =
            nodes.keys().filter(|n| *n != node_name).map(|n| (n.clone(), format!("{n}:7000"))).collect();
        assert_eq!(peers, others, "{name} dials every other service by its name");
        // BAZAAR_LOG is not a setting but main's log filter; it has to parse as one.
        let log = &env["BAZAAR_LOG"];
        assert!(tracing_subscriber::EnvFilter::try_new(log).is_ok(), "{name}: BAZAAR_LOG={log} is not a filter");
    }
}

#[test]
fn a_misspelled_variable_stops_the_node() {
    let compose = compose();
    let node = &nodes(&compose)["node1"];
    let mut env = node_environment(node);
    env.insert("BAZAAR_REDIS_URLL".into(), "redis://redis:6379".into());
    let output = bazaar_config(node, &env);
    assert!(!output.status.success(), "an unknown BAZAAR_ variable was accepted");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("BAZAAR_REDIS_URLL"), "the error does not name the variable as written: {stderr}");
    assert!(stderr.contains("did you mean BAZAAR_REDIS_URL?"), "no suggestion: {stderr}");
}

#[test]
fn a_short_jwt_secret_stops_the_node() {
    let compose = compose();
    let node = &nodes(&compose)["node1"];
    let mut env = environment(node);
    let mut vars = user_variables();
    vars.insert("JWT_SECRET", "too-short");
    env.values_mut().for_each(|value| *value = interpolate(value, &vars).unwrap());
    let output = bazaar_config(node, &env);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("jwt_secret") && !stderr.contains("too-short"), "{stderr}");
}

#[test]
fn interpolation_follows_compose() {
    let vars = BTreeMap::from([("A", "x"), ("EMPTY", "")]);
    assert_eq!(interpolate("a$$b ${A} $A-${B:-d} ${EMPTY:-e} ${EMPTY-f}", &vars).unwrap(), "a$b x x-d e ");
    assert_eq!(interpolate("${B:?set B}", &vars).unwrap_err(), "B: set B");
    assert!(interpolate("${EMPTY:?set it}", &vars).is_err());
    assert_eq!(interpolate("${EMPTY?set it}", &vars).unwrap(), "");
    // A default may interpolate in its turn, as compose's does.
    assert_eq!(interpolate("${B:-p://u:${A}@h}/${A}", &vars).unwrap(), "p://u:x@h/x");
    assert_eq!(interpolate("${A:-p://u:${B:?no B}@h}", &vars).unwrap(), "x");
    assert!(interpolate("${B:-p://u:${B:?no B}@h}", &vars).is_err());
}

/// The URL the top of compose.yaml tells a user to export for the `mysql` profile, as written
/// there (the shell puts the password in).
const MYSQL_DATABASE_URL: &str = "mysql://bazaar:$DB_PASSWORD@mysql:3306/bazaar";

#[test]
fn the_mysql_profile_runs_a_pinned_mysql_8_that_the_nodes_reach_through_database_url() {
    let compose = compose();
    let services = services(&compose);
    let mysql = services.get("mysql").expect("compose.yaml has a mysql service");
    let image = text(&mysql["image"]);
    let patch = image.strip_prefix("mysql:8.0.").unwrap_or_else(|| panic!("the official MySQL 8.0 image: {image}"));
    assert!(patch.parse::<u32>().is_ok(), "the tag is pinned to a release: {image}");
    assert_eq!(list(&mysql["profiles"]), ["mysql"]);
    for (name, service) in &services {
        assert!(
            name == "mysql" || service["profiles"].is_null(),
            "{name} is in a profile: the default starts it no more"
        );
    }
    // The URL users are told to export names the service's own account and database.
    let vars = user_variables();
    let env: BTreeMap<String, String> =
        environment(mysql).into_iter().map(|(k, v)| (k, interpolate(&v, &vars).unwrap())).collect();
    let served =
        format!("mysql://{}:{}@mysql:3306/{}", env["MYSQL_USER"], env["MYSQL_PASSWORD"], env["MYSQL_DATABASE"]);
    let exported = interpolate(MYSQL_DATABASE_URL, &vars).unwrap();
    assert_eq!(served, exported);
    let file = std::fs::read_to_string(repo().join("compose.yaml")).unwrap();
    assert!(file.contains(&format!("DATABASE_URL={MYSQL_DATABASE_URL} docker compose --profile mysql up")));

    for (name, node) in &nodes(&compose) {
        // Without the profile the nodes must not wait for a service compose does not start.
        assert_eq!(node["depends_on"]["mysql"]["required"], Value::Bool(false), "{name}");
        assert_eq!(text(&node["depends_on"]["mysql"]["condition"]), "service_healthy", "{name}");
        assert!(node_environment(node)["BAZAAR_DATABASE_URL"].starts_with("postgres://"), "{name}: the default");
        let mut vars = user_variables();
        vars.insert("DATABASE_URL", &exported);
        let env: BTreeMap<String, String> =
            environment(node).into_iter().map(|(k, v)| (k, interpolate(&v, &vars).unwrap())).collect();
        let output = bazaar_config(node, &env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{name}: bazaar config refused the mysql profile's URL: {stderr}");
        let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(printed["settings"]["database_url"], masked(&exported), "{name}");
    }
}
