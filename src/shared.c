/*-------------------------------------------------------------------------
 *
 * shared.c
 *	  The cluster's table of Redis locks, held and awaited, in shared memory
 *	  when the library is in shared_preload_libraries: what
 *	  redlock_locks_cluster shows and what the lease keeper (keeper.c)
 *	  renews.
 *
 * The table has redlock.max_tracked_locks slots.  A backend claims one
 * when it starts acquiring a key (state 'w', waiting), marks it held when
 * it gets the lock, and frees it when the key leaves its own lock table
 * (locks.c: release, abandon, session end) or when it exits.  A backend
 * that finds the table full (or a key longer than REDLOCK_TRACKED_KEY_LEN)
 * goes on without a slot, with a WARNING: its lock works as without
 * preloading (it is neither listed nor kept; the commit check still
 * guards it).  Nothing else is lost.
 *
 * Ownership and locking: one LWLock guards the whole table.  A slot's
 * identity and description are written by its backend only (exclusive
 * lock); the keeper writes only valid_until_us, renewed_us, renewals, kept
 * and lost, and only while the slot's generation is the one it read, so a
 * renewal that finishes after the hold ended (and the slot was reused)
 * changes nothing.  The backend reads those back (RedlockSharedSync) at
 * its next redlock call and before commit.  Everything on the monotonic
 * clock (CLOCK_BOOTTIME) is comparable between processes.
 *
 * Endpoints: to renew a lock the keeper must reach its masters exactly as
 * the backend did, with the backend's settings, which may be per role or
 * per database.  Those settings (the server list, credentials, TLS files,
 * timeouts) are copied into a shared endpoint, one per distinct set,
 * counted by the slots that use it.  A lock whose settings do not fit, or
 * that finds no free endpoint, is listed but not kept.  Credentials in
 * shared memory are as private as the postmaster's own memory.
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"

#include "redlock.h"

/*
 * The settings a keeper needs to reach a lock's masters as its backend did.
 * All are superuser-only, so only superusers can make endpoints differ
 * (timeouts, which any role sets, are the keeper's own: keeper.c).
 */
static const char *const endpoint_settings[] = {
	"redlock.servers", "redlock.username", "redlock.password",
	"redlock.passfile", "redlock.database", "redlock.sslmode",
	"redlock.sslrootcert", "redlock.sslcert", "redlock.sslkey",
	"redlock.sslcrl", "redlock.replica_ack", "redlock.sentinel_username",
	"redlock.sentinel_password"
};

#define NUM_ENDPOINT_SETTINGS	lengthof(endpoint_settings)

typedef struct SharedTable
{
	LWLock	   *lock;
	int			nslots;
	int			nfree;			/* entries of freelist in use */
	pg_atomic_uint64 lost_epoch;	/* bumped whenever the keeper marks a
									 * lock lost */
	pg_atomic_uint64 keeper_beat;	/* monotonic us of the keeper's last tick */
	RedlockEndpoint endpoints[REDLOCK_MAX_ENDPOINTS];
	int		   *freelist;		/* indexes of free slots, a stack */
	RedlockSlot slots[FLEXIBLE_ARRAY_MEMBER];
} SharedTable;

static SharedTable *table = NULL;
static bool exit_hook_registered = false;

/* table_size: bytes of the table with n slots, and its free list. */
static Size
table_size(int n)
{
	return add_size(MAXALIGN(add_size(offsetof(SharedTable, slots),
									  mul_size(sizeof(RedlockSlot), n))),
					mul_size(sizeof(int), n));
}

/* RedlockSharedShmemSize: room for the table; also asks for its LWLock. */
Size
RedlockSharedShmemSize(void)
{
	RequestNamedLWLockTranche("redlock", 1);
	return table_size(redlock_max_tracked_locks);
}

/*
 * RedlockSharedShmemInit: create (postmaster) or attach to the table; from
 * the shmem_startup hook, under AddinShmemInitLock.
 */
