// pgml.drift, pgml.schedule and pgml.unschedule through node-postgres: its
// parameters go as text with no declared type (the server infers them), in
// an unnamed statement and in a named one it prepares once and binds
// again; results come as text and are parsed by node-postgres's type
// parsers (real → number, bool → boolean, interval → an interval object,
// timestamptz → Date). The drift rows for a relation and for NULL (the
// default); a schedule with the interval as text (and NULL relation and
// condition); unschedule.
//
// Reads {"project": ..., "relation": ...} as JSON on stdin; prints JSON
// shaped like drift_schedule.py's (a call that fails gives {"error": ...}).
//
// Usage: node drift_schedule.js CONNINFO (libpq key=value form)
'use strict';
const { Client } = require('pg');

// libpq's key=value form as node-postgres's options.
function options(conninfo) {
  const kv = Object.fromEntries(conninfo.split(/\s+/).filter(Boolean).map((p) => p.split('=', 2)));
  return { host: kv.host, port: Number(kv.port), user: kv.user, password: kv.password, database: kv.dbname };
}

async function main() {
  const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
  const { project, relation } = input;
  const c = new Client(options(process.argv[2]));
  await c.connect();

  // f()'s answer, or {error} (the connection stays usable).
  const attempt = async (f) => {
    try {
      return await f();
    } catch (e) {
      return { error: `${e.code || ''}: ${e.message}` };
    }
  };
  const rows = (query) => attempt(async () => (await c.query({ ...query, rowMode: 'array' })).rows);
  const drift = (rel) => ({
    unnamed: rows({ text: 'SELECT * FROM pgml.drift($1, $2)', values: [project, rel] }),
    named: rows({ name: 'drift', text: 'SELECT * FROM pgml.drift($1, $2)', values: [project, rel] }),
  });
  const settle = async (forms) => {
    const out = {};
    for (const [k, v] of Object.entries(forms)) out[k] = await v;
    return out;
  };
  const out = {};
  out.drift = await settle(drift(relation));
  out.default = await settle(drift(null));

  const scheduleRow = async (text, values) => ({
    sql: text,
    ...(await attempt(async () => {
      const r = await c.query(text, values);
      if (r.rows.length !== 1) throw new Error(`${r.rows.length} rows`);
      const { project: p, every, relation: rel, condition, next_run: next } = r.rows[0];
      const fields = Object.entries(every || {}).filter(([, v]) => v);
      return {
        project: p,
        every_type: every && every.constructor ? every.constructor.name : typeof every,
        every_is_30s: fields.length === 1 && fields[0][0] === 'seconds' && fields[0][1] === 30,
        every: every && every.toPostgres ? every.toPostgres() : String(every),
        relation: rel,
        condition,
        next_run_type: next && next.constructor ? next.constructor.name : typeof next,
        next_run_within_a_minute: next instanceof Date && Math.abs(next - Date.now()) < 60000,
      };
    })),
  });
  out.schedule = [
    await scheduleRow('SELECT * FROM pgml.schedule($1, $2)', [project, '30 seconds']),
    await scheduleRow('SELECT * FROM pgml.schedule($1, $2, $3, $4)', [project, '00:00:30', relation, null]),
  ];
  out.unschedule = await rows({ text: 'SELECT * FROM pgml.unschedule($1)', values: [project] });
  out.unschedule_again = await rows({ text: 'SELECT * FROM pgml.unschedule($1)', values: [project] });
  await c.end();
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(`${e.code || ''} ${e.message}`);
  process.exit(1);
});
