/*-------------------------------------------------------------------------
 *
 * deadlock.c
 *	  Deadlock detection for backends that wait for Redis locks: cycles of
 *	  Redis lock waits, within a cluster or across PostgreSQL clusters that
 *	  share the masters, and cycles that mix a Redis lock wait with a
 *	  PostgreSQL lock wait (row, table, advisory) in one cluster.
 *
 * PostgreSQL's own detector sees only its lock manager's waits.  A backend
 * waiting for a Redis lock runs this check itself, as PostgreSQL's waiters
 * do: once it has waited deadlock_timeout, and again every
 * CHECK_INTERVAL_MS while it keeps waiting (a cycle can close after the
 * first check: the holder may block on a row this backend holds later).
 *
 * Identity.  A backend is "<system identifier>.<pid>.<start time>", in hex
 * (RedlockBackendIdent): unique across clusters, across a primary and its
 * standbys (which share the system identifier) and across pid reuse.  A
 * string lock's owner value is its random part, "." and that identity;
 * other clients only ever compare values as a whole, so the wire format
 * is unchanged.
 *
 * What a check reads, and how it trusts it:
 *	  - who holds a key: the identities in the owner values, of the string,
 *		or of a shared key's readers whose lease runs; counted when a
 *		majority of the masters name them (once per master);
 *	  - who waits for a key, in what order: its queue (algo.c), members
 *		whose entry has not expired; a waiter counts as queued when a
 *		majority of the masters have it;
 *	  - what a backend waits for: every backend whose wait lasts
 *		RECORD_AFTER_MS (or deadlock_timeout, when shorter) publishes a
 *		record in a hash on each master, "<key prefix>\0redlock:waits",
 *		field its identity, value Redis's clock, when it started to wait,
 *		its wake channel (its name in the queues) and the keys it waits for
 *		(all of a set taken together: it needs every one) with their modes;
 *		refreshed every RECORD_REFRESH_MS, dropped by readers when older
 *		than RECORD_LIFE_MS, and deleted by its backend when the wait ends.
 *		A record's wait counts only while its backend is queued for that
 *		key: a record left behind (a cancelled wait, a crash) says nothing;
 *	  - what a backend of this cluster waits for in PostgreSQL's lock
 *		manager: pg_blocking_pids(), asked only of backends whose wait event
 *		is a lock.
 * The walk goes from this backend to the holders of each key it waits for
 * (in a conflicting mode), a shared request also to the exclusive
 * requests queued ahead of it, and on from each of those.  A path back to
 * this backend is a cycle.  It is confirmed by a second walk a short,
 * random while later, and then claimed: on each master, one script checks
 * that every other member that published a record still has it, and
 * deletes ours.  The backend whose claim a majority grants ends its wait
 * with 40P01 (as PostgreSQL ends the backend whose check found the cycle);
 * a member that checks at the same moment finds a record gone and waits
 * on, so one cycle costs one victim.
 *
 * Bounds: a walk reads at most MAX_KEYS keys and MAX_NODES backends, each
 * batch waits BATCH_MS at most (a frozen master does not stall the wait)
 * and never past the wait's own deadline, and answers are capped.
 *
 * Not seen: holders that are not this extension (node-redlock, redis-py,
 * Redisson's own clients, and locks taken with redlock.lock_format =
 * redisson, whose owners carry no identity), lock waits inside another
 * cluster's lock manager, and waiters under another key prefix.
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/array.h"
#include "utils/backend_status.h"
#include "utils/fmgrprotos.h"
#include "utils/wait_event.h"

#include "deadlock.h"

#define CHECK_INTERVAL_MS	1000	/* checks after the first, at least */
#define RECORD_AFTER_MS		200		/* a wait is published this soon, at most */
#define RECORD_REFRESH_MS	2000	/* and its record refreshed this often */

static char backend_ident[IDENT_LEN];

/* format_ident: an identity from its parts. */
static void
format_ident(char *out, uint64 sysid, int pid, TimestampTz started)
{
	snprintf(out, IDENT_LEN, "%llx.%x.%llx", (unsigned long long) sysid, pid,
			 (unsigned long long) started);
}

/*
 * RedlockBackendIdent: this backend's identity, "<system identifier>.<pid>.
 * <start time>" in hex, as string owner values end with it.
 */
const char *
RedlockBackendIdent(void)
{
	if (backend_ident[0] == '\0')
		format_ident(backend_ident, GetSystemIdentifier(), MyProcPid,
					 MyStartTimestamp);
	return backend_ident;
}

