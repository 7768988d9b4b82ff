#!/usr/bin/env bash
# Which α/β to keep when several grid points are equally best on validation: the official rule
# (the first in β-then-α order: the smallest β and α) or the plateau rule (the point deepest
# inside the best region), measured on held-out test images.
#
# For both key recipes (official: 10 augmented passes of RandomResizedCrop 0.5–1 + flip; plain:
# one unaugmented view), K = 1, 4 and 16 shots per class, seeds 1, 2, 3: cache build (bundled
# shots, int8 keys) → tune on the validation split with each rule → eval on the test split.
# Needs a release build and the large split (examples/textile/large_split.py; pass its folder
# as LARGE). Prints a Markdown table; every step's JSON stays in $OUT.
#   LARGE=target/textile-large examples/textile/tie_break.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${TIPEDGE:-target/release/tipedge}
OUT=${OUT:-target/tie-break-example}
MODEL=models/fixtures/efficientnet-lite0
DATA=examples/textile
SHOTS=${SHOTS:-1 4 16}
SEEDS=${SEEDS:-1 2 3}
: "${LARGE:?set LARGE to the folder examples/textile/large_split.py wrote}"
rm -rf "$OUT" && mkdir -p "$OUT"
export TIPEDGE_FEATURES="$OUT/features"
for recipe in official:10 plain:0; do
    IFS=: read -r name epochs <<< "$recipe"
    for k in $SHOTS; do
        for seed in $SEEDS; do
            p="$OUT/$name-k$k-s$seed"
            echo "$name K=$k seed=$seed" >&2
            "$BIN" cache build -m $MODEL --shots $DATA/shots -k "$k" --seed "$seed" --keys int8 \
                --augment-epochs "$epochs" --out "$p.pack" --json > "$p.build.json"
            for rule in official plateau; do
                "$BIN" tune -m $MODEL --pack "$p.pack" --val "$LARGE/val" --tie-break $rule \
                    --no-calibration --out "$p.$rule.pack" --json > "$p.$rule.tune.json"
                "$BIN" eval -m $MODEL --pack "$p.$rule.pack" --test "$LARGE/test" --json \
                    > "$p.$rule.eval.json"
            done
        done
    done
done
python3 - "$OUT" "$SHOTS" "$SEEDS" <<'PY'
import json, statistics, sys
out, shots, seeds = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
def ms(v):
    return f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1 else f"{v[0]:.1f}"
print("| keys | K | val top-1 (both rules) | test top-1, official rule | test top-1, plateau rule | plateau − official per seed | α, β official → plateau (seed 1) |")
print("|---|---|---|---|---|---|---|")
for name in ("official", "plain"):
    for k in shots:
        val, off, pla, diff = [], [], [], []
        ab = ""
        for seed in seeds:
            p = f"{out}/{name}-k{k}-s{seed}"
            t = {r: json.load(open(f"{p}.{r}.tune.json")) for r in ("official", "plateau")}
            e = {r: json.load(open(f"{p}.{r}.eval.json")) for r in ("official", "plateau")}
            assert t["official"]["val_top1"] == t["plateau"]["val_top1"]
            val.append(t["official"]["val_top1"])
            off.append(e["official"]["top1"])
            pla.append(e["plateau"]["top1"])
            diff.append(e["plateau"]["top1"] - e["official"]["top1"])
            if seed == seeds[0]:
                ab = (f'{t["official"]["alpha"]:.2f}, {t["official"]["beta"]:.2f} → '
                      f'{t["plateau"]["alpha"]:.2f}, {t["plateau"]["beta"]:.2f}')
        n = json.load(open(f"{out}/{name}-k{k}-s{seeds[0]}.official.eval.json"))["n_images"]
        print(f"| {name} | {k} | {ms(val)} | {ms(off)} | {ms(pla)} | "
              f"{' '.join(f'{d:+.1f}' for d in diff)} | {ab} |")
print(f"\n{n} test images: one image is {100 / n:.2f} points.")
PY
