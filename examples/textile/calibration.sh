#!/usr/bin/env bash
# The README's calibration table: how far tipedge's probabilities can be trusted, before and
# after the temperature `tune` fits, with the bundled EfficientNet-Lite0 on the textile images.
#
# For K = 4 and 16 shots per class and seeds 1, 2, 3: cache build (bundled shots, int8 keys) →
# tune (α/β, then the temperature, on a validation split) → eval on the validation split (to
# choose --min-prob) and on the test split. Two pairs of splits:
#   bundled  examples/textile/val (48 images) and query (48 images);
#   large    450 validation and 900 test images from the same package, disjoint from the
#            bundled ones (examples/textile/large_split.py; pass its output folder as LARGE).
# Prints a Markdown table; the JSON of every step stays in $OUT. Needs a release build.
#   LARGE=target/textile-large examples/textile/calibration.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${TIPEDGE:-target/release/tipedge}
OUT=${OUT:-target/calibration-example}
MODEL=models/fixtures/efficientnet-lite0
DATA=examples/textile
SHOTS=${SHOTS:-4 16}
SEEDS=${SEEDS:-1 2 3}
TARGET=${TARGET:-0.9}
rm -rf "$OUT" && mkdir -p "$OUT"
export TIPEDGE_FEATURES="$OUT/features"
SPLITS="bundled:$DATA/val:$DATA/query"
if [ -n "${LARGE:-}" ]; then
    SPLITS="$SPLITS large:$LARGE/val:$LARGE/test"
fi
for s in $SPLITS; do
    IFS=: read -r name val test <<< "$s"
    for k in $SHOTS; do
        for seed in $SEEDS; do
            p="$OUT/$name-k$k-s$seed"
            echo "$name K=$k seed=$seed" >&2
            "$BIN" cache build -m $MODEL --shots $DATA/shots -k "$k" --seed "$seed" --keys int8 \
                --out "$p.pack" --json > "$p.build.json"
            "$BIN" tune -m $MODEL --pack "$p.pack" --val "$val" --out "$p.tuned.pack" --json > "$p.tune.json"
            "$BIN" eval -m $MODEL --pack "$p.tuned.pack" --test "$val" --json > "$p.eval-val.json"
            "$BIN" eval -m $MODEL --pack "$p.tuned.pack" --test "$test" --json > "$p.eval-test.json"
        done
    done
done
python3 - "$OUT" "$SPLITS" "$SHOTS" "$SEEDS" "$TARGET" <<'PY'
import json, statistics, sys
out, splits, shots, seeds, target = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4].split(), float(sys.argv[5])
def ms(v, f="{:.3f}"):
    return f.format(statistics.mean(v)) + (" ± " + f.format(statistics.stdev(v)) if len(v) > 1 else "")
print(f"| split (val / test images) | K | test top-1 | T | test NLL | test Brier | test ECE | --min-prob for ≥ {target:.0%} on val | test coverage | test accuracy of the accepted |")
print("|---|---|---|---|---|---|---|---|---|---|")
for s in splits:
    name = s.split(":")[0]
    for k in shots:
        row = {c: [] for c in ("top1", "t", "nll0", "nll1", "b0", "b1", "e0", "e1", "p", "cov", "acc")}
        n = None
        for seed in seeds:
            p = f"{out}/{name}-k{k}-s{seed}"
            tv = json.load(open(f"{p}.eval-val.json"))
            te = json.load(open(f"{p}.eval-test.json"))
            n = (tv["n_images"], te["n_images"])
            c = te["calibration"]
            row["top1"].append(te["top1"])
            row["t"].append(c["temperature"] or 1.0)
            row["nll0"].append(c["uncalibrated"]["nll"]); row["nll1"].append((c["calibrated"] or c["uncalibrated"])["nll"])
            row["b0"].append(c["uncalibrated"]["brier"]); row["b1"].append((c["calibrated"] or c["uncalibrated"])["brier"])
            row["e0"].append(c["uncalibrated"]["ece"]); row["e1"].append((c["calibrated"] or c["uncalibrated"])["ece"])
            # The smallest threshold whose accepted validation images are right often enough.
            ok = [q for q in tv["calibration"]["coverage"] if q["accepted"] > 0 and q["accuracy"] >= target]
            pick = ok[0]["min_prob"] if ok else None
            row["p"].append(pick)
            at = next((q for q in c["coverage"] if q["min_prob"] == pick), None)
            row["cov"].append(100 * at["coverage"] if at else 0.0)
            row["acc"].append(100 * at["accuracy"] if at and at["accepted"] else float("nan"))
        ps = ", ".join("none" if v is None else f"{v:g}" for v in row["p"])
        acc = [a for a in row["acc"] if a == a]
        print(f"| {name} ({n[0]} / {n[1]}) | {k} | {ms(row['top1'], '{:.1f}')} % | {', '.join(f'{t:.2e}' for t in row['t'])} "
              f"| {ms(row['nll0'])} → {ms(row['nll1'])} | {ms(row['b0'])} → {ms(row['b1'])} | {ms(row['e0'])} → {ms(row['e1'])} "
              f"| {ps} | {ms(row['cov'], '{:.1f}')} % | {ms(acc, '{:.1f}') + ' %' if acc else '—'} |")
PY
