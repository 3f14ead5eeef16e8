/*-------------------------------------------------------------------------
 *
 * redlock.h
 *	  Types and cross-module functions of the redlock extension.
 *
 * redlock lets a PostgreSQL transaction hold Redis locks (the Redlock
 * algorithm over one or several independent masters) and gives them back
 * only after the transaction's commit is visible, or at abort.
 *
 * One reason to change per file:
 *	  guc.c		configuration: GUC definitions, parsing of redlock.servers
 *	  redis.h	the Redis client layer (Redis* functions): transport.c,
 *				creds.c, conn.c, waitset.c, batch.c, pubsub.c; see there
 *	  algo.c	the Redlock algorithm: scripts, quorum, validity, fencing
 *				tokens (Redlock* functions that talk to Redis)
 *	  locks.c	this backend's lock table, (sub)transaction and exit
 *				callbacks (RedlockLock* functions)
 *	  stats.c	counters per backend and, when preloaded, per cluster
 *	  views.c	what the redlock_locks and redlock_servers views show
 *	  redlock.c	_PG_init and the SQL-callable functions (argument checks)
 *
 * Everything here is per backend: there is no shared memory, so no lock
 * protects these structures; a backend only ever touches its own.
 *
 * Time: deadlines and validity use the boot-time clock in microseconds
 * (RedlockNowUs), so a wall-clock step cannot lengthen a lock's life, nor
 * a suspend hide that it ended.
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REDLOCK_H
#define REDLOCK_H

#include <time.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "lib/stringinfo.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"
#include "utils/memutils.h"

#include "redis.h"

/* Limits, documented in the README. */
#define REDLOCK_VALUE_LEN		32	/* hex characters of an owner value */
#define REDLOCK_OWNER_LEN		80	/* an owner identity (see lock_create) */
#define REDLOCK_MAX_TTL_MS		86400000	/* one day */
#define REDLOCK_MAX_SERVERS		16
#define REDLOCK_MAX_KEYS		64	/* keys taken together in one call */

/* A waiting backend tries again at least this often: it keeps its queue
 * entries alive (see algo.c). */
#define REDLOCK_QUEUE_REFRESH_MS	1000

/* A waiting acquire rides out a sentinel or cluster failover this long at
 * most (within its wait limit), trying again this often (see locks.c). */
#define REDLOCK_FAILOVER_RIDE_MS	60000
#define REDLOCK_FAILOVER_RETRY_MS	100

/*
 * Suffix that turns a lock key into the key of its fencing counter.  It
 * starts with a NUL byte, which a PostgreSQL text value cannot contain, so
 * no key locked from SQL can ever collide with a counter.
 */
#define REDLOCK_FENCE_SUFFIX		"\0fence"
#define REDLOCK_FENCE_SUFFIX_LEN	6

/*
 * The same for the key's queue of waiting backends (a sorted set by
 * ticket), their liveness deadlines (a sorted set by expiry time), and the
 * note of since when a free key has been promised to the queue's head.
 */
#define REDLOCK_WAITERS_SUFFIX		"\0waiters"
#define REDLOCK_WAITERS_SUFFIX_LEN	8
/* only the scripts make these two, from the lock key: written for Lua */
#define REDLOCK_WAITEXP_SUFFIX_LUA	"\\0waitexp"
#define REDLOCK_PROMISED_SUFFIX_LUA	"\\0promised"

/*
 * Shared holds (see algo.c): the key holds the marker (a NUL first: no
 * owner value of any client looks like it) while the readers, a sorted
 * set of owner values by lease end, hold it; a shared waiter's member in
 * the queue is its wake channel followed by the mode suffix.
 */
#define REDLOCK_READERS_SUFFIX		"\0readers"
#define REDLOCK_READERS_SUFFIX_LEN	8
#define REDLOCK_SHARED_MARKER		"\0redlock:shared"
#define REDLOCK_SHARED_MARKER_LEN	15
#define REDLOCK_READERS_SUFFIX_LUA	"\\0readers"
#define REDLOCK_SHARED_MARKER_LUA	"\\0redlock:shared"
#define REDLOCK_SHARED_MEMBER_LUA	"\\0s"

/* Memory that outlives a statement: servers, lock table, wait set. */
extern MemoryContext RedlockContext;

