# A throwaway MariaDB server for the tests; sourced (not run) by scripts/test.sh.
#
#   mariadb_start WORKDIR PORT    installs MariaDB if missing, starts a fresh server on
#                                 127.0.0.1:PORT with its files (and its socket) under
#                                 WORKDIR/mariadb, waits until it answers, creates the user
#                                 `bazaar` with a password, and exports TEST_MYSQL_URL (the admin
#                                 URL from which each test creates a database of its own)
#   mariadb_stop WORKDIR          stops that server and deletes its files
#
# The server trades durability for speed (no flush at commit, no doublewrite): it holds test data
# only. Never use these settings for a benchmark that claims durability.

mariadb_start() {
    local work="$1" port="$2"
    if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
        echo "== installing mariadb-server"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q mariadb-server >/dev/null
        # Debian starts the packaged server; these tests run their own.
        $sudo systemctl stop mariadb >/dev/null 2>&1 || true
    fi
    local server
    server=$(command -v mariadbd || echo /usr/sbin/mariadbd)
    local dir="$work/mariadb"
    rm -rf "$dir"
    mkdir -p "$dir/data"
    local user
    user=$(id -un)
    mariadb-install-db --no-defaults --user="$user" --datadir="$dir/data" --auth-root-authentication-method=normal \
        --skip-test-db >"$dir/install.log" 2>&1 || { cat "$dir/install.log" >&2; return 1; }
    # Every test node holds about ten connections and many run at once.
    "$server" --no-defaults --user="$user" --datadir="$dir/data" --socket="$dir/mariadb.sock" \
        --pid-file="$dir/mariadb.pid" --bind-address=127.0.0.1 --port="$port" --skip-name-resolve \
        --max-connections=1000 --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 --sync-binlog=0 \
        --innodb-buffer-pool-size=256M --log-error="$dir/server.log" >/dev/null 2>&1 &
    local tries=0
    until mariadb-admin --no-defaults --socket="$dir/mariadb.sock" -uroot ping >/dev/null 2>&1; do
        tries=$((tries + 1))
        [ "$tries" -lt 300 ] || { echo "mariadb on port $port never became ready" >&2; tail -n 20 "$dir/server.log" >&2; return 1; }
        sleep 0.1
    done
    mariadb --no-defaults --socket="$dir/mariadb.sock" -uroot -e \
        "CREATE USER 'bazaar'@'127.0.0.1' IDENTIFIED BY 'bazaar'; GRANT ALL ON *.* TO 'bazaar'@'127.0.0.1';" \
        || return 1
    export TEST_MYSQL_URL="mysql://bazaar:bazaar@127.0.0.1:$port"
}

mariadb_stop() {
    local work="$1" dir="$1/mariadb"
    [ -f "$dir/mariadb.pid" ] || return 0
    kill "$(cat "$dir/mariadb.pid")" 2>/dev/null || true
    local tries=0
    while [ -f "$dir/mariadb.pid" ] && [ "$tries" -lt 100 ]; do
        tries=$((tries + 1))
        sleep 0.1
    done
    rm -rf "$dir"
}
