/*-------------------------------------------------------------------------
 *
 * pubsub.c
 *	  How a waiting backend hears that a lock was released: a subscription
 *	  connection per server, and wake-ups counted for the key waited for.
 *
 * Channels.  A backend's wake channel is redlock.key_prefix, then
 * "redlock:wake:", then 16 random hex digits drawn once per backend.  The
 * release script publishes the lock's key on the channel of the first
 * waiter in the key's queue.  Putting the channel under the key prefix
 * lets a tenant's Redis ACL user be limited to its own channels ("&acme:*"
 * next to "~acme:*"): with one global pattern, any tenant could subscribe
 * to every channel and read the other tenants' key names from wake-ups.
 *
 * Connections.  The subscription connection of a server (RedisServer.sub)
 * opens on the backend's first wait there and is kept: later waits cost no
 * SUBSCRIBE.  It asks for the channel of each prefix the backend waits
 * under (at most REDIS_SUB_MAX_CHANNELS; past that it starts afresh).  It
 * authenticates like the command connection, and its SUBSCRIBE is held
 * until AUTH succeeded.  Anything unexpected on it (an error reply, a
 * garbled or oversized message) closes it, and waits fall back to their
 * timer; so does a server that refuses SUBSCRIBE (a missing ACL right).
 * Its unread bytes are capped like the command connection's (conn.c).
 *
 * Redisson's channels.  In redlock.lock_format = redisson a waiter also
 * listens where Redisson's RLock announces an unlock: its own channel for
 * the key, "redisson_lock__channel:{key}" (no braces added when the key
 * has one already, as Redisson does), where the release script publishes
 * too.  Any message there wakes the waiter of that key.  The subscription
 * keeps at most one such channel: waiting for another key swaps it
 * (UNSUBSCRIBE, SUBSCRIBE) on the same connection, and the end of the
 * watch gives it up.  A server that refuses it (an ACL without Redisson's
 * channels) keeps the connection: only Redisson's wake-ups are lost.
 * Our own releases publish there too, for Redisson's waiters; a skip mark
 * on the wake channel, right before, says that the next message on the
 * key channel is not a wake-up (algo.c): each of our waiters is woken
 * through the queue alone.
 *
 * Wake-ups.  Messages are read whenever the wait set reports them, during
 * any wait.  The acquire that waits for a key watches it for its whole
 * life (RedisWakeWatch), not only while it sleeps, so a wake-up that
 * arrives while an attempt is in flight is counted and ends the next sleep
 * at once.
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <hiredis/hiredis.h>

#include "redlock.h"

static char wake_id[17];			/* 16 hex digits, drawn on first use */
static char *watched_keys = NULL;	/* the keys waited for, one after the other */
static size_t watched_size = 0; /* allocated bytes at watched_keys */
static size_t watched_lens[REDLOCK_MAX_KEYS];
static int	nwatched = 0;		/* 0: none */
static char watched_keychan[REDIS_KEY_CHANNEL_LEN];	/* "": none */
static uint64 wake_count = 0;

static void unsubscribe_keys(void);

/*
 * RedisWakeChannel: write this backend's wake channel under a key prefix
 * (prefixlen bytes) to out (REDIS_CHANNEL_LEN bytes).  Raises ERROR when
 * no random bytes are available (only the first time).
 */
void
RedisWakeChannel(const char *prefix, size_t prefixlen, char *out)
{
	if (wake_id[0] == '\0')
	{
		uint8		id[8];
		int			i;

		if (!pg_strong_random(id, sizeof(id)))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate a random wake channel")));
		for (i = 0; i < (int) sizeof(id); i++)
			snprintf(wake_id + 2 * i, 3, "%02x", id[i]);
	}
	Assert(prefixlen <= REDLOCK_MAX_PREFIX_LEN);
	memcpy(out, prefix, prefixlen);
	snprintf(out + prefixlen, REDIS_CHANNEL_LEN - prefixlen, "%s%s",
			 REDLOCK_WAKE_CHANNEL_INFIX, wake_id);
}

/*
 * RedisRedissonChannel: write the channel Redisson's RLock announces the
 * unlock of "rkey" on to out (REDIS_KEY_CHANNEL_LEN bytes).
 */
void
RedisRedissonChannel(const char *rkey, char *out)
{
	Assert(strlen(rkey) <= REDLOCK_MAX_KEY_LEN);
	snprintf(out, REDIS_KEY_CHANNEL_LEN,
			 strchr(rkey, '{') ? "redisson_lock__channel:%s" :
			 "redisson_lock__channel:{%s}", rkey);
}

