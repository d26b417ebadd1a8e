#!/usr/bin/env bash
# bench_scale.sh - one coordinator under N real client sessions on the
# loopback (docs/EXPERIMENTS.md "One coordinator, many clients"): a secure
# fedloha-server (2nn FedPara, the default model) and N sessions of
# fl-loadgen (tests/loadgen) from PROCS processes whose connections are
# spread over N/10 loopback source addresses (127.0.0.2...), so the
# per-address limits keep their defaults; only --max-conns is raised above
# N. Not a ctest: it takes minutes at N = 10000 and needs `ulimit -n` above
# N + 100 (per process).
#
#   tests/bench_scale.sh [N (1000)] [ROUNDS (3)] [PROCS (2)]
#   SERVER_FLAGS="--chunk 65536 ..." adds fedloha-server flags.
#   KEEP=1 keeps the logs in $TMP.
#   PERF=1 ... also records a CPU profile of the coordinator (perf) during
#   the rounds and prints its top symbols.
#
# Two runs: (1) idle: --min-clients N+1, so no round starts; once all N
# sessions are welcomed the coordinator's RSS is read (and its RSS with no
# client before); (2) rounds: --min-clients N, ROUNDS rounds, fraction 1;
# RSS sampled every 0.2 s. It prints: handshakes per second (all
# processes), RSS idle / per idle client, peak RSS in the rounds, every
# round's report, and per round the time from the last update sent to the
# first and to the last client receiving the next task.
set -u
N=${1:-1000}
ROUNDS=${2:-3}
PROCS=${3:-2}
BIN=${FL_BIN:-build/bin}
TMP=${FL_TMP:-/tmp}/bench_scale.$$
mkdir -p "$TMP"
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$TMP"' EXIT
die() { echo "bench_scale: $*" >&2; exit 1; }
[ "$(ulimit -n)" -gt $((N + 100)) ] || die "ulimit -n $(ulimit -n) is too low for $N sessions"
SOURCES=$(((N + 9) / 10))
SPUB=$("$BIN/fedloha-server" keygen --out "$TMP/server.key" 2>/dev/null) || die "keygen"
"$BIN/fl-loadgen" allow --clients "$N" --seed 3 --out "$TMP/allow.txt" || die "allow"

rss() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$1/status" 2>/dev/null; }

# server NAME MIN_CLIENTS ROUNDS: starts it; sets SPID and PORT.
server() {
	"$BIN/fedloha-server" run --listen 127.0.0.1:0 --key "$TMP/server.key" \
		--allow "$TMP/allow.txt" --model 2nn --param fedpara --rounds "$3" \
		--min-clients "$2" --round-timeout 120 --max-conns $((N + 1000)) ${SERVER_FLAGS:-} \
		--log-level info >"$TMP/$1.out" 2>"$TMP/$1.err" &
	SPID=$!
	for _ in $(seq 100); do
		PORT=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$TMP/$1.out")
		[ -n "$PORT" ] && return 0
		sleep 0.1
	done
	die "$1: the server did not start"
}

# loadgen NAME SECONDS: PROCS processes, N sessions in all; sets LGPIDS.
loadgen() {
	LGPIDS=()
	local per=$(((N + PROCS - 1) / PROCS)) first=0
	for p in $(seq 0 $((PROCS - 1))); do
		local n=$((N - first < per ? N - first : per))
		"$BIN/fl-loadgen" run --port "$PORT" --server-key "$SPUB" --clients "$n" \
			--first "$first" --seed 3 --sources "$SOURCES" --seconds "$2" \
			>"$TMP/$1.lg$p.out" 2>"$TMP/$1.lg$p.err" &
		LGPIDS+=($!)
		first=$((first + n))
	done
}

# ---- 1. idle ----
server idle $((N + 1)) 1
sleep 1
RSS0=$(rss $SPID)
loadgen idle 600
for _ in $(seq 1200); do
	up=$(grep -c "secure channel up" "$TMP/idle.err")
	[ "$up" -ge "$N" ] && break
	sleep 0.25
