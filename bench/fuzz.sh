#!/bin/sh
# bench/fuzz.sh - run every libFuzzer target (tests/fuzz/fuzz_*.c) for a given
# time each, under AddressSanitizer and UndefinedBehaviorSanitizer, and keep
# what they find as regression cases.
#
#   bench/fuzz.sh [-t SECONDS] [-j PARALLEL] [TARGET...]
#
#   -t SECONDS   time per target (default 600)
#   -j PARALLEL  targets run at once (default 1; each is one process)
#   TARGET       names without the fuzz_ prefix (default: every target)
#
# Builds build-fuzz-asan/ with clang (-DTA_FUZZ=ON). Each target starts from
# its seeds in tests/fuzz/corpus/<target>/ and grows a working corpus in
# build-fuzz-asan/fuzz-work/<target>/ (kept between runs, never committed).
# An input that crashes, leaks, times out or breaks a promise of the target
# (they abort() on a broken one) is copied to tests/fuzz/repro/<target>_<id>/,
# where ctest replays it as fuzz.repro.<target>_<id> in every build once the
# bug is fixed. The run ends with one line per target:
#   target  seconds  executions  exec/s  corpus  findings
# and exits 1 when any target found something.
set -eu
cd "$(dirname "$0")/.."

secs=600
par=1
while getopts t:j: o; do
    case $o in
    t) secs=$OPTARG ;;
    j) par=$OPTARG ;;
    *) echo "usage: bench/fuzz.sh [-t SECONDS] [-j PARALLEL] [TARGET...]" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))

command -v clang >/dev/null 2>&1 || { echo "bench/fuzz.sh: clang is needed (apt-get install clang)" >&2; exit 2; }

b=build-fuzz-asan
# -Wno-error=format-nonliteral: clang's -Wformat=2 flags ta_vlog's vsnprintf (tests/fuzz/README.md)
CC=clang cmake -S . -B "$b" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTA_FUZZ=ON -DTA_SANITIZE=address,undefined \
    -DCMAKE_C_FLAGS=-Wno-error=format-nonliteral >/dev/null
if [ $# -eq 0 ]; then
    set -- $(ls tests/fuzz/fuzz_*.c | sed 's|.*/fuzz_||; s|\.c$||')
fi
targets=""
for t in "$@"; do targets="$targets fuzz_$t"; done
cmake --build "$b" -j"$(nproc)" --target $targets >/dev/null

work=$b/fuzz-work
mkdir -p "$work"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# One target: fuzz for $secs, then file what it found.
one() {
    t=$1
    dir=$work/$t
    mkdir -p "$dir/corpus" "$dir/found"
    rm -f "$dir/found/"* "$dir/log"
    # -fork=1 keeps going after a finding (each crash is saved, the run goes
    # on until the time is up) so one shallow bug does not hide the rest.
    "$b/tests/fuzz/fuzz_$t" -max_total_time="$secs" -fork=1 -ignore_crashes=1 -ignore_ooms=1 \
        -ignore_timeouts=1 -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$dir/found/" "$dir/corpus" "tests/fuzz/corpus/$t" >"$dir/log" 2>&1 || true
    n=0
    for f in "$dir/found/"*; do
        [ -f "$f" ] || continue
        id=$(sha1sum "$f" | cut -c1-10)
        kind=$(basename "$f" | sed 's/-.*//')
        mkdir -p "tests/fuzz/repro/${t}_${kind}_$id"
        cp "$f" "tests/fuzz/repro/${t}_${kind}_$id/input"
        n=$((n + 1))
    done
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$dir/log" | awk '{s += $2} END {print s + 0}')
    [ "$execs" -gt 0 ] || execs=$(grep -o '#[0-9]*' "$dir/log" | tail -1 | tr -d '#')
    echo "$t $secs ${execs:-0} $(ls "$dir/corpus" | wc -l) $n" >"$dir/result"
}

i=0
for t in "$@"; do
    one "$t" &
    i=$((i + 1))
    if [ "$i" -ge "$par" ]; then
        wait
        i=0
    fi
done
wait

status=0
printf '%-14s %8s %12s %8s %8s %9s\n' target seconds executions exec/s corpus findings
for t in "$@"; do
    read -r name s e c n <"$work/$t/result"
    printf '%-14s %8s %12s %8s %8s %9s\n' "$name" "$s" "$e" "$((e / s))" "$c" "$n"
    if [ "$n" -gt 0 ]; then
        status=1
        echo "  $name: inputs kept under tests/fuzz/repro/${name}_*/ (log: $work/$name/log)"
    fi
done
exit $status
