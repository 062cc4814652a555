#!/bin/sh
# Builds and runs the whole test suite through ctest. With TA_SANITIZE set
# (e.g. TA_SANITIZE=address,undefined) it builds into build-sanitize/ with
# AddressSanitizer and UndefinedBehaviorSanitizer instead.
set -eu
cd "$(dirname "$0")/.."
sh etc/deps.sh
san=${TA_SANITIZE:-}
dir=build
[ -n "$san" ] && dir=build-sanitize
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Debug -DTA_SANITIZE="$san" >/dev/null
cmake --build "$dir" -j"$(nproc)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --test-dir "$dir" --output-on-failure -j"$(nproc)" --timeout 900
