"""The lease keeper (a background worker, with redlock in
shared_preload_libraries and redlock.lease_keeper on) and the cluster-wide
view redlock_locks_cluster."""

import os
import signal
import threading
import time

import psycopg2
import pytest

from conftest import (MAIN_REDIS_PORT, Session, backend_wait_event, in_thread,
                      throwaway_cluster, wait_for)


def cluster(conf=""):
    return throwaway_cluster("redlock-keeper-", "shared_preload_libraries = 'redlock'\n"
                             "redlock.lease_keeper = on\n" + conf, extension=True)


@pytest.fixture(scope="module")
def keeper():
    """A cluster with the keeper on; yields a factory of sessions on it."""
    with cluster("max_connections = 150\nredlock.max_tracked_locks = 200\n") as args:
        made = []

        def session(autocommit=True):
            made.append(Session(args["dbname"], autocommit=autocommit,
                                host=args["host"], port=args["port"], user=args["user"]))
            return made[-1]
        session.args = args
        yield session
        for s in made:
            s.close()


def test_a_transaction_longer_than_its_ttl_commits_with_the_keeper(keeper, main_redis):
    """A 1 s lock held by a transaction that runs 5 s: the keeper renews it
    and the commit succeeds; with the keeper off for the session's lock
    (the control) the commit fails with 40001."""
    s = keeper(autocommit=False)
    token = s.value("SELECT redlock_acquire('k:long', 1000)")
    assert s.value("SELECT kept FROM redlock_locks WHERE key = 'k:long'") is True
    time.sleep(5)
    assert main_redis.pttl("k:long") > 0, "still in Redis after five TTLs"
    s.conn.commit()
    assert not main_redis.exists("k:long"), "released at commit"

    # control: the same without the keeper
    admin = keeper()
    admin.execute("ALTER SYSTEM SET redlock.lease_keeper = off")
    admin.execute("SELECT pg_reload_conf()")
    try:
        wait_for(lambda: admin.value("SHOW redlock.lease_keeper") == "off", what="the reload")
        c = keeper(autocommit=False)
        wait_for(lambda: c.value("SHOW redlock.lease_keeper") == "off", what="the reload")
        c.execute("SELECT redlock_acquire('k:long', 1000)")
        assert c.value("SELECT kept FROM redlock_locks WHERE key = 'k:long'") is False
        time.sleep(2)
        with pytest.raises(psycopg2.errors.SerializationFailure):
            c.conn.commit()
    finally:
        admin.execute("ALTER SYSTEM RESET redlock.lease_keeper")
        admin.execute("SELECT pg_reload_conf()")
        wait_for(lambda: admin.value("SHOW redlock.lease_keeper") == "on", what="the reload")
    assert token > 0


def test_a_session_lock_is_kept_and_a_terminated_holder_frees_it(keeper, main_redis):
    """A 1 s session lock kept for 30 s (30 TTLs): nobody else gets the key
    meanwhile; then pg_terminate_backend of the holder frees it at once."""
    s = keeper()
    s.execute("SELECT redlock_acquire_session('k:session', 1000)")
    other = keeper()
    until = time.monotonic() + 30
    while time.monotonic() < until:
        assert other.value("SELECT redlock_try_acquire_session('k:session')") is None
        time.sleep(0.5)
    assert s.value("SELECT renewals FROM redlock_locks_cluster WHERE key = 'k:session'") >= 60
    admin = keeper()
    admin.execute("SELECT pg_terminate_backend(%s)", (s.pid,))
    wait_for(lambda: not main_redis.exists("k:session"), timeout=1,
             what="the key freed at once, not after its TTL")


def test_a_stopped_backend_is_renewed_only_up_to_max_lease(keeper, main_redis):
    """SIGSTOP looks like slow work: the keeper renews it until
    redlock.max_lease, then the key expires; the holder cannot commit."""
    s = keeper(autocommit=False)
    s.execute("SET redlock.max_lease = '3s'")
    s.execute("SELECT redlock_acquire('k:stuck', 1000)")
    started = time.monotonic()
    os.kill(s.pid, signal.SIGSTOP)
    try:
        time.sleep(2)
        assert main_redis.exists("k:stuck"), "kept while under max_lease"
        wait_for(lambda: not main_redis.exists("k:stuck"), timeout=5, what="the key to expire")
        gone = time.monotonic() - started
        assert 3 <= gone < 6, gone               # max_lease, plus at most one TTL
        other = keeper()
        assert other.value("SELECT redlock_try_acquire_session('k:stuck')") is not None
        other.execute("SELECT redlock_release('k:stuck')")
    finally:
        os.kill(s.pid, signal.SIGCONT)
    with pytest.raises(psycopg2.errors.SerializationFailure):
        s.conn.commit()


