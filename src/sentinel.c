/*-------------------------------------------------------------------------
 *
 * sentinel.c
 *	  Sentinel entries: finding a group's primary through its sentinels,
 *	  checking it with ROLE, and the watch that hears of a switch.
 *
 * A sentinel:// entry is one logical master.  Every new connection to it
 * (command or subscription) first asks a sentinel, then connects to the
 * node it names, and checks with ROLE that the node is a primary: so a
 * connection that broke (Sentinel kills the clients of a demoted primary)
 * or was closed after a READONLY answer finds the new primary when it is
 * next opened.  Sentinels are asked in turn, starting with the one that
 * answered last; one that refuses, does not know the name, fails, or does
 * not answer within redlock.connect_timeout (each sentinel gets that much,
 * connect and answer) is skipped for the next.  Each connection keeps its
 * own place in the list (sentinel_at): the command and the subscription
 * connection may be asking at the same time.  Calls made meanwhile are
 * held, as during a handshake (conn->handshake stays 1 while resolving).
 * In COMMIT and ABORT no socket is opened, so a resolution that would
 * need one there fails its calls instead (RedisPrepareServers finishes
 * resolutions before the commit).
 *
 * The watch.  Each sentinel entry also keeps a subscription to one
 * sentinel's +switch-master and +promoted-slave notices (srv->watch): a
 * notice closes the entry's connections, so the next use asks again, and
 * the node it names outranks sentinels that lag behind for PINNED_US.
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <hiredis/hiredis.h>

#include "redlock.h"

#define WATCH_PAUSE_US		1000000 /* a watch that failed: retried after */
#define WATCH_PAUSE_MAX_US	30000000
#define PINNED_US			30000000	/* a watch's notice outranks sentinels */

static void sentinel_note(RedisConn *conn, const char *why);
static bool queue_role(RedisConn *conn);

/*
 * RedisWatchPause: a watch that failed is retried after a pause that grows,
 * 1 s up to 30 s, while it keeps failing (sentinels that are all gone
 * cost a batch nothing but one non-blocking attempt now and then).
 */
void
RedisWatchPause(RedisServer *srv)
{
	srv->watch_pause_us = srv->watch_pause_us == 0 ? WATCH_PAUSE_US :
		Min(srv->watch_pause_us * 2, WATCH_PAUSE_MAX_US);
	srv->watch_retry_after = RedlockNowUs() + srv->watch_pause_us;
}

/*
 * queue_master_query: on a connection to a sentinel, AUTH with the
 * sentinels' credentials (redlock.sentinel_username and _password) when a
 * password is set, then SENTINEL GET-MASTER-ADDR-BY-NAME for the entry's
 * master: held behind AUTH (until the handshake is done) when
 * "hold_behind_auth", else written at once (a resolving connection's
 * replies all go to RedisSentinelReply).  *auth says whether AUTH went.
 * Returns false when out of memory.
 */
static bool
queue_master_query(RedisConn *conn, bool hold_behind_auth, bool *auth)
{
	const char *argv[3];
	size_t		argvlen[3];
	int			argc = 0;

	*auth = redlock_sentinel_password && redlock_sentinel_password[0];
	if (*auth)
	{
		argv[argc] = "AUTH";
		argvlen[argc++] = 4;
		if (redlock_sentinel_username && redlock_sentinel_username[0])
		{
			argv[argc] = redlock_sentinel_username;
			argvlen[argc++] = strlen(redlock_sentinel_username);
		}
		argv[argc] = redlock_sentinel_password;
		argvlen[argc++] = strlen(redlock_sentinel_password);
		if (!RedisConnAppend(conn, argc, argv, argvlen, false))
			return false;
	}
	argv[0] = "SENTINEL";
	argv[1] = "GET-MASTER-ADDR-BY-NAME";
	argv[2] = conn->server->master_name;
	for (argc = 0; argc < 3; argc++)
		argvlen[argc] = strlen(argv[argc]);
	return RedisConnAppend(conn, 3, argv, argvlen, hold_behind_auth && *auth);
}

