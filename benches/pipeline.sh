#!/usr/bin/env bash
# The pipeline example (examples/pipeline) end to end under `weft up`, as a
# new user runs it: its web role at its default rate limits, posting jobs to
# the queue its worker role drains into the key-value bucket, beside the
# same service with the queue and key-value rate limits lifted (the
# baseline), in interleaved rounds. wrk posts short jobs over 16
# connections for a while; the script counts the answers (2xx, 429, 503,
# other), then waits for the queue to drain: jobs done end to end a second
# is the jobs accepted over the time from the first post to the empty queue.
# Writes pipeline.md into $RESULTS: benches/run.sh sets it to its run's
# folder; alone, the script writes into target/bench-results/single, so a
# run by hand never overwrites the figures a full run's page is made from.
#
#   benches/pipeline.sh              # 3 rounds of 10 s each way: about 3 minutes on 2 cores
#   QUICK=1 benches/pipeline.sh      # one round of 3 s: checks the harness
#   NO_BUILD=1 benches/pipeline.sh   # with the release weft already built (the components are built anyway)
#   WORKERS=8 benches/pipeline.sh    # the worker role with 8 instances instead of the example's 2
#
# Run it on an otherwise idle machine: wrk shares the cores with the host.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target="${CARGO_TARGET_DIR:-$root/target}"
results="${RESULTS:-$target/bench-results/single}"
work="$target/bench-pipeline"
# WEFT=PATH measures another build of weft (say, a copy of the one before a change).
weft="${WEFT:-$target/release/weft}"
components="$root/examples/target/wasm32-wasip2/release"
connections=16
port=18480
admin_port=18481
if [ -n "${QUICK:-}" ]; then
    rounds=1
    seconds=3
else
    rounds=3
    seconds=10
fi
# ROUNDS=N and LOAD_SECONDS=S override either.
rounds=${ROUNDS:-$rounds}
seconds=${LOAD_SECONDS:-$seconds}

command -v wrk >/dev/null || {
    sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq wrk
}
echo "--- build (release)"
[ -n "${NO_BUILD:-}" ] || cargo build --release -p weft-cli
# The example's own build line (examples/pipeline/weft.toml); its own
# workspace, so a build of Weft's does not make them.
(cd examples && cargo build --release --target wasm32-wasip2 -p pipeline-web -p pipeline-worker)
rm -rf "$work"
mkdir -p "$work" "$results"

# The example's manifest with its components' absolute paths and the
# benchmark's port; `lifted` also removes the queue and key-value limits.
sed -e "s#\"\.\./target/wasm32-wasip2/release#\"$components#" \
    -e "s#127\.0\.0\.1:8080#127.0.0.1:$port#" \
    examples/pipeline/weft.toml >"$work/defaults.toml"
if [ -n "${WORKERS:-}" ]; then
    sed -i "/^\[roles.worker\]/,/^\[/ s/^instances = .*/instances = $WORKERS/" "$work/defaults.toml"
fi
workers=$(sed -n '/^\[roles.worker\]/,/^\[/ s/^instances = //p' "$work/defaults.toml")
cp "$work/defaults.toml" "$work/lifted.toml"
for role in web worker; do
    for interface in queue kv; do
        printf '\n[roles.%s.rate-limits.%s]\nops = { size = 0, refill-ms = 1000 }\nbytes = { size = 0, refill-ms = 1000 }\n' \
            "$role" "$interface" >>"$work/lifted.toml"
    done
done

# wrk: one short job per request; the answers counted by status.
cat >"$work/post.lua" <<'EOF'
wrk.method = "POST"
wrk.path = "/jobs"
wrk.body = "the quick brown fox jumps over the lazy dog and the cat sat on the mat"
wrk.headers["content-type"] = "text/plain"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok, limited, unavailable, other = 0, 0, 0, 0 end
function response(status, headers, body)
    if status >= 200 and status < 300 then ok = ok + 1
    elseif status == 429 then limited = limited + 1
    elseif status == 503 then unavailable = unavailable + 1
    else other = other + 1 end
