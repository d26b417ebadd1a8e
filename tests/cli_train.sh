#!/bin/bash
# cli_train.sh - fedloha-client train / eval from the shell: help and bad
# flags, a one-epoch run per parameterisation on the tiny MNIST fixture with
# the saved folder evaluated again by `eval` (same accuracy and loss), loha
# on a saved dense base (= the base at init), fedloha-adapter merge of a
# fedpara folder, and, when Debian's Fashion-MNIST is installed, a short
# real run that must pass 70% test accuracy.
set -u
FL_BIN=${FL_BIN:-build/bin}
FL_TEST_DATA=${FL_TEST_DATA:-tests/data}
FL_TMP=${FL_TMP:-/tmp}
CLIENT="$FL_BIN/fedloha-client"
ADAPTER="$FL_BIN/fedloha-adapter"
T="$FL_TMP/cli_train.$$"
TINY="$FL_TEST_DATA/dataset/mnist-tiny"
FASHION=/usr/share/datasets/fashion-mnist
skipped=""
rm -rf "$T"
mkdir -p "$T"
trap 'rm -rf "$T"' EXIT

. "$(dirname "$0")/cli_lib.sh"
ok() { echo "ok   $*"; }

# run NAME CMD... : runs CMD with stdout/stderr in $T/NAME.out/.err, sets rc
run() {
	local name=$1
	shift
	"$@" >"$T/$name.out" 2>"$T/$name.err"
	rc=$?
}

[ -x "$CLIENT" ] || { echo "FAIL: $CLIENT not built"; exit 1; }

# ---- help ----
for args in "--help" "train --help" "eval --help"; do
	run help $CLIENT $args
	if [ $rc -eq 0 ] && grep -q "usage" "$T/help.out" && [ ! -s "$T/help.err" ]; then
		ok "fedloha-client $args"
	else
		fail "fedloha-client $args: exit $rc"
	fi
done

# ---- bad flags: exit 2, one line on stderr, nothing on stdout ----
bad_flags=(
	"train --bogus"
	"train --epochs x"
	"train --epochs -1"
	"train --lr -1"
	"train --gamma 1.5"
	"train --optim rms"
	"train --model resnet"
	"train --param magic"
	"train --batch 0"
	"train unexpected"
	"train --classes 4-0"
	"train --classes x"
	"train --classes 0,,1"
	"train --classes 0,"
	"train --classes 1-"
	"train --classes 999"
	"train --classes 0-4-6"
	"eval --in x --classes 3-1"
	"eval"
	"eval --in"
	"eval --bogus --in x"
	"bogus"
)
for args in "${bad_flags[@]}"; do
	run bad $CLIENT $args
	lines=$(wc -l <"$T/bad.err")
	if [ $rc -eq 2 ] && [ "$lines" -eq 1 ] && [ ! -s "$T/bad.out" ]; then
		ok "bad flags '$args': exit 2, one line"
	else
		fail "bad flags '$args': exit $rc, $lines stderr lines (expected 2 and 1): $(head -c 300 "$T/bad.err" | tr '\n' '|')"
	fi
done

# ---- train each parameterisation on the tiny fixture, then eval ----
final_field() { # final_field FILE FIELD -> the number after FIELD on the 'final' line
	sed -n "s/.*final .*$2 \([0-9.]*\).*/\1/p" "$1" | head -1
}
for p in dense fedpara pfedpara lowrank loha; do
	out="$T/m-$p"
	run train-$p $CLIENT train --model 2nn --param $p --epochs 1 --batch 8 --data mnist \
		--data-path "$TINY" --out "$out" --threads 1
	if [ $rc -ne 0 ]; then
		fail "train --param $p: exit $rc: $(head -c 300 "$T/train-$p.err")"
		continue
	fi
	acc=$(final_field "$T/train-$p.out" "test-acc")
	loss=$(final_field "$T/train-$p.out" "test-loss")
	files="model.safetensors fedloha.json"
	[ $p != dense ] && files="$files adapter_model.safetensors adapter_config.json base_model.safetensors"
	missing=""
	for f in $files; do [ -s "$out/$f" ] || missing="$missing $f"; done
	if [ -n "$missing" ] || [ -z "$acc" ]; then
		fail "train --param $p: missing:$missing (final acc '$acc')"
		continue
	fi
	ok "train --param $p: final test-acc $acc% test-loss $loss"
	run eval-$p $CLIENT eval --in "$out" --data mnist --data-path "$TINY" --threads 1
	eacc=$(sed -n 's/^test-acc \([0-9.]*\)%.*/\1/p' "$T/eval-$p.out")
	eloss=$(sed -n 's/.*test-loss \([0-9.]*\).*/\1/p' "$T/eval-$p.out")
	if [ $rc -ne 0 ]; then
		fail "eval --in (param $p): exit $rc: $(head -c 300 "$T/eval-$p.err")"
	elif [ "$eacc" != "$acc" ] || [ "$eloss" != "$loss" ]; then
		fail "eval --in (param $p): acc $eacc% loss $eloss, train said $acc% $loss"
	else
		ok "eval --in (param $p): same accuracy and loss as after training"
	fi
