#!/usr/bin/env bash
# What TLS to Redis costs.  As root on Debian 12:
#
#     bench/tls.sh [seconds per run, default 10]
#
# Sets up like the tests (scripts/lib.sh), plus a redis-server that speaks
# only TLS (a CA and a server certificate made here with openssl).  Then:
#   - 8 pgbench clients, each transaction locks a random key of 100000 and
#     updates that row (as bench/pgbench.sh), alternating a plain master and
#     the TLS one, three runs each, under fsync = on (PostgreSQL's default)
#     and off (commits cost nothing, so CPU shows most): tps, TLS / plain;
#   - the first acquire of a new backend (connect, TLS handshake, AUTH-free,
#     the script): median over 50 new sessions, plain and TLS.
source "$(dirname "$0")/../scripts/lib.sh"
SECS=${1:-10}
setup bc

CERTS=$RUN_DIR/certs
mkdir -p "$CERTS"
(
	cd "$CERTS"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout ca.key -out ca.crt -days 30 -subj /CN=bench-ca 2>/dev/null
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null
	echo "subjectAltName=IP:127.0.0.1,DNS:localhost" >server.ext
	openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
		-out server.crt -days 30 -extfile server.ext 2>/dev/null
)
chown -R "$RUN_USER" "$CERTS"
TLS_PORT=$((REDIS_PORT + 3))
redis-server --bind 127.0.0.1 --port 0 --tls-port "$TLS_PORT" \
	--tls-cert-file "$CERTS/server.crt" --tls-key-file "$CERTS/server.key" \
	--tls-ca-cert-file "$CERTS/ca.crt" --tls-auth-clients no \
	--save '' --appendonly no --daemonize yes --pidfile "$RUN_DIR/redis-$TLS_PORT.pid" \
	--logfile "$RUN_DIR/redis-$TLS_PORT.log" --dir "$RUN_DIR"
for i in $(seq 50); do
	redis-cli -p "$TLS_PORT" --tls --cacert "$CERTS/ca.crt" ping >/dev/null 2>&1 && break
	sleep 0.1
done

psql -X -q -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION redlock;
ALTER SYSTEM SET redlock.sslrootcert = '$CERTS/ca.crt';
SELECT pg_reload_conf();
SQL
bench_accounts

PLAIN="127.0.0.1:$REDIS_PORT"
TLS="rediss://127.0.0.1:$TLS_PORT"
masters() {
	psql -X -q -c "ALTER SYSTEM SET redlock.servers = '$1'" -c "SELECT pg_reload_conf()" >/dev/null
}
tps() {
	"$PG_BIN/pgbench" -n -M prepared -c 8 -j 2 -T "$SECS" -f "$RUN_DIR/redlock.sql" 2>/dev/null |
		sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}

say "machine"
echo "$(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')"
echo "$(openssl version), $(redis-server --version | cut -d' ' -f1-3)"

for fsync in on off; do
	psql -X -q -c "ALTER SYSTEM SET fsync = $fsync" -c "SELECT pg_reload_conf()" >/dev/null
	say "8 clients, one master, fsync = $fsync, plain and TLS alternating, $SECS s per run"
	declare -A T=()
	for run in 1 2 3; do
		for kind in plain tls; do
			masters "$([ $kind = plain ] && echo "$PLAIN" || echo "$TLS")"
			t=$(tps)
			T[$kind]+="$t "
			printf '  run %d %-5s %8.0f tps\n' "$run" "$kind" "$t"
		done
	done
	tp=$(median ${T[plain]}) tt=$(median ${T[tls]})
	printf '  medians (fsync = %s): plain %.0f tps, TLS %.0f tps: TLS / plain %.2f\n' \
		"$fsync" "$tp" "$tt" "$(echo "$tt / $tp" | bc -l)"
done
psql -X -q -c "ALTER SYSTEM RESET fsync" -c "SELECT pg_reload_conf()" >/dev/null

say "first acquire of a new backend (its connect and handshake), 50 sessions each"
/usr/bin/python3 - "$PLAIN" "$TLS" <<'PY'
import statistics, sys, time
import psycopg2
for label, servers in (("plain", sys.argv[1]), ("TLS", sys.argv[2])):
    firsts, seconds = [], []
    for _ in range(50):
        c = psycopg2.connect(dbname="postgres"); c.autocommit = True; cur = c.cursor()
        cur.execute("LOAD 'redlock'")
        cur.execute("SET redlock.servers = %s", (servers,))
        t = time.perf_counter(); cur.execute("SELECT redlock_acquire('bench:first')")
        firsts.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter(); cur.execute("SELECT redlock_acquire('bench:first')")
        seconds.append((time.perf_counter() - t) * 1000)
        c.close()
    print(f"  {label:5s} first acquire {statistics.median(firsts):.2f} ms, "
          f"the next one {statistics.median(seconds):.2f} ms (medians)")
PY
