/*-------------------------------------------------------------------------
 *
 * algo.c
 *	  The Redlock algorithm: the scripts run on each master, the quorum
 *	  rule, lock validity and fencing tokens.
 *
 * Wire format (shared with node-redlock, redsync and redis-py): a lock is a
 * plain string key named exactly as the resource, created with SET NX PX
 * and holding a random owner value; release and extend compare the stored
 * value with ours inside a script before they act.  A lock held by any of
 * those clients therefore excludes us, and the other way round.
 *
 * Quorum and validity: with N masters a lock is held when at least
 * N/2+1 granted it and time is left:
 *		validity = TTL - (time spent acquiring) - (drift_factor * TTL + 2 ms)
 * measured on the monotonic clock from before the first request was sent.
 * When either fails, the partial lock is released on every master that may
 * hold it, including those that did not answer: the release is queued on
 * their connection behind the acquire, so a master that was only frozen
 * ends up clean when it resumes.
 *
 * Fencing tokens: each master keeps a counter next to the lock key (the key
 * followed by REDLOCK_FENCE_SUFFIX), incremented by the same script that
 * sets the lock, so an uncontended acquire is still one round trip.  The
 * token is the largest counter among the masters that granted.  Claim:
 * tokens of successive holders of a key strictly increase.  Argument: when
 * an acquire returns token T, a quorum of masters has a counter >= T
 * (either they returned T themselves, or the write-back below raised them
 * to T before we returned).  The next holder's quorum overlaps that one in
 * at least one master, whose INCR then yields more than T, so its token
 * (a maximum that includes that value) exceeds T.  With one master this is
 * simply INCR.  Limits: a master that loses its data (restart without
 * persistence) can only lower one member of a quorum, which the overlap
 * argument tolerates as long as a majority keeps its counters; and tokens
 * count only acquisitions made through this extension.
 *
 * Waiting, fairly.  A backend that has to wait for a key queues itself on
 * each master: a sorted set next to the key (REDLOCK_WAITERS_SUFFIX) holds
 * its wake channel ordered by a ticket, the Unix time in ms when it
 * started waiting; another (REDLOCK_WAITEXP_SUFFIX) holds each entry's
 * deadline, refreshed by every attempt, so that a waiter that died drops
 * out.  The acquire script grants a free key only to the first live
 * waiter (or anyone when nobody waits), so the backend that just released
 * a hot key cannot barge back in front of those who queued before it:
 * waiters are served in arrival order, like PostgreSQL's own lock queue.
 * The release script publishes the key on the first waiter's channel:
 * wake-one, no thundering herd.  Tickets come from the waiter, not from
 * each master, so every master orders the same waiters the same way; a
 * waiting acquire that got a partial grant gives it back *and stays
 * queued* there.  Both together keep the first waiter the same on every
 * master, which then gets a majority: per-master orderings could give
 * different masters different first waiters and nobody a majority, for
 * ever.  Clients that do not know the queue (node-redlock, SET NX) are not
 * held back by it.
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "redlock.h"

/*
 * KEYS[1] lock, [2] fencing counter, [3] waiters, [4] their deadlines;
 * ARGV[1] owner value, [2] TTL, [3] our wake channel (our name in the
 * queue), [4] our ticket, or '' not to queue, [5] how long a queue entry
 * lives without being refreshed (ms).
 *
 * Returns {1, token} when the lock is set, {0, remaining TTL of the holder
 * (-2: free, but promised to a waiter ahead of us)} otherwise.  The lock
 * is granted only if no live waiter is queued ahead of us, so a releasing
 * backend cannot barge back in front of those waiting; a caller that is
 * refused and gave a ticket joins (or stays in) the queue, ordered by
 * ticket, and its deadline is refreshed.  Dead waiters (deadline passed)
 * are dropped.  Finding our own value (the same request sent again after a
 * dropped connection) counts as set: the TTL is re-armed and a new token
 * drawn.  A key of another type (say, a Redisson lock) is held by someone
 * else.
 */
