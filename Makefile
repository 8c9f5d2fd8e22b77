# Thin wrapper over scripts/deps.sh, CMake and ctest.
#   make run        build, then ./build/loom examples/main.lua
#   make test       make fuzz, then sanitizer build + ctest (build-asan), then normal build +
#                   ctest (build)
#   make test-fast  normal build + ctest only
#   make bench      bench/run.sh against the peers
#   make fuzz       clang + libFuzzer build (build-fuzz), each fuzz/ target for FUZZ_SECS
SHELL := /bin/bash
MAKEFLAGS += --no-print-directory
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
# 40 s a target: 14 targets two at a time is under 5 min, which keeps `make test` (CI)
# under its 20-minute budget on 2 cores; longer runs: make fuzz FUZZ_SECS=600.
FUZZ_SECS ?= 40
JOBS ?= $(shell nproc)
CTEST_JOBS ?= 2
CMAKE_FLAGS ?=

.PHONY: all deps deps-bench build build-asan run test test-asan test-fast bench fuzz format clean

all: build

deps:
	@bash scripts/deps.sh

deps-bench:
	@bash scripts/deps.sh --bench

build: deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j$(JOBS)

# gcc: the busted specs preload gcc's libasan into stock lua5.4.
build-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DLOOM_SANITIZE=ON -DCMAKE_C_COMPILER=gcc $(CMAKE_FLAGS)
	cmake --build $(ASAN_BUILD) -j$(JOBS)

run: build
	./$(BUILD)/loom examples/main.lua

# The sanitizer pass has no rock/ or valgrind/ tests (CMake leaves them out);
# the fuzzers run first and the normal pass last, so its ctest summary ends the output.
test-asan: build-asan
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --test-dir $(ASAN_BUILD) --output-on-failure -j$(CTEST_JOBS) -E '^(rock|valgrind)/'

test:
	@$(MAKE) --no-print-directory fuzz
	@$(MAKE) --no-print-directory test-asan
	@$(MAKE) --no-print-directory test-fast

test-fast: build
	ctest --test-dir $(BUILD) --output-on-failure -j$(CTEST_JOBS)

bench: deps-bench build
	bash bench/run.sh

# Each target is a ctest test in $(FUZZ_BUILD) (cmake/fuzz.cmake): fuzz/run.sh runs it for
# FUZZ_SECS seconds from its seed corpus (fuzz/corpus/<name>, only read), CTEST_JOBS at a
# time. New inputs go to $(FUZZ_BUILD)/corpus/<name>, crashes to $(FUZZ_BUILD)/crashes/; a
# failure prints the log's tail and the input's path.
fuzz: deps
	cmake -S . -B $(FUZZ_BUILD) -DLOOM_FUZZ=ON -DLOOM_TESTS=OFF -DCMAKE_C_COMPILER=clang $(CMAKE_FLAGS)
	cmake --build $(FUZZ_BUILD) -j$(JOBS) --target fuzzers
	rm -f $(FUZZ_BUILD)/*.summary
	FUZZ_SECS=$(FUZZ_SECS) ctest --test-dir $(FUZZ_BUILD) --output-on-failure -j$(CTEST_JOBS) -L '^fuzz$$'
	@cat $(FUZZ_BUILD)/*.summary

format:
	clang-format -i $(wildcard src/*.c src/*.h src/*/*.c src/*/*.h spec/c/*.c examples/embed/*.c fuzz/*.c fuzz/*.h)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
