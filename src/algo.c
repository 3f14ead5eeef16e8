/*-------------------------------------------------------------------------
 *
 * algo.c
 *	  The Redlock algorithm: the scripts run on each master, the quorum
 *	  rule, lock validity and fencing tokens.
 *
 * Wire format (shared with node-redlock, redsync and redis-py): a lock is a
 * plain string key named exactly as the resource, created with SET NX PX
 * and holding a random owner value; release and extend compare the stored
 * value with ours inside a script before they act.  A lock held by any of
 * those clients therefore excludes us, and the other way round.
 *
 * Quorum and validity: with N masters a lock is held when at least
 * N/2+1 granted it and time is left:
 *		validity = TTL - (time spent acquiring) - (drift_factor * TTL + 2 ms)
 * measured on the monotonic clock from before the first request was sent.
 * When either fails, the partial lock is released on every master that may
 * hold it, including those that did not answer: the release is queued on
 * their connection behind the acquire, so a master that was only frozen
 * ends up clean when it resumes.
 *
 * Fencing tokens: each master keeps a counter next to the lock key (the key
 * followed by REDLOCK_FENCE_SUFFIX), incremented by the same script that
 * sets the lock, so an uncontended acquire is still one round trip.  The
 * token is the largest counter among the masters that granted.  Claim:
 * tokens of successive holders of a key strictly increase.  Argument: when
 * an acquire returns token T, a quorum of masters has a counter >= T
 * (either they returned T themselves, or the write-back below raised them
 * to T before we returned).  The next holder's quorum overlaps that one in
 * at least one master, whose INCR then yields more than T, so its token
 * (a maximum that includes that value) exceeds T.  With one master this is
 * simply INCR.  Limits: a master that loses its data (restart without
 * persistence) can only lower one member of a quorum, which the overlap
 * argument tolerates as long as a majority keeps its counters.  A master
 * that missed acquisitions (it was down or cut off) lags behind until an
 * acquisition needs it in its quorum and writes the token back; until
 * then, it and a master that restarts empty are a majority behind the
 * last token, and the next holder taking the key on those two gets a
 * smaller one (the fault campaign shows this).  Tokens count only
 * acquisitions made through this extension.
 *
 * The counter's footprint is bounded: it lives redlock.key_horizon (1 h by
 * default) from when it was last set (created, or raised by a write-back;
 * INCR keeps its TTL), so a key nobody locks any more leaves nothing
 * behind.  Tokens still increase across its expiry: a counter starts at a
 * clock in microseconds (the acquiring backend's, clamped to the master's
 * +/- 2 s: see LUA_DRAW_TOKEN) and rises by one per grant, and no key is
 * granted anywhere near once a microsecond (a grant is a script run, with
 * a release between two of them), so a counter falls behind the clocks
 * as it is used and never leads the masters' clocks by more than 2 s plus
 * their differences.  A counter created again after it expired is seeded
 * at least a horizon later, so above every token drawn from the old one,
 * as long as the masters' clocks agree, and never step back, to within
 * the horizon minus 4 s (the horizon is at least 10 s).  A counter of
 * version 1.1 (small, no TTL) is moved into that range the first time it
 * is used; a 1.1 backend still running against the same masters draws
 * small tokens from a counter it creates, so every PostgreSQL sharing the
 * masters must run this version first.
 *
 * Waiting, fairly.  A backend that has to wait for a key queues itself on
 * each master: a sorted set next to the key (REDLOCK_WAITERS_SUFFIX) holds
 * its wake channel ordered by a ticket, the Unix time in ms when it
 * started waiting; another (REDLOCK_WAITEXP_SUFFIX_LUA) holds each entry's
 * deadline, refreshed by every attempt, so that a waiter that died drops
 * out.  The acquire script grants a free key only to the first live
 * waiter (or anyone when nobody waits), so the backend that just released
 * a hot key cannot barge back in front of those who queued before it:
 * waiters are served in arrival order, like PostgreSQL's own lock queue.
 * The release script publishes the key on the first waiter's channel:
 * wake-one, no thundering herd.  Tickets come from the waiter, not from
 * each master, so every master orders the same waiters the same way; a
 * waiting acquire that got a partial grant gives it back *and stays
 * queued* there.  Both together keep the first waiter the same on every
 * master, which then gets a majority: per-master orderings could give
 * different masters different first waiters and nobody a majority, for
 * ever.  Clients that do not know the queue (node-redlock, SET NX) are not
 * held back by it.
 *
 * Liveness of the queue, whatever a waiter's own settings say (they are
 * USERSET, and a waiter may be frozen, dead, or unable ever to succeed):
 *	  - an entry lives QUEUE_ENTRY_MS (3 s) without a refresh, whatever
 *		the client (the scripts set it), and a live waiter
 *		refreshes at least every REDLOCK_QUEUE_REFRESH_MS (1 s: its fallback
 *		timer is capped there, see locks.c);
 *	  - the sets' own TTL is only ever lengthened, so a waiter asking for a
 *		short life cannot expire the others' entries;
 *	  - a head that keeps a free key from the others for more than 3 s
 *		(it cannot succeed: its TTL is shorter than its round
 *		trip, or its attempts keep failing) is moved behind every waiter;
 *		the note of since when a free key waits for that head lives in a
 *		companion key (REDLOCK_PROMISED_SUFFIX_LUA) with a short TTL;
 *	  - a ticket is clamped to Redis's clock +/- 2 s, so a
 *		PostgreSQL host whose clock is far behind cannot jump the queue by
 *		more than that.
 * So a waiter that is frozen, gone or stuck keeps a free key from the
 * others for at most 5 s, which the README states.  A lone stuck head
 * that was just moved lets the caller through once.
 *
 * Copyright (c) 2026, the redlock developers.  PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "redlock.h"

/*
 * Queue liveness bounds (see the file header).  The Lua below writes the
 * numbers out (3000, 2000, and 6000 for the note's TTL): keep
 * them in step.  REDLOCK_QUEUE_REFRESH_MS is in redlock.h, for locks.c.
 */
#define QUEUE_ENTRY_MS		3000	/* the life of a waiter's entry */

/*
 * Lua shared by the acquire and release scripts: Redis's clock in ms, and
 * queueing ARGV's channel with its ticket (clamped) for QUEUE_ENTRY_MS,
 * lengthening the sets' TTL to twice that life if need be.
 * Expects KEYS[q], KEYS[q+1] = waiters, their deadlines (local q), the
 * channel in local ch and the ticket in local tk.
 */
#define LUA_NOW \
	"local function now_ms()\n" \
	"  local t = redis.call('time')\n" \
	"  return t[1] * 1000 + math.floor(t[2] / 1000)\n" \
	"end\n"
#define LUA_ENQUEUE \
	"local function enqueue(now)\n" \
	"  local life = 3000\n" \
	"  local ticket = math.min(math.max(tonumber(tk) or now, now - 2000), now + 2000)\n" \
	"  redis.call('zadd', KEYS[q], 'NX', ticket, ch)\n" \
	"  redis.call('zadd', KEYS[q + 1], now + life, ch)\n" \
	"  for i = q, q + 1 do\n" \
	"    if redis.call('pttl', KEYS[i]) < life * 2 then\n" \
	"      redis.call('pexpire', KEYS[i], life * 2)\n" \
	"    end\n" \
	"  end\n" \
	"end\n" \
	"local function drop_dead(now)\n" \
	"  local dead = redis.call('zrangebyscore', KEYS[q + 1], '-inf', now, 'LIMIT', 0, 1000)\n" \
	"  if #dead > 0 then\n" \
	"    redis.call('zrem', KEYS[q], unpack(dead))\n" \
	"    redis.call('zrem', KEYS[q + 1], unpack(dead))\n" \
	"  end\n" \
	"end\n"

/*
 * Leaving the queue (a release, or a waiter giving up): leave() takes ch
 * out of it and out of the deadlines, and the "promised since" note
 * (KEYS[q + 2]) if it names ch.
 */
#define LUA_LEAVE \
	"local function leave()\n" \
	"  redis.call('zrem', KEYS[q], ch)\n" \
	"  redis.call('zrem', KEYS[q + 1], ch)\n" \
	"  local note = redis.call('get', KEYS[q + 2])\n" \
	"  if note and string.sub(note, 1, #ch + 1) == ch .. '|' then\n" \
	"    redis.call('del', KEYS[q + 2])\n" \
	"  end\n" \
	"end\n"

/*
 * The head of the queue while the key is free (KEYS[q + 2] the "promised
 * since" note): free_head(now) returns the first waiter, after moving one
 * that has kept the key free for more than 3 s behind everyone (the
 * second value: that one), and notes since when the key is promised to a
 * new head that is not ch.
 */
#define LUA_FREE_HEAD \
	"local function free_head(now)\n" \
	"  local head = redis.call('zrange', KEYS[q], 0, 0)[1]\n" \
	"  if head == nil or head == ch then\n" \
	"    return head, nil\n" \
	"  end\n" \
	"  local note = redis.call('get', KEYS[q + 2])\n" \
	"  local since = nil\n" \
	"  if note then\n" \
	"    local bar = string.find(note, '|[^|]*$')\n" \
	"    if bar and string.sub(note, 1, bar - 1) == head then\n" \
	"      since = tonumber(string.sub(note, bar + 1))\n" \
	"    end\n" \
	"  end\n" \
	"  local stuck = nil\n" \
	"  if since ~= nil and now - since > 3000 then\n" \
	"    local last = redis.call('zrange', KEYS[q], -1, -1, 'WITHSCORES')\n" \
	"    redis.call('zadd', KEYS[q], 'XX', tonumber(last[2]) + 1, head)\n" \
	"    stuck = head\n" \
	"    head = redis.call('zrange', KEYS[q], 0, 0)[1]\n" \
	"    since = nil\n" \
	"  end\n" \
	"  if head ~= nil and head ~= ch and head ~= stuck and since == nil then\n" \
	"    redis.call('set', KEYS[q + 2], head .. '|' .. now, 'PX', 6000)\n" \
	"  end\n" \
	"  return head, stuck\n" \
	"end\n"

