"""pgml.predict with parameters as psycopg 3 sends them: numbers in binary
with their types declared (float8, int8), or text with %t, in the feature
array with and without a cast, and in a WHERE. Each query runs twice: with
the values as parameters and with the same values written as constants;
prints a JSON list of [with parameters, with constants] pairs.

Usage: predict_params.py CONNINFO
"""
import json
import sys

import psycopg

features = [5.1, 3.5, 1.4, 0.2]
conn = psycopg.connect(sys.argv[1], autocommit=True)


def rows(sql, args=None, binary=False):
    return [list(r) for r in conn.execute(sql, args, binary=binary).fetchall()]


def literal(values):
    return ", ".join(repr(v) for v in values)


out = []
for cast in ("::real[]", "", "::float8[]"):
    params = f"SELECT pgml.predict('species', ARRAY[%s, %s, %s, %s]{cast})"
    consts = f"SELECT pgml.predict('species', ARRAY[{literal(features)}]{cast})"
    out.append([rows(params, features), rows(consts)])
    out.append([rows(params.replace("%s", "%t"), features), rows(consts)])
    out.append([rows(params, features, binary=True), rows(consts, binary=True)])
# A regression, an int8 parameter among floats, and a threshold in WHERE.
out.append([
    rows("SELECT pgml.predict('width', ARRAY[%s, %s, %s]::real[])", [5, 3.5, 1.4]),
    rows("SELECT pgml.predict('width', ARRAY[5, 3.5, 1.4]::real[])"),
])
where = ("SELECT id, pgml.predict('species', ARRAY[sepal_length, sepal_width, petal_length, "
         "petal_width]) FROM flowers WHERE sepal_length > {} ORDER BY id LIMIT 3")
out.append([rows(where.format("%s"), [5.0]), rows(where.format("5.0"))])
print(json.dumps(out))
