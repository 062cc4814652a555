#!/usr/bin/env bash
# profile.sh - where a gateway worker (and billing) spends its CPU under load.
#
# Starts the fake upstream and a gateway (as bench/proxy_bench.sh does), puts
# wrk load on /v1/chat/completions, and meanwhile records one worker and the
# billing process with `perf record -g`. Prints, for each, the split of the
# samples by library (kernel, libc, h2o, libcurl, jansson, lmdb, openssl, ours,
# other) and the top functions by their own (self) samples.
#
# Environment:
#   MODE=json|stream     the request kind (default json)
#   DURATION=10          seconds recorded (wrk runs 2 s longer)
#   CONNECTIONS=64 THREADS=2 WORKERS=2   wrk and gateway settings
#   TOP=25               functions listed per process
#   BUILD_DIR=build-bench  SKIP_BUILD=1 reuses it   JOBS=2
#   GATEWAY_ENV="TOKENAUDIT_UPSTREAM_ENGINE=curl"  extra gateway settings
#   FREQ=1999            perf sampling frequency (Hz)
#   CALL_GRAPH=fp        perf record --call-graph (fp, or dwarf for callers in libraries built
#                        without frame pointers; bigger files)
#   KEEP_TMP=1           keep the temp directory (perf.data files, logs)
# Needs perf (linux-perf), wrk, curl, python3, cmake. Run as root, or with
# kernel.perf_event_paranoid <= 1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODE=${MODE:-json}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
WORKERS=${WORKERS:-2}
TOP=${TOP:-25}
FREQ=${FREQ:-1999}
CALL_GRAPH=${CALL_GRAPH:-fp}
BUILD_DIR=${BUILD_DIR:-$ROOT/build-bench}
JOBS=${JOBS:-2}
MODEL=bench-model
ADMIN_EMAIL=admin@bench.example.com
ADMIN_PASSWORD=bench-admin-password-1

die() { echo "profile: $*" >&2; exit 1; }
note() { echo "profile: $*" >&2; }
for t in perf wrk curl python3; do
    command -v "$t" >/dev/null 2>&1 || die "'$t' is not installed (Debian: apt-get install linux-perf wrk curl python3)"
done
case $MODE in json | stream) ;; *) die "MODE is json or stream, not '$MODE'" ;; esac

