#!/usr/bin/env bash
# cli_tree.sh - aggregator trees over real TCP on 127.0.0.1, secure channel
# on every link (docs/DEPLOY.md "Aggregator trees"):
#   1. a flat root with 4 clients, then a root with 2 mid-tiers (fedloha-server
#      run --upstream) of 2 of the same clients each, same seed, full
#      participation, 3 rounds: the final model files are identical byte for
#      byte (the mid-tiers forward exact fixed-point partial sums), and so
#      are the held-out and federated evaluation figures the root prints
#   2. a mid-tier started with another model (--gamma) or --seed is refused
#      with a clear error (exit 1), so is one the root does not list in
#      --tier-ids (its partial sum is refused), and bad flags exit 2
#   3. a client of a mid-tier stalls (SIGSTOP): its mid-tier forwards the
#      other client's update at its own deadline, before the root's, and the
#      tree completes
#   4. a mid-tier killed (SIGKILL) after round 1 and restarted: its clients
#      reconnect, it rejoins, the root retries the round, and the final model
#      is still the flat run's
#   5. the root killed after round 1 and restarted from its checkpoint: the
#      mid-tiers reconnect, the final model is still the flat run's
#   6. three levels (a mid-tier under a mid-tier) with clients at every
#      level: still the flat run's model
#   7. loha with a frozen base (each mid-tier started with it serves it to
#      its clients): still the flat run's model
# Every process runs under timeout(1); the trap kills what is left.
set -u
umask 022
. "$(dirname "$0")/cli_lib.sh"
daemon_setup cli_tree 8
START=$(date +%s)
S="$BIN/fedloha-server"
C="$BIN/fedloha-client"

SPUB=$("$S" keygen --out "$TMP/root.key" 2>/dev/null) || fail "root keygen"
: >"$TMP/root_allow.txt"
for m in 0 1; do
	MPUB[$m]=$("$S" keygen --out "$TMP/tier$m.key" 2>/dev/null) || fail "tier keygen"
	echo "${MPUB[$m]} tier-$m" >>"$TMP/root_allow.txt"
	: >"$TMP/tier${m}_allow.txt"
done
for i in 0 1 2 3; do
	pub=$("$C" keygen --out "$TMP/client$i.key" 2>/dev/null) || fail "client keygen"
	echo "$pub client-$i" >>"$TMP/root_allow.txt"
	echo "$pub client-$i" >>"$TMP/tier$((i / 2))_allow.txt"
done

MODEL=(--model 2nn --param fedpara --gamma 0.2 --seed 7 --epochs 1 --lr 0.1 --lr-decay 0.9
	--batch 32)
