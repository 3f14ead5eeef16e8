"""What a DBA can see: redlock_locks, redlock_servers, redlock_stats (per
backend, without preloading), redlock_stats_cluster (all backends, with
redlock in shared_preload_libraries), and DEBUG lines with timings."""

from datetime import timedelta

import psycopg2
import pytest

from conftest import RedisProcess, backend_wait_event, in_thread, servers, wait_for

from test_quorum import BlackHole

def row(s, sql, args=None):
    with s.conn.cursor() as cur:
        cur.execute(sql, args)
        names = [d[0] for d in cur.description]
        r = cur.fetchone()
        return dict(zip(names, r)) if r else None


def test_locks_view(session, masters):
    ms = masters(3)
    s = session(servers=servers(ms))
    assert s.execute("SELECT * FROM redlock_locks") == []
    s.execute("SELECT redlock_acquire_session('i:both', 20000)")
    s.execute("SELECT redlock_acquire_session('i:both')")
    ms[2].freeze()
    try:
        s.execute("BEGIN")
        token = s.value("SELECT redlock_acquire('i:both')")
        s.execute("SELECT redlock_acquire('i:xact', 5000)")
        both = row(s, "SELECT *, extract(epoch FROM valid_until - acquired_at) AS validity "
                      "FROM redlock_locks WHERE key = 'i:both'")
        xact = row(s, "SELECT * FROM redlock_locks WHERE key = 'i:xact'")
        s.execute("COMMIT")
    finally:
        ms[2].resume()
    assert both["scope"] == "both" and both["token"] == token
    assert (both["transaction_holds"], both["session_holds"]) == (1, 2)
    assert 19.5 < both["validity"] < 20.0           # TTL minus time and drift
    assert both["masters"] == [m.addr for m in ms]
    # the masters known to have granted: at least a majority (an early stop
    # does not wait for the last yes)
    assert set(both["granted_by"]) <= set(both["masters"]) and len(both["granted_by"]) >= 2
    assert xact["scope"] == "transaction" and not xact["lost"]
    assert xact["granted_by"] == [ms[0].addr, ms[1].addr], "the frozen master did not grant"
    assert [r[0] for r in s.execute("SELECT key FROM redlock_locks")] == ["i:both"]
    s.execute("SELECT redlock_release_all()")


def test_servers_view(session, admin, redis_server):
    up, down = redis_server(), redis_server()
    hole = BlackHole()
    try:
        s = session(servers=up.addr)
        s.execute("SELECT redlock_acquire('i:warm')")     # connected, at its own pace
        s.execute("SET redlock.servers = %s", (f"{up.addr}, {down.addr}, 127.0.0.1:{hole.port}",))
        s.execute("SET redlock.connect_timeout = 200")
        view = {r["address"]: r for r in [
            dict(zip(["address", "configured", "state"], x))
            for x in s.execute("SELECT address, configured, state FROM redlock_servers")]}
        assert all(v["configured"] for v in view.values())
        assert view[up.addr]["state"] == "connected"
        assert all(v["state"] == "disconnected" for a, v in view.items() if a != up.addr)

        down.kill()
        s.error("SELECT redlock_try_acquire('i:srv')")            # no majority
        r = row(s, "SELECT * FROM redlock_servers WHERE address = %s", (up.addr,))
        assert r["state"] == "connected" and r["connects"] == 1 and r["last_rtt_ms"] > 0
        r = row(s, "SELECT * FROM redlock_servers WHERE address = %s", (down.addr,))
        # refused; a new attempt may already be under way in the background
        assert r["state"] in ("disconnected", "connecting")
        assert "Connection refused" in r["last_error"]
        assert r["last_error_at"] is not None
        r = row(s, "SELECT *, clock_timestamp() AS seen FROM redlock_servers WHERE address = %s",
                (f"127.0.0.1:{hole.port}",))
        assert "could not connect within 200 ms" in r["last_error"]
        # the connect timed out, so the master was put in backoff: its end is
        # kept, after the failure, whether or not it has passed by now (a slow
        # backend, as under valgrind, may read the view after the 100 ms)
        assert r["backoff_until"] is not None and r["backoff_until"] > r["last_error_at"]
        if r["seen"] < r["backoff_until"] - timedelta(milliseconds=20):
            assert r["state"] == "backoff"
        elif r["seen"] > r["backoff_until"] + timedelta(milliseconds=20):
            assert r["state"] == "disconnected"

        # a lock keeps its masters after the list changes: they stay listed
        s.execute("SET redlock.servers = %s", (up.addr,))
        s.execute("SELECT redlock_acquire_session('i:srv')")
        other = RedisProcess()
        try:
            s.execute("SET redlock.servers = %s", (other.addr,))
            listed = {x[0]: x[1] for x in s.execute("SELECT address, configured FROM redlock_servers")}
            assert listed[up.addr] is False and listed[other.addr] is True
            s.execute("SELECT redlock_release('i:srv')")
        finally:
            other.close()
    finally:
        hole.close()


