# Helpers shared by the test-server scripts (sourced, not run). The caller sets NAME first:
# it starts every message.

die() { echo "$NAME: $*" >&2; exit 1; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds, bounded in time.
wait_for() {
    local seconds=$1 what=$2; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
    echo "$NAME: $what" >&2
}
