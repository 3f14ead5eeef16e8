-- A scheduled job that must run once, though every replica's scheduler
-- starts it (pg_cron, a Kubernetes CronJob, a systemd timer on each host).
--
-- The first replica takes the lock and runs; the others find it held and
-- skip.  The job_run table also stops a replica that starts late, after the
-- winner finished, from running the same day's job again.

CREATE TABLE job_run (
    job       text NOT NULL,
    run_date  date NOT NULL,
    replica   text NOT NULL,
    PRIMARY KEY (job, run_date)
);

CREATE FUNCTION run_nightly_report(p_replica text, use_lock boolean DEFAULT true)
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    IF use_lock AND redlock_try_acquire('job:nightly-report', ttl_ms => 600000) IS NULL THEN
        RETURN 'skipped: another replica is running it';
    END IF;
    IF EXISTS (SELECT FROM job_run
                WHERE job = 'nightly-report' AND run_date = current_date) THEN
        RETURN 'skipped: already ran today';
    END IF;
    PERFORM pg_sleep(0.05);             -- the report itself
    -- ON CONFLICT only so that the unlocked control can show the duplicate run
    INSERT INTO job_run VALUES ('nightly-report', current_date, p_replica)
        ON CONFLICT DO NOTHING;
    RETURN 'ran';
END
$$;
