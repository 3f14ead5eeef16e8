/* redlock--1.1.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION redlock" to load this file. \quit

CREATE FUNCTION redlock_acquire(key text,
                                ttl_ms integer DEFAULT NULL,
                                wait_ms integer DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'redlock_acquire'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION redlock_acquire(text, integer, integer) IS
'Wait for a Redis lock held until the transaction ends; returns its fencing token';

CREATE FUNCTION redlock_try_acquire(key text,
                                    ttl_ms integer DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'redlock_try_acquire'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION redlock_try_acquire(text, integer) IS
'Take a Redis lock held until the transaction ends, without waiting; NULL when held elsewhere';

CREATE FUNCTION redlock_acquire_session(key text,
                                        ttl_ms integer DEFAULT NULL,
                                        wait_ms integer DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'redlock_acquire_session'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION redlock_acquire_session(text, integer, integer) IS
'Wait for a Redis lock held until released or the session ends; returns its fencing token';

CREATE FUNCTION redlock_try_acquire_session(key text,
                                            ttl_ms integer DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'redlock_try_acquire_session'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION redlock_try_acquire_session(text, integer) IS
'Take a Redis lock held until released or the session ends, without waiting; NULL when held elsewhere';

CREATE FUNCTION redlock_release(key text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'redlock_release'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION redlock_release(text) IS
'Release one session-level hold of a Redis lock; false if not held';

CREATE FUNCTION redlock_release_all()
RETURNS integer
AS 'MODULE_PATHNAME', 'redlock_release_all'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION redlock_release_all() IS
'Release every session-level Redis lock of this session; returns how many';

CREATE FUNCTION redlock_extend(key text, ttl_ms integer)
RETURNS boolean
AS 'MODULE_PATHNAME', 'redlock_extend'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION redlock_extend(text, integer) IS
'Re-arm the TTL of a Redis lock this session holds; false if not held or lost';

CREATE FUNCTION redlock_token(key text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'redlock_token'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION redlock_token(text) IS
'The fencing token of a Redis lock this session holds, NULL if none';

-- Who may take locks: a role that could call these could hold any key
-- (under its redlock.key_prefix) for up to a day, so they are granted to
-- nobody by default.  Grant them to the roles that need them:
--   GRANT EXECUTE ON FUNCTION redlock_acquire(text, integer, integer),
--     redlock_try_acquire(text, integer), redlock_acquire_session(text, integer, integer),
--     redlock_try_acquire_session(text, integer), redlock_release(text),
--     redlock_release_all(), redlock_extend(text, integer), redlock_token(text)
--     TO app;
REVOKE EXECUTE ON FUNCTION
    redlock_acquire(text, integer, integer),
    redlock_try_acquire(text, integer),
    redlock_acquire_session(text, integer, integer),
    redlock_try_acquire_session(text, integer),
    redlock_release(text),
    redlock_release_all(),
    redlock_extend(text, integer),
    redlock_token(text)
FROM PUBLIC;

-- Introspection.  Each view shows this backend only, except
-- redlock_stats_cluster (all backends; needs shared_preload_libraries).

CREATE FUNCTION redlock_locks(
    OUT key text, OUT scope text, OUT token bigint,
    OUT acquired_at timestamptz, OUT valid_until timestamptz,
    OUT transaction_holds integer, OUT session_holds integer,
    OUT lost boolean, OUT masters text[], OUT granted_by text[])
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'redlock_locks'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE VIEW redlock_locks AS SELECT * FROM redlock_locks();
GRANT SELECT ON redlock_locks TO PUBLIC;
COMMENT ON VIEW redlock_locks IS 'Redis locks this session holds';

CREATE FUNCTION redlock_servers(
    OUT address text, OUT configured boolean, OUT state text,
    OUT subscribed boolean, OUT replies_owed integer, OUT connects bigint,
    OUT last_rtt_ms double precision, OUT last_error text,
    OUT last_error_at timestamptz, OUT backoff_until timestamptz,
    OUT tls boolean, OUT tls_version text, OUT tls_cipher text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'redlock_servers_srf'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE VIEW redlock_servers AS SELECT * FROM redlock_servers();
GRANT SELECT ON redlock_servers TO PUBLIC;
COMMENT ON VIEW redlock_servers IS 'Redis masters as this session sees them';

-- the columns follow enum RedlockCounter in src/redlock.h
CREATE FUNCTION redlock_stats(
    OUT acquires bigint, OUT reentries bigint, OUT try_busy bigint,
    OUT waits bigint, OUT wait_time_us bigint, OUT wakeups bigint,
    OUT timeouts bigint, OUT unreachable bigint, OUT releases bigint,
    OUT failed_releases bigint, OUT lost_releases bigint, OUT extends bigint,
    OUT commit_extends bigint, OUT lost_at_commit bigint,
    OUT reconnects bigint, OUT since timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'redlock_stats'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE VIEW redlock_stats AS SELECT * FROM redlock_stats();
GRANT SELECT ON redlock_stats TO PUBLIC;
COMMENT ON VIEW redlock_stats IS 'What redlock did in this session';

CREATE FUNCTION redlock_stats_cluster(
    OUT acquires bigint, OUT reentries bigint, OUT try_busy bigint,
    OUT waits bigint, OUT wait_time_us bigint, OUT wakeups bigint,
    OUT timeouts bigint, OUT unreachable bigint, OUT releases bigint,
    OUT failed_releases bigint, OUT lost_releases bigint, OUT extends bigint,
    OUT commit_extends bigint, OUT lost_at_commit bigint,
    OUT reconnects bigint, OUT since timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'redlock_stats_cluster'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE VIEW redlock_stats_cluster AS SELECT * FROM redlock_stats_cluster();
GRANT SELECT ON redlock_stats_cluster TO PUBLIC;
COMMENT ON VIEW redlock_stats_cluster IS 'What redlock did in every session since the server started (needs shared_preload_libraries)';
