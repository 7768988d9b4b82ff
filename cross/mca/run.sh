#!/usr/bin/env bash
# Regenerates cross/mca/README.md: llvm-mca estimates of the aarch64 kernels' inner loops on
# Cortex-A72 (Raspberry Pi 4) and, with llvm-mca ≥ 17, Cortex-A76 (Pi 5). Not part of CI.
#
# Needs: the aarch64-unknown-linux-gnu Rust target, python3, llvm-mca (Debian: llvm or llvm-19).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/cross-asm}"
target=aarch64-unknown-linux-gnu
deps="$CARGO_TARGET_DIR/$target/release/deps"

# One codegen unit: one .s file with every kernel in it. The asm is of the same release build
# the binaries get (inlining, register allocation), not of a special one.
rm -f "$deps"/tipedge-*.s
cargo --config cross/config.toml rustc --release --target "$target" --no-default-features --lib \
    -- --emit asm -C codegen-units=1
asm=$(ls "$deps"/tipedge-*.s)
rm -rf cross/mca/asm
python3 cross/mca/analyse.py "$asm" cross/mca
