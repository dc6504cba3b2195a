#!/usr/bin/env bash
# Where a hello-world request's CPU goes in `weft serve`: serves the
# `wstd-hello` test component, loads it with wrk (2 threads, CONNECTIONS
# connections), samples the weft process with perf (cpu-clock, 1999 Hz, 4 s)
# and sorts the samples into groups (instantiation, calls across the
# component boundary, kernel, allocator, guest code...). Prints one
# Markdown table per mode: a fresh instance per request, and reuse (1,000
# requests per instance).
#
#   benches/profile-http.sh                 # 16 connections
#   CONNECTIONS=64 benches/profile-http.sh
#
# Needs a release build (`cargo build --release -p weft-cli -p weft-bench`,
# which also builds the test components), perf and wrk. Percentages are of
# the weft process's samples only; wrk runs on the same cores.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target="${CARGO_TARGET_DIR:-$root/target}"
connections=${CONNECTIONS:-16}
work="$target/bench-profile"
rm -rf "$work"
mkdir -p "$work"
component=$(find "$target/release/build" -path '*weft-test-artifacts-*/out/guests/wasm32-wasip2/release/wstd-hello.wasm' | head -n 1)
[ -n "$component" ] || { echo "no wstd-hello.wasm under $target/release/build: build weft-bench in release first" >&2; exit 1; }
command -v perf >/dev/null && command -v wrk >/dev/null || { echo "needs perf and wrk" >&2; exit 1; }
export WEFT_ADMIN_TOKEN=profile-http-admin-token

categorize() {
    perf report -i "$1" --no-children --sort dso,symbol --stdio 2>/dev/null | python3 -c '
import re, sys
groups = [
    ("guest wasm (compiled guest code)", lambda d, s: d.startswith("[JIT]")),
    ("kernel: sockets, scheduling, page faults", lambda d, s: d == "[kernel.kallsyms]"),
    ("malloc and free", lambda d, s: re.search(r"malloc|free|_int_|__rdl_|__rust_alloc|__rust_dealloc|unlink_chunk|realloc", s)),
    ("memcpy and memset", lambda d, s: re.search(r"memmove|memcpy|memset|memcmp", s)),
    ("wasmtime: instantiation (instance, pool slot, imports)", lambda d, s: re.search(r"Instantiator|vm::instance|pooling|OwnedImports|func_loc|lookup_vmdef|store_invariant_func|initialize_and_return_funcref|get_func_ref|instance_mut|InstancePre|instantiate|Component::|ModuleAffinity|TryVec|cranelift_bforest|FuncKey|memory_image|vmctx", s)),
    ("wasmtime: calls across the boundary (lift, lower, resources, call hook)", lambda d, s: re.search(r"component::func|LowerContext|LiftContext|resource|call_hook|HostFunc|wasmtime::runtime::func|options_memory|trampoline|StoreComponentInstanceId|component::store", s)),
    ("wasmtime-wasi and wasi-http host side", lambda d, s: re.search(r"wasmtime_wasi", s)),
    ("weft host (sandbox, scheduler, server)", lambda d, s: re.search(r"weft_", s)),
    ("hyper and http", lambda d, s: re.search(r"hyper|http::|httparse", s)),
    ("tokio", lambda d, s: re.search(r"tokio|mio", s)),
    ("other wasmtime", lambda d, s: "wasmtime" in s),
]
totals = {}
for line in sys.stdin:
    m = re.match(r"\s+([\d.]+)%\s+(\S+(?: tid \d+)?)\s+\[[.k]\]\s+(.*)$", line)
    if not m:
        continue
    pct, dso, sym = float(m.group(1)), m.group(2), m.group(3).strip()
    name = next((n for n, rule in groups if rule(dso, sym)), "other")
    totals[name] = totals.get(name, 0.0) + pct
for name, pct in sorted(totals.items(), key=lambda kv: -kv[1]):
    print(f"| {name} | {pct:.1f}% |")
'
}

port=18590
for rpi in 1 1000; do
    "$target/release/weft" serve --addr "127.0.0.1:$port" --admin-addr "127.0.0.1:$((port + 1))" \
        --requests-per-instance "$rpi" --cache-dir "$work/cache" "$component" >"$work/serve-$rpi.log" 2>&1 &
    pid=$!
    for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.2; done
    wrk -t2 -c"$connections" -d3s "http://127.0.0.1:$port/" >/dev/null
    wrk -t2 -c"$connections" -d8s "http://127.0.0.1:$port/" >"$work/wrk-$rpi.txt" &
    load=$!
    sleep 2
    perf record -e cpu-clock -F 1999 -p "$pid" -o "$work/perf-$rpi.data" -- sleep 4 >/dev/null 2>&1
    wait "$load"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    if [ "$rpi" = 1 ]; then mode="a fresh instance per request"; else mode="reuse ($rpi requests per instance)"; fi
    echo
    echo "$mode, $connections connections: $(awk '/Requests\/sec/ { print $2 }' "$work/wrk-$rpi.txt") requests/s"
    echo
    echo "| where | share of weft's CPU samples |"
    echo "| --- | ---: |"
    categorize "$work/perf-$rpi.data"
done
