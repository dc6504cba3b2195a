#!/usr/bin/env bash
# How fast a fabric heals, measured through the real `weft` binary: three
# `weft host`s on 127.0.0.2-4 (fault domains a, b, c) joined to one
# nats-server with JetStream, running the pipeline example (web on 2 hosts,
# 3 workers). Two scenarios, each timed from a `kill -9`:
#
#   worker host   kill -9 a host (not the leader) running worker instances;
#                 → the leader marks it down → 3 workers ready again on the
#                 survivors.
#   leader host   kill -9 the leader's host and at once `weft scale` the
#                 workers (3 ↔ 4); → another host leads → the scale has
#                 converged on the survivors.
#
# Each down-after value gets a fresh fabric; after each run the killed host
# joins again (same id and state folder) and the service converges before
# the next run. Events are seen by polling `weft status --json` and `weft
# fabric hosts --json` about every 100 ms (a poll takes some tens of ms
# more: read the figures to ±0.3 s).
#
#   benches/fabric.sh                       # RUNS=5, down-after 10 and 4
#   RUNS=2 DOWN_AFTERS="4" SCENARIOS=leader benches/fabric.sh
#   WEFT=target/debug/weft benches/fabric.sh  # another binary
#
# Prints a markdown table on stdout, progress on stderr. About 12 minutes
# on 2 cores with the defaults. Every process it starts is killed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

runs=${RUNS:-5}
down_afters=${DOWN_AFTERS:-"10 4"}
scenarios=${SCENARIOS:-"worker leader"}
target="${CARGO_TARGET_DIR:-$root/target}"
weft=${WEFT:-$target/release/weft}
[ -x "$weft" ] || weft="$target/debug/weft"
[ -x "$weft" ] || { echo "no weft binary: cargo build -p weft-cli (or set WEFT)" >&2; exit 1; }
command -v jq >/dev/null || { echo "jq is needed: apt-get install jq" >&2; exit 1; }
command -v nats-server >/dev/null || { echo "nats-server is needed: apt-get install nats-server" >&2; exit 1; }
unset WEFT_ADMIN WEFT_ADMIN_TOKEN
export WEFT_LOG=${WEFT_LOG:-warn}

# The longest any one wait may take before the run counts as failed.
limit_secs=120
ips=(127.0.0.2 127.0.0.3 127.0.0.4)
domains=(a b c)

work=$(mktemp -d "${TMPDIR:-/tmp}/weft-bench-fabric.XXXXXX")
results="$work/results.tsv"
: >"$results"
nats_pid=
host_pids=("" "" "")

