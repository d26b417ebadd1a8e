#!/bin/bash
# cli_adapter.sh - the real fedloha-adapter binary: help and version, usage
# errors (exit 2), merge and inspect on the golden cases, and broken adapter
# folders (exit 1, exactly one line on stderr, nothing written, no crash).
# Broken folders are copies of a golden case edited with python3 (stdlib
# only, to read the safetensors header) and dd (to patch bytes in place).
set -u
command -v python3 >/dev/null || { echo "FAIL: python3 not found (deploy/install-deps.sh installs it)"; exit 1; }
BIN=${FL_BIN:?FL_BIN not set}/fedloha-adapter
DATA=${FL_TEST_DATA:?FL_TEST_DATA not set}/adapter
TMP=${FL_TMP:-/tmp}/cli-adapter.$$
rm -rf "$TMP" && mkdir -p "$TMP"
fails=0

fail() {
	echo "FAIL: $*"
	fails=$((fails + 1))
}

# expect CODE CMD...: runs CMD, checks the exit code; stdout/stderr in $TMP/out, $TMP/err
expect() {
	local want=$1
	shift
	"$@" >"$TMP/out" 2>"$TMP/err"
	local rc=$?
	[ "$rc" -eq "$want" ] || fail "exit $rc (want $want): $*: $(head -c 300 "$TMP/err")"
}

# one_line_error: stderr is exactly one line "fedloha-adapter: ..."
one_line_error() {
	local n
	n=$(wc -l <"$TMP/err")
	[ "$n" -eq 1 ] || fail "stderr has $n lines: $(cat "$TMP/err")"
	grep -q '^fedloha-adapter: ' "$TMP/err" || fail "stderr lacks the prefix: $(cat "$TMP/err")"
}

contains() {
	grep -qF -- "$2" "$1" || fail "$1 lacks '$2': $(head -c 400 "$1")"
}

# ---- help, version, usage errors ----
expect 0 "$BIN" --help
contains "$TMP/out" "merge"
contains "$TMP/out" "inspect"
expect 0 "$BIN" merge --help
contains "$TMP/out" "--adapter DIR"
contains "$TMP/out" "keep BASE's dtype"
expect 0 "$BIN" inspect --help
contains "$TMP/out" "--json"
expect 0 "$BIN" --version
grep -Eq '^fedloha-adapter [0-9]+\.[0-9]+\.[0-9]+$' "$TMP/out" || fail "version: $(cat "$TMP/out")"
for args in "" "frobnicate" "merge --base x" "merge --base" "merge --base a --adapter b --out c extra" \
	"inspect" "inspect --bogus d" "inspect a b"; do
	# shellcheck disable=SC2086
	expect 2 "$BIN" $args
	one_line_error
done

# ---- merge and inspect on every golden case ----
for c in seed2 seed3 seed2-eff seed3-eff; do
	out=$TMP/$c.safetensors
	expect 0 "$BIN" merge --base "$DATA/$c/base.safetensors" --adapter "$DATA/$c/adapter" --out "$out"
	contains "$TMP/out" "merged 3 LoHa weights"
	[ -s "$out" ] || fail "$c: no output"
	[ "$(stat -c %s "$out")" -eq "$(stat -c %s "$DATA/$c/expected_merged.safetensors")" ] ||
		fail "$c: output size differs from expected_merged"
	# --opt=value form, output over a copy of the base
	cp "$DATA/$c/base.safetensors" "$TMP/inplace.safetensors"
	expect 0 "$BIN" merge --base="$TMP/inplace.safetensors" --adapter="$DATA/$c/adapter" \
		--out="$TMP/inplace.safetensors"
	cmp -s "$out" "$TMP/inplace.safetensors" || fail "$c: in-place merge differs"

	expect 0 "$BIN" inspect "$DATA/$c/adapter" --base "$DATA/$c/base.safetensors"
	for field in module form out in k1 k2 r alpha scale factor_params dense_params rank_bound \
		ratio fc1 block.0.fc2 conv1 "total: 3 modules"; do
		contains "$TMP/out" "$field"
	done
	case $c in
	*-eff) contains "$TMP/out" "conv-tucker" ;;
	*) contains "$TMP/out" "conv-reshape" ;;
	esac
	[ "$(wc -l <"$TMP/out")" -eq 5 ] || fail "$c: inspect prints $(wc -l <"$TMP/out") lines"

	expect 0 "$BIN" inspect --json "$DATA/$c/adapter"
	python3 - "$TMP/out" <<'EOF' || fail "$c: inspect --json"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 4, rows