def test_servers_view_shows_the_subscription(session, main_redis):
    holder, waiter = session(), session()
    holder.execute("SELECT redlock_acquire_session('i:sub')")
    assert row(waiter, "SELECT subscribed FROM redlock_servers")["subscribed"] is False
    t, _ = in_thread(waiter.execute, "SELECT redlock_acquire_session('i:sub')")
    # queued, so refused once: its first wait event may be its connect
    wait_for(lambda: main_redis.exists(b"i:sub\x00waiters"), what="the wait")
    holder.execute("SELECT redlock_release('i:sub')")
    t.join(10)
    assert row(waiter, "SELECT subscribed FROM redlock_servers")["subscribed"] is True
    waiter.execute("SELECT redlock_release('i:sub')")


def stats(s):
    return row(s, "SELECT * FROM redlock_stats")


def script_calls(r):
    """Scripts a Redis server has run so far (EVAL and EVALSHA)."""
    stats = r.info("commandstats")
    return sum(stats.get(c, {}).get("calls", 0) for c in ("cmdstat_evalsha", "cmdstat_eval"))


def test_stats_view_counts_what_happened(session, admin, main_redis, redis_server):
    s, other = session(), session()
    assert all(v == 0 for k, v in stats(s).items() if k != "since")
    s.execute("SELECT redlock_acquire_session('i:st')")                   # acquire
    s.execute("SELECT redlock_acquire_session('i:st')")                   # reentry
    assert s.value("SELECT redlock_extend('i:st', 20000)") is True        # extend
    s.execute("SELECT redlock_release('i:st')")
    s.execute("SELECT redlock_release('i:st')")                           # release
    other.execute("SELECT redlock_acquire_session('i:st')")
    assert s.value("SELECT redlock_try_acquire('i:st')") is None          # try_busy
    s.error("SELECT redlock_acquire('i:st', NULL, 100)")                  # wait, timeout
    calls = script_calls(main_redis)
    t, _ = in_thread(s.execute, "SELECT redlock_acquire_session('i:st')")  # wait, wakeup
    # its first attempt queues it, it subscribes, its second attempt is
    # refused too: only then is it asleep until the wake-up
    wait_for(lambda: script_calls(main_redis) >= calls + 2, what="the waiter's second attempt")
    wait_for(lambda: backend_wait_event(admin, s.pid) == "Extension", what="the wait")
    other.execute("SELECT redlock_release('i:st')")
    t.join(10)
    s.execute("SELECT redlock_release('i:st')")
    s.execute("SELECT redlock_acquire_session('i:lost')")
    main_redis.delete("i:lost")                                           # as if it expired
    s.value("SELECT redlock_release('i:lost')")                           # lost release
    s.execute("BEGIN")
    s.execute("SET LOCAL redlock.commit_margin = 60000")
    s.execute("SELECT redlock_acquire('i:commit', 10000)")
    s.execute("COMMIT")                                                   # commit extend
    s.execute("BEGIN")
    s.execute("SET LOCAL redlock.commit_margin = 60000")
    s.execute("SELECT redlock_acquire('i:gone')")
    main_redis.delete("i:gone")
    s.error("COMMIT")                                                     # lost at commit
    r = redis_server()
    s.execute("SET redlock.servers = %s", (r.addr,))
    s.execute("SELECT redlock_acquire('i:rc')")
    r.client().client_kill_filter(_type="normal", skipme=True)
    s.execute("SELECT redlock_acquire('i:rc')")                           # reconnect
    r.kill()
    s.error("SELECT redlock_acquire('i:rc')")                             # unreachable
    got = stats(s)
    assert got["acquires"] == 7 and got["reentries"] == 1 and got["extends"] == 1
    assert got["try_busy"] == 1 and got["waits"] == 2 and got["wakeups"] >= 1
    assert got["timeouts"] == 1 and got["wait_time_us"] >= 100000
    assert got["lost_releases"] == 2 and got["commit_extends"] == 1
    assert got["lost_at_commit"] == 1 and got["reconnects"] == 1
    assert got["unreachable"] == 1
    assert got["releases"] == 5 and got["failed_releases"] == 0
    assert stats(other)["acquires"] == 1, "per backend"


def test_debug_lines_with_timings(session):
    s = session()
    s.execute("SET client_min_messages = debug1")
    s.execute("SELECT redlock_acquire_session('i:dbg')")
    s.execute("SELECT redlock_release('i:dbg')")
    lines = [n for n in s.conn.notices if "redlock:" in n]
    assert any('redlock: acquire "i:dbg"' in n and "1 granted" in n and " ms" in n for n in lines)
    assert any('redlock: release "i:dbg"' in n and "1 released" in n for n in lines)


def test_cluster_stats_with_preload(preloaded_cluster):
    def connect():
        c = psycopg2.connect(**preloaded_cluster)
        c.autocommit = True
        return c.cursor()

    first = connect()
    first.execute("CREATE EXTENSION redlock")
    first.execute("SELECT redlock_acquire('i:cluster')")
    second = connect()
    second.execute("SELECT redlock_acquire('i:cluster'), redlock_acquire('i:cluster2')")
    second.execute("SELECT acquires, releases FROM redlock_stats_cluster")
    assert second.fetchone() == (3, 3), "counted across backends"
    second.execute("SELECT acquires FROM redlock_stats")
    assert second.fetchone() == (2,)
    # preloaded, a non-superuser's SET of a superuser setting fails at once
    second.execute("CREATE ROLE i_user")
    second.execute("SET ROLE i_user")
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        second.execute("SET redlock.key_prefix = 'x'")
