#!/bin/bash
# cli_sim_mpi.sh - fedloha-sim over MPI (docs/SIMULATION_MPI.md): the same
# runs in one process and under `mpirun --oversubscribe -np 3` (and -np 2
# with other thread counts, -np 5 with more ranks than clients) on the
# mnist-tiny fixture give identical results: every JSON (rows, frame,
# channel and engine byte counts, vanished clients, accuracies; only
# wall-clock seconds and the thread count may differ) and the same set of
# saved final models, byte for byte. The runs use the secure channel and
# dropout (clients vanish and reconnect), a personalised configuration with
# federated evaluation, --fraction 0.5, an --insecure run, a local-only
# baseline (rank 0 alone) and messages cut into 100- and 40-byte pieces
# (the test knob FL_SIM_MPI_CHUNK); rank 0 must have made requests to the
# other ranks. Failures end with one line and never hang (every mpirun
# under `timeout`): a missing data folder; ranks started with different
# data or flags (MPMD), or --help on one rank only; an MPI error
# (FL_SIM_MPI_FAULT=mpi-error); a rank announcing a finished job twice
# (FL_SIM_MPI_FAULT=double-done). Skipped
# (77) when this build has no MPI or mpirun is not installed.
set -u
[ "${FL_HAVE_MPI:-OFF}" = ON ] || [ "${FL_HAVE_MPI:-}" = TRUE ] || [ "${FL_HAVE_MPI:-}" = 1 ] || {
	echo "skip: fedloha-sim built without MPI (FL_HAVE_MPI=${FL_HAVE_MPI:-})"
	exit 77
}
command -v mpirun >/dev/null || { echo "skip: mpirun not installed (openmpi-bin)"; exit 77; }
command -v python3 >/dev/null || { echo "FAIL: python3 not found (deploy/install-deps.sh installs it)"; exit 1; }
BIN=${FL_BIN:?FL_BIN not set}/fedloha-sim
DATA=${FL_TEST_DATA:?FL_TEST_DATA not set}/dataset/mnist-tiny
TMP=${FL_TMP:-/tmp}/cli-sim-mpi.$$
rm -rf "$TMP" && mkdir -p "$TMP"
. "$(dirname "$0")/cli_lib.sh"
# mpirun refuses root unless told; the ranks run on this machine only
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Sanitizer builds (make asan): OpenMPI keeps memory past MPI_Finalize; its
# components stay loaded and stacks are unwound in full so that those leaks
# can be named and suppressed (tests/lsan_mpi.supp), fedloha's are not.
MPIENV=(env OMPI_MCA_mca_base_component_disable_dlclose=1
	"ASAN_OPTIONS=${ASAN_OPTIONS:-}:fast_unwind_on_malloc=0"
	"LSAN_OPTIONS=${LSAN_OPTIONS:-}:suppressions=$TESTS_DIR/lsan_mpi.supp:print_suppressions=0")
MPIRUN=(timeout 60 "${MPIENV[@]}" mpirun --oversubscribe)

# same_py OUT_A OUT_B: 0 when the JSONs and saved models of two runs are
# equal (the same files on both sides)
same_py() {
	py - "$1" "$2" <<'PY'
import glob, hashlib, json, os, sys
a, b = sys.argv[1], sys.argv[2]
def strip(o):
    if isinstance(o, dict):
        return {k: strip(v) for k, v in o.items() if k not in ('seconds', 'threads')}
    if isinstance(o, list):
        return [strip(x) for x in o]
    return o
names = sorted(os.path.basename(f) for f in glob.glob(a + '/*.json'))
assert names and names == sorted(os.path.basename(f) for f in glob.glob(b + '/*.json')), names
for n in names:
    ja, jb = strip(json.load(open(a + '/' + n))), strip(json.load(open(b + '/' + n)))
    for k in ja:
        assert ja[k] == jb.get(k), '%s: %s: %s != %s' % (n, k, str(ja[k])[:120], str(jb.get(k))[:120])
    assert ja.keys() == jb.keys(), n
def models(d):
    return sorted(os.path.relpath(m, d) for m in glob.glob(d + '/*-model/*'))
ma = models(a)
assert ma or not glob.glob(a + '/*-model'), 'no model files'
assert ma == models(b), 'models %s != %s' % (ma, models(b))
for m in ma:
    ha = hashlib.sha256(open(os.path.join(a, m), 'rb').read()).hexdigest()
    hb = hashlib.sha256(open(os.path.join(b, m), 'rb').read()).hexdigest()
    assert ha == hb, 'model %s differs' % m
PY
}

