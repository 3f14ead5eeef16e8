/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  Configuration: the redlock.* settings and the parser of
 *	  redlock.servers.
 *
 * Who may set what: the server list and the key prefix decide which locks
 * a role can touch and where they live, so only superusers may set them
 * (PGC_SUSET; ALTER DATABASE / ALTER ROLE SET by a superuser work).
 * Timeouts, TTLs and retry pacing only affect the caller's own backend and
 * are PGC_USERSET.  Every network wait is bounded, so the timeouts have
 * upper limits and no "0 = wait forever" value; the lock wait itself
 * (redlock.wait_timeout) follows lock_timeout's convention instead.
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <limits.h>
#include <sys/un.h>

#include "lib/stringinfo.h"
#include "utils/guc.h"

#include "redlock.h"

#define DEFAULT_REDIS_PORT 6379
#define DEFAULT_SENTINEL_PORT 26379
#define MAX_HOST_LEN 253		/* longest DNS name */

char	   *redlock_servers = NULL;
char	   *redlock_key_prefix = NULL;
int			redlock_key_horizon = 3600000;
int			redlock_replica_ack = 0;
int			redlock_max_tracked_locks = 1024;
bool		redlock_lease_keeper = false;
int			redlock_max_lease = 0;
int			redlock_connect_timeout = 1000;
int			redlock_command_timeout = 1000;
int			redlock_default_ttl = 30000;
int			redlock_wait_timeout = 0;
int			redlock_retry_delay = 100;
int			redlock_retry_jitter = 100;
double		redlock_drift_factor = 0.01;
int			redlock_commit_margin = 2000;
char	   *redlock_username = NULL;
char	   *redlock_sentinel_username = NULL;
char	   *redlock_sentinel_password = NULL;
char	   *redlock_password = NULL;
char	   *redlock_passfile = NULL;
int			redlock_database = 0;
int			redlock_snapshot_check = REDLOCK_SNAPSHOT_WARNING;
int			redlock_lock_format = REDLOCK_FORMAT_STRING;
int			redlock_sslmode = REDLOCK_SSLMODE_VERIFY_FULL;
char	   *redlock_sslrootcert = NULL;
char	   *redlock_sslcert = NULL;
char	   *redlock_sslkey = NULL;
char	   *redlock_sslcrl = NULL;

static const struct config_enum_entry sslmode_options[] = {
	{"require", REDLOCK_SSLMODE_REQUIRE, false},
	{"verify-ca", REDLOCK_SSLMODE_VERIFY_CA, false},
	{"verify-full", REDLOCK_SSLMODE_VERIFY_FULL, false},
	{NULL, 0, false}
};

static const struct config_enum_entry snapshot_check_options[] = {
	{"off", REDLOCK_SNAPSHOT_OFF, false},
	{"warning", REDLOCK_SNAPSHOT_WARNING, false},
	{"error", REDLOCK_SNAPSHOT_ERROR, false},
	{NULL, 0, false}
};

static const struct config_enum_entry lock_format_options[] = {
	{"string", REDLOCK_FORMAT_STRING, false},
	{"redisson", REDLOCK_FORMAT_REDISSON, false},
	{NULL, 0, false}
};

/* The parsed form of redlock.servers; owned by the GUC machinery. */
static const RedlockServerList *configured_servers = NULL;

/*
 * parse_port: parse the decimal TCP port in "text".
 *
 * Returns the port, or -1 (after setting the check hook's detail) when it
 * is not a number between 1 and 65535.
 */
static int
parse_port(const char *text, const char *item)
{
	long		port = 0;
	const char *p;

	if (*text == '\0')
	{
		GUC_check_errdetail("Server \"%s\" has an empty port.", item);
		return -1;
	}
	for (p = text; *p; p++)
	{
		if (!isdigit((unsigned char) *p) || port > 65535)
		{
			GUC_check_errdetail("Server \"%s\" has an invalid port \"%s\"; ports are numbers from 1 to 65535.",
								item, text);
			return -1;
		}
		port = port * 10 + (*p - '0');
	}
	if (port < 1 || port > 65535)
	{
		GUC_check_errdetail("Server \"%s\" has an invalid port \"%s\"; ports are numbers from 1 to 65535.",
							item, text);
		return -1;
	}
	return (int) port;
}

/*
 * url_decode: copy "len" bytes of src to dst (of size dstsize), decoding
 * %XX escapes.  Returns false when an escape is malformed or dst is too
 * small.
 */
static bool
url_decode(const char *src, size_t len, char *dst, size_t dstsize)
{
	size_t		i;
	size_t		n = 0;

	for (i = 0; i < len; i++)
	{
		char		c = src[i];

		if (c == '%')
		{
			char		hex[3] = {0};

			if (i + 2 >= len)
				return false;
			if (!isxdigit((unsigned char) src[i + 1]) ||
				!isxdigit((unsigned char) src[i + 2]))
				return false;
			hex[0] = src[i + 1];
			hex[1] = src[i + 2];
			c = (char) strtol(hex, NULL, 16);
			i += 2;
		}
		if (n + 1 >= dstsize || c == '\0')
			return false;
		dst[n++] = c;
	}
	dst[n] = '\0';
	return true;
}

