"""Deadlock detection for waits on Redis locks (deadlock.c), against real
masters and PostgreSQL clusters: cycles of Redis lock waits within one
cluster (across databases) and across two clusters that share the masters,
cycles that mix a Redis lock wait with a row lock wait, a cycle that
closes long after the wait began, a set of keys asked for together; and
none found where there is none, on hot keys with many waiters."""

import random
import threading
import time

import psycopg2

from conftest import (Session, backend_wait_event, in_thread, servers,
                      throwaway_cluster, wait_for)
from test_regressions_waiting import readme_acl_commands

REGISTRY = b"\x00redlock:waits"


def ident(s):
    """A backend's identity, as its owner values end with it."""
    return s.value("""SELECT format('%s.%s.%s', to_hex(system_identifier), to_hex(pg_backend_pid()),
                                      to_hex((extract(epoch FROM backend_start) * 1000000)::bigint
                                             - 946684800000000))
                        FROM pg_control_system(), pg_stat_activity WHERE pid = pg_backend_pid()""")


def begin(*sessions, timeout="1s"):
    for s in sessions:
        s.execute("SET deadlock_timeout = %s", (timeout,))
        s.execute("BEGIN")


def waiting(admin, s):
    wait_for(lambda: backend_wait_event(admin, s.pid) in ("Extension", "Lock"),
             what=f"backend {s.pid} to wait")


def outcome(out):
    """The pgcode of a thread's outcome (None: it succeeded)."""
    assert out, "the statement did not end"
    return out[0].pgcode if isinstance(out[0], psycopg2.Error) else None


def test_two_keys_in_opposite_orders(session, admin, main_redis):
    """The classic: a holds x and waits for y, b holds y and waits for x.
    b, whose deadlock_timeout is shorter, finds the cycle within about
    that time and gets 40P01 with a DETAIL in PostgreSQL's words; a then
    gets y.  Only one of them is ended."""
    a, b = session(), session()
    begin(a, timeout="10s")
    begin(b, timeout="300ms")
    a.value("SELECT redlock_acquire('dl:x')")
    b.value("SELECT redlock_acquire('dl:y')")
    t, out = in_thread(a.value, "SELECT redlock_acquire('dl:y', 30000, 20000)")
    waiting(admin, a)
    started = time.monotonic()
    err = b.error("SELECT redlock_acquire('dl:x', 30000, 20000)")
    took = time.monotonic() - started
    assert err.pgcode == "40P01" and "deadlock detected" in err.pgerror
    assert (f'Process {b.pid} waits for Redis lock "dl:x" (exclusive); blocked by process {a.pid}.'
            in err.pgerror), err.pgerror
    assert (f'Process {a.pid} waits for Redis lock "dl:y" (exclusive); blocked by process {b.pid}.'
            in err.pgerror), err.pgerror
    assert took < 5, "found at the victim's deadlock_timeout, not at a wait limit"
    b.execute("ROLLBACK")
    t.join(10)
    assert outcome(out) is None and out[0] > 0, out
    a.execute("COMMIT")
    assert b.execute("SELECT deadlocks, deadlock_checks > 0 FROM redlock_stats") == [(1, True)]
    records = main_redis.hkeys(REGISTRY)
    assert ident(a).encode() not in records and ident(b).encode() not in records, \
        "every record was deleted when its wait ended"


