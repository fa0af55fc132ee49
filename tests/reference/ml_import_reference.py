"""Reference models and figures for tests/it/ml_import.rs (pgml.import_model
and pgml.export_model), computed with Python's lightgbm and xgboost, with
no pgmlcat involved (scripts/setup.sh installs numpy, lightgbm and
xgboost into .tools/py when the system Python lacks them).

Reads one JSON request on stdin and writes one JSON answer on stdout.
Feature matrices are lists of rows; a null element is a missing value
(NaN: JSON has no NaN). Floats travel as JSON numbers (shortest round-trip
text both ways), so every value is bit-for-bit what the test holds.

  {"mode": "lightgbm", "params": {...}, "rounds": r,
   "x": [[...]], "y": [...], "x_pred": [[...]], "feature_names": [...] | null,
   "categorical": [feature index...] (optional)}
      -> {"model": booster.model_to_string(),
          "predict": booster.predict(x_pred)            (n, or n x k lists),
          "raw_score": booster.predict(x_pred, raw_score=True)}
      lightgbm.train(params, Dataset(x, y), num_boost_round=r); with
      "categorical": [feature index...] those features are categorical.

  {"mode": "lightgbm_predict", "model": text, "x_pred": [[...]]}
      -> {"predict": [...], "raw_score": [...], "num_feature": n,
          "feature_names": [...], "num_trees": t}
      lightgbm.Booster(model_str=text): how Python's lightgbm reads a model
      text (an exported one).

  {"mode": "xgboost", "params": {...}, "rounds": r,
   "x": [[...]], "y": [...], "x_pred": [[...]], "feature_names": [...] | null,
   "categorical": [feature index...] (optional), "qid": [...] (optional)}
      -> {"model": bst.save_raw("json").decode(),
          "predict": bst.predict(DMatrix(x_pred))        (n, or n x k lists),
          "margin": bst.predict(DMatrix(x_pred), output_margin=True)}
      xgboost.train(params, DMatrix(x, y), num_boost_round=r). With
      "categorical" those features are declared categorical (feature_types
      "c", enable_categorical): a model with categorical splits. With "qid"
      the rows carry query ids (for ranking objectives).

  {"mode": "xgboost_predict", "model": json_text, "x_pred": [[...]]}
      -> {"predict": [...], "margin": [...]}
      A JSON model loaded back into xgboost.
"""
import json
import sys

import numpy as np


def matrix(rows):
    """Rows with None for a missing value -> float64 matrix with NaN."""
    if not rows:
        return np.zeros((0, 0), dtype=np.float64)
    return np.asarray(
        [[np.nan if v is None else float(v) for v in row] for row in rows],
        dtype=np.float64,
    )


def listed(a):
    return np.asarray(a, dtype=np.float64).tolist()


def lightgbm_train(req):
    import lightgbm as lgb

    x, y = matrix(req["x"]), np.asarray(req["y"], dtype=np.float64)
    names = req.get("feature_names") or "auto"
    params = dict(req["params"])
    params.setdefault("verbose", -1)
    categorical = req.get("categorical") or "auto"
    data = lgb.Dataset(x, y, feature_name=names, categorical_feature=categorical, free_raw_data=False)
    booster = lgb.train(params, data, num_boost_round=int(req["rounds"]))
    xp = matrix(req["x_pred"])
    return {
        "model": booster.model_to_string(),
        "predict": listed(booster.predict(xp)),
        "raw_score": listed(booster.predict(xp, raw_score=True)),
    }


def lightgbm_predict(req):
    import lightgbm as lgb

    booster = lgb.Booster(model_str=req["model"])
    xp = matrix(req["x_pred"])
    return {
        "predict": listed(booster.predict(xp)),
        "raw_score": listed(booster.predict(xp, raw_score=True)),
        "num_feature": booster.num_feature(),
        "feature_names": booster.feature_name(),
        "num_trees": booster.num_trees(),
    }


def xgboost_train(req):
    import xgboost as xgb

    x, y = matrix(req["x"]), np.asarray(req["y"], dtype=np.float64)
    kwargs = {}
    if req.get("feature_names"):
        kwargs["feature_names"] = list(req["feature_names"])
    categorical = req.get("categorical") or []
    if categorical:
        kwargs["feature_types"] = ["c" if j in categorical else "q" for j in range(x.shape[1])]
        kwargs["enable_categorical"] = True
    dtrain = xgb.DMatrix(x, label=y, missing=np.nan, **kwargs)
    if req.get("qid") is not None:
        dtrain.set_info(qid=np.asarray(req["qid"], dtype=np.uint32))
    params = dict(req["params"])
    params.setdefault("nthread", 1)
    params.setdefault("seed", 0)
    bst = xgb.train(params, dtrain, num_boost_round=int(req["rounds"]))
    dpred = xgb.DMatrix(matrix(req["x_pred"]), missing=np.nan, **kwargs)
    return {
        "model": bst.save_raw("json").decode(),
        "predict": listed(bst.predict(dpred)),
        "margin": listed(bst.predict(dpred, output_margin=True)),
    }


def xgboost_predict(req):
    import xgboost as xgb

    bst = xgb.Booster(model_file=bytearray(req["model"].encode()))
    dpred = xgb.DMatrix(matrix(req["x_pred"]), missing=np.nan)
    return {
        "predict": listed(bst.predict(dpred)),
        "margin": listed(bst.predict(dpred, output_margin=True)),
    }


def main():
    req = json.load(sys.stdin)
    mode = req["mode"]
    if mode == "lightgbm":
        out = lightgbm_train(req)
    elif mode == "lightgbm_predict":
        out = lightgbm_predict(req)
    elif mode == "xgboost":
        out = xgboost_train(req)
    elif mode == "xgboost_predict":
        out = xgboost_predict(req)
    else:
        raise SystemExit(f"unknown mode {mode}")
    # allow_nan=False: a NaN prediction is a bug here, not a value to send.
    json.dump(out, sys.stdout, allow_nan=False)


if __name__ == "__main__":
    main()
