#!/usr/bin/env bash
# proxy_bench.sh - tokenaudit's proxy path against nginx and the bare upstream.
#
# One run, one machine, one fake upstream; three targets measured one after
# the other with the same wrk settings:
#   direct   wrk -> fake upstream
#   nginx    wrk -> nginx (proxy_pass, upstream keepalive) -> fake upstream
#   gateway  wrk -> tokenauditd (key, hold, upstream, event, billing) -> fake upstream
# for a non-streaming and a streaming (SSE) chat completion each. Prints
# requests/s, p50/p99 latency and the server CPU time per request, then the
# gateway/nginx ratios. See bench/README.md for how to read the figures.
#
# Environment:
#   DURATION=10s CONNECTIONS=64 THREADS=2   wrk settings, the same for every target
#   WORKERS=2            gateway workers = nginx worker_processes
#   UPSTREAM_WORKERS     fake upstream threads/workers (default WORKERS)
#   WARMUP=1s            unmeasured wrk run before each measured one (0 = none)
#   TARGETS="direct nginx gateway"   MODES="json stream"
#   BUILD_DIR=build-bench  SKIP_BUILD=1 reuses it   JOBS=2 (cmake --build -j)
#   FAKE_UPSTREAM=path   another upstream binary (must take the flags of
#                        tests/tools/fake_upstream_main.c: --port 0 -t N --log F,
#                        print "listening on PORT", serve POST /_fake/control);
#                        FAKE_UPSTREAM_ARGS extra args
#   CHUNKS=16            content chunks per streamed answer (set on the fake upstream)
#   MAX_TOKENS=16        max_tokens in the request body
#   UPSTREAM_LOG=/dev/null  the fake upstream's per-request log
#   KEEP_TMP=1           keep the temp directory (logs, configs, wrk output)
#   GATEWAY_ENV="TOKENAUDIT_UPSTREAM_ENGINE=curl"  extra settings of the gateway (NAME=VALUE ...)
# Exit status: 0 when every requested target ran with only 2xx answers,
# 1 on a missing piece (message says which), 2 when a target was skipped or
# answered errors (the table still shows what did run).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
WORKERS=${WORKERS:-2}
UPSTREAM_WORKERS=${UPSTREAM_WORKERS:-$WORKERS}
WARMUP=${WARMUP:-1s}
TARGETS=${TARGETS:-direct nginx gateway}
MODES=${MODES:-json stream}
BUILD_DIR=${BUILD_DIR:-$ROOT/build-bench}
JOBS=${JOBS:-2}
MAX_TOKENS=${MAX_TOKENS:-16}
CHUNKS=${CHUNKS:-16}
MODEL=bench-model
ADMIN_EMAIL=admin@bench.example.com
ADMIN_PASSWORD=bench-admin-password-1

die() { echo "proxy_bench: $*" >&2; exit 1; }
note() { echo "proxy_bench: $*" >&2; }

# ---------------------------------------------------------------- tools
need_tool() { command -v "$1" >/dev/null 2>&1; }
if ! need_tool nginx || ! need_tool wrk; then
    if [ "$(id -u)" = 0 ] && need_tool apt-get; then
        note "installing nginx-light and wrk with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get install -y nginx-light wrk >/dev/null ||
            die "apt-get install -y nginx-light wrk failed"
    fi
fi
for t in nginx wrk curl python3 cmake ps awk getconf; do
    need_tool "$t" || die "'$t' is not installed (Debian: apt-get install nginx-light wrk curl python3 cmake procps)"