void
RedlockSharedShmemInit(void)
{
	bool		found;
	int			i;

	table = ShmemInitStruct("redlock locks", table_size(redlock_max_tracked_locks),
							&found);
	if (!found)
	{
		memset(table, 0, table_size(redlock_max_tracked_locks));
		table->lock = &(GetNamedLWLockTranche("redlock"))->lock;
		table->nslots = redlock_max_tracked_locks;
		table->freelist = (int *) ((char *) table +
								   MAXALIGN(offsetof(SharedTable, slots) +
											sizeof(RedlockSlot) * table->nslots));
		for (i = 0; i < table->nslots; i++)
			table->freelist[i] = table->nslots - 1 - i;
		table->nfree = table->nslots;
		pg_atomic_init_u64(&table->lost_epoch, 0);
		pg_atomic_init_u64(&table->keeper_beat, 0);
	}
}

/* RedlockSharedTable: the table, or NULL without preloading. */
RedlockSlot *
RedlockSharedSlots(int *nslots, LWLock **lock)
{
	if (table == NULL)
		return NULL;
	*nslots = table->nslots;
	*lock = table->lock;
	return table->slots;
}

/* RedlockSharedEndpoint: endpoint i of the table (caller holds the lock). */
const RedlockEndpoint *
RedlockSharedEndpoint(int i)
{
	return &table->endpoints[i];
}

/*
 * endpoint_describe: this backend's settings for its masters, as
 * "name\0value\0" pairs in buf (REDLOCK_ENDPOINT_LEN bytes).  Returns the
 * length, or -1 when they do not fit.
 */
static int
endpoint_describe(char *buf)
{
	static uint64 cached_version = 0;
	static char *cached_servers = NULL;
	static char cached[REDLOCK_ENDPOINT_LEN];
	static int	cached_len = -1;
	static int	cached_replica_ack = -1;
	static uint64 cached_sentinel_version = 0;
	const char *servers = redlock_servers ? redlock_servers : "";
	int			len = 0;
	int			i;

	/* the same settings as last time: the same description */
	if (cached_servers != NULL && cached_version == RedisSettingsVersion() &&
		cached_replica_ack == redlock_replica_ack &&
		cached_sentinel_version == redlock_sentinel_version &&
		strcmp(cached_servers, servers) == 0)
	{
		if (cached_len > 0)
			memcpy(buf, cached, cached_len);
		return cached_len;
	}

	for (i = 0; i < (int) NUM_ENDPOINT_SETTINGS; i++)
	{
		const char *name = endpoint_settings[i];
		const char *value = GetConfigOption(name, true, false);
		size_t		nlen = strlen(name) + 1;
		size_t		vlen;

		if (value == NULL)
			value = "";
		vlen = strlen(value) + 1;
		if (len + nlen + vlen > REDLOCK_ENDPOINT_LEN)
		{
			len = -1;
			break;
		}
		memcpy(buf + len, name, nlen);
		memcpy(buf + len + nlen, value, vlen);
		len += (int) (nlen + vlen);
	}
	if (cached_servers != NULL)
		pfree(cached_servers);
	cached_servers = MemoryContextStrdup(RedlockContext, servers);
	cached_version = RedisSettingsVersion();
	cached_replica_ack = redlock_replica_ack;
	cached_sentinel_version = redlock_sentinel_version;
	cached_len = len;
	if (len > 0)
		memcpy(cached, buf, len);
	return len;
}

/*
 * endpoint_claim: the index of the endpoint with these settings, found or
 * made, with one more user; -1 when all are taken.  Caller holds the lock
 * exclusively.
 */
static int
endpoint_claim(const char *desc, int len)
{
	int			free_one = -1;
	int			i;

	for (i = 0; i < REDLOCK_MAX_ENDPOINTS; i++)
	{
		RedlockEndpoint *ep = &table->endpoints[i];

		if (ep->users > 0 && ep->len == len && memcmp(ep->settings, desc, len) == 0)
		{
			ep->users++;
			return i;
		}
		if (ep->users == 0 && free_one < 0)
			free_one = i;
	}
	if (free_one >= 0)
	{
		RedlockEndpoint *ep = &table->endpoints[free_one];

		memcpy(ep->settings, desc, len);
		ep->len = len;
		ep->users = 1;
	}
	return free_one;
}

