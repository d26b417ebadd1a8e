#!/usr/bin/env bash
# cli_secure.sh - the daemons' secure channel end to end, over TCP on
# 127.0.0.1 (docs/SECURITY.md):
#   1. keygen: 0600 key files (missing folders made 0700), pubkey prints the
#      same fl1: line, an existing
#      file is not overwritten (unless --force); missing keys are a clear
#      error naming keygen
#   2. a client whose key is not in the allow-list is refused (both ends say
#      why; the client exits 3); a listed key with another --id is refused
#      (the allow-list name binds the client id)
#   3. a client pinning the wrong server key refuses to go on and retries
#      (unauthenticated: exit 1 after --max-attempts, never 3)
#   4. --insecure on one side only fails clearly on both ends
#   5. a handshake-version-1 peer gets the plaintext Error "handshake
#      version 1, this server speaks 2"; SIGHUP: a bad allow-list (a bad
#      line, or a group/world-writable file) keeps the old one and logs it;
#      a newly listed client is admitted without a restart; the round then
#      runs over the channel
#   6. enrolment: a token issued for a client id admits a new client once
#      (its key lands in the allow-list file bound to that id, so another
#      id is refused), a second use is refused; a second connection with a
#      live key is refused
#   7. SIGHUP with a key removed from the allow-list closes its connection
# Every process runs under timeout(1); the trap kills what is left.
set -u
umask 022 # the coordinator refuses a group-writable allow-list
. "$(dirname "$0")/cli_lib.sh"
daemon_setup cli_secure 8
START=$(date +%s)
S="$BIN/fedloha-server"
C="$BIN/fedloha-client"

# start_server NAME ARGS...: background server; sets PORT and SPID.
start_server() {
	local name=$1; shift
	timeout 30 "$S" run --listen 127.0.0.1:0 --model 2nn --rounds 1 --round-timeout 20 "$@" \
		>"$TMP/$name.out" 2>"$TMP/$name.err" &
	SPID=$!
	await_port "$name" $SPID
}
# client NAME INDEX ARGS...: runs a client in the foreground; sets RC.
client() {
	local name=$1 idx=$2; shift 2
	timeout 20 "$C" run --server 127.0.0.1:$PORT --num-clients 8 --client-index "$idx" \
		--limit 100 --backoff-min 0.05 --backoff-max 0.2 "$@" >"$TMP/$name.out" 2>"$TMP/$name.err"
	RC=$?
}
# bg_client NAME INDEX ARGS...: the same in the background; sets CPID.
bg_client() {
	local name=$1 idx=$2; shift 2
	timeout 20 "$C" run --server 127.0.0.1:$PORT --num-clients 8 --client-index "$idx" \
		--limit 100 --backoff-min 0.05 --backoff-max 0.2 "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
	CPID=$!
}
# hup: SIGHUP to the daemon that the timeout(1) process SPID runs.
hup() { kill -HUP "$(pgrep -P "$SPID")"; }

# ---- 1. keys ----
# --help of the key commands (and of fl-bench-channel): usage on stdout, exit 0
for cmd in "$C keygen" "$C pubkey" "$S keygen" "$S pubkey" "$BIN/fl-bench-channel"; do
	$cmd --help >"$TMP/help.out" 2>"$TMP/help.err"; rc=$?
	[ $rc = 0 ] && [ ! -s "$TMP/help.err" ] && grep -q "^usage: " "$TMP/help.out" ||
		fail "1: '$cmd --help': exit $rc, stdout $(wc -c <"$TMP/help.out") bytes, stderr $(cat "$TMP/help.err")"
done
"$C" keygen >/dev/null 2>"$TMP/help.err" && fail "1: keygen without --out accepted"
grep -q "^usage: fedloha-client keygen" "$TMP/help.err" || fail "1: keygen without --out: no usage"
SPUB=$("$S" keygen --out "$TMP/server.key" 2>"$TMP/keygen.err") || fail "1: server keygen"
[[ $SPUB =~ ^fl1:[A-Za-z0-9_-]{43}$ ]] || fail "1: server public key '$SPUB'"
[ "$(stat -c %a "$TMP/server.key")" = 600 ] || fail "1: server key mode $(stat -c %a "$TMP/server.key")"
[ "$("$S" pubkey --key "$TMP/server.key")" = "$SPUB" ] || fail "1: server pubkey differs"
for i in 0 1 2 3 4; do
	P[$i]=$("$C" keygen --out "$TMP/c$i.key" 2>/dev/null) || fail "1: client keygen"
	[ "$(stat -c %a "$TMP/c$i.key")" = 600 ] || fail "1: client key mode"