static bool parse_server(const char *item, RedlockServerSpec *spec);

/*
 * parse_url: parse "redis://[user][:password]@host[:port][/db]" (or the
 * same with rediss://, whose scheme is scheme_len long with its "://")
 * into spec.
 * User and password may use %XX escapes.  Returns false, with the check
 * hook's detail set (never showing the password), when it is malformed.
 */
static bool
parse_url(const char *item, size_t scheme_len, RedlockServerSpec *spec)
{
	const char *rest = item + scheme_len;
	const char *at = strrchr(rest, '@');
	const char *slash;
	char		hostport[REDLOCK_ADDR_LEN];
	int			db = -1;

	if (at)
	{
		const char *colon = memchr(rest, ':', at - rest);
		size_t		userlen = colon ? (size_t) (colon - rest) : (size_t) (at - rest);

		if (!url_decode(rest, userlen, spec->user, sizeof(spec->user)) ||
			(colon && !url_decode(colon + 1, at - colon - 1, spec->password,
								  sizeof(spec->password))))
		{
			GUC_check_errdetail("A redis:// or rediss:// entry has a malformed or too long user name or password (write special characters as %%XX).");
			return false;
		}
		rest = at + 1;
	}

	if (rest[0] == '/')
	{
		GUC_check_errdetail("redis:// entries name a TCP host; write a unix socket as its path, and give its credentials in redlock.passfile or redlock.username and redlock.password.");
		return false;
	}

	slash = strchr(rest, '/');
	if (slash)
	{
		const char *p;

		if (slash[1] == '\0')
			db = -1;
		else
		{
			long		v = 0;

			for (p = slash + 1; *p; p++)
			{
				if (!isdigit((unsigned char) *p) || v > 1000000)
				{
					GUC_check_errdetail("A redis:// or rediss:// entry for \"%.*s\" has an invalid database number \"%s\".",
										(int) (slash - rest), rest, slash + 1);
					return false;
				}
				v = v * 10 + (*p - '0');
			}
			db = (int) v;
		}
	}
	snprintf(hostport, sizeof(hostport), "%.*s",
			 (int) (slash ? slash - rest : (ptrdiff_t) strlen(rest)), rest);
	{
		char		user[REDLOCK_CRED_LEN];
		char		password[REDLOCK_CRED_LEN];

		memcpy(user, spec->user, sizeof(user));
		memcpy(password, spec->password, sizeof(password));
		if (!parse_server(hostport, spec))
			return false;
		memcpy(spec->user, user, sizeof(user));
		memcpy(spec->password, password, sizeof(password));
	}
	spec->db = db;
	if (db >= 0)
		snprintf(spec->addr + strlen(spec->addr),
				 sizeof(spec->addr) - strlen(spec->addr), "/%d", db);
	return true;
}

/*
 * parse_nodes: the credentials and hosts of a sentinel:// or cluster://
 * entry (what: "sentinel" or "cluster"), from rest up to end: an optional
 * "user[:password]@", then host[:port] separated by semicolons (ports
 * default to default_port), into spec's user, password and nodes
 * (spec->sentinels).  Returns false, with the check hook's detail set
 * (never showing the password), when they are malformed.
 */
static bool
parse_nodes(const char *rest, const char *end, RedlockServerSpec *spec,
			const char *what, int default_port)
{
	const char *noun = strcmp(what, "sentinel") == 0 ? "sentinel" : "node";
	const char *at = NULL;
	const char *p;

	for (p = rest; p < end; p++)
		if (*p == '@')
			at = p;
	if (at)
	{
		const char *colon = memchr(rest, ':', at - rest);
		size_t		userlen = colon ? (size_t) (colon - rest) : (size_t) (at - rest);

		if (!url_decode(rest, userlen, spec->user, sizeof(spec->user)) ||
			(colon && !url_decode(colon + 1, at - colon - 1, spec->password,
								  sizeof(spec->password))))
		{
			GUC_check_errdetail("A %s:// entry has a malformed or too long user name or password (write special characters as %%XX).",
								what);
			return false;
		}
		rest = at + 1;
	}

	/* the hosts, separated by semicolons */
	while (rest < end)
	{
		const char *stop = memchr(rest, ';', end - rest);
		char		hostport[REDLOCK_ADDR_LEN];
		RedlockServerSpec one;

		if (stop == NULL)
			stop = end;
		if (spec->nsentinels == REDLOCK_MAX_SENTINELS)
		{
			GUC_check_errdetail("A %s:// entry names at most %d %ss.",
								what, REDLOCK_MAX_SENTINELS, noun);
			return false;
		}
		if (stop - rest >= (ptrdiff_t) sizeof(hostport) || stop == rest)
		{
			GUC_check_errdetail("A %s:// entry has an empty or too long %s address.",
								what, noun);
			return false;
		}
		snprintf(hostport, sizeof(hostport), "%.*s", (int) (stop - rest), rest);
		if (hostport[0] == '/')
		{
			GUC_check_errdetail("The %ss of a %s:// entry are reached over TCP: \"%s\" is not host:port.",
								noun, what, hostport);
			return false;
		}
		/* the default port is the kind's (a sentinel's is 26379) */
		if (strchr(hostport, ':') == NULL ||
			(hostport[0] == '[' && hostport[strlen(hostport) - 1] == ']'))
			snprintf(hostport + strlen(hostport),
					 sizeof(hostport) - strlen(hostport), ":%d", default_port);
		if (!parse_server(hostport, &one))
			return false;
		strlcpy(spec->sentinels[spec->nsentinels].host, one.host,
				sizeof(spec->sentinels[0].host));
		spec->sentinels[spec->nsentinels].port = one.port;
		spec->nsentinels++;
		rest = stop < end ? stop + 1 : end;
	}
	if (spec->nsentinels == 0)
	{
		GUC_check_errdetail("A %s:// entry names no %s.", what, noun);
		return false;
	}
	return true;
}

