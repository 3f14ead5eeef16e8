"""Commit safety: a transaction whose lock expired or was taken over cannot
commit (40001, nothing it wrote becomes visible, the new owner's lock is
untouched); a lock near expiry is extended at commit; redlock_extend keeps a
lock alive; the pre-authorisation race with a stalled holder cannot
over-authorise (its unlocked-at-commit control does); a commit that releases
locks is durable even under synchronous_commit = off."""

import os
import threading
import time

import psycopg2
import pytest

from conftest import cancel_while_waiting, in_thread, servers, wait_for, wait_for_syncrep

PREAUTH = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "preauth.sql")


def commit_fails_with_lost_lock(s, key):
    with pytest.raises(psycopg2.errors.SerializationFailure) as info:
        s.conn.commit()
    assert info.value.diag.message_primary == f'Redis lock "{key}" was lost before commit'
    assert "none of its work becomes visible" in info.value.diag.message_detail


def test_lock_taken_over_fails_the_commit(session, rows, main_redis):
    s = session(autocommit=False)
    s.execute("SELECT redlock_acquire('cs:lost', 200)")
    s.execute("INSERT INTO test_rows VALUES ('cs:lost')")
    time.sleep(0.4)                     # the holder stalls past its TTL
    other = session()
    other.execute("SELECT redlock_acquire_session('cs:lost', 60000)")
    theirs = main_redis.get("cs:lost")
    commit_fails_with_lost_lock(s, "cs:lost")
    assert rows.value("SELECT count(*) FROM test_rows") == 0, "nothing became visible"
    assert main_redis.get("cs:lost") == theirs, "the new owner's lock is untouched"
    assert 50000 < main_redis.pttl("cs:lost")
    assert other.value("SELECT redlock_release('cs:lost')") is True


def test_expired_lock_fails_the_commit_even_if_nobody_took_it(session, rows):
    """Once expired, another client may have held it and gone again: the
    transaction cannot know, so it does not commit."""
    s = session(autocommit=False)
    s.execute("SELECT redlock_acquire('cs:expired', 200)")
    s.execute("INSERT INTO test_rows VALUES ('cs:expired')")
    time.sleep(0.4)
    commit_fails_with_lost_lock(s, "cs:expired")
    assert rows.value("SELECT count(*) FROM test_rows") == 0


def test_lock_near_expiry_is_extended_at_commit(session, admin, main_redis, rows,
                                                absent_sync_standby):
    """Less validity left than redlock.commit_margin: the commit re-arms the
    lock, so it outlives its first TTL while the commit is still running."""
    s = session(autocommit=False)
    s.execute("SET redlock.commit_margin = 1000")
    s.execute("SELECT redlock_acquire('cs:near', 1500)")
    s.execute("INSERT INTO test_rows VALUES ('cs:near')")
    taken = time.monotonic()
    time.sleep(0.7)                     # about 800 ms of validity left
    assert main_redis.pttl("cs:near") < 900
    committed = threading.Event()
    t = threading.Thread(target=lambda: (s.conn.commit(), committed.set()))
    t.start()
    wait_for_syncrep(admin, s.pid)
    # without a re-arm, at most the first TTL less the time since it was taken
    unarmed = 1500 - 1000 * (time.monotonic() - taken)
    assert main_redis.pttl("cs:near") > unarmed + 100, "re-armed before the commit went on"
    time.sleep(max(0.0, 1.7 - (time.monotonic() - taken)))
    assert main_redis.exists("cs:near"), "alive past its first TTL"
    admin.execute("SELECT pg_cancel_backend(%s)", (s.pid,))
    t.join(10)
    assert committed.is_set()
    assert not main_redis.exists("cs:near")


def test_plenty_of_validity_needs_no_round_trip(session, redis_server):
    """The commit check costs nothing when the lock has time left: one
    acquire and one release reach the server, nothing else."""
    r = redis_server()
    s = session(servers=r.addr, autocommit=False)
    s.execute("SELECT redlock_acquire('cs:warm')")
    s.conn.commit()
    client = r.client()
    client.config_resetstat()
    s.execute("SELECT redlock_acquire('cs:cheap', 60000)")
    s.conn.commit()
    stats = client.info("commandstats")
    scripts = sum(stats.get(c, {}).get("calls", 0) for c in ("cmdstat_evalsha", "cmdstat_eval"))
    assert scripts == 2, stats