def test_three_sessions_in_two_databases(session, admin, database):
    """a -> b -> c -> a over three keys, c in another database of the same
    cluster (the keys are the cluster's, not a database's)."""
    admin.execute("DROP DATABASE IF EXISTS redlock_test_other WITH (FORCE)")
    admin.execute("CREATE DATABASE redlock_test_other")
    other = Session("redlock_test_other")
    try:
        other.execute("CREATE EXTENSION redlock")
        a, b, c = session(), session(), other
        begin(a, b, timeout="10s")
        begin(c, timeout="300ms")
        for s, k in ((a, "dl3:a"), (b, "dl3:b"), (c, "dl3:c")):
            s.value("SELECT redlock_acquire(%s)", (k,))
        ta, oa = in_thread(a.value, "SELECT redlock_acquire('dl3:b', 30000, 20000)")
        waiting(admin, a)
        tb, ob = in_thread(b.value, "SELECT redlock_acquire('dl3:c', 30000, 20000)")
        waiting(admin, b)
        err = c.error("SELECT redlock_acquire('dl3:a', 30000, 20000)")
        assert err.pgcode == "40P01"
        assert err.pgerror.count("blocked by process") == 3, err.pgerror
        c.execute("ROLLBACK")
        tb.join(10)
        assert outcome(ob) is None
        b.execute("COMMIT")
        ta.join(10)
        assert outcome(oa) is None
        a.execute("COMMIT")
    finally:
        other.close()
        admin.execute("DROP DATABASE redlock_test_other WITH (FORCE)")


def test_across_two_postgresql_clusters(session, admin):
    """A cycle between a backend of this cluster and one of another
    cluster (its own initdb) that shares the Redis master: found, and the
    DETAIL names the other cluster's process by its system identifier."""
    with throwaway_cluster("redlock-deadlock-", extension=True) as args:
        far = psycopg2.connect(**args)
        far.autocommit = True
        fc = far.cursor()
        try:
            fc.execute("SELECT pg_backend_pid(), system_identifier FROM pg_control_system()")
            far_pid, far_sysid = fc.fetchone()
            near = session()
            begin(near, timeout="10s")
            near.value("SELECT redlock_acquire('dlx:near')")
            fc.execute("SET deadlock_timeout = '300ms'")
            fc.execute("BEGIN")
            fc.execute("SELECT redlock_acquire('dlx:far')")
            t, out = in_thread(near.value, "SELECT redlock_acquire('dlx:far', 30000, 20000)")
            waiting(admin, near)
            try:
                fc.execute("SELECT redlock_acquire('dlx:near', 30000, 20000)")
                raise AssertionError("the far backend got the key")
            except psycopg2.Error as e:
                err = e
            assert err.pgcode == "40P01", err
            near_sysid = near.value("SELECT system_identifier FROM pg_control_system()")
            assert near_sysid != far_sysid
            assert (f"blocked by process {near.pid} of the PostgreSQL system {near_sysid}."
                    in err.pgerror), err.pgerror
            assert f"Process {far_pid} waits for Redis lock" in err.pgerror, err.pgerror
            fc.execute("ROLLBACK")
            t.join(10)
            assert outcome(out) is None
            near.execute("COMMIT")
        finally:
            far.close()


def test_a_redis_lock_wait_and_a_row_lock_wait(session, admin):
    """a holds the key and waits for the row b updated; b then waits for
    the key: b's check sees a's row lock wait (pg_blocking_pids) and ends
    b with 40P01, the DETAIL naming the PostgreSQL lock; a gets the row.
    PostgreSQL's own detector cannot: it does not see the Redis edge."""
    a, b = session(), session()
    a.execute("CREATE TABLE IF NOT EXISTS dl_rows (id int PRIMARY KEY, n int)")
    a.execute("INSERT INTO dl_rows VALUES (1, 0) ON CONFLICT DO NOTHING")
    begin(a, timeout="10s")
    begin(b, timeout="300ms")
    a.value("SELECT redlock_acquire('dlm:k')")
    b.execute("UPDATE dl_rows SET n = n + 1 WHERE id = 1")
    t, out = in_thread(a.execute, "UPDATE dl_rows SET n = n + 1 WHERE id = 1")
    waiting(admin, a)
    err = b.error("SELECT redlock_acquire('dlm:k', 30000, 20000)")
    assert err.pgcode == "40P01"
    assert f"Process {a.pid} waits for a PostgreSQL lock; blocked by process {b.pid}." \
        in err.pgerror, err.pgerror
    b.execute("ROLLBACK")
    t.join(10)
    assert outcome(out) is None
    a.execute("COMMIT")


