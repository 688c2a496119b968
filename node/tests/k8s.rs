//! deploy/k8s cannot be applied here (no cluster), so this checks what holds without one: every
//! manifest validates against the Kubernetes schemas (offline, with `kubernetes-validate`), the
//! resources refer to each other consistently, and each pod's environment, as the kubelet would
//! build it from the StatefulSet, the ConfigMap and stand-ins for the secrets, is accepted by the
//! real binary: `bazaar config` loads it exactly as `serve` would and prints the cluster the pod
//! joins, for the three pods applied and for the two a scale to five adds.

use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The namespace the pods are imagined in (the manifests name none: `kubectl apply -n`).
const NAMESPACE: &str = "shop";
/// Stand-ins for the values of the Secret bazaar-secrets, which is created by hand.
const SECRETS: [(&str, &str); 3] = [
    ("database-url", "postgres://bazaar:k8s-test-password@postgres:5432/bazaar"),
    ("jwt-secret", "k8s-test-jwt-secret-0123456789abcdef0123"),
    ("cluster-cookie", "k8s-test-cluster-cookie"),
];
/// Variables the binary reads itself rather than as settings (see `Settings::load`).
const NOT_SETTINGS: [&str; 2] = ["BAZAAR_CLUSTER_COOKIE", "BAZAAR_LOG"];
/// What the node may spend stopping after its request grace: every background task gets up to
/// 5 s (`System::stop`), then the store closes.
const STOP_MARGIN_SECS: u64 = 15;

fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s")
}

/// Every YAML file under deploy/k8s, the dev/ manifests included, sorted.
fn manifest_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&k8s_dir(), &mut files);
    files.sort();
    files
}

/// Every resource of every manifest, keyed by `Kind/name`.
fn resources() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for file in manifest_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let resource = Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let key = format!("{}/{}", text_of(&resource["kind"]), text_of(&resource["metadata"]["name"]));
            assert!(out.insert(key.clone(), resource).is_none(), "{key} is defined twice");
        }
    }
    out
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

fn seq(value: &Value) -> Vec<Value> {
    value.as_sequence().cloned().unwrap_or_default()
}

/// The named container port of a pod template's first container.
fn container_port(statefulset: &Value, name: &str) -> u64 {
    let container = &statefulset["spec"]["template"]["spec"]["containers"][0];
    let port = seq(&container["ports"]).into_iter().find(|p| p["name"] == name);
    port.unwrap_or_else(|| panic!("no container port named {name}"))["containerPort"].as_u64().unwrap()
}

/// The `kubernetes-validate` to run: $KUBERNETES_VALIDATE, the venv scripts/test.sh installs, or
/// one on PATH.
fn validator() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KUBERNETES_VALIDATE") {
        return Some(PathBuf::from(path));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")));
    let venv = cache.map(|cache| cache.join("bazaar/kubernetes-validate/bin/kubernetes-validate"));
    if let Some(venv) = venv.filter(|path| path.is_file()) {
        return Some(venv);
    }
    let on_path = Command::new("kubernetes-validate").arg("--version").output();
    on_path.is_ok_and(|out| out.status.success()).then(|| PathBuf::from("kubernetes-validate"))
}

#[test]
fn every_manifest_validates_against_the_kubernetes_schemas() {
    let Some(validator) = validator() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "kubernetes-validate is missing, and CI must check the manifests: scripts/test.sh installs it"
        );
        eprintln!("SKIPPED: kubernetes-validate is not installed (scripts/test.sh installs it into ~/.cache/bazaar)");
        return;
    };
    let files = manifest_files();
    assert!(files.len() >= 8, "deploy/k8s has only {files:?}");
    // --strict also refuses fields the schema does not know (a misspelt key is otherwise ignored).
    let output = Command::new(&validator).arg("--strict").args(&files).output().expect("kubernetes-validate runs");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the manifests do not validate:\n{report}");
    let resources = resources();
    assert_eq!(
        report.matches(" passed for resource ").count(),
        resources.len(),
        "not every resource was checked:\n{report}"
    );

    // The same validator refuses a manifest with a misspelt field, so the pass above means something.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    let statefulset = std::fs::read_to_string(k8s_dir().join("statefulset.yaml")).unwrap();
    std::fs::write(&broken, statefulset.replace("readinessProbe:", "readinesProbe:")).unwrap();
    let output = Command::new(&validator).arg("--strict").arg(&broken).output().unwrap();
    assert!(!output.status.success(), "a misspelt field passed the validator");
}

