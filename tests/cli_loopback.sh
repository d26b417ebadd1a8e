#!/usr/bin/env bash
# cli_loopback.sh - fedloha-server and fedloha-client daemons over real TCP on
# 127.0.0.1 (port 0: the server prints the port it got), over the secure
# channel: keys made with keygen, the allow-list written from the printed
# public keys (names client-0..3 = the clients' ids):
#   0. bad start-up options are refused at once (exit 2 / 1, one line)
#   1. 4 clients, 3 rounds of 2nn fedpara: central test accuracy rises
#   2. pFedPara: only global tensors (hada_w1_*) travel; bytes match the size
#   3. a client killed with SIGKILL mid-round: the round ends with the quorum
#   4. the server killed with SIGKILL and restarted on its checkpoint (in a
#      folder it creates at start) resumes
#      and ends with the same model bytes as run 1 (same seed, no restart)
#   5. oversized length, garbage and a silent half-frame sender are each
#      closed (the first two told why in plaintext; the last at the
#      handshake timeout) while the real clients carry on
#   6. loha with a base and empty state folders: the clients fetch the base
#      before their first task (no retried round, no protocol error); 6b.
#      the server started from --init serves it as the base, and clients
#      given the same --init load it without a fetch
#   7. the coordinator's --dtype f16 reaches a client without its own --dtype
#      (updates of 2 bytes per value); the client's --dtype f32 wins
# Every process runs under timeout(1); the trap kills what is left.
set -u
. "$(dirname "$0")/cli_lib.sh"
daemon_setup cli_loopback 15
START=$(date +%s)

# Keys: the coordinator's, one per client index, and the allow-list.
SPUB=$("$BIN/fedloha-server" keygen --out "$TMP/server.key" 2>/dev/null) || fail "server keygen"
for i in 0 1 2 3; do
	pub=$("$BIN/fedloha-client" keygen --out "$TMP/client$i.key" 2>/dev/null) || fail "client keygen"
	echo "$pub client-$i" >>"$TMP/allow.txt"
done
SEC=(--key "$TMP/server.key" --allow "$TMP/allow.txt")

# start_server NAME ARGS...: background server; sets PORT and SPID.
start_server() {
	local name=$1; shift
	timeout 40 "$BIN/fedloha-server" run --listen 127.0.0.1:0 --data-path "$DATA" "${SEC[@]}" "$@" \
		>"$TMP/$name.out" 2>"$TMP/$name.err" &
	SPID=$!
	await_port "$name" $SPID
}
# start_client NAME INDEX ARGS...: sets CPID.
start_client() {
	local name=$1 idx=$2; shift 2
	timeout 40 "$BIN/fedloha-client" run --server 127.0.0.1:$PORT --data-path "$DATA" \
		--num-clients 4 --client-index "$idx" --seed 3 --backoff-min 0.05 --backoff-max 0.3 \
		--key "$TMP/client$idx.key" --server-key "$SPUB" \
		"$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
	CPID=$!
}
# kill9 PID: SIGKILL the daemon that the timeout(1) process PID runs.
kill9() { local kids; kids=$(pgrep -P "$1"); [ -n "$kids" ] && kill -9 $kids; }
central_acc() { sed -n "s/^round $2 central test-acc \([0-9.]*\).*/\1/p" "$TMP/$1.out"; }

COMMON=(--model 2nn --param fedpara --gamma 0.2 --rounds 3 --min-clients 4 --seed 7
	--epochs 1 --lr 0.1 --batch 32 --round-timeout 20 --eval-data fashion-mnist
	--eval-limit 1000)

# ---- 0. a server optimiser setting the strategy would ignore is refused ----
timeout 10 "$BIN/fedloha-server" run --listen 127.0.0.1:0 "${SEC[@]}" --server-lr 0.5 \
	>"$TMP/s0.out" 2>"$TMP/s0.err"
[ $? -eq 2 ] || fail "0: --server-lr with fedavg not refused"
grep -q "server-lr has no effect with --strategy fedavg" "$TMP/s0.err" || fail "0: no reason given"

# ---- 0b. a checkpoint folder that cannot be made is refused at start ----
: >"$TMP/plainfile"
timeout 10 "$BIN/fedloha-server" run --listen 127.0.0.1:0 "${SEC[@]}" \
	--checkpoint "$TMP/plainfile/ck.safetensors" >"$TMP/s0b.out" 2>"$TMP/s0b.err"