/*
 * write_identity: an entry's canonical form, the scheme (scheme_len bytes
 * of item) and its nodes, then "tail", into spec->addr.  Written where it
 * always fits (REDLOCK_MAX_SENTINELS nodes of REDLOCK_ADDR_LEN and a
 * tail), then checked against the room an identity has.
 */
static bool
write_identity(const char *item, size_t scheme_len, RedlockServerSpec *spec,
			   const char *tail)
{
	char		identity[REDLOCK_MAX_SENTINELS * (REDLOCK_ADDR_LEN + 8) +
						 REDLOCK_MASTER_NAME_LEN + 64];
	int			len;
	int			i;

	len = snprintf(identity, sizeof(identity), "%.*s", (int) scheme_len, item);
	for (i = 0; i < spec->nsentinels; i++)
		len += snprintf(identity + len, sizeof(identity) - len,
						strchr(spec->sentinels[i].host, ':') ? "%s[%s]:%d" : "%s%s:%d",
						i > 0 ? ";" : "", spec->sentinels[i].host,
						spec->sentinels[i].port);
	len += snprintf(identity + len, sizeof(identity) - len, "%s", tail);
	if (len >= (int) sizeof(spec->addr))
	{
		GUC_check_errdetail("A %.*s entry is longer than %d bytes once written out.",
							(int) scheme_len, item, (int) sizeof(spec->addr) - 1);
		return false;
	}
	memcpy(spec->addr, identity, len + 1);
	return true;
}

/*
 * parse_cluster: parse "cluster://[user[:password]@]host[:port][;...]"
 * (or clusters:// for TLS), the seed nodes of a Redis Cluster.
 */
static bool
parse_cluster(const char *item, size_t scheme_len, RedlockServerSpec *spec)
{
	const char *rest = item + scheme_len;
	const char *end = rest + strlen(rest);

	if (end > rest && end[-1] == '/')
		end--;					/* a trailing slash */
	if (memchr(rest, '/', end - rest) != NULL)
	{
		GUC_check_errdetail("A cluster:// entry names its seed nodes only: a cluster has no database but 0, and no name.");
		return false;
	}
	if (!parse_nodes(rest, end, spec, "cluster", DEFAULT_REDIS_PORT))
		return false;
	spec->kind = REDIS_KIND_CLUSTER;
	spec->db = 0;				/* a cluster has database 0 only */
	return write_identity(item, scheme_len, spec, "");
}

/*
 * parse_sentinel: parse
 * "sentinel://[user[:password]@]host[:port][;host[:port]...]/name[/db]"
 * (or sentinels:// for TLS, whose scheme is scheme_len long) into spec:
 * the sentinels to ask, the master's name, and the data nodes'
 * credentials and database.  Returns false, with the check hook's detail
 * set (never showing the password), when it is malformed.
 */
