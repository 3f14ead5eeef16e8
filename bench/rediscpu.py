"""Redis's side of a lock, for bench/rediscpu.sh:

    python3 rediscpu.py cpu ROUNDS CYCLES
        Redis usec (INFO commandstats: time inside EVALSHA) per uncontended
        acquire + release: the minimal owner-checked pair (a SET NX PX
        script and a compare-and-delete script) against the scripts a
        backend sends in each lock format (captured with MONITOR), all
        replayed by this one client; interleaved rounds, medians.  Also the
        same cycle in SQL against pg_advisory_xact_lock.
    python3 rediscpu.py memory LOCKS
        Redis used_memory per held lock and per idle key (a key whose lock
        was released: its fencing counter), and after the key horizon.

Connects with the PG* environment of scripts/lib.sh to database "bench",
and to the Redis of REDLOCK_REDIS_PORT, which must serve nothing else.
"""

import os
import socket
import statistics
import sys
import time

import redis

from waiting import session, value

R = redis.Redis(port=int(os.environ["REDLOCK_REDIS_PORT"]))
MIN_ACQUIRE = "return redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])"
MIN_RELEASE = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
               "return redis.call('del', KEYS[1]) end return 0")
LOOP = """CREATE OR REPLACE PROCEDURE bench_cycles(n int, how text) LANGUAGE plpgsql AS $$
          BEGIN
            FOR i IN 1 .. n LOOP
              IF how = 'advisory' THEN PERFORM pg_advisory_xact_lock(i % 100);
              ELSE PERFORM redlock_acquire('bench:cpu:' || (i % 100)); END IF;
              COMMIT;
            END LOOP;
          END $$"""


def script_usec():
    """usec Redis spent in EVALSHA (scripts and the commands they ran)."""
    s = R.info("commandstats")
    return sum(s.get(k, {}).get("usec", 0) for k in ("cmdstat_evalsha", "cmdstat_eval"))


ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "a": b"\a", "b": b"\b",
           '"': b'"', "\\": b"\\"}


def unrepr(line):
    """The arguments of one MONITOR line (Redis quotes them like C)."""
    args, i = [], line.index('"')
    while i < len(line):
        if line[i] != '"':
            i += 1
            continue
        out, i = bytearray(), i + 1
        while line[i] != '"':
            if line[i] == "\\":
                if line[i + 1] == "x":
                    out.append(int(line[i + 2:i + 4], 16))
                    i += 4
                else:
                    out += ESCAPES[line[i + 1]]
                    i += 2
            else:
                out += line[i].encode()
                i += 1
        args.append(bytes(out))
        i += 1
    return args


def captured(cur, fmt):
    """The EVALSHA commands of one uncontended acquire + release in SQL."""
    mon = socket.create_connection(("127.0.0.1", R.connection_pool.connection_kwargs["port"]))
    mon.sendall(b"MONITOR\r\n")
    f = mon.makefile("r", encoding="latin-1")
    f.readline()                         # +OK
    cur.execute("SET redlock.lock_format = %s", (fmt,))
    cur.execute("SELECT redlock_acquire_session('bench:cpu:probe'); "
                "SELECT redlock_release('bench:cpu:probe')")
    R.ping()                             # a marker after them
    calls = []
    while True:
        args = unrepr(f.readline())
        if args[0].lower() == b"ping":
            break
        if args[0].lower() == b"evalsha":
            calls.append(args[1:])
        elif args[0].lower() == b"eval":     # a connection's first use of a script
            calls.append([R.script_load(args[1]).encode()] + args[2:])
    mon.close()
    return calls


def replay(name, calls, cycles):
    """Redis usec per cycle of "calls" with the key changed each cycle
    (100 keys of this shape's own)."""
    R.config_resetstat()
    for i in range(cycles):
        key = f"bench:cpu:{name}:{i % 100}".encode()
        for c in calls:
            R.evalsha(*[a.replace(b"bench:cpu:probe", key) for a in c])
    return script_usec() / cycles


def sql_rate(cur, cycles, how):
    if how != "advisory":
        cur.execute("SET redlock.lock_format = %s", (how,))
    t = time.monotonic()
    cur.execute("CALL bench_cycles(%s, %s)", (cycles, how))
    return cycles / (time.monotonic() - t)


def cpu(rounds, cycles):
    _, cur = session()
    cur.execute(LOOP)
    shapes = {"minimal": [[R.script_load(MIN_ACQUIRE).encode(), b"1", b"bench:cpu:probe", b"me", b"30000"],
                          [R.script_load(MIN_RELEASE).encode(), b"1", b"bench:cpu:probe", b"me"]],
              "string": captured(cur, "string"),
              "redisson": captured(cur, "redisson")}
    for how, calls in shapes.items():
        assert len(calls) == 2, (how, calls)
    usec = {how: [] for how in shapes}
    rate = {"advisory": [], "string": [], "redisson": []}
    for _ in range(rounds):
        for how, calls in shapes.items():
            usec[how].append(replay(how, calls, cycles))
        for how in rate:
            rate[how].append(sql_rate(cur, cycles, how))
    m = statistics.median(usec["minimal"])
    print(f"  Redis usec per uncontended acquire + release, the same client sending each "
          f"({rounds} interleaved rounds of {cycles}, medians):")
    for how, xs in usec.items():
        print(f"    {how:9s} {statistics.median(xs):6.2f} us  ({statistics.median(xs) / m:.2f}x minimal)")
    a = statistics.median(rate["advisory"])
    print("  the same cycle in SQL (a procedure, one transaction per cycle), cycles/s:")
    for how, xs in rate.items():
        print(f"    {how:9s} {statistics.median(xs):8.0f}  ({statistics.median(xs) / a:.2f}x pg_advisory_xact_lock)")


def used():
    return R.info("memory")["used_memory"]


def memory(locks):
    _, cur = session()
    horizon = 30
    cur.execute("SET redlock.key_horizon = %s", (f"{horizon}s",))
    cur.execute("SELECT redlock_acquire_session('bench:mem:warm-up'); SELECT redlock_release_all()")
    R.delete(*R.keys("bench:mem:*"))     # with its counter; the connection stays
    base, basekeys = used(), R.dbsize()
    cur.execute("""DO $$ BEGIN
                     FOR i IN 1 .. %s LOOP
                       PERFORM redlock_acquire_session('bench:mem:' || i, 600000);
                     END LOOP; END $$""", (locks,))
    held = used()
    cur.execute("SELECT redlock_release_all()")
    idle, idlekeys = used(), R.dbsize() - basekeys
    t = time.monotonic()
    while R.dbsize() > basekeys and time.monotonic() < t + 2 * horizon:
        time.sleep(0.5)                  # Redis expires keys by sampling
    print(f"  {locks} session locks: {(held - base) / locks:.0f} bytes per held lock "
          f"(lock and fencing counter), {(idle - base) / locks:.0f} bytes per idle key "
          f"({idlekeys} keys left after release); after the horizon ({horizon} s): "
          f"{R.dbsize() - basekeys} keys, used_memory {used() - base:+d} bytes")


if __name__ == "__main__":
    {"cpu": lambda: cpu(int(sys.argv[2]), int(sys.argv[3])),
     "memory": lambda: memory(int(sys.argv[2]))}[sys.argv[1]]()
