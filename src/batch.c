/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  A batch: script calls sent to several Redis servers at once, whose
 *	  answers are collected in one wait until they are all in, the caller
 *	  has what it needs, or time is up.
 *
 * A batch is an explicit object (RedisBatch) owned by its caller, whose
 * calls live as long as RedisRun runs.  A server's command connection
 * joins the batch when the first of its calls is seen (batch_join) and
 * leaves it when RedisRun returns, however it returns: an ERROR thrown by
 * CHECK_FOR_INTERRUPTS included (PG_FINALLY).  Leaving turns the calls it
 * still waits for into replies to skip, so nothing refers to the caller's
 * calls once RedisRun is over, and the replies, when they come, are
 * matched to nobody (see conn.c, "Reply accounting").
 *
 * Time.  Each server gets timeout_ms from the start of the batch (after
 * its connect, if it needed one, which has redlock.connect_timeout of its
 * own): a frozen server costs at most one timeout per batch, not one per
 * call, and calls to it fail as timed out.  The batch's own deadline (the
 * wait limit of an acquire) ends everything at once: calls then stay
 * WAITING, for the caller to count as unanswered.  A batch run from a
 * callback lasts at most REDLOCK_CALLBACK_MAX_WAIT_MS.
 *
 * Callbacks.  In COMMIT and ABORT (no_connect), a batch opens no
 * connection (and so needs no new socket in the wait set): a server whose
 * connection is closed fails its calls at once, and the lock's TTL ends
 * the lock.  A connection that is still connecting or in its handshake is
 * used: its calls are written when the handshake succeeds, and awaited.
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "redlock.h"

#define MAX_OWED			1024	/* a server this far behind is dropped */

/*
 * RedisCallInit: start describing a call of "script" on "server".
 *
 * The arguments (KEYS first, then ARGV) are added with RedisCallArg; they
 * must stay valid until RedisRun returns.
 */
void
RedisCallInit(RedisCall *call, RedisServer *server, RedisScript *script,
			  int tag)
{
	memset(call, 0, sizeof(*call));
	call->server = server;
	call->script = script;
	call->tag = tag;
}

/* RedisCallArg: append one binary-safe argument to a call. */
void
RedisCallArg(RedisCall *call, const char *arg, size_t len)
{
	Assert(call->nargs < REDIS_CALL_MAX_ARGS);
	call->args[call->nargs] = arg;
	call->arglens[call->nargs] = len;
	call->nargs++;
}

/* call_fail: mark a call failed, with a copy of the text. */
static void
call_fail(RedisCall *call, RedisFailure failure, const char *text)
{
	call->state = REDIS_CALL_FAILED;
	call->failure = failure;
	strlcpy(call->error, text, sizeof(call->error));
}

/*
 * connect_timeout_text: the text of a connect that ran out of time.  A TLS
 * handshake without an answer met a frozen server, or a plain port (which
 * waits for the end of a line that never comes): which one, we cannot tell.
 */
static void
connect_timeout_text(const RedisConn *conn, char *text, size_t len)
{
	if (conn->transport.handshaking)
		snprintf(text, len,
				 "no answer to the TLS handshake within %d ms (a frozen or unreachable server, or one that does not speak TLS on this port)",
				 redlock_connect_timeout);
	else
		snprintf(text, len, "could not connect within %d ms",
				 redlock_connect_timeout);
}

/*
 * batch_join: get a server's command connection ready for the batch: drop
 * one that stopped answering, replace one opened under credentials that
 * changed since (not in a callback: that connection still works, and a
 * commit should not depend on new credentials), take what has arrived of
 * earlier replies, open one if needed and allowed, and note whether it is
 * behind (still owes replies to earlier requests: the handshake's do not
 * count) and when its calls time out.
 */
