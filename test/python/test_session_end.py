"""Locks go when the backend goes: disconnect and pg_terminate_backend
release session locks and the locks of an unfinished transaction at once,
not after their TTL."""

import psycopg2
import pytest

from conftest import backend_wait_event, wait_for

TTL = 60000     # far longer than any wait below: only a release explains it


def test_disconnect_releases_session_locks(session, main_redis):
    s = session()
    s.execute("SELECT redlock_acquire_session('end:disconnect', %s)", (TTL,))
    s.execute("SELECT redlock_acquire_session('end:disconnect2', %s)", (TTL,))
    assert main_redis.exists("end:disconnect", "end:disconnect2") == 2
    s.close()
    wait_for(lambda: main_redis.exists("end:disconnect", "end:disconnect2") == 0,
             timeout=3, what="the session locks to be released")


def test_terminate_releases_session_locks(session, admin, main_redis):
    s = session()
    s.execute("SELECT redlock_acquire_session('end:terminate', %s)", (TTL,))
    admin.execute("SELECT pg_terminate_backend(%s)", (s.pid,))
    wait_for(lambda: not main_redis.exists("end:terminate"), timeout=3,
             what="the session lock to be released")


def test_terminate_releases_locks_of_open_transaction(session, admin, main_redis):
    s = session(autocommit=False)
    s.execute("SELECT redlock_acquire('end:xact', %s)", (TTL,))
    s.execute("SELECT redlock_acquire_session('end:xact-session', %s)", (TTL,))
    admin.execute("SELECT pg_terminate_backend(%s)", (s.pid,))
    wait_for(lambda: main_redis.exists("end:xact", "end:xact-session") == 0,
             timeout=3, what="the locks to be released")


def test_terminate_while_waiting_leaves_the_holder_alone(session, admin, main_redis):
    holder = session()
    holder.execute("SELECT redlock_acquire_session('end:wait', %s)", (TTL,))
    token = main_redis.get("end:wait")
    waiter = session()
    waiter.conn.cursor().execute("SELECT pg_sleep(0)")   # connection warm
    import threading

    def wait():
        with pytest.raises(psycopg2.OperationalError):
            waiter.execute("SELECT redlock_acquire('end:wait')")

    t = threading.Thread(target=wait)
    t.start()
    wait_for(lambda: backend_wait_event(admin, waiter.pid) == "Extension",
             what="the waiter to wait for Redis")
    admin.execute("SELECT pg_terminate_backend(%s)", (waiter.pid,))
    t.join(5)
    assert main_redis.get("end:wait") == token, "the holder's lock is untouched"
    assert holder.value("SELECT redlock_release('end:wait')") is True
