#!/usr/bin/env bash
# cli_enrol.sh - the coordinator's enrolment options at startup (docs/SECURITY.md):
#   1. a restart with --enrol ID after ID was enrolled issues no token for
#      it (a warning says so) and runs; other ids still get their token
#   2. the config file's "enrol" takes client ids only: the old on/off
#      values (false, "0", 0, "no", true, ...) are refused with a way out
#   3. the command line's --enrol replaces the config file's ids (the same
#      id in both is not "given twice")
#   4. --enrol with --insecure (which issues no tokens) is refused
#   5. a group-writable or symlinked token folder is refused at startup
#   6. token files left in the token folder by an earlier start are
#      removed at startup (the log says how many); other files stay
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

# ---- 2. old on/off values of "enrol" in the config file ----
for v in false '"false"' 0 '"0"' '"No"' '"TRUE"' 1 '"yes"'; do
	printf '{"enrol": %s}\n' "$v" >"$TMP/cfg.json"
	start s2 "${SEC[@]}" --config-file "$TMP/cfg.json"
	exited s2 2 "" "2: \"enrol\": $v"
	grep -qE "not a boolean|not taken as a client id" "$TMP/s2.err" ||
		fail "2: \"enrol\": $v not explained: $(cat "$TMP/s2.err")"
	grep -q "^enrolment token" "$TMP/s2.out" && fail "2: \"enrol\": $v issued a token"
done
echo "ok 2: old on/off values of \"enrol\" are refused (exit 2, with the way out)"

# ---- 3. --enrol on the command line replaces the config file's list ----
printf '{"enrol": "site-5,site-6"}\n' >"$TMP/cfg.json"
start s3 "${SEC[@]}" --config-file "$TMP/cfg.json" --enrol site-6
exited s3 0 "" "3: the same id in the file and on the command line"
grep -q "^enrolment token for client id site-6 " "$TMP/s3.out" || fail "3: site-6 got no token"
grep -q "client id site-5" "$TMP/s3.out" && fail "3: the file's site-5 was still enrolled"
start s3b "${SEC[@]}" --config-file "$TMP/cfg.json"
grep -q "^enrolment token for client id site-5 " "$TMP/s3b.out" || fail "3: the file's ids unused"
echo "ok 3: --enrol on the command line replaces the config file's ids"

# ---- 4. --enrol with --insecure ----
start s4 --insecure --enrol site-7
exited s4 2 "--enrol needs the secure channel" "4: --enrol with --insecure"
echo "ok 4: --enrol with --insecure is refused (exit 2)"

# ---- 5. the token folder's owner and mode ----
mkdir -p "$TMP/tok5" && chmod 777 "$TMP/tok5"
start s5 "${SEC[@]}" --enrol site-8 --enrol-dir "$TMP/tok5"
exited s5 2 "is group- or world-writable (mode 777): run chmod 700" "5: a writable token folder"
[ -e "$TMP/tok5/site-8.token" ] && fail "5: a token file was written in the writable folder"
chmod 700 "$TMP/tok5" && ln -s "$TMP/tok5" "$TMP/tok5link"
start s5b "${SEC[@]}" --enrol site-8 --enrol-dir "$TMP/tok5link"
exited s5b 2 "a symbolic link or not a folder" "5: a symlinked token folder"
echo "ok 5: a group-writable or symlinked token folder is refused (exit 2)"

# ---- 6. stale token files ----
mkdir -p "$TMP/tok6" && chmod 700 "$TMP/tok6"
echo stale >"$TMP/tok6/site-1.token"; echo stale >"$TMP/tok6/gone.token"; echo x >"$TMP/tok6/keep.txt"
start s6 "${SEC[@]}" --enrol site-9 --enrol-dir "$TMP/tok6"
exited s6 0 "" "6: stale token files"
grep -q "enrolment token folder $TMP/tok6: 2 stale token files removed" "$TMP/s6.err" ||
	fail "6: the removal is not logged: $(cat "$TMP/s6.err")"
[ -e "$TMP/tok6/site-1.token" ] || [ -e "$TMP/tok6/gone.token" ] && fail "6: a stale token file is left"
[ -e "$TMP/tok6/keep.txt" ] || fail "6: a file that is no token file was removed"
echo "ok 6: stale token files are removed at startup and counted in the log"

[ $fails = 0 ] || exit 1
echo "cli_enrol: all ok"
