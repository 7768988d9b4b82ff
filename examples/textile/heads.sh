#!/usr/bin/env bash
# Recipe × head × shots on the large textile split: EfficientNet-Lite0, int8 keys, the bundled
# shots drawn K = 1, 2, 4, 8, 16 per class with seeds 1, 2, 3; every choice (α/β, the GDA α,
# and for "auto" the recipe and the head) made on the split's 450 validation images, top-1 on
# its 900 test images.
#
# For each recipe one pack is built with --head both: `tipedge eval` scores it three ways on
# the same keys — tip_adapter (the cache at its own tuned α/β), gda (the GDA layer alone) and
# tip_adapter+gda — so each recipe's keys are encoded once. Then the default, --recipe auto
# --head auto (--select one-se), is built and scored, and the same with --select best. Where GDA cannot be fitted (one unaugmented view per class
# has no covariance: plain keys at K = 1) the recipe is built with --head tip, and the GDA
# columns show "—".
#
# Needs a release build and the large split (examples/textile/large_split.py; pass its folder
# as LARGE). Prints Markdown tables; every step's JSON stays in $OUT.
#   LARGE=target/textile-large examples/textile/heads.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${TIPEDGE:-target/release/tipedge}
OUT=${OUT:-target/heads-example}
MODEL=models/fixtures/efficientnet-lite0
DATA=examples/textile
SHOTS=${SHOTS:-1 2 4 8 16}
SEEDS=${SEEDS:-1 2 3}
RECIPES=${RECIPES:-plain flip crop-0.8 official}
: "${LARGE:?set LARGE to the folder examples/textile/large_split.py wrote}"
rm -rf "$OUT" && mkdir -p "$OUT"
export TIPEDGE_FEATURES="$OUT/features"
for k in $SHOTS; do
    for seed in $SEEDS; do
        for cand in $RECIPES auto best; do
            case $cand in
                auto) recipe=auto head=auto select=one-se ;;
                best) recipe=auto head=auto select=best ;;
                *) recipe=$cand head=both select=one-se ;;
            esac
            p="$OUT/$cand-k$k-s$seed"
            echo "$cand: recipe $recipe, head $head, select $select, K=$k seed=$seed" >&2
            build() {
                "$BIN" cache build -m $MODEL --shots $DATA/shots -k "$k" --seed "$seed" \
                    --keys int8 --recipe "$recipe" --head "$1" --select "$select" \
                    --val "$LARGE/val" --out "$p.pack" --json > "$p.build.json" 2> "$p.build.err"
            }
            if ! build "$head"; then
                echo "  head $head not fitted: $(cat "$p.build.json" "$p.build.err" | tail -c 300); head tip instead" >&2
                build tip
            fi
            "$BIN" eval -m $MODEL --pack "$p.pack" --test "$LARGE/test" --json > "$p.eval.json"
        done
    done
done
python3 - "$OUT" "$SHOTS" "$SEEDS" "$RECIPES" <<'PY'
import json, os, statistics, sys
out, shots, seeds, recipes = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4].split()

def load(name):
    p = f"{out}/{name}"
    return json.load(open(p)) if os.path.exists(p) else None

def method(ev, name):
    if ev is None:
        return None
    m = ev["methods"].get(name)
    return m["top1"] if m else None

def ms(v):
    v = [x for x in v if x is not None]
    if not v:
        return "—"
    return f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1 else f"{v[0]:.1f}"

heads = [("tip", "tip_adapter"), ("gda", "gda"), ("both", "tip_adapter+gda")]
print("| recipe | head | " + " | ".join(f"K = {k}" for k in shots) + " |")
print("|---|---|" + "---|" * len(shots))
for r in recipes:
    for h, col in heads:
        cells = []
        for k in shots:
            v = [method(load(f"{r}-k{k}-s{s}.eval.json"), col) for s in seeds]
            missing = sum(x is None for x in v)
            cells.append(ms(v) + (f" ({missing} not fitted)" if 0 < missing < len(v) else ""))
        print(f"| {r} | {h} | " + " | ".join(cells) + " |")
chose = {}
for name, label in (("auto", "**auto** (one-se, the default)"), ("best", "auto, `--select best`")):
    cells, chose[name] = [], []
    for k in shots:
        v = []
        for s in seeds:
            ev = load(f"{name}-k{k}-s{s}.eval.json")
            v.append(ev["top1"] if ev else None)
            b = load(f"{name}-k{k}-s{s}.build.json")
            chose[name].append(f"K={k} s{s}: {b['recipe']}/{b['head']}" if b else f"K={k} s{s}: —")
        cells.append(ms(v))
    print(f"| {label} | auto | " + " | ".join(cells) + " |")

# The issue's check: the default against plain keys with α/β tuned on val (plain, tip), per run.
print()
runs = len(shots) * len(seeds)
for name in ("auto", "best"):
    worse = []
    for k in shots:
        for s in seeds:
            a = load(f"{name}-k{k}-s{s}.eval.json")
            p = method(load(f"plain-k{k}-s{s}.eval.json"), "tip_adapter")
            if a is None or p is None:
                continue
            d = a["top1"] - p
            if d < 0:
                worse.append(f"K={k} seed {s}: {d:+.1f}")
    print(f"{name} below plain keys + tip in {len(worse)} of {runs} runs" + (": " + ", ".join(worse) if worse else ""))
for name in ("auto", "best"):
    print(f"{name} chose: " + "; ".join(chose[name]))
ev = load(f"auto-k{shots[0]}-s{seeds[0]}.eval.json")
if ev:
    print(f"\n{ev['n_images']} test images: one image is {100 / ev['n_images']:.2f} points.")
PY
