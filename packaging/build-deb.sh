#!/usr/bin/env bash
# Debian packages of tipedge (binary, EfficientNet-Lite0 model, camera service), with cargo-deb.
#
#   packaging/build-deb.sh amd64    this machine (x86_64)
#   packaging/build-deb.sh arm64    Raspberry Pi 4/5 with 64-bit Raspberry Pi OS, Jetson
#   packaging/build-deb.sh armhf    Raspberry Pi with 32-bit Raspberry Pi OS
#   packaging/build-deb.sh all      the three
#
# Extra arguments after the architecture go to cargo-deb (e.g. --fast, --deb-revision 2).
# Installs cargo-deb (cargo install --locked) when missing; the cross targets need what
# cross/build.sh needs (rustup target, cross gcc: it lists what is missing). Cross builds use
# cross/config.toml (linkers, C compilers for build scripts); cargo-deb strips with the target's
# binutils (aarch64-linux-gnu-strip, arm-linux-gnueabihf-strip).
# Output: target/debian/tipedge_<version>-1_<arch>.deb under CARGO_TARGET_DIR (default target/).
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"

archs=()
case "${1:-}" in
    amd64 | x86_64) archs=(amd64) ;;
    arm64 | aarch64) archs=(arm64) ;;
    armhf | armv7) archs=(armhf) ;;
    all) archs=(amd64 arm64 armhf) ;;
    -h | --help) sed -n '2,14p' "$self" | sed 's/^# \{0,1\}//'; exit 0 ;;
    "") sed -n '2,14p' "$self" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    *) echo "packaging/build-deb.sh: unknown architecture '$1' (amd64, arm64, armhf or all)" >&2; exit 2 ;;
esac
shift

triple() { case $1 in amd64) echo x86_64-unknown-linux-gnu ;; arm64) echo aarch64-unknown-linux-gnu ;; armhf) echo armv7-unknown-linux-gnueabihf ;; esac; }
gcc_of() { case $1 in arm64) echo aarch64-linux-gnu-gcc ;; armhf) echo arm-linux-gnueabihf-gcc ;; esac; }
pkg_of() { case $1 in arm64) echo gcc-aarch64-linux-gnu ;; armhf) echo gcc-arm-linux-gnueabihf ;; esac; }

if ! cargo deb --version >/dev/null 2>&1; then
    echo "== cargo install cargo-deb --locked"
    cargo install cargo-deb --locked
fi
echo "== $(cargo deb --version)"

missing=()
installed=$(rustup target list --installed 2>/dev/null || true)
for a in "${archs[@]}"; do
    [[ $a == amd64 ]] && continue
    grep -qx "$(triple "$a")" <<<"$installed" || missing+=("rustup target add $(triple "$a")")
    command -v "$(gcc_of "$a")" >/dev/null ||
        missing+=("apt-get install $(pkg_of "$a")   # provides $(gcc_of "$a") and its strip")
done
if ((${#missing[@]})); then
    echo "packaging/build-deb.sh: missing prerequisites; install them with:" >&2
    printf '    %s\n' "${missing[@]}" >&2
    exit 1
fi
if [[ $(uname -m) != x86_64 ]]; then
    echo "packaging/build-deb.sh: cross/config.toml is for an x86_64 host" >&2
    exit 1
fi

outputs=()
for a in "${archs[@]}"; do
    start=$SECONDS
    # --strip: the release profile keeps line tables (debug = 1), which cargo-deb would package.
    # --output: the file name cargo-deb gives it, in the one folder.
    if [[ $a == amd64 ]]; then
        cmd=(cargo deb --strip --output "$target_dir/debian/" "$@")
    else
        # cargo-deb does not read cross/config.toml; the cargo build it runs gets it after `--`.
        cmd=(cargo deb --strip --target "$(triple "$a")" --output "$target_dir/debian/" "$@"
             -- --config cross/config.toml)
    fi
    echo "== ${cmd[*]}"
    log=$(mktemp)
    "${cmd[@]}" 2>&1 | tee "$log"
    # cargo-deb prints the package's path as its last line.
    deb=$(grep -E '\.deb$' "$log" | tail -n 1)
    rm -f "$log"
    echo "== $a: $deb ($(du -h "$deb" | cut -f1)), built in $((SECONDS - start)) s"
    outputs+=("$deb")
done
printf '%s\n' "${outputs[@]}"
