"""psycopg 3 (libpq underneath) runs a long statement on `conninfo`
(argv[1]) and reports, as JSON, every result libpq gave for it: the
SQLSTATE of each error. Postgres ends a session with one error; a second
one makes psycopg's own BEGIN/COMMIT fail with "received 2 results".
Prints "running" first, once the statement is sent."""

import json
import sys

import psycopg
from psycopg import pq

conn = psycopg.connect(sys.argv[1], autocommit=True)
pgconn = conn.pgconn
pgconn.send_query(b"select pg_sleep(20)")
pgconn.flush()
print("running", flush=True)
errors = []
while True:
    # Blocks until the next result or the end.
    res = pgconn.get_result()
    if res is None:
        break
    if res.status == pq.ExecStatus.FATAL_ERROR:
        errors.append((res.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode())
    else:
        errors.append(res.status.name)
print(json.dumps({"results": errors}), flush=True)