LIMIT=1500
# start_root NAME ARGS...: sets PORT and RPID.
start_root() {
	local name=$1; shift
	: >"$TMP/$name.out" # await_port reads it at once
	timeout 60 "$S" run --listen 127.0.0.1:${RPORT:-0} --key "$TMP/root.key" \
		--allow "$TMP/root_allow.txt" "${MODEL[@]}" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
	RPID=$!
	await_port "$name" $RPID
}
# start_tier NAME M ARGS...: mid-tier M under the root at $RPORT; sets PORT and TPID.
start_tier() {
	local name=$1 m=$2; shift 2
	: >"$TMP/$name.out"
	timeout 60 "$S" run --listen 127.0.0.1:${TPORT:-0} --key "$TMP/tier$m.key" \
		--allow "$TMP/tier${m}_allow.txt" --upstream 127.0.0.1:$RPORT --upstream-key "$SPUB" \
		--upstream-id tier-$m --min-clients 2 "${MODEL[@]}" "$@" \
		>"$TMP/$name.out" 2>"$TMP/$name.err" &
	TPID=$!
	await_port "$name" $TPID
}
# start_client NAME INDEX PORT SERVER_PUB ARGS...: sets CPID.
start_client() {
	local name=$1 idx=$2 port=$3 pub=$4; shift 4
	timeout 60 "$C" run --server 127.0.0.1:$port --data-path "$DATA" --num-clients 4 \
		--client-index "$idx" --seed 3 --limit $LIMIT --backoff-min 0.05 --backoff-max 0.3 \
		--key "$TMP/client$idx.key" --server-key "$pub" "$@" \
		>"$TMP/$name.out" 2>"$TMP/$name.err" &
	CPID=$!
}
# tree NAME ROOT_ARGS...: root + 2 mid-tiers + 2 clients each, in the
# background (client i's --state-dir $CSTATE$i when CSTATE is set); sets
# RPID, RPORT, TP[m] (mid-tier ports), TPIDS[m], CPIDS[i].
tree() {
	local name=$1; shift
	start_root "${name}_root" --min-clients 2 --tier-ids tier-0,tier-1 "$@"
	RPORT=$PORT
	for m in 0 1; do
		start_tier "${name}_tier$m" $m
		TP[$m]=$PORT
		TPIDS[$m]=$TPID
	done
	for i in 0 1 2 3; do
		m=$((i / 2))
		local extra=()
		[ -n "${CSTATE:-}" ] && extra=(--state-dir "$CSTATE$i")
		start_client "${name}_c$i" $i "${TP[$m]}" "${MPUB[$m]}" "${extra[@]}"
		CPIDS[$i]=$CPID
	done
}
# tree_wait NAME: the root, the mid-tiers and the clients all exit 0.
tree_wait() {
	wait $RPID || fail "$1: root exit $?"
	for m in 0 1; do wait "${TPIDS[$m]}" || fail "$1: mid-tier $m exit $?"; done
	for i in 0 1 2 3; do wait "${CPIDS[$i]}" || fail "$1: client $i exit $?"; done
}
kill9() { local kids; kids=$(pgrep -P "$1"); [ -n "$kids" ] && kill -9 $kids; }
# wait_idle SECS PID...: the processes under these timeout(1) pids used no
# CPU for 0.6 s (no training job runs: a waiting client only sleeps), or 1
# after SECS.
cpu() { local t=0 k; for k in $(pgrep -P "$1"); do
	t=$((t + $(awk '{ print $14 + $15 }' "/proc/$k/stat" 2>/dev/null || echo 0))); done; echo $t; }
wait_idle() {
	local secs=$1 last= now same=0 p; shift
	for _ in $(seq $((secs * 5))); do
		now=; for p in "$@"; do now="$now $(cpu "$p")"; done
		if [ "$now" = "$last" ]; then same=$((same + 1)); [ $same -ge 3 ] && return 0; else same=0; fi
		last=$now
		sleep 0.2
	done
	return 1
}
ROUNDS=(--rounds 3 --round-timeout 20)

# ---- 1. the tree's model is the flat run's, byte for byte ----
start_root flat --min-clients 4 "${ROUNDS[@]}" --eval-every 3 --out "$TMP/flat"
for i in 0 1 2 3; do start_client flat_c$i $i $PORT "$SPUB"; pids[$i]=$CPID; done
wait $RPID || fail "1: flat root exit $?"
for i in 0 1 2 3; do wait "${pids[$i]}" || fail "1: flat client $i exit $?"; done
unset RPORT
tree t1 "${ROUNDS[@]}" --eval-every 3 --out "$TMP/tree"
tree_wait 1
cmp "$TMP/flat/model.safetensors" "$TMP/tree/model.safetensors" ||
	fail "1: the tree's final model differs from the flat run's"
for r in 1 2 3; do
	grep -q "^round $r/3 selected 2 reported 2 dropped 0 rejected 0 attempts 1 examples 5400 " \
		"$TMP/t1_root.out" || fail "1: root round $r: $(grep "^round $r/" "$TMP/t1_root.out")"
	for m in 0 1; do
		grep -q "^round $r selected 2 reported 2 dropped 0 " "$TMP/t1_tier$m.out" ||
			fail "1: mid-tier $m round $r: $(grep "^round $r " "$TMP/t1_tier$m.out")"
	done
done
grep -q "train-loss" "$TMP/t1_root.out" || fail "1: no training loss at the root"
# the training means travel with the partial sums: the printed figures match
tl() { sed -n 's/^round \([0-9]*\)\/3 .*\(train-loss [0-9.]* train-acc [0-9.]*\).*/\1 \2/p' "$1"; }
[ -n "$(tl "$TMP/flat.out")" ] && [ "$(tl "$TMP/flat.out")" = "$(tl "$TMP/t1_root.out")" ] ||
	fail "1: training figures differ: flat '$(tl "$TMP/flat.out")', tree '$(tl "$TMP/t1_root.out")'"