T=$(mktemp -d "${TMPDIR:-/tmp}/tokenaudit-profile.XXXXXX")
STARTED=()
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${STARTED[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${STARTED[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [ "${KEEP_TMP:-0}" = 1 ]; then note "kept $T"; else rm -rf "$T"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# the first child of a pid named NAME (comm)
child_named() {
    local parent=$1 name=$2 p
    for p in $(ps -o pid= --ppid "$parent"); do
        if [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$name" ]; then echo "$p"; return; fi
    done
}

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    note "building Release into $BUILD_DIR"
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >"$T/cmake.log" 2>&1 ||
        { tail -n 30 "$T/cmake.log" >&2; die "cmake configure failed"; }
    cmake --build "$BUILD_DIR" -j"$JOBS" --target tokenauditd tokenaudit fake_upstream >"$T/build.log" 2>&1 ||
        { tail -n 30 "$T/build.log" >&2; die "build failed"; }
fi
UP_BIN=$BUILD_DIR/tests/fake_upstream
[ -x "$UP_BIN" ] || die "no $UP_BIN"

# ---- the fake upstream and the gateway
"$UP_BIN" --port 0 -t "$WORKERS" --log /dev/null >"$T/upstream.log" 2>&1 &
UP_PID=$!
STARTED+=("$UP_PID")
UP_PORT=""
for _ in $(seq 100); do
    UP_PORT=$(sed -n 's/.*listening on \([0-9][0-9]*\).*/\1/p' "$T/upstream.log" | head -n 1)
    [ -n "$UP_PORT" ] && break
    sleep 0.1
done
[ -n "$UP_PORT" ] || die "the fake upstream did not start"
curl -sf -o /dev/null -X POST "http://127.0.0.1:$UP_PORT/_fake/control" -H 'Content-Type: application/json' \
    --data-binary '{"chunks": 16, "times": 0}' || die "fake upstream control failed"

"$BUILD_DIR/tokenaudit" init --data-dir "$T/data" --admin-email "$ADMIN_EMAIL" \
    --admin-password "$ADMIN_PASSWORD" >"$T/init.log" 2>&1 || { cat "$T/init.log" >&2; die "tokenaudit init failed"; }
GW_PORT=$(free_port)
# shellcheck disable=SC2086
env ${GATEWAY_ENV:-} TOKENAUDIT_DATA_DIR="$T/data" TOKENAUDIT_LISTEN="127.0.0.1:$GW_PORT" \
    TOKENAUDIT_WORKERS="$WORKERS" "$BUILD_DIR/tokenauditd" >"$T/gateway.log" 2>&1 &
GW_PID=$!
STARTED+=("$GW_PID")
for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GW_PORT/healthz" || true)" = 200 ] && break
    sleep 0.1
done
KEY=$(python3 "$ROOT/bench/setup_gateway.py" --url "http://127.0.0.1:$GW_PORT" --email "$ADMIN_EMAIL" \
    --password "$ADMIN_PASSWORD" --upstream "http://127.0.0.1:$UP_PORT/v1" --model "$MODEL") ||
    die "gateway setup failed"
WORKER=$(child_named "$GW_PID" ta-worker)
BILLING=$(child_named "$GW_PID" ta-billing)
[ -n "$WORKER" ] && [ -n "$BILLING" ] || die "no ta-worker / ta-billing child of $GW_PID"

# ---- load and record
export BENCH_PATH=/v1/chat/completions BENCH_KEY="$KEY" BENCH_MODEL="$MODEL" BENCH_MAX_TOKENS=16
BENCH_STREAM=0
[ "$MODE" = stream ] && BENCH_STREAM=1
export BENCH_STREAM
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -s "$ROOT/bench/chat.lua" "http://127.0.0.1:$GW_PORT" >/dev/null 2>&1 || true
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$((DURATION + 2))s" -s "$ROOT/bench/chat.lua" \
    "http://127.0.0.1:$GW_PORT" >"$T/wrk.txt" 2>&1 &
WRK_PID=$!
STARTED+=("$WRK_PID")
sleep 1
perf record --call-graph "$CALL_GRAPH" -F "$FREQ" -p "$WORKER" -o "$T/worker.data" -- sleep "$DURATION" >"$T/perf-worker.log" 2>&1 &
P1=$!
perf record --call-graph "$CALL_GRAPH" -F "$FREQ" -p "$BILLING" -o "$T/billing.data" -- sleep "$DURATION" >"$T/perf-billing.log" 2>&1 &
P2=$!
wait "$P1" || { cat "$T/perf-worker.log" >&2; die "perf record of the worker failed"; }
wait "$P2" || { cat "$T/perf-billing.log" >&2; die "perf record of billing failed"; }
wait "$WRK_PID" || true
REQS=$(sed -n 's/^WRKRESULT requests=\([0-9]*\).*/\1/p' "$T/wrk.txt")
STATUS_ERR=$(sed -n 's/.* status_errors=\([0-9]*\).*/\1/p' "$T/wrk.txt")

# ---- report
libsplit() { # perf data -> "group percent" lines
    perf report -i "$1" --no-children -g none --sort dso --stdio 2>/dev/null | awk '
        /^#/ || NF < 2 { next }
        { pct = $1; sub(/%/, "", pct); dso = $2
          g = "other"
          if (dso ~ /kernel|vdso|^\[unknown\]/) g = "kernel"
          else if (dso ~ /^libc\.|^ld-linux|libm\./) g = "libc"
          else if (dso ~ /libh2o/) g = "h2o"
          else if (dso ~ /libcurl|libnghttp|libssh|libpsl|libidn|libbrotli|libz\./) g = "libcurl"
          else if (dso ~ /libjansson/) g = "jansson"
          else if (dso ~ /liblmdb/) g = "lmdb"
          else if (dso ~ /libssl|libcrypto/) g = "openssl"
          else if (dso ~ /tokenauditd/) g = "ours"
          s[g] += pct }
        END { n = split("kernel libc h2o libcurl jansson lmdb openssl ours other", order, " ")
              for (i = 1; i <= n; i++) printf "  %-8s %6.1f%%\n", order[i], s[order[i]] + 0 }'
}
topfuncs() {
    perf report -i "$1" --no-children -g none --sort dso,sym --stdio 2>/dev/null | awk -v top="$TOP" '
        /^#/ || NF < 3 { next }
        { n++; if (n > top) next
          pct = $1; dso = $2; $1 = ""; $2 = ""; $3 = ""; sub(/^ +/, "")
          printf "  %7s  %-22s %s\n", pct, substr(dso, 1, 22), $0 }'
}
echo
echo "tokenaudit profile  $(date -u +%Y-%m-%dT%H:%M:%SZ)  $(uname -n), $(nproc) CPUs"
echo "mode $MODE, wrk -t$THREADS -c$CONNECTIONS, $WORKERS workers, ${DURATION}s recorded at ${FREQ} Hz;" \
    "$REQS requests in $((DURATION + 2)) s, $STATUS_ERR non-2xx${GATEWAY_ENV:+; $GATEWAY_ENV}"
for who in worker billing; do
    pid=$WORKER
    [ $who = billing ] && pid=$BILLING
    echo
    echo "== $who (pid $pid): samples by library (self time)"
    libsplit "$T/$who.data"
    echo "== $who: top $TOP functions (self time)"
    topfuncs "$T/$who.data"
done
