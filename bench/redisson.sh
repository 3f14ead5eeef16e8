#!/usr/bin/env bash
# Sharing keys with Redisson (redlock.lock_format = redisson).  As root on
# Debian 12:
#
#     bench/redisson.sh [rounds, default 100]
#
# Sets up like the tests (scripts/lib.sh).  Then, on one master:
#   - hand-off latency: release -> the blocked waiter holds the lock, for
#     pg_advisory_xact_lock (the reference), SQL -> a Redisson thread (the
#     release publishes Redisson's unlock message), a Redisson unlock -> a
#     waiting backend (which listens on Redisson's channel), and Redisson ->
#     Redisson; interleaved rounds, median, p90 and max;
#   - uncontended acquire + release in each lock format, against
#     pg_advisory_lock, interleaved rounds.
# The Redisson side is test/python/rlock_client.py, RLock's protocol in
# Python: its own overhead is part of the figures where it takes part.
source "$(dirname "$0")/../scripts/lib.sh"
ROUNDS=${1:-100}
setup bc

bench_database
say_machine
say "wake-ups across the two lock families"
REDLOCK_REDIS_PORT=$REDIS_PORT /usr/bin/python3 "$ROOT/bench/redisson.py" wake "$ROUNDS"
say "lock formats"
REDLOCK_REDIS_PORT=$REDIS_PORT /usr/bin/python3 "$ROOT/bench/redisson.py" cycles 20000 5
