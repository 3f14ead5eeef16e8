"""The release happens after the commit is visible, and is done by the time
COMMIT returns; rollback releases too.

To look inside COMMIT, a synchronous standby that never connects stops the
committing backend after its commit record is flushed and before the commit
becomes visible (see CommitTransaction in xact.c).  In that window the lock
must still be held.  Cancelling the wait lets the commit finish.
"""

import re
import threading
import time

import psycopg2
import pytest

from conftest import wait_for, wait_for_syncrep

# a string lock's value: 32 random hex digits, "." and who holds it
# (system identifier, pid and start time, in hex)
OWNER = re.compile(r"^[0-9a-f]{32}\.[0-9a-f]+\.[0-9a-f]+\.[0-9a-f]+$")


@pytest.fixture
def counter(session):
    s = session()
    s.execute("CREATE TABLE IF NOT EXISTS commit_order (id int PRIMARY KEY, n int NOT NULL)")
    s.execute("INSERT INTO commit_order VALUES (1, 0) ON CONFLICT (id) DO UPDATE SET n = 0")
    return s


def test_lock_is_held_until_the_commit_is_visible(session, admin, counter, main_redis,
                                                  absent_sync_standby):
    writer = session(autocommit=False)
    writer.execute("SET synchronous_commit = on")
    writer.execute("SELECT redlock_acquire('commit-order:1')")
    writer.execute("UPDATE commit_order SET n = n + 1 WHERE id = 1")

    committed = threading.Event()

    def commit():
        writer.conn.commit()            # waits for the absent standby
        committed.set()

    t = threading.Thread(target=commit)
    t.start()
    wait_for_syncrep(admin, writer.pid)

    # commit record flushed, not yet visible: the lock is still held
    other = session()
    assert other.value("SELECT n FROM commit_order WHERE id = 1") == 0
    assert main_redis.exists("commit-order:1")
    assert other.value("SELECT redlock_try_acquire('commit-order:1')") is None
    assert not committed.is_set()

    admin.execute("SELECT pg_cancel_backend(%s)", (writer.pid,))
    wait_for(committed.is_set, timeout=10, what="COMMIT to return")
    t.join()
    # by the time COMMIT returned, the commit was visible and the lock gone
    assert not main_redis.exists("commit-order:1")
    assert other.value("SELECT n FROM commit_order WHERE id = 1") == 1
    assert other.value("SELECT redlock_try_acquire('commit-order:1')") is not None


def test_release_is_finished_when_commit_returns(session, counter, main_redis):
    s = session(autocommit=False)
    for _ in range(50):
        s.execute("SELECT redlock_acquire('commit-order:fast')")
        s.execute("UPDATE commit_order SET n = n + 1 WHERE id = 1")
        value = main_redis.get("commit-order:fast")
        assert value is not None and OWNER.match(value.decode())
        s.conn.commit()
        assert not main_redis.exists("commit-order:fast")


def test_rollback_and_error_release(session, main_redis):
    s = session(autocommit=False)
    s.execute("SELECT redlock_acquire('commit-order:rb', 60000)")
    assert main_redis.pttl("commit-order:rb") > 50000
    s.conn.rollback()
    assert not main_redis.exists("commit-order:rb")

    # an error aborts the transaction at once (as it releases advisory
    # locks): its work can never commit, so the lock goes right away
    s.execute("SELECT redlock_acquire('commit-order:err')")
    assert main_redis.exists("commit-order:err")
    with pytest.raises(psycopg2.errors.DivisionByZero):
        s.execute("SELECT 1/0")
    assert not main_redis.exists("commit-order:err")
    s.conn.rollback()


def test_lock_value_and_ttl_on_the_wire(session, main_redis):
    """The key is named exactly as given (after the prefix), holds 32 hex
    characters then "." and the holder's identity (system identifier, pid
    and start time, in hex), and expires after the TTL given."""
    s = session(autocommit=False)
    started = time.monotonic()
    s.execute("SELECT redlock_acquire('wire:check', 12345)")
    value = main_redis.get("wire:check").decode()
    sysid = s.value("SELECT system_identifier FROM pg_control_system()")
    assert OWNER.match(value) and int(value[:32], 16) >= 0, value
    assert value[33:].startswith(f"{sysid:x}.{s.pid:x}."), value
    pttl = main_redis.pttl("wire:check")
    # the TTL set, less what has passed since (however slow the backend)
    assert 12345 - 1000 * (time.monotonic() - started) - 2 <= pttl <= 12345
    s.execute("SET LOCAL redlock.key_prefix = 'app1:'")
    started = time.monotonic()
    s.execute("SELECT redlock_acquire('wire:check')")
    pttl = main_redis.pttl("app1:wire:check")
    assert 30000 - 1000 * (time.monotonic() - started) - 2 <= pttl <= 30000
    s.conn.commit()
    assert not main_redis.exists("wire:check") and not main_redis.exists("app1:wire:check")
