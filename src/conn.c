/*-------------------------------------------------------------------------
 *
 * conn.c
 *	  Redis servers and their connections: connect, handshake, commands out,
 *	  replies in, and what happens when a connection fails.
 *
 * Ownership.  One RedisServer per address, created on first use in
 * RedlockContext and never freed: a lock keeps pointers to the servers it
 * was taken on, so changing redlock.servers cannot strand it.  Each server
 * has two RedisConn: the command connection, and the subscription
 * connection of pubsub.c.  A connection's socket (transport.c), hiredis
 * reader and buffers are malloc'd and exist while it is open; nothing here
 * uses palloc or raises an ERROR, since it runs in commit and abort
 * callbacks too.  A failure closes the connection and is recorded on the
 * server (last_error), for messages and the redlock_servers view.
 *
 * Handshake.  A new connection first sends AUTH (when a password is
 * configured; see creds.c) and SELECT (for a database other than 0).
 * Everything else is held (conn->held) until they have answered: Redis
 * runs what follows a refused AUTH as its default user, and what follows
 * a refused SELECT in database 0.  If they are refused, the connection
 * closes and what it held fails with their error.  Held commands belong to
 * the connection, not to a batch: they are written when the handshake
 * succeeds even if the batch that sent them has ended, so requests reach a
 * server in the order they were made.
 *
 * Reply accounting (command connections).  Replies come back in the order
 * of the requests, so a connection keeps what it is owed in that order, in
 * a ring (conn->pending): a call of the batch in progress, or a request
 * nobody waits for any more, whose batch ended first (RedisConnDetachCalls).
 * A request to a frozen server is therefore never dropped: a later
 * request, such as the release of a failed acquire, queues behind it on
 * the same socket, and a server that resumes applies both in order.  Nor
 * is a late request lost to NOSCRIPT (a flushed script cache): one that
 * went out as EVALSHA keeps its EVAL form when it is detached, and is sent
 * again.  The handshake's replies come before all of these.
 *
 * A stale socket.  A connection the server closed while we were not using
 * it (restart, CLIENT KILL, idle timeout) looks fine until used.  When a
 * connection fails before answering anything in a batch, it is replaced
 * and the batch's calls are sent once more on the new one (outside
 * callbacks, which never connect).  That is safe because every script is
 * idempotent for our owner value, and it costs no system call on the hot
 * path, unlike probing the socket before each use.
 *
 * Backoff.  A connect that times out, or whose start alone was slow (a
 * name lookup), puts the server in a short, growing pause (100 ms up to
 * 5 s) during which calls to it fail at once, so a dead master does not
 * cost every transaction a connect timeout.  A refused connection costs
 * nothing and is retried at every call.
 *
 * A sentinel entry's connections first ask its sentinels where the primary
 * is; that, and the entry's watch, is sentinel.c.  A cluster entry's nodes
 * and slot map are cluster.c.
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <poll.h>

#include <hiredis/hiredis.h>

#include "common/cryptohash.h"
#include "storage/latch.h"

#include "redlock.h"

#define BACKOFF_MIN_MS		100
#define BACKOFF_MAX_MS		5000
#define SLOW_CONNECT_US		20000	/* a failure this slow earns backoff */
#define MAX_PENDING_BYTES	((size_t) 1 << 20)	/* unparsed reply bytes we hold */
#define READ_CHUNK			16384

/*
 * Connection serials are unique in the backend (not per connection), so
 * that a lock's note of the connection a master's answer came on cannot
 * match another node's connection (a cluster's slot that moved).
 */
static uint32 serial_counter = 0;

static uint32
next_serial(void)
{
	return ++serial_counter;
}

/* Every server this backend has used, in creation order. */
static RedisServer **servers = NULL;
static int	nservers = 0;
static int	maxservers = 0;

/*
 * RedisFailureText: a few words for a failure kind, for messages and the
 * servers view.
 */
const char *
RedisFailureText(RedisFailure failure)
{
	switch (failure)
	{
		case REDIS_FAIL_NONE:
			return "none";
		case REDIS_FAIL_CONNECT:
			return "connect failed";
		case REDIS_FAIL_BACKOFF:
			return "backing off";
		case REDIS_FAIL_IO:
			return "connection lost";
		case REDIS_FAIL_TIMEOUT:
			return "timeout";
		case REDIS_FAIL_PROTOCOL:
			return "protocol error";
		case REDIS_FAIL_REPLY:
			return "error reply";
		case REDIS_FAIL_AUTH:
			return "authentication";
		case REDIS_FAIL_PERM:
			return "permission";
		case REDIS_FAIL_REPLICAS:
			return "replicas did not acknowledge";
	}
	return "unknown";
}

static void server_fill(RedisServer *srv, const RedlockServerSpec *spec);

/* conn_init: a closed connection of srv. */
static void
conn_init(RedisConn *conn, RedisServer *srv, bool is_sub)
{
	memset(conn, 0, sizeof(*conn));
	conn->server = srv;
	conn->is_sub = is_sub;
	conn->transport.fd = -1;
	conn->wes_pos = -1;
}

/*
 * RedisServerLookup: the server known by its canonical address, or NULL.
 * Changes nothing.
 */
RedisServer *
RedisServerLookup(const char *addr)
{
	int			i;

	for (i = 0; i < nservers; i++)
		if (strcmp(servers[i]->addr, addr) == 0)
			return servers[i];
	return NULL;
}

/*
 * RedisServerForSpec: the server entry for "spec", created on first use;
 * an entry whose credentials (user, password, database) changed since
 * gets a new credentials version, so that its connections are replaced at
 * their next use.
 *
 * Returns a pointer that stays valid for the life of the backend.  Raises
 * ERROR only when out of memory.
 */
