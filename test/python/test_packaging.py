"""Packaging: the control file, install script, META.json and CHANGELOG
agree on the version; every upgrade script leads to the same objects as a
fresh install of the version it reaches."""

import contextlib
import glob
import json
import os
import re

import psycopg2
import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def default_version():
    control = open(os.path.join(ROOT, "redlock.control")).read()
    return re.search(r"default_version\s*=\s*'([^']+)'", control).group(1)


def install_path(v):
    """The scripts that install version v: a base script, then upgrades
    (as PostgreSQL's contrib modules ship them; CREATE EXTENSION follows
    the same path)."""
    path = []
    while not os.path.exists(os.path.join(ROOT, "sql", f"redlock--{v}.sql")):
        ups = [u for u in upgrade_scripts() if u.endswith(f"--{v}.sql")]
        assert len(ups) == 1, f"no single way to version {v}: {ups}"
        path.insert(0, ups[0])
        v = re.match(r"redlock--(.+)--(.+)\.sql", ups[0]).group(1)
    return [f"redlock--{v}.sql"] + path


def test_versions_agree():
    v = default_version()
    path = install_path(v)
    meta = json.load(open(os.path.join(ROOT, "META.json")))
    assert meta["provides"]["redlock"]["file"] == f"sql/{path[0]}"
    assert meta["version"].startswith(v) and meta["provides"]["redlock"]["version"].startswith(v)
    assert f"## {v}" in open(os.path.join(ROOT, "CHANGELOG.md")).read()


def upgrade_scripts():
    return [os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "sql", "redlock--*--*.sql"))]


def objects(cur):
    """What the extension installed, described."""
    cur.execute("""SELECT pg_describe_object(classid, objid, objsubid)
                     || coalesce(' ' || pg_get_function_identity_arguments(objid)
                                 || ' -> ' || pg_get_function_result(objid), '')
                   FROM pg_depend d
                  WHERE refclassid = 'pg_extension'::regclass
                    AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'redlock')
                    AND deptype = 'e'
                  ORDER BY 1""")
    return [r[0] for r in cur.fetchall()]


@pytest.mark.skipif(not upgrade_scripts(), reason="only one version exists so far")
@pytest.mark.parametrize("script", upgrade_scripts())
def test_upgrade_path_matches_a_fresh_install(database, script):
    start, end = re.match(r"redlock--(.+)--(.+)\.sql", script).groups()
    conn = psycopg2.connect(dbname=database)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("DROP EXTENSION redlock CASCADE")
    try:
        cur.execute(f"CREATE EXTENSION redlock VERSION '{end}'")
        fresh = objects(cur)
        cur.execute("DROP EXTENSION redlock")
        cur.execute(f"CREATE EXTENSION redlock VERSION '{start}'")
        cur.execute(f"ALTER EXTENSION redlock UPDATE TO '{end}'")
        assert objects(cur) == fresh
    finally:
        cur.execute("DROP EXTENSION IF EXISTS redlock")
        cur.execute("CREATE EXTENSION redlock")


@contextlib.contextmanager
def extension_at(database, version):
    """A cursor on database with the extension reinstalled at version; the
    default version is back afterwards."""
    conn = psycopg2.connect(dbname=database)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("DROP EXTENSION redlock CASCADE")
    try:
        cur.execute(f"CREATE EXTENSION redlock VERSION '{version}'")
        yield cur
    finally:
        cur.execute("DROP EXTENSION IF EXISTS redlock CASCADE")
        cur.execute("CREATE EXTENSION redlock")
        conn.close()


def test_servers_view_before_and_after_the_update_to_1_1(database):
    """The library serves a database still on 1.0 (the view without the TLS
    columns) until ALTER EXTENSION redlock UPDATE adds them."""
    with extension_at(database, "1.0") as cur:
        cur.execute("SELECT * FROM redlock_servers")
        assert len(cur.description) == 10 and cur.fetchall()
        cur.execute("ALTER EXTENSION redlock UPDATE TO '1.1'")
        cur.execute("SELECT tls, tls_version, tls_cipher FROM redlock_servers")
        assert cur.fetchall()


