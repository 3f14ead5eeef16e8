"""Waiting without polling: a release wakes the first waiter at once;
releases redlock does not see (other clients, expiry) are noticed by a
fallback timer; waiters are served in arrival order and a releasing backend
cannot barge ahead of them; dead or departed waiters do not block the key;
subscription connections are opened on the first wait, reused, and closed
with the backend; an uncontended acquire and release send one command each
to every master; memory stays flat."""

import threading
import time

import pytest

from conftest import backend_wait_event, in_thread, servers, wait_for

WAITERS = b"\x00waiters"
WAITEXP = b"\x00waitexp"


def waiting(admin, s):
    wait_for(lambda: backend_wait_event(admin, s.pid) == "Extension",
             what="the session to wait for Redis")


def test_release_wakes_the_waiter_at_once(session, admin):
    holder = session()
    holder.execute("SELECT redlock_acquire_session('w:wake')")
    waiter = session()
    # the fallback timer is far away: only a wake-up can end the wait soon
    waiter.execute("SET redlock.retry_delay = '60s'")
    waiter.execute("SET redlock.retry_jitter = 0")
    t, got = in_thread(waiter.value, "SELECT redlock_acquire_session('w:wake')")
    waiting(admin, waiter)
    time.sleep(0.2)                     # it really is asleep, not polling
    released = time.monotonic()
    holder.execute("SELECT redlock_release('w:wake')")
    t.join(10)
    assert got and got[0] > 0
    assert time.monotonic() - released < 0.5


def test_unseen_releases_are_noticed(session, admin, main_redis):
    """A lock released by another client, or left to expire, publishes
    nothing: the fallback timer (holder's TTL, at most retry_delay) finds
    it."""
    lock = main_redis.lock("w:foreign", timeout=30)
    assert lock.acquire(blocking=False)
    waiter = session()
    waiter.execute("SET redlock.retry_delay = 200")
    t, got = in_thread(waiter.value, "SELECT redlock_acquire_session('w:foreign')")
    waiting(admin, waiter)
    released = time.monotonic()
    lock.release()
    t.join(10)
    assert got and got[0] > 0
    assert time.monotonic() - released < 1.0

    # expiry: the timer follows the holder's remaining TTL, not retry_delay
    main_redis.set("w:expiring", "someone-else", px=600)
    waiter.execute("SET redlock.retry_delay = '60s'")
    started = time.monotonic()
    assert waiter.value("SELECT redlock_acquire_session('w:expiring')") > 0
    assert time.monotonic() - started < 2.0


def test_waiters_are_served_in_arrival_order(session, admin):
    s = session()
    s.execute("CREATE TABLE IF NOT EXISTS w_order (who int, at timestamptz DEFAULT clock_timestamp())")
    s.execute("TRUNCATE w_order")
    holder = session()
    holder.execute("SELECT redlock_acquire_session('w:order')")
    threads = []
    for i in range(5):
        w = session()

        def take(w=w, i=i):
            w.execute("BEGIN")
            w.execute("SELECT redlock_acquire('w:order')")
            w.execute("INSERT INTO w_order (who) VALUES (%s)", (i,))
            w.execute("COMMIT")

        t = threading.Thread(target=take)
        t.start()
        threads.append(t)
        waiting(admin, w)               # each arrives after the one before
    holder.execute("SELECT redlock_release('w:order')")
    for t in threads:
        t.join(20)
    assert [r[0] for r in s.execute("SELECT who FROM w_order ORDER BY at")] == list(range(5))


