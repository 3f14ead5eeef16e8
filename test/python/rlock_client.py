"""A Redis lock client that behaves as Redisson's RLock does on the wire,
for the interoperation tests and bench/redisson.py.

Written from Redisson's documented protocol (RedissonLock, RedissonBaseLock,
LockPubSub; Redisson 3.52): the lock is a hash named like the lock, with one
field per holder, "<client UUID>:<thread id>", whose value counts the
holder's re-entries, and a PEXPIRE.  Unlock decrements the count; at zero
it deletes the hash and publishes "0" on "redisson_lock__channel:{name}"
(no braces added when the name has some), which blocked threads listen to.
A lock taken without a lease is renewed by a watchdog every third of its
lease.  Unlock scripts carry a per-request latch key so that a retried
unlock does not count twice.  The fair lock (RedissonFairLock) is not
modelled
only in its tryLock form (no waiting: RFairLock).

    client = RedissonClient(port)
    lock = client.get_lock("orders:42")
    if lock.try_lock(wait_s=5):          # no lease: the watchdog keeps it
        try:
            ...
        finally:
            lock.unlock()
"""

import secrets
import threading
import time
import uuid

import redis

LOCK_SCRIPT = """
if redis.call('exists', KEYS[1]) == 0 or redis.call('hexists', KEYS[1], ARGV[2]) == 1 then
  redis.call('hincrby', KEYS[1], ARGV[2], 1)
  redis.call('pexpire', KEYS[1], ARGV[1])
  return nil
end
return redis.call('pttl', KEYS[1])
"""

UNLOCK_SCRIPT = """
local done = redis.call('get', KEYS[3])
if done ~= false then
  return tonumber(done)
end
if redis.call('hexists', KEYS[1], ARGV[3]) == 0 then
  return nil
end
local left = redis.call('hincrby', KEYS[1], ARGV[3], -1)
if left > 0 then
  redis.call('pexpire', KEYS[1], ARGV[2])
  redis.call('set', KEYS[3], 0, 'px', ARGV[4])
  return 0
end
redis.call('del', KEYS[1])
redis.call('publish', KEYS[2], ARGV[1])
redis.call('set', KEYS[3], 1, 'px', ARGV[4])
return 1
"""

RENEW_SCRIPT = """
if redis.call('hexists', KEYS[1], ARGV[2]) == 1 then
  redis.call('pexpire', KEYS[1], ARGV[1])
  return 1
end
return 0
"""

FAIR_TRY_SCRIPT = """
while true do
  local first = redis.call('lindex', KEYS[2], 0)
  if first == false then break end
  local timeout = tonumber(redis.call('zscore', KEYS[3], first))
  if timeout ~= nil and timeout > tonumber(ARGV[3]) then break end
  redis.call('zrem', KEYS[3], first)
  redis.call('lpop', KEYS[2])
end
if redis.call('exists', KEYS[1]) == 0 and (redis.call('exists', KEYS[2]) == 0
    or redis.call('lindex', KEYS[2], 0) == ARGV[2]) then
  redis.call('lpop', KEYS[2])
  redis.call('zrem', KEYS[3], ARGV[2])
  redis.call('hset', KEYS[1], ARGV[2], 1)
  redis.call('pexpire', KEYS[1], ARGV[1])
  return nil
end
if redis.call('hexists', KEYS[1], ARGV[2]) == 1 then
  redis.call('hincrby', KEYS[1], ARGV[2], 1)
  redis.call('pexpire', KEYS[1], ARGV[1])
  return nil
end
return 1
"""

FAIR_UNLOCK_SCRIPT = """
if redis.call('hexists', KEYS[1], ARGV[2]) == 0 then
  return nil
end
if redis.call('hincrby', KEYS[1], ARGV[2], -1) > 0 then
  redis.call('pexpire', KEYS[1], ARGV[3])
  return 0
end
redis.call('del', KEYS[1])
local next = redis.call('lindex', KEYS[2], 0)
if next ~= false then
  redis.call('publish', KEYS[4] .. ':' .. next, ARGV[1])
end
return 1
"""

UNLOCK_MESSAGE = b"0"


def channel_name(name):
    """Redisson's prefixName("redisson_lock__channel", name)."""
    if "{" in name:
        return "redisson_lock__channel:" + name
    return "redisson_lock__channel:{" + name + "}"


class IllegalMonitorState(Exception):
    """unlock() by a thread that does not hold the lock."""


class RedissonClient:
    """One Redisson client: a UUID shared by its threads."""

    def __init__(self, port, host="127.0.0.1", watchdog_ms=30000):
        self.id = str(uuid.uuid4())
        self.redis = redis.Redis(host=host, port=port)
        self.port, self.host = port, host
        self.watchdog_ms = watchdog_ms
        self.lock_script = self.redis.register_script(LOCK_SCRIPT)
        self.unlock_script = self.redis.register_script(UNLOCK_SCRIPT)
        self.renew_script = self.redis.register_script(RENEW_SCRIPT)

    def get_lock(self, name):
        return RLock(self, name)

    def get_fair_lock(self, name):
        return RFairLock(self, name)

    def close(self):
        self.redis.close()


