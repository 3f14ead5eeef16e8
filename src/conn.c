/*-------------------------------------------------------------------------
 *
 * conn.c
 *	  Redis connections, and script calls sent to several servers at once
 *	  whose answers are collected in one WaitEventSet.
 *
 * Ownership.  One RedisServer per address, created on first use in
 * RedlockContext and never freed: a lock keeps pointers to the servers it
 * was taken on, so changing redlock.servers cannot strand it.  Each server
 * has at most one hiredis context, malloc'd by hiredis and freed with
 * redisFree; no palloc'd memory is handed to hiredis and no ERROR is raised
 * while a hiredis reply is held.
 *
 * Reply accounting.  srv->owed counts the replies the server still owes
 * us: it goes up when a command is appended and down when a reply is
 * parsed.  Outside RedisRun nobody waits for any of them, so a batch first
 * notes how many to skip (batch_skip = owed), then appends its own
 * commands; replies are handed out in order, skipped ones first, then to
 * the batch's calls in the order they were sent.  A batch that ends early
 * (quorum reached, deadline, or an ERROR thrown by CHECK_FOR_INTERRUPTS)
 * leaves its unanswered calls in owed and the next batch skips them.  A
 * request to a frozen server is therefore never dropped: a later request,
 * such as the release of a failed acquire, queues behind it on the same
 * socket, and a server that resumes applies both in order.
 *
 * Waiting.  One WaitEventSet per backend holds the latch, postmaster death
 * and every open socket; it is rebuilt only when a socket opens or closes
 * (conn_generation).  The loop calls CHECK_FOR_INTERRUPTS, so cancel,
 * statement_timeout and pg_terminate_backend end a wait.  When the caller
 * holds interrupts (commit and abort callbacks, proc exit) only each
 * server's deadline and postmaster death end it, never an ERROR.
 *
 * Connecting.  Non-blocking.  A connection the server closed while we were
 * not using it (restart, CLIENT KILL, idle timeout) looks fine until used:
 * when a connection fails before answering anything in a batch, it is
 * replaced and the batch's calls are sent once more on the new one.  That
 * is safe because every script is idempotent for our owner value (an
 * acquire that finds our own value counts as granted), and it costs no
 * system call on the hot path, unlike checking the socket before each use.
 * A connect that times out puts the server in backoff: a short, growing
 * pause before the next attempt, during which calls to it fail at once, so
 * a dead master does not cost every transaction a connect timeout.  A
 * refused connection costs nothing and is retried at every call.  A connect
 * in progress outlives the batch that started it, so a master that comes
 * back is used as soon as it answers.  Host names are resolved by
 * getaddrinfo(), which does not honour these deadlines: list addresses, or
 * names the resolver answers from /etc/hosts.
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>
#include <sys/stat.h>

#include <hiredis/hiredis.h>

#include "common/cryptohash.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/wait_event.h"

#include "redlock.h"

#define BACKOFF_MIN_MS		100
#define BACKOFF_MAX_MS		5000
#define SLOW_CONNECT_US		20000	/* a failure this slow earns backoff */
#define MAX_OWED			1024	/* a server this far behind is dropped */
#define MAX_PENDING_BYTES	((size_t) 1 << 20)	/* unparsed reply bytes we hold */
#define MAX_WAIT_EVENTS		16

/* Every server this backend has used, in creation order. */
static RedisServer **servers = NULL;
static int	nservers = 0;
static int	maxservers = 0;

/* The backend's wait set, and the socket generation it was built for. */
static WaitEventSet *wait_set = NULL;
static uint64 wait_set_generation = 0;
static uint64 conn_generation = 1;

/* The batch in progress: its number, start, and where its texts go. */
static uint64 batch_epoch = 0;
static int64 batch_start = 0;
static MemoryContext batch_context = NULL;

/* Why the password file was not used, for the text of an AUTH failure. */

static void server_fail(RedisServer *srv, RedisFailure failure,
						const char *text, bool backoff);
static void server_connect(RedisServer *srv, int64 now);

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
	}
	return "unknown";
}

/*
 * RedisServerGet: the server entry for "spec", created on first use.
 *
 * Returns a pointer that stays valid for the life of the backend.
 */
RedisServer *
RedisServerGet(const RedlockServerSpec *spec)
{
	RedisServer *srv;
	int			i;

	for (i = 0; i < nservers; i++)
	{
		if (strcmp(servers[i]->addr, spec->addr) == 0)
		{
			/* credentials apply to connections opened from now on */
			srv = servers[i];
			strlcpy(srv->user, spec->user, sizeof(srv->user));
			strlcpy(srv->password, spec->password, sizeof(srv->password));
			srv->db = spec->db;
			return srv;
		}
	}

	if (nservers == maxservers)
	{
		int			newmax = maxservers ? maxservers * 2 : 8;

		if (servers == NULL)
			servers = MemoryContextAlloc(RedlockContext,
										 newmax * sizeof(RedisServer *));
		else
			servers = repalloc(servers, newmax * sizeof(RedisServer *));
		maxservers = newmax;
	}

	srv = MemoryContextAllocZero(RedlockContext, sizeof(RedisServer));
	strlcpy(srv->addr, spec->addr, sizeof(srv->addr));
	strlcpy(srv->host, spec->host, sizeof(srv->host));
	srv->port = spec->port;
	strlcpy(srv->user, spec->user, sizeof(srv->user));
	strlcpy(srv->password, spec->password, sizeof(srv->password));
	srv->db = spec->db;
	srv->wes_pos = -1;
	servers[nservers++] = srv;
	return srv;
}

