#!/usr/bin/env bash
# Regenerate everything in models/fixtures/ (and examples/textile/) from scratch.
# Needs the Python environment of models/requirements.txt; no network access.
#   python -m venv .venv && .venv/bin/pip install -r models/requirements.txt
#   PYTHON=.venv/bin/python models/make_fixtures.sh
# Deterministic: fixed seeds everywhere (torch seed 0 for clip-tiny, numpy seeds for the images and
# the textile subset, the training references). models/vocab/ is not touched.
set -euo pipefail
PY="${PYTHON:-python}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FX="$HERE/fixtures"

mkdir -p "$FX"
rm -rf "$FX/clip-tiny" "$FX/efficientnet-lite0" "$FX/images" "$FX/reference" "$FX/train" \
    "$FX/clip-tiny-int8" "$FX/clip-tiny-int8-dynamic" "$FX/clip-tiny-int8-integer" "$FX/quant"

echo "== clip-tiny (OpenCLIP ViT + text transformer, random weights, seed 0)"
"$PY" "$HERE/export_clip.py" --arch tiny --pretrained none --seed 0 --fixture --out "$FX/clip-tiny"
echo "== efficientnet-lite0 (real ImageNet weights, compact fp16 storage)"
"$PY" "$HERE/export_efficientnet.py" --fixture --out "$FX/efficientnet-lite0"
echo "== fixture images"
"$PY" "$HERE/make_images.py" --out "$FX/images"
echo "== examples/textile"
"$PY" "$HERE/make_example.py"
echo "== reference outputs"
"$PY" "$HERE/make_references.py"
echo "== training / augmentation references (crops, alpha/beta search, cache keys, Tip-Adapter-F steps)"
"$PY" "$HERE/make_train_refs.py"
echo "== int8 fixtures (calibration set first) and their onnxruntime outputs"
"$PY" "$HERE/../calibration/assemble.py"
"$PY" "$HERE/make_quant_refs.py"
"$PY" "$HERE/make_pointwise_fixture.py"
echo "== tokenizer parity set (open_clip ids)"
"$PY" "$HERE/make_token_refs.py"
echo "== CoOp: W parity (every position, generic and CSC, an imported official checkpoint) and trainer steps"
"$PY" "$HERE/make_coop_refs.py"
"$PY" "$HERE/make_coop_train_refs.py"
echo "== sizes"
du -sh "$FX" "$HERE/../examples"