/*
 * RedlockUnixUs: the wall clock in Unix microseconds (queue tickets and
 * fencing counter seeds, which Redis compares with its own TIME).
 */
static inline int64
RedlockUnixUs(void)
{
	return GetCurrentTimestamp() +
		(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * USECS_PER_SEC;
}

/*
 * Monotonic clock in microseconds, for deadlines and validity: immune to
 * wall-clock steps, and (CLOCK_BOOTTIME) it keeps counting while the
 * machine is suspended, as Redis's TTLs do; CLOCK_MONOTONIC would stop and
 * make a lock look valid after a suspend that outlasted it.  Cheap (vDSO).
 */
static inline int64
RedlockNowUs(void)
{
	struct timespec ts;

#ifdef CLOCK_BOOTTIME
	clock_gettime(CLOCK_BOOTTIME, &ts);
#else
	clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
	return (int64) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*
 * An ERROR caught in a callback (PG_TRY ... PG_CATCH) must not change how
 * interrupts are held: errfinish() zeroes the hold-off counts before it
 * jumps to the handler, assuming the transaction is about to abort, and the
 * RESUME_INTERRUPTS() calls that follow would wrap them around and leave
 * the backend deaf to cancel and termination.  Save them before PG_TRY and
 * restore them first thing in PG_CATCH.
 */
typedef struct RedlockHoldoff
{
	uint32		interrupts;
	uint32		cancels;
	uint32		crit_sections;
} RedlockHoldoff;

static inline RedlockHoldoff
RedlockHoldoffSave(void)
{
	RedlockHoldoff h;

	h.interrupts = InterruptHoldoffCount;
	h.cancels = QueryCancelHoldoffCount;
	h.crit_sections = CritSectionCount;
	return h;
}

static inline void
RedlockHoldoffRestore(RedlockHoldoff h)
{
	InterruptHoldoffCount = h.interrupts;
	QueryCancelHoldoffCount = h.cancels;
	CritSectionCount = h.crit_sections;
}

/* ------------------------------------------------------------------------
 * guc.c: configuration
 * ------------------------------------------------------------------------
 */

typedef struct RedlockServerList
{
	int			nservers;
	RedlockServerSpec servers[FLEXIBLE_ARRAY_MEMBER];
} RedlockServerList;

extern char *redlock_servers;
extern char *redlock_key_prefix;
extern int	redlock_key_horizon;
extern int	redlock_replica_ack;
extern int	redlock_max_tracked_locks;
extern bool redlock_lease_keeper;
extern int	redlock_max_lease;
extern int	redlock_lock_format;
extern int	redlock_connect_timeout;
extern int	redlock_command_timeout;
extern int	redlock_default_ttl;
extern int	redlock_wait_timeout;
extern int	redlock_retry_delay;
extern int	redlock_retry_jitter;
extern double redlock_drift_factor;
extern int	redlock_commit_margin;
extern char *redlock_username;
extern char *redlock_sentinel_username;
extern char *redlock_sentinel_password;
extern uint64 redlock_sentinel_version;
extern char *redlock_password;
extern char *redlock_passfile;
extern int	redlock_database;
extern int	redlock_snapshot_check;
extern int	redlock_sslmode;
extern char *redlock_sslrootcert;
extern char *redlock_sslcert;
extern char *redlock_sslkey;
extern char *redlock_sslcrl;

/* values of redlock.sslmode, as libpq's (for rediss:// entries) */
typedef enum RedlockSslMode
{
	REDLOCK_SSLMODE_REQUIRE,
	REDLOCK_SSLMODE_VERIFY_CA,
	REDLOCK_SSLMODE_VERIFY_FULL
} RedlockSslMode;

/* values of redlock.snapshot_check */
typedef enum RedlockSnapshotCheck
{
	REDLOCK_SNAPSHOT_OFF,
	REDLOCK_SNAPSHOT_WARNING,
	REDLOCK_SNAPSHOT_ERROR
} RedlockSnapshotCheck;

/* redlock.lock_format: how a lock is stored in Redis */
typedef enum RedlockLockFormat
{
	REDLOCK_FORMAT_STRING,		/* a string (node-redlock, redsync, redis-py) */
	REDLOCK_FORMAT_REDISSON		/* a hash, as Redisson's RLock */
} RedlockLockFormat;

extern void RedlockDefineGucs(void);
extern bool RedlockCredentialsInSettings(void);
extern const RedlockServerList *RedlockConfiguredServers(void);

/* ------------------------------------------------------------------------
 * algo.c: the Redlock algorithm
 * ------------------------------------------------------------------------
 */

/* A lock this backend holds or is acquiring; the lock table's entry. */
typedef struct RedlockLock
{
	char	   *rkey;			/* hash key: the Redis key, prefix || key */
	char	   *key;			/* the key as SQL gave it (inside rkey) */
	int			rkeylen;
	bool		redisson;		/* stored as Redisson's RLock (a hash) */
	bool		shared;			/* a shared hold (algo.c): many may share it */
	char		owner[REDLOCK_OWNER_LEN + 1];	/* our owner identity: the
												 * value, or the hash field */
	int			ownerlen;
	char		channel[REDIS_CHANNEL_LEN];	/* our wake channel under the
											 * key's prefix */
	int64		token;			/* fencing token */
	int			ttl_ms;
	TimestampTz acquired_at;	/* wall clock when the winning attempt began */
	int64		acquired_us;	/* monotonic, the same moment */
	int64		valid_until_us; /* monotonic: see RedlockValidUntil */

	/* holds: a Redis lock is released when both counts reach zero */
	int			session_count;	/* session-level acquisitions */
	int			nholds;			/* transaction-level: per subtransaction */
	int			maxholds;
	struct RedlockHold *holds;
	SubTransactionId pending_subid; /* acquire in flight; else Invalid */
	bool		lost;			/* found expired or taken over; reported */

	/* the masters asked, fixed at acquisition; release goes to all */
	int			nservers;
	RedisServer *servers[REDLOCK_MAX_SERVERS];
	uint32		granted;		/* bit per servers[] that said yes */
	/*
	 * For each master that said yes, the serial of the connection its
	 * answer came on: the connection that holds its word.  Once that
	 * connection is gone (the master may have restarted without its data),
	 * its word is in doubt.
	 */
	uint32		granted_on[REDLOCK_MAX_SERVERS];

	/* its slot in the cluster's table (shared.c), -1 none, and the
	 * slot's generation when claimed */
	int			slot;
	uint32		slot_generation;
} RedlockLock;

typedef struct RedlockHold
{
	SubTransactionId subid;
	int			count;
} RedlockHold;

/* How the masters answered one request, for decisions and messages. */
typedef struct RedlockTally
{
	int			nservers;
	int			granted;		/* acquire: granted; release/extend: done */
	int			refused;		/* held by someone else / not ours */
	int			failed;			/* error, timeout, unreachable */
	int			failed_over;	/* of them, what a failover under way may
								 * explain (RedisFailoverMayExplain) */
	int			unanswered;		/* still in flight when we stopped */
	int64		holder_pttl_ms; /* smallest remaining TTL seen, -1 none */
	RedisFailure first_failure;
	char		first_server[REDLOCK_ERROR_LEN];	/* a copy (a cluster's node
												 * may be reused): "" when
												 * nothing failed */
	char		first_error[REDLOCK_ERROR_LEN];
	bool		validity_lost;	/* granted on a quorum, but too late */
} RedlockTally;

typedef enum RedlockVerdict
{
	REDLOCK_ACQUIRED,			/* held on a quorum, validity left */
	REDLOCK_BUSY,				/* someone else holds it, validity ran out,
								 * or the wait's deadline came first */
	REDLOCK_UNREACHABLE			/* a quorum cannot be asked */
} RedlockVerdict;

typedef enum RedlockReleaseResult
{
	REDLOCK_RELEASED,			/* deleted on a quorum */
	REDLOCK_WAS_LOST,			/* expired or taken over before release */
	REDLOCK_RELEASE_FAILED		/* servers unreachable: the TTL will do it */
} RedlockReleaseResult;

typedef enum RedlockExtendResult
{
	REDLOCK_EXTENDED,			/* re-armed on a quorum, validity left */
	REDLOCK_EXTEND_LOST,		/* expired or taken over */
	REDLOCK_EXTEND_UNCONFIRMED	/* too few masters answered */
} RedlockExtendResult;

/* Where a release runs: it decides what the batch may do (see batch.c). */
typedef enum RedlockWhen
{
	REDLOCK_IN_STATEMENT,		/* a SQL function: anything goes */
	REDLOCK_IN_CALLBACK,		/* COMMIT, ABORT: no ERROR, no connect */
	REDLOCK_AT_EXIT				/* proc exit: no ERROR, may reconnect */
} RedlockWhen;

extern int	RedlockQuorum(int nservers);
extern int64 RedlockValidUntil(int64 start_us, int ttl_ms);
extern int64 RedlockValidUntilDrift(int64 start_us, int ttl_ms, double drift_factor);

/* Every fencing token is at least this: they start at a clock in us. */
#define REDLOCK_MIN_TOKEN		INT64CONST(1000000000000000)
extern bool RedlockTtlLeavesValidity(int ttl_ms);
/* deadlock.c */
extern const char *RedlockBackendIdent(void);
extern int64 RedlockDeadlockDue(int64 start, int64 last, int64 published,
								int64 *publish);
extern void RedlockDeadlockPublish(RedlockLock **waiting, int n, int64 since,
								   int64 deadline);
extern bool RedlockDeadlockCheck(RedlockLock **waiting, int n, int64 since,
								 int64 deadline, StringInfo detail);
extern void RedlockDeadlockForget(RedlockLock *lock);

extern char *RedlockCompanionKey(const char *rkey, int rkeylen,
								 const char *suffix, size_t suffixlen,
								 bool cluster, size_t *len);
extern RedlockVerdict RedlockTryAcquire(RedlockLock **locks, int nlocks,
										int64 ticket, int64 deadline,
										RedlockTally *tally, int *blocking);
extern void RedlockRelease(RedlockLock **locks, int nlocks,
						   RedlockReleaseResult *results,
						   RedlockTally *tallies, RedlockWhen when);
extern void RedlockExtendMany(RedlockLock **locks, int nlocks,
							  const int *ttls, bool lengthen_only,
							  RedlockExtendResult *results,
							  RedlockTally *tallies);
extern RedlockExtendResult RedlockExtend(RedlockLock *lock, int ttl_ms,
										 RedlockTally *tally);
extern bool RedlockLockInDoubt(RedlockLock *lock, int64 now);
extern void RedlockDescribeTally(const RedlockTally *tally,
								 StringInfo buf);
extern void RedlockPrepareScripts(void);

/* ------------------------------------------------------------------------
 * locks.c: the lock table and transaction callbacks
 * ------------------------------------------------------------------------
 */

extern void RedlockLockInit(void);
extern HTAB *RedlockLockTable(void);
extern bool RedlockLockAcquire(const char *const *keys, int nkeys, int ttl_ms,
							   int wait_ms, bool session, bool dontwait,
							   bool shared, int64 *tokens);
extern bool RedlockLockReleaseSession(const char *key, bool shared);
extern bool RedlockLockExtend(const char *key, int ttl_ms);
extern bool RedlockLockToken(const char *key, int64 *token);
extern int	RedlockLockReleaseAllSession(void);

/* ------------------------------------------------------------------------
 * stats.c: counters.  The SQL definitions of redlock_stats and
 * redlock_stats_cluster list the same columns in the same order.
 * ------------------------------------------------------------------------
 */

typedef enum RedlockCounter
{
	REDLOCK_ACQUIRES,			/* locks newly taken in Redis */
	REDLOCK_REENTRIES,			/* acquisitions of a lock already held */
	REDLOCK_TRY_BUSY,			/* try functions that returned NULL */
	REDLOCK_WAITS,				/* acquisitions that had to wait */
	REDLOCK_WAIT_TIME_US,		/* time spent in those waits */
	REDLOCK_WAKEUPS,			/* wake-ups received while waiting */
	REDLOCK_TIMEOUTS,			/* waits ended by a limit (55P03) */
	REDLOCK_UNREACHABLES,		/* acquisitions that failed with 08xxx */
	REDLOCK_RELEASES,			/* locks released on a majority */
	REDLOCK_FAILED_RELEASES,	/* releases a majority did not confirm */
	REDLOCK_LOST_RELEASES,		/* locks found lost when released */
	REDLOCK_EXTENDS,			/* redlock_extend calls that succeeded */
	REDLOCK_COMMIT_EXTENDS,		/* locks re-armed by the commit check */
	REDLOCK_LOST_AT_COMMIT,		/* commits refused: a lock was lost */
	REDLOCK_RECONNECTS,			/* connections to a master re-established */
	/* since 1.3, after "since" in the views */
	REDLOCK_FAILOVERS,			/* sentinels named another primary */
	REDLOCK_REDIRECTS,			/* a cluster's MOVED and ASK followed */
	/* since 1.5 */
	REDLOCK_DEADLOCK_CHECKS,	/* deadlock checks run by waits */
	REDLOCK_DEADLOCKS,			/* waits ended by a deadlock (40P01) */
	REDLOCK_NUM_COUNTERS
} RedlockCounter;

extern void RedlockCount(RedlockCounter counter, int64 n);
extern Size RedlockStatsShmemSize(void);
extern void RedlockStatsShmemInit(void);

/*
 * shared.c: the cluster's table of locks (with shared_preload_libraries),
 * and keeper.c: the lease keeper that renews them.
 */
#define REDLOCK_TRACKED_KEY_LEN	512 /* longer keys are neither listed nor kept */
#define REDLOCK_MAX_ENDPOINTS	16	/* distinct sets of master settings */
#define REDLOCK_ENDPOINT_LEN	8192	/* bytes of one set, "name\0value\0"... */

#define REDLOCK_SLOT_WAITING	'w'
#define REDLOCK_SLOT_HELD		'h'
#define REDLOCK_SCOPE_TRANSACTION 't'
#define REDLOCK_SCOPE_SESSION	's'
#define REDLOCK_SCOPE_BOTH		'b'

typedef struct RedlockEndpoint
{
	int			users;			/* slots that use it; 0: free */
	int			len;
	char		settings[REDLOCK_ENDPOINT_LEN];
} RedlockEndpoint;

typedef struct RedlockSlot
{
	uint32		generation;		/* changes whenever the slot is claimed or
								 * freed */
	bool		in_use;
	int			pid;
	Oid			dbid;
	Oid			roleid;
	char		state;			/* REDLOCK_SLOT_* */
	char		scope;			/* REDLOCK_SCOPE_* */
	bool		redisson;
	bool		shared;			/* a shared hold */
	bool		kept;			/* the keeper renews it */
	bool		lost;			/* the keeper found it lost */
	int			ttl_ms;
	double		drift_factor;	/* the backend's redlock.drift_factor */
	int			endpoint;		/* index of its settings, -1: none */
	int64		token;
	TimestampTz since;			/* acquired, or started waiting */
	int64		valid_until_us; /* monotonic: the backend's own deadline, as
								 * of its last (re-)arm */
	uint32		rearm_seq;		/* bumped at each of the backend's re-arms */
	uint32		kept_seq;		/* the rearm_seq the keeper's figures are for */
	int64		kept_until_us;	/* monotonic: deadline after the keeper's last
								 * renewal (valid while kept_seq == rearm_seq) */
	int64		lease_end_us;	/* monotonic: renewed no later; 0: no cap */
	int64		renewed_us;		/* monotonic: last renewal or (re-)arm */
	uint64		renewals;
	int			rkeylen;
	int			keyoff;			/* the SQL key within rkey */
	int			ownerlen;
	char		owner[REDLOCK_OWNER_LEN + 1];
	char		rkey[REDLOCK_TRACKED_KEY_LEN + 1];
} RedlockSlot;

extern Size RedlockSharedShmemSize(void);
extern void RedlockSharedShmemInit(void);
extern RedlockSlot *RedlockSharedSlots(int *nslots, LWLock **lock);
extern const RedlockEndpoint *RedlockSharedEndpoint(int i);
extern void RedlockSharedTrack(RedlockLock *lock);
extern void RedlockSharedHeld(RedlockLock *lock, char scope);
extern bool RedlockSharedSync(RedlockLock *lock);
extern bool RedlockSharedKept(const RedlockLock *lock);
extern uint64 RedlockSharedLostEpoch(void);
extern void RedlockSharedMarkLost(RedlockSlot *s);
extern void RedlockSharedKeeperBeat(void);
extern bool RedlockSharedSlotKept(const RedlockSlot *s, int64 now);
extern void RedlockSharedUntrack(RedlockLock *lock);
extern void RedlockSharedApplyEndpoint(const char *desc, int len);
extern void RedlockKeeperInit(void);

#endif							/* REDLOCK_H */
