/*-------------------------------------------------------------------------
 *
 * redis.h
 *	  The Redis client layer of redlock: transports, connections, batches of
 *	  script calls, subscriptions, credentials and the wait set.
 *
 * Layers, bottom up, one file each:
 *	  transport.c	a byte stream to one server: non-blocking connect, read,
 *					write, close (RedisTransport*); plain TCP and unix sockets
 *	  creds.c		which credentials a server gets (its entry, the
 *					password file, the settings), and when they changed
 *	  conn.c		servers and their connections: handshake (AUTH, SELECT),
 *					formatting and parsing with hiredis, reply accounting,
 *					backoff (RedisServer*, RedisConn*)
 *	  waitset.c		the backend's WaitEventSet and one round of waiting
 *	  batch.c		a batch: script calls sent to several servers at once,
 *					answers collected until settled or out of time
 *	  pubsub.c		subscription connections and wake-ups of waiters
 *
 * hiredis is used only to format commands and to parse replies; it never
 * owns a socket, so that the transport underneath can be anything that
 * moves bytes (TLS included).  Everything hiredis allocates is malloc'd
 * and freed with hiredis's functions; no ERROR is raised while a hiredis
 * reply is held.
 *
 * Everything here is per backend; nothing is shared, so nothing is locked.
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REDLOCK_REDIS_H
#define REDLOCK_REDIS_H

#include "utils/timestamp.h"

/* hiredis is seen only by conn.c and pubsub.c */
struct redisReader;
struct redisReply;

#define REDLOCK_ADDR_LEN		272 /* "[" host "]:" port, or a socket path */
#define REDLOCK_ENTRY_LEN		1024	/* an entry's canonical form (sentinels) */
#define REDLOCK_ERROR_LEN		256 /* a failure's text */
#define REDLOCK_CRED_LEN		256 /* Redis user names and passwords */
#define REDLOCK_MAX_PREFIX_LEN	256 /* bytes of redlock.key_prefix */
#define REDLOCK_MAX_KEY_LEN		4096	/* bytes of prefix || key */

/*
 * Wake channels: redlock.key_prefix, this, and 16 hex digits per backend.
 * A subscription connection keeps up to REDIS_SUB_MAX_CHANNELS of them
 * (one per prefix the backend waited under).
 */
#define REDLOCK_WAKE_CHANNEL_INFIX	"redlock:wake:"
#define REDIS_CHANNEL_LEN		(REDLOCK_MAX_PREFIX_LEN + 32)
/* Redisson's unlock channel of a key: "redisson_lock__channel:{key}" */
#define REDIS_KEY_CHANNEL_LEN	(REDLOCK_MAX_KEY_LEN + 32)
#define REDIS_SUB_MAX_CHANNELS	4
#define REDIS_SUB_MAX_PENDING	16	/* unanswered (UN)SUBSCRIBEs on one */
/*
 * Published, followed by a lock key, on a backend's wake channel right
 * before a message on Redisson's channel of that key that it must not
 * count as a wake-up (algo.c).  It starts with a NUL: no key can be
 * mistaken for it.
 */
#define REDIS_SKIP_MARK			"\0skip-next"
#define REDIS_SKIP_MARK_LEN		10
#define REDIS_SKIP_MARK_LUA		"\\0skip-next"

/*
 * Longest time a batch run from a COMMIT, ABORT or exit callback may wait,
 * whatever redlock.command_timeout and redlock.connect_timeout say:
 * interrupts are held there, so nothing else can end the wait.
 */
#define REDLOCK_CALLBACK_MAX_WAIT_MS	5000

/* What one entry of redlock.servers is: a master, or a Sentinel group. */
typedef enum RedisKind
{
	REDIS_KIND_PLAIN = 0,		/* host:port, a socket, redis[s]:// */
	REDIS_KIND_SENTINEL,		/* sentinel[s]://: the master of a group */
	REDIS_KIND_CLUSTER			/* cluster[s]://: a Redis Cluster */
} RedisKind;

#define REDLOCK_MAX_SENTINELS	8	/* hosts of one sentinel:// entry */
#define REDLOCK_MASTER_NAME_LEN	128 /* a Sentinel master name */

/* A host and port (a sentinel). */
typedef struct RedisNode
{
	char		host[REDLOCK_ADDR_LEN];
	int			port;
} RedisNode;

