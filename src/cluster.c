/*-------------------------------------------------------------------------
 *
 * cluster.c
 *	  Redis Cluster entries: key slots, the slot map, the nodes of a
 *	  cluster, and redirections.
 *
 * A cluster:// entry of redlock.servers is one logical master (a
 * RedisServer of kind REDIS_KIND_CLUSTER) whose keys live on many nodes.
 * Each node it learns of is a server of its own (kind REDIS_KIND_PLAIN,
 * "cluster" pointing back), with the usual command connection; a call
 * for the cluster is routed, when it is sent (batch.c), to the node that
 * owns its first key's slot, as the slot map says.
 *
 * The slot map.  Unknown at first: a call goes to a seed node, and CLUSTER
 * SLOTS is asked on the same connection right behind it; the answer fills
 * the map.  A MOVED answer puts the slot on the node it names at once and
 * asks for the whole map again (a resharding or a failover moved more than
 * one slot, most likely); so does a node's connection failing.  ASK sends
 * the call once to the node it names, behind ASKING, and changes nothing
 * (the slot is being migrated); TRYAGAIN (a script's keys are split by a
 * migration in progress) sends it again shortly.  Redirections are
 * followed within the batch, at most CLUSTER_MAX_REDIRECTS times per call.
 *
 * Keys of one script in one slot.  A script may only touch keys of one
 * slot.  The lock key is the name users and other clients choose; its
 * companion keys (fencing counter, queue, deadlines, promise) are named,
 * on a cluster, with a hash tag that falls in the lock key's slot: "{T}"
 * followed by the lock key and the suffix, T the shortest lowercase
 * alphanumeric string whose slot is the lock key's (RedisSlotTag).  A tag
 * of its own, first in the name, makes that hold whatever the lock key
 * looks like, braces included.  On other servers companion keys keep their
 * names (the lock key and the suffix), so nothing changes there.
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <hiredis/hiredis.h>

#include "redlock.h"

#define CLUSTER_NSLOTS			16384
#define CLUSTER_MAX_NODES		256 /* nodes one cluster entry may learn */
#define CLUSTER_SLOT_TAG_LEN	8	/* "{" up to 5 characters "}" NUL */
#define CLUSTER_REASK_US		1000000 /* CLUSTER SLOTS at most this often */
#define NODE_PAUSE_US			1000000 /* a failed node is avoided this long */

/* Bumped by every batch: a node named in the batch running is in use. */
static uint64 batch_epoch = 1;

/* The tag of each slot (see RedisSlotTag), built on first use. */
static char (*slot_tags)[CLUSTER_SLOT_TAG_LEN] = NULL;

/* CRC-16/XMODEM, the one Redis Cluster hashes keys with, by table. */
static uint16 crc_table[256];
static bool crc_table_ready = false;

static uint16
crc16(const char *buf, size_t len)
{
	uint16		crc = 0;
	size_t		i;

	if (!crc_table_ready)
	{
		int			n;
		int			b;

		for (n = 0; n < 256; n++)
		{
			uint16		c = (uint16) (n << 8);

			for (b = 0; b < 8; b++)
				c = (c & 0x8000) ? (uint16) ((c << 1) ^ 0x1021) : (uint16) (c << 1);
			crc_table[n] = c;
		}
		crc_table_ready = true;
	}
	for (i = 0; i < len; i++)
		crc = (uint16) ((crc << 8) ^ crc_table[((crc >> 8) ^ (unsigned char) buf[i]) & 0xff]);
	return crc;
}

/*
 * RedisKeySlot: the cluster slot of a key: of the part between its first
 * "{" and the first "}" after it, when that part is not empty; else of the
 * whole key.
 */
int
RedisKeySlot(const char *key, size_t len)
{
	size_t		open;
	size_t		close;

	for (open = 0; open < len && key[open] != '{'; open++)
		;
	if (open < len)
	{
		for (close = open + 1; close < len && key[close] != '}'; close++)
			;
		if (close < len && close > open + 1)
			return crc16(key + open + 1, close - open - 1) & (CLUSTER_NSLOTS - 1);
	}
	return crc16(key, len) & (CLUSTER_NSLOTS - 1);
}

