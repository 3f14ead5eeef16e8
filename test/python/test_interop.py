"""redis-py's Lock and redlock exclude each other on the same key: same
key name, string value, SET NX PX, owner-checked release."""

import redis


def test_redis_py_lock_excludes_redlock(session, main_redis):
    lock = main_redis.lock("interop:py", timeout=30)
    assert lock.acquire(blocking=False)
    s = session()
    assert s.value("SELECT redlock_try_acquire('interop:py')") is None
    err = s.error("SELECT redlock_acquire('interop:py', NULL, 100)")
    assert err.pgcode == "55P03"
    lock.release()
    assert s.value("SELECT redlock_try_acquire('interop:py')") is not None


def test_redlock_excludes_redis_py_lock(session, main_redis):
    s = session()
    s.execute("SELECT redlock_acquire_session('interop:pg')")
    lock = main_redis.lock("interop:pg", timeout=30)
    assert not lock.acquire(blocking=False)
    # redis-py cannot release what it does not own
    try:
        lock.do_release(b"not-the-owner")
    except redis.exceptions.LockNotOwnedError:
        pass
    assert main_redis.exists("interop:pg")
    assert s.value("SELECT redlock_release('interop:pg')") is True
    assert lock.acquire(blocking=False)
    lock.release()


def test_release_does_not_touch_a_lock_taken_over(session, main_redis):
    """Our lock expired and someone else took the key: our release returns
    false with a WARNING and leaves their lock alone."""
    s = session()
    s.execute("SELECT redlock_acquire_session('interop:lost', 50)")
    import time
    time.sleep(0.1)
    lock = main_redis.lock("interop:lost", timeout=30)
    assert lock.acquire(blocking=False)
    assert s.value("SELECT redlock_release('interop:lost')") is False
    assert "had expired or been taken over" in s.conn.notices[-1]
    assert lock.owned()
    lock.release()