/*
 * local_ident: the identity of this cluster's backend "pid", now, into out
 * (IDENT_LEN bytes); false when there is none.  Reads the activity
 * snapshot (the caller clears it once per walk).
 */
static bool
local_ident(int pid, char *out)
{
	int			n = pgstat_fetch_stat_numbackends();
	int			i;

	for (i = 1; i <= n; i++)
	{
		LocalPgBackendStatus *l = pgstat_fetch_stat_local_beentry(i);

		if (l != NULL && l->backendStatus.st_procpid == pid)
		{
			format_ident(out, GetSystemIdentifier(), pid,
						 l->backendStatus.st_proc_start_timestamp);
			return true;
		}
	}
	return false;
}

/*
 * local_pid: the pid of the backend of this cluster that an identity
 * names, if it is alive (the same pid and start time); else 0.
 */
static int
local_pid(const char *ident)
{
	char		now[IDENT_LEN];
	const char *dot = strchr(ident, '.');
	int			pid;

	if (dot == NULL || strtou64(ident, NULL, 16) != GetSystemIdentifier())
		return 0;
	pid = (int) strtol(dot + 1, NULL, 16);
	if (pid <= 0 || !local_ident(pid, now) || strcmp(now, ident) != 0)
		return 0;
	return pid;
}

/* describe: a node for a message: "process N" (of another cluster: which). */
static char *
describe(const WaitNode *n)
{
	uint64		sysid = strtou64(n->ident, NULL, 16);
	const char *dot = strchr(n->ident, '.');
	int			pid = dot ? (int) strtol(dot + 1, NULL, 16) : 0;

	if (sysid == GetSystemIdentifier() && local_pid(n->ident) == pid)
		return psprintf("process %d", pid);
	return psprintf("process %d of the PostgreSQL system " UINT64_FORMAT "%s", pid, sysid,
					sysid == GetSystemIdentifier() ? " (not this server)" : "");
}

/*
 * key_text: a key for a message, without our prefix; one that is not
 * valid in the database's encoding (another cluster's) in hex.
 */
static char *
key_text(Check *c, const WaitFor *w)
{
	int			off = Min(c->prefixlen, w->rkeylen);
	const char *k = w->rkey + off;
	int			len = w->rkeylen - off;
	StringInfoData hex;
	int			i;

	if (memchr(k, '\0', len) == NULL && pg_verifymbstr(k, len, true))
		return pnstrdup(k, len);
	initStringInfo(&hex);
	appendStringInfoString(&hex, "\\x");
	for (i = 0; i < len; i++)
		appendStringInfo(&hex, "%02x", (unsigned char) k[i]);
	return hex.data;
}

/* node_of: the node of an identity, added if new; -1 when the walk is full. */
static int
node_of(Check *c, const char *ident)
{
	WaitNode   *n;
	int			i;

	for (i = 0; i < c->nnodes; i++)
		if (strcmp(c->nodes[i].ident, ident) == 0)
			return i;
	if (c->nnodes == MAX_NODES)
		return -1;
	n = &c->nodes[c->nnodes];
	memset(n, 0, sizeof(*n));
	n->ident = pstrdup(ident);
	n->record = WaitsRecordOf(c, ident, false);
	n->next = -1;
	return c->nnodes++;
}

static bool walk(Check *c, int from, int depth);

/*
 * follow: the edge from node "from" to the backend "ident", because of
 * "why": true when it leads back to us (node 0).
 */
static bool
follow(Check *c, int from, const char *ident, char *why, int depth)
{
	int			to = node_of(c, ident);

	if (to < 0 || to == from)
		return false;
	c->nodes[from].next = to;
	c->nodes[from].why = why;
	if (to == 0)
		return true;
	if (c->nodes[to].visited)
		return false;
	c->nodes[to].visited = true;
	return walk(c, to, depth + 1);
}

/*
 * walk: depth-first from node "from": whether one of its waits leads back
 * to us.  The path is left in the nodes' next and why.
 */
