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
 * first check: the holder may block on a row lock this backend holds much
 * later).
 *
 * What the check needs to know, and where it finds it:
 *	  - who holds a key: the owner value of a string lock is its random part,
 *		then "." and the holder's identity, "<system identifier in hex>.<pid>"
 *		(RedlockBackendIdent).  Other clients only compare values as a
 *		whole, so the wire format is unchanged; a shared key's readers are
 *		the owner values in its readers set.  A holder is counted when a
 *		majority of the masters name it;
 *	  - what a backend waits for, when it waits for Redis locks: every
 *		backend that runs a check publishes a record of its wait in a hash
 *		on each master, "<key prefix>\0redlock:waits", field its identity,
 *		value Redis's clock then the keys it waits for (all of a set taken
 *		together: it needs every one), their modes and when it started to
 *		wait.  A record not refreshed for RECORD_LIFE_MS is dropped by the
 *		next reader; a backend whose wait ends deletes its own;
 *	  - what a backend of this cluster waits for in PostgreSQL's lock
 *		manager: pg_blocking_pids().
 * The check walks the graph from this backend: a waiter's edges go to the
 * holders of each key it waits for (in a conflicting mode; a shared
 * request also waits for exclusive requests queued before it), and a
 * local backend's edges also go to the backends pg_blocking_pids() names.
 * A path back to this backend is a cycle.  It is confirmed by a second
 * walk a short, random while later (a record or holder seen in passing
 * must still be there), and then this backend, the one that ran the
 * check, ends its wait with 40P01, as PostgreSQL ends the backend whose
 * check found the cycle.  Its record goes first, so that another member
 * checking at the same moment finds the cycle broken (members in different
 * clusters may still, rarely, both end).
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
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/fmgrprotos.h"
#include "utils/wait_event.h"

#include "redlock.h"

#define CHECK_INTERVAL_MS	1000	/* checks after the first, at least */
#define RECORD_AFTER_MS		200		/* a wait is published this soon, at most */
#define RECORD_REFRESH_MS	2000	/* and its record refreshed this often */
#define RECORD_LIFE_MS		5000	/* a record not refreshed since is stale */
#define TEXT_CAP			(256 * 1024)	/* bytes of one master's answer */
#define MAX_NODES			64		/* the walk gives up beyond */
#define REGISTRY_SUFFIX		"\0redlock:waits"
#define REGISTRY_SUFFIX_LEN	14

/*
 * KEYS[1] the registry; ARGV[1] our identity, [2] our record ("": delete
 * it), [3] the life of a record (ms).  Writes (or deletes) our record, and
 * returns every live record but ours as "<len>:<identity><len>:<record>"
 * after one another, deleting the stale ones.  The hash lives a minute
 * past its last write.
 */
static RedisScript waits_script = {
	"deadlock records",
	"local t = redis.call('time')\n"
	"local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
	"if ARGV[2] == '' then\n"
	"  redis.call('hdel', KEYS[1], ARGV[1])\n"
	"  return ''\n"
	"end\n"
	"redis.call('hset', KEYS[1], ARGV[1], now .. ' ' .. ARGV[2])\n"
	"if redis.call('pttl', KEYS[1]) < 60000 then\n"
	"  redis.call('pexpire', KEYS[1], 60000)\n"
	"end\n"
	"local out = {}\n"
	"local all = redis.call('hgetall', KEYS[1])\n"
	"for i = 1, #all, 2 do\n"
	"  local v = all[i + 1]\n"
	"  local sp = string.find(v, ' ', 1, true)\n"
	"  local beat = sp and tonumber(string.sub(v, 1, sp - 1))\n"
	"  if beat == nil or now - beat > tonumber(ARGV[3]) then\n"
	"    redis.call('hdel', KEYS[1], all[i])\n"
	"  elseif all[i] ~= ARGV[1] then\n"
	"    v = string.sub(v, sp + 1)\n"
	"    out[#out + 1] = #all[i] .. ':' .. all[i] .. #v .. ':' .. v\n"
	"  end\n"
	"end\n"
	"return table.concat(out)\n",
	1, 13, ""
};