done
[ "$("$C" pubkey --key "$TMP/c1.key")" = "${P[1]}" ] || fail "1: client pubkey differs"
# a fresh HOME: keygen makes the missing folders (0700), as docs/SECURITY.md assumes
mkdir -p "$TMP/home"
HP=$(HOME="$TMP/home" bash -c '"$1" keygen --out ~/.fedloha/client.key' _ "$C" 2>"$TMP/home.err") ||
	fail "1: client keygen in a fresh HOME: $(cat "$TMP/home.err")"
[ "$(stat -c %a "$TMP/home/.fedloha")" = 700 ] || fail "1: ~/.fedloha mode $(stat -c %a "$TMP/home/.fedloha")"
[ "$(stat -c %a "$TMP/home/.fedloha/client.key")" = 600 ] || fail "1: key mode in a fresh HOME"
[ "$("$C" pubkey --key "$TMP/home/.fedloha/client.key")" = "$HP" ] || fail "1: fresh-HOME pubkey differs"
"$S" keygen --out "$TMP/etc/fedloha/server.key" >/dev/null 2>"$TMP/home.err" ||
	fail "1: server keygen into a missing folder: $(cat "$TMP/home.err")"
[ "$(stat -c %a "$TMP/etc/fedloha")" = 700 ] && [ "$(stat -c %a "$TMP/etc")" = 700 ] ||
	fail "1: server key folder mode $(stat -c %a "$TMP/etc/fedloha")"
cp "$TMP/c4.key" "$TMP/c4.bak"
"$C" keygen --out "$TMP/c4.key" >/dev/null 2>"$TMP/over.err" && fail "1: keygen overwrote a key"
grep -q "already exists" "$TMP/over.err" || fail "1: no reason for not overwriting"
cmp -s "$TMP/c4.key" "$TMP/c4.bak" || fail "1: refused keygen still changed the file"
"$S" keygen --out "$TMP/server.key" >/dev/null 2>&1 && fail "1: server keygen overwrote a key"
NEW=$("$C" keygen --out "$TMP/c4.key" --force 2>/dev/null) || fail "1: keygen --force"
[ "$NEW" != "${P[4]}" ] || fail "1: --force kept the old key"
P[4]=$NEW
chmod 644 "$TMP/c4.bak"
"$C" pubkey --key "$TMP/c4.bak" >/dev/null 2>"$TMP/mode.err" && fail "1: a 0644 key file was accepted"
grep -q "chmod 600" "$TMP/mode.err" || fail "1: no chmod hint for a 0644 key"
# --max-attempts N: N connects, N-1 reconnect delays, each in [--backoff-min, --backoff-max]
timeout 20 "$C" run --server 127.0.0.1:1 --key "$TMP/c0.key" --server-key "$SPUB" --num-clients 8 \
	--client-index 0 --limit 100 --max-attempts 4 --backoff-min 0.08 --backoff-max 0.2 \
	>"$TMP/att.out" 2>"$TMP/att.err"; rc=$?
[ $rc = 1 ] || fail "1: --max-attempts 4 against a closed port: exit $rc"
delays=$(sed -n 's/.*reconnecting to 127.0.0.1:1 in \([0-9]*\) ms$/\1/p' "$TMP/att.err" | tr '\n' ' ')
[ "$(echo $delays | wc -w)" = 3 ] || fail "1: --max-attempts 4 made $(($(echo $delays | wc -w) + 1)) attempts"
for d in $delays; do
	[ "$d" -ge 80 ] && [ "$d" -le 200 ] || fail "1: reconnect delay $d ms outside [80, 200] ($delays)"
done
grep -q "gave up after 4 failed connection attempts" "$TMP/att.err" || fail "1: no give-up line"
timeout 5 "$S" run --listen 127.0.0.1:0 >/dev/null 2>"$TMP/nokey.err"; RC=$?
exited nokey 2 "fedloha-server keygen" "1: server without --key"
timeout 5 "$C" run --server 127.0.0.1:1 >/dev/null 2>"$TMP/nokey.err"; RC=$?
exited nokey 2 "fedloha-client keygen" "1: client without --key"
echo "ok 1: keys 0600, pubkey matches, no overwrite without --force, missing keys explained"

