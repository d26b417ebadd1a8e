#!/usr/bin/env bash
# cli_byom.sh - bring your own model and data, end to end, with a description
# none of the built-ins is (models/examples/strided_cnn.json: stride-2
# convs, a residual block, an average pool, names of its own):
#   1. fedloha-client train --model-file on Fashion-MNIST (IDX) and on the
#      same samples as a safetensors data folder: the same model, bit for bit
#   2. the export evaluates the same in PyTorch (tests/torch_model.py, within
#      0.1 point) and in fedloha-client eval --model-file --weights
#   3. fedloha-sim --model-file: dense, fedpara and lowrank federated
#   4. fedloha-server run --model-file with two fedloha-client run processes
#      that are not told the model (it comes in the Welcome); the export
#      evaluates the same in PyTorch
#      (one of them pinned to it with --model-file, so nothing is fetched or
#      trusted blindly)
#   5. refusals: a description that does not fit the data, an unknown op, a client whose data does not fit the coordinator's model and a
#      client pinned to another model (both final: exit 3, no retry loop)
# PyTorch parts are skipped (said so) without python3-torch.
set -u
. "$(dirname "$0")/cli_lib.sh"
daemon_setup cli_byom 15
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=${FL_BYOM_MODEL:-$HERE/../models/examples/strided_cnn.json}
PY=/usr/bin/python3
TORCH=0
"$PY" -c "import torch" 2>/dev/null && TORCH=1
[ $TORCH = 1 ] || echo "SKIP (part): python3-torch missing: no PyTorch cross-checks"

# acc FILE: the accuracy of the last "final test-acc" / "test-acc" line.
acc() { sed -n 's/.*test-acc \([0-9.]*\)%.*/\1/p' "$1" | tail -1; }
# torch_acc DIR LIMIT TRAIN_LIMIT: PyTorch's test accuracy (percent) of an export.
torch_acc() {
	PYTHONDONTWRITEBYTECODE=1 "$PY" "$HERE/torch_model.py" eval --model "$1/model.json" \
		--weights "$1/model.safetensors" --data "$DATA" --limit "$2" --train-limit "$3" |
		"$PY" -c 'import json,sys; print("%.2f" % (100 * json.load(sys.stdin)["accuracy"]))'
}
# close A B: |A - B| <= 0.1
close() { awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; exit !(d <= 0.1 && d >= -0.1) }'; }

N=1500 # training samples
NT=500 # test samples
TRAIN=(train --model-file "$MODEL" --epochs 1 --limit $N --test-limit $NT --lr 0.05 --seed 5)

# 1. IDX and the same samples as a safetensors folder.
expect 0 "$BIN/fedloha-client" "${TRAIN[@]}" --data-path "$DATA" --out "$TMP/idx"
cp "$TMP/out" "$TMP/idx.log"
A_IDX=$(acc "$TMP/idx.log")
[ -n "$A_IDX" ] || fail "train on IDX printed no accuracy"
PYTHONDONTWRITEBYTECODE=1 "$PY" "$HERE/idx_to_st.py" "$DATA" "$TMP/st" $N $NT u8 >/dev/null ||
	fail "idx_to_st.py"
expect 0 "$BIN/fedloha-client" "${TRAIN[@]}" --data safetensors --data-path "$TMP/st" \
	--out "$TMP/stout"
[ "$(acc "$TMP/out")" = "$A_IDX" ] || fail "safetensors folder: $(acc "$TMP/out")% != IDX $A_IDX%"
cmp -s "$TMP/idx/model.safetensors" "$TMP/stout/model.safetensors" ||
	fail "safetensors folder trains another model than the IDX files"

# 2. The export in fedloha-client eval and in PyTorch.
expect 0 "$BIN/fedloha-client" eval --in "$TMP/idx" --data-path "$DATA" --test-limit $NT
[ "$(acc "$TMP/out")" = "$A_IDX" ] || fail "eval --in: $(acc "$TMP/out")% != $A_IDX%"
expect 0 "$BIN/fedloha-client" eval --model-file "$MODEL" --weights "$TMP/idx/model.safetensors" \
	--data-path "$DATA" --test-limit $NT
[ -n "$(acc "$TMP/out")" ] || fail "eval --model-file --weights printed no accuracy"
if [ $TORCH = 1 ]; then
	T=$(torch_acc "$TMP/idx" $NT $N)
	close "$T" "$A_IDX" || fail "PyTorch evaluates the export at $T%, fedloha at $A_IDX%"
	echo "train: fedloha $A_IDX%, PyTorch $T%"
fi

# 3. Federated in the simulator.
expect 0 "$BIN/fedloha-sim" --model-file "$MODEL" --compare dense,fedpara,lowrank --rounds 2 \
	--clients 4 --fraction 1 --limit 1000 --test-limit 300 --data-path "$DATA" --out "$TMP/sim"
for p in dense fedpara lowrank; do
	[ "$(wc -l <"$TMP/sim/$p.csv")" -eq 3 ] || fail "sim $p: expected 2 rounds in $p.csv"
