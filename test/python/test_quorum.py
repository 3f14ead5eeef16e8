"""Redlock over several masters: a lock is held when a majority granted it,
requests go to all masters at once, a frozen or dead minority costs nothing,
a failed acquire leaves nothing behind (also on masters that were frozen),
and tokens keep increasing."""

import socket
import threading
import time

import pytest

from conftest import RedisProcess, backend_wait_event, servers, wait_for

FENCE = b"\x00fence"


def holders(ms, key):
    """The values each master holds for key (None where absent)."""
    return [m.client().get(key) for m in ms]


@pytest.mark.parametrize("n", [3, 5])
def test_acquire_and_release_reach_every_master(session, masters, n):
    ms = masters(n)
    s = session(servers=servers(ms))
    assert s.value("SELECT redlock_acquire_session('q:all', 60000)") > 0
    values = holders(ms, "q:all")
    assert None not in values and len(set(values)) == 1, "one owner value on every master"
    assert all(55000 < m.client().pttl("q:all") <= 60000 for m in ms)
    assert s.value("SELECT redlock_extend('q:all', 120000)") is True
    assert all(110000 < m.client().pttl("q:all") <= 120000 for m in ms)
    assert s.value("SELECT redlock_release('q:all')") is True
    wait_for(lambda: holders(ms, "q:all") == [None] * n,
             what="the release to reach every master")


@pytest.mark.parametrize("n", [3, 5])
def test_exclusive_across_sessions(session, masters, n):
    ms = masters(n)
    a, b = session(servers=servers(ms)), session(servers=servers(ms))
    a.execute("SELECT redlock_acquire_session('q:excl')")
    assert b.value("SELECT redlock_try_acquire_session('q:excl')") is None
    err = b.error("SELECT redlock_acquire('q:excl', NULL, 150)")
    assert err.pgcode == "55P03"
    # the attempt stops once a majority has refused: the rest is not awaited
    majority = n // 2 + 1
    assert f"0 of {n} Redis servers granted the lock, " in err.diag.message_detail
    refused = int(err.diag.message_detail.split("granted the lock, ")[1].split(" ")[0])
    assert refused >= majority
    a.execute("SELECT redlock_release('q:excl')")
    assert b.value("SELECT redlock_try_acquire_session('q:excl')") is not None


def timed(s, sql):
    started = time.monotonic()
    value = s.value(sql)
    return value, time.monotonic() - started


def test_one_frozen_master_costs_nothing(session, masters):
    """With one of three frozen, acquire, extend and release answer as soon
    as the other two have; the frozen one applies everything, in order,
    when it resumes."""
    ms = masters(3)
    s = session(servers=servers(ms))
    s.execute("SET redlock.command_timeout = 500")
    s.execute("SELECT redlock_acquire_session('q:warm')")       # connect to all
    s.execute("SELECT redlock_release('q:warm')")
    ms[2].freeze()
    try:
        token, t_acquire = timed(s, "SELECT redlock_acquire_session('q:frozen', 60000)")
        assert token > 0
        extended, t_extend = timed(s, "SELECT redlock_extend('q:frozen', 90000)")
        assert extended is True
        released, t_release = timed(s, "SELECT redlock_release('q:frozen')")
        assert released is True
        assert max(t_acquire, t_extend, t_release) < 0.5, "no wait for the frozen master"
        assert holders(ms[:2], "q:frozen") == [None, None]
    finally:
        ms[2].resume()
    # the frozen master received acquire, extend and release in order
    wait_for(lambda: ms[2].client().get(b"q:frozen" + FENCE) is not None,
             what="the resumed master to run the acquire")
    assert not ms[2].client().exists("q:frozen")
    # and the connection to it works normally again
    s.execute("SELECT redlock_acquire_session('q:after')")
    assert None not in holders(ms, "q:after")
    s.execute("SELECT redlock_release('q:after')")


