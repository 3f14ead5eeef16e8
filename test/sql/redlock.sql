--
-- redlock: the SQL surface, its defaults and its errors, from one session.
-- Needs redlock.servers to name a reachable Redis (scripts/test.sh does).
-- Two-session behaviour is in test/specs, failures of servers in test/python.
--
CREATE EXTENSION redlock;

-- the functions and their signatures (those behind views are listed with
-- the views)
SELECT p.proname, pg_get_function_arguments(p.oid) AS arguments,
       pg_get_function_result(p.oid) AS result, p.provolatile, p.proparallel
FROM pg_proc p
WHERE p.proname LIKE 'redlock%'
  AND NOT EXISTS (SELECT FROM pg_depend d
                  WHERE d.classid = 'pg_rewrite'::regclass
                    AND d.refclassid = 'pg_proc'::regclass AND d.refobjid = p.oid)
ORDER BY 1;

-- the views and their columns
SELECT table_name, column_name, data_type
FROM information_schema.columns
WHERE table_name LIKE 'redlock%'
ORDER BY table_name, ordinal_position;
SELECT DISTINCT c.relname AS view, p.proname, p.provolatile, p.proparallel
FROM pg_proc p
JOIN pg_depend d ON d.refclassid = 'pg_proc'::regclass AND d.refobjid = p.oid
                AND d.classid = 'pg_rewrite'::regclass
JOIN pg_rewrite r ON r.oid = d.objid
JOIN pg_class c ON c.oid = r.ev_class
WHERE p.proname LIKE 'redlock%' ORDER BY 1;

-- the settings: defaults, units, who may set them
SELECT name, boot_val, unit, context, vartype, min_val, max_val
FROM pg_settings WHERE name LIKE 'redlock.%' ORDER BY name;

