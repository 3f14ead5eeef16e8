#!/usr/bin/env bash
# Throughput and latency of redlock_acquire next to pg_advisory_xact_lock,
# measured in the same run.  As root on Debian 12:
#
#     bench/pgbench.sh [seconds per run, default 10]
#
# Sets up like the tests (scripts/lib.sh): a throwaway cluster and one
# redis-server on 127.0.0.1.  Each pgbench transaction locks a random key
# of 100000 and updates that row; 8 clients.  Runs alternate between
# pg_advisory_xact_lock, a control (the same plus two "SELECT 1" round
# trips: what any two extra round trips cost on this machine) and
# redlock_acquire, three each, under fsync=on (PostgreSQL's default) and
# fsync=off (commits cost no disk wait, so the lock's CPU cost shows most).
# Then one client: the latency a transaction gains from redlock, in
# round trips measured with redis-benchmark in the same run.
source "$(dirname "$0")/../scripts/lib.sh"
SECS=${1:-10}
setup bc

PGBENCH=$PG_BIN/pgbench
psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE EXTENSION redlock;
CREATE TABLE account (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0);
INSERT INTO account (id) SELECT g FROM generate_series(1, 100000) g;
VACUUM ANALYZE account;
SQL

cat >"$RUN_DIR/advisory.sql" <<'SQL'
\set k random(1, 100000)
BEGIN;
SELECT pg_advisory_xact_lock(:k);
UPDATE account SET n = n + 1 WHERE id = :k;
COMMIT;
SQL
# control: the advisory transaction plus two trivial round trips between
# client and server, to show what any two extra round trips cost here
cat >"$RUN_DIR/advisory+2rt.sql" <<'SQL'
\set k random(1, 100000)
BEGIN;
SELECT pg_advisory_xact_lock(:k);
SELECT 1;
UPDATE account SET n = n + 1 WHERE id = :k;
SELECT 1;
COMMIT;
SQL
cat >"$RUN_DIR/redlock.sql" <<'SQL'
\set k random(1, 100000)
BEGIN;
SELECT redlock_acquire('account:' || :k);
UPDATE account SET n = n + 1 WHERE id = :k;
COMMIT;
SQL

# tps KIND CLIENTS: one pgbench run, prints its tps
tps() {
	"$PGBENCH" -n -M prepared -c "$2" -j "$(( $2 < 2 ? 1 : 2 ))" -T "$SECS" \
		-f "$RUN_DIR/$1.sql" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}
# latency KIND: average latency in ms of one client
latency() {
	"$PGBENCH" -n -M prepared -c 1 -T "$SECS" -f "$RUN_DIR/$1.sql" 2>/dev/null |
		sed -n 's/^latency average = \([0-9.]*\) ms/\1/p'
}
median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }

say "machine"
echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)," \
	"$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
echo "PostgreSQL $(psql -X -At -c 'SHOW server_version'), $(redis-server --version | cut -d' ' -f1-3)"
echo "pgbench -M prepared, 8 clients, $SECS s per run; Redis: one master on 127.0.0.1:$REDIS_PORT"

for fsync in on off; do
	psql -X -q -c "ALTER SYSTEM SET fsync = $fsync" -c "SELECT pg_reload_conf()" >/dev/null
	say "8 clients, fsync = $fsync"
	adv=() ctl=() rl=()
	for run in 1 2 3; do
		adv+=("$(tps advisory 8)")
		ctl+=("$(tps advisory+2rt 8)")
		rl+=("$(tps redlock 8)")
		printf '  run %d: advisory %7.0f tps   advisory+2 round trips %7.0f tps   redlock %7.0f tps\n' \
			"$run" "${adv[-1]}" "${ctl[-1]}" "${rl[-1]}"
	done
	a=$(median "${adv[@]}") c=$(median "${ctl[@]}") r=$(median "${rl[@]}")
	printf '  median: advisory %7.0f tps   advisory+2 round trips %7.0f tps   redlock %7.0f tps\n' \
		"$a" "$c" "$r"
	printf '  ratios to pg_advisory_xact_lock (fsync=%s): control %.2f, redlock_acquire %.2f\n' \
		"$fsync" "$(echo "$c / $a" | bc -l)" "$(echo "$r / $a" | bc -l)"
done

say "one client: latency added per transaction"
psql -X -q -c "ALTER SYSTEM RESET fsync" -c "SELECT pg_reload_conf()" >/dev/null
la=$(latency advisory)
lr=$(latency redlock)
rps=$(redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c 1 -n 100000 -t ping --csv 2>/dev/null |
	sed -n 's/^"PING_MBULK","\([0-9.]*\)".*/\1/p')
rtt=$(echo "1000 / $rps" | bc -l)
printf '  pg_advisory_xact_lock %.3f ms   redlock_acquire %.3f ms   Redis round trip %.3f ms\n' \
	"$la" "$lr" "$rtt"
printf '  added latency: %.3f ms = %.2f Redis round trips\n' \
	"$(echo "$lr - $la" | bc -l)" "$(echo "($lr - $la) / $rtt" | bc -l)"
