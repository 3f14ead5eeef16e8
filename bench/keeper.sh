#!/usr/bin/env bash
# What the lease keeper costs.  As root on Debian 12:
#
#     bench/keeper.sh [locks, default 10000] [seconds, default 20]
#
# Sets up like the tests (scripts/lib.sh) for Redis, then a throwaway
# PostgreSQL cluster with redlock preloaded (bench/keeper.py): one session
# holds that many session locks with a 30 s and a 3 s TTL, with the keeper
# off (the reference) and on; Redis scripts per second per held lock, Redis
# time, and the keeper's CPU.
source "$(dirname "$0")/../scripts/lib.sh"
LOCKS=${1:-10000}
SECS=${2:-20}
setup bc

say_machine
say "lease keeper"
(cd "$ROOT/test/python" && PG_BIN=$PG_BIN REDLOCK_REDIS_PORT=$REDIS_PORT \
	/usr/bin/python3 "$ROOT/bench/keeper.py" "$LOCKS" "$SECS" 30000 3000)
