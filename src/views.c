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
#include "catalog/pg_authid.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "redlock.h"

/* columns of redlock_locks(): since 1.2 with kept (1.1's function has 10) */
#define LOCK_COLUMNS		12
PG_FUNCTION_INFO_V1(redlock_locks);
PG_FUNCTION_INFO_V1(redlock_locks_cluster);

/*
 * columns of redlock_servers(): since 1.1 with tls, tls_version, tls_cipher;
 * since 1.3 with kind, node, failovers
 */
#define SERVER_COLUMNS		16
#define SERVER_COLUMNS_1_1	13
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
	/*
	 * 1.1's function has no "kept", 1.3's no "mode": the tuple store takes
	 * the columns its function has only
	 */
	if (rsinfo->setDesc->natts > LOCK_COLUMNS ||
		rsinfo->setDesc->natts < LOCK_COLUMNS - 2)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("redlock's SQL definitions do not match its library"),
				 errhint("Install the matching library, or run ALTER EXTENSION redlock UPDATE.")));
	if (table == NULL)
		return (Datum) 0;

	hash_seq_init(&seq, table);
	while ((lock = (RedlockLock *) hash_seq_search(&seq)) != NULL)
	{
		Datum		values[LOCK_COLUMNS];
		bool		nulls[LOCK_COLUMNS] = {0};
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
		values[10] = BoolGetDatum(RedlockSharedKept(lock));
		values[11] = CStringGetTextDatum(lock->shared ? "shared" : "exclusive");
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
 * cluster_state: a cluster entry's state is its nodes' (its own command
 * connection is never used): "connected" when one of them is, else
 * "connecting" when one is, else "backoff" when every one is, else
 * "disconnected".  *node gets the first connected node (for its TLS
 * details), or NULL; *backoff_until the end of the latest backoff of the
 * nodes (0 for none).
 */
static const char *
cluster_state(const RedisServer *srv, int64 now, const RedisServer **node,
			  int64 *backoff_until)
{
	const char *best = "disconnected";
	int			nbackoff = 0;
	int			i;

	*node = NULL;
	*backoff_until = 0;
	for (i = 0; i < srv->ncnodes; i++)
	{
		const RedisServer *n = srv->cnodes[i];
		const char *st = server_state(n, now);

		*backoff_until = Max(*backoff_until, n->backoff_until);
		if (strcmp(st, "connected") == 0)
		{
			*node = n;
			return st;
		}
		if (strcmp(st, "connecting") == 0)
			best = st;
		nbackoff += strcmp(st, "backoff") == 0;
	}
	if (srv->ncnodes > 0 && nbackoff == srv->ncnodes)
		return "backoff";
	return best;
}

/*
 * server_row: the view's row for the server at addr: one this backend
 * knows (srv), or a configured one it has not used yet (srv NULL).
 */
static void
server_row(ReturnSetInfo *rsinfo, const RedisServer *srv, const char *addr,
		   RedisKind kind, bool tls, bool configured, int64 now_us)
{
	Datum		values[SERVER_COLUMNS];
	bool		nulls[SERVER_COLUMNS] = {0};
	const char *version;
	const char *cipher;
	const RedisServer *tls_from;	/* whose connection's TLS is shown */
	const RedisServer *rtt_from;
	const RedisServer *err_from;
	int			owed;
	int64		backoff_until;

	values[0] = CStringGetTextDatum(addr);
	values[1] = BoolGetDatum(configured);
	values[10] = BoolGetDatum(tls);
	nulls[11] = nulls[12] = true;
	/* a sentinel entry: which node its sentinels named last */
	values[13] = CStringGetTextDatum(kind == REDIS_KIND_SENTINEL ? "sentinel" :
									 kind == REDIS_KIND_CLUSTER ? "cluster" :
									 srv && srv->cluster ? "cluster node" : "master");
	nulls[14] = true;
	values[15] = Int64GetDatum(srv ? srv->failovers : 0);
	if (srv != NULL && srv->kind == REDIS_KIND_SENTINEL && srv->host[0] != '\0')
	{
		values[14] = CStringGetTextDatum(psprintf(strchr(srv->host, ':') ?
												  "[%s]:%d" : "%s:%d",
												  srv->host, srv->port));
		nulls[14] = false;
	}
	else if (srv != NULL && srv->kind == REDIS_KIND_CLUSTER)
	{
		char		text[64];

		RedisClusterDescribe(srv, text, sizeof(text));
		values[14] = CStringGetTextDatum(text);
		nulls[14] = false;
		values[15] = Int64GetDatum(srv->redirects);
	}
	else if (srv != NULL && srv->kind == REDIS_KIND_PLAIN)
	{
		values[14] = CStringGetTextDatum(addr);
		nulls[14] = false;
	}
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
	tls_from = srv;
	owed = RedisConnOwed(&srv->cmd);
	backoff_until = srv->backoff_until;
	rtt_from = err_from = srv;
	if (srv->kind == REDIS_KIND_CLUSTER)
	{
		int			i;

		/* the nodes' connections, not the entry's unused one */
		values[2] = CStringGetTextDatum(cluster_state(srv, now_us, &tls_from,
													  &backoff_until));
		for (i = 0; i < srv->ncnodes; i++)
		{
			const RedisServer *n = srv->cnodes[i];

			owed += RedisConnOwed(&n->cmd);
			if (n->last_rtt_us > 0 && (rtt_from->last_rtt_us == 0 || n == tls_from))
				rtt_from = n;
			if (n->last_error[0] &&
				(!err_from->last_error[0] || n->last_error_at > err_from->last_error_at))
				err_from = n;
		}
	}
	else
		values[2] = CStringGetTextDatum(server_state(srv, now_us));
	if (tls_from != NULL && tls_from->cmd.state != REDIS_CONN_CLOSED &&
		RedisTransportTlsInfo(&tls_from->cmd.transport, &version, &cipher))
	{
		values[11] = CStringGetTextDatum(version);
		values[12] = CStringGetTextDatum(cipher);
		nulls[11] = nulls[12] = false;
	}
	values[3] = BoolGetDatum(RedisSubReady(srv));
	values[4] = Int32GetDatum(owed);
	values[5] = Int64GetDatum(srv->connects);	/* a cluster's: its nodes' */
	if (rtt_from->last_rtt_us > 0)
		values[6] = Float8GetDatum(rtt_from->last_rtt_us / 1000.0);
	else
		nulls[6] = true;
	if (err_from->last_error[0])
	{
		values[7] = CStringGetTextDatum(err_from->last_error);
		values[8] = TimestampTzGetDatum(err_from->last_error_at);
	}
	else
		nulls[7] = nulls[8] = true;
	/* the last backoff, until a connect succeeds: also once it has passed */
	if (backoff_until != 0)
		values[9] = TimestampTzGetDatum(monotonic_to_wall(backoff_until));
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
		rsinfo->setDesc->natts != SERVER_COLUMNS_1_1 &&
		rsinfo->setDesc->natts != SERVER_COLUMNS_1_0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("redlock's SQL definitions do not match its library"),
				 errdetail("The function returns %d columns; this library knows %d (1.3), %d (1.1) and %d (1.0).",
						   rsinfo->setDesc->natts, SERVER_COLUMNS,
						   SERVER_COLUMNS_1_1, SERVER_COLUMNS_1_0),
				 errhint("Install the matching library, or run ALTER EXTENSION redlock UPDATE.")));

	srvs = RedisServers(&nsrvs);
	for (i = 0; i < nsrvs; i++)
	{
		bool		configured = false;

		for (j = 0; j < list->nservers; j++)
			if (strcmp(list->servers[j].addr, srvs[i]->addr) == 0)
				configured = true;
		server_row(rsinfo, srvs[i], srvs[i]->addr, srvs[i]->kind, srvs[i]->tls,
				   configured, now_us);
	}
	for (j = 0; j < list->nservers; j++)
		if (RedisServerLookup(list->servers[j].addr) == NULL)
			server_row(rsinfo, NULL, list->servers[j].addr, list->servers[j].kind,
					   list->servers[j].tls, true, now_us);
	return (Datum) 0;
}