/*
 * Waking the queue: wake(me, shared_only) publishes the key on the first
 * live waiter's channel (wake-one), or, when the first is a shared waiter,
 * on each shared waiter's up to the first exclusive one (they can all
 * have it together), never on "me" (the caller's channel).  With
 * shared_only (the key is shared: only readers can have it) an exclusive
 * first waiter is not woken.
 */
#define LUA_WAKE \
	"local function wake(me, shared_only)\n" \
	"  drop_dead(now_ms())\n" \
	"  local first = redis.call('zrange', KEYS[q], 0, 0)[1]\n" \
	"  if first == nil then\n" \
	"    return\n" \
	"  end\n" \
	"  if string.sub(first, -2) ~= '" REDLOCK_SHARED_MEMBER_LUA "' then\n" \
	"    if not shared_only and first ~= me then\n" \
	"      redis.call('publish', first, KEYS[1])\n" \
	"    end\n" \
	"    return\n" \
	"  end\n" \
	"  for _, w in ipairs(redis.call('zrange', KEYS[q], 0, 999)) do\n" \
	"    if string.sub(w, -2) ~= '" REDLOCK_SHARED_MEMBER_LUA "' then\n" \
	"      return\n" \
	"    end\n" \
	"    w = string.sub(w, 1, -3)\n" \
	"    if w ~= me then\n" \
	"      redis.call('publish', w, KEYS[1])\n" \
	"    end\n" \
	"  end\n" \
	"end\n"

/*
 * Drawing a fencing token, into local t (KEYS[2] the key's counter; ARGV[3]
 * starts with "<seed> <horizon>": the caller's clock in Unix microseconds
 * and the key horizon in ms, read only by the rare seeding;
 * see the file header for why tokens still increase across the counter's
 * expiry): INCR, which keeps the counter's TTL.  A counter below the clock
 * range (just created by that INCR, or one from before version 1.2, which
 * had no TTL) is first raised to the seed, clamped to Redis's clock +/- 2
 * s, and given the horizon as its TTL.  The seed comes from the caller so
 * that masters seeding the same key at once agree on it (each one's own
 * clock would differ by microseconds, and every first lock of a key would
 * cost a write-back round trip); the clamp keeps a PostgreSQL host with a
 * wrong clock from moving it far.  Written with %d: Lua would print a
 * number this large as 1.8e+15.  Statements, not a function, so that the
 * uncontended acquire creates no closure.
 */
#define LUA_DRAW_TOKEN \
	"local t = redis.call('incr', KEYS[2])\n" \
	"if t < 1e15 then\n" \
	"  local c = redis.call('time')\n" \
	"  local now = c[1] * 1000000 + c[2]\n" \
	"  local seed = tonumber(string.match(ARGV[3], '^(-?%d+)')) or now\n" \
	"  local horizon = tonumber(string.match(ARGV[3], '^%S+ (%d+)')) or 3600000\n" \
	"  t = math.max(t, math.min(math.max(seed, now - 2000000), now + 2000000))\n" \
	"  redis.call('set', KEYS[2], string.format('%d', t), 'PX', horizon)\n" \
	"end\n"

/*
 * FORMAT_SCRIPTS: script "what" in both lock formats, what_script and
 * what_script_redisson, from its body BODY(F) (F: STRING or REDISSON), with
 * nkeys KEYS and an id each (a bit in RedisConn.scripts_loaded).
 * FORMAT_SCRIPT picks the one a lock uses.
 */
#define FORMAT_SCRIPTS(what, BODY, nkeys, id, id_redisson) \
	static RedisScript what##_script = { \
		#what, BODY(STRING), nkeys, id, "" \
	}; \
	static RedisScript what##_script_redisson = { \
		#what " (redisson)", BODY(REDISSON), nkeys, id_redisson, "" \
	}

/*
 * The lock itself, in each format (redlock.lock_format): KEYS[1] is the
 * lock and ARGV[1] our owner identity in every script that uses these.
 * Each format gives two Lua expressions, inlined where they are used so
 * that an uncontended acquire or release creates no closure:
 *	<F>_OURS		whether the key holds our identity (a key of another
 *					type or family is not ours: never an error);
 *	<F>_TAKE		create the key as ours with TTL ARGV[2] if it does not
 *					exist; whether it did;
 * and <F>_LOCK, the functions the scripts' slower paths use:
 *	lock_state()	'ours', 'free' or 'other' (held by someone else, or a key
 *					of the other family);
 *	lock_drop(me, waiting) delete it (only when ours), telling the
 *					format's waiters; "me" is our wake channel, "waiting"
 *					whether we wait for the key (a grant given back).  Only
 *					the release script calls it: KEYS[2] is the queue there.
 * Re-arming the TTL of a key that is ours is PEXPIRE in both.
 *
 * "string": a plain string holding the owner value, as node-redlock,
 * redsync and redis-py write it.
 * "redisson": what Redisson's RLock writes: a hash with one field, the
 * holder's identity (a UUID, then ":" and a thread id: ours is the
 * backend's pid), whose value is a reentrancy count (ours is always 1: a
 * backend counts its own holds), and a PEXPIRE.  Dropping it publishes
 * Redisson's unlock message ("0") on Redisson's channel for the lock, so
 * that blocked Redisson threads retry at once; pcall, so that a missing
 * ACL right on that channel costs them only the wake-up, not our release.
 * Our own waiters listen on that channel too (for Redisson's unlocks), but
 * a release of ours wakes only the first of them, through the queue; so
 * first each of them (the first 1000 in the queue; we ourselves only when
 * we are waiting) is told to skip the next message if it is on that
 * channel: a mark on its wake channel, REDIS_SKIP_MARK followed by the key.  Both messages come from one
 * script, so nothing can come between them on a subscriber's connection
 * (pubsub.c).  Without the marks every release would wake every waiting
 * backend, and a waiter giving back a grant that made no majority would
 * wake itself, and try again at once, for as long as it waits.
 */
#define STRING_OURS "redis.pcall('get', KEYS[1]) == ARGV[1]"
#define STRING_TAKE "redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])"
#define STRING_LOCK \
	"local function lock_state()\n" \
	"  local v = redis.pcall('get', KEYS[1])\n" \
	"  if v == ARGV[1] then return 'ours' end\n" \
	"  if v == false then return 'free' end\n" \
	"  return 'other'\n" \
	"end\n" \
	"local function lock_drop(me, waiting)\n" \
	"  return redis.call('del', KEYS[1])\n" \
	"end\n"
#define REDISSON_OURS "redis.pcall('hexists', KEYS[1], ARGV[1]) == 1"
#define REDISSON_TAKE \
	"(redis.call('exists', KEYS[1]) == 0 and " \
	"redis.call('hset', KEYS[1], ARGV[1], 1) == 1 and " \
	"redis.call('pexpire', KEYS[1], ARGV[2]) == 1)"
#define REDISSON_LOCK \
	"local function lock_state()\n" \
	"  if " REDISSON_OURS " then return 'ours' end\n" \
	"  if redis.call('exists', KEYS[1]) == 0 then return 'free' end\n" \
	"  return 'other'\n" \
	"end\n" \
	"local function lock_drop(me, waiting)\n" \
	"  local n = redis.call('del', KEYS[1])\n" \
	"  local chan = 'redisson_lock__channel:{' .. KEYS[1] .. '}'\n" \
	"  if string.find(KEYS[1], '{', 1, true) then\n" \
	"    chan = 'redisson_lock__channel:' .. KEYS[1]\n" \
	"  end\n" \
	"  local mark = '" REDIS_SKIP_MARK_LUA "' .. KEYS[1]\n" \
	"  if waiting then\n" \
	"    redis.pcall('publish', me, mark)\n" \
	"  end\n" \
	"  if redis.call('exists', KEYS[2]) == 1 then\n" \
	"    for _, w in ipairs(redis.call('zrange', KEYS[2], 0, 999)) do\n" \
	"      if w ~= me then\n" \
	"        redis.pcall('publish', w, mark)\n" \
	"      end\n" \
	"    end\n" \
	"  end\n" \
	"  redis.pcall('publish', chan, '0')\n" \
	"  return n\n" \
	"end\n"

/*
 * KEYS[1] lock, [2] fencing counter, [3] waiters; ARGV[1] owner identity,
 * [2] TTL, [3] "<seed> <horizon> <ticket> <channel>": see LUA_DRAW_TOKEN,
 * then our ticket ("-" not to queue) and our wake channel (our name in the
 * queue).  Only the slower paths read the last two, and the companion keys
 * they alone touch (the waiters' deadlines, the "promised since" note) are
 * made from the lock key in the script, as KEYS[4] and KEYS[5]: every
 * argument costs Redis time on every call (README, "Redis CPU and memory
 * per lock"), and they all hash like the lock key once it has a hash tag.
 *
 * Returns the token (> 0) when the lock is ours, otherwise -3 minus the
 * holder's remaining TTL (-2: free, but promised to a waiter ahead of us;
 * see REFUSAL_PTTL).
 * First the uncontended case, which must cost Redis little (README,
 * "Redis CPU per lock"): nobody queued and the key free: take it and draw
 * a token, three commands.  Otherwise:
 * a waiter that gets the lock keeps its queue entry, with its ticket, but
 * the entry now lives as long as the lock: a grant given back (no
 * majority) keeps its place, and a lock that expires takes the entry with
 * it, so an expired holder is nobody's head.
 * Our own value counts first: it is the same request sent again after a
 * dropped connection, so the TTL is re-armed and a token drawn, whatever
 * the queue says.  Otherwise a free key goes only to the first live
 * waiter (or anyone when nobody waits), but a head that has kept it free
 * for more than 3 s is moved behind everyone first.  A refused
 * caller with a ticket joins (or stays in) the queue and refreshes its
 * entry.  A key of the other format (a string for a Redisson lock, a hash
 * for a string one, or any other type) is held by someone else.
 */
