/*-------------------------------------------------------------------------
 *
 * keeper.c
 *	  The lease keeper: a background worker that renews the Redis locks of
 *	  live backends before they expire, so that a short TTL is enough for
 *	  long work and a crashed holder still frees its keys quickly.
 *
 * It runs when redlock is in shared_preload_libraries, and renews while
 * redlock.lease_keeper is on (reloadable).  Every KEEPER_TICK_MS it looks
 * at the cluster's lock table (shared.c) and renews each kept lock whose
 * last renewal (or acquisition) is a third of its TTL old: the same
 * owner-checked re-arm as redlock_extend(), on the lock's masters, reached
 * with the backend's own settings (its endpoint).  Renewals of all due
 * locks of one endpoint go in one batch.  Then, for each lock whose slot
 * still has the generation it read (the hold did not end meanwhile):
 *	  - re-armed on a quorum: its validity deadline moves on; the backend
 *		takes it in at its next call and at commit (RedlockSharedSync);
 *	  - found not ours (expired, taken over): marked lost and no longer
 *		kept; the backend warns at its next redlock call, and its commit
 *		fails with 40001, as without the keeper;
 *	  - not confirmed (masters slow or unreachable): tried again next
 *		tick; the backend's commit check judges what validity is left (it
 *		re-arms, or fails the commit), as without the keeper.
 * The keeper's re-arm never shortens a TTL (one landing after the
 * backend's own shorter re-arm lengthens it again, which is safe), and its
 * figures, by the backend's drift factor, count only until the backend
 * re-arms the lock itself (redlock_extend, the commit check: rearm_seq), so
 * the backend never believes in more validity than Redis gives.  It waits
 * at most KEEPER_MAX_WAIT_MS for one set of masters per tick, and renews
 * the sets whose masters answered last time first, so that a frozen one
 * does not starve the others.
 * A hold is renewed for at most redlock.max_lease (the backend's setting
 * when it took the lock, superuser-only): a backend that is alive but
 * stuck looks like a slow one, and this cap is what ends its hold.
 *
 * Why this is safe where client-side watchdogs are not: the keeper renews
 * only holds that are in the table, and a hold leaves the table when it
 * ends (release, abort, or the backend's exit: shared.c frees the slots of
 * an exiting backend); a backend that crashes takes the whole cluster
 * through a restart, which empties the table.  So the keeper never keeps a
 * lock whose holder is gone, and a lock it keeps is one a live backend
 * still holds.  A renewal that completes after the hold ended finds the
 * slot's generation changed and changes nothing; in Redis it is owner-
 * checked against a value no one else has, so it cannot touch a lock
 * someone else took meanwhile.
 *
 * Errors in a round (out of memory, a Redis reply it cannot parse) are
 * logged and the next tick starts afresh; SIGTERM ends the worker, and
 * the postmaster's death too.
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/wait_event.h"

#include "redlock.h"

#define KEEPER_TICK_MS		100 /* how often the table is looked at */
#define KEEPER_IDLE_TICK_MS	1000	/* the same, with redlock.lease_keeper off */
#define KEEPER_MAX_WAIT_MS	500 /* longest wait for one set of masters */

PGDLLEXPORT void redlock_keeper_main(Datum arg);

/* A lock due for renewal, copied out of its slot. */
typedef struct DueLock
{
	int			slot;
	uint32		generation;
	uint32		rearm_seq;
	double		drift_factor;	/* the backend's */
	int			endpoint;
	RedlockLock lock;
} DueLock;

/*
 * RedlockKeeperInit: from _PG_init.  When the library is being preloaded,
 * register the keeper with the postmaster.
 */
