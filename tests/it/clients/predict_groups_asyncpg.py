"""pgml.predict(..., group => ...) with ROW features and parameters as
asyncpg sends them: it prepares the statement, reads the parameter types
the server infers from the Describe, and sends binary values of those
types. Reads the rows of `sales` and predicts every third one (and every
row of store 999, which has no model): with an explicitly prepared
statement, and with conn.fetchval through asyncpg's statement cache;
prints {scenario: [[store_id, x1, x2, x3, prediction or null], ...]}.

Usage: predict_groups_asyncpg.py CONNINFO (libpq key=value form)
"""
import asyncio
import json
import sys

SQL = ("SELECT pgml.predict('stores', ROW($1::float8, $2::float8, $3::float8), "
       "group => $4::int)")


async def main():
    import asyncpg

    kv = dict(item.split("=", 1) for item in sys.argv[1].split())
    conn = await asyncpg.connect(
        host=kv["host"], port=int(kv["port"]), user=kv["user"],
        password=kv["password"], database=kv["dbname"],
    )
    rows = await conn.fetch("SELECT store_id, x1, x2, x3 FROM sales ORDER BY store_id, x1, x2, x3")
    rows = [tuple(r.values()) for i, r in enumerate(rows) if i % 3 == 0 or r[0] == 999]
    out = {"prepared": [], "cached": []}
    statement = await conn.prepare(SQL)
    for store, x1, x2, x3 in rows:
        out["prepared"].append([store, x1, x2, x3, await statement.fetchval(x1, x2, x3, store)])
    for store, x1, x2, x3 in rows:
        out["cached"].append([store, x1, x2, x3, await conn.fetchval(SQL, x1, x2, x3, store)])
    await conn.close()
    print(json.dumps(out))


asyncio.run(main())
