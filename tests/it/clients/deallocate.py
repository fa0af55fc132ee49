"""SQL DEALLOCATE of protocol-level prepared statements, as pgx v4 (cache
eviction) and PHP PDO (statement objects dropped) send it, driven with
psycopg 3. Prints one JSON list of what the client saw; the Rust test runs
it directly against Postgres and through pgmlcat and compares.

Usage: deallocate.py CONNINFO
"""
import json
import sys

import psycopg

out = []
with psycopg.connect(sys.argv[1], autocommit=True) as c:
    c.execute("delete from dd")

    cur = c.execute("select %s::int + 1", [1], prepare=True)
    out.append(cur.fetchone()[0])
    c.execute("DEALLOCATE _pg3_0")
    try:
        c.execute("select %s::int + 1", [1], prepare=True)
        out.append("still there")
    except psycopg.Error as e:
        out.append(e.sqlstate)

    # Inside a transaction a DEALLOCATE must not abort it (psycopg names
    # what it prepares _pg3_<n>, counting per connection).
    with c.transaction():
        c.execute("insert into dd values (%s)", [7], prepare=True)
        c.execute('DEALLOCATE PREPARE "_pg3_1"')
        c.execute("insert into dd values (8)")
    out.append(c.execute("select count(*) from dd").fetchone()[0])

    # DEALLOCATE ALL outside a transaction, then a fresh prepare works.
    c.execute("DEALLOCATE ALL")
    cur = c.execute("select %s::int * 3", [5], prepare=True)
    out.append(cur.fetchone()[0])
print(json.dumps(out))