/* One entry of redlock.servers, as parsed by the check hook. */
typedef struct RedlockServerSpec
{
	RedisKind	kind;
	/* sentinel: the sentinels to ask, and the name of the master; cluster:
	 * its seed nodes */
	int			nsentinels;
	RedisNode	sentinels[REDLOCK_MAX_SENTINELS];
	char		master_name[REDLOCK_MASTER_NAME_LEN];
	char		addr[REDLOCK_ENTRY_LEN];	/* canonical form, the identity; never
										 * holds credentials */
	char		host[REDLOCK_ADDR_LEN]; /* host name or IP, or socket path */
	int			port;			/* TCP port; 0 for a unix socket */
	bool		tls;			/* a rediss:// entry */
	char		user[REDLOCK_CRED_LEN]; /* from a redis:// URL, or "" */
	char		password[REDLOCK_CRED_LEN];	/* from a redis:// URL, or "" */
	int			db;				/* from a redis:// URL, or -1 */
} RedlockServerSpec;

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
	REDIS_FAIL_PERM,			/* the ACL user may not do what we asked */
	REDIS_FAIL_REPLICAS			/* done, but too few replicas acknowledged
								 * it (redlock.replica_ack) */
} RedisFailure;

/* ------------------------------------------------------------------------
 * transport.c
 * ------------------------------------------------------------------------
 */

/* Outcome of a transport operation. */
typedef enum RedisIoStatus
{
	REDIS_IO_OK,				/* done (a read or write moved > 0 bytes) */
	REDIS_IO_AGAIN,				/* would block: wait for the events in want */
	REDIS_IO_EOF,				/* the peer closed the stream */
	REDIS_IO_ERROR				/* failed; the text says why */
} RedisIoStatus;

struct RedisTransport;

/*
 * What a kind of transport implements.  When a function returns
 * REDIS_IO_AGAIN it notes the socket event (WL_SOCKET_READABLE or
 * WRITEABLE) it needs before it can make progress: connect_step in want,
 * read in read_want, write in write_want.  TLS may need the socket
 * writable to read, and readable to write.  None raises an ERROR.
 */
typedef struct RedisTransportOps
{
	const char *name;
	/* finish connecting (after the socket reported an event) */
	RedisIoStatus (*connect_step) (struct RedisTransport *t,
								   char *err, size_t errlen);
	/* read up to len bytes; *n gets how many */
	RedisIoStatus (*read) (struct RedisTransport *t, char *buf, size_t len,
						   size_t *n, char *err, size_t errlen);
	/* write up to len bytes; *n gets how many */
	RedisIoStatus (*write) (struct RedisTransport *t, const char *buf,
							size_t len, size_t *n, char *err, size_t errlen);
	/* release what the transport holds; the socket is closed by the caller */
	void		(*close) (struct RedisTransport *t);
	/* bytes read from the socket and not handed out yet (NULL: none ever) */
	size_t		(*pending) (struct RedisTransport *t);
} RedisTransportOps;

typedef struct RedisTransport
{
	const RedisTransportOps *ops;
	int			fd;				/* -1 while closed */
	uint32		want;			/* what connect_step waits for */
	uint32		read_want;		/* what a blocked read waits for, or 0 */
	uint32		write_want;		/* what a blocked write waits for, or 0 */
	bool		handshaking;	/* connected, in the TLS handshake */
	void	   *state;			/* the transport's own (malloc'd) */
} RedisTransport;

extern bool RedisTransportOpen(RedisTransport *t, const char *host, int port,
							   char *err, size_t errlen);
extern void RedisTransportClose(RedisTransport *t);
extern bool RedisTransportConnected(RedisTransport *t, char *err, size_t errlen);

/* transport_tls.c */
extern bool RedisTransportOpenTls(RedisTransport *t, const char *host, int port,
								  char *err, size_t errlen);
extern bool RedisTransportTlsInfo(const RedisTransport *t, const char **version,
								  const char **cipher);

/* ------------------------------------------------------------------------
 * conn.c: servers and connections
 * ------------------------------------------------------------------------
 */

/* A Lua script run with EVALSHA (EVAL the first time on a connection). */
typedef struct RedisScript
{
	const char *name;			/* for messages */
	const char *body;
	int			nkeys;			/* leading arguments that are KEYS */
	int			id;				/* bit in RedisConn.scripts_loaded */
	char		sha[41];		/* filled in lazily by RedisScriptPrepare */
} RedisScript;

typedef enum RedisCallState
{
	REDIS_CALL_WAITING = 0,		/* sent (or queued), no answer yet */
	REDIS_CALL_DONE,			/* integer answer in ints[] */
	REDIS_CALL_FAILED,			/* failure and error say why */
	REDIS_CALL_REDIRECT			/* to be sent to redirect_to (a cluster's
								 * MOVED, ASK, TRYAGAIN): batch.c */
} RedisCallState;