def test_update_to_1_1_keeps_what_users_built_on_the_servers_view(database):
    """A view of the user's on redlock_servers, and the privileges set on
    it, survive ALTER EXTENSION redlock UPDATE (a DROP VIEW in the upgrade
    script would refuse to run, or drop them with CASCADE)."""
    with extension_at(database, "1.0") as cur:
        cur.execute("CREATE VIEW my_masters AS SELECT address, state FROM redlock_servers")
        cur.execute("REVOKE SELECT ON redlock_servers FROM PUBLIC")
        cur.execute("ALTER EXTENSION redlock UPDATE TO '1.1'")
        cur.execute("SELECT * FROM my_masters")
        assert cur.fetchall()
        cur.execute("SELECT has_table_privilege('public', 'redlock_servers', 'SELECT')")
        assert cur.fetchone()[0] is False, "the REVOKE was undone by the update"
        cur.execute("SELECT tls FROM redlock_servers")
        assert cur.fetchall()


def test_locks_view_before_and_after_the_update_to_1_2(database):
    """A database still on 1.1 keeps its redlock_locks (no "kept") with this
    library; the update adds the column and redlock_locks_cluster, and keeps
    a user's view on redlock_locks and the privileges set on it."""
    with extension_at(database, "1.1") as cur:
        cur.execute("SET redlock.servers = '127.0.0.1:%s'" % os.environ.get("REDLOCK_REDIS_PORT", "16379"))
        cur.execute("SELECT redlock_acquire_session('p:view')")
        cur.execute("SELECT * FROM redlock_locks")
        assert len(cur.description) == 10 and cur.rowcount == 1
        cur.execute("CREATE VIEW my_locks AS SELECT key, token FROM redlock_locks")
        cur.execute("REVOKE SELECT ON redlock_locks FROM PUBLIC")
        cur.execute("ALTER EXTENSION redlock UPDATE TO '1.2'")
        cur.execute("SELECT key, kept FROM redlock_locks")
        assert cur.fetchall() == [("p:view", False)]
        cur.execute("SELECT key FROM my_locks")
        assert cur.fetchall() == [("p:view",)]
        cur.execute("SELECT has_table_privilege('public', 'redlock_locks', 'SELECT')")
        assert cur.fetchone()[0] is False, "the REVOKE was undone by the update"
        cur.execute("SELECT to_regclass('redlock_locks_cluster') IS NOT NULL")
        assert cur.fetchone()[0]
        cur.execute("SELECT redlock_release_all()")


def test_servers_and_stats_views_before_and_after_the_update_to_1_3(database):
    """A database still on 1.2 keeps its redlock_servers and redlock_stats
    (without the Sentinel columns) with this library; the update adds kind,
    node and failovers at their end and keeps a user's view and privileges."""
    port = os.environ.get("REDLOCK_REDIS_PORT", "16379")
    with extension_at(database, "1.2") as cur:
        cur.execute("SET redlock.servers = '127.0.0.1:%s'" % port)
        cur.execute("SELECT redlock_acquire_session('p:v13')")
        cur.execute("SELECT * FROM redlock_servers")
        assert len(cur.description) == 13 and cur.rowcount == 1
        cur.execute("SELECT * FROM redlock_stats")
        assert len(cur.description) == 16 and cur.fetchone()[0] >= 1
        cur.execute("CREATE VIEW my_servers AS SELECT address, state FROM redlock_servers")
        cur.execute("CREATE VIEW my_stats AS SELECT acquires, since FROM redlock_stats")
        cur.execute("REVOKE SELECT ON redlock_servers FROM PUBLIC")
        cur.execute("ALTER EXTENSION redlock UPDATE TO '1.3'")
        cur.execute("SELECT address, kind, node, failovers FROM redlock_servers")
        assert cur.fetchall() == [(f"127.0.0.1:{port}", "master", f"127.0.0.1:{port}", 0)]
        cur.execute("SELECT acquires, failovers, since IS NOT NULL FROM redlock_stats")
        acquires, failovers, since = cur.fetchone()
        assert acquires >= 1 and failovers == 0 and since
        cur.execute("SELECT count(*) FROM my_servers")
        assert cur.fetchone()[0] == 1
        cur.execute("SELECT acquires FROM my_stats")
        assert cur.fetchone()[0] >= 1
        # the functions behind 1.2's views are gone: the views are the API
        cur.execute("SELECT to_regprocedure('redlock_stats()'), to_regprocedure('redlock_server_list()')")
        assert cur.fetchone() == (None, None)
        cur.execute("SELECT has_table_privilege('public', 'redlock_servers', 'SELECT')")
        assert cur.fetchone()[0] is False, "the REVOKE was undone by the update"
        cur.execute("SELECT redlock_release_all()")


