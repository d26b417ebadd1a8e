#!/usr/bin/env bash
# cli_flood.sh - the coordinator's pre-authentication limits under a flood
# (docs/SECURITY.md §7.1): a secure fedloha-server and two real clients on
# 127.0.0.1 run one round, once alone and once while tests/flood_msg1.c
# (fl-flood) replays handshake message 1 as fast as the server answers
# from 127.0.0.2..127.0.0.9 and holds connections open from 127.0.0.10..13
# (Linux routes all of 127.0.0.0/8 to lo, so the per-address limits see the
# flood's addresses and not the clients'; the default limits are used).
# Checks: both clients finish the round during the flood; the server closed
# connections at accept by the per-address rate and connection limits; the
# flood got no more handshakes than 8 buckets allow (burst 40 + 20/s each).
# Then a flood holding handshakes open from 40 addresses fills
# --max-handshakes, and the clients still get in at once.
# Prints the figures that docs/SECURITY.md quotes.
set -u
. "$(dirname "$0")/cli_lib.sh"
daemon_setup cli_flood 12
START=$(date +%s)
S="$BIN/fedloha-server"
C="$BIN/fedloha-client"
FLOOD_S=5

SPUB=$("$S" keygen --out "$TMP/server.key" 2>/dev/null) || fail "server keygen"
for i in 0 1; do
	P[$i]=$("$C" keygen --out "$TMP/c$i.key" 2>/dev/null) || fail "client keygen"
done
printf '%s client-0\n%s client-1\n' "${P[0]}" "${P[1]}" >"$TMP/allow.txt"

# round NAME FLOOD [SERVER FLAGS]: one round with two clients (FLOOD=1:
# under the flood; 2: under a 40-address flood holding handshakes); sets
# SECS (the clients' wall time) and RSECS (the server's round time).
round() {
	local name=$1 flood=$2
	shift 2
	timeout 60 "$S" run --listen 127.0.0.1:0 --model 2nn --rounds 1 --round-timeout 30 "$@" \
		--key "$TMP/server.key" --allow "$TMP/allow.txt" --min-clients 2 \
		>"$TMP/$name.out" 2>"$TMP/$name.err" &
	local spid=$! f1= f2=
	await_port "$name" $spid
	if [ "$flood" = 2 ]; then
		timeout 30 "$BIN/fl-flood" --port "$PORT" --conns 640 --sources 40 --first-source 20 \
			--hold --seconds $FLOOD_S >"$TMP/$name.hold" 2>&1 &
		f1=$!
		sleep 1
	elif [ "$flood" = 1 ]; then
		timeout 30 "$BIN/fl-flood" --port "$PORT" --conns 64 --sources 8 --seconds $FLOOD_S \
			>"$TMP/$name.flood" 2>&1 &
		f1=$!
		timeout 30 "$BIN/fl-flood" --port "$PORT" --conns 128 --sources 4 --first-source 8 \
			--hold --seconds $FLOOD_S >"$TMP/$name.hold" 2>&1 &
		f2=$!
		sleep 1
	fi
	local t0 c0 c1
	t0=$(date +%s.%N)
	for i in 0 1; do
		timeout 40 "$C" run --server 127.0.0.1:$PORT --id client-$i --key "$TMP/c$i.key" \
			--server-key "$SPUB" --num-clients 8 --client-index $i --limit 200 \
			>"$TMP/$name.c$i.out" 2>"$TMP/$name.c$i.err" &
		eval c$i=\$!
	done
	wait $c0 || fail "$name: client-0 exit $?"
	wait $c1 || fail "$name: client-1 exit $?"
	SECS=$(echo "$(date +%s.%N) - $t0" | bc)
	if [ "$flood" != 0 ]; then
		wait $f1 $f2 # they stop when the server is gone
	fi
	wait $spid || fail "$name: server exit $?"
	for i in 0 1; do
		grep -q "finished after 1 training rounds" "$TMP/$name.c$i.out" ||
			fail "$name: client-$i did not finish the round"
	done
	RSECS=$(sed -n 's/^round 1\/1 .* \([0-9.]*\)s$/\1/p' "$TMP/$name.out")
}

round quiet 0
echo "round without flood: clients ${SECS} s, server round ${RSECS} s"
round flood 1
echo "round during the flood: clients ${SECS} s, server round ${RSECS} s"
cat "$TMP/flood.flood" "$TMP/flood.hold"
LIM=$(grep "^connections closed at accept by a limit" "$TMP/flood.out")
echo "server: $LIM"
echo "server: $(grep "^socket bytes" "$TMP/flood.out")"
[ -n "$LIM" ] || fail "no connection was closed at accept by a limit"
[[ $LIM == *"per-address rate (--addr-rate) "[1-9]* ]] || fail "the per-address rate did not engage"
[[ $LIM == *"per-address connections (--addr-conns) "[1-9]* ]] || fail "the per-address connection limit did not engage"
hs=$(sed -n 's/.* handshakes \([0-9]*\) (.*/\1/p' "$TMP/flood.flood")
fs=$(sed -n 's/^flood: \([0-9]*\)\..*/\1/p' "$TMP/flood.flood")
# the flood starts 1 s before the clients and stops when the server is
# gone: on a quiet machine the round ends well inside the next second
[ -n "$fs" ] && [ "$fs" -ge 1 ] || fail "the flood ran ${fs:-?} s only"
max=$((8 * (40 + 20 * (FLOOD_S + 1))))
[ -n "$hs" ] && [ "$hs" -le "$max" ] || fail "the flood got $hs handshakes from 8 addresses (at most $max allowed)"
n=$(grep -c "refused .* connections at accept, before any cryptography" "$TMP/flood.err")
[ "$n" -ge 1 ] && [ "$n" -le $((FLOOD_S / 10 + 3)) ] || fail "$n summary lines of refusals (one per 10 s expected)"

# 3. a distributed flood holding handshakes open from 40 addresses (16 each
# is 640, over --max-handshakes 256): the cap holds, and the clients, whose
# address has no handshake in progress, take the slots of the busiest
# addresses' oldest handshakes instead of waiting for the flood to end.
round spread 2
echo "round during a 40-address flood: clients ${SECS} s, server round ${RSECS} s"
cat "$TMP/spread.hold"
grep "^connections closed at accept\|^handshakes cut" "$TMP/spread.out" | sed 's/^/server: /'
grep -q "^connections closed at accept by a limit: .*handshakes (--max-handshakes) [1-9]" \
	"$TMP/spread.out" || fail "3: the handshake cap did not engage"
grep -q "^handshakes cut for a newcomer under --max-handshakes: [1-9]" "$TMP/spread.out" ||
	fail "3: no handshake made room for the clients"
# 4. the same with --max-conns 200: the reserve (20) leaves 180 slots for
# handshakes, fewer than --max-handshakes, and newcomers make room there too.
round small 2 --max-conns 200
echo "round during a 40-address flood, --max-conns 200: clients ${SECS} s, server round ${RSECS} s"
grep "^connections closed at accept\|^handshakes cut" "$TMP/small.out" | sed 's/^/server: /'
grep -q "^handshakes cut for a newcomer under --max-handshakes: [1-9]" "$TMP/small.out" ||
	fail "4: no handshake made room for the clients under the reserve"
echo "cli_flood: all ok in $(($(date +%s) - START)) s"