#define REDIS_CALL_MAX_ARGS	12

struct RedisServer;

/* A call still without an answer (waiting, or to be sent again). */
#define RedisCallPending(call) \
	((call)->state == REDIS_CALL_WAITING || (call)->state == REDIS_CALL_REDIRECT)

/* One script call to one server within a batch. */
typedef struct RedisCall
{
	/* set by the caller */
	struct RedisServer *server;
	RedisScript *script;
	int			nargs;			/* KEYS first, then ARGV */
	const char *args[REDIS_CALL_MAX_ARGS];
	size_t		arglens[REDIS_CALL_MAX_ARGS];
	int			tag;			/* free for the caller */
	int			wait_replicas;	/* > 0: the answer counts only once that
								 * many replicas have what the script wrote
								 * (WAIT, pipelined behind it) */
	int			wait_ms;		/* WAIT's own timeout */
	char	   *text;			/* not NULL: a bulk string answer is copied
								 * here (textcap bytes at most) */
	size_t		textcap;

	/* set by RedisRun */
	RedisCallState state;
	int			nints;			/* answer: an integer or an array of them */
	size_t		textlen;		/* answer: a bulk string's length (into text,
								 * truncated to textcap) */
	long long	ints[2];
	RedisFailure failure;
	char		error[REDLOCK_ERROR_LEN];	/* for FAILED */
	bool		used_eval;		/* sent as EVAL, not EVALSHA */
	bool		behind;			/* its server had not answered earlier
								 * requests when this one was sent */
	uint32		conn_serial;	/* for DONE: the serial of the connection
								 * its reply came on */
	bool		script_answered;	/* with wait_replicas: the script's
									 * answer is in, WAIT's is not */
	/* a cluster's redirection (REDIS_CALL_REDIRECT) */
	struct RedisServer *redirect_to;
	bool		asking;			/* ASK: send ASKING before it */
	int64		resend_at;		/* us; TRYAGAIN: not before */
	int			redirects;		/* MOVED and ASK followed so far */
	int64		sent_at;		/* us; when the batch first sent it */
} RedisCall;

/*
 * One reply a connection is owed, in the order the requests were written:
 * for a call of the batch in progress, or for a request nobody waits for
 * any more (call NULL: its batch ended first).  A request that went out as
 * EVALSHA keeps its EVAL form once it is skipped, to be sent again if it
 * meets NOSCRIPT: a skipped request is late, not dropped.
 */
typedef struct RedisPending
{
	RedisCall  *call;
	bool		is_wait;		/* a WAIT (call NULL): see RedisConnQueueWait */
	bool		is_slots;		/* CLUSTER SLOTS (call NULL): cluster.c */
	char	   *resend;			/* hiredis-formatted EVAL, or NULL */
	int			resend_len;
} RedisPending;

typedef enum RedisConnState
{
	REDIS_CONN_CLOSED = 0,
	REDIS_CONN_CONNECTING,		/* the transport is connecting */
	REDIS_CONN_HANDSHAKE,		/* AUTH / SELECT sent, not all answered */
	REDIS_CONN_READY
} RedisConnState;

/* A growing byte buffer (malloc'd: it is filled where no ERROR may be raised). */
typedef struct RedisBuf
{
	char	   *data;
	size_t		len;			/* bytes held */
	size_t		pos;			/* bytes of them already written */
	size_t		cap;
} RedisBuf;

/* A connection's part in the batch in progress (see batch.c). */
typedef struct RedisConnBatch
{
	bool		joined;			/* it has calls in the batch in progress */
	bool		may_retry;		/* existed at the start and answered nothing
								 * since: a failure may be a stale socket */
	bool		behind;			/* still owed replies to earlier requests */
	bool		no_connect;		/* in a callback: never (re)connect */
	int64		start;			/* us; when the batch began */
	int64		deadline;		/* us; when its calls time out */
	int64		deadline_cap;	/* us; the batch's own end (never later) */
} RedisConnBatch;

/*
 * A connection to a server: the command connection, or the subscription
 * connection of pubsub.c.  The struct lives as long as its server; the
 * socket, reader and buffers come and go.
 */
