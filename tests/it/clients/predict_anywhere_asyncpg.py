"""pgml.predict outside the SELECT list with parameters as asyncpg sends
them: it prepares each statement (with and without its statement cache),
reads the parameter types the server infers from the Describe, and sends
binary values of those types. Each query runs through pgmlcat and directly
on Postgres with `pgml.` replaced by `pgml_ref.`; prints a JSON list of
[through pgmlcat, direct] pairs.

Usage: predict_anywhere_asyncpg.py PROXY_CONNINFO DIRECT_CONNINFO
"""
import asyncio
import json
import sys

F3 = "ARRAY[sepal_length, sepal_width, petal_length]"
W = f"pgml.predict('width', {F3})"
CASES = [
    (f"SELECT id FROM flowers WHERE {W} > $1 ORDER BY id", [1.5]),
    (f"SELECT id, {W} FROM flowers ORDER BY {W} DESC, id LIMIT $1", [5]),
    (f"SELECT id, CASE WHEN {W} > $1 THEN $2 ELSE 'narrow' END FROM flowers ORDER BY id", [1.5, "wide"]),
    (f"SELECT target, avg({W}) FROM flowers WHERE id > $1 GROUP BY target ORDER BY 1", [10]),
]


async def connect(conninfo, cache):
    import asyncpg

    kv = dict(item.split("=", 1) for item in conninfo.split())
    return await asyncpg.connect(
        host=kv["host"], port=int(kv["port"]), user=kv["user"],
        password=kv["password"], database=kv["dbname"], statement_cache_size=cache,
    )


async def main():
    out = []
    for cache in (0, 100):
        proxy = await connect(sys.argv[1], cache)
        direct = await connect(sys.argv[2], cache)
        for sql, args in CASES:
            # Twice each: the second execution of a cached statement too.
            for _ in range(2):
                through = [list(r.values()) for r in await proxy.fetch(sql, *args)]
                ref = [list(r.values()) for r in await direct.fetch(sql.replace("pgml.", "pgml_ref."), *args)]
                out.append([through, ref])
        await proxy.close()
        await direct.close()
    print(json.dumps(out))


asyncio.run(main())
