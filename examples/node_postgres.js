// node-postgres: take the lock with the first statement of the transaction;
// COMMIT releases it once the commit is visible.  Lock timeouts (55P03)
// and commits that lost their lock (40001) are retried.
//
// Run: PG* environment set, npm package "pg" installed:  node node_postgres.js

'use strict';

const { Pool } = require('pg');

const RETRY = new Set(['55P03', '40001']);

async function withLock(pool, key, work, { waitMs = 5000, attempts = 5 } = {}) {
  for (let attempt = 1; ; attempt++) {
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      await client.query('SELECT redlock_acquire($1, NULL, $2)', [key, waitMs]);
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (e) {
      await client.query('ROLLBACK').catch(() => {});
      if (!RETRY.has(e.code) || attempt === attempts) throw e;
      await new Promise((resolve) => setTimeout(resolve, 50 * attempt));
    } finally {
      client.release();
    }
  }
}

module.exports = { withLock };

// Eight concurrent read-then-write increments of one counter: never a lost one.
async function main() {
  // more tries where a backend is very slow (the test suite under valgrind)
  const attempts = Number(process.env.EXAMPLE_ATTEMPTS || 5);
  const pool = new Pool({ max: 8 });
  await pool.query('CREATE TABLE IF NOT EXISTS example_counter (id int PRIMARY KEY, n int NOT NULL)');
  await pool.query('INSERT INTO example_counter VALUES (1, 0) ON CONFLICT (id) DO UPDATE SET n = 0');
  await Promise.all(Array.from({ length: 8 }, () => withLock(pool, 'counter:1', async (c) => {
    const { rows } = await c.query('SELECT n FROM example_counter WHERE id = 1');
    await new Promise((resolve) => setTimeout(resolve, 5));
    await c.query('UPDATE example_counter SET n = $1 WHERE id = 1', [rows[0].n + 1]);
  }, { attempts })));
  const { rows } = await pool.query('SELECT n FROM example_counter WHERE id = 1');
  console.log(`counter = ${rows[0].n}`);
  await pool.end();
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