#[test]
fn the_resources_fit_together_and_the_pods_stop_as_the_node_does() {
    let resources = resources();
    let statefulset = &resources["StatefulSet/bazaar"];
    let spec = &statefulset["spec"];
    let pod = &spec["template"]["spec"];
    let labels = &spec["template"]["metadata"]["labels"];
    let container = &pod["containers"][0];
    assert_eq!(&spec["selector"]["matchLabels"], labels);

    // The headless Service names the pods; it must publish them before they are ready, since
    // peers find each other by those names while they start.
    let headless = &resources[&format!("Service/{}", text_of(&spec["serviceName"]))];
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    for (service, port) in [(headless, "cluster"), (&resources["Service/bazaar"], "http")] {
        assert_eq!(&service["spec"]["selector"], labels);
        let ports = seq(&service["spec"]["ports"]);
        assert!(ports.iter().any(|p| p["targetPort"] == port), "{port} is not served: {ports:?}");
    }
    assert_eq!(&resources["PodDisruptionBudget/bazaar"]["spec"]["selector"]["matchLabels"], labels);

    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")] {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "http", "{probe}");
    }
    for (kind, resource) in [("requests", "cpu"), ("requests", "memory"), ("limits", "memory")] {
        assert!(!container["resources"][kind][resource].is_null(), "no resources.{kind}.{resource}");
    }
    let annotations = &spec["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    assert_eq!(text_of(&annotations["prometheus.io/port"]), container_port(statefulset, "http").to_string());

    // SIGKILL must not come before the node has drained and stopped.
    let config = &resources["ConfigMap/bazaar"]["data"];
    let grace_ms: u64 = text_of(&config["BAZAAR_SHUTDOWN_GRACE_MS"]).parse().unwrap();
    let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().unwrap();
    let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        termination >= pre_stop + grace_ms.div_ceil(1000) + STOP_MARGIN_SECS,
        "terminationGracePeriodSeconds {termination} < preStop {pre_stop} s + grace {grace_ms} ms + {STOP_MARGIN_SECS} s"
    );

    // The external services the ConfigMap names are what dev/ runs, under the same names.
    assert_eq!(config["BAZAAR_KAFKA_BROKERS"], "kafka:9092");
    assert_eq!(config["BAZAAR_REDIS_URL"], "redis://redis:6379");
    assert!(SECRETS[0].1.contains("@postgres:5432/"));
    for (service, port) in [("kafka", 9092), ("redis", 6379), ("postgres", 5432)] {
        let ports = seq(&resources[&format!("Service/{service}")]["spec"]["ports"]);
        assert!(ports.iter().any(|p| p["port"] == port), "dev {service} does not serve {port}");
    }
}