RedisServer *
RedisServerForSpec(const RedlockServerSpec *spec)
{
	RedisServer *srv = RedisServerLookup(spec->addr);
	int			i;

	if (srv != NULL)
	{
		if (strcmp(srv->user, spec->user) != 0 ||
			strcmp(srv->password, spec->password) != 0 ||
			srv->db != spec->db || srv->tls != spec->tls)
		{
			strlcpy(srv->user, spec->user, sizeof(srv->user));
			strlcpy(srv->password, spec->password, sizeof(srv->password));
			srv->db = spec->db;
			srv->tls = spec->tls;
			srv->entry_version++;
			/* a cluster's nodes have the entry's credentials */
			for (i = 0; i < srv->ncnodes; i++)
			{
				RedisServer *node = srv->cnodes[i];

				strlcpy(node->user, spec->user, sizeof(node->user));
				strlcpy(node->password, spec->password, sizeof(node->password));
				node->tls = spec->tls;
				node->entry_version++;
			}
		}
		return srv;
	}
	srv = RedisServerCreate(spec);
	if (srv == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	return srv;
}

/*
 * RedisServerCreate: a new server entry for "spec" (whose address no other
 * has), or NULL when out of memory: cluster.c makes the nodes of a cluster
 * as replies name them, in callbacks too.
 */
RedisServer *
RedisServerCreate(const RedlockServerSpec *spec)
{
	RedisServer *srv;

	if (nservers == maxservers)
	{
		int			newmax = maxservers ? maxservers * 2 : 8;
		RedisServer **grown = MemoryContextAllocExtended(RedlockContext,
														 newmax * sizeof(RedisServer *),
														 MCXT_ALLOC_NO_OOM);

		if (grown == NULL)
			return NULL;
		/*
		 * The old array is not freed: a caller may be going through it
		 * (RedisServers) while a reply makes a cluster's node; it stays a
		 * valid list of the servers it had.
		 */
		if (servers != NULL)
			memcpy(grown, servers, nservers * sizeof(RedisServer *));
		servers = grown;
		maxservers = newmax;
	}

	srv = MemoryContextAllocExtended(RedlockContext, sizeof(RedisServer),
									 MCXT_ALLOC_NO_OOM | MCXT_ALLOC_ZERO);
	if (srv == NULL)
		return NULL;
	server_fill(srv, spec);
	conn_init(&srv->cmd, srv, false);
	conn_init(&srv->sub, srv, true);
	conn_init(&srv->watch, srv, true);
	srv->watch.is_watch = true;
	servers[nservers++] = srv;
	return srv;
}

/*
 * RedisServerReuse: make the server of a cluster's node that is no longer
 * used (closed, unmapped: see cluster.c) the server of another node, as
 * described by "spec": a long-lived backend meets many nodes as a cluster
 * is replaced over months, and keeps a bounded number.  Its statistics
 * start afresh; its closed connections keep their buffers.
 */
void
RedisServerReuse(RedisServer *srv, const RedlockServerSpec *spec)
{
	RedisConn	cmd = srv->cmd;
	RedisConn	sub = srv->sub;
	RedisConn	watch = srv->watch;
	RedisServer *cluster = srv->cluster;
	uint64		entry_version = srv->entry_version;

	Assert(cmd.state == REDIS_CONN_CLOSED && sub.state == REDIS_CONN_CLOSED);
	memset(srv, 0, sizeof(*srv));
	server_fill(srv, spec);
	srv->cmd = cmd;
	srv->sub = sub;
	srv->watch = watch;
	srv->cluster = cluster;
	srv->entry_version = entry_version;
}

/* server_fill: a new server's identity, from its spec. */
static void
server_fill(RedisServer *srv, const RedlockServerSpec *spec)
{
	strlcpy(srv->addr, spec->addr, sizeof(srv->addr));
	strlcpy(srv->host, spec->host, sizeof(srv->host));
	srv->port = spec->port;
	srv->tls = spec->tls;
	strlcpy(srv->user, spec->user, sizeof(srv->user));
	strlcpy(srv->password, spec->password, sizeof(srv->password));
	srv->db = spec->db;
	srv->kind = spec->kind;
	srv->nsentinels = spec->nsentinels;
	memcpy(srv->sentinels, spec->sentinels, sizeof(srv->sentinels));
	strlcpy(srv->master_name, spec->master_name, sizeof(srv->master_name));
	if (srv->kind == REDIS_KIND_SENTINEL)
	{
		srv->host[0] = '\0';	/* not known before a sentinel names it */
		srv->port = 0;
	}
	else if (srv->kind == REDIS_KIND_CLUSTER)
	{
		/* its own connections (the wake-up subscription) go to a seed */
		strlcpy(srv->host, spec->sentinels[0].host, sizeof(srv->host));
		srv->port = spec->sentinels[0].port;
		srv->db = 0;
	}
}

/*
 * RedisServers: every server this backend has used, in creation order; *n
 * gets how many.
 */
RedisServer **
RedisServers(int *n)
{
	*n = nservers;
	return servers;
}

/*
 * RedisScriptPrepare: compute the SHA1 a script is known by in Redis, once.
 *
 * Must run in a normal transaction context (the OpenSSL-backed hash uses the
 * resource owner), so callers prepare every script they may need before
 * they take a lock; callbacks then find them ready.  Until then a script
 * is sent with EVAL.  Raises ERROR if hashing fails.
 */
void
RedisScriptPrepare(RedisScript *script)
{
	pg_cryptohash_ctx *ctx;
	uint8		digest[20];
	int			i;

	if (script->sha[0] != '\0')
		return;

	ctx = pg_cryptohash_create(PG_SHA1);
	if (ctx == NULL ||
		pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) script->body,
							 strlen(script->body)) < 0 ||
		pg_cryptohash_final(ctx, digest, sizeof(digest)) < 0)
	{
		const char *why = ctx ? pg_cryptohash_error(ctx) : "out of memory";

		pg_cryptohash_free(ctx);
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute the SHA1 of Redis script \"%s\"",
						script->name),
				 errdetail_internal("%s", why)));
	}
	pg_cryptohash_free(ctx);

	for (i = 0; i < 20; i++)
		snprintf(script->sha + (size_t) 2 * i, 3, "%02x", digest[i]);
}

/* ------------------------------------------------------------------------
 * Buffers
 * ------------------------------------------------------------------------
 */

/* buf_append: add len bytes; false when out of memory. */
static bool
buf_append(RedisBuf *buf, const char *data, size_t len)
{
	if (buf->len + len > buf->cap)
	{
		size_t		cap = Max(buf->cap * 2, Max(buf->len + len, 512));
		char	   *p;

		/* written bytes at the front are dead: drop them first */
		if (buf->pos > 0)
		{
			memmove(buf->data, buf->data + buf->pos, buf->len - buf->pos);
			buf->len -= buf->pos;
			buf->pos = 0;
		}
		if (buf->len + len > buf->cap)
		{
			p = realloc(buf->data, cap);
			if (p == NULL)
				return false;
			buf->data = p;
			buf->cap = cap;
		}
	}
	memcpy(buf->data + buf->len, data, len);
	buf->len += len;
	return true;
}

/* buf_free: give the memory back. */
static void
buf_free(RedisBuf *buf)
{
	free(buf->data);
	memset(buf, 0, sizeof(*buf));
}

/*
 * pending_push: note one more reply owed (call, or a skipped request with
 * its resend form; is_wait: the WAIT behind a call's script).  Returns
 * false when out of memory.
 */
static bool
pending_push(RedisConn *conn, RedisCall *call, char *resend, int resend_len,
			 bool is_wait)
{
	RedisPending *p;

	if (conn->npending == conn->pending_cap)
	{
		int			cap = Max(conn->pending_cap * 2, 16);
		RedisPending *ring = malloc(sizeof(RedisPending) * cap);
		int			i;

		if (ring == NULL)
			return false;
		for (i = 0; i < conn->npending; i++)
			ring[i] = conn->pending[(conn->pending_head + i) % conn->pending_cap];
		free(conn->pending);
		conn->pending = ring;
		conn->pending_cap = cap;
		conn->pending_head = 0;
	}
	p = &conn->pending[(conn->pending_head + conn->npending) % conn->pending_cap];
	p->call = call;
	p->resend = resend;
	p->resend_len = resend_len;
	p->is_wait = is_wait;
	p->is_slots = false;
	conn->npending++;
	if (call)
		conn->nwaiting++;
	return true;
}

/* pending_pop: the oldest reply owed (npending must be > 0). */
static RedisPending
pending_pop(RedisConn *conn)
{
	RedisPending p = conn->pending[conn->pending_head];

	conn->pending_head = (conn->pending_head + 1) % conn->pending_cap;
	conn->npending--;
	if (p.call)
		conn->nwaiting--;
	return p;
}

/* pending_at: the i-th oldest reply owed. */
static RedisPending *
pending_at(RedisConn *conn, int i)
{
	return &conn->pending[(conn->pending_head + i) % conn->pending_cap];
}

/* pending_clear: forget every reply owed; calls are left as they are. */
static void
pending_clear(RedisConn *conn)
{
	while (conn->npending > 0)
	{
		RedisPending p = pending_pop(conn);

		if (p.resend)
			redisFreeCommand(p.resend);
	}
	free(conn->pending);
	conn->pending = NULL;
	conn->pending_cap = conn->pending_head = 0;
}

/* ------------------------------------------------------------------------
 * Replies: hiredis's reader, with limits
 * ------------------------------------------------------------------------
 */

/*
 * hiredis 0.14 allocates an array reply's element vector as soon as it
 * reads the length, and frees it element by element: a server announcing
 * "*2147483647" gets gigabytes reserved and a free that loops for minutes,
 * uninterruptibly.  Our replies are arrays of at most three elements, so
 * every reader gets hiredis's own functions but for arrays, which refuse
 * more than MAX_ARRAY_ELEMENTS (the reader then reports an error and the
 * connection is dropped), and nested arrays; but for the answers to ROLE (a
 * sentinel entry's handshake) and CLUSTER SLOTS (cluster.c), which nest
 * and may hold up to MAX_BIG_ELEMENTS (the 1 MB cap on unread replies
 * still holds).
 */
#define MAX_ARRAY_ELEMENTS 8
#define MAX_BIG_ELEMENTS 16384	/* CLUSTER SLOTS's ranges, at the top */
#define MAX_NESTED_ELEMENTS 64	/* below it (ROLE's list of replicas) */
#define MAX_BIG_TOTAL 400000	/* elements of one big reply in all: 16384
								 * ranges with a few replicas each */
