"""Credentials and isolation: Redis AUTH by password, password file and ACL
user with a database; clear 28000/42501 errors for wrong or missing
credentials and missing ACL rights; credentials nobody else can read (with
the library preloaded, or in redlock.passfile) and that no error message or
log line shows; tenants kept apart by redlock.key_prefix set per role or
database, which they cannot change."""

import os
import tempfile

import psycopg2
import pytest

from conftest import cursor_as, drop_roles

PASSWORD = "S3cr3t-pw-4-redlock"


@pytest.fixture
def auth_redis(redis_server):
    r = redis_server(args=["--requirepass", PASSWORD])
    r.password = PASSWORD
    return r


@pytest.fixture
def passfile():
    fd, path = tempfile.mkstemp(prefix="redlock-pass-")
    os.close(fd)
    os.chown(path, _postgres_uid(), -1)
    yield path
    os.unlink(path)


def _postgres_uid():
    import pwd
    return pwd.getpwnam("postgres").pw_uid


def test_password_setting(session, auth_redis):
    s = session(servers=auth_redis.addr)
    err = s.error("SELECT redlock_try_acquire('sec:a')")
    assert err.pgcode == "28000"                               # no password given
    # Redis says NOAUTH, or (to a long command) something about an
    # "unauthenticated" length, which redlock words for humans
    assert ("NOAUTH Authentication required" in err.diag.message_detail or
            "requires authentication and was given none" in err.diag.message_detail)
    assert "redlock.password" in err.diag.message_hint
    s.execute("SET redlock.password = 'wrong'")
    err = s.error("SELECT redlock_try_acquire('sec:a')")
    assert err.pgcode == "28000" and "WRONGPASS" in err.diag.message_detail
    assert "wrong" not in err.diag.message_detail.replace("WRONGPASS", "")
    s.execute("SET redlock.password = %s", (PASSWORD,))
    assert s.value("SELECT redlock_acquire_session('sec:a')") > 0
    assert auth_redis.client().exists("sec:a")
    assert s.value("SHOW redlock.password") == "********"
    s.execute("SELECT redlock_release_all()")


def test_password_file(session, auth_redis, passfile):
    with open(passfile, "w") as f:
        f.write("# host:port:user:password\n")
        f.write("otherhost:*:x:nope\n")
        f.write(f"127.0.0.1:{auth_redis.port}::{PASSWORD}\n")
    os.chmod(passfile, 0o600)
    s = session(servers=auth_redis.addr)
    s.execute("SET redlock.passfile = %s", (passfile,))
    assert s.value("SELECT redlock_acquire_session('sec:file')") > 0
    s.execute("SELECT redlock_release_all()")

    # a comment too long for one read, whose tail looks like a wrong entry
    with open(passfile, "w") as f:
        f.write("#" + "a" * 1022 + f"127.0.0.1:{auth_redis.port}::wrong\n")
        f.write(f"127.0.0.1:{auth_redis.port}::{PASSWORD}\n")
    s = session(servers=auth_redis.addr)
    s.execute("SET redlock.passfile = %s", (passfile,))
    assert s.value("SELECT redlock_acquire_session('sec:file')") > 0
    assert auth_redis.client().exists("sec:file")
    s.execute("SELECT redlock_release_all()")

    os.chmod(passfile, 0o644)                   # too open: ignored, and said so
    other = session(servers=auth_redis.addr)
    other.execute("SET redlock.passfile = %s", (passfile,))
    err = other.error("SELECT redlock_try_acquire('sec:file')")
    assert err.pgcode == "28000"
    assert "readable by group or others" in err.diag.message_detail


