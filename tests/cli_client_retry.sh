#!/usr/bin/env bash
# cli_client_retry.sh - fedloha-client run retries every failure that comes
# before the server proved its pinned key (docs/SECURITY.md "What a client
# treats as final"): a man in the middle (tests/mitm_proxy.py) on 127.0.0.1
# tampers with the first handshakes (a flipped signature byte, another
# valid server key, a plaintext Error, garbage), then lets the bytes through. The
# client logs each failure at error level with its reconnect delay, never
# exits 3, and finishes the round once the path is clean. An authenticated
# refusal (a key the server does not list) still exits 3 at once.
set -u
. "$(dirname "$0")/cli_lib.sh"
daemon_setup cli_client_retry 12
command -v python3 >/dev/null || { echo "SKIP: python3 not found"; exit 77; }
START=$(date +%s)
S="$BIN/fedloha-server"
C="$BIN/fedloha-client"

SPUB=$("$S" keygen --out "$TMP/server.key" 2>/dev/null) || fail "server keygen"
P0=$("$C" keygen --out "$TMP/c0.key" 2>/dev/null) || fail "client keygen"
P1=$("$C" keygen --out "$TMP/c1.key" 2>/dev/null) || fail "client keygen"
printf '%s client-0\n' "$P0" >"$TMP/allow.txt"
timeout 40 "$S" run --listen 127.0.0.1:0 --model 2nn --rounds 1 --round-timeout 20 \
	--key "$TMP/server.key" --allow "$TMP/allow.txt" --min-clients 1 \
	>"$TMP/server.out" 2>"$TMP/server.err" &
SPID=$!
await_port server $SPID
timeout 45 python3 "$TESTS_DIR/mitm_proxy.py" "$TMP/proxy.port" "$PORT" flip "key=$P1" error garbage \
	>"$TMP/proxy.out" 2>"$TMP/proxy.err" &
for _ in $(seq 100); do [ -s "$TMP/proxy.port" ] && break; sleep 0.05; done
PPORT=$(cat "$TMP/proxy.port" 2>/dev/null) || fail "the proxy did not start"

# 1. an unlisted key is an authenticated refusal: exit 3 at once, through the proxy too
timeout 20 "$C" run --server 127.0.0.1:$PORT --id client-1 --key "$TMP/c1.key" --server-key "$SPUB" \
	--num-clients 8 --client-index 1 --limit 100 >"$TMP/c1.out" 2>"$TMP/c1.err"; RC=$?
exited c1 3 "refused this client: client key .* is not in the allow-list" "1: unlisted key"
echo "ok 1: an authenticated refusal still exits 3"

# 2. four tampered handshakes, then a clean path: the client finishes
timeout 30 "$C" run --server 127.0.0.1:$PPORT --id client-0 --key "$TMP/c0.key" --server-key "$SPUB" \
	--num-clients 8 --client-index 0 --limit 100 --backoff-min 0.05 --backoff-max 0.2 \
	>"$TMP/c0.out" 2>"$TMP/c0.err"; RC=$?
exited c0 0 "" "2: client behind the tampering proxy"
grep -q "finished after 1 training rounds" "$TMP/c0.out" || fail "2: the round did not run"
for why in "bad server signature" \
	"the server's key $P1 is not the pinned key $SPUB" \
	"unauthenticated message from the peer (plaintext): this server requires" \
	"secure channel: \|authentication failed\|malformed\|handshake"; do
	grep -q " error .*$why.*(unauthenticated: possibly an attacker or a misconfiguration); reconnecting to 127.0.0.1:$PPORT in [0-9]* ms" \
		"$TMP/c0.err" || fail "2: no error line with a retry for '$why'"
done
n=$(grep -c "(unauthenticated: .*reconnecting to" "$TMP/c0.err")
[ "$n" -ge 4 ] || fail "2: $n unauthenticated failures logged, expected 4"
grep -q "connection 5: pass" "$TMP/proxy.out" || fail "2: the client did not come back a fifth time"
wait $SPID || fail "server exit $?"
echo "ok 2: flipped signature, wrong server key, plaintext Error and garbage retried ($n error lines); the round ran"

echo "cli_client_retry: all ok in $(($(date +%s) - START)) s"
[ $fails = 0 ]