# the clients' held-out figures travel with the partial sums: the same lines as flat
[ "$(grep -c "post-train holdout-acc .* clients 4$" "$TMP/t1_root.out")" = 3 ] &&
	[ "$(grep post-train "$TMP/flat.out")" = "$(grep post-train "$TMP/t1_root.out")" ] ||
	fail "1: held-out lines differ: $(grep post-train "$TMP/flat.out" "$TMP/t1_root.out")"
# federated evaluation through the mid-tiers: the same figures (a mid-tier
# counts as one evaluating client)
ev() { sed -n 's/^round 3 federated \(eval-acc [0-9.]* eval-loss [0-9.]*\) clients \([0-9]*\)$/\1 \2/p' "$1"; }
[ -n "$(ev "$TMP/flat.out")" ] && [ "$(ev "$TMP/flat.out")" = "$(ev "$TMP/t1_root.out" | sed 's/ 2$/ 4/')" ] ||
	fail "1: federated evaluation differs: flat '$(ev "$TMP/flat.out")', tree '$(ev "$TMP/t1_root.out")'"
[ "$(grep -c "secure channel up, client key" "$TMP/t1_root.err")" = 2 ] ||
	fail "1: the root did not see 2 mid-tiers over the secure channel"
grep -q "connected to 127.0.0.1:$RPORT: secure channel up" "$TMP/t1_tier0.err" ||
	fail "1: mid-tier 0 did not reach the root over the secure channel"
sha=$(sha256sum <"$TMP/tree/model.safetensors" | cut -c1-16)
echo "ok 1: root + 2 mid-tiers x 2 clients = flat root x 4 clients after 3 rounds (model sha256 $sha...)"

# ---- 2. a mid-tier with another model or seed is refused; bad flags ----
start_root s2 --min-clients 1 --rounds 1 --round-timeout 20
RPORT=$PORT
for what in gamma seed notier; do
	: >"$TMP/s2_$what.out"
	timeout 20 "$S" run --listen 127.0.0.1:0 --key "$TMP/tier0.key" --allow "$TMP/tier0_allow.txt" \
		--upstream 127.0.0.1:$RPORT --upstream-key "$SPUB" --upstream-id tier-0 --min-clients 1 \
		"${MODEL[@]}" $([ $what = gamma ] && echo --gamma 0.3) $([ $what = seed ] && echo --seed 8) \
		>"$TMP/s2_$what.out" 2>"$TMP/s2_$what.err" &
	TPID=$!
	await_port s2_$what $TPID
	start_client s2_c_$what 0 $PORT "${MPUB[0]}" --max-attempts 3
	wait $TPID; RC=$?
	want="the parent's model is not this node's: the PEFT config"
	[ $what = seed ] && want="the parent's seed 7 is not this node's --seed 8"
	[ $what = notier ] && want="the parent takes no partial sums from 'tier-0' (list it in the parent's --tier-ids)"
	exited s2_$what 1 "$want" "2: mid-tier with another $what"
	wait $CPID
done
kill $RPID 2>/dev/null; wait $RPID 2>/dev/null
# a mid-tier whose parent is gone stops after --upstream-max-attempts
# failed connects (exit 1); its client, cut off, then ends by its own
# --max-attempts
: >"$TMP/s2_gone.out"
timeout 30 "$S" run --listen 127.0.0.1:0 --key "$TMP/tier0.key" --allow "$TMP/tier0_allow.txt" \
	--upstream 127.0.0.1:$RPORT --upstream-key "$SPUB" --upstream-id tier-0 --min-clients 1 \
	--upstream-max-attempts 2 "${MODEL[@]}" >"$TMP/s2_gone.out" 2>"$TMP/s2_gone.err" &
