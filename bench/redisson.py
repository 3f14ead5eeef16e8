"""Measurements of bench/redisson.sh:

    python3 redisson.py wake ROUNDS
        hand-off latency, release -> the blocked waiter holds the lock,
        in interleaved rounds: pg_advisory_xact_lock between two sessions
        (the reference), SQL (redlock.lock_format = redisson) -> a Redisson
        thread, a Redisson unlock -> SQL, and Redisson -> Redisson
    python3 redisson.py cycles N ROUNDS
        uncontended acquire + release, N per round, pg_advisory_lock and
        redlock in each format, interleaved rounds

Every time is taken in this process (time.perf_counter) from just before
the release is sent to just after the waiter's call returned.  Connects
with the PG* environment of scripts/lib.sh to database "bench" and to the
Redis at REDLOCK_REDIS_PORT.
"""

import os
import statistics
import sys
import threading
import time

import redis

import waiting as waiting_bench  # bench/waiting.py  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "test", "python"))
from rlock_client import RedissonClient, channel_name  # noqa: E402

PORT = int(os.environ.get("REDLOCK_REDIS_PORT", "16379"))


def session(fmt=None, autocommit=True):
    c, cur = waiting_bench.session()
    if fmt:
        cur.execute("SET redlock.lock_format = %s", (fmt,))
    c.autocommit = autocommit
    return c, cur


def wait_until(cond):
    end = time.monotonic() + 10
    while not cond():
        if time.monotonic() > end:
            raise SystemExit("the waiter never started waiting")
        time.sleep(0.0005)


def waiting(admin, pid, kind):
    admin.execute("SELECT pg_stat_clear_snapshot()")
    admin.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,))
    return admin.fetchone()[0] == kind


def handoff(wait, is_waiting, release, after=None):
    """Seconds from just before release() to just after wait() returned:
    wait() runs in a thread (then after(), in that thread, if given), and
    release() once is_waiting()."""
    got = []

    def run():
        wait()
        got.append(time.perf_counter())
        if after:
            after()
    t = threading.Thread(target=run)
    t.start()
    wait_until(is_waiting)
    time.sleep(0.002)
    start = time.perf_counter()
    release()
    t.join()
    return got[0] - start


class Wake:
    def __init__(self):
        self.r = redis.Redis(port=PORT)
        _, self.admin = session()
        self.hc, self.holder = session("redisson", autocommit=False)
        self.wc, self.waiter = session("redisson")
        self.waiter.execute("SELECT pg_backend_pid()")
        self.wpid = self.waiter.fetchone()[0]
        self.java = RedissonClient(PORT)

    def java_waiting(self, name):
        ch = channel_name(name).encode()
        return lambda: dict(self.r.pubsub_numsub(ch)).get(ch, 0) == 1

    def advisory(self):
        self.holder.execute("SELECT pg_advisory_xact_lock(4242)")
        gap = handoff(lambda: self.waiter.execute("SELECT pg_advisory_lock(4242)"),
                      lambda: waiting(self.admin, self.wpid, "Lock"), self.hc.commit)
        self.waiter.execute("SELECT pg_advisory_unlock(4242)")
        return gap

    def sql_to_redisson(self):
        self.holder.execute("SELECT redlock_acquire('bench:rs1')")
        lock = self.java.get_lock("bench:rs1")
        return handoff(lambda: lock.try_lock(wait_s=10), self.java_waiting("bench:rs1"),
                       self.hc.commit, after=lock.unlock)

    def redisson_to_sql(self):
        lock = self.java.get_lock("bench:rs2")
        lock.try_lock()
        gap = handoff(lambda: self.waiter.execute(
                          "SELECT redlock_acquire_session('bench:rs2', 30000, 10000)"),
                      lambda: waiting(self.admin, self.wpid, "Extension"), lock.unlock)
        self.waiter.execute("SELECT redlock_release('bench:rs2')")
        return gap

    def redisson_to_redisson(self):
        lock = self.java.get_lock("bench:rs3")
        lock.try_lock()
        return handoff(lambda: lock.try_lock(wait_s=10), self.java_waiting("bench:rs3"),
                       lock.unlock, after=lock.unlock)


def wake(rounds):
    w = Wake()
    kinds = [("pg_advisory_xact_lock, session -> session", w.advisory),
             ("redlock (redisson format) -> Redisson thread", w.sql_to_redisson),
             ("Redisson unlock -> redlock waiter", w.redisson_to_sql),
             ("Redisson -> Redisson thread (reference)", w.redisson_to_redisson)]
    gaps = {name: [] for name, _ in kinds}
    for _ in range(rounds):
        for name, fn in kinds:
            gaps[name].append(fn() * 1000)
    base = statistics.median(gaps[kinds[0][0]])
    print(f"  hand-off, release -> waiter holds it, {rounds} interleaved rounds:")
    for name, _ in kinds:
        g = sorted(gaps[name])
        m = statistics.median(g)
        print(f"    {name:47s} median {m:6.3f} ms  p90 {g[int(len(g) * 0.9)]:6.3f} ms  "
              f"max {g[-1]:6.3f} ms  ({m / base:.1f}x advisory)")


def cycles(n, rounds):
    _, cur = session()
    loops = {
        "pg_advisory_lock + unlock": "PERFORM pg_advisory_lock(4243); PERFORM pg_advisory_unlock(4243);",
        "redlock, string format": None,
        "redlock, redisson format": None,
    }
    body = ("PERFORM redlock_acquire_session('bench:cycle'); "
            "PERFORM redlock_release('bench:cycle');")
    rates = {k: [] for k in loops}
    for _ in range(rounds):
        for name, sql in loops.items():
            fmt = "redisson" if "redisson" in name else "string"
            cur.execute("SET redlock.lock_format = %s", (fmt,))
            start = time.perf_counter()
            cur.execute(f"DO $$ BEGIN FOR i IN 1..{n} LOOP {sql or body} END LOOP; END $$")
            rates[name].append(n / (time.perf_counter() - start))
    base = statistics.median(rates["pg_advisory_lock + unlock"])
    print(f"  uncontended acquire + release, {n} per round, median of {rounds} interleaved rounds:")
    for name in loops:
        m = statistics.median(rates[name])
        print(f"    {name:28s} {m:10.0f} per second  ({base / m:.1f}x the time of advisory)")


if __name__ == "__main__":
    if sys.argv[1] == "wake":
        wake(int(sys.argv[2]))
    elif sys.argv[1] == "cycles":
        cycles(int(sys.argv[2]), int(sys.argv[3]))
    else:
        raise SystemExit(__doc__)
