"""redlock.lock_format = redisson: SQL shares keys with Redisson's RLock.

The other side is rlock_client.py, which speaks RLock's protocol (hash,
re-entry count, watchdog, unlock message on the lock's channel) from
several threads, as a Java service would."""

import re
import threading
import time

import psycopg2
import pytest

from conftest import (MAIN_REDIS_PORT, SLOW, counter_race, cursor_as, drop_roles, in_thread,
                      redlock_side, servers, unlocked_side, wait_for)
from rlock_client import RedissonClient, channel_name

UUID_FIELD = rb"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}:%d"   # v4


@pytest.fixture
def redisson():
    """Factory of Redisson-like clients of the main Redis:
    redisson(watchdog_ms=30000, port=MAIN_REDIS_PORT)."""
    made = []

    def make(watchdog_ms=30000, port=MAIN_REDIS_PORT):
        made.append(RedissonClient(port, watchdog_ms=watchdog_ms))
        return made[-1]

    yield make
    for c in made:
        c.close()


def in_format(session, fmt="redisson", servers=None, autocommit=True):
    s = session(servers, autocommit)
    s.execute("SET redlock.lock_format = %s", (fmt,))
    if not autocommit:
        s.conn.commit()                 # a rollback must not take the setting back
    return s


def subscribers(r, channel):
    return dict(r.pubsub_numsub(channel)).get(channel.encode(), 0)


def asleep_waiting(r, key):
    """Wait until every backend that waits for key has run an attempt in
    Redis after this call (its queue entry's deadline moved): it is asleep or
    about to be, so a release now is heard as a wake-up, not found by an
    attempt already on its way.  (A backend's fallback timer is at most
    1 s: the queue refresh.)"""
    deadlines = key.encode() + b"\x00waitexp"
    first = wait_for(lambda: dict(r.zrange(deadlines, 0, -1, withscores=True)),
                     what="a waiter in the queue")

    def all_moved():
        now = dict(r.zrange(deadlines, 0, -1, withscores=True))
        return all(now.get(w) not in (None, at) for w, at in first.items())
    wait_for(all_moved, timeout=3, what="an attempt of every waiter")


def slow_fallback(s):
    """Only a wake-up ends s's waits soon: its fallback timer is as long as
    it can be (1 s, the queue refresh, with retry_delay far away)."""
    s.execute("SET redlock.retry_delay = '60s'")
    s.execute("SET redlock.retry_jitter = 0")
    return s


def test_sql_lock_is_a_redisson_rlock(session, main_redis, redisson):
    """What SQL writes is what RLock writes: a hash with one field, UUID:thread
    (the thread is the backend's pid), a count of 1, and a TTL; Redisson
    sees it locked and cannot take it until the commit."""
    s = in_format(session, autocommit=False)
    s.value("SELECT redlock_acquire('rs:shape', 5000)")
    assert main_redis.type("rs:shape") == b"hash"
    (field, count), = main_redis.hgetall("rs:shape").items()
    assert re.fullmatch(UUID_FIELD % s.pid, field), field
    assert count == b"1"
    assert 0 < main_redis.pttl("rs:shape") <= 5000

    lock = redisson().get_lock("rs:shape")
    assert lock.is_locked()
    assert not lock.try_lock()
    s.conn.commit()
    assert not main_redis.exists("rs:shape")
    assert lock.try_lock()
    assert lock.unlock()


def test_every_hold_has_its_own_identity(session, main_redis):
    s = in_format(session)
    s.execute("SELECT redlock_acquire_session('rs:id')")
    first = main_redis.hkeys("rs:id")
    s.execute("SELECT redlock_release('rs:id')")
    s.execute("SELECT redlock_acquire_session('rs:id')")
    second = main_redis.hkeys("rs:id")
    s.execute("SELECT redlock_release('rs:id')")
    assert first != second
    assert first[0].endswith(b":%d" % s.pid) and second[0].endswith(b":%d" % s.pid)