#[test]
fn secrets_are_only_referenced_never_stored() {
    let resources = resources();
    assert!(
        !resources.keys().any(|key| key.starts_with("Secret/")),
        "a Secret with values is in the repository: {:?}",
        resources.keys()
    );
    let config = resources["ConfigMap/bazaar"]["data"].as_mapping().unwrap().clone();
    for key in ["BAZAAR_JWT_SECRET", "BAZAAR_CLUSTER_COOKIE", "BAZAAR_DATABASE_URL"] {
        assert!(!config.contains_key(key), "{key} is in the ConfigMap");
    }
    let env = seq(&resources["StatefulSet/bazaar"]["spec"]["template"]["spec"]["containers"][0]["env"]);
    for (variable, key) in [
        ("BAZAAR_DATABASE_URL", "database-url"),
        ("BAZAAR_JWT_SECRET", "jwt-secret"),
        ("BAZAAR_CLUSTER_COOKIE", "cluster-cookie"),
    ] {
        let entry = env.iter().find(|e| e["name"] == variable).unwrap_or_else(|| panic!("{variable} is not set"));
        assert!(entry["value"].is_null(), "{variable} has a value in the manifest");
        assert_eq!(entry["valueFrom"]["secretKeyRef"]["name"], "bazaar-secrets", "{variable}");
        assert_eq!(entry["valueFrom"]["secretKeyRef"]["key"], key, "{variable}");
    }
}

/// Pod `pod`'s environment as the kubelet builds it: the ConfigMaps of `envFrom`, then `env` in
/// order, with `fieldRef`s of the pod, the test's secret stand-ins and `$(VAR)` expanded from what
/// came before.
fn pod_environment(resources: &BTreeMap<String, Value>, pod: &str) -> BTreeMap<String, String> {
    let container = &resources["StatefulSet/bazaar"]["spec"]["template"]["spec"]["containers"][0];
    let mut env = BTreeMap::new();
    for source in seq(&container["envFrom"]) {
        let config = &resources[&format!("ConfigMap/{}", text_of(&source["configMapRef"]["name"]))];
        for (key, value) in config["data"].as_mapping().unwrap() {
            env.insert(text_of(key), text_of(value));
        }
    }
    for entry in seq(&container["env"]) {
        let name = text_of(&entry["name"]);
        let value = if let Some(value) = entry["value"].as_str() {
            expand(value, &env)
        } else if let Some(path) = entry["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match path {
                "metadata.name" => pod.to_owned(),
                "metadata.namespace" => NAMESPACE.to_owned(),
                other => panic!("{name}: no stand-in for the field {other}"),
            }
        } else {
            let key = text_of(&entry["valueFrom"]["secretKeyRef"]["key"]);
            let found = SECRETS.iter().find(|(k, _)| *k == key);
            found.unwrap_or_else(|| panic!("{name}: no stand-in for the secret key {key}")).1.to_owned()
        };
        env.insert(name, value);
    }
    env
}