TPID=$!
await_port s2_gone $TPID
start_client s2_c_gone 0 $PORT "${MPUB[0]}" --max-attempts 3
wait $TPID; RC=$?
exited s2_gone 1 "the link to the parent 127.0.0.1:$RPORT stopped" "2: parent gone"
wait $CPID
grep -q "gave up after 0 training rounds" "$TMP/s2_c_gone.out" ||
	fail "2: the mid-tier's client did not end"
# a --tier-ids id no allow-listed key is bound to: refused at start
timeout 10 "$S" run --listen 127.0.0.1:0 --key "$TMP/root.key" --allow "$TMP/root_allow.txt" \
	"${MODEL[@]}" --tier-ids tier-0,tier-9 >/dev/null 2>"$TMP/s2_unbound.err"; RC=$?
exited s2_unbound 1 "mid-tier id 'tier-9' (--tier-ids) is not bound to a key" "2: unbound tier id"
for bad in "--upstream 127.0.0.1 --upstream-id x --insecure|expected HOST:PORT" \
	"--upstream 127.0.0.1:1 --insecure|needs --upstream-id" \
	"--upstream 127.0.0.1:1 --upstream-id x --key $TMP/tier0.key --allow $TMP/tier0_allow.txt|needs --upstream-key" \
	"--upstream 127.0.0.1:1 --upstream-id x --insecure --checkpoint $TMP/ck|checkpoint the root" \
	"--upstream 127.0.0.1:1 --upstream-id x --upstream-key fl1:nope --key $TMP/tier0.key --allow $TMP/tier0_allow.txt|--upstream-key" \
	"--insecure --tier-ids a,,b|--tier-ids: mid-tier ids: '' is not a client id" \
	"--insecure --upstream-rate 0|--upstream-rate" \
	"--insecure --upstream-max-attempts -1|--upstream-max-attempts"; do
	timeout 10 "$S" run --listen 127.0.0.1:0 ${bad%%|*} >/dev/null 2>"$TMP/s2_bad.err"; RC=$?
	exited s2_bad 2 "${bad##*|}" "2: '${bad%%|*}'"
	[ "$(wc -l <"$TMP/s2_bad.err")" -le 2 ] || fail "2: '${bad%%|*}': more than one line: $(cat "$TMP/s2_bad.err")"
done
echo "ok 2: a mid-tier with another model or seed, or under a root without it in --tier-ids, refused (exit 1, says why); a mid-tier whose parent is gone stops after --upstream-max-attempts; an unbound --tier-ids id refused; bad flags exit 2"

# ---- 3. a stalled client of a mid-tier: its subtree forwards what it got ----
# Client 1 is stopped (SIGSTOP) once welcomed by mid-tier 0, before mid-tier
# 1 exists, so the first round reaches it stalled.
unset RPORT
start_root t3_root --min-clients 2 --rounds 2 --round-timeout 20 --tier-ids tier-0,tier-1
RPORT=$PORT
start_tier t3_tier0 0 --round-timeout 3
TPIDS[0]=$TPID
for i in 0 1; do start_client t3_c$i $i $PORT "${MPUB[0]}"; CPIDS[$i]=$CPID; done
wait_for "$TMP/t3_tier0.err" "clients ready: connecting to the parent" 20 || fail "3: mid-tier 0 not ready"
stalled=$(pgrep -P "${CPIDS[1]}")
kill -STOP $stalled
start_tier t3_tier1 1
TPIDS[1]=$TPID
for i in 2 3; do start_client t3_c$i $i $PORT "${MPUB[1]}"; CPIDS[$i]=$CPID; done
wait $RPID || fail "3: root exit $?"
kill -9 $stalled; wait "${CPIDS[1]}" 2>/dev/null
for p in "${TPIDS[@]}" "${CPIDS[0]}" "${CPIDS[2]}" "${CPIDS[3]}"; do wait $p || fail "3: exit $?"; done
grep -q "^round 1/2 selected 2 reported 2 dropped 0 rejected 0 attempts 1 examples 4050 " "$TMP/t3_root.out" ||
	fail "3: root round 1: $(grep "^round 1/" "$TMP/t3_root.out")"
grep -q "^round 2/2 selected 2 reported 2 dropped 0 " "$TMP/t3_root.out" ||
	fail "3: root round 2: $(grep "^round 2/" "$TMP/t3_root.out")"
