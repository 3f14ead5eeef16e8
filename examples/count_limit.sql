-- A count limit: at most three exports running per customer.
--
-- Counting and then inserting is a read-check-write like any other: two
-- requests that count two running exports both start a third.  A lock on
-- the customer makes the count and the insert one step.

CREATE TABLE export_job (
    id        bigserial PRIMARY KEY,
    customer  text NOT NULL,
    status    text NOT NULL DEFAULT 'running'
);

CREATE FUNCTION start_export(p_customer text, use_lock boolean DEFAULT true)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    running integer;
    job bigint;
BEGIN
    IF use_lock THEN
        PERFORM redlock_acquire('exports:' || p_customer);
    END IF;
    SELECT count(*) INTO running FROM export_job
     WHERE customer = p_customer AND status = 'running';
    PERFORM pg_sleep(0.01);             -- checks, quota lookups...
    IF running >= 3 THEN
        RAISE EXCEPTION 'customer % already runs % exports', p_customer, running
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO export_job (customer) VALUES (p_customer) RETURNING id INTO job;
    RETURN job;
END
$$;
