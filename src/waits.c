/*-------------------------------------------------------------------------
 *
 * waits.c
 *	  What the masters say about waits, for the deadlock check
 *	  (deadlock.c, which describes the design): the records of waiting
 *	  backends, who holds a key and who is queued for it, and the claim of
 *	  a cycle's victim; the scripts that read and write them, and the
 *	  parsing of their answers, within bounds (a hostile client may write
 *	  any of these keys).
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "deadlock.h"

/*
 * KEYS[1] the registry; ARGV[1] our identity, [2] our record ("": delete
 * it), [3] the life of a record (ms), [4] "1": answer the others' records,
 * in [5] bytes at most.  Writes (or deletes) ours; with [4], returns every
 * live record but ours as "<len>:<identity><len>:<beat> <record>" one
 * after the other (records over 16 kB, none of ours, are left out),
 * deleting the stale ones; else 0.  The hash lives a minute past its last
 * write.
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
	"  return 0\n"
	"end\n"
	"local out = {}\n"
	"local size = 0\n"
	"local all = redis.call('hgetall', KEYS[1])\n"
	"for i = 1, #all, 2 do\n"
	"  local v = all[i + 1]\n"
	"  local sp = string.find(v, ' ', 1, true)\n"
	"  local beat = sp and tonumber(string.sub(v, 1, sp - 1))\n"
	"  if beat == nil or now - beat > tonumber(ARGV[3]) then\n"
	"    redis.call('hdel', KEYS[1], all[i])\n"
	"  elseif all[i] ~= ARGV[1] and #v <= 16384 and #all[i] <= 64 then\n"
	"    local r = #all[i] .. ':' .. all[i] .. #v .. ':' .. v\n"
	"    size = size + #r\n"
	"    if size > tonumber(ARGV[5]) then\n"
	"      break\n"
	"    end\n"
	"    out[#out + 1] = r\n"
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
 * most 200 readers and 200 waiters, and ARGV[1] bytes in all.
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
	"local size = #table.concat(out)\n"
	"for _, m in ipairs(redis.call('zrange', KEYS[2], 0, 199)) do\n"
	"  if tonumber(redis.call('zscore', exp, m) or '0') > now then\n"
	"    if string.sub(m, -2) == '" REDLOCK_SHARED_MEMBER_LUA "' then\n"
	"      m = 'S' .. string.sub(m, 1, -3)\n"
	"    else\n"
	"      m = 'X' .. m\n"
	"    end\n"
	"    m = #m .. ':' .. m\n"
	"    size = size + #m\n"
	"    if size > tonumber(ARGV[1]) then\n"
	"      break\n"
	"    end\n"
	"    out[#out + 1] = m\n"
	"  end\n"
	"end\n"
	"return table.concat(out)\n",
	2, 14, ""
};

/*
 * KEYS[1] the registry; ARGV[1] our identity, [2] the other members of a
 * cycle that published a record, each "<len>:<identity>".  When every one
 * of those records is still there, deletes ours and returns 1 (we are the
 * cycle's victim); else 0 (another member ended first).
 */
static RedisScript claim_script = {
	"deadlock claim",
	"local p = 1\n"
	"while p <= #ARGV[2] do\n"
	"  local c = string.find(ARGV[2], ':', p, true)\n"
	"  local n = c and tonumber(string.sub(ARGV[2], p, c - 1))\n"
	"  if n == nil then\n"
	"    return 0\n"
	"  end\n"
	"  if redis.call('hexists', KEYS[1], string.sub(ARGV[2], c + 1, c + n)) == 0 then\n"
	"    return 0\n"
	"  end\n"
	"  p = c + n + 1\n"
	"end\n"
	"redis.call('hdel', KEYS[1], ARGV[1])\n"
	"return 1\n",
	1, 15, ""
};

static bool warned_perm = false;	/* a master refused the scripts: said once */

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
 * WaitsRecordText: our record: when we started waiting (Unix ms), our wake
 * channel as "<len>:<bytes>", then per key its mode and "<len>:<key>".
 */
char *
WaitsRecordText(RedlockLock **waiting, int n, int64 since)
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

/*
 * take_number: the decimal number at *p, up to a space (skipped), or -1
 * if there is none.
 */
static int64
take_number(const char **p, const char *end)
{
	const char *sp = memchr(*p, ' ', end - *p);
	char		num[24];

	if (sp == NULL || sp == *p || sp - *p >= (int) sizeof(num))
		return -1;
	memcpy(num, *p, sp - *p);
	num[sp - *p] = '\0';
	*p = sp + 1;
	return strtoi64(num, NULL, 10);
}

/*
 * parse_record: a record of "ident" as the registry returns it (len bytes
 * at r: "<beat> <since> <len>:<channel>" then the waits); false if
 * malformed.
 */
