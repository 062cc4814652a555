#!/bin/sh
# ring_bench.sh - billing's cost per event through the whole settlement path:
# producers take a hold (one ledger write txn each, like a worker) and push an
# event through the ring; billing applies each event to the ledger (settle)
# and to the audit env (record + index + hourly aggregates), both environments
# committing per batch.
#
#   bench/ring_bench.sh [EVENTS_PER_PRODUCER] [PRODUCERS] [RING_SLOTS]
#   RUNS=5 bench/ring_bench.sh        # repetitions (default 3); min and median printed
# Builds Release in build-ring-bench (TA_BENCH_BUILD). Two phases per run:
#   end to end    billing runs beside the producers (holds taken and settled
#                 as they come, few outstanding);
#   billing alone the ring is filled while billing is stopped (SIGSTOP), then
#                 billing drains it: its catch-up rate, with every event's hold
#                 outstanding (N x P holds in the ledger).
# Billing's figures are its own: events/s from the first event it sees to the
# last one applied to both environments, and its CPU time (user + system,
# getrusage) over the same span per event. `tokenaudit ledger verify` runs
# after every phase; a difference stops the bench (exit 1).
set -eu
N=${1:-50000}
P=${2:-2}
SLOTS=${3:-65536}
RUNS=${RUNS:-3}
QUOTAS=${QUOTAS:-16} # quotas (one user each) the events spread over
SRC=$(cd "$(dirname "$0")/.." && pwd)
B=${TA_BENCH_BUILD:-$SRC/build-ring-bench}
cmake -S "$SRC" -B "$B" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$B" -j2 --target test_producer billing_runner tokenaudit >/dev/null
TOTAL=$((N * P))
TMPS=""
trap 'rm -rf $TMPS' EXIT
E2E=""
ALONE=""

verify() { # dir
    if ! out=$("$B/tokenaudit" ledger verify --data-dir "$1" 2>&1); then
        echo "ledger verify FAILED:"
        echo "$out"
        exit 1
    fi
    echo "  verify: $(echo "$out" | tail -1)"
}

producers() { # dir
    i=0
    PIDS=""
    while [ $i -lt "$P" ]; do
        "$B/tests/test_producer" --data-dir "$1" --events "$N" --quotas "$QUOTAS" --seed $i >/dev/null &
        PIDS="$PIDS $!"
        i=$((i + 1))
    done
    for p in $PIDS; do wait "$p"; done
}

cpu_of() { # billing_runner's line -> its cpu us/event
    sed -n 's/.*cpu \([0-9.]*\) us\/event.*/\1/p' "$1"
}

run=1
while [ $run -le "$RUNS" ]; do
    echo "run $run of $RUNS: $P producers x $N events"
    # Phase 1: end to end
    D=$(mktemp -d /tmp/ta_ring_bench.XXXXXX)
    TMPS="$TMPS $D"
    "$B/tests/test_producer" --data-dir "$D" --setup "$QUOTAS" --cost-limit 100000000
    "$B/tests/billing_runner" --data-dir "$D" --ring-slots "$SLOTS" --exit-after "$TOTAL" \
        2>"$D/billing.log" >"$D/billing.out" &
    BPID=$!
    while [ ! -e "$D/ring" ]; do sleep 0.05; done
    START=$(date +%s.%N)
    producers "$D"
    PEND=$(date +%s.%N)
    wait "$BPID"
    END=$(date +%s.%N)
    echo "  end to end: producers done in $(echo "$PEND - $START" | bc) s, $(echo "$TOTAL / ($END - $START)" | bc) events/s"
    echo "  billing:    $(cat "$D/billing.out")"
    verify "$D"
    E2E="$E2E $(cpu_of "$D/billing.out")"

    # Phase 2: billing alone. The ring is filled while billing is stopped
    # (SIGSTOP), then billing drains it: its own settle + audit rate.
    D2=$(mktemp -d /tmp/ta_ring_bench2.XXXXXX)
    TMPS="$TMPS $D2"
    "$B/tests/test_producer" --data-dir "$D2" --setup "$QUOTAS" --cost-limit 100000000
    BIG=1
    while [ $BIG -lt $((TOTAL + 1)) ]; do BIG=$((BIG * 2)); done
    "$B/tests/billing_runner" --data-dir "$D2" --ring-slots "$BIG" --exit-after "$TOTAL" \
        2>"$D2/billing.log" >"$D2/billing.out" &
    BPID=$!
    while [ ! -e "$D2/ring" ]; do sleep 0.05; done
    sleep 0.2
    kill -STOP "$BPID"
    producers "$D2"
    kill -CONT "$BPID"
    wait "$BPID"
    echo "  billing alone (ring pre-filled, $BIG slots, $TOTAL holds outstanding):"
    echo "              $(cat "$D2/billing.out")"
    verify "$D2"
    ALONE="$ALONE $(cpu_of "$D2/billing.out")"
    rm -rf "$D" "$D2"
    run=$((run + 1))
done

summary() { # label values...
    label=$1
    shift
    echo "$@" | tr ' ' '\n' | sort -n | awk -v l="$label" '
        { v[NR] = $1 }
        END { printf "%-14s min %.2f  median %.2f  max %.2f us of CPU per event (%d runs)\n",
              l, v[1], v[int((NR + 1) / 2)], v[NR], NR }'
}
echo
echo "billing CPU per event (settlement + audit record):"
summary "end to end" $E2E
summary "billing alone" $ALONE
