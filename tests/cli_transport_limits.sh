#!/usr/bin/env bash
# cli_transport_limits.sh - the libuv transports' connection and output
# caps, over TCP on 127.0.0.1 (tests/raw_peer.py plays the misbehaving
# peers):
#   1. --max-conns N: connection N+1 is accepted and closed at once (one
#      summary line in the log, the count at exit); after one closes, a new
#      one is admitted
#   2. --reserved-conns: with 2 of 4 slots reserved, a third connection
#      still in its handshake is closed at once
#   3. the coordinator's --max-output: a peer that asks for the loha base
#      again and again and reads nothing is cut once its queued output
#      passes the cap (a clear log line); real clients finish the round
#   4. the client's --max-output: a client whose update does not fit cuts
#      that connection with a clear log line and reconnects, the round ends
#      with the other client (a stalled reader and a fast one look the same
#      here: an update is queued in one go, so the cap bounds that burst)
#   5. the coordinator's --write-timeout and fair output: a peer that asks
#      for 50 loha bases (40 MB, more than the 32 MiB sealed-output budget,
#      under its output cap) and stops reading holds at most its share of
#      the budget: two real clients get their tasks and send their updates
#      while it is stuck; it is cut after --write-timeout (a clear line)
set -u
. "$(dirname "$0")/cli_lib.sh"
daemon_setup cli_transport_limits 12
command -v python3 >/dev/null || { echo "SKIP: python3 not found"; exit 77; }
START=$(date +%s)
S="$BIN/fedloha-server"
C="$BIN/fedloha-client"

# ---- 1. --max-conns ----
timeout 30 "$S" run --listen 127.0.0.1:0 --insecure --max-conns 3 --reserved-conns 0 --rounds 1 \
	--min-clients 5 >"$TMP/s1.out" 2>"$TMP/s1.err" &
SPID=$!
await_port s1 $SPID
timeout 20 python3 "$TESTS_DIR/raw_peer.py" conns "$PORT" 3 >"$TMP/p1.out" 2>"$TMP/p1.err" ||
	fail "1: $(cat "$TMP/p1.err")"
wait_for "$TMP/s1.err" "refused 1 connections at accept, before any cryptography \(connections \(--max-conns\) 1" 5 ||
	fail "1: no summary of the refusal"
kill -TERM $SPID; wait $SPID
grep -q "^connections closed at accept by a limit: 1 (connections (--max-conns) 1)$" "$TMP/s1.out" ||
	fail "1: totals at exit"
echo "ok 1: $(cat "$TMP/p1.out")"

# ---- 2. --reserved-conns (secure: connections count as unauthenticated until their channel is up) ----
"$S" keygen --out "$TMP/server.key" >/dev/null 2>&1 || fail "server keygen"
: >"$TMP/allow.txt"
timeout 30 "$S" run --listen 127.0.0.1:0 --key "$TMP/server.key" --allow "$TMP/allow.txt" \
	--max-conns 4 --reserved-conns 2 --rounds 1 >"$TMP/s2.out" 2>"$TMP/s2.err" &
SPID=$!
await_port s2 $SPID
timeout 20 python3 "$TESTS_DIR/raw_peer.py" conns "$PORT" 2 >"$TMP/p2.out" 2>"$TMP/p2.err" ||
	fail "2: $(cat "$TMP/p2.err")"
kill -TERM $SPID; wait $SPID
grep -q "^connections closed at accept by a limit: 1 (reserve for clients (--reserved-conns) 1)$" \
	"$TMP/s2.out" || fail "2: totals at exit: $(grep "closed at accept" "$TMP/s2.out")"
echo "ok 2: with 2 of 4 slots reserved, the third unauthenticated connection was closed at once"

# ---- 3. the coordinator's output cap ----
# A loha coordinator sends its whole base (2nn, 0.8 MB) for each
# BaseRequest; a peer asking 20 times and reading nothing queues 16 MB
# against a 4 MiB cap (alone: no round starts, min 2 clients). Then the
# round runs with two real clients, which fetch the base once each.
timeout 30 "$C" train --model 2nn --param dense --epochs 1 --limit 100 --data-path "$DATA" \
	--out "$TMP/base" >"$TMP/t3.out" 2>"$TMP/t3.err" || fail "3: base training"
timeout 60 "$S" run --listen 127.0.0.1:0 --insecure --model 2nn --param loha \
	--base "$TMP/base/model.safetensors" --rounds 1 --min-clients 2 --round-timeout 20 \
	--max-output 4194304 >"$TMP/s3.out" 2>"$TMP/s3.err" &
SPID=$!
await_port s3 $SPID
cl() { # cl NAME INDEX: a real client in the background; sets CPID
	timeout 50 "$C" run --server 127.0.0.1:$PORT --insecure --num-clients 8 --client-index $2 \
		--limit 100 --data-path "$DATA" --state-dir "$TMP/state$2" >"$TMP/$1.out" 2>"$TMP/$1.err" &
	CPID=$!
}
timeout 20 python3 "$TESTS_DIR/raw_peer.py" stall "$PORT" 20 >"$TMP/p3.out" 2>"$TMP/p3.err" ||
	fail "3: $(cat "$TMP/p3.err")"