# same OUT_A OUT_B WHAT: the JSONs and saved models of two runs are equal
same() {
	same_py "$1" "$2" || fail "$3: results differ"
}

# fails_once WHAT PATTERN: the mpirun just run (exit status in $rc, stderr
# in $TMP/err) failed without hanging and its stderr has exactly one
# fedloha-sim line, matching PATTERN
fails_once() {
	[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "$1: exit $rc"
	[ "$(grep -c '^fedloha-sim: ' "$TMP/err")" -eq 1 ] && grep -q "^fedloha-sim: $2" "$TMP/err" ||
		fail "$1: $(head -c 600 "$TMP/err")"
}

ARGS=(--data mnist --data-path "$DATA" --clients 4 --partition iid --fraction 1 --rounds 3
	--epochs 1 --batch 4 --dropout 0.3 --target 50 --quiet --save-model)

# ---- secure channel, dropout, a personalised configuration ----
expect 0 "$BIN" "${ARGS[@]}" --compare dense,fedpara,pfedpara --threads 2 --out "$TMP/one"
expect 0 "${MPIRUN[@]}" -np 3 "$BIN" "${ARGS[@]}" --compare dense,fedpara,pfedpara --threads 1 \
	--out "$TMP/np3"
contains "$TMP/out" "MPI: 3 ranks (client i on rank i % 3), 1 threads per rank"
[ "$(grep -c '^fedloha-sim: ' "$TMP/out")" -eq 1 ] || fail "-np 3: not printed once: $(cat "$TMP/out")"
same "$TMP/one" "$TMP/np3" "-np 3"
# -np 2 in 100-byte pieces (FL_SIM_MPI_CHUNK) and without --quiet: rank 0
# must have made requests to rank 1 in every configuration
NOQUIET=()
for a in "${ARGS[@]}"; do [ "$a" = --quiet ] || NOQUIET+=("$a"); done
expect 0 env FL_SIM_MPI_CHUNK=100 "${MPIRUN[@]}" -np 2 "$BIN" "${NOQUIET[@]}" \
	--compare dense,fedpara,pfedpara --threads 3 --out "$TMP/np2"
same "$TMP/one" "$TMP/np2" "-np 2 --threads 3, 100-byte pieces"
for f in dense fedpara pfedpara; do
	calls=$(sed -n "s/^fedloha-sim: $f: \([0-9]*\) requests to other ranks, .*/\1/p" "$TMP/err")
	[ "${calls:-0}" -gt 0 ] || fail "-np 2 $f: no requests to rank 1: $(head -c 600 "$TMP/err")"
done
py -c "
import json, sys
d = json.load(open(sys.argv[1]))
assert d['vanished'] > 0, 'no client vanished'
assert d['handshakes'] == d['connections'] > 4, 'no reconnections'
assert d['bytes_up'] > 0 and d['channel_bytes_up'] > d['bytes_up'], 'bytes'
" "$TMP/np3/fedpara.json" || fail "-np 3: dropout and reconnections not exercised"
for f in dense fedpara pfedpara; do
	[ -s "$TMP/np3/$f.csv" ] || fail "-np 3: no $f.csv"
done
[ -s "$TMP/np3/fedpara-model/model.safetensors" ] || fail "-np 3: no saved model: $(ls -R "$TMP/np3")"

# ---- --insecure (both ends connect at once) and a local-only baseline ----
# in 40-byte pieces: a request or a reply without payload fills one exactly
expect 0 "$BIN" "${ARGS[@]}" --compare fedpara,local-fedpara --insecure --threads 1 \
	--out "$TMP/one-plain"
expect 0 env FL_SIM_MPI_CHUNK=40 "${MPIRUN[@]}" -np 3 "$BIN" "${ARGS[@]}" \
	--compare fedpara,local-fedpara --insecure --threads 2 --out "$TMP/np3-plain"
same "$TMP/one-plain" "$TMP/np3-plain" "-np 3 --insecure, 40-byte pieces"

# ---- more ranks than clients, --fraction 0.5 ----
expect 0 "$BIN" "${ARGS[@]}" --compare fedpara --fraction 0.5 --threads 1 --out "$TMP/one-half"
expect 0 "${MPIRUN[@]}" -np 5 "$BIN" "${ARGS[@]}" --compare fedpara --fraction 0.5 --threads 1 \
	--out "$TMP/np5-half"
same "$TMP/one-half" "$TMP/np5-half" "-np 5 --fraction 0.5"

# ---- the comparison itself: a model that one run lacks is a difference ----
cp -r "$TMP/one" "$TMP/extra" && mkdir -p "$TMP/extra/extra-model" &&
	echo x >"$TMP/extra/extra-model/model.safetensors"
same_py "$TMP/one" "$TMP/extra" 2>/dev/null && fail "same: a model only in run B passed"
same_py "$TMP/extra" "$TMP/one" 2>/dev/null && fail "same: a model only in run A passed"

# ---- a missing data folder: one clear line from rank 0, a failed job ----
"${MPIRUN[@]}" -np 3 "$BIN" --data mnist --data-path "$TMP/nowhere" --quiet --out "$TMP/r0" \
	>"$TMP/out" 2>"$TMP/err"
rc=$?
fails_once "missing data under mpirun" ".*$TMP/nowhere"

# ---- ranks started with different data or flags (MPMD): refused, no hang ----
MM=(--data mnist --data-path "$DATA" --clients 4 --partition iid --fraction 1 --rounds 2
	--epochs 1 --batch 4 --quiet --compare pfedpara,dense --threads 1 --out "$TMP/mm")
"${MPIRUN[@]}" -np 1 "$BIN" "${MM[@]}" --holdout 0.2 : -np 1 "$BIN" "${MM[@]}" --holdout 0.01 \
	>"$TMP/out" 2>"$TMP/err"
rc=$?
fails_once "different data" "rank 1: its data/configuration differ from rank 0's$"
"${MPIRUN[@]}" -np 2 "$BIN" "${MM[@]}" : -np 1 "$BIN" "${MM[@]}" --rounds 3 \
	>"$TMP/out" 2>"$TMP/err"
rc=$?
fails_once "different flags" "rank 2: its data/configuration differ from rank 0's$"
"${MPIRUN[@]}" -np 1 "$BIN" "${MM[@]}" : -np 1 "$BIN" --help >"$TMP/out" 2>"$TMP/err"
rc=$?
fails_once "--help on rank 1 alone" "rank 1: --help was given$"

# ---- an MPI error, a finished job announced twice: one line, the job ends ----
FL_SIM_MPI_FAULT=mpi-error "${MPIRUN[@]}" -np 3 "$BIN" "${ARGS[@]}" --compare fedpara \
	--out "$TMP/fault" >"$TMP/out" 2>"$TMP/err"
rc=$?
fails_once "MPI error" "rank 2: MPI_Send failed: MPI_ERR_RANK"
grep -q MPI_ERRORS_ARE_FATAL "$TMP/err" && fail "MPI error: MPI's own handler ran"
FL_SIM_MPI_FAULT=double-done "${MPIRUN[@]}" -np 2 "$BIN" "${ARGS[@]}" --compare fedpara \
	--out "$TMP/fault" >"$TMP/out" 2>"$TMP/err"
rc=$?
fails_once "a job announced twice" "rank 0: a .*finished job .*client"

rm -rf "$TMP"
[ "$fails" -eq 0 ] || exit 1
echo "cli_sim_mpi: all passed"
