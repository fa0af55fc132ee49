"""psycopg 3 (libpq underneath) on `conninfo` (argv[1]) while Postgres
stops, and reports, as JSON, every result libpq gave: the SQLSTATE of each
error. Postgres ends a session with one error; a second one makes
psycopg's own BEGIN/COMMIT fail with "received 2 results".

argv[2] is the client's state when the server stops: "running" (a long
statement in flight) or "idle_in_transaction" (a transaction open, its next
statement sent 3 s later). Prints "ready" once in that state."""

import json
import sys
import time

import psycopg
from psycopg import pq

mode = sys.argv[2] if len(sys.argv) > 2 else "running"
conn = psycopg.connect(sys.argv[1], autocommit=True)
pgconn = conn.pgconn


def results():
    out = []
    while True:
        # Blocks until the next result or the end.
        res = pgconn.get_result()
        if res is None:
            return out
        if res.status == pq.ExecStatus.FATAL_ERROR:
            out.append((res.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode())
        else:
            out.append(pq.ExecStatus(res.status).name)


if mode == "idle_in_transaction":
    pgconn.send_query(b"begin; select 1")
    results()
    print("ready", flush=True)
    time.sleep(3)
    pgconn.send_query(b"select 2")
else:
    pgconn.send_query(b"select pg_sleep(20)")
    pgconn.flush()
    print("ready", flush=True)
print(json.dumps({"results": results()}), flush=True)
