#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test (unit, property,
# integration against the real binary, multi-node) under cargo nextest, three times on one build:
#   1. the embedded default: SQLite and the event log in it (tests needing Redis start their own);
#   2. the real backends: PostgreSQL, a Kafka-protocol broker (tansu) and Redis, started here on
#      loopback and stopped on exit;
#   3. MariaDB (the MySQL backend) with the embedded event log, started here on loopback too.
# Servers that are missing are installed first (apt for PostgreSQL, MariaDB and Redis, crates.io
# for tansu), and so is kubernetes-validate (PyPI, in a venv under ~/.cache/bazaar), which
# node/tests/k8s.rs runs on every manifest of deploy/k8s, openapi-spec-validator (PyPI, in a venv of
# its own), which node/tests/api/openapi.rs runs on /openapi.json, and Playwright (PyPI, in a venv of its
# own) with Debian's Chromium, which node/tests/browser.rs drives through the web console.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/servers/postgres.sh
source scripts/servers/mariadb.sh
source scripts/servers/tansu.sh

need_package() { # command, Debian package
    command -v "$1" >/dev/null 2>&1 && return 0
    echo "== installing $2"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q "$2" >/dev/null 2>&1 || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "$2" >/dev/null; }
    command -v "$1" >/dev/null 2>&1 || { echo "could not install $2" >&2; exit 1; }
}

# Debian's system Python refuses `pip install`, so each Python tool gets a venv of its own under
# ~/.cache/bazaar, kept between runs and made again when the pinned version changes.
pinned_venv() { # name, PyPI package, version; prints the venv's path
    local venv="${XDG_CACHE_HOME:-$HOME/.cache}/bazaar/$1"
    if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$2') != '$3')" 2>/dev/null; then
        echo "== installing $2 $3 into $venv" >&2
        python3 -m venv --help >/dev/null 2>&1 || need_package_only python3-venv
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q "$2==$3" >&2
    fi
    echo "$venv"
}

# KUBERNETES_VALIDATE tells node/tests/k8s.rs where the validator is.
KUBERNETES_VALIDATE_VERSION=1.37.0
kubernetes_validate_install() {
    local venv
    venv=$(pinned_venv kubernetes-validate kubernetes-validate "$KUBERNETES_VALIDATE_VERSION")
    export KUBERNETES_VALIDATE="$venv/bin/kubernetes-validate"
}

# openapi-spec-validator checks /openapi.json against the OpenAPI 3.1 schema in
# node/tests/api/openapi.rs; OPENAPI_TEST_PYTHON names the venv's Python (no BAZAAR_ prefix, like
# BROWSER_TEST_PYTHON below).
OPENAPI_SPEC_VALIDATOR_VERSION=0.8.5
openapi_validator_install() {
    local venv
    venv=$(pinned_venv openapi-spec-validator openapi-spec-validator "$OPENAPI_SPEC_VALIDATOR_VERSION")
    export OPENAPI_TEST_PYTHON="$venv/bin/python"
}

# Playwright from PyPI drives Debian's Chromium (the browser builds Playwright downloads itself
# are not needed); BROWSER_TEST_PYTHON tells node/tests/browser.rs which Python has it. The name
# has no BAZAAR_ prefix: the nodes the tests start would refuse it as an unknown setting.
PLAYWRIGHT_VERSION=1.63.0
playwright_install() {
    need_package chromium chromium
    local venv
    venv=$(pinned_venv playwright playwright "$PLAYWRIGHT_VERSION")
    export BROWSER_TEST_PYTHON="$venv/bin/python"
    export BROWSER_TEST_CHROMIUM="$(command -v chromium)"
}

need_package_only() { # Debian package without a command of its own
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q "$1" >/dev/null 2>&1 || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "$1" >/dev/null; }
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

WORK=$(mktemp -d -t bazaar-suite-XXXXXX)
REDIS_PORT=""
cleanup() {
    [ -z "$REDIS_PORT" ] || redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    tansu_stop "$WORK"
    postgres_stop "$WORK"
    mariadb_stop "$WORK"
    rm -rf "$WORK"
}
trap cleanup EXIT

run_suite() {
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --workspace --locked --no-fail-fast
    else
        cargo test --workspace --locked --no-fail-fast
    fi
}

need_package redis-server redis-server
need_package redis-cli redis-tools
tansu_install
kubernetes_validate_install
openapi_validator_install
playwright_install

echo "== format"
cargo fmt --all --check
echo "== lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== tests: embedded (SQLite, embedded event log)"
run_suite

echo "== starting PostgreSQL, tansu and Redis on loopback"
postgres_start "$WORK" "$(free_port)"
tansu_start "$WORK" "$(free_port)"
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --dir "$WORK" --pidfile "$WORK/redis.pid" \
    --logfile "$WORK/redis.log" --save '' --appendonly no
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.1; done
export TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"

echo "== tests: real backends (PostgreSQL $TEST_POSTGRES_URL, Kafka $TEST_KAFKA_BROKERS, Redis $TEST_REDIS_URL)"
run_suite

# The third pass is the net under the MySQL dialect (actors/src/store/backend.rs): every query of
# the suite runs on MariaDB. Tests pick it by TEST_MYSQL_URL; the other servers are not needed.
echo "== starting MariaDB on loopback"
mariadb_start "$WORK" "$(free_port)"
echo "== tests: MariaDB ($TEST_MYSQL_URL), embedded event log"
(
    unset TEST_POSTGRES_URL TEST_KAFKA_BROKERS TEST_REDIS_URL
    run_suite
)