class RLock:
    """RLock: re-entrant per thread (the thread id is threading.get_ident())."""

    def __init__(self, client, name):
        self.client = client
        self.name = name
        self.channel = channel_name(name)
        self._watchdogs = {}           # thread id -> threading.Event to stop
        self.woken_by_message = 0      # waits that a published unlock ended
        self.woken_by_timer = 0        # waits that ended on the lock's TTL
        self.sleeping = threading.Event()   # set while a waiter sleeps

    def lock_name(self, thread_id=None):
        return f"{self.client.id}:{thread_id or threading.get_ident()}"

    def _try(self, lease_ms):
        return self.client.lock_script(keys=[self.name],
                                       args=[lease_ms, self.lock_name()])

    def try_lock(self, wait_s=0.0, lease_ms=None):
        """True once held.  Without lease_ms the watchdog renews the lock
        until unlock().  Waits up to wait_s, woken by the unlock message or
        when the holder's TTL runs out."""
        lease = lease_ms or self.client.watchdog_ms
        ttl = self._try(lease)
        if ttl is None:
            self._held(lease_ms)
            return True
        deadline = time.monotonic() + wait_s
        pubsub = self.client.redis.pubsub()
        pubsub.subscribe(self.channel)
        try:
            pubsub.get_message(timeout=1.0)       # the confirmation
            while True:
                ttl = self._try(lease)
                if ttl is None:
                    self._held(lease_ms)
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                pause = min(left, ttl / 1000.0 if ttl >= 0 else left)
                end = time.monotonic() + pause
                self.sleeping.set()
                while True:
                    msg = pubsub.get_message(timeout=max(end - time.monotonic(), 0))
                    if msg and msg["type"] == "message" and msg["data"] == UNLOCK_MESSAGE:
                        self.woken_by_message += 1
                        break
                    if time.monotonic() >= end:
                        self.woken_by_timer += 1
                        break
        finally:
            self.sleeping.clear()
            pubsub.close()

    def _held(self, lease_ms):
        tid = threading.get_ident()
        if lease_ms is not None or tid in self._watchdogs:
            return
        stop = threading.Event()
        self._watchdogs[tid] = stop
        name = self.lock_name(tid)
        period = self.client.watchdog_ms / 3000.0

        def renew():
            while not stop.wait(period):
                if not self.client.renew_script(keys=[self.name],
                                                args=[self.client.watchdog_ms, name]):
                    return
        threading.Thread(target=renew, daemon=True).start()

    def unlock(self):
        """Count one re-entry off; at zero delete the lock and publish the
        unlock message.  Returns True when the lock was released."""
        latch = f"redisson_unlock_latch:{{{self.name}}}:{secrets.token_hex(16)}"
        if "{" in self.name:
            latch = f"redisson_unlock_latch:{self.name}:{secrets.token_hex(16)}"
        done = self.client.unlock_script(
            keys=[self.name, self.channel, latch],
            args=[UNLOCK_MESSAGE, self.client.watchdog_ms, self.lock_name(), 10000])
        if done is None:
            raise IllegalMonitorState(f"{self.name} is not held by {self.lock_name()}")
        if done == 1:
            stop = self._watchdogs.pop(threading.get_ident(), None)
            if stop:
                stop.set()
            return True
        return False

    def is_locked(self):
        return self.client.redis.exists(self.name) == 1

    def is_held_by_thread(self, thread_id):
        return self.client.redis.hexists(self.name, self.lock_name(thread_id))

    def hold_count(self):
        n = self.client.redis.hget(self.name, self.lock_name())
        return int(n) if n else 0


def prefix_name(prefix, name):
    """Redisson's prefixName(): braces around the name unless it has some."""
    return f"{prefix}:{name}" if "{" in name else f"{prefix}:{{{name}}}"


class RFairLock:
    """RedissonFairLock, tryLock() and unlock() only: the lock is the same
    hash as RLock's; waiters queue in redisson_lock_queue:{name} and
    redisson_lock_timeout:{name} and are woken on per-thread channels."""

    def __init__(self, client, name):
        self.client = client
        self.name = name
        self.queue = prefix_name("redisson_lock_queue", name)
        self.timeouts = prefix_name("redisson_lock_timeout", name)
        self.channel = channel_name(name)

    def lock_name(self):
        return f"{self.client.id}:{threading.get_ident()}"

    def try_lock(self, lease_ms=30000):
        now = int(time.time() * 1000)
        return self.client.redis.eval(FAIR_TRY_SCRIPT, 3, self.name, self.queue, self.timeouts,
                                      lease_ms, self.lock_name(), now) is None

    def unlock(self):
        done = self.client.redis.eval(FAIR_UNLOCK_SCRIPT, 4, self.name, self.queue,
                                      self.timeouts, self.channel, UNLOCK_MESSAGE,
                                      self.lock_name(), 30000)
        if done is None:
            raise IllegalMonitorState(f"{self.name} is not held by {self.lock_name()}")
        return done == 1
