#!/usr/bin/env bash
# Release binaries for ARM Linux boards, cross-built on an x86_64 Linux host.
#
#   cross/build.sh aarch64   Raspberry Pi 4/5 with a 64-bit OS, Jetson (Nano/Xavier/Orin)
#   cross/build.sh armv7     Raspberry Pi with 32-bit Raspberry Pi OS (portable kernel)
#   cross/build.sh           both
#
# Extra arguments after the board go to cargo (e.g. `cross/build.sh armv7 --no-default-features`
# for the kernel and pack library alone). Installs nothing: it lists what is missing and stops.
# Output: $CARGO_TARGET_DIR/<target>/release/tipedge and tipedge-stripped, the one to copy to the
# board (default target dir: target/cross); without extra arguments also the C library
# (capi/install.sh into $CARGO_TARGET_DIR/<target>/c-prefix: header, libtipedge_c.so/.a,
# pkg-config and CMake files) and, for aarch64 when maturin is on PATH, the Python wheel
# ($CARGO_TARGET_DIR/wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/cross}"

boards=()
case "${1:-all}" in
    aarch64 | arm64) boards=(aarch64) ;;
    armv7 | armhf) boards=(armv7) ;;
    all) boards=(aarch64 armv7) ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "cross/build.sh: unknown board '$1' (aarch64, armv7 or all)" >&2; exit 2 ;;
esac
shift || true

triple() { case $1 in aarch64) echo aarch64-unknown-linux-gnu ;; armv7) echo armv7-unknown-linux-gnueabihf ;; esac; }
gcc_of() { case $1 in aarch64) echo aarch64-linux-gnu-gcc ;; armv7) echo arm-linux-gnueabihf-gcc ;; esac; }
pkg_of() { case $1 in aarch64) echo gcc-aarch64-linux-gnu ;; armv7) echo gcc-arm-linux-gnueabihf ;; esac; }

missing=()
installed=$(rustup target list --installed 2>/dev/null || true)
for b in "${boards[@]}"; do
    grep -qx "$(triple "$b")" <<<"$installed" || missing+=("rustup target add $(triple "$b")")
    command -v "$(gcc_of "$b")" >/dev/null || missing+=("apt-get install $(pkg_of "$b")   # provides $(gcc_of "$b")")
done
if ((${#missing[@]})); then
    echo "cross/build.sh: missing prerequisites; install them with:" >&2
    printf '    %s\n' "${missing[@]}" >&2
    exit 1
fi

for b in "${boards[@]}"; do
    t=$(triple "$b")
    echo "== cargo build --release --target $t $*"
    start=$SECONDS
    cargo --config cross/config.toml build --release --target "$t" "$@"
    out="$CARGO_TARGET_DIR/$t/release/tipedge"
    if [[ -f $out ]]; then
        # The release profile keeps line tables (backtraces); the copy for the board drops them.
        strip_tool=$(gcc_of "$b" | sed 's/gcc$/strip/')
        "$strip_tool" -o "$out-stripped" "$out"
        echo "== $out: $(du -h "$out" | cut -f1); stripped copy $out-stripped:" \
             "$(du -h "$out-stripped" | cut -f1); built in $((SECONDS - start)) s"
    else
        echo "== built in $((SECONDS - start)) s (no binary: the CLI needs the cli feature)"
    fi
    (($#)) && continue
    # The C library: the same release build of the library (the workspace shares one feature
    # set: workspace-hack/), installed with its header and pkg-config/CMake files.
    start=$SECONDS
    CARGO_CMD="cargo --config cross/config.toml" STRIP=$(gcc_of "$b" | sed 's/gcc$/strip/') \
        capi/install.sh "$CARGO_TARGET_DIR/$t/c-prefix" --target "$t" >/dev/null
    echo "== C library: $CARGO_TARGET_DIR/$t/c-prefix/lib:" \
         "$(cd "$CARGO_TARGET_DIR/$t/c-prefix/lib" && du -h libtipedge_c.so libtipedge_c.a | awk '{printf "%s %s  ", $2, $1}')" \
         "in $((SECONDS - start)) s"
    if [[ $b == aarch64 ]] && command -v maturin >/dev/null; then
        start=$SECONDS
        maturin build --release --target "$t" --config cross/config.toml -m python/Cargo.toml \
            --compatibility linux --strip -o "$CARGO_TARGET_DIR/wheels" 2>&1 | tail -3
        echo "== Python wheel (abi3, aarch64) in $CARGO_TARGET_DIR/wheels, $((SECONDS - start)) s"
    fi
done