def test_a_cycle_that_closes_after_the_first_check(session, admin):
    """a updates a row, then waits for a key b holds; a's first check (at
    its deadlock_timeout) finds no cycle.  Seconds later b blocks on a's
    row: PostgreSQL's detector, in b, finds nothing (the Redis edge is not
    its), and b would wait for ever; a's next check finds the cycle and
    ends a, so b gets the row."""
    a, b = session(), session()
    a.execute("CREATE TABLE IF NOT EXISTS dl_rows (id int PRIMARY KEY, n int)")
    a.execute("INSERT INTO dl_rows VALUES (2, 0) ON CONFLICT DO NOTHING")
    begin(a, timeout="200ms")
    begin(b, timeout="200ms")
    b.value("SELECT redlock_acquire('dll:k')")
    a.execute("UPDATE dl_rows SET n = n + 1 WHERE id = 2")
    started = time.monotonic()
    t, out = in_thread(a.value, "SELECT redlock_acquire('dll:k', 30000, 30000)")
    waiting(admin, a)
    time.sleep(max(0.0, started + 2.5 - time.monotonic()))
    assert t.is_alive(), "no cycle yet: a still waits"
    tb, ob = in_thread(b.execute, "UPDATE dl_rows SET n = n + 1 WHERE id = 2")
    t.join(15)
    assert outcome(out) == "40P01", out
    a.execute("ROLLBACK")
    tb.join(10)
    assert outcome(ob) is None
    b.execute("COMMIT")


def test_a_set_of_keys_in_a_cycle(session, admin):
    """A set asked for together waits for every key of it: a, waiting for
    {y, z} while b holds y, and b waiting for x, which a holds, are a
    cycle (found), though z is free."""
    a, b = session(), session()
    begin(a, timeout="10s")
    begin(b, timeout="300ms")
    a.value("SELECT redlock_acquire('dls:x')")
    b.value("SELECT redlock_acquire('dls:y')")
    t, out = in_thread(a.value, "SELECT redlock_acquire(ARRAY['dls:y', 'dls:z'], 30000, 20000)")
    waiting(admin, a)
    err = b.error("SELECT redlock_acquire('dls:x', 30000, 20000)")
    assert err.pgcode == "40P01"
    assert f'Process {a.pid} waits for Redis lock "dls:y" (exclusive)' in err.pgerror
    b.execute("ROLLBACK")
    t.join(10)
    assert outcome(out) is None and len(out[0]) == 2
    a.execute("COMMIT")


def test_a_reader_behind_a_writer(session, admin, main_redis):
    """r1 holds k shared; w waits for k exclusively; r2, holding j, asks for
    k shared and queues behind w (fairness); r1 then waits for j.  The
    cycle r1 -> r2 -> w -> r1 runs through the queue, not only holders:
    found, and r1 (the shortest deadlock_timeout) is ended."""
    r1, w, r2 = session(), session(), session()
    begin(r1, timeout="300ms")
    begin(w, r2, timeout="10s")
    r1.value("SELECT redlock_acquire_shared('dlq:k')")
    r2.value("SELECT redlock_acquire('dlq:j')")
    tw, ow = in_thread(w.value, "SELECT redlock_acquire('dlq:k', 30000, 20000)")
    waiting(admin, w)
    wait_for(lambda: main_redis.zcard(b"dlq:k\x00waiters") == 1,
             what="the writer to queue first")
    t2, o2 = in_thread(r2.value, "SELECT redlock_acquire_shared('dlq:k', 30000, 20000)")
    waiting(admin, r2)
    err = r1.error("SELECT redlock_acquire('dlq:j', 30000, 20000)")
    assert err.pgcode == "40P01", err
    assert "behind an earlier exclusive request" in err.pgerror, err.pgerror
    r1.execute("ROLLBACK")
    tw.join(10)
    assert outcome(ow) is None
    w.execute("COMMIT")
    t2.join(10)
    assert outcome(o2) is None
    r2.execute("COMMIT")