static RedisScript acquire_script = {
	"acquire",
	"local now = nil\n"
	"local ahead = false\n"
	"if redis.call('exists', KEYS[3]) == 1 then\n"
	"  local t = redis.call('time')\n"
	"  now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
	"  local dead = redis.call('zrangebyscore', KEYS[4], '-inf', now)\n"
	"  if #dead > 0 then\n"
	"    redis.call('zrem', KEYS[3], unpack(dead))\n"
	"    redis.call('zrem', KEYS[4], unpack(dead))\n"
	"  end\n"
	"  local head = redis.call('zrange', KEYS[3], 0, 0)[1]\n"
	"  ahead = head ~= nil and head ~= ARGV[3]\n"
	"end\n"
	"if not ahead and (redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) or\n"
	"   (redis.pcall('get', KEYS[1]) == ARGV[1] and\n"
	"    redis.call('pexpire', KEYS[1], ARGV[2]) == 1)) then\n"
	"  if now then\n"
	"    redis.call('zrem', KEYS[3], ARGV[3])\n"
	"    redis.call('zrem', KEYS[4], ARGV[3])\n"
	"  end\n"
	"  return {1, redis.call('incr', KEYS[2])}\n"
	"end\n"
	"if ARGV[4] ~= '' then\n"
	"  if not now then\n"
	"    local t = redis.call('time')\n"
	"    now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
	"  end\n"
	"  redis.call('zadd', KEYS[3], 'NX', ARGV[4], ARGV[3])\n"
	"  redis.call('zadd', KEYS[4], now + ARGV[5], ARGV[3])\n"
	"  redis.call('pexpire', KEYS[3], ARGV[5] * 2)\n"
	"  redis.call('pexpire', KEYS[4], ARGV[5] * 2)\n"
	"end\n"
	"return {0, redis.call('pttl', KEYS[1])}\n",
	4, 0, ""
};

/*
 * KEYS[1] lock, [2] waiters, [3] their deadlines; ARGV[1] owner value,
 * [2] our wake channel, [3] our ticket or '', [4] queue entry lifetime.
 *
 * Deletes the lock if it is ours.  Without a ticket, also takes us out of
 * the queue (a release, or a waiter giving up).  With one, keeps us queued
 * there, joining if need be: that is how a waiting acquire gives back a
 * grant that did not make a majority, so that it is queued on every master
 * with the same ticket and every master has the same first waiter.  If the
 * lock is then free and someone waits, publishes the key on the first live
 * waiter's channel: wake-one, in queue order.  Returns 1 if our lock was
 * deleted, 0 if it was not ours.
 */
static RedisScript release_script = {
	"release",
	"local released = 0\n"
	"if redis.pcall('get', KEYS[1]) == ARGV[1] then\n"
	"  released = redis.call('del', KEYS[1])\n"
	"end\n"
	"if ARGV[3] ~= '' then\n"
	"  local t = redis.call('time')\n"
	"  local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
	"  redis.call('zadd', KEYS[2], 'NX', ARGV[3], ARGV[2])\n"
	"  redis.call('zadd', KEYS[3], now + ARGV[4], ARGV[2])\n"
	"  redis.call('pexpire', KEYS[2], ARGV[4] * 2)\n"
	"  redis.call('pexpire', KEYS[3], ARGV[4] * 2)\n"
	"end\n"
	"if redis.call('exists', KEYS[2]) == 1 then\n"
	"  if ARGV[3] == '' then\n"
	"    redis.call('zrem', KEYS[2], ARGV[2])\n"
	"    redis.call('zrem', KEYS[3], ARGV[2])\n"
	"  end\n"
	"  if redis.call('exists', KEYS[1]) == 0 then\n"
	"    local t = redis.call('time')\n"
	"    local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
	"    local dead = redis.call('zrangebyscore', KEYS[3], '-inf', now)\n"
	"    if #dead > 0 then\n"
	"      redis.call('zrem', KEYS[2], unpack(dead))\n"
	"      redis.call('zrem', KEYS[3], unpack(dead))\n"
	"    end\n"
	"    local head = redis.call('zrange', KEYS[2], 0, 0)[1]\n"
	"    if head then\n"
	"      redis.call('publish', head, KEYS[1])\n"
	"    end\n"
	"  end\n"
	"end\n"
	"return released\n",
	3, 1, ""
};

