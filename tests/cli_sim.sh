#!/bin/bash
# cli_sim.sh - the real fedloha-sim binary: help, usage errors (exit 2, one
# clear line then "try --help"), a missing data folder (exit 1), and a tiny
# comparison on the mnist-tiny fixture: exit 0, the table on stdout, the
# progress lines on stderr, the CSV / JSON / table / plot script written;
# the secure channel by default (its byte totals printed once and in the
# JSON) and --insecure giving the same results and frame bytes; --init
# (dense and loha start from a saved model) and --modules-to-save; a
# local-only baseline next to FedAvg (federated evaluation for both, the
# CSV / JSON columns), the --server-* settings recorded in the JSON and
# refused where the strategy would ignore them.
set -u
command -v python3 >/dev/null || { echo "FAIL: python3 not found (deploy/install-deps.sh installs it)"; exit 1; }
BIN=${FL_BIN:?FL_BIN not set}/fedloha-sim
DATA=${FL_TEST_DATA:?FL_TEST_DATA not set}/dataset/mnist-tiny
TMP=${FL_TMP:-/tmp}/cli-sim.$$
rm -rf "$TMP" && mkdir -p "$TMP"
. "$(dirname "$0")/cli_lib.sh"

# ---- help and usage errors ----
expect 0 "$BIN" --help
contains "$TMP/out" "usage: fedloha-sim"
contains "$TMP/out" "--compare"
contains "$TMP/out" "target accuracy fixed in advance"
contains "$TMP/out" "--insecure"

for args in "--rounds 0" "--rounds x" "--model resnet" "--param dens" "--partition zipf" \
	"--dtype f64" "--strategy sgd" "--fraction 2" "--dropout 1" "--bogus" "--compare dense,dense" \
	"--compare fedpara:f8" "--param dense --compare fedpara" "--target 120" "extra" \
	"--server-lr 0.5" "--strategy fedavgm --server-tau 0.1" "--strategy fedadam --server-tau 0" \
	"--compare local:int8" "--compare local-pfedpara" "--compare local-loha" "--compare locals"; do
	# shellcheck disable=SC2086
	expect 2 "$BIN" $args
	n=$(wc -l <"$TMP/err")
	[ "$n" -eq 2 ] || fail "$args: stderr has $n lines: $(cat "$TMP/err")"
	head -1 "$TMP/err" | grep -q '^fedloha-sim: ' || fail "$args: no prefix: $(cat "$TMP/err")"
	contains "$TMP/err" "try --help"
done
expect 2 "$BIN" --rounds
contains "$TMP/err" "--rounds needs a value"

# ---- a missing data folder ----
expect 1 "$BIN" --data mnist --data-path "$TMP/nowhere" --out "$TMP/r0" --quiet
[ "$(wc -l <"$TMP/err")" -eq 1 ] || fail "missing data: $(cat "$TMP/err")"

# ---- a tiny comparison (20 samples, 2 clients) ----
OUT="$TMP/res"
expect 0 "$BIN" --data mnist --data-path "$DATA" --clients 2 --partition iid --fraction 1 \
	--rounds 2 --epochs 1 --batch 4 --compare dense,fedpara,lowrank:int8 --threads 2 \
	--target 50 --out "$OUT"
contains "$TMP/out" "target accuracy 50.0%"
contains "$TMP/out" "dense"
contains "$TMP/out" "lowrank-int8"
contains "$TMP/out" "results: $OUT/"
contains "$TMP/err" "[2/3 fedpara] round 2/2"
for f in dense.csv fedpara.json lowrank-int8.csv table.txt accuracy_vs_mb.gp; do
	[ -s "$OUT/$f" ] || fail "missing $OUT/$f"
