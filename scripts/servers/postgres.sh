# A throwaway PostgreSQL server for the tests; sourced (not run) by scripts/test.sh.
#
#   postgres_start WORKDIR PORT   installs PostgreSQL if missing, starts a fresh server on
#                                 127.0.0.1:PORT with its files under WORKDIR/pg, waits until it
#                                 answers, and exports TEST_POSTGRES_URL (the admin URL
#                                 from which each test creates a database of its own)
#   postgres_stop WORKDIR         stops that server and deletes its files (each test node leaves
#                                 a database behind, several GB for a whole run)
#
# The server trades durability for speed (fsync and synchronous_commit off): it holds test data
# only. Never use these settings for a benchmark that claims durability.

postgres_bin() {
    local initdb
    initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)
    [ -n "$initdb" ] && dirname "$initdb"
}

# Runs a server tool as the postgres user when we are root (initdb and postgres refuse root).
postgres_as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

postgres_start() {
    local work="$1" port="$2"
    if [ -z "$(postgres_bin)" ]; then
        echo "== installing postgresql"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
    fi
    local bin
    bin=$(postgres_bin) || { echo "postgresql is not installed" >&2; return 1; }
    local dir="$work/pg"
    rm -rf "$dir"
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        # The server runs as postgres, which must get through WORKDIR (mktemp -d makes it 0700).
        chmod a+x "$work"
        chown postgres:postgres "$dir"
    fi
    postgres_as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
        >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
    # Every test node holds about ten connections and many run at once.
    postgres_as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=500" \
        start >/dev/null || { tail -n 20 "$dir/server.log" >&2; return 1; }
    local tries=0
    until "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres; do
        tries=$((tries + 1))
        [ "$tries" -lt 100 ] || { echo "postgres on port $port never became ready" >&2; return 1; }
        sleep 0.1
    done
    export TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

postgres_stop() {
    local work="$1" bin
    bin=$(postgres_bin) || return 0
    [ -d "$work/pg/data" ] || return 0
    postgres_as_owner "$bin/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work/pg"
}