def test_acl_user_and_database(session, redis_server):
    r = redis_server()
    admin = r.client()
    admin.acl_setuser("locker", enabled=True, passwords=["+p@ss:w,rd"], keys=["~*"],
                      channels=["redlock:wake:*"],  # redis-py adds the "&"
                      commands=["+eval", "+evalsha", "+subscribe", "+select", "+auth",
                                "+set", "+get", "+del", "+exists", "+incr", "+pexpire",
                                "+pttl", "+time", "+zadd", "+zrem", "+zrange",
                                "+zrangebyscore", "+publish"])
    url = f"redis://locker:p%40ss%3Aw%2Crd@127.0.0.1:{r.port}/3"
    s = session(servers=url)
    assert s.value("SHOW redlock.servers") == f"redis://locker:********@127.0.0.1:{r.port}/3"
    assert s.value("SELECT redlock_acquire_session('sec:acl')") > 0
    assert r.client(db=3).exists("sec:acl") and not r.client(db=0).exists("sec:acl")
    assert s.value("SELECT address FROM redlock_servers WHERE configured") == f"127.0.0.1:{r.port}/3"
    s.execute("SELECT redlock_release_all()")

    # the same user and database given by settings instead of the entry
    s.execute("SET redlock.servers = %s", (r.addr,))
    s.execute("SET redlock.username = 'locker'")
    s.execute("SET redlock.password = 'p@ss:w,rd'")
    s.execute("SET redlock.database = 5")
    assert s.value("SELECT redlock_acquire_session('sec:acl2')") > 0
    assert r.client(db=5).exists("sec:acl2") and not r.client(db=0).exists("sec:acl2")
    s.execute("SELECT redlock_release_all()")
    for name in ("username", "password", "database"):
        s.execute(f"RESET redlock.{name}")

    # an entry that names the user and leaves the password to the settings
    s.execute("SET redlock.servers = %s", (f"redis://locker@127.0.0.1:{r.port}",))
    s.execute("SET redlock.password = 'p@ss:w,rd'")
    assert s.value("SELECT redlock_try_acquire('sec:acl3')") > 0
    s.execute("RESET redlock.password")

    # a user the ACL does not let run scripts
    admin.acl_setuser("weak", enabled=True, passwords=["+weak"], keys=["~*"], commands=["+get"])
    s.execute("SET redlock.servers = %s", (f"redis://weak:weak@127.0.0.1:{r.port}",))
    err = s.error("SELECT redlock_try_acquire('sec:acl')")
    assert err.pgcode == "42501" and "EVALSHA" in err.diag.message_hint


def test_a_failed_handshake_runs_nothing(session, redis_server):
    """AUTH and SELECT are answered before any script is sent: were they
    pipelined, a refused AUTH would run the script as the default user (here
    open, as it is on many servers with ACL users added) and a refused SELECT
    in database 0, leaving a lock nobody holds until its TTL."""
    r = redis_server()
    admin = r.client()
    admin.acl_setuser("locker", enabled=True, passwords=["+right"], keys=["~*"],
                      channels=["*"], commands=["+@all"])
    s = session(servers=f"redis://locker:wrong@127.0.0.1:{r.port}")
    err = s.error("SELECT redlock_try_acquire('sec:hs')")
    assert err.pgcode == "28000"
    s.execute("SET redlock.servers = %s", (f"redis://locker:right@127.0.0.1:{r.port}/99",))
    err = s.error("SELECT redlock_try_acquire('sec:hs')")
    assert err.pgcode == "08000" and "DB index" in err.diag.message_detail
    assert admin.keys("*") == [], "nothing ran"
    s.execute("SET redlock.servers = %s", (f"redis://locker:right@127.0.0.1:{r.port}/1",))
    assert s.value("SELECT redlock_try_acquire('sec:hs')") > 0      # and the control


def test_credentials_are_unreadable_when_preloaded(preloaded_cluster, auth_redis, database):
    c = psycopg2.connect(**preloaded_cluster)
    c.autocommit = True
    cur = c.cursor()
    cur.execute("CREATE EXTENSION redlock")
    cur.execute("CREATE ROLE sec_user LOGIN")
    cur.execute("ALTER SYSTEM SET redlock.servers = %s",
                (f"redis://:{PASSWORD}@127.0.0.1:{auth_redis.port}",))
    cur.execute("ALTER SYSTEM SET redlock.password = %s", (PASSWORD,))
    cur.execute("SELECT pg_reload_conf()")
    user = psycopg2.connect(**dict(preloaded_cluster, user="sec_user"))
    user.autocommit = True
    ucur = user.cursor()
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        ucur.execute("SHOW redlock.password")
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        ucur.execute("SHOW redlock.servers")      # its reset_val would not be masked
    ucur.execute("SELECT count(*) FROM pg_settings WHERE setting LIKE %s OR reset_val LIKE %s "
                 "OR boot_val LIKE %s", (f"%{PASSWORD}%",) * 3)
    assert ucur.fetchone()[0] == 0
    ucur.execute("SELECT address FROM redlock_servers WHERE configured")
    assert ucur.fetchone()[0] == f"127.0.0.1:{auth_redis.port}"
    cur.execute("SELECT current_setting('redlock.servers')")
    assert cur.fetchone()[0] == f"redis://:********@127.0.0.1:{auth_redis.port}"
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        ucur.execute("SET redlock.passfile = '/tmp/x'")
    cur.execute("ALTER SYSTEM RESET ALL")
    cur.execute("SELECT pg_reload_conf()")