/*
 * KEYS[1] a lock key, [2] its queue (the readers set is named after it).
 * Returns "x<len>:<owner>" for a key held exclusively (a string), "s"
 * then "<len>:<owner>" per reader whose lease has not ended for a shared
 * one, and "" for a free key or one of another type (Redisson's hash).
 */
static RedisScript holders_script = {
	"deadlock holders",
	"local v = redis.pcall('get', KEYS[1])\n"
	"if type(v) ~= 'string' then\n"
	"  return ''\n"
	"end\n"
	"if v ~= '" REDLOCK_SHARED_MARKER_LUA "' then\n"
	"  return 'x' .. #v .. ':' .. v\n"
	"end\n"
	"local t = redis.call('time')\n"
	"local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
	"local readers = string.sub(KEYS[2], 1, -9) .. '" REDLOCK_READERS_SUFFIX_LUA "'\n"
	"local out = {'s'}\n"
	"for _, o in ipairs(redis.call('zrangebyscore', readers, '(' .. now, '+inf', 'LIMIT', 0, 1000)) do\n"
	"  out[#out + 1] = #o .. ':' .. o\n"
	"end\n"
	"return table.concat(out)\n",
	2, 14, ""
};

/* One key a backend waits for. */
typedef struct WaitFor
{
	char		mode;			/* 'x' or 's' */
	const char *rkey;
	int			rkeylen;
} WaitFor;

/* A backend in the graph. */
typedef struct WaitNode
{
	char	   *ident;
	bool		local;			/* of this cluster */
	int			pid;
	uint64		sysid;
	int64		since;			/* started waiting (Unix ms), from its record */
	int			nwaits;			/* -1: no record (waits for no Redis lock) */
	WaitFor    *waits;
	bool		visited;
	int			next;			/* on the path: the node it waits for */
	char	   *why;			/* on the path: what that wait is */
} WaitNode;

/* The holders of a key, as a majority of masters name them. */
typedef struct Holders
{
	const char *rkey;
	int			rkeylen;
	bool		shared;
	int			n;
	char	  **idents;
} Holders;

/* One check's state. */
typedef struct Check
{
	RedisServer **servers;
	int			nservers;
	const char *prefix;			/* our key prefix (the registry's name, and
								 * stripped from keys in messages) */
	int			prefixlen;
	int			self;
	int			nnodes;
	WaitNode		nodes[MAX_NODES];
	int			nholders;
	Holders    *holders;		/* cached for one walk */
	int			maxholders;
} Check;

static char backend_ident[48];

/* check_init: a check on the masters and under the key prefix of "lock". */
static void
check_init(Check *c, const RedlockLock *lock)
{
	c->servers = (RedisServer **) lock->servers;
	c->nservers = lock->nservers;
	c->prefix = lock->rkey;
	c->prefixlen = (int) (lock->key - lock->rkey);
}

/*
 * RedlockBackendIdent: this backend's identity, "<system identifier in
 * hex>.<pid>", as string owner values end with it.
 */
const char *
RedlockBackendIdent(void)
{
	if (backend_ident[0] == '\0' || atoi(strchr(backend_ident, '.') + 1) != MyProcPid)
		snprintf(backend_ident, sizeof(backend_ident), "%016llx.%d",
				 (unsigned long long) GetSystemIdentifier(), MyProcPid);
	return backend_ident;
}

/*
 * take_field: read "<len>:<bytes>" at *p (end: the text's end); returns
 * the bytes (not terminated) and their length in *len, or NULL if the
 * text is malformed.
 */
static const char *
take_field(const char **p, const char *end, int *len)
{
	const char *s = *p;
	long		n = 0;

	while (s < end && *s >= '0' && *s <= '9' && n <= TEXT_CAP)
		n = n * 10 + (*s++ - '0');
	if (s == *p || s >= end || *s != ':' || n > end - s - 1)
		return NULL;
	*len = (int) n;
	*p = s + 1 + n;
	return s + 1;
}