/* slot_free: give a slot back (caller holds the lock exclusively). */
static void
slot_free(int i)
{
	RedlockSlot *slot = &table->slots[i];

	if (slot->endpoint >= 0)
		table->endpoints[slot->endpoint].users--;
	slot->in_use = false;
	slot->generation++;
	slot->pid = 0;
	table->freelist[table->nfree++] = i;
}

/*
 * exit_hook: free the slots this backend still has (its locks were
 * released by locks.c's exit callback, or expire).  Never raises.
 */
static void
exit_hook(int code, Datum arg)
{
	int			i;

	if (table == NULL)
		return;
	LWLockAcquire(table->lock, LW_EXCLUSIVE);
	for (i = 0; i < table->nslots; i++)
		if (table->slots[i].in_use && table->slots[i].pid == MyProcPid)
			slot_free(i);
	LWLockRelease(table->lock);
}

/* untracked: say that a lock goes without a slot, and why. */
static void
untracked(const RedlockLock *lock, const char *why)
{
	ereport(WARNING,
			(errmsg("Redis lock \"%s\" is not in redlock's shared lock table: %s", lock->key, why),
			 errdetail("The lock works, but the lease keeper does not renew it and redlock_locks_cluster does not list it."),
			 errhint("Raise redlock.max_tracked_locks (currently %d) and restart, or use shorter keys.",
					 redlock_max_tracked_locks)));
}

/*
 * RedlockSharedTrack: claim a slot for "lock", which this backend starts
 * acquiring (listed as waiting for it).  Without preloading the lock goes
 * untracked (lock->slot = -1); for a key too long for a slot, or when the
 * table is full, too, with a WARNING.  Raises nothing else.
 */
void
RedlockSharedTrack(RedlockLock *lock)
{
	char		desc[REDLOCK_ENDPOINT_LEN];
	int			desclen;
	RedlockSlot *slot;
	bool		no_endpoint;
	int			i;

	lock->slot = -1;
	if (table == NULL)
		return;
	if (lock->rkeylen > REDLOCK_TRACKED_KEY_LEN)
	{
		untracked(lock, psprintf("its key is longer than %d bytes",
								 REDLOCK_TRACKED_KEY_LEN));
		return;
	}
	if (!exit_hook_registered)
	{
		on_shmem_exit(exit_hook, (Datum) 0);
		exit_hook_registered = true;
	}
	desclen = endpoint_describe(desc);

	LWLockAcquire(table->lock, LW_EXCLUSIVE);
	if (table->nfree == 0)
	{
		LWLockRelease(table->lock);
		untracked(lock, "the table is full");
		return;
	}
	i = table->freelist[--table->nfree];
	slot = &table->slots[i];
	slot->generation++;
	slot->in_use = true;
	slot->pid = MyProcPid;
	slot->dbid = MyDatabaseId;
	slot->roleid = GetSessionUserId();	/* as pg_stat_activity.usesysid */
	slot->state = REDLOCK_SLOT_WAITING;
	slot->scope = REDLOCK_SCOPE_TRANSACTION;
	slot->redisson = lock->redisson;
	slot->shared = lock->shared;
	slot->kept = false;
	slot->lost = false;
	slot->ttl_ms = lock->ttl_ms;
	slot->endpoint = desclen < 0 ? -1 : endpoint_claim(desc, desclen);
	no_endpoint = slot->endpoint < 0;
	slot->token = 0;
	slot->since = GetCurrentTimestamp();
	slot->valid_until_us = 0;
	slot->rearm_seq = 0;
	slot->kept_seq = 0;
	slot->kept_until_us = 0;
	slot->lease_end_us = 0;
	slot->renewed_us = 0;
	slot->renewals = 0;
	slot->rkeylen = lock->rkeylen;
	slot->keyoff = (int) (lock->key - lock->rkey);
	memcpy(slot->rkey, lock->rkey, lock->rkeylen);
	slot->rkey[lock->rkeylen] = '\0';
	slot->ownerlen = lock->ownerlen;
	memcpy(slot->owner, lock->owner, lock->ownerlen);
	lock->slot = i;
	lock->slot_generation = slot->generation;
	LWLockRelease(table->lock);
	if (no_endpoint && redlock_lease_keeper)
		ereport(WARNING,
				(errmsg("Redis lock \"%s\" will not be kept by the lease keeper", lock->key),
				 errdetail(desclen < 0 ?
						   "Its Redis settings (server list, credentials, TLS files) are too long to share with the keeper." :
						   "The keeper already serves %d different sets of Redis settings (server list, credentials, TLS files).",
						   REDLOCK_MAX_ENDPOINTS),
				 errhint("Give the roles that take locks fewer distinct Redis settings.")));
}