done

# a cnn folder of each factorised kind must load back too (conv factors)
for p in fedpara lowrank; do
	out="$T/cnn-$p"
	run cnn-$p $CLIENT train --model cnn --param $p --epochs 0 --data mnist --data-path "$TINY" \
		--out "$out" --quiet --threads 1
	[ $rc -eq 0 ] || { fail "train cnn --param $p: exit $rc"; continue; }
	run cnn-eval-$p $CLIENT eval --in "$out" --data mnist --data-path "$TINY" --threads 1
	if [ $rc -eq 0 ]; then
		ok "eval --in cnn $p folder"
	else
		fail "eval --in cnn $p folder: exit $rc: $(head -c 300 "$T/cnn-eval-$p.err")"
	fi
done

# eval errors: one line, exit 1
run eval-missing $CLIENT eval --in "$T/nonexistent" --data mnist --data-path "$TINY"
if [ $rc -eq 1 ] && [ "$(wc -l <"$T/eval-missing.err")" -eq 1 ]; then
	ok "eval of a missing folder: exit 1, one line"
else
	fail "eval of a missing folder: exit $rc"
fi
run train-nodata $CLIENT train --model 2nn --data mnist --data-path "$T/nonexistent" --epochs 1
if [ $rc -eq 1 ] && [ "$(wc -l <"$T/train-nodata.err")" -eq 1 ]; then
	ok "train on a missing data folder: exit 1, one line"
else
	fail "train on a missing data folder: exit $rc, $(wc -l <"$T/train-nodata.err") lines"
fi

# ---- --classes: only samples with those labels (fixture label = i mod 10) ----
run classes $CLIENT train --model 2nn --classes 0-2,4 --epochs 1 --batch 8 --data mnist \
	--data-path "$TINY" --out "$T/m-classes" --threads 1
meta="$T/m-classes/fedloha.json"
if [ $rc -eq 0 ] && grep -q '"train_samples": 8' "$meta" && grep -q '"test_samples": 4' "$meta" &&
	grep -q '"classes": "0-2,4"' "$meta" && grep -q '"classes": 10' "$meta"; then
	ok "train --classes 0-2,4: 8 of 20 training and 4 of 10 test samples, 10 outputs"
else
	fail "train --classes 0-2,4: exit $rc: $(head -c 300 "$T/classes.err")"
fi
run classes-lim $CLIENT train --model 2nn --classes 5 --limit 1 --epochs 1 --data mnist \
	--data-path "$TINY" --out "$T/m-classes1" --threads 1 --quiet
if [ $rc -eq 0 ] && grep -q '"train_samples": 1' "$T/m-classes1/fedloha.json" &&
	grep -q '"test_samples": 1,' "$T/m-classes1/fedloha.json"; then
	ok "train --classes 5 --limit 1: the limit counts kept samples"
else
	fail "train --classes 5 --limit 1: exit $rc: $(head -c 300 "$T/classes-lim.err")"
fi
run classes-eval $CLIENT eval --in "$T/m-classes" --classes 0-2,4 --data mnist \
	--data-path "$TINY" --threads 1
if [ $rc -eq 0 ] && grep -q 'samples 4$' "$T/classes-eval.out"; then
	ok "eval --classes 0-2,4: 4 test samples"
else
	fail "eval --classes 0-2,4: exit $rc: $(cat "$T/classes-eval.out" "$T/classes-eval.err" | head -c 300)"
fi
run classes-range $CLIENT train --model 2nn --classes 3,12 --epochs 1 --data mnist \
	--data-path "$TINY" --threads 1
if [ $rc -eq 1 ] && [ "$(wc -l <"$T/classes-range.err")" -eq 1 ] &&
	grep -q "label 12" "$T/classes-range.err"; then
	ok "train --classes 3,12 on a 10-class set: exit 1, one line"