/*
 * RedisServers: every server this backend has used (or was asked about),
 * in creation order; *n gets how many.
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
 * resource owner), so callers prepare every script they may need in a
 * callback before they take a lock.  Until then a script is sent with EVAL.
 * Raises ERROR if hashing fails.
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

/* call_fail: mark a call failed; its text is copied into the batch's context. */
static void
call_fail(RedisCall *call, RedisFailure failure, const char *text)
{
	call->state = REDIS_CALL_FAILED;
	call->failure = failure;
	call->error = MemoryContextStrdup(batch_context, text);
}

/*
 * call_write: write one call to its server's output buffer.
 *
 * Sends EVALSHA when this connection already ran the script, EVAL (which
 * also loads it) otherwise.  Arguments travel as separate bulk strings, so
 * no key or value is ever spliced into the script text.  Returns false if
 * hiredis could not build the command (out of memory); the caller fails
 * the server.
 */
static bool
call_write(RedisServer *srv, RedisCall *call)
{
	const char *argv[REDIS_CALL_MAX_ARGS + 3];
	size_t		argvlen[REDIS_CALL_MAX_ARGS + 3];
	char		nkeys[12];
	uint32		bit = (uint32) 1 << call->script->id;
	bool		use_sha;
	int			i;

	use_sha = call->script->sha[0] != '\0' && (srv->scripts_loaded & bit);
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

	if (redisAppendCommandArgv(srv->ctx, call->nargs + 3, argv, argvlen) != REDIS_OK)
		return false;

	srv->owed++;
	call->used_eval = !use_sha;
	call->held = false;

	/* Redis has it cached once the EVAL before it has run. */
	if (!use_sha && call->script->sha[0] != '\0')
		srv->scripts_loaded |= bit;
	return true;
}

/*
 * call_append: put a call on its server's list for this batch, and write
 * it to the connection's output buffer -- unless the connection's AUTH or
 * SELECT have not answered yet.  Redis runs what follows a refused AUTH as
 * the default user, and what follows a refused SELECT in database 0, so
 * the call is held until they succeed (release_held) and fails with them
 * if they do not.  Returns false if hiredis ran out of memory.
 */
static bool
call_append(RedisServer *srv, RedisCall *call)
{
	call->state = REDIS_CALL_WAITING;
	call->next_waiting = NULL;
	call->held = true;
	if (srv->handshake == 0 && !call_write(srv, call))
		return false;
	if (srv->batch_tail)
		srv->batch_tail->next_waiting = call;
	else
		srv->batch_head = call;
	srv->batch_tail = call;
	return true;
}

/*
 * release_held: the handshake succeeded; write the calls of the batch in
 * progress that waited for it, in their order.
 */
static bool
release_held(RedisServer *srv)
{
	RedisCall  *call;

	if (srv->batch_epoch != batch_epoch)
		return true;
	for (call = srv->batch_head; call; call = call->next_waiting)
		if (call->held && !call_write(srv, call))
			return false;
	return true;
}

/*
 * server_fail: close a server's connection after a failure and fail the
 * calls of the current batch that wait on it.
 *
 * With "backoff", no new connect is attempted for a growing pause.
 */
static void
server_fail(RedisServer *srv, RedisFailure failure, const char *text,
			bool backoff)
{
	RedisCall  *call;

	srv->last_failure = failure;
	strlcpy(srv->last_error, text, sizeof(srv->last_error));
	srv->last_error_at = GetCurrentTimestamp();

	if (srv->ctx)
	{
		redisFree(srv->ctx);
		srv->ctx = NULL;
		conn_generation++;
	}
	srv->connecting = false;
	srv->owed = 0;
	srv->scripts_loaded = 0;
	srv->wes_pos = -1;

	if (backoff)
	{
		srv->backoff_ms = srv->backoff_ms == 0 ? BACKOFF_MIN_MS :
			Min(srv->backoff_ms * 2, BACKOFF_MAX_MS);
		srv->retry_after = RedlockNowUs() + (int64) srv->backoff_ms * 1000;
	}

	if (srv->batch_epoch == batch_epoch)
	{
		for (call = srv->batch_head; call; call = call->next_waiting)
			call_fail(call, failure, text);
		srv->batch_head = srv->batch_tail = NULL;
		srv->batch_skip = 0;
	}
}

/*
 * server_broken: the connection failed (EOF, reset, write error, or a
 * connect that failed).  If it existed when the batch began and has
 * answered nothing since, it most likely broke earlier (the server closed
 * it, or the connect was started before the server came back): reconnect
 * once and send the waiting calls again (requests from earlier batches
 * that were still unanswered are lost with the old connection, as they
 * would be anyway).  Otherwise fail the server.
 */
static void
server_broken(RedisServer *srv, RedisFailure failure, const char *text)
{
	RedisCall  *calls;
	RedisCall  *next;

	if (srv->batch_epoch != batch_epoch || !srv->batch_retry ||
		srv->batch_head == NULL)
	{
		server_fail(srv, failure, text, false);
		return;
	}

	calls = srv->batch_head;
	srv->batch_head = srv->batch_tail = NULL;
	srv->batch_retry = false;
	server_fail(srv, failure, text, false);
	server_connect(srv, RedlockNowUs());
	srv->batch_skip = 0;
	srv->batch_deadline = srv->connect_deadline;

	for (; calls; calls = next)
	{
		next = calls->next_waiting;
		calls->next_waiting = NULL;
		if (srv->ctx == NULL)
			call_fail(calls, srv->last_failure, srv->last_error);
		else if (!call_append(srv, calls))
			server_fail(srv, REDIS_FAIL_IO, "out of memory", false);
	}
}

/*
 * server_timeout: the batch's deadline passed with calls still waiting on
 * a connected server.  The connection is kept, so that what we sent (and
 * what we send later) is applied in order if the server resumes; the
 * replies will be skipped.
 */
