"""Sentinel entries and replica acknowledgement, against real servers on
loopback: a primary with a replica, watched by three redis-sentinel
processes (redis-server --sentinel).

A sentinel:// entry is one logical master: redlock asks the sentinels for
the primary, checks it with ROLE, and finds the new primary after a
failover.  redlock.replica_ack = 1 makes a master count as granting only
once its replica has the lock (WAIT), so a lock survives a failover; the
control runs with 0 show the lock lost when the primary dies before its
replica got the write, and a second holder following."""

import os
import shutil
import signal
import subprocess
import tempfile
import time

import psycopg2
import pytest
import redis

from conftest import backend_wait_event, free_port, in_thread, wait_for

MASTER = "mymaster"


class Sentinel:
    """A redis-sentinel of a test's own, watching one primary."""

    def __init__(self, primary_port, password=None):
        self.port = free_port()
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="redlock-sentinel-")
        conf = os.path.join(self.dir, "sentinel.conf")
        with open(conf, "w") as f:
            f.write(f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
                    f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
                    f"sentinel down-after-milliseconds {MASTER} 1000\n"
                    f"sentinel failover-timeout {MASTER} 4000\n"
                    f"sentinel parallel-syncs {MASTER} 1\n")
            if password:
                f.write(f"requirepass {password}\nsentinel sentinel-pass {password}\n")
        self.proc = subprocess.Popen(
            ["redis-server", conf, "--sentinel",
             "--logfile", os.path.join(self.dir, "sentinel.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, what=f"sentinel on {self.port}")

    def _answers(self):
        try:
            return self.client().ping()
        except redis.RedisError:
            return False

    def client(self):
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1,
                           password=self.password)

    def primary(self):
        host, port = self.client().execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
        return int(port)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Group:
    """A primary, its replica, three sentinels."""

    def __init__(self, redis_server, sentinel_password=None, replicas=1):
        fast = ["--repl-diskless-sync-delay", "0"]     # no 5 s wait for more replicas
        self.primary = redis_server(args=fast)
        self.replicas = [redis_server(args=fast + ["--replicaof", "127.0.0.1",
                                                  str(self.primary.port)])
                         for _ in range(replicas)]
        self.replica = self.replicas[0]
        wait_for(lambda: all(r.client().info("replication")["master_link_status"] == "up"
                             for r in self.replicas), what="the replicas' links")
        self.sentinels = [Sentinel(self.primary.port, sentinel_password) for _ in range(3)]
        # every sentinel knows the replica and the others before a failover
        wait_for(lambda: all(len(s.client().execute_command("SENTINEL", "REPLICAS", MASTER)) == replicas and
                             len(s.client().execute_command("SENTINEL", "SENTINELS", MASTER)) == 2
                             for s in self.sentinels), timeout=15, what="sentinels to know each other")
        self.nodes = {n.port: n for n in [self.primary, *self.replicas]}

    def entry(self, extra_first=None):
        hosts = [f"127.0.0.1:{s.port}" for s in self.sentinels]
        if extra_first:
            hosts.insert(0, extra_first)
        return f"sentinel://{';'.join(hosts)}/{MASTER}"

    def current(self):
        return self.nodes[self.sentinels[0].primary()]

    def wait_new_primary(self, old_port, timeout=30):
        """Wait until every sentinel names another primary and it says so."""
        def moved():
            ports = {s.primary() for s in self.sentinels if s.proc.poll() is None}
            if len(ports) != 1 or old_port in ports:
                return False
            node = self.nodes[ports.pop()]
            return node.client().execute_command("ROLE")[0] == b"master"
        wait_for(moved, timeout=timeout, interval=0.05, what="the failover")
        return self.current()

    def close(self):
        for s in self.sentinels:
            s.close()


@pytest.fixture
def group(redis_server):
    g = Group(redis_server)
    yield g
    g.close()


def test_entry_locks_on_the_primary_and_shows_in_the_views(session, group):
    s = session(servers=group.entry())
    token = s.value("SELECT redlock_acquire_session('sen:a')")
    assert token > 0
    assert group.primary.client().get("sen:a") is not None
    row = s.value("SELECT row(kind, node, state, failovers)::text FROM redlock_servers")
    assert row == f"(sentinel,127.0.0.1:{group.primary.port},connected,0)"
    assert s.value("SELECT redlock_release('sen:a')") is True
    assert not group.primary.client().exists("sen:a")


def test_a_dead_first_sentinel_is_skipped(session, group):
    s = session(servers=group.entry(extra_first=f"127.0.0.1:{free_port()}"))
    assert s.value("SELECT redlock_try_acquire_session('sen:skip')") > 0
    assert group.primary.client().exists("sen:skip")


def test_an_unknown_master_name_is_a_clear_error(session, group):
    entry = group.entry().replace(f"/{MASTER}", "/nosuchmaster")
    s = session(servers=entry)
    err = s.error("SELECT redlock_try_acquire_session('sen:unknown')")
    assert err.pgcode == "08001"
    assert 'no sentinel named the primary of "nosuchmaster"' in err.diag.message_detail
    assert "does not monitor a master of that name" in err.diag.message_detail


def test_sentinel_credentials_are_separate(session, redis_server):
    """Sentinels with a password of their own: the data node has none."""
    group = Group(redis_server, sentinel_password="sentinel-secret")
    try:
        sentinel_credentials(session, group)
    finally:
        group.close()


def sentinel_credentials(session, group):
    s = session(servers=group.entry())
    err = s.error("SELECT redlock_try_acquire_session('sen:auth')")
    assert err.pgcode == "08001" and "NOAUTH" in err.diag.message_detail
    s.execute("SET redlock.sentinel_password = 'sentinel-secret'")
    assert s.value("SELECT redlock_try_acquire_session('sen:auth')") > 0
    assert s.value("SHOW redlock.sentinel_password") == "********"


def test_replica_ack_needs_a_live_replica(session, group):
    """With replica_ack = 1 a frozen replica makes the acquire fail (and
    leave nothing on the primary); with 0 (control) the same acquire
    succeeds."""
    s = session(servers=group.entry())
    s.execute("SET redlock.command_timeout = 400")
    s.execute("SET redlock.replica_ack = 1")
    assert s.value("SELECT redlock_try_acquire_session('ack:live')") > 0
    assert group.replica.client().exists("ack:live")
    group.replica.freeze()
    try:
        err = s.error("SELECT redlock_try_acquire_session('ack:frozen')")
        assert err.pgcode == "08006"
        assert "0 of the 1 replicas redlock.replica_ack asks for acknowledged" in err.diag.message_detail
        assert not group.primary.client().exists("ack:frozen")
        s.execute("SET redlock.replica_ack = 0")
        assert s.value("SELECT redlock_try_acquire_session('ack:frozen')") > 0
    finally:
        group.replica.resume()


def quietly(s, sql):
    """s.value(sql), or None when it fails."""
    try:
        return s.value(sql)
    except psycopg2.Error:
        return None


def lose_the_primary_before_it_replicates(group, s, key):
    """Cut the replica off (frozen, its link closed by the primary), take
    key through s, kill the primary, thaw the replica: it has not seen the
    write when the sentinels promote it.  Returns the acquire's outcome (a
    token, or the error) and the new primary."""
    old = group.current()
    group.replica.freeze()
    old.client().execute_command("CLIENT", "KILL", "TYPE", "replica")
    try:
        outcome = s.value(f"SELECT redlock_try_acquire_session('{key}')")
    except psycopg2.Error as e:     # the acquire failed
        outcome = e
    old.kill()
    group.replica.resume()
    return outcome, group.wait_new_primary(old.port)


def test_without_replica_ack_a_lost_primary_loses_the_lock(session, group):
    """The control of the next test: replica_ack = 0, the acquire is
    granted although the replica cannot have it, the lock is lost with the
    primary, and a second holder follows."""
    a = session(servers=group.entry())
    b = session(servers=group.entry())
    for s in (a, b):
        s.execute("SET redlock.command_timeout = 400")
        s.execute("SET redlock.connect_timeout = 2000")
    a.execute("SET redlock.replica_ack = 0")
    assert a.value("SELECT redlock_try_acquire_session('ack:warm')") > 0  # connected
    outcome, new = lose_the_primary_before_it_replicates(group, a, "ack:lost")
    assert isinstance(outcome, int) and outcome > 0, "control: granted without the replica"
    assert not new.client().exists("ack:lost"), "the promoted replica never saw it"
    second = wait_for(lambda: b.value("SELECT redlock_try_acquire_session('ack:lost')"),
                      timeout=10, what="a second holder")
    assert second > 0, "two holders: the lock was lost in the failover"


def test_replica_ack_refuses_what_a_failover_could_lose(session, group):
    """replica_ack = 1, the same schedule: the acquire fails (08006, the
    replica did not acknowledge), so nobody holds a lock the failover
    loses, and the key is free for the next holder without a double."""
    a = session(servers=group.entry())
    a.execute("SET redlock.command_timeout = 400")
    a.execute("SET redlock.replica_ack = 1")
    assert a.value("SELECT redlock_try_acquire_session('ack:warm')") > 0
    outcome, new = lose_the_primary_before_it_replicates(group, a, "ack:kept")
    assert isinstance(outcome, psycopg2.Error) and outcome.pgcode == "08006", outcome
    assert "replicas redlock.replica_ack asks for" in outcome.diag.message_detail
    assert not a.value("SELECT count(*) FROM redlock_locks WHERE key = 'ack:kept'")


def test_failover_keeps_locks_and_waiters(session, admin, redis_server):
    """SENTINEL FAILOVER while a lock is held (replica_ack = 1) and another
    backend waits for it: the key moves with the replica, nobody else gets
    it, the holder releases it on the new primary, and the waiter then gets
    it.  Two replicas, as the README advises for replica_ack = 1: the other
    one follows the new primary at once.  Prints the time from the failover
    to the first new acquire."""
    group = Group(redis_server, replicas=2)
    try:
        failover_keeps_locks_and_waiters(session, admin, group)
    finally:
        group.close()


def waiter_got(waited, thread):
    """Whether the waiter took the key (released by the holder) already."""
    thread.join(10)
    return waited and isinstance(waited[0], int)


def failover_keeps_locks_and_waiters(session, admin, group):
    holder = session(servers=group.entry())
    waiter = session(servers=group.entry())
    other = session(servers=group.entry())
    for s in (holder, waiter, other):
        s.execute("SET redlock.replica_ack = 1")
        s.execute("SET redlock.connect_timeout = 2000")
    assert holder.value("SELECT redlock_acquire_session('fo:k', 60000)") > 0
    old = group.current()
    thread, waited = in_thread(waiter.value, "SELECT redlock_acquire_session('fo:k', 60000, 60000)")
    wait_for(lambda: backend_wait_event(admin, waiter.pid) == "Extension", what="the waiter")

    started = time.monotonic()
    group.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", MASTER)
    new = group.wait_new_primary(old.port)
    print(f"\nfailover to a new primary named: {time.monotonic() - started:.2f} s")
    assert new is not old and new.client().exists("fo:k")
    # until the old primary has resynced as the new one's replica, WAIT
    # fails and so does the acquire: that is replica_ack doing its job
    first = wait_for(lambda: quietly(other, "SELECT redlock_try_acquire_session('fo:other')"),
                     timeout=30, interval=0.05, what="an acquire on the new primary")
    print(f"failover to the first acquire (replica_ack = 1): {time.monotonic() - started:.2f} s")
    assert first > 0 and new.client().exists("fo:other")
    # nobody else got the held key
    assert other.value("SELECT redlock_try_acquire_session('fo:k')") is None
    assert holder.value("SELECT redlock_release('fo:k')") is True
    # released where the others look (the old primary, not yet demoted by
    # Sentinel, still accepts writes: the watch moved the holder away)
    assert not new.client().exists("fo:k") or waiter_got(waited, thread)
    thread.join(60)
    # the waiter rides out a retry that fell in the failover window
    assert waited and isinstance(waited[0], int) and waited[0] > 0, waited
    assert waiter.value("SELECT redlock_release('fo:k')") is True
    def free_again():
        try:
            return other.value("SELECT redlock_try_acquire_session('fo:k')")
        except psycopg2.Error as e:
            print("other:", e)
            return None
    try:
        wait_for(free_again, timeout=10, interval=0.2, what="fo:k free again")
    except AssertionError:
        print("waited", waited, "keys", new.client().keys("fo:k*"), new.client().get("fo:k"),
              new.client().info("replication"))
        raise
    # the holder was connected before: it saw the primary change
    assert holder.value("SELECT failovers FROM redlock_servers") == 1
    assert holder.value("SELECT failovers FROM redlock_stats") == 1
    assert holder.value("SELECT node FROM redlock_servers") == f"127.0.0.1:{new.port}"


def test_replica_ack_applies_to_extends(session, group):
    """An extend is confirmed only once the replica has it: with the
    replica cut off it fails; with replica_ack = 0 (control) it passes."""
    s = session(servers=group.entry())
    s.execute("SET redlock.command_timeout = 400")
    s.execute("SET redlock.replica_ack = 1")
    assert s.value("SELECT redlock_acquire_session('ack:ext', 5000)") > 0
    group.replica.freeze()
    try:
        group.primary.client().execute_command("CLIENT", "KILL", "TYPE", "replica")
        err = s.error("SELECT redlock_extend('ack:ext', 60000)")
        assert err.pgcode.startswith("08"), err
        assert "replicas redlock.replica_ack asks for" in (err.diag.message_detail or "")
        s.execute("SET redlock.replica_ack = 0")
        assert s.value("SELECT redlock_extend('ack:ext', 60000)") is True
    finally:
        group.replica.resume()


@pytest.mark.parametrize("entry, detail", [
    ("sentinel://127.0.0.1:1", "ends with /master-name"),
    ("sentinel://127.0.0.1:1/", "ends with /master-name"),
    ("sentinel:///m", "names no sentinel"),
    ("sentinel://127.0.0.1:1;;127.0.0.1:2/m", "empty or too long sentinel address"),
    ("sentinel://u:secret@127.0.0.1:1/m x", "master name may hold"),
    ("sentinel://127.0.0.1:1/m/x", 'invalid database number "x"'),
    ("sentinel://" + ";".join(f"127.0.0.1:{p}" for p in range(1, 10)) + "/m", "at most 8 sentinels"),
    ("sentinel:///tmp/s.sock/m", "names no sentinel"),
])
def test_malformed_entries_are_refused(session, entry, detail):
    s = session()
    err = s.error("SET redlock.servers = %s", (entry,))
    assert err.pgcode == "22023"
    assert detail in err.diag.message_detail
    assert "secret" not in str(err)


def test_the_entry_identity_holds_no_credentials(session):
    s = session(servers="sentinel://u:secret@127.0.0.1;[::1]:26380/m/2, 127.0.0.1:1")
    assert s.value("SELECT array_agg(address || ' ' || kind ORDER BY address) FROM redlock_servers") == [
        "127.0.0.1:1 master", "sentinel://127.0.0.1:26379;[::1]:26380/m/2 sentinel"]


def test_a_frozen_first_sentinel_is_given_up(session, group):
    """A sentinel that accepts connections and never answers (frozen) is
    given up after redlock.connect_timeout for the next one, and the next
    connect starts with the sentinel that answered."""
    group.sentinels[0].proc.send_signal(signal.SIGSTOP)
    try:
        s = session(servers=group.entry())
        s.execute("SET redlock.connect_timeout = 300")
        started = time.monotonic()
        assert s.value("SELECT redlock_try_acquire_session('sen:frozen')") > 0
        assert time.monotonic() - started < 3
        # a new connection (another backend) asks the sentinel that answered
        t = session(servers=group.entry())
        t.execute("SET redlock.connect_timeout = 300")
        assert t.value("SELECT redlock_try_acquire_session('sen:frozen2')") > 0
    finally:
        group.sentinels[0].proc.send_signal(signal.SIGCONT)


def test_a_frozen_sentinel_does_not_stall_a_commit(session, group):
    """The connection for the commit's release is resolved before the
    commit (a frozen sentinel given up on the way); the release at commit
    then reaches the primary."""
    s = session(servers=group.entry())
    s.execute("SET redlock.connect_timeout = 300")
    s.execute("BEGIN")
    assert s.value("SELECT redlock_acquire('sen:commit')") > 0
    group.primary.client().execute_command("CLIENT", "KILL", "TYPE", "normal")
    group.sentinels[0].proc.send_signal(signal.SIGSTOP)
    try:
        s.execute("SET LOCAL redlock.commit_margin = 0")
        s.execute("COMMIT")
        assert not group.primary.client().exists("sen:commit")
    finally:
        group.sentinels[0].proc.send_signal(signal.SIGCONT)


def test_replica_ack_refusals_stay_refusals(session, group):
    """A busy key is a refusal (NULL), not a replicas failure, even while
    the replica is cut off: a refusal wrote nothing it must have."""
    a = session(servers=group.entry())
    b = session(servers=group.entry())
    b.execute("SET redlock.command_timeout = 400")
    b.execute("SET redlock.replica_ack = 1")
    assert a.value("SELECT redlock_acquire_session('ack:busy')") > 0
    assert b.value("SELECT redlock_try_acquire_session('ack:warm')") > 0
    group.replica.freeze()
    try:
        group.primary.client().execute_command("CLIENT", "KILL", "TYPE", "replica")
        assert b.value("SELECT redlock_try_acquire_session('ack:busy')") is None
    finally:
        group.replica.resume()


def test_replica_ack_waits_once_per_batch(session, group):
    """50 locks re-armed together at commit cost one WAIT, not 50."""
    s = session(servers=group.entry())
    s.execute("SET redlock.replica_ack = 1")
    s.execute("BEGIN")
    for i in range(50):
        s.value(f"SELECT redlock_acquire('ack:many:{i}', 3000)")
    s.execute("SET LOCAL redlock.commit_margin = 5000")    # all under it
    primary = group.primary.client()

    def calls(stats, cmd):
        return stats.get(f"cmdstat_{cmd}", {}).get("calls", 0)
    before = primary.info("commandstats")
    s.execute("COMMIT")
    after = primary.info("commandstats")
    scripts = sum(calls(after, c) - calls(before, c) for c in ("eval", "evalsha"))
    assert scripts == 100, "50 re-arms and 50 releases"
    assert calls(after, "wait") - calls(before, "wait") == 1


def test_the_same_group_twice_is_refused(session, group):
    s = session()
    first = group.entry()
    second = f"sentinel://127.0.0.1:{group.sentinels[1].port}/{MASTER}"
    err = s.error("SET redlock.servers = %s", (f"{first}, {second}",))
    assert err.pgcode == "22023" and "listed more than once" in err.diag.message_detail


def test_long_entries_are_refused_not_overrun(session):
    host = "h" * 253
    entry = "sentinel://" + ";".join(f"{host}:{26379 + i}" for i in range(8)) + "/m"
    s = session()
    err = s.error("SET redlock.servers = %s", (entry,))
    assert err.pgcode == "22023" and "once written out" in err.diag.message_detail
    assert s.value("SELECT 1") == 1


def test_kind_comes_from_the_entry_not_its_spelling(session):
    s = session(servers="sentinel-1:6379")
    assert s.value("SELECT kind FROM redlock_servers") == "master"


def test_frozen_sentinels_do_not_stall_a_working_primary(session, group):
    """Once the primary is known, sentinels that stop answering (all three
    frozen) cost the locks nothing: acquires and releases go on at once."""
    s = session(servers=group.entry())
    assert s.value("SELECT redlock_acquire_session('sen:calm')") > 0
    # the session's watch is dropped, and no sentinel answers any more
    for sen in group.sentinels:
        sen.client().execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        sen.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        for i in range(5):
            assert s.value("SELECT redlock_acquire_session(%s)", (f"sen:calm{i}",)) > 0
            assert s.value("SELECT redlock_release(%s)", (f"sen:calm{i}",)) is True
        assert time.monotonic() - started < 1.0
        assert s.value("SELECT redlock_release('sen:calm')") is True
    finally:
        for sen in group.sentinels:
            sen.proc.send_signal(signal.SIGCONT)


def test_silent_sentinels_end_a_statement_in_time(session):
    """Two entries whose sentinels accept and never answer, one of them
    behind a refused one, with a 2 s connect timeout: the statement ends
    with 08xxx within those timeouts instead of waiting for the watches."""
    from conftest import free_port
    from test_hostile import FakeRedis
    silent = [FakeRedis("silent"), FakeRedis("silent")]
    try:
        s = session(servers=f"sentinel://{silent[0].addr}/a, "
                            f"sentinel://127.0.0.1:{free_port()};{silent[1].addr}/b")
        s.execute("SET redlock.connect_timeout = 2000")
        started = time.monotonic()
        err = s.error("SELECT redlock_try_acquire_session('sen:silent')")
        assert err.pgcode.startswith("08"), err
        assert time.monotonic() - started < 10
    finally:
        for f in silent:
            f.close()


def test_a_waiting_acquire_rides_out_a_failover(session, group):
    """The primary is killed outright; an acquire that waits (here up to
    30 s) gets the lock on the new primary once the sentinels have promoted
    the replica, instead of failing at once.  Control: a try at the same
    moment fails with 08xxx (it asked for no wait)."""
    a = session(servers=group.entry())
    b = session(servers=group.entry())
    for s in (a, b):
        s.execute("SET redlock.connect_timeout = 500")
        assert s.value("SELECT redlock_try_acquire_session('ride:warm')") is not None
        assert s.value("SELECT redlock_release('ride:warm')") is True
    old = group.current()
    old.kill()
    err = a.error("SELECT redlock_try_acquire_session('ride:k')")
    assert err.pgcode.startswith("08"), err
    started = time.monotonic()
    token = b.value("SELECT redlock_acquire_session('ride:k', 30000, 30000)")
    took = time.monotonic() - started
    print(f"\nkilled primary to a waiting acquire's grant: {took:.2f} s")
    assert token > 0
    new = group.wait_new_primary(old.port)
    assert new.client().exists("ride:k")
    assert took < 30
    assert b.value("SELECT redlock_release('ride:k')") is True


def point_sentinels_at(group, node):
    """Make node the primary without a failover the watch could hear of:
    promote it, tell every sentinel to monitor it instead (SENTINEL REMOVE
    and MONITOR send no switch-master notice), and demote the old primary
    under it (REPLICAOF keeps its clients connected: their writes now get
    READONLY)."""
    old = group.current()
    node.client().execute_command("REPLICAOF", "NO", "ONE")
    for sen in group.sentinels:
        c = sen.client()
        c.execute_command("SENTINEL", "REMOVE", MASTER)
        c.execute_command("SENTINEL", "MONITOR", MASTER, "127.0.0.1", node.port, 2)
    old.client().execute_command("REPLICAOF", "127.0.0.1", node.port)
    wait_for(lambda: old.client().execute_command("ROLE")[0] == b"slave",
             what="the old primary demoted")


def test_readonly_finds_the_new_primary(session, group):
    """A primary demoted under connected sessions answers READONLY: a try
    sees it once (08000 naming READONLY, the control), and asks the
    sentinels again; a waiting acquire rides it out and is granted on the
    new primary at once."""
    a = session(servers=group.entry())
    b = session(servers=group.entry())
    for s in (a, b):
        assert s.value("SELECT redlock_try_acquire_session('ro:warm')") is not None
        assert s.value("SELECT redlock_release('ro:warm')") is True
    old = group.current()
    point_sentinels_at(group, group.replica)
    assert a.value("SELECT pg_backend_pid()")      # still connected: no reset
    err = a.error("SELECT redlock_try_acquire_session('ro:a')")
    assert err.pgcode == "08000" and "READONLY" in err.diag.message_detail, err
    assert a.value("SELECT redlock_try_acquire_session('ro:a')") > 0
    assert group.replica.client().exists("ro:a")
    started = time.monotonic()
    assert b.value("SELECT redlock_acquire_session('ro:b', 30000, 10000)") > 0
    assert time.monotonic() - started < 5
    assert group.replica.client().exists("ro:b")
    assert b.value("SELECT node FROM redlock_servers") == f"127.0.0.1:{group.replica.port}"
    assert old.client().execute_command("ROLE")[0] == b"slave"


def test_a_ride_ends_at_the_wait_limit(session, group):
    """With no node left to promote, a waiting acquire rides until its wait
    limit of 1.5 s, then fails with 08xxx naming the last failure (not
    sooner: a failover might have come; not later: the limit holds)."""
    s = session(servers=group.entry())
    s.execute("SET redlock.connect_timeout = 300")
    assert s.value("SELECT redlock_try_acquire_session('ride:warm')") is not None
    group.replica.kill()
    group.current().kill()
    started = time.monotonic()
    err = s.error("SELECT redlock_acquire_session('ride:none', 30000, 1500)")
    took = time.monotonic() - started
    assert err.pgcode.startswith("08"), err
    assert "1 failed. First failure: server" in err.diag.message_detail, err
    assert 1.4 < took < 5, took


def test_a_ride_of_a_waiter_ends_with_08xxx(session, group, redis_server):
    """Redlock over the group and two masters; the key is held on both
    masters by another client, so the waiter queues and subscribes.  Then
    the group and one master die: a majority cannot answer, the waiter
    rides that out until its limit, and ends with 08xxx (not 55P03: the
    last answers it had were a failure, not a refusal)."""
    m1, m2 = redis_server(), redis_server()
    for m in (m1, m2):
        m.client().set("ride:held", "someone-else", px=60000)
    s = session(servers=f"{group.entry()}, {m1.addr}, {m2.addr}")
    s.execute("SET redlock.connect_timeout = 300")
    s.execute("SET redlock.retry_delay = 50")
    assert s.value("SELECT redlock_try_acquire_session('ride:warm')") is not None
    thread, outcome = in_thread(s.value, "SELECT redlock_acquire_session('ride:held', 30000, 3000)")
    time.sleep(0.5)                 # queued and subscribed
    m2.kill()
    group.replica.kill()
    group.current().kill()
    thread.join(10)
    assert outcome and isinstance(outcome[0], psycopg2.Error), outcome
    assert outcome[0].pgcode.startswith("08"), outcome[0]


def test_a_waiting_acquire_does_not_ride_out_other_errors(session, group):
    """An error no failover causes (OOM: the primary's memory is full) ends
    a waiting acquire at once with 08000, as before the ride existed: only
    failover-shaped failures (refused, dropped, READONLY, LOADING, ...)
    are waited out."""
    s = session(servers=group.entry())
    assert s.value("SELECT redlock_try_acquire_session('oom:warm')") is not None
    primary = group.current()
    primary.client().config_set("maxmemory", 1)
    try:
        started = time.monotonic()
        err = s.error("SELECT redlock_acquire_session('oom:k', 30000, 20000)")
        assert err.pgcode == "08000" and "OOM" in err.diag.message_detail, err
        assert time.monotonic() - started < 5
    finally:
        primary.client().config_set("maxmemory", 0)
