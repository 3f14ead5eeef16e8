/* redlock--1.0.sql */

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
