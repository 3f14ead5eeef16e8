/* redlock--1.4--1.5.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION redlock UPDATE TO '1.5'" to load this file. \quit

-- 1.5: several keys at once.  Each acquire function of 1.4 gains a form
-- that takes an array of keys and takes all of them or none, returning
-- their fencing tokens in the order of the keys; a caller that has to
-- wait holds none of them meanwhile, so callers whose key sets overlap in
-- different orders cannot deadlock.  redlock_release and
-- redlock_release_shared gain array forms for session holds.
--
-- They overload the functions of one key: an untyped literal such as
-- 'a' still calls those; pass ARRAY['a', 'b'] or '{a,b}'::text[].

CREATE FUNCTION redlock_acquire(keys text[],
                                ttl_ms integer DEFAULT NULL,
                                wait_ms integer DEFAULT NULL)
RETURNS bigint[]
AS 'MODULE_PATHNAME', 'redlock_acquire_keys'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION redlock_acquire(text[], integer, integer) IS
'Wait for all of several Redis locks, held until the transaction ends; returns their fencing tokens';

CREATE FUNCTION redlock_try_acquire(keys text[],
                                    ttl_ms integer DEFAULT NULL)
RETURNS bigint[]
AS 'MODULE_PATHNAME', 'redlock_try_acquire_keys'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION redlock_try_acquire(text[], integer) IS
'Take all of several Redis locks, held until the transaction ends, without waiting; NULL (and none taken) when one is held elsewhere';

CREATE FUNCTION redlock_acquire_session(keys text[],
                                        ttl_ms integer DEFAULT NULL,
                                        wait_ms integer DEFAULT NULL)
RETURNS bigint[]
AS 'MODULE_PATHNAME', 'redlock_acquire_session_keys'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION redlock_acquire_session(text[], integer, integer) IS
'Wait for all of several Redis locks, held until released or the session ends; returns their fencing tokens';

CREATE FUNCTION redlock_try_acquire_session(keys text[],
                                            ttl_ms integer DEFAULT NULL)
RETURNS bigint[]
AS 'MODULE_PATHNAME', 'redlock_try_acquire_session_keys'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION redlock_try_acquire_session(text[], integer) IS
'Take all of several Redis locks, held until released or the session ends, without waiting; NULL (and none taken) when one is held elsewhere';

CREATE FUNCTION redlock_acquire_shared(keys text[],
                                       ttl_ms integer DEFAULT NULL,
                                       wait_ms integer DEFAULT NULL)
RETURNS bigint[]
AS 'MODULE_PATHNAME', 'redlock_acquire_shared_keys'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION redlock_acquire_shared(text[], integer, integer) IS
'Wait for all of several shared Redis locks, held until the transaction ends; returns their fencing tokens';

CREATE FUNCTION redlock_try_acquire_shared(keys text[],
                                           ttl_ms integer DEFAULT NULL)
RETURNS bigint[]
AS 'MODULE_PATHNAME', 'redlock_try_acquire_shared_keys'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION redlock_try_acquire_shared(text[], integer) IS
'Take all of several shared Redis locks, held until the transaction ends, without waiting; NULL (and none taken) when one is held exclusively elsewhere';

CREATE FUNCTION redlock_acquire_shared_session(keys text[],
                                               ttl_ms integer DEFAULT NULL,
                                               wait_ms integer DEFAULT NULL)
RETURNS bigint[]
AS 'MODULE_PATHNAME', 'redlock_acquire_shared_session_keys'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION redlock_acquire_shared_session(text[], integer, integer) IS
'Wait for all of several shared Redis locks, held until released or the session ends; returns their fencing tokens';

CREATE FUNCTION redlock_try_acquire_shared_session(keys text[],
                                                   ttl_ms integer DEFAULT NULL)
RETURNS bigint[]
AS 'MODULE_PATHNAME', 'redlock_try_acquire_shared_session_keys'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION redlock_try_acquire_shared_session(text[], integer) IS
'Take all of several shared Redis locks, held until released or the session ends, without waiting; NULL (and none taken) when one is held exclusively elsewhere';

CREATE FUNCTION redlock_release(keys text[])
RETURNS boolean
AS 'MODULE_PATHNAME', 'redlock_release_keys'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION redlock_release(text[]) IS
'Release one session-level hold of each of several Redis locks; false if one was not held';

CREATE FUNCTION redlock_release_shared(keys text[])
RETURNS boolean
AS 'MODULE_PATHNAME', 'redlock_release_shared_keys'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION redlock_release_shared(text[]) IS
'Release one session-level shared hold of each of several Redis locks; false if one was not held';

-- as the lock functions of one key: nobody may call them until granted
REVOKE EXECUTE ON FUNCTION
    redlock_acquire(text[], integer, integer),
    redlock_try_acquire(text[], integer),
    redlock_acquire_session(text[], integer, integer),
    redlock_try_acquire_session(text[], integer),
    redlock_acquire_shared(text[], integer, integer),
    redlock_try_acquire_shared(text[], integer),
    redlock_acquire_shared_session(text[], integer, integer),
    redlock_try_acquire_shared_session(text[], integer),
    redlock_release(text[]),
    redlock_release_shared(text[])
FROM PUBLIC;

-- redlock_stats and redlock_stats_cluster gain deadlock_checks (checks run
-- by waits for Redis locks) and deadlocks (waits ended with 40P01).  The
-- views are replaced in place, the columns added at their end; their
-- functions get new names, and the old ones go.
CREATE FUNCTION redlock_stats_v5(
    OUT acquires bigint, OUT reentries bigint, OUT try_busy bigint,
    OUT waits bigint, OUT wait_time_us bigint, OUT wakeups bigint,
    OUT timeouts bigint, OUT unreachable bigint, OUT releases bigint,
    OUT failed_releases bigint, OUT lost_releases bigint, OUT extends bigint,
    OUT commit_extends bigint, OUT lost_at_commit bigint,
    OUT reconnects bigint, OUT since timestamptz, OUT failovers bigint,
    OUT redirects bigint, OUT deadlock_checks bigint, OUT deadlocks bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'redlock_stats'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE OR REPLACE VIEW redlock_stats AS SELECT * FROM redlock_stats_v5();

DROP FUNCTION redlock_stats_v3();

CREATE FUNCTION redlock_stats_cluster_v5(
    OUT acquires bigint, OUT reentries bigint, OUT try_busy bigint,
    OUT waits bigint, OUT wait_time_us bigint, OUT wakeups bigint,
    OUT timeouts bigint, OUT unreachable bigint, OUT releases bigint,
    OUT failed_releases bigint, OUT lost_releases bigint, OUT extends bigint,
    OUT commit_extends bigint, OUT lost_at_commit bigint,
    OUT reconnects bigint, OUT since timestamptz, OUT failovers bigint,
    OUT redirects bigint, OUT deadlock_checks bigint, OUT deadlocks bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'redlock_stats_cluster'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE OR REPLACE VIEW redlock_stats_cluster AS SELECT * FROM redlock_stats_cluster_v5();

DROP FUNCTION redlock_stats_cluster_v3();