def test_redisson_reentrancy_holds_until_the_last_unlock(session, redisson):
    s = in_format(session)
    lock = redisson().get_lock("rs:reent")
    assert lock.try_lock() and lock.try_lock()
    assert lock.hold_count() == 2
    assert s.value("SELECT redlock_try_acquire('rs:reent')") is None
    assert lock.unlock() is False            # one re-entry left
    assert s.value("SELECT redlock_try_acquire('rs:reent')") is None
    assert lock.unlock() is True
    assert s.value("SELECT redlock_try_acquire('rs:reent')") is not None


def test_sql_reentrancy_is_counted_by_the_backend(session, main_redis, redisson):
    """SQL's re-entries and savepoints are counted in the backend: the hash
    keeps a count of 1 and goes only when the last hold ends."""
    s = in_format(session, autocommit=False)
    s.value("SELECT redlock_acquire('rs:sqlre')")
    s.value("SELECT redlock_acquire('rs:sqlre')")
    s.execute("SAVEPOINT a")
    s.value("SELECT redlock_acquire('rs:sqlre')")
    s.execute("ROLLBACK TO a")
    assert list(main_redis.hvals("rs:sqlre")) == [b"1"]
    lock = redisson().get_lock("rs:sqlre")
    assert not lock.try_lock()
    s.conn.commit()
    assert lock.try_lock()
    lock.unlock()


def test_redisson_threads_and_sql_exclude_each_other(session, redisson):
    """Three Redisson threads (one client) and three SQL sessions add to
    one counter under the lock rs:counter; the control takes no lock."""
    lock = redisson().get_lock("rs:counter")

    def java_thread(s, bump):
        assert lock.try_lock(wait_s=60)
        bump(s)
        lock.unlock()

    assert counter_race(session, [unlocked_side] * 6) < 48, "the control loses updates"
    assert counter_race(session, [java_thread, redlock_side("rs:counter", "redisson")] * 3) == 48


def test_sql_release_wakes_a_redisson_waiter(session, main_redis, redisson):
    """The commit's release publishes Redisson's unlock message: the
    blocked Redisson thread takes the lock at once, not when the TTL of 30 s
    ends."""
    s = in_format(session, autocommit=False)
    s.value("SELECT redlock_acquire('rs:wake-j', 30000)")
    lock = redisson().get_lock("rs:wake-j")

    def java():
        got = lock.try_lock(wait_s=20)
        lock.unlock()
        return got

    t, outcome = in_thread(java)
    assert lock.sleeping.wait(10), "the Redisson thread never waited"
    s.conn.commit()
    t.join(30)
    assert outcome == [True]
    assert (lock.woken_by_message, lock.woken_by_timer) == (1, 0)


@pytest.mark.parametrize("fmt,woken", [("redisson", 1), ("string", 0)])
def test_redisson_unlock_wakes_a_sql_waiter(session, main_redis, redisson, fmt, woken):
    """A waiting backend in redisson format listens on the lock's Redisson
    channel: Redisson's unlock wakes it (redlock_stats.wakeups).  The
    control: in string format the hash also counts as held, but nothing
    wakes the waiter; its fallback timer finds the key free."""
    lock = redisson().get_lock("rs:wake-s")
    assert lock.try_lock()
    s = slow_fallback(in_format(session, fmt))
    before = s.value("SELECT wakeups FROM redlock_stats")
    t, outcome = in_thread(s.value, "SELECT redlock_acquire_session('rs:wake-s', 30000, 20000)")
    if fmt == "redisson":
        wait_for(lambda: subscribers(main_redis, channel_name("rs:wake-s")) == 1,
                 what="the backend to subscribe to the Redisson channel")
    asleep_waiting(main_redis, "rs:wake-s")
    lock.unlock()
    t.join(30)
    assert outcome[0] is not None and not isinstance(outcome[0], psycopg2.Error)
    assert s.value("SELECT wakeups FROM redlock_stats") - before == woken
    s.execute("SELECT redlock_release('rs:wake-s')")


