#!/usr/bin/env bash
# streams.sh - many slow streams at once: how many a gateway holds, what each
# costs in worker memory, and what a client gets past the descriptor limit.
#
#   1. The fake upstream (slow_chunks: CHUNKS chunks, CHUNK_MS apart) and a
#      gateway with WORKERS workers under the machine's descriptor limit (the
#      master raises its soft RLIMIT_NOFILE to the hard one and logs the
#      capacity). STREAMS streams are opened at once, each on its own
#      connection (bench/streams_client.py); with all of them open, the
#      workers' anonymous memory (RssAnon) is read; then they are read to the
#      end. Printed: how many opened, completed, were charged (one audit record
#      each with the provider's usage; `tokenaudit ledger verify`), and the
#      workers' memory per open stream over a baseline taken after a warm-up.
#   2. Past the limit: a second gateway started under a hard limit of
#      OVER_NOFILE descriptors, and OVER_FACTOR times its capacity in streams:
#      how many opened, how many were refused and how (status, Retry-After,
#      body), whether every admitted one completed and was charged, whether
#      the workers stayed up.
#
# Environment:
#   STREAMS=8000 WORKERS=2 CHUNKS=15 CHUNK_MS=2000   phase 1
#   OVER_NOFILE=1024 OVER_FACTOR=1.25                phase 2 (OVER_NOFILE=0 skips it)
#   BUILD_DIR=build-bench  SKIP_BUILD=1 reuses it  JOBS=2   KEEP_TMP=1
#   GATEWAY_ENV="TOKENAUDIT_UPSTREAM_ENGINE=curl"   extra gateway settings
# Needs python3, curl, cmake; the hard descriptor limit must exceed 2 x STREAMS
# plus a few hundred (this process, the fake upstream and each worker hold
# their side of every stream).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STREAMS=${STREAMS:-8000}
WORKERS=${WORKERS:-2}
CHUNKS=${CHUNKS:-15}
CHUNK_MS=${CHUNK_MS:-2000}
OVER_NOFILE=${OVER_NOFILE:-1024}
OVER_FACTOR=${OVER_FACTOR:-1.25}
BUILD_DIR=${BUILD_DIR:-$ROOT/build-bench}
JOBS=${JOBS:-2}
ADMIN_EMAIL=admin@bench.example.com
ADMIN_PASSWORD=bench-admin-password-1

die() { echo "streams: $*" >&2; exit 1; }
note() { echo "streams: $*" >&2; }
for t in python3 curl; do command -v "$t" >/dev/null 2>&1 || die "'$t' is not installed"; done

HARD=$(ulimit -Hn)
[ "$HARD" = unlimited ] && HARD=1048576
ulimit -n "$HARD"
NEED=$((2 * STREAMS + 512))
[ "$HARD" -ge "$NEED" ] || die "the hard descriptor limit is $HARD; $STREAMS streams need about $NEED (ulimit -Hn)"

