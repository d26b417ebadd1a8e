#!/bin/bash
# cli_data.sh - safetensors data folders from the command line: the first
# 2000 training and 500 test samples of Debian's Fashion-MNIST converted by
# idx_to_st.py (through safetensors.torch.save_file when torch and the
# safetensors package are there, else with the standard library) and then
#   - U8 (N, 1, 28, 28): fedloha-client train must train bit for bit as on
#     the IDX files (same final line, same model.safetensors), and eval on
#     the folder gives the same accuracy;
#   - F32 (N, 1, 28, 28) = pixel / 255: within 2 points of the IDX run;
#   - F32 (N, 784): trains; fedloha-sim runs over it with a Dirichlet
#     partition and holdout;
#   - fedloha-server run accepts it for the model shape and --eval-data;
#   - a missing path or file is refused with one line.
# Skipped (77) without python3 or Fashion-MNIST.
set -u
FL_BIN=${FL_BIN:-build/bin}
FL_TMP=${FL_TMP:-/tmp}
CLIENT="$FL_BIN/fedloha-client"
TMP="$FL_TMP/cli_data.$$"
FASHION=/usr/share/datasets/fashion-mnist
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/cli_lib.sh"

[ -s "$FASHION/train-images-idx3-ubyte.gz" ] || { echo "skip: no $FASHION"; exit 77; }
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3) || { echo "skip: no python3"; exit 77; }
rm -rf "$TMP"
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
ok() { echo "ok   $*"; }

for kind in u8 f32 flat; do
	how=$(PYTHONDONTWRITEBYTECODE=1 "$PY" "$HERE/idx_to_st.py" "$FASHION" "$TMP/$kind" 2000 500 \
		"$kind") || { fail "idx_to_st.py $kind"; continue; }
	ok "converted $kind ($how)"
done

final() { grep '^final ' "$1"; }
TRAIN=(train --model 2nn --epochs 1 --limit 2000 --test-limit 500 --seed 3 --threads 1)

# ---- U8: bit for bit the IDX loader's training ----
expect 0 "$CLIENT" "${TRAIN[@]}" --out "$TMP/m-idx"
final "$TMP/out" | sed 's/train [0-9.]*s.*//' >"$TMP/idx.final"
expect 0 "$CLIENT" "${TRAIN[@]}" --data safetensors --data-path "$TMP/u8" --out "$TMP/m-u8"
final "$TMP/out" | sed 's/train [0-9.]*s.*//' >"$TMP/u8.final"
if [ -s "$TMP/idx.final" ] && cmp -s "$TMP/idx.final" "$TMP/u8.final" &&
	cmp -s "$TMP/m-idx/model.safetensors" "$TMP/m-u8/model.safetensors"; then
	ok "U8 safetensors trains bit for bit as IDX: $(cat "$TMP/u8.final")"
else
	fail "U8 safetensors differs from IDX: '$(cat "$TMP/idx.final")' vs '$(cat "$TMP/u8.final")'"
fi
expect 0 "$CLIENT" eval --in "$TMP/m-u8" --data safetensors --data-path "$TMP/u8" --threads 1
acc_eval=$(sed -n 's/.*acc[a-z-]* \([0-9.]*\)%.*/\1/p' "$TMP/out" | head -1)
acc_train=$(sed -n 's/.*test-acc \([0-9.]*\)%.*/\1/p' "$TMP/u8.final")
[ -n "$acc_eval" ] && [ "$acc_eval" = "$acc_train" ] ||
	fail "eval on the folder: '$acc_eval' vs train's '$acc_train': $(cat "$TMP/out")"

# ---- F32 image and flat ----
idx_acc=$(sed -n 's/.*test-acc \([0-9.]*\)%.*/\1/p' "$TMP/idx.final")
for kind in f32 flat; do
	expect 0 "$CLIENT" "${TRAIN[@]}" --data safetensors --data-path "$TMP/$kind"
	acc=$(final "$TMP/out" | sed -n 's/.*test-acc \([0-9.]*\)%.*/\1/p')
	if [ -n "$acc" ] && awk -v a="$acc" -v b="$idx_acc" 'BEGIN { d = a - b; exit !(d < 2 && d > -2) }'; then
		ok "F32 $kind: $acc% (IDX $idx_acc%)"
	else
		fail "F32 $kind: '$acc' vs IDX '$idx_acc'"
	fi
done

# ---- fedloha-sim: partition and holdout over float data ----
expect 0 "$FL_BIN/fedloha-sim" --data safetensors --data-path "$TMP/flat" --clients 4 \
	--partition dirichlet:0.5 --holdout 0.2 --fed-eval --fraction 1 --rounds 1 --epochs 1 \
	--param dense --limit 800 --test-limit 200 --threads 2 --quiet --out "$TMP/sim"
[ -s "$TMP/sim/dense.csv" ] && ok "fedloha-sim over F32 (N, 784)" || fail "fedloha-sim: no dense.csv"

# ---- fedloha-server: model shape and central evaluation from the folder ----
"$FL_BIN/fedloha-server" run --insecure --listen 127.0.0.1:0 --data safetensors \
	--eval-data safetensors --data-path "$TMP/f32" --eval-limit 100 --rounds 1 \
	>"$TMP/srv.out" 2>"$TMP/srv.err" &
SRV=$!
await_port srv "$SRV"
kill "$SRV" 2>/dev/null
wait "$SRV" 2>/dev/null
[ -n "${PORT:-}" ] && ok "fedloha-server run --data safetensors --eval-data safetensors"

# ---- refusals ----
expect 1 "$CLIENT" "${TRAIN[@]}" --data safetensors
contains "$TMP/err" "needs a path"
mkdir -p "$TMP/empty"
expect 1 "$CLIENT" "${TRAIN[@]}" --data safetensors --data-path "$TMP/empty"
contains "$TMP/err" "train.safetensors"
expect 1 "$FL_BIN/fedloha-server" run --insecure --data safetensors --data-path "$TMP/empty"
contains "$TMP/err" "train.safetensors"

if [ $fails -ne 0 ]; then
	echo "$fails failed"
	exit 1
fi
echo "all passed"