done
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- temp dir, cleanup
T=$(mktemp -d "${TMPDIR:-/tmp}/tokenaudit-bench.XXXXXX")
STARTED=()          # root pids of what we started
cleanup() {
    local rc=$? all=() p
    trap - EXIT INT TERM
    for p in "${STARTED[@]}"; do
        # shellcheck disable=SC2207
        all+=($(descendants "$p"))
    done
    for p in "${STARTED[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for p in "${all[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for p in "${all[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "${KEEP_TMP:-0}" = 1 ]; then note "kept $T"; else rm -rf "$T"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- process helpers
# The pid and every descendant (gateway: master + workers + billing;
# nginx: master + workers).
descendants() {
    ps -e -o pid=,ppid= | awk -v root="$1" '
        { par[$1] = $2 }
        END {
            if (!(root in par)) exit
            out[root] = 1; changed = 1
            while (changed) {
                changed = 0
                for (c in par) if (!(c in out) && (par[c] in out)) { out[c] = 1; changed = 1 }
            }
            for (p in out) print p
        }' | sort -n
}

# Sum of utime+stime (clock ticks) of the given pids, all threads included.
cpu_ticks() {
    local files=() p
    for p in "$@"; do files+=("/proc/$p/stat"); done
    [ ${#files[@]} = 0 ] && { echo 0; return; }
    awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); t += f[12] + f[13] }
         END { print t + 0 }' "${files[@]}" 2>/dev/null || true
}

# "pid ticks" per pid, for the per-process split.
cpu_ticks_each() {
    local p
    for p in "$@"; do
        awk -v p="$p" '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print p, f[12] + f[13] }' \
            "/proc/$p/stat" 2>/dev/null || true
    done
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_port PORT PID LOG WHAT: until something accepts on 127.0.0.1:PORT.
wait_port() {
    local port=$1 pid=$2 log=$3 what=$4
    for _ in $(seq 300); do
        if ! kill -0 "$pid" 2>/dev/null; then
            note "$what exited before listening on port $port; its log:"
            tail -n 30 "$log" >&2 || true
            return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    note "$what did not listen on port $port within 30 s; its log:"
    tail -n 30 "$log" >&2 || true
    return 1
}

# ---------------------------------------------------------------- build
want() { case " $TARGETS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
GATEWAY_WHY=""      # non-empty: the gateway is skipped, and why
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    note "building Release into $BUILD_DIR"
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >"$T/cmake.log" 2>&1 ||
        { tail -n 30 "$T/cmake.log" >&2; die "cmake configure failed (log above)"; }
    if [ -z "${FAKE_UPSTREAM:-}" ]; then
        if ! cmake --build "$BUILD_DIR" -j"$JOBS" --target fake_upstream >"$T/build-upstream.log" 2>&1; then
            tail -n 30 "$T/build-upstream.log" >&2
            # It links the project's libraries, so a half-written folder elsewhere
            # breaks it; an earlier build of the same tool still measures the same.
            if [ -x "$BUILD_DIR/tests/fake_upstream" ]; then
                note "WARNING: building the fake upstream failed (log above); using the earlier build in $BUILD_DIR/tests"
            else
                die "building the fake upstream (tests/tools/fake_upstream_main.c) failed (log above)"
            fi
        fi
    fi
    if want gateway; then
        cmake --build "$BUILD_DIR" -j"$JOBS" --target tokenauditd tokenaudit >"$T/build-gateway.log" 2>&1 ||
            { tail -n 30 "$T/build-gateway.log" >&2
              GATEWAY_WHY="build of tokenauditd/tokenaudit failed (log above)"; note "$GATEWAY_WHY"; }
    fi
fi
if [ -z "${FAKE_UPSTREAM:-}" ]; then    # tests/tools/ executables land in BUILD/tests/
    FAKE_UPSTREAM=$BUILD_DIR/tests/fake_upstream
    [ -x "$FAKE_UPSTREAM" ] || FAKE_UPSTREAM=$BUILD_DIR/fake_upstream
fi
[ -x "$FAKE_UPSTREAM" ] || die "no fake upstream at $FAKE_UPSTREAM (build target fake_upstream from tests/tools/fake_upstream_main.c)"

# ---------------------------------------------------------------- fake upstream
# shellcheck disable=SC2086
"$FAKE_UPSTREAM" --port 0 -t "$UPSTREAM_WORKERS" --log "${UPSTREAM_LOG:-/dev/null}" ${FAKE_UPSTREAM_ARGS:-} \
    >"$T/upstream.log" 2>&1 &
UP_PID=$!
STARTED+=("$UP_PID")
UP_PORT=""
for _ in $(seq 100); do
    UP_PORT=$(sed -n 's/.*listening on \([0-9][0-9]*\).*/\1/p' "$T/upstream.log" | head -n 1)
    [ -n "$UP_PORT" ] && break
    kill -0 "$UP_PID" 2>/dev/null || break
    sleep 0.1
done
[ -n "$UP_PORT" ] || { tail -n 30 "$T/upstream.log" >&2; die "the fake upstream did not print 'listening on PORT' (log above)"; }
wait_port "$UP_PORT" "$UP_PID" "$T/upstream.log" "fake upstream" || die "fake upstream did not start"
# Every stream has CHUNKS content chunks, whoever asks (shared by all -t processes).
curl -sf -o /dev/null -X POST "http://127.0.0.1:$UP_PORT/_fake/control" \
    -H 'Content-Type: application/json' --data-binary "{\"chunks\": $CHUNKS, \"times\": 0}" ||
    die "the fake upstream refused POST /_fake/control (chunks)"
note "fake upstream pid $UP_PID on 127.0.0.1:$UP_PORT ($UPSTREAM_WORKERS processes, $CHUNKS chunks per stream)"

# ---------------------------------------------------------------- nginx
NGINX_PID=""
if want nginx; then
    NGX_PORT=$(free_port)
    mkdir -p "$T/nginx"
    user_line=""
    [ "$(id -u)" = 0 ] && user_line="user root root;   # workers must reach the 0700 temp dir"
    sed -e "s|@PREFIX@|$T/nginx|g" -e "s|@WORKERS@|$WORKERS|g" -e "s|@PORT@|$NGX_PORT|g" \
        -e "s|@UPSTREAM_PORT@|$UP_PORT|g" -e "s|@USER_LINE@|$user_line|g" \
        "$ROOT/bench/nginx.conf.in" >"$T/nginx/nginx.conf"
    nginx -t -p "$T/nginx" -c "$T/nginx/nginx.conf" -e "$T/nginx/error.log" >"$T/nginx/test.log" 2>&1 ||
        { cat "$T/nginx/test.log" >&2; die "nginx rejected the generated config (above)"; }
    nginx -p "$T/nginx" -c "$T/nginx/nginx.conf" -e "$T/nginx/error.log" >"$T/nginx/stdout.log" 2>&1 &
    NGINX_PID=$!
    STARTED+=("$NGINX_PID")
    wait_port "$NGX_PORT" "$NGINX_PID" "$T/nginx/error.log" nginx || die "nginx did not start"
    note "nginx pid $NGINX_PID on 127.0.0.1:$NGX_PORT ($WORKERS workers)"
fi

# ---------------------------------------------------------------- gateway
GW_PID=""
GW_KEY=""
start_gateway() {
    local bin=$BUILD_DIR/tokenauditd cli=$BUILD_DIR/tokenaudit
    [ -x "$bin" ] || { GATEWAY_WHY="no $bin"; return 1; }
    [ -x "$cli" ] || { GATEWAY_WHY="no $cli"; return 1; }
    "$cli" init --data-dir "$T/gateway-data" --admin-email "$ADMIN_EMAIL" \
        --admin-password "$ADMIN_PASSWORD" >"$T/gateway-init.log" 2>&1 ||
        { tail -n 20 "$T/gateway-init.log" >&2; GATEWAY_WHY="tokenaudit init failed (log above)"; return 1; }
    GW_PORT=$(free_port)
    # shellcheck disable=SC2086
    env ${GATEWAY_ENV:-} TOKENAUDIT_DATA_DIR="$T/gateway-data" TOKENAUDIT_LISTEN="127.0.0.1:$GW_PORT" \
        TOKENAUDIT_WORKERS="$WORKERS" "$bin" >"$T/gateway.log" 2>&1 &
    GW_PID=$!
    STARTED+=("$GW_PID")
    wait_port "$GW_PORT" "$GW_PID" "$T/gateway.log" tokenauditd ||
        { GATEWAY_WHY="tokenauditd did not start (log above)"; return 1; }
    local code=""
    for _ in $(seq 100); do
        code=$(curl -s -o "$T/healthz.txt" -w '%{http_code}' "http://127.0.0.1:$GW_PORT/healthz" || true)
        [ "$code" = 200 ] && break
        sleep 0.1
    done
    [ "$code" = 200 ] || note "warning: /healthz answers $code: $(head -c 300 "$T/healthz.txt" 2>/dev/null)"
    GW_KEY=$(python3 "$ROOT/bench/setup_gateway.py" --url "http://127.0.0.1:$GW_PORT" \
        --email "$ADMIN_EMAIL" --password "$ADMIN_PASSWORD" \
        --upstream "http://127.0.0.1:$UP_PORT/v1" --model "$MODEL" 2>"$T/setup.log") ||
        { cat "$T/setup.log" >&2; GATEWAY_WHY="admin API setup failed: $(tail -n 1 "$T/setup.log")"; return 1; }
    note "gateway pid $GW_PID on 127.0.0.1:$GW_PORT ($WORKERS workers), key ${GW_KEY:0:8}..."
}
if want gateway && [ -z "$GATEWAY_WHY" ]; then
    start_gateway || note "gateway skipped: $GATEWAY_WHY"
fi

# ---------------------------------------------------------------- one measurement
declare -A R_SPLIT R_RPS R_P50 R_P99 R_CPU R_UPCPU R_NON2XX R_SOCKERR R_REQ R_NOTE
EXIT_STATUS=0

body_for() {  # same body as bench/chat.lua
    local stream=$1
    printf '{"model":"%s","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello to the benchmark."}],"max_tokens":%d%s}' \
        "$MODEL" "$MAX_TOKENS" "$([ "$stream" = 1 ] && echo ',"stream":true,"stream_options":{"include_usage":true}')"
}

# One request with curl first: a target that answers errors is named with
# its answer instead of hiding behind a table of fast 4xx responses.
smoke() {
    local target=$1 mode=$2 url=$3 key=$4 stream=$5 out="$T/smoke-$1-$2.txt" code
    code=$(curl -s -o "$out" -w '%{http_code}' --max-time 30 -X POST "$url" \
        -H 'Content-Type: application/json' -H "Authorization: Bearer $key" \
        --data-binary "$(body_for "$stream")" || true)   # curl prints 000 when nothing answered
    local ok=1
    case "$code" in 2??) ;; *) ok=0 ;; esac
    if [ $ok = 1 ]; then
        if [ "$stream" = 1 ]; then grep -q 'data: \[DONE\]' "$out" || ok=0
        else grep -q '"choices"' "$out" || ok=0; fi
    fi
    if [ $ok = 0 ]; then
        note "WARNING: $target $mode: a single request answered HTTP $code: $(head -c 400 "$out" | tr '\n' ' ')"
        R_NOTE[$target.$mode]="smoke request got HTTP $code"
    fi
}

measure() {
    local target=$1 mode=$2 base=$3 path=$4 key=$5 root=$6 stream=0
    [ "$mode" = stream ] && stream=1
    local url="$base$path" k="$target.$mode"
    smoke "$target" "$mode" "$url" "$key" "$stream"
    export BENCH_PATH="$path" BENCH_STREAM="$stream" BENCH_KEY="$key" BENCH_MODEL="$MODEL" \
        BENCH_MAX_TOKENS="$MAX_TOKENS"
    if [ "$WARMUP" != 0 ]; then
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s "$ROOT/bench/chat.lua" "$url" \
            >"$T/wrk-$k-warmup.txt" 2>&1 || true
    fi
    local pids0 pids1 up0 up1 s0 s1 u0 u1
    # shellcheck disable=SC2207
    pids0=($(descendants "$root")); up0=($(descendants "$UP_PID"))
    s0=$(cpu_ticks "${pids0[@]}"); u0=$(cpu_ticks "${up0[@]}")
    cpu_ticks_each "${pids0[@]}" >"$T/cpu-$k.before"
    wrk --latency --timeout 10s -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" \
        -s "$ROOT/bench/chat.lua" "$url" >"$T/wrk-$k.txt" 2>&1 ||
        { cat "$T/wrk-$k.txt" >&2; die "wrk failed against $target ($url)"; }
    # shellcheck disable=SC2207
    pids1=($(descendants "$root")); up1=($(descendants "$UP_PID"))
    s1=$(cpu_ticks "${pids1[@]}"); u1=$(cpu_ticks "${up1[@]}")
    cpu_ticks_each "${pids1[@]}" >"$T/cpu-$k.after"
    if ! kill -0 "$root" 2>/dev/null; then
        EXIT_STATUS=2
        R_NOTE[$k]="${R_NOTE[$k]:+${R_NOTE[$k]}; }server died during the run"
        note "WARNING: $target (pid $root) died during the $mode run; logs are in $T (KEEP_TMP=1 keeps them)"
    fi
    [ "${pids0[*]}" = "${pids1[*]}" ] ||
        note "warning: $target's processes changed during the run (${pids0[*]} -> ${pids1[*]}); CPU figure is approximate"
    local line
    line=$(grep '^WRKRESULT' "$T/wrk-$k.txt" || true)
    [ -n "$line" ] || { cat "$T/wrk-$k.txt" >&2; die "no WRKRESULT line from wrk ($target $mode)"; }
    local requests duration_us p50 p99 status_errors sockerr
    requests=$(sed 's/.* requests=\([0-9]*\).*/\1/' <<<"$line")
    duration_us=$(sed 's/.* duration_us=\([0-9]*\).*/\1/' <<<"$line")
    p50=$(sed 's/.* p50_us=\([0-9]*\).*/\1/' <<<"$line")
    p99=$(sed 's/.* p99_us=\([0-9]*\).*/\1/' <<<"$line")
    status_errors=$(sed 's/.* status_errors=\([0-9]*\).*/\1/' <<<"$line")
    sockerr=$(awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "=");
                     if (kv[1] ~ /^(connect|read|write)_errors$|^timeouts$/) n += kv[2] } }
                   END { print n + 0 }' <<<"$line")
    R_REQ[$k]=$requests
    # Per process: which of master / workers / billing the time went to.
    R_SPLIT[$k]=$(awk -v hz="$CLK_TCK" -v n="$requests" '
        NR == FNR { t0[$1] = $2; next }
        { c = "?"; f = "/proc/" $1 "/comm"; if ((getline c < f) > 0) close(f)
          printf "%s%s(%s) %.1f", sep, $1, c, (n > 0 ? ($2 - t0[$1]) * 1e6 / hz / n : 0); sep = ", " }' \
        "$T/cpu-$k.before" "$T/cpu-$k.after")
    R_NON2XX[$k]=$status_errors
    R_SOCKERR[$k]=$sockerr
    R_P50[$k]=$p50
    R_P99[$k]=$p99
    R_RPS[$k]=$(awk -v n="$requests" -v d="$duration_us" 'BEGIN { printf "%.0f", (d > 0 ? n * 1e6 / d : 0) }')
    R_CPU[$k]=$(awk -v t=$((s1 - s0)) -v hz="$CLK_TCK" -v n="$requests" \
        'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "n/a" }')
    if [ "$target" = direct ]; then R_UPCPU[$k]="-"
    else R_UPCPU[$k]=$(awk -v t=$((u1 - u0)) -v hz="$CLK_TCK" -v n="$requests" \
        'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "n/a" }'); fi
    if [ "$status_errors" -gt 0 ] || [ "$sockerr" -gt 0 ]; then
        EXIT_STATUS=2
        note "WARNING: $target $mode: $status_errors of $requests answers were non-2xx, $sockerr socket errors/timeouts"
        [ "$status_errors" -gt 0 ] && R_NOTE[$k]="${R_NOTE[$k]:+${R_NOTE[$k]}; }$status_errors non-2xx: measures the error path"
    fi
    note "$target $mode: $requests requests, ${R_RPS[$k]} req/s; CPU of ${#pids1[@]} server processes (${pids1[*]})"
}

for mode in $MODES; do
    for target in $TARGETS; do
        case $target in
        direct)
            measure direct "$mode" "http://127.0.0.1:$UP_PORT" /v1/chat/completions sk-upstream-bench "$UP_PID" ;;
        nginx)
            p=/v1/chat/completions; [ "$mode" = stream ] && p=/stream/v1/chat/completions
            measure nginx "$mode" "http://127.0.0.1:$NGX_PORT" "$p" sk-upstream-bench "$NGINX_PID" ;;
        gateway)
            if [ -n "$GATEWAY_WHY" ]; then EXIT_STATUS=2; continue; fi
            measure gateway "$mode" "http://127.0.0.1:$GW_PORT" /v1/chat/completions "$GW_KEY" "$GW_PID" ;;
        *) die "unknown target '$target' (direct, nginx, gateway)" ;;
        esac
    done
