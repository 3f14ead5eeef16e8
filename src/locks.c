/*-------------------------------------------------------------------------
 *
 * locks.c
 *	  This backend's table of Redis locks, and what happens to them at
 *	  (sub)transaction end and when the backend exits.
 *
 * Holds.  A key is locked in Redis at most once per backend, however many
 * times it was acquired.  As with advisory locks, the two scopes are
 * counted apart: session-level acquisitions in session_count, transaction-
 * level ones per subtransaction in holds[].  The Redis lock is released
 * when both reach zero.  Re-acquiring a held key costs no round trip and
 * returns the same token (and does not extend the TTL), as long as the
 * lock is known to be ours: one past its validity is re-armed first (one
 * round trip), and one found lost is never handed out again.  A lost lock
 * with only session holds is taken afresh (new owner value, new token;
 * the holds carry over); one the transaction holds raises 40001, since
 * that transaction cannot commit anyway.
 *
 * Transaction end (see xact.c's CommitTransaction for the order):
 *	  PRE_COMMIT	the last point where the transaction can still abort.
 *					Every transaction-level lock must still be ours: one
 *					found lost, or one with less validity left than
 *					redlock.commit_margin that a quorum will not re-arm,
 *					fails the COMMIT (40001) so that none of the work done
 *					under it becomes visible.  A lock whose masters no
 *					longer hold its grant on a quorum of open connections
 *					(RedlockLockInDoubt: one may have restarted without
 *					its data) counts as under the margin, whatever its TTL
 *					says.  Locks under the margin are
 *					re-armed in one batch, and every lock is then checked
 *					again against a fresh clock, until all have the margin.
 *					The connections the release will use are made ready
 *					here, where an ERROR is still allowed.  If the commit
 *					releases locks, it is made durable first
 *					(ForceSyncCommit), even under synchronous_commit = off.
 *	  COMMIT_SUB	the subtransaction's holds move to its parent.
 *	  ABORT_SUB		its holds are dropped; keys left without holds are
 *					released (ROLLBACK TO SAVEPOINT, a PL/pgSQL exception).
 *	  COMMIT		released in XACT_EVENT_COMMIT, which PostgreSQL calls
 *					after the commit record is flushed and the transaction
 *					became visible to other sessions (ProcArrayEndTransaction),
 *					so whoever takes the lock next sees our writes.  The
 *					release is awaited before COMMIT returns to the client.
 *	  ABORT			released in XACT_EVENT_ABORT.
 *	  PRE_PREPARE	refused (0A000) while transaction-level locks are held:
 *					a prepared transaction ends without our callbacks.
 * In COMMIT, ABORT and ABORT_SUB interrupts are held, and after the commit
 * record an ERROR becomes a PANIC.  Releases there open no connection,
 * wait at most REDLOCK_CALLBACK_MAX_WAIT_MS, and any ERROR (out of memory)
 * is caught and becomes a WARNING; the lock's TTL is the backstop.
 *
 * Pending acquisitions.  An entry is created before its acquire is sent,
 * with pending_subid set to the current subtransaction.  If the acquire is
 * interrupted (cancel, statement_timeout, an error), that subtransaction's
 * abort releases the key on every master it was sent to, so a lock granted
 * after we stopped listening is not left behind.
 *
 * Entries leave the table before their release is sent: if the release is
 * interrupted, the table still only lists locks we hold.  What a release
 * in flight needs is copied out of RedlockContext first, so an interrupted
 * release leaks nothing that outlives the statement.
 *
 * Backend exit.  A before_shmem_exit callback, registered when the first
 * lock is taken, releases whatever is still held (session locks, and those
 * of a transaction cut short by pg_terminate_backend or a lost client).
 * Whether it runs before or after PostgreSQL aborts that transaction, the
 * transaction's writes never become visible, so releasing is safe.  It may
 * reconnect (a session's connection may have idled out long ago).
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/parallel.h"
#include "common/hashfn.h"
#include "common/pg_prng.h"
#include "datatype/timestamp.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "utils/hsearch.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "redlock.h"

#define INITIAL_HOLDS 4
#define COMMIT_CHECK_ROUNDS 3

static HTAB *lock_table = NULL;

static void report_unreachable(const RedlockTally *tally) pg_attribute_noreturn();
static bool exit_callback_registered = false;

/* hash and compare the Redis key a lock entry points to */
static uint32
lock_key_hash(const void *key, Size keysize)
{
	const char *s = *(const char *const *) key;

	return hash_bytes((const unsigned char *) s, (int) strlen(s));
}

static int
lock_key_match(const void *key1, const void *key2, Size keysize)
{
	return strcmp(*(const char *const *) key1, *(const char *const *) key2);
}

/*
 * lock_table_init: create the table on first use.  Keys are pointers to
 * strings in RedlockContext, so keys of any length cost only their size.
 */
static void
lock_table_init(void)
{
	HASHCTL		ctl;

	if (lock_table)
		return;
	ctl.keysize = sizeof(char *);
	ctl.entrysize = sizeof(RedlockLock);
	ctl.hash = lock_key_hash;
	ctl.match = lock_key_match;
	ctl.hcxt = RedlockContext;
	lock_table = hash_create("redlock locks", 64, &ctl,
							 HASH_ELEM | HASH_FUNCTION | HASH_COMPARE |
							 HASH_CONTEXT);
}

/*
 * redis_key: prefix || key, palloc'd.  Raises 22001 when it is longer than
 * REDLOCK_MAX_KEY_LEN.
 */
static char *
redis_key(const char *key)
{
	const char *prefix = redlock_key_prefix ? redlock_key_prefix : "";
	size_t		plen = strlen(prefix);
	size_t		klen = strlen(key);

	if (plen + klen > REDLOCK_MAX_KEY_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("lock key is too long"),
				 errdetail("The key is %zu bytes long with redlock.key_prefix; at most %d bytes are allowed.",
						   plen + klen, REDLOCK_MAX_KEY_LEN)));

	return psprintf("%s%s", prefix, key);
}

/* lock_lookup: the entry for a Redis key, or NULL. */
static RedlockLock *
lock_lookup(const char *rkey)
{
	if (lock_table == NULL)
		return NULL;
	return (RedlockLock *) hash_search(lock_table, &rkey, HASH_FIND, NULL);
}

/*
 * lock_forget: take an entry out of the table and return a copy for its
 * release.  The copy's key lives in the current memory context and the
 * entry's own memory is freed now, so a release that is interrupted
 * leaves nothing behind in RedlockContext.  Free the copy with
 * lock_free_copy.  Raises ERROR only when out of memory, before anything
 * changed.
 */
static RedlockLock
lock_forget(RedlockLock *lock)
{
	RedlockLock copy = *lock;
	char	   *rkey = pstrdup(lock->rkey);
	char	   *old_rkey = lock->rkey;

	RedlockSharedUntrack(lock);
	copy.slot = -1;
	hash_search(lock_table, &lock->rkey, HASH_REMOVE, NULL);
	copy.key = rkey + (copy.key - old_rkey);
	copy.rkey = rkey;
	if (copy.holds)
		pfree(copy.holds);
	copy.holds = NULL;
	copy.nholds = copy.maxholds = 0;
	pfree(old_rkey);
	return copy;
}

/* lock_free_copy: free what a copy made by lock_forget holds. */
static void
lock_free_copy(RedlockLock *copy)
{
	pfree(copy->rkey);
	copy->rkey = copy->key = NULL;
}

static int	release_locks(RedlockLock *locks, int nlocks, const char *when,
						  RedlockWhen where, int *nunconfirmed);

/*
 * Owner values come from pg_strong_random, drawn a kilobyte at a time: each
 * call costs system calls, which the hot path should not pay per lock.
 * Every byte is used once and wiped.  The pool starts empty in each
 * backend, so no two processes share bytes.
 */
static uint8 random_pool[1024];
static int	random_used = sizeof(random_pool);

