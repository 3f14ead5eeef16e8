"""What the lease keeper costs, for bench/keeper.sh:

    python3 keeper.py LOCKS SECONDS TTL_MS...

In a throwaway cluster with redlock preloaded and redlock.lease_keeper on
(test/python/conftest.py's, on the Redis of REDLOCK_REDIS_PORT, which must
serve nothing else), one session holds LOCKS session locks of TTL_MS each;
for SECONDS the script counts the scripts Redis runs (INFO commandstats) and
the keeper's CPU time (/proc).  Prints Redis commands per second per held
lock (expected: 3 / TTL, one re-arm every third of the TTL), Redis usec per
second, and the keeper's share of one core.  Then the same with the keeper
off, as the reference.
"""

import os
import sys
import time

import psycopg2
import redis

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "test", "python"))
from conftest import throwaway_cluster  # noqa: E402

R = redis.Redis(port=int(os.environ["REDLOCK_REDIS_PORT"]))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK     # utime + stime


def scripts():
    s = R.info("commandstats")
    return sum(s.get(k, {}).get(f, 0) for k in ("cmdstat_evalsha", "cmdstat_eval")
               for f in ("calls",)), \
        sum(s.get(k, {}).get("usec", 0) for k in ("cmdstat_evalsha", "cmdstat_eval"))


def measure(cur, keeper_pid, locks, seconds, ttl, on):
    cur.execute(f"ALTER SYSTEM SET redlock.lease_keeper = {'on' if on else 'off'}")
    cur.execute("SELECT pg_reload_conf()")
    time.sleep(1)
    cur.execute("SELECT redlock_release_all()")
    cur.execute(f"""DO $$ BEGIN FOR i IN 1 .. {locks} LOOP
                      PERFORM redlock_acquire_session('bench:kept:' || i, {ttl});
                    END LOOP; END $$""")
    R.config_resetstat()
    c0, t0 = cpu_seconds(keeper_pid), time.monotonic()
    time.sleep(seconds)
    calls, usec = scripts()
    c1, t1 = cpu_seconds(keeper_pid), time.monotonic()
    cur.execute("SELECT count(*) FROM redlock_locks WHERE kept")
    kept = cur.fetchone()[0]
    cur.execute("SELECT redlock_release_all()")
    elapsed = t1 - t0
    print(f"  {locks} locks, TTL {ttl} ms, keeper {'on ' if on else 'off'} ({kept} kept): "
          f"{calls / elapsed / locks:.3f} Redis scripts/s per lock, "
          f"{usec / elapsed / 1000:.1f} ms of Redis time per s, "
          f"keeper CPU {100 * (c1 - c0) / elapsed:.1f} % of a core")


def keeper_process(work):
    """The pid of the keeper: the postmaster's child named after it (a
    worker without a database is not in pg_stat_activity)."""
    with open(os.path.join(work, "pg", "postmaster.pid")) as f:
        postmaster = f.readline().strip()
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = f.read().rsplit(")", 1)[1].split()[1]
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == postmaster and b"redlock lease keeper" in cmd:
            return int(pid)
    raise RuntimeError("no lease keeper process")


def main():
    locks, seconds, ttls = int(sys.argv[1]), float(sys.argv[2]), [int(t) for t in sys.argv[3:]]
    conf = (f"shared_preload_libraries = 'redlock'\nredlock.max_tracked_locks = {locks + 100}\n"
            f"redlock.servers = '127.0.0.1:{os.environ['REDLOCK_REDIS_PORT']}'\n")
    with throwaway_cluster("redlock-bench-keeper-", conf, extension=True) as args:
        conn = psycopg2.connect(**args)
        conn.autocommit = True
        cur = conn.cursor()
        keeper_pid = keeper_process(args["host"])
        for ttl in ttls:
            for on in (False, True):
                measure(cur, keeper_pid, locks, seconds, ttl, on)
        conn.close()


if __name__ == "__main__":
    main()