def test_majority_frozen_fails_and_leaves_nothing(session, masters):
    ms = masters(3)
    s = session(servers=servers(ms))
    s.execute("SET redlock.command_timeout = 2000")
    s.execute("SELECT redlock_acquire_session('q:warm')")
    s.execute("SELECT redlock_release('q:warm')")
    ms[1].freeze()
    ms[2].freeze()
    try:
        started = time.monotonic()
        err = s.error("SELECT redlock_try_acquire('q:majority')")
        took = time.monotonic() - started
        # the frozen masters are waited for once, together: one command
        # timeout (one after another would be two, 4 s)
        assert 1.9 <= took < 3.5, f"one command timeout, not one per master: {took:.2f} s"
        assert err.pgcode == "08006"
        assert "could not reach a majority of the 3 Redis servers" in err.diag.message_primary
        assert "1 of 3 Redis servers granted the lock, 0 refused it (held elsewhere), 2 failed" \
            in err.diag.message_detail
        assert "no reply within 2000 ms" in err.diag.message_detail
        assert ms[0].client().get("q:majority") is None, "the partial lock was released"
        # a blocking acquire gives up as fast: no quorum could even be asked
        err = s.error("SELECT redlock_acquire('q:majority')")
        assert err.pgcode == "08006"
    finally:
        ms[1].resume()
        ms[2].resume()
    for m in ms[1:]:
        c = m.client()
        wait_for(lambda: c.get(b"q:majority" + FENCE) is not None,
                 what="the resumed masters to run the queued acquires")
        assert not c.exists("q:majority"), "the queued release ran after the acquire"
    # after they come back, locks just work: no reconnect error reaches SQL
    s.execute("SELECT redlock_acquire_session('q:back')")
    assert None not in holders(ms, "q:back")
    assert s.value("SELECT redlock_release('q:back')") is True


def test_majority_killed_fails_at_once_and_recovers(session, masters):
    ms = masters(3)
    s = session(servers=servers(ms))
    s.execute("SELECT redlock_acquire_session('q:warm')")
    s.execute("SELECT redlock_release('q:warm')")
    ms[0].kill()
    ms[1].kill()
    started = time.monotonic()
    err = s.error("SELECT redlock_acquire('q:killed')")
    assert time.monotonic() - started < 0.5
    assert err.pgcode == "08001"
    assert "Connection refused" in err.diag.message_detail
    assert ms[2].client().get("q:killed") is None
    ms[0].start()
    ms[1].start()
    s.execute("SELECT redlock_acquire_session('q:killed')")
    assert None not in holders(ms, "q:killed")
    s.execute("SELECT redlock_release('q:killed')")


def test_error_detail_counts_granted_refused_failed(session, masters):
    ms = masters(3)
    ms[1].client().set("q:mixed", "someone-else", px=60000)
    ms[2].kill()
    s = session(servers=servers(ms))
    # two masters answered (one yes, one no): "busy", not "broken"
    assert s.value("SELECT redlock_try_acquire('q:mixed')") is None
    err = s.error("SELECT redlock_acquire('q:mixed', NULL, 100)")
    assert err.pgcode == "55P03"
    detail = err.diag.message_detail
    assert "1 of 3 Redis servers granted the lock, 1 refused it (held elsewhere), 1 failed" in detail
    assert f'First failure: server "{ms[2].addr}": could not connect: Connection refused' in detail
    assert ms[0].client().get("q:mixed") is None, "the single grant was given back"


def test_lock_remembers_its_masters(session, masters):
    """Changing redlock.servers while holding a lock does not strand it."""
    first, second = masters(3), masters(3)
    s = session(servers=servers(first))
    s.execute("SELECT redlock_acquire_session('q:moved', 60000)")
    s.execute("SET redlock.servers = %s", (servers(second),))
    assert s.value("SELECT redlock_extend('q:moved', 90000)") is True
    assert all(m.client().pttl("q:moved") > 85000 for m in first)
    assert s.value("SELECT redlock_release('q:moved')") is True
    assert holders(first, "q:moved") == [None] * 3
    # new locks go to the new masters
    s.execute("SELECT redlock_acquire_session('q:new')")
    assert None not in holders(second, "q:new") and holders(first, "q:new") == [None] * 3


def test_restarted_masters_forget_locks(session, masters):
    """Documented behaviour: a master restarted without persistence forgets
    its locks.  One such restart (a minority) keeps the lock exclusive; a
    majority restarted before the TTL has passed lets another client in,
    which is why Redlock asks to delay restarts by the longest TTL."""
    ms = masters(3)
    a, b = session(servers=servers(ms)), session(servers=servers(ms))
    a.execute("SELECT redlock_acquire_session('q:restart', 60000)")
    ms[0].restart()
    assert b.value("SELECT redlock_try_acquire_session('q:restart')") is None
    ms[1].restart()
    assert b.value("SELECT redlock_try_acquire_session('q:restart')") is not None
    # A learns it when it releases: false, with a WARNING
    assert a.value("SELECT redlock_release('q:restart')") is False
    assert "had expired or been taken over" in a.conn.notices[-1]
    assert b.value("SELECT redlock_release('q:restart')") is True