def test_extend_keeps_a_lock_alive_and_reports_loss(session):
    a, b = session(), session()
    a.execute("SELECT redlock_acquire_session('cs:ext', 1000)")
    for _ in range(5):                  # 2.5 s: more than twice the TTL
        time.sleep(0.5)
        assert a.value("SELECT redlock_extend('cs:ext', 1000)") is True
        assert b.value("SELECT redlock_try_acquire('cs:ext')") is None
    time.sleep(1.2)                     # stop extending: it expires
    assert b.value("SELECT redlock_acquire_session('cs:ext')") > 0
    assert a.value("SELECT redlock_extend('cs:ext', 1000)") is False
    assert "has expired or been taken over" in a.conn.notices[-1]
    assert a.value("SELECT redlock_token('cs:ext')") is None
    assert b.value("SELECT redlock_release('cs:ext')") is True


def test_transaction_lock_found_lost_by_extend_fails_the_commit(session, rows):
    s = session(autocommit=False)
    s.execute("SELECT redlock_acquire('cs:ext2', 200)")
    s.execute("INSERT INTO test_rows VALUES ('cs:ext2')")
    time.sleep(0.4)
    session().execute("SELECT redlock_acquire_session('cs:ext2', 60000)")
    assert s.value("SELECT redlock_extend('cs:ext2', 5000)") is False
    commit_fails_with_lost_lock(s, "cs:ext2")
    assert rows.value("SELECT count(*) FROM test_rows") == 0


def test_commit_check_uses_the_quorum(session, masters, rows):
    ms = masters(3)
    s = session(servers=servers(ms), autocommit=False)
    s.execute("SET redlock.commit_margin = 60000")     # every commit re-arms
    # one master lost it: a majority still re-arms it, the commit goes on
    s.execute("SELECT redlock_acquire('cs:quorum', 5000)")
    s.execute("INSERT INTO test_rows VALUES ('one lost')")
    ms[0].client().delete("cs:quorum")
    s.conn.commit()
    # two of three lost it: not ours on a majority, the commit fails
    s.execute("SELECT redlock_acquire('cs:quorum', 5000)")
    s.execute("INSERT INTO test_rows VALUES ('two lost')")
    ms[0].client().delete("cs:quorum")
    ms[1].client().delete("cs:quorum")
    commit_fails_with_lost_lock(s, "cs:quorum")
    assert [r[0] for r in rows.execute("SELECT k FROM test_rows")] == ["one lost"]


def test_master_restarted_without_its_data_fails_the_commit(session, redis_server, rows):
    """One master that crashes and comes back empty forgets the lock while
    the holder still has most of its TTL: another session takes the key
    and commits.  The holder's commit must not follow it (that would be a
    lost update): the connection that granted the lock is gone, so the
    commit check asks the master again instead of trusting the TTL."""
    r = redis_server()
    a = session(servers=r.addr, autocommit=False)
    a.execute("SELECT redlock_acquire('cs:amnesia', 60000)")
    a.execute("INSERT INTO test_rows VALUES ('first holder')")
    r.restart()                                         # no persistence
    b = session(servers=r.addr, autocommit=False)
    assert b.value("SELECT redlock_acquire('cs:amnesia', 60000, 0)") > 0
    b.execute("INSERT INTO test_rows VALUES ('second holder')")
    b.conn.commit()
    commit_fails_with_lost_lock(a, "cs:amnesia")
    assert [r[0] for r in rows.execute("SELECT k FROM test_rows")] == ["second holder"]


def test_master_restarted_with_its_data_keeps_the_lock(session, redis_server, rows):
    """The same restart with an append-only file: the lock is still there,
    nobody else gets it, and the holder's commit goes through (the check
    asked and the master confirmed)."""
    r = redis_server(args=("--appendonly", "yes", "--appendfsync", "always"))
    a = session(servers=r.addr, autocommit=False)
    a.execute("SELECT redlock_acquire('cs:persisted', 60000)")
    a.execute("INSERT INTO test_rows VALUES ('holder')")
    r.restart()
    assert session(servers=r.addr).value("SELECT redlock_try_acquire('cs:persisted')") is None
    a.conn.commit()
    assert rows.value("SELECT count(*) FROM test_rows") == 1


