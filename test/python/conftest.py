"""Shared fixtures of the scripted tests.

They run against the throwaway cluster and Redis that scripts/test.sh starts
(PGHOST, PGPORT, PGUSER and REDLOCK_REDIS_PORT come from scripts/lib.sh) and
start further redis-server processes of their own, on loopback only, when a
test needs to freeze, kill or restart one.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import psycopg2
import pytest
import redis

DBNAME = "redlock_py"
MAIN_REDIS_PORT = int(os.environ.get("REDLOCK_REDIS_PORT", "16379"))

# under scripts/test.sh --valgrind every backend is tens of times slower
SLOW = 20 if os.environ.get("REDLOCK_VALGRIND") else 1


def wait_for(condition, timeout=5.0, interval=0.01, what="condition"):
    """Poll until condition() is true; fail the test after timeout seconds
    (times SLOW)."""
    timeout *= SLOW
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port():
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisProcess:
    """A redis-server of a test's own, which it may freeze, kill or restart."""

    def __init__(self, port=None, args=()):
        self.port = port or free_port()
        self.args = list(args)
        self.dir = tempfile.mkdtemp(prefix="redlock-redis-")
        os.chmod(self.dir, 0o755)       # the postgres user reaches the socket
        self.socket = os.path.join(self.dir, "redis.sock")
        self.proc = None
        self.start()

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
             "--save", "", "--appendonly", "no", "--dir", self.dir,
             "--unixsocket", self.socket, "--unixsocketperm", "777", *self.args,
             "--logfile", os.path.join(self.dir, "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, what=f"redis on {self.port}")

    def _answers(self):
        try:
            return self.client(socket_timeout=0.2).ping()
        except redis.AuthenticationError:
            return True             # up, and asking for a password
        except redis.ResponseError as e:
            return "NOAUTH" in str(e)
        except redis.RedisError:
            return False

    def client(self, **kw):
        kw.setdefault("password", self.password)
        kw.setdefault("username", self.username)
        return redis.Redis(host="127.0.0.1", port=self.port, **kw)

    # credentials the test's own client uses (see test_security.py)
    password = None
    username = None

    def freeze(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def kill(self):
        """Gone at once, like a crash: nothing is saved."""
        self.resume()
        self.proc.kill()
        self.proc.wait()

    def restart(self):
        self.kill()
        self.start()

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def database():
    """A database with the extension, created afresh for the test run."""
    admin = psycopg2.connect(dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {DBNAME}")
    admin.close()
    conn = psycopg2.connect(dbname=DBNAME)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION redlock")
    conn.close()
    return DBNAME


class Session:
    """One PostgreSQL connection, with helpers that keep tests short."""

    def __init__(self, dbname, servers=None, autocommit=True, **connect):
        """connect: more psycopg2.connect() arguments (another cluster's
        host and port, say)."""
        self.conn = psycopg2.connect(dbname=dbname, **connect)
        self.conn.autocommit = autocommit
        self.pid = self.value("SELECT pg_backend_pid()")
        # load the library first: redlock.* are placeholders until then
        self.execute("LOAD 'redlock'")
        if servers:
            self.execute("SET redlock.servers = %s", (servers,))

    def execute(self, sql, args=None):
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else None

    def value(self, sql, args=None):
        rows = self.execute(sql, args)
        return rows[0][0] if rows else None

    def error(self, sql, args=None):
        """Run sql that must fail; return the psycopg2 error."""
        with pytest.raises(psycopg2.Error) as info:
            self.execute(sql, args)
        if not self.conn.autocommit:
            self.conn.rollback()
        return info.value

    def close(self):
        if not self.conn.closed:
            self.conn.close()


def cursor_as(dbname, role):
    """An autocommit cursor of a new connection as role."""
    c = psycopg2.connect(dbname=dbname, user=role)
    c.autocommit = True
    return c.cursor()


def drop_roles(cur, roles):
    """Drop the (cluster-wide) roles that exist, with what they own or were
    granted in cur's database: a test's, or an interrupted run's."""
    for role in roles:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
        if cur.fetchone():
            cur.execute(f"DROP OWNED BY {role}")
            cur.execute(f"DROP ROLE {role}")


def closing_factory(construct):
    """A fixture body: yields a factory of construct(...) objects and closes
    every one made when the test ends."""
    made = []

    def make(*args, **kwargs):
        made.append(construct(*args, **kwargs))
        return made[-1]

    yield make
    for obj in made:
        obj.close()


@pytest.fixture
def session(database):
    """Factory of sessions: session(servers=None, autocommit=True)."""
    yield from closing_factory(lambda servers=None, autocommit=True:
                               Session(database, servers, autocommit))


@pytest.fixture
def rows(session):
    """A session on an empty table test_rows (k text): what the
    transactions of a commit-safety test wrote, and kept."""
    s = session()
    s.execute("CREATE TABLE IF NOT EXISTS test_rows (k text)")
    s.execute("TRUNCATE test_rows")
    return s


@pytest.fixture
def redis_server():
    """Factory of private redis-server processes: redis_server(port=None,
    args=()), args going to redis-server."""
    yield from closing_factory(RedisProcess)


@pytest.fixture
def proxy():
    """Factory of proxies in front of a Redis server (proxy.RedisProxy):
    proxy(target_port, delay=0.0, reply_delay=0.0, forward=None)."""
    from proxy import RedisProxy
    yield from closing_factory(RedisProxy)


@pytest.fixture
def main_redis():
    """A client of the Redis that redlock.servers names by default."""
    return redis.Redis(host="127.0.0.1", port=MAIN_REDIS_PORT)


@pytest.fixture
def admin(database):
    """A superuser session on the test database, for checks and signals."""
    s = Session(database)
    yield s
    s.close()


def backend_wait_event(admin, pid):
    """The wait_event_type of a backend, fresh (not from a cached snapshot)."""
    admin.execute("SELECT pg_stat_clear_snapshot()")
    return admin.value("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,))


@pytest.fixture
def masters(redis_server):
    """masters(n) -> n fresh redis-server processes."""
    return lambda n: [redis_server() for _ in range(n)]


def servers(ms):
    """The redlock.servers value naming these masters."""
    return ", ".join(m.addr for m in ms)


@pytest.fixture
def absent_sync_standby(admin):
    """Commits wait for a synchronous standby that never connects: the
    committing backend stops after flushing its commit record and before the
    commit becomes visible, until its wait is cancelled."""
    admin.execute("CREATE TABLE IF NOT EXISTS redlock_syncrep_probe (i int)")
    admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'redlock_test_absent_standby'")
    admin.execute("SELECT pg_reload_conf()")
    # pg_reload_conf() returns before the checkpointer, which turns the
    # waiting on, has read the file: probe with a commit of our own (one
    # that writes) until one waits, then cancel it
    probe = psycopg2.connect(dbname=admin.conn.info.dbname)
    probe.autocommit = True
    pid = probe.cursor()
    pid.execute("SELECT pg_backend_pid()")
    pid = pid.fetchone()[0]

    def waits():
        t = threading.Thread(target=lambda: probe.cursor().execute(
            "INSERT INTO redlock_syncrep_probe VALUES (1)"))
        t.start()
        deadline = time.monotonic() + 1.0 * SLOW
        while t.is_alive() and time.monotonic() < deadline:
            admin.execute("SELECT pg_stat_clear_snapshot()")
            if admin.value("SELECT wait_event FROM pg_stat_activity WHERE pid = %s",
                           (pid,)) == "SyncRep":
                admin.execute("SELECT pg_cancel_backend(%s)", (pid,))
                t.join()
                return True
            time.sleep(0.01)
        t.join()
        return False

    wait_for(waits, timeout=30, what="commits to wait for the synchronous standby")
    probe.close()
    yield
    admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
    admin.execute("SELECT pg_reload_conf()")


def wait_for_syncrep(admin, pid):
    """Wait until backend pid waits for synchronous replication."""
    def waiting():
        admin.execute("SELECT pg_stat_clear_snapshot()")
        return admin.value("SELECT wait_event FROM pg_stat_activity WHERE pid = %s",
                           (pid,)) == "SyncRep"
    wait_for(waiting, what="the commit to wait for the synchronous standby")


def in_thread(fn, *args):
    """Run fn(*args) in a thread; returns (thread, outcome list) where the
    outcome is fn's result or the psycopg2 error it raised."""
    outcome = []

    def run():
        try:
            outcome.append(fn(*args))
        except psycopg2.Error as e:
            outcome.append(e)

    t = threading.Thread(target=run)
    t.start()
    return t, outcome


def cancel_while_waiting(admin, pid, fn, *args):
    """Run fn(*args) in a thread until backend pid waits for Redis, cancel
    it; returns (fn's outcome, seconds from the cancel to the end)."""
    t, outcome = in_thread(fn, *args)
    wait_for(lambda: backend_wait_event(admin, pid) == "Extension",
             what="the backend to wait for Redis")
    cancelled = time.monotonic()
    admin.execute("SELECT pg_cancel_backend(%s)", (pid,))
    t.join(30)
    return outcome[0], time.monotonic() - cancelled


PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")


@contextlib.contextmanager
def throwaway_cluster(prefix, conf="", env=None, extension=False):
    """A second PostgreSQL cluster of a test's own (socket only), with
    redlock.servers naming the main Redis, more postgresql.conf lines in
    conf, and the postmaster started with env (LD_PRELOAD, say); yields
    psycopg2 connection arguments (superuser postgres).  With extension,
    CREATE EXTENSION redlock has run in database postgres."""
    work = tempfile.mkdtemp(prefix=prefix)
    shutil.chown(work, "postgres")
    os.chmod(work, 0o755)
    port = free_port()
    data = os.path.join(work, "pg")
    run = ["runuser", "-u", "postgres", "--"]
    subprocess.run(run + [f"{PG_BIN}/initdb", "-D", data, "-U", "postgres", "-A", "trust",
                          "--no-sync"], check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(data, "postgresql.conf"), "a") as f:
        f.write(f"listen_addresses = ''\nport = {port}\nunix_socket_directories = '{work}'\n"
                f"fsync = off\nredlock.servers = '127.0.0.1:{MAIN_REDIS_PORT}'\n{conf}")
    subprocess.run(run + [f"{PG_BIN}/pg_ctl", "-D", data, "-l", os.path.join(work, "log"),
                          "-w", "start"], check=True, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, **(env or {})))
    try:
        args = {"host": work, "port": port, "dbname": "postgres", "user": "postgres"}
        if extension:
            c = psycopg2.connect(**args)
            c.autocommit = True
            with c.cursor() as cur:
                cur.execute("CREATE EXTENSION redlock")
            c.close()
        yield args
    finally:
        subprocess.run(run + [f"{PG_BIN}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
                       stdout=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def preloaded_cluster():
    """A second throwaway cluster with redlock in shared_preload_libraries;
    yields psycopg2 connection arguments (superuser postgres)."""
    with throwaway_cluster("redlock-preload-",
                           "shared_preload_libraries = 'redlock'\n") as args:
        yield args


def counter_race(session, sides, rounds=8, pause=0.02):
    """A lost-update race on one counter.  Each side(s, bump), a callable,
    runs in its own thread with its own autocommit session s, `rounds`
    times, all starting together; each call must call bump(s) once: read
    the counter, pause, write it back plus one (taking and releasing
    whatever lock the side stands for around it, BEGIN and COMMIT
    included).  Returns the final count: len(sides) * rounds unless an
    update was lost."""
    setup = session()
    setup.execute("CREATE TABLE IF NOT EXISTS race_counter (id int PRIMARY KEY, n int)")
    setup.execute("INSERT INTO race_counter VALUES (1, 0) ON CONFLICT (id) DO UPDATE SET n = 0")
    start = threading.Barrier(len(sides))
    errors = []

    def bump(s):
        n = s.value("SELECT n FROM race_counter WHERE id = 1")
        time.sleep(pause)
        s.execute("UPDATE race_counter SET n = %s WHERE id = 1", (n + 1,))

    def run(side):
        try:
            s = session()
            start.wait()
            for _ in range(rounds):
                side(s, bump)
        except Exception as e:          # reported below, not lost in a thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(side,)) for side in sides]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return setup.value("SELECT n FROM race_counter WHERE id = 1")


def redlock_side(key, fmt="string"):
    """A counter_race side: an SQL transaction holding key in format fmt."""
    def side(s, bump):
        s.execute("SET redlock.lock_format = %s", (fmt,))
        s.execute("BEGIN")
        s.value("SELECT redlock_acquire(%s, 10000, 60000)", (key,))
        bump(s)
        s.execute("COMMIT")
    return side


def unlocked_side(s, bump):
    """The control: the same work under no lock."""
    bump(s)