#define MAX_BIG_STRING 1024		/* bytes of a string in one */

static bool reading_big = false;	/* the reader may meet ROLE's or CLUSTER
									 * SLOTS's answer */

static redisReplyObjectFunctions reply_functions;
static void *(*default_create_array) (const redisReadTask *, int);
static bool reply_functions_ready = false;

static long *big_budget;		/* elements the big reply being read may
								 * still have: its connection's */
static void *(*default_create_string) (const redisReadTask *, char *, size_t);

static void *
create_array(const redisReadTask *task, int elements)
{
	if (!reading_big)
	{
		if (elements > MAX_ARRAY_ELEMENTS || task->parent != NULL)
			return NULL;
		return default_create_array(task, elements);
	}
	/* a big reply: wide at the top only, and a budget for all of it */
	if (task->parent == NULL)
		*big_budget = MAX_BIG_TOTAL;
	if (elements > (task->parent == NULL ? MAX_BIG_ELEMENTS : MAX_NESTED_ELEMENTS) ||
		(*big_budget -= elements) < 0)
		return NULL;
	return default_create_array(task, elements);
}

/* create_string: within a big reply, strings are short (addresses, ids). */
static void *
create_string(const redisReadTask *task, char *str, size_t len)
{
	if (reading_big && len > MAX_BIG_STRING)
		return NULL;
	return default_create_string(task, str, len);
}

/* reader_create: a reader with the capped functions, or NULL (no memory). */
static redisReader *
reader_create(void)
{
	if (!reply_functions_ready)
	{
		redisReader *r = redisReaderCreate();

		if (r == NULL)
			return NULL;
		reply_functions = *r->fn;
		default_create_array = reply_functions.createArray;
		reply_functions.createArray = create_array;
		default_create_string = reply_functions.createString;
		reply_functions.createString = create_string;
		redisReaderFree(r);
		reply_functions_ready = true;
	}
	return redisReaderCreateWithFunctions(&reply_functions);
}

/*
 * RedisClassifyError: the failure kind of an error reply from Redis.
 */
RedisFailure
RedisClassifyError(const char *text)
{
	if (strncmp(text, "NOAUTH", 6) == 0 || strncmp(text, "WRONGPASS", 9) == 0 ||
		strncmp(text, "ERR AUTH", 8) == 0 ||
		strncmp(text, "ERR invalid password", 20) == 0 ||
		strstr(text, "unauthenticated") != NULL)
		return REDIS_FAIL_AUTH;
	if (strncmp(text, "NOPERM", 6) == 0 ||
		strstr(text, "user executing the script") != NULL)
		return REDIS_FAIL_PERM;
	return REDIS_FAIL_REPLY;
}

/* ------------------------------------------------------------------------
 * Opening and closing
 * ------------------------------------------------------------------------
 */

/* call_fail: mark a call failed, with a copy of the text. */
static void
call_fail(RedisCall *call, RedisFailure failure, const char *text)
{
	call->state = REDIS_CALL_FAILED;
	call->failure = failure;
	strlcpy(call->error, text, sizeof(call->error));
}

static void acks_fail(RedisConn *conn, RedisFailure failure, const char *text);

/*
 * RedisConnClose: close the socket and drop everything the connection
 * held; calls still waiting on it are forgotten, not failed (see
 * RedisConnFail).
 */
void
RedisConnClose(RedisConn *conn)
{
	if (conn->state == REDIS_CONN_CLOSED)
		return;
	RedisTransportClose(&conn->transport);
	if (conn->reader)
		redisReaderFree(conn->reader);
	conn->reader = NULL;
	buf_free(&conn->out);
	buf_free(&conn->held);
	conn->state = REDIS_CONN_CLOSED;
	conn->handshake = 0;
	conn->resolving = false;
	conn->role_check = false;
	conn->nacks = 0;
	conn->wait_due = conn->wait_due_ms = 0;
	conn->slots_owed = 0;
	pending_clear(conn);
	conn->scripts_loaded = 0;
	conn->wes_pos = -1;
	conn->serial = next_serial();
	/* a watch that never got subscribed: the next sentinel, after a pause */
	if (conn->is_watch && !conn->watch_confirmed)
	{
		conn->server->watch_at = (conn->server->watch_at + 1) % conn->server->nsentinels;
		RedisWatchPause(conn->server);
	}
	else if (conn->is_watch)
		conn->server->watch_pause_us = 0;	/* it worked: a short pause next */
	conn->watch_confirmed = false;
	if (conn->is_sub && !conn->is_watch)
	{
		conn->server->sub_nchannels = 0;
		conn->server->sub_keychan[0] = '\0';
		conn->server->sub_skip_next = false;
		conn->server->sub_npending = 0;
		conn->server->sub_unsub_refused = false;
		conn->server->sub_stale = 0;
	}
	RedisWaitSetChanged(false);
}

/*
 * RedisConnFail: close a connection after a failure.  On a command
 * connection, the failure is recorded on its server and the calls queued
 * on it fail with it; with "backoff", no new connect is attempted for a
 * growing pause.  A subscription connection just closes: waits fall back
 * to their timer.
 */
void
RedisConnFail(RedisConn *conn, RedisFailure failure, const char *text,
			  bool backoff)
{
	RedisServer *srv = conn->server;
	int			i;

	if (conn->is_sub)
	{
		RedisConnClose(conn);
		return;
	}

	srv->last_failure = failure;
	strlcpy(srv->last_error, text, sizeof(srv->last_error));
	srv->last_error_at = GetCurrentTimestamp();
	RedisClusterNodeFailed(srv);	/* a node of a cluster: its map may be old */
	if (backoff)
	{
		srv->backoff_ms = srv->backoff_ms == 0 ? BACKOFF_MIN_MS :
			Min(srv->backoff_ms * 2, BACKOFF_MAX_MS);
		srv->retry_after = RedlockNowUs() + (int64) srv->backoff_ms * 1000;
		srv->backoff_until = srv->retry_after;
		srv->backoff_version = conn->cred_version;
	}

	for (i = 0; i < conn->npending; i++)
		if (pending_at(conn, i)->call)
			call_fail(pending_at(conn, i)->call, failure, text);
	acks_fail(conn, failure, text);
	RedisConnClose(conn);
}

/*
 * RedisConnAppend: format a command with hiredis and add it to the output
 * (or to what is held until the handshake is done).  Returns false when
 * out of memory.
 */
bool
RedisConnAppend(RedisConn *conn, int argc, const char **argv,
			   const size_t *argvlen, bool hold)
{
	char	   *cmd = NULL;
	int			len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
	bool		ok;

	if (len < 0)
		return false;
	ok = buf_append(hold ? &conn->held : &conn->out, cmd, (size_t) len);
	redisFreeCommand(cmd);
	return ok;
}

/*
 * RedisConnQueueHandshake: AUTH when a password is configured, and SELECT
 * for a database other than 0 (command connections: pub/sub knows no
 * databases).  Returns false when out of memory.
 */
bool
RedisConnQueueHandshake(RedisConn *conn)
{
	char		user[REDLOCK_CRED_LEN];
	char		password[REDLOCK_CRED_LEN];
	int			db;
	bool		ok = true;

	if (RedisCredentialsFor(conn->server, user, password, &db))
	{
		const char *argv[3];
		size_t		argvlen[3];
		int			argc = 0;

		argv[argc] = "AUTH";
		argvlen[argc++] = 4;
		if (user[0])
		{
			argv[argc] = user;
			argvlen[argc++] = strlen(user);
		}
		argv[argc] = password;
		argvlen[argc++] = strlen(password);
		ok = RedisConnAppend(conn, argc, argv, argvlen, false);
		conn->handshake++;
	}
	explicit_bzero(password, sizeof(password));
	if (ok && db > 0 && !conn->is_sub)
	{
		char		dbtext[16];
		const char *argv[2] = {"SELECT", dbtext};
		size_t		argvlen[2];

		snprintf(dbtext, sizeof(dbtext), "%d", db);
		argvlen[0] = 6;
		argvlen[1] = strlen(dbtext);
		ok = RedisConnAppend(conn, 2, argv, argvlen, false);
		conn->handshake++;
	}
	return ok;
}

