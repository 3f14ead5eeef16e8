/*-------------------------------------------------------------------------
 *
 * redlock.c
 *	  Module entry point and the SQL-callable functions.
 *
 * The functions here only check and default their arguments, then call
 * into locks.c.  All of them are VOLATILE and PARALLEL UNSAFE (declared in
 * the install script): a lock belongs to one backend and its transaction.
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "tcop/utility.h"
#include "utils/builtins.h"

#include "redlock.h"

PG_MODULE_MAGIC;

MemoryContext RedlockContext = NULL;

void		_PG_init(void);

static ProcessUtility_hook_type prev_ProcessUtility = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

PG_FUNCTION_INFO_V1(redlock_acquire);
PG_FUNCTION_INFO_V1(redlock_try_acquire);
PG_FUNCTION_INFO_V1(redlock_acquire_session);
PG_FUNCTION_INFO_V1(redlock_try_acquire_session);
PG_FUNCTION_INFO_V1(redlock_release);
PG_FUNCTION_INFO_V1(redlock_acquire_shared);
PG_FUNCTION_INFO_V1(redlock_try_acquire_shared);
PG_FUNCTION_INFO_V1(redlock_acquire_shared_session);
PG_FUNCTION_INFO_V1(redlock_try_acquire_shared_session);
PG_FUNCTION_INFO_V1(redlock_release_shared);
PG_FUNCTION_INFO_V1(redlock_release_all);
PG_FUNCTION_INFO_V1(redlock_extend);
PG_FUNCTION_INFO_V1(redlock_token);

/*
 * redlock_ProcessUtility: DISCARD ALL, which a connection pooler runs to
 * hand a server connection to its next client, releases this session's
 * session-level locks, as it releases advisory locks: the next client must
 * not find itself holding (and re-entering) someone else's lock.
 */
static void
redlock_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
					   bool readOnlyTree, ProcessUtilityContext context,
					   ParamListInfo params, QueryEnvironment *queryEnv,
					   DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;
	bool		discard_all = IsA(stmt, DiscardStmt) &&
		((DiscardStmt *) stmt)->target == DISCARD_ALL;

	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
							queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
	if (discard_all)
		(void) RedlockLockReleaseAllSession();
}

/*
 * shmem_request: with shared_preload_libraries, room for the cluster's
 * counters (stats.c) and its table of locks (shared.c).
 */
static void
shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(add_size(RedlockStatsShmemSize(), RedlockSharedShmemSize()));
}

/* shmem_startup: create (postmaster) or attach to both. */
static void
shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	RedlockStatsShmemInit();
	RedlockSharedShmemInit();
	LWLockRelease(AddinShmemInitLock);
}

/*
 * _PG_init: create the module's memory context, define the settings,
 * register the transaction callbacks and the DISCARD ALL hook; when
 * preloaded, the shared memory hooks and the lease keeper.
 */
void
_PG_init(void)
{
	RedlockContext = AllocSetContextCreate(TopMemoryContext, "redlock",
										   ALLOCSET_DEFAULT_SIZES);
	RedlockDefineGucs();
	RedlockLockInit();
	if (process_shared_preload_libraries_in_progress)
	{
		prev_shmem_request_hook = shmem_request_hook;
		shmem_request_hook = shmem_request;
		prev_shmem_startup_hook = shmem_startup_hook;
		shmem_startup_hook = shmem_startup;
		RedlockKeeperInit();
	}
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = redlock_ProcessUtility;

	/*
	 * Before the library is loaded, redlock.* settings are placeholders any
	 * role can read.  Say so where a DBA looks, once per backend.
	 */
	if (!process_shared_preload_libraries_in_progress &&
		RedlockCredentialsInSettings())
		ereport(LOG,
				(errmsg("Redis credentials in redlock.password or redlock.servers are readable by every role in sessions that have not loaded redlock"),
				 errhint("Add redlock to shared_preload_libraries, or move the credentials to redlock.passfile.")));
}

/*
 * arg_key: the lock key argument.  Raises 22004 for NULL and 22023 for an
 * empty key.  Returns a palloc'd C string.
 */
static char *
arg_key(FunctionCallInfo fcinfo, int argno)
{
	char	   *key;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("lock key must not be null")));
	key = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (key[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lock key must not be empty")));
	return key;
}

/*
 * arg_ttl: the ttl_ms argument, or redlock.default_ttl when NULL (or not
 * passed).  Raises 22023 outside 1 .. REDLOCK_MAX_TTL_MS.
 */
static int
arg_ttl(FunctionCallInfo fcinfo, int argno)
{
	int			ttl;

	if (PG_NARGS() <= argno || PG_ARGISNULL(argno))
		return redlock_default_ttl;
	ttl = PG_GETARG_INT32(argno);
	if (ttl < 1 || ttl > REDLOCK_MAX_TTL_MS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ttl_ms must be between 1 and %d, not %d",
						REDLOCK_MAX_TTL_MS, ttl)));
	return ttl;
}