done

# ---------------------------------------------------------------- report
ms() { awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2fx", a / b; else print "n/a" }'; }

echo
echo "tokenaudit proxy benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)  $(uname -n), $(nproc) CPUs"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION (warm-up $WARMUP), $WORKERS server workers, fake upstream $UPSTREAM_WORKERS processes, $CHUNKS chunks per stream"
echo "CPU us/req = (utime+stime of the server's processes, all children) / requests; upstream = the fake upstream's share"
echo
printf '%-8s %-7s %10s %9s %9s %11s %12s %9s %8s  %s\n' \
    target mode req/s p50_ms p99_ms cpu_us/req upstream_us non2xx sockerr note
for mode in $MODES; do
    for target in $TARGETS; do
        k="$target.$mode"
        if [ -z "${R_REQ[$k]:-}" ]; then
            printf '%-8s %-7s %10s %9s %9s %11s %12s %9s %8s  %s\n' "$target" "$mode" - - - - - - - \
                "skipped: ${GATEWAY_WHY:-not run}"
            continue
        fi
        printf '%-8s %-7s %10s %9s %9s %11s %12s %9s %8s  %s\n' "$target" "$mode" "${R_RPS[$k]}" \
            "$(ms "${R_P50[$k]}")" "$(ms "${R_P99[$k]}")" "${R_CPU[$k]}" "${R_UPCPU[$k]}" \
            "${R_NON2XX[$k]}" "${R_SOCKERR[$k]}" "${R_NOTE[$k]:-}"
    done
done
echo
printf '%-16s %-7s %10s %9s %9s %11s\n' ratio mode req/s p50 p99 cpu/req
for mode in $MODES; do
    for pair in gateway/nginx nginx/direct gateway/direct; do
        a=${pair%/*} b=${pair#*/}
        [ -n "${R_REQ[$a.$mode]:-}" ] && [ -n "${R_REQ[$b.$mode]:-}" ] || continue
        flag=""
        [ "${R_NON2XX[$a.$mode]}" = 0 ] && [ "${R_NON2XX[$b.$mode]}" = 0 ] ||
            flag="  (not comparable: non-2xx answers)"
        printf '%-16s %-7s %10s %9s %9s %11s%s\n' "$pair" "$mode" \
            "$(ratio "${R_RPS[$a.$mode]}" "${R_RPS[$b.$mode]}")" \
            "$(ratio "${R_P50[$a.$mode]}" "${R_P50[$b.$mode]}")" \
            "$(ratio "${R_P99[$a.$mode]}" "${R_P99[$b.$mode]}")" \
            "$(ratio "${R_CPU[$a.$mode]}" "${R_CPU[$b.$mode]}")" "$flag"
    done
done
echo
echo "CPU us/req by process, pid(name):"
for mode in $MODES; do
    for target in $TARGETS; do
        [ -n "${R_SPLIT[$target.$mode]:-}" ] && printf '  %-8s %-7s %s\n' "$target" "$mode" "${R_SPLIT[$target.$mode]}"
    done
done
[ -z "$GATEWAY_WHY" ] || { echo; echo "gateway skipped: $GATEWAY_WHY"; }
# The books after the load: every measured request must have been settled
# and audited (billing kept up), or the CPU figure left work for later.
if [ -n "$GW_PID" ] && [ -z "$GATEWAY_WHY" ]; then
    sleep 1
    if "$BUILD_DIR/tokenaudit" ledger verify --data-dir "$T/gateway-data" >"$T/verify.log" 2>&1; then
        echo "gateway ledger verify: ok"
    elif grep -qi 'unknown' "$T/verify.log"; then
        echo "gateway ledger verify: not available in this build: $(head -c 300 "$T/verify.log" | tr '\n' ' ')"
    else
        echo "gateway ledger verify: FAILED: $(head -c 600 "$T/verify.log" | tr '\n' ' ')"
        EXIT_STATUS=2
    fi
fi
exit $EXIT_STATUS
