/*-------------------------------------------------------------------------
 *
 * transport.c
 *	  A byte stream to one Redis server: a non-blocking connect, then reads
 *	  and writes that never block, over TCP or a unix socket.
 *
 * The connection layer (conn.c) sees only RedisTransport and its ops, so
 * that another transport (TLS) can take the place of the plain socket
 * without conn.c knowing.  Each operation reports REDIS_IO_AGAIN with the
 * socket event it waits for (t->want, read_want, write_want); the caller
 * puts the socket in the wait set for those events and calls again.
 *
 * No function here raises an ERROR or allocates with palloc: they run in
 * commit and abort callbacks too.  Failures are described in the caller's
 * buffer.  Host names are resolved with getaddrinfo(), which blocks and
 * does not honour redlock.connect_timeout (the README says so).
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "storage/latch.h"

#include "redis.h"

/*
 * RedisTransportConnected: the socket reported an event while connecting;
 * whether the (TCP or unix) connect succeeded is in SO_ERROR.  Returns
 * true when it did; false with the reason in err.
 */
bool
RedisTransportConnected(RedisTransport *t, char *err, size_t errlen)
{
	int			so_error = 0;
	socklen_t	len = sizeof(so_error);

	if (getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &so_error, &len) < 0)
		so_error = errno;
	if (so_error != 0)
	{
		snprintf(err, errlen, "could not connect: %s", strerror(so_error));
		return false;
	}
	return true;
}

/* plain_connect_step: a plain socket is usable once connected. */
static RedisIoStatus
plain_connect_step(RedisTransport *t, char *err, size_t errlen)
{
	if (!RedisTransportConnected(t, err, errlen))
		return REDIS_IO_ERROR;
	t->want = 0;
	return REDIS_IO_OK;
}

/* plain_read: one recv(); EAGAIN is REDIS_IO_AGAIN, 0 bytes is EOF. */
static RedisIoStatus
plain_read(RedisTransport *t, char *buf, size_t len, size_t *n,
		   char *err, size_t errlen)
{
	ssize_t		r;

	*n = 0;
	r = recv(t->fd, buf, len, 0);
	if (r > 0)
	{
		*n = (size_t) r;
		return REDIS_IO_OK;
	}
	if (r == 0)
		return REDIS_IO_EOF;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
	{
		t->read_want = WL_SOCKET_READABLE;
		return REDIS_IO_AGAIN;
	}
	snprintf(err, errlen, "connection error: %s", strerror(errno));
	return REDIS_IO_ERROR;
}

/* plain_write: one send(), without SIGPIPE when the peer has gone. */
static RedisIoStatus
plain_write(RedisTransport *t, const char *buf, size_t len, size_t *n,
			char *err, size_t errlen)
{
	ssize_t		r;

	*n = 0;
	r = send(t->fd, buf, len, MSG_NOSIGNAL);
	if (r >= 0)
	{
		*n = (size_t) r;
		return r > 0 || len == 0 ? REDIS_IO_OK : REDIS_IO_AGAIN;
	}
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
	{
		t->write_want = WL_SOCKET_WRITEABLE;
		return REDIS_IO_AGAIN;
	}
	snprintf(err, errlen, "connection error: %s", strerror(errno));
	return REDIS_IO_ERROR;
}

/* plain_close: a plain socket holds nothing besides its descriptor. */
static void
plain_close(RedisTransport *t)
{
}

static const RedisTransportOps plain_ops = {
	"plain",
	plain_connect_step,
	plain_read,
	plain_write,
	plain_close,
	NULL
};

/*
 * open_socket: a non-blocking, close-on-exec socket of the address's
 * family, connect() started.  Returns the descriptor, or -1 with errno set.
 * *inprogress says whether the connect is still under way.
 */
static int
open_socket(const struct sockaddr *addr, socklen_t addrlen, bool tcp,
			bool *inprogress)
{
	int			fd;
	int			one = 1;

	fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (tcp)
	{
		/* requests are small and latency is everything */
		(void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		/* notice a peer that vanished while the connection sat idle */
		(void) setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	}
	*inprogress = false;
	if (connect(fd, addr, addrlen) == 0)
		return fd;
	if (errno == EINPROGRESS)
	{
		*inprogress = true;
		return fd;
	}
	{
		int			save = errno;

		close(fd);
		errno = save;
	}
	return -1;
}

/*
 * RedisTransportOpen: start connecting to host:port (a unix socket path
 * when port is 0), without blocking but for the name lookup.
 *
 * Returns true with the transport set up and t->want saying what to wait
 * for (WL_SOCKET_WRITEABLE while the connect is under way); false, with
 * the reason in err, when no address could even be tried.  Of several
 * addresses, the first whose connect starts is used.
 */
bool
RedisTransportOpen(RedisTransport *t, const char *host, int port,
				   char *err, size_t errlen)
{
	bool		inprogress = false;
	int			fd = -1;

	memset(t, 0, sizeof(*t));
	t->fd = -1;

	if (port == 0)
	{
		struct sockaddr_un sun;

		memset(&sun, 0, sizeof(sun));
		sun.sun_family = AF_UNIX;
		strlcpy(sun.sun_path, host, sizeof(sun.sun_path));
		fd = open_socket((struct sockaddr *) &sun, sizeof(sun), false,
						 &inprogress);
		if (fd < 0)
		{
			snprintf(err, errlen, "could not connect: %s", strerror(errno));
			return false;
		}
	}
	else
	{
		struct addrinfo hints;
		struct addrinfo *res = NULL;
		struct addrinfo *ai;
		char		service[16];
		int			rc;
		int			last_errno = 0;

		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		snprintf(service, sizeof(service), "%d", port);
		rc = getaddrinfo(host, service, &hints, &res);
		if (rc != 0)
		{
			snprintf(err, errlen, "could not connect: %s", gai_strerror(rc));
			return false;
		}
		for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next)
		{
			fd = open_socket(ai->ai_addr, ai->ai_addrlen, true, &inprogress);
			if (fd < 0)
				last_errno = errno;
		}
		freeaddrinfo(res);
		if (fd < 0)
		{
			snprintf(err, errlen, "could not connect: %s",
					 strerror(last_errno ? last_errno : ECONNREFUSED));
			return false;
		}
	}

	t->ops = &plain_ops;
	t->fd = fd;
	/* a finished connect is confirmed the same way, on the first event */
	t->want = WL_SOCKET_WRITEABLE;
	return true;
}

/* RedisTransportClose: release the transport and close its socket. */
void
RedisTransportClose(RedisTransport *t)
{
	if (t->ops)
		t->ops->close(t);
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
	t->ops = NULL;
	t->state = NULL;
	t->want = t->read_want = t->write_want = 0;
	t->handshaking = false;
}