[ $? -eq 1 ] || fail "0b: unusable --checkpoint folder not refused with exit 1"
[ "$(wc -l <"$TMP/s0b.err")" = 1 ] && grep -q "^fedloha-server: --checkpoint: .*plainfile: not a folder$" "$TMP/s0b.err" ||
	fail "0b: not one clear line: $(cat "$TMP/s0b.err")"
grep -q "listening" "$TMP/s0b.out" && fail "0b: the server started listening"

# ---- 1. four clients, three rounds, accuracy rises ----
start_server s1 "${COMMON[@]}" --out "$TMP/model_a"
pids=()
for i in 0 1 2 3; do start_client c1_$i $i --limit 800; pids+=($CPID); done
wait $SPID || fail "1: server exit $?"
for p in "${pids[@]}"; do wait "$p" || fail "1: a client exited $?"; done
a1=$(central_acc s1 1); a3=$(central_acc s1 3)
[ -n "$a1" ] && [ -n "$a3" ] || fail "1: no central accuracy lines"
awk -v a="$a1" -v b="$a3" 'BEGIN { exit !(b > a && b > 0.55) }' || fail "1: accuracy $a1 -> $a3"
grep -q "^round 3/3 selected 4 reported 4" "$TMP/s1.out" || fail "1: round 3 not reported by 4"
# the clients hold 10% out by default and report it after training
grep -qE "^round 3 post-train holdout-acc 0\.[0-9]{4} holdout-loss [0-9.]+ clients 4$" "$TMP/s1.out" ||
	fail "1: no post-training held-out accuracy: $(grep post-train "$TMP/s1.out")"
grep -q "finished after 3 training rounds" "$TMP/c1_0.out" || fail "1: client 0 not finished"
grep -q "secure channel up" "$TMP/c1_0.err" || fail "1: client 0 did not use the secure channel"
[ "$(grep -c "secure channel up, client key" "$TMP/s1.err")" = 4 ] || fail "1: not 4 secure channels"
# frames (protocol bytes) against socket bytes (records, handshakes)
read -r fu fd si so hi ho < <(sed -n 's/^socket bytes in \([0-9]*\) out \([0-9]*\) (frames up \([0-9]*\) down \([0-9]*\); handshakes in \([0-9]*\) out \([0-9]*\).*/\3 \4 \1 \2 \5 \6/p' "$TMP/s1.out")
[ -n "$fu" ] && [ "$si" -gt "$fu" ] && [ "$so" -gt "$fd" ] || fail "1: socket bytes not above frame bytes"
echo "ok 1: 4 clients, 3 rounds, central accuracy $a1 -> $a3; frames up $fu down $fd, socket in $si out $so (handshakes $hi in, $ho out)"

# ---- 2. pFedPara: only the global half on the wire ----
start_server s2 --model 2nn --param pfedpara --gamma 0.2 --rounds 1 --min-clients 2 --seed 1 \
	--round-timeout 20 --log-level debug
for i in 0 1; do start_client c2_$i $i --limit 200 --log-level debug --state-dir "$TMP/state$i"; pids[$i]=$CPID; done
wait $SPID || fail "2: server exit $?"
wait "${pids[0]}" && wait "${pids[1]}" || fail "2: a client failed"
grep -q "sent tensor fc1.hada_w1_a" "$TMP/c2_0.err" || fail "2: no global tensor logged as sent"
if grep -E "(sent|received) tensor [^ ]*hada_w2" "$TMP"/c2_*.err "$TMP/s2.err"; then
	fail "2: a local pFedPara tensor (hada_w2_*) went over the wire"
fi
[ -s "$TMP/state0/local.safetensors" ] || fail "2: local tensors not persisted"
g=$(sed -n 's/.* \([0-9]*\) transmitted.*/\1/p' "$TMP/s2.out")
up=$(sed -n 's/^round 1\/1 .* up \([0-9]*\) down.*/\1/p' "$TMP/s2.out")
# two updates of g f32 values each plus framing (< 4 KiB per update)
awk -v g="$g" -v u="$up" 'BEGIN { exit !(u >= 8*g && u < 8*g + 8192) }' ||
	fail "2: $up bytes up for 2 updates of $g floats"
echo "ok 2: pfedpara sent only global tensors ($up bytes up for 2 x $g floats)"

