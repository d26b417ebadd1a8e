# fedloha - top-level entry points. Each target does its own set-up on a
# fresh Debian 12 machine: missing packages, configure, build.
#   make run    build and run the main job (the default fedloha-sim comparison)
#   make test   build and run the test suite
#   make asan   the test suite built with AddressSanitizer + UBSan
#   make clang  the test suite built with clang (deploy/install-deps.sh --with-clang)
#   make format clang-format every C file in place (.clang-format)
#   make soak   the daemons for SOAK_SECONDS (3600) on 127.0.0.1: RSS and fds
#   make faults the daemons under injected network faults (root; minutes)
BUILD ?= build
ASAN_BUILD ?= build-asan
CLANG_BUILD ?= build-clang
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=
SOAK_SECONDS ?= 3600
SOAK_EVERY ?= 10

.PHONY: all deps build test run bench asan clang format clean soak faults

all: build

deps:
	@bash deploy/install-deps.sh

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# Every benchmark program, JSON lines on stdout (a few minutes on 2 cores).
bench: build
	$(BUILD)/bin/fl-bench
	$(BUILD)/bin/fl-bench --threads 2
	$(BUILD)/bin/fl-bench-train
	$(BUILD)/bin/fl-bench-channel

# The built-in simulation (fedloha-sim --help): Fashion-MNIST, 20 clients,
# dense vs fedpara vs lowrank; prints the table and the plot's path.
run: build
	$(BUILD)/bin/fedloha-sim --out $(BUILD)/sim-results

asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DFL_SANITIZE=address,undefined $(CMAKE_FLAGS)
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j $(JOBS)

clang: deps
	@command -v clang >/dev/null || { echo "make clang: needs clang (deploy/install-deps.sh --with-clang)" >&2; exit 1; }
	cmake -S . -B $(CLANG_BUILD) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)
	cmake --build $(CLANG_BUILD) -j $(JOBS)
	cd $(CLANG_BUILD) && ctest --output-on-failure -j $(JOBS)

# A coordinator and 3 clients over the secure channel, many short rounds;
# the CSV and summary land in $(BUILD)/soak (tests/faults/soak.sh --help).
soak: build
	bash tests/faults/soak.sh --seconds $(SOAK_SECONDS) --every $(SOAK_EVERY) \
	  --bin $(BUILD)/bin --out $(BUILD)/soak

# The daemons under network faults on network namespaces (root; minutes):
# proxies with toxics, tbf caps, a partition, 20 SIGKILLs; the table lands in
# $(BUILD)/faults/summary.txt (tests/faults/run.sh --help). Not in make test.
faults: build
	bash tests/faults/run.sh --bin $(BUILD)/bin --out $(BUILD)/faults

format:
	@command -v clang-format >/dev/null || { echo "make format: needs clang-format (apt-get install clang-format)" >&2; exit 1; }
	git ls-files '*.c' '*.h' | xargs clang-format -i

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(CLANG_BUILD)