/* slot_of: the lock's slot if it still has it, else NULL (lock held). */
static RedlockSlot *
slot_of(const RedlockLock *lock)
{
	RedlockSlot *slot;

	if (table == NULL || lock->slot < 0)
		return NULL;
	slot = &table->slots[lock->slot];
	if (!slot->in_use || slot->generation != lock->slot_generation)
		return NULL;
	return slot;
}

/*
 * RedlockSharedHeld: the lock is ours now, or the backend itself re-armed
 * it (token, validity, TTL or scope changed): describe it.  Its deadline
 * is the backend's, exactly (a re-arm may shorten it), and the keeper's
 * figures for earlier re-arms no longer count (rearm_seq).  The first
 * time, the keeper may keep it (redlock.lease_keeper, an endpoint, and a
 * lease capped by redlock.max_lease from now); a lock found lost that the
 * backend re-armed is its own again.  Raises nothing.
 */
void
RedlockSharedHeld(RedlockLock *lock, char scope)
{
	RedlockSlot *slot;

	if (table == NULL || lock->slot < 0)
		return;
	LWLockAcquire(table->lock, LW_EXCLUSIVE);
	slot = slot_of(lock);
	if (slot != NULL)
	{
		if (slot->state != REDLOCK_SLOT_HELD)
		{
			slot->state = REDLOCK_SLOT_HELD;
			slot->since = lock->acquired_at;
			slot->kept = redlock_lease_keeper && slot->endpoint >= 0;
			slot->lease_end_us = redlock_max_lease > 0 ?
				lock->acquired_us + (int64) redlock_max_lease * 1000 : 0;
		}
		slot->scope = scope;
		slot->token = lock->token;
		slot->ttl_ms = lock->ttl_ms;
		slot->drift_factor = redlock_drift_factor;
		slot->ownerlen = lock->ownerlen;
		memcpy(slot->owner, lock->owner, lock->ownerlen);
		if (slot->valid_until_us != lock->valid_until_us)
		{
			/* a new deadline: a (re-)arm of the backend's own */
			slot->valid_until_us = lock->valid_until_us;
			slot->rearm_seq++;
			/* when that arm started: the keeper renews a third of a TTL on */
			slot->renewed_us = lock->valid_until_us -
				RedlockValidUntil(0, lock->ttl_ms);
			if (slot->lost && !lock->lost)
			{
				slot->lost = false;
				slot->kept = redlock_lease_keeper && slot->endpoint >= 0;
			}
		}
	}
	LWLockRelease(table->lock);
}

/*
 * RedlockSharedSync: take in what the keeper learnt about a held lock
 * since the backend's last re-arm: a later validity deadline (it renewed
 * it, never shortening the TTL), or that it found it lost.  Returns true
 * when the keeper found it lost and the lock did not know yet (the caller
 * reports it).  Raises nothing.
 */