done
[ "$(wc -l <"$OUT/dense.csv")" -eq 3 ] || fail "dense.csv: $(cat "$OUT/dense.csv")"
head -1 "$OUT/dense.csv" | grep -q '^round,accuracy,loss,bytes_up,bytes_down,cum_mb,seconds' ||
	fail "csv header: $(head -1 "$OUT/dense.csv")"
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['label']=='fedpara' and len(d['rounds'])==2" \
	"$OUT/fedpara.json" || fail "fedpara.json"
if command -v gnuplot >/dev/null; then
	[ -s "$OUT/accuracy_vs_mb.png" ] || fail "no plot"
	contains "$TMP/out" "plot: $OUT/accuracy_vs_mb.png"
fi

# the secure channel by default: totals once at the end, in the JSON too
contains "$TMP/out" "secure channel"
contains "$TMP/out" "channel bytes (socket equivalent"
[ "$(grep -c 'channel bytes' "$TMP/out")" -eq 1 ] || fail "channel totals printed more than once"
python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
assert d['secure'] is True and d['config']['secure'] is True, 'not secure'
assert d['channel_bytes_up'] > d['bytes_up'] and d['channel_bytes_down'] > d['bytes_down'], 'bytes'
assert d['handshakes'] == d['connections'] == 2 and d['channel_errors'] == 0, 'handshakes'
" "$OUT/fedpara.json" || fail "fedpara.json: secure channel totals"

# clients whose training diverges: counted in the table, not hidden (exit 0:
# the rounds still ran with the others)
expect 0 "$BIN" --data mnist --data-path "$DATA" --clients 4 --partition iid --fraction 1 \
	--rounds 1 --epochs 1 --batch 2 --param lowrank --lr 2 --min-report 1 --threads 2 \
	--target 50 --quiet --out "$TMP/res-div"
grep -qE "^configuration +channel MB +frame MB +overhead +handshakes +channel +client$" "$TMP/out" ||
	fail "no client error column: $(cat "$TMP/out")"
grep -qE "^lowrank +[0-9.]+ +[0-9.]+ +[0-9.]+% +4 +0 +3$" "$TMP/out" ||
	fail "client errors not counted in the table: $(grep '^lowrank' "$TMP/out")"
contains "$TMP/out" "lowrank: 3 client errors, last: client-"
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['client_errors'] == 3" \
	"$TMP/res-div/lowrank.json" || fail "lowrank.json: client_errors"

# --insecure: no channel, the same model results and frame bytes
expect 0 "$BIN" --data mnist --data-path "$DATA" --clients 2 --partition iid --fraction 1 \
	--rounds 2 --epochs 1 --batch 4 --param fedpara --threads 2 --target 50 --insecure \
	--quiet --out "$TMP/res-insecure"
contains "$TMP/out" "--insecure (no channel)"
python3 -c "
import json, sys
s = json.load(open(sys.argv[1])); p = json.load(open(sys.argv[2]))
assert p['secure'] is False and p['handshakes'] == 0, 'insecure flags'
for k in ('bytes_up', 'bytes_down', 'frames_up', 'frames_down', 'final_accuracy'):
    assert s[k] == p[k], k
assert [r['accuracy'] for r in s['rounds']] == [r['accuracy'] for r in p['rounds']], 'rows'
assert p['channel_bytes_down'] == p['bytes_down'], 'insecure channel bytes'
" "$OUT/fedpara.json" "$TMP/res-insecure/fedpara.json" || fail "--insecure differs from secure"

# int8 sends about a quarter of f32's tensor bytes
up_f32=$(python3 -c "import json; print(json.load(open('$OUT/fedpara.json'))['bytes_up'])")
up_i8=$(python3 -c "import json; print(json.load(open('$OUT/lowrank-int8.json'))['bytes_up'])")
[ "$up_i8" -lt "$up_f32" ] || fail "int8 upload $up_i8 not below f32 $up_f32"

# --quiet: no progress
expect 0 "$BIN" --data mnist --data-path "$DATA" --clients 2 --rounds 1 --param dense --quiet \
	--out "$TMP/res2"
[ ! -s "$TMP/err" ] || fail "--quiet printed: $(cat "$TMP/err")"

