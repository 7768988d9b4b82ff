#!/usr/bin/env bash
# Runs the kernel and pack tests for aarch64 under qemu-user, twice:
#   -cpu cortex-a72  (Raspberry Pi 4: NEON only)           → expects the `neon` kernel
#   -cpu cortex-a76  (Raspberry Pi 5: NEON + dotprod, fp16) → expects the `neon-dotprod` kernel
# and fails if either run fails. Built without the runtime feature (no tract cross-compile):
#   cargo test --no-default-features --lib --test kernel --test pack --test kernel_isa --test alloc
# then, with tract (the runtime feature), the encoder's unit tests under both CPUs: tipedge's int8
# glue operators and its weight and activation packing against tract's own (the NEON paths; the
# cortex-a76 run is where tract's int8 kernels take the dot-product layout, PackedI8K4):
#   cargo test --no-default-features --features runtime --lib encoder::
#
# Installs what it needs when missing: the rustup target, and (as root, or with passwordless
# sudo) the Debian packages qemu-user and gcc-aarch64-linux-gnu.
#
# Environment:
#   CARGO_TARGET_DIR   defaults to target/cross (kept apart from the host build's target/)
#   TIPEDGE_QEMU_FULL  set to 1 to also run the realistic-accuracy test, skipped by default: it
#                      checks quantisation accuracy, which does not depend on the ISA (the int8
#                      kernels are bit-identical to the portable one, the property tests check
#                      fp32/fp16), and its f64 reference takes minutes under emulation.
#   TIPEDGE_QEMU_ENCODER  set to 0 to skip the encoder tests (they cross-compile tract: minutes)
set -euo pipefail
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-gnu
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/cross}"

say() { printf '== %s\n' "$*"; }
die() { printf 'cross/test-aarch64.sh: %s\n' "$*" >&2; exit 1; }

# --- prerequisites ---------------------------------------------------------------------------
if ! grep -qx "$target" <<<"$(rustup target list --installed)"; then
    say "installing the Rust target $target"
    rustup target add "$target"
fi

missing=()
command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
if ((${#missing[@]})); then
    if [[ $(id -u) == 0 ]]; then
        sudo=()
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        die "missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
    fi
    say "installing ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}"
fi
cpus=$(qemu-aarch64 -cpu help || true)  # exits 1 after listing
for cpu in cortex-a72 cortex-a76; do
    grep -qw "$cpu" <<<"$cpus" \
        || die "$(qemu-aarch64 --version | head -1) does not emulate $cpu (qemu ≥ 7 does)"
done

# --- build once ------------------------------------------------------------------------------
args=(--config cross/config.toml test --target "$target" --no-default-features --lib)
for t in kernel pack kernel_isa alloc; do
    if [[ -f tests/$t.rs ]]; then
        args+=(--test "$t")
    else
        say "WARNING: tests/$t.rs does not exist; not run"
    fi
done
skip=()
if [[ ${TIPEDGE_QEMU_FULL:-0} != 1 ]]; then
    skip=(--skip int8_and_fp16_keys_are_accurate_on_realistic_features)
fi

encoder=(--config cross/config.toml test --target "$target" --no-default-features
         --features runtime --lib)
say "building for $target (target dir $CARGO_TARGET_DIR)"
start=$SECONDS
cargo "${args[@]}" --no-run
if [[ ${TIPEDGE_QEMU_ENCODER:-1} != 0 ]]; then
    cargo "${encoder[@]}" --no-run
fi
say "built in $((SECONDS - start)) s"

# --- run under each CPU ----------------------------------------------------------------------
# run NAME CPU ISA CARGO-ARGS... -- TEST-ARGS...: one test set under one CPU, counted.
failed=()
summary=()
run() {
    local name=$1 cpu=$2 isa=$3
    shift 3
    say "$name under qemu-aarch64 -cpu $cpu (expecting the $isa kernel)"
    local log status=0 start=$SECONDS counts
    log=$(mktemp)
    QEMU_CPU=$cpu TIPEDGE_EXPECT_ISA=$isa cargo "$@" 2>&1 | tee "$log" || status=$?
    counts=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) {
                      if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
                  END { printf "%d passed, %d failed", p, f }' "$log")
    rm -f "$log"
    [[ $counts == "0 passed"* ]] && status=1  # a filter that matched nothing is a failure
    summary+=("$name, $cpu ($isa): $counts in $((SECONDS - start)) s")
    ((status == 0)) || failed+=("$name on $cpu")
}
for pair in cortex-a72:neon cortex-a76:neon-dotprod; do
    cpu=${pair%%:*}
    isa=${pair#*:}
    run "kernel and pack tests" "$cpu" "$isa" "${args[@]}" --no-fail-fast -- "${skip[@]}"
    if [[ ${TIPEDGE_QEMU_ENCODER:-1} != 0 ]]; then
        run "encoder tests (tract)" "$cpu" "$isa" "${encoder[@]}" -- encoder::
    fi
done

say "summary"
printf '   %s\n' "${summary[@]}"
if ((${#failed[@]})); then
    die "FAILED: ${failed[*]}"
fi
say "aarch64 tests passed under both CPUs"