/*
 * RedisWakeWatch: count wake-ups for these Redis keys (nkeys of them, at
 * most REDLOCK_MAX_KEYS) from now on, until called with none; with
 * "keychan" (not NULL), any message on that channel counts too.  Ending a
 * watch that had a key channel gives the channel up (the wait is over, by
 * its own end or by an ERROR: the abort callbacks end it too).  The keys
 * are copied.  Raises ERROR only when out of memory, before the watch
 * changes, and never when it ends a watch.
 */
void
RedisWakeWatch(const char *const *rkeys, int nkeys, const char *keychan)
{
	size_t		need = 0;
	size_t		at = 0;
	int			i;

	Assert(nkeys >= 0 && nkeys <= REDLOCK_MAX_KEYS);
	for (i = 0; i < nkeys; i++)
		need += strlen(rkeys[i]);
	if (need > watched_size)
	{
		char	   *buf = MemoryContextAlloc(RedlockContext, need);

		if (watched_keys != NULL)
			pfree(watched_keys);
		watched_keys = buf;
		watched_size = need;
	}
	if (watched_keychan[0] != '\0')
		unsubscribe_keys();
	nwatched = 0;
	watched_keychan[0] = '\0';
	if (nkeys > 0 && keychan != NULL)
		strlcpy(watched_keychan, keychan, sizeof(watched_keychan));
	for (i = 0; i < nkeys; i++)
	{
		watched_lens[i] = strlen(rkeys[i]);
		Assert(watched_lens[i] <= REDLOCK_MAX_KEY_LEN);
		memcpy(watched_keys + at, rkeys[i], watched_lens[i]);
		at += watched_lens[i];
	}
	nwatched = nkeys;
}

/*
 * watched: whether a message's payload is "skip" (skiplen bytes) followed
 * by one of the watched keys.
 */
static bool
watched(const redisReply *payload, const char *skip, size_t skiplen)
{
	size_t		at = 0;
	int			i;

	if (payload->type != REDIS_REPLY_STRING || payload->len < skiplen ||
		memcmp(payload->str, skip, skiplen) != 0)
		return false;
	for (i = 0; i < nwatched; i++)
	{
		if (payload->len == skiplen + watched_lens[i] &&
			memcmp(payload->str + skiplen, watched_keys + at, watched_lens[i]) == 0)
			return true;
		at += watched_lens[i];
	}
	return false;
}

/* RedisWakeCount: how many wake-ups for the watched key arrived so far. */
uint64
RedisWakeCount(void)
{
	return wake_count;
}

/* channel_index: where srv's subscription keeps "channel", or -1. */
static int
channel_index(const RedisServer *srv, const char *channel)
{
	int			i;

	for (i = 0; i < srv->sub_nchannels; i++)
		if (strcmp(srv->sub_channels[i], channel) == 0)
			return i;
	return -1;
}

/* RedisSubReady: whether srv's subscription has confirmed a channel. */
bool
RedisSubReady(const RedisServer *srv)
{
	int			i;

	if (srv->sub.state == REDIS_CONN_CLOSED)
		return false;
	for (i = 0; i < srv->sub_nchannels; i++)
		if (srv->sub_confirmed[i])
			return true;
	return false;
}

/* What a request on a subscription connection was, for its answer. */
#define SUBP_WAKE	0			/* SUBSCRIBE to a wake channel */
#define SUBP_KEY	1			/* SUBSCRIBE to the key channel */
#define SUBP_UNSUB	2			/* UNSUBSCRIBE from a key channel */

/*
 * sub_send: send a one-channel (UN)SUBSCRIBE on srv's subscription
 * connection and remember what it was: Redis answers requests in order, so
 * the oldest remembered one is what an answer (or an error) is about.
 * Returns false when the connection failed (and closed).
 */
static bool
sub_send(RedisServer *srv, int what, const char *channel)
{
	const char *argv[2];
	size_t		argvlen[2];

	argv[0] = what == SUBP_UNSUB ? "UNSUBSCRIBE" : "SUBSCRIBE";
	argvlen[0] = strlen(argv[0]);
	argv[1] = channel;
	argvlen[1] = strlen(channel);
	if (srv->sub_npending == REDIS_SUB_MAX_PENDING ||
		!RedisConnSendCommand(&srv->sub, 2, argv, argvlen))
	{
		RedisConnFail(&srv->sub, REDIS_FAIL_IO,
					  "too many unanswered subscription requests", false);
		return false;
	}
	srv->sub_pending[srv->sub_npending++] = (uint8) what;
	return true;
}

/*
 * sub_answered: the oldest request of srv's subscription connection got
 * its answer; returns what it was, or -1 when none was waiting.  *latest
 * says whether no later request of the same kind waits behind it.
 */
