/*-------------------------------------------------------------------------
 *
 * transport_tls.c
 *	  The TLS transport: a TCP connection (transport.c) with OpenSSL on top,
 *	  for rediss:// entries.  Certificate checks follow libpq's sslmode.
 *
 * Division of work: OpenSSL does the handshake, the certificate checks and
 * the records; hiredis (conn.c) formats commands and parses replies from
 * the bytes this transport reads; the connection code above sees the same
 * RedisTransportOps as for a plain socket.  Nothing here is home-made
 * cryptography.
 *
 * Settings (guc.c), like libpq's:
 *	  redlock.sslmode		require: encrypt; check the certificate against
 *							redlock.sslrootcert only when one is set.
 *							verify-ca: check it against sslrootcert, or the
 *							system's store.  verify-full (the default): that,
 *							and that it names the host (or the IP address).
 *	  redlock.sslrootcert	CA bundle (PEM); empty: the system's store
 *	  redlock.sslcert/sslkey	client certificate and key, for servers that
 *							ask for one; the key file must be 0600 (or 0640
 *							and owned by root), as libpq asks
 *	  redlock.sslcrl		certificate revocation list (PEM)
 * They go into one SSL_CTX, built when the first TLS connection opens and
 * again after any of them (or any credential setting) changes value
 * (RedisSettingsVersion, creds.c) or a file they name is replaced (a
 * renewed certificate).  A failure to build it (a missing file, a key that
 * does not match, loose permissions, a passphrase) fails the connect with
 * OpenSSL's reason; it is tried again at the next connect.
 *
 * Non-blocking: the handshake runs in connect_step, a step each time the
 * socket is ready, inside the backend's wait set and within
 * redlock.connect_timeout.  Nothing here raises an ERROR or uses palloc:
 * OpenSSL allocates with malloc, and these functions run in commit and
 * abort callbacks too.  SNI is sent for host names.
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "storage/latch.h"

#include "redlock.h"

/* The SSL_CTX for TLS connections, and the settings version it is for. */
static SSL_CTX *tls_ctx = NULL;
static uint64 tls_ctx_version = 0;

/*
 * The files that SSL_CTX was built from, as they were then: a certificate
 * renewed in place (same path, new file) is read again at the next connect,
 * as a new libpq connection would.
 */
#define TLS_FILES 4
typedef struct TlsFileSeen
{
	bool		exists;
	dev_t		dev;
	ino_t		ino;
	off_t		size;
	struct timespec mtime;
} TlsFileSeen;
static TlsFileSeen tls_files_seen[TLS_FILES];

/* Set by the passphrase callback: the key asked for a passphrase. */
static bool tls_key_encrypted = false;

/* What a TLS transport keeps besides its socket. */
typedef struct TlsState
{
	SSL		   *ssl;
	bool		tcp_done;		/* the TCP connect finished */
} TlsState;

/*
 * openssl_reason: the text of the first error in OpenSSL's queue (and clear
 * the queue), or "unknown" when there is none.  The first is where it
 * started ("No such file or directory", "certificate verify failed"); the
 * ones after it are the callers that passed it on.  libpq reports the first
 * too.
 */
static const char *
openssl_reason(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();

	ERR_clear_error();
	if (e == 0)
		return "unknown";
	ERR_error_string_n(e, buf, len);
	/* "error:0A000086:SSL routines::certificate verify failed": the reason */
	{
		char	   *colon = strrchr(buf, ':');

		if (colon && colon[1])
			return colon + 1;
	}
	return buf;
}

/*
 * key_file_ok: whether the client key file may be used: a regular file,
 * not readable by group or others (0600 or less), or owned by root and at
 * most group-readable (0640), as libpq demands of its sslkey.
 */
static bool
key_file_ok(const char *label, const char *path, char *err, size_t errlen)
{
	struct stat st;

	if (stat(path, &st) != 0)
	{
		snprintf(err, errlen, "%s \"%s\" cannot be read: %s",
				 label, path, strerror(errno));
		return false;
	}
	if (!S_ISREG(st.st_mode))
	{
		snprintf(err, errlen, "%s \"%s\" is not a regular file", label, path);
		return false;
	}
	if ((st.st_uid == geteuid() && (st.st_mode & (S_IRWXG | S_IRWXO))) ||
		(st.st_uid == 0 && (st.st_mode & (S_IWGRP | S_IXGRP | S_IRWXO))))
	{
		snprintf(err, errlen,
				 "%s \"%s\" has group or world access; it must be u=rw (0600) or less if owned by the database user, or u=rw,g=r (0640) or less if owned by root",
				 label, path);
		return false;
	}
	return true;
}