T=$(mktemp -d "${TMPDIR:-/tmp}/tokenaudit-streams.XXXXXX")
STARTED=()
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${STARTED[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${STARTED[@]}"; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [ "${KEEP_TMP:-0}" = 1 ]; then note "kept $T"; else rm -rf "$T"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
children_named() { # pids of PARENT's children named NAME, comma-separated
    local out="" p
    for p in $(ps -o pid= --ppid "$1"); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ] && out="${out:+$out,}$p"
    done
    echo "$out"
}

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    note "building Release into $BUILD_DIR"
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >"$T/cmake.log" 2>&1 ||
        { tail -n 30 "$T/cmake.log" >&2; die "cmake configure failed"; }
    cmake --build "$BUILD_DIR" -j"$JOBS" --target tokenauditd tokenaudit fake_upstream >"$T/build.log" 2>&1 ||
        { tail -n 30 "$T/build.log" >&2; die "build failed"; }
fi

"$BUILD_DIR/tests/fake_upstream" --port 0 -t 2 --log /dev/null >"$T/upstream.log" 2>&1 &
STARTED+=("$!")
UP_PORT=""
for _ in $(seq 100); do
    UP_PORT=$(sed -n 's/.*listening on \([0-9][0-9]*\).*/\1/p' "$T/upstream.log" | head -n 1)
    [ -n "$UP_PORT" ] && break
    sleep 0.1
done
[ -n "$UP_PORT" ] || die "the fake upstream did not start"

# start_gateway NAME NOFILE: a gateway in $T/NAME (NOFILE: its hard limit, "" = ours);
# sets GW_PID GW_PORT GW_KEY GW_WORKERS
start_gateway() {
    local name=$1 nofile=$2 d=$T/$1
    mkdir -p "$d"
    "$BUILD_DIR/tokenaudit" init --data-dir "$d/data" --admin-email "$ADMIN_EMAIL" \
        --admin-password "$ADMIN_PASSWORD" >"$d/init.log" 2>&1 || { cat "$d/init.log" >&2; die "init failed"; }
    GW_PORT=$(free_port)
    (
        [ -n "$nofile" ] && ulimit -n "$nofile"
        # shellcheck disable=SC2086
        exec env ${GATEWAY_ENV:-} TOKENAUDIT_DATA_DIR="$d/data" TOKENAUDIT_LISTEN="127.0.0.1:$GW_PORT" \
            TOKENAUDIT_WORKERS="$WORKERS" "$BUILD_DIR/tokenauditd" >"$d/gateway.log" 2>&1
    ) &
    GW_PID=$!
    STARTED+=("$GW_PID")
    for _ in $(seq 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GW_PORT/healthz" || true)" = 200 ] && break
        sleep 0.1
    done
    GW_KEY=$(python3 "$ROOT/bench/setup_gateway.py" --url "http://127.0.0.1:$GW_PORT" --email "$ADMIN_EMAIL" \
        --password "$ADMIN_PASSWORD" --upstream "http://127.0.0.1:$UP_PORT/v1") || die "gateway setup failed"
    GW_WORKERS=$(children_named "$GW_PID" ta-worker)
    [ -n "$GW_WORKERS" ] || die "no worker of $GW_PID"
}

client() { # STREAMS CHUNKS CHUNK_MS [rss args...]
    local n=$1 c=$2 ms=$3
    shift 3
    python3 "$ROOT/bench/streams_client.py" --port "$GW_PORT" --key "$GW_KEY" --streams "$n" --chunks "$c" \
        --chunk-ms "$ms" "$@"
}

# books NAME EXPECTED: waits for EXPECTED audit records; prints "records charged_ok verify"
books() {
    local d=$T/$1/data want=$2 n=0
    for _ in $(seq 600); do
        n=$("$BUILD_DIR/tokenaudit" audit export --data-dir "$d" --format jsonl 2>/dev/null | grep -c . || true)
        [ "$n" -ge "$want" ] && break
        sleep 0.5
    done
    local ok
    ok=$("$BUILD_DIR/tokenaudit" audit export --data-dir "$d" --format jsonl 2>/dev/null | python3 -c '
import json, sys
ok = 0
for l in sys.stdin:
    r = json.loads(l)
    if r["status"] == 200 and not r["usage_estimated"] and not r["aborted"] and r["completion_tokens"] > 0:
        ok += 1
print(ok)')
    local v=failed
    "$BUILD_DIR/tokenaudit" ledger verify --data-dir "$d" >"$T/$1/verify.log" 2>&1 && v=ok
    echo "$n $ok $v"
}

field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); v=d
for k in sys.argv[2].split("."): v = v.get(k, 0) if isinstance(v, dict) else 0
print(v if not isinstance(v, dict) else sum(v.values()))' "$1" "$2"; }
rss_sum() { local s=0 p; for p in ${1//,/ }; do s=$((s + $(awk '/^RssAnon:/ { print $2 }' "/proc/$p/status"))); done; echo $s; }

# ---------------------------------------------------------------- phase 1
start_gateway main ""
CAP_LINE=$(grep -o 'descriptors: .*' "$T/main/gateway.log" | head -n 1 || true)
note "gateway pid $GW_PID, workers $GW_WORKERS; ${CAP_LINE:-no capacity line in its log}"
client 200 2 10 >"$T/warmup.json"
WARM=$(field "$T/warmup.json" completed)
sleep 1
BASE=$(rss_sum "$GW_WORKERS")
note "opening $STREAMS streams ($CHUNKS chunks, ${CHUNK_MS} ms apart)"
client "$STREAMS" "$CHUNKS" "$CHUNK_MS" --open-rate 512 --rss-pids "$GW_WORKERS" --rss-out "$T/rss.txt" >"$T/main.json"
OPEN_RSS=$(awk '{ s = 0; for (i = 1; i <= NF; i++) s += $i; print s }' "$T/rss.txt")
OPENED=$(field "$T/main.json" opened)
read -r RECS CHARGED VERIFY <<<"$(books main $((OPENED + WARM)))"
WORKERS_AFTER=$(children_named "$GW_PID" ta-worker)

echo
echo "tokenaudit streams  $(date -u +%Y-%m-%dT%H:%M:%SZ)  $(uname -n), $(nproc) CPUs, hard descriptor limit $HARD"
echo "${CAP_LINE:-capacity: not logged}"
echo "phase 1: $STREAMS streams at once on $WORKERS workers, each $CHUNKS chunks ${CHUNK_MS} ms apart${GATEWAY_ENV:+ ($GATEWAY_ENV)}"
echo "  opened $OPENED, refused $(field "$T/main.json" refused), completed $(field "$T/main.json" completed)," \
    "broken $(field "$T/main.json" broken), connect errors $(field "$T/main.json" connect_errors);" \
    "all open after $(field "$T/main.json" open_s) s, all done after $(field "$T/main.json" total_s) s"
echo "  charged: $RECS audit records ($WARM of the warm-up), $CHARGED of them 200 with the provider's usage;" \
    "ledger verify $VERIFY"
awk -v b="$BASE" -v o="$OPEN_RSS" -v n="$OPENED" 'BEGIN {
    printf "  worker memory (RssAnon, all workers): %d KiB after the warm-up, %d KiB with %d streams open: %.1f KiB per open stream\n",
        b, o, n, (n > 0 ? (o - b) / n : 0) }'
echo "  workers: $GW_WORKERS before, $WORKERS_AFTER after"

# ---------------------------------------------------------------- phase 2
if [ "$OVER_NOFILE" != 0 ]; then
    start_gateway over "$OVER_NOFILE"
    CAP2=$(grep -o 'descriptors: .*' "$T/over/gateway.log" | head -n 1 || true)
    PER=$(sed -n 's/.*each worker serves up to \([0-9]*\) streams.*/\1/p' <<<"$CAP2")
    N2=$(awk -v p="${PER:-0}" -v w="$WORKERS" -v f="$OVER_FACTOR" 'BEGIN { printf "%d", p * w * f }')
    W2=$GW_WORKERS
    client "$N2" 6 1000 --open-rate 512 >"$T/over.json"
    O2=$(field "$T/over.json" opened)
    read -r RECS2 CHARGED2 VERIFY2 <<<"$(books over "$O2")"
    echo "phase 2, past the limit: a gateway under a hard limit of $OVER_NOFILE descriptors"
    echo "  ${CAP2:-capacity: not logged}"
    echo "  $N2 streams ($OVER_FACTOR x capacity): opened $O2, refused $(field "$T/over.json" refused)," \
        "completed $(field "$T/over.json" completed), broken $(field "$T/over.json" broken)," \
        "connect errors $(field "$T/over.json" connect_errors)"
    echo "  a refusal: $(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["sample_refusal"] or "none"
print(" | ".join(l for l in s.split("\r\n") if l.split(":")[0].lower() in ("retry-after","connection","content-type") or l.startswith(("HTTP","{"))))' "$T/over.json")"
    echo "  charged: $RECS2 audit records, $CHARGED2 of them 200 with the provider's usage; ledger verify $VERIFY2"
    echo "  workers: $W2 before, $(children_named "$GW_PID" ta-worker) after"
fi
