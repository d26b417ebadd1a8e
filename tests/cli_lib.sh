# cli_lib.sh - helpers sourced by the command-line tests (bash). Checks that
# count failures: fail, expect CODE CMD... (stdout / stderr in $TMP/out and
# $TMP/err), contains FILE TEXT, exited NAME CODE REASON WHAT. For the daemon tests: await_port NAME PID,
# which waits for the "listening on HOST:PORT" line a background
# fedloha-server prints to $TMP/NAME.out and sets PORT (the caller's fail
# ends the test when it does not come), wait_for and daemon_setup; py, for
# checks in Python. Nothing here starts a process but py's python3.

# py ARGS...: python3 with the tests' modules (st_floats.py) importable and
# no bytecode written into the source tree.
TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py() { PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$TESTS_DIR" python3 "$@"; }

fails=0
fail() {
	echo "FAIL: $*"
	fails=$((fails + 1))
}

expect() {
	local want=$1
	shift
	"$@" >"$TMP/out" 2>"$TMP/err"
	local rc=$?
	[ "$rc" -eq "$want" ] || fail "exit $rc (want $want): $*: $(head -c 300 "$TMP/err")"
}

contains() {
	grep -qF -- "$2" "$1" || fail "$1 lacks '$2': $(head -c 400 "$1")"
}

# exited NAME CODE REASON WHAT: the run NAME just made (its exit status in
# $RC, its stderr in $TMP/NAME.err) ended with CODE and, unless REASON is
# empty, its stderr matches REASON (a grep pattern); WHAT names the check in
# failures.
exited() {
	[ "$RC" = "$2" ] || fail "$4: $1 exit $RC (expected $2)"
	[ -z "$3" ] || grep -q -- "$3" "$TMP/$1.err" || fail "$4: $1 does not say why ('$3')"
}

await_port() {
	local name=$1 pid=$2
	for _ in $(seq 100); do
		PORT=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$TMP/$name.out")
		[ -n "$PORT" ] && return 0
		kill -0 "$pid" 2>/dev/null || fail "$name did not start"
		sleep 0.1
	done
	fail "$name: no 'listening on' line"
}

# wait_for FILE REGEX SECONDS: 0 once a line of FILE matches, else 1.
wait_for() {
	for _ in $(seq $(($3 * 20))); do
		grep -qE "$2" "$1" 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}

# daemon_setup NAME LINES: the daemon tests' start (pgrep must be there).
# Sets BIN, TMP (made; removed at exit, when every background job is
# killed too) and DATA (Fashion-MNIST: without it the test is skipped,
# exit 77); fail then ends the test at once, showing the last LINES lines
# of every output file.
daemon_setup() {
	command -v pgrep >/dev/null || { echo "FAIL: pgrep not found (procps; deploy/install-deps.sh installs it)"; exit 1; }
	BIN=${FL_BIN:-build/bin}
	TMP=${FL_TMP:-/tmp}/$1.$$
	DATA=${FL_LOOPBACK_DATA:-/usr/share/datasets/fashion-mnist}
	if [ ! -e "$DATA/train-images-idx3-ubyte.gz" ] && [ ! -e "$DATA/train-images-idx3-ubyte" ]; then
		echo "SKIP: Fashion-MNIST not found in $DATA (apt install dataset-fashion-mnist)"
		exit 77
	fi
	mkdir -p "$TMP"
	trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT
	FAIL_TAIL=$2
	fail() {
		echo "FAIL: $*"
		for f in "$TMP"/*.out "$TMP"/*.err; do
			[ -s "$f" ] && { echo "== $f"; tail -n "$FAIL_TAIL" "$f"; }
		done
		exit 1
	}
}
