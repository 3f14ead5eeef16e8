/* redlock--1.3--1.4.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION redlock UPDATE TO '1.4'" to load this file. \quit

-- 1.4: shared locks, as pg_advisory_xact_lock_shared is to
-- pg_advisory_xact_lock: many shared holders at once, none while an
-- exclusive holder has the key, and later shared requests queue behind an
-- exclusive waiter.
--
-- redlock_locks and redlock_locks_cluster gain "mode" (exclusive or
-- shared).  As before, the views are replaced in place (the column is
-- added at their end), so that views built on them and privileges set on
-- them survive; their functions get new names, and the old ones go.

CREATE FUNCTION redlock_acquire_shared(key text,
                                       ttl_ms integer DEFAULT NULL,
                                       wait_ms integer DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'redlock_acquire_shared'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION redlock_acquire_shared(text, integer, integer) IS
'Wait for a shared Redis lock held until the transaction ends; returns its fencing token';

CREATE FUNCTION redlock_try_acquire_shared(key text,
                                           ttl_ms integer DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'redlock_try_acquire_shared'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION redlock_try_acquire_shared(text, integer) IS
'Take a shared Redis lock held until the transaction ends, without waiting; NULL when held exclusively elsewhere';

CREATE FUNCTION redlock_acquire_shared_session(key text,
                                               ttl_ms integer DEFAULT NULL,
                                               wait_ms integer DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'redlock_acquire_shared_session'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION redlock_acquire_shared_session(text, integer, integer) IS
'Wait for a shared Redis lock held until released or the session ends; returns its fencing token';

CREATE FUNCTION redlock_try_acquire_shared_session(key text,
                                                   ttl_ms integer DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'redlock_try_acquire_shared_session'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION redlock_try_acquire_shared_session(text, integer) IS
'Take a shared Redis lock held until released or the session ends, without waiting; NULL when held exclusively elsewhere';

CREATE FUNCTION redlock_release_shared(key text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'redlock_release_shared'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION redlock_release_shared(text) IS
'Release one session-level shared hold of a Redis lock; false if not held';

-- as 1.0's lock functions: nobody may call them until granted
REVOKE EXECUTE ON FUNCTION
    redlock_acquire_shared(text, integer, integer),
    redlock_try_acquire_shared(text, integer),
    redlock_acquire_shared_session(text, integer, integer),
    redlock_try_acquire_shared_session(text, integer),
    redlock_release_shared(text)
FROM PUBLIC;

CREATE FUNCTION redlock_lock_list_v4(
    OUT key text, OUT scope text, OUT token bigint,
    OUT acquired_at timestamptz, OUT valid_until timestamptz,
    OUT transaction_holds integer, OUT session_holds integer,
    OUT lost boolean, OUT masters text[], OUT granted_by text[],
    OUT kept boolean, OUT mode text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'redlock_locks'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE OR REPLACE VIEW redlock_locks AS SELECT * FROM redlock_lock_list_v4();

DROP FUNCTION redlock_lock_list();

CREATE FUNCTION redlock_locks_cluster_v4(
    OUT pid integer, OUT datid oid, OUT usesysid oid, OUT key text,
    OUT state text, OUT scope text, OUT token bigint,
    OUT since timestamptz, OUT valid_until timestamptz,
    OUT kept boolean, OUT lost boolean, OUT renewals bigint,
    OUT holder_pid integer, OUT mode text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'redlock_locks_cluster'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE OR REPLACE VIEW redlock_locks_cluster AS SELECT * FROM redlock_locks_cluster_v4();

DROP FUNCTION redlock_locks_cluster();