/*
 * owner_value: write REDLOCK_VALUE_LEN random hex characters and a NUL to
 * "out".  Raises ERROR if the strong random source fails.
 */
static void
owner_value(char *out)
{
	static const char hex[] = "0123456789abcdef";
	size_t		i;

	if (random_used + REDLOCK_VALUE_LEN / 2 > (int) sizeof(random_pool))
	{
		if (!pg_strong_random(random_pool, sizeof(random_pool)))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate a random lock owner value")));
		random_used = 0;
	}
	for (i = 0; i < REDLOCK_VALUE_LEN / 2; i++)
	{
		uint8		b = random_pool[random_used + i];

		out[2 * i] = hex[b >> 4];
		out[2 * i + 1] = hex[b & 15];
	}
	memset(random_pool + random_used, 0, REDLOCK_VALUE_LEN / 2);
	random_used += REDLOCK_VALUE_LEN / 2;
	out[REDLOCK_VALUE_LEN] = '\0';
}

/*
 * lock_create: a new, pending entry for "rkey", with a fresh owner value,
 * the wake channel under the current key prefix, and the configured
 * masters.  In the current redlock.lock_format: a string lock's owner is
 * the random value, then "." and this backend's identity (deadlock.c:
 * other clients only ever compare the value as a whole); a Redisson
 * lock's is the hash field Redisson would use, the same random value made
 * a version 4 UUID, then ":" and the backend's pid for the thread id
 * (Redisson's RLock keeps one field per client and thread; a backend is
 * both here, and every hold has its own UUID).  A lock keeps its format
 * for as long as this backend has it.  Raises ERROR if no random bytes
 * are available or memory runs out; nothing is half-entered then.
 */
static RedlockLock *
lock_create(const char *rkey, const char *key, int ttl_ms, bool shared)
{
	const RedlockServerList *list = RedlockConfiguredServers();
	RedisServer *srvs[REDLOCK_MAX_SERVERS] = {0};
	char		value[REDLOCK_VALUE_LEN + 1];
	char		channel[REDIS_CHANNEL_LEN];
	size_t		rkeylen = strlen(rkey);
	size_t		keylen = strlen(key);
	char	   *rkey_copy;
	RedlockHold *holds;
	RedlockLock *lock;
	bool		found;
	int			i;

	owner_value(value);
	RedisWakeChannel(rkey, rkeylen - keylen, channel);
	for (i = 0; i < list->nservers; i++)
		srvs[i] = RedisServerForSpec(&list->servers[i]);
	rkey_copy = MemoryContextStrdup(RedlockContext, rkey);
	holds = MemoryContextAlloc(RedlockContext,
							   sizeof(RedlockHold) * INITIAL_HOLDS);

	lock = (RedlockLock *) hash_search(lock_table, &rkey_copy, HASH_ENTER,
									   &found);
	Assert(!found);
	memset((char *) lock + sizeof(char *), 0,
		   sizeof(RedlockLock) - sizeof(char *));
	lock->rkey = rkey_copy;
	lock->rkeylen = (int) rkeylen;
	lock->key = rkey_copy + (rkeylen - keylen);
	lock->redisson = redlock_lock_format == REDLOCK_FORMAT_REDISSON;
	lock->shared = shared;
	if (lock->redisson)
	{
		/* a version 4 UUID: its version and variant digits, 122 bits left */
		value[12] = '4';
		value[16] = "89ab"[(value[16] <= '9' ? value[16] - '0' : value[16] - 'a' + 10) & 3];
		lock->ownerlen = snprintf(lock->owner, sizeof(lock->owner),
								  "%.8s-%.4s-%.4s-%.4s-%.12s:%d", value,
								  value + 8, value + 12, value + 16,
								  value + 20, MyProcPid);
	}
	else
	{
		/* the random value, then who holds it: see deadlock.c */
		lock->ownerlen = snprintf(lock->owner, sizeof(lock->owner), "%s.%s",
								  value, RedlockBackendIdent());
	}
	memcpy(lock->channel, channel, sizeof(channel));
	lock->ttl_ms = ttl_ms;
	lock->holds = holds;
	lock->maxholds = INITIAL_HOLDS;
	lock->pending_subid = GetCurrentSubTransactionId();
	lock->nservers = list->nservers;
	memcpy(lock->servers, srvs, sizeof(RedisServer *) * list->nservers);
	lock->slot = -1;
	RedlockSharedTrack(lock);
	return lock;
}

/*
 * hold_add: count one more acquisition of a held lock.  A new entry has
 * room for its first hold, so the step that turns a pending entry into a
 * held one cannot fail.
 */
static void
hold_add(RedlockLock *lock, bool session)
{
	SubTransactionId subid;

	if (session)
	{
		lock->session_count++;
		return;
	}

	subid = GetCurrentSubTransactionId();
	if (lock->nholds > 0 && lock->holds[lock->nholds - 1].subid == subid)
	{
		lock->holds[lock->nholds - 1].count++;
		return;
	}
	if (lock->nholds == lock->maxholds)
	{
		lock->holds = repalloc(lock->holds,
							   sizeof(RedlockHold) * lock->maxholds * 2);
		lock->maxholds *= 2;
	}
	lock->holds[lock->nholds].subid = subid;
	lock->holds[lock->nholds].count = 1;
	lock->nholds++;
}

/* failure_sqlstate: the SQLSTATE that reports a kind of server failure. */
static int
failure_sqlstate(RedisFailure failure)
{
	switch (failure)
	{
		case REDIS_FAIL_CONNECT:
		case REDIS_FAIL_BACKOFF:
			return ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION;
		case REDIS_FAIL_PROTOCOL:
			return ERRCODE_PROTOCOL_VIOLATION;
		case REDIS_FAIL_REPLY:
			return ERRCODE_CONNECTION_EXCEPTION;
		case REDIS_FAIL_AUTH:
			return ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
		case REDIS_FAIL_PERM:
			return ERRCODE_INSUFFICIENT_PRIVILEGE;
		default:
			return ERRCODE_CONNECTION_FAILURE;
	}
}

/*
 * release_locks: release the Redis locks of entries already taken out of
 * the table, at once, then report.  Entries still pending (an interrupted
 * acquire) are released quietly.
 *
 * "when" names the moment for messages, "where" what the batch may do.
 * Lost and unconfirmed releases are WARNINGs.  Returns the number of
 * locks found lost; *nunconfirmed (if not NULL) gets the number whose
 * release no quorum confirmed.  Raises ERROR only when out of memory, or,
 * in a statement, on cancel: callers in callbacks catch it
 * (release_in_callback).
 */
static int
release_locks(RedlockLock *locks, int nlocks, const char *when,
			  RedlockWhen where, int *nunconfirmed)
{
	RedlockLock **ptrs;
	RedlockReleaseResult *results;
	RedlockTally *tallies;
	int			nlost = 0;
	int			i;

	if (nunconfirmed)
		*nunconfirmed = 0;
	if (nlocks == 0)
		return 0;

	ptrs = palloc(sizeof(RedlockLock *) * nlocks);
	results = palloc(sizeof(RedlockReleaseResult) * nlocks);
	tallies = palloc(sizeof(RedlockTally) * nlocks);
	for (i = 0; i < nlocks; i++)
		ptrs[i] = &locks[i];

	RedlockRelease(ptrs, nlocks, results, tallies, where);

	for (i = 0; i < nlocks; i++)
	{
		RedlockLock *lock = &locks[i];

		/* an interrupted acquire: finding nothing of ours is expected */
		if (lock->pending_subid != InvalidSubTransactionId)
		{
			lock_free_copy(lock);
			continue;
		}

		RedlockCount(results[i] == REDLOCK_RELEASED ? REDLOCK_RELEASES :
					 results[i] == REDLOCK_WAS_LOST ? REDLOCK_LOST_RELEASES :
					 REDLOCK_FAILED_RELEASES, 1);
		if (results[i] == REDLOCK_WAS_LOST && lock->lost)
			nlost++;			/* already reported */
		else if (results[i] == REDLOCK_WAS_LOST)
		{
			nlost++;
			ereport(WARNING,
					(errcode(ERRCODE_WARNING),
					 errmsg("Redis lock \"%s\" had expired or been taken over before its release at %s",
							lock->key, when),
					 errdetail("It was taken with a TTL of %d ms, %.0f ms earlier.",
							   lock->ttl_ms,
							   (RedlockNowUs() - lock->acquired_us) / 1000.0),
					 errhint("Use a longer TTL, or extend the lock while you hold it.")));
		}
		else if (results[i] == REDLOCK_RELEASE_FAILED)
		{
			if (nunconfirmed)
				(*nunconfirmed)++;
			ereport(WARNING,
					(errcode(failure_sqlstate(tallies[i].first_failure)),
					 errmsg("could not release Redis lock \"%s\" at %s",
							lock->key, when),
					 tallies[i].first_server[0] ?
					 errdetail("Server \"%s\": %s. The lock expires on its own within its TTL of %d ms.",
							   tallies[i].first_server,
							   tallies[i].first_error, lock->ttl_ms) :
					 errdetail("Too few servers answered in time. The lock expires on its own within its TTL of %d ms.",
							   lock->ttl_ms)));
		}
		lock_free_copy(lock);
	}
	pfree(ptrs);
	pfree(results);
	pfree(tallies);
	return nlost;
}

