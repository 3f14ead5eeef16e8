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

#include "redlock.h"

#define CHECK_INTERVAL_MS	1000	/* checks after the first, at least */
#define RECORD_AFTER_MS		200		/* a wait is published this soon, at most */
#define RECORD_REFRESH_MS	2000	/* and its record refreshed this often */
#define RECORD_LIFE_MS		5000	/* a record not refreshed since is stale */
#define BATCH_MS			500		/* the longest wait for one batch */
#define REGISTRY_CAP		(1024 * 1024)	/* bytes of the records' answer */
#define KEY_CAP				(64 * 1024) /* bytes of a key's holders and queue */
#define MAX_NODES			64		/* backends one walk visits, at most */
#define MAX_KEYS			128		/* keys one walk reads, at most */
#define IDENT_LEN			48		/* room for an identity */
#define REGISTRY_SUFFIX		"\0redlock:waits"
#define REGISTRY_SUFFIX_LEN	14

/*
 * KEYS[1] the registry; ARGV[1] our identity, [2] our record ("": delete
 * it), [3] the life of a record (ms), [4] "1": answer the others' records.
 * Writes (or deletes) ours; with [4], returns every live record but ours
 * as "<len>:<identity><len>:<record>" one after the other, deleting the
 * stale ones.  The hash lives a minute past its last write.
 */
