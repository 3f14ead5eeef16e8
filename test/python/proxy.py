"""A TCP proxy on loopback in front of a Redis server, for tests that need
a master on a slow network, one that goes silent, or a connection lost
between a request and its reply; and the RESP helpers it parses with.

RedisProxy(target_port, delay=0.0, reply_delay=0.0, forward=None):
  delay        every request reaches Redis that many seconds after it
               arrived, in order (read when each request arrives, so a test
               may change it while the proxy runs)
  reply_delay  the same for replies, but on subscription connections, whose
               messages come at once
  forward      how many more script calls (EVAL, EVALSHA) it lets through,
               None for all; other commands (AUTH) do not count.  Once it
               stops, nothing more is forwarded nor answered: a master that
               answered, then went silent with the connection open.
  partitioned  a threading.Event: while it is set, nothing passes either
               way; what is sent meanwhile waits in the sockets and goes on
               when it is cleared, as TCP delivers after a partition heals
  drop_next_reply(hook)
               the next request goes to Redis, Redis's complete reply is
               read, hook() runs, and the client's connection is closed
               without the reply; `dropped` is set then.
"""

import queue
import socket
import threading
import time


def resp_end(buf, pos=0):
    """The end of the RESP value starting at buf[pos], or None while it is
    incomplete.  Inline commands (a line) count as one value."""
    nl = buf.find(b"\r\n", pos)
    if nl < 0:
        return None
    kind, line, end = buf[pos:pos + 1], buf[pos + 1:nl], nl + 2
    if kind in (b"+", b"-", b":"):
        return end
    if kind == b"$":
        n = int(line)
        if n < 0:
            return end
        return end + n + 2 if len(buf) >= end + n + 2 else None
    if kind == b"*":
        for _ in range(max(int(line), 0)):
            end = resp_end(buf, end)
            if end is None:
                return None
        return end
    return end                      # an inline command


def resp_command(buf, pos, end):
    """The arguments of the command (an array of bulk strings, or an inline
    command) in buf[pos:end]."""
    if buf[pos:pos + 1] != b"*":
        return buf[pos:end].split()
    nl = buf.find(b"\r\n", pos)
    args = []
    p = nl + 2
    for _ in range(int(buf[pos + 1:nl])):
        nl = buf.find(b"\r\n", p)
        n = int(buf[p + 1:nl])
        args.append(buf[nl + 2:nl + 2 + n])
        p = nl + 2 + n + 2
    assert p == end
    return args


def bulk(s):
    return b"$%d\r\n%s\r\n" % (len(s), s)


class DelayedSender:
    """Sends what it is given to a socket, each piece at the time given (or
    `delay` seconds after it was given), in order."""

    def __init__(self, sock, delay=0.0):
        self.sock = sock
        self.delay = delay
        self.pending = queue.Queue()
        threading.Thread(target=self._run, daemon=True).start()

    def send(self, data, delay=None):
        self.pending.put((time.monotonic() + (self.delay if delay is None else delay), data))

    def close(self):
        self.pending.put((0, None))

    def _run(self):
        while True:
            due, data = self.pending.get()
            if data is None:
                return
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            try:
                self.sock.sendall(data)
            except OSError:
                return


class RedisProxy:
    """See the module's docstring."""

    def __init__(self, target_port, delay=0.0, reply_delay=0.0, forward=None):
        self.target_port = target_port
        self.delay = delay
        self.reply_delay = reply_delay
        self.forward = forward
        self.lock = threading.Lock()
        self.armed = None           # the hook of the next request to cut short
        self.dropped = threading.Event()
        self.partitioned = threading.Event()
        self.stop = threading.Event()
        self.sockets = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def drop_next_reply(self, hook):
        self.dropped.clear()
        with self.lock:
            self.armed = hook

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sockets += [client, upstream]
            conn = {"client": client, "upstream": upstream, "cut": None, "sub": False}
            threading.Thread(target=self._requests, args=(conn,), daemon=True).start()
            threading.Thread(target=self._replies, args=(conn,), daemon=True).start()

    def _hold(self):
        """Wait while the proxy is partitioned."""
        while self.partitioned.is_set() and not self.stop.is_set():
            time.sleep(0.005)

    def _admit(self, name):
        """Whether a script call may still go through (see forward)."""
        with self.lock:
            if self.forward is None or name not in (b"EVAL", b"EVALSHA"):
                return True
            if self.forward > 0:
                self.forward -= 1
                return True
            return False

    @staticmethod
    def _close(conn):
        for s in (conn["client"], conn["upstream"]):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _requests(self, conn):
        """Client to Redis, a whole command at a time."""
        out = DelayedSender(conn["upstream"])
        buf = b""
        stalled = False
        try:
            while data := conn["client"].recv(65536):
                buf += data
                while (end := resp_end(buf)) is not None:
                    command, buf = buf[:end], buf[end:]
                    args = resp_command(command, 0, end)
                    name = args[0].upper() if args else b""
                    if name == b"SUBSCRIBE":
                        conn["sub"] = True
                    stalled = stalled or not self._admit(name)
                    if stalled:
                        continue
                    with self.lock:
                        if self.armed is not None:
                            conn["cut"], self.armed = self.armed, None
                    self._hold()
                    out.send(command, self.delay)
        except OSError:
            pass
        out.close()

    def _replies(self, conn):
        """Redis to client; for a request cut short, nothing."""
        out = DelayedSender(conn["client"])
        held = b""
        try:
            while data := conn["upstream"].recv(65536):
                if conn["cut"] is None:
                    self._hold()
                    out.send(data, 0.0 if conn["sub"] else self.reply_delay)
                    continue
                held += data
                if resp_end(held) is not None:
                    conn["cut"]()
                    self._close(conn)
                    self.dropped.set()
                    return
        except OSError:
            pass
        out.close()
        time.sleep(self.reply_delay)        # let what is due go out first
        self._close(conn)

    def close(self):
        self.stop.set()
        self.sock.close()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
