#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test (unit, property,
# integration against the real binary, multi-node) under cargo nextest, sharing one build.
# Real servers the tests need are installed here when missing; each test starts its own
# instance on a free loopback port and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

need_package() { # command, Debian package
    command -v "$1" >/dev/null 2>&1 && return 0
    echo "== installing $2"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q "$2" >/dev/null 2>&1 || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "$2" >/dev/null; }
    command -v "$1" >/dev/null 2>&1 || { echo "could not install $2" >&2; exit 1; }
}
need_package redis-server redis-server

echo "== format"
cargo fmt --all --check
echo "== lints"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi
