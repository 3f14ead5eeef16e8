"""Every example the README shows runs here: the SQL patterns (with an
unlocked control where they show a race), the client libraries (node-postgres,
psycopg2, SQLAlchemy, JDBC, Spring), grants and per-tenant prefixes, and
node-redlock and SQL procedures sharing one counter."""

import datetime
import os
import subprocess
import threading
import time
import uuid

import psycopg2
import pytest

from conftest import SLOW, cursor_as, drop_roles, servers, wait_for

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
EXAMPLES = os.path.join(ROOT, "examples")
NODE_MODULES = os.path.join(ROOT, "test", "node", "node_modules")


@pytest.fixture
def exampledb(database):
    """A fresh database with redlock, and the environment that points the
    example programs at it."""
    admin = psycopg2.connect(dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS redlock_examples WITH (FORCE)")
        cur.execute("CREATE DATABASE redlock_examples")
    admin.close()
    env = dict(os.environ, PGDATABASE="redlock_examples", NODE_PATH=NODE_MODULES)
    subprocess.run(["psql", "-X", "-q", "-c", "CREATE EXTENSION redlock"], env=env, check=True)
    return env


def load(env, name):
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f",
                    os.path.join(EXAMPLES, name)], env=env, check=True,
                   stdout=subprocess.DEVNULL)


def connect(env):
    c = psycopg2.connect(dbname=env["PGDATABASE"])
    c.autocommit = True
    return c


def concurrently(env, n, sql, args_of, gate=None):
    """Run sql in n sessions at once; returns each one's value or error.

    With a gate (a table name), the sessions' writes to that table wait
    until every session is waiting (for the table, or for a Redis lock) or
    done: then all of them have read before any of them wrote, whatever the
    machine's speed, and an unlocked control always shows its race."""
    conns = [connect(env) for _ in range(n)]
    pids = []
    for c in conns:
        with c.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pids.append(cur.fetchone()[0])
    start = threading.Barrier(n)
    out = [None] * n
    done = [False] * n

    def one(i):
        start.wait()
        try:
            with conns[i].cursor() as cur:
                cur.execute(sql, args_of(i))
                out[i] = cur.fetchone()[0]
        except psycopg2.Error as e:
            out[i] = e
        done[i] = True

    holder = None
    if gate:
        holder = psycopg2.connect(dbname=env["PGDATABASE"])
        with holder.cursor() as cur:
            cur.execute(f"LOCK TABLE {gate} IN SHARE MODE")
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    if holder:
        watch = connect(env)

        def all_waiting_or_done():
            with watch.cursor() as cur:
                cur.execute("SELECT pg_stat_clear_snapshot()")
                cur.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s) AND "
                            "wait_event_type IN ('Lock', 'Extension')", (pids,))
                waiting = {r[0] for r in cur.fetchall()}
            return all(done[i] or pids[i] in waiting for i in range(n))

        wait_for(all_waiting_or_done, timeout=30, what="every session to wait at the gate")
        holder.commit()
        holder.close()
        watch.close()
    for t in threads:
        t.join()
    for c in conns:
        c.close()
    return out


def test_quickstart(exampledb):
    load(exampledb, "quickstart.sql")
    with connect(exampledb).cursor() as cur:
        cur.execute("SELECT status FROM orders WHERE id = 42")
        assert cur.fetchone() == ("paid",)


def test_count_limit(exampledb):
    load(exampledb, "count_limit.sql")
    for use_lock, check in ((False, lambda n: n > 3), (True, lambda n: n == 3)):
        with connect(exampledb).cursor() as cur:
            cur.execute("TRUNCATE export_job")
        out = concurrently(exampledb, 8, "SELECT start_export('acme', %s)",
                           lambda i: (use_lock,), gate="export_job")
        started = [o for o in out if not isinstance(o, Exception)]
        refused = [o for o in out if isinstance(o, psycopg2.errors.CheckViolation)]
        assert len(started) + len(refused) == 8
        assert check(len(started)), (use_lock, len(started))


def test_nightly_job(exampledb):
    load(exampledb, "nightly_job.sql")
    for use_lock, runs in ((False, lambda n: n > 1), (True, lambda n: n == 1)):
        with connect(exampledb).cursor() as cur:
            cur.execute("TRUNCATE job_run")
        out = concurrently(exampledb, 4, "SELECT run_nightly_report(%s, %s)",
                           lambda i: (f"replica-{i}", use_lock), gate="job_run")
        assert runs(out.count("ran")), (use_lock, out)
    # a replica that starts after the winner finished skips too
    out = concurrently(exampledb, 1, "SELECT run_nightly_report('late')", lambda i: ())
    assert out == ["skipped: already ran today"]


def shedlock_job(env, r, use_lock, stop):
    """A ShedLock-scheduled job as its RedisLockProvider runs it
    (lockAtMostFor 10 min, lockAtLeastFor 0, safeUpdate off): SET NX PX
    with ShedLock's value, skip if taken, DEL when done.  Records its runs
    in invoice_sync_run with the database's clock."""
    key = "job-lock:default:sync-invoices"
    with connect(env).cursor() as cur:
        while time.monotonic() < stop:
            if use_lock:
                when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
                value = f"ADDED:{when.replace('+00:00', 'Z')}@java-host:{uuid.uuid4()}"
                if not r.set(key, value, nx=True, px=600000):
                    time.sleep(0.005)
                    continue
            cur.execute("SELECT clock_timestamp()")
            started = cur.fetchone()[0]
            time.sleep(0.03)
            cur.execute("INSERT INTO invoice_sync_run VALUES ('shedlock', %s, clock_timestamp())",
                        (started,))
            if use_lock:
                r.delete(key)
            time.sleep(0.005)


def test_shedlock_job(exampledb, main_redis):
    """The SQL job and a ShedLock-style job on the same key never run at
    the same time; without the lock (the control) their runs overlap."""
    load(exampledb, "shedlock_job.sql")
    for use_lock in (False, True):
        with connect(exampledb).cursor() as cur:
            cur.execute("TRUNCATE invoice_sync_run")
        stop = time.monotonic() + 1.5 * SLOW
        java = threading.Thread(target=shedlock_job, args=(exampledb, main_redis, use_lock, stop))
        java.start()
        with connect(exampledb).cursor() as cur:
            while time.monotonic() < stop:
                cur.execute("SELECT sync_invoices('sql', %s)", (use_lock,))
                time.sleep(0.005)
            java.join(30)
            cur.execute("SELECT runner, started_at, finished_at FROM invoice_sync_run "
                        "ORDER BY started_at")
            runs = cur.fetchall()
        overlaps = sum(1 for i in range(1, len(runs))
                       if runs[i][1] < max(r[2] for r in runs[:i]))
        runners = {r[0] for r in runs}
        assert runners == {"sql", "shedlock"}, (use_lock, runs)
        if use_lock:
            assert overlaps == 0, runs
        else:
            assert overlaps > 0, "the control runs both at once"


ROLES = ("acme_app", "globex_app", "lock_users", "no_grant_app")


@pytest.fixture
def roles(exampledb):
    """examples/roles.sql loaded; its roles (cluster-wide) dropped again."""
    with connect(exampledb).cursor() as cur:
        drop_roles(cur, ROLES)
    load(exampledb, "roles.sql")
    with connect(exampledb).cursor() as cur:
        cur.execute("CREATE ROLE no_grant_app LOGIN")
    yield exampledb
    with connect(exampledb).cursor() as cur:
        drop_roles(cur, ROLES)


def as_role(env, role):
    return cursor_as(env["PGDATABASE"], role)


def test_roles_and_tenants(roles, main_redis):
    # the control: without prefixes, two applications' 'invoice:7' is one lock
    plain_a, plain_b = connect(roles).cursor(), connect(roles).cursor()
    plain_a.execute("SELECT redlock_acquire_session('invoice:7')")
    plain_b.execute("SELECT redlock_try_acquire('invoice:7')")
    assert plain_b.fetchone()[0] is None
    plain_a.execute("SELECT redlock_release_all()")

    # a role outside lock_users may not take locks
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        as_role(roles, "no_grant_app").execute("SELECT redlock_try_acquire('invoice:7')")

    acme, globex = as_role(roles, "acme_app"), as_role(roles, "globex_app")
    acme.execute("SELECT redlock_acquire_session('invoice:7')")
    assert main_redis.exists("acme:invoice:7") and not main_redis.exists("invoice:7")
    globex.execute("SELECT redlock_try_acquire('invoice:7')")
    assert globex.fetchone()[0] is not None, "each tenant has its own 'invoice:7'"
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        acme.execute("SET redlock.key_prefix = 'globex:'")
    acme.execute("SELECT redlock_release_all()")
    assert not main_redis.exists("acme:invoice:7")