printf '# test allow-list\n%s client-0\n' "${P[0]}" >"$TMP/allow.txt"
SEC=(--key "$TMP/server.key" --allow "$TMP/allow.txt")
ck() { echo --key "$TMP/c$1.key" --server-key "$SPUB"; }

# ---- 2. unknown key refused; the name binds the id ----
start_server s2 "${SEC[@]}" --min-clients 1
client c2_unknown 1 $(ck 1) --id client-1
exited c2_unknown 3 "refused this client: client key ${P[1]} is not in the allow-list" "2: unlisted client"
# a refused client prints its totals like any other: nothing up after the
# handshake, no frame down but the refusal; socket bytes include the handshake
grep -q "^client client-1: refused after 0 training rounds (bytes up 0 down [0-9]*)$" "$TMP/c2_unknown.out" ||
	fail "2: refused client prints no byte totals: $(cat "$TMP/c2_unknown.out")"
grep -qE "^client client-1: socket bytes in [1-9][0-9]* out [1-9][0-9]* \(frames down [0-9]+ up 0; handshakes in [1-9][0-9]* out [1-9][0-9]*; channels 0\)$" "$TMP/c2_unknown.out" ||
	fail "2: refused client prints no socket bytes: $(cat "$TMP/c2_unknown.out")"
wait_for "$TMP/s2.err" "refused: client key ${P[1]} is not in the allow-list" 5 ||
	fail "2: server does not log the refusal"
client c2_wrongid 0 $(ck 0) --id mallory
exited c2_wrongid 3 "client id 'mallory' does not match the allow-list name 'client-0'" \
	"2: listed key with another id"
client c2_ok 0 $(ck 0)
exited c2_ok 0 "" "2: listed client"
wait $SPID || fail "2: server exit $?"
grep -q "channels 2 refused 2" "$TMP/s2.out" || fail "2: server totals: $(grep socket "$TMP/s2.out")"
echo "ok 2: unknown key and wrong id refused (exit 3, both ends say why); listed client ran"

# ---- 3. wrong pinned server key ----
start_server s3 "${SEC[@]}" --min-clients 1
client c3 0 --key "$TMP/c0.key" --server-key "${P[2]}" --max-attempts 2
exited c3 1 "the server's key $SPUB is not the pinned key ${P[2]} (unauthenticated" "3: wrong pinned key"
[ "$(grep -c "is not the pinned key ${P[2]}" "$TMP/c3.err")" = 2 ] || fail "3: not retried once"
wait_for "$TMP/s3.err" "closed the connection during the handshake" 5 || fail "3: server log"
echo "ok 3: a client pinning another key refuses the server, logs it and retries (exit 1 after --max-attempts)"

# ---- 4. --insecure on one side only ----
client c4a 0 --insecure
exited c4a 3 "requires the fedloha secure channel" "4: insecure client vs secure server"
grep -q "insecure: traffic is neither encrypted nor authenticated" "$TMP/c4a.err" ||
	fail "4: no --insecure warning"
wait_for "$TMP/s3.err" "did not start a fedloha secure handshake" 5 || fail "4: secure server log"
# a peer of another handshake version gets the real reason, as a plaintext
# Error (what it reads while waiting for msg2), not just a close
/usr/bin/python3 - "$PORT" >"$TMP/oldpeer.out" <<'PY'
import socket, struct, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
c.sendall(struct.pack(">I", 70) + b"FLH1\x01\x00" + bytes(64))
got = b""
while True:
    d = c.recv(4096)
    if not d: break
    got += d
print(got[4:].decode("ascii", "replace"))
PY
grep -q "handshake version 1, this server speaks 2" "$TMP/oldpeer.out" ||
	fail "4: an old handshake version was not told why: $(cat -v "$TMP/oldpeer.out")"
kill -TERM $SPID; wait $SPID
start_server s4 --insecure --min-clients 1
grep -q "insecure: traffic is neither encrypted nor authenticated" "$TMP/s4.err" ||
	fail "4: no --insecure warning on the server"