done
D_UP=$(sed -n '2p' "$TMP/sim/dense.csv" | cut -d, -f4)
F_UP=$(sed -n '2p' "$TMP/sim/fedpara.csv" | cut -d, -f4)
[ "$F_UP" -lt "$D_UP" ] || fail "sim: fedpara sends $F_UP bytes, not fewer than dense $D_UP"

# 4. Coordinator and two clients that are not told the model.
timeout 60 "$BIN/fedloha-server" run --listen 127.0.0.1:0 --model-file "$MODEL" --param fedpara \
	--gamma 0.3 --rounds 2 --min-clients 2 --epochs 1 --lr 0.05 --seed 3 --insecure \
	--out "$TMP/fed" >"$TMP/srv.out" 2>"$TMP/srv.err" &
SPID=$!
await_port srv $SPID
PIN=()
for i in 0 1; do
	timeout 60 "$BIN/fedloha-client" run --server 127.0.0.1:$PORT --insecure --data-path "$DATA" \
		--num-clients 2 --client-index $i --limit 1500 --seed 3 "${PIN[@]}" >"$TMP/c$i.out" \
		2>"$TMP/c$i.err" &
	PIN=(--model-file "$MODEL")
done
wait $SPID
RC=$?
exited srv 0 "" "federated run"
[ -f "$TMP/fed/model.json" ] || fail "the coordinator exported no model.json"
for i in 0 1; do contains "$TMP/c$i.out" "finished after 2 training rounds"; done
expect 0 "$BIN/fedloha-client" eval --in "$TMP/fed" --data-path "$DATA" --test-limit 1000
A_FED=$(acc "$TMP/out")
awk -v a="${A_FED:-0}" 'BEGIN { exit !(a > 12) }' || fail "the federated model did not learn: ${A_FED:-no}% (chance is 10%)"
if [ $TORCH = 1 ] && [ -n "$A_FED" ]; then
	# the coordinator saves no normalisation: fedloha eval used the full training set's
	T=$(torch_acc "$TMP/fed" 1000 60000)
	close "$T" "$A_FED" || fail "PyTorch evaluates the federated export at $T%, fedloha at $A_FED%"
	echo "federated: fedloha $A_FED%, PyTorch $T%"
fi

# 5. Refusals, each one line.
printf '%s' '{"format":"fedloha-model/1","input":{"shape":[3,32,32]},"classes":10,"modules":[
 {"op":"flatten"},{"op":"linear","name":"fc","in":3072,"out":10}]}' >"$TMP/cifar.json"
expect 1 "$BIN/fedloha-client" train --model-file "$TMP/cifar.json" --data-path "$DATA" --epochs 0
contains "$TMP/err" "(3,32,32)"
printf '%s' '{"format":"fedloha-model/1","input":{"shape":[1,28,28]},"classes":10,"modules":[
 {"op":"flatten"},{"op":"rmsnorm","name":"ln","dim":784},
 {"op":"linear","name":"fc","in":784,"out":10}]}' >"$TMP/ln.json"
expect 1 "$BIN/fedloha-client" train --model-file "$TMP/ln.json" --data-path "$DATA" --epochs 0
contains "$TMP/err" "unknown op \"rmsnorm\""
[ "$(wc -l <"$TMP/err")" -eq 1 ] || fail "refusal is not one line: $(cat "$TMP/err")"

timeout 30 "$BIN/fedloha-server" run --listen 127.0.0.1:0 --model-file "$TMP/cifar.json" \
	--param dense --rounds 1 --min-clients 1 --insecure >"$TMP/srv2.out" 2>"$TMP/srv2.err" &
SPID=$!
await_port srv2 $SPID
timeout 20 "$BIN/fedloha-client" run --server 127.0.0.1:$PORT --insecure --data-path "$DATA" \
	--limit 200 >"$TMP/c2.out" 2>"$TMP/c2.err"
RC=$?
exited c2 3 "(3,32,32)" "client whose data does not fit the model"
timeout 20 "$BIN/fedloha-client" run --server 127.0.0.1:$PORT --insecure --data-path "$DATA" \
	--limit 200 --model-file "$HERE/../models/2nn.json" >"$TMP/c3.out" 2>"$TMP/c3.err"
RC=$?
exited c3 3 "not the one this client trains" "client pinned to another model"
timeout 20 "$BIN/fedloha-client" run --server 127.0.0.1:$PORT --insecure --data-path "$DATA" \
	--limit 200 --model-file "$TMP/cifar.json" >"$TMP/c4.out" 2>"$TMP/c4.err"
RC=$?
exited c4 1 "(3,32,32)" "client pinned to a model its own data does not fit"
kill $SPID 2>/dev/null

[ $fails -eq 0 ] || exit 1
# the rest passed, but a part did not run: skipped, not passed
[ $TORCH = 1 ] || { echo "cli_byom: skipped (the PyTorch checks need python3-torch)"; exit 77; }
echo "cli_byom: ok"
