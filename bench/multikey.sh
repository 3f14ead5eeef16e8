#!/usr/bin/env bash
# Several keys at once: redlock_acquire(text[]) next to pg_advisory_xact_lock
# on the same keys, measured in the same run.  As root on Debian 12:
#
#     bench/multikey.sh [seconds per run, default 10] [rounds, default 3]
#
# Sets up like the tests (scripts/lib.sh).  Each pgbench transaction locks
# 4 random keys of 100000 and updates those 4 rows; 8 clients.  Rounds
# alternate, so that the machine's noise falls on every kind alike:
#   - advisory: pg_advisory_xact_lock on each key, in key order (the
#     reference; in order, as advisory locks taken in any order deadlock);
#   - redlock, one array: redlock_acquire(ARRAY[4 keys]);
#   - redlock, one by one: redlock_acquire on each key, in key order.
# Then one client against one master 2 ms away (bench/delay_proxy.py): the
# array costs one round trip whatever the number of keys, one key at a
# time costs one each.
source "$(dirname "$0")/../scripts/lib.sh"
SECS=${1:-10}
ROUNDS=${2:-3}
setup bc

PGBENCH=$PG_BIN/pgbench
psql -X -q -v ON_ERROR_STOP=1 -c "CREATE EXTENSION redlock"
bench_accounts

KEYS='\set k1 random(1, 100000)
\set k2 random(1, 100000)
\set k3 random(1, 100000)
\set k4 random(1, 100000)'
ROWS='UPDATE account SET n = n + 1 WHERE id IN (:k1, :k2, :k3, :k4);'
cat >"$RUN_DIR/m-advisory.sql" <<SQL
$KEYS
BEGIN;
SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT unnest(ARRAY[:k1, :k2, :k3, :k4]::bigint[]) k ORDER BY 1) s;
$ROWS
COMMIT;
SQL
cat >"$RUN_DIR/m-array.sql" <<SQL
$KEYS
BEGIN;
SELECT redlock_acquire(array_agg(DISTINCT 'account' || k)) FROM unnest(ARRAY[:k1, :k2, :k3, :k4]::bigint[]) k;
$ROWS
COMMIT;
SQL
cat >"$RUN_DIR/m-single.sql" <<SQL
$KEYS
BEGIN;
SELECT redlock_acquire('account' || k) FROM (SELECT DISTINCT unnest(ARRAY[:k1, :k2, :k3, :k4]::bigint[]) k ORDER BY 1) s;
$ROWS
COMMIT;
SQL

# run KIND CLIENTS: one pgbench run; prints "tps p99_ms"
run() {
	local log="$RUN_DIR/m-$1.log"
	"$PGBENCH" -n -M prepared -c "$2" -j "$(( $2 < 2 ? 1 : 2 ))" -T "$SECS" -r \
		-f "$RUN_DIR/m-$1.sql" >"$log" 2>&1
	sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$log"
}

say_machine
echo "pgbench -M prepared, 8 clients, $SECS s per run, $ROUNDS rounds; 4 keys per transaction"

say "8 clients, one master on 127.0.0.1:$REDIS_PORT"
adv=() arr=() one=()
for r in $(seq "$ROUNDS"); do
	adv+=("$(run advisory 8)")
	arr+=("$(run array 8)")
	one+=("$(run single 8)")
	printf '  round %d: advisory %6.0f   redlock array %6.0f   redlock one by one %6.0f tps\n' \
		"$r" "${adv[-1]}" "${arr[-1]}" "${one[-1]}"
done
a=$(median "${adv[@]}") b=$(median "${arr[@]}") c=$(median "${one[@]}")
printf '  median: advisory %6.0f   redlock array %6.0f   redlock one by one %6.0f tps\n' "$a" "$b" "$c"
printf '  ratios to pg_advisory_xact_lock: array %.2f, one by one %.2f\n' \
	"$(echo "$b / $a" | bc -l)" "$(echo "$c / $a" | bc -l)"

DELAY_MS=2
say "one client, the master $DELAY_MS ms away (bench/delay_proxy.py)"
/usr/bin/python3 "$ROOT/bench/delay_proxy.py" $((REDIS_PORT + 10)) "$REDIS_PORT" "$DELAY_MS" &
proxy=$!
trap 'kill "$proxy" 2>/dev/null || true; stop_servers' EXIT
for _ in $(seq 50); do
	redis-cli -p $((REDIS_PORT + 10)) ping >/dev/null 2>&1 && break
	sleep 0.1
done
psql -X -q -c "ALTER SYSTEM SET redlock.servers = '127.0.0.1:$((REDIS_PORT + 10))'" \
	-c "SELECT pg_reload_conf()" >/dev/null
# latency KIND: average ms of one client's transaction
latency() {
	"$PGBENCH" -n -M prepared -c 1 -T "$SECS" -f "$RUN_DIR/m-$1.sql" 2>/dev/null |
		sed -n 's/^latency average = \([0-9.]*\) ms/\1/p'
}
la=() lb=() lc=()
for r in $(seq "$ROUNDS"); do
	la+=("$(latency advisory)")
	lb+=("$(latency array)")
	lc+=("$(latency single)")
done
a=$(median "${la[@]}") b=$(median "${lb[@]}") c=$(median "${lc[@]}")
printf '  median latency: advisory %.2f ms   redlock array %.2f ms   redlock one by one %.2f ms\n' "$a" "$b" "$c"
printf '  added by the lock: array %.2f ms (%.1f delays), one by one %.2f ms (%.1f delays)\n' \
	"$(echo "$b - $a" | bc -l)" "$(echo "($b - $a) / $DELAY_MS" | bc -l)" \
	"$(echo "$c - $a" | bc -l)" "$(echo "($c - $a) / $DELAY_MS" | bc -l)"
echo "  (each includes the release at commit: one more round trip for all the keys together)"
kill "$proxy"
