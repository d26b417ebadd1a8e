# faults_lib.sh - the pieces of tests/faults/run.sh (sourced; bash): keys,
# the namespaces and links (net_up / net_down), a supervisor that restarts
# a daemon like its systemd unit (supervise), the fault proxies, the kill
# schedule, the partition, and the checks of one scenario (check_rounds,
# same_tensors). Uses ID, P, OUT, BIN, NC, COORD, PXIP, PORT, SRV_FLAGS,
# CLI_FLAGS, KILLS and SEED from run.sh.

NSH=$P-hub
NSC=$P-coord
NSX=$P-px
nsk() { echo "$P-c$1"; }

keys() {
	SPUB=$("$BIN/fedloha-server" keygen --out "$OUT/server.key" --force 2>/dev/null) ||
		{ echo "run.sh: server keygen failed" >&2; exit 1; }
	: >"$OUT/allow.txt"
	for i in $(seq 0 $((NC - 1))); do
		local pub
		pub=$("$BIN/fedloha-client" keygen --out "$OUT/client$i.key" --force 2>/dev/null) ||
			{ echo "run.sh: client keygen failed" >&2; exit 1; }
		echo "$pub edge-$i" >>"$OUT/allow.txt"
	done
}

# attach NS IP NAME: a veth pair, v<ID>NAME in NS with IP, h<ID>NAME on the
# hub's bridge.
attach() {
	local ns=$1 ip=$2 name=$3
	ip netns add "$ns"
	ip -n "$ns" link set lo up
	ip -n "$ns" link add "v$ID$name" type veth peer name "h$ID$name" netns "$NSH"
	ip -n "$ns" addr add "$ip/24" dev "v$ID$name"
	ip -n "$ns" link set "v$ID$name" up
	ip -n "$NSH" link set "h$ID$name" master br0 up
}

net_up() {
	ip netns add "$NSH"
	ip -n "$NSH" link add br0 type bridge
	ip -n "$NSH" link set br0 up
	attach "$NSC" $COORD s
	attach "$NSX" $PXIP x
	for i in $(seq 0 $((NC - 1))); do attach "$(nsk $i)" 10.231.0.$((10 + i)) c$i; done
}

