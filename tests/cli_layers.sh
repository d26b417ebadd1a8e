#!/bin/bash
# cli_layers.sh - the layering rules hold in the built executables: the edge
# client (fedloha-client) and the adapter tool contain no coordinator code
# (no srv_ symbol), the coordinator daemon (fedloha-server) no client code
# but the edge client's transport, which carries a mid-tier aggregator's
# link to its parent (no cli_ symbol but cli_transport_*: no session, no
# training); only fedloha-sim holds both. Reads symbol tables with nm
# (binutils); the include paths already keep a layer from seeing the headers
# above it, this checks what was linked.
set -u
FL_BIN=${FL_BIN:-build/bin}
command -v nm >/dev/null || { echo "skipped: nm (binutils) not installed"; exit 77; }

fails=0
fail() {
	echo "FAIL: $*"
	fails=$((fails + 1))
}

# defined PROG PREFIX: the functions and data PROG defines whose name starts
# with PREFIX.
defined() {
	nm --defined-only "$FL_BIN/$1" | awk -v p="$2" '$2 ~ /^[TtDdBbRr]$/ && index($3, p) == 1 {print $3}'
}

for prog in fedloha-client fedloha-server fedloha-sim fedloha-adapter; do
	[ -x "$FL_BIN/$prog" ] || fail "$FL_BIN/$prog not built"
done
[ "$fails" -eq 0 ] || exit 1

for prog in fedloha-client fedloha-adapter; do
	bad=$(defined "$prog" srv_ | head -5)
	[ -z "$bad" ] || fail "$prog links coordinator code: $bad"
done
bad=$(defined fedloha-server cli_ | grep -v '^cli_transport_' | head -5)
[ -z "$bad" ] || fail "fedloha-server links client code: $bad"
# the checks above must be able to fail: the simulator holds both sides
[ -n "$(defined fedloha-sim srv_engine_)" ] || fail "fedloha-sim: no srv_engine_ symbol found (nm output changed?)"
[ -n "$(defined fedloha-sim cli_session_)" ] || fail "fedloha-sim: no cli_session_ symbol found"
[ -n "$(defined fedloha-client cli_session_)" ] || fail "fedloha-client: no cli_session_ symbol found"

if [ "$fails" -eq 0 ]; then
	echo "cli_layers: ok"
	exit 0
fi
echo "cli_layers: $fails failure(s)"
exit 1