/*
 * KEYS[1] lock; ARGV[1] owner value, ARGV[2] TTL.  Re-arms the TTL of our
 * lock.  Returns 1 if it was ours, 0 otherwise.
 */
static RedisScript extend_script = {
	"extend",
	"if redis.call('get', KEYS[1]) == ARGV[1] then\n"
	"  return redis.call('pexpire', KEYS[1], ARGV[2])\n"
	"end\n"
	"return 0\n",
	1, 3, ""
};

/*
 * KEYS[1] fencing counter; ARGV[1] token.  Raises the counter to the token
 * if it is lower.  Returns the counter afterwards.
 */
static RedisScript fence_script = {
	"fence",
	"local c = tonumber(redis.call('get', KEYS[1]) or '0')\n"
	"local t = tonumber(ARGV[1])\n"
	"if c < t then\n"
	"  redis.call('set', KEYS[1], ARGV[1])\n"
	"  return t\n"
	"end\n"
	"return c\n",
	1, 2, ""
};

/* How a single master answered an acquire. */
typedef enum Answer
{
	ANSWER_WAITING,
	ANSWER_GRANTED,
	ANSWER_REFUSED,
	ANSWER_FAILED
} Answer;

/*
 * RedlockQuorum: masters that must agree out of "nservers": a majority.
 */
int
RedlockQuorum(int nservers)
{
	return nservers / 2 + 1;
}

/* classify: what an acquire call's state means. */
static Answer
classify(const RedisCall *call)
{
	if (call->state == REDIS_CALL_WAITING)
		return ANSWER_WAITING;
	if (call->state == REDIS_CALL_FAILED)
		return ANSWER_FAILED;
	if (call->nints == 2 && call->ints[0] == 1 && call->ints[1] > 0)
		return ANSWER_GRANTED;
	if (call->nints == 2 && call->ints[0] == 0)
		return ANSWER_REFUSED;
	return ANSWER_FAILED;
}

/*
 * acquire_settled: the acquire's outcome is known once a quorum granted,
 * or once the lock is out of reach *and* it is known whether a quorum
 * answered: that decides "busy" (someone else holds it) against
 * "unreachable", which must not depend on which answer came first.
 */
static bool
acquire_settled(RedisCall *calls, int ncalls, void *arg)
{
	int			quorum = RedlockQuorum(ncalls);
	int			granted = 0;
	int			refused = 0;
	int			failed = 0;
	int			i;

	for (i = 0; i < ncalls; i++)
	{
		switch (classify(&calls[i]))
		{
			case ANSWER_GRANTED:
				granted++;
				break;
			case ANSWER_REFUSED:
				refused++;
				break;
			case ANSWER_FAILED:
				failed++;
				break;
			case ANSWER_WAITING:
				break;
		}
	}
	if (granted >= quorum)
		return true;
	if (refused + failed <= ncalls - quorum)
		return false;			/* a quorum may still grant it */
	return granted + refused >= quorum || failed > ncalls - quorum;
}

/*
 * all_but_frozen_settled: used for cleanup releases; waits for every call
 * except those whose "tag" says the server did not answer the acquire (it
 * is frozen or slow: the release waits in its socket instead).
 */
static bool
all_but_frozen_settled(RedisCall *calls, int ncalls, void *arg)
{
	int			i;

	for (i = 0; i < ncalls; i++)
		if (calls[i].state == REDIS_CALL_WAITING && calls[i].tag == 0)
			return false;
	return true;
}

/*
 * companion_key: the lock key followed by a suffix that starts with a NUL
 * (the fencing counter, the queue), palloc'd; its length goes to *len.
 */
static char *
companion_key(const RedlockLock *lock, const char *suffix, size_t suffixlen,
			  size_t *len)
{
	char	   *key = palloc(lock->rkeylen + suffixlen);

	memcpy(key, lock->rkey, lock->rkeylen);
	memcpy(key + lock->rkeylen, suffix, suffixlen);
	*len = lock->rkeylen + suffixlen;
	return key;
}