/*
 * release_in_callback: release_locks from a COMMIT, ABORT or ABORT_SUB
 * callback, where no ERROR may escape: one (out of memory) becomes a
 * WARNING, and the locks then expire by their TTL.
 */
static void
release_in_callback(RedlockLock *locks, int nlocks, const char *when)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	RedlockHoldoff holdoff;

	HOLD_INTERRUPTS();
	holdoff = RedlockHoldoffSave();
	PG_TRY();
	{
		release_locks(locks, nlocks, when, REDLOCK_IN_CALLBACK, NULL);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		RedlockHoldoffRestore(holdoff);
		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("could not release Redis locks at %s: %s", when,
						edata->message),
				 errdetail("They expire on their own within their TTL.")));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	RESUME_INTERRUPTS();
}

/*
 * forget_in_callback: lock_forget for a callback: an entry that cannot be
 * copied (out of memory) is dropped from the table as it is, and left to
 * its TTL.  Returns false then.
 */
static bool
forget_in_callback(RedlockLock *lock, RedlockLock *copy)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	RedlockHoldoff holdoff = RedlockHoldoffSave();
	volatile bool ok = true;

	PG_TRY();
	{
		*copy = lock_forget(lock);
	}
	PG_CATCH();
	{
		RedlockHoldoffRestore(holdoff);
		MemoryContextSwitchTo(oldcxt);
		FlushErrorState();
		ok = false;
	}
	PG_END_TRY();
	if (!ok)
	{
		ereport(WARNING,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not release Redis lock \"%s\": out of memory", lock->key),
				 errdetail("It expires on its own within its TTL of %d ms.", lock->ttl_ms)));
		RedlockSharedUntrack(lock);
		hash_search(lock_table, &lock->rkey, HASH_REMOVE, NULL);
	}
	return ok;
}

/*
 * xact_end: the top-level transaction ends.  Drops every transaction-level
 * hold and releases the keys left with none, and any pending acquire.
 */
static void
xact_end(bool commit)
{
	HASH_SEQ_STATUS seq;
	RedlockLock *lock;
	RedlockLock *gone;
	int			ngone = 0;

	gone = palloc_extended(sizeof(RedlockLock) * hash_get_num_entries(lock_table),
						   MCXT_ALLOC_NO_OOM);
	hash_seq_init(&seq, lock_table);
	while ((lock = (RedlockLock *) hash_seq_search(&seq)) != NULL)
	{
		bool		pending = lock->pending_subid != InvalidSubTransactionId;

		if (lock->nholds == 0 && !pending)
			continue;
		lock->nholds = 0;
		if (lock->session_count > 0 && !pending)
		{
			RedlockSharedHeld(lock, REDLOCK_SCOPE_SESSION);
			continue;
		}
		if (gone == NULL || !forget_in_callback(lock, &gone[ngone]))
		{
			if (gone == NULL)
			{
				RedlockSharedUntrack(lock);
				hash_search(lock_table, &lock->rkey, HASH_REMOVE, NULL);
			}
			continue;			/* left to its TTL */
		}
		ngone++;
	}
	if (gone == NULL)
	{
		ereport(WARNING,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not release Redis locks at %s: out of memory",
						commit ? "commit" : "abort"),
				 errdetail("They expire on their own within their TTL.")));
		return;
	}
	release_in_callback(gone, ngone, commit ? "commit" : "abort");
	pfree(gone);
}

/* lock_scope: the scopes a held lock has holds in (REDLOCK_SCOPE_*). */
static char
lock_scope(const RedlockLock *lock)
{
	if (lock->nholds == 0)
		return REDLOCK_SCOPE_SESSION;
	return lock->session_count > 0 ? REDLOCK_SCOPE_BOTH : REDLOCK_SCOPE_TRANSACTION;
}

/* warn_lost: tell the holder that the lease keeper found its lock lost. */
static void
warn_lost(const RedlockLock *lock)
{
	ereport(WARNING,
			(errcode(ERRCODE_WARNING),
			 errmsg("Redis lock \"%s\" was lost", lock->key),
			 errdetail("The lease keeper found it expired or taken over (TTL %d ms, taken %.0f ms ago).",
					   lock->ttl_ms, (RedlockNowUs() - lock->acquired_us) / 1000.0),
			 lock->nholds > 0 ?
			 errhint("This transaction cannot commit: roll back and retry.") : 0));
}

/*
 * notice_lost: at the start of each redlock call, warn about every lock the
 * keeper found lost since the last call (cheap when it found none).
 */
static void
notice_lost(void)
{
	static uint64 seen = 0;
	uint64		epoch = RedlockSharedLostEpoch();
	HASH_SEQ_STATUS seq;
	RedlockLock *lock;

	if (epoch == seen || lock_table == NULL)
		return;
	seen = epoch;
	hash_seq_init(&seq, lock_table);
	while ((lock = (RedlockLock *) hash_seq_search(&seq)) != NULL)
		if (lock->pending_subid == InvalidSubTransactionId &&
			RedlockSharedSync(lock))
			warn_lost(lock);
}

/*
 * commit_ttl: the TTL a lock is re-armed to at commit: its own, but at
 * least enough to leave redlock.commit_margin of validity after a re-arm
 * that takes as long as redlock.command_timeout.  Raises 22023 when no TTL
 * allowed can (margin and drift factor too large).
 */
static int
commit_ttl(const RedlockLock *lock)
{
	double		need = ceil((redlock_commit_margin + redlock_command_timeout + 2.0) /
							(1.0 - redlock_drift_factor));

	if (need > REDLOCK_MAX_TTL_MS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("redlock.commit_margin of %d ms cannot be kept", redlock_commit_margin),
				 errdetail("Keeping it after a re-arm as slow as redlock.command_timeout would need a TTL of %.0f ms, given redlock.drift_factor; at most %d ms is allowed.",
						   need, REDLOCK_MAX_TTL_MS),
				 errhint("Lower redlock.commit_margin, redlock.command_timeout or redlock.drift_factor.")));
	return (int) Max((double) lock->ttl_ms, need);
}

/* report_lost_at_commit: raise 40001 for a lock found lost at commit. */
static void
report_lost_at_commit(const RedlockLock *lock)
{
	RedlockCount(REDLOCK_LOST_AT_COMMIT, 1);
	ereport(ERROR,
			(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			 errmsg("Redis lock \"%s\" was lost before commit", lock->key),
			 errdetail("The lock expired or was taken over while the transaction held it (TTL %d ms, taken %.0f ms ago); the transaction is rolled back so that none of its work becomes visible.",
					   lock->ttl_ms,
					   (RedlockNowUs() - lock->acquired_us) / 1000.0),
			 errhint("Retry the transaction. Use a longer TTL, or redlock_extend(), for transactions that take long.")));
}

