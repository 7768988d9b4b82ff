#!/usr/bin/env bash
# The README's few-shot worked example: EfficientNet-Lite0 (ImageNet weights) on the textile
# example at K = 1, 2, 4, 8, 16 shots per class, three seeds each:
#   cache build (10 augmented passes, int8 keys) → tune (α/β on val) → finetune (Tip-Adapter-F,
#   20 epochs) → eval (query split, every method side by side).
# Prints a Markdown table of mean accuracies and per-stage wall times; the raw JSON of every
# step stays in $OUT. Needs a release build: cargo build --release.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${TIPEDGE:-target/release/tipedge}
OUT=${OUT:-target/worked-example}
MODEL=models/fixtures/efficientnet-lite0
DATA=examples/textile
SHOTS=${SHOTS:-1 2 4 8 16}
SEEDS=${SEEDS:-1 2 3}
THREADS=${THREADS:-1}
rm -rf "$OUT" && mkdir -p "$OUT"
export TIPEDGE_FEATURES="$OUT/features"
now() { date +%s.%N; }
step() { # name, json out, command...
    local name=$1 out=$2; shift 2
    local t0; t0=$(now)
    "$@" --threads "$THREADS" --json > "$out"
    echo "$name $t0 $(now)" >> "$OUT/times.txt"
}
for k in $SHOTS; do
    for seed in $SEEDS; do
        p="$OUT/k$k-s$seed"
        echo "K=$k seed=$seed" >&2
        echo "run k$k-s$seed" >> "$OUT/times.txt"
        step build "$p.build.json" "$BIN" cache build -m $MODEL --shots $DATA/shots -k "$k" --seed "$seed" \
            --keys int8 --out "$p.pack"
        step tune "$p.tune.json" "$BIN" tune -m $MODEL --pack "$p.pack" --val $DATA/val --out "$p.tuned.pack"
        step finetune "$p.finetune.json" "$BIN" finetune -m $MODEL --pack "$p.tuned.pack" --shots $DATA/shots \
            --val $DATA/val --out "$p.f.pack"
        step eval "$p.eval.json" "$BIN" eval -m $MODEL --pack "$p.tuned.pack" --finetuned "$p.f.pack" \
            --test $DATA/query
    done
done
python3 - "$OUT" "$SHOTS" "$SEEDS" <<'PY'
import json, statistics, sys
out, shots, seeds = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
times, run = {}, None
for line in open(f"{out}/times.txt"):
    a, *b = line.split()
    if a == "run":
        run = b[0]
    else:
        times.setdefault(a, []).append(float(b[1]) - float(b[0]))
def ms(v): return f"{statistics.mean(v):.1f}" + (f" ± {statistics.stdev(v):.1f}" if len(v) > 1 else "")
print("| K | cache-only | Tip-Adapter (tuned α/β) | Tip-Adapter-F | best epoch | build s | tune s | finetune s | eval s |")
print("|---|---|---|---|---|---|---|---|---|")
i = 0
for k in shots:
    acc = {m: [] for m in ("cache_only", "tip_adapter", "tip_adapter_f")}
    ep, t = [], {s: [] for s in ("build", "tune", "finetune", "eval")}
    for seed in seeds:
        e = json.load(open(f"{out}/k{k}-s{seed}.eval.json"))
        for m in acc:
            acc[m].append(e["methods"][m]["top1"])
        ep.append(json.load(open(f"{out}/k{k}-s{seed}.finetune.json"))["best_epoch"])
        for s in t:
            t[s].append(times[s][i])
        i += 1
    print(f"| {k} | " + " | ".join(ms(acc[m]) + " %" for m in acc) + f" | {', '.join(map(str, ep))} | "
          + " | ".join(f"{statistics.mean(t[s]):.1f}" for s in t) + " |")
PY
