# A Kafka-protocol broker (tansu) for the tests; sourced (not run) by scripts/test.sh.
#
#   tansu_install                 installs tansu 0.6.0 from crates.io unless `tansu` is on PATH
#                                 (about 11 minutes on 2 cores; a cached ~/.cargo/bin skips it)
#   tansu_start WORKDIR PORT      starts a broker on 127.0.0.1:PORT storing in WORKDIR/tansu
#                                 (SQLite engine: it survives restarts and reports offsets
#                                 right), waits until it accepts connections, and exports
#                                 TEST_KAFKA_BROKERS and TEST_TANSU_BIN
#   tansu_stop WORKDIR            stops it and deletes its files

tansu_install() {
    command -v tansu >/dev/null 2>&1 && return 0
    echo "== installing tansu (Kafka-protocol broker) from crates.io"
    # Without these features the broker cannot store anything.
    cargo install tansu@0.6.0 --locked --features dynostore,libsql --quiet
    command -v tansu >/dev/null 2>&1 || { echo "tansu is not on PATH after installing" >&2; return 1; }
}

tansu_start() {
    local work="$1" port="$2"
    local dir="$work/tansu"
    rm -rf "$dir"
    mkdir -p "$dir"
    # The SQLite path is relative to the broker's working directory.
    (cd "$dir" && exec tansu broker \
        --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine sqlite://tansu.db >"$dir/broker.log" 2>&1) &
    echo $! >"$dir/pid"
    local tries=0
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        tries=$((tries + 1))
        [ "$tries" -lt 100 ] || { echo "tansu on port $port never listened" >&2; tail -n 20 "$dir/broker.log" >&2; return 1; }
        sleep 0.1
    done
    export TEST_KAFKA_BROKERS="127.0.0.1:$port"
    TEST_TANSU_BIN="$(command -v tansu)"
    export TEST_TANSU_BIN
}

tansu_stop() {
    local dir="$1/tansu"
    [ -f "$dir/pid" ] || return 0
    kill "$(cat "$dir/pid")" 2>/dev/null || true
    rm -rf "$dir"
}
