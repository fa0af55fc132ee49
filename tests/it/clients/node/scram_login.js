// node-postgres logs in (SCRAM-SHA-256: its own SCRAM client), runs a
// named prepared statement with a bound parameter three times, and a
// SET/SHOW of a parameter of pgmlcat's: the steps of pgx_scram_login.go.
// Prints what it saw, then `backends: <n>`.
//
// Usage: node scram_login.js URL
'use strict';
const { Client } = require('pg');

async function main() {
  const c = new Client({ connectionString: process.argv[2] });
  await c.connect();
  const pids = new Set();
  const who = await c.query('select current_user::text as u, pg_backend_pid() as pid');
  pids.add(who.rows[0].pid);
  console.log(`user ${who.rows[0].u}`);
  for (let i = 0; i < 3; i++) {
    const r = await c.query({
      name: 'plus_one',
      text: 'select $1::int + 1 as n, pg_backend_pid() as pid',
      values: [i],
    });
    pids.add(r.rows[0].pid);
    console.log(`plus one ${r.rows[0].n}`);
  }
  await c.query('set pgmlcat.max_lag_ms = 50');
  const shown = await c.query('show pgmlcat.max_lag_ms');
  console.log(`max_lag_ms ${shown.rows[0]['pgmlcat.max_lag_ms']}`);
  await c.end();
  console.log(`backends: ${pids.size}`);
}

main().catch((e) => {
  console.error(`${e.code || ''} ${e.message}`);
  process.exit(1);
});