/*
 * RedisSlotTag: "{T}" whose slot is "slot", T the shortest string of
 * [0-9a-z] that hashes there (all 16384 slots are reached by four
 * characters or fewer).  The table is built once per backend, in
 * RedlockContext (about 1.7 million CRCs of at most four bytes, a few ms);
 * raises ERROR only when out of memory, so callers build it in a
 * statement (RedisSlotTagsPrepare) before callbacks need it.
 */
const char *
RedisSlotTag(int slot)
{
	/* prepared by every acquire on a cluster, before its release */
	return slot_tags ? slot_tags[slot] : "";
}

void
RedisSlotTagsPrepare(void)
{
	static const char alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz";
	int			left = CLUSTER_NSLOTS;
	int			len;

	if (slot_tags != NULL)
		return;
	slot_tags = MemoryContextAllocZero(RedlockContext,
									   sizeof(*slot_tags) * CLUSTER_NSLOTS);
	for (len = 1; len <= CLUSTER_SLOT_TAG_LEN - 3 && left > 0; len++)
	{
		int			digits[CLUSTER_SLOT_TAG_LEN];
		char		s[CLUSTER_SLOT_TAG_LEN];
		int			i;

		memset(digits, 0, sizeof(digits));
		for (;;)
		{
			int			slot;

			for (i = 0; i < len; i++)
				s[i] = alphabet[digits[i]];
			slot = crc16(s, len) & (CLUSTER_NSLOTS - 1);
			if (slot_tags[slot][0] == '\0')
			{
				snprintf(slot_tags[slot], CLUSTER_SLOT_TAG_LEN, "{%.*s}", len, s);
				left--;
			}
			/* the next string of this length */
			for (i = len - 1; i >= 0 && ++digits[i] == (int) sizeof(alphabet) - 1; i--)
				digits[i] = 0;
			if (i < 0 || left == 0)
				break;
		}
	}
	if (left > 0)				/* cannot happen: four characters reach all */
		elog(ERROR, "redlock: no hash tag found for %d cluster slots", left);
}

/* RedisClusterNewBatch: a batch starts (see unused_node). */
void
RedisClusterNewBatch(void)
{
	batch_epoch++;
}

/*
 * unused_node: the index of a node of "cluster" that can become another:
 * in no slot of the map, no seed, both connections closed, and not named
 * in the batch running (a redirection may be about to go there).  The one
 * used longest ago; -1 when none.
 */
static int
unused_node(const RedisServer *cluster)
{
	bool		mapped[CLUSTER_MAX_NODES] = {0};
	int			best = -1;
	int			i;
	int			k;

	if (cluster->slot_map)
		for (i = 0; i < CLUSTER_NSLOTS; i++)
			if (cluster->slot_map[i] >= 0)
				mapped[cluster->slot_map[i]] = true;
	for (i = 0; i < cluster->ncnodes; i++)
	{
		const RedisServer *n = cluster->cnodes[i];

		if (mapped[i] || n->named_epoch == batch_epoch ||
			n->cmd.state != REDIS_CONN_CLOSED || n->sub.state != REDIS_CONN_CLOSED ||
			n->cmd.batch.joined)
			continue;
		for (k = 0; k < cluster->nsentinels; k++)
			if (cluster->sentinels[k].port == n->port &&
				strcmp(cluster->sentinels[k].host, n->host) == 0)
				break;
		if (k < cluster->nsentinels)
			continue;
		if (best < 0 || n->named_epoch < cluster->cnodes[best]->named_epoch)
			best = i;
	}
	return best;
}

/* node_index: the index in cluster->cnodes of node host:port, or -1. */
static int
node_index(const RedisServer *cluster, const char *host, int port)
{
	int			i;

	for (i = 0; i < cluster->ncnodes; i++)
		if (cluster->cnodes[i]->port == port &&
			strcmp(cluster->cnodes[i]->host, host) == 0)
			return i;
	return -1;
}

/*
 * RedisClusterNode: the server of the node host:port of "cluster", made on
 * first use with the entry's credentials and TLS (database 0: a cluster
 * has no other).  A cluster keeps CLUSTER_MAX_NODES at most: beyond, a
 * node no longer used becomes the new one (see unused_node).  NULL when
 * none can, or out of memory: it may be called in a callback, from a
 * reply.
 */
