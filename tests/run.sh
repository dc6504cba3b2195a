#!/usr/bin/env bash
# The test suite, on a fresh machine (the README's second command): adds the
# wasm32-wasip2 target the guests need, installs nats-server, haproxy,
# chromium and chromium-driver if they are missing (Debian's packages: the
# fabric's tests start servers of their own and put HAProxy in front of three
# hosts; the dashboard's test drives headless Chromium through chromedriver),
# starts a nats-server with JetStream on loopback for the NATS backend's
# tests, runs `cargo test --workspace` with any arguments given, and stops
# the server. Set WEFT_TEST_NATS_URL to use a server of your own for the
# backend's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null; then
    rustup target add wasm32-wasip2 >/dev/null
fi

# shellcheck source=tests/nats.sh
source tests/nats.sh

if ! command -v nats-server >/dev/null || ! command -v haproxy >/dev/null ||
    ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "--- installing nats-server, haproxy, chromium and chromium-driver (the NATS, fabric and dashboard tests need them)"
    sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq && $sudo apt-get install -y -qq nats-server haproxy chromium chromium-driver
fi

if [ -z "${WEFT_TEST_NATS_URL:-}" ]; then
    # Its own port and a temporary store, so a server already on this
    # machine is neither used nor disturbed. Tests that kill or restart
    # NATS start servers of their own.
    nats_port=14222
    start_nats "$nats_port"
    export WEFT_TEST_NATS_URL="nats://127.0.0.1:$nats_port"
    echo "--- $(nats-server --version) with JetStream at $WEFT_TEST_NATS_URL"
fi

cargo test --workspace "$@"