static bool
parse_sentinel(const char *item, size_t scheme_len, RedlockServerSpec *spec)
{
	const char *rest = item + scheme_len;
	const char *slash = strchr(rest, '/');
	const char *p;
	const char *name;
	const char *dbslash;
	size_t		namelen;
	char		tail[REDLOCK_MASTER_NAME_LEN + 16];

	if (slash == NULL || slash[1] == '\0' || slash[1] == '/')
	{
		GUC_check_errdetail("A sentinel:// entry ends with /master-name (the name the sentinels monitor the master under).");
		return false;
	}
	if (!parse_nodes(rest, slash, spec, "sentinel", DEFAULT_SENTINEL_PORT))
		return false;

	/* the master's name, then an optional database */
	name = slash + 1;
	dbslash = strchr(name, '/');
	namelen = dbslash ? (size_t) (dbslash - name) : strlen(name);
	if (namelen >= REDLOCK_MASTER_NAME_LEN)
	{
		GUC_check_errdetail("A sentinel:// entry's master name is longer than %d bytes.",
							REDLOCK_MASTER_NAME_LEN - 1);
		return false;
	}
	for (p = name; p < name + namelen; p++)
	{
		if (!isalnum((unsigned char) *p) && *p != '-' && *p != '.' && *p != '_')
		{
			GUC_check_errdetail("A sentinel:// entry's master name may hold letters, digits, '-', '.' and '_' only.");
			return false;
		}
	}
	memcpy(spec->master_name, name, namelen);
	spec->master_name[namelen] = '\0';
	spec->db = -1;
	if (dbslash && dbslash[1] != '\0')
	{
		long		v = 0;

		for (p = dbslash + 1; *p; p++)
		{
			if (!isdigit((unsigned char) *p) || v > 1000000)
			{
				GUC_check_errdetail("A sentinel:// entry for \"%s\" has an invalid database number \"%s\".",
									spec->master_name, dbslash + 1);
				return false;
			}
			v = v * 10 + (*p - '0');
		}
		spec->db = (int) v;
	}

	/* the identity: the scheme, the sentinels, the name, the database */
	spec->kind = REDIS_KIND_SENTINEL;
	if (spec->db >= 0)
		snprintf(tail, sizeof(tail), "/%s/%d", spec->master_name, spec->db);
	else
		snprintf(tail, sizeof(tail), "/%s", spec->master_name);
	return write_identity(item, scheme_len, spec, tail);
}

/* The URL forms of an entry. */
static const struct
{
	const char *scheme;
	bool		(*parse) (const char *item, size_t scheme_len, RedlockServerSpec *spec);
	bool		tls;
}			schemes[] =
{
	{"rediss://", parse_url, true},
	{"redis://", parse_url, false},
	{"sentinels://", parse_sentinel, true},
	{"sentinel://", parse_sentinel, false},
	{"clusters://", parse_cluster, true},
	{"cluster://", parse_cluster, false}
};

/*
 * parse_server: parse one entry of redlock.servers into "spec".
 *
 * Accepted forms: "host", "host:port", "[ipv6]", "[ipv6]:port", an
 * absolute unix socket path, and redis://[user:password@]host[:port][/db].
 * Returns false, with the check hook's detail set, when the entry is
 * malformed.  The canonical address (spec->addr) never holds credentials.
 */
static bool
parse_server(const char *item, RedlockServerSpec *spec)
{
	const char *portstr = NULL;
	size_t		hostlen;
	bool		bracketed = false;
	const char *p;
	int			i;

	memset(spec, 0, sizeof(*spec));
	spec->db = -1;

	/* the URL forms: the parser of each scheme; the "s" ones are over TLS */
	for (i = 0; i < (int) lengthof(schemes); i++)
	{
		size_t		len = strlen(schemes[i].scheme);

		if (strncmp(item, schemes[i].scheme, len) != 0)
			continue;
		if (!schemes[i].parse(item, len, spec))
			return false;
		spec->tls = schemes[i].tls;
		return true;
	}

	if (item[0] == '/')
	{
		if (strlen(item) >= sizeof(((struct sockaddr_un *) NULL)->sun_path))
		{
			GUC_check_errdetail("Unix socket path \"%s\" is longer than %d bytes.",
								item,
								(int) sizeof(((struct sockaddr_un *) NULL)->sun_path) - 1);
			return false;
		}
		strlcpy(spec->host, item, sizeof(spec->host));
		strlcpy(spec->addr, item, sizeof(spec->addr));
		spec->port = 0;
		return true;
	}

	if (item[0] == '[')
	{
		const char *close = strchr(item, ']');

		if (close == NULL)
		{
			GUC_check_errdetail("Server \"%s\" has no closing bracket.", item);
			return false;
		}
		hostlen = close - item - 1;
		memcpy(spec->host, item + 1, Min(hostlen, sizeof(spec->host) - 1));
		if (close[1] == ':')
			portstr = close + 2;
		else if (close[1] != '\0')
		{
			GUC_check_errdetail("Server \"%s\" has text after the closing bracket; write [address]:port.",
								item);
			return false;
		}
		bracketed = true;
		for (p = spec->host; *p; p++)
		{
			if (!isxdigit((unsigned char) *p) && *p != ':' && *p != '.')
			{
				GUC_check_errdetail("Server \"%s\" is not a valid IPv6 address.", item);
				return false;
			}
		}
	}
	else
	{
		const char *colon = strchr(item, ':');

		if (colon != NULL && strchr(colon + 1, ':') != NULL)
		{
			GUC_check_errdetail("Server \"%s\" has more than one colon; write IPv6 addresses in brackets, as in [::1]:6379.",
								item);
			return false;
		}
		hostlen = colon ? (size_t) (colon - item) : strlen(item);
		if (hostlen > MAX_HOST_LEN)
		{
			GUC_check_errdetail("Host name in \"%s\" is longer than %d bytes.",
								item, MAX_HOST_LEN);
			return false;
		}
		memcpy(spec->host, item, hostlen);
		spec->host[hostlen] = '\0';
		if (colon)
			portstr = colon + 1;
		for (p = spec->host; *p; p++)
		{
			if (!isalnum((unsigned char) *p) && *p != '-' && *p != '.' && *p != '_')
			{
				GUC_check_errdetail("Server \"%s\" contains the character \"%c\", which is not allowed in a host name.",
									item, *p);
				return false;
			}
		}
	}

	if (spec->host[0] == '\0')
	{
		GUC_check_errdetail("Server \"%s\" has an empty host.", item);
		return false;
	}

	if (portstr)
	{
		spec->port = parse_port(portstr, item);
		if (spec->port < 0)
			return false;
	}
	else
		spec->port = DEFAULT_REDIS_PORT;

	snprintf(spec->addr, sizeof(spec->addr),
			 bracketed ? "[%s]:%d" : "%s:%d", spec->host, spec->port);
	return true;
}