/*
 * tls_file_paths: the files the TLS settings name (NULL or "" when unset),
 * in the order of tls_files_seen.
 */
static void
tls_file_paths(const char *paths[TLS_FILES])
{
	paths[0] = redlock_sslrootcert;
	paths[1] = redlock_sslcert;
	paths[2] = redlock_sslkey;
	paths[3] = redlock_sslcrl;
}

/* file_seen: what stat says of path now. */
static void
file_seen(const char *path, TlsFileSeen *seen)
{
	struct stat st;

	memset(seen, 0, sizeof(*seen));
	if (path == NULL || path[0] == '\0' || stat(path, &st) != 0)
		return;
	seen->exists = true;
	seen->dev = st.st_dev;
	seen->ino = st.st_ino;
	seen->size = st.st_size;
	seen->mtime = st.st_mtim;
}

/*
 * tls_files_changed: whether a file of the TLS settings is not the one the
 * current SSL_CTX was built from (replaced, rewritten, created, removed).
 * With note, remember them as they are now instead.  A few stat calls per
 * TLS connect: connects are rare.
 */
static bool
tls_files_changed(bool note)
{
	const char *paths[TLS_FILES];
	bool		changed = false;

	tls_file_paths(paths);
	for (int i = 0; i < TLS_FILES; i++)
	{
		TlsFileSeen now;
		TlsFileSeen *was = &tls_files_seen[i];

		file_seen(paths[i], &now);
		if (note)
			*was = now;
		else if (now.exists != was->exists || now.dev != was->dev ||
				 now.ino != was->ino || now.size != was->size ||
				 now.mtime.tv_sec != was->mtime.tv_sec ||
				 now.mtime.tv_nsec != was->mtime.tv_nsec)
			changed = true;
	}
	return changed;
}

/*
 * no_passphrase: OpenSSL's passphrase callback.  A backend cannot ask
 * anyone for one (and OpenSSL's default would read the terminal): refuse,
 * and remember why the key could not be read.
 */
static int
no_passphrase(char *buf, int size, int rwflag, void *userdata)
{
	tls_key_encrypted = true;
	if (size > 0)
		buf[0] = '\0';
	return 0;
}

/* verifying: whether the server's certificate is to be checked. */
static bool
verifying(void)
{
	return redlock_sslmode != REDLOCK_SSLMODE_REQUIRE ||
		(redlock_sslrootcert != NULL && redlock_sslrootcert[0] != '\0');
}

/*
 * tls_context: the SSL_CTX for the current settings, built if needed.
 * Returns NULL, with the reason in err, when it cannot be built.
 */