client c4b 0 $(ck 0) --max-attempts 2
exited c4b 1 "unauthenticated message from the peer (plaintext): this server runs with --insecure" \
	"4: secure client vs insecure server"
wait_for "$TMP/s4.err" "refused: this server runs with --insecure" 5 || fail "4: insecure server log"
client c4c 0 --insecure
exited c4c 0 "" "4: insecure pair"
wait $SPID || fail "4: insecure server exit $?"
# a plaintext Error before the channel is up is unauthenticated: shown
# sanitised (no terminal escapes), and said to be unauthenticated
/usr/bin/python3 - "$TMP/fake.port" <<'PY' &
import socket, struct, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
c, _ = s.accept(); c.recv(4096)
msg = b"\x1b[2J\x1b]0;owned\x07server \x9b31m says\nhi"
err = b"\x08\x10" + b"\x12" + bytes([len(msg)]) + msg          # Error{code 16, message}
env = b"\x4a" + bytes([len(err)]) + err                          # Envelope{error = 9}
c.sendall(struct.pack(">I", len(env)) + env); c.close()
PY
FAKE=$!
for _ in $(seq 50); do [ -s "$TMP/fake.port" ] && break; sleep 0.1; done
PORT=$(cat "$TMP/fake.port")
client c4d 0 $(ck 0) --max-attempts 1
wait $FAKE
grep -qF "unauthenticated message from the peer (plaintext): ?[2J?]0;owned?server ?31m says?hi" \
	"$TMP/c4d.err" || fail "4: plaintext Error not sanitised: $(cat -v "$TMP/c4d.err")"
grep -q "$(printf '\033')" "$TMP/c4d.err" && fail "4: an escape byte reached the terminal"
echo "ok 4: --insecure on one side fails on both ends with a reason; both --insecure works"

# ---- 5. SIGHUP reload ----
start_server s5 "${SEC[@]}" --min-clients 2
# a peer speaking handshake version 1: msg1 "FLH1", version 1, flags, 64 bytes
/usr/bin/python3 - "$PORT" >"$TMP/v1.out" <<'PY' || fail "5: version-1 peer: $(cat "$TMP/v1.out")"
import os, socket, struct, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
c.sendall(struct.pack(">I", 70) + b"FLH1\x01\x00" + os.urandom(64))
data = b""
while True:
    b = c.recv(4096)
    if not b:
        break
    data += b
def fields(buf):  # protobuf: field number -> bytes (length-delimited) or int
    out, i = {}, 0
    def varint():
        nonlocal i
        v = s = 0
        while True:
            x = buf[i]; i += 1; v |= (x & 0x7f) << s; s += 7
            if x < 0x80:
                return v
    while i < len(buf):
        key = varint()
        if key & 7 == 0:
            out[key >> 3] = varint()
        elif key & 7 == 2:
            n = varint(); out[key >> 3] = buf[i:i + n]; i += n
        else:
            raise SystemExit("wire type %d" % (key & 7))
    return out
n = struct.unpack(">I", data[:4])[0]
assert len(data) == 4 + n, "one frame, then the close: %r" % data
err = fields(fields(data[4:])[9])                 # Envelope.error = 9
want = b"secure channel: handshake version 1, this server speaks 2"
assert err.get(1) == 8 and err.get(2) == want, err  # ERROR_CODE_UNSUPPORTED
print("ok")
PY
bg_client c5_0 0 $(ck 0); c0=$CPID
client c5_1a 1 $(ck 1)
exited c5_1a 3 "" "5: unlisted client"
echo "fl1:not-a-key client-9" >>"$TMP/allow.txt"
hup
wait_for "$TMP/s5.err" "keeping the previous allow-list \(1 keys\)" 5 || fail "5: bad list not refused"
printf '%s client-0\n%s client-1\n' "${P[0]}" "${P[1]}" >"$TMP/allow.txt"
chmod 666 "$TMP/allow.txt"
hup
wait_for "$TMP/s5.err" "NOT reloaded.*writable by group/others \(mode 666\).*keeping the previous allow-list \(1 keys\)" 5 ||
	fail "5: a writable list was not refused: $(cat "$TMP/s5.err")"
