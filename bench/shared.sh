#!/usr/bin/env bash
# Shared locks on one hot key: 8 readers and 1 writer at once.  As root on
# Debian 12:
#
#     bench/shared.sh [seconds per run, default 10] [rounds, default 3]
#
# Sets up like the tests (scripts/lib.sh).  Two pgbench runs go at the
# same time on one key: 8 reader clients (a shared lock, a read, ~1 ms of
# work) and 1 writer client (an exclusive lock and an UPDATE), first with
# pg_advisory_xact_lock_shared / pg_advisory_xact_lock, then with
# redlock_acquire_shared / redlock_acquire, alternating for ROUNDS rounds.
# Prints per run the readers' and the writer's tps and the writer's
# transaction latency p50 / p99 (its wait for the readers included: the
# fair queue should keep it near one reader's hold), then the medians and
# redlock's ratios to the advisory locks of the same rounds.
source "$(dirname "$0")/../scripts/lib.sh"
SECS=${1:-10}
ROUNDS=${2:-3}
setup bc
bench_database
psql -X -q -v ON_ERROR_STOP=1 -d bench <<'SQL'
CREATE TABLE hot (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0);
INSERT INTO hot VALUES (1, 0);
SQL

for kind in advisory redlock; do
	if [ $kind = advisory ]; then
		shared="pg_advisory_xact_lock_shared(42)" exclusive="pg_advisory_xact_lock(42)"
	else
		shared="redlock_acquire_shared('hot-shared')" exclusive="redlock_acquire('hot-shared')"
	fi
	cat >"$RUN_DIR/read-$kind.sql" <<-SQL
		BEGIN;
		SELECT $shared;
		SELECT n FROM hot WHERE id = 1;
		SELECT pg_sleep(0.001);
		COMMIT;
	SQL
	cat >"$RUN_DIR/write-$kind.sql" <<-SQL
		BEGIN;
		SELECT $exclusive;
		UPDATE hot SET n = n + 1 WHERE id = 1;
		COMMIT;
	SQL
done

# round KIND: readers and the writer at once; prints
# "reader-tps writer-tps writer-p50-ms writer-p99-ms"
round() {
	rm -f "$RUN_DIR"/wlog*
	"$PG_BIN/pgbench" -n -M prepared -c 8 -j 2 -T "$SECS" \
		-f "$RUN_DIR/read-$1.sql" bench >"$RUN_DIR/readers.out" 2>/dev/null &
	local readers=$!
	"$PG_BIN/pgbench" -n -M prepared -c 1 -T "$SECS" -l --log-prefix="$RUN_DIR/wlog" \
		-f "$RUN_DIR/write-$1.sql" bench >"$RUN_DIR/writer.out" 2>/dev/null
	wait $readers
	local rt wt
	rt=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$RUN_DIR/readers.out")
	wt=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$RUN_DIR/writer.out")
	cat "$RUN_DIR"/wlog* | /usr/bin/python3 -c "
import sys
lat = sorted(int(l.split()[2]) / 1000 for l in sys.stdin)
print('$rt', '$wt', lat[len(lat) // 2], lat[min(int(len(lat) * 0.99), len(lat) - 1)])"
}

say_machine
say "one key: 8 readers and 1 writer at once, $SECS s per run, $ROUNDS interleaved rounds"
declare -A R W P5 P9
for run in $(seq "$ROUNDS"); do
	for kind in advisory redlock; do
		read -r rt wt p50 p99 < <(round $kind)
		R[$kind]+="$rt " W[$kind]+="$wt " P5[$kind]+="$p50 " P9[$kind]+="$p99 "
		printf '  run %d %-9s readers %8.1f tps   writer %7.1f tps   writer p50 %6.2f ms   p99 %6.2f ms\n' \
			"$run" "$kind" "$rt" "$wt" "$p50" "$p99"
	done
done
say "medians"
for kind in advisory redlock; do
	printf '  %-9s readers %8.1f tps   writer %7.1f tps   writer p50 %6.2f ms   p99 %6.2f ms\n' "$kind" \
		"$(median ${R[$kind]})" "$(median ${W[$kind]})" "$(median ${P5[$kind]})" "$(median ${P9[$kind]})"
done
printf '  redlock / advisory: readers %.2f, writer tps %.2f, writer p99 %.2f\n' \
	"$(echo "$(median ${R[redlock]}) / $(median ${R[advisory]})" | bc -l)" \
	"$(echo "$(median ${W[redlock]}) / $(median ${W[advisory]})" | bc -l)" \
	"$(echo "$(median ${P9[redlock]}) / $(median ${P9[advisory]})" | bc -l)"