/*
 * commit_check: make sure every transaction-level lock is still ours, with
 * at least redlock.commit_margin of validity, before the commit.  Locks
 * under the margin, and those a quorum's connections no longer vouch for
 * (see RedlockLockInDoubt), are re-armed together, in one batch; then every lock is
 * checked again against a fresh clock, since the batch itself took time,
 * and the rounds go on until all have the margin (at most
 * COMMIT_CHECK_ROUNDS).  Raises 40001 when a lock is lost, 08xxx when a
 * quorum of its masters cannot confirm it or the rounds run out; either
 * aborts the transaction.
 */
static void
commit_check(RedlockLock **locks, int nlocks)
{
	RedlockLock **under = palloc(sizeof(RedlockLock *) * nlocks);
	int		   *ttls = palloc(sizeof(int) * nlocks);
	RedlockExtendResult *results = palloc(sizeof(RedlockExtendResult) * nlocks);
	RedlockTally *tallies = palloc(sizeof(RedlockTally) * nlocks);
	int			round;
	int			i;

	for (i = 0; i < nlocks; i++)
		(void) RedlockSharedSync(locks[i]); /* the keeper's renewals */
	for (round = 0;; round++)
	{
		int64		now = RedlockNowUs();
		int			nunder = 0;

		for (i = 0; i < nlocks; i++)
		{
			if (locks[i]->lost)
				report_lost_at_commit(locks[i]);
			if (locks[i]->valid_until_us - now < (int64) redlock_commit_margin * 1000 ||
				RedlockLockInDoubt(locks[i], now))
			{
				under[nunder] = locks[i];
				ttls[nunder] = commit_ttl(locks[i]);
				nunder++;
			}
		}
		if (nunder == 0)
			break;
		if (round == COMMIT_CHECK_ROUNDS)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("could not confirm Redis lock \"%s\" before commit",
							under[0]->key),
					 errdetail("Re-arming it on its masters did not leave redlock.commit_margin (%d ms) of validity, or their connections kept closing, after %d attempts.",
							   redlock_commit_margin, COMMIT_CHECK_ROUNDS),
					 errhint("The transaction is rolled back: it cannot be known to hold the lock long enough. Check the masters' latency, or lower redlock.commit_margin.")));

		RedlockExtendMany(under, nunder, ttls, false, results, tallies);
		for (i = 0; i < nunder; i++)
			RedlockSharedHeld(under[i], lock_scope(under[i]));
		for (i = 0; i < nunder; i++)
		{
			if (results[i] == REDLOCK_EXTENDED)
				RedlockCount(REDLOCK_COMMIT_EXTENDS, 1);
			else if (results[i] == REDLOCK_EXTEND_LOST)
			{
				under[i]->lost = true;
				report_lost_at_commit(under[i]);
			}
			else
			{
				StringInfoData detail;

				initStringInfo(&detail);
				RedlockDescribeTally(&tallies[i], &detail);
				ereport(ERROR,
						(errcode(failure_sqlstate(tallies[i].first_failure)),
						 errmsg("could not confirm Redis lock \"%s\" before commit",
								under[i]->key),
						 errdetail_internal("%s", detail.data),
						 errhint("The transaction is rolled back: it cannot be known to have held the lock.")));
			}
		}
	}
	pfree(under);
	pfree(ttls);
	pfree(results);
	pfree(tallies);
}

/*
 * prepare_release_servers: make the connections that COMMIT's release will
 * use ready now (see RedisPrepareServers), for the locks that the commit
 * releases.
 */
static void
prepare_release_servers(RedlockLock **locks, int nlocks)
{
	RedisServer **srvs = palloc(sizeof(RedisServer *) * nlocks * REDLOCK_MAX_SERVERS);
	int			n = 0;
	int			i;
	int			j;
	int			k;

	for (i = 0; i < nlocks; i++)
	{
		if (locks[i]->session_count > 0)
			continue;			/* stays held */
		for (j = 0; j < locks[i]->nservers; j++)
		{
			/* a cluster's: the node of the lock's slot */
			RedisServer *srv = RedisServerForKey(locks[i]->servers[j],
												 locks[i]->rkey,
												 locks[i]->rkeylen);

			for (k = 0; k < n && srvs[k] != srv; k++)
				;
			if (k == n)
				srvs[n++] = srv;
		}
	}
	RedisPrepareServers(srvs, n);
	pfree(srvs);
}

/*
 * pre_commit: the commit-time check of every transaction-level lock, the
 * connections for the release, then durability before the release.
 */
static void
pre_commit(void)
{
	HASH_SEQ_STATUS seq;
	RedlockLock *lock;
	RedlockLock **held;
	int			nheld = 0;
	bool		releases = false;

	held = palloc(sizeof(RedlockLock *) * hash_get_num_entries(lock_table));
	hash_seq_init(&seq, lock_table);
	while ((lock = (RedlockLock *) hash_seq_search(&seq)) != NULL)
	{
		if (lock->nholds == 0)
			continue;
		if (lock->session_count == 0)
			releases = true;
		held[nheld++] = lock;
	}
	if (nheld > 0)
	{
		commit_check(held, nheld);
		prepare_release_servers(held, nheld);
	}
	pfree(held);

	/* whoever takes the lock next must find our commit on disk */
	if (releases)
		ForceSyncCommit();
}

/*
 * check_prepare: refuse PREPARE TRANSACTION while transaction-level locks
 * are held; raising here aborts the transaction, which releases them.
 */
static void
check_prepare(void)
{
	HASH_SEQ_STATUS seq;
	RedlockLock *lock;

	hash_seq_init(&seq, lock_table);
	while ((lock = (RedlockLock *) hash_seq_search(&seq)) != NULL)
	{
		if (lock->nholds > 0 || lock->pending_subid != InvalidSubTransactionId)
		{
			char	   *key = pstrdup(lock->key);

			hash_seq_term(&seq);
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot PREPARE a transaction that holds transaction-scoped Redis locks"),
					 errdetail("Lock \"%s\" is held until the end of the transaction.", key),
					 errhint("Take session locks with redlock_acquire_session() for work that is committed in two phases, and keep them until COMMIT PREPARED or ROLLBACK PREPARED has run: released earlier, they no longer protect the prepared work.")));
		}
	}
}

/*
 * xact_callback: transaction events.  Parallel-worker events are ignored:
 * a parallel worker never holds a lock (RedlockLockAcquire refuses).
 */
static void
xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT)
		RedisWakeWatch(NULL, 0, NULL);	/* a wait cut short by an ERROR */
	if (lock_table == NULL || hash_get_num_entries(lock_table) == 0)
		return;

	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			check_prepare();
			break;
		case XACT_EVENT_PRE_COMMIT:
			pre_commit();
			break;
		case XACT_EVENT_COMMIT:
			xact_end(true);
			break;
		case XACT_EVENT_ABORT:
			xact_end(false);
			break;
		default:
			break;
	}
}

/*
 * subxact_callback: subtransaction events.  On commit the holds move to the
 * parent; on abort they go, and keys left without holds are released.
 */
