-- Fencing tokens: a resource that refuses writes from a stale lock holder.
--
-- A lock is a lease: a holder that pauses (GC, VM migration, a slow disk)
-- can outlive it while another holder takes over.  Each acquisition
-- returns a token larger than all before it, so the resource remembers the
-- largest token that wrote and refuses smaller ones.  The commit check
-- already stops a stale holder inside one transaction; fencing also covers
-- what that cannot see: resources outside this database (pass the token
-- along: an object store, another service), and a pause after the check.

CREATE TABLE report (
    name        text PRIMARY KEY,
    body        text,
    last_token  bigint NOT NULL DEFAULT 0
);

-- publish_report: write the report only if no newer lock holder has;
-- returns false when this holder's token is stale
CREATE FUNCTION publish_report(p_name text, p_body text, p_token bigint)
RETURNS boolean LANGUAGE sql AS $$
    WITH written AS (
        UPDATE report SET body = p_body, last_token = p_token
         WHERE name = p_name AND last_token < p_token
        RETURNING 1)
    SELECT EXISTS (SELECT FROM written)
$$;

-- In the job's transaction (psql):
--     SELECT redlock_acquire('report:nightly') AS token \gset
--     ... long work ...
--     SELECT publish_report('nightly', '...', :token);  -- false: a newer holder has written
