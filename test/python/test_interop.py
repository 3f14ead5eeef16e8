"""redis-py's Lock and redlock exclude each other on the same key: same
key name, string value, SET NX PX, owner-checked release."""

import secrets
import time

import redis

from conftest import counter_race, redlock_side, unlocked_side


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
    time.sleep(0.1)
    lock = main_redis.lock("interop:lost", timeout=30)
    assert lock.acquire(blocking=False)
    assert s.value("SELECT redlock_release('interop:lost')") is False
    assert "had expired or been taken over" in s.conn.notices[-1]
    assert lock.owned()
    lock.release()


CHECK_AND_DELETE = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
                    "return redis.call('del', KEYS[1]) else return 0 end")


def spin_lock_side(r, key):
    """A counter_race side: the SET NX EX spin lock of Lettuce or Jedis
    code (retry every 2 ms), released by compare-and-delete."""
    def side(s, bump):
        token = secrets.token_hex(16)
        while not r.set(key, token, nx=True, ex=10):
            time.sleep(0.002)
        bump(s)
        r.eval(CHECK_AND_DELETE, 1, key, token)
    return side


def test_set_nx_spin_lock_and_sql_exclude_each_other(session, main_redis):
    """Three spin-lock threads and three SQL sessions add to one counter
    under the key interop:spin; the control takes no lock."""
    assert counter_race(session, [unlocked_side] * 6) < 48, "the control loses updates"
    sides = [spin_lock_side(main_redis, "interop:spin"), redlock_side("interop:spin")] * 3
    assert counter_race(session, sides) == 48