/*
 * RedisServerMayConnect: whether a new connect to srv may be attempted
 * now: its backoff is over, or the settings have changed since the last
 * attempt (a certificate or password put right is tried at once, once:
 * settings that change every transaction do not undo the backoff).
 */
bool
RedisServerMayConnect(const RedisServer *srv, int64 now)
{
	return now >= srv->retry_after ||
		RedisCredentialsVersion(srv) != srv->backoff_version;
}

/*
 * RedisFailoverMayExplain: whether a failure ("failure", with its text) of
 * a sentinel or cluster entry may be a failover under way (the group is
 * electing, the old primary is being demoted, the slot map is moving):
 * the entry has served us before, and the failure is one a failover
 * causes: no connection, no answer, too few replicas, or an answer that
 * says so (READONLY, LOADING, MASTERDOWN, CLUSTERDOWN, TRYAGAIN,
 * redirections).  Not credentials, permissions, certificates, a garbled
 * answer or any other error (OOM, a script error): a wait would not end
 * them.  A waiting acquire rides the others out (locks.c).
 */
bool
RedisFailoverMayExplain(const RedisServer *srv, RedisFailure failure,
						const char *text)
{
	static const char *const failover_replies[] = {
		"READONLY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN",
		"redirected", "cannot be used with replica", NULL
	};
	/* TLS set-up and certificates (transport_tls.c): a dead node is refused */
	static const char *const tls_setup_failures[] = {
		"certificate", "handshake failed", "could not load", "could not set up",
		"cannot be read", "is not a regular file", NULL
	};
	int			i;

	if (srv->kind == REDIS_KIND_PLAIN || !srv->served)
		return false;
	switch (failure)
	{
		case REDIS_FAIL_CONNECT:
		case REDIS_FAIL_BACKOFF:	/* its text names the failure before */
			for (i = 0; tls_setup_failures[i] != NULL; i++)
				if (strstr(text, tls_setup_failures[i]) != NULL)
					return false;
			return true;
		case REDIS_FAIL_IO:
		case REDIS_FAIL_TIMEOUT:
		case REDIS_FAIL_REPLICAS:
			return true;
		case REDIS_FAIL_REPLY:
			for (i = 0; failover_replies[i] != NULL; i++)
				if (strstr(text, failover_replies[i]) != NULL)
					return true;
			return false;
		default:
			return false;
	}
}

/*
 * RedisConnOpen: start connecting, and queue the handshake.
 *
 * Returns true when the connect is under way (or done); false after
 * failing the connection (see RedisConnFail), with backoff when even the
 * attempt to start was slow, as a name lookup can be.
 */
bool
RedisConnOpen(RedisConn *conn, int64 now)
{
	RedisServer *srv = conn->server;
	char		text[REDLOCK_ERROR_LEN];

	Assert(conn->state == REDIS_CONN_CLOSED);
	conn->cred_version = RedisCredentialsVersion(srv);
	/* one attempt per settings change while in backoff (see above) */
	if (!conn->is_sub)
		srv->backoff_version = conn->cred_version;
	conn->connect_deadline = now + (int64) redlock_connect_timeout * 1000;
	conn->scripts_loaded = 0;
	conn->last_io = now;
	conn->resolving = false;
	conn->role_check = false;
	if (srv->kind == REDIS_KIND_SENTINEL)
	{
		conn->sentinels_tried = 0;
		conn->sentinel_at = srv->sentinel_next;
		conn->sentinel_errors[0] = '\0';
		return RedisSentinelAsk(conn, now);
	}
	if (!RedisConnTransportOpen(conn, srv->host, srv->port, text, sizeof(text)))
	{
		RedisConnFail(conn, REDIS_FAIL_CONNECT, text,
					  RedlockNowUs() - now > SLOW_CONNECT_US);
		return false;
	}
	if (!RedisConnQueueHandshake(conn))
	{
		RedisConnFail(conn, REDIS_FAIL_IO, "out of memory", false);
		return false;
	}
	return true;
}

/*
 * RedisConnTransportOpen: start connecting the connection's socket to
 * host:port (TLS for rediss:// and sentinels:// entries), with a fresh reply
 * reader. Returns false with the reason in err, having changed nothing.
 */
bool
RedisConnTransportOpen(RedisConn *conn, const char *host, int port, char *err,
			   size_t errlen)
{
	redisReader *reader = reader_create();

	if (reader == NULL)
	{
		strlcpy(err, "out of memory", errlen);
		return false;
	}
	if (!(conn->server->tls ?
		  RedisTransportOpenTls(&conn->transport, host, port, err, errlen) :
		  RedisTransportOpen(&conn->transport, host, port, err, errlen)))
	{
		redisReaderFree(reader);
		return false;
	}
	conn->reader = reader;
	conn->state = REDIS_CONN_CONNECTING;
	conn->handshake = 0;
	conn->heard = false;
	conn->wes_pos = -1;
	conn->serial = next_serial();
	RedisWaitSetChanged(true);
	return true;
}

/*
 * RedisConnTransportDrop: close the socket of a connection that goes on
 * (from a sentinel to the master it named, or to the next sentinel): what it
 * holds for later (conn->held) and the replies it is owed stay.
 */
void
RedisConnTransportDrop(RedisConn *conn)
{
	RedisTransportClose(&conn->transport);
	if (conn->reader)
		redisReaderFree(conn->reader);
	conn->reader = NULL;
	buf_free(&conn->out);
	conn->wes_pos = -1;
	conn->serial = next_serial();
	RedisWaitSetChanged(false);
}

/*
 * RedisConnFailOpening: fail a connection that is between sockets (or never
 * got one), so that the calls it holds fail with it.
 */
void
RedisConnFailOpening(RedisConn *conn, RedisFailure failure, const char *text,
			 bool backoff)
{
	if (conn->state == REDIS_CONN_CLOSED)
		conn->state = REDIS_CONN_CONNECTING;	/* RedisConnClose cleans up */
	RedisConnFail(conn, failure, text, backoff);
}

/*
 * RedisConnNewSocketAllowed: a connection in a COMMIT or ABORT batch opens no
 * socket (see batch.c); a sentinel entry whose resolution needs one there
 * fails instead, and the lock's TTL ends what it held.
 */
bool
RedisConnNewSocketAllowed(RedisConn *conn)
{
	if (!(conn->batch.joined && conn->batch.no_connect))
		return true;
	RedisConnFailOpening(conn, REDIS_FAIL_IO,
				 "a sentinel:// entry was still being resolved, and no connection is opened at commit or abort",
				 false);
	return false;
}

/*
 * RedisConnSetConnectDeadline: a new socket of the connection gets
 * redlock.connect_timeout of its own (each sentinel asked, then the
 * master); a batch waiting for it waits as long, within its own end.
 */
void
RedisConnSetConnectDeadline(RedisConn *conn)
{
	conn->connect_deadline = RedlockNowUs() + (int64) redlock_connect_timeout * 1000;
	if (conn->batch.joined)
		conn->batch.deadline = Min(conn->connect_deadline, conn->batch.deadline_cap);
}

/*
 * RedisConnStale: whether the connection was opened under credentials
 * that have changed since.
 */
bool
RedisConnStale(const RedisConn *conn)
{
	return conn->state != REDIS_CONN_CLOSED &&
		conn->cred_version != RedisCredentialsVersion(conn->server);
}

/* RedisConnOwed: replies the connection owes for requests (not handshake). */
int
RedisConnOwed(const RedisConn *conn)
{
	return conn->npending;
}

/*
 * RedisConnEvents: the socket events the connection needs from the wait
 * set: the transport's while connecting; otherwise replies, and room to
 * write when output is left.
 */