RedisServer *
RedisClusterNode(RedisServer *cluster, const char *host, int port)
{
	RedlockServerSpec spec;
	RedisServer *node;
	int			reuse = -1;
	int			i = node_index(cluster, host, port);

	if (i >= 0)
	{
		cluster->cnodes[i]->named_epoch = batch_epoch;
		return cluster->cnodes[i];
	}
	if (strlen(host) >= sizeof(spec.host))
		return NULL;
	if (cluster->ncnodes == CLUSTER_MAX_NODES &&
		(reuse = unused_node(cluster)) < 0)
		return NULL;

	memset(&spec, 0, sizeof(spec));
	spec.kind = REDIS_KIND_PLAIN;
	strlcpy(spec.host, host, sizeof(spec.host));
	spec.port = port;
	spec.tls = cluster->tls;
	strlcpy(spec.user, cluster->user, sizeof(spec.user));
	strlcpy(spec.password, cluster->password, sizeof(spec.password));
	spec.db = 0;
	snprintf(spec.addr, sizeof(spec.addr),
			 strchr(host, ':') ? "[%s]:%d of %s" : "%s:%d of %s",
			 host, port, cluster->addr);
	if (reuse >= 0)
	{
		node = cluster->cnodes[reuse];
		RedisServerReuse(node, &spec);
		node->named_epoch = batch_epoch;
		return node;
	}
	if (cluster->cnodes == NULL)
		cluster->cnodes = MemoryContextAllocExtended(RedlockContext,
													 sizeof(RedisServer *) * CLUSTER_MAX_NODES,
													 MCXT_ALLOC_NO_OOM);
	node = cluster->cnodes ? RedisServerCreate(&spec) : NULL;
	if (node == NULL)
		return NULL;
	node->cluster = cluster;
	node->named_epoch = batch_epoch;
	cluster->cnodes[cluster->ncnodes++] = node;
	return node;
}

/*
 * RedisServerForKey: the server a call about "key" goes to: srv itself, or
 * for a cluster entry the node that owns the key's slot (a seed node while
 * the map does not know).  The slot map is asked for (see
 * RedisClusterWantsMap) when it is unknown or stale.
 */
RedisServer *
RedisServerForKey(RedisServer *srv, const char *key, size_t len)
{
	RedisServer *mapped;
	RedisServer *node;
	int			slot;
	int			i;

	if (srv->kind != REDIS_KIND_CLUSTER)
		return srv;
	if (srv->slot_map == NULL)
	{
		srv->slot_map = MemoryContextAllocExtended(RedlockContext,
												   sizeof(int16) * CLUSTER_NSLOTS,
												   MCXT_ALLOC_NO_OOM);
		for (i = 0; srv->slot_map && i < CLUSTER_NSLOTS; i++)
			srv->slot_map[i] = -1;
		srv->map_stale = true;
	}
	slot = RedisKeySlot(key, len);
	mapped = srv->slot_map && srv->slot_map[slot] >= 0 ?
		srv->cnodes[srv->slot_map[slot]] : NULL;

	/*
	 * The node of the slot, unless the map is in doubt (a node failed) and
	 * that node is not connected: it may be gone for good, its slots taken
	 * over by a replica.  Then another node, connected if one is, which
	 * redirects, and is asked for the new map.
	 */
	if (mapped != NULL &&
		(!srv->map_stale || mapped->cmd.state != REDIS_CONN_CLOSED ||
		 RedisServerMayConnect(mapped, RedlockNowUs())))
		return mapped;
	srv->map_stale = true;
	for (i = 0; i < srv->ncnodes; i++)
		if (srv->cnodes[i] != mapped && srv->cnodes[i]->cmd.state == REDIS_CONN_READY &&
			RedisServerMayConnect(srv->cnodes[i], RedlockNowUs()))
			return srv->cnodes[i];
	/* a seed: the first that is not in backoff, starting after the last */
	for (i = 0; i < srv->nsentinels; i++)
	{
		int			k = (srv->seed_next + i) % srv->nsentinels;

		node = RedisClusterNode(srv, srv->sentinels[k].host,
								srv->sentinels[k].port);
		if (node != NULL && node != mapped &&
			RedisServerMayConnect(node, RedlockNowUs()))
			return node;
	}
	/* a node learnt from the map (the seeds may all be gone) */
	for (i = 0; i < srv->ncnodes; i++)
		if (srv->cnodes[i] != mapped &&
			RedisServerMayConnect(srv->cnodes[i], RedlockNowUs()))
			return srv->cnodes[i];
	if (mapped != NULL)
		return mapped;
	node = RedisClusterNode(srv, srv->sentinels[srv->seed_next].host,
							srv->sentinels[srv->seed_next].port);
	return node ? node : srv;	/* out of memory: the call fails there */
}

