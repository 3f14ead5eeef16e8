#!/usr/bin/env bash
# Contention, hand-off, wire traffic and memory.  As root on Debian 12:
#
#     bench/hotkey.sh [seconds per run, default 10] [memory cycles, default 1000000]
#
# Sets up like the tests (scripts/lib.sh).  Then:
#   - hot key: 8 clients on one key, each transaction holds it over ~1 ms
#     of work plus an UPDATE and COMMIT; pg_advisory_xact_lock and
#     redlock_acquire alternate, three runs each, and node-redlock (npm
#     redlock 4.2.0, default retries) runs the same transaction once;
#     tps, latency p50/p99 and fairness (fewest / most transactions of a
#     client) from pgbench's per-transaction log;
#   - hand-off: release -> the blocked waiter holds the lock, on one master
#     and on three, and the hot key over three masters (a wake-up must
#     never be lost: every master publishes one);
#   - commands each master receives for an uncontended acquire + release
#     (MONITOR), with one master and with three;
#   - backend memory over many acquire/release cycles.
source "$(dirname "$0")/../scripts/lib.sh"
SECS=${1:-10}
CYCLES=${2:-1000000}
setup bc
install_node_modules
start_extra_redis $((REDIS_PORT + 1))
start_extra_redis $((REDIS_PORT + 2))

psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE DATABASE bench;
\c bench
CREATE EXTENSION redlock;
CREATE TABLE hot (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0);
INSERT INTO hot VALUES (1, 0);
SQL

for kind in advisory redlock; do
	lock=$([ $kind = advisory ] && echo "pg_advisory_xact_lock(42)" || echo "redlock_acquire('hot:1')")
	cat >"$RUN_DIR/hot-$kind.sql" <<-SQL
		BEGIN;
		SELECT $lock;
		SELECT pg_sleep(0.001);
		UPDATE hot SET n = n + 1 WHERE id = 1;
		COMMIT;
	SQL
done

# hot KIND: one pgbench run; prints "tps p50 p99 fairness"
hot() {
	rm -f "$RUN_DIR"/hotlog*
	local tps
	tps=$("$PG_BIN/pgbench" -d bench -n -M prepared -c 8 -j 2 -T "$SECS" -l \
		--log-prefix="$RUN_DIR/hotlog" -f "$RUN_DIR/hot-$1.sql" 2>/dev/null |
		sed -n 's/^tps = \([0-9.]*\) .*/\1/p')
	cat "$RUN_DIR"/hotlog* | /usr/bin/python3 -c "
import sys, collections
c = collections.Counter(); lat = []
for line in sys.stdin:
    p = line.split(); c[p[0]] += 1; lat.append(int(p[2]) / 1000)
lat.sort()
print('$tps', lat[len(lat) // 2], lat[int(len(lat) * 0.99)], min(c.values()) / max(c.values()))"
}

say "hot key: 8 clients, one key, ~1 ms of work per transaction, $SECS s per run"
declare -A T P F
for run in 1 2 3; do
	for kind in advisory redlock; do
		read -r tps p50 p99 fair < <(hot $kind)
		T[$kind]+="$tps " P[$kind]+="$p99 " F[$kind]+="$fair "
		printf '  run %d %-9s %7.1f tps   p50 %6.2f ms   p99 %6.2f ms   fairness %.2f\n' \
			"$run" "$kind" "$tps" "$p50" "$p99" "$fair"
	done
done
ta=$(median ${T[advisory]}) tr=$(median ${T[redlock]})
pa=$(median ${P[advisory]}) pr=$(median ${P[redlock]})
fr=$(median ${F[redlock]})
printf '  medians: advisory %.1f tps, p99 %.2f ms   redlock %.1f tps, p99 %.2f ms, fairness %.2f\n' \
	"$ta" "$pa" "$tr" "$pr" "$fr"
printf '  redlock / advisory: tps %.2f, p99 %.2f\n' \
	"$(echo "$tr / $ta" | bc -l)" "$(echo "$pr / $pa" | bc -l)"

say "the same transaction under node-redlock 4.2.0 (default retries), $SECS s"
NODE_PATH="$ROOT/test/node/node_modules" node "$ROOT/bench/node_hotkey.js" \
	"127.0.0.1:$REDIS_PORT" "postgresql://postgres@localhost:$PGPORT/bench?host=$RUN_DIR" 8 "$SECS" |
	/usr/bin/python3 -c "
import json, sys
r = json.load(sys.stdin)
print('  node-redlock %.1f tps   p50 %.2f ms   p99 %.2f ms   max %.0f ms   fairness %.2f   per worker %s   lock attempts that gave up %d' %
      (r['tps'], r['p50_ms'], r['p99_ms'], r['max_ms'], r['fairness'], r['per_worker'], r['gave_up']))"

say "hand-off: release -> the blocked waiter holds the lock"
/usr/bin/python3 "$ROOT/bench/waiting.py" handoff 200
/usr/bin/python3 "$ROOT/bench/waiting.py" handoff 200 "127.0.0.1:$REDIS_PORT" \
	"127.0.0.1:$((REDIS_PORT + 1))" "127.0.0.1:$((REDIS_PORT + 2))"

say "hot key over three masters: redlock, the same transaction, $SECS s per run"
three="127.0.0.1:$REDIS_PORT,127.0.0.1:$((REDIS_PORT + 1)),127.0.0.1:$((REDIS_PORT + 2))"
for run in 1 2 3; do
	read -r tps p50 p99 fair < <(PGOPTIONS="-c redlock.servers=$three" hot redlock)
	printf '  run %d %7.1f tps   p50 %6.2f ms   p99 %6.2f ms   fairness %.2f\n' \
		"$run" "$tps" "$p50" "$p99" "$fair"
done

say "commands per uncontended acquire + release, per master (MONITOR)"
/usr/bin/python3 "$ROOT/bench/waiting.py" commands "127.0.0.1:$REDIS_PORT"
/usr/bin/python3 "$ROOT/bench/waiting.py" commands "127.0.0.1:$REDIS_PORT" \
	"127.0.0.1:$((REDIS_PORT + 1))" "127.0.0.1:$((REDIS_PORT + 2))"

say "backend memory over $CYCLES acquire/release cycles"
/usr/bin/python3 "$ROOT/bench/waiting.py" memory "$CYCLES"
