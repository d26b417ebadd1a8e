#!/usr/bin/env bash
# bare-debian-check.sh - proves the README's commands on a bare Debian 12 and
# the container deployment, with podman on this machine:
#   rootfs  mmdebstrap --variant=minbase bookworm, from the Debian mirror(s)
#           this machine's apt uses; cached, rebuilt when older than --max-age
#   import  podman import of that tarball as a local image (no registry)
#   deps    the git-tracked files copied into a container of that image (no
#           make, no compiler), then what the README's Quick start says:
#           `bash deploy/install-deps.sh`
#   test    `make test` in that container
#   run     `make run` in that container; its plot must exist
#   image   deploy/Containerfile built FROM that local image (both stages)
#   daemons a coordinator and two clients from the built image on 127.0.0.1
#           (--network host), secure channel, a few short rounds; passes when
#           the coordinator and both clients exit 0 after the last round
# Run from anywhere inside the checkout; needs root (or a working rootless
# podman and mmdebstrap) and the packages of
# `bash deploy/install-deps.sh --with-container`.
set -euo pipefail

prog=bare-debian-check
usage() {
	cat <<'EOF'
usage: deploy/bare-debian-check.sh [options]
Checks the README's Quick start (install-deps.sh, make test, make run) in a
bare Debian 12 container, then builds deploy/Containerfile and runs a
coordinator and two clients from the image. Network: Debian's archive and
127.0.0.1 only.

  --stages LIST     comma-separated subset of test,run,image,daemons (default
                    all; rootfs, import and, for test or run, deps always run)
  --cache-dir DIR   where the rootfs tarball is kept
                    (default ${XDG_CACHE_HOME:-~/.cache}/fedloha-bare-debian)
  --max-age DAYS    rebuild a cached rootfs older than this (default 7)
  --refresh         rebuild the rootfs even if the cached one is fresh
  --mirror URL      Debian mirror for bookworm and bookworm-updates only
                    (default: the bookworm, bookworm-updates and
                    bookworm-security entries of /etc/apt/sources.list{,.d})
  --rounds N        rounds of the daemon run (default 2)
  --image-tests     also run ctest inside the image build (default: skipped
                    when the test stage ran in this invocation, same sources)
  --skip-missing    exit 77 (skipped) instead of 1 when podman, runc or
                    mmdebstrap is not installed (also FL_SKIP_MISSING=1)
  --keep            keep the work folder (logs, build context) and images
  -h, --help        this text
exit status: 0 passed, 1 failed, 2 bad usage, 77 prerequisite missing and
--skip-missing given
EOF
}

die() { echo "$prog: $*" >&2; exit 1; }
T0=$(date +%s)
stage_t0=$T0
say() { echo "[$prog $(( $(date +%s) - T0 ))s] $*"; }
stage_done() { say "$1: ok in $(( $(date +%s) - stage_t0 ))s"; stage_t0=$(date +%s); }

stages=test,run,image,daemons
cache_dir=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/fedloha-bare-debian
max_age=7
refresh=0
mirror=""
rounds=2
image_tests=0
skip_missing=${FL_SKIP_MISSING:-0}
keep=0
while [ $# -gt 0 ]; do
	case "$1" in
	--stages) [ $# -ge 2 ] || { echo "$prog: --stages needs a value" >&2; exit 2; }; stages=$2; shift ;;
	--cache-dir) [ $# -ge 2 ] || { echo "$prog: --cache-dir needs a value" >&2; exit 2; }; cache_dir=$2; shift ;;
	--max-age) [ $# -ge 2 ] || { echo "$prog: --max-age needs a value" >&2; exit 2; }; max_age=$2; shift ;;
	--mirror) [ $# -ge 2 ] || { echo "$prog: --mirror needs a value" >&2; exit 2; }; mirror=$2; shift ;;
	--rounds) [ $# -ge 2 ] || { echo "$prog: --rounds needs a value" >&2; exit 2; }; rounds=$2; shift ;;
	--refresh) refresh=1 ;;
	--image-tests) image_tests=1 ;;
	--skip-missing) skip_missing=1 ;;
	--keep) keep=1 ;;
	-h|--help) usage; exit 0 ;;
	*) echo "$prog: unknown option '$1' (try --help)" >&2; exit 2 ;;
	esac
	shift
done
case "$max_age" in ''|*[!0-9]*) echo "$prog: --max-age must be a whole number of days" >&2; exit 2 ;; esac
case "$rounds" in ''|0|*[!0-9]*) echo "$prog: --rounds must be a positive integer" >&2; exit 2 ;; esac
want() { case ",$stages," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
for s in ${stages//,/ }; do
	case "$s" in test|run|image|daemons) ;; *) echo "$prog: unknown stage '$s' (test, run, image, daemons)" >&2; exit 2 ;; esac
