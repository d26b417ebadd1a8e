#!/bin/bash
# cli_init.sh - --init FILE, initial weights from a PyTorch state dict: the
# 2nn trained one epoch on a few hundred Fashion-MNIST samples and saved;
# a new dense run and a loha run started from its model.safetensors with 0
# epochs score exactly as the saved model; a mismatching file (another
# architecture, a fedpara model) is refused with one line naming every
# problem; every executable's --help documents --init. Skipped (77)
# without Debian's Fashion-MNIST.
set -u
FL_BIN=${FL_BIN:-build/bin}
FL_TMP=${FL_TMP:-/tmp}
CLIENT="$FL_BIN/fedloha-client"
FASHION=/usr/share/datasets/fashion-mnist
TMP="$FL_TMP/cli_init.$$"
[ -x "$CLIENT" ] || { echo "FAIL: $CLIENT not built"; exit 1; }
[ -d "$FASHION" ] || { echo "skip: no $FASHION"; exit 77; }
rm -rf "$TMP"
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
. "$(dirname "$0")/cli_lib.sh"

DATA=(--data fashion-mnist --limit 300 --test-limit 500 --threads 1 --quiet)
acc() { sed -n 's/^final test-acc \([0-9.]*%  test-loss [0-9.]*\).*/\1/p' "$TMP/out"; }

expect 0 "$CLIENT" train --model 2nn "${DATA[@]}" --epochs 1 --out "$TMP/a"
A=$(acc)
INIT="$TMP/a/model.safetensors"
[ -n "$A" ] && [ -s "$INIT" ] || fail "the first run saved no model ($A)"

# dense from the file, another seed, 0 epochs: the saved model itself
expect 0 "$CLIENT" train --model 2nn "${DATA[@]}" --epochs 0 --seed 9 --init "$INIT" \
	--out "$TMP/b"
[ "$(acc)" = "$A" ] || fail "dense --init scores $(acc), the saved model $A"
cmp -s "$INIT" "$TMP/b/model.safetensors" || fail "dense --init: the weights differ"
# loha over the file as its frozen base: ΔW = 0 at init, the same model
expect 0 "$CLIENT" train --model 2nn --param loha --rank 4 "${DATA[@]}" --epochs 0 --seed 9 \
	--init "$INIT"
[ "$(acc)" = "$A" ] || fail "loha --init scores $(acc), the saved model $A"
[ ! -s "$TMP/err" ] || fail "loha --init warns: $(cat "$TMP/err")"

# another architecture: one line naming the missing, unexpected and
# mis-shaped keys, exit 1
expect 1 "$CLIENT" train --model cnn "${DATA[@]}" --epochs 0 --init "$INIT"
[ "$(wc -l <"$TMP/err")" -eq 1 ] || fail "cnn --init: not one line: $(cat "$TMP/err")"
contains "$TMP/err" "--init $INIT: missing keys: conv1.weight, conv1.bias"
contains "$TMP/err" "unexpected keys: fc3.bias, fc3.weight"
contains "$TMP/err" "shape mismatch: fc1.weight file [200, 784] model [512, 3136]"
# fedpara trains its targeted layers from scratch: no dense weight to load
expect 1 "$CLIENT" train --model 2nn --param fedpara "${DATA[@]}" --epochs 0 --init "$INIT"
contains "$TMP/err" "from-scratch layers have no dense weight: fc1.weight, fc2.weight"
expect 1 "$CLIENT" train --model 2nn "${DATA[@]}" --epochs 0 --init "$TMP/none.safetensors"

# every executable documents --init
for cmd in "$CLIENT train" "$CLIENT run" "$FL_BIN/fedloha-server run" "$FL_BIN/fedloha-sim"; do
	expect 0 $cmd --help
	contains "$TMP/out" "--init FILE"
done

if [ "$fails" -ne 0 ]; then
	echo "$fails failure(s)"
	exit 1
fi
echo "ok"
