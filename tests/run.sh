#!/usr/bin/env bash
# The test suite, on a fresh machine (the README's second command): adds the
# wasm32-wasip2 target the guests need, installs nats-server if it is
# missing (Debian's package), starts one with JetStream on loopback for the
# NATS backend's tests, runs `cargo test --workspace` with any arguments
# given, and stops the server. Set WEFT_TEST_NATS_URL to use a server of
# your own instead.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null; then
    rustup target add wasm32-wasip2 >/dev/null
fi

nats_dir=$(mktemp -d)
nats_pid=
cleanup() {
    if [ -n "$nats_pid" ]; then
        kill "$nats_pid" 2>/dev/null || true
        wait "$nats_pid" 2>/dev/null || true
    fi
    rm -rf "$nats_dir"
}
trap cleanup EXIT

if [ -z "${WEFT_TEST_NATS_URL:-}" ]; then
    if ! command -v nats-server >/dev/null; then
        echo "--- installing nats-server (the NATS backend's tests need it)"
        sudo=
        [ "$(id -u)" -eq 0 ] || sudo=sudo
        $sudo apt-get update -qq && $sudo apt-get install -y -qq nats-server
    fi
    # Its own port and a temporary store, so a server already on this
    # machine is neither used nor disturbed. Tests that kill or restart
    # NATS start servers of their own.
    nats_port=14222
    nats-server --jetstream --addr 127.0.0.1 --port "$nats_port" \
        --store_dir "$nats_dir/store" >"$nats_dir/log" 2>&1 &
    nats_pid=$!
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break
        if ! kill -0 "$nats_pid" 2>/dev/null; then
            cat "$nats_dir/log" >&2
            echo "nats-server did not start" >&2
            exit 1
        fi
        sleep 0.1
    done
    export WEFT_TEST_NATS_URL="nats://127.0.0.1:$nats_port"
    echo "--- $(nats-server --version) with JetStream at $WEFT_TEST_NATS_URL"
fi

cargo test --workspace "$@"