#define fence_key(lock, len) \
	companion_key(lock, REDLOCK_FENCE_SUFFIX, REDLOCK_FENCE_SUFFIX_LEN, len)
#define waiters_key(lock, len) \
	companion_key(lock, REDLOCK_WAITERS_SUFFIX, REDLOCK_WAITERS_SUFFIX_LEN, len)
#define waitexp_key(lock, len) \
	companion_key(lock, REDLOCK_WAITEXP_SUFFIX, REDLOCK_WAITEXP_SUFFIX_LEN, len)

/* queue_ttl: how long a waiter's queue entry lives unrefreshed, as text. */
static const char *
queue_ttl(void)
{
	/* a live waiter refreshes its entry at least this often */
	return psprintf("%d", redlock_retry_delay + redlock_retry_jitter +
					redlock_command_timeout + 1000);
}

/*
 * release_call: describe the owner-checked release of "lock" on its
 * server number i.  "ticket" (text, or "" to leave the queue) keeps a
 * waiter queued.  The strings it names are palloc'd.
 */
static void
release_call(RedisCall *call, RedlockLock *lock, int i, int tag,
			 const char *ticket)
{
	size_t		len;
	char	   *key;
	const char *qttl = queue_ttl();

	RedisCallInit(call, lock->servers[i], &release_script, tag);
	RedisCallArg(call, lock->rkey, lock->rkeylen);
	key = waiters_key(lock, &len);
	RedisCallArg(call, key, len);
	key = waitexp_key(lock, &len);
	RedisCallArg(call, key, len);
	RedisCallArg(call, lock->value, REDLOCK_VALUE_LEN);
	RedisCallArg(call, RedisWakeChannel(), strlen(RedisWakeChannel()));
	RedisCallArg(call, ticket, strlen(ticket));
	RedisCallArg(call, qttl, strlen(qttl));
}

/*
 * release_partial: undo an acquire that did not give us the lock.
 *
 * Sends the owner-checked release to every master that did not refuse:
 * those that granted (we wait for them), and those that failed or did not
 * answer (queued behind the acquire on their socket; not waited for).  A
 * waiting acquire ("ticket" not empty) stays queued on them.
 */
static void
release_partial(RedlockLock *lock, RedisCall *acq, const char *ticket)
{
	RedisCall	calls[REDLOCK_MAX_SERVERS];
	int			n = 0;
	int			i;

	for (i = 0; i < lock->nservers; i++)
	{
		Answer		a = classify(&acq[i]);
		bool		frozen;

		if (a == ANSWER_REFUSED)
			continue;
		frozen = a == ANSWER_WAITING ||
			(a == ANSWER_FAILED && acq[i].failure == REDIS_FAIL_TIMEOUT);
		release_call(&calls[n++], lock, i, frozen ? 1 : 0, ticket);
	}
	if (n > 0)
		RedisRun(calls, n, redlock_command_timeout,
				 all_but_frozen_settled, NULL);
}

/* State of a fencing write-back while it runs. */
typedef struct FenceWait
{
	int			agree;			/* masters known to hold >= the token */
	int			quorum;
	long long	token;
} FenceWait;

/* fence_counted: how many write-back calls confirmed the token. */
static int
fence_counted(RedisCall *calls, int ncalls, long long token)
{
	int			n = 0;
	int			i;

	for (i = 0; i < ncalls; i++)
		if (calls[i].state == REDIS_CALL_DONE && calls[i].nints == 1 &&
			calls[i].ints[0] >= token)
			n++;
	return n;
}

/* fence_settled: a majority now holds the token. */
static bool
fence_settled(RedisCall *calls, int ncalls, void *arg)
{
	FenceWait  *w = (FenceWait *) arg;

	return w->agree + fence_counted(calls, ncalls, w->token) >= w->quorum;
}

/*
 * fence_write_back: make a quorum of masters hold a counter >= token.
 *
 * "acq" are the acquire calls; masters that returned the token already
 * count.  Returns true when a quorum is reached.
 */