static bool
walk(Check *c, int from, int depth)
{
	const Record *rec = c->nodes[from].record >= 0 ?
		&c->records[c->nodes[from].record] : NULL;
	const WaitFor *waits = from == 0 ? c->own_waits : rec ? rec->waits : NULL;
	int			nwaits = from == 0 ? c->own_nwaits : rec ? rec->nwaits : 0;
	const char *channel = from == 0 ? c->own_channel : rec ? rec->channel : NULL;
	int			w;
	int			i;
	int			pid;

	CHECK_FOR_INTERRUPTS();
	if (depth >= MAX_NODES)
		return false;

	/* Redis lock waits: to the holders, and a reader to writers ahead */
	if (nwaits > 0)
		WaitsReadKeys(c, waits, nwaits);
	for (w = 0; w < nwaits; w++)
	{
		const WaitFor *wf = &waits[w];
		KeyInfo    *ki = WaitsKeyInfo(c, wf);
		char	   *member;
		char	   *why;

		if (ki == NULL)
			continue;
		member = psprintf("%c%s", wf->mode == 's' ? 'S' : 'X', channel);
		/* another's record counts while it is queued for the key */
		if (from != 0 && !WaitsQueued(c, ki, member))
			continue;
		why = psprintf("waits for Redis lock \"%s\" (%s)", key_text(c, wf),
					   wf->mode == 's' ? "shared" : "exclusive");
		if (!(wf->mode == 's' && ki->shared))
		{
			for (i = 0; i < ki->nholders; i++)
				if (follow(c, from, ki->holders[i], why, depth))
					return true;
		}
		if (wf->mode == 's')
		{
			/* exclusive requests ahead of it, on the first master that has it */
			for (i = 0; i < c->nservers; i++)
			{
				int			pos = WaitsQueuePosition(ki, i, member);
				int			j;

				if (pos < 0)
					continue;
				for (j = 0; j < pos; j++)
				{
					const char *m = ki->queue[i][j];
					int			r;

					if (m[0] != 'X')
						continue;
					r = WaitsRecordOf(c, m + 1, true);
					if (r >= 0 && WaitsQueued(c, ki, m) &&
						follow(c, from, c->records[r].ident,
							   psprintf("%s behind an earlier exclusive request", why),
							   depth))
						return true;
				}
				break;
			}
		}
	}

	/* PostgreSQL lock waits of a backend of this cluster */
	pid = from == 0 ? 0 : local_pid(c->nodes[from].ident);
	if (pid != 0)
	{
		PGPROC	   *proc = BackendPidGetProc(pid);
		ArrayType  *pids;
		Datum	   *elems;
		int			nelems;
		char		ident[IDENT_LEN];

		if (proc == NULL || (proc->wait_event_info & 0xFF000000) != PG_WAIT_LOCK)
			return false;
		pids = DatumGetArrayTypeP(DirectFunctionCall1(pg_blocking_pids,
													  Int32GetDatum(pid)));
		deconstruct_array(pids, INT4OID, sizeof(int32), true, TYPALIGN_INT,
						  &elems, NULL, &nelems);
		for (i = 0; i < nelems; i++)
			if (local_ident(DatumGetInt32(elems[i]), ident) &&
				follow(c, from, ident, pstrdup("waits for a PostgreSQL lock"), depth))
				return true;
	}
	return false;
}

/*
 * one_walk: refresh our record, read the others', and look for a cycle
 * through us.  On finding one, fills "detail" with it and "others" with
 * the other members that published a record (as many as fit: n at most).
 */
static bool
one_walk(Check *c, RedlockLock **waiting, int n, StringInfo detail,
		 const char **others, int *nothers, int maxothers)
{
	int			i;

	c->nnodes = 0;
	c->nkeys = 0;
	c->nrecords = 0;
	pgstat_clear_backend_activity_snapshot();	/* start times as they are now */
	WaitsRegistry(c, WaitsRecordText(waiting, n, c->own_since), true);
	(void) node_of(c, RedlockBackendIdent());
	c->nodes[0].visited = true;
	if (!walk(c, 0, 0))
		return false;

	resetStringInfo(detail);
	*nothers = 0;
	i = 0;
	do
	{
		WaitNode   *from = &c->nodes[i];
		char	   *who = describe(from);

		who[0] = (char) pg_toupper((unsigned char) who[0]);
		if (detail->len > 0)
			appendStringInfoChar(detail, '\n');
		appendStringInfo(detail, "%s %s; blocked by %s.", who, from->why,
						 describe(&c->nodes[from->next]));
		if (i != 0 && from->record >= 0 && *nothers < maxothers)
			others[(*nothers)++] = from->ident;
		i = from->next;
	} while (i != 0 && i >= 0);
	return true;
}