typedef struct RedisConn
{
	struct RedisServer *server;
	bool		is_sub;			/* a subscription connection */
	bool		is_watch;		/* (also is_sub) a sentinel entry's watch:
								 * SUBSCRIBE +switch-master on a sentinel */
	bool		watch_confirmed;	/* the watch is subscribed */
	RedisConnState state;
	RedisTransport transport;
	struct redisReader *reader;
	RedisBuf	out;			/* commands to write */
	RedisBuf	held;			/* commands held until the handshake is done */
	int			handshake;		/* AUTH / SELECT replies still to come */
	uint64		cred_version;	/* RedisCredentialsVersion() at connect */
	int64		connect_deadline;	/* us; while connecting or in handshake */
	uint32		scripts_loaded; /* bit per RedisScript.id known here */
	int64		last_io;		/* us; when it last received anything */
	/* a sentinel entry: asking a sentinel for the master (see conn.c) */
	bool		resolving;		/* connected or connecting to a sentinel */
	int			resolve_left;	/* its replies still to come */
	int			sentinels_tried;	/* in this open */
	int			sentinel_at;	/* the sentinel it asks (or asked last) */
	bool		node_changed;	/* the sentinel named another node */
	bool		role_check;		/* ROLE is the handshake's last command */
	char		sentinel_errors[REDLOCK_ERROR_LEN]; /* why those tried failed */
	int64		looked_at;		/* us; RedisConnStillOpen's last look */
	bool		heard;			/* it has received anything since it opened */

	/* replies owed for requests (not the handshake's), in order: a ring */
	RedisPending *pending;		/* malloc'd */
	int			pending_cap;
	int			pending_head;	/* index of the oldest */
	int			npending;
	int			nwaiting;		/* of them, calls someone waits for */
	RedisConnBatch batch;

	/* replica_ack: calls whose scripts wrote, waiting for a WAIT's answer */
	struct RedisCall **acks;	/* malloc'd */
	int			nacks;
	int			acks_cap;
	int			wait_due;		/* replicas the next WAIT asks for, or 0 */
	int			wait_due_ms;	/* its timeout */
	int			slots_owed;		/* CLUSTER SLOTS answers still to come */
	long		big_budget;		/* elements the big reply being read may
								 * still have (conn.c's reader) */

	/* the wait set's view of it (waitset.c) */
	uint32		serial;			/* bumped when its socket opens or closes */
	int			wes_pos;
	uint32		wes_events;
} RedisConn;

/*
 * One Redis server as this backend knows it; never freed once created.  A
 * sentinel entry is one logical master: host and port are the node its
 * sentinels named last ("" before they were asked).
 */
typedef struct RedisServer
{
	char		addr[REDLOCK_ENTRY_LEN];
	char		host[REDLOCK_ADDR_LEN];
	int			port;
	RedisKind	kind;
	int			nsentinels;
	RedisNode	sentinels[REDLOCK_MAX_SENTINELS];
	char		master_name[REDLOCK_MASTER_NAME_LEN];
	int			sentinel_next;	/* the sentinel to ask first */
	int64		failovers;		/* times the sentinels named another node */
	bool		served;			/* a script of ours ran on it (a cluster
								 * entry: on one of its nodes) */

	/* a cluster entry: its nodes and slot map (cluster.c) */
	struct RedisServer **cnodes;	/* nodes learnt, CLUSTER_MAX_NODES room */
	int			ncnodes;
	int16	   *slot_map;		/* per slot an index into cnodes, -1 unknown */
	bool		map_stale;		/* ask CLUSTER SLOTS again */
	int64		map_asked_at;	/* us; when it was last asked */
	int			seed_next;		/* the seed to try first */
	int64		redirects;		/* MOVED and ASK answers followed */
	/* a node of a cluster entry: that entry, and the batch that last used
	 * it (cluster.c reuses a node no longer used for another) */
	struct RedisServer *cluster;
	uint64		named_epoch;
	bool		tls;			/* from a rediss:// entry */
	char		user[REDLOCK_CRED_LEN]; /* from its redis:// entry, or "" */
	char		password[REDLOCK_CRED_LEN];
	int			db;				/* from its redis:// entry, or -1 */
	uint64		entry_version;	/* bumped when the entry's credentials change */
	char		passfile_note[REDLOCK_ERROR_LEN];	/* why redlock.passfile was
													 * not used, or "" */

	RedisConn	cmd;			/* scripts */
	RedisConn	sub;			/* wake-ups (pubsub.c) */
	RedisConn	watch;			/* a sentinel entry's switch-master notices */
	int			watch_at;		/* the sentinel it watches (or watched) */
	int64		watch_retry_after;	/* us; a failed watch is not retried
									 * before */
	int64		watch_pause_us; /* the pause after the last failure */
	char		pinned_host[REDLOCK_ADDR_LEN];	/* the primary a watch notice
												 * named, over the sentinels' */
	int			pinned_port;
	int64		pinned_until;	/* us */
	/* channels the subscription connection asked for, and which it has */
	int			sub_nchannels;
	char		sub_channels[REDIS_SUB_MAX_CHANNELS][REDIS_CHANNEL_LEN];
	bool		sub_confirmed[REDIS_SUB_MAX_CHANNELS];
	/* one key's own channel (Redisson's unlock channel), "" for none */
	char		sub_keychan[REDIS_KEY_CHANNEL_LEN];
	bool		sub_keychan_answered;	/* confirmed, or refused */
	bool		sub_skip_next;	/* a skip mark for the watched key came: the
								 * next message is not a wake-up if it is on
								 * sub_keychan */
	/* requests sent on it and not answered yet, oldest first (pubsub.c) */
	int			sub_npending;
	uint8		sub_pending[REDIS_SUB_MAX_PENDING];
	bool		sub_unsub_refused;	/* an ACL without UNSUBSCRIBE */
	int			sub_stale;		/* key channels left subscribed because of it */

	int64		retry_after;	/* us; no new connect attempt before */
	uint64		backoff_version;	/* credentials version of that backoff:
									 * new settings end it */
	int64		backoff_until;	/* us; end of the last backoff, kept for the
								 * view until a connect succeeds */
	int			backoff_ms;		/* current backoff, grows on failures */

	/* for the redlock_servers view and error messages */
	RedisFailure last_failure;
	char		last_error[REDLOCK_ERROR_LEN];
	TimestampTz last_error_at;
	int64		last_rtt_us;
	int64		connects;		/* successful connects, reconnects included */
} RedisServer;

