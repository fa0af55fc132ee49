"""pgml.predict(..., group => ...) with ROW features and parameters as
psycopg 3 sends them: binary values of declared types, a server-side
prepared statement (prepare=True) with text values, and both at once. Reads
the rows of `sales` and predicts every third one (and every row of store
999, which has no model), one statement per row; prints
{scenario: [[store_id, x1, x2, x3, prediction or null], ...]}.

Usage: predict_groups.py CONNINFO
"""
import json
import sys

import psycopg

SQL = ("SELECT pgml.predict('stores', ROW(%s::float8, %s::float8, %s::float8), "
       "group => %s::int)")

conn = psycopg.connect(sys.argv[1], autocommit=True)
rows = conn.execute("SELECT store_id, x1, x2, x3 FROM sales ORDER BY store_id, x1, x2, x3").fetchall()
rows = [r for i, r in enumerate(rows) if i % 3 == 0 or r[0] == 999]

out = {}
for name, options in (
    ("binary", {"binary": True}),
    ("prepared", {"prepare": True}),
    ("prepared_binary", {"prepare": True, "binary": True}),
):
    got = []
    for store, x1, x2, x3 in rows:
        (p,) = conn.execute(SQL, (x1, x2, x3, store), **options).fetchone()
        got.append([store, x1, x2, x3, p])
    out[name] = got
conn.close()
print(json.dumps(out))