def test_a_waiter_listens_on_the_channel_of_the_key_it_waits_for(session, main_redis,
                                                                  redisson):
    """One backend waits for two keys in turn: each Redisson unlock wakes
    it, and it listens on each key's channel only while it waits for that
    key (an idle backend must not collect every unlock message of the last
    key it waited for)."""
    client = redisson()
    s = slow_fallback(in_format(session))
    for key in ("rs:swap-a", "rs:swap-b"):
        lock = client.get_lock(key)
        assert lock.try_lock()
        before = s.value("SELECT wakeups FROM redlock_stats")
        t, outcome = in_thread(s.value, "SELECT redlock_acquire_session(%s, 30000, 20000)",
                               (key,))
        wait_for(lambda: subscribers(main_redis, channel_name(key)) == 1,
                 what=f"the backend to subscribe for {key}")
        asleep_waiting(main_redis, key)
        lock.unlock()
        t.join(30)
        assert isinstance(outcome[0], int)
        assert s.value("SELECT wakeups FROM redlock_stats") - before == 1
        s.execute("SELECT redlock_release(%s)", (key,))
        assert subscribers(main_redis, channel_name(key)) == 0


@pytest.mark.parametrize("fmt", ["string", "redisson"])
def test_a_grant_given_back_does_not_wake_the_waiter(session, masters, fmt):
    """Another client holds the key on two masters of three: a waiter gets
    the third, gives it back (no majority) and sleeps.  The give-back must
    not wake the waiter itself: in redisson format it publishes Redisson's
    unlock message, which the waiter listens to (without the skip mark it
    woke itself thousands of times a second)."""
    ms = masters(3)
    for m in ms[:2]:
        if fmt == "string":
            m.client().set("rs:minority", "another-owner", px=60000)
        else:
            m.client().hset("rs:minority", "8743c9c0-0795-4907-87fd-6c719a6b4586:1", 1)
            m.client().pexpire("rs:minority", 60000)
    s = slow_fallback(in_format(session, fmt, servers(ms)))
    before = s.value("SELECT wakeups FROM redlock_stats")
    assert s.error("SELECT redlock_acquire('rs:minority', 30000, 1000)").pgcode == "55P03"
    assert s.value("SELECT wakeups FROM redlock_stats") == before
    assert ms[2].client().get(b"rs:minority\x00fence"), "the third master granted it"
    assert not ms[2].client().exists("rs:minority"), "and the grant was given back"


@pytest.mark.parametrize("fmt", ["string", "redisson"])
def test_a_release_wakes_only_the_first_waiter(session, admin, main_redis, fmt):
    """Wake-one in both formats: an SQL release wakes the first waiter of
    the queue; those behind it sleep on (their fallback is 1 s away)."""
    holder = in_format(session, fmt)
    holder.execute("SELECT redlock_acquire_session('rs:herd')")
    waiters = [slow_fallback(in_format(session, fmt)) for _ in range(4)]
    threads = []
    for i, w in enumerate(waiters):
        threads.append(in_thread(w.value, "SELECT redlock_acquire_session('rs:herd', 30000, 20000)"))
        wait_for(lambda: main_redis.zcard(b"rs:herd\x00waiters") == i + 1, what="the queue")
    asleep_waiting(main_redis, "rs:herd")
    holder.execute("SELECT redlock_release('rs:herd')")
    threads[0][0].join(10 * SLOW)
    assert isinstance(threads[0][1][0], int), "the first waiter got the key"
    admin.execute("SELECT pg_cancel_backend(pid) FROM unnest(%s::int[]) pid",
                  ([w.pid for w in waiters[1:]],))
    for t, _ in threads[1:]:
        t.join(10 * SLOW)
    assert [w.value("SELECT wakeups FROM redlock_stats") for w in waiters[1:]] == [0, 0, 0]


ACL_COMMANDS = ["+eval", "+evalsha", "+subscribe", "+set", "+get", "+del", "+exists", "+incr",
                "+pexpire", "+pttl", "+time", "+zadd", "+zrem", "+zrange", "+zrangebyscore",
                "+publish"]