static bool
parse_record(Record *rec, const char *ident, int identlen, const char *r, int len)
{
	const char *end = r + len;
	int64		beat = take_number(&r, end);
	int			clen;
	const char *ch;
	int			max = 0;

	if (beat < 0 || take_number(&r, end) < 0)
		return false;
	ch = take_field(&r, end, &clen);
	if (ch == NULL || identlen >= IDENT_LEN || clen > REDIS_CHANNEL_LEN)
		return false;
	memset(rec, 0, sizeof(*rec));
	rec->ident = pnstrdup(ident, identlen);
	rec->beat = beat;
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
 * answered_or_behind: every call has its answer, but those sent to a
 * server that had not answered earlier requests (frozen, or slow): a
 * master that stopped answering costs a check one batch's wait, not one
 * per batch.
 */
static bool
answered_or_behind(RedisCall *calls, int ncalls, void *arg)
{
	int			i;

	for (i = 0; i < ncalls; i++)
		if (RedisCallPending(&calls[i]) && !calls[i].behind)
			return false;
	return true;
}

/*
 * run_batch: run calls (built by the caller, each with room for a bulk
 * string answer where it wants one), BATCH_MS at most and never past the
 * wait's deadline (answered_or_behind).  Failures are left in the calls: a
 * check works with what answered.  A master whose ACL refuses the scripts
 * gets one WARNING per backend: checks miss what it would have said.
 */
static void
run_batch(Check *c, RedisCall *calls, int ncalls)
{
	RedisBatch	batch = {0};
	int			i;

	batch.calls = calls;
	batch.ncalls = ncalls;
	batch.timeout_ms = Min(redlock_command_timeout, BATCH_MS);
	batch.deadline = c->deadline;
	batch.settled = answered_or_behind;
	RedisRun(&batch);
	for (i = 0; i < ncalls && !warned_perm; i++)
		if (calls[i].state == REDIS_CALL_FAILED && calls[i].failure == REDIS_FAIL_PERM)
		{
			warned_perm = true;
			ereport(WARNING,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("deadlock detection cannot run its scripts on Redis server \"%s\"",
							calls[i].server->addr),
					 errdetail("%s", calls[i].error),
					 errhint("Let the Redis ACL user run HSET, HGETALL, HDEL, HEXISTS and ZSCORE inside scripts, on the keys that start with redlock.key_prefix.")));
		}
}

/* registry_key: the name of the records' hash under our key prefix. */
static char *
registry_key(Check *c, size_t *len)
{
	/* one key anywhere: on a cluster, whichever node has its slot */
	return RedlockCompanionKey(c->prefix, c->prefixlen, REGISTRY_SUFFIX,
							   REGISTRY_SUFFIX_LEN, false, len);
}

/* answered: whether a call came back with a whole bulk string. */
#define answered(call) \
	((call)->state == REDIS_CALL_DONE && (call)->nints == 0 && \
	 (call)->textlen <= (call)->textcap)

/*
 * WaitsRegistry: publish (record not NULL) or delete our record on every
 * master; with "read" (and a record), read the others' into c->records
 * (of several copies of one backend's record, the newest).
 */
void
WaitsRegistry(Check *c, const char *record, bool read)
{
	const char *ident = RedlockBackendIdent();
	char		life[16];
	char		cap[16];
	RedisCall  *calls = palloc(sizeof(RedisCall) * c->nservers);
	size_t		keylen;
	char	   *key;
	int			i;

	RedisScriptPrepare(&waits_script);
	snprintf(life, sizeof(life), "%d", RECORD_LIFE_MS);
	snprintf(cap, sizeof(cap), "%d", REGISTRY_CAP - 64);
	key = registry_key(c, &keylen);
	read = read && record != NULL;
	for (i = 0; i < c->nservers; i++)
	{
		RedisCallInit(&calls[i], c->servers[i], &waits_script, i);
		RedisCallArg(&calls[i], key, keylen);
		RedisCallArg(&calls[i], ident, strlen(ident));
		RedisCallArg(&calls[i], record ? record : "", record ? strlen(record) : 0);
		RedisCallArg(&calls[i], life, strlen(life));
		RedisCallArg(&calls[i], read ? "1" : "0", 1);
		RedisCallArg(&calls[i], cap, strlen(cap));
		if (read)
		{
			calls[i].text = palloc(REGISTRY_CAP);
			calls[i].textcap = REGISTRY_CAP;
		}
	}
	run_batch(c, calls, c->nservers);
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
			c->records = c->records ?
				repalloc(c->records, sizeof(Record) * (c->nrecords + 1)) :
				palloc(sizeof(Record));
			if (!parse_record(&c->records[c->nrecords], id, ilen, rec, rlen))
				continue;
			/* the newest copy of a backend's record counts */
			for (r = 0; r < c->nrecords; r++)
				if (strcmp(c->records[r].ident, c->records[c->nrecords].ident) == 0)
					break;
			if (r == c->nrecords)
				c->nrecords++;
			else if (c->records[c->nrecords].beat > c->records[r].beat)
				c->records[r] = c->records[c->nrecords];
		}
		pfree(calls[i].text);
	}
}

