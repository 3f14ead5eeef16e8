#!/usr/bin/env bash
# What highly available entries cost: a Sentinel group, replica
# acknowledgement, a Redis Cluster.  As root on Debian 12:
#
#     bench/ha.sh [seconds per run, default 10] [rounds, default 3]
#
# Sets up like the tests (scripts/lib.sh), plus, on loopback, a primary with
# one replica and three sentinels, and a Redis Cluster of three masters.
# 8 pgbench clients, each transaction locks a random key of 100000 and
# updates that row (as bench/pgbench.sh), in interleaved rounds:
# pg_advisory_xact_lock, redlock on the primary named directly, the same
# primary through its sentinel:// entry, that with redlock.replica_ack = 1,
# and the cluster:// entry.  Prints tps per run, the medians, each median
# over pg_advisory_xact_lock's from the same rounds, and how the cluster's
# script calls spread over its masters.
source "$(dirname "$0")/../scripts/lib.sh"
SECS=${1:-10}
ROUNDS=${2:-3}
setup bc

PRIMARY=$((REDIS_PORT + 5))
REPLICA=$((REDIS_PORT + 6))
start_extra_redis "$PRIMARY" --repl-diskless-sync-delay 0
start_extra_redis "$REPLICA" --replicaof 127.0.0.1 "$PRIMARY"
SENTINELS=""
for i in 1 2 3; do
	port=$((REDIS_PORT + 6 + i))
	cat >"$RUN_DIR/sentinel-$port.conf" <<CONF
port $port
bind 127.0.0.1
dir $RUN_DIR
sentinel monitor bench 127.0.0.1 $PRIMARY 2
sentinel down-after-milliseconds bench 5000
CONF
	redis-server "$RUN_DIR/sentinel-$port.conf" --sentinel --daemonize yes \
		--pidfile "$RUN_DIR/redis-sentinel-$port.pid" --logfile "$RUN_DIR/sentinel-$port.log"
	SENTINELS+="${SENTINELS:+;}127.0.0.1:$port"
done
for i in $(seq 100); do
	[ "$(redis-cli -p "$REPLICA" info replication | tr -d '\r' | sed -n 's/^master_link_status://p')" = up ] && break
	sleep 0.1
done
# the cluster: three masters, their bus ports 10000 higher
CLUSTER=""
for i in 0 1 2; do
	port=$((REDIS_PORT + 20 + i))
	mkdir -p "$RUN_DIR/cluster-$port"
	redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
		--cluster-enabled yes --cluster-config-file "$RUN_DIR/cluster-$port/nodes.conf" \
		--daemonize yes --pidfile "$RUN_DIR/redis-$port.pid" \
		--logfile "$RUN_DIR/redis-$port.log" --dir "$RUN_DIR/cluster-$port"
	for j in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
	CLUSTER+="${CLUSTER:+;}127.0.0.1:$port"
done
redis-cli --cluster create $(echo "$CLUSTER" | tr ';' ' ') --cluster-replicas 0 --cluster-yes >/dev/null
for i in $(seq 100); do
	[ "$(redis-cli -p $((REDIS_PORT + 20)) cluster info | tr -d '\r' | sed -n 's/^cluster_state://p')" = ok ] && break
	sleep 0.1
done

bench_database
bench_accounts bench

setting() {
	psql -X -q -d bench -c "ALTER DATABASE bench SET $1 = '$2'" >/dev/null
}
tps() {
	"$PG_BIN/pgbench" -n -M prepared -c 8 -j 2 -T "$SECS" -f "$RUN_DIR/$1.sql" bench 2>/dev/null |
		sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}

say_machine
KINDS="advisory direct sentinel sentinel+ack cluster"
say "8 clients, $SECS s per run, $ROUNDS interleaved rounds"
declare -A T=()
for run in $(seq "$ROUNDS"); do
	for kind in $KINDS; do
		case $kind in
		advisory) script=advisory ;;
		direct) setting redlock.servers "127.0.0.1:$PRIMARY"; setting redlock.replica_ack 0; script=redlock ;;
		sentinel) setting redlock.servers "sentinel://$SENTINELS/bench"; setting redlock.replica_ack 0; script=redlock ;;
		sentinel+ack) setting redlock.servers "sentinel://$SENTINELS/bench"; setting redlock.replica_ack 1; script=redlock ;;
		cluster) setting redlock.servers "cluster://$CLUSTER"; setting redlock.replica_ack 0; script=redlock ;;
		esac
		t=$(tps $script)
		T[$kind]+="$t "
		printf '  run %d %-13s %8.0f tps\n' "$run" "$kind" "$t"
	done
done
say "medians"
adv=$(median ${T[advisory]})
for kind in $KINDS; do
	m=$(median ${T[$kind]})
	printf '  %-13s %8.0f tps  %.2f x pg_advisory_xact_lock\n' "$kind" "$m" "$(echo "$m / $adv" | bc -l)"
done
say "script calls per cluster master (all rounds)"
for i in 0 1 2; do
	port=$((REDIS_PORT + 20 + i))
	calls=$(redis-cli -p "$port" info commandstats | tr -d '\r' |
		sed -n 's/^cmdstat_eval\(sha\)\{0,1\}:calls=\([0-9]*\),.*/\2/p' | paste -sd+ | bc)
	keys=$(redis-cli -p "$port" dbsize)
	printf '  127.0.0.1:%d  %8d script calls, %6d keys\n' "$port" "$calls" "$keys"
done
