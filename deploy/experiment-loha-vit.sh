#!/usr/bin/env bash
# experiment-loha-vit.sh - federated LoHa fine-tuning of a pretrained vision
# transformer, end to end (docs/EXPERIMENTS_LOHA.md, second part):
#   1. fedloha-client train pretrains models/vit-tiny.json on Fashion-MNIST
#      classes 0-4 (Adam lr 1e-3, 3 epochs; skipped when OUT/pre holds a
#      model already) and evaluates it on all ten classes
#   2. fedloha-sim fine-tunes it on all ten classes, Dirichlet 0.5 over 20
#      clients: full fine-tuning (dense) and LoHa r 8 alpha 8 on
#      q_proj,v_proj + head (modules_to_save) on identical partitions
#      (--compare), then LoHa on all-linear + head and the head alone
#      (an empty target list) with the same seed
#   3. each final LoHa adapter is merged into its base with fedloha-adapter
#      and the merged weights are evaluated in fedloha-client eval and in
#      PyTorch (tests/torch_model.py, when python3-torch is installed)
#   4. prints the summary table: bytes per round, MB and rounds to the
#      target, final accuracy, savings vs full fine-tuning
# Usage: deploy/experiment-loha-vit.sh [OUT]   (default /tmp/fedloha-loha-vit)
# Environment: FL_BIN (default build/bin), FL_DATA (default Debian's
# Fashion-MNIST), ROUNDS (30), TARGET (75), LIMIT (20000), TEST_LIMIT (2000).
# About 22 minutes on a loaded 2-core machine (26 with the pretraining).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BIN=${FL_BIN:-$ROOT/build/bin}
DATA=${FL_DATA:-/usr/share/datasets/fashion-mnist}
OUT=${1:-/tmp/fedloha-loha-vit}
MODEL=$ROOT/models/vit-tiny.json
ROUNDS=${ROUNDS:-30}
TARGET=${TARGET:-75}
LIMIT=${LIMIT:-20000}
TEST_LIMIT=${TEST_LIMIT:-2000}
PY=/usr/bin/python3
mkdir -p "$OUT"
run() {
	echo "+ $*" | sed "s|$BIN/||; s|$ROOT/||g" >&2
	"$@"
}

# 1. Pretraining on classes 0-4.
PRE=$OUT/pre
if [ -f "$PRE/model.safetensors" ]; then
	echo "== pretrained model: $PRE (kept; remove it to pretrain again)"
else
	echo "== 1. pretraining on classes 0-4"
	run "$BIN/fedloha-client" train --model-file "$MODEL" --classes 0-4 --optim adam --lr 1e-3 \
		--epochs 3 --data-path "$DATA" --out "$PRE" | grep -E '^(epoch|final)'
fi
echo "== pretrained model on the test set"
for sel in "--test-limit $TEST_LIMIT" "--classes 0-4" "--classes 5-9"; do
	# shellcheck disable=SC2086
	printf '%-22s %s\n' "$sel" "$("$BIN/fedloha-client" eval --in "$PRE" --data-path "$DATA" $sel | tail -1)"
done

# 2. Federated fine-tuning on all ten classes.
FED=(--model-file "$MODEL" --init "$PRE/model.safetensors" --clients 20
	--partition dirichlet:0.5 --fraction 0.25 --rounds "$ROUNDS" --epochs 1 --batch 32
	--lr 0.05 --momentum 0.9 --limit "$LIMIT" --test-limit "$TEST_LIMIT" --data-path "$DATA"
	--target "$TARGET" --seed 1 --save-model --quiet)
echo "== 2a. full fine-tuning vs LoHa r 8 on q_proj,v_proj + head"
run "$BIN/fedloha-sim" "${FED[@]}" --compare dense,loha --rank 8 --target-modules q_proj,v_proj \
	--modules-to-save head --out "$OUT/qv" >"$OUT/qv.log"
