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
# With three masters (two more redis-servers on the same machine) it
# measures the same transaction, and one client's acquire+release pair
# against one master, on loopback and with every master 2 ms away (a
# delaying proxy in front of each), to show that requests go to the masters
# in parallel.
# Then one client: the latency a transaction gains from redlock, in
# round trips measured with redis-benchmark in the same run.
source "$(dirname "$0")/../scripts/lib.sh"
SECS=${1:-10}
setup bc

PGBENCH=$PG_BIN/pgbench
ONE="127.0.0.1:$REDIS_PORT"
THREE="$ONE, 127.0.0.1:$((REDIS_PORT + 1)), 127.0.0.1:$((REDIS_PORT + 2))"
start_extra_redis $((REDIS_PORT + 1))
start_extra_redis $((REDIS_PORT + 2))
psql -X -q -v ON_ERROR_STOP=1 -c "CREATE EXTENSION redlock"
bench_accounts
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

# masters LIST: what redlock.servers names for the following runs
masters() {
	psql -X -q -c "ALTER SYSTEM SET redlock.servers = '$1'" -c "SELECT pg_reload_conf()" >/dev/null
}

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

say "machine"
echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)," \
	"$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
echo "PostgreSQL $(psql -X -At -c 'SHOW server_version'), $(redis-server --version | cut -d' ' -f1-3)"
echo "pgbench -M prepared, 8 clients, $SECS s per run; Redis: one master on 127.0.0.1:$REDIS_PORT"

for fsync in on off; do
	psql -X -q -c "ALTER SYSTEM SET fsync = $fsync" -c "SELECT pg_reload_conf()" >/dev/null
	say "8 clients, fsync = $fsync"
	adv=() ctl=() rl=() rl3=()
	for run in 1 2 3; do
		adv+=("$(tps advisory 8)")
		ctl+=("$(tps advisory+2rt 8)")
		masters "$ONE"
		rl+=("$(tps redlock 8)")
		masters "$THREE"
		rl3+=("$(tps redlock 8)")
		printf '  run %d: advisory %6.0f   advisory+2 round trips %6.0f   redlock 1 master %6.0f   3 masters %6.0f tps\n' \
			"$run" "${adv[-1]}" "${ctl[-1]}" "${rl[-1]}" "${rl3[-1]}"
	done
	a=$(median "${adv[@]}") c=$(median "${ctl[@]}") r=$(median "${rl[@]}") r3=$(median "${rl3[@]}")
	printf '  median: advisory %6.0f   advisory+2 round trips %6.0f   redlock 1 master %6.0f   3 masters %6.0f tps\n' \
		"$a" "$c" "$r" "$r3"
	printf '  ratios to pg_advisory_xact_lock (fsync=%s): control %.2f, redlock 1 master %.2f, 3 masters %.2f\n' \
		"$fsync" "$(echo "$c / $a" | bc -l)" "$(echo "$r / $a" | bc -l)" "$(echo "$r3 / $a" | bc -l)"
done
masters "$ONE"

proxies=()
say "one client: acquire + release of a session lock, 3 masters against 1"
# pair_us LIST N: average microseconds of one acquire+release pair, over N
pair_us() {
	psql -X -At -v ON_ERROR_STOP=1 <<-SQL 2>&1 | sed -n 's/^NOTICE: *//p'
		SET redlock.servers = '$1';
		SELECT redlock_acquire_session('warm'), redlock_release('warm');
		DO \$\$
		DECLARE t0 timestamptz := clock_timestamp();
		BEGIN
		    FOR i IN 1..$2 LOOP
		        PERFORM redlock_acquire_session('pair');
		        PERFORM redlock_release('pair');
		    END LOOP;
		    RAISE NOTICE '%', round(extract(epoch FROM clock_timestamp() - t0) * 1e6 / $2);
		END \$\$;
	SQL
}
# pairs ONE THREE N: medians of three runs each, and their ratio
pairs() {
	local p1=() p3=() a b
	for run in 1 2 3; do
		p1+=("$(pair_us "$1" "$3")")
		p3+=("$(pair_us "$2" "$3")")
	done
	a=$(median "${p1[@]}") b=$(median "${p3[@]}")
	printf '  1 master %s us   3 masters %s us per acquire+release (medians of 3 x %d)   ratio %.2f\n' \
		"$a" "$b" "$3" "$(echo "$b / $a" | bc -l)"
}
pairs "$ONE" "$THREE" 5000

# On loopback the three masters share the two cores with the backend, so
# their CPU, not the network, sets the cost.  With each master DELAY_MS
# away (bench/delay_proxy.py delays every request), asking them one after
# another would cost three delays per request; in parallel, one.
DELAY_MS=2
say "one client: the same, each master $DELAY_MS ms away (bench/delay_proxy.py)"
for i in 0 1 2; do
	/usr/bin/python3 "$ROOT/bench/delay_proxy.py" $((REDIS_PORT + 10 + i)) \
		$((REDIS_PORT + i)) "$DELAY_MS" &
	proxies+=($!)
done
trap 'kill "${proxies[@]}" 2>/dev/null || true; stop_servers' EXIT
for i in 0 1 2; do
	for _ in $(seq 50); do
		redis-cli -p $((REDIS_PORT + 10 + i)) ping >/dev/null 2>&1 && break
		sleep 0.1
	done
done
FAR1="127.0.0.1:$((REDIS_PORT + 10))"
pairs "$FAR1" "$FAR1, 127.0.0.1:$((REDIS_PORT + 11)), 127.0.0.1:$((REDIS_PORT + 12))" 500
echo "  (asked one after another, 3 masters would take about 3 times as long)"
kill "${proxies[@]}"

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