/*
 * RedisSentinelAsk: connect to the next sentinel not tried yet in this open
 * and queue AUTH (redlock.sentinel_username and _password, when set) and
 * SENTINEL GET-MASTER-ADDR-BY-NAME.  Returns false once every sentinel has
 * failed, after failing the connection (with backoff).
 */
bool
RedisSentinelAsk(RedisConn *conn, int64 now)
{
	RedisServer *srv = conn->server;
	char		text[REDLOCK_ERROR_LEN];

	while (conn->sentinels_tried < srv->nsentinels)
	{
		const RedisNode *node = &srv->sentinels[conn->sentinel_at];
		bool		auth;

		conn->sentinels_tried++;
		if (!RedisConnTransportOpen(conn, node->host, node->port, text, sizeof(text)))
		{
			sentinel_note(conn, text);
			conn->sentinel_at = (conn->sentinel_at + 1) % srv->nsentinels;
			continue;
		}
		RedisConnSetConnectDeadline(conn);
		conn->resolving = true;
		conn->handshake = 1;	/* hold calls until the master is known */
		/* resolving: the sentinel's replies go to RedisSentinelReply, unheld */
		if (!queue_master_query(conn, false, &auth))
		{
			RedisConnFail(conn, REDIS_FAIL_IO, "out of memory", false);
			return false;
		}
		conn->resolve_left = auth ? 2 : 1;
		return true;
	}
	snprintf(text, sizeof(text),
			 "no sentinel named the primary of \"%s\" (%s)",
			 srv->master_name, conn->sentinel_errors);
	conn->sentinel_errors[0] = '\0';
	RedisConnFailOpening(conn, REDIS_FAIL_CONNECT, text, true);
	return false;
}

/* sentinel_note: add why the sentinel being asked failed to the message. */
static void
sentinel_note(RedisConn *conn, const char *why)
{
	const RedisNode *node = &conn->server->sentinels[conn->sentinel_at];
	size_t		len = strlen(conn->sentinel_errors);

	snprintf(conn->sentinel_errors + len, sizeof(conn->sentinel_errors) - len,
			 "%s%s:%d: %s", len > 0 ? "; " : "", node->host, node->port, why);
}

/*
 * RedisSentinelFailed: the sentinel being asked failed, does not know the
 * master, or did not answer in time: ask the next one (unless no socket
 * may be opened now).
 */
void
RedisSentinelFailed(RedisConn *conn, const char *why)
{
	RedisServer *srv = conn->server;

	sentinel_note(conn, why);
	RedisConnTransportDrop(conn);
	conn->resolving = false;
	conn->sentinel_at = (conn->sentinel_at + 1) % srv->nsentinels;
	if (RedisConnNewSocketAllowed(conn))
		(void) RedisSentinelAsk(conn, RedlockNowUs());
}

/*
 * RedisConnResolveTimedOut: whether the connection is asking a sentinel
 * whose time is up (its connect deadline passed); if so, that sentinel is
 * given up for the next one, or the connection fails once all were tried.
 */
bool
RedisConnResolveTimedOut(RedisConn *conn, int64 now)
{
	char		text[64];

	if (!conn->resolving || now < conn->connect_deadline)
		return false;
	snprintf(text, sizeof(text), "no answer within %d ms", redlock_connect_timeout);
	RedisSentinelFailed(conn, text);
	return true;
}

/*
 * RedisSentinelReply: an answer from the sentinel being asked.  The address of
 * the master moves the connection there, with the usual handshake and
 * ROLE behind it.  Frees the reply.
 */