static void
subxact_callback(SubXactEvent event, SubTransactionId mySubid,
				 SubTransactionId parentSubid, void *arg)
{
	HASH_SEQ_STATUS seq;
	RedlockLock *lock;
	RedlockLock *gone = NULL;
	int			ngone = 0;

	if (event == SUBXACT_EVENT_ABORT_SUB)
		RedisWakeWatch(NULL, 0, NULL);	/* a wait cut short by an ERROR */
	if (lock_table == NULL || hash_get_num_entries(lock_table) == 0)
		return;
	if (event != SUBXACT_EVENT_COMMIT_SUB && event != SUBXACT_EVENT_ABORT_SUB)
		return;

	if (event == SUBXACT_EVENT_ABORT_SUB)
		gone = palloc_extended(sizeof(RedlockLock) * hash_get_num_entries(lock_table),
							   MCXT_ALLOC_NO_OOM);

	hash_seq_init(&seq, lock_table);
	while ((lock = (RedlockLock *) hash_seq_search(&seq)) != NULL)
	{
		int			i;

		for (i = lock->nholds - 1; i >= 0; i--)
		{
			if (lock->holds[i].subid != mySubid)
				continue;
			if (event == SUBXACT_EVENT_COMMIT_SUB)
			{
				if (i > 0 && lock->holds[i - 1].subid == parentSubid)
				{
					lock->holds[i - 1].count += lock->holds[i].count;
					memmove(&lock->holds[i], &lock->holds[i + 1],
							sizeof(RedlockHold) * (lock->nholds - i - 1));
					lock->nholds--;
				}
				else
					lock->holds[i].subid = parentSubid;
			}
			else
			{
				memmove(&lock->holds[i], &lock->holds[i + 1],
						sizeof(RedlockHold) * (lock->nholds - i - 1));
				lock->nholds--;
			}
		}

		if (event == SUBXACT_EVENT_ABORT_SUB)
		{
			bool		pending = lock->pending_subid == mySubid;

			if (!pending &&
				(lock->nholds > 0 || lock->session_count > 0 ||
				 lock->pending_subid != InvalidSubTransactionId))
				continue;
			if (gone == NULL)
			{
				RedlockSharedUntrack(lock);
				hash_search(lock_table, &lock->rkey, HASH_REMOVE, NULL);
			}
			else if (forget_in_callback(lock, &gone[ngone]))
				ngone++;
		}
	}

	if (gone)
	{
		release_in_callback(gone, ngone, "rollback to savepoint");
		pfree(gone);
	}
}

/*
 * exit_callback: release whatever is still held when the backend exits,
 * then close the connections.  Interrupts are held: only deadlines end the
 * waits.  PostgreSQL turns any ERROR here into FATAL, which ends the exit
 * early; only running out of memory could raise one.
 */
static void
exit_callback(int code, Datum arg)
{
	HASH_SEQ_STATUS seq;
	RedlockLock *lock;
	RedlockLock *gone;
	int			ngone = 0;

	/* after a FATAL, the current context may be ErrorContext: use our own */
	MemoryContextSwitchTo(AllocSetContextCreate(TopMemoryContext,
												"redlock exit",
												ALLOCSET_SMALL_SIZES));
	RedisWakeWatch(NULL, 0, NULL);

	if (lock_table != NULL && hash_get_num_entries(lock_table) > 0)
	{
		gone = palloc(sizeof(RedlockLock) * hash_get_num_entries(lock_table));
		hash_seq_init(&seq, lock_table);
		while ((lock = (RedlockLock *) hash_seq_search(&seq)) != NULL)
			gone[ngone++] = lock_forget(lock);

		HOLD_INTERRUPTS();
		release_locks(gone, ngone, "session end", REDLOCK_AT_EXIT, NULL);
		RESUME_INTERRUPTS();
	}
	RedisDisconnectAll();
}

/* RedlockLockTable: the lock table, for the views; NULL before first use. */
HTAB *
RedlockLockTable(void)
{
	return lock_table;
}

/*
 * RedlockLockInit: register the transaction callbacks (once per process;
 * when preloaded, the postmaster's registration is inherited).
 */
void
RedlockLockInit(void)
{
	RegisterXactCallback(xact_callback, NULL);
	RegisterSubXactCallback(subxact_callback, NULL);
}

/* failure_hint: what to do about a kind of failure. */
static const char *
failure_hint(RedisFailure failure)
{
	switch (failure)
	{
		case REDIS_FAIL_AUTH:
			return "Give the credentials the Redis server expects: in redlock.passfile, redlock.username and redlock.password, or a redis:// entry of redlock.servers.";
		case REDIS_FAIL_PERM:
			return "Let the Redis ACL user run EVAL, EVALSHA, SUBSCRIBE and, inside scripts, SET, GET, DEL, EXISTS, INCR, PEXPIRE, PTTL, TIME, ZADD, ZREM, ZRANGE, ZRANGEBYSCORE and PUBLISH (for shared locks also ZCARD, ZSCORE, ZRANK and ZREMRANGEBYSCORE; for deadlock detection HSET, HGETALL, HDEL, HEXISTS and ZSCORE), on the lock keys and those that start with them, and on the channels that start with redlock.key_prefix followed by redlock:wake:; and SELECT when a database other than 0 is used; WAIT with redlock.replica_ack, and ROLE for sentinel:// entries. With redlock.lock_format = redisson also TYPE, HSET, HEXISTS and UNSUBSCRIBE, and SUBSCRIBE and PUBLISH on Redisson's channels, redisson_lock__channel:{ followed by the lock key.";
		case REDIS_FAIL_REPLICAS:
			return "redlock.replica_ack asks for more replicas than answered in time: check the masters' replicas (INFO replication), or lower the setting.";
		default:
			return "Check that Redis is running and that redlock.servers names it.";
	}
}

/*
 * report_unreachable: raise the 08xxx/28000/42501 error for a request that
 * could not reach a quorum of masters.
 */
static void
report_unreachable(const RedlockTally *tally)
{
	StringInfoData detail;

	initStringInfo(&detail);
	RedlockDescribeTally(tally, &detail);
	if (tally->nservers == 1)
		ereport(ERROR,
				(errcode(failure_sqlstate(tally->first_failure)),
				 errmsg("could not reach Redis server \"%s\"",
						tally->first_server[0] ? tally->first_server : "?"),
				 errdetail_internal("%s", detail.data),
				 errhint("%s", failure_hint(tally->first_failure))));
	ereport(ERROR,
			(errcode(failure_sqlstate(tally->first_failure)),
			 errmsg("could not reach a majority of the %d Redis servers",
					tally->nservers),
			 errdetail_internal("%s", detail.data),
			 errhint("%s", failure_hint(tally->first_failure))));
}

/*
 * rides_failover: whether a waiting acquire that found a quorum out of
 * reach waits on instead of failing (after a pause it has taken, ready to
 * try again): when only the failures that a sentinel or cluster failover
 * under way may explain (see RedisFailoverMayExplain) stand between it and
 * a quorum's answer.  A failover takes seconds; until then the acquire
 * would fail with 08xxx although a wait was asked for.  It rides out
 * REDLOCK_FAILOVER_RIDE_MS at most from *since (set at the first
 * failure), and never past its deadline: then the caller reports what the
 * last attempt found.  Raises what CHECK_FOR_INTERRUPTS raises.
 */
static bool
rides_failover(const RedlockTally *tally, int64 *since, int64 deadline)
{
	int			quorum = RedlockQuorum(tally->nservers);
	int64		now = RedlockNowUs();
	int64		until;

	if (tally->failed_over == 0 ||
		tally->failed - tally->failed_over > tally->nservers - quorum)
		return false;
	if (*since == 0)
		*since = now;
	until = *since + (int64) REDLOCK_FAILOVER_RIDE_MS * 1000;
	if (deadline != 0)
		until = Min(until, deadline);
	if (now >= until)
		return false;
	(void) RedisWaitWake(RedisWakeCount(),
						 Min(until, now + (int64) REDLOCK_FAILOVER_RETRY_MS * 1000));
	CHECK_FOR_INTERRUPTS();
	return true;
}

/*
 * count_wait: count an acquisition that had to wait (it subscribed) and
 * its time, however it ended.
 */
static void
count_wait(bool waited, int64 start)
{
	if (waited)
	{
		RedlockCount(REDLOCK_WAITS, 1);
		RedlockCount(REDLOCK_WAIT_TIME_US, RedlockNowUs() - start);
	}
}