def test_missed_master_and_a_restart_fail_the_commit(session, masters, rows):
    """Three masters, the lock granted by two (the third was down when it
    was taken); then one of the two restarts empty.  A majority (the
    restarted one and the one that missed) now lets another session take
    the key: the first holder's commit must fail, not lose the second's
    update."""
    ms = masters(3)
    a = session(servers=servers(ms), autocommit=False)
    a.execute("SET redlock.connect_timeout = 300")
    ms[2].kill()
    a.execute("SELECT redlock_acquire('cs:missed', 60000)")
    assert a.value("SELECT cardinality(granted_by) FROM redlock_locks") == 2
    a.execute("INSERT INTO test_rows VALUES ('first holder')")
    ms[2].start()
    ms[0].restart()
    b = session(servers=servers(ms), autocommit=False)
    assert b.value("SELECT redlock_acquire('cs:missed', 60000, 0)") > 0
    b.execute("INSERT INTO test_rows VALUES ('second holder')")
    b.conn.commit()
    commit_fails_with_lost_lock(a, "cs:missed")
    assert [r[0] for r in rows.execute("SELECT k FROM test_rows")] == ["second holder"]


@pytest.fixture
def bank(session):
    s = session()
    s.execute("DROP TABLE IF EXISTS account, authorization_hold CASCADE")
    s.execute("DROP FUNCTION IF EXISTS debit, preauthorize")
    with open(PREAUTH) as f:
        s.execute(f.read())
    return s


def reset_bank(bank):
    bank.execute("TRUNCATE authorization_hold")
    bank.execute("INSERT INTO account VALUES (1, 100) "
                 "ON CONFLICT (id) DO UPDATE SET balance = 100")


def authorised(bank):
    """(total held, balance): balance + total held is 100 unless someone
    over-authorised."""
    held = bank.value("SELECT coalesce(sum(amount), 0) FROM authorization_hold")
    return held, bank.value("SELECT balance FROM account WHERE id = 1")


def app_side_lock(s, amount, pause):
    """The control: what a Redis lock client in application code does. Take
    the lock, run the transaction, commit, release. The lock knows nothing
    of the transaction."""
    s.execute("SELECT redlock_acquire_session('account:1', 500)")
    s.conn.autocommit = False
    s.execute("SELECT debit(1, %s, %s)", (amount, pause))
    s.conn.commit()
    s.conn.autocommit = True
    s.execute("SELECT redlock_release('account:1')")


def test_preauthorisation_race_two_clients(session, bank, main_redis):
    """Balance 100, two 60-unit pre-authorisations, the first holder stalls
    past its 500 ms TTL."""
    # control: with the lock released by the application, both commit
    reset_bank(bank)
    stalled, quick = session(), session()
    # (a long stall: the quick client must take the expired lock and read
    # the balance before the stalled one commits, even on a slow machine)
    t, _ = in_thread(app_side_lock, stalled, 60, "3 s")
    wait_for(lambda: main_redis.exists("account:1"), what="the first holder")
    app_side_lock(quick, 60, "0")
    t.join(10)
    held, balance = authorised(bank)
    assert held == 120 and held + balance > 100, "the control over-authorises"

    # redlock: the second request gets in after the TTL, the stalled one
    # cannot commit
    reset_bank(bank)
    t, outcome = in_thread(stalled.value, "SELECT preauthorize(1, 60, '900 ms')")
    wait_for(lambda: main_redis.exists("account:1"), what="the first holder")
    assert quick.value("SELECT preauthorize(1, 60)") is True
    t.join(10)
    assert isinstance(outcome[0], psycopg2.errors.SerializationFailure)
    assert authorised(bank) == (60, 40)


def run_many(session, bank, work):
    """12 concurrent pre-authorisations of 10 against a balance of 100;
    every other client stalls for 2 s, past the lock's 500 ms TTL.

    Whatever order the clients get the lock in, at most six quick ones go
    first, so a stalled holder reads a balance that still allows a debit
    while others wait behind it; its lock expires and the next one has
    1.5 s to read that same balance before the stalled one commits (with
    30 of 100 three quick holders could empty the account first, and a
    400 ms margin was too short on a loaded machine: the control then
    showed no race)."""
    reset_bank(bank)
    clients = [session() for _ in range(12)]
    start = threading.Barrier(len(clients))
    outcomes = []

    def one(i):
        start.wait()
        try:
            work(clients[i], 10, "2 s" if i % 2 else "0")
            outcomes.append("ok")
        except psycopg2.errors.SerializationFailure:
            outcomes.append("40001")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for c in clients:
        c.close()
    return outcomes