def tenant_session(session, r, channels, extra=("+unsubscribe",)):
    """A session in redisson format, under prefix t:, as an ACL user of r
    with the README's commands for that format and these channel rights."""
    r.client().acl_setuser("tenant", enabled=True, passwords=["+pw"], keys=["~t:*"],
                           channels=channels,
                           commands=ACL_COMMANDS + ["+type", "+hset", "+hexists", *extra])
    s = in_format(session, servers=f"redis://tenant:pw@127.0.0.1:{r.port}")
    s.execute("SET redlock.key_prefix = 't:'")
    return slow_fallback(s)


def test_an_acl_user_as_the_readme_says(session, redis_server, redisson):
    """The README's ACL for a tenant in redisson format: locks, SQL wake-ups
    and Redisson's wake-ups all work; Redisson's channels of other prefixes
    stay out of reach."""
    r = redis_server()
    a = tenant_session(session, r, ["t:redlock:wake:*", "redisson_lock__channel:{t:*"])
    b = tenant_session(session, r, ["t:redlock:wake:*", "redisson_lock__channel:{t:*"])
    java = redisson(port=r.port).get_lock("t:k")
    assert java.try_lock()
    before = a.value("SELECT wakeups FROM redlock_stats")
    t, outcome = in_thread(a.value, "SELECT redlock_acquire_session('k', 30000, 20000)")
    wait_for(lambda: subscribers(r.client(), channel_name("t:k")) == 1, what="a to subscribe")
    asleep_waiting(r.client(), "t:k")
    java.unlock()
    t.join(30)
    assert isinstance(outcome[0], int)
    assert a.value("SELECT wakeups FROM redlock_stats") - before == 1
    assert b.value("SELECT redlock_try_acquire('k')") is None
    # after the wait: off the key's channel, still on its own wake channel
    wait_for(lambda: subscribers(r.client(), channel_name("t:k")) == 0, what="the unsubscribe")
    assert [subscribers(r.client(), c.decode()) for c in wake_channels(r)] == [1]
    with pytest.raises(Exception):
        r.client(username="tenant", password="pw").publish("redisson_lock__channel:{u:k}", "0")


def test_a_refused_redisson_channel_keeps_the_queue_wake_ups(session, redis_server, redisson):
    """An ACL without Redisson's channels: SUBSCRIBE to the key channel is
    refused, but the subscription connection stays, so an SQL release still
    wakes the SQL waiter at once; a Redisson unlock is found by the fallback
    timer instead."""
    r = redis_server()
    a = tenant_session(session, r, ["t:redlock:wake:*"])
    b = tenant_session(session, r, ["t:redlock:wake:*"])
    a.execute("SELECT redlock_acquire_session('k')")
    before = b.value("SELECT wakeups FROM redlock_stats")
    t, outcome = in_thread(b.value, "SELECT redlock_acquire_session('k', 30000, 20000)")
    wait_for(lambda: r.client().exists(b"t:k\x00waiters"), what="b to queue")
    asleep_waiting(r.client(), "t:k")
    a.execute("SELECT redlock_release('k')")
    t.join(30)
    assert isinstance(outcome[0], int)
    assert b.value("SELECT wakeups FROM redlock_stats") - before == 1
    b.execute("SELECT redlock_release('k')")

    java = redisson(port=r.port).get_lock("t:k")
    assert java.try_lock()
    before = b.value("SELECT wakeups FROM redlock_stats")
    t, outcome = in_thread(b.value, "SELECT redlock_acquire_session('k', 30000, 20000)")
    wait_for(lambda: r.client().exists(b"t:k\x00waiters"), what="b to queue")
    asleep_waiting(r.client(), "t:k")
    java.unlock()
    t.join(30)
    assert isinstance(outcome[0], int), "the fallback timer found the key free"
    assert b.value("SELECT wakeups FROM redlock_stats") == before
    assert [subscribers(r.client(), c.decode()) for c in wake_channels(r)] == [1]


