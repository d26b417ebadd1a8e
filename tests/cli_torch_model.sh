#!/bin/bash
# cli_torch_model.sh - the model description models/cnn.json,
# built in PyTorch by tests/torch_model.py (independently of fedloha's
# loader), loads a cnn trained by fedloha-client with
# load_state_dict(strict=True) and reaches the same test accuracy as
# `fedloha-client eval` (within 0.1 point), with the inputs normalised by the
# statistics of the same training samples. The 2nn and mlp descriptions
# load their models too, and so does the user-written
# models/examples/strided_cnn.json (trained with --model-file). Skips when
# python3-torch or the Fashion-MNIST package is not installed (exit 77).
set -u
FL_BIN=${FL_BIN:-build/bin}
FL_TMP=${FL_TMP:-/tmp}
PY=/usr/bin/python3
HERE=$(cd "$(dirname "$0")" && pwd)
MODELS=$HERE/../models
FASHION=/usr/share/datasets/fashion-mnist
TRAIN=1000
TEST=2000

if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
	echo "skipped: python3-torch not installed (deploy/install-deps.sh --with-torch)"
	exit 77
fi
if [ ! -s "$FASHION/t10k-images-idx3-ubyte.gz" ] && [ ! -s "$FASHION/t10k-images-idx3-ubyte" ]; then
	echo "skipped: $FASHION not installed (dataset-fashion-mnist)"
	exit 77
fi
T="$FL_TMP/cli_torch_model.$$"
rm -rf "$T"
mkdir -p "$T"
trap 'rm -rf "$T"' EXIT

fails=0
fail() {
	echo "FAIL: $*"
	fails=$((fails + 1))
}

for m in cnn 2nn mlp; do
	epochs=1
	[ "$m" = cnn ] || epochs=0
	if ! "$FL_BIN/fedloha-client" train --model "$m" --epochs "$epochs" --limit "$TRAIN" \
		--test-limit 100 --quiet --out "$T/$m" >"$T/$m.log" 2>&1; then
		fail "train $m: $(tail -c 300 "$T/$m.log")"
		continue
	fi
	if out=$("$PY" "$HERE/torch_model.py" check --model "$MODELS/$m.json" \
		--weights "$T/$m/model.safetensors" 2>&1); then
		echo "ok   $m: models/$m.json loads model.safetensors (strict): $out"
	else
		fail "torch_model.py check $m: $out"
	fi
done
# A user's description: models/examples/strided_cnn.json (docs/MODELS.md)
ex=$MODELS/examples/strided_cnn.json
if ! "$FL_BIN/fedloha-client" train --model-file "$ex" --epochs 0 --limit "$TRAIN" \
	--test-limit 100 --quiet --out "$T/strided" >"$T/strided.log" 2>&1; then
	fail "train strided_cnn: $(tail -c 300 "$T/strided.log")"
elif out=$("$PY" "$HERE/torch_model.py" check --model "$ex" \
	--weights "$T/strided/model.safetensors" 2>&1); then
	echo "ok   strided_cnn: models/examples/strided_cnn.json loads model.safetensors (strict): $out"
else
	fail "torch_model.py check strided_cnn: $out"
fi
[ -s "$T/cnn/model.safetensors" ] || {
	echo "$fails failed"
	exit 1
}

# fedloha's accuracy, in percent: "test-acc 64.83%  test-loss ..."
"$FL_BIN/fedloha-client" eval --in "$T/cnn" --test-limit "$TEST" >"$T/eval.log" 2>&1 ||
	fail "fedloha-client eval: $(tail -c 300 "$T/eval.log")"
fl=$(sed -n 's/.*test-acc \([0-9.]*\)%.*/\1/p' "$T/eval.log" | tail -1)
json=$("$PY" "$HERE/torch_model.py" eval --model "$MODELS/cnn.json" \
	--weights "$T/cnn/model.safetensors" --data "$FASHION" --train-limit "$TRAIN" \
	--limit "$TEST" 2>&1) || fail "torch_model.py eval: $json"
pt=$("$PY" -c 'import json, sys; print(100 * json.loads(sys.argv[1])["accuracy"])' "$json" 2>/dev/null)
if [ -z "$fl" ] || [ -z "$pt" ]; then
	fail "no accuracy to compare (fedloha '$fl', torch '$pt')"
elif "$PY" -c 'import sys; sys.exit(abs(float(sys.argv[1]) - float(sys.argv[2])) > 0.1)' "$fl" "$pt"; then
	echo "ok   cnn test accuracy on $TEST samples: fedloha $fl%, torch_model.py $pt%"
else
	fail "cnn test accuracy: fedloha $fl%, torch_model.py $pt% (more than 0.1 point apart)"
fi

if [ $fails -ne 0 ]; then
	echo "$fails failed"
	exit 1
fi
echo "all passed"
