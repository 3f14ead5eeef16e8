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
 *	  conn.c	Redis connections: non-blocking connect, pipelined script
 *				calls to several servers, answers collected in one
 *				WaitEventSet (Redis* functions)
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
 * Time: deadlines and validity use the monotonic clock in microseconds
 * (RedlockNowUs), so a wall-clock step cannot lengthen a lock's life.
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REDLOCK_H
#define REDLOCK_H

#include <time.h>

#include "access/xact.h"
#include "lib/stringinfo.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"
#include "utils/memutils.h"

/* hiredis is only seen by conn.c; the others use the server handle. */
typedef struct redisContext redisContext;

/* Limits, documented in the README. */
#define REDLOCK_VALUE_LEN		32	/* hex characters of an owner value */
#define REDLOCK_MAX_KEY_LEN		4096	/* bytes of prefix || key */
#define REDLOCK_MAX_PREFIX_LEN	256 /* bytes of redlock.key_prefix */
#define REDLOCK_MAX_TTL_MS		86400000	/* one day */
#define REDLOCK_MAX_SERVERS		16
#define REDLOCK_ADDR_LEN		272 /* "[" host "]:" port, or a socket path */
#define REDLOCK_ERROR_LEN		256 /* last error kept per server */
#define REDLOCK_CRED_LEN		256 /* Redis user names and passwords */

/*
 * Suffix that turns a lock key into the key of its fencing counter.  It
 * starts with a NUL byte, which a PostgreSQL text value cannot contain, so
 * no key locked from SQL can ever collide with a counter.
 */
#define REDLOCK_FENCE_SUFFIX		"\0fence"
#define REDLOCK_FENCE_SUFFIX_LEN	6

/*
 * The same for the key's queue of waiting backends (a sorted set by
 * ticket) and their liveness deadlines (a sorted set by expiry time).
 */
#define REDLOCK_WAITERS_SUFFIX		"\0waiters"
#define REDLOCK_WAITERS_SUFFIX_LEN	8
#define REDLOCK_WAITEXP_SUFFIX		"\0waitexp"
#define REDLOCK_WAITEXP_SUFFIX_LEN	8

/* Pub/sub channel of a waiting backend: this prefix and 16 hex digits. */
#define REDLOCK_WAKE_CHANNEL_PREFIX "redlock:wake:"

/* Memory that outlives a statement: servers, lock table, wait set. */
extern MemoryContext RedlockContext;