static bool
fence_write_back(RedlockLock *lock, RedisCall *acq, int64 token)
{
	RedisCall	calls[REDLOCK_MAX_SERVERS];
	FenceWait	wait;
	char		tokenbuf[32];
	char	   *fkey;
	size_t		fkeylen;
	int			agree = 0;
	int			n = 0;
	int			i;

	for (i = 0; i < lock->nservers; i++)
		if (classify(&acq[i]) == ANSWER_GRANTED && acq[i].ints[1] == token)
			agree++;
	if (agree >= RedlockQuorum(lock->nservers))
		return true;

	fkey = fence_key(lock, &fkeylen);
	snprintf(tokenbuf, sizeof(tokenbuf), INT64_FORMAT, token);
	for (i = 0; i < lock->nservers; i++)
	{
		if (classify(&acq[i]) == ANSWER_GRANTED && acq[i].ints[1] == token)
			continue;
		RedisCallInit(&calls[n], lock->servers[i], &fence_script, 0);
		RedisCallArg(&calls[n], fkey, fkeylen);
		RedisCallArg(&calls[n], tokenbuf, strlen(tokenbuf));
		n++;
	}
	wait.agree = agree;
	wait.quorum = RedlockQuorum(lock->nservers);
	wait.token = token;
	RedisRun(calls, n, redlock_command_timeout, fence_settled, &wait);
	return fence_settled(calls, n, &wait);
}

/*
 * RedlockTryAcquire: one attempt to take "lock" on its masters.
 *
 * The lock's key, value, TTL and servers must be set.  With a ticket (> 0:
 * when the caller started waiting, in Unix milliseconds, the same for all
 * of its attempts) a refused attempt queues the caller on each master;
 * every master then orders the same waiters the same way, so no two heads
 * can split the quorum.  On success fills in
 * token, granted, acquired_at and the validity deadline, and returns
 * REDLOCK_ACQUIRED.  Otherwise nothing of ours is left on any master (or
 * its release is queued on a frozen one) and the result says whether a
 * quorum answered (REDLOCK_BUSY: someone else holds it, or validity ran out)
 * or not (REDLOCK_UNREACHABLE).  "tally" describes the answers.
 */
