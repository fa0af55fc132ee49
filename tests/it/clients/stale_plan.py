"""A prepared statement whose result type DDL changed, as pgJDBC meets it:
the next execution fails with 0A000 "cached plan must not change result
type", the driver prepares the same text again and goes on. Both servers of
a pool of 2 hold the statement when the DDL runs (a second connection keeps
one busy in a transaction). Prints one JSON list of what the client saw.

Usage: stale_plan.py CONNINFO
"""
import json
import sys

import psycopg

Q = "select * from sp order by a"
out = []
info = sys.argv[1]
with psycopg.connect(info, autocommit=True) as c, psycopg.connect(info, autocommit=True) as other:
    c.execute("drop table if exists sp")
    c.execute("create table sp(a int)")
    c.execute("insert into sp values (1)")

    def rounds(n):
        for i in range(n):
            if i % 2 == 0:
                other.execute("begin")
                other.execute("select 1")
            out.append(c.execute(Q, prepare=True).fetchall())
            if i % 2 == 0:
                other.execute("commit")

    rounds(4)
    c.execute("alter table sp add column b int default 5")
    try:
        c.execute(Q, prepare=True).fetchall()
        out.append("no error")
    except psycopg.Error as e:
        out.append(e.sqlstate)
    # Prepare the same text again, as pgJDBC does after that error
    # (psycopg forgets what it prepared on DEALLOCATE ALL).
    c.execute("DEALLOCATE ALL")
    rounds(6)
print(json.dumps(out))