/*
 * WaitsRecordOf: the index of the record whose identity (by_channel: wake
 * channel) is "name", or -1.
 */
int
WaitsRecordOf(Check *c, const char *name, bool by_channel)
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

/* key_index: where the walk keeps what it read of w's key, or -1. */
static int
key_index(Check *c, const WaitFor *w)
{
	int			k;

	for (k = 0; k < c->nkeys; k++)
		if (c->keys[k].rkeylen == w->rkeylen &&
			memcmp(c->keys[k].rkey, w->rkey, w->rkeylen) == 0)
			return k;
	return -1;
}

/*
 * WaitsReadKeys: fill in the KeyInfo of each of "waits" (n) not read yet, in
 * one batch.  Keys beyond MAX_KEYS stay unread (WaitsKeyInfo returns NULL).
 */
void
WaitsReadKeys(Check *c, const WaitFor *waits, int n)
{
	int			first = c->nkeys;
	int			quorum = RedlockQuorum(c->nservers);
	char		keycap[16];
	RedisCall  *calls;
	int			ncalls = 0;
	int			w;
	int			k;
	int			i;

	for (w = 0; w < n && c->nkeys < MAX_KEYS; w++)
	{
		if (key_index(c, &waits[w]) < 0)
		{
			k = c->nkeys;
			memset(&c->keys[k], 0, sizeof(KeyInfo));
			c->keys[k].rkey = waits[w].rkey;
			c->keys[k].rkeylen = waits[w].rkeylen;
			c->nkeys++;
		}
	}
	if (c->nkeys == first)
		return;

	RedisScriptPrepare(&holders_script);
	snprintf(keycap, sizeof(keycap), "%d", KEY_CAP - 64);
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
			RedisCallArg(call, keycap, strlen(keycap));
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

/* WaitsKeyInfo: what was read of a key, or NULL (not read: too many keys). */
KeyInfo *
WaitsKeyInfo(Check *c, const WaitFor *w)
{
	int			k = key_index(c, w);

	return k >= 0 && c->keys[k].nqueue != NULL ? &c->keys[k] : NULL;
}

/*
 * WaitsQueuePosition: where "member" stands in the key's queue on master i,
 * or -1.
 */
int
WaitsQueuePosition(const KeyInfo *ki, int i, const char *member)
{
	int			j;

	for (j = 0; ki->queue[i] != NULL && j < ki->nqueue[i]; j++)
		if (strcmp(ki->queue[i][j], member) == 0)
			return j;
	return -1;
}

/* WaitsQueued: whether a majority of the masters have member in the queue. */
bool
WaitsQueued(Check *c, const KeyInfo *ki, const char *member)
{
	int			n = 0;
	int			i;

	for (i = 0; i < c->nservers; i++)
		if (WaitsQueuePosition(ki, i, member) >= 0)
			n++;
	return n >= RedlockQuorum(c->nservers);
}

/*
 * WaitsClaim: whether this backend is the victim of the cycle found: a
 * majority of the masters still have every other member's record (none
 * ended first) and deleted ours.
 */
bool
WaitsClaim(Check *c, const char **others, int nothers)
{
	const char *ident = RedlockBackendIdent();
	RedisCall  *calls = palloc(sizeof(RedisCall) * c->nservers);
	size_t		keylen;
	char	   *key;
	StringInfoData packed;
	int			granted = 0;
	int			i;
	int			j;

	RedisScriptPrepare(&claim_script);
	key = registry_key(c, &keylen);
	initStringInfo(&packed);
	for (j = 0; j < nothers; j++)
		appendStringInfo(&packed, "%zu:%s", strlen(others[j]), others[j]);
	for (i = 0; i < c->nservers; i++)
	{
		RedisCallInit(&calls[i], c->servers[i], &claim_script, i);
		RedisCallArg(&calls[i], key, keylen);
		RedisCallArg(&calls[i], ident, strlen(ident));
		RedisCallArg(&calls[i], packed.data, packed.len);
	}
	run_batch(c, calls, c->nservers);
	for (i = 0; i < c->nservers; i++)
		if (calls[i].state == REDIS_CALL_DONE && calls[i].nints == 1 &&
			calls[i].ints[0] == 1)
			granted++;
	return granted >= RedlockQuorum(c->nservers);
}
