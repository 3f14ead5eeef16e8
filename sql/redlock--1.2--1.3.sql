/* redlock--1.2--1.3.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION redlock UPDATE TO '1.3'" to load this file. \quit

-- 1.3: highly available entries in redlock.servers (sentinel://,
-- cluster://).
--
-- redlock_servers gains kind (master, sentinel, cluster, cluster node),
-- node (the node a sentinel entry uses now; what a cluster entry knows)
-- and failovers (how often a sentinel entry's sentinels named another
-- primary; a cluster entry's redirections); redlock_stats and
-- redlock_stats_cluster gain failovers and redirects.  As before, the
-- views are replaced in place (columns are added at their end, after
-- "since" for the statistics), so that views built on them and privileges
-- set on them survive.  Their functions get
-- new names (a function's result columns cannot change in place), and the
-- 1.2 ones go, as redlock_servers() went in 1.1: query the views.

CREATE FUNCTION redlock_server_list_v3(
    OUT address text, OUT configured boolean, OUT state text,
    OUT subscribed boolean, OUT replies_owed integer, OUT connects bigint,
    OUT last_rtt_ms double precision, OUT last_error text,
    OUT last_error_at timestamptz, OUT backoff_until timestamptz,
    OUT tls boolean, OUT tls_version text, OUT tls_cipher text,
    OUT kind text, OUT node text, OUT failovers bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'redlock_servers_srf'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE OR REPLACE VIEW redlock_servers AS SELECT * FROM redlock_server_list_v3();

DROP FUNCTION redlock_server_list();

-- the columns follow enum RedlockCounter in src/redlock.h, "since" after
-- the counters of 1.0
CREATE FUNCTION redlock_stats_v3(
    OUT acquires bigint, OUT reentries bigint, OUT try_busy bigint,
    OUT waits bigint, OUT wait_time_us bigint, OUT wakeups bigint,
    OUT timeouts bigint, OUT unreachable bigint, OUT releases bigint,
    OUT failed_releases bigint, OUT lost_releases bigint, OUT extends bigint,
    OUT commit_extends bigint, OUT lost_at_commit bigint,
    OUT reconnects bigint, OUT since timestamptz, OUT failovers bigint,
    OUT redirects bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'redlock_stats'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE OR REPLACE VIEW redlock_stats AS SELECT * FROM redlock_stats_v3();

DROP FUNCTION redlock_stats();

CREATE FUNCTION redlock_stats_cluster_v3(
    OUT acquires bigint, OUT reentries bigint, OUT try_busy bigint,
    OUT waits bigint, OUT wait_time_us bigint, OUT wakeups bigint,
    OUT timeouts bigint, OUT unreachable bigint, OUT releases bigint,
    OUT failed_releases bigint, OUT lost_releases bigint, OUT extends bigint,
    OUT commit_extends bigint, OUT lost_at_commit bigint,
    OUT reconnects bigint, OUT since timestamptz, OUT failovers bigint,
    OUT redirects bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'redlock_stats_cluster'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE OR REPLACE VIEW redlock_stats_cluster AS SELECT * FROM redlock_stats_cluster_v3();

DROP FUNCTION redlock_stats_cluster();
