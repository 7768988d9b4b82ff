#!/usr/bin/env bash
# The aarch64 Python wheel's tests (python/tests) under qemu-user, as a Raspberry Pi 4
# (QEMU_CPU, default cortex-a72): Debian bookworm's arm64 CPython 3.11 unpacked into a
# sysroot (apt-get download; the arm64 architecture is added to dpkg for the download and
# removed again), NumPy, Pillow and pytest from PyPI's aarch64 wheels, the wheel
# `cross/build.sh aarch64` made, and the aarch64 tipedge CLI (through qemu) as the reference.
#
#   cross/build.sh aarch64 && cross/test-python-aarch64.sh
#
# Slow (every frame runs the encoder under emulation: ~10-20 min); not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/cross}"
t=aarch64-unknown-linux-gnu
wheel=$(ls "$CARGO_TARGET_DIR"/wheels/tipedge-*-abi3-*aarch64*.whl | tail -1)
cli=$CARGO_TARGET_DIR/$t/release/tipedge-stripped
[[ -f $wheel && -x $cli ]] || { echo "run cross/build.sh aarch64 first (wheel: maturin on PATH)" >&2; exit 1; }
py=${PYTHON:-python3}
sys=$CARGO_TARGET_DIR/py-aarch64
if [[ ! -x $sys/root/usr/bin/python3.11 ]]; then
    mkdir -p "$sys/debs" "$sys/root" "$sys/site"
    dpkg --add-architecture arm64
    trap 'dpkg --remove-architecture arm64 || true' EXIT
    timeout 600 apt-get update -qq
    (cd "$sys/debs" && timeout 600 apt-get download python3.11-minimal:arm64 \
        libpython3.11-minimal:arm64 libpython3.11-stdlib:arm64 libexpat1:arm64 zlib1g:arm64 \
        libffi8:arm64 libbz2-1.0:arm64 liblzma5:arm64 libssl3:arm64 libsqlite3-0:arm64 \
        libuuid1:arm64 libncursesw6:arm64 libtinfo6:arm64 libreadline8:arm64 libcrypt1:arm64)
    for d in "$sys"/debs/*.deb; do dpkg -x "$d" "$sys/root"; done
    cp -an /usr/aarch64-linux-gnu/lib/. "$sys/root/lib/"
    timeout 600 "$py" -m pip download -q --only-binary=:all: --platform manylinux2014_aarch64 \
        --platform manylinux_2_28_aarch64 --python-version 3.11 --implementation cp \
        --abi cp311 -d "$sys/wheels" numpy pillow pytest
    for w in "$sys"/wheels/*.whl; do "$py" -m zipfile -e "$w" "$sys/site"; done
fi
rm -rf "$sys/tipedge"
"$py" -m zipfile -e "$wheel" "$sys/tipedge"
cat > "$sys/tipedge-cli" <<SH
#!/bin/sh
exec qemu-aarch64 -L /usr/aarch64-linux-gnu "$cli" "\$@"
SH
chmod +x "$sys/tipedge-cli"
echo "== $(basename "$wheel") under qemu-aarch64 -cpu ${QEMU_CPU:-cortex-a72}"
cd python/tests
QEMU_CPU=${QEMU_CPU:-cortex-a72} TIPEDGE_BIN=$sys/tipedge-cli PYTHONPATH=$sys/tipedge:$sys/site \
    qemu-aarch64 -L "$sys/root" "$sys/root/usr/bin/python3.11" -m pytest -q -p no:cacheprovider "$@"