static SSL_CTX *
tls_context(uint64 version, char *err, size_t errlen)
{
	char		reason[256];
	SSL_CTX    *ctx;

	if (tls_ctx != NULL && tls_ctx_version == version && !tls_files_changed(false))
		return tls_ctx;
	if (tls_ctx != NULL)
	{
		SSL_CTX_free(tls_ctx);
		tls_ctx = NULL;
	}

	/*
	 * verify-ca against the system's store would accept any certificate any
	 * public CA signed, for any name: libpq refuses that too
	 * (sslrootcert=system needs verify-full).
	 */
	if (redlock_sslmode == REDLOCK_SSLMODE_VERIFY_CA &&
		(redlock_sslrootcert == NULL || redlock_sslrootcert[0] == '\0'))
	{
		snprintf(err, errlen,
				 "redlock.sslmode = verify-ca needs redlock.sslrootcert: against the system's store any publicly signed certificate would pass; name the CA file, or use verify-full");
		return NULL;
	}

	/* the files as they are now, before they are read */
	(void) tls_files_changed(true);
	ERR_clear_error();
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL)
	{
		snprintf(err, errlen, "could not set up TLS: %s",
				 openssl_reason(reason, sizeof(reason)));
		return NULL;
	}
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
	{
		snprintf(err, errlen, "could not set up TLS 1.2 or later: %s",
				 openssl_reason(reason, sizeof(reason)));
		goto fail;
	}
	SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
	/* AES-128-GCM first: as safe for this, and cheaper per record */
	(void) SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256");
	/* our output buffer may move between a partial write and its retry */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
					 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* one read per record, not one for its header and one for its body */
	SSL_CTX_set_read_ahead(ctx, 1);

	if (verifying())
	{
		int			ok;

		if (redlock_sslrootcert && redlock_sslrootcert[0])
			ok = SSL_CTX_load_verify_locations(ctx, redlock_sslrootcert, NULL);
		else
			ok = SSL_CTX_set_default_verify_paths(ctx);
		if (ok != 1)
		{
			snprintf(err, errlen, "could not load the root certificates \"%s\": %s",
					 redlock_sslrootcert && redlock_sslrootcert[0] ?
					 redlock_sslrootcert : "(system store)",
					 openssl_reason(reason, sizeof(reason)));
			goto fail;
		}
		if (redlock_sslcrl && redlock_sslcrl[0])
		{
			X509_STORE *store = SSL_CTX_get_cert_store(ctx);

			if (X509_STORE_load_file(store, redlock_sslcrl) != 1)
			{
				snprintf(err, errlen, "could not load redlock.sslcrl \"%s\": %s",
						 redlock_sslcrl, openssl_reason(reason, sizeof(reason)));
				goto fail;
			}
			X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK |
								 X509_V_FLAG_CRL_CHECK_ALL);
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	}
	else
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);

	if (redlock_sslcert && redlock_sslcert[0])
	{
		bool		own_key = redlock_sslkey && redlock_sslkey[0];
		const char *key = own_key ? redlock_sslkey : redlock_sslcert;
		const char *label = own_key ? "redlock.sslkey" : "redlock.sslcert (its key)";

		if (SSL_CTX_use_certificate_chain_file(ctx, redlock_sslcert) != 1)
		{
			snprintf(err, errlen, "could not load redlock.sslcert \"%s\": %s",
					 redlock_sslcert, openssl_reason(reason, sizeof(reason)));
			goto fail;
		}
		if (!key_file_ok(label, key, err, errlen))
			goto fail;
		tls_key_encrypted = false;
		if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
		{
			if (tls_key_encrypted)
				snprintf(err, errlen,
						 "%s \"%s\" is protected by a passphrase, which a database backend cannot ask for: store it decrypted (openssl pkey -in OLD -out NEW), readable by the database user only",
						 label, key);
			else
				snprintf(err, errlen, "could not load %s \"%s\": %s",
						 label, key, openssl_reason(reason, sizeof(reason)));
			goto fail;
		}
		if (SSL_CTX_check_private_key(ctx) != 1)
		{
			snprintf(err, errlen, "%s \"%s\" does not match redlock.sslcert \"%s\": %s",
					 label, key, redlock_sslcert, openssl_reason(reason, sizeof(reason)));
			goto fail;
		}
	}

	tls_ctx = ctx;
	tls_ctx_version = version;
	return ctx;

fail:
	SSL_CTX_free(ctx);
	ERR_clear_error();			/* not left for other OpenSSL users */
	return NULL;
}

/*
 * handshake_error: why the handshake failed, in words a DBA can act on:
 * the certificate check's verdict, or OpenSSL's reason, with a hint for
 * the usual mistake of speaking TLS to a plain port.
 */
static void
handshake_error(TlsState *st, int ssl_error, char *err, size_t errlen)
{
	char		reason[256];
	long		verify = verifying() ? SSL_get_verify_result(st->ssl) : X509_V_OK;
	unsigned long e = ERR_peek_error();

	if (verify != X509_V_OK)
	{
		ERR_clear_error();
		snprintf(err, errlen, "TLS handshake failed: the server's certificate was not accepted: %s",
				 X509_verify_cert_error_string(verify));
		return;
	}
	if (e != 0 && ERR_GET_LIB(e) == ERR_LIB_SSL &&
		(ERR_GET_REASON(e) == SSL_R_WRONG_VERSION_NUMBER ||
		 ERR_GET_REASON(e) == SSL_R_PACKET_LENGTH_TOO_LONG))
	{
		snprintf(err, errlen,
				 "TLS handshake failed: %s (the server does not speak TLS on this port: use a redis:// entry, or its TLS port)",
				 openssl_reason(reason, sizeof(reason)));
		return;
	}
	if (e == 0 && ssl_error == SSL_ERROR_SYSCALL)
	{
		snprintf(err, errlen,
				 "TLS handshake failed: the server closed the connection%s",
				 errno != 0 ? "" : " (it may ask for a client certificate: see redlock.sslcert)");
		return;
	}
	snprintf(err, errlen, "TLS handshake failed: %s",
			 openssl_reason(reason, sizeof(reason)));
}

