"""The Python model server of benches/ml_predict.sh: the usual way to serve
a model without in-database ML. A Flask app (run under gunicorn, several
worker processes with threads) that, per request, fetches the row's features
from Postgres with psycopg (one connection per worker thread, straight to
Postgres, as PostgresML's published comparison did) and predicts with a
LightGBM Booster.

The booster is the one pgmlcat trained: the deployed model of project
$BENCH_PROJECT, read once per worker process from pgml.files (path 'model',
LightGBM's model string as bytea).

    GET /predict/<id>  ->  {"id": <id>, "prediction": <float>}

Environment: BENCH_DSN (libpq connection string), BENCH_PROJECT (default p).
"""

import os
import threading

import lightgbm as lgb
import numpy as np
import psycopg
from flask import Flask, jsonify

DSN = os.environ["BENCH_DSN"]
PROJECT = os.environ.get("BENCH_PROJECT", "p")
FEATURES = ", ".join(f"f{i}" for i in range(1, 11))
QUERY = f"SELECT {FEATURES} FROM t WHERE id = %s"


def load_booster():
    with psycopg.connect(DSN) as conn:
        parts = conn.execute(
            """SELECT f.data FROM pgml.deployed_models d
               JOIN pgml.files f ON f.model_id = d.id AND f.path = 'model'
               WHERE d.name = %s ORDER BY f.part""",
            (PROJECT,),
        ).fetchall()
    if not parts:
        raise SystemExit(f"no deployed model for project {PROJECT!r}")
    text = b"".join(bytes(p[0]) for p in parts).decode()
    return lgb.Booster(model_str=text)


BOOSTER = load_booster()
_local = threading.local()
app = Flask(__name__)


def connection():
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = psycopg.connect(DSN, autocommit=True)
        _local.conn = conn
    return conn


@app.get("/predict/<int:row_id>")
def predict(row_id):
    row = connection().execute(QUERY, (row_id,)).fetchone()
    if row is None:
        return jsonify({"error": "no such id"}), 404
    x = np.asarray([row], dtype=np.float64)
    y = BOOSTER.predict(x, num_threads=1)
    return jsonify({"id": row_id, "prediction": float(y[0])})


@app.get("/health")
def health():
    return "ok"
