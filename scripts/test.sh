#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test (unit, property,
# integration against the real binary, multi-node) under cargo nextest, twice on one build:
#   1. the embedded default: SQLite and the event log in it (tests needing Redis start their own);
#   2. the real backends: PostgreSQL, a Kafka-protocol broker (tansu) and Redis, started here on
#      loopback and stopped on exit.
# Servers that are missing are installed first (apt for PostgreSQL and Redis, crates.io for tansu),
# and so is kubernetes-validate (PyPI, in a venv under ~/.cache/bazaar), which node/tests/k8s.rs
# runs on every manifest of deploy/k8s.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/servers/postgres.sh
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

# Debian's system Python refuses `pip install`, so the validator gets a venv of its own, kept
# between runs; KUBERNETES_VALIDATE tells node/tests/k8s.rs where it is.
KUBERNETES_VALIDATE_VERSION=1.37.0
kubernetes_validate_install() {
    local venv="${XDG_CACHE_HOME:-$HOME/.cache}/bazaar/kubernetes-validate"
    if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$KUBERNETES_VALIDATE_VERSION"; then
        echo "== installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $venv"
        python3 -m venv --help >/dev/null 2>&1 || need_package_only python3-venv
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    fi
    export KUBERNETES_VALIDATE="$venv/bin/kubernetes-validate"
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