def wake_channels(r):
    return sorted(r.client().pubsub_channels("t:redlock:wake:*"))


def test_an_acl_without_unsubscribe_keeps_the_subscription(session, redis_server, redisson):
    """UNSUBSCRIBE refused at the end of each wait (an ACL written before
    the redisson format asked for it): the subscription connection stays,
    with the backend's wake channel, and the next waits still hear both
    SQL releases and Redisson's unlocks."""
    r = redis_server()
    chans = ["t:redlock:wake:*", "redisson_lock__channel:{t:*"]
    a = tenant_session(session, r, chans, extra=())
    java = redisson(port=r.port).get_lock("t:k")
    for _ in range(3):
        assert java.try_lock()
        before = a.value("SELECT wakeups FROM redlock_stats")
        t, outcome = in_thread(a.value, "SELECT redlock_acquire_session('k', 30000, 20000)")
        asleep_waiting(r.client(), "t:k")
        java.unlock()
        t.join(30)
        assert isinstance(outcome[0], int)
        assert a.value("SELECT wakeups FROM redlock_stats") - before == 1
        a.execute("SELECT redlock_release('k')")
        assert [subscribers(r.client(), c.decode()) for c in wake_channels(r)] == [1]


@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_a_wait_ended_by_an_error_gives_up_the_key_channel(session, admin, main_redis,
                                                            redisson, how):
    """A cancelled or timed-out wait leaves no subscription behind: an idle
    backend must not collect the key's unlock messages."""
    key = f"rs:gone-{how}"
    lock = redisson().get_lock(key)
    assert lock.try_lock()
    s = slow_fallback(in_format(session))
    wait = 1000 * SLOW if how == "timeout" else 60000
    t, outcome = in_thread(s.value, "SELECT redlock_acquire_session(%s, 30000, %s)", (key, wait))
    wait_for(lambda: subscribers(main_redis, channel_name(key)) == 1, what="the subscription")
    if how == "cancel":
        admin.execute("SELECT pg_cancel_backend(%s)", (s.pid,))
    t.join(30 * SLOW)
    assert isinstance(outcome[0], psycopg2.Error)
    wait_for(lambda: subscribers(main_redis, channel_name(key)) == 0, what="the unsubscribe")
    lock.unlock()


def test_a_stale_queue_entry_does_not_swallow_a_redisson_unlock(session, redis_server,
                                                                 redisson):
    """B's wake channel is left in another key's queue (a master that
    refused an acquire keeps the entry for a while).  A release of that key
    marks B, but the mark names that key: the Redisson unlock of the key B
    waits for still wakes it at once."""
    r = redis_server()
    lock = redisson(port=r.port).get_lock("k2")
    assert lock.try_lock()
    b = slow_fallback(in_format(session, servers=r.addr))
    h = in_format(session, servers=r.addr)
    h.execute("SELECT redlock_acquire_session('k1')")
    before = b.value("SELECT wakeups FROM redlock_stats")
    t, outcome = in_thread(b.value, "SELECT redlock_acquire_session('k2', 30000, 20000)")
    wait_for(lambda: subscribers(r.client(), channel_name("k2")) == 1, what="b to subscribe")
    stale = r.client().pubsub_channels("redlock:wake:*")[0]
    r.client().zadd(b"k1\x00waiters", {stale: 1})
    r.client().zadd(b"k1\x00waitexp", {stale: 1})
    asleep_waiting(r.client(), "k2")
    h.execute("SELECT redlock_release('k1')")
    lock.unlock()
    t.join(30)
    assert isinstance(outcome[0], int)
    assert b.value("SELECT wakeups FROM redlock_stats") - before == 1