/* check_init: a check on the masters and under the key prefix of "lock". */
static void
check_init(Check *c, const RedlockLock *lock, int64 deadline)
{
	c->servers = (RedisServer **) lock->servers;
	c->nservers = lock->nservers;
	c->prefix = lock->rkey;
	c->prefixlen = (int) (lock->key - lock->rkey);
	c->deadline = deadline;
}

/*
 * RedlockDeadlockDue: when a wait that started at "start" (monotonic us)
 * next checks for a deadlock, given its last check (0: none yet), and
 * when it next publishes its record (*publish), given when it last did (0:
 * never).  Checks come after deadlock_timeout, then every
 * CHECK_INTERVAL_MS at least.  A wait is published sooner, after
 * RECORD_AFTER_MS (or deadlock_timeout, when shorter), and kept fresh:
 * others' checks see it whatever its own deadlock_timeout, as
 * PostgreSQL's detector sees every lock wait, while waits shorter than
 * that (most hand-offs of a hot key) cost nothing.
 */
int64
RedlockDeadlockDue(int64 start, int64 last, int64 published, int64 *publish)
{
	if (published == 0)
		*publish = start + (int64) Min(DeadlockTimeout, RECORD_AFTER_MS) * 1000;
	else
		*publish = published + (int64) RECORD_REFRESH_MS * 1000;
	if (last == 0)
		return start + (int64) DeadlockTimeout * 1000;
	return last + (int64) Max(DeadlockTimeout, CHECK_INTERVAL_MS) * 1000;
}

/*
 * RedlockDeadlockPublish: publish (or refresh) this backend's record of
 * its wait for "waiting" (n locks asked for together, since "since" in
 * Unix ms) on their masters, until "deadline" at most.  Raises what
 * RedisRun raises.
 */
void
RedlockDeadlockPublish(RedlockLock **waiting, int n, int64 since, int64 deadline)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "redlock deadlock record",
											  ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	Check	   *c = palloc0(sizeof(Check));

	check_init(c, waiting[0], deadline);
	WaitsRegistry(c, WaitsRecordText(waiting, n, since), false);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}

/*
 * RedlockDeadlockCheck: whether this backend, waiting for "waiting" (n
 * locks asked for together, since "since" in Unix ms; until "deadline"),
 * is the victim of a cycle of waits.  Refreshes its record too (the
 * caller deletes it with RedlockDeadlockForget when the wait ends).  A
 * cycle found is confirmed by a second walk a random 10 to 60 ms later,
 * then claimed (see the file header); true when the claim is granted (our
 * record is gone then), with PostgreSQL's kind of DETAIL in "detail".
 * Raises what RedisRun and CHECK_FOR_INTERRUPTS raise.
 */
bool
RedlockDeadlockCheck(RedlockLock **waiting, int n, int64 since, int64 deadline,
					 StringInfo detail)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "redlock deadlock check",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	Check	   *c = palloc0(sizeof(Check));
	const char *others[MAX_NODES];
	int			nothers = 0;
	StringInfoData found;
	bool		cycle;
	int			k;

	check_init(c, waiting[0], deadline);
	c->own_channel = waiting[0]->channel;
	c->own_since = since;
	c->own_nwaits = n;
	c->own_waits = palloc(sizeof(WaitFor) * n);
	for (k = 0; k < n; k++)
	{
		c->own_waits[k].mode = waiting[k]->shared ? 's' : 'x';
		c->own_waits[k].rkey = waiting[k]->rkey;
		c->own_waits[k].rkeylen = waiting[k]->rkeylen;
	}
	initStringInfo(&found);
	cycle = one_walk(c, waiting, n, &found, others, &nothers, lengthof(others));
	if (cycle)
	{
		long		pause = 10 + (long) pg_prng_uint64_range(&pg_global_prng_state, 0, 50);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 pause, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		cycle = one_walk(c, waiting, n, &found, others, &nothers, lengthof(others)) &&
			WaitsClaim(c, others, nothers);
	}
	MemoryContextSwitchTo(old);
	if (cycle)
		appendBinaryStringInfo(detail, found.data, found.len);
	MemoryContextDelete(cxt);
	RedlockCount(REDLOCK_DEADLOCK_CHECKS, 1);
	return cycle;
}

/*
 * RedlockDeadlockForget: delete this backend's record (its wait for
 * "lock"'s key ended), BATCH_MS at most.  Raises what RedisRun raises.
 */
void
RedlockDeadlockForget(RedlockLock *lock)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "redlock deadlock record",
											  ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	Check	   *c = palloc0(sizeof(Check));

	check_init(c, lock, 0);
	WaitsRegistry(c, NULL, false);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}