#define ACQUIRE_BODY(F) \
	"local queued = redis.call('exists', KEYS[3]) == 1\n" \
	"if not queued and " F##_TAKE " then\n" \
	LUA_DRAW_TOKEN \
	"  return t\n" \
	"end\n" \
	"local tk, ch = string.match(ARGV[3], '^%S+ %S+ (%S+) (.*)$')\n" \
	"if tk == '-' then\n" \
	"  tk = ''\n" \
	"end\n" \
	"local base = string.sub(KEYS[3], 1, -9)\n" \
	"KEYS[4] = base .. '" REDLOCK_WAITEXP_SUFFIX_LUA "'\n" \
	"KEYS[5] = base .. '" REDLOCK_PROMISED_SUFFIX_LUA "'\n" \
	"local q = 3\n" \
	F##_LOCK \
	LUA_NOW \
	LUA_ENQUEUE \
	LUA_FREE_HEAD \
	"local state = lock_state()\n" \
	"local now = nil\n" \
	"local function grant()\n" \
	"  if queued then\n" \
	"    redis.call('zadd', KEYS[4], 'XX', (now or now_ms()) + tonumber(ARGV[2]), ch)\n" \
	"  end\n" \
	LUA_DRAW_TOKEN \
	"  return t\n" \
	"end\n" \
	"if state == 'ours' then\n" \
	"  redis.call('pexpire', KEYS[1], ARGV[2])\n" \
	"  return grant()\n" \
	"end\n" \
	"local ahead = false\n" \
	"if queued then\n" \
	"  now = now_ms()\n" \
	"  drop_dead(now)\n" \
	"  if state == 'free' then\n" \
	"    local head, stuck = free_head(now)\n" \
	"    ahead = head ~= nil and head ~= ch and head ~= stuck\n" \
	"  end\n" \
	"end\n" \
	"if not ahead and state == 'free' and " F##_TAKE " then\n" \
	"  return grant()\n" \
	"end\n" \
	"if tk ~= '' then\n" \
	"  enqueue(now or now_ms())\n" \
	"end\n" \
	"return -3 - redis.call('pttl', KEYS[1])\n"

FORMAT_SCRIPTS(acquire, ACQUIRE_BODY, 3, 0, 4);

/*
 * KEYS[1] lock, [2] waiters; ARGV[1] owner identity, [2] "<ticket>
 * <channel>": our ticket ("-": none) and our wake channel.  The slower path
 * makes the waiters' deadlines and the note KEYS[3] and KEYS[4], as the
 * acquire script does.
 *
 * Deletes the lock if it is ours.  Without a ticket, also takes us out of
 * the queue (a release, or a waiter giving up), and the note if it names
 * us.  With one, keeps us queued there, joining if need be: that is how a
 * waiting acquire gives back a grant that did not make a majority, so that
 * it is queued on every master with the same ticket and every master has
 * the same first waiter.  (A waiter's entry stays while it holds the lock,
 * as long as the lock lives: see the acquire script.)  If the lock is then free and
 * someone else waits, publishes the key on the first live waiter's
 * channel: wake-one, in queue order; a waiter giving a grant back does not
 * wake itself.  Returns 1 if our lock was deleted, 0 if it was not ours.
 */
#define RELEASE_BODY(F) \
	"if string.byte(ARGV[2]) == 45 and redis.call('exists', KEYS[2]) == 0 then\n" \
	"  if not (" F##_OURS ") then\n" \
	"    return 0\n" \
	"  end\n" \
	F##_FAST_DROP \
	"end\n" \
	"local tk, ch = string.match(ARGV[2], '^(%S+) (.*)$')\n" \
	"if tk == '-' then\n" \
	"  tk = ''\n" \
	"end\n" \
	"local base = string.sub(KEYS[2], 1, -9)\n" \
	"KEYS[3] = base .. '" REDLOCK_WAITEXP_SUFFIX_LUA "'\n" \
	"KEYS[4] = base .. '" REDLOCK_PROMISED_SUFFIX_LUA "'\n" \
	"local q = 2\n" \
	F##_LOCK \
	LUA_NOW \
	LUA_ENQUEUE \
	LUA_LEAVE \
	LUA_WAKE \
	"local released = 0\n" \
	"if lock_state() == 'ours' then\n" \
	"  released = lock_drop(ch, tk ~= '')\n" \
	"end\n" \
	"if tk ~= '' then\n" \
	"  enqueue(now_ms())\n" \
	"end\n" \
	"if redis.call('exists', KEYS[2]) == 1 then\n" \
	"  if tk == '' then\n" \
	"    leave()\n" \
	"  end\n" \
	"  if redis.call('exists', KEYS[1]) == 0 then\n" \
	"    wake(ch, false)\n" \
	"  elseif redis.pcall('get', KEYS[1]) == '" REDLOCK_SHARED_MARKER_LUA "' then\n" \
	"    wake(ch, true)\n" \
	"  end\n" \
	"end\n" \
	"return released\n"

/* The uncontended release's drop, in each format (nobody to mark). */
#define STRING_FAST_DROP "  return redis.call('del', KEYS[1])\n"
#define REDISSON_FAST_DROP REDISSON_LOCK "  return lock_drop(nil, false)\n"

FORMAT_SCRIPTS(release, RELEASE_BODY, 2, 1, 5);

/*
 * KEYS[1] lock; ARGV[1] owner identity, ARGV[2] TTL.  Re-arms the TTL of
 * our lock.  Returns 1 if it was ours, 0 otherwise (a key of another type
 * or format is not ours either: it reads as lost, not as an error).
 */
#define EXTEND_BODY(F) \
	"if " F##_OURS " then\n" \
	"  return redis.call('pexpire', KEYS[1], ARGV[2])\n" \
	"end\n" \
	"return 0\n"

FORMAT_SCRIPTS(extend, EXTEND_BODY, 1, 2, 6);

/*
 * The lease keeper's re-arm: as extend, but it never shortens the TTL, so
 * that a renewal landing after one of the backend's own re-arms (which may
 * shorten it, and which the backend counts on) cannot undo it: PEXPIRE GT
 * (Redis 7.0), or before 7.0 (an error answer) PTTL and a PEXPIRE if
 * shorter.  Returns 1 if the lock is ours, 0 otherwise.
 */
#define KEEP_BODY(F) \
	"if " F##_OURS " then\n" \
	"  if type(redis.pcall('pexpire', KEYS[1], ARGV[2], 'GT')) == 'table' and\n" \
	"     redis.call('pttl', KEYS[1]) < tonumber(ARGV[2]) then\n" \
	"    redis.call('pexpire', KEYS[1], ARGV[2])\n" \
	"  end\n" \
	"  return 1\n" \
	"end\n" \
	"return 0\n"

FORMAT_SCRIPTS(keep, KEEP_BODY, 1, 7, 8);

/*
 * Shared holds.  While readers share a key, the key itself holds
 * REDLOCK_SHARED_MARKER (so that SET NX fails for every other client, and
 * their GET-and-compare scripts read "not ours", as for any holder), and
 * a sorted set beside it (REDLOCK_READERS_SUFFIX) holds each reader's
 * owner value scored by the end of its lease, on Redis's clock.  Both keys
 * always live until the latest lease ends: every script that changes the
 * readers sets their TTL to that (span), so the key expires exactly when
 * the last reader's lease does.  A reader whose own lease has passed is
 * lost, even while others keep the key.  Only the string format has them.
 *
 * In the queue a shared waiter is its wake channel followed by
 * REDLOCK_SHARED_MEMBER_LUA.  A shared request is granted when the key is
 * free or shared and no exclusive waiter is queued ahead of it (a caller
 * not queued yet has the whole queue ahead): once a writer waits, later
 * readers queue behind it, and writers do not starve.  A release that
 * frees the key wakes the first waiter, or all the shared ones at the head
 * (LUA_WAKE).  Fencing: each shared grant draws a token as an exclusive
 * one does, so a hold's token exceeds those of every hold released before
 * it was granted; tokens of readers that overlap order nothing between
 * them.
 */
#define LUA_SHARED \
	"local marker = '" REDLOCK_SHARED_MARKER_LUA "'\n" \
	"local function span(readers, now)\n" \
	"  local top = redis.call('zrange', readers, -1, -1, 'WITHSCORES')\n" \
	"  local left = math.max(tonumber(top[2]) - now, 1)\n" \
	"  redis.call('pexpire', KEYS[1], left)\n" \
	"  redis.call('pexpire', readers, left)\n" \
	"end\n" \
	LUA_NOW

/*
 * KEYS[1] lock, [2] fencing counter, [3] waiters; ARGV as the acquire
 * script's.  Returns the token, or -3 minus the key's PTTL (refused).
 * Uncontended (nobody queued, the key free): the marker, our lease, a
 * token.  Otherwise: readers whose lease passed are dropped first (the
 * last one's key with them); our own lease found again (the request sent
 * again) is re-armed; a free or shared key is joined unless an exclusive
 * waiter is ahead; a refused caller with a ticket queues.
 */
