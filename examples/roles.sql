-- Who may take locks, and two tenants that share one Redis.
--
-- Run as a superuser in a database with the extension.  The lock functions
-- are granted to nobody by CREATE EXTENSION: a role that can call them can
-- hold any key for up to a day, and keep services outside the database
-- waiting.  Grant them to a group, and put the application roles in it.

CREATE ROLE lock_users NOLOGIN;
GRANT EXECUTE ON FUNCTION
    redlock_acquire(text, integer, integer),
    redlock_try_acquire(text, integer),
    redlock_acquire_session(text, integer, integer),
    redlock_try_acquire_session(text, integer),
    redlock_release(text),
    redlock_release_all(),
    redlock_extend(text, integer),
    redlock_token(text),
    redlock_acquire_shared(text, integer, integer),
    redlock_try_acquire_shared(text, integer),
    redlock_acquire_shared_session(text, integer, integer),
    redlock_try_acquire_shared_session(text, integer),
    redlock_release_shared(text),
    redlock_acquire(text[], integer, integer),
    redlock_try_acquire(text[], integer),
    redlock_acquire_session(text[], integer, integer),
    redlock_try_acquire_session(text[], integer),
    redlock_acquire_shared(text[], integer, integer),
    redlock_try_acquire_shared(text[], integer),
    redlock_acquire_shared_session(text[], integer, integer),
    redlock_try_acquire_shared_session(text[], integer),
    redlock_release(text[]),
    redlock_release_shared(text[])
TO lock_users;

-- Each tenant's locks live under its own prefix: acme's 'invoice:7' is the
-- Redis key 'acme:invoice:7', globex's is 'globex:invoice:7'.  Only a
-- superuser can set or change a prefix, so a tenant cannot leave its own
-- key space.  No prefix may start with another one.
CREATE ROLE acme_app LOGIN IN ROLE lock_users;
CREATE ROLE globex_app LOGIN IN ROLE lock_users;
ALTER ROLE acme_app SET redlock.key_prefix = 'acme:';
ALTER ROLE globex_app SET redlock.key_prefix = 'globex:';