# ---- local-only baseline next to FedAvg: federated evaluation for both ----
expect 0 "$BIN" --data mnist --data-path "$DATA" --clients 2 --partition iid --fraction 1 \
	--rounds 2 --epochs 1 --batch 4 --compare dense,local --threads 2 --quiet --out "$TMP/res-local"
contains "$TMP/out" "accuracy: the clients' mean accuracy on their own held-out samples"
head -1 "$TMP/res-local/local.csv" | grep -q ',central_accuracy,central_loss,fed_accuracy,fed_loss,post_train_accuracy,post_train_loss$' ||
	fail "csv header: $(head -1 "$TMP/res-local/local.csv")"
python3 -c "
import json, sys
l = json.load(open(sys.argv[1])); d = json.load(open(sys.argv[2]))
assert l['config']['local_only'] is True and l['bytes_up'] == 0 and l['bytes_down'] == 0, 'local bytes'
assert l['accuracy_kind'] == d['accuracy_kind'] == \"clients' held-out samples\", 'kind'
for r in l['rounds']:
    assert r['central_accuracy'] is None and r['fed_accuracy'] == r['accuracy'] and r['cum_mb'] == 0
for r in d['rounds']:
    assert r['central_accuracy'] is not None and r['fed_accuracy'] == r['accuracy']
" "$TMP/res-local/local.json" "$TMP/res-local/dense.json" || fail "local / fed-eval JSON"
expect 0 "$BIN" --data mnist --data-path "$DATA" --clients 2 --rounds 1 --param fedpara \
	--strategy fedadam --server-lr 0.05 --server-beta2 0.9 --quiet --out "$TMP/res-adam"
python3 -c "
import json, sys
c = json.load(open(sys.argv[1]))['config']
assert c['strategy'] == 'fedadam' and abs(c['server_lr'] - 0.05) < 1e-7 and abs(c['server_beta2'] - 0.9) < 1e-7
" "$TMP/res-adam/fedpara.json" || fail "server optimiser settings not in the JSON"

# ---- a diverging configuration fails alone; the others are still reported ----
expect 1 "$BIN" --data mnist --data-path "$DATA" --clients 2 --fraction 1 --rounds 2 --batch 4 \
	--compare dense,lowrank --lr 100 --quiet --out "$TMP/res-div"
contains "$TMP/out" "failed (its CSV holds the rounds it completed):"
contains "$TMP/out" "; last client error: client-"
for f in dense.csv lowrank.csv; do
	head -1 "$TMP/res-div/$f" | grep -q '^round,accuracy,' || fail "res-div/$f: no CSV header"
done

# ---- --target-modules: only fc1 factorised, the rest sent dense ----
expect 0 "$BIN" --data mnist --data-path "$DATA" --clients 2 --rounds 1 --compare fedpara,local-fedpara \
	--target-modules fc1 --quiet --out "$TMP/res-tm"
python3 -c "
import json, sys
a = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2]))
assert a['config']['target_modules'] == 'fc1', a['config']
# fc2 (200x200+200) and fc3 (200x10+10) dense; fc1 factorised; all 2nn params 199210
assert 40200 + 2010 < a['transmitted_floats'] < 199210 - 40000, a['transmitted_floats']
assert a['transmitted_floats'] > b['transmitted_floats'] == 0
" "$TMP/res-tm/fedpara.json" "$TMP/res-tm/local-fedpara.json" || fail "--target-modules fc1"
expect 1 "$BIN" --data mnist --data-path "$DATA" --clients 2 --rounds 1 --param fedpara \
	--target-modules fc9 --quiet --out "$TMP/res-tm2"
contains "$TMP/err" "has no layer 'fc9'"
expect 1 "$BIN" --data mnist --data-path "$DATA" --clients 2 --rounds 1 --compare local-lowrank \
	--target-modules fc9 --quiet --out "$TMP/res-tm2"