# the round ended at the 3 s deadline, not before (a lower bound only: a
# loaded or sanitised run may take longer)
grep -qE "^round 1 selected 2 reported 1 dropped 0 rejected 0 attempts 1 examples 1350 " \
	"$TMP/t3_tier0.out" || fail "3: mid-tier 0 round 1: $(grep "^round 1 " "$TMP/t3_tier0.out")"
secs=$(sed -n 's/^round 1 selected .* \([0-9.]*\)s$/\1/p' "$TMP/t3_tier0.out")
awk -v s="$secs" 'BEGIN { exit !(s != "" && s >= 2.9) }' ||
	fail "3: mid-tier 0 round 1 took '$secs' s, before its 3 s deadline"
grep -qE "^round 2 selected 1 reported 1 " "$TMP/t3_tier0.out" ||
	fail "3: mid-tier 0 round 2: $(grep "^round 2 " "$TMP/t3_tier0.out")"
echo "ok 3: a stalled client's mid-tier forwarded 1 of 2 updates at its 3 s deadline; the tree completed"

# ---- 4. a mid-tier killed and restarted rejoins; same model as flat ----
unset RPORT
tree t4 "${ROUNDS[@]}" --max-retries 20 --min-report 2 --out "$TMP/t4"
wait_for "$TMP/t4_root.out" "^round 1/3" 20 || fail "4: round 1 never ended"
kill9 "${TPIDS[1]}"; wait "${TPIDS[1]}" 2>/dev/null
# Its clients finish the round they were training (as fast as mid-tier 0's,
# which then reports it) before it is back: a client that reconnects while
# its job still runs refuses the next task and is dropped, and the round
# would then lack it, as it would under a flat coordinator.
wait_for "$TMP/t4_tier0.out" "^round 2 " 20 || fail "4: mid-tier 0 did not report round 2"
wait_idle 20 "${CPIDS[2]}" "${CPIDS[3]}" || fail "4: mid-tier 1's clients still busy"

TPORT=${TP[1]} start_tier t4_tier1b 1
TPIDS[1]=$TPID
tree_wait 4
grep -q "clients ready: connecting to the parent" "$TMP/t4_tier1b.err" || fail "4: the restarted mid-tier did not rejoin"
grep -q "^round 3/3 selected 2 reported 2" "$TMP/t4_root.out" || fail "4: round 3 not reported by both mid-tiers"
cmp "$TMP/flat/model.safetensors" "$TMP/t4/model.safetensors" ||
	fail "4: the final model differs from the flat run's"
echo "ok 4: a mid-tier killed after round 1 rejoined ($(grep -c "attempts [2-9]" "$TMP/t4_root.out") round(s) retried); final model = flat"

# ---- 5. the root restarted from its checkpoint; same model as flat ----
unset RPORT
CK="$TMP/ck/root.ckpt"
tree t5 "${ROUNDS[@]}" --max-retries 20 --min-report 2 --checkpoint "$CK" --out "$TMP/t5"
wait_for "$TMP/t5_root.out" "^round 1/3" 20 || fail "5: round 1 never ended"
kill9 $RPID; wait $RPID 2>/dev/null
[ -s "$CK" ] || fail "5: no root checkpoint after round 1"
RPORT=$RPORT start_root t5_rootb --min-clients 2 --tier-ids tier-0,tier-1 "${ROUNDS[@]}" --max-retries 20 --min-report 2 \
	--checkpoint "$CK" --out "$TMP/t5"
tree_wait 5
grep -q "resumed from .* after round [12]" "$TMP/t5_rootb.err" || fail "5: the root did not resume"
cmp "$TMP/flat/model.safetensors" "$TMP/t5/model.safetensors" ||
	fail "5: the final model differs from the flat run's"
echo "ok 5: root restarted from its checkpoint after round $(sed -n 's/.*after round \([0-9]*\).*/\1/p' "$TMP/t5_rootb.err"); mid-tiers reconnected; final model = flat"

