#!/usr/bin/env bash
# The C ABI end to end (called by .ci/run after `cargo test`): its Rust tests (every entry point
# as C calls it, bad input, the committed header is cbindgen's output); an install into a
# temporary prefix; the C example built with gcc through pkg-config (shared library), against
# the static library, and with CMake's find_package; its top-1 per frame on ffmpeg's test source
# compared with `tipedge stream` on the same frames; and a run under valgrind memcheck
# (0 errors, 0 bytes lost).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

cargo test -p tipedge-capi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
# The test profile's build (already made by cargo test): no second build of tract.
PROFILE=dev capi/install.sh "$prefix"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
src=examples/c/classify_frames.c
gcc -std=c99 -Wall -Wextra -Werror $src $(pkg-config --cflags --libs tipedge) -o "$work/shared"
gcc -std=c99 -Wall -Wextra -Werror $src $(pkg-config --cflags tipedge) "$prefix/lib/libtipedge_c.a" \
    -lgcc_s -lutil -lrt -lpthread -lm -ldl -o "$work/static"
if ldd "$work/static" | grep -q tipedge; then echo "static build links libtipedge_c.so" >&2; exit 1; fi
cmake -S examples/c -B "$work/cmake" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/cmake" >/dev/null

bin=target/debug/tipedge
model=models/fixtures/efficientnet-lite0
"$bin" cache build -m $model --shots examples/textile/shots -k 2 --augment-epochs 0 \
    --out "$work/t.pack" --json >/dev/null
timeout 60 ffmpeg -v error -f lavfi -i testsrc=size=320x240:rate=10 -frames:v 8 \
    -f rawvideo -pix_fmt nv12 "$work/frames.nv12"
"$bin" stream -m $model --pack "$work/t.pack" --format nv12 --size 320x240 --all-frames \
    --input "$work/frames.nv12" 2>/dev/null |
    sed -n 's/^{"type":"prediction","frame":\([0-9]*\),"top":\[{"label":"\([^"]*\)".*/\1 \2/p' \
    > "$work/stream.txt"
for build in shared static cmake/classify_frames; do
    timeout 120 "$work/$build" $model "$work/t.pack" 320 240 < "$work/frames.nv12" |
        sed 's/ [0-9.]*$//' > "$work/c.txt"
    if [ "$(wc -l < "$work/c.txt")" -ne 8 ] || ! cmp -s "$work/c.txt" "$work/stream.txt"; then
        echo "C example ($build) and tipedge stream disagree:" >&2
        diff "$work/c.txt" "$work/stream.txt" >&2 || true
        exit 1
    fi
done
echo "C example (shared, static, CMake): top-1 of 8 frames identical to tipedge stream"

head -c $((320 * 240 * 3 / 2 * 2)) "$work/frames.nv12" > "$work/two.nv12"
timeout 600 valgrind --tool=memcheck --leak-check=full --errors-for-leak-kinds=definite,possible \
    --error-exitcode=99 "$work/shared" $model "$work/t.pack" 320 240 \
    < "$work/two.nv12" > /dev/null 2> "$work/valgrind.txt" || {
    cat "$work/valgrind.txt" >&2
    exit 1
}
grep -E "ERROR SUMMARY|definitely lost|possibly lost" "$work/valgrind.txt"