#define ACQUIRE_SHARED_BODY \
	"local ttl = tonumber(ARGV[2])\n" \
	"local base = string.sub(KEYS[3], 1, -9)\n" \
	"local readers = base .. '" REDLOCK_READERS_SUFFIX_LUA "'\n" \
	"local queued = redis.call('exists', KEYS[3]) == 1\n" \
	"if not queued and\n" \
	"   redis.call('set', KEYS[1], '" REDLOCK_SHARED_MARKER_LUA "', 'NX', 'PX', ttl) then\n" \
	"  local c = redis.call('time')\n" \
	"  redis.call('zadd', readers, c[1] * 1000 + math.floor(c[2] / 1000) + ttl, ARGV[1])\n" \
	"  redis.call('pexpire', readers, ttl)\n" \
	LUA_DRAW_TOKEN \
	"  return t\n" \
	"end\n" \
	LUA_SHARED \
	"local tk, ch = string.match(ARGV[3], '^%S+ %S+ (%S+) (.*)$')\n" \
	"if tk == '-' then\n" \
	"  tk = ''\n" \
	"end\n" \
	"ch = ch .. '" REDLOCK_SHARED_MEMBER_LUA "'\n" \
	"KEYS[4] = base .. '" REDLOCK_WAITEXP_SUFFIX_LUA "'\n" \
	"KEYS[5] = base .. '" REDLOCK_PROMISED_SUFFIX_LUA "'\n" \
	"local q = 3\n" \
	LUA_ENQUEUE \
	LUA_FREE_HEAD \
	"local now = now_ms()\n" \
	"local v = redis.pcall('get', KEYS[1])\n" \
	"if v == marker then\n" \
	"  redis.call('zremrangebyscore', readers, '-inf', now)\n" \
	"  if redis.call('zcard', readers) == 0 then\n" \
	"    redis.call('del', KEYS[1], readers)\n" \
	"    v = false\n" \
	"  end\n" \
	"end\n" \
	"local function grant()\n" \
	"  redis.call('zadd', readers, now + ttl, ARGV[1])\n" \
	"  span(readers, now)\n" \
	"  if queued then\n" \
	"    redis.call('zadd', KEYS[4], 'XX', now + ttl, ch)\n" \
	"  end\n" \
	LUA_DRAW_TOKEN \
	"  return t\n" \
	"end\n" \
	"if v == marker and redis.call('zscore', readers, ARGV[1]) then\n" \
	"  return grant()\n" \
	"end\n" \
	"if v == false or v == marker then\n" \
	"  local stuck = nil\n" \
	"  if queued then\n" \
	"    drop_dead(now)\n" \
	"    if v == false then\n" \
	"      local _\n" \
	"      _, stuck = free_head(now)\n" \
	"    end\n" \
	"  end\n" \
	"  local ahead = false\n" \
	"  local rank = redis.call('zrank', KEYS[3], ch)\n" \
	"  local upto = 999\n" \
	"  if rank then\n" \
	"    upto = math.min(rank - 1, 999)\n" \
	"  end\n" \
	"  if upto >= 0 then\n" \
	"    for _, w in ipairs(redis.call('zrange', KEYS[3], 0, upto)) do\n" \
	"      if w ~= stuck and string.sub(w, -2) ~= '" REDLOCK_SHARED_MEMBER_LUA "' then\n" \
	"        ahead = true\n" \
	"        break\n" \
	"      end\n" \
	"    end\n" \
	"  end\n" \
	"  if not ahead then\n" \
	"    if v == false then\n" \
	"      redis.call('set', KEYS[1], marker, 'PX', ttl)\n" \
	"    end\n" \
	"    return grant()\n" \
	"  end\n" \
	"end\n" \
	"if tk ~= '' then\n" \
	"  enqueue(now)\n" \
	"end\n" \
	"return -3 - redis.call('pttl', KEYS[1])\n"

static RedisScript acquire_script_shared = {
	"acquire (shared)", ACQUIRE_SHARED_BODY, 3, 9, ""
};

/*
 * KEYS[1] lock, [2] waiters; ARGV as the release script's.  Ends our
 * shared hold (1 if it was ours and its lease had not passed, else 0):
 * the readers' span shrinks to the latest lease left, and the last reader
 * deletes both keys.  The queue is then handled as by the release script,
 * and a key left free wakes the head (LUA_WAKE).
 */
#define RELEASE_SHARED_BODY \
	LUA_SHARED \
	"local base = string.sub(KEYS[2], 1, -9)\n" \
	"local readers = base .. '" REDLOCK_READERS_SUFFIX_LUA "'\n" \
	"local tk, me = string.match(ARGV[2], '^(%S+) (.*)$')\n" \
	"if tk == '-' then\n" \
	"  tk = ''\n" \
	"end\n" \
	"local ch = me .. '" REDLOCK_SHARED_MEMBER_LUA "'\n" \
	"KEYS[3] = base .. '" REDLOCK_WAITEXP_SUFFIX_LUA "'\n" \
	"KEYS[4] = base .. '" REDLOCK_PROMISED_SUFFIX_LUA "'\n" \
	"local q = 2\n" \
	LUA_ENQUEUE \
	LUA_LEAVE \
	LUA_WAKE \
	"local now = now_ms()\n" \
	"local released = 0\n" \
	"if redis.pcall('get', KEYS[1]) == marker then\n" \
	"  local score = redis.call('zscore', readers, ARGV[1])\n" \
	"  if score and tonumber(score) > now then\n" \
	"    released = 1\n" \
	"  end\n" \
	"  redis.call('zrem', readers, ARGV[1])\n" \
	"  redis.call('zremrangebyscore', readers, '-inf', now)\n" \
	"  if redis.call('zcard', readers) == 0 then\n" \
	"    redis.call('del', KEYS[1], readers)\n" \
	"  else\n" \
	"    span(readers, now)\n" \
	"  end\n" \
	"end\n" \
	"if tk ~= '' then\n" \
	"  enqueue(now)\n" \
	"end\n" \
	"if redis.call('exists', KEYS[2]) == 1 then\n" \
	"  if tk == '' then\n" \
	"    leave()\n" \
	"  end\n" \
	"  wake(me, redis.call('exists', KEYS[1]) == 1)\n" \
	"end\n" \
	"return released\n"

static RedisScript release_script_shared = {
	"release (shared)", RELEASE_SHARED_BODY, 2, 10, ""
};

/*
 * KEYS[1] lock, [2] readers; ARGV[1] owner identity, [2] TTL.  Re-arms our
 * shared lease (extend: to TTL from now, which may shorten it; keep: never
 * shorter), and the span.  1 if the lease was ours and had not passed.
 */
#define EXTEND_SHARED_BODY(NEW_SCORE) \
	LUA_SHARED \
	"if redis.pcall('get', KEYS[1]) ~= marker then\n" \
	"  return 0\n" \
	"end\n" \
	"local now = now_ms()\n" \
	"local score = tonumber(redis.call('zscore', KEYS[2], ARGV[1]) or '0')\n" \
	"if score <= now then\n" \
	"  return 0\n" \
	"end\n" \
	"redis.call('zadd', KEYS[2], " NEW_SCORE ", ARGV[1])\n" \
	"span(KEYS[2], now)\n" \
	"return 1\n"

static RedisScript extend_script_shared = {
	"extend (shared)", EXTEND_SHARED_BODY("now + tonumber(ARGV[2])"), 2, 11, ""
};
static RedisScript keep_script_shared = {
	"keep (shared)", EXTEND_SHARED_BODY("math.max(score, now + tonumber(ARGV[2]))"), 2, 12, ""
};

/*
 * KEYS[1] fencing counter; ARGV[1] token, [2] the key horizon (ms).  Raises
 * the counter to the token if it is lower, with the horizon as its TTL;
 * gives a counter without a TTL (a 1.1 backend's write-back removed it)
 * the horizon.  Returns the counter afterwards.
 */
static RedisScript fence_script = {
	"fence",
	"local c = tonumber(redis.call('get', KEYS[1]) or '0')\n"
	"local t = tonumber(ARGV[1])\n"
	"if c < t then\n"
	"  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
	"  return t\n"
	"end\n"
	"if redis.call('pttl', KEYS[1]) == -1 then\n"
	"  redis.call('pexpire', KEYS[1], ARGV[2])\n"
	"end\n"
	"return c\n",
	1, 3, ""
};

/*
 * The script "what" (acquire, release, extend, keep) in the format and mode
 * of "lock".
 */