else
	fail "train --classes 3,12: exit $rc: $(head -c 300 "$T/classes-range.err")"
fi

# ---- loha on a saved dense base: at init (ΔW = 0) it is the base model ----
if [ -s "$T/m-dense/model.safetensors" ]; then
	dacc=$(final_field "$T/train-dense.out" "test-acc")
	dloss=$(final_field "$T/train-dense.out" "test-loss")
	run loha-base $CLIENT train --model 2nn --param loha --base "$T/m-dense/model.safetensors" \
		--epochs 0 --data mnist --data-path "$TINY" --threads 1
	lacc=$(final_field "$T/loha-base.out" "test-acc")
	lloss=$(final_field "$T/loha-base.out" "test-loss")
	if [ $rc -eq 0 ] && [ "$lacc" = "$dacc" ] && [ "$lloss" = "$dloss" ]; then
		ok "loha --base dense at init = the dense model ($lacc%, $lloss)"
	else
		fail "loha --base dense at init: exit $rc, $lacc% $lloss vs dense $dacc% $dloss"
	fi
	# a base of the wrong shape is refused in one line
	run loha-badbase $CLIENT train --model cnn --param loha --base "$T/m-dense/model.safetensors" \
		--epochs 0 --data mnist --data-path "$TINY"
	if [ $rc -eq 1 ] && [ "$(grep -c . "$T/loha-badbase.err")" -le 2 ]; then
		ok "loha with a base of another model: exit 1"
	else
		fail "loha with a base of another model: exit $rc"
	fi
fi

# ---- fedloha-adapter merge of a fedpara folder ----
if [ -x "$ADAPTER" ] && "$ADAPTER" --help 2>/dev/null | grep -q merge; then
	f="$T/m-fedpara"
	run merge "$ADAPTER" merge --base "$f/base_model.safetensors" --adapter "$f" --out "$T/merged.safetensors"
	if [ $rc -eq 0 ] && [ -s "$T/merged.safetensors" ]; then
		ok "fedloha-adapter merge of a fedpara folder"
		# the merged file is model.safetensors up to float rounding
		if command -v python3 >/dev/null 2>&1; then
			py - "$T/merged.safetensors" "$f/model.safetensors" <<'EOF'
import sys
from st_floats import load
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == b.keys(), (sorted(a), sorted(b))
worst = 0.0  # max |a - b| over the tensor, relative to max |b| (BLAS rounding)
for k in a:
    assert a[k][0] == b[k][0], k
    d = max((abs(x - y) for x, y in zip(a[k][1], b[k][1])), default=0.0)
    worst = max(worst, d / max(max((abs(y) for y in b[k][1]), default=0.0), 1e-30))
print("max rel diff %.3g" % worst)
sys.exit(0 if worst <= 1e-5 else 1)
EOF
			if [ $? -eq 0 ]; then ok "merged = model.safetensors"; else fail "merged != model.safetensors"; fi
		fi
	else
		fail "fedloha-adapter merge of a fedpara folder: exit $rc: $(head -c 300 "$T/merge.err")"
	fi
else
	echo "skip fedloha-adapter merge (not built)"
	skipped="$skipped merge"
fi

# ---- real data: Fashion-MNIST, one short epoch ----
if [ -s "$FASHION/train-images-idx3-ubyte.gz" ]; then
	# Adam: the SGD default (lr 0.05, momentum 0.9) lands anywhere in 65-77%
	# after one epoch of 3000 samples depending on the seed, as PyTorch does
	# with the same recipe; Adam gives 75-78% on seeds 1-6.
	run fashion $CLIENT train --model 2nn --epochs 1 --limit 3000 --test-limit 1000 --optim adam
	acc=$(final_field "$T/fashion.out" "test-acc")
	if [ $rc -eq 0 ] && [ -n "$acc" ] && awk -v a="$acc" 'BEGIN { exit !(a > 70) }'; then
		ok "fashion-mnist 2nn, 1 epoch of 3000 samples: $acc% > 70%"
	else
		fail "fashion-mnist 2nn: exit $rc, final test-acc '$acc'"
	fi
else
	echo "skip fashion-mnist run ($FASHION not installed)"
	skipped="$skipped fashion-mnist"
fi

if [ $fails -ne 0 ]; then
	echo "$fails failed"
	exit 1
fi
# the rest passed, but a part did not run: skipped, not passed
[ -z "$skipped" ] || { echo "skipped parts:$skipped"; exit 77; }
echo "all passed"