extern RedisServer *RedisServerForSpec(const RedlockServerSpec *spec);
extern RedisServer *RedisServerCreate(const RedlockServerSpec *spec);
extern void RedisServerReuse(RedisServer *srv, const RedlockServerSpec *spec);
extern RedisServer *RedisServerLookup(const char *addr);
extern RedisServer **RedisServers(int *n);
extern const char *RedisFailureText(RedisFailure failure);
extern void RedisScriptPrepare(RedisScript *script);
extern int	RedisConnOwed(const RedisConn *conn);
extern bool RedisConnOpen(RedisConn *conn, int64 now);
extern void RedisConnClose(RedisConn *conn);
extern void RedisConnFail(RedisConn *conn, RedisFailure failure,
						  const char *text, bool backoff);
extern void RedisConnService(RedisConn *conn, uint32 events);
extern void RedisConnFlush(RedisConn *conn);
extern void RedisConnDrain(RedisConn *conn);
extern bool RedisConnSendCommand(RedisConn *conn, int argc, const char **argv,
								 const size_t *argvlen);
extern void RedisConnSendCall(RedisConn *conn, RedisCall *call);
extern void RedisConnQueueWait(RedisConn *conn);
extern void RedisConnSendAsking(RedisConn *conn);
extern void RedisConnAskSlots(RedisConn *conn);
extern void RedisConnDetachCalls(RedisConn *conn, RedisFailure failure,
								 const char *text);
extern bool RedisConnStale(const RedisConn *conn);
extern bool RedisServerMayConnect(const RedisServer *srv, int64 now);
extern bool RedisFailoverMayExplain(const RedisServer *srv, RedisFailure failure,
									const char *text);
extern void RedisConnCheckIdle(RedisConn *conn, int64 now);
extern bool RedisConnStillOpen(RedisConn *conn, int64 now);

/* sentinel.c */
extern bool RedisConnResolveTimedOut(RedisConn *conn, int64 now);
extern bool RedisSentinelWatch(RedisServer *srv, bool may_connect);
/* ... for conn.c */
extern bool RedisSentinelAsk(RedisConn *conn, int64 now);
extern void RedisSentinelFailed(RedisConn *conn, const char *why);
extern void RedisSentinelReply(RedisConn *conn, struct redisReply *reply);
extern bool RedisRoleReply(RedisConn *conn, struct redisReply *reply);
extern void RedisWatchReply(RedisConn *conn, struct redisReply *reply);
extern void RedisWatchPause(RedisServer *srv);
extern bool RedisReplyDemoted(const char *text);

/* conn.c, for sentinel.c: a connection's steps between its sockets */
extern bool RedisConnAppend(RedisConn *conn, int argc, const char **argv,
							const size_t *argvlen, bool hold);