/*
 * arg_wait: the wait_ms argument; -1 (use redlock.wait_timeout) when NULL.
 * Raises 22023 when negative.
 */
static int
arg_wait(FunctionCallInfo fcinfo, int argno)
{
	int			wait;

	if (PG_NARGS() <= argno || PG_ARGISNULL(argno))
		return -1;
	wait = PG_GETARG_INT32(argno);
	if (wait < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("wait_ms must not be negative"),
				 errhint("Use 0 to wait without a limit of its own, or a try function not to wait.")));
	return wait;
}

/* acquire_common: the eight acquire functions differ only in three flags. */
static Datum
acquire_common(FunctionCallInfo fcinfo, bool session, bool dontwait,
			   bool shared)
{
	char	   *key = arg_key(fcinfo, 0);
	int			ttl = arg_ttl(fcinfo, 1);
	int			wait = dontwait ? 0 : arg_wait(fcinfo, 2);
	int64		token;

	if (!RedlockLockAcquire(key, ttl, wait, session, dontwait, shared, &token))
		PG_RETURN_NULL();
	PG_RETURN_INT64(token);
}

/*
 * redlock_acquire(key text, ttl_ms int, wait_ms int) returns bigint
 *
 * Waits for the lock and holds it until the transaction ends.  Returns the
 * fencing token.  Raises 55P03 when the wait ends.
 */
Datum
redlock_acquire(PG_FUNCTION_ARGS)
{
	return acquire_common(fcinfo, false, false, false);
}

/*
 * redlock_try_acquire(key text, ttl_ms int) returns bigint
 *
 * One attempt; returns the token, or NULL when someone else holds the key.
 */
Datum
redlock_try_acquire(PG_FUNCTION_ARGS)
{
	return acquire_common(fcinfo, false, true, false);
}

/*
 * redlock_acquire_session(key text, ttl_ms int, wait_ms int) returns bigint
 *
 * Like redlock_acquire, but held until released or the session ends.
 */
Datum
redlock_acquire_session(PG_FUNCTION_ARGS)
{
	return acquire_common(fcinfo, true, false, false);
}

/*
 * redlock_try_acquire_session(key text, ttl_ms int) returns bigint
 *
 * Like redlock_try_acquire, but held until released or the session ends.
 */
Datum
redlock_try_acquire_session(PG_FUNCTION_ARGS)
{
	return acquire_common(fcinfo, true, true, false);
}

/*
 * redlock_release(key text) returns boolean
 *
 * Releases one session-level acquisition.  Returns false with a WARNING
 * when the session did not hold it, or the lock had been lost.
 */
Datum
redlock_release(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(RedlockLockReleaseSession(arg_key(fcinfo, 0), false));
}

/*
 * redlock_acquire_shared(key text, ttl_ms int, wait_ms int) returns bigint,
 * redlock_try_acquire_shared(key text, ttl_ms int) and their _session
 * forms: as the exclusive ones, in shared mode: other shared holders may
 * hold the key at the same time, exclusive ones not (see algo.c).
 */
Datum
redlock_acquire_shared(PG_FUNCTION_ARGS)
{
	return acquire_common(fcinfo, false, false, true);
}

Datum
redlock_try_acquire_shared(PG_FUNCTION_ARGS)
{
	return acquire_common(fcinfo, false, true, true);
}

Datum
redlock_acquire_shared_session(PG_FUNCTION_ARGS)
{
	return acquire_common(fcinfo, true, false, true);
}

Datum
redlock_try_acquire_shared_session(PG_FUNCTION_ARGS)
{
	return acquire_common(fcinfo, true, true, true);
}

/*
 * redlock_release_shared(key text) returns boolean
 *
 * Releases one session-level shared acquisition, as redlock_release does
 * an exclusive one.
 */
Datum
redlock_release_shared(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(RedlockLockReleaseSession(arg_key(fcinfo, 0), true));
}

/*
 * redlock_release_all() returns integer
 *
 * Releases every session-level lock of this session; returns how many keys
 * were held at session level.
 */
Datum
redlock_release_all(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(RedlockLockReleaseAllSession());
}

/*
 * redlock_extend(key text, ttl_ms int) returns boolean
 *
 * Re-arms a lock this backend holds (either scope) to ttl_ms (NULL:
 * redlock.default_ttl) on a quorum of its masters.  Returns false with a
 * WARNING when the lock is not held or was lost.
 */
Datum
redlock_extend(PG_FUNCTION_ARGS)
{
	char	   *key = arg_key(fcinfo, 0);
	int			ttl = arg_ttl(fcinfo, 1);

	PG_RETURN_BOOL(RedlockLockExtend(key, ttl));
}

/*
 * redlock_token(key text) returns bigint
 *
 * The fencing token of a lock this backend holds (either scope), NULL when
 * it holds none on that key.
 */
Datum
redlock_token(PG_FUNCTION_ARGS)
{
	int64		token;

	if (!RedlockLockToken(arg_key(fcinfo, 0), &token))
		PG_RETURN_NULL();
	PG_RETURN_INT64(token);
}