void
RedisSentinelReply(RedisConn *conn, redisReply *reply)
{
	RedisServer *srv = conn->server;
	char		text[REDLOCK_ERROR_LEN];
	char		host[REDLOCK_ADDR_LEN];
	long		port;
	char	   *end;

	conn->resolve_left--;
	if (reply->type == REDIS_REPLY_ERROR)
	{
		snprintf(text, sizeof(text), "%s", reply->str);
		freeReplyObject(reply);
		RedisSentinelFailed(conn, text);
		return;
	}
	if (conn->resolve_left > 0)
	{
		freeReplyObject(reply);	/* AUTH's OK */
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
		reply->element[0]->type != REDIS_REPLY_STRING ||
		reply->element[1]->type != REDIS_REPLY_STRING ||
		reply->element[0]->len >= sizeof(host))
	{
		bool		unknown = reply->type == REDIS_REPLY_NIL ||
			(reply->type == REDIS_REPLY_ARRAY && reply->elements == 0);

		freeReplyObject(reply);
		RedisSentinelFailed(conn, unknown ? "it does not monitor a master of that name" :
						"unexpected answer to SENTINEL GET-MASTER-ADDR-BY-NAME");
		return;
	}
	memcpy(host, reply->element[0]->str, reply->element[0]->len);
	host[reply->element[0]->len] = '\0';
	port = strtol(reply->element[1]->str, &end, 10);
	if (*end != '\0')
		port = 0;
	freeReplyObject(reply);
	if (port < 1 || port > 65535 || host[0] == '\0' || host[0] == '/')
	{
		RedisSentinelFailed(conn, "it named an invalid address");
		return;
	}
	/* a sentinel that has not caught up with the watch's notice */
	if (RedlockNowUs() < srv->pinned_until &&
		(strcmp(host, srv->pinned_host) != 0 || port != srv->pinned_port))
	{
		strlcpy(host, srv->pinned_host, sizeof(host));
		port = srv->pinned_port;
	}

	/* a failover counts once ROLE has confirmed the new node */
	conn->node_changed = srv->host[0] != '\0' &&
		(strcmp(srv->host, host) != 0 || srv->port != port);
	strlcpy(srv->host, host, sizeof(srv->host));
	srv->port = (int) port;

	/* to the master: its handshake, then ROLE */
	RedisConnTransportDrop(conn);
	conn->resolving = false;
	if (!RedisConnNewSocketAllowed(conn))
		return;
	if (!RedisConnTransportOpen(conn, srv->host, srv->port, text, sizeof(text)))
	{
		RedisConnFailOpening(conn, REDIS_FAIL_CONNECT, text, false);
		return;
	}
	RedisConnSetConnectDeadline(conn);
	if (!RedisConnQueueHandshake(conn) || !queue_role(conn))
		RedisConnFail(conn, REDIS_FAIL_IO, "out of memory", false);
}

/* queue_role: ROLE, the last command of a sentinel entry's handshake. */
static bool
queue_role(RedisConn *conn)
{
	const char *argv[1] = {"ROLE"};
	size_t		argvlen[1] = {4};

	conn->handshake++;
	conn->role_check = true;
	return RedisConnAppend(conn, 1, argv, argvlen, false);
}

/*
 * RedisRoleReply: the answer to ROLE.  Returns false, after failing the
 * connection, when the node is not a primary (with backoff, and the next
 * connect starts with the next sentinel: this one may not have caught up)
 * or refused ROLE for another reason than its ACL.  A user whose ACL does
 * not allow ROLE passes: a replica still answers its writes with READONLY.
 * A primary confirmed after the sentinels named another node is a
 * failover, counted.
 */