/* node_of: the node for an identity (len bytes), added if new; -1: full. */
static int
node_of(Check *c, const char *ident, int len)
{
	WaitNode	   *n;
	const char *dot;
	int			i;

	for (i = 0; i < c->nnodes; i++)
		if ((int) strlen(c->nodes[i].ident) == len &&
			memcmp(c->nodes[i].ident, ident, len) == 0)
			return i;
	if (c->nnodes == MAX_NODES)
		return -1;
	n = &c->nodes[c->nnodes];
	memset(n, 0, sizeof(*n));
	n->ident = pnstrdup(ident, len);
	n->nwaits = -1;
	n->next = -1;
	dot = strchr(n->ident, '.');
	if (dot != NULL)
	{
		n->sysid = strtou64(n->ident, NULL, 16);
		n->pid = atoi(dot + 1);
		n->local = n->sysid == GetSystemIdentifier();
	}
	return c->nnodes++;
}

/*
 * record_text: our record: when we started waiting (Unix ms), then per
 * key its mode and "<len>:<key>".
 */
static char *
record_text(RedlockLock **waiting, int n, int64 since)
{
	StringInfoData buf;
	int			k;

	initStringInfo(&buf);
	appendStringInfo(&buf, INT64_FORMAT " ", since);
	for (k = 0; k < n; k++)
	{
		appendStringInfo(&buf, "%c%d:", waiting[k]->shared ? 's' : 'x',
						 waiting[k]->rkeylen);
		appendBinaryStringInfo(&buf, waiting[k]->rkey, waiting[k]->rkeylen);
	}
	return buf.data;
}

/* parse_record: fill node n's waits from its record (len bytes at r). */
static void
parse_record(WaitNode *n, const char *r, int len)
{
	const char *end = r + len;
	const char *sp = memchr(r, ' ', len);
	int			max = 0;

	if (sp == NULL)
		return;
	n->since = strtoi64(r, NULL, 10);
	r = sp + 1;
	n->nwaits = 0;
	while (r < end && (*r == 'x' || *r == 's'))
	{
		char		mode = *r++;
		int			klen;
		const char *key = take_field(&r, end, &klen);

		if (key == NULL)
			break;
		if (n->nwaits == max)
		{
			max = Max(4, max * 2);
			n->waits = n->waits ? repalloc(n->waits, sizeof(WaitFor) * max) :
				palloc(sizeof(WaitFor) * max);
		}
		n->waits[n->nwaits].mode = mode;
		n->waits[n->nwaits].rkey = key;
		n->waits[n->nwaits].rkeylen = klen;
		n->nwaits++;
	}
}

/*
 * run_calls: one call per master of "script" with the given KEYS and
 * ARGV, each with room for a bulk string answer.  Failures are left in
 * the calls (a check works with what answered).
 */
static RedisCall *
run_calls(Check *c, RedisScript *script, const char **args, const size_t *lens,
		  int nargs, const char **keys, const size_t *keylens, int nkeys)
{
	RedisCall  *calls = palloc(sizeof(RedisCall) * c->nservers);
	RedisBatch	batch = {0};
	int			i;
	int			a;

	RedisScriptPrepare(script);
	for (i = 0; i < c->nservers; i++)
	{
		RedisCallInit(&calls[i], c->servers[i], script, i);
		for (a = 0; a < nkeys; a++)
			RedisCallArg(&calls[i], keys[a * c->nservers + i], keylens[a * c->nservers + i]);
		for (a = 0; a < nargs; a++)
			RedisCallArg(&calls[i], args[a], lens[a]);
		calls[i].text = palloc(TEXT_CAP);
		calls[i].textcap = TEXT_CAP;
	}
	batch.calls = calls;
	batch.ncalls = c->nservers;
	batch.timeout_ms = redlock_command_timeout;
	RedisRun(&batch);
	return calls;
}

