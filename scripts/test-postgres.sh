#!/usr/bin/env bash
# A real, throw-away PostgreSQL server on 127.0.0.1, for tests.
#
#   scripts/test-postgres.sh install            Debian packages (idempotent; needs root)
#   scripts/test-postgres.sh up STATE_DIR       initdb, start postgres, create role and database hqs
#   scripts/test-postgres.sh down STATE_DIR     stop exactly what `up` started, by PID; drop the data
#   scripts/test-postgres.sh status STATE_DIR
#
# Everything lives in STATE_DIR: data directory, socket directory, log, PID file. `up` writes
# STATE_DIR/env with the variables the tests read (HQS_TEST_PG_URL, HQS_TEST_PG_PORT). The
# server runs as the `postgres` system user (it refuses to run as root), listens on 127.0.0.1
# only, and takes TCP logins with a password (scram-sha-256) for the role `hqs` (which may create
# databases, one per test service); fsync is off,
# as the data is thrown away.
#
# The `postgres` user must be able to reach STATE_DIR. When it cannot (pytest's base temporary
# folder, /tmp/pytest-of-root, is mode 700) or the socket path would be too long, the
# server's files go to a private folder /tmp/hqs-test-pg.XXXXXX instead, with symbolic links
# to it in STATE_DIR (data, run, postgres.log) and its name in STATE_DIR/pgroot; `down`
# removes it.
set -euo pipefail

NAME=test-postgres
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_USER=postgres
DB_USER=hqs
DB_NAME=hqs

# The server binaries of the highest installed major version (Debian keeps them off PATH,
# in /usr/lib/postgresql/MAJOR/bin).
pg_bindir() {
    local best="" dir
    for dir in /usr/lib/postgresql/*/bin; do
        [ -x "$dir/pg_ctl" ] && [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ] || continue
        if [ -z "$best" ] || [ "$(printf '%s\n%s\n' "$best" "$dir" | sort -V | tail -n1)" = "$dir" ]; then
            best=$dir
        fi
    done
    [ -n "$best" ] || return 1
    echo "$best"
}

# as_pg COMMAND...: run COMMAND as the postgres user, from a folder it can enter.
as_pg() { (cd / && runuser -u "$PG_USER" -- "$@"); }

cmd_install() {
    local bindir
    if bindir=$(pg_bindir) && [ -x "$bindir/psql" ] && [ -x "$bindir/pg_isready" ] \
        && id "$PG_USER" >/dev/null 2>&1; then
        return 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
    pg_bindir >/dev/null || die "postgresql installed, but no /usr/lib/postgresql/*/bin/pg_ctl"
    id "$PG_USER" >/dev/null 2>&1 || die "postgresql installed, but there is no user $PG_USER"
}

# running PID: the process exists and is not a zombie (a stopped postmaster is reparented and
# stays a zombie until that parent reaps it; kill -0 still succeeds on it).
running() {
    local state
    [ -n "$1" ] || return 1
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

pid_alive() { [ -f "$1" ] && running "$(cat "$1")"; }

# is_our_postmaster PID DATA_DIR: PID runs postgres on DATA_DIR (so a reused PID is never hit).
is_our_postmaster() {
    local pid=$1 data=$2 cmdline
    running "$pid" || return 1
    cmdline=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || return 1
    case "$cmdline" in *postgres*" -D $data"*) return 0 ;; *) return 1 ;; esac
}

# The folder that holds data/, run/ and postgres.log: STATE_DIR itself, or the private
# folder named in STATE_DIR/pgroot.
pg_root() {
    local state=$1
    if [ -f "$state/pgroot" ]; then cat "$state/pgroot"; else echo "$state"; fi
}

