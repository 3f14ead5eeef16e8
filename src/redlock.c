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
#include "catalog/pg_type.h"
#include "utils/array.h"
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
PG_FUNCTION_INFO_V1(redlock_acquire_keys);
PG_FUNCTION_INFO_V1(redlock_try_acquire_keys);
PG_FUNCTION_INFO_V1(redlock_acquire_session_keys);
PG_FUNCTION_INFO_V1(redlock_try_acquire_session_keys);
PG_FUNCTION_INFO_V1(redlock_acquire_shared_keys);
PG_FUNCTION_INFO_V1(redlock_try_acquire_shared_keys);
PG_FUNCTION_INFO_V1(redlock_acquire_shared_session_keys);
PG_FUNCTION_INFO_V1(redlock_try_acquire_shared_session_keys);
PG_FUNCTION_INFO_V1(redlock_release_keys);
PG_FUNCTION_INFO_V1(redlock_release_shared_keys);
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
	const char *key = arg_key(fcinfo, 0);
	int			ttl = arg_ttl(fcinfo, 1);
	int			wait = dontwait ? 0 : arg_wait(fcinfo, 2);
	int64		token;

	if (!RedlockLockAcquire(&key, 1, ttl, wait, session, dontwait, shared, &token))
		PG_RETURN_NULL();
	PG_RETURN_INT64(token);
}

/*
 * arg_keys: the keys argument, an array of text, as palloc'd C strings
 * (their number to *nkeys).  Raises 22004 for a NULL array or element,
 * 22023 for an empty key or one that appears twice, 2202E for an array of
 * more than one dimension and 54000 for more than REDLOCK_MAX_KEYS keys.
 */
static char **
arg_keys(FunctionCallInfo fcinfo, int argno, int *nkeys)
{
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	char	  **keys;
	int			n;
	int			first;			/* the array's first subscript */
	int			i;
	int			j;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("array of lock keys must not be null")));
	arr = PG_GETARG_ARRAYTYPE_P(argno);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("array of lock keys must have one dimension")));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	first = ARR_NDIM(arr) == 1 ? ARR_LBOUND(arr)[0] : 1;
	if (n > REDLOCK_MAX_KEYS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("cannot lock %d keys in one call", n),
				 errdetail("At most %d keys can be taken together.", REDLOCK_MAX_KEYS)));
	keys = palloc(sizeof(char *) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("lock key must not be null"),
					 errdetail("Element %d of the array of keys is null.", first + i)));
		keys[i] = TextDatumGetCString(elems[i]);
		if (keys[i][0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("lock key must not be empty"),
					 errdetail("Element %d of the array of keys is empty.", first + i)));
		for (j = 0; j < i; j++)
			if (strcmp(keys[i], keys[j]) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("lock key \"%s\" appears more than once in the array", keys[i]),
						 errdetail("Elements %d and %d are the same key.", first + j, first + i)));
	}
	*nkeys = n;
	return keys;
}

/*
 * acquire_keys_common: the eight acquire functions that take an array of
 * keys: all of them or none (see RedlockLockAcquire).  Returns the tokens
 * in the order of the keys, or NULL (a try function that found a key held
 * elsewhere).  An empty array takes nothing and returns an empty one.
 */
static Datum
acquire_keys_common(FunctionCallInfo fcinfo, bool session, bool dontwait,
					bool shared)
{
	int			nkeys;
	char	  **keys = arg_keys(fcinfo, 0, &nkeys);
	int			ttl = arg_ttl(fcinfo, 1);
	int			wait = dontwait ? 0 : arg_wait(fcinfo, 2);
	int64	   *tokens = palloc(sizeof(int64) * Max(nkeys, 1));
	Datum	   *out = palloc(sizeof(Datum) * Max(nkeys, 1));
	int			i;

	if (nkeys > 0 &&
		!RedlockLockAcquire((const char *const *) keys, nkeys, ttl, wait,
							session, dontwait, shared, tokens))
		PG_RETURN_NULL();
	for (i = 0; i < nkeys; i++)
		out[i] = Int64GetDatum(tokens[i]);
	PG_RETURN_ARRAYTYPE_P(construct_array(out, nkeys, INT8OID, sizeof(int64),
										  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * release_keys_common: redlock_release(keys text[]) and
 * redlock_release_shared(keys text[]): one session-level hold of each
 * key, in the array's order; true when every one was released.
 */
static Datum
release_keys_common(FunctionCallInfo fcinfo, bool shared)
{
	int			nkeys;
	char	  **keys = arg_keys(fcinfo, 0, &nkeys);
	bool		all = true;
	int			i;

	for (i = 0; i < nkeys; i++)
		if (!RedlockLockReleaseSession(keys[i], shared))
			all = false;
	PG_RETURN_BOOL(all);
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

/*
 * redlock_acquire(keys text[], ttl_ms int, wait_ms int) returns bigint[],
 * redlock_try_acquire(keys text[], ttl_ms int), and the _session and
 * shared forms: as the functions of one key, for several keys at once,
 * all of them or none; the tokens come back in the order of the keys.
 */
Datum
redlock_acquire_keys(PG_FUNCTION_ARGS)
{
	return acquire_keys_common(fcinfo, false, false, false);
}

Datum
redlock_try_acquire_keys(PG_FUNCTION_ARGS)
{
	return acquire_keys_common(fcinfo, false, true, false);
}

Datum
redlock_acquire_session_keys(PG_FUNCTION_ARGS)
{
	return acquire_keys_common(fcinfo, true, false, false);
}

Datum
redlock_try_acquire_session_keys(PG_FUNCTION_ARGS)
{
	return acquire_keys_common(fcinfo, true, true, false);
}

Datum
redlock_acquire_shared_keys(PG_FUNCTION_ARGS)
{
	return acquire_keys_common(fcinfo, false, false, true);
}

Datum
redlock_try_acquire_shared_keys(PG_FUNCTION_ARGS)
{
	return acquire_keys_common(fcinfo, false, true, true);
}

Datum
redlock_acquire_shared_session_keys(PG_FUNCTION_ARGS)
{
	return acquire_keys_common(fcinfo, true, false, true);
}

Datum
redlock_try_acquire_shared_session_keys(PG_FUNCTION_ARGS)
{
	return acquire_keys_common(fcinfo, true, true, true);
}

/*
 * redlock_release(keys text[]) returns boolean and
 * redlock_release_shared(keys text[]): see release_keys_common.
 */
Datum
redlock_release_keys(PG_FUNCTION_ARGS)
{
	return release_keys_common(fcinfo, false);
}

Datum
redlock_release_shared_keys(PG_FUNCTION_ARGS)
{
	return release_keys_common(fcinfo, true);
}