static RedisScript waits_script = {
	"deadlock records",
	"local t = redis.call('time')\n"
	"local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
	"if ARGV[2] == '' then\n"
	"  redis.call('hdel', KEYS[1], ARGV[1])\n"
	"else\n"
	"  redis.call('hset', KEYS[1], ARGV[1], now .. ' ' .. ARGV[2])\n"
	"  if redis.call('pttl', KEYS[1]) < 60000 then\n"
	"    redis.call('pexpire', KEYS[1], 60000)\n"
	"  end\n"
	"end\n"
	"if ARGV[4] ~= '1' then\n"
	"  return ''\n"
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
 * KEYS[1] a lock key, [2] its queue (the readers set and the queue's
 * deadlines are named after it).  Returns who holds it: "x" and the
 * identity in its owner value (held exclusively: a string), "s" and the
 * identity of each reader whose lease runs (a shared key), "-" (free, or
 * of another type: Redisson's hash); each identity as "<len>:<bytes>"
 * (what follows the owner value's first ".", at most 64 bytes; "" when it
 * has none); then "|" and the live members of its queue, in order, the
 * same way, each "S" (a shared request) or "X" then its wake channel.  At
 * most 200 readers and 200 waiters.
 */
static RedisScript holders_script = {
	"deadlock holders",
	"local function ident(o)\n"
	"  local d = string.find(o, '.', 1, true)\n"
	"  local i = d and string.sub(o, d + 1, d + 64) or ''\n"
	"  return #i .. ':' .. i\n"
	"end\n"
	"local t = redis.call('time')\n"
	"local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
	"local base = string.sub(KEYS[2], 1, -9)\n"
	"local out = {}\n"
	"local v = redis.pcall('get', KEYS[1])\n"
	"if type(v) ~= 'string' then\n"
	"  out[1] = '-'\n"
	"elseif v ~= '" REDLOCK_SHARED_MARKER_LUA "' then\n"
	"  out[1] = 'x' .. ident(v)\n"
	"else\n"
	"  out[1] = 's'\n"
	"  for _, o in ipairs(redis.call('zrangebyscore', base .. '" REDLOCK_READERS_SUFFIX_LUA "',\n"
	"                                '(' .. now, '+inf', 'LIMIT', 0, 200)) do\n"
	"    out[#out + 1] = ident(o)\n"
	"  end\n"
	"end\n"
	"out[#out + 1] = '|'\n"
	"local exp = base .. '" REDLOCK_WAITEXP_SUFFIX_LUA "'\n"
	"for _, m in ipairs(redis.call('zrange', KEYS[2], 0, 199)) do\n"
	"  if tonumber(redis.call('zscore', exp, m) or '0') > now then\n"
	"    if string.sub(m, -2) == '" REDLOCK_SHARED_MEMBER_LUA "' then\n"
	"      m = 'S' .. string.sub(m, 1, -3)\n"
	"    else\n"
	"      m = 'X' .. m\n"
	"    end\n"
	"    out[#out + 1] = #m .. ':' .. m\n"
	"  end\n"
	"end\n"
	"return table.concat(out)\n",
	2, 14, ""
};

/*
 * KEYS[1] the registry; ARGV[1] our identity, [2...] the other members of
 * a cycle that published a record.  When every one of those records is
 * still there, deletes ours and returns 1 (we are the cycle's victim);
 * else 0 (another member ended first).
 */
static RedisScript claim_script = {
	"deadlock claim",
	"for i = 2, #ARGV do\n"
	"  if redis.call('hexists', KEYS[1], ARGV[i]) == 0 then\n"
	"    return 0\n"
	"  end\n"
	"end\n"
	"redis.call('hdel', KEYS[1], ARGV[1])\n"
	"return 1\n",
	1, 15, ""
};

/* One key a backend waits for. */
typedef struct WaitFor
{
	char		mode;			/* 'x' or 's' */
	const char *rkey;
	int			rkeylen;
} WaitFor;

/* A published record of another backend's wait. */
typedef struct Record
{
	char	   *ident;
	int64		since;			/* started waiting (Unix ms) */
	char	   *channel;		/* its wake channel */
	int			nwaits;
	WaitFor    *waits;
} Record;

/* A backend the walk reached. */
typedef struct WaitNode
{
	char	   *ident;
	int			record;			/* index in records, -1: none */
	int			next;			/* on the path: the node it waits for */
	char	   *why;			/* on the path: what that wait is */
	bool		visited;
} WaitNode;

/* What the masters say about a key: holders and queue, per master. */
typedef struct KeyInfo
{
	const char *rkey;
	int			rkeylen;
	bool		shared;			/* a majority says it is shared */
	int			nholders;		/* named by a majority */
	char	  **holders;
	int		   *nqueue;			/* per master: live queue members, in order */
	char	 ***queue;			/* (NULL: that master did not answer) */
} KeyInfo;

/* One check's state. */
typedef struct Check
{
	RedisServer **servers;
	int			nservers;
	const char *prefix;			/* our key prefix (the registry's name, and
								 * stripped from keys in messages) */
	int			prefixlen;
	int64		deadline;		/* of the wait (monotonic us, 0: none) */
	char	   *own_channel;	/* ours, in the queues */
	WaitFor    *own_waits;
	int			own_nwaits;
	int64		own_since;
	int			nrecords;
	Record	   *records;
	int			nnodes;
	WaitNode	nodes[MAX_NODES];
	int			nkeys;
	KeyInfo		keys[MAX_KEYS];
} Check;

static char backend_ident[IDENT_LEN];
static bool warned_perm = false;	/* the registry was refused: said once */

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

	while (s < end && *s >= '0' && *s <= '9' && n <= KEY_CAP * 16)
		n = n * 10 + (*s++ - '0');
	if (s == *p || s >= end || *s != ':' || n > end - s - 1)
		return NULL;
	*len = (int) n;
	*p = s + 1 + n;
	return s + 1;
}

/*
 * record_text: our record: when we started waiting (Unix ms), our wake
 * channel as "<len>:<bytes>", then per key its mode and "<len>:<key>".
 */
static char *
record_text(RedlockLock **waiting, int n, int64 since)
{
	StringInfoData buf;
	int			k;

	initStringInfo(&buf);
	appendStringInfo(&buf, INT64_FORMAT " %zu:%s", since,
					 strlen(waiting[0]->channel), waiting[0]->channel);
	for (k = 0; k < n; k++)
	{
		appendStringInfo(&buf, "%c%d:", waiting[k]->shared ? 's' : 'x',
						 waiting[k]->rkeylen);
		appendBinaryStringInfo(&buf, waiting[k]->rkey, waiting[k]->rkeylen);
	}
	return buf.data;
}

/* parse_record: a record (len bytes at r) of "ident"; false if malformed. */
static bool
parse_record(Record *rec, const char *ident, int identlen, const char *r, int len)
{
	const char *end = r + len;
	const char *sp = memchr(r, ' ', len);
	char		num[24];
	int			clen;
	const char *ch;
	int			max = 0;

	if (sp == NULL || sp - r >= (int) sizeof(num))
		return false;
	memcpy(num, r, sp - r);
	num[sp - r] = '\0';
	r = sp + 1;
	ch = take_field(&r, end, &clen);
	if (ch == NULL)
		return false;
	memset(rec, 0, sizeof(*rec));
	rec->ident = pnstrdup(ident, identlen);
	rec->since = strtoi64(num, NULL, 10);
	rec->channel = pnstrdup(ch, clen);
	while (r < end && (*r == 'x' || *r == 's'))
	{
		char		mode = *r++;
		int			klen;
		const char *key = take_field(&r, end, &klen);

		if (key == NULL)
			break;
		if (rec->nwaits == max)
		{
			max = Max(4, max * 2);
			rec->waits = rec->waits ? repalloc(rec->waits, sizeof(WaitFor) * max) :
				palloc(sizeof(WaitFor) * max);
		}
		rec->waits[rec->nwaits].mode = mode;
		rec->waits[rec->nwaits].rkey = memcpy(palloc(klen + 1), key, klen);
		rec->waits[rec->nwaits].rkeylen = klen;
		rec->nwaits++;
	}
	return true;
}

/*
 * run_batch: run calls (built by the caller, each with room for a bulk
 * string answer where it wants one), BATCH_MS at most and never past the
 * wait's deadline.  Failures are left in the calls: a check works with
 * what answered.  (Every answer is waited for, also of a delete: one left
 * owed would put the requests that follow on its connection behind it,
 * and the lock calls do not wait for those.)
 */
static void
run_batch(Check *c, RedisCall *calls, int ncalls)
{
	RedisBatch	batch = {0};

	batch.calls = calls;
	batch.ncalls = ncalls;
	batch.timeout_ms = Min(redlock_command_timeout, BATCH_MS);
	batch.deadline = c->deadline;
	RedisRun(&batch);
}

/* answered: whether a call came back with a whole bulk string. */
#define answered(call) \
	((call)->state == REDIS_CALL_DONE && (call)->nints == 0 && \
	 (call)->textlen <= (call)->textcap)

/*
 * registry: publish (record not NULL) or delete our record on every
 * master; with "read" (and a record), read the others' into c->records
 * (the first copy of each found).
 */
static void
registry(Check *c, const char *record, bool read)
{
	const char *ident = RedlockBackendIdent();
	char		life[16];
	RedisCall  *calls = palloc(sizeof(RedisCall) * c->nservers);
	size_t		keylen;
	char	   *key;
	int			i;

	RedisScriptPrepare(&waits_script);
	snprintf(life, sizeof(life), "%d", RECORD_LIFE_MS);
	/* one key anywhere: on a cluster, whichever node has its slot */
	key = RedlockCompanionKey(c->prefix, c->prefixlen, REGISTRY_SUFFIX,
							  REGISTRY_SUFFIX_LEN, false, &keylen);
	read = read && record != NULL;
	for (i = 0; i < c->nservers; i++)
	{
		RedisCallInit(&calls[i], c->servers[i], &waits_script, i);
		RedisCallArg(&calls[i], key, keylen);
		RedisCallArg(&calls[i], ident, strlen(ident));
		RedisCallArg(&calls[i], record ? record : "", record ? strlen(record) : 0);
		RedisCallArg(&calls[i], life, strlen(life));
		RedisCallArg(&calls[i], read ? "1" : "0", 1);
		if (read)
		{
			calls[i].text = palloc(REGISTRY_CAP);
			calls[i].textcap = REGISTRY_CAP;
		}
	}
	run_batch(c, calls, c->nservers);
	for (i = 0; i < c->nservers && record != NULL && !warned_perm; i++)
		if (calls[i].state == REDIS_CALL_FAILED && calls[i].failure == REDIS_FAIL_PERM)
		{
			warned_perm = true;
			ereport(WARNING,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("deadlock detection cannot publish this backend's waits on Redis server \"%s\"",
							calls[i].server->addr),
					 errdetail("%s", calls[i].error),
					 errhint("Let the Redis ACL user run HSET, HGETALL, HDEL, HEXISTS and ZSCORE inside scripts, on the keys that start with redlock.key_prefix.")));
		}
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
			int			r;

			if (rec == NULL)
				break;
			for (r = 0; r < c->nrecords; r++)
				if ((int) strlen(c->records[r].ident) == ilen &&
					memcmp(c->records[r].ident, id, ilen) == 0)
					break;
			if (r < c->nrecords)
				continue;
			c->records = c->records ?
				repalloc(c->records, sizeof(Record) * (c->nrecords + 1)) :
				palloc(sizeof(Record));
			if (parse_record(&c->records[c->nrecords], id, ilen, rec, rlen))
				c->nrecords++;
		}
		pfree(calls[i].text);
	}
}

