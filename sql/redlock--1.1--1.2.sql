/* redlock--1.1--1.2.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION redlock UPDATE TO '1.2'" to load this file. \quit

-- 1.2: the lease keeper and a cluster-wide view of locks (both need redlock
-- in shared_preload_libraries).
--
-- redlock_locks gains "kept" (whether the lease keeper renews the lock).
-- As in 1.1, the view is replaced in place so that views built on it and
-- privileges set on it survive, and its function gets a new name (query
-- the view, as the README says, not the function).

CREATE FUNCTION redlock_lock_list(
    OUT key text, OUT scope text, OUT token bigint,
    OUT acquired_at timestamptz, OUT valid_until timestamptz,
    OUT transaction_holds integer, OUT session_holds integer,
    OUT lost boolean, OUT masters text[], OUT granted_by text[],
    OUT kept boolean)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'redlock_locks'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE OR REPLACE VIEW redlock_locks AS SELECT * FROM redlock_lock_list();

DROP FUNCTION redlock_locks();

-- Every backend's Redis locks and the key each one waits for, like pg_locks
-- for PostgreSQL's own: join with pg_stat_activity on pid.  Key names of
-- other roles' backends show as NULL unless the reader has the privileges
-- of pg_read_all_stats (as pg_stat_activity hides their queries).

CREATE FUNCTION redlock_locks_cluster(
    OUT pid integer, OUT datid oid, OUT usesysid oid, OUT key text,
    OUT state text, OUT scope text, OUT token bigint,
    OUT since timestamptz, OUT valid_until timestamptz,
    OUT kept boolean, OUT lost boolean, OUT renewals bigint,
    OUT holder_pid integer)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'redlock_locks_cluster'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE VIEW redlock_locks_cluster AS SELECT * FROM redlock_locks_cluster();
GRANT SELECT ON redlock_locks_cluster TO PUBLIC;
COMMENT ON VIEW redlock_locks_cluster IS 'Redis locks every backend holds or waits for (needs shared_preload_libraries)';
