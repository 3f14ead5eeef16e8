"""A frozen (SIGSTOPped) Redis: the kernel still accepts and queues our
requests, so only redlock.command_timeout ends the wait.  The acquire fails
within about that timeout, and the release queued behind it on the same
connection leaves the server clean when it resumes."""

import time

from conftest import cancel_while_waiting, wait_for


def test_frozen_server_times_out_and_ends_clean(session, redis_server):
    r = redis_server()
    s = session(servers=r.addr)
    s.execute("SET redlock.command_timeout = 300")
    assert s.value("SELECT redlock_acquire_session('frozen:a')") > 0   # connected
    r.freeze()
    started = time.monotonic()
    err = s.error("SELECT redlock_try_acquire_session('frozen:b')")
    elapsed = time.monotonic() - started
    assert err.pgcode == "08006"
    assert "no reply within 300 ms" in err.diag.message_detail
    assert elapsed < 2.0
    r.resume()
    client = r.client()
    # once it has run the queued acquire (its fencing counter exists), the
    # release queued behind it has run too
    wait_for(lambda: client.get(b"frozen:b\x00fence") is not None, what="the queued acquire")
    assert not client.exists("frozen:b")
    # the connection is usable again, and the earlier lock was never lost
    assert s.value("SELECT redlock_release('frozen:a')") is True
    assert not client.exists("frozen:a")


def test_cancel_while_frozen_leaves_nothing(session, admin, redis_server):
    """Cancelled while the acquire waits in a frozen server's socket: once
    the server resumes it applies the acquire and then our release."""
    r = redis_server()
    s = session(servers=r.addr)
    s.execute("SET redlock.command_timeout = 10000")
    assert s.value("SELECT redlock_acquire_session('frozen:warm')") > 0
    r.freeze()
    err, took = cancel_while_waiting(admin, s.pid, s.execute,
                                     "SELECT redlock_acquire('frozen:cancel')")
    assert err.pgcode == "57014"
    # the abort queues the cleanup and does not wait for the frozen server
    assert took < 2.0
    r.resume()
    client = r.client()
    wait_for(lambda: client.get(b"frozen:cancel\x00fence") is not None,
             what="the resumed server to run the queued acquire")
    assert not client.exists("frozen:cancel"), "and the release queued behind it"
