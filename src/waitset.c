/*-------------------------------------------------------------------------
 *
 * waitset.c
 *	  The backend's WaitEventSet over every open Redis connection, and one
 *	  round of waiting on it.
 *
 * One set per backend holds the latch, postmaster death and the socket of
 * every open connection (command and subscription).  PostgreSQL 15 cannot
 * take a socket out of a set, so the set is rebuilt when a socket opens or
 * closes; opened and closed sockets are counted apart because they matter
 * differently:
 *	  - A socket opened since the set was built is not in it: the set must
 *		be rebuilt before waiting, or that socket is never heard.
 *	  - A socket closed since is harmless: the kernel drops a closed socket
 *		from the epoll set by itself, and we never touch its old entry again
 *		(a closed connection has wes_pos = -1).
 * Rebuilding allocates and makes system calls, either of which may raise
 * an ERROR.  Commit and abort callbacks must not raise one (after the
 * commit record an ERROR ends in PANIC), so there (in_callback) a set
 * stale only by closes is used as it is, and one that lacks a new socket is
 * rebuilt under PG_TRY: if that fails, the round does not wait, the
 * failure becomes a WARNING, and the batch gives up (the locks' TTLs are
 * the backstop).  The commit path rebuilds the set beforehand, in
 * PRE_COMMIT, where an ERROR is still allowed (RedisWaitSetPrepare), and
 * commit and abort callbacks never open sockets.
 *
 * Interrupts.  The latch is serviced with ResetLatch and
 * CHECK_FOR_INTERRUPTS, so cancel, statement_timeout, lock_timeout's
 * siblings and pg_terminate_backend end a wait outside callbacks; with
 * interrupts held, only deadlines and postmaster death end it.
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/wait_event.h"

#include "redlock.h"

#define MAX_WAIT_EVENTS		16

static WaitEventSet *wait_set = NULL;
static WaitEventSet *wait_set_building = NULL;	/* until it is complete */

/* sockets opened and closed so far, and as the set knows them */
static uint64 opened = 1;
static uint64 closed = 1;
static uint64 set_opened = 0;
static uint64 set_closed = 0;

static bool postmaster_gone = false;

/*
 * RedisWaitSetChanged: a connection opened (true) or closed (false) its
 * socket.
 */
void
RedisWaitSetChanged(bool was_opened)
{
	if (was_opened)
		opened++;
	else
		closed++;
}

/*
 * conn_at: connection number i of CONNS_PER_SERVER * nsrvs: each server's
 * command connection, its subscription connection, and (sentinel entries)
 * its watch on the sentinels, in server order.
 */
#define CONNS_PER_SERVER	3

static RedisConn *
conn_at(RedisServer **srvs, int i)
{
	RedisServer *srv = srvs[i / CONNS_PER_SERVER];

	switch (i % CONNS_PER_SERVER)
	{
		case 0:
			return &srv->cmd;
		case 1:
			return &srv->sub;
		default:
			return &srv->watch;
	}
}

/*
 * build: a new set for the sockets open now.  Raises ERROR if memory, the
 * kernel's epoll or file descriptors run out; the old set then stays.
 */
static void
build(void)
{
	RedisServer **srvs;
	RedisConn  *conn;
	int			nsrvs;
	int			nsockets = 0;
	int		   *positions;
	int			n;
	int			i;

	/* a set left half-built by an ERROR (outside callbacks) */
	if (wait_set_building)
	{
		FreeWaitEventSet(wait_set_building);
		wait_set_building = NULL;
	}
	srvs = RedisServers(&nsrvs);
	for (i = 0; i < CONNS_PER_SERVER * nsrvs; i++)
		if (conn_at(srvs, i)->state != REDIS_CONN_CLOSED)
			nsockets++;

	positions = palloc(sizeof(int) * Max(nsockets, 1));
	wait_set_building = CreateWaitEventSet(RedlockContext, 2 + nsockets);
	AddWaitEventToSet(wait_set_building, WL_LATCH_SET, PGINVALID_SOCKET,
					  MyLatch, NULL);
	if (IsUnderPostmaster)
		AddWaitEventToSet(wait_set_building, WL_POSTMASTER_DEATH,
						  PGINVALID_SOCKET, NULL, NULL);
	n = 0;
	for (i = 0; i < CONNS_PER_SERVER * nsrvs; i++)
	{
		conn = conn_at(srvs, i);
		if (conn->state != REDIS_CONN_CLOSED)
			positions[n++] = AddWaitEventToSet(wait_set_building,
											   RedisConnEvents(conn),
											   conn->transport.fd, NULL, conn);
	}

	/* complete: only now do connections learn their new positions */
	if (wait_set)
		FreeWaitEventSet(wait_set);
	wait_set = wait_set_building;
	wait_set_building = NULL;
	n = 0;
	for (i = 0; i < CONNS_PER_SERVER * nsrvs; i++)
	{
		conn = conn_at(srvs, i);
		if (conn->state == REDIS_CONN_CLOSED)
			conn->wes_pos = -1;
		else
		{
			conn->wes_pos = positions[n++];
			conn->wes_events = RedisConnEvents(conn);
		}
	}
	pfree(positions);
	set_opened = opened;
	set_closed = closed;
}

