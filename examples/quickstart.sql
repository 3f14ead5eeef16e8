-- Quick start: run with psql in a database where redlock is installed.
CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL);
INSERT INTO orders VALUES (42, 'new');

-- A lock held until the transaction ends; released after COMMIT is visible.
BEGIN;
SELECT redlock_acquire('order:42');            -- waits until the lock is ours
UPDATE orders SET status = 'paid' WHERE id = 42;
COMMIT;

-- Don't wait: NULL means someone else holds the key.
BEGIN;
SELECT redlock_try_acquire('nightly-report') IS NULL AS busy;
COMMIT;

-- Hold a lock across transactions, until released or the session ends.
SELECT redlock_acquire_session('migration', ttl_ms => 600000);
SELECT redlock_release('migration');

-- What this session holds, and how it sees Redis.
SELECT key, scope, token, valid_until FROM redlock_locks;
SELECT address, state, last_rtt_ms, last_error FROM redlock_servers;