chmod 644 "$TMP/allow.txt"
printf '# test allow-list\n%s client-0\n%s client-1\n' "${P[0]}" "${P[1]}" >"$TMP/allow.txt"
hup
wait_for "$TMP/s5.err" "allow-list of 2 keys in force" 5 || fail "5: reload not logged"
client c5_1b 1 $(ck 1)
exited c5_1b 0 "" "5: newly listed client"
wait $c0 || fail "5: client 0 exit $?"
wait $SPID || fail "5: server exit $?"
grep -q "^round 1/1 selected 2 reported 2" "$TMP/s5.out" || fail "5: the round did not run"
echo "ok 5: a version-1 peer was told why; SIGHUP kept the old list on a bad line and a writable file, then admitted client-1 without a restart"

# ---- 6. enrolment, once; one live connection per key ----
start_server s6 "${SEC[@]}" --min-clients 2 --enrol site-2 --enrol-minutes 5
TFILE=$(sed -n 's/^enrolment token for client id site-2 in \([^ ]*\) .*/\1/p' "$TMP/s6.out")
[ "$TFILE" = "$TMP/enrol-tokens/site-2.token" ] || fail "6: token file not printed: $(cat "$TMP/s6.out")"
[ "$(stat -c %a "$TFILE")" = 600 ] || fail "6: token file mode $(stat -c %a "$TFILE")"
grep -q "enrolment token [A-Za-z0-9_-]\{43\}" "$TMP/s6.out" && fail "6: the token itself was printed"
mkdir -p "$TMP/cred" && cp "$TFILE" "$TMP/cred/fedloha-enrol-token" # kept for the reuse check
# the token on the command line is refused; a token file others can read too
client c6_cli 2 $(ck 2) --id site-2 --enrol-token "$(cat "$TFILE")"
exited c6_cli 2 "use --enrol-token-file FILE" "6: --enrol-token"
cp "$TFILE" "$TMP/open.token" && chmod 644 "$TMP/open.token"
client c6_open 2 $(ck 2) --id site-2 --enrol-token-file "$TMP/open.token"
exited c6_open 2 "chmod 600" "6: a token file readable by others"
# the token is for site-2: its key is bound to that id, another id is refused
client c6_bad 2 $(ck 2) --id site-9 --enrol-token-file "$TFILE"
exited c6_bad 3 "does not match the allow-list name 'site-2'" "6: enrolment under another id"
grep -q "^${P[2]} site-2\$" "$TMP/allow.txt" || fail "6: enrolled key not bound to site-2 in the allow-list file"
[ -e "$TFILE" ] && fail "6: the used token's file is still there"
bg_client c6_2 2 $(ck 2) --id site-2; c2=$CPID
wait_for "$TMP/c6_2.err" "secure channel up" 10 || fail "6: enrolled client not admitted"
CREDENTIALS_DIRECTORY="$TMP/cred" client c6_3 3 $(ck 3)
exited c6_3 3 "unknown, already used or expired" "6: second use of the token (systemd credential)"
client c6_dup 5 $(ck 2) --id site-2 --max-attempts 1
exited c6_dup 1 "" "6: second connection with a live key"
grep -q "another connection with client key ${P[2]} is already open" "$TMP/s6.err" ||
	fail "6: duplicate key not refused"
client c6_0 0 $(ck 0)
exited c6_0 0 "" "6: client 0"
wait $c2 || fail "6: enrolled client exit $?"
wait $SPID || fail "6: server exit $?"
echo "ok 6: token file for site-2 (0600, removed once used) bound the key to site-2 (other id refused), reuse refused, duplicate live key refused"

# ---- 7. a key removed from the allow-list loses its live connection ----
printf '%s client-0\n' "${P[0]}" >"$TMP/allow.txt"
start_server s7 "${SEC[@]}" --min-clients 2
bg_client c7 0 $(ck 0); c0=$CPID
wait_for "$TMP/s7.err" "secure channel up" 10 || fail "7: client 0 not admitted"
printf '# nobody\n' >"$TMP/allow.txt"
hup
wait $c0; RC=$?
exited c7 3 "was removed from the allow-list" "7: removed client"
kill -TERM $SPID; wait $SPID
echo "ok 7: SIGHUP with the key removed closed its live connection (client exit 3)"

echo "cli_secure: all ok in $(($(date +%s) - START)) s"
