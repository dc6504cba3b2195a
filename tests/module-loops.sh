#!/usr/bin/env bash
# Import loops between the modules of Weft's library crates: draws each
# crate's module graph with cargo-modules 0.27.0 (`dependencies --lib
# --no-fns --no-types --no-traits`) and prints every loop over its `uses`
# edges (a strongly connected component of more than one module). Exits 1
# if any crate has one. Its `--acyclic` flag is not used: it counts
# functions and types too, and calls `impl T { fn new() -> Self }` a loop.
#
#   tests/module-loops.sh                  # every library crate
#   tests/module-loops.sh runtime/broker   # one crate, by folder
#
# Installs cargo-modules 0.27.0 if it is missing (0.28 needs Rust 1.96+).
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.27.0
if ! cargo modules --version 2>/dev/null | grep -q "$version"; then
    echo "--- installing cargo-modules $version"
    cargo install --locked cargo-modules --version "$version"
fi

crates=("$@")
[ ${#crates[@]} -gt 0 ] || crates=(runtime/sandbox runtime/broker host-shim/host)

# Reads the DOT graph on stdin; prints each loop; exits 1 if there is one.
find_loops=$(cat <<'PY'
import re, sys
package = sys.argv[1]
edges = {}
for line in sys.stdin:
    m = re.match(r'\s*"([^"]+)"\s*->\s*"([^"]+)"\s*\[(.*)\]', line)
    if m and 'label="uses"' in m.group(3):
        edges.setdefault(m.group(1), set()).add(m.group(2))
        edges.setdefault(m.group(2), set())
# Tarjan's strongly connected components, iteratively.
index, low, on_stack, stack, loops, counter = {}, {}, set(), [], [], [0]
for root in sorted(edges):
    if root in index:
        continue
    work = [(root, iter(sorted(edges[root])))]
    index[root] = low[root] = counter[0]; counter[0] += 1
    stack.append(root); on_stack.add(root)
    while work:
        node, children = work[-1]
        child = next(children, None)
        if child is not None:
            if child not in index:
                index[child] = low[child] = counter[0]; counter[0] += 1
                stack.append(child); on_stack.add(child)
                work.append((child, iter(sorted(edges[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
            continue
        work.pop()
        if work:
            low[work[-1][0]] = min(low[work[-1][0]], low[node])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop(); on_stack.discard(member); component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                loops.append(sorted(component))
if not edges:
    print(f"{package}: cargo-modules drew no `uses` edges (did it fail?)")
    sys.exit(1)
if loops:
    for component in loops:
        print(f"{package}: a loop of {len(component)} modules: {', '.join(component)}")
    sys.exit(1)
print(f"{package}: no import loops ({len(edges)} modules)")
PY
)

status=0
for crate in "${crates[@]}"; do
    package=$(sed -n 's/^name = "\(.*\)"/\1/p' "$crate/Cargo.toml" | head -1)
    graph=$(cargo modules dependencies --package "$package" --lib \
        --no-fns --no-types --no-traits --no-externs --no-sysroot 2>/dev/null)
    if ! python3 -c "$find_loops" "$package" <<<"$graph"; then
        status=1
    fi
done
exit $status