static void
batch_join(RedisConn *conn, const RedisBatch *b, int64 now, int64 cap)
{
	RedisServer *srv = conn->server;
	bool		existed;

	if (conn->state != REDIS_CONN_CLOSED && RedisConnOwed(conn) > MAX_OWED)
	{
		char		text[REDLOCK_ERROR_LEN];

		snprintf(text, sizeof(text),
				 "gave up on a connection with %d requests unanswered",
				 RedisConnOwed(conn));
		RedisConnFail(conn, REDIS_FAIL_TIMEOUT, text, false);
	}
	if (!b->in_callback && RedisConnStale(conn))
		RedisConnClose(conn);	/* what it still owes is lost with it */
	/* a sentinel entry: a switch-master notice first (conn.c) */
	(void) RedisSentinelWatch(srv, !b->in_callback);
	RedisConnDrain(conn);
	existed = conn->state != REDIS_CONN_CLOSED;
	if (!existed && !b->no_connect && RedisServerMayConnect(srv, now))
		(void) RedisConnOpen(conn, now);

	memset(&conn->batch, 0, sizeof(conn->batch));
	conn->batch.joined = true;
	conn->batch.no_connect = b->no_connect;
	conn->batch.may_retry = existed;
	conn->batch.behind = RedisConnOwed(conn) > 0;
	conn->batch.start = now;
	conn->batch.deadline_cap = cap;
	if (conn->state == REDIS_CONN_CONNECTING)
		conn->batch.deadline = Min(conn->connect_deadline, cap);
	else
		conn->batch.deadline = Min(now + (int64) b->timeout_ms * 1000, cap);
}

/*
 * batch_leave: the batch is over for this connection: what it still waits
 * for becomes replies to skip.
 */
static void
batch_leave(RedisConn *conn)
{
	RedisConnDetachCalls(conn, REDIS_FAIL_NONE, NULL);
	conn->batch.joined = false;
}

/*
 * conn_timeout: a connection's deadline passed with calls still waiting.
 * A connect that did not finish fails with backoff; an open connection is
 * kept, so that what we sent (and what we send later) is applied in order
 * if the server resumes, and its calls fail as timed out.
 */
static void
conn_timeout(RedisConn *conn, int timeout_ms)
{
	RedisServer *srv = conn->server;
	char		text[REDLOCK_ERROR_LEN];

	/* a silent sentinel: the next one is asked, its calls wait on */
	if (RedisConnResolveTimedOut(conn, RedlockNowUs()))
		return;
	if (conn->state == REDIS_CONN_CONNECTING)
	{
		connect_timeout_text(conn, text, sizeof(text));
		RedisConnFail(conn, REDIS_FAIL_CONNECT, text, true);
		return;
	}
	snprintf(text, sizeof(text), "no reply within %d ms", timeout_ms);
	RedisClusterNodeFailed(srv);	/* a silent node: its slots may have moved */
	srv->last_failure = REDIS_FAIL_TIMEOUT;
	strlcpy(srv->last_error, text, sizeof(srv->last_error));
	srv->last_error_at = GetCurrentTimestamp();
	RedisConnDetachCalls(conn, REDIS_FAIL_TIMEOUT, text);
}

/*
 * batch_waiting: whether any call of the batch still waits for an answer
 * (or is to be sent again: a cluster's redirection).
 */
static bool
batch_waiting(const RedisBatch *b)
{
	int			i;

	for (i = 0; i < b->ncalls; i++)
		if (b->calls[i].state == REDIS_CALL_WAITING ||
			b->calls[i].state == REDIS_CALL_REDIRECT)
			return true;
	return false;
}

/*
 * send_one: join the call's server and queue the call on its connection
 * (behind ASKING for an ASK redirection; a cluster node then learns the
 * slot map if it is wanted), or fail it at once when the server cannot be
 * asked.  The caller queues the WAIT and flushes.
 */
static void
send_one(RedisBatch *b, RedisCall *call, RedisServer *srv, int64 now, int64 cap)
{
	RedisConn  *conn = &srv->cmd;

	call->server = srv;
	call->state = REDIS_CALL_WAITING;
	call->failure = REDIS_FAIL_NONE;
	call->error[0] = '\0';
	call->nints = 0;
	call->textlen = 0;

	if (!conn->batch.joined)
		batch_join(conn, b, now, cap);
	if (conn->state != REDIS_CONN_CLOSED)
	{
		if (call->asking)
			RedisConnSendAsking(conn);
		RedisConnSendCall(conn, call);
		if (RedisClusterWantsMap(srv))
			RedisConnAskSlots(conn);
		return;
	}
	if (!RedisServerMayConnect(srv, now))
	{
		char		text[REDLOCK_ERROR_LEN];

		snprintf(text, sizeof(text), "not retried for %d ms after: %s",
				 (int) ((srv->retry_after - now + 999) / 1000),
				 srv->last_error);
		call_fail(call, REDIS_FAIL_BACKOFF, text);
	}
	else if (b->no_connect)
		call_fail(call, REDIS_FAIL_IO,
				  "not connected, and no connection is opened at commit or abort");
	else
		call_fail(call, srv->last_failure ? srv->last_failure : REDIS_FAIL_IO,
				  srv->last_error[0] ? srv->last_error : "not connected");
}