# Stops every process this run started (their pids are in OUT/*/*.pid and
# OUT/*/*.sup), then deletes the namespaces (their veths go with them).
net_down() {
	touch "$OUT/stop" 2>/dev/null
	local f
	for f in "$OUT"/*/*.sup "$OUT"/*/*.pid; do
		[ -e "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
	done
	wait 2>/dev/null
	for ns in "$NSH" "$NSC" "$NSX" $(for i in $(seq 0 $((NC - 1))); do nsk $i; done); do
		ip netns del "$ns" 2>/dev/null
	done
	rm -f "$OUT/stop"
}

# tbf_link NAME RATE: caps both directions of client link NAME.
tbf_link() {
	ip netns exec "$(nsk "${1#c}")" tc qdisc replace dev "v$ID$1" root tbf rate "$2" burst 32kbit latency 400ms
	tc -n "$NSH" qdisc replace dev "h$ID$1" root tbf rate "$2" burst 32kbit latency 400ms
}
tbf_clear() {
	for i in $(seq 0 $((NC - 1))); do
		ip netns exec "$(nsk $i)" tc qdisc del dev "v${ID}c$i" root 2>/dev/null
		tc -n "$NSH" qdisc del dev "h${ID}c$i" root 2>/dev/null
	done
}

# supervise DIR NAME NS CMD...: runs CMD in NS, restarting it whenever it
# exits non-zero (a systemd unit's Restart=on-failure) until DIR/done
# exists; every exit status is appended to DIR/NAME.exits, the current pid
# is in DIR/NAME.pid, the supervisor's in DIR/NAME.sup. stdout and stderr
# go to DIR/NAME.log.
supervise() {
	local dir=$1 name=$2 ns=$3
	shift 3
	(
		while :; do
			echo "=== start $(date +%s.%N)" >>"$dir/$name.log"
			ip netns exec "$ns" "$@" >>"$dir/$name.log" 2>&1 &
			echo $! >"$dir/$name.pid"
			wait $!
			rc=$?
			echo "$rc" >>"$dir/$name.exits"
			[ $rc = 0 ] || [ -e "$dir/done" ] || [ -e "$OUT/stop" ] && break
			sleep 0.5
		done
	) 2>>"$dir/supervisor.err" &
	echo $! >"$dir/$name.sup"
	disown $!
}

# proxies DIR ARGS...: one fl-faultproxy per proxied client (0 and 1) in
# the proxy namespace, port PORT+1+i, with ARGS as its faults.
proxies() {
	local dir=$1 i
	shift
	for i in 0 1; do
		ip netns exec "$NSX" "$BIN/fl-faultproxy" --listen $PXIP:$((PORT + 1 + i)) \
			--upstream $COORD:$PORT --seed $((SEED * 10 + i)) --stats "$dir/proxy$i.stats" "$@" \
			>"$dir/proxy$i.log" 2>&1 &
		echo $! >"$dir/proxy$i.pid"
		disown $!
	done
}

start_daemons() {
	local dir=$1 i addr
	supervise "$dir" server "$NSC" "$BIN/fedloha-server" run --listen $COORD:$PORT \
		--key "$OUT/server.key" --allow "$OUT/allow.txt" "${SRV_FLAGS[@]}" $SRV_EXTRA \
		--checkpoint "$dir/ck.safetensors" --out "$dir/model"
	for i in $(seq 0 $((NC - 1))); do
		addr=$COORD:$PORT
		[ $i -lt 2 ] && addr=$PXIP:$((PORT + 1 + i))
		supervise "$dir" client$i "$(nsk $i)" "$BIN/fedloha-client" run --server $addr \
			--id edge-$i --key "$OUT/client$i.key" --server-key "$SPUB" --client-index $i \
			--state-dir "$dir/state$i" "${CLI_FLAGS[@]}"
	done
}

last_round() { sed -n 's/^round \([0-9]*\)\/[0-9]* selected.*/\1/p' "$1/server.log" | tail -1; }
server_done() { grep -q "^finished $ROUNDS rounds" "$1/server.log" 2>/dev/null; }

# kill_loop DIR N: N SIGKILLs, 0.5-3.5 s apart, of the coordinator (1 in 4) or
# a random client, while the run lasts; logged in DIR/kills.
kill_loop() {
	local dir=$1 n=$2 k who pid
	RANDOM=$SEED
	for k in $(seq "$n"); do
		sleep "$((RANDOM % 3)).$((RANDOM % 10))"
		sleep 0.5
		server_done "$dir" && break
		if [ $((RANDOM % 4)) = 0 ]; then who=server; else who=client$((RANDOM % NC)); fi
		pid=$(cat "$dir/$who.pid" 2>/dev/null)
		[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null &&
			echo "$(date +%s.%N) $who $pid round $(last_round "$dir")" >>"$dir/kills"
	done
}

# partition DIR: once round 5 is done, client 2's link down for 30 s
# (logged in DIR/partition).
partition() {
	local dir=$1
	until [ "$(last_round "$dir")" -ge 5 ] 2>/dev/null; do sleep 0.2; done
	echo "down $(date +%s.%N) round $(last_round "$dir")" >>"$dir/partition"
	ip -n "$NSH" link set "h${ID}c2" down
	sleep 30
	ip -n "$NSH" link set "h${ID}c2" up
	echo "up $(date +%s.%N) round $(last_round "$dir")" >>"$dir/partition"
}

# same_tensors A B: exit 0 when the two safetensors files hold the same
# tensors bit for bit (the __metadata__, which counts bytes, is ignored);
# prints what differs.
same_tensors() {
	python3 - "$1" "$2" <<'PY'
import json, struct, sys
def load(p):
    b = open(p, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8 + n]); h.pop('__metadata__', None)
    base = 8 + n
    return {k: (v['dtype'], v['shape'], b[base + v['data_offsets'][0]:base + v['data_offsets'][1]]) for k, v in h.items()}
a, b = load(sys.argv[1]), load(sys.argv[2])
if a.keys() != b.keys():
    print('tensor names differ'); sys.exit(1)
bad = [k for k in a if a[k] != b[k]]
if bad:
    print('%d of %d tensors differ (%s)' % (len(bad), len(a), ', '.join(sorted(bad)[:3]))); sys.exit(1)
print('equal (%d tensors)' % len(a))
PY
}

# check_rounds DIR: walks DIR/server.log; every round line must follow the
# previous one or the round the coordinator resumed after; a resume before
# the last reported round is a lost round. Prints "lost N gaps N retried N
# short LIST" (short: rounds aggregated with fewer than NC updates).
check_rounds() {
	awk -v nc="$NC" '
	/resumed from .* after round/ {
		r = $NF + 0
		if (r < last) lost++
		last = r; next
	}
	/^round [0-9]+\/[0-9]+ selected/ {
		split($2, a, "/"); n = a[1] + 0
		if (n != last + 1) gaps++
		last = n
		for (i = 3; i < NF; i++) {
			if ($i == "reported" && $(i + 1) + 0 < nc) short = short (short ? "," : "") n
			if ($i == "attempts" && $(i + 1) + 0 > 1) retried++
		}
	}
	END { printf "lost %d gaps %d retried %d short %s\n", lost, gaps, retried, short ? short : "-" }
	' "$1/server.log"
}

# wait_up DIR: waits until the partition of DIR has ended.
wait_up() { until grep -q '^up ' "$1/partition" 2>/dev/null; do sleep 0.5; done; }

# short_count LIST: how many rounds a comma-separated list names (- is 0).
short_count() { [ "$1" = - ] && echo 0 || echo "$1" | tr ',' '\n' | wc -l; }

# wait_pid PID SECONDS: waits for a child of this shell, at most SECONDS.
wait_pid() {
	local i
	for i in $(seq $(($2 * 10))); do
		kill -0 "$1" 2>/dev/null || { wait "$1" 2>/dev/null; return 0; }
		sleep 0.1
	done
	return 1
}

# stop_scenario DIR: ends the clients (SIGTERM) and the proxies (which
# write their counts), removes the tbf caps.
stop_scenario() {
	local dir=$1 i
	touch "$dir/done"
	for i in $(seq 0 $((NC - 1))); do kill -TERM "$(cat "$dir/client$i.pid")" 2>/dev/null; done
	for i in $(seq 0 $((NC - 1))); do wait_pid "$(cat "$dir/client$i.sup")" 20; done
	for i in 0 1; do kill -TERM "$(cat "$dir/proxy$i.pid")" 2>/dev/null; done
	for i in 0 1; do wait_pid "$(cat "$dir/proxy$i.pid")" 5; done
	tbf_clear
}

# faults_of DIR SCENARIO: the faults the run injected, one short field.
faults_of() {
	local dir=$1 f="" s
	case $2 in
	toxics | all | handshake)
		f=$(cat "$dir"/proxy*.stats | awk '{ for (i = 1; i < NF; i += 2) c[$i] += $(i + 1) }
			END { printf "resets %d stalls %d sliced %d flips %d", c["resets"], c["stalls"], c["sliced"], c["flipped"] }')
		[ "$2" = handshake ] && f="${f/resets 0 stalls 0 sliced 0 /}" || f="$f tbf"
		;;
	esac
	[ -s "$dir/partition" ] && f="$f${f:+ }partition 30s"
	echo "${f:--}"
}

# scenario NAME: one whole run; prints its row of the summary table.
scenario() {
	local sc=$1 dir=$OUT/$1 t0 bg=() ok=1 rows res
	rm -rf "$dir"
	mkdir -p "$dir"
	t0=$(date +%s)
	case $sc in
	toxics | all)
		proxies "$dir" --latency 10 --jitter 20 --bandwidth 4000 --stall 0.005 --stall-ms 2500 \
			--reset 0.002 --slice 0.02 --corrupt 5e-8
		tbf_link c1 20mbit
		tbf_link c2 10mbit
		;;
	handshake) proxies "$dir" --corrupt 0.002 --corrupt-until 400 ;;
	*) proxies "$dir" ;;
	esac
	SRV_EXTRA=""
	[ "$sc" = quorum ] && SRV_EXTRA="--min-report 2"
	start_daemons "$dir"
	case $sc in partition | all) partition "$dir" & bg+=($!) ;; esac
	case $sc in
	kills | quorum) kill_loop "$dir" "$KILLS" & bg+=($!) ;;
	all) # the kills after the partition, so that there are checkpoints to resume
		(wait_up "$dir" && kill_loop "$dir" "$KILLS") & bg+=($!) ;;
	esac
	# the coordinator's supervisor ends when it exits 0 (all rounds)
	for _ in $(seq 1200); do
		kill -0 "$(cat "$dir/server.sup")" 2>/dev/null || break
		for i in 0 1; do
			kill -0 "$(cat "$dir/proxy$i.pid")" 2>/dev/null ||
				{ echo "$sc: FAIL: fl-faultproxy $i died: $(tail -1 "$dir/proxy$i.log")"; ok=0; break 2; }
		done
		sleep 1
	done
	kill -0 "$(cat "$dir/server.sup")" 2>/dev/null && { echo "$sc: FAIL: the run did not end"; ok=0; }
	for p in "${bg[@]}"; do wait "$p" 2>/dev/null; done
	stop_scenario "$dir"
	local wall=$(($(date +%s) - t0))
	read -r _ lost _ gaps _ retried _ short < <(check_rounds "$dir")
	rows=$(last_round "$dir")
	server_done "$dir" || { echo "$sc: FAIL: not all $ROUNDS rounds finished (last ${rows:-none})"; ok=0; }
	[ "$lost" = 0 ] && [ "$gaps" = 0 ] || { echo "$sc: FAIL: $lost lost round(s), $gaps gap(s) in the round sequence"; ok=0; }
	if [ "$sc" = baseline ]; then
		res="reference"
	elif [ ! -s "$OUT/baseline/model/model.safetensors" ]; then
		res="no baseline"
	elif [ "$short" != "-" ]; then
		# not claimed equal; whether the tensors happen to match is shown
		same_tensors "$OUT/baseline/model/model.safetensors" "$dir/model/model.safetensors" >/dev/null 2>&1 &&
			res="short: equal anyway" || res="short: differs"
		echo "$sc: rounds aggregated with fewer than $NC updates: $short" >>"$OUT/short.txt"
	elif res=$(same_tensors "$OUT/baseline/model/model.safetensors" "$dir/model/model.safetensors" 2>&1); then
		:
	else
		echo "$sc: FAIL: final model differs from the baseline although every round had $NC updates: $res"
		ok=0
	fi
	local ks kc e3
	ks=$(grep -c " server " "$dir/kills" 2>/dev/null)
	kc=$(grep -c " client" "$dir/kills" 2>/dev/null)
	e3=$(cat "$dir"/client*.exits 2>/dev/null | grep -c '^3$')
	printf '%-10s %-58s %-12s %-7s %-9s %-10s %-22s %6s\n' "$sc" "$(faults_of "$dir" "$sc")" \
		"srv ${ks:-0} cli ${kc:-0}" "$e3" "$rows/$ROUNDS" "$(short_count "$short") / $retried" "$res" "$wall" |
		tee -a "$OUT/summary.txt"
	[ $ok = 1 ]
}