RedlockVerdict
RedlockTryAcquire(RedlockLock *lock, int64 ticket, RedlockTally *tally)
{
	RedisCall	calls[REDLOCK_MAX_SERVERS];
	char		ttlbuf[16];
	char		ticketbuf[32];
	const char *qttl = queue_ttl();
	char	   *fkey;
	char	   *qkey;
	char	   *qexpkey;
	size_t		fkeylen;
	size_t		qkeylen;
	size_t		qexpkeylen;
	const char *channel;
	int			quorum = RedlockQuorum(lock->nservers);
	int64		start;
	int64		drift_us;
	int64		token = 0;
	uint32		granted = 0;
	int			i;

	memset(tally, 0, sizeof(*tally));
	tally->nservers = lock->nservers;
	tally->holder_pttl_ms = -1;

	fkey = fence_key(lock, &fkeylen);
	qkey = waiters_key(lock, &qkeylen);
	qexpkey = waitexp_key(lock, &qexpkeylen);
	snprintf(ttlbuf, sizeof(ttlbuf), "%d", lock->ttl_ms);
	if (ticket > 0)
		snprintf(ticketbuf, sizeof(ticketbuf), INT64_FORMAT, ticket);
	else
		ticketbuf[0] = '\0';

	/*
	 * Hash every script and draw the wake channel now: a commit or abort
	 * callback must not have to.
	 */
	RedisScriptPrepare(&acquire_script);
	RedisScriptPrepare(&release_script);
	RedisScriptPrepare(&extend_script);
	RedisScriptPrepare(&fence_script);
	channel = RedisWakeChannel();

	for (i = 0; i < lock->nservers; i++)
	{
		RedisCallInit(&calls[i], lock->servers[i], &acquire_script, i);
		RedisCallArg(&calls[i], lock->rkey, lock->rkeylen);
		RedisCallArg(&calls[i], fkey, fkeylen);
		RedisCallArg(&calls[i], qkey, qkeylen);
		RedisCallArg(&calls[i], qexpkey, qexpkeylen);
		RedisCallArg(&calls[i], lock->value, REDLOCK_VALUE_LEN);
		RedisCallArg(&calls[i], ttlbuf, strlen(ttlbuf));
		RedisCallArg(&calls[i], channel, strlen(channel));
		RedisCallArg(&calls[i], ticketbuf, strlen(ticketbuf));
		RedisCallArg(&calls[i], qttl, strlen(qttl));
	}

	start = RedlockNowUs();
	RedisRun(calls, lock->nservers, redlock_command_timeout,
			 acquire_settled, NULL);

	for (i = 0; i < lock->nservers; i++)
	{
		RedisCall  *call = &calls[i];

		switch (classify(call))
		{
			case ANSWER_GRANTED:
				tally->granted++;
				granted |= (uint32) 1 << i;
				token = Max(token, call->ints[1]);
				break;
			case ANSWER_REFUSED:
				tally->refused++;
				if (call->ints[1] >= 0 &&
					(tally->holder_pttl_ms < 0 ||
					 call->ints[1] < tally->holder_pttl_ms))
					tally->holder_pttl_ms = call->ints[1];
				break;
			case ANSWER_WAITING:
				tally->unanswered++;
				break;
			case ANSWER_FAILED:
				tally->failed++;
				if (tally->first_error == NULL)
				{
					tally->first_failure = call->failure ? call->failure :
						REDIS_FAIL_PROTOCOL;
					tally->first_server = call->server->addr;
					tally->first_error = call->error ? call->error :
						"unexpected answer to the acquire script";
				}
				break;
		}
	}

	drift_us = (int64) (lock->ttl_ms * redlock_drift_factor * 1000.0) + 2000;

	elog(DEBUG1, "redlock: acquire \"%s\" (owner %.8s): %d granted, %d refused, %d failed, %d not waited for, in %.3f ms",
		 lock->key, lock->value, tally->granted, tally->refused,
		 tally->failed, tally->unanswered,
		 (RedlockNowUs() - start) / 1000.0);

	if (tally->granted >= quorum)
	{
		bool		fenced = lock->nservers == 1 ||
			fence_write_back(lock, calls, token);

		if (fenced &&
			RedlockNowUs() < start + (int64) lock->ttl_ms * 1000 - drift_us)
		{
			lock->token = token;
			lock->granted = granted;
			lock->acquired_us = start;
			lock->acquired_at = GetCurrentTimestamp();
			lock->valid_until_us = start + (int64) lock->ttl_ms * 1000 - drift_us;
			return REDLOCK_ACQUIRED;
		}
		if (fenced)
			tally->validity_lost = true;
		else
		{
			tally->failed++;
			if (tally->first_error == NULL)
			{
				tally->first_failure = REDIS_FAIL_TIMEOUT;
				tally->first_server = lock->servers[0]->addr;
				tally->first_error = "could not store the fencing token on a majority";
			}
		}
	}

	release_partial(lock, calls, ticketbuf);

	if (tally->validity_lost || tally->granted + tally->refused >= quorum)
		return REDLOCK_BUSY;
	return REDLOCK_UNREACHABLE;
}

/* Per lock answers to an owner-checked script (release or extend). */
typedef struct OwnerAnswers
{
	int			acted;			/* the script acted: our lock */
	int			notours;	/* not our lock (expired, taken over) */
	int			failed;
	int			waiting;
} OwnerAnswers;

/* count_answers: tally the answers about lock number "idx": 1 means it
 * acted on our lock, 0 that the lock was not ours. */
static OwnerAnswers
count_answers(RedisCall *calls, int ncalls, int idx)
{
	OwnerAnswers c = {0, 0, 0, 0};
	int			i;

	for (i = 0; i < ncalls; i++)
	{
		if (calls[i].tag != idx)
			continue;
		if (calls[i].state == REDIS_CALL_WAITING)
			c.waiting++;
		else if (calls[i].state == REDIS_CALL_DONE && calls[i].nints == 1 &&
				 calls[i].ints[0] == 1)
			c.acted++;
		else if (calls[i].state == REDIS_CALL_DONE && calls[i].nints == 1)
			c.notours++;
		else
			c.failed++;
	}
	return c;
}