uint32
RedisConnEvents(const RedisConn *conn)
{
	const RedisTransport *t = &conn->transport;
	uint32		events = WL_SOCKET_READABLE;	/* replies, always */

	if (conn->state == REDIS_CONN_CONNECTING)
		return t->want ? t->want : WL_SOCKET_WRITEABLE;
	/* a read that needs the socket writable (TLS) */
	if (t->read_want == WL_SOCKET_WRITEABLE)
		events |= WL_SOCKET_WRITEABLE;
	/* output left, unless its write waits for the socket to be readable */
	if (conn->out.pos < conn->out.len && t->write_want != WL_SOCKET_READABLE)
		events |= WL_SOCKET_WRITEABLE;
	return events;
}

/* ------------------------------------------------------------------------
 * Sending
 * ------------------------------------------------------------------------
 */

/*
 * RedisConnSendCommand: queue a command that is not a script call (the
 * subscription connection's SUBSCRIBE), held until the handshake is done.
 * Returns false when out of memory (the caller fails the connection).
 */
bool
RedisConnSendCommand(RedisConn *conn, int argc, const char **argv,
					 const size_t *argvlen)
{
	return RedisConnAppend(conn, argc, argv, argvlen, conn->handshake > 0);
}

/*
 * format_call: the command of a call, as EVALSHA (when use_sha) or EVAL
 * (which also loads the script).  Arguments travel as separate bulk
 * strings, so no key or value is ever spliced into the script text.
 * Returns its length and sets *cmd (free with redisFreeCommand), or -1
 * when out of memory.
 */
static int
format_call(const RedisCall *call, bool use_sha, char **cmd)
{
	const char *argv[REDIS_CALL_MAX_ARGS + 3];
	size_t		argvlen[REDIS_CALL_MAX_ARGS + 3];
	char		nkeys[12];
	int			i;

	argv[0] = use_sha ? "EVALSHA" : "EVAL";
	argv[1] = use_sha ? call->script->sha : call->script->body;
	snprintf(nkeys, sizeof(nkeys), "%d", call->script->nkeys);
	argv[2] = nkeys;
	for (i = 0; i < 3; i++)
		argvlen[i] = strlen(argv[i]);
	for (i = 0; i < call->nargs; i++)
	{
		argv[i + 3] = call->args[i];
		argvlen[i + 3] = call->arglens[i];
	}
	*cmd = NULL;
	return redisFormatCommandArgv(cmd, call->nargs + 3, argv, argvlen);
}

/*
 * RedisConnQueueWait: queue one "WAIT replicas timeout" behind the calls
 * queued since the last one that ask for replicas (RedisCall.wait_replicas):
 * its answer covers every write before it on the connection, so a batch
 * costs one WAIT per connection, not one per call.  The callers of
 * RedisConnSendCall call this once they have queued their calls.  Out of
 * memory fails the connection.
 */
void
RedisConnQueueWait(RedisConn *conn)
{
	char		nrep[12];
	char		ms[12];
	const char *argv[3] = {"WAIT", nrep, ms};
	size_t		argvlen[3];

	if (conn->wait_due == 0 || conn->state == REDIS_CONN_CLOSED)
		return;
	snprintf(nrep, sizeof(nrep), "%d", conn->wait_due);
	snprintf(ms, sizeof(ms), "%d", Max(conn->wait_due_ms, 1));	/* 0: for ever */
	conn->wait_due = conn->wait_due_ms = 0;
	argvlen[0] = 4;
	argvlen[1] = strlen(nrep);
	argvlen[2] = strlen(ms);
	if (!RedisConnAppend(conn, 3, argv, argvlen, conn->handshake > 0) ||
		!pending_push(conn, NULL, NULL, 0, true))
		RedisConnFail(conn, REDIS_FAIL_IO, "out of memory", false);
}

/*
 * RedisConnSendAsking: queue ASKING (its answer is skipped), before a call
 * that an ASK redirection sends to a node importing the slot.
 */
void
RedisConnSendAsking(RedisConn *conn)
{
	const char *argv[1] = {"ASKING"};
	size_t		argvlen[1] = {6};

	if (!RedisConnAppend(conn, 1, argv, argvlen, conn->handshake > 0) ||
		!pending_push(conn, NULL, NULL, 0, false))
		RedisConnFail(conn, REDIS_FAIL_IO, "out of memory", false);
}

/*
 * RedisConnAskSlots: queue CLUSTER SLOTS on a cluster node's connection;
 * its answer fills the cluster's slot map (cluster.c).
 */
void
RedisConnAskSlots(RedisConn *conn)
{
	const char *argv[2] = {"CLUSTER", "SLOTS"};
	size_t		argvlen[2] = {7, 5};

	if (!RedisConnAppend(conn, 2, argv, argvlen, conn->handshake > 0) ||
		!pending_push(conn, NULL, NULL, 0, false))
	{
		RedisConnFail(conn, REDIS_FAIL_IO, "out of memory", false);
		return;
	}
	conn->pending[(conn->pending_head + conn->npending - 1) % conn->pending_cap].is_slots = true;
	conn->slots_owed++;
}

/*
 * RedisConnSendCall: queue a script call on a command connection.
 *
 * Sends EVALSHA when this connection already ran the script, EVAL
 * otherwise; a call that asks for replicas needs RedisConnQueueWait after
 * it.  The call joins the replies the connection is owed; it is held until
 * the handshake is done.  Out of memory fails the connection (and the
 * call).
 */
void
RedisConnSendCall(RedisConn *conn, RedisCall *call)
{
	uint32		bit = (uint32) 1 << call->script->id;
	bool		use_sha;
	char	   *cmd;
	int			len;
	bool		ok;

	use_sha = call->script->sha[0] != '\0' && (conn->scripts_loaded & bit);
	call->state = REDIS_CALL_WAITING;
	call->used_eval = !use_sha;
	call->behind = conn->batch.behind;
	call->script_answered = false;

	len = format_call(call, use_sha, &cmd);
	ok = len >= 0 &&
		buf_append(conn->handshake > 0 ? &conn->held : &conn->out, cmd, len);
	if (cmd)
		redisFreeCommand(cmd);
	ok = ok && pending_push(conn, call, NULL, 0, false);
	if (call->wait_replicas > 0)
	{
		conn->wait_due = Max(conn->wait_due, call->wait_replicas);
		conn->wait_due_ms = Max(conn->wait_due_ms, call->wait_ms);
	}
	if (!ok)
	{
		call_fail(call, REDIS_FAIL_IO, "out of memory");
		RedisConnFail(conn, REDIS_FAIL_IO, "out of memory", false);
		return;
	}
	/* Redis has it cached once the EVAL before it has run */
	if (!use_sha && call->script->sha[0] != '\0')
		conn->scripts_loaded |= bit;
}

/*
 * RedisConnDetachCalls: the calls the connection still owes replies to are
 * no longer waited for (their batch ends, or they timed out): their
 * replies will be skipped.  With a failure, each call fails with it first.
 * A call sent as EVALSHA keeps its EVAL form, to be sent again if it meets
 * NOSCRIPT; when that cannot be kept (out of memory), it is lost as it
 * would have been with the connection.
 */
void
RedisConnDetachCalls(RedisConn *conn, RedisFailure failure, const char *text)
{
	int			i;

	for (i = 0; i < conn->npending && conn->nwaiting > 0; i++)
	{
		RedisPending *p = pending_at(conn, i);
		RedisCall  *call = p->call;

		if (call == NULL)
			continue;
		if (failure != REDIS_FAIL_NONE)
			call_fail(call, failure, text);
		if (!call->used_eval)
		{
			p->resend_len = format_call(call, false, &p->resend);
			if (p->resend_len < 0)
				p->resend = NULL;
		}
		p->call = NULL;
		conn->nwaiting--;
	}
	acks_fail(conn, failure, text);
}

static void conn_broken(RedisConn *conn, RedisFailure failure, const char *text);

/*
 * io_done: what a read or write of the transport came to.  Returns true
 * when bytes moved; false when it would block, or when the stream ended
 * or failed, which breaks the connection (see conn_broken).
 */
