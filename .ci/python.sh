#!/usr/bin/env bash
# The Python package end to end (called by .ci/run after `cargo test`, whose debug build of the
# tipedge CLI the tests compare against): a venv with maturin, pytest, NumPy and Pillow; the abi3
# wheel built by maturin in the test profile (the target directory's tract, no second build);
# installed into the venv and tested with pytest (python/tests).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$PWD/target}
venv=$target/py-venv
if ! "$venv/bin/python" -c 'import maturin, pytest, numpy, PIL' 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    timeout 600 "$venv/bin/pip" install -q --disable-pip-version-check \
        'maturin>=1.9,<2' 'pytest>=7' 'numpy>=1.21' 'pillow>=9'
fi
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
if ! "$venv/bin/maturin" build --profile dev -m python/Cargo.toml -i "$venv/bin/python" \
    -o "$wheels" > "$wheels/build.log" 2>&1; then
    cat "$wheels/build.log" >&2
    exit 1
fi
wheel=$(ls "$wheels"/tipedge-*.whl)
echo "wheel: $(basename "$wheel")"
"$venv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$wheel"
cd python/tests
TIPEDGE_BIN=$target/debug/tipedge timeout 1200 "$venv/bin/python" -m pytest -q -p no:cacheprovider