/* owner_outcome: decided outcome of one lock, or -1 while undecided. */
static int
owner_outcome(OwnerAnswers c, int nservers)
{
	int			quorum = RedlockQuorum(nservers);

	if (c.acted >= quorum)
		return REDLOCK_RELEASED;
	if (c.notours > nservers - quorum)
		return REDLOCK_WAS_LOST;
	if (c.waiting == 0)
		return c.acted + c.notours >= quorum ?
			REDLOCK_WAS_LOST : REDLOCK_RELEASE_FAILED;
	return -1;
}

typedef struct ReleaseBatch
{
	RedlockLock **locks;
	int			nlocks;
} ReleaseBatch;

/*
 * release_settled: every lock's outcome is decided, or can only be decided
 * by servers that are behind: a server that has not answered our earlier
 * requests will not answer this one sooner, and a commit or abort (or a
 * cancel) should not wait out its timeout; the release stays queued behind
 * those requests.  Locks whose acquire was interrupted (still pending) are
 * not waited for either: their release is cleanup, queued behind the
 * acquire on each server's connection.
 */
static bool
release_settled(RedisCall *calls, int ncalls, void *arg)
{
	ReleaseBatch *batch = (ReleaseBatch *) arg;
	int			i;

	for (i = 0; i < ncalls; i++)
	{
		if (calls[i].state == REDIS_CALL_WAITING && !calls[i].behind &&
			batch->locks[calls[i].tag]->pending_subid == InvalidSubTransactionId &&
			owner_outcome(count_answers(calls, ncalls, calls[i].tag),
						  batch->locks[calls[i].tag]->nservers) < 0)
			return false;
	}
	return true;
}

/*
 * RedlockRelease: release several locks at once, each on all its masters,
 * in one pipelined round trip per master.
 *
 * Fills results[i] for locks[i]: released on a quorum, found lost (expired
 * or taken over), or not confirmed (the TTL will end it).  Locks still
 * pending (an interrupted acquire) are released without waiting.  If "tallies" is
 * not NULL, fills the first failure of each.  Raises no ERROR of its own,
 * so it may run in commit and abort callbacks.
 */
void
RedlockRelease(RedlockLock **locks, int nlocks, RedlockReleaseResult *results,
			   RedlockTally *tallies)
{
	RedisCall  *calls;
	ReleaseBatch batch;
	int64		start;
	int			ncalls = 0;
	int			i;
	int			j;

	for (i = 0; i < nlocks; i++)
		ncalls += locks[i]->nservers;
	calls = palloc(sizeof(RedisCall) * ncalls);

	ncalls = 0;
	for (i = 0; i < nlocks; i++)
	{
		for (j = 0; j < locks[i]->nservers; j++)
			release_call(&calls[ncalls++], locks[i], j, i, "");
	}

	batch.locks = locks;
	batch.nlocks = nlocks;
	start = RedlockNowUs();
	RedisRun(calls, ncalls, redlock_command_timeout, release_settled, &batch);

	for (i = 0; i < nlocks; i++)
	{
		OwnerAnswers c = count_answers(calls, ncalls, i);
		int			outcome = owner_outcome(c, locks[i]->nservers);

		results[i] = outcome < 0 ? REDLOCK_RELEASE_FAILED :
			(RedlockReleaseResult) outcome;
		elog(DEBUG1, "redlock: release \"%s\" (owner %.8s): %d released, %d not ours, %d failed, %d not waited for, in %.3f ms",
			 locks[i]->key, locks[i]->value, c.acted, c.notours, c.failed,
			 c.waiting, (RedlockNowUs() - start) / 1000.0);

		if (tallies)
		{
			RedlockTally *t = &tallies[i];

			memset(t, 0, sizeof(*t));
			t->nservers = locks[i]->nservers;
			t->granted = c.acted;
			t->refused = c.notours;
			t->failed = c.failed;
			t->unanswered = c.waiting;
			for (j = 0; j < ncalls; j++)
			{
				if (calls[j].tag == i && calls[j].state == REDIS_CALL_FAILED)
				{
					t->first_failure = calls[j].failure;
					t->first_server = calls[j].server->addr;
					t->first_error = calls[j].error;
					break;
				}
			}
		}
	}
	pfree(calls);
}