static bool
io_done(RedisConn *conn, RedisIoStatus st, char *text, size_t len)
{
	if (st == REDIS_IO_OK)
		return true;
	if (st == REDIS_IO_AGAIN)
		return false;
	if (st == REDIS_IO_EOF)
		strlcpy(text, "the server closed the connection", len);
	if (conn->resolving)
	{
		RedisSentinelFailed(conn, text);
		return false;
	}
	if (!conn->heard && conn->server->tls &&
		(st == REDIS_IO_ERROR ? strncmp(text, "TLS error:", 10) == 0 :
		 !(redlock_sslcert && redlock_sslcert[0])))
	{
		/*
		 * In TLS 1.3 the server checks the client's certificate after the
		 * client has finished its part of the handshake: a refusal comes as
		 * an alert at the first read, or, when our first request crossed
		 * it, as a reset that took the alert with it.  That is a failed
		 * handshake, which trying again at once would not cure.
		 */
		char		why[REDLOCK_ERROR_LEN];

		snprintf(why, sizeof(why), "TLS handshake failed: %s%s", text,
				 st == REDIS_IO_EOF ?
				 " before answering anything (if it asks for a client certificate, set redlock.sslcert)" :
				 "");
		RedisConnFail(conn, REDIS_FAIL_CONNECT, why, true);
		return false;
	}
	/* a TLS port drops a plain TCP client at its first bytes */
	if (!conn->heard && !conn->server->tls && conn->server->port > 0)
		strlcat(text, " before answering anything (if the port expects TLS, use a rediss:// entry)",
				len);
	conn_broken(conn, REDIS_FAIL_IO, text);
	return false;
}

/*
 * RedisConnFlush: write as much of the output as the transport takes now.
 * A write error counts as a broken connection (see conn_broken).
 */

void
RedisConnFlush(RedisConn *conn)
{
	char		text[REDLOCK_ERROR_LEN];

	if (conn->state == REDIS_CONN_CLOSED || conn->state == REDIS_CONN_CONNECTING)
		return;
	while (conn->out.pos < conn->out.len)
	{
		size_t		n = 0;
		RedisIoStatus st;

		st = conn->transport.ops->write(&conn->transport,
										conn->out.data + conn->out.pos,
										conn->out.len - conn->out.pos, &n,
										text, sizeof(text));
		if (!io_done(conn, st, text, sizeof(text)))
			return;
		conn->out.pos += n;
	}
	conn->out.pos = conn->out.len = 0;
	conn->transport.write_want = 0;
}

/* ------------------------------------------------------------------------
 * Receiving
 * ------------------------------------------------------------------------
 */

/*
 * script_done: a call's script answered.  The call is done, unless it asks
 * for replicas and the script wrote (a positive answer: a grant, or "acted
 * on our lock"): then it waits for the next WAIT's answer.  A refusal or
 * "not ours" wrote nothing a replica must have.
 */
static void
script_done(RedisConn *conn, RedisCall *call)
{
	if (call->wait_replicas == 0 || call->nints != 1 || call->ints[0] <= 0)
	{
		call->state = REDIS_CALL_DONE;
		return;
	}
	if (conn->nacks == conn->acks_cap)
	{
		int			cap = Max(conn->acks_cap * 2, 16);
		RedisCall **acks = realloc(conn->acks, sizeof(RedisCall *) * cap);

		if (acks == NULL)
		{
			call_fail(call, REDIS_FAIL_IO, "out of memory");
			return;
		}
		conn->acks = acks;
		conn->acks_cap = cap;
	}
	call->script_answered = true;
	conn->acks[conn->nacks++] = call;
}

/*
 * acks_fail: the calls that wait for a WAIT's answer fail with "failure"
 * (unless it is REDIS_FAIL_NONE: then they stay as they are), and are
 * forgotten.
 */
static void
acks_fail(RedisConn *conn, RedisFailure failure, const char *text)
{
	int			i;

	for (i = 0; i < conn->nacks; i++)
		if (failure != REDIS_FAIL_NONE &&
			conn->acks[i]->state == REDIS_CALL_WAITING)
			call_fail(conn->acks[i], failure, text);
	conn->nacks = 0;
}

/*
 * wait_reply: the answer to a WAIT: it covers every call whose script
 * answered before it (those in conn->acks, since replies come in order),
 * each done when enough of the replicas it asked for acknowledged, failed
 * otherwise.  Frees the reply.
 */
static void
wait_reply(RedisConn *conn, redisReply *reply)
{
	char		text[REDLOCK_ERROR_LEN];
	int			i;

	if (reply->type != REDIS_REPLY_INTEGER)
	{
		snprintf(text, sizeof(text), "WAIT failed: %s",
				 reply->type == REDIS_REPLY_ERROR ? reply->str :
				 "an answer that is not an integer");
		acks_fail(conn, reply->type == REDIS_REPLY_ERROR ?
				  RedisClassifyError(reply->str) : REDIS_FAIL_PROTOCOL, text);
		freeReplyObject(reply);
		if (conn->server->kind == REDIS_KIND_SENTINEL && RedisReplyDemoted(text))
			RedisConnFail(conn, REDIS_FAIL_REPLY, text, false);
		return;
	}
	for (i = 0; i < conn->nacks; i++)
	{
		RedisCall  *call = conn->acks[i];

		if (call->state != REDIS_CALL_WAITING)
			continue;
		if (reply->integer >= call->wait_replicas)
			call->state = REDIS_CALL_DONE;
		else
		{
			snprintf(text, sizeof(text),
					 "%lld of the %d replicas redlock.replica_ack asks for acknowledged the write within %d ms",
					 reply->integer, call->wait_replicas, call->wait_ms);
			call_fail(call, REDIS_FAIL_REPLICAS, text);
		}
	}
	conn->nacks = 0;
	freeReplyObject(reply);
}

/*
 * cluster_redirect: a node of a cluster answered MOVED, ASK or TRYAGAIN:
 * the call is to be sent again, to the node named (batch.c does it).
 * Returns false for any other answer, or one that does not parse.
 */
static bool
cluster_redirect(RedisConn *conn, RedisCall *call, const char *text)
{
	RedisServer *to;
	bool		ask = false;

	if (strncmp(text, "TRYAGAIN", 8) == 0)
	{
		/* a migration splits the script's keys for now: again shortly */
		to = conn->server;
		call->resend_at = RedlockNowUs() + 20000;
	}
	else
	{
		to = RedisClusterRedirect(conn->server, text, &ask);
		if (to == NULL)
			return false;
		call->resend_at = 0;
		conn->server->cluster->redirects++;
		RedlockCount(REDLOCK_REDIRECTS, 1);
	}
	call->state = REDIS_CALL_REDIRECT;
	call->redirect_to = to;
	if (call->resend_at == 0)
		call->asking = ask;		/* TRYAGAIN: sent as before, ASKING too */
	strlcpy(call->error, text, sizeof(call->error));
	return true;
}

/*
 * reply_store: hand a reply to the call that waits for it.
 *
 * Integer replies and arrays of up to two integers are what our scripts
 * return, and a bulk string for a call that has room for one (text);
 * anything else fails the call.  A NOSCRIPT error (the server lost
 * its script cache) sends the call again, as EVAL.  Frees the reply.
 */