void
RedlockKeeperInit(void)
{
	BackgroundWorker worker = {0};

	if (!process_shared_preload_libraries_in_progress)
		return;
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS;
	worker.bgw_start_time = BgWorkerStart_PostmasterStart;
	worker.bgw_restart_time = 1;
	strlcpy(worker.bgw_library_name, "redlock", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "redlock_keeper_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "redlock lease keeper", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "redlock lease keeper", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

/*
 * collect_due: copy out the kept locks due for renewal at "now" (not past
 * their lease), and the settings of their endpoints (into *endpoints,
 * palloc'd).  Returns how many are due (in *due, palloc'd).
 */
static int
collect_due(int64 now, DueLock **due, RedlockEndpoint **endpoints)
{
	LWLock	   *lock;
	int			nslots;
	RedlockSlot *slots = RedlockSharedSlots(&nslots, &lock);
	int			n = 0;
	int			max = 16;
	int			i;

	*due = palloc(sizeof(DueLock) * max);
	*endpoints = palloc0(sizeof(RedlockEndpoint) * REDLOCK_MAX_ENDPOINTS);
	LWLockAcquire(lock, LW_SHARED);
	for (i = 0; i < nslots; i++)
	{
		RedlockSlot *s = &slots[i];
		DueLock    *d;

		if (!s->in_use || s->state != REDLOCK_SLOT_HELD || !s->kept || s->lost)
			continue;
		if (s->lease_end_us != 0 && now >= s->lease_end_us)
			continue;			/* its lease is over: it runs out now */
		if (now < s->renewed_us + (int64) s->ttl_ms * 1000 / 3)
			continue;
		if (n == max)
		{
			max *= 2;
			*due = repalloc(*due, sizeof(DueLock) * max);
		}
		d = &(*due)[n++];
		memset(d, 0, sizeof(DueLock));
		d->slot = i;
		d->generation = s->generation;
		d->rearm_seq = s->rearm_seq;
		d->drift_factor = s->drift_factor;
		d->endpoint = s->endpoint;
		d->lock.rkey = pnstrdup(s->rkey, s->rkeylen);
		d->lock.rkeylen = s->rkeylen;
		d->lock.key = d->lock.rkey + s->keyoff;
		d->lock.redisson = s->redisson;
		d->lock.shared = s->shared;
		memcpy(d->lock.owner, s->owner, s->ownerlen);
		d->lock.ownerlen = s->ownerlen;
		d->lock.ttl_ms = s->ttl_ms;
		d->lock.slot = -1;
		if ((*endpoints)[s->endpoint].users == 0)	/* not copied yet */
			memcpy(&(*endpoints)[s->endpoint], RedlockSharedEndpoint(s->endpoint),
				   sizeof(RedlockEndpoint));
	}
	LWLockRelease(lock);
	return n;
}

/*
 * endpoint_servers_len: the length of the first setting of an endpoint's
 * description, redlock.servers (name, NUL, value, NUL).
 */
static int
endpoint_servers_len(const RedlockEndpoint *ep)
{
	const char *name = ep->settings;
	const char *value = name + strlen(name) + 1;

	return (int) (value + strlen(value) + 1 - name);
}

/*
 * renew_group: renew the due locks of the endpoints in "group" (which
 * differ in their server lists only: the same credentials and TLS files)
 * in one batch, so that they wait for their masters together, and write
 * the outcomes back to their slots.  Returns whether some of them went
 * unconfirmed (masters slow or away).
 */
static bool
renew_group(DueLock *due, int ndue, const bool *group, const RedlockEndpoint *eps)
{
	bool		slow = false;
	const RedlockServerList *list;
	RedlockLock **locks = palloc(sizeof(RedlockLock *) * ndue);
	int		   *ttls = palloc(sizeof(int) * ndue);
	RedlockExtendResult *results = palloc(sizeof(RedlockExtendResult) * ndue);
	RedlockTally *tallies = palloc(sizeof(RedlockTally) * ndue);
	int		   *which = palloc(sizeof(int) * ndue);
	LWLock	   *lwlock;
	int			nslots;
	RedlockSlot *slots;
	int64		start;
	int			n = 0;
	int			ep;
	int			i;
	int			j;

	/* the group's credentials and TLS files, then each one's server list */
	for (ep = 0; !group[ep]; ep++)
		;
	RedlockSharedApplyEndpoint(eps[ep].settings, eps[ep].len);
	/* one slow set of masters must not hold up the others' renewals */
	redlock_connect_timeout = Min(redlock_connect_timeout, KEEPER_MAX_WAIT_MS);
	redlock_command_timeout = Min(redlock_command_timeout, KEEPER_MAX_WAIT_MS);
	for (; ep < REDLOCK_MAX_ENDPOINTS; ep++)
	{
		if (!group[ep])
			continue;
		RedlockSharedApplyEndpoint(eps[ep].settings, endpoint_servers_len(&eps[ep]));
		list = RedlockConfiguredServers();
		for (i = 0; i < ndue; i++)
		{
			RedlockLock *l = &due[i].lock;

			if (due[i].endpoint != ep)
				continue;
			l->nservers = list->nservers;
			for (j = 0; j < list->nservers; j++)
				l->servers[j] = RedisServerForSpec(&list->servers[j]);
			l->granted = list->nservers >= 32 ? ~(uint32) 0 :
				((uint32) 1 << list->nservers) - 1;
			locks[n] = l;
			ttls[n] = l->ttl_ms;
			which[n] = i;
			n++;
		}
	}
	if (n == 0)
		return false;

	start = RedlockNowUs();
	RedlockExtendMany(locks, n, ttls, true, results, tallies);

	slots = RedlockSharedSlots(&nslots, &lwlock);
	LWLockAcquire(lwlock, LW_EXCLUSIVE);
	for (i = 0; i < n; i++)
	{
		DueLock    *d = &due[which[i]];
		RedlockSlot *s = &slots[d->slot];

		if (!s->in_use || s->generation != d->generation ||
			s->rearm_seq != d->rearm_seq)
			continue;			/* the hold ended, or the backend re-armed it */
		switch (results[i])
		{
			case REDLOCK_EXTENDED:
				{
					/* validity by the backend's drift factor, not ours */
					int64		until = RedlockValidUntilDrift(start, d->lock.ttl_ms,
															   d->drift_factor);

					if (s->kept_seq != s->rearm_seq || until > s->kept_until_us)
						s->kept_until_us = until;
					s->kept_seq = s->rearm_seq;
					s->renewed_us = start;
					s->renewals++;
					break;
				}
			case REDLOCK_EXTEND_LOST:
				if (!tallies[i].validity_lost)
				{
					RedlockSharedMarkLost(s);
					break;
				}
				/* ours, but the answer came too late to count: slow */
				slow = true;
				break;
			case REDLOCK_EXTEND_UNCONFIRMED:
				slow = true;	/* tried again next tick; the backend's
								 * commit check judges what is left */
				break;
		}
	}
	LWLockRelease(lwlock);
	return slow;
}

/* keeper_round: renew every lock that is due. */
static void
keeper_round(void)
{
	static bool slow[REDLOCK_MAX_ENDPOINTS];	/* unconfirmed last time */
	DueLock    *due;
	RedlockEndpoint *eps;
	int			ndue = collect_due(RedlockNowUs(), &due, &eps);
	bool		done[REDLOCK_MAX_ENDPOINTS] = {0};
	int			pass;
	int			ep;
	int			other;

	if (ndue == 0)
		return;

	/*
	 * Endpoints that differ only in their server lists go in one batch;
	 * groups whose masters answered last time go first, slow ones after.
	 */
	for (pass = 0; pass < 2; pass++)
		for (ep = 0; ep < REDLOCK_MAX_ENDPOINTS; ep++)
		{
			bool		group[REDLOCK_MAX_ENDPOINTS] = {0};
			bool		was_slow;
			int			len;

			if (eps[ep].users == 0 || done[ep] || slow[ep] != (pass == 1))
				continue;
			len = endpoint_servers_len(&eps[ep]);
			for (other = ep; other < REDLOCK_MAX_ENDPOINTS; other++)
			{
				int			olen;

				if (eps[other].users == 0 || done[other])
					continue;
				olen = endpoint_servers_len(&eps[other]);
				if (eps[other].len - olen == eps[ep].len - len &&
					memcmp(eps[other].settings + olen, eps[ep].settings + len,
						   eps[ep].len - len) == 0)
					group[other] = done[other] = true;
			}
			was_slow = renew_group(due, ndue, group, eps);
			for (other = ep; other < REDLOCK_MAX_ENDPOINTS; other++)
				if (group[other])
					slow[other] = was_slow;
		}
}

/*
 * redlock_keeper_main: the worker's body.  Never returns; exits on SIGTERM
 * or when the postmaster dies.
 */
void
redlock_keeper_main(Datum arg)
{
	MemoryContext round_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* OpenSSL's hashes (the scripts' SHA1, TLS) belong to a resource owner */
	CurrentResourceOwner = ResourceOwnerCreate(NULL, "redlock lease keeper");
	round_cxt = AllocSetContextCreate(TopMemoryContext, "redlock keeper round",
									  ALLOCSET_DEFAULT_SIZES);
	RedlockPrepareScripts();
	for (;;)
	{
		RedlockSharedKeeperBeat();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 redlock_lease_keeper ? KEEPER_TICK_MS : KEEPER_IDLE_TICK_MS,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (!redlock_lease_keeper)
			continue;

		MemoryContextSwitchTo(round_cxt);
		PG_TRY();
		{
			keeper_round();
		}
		PG_CATCH();
		{
			EmitErrorReport();
			FlushErrorState();
			LWLockReleaseAll();
			/* what the round left with its resource owner (hash contexts) */
			ResourceOwnerRelease(CurrentResourceOwner,
								 RESOURCE_RELEASE_BEFORE_LOCKS, false, true);
			ResourceOwnerRelease(CurrentResourceOwner,
								 RESOURCE_RELEASE_LOCKS, false, true);
			ResourceOwnerRelease(CurrentResourceOwner,
								 RESOURCE_RELEASE_AFTER_LOCKS, false, true);
		}
		PG_END_TRY();
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(round_cxt);
	}
}