/*
 * send_calls: send each call to its server: for a cluster entry, to the
 * node that owns its first key's slot.
 */
static void
send_calls(RedisBatch *b, int64 now, int64 cap)
{
	int			i;

	for (i = 0; i < b->ncalls; i++)
	{
		RedisCall  *call = &b->calls[i];

		call->sent_at = now;
		send_one(b, call, RedisServerForKey(call->server, call->args[0],
											call->arglens[0]), now, cap);
	}
}

/*
 * resend_redirected: send again the calls a cluster redirected (MOVED,
 * ASK: to the node named; TRYAGAIN: to the same, once its pause is over),
 * at most CLUSTER_MAX_REDIRECTS times each.  Returns when the next
 * paused one is due (PG_INT64_MAX: none).
 */
static int64
resend_redirected(RedisBatch *b, int64 now, int64 cap)
{
	int64		next = PG_INT64_MAX;
	RedisServer **srvs;
	int			nsrvs;
	int			i;

	for (i = 0; i < b->ncalls; i++)
	{
		RedisCall  *call = &b->calls[i];

		if (call->state != REDIS_CALL_REDIRECT)
			continue;
		if (call->redirects >= CLUSTER_MAX_REDIRECTS)
		{
			char		text[REDLOCK_ERROR_LEN];

			snprintf(text, sizeof(text), "redirected %d times, last: %s",
					 call->redirects, call->error);
			call_fail(call, REDIS_FAIL_REPLY, text);
			continue;
		}
		if (call->resend_at != 0 &&
			now - call->sent_at >= (int64) b->timeout_ms * 1000)
		{
			char		text[REDLOCK_ERROR_LEN];

			snprintf(text, sizeof(text),
					 "its slot was still being migrated after %d ms (%s)",
					 b->timeout_ms, call->error);
			call_fail(call, REDIS_FAIL_TIMEOUT, text);
			continue;
		}
		if (call->resend_at > now)
		{
			next = Min(next, call->resend_at);
			continue;
		}
		if (call->resend_at == 0)
			call->redirects++;	/* TRYAGAIN is bounded by time instead */
		send_one(b, call, call->redirect_to, now, cap);
	}
	srvs = RedisServers(&nsrvs);
	for (i = 0; i < nsrvs; i++)
	{
		if (!srvs[i]->cmd.batch.joined)
			continue;
		RedisConnQueueWait(&srvs[i]->cmd);
		RedisConnFlush(&srvs[i]->cmd);
	}
	return next;
}

/*
 * wait_for_answers: collect answers until every call has one, "settled"
 * says the caller has enough, or time is up.
 */
static void
wait_for_answers(RedisBatch *b, int64 cap)
{
	RedisServer **srvs;
	int			nsrvs;
	int			i;

	for (;;)
	{
		int64		now;
		int64		next_deadline;

		if (!batch_waiting(b))
			break;
		now = RedlockNowUs();
		next_deadline = resend_redirected(b, now, cap == 0 ? PG_INT64_MAX : cap);
		if (b->settled && b->settled(b->calls, b->ncalls, b->arg))
			break;

		if (cap != 0 && now >= cap)
			break;				/* the batch's own end: calls stay WAITING */
		srvs = RedisServers(&nsrvs);	/* redirections may have added nodes */
		for (i = 0; i < nsrvs; i++)
		{
			RedisConn  *conn = &srvs[i]->cmd;

			/* calls owed a reply, or a WAIT's answer (replica_ack) */
			if (!conn->batch.joined || conn->nwaiting + conn->nacks == 0)
				continue;
			/* when the postmaster is gone, give up at once: TTLs do the rest */
			if (RedisPostmasterGone())
			{
				conn_timeout(conn, b->timeout_ms);
				continue;
			}
			if (now >= conn->batch.deadline)
				conn_timeout(conn, b->timeout_ms);
			/* a silent sentinel given up: the next one has a deadline of its own */
			if (conn->batch.joined && conn->nwaiting + conn->nacks > 0 &&
				now < conn->batch.deadline)
				next_deadline = Min(next_deadline, conn->batch.deadline);
		}
		if (next_deadline == PG_INT64_MAX)
			break;				/* everything failed or timed out */

		if (!RedisWaitRound((long) ((next_deadline - now + 999) / 1000),
							b->in_callback))
			break;

		/* a NOSCRIPT re-send, or a handshake just done, may have queued output */
		srvs = RedisServers(&nsrvs);
		for (i = 0; i < nsrvs; i++)
			if (srvs[i]->cmd.batch.joined)
				RedisConnFlush(&srvs[i]->cmd);
	}
}