static void
reply_store(RedisConn *conn, RedisCall *call, redisReply *reply)
{
	RedisServer *srv = conn->server;
	char		text[REDLOCK_ERROR_LEN];
	RedisFailure failure;
	size_t		i;

	call->conn_serial = conn->serial;
	if (reply->type == REDIS_REPLY_INTEGER || reply->type == REDIS_REPLY_ARRAY)
		(srv->cluster != NULL ? srv->cluster : srv)->served = true;
	switch (reply->type)
	{
		case REDIS_REPLY_INTEGER:
			call->ints[0] = reply->integer;
			call->nints = 1;
			script_done(conn, call);
			freeReplyObject(reply);
			return;

		case REDIS_REPLY_ARRAY:
			if (reply->elements > 0 && reply->elements <= 2)
			{
				for (i = 0; i < reply->elements; i++)
				{
					if (reply->element[i]->type != REDIS_REPLY_INTEGER)
						break;
					call->ints[i] = reply->element[i]->integer;
				}
				if (i == reply->elements)
				{
					call->nints = (int) i;
					script_done(conn, call);
					freeReplyObject(reply);
					return;
				}
			}
			snprintf(text, sizeof(text),
					 "unexpected reply to script \"%s\": an array of %zu elements",
					 call->script->name, reply->elements);
			freeReplyObject(reply);
			call_fail(call, REDIS_FAIL_PROTOCOL, text);
			return;

		case REDIS_REPLY_STRING:
			if (call->text == NULL)
				break;
			call->textlen = reply->len;
			memcpy(call->text, reply->str, Min(reply->len, call->textcap));
			(srv->cluster != NULL ? srv->cluster : srv)->served = true;
			script_done(conn, call);
			freeReplyObject(reply);
			return;

		case REDIS_REPLY_ERROR:
			if (srv->cluster != NULL && cluster_redirect(conn, call, reply->str))
			{
				freeReplyObject(reply);
				return;
			}
			if (!call->used_eval && strncmp(reply->str, "NOSCRIPT", 8) == 0)
			{
				freeReplyObject(reply);
				conn->scripts_loaded &= ~((uint32) 1 << call->script->id);
				if (call->asking)
					RedisConnSendAsking(conn);	/* still redirected by ASK */
				RedisConnSendCall(conn, call);
				RedisConnQueueWait(conn);
				return;
			}
			/* Redis 7 answers a long command without AUTH with this riddle */
			if (strstr(reply->str, "unauthenticated") != NULL)
				snprintf(text, sizeof(text),
						 "the server requires authentication and was given none (it answered: %s)",
						 reply->str);
			else
				snprintf(text, sizeof(text), "%s", reply->str);
			freeReplyObject(reply);
			failure = RedisClassifyError(text);
			if (failure == REDIS_FAIL_AUTH && srv->passfile_note[0])
				snprintf(text + strlen(text), sizeof(text) - strlen(text),
						 " (%s)", srv->passfile_note);
			call_fail(call, failure, text);
			/* credentials go with the connect: try them afresh next time */
			if (failure == REDIS_FAIL_AUTH)
				RedisConnFail(conn, REDIS_FAIL_AUTH, text, false);
			/* a demoted primary: ask the sentinels again at the next use */
			else if (srv->kind == REDIS_KIND_SENTINEL && RedisReplyDemoted(text))
				RedisConnFail(conn, REDIS_FAIL_REPLY, text, false);
			return;

		default:
			break;
	}
	snprintf(text, sizeof(text), "unexpected reply of type %d to script \"%s\"",
			 reply->type, call->script->name);
	freeReplyObject(reply);
	call_fail(call, REDIS_FAIL_PROTOCOL, text);
}

/*
 * handshake_reply: the answer to AUTH or SELECT.  An error fails the
 * connection (and what it held); the last success releases what was held.
 */
static void
handshake_reply(RedisConn *conn, redisReply *reply)
{
	RedisServer *srv = conn->server;
	char		text[REDLOCK_ERROR_LEN];

	conn->handshake--;
	if (conn->role_check && conn->handshake == 0)
	{
		bool		primary = RedisRoleReply(conn, reply);

		freeReplyObject(reply);
		if (!primary)
			return;
	}
	else if (reply->type == REDIS_REPLY_ERROR)
	{
		snprintf(text, sizeof(text), "%s", reply->str);
		freeReplyObject(reply);
		if (srv->passfile_note[0])
			snprintf(text + strlen(text), sizeof(text) - strlen(text),
					 " (%s)", srv->passfile_note);
		RedisConnFail(conn, RedisClassifyError(text), text, false);
		return;
	}
	else
		freeReplyObject(reply);
	if (conn->handshake > 0)
		return;
	conn->state = REDIS_CONN_READY;
	if (conn->held.len > 0)
	{
		if (!buf_append(&conn->out, conn->held.data, conn->held.len))
		{
			RedisConnFail(conn, REDIS_FAIL_IO, "out of memory", false);
			return;
		}
		buf_free(&conn->held);
	}
}

/*
 * reply_dispatch: give one reply to whoever waits for it: the handshake,
 * the subscription's handler, a skipped request, or the first queued call.
 * Frees the reply.
 */
static void
reply_dispatch(RedisConn *conn, redisReply *reply)
{
	RedisPending pending;
	RedisCall  *call;

	if (conn->resolving)
	{
		RedisSentinelReply(conn, reply);
		return;
	}
	if (conn->handshake > 0)
	{
		handshake_reply(conn, reply);
		return;
	}
	if (conn->is_watch)
	{
		RedisWatchReply(conn, reply);
		return;
	}
	if (conn->is_sub)
	{
		RedisSubOnReply(conn, reply);
		return;
	}
	if (conn->npending == 0)
	{
		freeReplyObject(reply);
		RedisConnFail(conn, REDIS_FAIL_PROTOCOL,
					  "the server sent a reply nobody asked for", false);
		return;
	}
	pending = pending_pop(conn);
	call = pending.call;
	if (pending.is_wait)
	{
		wait_reply(conn, reply);
		return;
	}
	if (pending.is_slots)
	{
		conn->slots_owed--;
		RedisClusterSlotsReply(conn->server, reply);
		freeReplyObject(reply);
		return;
	}
	if (call == NULL)
	{
		/* a late reply; a late request refused for want of its script goes again */
		bool		noscript = reply->type == REDIS_REPLY_ERROR &&
			strncmp(reply->str, "NOSCRIPT", 8) == 0;

		freeReplyObject(reply);
		if (noscript && pending.resend)
		{
			if (!buf_append(&conn->out, pending.resend, pending.resend_len) ||
				!pending_push(conn, NULL, NULL, 0, false))
			{
				redisFreeCommand(pending.resend);
				RedisConnFail(conn, REDIS_FAIL_IO, "out of memory", false);
				return;
			}
			conn->scripts_loaded = 0;
		}
		if (pending.resend)
			redisFreeCommand(pending.resend);
		return;
	}
	/* the connection answered this batch: a later failure is real */
	conn->batch.may_retry = false;
	conn->server->last_rtt_us = RedlockNowUs() - conn->batch.start;
	reply_store(conn, call, reply);
}

/*
 * conn_heard: the first bytes from the server on this connection.  Only
 * now does the connect count as a success (backoff over, counted in the
 * view): a TLS 1.3 server refuses a client certificate after the
 * handshake looked done to us.
 */
static void
conn_heard(RedisConn *conn)
{
	RedisServer *srv = conn->server;

	conn->heard = true;
	if (conn->is_sub || conn->resolving)
		return;
	srv->backoff_ms = 0;
	srv->backoff_until = 0;
	srv->retry_after = 0;
	if (srv->connects++ > 0)
		RedlockCount(REDLOCK_RECONNECTS, 1);
	if (srv->cluster != NULL)
		srv->cluster->connects++;	/* its row counts its nodes' (views.c) */
}

/*
 * RedisConnReceive: read from the transport (once; again while TLS holds
 * decrypted bytes), then dispatch every complete reply.  A server that
 * makes us hold more than MAX_PENDING_BYTES of unparsed reply is not one to
 * trust: our replies are a few integers.
 */