/* answered: whether a call came back with a whole bulk string. */
#define answered(call) \
	((call)->state == REDIS_CALL_DONE && (call)->nints == 0 && \
	 (call)->textlen <= (call)->textcap)

/*
 * registry: publish (record not NULL) or delete our record on every
 * master; with "read", read the others' into nodes.
 */
static void
registry(Check *c, const char *record, bool read)
{
	const char *ident = RedlockBackendIdent();
	char		life[16];
	const char *args[3];
	size_t		lens[3];
	const char **keys = palloc(sizeof(char *) * c->nservers);
	size_t	   *keylens = palloc(sizeof(size_t) * c->nservers);
	RedisCall  *calls;
	int			i;

	snprintf(life, sizeof(life), "%d", RECORD_LIFE_MS);
	args[0] = ident;
	lens[0] = strlen(ident);
	args[1] = record ? record : "";
	lens[1] = strlen(args[1]);
	args[2] = life;
	lens[2] = strlen(life);
	/* one key anywhere: on a cluster, whichever node has its slot */
	for (i = 0; i < c->nservers; i++)
		keys[i] = RedlockCompanionKey(c->prefix, c->prefixlen, REGISTRY_SUFFIX,
									  REGISTRY_SUFFIX_LEN, false, &keylens[i]);
	calls = run_calls(c, &waits_script, args, lens, 3, keys, keylens, 1);
	if (!read)
		return;
	for (i = 0; i < c->nservers; i++)
	{
		const char *p;
		const char *end;

		if (!answered(&calls[i]))
			continue;
		p = calls[i].text;
		end = p + calls[i].textlen;
		while (p < end)
		{
			int			ilen;
			int			rlen;
			const char *id = take_field(&p, end, &ilen);
			const char *rec = id ? take_field(&p, end, &rlen) : NULL;
			int			n;

			if (rec == NULL)
				break;
			n = node_of(c, id, ilen);
			if (n >= 0 && c->nodes[n].nwaits < 0)
				parse_record(&c->nodes[n], rec, rlen);
		}
	}
}

/*
 * holders_of: who holds rkey, as a majority of the masters say (cached
 * for the walk).
 */
static Holders *
holders_of(Check *c, const char *rkey, int rkeylen)
{
	Holders    *h;
	const char **keys;
	size_t	   *keylens;
	RedisCall  *calls;
	char	  **seen = NULL;
	int		   *votes = NULL;
	int			nseen = 0;
	int			shared_votes = 0;
	int			quorum = RedlockQuorum(c->nservers);
	int			i;
	int			j;

	for (i = 0; i < c->nholders; i++)
		if (c->holders[i].rkeylen == rkeylen &&
			memcmp(c->holders[i].rkey, rkey, rkeylen) == 0)
			return &c->holders[i];

	keys = palloc(sizeof(char *) * 2 * c->nservers);
	keylens = palloc(sizeof(size_t) * 2 * c->nservers);
	for (i = 0; i < c->nservers; i++)
	{
		bool		cluster = c->servers[i]->kind == REDIS_KIND_CLUSTER;

		keys[i] = rkey;
		keylens[i] = rkeylen;
		if (cluster)
			RedisSlotTagsPrepare();
		keys[c->nservers + i] = RedlockCompanionKey(rkey, rkeylen, REDLOCK_WAITERS_SUFFIX,
													REDLOCK_WAITERS_SUFFIX_LEN, cluster,
													&keylens[c->nservers + i]);
	}
	calls = run_calls(c, &holders_script, NULL, NULL, 0, keys, keylens, 2);

	for (i = 0; i < c->nservers; i++)
	{
		const char *p = calls[i].text;
		const char *end = p + calls[i].textlen;

		if (!answered(&calls[i]) || p == end)
			continue;
		if (*p++ == 's')
			shared_votes++;
		while (p < end)
		{
			int			olen;
			const char *owner = take_field(&p, end, &olen);
			const char *dot = owner ? memchr(owner, '.', olen) : NULL;
			char	   *ident;

			if (owner == NULL)
				break;
			if (dot == NULL)
				continue;		/* another client's value: nobody we know */
			ident = pnstrdup(dot + 1, olen - (dot + 1 - owner));
			for (j = 0; j < nseen && strcmp(seen[j], ident) != 0; j++)
				;
			if (j == nseen)
			{
				seen = seen ? repalloc(seen, sizeof(char *) * (nseen + 1)) :
					palloc(sizeof(char *));
				votes = votes ? repalloc(votes, sizeof(int) * (nseen + 1)) :
					palloc(sizeof(int));
				seen[nseen] = ident;
				votes[nseen++] = 0;
			}
			votes[j]++;
		}
	}

	if (c->nholders == c->maxholders)
	{
		c->maxholders = Max(8, c->maxholders * 2);
		c->holders = c->holders ? repalloc(c->holders, sizeof(Holders) * c->maxholders) :
			palloc(sizeof(Holders) * c->maxholders);
	}
	h = &c->holders[c->nholders++];
	h->rkey = rkey;
	h->rkeylen = rkeylen;
	h->shared = shared_votes >= quorum;
	h->n = 0;
	h->idents = palloc(sizeof(char *) * Max(nseen, 1));
	for (j = 0; j < nseen; j++)
		if (votes[j] >= quorum)
			h->idents[h->n++] = seen[j];
	return h;
}