def test_the_watchdog_keeps_a_redisson_lock_from_sql(session, redisson):
    """A Redisson lock taken without a lease is renewed by its watchdog:
    SQL stays out for several leases, and gets in after the unlock."""
    lock = redisson(watchdog_ms=600).get_lock("rs:dog")
    done = threading.Event()
    held = []

    def java():
        held.append(lock.try_lock())
        done.wait(30)
        lock.unlock()

    t = threading.Thread(target=java)
    t.start()
    wait_for(lambda: held, what="the Redisson thread to lock")
    s = in_format(session)
    end = time.monotonic() + 2.0                   # > 3 leases of 600 ms
    while time.monotonic() < end:
        assert s.value("SELECT redlock_try_acquire('rs:dog')") is None
        time.sleep(0.1)
    done.set()
    t.join(10)
    assert s.value("SELECT redlock_try_acquire('rs:dog')") is not None


def test_expired_locks_in_both_directions(session, main_redis, redisson):
    """A Redisson lease that runs out lets SQL in; an SQL lock that runs out
    lets Redisson in, and the SQL transaction then cannot commit."""
    lock = redisson().get_lock("rs:exp")
    assert lock.try_lock(lease_ms=300)
    s = in_format(session, autocommit=False)
    assert s.value("SELECT redlock_acquire('rs:exp', 300, 5000)") is not None
    time.sleep(0.4)
    assert lock.try_lock()
    with pytest.raises(psycopg2.errors.SerializationFailure):
        s.conn.commit()
    assert lock.is_held_by_thread(threading.get_ident())
    assert lock.unlock()


@pytest.mark.parametrize("fmt", ["redisson", "string"])
def test_a_key_of_the_other_format_is_held(session, main_redis, redisson, fmt):
    """Each format meeting the other's lock: try returns NULL, a wait runs
    out with 55P03, and the key is left exactly as it was."""
    key = f"rs:other-{fmt}"
    if fmt == "redisson":
        main_redis.set(key, "a-node-redlock-owner", px=30000)    # SET NX PX
        other = (b"string", b"a-node-redlock-owner")
    else:
        assert redisson().get_lock(key).try_lock()
        other = (b"hash", main_redis.hgetall(key))
    look = lambda: (main_redis.type(key),               # noqa: E731
                    main_redis.get(key) if fmt == "redisson" else main_redis.hgetall(key))
    s = in_format(session, fmt)
    assert s.value("SELECT redlock_try_acquire(%s)", (key,)) is None
    assert s.error("SELECT redlock_acquire(%s, NULL, 200)", (key,)).pgcode == "55P03"
    assert look() == other
    assert main_redis.pttl(key) > 20000


@pytest.mark.parametrize("fmt", ["redisson", "string"])
def test_release_and_extend_leave_the_other_format_alone(session, main_redis, redisson, fmt):
    """Our lock expired and a client of the other family took the key:
    extend and release report it lost, never an error, and do not touch it."""
    key = f"rs:taken-{fmt}"
    s = in_format(session, fmt)
    s.execute("SELECT redlock_acquire_session(%s, 100)", (key,))
    time.sleep(0.2)
    if fmt == "redisson":
        main_redis.set(key, "someone", px=30000)
    else:
        assert redisson().get_lock(key).try_lock()
    kind = main_redis.type(key)
    assert s.value("SELECT redlock_extend(%s, 1000)", (key,)) is False
    assert s.value("SELECT redlock_release(%s)", (key,)) is False
    assert main_redis.type(key) == kind and main_redis.pttl(key) > 20000


def test_fencing_tokens_and_the_queue_work_in_redisson_format(session, main_redis):
    """The fencing counter and the fair queue live in companion keys that
    Redisson ignores: tokens increase, and waiters are served in order."""
    a, b, c = (in_format(session) for _ in range(3))
    t1 = a.value("SELECT redlock_acquire_session('rs:fq')")
    tb, ob = in_thread(b.value, "SELECT redlock_acquire_session('rs:fq', 30000, 20000)")
    wait_for(lambda: main_redis.zcard(b"rs:fq\x00waiters") == 1, what="b to queue")
    tc, oc = in_thread(c.value, "SELECT redlock_acquire_session('rs:fq', 30000, 20000)")
    wait_for(lambda: main_redis.zcard(b"rs:fq\x00waiters") == 2, what="c to queue")
    a.execute("SELECT redlock_release('rs:fq')")
    tb.join(10)
    assert ob[0] > t1 and not oc                    # b first, c still waits
    assert main_redis.type("rs:fq") == b"hash"
    b.execute("SELECT redlock_release('rs:fq')")
    tc.join(10)
    assert oc[0] > ob[0]
    c.execute("SELECT redlock_release('rs:fq')")