/* scope_text: a slot's scope as redlock_locks words it. */
static const char *
scope_text(char scope)
{
	switch (scope)
	{
		case REDLOCK_SCOPE_SESSION:
			return "session";
		case REDLOCK_SCOPE_BOTH:
			return "both";
		default:
			return "transaction";
	}
}

/*
 * redlock_locks_cluster() returns setof record
 *
 * One row per Redis lock any backend of the cluster holds or waits for,
 * from the shared table (shared.c): pid, database, role, key, state
 * ("held", "waiting"), scope, token, since when, valid until, whether the
 * lease keeper renews it, whether it found it lost, how often it renewed
 * it, and for a waiter the pid of a backend of this cluster that holds the
 * key with the same masters (NULL: none, or a client outside).  Keys of
 * other roles' backends (session users, as in pg_stat_activity) are NULL
 * unless the reader has the privileges of pg_read_all_stats.
 * Raises 55000 without shared_preload_libraries.
 */
Datum
redlock_locks_cluster(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	LWLock	   *lwlock;
	int			nslots;
	RedlockSlot *slots = RedlockSharedSlots(&nslots, &lwlock);
	RedlockSlot *copy;
	bool		all_keys;
	int64		now = RedlockNowUs();
	int			n = 0;
	int			i;
	int			j;

	if (slots == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("redlock_locks_cluster needs redlock in shared_preload_libraries"),
				 errhint("Add redlock to shared_preload_libraries and restart; redlock_locks shows this session's locks without it.")));
	InitMaterializedSRF(fcinfo, 0);
	all_keys = has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS);

	/* a consistent copy, so that the lock is not held while rows are built */
	copy = palloc(sizeof(RedlockSlot) * nslots);
	LWLockAcquire(lwlock, LW_SHARED);
	for (i = 0; i < nslots; i++)
		if (slots[i].in_use)
			copy[n++] = slots[i];
	LWLockRelease(lwlock);

	for (i = 0; i < n; i++)
	{
		RedlockSlot *s = &copy[i];
		Datum		values[14];
		bool		nulls[14] = {0};
		bool		held = s->state == REDLOCK_SLOT_HELD;

		values[0] = Int32GetDatum(s->pid);
		values[1] = ObjectIdGetDatum(s->dbid);
		values[2] = ObjectIdGetDatum(s->roleid);
		if (all_keys || has_privs_of_role(GetUserId(), s->roleid))
			values[3] = CStringGetTextDatum(s->rkey + s->keyoff);
		else
			nulls[3] = true;
		values[4] = CStringGetTextDatum(held ? "held" : "waiting");
		values[5] = CStringGetTextDatum(scope_text(s->scope));
		nulls[5] = !held;
		values[6] = Int64GetDatum(s->token);
		nulls[6] = !held;
		values[7] = TimestampTzGetDatum(s->since);
		values[8] = TimestampTzGetDatum(monotonic_to_wall(
			s->kept_seq == s->rearm_seq && s->kept_until_us > s->valid_until_us ?
			s->kept_until_us : s->valid_until_us));
		nulls[8] = !held;
		values[9] = BoolGetDatum(RedlockSharedSlotKept(s, now));
		values[10] = BoolGetDatum(s->lost);
		values[11] = Int64GetDatum((int64) s->renewals);
		nulls[12] = true;
		values[13] = CStringGetTextDatum(s->shared ? "shared" : "exclusive");
		/* a waiter's holder: one that holds the key in a conflicting mode */
		if (!held)
			for (j = 0; j < n; j++)
				if (copy[j].state == REDLOCK_SLOT_HELD &&
					(!s->shared || !copy[j].shared) &&
					copy[j].endpoint == s->endpoint &&
					copy[j].rkeylen == s->rkeylen &&
					memcmp(copy[j].rkey, s->rkey, s->rkeylen) == 0)
				{
					values[12] = Int32GetDatum(copy[j].pid);
					nulls[12] = false;
					break;
				}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