cmd_up() {
    local state=$1
    [ -n "$state" ] || die "usage: $0 up STATE_DIR"
    mkdir -p "$state"
    state=$(cd "$state" && pwd)
    cmd_down "$state" >/dev/null 2>&1 || true
    local bindir
    bindir=$(pg_bindir) || die "no PostgreSQL server binaries; run: $0 install"
    id "$PG_USER" >/dev/null 2>&1 || die "no user $PG_USER; run: $0 install"

    local port root
    port=$(free_port)
    root=$state
    # A unix socket path has at most 107 bytes.
    if ! as_pg test -x "$state" || [ ${#state} -gt 80 ]; then
        root=$(mktemp -d /tmp/hqs-test-pg.XXXXXX)
        echo "$root" > "$state/pgroot"
        ln -sfn "$root/data" "$state/data"
        ln -sfn "$root/run" "$state/run"
        ln -sfn "$root/postgres.log" "$state/postgres.log"
        chown "$PG_USER:" "$root"
    fi
    local data=$root/data run=$root/run log=$root/postgres.log
    mkdir -p "$data" "$run"
    chmod 700 "$data" "$run"
    : > "$log"
    chown "$PG_USER:" "$data" "$run" "$log"

    as_pg timeout 120 "$bindir/initdb" -D "$data" -U "$PG_USER" -E UTF8 --locale=C \
        --auth-local=peer --auth-host=scram-sha-256 --no-sync \
        > "$state/initdb.log" 2>&1 || die "initdb failed; see $state/initdb.log"

    cat > "$data/pg_hba.conf" <<EOF
# TYPE  DATABASE  USER      ADDRESS        METHOD
local   all       $PG_USER                 peer
host    all       all       127.0.0.1/32   scram-sha-256
EOF
    cat >> "$data/postgresql.conf" <<EOF

# scripts/test-postgres.sh: loopback only, socket in the state folder, no durability.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$run'
password_encryption = 'scram-sha-256'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
    chown "$PG_USER:" "$data/pg_hba.conf" "$data/postgresql.conf"

    as_pg "$bindir/pg_ctl" -D "$data" -l "$log" -w -t 60 -s start \
        || die "postgres did not start; see $state/postgres.log"
    local pid
    pid=$(head -n1 "$data/postmaster.pid" 2>/dev/null) || die "no $data/postmaster.pid"
    is_our_postmaster "$pid" "$data" || die "postgres ($pid) is not running; see $state/postgres.log"
    echo "$pid" > "$state/postgres.pid"
    echo "$port" > "$state/port"
    wait_for 60 "postgres answers on 127.0.0.1:$port" \
        "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -t 2 \
        || die "postgres does not answer on 127.0.0.1:$port; see $state/postgres.log"

    local password
    password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
    # Over the socket, as the superuser (peer authentication); the password is alphanumeric
    # and goes in on standard input, not on a command line.
    printf "CREATE ROLE %s LOGIN CREATEDB PASSWORD '%s';\nCREATE DATABASE %s OWNER %s;\n" \
        "$DB_USER" "$password" "$DB_NAME" "$DB_USER" \
        | as_pg timeout 30 "$bindir/psql" -X -q -v ON_ERROR_STOP=1 \
            -h "$run" -p "$port" -U "$PG_USER" -d postgres > "$state/setup.log" 2>&1 \
        || die "cannot create role and database $DB_NAME; see $state/setup.log"
    (umask 077 && cat > "$state/env" <<EOF
HQS_TEST_PG_URL=postgresql+psycopg://$DB_USER:$password@127.0.0.1:$port/$DB_NAME
HQS_TEST_PG_PORT=$port
EOF
    )
    # End to end: the test role logs in over TCP with its password.
    PGPASSWORD=$password PGCONNECT_TIMEOUT=5 timeout 30 "$bindir/psql" -X -q -At \
        -h 127.0.0.1 -p "$port" -U "$DB_USER" -d "$DB_NAME" -c 'select 1' 2>>"$state/setup.log" \
        | grep -qx 1 || die "$DB_USER cannot log in over TCP; see $state/setup.log"
    echo "test-postgres: up on 127.0.0.1:$port; source $state/env" >&2
}

cmd_down() {
    local state=$1
    [ -n "$state" ] || die "usage: $0 down STATE_DIR"
    [ -d "$state" ] || return 0
    state=$(cd "$state" && pwd)
    local root data bindir
    root=$(pg_root "$state")
    data=$root/data
    # The PID `up` recorded, or (if `up` stopped half-way) the one in the data directory.
    local pids=() pid
    [ -f "$state/postgres.pid" ] && pids+=("$(cat "$state/postgres.pid")")
    [ -f "$data/postmaster.pid" ] && pids+=("$(head -n1 "$data/postmaster.pid")")
    for pid in "${pids[@]}"; do
        is_our_postmaster "$pid" "$data" || continue
        if bindir=$(pg_bindir); then
            as_pg timeout 40 "$bindir/pg_ctl" -D "$data" -m fast -w -t 30 -s stop 2>/dev/null || true
        fi
        if is_our_postmaster "$pid" "$data"; then
            kill -TERM "$pid" 2>/dev/null || true
            local deadline=$((SECONDS + 15))
            while running "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
            is_our_postmaster "$pid" "$data" && kill -KILL "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 10))
            while running "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
        fi
        running "$pid" && die "postgres ($pid) is still running"
        # Give its new parent a moment to reap the zombie, so no postgres process is listed.
        local reaped=$((SECONDS + 5))
        while [ -e "/proc/$pid" ] && [ "$SECONDS" -lt "$reaped" ]; do sleep 0.2; done
        echo "test-postgres: stopped postgres ($pid)" >&2
    done
    # Nothing of ours runs any more: the data is thrown away.
    rm -f "$state/postgres.pid" "$state/port" "$state/env"
    if [ "$root" != "$state" ]; then
        case "$root" in
            /tmp/hqs-test-pg.*) ;;
            *) die "unexpected folder in $state/pgroot: $root" ;;
        esac
        rm -f "$state/data" "$state/run" "$state/postgres.log"
        # Keep the log, as when everything is in STATE_DIR.
        if [ -f "$root/postgres.log" ]; then cp "$root/postgres.log" "$state/postgres.log"; fi
        rm -rf "$root"
        rm -f "$state/pgroot"
    else
        rm -rf "$state/data" "$state/run"
    fi
}

cmd_status() {
    local state=$1
    [ -n "$state" ] || die "usage: $0 status STATE_DIR"
    local data
    data=$(pg_root "$state" 2>/dev/null)/data
    if pid_alive "$state/postgres.pid" && is_our_postmaster "$(cat "$state/postgres.pid")" "$data"; then
        echo "postgres running ($(cat "$state/postgres.pid")) on 127.0.0.1:$(cat "$state/port" 2>/dev/null)"
    else
        echo "postgres stopped"
    fi
}

case "${1:-}" in
    install) cmd_install ;;
    up) cmd_up "${2:-}" ;;
    down) cmd_down "${2:-}" ;;
    status) cmd_status "${2:-}" ;;
    *) die "usage: $0 install | up STATE_DIR | down STATE_DIR | status STATE_DIR" ;;
esac