def test_no_password_in_errors_or_the_log(session, redis_server):
    r = redis_server(args=["--requirepass", "other"])
    s = session(servers=f"redis://:{PASSWORD}@127.0.0.1:{r.port}")
    err = s.error("SELECT redlock_try_acquire('sec:log')")
    assert err.pgcode == "28000"
    assert PASSWORD not in str(err) and PASSWORD not in (err.diag.message_detail or "")
    err = s.error("SET redlock.servers = %s", (f"rediss://:{PASSWORD}@host:99999",))
    assert PASSWORD not in err.diag.message_primary and PASSWORD not in err.diag.message_detail
    log = os.path.join(os.environ.get("REDLOCK_RUN_DIR", "/tmp/redlock-run"), "postgresql.log")
    lines = [l for l in open(log, errors="replace") if PASSWORD in l]
    # only the statement text the client itself sent may be logged
    assert all(l.startswith(("STATEMENT:", "\tSTATEMENT:")) or "STATEMENT:" in l
               for l in lines), lines


def test_log_warns_of_credentials_in_settings_without_preload(session):
    s = session()
    log = os.path.join(os.environ.get("REDLOCK_RUN_DIR", "/tmp/redlock-run"), "postgresql.log")
    before = os.path.getsize(log)
    s.execute("SET redlock.password = 'x'")
    s.execute("RESET redlock.password")
    fresh = psycopg2.connect(dbname=s.conn.info.dbname)  # redlock not loaded yet
    fresh.autocommit = True
    cur = fresh.cursor()
    cur.execute("SET redlock.password = 'y'")            # a placeholder until...
    cur.execute("SELECT redlock_token('sec:x')")         # ...this loads the library
    fresh.close()
    with open(log, errors="replace") as f:
        f.seek(before)
        assert "readable by every role in sessions that have not loaded redlock" in f.read()


TENANTS = ("rl_tenant_a", "rl_tenant_b")


@pytest.fixture
def tenants(database):
    admin = psycopg2.connect(dbname=database)
    admin.autocommit = True
    cur = admin.cursor()
    drop_roles(cur, TENANTS)                        # from an interrupted run
    for role, prefix in zip(TENANTS, ("a:", "b:")):
        cur.execute(f"CREATE ROLE {role} LOGIN")
        cur.execute(f"ALTER ROLE {role} SET redlock.key_prefix = '{prefix}'")
        cur.execute(f"""GRANT EXECUTE ON FUNCTION redlock_acquire(text, integer, integer),
                        redlock_try_acquire(text, integer),
                        redlock_acquire_session(text, integer, integer),
                        redlock_release(text), redlock_release_all() TO {role}""")
    yield database
    drop_roles(cur, TENANTS)


def test_tenants_are_kept_apart_by_their_prefix(tenants, main_redis):
    a, b = cursor_as(tenants, "rl_tenant_a"), cursor_as(tenants, "rl_tenant_b")
    a.execute("SELECT redlock_acquire_session('order:1')")
    assert main_redis.exists("a:order:1") and not main_redis.exists("order:1")
    b.execute("SELECT redlock_try_acquire('order:1')")
    assert b.fetchone()[0] is not None, "the same key of another tenant is another lock"
    # a tenant cannot reach the other's key space: not by SET after the
    # library is loaded (42501) ...
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        b.execute("SET redlock.key_prefix = 'a:'")
    # ... nor by a SET before it is loaded: discarded when it loads
    c = cursor_as(tenants, "rl_tenant_b")
    c.execute("SET redlock.key_prefix = 'a:'")
    c.execute("SELECT redlock_try_acquire('order:1')")
    assert c.fetchone()[0] is not None, "still under b:, so a:order:1 was not in the way"
    c.execute("SHOW redlock.key_prefix")
    assert c.fetchone()[0] == "b:"
    a.execute("SELECT redlock_release_all()")
