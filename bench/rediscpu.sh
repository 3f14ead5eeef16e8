#!/usr/bin/env bash
# Redis's side of a lock: the CPU it spends per lock and the memory a lock
# and a key leave behind.  As root on Debian 12:
#
#     bench/rediscpu.sh [rounds, default 15] [cycles per round, default 1000]
#
# Sets up like the tests (scripts/lib.sh), on one master:
#   - Redis usec (INFO commandstats, EVALSHA) per uncontended acquire +
#     release: the minimal owner-checked pair any client pays (a SET NX PX
#     script and a compare-and-delete script) against redlock's scripts in
#     each lock format, all sent by the same Python client (redlock's are
#     the EVALSHA calls a backend sends, captured with MONITOR), so that
#     only Redis's work differs; interleaved rounds, medians.  The same
#     cycle in SQL against pg_advisory_xact_lock, for scale;
#   - used_memory per held lock and per idle key (its fencing counter),
#     and after the key horizon.
source "$(dirname "$0")/../scripts/lib.sh"
ROUNDS=${1:-15}
CYCLES=${2:-1000}
setup bc

bench_database
say_machine
say "Redis CPU per lock"
REDLOCK_REDIS_PORT=$REDIS_PORT /usr/bin/python3 "$ROOT/bench/rediscpu.py" cpu "$ROUNDS" "$CYCLES"
say "Redis memory"
REDLOCK_REDIS_PORT=$REDIS_PORT /usr/bin/python3 "$ROOT/bench/rediscpu.py" memory 10000
