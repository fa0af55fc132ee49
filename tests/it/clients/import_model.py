"""pgml.import_model with the model as psycopg 3 sends it: bytes as a
binary bytea parameter (%b), bytes as a text bytea parameter (%t: the
`\\x...` hex form, type bytea declared), and str as a text parameter (%s).

Reads {"model": text, "task": ..., "format": ..., "project": prefix} on
stdin; imports the model once per form into project <prefix>_<form>;
prints a JSON list with one entry per form:
  {"form": f, "row": [project, task, algorithm, model_id]}  or
  {"form": f, "sqlstate": code, "error": message}
and checks after each that the connection still answers SELECT 1.

Usage: import_model.py CONNINFO < request.json
"""
import json
import sys

import psycopg

req = json.load(sys.stdin)
model = req["model"]
conn = psycopg.connect(sys.argv[1], autocommit=True)

out = []
for form, placeholder, value in [
    ("bytes_binary", "%b", model.encode()),
    ("bytes_text", "%t", model.encode()),
    ("str", "%s", model),
]:
    project = f"{req['project']}_{form}"
    sql = f"SELECT * FROM pgml.import_model(%s, %s, %s, {placeholder})"
    try:
        row = conn.execute(sql, [project, req["task"], req["format"], value]).fetchone()
        out.append({"form": form, "row": [row[0], row[1], row[2], int(row[3])]})
    except psycopg.Error as e:
        out.append({"form": form, "sqlstate": e.sqlstate, "error": str(e)})
    assert conn.execute("SELECT 1").fetchone()[0] == 1
print(json.dumps(out))
