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

#include "utils/guc.h"

#include "redlock.h"

#define DEFAULT_REDIS_PORT 6379
#define MAX_HOST_LEN 253		/* longest DNS name */

char	   *redlock_servers = NULL;
char	   *redlock_key_prefix = NULL;
int			redlock_connect_timeout = 1000;
int			redlock_command_timeout = 1000;
int			redlock_default_ttl = 30000;
int			redlock_wait_timeout = 0;
int			redlock_retry_delay = 100;
int			redlock_retry_jitter = 100;
double		redlock_drift_factor = 0.01;
int			redlock_commit_margin = 2000;
int			redlock_snapshot_check = REDLOCK_SNAPSHOT_WARNING;

static const struct config_enum_entry snapshot_check_options[] = {
	{"off", REDLOCK_SNAPSHOT_OFF, false},
	{"warning", REDLOCK_SNAPSHOT_WARNING, false},
	{"error", REDLOCK_SNAPSHOT_ERROR, false},
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
 * parse_server: parse one entry of redlock.servers into "spec".
 *
 * Accepted forms: "host", "host:port", "[ipv6]", "[ipv6]:port" and an
 * absolute unix socket path.  Returns false, with the check hook's detail
 * set, when the entry is malformed.
 */
static bool
parse_server(const char *item, RedlockServerSpec *spec)
{
	const char *portstr = NULL;
	size_t		hostlen;
	bool		bracketed = false;
	const char *p;

	memset(spec, 0, sizeof(*spec));

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
			if (strcmp(list->servers[i].addr, list->servers[n].addr) == 0)
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
	free(copy);
	free(list);
	return false;
}

/* assign_servers: GUC assign hook; keeps the parsed list. */
static void
assign_servers(const char *newval, void *extra)
{
	configured_servers = (const RedlockServerList *) extra;
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
							   "A comma-separated list of host, host:port, [ipv6]:port or unix socket paths. "
							   "A lock is held when a majority of them granted it.",
							   &redlock_servers,
							   "localhost:6379",
							   PGC_SUSET,
							   0,
							   check_servers, assign_servers, NULL);

	DefineCustomStringVariable("redlock.key_prefix",
							   "Prefix put in front of every lock key in Redis.",
							   "Gives databases or roles that share Redis servers separate key spaces.",
							   &redlock_key_prefix,
							   "",
							   PGC_SUSET,
							   0,
							   check_key_prefix, NULL, NULL);

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
