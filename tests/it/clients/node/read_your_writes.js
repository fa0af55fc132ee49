// node-postgres's reads right after its own writes, for pgmlcat's
// read-your-writes routing: the same pairs as ReadYourWrites.java. A writer
// inserts N ids in turn with a named prepared statement (node-postgres
// parses it once per connection and binds it after), every other one in a
// transaction of its own (BEGIN / COMMIT as simple queries, as
// node-postgres applications send them), and reads each id back at once
// with a named statement that also says whether a replica answered. A
// bystander that never writes reads pg_is_in_recovery() after every 4th
// pair. Twice every 20 pairs (before an autocommit write and before a
// transaction) the writer first waits until its reads go back to a
// replica, so that a write the router missed cannot hide behind the
// writer's previous, still unreplayed one.
//
// Prints "stale=S writer_on_replica=W bystander_on_primary=P
// bystander_reads=R stale_ids=..." ("tx" after ids written in a
// transaction). Any driver error ends it non-zero.
//
// Usage: node read_your_writes.js N FIRST_ID URL [READ_URL]
// With READ_URL the writer's reads and the bystander go there: directly,
// writes on the primary and reads on a replica.
'use strict';
const { Client } = require('pg');

async function connect(url) {
  const c = new Client({ connectionString: url });
  await c.connect();
  return c;
}

// The rows with `id` the reader finds, and whether a replica answered.
async function readBack(reader, id) {
  const read = await reader.query({
    name: 'read',
    text: 'select count(*)::int as n, pg_is_in_recovery() as replica from t where id = $1',
    values: [id],
  });
  if (read.rows.length !== 1) throw new Error(`no row reading back ${id}`);
  return read.rows[0];
}

// Waits until a replica answers the writer's reads again.
async function settle(reader, lastId) {
  const deadline = Date.now() + 5000;
  while (!(await readBack(reader, lastId)).replica) {
    if (Date.now() > deadline) {
      throw new Error(`the writer's reads never went back to a replica after id ${lastId}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function main() {
  const [n, first] = [Number(process.argv[2]), Number(process.argv[3])];
  const url = process.argv[4];
  const readUrl = process.argv[5];
  const writer = await connect(url);
  const reader = readUrl ? await connect(readUrl) : writer;
  const bystander = await connect(readUrl || url);
  let [stale, writerOnReplica, bystanderOnPrimary, bystanderReads] = [0, 0, 0, 0];
  const staleIds = [];
  for (let i = 0; i < n; i++) {
    const id = first + i;
    const inTx = i % 2 === 1;
    if (i % 20 === 0 || i % 20 === 11) await settle(reader, id - 1);
    if (inTx) await writer.query('begin');
    const ins = await writer.query({ name: 'ins', text: 'insert into t values ($1)', values: [id] });
    if (ins.rowCount !== 1) throw new Error(`insert of ${id} inserted ${ins.rowCount} rows`);
    if (inTx) await writer.query('commit');
    const read = await readBack(reader, id);
    if (read.n === 0) {
      stale++;
      staleIds.push(`${id}${inTx ? 'tx' : ''}`);
    }
    writerOnReplica += read.replica ? 1 : 0;
    if (i % 4 === 3) {
      const look = await bystander.query({ name: 'look', text: 'select pg_is_in_recovery() as replica' });
      bystanderOnPrimary += look.rows[0].replica ? 0 : 1;
      bystanderReads++;
    }
  }
  for (const c of new Set([writer, reader, bystander])) await c.end();
  console.log(`stale=${stale} writer_on_replica=${writerOnReplica} ` +
    `bystander_on_primary=${bystanderOnPrimary} bystander_reads=${bystanderReads} ` +
    `stale_ids=${staleIds.join(',')}`);
}

main().catch((e) => {
  console.error(`${e.code || ''} ${e.message}`);
  process.exit(1);
});
