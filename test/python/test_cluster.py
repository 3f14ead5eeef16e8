"""cluster:// entries against a real Redis Cluster on loopback: three
masters, each with a replica (redis-server --cluster-enabled yes, joined
with redis-cli --cluster create).

A cluster entry is one logical master whose keys live on many nodes:
redlock sends each lock's scripts to the node of its slot, learns the map
with CLUSTER SLOTS, follows MOVED and ASK, and names the companion keys
with a hash tag of the lock key's slot, so that no script touches two
slots (Redis Cluster refuses such a script: the waiting tests would fail
with a cross-slot error if one did)."""

import os
import random
import socket
import subprocess
import threading
import time

import psycopg2
import pytest
import redis

from conftest import backend_wait_event, in_thread, wait_for


def cluster_port():
    """A port for a cluster node: its bus listens 10000 higher, so both must
    be free and below 65536 (free_port's may be too high)."""
    while True:
        port = random.randint(20000, 45000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue


class Cluster:
    """Six nodes, three masters with a replica each."""

    def __init__(self, redis_server, replicas=1):
        args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "2000", "--repl-diskless-sync-delay", "0"]
        self.nodes = [redis_server(port=cluster_port(), args=args)
                      for _ in range(3 * (1 + replicas))]
        subprocess.run(["redis-cli", "--cluster", "create",
                        *[n.addr for n in self.nodes], "--cluster-replicas", str(replicas),
                        "--cluster-yes"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        wait_for(lambda: all(self.info(n)["cluster_state"] == "ok" for n in self.nodes),
                 timeout=20, interval=0.1, what="the cluster")
        # every replica synchronised (a manual failover waits for that)
        wait_for(lambda: all(r["master_link_status"] == "up" and not r["master_sync_in_progress"]
                             for r in (n.client().info("replication") for n in self.nodes)
                             if r["role"] == "slave") and
                 sum(n.client().info("replication")["role"] == "slave"
                     for n in self.nodes) == 3 * replicas and
                 all(r.get("slave0", {}).get("state") == "online"
                     for r in (n.client().info("replication") for n in self.nodes)
                     if r["role"] == "master" and replicas),
                 timeout=20, interval=0.1, what="the replicas")
        self.by_port = {n.port: n for n in self.nodes}

    @staticmethod
    def info(node):
        text = node.client().execute_command("CLUSTER", "INFO").decode()
        return dict(line.split(":", 1) for line in text.split() if ":" in line)

    def entry(self):
        return "cluster://" + ";".join(n.addr for n in self.nodes[:3])

    def client(self):
        return redis.RedisCluster(host="127.0.0.1", port=self.nodes[0].port)

    def masters(self):
        return [n for n in self.nodes
                if n.proc.poll() is None and n.client().execute_command("ROLE")[0] == b"master"]

    def node_id(self, node):
        return node.client().execute_command("CLUSTER", "MYID").decode()

    def owner(self, key):
        """The master that serves key's slot now."""
        slot = self.nodes[0].client().execute_command("CLUSTER", "KEYSLOT", key)
        for lo, hi, master, *_ in self.nodes[0].client().execute_command("CLUSTER", "SLOTS"):
            if lo <= slot <= hi:
                return self.by_port[master[1]]
        raise AssertionError(f"no owner for slot {slot}")

    def move_slot(self, key, to):
        """Move key's slot, with its keys, to master "to" (the steps of
        redis-cli --cluster reshard for one slot)."""
        src = self.owner(key)
        slot = src.client().execute_command("CLUSTER", "KEYSLOT", key)
        to.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", self.node_id(src))
        src.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", self.node_id(to))
        while True:
            keys = src.client().execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
            if not keys:
                break
            src.client().execute_command("MIGRATE", "127.0.0.1", to.port, "", 0, 5000,
                                         "KEYS", *keys)
        for m in self.masters():
            m.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", self.node_id(to))
        return src


@pytest.fixture
def cluster(redis_server):
    return Cluster(redis_server)


def test_locks_spread_over_every_master_with_their_companions(session, cluster):
    s = session(servers=cluster.entry())
    keys = [f"c:{i}" for i in range(300)] + ["{user:42}:cart", "a{b", "x{}y{z}", "{"]
    for k in keys:
        assert s.value("SELECT redlock_acquire_session(%s)", (k,)) > 0
    c = cluster.client()
    per_master = {m.port: m.client().dbsize() for m in cluster.masters()}
    assert all(n > 0 for n in per_master.values()), per_master
    # each fencing counter shares its lock's node (its slot: a hash tag)
    for k in keys:
        owner = cluster.owner(k)
        counters = [f for f in owner.client().keys("*") if f.endswith(b"\x00fence")
                    and f.split(b"}", 1)[1] == k.encode() + b"\x00fence"]
        assert len(counters) == 1, (k, owner.port)
    row = s.value("SELECT row(kind, node)::text FROM redlock_servers WHERE configured")
    assert row == '(cluster,"3 nodes, 16384 slots known")'
    # the entry's row tells of its nodes' connections (one per master)
    row = s.value("SELECT row(state, connects, last_rtt_ms IS NOT NULL, replies_owed)::text "
                  "FROM redlock_servers WHERE kind = 'cluster'")
    assert row == "(connected,3,t,0)", row
    assert s.value("SELECT redlock_release_all()") == len(keys)
    assert not any(c.exists(k) for k in keys[:20])


def test_waiters_are_woken_on_a_cluster(session, admin, cluster):
    """The queue and its companion keys live in the lock key's slot; the
    release wakes the waiter (classic pub/sub reaches every node)."""
    holder = session(servers=cluster.entry())
    waiter = session(servers=cluster.entry())
    for key in ("cw:plain", "{tag}cw", "cw{"):
        assert holder.value("SELECT redlock_acquire_session(%s)", (key,)) > 0
        thread, got = in_thread(waiter.value, "SELECT redlock_acquire_session(%s, 30000, 20000)"
                                % psycopg2.extensions.adapt(key).getquoted().decode())
        wait_for(lambda: backend_wait_event(admin, waiter.pid) == "Extension", what="the waiter")
        time.sleep(0.3)                 # it is queued
        started = time.monotonic()
        assert holder.value("SELECT redlock_release(%s)", (key,)) is True
        thread.join(20)
        assert got and isinstance(got[0], int) and got[0] > 0, got
        assert time.monotonic() - started < 0.5, "woken, not found by its timer"
        assert waiter.value("SELECT redlock_release(%s)", (key,)) is True


def test_a_moved_slot_is_followed_for_held_and_new_locks(session, admin, cluster):
    """The slot of a held, waited-for key moves to another master: the
    release follows MOVED to the new owner, the waiter then gets the key
    there, and a new acquire goes straight to it."""
    holder = session(servers=cluster.entry())
    waiter = session(servers=cluster.entry())
    key = "moving:1"
    assert holder.value("SELECT redlock_acquire_session(%s, 60000)", (key,)) > 0
    thread, got = in_thread(waiter.value,
                            "SELECT redlock_acquire_session('moving:1', 30000, 20000)")
    wait_for(lambda: backend_wait_event(admin, waiter.pid) == "Extension", what="the waiter")
    target = next(m for m in cluster.masters() if m is not cluster.owner(key))
    src = cluster.move_slot(key, target)
    slot = src.client().execute_command("CLUSTER", "KEYSLOT", key)
    assert target.client().exists(key)
    assert src.client().execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    assert holder.value("SELECT redlock_release(%s)", (key,)) is True
    thread.join(20)
    assert got and isinstance(got[0], int) and got[0] > 0, got
    assert target.client().exists(key)
    assert waiter.value("SELECT redirects FROM redlock_stats") + \
        holder.value("SELECT redirects FROM redlock_stats") >= 1
    assert waiter.value("SELECT redlock_release(%s)", (key,)) is True


def test_a_slot_in_migration_is_served(session, cluster):
    """While a slot migrates (MIGRATING on its owner, IMPORTING on the
    target, the key's fencing counter moved already), an acquire meets ASK
    on the owner, then TRYAGAIN on the target (a script whose keys are not
    all there): it tries again until the migration ends, then succeeds on
    the new owner."""
    s = session(servers=cluster.entry())
    s.execute("SET redlock.command_timeout = 5000")
    key = "mig:1"
    src = cluster.owner(key)
    dst = next(m for m in cluster.masters() if m is not src)
    assert s.value("SELECT redlock_acquire_session(%s)", (key,)) > 0     # counter on src
    assert s.value("SELECT redlock_release(%s)", (key,)) is True
    slot = src.client().execute_command("CLUSTER", "KEYSLOT", key)
    dst.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", cluster.node_id(src))
    src.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", cluster.node_id(dst))
    keys = src.client().execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
    src.client().execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *keys)
    thread, got = in_thread(s.value, f"SELECT redlock_try_acquire_session('{key}')")
    time.sleep(0.5)
    assert thread.is_alive(), "it waits for the migration: TRYAGAIN"
    for m in cluster.masters():
        m.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", cluster.node_id(dst))
    thread.join(10)
    assert got and isinstance(got[0], int) and got[0] > 0, got
    assert dst.client().exists(key)
    assert s.value("SELECT redlock_release(%s)", (key,)) is True
    assert not dst.client().exists(key)


def test_a_cluster_failover_keeps_the_lock(session, cluster):
    """CLUSTER FAILOVER on the replica of the master that holds a lock
    (taken with replica_ack = 1): the lock is released on the new master,
    and nobody else could take it meanwhile."""
    s = session(servers=cluster.entry())
    other = session(servers=cluster.entry())
    s.execute("SET redlock.replica_ack = 1")
    key = "fo:c"

    def acquired():
        try:
            return s.value("SELECT redlock_acquire_session(%s, 60000)", (key,))
        except psycopg2.Error:          # the replica's first acknowledgements
            return None
    assert wait_for(acquired, timeout=10, interval=0.1, what="the first acquire") > 0
    old = cluster.owner(key)
    replica = next(n for n in cluster.nodes
                   if n.client().execute_command("ROLE")[0] == b"slave" and
                   n.client().info("replication")["master_port"] == old.port)
    # a manual failover gives up after 5 s when the master does not answer
    # in time (a loaded machine): ask again
    for attempt in range(4):
        replica.client().execute_command("CLUSTER", "FAILOVER")
        try:
            wait_for(lambda: cluster.owner(key) is replica, timeout=6, interval=0.1,
                     what="the replica to take over")
            break
        except AssertionError:
            if attempt == 3:
                raise
    assert replica.client().exists(key)
    assert other.value("SELECT redlock_try_acquire_session(%s)", (key,)) is None
    assert s.value("SELECT redlock_release(%s)", (key,)) is True
    assert not replica.client().exists(key)
    assert other.value("SELECT redlock_try_acquire_session(%s)", (key,)) > 0


def node(entry, *args):
    here = os.path.join(os.path.dirname(__file__), "..", "node")
    return subprocess.Popen(["node", "redlock_client.js", entry, *args], cwd=here,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_node_redlock_on_the_cluster_and_sql_exclude_each_other(session, cluster):
    """node-redlock with ioredis's Cluster client and SQL, on the same keys
    of the same cluster."""
    s = session(servers=cluster.entry())
    for key in ("nc:1", "nc:2", "{nc}3"):
        holder = node(cluster.entry(), "try", key, "30000")
        assert holder.stdout.readline().startswith("acquired")
        assert s.value("SELECT redlock_try_acquire_session(%s)", (key,)) is None
        holder.stdin.write("release\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        assert s.value("SELECT redlock_try_acquire_session(%s)", (key,)) > 0
        other = node(cluster.entry(), "try", key, "30000")
        assert other.stdout.readline().strip() == "busy"
        other.wait(10)
        assert s.value("SELECT redlock_release(%s)", (key,)) is True


@pytest.mark.parametrize("entry, detail", [
    ("cluster://", "names no node"),
    ("cluster://127.0.0.1:7000/1", "has no database but 0"),
    ("cluster://127.0.0.1:7000;;127.0.0.1:7001", "empty or too long node address"),
])
def test_malformed_cluster_entries_are_refused(session, entry, detail):
    err = session().error("SET redlock.servers = %s", (entry,))
    assert err.pgcode == "22023" and detail in err.diag.message_detail


def test_reshard_while_locked_and_waited(session, admin, cluster):
    """redis-cli --cluster reshard moves 3000 slots while 60 locks are held
    and a backend waits for one: every release finds its lock where it
    went (MOVED followed), and the waiter then gets its key."""
    holder = session(servers=cluster.entry())
    waiter = session(servers=cluster.entry())
    keys = [f"rs:{i}" for i in range(60)]
    for k in keys:
        assert holder.value("SELECT redlock_acquire_session(%s, 120000)", (k,)) > 0
    thread, got = in_thread(waiter.value, "SELECT redlock_acquire_session('rs:7', 30000, 60000)")
    wait_for(lambda: backend_wait_event(admin, waiter.pid) == "Extension", what="the waiter")
    src, dst = cluster.masters()[:2]
    subprocess.run(["redis-cli", "--cluster", "reshard", src.addr,
                    "--cluster-from", cluster.node_id(src), "--cluster-to", cluster.node_id(dst),
                    "--cluster-slots", "3000", "--cluster-yes"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    moved = sum(cluster.owner(k) is dst for k in keys)
    assert moved > 0
    for k in keys:
        assert holder.value("SELECT redlock_release(%s)", (k,)) is True, k
    thread.join(30)
    assert got and isinstance(got[0], int) and got[0] > 0, got
    assert holder.value("SELECT redirects FROM redlock_stats") >= 1


def test_redlock_over_a_sentinel_group_a_cluster_and_a_master(session, cluster, redis_server):
    """Any mix is one Redlock: a lock needs two of the three, wherever they
    are, and the third may be gone."""
    from test_sentinel import Group
    group = Group(redis_server)
    plain = redis_server()
    try:
        s = session(servers=f"{group.entry()}, {cluster.entry()}, {plain.addr}")
        # the cluster's map first: a first request to a seed that is not
        # the key's node is redirected, and once a majority has answered the
        # redirection is not followed (the README says so)
        assert s.value("SELECT redlock_acquire('mix:warm') > 0")
        wait_for(lambda: s.value("SELECT node FROM redlock_servers WHERE kind = 'cluster'")
                 .endswith("16384 slots known"), what="the slot map")
        assert s.value("SELECT redlock_acquire_session('mix:1')") > 0
        # a majority is enough to return (the third gets it when its
        # connection is next used)
        assert group.primary.client().exists("mix:1") + \
            cluster.owner("mix:1").client().exists("mix:1") + \
            plain.client().exists("mix:1") >= 2
        assert s.value("SELECT array_agg(kind ORDER BY kind) FROM redlock_servers WHERE configured") == \
            ["cluster", "master", "sentinel"]
        plain.kill()
        assert s.value("SELECT redlock_acquire_session('mix:2')") > 0
        assert group.primary.client().exists("mix:2")
        assert cluster.owner("mix:2").client().exists("mix:2")
        assert s.value("SELECT redlock_release('mix:2')") is True
        assert s.value("SELECT redlock_release('mix:1')") is True
        assert not cluster.owner("mix:1").client().exists("mix:1")
    finally:
        group.close()


def test_a_dead_master_is_replaced(session, cluster):
    """A master killed outright: once its replica has taken over, keys of
    its slots are locked there (redlock stops asking the dead node and
    learns the new map from another).  An acquire that waits rides the
    takeover out: it is granted on the new master instead of failing."""
    s = session(servers=cluster.entry())
    b = session(servers=cluster.entry())
    for c in (s, b):
        c.execute("SET redlock.connect_timeout = 300")
        c.execute("SET redlock.command_timeout = 300")
    key = "dead:1"
    rider = "{dead:1}b"         # the same slot
    assert s.value("SELECT redlock_acquire_session(%s)", (key,)) > 0
    assert s.value("SELECT redlock_release(%s)", (key,)) is True
    assert b.value("SELECT redlock_acquire_session(%s)", (rider,)) > 0
    assert b.value("SELECT redlock_release(%s)", (rider,)) is True
    dead = cluster.owner(key)
    dead.kill()
    thread, rode = in_thread(b.value, "SELECT redlock_acquire_session(%s, 30000, 40000)", (rider,))
    survivor = cluster.nodes[0] if cluster.nodes[0] is not dead else cluster.nodes[1]

    def taken_over():
        slots = survivor.client().execute_command("CLUSTER", "SLOTS")
        slot = survivor.client().execute_command("CLUSTER", "KEYSLOT", key)
        return any(lo <= slot <= hi and m[1] != dead.port for lo, hi, m, *_ in slots)
    wait_for(taken_over, timeout=30, interval=0.2, what="the replica to take over")

    def acquired():
        try:
            return s.value("SELECT redlock_acquire_session(%s)", (key,))
        except psycopg2.Error:
            return None
    assert wait_for(acquired, timeout=15, interval=0.2, what="an acquire on the new master") > 0
    thread.join(40)
    assert rode and isinstance(rode[0], int) and rode[0] > 0, rode


def test_a_long_lived_session_outlasts_many_node_changes(session, admin, redis_server):
    """A session that lives while its cluster's nodes are replaced again and
    again (here one master announced at a new address 270 times, each a
    proxy in front of it, the old one closed) keeps learning the new node:
    nodes no longer in the map are reused, so more than the 256 a cluster
    entry keeps are met without losing the map (before, every node after
    the 256th was unknown and its slots served by redirection only)."""
    from proxy import RedisProxy
    node = redis_server(port=cluster_port(),
                        args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
    node.client().execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
    wait_for(lambda: Cluster.info(node)["cluster_state"] == "ok", what="a one-node cluster")
    entry = f"cluster://{node.addr}"
    s = session(servers=entry)
    s.execute("SET redlock.connect_timeout = 300")
    prev = None
    try:
        for i in range(270):
            q = RedisProxy(node.port)
            node.client().config_set("cluster-announce-port", q.port)
            if prev:
                prev.close()
            prev = q
            row = f"127.0.0.1:{q.port} of {entry}"

            def through_new_node():
                try:        # the first call after a node closed may fail
                    s.value("SELECT redlock_try_acquire(%s)", (f"long:{i}",))
                except psycopg2.Error:
                    return False
                state = s.value("SELECT state FROM redlock_servers WHERE address = %s", (row,))
                return state == "connected"
            wait_for(through_new_node, timeout=10, interval=0.01, what=f"node {i} in use")
        assert s.value("SELECT node FROM redlock_servers WHERE kind = 'cluster'").endswith(
            "16384 slots known")
        assert s.value("SELECT count(*) FROM redlock_servers WHERE kind = 'cluster node'") <= 256
        # the entry counts every node's connects, also those of reused nodes
        assert s.value("SELECT connects FROM redlock_servers WHERE kind = 'cluster'") >= 270
    finally:
        if prev:
            prev.close()


def test_a_seed_outside_the_cluster_is_passed_over(session, cluster, redis_server):
    """The first seed is a cluster-enabled node that belongs to no cluster
    (one reset, or restarted empty: it serves no slot and its CLUSTER SLOTS
    is empty).  Its empty map is not taken for the cluster's, and it is
    passed over: after at most a failed first call, keys lock on the real
    masters (before, every call went back to it and failed for good)."""
    lonely = redis_server(port=cluster_port(),
                          args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
    s = session(servers=f"cluster://{lonely.addr};" + cluster.entry()[len("cluster://"):])

    def locked():
        try:
            return s.value("SELECT redlock_try_acquire_session('lonely:0')")
        except psycopg2.Error:
            return None
    assert wait_for(locked, timeout=10, interval=0.2, what="a lock past the lonely seed") > 0
    for i in range(1, 30):
        assert s.value("SELECT redlock_try_acquire_session(%s)", (f"lonely:{i}",)) > 0
    assert s.value("SELECT node FROM redlock_servers WHERE kind = 'cluster'").endswith(
        "16384 slots known")
    assert s.value("SELECT redlock_release_all()") == 30


def test_shared_locks_on_a_cluster(session, cluster):
    """Shared holds on a cluster: the readers' set is named with the slot's
    tag, so it lives on the key's node (a script touching two slots would
    fail); readers share, a writer is refused, and the last release frees
    the key for it."""
    a, b, w = (session(servers=cluster.entry()) for _ in range(3))
    keys = [f"csh:{i}" for i in range(20)]
    for k in keys:
        assert a.value("SELECT redlock_acquire_shared_session(%s)", (k,)) > 0
        assert b.value("SELECT redlock_acquire_shared_session(%s)", (k,)) > 0
        assert w.value("SELECT redlock_try_acquire_session(%s)", (k,)) is None
    for k in keys[:5]:
        owner = cluster.owner(k).client()
        sets = [x for x in owner.keys("*") if x.endswith(k.encode() + b"\x00readers")]
        assert len(sets) == 1 and owner.zcard(sets[0]) == 2
    assert a.value("SELECT redlock_release_all()") == len(keys)
    assert b.value("SELECT redlock_release_all()") == len(keys)
    for k in keys:
        assert w.value("SELECT redlock_try_acquire_session(%s)", (k,)) > 0


def test_sets_of_keys_and_deadlocks_on_a_cluster(session, admin, cluster):
    """Keys of a set on different nodes are taken in one batch (one script
    per key, each on its node), all or nothing: a try with one key held
    elsewhere leaves none of the others on any node.  A shared waiter is
    woken by the writer's release.  Two sessions in a cycle of waits: one
    ends with 40P01 (the wait records live on the node of the registry's
    slot, the holders are read on each key's node)."""
    a, b = (session(servers=cluster.entry()) for _ in range(2))
    keys = [f"cset:{i}" for i in range(12)]
    nodes = {cluster.owner(k).port for k in keys}
    assert len(nodes) > 1, "the keys spread over several nodes"
    assert b.value("SELECT redlock_acquire_session('cset:7')") > 0
    assert a.value("SELECT redlock_try_acquire_session(%s::text[])", (keys,)) is None
    assert not any(cluster.owner(k).client().exists(k) for k in keys if k != "cset:7")
    assert b.value("SELECT redlock_release('cset:7')") is True
    tokens = a.value("SELECT redlock_acquire_session(%s::text[])", (keys,))
    assert len(tokens) == 12 and all(t > 0 for t in tokens)

    # a reader waits for the writer a is, and is woken by its release
    t, got = in_thread(b.value, "SELECT redlock_acquire_shared_session('cset:3', 30000, 20000)")
    wait_for(lambda: backend_wait_event(admin, b.pid) == "Extension", what="the reader")
    time.sleep(0.3)
    assert a.value("SELECT redlock_release(%s::text[])", (keys,)) is True
    t.join(20)
    assert got and isinstance(got[0], int) and got[0] > 0, got
    assert b.value("SELECT redlock_release_shared('cset:3')") is True

    # a deadlock through keys on two nodes
    x, y = "cdl:x", "cdl:y{other}"
    for s in (a, b):
        s.execute("BEGIN")
    a.execute("SET LOCAL deadlock_timeout = '10s'")
    b.execute("SET LOCAL deadlock_timeout = '300ms'")
    a.value("SELECT redlock_acquire(%s)", (x,))
    b.value("SELECT redlock_acquire(%s)", (y,))
    t, out = in_thread(a.value, "SELECT redlock_acquire(%s, 30000, 20000)", (y,))
    wait_for(lambda: backend_wait_event(admin, a.pid) == "Extension", what="a to wait")
    err = b.error("SELECT redlock_acquire(%s, 30000, 20000)", (x,))
    assert err.pgcode == "40P01", err.pgerror
    b.execute("ROLLBACK")
    t.join(20)
    assert isinstance(out[0], int), out
    a.execute("COMMIT")