/*
 * record_of: the index of the record whose identity (by_channel: wake
 * channel) is "name", or -1.
 */
static int
record_of(Check *c, const char *name, bool by_channel)
{
	int			r;

	for (r = 0; r < c->nrecords; r++)
		if (strcmp(by_channel ? c->records[r].channel : c->records[r].ident, name) == 0)
			return r;
	return -1;
}

/*
 * parse_idents: "<len>:<bytes>"... at *p up to "|" or the end, into a
 * palloc'd array (deduplicated: one vote per master; empty ones and ones
 * of maxlen bytes or more left out); their number to *n.
 */
static char **
parse_idents(const char **p, const char *end, int maxlen, int *n)
{
	char	  **out = palloc(sizeof(char *) * 4);
	int			max = 4;

	*n = 0;
	while (*p < end && **p != '|')
	{
		int			len;
		const char *id = take_field(p, end, &len);
		int			j;

		if (id == NULL)
		{
			*p = end;
			break;
		}
		for (j = 0; j < *n; j++)
			if ((int) strlen(out[j]) == len && memcmp(out[j], id, len) == 0)
				break;
		if (j < *n || len == 0 || len >= maxlen)
			continue;
		if (*n == max)
		{
			max *= 2;
			out = repalloc(out, sizeof(char *) * max);
		}
		out[(*n)++] = pnstrdup(id, len);
	}
	return out;
}

