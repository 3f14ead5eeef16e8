# Shared set-up for scripts/demo.sh, scripts/test.sh and bench/*.sh.
#
# Sourced, not run.  On a Debian 12 machine, as root, it:
#   - installs the Debian packages that are missing (install_packages),
#   - builds and installs the extension (build_install),
#   - starts a throwaway PostgreSQL 15 cluster and a redis-server, both on
#     loopback only, in $RUN_DIR (start_servers), and
#   - stops them again when the calling script exits, however it exits.
# Running it twice is harmless: leftovers of an earlier run are stopped
# and removed first.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BIN=/usr/lib/postgresql/15/bin
PG_CONFIG=$PG_BIN/pg_config
RUN_DIR=${REDLOCK_RUN_DIR:-/tmp/redlock-run}
PGPORT=${REDLOCK_PGPORT:-54329}
REDIS_PORT=${REDLOCK_REDIS_PORT:-16379}
RUN_USER=postgres		# initdb and postgres refuse to run as root

export PGHOST=$RUN_DIR PGPORT PGUSER=postgres PGDATABASE=postgres
export REDLOCK_RUN_DIR=$RUN_DIR REDLOCK_REDIS_PORT=$REDIS_PORT PG_BIN

PACKAGES=(
	make gcc libc6-dev pkg-config
	postgresql-15 postgresql-server-dev-15 postgresql-client-15
	libhiredis-dev libssl-dev openssl redis-server redis-tools
	python3 python3-psycopg2 python3-redis python3-pytest
)

say() { printf '\n== %s\n' "$*"; }

need_root() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "run this as root: it installs packages and the extension" >&2
		exit 1
	fi
}

# install_packages [extra packages...]: apt-get install what is missing.
install_packages() {
	local missing=() p
	for p in "${PACKAGES[@]}" "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
			missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		say "installing ${missing[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends "${missing[@]}" >/dev/null
	fi
}

# install_node_modules: the npm packages of the interop tests (node-redlock
# and friends), pinned by test/node/package-lock.json.
install_node_modules() {
	if ! command -v npm >/dev/null 2>&1; then
		install_packages nodejs npm
	fi
	if [ ! -d "$ROOT/test/node/node_modules/redlock" ]; then
		say "installing npm packages for the interop tests"
		(cd "$ROOT/test/node" && npm ci --no-audit --no-fund --loglevel=error)
	fi
}

build_install() {
	say "building and installing the extension"
	make -C "$ROOT" -s PG_CONFIG="$PG_CONFIG" >/dev/null
	make -C "$ROOT" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
}

# stop_servers: stop whatever an earlier or the current run started.
stop_servers() {
	if [ -f "$RUN_DIR/pg/postmaster.pid" ]; then
		runuser -u "$RUN_USER" -- "$PG_BIN/pg_ctl" -D "$RUN_DIR/pg" -m immediate \
			-w stop >/dev/null 2>&1 || true
	fi
	local pidfile pid i
	for pidfile in "$RUN_DIR"/redis*.pid; do
		[ -f "$pidfile" ] || continue
		pid=$(cat "$pidfile")
		kill "$pid" 2>/dev/null || true
		for i in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		rm -f "$pidfile"
	done
}