/*
 * reenter: a lock this backend already has an entry for is acquired again.
 * A lock past its validity, or one whose granting connections no longer
 * make a quorum (RedlockLockInDoubt), is re-armed first: if our value is
 * still on a quorum, nobody else can have held the key meanwhile.  Returns
 * true when the lock is ours (hold_again then counts the new hold), false
 * when it is lost and has only session holds: the caller takes it afresh
 * (the entry has been forgotten and released; *carried gets its session
 * holds).  Raises 40001 when it is lost and this transaction holds it,
 * and what RedlockLockExtend raises when the masters cannot confirm it.
 */
static bool
reenter(RedlockLock *lock, int *carried)
{
	int64		now;

	Assert(lock->pending_subid == InvalidSubTransactionId);

	if (RedlockSharedSync(lock))
		warn_lost(lock);
	now = RedlockNowUs();
	if (!lock->lost &&
		(now >= lock->valid_until_us || RedlockLockInDoubt(lock, now)))
	{
		RedlockTally tally;
		RedlockExtendResult result = RedlockExtend(lock, lock->ttl_ms, &tally);

		RedlockSharedHeld(lock, lock_scope(lock));
		switch (result)
		{
			case REDLOCK_EXTENDED:
				break;
			case REDLOCK_EXTEND_LOST:
				lock->lost = true;
				break;
			case REDLOCK_EXTEND_UNCONFIRMED:
				report_unreachable(&tally);
		}
	}
	if (!lock->lost)
		return true;
	if (lock->nholds > 0)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("Redis lock \"%s\" was lost while this transaction held it",
						lock->key),
				 errdetail("The lock expired or was taken over (TTL %d ms, taken %.0f ms ago); this transaction cannot commit.",
						   lock->ttl_ms,
						   (RedlockNowUs() - lock->acquired_us) / 1000.0),
				 errhint("Roll back and retry the transaction. Use a longer TTL, or redlock_extend(), for transactions that take long.")));

	/* session holds only: forget the lost lock (cleaning what is left of it) */
	*carried = lock->session_count;
	{
		RedlockLock gone = lock_forget(lock);

		release_locks(&gone, 1, "re-acquisition", REDLOCK_IN_STATEMENT, NULL);
	}
	return false;
}

/* hold_again: one more hold of a lock reenter found ours; its token. */
static int64
hold_again(RedlockLock *lock, bool session)
{
	hold_add(lock, session);
	RedlockSharedHeld(lock, lock_scope(lock));
	RedlockCount(REDLOCK_REENTRIES, 1);
	return lock->token;
}

/*
 * abandon: give up an acquire that did not get its locks: forget the
 * pending entries and send their owner-checked releases, which also take
 * this backend out of the keys' queues of waiters (waited for: see
 * release_settled in algo.c).
 */
static void
abandon(RedlockLock **locks, int nlocks)
{
	RedlockLock *gone = palloc(sizeof(RedlockLock) * nlocks);
	int			k;

	for (k = 0; k < nlocks; k++)
		gone[k] = lock_forget(locks[k]);
	release_locks(gone, nlocks, "abandon", REDLOCK_IN_STATEMENT, NULL);
}

/*
 * end_wait: the wait is over, however it ended: stop counting wake-ups, and
 * delete our deadlock record if we published one.
 */
static void
end_wait(RedlockLock *lock, int64 published)
{
	RedisWakeWatch(NULL, 0, NULL);
	if (published != 0)
		RedlockDeadlockForget(lock);
}

/*
 * report_busy: the ERROR that ends a wait for "key" that reached its limit
 * (limit_ms, set by limit_name), with how the masters answered; "others"
 * keys were asked for with it (keys the backend held already stay held).
 */
static void
report_busy(const char *key, int others, int limit_ms, const char *limit_name,
			const RedlockTally *tally)
{
	StringInfoData detail;

	initStringInfo(&detail);
	appendStringInfo(&detail, "The wait reached its limit of %d ms, set by %s. ",
					 limit_ms, limit_name);
	RedlockDescribeTally(tally, &detail);
	if (others > 0)
		appendStringInfo(&detail, " It was asked for together with %d other key%s; none of them was taken.",
						 others, others == 1 ? "" : "s");
	ereport(ERROR,
			(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
			 errmsg("could not obtain Redis lock \"%s\"", key),
			 errdetail_internal("%s", detail.data)));
}

/*
 * RedlockLockAcquire: acquire "keys" (nkeys of them, distinct) for the
 * session or the transaction: all of them, or none.
 *
 * ttl_ms is the locks' TTL (already checked).  wait_ms < 0 means use
 * redlock.wait_timeout; 0 means no limit of its own (lock_timeout, if set,
 * still applies).  With "dontwait" a single attempt is made.
 *
 * Keys this backend already holds are held once more; the others are
 * asked for together in each attempt (RedlockTryAcquire: one round trip
 * per master), and a caller that has to wait holds none of them while it
 * waits, so two callers whose key sets overlap cannot deadlock, whatever
 * the order of their keys (keys held before the call stay held: those can
 * close a cycle, which deadlock.c finds).  It is queued on the keys it was
 * refused, and any of them freed wakes it.
 *
 * Returns true and sets tokens[i] for keys[i] when all are held; false
 * when dontwait and someone else holds one of them.  Raises 55P03 when the
 * wait ends, 08xxx when a quorum of masters could not be asked, 40001 when
 * re-acquiring a lock this transaction held and lost, 22001/22023 for
 * keys and TTLs that cannot work, 0A000 for a key this session holds in
 * the other mode, 25000 in a parallel worker, and whatever
 * CHECK_FOR_INTERRUPTS raises (57014 on cancel and statement_timeout).
 */
