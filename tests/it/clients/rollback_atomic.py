"""A transaction's statements, sent the way psycopg 3 and asyncpg send
them (parameterised: Parse/Bind/Execute batches; psycopg also in pipeline
mode, batches sent before their answers arrive), run inside the
transaction and are undone by its ROLLBACK.

For each driver: BEGIN (psycopg's implicit one, asyncpg's transaction()),
two INSERTs with parameters, then a read of the transaction id and of the
rows just inserted, then ROLLBACK. Prints JSON {driver: {"xid": bool (the
statements ran in a transaction that wrote), "own_rows": n}}; the caller
counts what is left.

Usage: rollback_atomic.py CONNINFO (libpq key=value form), with
{"first": id} as JSON on stdin
"""
import asyncio
import json
import sys

conninfo, first = sys.argv[1], json.load(sys.stdin)["first"]
CHECK = "select pg_current_xact_id_if_assigned() is not null, (select count(*) from t where id = any(%s))"


def with_psycopg(ids, pipeline):
    import psycopg

    with psycopg.connect(conninfo) as conn:  # not autocommit: BEGIN first
        if pipeline:
            with conn.pipeline():
                conn.execute("insert into t values (%s)", [ids[0]])
                conn.execute("insert into t values (%s)", [ids[1]])
                cur = conn.execute(CHECK, [ids])
            row = cur.fetchone()
        else:
            conn.execute("insert into t values (%s)", [ids[0]])
            conn.execute("insert into t values (%s)", [ids[1]])
            row = conn.execute(CHECK, [ids]).fetchone()
        conn.rollback()
    return {"xid": row[0], "own_rows": row[1]}


async def with_asyncpg(ids):
    import asyncpg

    kv = dict(part.split("=", 1) for part in conninfo.split())
    conn = await asyncpg.connect(host=kv["host"], port=int(kv["port"]), user=kv["user"],
                                 password=kv["password"], database=kv["dbname"], ssl=False)
    tx = conn.transaction()
    await tx.start()
    await conn.execute("insert into t values ($1)", ids[0])
    await conn.execute("insert into t values ($1)", ids[1])
    row = await conn.fetchrow(CHECK.replace("%s", "$1::int[]"), ids)
    await tx.rollback()
    await conn.close()
    return {"xid": row[0], "own_rows": row[1]}


print(json.dumps({
    "psycopg": with_psycopg([first, first + 1], False),
    "psycopg_pipeline": with_psycopg([first + 2, first + 3], True),
    "asyncpg": asyncio.run(with_asyncpg([first + 4, first + 5])),
}))
