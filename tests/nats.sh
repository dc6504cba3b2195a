# Sourced by tests/run.sh and benches/run.sh. `start_nats PORT` starts
# nats-server with JetStream on loopback at PORT, with a temporary store,
# and waits until it says it is ready (or prints its log and fails). The
# server is stopped and its store removed when the sourcing script exits.

nats_dir=
nats_pid=

stop_nats() {
    if [ -n "$nats_pid" ]; then
        kill "$nats_pid" 2>/dev/null || true
        wait "$nats_pid" 2>/dev/null || true
        nats_pid=
    fi
    if [ -n "$nats_dir" ]; then
        rm -rf "$nats_dir"
        nats_dir=
    fi
}

start_nats() {
    local port=$1
    nats_dir=$(mktemp -d)
    trap stop_nats EXIT
    nats-server --jetstream --addr 127.0.0.1 --port "$port" \
        --store_dir "$nats_dir/store" >"$nats_dir/log" 2>&1 &
    nats_pid=$!
    for _ in $(seq 1 100); do
        # Its own word, not a connection test: another program on the port
        # would accept connections too.
        grep -q "Server is ready" "$nats_dir/log" && return 0
        kill -0 "$nats_pid" 2>/dev/null || break
        sleep 0.1
    done
    cat "$nats_dir/log" >&2
    echo "nats-server did not start on 127.0.0.1:$port" >&2
    return 1
}