/// Kubernetes' `$(VAR)` expansion: a variable defined before is replaced, `$$` is a literal `$`,
/// and an unknown reference stays as written.
fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(after) = after.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|a| a.split_once(')')) {
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// `bazaar config` with the container's args (`serve` swapped for `config`) and exactly `env`
/// besides PATH.
fn bazaar_config(resources: &BTreeMap<String, Value>, env: &BTreeMap<String, String>) -> std::process::Output {
    let container = &resources["StatefulSet/bazaar"]["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = seq(&container["args"]).iter().map(text_of).collect();
    assert_eq!(args, ["serve"], "the pods run `bazaar serve` with everything in the environment");
    Command::new(env!("CARGO_BIN_EXE_bazaar"))
        .arg("config")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env)
        .output()
        .unwrap()
}

#[test]
fn each_pods_environment_reaches_the_binary_and_scaling_to_five_needs_no_edit() {
    let resources = resources();
    let statefulset = &resources["StatefulSet/bazaar"];
    let replicas = statefulset["spec"]["replicas"].as_u64().unwrap();
    assert_eq!(replicas, 3);
    let headless = text_of(&statefulset["spec"]["serviceName"]);
    let cluster_port = container_port(statefulset, "cluster");
    let http_port = container_port(statefulset, "http");
    let pod_addr = |i: u64| format!("bazaar-{i}.{headless}.{NAMESPACE}.svc.cluster.local:{cluster_port}");
    // The three pods applied, then the two `kubectl scale statefulset bazaar --replicas=5` adds:
    // the same manifests, unchanged.
    for ordinal in 0..5 {
        let pod = format!("bazaar-{ordinal}");
        let env = pod_environment(&resources, &pod);
        let output = bazaar_config(&resources, &env);
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "{pod}: bazaar config failed: {stderr}");
        for (_, secret) in SECRETS {
            assert!(!stdout.contains(secret) && !stderr.contains(secret), "{pod}: a secret was printed");
        }
        let printed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let settings = &printed["settings"];

        let mut checked = 0;
        for (key, value) in env.iter().filter(|(key, _)| key.starts_with("BAZAAR_")) {
            if NOT_SETTINGS.contains(&key.as_str()) {
                continue;
            }
            let setting = key["BAZAAR_".len()..].to_lowercase();
            let expected = match (&settings[&setting], setting.as_str()) {
                (serde_json::Value::Number(_), _) => serde_json::Value::from(value.parse::<u64>().unwrap()),
                (_, "jwt_secret") => "***".into(),
                (_, "database_url") => "postgres://bazaar:***@postgres:5432/bazaar".into(),
                _ => value.as_str().into(),
            };
            assert_eq!(settings[&setting], expected, "{pod}: {key} did not arrive as {setting}");
            checked += 1;
        }
        assert!(checked >= 8, "{pod}: only {checked} settings in its environment");
        assert_eq!(settings["node_name"], pod.as_str());
        assert_eq!(settings["http_addr"], format!("0.0.0.0:{http_port}"));

        let cluster = &printed["cluster"];
        assert_eq!(cluster["cookie"], "BAZAAR_CLUSTER_COOKIE", "{pod}: {cluster}");
        assert_eq!(cluster["listen"], format!("0.0.0.0:{cluster_port}"), "{pod}: {cluster}");
        assert_eq!(cluster["addr"], pod_addr(ordinal), "{pod} announces its own DNS name");
        let peers: BTreeMap<String, String> = serde_json::from_value(cluster["peers"].clone()).unwrap();
        for other in (0..5).filter(|&i| i != ordinal) {
            assert_eq!(peers.get(&format!("bazaar-{other}")), Some(&pod_addr(other)), "{pod}: {cluster}");
        }
        let max_nodes: usize =
            text_of(&resources["ConfigMap/bazaar"]["data"]["BAZAAR_CLUSTER_MAX_NODES"]).parse().unwrap();
        assert_eq!(peers.len(), max_nodes - 1, "{pod} dials every other ordinal up to the bound: {cluster}");
        let log = &env["BAZAAR_LOG"];
        assert!(tracing_subscriber::EnvFilter::try_new(log).is_ok(), "BAZAAR_LOG={log} is not a filter");
    }
}

#[test]
fn a_pod_beyond_the_bound_or_with_a_short_jwt_secret_does_not_start() {
    let resources = resources();
    let max_nodes = text_of(&resources["ConfigMap/bazaar"]["data"]["BAZAAR_CLUSTER_MAX_NODES"]);
    let env = pod_environment(&resources, &format!("bazaar-{max_nodes}"));
    let output = bazaar_config(&resources, &env);
    assert!(!output.status.success(), "a pod past cluster_max_nodes was accepted");
    assert!(String::from_utf8_lossy(&output.stderr).contains("cluster_max_nodes"));

    let mut env = pod_environment(&resources, "bazaar-0");
    env.insert("BAZAAR_JWT_SECRET".into(), "too-short".into());
    let output = bazaar_config(&resources, &env);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("jwt_secret") && !stderr.contains("too-short"), "{stderr}");
}

#[test]
fn expansion_follows_kubernetes() {
    let env = BTreeMap::from([("A".to_owned(), "x".to_owned())]);
    assert_eq!(expand("a.$(A).b $$(A) $(B) $A", &env), "a.x.b $(A) $(B) $A");
}