/*
 * batch_end: when the batch as a whole ends (monotonic us; PG_INT64_MAX
 * for never): its own deadline, and at most REDLOCK_CALLBACK_MAX_WAIT_MS
 * from its start in a callback.
 */
static int64
batch_end(const RedisBatch *b, int64 start)
{
	int64		cap = b->deadline != 0 ? b->deadline : PG_INT64_MAX;

	if (b->in_callback)
		cap = Min(cap, start + (int64) REDLOCK_CALLBACK_MAX_WAIT_MS * 1000);
	return cap;
}

/* leave_all: every connection that joined the batch leaves it. */
static void
leave_all(void)
{
	RedisServer **srvs;
	int			nsrvs;
	int			i;

	srvs = RedisServers(&nsrvs);
	for (i = 0; i < nsrvs; i++)
		if (srvs[i]->cmd.batch.joined)
			batch_leave(&srvs[i]->cmd);
}

/*
 * prepare_watches: a sentinel entry whose command connection is about to
 * ask the sentinels (it is closed) gets its watch subscribed first (see
 * conn.c), so that no switch between the two goes unseen: once per
 * resolution, each sentinel within redlock.connect_timeout, the batch's
 * end at the latest.  A watch that cannot be had is retried in the
 * background later (RedisSentinelWatch's pause); the batch goes on.
 */
static void
prepare_watches(RedisBatch *b, int64 cap)
{
	RedisServer *want[REDLOCK_MAX_SERVERS];
	bool		opened[REDLOCK_MAX_SERVERS];
	int			nwant = 0;
	int			i;
	int			k;

	for (i = 0; i < b->ncalls && nwant < REDLOCK_MAX_SERVERS; i++)
	{
		RedisServer *srv = b->calls[i].server;

		/* one about to ask its sentinels (not one in backoff: it will not) */
		if (srv->kind != REDIS_KIND_SENTINEL || srv->cmd.state != REDIS_CONN_CLOSED ||
			!RedisServerMayConnect(srv, RedlockNowUs()))
			continue;
		for (k = 0; k < nwant && want[k] != srv; k++)
			;
		if (k == nwant)
		{
			opened[nwant] = false;
			want[nwant++] = srv;
		}
	}
	for (;;)
	{
		int64		now = RedlockNowUs();
		int64		next = cap;
		bool		waiting = false;

		for (k = 0; k < nwant; k++)
		{
			RedisServer *srv = want[k];

			/* each watch is opened once here, at most: one that fails is
			 * retried in the background */
			if (RedisSentinelWatch(srv, !opened[k] || srv->watch.state != REDIS_CONN_CLOSED))
				continue;
			opened[k] = true;
			if (srv->watch.state == REDIS_CONN_CLOSED)
				continue;		/* given up for now */
			waiting = true;
			next = Min(next, srv->watch.connect_deadline);
			RedisConnFlush(&srv->watch);
		}
		if (!waiting || now >= cap)
			return;
		if (next > now)
			(void) RedisWaitRound((long) ((next - now + 999) / 1000), false);
	}
}

