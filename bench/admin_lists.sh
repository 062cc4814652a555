#!/bin/sh
# bench/admin_lists.sh - how the admin lists and statistics scale with the tables.
# Builds the Release configuration into build-bench/ and runs admin_lists_bench:
# USERS users and quotas, then the audit table at each SIZE; prints the first, a
# middle and the last page of each list and the statistics, in ms (bench/README.md).
#   bench/admin_lists.sh                     # 100000 users, 200000 then 2000000 records
#   bench/admin_lists.sh 10000 20000 200000  # USERS SIZE...
set -eu
cd "$(dirname "$0")/.."
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench --target admin_lists_bench -j"$(nproc)" >/dev/null
if [ "$#" -eq 0 ]; then
    set -- 100000 200000 2000000
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
build-bench/admin_lists_bench "$@" | tee "$out"
dir=$(sed -n 's/^data directory \([^;]*\);.*/\1/p' "$out")
[ -n "$dir" ] && rm -rf "$dir"
