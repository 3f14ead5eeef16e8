"""A bounded footprint in Redis: every key redlock creates (lock, fencing
counter, queue, deadlines, note) is gone within redlock.key_horizon after
the last lock on it ended, and fencing tokens still increase across the
expiry of a key's counter (README, "Fencing tokens" and "Keys redlock
leaves in Redis")."""

import time

from conftest import backend_wait_event, in_thread, servers, wait_for

FENCE = b"\x00fence"


def test_tokens_increase_across_the_expiry_of_the_counter(session, masters):
    """The counter lives for the horizon, which INCR does not lengthen; the
    next holder after it expired (forced here) or after Redis lost it
    still gets a larger token.  Horizons under 10 s leave the clocks no
    room and are refused."""
    (m,) = masters(1)
    c = m.client()
    s = session(servers=servers([m]))
    assert s.error("SET redlock.key_horizon = '9s'").pgcode == "22023"
    s.execute("SET redlock.key_horizon = '10s'")
    tokens = [s.value("SELECT redlock_acquire('h:fence')")]
    first_ttl = c.pttl(b"h:fence" + FENCE)
    assert 0 < first_ttl <= 10000, "the counter has the horizon as its TTL"
    tokens.append(s.value("SELECT redlock_acquire('h:fence')"))
    assert c.pttl(b"h:fence" + FENCE) <= first_ttl, "a token does not lengthen it"
    c.pexpire(b"h:fence" + FENCE, 1)             # the horizon passes
    wait_for(lambda: not c.exists(b"h:fence" + FENCE), what="the counter to expire")
    tokens.append(s.value("SELECT redlock_acquire('h:fence')"))
    m.restart()                                  # Redis without persistence loses it
    tokens.append(s.value("SELECT redlock_acquire('h:fence')"))
    assert all(x < y for x, y in zip(tokens, tokens[1:])), tokens


def test_a_counter_from_before_the_horizon_gets_one(session, masters):
    """A counter written by version 1.1 (small, no TTL) is moved into the
    clock range and given the horizon, so it too expires."""
    (m,) = masters(1)
    c = m.client()
    c.set(b"h:old" + FENCE, 41)
    s = session(servers=servers([m]))
    token = s.value("SELECT redlock_acquire('h:old')")
    assert token >= 10 ** 15
    assert 0 < c.pttl(b"h:old" + FENCE) <= 3600000
    assert s.value("SELECT redlock_acquire('h:old')") == token + 1


def test_masters_seeding_a_counter_agree(session, masters):
    """Three masters create a key's counter at once: they get the same
    token, so the first lock of a key needs no write-back.  After the
    counter expired on one master, or on all three, the next token is still
    larger."""
    ms = masters(3)
    s = session(servers=servers(ms))
    s.execute("SELECT redlock_acquire('h:warm-up')")    # connections, scripts
    for m in ms:
        m.client().config_resetstat()
    first = s.value("SELECT redlock_acquire('h:three')")
    assert [int(m.client().get(b"h:three" + FENCE)) for m in ms] == [first] * 3
    for m in ms:
        stats = m.client().info("commandstats")
        scripts = sum(stats.get(k, {}).get("calls", 0) for k in ("cmdstat_evalsha", "cmdstat_eval"))
        assert scripts == 2, "the acquire and its release at commit: no write-back"
    tokens = [first]
    ms[1].client().delete(b"h:three" + FENCE)          # expired on one master
    tokens.append(s.value("SELECT redlock_acquire('h:three')"))
    for m in ms:                                         # and on all of them
        m.client().delete(b"h:three" + FENCE)
    tokens.append(s.value("SELECT redlock_acquire('h:three')"))
    assert all(x < y for x, y in zip(tokens, tokens[1:])), tokens
    assert all(0 < m.client().pttl(b"h:three" + FENCE) for m in ms)


def test_redis_is_back_to_its_baseline_after_the_horizon(session, masters, admin):
    """A key that was waited for (queue, deadlines, note) and 100,000
    distinct keys locked and released: after the horizon Redis holds no
    key of ours, and used_memory is back where it was."""
    (m,) = masters(1)
    c = m.client()
    s = session(servers=servers([m]), autocommit=False)
    s.execute("SET redlock.key_horizon = '10s'")
    w = session(servers=servers([m]), autocommit=False)
    wpid = w.value("SELECT pg_backend_pid()")

    def contention(key):
        """a waiter queues on a key s holds, then gets it"""
        s.execute("SELECT redlock_acquire(%s)", (key,))
        t, got = in_thread(w.value, "SELECT redlock_acquire(%s, 30000, 10000)", (key,))
        wait_for(lambda: backend_wait_event(admin, wpid) == "Extension", what="the waiter")
        assert c.exists(key.encode() + b"\x00waiters")
        s.conn.commit()
        t.join(10)
        assert got[0] > 0
        w.conn.commit()

    contention("h:warm-up")              # every connection made, scripts loaded
    c.flushdb()
    base = c.info("memory")["used_memory"]

    contention("h:hot")
    s.conn.autocommit = True             # the DO block commits as it goes
    s.execute("DO $$ BEGIN FOR i IN 1 .. 100000 LOOP "
              "PERFORM redlock_acquire('h:k:' || i); "
              "IF i % 1000 = 0 THEN COMMIT; END IF; END LOOP; END $$")
    assert c.dbsize() > 1000, "counters outlive their locks, for the horizon"
    started = time.monotonic()
    wait_for(lambda: c.dbsize() == 0, timeout=60, interval=0.5, what="every key to expire")
    # the horizon (10 s) after the last lock, and Redis expires keys by sampling
    assert time.monotonic() - started < 20
    # Redis shrinks its tables in the background
    wait_for(lambda: abs(c.info("memory")["used_memory"] - base) < 100000, timeout=10,
             what=f"used_memory back to its baseline ({base} bytes)")
