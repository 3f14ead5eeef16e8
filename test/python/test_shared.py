"""Shared locks (redlock_acquire_shared and its forms) against real Redis
masters: readers share a key and exclude writers (ours and other clients'),
each reader's lease is its own, the key lives until the latest lease ends,
a writer waits for every reader, waiting readers are all woken together,
and the commit check, extend and the views cover shared holds."""

import os
import signal
import threading
import time

import psycopg2
import pytest
import redis

from conftest import backend_wait_event, in_thread, servers, wait_for

MARKER = b"\x00redlock:shared"


def readers(m, key):
    return m.client().zrange(key.encode() + b"\x00readers", 0, -1, withscores=True)


def test_readers_share_and_exclude_writers(session, masters):
    """Two readers over three masters hold the key together; an exclusive
    try, a SET NX and a redis-py Lock are all refused, and redis-py's
    release of a lock it does not hold answers "not owned" (the marker is a
    string, not a type its script chokes on).  After both readers release,
    the key is gone on every master and a writer gets it."""
    ms = masters(3)
    a, b, w = (session(servers=servers(ms)) for _ in range(3))
    ta = a.value("SELECT redlock_acquire_shared_session('sh:k', 60000)")
    tb = b.value("SELECT redlock_acquire_shared_session('sh:k', 30000)")
    assert ta > 0 and tb > ta, "every shared grant draws a token"
    for m in ms:
        assert m.client().get("sh:k") == MARKER
        assert len(readers(m, "sh:k")) == 2
        assert 55000 < m.client().pttl("sh:k") <= 60000, "the latest lease"
    assert w.value("SELECT redlock_try_acquire_session('sh:k')") is None
    c = ms[0].client()
    assert not c.set("sh:k", "other", nx=True, px=1000)
    lock = c.lock("sh:k", timeout=1)
    assert not lock.acquire(blocking=False)
    lock.local.token = b"not-ours"
    with pytest.raises(redis.exceptions.LockNotOwnedError):
        lock.release()
    assert a.value("SELECT mode FROM redlock_locks") == "shared"
    assert a.value("SELECT redlock_release_shared('sh:k')") is True
    assert all(len(readers(m, "sh:k")) == 1 for m in ms)
    assert all(m.client().pttl("sh:k") <= 30000 for m in ms), "the span shrinks"
    assert w.value("SELECT redlock_try_acquire_session('sh:k')") is None
    assert b.value("SELECT redlock_release_shared('sh:k')") is True
    assert not any(m.client().exists("sh:k", "sh:k\x00readers") for m in ms)
    assert w.value("SELECT redlock_try_acquire_session('sh:k')") > tb


def test_a_foreign_writer_excludes_readers(session, main_redis):
    """A lock held by another client (redis-py, the same wire format as
    node-redlock) keeps readers out until it is released."""
    s = session()
    lock = main_redis.lock("sh:foreign", timeout=10)
    assert lock.acquire(blocking=False)
    assert s.value("SELECT redlock_try_acquire_shared('sh:foreign')") is None
    lock.release()
    assert s.value("SELECT redlock_try_acquire_shared('sh:foreign')") > 0


def test_a_frozen_reader_holds_the_key_until_its_lease_ends(session, admin, main_redis):
    """Reader b (a 2 s lease) is frozen and cannot release; reader a
    releases.  A waiting writer gets the key when b's lease ends, not
    before (the key's TTL is the latest lease), and b's late release finds
    its hold lost."""
    a, b, w = session(), session(), session()
    assert a.value("SELECT redlock_acquire_shared_session('sh:frozen', 60000)") > 0
    assert b.value("SELECT redlock_acquire_shared_session('sh:frozen', 2000)") > 0
    granted = time.monotonic()
    assert a.value("SELECT redlock_release_shared('sh:frozen')") is True
    os.kill(b.pid, signal.SIGSTOP)
    try:
        token = w.value("SELECT redlock_acquire_session('sh:frozen', 10000, 10000)")
        waited = time.monotonic() - granted
    finally:
        os.kill(b.pid, signal.SIGCONT)
    assert token > 0
    assert 1.8 < waited < 4, waited
    assert main_redis.get("sh:frozen") != MARKER
    assert b.value("SELECT redlock_release_shared('sh:frozen')") is False


