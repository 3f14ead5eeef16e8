"""A master's word lasts as long as the connection it was given on (see
README, Commit safety): once that connection is gone the master may have
restarted without the lock, and the holder must ask again before it
commits or re-enters the lock, while another session may have taken the
key.  Cases from an independent review of that rule: a replacement
connection that has not answered yet, a grant noted on the connection the
token write-back opened afterwards, unix sockets, a session lock taken
again in the transaction or in the session; and what the rule costs: no
Redis command while the connections are intact, one re-arm after a
restart with the data kept."""

import time

import psycopg2
import pytest

from conftest import in_thread, servers, wait_for


def committed_rows(rows):
    return sorted(r[0] for r in rows.execute("SELECT k FROM test_rows"))


def second_holder_commits(session, addr, key):
    """Another session takes key (it must get it at once) and commits a row."""
    b = session(servers=addr, autocommit=False)
    assert b.value("SELECT redlock_try_acquire(%s, 60000)", (key,)) is not None, \
        "the second session gets the key (the master forgot the first holder)"
    b.execute("INSERT INTO test_rows VALUES ('second holder')")
    b.conn.commit()
    b.close()


def test_reconnect_that_has_not_answered_yet_does_not_vouch(session, redis_server, rows):
    """One master restarts empty; another session takes the key and commits.
    The holder then makes another call to that master: its connection is
    found closed and replaced (conn_broken), but the master has not answered
    on the new connection yet when COMMIT runs (here it is frozen; a slow
    link does the same).  The new connection is READY without having heard
    a byte, so the server's connects count has not moved and the commit
    check takes it for the connection that granted the lock: no round trip,
    and the holder commits too.  The commit must fail."""
    r = redis_server()
    a = session(servers=r.addr, autocommit=False)
    a.execute("SET redlock.command_timeout = 300")
    a.execute("SELECT redlock_acquire('rv:reconnect', 60000)")
    a.execute("INSERT INTO test_rows VALUES ('first holder')")
    r.restart()                                         # no persistence
    second_holder_commits(session, r.addr, "rv:reconnect")
    r.freeze()
    try:
        a.execute("SAVEPOINT s")
        with pytest.raises(psycopg2.OperationalError):  # could not reach Redis
            a.execute("SELECT redlock_try_acquire('rv:other', 60000)")
        a.execute("ROLLBACK TO SAVEPOINT s")
        # the connection was replaced: open, owing the unanswered acquire
        assert a.execute("SELECT state, replies_owed > 0 FROM redlock_servers"
                         " WHERE address = %s", (r.addr,)) == [("connected", True)]
        with pytest.raises(psycopg2.Error):
            a.conn.commit()
        a.conn.rollback()
    finally:
        r.resume()
    assert committed_rows(rows) == ["second holder"]


def test_grant_recorded_on_the_connection_that_gave_it(session, redis_server, proxy, rows):
    """Three masters, the third down.  The first grants at once, then
    crashes and comes back empty while the acquire still waits for the
    second (slow).  The token differs between the two (the second's counter
    is ahead), so the acquire writes the token back to the first: that
    reconnects to the restarted master, and the lock then records the new
    connection as the one that granted it.  Another session takes the key
    from the restarted master and the third; the holder's commit check
    trusts both grants and the holder commits too.  It must fail."""
    m0, m1, m2 = redis_server(), redis_server(), redis_server()
    key = "rv:fence"
    ahead = 2 * 10 ** 15                                # past every clock-seeded counter
    m1.client().set(key.encode() + b"\x00fence", ahead)  # m1's counter ahead
    slow = proxy(m1.port, delay=0.5)
    a = session(servers=f"{m0.addr}, {slow.addr}, {m2.addr}", autocommit=False)
    a.execute("SET redlock.connect_timeout = 300")
    m2.kill()
    t, outcome = in_thread(a.value, f"SELECT redlock_acquire('{key}', 60000)")
    wait_for(lambda: m0.client().exists(key), what="the first master's grant")
    m0.restart()                                        # empty, while m1 is slow
    t.join(30)
    assert outcome == [ahead + 1], outcome
    # the write-back reached the restarted master, over a new connection
    assert m0.client().get(key.encode() + b"\x00fence") == b"%d" % (ahead + 1)
    assert not m0.client().exists(key)
    assert a.value("SELECT cardinality(granted_by) FROM redlock_locks") == 2
    slow.delay = 0.0
    a.execute("INSERT INTO test_rows VALUES ('first holder')")
    m2.start()
    second_holder_commits(session, servers([m0, m1, m2]), key)
    with pytest.raises(psycopg2.errors.SerializationFailure):
        a.conn.commit()
    assert committed_rows(rows) == ["second holder"]


def test_plenty_of_validity_needs_no_round_trip_on_three_masters(session, masters):
    """The look at each master's connection adds no Redis command: with
    three masters, each sees one acquire and one release."""
    ms = masters(3)
    s = session(servers=servers(ms), autocommit=False)
    s.execute("SELECT redlock_acquire('rv:warm')")
    s.conn.commit()
    clients = [m.client() for m in ms]
    for c in clients:
        c.config_resetstat()
    s.execute("SELECT redlock_acquire('rv:cheap1', 60000)")
    s.execute("SELECT redlock_acquire('rv:cheap2', 60000)")
    s.conn.commit()
    for c in clients:
        stats = c.info("commandstats")
        scripts = sum(stats.get(k, {}).get("calls", 0)
                      for k in ("cmdstat_evalsha", "cmdstat_eval"))
        assert scripts == 4, stats


