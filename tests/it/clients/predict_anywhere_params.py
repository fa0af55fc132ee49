"""pgml.predict outside the SELECT list with parameters as psycopg 3 sends
them (text, and binary with declared types): thresholds in WHERE, LIMIT,
CASE, FILTER, the model name and values inside the features. Each query
runs through pgmlcat and directly on Postgres with `pgml.` replaced by
`pgml_ref.` (reference functions holding the fast path's predictions);
prints a JSON list of [through pgmlcat, direct] pairs.

Usage: predict_anywhere_params.py PROXY_CONNINFO DIRECT_CONNINFO
"""
import json
import sys

import psycopg

proxy = psycopg.connect(sys.argv[1], autocommit=True)
direct = psycopg.connect(sys.argv[2], autocommit=True)

F3 = "ARRAY[sepal_length, sepal_width, petal_length]"
F4 = "ARRAY[sepal_length, sepal_width, petal_length, petal_width]"
W = f"pgml.predict('width', {F3})"
CASES = [
    (f"SELECT id FROM flowers WHERE {W} > %s ORDER BY id", [1.5]),
    (f"SELECT id, {W} FROM flowers ORDER BY {W} DESC, id LIMIT %s", [5]),
    (f"SELECT id, CASE WHEN {W} > %s THEN %s ELSE 'narrow' END FROM flowers ORDER BY id", [1.5, "wide"]),
    (f"SELECT target, count(*) FILTER (WHERE pgml.predict('species', {F4}) = %s) FROM flowers GROUP BY target ORDER BY 1", [1]),
    ("SELECT id, pgml.predict('width', ARRAY[sepal_length + %s, sepal_width, petal_length]::real[]) * 2 "
     "FROM flowers WHERE id < %s ORDER BY id", [1, 10]),
    (f"SELECT avg(pgml.predict(%s, {F3})) FROM flowers WHERE {W} < %s", ["width", 1.0]),
]


def rows(conn, sql, args, binary):
    return [list(r) for r in conn.execute(sql, args, binary=binary).fetchall()]


out = []
for sql, args in CASES:
    for binary in (False, True):
        out.append([
            rows(proxy, sql, args, binary),
            rows(direct, sql.replace("pgml.", "pgml_ref."), args, binary),
        ])
print(json.dumps(out))
