#!/usr/bin/env bash
# Guest instructions of one encoder pass under qemu-user, per function of the binary.
#
#   cross/insn/run.sh BINARY MODEL CPU [OUT.json]
#
# BINARY: an unstripped aarch64 tipedge (cross/build.sh aarch64 writes one); MODEL: a model folder
# or image.onnx; CPU: a qemu CPU (cortex-a72 = Pi 4, cortex-a76 = Pi 5). Runs `tipedge bench
# encoder` twice under qemu with the counting plugin (cross/insn/count.c, built here with gcc),
# once with 1 pass and once with 3, and prints the difference per pass by function
# (cross/insn/attribute.py): the work of one pass without loading. qemu's counts are the
# instructions the emulated CPU executes: exact and repeatable, unlike its timings. Needs
# qemu-user, gcc-aarch64-linux-gnu (for nm and the sysroot) and python3.
set -euo pipefail
[[ $# -ge 3 ]] || { sed -n '2,12p' "$0"; exit 2; }
bin=$1 model=$2 cpu=$3 out=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -shared -fPIC -o "$work/libcount.so" "$here/count.c"
for runs in 1 3; do
    QEMU_CPU=$cpu timeout 3600 qemu-aarch64 -L /usr/aarch64-linux-gnu \
        -plugin "$work/libcount.so,out=$work/c$runs.txt" -d page -D "$work/c$runs.log" \
        "$bin" bench encoder --model "$model" --runs "$runs" --warmup 0 --json >"$work/bench$runs.json"
done
args=("$bin" "$work/c3.txt" "$work/c3.log" --minus "$work/c1.txt" "$work/c1.log" --per 2)
if [[ -n $out ]]; then
    python3 "$here/attribute.py" "${args[@]}" --json >"$out"
fi
python3 "$here/attribute.py" "${args[@]}" --top 25