-- errors are easier to compare with their SQLSTATE
CREATE FUNCTION pg_temp.sqlstate_of(query text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE query;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

-- a transaction-scoped lock; taking it again is reentrant: same token
BEGIN;
SELECT redlock_acquire('regress:a') AS token \gset
SELECT redlock_acquire('regress:a') = :token AS same_token,
       redlock_try_acquire('regress:a') = :token AS same_token_try;
-- cannot be released early
SELECT redlock_release('regress:a');
COMMIT;

-- after commit it is free again, and the next token is larger
BEGIN;
SELECT redlock_try_acquire('regress:a') > :token AS larger_token;
ROLLBACK;

-- ttl_ms and wait_ms may be given, by position or name
BEGIN;
SELECT redlock_acquire('regress:b', 5000, 100) > 0 AS ok,
       redlock_acquire(key => 'regress:c', wait_ms => 0) > 0 AS ok_named,
       redlock_try_acquire('regress:d', ttl_ms => 20000) > 0 AS ok_try;
COMMIT;

-- session locks: counted, released one acquisition at a time
SELECT redlock_acquire_session('regress:s') AS stoken \gset
SELECT redlock_try_acquire_session('regress:s') = :stoken AS same_token;
SELECT redlock_release('regress:s');
SELECT redlock_release('regress:s');
SELECT redlock_release('regress:s');
SELECT redlock_release('regress:never-taken');

-- a session lock outlives the transaction it was taken in, even a rollback
BEGIN;
SELECT redlock_acquire_session('regress:s2') AS s2token \gset
ROLLBACK;
SELECT redlock_try_acquire_session('regress:s2') = :s2token AS still_held;
-- held at both scopes: the session release leaves the transaction's hold
BEGIN;
SELECT redlock_acquire('regress:s2') = :s2token AS same_token;
SELECT redlock_release('regress:s2'), redlock_release('regress:s2');
SELECT redlock_try_acquire('regress:s2') = :s2token AS held_by_xact;
COMMIT;
SELECT redlock_try_acquire_session('regress:s2') > :s2token AS released_at_commit;
SELECT redlock_acquire_session('regress:s3') > 0 AS ok;
SELECT redlock_release_all();
SELECT redlock_release_all();

-- redlock_extend re-arms a held lock of either scope
SELECT redlock_acquire_session('regress:ext', 10000) > 0 AS ok;
SELECT redlock_extend('regress:ext', 60000);
SELECT redlock_extend('regress:ext', NULL);
BEGIN;
SELECT redlock_acquire('regress:ext-x', 10000) > 0 AS ok;
SELECT redlock_extend('regress:ext-x', 5000);
COMMIT;
SELECT redlock_extend('regress:ext-x', 5000);
SELECT redlock_extend('regress:ext', 0);
SELECT redlock_extend(NULL, 1000);
SELECT redlock_release('regress:ext');

-- redlock_token: the token of a held lock, NULL otherwise
BEGIN;
SELECT redlock_acquire('regress:tok') AS ttoken \gset
SELECT redlock_token('regress:tok') = :ttoken AS same_token,
       redlock_token('regress:not-held') IS NULL AS not_held;
COMMIT;
SELECT redlock_token('regress:tok') IS NULL AS released;
SELECT redlock_token(NULL);

-- the snapshot guard: under REPEATABLE READ or SERIALIZABLE the snapshot is
-- taken before the lock, so rows read may predate the last holder's commit
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT redlock_acquire('regress:snap') > 0 AS ok;
SELECT redlock_acquire('regress:snap') > 0 AS reentrant_no_second_warning;
COMMIT;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT redlock_acquire_session('regress:snap') > 0 AS ok;
COMMIT;
SELECT redlock_release('regress:snap');
BEGIN ISOLATION LEVEL READ COMMITTED;
SELECT redlock_acquire('regress:snap') > 0 AS no_warning;
COMMIT;
SET redlock.snapshot_check = error;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT redlock_acquire('regress:snap');
ROLLBACK;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_temp.sqlstate_of($$SELECT redlock_acquire('regress:snap')$$);
ROLLBACK;
SET default_transaction_isolation = 'repeatable read';
-- a single statement outside a transaction block reads nothing afterwards
SELECT redlock_acquire_session('regress:snap') > 0 AS ok_outside_block;
SELECT redlock_release('regress:snap');
RESET default_transaction_isolation;
SET redlock.snapshot_check = off;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT redlock_acquire('regress:snap') > 0 AS not_checked;
COMMIT;
RESET redlock.snapshot_check;
SET redlock.snapshot_check = sometimes;

-- savepoints: a lock taken after a savepoint goes with its rollback ...
BEGIN;
SAVEPOINT sp;
SELECT redlock_acquire('regress:sp') AS sptoken \gset
ROLLBACK TO SAVEPOINT sp;
SELECT redlock_acquire('regress:sp') > :sptoken AS released_by_rollback_to;
COMMIT;
-- ... and moves to the parent when the savepoint is released
BEGIN;
SAVEPOINT sp;
SELECT redlock_acquire('regress:sp') AS sptoken \gset
RELEASE SAVEPOINT sp;
SAVEPOINT sp2;
ROLLBACK TO SAVEPOINT sp2;
SELECT redlock_acquire('regress:sp') = :sptoken AS kept_by_parent;
COMMIT;
-- a PL/pgSQL exception block is a subtransaction too
DO $$
DECLARE t bigint;
BEGIN
    BEGIN
        t := redlock_acquire('regress:plpgsql');
        RAISE EXCEPTION 'undo';
    EXCEPTION WHEN raise_exception THEN
        NULL;
    END;
    IF redlock_acquire('regress:plpgsql') > t THEN
        RAISE NOTICE 'the lock taken in the failed block was released';
    END IF;
END
$$;

-- PREPARE TRANSACTION is refused while a transaction-scoped lock is held,
-- and the abort that follows releases it
BEGIN;
SELECT redlock_acquire('regress:2pc') AS ptoken \gset
PREPARE TRANSACTION 'regress_redlock';
BEGIN;
SELECT redlock_acquire('regress:2pc') > :ptoken AS released_by_abort;
ROLLBACK;
-- session locks do not stop it, and stay with the session
CREATE TABLE regress_2pc (x int);
SELECT redlock_acquire_session('regress:2pc-session') AS ptoken \gset
BEGIN;
INSERT INTO regress_2pc VALUES (1);
PREPARE TRANSACTION 'regress_redlock';
ROLLBACK PREPARED 'regress_redlock';
SELECT redlock_try_acquire_session('regress:2pc-session') = :ptoken AS still_held;
SELECT redlock_release_all();
DROP TABLE regress_2pc;

-- bad arguments
SELECT redlock_acquire(NULL);
SELECT redlock_try_acquire('');
SELECT redlock_acquire('regress:e', 0);
SELECT redlock_acquire('regress:e', -1);
SELECT redlock_acquire('regress:e', 86400001);
SELECT redlock_acquire('regress:e', 2);
SELECT redlock_acquire('regress:e', NULL, -1);
SELECT redlock_release(NULL);
SELECT pg_temp.sqlstate_of($$SELECT redlock_acquire(NULL)$$);
SELECT pg_temp.sqlstate_of($$SELECT redlock_acquire_session('')$$);
SELECT pg_temp.sqlstate_of($$SELECT redlock_try_acquire_session('x', 0)$$);
SELECT pg_temp.sqlstate_of($$SELECT redlock_acquire_session('x', 10, -5)$$);

-- keys: any text, up to 4096 bytes with the prefix
SELECT redlock_acquire_session(repeat('k', 4096)) > 0 AS longest_key;
SELECT redlock_release(repeat('k', 4096));
SELECT redlock_acquire(repeat('k', 4097));
SELECT redlock_acquire_session(E'line\nbreak *3\r\n$4\r\nPING "quoted" ''single'' ünïcødé 🔒') > 0 AS odd_key;
SELECT redlock_release(E'line\nbreak *3\r\n$4\r\nPING "quoted" ''single'' ünïcødé 🔒');

-- the key prefix gives separate key spaces
SET redlock.key_prefix = 'tenant-a:';
SELECT redlock_acquire_session('shared') AS atoken \gset
SET redlock.key_prefix = 'tenant-b:';
SELECT redlock_try_acquire_session('shared') IS NOT NULL AS separate_lock;
SELECT redlock_release('shared');
SET redlock.key_prefix = 'tenant-a:';
SELECT redlock_release('shared');
SELECT set_config('redlock.key_prefix', repeat('p', 257), false);
SELECT length(set_config('redlock.key_prefix', repeat('p', 256), false));
SELECT redlock_acquire(repeat('k', 3841));
RESET redlock.key_prefix;

-- settings are checked
SET redlock.servers = '';
SET redlock.servers = 'host:1:2';
SET redlock.servers = 'host:0';
SET redlock.servers = 'host:65536';
SET redlock.servers = 'host:abc';
SET redlock.servers = 'a:1,,b:2';
SET redlock.servers = 'a:1, a:1';
SET redlock.servers = 'bad host';
SET redlock.servers = '[::1';
SET redlock.servers = 'relative/path.sock';
SET redlock.servers = 'a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q';
SET redlock.default_ttl = 0;
SET redlock.wait_timeout = -1;
SET redlock.command_timeout = 0;
SET redlock.drift_factor = 0.9;
SET redlock.unknown_setting = 1;
BEGIN;
SET LOCAL redlock.servers = 'h1, h2:6380, [::1]:6381, /var/run/redis.sock';
SHOW redlock.servers;
ROLLBACK;
SET redlock.default_ttl = '2s';
SHOW redlock.default_ttl;
RESET redlock.default_ttl;

-- only superusers choose servers and prefixes; taking locks needs a grant
CREATE ROLE regress_redlock_user;
SET ROLE regress_redlock_user;
SELECT redlock_try_acquire('regress:role');
SELECT count(*) >= 0 AS views_are_public FROM redlock_locks, redlock_servers, redlock_stats;
RESET ROLE;
GRANT EXECUTE ON FUNCTION redlock_acquire(text, integer, integer),
    redlock_try_acquire(text, integer), redlock_acquire_session(text, integer, integer),
    redlock_try_acquire_session(text, integer), redlock_release(text),
    redlock_release_all(), redlock_extend(text, integer), redlock_token(text)
    TO regress_redlock_user;
SET ROLE regress_redlock_user;
SELECT redlock_try_acquire('regress:role') > 0 AS granted;
SHOW redlock.password;
SHOW redlock.username;
SHOW redlock.servers;
SELECT count(*) AS servers_in_pg_settings FROM pg_settings WHERE name = 'redlock.servers';
SET redlock.servers = '127.0.0.1:6379';
SET redlock.key_prefix = 'other-tenant:';
SET redlock.default_ttl = '5s';
SELECT pg_temp.sqlstate_of($$SET redlock.key_prefix = 'x'$$);
RESET ROLE;
SET redlock.servers = 'redis://app:pa%3Ass@127.0.0.1:1/2';
SHOW redlock.servers;
SELECT redlock_try_acquire('regress:creds');
RESET redlock.servers;
SET redlock.servers = 'rediss://app:pass@host:99999';
-- TLS entries are accepted and shown without their password
SET redlock.servers = 'rediss://app:pa%3Ass@127.0.0.1:6380/2, 127.0.0.1:6379';
SHOW redlock.servers;
RESET redlock.servers;
SET redlock.sslmode = 'verify-none';
SET redlock.servers = 'redis://app:pa%4@host';
SET redlock.servers = 'redis://app:pa,ss@host';
SET redlock.servers = 'redis://host/x';
SET redlock.servers = 'redis:///tmp/redis.sock';
DROP OWNED BY regress_redlock_user;
DROP ROLE regress_redlock_user;

-- a server that cannot be reached is an error (08xxx), in try functions too
SET redlock.servers = '127.0.0.1:1';
SELECT redlock_acquire('regress:down');
SELECT redlock_try_acquire('regress:down');
SELECT pg_temp.sqlstate_of($$SELECT redlock_try_acquire_session('regress:down')$$);
-- (with several, which refusals are in when the outcome is known varies,
-- and so would the DETAIL's counts: show the error alone)
SET redlock.servers = '127.0.0.1:1, 127.0.0.1:2, 127.0.0.1:3';
SELECT pg_temp.sqlstate_of($$SELECT redlock_acquire('regress:down')$$);
RESET redlock.servers;
-- and then everything works again
SELECT redlock_acquire_session('regress:up') > 0 AS works_again;
SELECT redlock_release_all();