/*
 * RedisClusterWantsMap: whether the cluster of "node" (a node, or not of a
 * cluster: false) should be asked for its slot map now, on node's
 * connection; notes that it is being asked.
 */
bool
RedisClusterWantsMap(RedisServer *node)
{
	RedisServer *cluster = node->cluster;
	int64		now = RedlockNowUs();

	if (cluster == NULL || !cluster->map_stale ||
		now - cluster->map_asked_at < CLUSTER_REASK_US)
		return false;
	cluster->map_asked_at = now;
	return true;
}

/*
 * RedisClusterNodeFailed: a node's connection failed: the map may be out of
 * date (a failover), and the next seed is tried first.
 */
void
RedisClusterNodeFailed(RedisServer *node)
{
	RedisServer *cluster = node->cluster;

	if (cluster == NULL)
		return;
	cluster->map_stale = true;
	cluster->map_asked_at = 0;
	cluster->seed_next = (cluster->seed_next + 1) % cluster->nsentinels;
	/*
	 * A short pause (a refused connect has no backoff of its own): calls
	 * for its slots go to another node meanwhile (RedisServerForKey).
	 */
	node->retry_after = Max(node->retry_after, RedlockNowUs() + NODE_PAUSE_US);
}

/*
 * slots_range: range "r" of a CLUSTER SLOTS answer of "node", [start, end,
 * [host, port, ...], ...] (an empty host, or "?", means the node that
 * answered): whether it is well formed and names a TCP address (never a
 * unix socket: port 0 or a path), into *start, *end, host and *port.
 */
static bool
slots_range(const RedisServer *node, const redisReply *r, long long *start,
			long long *end, char *host, size_t hostlen, int *port)
{
	const redisReply *m;

	if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
		r->element[0]->type != REDIS_REPLY_INTEGER ||
		r->element[1]->type != REDIS_REPLY_INTEGER ||
		r->element[2]->type != REDIS_REPLY_ARRAY ||
		r->element[2]->elements < 2)
		return false;
	m = r->element[2];
	if (m->element[0]->type != REDIS_REPLY_STRING ||
		m->element[1]->type != REDIS_REPLY_INTEGER ||
		m->element[0]->len >= hostlen)
		return false;
	*start = r->element[0]->integer;
	*end = r->element[1]->integer;
	if (*start < 0 || *end >= CLUSTER_NSLOTS || *start > *end)
		return false;
	if (m->element[1]->integer < 1 || m->element[1]->integer > 65535)
		return false;
	*port = (int) m->element[1]->integer;
	if (m->element[0]->len == 0 || strcmp(m->element[0]->str, "?") == 0)
		strlcpy(host, node->host, hostlen);
	else
		strlcpy(host, m->element[0]->str, hostlen);
	return host[0] != '/';
}

/*
 * RedisClusterSlotsReply: fill the slot map of node's cluster from the
 * answer to CLUSTER SLOTS it gave.  An answer that covers at least as many
 * slots as the map knows replaces it (nodes it no longer names may then be
 * reused: see unused_node); one that covers fewer (a node that lost its
 * view of the cluster: restarted empty, or reset) only adds to it, and the
 * map is asked for again later; one that covers none changes nothing.
 * The nodes it names are marked in use first, so that a node made for one
 * range never takes the place of one a later range names.  Unknown nodes
 * that find no place (CLUSTER_MAX_NODES) leave their slots unknown.
 * Frees nothing.
 */
