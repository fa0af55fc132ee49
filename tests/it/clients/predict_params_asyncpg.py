"""pgml.predict with parameters as asyncpg sends them: it prepares each
statement, reads the parameter types the server infers from the Describe,
and sends binary values of those types. Each query runs with the values as
parameters and as constants; prints a JSON list of [with parameters, with
constants] pairs.

Usage: predict_params_asyncpg.py CONNINFO (libpq key=value form)
"""
import asyncio
import json
import sys


async def main():
    import asyncpg

    kv = dict(item.split("=", 1) for item in sys.argv[1].split())
    conn = await asyncpg.connect(
        host=kv["host"], port=int(kv["port"]), user=kv["user"],
        password=kv["password"], database=kv["dbname"], statement_cache_size=0,
    )
    features = [5.1, 3.5, 1.4, 0.2]

    async def rows(sql, *args):
        return [list(r.values()) for r in await conn.fetch(sql, *args)]

    out = []
    for cast in ("::real[]", "::float8[]"):
        params = f"SELECT pgml.predict('species', ARRAY[$1, $2, $3, $4]{cast})"
        consts = f"SELECT pgml.predict('species', ARRAY[5.1, 3.5, 1.4, 0.2]{cast})"
        out.append([await rows(params, *features), await rows(consts)])
    where = ("SELECT id, pgml.predict('species', ARRAY[sepal_length, sepal_width, petal_length, "
             "petal_width]) FROM flowers WHERE sepal_length > {} ORDER BY id LIMIT 3")
    out.append([await rows(where.format("$1::float8"), 5.0), await rows(where.format("5.0"))])
    await conn.close()
    print(json.dumps(out))


asyncio.run(main())
