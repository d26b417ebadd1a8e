#!/usr/bin/env bash
# cli_enrol.sh - the coordinator's enrolment options at startup (docs/SECURITY.md):
#   1. a restart with --enrol ID after ID was enrolled issues no token for
#      it (a warning says so) and runs; other ids still get their token
# Each server only starts (its "listening on" line) and is stopped.
set -u
umask 022 # the coordinator refuses a group-writable allow-list
. "$(dirname "$0")/cli_lib.sh"
daemon_setup cli_enrol 8
S="$BIN/fedloha-server"
C="$BIN/fedloha-client"

# start NAME ARGS...: starts a server and stops it once it listens; sets RC
# (its exit status when it did not come up, else 0).
start() {
	local name=$1; shift
	timeout 20 "$S" run --listen 127.0.0.1:0 --model 2nn --rounds 1 "$@" \
		>"$TMP/$name.out" 2>"$TMP/$name.err" &
	local pid=$!
	RC=
	for _ in $(seq 100); do
		if grep -q "^listening on" "$TMP/$name.out"; then
			kill -TERM $pid; wait $pid; RC=0; return
		fi
		kill -0 $pid 2>/dev/null || break
		sleep 0.1
	done
	wait $pid; RC=$?
}

SPUB=$("$S" keygen --out "$TMP/server.key" 2>/dev/null) || fail "keygen"
P0=$("$C" keygen --out "$TMP/c0.key" 2>/dev/null) || fail "client keygen"
printf '%s site-3\n' "$P0" >"$TMP/allow.txt"
SEC=(--key "$TMP/server.key" --allow "$TMP/allow.txt")

# ---- 1. restart with --enrol for an id already enrolled ----
start s1 "${SEC[@]}" --enrol site-3,site-4
exited s1 0 "" "1: restart with --enrol site-3 (already bound)"
grep -q "site-3 is already enrolled, no token issued" "$TMP/s1.err" ||
	fail "1: no warning for the bound id: $(cat "$TMP/s1.err")"
grep -q "^enrolment token for client id site-4 " "$TMP/s1.out" || fail "1: site-4 got no token"
grep -q "client id site-3" "$TMP/s1.out" && fail "1: a token was issued for the bound site-3"
echo "ok 1: --enrol of an enrolled id is skipped with a warning; others still get a token"

[ $fails = 0 ] || exit 1
echo "cli_enrol: all ok"