bool
RedisRoleReply(RedisConn *conn, redisReply *reply)
{
	RedisServer *srv = conn->server;
	char		text[REDLOCK_ERROR_LEN];

	conn->role_check = false;
	if (reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOPERM", 6) != 0)
	{
		snprintf(text, sizeof(text), "ROLE failed: %s", reply->str);
		RedisConnFail(conn, RedisClassifyError(reply->str), text, false);
		return false;
	}
	if (reply->type != REDIS_REPLY_ERROR &&
		!(reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
		  reply->element[0]->type == REDIS_REPLY_STRING &&
		  strcmp(reply->element[0]->str, "master") == 0))
	{
		snprintf(text, sizeof(text),
				 "%s:%d, named primary of \"%s\" by a sentinel, is not a primary (a failover in progress?)",
				 srv->host, srv->port, srv->master_name);
		srv->sentinel_next = (conn->sentinel_at + 1) % srv->nsentinels;
		srv->pinned_until = 0;	/* the pinned node is no primary (any more) */
		RedisConnFail(conn, REDIS_FAIL_CONNECT, text, true);
		return false;
	}
	srv->sentinel_next = conn->sentinel_at;
	if (conn->node_changed)
	{
		conn->node_changed = false;
		srv->failovers++;
		RedlockCount(REDLOCK_FAILOVERS, 1);
	}
	return true;
}

/*
 * The watch.  Sentinel publishes +switch-master on every sentinel when a
 * failover has chosen the new primary; the old one may go on accepting
 * writes from the clients it still has until Sentinel reconfigures it
 * (seconds later, if it is reachable at all), and a lock taken or
 * released there is not where the other clients look.  So each sentinel
 * entry keeps one more connection, to one of its sentinels, that asks
 * once more for the primary and then subscribes to +promoted-slave (sent
 * as soon as the sentinels name the new primary) and +switch-master (at
 * the end of the failover): from then on no switch goes unseen.  A batch reads what the watch has
 * received before it sends anything (RedisSentinelWatch; batch.c first
 * waits, within redlock.connect_timeout per sentinel, for a watch that is
 * not subscribed yet), and an answer or notice that names another
 * primary than the one in use closes the command and subscription
 * connections, which then ask the sentinels again.  A watch that fails is
 * opened again, to the next sentinel, at the next batch.
 */

/*
 * watch_open: connect the watch to a sentinel and queue AUTH (sentinel
 * credentials) and SUBSCRIBE +switch-master.
 */
static void
watch_open(RedisServer *srv)
{
	RedisConn  *conn = &srv->watch;
	const RedisNode *node = &srv->sentinels[srv->watch_at];
	char		text[REDLOCK_ERROR_LEN];
	const char *argv[3];
	size_t		argvlen[3];
	int			argc;
	bool		auth;
	bool		ok;

	conn->cred_version = RedisCredentialsVersion(srv);
	conn->connect_deadline = RedlockNowUs() + (int64) redlock_connect_timeout * 1000;
	conn->last_io = RedlockNowUs();
	conn->watch_confirmed = false;
	if (!RedisConnTransportOpen(conn, node->host, node->port, text, sizeof(text)))
	{
		srv->watch_at = (srv->watch_at + 1) % srv->nsentinels;
		RedisWatchPause(srv);
		return;
	}
	/* AUTH, when it goes, is the watch's handshake: the rest waits for it */
	ok = queue_master_query(conn, true, &auth);
	if (auth)
		conn->handshake++;
	argv[0] = "SUBSCRIBE";
	argv[1] = "+switch-master";
	argv[2] = "+promoted-slave";
	for (argc = 0; argc < 3; argc++)
		argvlen[argc] = strlen(argv[argc]);
	if (!ok || !RedisConnAppend(conn, 3, argv, argvlen, conn->handshake > 0))
		RedisConnClose(conn);
	conn->watch_confirmed = false;
}

/*
 * watch_switch: the sentinels name host:port as the primary; if the entry
 * uses another node, its connections close (they ask again when next
 * used).
 */
static void
watch_switch(RedisServer *srv, const char *host, int port, bool notice)
{
	char		text[REDLOCK_ERROR_LEN];

	/* never a unix socket, nor nonsense, from a sentinel */
	if (host[0] == '\0' || host[0] == '/' || port < 1 || port > 65535)
		return;
	if (srv->host[0] == '\0' || (strcmp(host, srv->host) == 0 && port == srv->port))
		return;
	snprintf(text, sizeof(text), "the sentinels moved the primary of \"%s\" to %s:%d",
			 srv->master_name, host, port);
	if (srv->cmd.state != REDIS_CONN_CLOSED)
		RedisConnFail(&srv->cmd, REDIS_FAIL_IO, text, false);
	RedisConnClose(&srv->sub);

	/*
	 * The other sentinels may name the old primary for a while yet (only
	 * the leader announces +promoted-slave): the node the watch named wins
	 * over them for PINNED_US (see RedisSentinelReply).
	 */
	if (notice)
	{
		strlcpy(srv->pinned_host, host, sizeof(srv->pinned_host));
		srv->pinned_port = port;
		srv->pinned_until = RedlockNowUs() + PINNED_US;
	}
}

/*
 * RedisWatchReply: a message on the watch.  "+switch-master" with "name
 * old-ip old-port new-ip new-port" for our master, naming another node
 * than the one in use, closes the command and subscription connections.
 * Frees the reply.
 */
void
RedisWatchReply(RedisConn *conn, redisReply *reply)
{
	RedisServer *srv = conn->server;
	char		name[REDLOCK_MASTER_NAME_LEN];
	char		host[REDLOCK_ADDR_LEN];
	int			port;

	if (reply->type == REDIS_REPLY_ERROR)
	{
		/* refused: the next sentinel at the next batch */
		freeReplyObject(reply);
		conn->watch_confirmed = false;
		RedisConnClose(conn);
		return;
	}
	/* the primary now, asked before subscribing */
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
		reply->element[0]->type == REDIS_REPLY_STRING &&
		reply->element[1]->type == REDIS_REPLY_STRING &&
		reply->element[0]->len < sizeof(host))
	{
		char	   *end;
		long		p = strtol(reply->element[1]->str, &end, 10);

		strlcpy(host, reply->element[0]->str, sizeof(host));
		watch_switch(srv, host, *end == '\0' ? (int) p : 0, false);
	}
	else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
			 reply->element[0]->type == REDIS_REPLY_STRING &&
			 strcmp(reply->element[0]->str, "subscribe") == 0)
		conn->watch_confirmed = true;
	else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
			 reply->element[0]->type == REDIS_REPLY_STRING &&
			 strcmp(reply->element[0]->str, "message") == 0 &&
			 reply->element[1]->type == REDIS_REPLY_STRING &&
			 reply->element[2]->type == REDIS_REPLY_STRING)
	{
		const char *channel = reply->element[1]->str;
		const char *text = reply->element[2]->str;

		/* "name old-ip old-port new-ip new-port" */
		if (strcmp(channel, "+switch-master") == 0 &&
			sscanf(text, "%127s %*s %*d %271s %d", name, host, &port) == 3 &&
			strcmp(name, srv->master_name) == 0)
			watch_switch(srv, host, port, true);
		/* "slave ip:port ip port @ name master-ip master-port" */
		if (strcmp(channel, "+promoted-slave") == 0 &&
			sscanf(text, "%*s %*s %271s %d @ %127s", host, &port, name) == 3 &&
			strcmp(name, srv->master_name) == 0)
			watch_switch(srv, host, port, true);
	}
	freeReplyObject(reply);
}