def test_locks_views_before_and_after_the_update_to_1_4(database):
    """A database still on 1.3 keeps redlock_locks (without "mode") with
    this library and has no shared functions; the update adds them and
    "mode" at the end of both lock views, keeping a user's view and
    privileges; 1.3's functions behind the views are gone."""
    port = os.environ.get("REDLOCK_REDIS_PORT", "16379")
    with extension_at(database, "1.3") as cur:
        cur.execute("SET redlock.servers = '127.0.0.1:%s'" % port)
        cur.execute("SELECT redlock_acquire_session('p:v14')")
        cur.execute("SELECT * FROM redlock_locks")
        assert len(cur.description) == 11 and cur.rowcount == 1
        cur.execute("SELECT to_regprocedure('redlock_acquire_shared(text,integer,integer)')")
        assert cur.fetchone()[0] is None
        cur.execute("CREATE VIEW my_locks AS SELECT key, scope FROM redlock_locks")
        cur.execute("REVOKE SELECT ON redlock_locks FROM PUBLIC")
        cur.execute("ALTER EXTENSION redlock UPDATE TO '1.4'")
        cur.execute("SELECT redlock_acquire_shared_session('p:v14s') > 0")
        assert cur.fetchone()[0] is True
        cur.execute("SELECT key, mode FROM redlock_locks ORDER BY key")
        assert cur.fetchall() == [("p:v14", "exclusive"), ("p:v14s", "shared")]
        cur.execute("SELECT count(*) FROM my_locks")
        assert cur.fetchone()[0] == 2
        cur.execute("SELECT to_regprocedure('redlock_lock_list()'), "
                    "to_regprocedure('redlock_locks_cluster()')")
        assert cur.fetchone() == (None, None)
        cur.execute("SELECT has_table_privilege('public', 'redlock_locks', 'SELECT')")
        assert cur.fetchone()[0] is False, "the REVOKE was undone by the update"
        cur.execute("SELECT redlock_release_shared('p:v14s'), redlock_release_all()")


def test_key_arrays_before_and_after_the_update_to_1_5(database):
    """A database still on 1.4 has no functions of several keys: an array
    is refused there (no such function), a literal names one key, and
    redlock_stats works without the deadlock counters; the update adds
    the array forms, revoked from PUBLIC like the others, and the
    counters at the end of the stats views (a user's view survives)."""
    port = os.environ.get("REDLOCK_REDIS_PORT", "16379")
    with extension_at(database, "1.4") as cur:
        cur.execute("SET redlock.servers = '127.0.0.1:%s'" % port)
        cur.execute("SELECT to_regprocedure('redlock_acquire(text[],integer,integer)')")
        assert cur.fetchone()[0] is None
        cur.execute("SELECT redlock_acquire_session('{p:v15}') > 0")
        assert cur.fetchone()[0] is True
        cur.execute("SELECT * FROM redlock_stats")
        assert len(cur.description) == 18 and cur.fetchone()[0] >= 1
        cur.execute("CREATE VIEW my_stats AS SELECT acquires FROM redlock_stats")
        cur.execute("ALTER EXTENSION redlock UPDATE TO '1.5'")
        cur.execute("SELECT deadlock_checks, deadlocks FROM redlock_stats")
        assert cur.fetchone() == (0, 0)
        cur.execute("SELECT count(*) FROM my_stats")
        assert cur.fetchone()[0] == 1
        cur.execute("SELECT to_regprocedure('redlock_stats_v3()'), "
                    "to_regprocedure('redlock_stats_cluster_v3()')")
        assert cur.fetchone() == (None, None)
        cur.execute("SELECT redlock_acquire_session(ARRAY['p:v15a', 'p:v15b'])")
        assert len(cur.fetchone()[0]) == 2
        cur.execute("SELECT key FROM redlock_locks ORDER BY key")
        assert cur.fetchall() == [("p:v15a",), ("p:v15b",), ("{p:v15}",)]
        for sig in ("redlock_acquire(text[],integer,integer)",
                    "redlock_try_acquire_shared_session(text[],integer)",
                    "redlock_release(text[])"):
            cur.execute("SELECT has_function_privilege('public', %s, 'EXECUTE')", (sig,))
            assert cur.fetchone()[0] is False, sig
        cur.execute("SELECT redlock_release(ARRAY['p:v15a', 'p:v15b']), redlock_release_all()")
        assert cur.fetchone() == (True, 1)