static void
server_timeout(RedisServer *srv, int timeout_ms)
{
	RedisCall  *call;
	char		text[64];

	snprintf(text, sizeof(text), "no reply within %d ms", timeout_ms);
	srv->last_failure = REDIS_FAIL_TIMEOUT;
	strlcpy(srv->last_error, text, sizeof(srv->last_error));
	srv->last_error_at = GetCurrentTimestamp();

	for (call = srv->batch_head; call; call = call->next_waiting)
	{
		call_fail(call, REDIS_FAIL_TIMEOUT, text);
		srv->batch_skip++;
	}
	srv->batch_head = srv->batch_tail = NULL;
}

/*
 * passfile_field: cut the next ':'-separated field off *line, undoing
 * backslash escapes, into out (of outsize).  Returns false at the end of
 * the line, or when the field does not fit (it is never cut short).
 */
static bool
passfile_field(char **line, char *out, size_t outsize)
{
	char	   *p = *line;
	size_t		n = 0;

	if (p == NULL)
		return false;
	while (*p && *p != ':' && *p != '\n' && *p != '\r')
	{
		if (*p == '\\' && p[1])
			p++;
		if (n + 1 >= outsize)
			return false;
		out[n++] = *p;
		p++;
	}
	out[n] = '\0';
	*line = *p == ':' ? p + 1 : NULL;
	return true;
}

/*
 * passfile_lookup: find the credentials for srv in redlock.passfile, in
 * the form host:port:user:password (* matches anything; the first match
 * wins; # starts a comment).  The file must be a regular file that belongs
 * to no group or others, as libpq asks of its password file.  Returns true
 * and fills user and password when a line matches; otherwise notes in
 * srv->passfile_note why the file was not used, if it was not.  Raises no
 * ERROR: it runs at connect time, which may be in a commit or abort
 * callback.
 */
static bool
passfile_lookup(RedisServer *srv, char *user, char *password)
{
	struct stat st;
	char		line[1024];
	char		port[16];
	FILE	   *f;
	bool		found = false;
	bool		tail = false;	/* in the rest of an overlong line */
	int			lineno = 0;

	srv->passfile_note[0] = '\0';
	if (redlock_passfile == NULL || redlock_passfile[0] == '\0')
		return false;
	f = fopen(redlock_passfile, "r");
	if (f == NULL || fstat(fileno(f), &st) != 0)
	{
		snprintf(srv->passfile_note, sizeof(srv->passfile_note),
				 "redlock.passfile \"%s\" cannot be read: %s",
				 redlock_passfile, strerror(errno));
		if (f)
			fclose(f);
		return false;
	}
	if (!S_ISREG(st.st_mode) || (st.st_mode & (S_IRWXG | S_IRWXO)))
	{
		snprintf(srv->passfile_note, sizeof(srv->passfile_note),
				 S_ISREG(st.st_mode) ?
				 "redlock.passfile \"%s\" is ignored: it is readable by group or others (chmod 0600 it)" :
				 "redlock.passfile \"%s\" is ignored: it is not a regular file",
				 redlock_passfile);
		fclose(f);
		return false;
	}
	snprintf(port, sizeof(port), "%d", srv->port);
	while (!found && fgets(line, sizeof(line), f))
	{
		char	   *p = line;
		char		fhost[REDLOCK_ADDR_LEN];
		char		fport[16];
		bool		was_tail = tail;

		/* a line longer than the buffer: skip it whole, and say so */
		tail = strchr(line, '\n') == NULL && !feof(f);
		if (was_tail)
			continue;
		lineno++;
		if (line[0] == '#' || line[0] == '\n' || line[0] == '\r')
			continue;
		if (tail ||
			!passfile_field(&p, fhost, sizeof(fhost)) ||
			!passfile_field(&p, fport, sizeof(fport)) ||
			!passfile_field(&p, user, REDLOCK_CRED_LEN) ||
			!passfile_field(&p, password, REDLOCK_CRED_LEN))
		{
			snprintf(srv->passfile_note, sizeof(srv->passfile_note),
					 "line %d of redlock.passfile \"%s\" is skipped: it is not host:port:user:password, or a field is too long",
					 lineno, redlock_passfile);
			continue;
		}
		found = (strcmp(fhost, "*") == 0 || strcmp(fhost, srv->host) == 0) &&
			(strcmp(fport, "*") == 0 || strcmp(fport, port) == 0 ||
			 (srv->port == 0 && fport[0] == '\0'));
	}
	fclose(f);
	if (found)
		srv->passfile_note[0] = '\0';
	else
		user[0] = password[0] = '\0';
	return found;
}

/*
 * Reply objects.  hiredis 0.14 allocates an array reply's element vector as
 * soon as it reads the length, and frees it element by element: a server
 * announcing "*2147483647" gets gigabytes reserved and a free that loops
 * for minutes, uninterruptibly.  Our replies are arrays of at most three
 * elements, so every connection's reader gets hiredis's own functions but
 * for arrays, which refuse more than MAX_ARRAY_ELEMENTS (the reader then
 * reports an error and the connection is dropped).
 */
#define MAX_ARRAY_ELEMENTS 8

static redisReplyObjectFunctions reply_functions;
static void *(*reply_functions_default_create_array) (const redisReadTask *, int);
static bool reply_functions_ready = false;

static void *
create_array(const redisReadTask *task, int elements)
{
	/* nested arrays would multiply the limit: none of our replies has one */
	if (elements > MAX_ARRAY_ELEMENTS || task->parent != NULL)
		return NULL;
	return reply_functions_default_create_array(task, elements);
}

/*
 * limit_reader: give a new context's reader the capped functions.
 * Returns false if hiredis could not create the reader to copy from.
 */
static bool
limit_reader(redisContext *c)
{
	if (!reply_functions_ready)
	{
		redisReader *r = redisReaderCreate();

		if (r == NULL)
			return false;
		reply_functions = *r->fn;
		reply_functions_default_create_array = reply_functions.createArray;
		reply_functions.createArray = create_array;
		redisReaderFree(r);
		reply_functions_ready = true;
	}
	c->reader->fn = &reply_functions;
	return true;
}