def test_restart_with_data_is_confirmed_by_a_round_trip(session, redis_server, rows):
    """The persistent-restart counterpart, with what the new test does not
    check: the commit asked the master again (one extend), and the lock's
    TTL on the master was re-armed."""
    r = redis_server(args=("--appendonly", "yes", "--appendfsync", "always"))
    a = session(servers=r.addr, autocommit=False)
    a.execute("SELECT redlock_acquire('rv:persisted', 60000)")
    a.execute("INSERT INTO test_rows VALUES ('holder')")
    r.restart()
    c = r.client()
    c.config_resetstat()
    a.conn.commit()
    stats = c.info("commandstats")
    scripts = sum(stats.get(k, {}).get("calls", 0) for k in ("cmdstat_evalsha", "cmdstat_eval"))
    assert scripts == 2, stats                          # the re-arm, the release
    assert committed_rows(rows) == ["holder"]


def test_master_restarted_on_a_unix_socket_fails_the_commit(session, redis_server, rows):
    """test_master_restarted_without_its_data_fails_the_commit over a unix
    socket: a restart closes those connections too."""
    r = redis_server()
    a = session(servers=r.socket, autocommit=False)
    a.execute("SELECT redlock_acquire('rv:unix', 60000)")
    a.execute("INSERT INTO test_rows VALUES ('first holder')")
    r.restart()
    second_holder_commits(session, r.socket, "rv:unix")
    with pytest.raises(psycopg2.errors.SerializationFailure):
        a.conn.commit()
    assert committed_rows(rows) == ["second holder"]


def test_session_lock_reentered_in_a_transaction_after_a_restart_is_taken_afresh(
        session, redis_server, rows):
    """A session lock taken before the transaction, then taken again at
    transaction level after its master restarted empty and another session
    held the key and committed: the re-entry asks the master, finds the
    lock gone and takes it afresh (a new token), so the transaction's work
    is done under a lock it really holds, and commits."""
    r = redis_server()
    a = session(servers=r.addr, autocommit=True)
    old = a.value("SELECT redlock_acquire_session('rv:both', 60000)")
    r.restart()
    second_holder_commits(session, r.addr, "rv:both")
    a.conn.autocommit = False
    new = a.value("SELECT redlock_acquire('rv:both', 60000)")
    assert new is not None and new != old
    a.execute("INSERT INTO test_rows VALUES ('first holder')")
    a.conn.commit()
    assert committed_rows(rows) == ["first holder", "second holder"]


def test_session_lock_reentered_in_the_session_after_a_restart_is_taken_afresh(
        session, redis_server):
    """A session lock whose master restarted empty, taken again at session
    level: another session holds the key now, so the re-entry must not
    hand back the old token as if the lock were still held."""
    r = redis_server()
    a = session(servers=r.addr)
    assert a.value("SELECT redlock_acquire_session('rv:sess', 60000)") > 0
    r.restart()
    b = session(servers=r.addr)
    assert b.value("SELECT redlock_try_acquire_session('rv:sess', 60000)") is not None
    assert a.value("SELECT redlock_try_acquire_session('rv:sess', 60000)") is None
    assert a.value("SELECT redlock_token('rv:sess')") is None


def test_close_behind_a_late_reply_is_seen(session, masters, rows):
    """A late answer nobody waits for (the third master of another
    acquisition answered after the quorum) sits in the socket in front of
    the end-of-file a restart left: the commit check must see the close
    behind it, not only the reply.  Three masters; the holder's lock was
    granted by the first two (the third still held the key for someone
    else), the second restarts empty, another session takes the key on
    the second and third and commits: the holder's commit must fail."""
    a, b, c = ms = masters(3)
    t = session(servers=servers(ms), autocommit=False)
    t.execute("SET redlock.command_timeout = 300")
    c.client().set("rv:late1", "someone else", px=60000)
    # a try does not queue on the master that refuses (a waiter would, and
    # hold its place there)
    assert t.value("SELECT redlock_try_acquire('rv:late1', 60000)") is not None
    assert t.value("SELECT granted_by FROM redlock_locks WHERE key = 'rv:late1'") == \
        [a.addr, b.addr]
    b.freeze()
    t.execute("SELECT redlock_acquire('rv:late2', 60000)")     # a and c; b answers later
    b.resume()
    wait_for(lambda: b.client().exists("rv:late2"), what="b's late grant")
    time.sleep(0.2)                                 # its reply is in the holder's socket
    b.restart()                                     # empty; the close follows the reply
    c.client().delete("rv:late1")
    second_holder_commits(session, servers(ms), "rv:late1")
    t.execute("INSERT INTO test_rows VALUES ('first holder')")
    with pytest.raises(psycopg2.errors.SerializationFailure):
        t.conn.commit()
    assert committed_rows(rows) == ["second holder"]