bool
RedlockSharedSync(RedlockLock *lock)
{
	RedlockSlot *slot;
	bool		newly_lost = false;

	if (table == NULL || lock->slot < 0)
		return false;
	LWLockAcquire(table->lock, LW_SHARED);
	slot = slot_of(lock);
	if (slot != NULL && slot->state == REDLOCK_SLOT_HELD &&
		slot->kept_seq == slot->rearm_seq && !lock->lost)
	{
		if (slot->lost)
		{
			lock->lost = true;
			newly_lost = true;
		}
		else if (slot->kept_until_us > lock->valid_until_us)
			lock->valid_until_us = slot->kept_until_us;
	}
	LWLockRelease(table->lock);
	return newly_lost;
}

/* RedlockSharedLostEpoch: changes whenever the keeper finds a lock lost. */
uint64
RedlockSharedLostEpoch(void)
{
	return table ? pg_atomic_read_u64(&table->lost_epoch) : 0;
}

/*
 * RedlockSharedMarkLost: the keeper found the lock of slot s lost, after
 * the backend's last re-arm (caller holds the lock exclusively).
 */
void
RedlockSharedMarkLost(RedlockSlot *s)
{
	s->lost = true;
	s->kept = false;
	s->kept_seq = s->rearm_seq;
	pg_atomic_fetch_add_u64(&table->lost_epoch, 1);
}

/* RedlockSharedKeeperBeat: the keeper is alive (once per tick). */
void
RedlockSharedKeeperBeat(void)
{
	pg_atomic_write_u64(&table->keeper_beat, (uint64) RedlockNowUs());
}

/*
 * RedlockSharedSlotKept: whether the keeper renews the lock of slot s at
 * "now": it was kept, is not lost, its lease has not run out, it was armed
 * or renewed within its TTL (its masters answer the keeper), the keeper is
 * on here and has ticked in the last two seconds (it may have failed to
 * start, or be restarting).
 */
bool
RedlockSharedSlotKept(const RedlockSlot *s, int64 now)
{
	return s->state == REDLOCK_SLOT_HELD && s->kept && !s->lost &&
		(s->lease_end_us == 0 || now < s->lease_end_us) &&
		now < s->renewed_us + (int64) s->ttl_ms * 1000 &&
		redlock_lease_keeper &&
		now - (int64) pg_atomic_read_u64(&table->keeper_beat) < 2000000;
}

/* RedlockSharedKept: whether the keeper renews this lock. */
bool
RedlockSharedKept(const RedlockLock *lock)
{
	RedlockSlot *slot;
	bool		kept = false;

	if (table == NULL || lock->slot < 0)
		return false;
	LWLockAcquire(table->lock, LW_SHARED);
	slot = slot_of(lock);
	if (slot != NULL)
		kept = RedlockSharedSlotKept(slot, RedlockNowUs());
	LWLockRelease(table->lock);
	return kept;
}

/*
 * RedlockSharedUntrack: the key left this backend's lock table: free its
 * slot.  Called from commit and abort callbacks: raises nothing.
 */
void
RedlockSharedUntrack(RedlockLock *lock)
{
	if (table == NULL || lock->slot < 0)
		return;
	LWLockAcquire(table->lock, LW_EXCLUSIVE);
	if (slot_of(lock) != NULL)
		slot_free(lock->slot);
	LWLockRelease(table->lock);
	lock->slot = -1;
}

/*
 * RedlockSharedApplyEndpoint: make this process's settings those of
 * endpoint "desc" (a copy of an endpoint's settings), so that
 * RedlockConfiguredServers and the connections use them.  For the keeper.
 */
void
RedlockSharedApplyEndpoint(const char *desc, int len)
{
	int			off = 0;

	while (off < len)
	{
		const char *name = desc + off;
		const char *value = name + strlen(name) + 1;

		(void) set_config_option(name, value, PGC_SUSET, PGC_S_SESSION,
								 GUC_ACTION_SET, true, 0, false);
		off = (int) (value + strlen(value) + 1 - desc);
	}
}
