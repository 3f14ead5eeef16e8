"""TLS to Redis: rediss:// masters (redis-server's own TLS port, with
certificates made here with openssl), checked as libpq checks PostgreSQL's
(redlock.sslmode require, verify-ca, verify-full), with a client
certificate for servers that want one.  Locks, releases, the commit check,
quorum with a frozen TLS master, and wake-ups all work over TLS, also next
to plain masters; each way a TLS connection can fail gives a clear error in
bounded time; node-redlock over TLS and SQL exclude each other."""

import os
import shutil
import subprocess
import tempfile
import time

import psycopg2
import pytest
import redis

from conftest import SLOW, RedisProcess, backend_wait_event, in_thread, wait_for

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def openssl(*args, cwd, faketime=None):
    cmd = ["openssl", *args]
    if faketime:
        cmd = ["faketime", faketime] + cmd
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


class Certs:
    """A CA, and certificates signed by it (and by a second, untrusted CA),
    in a directory the postgres user can read."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="redlock-certs-")
        os.chmod(self.dir, 0o755)
        self.ca("ca")
        self.ca("other-ca")
        self.cert("server", "ca", "IP:127.0.0.1,DNS:localhost")
        self.cert("untrusted", "other-ca", "IP:127.0.0.1,DNS:localhost")
        self.cert("wrong-host", "ca", "DNS:other.example")
        self.cert("expired", "ca", "IP:127.0.0.1,DNS:localhost", faketime="3 years ago")
        self.cert("client", "ca", None)
        self.cert("revoked", "ca", "IP:127.0.0.1,DNS:localhost")
        self.crls()
        openssl("pkey", "-in", "client.key", "-aes256", "-passout", "pass:secret",
                "-out", "encrypted.key", cwd=self.dir)
        pw = shutil.chown
        for f in os.listdir(self.dir):
            path = self.path(f)
            pw(path, "postgres")
            os.chmod(path, 0o600 if f.endswith(".key") else 0o644)

    def path(self, name):
        return os.path.join(self.dir, name)

    def ca(self, name):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "3650",
                "-subj", f"/CN=redlock test {name}", cwd=self.dir)

    def cert(self, name, ca, san, faketime=None):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=redlock {name}",
                cwd=self.dir)
        ext = []
        if san:
            with open(self.path(f"{name}.ext"), "w") as f:
                f.write(f"subjectAltName={san}\n")
            ext = ["-extfile", f"{name}.ext"]
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "1" if faketime else "3650",
                *ext, cwd=self.dir, faketime=faketime)

    def crls(self):
        """ca-empty.crl revokes nothing; ca-revoked.crl revokes revoked.crt."""
        with open(self.path("ca.cnf"), "w") as f:
            f.write("[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\n"
                    "crlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 30\n")
        open(self.path("index.txt"), "w").close()
        with open(self.path("crlnumber"), "w") as f:
            f.write("01\n")
        ca = ["-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.crt"]
        openssl("ca", *ca, "-gencrl", "-out", "ca-empty.crl", cwd=self.dir)
        openssl("ca", *ca, "-revoke", "revoked.crt", cwd=self.dir)
        openssl("ca", *ca, "-gencrl", "-out", "ca-revoked.crl", cwd=self.dir)

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def certs():
    c = Certs()
    yield c
    c.close()


class TlsRedis(RedisProcess):
    """A redis-server that speaks only TLS, on its TLS port, with the
    certificate `cert` (of Certs); clients must show one when
    auth_clients."""

    def __init__(self, certs, cert="server", auth_clients=False, port=None, extra=()):
        self.certs = certs
        self.cert = cert
        self.auth_clients = auth_clients
        self.extra = list(extra)
        super().__init__(port=port)

    @property
    def url(self):
        return f"rediss://127.0.0.1:{self.port}"

    def start(self):
        c = self.certs
        self.args = ["--tls-port", str(self.port), "--port", "0",
                     "--tls-cert-file", c.path(f"{self.cert}.crt"),
                     "--tls-key-file", c.path(f"{self.cert}.key"),
                     "--tls-ca-cert-file", c.path("ca.crt"),
                     "--tls-auth-clients", "yes" if self.auth_clients else "no",
                     *self.extra]
        self.proc = subprocess.Popen(
            # "-::1": also IPv6 loopback where there is one (rediss://localhost)
            ["redis-server", "--bind", "127.0.0.1", "-::1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, *self.args,
             "--logfile", os.path.join(self.dir, "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, what=f"TLS redis on {self.port}")

    def _answers(self):
        try:
            return self.client(socket_timeout=0.5).ping()
        except (redis.RedisError, OSError):
            return False

    def client(self, **kw):
        """The test's own client: it shows the client certificate, and
        checks nothing (some servers here have bad certificates on purpose)."""
        c = self.certs
        return redis.Redis(host="127.0.0.1", port=self.port, ssl=True, ssl_cert_reqs="none",
                           ssl_check_hostname=False, ssl_certfile=c.path("client.crt"),
                           ssl_keyfile=c.path("client.key"), **kw)


@pytest.fixture
def tls_redis(certs):
    """Factory of TLS redis-servers: tls_redis(cert="server", auth_clients=False)."""
    made = []

    def make(**kw):
        made.append(TlsRedis(certs, **kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


def tls_session(session, certs, servers_value, mode="verify-full", **settings):
    s = session(servers=servers_value)
    # a first handshake under valgrind (OpenSSL's start-up under memcheck)
    # can take more than the default second on a loaded machine
    settings.setdefault("connect_timeout", 1000 * SLOW)
    s.execute("SET redlock.sslmode = %s", (mode,))
    s.execute("SET redlock.sslrootcert = %s", (certs.path("ca.crt"),))
    for name, value in settings.items():
        s.execute(f"SET redlock.{name} = %s", (value,))
    return s


def server_row(s, addr):
    with s.conn.cursor() as cur:
        cur.execute("SELECT * FROM redlock_servers WHERE address = %s", (addr,))
        names = [d[0] for d in cur.description]
        return dict(zip(names, cur.fetchone()))


# -- what works over TLS --

def test_locks_over_tls(session, certs, tls_redis):
    r = tls_redis()
    s = tls_session(session, certs, r.url)
    s.execute("BEGIN")
    token = s.value("SELECT redlock_acquire('tls:a', 60000)")
    assert token > 0 and r.client().exists("tls:a")
    s.execute("COMMIT")
    assert not r.client().exists("tls:a"), "released at commit, over TLS"
    assert s.value("SELECT redlock_acquire_session('tls:s', 60000)") > 0
    assert s.value("SELECT redlock_extend('tls:s', 90000)") is True
    assert r.client().pttl("tls:s") > 85000
    assert s.value("SELECT redlock_release('tls:s')") is True
    row = server_row(s, f"127.0.0.1:{r.port}")
    assert row["tls"] is True and row["state"] == "connected"
    assert row["tls_version"] in ("TLSv1.2", "TLSv1.3") and row["tls_cipher"]
    assert s.value("SHOW redlock.servers") == r.url


def test_commit_check_over_tls(session, certs, tls_redis):
    """A lock lost while the transaction held it fails the commit (40001),
    and one near expiry is re-armed at commit, over TLS."""
    r = tls_redis()
    s = tls_session(session, certs, r.url)
    s.execute("BEGIN")
    s.execute("SET LOCAL redlock.commit_margin = 60000")
    s.execute("SELECT redlock_acquire('tls:commit', 5000)")
    s.execute("COMMIT")
    assert s.value("SELECT commit_extends FROM redlock_stats") == 1
    s.execute("BEGIN")
    s.execute("SET LOCAL redlock.commit_margin = 60000")
    s.execute("SELECT redlock_acquire('tls:lost', 5000)")
    r.client().delete("tls:lost")
    err = s.error("COMMIT")
    assert err.pgcode == "40001"


@pytest.mark.parametrize("third", ["plain", "tls"])
def test_mixed_list_and_a_frozen_tls_master(session, certs, tls_redis, redis_server, third):
    """Two TLS masters and a third (plain, or TLS too); with one TLS
    master frozen, locks are still taken and released at once, and the
    frozen master applies its queued requests when it resumes."""
    a, b = tls_redis(), tls_redis()
    plain = redis_server() if third == "plain" else tls_redis()
    s = tls_session(session, certs,
                    f"{a.url}, {b.url}, {plain.addr if third == 'plain' else plain.url}")
    s.execute("SET redlock.command_timeout = 2000")
    s.execute("SET redlock.connect_timeout = %s", (1000 * SLOW,))

    def all_connected():
        # a lock needs a majority only: repeat until every handshake is done
        try:
            s.execute("SELECT redlock_acquire_session('tls:warm'), redlock_release('tls:warm')")
        except psycopg2.OperationalError:
            return False        # handshakes under valgrind: slow, they go on
        return s.value("SELECT count(*) FROM redlock_servers WHERE configured"
                       " AND state = 'connected'") == 3

    wait_for(all_connected, what="connections to all three masters")
    b.freeze()
    try:
        started = time.monotonic()
        assert s.value("SELECT redlock_acquire_session('tls:mixed', 60000)") > 0
        assert a.client().exists("tls:mixed") and plain.client().exists("tls:mixed")
        assert s.value("SELECT redlock_release('tls:mixed')") is True
        assert time.monotonic() - started < 1.5 * SLOW, "no wait for the frozen TLS master"
    finally:
        b.resume()
    client = b.client()
    wait_for(lambda: client.get(b"tls:mixed\x00fence") is not None, what="the queued acquire")
    assert not client.exists("tls:mixed"), "and the release queued behind it"


def test_wake_ups_over_tls(session, admin, certs, tls_redis):
    r = tls_redis()
    holder = tls_session(session, certs, r.url)
    waiter = tls_session(session, certs, r.url)
    waiter.execute("SET redlock.retry_delay = '60s'")
    waiter.execute("SET redlock.retry_jitter = 0")
    holder.execute("SELECT redlock_acquire_session('tls:wake')")
    t, got = in_thread(waiter.value, "SELECT redlock_acquire_session('tls:wake')")
    wait_for(lambda: r.client().zcard(b"tls:wake\x00waiters") == 1, what="the waiter to queue")
    wait_for(lambda: backend_wait_event(admin, waiter.pid) == "Extension",
             what="the waiter to wait")
    wait_for(lambda: len(r.client().pubsub_channels()) == 1, what="its subscription, over TLS")
    released = time.monotonic()
    holder.execute("SELECT redlock_release('tls:wake')")
    t.join(10)
    assert got and got[0] > 0
    # woken at once (whatever is left of its one-second refresh cycle)
    assert time.monotonic() - released < 0.5 * SLOW


def test_client_certificate(session, certs, tls_redis):
    """A master that asks for a client certificate (tls-auth-clients yes):
    refused without one, clearly; accepted with redlock.sslcert/sslkey."""
    r = tls_redis(auth_clients=True)
    s = tls_session(session, certs, r.url)
    err = s.error("SELECT redlock_try_acquire('tls:mutual')")
    # TLS 1.3: the refusal comes after our side of the handshake, as an alert
    assert err.pgcode == "08001", (err.pgcode, str(err))
    assert f"127.0.0.1:{r.port}" in err.diag.message_primary
    assert "TLS handshake failed" in err.diag.message_detail, err.diag.message_detail
    # not one handshake per call while it cannot succeed: a backoff
    assert s.value("SELECT backoff_until IS NOT NULL FROM redlock_servers WHERE address = %s",
                   (f"127.0.0.1:{r.port}",)), "no backoff after a refused handshake"
    if SLOW == 1:       # under valgrind the 100 ms backoff is over before the next call
        again = s.error("SELECT redlock_try_acquire('tls:mutual')")
        assert "not retried for" in again.diag.message_detail, again.diag.message_detail
    # a setting put right is tried at once, backoff or not
    s.execute("SET redlock.sslcert = %s", (certs.path("client.crt"),))
    s.execute("SET redlock.sslkey = %s", (certs.path("client.key"),))
    assert s.value("SELECT redlock_try_acquire('tls:mutual')") > 0


# -- how each failure shows --

def tls_error(session, certs, r_url, mode="verify-full", **settings):
    s = tls_session(session, certs, r_url, mode=mode, **settings)
    s.execute("SET redlock.connect_timeout = 2000")
    started = time.monotonic()
    err = s.error("SELECT redlock_try_acquire('tls:fail')")
    return err, time.monotonic() - started


@pytest.mark.parametrize("cert, mode, detail", [
    ("untrusted", "verify-full", "certificate was not accepted: unable to get local issuer certificate"),
    ("untrusted", "verify-ca", "certificate was not accepted: unable to get local issuer certificate"),
    ("expired", "verify-full", "certificate was not accepted: certificate has expired"),
    ("wrong-host", "verify-full", "certificate was not accepted: IP address mismatch"),
])
def test_certificate_checks(session, certs, tls_redis, cert, mode, detail):
    r = tls_redis(cert=cert)
    err, took = tls_error(session, certs, r.url, mode=mode)
    assert err.pgcode == "08001", (err.pgcode, str(err))
    assert f'could not reach Redis server "127.0.0.1:{r.port}"' in err.diag.message_primary
    assert detail in err.diag.message_detail, err.diag.message_detail
    assert took < 2.0 * SLOW


@pytest.mark.parametrize("cert, mode", [("wrong-host", "verify-ca"), ("untrusted", "require")])
def test_weaker_modes_accept_what_they_do_not_check(session, certs, tls_redis, cert, mode):
    """verify-ca does not check the host name; require without a root
    certificate checks nothing (it only encrypts), as in libpq."""
    r = tls_redis(cert=cert)
    s = tls_session(session, certs, r.url, mode=mode)
    if mode == "require":
        s.execute("RESET redlock.sslrootcert")
    assert s.value("SELECT redlock_try_acquire('tls:weak')") > 0


def test_require_with_a_root_certificate_checks_the_ca(session, certs, tls_redis):
    """libpq: sslmode=require with a root certificate file behaves as
    verify-ca."""
    r = tls_redis(cert="untrusted")
    err, _ = tls_error(session, certs, r.url, mode="require")
    assert "unable to get local issuer certificate" in err.diag.message_detail


def test_verify_full_checks_a_host_name(session, certs, tls_redis):
    """rediss://localhost: the name is checked against the certificate's
    DNS names (and sent as SNI)."""
    good = tls_redis()
    s = tls_session(session, certs, f"rediss://localhost:{good.port}")
    assert s.value("SELECT redlock_try_acquire('tls:name')") > 0
    bad = tls_redis(cert="wrong-host")
    err, _ = tls_error(session, certs, f"rediss://localhost:{bad.port}")
    assert err.pgcode == "08001"
    assert "certificate was not accepted: hostname mismatch" in err.diag.message_detail, \
        err.diag.message_detail


def test_revoked_certificate_is_refused(session, certs, tls_redis):
    """redlock.sslcrl: a certificate the CA revoked is refused; the same
    server passes with a list that does not name it (the control)."""
    r = tls_redis(cert="revoked")
    s = tls_session(session, certs, r.url, sslcrl=certs.path("ca-empty.crl"))
    assert s.value("SELECT redlock_try_acquire('tls:crl')") > 0
    err, _ = tls_error(session, certs, r.url, sslcrl=certs.path("ca-revoked.crl"))
    assert err.pgcode == "08001"
    assert "certificate was not accepted: certificate revoked" in err.diag.message_detail, \
        err.diag.message_detail


def test_verify_ca_needs_a_root_certificate_file(session, certs, tls_redis):
    """verify-ca against the system's store would take any publicly signed
    certificate for any host: refused, as libpq refuses sslrootcert=system
    without verify-full."""
    r = tls_redis()
    s = tls_session(session, certs, r.url, mode="verify-ca")
    s.execute("RESET redlock.sslrootcert")
    err = s.error("SELECT redlock_try_acquire('tls:ca')")
    assert err.pgcode == "08001"
    assert "verify-ca needs redlock.sslrootcert" in err.diag.message_detail, \
        err.diag.message_detail
    assert "verify-full" in err.diag.message_detail


def test_encrypted_key_is_refused_without_asking(session, certs, tls_redis):
    """A key protected by a passphrase: a backend has no one to ask (and
    must not read its stdin): a clear message, at once."""
    r = tls_redis(auth_clients=True)
    err, took = tls_error(session, certs, r.url, sslcert=certs.path("client.crt"),
                          sslkey=certs.path("encrypted.key"))
    assert err.pgcode == "08001"
    assert "is protected by a passphrase" in err.diag.message_detail, err.diag.message_detail
    assert took < 1.0 * SLOW


def test_a_renewed_root_certificate_file_is_read_again(session, certs, tls_redis):
    """A file replaced under the same name (certificates are renewed that
    way) is read again by the next connection of the same backend, as a
    new libpq connection reads it; no setting changes."""
    r = tls_redis()
    roots = certs.path("roots.crt")
    shutil.copy(certs.path("other-ca.crt"), roots)
    s = tls_session(session, certs, r.url, sslrootcert=roots)
    err = s.error("SELECT redlock_try_acquire('tls:renew')")
    assert "certificate was not accepted" in err.diag.message_detail
    # control: the same file, after the backoff: still refused
    time.sleep(0.3)
    err = s.error("SELECT redlock_try_acquire('tls:renew')")
    assert "certificate was not accepted" in err.diag.message_detail, \
        err.diag.message_detail
    # the file is replaced (a new file renamed over it), as renewals do
    shutil.copy(certs.path("ca.crt"), roots + ".new")
    os.chmod(roots + ".new", 0o644)
    os.rename(roots + ".new", roots)
    time.sleep(0.5)                     # past the backoff (at most 200 ms here)
    assert s.value("SELECT redlock_try_acquire('tls:renew')") > 0


def test_tls_spoken_to_a_plain_port(session, certs, redis_server):
    plain = redis_server()
    err, took = tls_error(session, certs, f"rediss://{plain.addr}")
    assert err.pgcode.startswith("08"), err.pgcode
    assert "not speak TLS on this port" in err.diag.message_detail, err.diag.message_detail
    # a plain Redis waits for the end of a line: the connect timeout (2 s) ends it
    assert took < 3.0 * SLOW


def test_plain_spoken_to_a_tls_port(session, certs, tls_redis):
    r = tls_redis()
    s = session(servers=f"127.0.0.1:{r.port}")
    s.execute("SET redlock.command_timeout = 2000")
    started = time.monotonic()
    err = s.error("SELECT redlock_try_acquire('tls:plain')")
    assert err.pgcode.startswith("08"), err.pgcode
    detail = err.diag.message_detail
    assert "rediss://" in detail, detail
    assert time.monotonic() - started < 2.5 * SLOW


def test_key_file_with_loose_permissions_is_refused(session, certs, tls_redis):
    r = tls_redis(auth_clients=True)
    loose = certs.path("loose.key")
    shutil.copy(certs.path("client.key"), loose)
    shutil.chown(loose, "postgres")
    os.chmod(loose, 0o644)
    err, _ = tls_error(session, certs, r.url, sslcert=certs.path("client.crt"), sslkey=loose)
    assert err.pgcode == "08001"
    assert "has group or world access" in err.diag.message_detail
    assert "BEGIN" not in err.diag.message_detail, "no key material in messages"


def test_changing_a_tls_setting_reconnects(session, certs, tls_redis):
    r = tls_redis()
    s = tls_session(session, certs, r.url)
    s.execute("SELECT redlock_try_acquire('tls:re')")
    assert server_row(s, f"127.0.0.1:{r.port}")["connects"] == 1
    s.execute("SET redlock.sslmode = 'verify-full'")          # the same: nothing
    s.execute("SELECT redlock_try_acquire('tls:re')")
    assert server_row(s, f"127.0.0.1:{r.port}")["connects"] == 1
    s.execute("SET redlock.sslmode = 'verify-ca'")            # changed: a new connection
    s.execute("SELECT redlock_try_acquire('tls:re')")
    assert server_row(s, f"127.0.0.1:{r.port}")["connects"] == 2


def test_tls_settings_are_superuser_only(session):
    s = session()
    s.execute("CREATE ROLE tls_nobody")
    try:
        s.execute("SET ROLE tls_nobody")
        for name in ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl"):
            err = s.error(f"SET redlock.{name} = 'require'"
                          if name == "sslmode" else f"SET redlock.{name} = '/tmp/x'")
            assert err.pgcode == "42501", name
        s.execute("RESET ROLE")
    finally:
        s.execute("RESET ROLE")
        s.execute("DROP ROLE tls_nobody")


# -- interop --

def test_node_redlock_over_tls_and_sql_exclude_each_other(session, certs, tls_redis):
    r = tls_redis()
    s = tls_session(session, certs, r.url)
    env = dict(os.environ, REDLOCK_TLS_CA=certs.path("ca.crt"))
    node = subprocess.Popen(["node", "redlock_client.js", r.url, "try", "tls:node", "30000"],
                            cwd=os.path.join(ROOT, "test", "node"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert node.stdout.readline().startswith("acquired")
        assert s.value("SELECT redlock_try_acquire('tls:node')") is None
        node.stdin.write("release\n")
        node.stdin.flush()
        assert node.stdout.readline().strip() == "released"
        assert s.value("SELECT redlock_acquire_session('tls:node')") > 0
        other = subprocess.run(["node", "redlock_client.js", r.url, "try", "tls:node", "30000"],
                               cwd=os.path.join(ROOT, "test", "node"), env=env,
                               capture_output=True, text=True, timeout=30)
        assert other.stdout.strip() == "busy"
        assert s.value("SELECT redlock_release('tls:node')") is True
    finally:
        node.kill()
        node.wait(10)


# -- sentinels:// and clusters:// --

def tls_sentinel(certs, primary_port):
    """A redis-sentinel that speaks only TLS, to us and to the TLS primary
    it watches."""
    from conftest import free_port
    c = certs
    port = free_port()
    work = tempfile.mkdtemp(prefix="redlock-tls-sentinel-")
    conf = os.path.join(work, "sentinel.conf")
    with open(conf, "w") as f:
        f.write(f"port 0\ntls-port {port}\nbind 127.0.0.1\ndir {work}\n"
                f"tls-cert-file {c.path('server.crt')}\ntls-key-file {c.path('server.key')}\n"
                f"tls-ca-cert-file {c.path('ca.crt')}\ntls-auth-clients no\n"
                f"tls-replication yes\n"
                f"sentinel monitor tlsmaster 127.0.0.1 {primary_port} 1\n")
    proc = subprocess.Popen(["redis-server", conf, "--sentinel",
                             "--logfile", os.path.join(work, "sentinel.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_cert_reqs="none",
                         ssl_check_hostname=False, socket_timeout=1)

    def knows():
        try:
            return client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "tlsmaster")
        except (redis.RedisError, OSError):
            return None
    wait_for(knows, what="the TLS sentinel")
    return port, proc, work


def test_a_sentinel_entry_over_tls(session, certs, tls_redis):
    """sentinels://: the sentinel and the primary it names are both reached
    over TLS, certificates checked."""
    primary = tls_redis()
    port, proc, work = tls_sentinel(certs, primary.port)
    try:
        s = tls_session(session, certs, f"sentinels://127.0.0.1:{port}/tlsmaster")
        assert s.value("SELECT redlock_acquire_session('tls:sen')") > 0
        assert primary.client().exists("tls:sen")
        row = server_row(s, f"sentinels://127.0.0.1:{port}/tlsmaster")
        assert row["kind"] == "sentinel" and row["tls"] is True
        assert row["tls_version"].startswith("TLSv1.")
        assert row["node"] == f"127.0.0.1:{primary.port}"
        # the same over plain TCP is refused: the sentinel speaks only TLS
        plain = session(servers=f"sentinel://127.0.0.1:{port}/tlsmaster")
        plain.execute("SET redlock.connect_timeout = 500")
        err = plain.error("SELECT redlock_try_acquire_session('tls:plain')")
        assert err.pgcode.startswith("08")
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def test_a_cluster_entry_over_tls(session, certs, tls_redis):
    """clusters://: three TLS-only masters (their bus and replication over
    TLS too): keys go to every master over verified TLS, the entry's row
    shows the TLS of its nodes' connections, and cluster:// (plain) is
    refused by the same nodes."""
    from test_cluster import cluster_port
    c = certs
    nodes = [tls_redis(port=cluster_port(),
                       extra=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                              "--tls-cluster", "yes", "--tls-replication", "yes"])
             for _ in range(3)]
    subprocess.run(["redis-cli", "--tls", "--cacert", c.path("ca.crt"),
                    "--cert", c.path("client.crt"), "--key", c.path("client.key"),
                    "--cluster", "create", *[n.addr for n in nodes], "--cluster-yes"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: all(b"cluster_state:ok" in n.client().execute_command("CLUSTER", "INFO")
                         for n in nodes), timeout=20, what="the TLS cluster")
    entry = "clusters://" + ";".join(n.addr for n in nodes)
    s = tls_session(session, certs, entry)
    keys = [f"tlsc:{i}" for i in range(30)]
    for k in keys:
        assert s.value("SELECT redlock_acquire_session(%s)", (k,)) > 0
    assert all(n.client().dbsize() > 0 for n in nodes)
    row = server_row(s, entry)
    assert row["kind"] == "cluster" and row["tls"] is True and row["state"] == "connected"
    assert row["tls_version"].startswith("TLSv1.")
    assert s.value("SELECT count(*) FROM redlock_servers WHERE kind = 'cluster node' AND tls") == 3
    assert s.value("SELECT redlock_release_all()") == len(keys)
    assert not any(n.client().keys("tlsc:*") for n in nodes)
    plain = session(servers=entry.replace("clusters://", "cluster://"))
    plain.execute("SET redlock.connect_timeout = 500")
    err = plain.error("SELECT redlock_try_acquire_session('tlsc:plain')")
    assert err.pgcode.startswith("08"), err
