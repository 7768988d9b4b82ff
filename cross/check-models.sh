#!/usr/bin/env bash
# Runs image graphs (f32, f16, int8) with the aarch64 tipedge binary under qemu-user, as a Pi 4
# (-cpu cortex-a72: NEON, int8 products with SMLAL) and as a Pi 5 (-cpu cortex-a76: dotprod SDOT,
# fp16 arithmetic), and compares every feature vector with the x86_64 build's on the same images.
#
#   cross/check-models.sh [--precision f16] MODEL_DIR... [-- IMAGE_OR_FOLDER...]
#
# Default images: 4 photos of examples/textile/query. Needs the two binaries:
#   cargo build --release                 (target/release/tipedge)
#   cross/build.sh aarch64                (target/cross/aarch64-unknown-linux-gnu/release/tipedge)
# and qemu-user + the aarch64 glibc (apt-get install qemu-user gcc-aarch64-linux-gnu).
# Prints one line per model × CPU: minimum cosine and max |difference| over the images, and
# fails (exit 1) if a cosine is below $MIN_COSINE (default 0.999). Timings under qemu mean
# nothing and are not reported.
set -euo pipefail
cd "$(dirname "$0")/.."
X86=${X86:-target/release/tipedge}
ARM=${ARM:-target/cross/aarch64-unknown-linux-gnu/release/tipedge}
MIN_COSINE=${MIN_COSINE:-0.999}
precision=f32
if [[ ${1:-} == --precision ]]; then precision=$2; shift 2; fi
models=()
while (($#)) && [[ $1 != -- ]]; do models+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
images=("$@")
if ((${#images[@]} == 0)); then
    images=(examples/textile/query/nominal/textile_0895.jpg examples/textile/query/nominal/textile_0934.jpg
            "$(ls examples/textile/query/local_defect/* | head -1)" "$(ls examples/textile/query/global_defect/* | head -1)")
fi
((${#models[@]})) || { sed -n '2,15p' "$0"; exit 2; }
for b in "$X86" "$ARM"; do [[ -x $b ]] || { echo "cross/check-models.sh: no binary at $b" >&2; exit 2; }; done
command -v qemu-aarch64 >/dev/null || { echo "cross/check-models.sh: qemu-aarch64 missing (apt-get install qemu-user)" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
for m in "${models[@]}"; do
    "$X86" embed --model "$m" --precision "$precision" --raw "${images[@]}" -o "$tmp/x86.jsonl" 2>"$tmp/err" ||
        { cat "$tmp/err" >&2; exit 1; }
    for cpu in cortex-a72 cortex-a76; do
        # tract finds fp16 arithmetic in /proc/cpuinfo's Features ("asimdhp"), which qemu-user
        # does not emulate (dotprod it finds through the auxiliary vector); a real Pi 5 has it.
        isa=; [[ $cpu == cortex-a76 ]] && isa=+fp16
        TRACT_CPU_ISA=$isa qemu-aarch64 -cpu "$cpu" -L /usr/aarch64-linux-gnu "$ARM" embed --model "$m" --precision "$precision" \
            --raw "${images[@]}" -o "$tmp/$cpu.jsonl" 2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
        python3 - "$tmp/x86.jsonl" "$tmp/$cpu.jsonl" "$m" "$cpu" "$precision" "$MIN_COSINE" <<'EOF' || status=1
import json, math, sys
x86, arm, model, cpu, precision, min_cos = sys.argv[1:]
load = lambda p: {d["path"]: d["features"] for d in map(json.loads, open(p))}
a, b = load(x86), load(arm)
assert a.keys() == b.keys() and a, f"{model}: not the same images embedded"
cos, diff, scale = [], 0.0, 0.0
for k in a:
    u, v = a[k], b[k]
    cos.append(sum(x * y for x, y in zip(u, v)) / math.sqrt(sum(x * x for x in u) * sum(y * y for y in v)))
    diff = max(diff, max(abs(x - y) for x, y in zip(u, v)))
    scale = max(scale, max(abs(x) for x in u))
ok = min(cos) >= float(min_cos)
print(f"{model:<48} {precision} {cpu:<11} {len(cos)} images  min cosine {min(cos):.7f}  "
      f"max |diff| {diff:.3e} (max |x| {scale:.3f})  {'ok' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
EOF
    done
done
exit $status
