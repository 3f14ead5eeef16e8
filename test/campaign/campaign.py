"""The fault campaign: many clients doing real work under locks while a
nemesis injects faults at random, and a checker that reads the final state
for anything lost.

    bench/campaign.sh [--seconds N] [--seed S] [--clients N] [--masters N]
                      [--keys K] [--ttl MS] [--modes redlock,none,client]

(or this file directly, against servers scripts/lib.sh started).  Each mode
runs the same seeded fault schedule:

  redlock  SELECT redlock_acquire(...) inside the transaction: released
           after COMMIT, the commit checked against the lease
  none     no lock at all (the control that shows the race)
  client   the usual application pattern: a Redlock taken by the client
           (SET NX PX on a majority, as node-redlock does; one master is
           redis-py's Lock), released before COMMIT

Workload (three shapes, each transaction picks one):
  counter  read a value, work, write value + 1, record (key, token, value)
  stock    sell one unit of an item if any is left (20 units per item and
           10-second epoch), recording the sale
  job      run a job once per 2-second period, recording the run

Nemesis (one fault at a time, always healed; same schedule in every mode):
  freeze_short / freeze_long   SIGSTOP a master for TTL/3, or 1.5 TTL
  restart_persistent           kill -9 a master, restart it with its
                               append-only file (appendfsync always)
  restart_amnesia              kill -9, restart with its data gone
  partition                    nothing passes between PostgreSQL and one
                               master (a proxy holds the bytes) for up to 2 TTL
  delay                        20-100 ms more per request to one master
  clock_jump                   one master's wall clock steps 2.5 TTL ahead,
                               and back 1 TTL later (clock_shim.c, preloaded
                               into every master: keys expire early, TIME
                               jumps; libfaketime cannot run Debian's
                               redis-server, see there)
  pause_backend                SIGSTOP a client's backend for 1.5 TTL
  cancel_backend               pg_cancel_backend of a client's backend
  terminate_backend            pg_terminate_backend (the client reconnects)
Sentinel and Cluster failovers join the list once those deployments are
supported.

Checker, from the database and Redis at the end:
  lost updates     per counter: committed increments - (final - initial)
  oversold         per item: sales beyond its stock
  duplicate jobs   per job and period: runs beyond one
  token order      per counter key, in commit order (the value each holder
                   wrote): each token greater than the one before
  keys left        lock, queue and deadline keys still in Redis a TTL after
                   the end (fencing counters stay by design)
  liveness         the longest transaction against its bound, and after
                   each heal, how long until throughput is back (half
                   the run's median commits per second)
"""

import argparse
import bisect
import collections
import functools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import psycopg2
import psycopg2.errorcodes
import redis

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from proxy import RedisProxy  # noqa: E402

STOCK_UNITS = 20
STOCK_EPOCH_S = 10.0
JOB_PERIOD_S = 2.0
PREFIX = "campaign:"

FAULTS = ["freeze_short", "freeze_long", "restart_persistent", "restart_amnesia",
          "partition", "delay", "clock_jump", "pause_backend", "cancel_backend",
          "terminate_backend"]


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Masters
# ---------------------------------------------------------------------------

CLOCK_AHEAD = signal.SIGRTMIN + 5      # clock_shim.c: step the clock ahead
CLOCK_BACK = signal.SIGRTMIN + 6       # and back


