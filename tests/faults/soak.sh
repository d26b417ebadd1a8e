#!/usr/bin/env bash
# soak.sh - a long run of the daemons at small scale: one fedloha-server and
# a few fedloha-client processes over the secure channel on 127.0.0.1 doing
# many short rounds (2nn FedPara, a few dozen samples per client, a
# checkpoint after every round). Every --every seconds it records the
# resident set (VmRSS) and the open file descriptors of each process in a
# CSV; at the end it prints per process the first / last / max RSS and fds
# and the RSS slope over the second half (KiB per hour), and the rounds
# completed. It fails (exit 1) when a process died, when a process's fds
# grew after the warm-up (the fewest open in the last quarter of the run
# above the fewest open in the first quarter after the warm-up), or when
# its RSS grew by more than --rss-growth percent over the second half. It does not inject faults (tests/faults/
# run.sh does) and does not judge accuracy.
#   tests/faults/soak.sh [--seconds N (3600)] [--every N (10)] [--clients N (3)]
#                        [--out DIR] [--bin DIR] [--rss-growth PCT (10)]
#                        [--warmup SEC (max(30, seconds/10))]
set -u
SECONDS_TOTAL=3600
EVERY=10
NCLIENTS=3
OUT=""
BIN=${FL_BIN:-build/bin}
RSS_GROWTH=10
WARMUP=""
DATA=${FL_LOOPBACK_DATA:-/usr/share/datasets/fashion-mnist}
while [ $# -gt 0 ]; do
	case $1 in
	--seconds) SECONDS_TOTAL=$2; shift 2 ;;
	--every) EVERY=$2; shift 2 ;;
	--clients) NCLIENTS=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	--bin) BIN=$2; shift 2 ;;
	--rss-growth) RSS_GROWTH=$2; shift 2 ;;
	--warmup) WARMUP=$2; shift 2 ;;
	-h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "soak.sh: unknown option '$1' (--help)" >&2; exit 2 ;;
	esac
done
[ -n "$WARMUP" ] || WARMUP=$((SECONDS_TOTAL / 10 > 30 ? SECONDS_TOTAL / 10 : 30))
for b in fedloha-server fedloha-client; do
	[ -x "$BIN/$b" ] || { echo "soak.sh: $BIN/$b not built (make build)" >&2; exit 2; }
done
if [ ! -e "$DATA/train-images-idx3-ubyte.gz" ] && [ ! -e "$DATA/train-images-idx3-ubyte" ]; then
	echo "SKIP: Fashion-MNIST not found in $DATA (apt install dataset-fashion-mnist)"
	exit 77
fi
[ -n "$OUT" ] || OUT=$(mktemp -d /tmp/fedloha-soak.XXXXXX)
mkdir -p "$OUT"
CSV="$OUT/soak.csv"
PIDS=()
NAMES=()
cleanup() {
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	wait 2>/dev/null
}
trap cleanup EXIT

S="$BIN/fedloha-server"
C="$BIN/fedloha-client"
SPUB=$("$S" keygen --out "$OUT/server.key" --force 2>/dev/null) || { echo "soak.sh: server keygen failed" >&2; exit 1; }
: >"$OUT/allow.txt"
for i in $(seq 0 $((NCLIENTS - 1))); do
	pub=$("$C" keygen --out "$OUT/client$i.key" --force 2>/dev/null) || { echo "soak.sh: client keygen failed" >&2; exit 1; }
	echo "$pub soak-$i" >>"$OUT/allow.txt"
done
rm -f "$OUT/ck.safetensors"

"$S" run --listen 127.0.0.1:0 --key "$OUT/server.key" --allow "$OUT/allow.txt" \
	--model 2nn --param fedpara --gamma 0.1 --rounds 1000000000 --min-clients "$NCLIENTS" \
	--min-report "$NCLIENTS" --round-timeout 30 --epochs 1 --batch 16 --lr 0.05 --seed 1 \
	--checkpoint "$OUT/ck.safetensors" >"$OUT/server.out" 2>"$OUT/server.err" &
PIDS+=($!)
NAMES+=(server)
PORT=""
for _ in $(seq 100); do
	PORT=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$OUT/server.out")
	[ -n "$PORT" ] && break
	sleep 0.1
done
[ -n "$PORT" ] || { echo "soak.sh: the server did not start: $(tail -3 "$OUT/server.err")" >&2; exit 1; }
for i in $(seq 0 $((NCLIENTS - 1))); do
	"$C" run --server 127.0.0.1:$PORT --id soak-$i --key "$OUT/client$i.key" --server-key "$SPUB" \
		--data-path "$DATA" --num-clients 1000 --client-index "$i" --seed 1 --limit 48 \
		--backoff-min 0.1 --backoff-max 1 >"$OUT/client$i.out" 2>"$OUT/client$i.err" &
	PIDS+=($!)
	NAMES+=(client$i)
