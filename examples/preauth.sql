-- Payment pre-authorisation: never authorise more than the balance.
--
-- debit() is the read-check-write; preauthorize() runs it under a Redis
-- lock on the account, held by the transaction.  A holder that stalls
-- past its lock's TTL (a GC pause, a slow fraud check) is the dangerous
-- case: another request takes the expired lock, reads the same balance and
-- authorises too.  With redlock the stalled transaction's COMMIT then
-- fails with 40001 instead of committing a second authorisation.

CREATE TABLE account (
    id       integer PRIMARY KEY,
    balance  integer NOT NULL
);

CREATE TABLE authorization_hold (
    id       bigserial PRIMARY KEY,
    account  integer NOT NULL,
    amount   integer NOT NULL
);

-- debit: authorise p_amount if the balance allows it; p_pause stands for
-- whatever the holder waits on between reading and writing
CREATE FUNCTION debit(p_account integer, p_amount integer,
                      p_pause interval DEFAULT '0')
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    available integer;
BEGIN
    SELECT balance INTO available FROM account WHERE id = p_account;
    PERFORM pg_sleep_for(p_pause);
    IF available < p_amount THEN
        RETURN false;
    END IF;
    UPDATE account SET balance = available - p_amount WHERE id = p_account;
    INSERT INTO authorization_hold (account, amount) VALUES (p_account, p_amount);
    RETURN true;
END
$$;

-- preauthorize: the same under a 500 ms transaction-scoped lock
CREATE FUNCTION preauthorize(p_account integer, p_amount integer,
                             p_pause interval DEFAULT '0')
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM redlock_acquire('account:' || p_account, ttl_ms => 500);
    RETURN debit(p_account, p_amount, p_pause);
END
$$;