/*
 * append_auth: queue AUTH on a new connection when credentials are set:
 * the server entry's own, else a matching line of redlock.passfile, else
 * redlock.username and redlock.password; a user named in the entry is the
 * user in every case.  Returns how many commands were
 * queued (0 or 1), or -1 if hiredis failed.
 */
static int
append_auth(redisContext *c, RedisServer *srv)
{
	char		fuser[REDLOCK_CRED_LEN];
	char		fpassword[REDLOCK_CRED_LEN];
	const char *user;
	const char *password;
	const char *argv[3];
	size_t		argvlen[3];
	int			argc = 0;

	if (srv->password[0])
	{
		user = srv->user;
		password = srv->password;
	}
	else if (passfile_lookup(srv, fuser, fpassword))
	{
		user = fuser;
		password = fpassword;
	}
	else
	{
		user = redlock_username ? redlock_username : "";
		password = redlock_password ? redlock_password : "";
	}
	/* an entry that names a user, and no password, names the user */
	if (srv->user[0])
		user = srv->user;

	if (password[0] == '\0')
		return 0;
	argv[argc] = "AUTH";
	argvlen[argc++] = 4;
	if (user[0])
	{
		argv[argc] = user;
		argvlen[argc++] = strlen(user);
	}
	argv[argc] = password;
	argvlen[argc++] = strlen(password);
	return redisAppendCommandArgv(c, argc, argv, argvlen) == REDIS_OK ? 1 : -1;
}

/*
 * classify_error: the failure kind of an error reply from Redis.
 */
static RedisFailure
classify_error(const char *text)
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

/*
 * server_connect: start a non-blocking connect.
 *
 * On an immediate failure the server is failed (with backoff when the
 * attempt itself was slow, as a name lookup can be); otherwise it is left
 * connecting, with its own deadline.
 */
static void
server_connect(RedisServer *srv, int64 now)
{
	redisContext *c;
	char		text[REDLOCK_ERROR_LEN];

	if (srv->port > 0)
		c = redisConnectNonBlock(srv->host, srv->port);
	else
		c = redisConnectUnixNonBlock(srv->host);

	if (c == NULL || c->err || !limit_reader(c))
	{
		snprintf(text, sizeof(text), "could not connect: %s",
				 c && c->err ? c->errstr : "out of memory");
		if (c)
			redisFree(c);
		server_fail(srv, REDIS_FAIL_CONNECT, text,
					RedlockNowUs() - now > SLOW_CONNECT_US);
		return;
	}

	srv->ctx = c;
	srv->credentials = redlock_credentials_generation;
	srv->connecting = true;
	srv->connect_deadline = now + (int64) redlock_connect_timeout * 1000;
	srv->owed = 0;
	srv->handshake = 0;
	srv->scripts_loaded = 0;
	srv->wes_pos = -1;
	conn_generation++;

	/* authenticate and choose the database before anything else */
	{
		int			db = srv->db >= 0 ? srv->db : redlock_database;
		int			n = append_auth(c, srv);

		if (n >= 0 && db > 0)
			n = redisAppendCommand(c, "SELECT %d", db) == REDIS_OK ? n + 1 : -1;
		if (n < 0)
		{
			server_fail(srv, REDIS_FAIL_IO, "out of memory", false);
			return;
		}
		srv->handshake = n;
		srv->owed = n;
	}
}

/*
 * server_connected: the socket of a connecting server became writable;
 * find out whether the connect succeeded.
 *
 * Returns true when the server is now connected.
 */