keys = {"module", "form", "out", "in", "k1", "k2", "r", "alpha", "scale", "factor_params",
        "dense_params", "rank_bound", "compression"}
for row in rows[:3]:
    assert keys <= set(row), row
    assert abs(row["scale"] - row["alpha"] / row["r"]) < 1e-9, row
assert rows[3]["total"] is True and rows[3]["modules"] == 3
assert rows[3]["factor_params"] == sum(r["factor_params"] for r in rows[:3])
EOF
done

# ---- broken adapter folders ----
# variant NAME: a fresh copy of seed2's adapter in $TMP/NAME
variant() {
	rm -rf "${TMP:?}/$1"
	mkdir -p "$TMP/$1"
	cp -r "$DATA/seed2/adapter" "$TMP/$1/adapter"
	echo "$TMP/$1/adapter"
}

# header_offset FILE TENSOR WHAT: byte offset in FILE of the tensor's shape
# text ("shape") or of its first data byte ("data").
header_offset() {
	python3 - "$@" <<'EOF'
import json, struct, sys
path, name, what = sys.argv[1:4]
raw = open(path, "rb").read()
(n,) = struct.unpack("<Q", raw[:8])
hdr = raw[8:8 + n].decode()
info = json.loads(hdr)[name]
if what == "data":
    print(8 + n + info["data_offsets"][0])
else:
    key = hdr.index(json.dumps(name))
    print(8 + hdr.index('"shape"', key))
EOF
}

# refuse ADAPTER_DIR NEEDLE: merge and inspect fail with one line naming NEEDLE
refuse() {
	local out=$TMP/refused.safetensors
	rm -f "$out"
	expect 1 "$BIN" merge --base "$DATA/seed2/base.safetensors" --adapter "$1" --out "$out"
	one_line_error
	contains "$TMP/err" "$2"
	[ ! -e "$out" ] || fail "output written for $1"
	expect 1 "$BIN" inspect "$1"
	one_line_error
}

d=$(variant no-model)
rm "$d/adapter_model.safetensors"
refuse "$d" "adapter_model.safetensors"

d=$(variant no-config)
rm "$d/adapter_config.json"
refuse "$d" "adapter_config.json"

d=$(variant lora)
python3 - "$d/adapter_config.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["peft_type"] = "LORA"
json.dump(c, open(sys.argv[1], "w"), indent=2)
EOF
refuse "$d" "peft_type"

d=$(variant bad-json)
printf '{\n  "peft_type": "LOHA",\n  "r": \n}\n' >"$d/adapter_config.json"
refuse "$d" "adapter_config.json:4:1:"

d=$(variant bad-r)
python3 - "$d/adapter_config.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["r"] = -3
json.dump(c, open(sys.argv[1], "w"), indent=2)
EOF
refuse "$d" "key 'r': expected a positive integer, got -3"

# a factor whose shape is transposed in the header: same bytes, valid file
d=$(variant bad-shape)
f=$d/adapter_model.safetensors
off=$(header_offset "$f" base_model.model.fc1.hada_w1_a shape)
[ "$(dd if="$f" bs=1 skip="$off" count=14 2>/dev/null)" = '"shape":[78,5]' ] || fail "unexpected header"
printf '"shape":[5,78]' | dd of="$f" bs=1 seek="$off" conv=notrunc 2>/dev/null
refuse "$d" "hada_w1_a' has shape [5, 78], expected [78, 5]"

# a NaN in a factor
d=$(variant nan)
f=$d/adapter_model.safetensors
off=$(header_offset "$f" base_model.model.block.0.fc2.hada_w2_b data)
printf '\x00\x00\xc0\x7f' | dd of="$f" bs=1 seek=$((off + 8)) conv=notrunc 2>/dev/null
expect 1 "$BIN" merge --base "$DATA/seed2/base.safetensors" --adapter "$d" --out "$TMP/nan.safetensors"
one_line_error
contains "$TMP/err" "non-finite"
[ ! -e "$TMP/nan.safetensors" ] || fail "output written for a NaN factor"

# a truncated safetensors file
d=$(variant truncated)
truncate -s 1000 "$d/adapter_model.safetensors"
refuse "$d" "adapter_model.safetensors"

# missing base, missing folder
expect 1 "$BIN" merge --base "$TMP/none.safetensors" --adapter "$DATA/seed2/adapter" --out "$TMP/x.safetensors"
one_line_error
expect 1 "$BIN" inspect "$TMP/does-not-exist"
one_line_error

rm -rf "$TMP"
if [ "$fails" -ne 0 ]; then
	echo "cli_adapter: $fails failures"
	exit 1
fi
echo "cli_adapter: all checks passed"