def test_redis_unreachable_during_renewal_loses_the_lock(keeper, redis_server):
    """The keeper cannot reach the master for longer than the TTL: the key
    expires; once the master answers again the keeper finds it lost, the
    holder is warned at its next call and cannot commit."""
    m = redis_server()
    s = keeper(autocommit=False)
    s.execute("SET redlock.servers = %s", (m.addr,))
    s.execute("SET redlock.command_timeout = 200")
    s.execute("SELECT redlock_acquire('k:cut', 1000)")
    admin = keeper()
    m.freeze()
    time.sleep(2)
    assert admin.value("SELECT lost FROM redlock_locks_cluster WHERE key = 'k:cut'") is False, \
        "unreachable is not lost: the keeper keeps trying"
    m.resume()
    wait_for(lambda: admin.value(
        "SELECT lost FROM redlock_locks_cluster WHERE key = 'k:cut'"), timeout=5,
        what="the keeper to find it lost")
    s.execute("SELECT redlock_token('k:other')")
    assert any('"k:cut" was lost' in n for n in s.conn.notices), s.conn.notices
    with pytest.raises(psycopg2.errors.SerializationFailure):
        s.conn.commit()


def test_the_cluster_view_under_fifty_backends(keeper, main_redis):
    """25 backends hold a key each and 25 wait for them: every one is listed
    with its pid (joinable with pg_stat_activity), each waiter with the
    holder of its key."""
    holders = [keeper(autocommit=False) for _ in range(25)]
    for i, h in enumerate(holders):
        h.execute("SELECT redlock_acquire(%s, 30000)", (f"k:view:{i}",))
    waiters = [keeper(autocommit=False) for _ in range(25)]
    threads = [in_thread(w.value, "SELECT redlock_acquire(%s, 30000, 20000)", (f"k:view:{i}",))
               for i, w in enumerate(waiters)]
    admin = keeper()
    wait_for(lambda: admin.value("SELECT count(*) FROM redlock_locks_cluster "
                                 "WHERE state = 'waiting'") == 25, timeout=10, what="25 waiters")
    rows = admin.execute("""
        SELECT l.key, l.state, l.pid, l.holder_pid, a.backend_type
        FROM redlock_locks_cluster l JOIN pg_stat_activity a USING (pid)
        WHERE l.key LIKE 'k:view:%' ORDER BY l.key, l.state""")
    assert len(rows) == 50
    for i in range(25):
        held = [r for r in rows if r[0] == f"k:view:{i}" and r[1] == "held"]
        waiting = [r for r in rows if r[0] == f"k:view:{i}" and r[1] == "waiting"]
        assert [r[2] for r in held] == [holders[i].pid]
        assert [(r[2], r[3]) for r in waiting] == [(waiters[i].pid, holders[i].pid)]
    for h in holders:
        h.conn.commit()
    for (t, got), w in zip(threads, waiters):
        t.join(10)
        assert got[0] > 0
        w.conn.commit()
    assert admin.value("SELECT count(*) FROM redlock_locks_cluster WHERE key LIKE 'k:view:%'") == 0


def test_the_cluster_view_hides_other_roles_keys(keeper):
    admin = keeper()
    admin.execute("DROP ROLE IF EXISTS k_app")
    admin.execute("DROP ROLE IF EXISTS k_stats")
    admin.execute("CREATE ROLE k_app LOGIN")
    admin.execute("CREATE ROLE k_stats LOGIN IN ROLE pg_read_all_stats")
    try:
        admin.execute("SELECT redlock_acquire_session('k:secret')")
        args = dict(keeper.args)
        app = psycopg2.connect(**dict(args, user="k_app"))
        app.autocommit = True
        cur = app.cursor()
        cur.execute("SELECT key FROM redlock_locks_cluster WHERE pid = %s", (admin.pid,))
        assert cur.fetchall() == [(None,)], "another role's key is hidden"
        stats = psycopg2.connect(**dict(args, user="k_stats"))
        stats.autocommit = True
        cur = stats.cursor()
        cur.execute("SELECT key FROM redlock_locks_cluster WHERE pid = %s", (admin.pid,))
        assert cur.fetchall() == [("k:secret",)], "pg_read_all_stats sees it"
        app.close()
        stats.close()
    finally:
        admin.execute("SELECT redlock_release_all()")
        admin.execute("DROP ROLE k_app")
        admin.execute("DROP ROLE k_stats")