def test_preauthorisation_race_many_clients(session, bank):
    run_many(session, bank, app_side_lock)
    held, balance = authorised(bank)
    assert held + balance > 100, "the control over-authorises"

    outcomes = run_many(session, bank,
                        lambda s, amount, pause: s.value("SELECT preauthorize(1, %s, %s)",
                                                         (amount, pause)))
    held, balance = authorised(bank)
    assert held + balance == 100 and held <= 100
    assert "40001" in outcomes, "some stalled holders lost their lock and could not commit"


@pytest.fixture
def lazy_wal_writer(admin):
    """WAL is flushed only by commits that must flush it."""
    admin.execute("ALTER SYSTEM SET wal_writer_delay = '10s'")
    admin.execute("ALTER SYSTEM SET wal_writer_flush_after = '1GB'")
    admin.execute("SELECT pg_reload_conf()")
    yield
    admin.execute("ALTER SYSTEM RESET wal_writer_delay")
    admin.execute("ALTER SYSTEM RESET wal_writer_flush_after")
    admin.execute("SELECT pg_reload_conf()")


def flushed_at_commit(s, admin, lock):
    s.execute("SELECT pg_sleep(0.05)")  # let earlier WAL settle
    if lock:
        s.execute("SELECT redlock_acquire('cs:durable')")
    s.execute("INSERT INTO test_rows VALUES ('durable')")
    s.conn.commit()
    end = s.value("SELECT pg_current_wal_insert_lsn()")
    s.conn.commit()
    return admin.value("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", (end,))


def test_releasing_commit_is_durable_under_async_commit(session, admin, rows,
                                                        lazy_wal_writer):
    s = session(autocommit=False)
    s.execute("SET synchronous_commit = off")
    s.conn.commit()
    # control: an asynchronous commit returns before its WAL is flushed
    assert not all(flushed_at_commit(s, admin, lock=False) for _ in range(3))
    # with a lock to release, the commit is flushed before it returns
    assert all(flushed_at_commit(s, admin, lock=True) for _ in range(3))


FENCING = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "fencing.sql")


def test_fencing_tokens_refuse_a_stale_holder(session):
    """The README's fencing example: a holder that paused past its TTL gets
    its write refused once a newer holder has written."""
    setup = session()
    setup.execute("DROP TABLE IF EXISTS report CASCADE")
    setup.execute("DROP FUNCTION IF EXISTS publish_report")
    with open(FENCING) as f:
        setup.execute(f.read())
    setup.execute("INSERT INTO report (name) VALUES ('nightly')")

    old = session(autocommit=False)
    old_token = old.value("SELECT redlock_acquire('report:nightly', 200)")
    time.sleep(0.4)                     # paused past its lease

    new = session(autocommit=False)
    new_token = new.value("SELECT redlock_acquire('report:nightly', 5000)")
    assert new_token > old_token
    assert new.value("SELECT publish_report('nightly', 'new', %s)", (new_token,)) is True
    new.conn.commit()

    # the stale holder wakes up: its fenced write is refused ...
    assert old.value("SELECT publish_report('nightly', 'old', %s)", (old_token,)) is False
    # ... where the same write without the token check (the control) lands
    # on top of the newer holder's
    old.execute("UPDATE report SET body = 'old' WHERE name = 'nightly'")
    assert old.value("SELECT body FROM report WHERE name = 'nightly'") == "old"
    old.conn.rollback()
    assert setup.execute("SELECT body, last_token FROM report WHERE name = 'nightly'") \
        == [("new", new_token)]


def test_commit_check_can_be_cancelled(session, admin, redis_server, rows):
    """The check at COMMIT has its own deadline and answers a cancel: with
    the only master frozen, a commit that must re-arm its lock waits, and
    pg_cancel_backend ends the wait at once; nothing is committed."""
    r = redis_server()
    s = session(servers=r.addr, autocommit=False)
    s.execute("SET redlock.command_timeout = 20000")
    s.execute("SET redlock.commit_margin = 60000")     # every commit re-arms
    s.execute("SELECT redlock_acquire('cs:cancel', 30000)")
    s.execute("INSERT INTO test_rows VALUES ('cs:cancel')")
    r.freeze()
    outcome, took = cancel_while_waiting(admin, s.pid, s.conn.commit)
    assert took < 2.0
    assert isinstance(outcome, psycopg2.errors.QueryCanceled)
    assert rows.value("SELECT count(*) FROM test_rows") == 0
    r.resume()