@functools.cache
def clock_shim():
    """Build clock_shim.c (once per process) and return the library's path."""
    out = os.path.join(tempfile.mkdtemp(prefix="redlock-clock-"), "clock_shim.so")
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", out,
                    os.path.join(os.path.dirname(os.path.abspath(__file__)), "clock_shim.c")],
                   check=True)
    os.chmod(os.path.dirname(out), 0o755)
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Master:
    """A redis-server of the campaign's own, behind a proxy (partitions,
    delays), with an append-only file it may keep or lose across a crash,
    and a wall clock that can be stepped ahead (clock_shim.c)."""

    def __init__(self, clock_step_ms):
        self.dir = tempfile.mkdtemp(prefix="redlock-campaign-")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.proc = None
        self.clock_step_ms = clock_step_ms
        self.clock_offset_ms = 0
        self.start()
        self.proxy = RedisProxy(self.port)

    @property
    def addr(self):
        """What PostgreSQL connects to: the proxy."""
        return self.proxy.addr

    def jump_clock(self, ahead):
        """Step the server's wall clock ahead by clock_step_ms, as `date -s`
        would (keys expire early, TIME jumps), or back again, as NTP then
        does (keys set meanwhile live that much longer)."""
        self.proc.send_signal(CLOCK_AHEAD if ahead else CLOCK_BACK)
        self.clock_offset_ms += self.clock_step_ms if ahead else -self.clock_step_ms

    def start(self):
        # a restarted server finds the host's clock where it was
        env = dict(os.environ, LD_PRELOAD=clock_shim(),
                   REDLOCK_CLOCK_STEP_MS=str(self.clock_step_ms),
                   REDLOCK_CLOCK_OFFSET_MS=str(self.clock_offset_ms))
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
             "--save", "", "--appendonly", "yes", "--appendfsync", "always",
             "--dir", self.dir, "--logfile", os.path.join(self.dir, "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client(socket_timeout=0.2).ping():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis on {self.port} did not start")
            time.sleep(0.02)

    def client(self, **kw):
        """Direct, not through the proxy."""
        return redis.Redis(host="127.0.0.1", port=self.port, **kw)

    def freeze(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def crash(self, keep_data):
        """kill -9; the append-only file (fsynced at every write) survives
        unless keep_data is false."""
        self.resume()
        self.proc.kill()
        self.proc.wait()
        if not keep_data:
            for name in os.listdir(self.dir):
                if name.startswith("appendonly") or name.endswith(".rdb"):
                    path = os.path.join(self.dir, name)
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        self.start()

    def flush(self):
        self.client().flushall()

    def close(self):
        self.proxy.close()
        if self.proc and self.proc.poll() is None:
            self.resume()
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------
# Database
# ---------------------------------------------------------------------------

SCHEMA = """
DROP TABLE IF EXISTS counters, history, stock, sales, job_runs, holds;
CREATE TABLE counters (key text PRIMARY KEY, value bigint NOT NULL);
CREATE TABLE history (id bigserial, key text, token bigint, value bigint, client int,
                      xid xid8 DEFAULT pg_current_xact_id());
-- every shape's committed write, with what its lock looked like then: the
-- forensics of a violation (value: the counter's new value, the units
-- left, the job's period; two rows with one key and value are a lost
-- update, an oversale or a job run twice)
CREATE TABLE holds (key text, value bigint, token bigint, client int,
                    pid int DEFAULT pg_backend_pid(), locked_at timestamptz,
                    valid_until timestamptz, granted_by text[],
                    written_at timestamptz DEFAULT clock_timestamp());
CREATE TABLE stock (key text PRIMARY KEY, units int NOT NULL, initial int NOT NULL);
CREATE TABLE sales (key text, client int, token bigint);
CREATE TABLE job_runs (job text, period bigint, client int, token bigint);
"""


def connect(dbname, servers, ttl_ms):
    conn = psycopg2.connect(dbname=dbname)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SET redlock.servers = %s", (servers,))
        cur.execute("SET redlock.default_ttl = %s", (ttl_ms,))
        cur.execute("SET redlock.command_timeout = 500")
        # a margin under the TTL: commits soon after the acquire skip the
        # re-arm, late ones re-arm (with the default 2 s both would re-arm)
        cur.execute("SET redlock.commit_margin = %s", (ttl_ms // 4,))
        cur.execute("SET redlock.connect_timeout = 500")
    conn.autocommit = False
    return conn


# ---------------------------------------------------------------------------
# The client-side lock of the "client" control
# ---------------------------------------------------------------------------

RELEASE = """if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1]) else return 0 end"""


class ClientLock:
    """Redlock as application libraries do it: SET NX PX on every master,
    a majority and time left, released by compare-and-delete."""

    def __init__(self, masters, ttl_ms):
        self.clients = [redis.Redis(host="127.0.0.1", port=m.proxy.port, socket_timeout=0.5,
                                    socket_connect_timeout=0.5) for m in masters]
        self.ttl_ms = ttl_ms

    def acquire(self, key, wait_s, rng):
        token = "%016x" % rng.getrandbits(64)
        deadline = time.monotonic() + wait_s
        while True:
            start = time.monotonic()
            ok = 0
            for c in self.clients:
                try:
                    ok += bool(c.set(key, token, nx=True, px=self.ttl_ms))
                except redis.RedisError:
                    pass
            elapsed_ms = (time.monotonic() - start) * 1000
            if ok > len(self.clients) // 2 and elapsed_ms < self.ttl_ms * 0.99 - 2:
                return token
            self.release(key, token)
            if time.monotonic() > deadline:
                return None
            time.sleep(rng.uniform(0.05, 0.25))     # node-redlock: 200 ms +- jitter

    def release(self, key, token):
        for c in self.clients:
            try:
                c.eval(RELEASE, 1, key, token)
            except redis.RedisError:
                pass


# ---------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------

class Outcomes:
    """What the clients saw, shared between their threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = collections.Counter()
        self.samples = {}
        self.commits = []           # monotonic times of commits
        # (key, value written) -> wall times at which COMMIT returned
        self.committed_values = collections.defaultdict(list)
        self.longest = 0.0

    def add(self, kind, duration, sample=None):
        with self.lock:
            self.counts[kind] += 1
            if sample and kind not in self.samples:
                self.samples[kind] = sample
            self.longest = max(self.longest, duration)
            if kind == "committed":
                self.commits.append(time.monotonic())


def classify(e):
    """The kind of a failed transaction.  Anything not expected of a
    fault is "other", which the short form requires to be zero: a Redis
    error reply (a script error, say) reaches SQL as 08000 too, so it is
    told apart by its text."""
    code = getattr(e, "pgcode", None)
    text = str(e)
    if code == "40001":
        return "refused"
    if code == "55P03":
        return "gave_up"
    if code and code.startswith("08"):
        if "ERR" in text or "script" in text or "LOADING" in text or "MISCONF" in text:
            return "other"
        return "unreachable"
    if code in ("57014", "57P01"):
        return "interrupted"
    if code is None and isinstance(e, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        return "interrupted"        # the connection was lost (terminated)
    return "other"


class Client(threading.Thread):
    def __init__(self, n, campaign, seed):
        super().__init__(daemon=True)
        self.n = n
        self.c = campaign
        self.rng = random.Random(seed)
        self.pid = None
        self.conn = None

    def reconnect(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg2.Error:
                pass
        self.conn = None
        while not self.c.stop.is_set():
            try:
                self.conn = connect(self.c.dbname, self.c.servers, self.c.ttl_ms)
                with self.conn.cursor() as cur:
                    cur.execute("SELECT pg_backend_pid()")
                    self.pid = cur.fetchone()[0]
                self.conn.commit()
                return
            except psycopg2.Error:
                time.sleep(0.1)

    def run(self):
        self.reconnect()
        while not self.c.stop.is_set():
            shape = self.rng.choices(("counter", "stock", "job"), (6, 2, 2))[0]
            started = time.monotonic()
            try:
                getattr(self, shape)()
                self.c.out.add("committed", time.monotonic() - started)
            except (psycopg2.Error, _Gave_up) as e:
                kind = "gave_up" if isinstance(e, _Gave_up) else classify(e)
                self.c.out.add(kind, time.monotonic() - started,
                               f"{getattr(e, 'pgcode', '')} {str(e).strip()[:200]}")
                try:
                    self.conn.rollback()
                except psycopg2.Error:
                    pass
                if self.conn.closed or kind == "interrupted":
                    self.reconnect()
            except Exception as e:          # a bug of the campaign, or worse
                self.c.out.add("crashed", time.monotonic() - started, repr(e)[:200])
                return

    # -- the lock, per mode --

    def lock(self, cur, name):
        """Take the lock on name (mode redlock: inside the transaction);
        returns (token, release-before-commit function or None)."""
        mode = self.c.mode
        if mode == "redlock":
            cur.execute("SELECT redlock_acquire(%s, NULL, %s)", (PREFIX + name, self.c.wait_ms))
            return cur.fetchone()[0], None
        if mode == "client":
            token = self.c.client_lock.acquire(PREFIX + name, self.c.wait_ms / 1000, self.rng)
            if token is None:
                raise _Gave_up()
            return 0, lambda: self.c.client_lock.release(PREFIX + name, token)
        return 0, None

    def work(self):
        time.sleep(self.rng.uniform(0, self.c.work_ms / 1000))

    def record(self, cur, key, value, token):
        """The write and, with redlock, what the lock looked like then."""
        cur.execute("""INSERT INTO holds (key, value, token, client, locked_at, valid_until,
                                          granted_by)
                       SELECT %s, %s, %s, %s, l.acquired_at, l.valid_until, l.granted_by
                       FROM (SELECT) AS one LEFT JOIN redlock_locks AS l ON l.key = %s""",
                    (key, value, token, self.n, PREFIX + key))

    def finish(self, release, key, value):
        if release:
            release()           # the usual mistake: before COMMIT
        self.conn.commit()
        if value is not None:
            with self.c.out.lock:
                self.c.out.committed_values[(key, value)].append(time.time())

    # -- the shapes --

    def counter(self):
        key = "ctr:%d" % self.rng.randrange(self.c.keys)
        with self.conn.cursor() as cur:
            token, release = self.lock(cur, key)
            cur.execute("SELECT value FROM counters WHERE key = %s", (key,))
            value = cur.fetchone()[0]
            self.work()
            cur.execute("UPDATE counters SET value = %s WHERE key = %s", (value + 1, key))
            cur.execute("INSERT INTO history (key, token, value, client) VALUES (%s, %s, %s, %s)",
                        (key, token, value + 1, self.n))
            self.record(cur, key, value + 1, token)
        self.finish(release, key, value + 1)

    def stock(self):
        item = "stk:%d:%d" % (self.rng.randrange(max(1, self.c.keys // 4)),
                              int((time.monotonic() - self.c.t0) // STOCK_EPOCH_S))
        with self.conn.cursor() as cur:
            cur.execute("INSERT INTO stock VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                        (item, STOCK_UNITS, STOCK_UNITS))
            self.conn.commit()
            token, release = self.lock(cur, item)
            cur.execute("SELECT units FROM stock WHERE key = %s", (item,))
            units = cur.fetchone()[0]
            if units > 0:
                self.work()
                cur.execute("UPDATE stock SET units = %s WHERE key = %s", (units - 1, item))
                cur.execute("INSERT INTO sales VALUES (%s, %s, %s)", (item, self.n, token))
                self.record(cur, item, units - 1, token)
        self.finish(release, item, units - 1 if units > 0 else None)

    def job(self):
        job = "job:%d" % self.rng.randrange(max(1, self.c.keys // 4))
        period = int((time.monotonic() - self.c.t0) // JOB_PERIOD_S)
        with self.conn.cursor() as cur:
            token, release = self.lock(cur, job)
            cur.execute("SELECT count(*) FROM job_runs WHERE job = %s AND period = %s",
                        (job, period))
            ran = cur.fetchone()[0] == 0
            if ran:
                self.work()
                cur.execute("INSERT INTO job_runs VALUES (%s, %s, %s, %s)",
                            (job, period, self.n, token))
                self.record(cur, job, period, token)
        self.finish(release, job, period if ran else None)


class _Gave_up(Exception):
    """The client-side lock was not had within the wait."""


# ---------------------------------------------------------------------------
# Nemesis
# ---------------------------------------------------------------------------

def schedule(seed, seconds, faults, ttl_ms, nmasters):
    """The faults of a run: (start offset s, kind, duration s, target)."""
    rng = random.Random(seed)
    ttl = ttl_ms / 1000
    plan = []
    cycle = []
    t = rng.uniform(0.5, 1.5)
    while t < seconds - 1:
        # every kind once per cycle, in a random order: even short runs
        # see each of them
        if not cycle:
            cycle = rng.sample(faults, len(faults))
        kind = cycle.pop()
        duration = {
            "freeze_short": ttl / 3, "freeze_long": 1.5 * ttl,
            "partition": rng.uniform(0.25, 2) * ttl, "delay": rng.uniform(1, 3),
            "pause_backend": 1.5 * ttl, "clock_jump": ttl,
        }.get(kind, 0.0)
        plan.append((t, kind, duration, rng.randrange(max(nmasters, 64))))
        t += duration + rng.expovariate(1 / max(0.5, ttl / 2))
    return plan


class Nemesis(threading.Thread):
    def __init__(self, campaign, plan):
        super().__init__(daemon=True)
        self.c = campaign
        self.plan = plan
        self.injected = collections.Counter()
        self.heals = []             # monotonic times of heals
        self.windows = []           # (wall start, wall end, kind, what it hit)
        self.paused = set()
        self.admin = psycopg2.connect(dbname=campaign.dbname)
        self.admin.autocommit = True

    def sleep_until(self, t):
        while not self.c.stop.is_set() and time.monotonic() < t:
            time.sleep(min(0.01, max(0.0, t - time.monotonic())))

    def run(self):
        for offset, kind, duration, target in self.plan:
            self.sleep_until(self.c.t0 + offset)
            if self.c.stop.is_set():
                return
            for attempt in range(3):
                try:
                    began = time.time()
                    hit = self.inject(kind, duration, target + attempt)
                    self.windows.append((began, time.time(), kind, hit))
                    break
                except Exception as e:      # a pid gone meanwhile, say
                    log(f"nemesis: {kind} not applied: {e}")
            else:
                continue
            self.injected[kind] += 1
            self.heals.append(time.monotonic())

    def backend(self, target, prefer):
        """A live backend of the clients (they reconnect after a
        terminate: their pids change), of those in the state the fault
        wants if any is (prefer: an SQL condition on pg_stat_activity)."""
        with self.admin.cursor() as cur:
            cur.execute(f"""SELECT pid, {prefer} FROM pg_stat_activity
                           WHERE datname = current_database() AND pid <> pg_backend_pid()
                             AND backend_type = 'client backend' ORDER BY pid""")
            rows = cur.fetchall()
        pids = [pid for pid, wanted in rows if wanted] or [pid for pid, _ in rows]
        return pids[target % len(pids)] if pids else None

    def inject(self, kind, duration, target):
        """Inject one fault, heal it; returns what it hit."""
        m = self.c.masters[target % len(self.c.masters)]
        end = time.monotonic() + duration
        if kind in ("freeze_short", "freeze_long"):
            m.freeze()
            try:
                self.sleep_until(end)
            finally:
                m.resume()
        elif kind in ("restart_persistent", "restart_amnesia"):
            m.crash(keep_data=kind == "restart_persistent")
        elif kind == "partition":
            m.proxy.partitioned.set()
            try:
                self.sleep_until(end)
            finally:
                m.proxy.partitioned.clear()
        elif kind == "delay":
            m.proxy.delay = self.c.rng.uniform(0.02, 0.1)
            try:
                self.sleep_until(end)
            finally:
                m.proxy.delay = 0.0
        elif kind == "clock_jump":
            m.jump_clock(ahead=True)
            try:
                self.sleep_until(end)
            finally:
                m.jump_clock(ahead=False)
        elif kind == "pause_backend":
            # a holder at work: idle in its transaction, between statements
            pid = self.backend(target, "state = 'idle in transaction'")
            if pid is None:
                raise RuntimeError("no backend to pause")
            os.kill(pid, signal.SIGSTOP)
            self.paused.add(pid)
            try:
                self.sleep_until(end)
            finally:
                os.kill(pid, signal.SIGCONT)
                self.paused.discard(pid)
        elif kind in ("cancel_backend", "terminate_backend"):
            # mid-wait (the Extension wait event) or mid-commit; a cancel of
            # an idle backend would do nothing
            pid = self.backend(target, "state = 'active' AND "
                                       "(wait_event_type = 'Extension' OR query = 'COMMIT')")
            fn = "pg_cancel_backend" if kind == "cancel_backend" else "pg_terminate_backend"
            with self.admin.cursor() as cur:
                cur.execute(f"SELECT {fn}(%s)", (pid,))
                if not cur.fetchone()[0]:
                    raise RuntimeError(f"{fn} found no backend")
        else:
            raise ValueError(kind)
        if kind.endswith("_backend"):
            return f"backend {pid}"
        return f"master {target % len(self.c.masters)} ({m.addr})"

    def heal_all(self):
        for m in self.c.masters:
            m.resume()
            m.proxy.partitioned.clear()
            m.proxy.delay = 0.0
            while m.clock_offset_ms:
                m.jump_clock(ahead=m.clock_offset_ms < 0)
        for pid in list(self.paused):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


# ---------------------------------------------------------------------------
# Checker
# ---------------------------------------------------------------------------

def lock_keys(masters):
    """Lock, queue and deadline keys in Redis (fencing counters stay by
    design)."""
    n = 0
    for m in masters:
        for k in m.client().scan_iter(match=PREFIX + "*", count=1000):
            n += not k.endswith(b"\x00fence")
    return n


def check(dbname, masters, mode, ttl_ms):
    """Violations found in the final state, by kind."""
    v = collections.Counter()
    conn = psycopg2.connect(dbname=dbname)
    cur = conn.cursor()
    cur.execute("""SELECT c.key, c.value, count(h.id) FROM counters c
                   LEFT JOIN history h USING (key) GROUP BY c.key, c.value""")
    for key, value, committed in cur.fetchall():
        v["lost_updates"] += committed - value
    cur.execute("""SELECT s.key, s.initial, count(x.key), s.initial - s.units FROM stock s
                   LEFT JOIN sales x USING (key) GROUP BY s.key, s.initial, s.units""")
    for key, initial, sold, decremented in cur.fetchall():
        v["oversold"] += max(0, sold - initial)
        v["lost_updates"] += sold - decremented
    cur.execute("SELECT count(*) - count(DISTINCT (job, period)) FROM job_runs")
    v["duplicate_jobs"] += cur.fetchone()[0]
    if mode == "redlock":
        # in commit order: each holder wrote the value after its predecessor's
        cur.execute("""SELECT count(*) FROM (
                         SELECT token, lag(token) OVER (PARTITION BY key ORDER BY value, id) AS prev
                         FROM history) t WHERE token <= prev""")
        v["token_order"] += cur.fetchone()[0]
    conn.close()
    # what was not released expires: a lock by its TTL (re-armed at most a
    # command timeout before), a queue and its promise 6 s after its last
    # entry was refreshed
    deadline = time.monotonic() + ttl_ms / 1000 + 0.5 + 6 + 2
    while lock_keys(masters) and time.monotonic() < deadline:
        time.sleep(0.2)
    v["keys_left"] += lock_keys(masters)
    return v


def forensics(dbname, t0, windows, committed, ttl_ms, nmasters, tokens=True):
    """For each violation the database shows (two writes of one key and
    value: a lost update, an oversale, a job run twice; a counter token
    not above its predecessor's), the writes around it, what their locks
    looked like, the faults that overlapped them, and which named limit
    explains it (explain()).  Times are seconds since the start of the
    run.  Returns (report lines, cases, cases no limit explains)."""
    conn = psycopg2.connect(dbname=dbname)
    cur = conn.cursor()
    cur.execute("""SELECT key, value, 'two writes of one value' FROM holds
                   GROUP BY key, value HAVING count(*) > 1
                   UNION ALL
                   SELECT key, value, 'token not above the previous' FROM (
                     SELECT key, value, token,
                            lag(token) OVER (PARTITION BY key ORDER BY value, id) AS prev
                     FROM history) t WHERE token <= prev AND %s
                   ORDER BY 1, 2""", (tokens,))
    cases = cur.fetchall()
    lines = []
    unexplained = 0

    def rel(x):
        return "-" if x is None else f"{float(x) - t0:.3f}"
    for key, value, what in cases:
        cur.execute("""SELECT value, token, client, pid,
                              extract(epoch FROM locked_at), extract(epoch FROM valid_until),
                              granted_by, extract(epoch FROM written_at)
                       FROM holds WHERE key = %s AND value BETWEEN %s - 1 AND %s + 1
                       ORDER BY written_at""", (key, value, value))
        rows = cur.fetchall()
        lines.append(f"  {key} = {value}: {what}")
        lo, hi = float("inf"), float("-inf")
        for v, token, client, pid, locked, valid, granted, written in rows:
            commits = committed.get((key, v), [])
            lines.append(f"    value {v} token {token} client {client} pid {pid} "
                         f"locked {rel(locked)} valid until {rel(valid)} written {rel(written)} "
                         f"committed {','.join(rel(c) for c in commits) or '?'} "
                         f"granted by {','.join(granted or [])}")
            lo = min(lo, float(locked if locked is not None else written))
            hi = max([hi, float(written)] + commits)
        near = [(b, e, kind, hit) for b, e, kind, hit in windows
                if e >= lo - ttl_ms / 1000 - 1 and b <= hi + 0.5]
        for began, ended, kind, hit in near:
            lines.append(f"    fault {kind} on {hit}: {began - t0:.3f} to {ended - t0:.3f}")
        why = explain(what, rows, near, nmasters)
        lines.append(f"    -> {why or 'UNEXPLAINED'}")
        unexplained += why is None
    conn.close()
    return lines, len(cases), unexplained


# the master faults after which a master's counters lag or are gone
BEHIND = ("restart_persistent", "restart_amnesia", "freeze_long", "partition")


def explain(what, rows, near, nmasters):
    """Which of the limits the README names explains a violation, if one
    does: a clock stepped ahead on a master of a lock granted by a bare
    majority (two writes of one value), or a majority of masters behind
    the last fencing token: one restarted without its data, another
    missed acquisitions (a token not above the previous)."""
    def master(hit):
        return hit[hit.index("(") + 1:-1] if "(" in hit else None
    if what == "two writes of one value":
        for _, _, kind, hit in near:
            if kind != "clock_jump":
                continue
            for row in rows:
                granted = row[6] or []
                if master(hit) in granted and len(granted) == nmasters // 2 + 1:
                    return "a clock stepped ahead on a master of a bare majority (a limit)"
        return None
    amnesia = {master(hit) for _, _, kind, hit in near if kind == "restart_amnesia"}
    behind = {master(hit) for _, _, kind, hit in near if kind in BEHIND}
    if amnesia and len(behind | amnesia) >= 2:
        return "a majority behind the last token: an empty restart and a lagging master (a limit)"
    return None


# ---------------------------------------------------------------------------
# A run
# ---------------------------------------------------------------------------

class Campaign:
    def __init__(self, dbname, masters, mode, seed, seconds, clients, keys, ttl_ms,
                 wait_ms=5000, work_ms=20, faults=FAULTS):
        self.dbname = dbname
        self.masters = masters
        self.servers = ", ".join(m.addr for m in masters)
        self.mode = mode
        self.seed = seed
        self.seconds = seconds
        self.nclients = clients
        self.keys = keys
        self.ttl_ms = ttl_ms
        self.wait_ms = wait_ms
        self.work_ms = work_ms
        self.faults = faults
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.out = Outcomes()
        self.client_lock = ClientLock(masters, ttl_ms) if mode == "client" else None

    def run(self):
        for m in self.masters:
            m.flush()
        conn = psycopg2.connect(dbname=self.dbname)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(SCHEMA)
            cur.execute("INSERT INTO counters SELECT 'ctr:' || i, 0 FROM generate_series(0, %s) i",
                        (self.keys - 1,))
        conn.close()

        plan = schedule(self.seed, self.seconds, self.faults, self.ttl_ms, len(self.masters))
        self.t0 = time.monotonic()
        self.t0_wall = time.time()
        self.clients = []
        nemesis = Nemesis(self, plan)
        bound = self.wait_ms / 1000 + 2 * self.ttl_ms / 1000 + 10
        try:
            self.clients = [Client(i, self, self.seed * 1000 + i) for i in range(self.nclients)]
            for c in self.clients:
                c.start()
            nemesis.start()
            time.sleep(self.seconds)
            # the whole plan, even when faults took longer than planned
            nemesis.join(60)
        finally:
            self.stop.set()
            if nemesis.ident is not None:
                nemesis.join(60)
            nemesis.heal_all()
            for c in self.clients:
                c.join(bound)
            stuck = [c for c in self.clients if c.is_alive()]
            # a stuck client's connection is busy: end its backend, not its
            # connection object (closing that would wait for the query)
            with nemesis.admin.cursor() as cur:
                for c in stuck:
                    cur.execute("SELECT pg_terminate_backend(%s)", (c.pid,))
            for c in self.clients:
                c.join(10)
                if not c.is_alive() and c.conn is not None:
                    c.conn.close()
            nemesis.admin.close()
        violations = check(self.dbname, self.masters, self.mode, self.ttl_ms)
        violations["stuck_clients"] += len(stuck)
        if self.out.longest > bound:
            violations["slow_transactions"] += 1
        recovery = recovery_times(nemesis.heals, self.out.commits, self.t0,
                                  self.t0 + self.seconds)
        # without a lock, violations are the rule: nothing to explain
        details, cases, unexplained = forensics(
            self.dbname, self.t0_wall, nemesis.windows, self.out.committed_values,
            self.ttl_ms, len(self.masters), tokens=self.mode == "redlock") if self.mode != "none" else ([], 0, 0)
        return {
            "mode": self.mode, "outcomes": dict(self.out.counts),
            "samples": self.out.samples, "violations": dict(violations),
            "faults": dict(nemesis.injected), "longest_tx_s": self.out.longest,
            "bound_s": bound, "max_recovery_s": max(recovery, default=0.0),
            "median_recovery_s": sorted(recovery)[len(recovery) // 2] if recovery else 0.0,
            "forensics": details, "cases": cases, "unexplained": unexplained,
        }


def recovery_times(heals, commits, start, end):
    """For each heal with at least 15 s of run after it: seconds until
    throughput is back, i.e. until the first one-second window (sliding by
    0.1 s) with at least half the run's median commits per second; until
    the end of the run when it never is.  0 when the run had
    no throughput to come back to."""
    commits = sorted(commits)
    per_second = collections.Counter(int(c - start) for c in commits)
    rates = sorted(per_second.get(i, 0) for i in range(int(end - start)))
    if not rates or rates[len(rates) // 2] == 0:
        return []
    want = rates[len(rates) // 2] / 2
    out = []
    for h in heals:
        if end - h < 15:       # a heal that never recovers shows 14 s or more
            continue
        t = h
        while t + 1 <= end:
            lo = bisect.bisect_left(commits, t)
            hi = bisect.bisect_left(commits, t + 1)
            if hi - lo >= want:
                break
            t += 0.1
        out.append(t - h)
    return out


def report(config, results):
    lines = [f"campaign: seed {config['seed']}, {config['seconds']} s with redlock, "
             f"{config['control_seconds']} s per control, "
             f"{config['clients']} clients, {config['masters']} master(s), "
             f"{config['keys']} counter keys, TTL {config['ttl']} ms"]
    faults = collections.Counter()
    for r in results:
        faults.update(r["faults"])
    lines.append("faults injected (all modes): " + ", ".join(
        f"{k} {v}" for k, v in sorted(faults.items())))
    cols = ["committed", "refused", "gave_up", "unreachable", "interrupted", "other",
            "crashed"]
    vcols = ["lost_updates", "oversold", "duplicate_jobs", "token_order", "keys_left",
             "stuck_clients", "slow_transactions"]
    lines.append("")
    lines.append("| mode | " + " | ".join(cols + vcols) + " | longest tx s | recovery s, median / max |")
    lines.append("|" + " --- |" * (len(cols) + len(vcols) + 3))
    for r in results:
        row = [r["mode"]] + [str(r["outcomes"].get(c, 0)) for c in cols] + \
            [str(r["violations"].get(c, 0)) if not (c == "token_order" and r["mode"] != "redlock")
             else "-" for c in vcols] + \
            [f"{r['longest_tx_s']:.1f}",
             f"{r['median_recovery_s']:.1f} / {r['max_recovery_s']:.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    for r in results:
        for kind, sample in sorted(r["samples"].items()):
            lines.append(f"  {r['mode']} {kind}, e.g.: {sample}")
    for r in results:
        if r["mode"] != "none" and r["forensics"]:
            lines.append(f"violations of mode {r['mode']} ({r['cases']} cases, "
                         f"{r['unexplained']} that no named limit explains), "
                         "with the faults around them:")
            lines.extend(r["forensics"][:200])
    return "\n".join(lines)


def campaign(dbname, seed=1, seconds=60, clients=16, masters=3, keys=4, ttl=2000,
             modes=("redlock", "none", "client"), faults=FAULTS, control_seconds=None):
    """Run the campaign in every mode, on fresh masters; returns (report
    text, results).  The controls (none, client) run control_seconds
    (default: as long as redlock): they show their violations early."""
    ms = []
    try:
        for _ in range(masters):
            ms.append(Master(clock_step_ms=int(2.5 * ttl)))
        results = []
        for mode in modes:
            secs = seconds if mode == "redlock" or not control_seconds else control_seconds
            log(f"campaign: mode {mode}, {secs} s")
            results.append(Campaign(dbname, ms, mode, seed, secs, clients, keys, ttl,
                                    faults=faults).run())
            log(f"campaign: mode {mode}: {results[-1]['outcomes']} {results[-1]['violations']}")
        config = dict(seed=seed, seconds=seconds, clients=clients, masters=masters,
                      keys=keys, ttl=ttl, control_seconds=control_seconds or seconds)
        return report(config, results), results
    finally:
        for m in ms:
            m.close()


def prepare_database(dbname):
    admin = psycopg2.connect(dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {dbname}")
    admin.close()
    conn = psycopg2.connect(dbname=dbname)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION redlock")
    conn.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--masters", type=int, default=3)
    p.add_argument("--keys", type=int, default=4)
    p.add_argument("--ttl", type=int, default=2000)
    p.add_argument("--modes", default="redlock,none,client")
    p.add_argument("--faults", default=",".join(FAULTS))
    p.add_argument("--control-seconds", type=float, default=None,
                   help="how long the controls run (default: --seconds)")
    a = p.parse_args()
    dbname = "redlock_campaign"
    prepare_database(dbname)
    text, _ = campaign(dbname, a.seed, a.seconds, a.clients, a.masters, a.keys, a.ttl,
                       a.modes.split(","), a.faults.split(","), a.control_seconds)
    print(text)


if __name__ == "__main__":
    main()
