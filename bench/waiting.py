"""Measurements of bench/hotkey.sh that need two sessions or Redis's side:

    python3 waiting.py handoff ROUNDS [SERVERS...]
        release -> the blocked waiter holds the lock, median and p90 in ms
        (on the given masters, or redlock.servers)
    python3 waiting.py commands SERVERS...
        commands each master receives (MONITOR) for one uncontended
        acquire + release after warm-up; commands run inside scripts are
        not counted
    python3 waiting.py memory CYCLES
        backend memory (contexts and resident size) before and after CYCLES
        acquire/release pairs

Connects with the PG* environment of scripts/lib.sh to database "bench".
"""

import statistics
import sys
import threading
import time

import psycopg2
import redis


def session(servers=None):
    c = psycopg2.connect(dbname="bench")
    c.autocommit = True
    cur = c.cursor()
    cur.execute("LOAD 'redlock'")
    if servers:
        cur.execute("SET redlock.servers = %s", (servers,))
    return c, cur


def value(cur, sql, args=None):
    cur.execute(sql, args)
    return cur.fetchone()[0]


def handoff(rounds, servers=()):
    masters = ", ".join(servers) or None
    _, holder = session(masters)
    wconn, waiter = session(masters)
    _, admin = session()
    holder.execute("""CREATE OR REPLACE FUNCTION bench_release(k text) RETURNS timestamptz
                      LANGUAGE plpgsql AS $$
                      DECLARE t timestamptz := clock_timestamp();
                      BEGIN PERFORM redlock_release(k); RETURN t; END $$""")
    wpid = value(waiter, "SELECT pg_backend_pid()")
    gaps = []
    for _ in range(rounds):
        holder.execute("SELECT redlock_acquire_session('bench:handoff')")
        got = []
        t = threading.Thread(target=lambda: got.append(value(
            waiter, "SELECT clock_timestamp() FROM "
                    "(SELECT redlock_acquire_session('bench:handoff')) a")))
        t.start()
        while True:                      # until the waiter sleeps on Redis
            admin.execute("SELECT pg_stat_clear_snapshot()")
            if value(admin, "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                     (wpid,)) == "Extension":
                break
            time.sleep(0.001)
        time.sleep(0.005)
        released = value(holder, "SELECT bench_release('bench:handoff')")
        t.join()
        gaps.append((got[0] - released).total_seconds() * 1000)
        waiter.execute("SELECT redlock_release('bench:handoff')")
    gaps.sort()
    where = f"{len(servers)} masters" if servers else "redlock.servers"
    print(f"  hand-off over {rounds} rounds ({where}): median {statistics.median(gaps):.3f} ms, "
          f"p90 {gaps[int(len(gaps) * 0.9)]:.3f} ms, max {gaps[-1]:.3f} ms")


def commands(servers):
    _, cur = session(", ".join(servers))
    # a key of its own per run: counters that differ between masters would
    # add a one-time fencing write-back
    key = f"bench:count:{len(servers)}"
    cur.execute("SELECT redlock_acquire(%s)", (key,))           # connect, load scripts
    clients = [redis.Redis(host=s.split(":")[0], port=int(s.split(":")[1])) for s in servers]
    seen = [[] for _ in servers]
    ready = [threading.Event() for _ in servers]

    def monitor(i):
        with clients[i].monitor() as m:
            ready[i].set()
            while True:
                cmd = m.next_command()
                if cmd["command"].startswith("ECHO monitor-stop"):
                    return
                if cmd.get("client_type") != "lua":
                    seen[i].append(cmd["command"].split()[0])

    threads = [threading.Thread(target=monitor, args=(i,)) for i in range(len(servers))]
    for t in threads:
        t.start()
    for e in ready:
        e.wait(5)
    time.sleep(0.05)
    cur.execute("BEGIN")
    cur.execute("SELECT redlock_acquire(%s)", (key,))
    cur.execute("COMMIT")
    time.sleep(0.1)
    for c in clients:
        c.echo("monitor-stop")
    for t in threads:
        t.join(5)
    for s, cmds in zip(servers, seen):
        print(f"  {s}: {len(cmds)} commands for one acquire + release: {' '.join(cmds)}")


def memory(cycles):
    _, cur = session()
    pid = value(cur, "SELECT pg_backend_pid()")

    def rss_kb():
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))

    loop = ("DO $$ BEGIN FOR i IN 1..%d LOOP PERFORM redlock_acquire_session('bench:mem'); "
            "PERFORM redlock_release('bench:mem'); END LOOP; END $$")
    contexts = "SELECT sum(total_bytes) FROM pg_backend_memory_contexts"
    cur.execute(loop % 10000)
    before = (value(cur, contexts), rss_kb())
    started = time.monotonic()
    cur.execute(loop % cycles)
    took = time.monotonic() - started
    after = (value(cur, contexts), rss_kb())
    print(f"  {cycles} acquire/release pairs in {took:.0f} s: memory contexts "
          f"{before[0] / 1024:.0f} kB -> {after[0] / 1024:.0f} kB, resident "
          f"{before[1]} kB -> {after[1]} kB")


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "handoff":
        handoff(int(sys.argv[2]), sys.argv[3:])
    elif what == "commands":
        commands(sys.argv[2:])
    elif what == "memory":
        memory(int(sys.argv[2]))
