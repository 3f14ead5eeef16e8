/*-------------------------------------------------------------------------
 *
 * creds.c
 *	  Which credentials a Redis server gets, and when they changed.
 *
 * Per server, the first source that gives a password wins: the server's
 * own redis:// entry, then the first matching line of redlock.passfile,
 * then redlock.username and redlock.password; a user named in the entry is
 * the user in every case.  The database is the entry's, else
 * redlock.database.
 *
 * A connection remembers the credentials version it was opened under and
 * is replaced at its next use when the version moved.  The version moves
 * only when a value really changed: the settings' assign hooks (guc.c)
 * compare old and new values, because PostgreSQL calls them on every
 * configuration reload and on every SET, changed or not, and replacing
 * connections for nothing costs round trips and, worse, loses what a
 * connection still owes us.  A server's entry in redlock.servers has its
 * own version (RedisServer.entry_version, kept by conn.c).  The password
 * file is read when a connection opens; a file edited in place applies to
 * connections opened from then on.
 *
 * Nothing here raises an ERROR: credentials are looked up when a
 * connection opens, which may be in a commit or abort callback.
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/stat.h>

#include "redlock.h"

/* Bumped when a credential setting changes value (RedisCredentialsChanged). */
static uint64 settings_version = 1;

/*
 * RedisCredentialsChanged: a setting that decides how servers authenticate
 * changed value: connections opened before are replaced at their next use.
 */
void
RedisCredentialsChanged(void)
{
	settings_version++;
}

/*
 * RedisSettingsVersion: the version of the credential and TLS settings
 * (not of any server's own entry): what the TLS context depends on.
 */
uint64
RedisSettingsVersion(void)
{
	return settings_version;
}

/*
 * RedisCredentialsVersion: the version of the credentials srv gets now; a
 * connection opened under another one is stale.  A sentinel:// entry's
 * include its sentinels' (redlock.sentinel_username and _password), which
 * no other server's do.
 */
uint64
RedisCredentialsVersion(const RedisServer *srv)
{
	uint64		v = (settings_version << 32) ^ srv->entry_version;

	if (srv->kind == REDIS_KIND_SENTINEL)
		v ^= redlock_sentinel_version << 48;
	return v;
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
 * srv->passfile_note why the file was not used, if it was not.
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
 * RedisCredentialsFor: the user, password (each of REDLOCK_CRED_LEN) and
 * database a new connection to srv uses.
 *
 * Returns true when there is a password, that is, when AUTH is to be
 * sent; user may be empty then (AUTH with the password alone).
 */
bool
RedisCredentialsFor(RedisServer *srv, char *user, char *password, int *db)
{
	*db = srv->db >= 0 ? srv->db : redlock_database;

	if (srv->password[0])
	{
		strlcpy(user, srv->user, REDLOCK_CRED_LEN);
		strlcpy(password, srv->password, REDLOCK_CRED_LEN);
	}
	else if (!passfile_lookup(srv, user, password))
	{
		strlcpy(user, redlock_username ? redlock_username : "", REDLOCK_CRED_LEN);
		strlcpy(password, redlock_password ? redlock_password : "",
				REDLOCK_CRED_LEN);
	}
	/* an entry that names a user, and no password, names the user */
	if (srv->user[0])
		strlcpy(user, srv->user, REDLOCK_CRED_LEN);
	return password[0] != '\0';
}
