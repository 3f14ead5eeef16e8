// The hot-key transaction under node-redlock (npm "redlock" 4.2.0 with
// ioredis, its default retry settings: 10 tries, 200 ms apart, up to
// 100 ms jitter), for bench/hotkey.sh.
//
//   node node_hotkey.js REDIS_HOST:PORT PGURL WORKERS SECONDS
//
// Each worker loops: take the lock on "hot:node", BEGIN, ~1 ms of work,
// UPDATE one row, COMMIT, release.  A lock attempt that runs out of
// retries is counted and tried again.  Prints one JSON line: tps, latency
// percentiles (from the transaction's first lock attempt, across attempts
// that gave up, to the release), transactions
// per worker, and how many lock attempts gave up.

'use strict';

const Redis = require('ioredis');
const Redlock = require('redlock');
const { Client } = require('pg');

const [server, pgUrl, workersArg, secondsArg] = process.argv.slice(2);
const [host, port] = server.split(':');
const workers = Number(workersArg);
const deadline = Date.now() + Number(secondsArg) * 1000;

async function worker(redlock, counts, latencies, gaveUp, i) {
  const db = new Client({ connectionString: pgUrl });
  await db.connect();
  let started = process.hrtime.bigint();
  while (Date.now() < deadline) {
    let lock;
    try {
      lock = await redlock.lock('hot:node', 10000);
    } catch (e) {
      gaveUp[0]++;              // still the same transaction: keep its start
      continue;
    }
    await db.query('BEGIN');
    await db.query('SELECT pg_sleep(0.001)');
    await db.query('UPDATE hot SET n = n + 1 WHERE id = 1');
    await db.query('COMMIT');
    await lock.unlock();
    latencies.push(Number(process.hrtime.bigint() - started) / 1e6);
    counts[i]++;
    started = process.hrtime.bigint();
  }
  await db.end();
}

async function main() {
  const client = new Redis({ host, port: Number(port) });
  const redlock = new Redlock([client]);
  redlock.on('clientError', () => {});
  const counts = new Array(workers).fill(0);
  const latencies = [];
  const gaveUp = [0];
  const started = Date.now();
  await Promise.all(counts.map((_, i) => worker(redlock, counts, latencies, gaveUp, i)));
  const seconds = (Date.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))];
  console.log(JSON.stringify({
    tps: latencies.length / seconds,
    p50_ms: pct(0.5),
    p99_ms: pct(0.99),
    max_ms: latencies[latencies.length - 1],
    fairness: Math.min(...counts) / Math.max(...counts),
    per_worker: counts,
    gave_up: gaveUp[0],
  }));
  client.disconnect();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
