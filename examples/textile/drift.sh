#!/usr/bin/env bash
# TDA on a drifting stream: the large split's 900 test images replayed through `tipedge stream`
# (raw rgb24 frames, every frame classified) while the light fades, warms, or the lens
# defocuses (examples/textile/drift.py), with and without --tda; top-1 per 100 frames.
# The pack: EfficientNet-Lite0, int8 keys, K = 16 bundled shots, recipe and α/β chosen on the
# large split's validation images (`cache build --val`, seed 1), temperature fitted there.
# Needs a release build, the large split (examples/textile/large_split.py; pass its folder as
# LARGE), and Python with numpy and Pillow (PYTHON). Prints a Markdown table; the frames,
# predictions and scores stay in $OUT.
#   LARGE=target/textile-large PYTHON=python3 examples/textile/drift.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${TIPEDGE:-target/release/tipedge}
OUT=${OUT:-target/drift-example}
PY=${PYTHON:-python3}
MODEL=models/fixtures/efficientnet-lite0
DATA=examples/textile
K=${K:-16}
: "${LARGE:?set LARGE to the folder examples/textile/large_split.py wrote}"
rm -rf "$OUT" && mkdir -p "$OUT"
export TIPEDGE_FEATURES="$OUT/features"
PACK="$OUT/k$K.pack"
"$BIN" cache build -m $MODEL --shots $DATA/shots -k "$K" --seed 1 --keys int8 \
    --val "$LARGE/val" --out "$PACK" --json > "$OUT/build.json"
for kind in none brightness colour blur; do
    echo "drift: $kind" >&2
    "$PY" $DATA/drift.py frames "$LARGE/test" "$kind" "$OUT/$kind.rgb" "$OUT/$kind.labels.json"
    for tda in off on; do
        flag=()
        [ "$tda" = on ] && flag=(--tda)
        "$BIN" stream -m $MODEL --pack "$PACK" --format rgb24 --size 250x250 --all-frames \
            --input "$OUT/$kind.rgb" "${flag[@]}" > "$OUT/$kind.$tda.jsonl" 2> "$OUT/$kind.$tda.err"
        "$PY" $DATA/drift.py score "$OUT/$kind.labels.json" "$OUT/$kind.$tda.jsonl" \
            > "$OUT/$kind.$tda.score.json"
    done
    "$PY" $DATA/drift.py compare "$OUT/$kind.labels.json" "$OUT/$kind.on.jsonl" \
        "$OUT/$kind.off.jsonl" > "$OUT/$kind.compare.json"
    rm "$OUT/$kind.rgb"
done
"$PY" - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
print("| drift | TDA | top-1 | top-1 per 100 frames (drift grows left to right) | TDA on vs off: frames better / worse, McNemar p |")
print("|---|---|---|---|---|")
for kind in ("none", "brightness", "colour", "blur"):
    c = json.load(open(f"{out}/{kind}.compare.json"))
    for tda in ("off", "on"):
        s = json.load(open(f"{out}/{kind}.{tda}.score.json"))
        w = " ".join(f"{x:.0f}" for x in s["windows"])
        p = c["p_value"]
        p = f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"
        vs = f"{c['better']} / {c['worse']}, p = {p}" if tda == "on" else ""
        print(f"| {kind} | {tda} | {s['top1']:.1f} | {w} | {vs} |")
print(f"\n{s['n']} frames: one frame is {100 / s['n']:.2f} points overall, 1 point per window of 100.")
PY
