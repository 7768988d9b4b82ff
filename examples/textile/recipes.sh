#!/usr/bin/env bash
# The key recipe chosen on validation (`cache build --val`, recipe auto) against the official
# recipe and plain keys, on held-out test images: EfficientNet-Lite0, int8 keys, the bundled
# shots, K = 1, 4 and 16 per class, seeds 1, 2, 3; α/β (and the recipe, for auto) chosen on the
# large split's 450 validation images, top-1 on its 900 test images.
# Needs a release build and the large split (examples/textile/large_split.py; pass its folder
# as LARGE). Prints a Markdown table; every step's JSON stays in $OUT.
#   LARGE=target/textile-large examples/textile/recipes.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${TIPEDGE:-target/release/tipedge}
OUT=${OUT:-target/recipes-example}
MODEL=models/fixtures/efficientnet-lite0
DATA=examples/textile
SHOTS=${SHOTS:-1 4 16}
SEEDS=${SEEDS:-1 2 3}
: "${LARGE:?set LARGE to the folder examples/textile/large_split.py wrote}"
rm -rf "$OUT" && mkdir -p "$OUT"
export TIPEDGE_FEATURES="$OUT/features"
for recipe in auto official plain; do
    for k in $SHOTS; do
        for seed in $SEEDS; do
            p="$OUT/$recipe-k$k-s$seed"
            echo "$recipe K=$k seed=$seed" >&2
            "$BIN" cache build -m $MODEL --shots $DATA/shots -k "$k" --seed "$seed" --keys int8 \
                --recipe "$recipe" --val "$LARGE/val" --out "$p.pack" --json > "$p.build.json"
            "$BIN" eval -m $MODEL --pack "$p.pack" --test "$LARGE/test" --json > "$p.eval.json"
        done
    done
done
python3 - "$OUT" "$SHOTS" "$SEEDS" <<'PY'
import json, statistics, sys
out, shots, seeds = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
def ms(v):
    return f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1 else f"{v[0]:.1f}"
print("| K | test top-1: auto (chosen on val) | official recipe | plain keys | recipes auto chose (seeds " + ", ".join(seeds) + ") |")
print("|---|---|---|---|---|")
for k in shots:
    row, chose = {}, []
    for recipe in ("auto", "official", "plain"):
        row[recipe] = [json.load(open(f"{out}/{recipe}-k{k}-s{s}.eval.json"))["top1"] for s in seeds]
    chose = [json.load(open(f"{out}/auto-k{k}-s{s}.build.json"))["recipe"] for s in seeds]
    print(f"| {k} | {ms(row['auto'])} | {ms(row['official'])} | {ms(row['plain'])} | {', '.join(chose)} |")
n = json.load(open(f"{out}/auto-k{shots[0]}-s{seeds[0]}.eval.json"))["n_images"]
print(f"\n{n} test images: one image is {100 / n:.2f} points.")
PY
