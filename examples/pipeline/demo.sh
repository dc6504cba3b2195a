#!/usr/bin/env bash
# Runs the pipeline example end to end on this machine: builds `weft`, starts
# the service (which builds both roles from weft.toml), posts a job, waits for
# the worker's result, prints it, and stops the service with SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/../.."

rustup target add wasm32-wasip2 >/dev/null
cargo build --quiet -p weft-cli
weft_bin="${CARGO_TARGET_DIR:-target}/debug/weft"

out=$(mktemp -d)
trap 'kill "$weft" 2>/dev/null || true; rm -rf "$out"' EXIT
# The manifest names its components under examples/target, where its build
# command puts them only if CARGO_TARGET_DIR does not send them elsewhere.
# Its own state folder: a fresh, durable queue store for each demo.
env -u CARGO_TARGET_DIR "$weft_bin" up --state-dir "$out/state" examples/pipeline \
    >"$out/stdout" 2>"$out/log" &
weft=$!

# The first start builds the roles; give it time.
for _ in $(seq 1 600); do
    grep -qx ready "$out/stdout" && break
    if ! kill -0 "$weft" 2>/dev/null; then
        cat "$out/log" >&2
        echo "demo: weft exited before it was ready" >&2
        exit 1
    fi
    sleep 1
done
grep -qx ready "$out/stdout" || { cat "$out/log" >&2; echo "demo: weft did not become ready" >&2; exit 1; }
url=$(sed -n 's/^listening web //p' "$out/stdout")
echo "weft is serving the pipeline's web role at $url"

text='the quick brown fox jumps over the lazy dog
and the dog sleeps on'
echo "POST $url/jobs"
accepted=$(curl -sS --fail -X POST --data-binary "$text" "$url/jobs")
echo "  -> $accepted"
id=$(printf '%s' "$accepted" | sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p')
[ -n "$id" ] || { echo "demo: no job id in the answer" >&2; exit 1; }

for _ in $(seq 1 100); do
    record=$(curl -sS --fail "$url/jobs/$id")
    case "$record" in
        *'"status":"done"'*) echo "GET $url/jobs/$id"; echo "  -> $record"; break ;;
        *'"status":"failed"'*) echo "demo: the job failed: $record" >&2; exit 1 ;;
    esac
    sleep 0.1
done
case "$record" in *'"status":"done"'*) ;; *) echo "demo: the job was not done in time: $record" >&2; exit 1 ;; esac

kill -TERM "$weft"
wait "$weft"
echo "weft stopped cleanly; the pipeline ran end to end"
