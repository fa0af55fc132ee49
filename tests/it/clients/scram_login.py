"""Logs in to `conninfo` (argv[1], libpq keywords) with psycopg 3 (libpq's
SCRAM) and asyncpg (its own SCRAM), asks each for current_user and prints
{"psycopg": user, "asyncpg": user} as JSON."""

import asyncio
import json
import sys

import asyncpg
import psycopg

conninfo = sys.argv[1]
with psycopg.connect(conninfo) as conn:
    via_psycopg = conn.execute("select current_user::text").fetchone()[0]

kw = dict(part.split("=", 1) for part in conninfo.split())


async def main():
    conn = await asyncpg.connect(
        host=kw["host"],
        port=int(kw["port"]),
        user=kw["user"],
        password=kw["password"],
        database=kw["dbname"],
        ssl=False,
    )
    try:
        return await conn.fetchval("select current_user::text")
    finally:
        await conn.close()


print(json.dumps({"psycopg": via_psycopg, "asyncpg": asyncio.run(main())}))