#define FORMAT_SCRIPT(lock, what) \
	((lock)->shared ? &what##_script_shared : \
	 (lock)->redisson ? &what##_script_redisson : &what##_script)

/* How a single master answered an acquire. */
typedef enum Answer
{
	ANSWER_WAITING,
	ANSWER_GRANTED,
	ANSWER_REFUSED,
	ANSWER_FAILED
} Answer;

/*
 * RedlockQuorum: masters that must agree out of "nservers": a majority.
 */
int
RedlockQuorum(int nservers)
{
	return nservers / 2 + 1;
}

/* drift_us: the clock-drift allowance of a TTL: drift_factor * TTL + 2 ms. */
static int64
drift_us(int ttl_ms, double factor)
{
	return (int64) (ttl_ms * factor * 1000.0) + 2000;
}

/*
 * RedlockValidUntil: until when (monotonic us) a lock set with ttl_ms by
 * a request sent at start_us is ours for sure: the TTL, counted from
 * before the request left, minus the drift allowance.  The one place the
 * validity formula is written.
 */
int64
RedlockValidUntil(int64 start_us, int ttl_ms)
{
	return RedlockValidUntilDrift(start_us, ttl_ms, redlock_drift_factor);
}

/*
 * RedlockValidUntilDrift: the same with a given drift factor (the lease
 * keeper's figures for a backend whose redlock.drift_factor is its own).
 */
int64
RedlockValidUntilDrift(int64 start_us, int ttl_ms, double drift_factor)
{
	return start_us + (int64) ttl_ms * 1000 - drift_us(ttl_ms, drift_factor);
}

/* RedlockTtlLeavesValidity: whether the drift allowance leaves ttl_ms any. */
bool
RedlockTtlLeavesValidity(int ttl_ms)
{
	return (int64) ttl_ms * 1000 > drift_us(ttl_ms, redlock_drift_factor);
}

/*
 * RedlockPrepareScripts: hash every script now, in a normal transaction
 * context, so that no callback has to.
 */
void
RedlockPrepareScripts(void)
{
	RedisScriptPrepare(&acquire_script);
	RedisScriptPrepare(&release_script);
	RedisScriptPrepare(&extend_script);
	RedisScriptPrepare(&acquire_script_redisson);
	RedisScriptPrepare(&release_script_redisson);
	RedisScriptPrepare(&extend_script_redisson);
	RedisScriptPrepare(&keep_script);
	RedisScriptPrepare(&keep_script_redisson);
	RedisScriptPrepare(&fence_script);
	RedisScriptPrepare(&acquire_script_shared);
	RedisScriptPrepare(&release_script_shared);
	RedisScriptPrepare(&extend_script_shared);
	RedisScriptPrepare(&keep_script_shared);
}

/*
 * The acquire script's answer is one integer: the token (> 0) when it
 * granted, otherwise -3 minus the holder's PTTL (so -1: free but promised
 * to a waiter ahead of us, -2: no TTL, -3 - n: n ms left).  One integer
 * costs Redis less to build and send than an array.  Tokens start at a
 * clock in microseconds (LUA_DRAW_TOKEN), so an answer below
 * REDLOCK_MIN_TOKEN (a confused server's ":1") is no grant.
 */
#define REFUSAL_PTTL(call)	(-3 - (call)->ints[0])

/* classify: what an acquire call's state means. */
static Answer
classify(const RedisCall *call)
{
	if (RedisCallPending(call))
		return ANSWER_WAITING;
	if (call->state == REDIS_CALL_FAILED)
		return ANSWER_FAILED;
	if (call->nints == 1 && call->ints[0] >= REDLOCK_MIN_TOKEN)
		return ANSWER_GRANTED;
	if (call->nints == 1 && call->ints[0] < 0)
		return ANSWER_REFUSED;
	return ANSWER_FAILED;
}

/*
 * wait_for_replicas: with redlock.replica_ack, a write counts only once
 * that many replicas of the master have it (WAIT behind the script, on the
 * same connection: still one round trip), within half the command timeout
 * so that WAIT's answer arrives within the call's own.
 */
static void
wait_for_replicas(RedisCall *call)
{
	call->wait_replicas = redlock_replica_ack;
	call->wait_ms = Max(redlock_command_timeout / 2, 1);
}

/* note_failure: remember the first failure of a request in its tally. */
static void
note_failure(RedlockTally *tally, const RedisCall *call, const char *fallback)
{
	if (tally->first_server[0] != '\0')
		return;
	tally->first_failure = call->failure ? call->failure : REDIS_FAIL_PROTOCOL;
	strlcpy(tally->first_server, call->server->addr, sizeof(tally->first_server));
	strlcpy(tally->first_error, call->error[0] ? call->error : fallback,
			sizeof(tally->first_error));
}

/*
 * acquire_settled: the acquire's outcome is known once a quorum granted,
 * or once the lock is out of reach *and* it is known whether a quorum
 * answered: that decides "busy" (someone else holds it) against
 * "unreachable", which must not depend on which answer came first.
 */
static bool
acquire_settled(RedisCall *calls, int ncalls, void *arg)
{
	int			quorum = RedlockQuorum(ncalls);
	int			granted = 0;
	int			refused = 0;
	int			failed = 0;
	int			i;

	for (i = 0; i < ncalls; i++)
	{
		switch (classify(&calls[i]))
		{
			case ANSWER_GRANTED:
				granted++;
				break;
			case ANSWER_REFUSED:
				refused++;
				break;
			case ANSWER_FAILED:
				failed++;
				break;
			case ANSWER_WAITING:
				break;
		}
	}
	if (granted >= quorum)
		return true;
	if (refused + failed <= ncalls - quorum)
		return false;			/* a quorum may still grant it */
	return granted + refused >= quorum || failed > ncalls - quorum;
}

/*
 * all_but_frozen_settled: used for cleanup releases; waits for every call
 * except those whose "tag" says the server did not answer the acquire (it
 * is frozen or slow: the release waits in its socket instead).
 */
static bool
all_but_frozen_settled(RedisCall *calls, int ncalls, void *arg)
{
	int			i;

	for (i = 0; i < ncalls; i++)
		if (RedisCallPending(&calls[i]) && calls[i].tag == 0)
			return false;
	return true;
}

/*
 * RedlockCompanionKey: the Redis key "rkey" (rkeylen bytes) followed by a
 * suffix that starts with a NUL (the fencing counter, the queue),
 * palloc'd; its length goes to *len.  On a cluster entry ("cluster") the
 * name starts with a hash tag of the key's slot, so that a script's keys
 * share a slot (see cluster.c; RedisSlotTagsPrepare first); the scripts
 * build the other companions from the queue's name, tag included.
 */
char *
RedlockCompanionKey(const char *rkey, int rkeylen, const char *suffix,
					size_t suffixlen, bool cluster, size_t *len)
{
	StringInfoData key;

	/* the scripts cut the queue's suffix off with string.sub(k, 1, -9) */
	StaticAssertStmt(REDLOCK_WAITERS_SUFFIX_LEN == 8, "the Lua says -9");
	initStringInfo(&key);
	if (cluster)
		appendStringInfoString(&key, RedisSlotTag(RedisKeySlot(rkey, rkeylen)));
	appendBinaryStringInfo(&key, rkey, rkeylen);
	appendBinaryStringInfo(&key, suffix, suffixlen);
	*len = key.len;
	return key.data;
}

#define companion_key(lock, suffix, suffixlen, cluster, len) \
	RedlockCompanionKey((lock)->rkey, (lock)->rkeylen, suffix, suffixlen, cluster, len)
#define fence_key(lock, cluster, len) \
	companion_key(lock, REDLOCK_FENCE_SUFFIX, REDLOCK_FENCE_SUFFIX_LEN, cluster, len)
#define waiters_key(lock, cluster, len) \
	companion_key(lock, REDLOCK_WAITERS_SUFFIX, REDLOCK_WAITERS_SUFFIX_LEN, cluster, len)

/* is_cluster: whether a lock's master number i is a cluster entry. */
#define is_cluster(lock, i) ((lock)->servers[i]->kind == REDIS_KIND_CLUSTER)

/*
 * release_call: describe the owner-checked release of "lock" on its
 * server number i.  "ticket" (text, or "" to leave the queue) keeps a
 * waiter queued.  The companion key and the argument it makes are
 * palloc'd.
 */
static void
release_call(RedisCall *call, RedlockLock *lock, int i, int tag,
			 const char *ticket)
{
	size_t		len;
	char	   *key;

	RedisCallInit(call, lock->servers[i], FORMAT_SCRIPT(lock, release), tag);
	RedisCallArg(call, lock->rkey, lock->rkeylen);
	key = waiters_key(lock, is_cluster(lock, i), &len);
	RedisCallArg(call, key, len);
	RedisCallArg(call, lock->owner, lock->ownerlen);
	key = psprintf("%s %s", ticket[0] ? ticket : "-", lock->channel);
	RedisCallArg(call, key, strlen(key));
}

/*
 * release_partial: undo acquires that did not give us the locks, in one
 * round trip per master.
 *
 * locks[k]'s acquire calls are acq[k * nservers ...].  Sends the
 * owner-checked release to every master that did not refuse: those that
 * granted (we wait for them, until the deadline at most), and those that
 * failed or did not answer (queued behind the acquire on their socket;
 * not waited for).  A lock whose "stay" is true keeps the caller queued on
 * them with "ticket" (a waiting acquire still waits for that key); the
 * others take it out of their queue, also on the masters that refused
 * (with a ticket, a refusal queued it there).
 */
static void
release_partial(RedlockLock **locks, int nlocks, RedisCall *acq,
				const bool *stay, const char *ticket, int64 deadline)
{
	int			nservers = locks[0]->nservers;
	RedisCall  *calls = palloc(sizeof(RedisCall) * nlocks * nservers);
	RedisBatch	batch = {0};
	int			n = 0;
	int			k;
	int			i;

	for (k = 0; k < nlocks; k++)
		for (i = 0; i < nservers; i++)
		{
			RedisCall  *a = &acq[k * nservers + i];
			Answer		ans = classify(a);
			bool		frozen;

			/* a refusal queued a waiter: one that does not stay leaves */
			if (ans == ANSWER_REFUSED && (stay[k] || ticket[0] == '\0'))
				continue;
			frozen = ans == ANSWER_WAITING ||
				(ans == ANSWER_FAILED && a->failure == REDIS_FAIL_TIMEOUT);
			release_call(&calls[n++], locks[k], i, frozen ? 1 : 0,
						 stay[k] ? ticket : "");
		}
	if (n > 0)
	{
		batch.calls = calls;
		batch.ncalls = n;
		batch.timeout_ms = redlock_command_timeout;
		batch.deadline = deadline;
		batch.settled = all_but_frozen_settled;
		RedisRun(&batch);
	}
	pfree(calls);
}

/* State of a fencing write-back while it runs. */
typedef struct FenceWait
{
	int			agree;			/* masters known to hold >= the token */
	int			quorum;
	long long	token;
} FenceWait;

/* fence_counted: how many write-back calls confirmed the token. */
static int
fence_counted(RedisCall *calls, int ncalls, long long token)
{
	int			n = 0;
	int			i;

	for (i = 0; i < ncalls; i++)
		if (calls[i].state == REDIS_CALL_DONE && calls[i].nints == 1 &&
			calls[i].ints[0] >= token)
			n++;
	return n;
}

/* fence_settled: a majority now holds the token. */
static bool
fence_settled(RedisCall *calls, int ncalls, void *arg)
{
	FenceWait  *w = (FenceWait *) arg;

	return w->agree + fence_counted(calls, ncalls, w->token) >= w->quorum;
}

/*
 * fence_write_back: make a quorum of masters hold a counter >= token.
 *
 * "acq" are the acquire calls; masters that returned the token already
 * count.  Returns true when a quorum is reached; otherwise notes the first
 * failure in the tally.
 */
static bool
fence_write_back(RedlockLock *lock, RedisCall *acq, int64 token,
				 int64 deadline, RedlockTally *tally)
{
	RedisCall	calls[REDLOCK_MAX_SERVERS];
	RedisBatch	batch = {0};
	FenceWait	wait;
	char		tokenbuf[32];
	char		horizonbuf[16];
	char	   *fkey;
	size_t		fkeylen;
	int			agree = 0;
	int			n = 0;
	int			i;

	for (i = 0; i < lock->nservers; i++)
		if (classify(&acq[i]) == ANSWER_GRANTED && acq[i].ints[0] == token)
			agree++;
	if (agree >= RedlockQuorum(lock->nservers))
		return true;

	snprintf(tokenbuf, sizeof(tokenbuf), INT64_FORMAT, token);
	snprintf(horizonbuf, sizeof(horizonbuf), "%d", redlock_key_horizon);
	for (i = 0; i < lock->nservers; i++)
	{
		if (classify(&acq[i]) == ANSWER_GRANTED && acq[i].ints[0] == token)
			continue;
		fkey = fence_key(lock, is_cluster(lock, i), &fkeylen);
		RedisCallInit(&calls[n], lock->servers[i], &fence_script, 0);
		RedisCallArg(&calls[n], fkey, fkeylen);
		RedisCallArg(&calls[n], tokenbuf, strlen(tokenbuf));
		RedisCallArg(&calls[n], horizonbuf, strlen(horizonbuf));
		n++;
	}
	wait.agree = agree;
	wait.quorum = RedlockQuorum(lock->nservers);
	wait.token = token;
	batch.calls = calls;
	batch.ncalls = n;
	batch.timeout_ms = redlock_command_timeout;
	batch.deadline = deadline;
	batch.settled = fence_settled;
	batch.arg = &wait;
	RedisRun(&batch);
	if (fence_settled(calls, n, &wait))
		return true;
	for (i = 0; i < n; i++)
		if (calls[i].state == REDIS_CALL_FAILED)
			note_failure(tally, &calls[i], "could not store the fencing token");
	if (tally->first_server[0] == '\0')
	{
		tally->first_failure = REDIS_FAIL_TIMEOUT;
		strlcpy(tally->first_server, lock->servers[0]->addr,
				sizeof(tally->first_server));
		strlcpy(tally->first_error,
				"could not store the fencing token on a majority in time",
				sizeof(tally->first_error));
	}
	return false;
}

/*
 * acquire_calls: describe the acquire of "lock" on each of its masters
 * into calls[0 .. nservers), tagged "tag".  ARGV[3] starts with the
 * token's seed (see LUA_DRAW_TOKEN); "ticket" is text, "" when the caller
 * does not wait.  What the calls point to is palloc'd.
 */
static void
acquire_calls(RedlockLock *lock, RedisCall *calls, const char *ttl,
			  const char *ticket, int tag)
{
	char	   *keys[2][2] = {{NULL, NULL}, {NULL, NULL}};	/* [cluster][fence, waiters] */
	size_t		keylens[2][2] = {{0, 0}, {0, 0}};
	char	   *rest;
	int			i;

	for (i = 0; i < lock->nservers; i++)
	{
		int			c = is_cluster(lock, i) ? 1 : 0;

		if (keys[c][0] != NULL)
			continue;
		if (c)
			RedisSlotTagsPrepare();
		keys[c][0] = fence_key(lock, c, &keylens[c][0]);
		keys[c][1] = waiters_key(lock, c, &keylens[c][1]);
	}
	rest = psprintf(INT64_FORMAT " %d %s %s", RedlockUnixUs(), redlock_key_horizon,
					ticket[0] ? ticket : "-", lock->channel);
	for (i = 0; i < lock->nservers; i++)
	{
		int			c = is_cluster(lock, i) ? 1 : 0;

		RedisCallInit(&calls[i], lock->servers[i], FORMAT_SCRIPT(lock, acquire), tag);
		RedisCallArg(&calls[i], lock->rkey, lock->rkeylen);
		RedisCallArg(&calls[i], keys[c][0], keylens[c][0]);
		RedisCallArg(&calls[i], keys[c][1], keylens[c][1]);
		RedisCallArg(&calls[i], lock->owner, lock->ownerlen);
		RedisCallArg(&calls[i], ttl, strlen(ttl));
		RedisCallArg(&calls[i], rest, strlen(rest));
		wait_for_replicas(&calls[i]);
	}
}

/* The acquire of several locks: nlocks runs of nservers calls. */
typedef struct AcquireShape
{
	int			nlocks;
	int			nservers;
} AcquireShape;

/* acquire_many_settled: every lock's outcome is known (acquire_settled). */
static bool
acquire_many_settled(RedisCall *calls, int ncalls, void *arg)
{
	const AcquireShape *s = (const AcquireShape *) arg;
	int			k;

	for (k = 0; k < s->nlocks; k++)
		if (!acquire_settled(calls + k * s->nservers, s->nservers, NULL))
			return false;
	return true;
}

/*
 * acquire_answers: fill "tally" from one lock's acquire calls, with the
 * masters that granted (bits by master number) and the largest token.
 */
static void
acquire_answers(RedlockLock *lock, RedisCall *calls, RedlockTally *tally,
				uint32 *granted, int64 *token)
{
	int			i;

	memset(tally, 0, sizeof(*tally));
	tally->nservers = lock->nservers;
	tally->holder_pttl_ms = -1;
	*granted = 0;
	*token = 0;
	for (i = 0; i < lock->nservers; i++)
	{
		RedisCall  *call = &calls[i];

		switch (classify(call))
		{
			case ANSWER_GRANTED:
				tally->granted++;
				*granted |= (uint32) 1 << i;
				*token = Max(*token, call->ints[0]);
				break;
			case ANSWER_REFUSED:
				tally->refused++;
				if (REFUSAL_PTTL(call) >= 0 &&
					(tally->holder_pttl_ms < 0 ||
					 REFUSAL_PTTL(call) < tally->holder_pttl_ms))
					tally->holder_pttl_ms = REFUSAL_PTTL(call);
				break;
			case ANSWER_WAITING:
				tally->unanswered++;
				break;
			case ANSWER_FAILED:
				tally->failed++;
				if (RedisFailoverMayExplain(lock->servers[i], call->failure, call->error))
					tally->failed_over++;
				note_failure(tally, call, "unexpected answer to the acquire script");
				break;
		}
	}
}

/*
 * miss_verdict: what a lock the attempt did not get means.  Unreachable:
 * a quorum cannot be asked, or the token could not be stored on one (that
 * is not "held elsewhere").  Calls the deadline left unanswered are no
 * evidence of either: the caller's deadline decides.
 */
static RedlockVerdict
miss_verdict(const RedlockTally *tally, bool fence_failed, int64 deadline)
{
	int			quorum = RedlockQuorum(tally->nservers);

	if (tally->failed > tally->nservers - quorum ||
		(fence_failed && !(deadline != 0 && RedlockNowUs() >= deadline)))
		return REDLOCK_UNREACHABLE;
	if (tally->validity_lost || fence_failed || tally->unanswered > 0 ||
		tally->granted + tally->refused >= quorum)
		return REDLOCK_BUSY;
	return REDLOCK_UNREACHABLE;
}

/*
 * RedlockTryAcquire: one attempt to take "locks" (nlocks of them, all on
 * the same masters, with the same TTL) on their masters: all of them or
 * none.  Every lock's acquire goes out in the same batch, pipelined: one
 * round trip per master, whatever the number of locks.
 *
 * The locks' keys, values, channel, TTL and servers must be set.  With a
 * ticket (> 0: when the caller started waiting, in Unix milliseconds, the
 * same for all of its attempts) a refused attempt queues the caller on
 * each master, for the keys it did not get only: a key it got is given
 * back and its queue left, so that a caller that waits holds nothing and
 * keeps nobody from a key it is not blocked on.  "deadline" (monotonic
 * us, 0: none) ends the attempt, and its cleanup, wherever they are.  On
 * success fills in each lock's token, granted, acquired_at and validity
 * deadline, and returns REDLOCK_ACQUIRED.  Otherwise nothing of ours is
 * left on any master (or its release is queued behind the acquire on a
 * slow one) and the result says whether a key is busy (held elsewhere,
 * validity ran out, or the deadline came first: the caller's to judge)
 * or a quorum cannot be asked, or could not store the fencing token
 * (REDLOCK_UNREACHABLE: that one wins over busy).  *blocking is then the
 * number of the lock that decided, and "tally" describes its answers.
 * Raises what RedisRun raises.
 */
RedlockVerdict
RedlockTryAcquire(RedlockLock **locks, int nlocks, int64 ticket,
				  int64 deadline, RedlockTally *tally, int *blocking)
{
	int			ns = locks[0]->nservers;
	int			quorum = RedlockQuorum(ns);
	RedisCall  *calls = palloc(sizeof(RedisCall) * nlocks * ns);
	RedlockTally *tallies = palloc(sizeof(RedlockTally) * nlocks);
	uint32	   *granted = palloc(sizeof(uint32) * nlocks);
	int64	   *tokens = palloc(sizeof(int64) * nlocks);
	bool	   *miss = palloc(sizeof(bool) * nlocks);
	bool	   *fence_failed = palloc0(sizeof(bool) * nlocks);
	RedisBatch	batch = {0};
	AcquireShape shape = {nlocks, ns};
	char		ttlbuf[16];
	char		ticketbuf[32];
	TimestampTz start_wall;
	int64		start;
	int			nmissed = 0;
	RedlockVerdict verdict = REDLOCK_BUSY;
	int			k;
	int			i;

	snprintf(ttlbuf, sizeof(ttlbuf), "%d", locks[0]->ttl_ms);
	if (ticket > 0)
		snprintf(ticketbuf, sizeof(ticketbuf), INT64_FORMAT, ticket);
	else
		ticketbuf[0] = '\0';

	/* a commit or abort callback must not have to hash anything */
	RedlockPrepareScripts();

	for (k = 0; k < nlocks; k++)
	{
		Assert(locks[k]->nservers == ns && locks[k]->ttl_ms == locks[0]->ttl_ms);
		acquire_calls(locks[k], &calls[k * ns], ttlbuf, ticketbuf, k);
	}

	batch.calls = calls;
	batch.ncalls = nlocks * ns;
	batch.timeout_ms = redlock_command_timeout;
	batch.deadline = deadline;
	batch.settled = acquire_many_settled;
	batch.arg = &shape;
	start_wall = GetCurrentTimestamp();
	start = RedlockNowUs();
	RedisRun(&batch);

	for (k = 0; k < nlocks; k++)
	{
		RedlockTally *t = &tallies[k];

		acquire_answers(locks[k], &calls[k * ns], t, &granted[k], &tokens[k]);
		elog(DEBUG1, "redlock: acquire \"%s\" (owner %.8s): %d granted, %d refused, %d failed, %d not waited for, in %.3f ms",
			 locks[k]->key, locks[k]->owner, t->granted, t->refused,
			 t->failed, t->unanswered, (RedlockNowUs() - start) / 1000.0);
		miss[k] = t->granted < quorum;
		if (miss[k])
			nmissed++;
	}

	/* tokens are written back only when every key can be had */
	for (k = 0; k < nlocks && nmissed == 0; k++)
	{
		RedlockTally *t = &tallies[k];

		if (!(ns == 1 ||
			  fence_write_back(locks[k], &calls[k * ns], tokens[k], deadline, t)))
			fence_failed[k] = true;
		else if (RedlockNowUs() >= RedlockValidUntil(start, locks[k]->ttl_ms))
			t->validity_lost = true;
		else
			continue;
		miss[k] = true;
		nmissed++;
	}

	/* every key is held on a quorum, with validity left (the same start) */
	if (nmissed == 0 && RedlockNowUs() < RedlockValidUntil(start, locks[0]->ttl_ms))
	{
		for (k = 0; k < nlocks; k++)
		{
			RedlockLock *lock = locks[k];

			lock->token = tokens[k];
			lock->granted = granted[k];
			for (i = 0; i < ns; i++)
				lock->granted_on[i] = calls[k * ns + i].conn_serial;
			lock->acquired_us = start;
			lock->acquired_at = start_wall;
			lock->valid_until_us = RedlockValidUntil(start, lock->ttl_ms);
		}
		*tally = tallies[0];
		*blocking = -1;
		return REDLOCK_ACQUIRED;
	}
	if (nmissed == 0)
	{
		/* validity ran out while the last fencing write-backs ran */
		for (k = 0; k < nlocks; k++)
		{
			miss[k] = true;
			tallies[k].validity_lost = true;
		}
	}

	/* all or nothing: what was granted goes back */
	release_partial(locks, nlocks, calls, miss, ticketbuf, deadline);

	*blocking = -1;
	for (k = 0; k < nlocks; k++)
	{
		RedlockVerdict v;

		if (!miss[k])
			continue;
		v = miss_verdict(&tallies[k], fence_failed[k], deadline);

		/*
		 * The key that decides: one out of reach first, then one held
		 * elsewhere (what a key alone would say: a try returns NULL for
		 * it), then one whose validity ran out.
		 */
		if (*blocking < 0 ||
			(v == REDLOCK_UNREACHABLE && verdict != REDLOCK_UNREACHABLE) ||
			(v == verdict && tallies[*blocking].validity_lost &&
			 !tallies[k].validity_lost))
		{
			*blocking = k;
			verdict = v;
		}
	}
	*tally = tallies[*blocking];
	return verdict;
}
/* Per lock answers to an owner-checked script (release or extend). */
typedef struct OwnerAnswers
{
	int			acted;			/* the script acted: our lock */
	int			notours;		/* not our lock (expired, taken over) */
	int			failed;
	int			waiting;
} OwnerAnswers;

/* acted: an owner-checked script answered 1: it acted on our lock. */
static bool
acted(const RedisCall *call)
{
	return call->state == REDIS_CALL_DONE && call->nints == 1 &&
		call->ints[0] == 1;
}

/*
 * count_answers: tally the answers about lock number "idx": 1 means it
 * acted on our lock, 0 that the lock was not ours.
 */
static OwnerAnswers
count_answers(RedisCall *calls, int ncalls, int idx)
{
	OwnerAnswers c = {0, 0, 0, 0};
	int			i;

	for (i = 0; i < ncalls; i++)
	{
		if (calls[i].tag != idx)
			continue;
		if (RedisCallPending(&calls[i]))
			c.waiting++;
		else if (acted(&calls[i]))
			c.acted++;
		else if (calls[i].state == REDIS_CALL_DONE && calls[i].nints == 1)
			c.notours++;
		else
			c.failed++;
	}
	return c;
}

/*
 * owner_outcome: the decided outcome of one lock, or -1 while undecided:
 * 0 acted on a quorum, 1 not ours on too many to make one, 2 too few
 * answered.
 */
static int
owner_outcome(OwnerAnswers c, int nservers)
{
	int			quorum = RedlockQuorum(nservers);

	if (c.acted >= quorum)
		return 0;
	if (c.notours > nservers - quorum)
		return 1;
	if (c.waiting == 0)
		return c.acted + c.notours >= quorum ? 1 : 2;
	return -1;
}

/* fill_tally: describe the answers about lock number idx. */
static void
fill_tally(RedlockTally *t, RedisCall *calls, int ncalls, int idx,
		   int nservers)
{
	OwnerAnswers c = count_answers(calls, ncalls, idx);
	int			j;

	memset(t, 0, sizeof(*t));
	t->nservers = nservers;
	t->granted = c.acted;
	t->refused = c.notours;
	t->failed = c.failed;
	t->unanswered = c.waiting;
	t->holder_pttl_ms = -1;
	for (j = 0; j < ncalls; j++)
		if (calls[j].tag == idx && calls[j].state == REDIS_CALL_FAILED)
			note_failure(t, &calls[j], "unexpected answer");
}

typedef struct ReleaseBatch
{
	RedlockLock **locks;
	int			nlocks;
	bool		in_statement;
} ReleaseBatch;

/*
 * release_settled: every lock's outcome is decided, or can only be decided
 * by servers that are behind: a server that has not answered our earlier
 * requests will not answer this one sooner, and a commit or abort (or a
 * cancel) should not wait out its timeout; the release stays queued behind
 * those requests.  Locks whose acquire was interrupted (still pending) are
 * not waited for either in a callback: their release is cleanup, queued
 * behind the acquire on each server's connection.  In a statement (a wait
 * that ended: its give-back) they are, so that the rollback's releases
 * that follow on the same connections are not behind it.
 */
static bool
release_settled(RedisCall *calls, int ncalls, void *arg)
{
	ReleaseBatch *batch = (ReleaseBatch *) arg;
	int			i;

	for (i = 0; i < ncalls; i++)
	{
		if (RedisCallPending(&calls[i]) && !calls[i].behind &&
			(batch->in_statement ||
			 batch->locks[calls[i].tag]->pending_subid == InvalidSubTransactionId) &&
			owner_outcome(count_answers(calls, ncalls, calls[i].tag),
						  batch->locks[calls[i].tag]->nservers) < 0)
			return false;
	}
	return true;
}

/*
 * RedlockRelease: release several locks at once, each on all its masters,
 * in one pipelined round trip per master.
 *
 * Fills results[i] for locks[i]: released on a quorum, found lost (expired
 * or taken over), or not confirmed (the TTL will end it); and, if
 * "tallies" is not NULL, how the masters answered.  Locks still pending
 * (an interrupted acquire) are released without waiting, but in a
 * statement (see release_settled).  "when" says
 * where it runs: in a callback it opens no connection (but at exit) and
 * waits at most REDLOCK_CALLBACK_MAX_WAIT_MS.  Raises ERROR only when out
 * of memory, or (in a statement) what RedisRun raises: callbacks catch it.
 */
void
RedlockRelease(RedlockLock **locks, int nlocks, RedlockReleaseResult *results,
			   RedlockTally *tallies, RedlockWhen when)
{
	RedisCall  *calls;
	RedisBatch	batch = {0};
	ReleaseBatch rb;
	int64		start;
	int			ncalls = 0;
	int			i;
	int			j;

	for (i = 0; i < nlocks; i++)
		ncalls += locks[i]->nservers;
	calls = palloc(sizeof(RedisCall) * ncalls);

	ncalls = 0;
	for (i = 0; i < nlocks; i++)
		for (j = 0; j < locks[i]->nservers; j++)
			release_call(&calls[ncalls++], locks[i], j, i, "");

	rb.locks = locks;
	rb.nlocks = nlocks;
	rb.in_statement = when == REDLOCK_IN_STATEMENT;
	batch.calls = calls;
	batch.ncalls = ncalls;
	batch.timeout_ms = redlock_command_timeout;
	batch.in_callback = when != REDLOCK_IN_STATEMENT;
	batch.no_connect = when == REDLOCK_IN_CALLBACK;
	batch.settled = release_settled;
	batch.arg = &rb;
	start = RedlockNowUs();
	RedisRun(&batch);

	for (i = 0; i < nlocks; i++)
	{
		OwnerAnswers c = count_answers(calls, ncalls, i);
		int			outcome = owner_outcome(c, locks[i]->nservers);

		results[i] = outcome == 0 ? REDLOCK_RELEASED :
			outcome == 1 ? REDLOCK_WAS_LOST : REDLOCK_RELEASE_FAILED;
		elog(DEBUG1, "redlock: release \"%s\" (owner %.8s): %d released, %d not ours, %d failed, %d not waited for, in %.3f ms",
			 locks[i]->key, locks[i]->owner, c.acted, c.notours, c.failed,
			 c.waiting, (RedlockNowUs() - start) / 1000.0);
		if (tallies)
			fill_tally(&tallies[i], calls, ncalls, i, locks[i]->nservers);
	}
	pfree(calls);
}

/*
 * RedlockDescribeTally: append a sentence saying how the masters answered,
 * for an errdetail.
 */
void
RedlockDescribeTally(const RedlockTally *tally, StringInfo buf)
{
	appendStringInfo(buf,
					 "%d of %d Redis servers granted the lock, %d refused it (held elsewhere), %d failed",
					 tally->granted, tally->nservers, tally->refused,
					 tally->failed);
	if (tally->unanswered > 0)
		appendStringInfo(buf, ", %d %s not waited for", tally->unanswered,
						 tally->unanswered == 1 ? "was" : "were");
	appendStringInfoChar(buf, '.');
	if (tally->first_server[0])
		appendStringInfo(buf, " First failure: server \"%s\": %s.",
						 tally->first_server, tally->first_error);
}

/*
 * note_confirmed: after a re-arm that a quorum confirmed, the masters that
 * hold our word are those that confirmed it now, on the connection their
 * answer came on.  (The calls for lock number idx are in the order of its
 * servers.)
 */
static void
note_confirmed(RedlockLock *lock, RedisCall *calls, int ncalls, int idx)
{
	int			j = 0;
	int			i;

	lock->granted = 0;
	for (i = 0; i < ncalls; i++)
	{
		if (calls[i].tag != idx)
			continue;
		if (acted(&calls[i]))
		{
			lock->granted |= (uint32) 1 << j;
			lock->granted_on[j] = calls[i].conn_serial;
		}
		j++;
	}
}

/*
 * RedlockLockInDoubt: whether fewer than a quorum of masters still hold
 * our word for "lock" as far as this backend can tell without asking.  A
 * master holds it when it granted (or last re-armed) the lock and its
 * answer came on the connection still open now (a connection replaced
 * since, even one that has not heard a byte yet, has another serial).  A
 * master whose connection closed since may have restarted without its
 * data and then granted the key to someone else; its TTL says nothing any
 * more.  Looks at each connection (one read, no waiting), once per "now".
 */
bool
RedlockLockInDoubt(RedlockLock *lock, int64 now)
{
	int			n = 0;
	int			i;

	for (i = 0; i < lock->nservers; i++)
	{
		RedisServer *srv = RedisServerForKey(lock->servers[i], lock->rkey,
											 lock->rkeylen);

		if ((lock->granted & ((uint32) 1 << i)) &&
			RedisConnStillOpen(&srv->cmd, now) &&
			srv->cmd.serial == lock->granted_on[i])
			n++;
	}
	return n < RedlockQuorum(lock->nservers);
}

typedef struct ExtendBatch
{
	RedlockLock **locks;
	int			nlocks;
} ExtendBatch;

/* extend_settled: every lock's outcome is decided. */
static bool
extend_settled(RedisCall *calls, int ncalls, void *arg)
{
	ExtendBatch *eb = (ExtendBatch *) arg;
	int			i;

	for (i = 0; i < eb->nlocks; i++)
		if (owner_outcome(count_answers(calls, ncalls, i),
						  eb->locks[i]->nservers) < 0)
			return false;
	return true;
}

/*
 * RedlockExtendMany: re-arm the TTL of several held locks, locks[i] to
 * ttls[i], on their masters, all in one batch.  With lengthen_only (the
 * lease keeper) a TTL already longer is left as it is.
 *
 * results[i]: REDLOCK_EXTENDED when a quorum re-armed it and validity
 * remains (the lock's TTL and validity deadline are updated, counted from
 * before the batch began); REDLOCK_EXTEND_LOST when too many masters no
 * longer hold our value, or validity is gone by the time it is known;
 * REDLOCK_EXTEND_UNCONFIRMED when too few answered.  tallies[i] get the
 * answers.  Raises what RedisRun raises.
 */
void
RedlockExtendMany(RedlockLock **locks, int nlocks, const int *ttls,
				  bool lengthen_only, RedlockExtendResult *results,
				  RedlockTally *tallies)
{
	RedisCall  *calls;
	RedisBatch	batch = {0};
	ExtendBatch eb;
	char	  (*ttlbufs)[16];
	int64		start;
	int			ncalls = 0;
	int			i;
	int			j;

	for (i = 0; i < nlocks; i++)
		ncalls += locks[i]->nservers;
	calls = palloc(sizeof(RedisCall) * ncalls);
	ttlbufs = palloc(sizeof(*ttlbufs) * nlocks);

	ncalls = 0;
	for (i = 0; i < nlocks; i++)
	{
		snprintf(ttlbufs[i], sizeof(ttlbufs[i]), "%d", ttls[i]);
		for (j = 0; j < locks[i]->nservers; j++)
		{
			RedisCall  *call = &calls[ncalls++];

			RedisCallInit(call, locks[i]->servers[j],
						  lengthen_only ? FORMAT_SCRIPT(locks[i], keep) :
						  FORMAT_SCRIPT(locks[i], extend), i);
			RedisCallArg(call, locks[i]->rkey, locks[i]->rkeylen);
			if (locks[i]->shared)
			{
				size_t		len;
				char	   *readers;

				if (is_cluster(locks[i], j))
					RedisSlotTagsPrepare();
				readers = companion_key(locks[i], REDLOCK_READERS_SUFFIX,
										REDLOCK_READERS_SUFFIX_LEN,
										is_cluster(locks[i], j), &len);
				RedisCallArg(call, readers, len);
			}
			RedisCallArg(call, locks[i]->owner, locks[i]->ownerlen);
			RedisCallArg(call, ttlbufs[i], strlen(ttlbufs[i]));
			wait_for_replicas(call);
		}
	}

	eb.locks = locks;
	eb.nlocks = nlocks;
	batch.calls = calls;
	batch.ncalls = ncalls;
	batch.timeout_ms = redlock_command_timeout;
	batch.settled = extend_settled;
	batch.arg = &eb;
	start = RedlockNowUs();
	RedisRun(&batch);

	for (i = 0; i < nlocks; i++)
	{
		int			outcome = owner_outcome(count_answers(calls, ncalls, i),
											locks[i]->nservers);

		fill_tally(&tallies[i], calls, ncalls, i, locks[i]->nservers);
		if (outcome == 0 && RedlockNowUs() < RedlockValidUntil(start, ttls[i]))
		{
			locks[i]->ttl_ms = ttls[i];
			locks[i]->valid_until_us = RedlockValidUntil(start, ttls[i]);
			note_confirmed(locks[i], calls, ncalls, i);
			results[i] = REDLOCK_EXTENDED;
		}
		else
		{
			if (outcome == 0)
			{
				tallies[i].validity_lost = true;
				results[i] = REDLOCK_EXTEND_LOST;
			}
			else
				results[i] = outcome == 1 ? REDLOCK_EXTEND_LOST :
					REDLOCK_EXTEND_UNCONFIRMED;

			/*
			 * Masters may have applied it all the same: a shorter TTL then
			 * counts, a longer one is not known to (the keeper's
			 * lengthen-only re-arm never shortens: it leaves this alone).
			 */
			if (!lengthen_only)
				locks[i]->valid_until_us = Min(locks[i]->valid_until_us,
											   RedlockValidUntil(start, ttls[i]));
		}
	}
	pfree(calls);
	pfree(ttlbufs);
}

/*
 * RedlockExtend: RedlockExtendMany for one lock.
 */
RedlockExtendResult
RedlockExtend(RedlockLock *lock, int ttl_ms, RedlockTally *tally)
{
	RedlockExtendResult result;

	RedlockExtendMany(&lock, 1, &ttl_ms, false, &result, tally);
	return result;
}