def test_a_full_table_leaves_locks_working_but_unlisted(main_redis):
    """redlock.max_tracked_locks = 16: the 17th lock works, with a WARNING,
    and is neither listed nor kept; its commit still checks its lease."""
    with cluster("redlock.max_tracked_locks = 16\n") as args:
        s = Session(args["dbname"], autocommit=False, host=args["host"], port=args["port"],
                    user=args["user"])
        for i in range(16):
            s.execute("SELECT redlock_acquire(%s)", (f"k:full:{i}",))
        assert s.value("SELECT redlock_acquire('k:full:16', 1000)") > 0
        assert any("not in redlock's shared lock table" in n for n in s.conn.notices)
        assert s.value("SELECT count(*) FROM redlock_locks_cluster") == 16
        assert s.value("SELECT kept FROM redlock_locks WHERE key = 'k:full:16'") is False
        assert s.value("SELECT kept FROM redlock_locks WHERE key = 'k:full:0'") is True
        time.sleep(2)
        with pytest.raises(psycopg2.errors.SerializationFailure):
            s.conn.commit()                  # the untracked one expired
        s.close()


def test_without_preloading_nothing_is_kept(session):
    s = session(autocommit=False)
    s.execute("SELECT redlock_acquire('k:plain')")
    assert s.value("SELECT kept FROM redlock_locks") is False
    err = s.error("SELECT * FROM redlock_locks_cluster")
    assert err.pgcode == "55000"


def test_a_crashed_backend_leaves_its_keys_to_their_ttl(main_redis):
    """A backend killed by SIGKILL takes the cluster through a restart; the
    keeper (restarted too, with an empty table) does not renew its lock,
    which expires by its TTL."""
    with cluster() as args:
        s = Session(args["dbname"], autocommit=False, host=args["host"], port=args["port"],
                    user=args["user"])
        s.execute("SELECT redlock_acquire('k:crash', 2000)")
        os.kill(s.pid, signal.SIGKILL)
        started = time.monotonic()
        wait_for(lambda: not main_redis.exists("k:crash"), timeout=10, what="the key to expire")
        # its TTL, and perhaps one renewal before the keeper was stopped too
        assert time.monotonic() - started < 5


def test_a_shortened_lock_that_expired_cannot_commit(keeper):
    """The backend's own re-arm may shorten a lock: its deadline is then the
    shorter one, whatever the table saw before (it kept the largest), so a
    lock that ran out and was taken fails the commit with 40001.  Unkept
    (a 1 ms lease) so that it can run out."""
    a = keeper(autocommit=False)
    a.execute("SET redlock.max_lease = 1")
    a.execute("SELECT redlock_acquire('k:short', 10000)")
    assert a.value("SELECT redlock_extend('k:short', 1000)") is True
    time.sleep(1.6)
    b = keeper()
    assert b.value("SELECT redlock_try_acquire_session('k:short')") is not None
    with pytest.raises(psycopg2.errors.SerializationFailure):
        a.conn.commit()
    b.execute("SELECT redlock_release_all()")


def test_a_frozen_master_does_not_starve_other_renewals(keeper, redis_server):
    """One session's master is frozen, with a 5 s command timeout: the
    keeper still renews everybody else's locks in time."""
    m = redis_server()
    x = keeper()
    x.execute("SET redlock.servers = %s", (m.addr,))
    x.execute("SET redlock.command_timeout = 5000")
    x.execute("SELECT redlock_acquire_session('k:frozen', 1500)")
    m.freeze()
    try:
        v = keeper(autocommit=False)
        v.execute("SELECT redlock_acquire('k:victim', 1000)")
        time.sleep(3)
        v.conn.commit()                      # 40001 if its renewals starved
    finally:
        m.resume()
    x.execute("SELECT redlock_release_all()")