# start_servers: a fresh cluster on $PGPORT and Redis on $REDIS_PORT.
start_servers() {
	stop_servers
	rm -rf "$RUN_DIR"
	mkdir -p "$RUN_DIR"
	chown "$RUN_USER" "$RUN_DIR"
	trap stop_servers EXIT

	say "starting redis-server on 127.0.0.1:$REDIS_PORT"
	redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
		--daemonize yes --pidfile "$RUN_DIR/redis.pid" \
		--logfile "$RUN_DIR/redis.log" --dir "$RUN_DIR"
	local i
	for i in $(seq 50); do
		redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
		sleep 0.1
	done

	say "starting PostgreSQL 15 on 127.0.0.1:$PGPORT"
	runuser -u "$RUN_USER" -- "$PG_BIN/initdb" -D "$RUN_DIR/pg" -U postgres \
		-A trust --no-sync >"$RUN_DIR/initdb.log"
	cat >>"$RUN_DIR/pg/postgresql.conf" <<-EOF
		listen_addresses = '127.0.0.1'
		port = $PGPORT
		unix_socket_directories = '$RUN_DIR'
		max_connections = 120
		max_prepared_transactions = 10
		fsync = off
		redlock.servers = '127.0.0.1:$REDIS_PORT'
	EOF
	local postgres=()
	if [ -n "${REDLOCK_VALGRIND:-}" ]; then
		# every backend under memcheck, one report file per process
		cat >"$RUN_DIR/postgres-valgrind" <<-EOF2
			#!/bin/sh
			exec valgrind --quiet --trace-children=yes --error-limit=no \\
				--read-var-info=no --suppressions=$ROOT/test/valgrind.supp \\
				--log-file=$RUN_DIR/valgrind.%p.log $PG_BIN/postgres "\$@"
		EOF2
		chmod 755 "$RUN_DIR/postgres-valgrind"
		postgres=(-p "$RUN_DIR/postgres-valgrind" -t 120)
	fi
	runuser -u "$RUN_USER" -- "$PG_BIN/pg_ctl" -D "$RUN_DIR/pg" "${postgres[@]}" \
		-l "$RUN_DIR/postgresql.log" -w start >/dev/null
}

# valgrind_reports: list the report files memcheck wrote (empty is clean).
valgrind_reports() {
	find "$RUN_DIR" -name 'valgrind.*.log' -size +0 2>/dev/null
}

# start_extra_redis PORT [ARG...]: one more redis-server on 127.0.0.1:PORT
# (a master for multi-master runs, a replica with --replicaof), stopped with
# the others.
start_extra_redis() {
	redis-server --bind 127.0.0.1 --port "$1" --save '' --appendonly no \
		--daemonize yes --pidfile "$RUN_DIR/redis-$1.pid" \
		--logfile "$RUN_DIR/redis-$1.log" --dir "$RUN_DIR" "${@:2}"
	local i
	for i in $(seq 50); do
		redis-cli -p "$1" ping >/dev/null 2>&1 && return
		sleep 0.1
	done
}

# bench_database: a fresh database "bench" with the extension, for the
# benchmark scripts.
bench_database() {
	psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
DROP DATABASE IF EXISTS bench;
CREATE DATABASE bench;
\c bench
CREATE EXTENSION redlock;
SQL
}

# bench_accounts [DB]: the table the pgbench scripts update (100000 rows,
# in DB, default psql's), and those scripts in $RUN_DIR: redlock.sql
# (redlock_acquire on the row's key) and advisory.sql (the same with
# pg_advisory_xact_lock, the reference).
bench_accounts() {
	psql -X -q -v ON_ERROR_STOP=1 ${1:+-d "$1"} <<'SQL'
CREATE TABLE account (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0);
INSERT INTO account (id) SELECT g FROM generate_series(1, 100000) g;
VACUUM ANALYZE account;
SQL
	local lock
	for lock in "redlock_acquire('account:' || :k)" "pg_advisory_xact_lock(:k)"; do
		cat >"$RUN_DIR/$([ "${lock#redlock}" = "$lock" ] && echo advisory || echo redlock).sql" <<SQL
\set k random(1, 100000)
BEGIN;
SELECT $lock;
UPDATE account SET n = n + 1 WHERE id = :k;
COMMIT;
SQL
	done
}

# median N...: the median of the numbers given.
median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }

# say_machine: the machine a benchmark ran on, for its report.
say_machine() {
	say "machine"
	echo "$(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(redis-server --version | cut -d' ' -f1-3)"
}

# setup: everything above, in order.
setup() {
	need_root
	install_packages "$@"
	build_install
	start_servers
}
