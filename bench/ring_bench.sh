#!/bin/sh
# ring_bench.sh - events/s through the whole settlement path: producers take a
# hold (one ledger write txn each, like a worker) and push an event through the
# ring; billing applies each event to the ledger (settle) and to the audit env
# (record + index + daily aggregate), both environments committing per batch.
#
#   bench/ring_bench.sh [EVENTS_PER_PRODUCER] [PRODUCERS] [RING_SLOTS]
# Builds Release in build-ring-bench. Prints billing's events/s, measured from
# the first event it sees to the last one applied to both environments.
set -eu
N=${1:-50000}
P=${2:-2}
SLOTS=${3:-65536}
SRC=$(cd "$(dirname "$0")/.." && pwd)
B=${TA_BENCH_BUILD:-$SRC/build-ring-bench}
cmake -S "$SRC" -B "$B" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$B" -j2 --target test_producer billing_runner tokenaudit >/dev/null
D=$(mktemp -d /tmp/ta_ring_bench.XXXXXX)
trap 'rm -rf "$D"' EXIT
"$B/tests/test_producer" --data-dir "$D" --setup 16 --cost-limit 100000000
TOTAL=$((N * P))
"$B/tests/billing_runner" --data-dir "$D" --ring-slots "$SLOTS" --exit-after "$TOTAL" \
    2>"$D/billing.log" >"$D/billing.out" &
BPID=$!
while [ ! -e "$D/ring" ]; do sleep 0.05; done
START=$(date +%s.%N)
i=0
PIDS=""
while [ $i -lt "$P" ]; do
    "$B/tests/test_producer" --data-dir "$D" --events "$N" --quotas 16 --seed $i >/dev/null &
    PIDS="$PIDS $!"
    i=$((i + 1))
done
for p in $PIDS; do wait "$p"; done
PEND=$(date +%s.%N)
wait "$BPID"
END=$(date +%s.%N)
echo "producers: $P x $N events (hold txn + ring push each) in $(echo "$PEND - $START" | bc) s"
echo "billing:   $(cat "$D/billing.out")"
echo "end to end: $(echo "$TOTAL / ($END - $START)" | bc) events/s"
"$B/tokenaudit" ledger verify --data-dir "$D" 2>/dev/null || true

# Phase 2: billing alone. The ring is filled while billing is stopped
# (SIGSTOP), then billing drains it: its own settle + audit rate.
D2=$(mktemp -d /tmp/ta_ring_bench2.XXXXXX)
trap 'rm -rf "$D" "$D2"' EXIT
"$B/tests/test_producer" --data-dir "$D2" --setup 16 --cost-limit 100000000
BIG=1
while [ $BIG -lt $((TOTAL + 1)) ]; do BIG=$((BIG * 2)); done
"$B/tests/billing_runner" --data-dir "$D2" --ring-slots "$BIG" --exit-after "$TOTAL" \
    2>"$D2/billing.log" >"$D2/billing.out" &
BPID=$!
while [ ! -e "$D2/ring" ]; do sleep 0.05; done
sleep 0.2
kill -STOP "$BPID"
PIDS=""
i=0
while [ $i -lt "$P" ]; do
    "$B/tests/test_producer" --data-dir "$D2" --events "$N" --quotas 16 --seed $i >/dev/null &
    PIDS="$PIDS $!"
    i=$((i + 1))
done
for p in $PIDS; do wait "$p"; done
kill -CONT "$BPID"
wait "$BPID"
echo "billing alone (ring pre-filled, $BIG slots): $(cat "$D2/billing.out")"
"$B/tokenaudit" ledger verify --data-dir "$D2" 2>/dev/null || true
