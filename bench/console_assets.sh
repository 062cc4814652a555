#!/bin/sh
# bench/console_assets.sh - what the web console costs a browser: every file the
# gateway serves under /console/, raw and as the precompressed .gz it sends to
# a browser that accepts gzip, and the total against the 300 KB budget
# (issue 10; bench/README.md "The console's size"). Builds the console into
# build-bench/ (Release, npm ci from console/package-lock.json) unless
# SKIP_BUILD=1, then reads build-bench/console.
#   bench/console_assets.sh
#   BUDGET_KB=300 SKIP_BUILD=1 bench/console_assets.sh
set -eu
cd "$(dirname "$0")/.."
budget_kb=${BUDGET_KB:-300}
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DTA_CONSOLE=ON >/dev/null
    cmake --build build-bench --target console -j"$(nproc)" >/dev/null
fi
dir=build-bench/console
[ -f "$dir/index.html" ] || { echo "no console build in $dir (Node.js >= 18 and npm needed)" >&2; exit 1; }
printf '%-40s %10s %10s\n' file raw_bytes gzip_bytes
total_raw=0
total_gz=0
for f in $(cd "$dir" && find . -type f ! -name '*.gz' | sort); do
    raw=$(stat -c %s "$dir/$f")
    if [ -f "$dir/$f.gz" ]; then
        gz=$(stat -c %s "$dir/$f.gz")
    else
        gz=$(gzip -9 -c "$dir/$f" | wc -c) # served as is; its gzip size for comparison
    fi
    printf '%-40s %10d %10d\n' "${f#./}" "$raw" "$gz"
    total_raw=$((total_raw + raw))
    total_gz=$((total_gz + gz))
done
printf '%-40s %10d %10d\n' total "$total_raw" "$total_gz"
if [ "$total_gz" -le $((budget_kb * 1024)) ]; then
    echo "compressed total $((total_gz / 1024)) KiB: within the ${budget_kb} KB budget"
else
    echo "compressed total $((total_gz / 1024)) KiB: OVER the ${budget_kb} KB budget"
    exit 1
fi