end
function done(summary, latency, requests)
    local t = {ok = 0, limited = 0, unavailable = 0, other = 0}
    for _, thread in ipairs(threads) do
        for k, _ in pairs(t) do t[k] = t[k] + thread:get(k) end
    end
    io.write(string.format("STATUS %d %d %d %d %d\n", t.ok, t.limited, t.unavailable, t.other,
        summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
EOF

export WEFT_ADMIN_TOKEN=weft-bench-pipeline-token
admin="http://127.0.0.1:$admin_port"
queue_length() {
    curl -sf -H "Authorization: Bearer $WEFT_ADMIN_TOKEN" "$admin/v1/services/pipeline/queues" |
        grep -o '"length":[0-9]*,"name":"jobs"' | cut -d: -f2 | cut -d, -f1
}
now() { date +%s.%N; }
# Whether fewer than $2 seconds have passed since $1.
within() { awk -v since="$1" -v now="$(now)" -v limit="$2" 'BEGIN { exit !(now - since < limit) }'; }

rows="$work/rows.tsv"
: >"$rows"
for round in $(seq 1 "$rounds"); do
    for mode in defaults lifted; do
        state="$work/state-$mode-$round"
        "$weft" up --no-build --state-dir "$state" --cache-dir "$work/cache" \
            --admin-addr "127.0.0.1:$admin_port" "$work/$mode.toml" >"$work/weft-$mode-$round.log" 2>&1 &
        pid=$!
        for _ in $(seq 1 200); do
            curl -sf -o /dev/null -X POST --data-binary warm "http://127.0.0.1:$port/jobs" && break
            sleep 0.1
        done
        # The warm-up job drains first.
        warm=$(now)
        until [ "$(queue_length)" = 0 ] || ! within "$warm" 30; do sleep 0.1; done
        started=$(now)
        status=$(wrk -t2 -c"$connections" -d"${seconds}s" -s "$work/post.lua" "http://127.0.0.1:$port/" |
            grep '^STATUS' | cut -d' ' -f2-)
        loaded=$(now)
        left=$(queue_length)
        length=$left
        while [ "$length" != 0 ] && within "$loaded" 300; do
            sleep 0.05
            length=$(queue_length)
        done
        drained=$(now)
        limited=$(curl -sf "$admin/metrics" |
            awk '/^weft_role_calls_rate_limited_total\{service="pipeline"/ && ($0 ~ /interface="(queue|kv)"/) {s += $2} END {print s + 0}')
        kill "$pid"
        wait "$pid" || true
        read -r ok r429 r503 other errors <<<"$status"
        echo "$mode $round $ok $r429 $r503 $other $errors $left $length $limited $started $loaded $drained" >>"$rows"
        echo "$mode round $round: 2xx $ok, 429 $r429, 503 $r503, other $other, socket errors $errors; queue $left at the end of load, $length at the end"
    done
done

# One row per round, then the medians of each mode.
{
    echo "The pipeline example (\`examples/pipeline\`: a Rust web role queueing each job and recording it in a bucket, $workers worker instances analysing them) under \`weft up\`, release build; wrk -t2 -c$connections posting a 70-byte job for $seconds s, $rounds interleaved round(s) each way. *End to end* is the jobs accepted (2xx) over the time from the first post to the queue's last completion. *Rate-limited calls* are the queue and key-value calls the host refused (\`weft_role_calls_rate_limited_total\`)."
    echo
    echo "| rate limits | round | POSTs answered 2xx /s | 429 | 503 | other / socket errors | queue at the end of load | jobs done end to end /s | rate-limited calls |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    awk '{
        load = $12 - $11; total = $13 - $11
        label = ($1 == "defaults") ? "defaults" : "lifted (baseline)"
        drained = ($9 == 0) ? sprintf("%.0f", $3 / total) : sprintf("not drained (%d left)", $9)
        printf "| %s | %d | %.0f | %d | %d | %d / %d | %d | %s | %d |\n", label, $2, $3 / load, $4, $5, $6, $7, $8, drained, $10
    }' "$rows"
    echo
    for mode in defaults lifted; do
        median=$(awk -v m="$mode" '$1 == m && $9 == 0 {print $3 / ($13 - $11)}' "$rows" | sort -n |
            awk '{v[NR] = $1} END {if (NR) printf "%.0f", v[int((NR + 1) / 2)]; else print "none drained"}')
        echo "- $mode: median $median jobs/s end to end"
    done
} >"$results/pipeline.md"
cat "$results/pipeline.md"

# The aim (issue 14): at its defaults, >= 5,000 jobs/s end to end with no
# rate-limited refusal, as the median of the rounds that drained.
if [ -n "${AIMS:-}" ]; then
    median=$(awk '$1 == "defaults" && $9 == 0 {print $3 / ($13 - $11)}' "$rows" | sort -n |
        awk '{v[NR] = $1} END {printf "%.0f", NR ? v[int((NR + 1) / 2)] : 0}')
    refused=$(awk '$1 == "defaults" {s += $4 + $5 + $10} END {print s + 0}' "$rows")
    met=false
    [ "$median" -ge 5000 ] && [ "$refused" -eq 0 ] && met=true
    "$target/release/weft-bench" aim --aims "$AIMS" \
        --aim "The pipeline example at its defaults ≥ 5,000 jobs/s end to end, no rate-limited refusal (16 connections)" \
        --measured "$median jobs/s, $refused refusals (429, 503 and rate-limited calls)" --met "$met"
fi
