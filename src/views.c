/*-------------------------------------------------------------------------
 *
 * views.c
 *	  The set-returning functions behind the redlock_locks and
 *	  redlock_servers views: what this backend holds, and how it sees each
 *	  Redis master.
 *
 * Both read this backend's own structures (locks.c's table, conn.c's
 * servers) and change nothing.  Times kept on the monotonic clock are
 * shown as wall-clock times relative to now.  valid_until is the lock's
 * validity deadline itself, so it is not overstated by the time the
 * acquire took.
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

/* columns of redlock_servers(): since 1.1 with tls, tls_version, tls_cipher */
#define SERVER_COLUMNS		13
#define SERVER_COLUMNS_1_0	10
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
		values[4] = TimestampTzGetDatum(monotonic_to_wall(lock->valid_until_us));
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
	switch (srv->cmd.state)
	{
		case REDIS_CONN_CONNECTING:
		case REDIS_CONN_HANDSHAKE:
			return "connecting";
		case REDIS_CONN_READY:
			return "connected";
		case REDIS_CONN_CLOSED:
			break;
	}
	if (now < srv->retry_after)
		return "backoff";
	return "disconnected";
}

/*
 * server_row: the view's row for the server at addr: one this backend
 * knows (srv), or a configured one it has not used yet (srv NULL).
 */
static void
server_row(ReturnSetInfo *rsinfo, const RedisServer *srv, const char *addr,
		   bool tls, bool configured, int64 now_us)
{
	Datum		values[SERVER_COLUMNS];
	bool		nulls[SERVER_COLUMNS] = {0};
	const char *version;
	const char *cipher;

	values[0] = CStringGetTextDatum(addr);
	values[1] = BoolGetDatum(configured);
	values[10] = BoolGetDatum(tls);
	nulls[11] = nulls[12] = true;
	if (srv == NULL)
	{
		values[2] = CStringGetTextDatum("disconnected");
		values[3] = BoolGetDatum(false);
		values[4] = Int32GetDatum(0);
		values[5] = Int64GetDatum(0);
		nulls[6] = nulls[7] = nulls[8] = nulls[9] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		return;
	}
	if (srv->cmd.state != REDIS_CONN_CLOSED &&
		RedisTransportTlsInfo(&srv->cmd.transport, &version, &cipher))
	{
		values[11] = CStringGetTextDatum(version);
		values[12] = CStringGetTextDatum(cipher);
		nulls[11] = nulls[12] = false;
	}
	values[2] = CStringGetTextDatum(server_state(srv, now_us));
	values[3] = BoolGetDatum(RedisSubReady(srv));
	values[4] = Int32GetDatum(RedisConnOwed(&srv->cmd));
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
	/* the last backoff, until a connect succeeds: also once it has passed */
	if (srv->backoff_until != 0)
		values[9] = TimestampTzGetDatum(monotonic_to_wall(srv->backoff_until));
	else
		nulls[9] = true;
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/*
 * redlock_servers_srf: redlock_servers() returns setof record (the C name
 * differs from the SQL one, which the redlock.servers variable already has)
 *
 * One row per Redis master this backend knows, and per master configured
 * in redlock.servers that it has not used yet.  Reading the view changes
 * nothing.
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
	int			j;

	InitMaterializedSRF(fcinfo, 0);
	/* the SQL definitions of an older extension version have fewer columns */
	if (rsinfo->setDesc->natts != SERVER_COLUMNS &&
		rsinfo->setDesc->natts != SERVER_COLUMNS_1_0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("redlock's SQL definitions do not match its library"),
				 errdetail("The function returns %d columns; this library knows %d (1.1) and %d (1.0).",
						   rsinfo->setDesc->natts, SERVER_COLUMNS, SERVER_COLUMNS_1_0),
				 errhint("Install the matching library, or run ALTER EXTENSION redlock UPDATE.")));

	srvs = RedisServers(&nsrvs);
	for (i = 0; i < nsrvs; i++)
	{
		bool		configured = false;

		for (j = 0; j < list->nservers; j++)
			if (strcmp(list->servers[j].addr, srvs[i]->addr) == 0)
				configured = true;
		server_row(rsinfo, srvs[i], srvs[i]->addr, srvs[i]->tls, configured, now_us);
	}
	for (j = 0; j < list->nservers; j++)
		if (RedisServerLookup(list->servers[j].addr) == NULL)
			server_row(rsinfo, NULL, list->servers[j].addr, list->servers[j].tls,
					   true, now_us);
	return (Datum) 0;
}