/*
 * read_keys: fill in the KeyInfo of each of "waits" (n) not read yet, in
 * one batch.  Keys beyond MAX_KEYS stay unread (key_info returns NULL).
 */
static void
read_keys(Check *c, const WaitFor *waits, int n)
{
	int			first = c->nkeys;
	int			quorum = RedlockQuorum(c->nservers);
	RedisCall  *calls;
	int			ncalls = 0;
	int			w;
	int			k;
	int			i;

	for (w = 0; w < n && c->nkeys < MAX_KEYS; w++)
	{
		for (k = 0; k < c->nkeys; k++)
			if (c->keys[k].rkeylen == waits[w].rkeylen &&
				memcmp(c->keys[k].rkey, waits[w].rkey, waits[w].rkeylen) == 0)
				break;
		if (k == c->nkeys)
		{
			memset(&c->keys[k], 0, sizeof(KeyInfo));
			c->keys[k].rkey = waits[w].rkey;
			c->keys[k].rkeylen = waits[w].rkeylen;
			c->nkeys++;
		}
	}
	if (c->nkeys == first)
		return;

	RedisScriptPrepare(&holders_script);
	calls = palloc(sizeof(RedisCall) * (c->nkeys - first) * c->nservers);
	for (k = first; k < c->nkeys; k++)
		for (i = 0; i < c->nservers; i++)
		{
			bool		cluster = c->servers[i]->kind == REDIS_KIND_CLUSTER;
			RedisCall  *call = &calls[ncalls++];
			size_t		qlen;
			char	   *queue;

			if (cluster)
				RedisSlotTagsPrepare();
			queue = RedlockCompanionKey(c->keys[k].rkey, c->keys[k].rkeylen,
										REDLOCK_WAITERS_SUFFIX,
										REDLOCK_WAITERS_SUFFIX_LEN, cluster, &qlen);
			RedisCallInit(call, c->servers[i], &holders_script, k);
			RedisCallArg(call, c->keys[k].rkey, c->keys[k].rkeylen);
			RedisCallArg(call, queue, qlen);
			call->text = palloc(KEY_CAP);
			call->textcap = KEY_CAP;
		}
	run_batch(c, calls, ncalls);

	for (k = first; k < c->nkeys; k++)
	{
		KeyInfo    *ki = &c->keys[k];
		char	  **seen = NULL;
		int		   *votes = NULL;
		int			nseen = 0;
		int			shared_votes = 0;
		int			j;

		ki->nqueue = palloc0(sizeof(int) * c->nservers);
		ki->queue = palloc0(sizeof(char **) * c->nservers);
		for (i = 0; i < c->nservers; i++)
		{
			RedisCall  *call = &calls[(k - first) * c->nservers + i];
			const char *p = call->text;
			const char *end = p + call->textlen;
			char	  **ids;
			int			nids;
			int			s;

			if (!answered(call) || p == end)
				continue;
			if (*p++ == 's')
				shared_votes++;
			ids = parse_idents(&p, end, IDENT_LEN, &nids);
			for (j = 0; j < nids; j++)
			{
				for (s = 0; s < nseen && strcmp(seen[s], ids[j]) != 0; s++)
					;
				if (s == nseen)
				{
					seen = seen ? repalloc(seen, sizeof(char *) * (nseen + 1)) :
						palloc(sizeof(char *));
					votes = votes ? repalloc(votes, sizeof(int) * (nseen + 1)) :
						palloc(sizeof(int));
					seen[nseen] = ids[j];
					votes[nseen++] = 0;
				}
				votes[s]++;
			}
			if (p < end && *p == '|')
			{
				p++;
				ki->queue[i] = parse_idents(&p, end, REDIS_CHANNEL_LEN + 1, &ki->nqueue[i]);
			}
			pfree(call->text);
		}
		ki->shared = shared_votes >= quorum;
		ki->holders = palloc(sizeof(char *) * Max(nseen, 1));
		for (j = 0; j < nseen; j++)
			if (votes[j] >= quorum)
				ki->holders[ki->nholders++] = seen[j];
	}
	pfree(calls);
}