def test_quorum_of_redisson_locks_on_several_masters(session, masters, redisson):
    """On three masters each gets the hash; Redisson holding the key on two
    of them (a Java service locking each master in turn) keeps SQL out."""
    ms = masters(3)
    s = in_format(session, servers=servers(ms))
    s.execute("SELECT redlock_acquire_session('rs:q')")
    assert [m.client().type("rs:q") for m in ms] == [b"hash"] * 3
    assert s.value("SELECT redlock_release('rs:q')") is True
    assert not any(m.client().exists("rs:q") for m in ms)

    java = [redisson(port=m.port).get_lock("rs:q") for m in ms[:2]]
    assert all(lock.try_lock() for lock in java)
    assert s.value("SELECT redlock_try_acquire('rs:q')") is None
    for lock in java:
        lock.unlock()
    assert s.value("SELECT redlock_try_acquire('rs:q')") is not None


def test_a_redisson_fair_lock_and_sql_exclude_each_other(session, main_redis, redisson):
    """Redisson's fair lock writes the same hash as RLock: SQL in redisson
    format and a fair lock exclude each other.  Its own queue is not ours:
    a free key goes to SQL even while fair-lock threads queue for it (the
    README says so)."""
    fair = redisson().get_fair_lock("rs:fair")
    s = in_format(session, autocommit=False)
    assert fair.try_lock()
    assert s.value("SELECT redlock_try_acquire('rs:fair')") is None
    s.conn.rollback()
    assert fair.unlock()
    assert s.value("SELECT redlock_try_acquire('rs:fair')") is not None
    assert not fair.try_lock()
    s.conn.commit()
    assert fair.try_lock()
    assert fair.unlock()

    main_redis.rpush("redisson_lock_queue:{rs:fair}", "another-jvm:7")
    main_redis.zadd("redisson_lock_timeout:{rs:fair}", {"another-jvm:7": time.time() * 1000 + 60000})
    assert not fair.try_lock(), "the fair lock keeps the key for its queue"
    assert s.value("SELECT redlock_try_acquire('rs:fair')") is not None
    s.conn.commit()
    main_redis.delete("redisson_lock_queue:{rs:fair}", "redisson_lock_timeout:{rs:fair}")


def test_lock_format_is_set_by_superusers(session, database):
    """It decides who excludes whom: like redlock.key_prefix, only a
    superuser sets it, for a role, a database or a session."""
    admin = session()
    drop_roles(admin.conn.cursor(), ["rs_app"])
    admin.execute("CREATE ROLE rs_app LOGIN")
    try:
        admin.execute("GRANT USAGE ON SCHEMA public TO rs_app")
        admin.execute("GRANT EXECUTE ON FUNCTION redlock_try_acquire(text, integer) TO rs_app")
        cur = cursor_as(database, "rs_app")
        cur.execute("SELECT redlock_try_acquire('rs:priv')")     # loads the library
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("SET redlock.lock_format = 'redisson'")
        cur.connection.close()
        admin.execute("ALTER ROLE rs_app SET redlock.lock_format = 'redisson'")
        cur = cursor_as(database, "rs_app")
        cur.execute("SHOW redlock.lock_format")
        assert cur.fetchone()[0] == "redisson"
        cur.connection.close()
        assert admin.error("SET redlock.lock_format = 'hash'").pgcode == "22023"
    finally:
        drop_roles(admin.conn.cursor(), ["rs_app"])
