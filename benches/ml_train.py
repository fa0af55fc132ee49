"""The Python side of benches/ml_train.sh: what a data scientist runs instead
of pgml.train. Reads the relation over psycopg with binary COPY, builds numpy
arrays, splits 75/25 by position (pgmlcat's test_sampling => 'last'), trains
LightGBM with the parameters pgmlcat uses, and scores the test split.

    python3 ml_train.py DSN RELATION LABEL THREADS ITERATIONS LOADER

LOADER: `rows`  psycopg's typed COPY reader (copy.set_types + copy.rows(),
                the way psycopg's documentation reads binary COPY), then
                np.array over the tuples;
        `numpy` the COPY bytes parsed in one go with a numpy structured dtype
                (fixed-width float4 rows, no NULLs): the fastest load Python
                can do.
Prints one JSON line: seconds per phase and the test r2.
"""

import json
import sys
import time

T0 = time.perf_counter()

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

T_IMPORT = time.perf_counter()


def columns(conn, relation):
    cur = conn.execute(
        sql.SQL("SELECT * FROM {} LIMIT 0").format(sql.SQL(relation))
    )
    return [d.name for d in cur.description]


def load_rows(cur, query, ncols):
    with cur.copy(query) as copy:
        copy.set_types(["float4"] * ncols)
        data = np.array(list(copy.rows()), dtype=np.float32)
    return data


def load_numpy(cur, query, ncols):
    buf = bytearray()
    with cur.copy(query) as copy:
        for chunk in copy:
            buf += chunk
    # PGCOPY header: 11-byte signature, int32 flags, int32 extension length.
    ext = int.from_bytes(buf[15:19], "big")
    start = 19 + ext
    fields = [("n", ">i2")]
    for i in range(ncols):
        fields += [(f"l{i}", ">i4"), (f"v{i}", ">f4")]
    row = np.dtype(fields)
    body = len(buf) - start - 2  # int16 -1 trailer
    if body % row.itemsize:
        raise SystemExit("unexpected COPY layout (NULLs or other types?)")
    rec = np.frombuffer(buf, dtype=row, count=body // row.itemsize, offset=start)
    if (rec["n"] != ncols).any() or any((rec[f"l{i}"] != 4).any() for i in range(ncols)):
        raise SystemExit("unexpected COPY layout (NULLs or other types?)")
    return np.column_stack([rec[f"v{i}"] for i in range(ncols)]).astype(np.float32)


def main():
    dsn, relation, label, threads, iterations, loader = sys.argv[1:7]
    threads, iterations = int(threads), int(iterations)
    with psycopg.connect(dsn) as conn:
        names = columns(conn, relation)
        features = [n for n in names if n != label]
        cols = features + [label]
        query = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT BINARY)").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in cols), sql.SQL(relation)
        )
        with conn.cursor() as cur:
            data = (load_rows if loader == "rows" else load_numpy)(cur, query, len(cols))
    t_load = time.perf_counter()

    x, y = data[:, :-1], data[:, -1]
    n = len(y)
    n_test = min(max(int(np.floor(n * 0.25 + 0.5)), 1), n - 1)
    n_train = n - n_test
    params = {
        "objective": "regression",
        "num_iterations": iterations,
        "num_threads": threads,
        "verbosity": -1,
    }
    booster = lgb.train(params, lgb.Dataset(x[:n_train], y[:n_train], params=params))
    t_fit = time.perf_counter()

    pred = booster.predict(x[n_train:], num_threads=threads)
    y_test = y[n_train:].astype(np.float64)
    r2 = 1.0 - np.sum((y_test - pred) ** 2) / np.sum((y_test - y_test.mean()) ** 2)
    t_score = time.perf_counter()

    print(
        json.dumps(
            {
                "rows": n,
                "import_s": T_IMPORT - T0,
                "load_s": t_load - T_IMPORT,
                "fit_s": t_fit - t_load,
                "score_s": t_score - t_fit,
                "total_s": t_score - T0,
                "r2": float(r2),
            }
        )
    )


if __name__ == "__main__":
    main()