bool
RedlockLockAcquire(const char *const *keys, int nkeys, int ttl_ms, int wait_ms,
				   bool session, bool dontwait, bool shared, int64 *tokens)
{
	char	  **rkeys = palloc(sizeof(char *) * nkeys);
	RedlockLock **held = palloc(sizeof(RedlockLock *) * nkeys);
	RedlockLock **todo = palloc(sizeof(RedlockLock *) * nkeys);
	int		   *todo_key = palloc(sizeof(int) * nkeys);
	int		   *carried = palloc0(sizeof(int) * nkeys);
	const char **watch = palloc(sizeof(char *) * nkeys);
	const char *limit_name = NULL;
	int			limit_ms = 0;
	int			ntodo = 0;
	MemoryContext attempt_cxt;
	RedlockTally tally = {0};
	RedlockTally attempt;
	int			blocking = 0;
	int64		start;
	int64		deadline = 0;
	int64		ticket = 0;
	int64		riding_since = 0;	/* a failover ridden out since (us) */
	bool		rode = false;	/* it waited out a failover */
	bool		subscribed = false;
	char	   *keychan = NULL; /* Redisson's unlock channel of the key */
	int64		checked = 0;	/* last deadlock check (monotonic us) */
	int64		published = 0;	/* our deadlock record's last refresh */
	int64		publish_due;
	int			i;
	int			k;

	/*
	 * A parallel worker's transaction ends before the leader's: a lock taken
	 * there would be released before the work it protects is committed.
	 */
	if (IsParallelWorker())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("cannot take Redis locks in a parallel worker"),
				 errhint("Declare functions that call redlock functions PARALLEL UNSAFE.")));

	for (i = 0; i < nkeys; i++)
		rkeys[i] = redis_key(keys[i]);
	lock_table_init();
	notice_lost();

	/*
	 * A session holds a key in one mode: an exclusive request on a key it
	 * holds shared would be an upgrade (two readers upgrading would wait
	 * for each other for ever), and a shared one on a key it holds
	 * exclusively would leave holds of two modes on one Redis lock.  Both
	 * are refused, also when the lock was lost (its holds are carried).
	 * Every key is checked before anything is done about any of them.
	 */
	for (i = 0; i < nkeys; i++)
	{
		RedlockLock *lock = held[i] = lock_lookup(rkeys[i]);

		if (lock != NULL && lock->pending_subid == InvalidSubTransactionId &&
			lock->shared != shared)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot take Redis lock \"%s\" in %s mode while this session holds it in %s mode",
							keys[i], shared ? "shared" : "exclusive",
							lock->shared ? "shared" : "exclusive"),
					 errhint("Release it first (its transaction-level holds go at commit or rollback); an upgrade or a mix of modes on one key is not supported.")));
	}
	for (i = 0; i < nkeys; i++)
	{
		if (held[i] == NULL || !reenter(held[i], &carried[i]))
		{
			held[i] = NULL;
			todo_key[ntodo++] = i;
		}
	}
	if (ntodo == 0)
	{
		for (i = 0; i < nkeys; i++)
			tokens[i] = hold_again(held[i], session);
		return true;
	}

	/*
	 * Under REPEATABLE READ or SERIALIZABLE the transaction reads from one
	 * snapshot, taken by its first statement (this one, at the latest): rows
	 * read after this acquire may predate the previous holder's commit.
	 */
	if (redlock_snapshot_check != REDLOCK_SNAPSHOT_OFF &&
		IsTransactionBlock() && IsolationUsesXactSnapshot() && FirstSnapshotSet)
	{
		bool		error = redlock_snapshot_check == REDLOCK_SNAPSHOT_ERROR;

		ereport(error ? ERROR : WARNING,
				(errcode(error ? ERRCODE_ACTIVE_SQL_TRANSACTION : ERRCODE_WARNING),
				 errmsg("Redis lock \"%s\" is taken after the transaction's snapshot",
						keys[todo_key[0]]),
				 errdetail("Under %s, this transaction may read rows as they were before the lock's previous holder committed.",
						   IsolationIsSerializable() ? "SERIALIZABLE" : "REPEATABLE READ"),
				 errhint("Take the lock in a READ COMMITTED transaction, or take a session lock with redlock_acquire_session() before BEGIN.")));
	}

	if (!RedlockTtlLeavesValidity(ttl_ms))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lock TTL of %d ms is too short", ttl_ms),
				 errdetail("The clock-drift allowance (redlock.drift_factor * TTL + 2 ms) leaves the lock no validity.")));

	if (!exit_callback_registered)
	{
		before_shmem_exit(exit_callback, (Datum) 0);
		exit_callback_registered = true;
	}

	start = RedlockNowUs();
	if (!dontwait)
	{
		if (wait_ms < 0)
		{
			wait_ms = redlock_wait_timeout;
			limit_name = "redlock.wait_timeout";
		}
		else
			limit_name = "wait_ms";
		limit_ms = wait_ms;
		if (LockTimeout > 0 && (limit_ms == 0 || LockTimeout < limit_ms))
		{
			limit_ms = LockTimeout;
			limit_name = "lock_timeout";
		}
		if (limit_ms > 0)
			deadline = start + (int64) limit_ms * 1000;

		/* waiters are queued in the order they started waiting */
		ticket = RedlockUnixUs() / 1000;
	}

	if (shared && redlock_lock_format == REDLOCK_FORMAT_REDISSON)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("shared Redis locks are not available with redlock.lock_format = redisson"),
				 errdetail("Redisson's RLock has no shared mode that its own clients would respect."),
				 errhint("Use redlock.lock_format = string for keys locked in shared mode.")));
	for (k = 0; k < ntodo; k++)
	{
		todo[k] = lock_create(rkeys[todo_key[k]], keys[todo_key[k]], ttl_ms, shared);
		watch[k] = todo[k]->rkey;
	}
	attempt_cxt = AllocSetContextCreate(CurrentMemoryContext,
										"redlock attempt",
										ALLOCSET_SMALL_SIZES);

	/*
	 * Wake-ups count from now on, also those that come during an attempt;
	 * a Redisson lock's waiters also hear Redisson's unlock message (of a
	 * lone key: several keys rely on the fallback timer for those).
	 */
	if (todo[0]->redisson && ntodo == 1)
	{
		keychan = palloc(REDIS_KEY_CHANNEL_LEN);
		RedisRedissonChannel(todo[0]->rkey, keychan);
	}
	RedisWakeWatch(watch, ntodo, keychan);
	for (;;)
	{
		RedlockVerdict verdict;
		MemoryContext oldcxt;
		uint64		wakes = RedisWakeCount();
		int64		now;
		int64		sleep_ms;

		/*
		 * A wait whose limit came while it slept makes no attempt it has no
		 * time for: it ends with what the last one found (a ride through a
		 * failover: the group's last failure, 08xxx).
		 */
		if (riding_since != 0 && deadline != 0 && RedlockNowUs() >= deadline)
			verdict = REDLOCK_UNREACHABLE;
		else if (subscribed && deadline != 0 && RedlockNowUs() >= deadline)
			verdict = REDLOCK_BUSY;
		else
		{
			int			b;

			MemoryContextReset(attempt_cxt);
			oldcxt = MemoryContextSwitchTo(attempt_cxt);
			verdict = RedlockTryAcquire(todo, ntodo, ticket, deadline, &attempt, &b);
			MemoryContextSwitchTo(oldcxt);

			/*
			 * An attempt the limit cut short before any master answered
			 * says nothing: the message keeps what the one before found.
			 */
			if (attempt.granted + attempt.refused + attempt.failed > 0 ||
				tally.nservers == 0)
			{
				tally = attempt;
				blocking = Max(b, 0);
			}
			/* masters answered: whatever comes next, no failover is ridden */
			if (verdict != REDLOCK_UNREACHABLE && attempt.granted + attempt.refused > 0)
				riding_since = 0;
		}

		if (verdict == REDLOCK_ACQUIRED)
		{
			end_wait(todo[0], published);
			for (k = 0; k < ntodo; k++)
			{
				RedlockLock *lock = todo[k];

				lock->pending_subid = InvalidSubTransactionId;
				hold_add(lock, session);
				lock->session_count += carried[todo_key[k]];
				RedlockSharedHeld(lock, lock_scope(lock));
				tokens[todo_key[k]] = lock->token;
			}
			for (i = 0; i < nkeys; i++)
				if (held[i] != NULL)
					tokens[i] = hold_again(held[i], session);
			MemoryContextDelete(attempt_cxt);
			RedlockCount(REDLOCK_ACQUIRES, ntodo);
			count_wait(subscribed || rode, start);
			return true;
		}

		/* a failover under way is waited out (within the wait's limit) */
		if (verdict == REDLOCK_UNREACHABLE && !dontwait &&
			rides_failover(&tally, &riding_since, deadline))
		{
			rode = true;
			continue;
		}
		if (verdict == REDLOCK_UNREACHABLE)
		{
			end_wait(todo[0], published);
			RedlockCount(REDLOCK_UNREACHABLES, 1);
			count_wait(subscribed || rode, start);
			abandon(todo, ntodo);
			report_unreachable(&tally);
		}

		if (dontwait)
		{
			RedisWakeWatch(NULL, 0, NULL);
			for (k = 0; k < ntodo; k++)
			{
				RedlockLock gone = lock_forget(todo[k]);

				lock_free_copy(&gone);
			}
			if (tally.validity_lost)
				ereport(ERROR,
						(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
						 errmsg("could not obtain Redis lock \"%s\" within its validity",
								keys[todo_key[blocking]]),
						 errdetail("A majority granted it, but acquiring took longer than its TTL of %d ms minus the clock-drift allowance.",
								   ttl_ms),
						 errhint("Use a longer TTL.")));
			MemoryContextDelete(attempt_cxt);
			RedlockCount(REDLOCK_TRY_BUSY, 1);
			return false;
		}

		now = RedlockNowUs();
		if (deadline != 0 && now >= deadline)
		{
			end_wait(todo[0], published);
			RedlockCount(REDLOCK_TIMEOUTS, 1);
			count_wait(subscribed || rode, start);
			abandon(todo, ntodo);
			report_busy(keys[todo_key[blocking]], ntodo - 1, limit_ms,
						limit_name, &tally);
		}

		/*
		 * Someone else holds a key, or a waiter ahead of us will get it.  We
		 * are queued now; subscribe to our wake channel (once per backend
		 * and prefix) before the next attempt, so that no wake-up sent
		 * meanwhile is lost, and try again at once.
		 */
		if (!subscribed)
		{
			int64		until = now + (int64) redlock_command_timeout * 1000;

			RedisSubscribe(todo[0]->servers, todo[0]->nservers, todo[0]->channel,
						   keychan, deadline != 0 ? Min(deadline, until) : until);
			subscribed = true;
			continue;
		}

		/*
		 * Waited deadlock_timeout, or a while since the last check: look
		 * for a cycle of waits through us (deadlock.c).  Found, this wait
		 * ends as PostgreSQL ends a deadlocked lock wait.
		 */
		if (now >= RedlockDeadlockDue(start, checked, published, &publish_due))
		{
			StringInfoData cycle;

			initStringInfo(&cycle);
			published = now;
			if (RedlockDeadlockCheck(todo, ntodo, ticket, deadline, &cycle))
			{
				end_wait(todo[0], 0);	/* the claim deleted our record */
				RedlockCount(REDLOCK_DEADLOCKS, 1);
				count_wait(true, start);
				abandon(todo, ntodo);
				ereport(ERROR,
						(errcode(ERRCODE_T_R_DEADLOCK_DETECTED),
						 errmsg("deadlock detected"),
						 errdetail_internal("%s", cycle.data)));
			}
			checked = now = RedlockNowUs();
			pfree(cycle.data);
		}
		else if (now >= publish_due)
		{
			/* visible to others' checks before our own comes */
			published = now;
			RedlockDeadlockPublish(todo, ntodo, ticket, deadline);
			now = RedlockNowUs();
		}

		/*
		 * Wait for the wake-up sent by the release, or for a fallback timer
		 * that notices releases this extension does not see (other clients,
		 * expiry): the holder's remaining TTL, at most redlock.retry_delay,
		 * plus jitter, and never more than REDLOCK_QUEUE_REFRESH_MS, so that
		 * our queue entries stay alive.
		 */
		sleep_ms = redlock_retry_delay;
		if (tally.holder_pttl_ms >= 0 && tally.holder_pttl_ms < sleep_ms)
			sleep_ms = tally.holder_pttl_ms;
		if (redlock_retry_jitter > 0)
			sleep_ms += (int64) pg_prng_uint64_range(&pg_global_prng_state, 0,
													 redlock_retry_jitter);
		sleep_ms = Min(sleep_ms, REDLOCK_QUEUE_REFRESH_MS);
		if (deadline != 0)
			sleep_ms = Min(sleep_ms, (deadline - now + 999) / 1000);
		sleep_ms = Min(sleep_ms, (RedlockDeadlockDue(start, checked, published, &publish_due) - now + 999) / 1000);
		sleep_ms = Min(sleep_ms, (publish_due - now + 999) / 1000);
		sleep_ms = Max(sleep_ms, 1);

		if (RedisWaitWake(wakes, now + sleep_ms * 1000))
			RedlockCount(REDLOCK_WAKEUPS, 1);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * RedlockLockReleaseSession: give up one session-level acquisition of key.
 *
 * Returns true when this session held it at session level and, if that
 * was the last hold, a quorum confirmed the release.  Returns false with
 * a WARNING when the session did not hold it, when the lock turned out to
 * have expired or been taken over, or when too few masters confirmed the
 * release (the key then expires within its TTL).
 */
bool
RedlockLockReleaseSession(const char *key, bool shared)
{
	char	   *rkey = redis_key(key);
	RedlockLock *lock;
	RedlockLock gone;
	int			unconfirmed;
	int			lost;

	notice_lost();
	lock = lock_lookup(rkey);
	pfree(rkey);
	if (lock == NULL || lock->session_count == 0)
	{
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("you do not own a session lock on \"%s\"", key),
				 lock != NULL ?
				 errhint("Transaction-scoped locks are released at commit or rollback.") : 0));
		return false;
	}
	if (lock->shared != shared)
	{
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("you do not own %s session lock on \"%s\"",
						shared ? "a shared" : "an exclusive", key),
				 errhint("It is held in %s mode: release it with %s().",
						 lock->shared ? "shared" : "exclusive",
						 lock->shared ? "redlock_release_shared" : "redlock_release")));
		return false;
	}

	if (--lock->session_count > 0 || lock->nholds > 0)
		return true;

	gone = lock_forget(lock);
	lost = release_locks(&gone, 1, "redlock_release()", REDLOCK_IN_STATEMENT,
						 &unconfirmed);
	return lost == 0 && unconfirmed == 0;
}