cat "$OUT/qv/table.txt"
echo "== 2b. LoHa r 8 on all-linear + head (same seed: same partition and clients)"
run "$BIN/fedloha-sim" "${FED[@]}" --param loha --rank 8 --target-modules all-linear \
	--modules-to-save head --out "$OUT/all" >"$OUT/all.log"
cat "$OUT/all/table.txt"
echo "== 2c. baseline: the head alone (an empty target list; same seed)"
run "$BIN/fedloha-sim" "${FED[@]}" --param loha --rank 8 --target-modules '' \
	--modules-to-save head --out "$OUT/head" >"$OUT/head.log"
cat "$OUT/head/table.txt"

# 3. Merge each final adapter and evaluate the merged weights twice.
echo "== 3. merged adapters: fedloha-client eval and PyTorch on the first $TEST_LIMIT test images"
TORCH=0
"$PY" -c "import torch" 2>/dev/null && TORCH=1
[ $TORCH = 1 ] || echo "(python3-torch missing: no PyTorch evaluation)"
for run_dir in "$OUT/qv/loha-model" "$OUT/all/loha-model"; do
	merged=$(dirname "$run_dir")/merged.safetensors
	"$BIN/fedloha-adapter" merge --base "$run_dir/base_model.safetensors" --adapter "$run_dir" \
		--out "$merged"
	fl=$("$BIN/fedloha-client" eval --model-file "$MODEL" --weights "$merged" --data-path "$DATA" \
		--test-limit "$TEST_LIMIT" | tail -1)
	pt="-"
	if [ $TORCH = 1 ]; then
		pt=$(PYTHONDONTWRITEBYTECODE=1 "$PY" "$ROOT/tests/torch_model.py" eval --model "$MODEL" \
			--weights "$merged" --data "$DATA" --limit "$TEST_LIMIT" --train-limit 60000 |
			"$PY" -c 'import json,sys; d=json.load(sys.stdin); print("test-acc %.2f%%  test-loss %.4f" % (100*d["accuracy"], d["loss"]))')
	fi
	echo "$(basename "$(dirname "$run_dir")") fedloha: $fl"
	echo "$(basename "$(dirname "$run_dir")") PyTorch: $pt"
done

# 4. The summary table from the per-round CSVs.
echo "== 4. summary (target $TARGET%, MB = 10^6 frame bytes up + down)"
"$PY" - "$TARGET" "$OUT/qv/dense" "$OUT/qv/loha" "$OUT/all/loha" "$OUT/head/loha" <<'EOF'
import csv, json, sys
target = float(sys.argv[1]) / 100
rows = []
for base in sys.argv[2:]:
    with open(base + ".csv") as f:
        r = list(csv.DictReader(f))
    with open(base + ".json") as f:
        j = json.load(f)
    name = {"dense": "dense (full FT)"}.get(j["label"], "loha " + j["config"].get("target_modules", ""))
    if j["transmitted_floats"] == 650:
        name = "head only"
    mb = [float(x["cum_mb"]) for x in r]
    hit = next((i for i, x in enumerate(r) if float(x["accuracy"]) >= target), None)
    rows.append((name, j["transmitted_floats"], mb[-1] / len(mb), hit, None if hit is None else mb[hit],
                 float(r[-1]["accuracy"]), max(float(x["accuracy"]) for x in r)))
d = rows[0]
print("%-26s %12s %9s %7s %12s %7s %7s %10s %10s" % ("configuration", "sent floats", "MB/round",
      "rounds", "MB to target", "final", "best", "MB/round x", "to target x"))
for n, fl, per, hit, mbt, fin, best in rows:
    print("%-26s %12d %9.3f %7s %12s %6.2f%% %6.2f%% %10s %10s" % (
        n, fl, per, "-" if hit is None else hit + 1, "not reached" if mbt is None else "%.2f" % mbt,
        100 * fin, 100 * best, "%.1f" % (d[2] / per),
        "%.1f" % (d[4] / mbt) if mbt and d[4] else "-"))
EOF