/*
 * tls_connect_step: finish the TCP connect, then take the TLS handshake
 * one step further.
 */
static RedisIoStatus
tls_connect_step(RedisTransport *t, char *err, size_t errlen)
{
	TlsState   *st = (TlsState *) t->state;
	int			r;

	if (!st->tcp_done)
	{
		if (!RedisTransportConnected(t, err, errlen))
			return REDIS_IO_ERROR;
		st->tcp_done = true;
		t->handshaking = true;
	}

	ERR_clear_error();
	errno = 0;
	r = SSL_connect(st->ssl);
	if (r == 1)
	{
		t->want = 0;
		t->handshaking = false;
		return REDIS_IO_OK;
	}
	switch (SSL_get_error(st->ssl, r))
	{
		case SSL_ERROR_WANT_READ:
			t->want = WL_SOCKET_READABLE;
			return REDIS_IO_AGAIN;
		case SSL_ERROR_WANT_WRITE:
			t->want = WL_SOCKET_WRITEABLE;
			return REDIS_IO_AGAIN;
		default:
			handshake_error(st, SSL_get_error(st->ssl, r), err, errlen);
			return REDIS_IO_ERROR;
	}
}

/*
 * io_result: what an SSL_read or SSL_write that moved nothing means; the
 * event it waits for goes into *want (the read's or the write's: a read may
 * need the socket writable, during a renegotiation or key update, and a
 * write readable).
 */
static RedisIoStatus
io_result(RedisTransport *t, uint32 *want, int r, char *err, size_t errlen)
{
	TlsState   *st = (TlsState *) t->state;
	char		reason[256];

	switch (SSL_get_error(st->ssl, r))
	{
		case SSL_ERROR_WANT_READ:
			*want = WL_SOCKET_READABLE;
			return REDIS_IO_AGAIN;
		case SSL_ERROR_WANT_WRITE:
			*want = WL_SOCKET_WRITEABLE;
			return REDIS_IO_AGAIN;
		case SSL_ERROR_ZERO_RETURN:
			return REDIS_IO_EOF;
		case SSL_ERROR_SYSCALL:
			if (ERR_peek_error() == 0)
			{
				if (errno == 0 || errno == ECONNRESET || errno == EPIPE)
					return REDIS_IO_EOF;
				snprintf(err, errlen, "connection error: %s", strerror(errno));
				return REDIS_IO_ERROR;
			}
			/* fall through */
		default:
			snprintf(err, errlen, "TLS error: %s",
					 openssl_reason(reason, sizeof(reason)));
			return REDIS_IO_ERROR;
	}
}

/*
 * clear_errors: empty OpenSSL's error queue before an I/O call, so that
 * SSL_get_error reads that call's outcome (other code in the backend uses
 * OpenSSL too); cheaper than ERR_clear_error when it is empty already.
 */
static inline void
clear_errors(void)
{
	if (ERR_peek_error() != 0)
		ERR_clear_error();
}

/* tls_read: decrypted bytes, up to len. */
static RedisIoStatus
tls_read(RedisTransport *t, char *buf, size_t len, size_t *n,
		 char *err, size_t errlen)
{
	TlsState   *st = (TlsState *) t->state;
	int			r;

	*n = 0;
	clear_errors();
	errno = 0;
	t->read_want = 0;
	r = SSL_read(st->ssl, buf, (int) Min(len, (size_t) INT_MAX));
	if (r > 0)
	{
		*n = (size_t) r;
		return REDIS_IO_OK;
	}
	return io_result(t, &t->read_want, r, err, errlen);
}