done

rounds_done() { grep -c '^round [0-9]*/[0-9]* selected' "$OUT/server.out"; }
echo "t,process,pid,rss_kib,fds,rounds" >"$CSV"
START=$(date +%s)
died=""
echo "soak: ${SECONDS_TOTAL}s, sampling every ${EVERY}s into $CSV (logs in $OUT)"
while :; do
	now=$(($(date +%s) - START))
	r=$(rounds_done)
	for k in "${!PIDS[@]}"; do
		p=${PIDS[$k]}
		if ! kill -0 "$p" 2>/dev/null; then
			died="$died ${NAMES[$k]}"
			continue
		fi
		rss=$(sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' /proc/$p/status 2>/dev/null)
		fds=$(ls /proc/$p/fd 2>/dev/null | wc -l)
		echo "$now,${NAMES[$k]},$p,$rss,$fds,$r" >>"$CSV"
	done
	[ -n "$died" ] && break
	[ "$now" -ge "$SECONDS_TOTAL" ] && break
	sleep "$EVERY"
done
ROUNDS=$(rounds_done)
cleanup
PIDS=()

# Summary: per process first/last/max RSS and fds, RSS slope over the
# second half (least squares, KiB per hour), growth checks.
awk -F, -v warm="$WARMUP" -v total="$SECONDS_TOTAL" -v growth="$RSS_GROWTH" '
NR == 1 { next }
{
	p = $2; t = $1; rss = $4; fd = $5
	if (!(p in first)) { order[++n] = p; first[p] = rss; ffd[p] = fd; maxr[p] = 0; maxf[p] = 0 }
	last[p] = rss; lfd[p] = fd; lt = t
	if (rss > maxr[p]) maxr[p] = rss
	if (fd > maxf[p]) maxf[p] = fd
	all_t[p, ++cnt[p]] = t; all_r[p, cnt[p]] = rss; all_f[p, cnt[p]] = fd
}
END {
	half = lt / 2; bad = 0
	printf "%-8s %9s %9s %9s %5s %5s %5s %14s %8s\n", "process", "rss0_KiB", "rss_KiB", "max_KiB", "fd0", "fd", "maxfd", "slope_KiB/h", "growth%"
	for (i = 1; i <= n; i++) {
		p = order[i]; sx = sy = sxx = sxy = m = 0; h0 = -1
		for (j = 1; j <= cnt[p]; j++) {
			t = all_t[p, j]
			if (t < half) continue
			if (h0 < 0) h0 = all_r[p, j]
			m++; sx += t; sy += all_r[p, j]; sxx += t * t; sxy += t * all_r[p, j]
		}
		slope = (m > 1 && m * sxx - sx * sx > 0) ? (m * sxy - sx * sy) / (m * sxx - sx * sx) * 3600 : 0
		g = (h0 > 0) ? (last[p] - h0) * 100 / h0 : 0
		# fds: the fewest open in the first and in the last quarter after
		# the warm-up (a checkpoint being written holds one for a moment)
		q = (lt - warm) / 4; fa = fb = -1
		for (j = 1; j <= cnt[p]; j++) {
			t = all_t[p, j]; f = all_f[p, j]
			if (t >= warm && t <= warm + q && (fa < 0 || f < fa)) fa = f
			if (t >= lt - q && t >= warm && (fb < 0 || f < fb)) fb = f
		}
		printf "%-8s %9d %9d %9d %5d %5d %5d %14.1f %8.2f\n", p, first[p], last[p], maxr[p], ffd[p], lfd[p], maxf[p], slope, g
		if (fa >= 0 && fb > fa) { printf "FAIL: %s: fds grew after the warm-up (at least %d open, then at least %d)\n", p, fa, fb; bad = 1 }
		if (g > growth) { printf "FAIL: %s: RSS grew %.1f%% over the second half (limit %s%%)\n", p, g, growth; bad = 1 }
	}
	exit bad
}' "$CSV" | tee "$OUT/summary.txt"
verdict=${PIPESTATUS[0]}
echo "rounds completed: $ROUNDS in $(($(date +%s) - START)) s" | tee -a "$OUT/summary.txt"
if [ -n "$died" ]; then
	echo "FAIL: process(es) died:$died" | tee -a "$OUT/summary.txt"
	for n in $died; do tail -5 "$OUT/$n.err"; done
	exit 1
fi
[ "$ROUNDS" -gt 0 ] || { echo "FAIL: no round completed" | tee -a "$OUT/summary.txt"; exit 1; }
[ "$verdict" = 0 ] || exit 1
echo "soak: ok (CSV $CSV, summary $OUT/summary.txt)"
