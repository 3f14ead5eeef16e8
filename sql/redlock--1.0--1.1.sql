/* redlock--1.0--1.1.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION redlock UPDATE TO '1.1'" to load this file. \quit

-- 1.1: redlock_servers shows whether each master is reached over TLS
-- (rediss:// entries), with the protocol version and cipher in use.

DROP VIEW redlock_servers;
DROP FUNCTION redlock_servers();

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