/* key_info: what was read of a key, or NULL (not read: too many keys). */
static KeyInfo *
key_info(Check *c, const WaitFor *w)
{
	int			k;

	for (k = 0; k < c->nkeys; k++)
		if (c->keys[k].rkeylen == w->rkeylen &&
			memcmp(c->keys[k].rkey, w->rkey, w->rkeylen) == 0 &&
			c->keys[k].nqueue != NULL)
			return &c->keys[k];
	return NULL;
}

/*
 * queue_position: where "member" stands in the key's queue on master i,
 * or -1.
 */
static int
queue_position(const KeyInfo *ki, int i, const char *member)
{
	int			j;

	for (j = 0; ki->queue[i] != NULL && j < ki->nqueue[i]; j++)
		if (strcmp(ki->queue[i][j], member) == 0)
			return j;
	return -1;
}

/* queued: whether a majority of the masters have member in the queue. */
static bool
queued(Check *c, const KeyInfo *ki, const char *member)
{
	int			n = 0;
	int			i;

	for (i = 0; i < c->nservers; i++)
		if (queue_position(ki, i, member) >= 0)
			n++;
	return n >= RedlockQuorum(c->nservers);
}

/* describe: a node for a message: "process N" (of another cluster: which). */
static char *
describe(const WaitNode *n)
{
	uint64		sysid = strtou64(n->ident, NULL, 16);
	const char *dot = strchr(n->ident, '.');
	int			pid = dot ? (int) strtol(dot + 1, NULL, 16) : 0;

	if (sysid == GetSystemIdentifier())
		return psprintf("process %d", pid);
	return psprintf("process %d of the PostgreSQL system " UINT64_FORMAT, pid, sysid);
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
	n->record = record_of(c, ident, false);
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
		read_keys(c, waits, nwaits);
	for (w = 0; w < nwaits; w++)
	{
		const WaitFor *wf = &waits[w];
		KeyInfo    *ki = key_info(c, wf);
		char	   *member;
		char	   *why;

		if (ki == NULL)
			continue;
		member = psprintf("%c%s", wf->mode == 's' ? 'S' : 'X', channel);
		/* another's record counts while it is queued for the key */
		if (from != 0 && !queued(c, ki, member))
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
				int			pos = queue_position(ki, i, member);
				int			j;

				if (pos < 0)
					continue;
				for (j = 0; j < pos; j++)
				{
					const char *m = ki->queue[i][j];
					int			r;

					if (m[0] != 'X')
						continue;
					r = record_of(c, m + 1, true);
					if (r >= 0 && queued(c, ki, m) &&
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
	pgstat_clear_snapshot();	/* backends' start times as they are now */
	registry(c, record_text(waiting, n, c->own_since), true);
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

/*
 * claim: whether this backend is the victim of the cycle found: a
 * majority of the masters still have every other member's record (none
 * ended first) and deleted ours.
 */
static bool
claim(Check *c, const char **others, int nothers)
{
	const char *ident = RedlockBackendIdent();
	RedisCall  *calls = palloc(sizeof(RedisCall) * c->nservers);
	size_t		keylen;
	char	   *key;
	int			granted = 0;
	int			i;
	int			j;

	RedisScriptPrepare(&claim_script);
	key = RedlockCompanionKey(c->prefix, c->prefixlen, REGISTRY_SUFFIX,
							  REGISTRY_SUFFIX_LEN, false, &keylen);
	for (i = 0; i < c->nservers; i++)
	{
		RedisCallInit(&calls[i], c->servers[i], &claim_script, i);
		RedisCallArg(&calls[i], key, keylen);
		RedisCallArg(&calls[i], ident, strlen(ident));
		for (j = 0; j < nothers; j++)
			RedisCallArg(&calls[i], others[j], strlen(others[j]));
	}
	run_batch(c, calls, c->nservers);
	for (i = 0; i < c->nservers; i++)
		if (calls[i].state == REDIS_CALL_DONE && calls[i].nints == 1 &&
			calls[i].ints[0] == 1)
			granted++;
	return granted >= RedlockQuorum(c->nservers);
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
	registry(c, record_text(waiting, n, since), false);
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
	const char *others[REDIS_CALL_MAX_ARGS - 2];
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
			claim(c, others, nothers);
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
	registry(c, NULL, false);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}