void
RedisClusterSlotsReply(RedisServer *node, const struct redisReply *reply)
{
	RedisServer *cluster = node->cluster;
	char		host[REDLOCK_ADDR_LEN];
	long long	start;
	long long	end;
	long long	covered = 0;
	long long	known = 0;
	int			port;
	size_t		i;
	int			k;

	if (cluster == NULL || cluster->slot_map == NULL ||
		reply->type != REDIS_REPLY_ARRAY)
		return;
	for (i = 0; i < reply->elements; i++)
	{
		if (!slots_range(node, reply->element[i], &start, &end, host,
						 sizeof(host), &port))
			continue;
		covered += end - start + 1;
		if ((k = node_index(cluster, host, port)) >= 0)
			cluster->cnodes[k]->named_epoch = batch_epoch;
	}
	if (covered == 0)
	{
		/* it knows no slot (not, or no longer, of the cluster): ask another */
		RedisClusterNodeFailed(node);
		return;
	}
	for (k = 0; k < CLUSTER_NSLOTS; k++)
		known += cluster->slot_map[k] >= 0;
	if (covered >= known)
		for (k = 0; k < CLUSTER_NSLOTS; k++)
			cluster->slot_map[k] = -1;
	for (i = 0; i < reply->elements; i++)
	{
		long long	s;

		if (!slots_range(node, reply->element[i], &start, &end, host,
						 sizeof(host), &port))
			continue;
		if (RedisClusterNode(cluster, host, port) == NULL)
			continue;
		k = node_index(cluster, host, port);
		for (s = start; s <= end; s++)
			cluster->slot_map[s] = (int16) k;
	}
	cluster->map_stale = covered < known;
}

/*
 * RedisClusterRedirect: parse a MOVED or ASK answer ("MOVED 3999
 * 127.0.0.1:6381") of "node"; returns the node it names (made on first
 * use) or NULL when it does not parse.  MOVED also updates the map and
 * asks for the whole map again.
 */
RedisServer *
RedisClusterRedirect(RedisServer *node, const char *text, bool *ask)
{
	RedisServer *cluster = node->cluster;
	const char *p;
	const char *colon;
	char		host[REDLOCK_ADDR_LEN];
	long		slot;
	long		port;
	char	   *end;
	RedisServer *target;
	int			k;

	if (cluster == NULL)
		return NULL;
	*ask = strncmp(text, "ASK ", 4) == 0;
	if (!*ask && strncmp(text, "MOVED ", 6) != 0)
		return NULL;
	p = text + (*ask ? 4 : 6);
	slot = strtol(p, &end, 10);
	if (end == p || *end != ' ' || slot < 0 || slot >= CLUSTER_NSLOTS)
		return NULL;
	p = end + 1;
	colon = strrchr(p, ':');
	if (colon == NULL || (size_t) (colon - p) >= sizeof(host))
		return NULL;
	port = strtol(colon + 1, &end, 10);
	if (*end != '\0' || port < 1 || port > 65535)
		return NULL;
	if (colon == p)
		strlcpy(host, node->host, sizeof(host));	/* ":port": same host */
	else
	{
		/* "[::1]:port" or "host:port" */
		if (*p == '[' && colon[-1] == ']')
			snprintf(host, sizeof(host), "%.*s", (int) (colon - p - 2), p + 1);
		else
			snprintf(host, sizeof(host), "%.*s", (int) (colon - p), p);
	}
	if (host[0] == '/')
		return NULL;			/* a unix socket: never from a reply */
	target = RedisClusterNode(cluster, host, (int) port);
	if (target == NULL || *ask || cluster->slot_map == NULL)
		return target;
	for (k = 0; k < cluster->ncnodes && cluster->cnodes[k] != target; k++)
		;
	cluster->slot_map[slot] = (int16) k;
	cluster->map_stale = true;
	cluster->map_asked_at = 0;
	return target;
}

/*
 * RedisClusterDescribe: "N nodes, M slots known", for the servers view.
 */
void
RedisClusterDescribe(const RedisServer *cluster, char *buf, size_t len)
{
	int			known = 0;
	int			i;

	if (cluster->slot_map)
		for (i = 0; i < CLUSTER_NSLOTS; i++)
			known += cluster->slot_map[i] >= 0;
	snprintf(buf, len, "%d nodes, %d slots known", cluster->ncnodes, known);
}
