#!/bin/bash
# cli_torch.sh - PyTorch interoperability: models trained by fedloha-client
# on Fashion-MNIST load into the reference PyTorch modules with
# load_state_dict(strict=True) and make the same predictions
# (tests/torch_check.py); the fedpara folder's base + adapter, merged in
# torch with the PEFT LoHa formulas, equals model.safetensors. Skips when
# python3-torch or the Fashion-MNIST package is not installed (exit 77).
set -u
FL_BIN=${FL_BIN:-build/bin}
FL_TMP=${FL_TMP:-/tmp}
PY=/usr/bin/python3
HERE=$(cd "$(dirname "$0")" && pwd)
FASHION=/usr/share/datasets/fashion-mnist

if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
	echo "skipped: python3-torch not installed (deploy/install-deps.sh --with-torch)"
	exit 77
fi
if [ ! -s "$FASHION/t10k-images-idx3-ubyte.gz" ]; then
	echo "skipped: $FASHION not installed (dataset-fashion-mnist)"
	exit 77
fi
T="$FL_TMP/cli_torch.$$"
rm -rf "$T"
mkdir -p "$T"
trap 'rm -rf "$T"' EXIT

fails=0
folders=()
train() { # train NAME TRAIN-ARGS...
	local name=$1
	shift
	if "$FL_BIN/fedloha-client" train "$@" --limit 2000 --test-limit 1000 --epochs 1 --quiet \
		--out "$T/$name" >"$T/$name.log" 2>&1; then
		echo "== $name: $(grep final "$T/$name.log")"
		folders+=("$T/$name")
	else
		echo "FAIL: train $name: $(tail -c 300 "$T/$name.log")"
		fails=$((fails + 1))
	fi
}

train 2nn-dense --model 2nn --param dense
train cnn-fedpara --model cnn --param fedpara
# one python process for both folders (importing torch takes seconds)
if [ ${#folders[@]} -gt 0 ] && ! "$PY" "$HERE/torch_check.py" "${folders[@]}"; then
	echo "FAIL: torch_check"
	fails=$((fails + 1))
fi

if [ $fails -ne 0 ]; then
	echo "$fails failed"
	exit 1
fi
echo "all passed"