done
if want daemons && ! want image; then
	echo "$prog: the daemons stage needs the image stage" >&2; exit 2
fi

# ---- prerequisites ----
missing=()
for c in podman runc mmdebstrap git tar; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
if [ ${#missing[@]} -gt 0 ]; then
	msg="missing ${missing[*]} (install with: bash deploy/install-deps.sh --with-container)"
	if [ "$skip_missing" = 1 ]; then echo "$prog: SKIPPED: $msg"; exit 77; fi
	die "$msg"
fi
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel 2>/dev/null) ||
	die "not inside a git checkout (the check copies the git-tracked files)"
cd "$repo"

# ---- private podman set-up: nothing global is touched ----
# The settings these machines need: runc, cgroupfs, host network, and no
# default ulimits (the hard open-files limit is below podman's default).
work=$(mktemp -d "${TMPDIR:-/tmp}/$prog.XXXXXX")
tag=$(basename "$work" | tr 'A-Z.' 'a-z-')
cat >"$work/containers.conf" <<'EOF'
[containers]
default_ulimits = []
netns = "host"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF="$work/containers.conf"
PODMAN=(podman --runtime runc --cgroup-manager=cgroupfs)
base_image=localhost/fedloha-base:bookworm-minbase
app_image=localhost/fedloha-check:$tag
containers=()
volumes=()
cleanup() {
	local rc=$?
	set +e
	for c in "${containers[@]}"; do "${PODMAN[@]}" rm -f -v -t 2 "$c" >/dev/null 2>&1; done
	for v in "${volumes[@]}"; do "${PODMAN[@]}" volume rm -f "$v" >/dev/null 2>&1; done
	if [ "$keep" = 1 ]; then
		echo "$prog: kept $work and image $app_image"
	else
		"${PODMAN[@]}" rmi -f "$app_image" >/dev/null 2>&1
		rm -rf "$work"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# fail STAGE LOG: the verdict line with the end of the log
fail() {
	[ -n "${2:-}" ] && [ -s "$2" ] && { echo "---- last 40 lines of $2"; tail -n 40 "$2"; echo "----"; }
	say "FAILED at $1 (log: ${2:-none}; --keep keeps it)"
	echo "$prog: VERDICT: FAIL ($1) after $(( $(date +%s) - T0 ))s"
	exit 1
}

# ---- rootfs: mmdebstrap, cached ----
# The apt lines for the rootfs: the host's bookworm, bookworm-updates and
# bookworm-security entries (one-line and deb822 formats), main only.
host_sources() {
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -r "$f" ] || continue
		awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
			print $(i), $(i + 1) }' "$f"
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		awk 'function flush() { if (types ~ /(^| )deb( |$)/ && enabled != "no")
				for (u in uris) for (s in suites) print u, s
				types = ""; enabled = ""; delete uris; delete suites }
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); next }
			{ key = tolower($1); sub(/:$/, "", key)
			  if (key == "types") { types = ""; for (i = 2; i <= NF; i++) types = types " " $i " " }
			  else if (key == "uris") for (i = 2; i <= NF; i++) uris[$i] = 1
			  else if (key == "suites") for (i = 2; i <= NF; i++) suites[$i] = 1
			  else if (key == "enabled") enabled = tolower($2) }
			END { flush() }' "$f"
	done
}
apt_lines=()
if [ -n "$mirror" ]; then
	apt_lines=("deb $mirror bookworm main" "deb $mirror bookworm-updates main")
else
	while read -r uri suite; do
		case "$suite" in bookworm|bookworm-updates|bookworm-security) ;; *) continue ;; esac
		line="deb $uri $suite main"
		case " ${apt_lines[*]-} " in *" $line "*) ;; *) apt_lines+=("$line") ;; esac
	done < <(host_sources | sort -u)
	has_main=0
	for l in "${apt_lines[@]-}"; do case "$l" in *" bookworm main") has_main=1 ;; esac; done
	[ "$has_main" = 1 ] || die "no 'bookworm' entry in /etc/apt/sources.list{,.d}; give --mirror URL"
fi
mkdir -p "$cache_dir" || die "cannot create the cache folder $cache_dir"
key=$(printf '%s\n' "${apt_lines[@]}" | sha256sum | cut -c1-12)
rootfs="$cache_dir/bookworm-minbase-$key.tar"
stage_t0=$(date +%s)
if [ "$refresh" = 0 ] && [ -s "$rootfs" ] && [ -z "$(find "$rootfs" -mtime +"$max_age")" ]; then
	say "rootfs: reusing $rootfs (from $(date -r "$rootfs" +%F); --refresh rebuilds)"
