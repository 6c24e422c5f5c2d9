#!/usr/bin/env bash
# Builds the sanitized tree that CI's sanitized_suite and fuzz_smoke run: all of Kiln, its
# tests and its libFuzzer targets, compiled by clang with AddressSanitizer and
# UndefinedBehaviorSanitizer (KILN_FUZZ implies both; any report ends the process).
# Usage: build.sh <source dir> <work dir>
set -euo pipefail
src=$1 work=$2
mkdir -p "$work"
CC=clang CXX=clang++ cmake -S "$src" -B "$work/build" -G Ninja -DKILN_FUZZ=ON \
  -DKILN_BUILD_TESTS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo > "$work/configure.log" ||
  { tail -n 40 "$work/configure.log"; exit 1; }
cmake --build "$work/build" > "$work/build.log" 2>&1 || { grep -B5 -A20 -m3 'error' "$work/build.log" | head -n 120; exit 1; }
echo "sanitized tree built in $work/build"