# ---- 3. a client killed mid-round; the quorum carries the round ----
start_server s3 --model 2nn --param fedpara --rounds 2 --min-clients 4 --min-report 3 \
	--round-timeout 20 --seed 2
for i in 0 1 2; do start_client c3_$i $i --limit 300; pids[$i]=$CPID; done
start_client c3_3 3 --limit 12000 --log-level debug  # slow: still training when killed
slow=$CPID
wait_for "$TMP/c3_3.err" "received tensor .* round 2" 20 || fail "3: round 2 never reached client 3"
kill9 $slow
wait $SPID || fail "3: server exit $?"
grep -q "^round 2/2 selected 4 reported 3 dropped 1" "$TMP/s3.out" || fail "3: round 2 not closed by quorum"
for i in 0 1 2; do wait "${pids[$i]}" || fail "3: client $i exited $?"; done
echo "ok 3: killed client dropped, round 2 aggregated with 3 of 4"

# ---- 4. server SIGKILL + restart from the checkpoint, same final model ----
CK="$TMP/ckdir/sub/ck.safetensors" # a missing folder is made at start
start_server s4a "${COMMON[@]}" --checkpoint "$CK" --out "$TMP/model_b"
for i in 0 1 2 3; do start_client c4_$i $i --limit 800; pids[$i]=$CPID; done
wait_for "$TMP/s4a.out" "^round 1/3" 20 || fail "4: round 1 never ended"
kill9 $SPID; wait $SPID 2>/dev/null
[ -s "$CK" ] || fail "4: no checkpoint after round 1"
start_server s4b "${COMMON[@]}" --checkpoint "$CK" --out "$TMP/model_b" --listen 127.0.0.1:$PORT
wait $SPID || fail "4: restarted server exit $?"
grep -q "resumed from .* after round [12]" "$TMP/s4b.err" || fail "4: did not resume"
grep -q "^round 3/3" "$TMP/s4b.out" || fail "4: round 3 not run after the restart"
for i in 0 1 2 3; do wait "${pids[$i]}" || fail "4: client $i exited $?"; done
cmp "$TMP/model_a/model.safetensors" "$TMP/model_b/model.safetensors" ||
	fail "4: final model differs from the run without restart"
echo "ok 4: resumed after $(sed -n 's/.*after round \([0-9]*\).*/\1/p' "$TMP/s4b.err"), final model identical"

# ---- 5. malformed input over a real socket ----
start_server s5 --model 2nn --rounds 1 --min-clients 3 --round-timeout 20 --heartbeat 0.3 \
	--idle-timeout 1.5 --max-frame 65536 --handshake-timeout 1.5
for i in 0 1; do start_client c5_$i $i --limit 200; pids[$i]=$CPID; done
for _ in $(seq 200); do
	[ "$(grep -c "secure channel up" "$TMP/s5.err")" -ge 2 ] && break
	sleep 0.05
done
[ "$(grep -c "secure channel up" "$TMP/s5.err")" -ge 2 ] || fail "5: clients did not connect"
exec 3<>/dev/tcp/127.0.0.1/$PORT # a length of 4 GiB - 1
printf '\xff\xff\xff\xff' >&3
timeout 5 cat <&3 >"$TMP/huge.bin" || fail "5: oversized frame: connection not closed"
[ -s "$TMP/huge.bin" ] || fail "5: oversized frame: no Error frame before the close"
grep -qa "secure channel" "$TMP/huge.bin" || fail "5: oversized frame: the Error does not say why"
exec 3<&-
exec 4<>/dev/tcp/127.0.0.1/$PORT # 16 bytes that are no protobuf Envelope
printf '\x00\x00\x00\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff' >&4
timeout 5 cat <&4 >"$TMP/garbage.bin" || fail "5: garbage: connection not closed"
[ -s "$TMP/garbage.bin" ] || fail "5: garbage: no Error frame before the close"
exec 4<&-
exec 5<>/dev/tcp/127.0.0.1/$PORT # half a header, then silence
printf '\x00\x00' >&5
t0=$(date +%s%N)
timeout 6 cat <&5 >/dev/null || fail "5: silent sender not dropped"
ms=$((($(date +%s%N) - t0) / 1000000))
[ $ms -ge 1000 ] || fail "5: silent sender dropped after $ms ms, before the handshake timeout"
grep -q "no secure handshake within 1500 ms" "$TMP/s5.err" || fail "5: no handshake timeout logged"
exec 5<&-
grep -q "over the limit\|over max\|too large\|exceeds" "$TMP/s5.err" || grep -q "closing" "$TMP/s5.err" ||
	fail "5: no log line for the closed connections"