/*
 * RedlockLockExtend: re-arm the TTL of a lock this backend holds, at any
 * scope, to ttl_ms on a quorum of its masters.
 *
 * Returns true when extended.  Returns false with a WARNING when this
 * backend does not hold the key, or when the lock turned out to be lost;
 * a lost lock is marked so.  Raises 08xxx when too few masters answered.
 */
bool
RedlockLockExtend(const char *key, int ttl_ms)
{
	char	   *rkey = redis_key(key);
	RedlockLock *lock;
	RedlockTally tally;
	RedlockExtendResult result;

	notice_lost();
	lock = lock_lookup(rkey);
	pfree(rkey);
	if (lock == NULL)
	{
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("you do not own a lock on \"%s\"", key)));
		return false;
	}

	result = RedlockExtend(lock, ttl_ms, &tally);
	/* its deadline, whatever the outcome: an unconfirmed one may be shorter */
	RedlockSharedHeld(lock, lock_scope(lock));
	switch (result)
	{
		case REDLOCK_EXTENDED:
			lock->lost = false;
			RedlockCount(REDLOCK_EXTENDS, 1);
			return true;
		case REDLOCK_EXTEND_LOST:
			lock->lost = true;
			ereport(WARNING,
					(errcode(ERRCODE_WARNING),
					 errmsg("Redis lock \"%s\" has expired or been taken over", key),
					 tally.validity_lost ?
					 errdetail("A majority re-armed it, but too late: the new TTL of %d ms left no validity.",
							   ttl_ms) :
					 errdetail("%d of %d Redis servers still held it.",
							   tally.granted, tally.nservers)));
			return false;
		case REDLOCK_EXTEND_UNCONFIRMED:
			report_unreachable(&tally);
	}
	return false;				/* not reached */
}

/*
 * RedlockLockToken: the fencing token of a lock this backend holds.
 *
 * Returns false when it holds no such lock (or one found lost).
 */
bool
RedlockLockToken(const char *key, int64 *token)
{
	char	   *rkey = redis_key(key);
	RedlockLock *lock;

	notice_lost();
	lock = lock_lookup(rkey);
	pfree(rkey);
	if (lock == NULL || lock->lost)
		return false;
	*token = lock->token;
	return true;
}

/*
 * RedlockLockReleaseAllSession: drop every session-level hold of this
 * session, releasing the keys left without transaction-level holds (also
 * on DISCARD ALL, see redlock.c).
 *
 * Returns how many keys this session held at session level.
 */
int
RedlockLockReleaseAllSession(void)
{
	HASH_SEQ_STATUS seq;
	RedlockLock *lock;
	RedlockLock *gone;
	int			ngone = 0;
	int			nsession = 0;

	if (lock_table == NULL || hash_get_num_entries(lock_table) == 0)
		return 0;

	gone = palloc(sizeof(RedlockLock) * hash_get_num_entries(lock_table));
	hash_seq_init(&seq, lock_table);
	while ((lock = (RedlockLock *) hash_seq_search(&seq)) != NULL)
	{
		if (lock->session_count == 0)
			continue;
		nsession++;
		lock->session_count = 0;
		if (lock->nholds == 0)
			gone[ngone++] = lock_forget(lock);
	}
	release_locks(gone, ngone, "redlock_release_all()", REDLOCK_IN_STATEMENT,
				  NULL);
	pfree(gone);
	return nsession;
}