def test_hot_keys_without_a_cycle_never_deadlock(session, admin):
    """The control for every test above: eight sessions, three hot keys,
    deadlock_timeout 20 ms so that checks run all the time; each
    transaction takes one key, or two in key order (no cycle can form),
    and holds them for 5 to 40 ms.  No 40P01 in about 6 s, while the
    checks did run."""
    keys = ["dlh:a", "dlh:b", "dlh:c"]
    errors = []
    stop = time.monotonic() + 6
    start = threading.Barrier(8, timeout=30)
    checks = []

    def run():
        s = session()
        try:
            s.execute("SET deadlock_timeout = '20ms'")
            start.wait()
            while time.monotonic() < stop:
                picked = sorted(random.sample(keys, random.choice((1, 2))))
                s.execute("BEGIN")
                for k in picked:
                    s.value("SELECT redlock_acquire(%s, 30000, 30000)", (k,))
                time.sleep(random.uniform(0.005, 0.04))
                s.execute("COMMIT")
            checks.append(s.value("SELECT deadlock_checks FROM redlock_stats"))
        except Exception as e:          # reported below
            errors.append(e)
        finally:
            s.close()

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a session never finished"
    assert not errors, errors
    assert sum(checks) > 0, "no check ran: the test shows nothing"


def test_a_cancelled_wait_leaves_no_edge(session, admin):
    """b holds j (a session lock), waits for k long enough to publish its
    record, and is cancelled by statement_timeout: idle now, it still
    holds j, and its record may stay a few seconds.  a holds k and asks
    for j: that is no cycle (b waits for nothing), and a's wait ends at its
    own limit with 55P03, not 40P01.  (Found by the review of the first
    version, which trusted the record alone.)"""
    a, b = session(), session()
    b.value("SELECT redlock_acquire_session('dlc:j')")
    a.value("SELECT redlock_acquire_session('dlc:k')")
    b.execute("SET statement_timeout = '700ms'")
    err = b.error("SELECT redlock_acquire_session('dlc:k', 30000, 20000)")
    assert err.pgcode == "57014"
    a.execute("SET deadlock_timeout = '100ms'")
    err = a.error("SELECT redlock_acquire_session('dlc:j', 30000, 2500)")
    assert err.pgcode == "55P03", err.pgerror
    assert a.value("SELECT deadlock_checks FROM redlock_stats") >= 2
    a.value("SELECT redlock_release_all()")
    b.value("SELECT redlock_release_all()")


def test_one_cycle_ends_one_backend(session, admin):
    """Both members of a two-backend cycle check (the same
    deadlock_timeout, waits started a few ms apart), again and again:
    each time exactly one of them ends with 40P01 and the other gets its
    key.  (The first version often ended both.)"""
    for round in range(10):
        a, b = session(), session()
        begin(a, b, timeout="300ms")
        a.value("SELECT redlock_acquire('dle:x')")
        b.value("SELECT redlock_acquire('dle:y')")
        ta, oa = in_thread(a.value, "SELECT redlock_acquire('dle:y', 30000, 10000)")
        tb, ob = in_thread(b.value, "SELECT redlock_acquire('dle:x', 30000, 10000)")
        ta.join(15)
        tb.join(15)
        codes = sorted([outcome(oa) or "ok", outcome(ob) or "ok"])
        assert codes == ["40P01", "ok"], (round, oa, ob)
        for s in (a, b):
            s.execute("ROLLBACK")
            s.close()


def test_a_set_of_nine_keys_in_a_cycle(session, admin):
    """x waits for a set of nine keys, one held by s; s waits for x's key:
    found (the walk reads the nine keys of x's wait)."""
    x, s = session(), session()
    begin(x, timeout="10s")
    begin(s, timeout="300ms")
    x.value("SELECT redlock_acquire('dl9:x')")
    s.value("SELECT redlock_acquire('dl9:k5')")
    keys = [f"dl9:k{i}" for i in range(1, 10)]
    t, out = in_thread(x.value, "SELECT redlock_acquire(%s::text[], 30000, 20000)", (keys,))
    waiting(admin, x)
    err = s.error("SELECT redlock_acquire('dl9:x', 30000, 20000)")
    assert err.pgcode == "40P01"
    s.execute("ROLLBACK")
    t.join(10)
    assert outcome(out) is None and len(out[0]) == 9
    x.execute("COMMIT")