else
	say "rootfs: mmdebstrap --variant=minbase bookworm from: ${apt_lines[*]}"
	part="${rootfs%.tar}.part.tar"  # mmdebstrap picks the format from the name
	rm -rf "$part"
	mmdebstrap --variant=minbase bookworm "$part" "${apt_lines[@]}" \
		>"$work/rootfs.log" 2>&1 || { rm -rf "$part"; fail rootfs "$work/rootfs.log"; }
	mv "$part" "$rootfs"
	find "$cache_dir" -name 'bookworm-minbase-*.tar' ! -name "$(basename "$rootfs")" -delete
	stage_done rootfs
fi

# ---- import: re-imported only when the tarball changed ----
stamp="$(basename "$rootfs")-$(stat -c %Y-%s "$rootfs")"
have=$("${PODMAN[@]}" image inspect --format '{{index .Labels "fedloha.rootfs"}}' "$base_image" 2>/dev/null || true)
if [ "$have" = "$stamp" ]; then
	say "import: $base_image is up to date"
else
	say "import: podman import as $base_image"
	"${PODMAN[@]}" import --change "LABEL fedloha.rootfs=$stamp" --change 'CMD ["/bin/bash"]' \
		"$rootfs" "$base_image" >"$work/import.log" 2>&1 || fail import "$work/import.log"
	"${PODMAN[@]}" image prune -f --filter label=fedloha.rootfs >/dev/null 2>&1 || true
	stage_done import
fi

# ---- the tree: git-tracked files as they are in the working tree ----
[ -z "$(git status --porcelain --untracked-files=no)" ] ||
	say "note: tracked files have uncommitted changes; the check uses the working tree"
mkdir "$work/src"
git ls-files -z | while IFS= read -r -d '' f; do
	if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi  # not files deleted in the tree
done |
	tar --null -T - -cf - | tar -x -C "$work/src" || die "cannot copy the git-tracked files"

# ---- test, run: what the README tells a user on a bare Debian 12 ----
tested=0
if want test || want run; then
	c=$prog-bare-$tag; containers+=("$c")
	"${PODMAN[@]}" run -d --name "$c" --network host "$base_image" sleep infinity \
		>"$work/bare.log" 2>&1 || fail "bare container" "$work/bare.log"
	tar -C "$work/src" -cf - . | "${PODMAN[@]}" exec -i "$c" sh -ec 'mkdir /src; tar -x -C /src' \
		>>"$work/bare.log" 2>&1 || fail "bare container (copy)" "$work/bare.log"
	! "${PODMAN[@]}" exec "$c" sh -c 'command -v make' >/dev/null 2>&1 ||
		fail "bare container (make is already installed: not a bare image)"
	say "deps: bash deploy/install-deps.sh in a bare $base_image container"
	"${PODMAN[@]}" exec -w /src "$c" bash deploy/install-deps.sh >"$work/deps.log" 2>&1 ||
		fail deps "$work/deps.log"
	stage_done deps
	if want test; then
		say "test: make test"
		"${PODMAN[@]}" exec -w /src "$c" make test >"$work/test.log" 2>&1 || fail test "$work/test.log"
		say "test: $(grep -E 'tests passed' "$work/test.log" | tail -n 1)"
		tested=1
		stage_done test
	fi
	if want run; then
		say "run: make run"
		"${PODMAN[@]}" exec -w /src "$c" make run >"$work/run.log" 2>&1 || fail run "$work/run.log"
		"${PODMAN[@]}" exec -w /src "$c" test -s build/sim-results/accuracy_vs_mb.png ||
			fail "run (no build/sim-results/accuracy_vs_mb.png)" "$work/run.log"
		stage_done run
	fi
	"${PODMAN[@]}" rm -f -t 0 "$c" >/dev/null 2>&1 || true
fi

# ---- image: deploy/Containerfile on the same local base ----
if want image; then
	run_tests=1
	[ "$tested" = 1 ] && [ "$image_tests" = 0 ] && run_tests=0
	say "image: podman build -f deploy/Containerfile (both stages FROM $base_image, RUN_TESTS=$run_tests)"
	dangling_before=$("${PODMAN[@]}" images -q --filter dangling=true | sort -u)
	"${PODMAN[@]}" build --pull=never --network host \
		--build-arg BASE_IMAGE="$base_image" --build-arg RUNTIME_IMAGE="$base_image" \
		--build-arg RUN_TESTS=$run_tests \
		-f deploy/Containerfile -t "$app_image" "$work/src" >"$work/image.log" 2>&1 ||
		fail image "$work/image.log"
	# the build stage stays behind as an untagged image: drop the new ones
	if [ "$keep" = 0 ]; then
		comm -13 <(echo "$dangling_before") <("${PODMAN[@]}" images -q --filter dangling=true | sort -u) |
			xargs -r "${PODMAN[@]}" rmi -f >/dev/null 2>&1 || true
	fi
	stage_done image