/* batch_run: the body of RedisRun (apart, so that PG_TRY's frame stays small). */
pg_noinline static void
batch_run(RedisBatch *b)
{
	RedisServer **srvs;
	int64		start = RedlockNowUs();
	int64		cap = batch_end(b, start);
	int			nsrvs;
	int			i;

	/*
	 * A batch ended by FATAL (pg_terminate_backend) never left: proc_exit
	 * does not unwind.  Its calls are no longer waited for; the exit's own
	 * releases queue behind them.
	 */
	leave_all();
	RedisClusterNewBatch();

	/* connects that ran out of time in the background */
	srvs = RedisServers(&nsrvs);
	for (i = 0; i < nsrvs; i++)
	{
		RedisConn  *conn = &srvs[i]->cmd;

		if (RedisConnResolveTimedOut(conn, start))
			continue;
		if (conn->state == REDIS_CONN_CONNECTING &&
			start >= conn->connect_deadline)
		{
			char		text[REDLOCK_ERROR_LEN];

			connect_timeout_text(conn, text, sizeof(text));
			RedisConnFail(conn, REDIS_FAIL_CONNECT, text, true);
		}
	}

	RedisWaitSetReset();
	if (!b->in_callback)
	{
		prepare_watches(b, cap);
		start = RedlockNowUs();	/* the calls' time starts now */
	}
	send_calls(b, start, cap);
	srvs = RedisServers(&nsrvs);
	for (i = 0; i < nsrvs; i++)
	{
		if (!srvs[i]->cmd.batch.joined)
			continue;
		RedisConnQueueWait(&srvs[i]->cmd);	/* replica_ack: one per server */
		RedisConnFlush(&srvs[i]->cmd);
	}
	wait_for_answers(b, cap == PG_INT64_MAX ? 0 : cap);
}

/*
 * RedisRun: send every call of the batch to its server at once, then
 * collect answers.
 *
 * After each round of answers "settled" (if given) may end the batch
 * early; calls still waiting then keep REDIS_CALL_WAITING and their
 * replies are skipped later.  Every call ends DONE, FAILED or WAITING.
 * Raises only what CHECK_FOR_INTERRUPTS raises (when interrupts are not
 * held), and, outside callbacks, ERROR when the wait set cannot be built;
 * the connections leave the batch either way.
 */
void
RedisRun(RedisBatch *b)
{
	int			i;

	PG_TRY();
	{
		batch_run(b);
	}
	PG_CATCH();
	{
		leave_all();
		PG_RE_THROW();
	}
	PG_END_TRY();
	leave_all();
	/* a redirection the batch had no time to follow: unanswered */
	for (i = 0; i < b->ncalls; i++)
		if (b->calls[i].state == REDIS_CALL_REDIRECT)
			b->calls[i].state = REDIS_CALL_WAITING;
}

/*
 * RedisPrepareServers: before a commit, make sure each of "srvs" has a
 * command connection for the releases that COMMIT will send, and that the
 * wait set knows every socket: the commit callback opens nothing and must
 * not raise an ERROR.  A connection that has been idle for a while is
 * checked first (one non-blocking read): the server may have closed it
 * (its idle timeout, a restart) while the transaction ran.  Raises ERROR
 * only when the wait set cannot be built.
 */
void
RedisPrepareServers(RedisServer **srvs, int n)
{
	int64		now = RedlockNowUs();
	bool		resolving = false;
	int			i;

	for (i = 0; i < n; i++)
	{
		RedisConn  *conn = &srvs[i]->cmd;

		RedisConnCheckIdle(conn, now);
		/* a switch-master notice is acted on now, not at COMMIT */
		(void) RedisSentinelWatch(srvs[i], true);
		if (conn->state == REDIS_CONN_CLOSED && RedisServerMayConnect(srvs[i], now))
			(void) RedisConnOpen(conn, now);
		resolving |= conn->resolving;
	}

	/*
	 * A sentinel entry asks its sentinels now, until it has the master's
	 * socket: the callbacks open none.  Each sentinel has its connect
	 * timeout (RedisConnResolveTimedOut moves on to the next).
	 */
	while (resolving)
	{
		int64		next = PG_INT64_MAX;

		now = RedlockNowUs();
		resolving = false;
		for (i = 0; i < n; i++)
		{
			RedisConn  *conn = &srvs[i]->cmd;

			(void) RedisConnResolveTimedOut(conn, now);
			if (conn->resolving)
			{
				resolving = true;
				next = Min(next, conn->connect_deadline);
			}
		}
		if (resolving)
		{
			for (i = 0; i < n; i++)
				RedisConnFlush(&srvs[i]->cmd);
			(void) RedisWaitRound((long) ((next - now + 999) / 1000), false);
		}
	}
	RedisWaitSetPrepare();
}