/*
 * RedisSentinelWatch: before a batch uses a sentinel entry: read what its
 * watch has received (a switch-master notice acts now), and open the watch
 * if it is closed and "may_connect" (not in COMMIT or ABORT).  Returns
 * whether the watch is subscribed (true for other entries).
 */
bool
RedisSentinelWatch(RedisServer *srv, bool may_connect)
{
	RedisConn  *conn = &srv->watch;

	if (srv->kind != REDIS_KIND_SENTINEL)
		return true;
	if (conn->state == REDIS_CONN_READY || conn->state == REDIS_CONN_HANDSHAKE)
		RedisConnReceive(conn);
	if (conn->state != REDIS_CONN_CLOSED && !conn->watch_confirmed &&
		RedlockNowUs() >= conn->connect_deadline)
		RedisConnClose(conn);	/* a silent sentinel: the next one */
	if (conn->state == REDIS_CONN_CLOSED && may_connect &&
		RedlockNowUs() >= srv->watch_retry_after)
		watch_open(srv);
	return conn->state == REDIS_CONN_READY && conn->watch_confirmed;
}

/*
 * RedisReplyDemoted: whether an error says the node is a replica now
 * (READONLY, also as Redis before 7.0 wraps it in a script's error, or WAIT
 * refused on a replica): a sentinel entry then asks its sentinels again.
 */
bool
RedisReplyDemoted(const char *text)
{
	return strstr(text, "READONLY") != NULL ||
		strstr(text, "cannot be used with replica") != NULL;
}
