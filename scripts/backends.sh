#!/usr/bin/env bash
# Starts PostgreSQL, a Kafka-protocol broker (tansu) and Redis on loopback, for trying bazaar on
# real backends without Docker (README: "On Kafka, PostgreSQL and Redis, without Docker"). It
# prints the three BAZAAR_* variables that point a node at them and keeps the servers up until
# Ctrl-C, then stops them and deletes their files.
#
#   scripts/backends.sh [DIR]     DIR holds the servers' files (default: a fresh temp dir)
#
# Ports: PostgreSQL 15432, Kafka 19092, Redis 16379, or the ones BACKENDS_PG_PORT,
# BACKENDS_KAFKA_PORT and BACKENDS_REDIS_PORT name (not BAZAAR_ names: a node refuses an
# unknown BAZAAR_ variable, and these may be exported in the shell it starts from). Missing
# servers are installed as the test command installs them (apt, crates.io). The PostgreSQL server is the test suite's: fsync off,
# for trying things out, never for data you keep or a benchmark that claims durability.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/servers/postgres.sh
source scripts/servers/tansu.sh

PG_PORT=${BACKENDS_PG_PORT:-15432}
KAFKA_PORT=${BACKENDS_KAFKA_PORT:-19092}
REDIS_PORT=${BACKENDS_REDIS_PORT:-16379}

for port in "$PG_PORT" "$KAFKA_PORT" "$REDIS_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port on 127.0.0.1 is taken: stop what listens there or choose another (see the top of $0)" >&2
        exit 1
    fi
done

if ! command -v redis-server >/dev/null 2>&1; then
    echo "== installing redis-server"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server redis-tools >/dev/null
fi
tansu_install

WORK=${1:-}
if [ -z "$WORK" ]; then
    WORK=$(mktemp -d -t bazaar-backends-XXXXXX)
else
    mkdir -p "$WORK"
    WORK=$(cd "$WORK" && pwd)
fi
stop() {
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    tansu_stop "$WORK"
    postgres_stop "$WORK"
    echo "stopped; files under $WORK removed"
}
trap stop EXIT

postgres_start "$WORK" "$PG_PORT"
"$(postgres_bin)/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres bazaar
tansu_start "$WORK" "$KAFKA_PORT"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --dir "$WORK" --pidfile "$WORK/redis.pid" \
    --logfile "$WORK/redis.log" --save '' --appendonly no
tries=0
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do
    tries=$((tries + 1))
    [ "$tries" -lt 100 ] || { echo "redis on port $REDIS_PORT never answered" >&2; exit 1; }
    sleep 0.1
done

cat <<EOF
PostgreSQL, Kafka (tansu) and Redis are up on 127.0.0.1. In another terminal:

export BAZAAR_DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/bazaar
export BAZAAR_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
export BAZAAR_REDIS_URL=redis://127.0.0.1:$REDIS_PORT

Ctrl-C here stops them and deletes their files ($WORK).
EOF
# Waits for Ctrl-C (or a server's end) without a busy loop.
while kill -0 "$(cat "$WORK/tansu/pid")" 2>/dev/null; do sleep 1; done
echo "tansu stopped: see $WORK/tansu/broker.log" >&2
