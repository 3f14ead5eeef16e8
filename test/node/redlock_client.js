// A node-redlock (npm "redlock" 4.2.0, with ioredis) client that the Python
// tests drive, to check that it and the extension exclude each other.
//
//   node redlock_client.js SERVERS try KEY TTL_MS
//       one attempt; prints "acquired VALUE" and holds the lock until a line
//       arrives on stdin, then prints "released"; or prints "busy".
//   node redlock_client.js SERVERS hold KEY TTL_MS
//       like try, but retries (node-redlock's defaults: 10 tries, 200 ms
//       apart, up to 100 ms jitter) before printing "busy".
//   node redlock_client.js SERVERS counter KEY ROUNDS PGURL
//       ROUNDS times: take the lock (retrying), read a counter row, wait a
//       little, write it back plus one, commit, release; prints "done".
//   node redlock_client.js SERVERS counter-unlocked KEY ROUNDS PGURL
//       the same without the lock: the control that loses updates.
//
// SERVERS is a comma-separated list of host:port, as in redlock.servers;
// rediss://host:port entries connect over TLS, checking the server's
// certificate against the CA file named by $REDLOCK_TLS_CA; a
// cluster://host:port;host:port entry is a Redis Cluster (ioredis's
// Cluster client, which sends each key's script to the node of its slot).

'use strict';

const fs = require('fs');
const Redis = require('ioredis');
const Redlock = require('redlock');

const [serverList, mode, key, arg, pgUrl] = process.argv.slice(2);
const clients = serverList.split(',').map((s) => {
  const entry = s.trim();
  if (entry.startsWith('cluster://')) {
    // a Redis Cluster, as ioredis reaches one: seeds separated by semicolons
    const seeds = entry.slice('cluster://'.length).split(';').map((hp) => {
      const [host, port] = hp.split(':');
      return { host, port: Number(port) };
    });
    return new Redis.Cluster(seeds, { redisOptions: { maxRetriesPerRequest: 1 } });
  }
  const tls = entry.startsWith('rediss://');
  const [host, port] = entry.replace(/^rediss:\/\//, '').split(':');
  const options = { host, port: Number(port), maxRetriesPerRequest: 1 };
  if (tls) {
    options.tls = { ca: fs.readFileSync(process.env.REDLOCK_TLS_CA), servername: host };
  }
  return new Redis(options);
});
const ready = Promise.all(clients.map((c) => new Promise((resolve) => c.once('ready', resolve))));

function redlock(retryCount) {
  const options = retryCount === undefined ? {} : { retryCount };
  const r = new Redlock(clients, options);
  r.on('clientError', () => {});
  return r;
}

function stdinLine() {
  return new Promise((resolve) => {
    const done = () => {
      process.stdin.destroy();        // stop reading: let the process end
      resolve();
    };
    process.stdin.once('data', done);
    process.stdin.once('end', done);
  });
}

async function holdOnce(retryCount) {
  let lock;
  try {
    lock = await redlock(retryCount).lock(key, Number(arg));
  } catch (e) {
    console.log('busy');
    return;
  }
  console.log(`acquired ${lock.value}`);
  await stdinLine();
  await lock.unlock();
  console.log('released');
}

async function counter(locked) {
  const { Client } = require('pg');
  const db = new Client({ connectionString: pgUrl });
  await db.connect();
  const locker = redlock(1000);
  for (let i = 0; i < Number(arg); i++) {
    const lock = locked ? await locker.lock(key, 10000) : null;
    await db.query('BEGIN');
    const { rows } = await db.query('SELECT n FROM interop_counter WHERE id = 1');
    await new Promise((r) => setTimeout(r, 2));
    await db.query('UPDATE interop_counter SET n = $1 WHERE id = 1', [rows[0].n + 1]);
    await db.query('COMMIT');
    if (lock) await lock.unlock();
  }
  await db.end();
  console.log('done');
}

async function main() {
  await ready;
  if (mode === 'try') await holdOnce(0);
  else if (mode === 'hold') await holdOnce(undefined);
  else if (mode === 'counter') await counter(true);
  else if (mode === 'counter-unlocked') await counter(false);
  else throw new Error(`unknown mode ${mode}`);
  clients.forEach((c) => c.disconnect());
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