def test_roles_cannot_use_up_the_keepers_settings(keeper):
    """Only superuser settings tell the keeper's endpoints apart: a role
    taking locks under many command timeouts leaves the others kept."""
    admin = keeper()
    admin.execute("DROP ROLE IF EXISTS k_many")
    admin.execute("CREATE ROLE k_many LOGIN")
    admin.execute("GRANT EXECUTE ON FUNCTION redlock_acquire_session(text, integer, integer), "
                  "redlock_release_all() TO k_many")
    try:
        c = psycopg2.connect(**dict(keeper.args, user="k_many"))
        c.autocommit = True
        cur = c.cursor()
        for i in range(20):
            cur.execute(f"SET redlock.command_timeout = {2000 + i}")
            cur.execute("SELECT redlock_acquire_session(%s, 30000)", (f"k:many:{i}",))
        assert not any("will not be kept" in n for n in c.notices), c.notices
        s = keeper(autocommit=False)
        s.execute("SELECT redlock_acquire('k:super', 1000)")
        assert s.value("SELECT kept FROM redlock_locks WHERE key = 'k:super'") is True
        time.sleep(2)
        s.conn.commit()
        cur.execute("SELECT redlock_release_all()")
        c.close()
    finally:
        admin.execute("DROP OWNED BY k_many")
        admin.execute("DROP ROLE k_many")


def test_a_slow_master_is_not_a_lost_lock(keeper, redis_server):
    """Control for the unreachable case: a master frozen for less than the
    lock's validity costs renewals, not the lock."""
    m = redis_server()
    s = keeper(autocommit=False)
    s.execute("SET redlock.servers = %s", (m.addr,))
    s.execute("SELECT redlock_acquire('k:slow', 3000)")
    m.freeze()
    time.sleep(1)
    m.resume()
    time.sleep(2)
    assert s.value("SELECT lost FROM redlock_locks WHERE key = 'k:slow'") is False
    s.conn.commit()


def test_the_keeper_renews_with_the_backends_credentials(keeper, redis_server):
    """A lock taken as a Redis ACL user (credentials in the server entry,
    and a database of its own) is renewed with them."""
    m = redis_server()
    m.client().acl_setuser("keeper_user", enabled=True, passwords=["+kpw"], keys=["~*"],
                           channels=["*"], commands=["+@all"])
    s = keeper(autocommit=False)
    s.execute("SET redlock.servers = %s", (f"redis://keeper_user:kpw@127.0.0.1:{m.port}/2",))
    s.execute("SELECT redlock_acquire('k:acl', 1000)")
    time.sleep(3)
    assert m.client(db=2).exists("k:acl")
    assert s.value("SELECT renewals FROM redlock_locks_cluster WHERE key = 'k:acl'") >= 3
    s.conn.commit()
    assert not m.client(db=2).exists("k:acl")


def test_a_key_too_long_for_the_table_works_unlisted(keeper):
    s = keeper(autocommit=False)
    key = "k:long:" + "x" * 600
    assert s.value("SELECT redlock_acquire(%s)", (key,)) > 0
    assert any("not in redlock's shared lock table" in n for n in s.conn.notices)
    assert s.value("SELECT count(*) FROM redlock_locks_cluster WHERE pid = pg_backend_pid()") == 0
    assert s.value("SELECT kept FROM redlock_locks") is False
    s.conn.commit()


def test_the_keeper_counts_validity_by_the_backends_drift_factor(keeper):
    """A backend that allows for a large clock drift (redlock.drift_factor
    0.5: a 4 s TTL is trusted for 2 s) trusts a renewal no longer."""
    s = keeper(autocommit=False)
    s.execute("SET redlock.drift_factor = 0.5")
    s.execute("SELECT redlock_acquire('k:drift', 4000)")
    wait_for(lambda: s.value("SELECT renewals FROM redlock_locks_cluster "
                             "WHERE key = 'k:drift'") >= 1, timeout=5, what="a renewal")
    left = s.value("SELECT extract(epoch FROM valid_until - clock_timestamp()) "
                   "FROM redlock_locks_cluster WHERE key = 'k:drift'")
    assert left <= 2.05, left
    s.conn.commit()