def test_fencing_tokens_strictly_increase(session, masters):
    """Tokens grow with every acquisition, also while a minority of masters
    restarts and loses its counters, and when counters disagree."""
    ms = masters(3)
    s = session(servers=servers(ms))
    tokens = []
    for i in range(30):
        if i % 10 == 5:
            ms[i % 3].restart()
        tokens.append(s.value("SELECT redlock_acquire('q:fence')"))
    assert all(x < y for x, y in zip(tokens, tokens[1:])), tokens
    # one master's counter jumps ahead; with another master frozen the
    # quorum must include it, so the token follows it, and the write-back
    # raises a majority of counters to that token
    ahead = max(int(m.client().get(b"q:fence" + FENCE) or 0) for m in ms) + 1000
    ms[0].client().set(b"q:fence" + FENCE, ahead, keepttl=True)
    ms[2].freeze()
    try:
        token, took = timed(s, "SELECT redlock_acquire('q:fence')")
    finally:
        ms[2].resume()
    assert token == ahead + 1
    assert took < 0.5, "the write-back stops once a majority has the token"
    assert int(ms[1].client().get(b"q:fence" + FENCE)) >= token, "written back"
    assert 0 < ms[1].client().pttl(b"q:fence" + FENCE) <= 3600000, "with the key horizon"
    # every later holder's majority includes a master that knows the token
    later = [s.value("SELECT redlock_acquire('q:fence')") for _ in range(10)]
    assert all(x < y for x, y in zip([token] + later, later)), later


class BlackHole:
    """A port whose connects hang, like a host that drops packets: its one
    accept-queue slot is taken, so the kernel ignores further SYNs."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.filler = socket.create_connection(("127.0.0.1", self.port))

    def close(self):
        self.filler.close()
        self.listener.close()


def test_dead_master_is_backed_off(session, masters):
    """A master whose connects time out is not retried at every call: after
    one connect_timeout, calls fail at once for a short, growing pause, and
    it is used again once it answers."""
    healthy = masters(1)[0]
    hole = BlackHole()
    refused = RedisProcess()
    refused.kill()
    try:
        s = session(servers=f"{healthy.addr}, 127.0.0.1:{hole.port}, {refused.addr}")
        s.execute("SET redlock.connect_timeout = 300")
        started = time.monotonic()
        err = s.error("SELECT redlock_try_acquire('q:dead')")
        first = time.monotonic() - started
        assert err.pgcode == "08001" and first >= 0.25
        # a call made while the backoff lasts fails at once; the backoff
        # starts at 100 ms and doubles, so a slow machine soon makes one
        hole_addr = f"127.0.0.1:{hole.port}"
        for _ in range(6):
            until = s.value("SELECT extract(epoch FROM backoff_until) FROM redlock_servers"
                            " WHERE address = %s", (hole_addr,))
            assert until is not None, "the timed-out master was put in backoff"
            started, started_wall = time.monotonic(), time.time()
            err = s.error("SELECT redlock_try_acquire('q:dead')")
            if started_wall < float(until) - 0.02:
                assert time.monotonic() - started < 0.1, "in backoff: no new connect wait"
                assert "not retried for" in err.diag.message_detail
                break
        else:
            pytest.fail("never called while the master was in backoff")
    finally:
        hole.close()
        refused.start()
    # both come back (the dead one on its old port): used again soon
    revived = RedisProcess(hole.port)
    try:
        wait_for(lambda: s.value("SELECT redlock_try_acquire('q:dead') IS NOT NULL"),
                 timeout=8, interval=0.2, what="the masters to be used again")
    finally:
        revived.close()
        refused.close()


def node(ms, *args):
    import os
    import subprocess
    here = os.path.join(os.path.dirname(__file__), "..", "node")
    return subprocess.Popen(["node", "redlock_client.js", ",".join(m.addr for m in ms), *args],
                            cwd=here, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)


@pytest.mark.parametrize("n", [1, 3])
def test_node_redlock_and_redlock_exclude_each_other(session, admin, masters, n):
    ms = masters(n)
    s = session(servers=servers(ms))

    # node-redlock holds the key on the three masters
    holder = node(ms, "try", "q:node", "30000")
    assert holder.stdout.readline().startswith("acquired")
    assert s.value("SELECT redlock_try_acquire('q:node')") is None
    got = []
    waiter = threading.Thread(
        target=lambda: got.append(s.value("SELECT redlock_acquire_session('q:node')")))
    waiter.start()
    wait_for(lambda: backend_wait_event(admin, s.pid) == "Extension",
             what="the SQL side to wait")
    holder.stdin.write("release\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "released"
    waiter.join(10)
    assert got and got[0] > 0, "SQL got the lock once node-redlock let go"

    # now SQL holds it: node-redlock cannot take it
    other = node(ms, "try", "q:node", "30000")
    assert other.stdout.readline().strip() == "busy"
    other.wait(10)
    assert s.value("SELECT redlock_release('q:node')") is True
    again = node(ms, "try", "q:node", "30000")
    assert again.stdout.readline().startswith("acquired")
    again.stdin.close()
    assert again.stdout.readline().strip() == "released"
    for p in (holder, again):
        p.wait(10)