/*
 * same_group: whether two sentinel entries name the same master (its name,
 * through a sentinel they share), or two cluster entries the same cluster
 * (a seed they share): it would count twice toward a quorum.
 */
static bool
same_group(const RedlockServerSpec *a, const RedlockServerSpec *b)
{
	int			i;
	int			j;

	if (a->kind == REDIS_KIND_PLAIN || a->kind != b->kind ||
		strcmp(a->master_name, b->master_name) != 0)
		return false;
	for (i = 0; i < a->nsentinels; i++)
		for (j = 0; j < b->nsentinels; j++)
			if (strcmp(a->sentinels[i].host, b->sentinels[j].host) == 0 &&
				a->sentinels[i].port == b->sentinels[j].port)
				return true;
	return false;
}

/*
 * check_servers: GUC check hook of redlock.servers.
 *
 * Parses the comma-separated list into a malloc'd RedlockServerList handed
 * to the assign hook as "extra".  Returns false with a detail message when
 * an entry is malformed, repeated, or the list is empty or too long.
 */
static bool
check_servers(char **newval, void **extra, GucSource source)
{
	RedlockServerList *list;
	char	   *copy;
	char	   *item;
	char	   *next;
	int			n = 0;

	list = malloc(offsetof(RedlockServerList, servers) +
				  sizeof(RedlockServerSpec) * REDLOCK_MAX_SERVERS);
	copy = strdup(*newval ? *newval : "");
	if (list == NULL || copy == NULL)
	{
		free(list);
		free(copy);
		GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
		GUC_check_errdetail("Out of memory while parsing the server list.");
		return false;
	}

	for (item = copy; item != NULL; item = next)
	{
		char	   *end;
		int			i;

		next = strchr(item, ',');
		if (next)
			*next++ = '\0';
		while (isspace((unsigned char) *item))
			item++;
		end = item + strlen(item);
		while (end > item && isspace((unsigned char) end[-1]))
			*--end = '\0';

		if (*item == '\0')
		{
			if (n == 0 && next == NULL)
				GUC_check_errdetail("The list must name at least one Redis server.");
			else
				GUC_check_errdetail("The list has an empty entry.");
			goto fail;
		}
		if (n == REDLOCK_MAX_SERVERS)
		{
			GUC_check_errdetail("At most %d servers can be listed.",
								REDLOCK_MAX_SERVERS);
			goto fail;
		}
		if (!parse_server(item, &list->servers[n]))
			goto fail;
		for (i = 0; i < n; i++)
		{
			if (strcmp(list->servers[i].addr, list->servers[n].addr) == 0 ||
				same_group(&list->servers[i], &list->servers[n]))
			{
				GUC_check_errdetail("Server \"%s\" is listed more than once.",
									list->servers[n].addr);
				goto fail;
			}
		}
		n++;
	}

	list->nservers = n;
	free(copy);
	*extra = list;
	return true;

fail:
	/* PostgreSQL would quote the whole value: not with a password in it */
	if (*newval && strchr(*newval, '@'))
	{
		GUC_check_errmsg("invalid value for parameter \"redlock.servers\" (not shown: it may hold credentials)");
		/* a detail that quotes an entry may quote a piece of a password */
		if (GUC_check_errdetail_string && strchr(GUC_check_errdetail_string, '"'))
			GUC_check_errdetail("The faulty entry is not shown either. Entries are host, host:port, "
								"[ipv6]:port, a unix socket path, or redis://user:password@host:port/db "
								"(rediss:// for TLS) with special characters in the user name and password "
								"written as %%XX.");
	}
	free(copy);
	free(list);
	return false;
}

/*
 * assign_servers: GUC assign hook; keeps the parsed list.  An entry's own
 * credentials are compared when a lock next uses its server
 * (RedisServerForSpec), so that changing one entry replaces only that
 * server's connections.
 */
static void
assign_servers(const char *newval, void *extra)
{
	configured_servers = (const RedlockServerList *) extra;
}

/*
 * Assign hooks of the settings that decide how servers authenticate.
 * PostgreSQL calls them on every reload and every SET, changed or not,
 * and before it stores the new value: connections are replaced (at their
 * next use) only when the value really differs from the one in force.
 */