def test_releasing_backend_cannot_barge_ahead(session, main_redis):
    """A free key is promised to the first live waiter: the backend that
    just released it (or anyone else using redlock) cannot take it first.
    Control: a client that knows nothing of the queue, a bare SET NX, can."""
    waiter = "redlock:wake:ffffffffffffffff"     # a waiter that never wakes
    now_ms = int(time.time() * 1000)
    holder = session()
    holder.execute("SELECT redlock_acquire_session('w:barge')")
    main_redis.zadd(b"w:barge" + WAITERS, {waiter: 1})
    main_redis.zadd(b"w:barge" + WAITEXP, {waiter: now_ms + 60000})
    assert holder.value("SELECT redlock_release('w:barge')") is True
    assert holder.value("SELECT redlock_try_acquire_session('w:barge')") is None
    assert session().value("SELECT redlock_try_acquire('w:barge')") is None
    assert main_redis.set("w:barge", "bare-set-nx", nx=True, px=1000), "the control barges"
    main_redis.delete(b"w:barge" + WAITERS, b"w:barge" + WAITEXP, "w:barge")


def test_dead_waiter_does_not_block_the_key(session, main_redis):
    """A waiter that vanished without leaving the queue (killed) is dropped
    once its entry's deadline passes."""
    s = session()
    s.execute("SELECT redlock_try_acquire('w:dead-warm')")        # connected
    now_ms = int(time.time() * 1000)
    main_redis.zadd(b"w:dead" + WAITERS, {"redlock:wake:0000000000000000": 1})
    main_redis.zadd(b"w:dead" + WAITEXP, {"redlock:wake:0000000000000000": now_ms + 700})
    assert s.value("SELECT redlock_try_acquire_session('w:dead')") is None, \
        "a live waiter is ahead"
    started = time.monotonic()
    left = (now_ms + 700) / 1000 - time.time()      # of the dead entry's life
    assert s.value("SELECT redlock_acquire_session('w:dead')") > 0
    took = time.monotonic() - started
    assert left - 0.01 <= took < left + 3.0, (left, took)
    assert main_redis.zscore(b"w:dead" + WAITERS, "redlock:wake:0000000000000000") is None, \
        "the dead waiter was dropped"
    s.execute("SELECT redlock_release('w:dead')")
    assert main_redis.zcard(b"w:dead" + WAITERS) == 0, "and the holder left with its release"


def test_giving_up_leaves_the_queue(session, admin, main_redis):
    holder = session()
    holder.execute("SELECT redlock_acquire_session('w:leave')")
    waiter = session()
    err = waiter.error("SELECT redlock_acquire('w:leave', NULL, 200)")
    assert err.pgcode == "55P03"
    assert main_redis.zcard(b"w:leave" + WAITERS) == 0, "left the queue on timeout"

    t, got = in_thread(waiter.execute, "SELECT redlock_acquire('w:leave')")
    waiting(admin, waiter)
    wait_for(lambda: main_redis.zcard(b"w:leave" + WAITERS) == 1, what="the waiter to queue")
    admin.execute("SELECT pg_cancel_backend(%s)", (waiter.pid,))
    t.join(10)
    assert got[0].pgcode == "57014"
    wait_for(lambda: main_redis.zcard(b"w:leave" + WAITERS) == 0,
             what="the cancelled waiter to leave the queue")
    holder.execute("SELECT redlock_release('w:leave')")


def test_subscription_connections(session, admin, redis_server):
    r = redis_server()
    probe = r.client()
    probe.client_setname("probe")

    def clients(r):
        """Connections to r, but for the probing client."""
        return [c for c in probe.client_list() if c["name"] != "probe"]

    s = session(servers=r.addr)
    for _ in range(3):
        s.execute("SELECT redlock_acquire('w:sub')")
    assert len(clients(r)) == 1, "uncontended locks need no subscription"

    other = session(servers=r.addr)
    for _ in range(2):
        other.execute("SELECT redlock_acquire_session('w:sub')")
        t, got = in_thread(s.value, "SELECT redlock_acquire_session('w:sub')")
        waiting(admin, s)
        other.execute("SELECT redlock_release('w:sub')")
        t.join(10)
        assert got[0] > 0
        s.execute("SELECT redlock_release('w:sub')")
    # s: a command and a subscription connection; other: a command one
    assert len(clients(r)) == 3
    assert len([c for c in clients(r) if int(c["sub"]) > 0]) == 1, \
        "one subscription, kept for the second wait"
    s.close()
    other.close()
    wait_for(lambda: clients(r) == [], what="the backends' connections to close")