cleanup() {
    local pid
    for pid in "${host_pids[@]}" "$nats_pid" "${scale_pid:-}"; do
        [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    done
    for pid in "${host_pids[@]}" "$nats_pid" "${scale_pid:-}"; do
        [ -n "$pid" ] && until_gone "$pid"
    done
    if [ -n "${KEEP:-}" ]; then
        echo "kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

free_port() {
    python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$1"
}

# A port free on every host address (the web role listens there).
port_free_everywhere() {
    local port ip ok
    while :; do
        port=$(free_port 127.0.0.1)
        ok=1
        for ip in "${ips[@]}"; do
            python3 -c 'import socket,sys; socket.socket().bind((sys.argv[1], int(sys.argv[2])))' "$ip" "$port" 2>/dev/null || ok=
        done
        [ -n "$ok" ] && { echo "$port"; return; }
    done
}

fab() { "$weft" "$@" --fabric "$url"; }
hosts_json() { fab fabric hosts --json 2>/dev/null || echo '{}'; }
status_json() { fab status pipeline --json 2>/dev/null || echo '{}'; }

# Worker instances ready on hosts other than $1, counting only hosts that
# run the revision the leader placed and only what they were assigned.
workers_ready_without() {
    jq -r --arg gone "$1" '
        (.services // [])[] | select(.name == "pipeline") | . as $s
        | ((.roles[] | select(.name == "worker")) // {declared: 0, hosts: {}}) as $r
        | [($r.hosts | to_entries[]
            | select(.key != $gone and .value.revision == $s.placed_revision)
            | [.value.ready, .value.assigned] | min)] | add // 0
        | "\(.) \($r.declared) \($s.placed_revision == $s.desired_revision)"'
}

start_nats() {
    local port
    port=$(free_port 127.0.0.1)
    mkdir -p "$work/nats"
    nats-server -js -a 127.0.0.1 -p "$port" -sd "$work/nats/store" >"$work/nats/log" 2>&1 &
    nats_pid=$!
    disown "$nats_pid"
    url="nats://127.0.0.1:$port"
    for _ in $(seq 1 100); do
        grep -q "Server is ready" "$work/nats/log" && return 0
        sleep 0.1
    done
    cat "$work/nats/log" >&2
    return 1
}

stop_fabric() {
    local pid
    for pid in "${host_pids[@]}" "$nats_pid"; do
        [ -n "$pid" ] && { kill -9 "$pid" 2>/dev/null || true; until_gone "$pid"; }
    done
    host_pids=("" "" "")
    nats_pid=
    rm -rf "$work/nats" "$work"/state-* "$work"/keys
}

# start_host INDEX: member h-DOMAIN on its address, its own state folder.
start_host() {
    local i=$1 ip=${ips[$1]} domain=${domains[$1]}
    WEFT_LOG=${HOST_LOG:-info} "$weft" host --state-dir "$work/state-$domain" --cache-dir "$work/cache" \
        --admin-addr "$ip:$(free_port "$ip")" \
        --fabric "$url" --host-id "h-$domain" --advertise "$ip" --fault-domain "$domain" \
        --fabric-trust "$work/keys/fabric.pub" --fabric-down-after "$down_after" \
        >>"$work/host-$domain.log" 2>&1 &
    host_pids[i]=$!
    # No "Killed" notice from bash when the benchmark kills it.
    disown "${host_pids[i]}"
}

# Waits until process $1 is gone (bash reaps disowned children itself).
until_gone() {
    local _
    for _ in $(seq 1 100); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.05
    done
}

index_of() {
    local i
    for i in 0 1 2; do [ "h-${domains[$i]}" = "$1" ] && { echo "$i"; return; }; done
    echo "unknown host $1" >&2
    return 1
}

# Waits until 3 hosts are ready, one leads, and the pipeline (if deployed)
# has its declared workers ready everywhere it is placed.
until_settled() {
    local give_up=$(($(date +%s) + limit_secs)) hosts status
    while [ "$(date +%s)" -lt "$give_up" ]; do
        hosts=$(hosts_json)
        if [ "$(jq '[.hosts[]? | select(.state == "ready")] | length' <<<"$hosts")" = 3 ] &&
            [ "$(jq -r '.leader.host // empty' <<<"$hosts")" != "" ]; then
            [ -z "${deployed:-}" ] && return 0
            status=$(status_json)
            [ "$(jq -r '.services[0].converged // false' <<<"$status")" = true ] && return 0
        fi
        sleep 0.3
    done
    say "the fabric did not settle in ${limit_secs}s"
    return 1
}

start_fabric() {
    say "fabric: nats-server, 3 hosts, --fabric-down-after $down_after"
    start_nats
    "$weft" fabric keygen --out "$work/keys" >/dev/null
    mkdir -p "$work/cache"
    deployed=
    start_host 0
    start_host 1
    start_host 2
    until_settled
    local dir="$work/pipeline" components="$root/examples/target/wasm32-wasip2/release"
    mkdir -p "$dir"
    cat >"$dir/weft.toml" <<EOF
[service]
name = "pipeline"

[roles.web]
kind = "web"
component = "$components/pipeline_web.wasm"
listen = "127.0.0.1:$(port_free_everywhere)"
instances = 2
queues = ["jobs"]
buckets = ["jobs"]

[roles.worker]
kind = "worker"
component = "$components/pipeline-worker.wasm"
instances = 3
queues = ["jobs"]
buckets = ["jobs"]
EOF
    say "deploy pipeline (web 2, worker 3)"
    fab deploy "$dir" --fabric-key "$work/keys/fabric.key" --no-build --wait-secs "$limit_secs" >/dev/null
    deployed=1
    until_settled
}

record() { printf '%s\t%s\t%s\n' "$1" "$down_after" "$2" >>"$results"; }

# Joins the killed host again and waits for the fabric to settle.
rejoin() {
    local i=$1
    until_gone "${host_pids[$i]}"
    start_host "$i"
    until_settled
}

# One run: kill -9 a non-leader host running workers; time until the leader
# sees it down and until 3 workers are ready on the others.
worker_host_run() {
    local hosts status leader victim i t0 t t_down= t_restored= seen
    hosts=$(hosts_json)
    status=$(status_json)
    leader=$(jq -r '.leader.host' <<<"$hosts")
    victim=$(jq -r --arg leader "$leader" '
        [.services[0].roles[] | select(.name == "worker") | .placed | to_entries[]
         | select(.key != $leader) | {host: .key, n: (.value | length)}]
        | sort_by(-.n) | .[0].host // empty' <<<"$status")
    [ -n "$victim" ] || { say "no non-leader host runs workers"; return 1; }
    i=$(index_of "$victim")
    t0=$(now)
    kill -9 "${host_pids[$i]}"
    while :; do
        t=$(now)
        if [ "$(since "$t0" "$t" | cut -d. -f1)" -ge "$limit_secs" ]; then
            say "worker host run: not restored in ${limit_secs}s (killed $victim; down seen ${t_down:+yes})"
            failed_run "$i"
            return 1
        fi
        if [ -z "$t_down" ]; then
            [ "$(hosts_json | jq -r --arg v "$victim" '.hosts[]? | select(.id == $v) | .state')" = down ] &&
                t_down=$(now)
        fi
        seen=0
        read -r seen declared _ < <(status_json | workers_ready_without "$victim") || true
        if [ "${seen:-0}" -ge 3 ]; then
            t_restored=$(now)
            break
        fi
        sleep 0.1
    done
    [ -n "$t_down" ] || t_down=$t_restored
    say "killed $victim: down seen $(since "$t0" "$t_down") s, 3 workers ready $(since "$t0" "$t_restored") s"
    record "worker host: kill -9 → marked down" "$(since "$t0" "$t_down")"
    record "worker host: kill -9 → 3 workers ready on survivors" "$(since "$t0" "$t_restored")"
    rejoin "$i"
}

# One run: kill -9 the leader's host and at once `weft scale` the workers
# (3 <-> 4); time until the scale is accepted, another host leads, the
# survivors run the new count (polled), and `weft scale` returns (it waits
# until the fabric runs the count, as an operator sees it).
leader_host_run() {
    local hosts status leader i t0 t t_lead= t_accepted= t_placed= t_done= t_returned= declared want
    local now_leader seen placed scale_failed=
    hosts=$(hosts_json)
    status=$(status_json)
    leader=$(jq -r '.leader.host' <<<"$hosts")
    declared=$(jq -r '.services[0].roles[] | select(.name == "worker") | .declared' <<<"$status")
    want=$((declared == 3 ? 4 : 3))
    i=$(index_of "$leader")
    t0=$(now)
    kill -9 "${host_pids[$i]}"
    start_scale "$want"
    while :; do
        t=$(now)
        if [ "$(since "$t0" "$t" | cut -d. -f1)" -ge "$limit_secs" ]; then
            say "leader host run: not converged in ${limit_secs}s (killed $leader; seen: scale accepted ${t_accepted:+yes}, new leader ${t_lead:+yes}, placed ${t_placed:+yes})"
            failed_run "$i"
            return 1
        fi
        # The operator's scale: signed desired state in JetStream, accepted
        # without a leader; placing it needs one.
        if [ -z "$t_accepted" ] && grep -q '^scaling' "$work/scale.out"; then
            t_accepted=$t
        fi
        if [ -n "$scale_pid" ] && ! kill -0 "$scale_pid" 2>/dev/null; then
            if wait "$scale_pid"; then
                t_returned=$(now)
                scale_pid=
            elif ! grep -q '^scaling' "$work/scale.out"; then
                # Refused before it was written (the service was changing):
                # the operator tries again.
                start_scale "$want"
            else
                say "weft scale failed: $(tail -1 "$work/scale.err")"
                scale_failed=1
                scale_pid=
            fi
        fi
        if [ -z "$t_lead" ]; then
            now_leader=$(hosts_json | jq -r '.leader.host // empty')
            [ -n "$now_leader" ] && [ "$now_leader" != "$leader" ] && t_lead=$(now)
        fi
        if [ -n "$t_accepted" ] && [ -z "$t_done" ]; then
            seen=0 placed=false
            read -r seen declared placed < <(status_json | workers_ready_without "$leader") || true
            [ -z "$t_placed" ] && [ "${declared:-0}" = "$want" ] && [ "${placed:-}" = true ] && t_placed=$(now)
            if [ "${declared:-0}" = "$want" ] && [ "${placed:-}" = true ] && [ "${seen:-0}" -ge "$want" ]; then
                t_done=$(now)
            fi
        fi
        [ -n "$t_lead" ] && [ -n "$t_done" ] && { [ -n "$t_returned" ] || [ -n "$scale_failed" ]; } && break
        sleep 0.1
    done
    say "killed leader $leader: scale to $want accepted $(since "$t0" "$t_accepted") s, new leader $(since "$t0" "$t_lead") s, placed $(since "$t0" "$t_placed") s, converged $(since "$t0" "$t_done") s, weft scale returned $(since "$t0" "$t_returned") s"
    record "leader host: kill -9 → another host leads" "$(since "$t0" "$t_lead")"
    record "leader host: kill -9 + scale → the new leader placed it" "$(since "$t0" "$t_placed")"
    record "leader host: kill -9 + scale → survivors run the new count" "$(since "$t0" "$t_done")"
    if [ -n "$t_returned" ]; then
        record "leader host: kill -9 + scale → \`weft scale\` returns" "$(since "$t0" "$t_returned")"
    else
        failed=$((failed + 1))
    fi
    rejoin "$i"
}

scale_pid=
failed=0
# After a failed run: what the fabric shows, the hosts' logs kept, and the
# killed host joined again (or, if the fabric does not settle, a new one).
failed_run() {
    local kept="$target/bench-fabric-failed-$(date -u +%H%M%S)"
    mkdir -p "$kept"
    cp "$work"/host-*.log "$work"/scale.* "$kept"/ 2>/dev/null || true
    fab fabric hosts >"$kept/hosts.txt" 2>&1 || true
    fab status pipeline >"$kept/status.txt" 2>&1 || true
    say "failed run: hosts' logs and the fabric's view kept in $kept"
    cat "$kept/hosts.txt" "$kept/status.txt" >&2
    if [ -n "$scale_pid" ]; then
        kill -9 "$scale_pid" 2>/dev/null || true
        wait "$scale_pid" 2>/dev/null || true
        scale_pid=
    fi
    if ! rejoin "$1"; then
        stop_fabric
        start_fabric
    fi
}

# `weft scale pipeline/worker N` in the background, its output in files.
start_scale() {
    fab scale pipeline/worker "$1" --fabric-key "$work/keys/fabric.key" \
        >"$work/scale.out" 2>"$work/scale.err" &
    scale_pid=$!
}

for scenario in $scenarios; do
    case $scenario in worker | leader) ;; *) echo "unknown scenario $scenario (worker, leader)" >&2; exit 1 ;; esac
done
say "weft: $weft; runs: $runs; down-after: $down_afters; scenarios: $scenarios"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
say "build the pipeline example's components (wasm32-wasip2, once)"
cargo build --release --target wasm32-wasip2 --manifest-path examples/Cargo.toml \
    -p pipeline-web -p pipeline-worker >&2

for down_after in $down_afters; do
    start_fabric
    for scenario in $scenarios; do
        for run in $(seq 1 "$runs"); do
            say "down-after $down_after, $scenario host run $run/$runs"
            "${scenario}_host_run" || failed=$((failed + 1))
        done
    done
    stop_fabric
done

lease=6
echo "| Scenario | down-after (s) | Runs | Median (s) | Min (s) | Max (s) | Expected |"
echo "|---|---|---|---|---|---|---|"
cut -f1,2 "$results" | awk '!seen[$0]++' | while IFS=$'\t' read -r scenario d; do
    case "$scenario" in
        *"marked down") expect="down-after ($d) from the last beat seen (0-1 s before the kill)" ;;
        *"3 workers ready"*) expect="down-after ($d) + reconcile (≤ 1) + instance start" ;;
        *"another host leads") expect="lease + 1 ($((lease + 1))) after the last renewal, 0-2 s before the kill" ;;
        *"placed it") expect="new leader + its first reconcile" ;;
        *) expect="new leader + down-after ($d) grace + reconcile + instance start" ;;
    esac
    awk -F'\t' -v s="$scenario" -v d="$d" '$1 == s && $2 == d { print $3 }' "$results" | sort -n |
        awk -v s="$scenario" -v d="$d" -v e="$expect" '
            { v[NR] = $1 }
            END {
                m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
                printf "| %s | %s | %d | %.1f | %.1f | %.1f | %s |\n", s, d, NR, m, v[1], v[NR], e
            }'
done
echo
echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')); \`$(basename "$weft")\` at ${weft#"$root"/}; load average before the run: $load_before; $failed failed runs left out."
