#!/usr/bin/env bash
# Tip-Adapter-F's training views on held-out test images: the official run (fresh
# RandomResizedCrop 0.5–1 + flip views every epoch), plain (unaugmented) views, and the default
# (--views auto: both, the better kept on validation, and never worse than the input pack on
# validation). EfficientNet-Lite0, int8 keys, the bundled shots, K = 1, 4 and 16 per class,
# seeds 1, 2, 3. Each starts from the pack `cache build --val` chose (recipe and α/β on the large
# split's 450 validation images); epochs and α/β are chosen on the same validation images; top-1
# on its 900 test images.
# Needs a release build and the large split (examples/textile/large_split.py; pass its folder
# as LARGE). Prints a Markdown table; every step's JSON stays in $OUT.
#   LARGE=target/textile-large examples/textile/finetune_views.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${TIPEDGE:-target/release/tipedge}
OUT=${OUT:-target/finetune-views-example}
MODEL=models/fixtures/efficientnet-lite0
DATA=examples/textile
SHOTS=${SHOTS:-1 4 16}
SEEDS=${SEEDS:-1 2 3}
: "${LARGE:?set LARGE to the folder examples/textile/large_split.py wrote}"
rm -rf "$OUT" && mkdir -p "$OUT"
export TIPEDGE_FEATURES="$OUT/features"
for k in $SHOTS; do
    for seed in $SEEDS; do
        p="$OUT/k$k-s$seed"
        echo "K=$k seed=$seed" >&2
        "$BIN" cache build -m $MODEL --shots $DATA/shots -k "$k" --seed "$seed" --keys int8 \
            --val "$LARGE/val" --out "$p.input.pack" --json > "$p.input.build.json"
        "$BIN" eval -m $MODEL --pack "$p.input.pack" --test "$LARGE/test" --json > "$p.input.eval.json"
        for views in augmented plain auto; do
            extra=()
            [ "$views" = auto ] || extra=(--write-trained)
            "$BIN" finetune -m $MODEL --pack "$p.input.pack" --shots $DATA/shots --val "$LARGE/val" \
                --views "$views" "${extra[@]}" --out "$p.$views.pack" --json > "$p.$views.ft.json"
            "$BIN" eval -m $MODEL --pack "$p.$views.pack" --test "$LARGE/test" --json > "$p.$views.eval.json"
        done
    done
done
python3 - "$OUT" "$SHOTS" "$SEEDS" <<'PY'
import json, statistics, sys
out, shots, seeds = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
def ms(v):
    return f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1 else f"{v[0]:.1f}"
def top1(k, s, what):
    return json.load(open(f"{out}/k{k}-s{s}.{what}.eval.json"))["top1"]
print("| K | input (cache build --val) | official views | plain views | auto (default) | auto: views chosen / input kept (seeds " + ", ".join(seeds) + ") |")
print("|---|---|---|---|---|---|")
for k in shots:
    cols = [ms([top1(k, s, w) for s in seeds]) for w in ("input", "augmented", "plain", "auto")]
    how = []
    for s in seeds:
        r = json.load(open(f"{out}/k{k}-s{s}.auto.ft.json"))
        how.append("input kept" if r["kept_input"] else r["views"])
    print(f"| {k} | " + " | ".join(cols) + f" | {', '.join(how)} |")
n = json.load(open(f"{out}/k{shots[0]}-s{seeds[0]}.input.eval.json"))["n_images"]
print(f"\n{n} test images: one image is {100 / n:.2f} points.")
PY
