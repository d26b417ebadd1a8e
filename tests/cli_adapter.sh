#!/bin/bash
# cli_adapter.sh - the real fedloha-adapter binary: help and version, usage
# errors (exit 2), merge and inspect on the golden cases, PEFT LoRA merge
# (against python's W0 + (alpha / r) B A, and fedloha's lowrank folders), the
# formula merge --help and inspect name, and broken adapter folders (exit 1,
# exactly one line on stderr, nothing written, no crash).
# Broken folders are copies of a golden case edited with python3 (stdlib
# only, to read the safetensors header) and dd (to patch bytes in place).
set -u
command -v python3 >/dev/null || { echo "FAIL: python3 not found (deploy/install-deps.sh installs it)"; exit 1; }
BIN=${FL_BIN:?FL_BIN not set}/fedloha-adapter
DATA=${FL_TEST_DATA:?FL_TEST_DATA not set}/adapter
TMP=${FL_TMP:-/tmp}/cli-adapter.$$
rm -rf "$TMP" && mkdir -p "$TMP"
. "$(dirname "$0")/cli_lib.sh"

# one_line_error: stderr is exactly one line "fedloha-adapter: ..."
one_line_error() {
	local n
	n=$(wc -l <"$TMP/err")
	[ "$n" -eq 1 ] || fail "stderr has $n lines: $(cat "$TMP/err")"
	grep -q '^fedloha-adapter: ' "$TMP/err" || fail "stderr lacks the prefix: $(cat "$TMP/err")"
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
	contains "$TMP/out" "merged 3 adapted weights"
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
	[ "$(wc -l <"$TMP/out")" -eq 6 ] || fail "$c: inspect prints $(wc -l <"$TMP/out") lines"
	contains "$TMP/out" "formula: LoHa: W = W0 + s * (w1_a @ w1_b) (.) (w2_a @ w2_b)"

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

# ---- PEFT LoRA folders: merged as W0 + (lora_alpha / r) B A, checked
# against the same sum computed in python (float64, stdlib only) ----
L=$TMP/lora
mkdir -p "$L/ad"
python3 - "$L" <<'PYEOF' || fail "lora: cannot write the test folder"
import json, struct, sys, random
d = sys.argv[1]
random.seed(5)
def write(path, tensors):
    hdr, blob = {}, b""
    for name, (shape, vals) in tensors.items():
        data = struct.pack("<%df" % len(vals), *vals)
        hdr[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    h = json.dumps(hdr).encode()
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + blob)
def rnd(n): return [struct.unpack("<f", struct.pack("<f", random.uniform(-1, 1)))[0] for _ in range(n)]
base = {"lin.weight": ([3, 4], rnd(12)), "lin.bias": ([3], rnd(3)),
        "conv.weight": ([2, 3, 2, 2], rnd(24)), "head.weight": ([2, 3], rnd(6))}
ad = {"base_model.model.lin.lora_A.weight": ([2, 4], rnd(8)),
      "base_model.model.lin.lora_B.weight": ([3, 2], rnd(6)),
      "base_model.model.conv.lora_A.weight": ([1, 3, 2, 2], rnd(12)),
      "base_model.model.conv.lora_B.weight": ([2, 1, 1, 1], rnd(2))}
write(d + "/base.safetensors", base)
write(d + "/ad/adapter_model.safetensors", ad)
json.dump({"peft_type": "LORA", "r": 1, "lora_alpha": 4, "rank_pattern": {"lin": 2},
           "alpha_pattern": {"lin": 3}, "target_modules": ["lin", "conv"],
           "fan_in_fan_out": False}, open(d + "/ad/adapter_config.json", "w"))
# expected: lin s = 3 / 2, conv s = 4 / 1
exp = {k: list(v[1]) for k, v in base.items()}
for mod, s, r, o, i in (("lin", 1.5, 2, 3, 4), ("conv", 4.0, 1, 2, 12)):
    A = ad["base_model.model.%s.lora_A.weight" % mod][1]
    B = ad["base_model.model.%s.lora_B.weight" % mod][1]
    for a in range(o):
        for b in range(i):
            exp[mod + ".weight"][a * i + b] += s * sum(B[a * r + k] * A[k * i + b] for k in range(r))
json.dump(exp, open(d + "/expected.json", "w"))
PYEOF
expect 0 "$BIN" merge --base "$L/base.safetensors" --adapter "$L/ad" --out "$L/merged.safetensors"
contains "$TMP/out" "merged 2 adapted weights"
python3 - "$L" <<'PYEOF' || fail "lora: merged weights differ from W0 + (alpha / r) B A"
import json, struct, sys
d = sys.argv[1]
f = open(d + "/merged.safetensors", "rb")
n = struct.unpack("<Q", f.read(8))[0]
hdr = json.loads(f.read(n)); blob = f.read()
exp = json.load(open(d + "/expected.json"))
assert sorted(k for k in hdr if k != "__metadata__") == sorted(exp), hdr
for k, want in exp.items():
    a, b = hdr[k]["data_offsets"]
    got = struct.unpack("<%df" % ((b - a) // 4), blob[a:b])
    err = max(abs(x - y) for x, y in zip(got, want))
    assert len(got) == len(want) and err < 1e-5, (k, err)
PYEOF
# fan_in_fan_out, or a lone lora_A, is refused in one line
sed -i 's/"fan_in_fan_out": false/"fan_in_fan_out": true/' "$L/ad/adapter_config.json"
expect 1 "$BIN" merge --base "$L/base.safetensors" --adapter "$L/ad" --out "$L/x.safetensors"
one_line_error
contains "$TMP/err" "fan_in_fan_out"
sed -i 's/"fan_in_fan_out": true/"fan_in_fan_out": false/' "$L/ad/adapter_config.json"
python3 - "$L/ad/adapter_model.safetensors" <<'PYEOF'
import sys
p = sys.argv[1]
b = open(p, "rb").read()
open(p, "wb").write(b.replace(b"conv.lora_B.weight", b"conv.lora_X.weight"))
PYEOF
expect 1 "$BIN" merge --base "$L/base.safetensors" --adapter "$L/ad" --out "$L/x.safetensors"
one_line_error
contains "$TMP/err" "conv.lora_X.weight"
[ ! -e "$L/x.safetensors" ] || fail "lora: output written for a refused folder"

# fedloha's own lowrank folder: merge reproduces model.safetensors
CLIENT=${FL_BIN}/fedloha-client
TINY=${FL_TEST_DATA}/dataset/mnist-tiny
if "$CLIENT" train --model cnn --param lowrank --data mnist --data-path "$TINY" --epochs 1 \
	--out "$L/lowrank" >"$TMP/out" 2>"$TMP/err"; then
	grep -q '"peft_type": "LORA"' "$L/lowrank/adapter_config.json" || fail "lowrank folder is not LORA"
	expect 0 "$BIN" merge --base "$L/lowrank/base_model.safetensors" --adapter "$L/lowrank" \
		--out "$L/lowrank-merged.safetensors"
	contains "$TMP/out" "merged 3 adapted weights"
	python3 - "$L/lowrank-merged.safetensors" "$L/lowrank/model.safetensors" <<'PYEOF' ||
import json, struct, sys
def rd(p):
    f = open(p, "rb"); n = struct.unpack("<Q", f.read(8))[0]
    h = json.loads(f.read(n)); blob = f.read()
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = (v["shape"], struct.unpack("<%df" % ((b - a) // 4), blob[a:b]))
    return out
m, ref = rd(sys.argv[1]), rd(sys.argv[2])
assert sorted(m) == sorted(ref)
for k in ref:
    assert m[k][0] == ref[k][0], k
    assert max(abs(x - y) for x, y in zip(m[k][1], ref[k][1])) < 1e-5, k
PYEOF
		fail "lowrank: merged weights differ from the folder's model.safetensors"
else
	fail "lowrank training: $(head -c 300 "$TMP/err")"
fi

# merge --help and inspect name the formula they apply (pFedPara's included)
expect 0 "$BIN" merge --help
contains "$TMP/out" "dW = s * P1 (.) (P2 + 1)"
contains "$TMP/out" "dW = (lora_alpha / r) * lora_B @ lora_A"
if "$CLIENT" train --model 2nn --param pfedpara --gamma 0.1 --data mnist --data-path "$TINY" \
	--epochs 1 --out "$L/pfp" >"$TMP/out" 2>"$TMP/err"; then
	expect 0 "$BIN" inspect "$L/pfp"
	contains "$TMP/out" "formula: pFedPara: W = W0 + s * P1 (.) (P2 + 1)"
	expect 0 "$BIN" inspect --json "$L/pfp"
	tail -1 "$TMP/out" | grep -qF '"formula":"pFedPara: W = W0 + s * P1 (.) (P2 + 1)' ||
		fail "pfedpara: inspect --json has no formula: $(tail -1 "$TMP/out")"
else
	fail "pfedpara training: $(head -c 300 "$TMP/err")"
fi

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