fi

# ---- daemons: keys, a coordinator and two clients, on 127.0.0.1 ----
if want daemons; then
	say "daemons: keys, coordinator, 2 clients, $rounds rounds of 2nn fedpara on 127.0.0.1"
	log="$work/daemons.log"; : >"$log"
	keys=$prog-keys-$tag; volumes+=("$keys")
	RUN=("${PODMAN[@]}" run --network host --read-only --cap-drop ALL
		--security-opt no-new-privileges)
	c=$prog-keygen-$tag; containers+=("$c")
	"${RUN[@]}" --name "$c" -v "$keys:/var/lib/fedloha-keys" "$app_image" sh -ec '
		cd /var/lib/fedloha-keys
		fedloha-server keygen --out server.key > server.pub
		for i in 0 1; do echo "$(fedloha-client keygen --out client$i.key) client-$i" >> allow.txt; done' \
		>>"$log" 2>&1 || fail "daemons (keygen)" "$log"
	server=$prog-server-$tag; containers+=("$server")
	"${RUN[@]}" -d --name "$server" -v "$keys:/var/lib/fedloha-keys:ro" "$app_image" \
		fedloha-server run --listen 127.0.0.1:0 \
		--key /var/lib/fedloha-keys/server.key --allow /var/lib/fedloha-keys/allow.txt \
		--model 2nn --param fedpara --gamma 0.1 --rounds "$rounds" --min-clients 2 \
		--round-timeout 120 --eval-data fashion-mnist --eval-limit 1000 --seed 1 \
		--checkpoint /var/lib/fedloha/checkpoint.safetensors --out /var/lib/fedloha/model \
		>>"$log" 2>&1 || fail "daemons (server start)" "$log"
	port=""
	for _ in $(seq 300); do
		port=$("${PODMAN[@]}" logs "$server" 2>/dev/null | sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p')
		[ -n "$port" ] && break
		[ "$("${PODMAN[@]}" inspect --format '{{.State.Running}}' "$server")" = true ] || break
		sleep 0.1
	done
	[ -n "$port" ] || { "${PODMAN[@]}" logs "$server" >>"$log" 2>&1; fail "daemons (server did not listen)" "$log"; }
	say "daemons: coordinator listening on 127.0.0.1:$port"
	clients=()
	for i in 0 1; do
		c=$prog-client$i-$tag; containers+=("$c"); clients+=("$c")
		"${RUN[@]}" -d --name "$c" -v "$keys:/var/lib/fedloha-keys:ro" "$app_image" \
			fedloha-client run --server 127.0.0.1:"$port" --id client-$i \
			--key /var/lib/fedloha-keys/client$i.key --server-key /var/lib/fedloha-keys/server.pub \
			--num-clients 2 --client-index $i --limit 3000 --seed 1 --max-attempts 20 \
			--state-dir /var/lib/fedloha/state >>"$log" 2>&1 || fail "daemons (client $i start)" "$log"
	done
	src=$(timeout 300 "${PODMAN[@]}" wait "$server" 2>>"$log") || src=timeout
	rcs=()
	for c in "${clients[@]}"; do rcs+=("$(timeout 60 "${PODMAN[@]}" wait "$c" 2>>"$log" || echo timeout)"); done
	for c in "$server" "${clients[@]}"; do
		{ echo "==== $c"; "${PODMAN[@]}" logs "$c" 2>&1; } >>"$log"
	done
	[ "$src" = 0 ] || fail "daemons (coordinator exit $src)" "$log"
	[ "${rcs[*]}" = "0 0" ] || fail "daemons (client exits ${rcs[*]})" "$log"
	last=$("${PODMAN[@]}" logs "$server" 2>&1 | grep -E "^round $rounds/$rounds " | head -n 1 || true)
	[ -n "$last" ] || fail "daemons (no 'round $rounds/$rounds' line)" "$log"
	acc=$("${PODMAN[@]}" logs "$server" 2>&1 | grep -E "^round $rounds central test-acc" | head -n 1 || true)
	say "daemons: $last"
	[ -z "$acc" ] || say "daemons: $acc"
	stage_done daemons
fi

say "all stages passed ($stages)"
echo "$prog: VERDICT: PASS ($stages) in $(( $(date +%s) - T0 ))s"