done
[ "$up" -ge "$N" ] || die "idle: only $up of $N sessions came up"
sleep 2 # the last Hellos
RSS1=$(rss $SPID)
kill "${LGPIDS[@]}" 2>/dev/null
kill $SPID 2>/dev/null
wait 2>/dev/null
awk -v n="$N" -v a="$RSS0" -v b="$RSS1" 'BEGIN {
	printf "idle: coordinator RSS %.1f MiB with no client, %.1f MiB with %d idle sessions: %.1f KiB per session\n",
		a / 1024, b / 1024, n, (b - a) / n }'
grep -h "^loadgen:" "$TMP"/idle.lg*.out >/dev/null || true

# ---- 2. rounds ----
server rounds "$N" "$ROUNDS"
loadgen rounds 3600
if [ "${PERF:-0}" = 1 ]; then
	perf record -F 499 -g -p $SPID -o "$TMP/perf.data" >/dev/null 2>&1 &
	PERFPID=$!
fi
PEAK=0
while kill -0 $SPID 2>/dev/null; do
	r=$(rss $SPID)
	[ -n "$r" ] && [ "$r" -gt "$PEAK" ] && PEAK=$r
	sleep 0.2
done
wait $SPID
SRC=$?
for p in "${LGPIDS[@]}"; do wait "$p" || echo "bench_scale: a fl-loadgen process exited $?" >&2; done
if [ "${PERF:-0}" = 1 ]; then
	kill -INT $PERFPID 2>/dev/null
	wait $PERFPID 2>/dev/null
	perf report -i "$TMP/perf.data" --stdio --no-children --sort dso,symbol 2>/dev/null |
		grep -E '^ +[0-9.]+%' | head -25
fi
[ $SRC = 0 ] || echo "bench_scale: the server exited $SRC" >&2
grep -E "^round [0-9]+/|^finished|^upload slots|^socket bytes" "$TMP/rounds.out"
awk -v p="$PEAK" 'BEGIN { printf "rounds: coordinator peak RSS %.1f MiB (sampled every 0.2 s)\n", p / 1024 }'
cat "$TMP"/rounds.lg*.out | awk -v n="$N" '
/^loadgen:/ {
	for (i = 1; i < NF; i++) { v[$i] = $(i + 1) }
	if (!("s" in t) || v["start_ms"] < t["s"]) t["s"] = v["start_ms"]
	if (v["last_up_ms"] > t["u"]) t["u"] = v["last_up_ms"]
	up += v["up"]; failed += v["failed"]; errors += v["errors"]; byes += v["byes_done"]
	tasks += v["tasks"]; upd += v["updates"]
}
/^round / {
	r = $2
	for (i = 3; i < NF; i++) { v[$i] = $(i + 1) }
	if (!(r in tf) || v["task_first_ms"] < tf[r]) tf[r] = v["task_first_ms"]
	if (v["task_last_ms"] > tl[r]) tl[r] = v["task_last_ms"]
	if (v["update_last_ms"] > ul[r]) ul[r] = v["update_last_ms"]
	nt[r] += v["tasks"]; nu[r] += v["updates"]
	if (r > rmax) rmax = r
}
END {
	s = (t["u"] - t["s"]) / 1000
	printf "sessions %d up %d failed %d errors %d byes_done %d tasks %d updates %d\n", n, up, failed, errors, byes, tasks, upd
	printf "handshakes: %d in %.2f s = %.0f per second\n", up, s, (s > 0 ? up / s : 0)
	for (r = 1; r <= rmax; r++) {
		printf "round %d: %d tasks, %d updates; tasks out over %d ms", r, nt[r], nu[r], tl[r] - tf[r]
		if (r < rmax)
			printf "; last update -> next task: first client %d ms, last client %d ms", tf[r + 1] - ul[r], tl[r + 1] - ul[r]
		printf "\n"
	}
}'
