/* redlock--1.0--1.1.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION redlock UPDATE TO '1.1'" to load this file. \quit

-- 1.1: redlock_servers shows whether each master is reached over TLS
-- (rediss:// entries), with the protocol version and cipher in use.
--
-- The view is replaced in place (CREATE OR REPLACE VIEW may add columns at
-- its end), so that views users built on it, and the privileges they set
-- on it, survive the update.  Its function gets a new name: a function's
-- result columns cannot change in place.

CREATE FUNCTION redlock_server_list(
    OUT address text, OUT configured boolean, OUT state text,
    OUT subscribed boolean, OUT replies_owed integer, OUT connects bigint,
    OUT last_rtt_ms double precision, OUT last_error text,
    OUT last_error_at timestamptz, OUT backoff_until timestamptz,
    OUT tls boolean, OUT tls_version text, OUT tls_cipher text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'redlock_servers_srf'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE OR REPLACE VIEW redlock_servers AS SELECT * FROM redlock_server_list();

DROP FUNCTION redlock_servers();