contains "$TMP/err" "has no layer 'fc9'"

# ---- --init: the initial global model from a saved model.safetensors ----
# run A saves its final dense model; with lr 0 a run started from that file
# must evaluate exactly like it (dense, and loha whose delta is 0 at init
# with the head as a module to save), and save it back unchanged.
A="$TMP/init-a"
expect 0 "$BIN" --data mnist --data-path "$DATA" --clients 2 --partition iid --fraction 1 \
	--rounds 1 --epochs 1 --batch 4 --param dense --threads 2 --quiet --save-model --out "$A"
INIT="$A/dense-model/model.safetensors"
[ -s "$INIT" ] || fail "--save-model wrote no $INIT"
B="$TMP/init-b"
expect 0 "$BIN" --data mnist --data-path "$DATA" --clients 2 --partition iid --fraction 1 \
	--rounds 1 --epochs 1 --batch 4 --compare dense,loha --init "$INIT" --modules-to-save fc3 \
	--lr 0 --threads 2 --quiet --save-model --out "$B"
contains "$TMP/out" "initial model $INIT"
py - "$A/dense.json" "$B/dense.json" "$B/loha.json" "$INIT" \
	"$B/dense-model/model.safetensors" "$B/loha-model" <<'EOF2' ||
import json, sys
import st_floats
def load(p):
    return {k: a for k, (_, a) in st_floats.load(p).items()}
a, bd, bl = (json.load(open(p)) for p in sys.argv[1:4])
acc = a["rounds"][-1]["accuracy"]
assert bd["rounds"][0]["accuracy"] == acc, ("dense", bd["rounds"][0]["accuracy"], acc)
assert bl["rounds"][0]["accuracy"] == acc, ("loha", bl["rounds"][0]["accuracy"], acc)
x, y = load(sys.argv[4]), load(sys.argv[5])
assert x.keys() == y.keys()
for k in x:  # FedAvg of identical models: equal up to float rounding
    assert max(abs(p - q) for p, q in zip(x[k], y[k])) <= 1e-6 * max(1.0, max(abs(p) for p in x[k])), k
ad = load(sys.argv[6] + "/adapter_model.safetensors")
assert "base_model.model.fc3.weight" in ad and "base_model.model.fc1.hada_w1_a" in ad, sorted(ad)
w = ad["base_model.model.fc3.weight"]  # the head to save starts from the file too
assert max(abs(p - q) for p, q in zip(w, x["fc3.weight"])) <= 1e-6 * max(1.0, max(abs(p) for p in w))
cfg = json.load(open(sys.argv[6] + "/adapter_config.json"))
assert cfg["modules_to_save"] == ["fc3"], cfg["modules_to_save"]
EOF2
	fail "--init: the runs do not start from the saved model"
expect 2 "$BIN" --data mnist --data-path "$DATA" --param fedpara --init "$INIT" --out "$TMP/r3"
contains "$TMP/err" "--init works with dense and loha"
expect 1 "$BIN" --data mnist --data-path "$DATA" --param dense --init "$TMP/none.safetensors" \
	--clients 2 --rounds 1 --quiet --out "$TMP/r3"
[ "$(wc -l <"$TMP/err")" -eq 1 ] || fail "--init missing file: $(cat "$TMP/err")"
expect 1 "$BIN" --data mnist --data-path "$DATA" --param dense --model mlp --init "$INIT" \
	--clients 2 --rounds 1 --quiet --out "$TMP/r3"
contains "$TMP/err" "shape mismatch: fc1.weight"
expect 1 "$BIN" --data mnist --data-path "$DATA" --param loha --init "$INIT" --clients 2 \
	--rounds 1 --modules-to-save fc9 --quiet --out "$TMP/r3"
contains "$TMP/err" "no layer 'fc9'"

rm -rf "$TMP"
if [ "$fails" -ne 0 ]; then
	echo "$fails failure(s)"
	exit 1
fi
echo "cli_sim: all passed"
