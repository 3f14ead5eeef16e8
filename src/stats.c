/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  Counters of what redlock did: per backend always, and for the whole
 *	  cluster when the library is in shared_preload_libraries.
 *
 * Ownership and locking: the backend's counters (local) are its own.  The
 * cluster's live in one shared memory struct of atomics, created by the
 * postmaster when the library is preloaded; backends only ever add to
 * them (pg_atomic_fetch_add_u64), so no lock is needed and a reader sees
 * each counter exactly, though not all of them at the same instant.
 * Without preloading there is no shared struct (shared == NULL) and
 * everything but redlock_stats_cluster works.
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"

#include "redlock.h"

typedef struct SharedStats
{
	pg_atomic_uint64 counters[REDLOCK_NUM_COUNTERS];
	TimestampTz since;
} SharedStats;

static int64 local[REDLOCK_NUM_COUNTERS];
static SharedStats *shared = NULL;

PG_FUNCTION_INFO_V1(redlock_stats);
PG_FUNCTION_INFO_V1(redlock_stats_cluster);

/*
 * RedlockCount: add n to a counter of this backend and, when preloaded,
 * of the cluster.
 */
void
RedlockCount(RedlockCounter counter, int64 n)
{
	local[counter] += n;
	if (shared)
		pg_atomic_fetch_add_u64(&shared->counters[counter], (uint64) n);
}

/* RedlockStatsShmemSize: room for the cluster's counters. */
Size
RedlockStatsShmemSize(void)
{
	return MAXALIGN(sizeof(SharedStats));
}

/*
 * RedlockStatsShmemInit: create (postmaster) or attach to the shared
 * counters; from the shmem_startup hook, under AddinShmemInitLock.
 */
void
RedlockStatsShmemInit(void)
{
	bool		found;
	int			i;

	shared = ShmemInitStruct("redlock stats", sizeof(SharedStats), &found);
	if (!found)
	{
		for (i = 0; i < REDLOCK_NUM_COUNTERS; i++)
			pg_atomic_init_u64(&shared->counters[i], 0);
		shared->since = GetCurrentTimestamp();
	}
}

/* counters before "since", as 1.0 to 1.2 define the views */
#define COUNTERS_1_0	(REDLOCK_RECONNECTS + 1)

/* stats_tuple: one row of counters (plus "since") as the SQL types say. */
static Datum
stats_tuple(FunctionCallInfo fcinfo, const int64 *values, TimestampTz since)
{
	TupleDesc	tupdesc;
	Datum		datums[REDLOCK_NUM_COUNTERS + 1];
	bool		nulls[REDLOCK_NUM_COUNTERS + 1] = {0};
	int			i;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	/*
	 * Up to 1.2 the row ends with "since" after the 1.0 counters; later
	 * versions add counters after it (a database not updated yet has fewer).
	 */
	if (tupdesc->natts > REDLOCK_NUM_COUNTERS + 1 ||
		tupdesc->natts < COUNTERS_1_0 + 1)
		elog(ERROR, "redlock's SQL definitions do not match its library; run ALTER EXTENSION redlock UPDATE");

	for (i = 0; i < tupdesc->natts; i++)
	{
		if (i < COUNTERS_1_0)
			datums[i] = Int64GetDatum(values[i]);
		else if (i == COUNTERS_1_0)
			datums[i] = TimestampTzGetDatum(since);
		else
			datums[i] = Int64GetDatum(values[i - 1]);
	}
	return HeapTupleGetDatum(heap_form_tuple(tupdesc, datums, nulls));
}

/*
 * redlock_stats() returns record
 *
 * This backend's counters, and when it started.
 */
Datum
redlock_stats(PG_FUNCTION_ARGS)
{
	return stats_tuple(fcinfo, local, MyStartTimestamp);
}

/*
 * redlock_stats_cluster() returns record
 *
 * The counters of every backend since the server started.  Raises 55000
 * when the library was not preloaded: there is no shared memory then.
 */
Datum
redlock_stats_cluster(PG_FUNCTION_ARGS)
{
	int64		values[REDLOCK_NUM_COUNTERS];
	int			i;

	if (shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cluster-wide redlock statistics need redlock in shared_preload_libraries"),
				 errhint("Add redlock to shared_preload_libraries and restart; redlock_stats shows this session's counters without it.")));

	for (i = 0; i < REDLOCK_NUM_COUNTERS; i++)
		values[i] = (int64) pg_atomic_read_u64(&shared->counters[i]);
	return stats_tuple(fcinfo, values, shared->since);
}
