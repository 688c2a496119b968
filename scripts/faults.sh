#!/usr/bin/env bash
# The fault suite's long form (issue 13, benches/README.md "Fault runs"): starts PostgreSQL, a
# Kafka-protocol broker (tansu) and Redis of its own on loopback, and runs `bazaar-bench faults`
# on a 3-node cluster over them, with every node fault and a restart of each server in the
# schedule. The servers are this run's alone, so restarting them disturbs nothing else.
#
#   scripts/faults.sh [SECONDS] [EXTRA bazaar-bench faults FLAGS...]    (default 1800 s)
#
# Builds the release binaries first (FAULTS_PROFILE=debug: the debug ones, quicker to build; the
# run checks correctness, not speed). Everything it started is stopped on exit; the history, the
# fault windows and the final state stay in benches/results/faults/, the results in
# benches/results/faults.json.
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."
source scripts/servers/postgres.sh
source scripts/servers/tansu.sh

# `scripts/faults.sh __restart NAME WORK PORT`: how the nemesis restarts a server of the run.
if [ "${1:-}" = "__restart" ]; then
    name="$2" work="$3" port="$4"
    case "$name" in
        postgres)
            postgres_as_owner "$(postgres_bin)/pg_ctl" -D "$work/pg/data" -l "$work/pg/server.log" -w -t 60 -m fast \
                restart >/dev/null
            ;;
        kafka)
            pid=$(cat "$work/tansu/pid")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
            # The same storage file and port: a broker that comes back, not a new one.
            (cd "$work/tansu" && exec tansu broker \
                --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
                --storage-engine sqlite://tansu.db >>"$work/tansu/broker.log" 2>&1) &
            echo $! >"$work/tansu/pid"
            for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && exit 0; sleep 0.1; done
            echo "tansu did not listen again on $port" >&2
            exit 1
            ;;
        redis)
            redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
            redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --dir "$work" --pidfile "$work/redis.pid" \
                --logfile "$work/redis.log" --save '' --appendonly no
            for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && exit 0; sleep 0.1; done
            echo "redis did not answer again on $port" >&2
            exit 1
            ;;
        *) echo "unknown server $name" >&2; exit 2 ;;
    esac
    exit 0
fi

SECONDS_TO_RUN=${1:-1800}
shift || true

need_command() { # command, Debian package
    command -v "$1" >/dev/null 2>&1 && return 0
    echo "== installing $2"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null
}
need_command redis-server redis-server
need_command redis-cli redis-tools
tansu_install

# A free port below the ephemeral range: a server the nemesis restarts must find its port free,
# and one from that range could meanwhile be taken by any outgoing connection.
free_port() {
    python3 - <<'PY'
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(1000):
    port = random.randrange(10000, max(low, 10001))
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    print(port)
    break
PY
}

PROFILE=${FAULTS_PROFILE:-release}
echo "== building the $PROFILE binaries"
if [ "$PROFILE" = release ]; then
    cargo build --release --locked -p bazaar-node -p bazaar-bench
else
    cargo build --locked -p bazaar-node -p bazaar-bench
fi

WORK=$(mktemp -d -t bazaar-faults-XXXXXX)
REDIS_PORT=$(free_port)
stop() {
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    tansu_stop "$WORK"
    postgres_stop "$WORK"
    rm -rf "$WORK"
}
trap stop EXIT

PG_PORT=$(free_port)
KAFKA_PORT=$(free_port)
postgres_start "$WORK" "$PG_PORT"
"$(postgres_bin)/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres bazaar
tansu_start "$WORK" "$KAFKA_PORT"
"$SELF" __restart redis "$WORK" "$REDIS_PORT"

restart() { # name, port: the command the nemesis runs, quoted for sh -c
    printf '%q __restart %q %q %q' "$SELF" "$1" "$WORK" "$2"
}
BAZAAR_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/bazaar" \
BAZAAR_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT" \
BAZAAR_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
    "target/$PROFILE/bazaar-bench" faults --seconds "$SECONDS_TO_RUN" \
    --schedule isolate,pause,kill,split,bridge,isolate+kill,restart-postgres,restart-kafka,restart-redis,pause+restart-postgres \
    --restart "postgres=$(restart postgres "$PG_PORT")" \
    --restart "kafka=$(restart kafka "$KAFKA_PORT")" \
    --restart "redis=$(restart redis "$REDIS_PORT")" \
    "$@"