static bool
server_connected(RedisServer *srv)
{
	int			err = 0;
	socklen_t	len = sizeof(err);

	if (getsockopt(srv->ctx->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err != 0)
	{
		char		text[REDLOCK_ERROR_LEN];

		snprintf(text, sizeof(text), "could not connect: %s", strerror(err));
		server_broken(srv, REDIS_FAIL_CONNECT, text);
		return false;
	}

	srv->connecting = false;
	srv->backoff_ms = 0;
	if (srv->connects++ > 0)
		RedlockCount(REDLOCK_RECONNECTS, 1);
	if (srv->batch_epoch == batch_epoch)
		srv->batch_deadline = RedlockNowUs() +
			(int64) redlock_command_timeout * 1000;
	return true;
}

/*
 * reply_store: hand a reply to the call that waits for it.
 *
 * Integer replies and arrays of up to two integers are what our scripts
 * return; anything else fails the call.  A NOSCRIPT error (the server lost
 * its script cache) re-sends the call as EVAL.  Frees the reply, and copies
 * what it keeps before anything that could raise an ERROR.
 */
static void
reply_store(RedisServer *srv, RedisCall *call, redisReply *reply)
{
	char		text[REDLOCK_ERROR_LEN];
	size_t		i;

	switch (reply->type)
	{
		case REDIS_REPLY_INTEGER:
			call->ints[0] = reply->integer;
			call->nints = 1;
			call->state = REDIS_CALL_DONE;
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
					call->state = REDIS_CALL_DONE;
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

		case REDIS_REPLY_ERROR:
			if (!call->used_eval && strncmp(reply->str, "NOSCRIPT", 8) == 0)
			{
				freeReplyObject(reply);
				srv->scripts_loaded &= ~((uint32) 1 << call->script->id);
				if (!call_append(srv, call))
					server_fail(srv, REDIS_FAIL_IO, "out of memory", false);
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
			if (classify_error(text) == REDIS_FAIL_AUTH && srv->passfile_note[0])
				snprintf(text + strlen(text), sizeof(text) - strlen(text),
						 " (%s)", srv->passfile_note);
			call_fail(call, classify_error(text), text);
			/* credentials go with the connect: try them afresh next time */
			if (call->failure == REDIS_FAIL_AUTH)
				server_fail(srv, REDIS_FAIL_AUTH, text, false);
			return;

		default:
			snprintf(text, sizeof(text),
					 "unexpected reply of type %d to script \"%s\"",
					 reply->type, call->script->name);
			freeReplyObject(reply);
			call_fail(call, REDIS_FAIL_PROTOCOL, text);
			return;
	}
}

/*
 * reply_dispatch: account for one reply from "srv" and give it to whoever
 * waits for it, if anyone.  Frees the reply.
 */
static void
reply_dispatch(RedisServer *srv, redisReply *reply)
{
	RedisCall  *call;

	if (srv->owed <= 0)
	{
		freeReplyObject(reply);
		server_fail(srv, REDIS_FAIL_PROTOCOL,
					"the server sent a reply nobody asked for", false);
		return;
	}
	srv->owed--;

	if (srv->handshake > 0)
	{
		/* the answer to AUTH or SELECT: only an error matters */
		char		text[REDLOCK_ERROR_LEN];
		bool		error = reply->type == REDIS_REPLY_ERROR;

		srv->handshake--;
		if (error)
			snprintf(text, sizeof(text), "%s", reply->str);
		freeReplyObject(reply);
		if (error && srv->passfile_note[0])
			snprintf(text + strlen(text), sizeof(text) - strlen(text),
					 " (%s)", srv->passfile_note);
		if (error)
			server_fail(srv, classify_error(text), text, false);
		else if (srv->handshake == 0 && !release_held(srv))
			server_fail(srv, REDIS_FAIL_IO, "out of memory", false);
		return;
	}

	if (srv->batch_epoch != batch_epoch)
	{
		freeReplyObject(reply);
		return;
	}
	if (srv->batch_skip > 0)
	{
		srv->batch_skip--;
		freeReplyObject(reply);
		return;
	}

	call = srv->batch_head;
	if (call == NULL)
	{
		/* owed counted more than this batch sent: never trust the socket */
		freeReplyObject(reply);
		server_fail(srv, REDIS_FAIL_PROTOCOL,
					"a reply arrived that no request was waiting for", false);
		return;
	}
	srv->batch_head = call->next_waiting;
	if (srv->batch_head == NULL)
		srv->batch_tail = NULL;
	call->next_waiting = NULL;
	/* the connection answered this batch: a later failure is real */
	srv->batch_retry = false;
	srv->last_rtt_us = RedlockNowUs() - batch_start;
	reply_store(srv, call, reply);
}

/*
 * server_read: read what the socket has and dispatch every complete reply.
 * Fails the server on EOF, I/O or protocol errors.
 */
static void
server_read(RedisServer *srv)
{
	for (;;)
	{
		void	   *reply = NULL;

		if (srv->ctx == NULL)
			return;
		if (redisGetReplyFromReader(srv->ctx, &reply) != REDIS_OK)
		{
			char		text[REDLOCK_ERROR_LEN];

			snprintf(text, sizeof(text), "protocol error: %s", srv->ctx->errstr);
			server_fail(srv, REDIS_FAIL_PROTOCOL, text, false);
			return;
		}
		if (reply == NULL)
			break;
		reply_dispatch(srv, reply);
	}
}

/*
 * server_receive: one non-blocking read from the socket, then dispatch.
 * Our scripts answer with a few integers: a server that makes hiredis
 * buffer more than MAX_PENDING_BYTES of one reply is not one to trust.
 */
static void
server_receive(RedisServer *srv)
{
	if (redisBufferRead(srv->ctx) != REDIS_OK)
	{
		char		text[REDLOCK_ERROR_LEN];

		if (srv->ctx->err == REDIS_ERR_PROTOCOL)
		{
			snprintf(text, sizeof(text), "protocol error: %s", srv->ctx->errstr);
			server_fail(srv, REDIS_FAIL_PROTOCOL, text, false);
			return;
		}
		if (srv->ctx->err == REDIS_ERR_EOF)
			snprintf(text, sizeof(text), "the server closed the connection");
		else
			snprintf(text, sizeof(text), "connection error: %s", srv->ctx->errstr);
		server_broken(srv, REDIS_FAIL_IO, text);
		return;
	}
	server_read(srv);
	if (srv->ctx && srv->ctx->reader->len - srv->ctx->reader->pos > MAX_PENDING_BYTES)
		server_fail(srv, REDIS_FAIL_PROTOCOL,
					"protocol error: a reply of more than 1 MB", false);
}

/*
 * server_flush: write as much of the output buffer as the socket takes,
 * and note in want_write whether some is left for when it is writable.
 */
static void
server_flush(RedisServer *srv)
{
	int			done = 0;

	srv->want_write = false;
	if (srv->ctx == NULL || srv->connecting)
		return;
	if (redisBufferWrite(srv->ctx, &done) != REDIS_OK)
	{
		char		text[REDLOCK_ERROR_LEN];

		snprintf(text, sizeof(text), "connection error: %s", srv->ctx->errstr);
		server_broken(srv, REDIS_FAIL_IO, text);
		return;
	}
	srv->want_write = !done;
}

/* ------------------------------------------------------------------------
 * Subscription connections: how a waiting backend hears that a lock was
 * released.  Each backend has one channel, "redlock:wake:" followed by 16
 * random hex characters; the release script publishes the lock's key on
 * the channel of the first waiter in the key's queue.  The connection is
 * opened on the first wait, subscribed once, and kept: later waits cost no
 * SUBSCRIBE.  Its messages are read whenever the wait set reports them;
 * only one for the key currently waited for (wake_key) counts.
 * ------------------------------------------------------------------------
 */

static char wake_channel[64];
static const char *wake_key = NULL;
static uint64 wake_count = 0;

/*
 * RedisWakeChannel: this backend's wake channel, generated on first use.
 * Raises ERROR if no random bytes are available.
 */
const char *
RedisWakeChannel(void)
{
	if (wake_channel[0] == '\0')
	{
		uint8		id[8];
		int			len;
		int			i;

		if (!pg_strong_random(id, sizeof(id)))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate a random wake channel")));
		len = snprintf(wake_channel, sizeof(wake_channel), "%s",
					   REDLOCK_WAKE_CHANNEL_PREFIX);
		for (i = 0; i < (int) sizeof(id); i++)
			len += snprintf(wake_channel + len, sizeof(wake_channel) - len,
							"%02x", id[i]);
	}
	return wake_channel;
}

/* RedisWakeCount: how many wake-ups for the awaited key arrived so far. */
uint64
RedisWakeCount(void)
{
	return wake_count;
}

/* sub_close: drop a subscription connection; waits fall back to the timer. */
static void
sub_close(RedisServer *srv)
{
	if (srv->sub.ctx)
	{
		redisFree(srv->sub.ctx);
		srv->sub.ctx = NULL;
		conn_generation++;
	}
	srv->sub.connecting = false;
	srv->sub.ready = false;
	srv->sub.want_write = false;
}

/*
 * sub_receive: read what the subscription socket has: the SUBSCRIBE
 * confirmation, and wake messages.  Anything else closes it.
 */
static void
sub_receive(RedisServer *srv)
{
	if (redisBufferRead(srv->sub.ctx) != REDIS_OK)
	{
		sub_close(srv);
		return;
	}
	for (;;)
	{
		redisReply *r = NULL;
		bool		ok;

		if (redisGetReplyFromReader(srv->sub.ctx, (void **) &r) != REDIS_OK)
		{
			sub_close(srv);
			return;
		}
		if (r == NULL)
			return;
		if (srv->sub.handshake > 0)
		{
			/* AUTH: OK, or the connection is no use */
			ok = r->type == REDIS_REPLY_STATUS;
			srv->sub.handshake--;
			freeReplyObject(r);
			if (!ok)
			{
				sub_close(srv);
				return;
			}
			continue;
		}
		ok = r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
			r->element[0]->type == REDIS_REPLY_STRING;
		if (ok && strcmp(r->element[0]->str, "subscribe") == 0)
			srv->sub.ready = true;
		else if (ok && strcmp(r->element[0]->str, "message") == 0)
		{
			if (wake_key && r->element[2]->type == REDIS_REPLY_STRING &&
				strcmp(r->element[2]->str, wake_key) == 0)
				wake_count++;
		}
		else
			ok = false;
		freeReplyObject(r);
		if (!ok)
		{
			sub_close(srv);
			return;
		}
	}
}

/* sub_flush: write the pending SUBSCRIBE; see server_flush. */
static void
sub_flush(RedisServer *srv)
{
	int			done = 0;

	srv->sub.want_write = false;
	if (srv->sub.ctx == NULL || srv->sub.connecting)
		return;
	if (redisBufferWrite(srv->sub.ctx, &done) != REDIS_OK)
		sub_close(srv);
	else
		srv->sub.want_write = !done;
}

/* sub_service: handle wait-set events of a subscription socket. */
static void
sub_service(RedisServer *srv, uint32 events)
{
	if (srv->sub.ctx == NULL)
		return;
	if (srv->sub.connecting)
	{
		int			err = 0;
		socklen_t	len = sizeof(err);

		if (getsockopt(srv->sub.ctx->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 ||
			err != 0)
		{
			sub_close(srv);
			return;
		}
		srv->sub.connecting = false;
	}
	if (events & WL_SOCKET_READABLE)
		sub_receive(srv);
	if (srv->sub.ctx)
		sub_flush(srv);
}

/*
 * sub_start: open the subscription connection of a server and queue the
 * SUBSCRIBE; it completes in later wait rounds.  Failures leave it closed.
 */
static void
sub_start(RedisServer *srv, int64 deadline)
{
	redisContext *c;
	const char *channel = RedisWakeChannel();

	if (srv->port > 0)
		c = redisConnectNonBlock(srv->host, srv->port);
	else
		c = redisConnectUnixNonBlock(srv->host);
	if (c == NULL || c->err || !limit_reader(c))
	{
		if (c)
			redisFree(c);
		return;
	}
	srv->sub.handshake = append_auth(c, srv);
	if (srv->sub.handshake < 0 ||
		redisAppendCommand(c, "SUBSCRIBE %s", channel) != REDIS_OK)
	{
		redisFree(c);
		return;
	}
	srv->sub.ctx = c;
	srv->sub.credentials = redlock_credentials_generation;
	srv->sub.connecting = true;
	srv->sub.ready = false;
	srv->sub.deadline = deadline;
	conn_generation++;
}

/* ------------------------------------------------------------------------
 * The wait set and one round of waiting, shared by batches, subscribing
 * and waiting for a wake-up.
 * ------------------------------------------------------------------------
 */

static bool postmaster_gone = false;

/*
 * conn_events: the socket events a connection needs from the wait set.
 */
static uint32
conn_events(bool connecting, bool want_write)
{
	if (connecting)
		return WL_SOCKET_WRITEABLE;
	return WL_SOCKET_READABLE | (want_write ? WL_SOCKET_WRITEABLE : 0);
}

/*
 * wait_set_prepare: make the wait set match the open sockets (command and
 * subscription connections) and the events each needs.  Raises ERROR only
 * if the kernel refuses a new epoll set.
 */
static void
wait_set_prepare(void)
{
	int			i;

	if (wait_set == NULL || wait_set_generation != conn_generation)
	{
		int			nsockets = 0;
		WaitEventSet *set;

		if (wait_set)
		{
			FreeWaitEventSet(wait_set);
			wait_set = NULL;
		}
		for (i = 0; i < nservers; i++)
			nsockets += (servers[i]->ctx != NULL) + (servers[i]->sub.ctx != NULL);

		set = CreateWaitEventSet(RedlockContext, 2 + nsockets);
		AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
		if (IsUnderPostmaster)
			AddWaitEventToSet(set, WL_POSTMASTER_DEATH, PGINVALID_SOCKET,
							  NULL, NULL);
		for (i = 0; i < nservers; i++)
		{
			RedisServer *srv = servers[i];

			if (srv->ctx)
			{
				srv->wes_events = conn_events(srv->connecting, srv->want_write);
				srv->wes_pos = AddWaitEventToSet(set, srv->wes_events,
												 srv->ctx->fd, NULL, srv);
			}
			if (srv->sub.ctx)
			{
				srv->sub.wes_events = conn_events(srv->sub.connecting,
												  srv->sub.want_write);
				srv->sub.wes_pos = AddWaitEventToSet(set, srv->sub.wes_events,
													 srv->sub.ctx->fd, NULL,
													 &srv->sub);
			}
		}
		wait_set = set;
		wait_set_generation = conn_generation;
		return;
	}

	for (i = 0; i < nservers; i++)
	{
		RedisServer *srv = servers[i];
		uint32		events;

		if (srv->ctx)
		{
			events = conn_events(srv->connecting, srv->want_write);
			if (events != srv->wes_events)
			{
				ModifyWaitEvent(wait_set, srv->wes_pos, events, NULL);
				srv->wes_events = events;
			}
		}
		if (srv->sub.ctx)
		{
			events = conn_events(srv->sub.connecting, srv->sub.want_write);
			if (events != srv->sub.wes_events)
			{
				ModifyWaitEvent(wait_set, srv->sub.wes_pos, events, NULL);
				srv->sub.wes_events = events;
			}
		}
	}
}

/*
 * wait_round: wait at most timeout_ms for anything, and handle what came:
 * answers on command connections, wake-ups on subscription connections,
 * the latch (CHECK_FOR_INTERRUPTS, which raises on cancel or timeouts when
 * interrupts are not held) and postmaster death (exits, or, with
 * interrupts held, sets postmaster_gone so that callers stop waiting).
 */
static void
wait_round(long timeout_ms)
{
	WaitEvent	events[MAX_WAIT_EVENTS];
	int			nevents;
	int			i;

	wait_set_prepare();
	nevents = WaitEventSetWait(wait_set, Max(timeout_ms, 0), events,
							   lengthof(events), PG_WAIT_EXTENSION);
	for (i = 0; i < nevents; i++)
	{
		WaitEvent  *ev = &events[i];
		int			j;

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
		for (j = 0; j < nservers; j++)
		{
			RedisServer *srv = servers[j];

			if (ev->user_data == srv && srv->ctx)
			{
				if (srv->connecting)
				{
					if (!server_connected(srv))
						break;
					srv->want_write = true;
				}
				if (ev->events & WL_SOCKET_READABLE)
					server_receive(srv);
				if (srv->ctx && (srv->want_write ||
								 (ev->events & WL_SOCKET_WRITEABLE)))
					server_flush(srv);
				break;
			}
			if (ev->user_data == &srv->sub)
			{
				sub_service(srv, ev->events);
				break;
			}
		}
	}
}

/* batch_waiting: whether any call of the batch still waits for an answer. */
static bool
batch_waiting(RedisCall *calls, int ncalls)
{
	int			i;

	for (i = 0; i < ncalls; i++)
		if (calls[i].state == REDIS_CALL_WAITING)
			return true;
	return false;
}

/*
 * batch_prepare_server: get a server ready for the batch the first time
 * one of its calls is seen: drop a connection that stopped answering,
 * start a connect if needed, note the replies to skip, that an existing
 * connection may be retried once (see server_broken), and whether the
 * server is behind: still owing replies to earlier requests.
 */
static void
batch_prepare_server(RedisServer *srv, int64 now, int timeout_ms)
{
	if (srv->ctx && srv->owed > MAX_OWED)
	{
		char		text[REDLOCK_ERROR_LEN];

		snprintf(text, sizeof(text),
				 "gave up on a connection with %d requests unanswered",
				 srv->owed);
		server_fail(srv, REDIS_FAIL_TIMEOUT, text, false);
	}
	/* opened under other credentials: replace it (what it owes is lost) */
	if (srv->ctx && srv->credentials != redlock_credentials_generation)
	{
		redisFree(srv->ctx);
		srv->ctx = NULL;
		srv->connecting = false;
		srv->owed = 0;
		srv->handshake = 0;
		conn_generation++;
	}
	/* take what has arrived of earlier replies; what has not is behind */
	if (srv->ctx && !srv->connecting && srv->owed > 0)
		server_receive(srv);
	if (srv->ctx == NULL && now >= srv->retry_after)
		server_connect(srv, now);

	srv->batch_epoch = batch_epoch;
	srv->batch_behind = srv->ctx != NULL && srv->owed > 0;
	srv->batch_retry = srv->ctx != NULL;
	srv->batch_skip = srv->owed - srv->handshake;
	srv->batch_head = srv->batch_tail = NULL;
	srv->batch_deadline = srv->connecting ? srv->connect_deadline :
		now + (int64) timeout_ms * 1000;
}

/*
 * RedisRun: send every call to its server at once, then collect answers.
 *
 * Each server gets timeout_ms from the start of the batch (after its
 * connect, if it needed one, which has redlock.connect_timeout of its
 * own); a frozen server therefore costs at most one timeout per batch, not
 * one per call.  After each round of answers "settled" (if given) may end
 * the batch early; calls still waiting then keep REDIS_CALL_WAITING and
 * their replies are skipped later.  Every call ends DONE, FAILED or
 * WAITING; only CHECK_FOR_INTERRUPTS (when interrupts are not held) and
 * out-of-memory can raise an ERROR here.
 */
void
RedisRun(RedisCall *calls, int ncalls, int timeout_ms,
		 RedisSettledFn settled, void *arg)
{
	int			i;

	batch_epoch++;
	batch_start = RedlockNowUs();
	batch_context = CurrentMemoryContext;

	/* connects that ran out of time in the background */
	for (i = 0; i < nservers; i++)
	{
		RedisServer *srv = servers[i];

		if (srv->connecting && batch_start >= srv->connect_deadline)
		{
			char		text[64];

			snprintf(text, sizeof(text), "could not connect within %d ms",
					 redlock_connect_timeout);
			server_fail(srv, REDIS_FAIL_CONNECT, text, true);
		}
	}

	/* queue every call on its server */
	for (i = 0; i < ncalls; i++)
	{
		RedisCall  *call = &calls[i];
		RedisServer *srv = call->server;

		call->state = REDIS_CALL_WAITING;
		call->failure = REDIS_FAIL_NONE;
		call->error = NULL;
		call->nints = 0;
		call->next_waiting = NULL;

		if (srv->batch_epoch != batch_epoch)
			batch_prepare_server(srv, batch_start, timeout_ms);
		call->behind = srv->batch_behind;

		if (srv->ctx == NULL)
		{
			char		text[REDLOCK_ERROR_LEN];

			if (batch_start < srv->retry_after)
			{
				snprintf(text, sizeof(text),
						 "not retried for %d ms after: %s",
						 (int) ((srv->retry_after - batch_start + 999) / 1000),
						 srv->last_error);
				call_fail(call, REDIS_FAIL_BACKOFF, text);
			}
			else
				call_fail(call, srv->last_failure, srv->last_error);
			continue;
		}
		if (!call_append(srv, call))
			server_fail(srv, REDIS_FAIL_IO, "out of memory", false);
	}

	for (i = 0; i < nservers; i++)
		if (servers[i]->batch_epoch == batch_epoch)
			server_flush(servers[i]);

	postmaster_gone = false;
	for (;;)
	{
		int64		now;
		int64		next_deadline = PG_INT64_MAX;

		if (!batch_waiting(calls, ncalls))
			break;
		if (settled && settled(calls, ncalls, arg))
			break;

		now = RedlockNowUs();
		for (i = 0; i < nservers; i++)
		{
			RedisServer *srv = servers[i];

			if (srv->batch_epoch != batch_epoch || srv->batch_head == NULL)
				continue;
			/* when the postmaster is gone, give up at once: the TTL does the rest */
			if (!postmaster_gone && now < srv->batch_deadline)
				next_deadline = Min(next_deadline, srv->batch_deadline);
			else if (!postmaster_gone && srv->connecting)
			{
				char		text[64];

				snprintf(text, sizeof(text),
						 "could not connect within %d ms",
						 redlock_connect_timeout);
				server_fail(srv, REDIS_FAIL_CONNECT, text, true);
			}
			else
				server_timeout(srv, timeout_ms);
		}
		if (next_deadline == PG_INT64_MAX)
			break;				/* everything failed or timed out */

		wait_round((long) ((next_deadline - now + 999) / 1000));

		/* a NOSCRIPT re-send may have queued output */
		for (i = 0; i < nservers; i++)
			if (servers[i]->batch_epoch == batch_epoch && !servers[i]->want_write)
				server_flush(servers[i]);
	}

	/* later replies to this batch's calls belong to nobody */
	batch_epoch++;
}

/*
 * RedisSubscribe: make sure this backend is subscribed to its wake channel
 * on each of "srvs", waiting at most timeout_ms for the confirmations.
 * A server that cannot be subscribed to is left to the fallback timer.
 * Raises only what CHECK_FOR_INTERRUPTS raises.
 */
void
RedisSubscribe(RedisServer **srvs, int n, int timeout_ms)
{
	int64		deadline = RedlockNowUs() + (int64) timeout_ms * 1000;
	int			i;

	for (i = 0; i < n; i++)
	{
		if (srvs[i]->sub.ctx &&
			srvs[i]->sub.credentials != redlock_credentials_generation)
			sub_close(srvs[i]);
		if (srvs[i]->sub.ctx == NULL)
			sub_start(srvs[i], deadline);
	}

	for (;;)
	{
		int64		now = RedlockNowUs();
		bool		pending = false;

		for (i = 0; i < n; i++)
		{
			RedisServer *srv = srvs[i];

			if (srv->sub.ctx == NULL || srv->sub.ready)
				continue;
			if (now >= srv->sub.deadline)
				sub_close(srv);
			else
				pending = true;
		}
		if (!pending || now >= deadline)
			return;
		wait_round((long) ((deadline - now + 999) / 1000));
	}
}

/*
 * RedisWaitWake: wait until a wake-up for rkey arrives (one counted after
 * "seen", a RedisWakeCount() taken before the last attempt, so that none
 * sent meanwhile is missed) or timeout_ms passes.  Answers to earlier
 * requests are drained meanwhile.  Returns true when woken.  Raises what
 * CHECK_FOR_INTERRUPTS raises (cancel, statement_timeout, termination).
 */
bool
RedisWaitWake(const char *rkey, uint64 seen, long timeout_ms)
{
	int64		deadline = RedlockNowUs() + (int64) timeout_ms * 1000;
	bool		woken;

	wake_key = rkey;
	PG_TRY();
	{
		for (;;)
		{
			int64		now = RedlockNowUs();

			if (wake_count != seen || now >= deadline)
				break;
			wait_round((long) ((deadline - now + 999) / 1000));
		}
	}
	PG_FINALLY();
	{
		wake_key = NULL;
	}
	PG_END_TRY();
	woken = wake_count != seen;
	return woken;
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
		if (servers[i]->ctx)
		{
			redisFree(servers[i]->ctx);
			servers[i]->ctx = NULL;
		}
		sub_close(servers[i]);
	}
	conn_generation++;
}