static int
sub_answered(RedisServer *srv, bool *latest)
{
	int			what;
	int			i;

	if (srv->sub_npending == 0)
		return -1;
	what = srv->sub_pending[0];
	srv->sub_npending--;
	memmove(srv->sub_pending, srv->sub_pending + 1, srv->sub_npending);
	*latest = true;
	for (i = 0; i < srv->sub_npending; i++)
		if (srv->sub_pending[i] == what)
			*latest = false;
	return what;
}

/*
 * RedisSubOnReply: a reply on a subscription connection (after its
 * handshake): a SUBSCRIBE or UNSUBSCRIBE confirmation, a message, or the
 * refusal of a key channel.  Anything else closes the connection.  Frees
 * the reply.
 */
void
RedisSubOnReply(RedisConn *conn, redisReply *r)
{
	RedisServer *srv = conn->server;
	bool		ok;
	bool		latest = false;

	ok = r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
		r->element[0]->type == REDIS_REPLY_STRING &&
		r->element[1]->type == REDIS_REPLY_STRING;
	if (ok && strcmp(r->element[0]->str, "message") == 0)
	{
		const char *channel = r->element[1]->str;
		redisReply *payload = r->element[2];
		bool		ours = channel_index(srv, channel) >= 0;
		bool		mark = ours &&
			watched(payload, REDIS_SKIP_MARK, REDIS_SKIP_MARK_LEN);
		bool		own_wake = ours && watched(payload, "", 0);
		bool		key_wake = !srv->sub_skip_next && nwatched > 0 &&
			watched_keychan[0] != '\0' &&
			strcmp(channel, watched_keychan) == 0 &&
			strcmp(channel, srv->sub_keychan) == 0;

		/* a mark is about the very next message only */
		srv->sub_skip_next = mark;
		if (own_wake || key_wake)
			wake_count++;
	}
	else if (ok && (strcmp(r->element[0]->str, "subscribe") == 0 ||
					strcmp(r->element[0]->str, "unsubscribe") == 0))
	{
		int			i = channel_index(srv, r->element[1]->str);

		(void) sub_answered(srv, &latest);
		if (strcmp(r->element[0]->str, "unsubscribe") == 0)
			;
		else if (i >= 0)
			srv->sub_confirmed[i] = true;
		else if (strcmp(srv->sub_keychan, r->element[1]->str) == 0)
		{
			/* a skip mark before this answer was for an earlier wait */
			srv->sub_keychan_answered = true;
			srv->sub_skip_next = false;
		}
	}
	else if (r->type == REDIS_REPLY_ERROR)
	{
		/*
		 * A refusal (an ACL).  Of a wake channel: the connection is of no
		 * use.  Of the key channel (no right to Redisson's channels): keep
		 * the connection, and with it the wake-ups of our own queue, and
		 * leave Redisson's unlocks to the fallback timer.  Of UNSUBSCRIBE:
		 * keep it, and stop asking (sub_drop_key).
		 */
		switch (sub_answered(srv, &latest))
		{
			case SUBP_KEY:
				if (latest)
					srv->sub_keychan_answered = true;
				ok = true;
				break;
			case SUBP_UNSUB:
				srv->sub_unsub_refused = true;
				srv->sub_stale++;
				ok = true;
				break;
			default:
				break;
		}
		if (ok)
			elog(DEBUG1, "redlock: %s refused a subscription request: %s",
				 srv->addr, r->str);
	}
	else
		ok = false;
	freeReplyObject(r);
	if (!ok)
		RedisConnFail(conn, REDIS_FAIL_PROTOCOL,
					  "unexpected reply on the subscription connection", false);
}

/*
 * sub_ask: make srv's subscription connection ask for "channel": open it
 * if needed (not while the server is in backoff), replace it if it was
 * opened under other credentials, knows too many channels (or, with an
 * ACL without UNSUBSCRIBE, too many key channels it could not give up), or
 * could not connect in time, and queue the SUBSCRIBE.  Failures leave it
 * closed.
 */
static void
sub_ask(RedisServer *srv, const char *channel, int64 now)
{
	RedisConn  *sub = &srv->sub;

	/*
	 * A connect that never finished (a host that drops packets) is dropped;
	 * a silent sentinel is given up for the next one.
	 */
	if (!RedisConnResolveTimedOut(sub, now) &&
		sub->state == REDIS_CONN_CONNECTING && now >= sub->connect_deadline)
		RedisConnClose(sub);
	if (channel_index(srv, channel) >= 0 && sub->state != REDIS_CONN_CLOSED &&
		!RedisConnStale(sub) && srv->sub_stale < REDIS_SUB_MAX_CHANNELS)
		return;
	if (RedisConnStale(sub) ||
		(sub->state != REDIS_CONN_CLOSED &&
		 (srv->sub_nchannels == REDIS_SUB_MAX_CHANNELS ||
		  srv->sub_stale >= REDIS_SUB_MAX_CHANNELS)))
		RedisConnClose(sub);
	if (sub->state == REDIS_CONN_CLOSED)
	{
		if (!RedisServerMayConnect(srv, now) || !RedisConnOpen(sub, now))
			return;
	}
	if (!sub_send(srv, SUBP_WAKE, channel))
		return;
	strlcpy(srv->sub_channels[srv->sub_nchannels], channel, REDIS_CHANNEL_LEN);
	srv->sub_confirmed[srv->sub_nchannels] = false;
	srv->sub_nchannels++;
	RedisConnFlush(sub);
}

