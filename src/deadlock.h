/*-------------------------------------------------------------------------
 *
 * deadlock.h
 *	  What deadlock.c (identities and the walk) and waits.c (what the
 *	  masters say about waits) share: a check's state and its reads.  See
 *	  deadlock.c for the design.
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REDLOCK_DEADLOCK_H
#define REDLOCK_DEADLOCK_H

#include "redlock.h"

#define RECORD_LIFE_MS		5000	/* a record not refreshed since is stale */
#define BATCH_MS			500		/* the longest wait for one batch */
#define REGISTRY_CAP		(1024 * 1024)	/* bytes of the records' answer */
#define KEY_CAP				(64 * 1024) /* bytes of a key's holders and queue */
#define MAX_NODES			64		/* backends one walk visits, at most */
#define MAX_KEYS			128		/* keys one walk reads, at most */
#define IDENT_LEN			48		/* room for an identity */
#define REGISTRY_SUFFIX		"\0redlock:waits"
#define REGISTRY_SUFFIX_LEN	14

/* One key a backend waits for. */
typedef struct WaitFor
{
	char		mode;			/* 'x' or 's' */
	const char *rkey;
	int			rkeylen;
} WaitFor;

/* A published record of another backend's wait. */
typedef struct Record
{
	char	   *ident;
	int64		beat;			/* last refreshed (Redis's clock, ms) */
	char	   *channel;		/* its wake channel */
	int			nwaits;
	WaitFor    *waits;
} Record;

/* A backend the walk reached. */
typedef struct WaitNode
{
	char	   *ident;
	int			record;			/* index in records, -1: none */
	int			next;			/* on the path: the node it waits for */
	char	   *why;			/* on the path: what that wait is */
	bool		visited;
} WaitNode;

/* What the masters say about a key: holders and queue, per master. */
typedef struct KeyInfo
{
	const char *rkey;
	int			rkeylen;
	bool		shared;			/* a majority says it is shared */
	int			nholders;		/* named by a majority */
	char	  **holders;
	int		   *nqueue;			/* per master: live queue members, in order */
	char	 ***queue;			/* (NULL: that master did not answer) */
} KeyInfo;

/* One check's state. */
typedef struct Check
{
	RedisServer **servers;
	int			nservers;
	const char *prefix;			/* our key prefix (the registry's name, and
								 * stripped from keys in messages) */
	int			prefixlen;
	int64		deadline;		/* of the wait (monotonic us, 0: none) */
	char	   *own_channel;	/* ours, in the queues */
	WaitFor    *own_waits;
	int			own_nwaits;
	int64		own_since;
	int			nrecords;
	Record	   *records;
	int			nnodes;
	WaitNode	nodes[MAX_NODES];
	int			nkeys;
	KeyInfo		keys[MAX_KEYS];
} Check;

extern char *WaitsRecordText(RedlockLock **waiting, int n, int64 since);
extern void WaitsRegistry(Check *c, const char *record, bool read);
extern int	WaitsRecordOf(Check *c, const char *name, bool by_channel);
extern void WaitsReadKeys(Check *c, const WaitFor *waits, int n);
extern KeyInfo *WaitsKeyInfo(Check *c, const WaitFor *w);
extern int	WaitsQueuePosition(const KeyInfo *ki, int i, const char *member);
extern bool WaitsQueued(Check *c, const KeyInfo *ki, const char *member);
extern bool WaitsClaim(Check *c, const char **others, int nothers);

#endif							/* REDLOCK_DEADLOCK_H */