void
RedisConnReceive(RedisConn *conn)
{
	char		buf[READ_CHUNK];
	char		text[REDLOCK_ERROR_LEN];

	for (;;)
	{
		size_t		n = 0;
		RedisIoStatus st;

		st = conn->transport.ops->read(&conn->transport, buf, sizeof(buf), &n,
									   text, sizeof(text));
		if (!io_done(conn, st, text, sizeof(text)))
			return;
		conn->last_io = RedlockNowUs();

		/* a TLS alert record (22 is a handshake, 21 an alert) on plain text */
		if (!conn->heard && !conn->server->tls && (buf[0] == 21 || buf[0] == 22))
		{
			RedisConnFail(conn, REDIS_FAIL_PROTOCOL,
						  "the server answered with TLS: it expects a TLS connection (use a rediss:// entry)",
						  false);
			return;
		}
		if (!conn->heard)
			conn_heard(conn);
		if (redisReaderFeed(conn->reader, buf, n) != REDIS_OK)
		{
			RedisConnFail(conn, REDIS_FAIL_IO, "out of memory", false);
			return;
		}
		for (;;)
		{
			void	   *reply = NULL;
			int			rc;

			/* only the answer at the head of the queue may be big */
			reading_big = (conn->role_check && conn->handshake == 1) ||
				(conn->handshake == 0 && conn->npending > 0 &&
				 pending_at(conn, 0)->is_slots);
			big_budget = &conn->big_budget;
			rc = redisReaderGetReply(conn->reader, &reply);
			reading_big = false;
			if (rc != REDIS_OK)
			{
				snprintf(text, sizeof(text), "protocol error: %s",
						 conn->reader->errstr);
				RedisConnFail(conn, REDIS_FAIL_PROTOCOL, text, false);
				return;
			}
			if (reply == NULL)
				break;
			reply_dispatch(conn, (redisReply *) reply);
			if (conn->state == REDIS_CONN_CLOSED)
				return;
		}
		if (conn->reader->len - conn->reader->pos > MAX_PENDING_BYTES)
		{
			RedisConnFail(conn, REDIS_FAIL_PROTOCOL,
						  "protocol error: a reply of more than 1 MB", false);
			return;
		}

		/* TLS may hold decrypted bytes the socket will never signal again */
		if (conn->transport.ops->pending == NULL ||
			conn->transport.ops->pending(&conn->transport) == 0)
			return;
	}
}

/*
 * conn_broken: the connection failed (EOF, reset, write error, or a
 * connect that failed).  If it existed when the batch began and has
 * answered nothing since, it most likely broke earlier (the server closed
 * it, or the connect was started before the server came back): outside
 * callbacks, reconnect once and send the waiting calls again (requests
 * from earlier batches that were still unanswered are lost with the old
 * connection, as they would be anyway).  Otherwise fail the connection.
 */
static void
conn_broken(RedisConn *conn, RedisFailure failure, const char *text)
{
	RedisCall **calls;
	int			ncalls = 0;
	int			i;

	if (conn->is_sub || !conn->batch.joined || !conn->batch.may_retry ||
		conn->batch.no_connect || conn->nwaiting == 0)
	{
		RedisConnFail(conn, failure, text, false);
		return;
	}

	calls = malloc(sizeof(RedisCall *) * conn->nwaiting);
	if (calls == NULL)
	{
		RedisConnFail(conn, REDIS_FAIL_IO, "out of memory", false);
		return;
	}
	for (i = 0; i < conn->npending; i++)
		if (pending_at(conn, i)->call)
			calls[ncalls++] = pending_at(conn, i)->call;
	conn->batch.may_retry = false;
	RedisConnClose(conn);		/* its calls are not failed: sent again */
	conn->server->last_failure = failure;
	strlcpy(conn->server->last_error, text, sizeof(conn->server->last_error));
	conn->server->last_error_at = GetCurrentTimestamp();
	if (RedisConnOpen(conn, RedlockNowUs()))
	{
		conn->batch.behind = false;
		conn->batch.deadline = Min(conn->connect_deadline,
								   conn->batch.deadline_cap);
	}
	for (i = 0; i < ncalls; i++)
	{
		if (conn->state == REDIS_CONN_CLOSED)
			call_fail(calls[i], conn->server->last_failure,
					  conn->server->last_error);
		else
			RedisConnSendCall(conn, calls[i]);
	}
	RedisConnQueueWait(conn);
	free(calls);
}

/*
 * connect_step: the socket of a connecting connection reported an event;
 * let the transport finish connecting.  Returns true when connected.
 */
static bool
connect_step(RedisConn *conn)
{
	char		text[REDLOCK_ERROR_LEN];
	RedisIoStatus st;

	st = conn->transport.ops->connect_step(&conn->transport, text, sizeof(text));
	if (st == REDIS_IO_AGAIN)
		return false;
	if (st != REDIS_IO_OK)
	{
		if (conn->resolving)
			RedisSentinelFailed(conn, text);
		/* a refused certificate is not cured by trying again at once */
		else if (conn->transport.handshaking)
			RedisConnFail(conn, REDIS_FAIL_CONNECT, text, true);
		else
			conn_broken(conn, REDIS_FAIL_CONNECT, text);
		return false;
	}
	conn->state = conn->handshake > 0 ? REDIS_CONN_HANDSHAKE : REDIS_CONN_READY;
	/* a sentinel has its connect deadline to answer in (see RedisSentinelAsk) */
	if (!conn->is_sub && !conn->resolving)
	{
		/* its calls get a command timeout from now */
		if (conn->batch.joined)
			conn->batch.deadline = Min(RedlockNowUs() +
									   (int64) redlock_command_timeout * 1000,
									   conn->batch.deadline_cap);
	}
	return true;
}

/*
 * RedisConnService: handle what the wait set reported for a connection:
 * finish a connect, read replies, write what is left.
 */
void
RedisConnService(RedisConn *conn, uint32 events)
{
	if (conn->state == REDIS_CONN_CONNECTING && !connect_step(conn))
		return;
	if (conn->state == REDIS_CONN_CLOSED)
		return;
	/* a read may wait for the socket to be writable (TLS) */
	if ((events & WL_SOCKET_READABLE) || conn->transport.read_want == WL_SOCKET_WRITEABLE)
		RedisConnReceive(conn);
	if (conn->state != REDIS_CONN_CLOSED)
		RedisConnFlush(conn);
}

/*
 * RedisConnDrain: take what has arrived of earlier replies, without
 * waiting (one read, only when replies are owed).
 */
void
RedisConnDrain(RedisConn *conn)
{
	if ((conn->state == REDIS_CONN_READY || conn->state == REDIS_CONN_HANDSHAKE) &&
		(conn->npending > 0 || conn->handshake > 0))
		RedisConnReceive(conn);
}

/*
 * RedisConnCheckIdle: a ready connection that owes nothing and has been
 * silent for more than a second may have been closed by the server (its
 * idle timeout, a restart): look, without waiting (one read).  A closed
 * one is failed, so that the caller opens a new one.
 */
void
RedisConnCheckIdle(RedisConn *conn, int64 now)
{
	if (conn->state == REDIS_CONN_READY && conn->npending == 0 &&
		now - conn->last_io > 1000000)
		RedisConnReceive(conn);
}

/*
 * RedisConnStillOpen: whether the connection is ready and the server has
 * not closed it, looking without waiting (one read: a server that died or
 * restarted has left its end-of-file there, which fails the connection).
 * Replies that arrived are dispatched as usual, and a close behind them
 * is seen too (poll's POLLRDHUP).  Looks once per "now", so
 * that a caller going through many locks on few masters reads each
 * connection once.
 */
bool
RedisConnStillOpen(RedisConn *conn, int64 now)
{
	if (conn->state == REDIS_CONN_READY && conn->looked_at != now)
	{
		struct pollfd pfd;

		conn->looked_at = now;
		RedisConnReceive(conn);

		/*
		 * One read may stop at replies that came before the end-of-file
		 * (late answers nobody waits for); the socket says whether the
		 * server has closed its end, read or not.
		 */
		pfd.fd = conn->transport.fd;
		pfd.events = POLLIN | POLLRDHUP;
		pfd.revents = 0;
		if (conn->state == REDIS_CONN_READY && pfd.fd >= 0 &&
			poll(&pfd, 1, 0) > 0 &&
			(pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)))
			RedisConnFail(conn, REDIS_FAIL_IO, "the server closed the connection",
						  false);
	}
	return conn->state == REDIS_CONN_READY;
}

/*
 * RedisDisconnectAll: close every connection (at proc exit).
 */
void
RedisDisconnectAll(void)
{
	int			i;

	for (i = 0; i < nservers; i++)
	{
		RedisConnClose(&servers[i]->cmd);
		RedisConnClose(&servers[i]->sub);
		RedisConnClose(&servers[i]->watch);
	}
}
