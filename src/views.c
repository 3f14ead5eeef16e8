/*-------------------------------------------------------------------------
 *
 * views.c
 *	  The set-returning functions behind the redlock_locks and
 *	  redlock_servers views: what this backend holds, and how it sees each
 *	  Redis master.
 *
 * Both read this backend's own structures (locks.c's table, conn.c's
 * servers) and change nothing.  Times kept on the monotonic clock are
 * shown as wall-clock times relative to now.
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "redlock.h"

PG_FUNCTION_INFO_V1(redlock_locks);
PG_FUNCTION_INFO_V1(redlock_servers_srf);

/* monotonic_to_wall: a monotonic time (us) as a timestamptz. */
static TimestampTz
monotonic_to_wall(int64 mono_us)
{
	return GetCurrentTimestamp() + (mono_us - RedlockNowUs());
}

/* server_array: the addresses of a lock's masters, all or those in mask. */
static Datum
server_array(const RedlockLock *lock, bool only_granted)
{
	Datum		addrs[REDLOCK_MAX_SERVERS];
	int			n = 0;
	int			i;

	for (i = 0; i < lock->nservers; i++)
		if (!only_granted || (lock->granted & ((uint32) 1 << i)))
			addrs[n++] = CStringGetTextDatum(lock->servers[i]->addr);
	return PointerGetDatum(construct_array(addrs, n, TEXTOID, -1, false,
										   TYPALIGN_INT));
}

/*
 * redlock_locks() returns setof record
 *
 * One row per lock this backend holds: key, scope, token, when acquired,
 * how long valid, holds per scope, whether it was found lost, its masters
 * and those that granted it.
 */
Datum
redlock_locks(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HTAB	   *table = RedlockLockTable();
	HASH_SEQ_STATUS seq;
	RedlockLock *lock;

	InitMaterializedSRF(fcinfo, 0);
	if (table == NULL)
		return (Datum) 0;

	hash_seq_init(&seq, table);
	while ((lock = (RedlockLock *) hash_seq_search(&seq)) != NULL)
	{
		Datum		values[10];
		bool		nulls[10] = {0};
		int			xact_holds = 0;
		const char *scope;
		int			i;

		if (lock->pending_subid != InvalidSubTransactionId)
			continue;			/* an acquire still in flight */
		for (i = 0; i < lock->nholds; i++)
			xact_holds += lock->holds[i].count;

		values[0] = CStringGetTextDatum(lock->key);
		if (xact_holds == 0)
			scope = "session";
		else if (lock->session_count > 0)
			scope = "both";
		else
			scope = "transaction";
		values[1] = CStringGetTextDatum(scope);
		values[2] = Int64GetDatum(lock->token);
		values[3] = TimestampTzGetDatum(lock->acquired_at);
		values[4] = TimestampTzGetDatum(lock->acquired_at +
										(lock->valid_until_us - lock->acquired_us));
		values[5] = Int32GetDatum(xact_holds);
		values[6] = Int32GetDatum(lock->session_count);
		values[7] = BoolGetDatum(lock->lost);
		values[8] = server_array(lock, false);
		values[9] = server_array(lock, true);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* server_state: a word for how this backend's connection to srv stands. */
static const char *
server_state(const RedisServer *srv, int64 now)
{
	if (srv->ctx && srv->connecting)
		return "connecting";
	if (srv->ctx)
		return "connected";
	if (now < srv->retry_after)
		return "backoff";
	return "disconnected";
}

/*
 * redlock_servers_srf: redlock_servers() returns setof record (the C name
 * differs from the SQL one, which the redlock.servers variable already has)
 *
 * One row per Redis master this backend knows: every one configured in
 * redlock.servers, and any other that a lock it holds was taken on.
 */
Datum
redlock_servers_srf(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	const RedlockServerList *list = RedlockConfiguredServers();
	RedisServer **srvs;
	int64		now_us = RedlockNowUs();
	int			nsrvs;
	int			i;

	InitMaterializedSRF(fcinfo, 0);

	/* configured servers the backend has not used yet still get a row */
	for (i = 0; i < list->nservers; i++)
		(void) RedisServerGet(&list->servers[i]);

	srvs = RedisServers(&nsrvs);
	for (i = 0; i < nsrvs; i++)
	{
		RedisServer *srv = srvs[i];
		Datum		values[10];
		bool		nulls[10] = {0};
		bool		configured = false;
		int			j;

		for (j = 0; j < list->nservers; j++)
			if (strcmp(list->servers[j].addr, srv->addr) == 0)
				configured = true;

		values[0] = CStringGetTextDatum(srv->addr);
		values[1] = BoolGetDatum(configured);
		values[2] = CStringGetTextDatum(server_state(srv, now_us));
		values[3] = BoolGetDatum(srv->sub.ready);
		values[4] = Int32GetDatum(srv->owed);
		values[5] = Int64GetDatum(srv->connects);
		if (srv->last_rtt_us > 0)
			values[6] = Float8GetDatum(srv->last_rtt_us / 1000.0);
		else
			nulls[6] = true;
		if (srv->last_error[0])
		{
			values[7] = CStringGetTextDatum(srv->last_error);
			values[8] = TimestampTzGetDatum(srv->last_error_at);
		}
		else
			nulls[7] = nulls[8] = true;
		if (now_us < srv->retry_after)
			values[9] = TimestampTzGetDatum(monotonic_to_wall(srv->retry_after));
		else
			nulls[9] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