static bool
same_string(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

static void
assign_username(const char *newval, void *extra)
{
	if (!same_string(newval, redlock_username))
		RedisCredentialsChanged();
}

static void
assign_password(const char *newval, void *extra)
{
	if (!same_string(newval, redlock_password))
		RedisCredentialsChanged();
}

/*
 * The sentinels' credentials are used when a connection is opened, so a
 * change replaces nothing; it is counted for the lease keeper's copy of
 * the settings (shared.c).
 */
uint64		redlock_sentinel_version = 1;

static void
assign_sentinel_username(const char *newval, void *extra)
{
	if (!same_string(newval, redlock_sentinel_username))
		redlock_sentinel_version++;
}

static void
assign_sentinel_password(const char *newval, void *extra)
{
	if (!same_string(newval, redlock_sentinel_password))
		redlock_sentinel_version++;
}

static void
assign_passfile(const char *newval, void *extra)
{
	if (!same_string(newval, redlock_passfile))
		RedisCredentialsChanged();
}

static void
assign_database(int newval, void *extra)
{
	if (newval != redlock_database)
		RedisCredentialsChanged();
}

/* the TLS settings: the same, so that TLS connections are made afresh */
static void
assign_sslmode(int newval, void *extra)
{
	if (newval != redlock_sslmode)
		RedisCredentialsChanged();
}

static void
assign_sslrootcert(const char *newval, void *extra)
{
	if (!same_string(newval, redlock_sslrootcert))
		RedisCredentialsChanged();
}

static void
assign_sslcert(const char *newval, void *extra)
{
	if (!same_string(newval, redlock_sslcert))
		RedisCredentialsChanged();
}

static void
assign_sslkey(const char *newval, void *extra)
{
	if (!same_string(newval, redlock_sslkey))
		RedisCredentialsChanged();
}

static void
assign_sslcrl(const char *newval, void *extra)
{
	if (!same_string(newval, redlock_sslcrl))
		RedisCredentialsChanged();
}

/*
 * next_url: the next redis:// or rediss:// in p, or NULL; *scheme_len gets
 * the length of its scheme and "://".
 */
static const char *
next_url(const char *p, size_t *scheme_len)
{
	const char *url;

	for (url = strstr(p, "redis"); url != NULL; url = strstr(url + 1, "redis"))
	{
		if (strncmp(url + 5, "://", 3) == 0)
		{
			*scheme_len = 8;
			return url;
		}
		if (strncmp(url + 5, "s://", 4) == 0)
		{
			*scheme_len = 9;
			return url;
		}
	}
	return NULL;
}

/*
 * show_servers: what SHOW, pg_settings and current_setting() show of
 * redlock.servers: the list with every password replaced by ********.
 */
static const char *
show_servers(void)
{
	static char *shown = NULL;
	StringInfoData buf;
	const char *p = redlock_servers ? redlock_servers : "";

	initStringInfo(&buf);
	while (*p)
	{
		size_t		scheme_len = 0;
		const char *url = next_url(p, &scheme_len);
		const char *end;
		const char *at;
		const char *colon;

		if (url == NULL)
		{
			appendStringInfoString(&buf, p);
			break;
		}
		end = strchr(url, ',');
		if (end == NULL)
			end = url + strlen(url);
		appendBinaryStringInfo(&buf, p, url - p);
		at = NULL;
		for (colon = url; colon < end; colon++)
			if (*colon == '@')
				at = colon;
		colon = at ? memchr(url + scheme_len, ':', at - (url + scheme_len)) : NULL;
		if (colon)
		{
			appendBinaryStringInfo(&buf, url, colon + 1 - url);
			appendStringInfoString(&buf, "********");
			appendBinaryStringInfo(&buf, at, end - at);
		}
		else
			appendBinaryStringInfo(&buf, url, end - url);
		p = end;
	}
	if (shown)
		free(shown);
	shown = strdup(buf.data);
	pfree(buf.data);
	return shown ? shown : "";
}

/* show_password: redlock.password is never shown, only whether it is set. */
static const char *
show_password(void)
{
	return redlock_password && redlock_password[0] ? "********" : "";
}

/* show_sentinel_password: the same for redlock.sentinel_password. */
static const char *
show_sentinel_password(void)
{
	return redlock_sentinel_password && redlock_sentinel_password[0] ? "********" : "";
}

/*
 * check_key_prefix: GUC check hook of redlock.key_prefix.
 *
 * Returns false when the prefix is longer than REDLOCK_MAX_PREFIX_LEN.
 */
static bool
check_key_prefix(char **newval, void **extra, GucSource source)
{
	if (*newval && strlen(*newval) > REDLOCK_MAX_PREFIX_LEN)
	{
		GUC_check_errdetail("The prefix is %d bytes long; at most %d are allowed.",
							(int) strlen(*newval), REDLOCK_MAX_PREFIX_LEN);
		return false;
	}
	return true;
}

/*
 * RedlockCredentialsInSettings: whether a secret sits in a setting
 * (redlock.password, or a password in a redis:// entry of
 * redlock.servers) rather than in redlock.passfile.
 */
bool
RedlockCredentialsInSettings(void)
{
	int			i;

	if (redlock_password && redlock_password[0])
		return true;
	for (i = 0; configured_servers && i < configured_servers->nservers; i++)
		if (configured_servers->servers[i].password[0])
			return true;
	return false;
}

/*
 * RedlockConfiguredServers: the current value of redlock.servers, parsed.
 *
 * Never NULL once the GUCs are defined: the boot value is checked too.
 */
const RedlockServerList *
RedlockConfiguredServers(void)
{
	Assert(configured_servers != NULL);
	return configured_servers;
}

/*
 * RedlockDefineGucs: define every redlock.* setting and reserve the prefix,
 * so that a misspelt redlock.* name is reported instead of ignored.
 */
void
RedlockDefineGucs(void)
{
	DefineCustomStringVariable("redlock.servers",
							   "Redis masters that hold the locks.",
							   "A comma-separated list of host, host:port, [ipv6]:port, unix socket paths, "
							   "redis://user:password@host:port/db, rediss://... for TLS, or "
							   "sentinel://host:port;host:port/master-name for a Sentinel-managed primary. A lock "
							   "is held when a majority of them granted it.",
							   &redlock_servers,
							   "localhost:6379",
							   PGC_SUSET,
							   GUC_SUPERUSER_ONLY,	/* pg_settings.reset_val is not masked */
							   check_servers, assign_servers, show_servers);

	DefineCustomStringVariable("redlock.username",
							   "Redis ACL user for servers whose entry names none.",
							   "Empty: authenticate with the password alone (or not at all).",
							   &redlock_username,
							   "",
							   PGC_SUSET,
							   GUC_SUPERUSER_ONLY,
							   NULL, assign_username, NULL);

	DefineCustomStringVariable("redlock.sentinel_username",
							   "ACL user redlock authenticates as to the sentinels of sentinel:// entries.",
							   "Empty: the password alone (or none). The data nodes get their own credentials.",
							   &redlock_sentinel_username,
							   "",
							   PGC_SUSET,
							   GUC_SUPERUSER_ONLY,
							   NULL, assign_sentinel_username, NULL);

	DefineCustomStringVariable("redlock.sentinel_password",
							   "Password of the sentinels of sentinel:// entries.",
							   "Never shown; settable and visible as set only by superusers.",
							   &redlock_sentinel_password,
							   "",
							   PGC_SUSET,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL,
							   NULL, assign_sentinel_password, show_sentinel_password);

	DefineCustomStringVariable("redlock.password",
							   "Redis password for servers whose entry gives none.",
							   "Never shown; settable and visible as set only by superusers.",
							   &redlock_password,
							   "",
							   PGC_SUSET,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL,
							   NULL, assign_password, show_password);

	DefineCustomStringVariable("redlock.passfile",
							   "File of Redis credentials, in the form host:port:user:password.",
							   "Used for servers whose redis:// entry gives none, before redlock.username and "
							   "redlock.password. Like libpq's password file: * matches anything, and the file "
							   "must not be readable by group or others.",
							   &redlock_passfile,
							   "",
							   PGC_SUSET,
							   0,
							   NULL, assign_passfile, NULL);

	DefineCustomIntVariable("redlock.database",
							"Redis database number for servers whose entry names none.",
							NULL,
							&redlock_database,
							0, 0, 1000000,
							PGC_SUSET,
							0,
							NULL, assign_database, NULL);

	DefineCustomStringVariable("redlock.key_prefix",
							   "Prefix put in front of every lock key in Redis.",
							   "Gives databases or roles that share Redis servers separate key spaces.",
							   &redlock_key_prefix,
							   "",
							   PGC_SUSET,
							   0,
							   check_key_prefix, NULL, NULL);

	DefineCustomIntVariable("redlock.key_horizon",
							"How long a key's fencing counter stays in Redis after it was last set.",
							"A counter created again starts from a clock, so tokens still increase, as "
							"long as the horizon exceeds 4 s plus the clock differences between the "
							"masters and how far their clocks may step back.",
							&redlock_key_horizon,
							3600000, 10000, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("redlock.replica_ack",
							"Replicas of a master that must have a lock before that master counts as granting it.",
							"With 1 or more, each acquire, extend and commit-time re-arm is followed by WAIT on "
							"the same connection, so a lock survives a failover of that master. Bounded by half "
							"of redlock.command_timeout.",
							&redlock_replica_ack,
							0, 0, 16,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	/* sizes shared memory: exists only when preloaded, as PostgreSQL requires */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomIntVariable("redlock.max_tracked_locks",
								"Locks and waits the cluster's shared table can hold at once.",
								"The lease keeper renews, and redlock_locks_cluster lists, only the "
								"locks in this table.",
								&redlock_max_tracked_locks,
								1024, 16, 1000000,
								PGC_POSTMASTER,
								0,
								NULL, NULL, NULL);

	DefineCustomBoolVariable("redlock.lease_keeper",
							 "Whether a background worker renews the locks of live backends.",
							 "Needs redlock in shared_preload_libraries. Locks taken while it is off are not kept.",
							 &redlock_lease_keeper,
							 false,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("redlock.max_lease",
							"Longest time the lease keeper keeps renewing one hold (0: no limit).",
							"Counted from the acquisition; a backend that is alive but stuck is renewed "
							"no longer than this.",
							&redlock_max_lease,
							0, 0, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomEnumVariable("redlock.lock_format",
							 "How a lock is stored in Redis.",
							 "string: a string with an owner value, as node-redlock, redsync and redis-py "
							 "write it; redisson: a hash, as Redisson's RLock writes it. Locks of one "
							 "format count as held by the other.",
							 &redlock_lock_format,
							 REDLOCK_FORMAT_STRING,
							 lock_format_options,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("redlock.connect_timeout",
							"Time allowed for connecting to one Redis server.",
							NULL,
							&redlock_connect_timeout,
							1000, 1, 60000,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("redlock.command_timeout",
							"Time allowed for one Redis server to answer a request.",
							"Also bounds the release at commit and abort, and at session end.",
							&redlock_command_timeout,
							1000, 1, 60000,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("redlock.default_ttl",
							"Lifetime of a lock in Redis when the caller gives no ttl_ms.",
							NULL,
							&redlock_default_ttl,
							30000, 1, REDLOCK_MAX_TTL_MS,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("redlock.wait_timeout",
							"Longest wait for a lock when the caller gives no wait_ms.",
							"Zero means no limit of its own: the wait then lasts until the lock is acquired, "
							"or lock_timeout, statement_timeout or a cancel ends it.",
							&redlock_wait_timeout,
							0, 0, INT_MAX,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("redlock.retry_delay",
							"Pause between attempts while waiting for a lock held elsewhere.",
							"Shortened to the holder's remaining TTL when that is sooner.",
							&redlock_retry_delay,
							100, 1, 60000,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("redlock.retry_jitter",
							"Largest random time added to each pause between attempts.",
							NULL,
							&redlock_retry_jitter,
							100, 0, 60000,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomRealVariable("redlock.drift_factor",
							 "Share of the TTL set aside for clock drift between servers.",
							 "A lock's validity is its TTL minus the time spent acquiring it minus "
							 "drift_factor * TTL + 2 ms.",
							 &redlock_drift_factor,
							 0.01, 0.0, 0.5,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("redlock.commit_margin",
							"Validity a transaction-scoped lock must have left at commit.",
							"At commit, a lock with less validity left is first extended on a majority "
							"of its masters (to its TTL, at least this margin); if it is lost, the commit fails.",
							&redlock_commit_margin,
							2000, 0, REDLOCK_MAX_TTL_MS,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomEnumVariable("redlock.sslmode",
							 "How the certificate of a rediss:// master is checked, as libpq's sslmode.",
							 "require: encrypt, and check the certificate against redlock.sslrootcert only when "
							 "one is set; verify-ca: check that a trusted CA signed it; verify-full: that, and "
							 "that it names the host.",
							 &redlock_sslmode,
							 REDLOCK_SSLMODE_VERIFY_FULL,
							 sslmode_options,
							 PGC_SUSET,
							 0,
							 NULL, assign_sslmode, NULL);

	DefineCustomStringVariable("redlock.sslrootcert",
							   "File of the CA certificates that rediss:// masters' certificates are checked against.",
							   "Empty: the operating system's store.",
							   &redlock_sslrootcert,
							   "",
							   PGC_SUSET,
							   0,
							   NULL, assign_sslrootcert, NULL);

	DefineCustomStringVariable("redlock.sslcert",
							   "File of the client certificate shown to rediss:// masters that ask for one.",
							   NULL,
							   &redlock_sslcert,
							   "",
							   PGC_SUSET,
							   0,
							   NULL, assign_sslcert, NULL);

	DefineCustomStringVariable("redlock.sslkey",
							   "File of the client certificate's private key.",
							   "Like libpq's, it must not be readable by group or others (0640 if owned by root).",
							   &redlock_sslkey,
							   "",
							   PGC_SUSET,
							   0,
							   NULL, assign_sslkey, NULL);

	DefineCustomStringVariable("redlock.sslcrl",
							   "File of certificate revocation lists for rediss:// masters' certificates.",
							   NULL,
							   &redlock_sslcrl,
							   "",
							   PGC_SUSET,
							   0,
							   NULL, assign_sslcrl, NULL);

	DefineCustomEnumVariable("redlock.snapshot_check",
							 "What to do when a lock is taken after a REPEATABLE READ or SERIALIZABLE snapshot.",
							 "Rows read under such a snapshot may predate the commit of the lock's previous holder.",
							 &redlock_snapshot_check,
							 REDLOCK_SNAPSHOT_WARNING,
							 snapshot_check_options,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	MarkGUCPrefixReserved("redlock");
}