/* Monotonic clock in microseconds: cheap (vDSO) and immune to clock steps. */
static inline int64
RedlockNowUs(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ------------------------------------------------------------------------
 * guc.c: configuration
 * ------------------------------------------------------------------------
 */

/* One entry of redlock.servers, as parsed by the check hook. */
typedef struct RedlockServerSpec
{
	char		addr[REDLOCK_ADDR_LEN]; /* canonical form, the identity; never
										 * holds credentials */
	char		host[REDLOCK_ADDR_LEN]; /* host name or IP, or socket path */
	int			port;			/* TCP port; 0 for a unix socket */
	char		user[REDLOCK_CRED_LEN]; /* from a redis:// URL, or "" */
	char		password[REDLOCK_CRED_LEN];	/* from a redis:// URL, or "" */
	int			db;				/* from a redis:// URL, or -1 */
} RedlockServerSpec;

typedef struct RedlockServerList
{
	int			nservers;
	RedlockServerSpec servers[FLEXIBLE_ARRAY_MEMBER];
} RedlockServerList;

extern char *redlock_servers;
extern char *redlock_key_prefix;
extern int	redlock_connect_timeout;
extern int	redlock_command_timeout;
extern int	redlock_default_ttl;
extern int	redlock_wait_timeout;
extern int	redlock_retry_delay;
extern int	redlock_retry_jitter;
extern double redlock_drift_factor;
extern int	redlock_commit_margin;
extern char *redlock_username;
extern char *redlock_password;
extern char *redlock_passfile;
extern uint64 redlock_credentials_generation;
extern int	redlock_database;
extern int	redlock_snapshot_check;

/* values of redlock.snapshot_check */
typedef enum RedlockSnapshotCheck
{
	REDLOCK_SNAPSHOT_OFF,
	REDLOCK_SNAPSHOT_WARNING,
	REDLOCK_SNAPSHOT_ERROR
} RedlockSnapshotCheck;

extern void RedlockDefineGucs(void);
extern bool RedlockCredentialsInSettings(void);
extern const RedlockServerList *RedlockConfiguredServers(void);

/* ------------------------------------------------------------------------
 * conn.c: Redis connections and pipelined, fanned-out script calls
 * ------------------------------------------------------------------------
 */

/* A Lua script run with EVALSHA (EVAL the first time on a connection). */
typedef struct RedisScript
{
	const char *name;			/* for messages */
	const char *body;
	int			nkeys;			/* leading arguments that are KEYS */
	int			id;				/* bit in RedisServer.scripts_loaded */
	char		sha[41];		/* filled in lazily by conn.c */
} RedisScript;

/*
 * What happened to one server while we needed it.  Every kind but
 * REDIS_FAIL_REPLY means we do not know what the server did.
 */
typedef enum RedisFailure
{
	REDIS_FAIL_NONE = 0,
	REDIS_FAIL_CONNECT,			/* could not connect (or gave up trying) */
	REDIS_FAIL_BACKOFF,			/* not tried: recent connect failure */
	REDIS_FAIL_IO,				/* connection lost or reset */
	REDIS_FAIL_TIMEOUT,			/* no answer within the deadline */
	REDIS_FAIL_PROTOCOL,		/* an answer hiredis or we could not parse */
	REDIS_FAIL_REPLY,			/* Redis answered with an error */
	REDIS_FAIL_AUTH,			/* authentication missing or refused */
	REDIS_FAIL_PERM				/* the ACL user may not do what we asked */
} RedisFailure;

/* A server's subscription connection, for wake-ups while waiting. */
typedef struct RedisSubConn
{
	redisContext *ctx;			/* NULL until the first wait */
	int			handshake;		/* AUTH replies still to come */
	uint64		credentials;	/* redlock_credentials_generation at connect */
	bool		connecting;
	bool		ready;			/* SUBSCRIBE confirmed */
	bool		want_write;
	int64		deadline;		/* us; for connect and SUBSCRIBE */
	int			wes_pos;
	uint32		wes_events;
} RedisSubConn;

/* One Redis server as this backend knows it; never freed once created. */
typedef struct RedisServer
{
	char		addr[REDLOCK_ADDR_LEN];
	char		host[REDLOCK_ADDR_LEN];
	int			port;
	char		user[REDLOCK_CRED_LEN]; /* from its redis:// entry, or "" */
	char		password[REDLOCK_CRED_LEN];
	int			db;				/* from its redis:// entry, or -1 */
	char		passfile_note[REDLOCK_ERROR_LEN];	/* why redlock.passfile was
													 * not used, or "" */

	redisContext *ctx;			/* NULL while disconnected */
	int			handshake;		/* AUTH/SELECT replies still to come */
	uint64		credentials;	/* redlock_credentials_generation at connect */
	bool		connecting;		/* non-blocking connect not confirmed yet */
	int64		connect_deadline;	/* us; while connecting */
	int			owed;			/* replies the server still owes us */
	uint32		scripts_loaded; /* bit per RedisScript.id known here */
	int64		retry_after;	/* us; no new connect attempt before */
	int			backoff_ms;		/* current backoff, grows on failures */
	bool		want_write;		/* output left for when it is writable */
	int			wes_pos;		/* position in the wait set */
	uint32		wes_events;		/* events registered there */
	RedisSubConn sub;			/* subscription connection */

	/* state of the batch in progress (valid while batch_epoch matches) */
	uint64		batch_epoch;
	int64		batch_deadline; /* us */
	int			batch_skip;		/* leading replies nobody in it wants */
	bool		batch_retry;	/* existed at start, nothing heard since */
	bool		batch_behind;	/* still owed earlier replies at start */
	struct RedisCall *batch_head;	/* calls waiting, in send order */
	struct RedisCall *batch_tail;

	/* for the redlock_servers view and error messages */
	RedisFailure last_failure;
	char		last_error[REDLOCK_ERROR_LEN];
	TimestampTz last_error_at;
	int64		last_rtt_us;
	int64		connects;		/* successful connects, reconnects included */
} RedisServer;

typedef enum RedisCallState
{
	REDIS_CALL_WAITING = 0,		/* sent (or queued), no answer yet */
	REDIS_CALL_DONE,			/* integer answer in ints[] */
	REDIS_CALL_FAILED			/* failure and error say why */
} RedisCallState;

#define REDIS_CALL_MAX_ARGS	10

/* One script call to one server within a batch. */
typedef struct RedisCall
{
	/* set by the caller */
	RedisServer *server;
	RedisScript *script;
	int			nargs;			/* KEYS first, then ARGV */
	const char *args[REDIS_CALL_MAX_ARGS];
	size_t		arglens[REDIS_CALL_MAX_ARGS];
	int			tag;			/* free for the caller */

	/* set by RedisRun */
	RedisCallState state;
	int			nints;			/* answer: an integer or an array of them */
	long long	ints[2];
	RedisFailure failure;
	char	   *error;			/* palloc'd text, for FAILED */
	bool		used_eval;		/* sent as EVAL, not EVALSHA */
	bool		held;			/* queued, not written: the connection's
								 * AUTH/SELECT have not answered yet */
	bool		behind;			/* its server had not answered earlier
								 * requests when this one was sent */
	struct RedisCall *next_waiting;
} RedisCall;

/* Called after each round of answers; true ends the batch early. */
typedef bool (*RedisSettledFn) (RedisCall *calls, int ncalls, void *arg);

extern RedisServer *RedisServerGet(const RedlockServerSpec *spec);
extern RedisServer **RedisServers(int *n);
extern void RedisScriptPrepare(RedisScript *script);
extern void RedisCallInit(RedisCall *call, RedisServer *server,
						  RedisScript *script, int tag);
extern void RedisCallArg(RedisCall *call, const char *arg, size_t len);
extern void RedisRun(RedisCall *calls, int ncalls, int timeout_ms,
					 RedisSettledFn settled, void *arg);
extern const char *RedisFailureText(RedisFailure failure);
extern const char *RedisWakeChannel(void);
extern uint64 RedisWakeCount(void);
extern void RedisSubscribe(RedisServer **srvs, int n, int timeout_ms);
extern bool RedisWaitWake(const char *rkey, uint64 seen, long timeout_ms);
extern void RedisDisconnectAll(void);

/* ------------------------------------------------------------------------
 * algo.c: the Redlock algorithm
 * ------------------------------------------------------------------------
 */

/* A lock this backend holds or is acquiring; the lock table's entry. */
typedef struct RedlockLock
{
	char	   *rkey;			/* hash key: the Redis key, prefix || key */
	char	   *key;			/* the key as SQL gave it */
	int			rkeylen;
	char		value[REDLOCK_VALUE_LEN + 1];	/* our owner value */
	int64		token;			/* fencing token */
	int			ttl_ms;
	TimestampTz acquired_at;	/* wall clock, for display */
	int64		acquired_us;	/* monotonic */
	int64		valid_until_us; /* monotonic: TTL - elapsed - drift */

	/* holds: a Redis lock is released when both counts reach zero */
	int			session_count;	/* session-level acquisitions */
	int			nholds;			/* transaction-level: per subtransaction */
	int			maxholds;
	struct RedlockHold *holds;
	SubTransactionId pending_subid; /* acquire in flight; else Invalid */
	bool		lost;			/* an extend found it gone; reported */

	/* the masters asked, fixed at acquisition; release goes to all */
	int			nservers;
	RedisServer *servers[REDLOCK_MAX_SERVERS];
	uint32		granted;		/* bit per servers[] that said yes */
} RedlockLock;

typedef struct RedlockHold
{
	SubTransactionId subid;
	int			count;
} RedlockHold;

/* What one acquire attempt found, for the caller's decision and messages. */
typedef struct RedlockTally
{
	int			nservers;
	int			granted;
	int			refused;		/* held by someone else */
	int			failed;			/* error, timeout, unreachable */
	int			unanswered;		/* still in flight when we stopped */
	int64		holder_pttl_ms; /* smallest remaining TTL seen, -1 none */
	RedisFailure first_failure;
	const char *first_server;
	const char *first_error;
	bool		validity_lost;	/* granted on a quorum, but too late */
} RedlockTally;

typedef enum RedlockVerdict
{
	REDLOCK_ACQUIRED,			/* held on a quorum, validity left */
	REDLOCK_BUSY,				/* a quorum answered; someone else holds it */
	REDLOCK_UNREACHABLE			/* could not even ask a quorum */
} RedlockVerdict;

typedef enum RedlockReleaseResult
{
	REDLOCK_RELEASED,			/* deleted on a quorum */
	REDLOCK_WAS_LOST,			/* expired or taken over before release */
	REDLOCK_RELEASE_FAILED		/* servers unreachable: the TTL will do it */
} RedlockReleaseResult;

extern int	RedlockQuorum(int nservers);
extern RedlockVerdict RedlockTryAcquire(RedlockLock *lock, int64 ticket,
										RedlockTally *tally);
extern void RedlockRelease(RedlockLock **locks, int nlocks,
						   RedlockReleaseResult *results,
						   RedlockTally *tallies);
extern RedlockReleaseResult RedlockExtend(RedlockLock *lock, int ttl_ms,
										  RedlockTally *tally);
extern void RedlockDescribeTally(const RedlockTally *tally,
								 StringInfo buf);

/* ------------------------------------------------------------------------
 * locks.c: the lock table and transaction callbacks
 * ------------------------------------------------------------------------
 */

extern void RedlockLockInit(void);
extern HTAB *RedlockLockTable(void);
extern bool RedlockLockAcquire(const char *key, int ttl_ms, int wait_ms,
							   bool session, bool dontwait, int64 *token);
extern bool RedlockLockReleaseSession(const char *key);
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
	REDLOCK_NUM_COUNTERS
} RedlockCounter;

extern void RedlockCount(RedlockCounter counter, int64 n);
extern void RedlockStatsInit(void);

#endif							/* REDLOCK_H */