/*
 * sub_drop_key: queue the UNSUBSCRIBE of srv's key channel, if it has one,
 * and forget it.  Under an ACL that refused UNSUBSCRIBE before, the
 * channel is left subscribed and counted instead (sub_ask replaces the
 * connection once there are too many); its messages no longer count.
 * Returns false when the connection failed (and closed).
 */
static bool
sub_drop_key(RedisServer *srv)
{
	if (srv->sub_keychan[0] == '\0')
		return true;
	if (srv->sub_unsub_refused)
		srv->sub_stale++;
	else if (!sub_send(srv, SUBP_UNSUB, srv->sub_keychan))
		return false;
	srv->sub_keychan[0] = '\0';
	return true;
}

/*
 * unsubscribe_keys: give up the key channel on every server that has one,
 * without waiting for the answers: an idle backend must not collect every
 * unlock message of the last key it waited for.  Raises nothing.
 */
static void
unsubscribe_keys(void)
{
	int			n;
	RedisServer **srvs = RedisServers(&n);
	int			i;

	for (i = 0; i < n; i++)
		if (srvs[i]->sub.state != REDIS_CONN_CLOSED &&
			srvs[i]->sub_keychan[0] != '\0' && sub_drop_key(srvs[i]))
			RedisConnFlush(&srvs[i]->sub);
}

/*
 * sub_ask_key: make srv's subscription connection, open and asked for
 * this backend's wake channel already, ask for "keychan" as its one key
 * channel, in place of the one it had.
 */
static void
sub_ask_key(RedisServer *srv, const char *keychan)
{
	RedisConn  *sub = &srv->sub;

	if (sub->state == REDIS_CONN_CLOSED ||
		strcmp(srv->sub_keychan, keychan) == 0)
		return;
	if (!sub_drop_key(srv) || !sub_send(srv, SUBP_KEY, keychan))
		return;
	strlcpy(srv->sub_keychan, keychan, sizeof(srv->sub_keychan));
	srv->sub_keychan_answered = false;
	RedisConnFlush(sub);
}

/*
 * RedisSubscribe: make sure this backend is subscribed to "channel" (and
 * "keychan" if not NULL) on each of "srvs", waiting until deadline
 * (monotonic us) at most for the confirmations.  A server that cannot be
 * subscribed to is left to the fallback timer.  Raises only what CHECK_FOR_INTERRUPTS raises, and
 * ERROR when the wait set cannot be built.
 */
void
RedisSubscribe(RedisServer **srvs, int n, const char *channel,
			   const char *keychan, int64 deadline)
{
	int64		now = RedlockNowUs();
	int			i;

	for (i = 0; i < n; i++)
	{
		sub_ask(srvs[i], channel, now);
		if (keychan != NULL)
			sub_ask_key(srvs[i], keychan);
	}

	for (;;)
	{
		bool		pending = false;

		now = RedlockNowUs();
		for (i = 0; i < n; i++)
		{
			RedisServer *srv = srvs[i];
			int			k = channel_index(srv, channel);

			if (srv->sub.state != REDIS_CONN_CLOSED && k >= 0 &&
				!srv->sub_confirmed[k])
				pending = true;
			if (keychan != NULL && srv->sub.state != REDIS_CONN_CLOSED &&
				strcmp(srv->sub_keychan, keychan) == 0 &&
				!srv->sub_keychan_answered)
				pending = true;
		}
		if (!pending || now >= deadline)
			return;
		(void) RedisWaitRound((long) ((deadline - now + 999) / 1000), false);
	}
}

/*
 * RedisWaitWake: wait until a wake-up for the watched key arrives (one
 * counted after "seen", a RedisWakeCount() taken before the last attempt,
 * so that none sent meanwhile is missed) or the deadline (monotonic us)
 * passes.  Answers to earlier requests are drained meanwhile.  Returns
 * true when woken.  Raises what CHECK_FOR_INTERRUPTS raises (cancel,
 * statement_timeout, termination).
 */
bool
RedisWaitWake(uint64 seen, int64 deadline)
{
	for (;;)
	{
		int64		now = RedlockNowUs();

		if (wake_count != seen)
			return true;
		if (now >= deadline)
			return false;
		(void) RedisWaitRound((long) ((deadline - now + 999) / 1000), false);
	}
}