def test_under_the_readme_acl_user(session, admin, redis_server):
    """A Redis ACL user with exactly the commands of the README's example,
    keys and channels under 'acme:': a cycle of Redis lock waits is found
    (the wait records and the holders' reads need HSET, HGETALL, HDEL,
    HEXISTS and ZSCORE)."""
    r = redis_server()
    r.client().acl_setuser("acme", enabled=True, passwords=["+acme-pw"], keys=["~acme:*"],
                           channels=["acme:*"], commands=readme_acl_commands())
    url = f"redis://acme:acme-pw@127.0.0.1:{r.port}"
    a, b = session(servers=url), session(servers=url)
    for s in (a, b):
        s.execute("SET redlock.key_prefix = 'acme:'")
    begin(a, timeout="10s")
    begin(b, timeout="300ms")
    a.value("SELECT redlock_acquire('dla:x')")
    b.value("SELECT redlock_acquire('dla:y')")
    t, out = in_thread(a.value, "SELECT redlock_acquire('dla:y', 30000, 20000)")
    waiting(admin, a)
    err = b.error("SELECT redlock_acquire('dla:x', 30000, 20000)")
    assert err.pgcode == "40P01", err.pgerror
    assert not [n for n in a.conn.notices + b.conn.notices if "deadlock detection" in n]
    b.execute("ROLLBACK")
    t.join(10)
    assert outcome(out) is None
    a.execute("COMMIT")


def test_a_frozen_master_does_not_hide_a_cycle(session, admin, masters):
    """Three masters, one frozen (SIGSTOP) while two backends close a
    cycle: the other two are a majority, the cycle is found as usual (the
    check does not wait out the frozen one at each read) and the winner
    gets its key."""
    ms = masters(3)
    a, b = (session(servers=servers(ms)) for _ in range(2))
    begin(a, timeout="10s")
    begin(b, timeout="300ms")
    a.value("SELECT redlock_acquire('dlf:x')")
    b.value("SELECT redlock_acquire('dlf:y')")
    ms[2].freeze()
    try:
        t, out = in_thread(a.value, "SELECT redlock_acquire('dlf:y', 30000, 20000)")
        waiting(admin, a)
        started = time.monotonic()
        err = b.error("SELECT redlock_acquire('dlf:x', 30000, 20000)")
        assert err.pgcode == "40P01", err.pgerror
        assert time.monotonic() - started < 8, "found within a few checks"
        b.execute("ROLLBACK")
        t.join(20)
        assert outcome(out) is None
        a.execute("COMMIT")
    finally:
        ms[2].resume()


def test_an_acl_without_the_hash_commands_is_said_once(session, admin, redis_server):
    """A Redis ACL user without HSET, HGETALL, HDEL, HEXISTS (the README's
    example before version 1.5): locks and waits work, and a wait long
    enough to publish its record gets one WARNING saying that deadlock
    detection cannot run its scripts (instead of missing cycles
    silently), once per backend."""
    r = redis_server()
    commands = [c for c in readme_acl_commands()
                if c not in ("+hset", "+hgetall", "+hdel", "+hexists")]
    r.client().acl_setuser("old", enabled=True, passwords=["+old-pw"], keys=["~*"],
                           channels=["*"], commands=commands)
    url = f"redis://old:old-pw@127.0.0.1:{r.port}"
    holder, w = session(servers=url), session(servers=url)
    holder.value("SELECT redlock_acquire_session('dlw:k')")
    w.execute("SET deadlock_timeout = '100ms'")
    for _ in range(2):
        err = w.error("SELECT redlock_acquire_session('dlw:k', 30000, 700)")
        assert err.pgcode == "55P03"
    said = [n for n in w.conn.notices if "deadlock detection cannot run its scripts" in n]
    assert len(said) == 1, w.conn.notices
    assert holder.value("SELECT redlock_release('dlw:k')") is True