def test_an_unconfirmed_shortening_extend_counts(keeper, redis_server):
    """redlock_extend to a shorter TTL whose answer never comes (the master
    is frozen; the error is caught): the master applies it when it resumes,
    so the shorter deadline counts, and a commit after it ran out and the
    key was taken fails with 40001.  Unkept (a 1 ms lease)."""
    m = redis_server()
    a = keeper(autocommit=False)
    a.execute("SET redlock.servers = %s", (m.addr,))
    a.execute("SET redlock.max_lease = 1")
    a.execute("SET redlock.command_timeout = 200")
    a.execute("SELECT redlock_acquire('k:unconfirmed', 30000)")
    m.freeze()
    try:
        a.execute("""DO $$ BEGIN PERFORM redlock_extend('k:unconfirmed', 500);
                     EXCEPTION WHEN OTHERS THEN NULL; END $$""")
    finally:
        m.resume()
    time.sleep(1)
    b = keeper()
    b.execute("SET redlock.servers = %s", (m.addr,))
    assert b.value("SELECT redlock_try_acquire_session('k:unconfirmed')") is not None
    with pytest.raises(psycopg2.errors.SerializationFailure):
        a.conn.commit()
    b.execute("SELECT redlock_release_all()")


def test_several_frozen_masters_do_not_starve_a_healthy_one(keeper, masters):
    """Three sessions on three other masters, all frozen: a 1 s lock on the
    healthy master is still renewed in time (masters that answered go
    first)."""
    ms = masters(3)
    others = []
    for i, m in enumerate(ms):
        x = keeper()
        x.execute("SET redlock.servers = %s", (m.addr,))
        x.execute("SELECT redlock_acquire_session(%s, 3000)", (f"k:frozen{i}",))
        others.append(x)
    for m in ms:
        m.freeze()
    try:
        time.sleep(2)                      # the keeper finds them slow
        v = keeper(autocommit=False)
        v.execute("SELECT redlock_acquire('k:healthy', 1000)")
        time.sleep(3)
        v.conn.commit()                    # 40001 if its renewals starved
    finally:
        for m in ms:
            m.resume()
    for x in others:
        x.execute("SELECT redlock_release_all()")


def test_the_keeper_renews_sentinel_and_cluster_entries(keeper, redis_server):
    """Locks on a sentinel group and on a cluster, with replica_ack = 1:
    the keeper renews each of them on the node that holds it (the group's
    primary, the key's slot owner), and each renewal is waited for by the
    replicas (WAIT on the primary, the key on the replica).  A 1 s lock is
    still there after 3 s, and goes at commit."""
    from test_cluster import Cluster
    from test_sentinel import Group
    group = Group(redis_server)
    try:
        clu = Cluster(redis_server)
        for entry, key in ((group.entry(), "k:sen"), (clu.entry(), "k:clu")):
            s = keeper(autocommit=False)
            s.execute("SET redlock.servers = %s", (entry,))
            s.execute("SET redlock.replica_ack = 1")
            node = group.current() if key == "k:sen" else clu.owner(key)
            waits = node.client().info("commandstats").get("cmdstat_wait", {}).get("calls", 0)
            s.execute("SELECT redlock_acquire(%s, 1000)", (key,))
            time.sleep(3)
            assert node.client().exists(key), key
            replica = [n for n in (group.replicas if key == "k:sen" else clu.nodes)
                       if n.client().info("replication").get("master_port") == node.port][0]
            rc = replica.client(single_connection_client=True)
            if key == "k:clu":
                rc.execute_command("READONLY")  # a cluster replica answers reads
            assert rc.pttl(key) > 0, key
            assert s.value("SELECT renewals FROM redlock_locks_cluster WHERE key = %s",
                           (key,)) >= 3
            assert node.client().info("commandstats")["cmdstat_wait"]["calls"] >= waits + 4
            s.conn.commit()
            assert not node.client().exists(key)
    finally:
        group.close()


def test_the_keeper_renews_a_shared_hold(keeper, main_redis):
    """Two shared holds with 1 s leases in transactions that run 3 s: the
    keeper renews each reader's own lease (and so the key), both commit,
    and the key is gone after the second."""
    a, b = keeper(autocommit=False), keeper(autocommit=False)
    a.value("SELECT redlock_acquire_shared('k:shared', 1000)")
    b.value("SELECT redlock_acquire_shared('k:shared', 1000)")
    assert a.value("SELECT mode FROM redlock_locks_cluster WHERE pid = pg_backend_pid()") == "shared"
    time.sleep(3)
    assert main_redis.zcard(b"k:shared\x00readers") == 2
    assert main_redis.pttl("k:shared") > 0
    a.conn.commit()
    assert main_redis.zcard(b"k:shared\x00readers") == 1
    b.conn.commit()
    assert not main_redis.exists("k:shared")