def run_example(env, *cmd):
    # a slow backend (valgrind) makes retries of 5-second waits more likely
    env = dict(env, EXAMPLE_ATTEMPTS=str(5 * SLOW))
    return subprocess.run(list(cmd), env=env, check=True, capture_output=True,
                          text=True, timeout=120 * SLOW).stdout.strip()


def test_node_postgres(exampledb):
    assert run_example(exampledb, "node", os.path.join(EXAMPLES, "node_postgres.js")) \
        == "counter = 8"


def test_psycopg2_and_sqlalchemy(exampledb):
    assert run_example(exampledb, "/usr/bin/python3",
                       os.path.join(EXAMPLES, "python_clients.py")) == "counter = 16"


def test_jdbc_and_spring(exampledb, tmp_path):
    jars = ["postgresql", "spring3-core", "spring3-beans", "spring3-context", "spring3-aop",
            "spring3-expression", "spring3-jdbc", "spring3-transaction", "commons-logging",
            "aopalliance"]
    cp = ":".join(f"/usr/share/java/{j}.jar" for j in jars)
    run_example(exampledb, "javac", "-cp", cp, "-d", str(tmp_path),
                os.path.join(EXAMPLES, "java", "RedlockExample.java"))
    assert run_example(exampledb, "java", "-cp", f"{cp}:{tmp_path}", "RedlockExample") \
        == "counter = 16"


@pytest.mark.parametrize("n", [1, 3])
def test_node_redlock_and_sql_share_a_counter(exampledb, masters, n):
    """node-postgres clients holding node-redlock and SQL functions holding
    redlock_acquire increment one counter (read, then write) at once."""
    ms = masters(n)
    env = exampledb
    with connect(env).cursor() as cur:
        cur.execute("CREATE TABLE interop_counter (id int PRIMARY KEY, n int NOT NULL)")
        cur.execute("""CREATE FUNCTION bump(use_lock boolean) RETURNS void LANGUAGE plpgsql AS $$
                       DECLARE v int;
                       BEGIN
                         IF use_lock THEN PERFORM redlock_acquire('interop:counter'); END IF;
                         SELECT n INTO v FROM interop_counter WHERE id = 1;
                         PERFORM pg_sleep(0.002);
                         UPDATE interop_counter SET n = v + 1 WHERE id = 1;
                       END $$""")
    pgurl = f"postgresql://{env['PGUSER']}@localhost:{env['PGPORT']}/{env['PGDATABASE']}?host={env['PGHOST']}"
    rounds = 15

    def race(locked):
        with connect(env).cursor() as cur:
            cur.execute("INSERT INTO interop_counter VALUES (1, 0) "
                        "ON CONFLICT (id) DO UPDATE SET n = 0")
        mode = "counter" if locked else "counter-unlocked"
        nodes = [subprocess.Popen(["node", "redlock_client.js", ",".join(m.addr for m in ms),
                                   mode, "interop:counter", str(rounds), pgurl],
                                  cwd=os.path.join(ROOT, "test", "node"), stdout=subprocess.PIPE,
                                  text=True) for _ in range(2)]
        conns = [connect(env) for _ in range(2)]
        for c in conns:
            with c.cursor() as cur:
                cur.execute("SET redlock.servers = %s", (servers(ms),))

        def sql_side(c):
            with c.cursor() as cur:
                for _ in range(rounds):
                    cur.execute("SELECT bump(%s)", (locked,))

        threads = [threading.Thread(target=sql_side, args=(c,)) for c in conns]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for p in nodes:
            assert p.stdout.read().strip() == "done"
            p.wait(60)
        with connect(env).cursor() as cur:
            cur.execute("SELECT n FROM interop_counter WHERE id = 1")
            return cur.fetchone()[0]

    assert race(locked=False) < 4 * rounds, "the unlocked control loses updates"
    assert race(locked=True) == 4 * rounds
