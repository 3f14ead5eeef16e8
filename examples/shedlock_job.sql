-- An SQL job that shares its lock with a Java job scheduled by ShedLock.
--
-- The Java side: @SchedulerLock(name = "sync-invoices", lockAtMostFor = "10m")
-- with ShedLock's RedisLockProvider and its default environment.  ShedLock
-- locks the key job-lock:default:sync-invoices with SET NX PX, a string
-- like redlock's own (redlock.lock_format = 'string', the default), so the
-- SQL job takes the same key: whichever starts first runs, the other skips,
-- as ShedLock's own replicas do.  Keep redlock.key_prefix empty here, or
-- make it part of ShedLock's key ('job-lock:default:' and the job name).

CREATE TABLE invoice_sync_run (
    runner      text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL
);

CREATE FUNCTION sync_invoices(p_runner text, use_lock boolean DEFAULT true)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    started timestamptz;
BEGIN
    -- ttl_ms plays lockAtMostFor; the lock is released after COMMIT
    IF use_lock AND redlock_try_acquire('job-lock:default:sync-invoices',
                                        ttl_ms => 600000) IS NULL THEN
        RETURN false;                   -- running elsewhere: skip this turn
    END IF;
    started := clock_timestamp();
    PERFORM pg_sleep(0.03);             -- the job itself
    INSERT INTO invoice_sync_run VALUES (p_runner, started, clock_timestamp());
    RETURN true;
END
$$;
