#!/usr/bin/env bash
# cli_loadgen.sh - many real sessions on one coordinator, small: a secure
# fedloha-server (2nn FedPara, --upload-slots 1 so uploads must wait for
# the one slot) and 200 sessions of tests/loadgen (fl-loadgen) from 2
# processes on 127.0.0.1, their connections spread over 50 loopback source
# addresses so the per-address limits keep their defaults. Checks: both
# rounds selected and counted all 200 updates (none dropped or rejected),
# every session was established and ended with Bye("done"), some uploads
# waited for the slot and at most one was in flight, the updates carried
# seeded random (non-zero) values, and the handshakes retried after a
# failure stay few (at most 10 per process; the count is reported). Also
# the printed number of upload slots: --upload-slots as given, else
# --upload-memory (256 MiB by default) / the update's bytes, clamped to
# 1..1024.
set -u
. "$(dirname "$0")/cli_lib.sh"
BIN=${FL_BIN:-build/bin}
TMP=${FL_TMP:-/tmp}/cli_loadgen.$$
mkdir -p "$TMP"
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT
fail() {
	echo "FAIL: $*"
	for f in "$TMP"/*.out "$TMP"/*.err; do
		[ -s "$f" ] && { echo "== $f"; tail -n 8 "$f"; }
	done
	exit 1
}
N=200
SPUB=$("$BIN/fedloha-server" keygen --out "$TMP/server.key" 2>/dev/null) || fail "server keygen"
"$BIN/fl-loadgen" allow --clients $N --seed 5 --out "$TMP/allow.txt" || fail "fl-loadgen allow"
[ "$(wc -l <"$TMP/allow.txt")" = $N ] || fail "allow-list of $N lines expected"

timeout 60 "$BIN/fedloha-server" run --listen 127.0.0.1:0 --key "$TMP/server.key" \
	--allow "$TMP/allow.txt" --model 2nn --param fedpara --rounds 2 --min-clients $N \
	--round-timeout 40 --upload-slots 1 >"$TMP/server.out" 2>"$TMP/server.err" &
SPID=$!
await_port server $SPID
for p in 0 1; do
	timeout 60 "$BIN/fl-loadgen" run --port "$PORT" --server-key "$SPUB" --clients $((N / 2)) \
		--first $((p * N / 2)) --seed 5 --sources 50 --values random >"$TMP/lg$p.out" 2>"$TMP/lg$p.err" &
	LG[$p]=$!
done
for p in 0 1; do
	wait "${LG[$p]}" || fail "fl-loadgen $p exit $?"
done
wait $SPID || fail "server exit $?"

for r in 1 2; do
	grep -q "^round $r/2 selected $N reported $N dropped 0 rejected 0 " "$TMP/server.out" ||
		fail "round $r: not every update counted"
done
grep -q "^finished 2 rounds" "$TMP/server.out" || fail "server did not finish"
for p in 0 1; do
	grep -q "^loadgen: sessions 100 up 100 failed 0 errors 0 byes_done 100 .* tasks 200 updates 200 " \
		"$TMP/lg$p.out" || fail "fl-loadgen $p: not every session served"
	RETRIES[$p]=$(sed -n 's/^loadgen: .* retries \([0-9]*\) .*/\1/p' "$TMP/lg$p.out")
	[ -n "${RETRIES[$p]}" ] && [ "${RETRIES[$p]}" -le 10 ] ||
		fail "fl-loadgen $p: ${RETRIES[$p]:-no count of} handshake retries (at most 10 allowed)"
done
line=$(grep "^upload slots 1: " "$TMP/server.out") || fail "no upload slot line"
peak=$(echo "$line" | sed -n 's/.*at most \([0-9]*\) in use.*/\1/p')
waited=$(echo "$line" | sed -n 's/.*, \([0-9]*\) uploads waited.*/\1/p')
[ "$peak" = 1 ] || fail "upload slots: $peak in use at once (1 allowed)"
[ "${waited:-0}" -gt 0 ] || fail "no upload waited for the slot: the backpressure was not exercised"
grep -q "^upload slots: 1 (0.2 MiB)$" "$TMP/server.out" || fail "--upload-slots 1 not printed at start"

# upload_slots NAME MEM_FLAGS...: the slots a coordinator (no client) prints
# at start (the update's bytes are in its model line).
upload_slots() {
	local name=$1
	shift
	timeout 30 "$BIN/fedloha-server" run --listen 127.0.0.1:0 --insecure --model 2nn \
		--param fedpara --min-clients 2 "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
	local pid=$!
	await_port "$name" $pid
	kill $pid 2>/dev/null
	wait $pid 2>/dev/null
	sed -n 's/^upload slots: \([0-9]*\) (.* MiB)$/\1/p' "$TMP/$name.out"
}
got=$(upload_slots mem_default)
[ "$got" = 1024 ] || fail "default budget: $got upload slots, want 1024 (256 MiB / 236 KB, capped)"
for mib in 1 10 100; do
	got=$(upload_slots "mem$mib" --upload-memory $mib)
	ub=$(sed -n 's/^model .*(\([0-9]*\) bytes in f32)$/\1/p' "$TMP/mem$mib.out")
	want=$((mib * 1048576 / ub))
	[ $want -gt 1024 ] && want=1024
	[ $want -lt 1 ] && want=1
	[ "$got" = "$want" ] || fail "--upload-memory $mib: $got upload slots, want $want"
done
got=$(upload_slots given --upload-memory 1 --upload-slots 7)
[ "$got" = 7 ] || fail "--upload-slots 7 with a budget: $got upload slots"
echo "ok: $N sessions, 2 rounds, $waited uploads waited for the one slot," \
	"handshake retries ${RETRIES[0]} + ${RETRIES[1]}; upload slots from the budget"
cat "$TMP/lg0.out" | tail -1
