#!/usr/bin/env bash
# The test suite, on a fresh machine (the README's second command): adds the
# wasm32-wasip2 target the guests need, installs nats-server, haproxy,
# chromium and chromium-driver if they are missing (Debian's packages: the
# fabric's tests start servers of their own and put HAProxy in front of three
# hosts; the dashboard's test drives headless Chromium through chromedriver),
# starts a nats-server with JetStream on loopback for the NATS backend's
# tests, runs `cargo test --workspace` with any arguments given, and stops
# the server. Set WEFT_TEST_NATS_URL to use a server of your own for the
# backend's tests. The Python and JavaScript roles' tools come first:
# componentize-py from PyPI and the JavaScript SDK's pinned npm packages, and
# the two SDKs' own unit tests run before cargo's.
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

# Pinned: the SDKs and templates are checked against these versions.
componentize_py_version=0.25.1
if [ "$(componentize-py --version 2>/dev/null)" != "componentize-py $componentize_py_version" ]; then
    echo "--- installing componentize-py $componentize_py_version (the Python roles' build)"
    python3 -m pip install --quiet --root-user-action=ignore "componentize-py==$componentize_py_version"
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "--- installing Node.js and npm (the JavaScript roles' build)"
    sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq && $sudo apt-get install -y -qq nodejs npm
fi
# npm ci only when the lock is newer than what was installed from it.
if [ ! sdk/js/node_modules/.package-lock.json -nt sdk/js/package-lock.json ]; then
    echo "--- installing the JavaScript SDK's packages (npm ci, sdk/js/package-lock.json)"
    npm ci --prefix sdk/js --no-audit --no-fund --loglevel=error
fi

echo "--- Python SDK unit tests"
python3 -m unittest discover -s sdk/python/tests -t sdk/python
echo "--- JavaScript SDK unit tests"
node --test sdk/js/test/

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
