"""Reference figures for tests/it/ml_groups.rs, computed independently of
pgmlcat with numpy and Python's lightgbm (scripts/setup.sh installs both
into .tools/py when the system Python lacks them).

Reads one JSON request on stdin and writes one JSON answer on stdout:

  {"mode": "lstsq", "groups": {key: {"x": [[...]], "y": [...]}}}
      -> {key: {"intercept": b, "coef": [w...]}}
      Ordinary least squares with an intercept (numpy.linalg.lstsq on [1, X]).

  {"mode": "ridge", "alpha": a, "groups": {...as above...}}
      -> {key: {"intercept": b, "coef": [w...]}}
      The exact minimizer of 1/(2n)||y - Xw - b||^2 + a/2 ||w||^2:
      (Xc'Xc + n a I) w = Xc'yc on the centered data, b = ybar - xbar.w.

  {"mode": "lightgbm", "params": {...}, "rounds": r,
   "groups": {key: {"x": [[...]], "y": [...], "x_pred": [[...]]}}}
      -> {key: [prediction for each row of x_pred]}
      lightgbm.train(params, Dataset(x, y), num_boost_round=r) per group.

Floats travel as JSON numbers (shortest round-trip text both ways), so the
data here is bit-for-bit what Postgres holds.
"""
import json
import sys

import numpy as np


def matrix(rows):
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)


def lstsq(g):
    x, y = matrix(g["x"]), np.asarray(g["y"], dtype=np.float64)
    a = np.column_stack([np.ones(len(y)), x])
    w, *_ = np.linalg.lstsq(a, y, rcond=None)
    return {"intercept": float(w[0]), "coef": [float(v) for v in w[1:]]}


def ridge(g, alpha):
    x, y = matrix(g["x"]), np.asarray(g["y"], dtype=np.float64)
    n, k = x.shape
    xbar, ybar = x.mean(axis=0), y.mean()
    xc, yc = x - xbar, y - ybar
    w = np.linalg.solve(xc.T @ xc + n * alpha * np.eye(k), xc.T @ yc)
    return {"intercept": float(ybar - xbar @ w), "coef": [float(v) for v in w]}


def lightgbm(g, params, rounds):
    import lightgbm as lgb

    x, y = matrix(g["x"]), np.asarray(g["y"], dtype=np.float64)
    booster = lgb.train(dict(params), lgb.Dataset(x, y), num_boost_round=rounds)
    return [float(v) for v in booster.predict(matrix(g["x_pred"]))]


def main():
    req = json.load(sys.stdin)
    mode = req["mode"]
    out = {}
    for key, g in req["groups"].items():
        if mode == "lstsq":
            out[key] = lstsq(g)
        elif mode == "ridge":
            out[key] = ridge(g, float(req["alpha"]))
        elif mode == "lightgbm":
            out[key] = lightgbm(g, req["params"], int(req["rounds"]))
        else:
            raise SystemExit(f"unknown mode {mode}")
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
