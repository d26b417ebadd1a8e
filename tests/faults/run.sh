#!/usr/bin/env bash
# run.sh - fedloha-server and fedloha-client daemons under network faults on
# network namespaces (make faults; root; several minutes). One namespace
# holds the coordinator, one the fault proxies (fl-faultproxy), one per
# client, all on a bridge in a hub namespace (10.231.0.0/24). Clients 0
# and 1 reach the coordinator through their own proxy, client 2 directly.
# Each scenario is a whole run with the same seed and flags; a round needs
# every client (--min-clients = --min-report = 3, fraction 1) and may be
# retried without limit, so a completed round always holds the same three
# updates and the final model must equal the fault-free one bit for bit:
#   baseline   no faults: the reference model
#   toxics     the proxies add latency + jitter, a bandwidth cap, stalls,
#              resets, 1-7 byte slicing and bit flips; tbf caps on the
#              links of clients 1 and 2
#   handshake  bit flips in the first 400 bytes of each connection only
#              (the handshake and the first records)
#   partition  client 2's link down for 30 s after round 5, then up
#   kills      20 SIGKILLs of the coordinator or a client at random moments;
#              each daemon is restarted like its systemd unit would be (the
#              coordinator from its --checkpoint)
#   all        toxics throughout, the partition, then the kills
#   quorum     the kills with --min-report 2: a round may end with the two
#              clients left, so the model is not compared; the table lists
#              those rounds instead
# Checks per scenario: every round done, no completed round lost (a
# restarted coordinator resumes at or after the last round it reported),
# the final tensors equal the baseline's (or the rounds with fewer clients
# are listed). Prints a summary table, also written to OUT/summary.txt.
# Exit 0 all passed, 1 a check failed, 77 not root or no `ip netns`.
#   tests/faults/run.sh [--bin DIR] [--out DIR] [--rounds N (60)] [--seed S (1)]
#                       [--kills N (20)] [--scenarios "baseline toxics ..."]
set -u
BIN=${FL_BIN:-build/bin}
OUT=""
ROUNDS=60
SEED=1
KILLS=20
SCENARIOS="baseline toxics handshake partition kills all quorum"
DATA=${FL_LOOPBACK_DATA:-/usr/share/datasets/fashion-mnist}
while [ $# -gt 0 ]; do
	case $1 in
	--bin) BIN=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	--rounds) ROUNDS=$2; shift 2 ;;
	--seed) SEED=$2; shift 2 ;;
	--kills) KILLS=$2; shift 2 ;;
	--scenarios) SCENARIOS=$2; shift 2 ;;
	-h | --help) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "run.sh: unknown option '$1' (--help)" >&2; exit 2 ;;
	esac
done
HERE=$(cd "$(dirname "$0")" && pwd)
[ "$(id -u)" = 0 ] || { echo "SKIP: tests/faults/run.sh needs root (network namespaces, tc)"; exit 77; }
for t in ip tc python3; do
	command -v $t >/dev/null || { echo "SKIP: $t not found"; exit 77; }
done
ID=$$
P=flf$ID
ip netns add $P-probe 2>/dev/null && ip netns del $P-probe ||
	{ echo "SKIP: 'ip netns add' does not work here"; exit 77; }
for b in fedloha-server fedloha-client fl-faultproxy; do
	[ -x "$BIN/$b" ] || { echo "run.sh: $BIN/$b not built (make build)" >&2; exit 2; }
done
if [ ! -e "$DATA/train-images-idx3-ubyte.gz" ] && [ ! -e "$DATA/train-images-idx3-ubyte" ]; then
	echo "SKIP: Fashion-MNIST not found in $DATA (apt install dataset-fashion-mnist)"
	exit 77
fi
BIN=$(cd "$BIN" && pwd)
[ -n "$OUT" ] || OUT=$(mktemp -d /tmp/fedloha-faults.XXXXXX)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
. "$HERE/faults_lib.sh"
trap 'net_down; exit 130' INT TERM
trap net_down EXIT

NC=3
COORD=10.231.0.1
PXIP=10.231.0.2
PORT=7420
SRV_FLAGS=(--model 2nn --param fedpara --gamma 0.1 --rounds "$ROUNDS" --min-clients $NC
	--min-report $NC --fraction 1 --max-retries 1000000 --round-timeout 15 --seed "$SEED"
	--epochs 1 --batch 32 --lr 0.05 --handshake-timeout 10)
CLI_FLAGS=(--data-path "$DATA" --num-clients 20 --seed "$SEED" --limit 2000
	--backoff-min 0.2 --backoff-max 2)

keys
net_up
: >"$OUT/summary.txt"
rm -f "$OUT/short.txt"
printf '%-10s %-58s %-12s %-7s %-9s %-10s %-22s %6s\n' scenario faults kills exit3 rounds "short/retr" "model vs baseline" wall_s |
	tee -a "$OUT/summary.txt"
failed=0
for sc in $SCENARIOS; do
	scenario "$sc" || failed=1
done
[ -s "$OUT/short.txt" ] && tee -a "$OUT/summary.txt" <"$OUT/short.txt"
echo "short: rounds aggregated with fewer than $NC updates; retr: rounds that needed a retry" |
	tee -a "$OUT/summary.txt"
echo "summary: $OUT/summary.txt (logs in $OUT/<scenario>/)"
exit $failed
