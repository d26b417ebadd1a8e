#!/bin/bash
# gen_adapter_golden.sh - regenerates the golden LoHa merge cases in
# tests/data/adapter/ with the independent PyTorch reference
# (loha_reference.py make-case: a random base model with fc1, block.0.fc2,
# conv1 and an untargeted head, a PEFT LoHa adapter folder with rank_pattern
# and alpha_pattern, and the merged weights PEFT's merge_and_unload gives).
# Cases: seeds 2 and 3, each with the conv in reshape form and in Tucker form
# (--effective-conv). expected_delta.safetensors is dropped (unused).
# Needs Debian's python3-torch; run from anywhere.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ref=${FL_LOHA_REFERENCE:-/work/shared/tools/loha_reference.py}
out=$here/data/adapter
rm -rf "$out"
mkdir -p "$out"
for spec in seed2:2: seed3:3: seed2-eff:2:--effective-conv seed3-eff:3:--effective-conv; do
	IFS=: read -r name seed flag <<<"$spec"
	/usr/bin/python3 "$ref" make-case "$out/$name" --seed "$seed" ${flag:+"$flag"}
	rm -f "$out/$name/expected_delta.safetensors"
done
du -sb "$out"
