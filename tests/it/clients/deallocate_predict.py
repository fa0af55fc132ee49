"""SQL DEALLOCATE of prepared prediction statements (the fast path's and
the general method's), as pgx and PDO evict statements: asyncpg prepares
them under names, and the script DEALLOCATEs by name, again by
name (an error), then ALL. Prints one line per step: the value, or the
SQLSTATE of the error.

Usage: deallocate_predict.py CONNINFO SCHEMA   (SCHEMA: pgml or pgml_ref)
"""
import asyncio
import sys

F3 = "ARRAY[sepal_length, sepal_width, petal_length]"


async def main():
    import asyncpg

    kv = dict(item.split("=", 1) for item in sys.argv[1].split())
    schema = sys.argv[2]
    conn = await asyncpg.connect(
        host=kv["host"], port=int(kv["port"]), user=kv["user"],
        password=kv["password"], database=kv["dbname"], statement_cache_size=0,
    )

    async def step(what):
        try:
            print(await what)
        except asyncpg.PostgresError as e:
            print(e.sqlstate)

    stream = await conn.prepare(
        f"SELECT {schema}.predict('width', {F3}) FROM flowers WHERE id = $1", name="pred_stream")
    general = await conn.prepare(
        f"SELECT {schema}.predict('width', {F3}) * 2 > 0 FROM flowers WHERE id = $1", name="pred_general")
    await step(general.fetchval(3))
    await step(conn.execute(f"DEALLOCATE {general.get_name()}"))
    await step(conn.execute(f"DEALLOCATE {general.get_name()}"))
    await step(conn.execute("DEALLOCATE ALL"))
    await step(stream.fetchval(3))
    await conn.close()


asyncio.run(main())