/* describe: a node for a message: "process N" (of another cluster: which). */
static char *
describe(const WaitNode *n)
{
	if (n->local)
		return psprintf("process %d", n->pid);
	return psprintf("process %d of the PostgreSQL system " UINT64_FORMAT,
					n->pid, n->sysid);
}

/* key_text: a key for a message, without our prefix. */
static char *
key_text(Check *c, const WaitFor *w)
{
	int			off = Min(c->prefixlen, w->rkeylen);

	return pnstrdup(w->rkey + off, w->rkeylen - off);
}

static bool walk(Check *c, int from, int depth);

/*
 * follow: the edge from node "from" to the node of identity "ident" (len
 * bytes), because of "why": true when it leads back to us.
 */
static bool
follow(Check *c, int from, const char *ident, int len, char *why, int depth)
{
	int			to = node_of(c, ident, len);

	if (to < 0 || to == from)
		return false;
	c->nodes[from].next = to;
	c->nodes[from].why = why;
	if (to == c->self)
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
	WaitNode	   *n = &c->nodes[from];
	int			w;
	int			i;

	CHECK_FOR_INTERRUPTS();
	if (depth >= MAX_NODES)
		return false;

	/* Redis lock waits: to the holders, and a reader to earlier writers */
	for (w = 0; w < Max(n->nwaits, 0); w++)
	{
		const WaitFor *wf = &c->nodes[from].waits[w];
		Holders    *h = holders_of(c, wf->rkey, wf->rkeylen);
		char	   *why = psprintf("waits for Redis lock \"%s\" (%s)", key_text(c, wf),
								   wf->mode == 's' ? "shared" : "exclusive");

		if (!(wf->mode == 's' && h->shared))
		{
			for (i = 0; i < h->n; i++)
				if (follow(c, from, h->idents[i], strlen(h->idents[i]), why, depth))
					return true;
		}
		else
		{
			for (i = 0; i < c->nnodes; i++)
			{
				WaitNode	   *o = &c->nodes[i];
				int			k;

				if (i == from || o->since >= c->nodes[from].since)
					continue;
				for (k = 0; k < Max(o->nwaits, 0); k++)
					if (o->waits[k].mode == 'x' && o->waits[k].rkeylen == wf->rkeylen &&
						memcmp(o->waits[k].rkey, wf->rkey, wf->rkeylen) == 0 &&
						follow(c, from, o->ident, strlen(o->ident),
							   psprintf("%s behind an earlier exclusive request", why), depth))
						return true;
			}
		}
	}

	/* PostgreSQL lock waits of a backend of this cluster */
	if (c->nodes[from].local && from != c->self)
	{
		ArrayType  *pids = DatumGetArrayTypeP(DirectFunctionCall1(pg_blocking_pids,
																  Int32GetDatum(c->nodes[from].pid)));
		Datum	   *elems;
		int			nelems;
		char		ident[48];

		deconstruct_array(pids, INT4OID, sizeof(int32), true, TYPALIGN_INT,
						  &elems, NULL, &nelems);
		for (i = 0; i < nelems; i++)
		{
			int			len = snprintf(ident, sizeof(ident), "%016llx.%d",
									   (unsigned long long) GetSystemIdentifier(),
									   DatumGetInt32(elems[i]));

			if (follow(c, from, ident, len, pstrdup("waits for a PostgreSQL lock"), depth))
				return true;
		}
	}
	return false;
}