kill -0 "${pids[0]}" && kill -0 "${pids[1]}" || fail "5: a real client died"
start_client c5_2 2 --limit 200
wait $SPID || fail "5: server exit $?"
grep -q "^round 1/1 selected 3 reported 3" "$TMP/s5.out" || fail "5: the round did not run"
for i in 0 1; do wait "${pids[$i]}" || fail "5: client $i exited $?"; done
echo "ok 5: oversized, garbage and silent connections closed (silent after $ms ms); round ran"

# ---- 6. loha: clients without the base fetch it before they are selected ----
timeout 30 "$BIN/fedloha-client" train --model 2nn --param dense --epochs 1 --limit 300 \
	--data-path "$DATA" --out "$TMP/loha_base" >"$TMP/t6.out" 2>"$TMP/t6.err" || fail "6: base training"
start_server s6 --model 2nn --param loha --base "$TMP/loha_base/model.safetensors" --rounds 2 \
	--min-clients 2 --round-timeout 20 --max-retries 1 --seed 1
for i in 0 1; do start_client c6_$i $i --limit 300 --state-dir "$TMP/lstate$i"; pids[$i]=$CPID; done
wait $SPID || fail "6: server exit $?"
for i in 0 1; do wait "${pids[$i]}" || fail "6: client $i exited $?"; done
for r in 1 2; do
	grep -q "^round $r/2 selected 2 reported 2 dropped 0 rejected 0 attempts 1 " "$TMP/s6.out" ||
		fail "6: round $r was not completed at the first attempt"
done
if grep -h "unexpected RoundTask\|BaseRequest is only allowed" "$TMP"/s6.err "$TMP"/c6_*.err; then
	fail "6: a task reached a client still fetching the base"
fi
cmp "$TMP/lstate0/base.safetensors" "$TMP/loha_base/model.safetensors" || fail "6: base not fetched"
echo "ok 6: loha clients fetched the base, then trained 2 rounds"

# ---- 6b. --init: the server starts from and serves the file, clients with
# the same --init load it without fetching ----
start_server s6i --model 2nn --param loha --init "$TMP/loha_base/model.safetensors" --rounds 1 \
	--min-clients 2 --round-timeout 20 --max-retries 1 --seed 1
for i in 0 1; do
	start_client c6i_$i $i --limit 300 --state-dir "$TMP/istate$i" \
		--init "$TMP/loha_base/model.safetensors"
	pids[$i]=$CPID
done
wait $SPID || fail "6b: server exit $?"
for i in 0 1; do wait "${pids[$i]}" || fail "6b: client $i exited $?"; done
grep -q "^round 1/1 selected 2 reported 2 dropped 0 rejected 0 attempts 1 " "$TMP/s6i.out" ||
	fail "6b: the round was not completed at the first attempt"
for i in 0 1; do
	[ ! -e "$TMP/istate$i/base.safetensors" ] || fail "6b: client $i fetched the base"
done
echo "ok 6b: server and clients started from --init, nothing fetched"

# ---- 7. --dtype f16 on the coordinator only ----
for want in f16 f32; do
	extra=(); [ $want = f32 ] && extra=(--dtype f32)
	start_server s7$want --model 2nn --param fedpara --gamma 0.2 --rounds 1 --min-clients 1 \
		--round-timeout 20 --seed 1 --dtype f16
	start_client c7$want 0 --limit 200 "${extra[@]}"
	wait $SPID || fail "7: server exit $?"
	wait $CPID || fail "7: client exit $?"
	g=$(sed -n 's/.* \([0-9]*\) transmitted.*/\1/p' "$TMP/s7$want.out")
	up=$(sed -n 's/^round 1\/1 .* up \([0-9]*\) down.*/\1/p' "$TMP/s7$want.out")
	per=2; [ $want = f32 ] && per=4
	awk -v g="$g" -v u="$up" -v p=$per 'BEGIN { exit !(u >= p*g && u < p*g + 4096) }' ||
		fail "7: client $want: $up bytes up for $g values"
done
echo "ok 7: --dtype f16 on the coordinator: a default client sent 2 bytes per value, --dtype f32 4"

echo "cli_loopback: all ok in $(($(date +%s) - START)) s"
