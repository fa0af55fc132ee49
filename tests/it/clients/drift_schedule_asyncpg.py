"""pgml.drift, pgml.schedule and pgml.unschedule through asyncpg: it
prepares each statement, reads the parameter and column types from the
Describe and sends and reads every value in binary. The drift rows for a
relation and for NULL (the default); a schedule with a datetime.timedelta
interval (and NULL relation and condition); unschedule.

Reads {"project": ..., "relation": ...} as JSON on stdin; prints JSON like
drift_schedule.py's (a call that fails gives {"error": ...}).

Usage: drift_schedule_asyncpg.py CONNINFO (libpq key=value form)
"""
import asyncio
import datetime
import json
import sys


async def main():
    import asyncpg

    req = json.load(sys.stdin)
    project, relation = req["project"], req["relation"]
    kv = dict(item.split("=", 1) for item in sys.argv[1].split())
    conn = await asyncpg.connect(
        host=kv["host"], port=int(kv["port"]), user=kv["user"],
        password=kv["password"], database=kv["dbname"], statement_cache_size=0,
    )

    async def attempt(coro):
        """coro's answer, or {"error": ...} (the connection stays usable)."""
        try:
            return await coro
        except Exception as e:  # the server's errors and asyncpg's own (encoding)
            return {"error": f"{type(e).__name__} {getattr(e, 'sqlstate', '')}: {e}"}

    async def fetch(sql, *args):
        return [list(r.values()) for r in await conn.fetch(sql, *args)]

    async def rows(sql, *args):
        return await attempt(fetch(sql, *args))

    async def schedule_row(sql, *args):
        return {"sql": sql, **await attempt(schedule_fields(sql, *args))}

    async def schedule_fields(sql, *args):
        r = await conn.fetchrow(sql, *args)
        now = datetime.datetime.now(datetime.timezone.utc)
        next_run = r["next_run"]
        return {
            "project": r["project"],
            "every_type": type(r["every"]).__name__,
            "every_is_30s": r["every"] == datetime.timedelta(seconds=30),
            "every": str(r["every"]),
            "relation": r["relation"],
            "condition": r["condition"],
            "next_run_type": type(next_run).__name__,
            "next_run": str(next_run),
            "next_run_aware": isinstance(next_run, datetime.datetime) and next_run.tzinfo is not None,
            "next_run_within_a_minute": isinstance(next_run, datetime.datetime)
            and next_run.tzinfo is not None
            and abs((next_run - now).total_seconds()) < 60,
        }

    out = {
        "drift": {"prepared": await rows("SELECT * FROM pgml.drift($1, $2)", project, relation)},
        "default": {"prepared": await rows("SELECT * FROM pgml.drift($1, $2)", project, None)},
    }
    every = datetime.timedelta(seconds=30)
    out["schedule"] = [
        await schedule_row("SELECT * FROM pgml.schedule($1, $2)", project, every),
        await schedule_row("SELECT * FROM pgml.schedule($1, $2, $3, $4)", project, every, relation, None),
    ]
    out["unschedule"] = await rows("SELECT * FROM pgml.unschedule($1)", project)
    out["unschedule_again"] = await rows("SELECT * FROM pgml.unschedule($1)", project)
    await conn.close()
    print(json.dumps(out))


asyncio.run(main())