def test_waiting_readers_are_woken_together(session, admin, main_redis):
    """Three readers wait for a writer; its commit wakes all three (each
    counts a wake-up: its fallback timer would come up to a second later)
    and they hold the key together."""
    w = session(autocommit=False)
    rs = [session(autocommit=False) for _ in range(3)]
    w.value("SELECT redlock_acquire('sh:wake')")
    threads = []
    for r in rs:
        threads.append(in_thread(r.value, "SELECT redlock_acquire_shared('sh:wake', 30000, 20000)"))
    for r in rs:
        wait_for(lambda: backend_wait_event(admin, r.pid) == "Extension", what="a waiting reader")
    time.sleep(1.2)                 # queued, subscribed, past a first fallback retry
    w.conn.commit()
    for t, out in threads:
        t.join(10)
        assert out and isinstance(out[0], int) and out[0] > 0, out
    assert main_redis.zcard(b"sh:wake\x00readers") == 3, "all three at once"
    # woken by the release, not by a timer (fresh sessions: no earlier wake-up)
    assert all(r.value("SELECT wakeups FROM redlock_stats") >= 1 for r in rs)
    for r in rs:
        r.conn.commit()


def test_readers_behind_a_writer_that_gives_up_join_at_once(session, admin, main_redis):
    """A reader holds; a writer waits (1.5 s limit); a later reader queues
    behind the writer.  When the writer's wait ends, the reader behind it
    is woken and joins the holder at once (it counts a wake-up)."""
    a, w, late = session(autocommit=False), session(), session(autocommit=False)
    a.value("SELECT redlock_acquire_shared('sh:giveup')")
    tw, outw = in_thread(w.value, "SELECT redlock_acquire('sh:giveup', 30000, 1500)")
    wait_for(lambda: backend_wait_event(admin, w.pid) == "Extension", what="the writer")
    time.sleep(0.2)
    tl, outl = in_thread(late.value, "SELECT redlock_acquire_shared('sh:giveup', 30000, 20000)")
    wait_for(lambda: backend_wait_event(admin, late.pid) == "Extension", what="the late reader")
    tw.join(10)
    ended = time.monotonic()
    assert outw and outw[0].pgcode == "55P03", outw
    tl.join(10)
    assert outl and isinstance(outl[0], int), outl
    assert time.monotonic() - ended < 0.5
    assert main_redis.zcard(b"sh:giveup\x00readers") == 2
    assert late.value("SELECT wakeups FROM redlock_stats") >= 1
    a.conn.commit()
    late.conn.commit()


def test_a_writer_is_not_starved_by_readers(session, admin):
    """A reader holds; a writer waits; a reader that comes later queues
    behind the writer instead of joining the readers (control: with no
    writer waiting, the same late reader joins at once)."""
    a, w, late = session(autocommit=False), session(autocommit=False), session()
    a.value("SELECT redlock_acquire_shared('sh:fair')")
    assert late.value("SELECT redlock_try_acquire_shared('sh:fair')") > 0, "control: joins"
    t, out = in_thread(w.value, "SELECT redlock_acquire('sh:fair', 30000, 20000)")
    wait_for(lambda: backend_wait_event(admin, w.pid) == "Extension", what="the writer")
    time.sleep(0.2)
    assert late.value("SELECT redlock_try_acquire_shared('sh:fair')") is None, "behind the writer"
    a.conn.commit()
    t.join(10)
    assert out and out[0] > 0
    w.conn.commit()
    assert late.value("SELECT redlock_try_acquire_shared('sh:fair')") > 0


def test_commit_check_and_extend_cover_shared_holds(session, main_redis):
    """Each reader's lease is its own: a 1 s shared hold kept 1.5 s beside
    a 60 s one fails its commit with 40001 (lost, although the key is
    still shared), while the other commits; extended to 5 s first, the
    same short hold commits."""
    s = session(autocommit=False)
    long = session(autocommit=False)
    long.value("SELECT redlock_acquire_shared('sh:commit', 60000)")
    s.value("SELECT redlock_acquire_shared('sh:commit', 1000)")
    time.sleep(1.5)
    assert main_redis.get("sh:commit") == MARKER
    with pytest.raises(psycopg2.errors.SerializationFailure):
        s.conn.commit()
    s.conn.rollback()
    s.value("SELECT redlock_acquire_shared('sh:commit', 1000)")
    assert s.value("SELECT redlock_extend('sh:commit', 5000)") is True
    time.sleep(1.5)
    s.conn.commit()
    long.conn.commit()
    assert not main_redis.exists("sh:commit")