extern bool RedisConnQueueHandshake(RedisConn *conn);
extern bool RedisConnTransportOpen(RedisConn *conn, const char *host, int port,
								   char *err, size_t errlen);
extern void RedisConnTransportDrop(RedisConn *conn);
extern void RedisConnFailOpening(RedisConn *conn, RedisFailure failure,
								 const char *text, bool backoff);
extern bool RedisConnNewSocketAllowed(RedisConn *conn);
extern void RedisConnSetConnectDeadline(RedisConn *conn);
extern void RedisConnReceive(RedisConn *conn);
extern RedisFailure RedisClassifyError(const char *text);
extern uint32 RedisConnEvents(const RedisConn *conn);
extern void RedisDisconnectAll(void);

/* ------------------------------------------------------------------------
 * cluster.c
 * ------------------------------------------------------------------------
 */

#define CLUSTER_MAX_REDIRECTS	5	/* per call and batch */

extern int	RedisKeySlot(const char *key, size_t len);
extern void RedisSlotTagsPrepare(void);
extern const char *RedisSlotTag(int slot);
extern RedisServer *RedisClusterNode(RedisServer *cluster, const char *host, int port);
extern void RedisClusterNewBatch(void);
extern RedisServer *RedisServerForKey(RedisServer *srv, const char *key, size_t len);
extern bool RedisClusterWantsMap(RedisServer *node);
extern void RedisClusterNodeFailed(RedisServer *node);
extern void RedisClusterSlotsReply(RedisServer *node, const struct redisReply *reply);
extern RedisServer *RedisClusterRedirect(RedisServer *node, const char *text, bool *ask);
extern void RedisClusterDescribe(const RedisServer *cluster, char *buf, size_t len);

/* ------------------------------------------------------------------------
 * creds.c
 * ------------------------------------------------------------------------
 */

extern uint64 RedisCredentialsVersion(const RedisServer *srv);
extern uint64 RedisSettingsVersion(void);
extern void RedisCredentialsChanged(void);
extern bool RedisCredentialsFor(RedisServer *srv, char *user, char *password,
								int *db);

/* ------------------------------------------------------------------------
 * waitset.c
 * ------------------------------------------------------------------------
 */

extern void RedisWaitSetChanged(bool opened);
extern void RedisWaitSetPrepare(void);
extern bool RedisWaitRound(long timeout_ms, bool in_callback);
extern bool RedisPostmasterGone(void);
extern void RedisWaitSetReset(void);

/* ------------------------------------------------------------------------
 * batch.c
 * ------------------------------------------------------------------------
 */

/* Called after each round of answers; true ends the batch early. */
typedef bool (*RedisSettledFn) (RedisCall *calls, int ncalls, void *arg);

/* How a batch runs. */
typedef struct RedisBatch
{
	RedisCall  *calls;
	int			ncalls;
	int			timeout_ms;		/* per server, once per batch */
	int64		deadline;		/* us; the whole batch ends then (0: none);
								 * calls still unanswered stay WAITING */
	bool		in_callback;	/* COMMIT, ABORT or exit: no ERROR, at most
								 * REDLOCK_CALLBACK_MAX_WAIT_MS */
	bool		no_connect;		/* open no connection (COMMIT, ABORT) */
	RedisSettledFn settled;		/* may end it early */
	void	   *arg;
} RedisBatch;

extern void RedisCallInit(RedisCall *call, RedisServer *server,
						  RedisScript *script, int tag);
extern void RedisCallArg(RedisCall *call, const char *arg, size_t len);
extern void RedisRun(RedisBatch *batch);
extern void RedisPrepareServers(RedisServer **srvs, int n);

/* ------------------------------------------------------------------------
 * pubsub.c
 * ------------------------------------------------------------------------
 */

extern void RedisWakeChannel(const char *prefix, size_t prefixlen, char *out);
extern void RedisSubscribe(RedisServer **srvs, int n, const char *channel,
						   const char *keychan, int64 deadline);
extern void RedisRedissonChannel(const char *rkey, char *out);
extern void RedisWakeWatch(const char *const *rkeys, int nkeys,
						   const char *keychan);
extern uint64 RedisWakeCount(void);
extern bool RedisWaitWake(uint64 seen, int64 deadline);
extern void RedisSubOnReply(RedisConn *conn, struct redisReply *reply);
extern bool RedisSubReady(const RedisServer *srv);

#endif							/* REDLOCK_REDIS_H */
