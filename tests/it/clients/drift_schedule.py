"""pgml.drift, pgml.schedule and pgml.unschedule through psycopg 3: the
drift rows with the parameters as text (%s), as binary with their types
declared (%b) and read by a binary cursor; a NULL relation (the default);
a schedule whose interval is a datetime.timedelta sent in binary, read back
in text and in binary; unschedule.

Reads {"project": ..., "relation": ...} as JSON on stdin; prints JSON:
{"drift": {form: rows}, "default": {form: rows}, "schedule": [...],
"unschedule": [...]}, rows as lists of [feature, statistic, value,
threshold, drifted]; a call that fails gives {"error": ...} instead.

Usage: drift_schedule.py CONNINFO
"""
import datetime
import json
import sys

import psycopg

req = json.load(sys.stdin)
project, relation = req["project"], req["relation"]
conn = psycopg.connect(sys.argv[1], autocommit=True)


def attempt(f):
    """f()'s answer, or {"error": ...} (the connection stays usable)."""
    try:
        return f()
    except psycopg.Error as e:
        return {"error": f"{type(e).__name__} {e.sqlstate}: {e}"}


def rows(sql, args, binary=False):
    return attempt(lambda: [list(r) for r in conn.execute(sql, args, binary=binary).fetchall()])


def drift_forms(rel):
    return {
        "text": rows("SELECT * FROM pgml.drift(%s, %s)", [project, rel]),
        "binary_params": rows("SELECT * FROM pgml.drift(%b, %b)", [project, rel]),
        "binary_cursor": rows("SELECT * FROM pgml.drift(%s, %s)", [project, rel], binary=True),
        "binary_both": rows("SELECT * FROM pgml.drift(%b, %b)", [project, rel], binary=True),
    }


def schedule_row(sql, args, binary):
    return {"sql": sql, "binary": binary, **attempt(lambda: schedule_fields(sql, args, binary))}


def schedule_fields(sql, args, binary):
    r = conn.execute(sql, args, binary=binary).fetchall()
    assert len(r) == 1, r
    proj, every, rel, cond, next_run = r[0]
    now = datetime.datetime.now(datetime.timezone.utc)
    return {
        "project": proj,
        "every_type": type(every).__name__,
        "every_is_30s": every == datetime.timedelta(seconds=30),
        "every": str(every),
        "relation": rel,
        "condition": cond,
        "next_run_type": type(next_run).__name__,
        "next_run": str(next_run),
        "next_run_aware": isinstance(next_run, datetime.datetime) and next_run.tzinfo is not None,
        "next_run_within_a_minute": isinstance(next_run, datetime.datetime)
        and next_run.tzinfo is not None
        and abs((next_run - now).total_seconds()) < 60,
    }


out = {"drift": drift_forms(relation), "default": drift_forms(None)}
every = datetime.timedelta(seconds=30)
out["schedule"] = [
    # The interval as text, read back in text and in binary.
    schedule_row("SELECT * FROM pgml.schedule(%s, %s)", [project, "30 seconds"], False),
    schedule_row("SELECT * FROM pgml.schedule(%s, %s)", [project, "30 seconds"], True),
    # A timedelta: psycopg sends it in binary, typed interval.
    schedule_row("SELECT * FROM pgml.schedule(%s, %b::interval)", [project, every], False),
    schedule_row("SELECT * FROM pgml.schedule(%s, %b::interval)", [project, every], True),
    schedule_row("SELECT * FROM pgml.schedule(%b, %b)", [project, every], True),
    schedule_row("SELECT * FROM pgml.schedule(%s, %s, %s, %s)", [project, every, relation, None], False),
]
out["unschedule"] = rows("SELECT * FROM pgml.unschedule(%s)", [project])
out["unschedule_again"] = rows("SELECT * FROM pgml.unschedule(%b)", [project], binary=True)
conn.close()
print(json.dumps(out))