def test_modes_on_one_key_in_one_session(session):
    """A session holds a key in one mode: the other mode is refused (0A000)
    both ways, also for a lock lost meanwhile; each session hold is
    released by its own function; the Redisson format has no shared mode,
    and refuses it before touching Redis."""
    s = session()
    s.value("SELECT redlock_acquire_session('sh:modes')")
    err = s.error("SELECT redlock_acquire_shared_session('sh:modes')")
    assert err.pgcode == "0A000", err
    assert s.value("SELECT redlock_release_shared('sh:modes')") is False
    assert s.value("SELECT redlock_release('sh:modes')") is True
    s.value("SELECT redlock_acquire_shared_session('sh:modes', 500)")
    err = s.error("SELECT redlock_acquire_session('sh:modes')")
    assert err.pgcode == "0A000", err
    time.sleep(0.7)                 # the shared hold is lost
    err = s.error("SELECT redlock_acquire_session('sh:modes')")
    assert err.pgcode == "0A000", err
    assert s.value("SELECT redlock_release_shared('sh:modes')") is False  # lost
    s.execute("SET redlock.lock_format = 'redisson'")
    err = s.error("SELECT redlock_try_acquire_shared('sh:redisson')")
    assert err.pgcode == "0A000", err


def test_the_shared_functions_need_a_grant(session, admin):
    """As the exclusive ones: a role without EXECUTE cannot take a shared
    lock (42501)."""
    admin.execute("DROP ROLE IF EXISTS sh_nobody")
    admin.execute("CREATE ROLE sh_nobody")
    try:
        for f in ("redlock_acquire_shared(text, integer, integer)",
                  "redlock_try_acquire_shared(text, integer)",
                  "redlock_acquire_shared_session(text, integer, integer)",
                  "redlock_try_acquire_shared_session(text, integer)",
                  "redlock_release_shared(text)"):
            assert admin.value("SELECT has_function_privilege('sh_nobody', %s, 'EXECUTE')",
                               (f,)) is False, f
    finally:
        admin.execute("DROP ROLE sh_nobody")


def test_a_partial_shared_grant_is_given_back_and_queued(session, masters):
    """Three masters, another client's lock on two of them: the third grants
    the shared request, which is no majority, so it is given back there and
    the waiter stays queued on all three (as a shared waiter); once the
    other client lets go, the reader gets the key on every master.  A
    frozen master then costs a reader nothing (two of three suffice)."""
    ms = masters(3)
    for m in ms[:2]:
        m.client().set("sh:part", "foreign", px=60000)
    s = session(servers=servers(ms))
    t, out = in_thread(s.value, "SELECT redlock_acquire_shared_session('sh:part', 30000, 20000)")
    wait_for(lambda: all(m.client().zcard(b"sh:part\x00waiters") == 1 for m in ms),
             what="the reader queued on every master")
    assert ms[2].client().get("sh:part") is None, "the partial grant was given back"
    member = ms[2].client().zrange(b"sh:part\x00waiters", 0, -1)[0]
    assert member.endswith(b"\x00s"), member
    for m in ms[:2]:
        m.client().delete("sh:part")
    t.join(10)
    assert out and isinstance(out[0], int) and out[0] > 0, out
    assert all(m.client().get("sh:part") == MARKER for m in ms)
    ms[0].freeze()
    try:
        other = session(servers=servers(ms))
        other.execute("SET redlock.command_timeout = 300")
        assert other.value("SELECT redlock_acquire_shared_session('sh:part')") > 0
        assert other.value("SELECT redlock_release_shared('sh:part')") is True
    finally:
        ms[0].resume()
    assert s.value("SELECT redlock_release_shared('sh:part')") is True