class Monitor:
    """The commands a Redis server receives, from MONITOR."""

    def __init__(self, r):
        self.client = r.client()
        self.commands = []
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()
        self.ready.wait(5)

    def _run(self):
        with self.client.monitor() as m:
            self.ready.set()
            while True:
                seen = m.next_command()
                cmd = seen["command"]
                if cmd.startswith("ECHO monitor-stop"):
                    return
                # what scripts run inside Redis is not a command we sent
                if seen.get("client_type") != "lua" and not cmd.startswith("ECHO monitor-"):
                    self.commands.append(cmd.split()[0])

    def stop(self):
        self.client.echo("monitor-stop")
        self.thread.join(5)
        return self.commands


@pytest.mark.parametrize("n", [1, 3])
def test_one_command_per_master_for_acquire_and_release(session, masters, n):
    ms = masters(n)
    s = session(servers=servers(ms))
    s.execute("SELECT redlock_acquire('w:count')")        # connect, load scripts
    for m in ms:
        m.client().echo("monitor-warm")
    monitors = [Monitor(m) for m in ms]
    s.execute("BEGIN")
    s.execute("SELECT redlock_acquire('w:count')")
    s.execute("COMMIT")
    time.sleep(0.1)                                       # stragglers of an early stop
    for mon in monitors:
        assert mon.stop() == ["EVALSHA", "EVALSHA"]


def test_contended_locks_over_three_masters(session, masters):
    """Several sessions take turns on one key over three masters, one of
    them frozen: exclusive, and every one gets it."""
    ms = masters(3)
    s = session()
    s.execute("CREATE TABLE IF NOT EXISTS w_counter (id int PRIMARY KEY, n int)")
    s.execute("INSERT INTO w_counter VALUES (1, 0) ON CONFLICT (id) DO UPDATE SET n = 0")
    ms[2].freeze()
    try:
        workers = [session(servers=servers(ms)) for _ in range(6)]

        errors = []

        def work(w):
            try:
                w.execute("SET redlock.command_timeout = 300")
                for _ in range(10):
                    w.execute("BEGIN")
                    w.execute("SELECT redlock_acquire('w:three')")
                    n = w.value("SELECT n FROM w_counter WHERE id = 1")
                    w.execute("UPDATE w_counter SET n = %s WHERE id = 1", (n + 1,))
                    w.execute("COMMIT")
            except Exception as e:      # reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in workers]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.1, started + 30 - time.monotonic()))
        assert errors == []
        assert not any(t.is_alive() for t in threads), "waiters stuck: a split queue?"
        assert s.value("SELECT n FROM w_counter WHERE id = 1") == 60
    finally:
        ms[2].resume()


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def test_memory_stays_flat(session):
    """Many acquire/release cycles, contended and not, grow neither the
    backend's memory contexts nor its resident size (hiredis uses malloc)."""
    s = session()
    loop = """DO $$ BEGIN FOR i IN 1..%d LOOP
                PERFORM redlock_acquire_session('w:mem');
                PERFORM redlock_release('w:mem');
                PERFORM redlock_try_acquire('w:mem' || (i %% 7));
              END LOOP; END $$"""
    contexts = "SELECT sum(total_bytes) FROM pg_backend_memory_contexts"
    s.execute(loop % 5000)                                 # warm up
    before = (s.value(contexts), rss_kb(s.pid))
    s.execute(loop % 20000)
    after = (s.value(contexts), rss_kb(s.pid))
    assert after[0] - before[0] < 64 * 1024, (before, after)
    assert after[1] - before[1] < 1024, (before, after)
