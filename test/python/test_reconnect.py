"""A connection the server dropped is replaced without the SQL caller
noticing: after CLIENT KILL, after a server restart, and after the server
was down for a while (calls fail with 08xxx meanwhile)."""

import pytest

from conftest import RedisProcess


def locks_work(s, key):
    assert s.value("SELECT redlock_acquire_session(%s)", (key,)) > 0
    assert s.value("SELECT redlock_release(%s)", (key,)) is True


def kill_clients(r):
    assert r.client().client_kill_filter(_type="normal", skipme=True) >= 1


@pytest.mark.parametrize("drop", [kill_clients, RedisProcess.restart],
                         ids=["client-kill", "restart"])
def test_dropped_connection_is_replaced(session, redis_server, drop):
    r = redis_server()
    s = session(servers=r.addr)
    locks_work(s, "reconnect:dropped")
    drop(r)
    locks_work(s, "reconnect:dropped")


def test_server_down_then_back(session, redis_server):
    r = redis_server()
    s = session(servers=r.addr)
    locks_work(s, "reconnect:down")
    r.kill()
    err = s.error("SELECT redlock_try_acquire_session('reconnect:down')")
    assert err.pgcode == "08001"
    assert "Connection refused" in err.diag.message_detail
    assert r.addr in err.diag.message_primary
    err = s.error("SELECT redlock_acquire('reconnect:down')")
    assert err.pgcode == "08001"
    r.start()
    locks_work(s, "reconnect:down")


def test_session_lock_survives_reconnect(session, redis_server):
    """A lock taken before the connection dropped is still released."""
    r = redis_server()
    s = session(servers=r.addr)
    s.execute("SELECT redlock_acquire_session('reconnect:held', 60000)")
    r.client().client_kill_filter(_type="normal", skipme=True)
    assert r.client().exists("reconnect:held")
    assert s.value("SELECT redlock_release('reconnect:held')") is True
    assert not r.client().exists("reconnect:held")


def test_unix_socket(session, redis_server):
    """A server named by its socket path, through a restart too."""
    r = redis_server()
    s = session(servers=r.socket)
    s.execute("SELECT redlock_acquire_session('unix:a', 60000)")
    assert r.client().exists("unix:a")
    assert s.value("SELECT redlock_release('unix:a')") is True
    r.restart()
    locks_work(s, "unix:b")
    r.kill()
    err = s.error("SELECT redlock_try_acquire('unix:c')")
    assert err.pgcode == "08001" and r.socket in err.diag.message_primary
