// rollback_atomic.py's transaction with node-postgres: BEGIN as a simple
// query, two parameterised INSERTs (each one Parse/Bind/Describe/Execute/
// Sync batch), a read of the transaction id and the rows just inserted,
// ROLLBACK. Prints {"node-postgres": {"xid": bool, "own_rows": n}}.
//
// Usage: node rollback_atomic.js CONNINFO (libpq key=value form), with
// {"first": id} as JSON on stdin
'use strict';
const { Client } = require('pg');

async function main() {
  const { first } = JSON.parse(require('fs').readFileSync(0, 'utf8'));
  const kv = Object.fromEntries(process.argv[2].split(/\s+/).filter(Boolean).map((p) => p.split('=', 2)));
  const c = new Client({ host: kv.host, port: Number(kv.port), user: kv.user, password: kv.password, database: kv.dbname });
  await c.connect();
  const ids = [first, first + 1];
  await c.query('BEGIN');
  for (const id of ids) await c.query('insert into t values ($1)', [id]);
  const r = await c.query(
    'select pg_current_xact_id_if_assigned() is not null as xid, (select count(*)::int from t where id = any($1)) as own_rows',
    [ids],
  );
  await c.query('ROLLBACK');
  await c.end();
  console.log(JSON.stringify({ 'node-postgres': r.rows[0] }));
}

main().catch((e) => {
  console.error(`${e.code || ''} ${e.message}`);
  process.exit(1);
});