/*
 * RedlockDescribeTally: append a sentence saying how the masters answered,
 * for an errdetail.
 */
void
RedlockDescribeTally(const RedlockTally *tally, StringInfo buf)
{
	appendStringInfo(buf,
					 "%d of %d Redis servers granted the lock, %d refused it (held elsewhere), %d failed",
					 tally->granted, tally->nservers, tally->refused,
					 tally->failed);
	if (tally->unanswered > 0)
		appendStringInfo(buf, ", %d %s not waited for", tally->unanswered,
						 tally->unanswered == 1 ? "was" : "were");
	appendStringInfoChar(buf, '.');
	if (tally->first_error)
		appendStringInfo(buf, " First failure: server \"%s\": %s.",
						 tally->first_server, tally->first_error);
}

/* extend_settled: the extend's outcome is decided. */
static bool
extend_settled(RedisCall *calls, int ncalls, void *arg)
{
	return owner_outcome(count_answers(calls, ncalls, 0), ncalls) >= 0;
}

/*
 * RedlockExtend: re-arm a held lock's TTL to ttl_ms on its masters, sent
 * to all of them at once.
 *
 * Returns REDLOCK_RELEASED (here: extended) when a quorum re-armed it and
 * validity remains, and updates the lock's TTL and validity deadline;
 * REDLOCK_WAS_LOST when too many masters no longer hold our value; or
 * REDLOCK_RELEASE_FAILED when too few answered.  "tally" gets the answers.
 */
RedlockReleaseResult
RedlockExtend(RedlockLock *lock, int ttl_ms, RedlockTally *tally)
{
	RedisCall	calls[REDLOCK_MAX_SERVERS];
	char		ttlbuf[16];
	OwnerAnswers c;
	int64		start;
	int64		drift_us;
	int			outcome;
	int			i;

	snprintf(ttlbuf, sizeof(ttlbuf), "%d", ttl_ms);
	for (i = 0; i < lock->nservers; i++)
	{
		RedisCallInit(&calls[i], lock->servers[i], &extend_script, 0);
		RedisCallArg(&calls[i], lock->rkey, lock->rkeylen);
		RedisCallArg(&calls[i], lock->value, REDLOCK_VALUE_LEN);
		RedisCallArg(&calls[i], ttlbuf, strlen(ttlbuf));
	}

	start = RedlockNowUs();
	RedisRun(calls, lock->nservers, redlock_command_timeout,
			 extend_settled, NULL);

	c = count_answers(calls, lock->nservers, 0);
	memset(tally, 0, sizeof(*tally));
	tally->nservers = lock->nservers;
	tally->granted = c.acted;
	tally->refused = c.notours;
	tally->failed = c.failed;
	tally->unanswered = c.waiting;
	for (i = 0; i < lock->nservers; i++)
	{
		if (calls[i].state == REDIS_CALL_FAILED)
		{
			tally->first_failure = calls[i].failure;
			tally->first_server = calls[i].server->addr;
			tally->first_error = calls[i].error;
			break;
		}
	}

	outcome = owner_outcome(c, lock->nservers);
	if (outcome != REDLOCK_RELEASED)
		return outcome < 0 ? REDLOCK_RELEASE_FAILED :
			(RedlockReleaseResult) outcome;

	drift_us = (int64) (ttl_ms * redlock_drift_factor * 1000.0) + 2000;
	if (RedlockNowUs() >= start + (int64) ttl_ms * 1000 - drift_us)
	{
		tally->validity_lost = true;
		return REDLOCK_WAS_LOST;
	}
	lock->ttl_ms = ttl_ms;
	lock->valid_until_us = start + (int64) ttl_ms * 1000 - drift_us;
	return REDLOCK_RELEASED;
}