# ---- 6. three levels, clients at every level; same model as flat ----
# root <- {tier-0, client-3}; tier-0 <- {tier-1, client-2}; tier-1 <- {client-0, client-1}
unset RPORT TPORT
echo "${MPUB[1]} tier-1" >"$TMP/tierA_allow.txt"
grep " client-2$" "$TMP/root_allow.txt" >>"$TMP/tierA_allow.txt"
start_root t6_root --min-clients 2 --tier-ids tier-0 "${ROUNDS[@]}" --out "$TMP/t6"
RPORT=$PORT
: >"$TMP/t6_a.out"
: >"$TMP/t6_b.out"
timeout 60 "$S" run --listen 127.0.0.1:0 --key "$TMP/tier0.key" --allow "$TMP/tierA_allow.txt" \
	--tier-ids tier-1 --upstream 127.0.0.1:$RPORT --upstream-key "$SPUB" --upstream-id tier-0 \
	--min-clients 2 "${MODEL[@]}" >"$TMP/t6_a.out" 2>"$TMP/t6_a.err" &
TPIDS[0]=$!
await_port t6_a ${TPIDS[0]}
APORT=$PORT
timeout 60 "$S" run --listen 127.0.0.1:0 --key "$TMP/tier1.key" --allow "$TMP/tier0_allow.txt" \
	--upstream 127.0.0.1:$APORT --upstream-key "${MPUB[0]}" --upstream-id tier-1 \
	--min-clients 2 "${MODEL[@]}" >"$TMP/t6_b.out" 2>"$TMP/t6_b.err" &
TPIDS[1]=$!
await_port t6_b ${TPIDS[1]}
for i in 0 1; do start_client t6_c$i $i $PORT "${MPUB[1]}"; CPIDS[$i]=$CPID; done
start_client t6_c2 2 $APORT "${MPUB[0]}"; CPIDS[2]=$CPID
start_client t6_c3 3 $RPORT "$SPUB"; CPIDS[3]=$CPID
tree_wait 6
cmp "$TMP/flat/model.safetensors" "$TMP/t6/model.safetensors" ||
	fail "6: the three-level tree's final model differs from the flat run's"
grep -q "^round 3/3 selected 2 reported 2 dropped 0 rejected 0 attempts 1 examples 5400 " "$TMP/t6_root.out" ||
	fail "6: root round 3: $(grep "^round 3/" "$TMP/t6_root.out")"
grep -q "^round 3 selected 2 reported 2 .* examples 4050 " "$TMP/t6_a.out" ||
	fail "6: middle tier round 3: $(grep "^round 3 " "$TMP/t6_a.out")"
echo "ok 6: three levels (a mid-tier under a mid-tier, clients at every level) = flat"

# ---- 7. loha: the mid-tiers serve the frozen base to their clients ----
timeout 30 "$C" train --model 2nn --param dense --epochs 1 --limit 300 --data-path "$DATA" \
	--out "$TMP/base" >"$TMP/t7_base.out" 2>"$TMP/t7_base.err" || fail "7: base training"
MODEL=(--model 2nn --param loha --base "$TMP/base/model.safetensors" --seed 1)
ROUNDS=(--rounds 2 --round-timeout 20)
LIMIT=300
unset RPORT TPORT
start_root t7_flat --min-clients 4 "${ROUNDS[@]}" --out "$TMP/t7_flat"
for i in 0 1 2 3; do
	start_client t7_flat_c$i $i $PORT "$SPUB" --state-dir "$TMP/t7_flat_st$i"
	pids[$i]=$CPID
done
wait $RPID || fail "7: flat root exit $?"
for i in 0 1 2 3; do wait "${pids[$i]}" || fail "7: flat client $i exit $?"; done
CSTATE="$TMP/t7_st" tree t7 "${ROUNDS[@]}" --out "$TMP/t7_tree"
tree_wait 7
cmp "$TMP/t7_flat/model.safetensors" "$TMP/t7_tree/model.safetensors" ||
	fail "7: the loha tree's final model differs from the flat run's"
cmp "$TMP/t7_st0/base.safetensors" "$TMP/base/model.safetensors" ||
	fail "7: client 0 did not fetch the base from its mid-tier"
echo "ok 7: loha with a frozen base (fetched from the mid-tiers): tree = flat"

echo "cli_tree: all ok in $(($(date +%s) - START)) s"