cl c3a 0; ca=$CPID
cl c3b 1; cb=$CPID
wait $ca || fail "3: client A exit $?"
wait $cb || fail "3: client B exit $?"
wait $SPID || fail "3: server exit $?"
[ "$(grep -c "conn 127.0.0.1:[0-9]*: [0-9]* bytes queued, over the output cap of 4194304: connection cut" \
	"$TMP/s3.err")" = 1 ] || fail "3: not one output cap line"
grep -q "^round 1/1 selected 2 reported 2" "$TMP/s3.out" || fail "3: the round did not run with A and B"
echo "ok 3: $(cat "$TMP/p3.out"); clients A and B finished the round"

# ---- 4. the client's output cap ----
# Client X may queue 64 KiB, less than its update (0.24 MB of 2nn FedPara
# at once): it cuts that connection with a clear line and reconnects; the
# coordinator goes on and ends the round with client Y's update.
timeout 60 "$S" run --listen 127.0.0.1:0 --insecure --model 2nn --rounds 1 --min-clients 2 \
	--min-report 1 --round-timeout 20 >"$TMP/s4.out" 2>"$TMP/s4.err" &
SPID=$!
await_port s4 $SPID
timeout 40 "$C" run --server 127.0.0.1:$PORT --insecure --num-clients 8 --client-index 0 --limit 100 \
	--data-path "$DATA" --max-output 65536 --backoff-min 0.05 --backoff-max 0.2 --max-attempts 3 \
	>"$TMP/c4x.out" 2>"$TMP/c4x.err" &
cx=$!
timeout 40 "$C" run --server 127.0.0.1:$PORT --insecure --num-clients 8 --client-index 1 --limit 100 \
	--data-path "$DATA" >"$TMP/c4y.out" 2>"$TMP/c4y.err"; RC=$?
exited c4y 0 "" "4: client Y"
wait $cx; RC=$?
# X ends with the session when it is back before the round ends (0), or
# gives up on the coordinator that is gone by then (1)
[ $RC = 0 ] || [ $RC = 1 ] || fail "4: client X exit $RC"
wait $SPID || fail "4: server exit $?"
grep -q "server 127.0.0.1:$PORT: [0-9]* bytes queued, over the output cap of 65536: connection cut" \
	"$TMP/c4x.err" || fail "4: client X has no output cap line"
grep -q "reconnecting to 127.0.0.1:$PORT" "$TMP/c4x.err" || fail "4: client X did not reconnect"
grep -q "^round 1/1 selected 2 reported 1" "$TMP/s4.out" || fail "4: the round did not end with Y's update"
echo "ok 4: client X cut its connection at its output cap and reconnected; the round ended with Y"

# ---- 5. a peer that stops reading: the others go on, it is cut ----
timeout 60 "$S" run --listen 127.0.0.1:0 --insecure --model 2nn --param loha \
	--base "$TMP/base/model.safetensors" --rounds 1 --min-clients 3 --min-report 2 \
	--round-timeout 30 --write-timeout 8 --debug-tensors --log-level debug \
	>"$TMP/s5.out" 2>"$TMP/s5.err" &
SPID=$!
await_port s5 $SPID
timeout 40 python3 "$TESTS_DIR/raw_peer.py" stuck "$PORT" 50 >"$TMP/p5.out" 2>"$TMP/p5.err" &
PPID5=$!
sleep 0.5
cl c5a 0; ca=$CPID
cl c5b 1; cb=$CPID
wait $PPID5 || fail "5: $(cat "$TMP/p5.err")"
wait $ca || fail "5: client A exit $?"
wait $cb || fail "5: client B exit $?"
wait $SPID || fail "5: server exit $?"
CUT=$(grep -n "bytes not taken by the peer for 8000 ms (--write-timeout): connection cut" "$TMP/s5.err" |
	cut -d: -f1)
[ "$(echo "$CUT" | grep -c .)" = 1 ] || fail "5: not one write timeout line"
UP=$(grep -n "received tensor .* round 1" "$TMP/s5.err" | head -1 | cut -d: -f1)
[ -n "$UP" ] && [ "$UP" -lt "$CUT" ] || fail "5: no update arrived while the peer was stuck"
grep -q "^round 1/1 selected 3 reported 2" "$TMP/s5.out" || fail "5: the round did not end with A and B"
echo "ok 5: $(cat "$TMP/p5.out"); A and B sent their updates while it was stuck"

! grep -l "counted as closing after the last closed" "$TMP"/s*.err ||
	fail "the count of closing connections leaked"

echo "cli_transport_limits: all ok in $(($(date +%s) - START)) s"