/*
 * build_in_callback: build, turning an ERROR into a WARNING.  Returns
 * false when the set could not be built.  Not for proc exit, where
 * PostgreSQL turns any ERROR into FATAL before a handler could catch it.
 */
static bool
build_in_callback(void)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	RedlockHoldoff holdoff = RedlockHoldoffSave();
	volatile bool ok = true;

	PG_TRY();
	{
		build();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		RedlockHoldoffRestore(holdoff);
		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		if (wait_set_building)
		{
			FreeWaitEventSet(wait_set_building);
			wait_set_building = NULL;
		}
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("could not wait for Redis servers: %s", edata->message),
				 errdetail("Locks not released now expire on their own within their TTL.")));
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/*
 * RedisWaitSetPrepare: bring the set up to date now, where an ERROR is
 * still allowed (before a commit), so that callbacks find it ready.
 */
void
RedisWaitSetPrepare(void)
{
	if (wait_set == NULL || set_opened != opened || set_closed != closed)
		build();
}

/* RedisPostmasterGone: whether a wait with interrupts held saw it die. */
bool
RedisPostmasterGone(void)
{
	return postmaster_gone;
}

/*
 * RedisWaitRound: wait at most timeout_ms for anything, and handle what
 * came: connections' sockets (connects, replies, room to write), the
 * latch, postmaster death (exits, or, with interrupts held, is noted so
 * that callers stop waiting).
 *
 * Returns false, without waiting, only in a callback whose wait set could
 * not be rebuilt.  Raises what CHECK_FOR_INTERRUPTS raises when interrupts
 * are not held, and (outside callbacks) ERROR when the set cannot be built.
 */
bool
RedisWaitRound(long timeout_ms, bool in_callback)
{
	WaitEvent	events[MAX_WAIT_EVENTS];
	uint32		serials[MAX_WAIT_EVENTS];
	RedisServer **srvs;
	RedisConn  *conn;
	int			nsrvs;
	int			nevents;
	int			i;

	if (wait_set == NULL || set_opened != opened ||
		(!in_callback && set_closed != closed))
	{
		if (!in_callback)
			build();
		else if (!build_in_callback())
			return false;
	}

	srvs = RedisServers(&nsrvs);
	for (i = 0; i < CONNS_PER_SERVER * nsrvs; i++)
	{
		uint32		ev;

		conn = conn_at(srvs, i);
		if (conn->state == REDIS_CONN_CLOSED || conn->wes_pos < 0)
			continue;
		ev = RedisConnEvents(conn);
		if (ev != conn->wes_events)
		{
			ModifyWaitEvent(wait_set, conn->wes_pos, ev, NULL);
			conn->wes_events = ev;
		}
	}

	nevents = WaitEventSetWait(wait_set, Max(timeout_ms, 0), events,
							   lengthof(events), PG_WAIT_EXTENSION);

	/*
	 * Servicing one connection may close or reopen another's socket (a
	 * failure, a reconnect), and a reopened socket may get the old
	 * descriptor number: events reported for a socket that has changed
	 * since are dropped (the set reports what is still pending next round).
	 */
	for (i = 0; i < nevents; i++)
	{
		conn = (RedisConn *) events[i].user_data;
		serials[i] = conn ? conn->serial : 0;
	}
	for (i = 0; i < nevents; i++)
	{
		WaitEvent  *ev = &events[i];

		if (ev->events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
			continue;
		}
		if (ev->events & WL_POSTMASTER_DEATH)
		{
			if (INTERRUPTS_CAN_BE_PROCESSED())
				proc_exit(1);
			postmaster_gone = true;
			continue;
		}
		conn = (RedisConn *) ev->user_data;
		if (conn == NULL || conn->state == REDIS_CONN_CLOSED ||
			conn->serial != serials[i] || conn->wes_pos != ev->pos)
			continue;
		RedisConnService(conn, ev->events);
	}
	return true;
}

/*
 * RedisWaitSetReset: the postmaster-death note starts afresh for a batch.
 */
void
RedisWaitSetReset(void)
{
	postmaster_gone = false;
}