/* tls_write: encrypt and send up to len bytes. */
static RedisIoStatus
tls_write(RedisTransport *t, const char *buf, size_t len, size_t *n,
		  char *err, size_t errlen)
{
	TlsState   *st = (TlsState *) t->state;
	int			r;

	*n = 0;
	if (len == 0)
		return REDIS_IO_OK;
	clear_errors();
	errno = 0;
	t->write_want = 0;
	r = SSL_write(st->ssl, buf, (int) Min(len, (size_t) INT_MAX));
	if (r > 0)
	{
		*n = (size_t) r;
		return REDIS_IO_OK;
	}
	return io_result(t, &t->write_want, r, err, errlen);
}

/*
 * tls_pending: whether OpenSSL holds bytes the socket will not signal
 * again: decrypted ones, or (with read-ahead) records read but not yet
 * decrypted.
 */
static size_t
tls_pending(RedisTransport *t)
{
	TlsState   *st = (TlsState *) t->state;

	return SSL_has_pending(st->ssl) ? 1 : 0;
}

/* tls_close: say goodbye (without waiting) and free the TLS state. */
static void
tls_close(RedisTransport *t)
{
	TlsState   *st = (TlsState *) t->state;

	if (st == NULL)
		return;
	if (st->ssl)
	{
		if (SSL_is_init_finished(st->ssl))
			(void) SSL_shutdown(st->ssl);
		SSL_free(st->ssl);
	}
	ERR_clear_error();
	free(st);
	t->state = NULL;
}

static const RedisTransportOps tls_ops = {
	"tls",
	tls_connect_step,
	tls_read,
	tls_write,
	tls_close,
	tls_pending
};

/*
 * RedisTransportOpenTls: start a TCP connect to host:port, with TLS on top
 * once it is up, under the TLS settings in force now.
 *
 * Returns true with the transport set up (see RedisTransportOpen); false,
 * with the reason in err, when the TCP connect could not start or the TLS
 * settings cannot be used.
 */
bool
RedisTransportOpenTls(RedisTransport *t, const char *host, int port,
					  char *err, size_t errlen)
{
	SSL_CTX    *ctx = tls_context(RedisSettingsVersion(), err, errlen);
	TlsState   *st;
	unsigned char addr[sizeof(struct in6_addr)];
	bool		is_ip;

	if (ctx == NULL)
		return false;
	if (!RedisTransportOpen(t, host, port, err, errlen))
		return false;

	st = calloc(1, sizeof(TlsState));
	ERR_clear_error();
	if (st == NULL || (st->ssl = SSL_new(ctx)) == NULL ||
		SSL_set_fd(st->ssl, t->fd) != 1)
	{
		char		reason[256];

		snprintf(err, errlen, "could not set up TLS: %s",
				 st == NULL ? "out of memory" : openssl_reason(reason, sizeof(reason)));
		if (st && st->ssl)
			SSL_free(st->ssl);
		free(st);
		RedisTransportClose(t);	/* still the plain transport */
		return false;
	}
	t->ops = &tls_ops;
	t->state = st;

	is_ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
	/* SNI: for host names only (RFC 6066 forbids addresses) */
	if (!is_ip)
		(void) SSL_set_tlsext_host_name(st->ssl, host);
	if (redlock_sslmode == REDLOCK_SSLMODE_VERIFY_FULL)
	{
		int			ok;

		/* "*.example.com" only: no "f*.example.com", as libpq */
		SSL_set_hostflags(st->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		ok = is_ip ?
			X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(st->ssl), host) :
			SSL_set1_host(st->ssl, host);

		if (ok != 1)
		{
			snprintf(err, errlen, "could not set up TLS host name checking for \"%s\"", host);
			RedisTransportClose(t);
			return false;
		}
	}
	SSL_set_connect_state(st->ssl);
	return true;
}

/*
 * RedisTransportTlsInfo: the protocol version and cipher of an established
 * TLS transport (for the servers view); false for a plain one, or while
 * the handshake is not done.
 */
bool
RedisTransportTlsInfo(const RedisTransport *t, const char **version,
					  const char **cipher)
{
	TlsState   *st;

	if (t->ops != &tls_ops)
		return false;
	st = (TlsState *) t->state;
	if (st == NULL || st->ssl == NULL || !SSL_is_init_finished(st->ssl))
		return false;
	*version = SSL_get_version(st->ssl);
	*cipher = SSL_get_cipher_name(st->ssl);
	return true;
}