/*
 * one_walk: publish our record, read the others', and look for a cycle
 * through us.  On finding one, fills "detail" with it.
 */
static bool
one_walk(Check *c, RedlockLock **waiting, int n, int64 since, StringInfo detail)
{
	const char *ident = RedlockBackendIdent();
	WaitNode	   *self;
	int			i;

	c->nnodes = 0;
	c->nholders = 0;
	c->self = node_of(c, ident, strlen(ident));
	self = &c->nodes[c->self];
	self->since = since;
	self->nwaits = n;
	self->waits = palloc(sizeof(WaitFor) * n);
	for (i = 0; i < n; i++)
	{
		self->waits[i].mode = waiting[i]->shared ? 's' : 'x';
		self->waits[i].rkey = waiting[i]->rkey;
		self->waits[i].rkeylen = waiting[i]->rkeylen;
	}
	self->visited = true;
	registry(c, record_text(waiting, n, since), true);
	if (!walk(c, c->self, 0))
		return false;

	resetStringInfo(detail);
	i = c->self;
	do
	{
		WaitNode	   *from = &c->nodes[i];
		char	   *who = describe(from);

		who[0] = (char) pg_toupper((unsigned char) who[0]);
		if (detail->len > 0)
			appendStringInfoChar(detail, '\n');
		appendStringInfo(detail, "%s %s; blocked by %s.", who, from->why,
						 describe(&c->nodes[from->next]));
		i = from->next;
	} while (i != c->self && i >= 0);
	return true;
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
 * Unix ms) on their masters.  Raises what RedisRun raises.
 */
void
RedlockDeadlockPublish(RedlockLock **waiting, int n, int64 since)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "redlock deadlock record",
											  ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	Check	   *c = palloc0(sizeof(Check));

	check_init(c, waiting[0]);
	registry(c, record_text(waiting, n, since), false);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}

/*
 * RedlockDeadlockCheck: whether this backend, waiting for "waiting" (n
 * locks asked for together, since "since" in Unix ms), is in a cycle of
 * waits.  Publishes its record too (the caller deletes it with
 * RedlockDeadlockForget when the wait ends).  A cycle found is confirmed
 * by a second walk a random 10 to 60 ms later; then the record is deleted
 * and true returned, with PostgreSQL's kind of DETAIL in "detail".
 * Raises what RedisRun and CHECK_FOR_INTERRUPTS raise.
 */
bool
RedlockDeadlockCheck(RedlockLock **waiting, int n, int64 since, StringInfo detail)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "redlock deadlock check",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	Check	   *c = palloc0(sizeof(Check));
	StringInfoData found;
	bool		cycle;

	check_init(c, waiting[0]);
	initStringInfo(&found);
	cycle = one_walk(c, waiting, n, since, &found);
	if (cycle)
	{
		long		pause = 10 + (long) pg_prng_uint64_range(&pg_global_prng_state, 0, 50);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 pause, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		cycle = one_walk(c, waiting, n, since, &found);
		if (cycle)
			registry(c, NULL, false);
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
 * "lock"'s key ended), best effort.  Raises what RedisRun raises.
 */
void
RedlockDeadlockForget(RedlockLock *lock)
{
	Check	   *c = palloc0(sizeof(Check));

	check_init(c, lock);
	registry(c, NULL, false);
	pfree(c);
}
