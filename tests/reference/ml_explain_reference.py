"""Reference figures for tests/it/ml_explain.rs (issue #19: pgml.explain,
pgml.feature_importance, pgml.evaluate, pgml.confusion_matrix,
pgml.roc_curve), computed independently of pgmlcat with numpy,
scikit-learn and Python's lightgbm (the tests put .tools/py first on
PYTHONPATH; scripts/setup.sh installs numpy and lightgbm there).

Reads one JSON request on stdin and writes one JSON answer on stdout.
Floats travel as JSON numbers (shortest round-trip text both ways).

  {"mode": "classification", "y": [class code...], "proba": [[p_0..p_k-1]...],
   "threshold": t}
      -> {"accuracy", "precision", "recall", "f1", "mcc", "log_loss",
          "roc_auc" (binary only), "predicted": [code...],
          "confusion": [[actual code, predicted code, count]...] (count > 0,
          ordered by actual then predicted),
          "roc": [[threshold, recall, false_positive_rate, precision]...]
          (binary only)}
      Binary: predicted positive (code 1) when proba[1] >= threshold;
      multiclass: the class of largest probability. precision, recall and
      f1 with average='macro'; roc_auc and the ROC curve on proba[1];
      log_loss on every class's probability. The curve is sklearn's
      roc_curve(drop_intermediate=False) without its leading inf row, with
      precision = TP / (TP + FP) at each threshold.

  {"mode": "regression", "y": [...], "pred": [...]}
      -> {"r2", "mean_absolute_error", "mean_squared_error", "explained_variance"}

  {"mode": "lightgbm", "model_b64": base64 of the LightGBM model text,
   "x": [[...]], "x_test": [[...]]}
      -> {"num_class": k (1 for regression and binary),
          "predict": Booster.predict(x) (value, P(positive), or k probabilities),
          "raw": Booster.predict(x, raw_score=True) (a number, or k per row),
          "contrib": Booster.predict(x, pred_contrib=True) as
                     [[[c_1..c_f, base] per class] per row],
          "gain": feature_importance('gain') / its sum,
          "shap": mean over x_test's rows of |contribution|, summed over classes}

  {"mode": "linear", "coef": [[c_1..c_f] per output], "intercept": [b per output],
   "x_train": [[...]], "y_train": [...] (optional), "x": [[...]]}
      -> {"mean": [...], "std": [...] (ddof 0, over x_train),
          "importance": |coef_j| * std_j summed over outputs,
          "explain": [[{"base": b + sum_j c_j mean_j,
                        "contributions": [c_j (x_j - mean_j)...],
                        "output": b + sum_j c_j x_j} per output] per row of x],
          "lstsq": {"intercept", "coef"} (numpy least squares on
                   x_train, y_train, when y_train is given)}
"""
import base64
import json
import sys

import numpy as np


def matrix(rows, ncols=None):
    a = np.asarray(rows, dtype=np.float64)
    if a.ndim == 1:
        a = a.reshape(len(rows), -1 if ncols is None else ncols)
    return a


def classification(req):
    from sklearn import metrics

    y = np.asarray(req["y"], dtype=np.int64)
    proba = matrix(req["proba"])
    k = proba.shape[1]
    if k == 2:
        predicted = (proba[:, 1] >= float(req.get("threshold", 0.5))).astype(np.int64)
    else:
        predicted = np.argmax(proba, axis=1)
    labels = list(range(k))
    out = {
        "accuracy": metrics.accuracy_score(y, predicted),
        "precision": metrics.precision_score(
            y, predicted, labels=labels, average="macro", zero_division=0
        ),
        "recall": metrics.recall_score(
            y, predicted, labels=labels, average="macro", zero_division=0
        ),
        "f1": metrics.f1_score(y, predicted, labels=labels, average="macro", zero_division=0),
        "mcc": metrics.matthews_corrcoef(y, predicted),
        "log_loss": metrics.log_loss(y, proba, labels=labels),
        "predicted": [int(p) for p in predicted],
    }
    cm = metrics.confusion_matrix(y, predicted, labels=labels)
    out["confusion"] = [
        [a, p, int(cm[a, p])] for a in labels for p in labels if cm[a, p] > 0
    ]
    if k == 2:
        score = proba[:, 1]
        out["roc_auc"] = metrics.roc_auc_score(y, score)
        fpr, tpr, thresholds = metrics.roc_curve(y, score, drop_intermediate=False)
        roc = []
        for f, t, thr in zip(fpr, tpr, thresholds):
            if np.isinf(thr):
                continue
            chosen = score >= thr
            tp = int((chosen & (y == 1)).sum())
            fp = int((chosen & (y != 1)).sum())
            roc.append([float(thr), float(t), float(f), tp / (tp + fp)])
        out["roc"] = roc
    return {
        name: (float(v) if isinstance(v, (float, np.floating)) else v)
        for name, v in out.items()
    }


def regression(req):
    from sklearn import metrics

    y = np.asarray(req["y"], dtype=np.float64)
    pred = np.asarray(req["pred"], dtype=np.float64)
    return {
        "r2": float(metrics.r2_score(y, pred)),
        "mean_absolute_error": float(metrics.mean_absolute_error(y, pred)),
        "mean_squared_error": float(metrics.mean_squared_error(y, pred)),
        "explained_variance": float(metrics.explained_variance_score(y, pred)),
    }


def lightgbm(req):
    import lightgbm as lgb

    text = base64.b64decode(req["model_b64"]).decode("utf-8")
    booster = lgb.Booster(model_str=text)
    f = booster.num_feature()
    k = booster.num_model_per_iteration()
    out = {"num_class": k, "predict": [], "raw": [], "contrib": [], "shap": []}
    x = matrix(req["x"], f)
    if len(x):
        out["predict"] = booster.predict(x).tolist()
        out["raw"] = booster.predict(x, raw_score=True).tolist()
        contrib = booster.predict(x, pred_contrib=True).reshape(len(x), k, f + 1)
        out["contrib"] = contrib.tolist()
    gain = booster.feature_importance(importance_type="gain").astype(np.float64)
    out["gain"] = (gain / gain.sum()).tolist()
    x_test = matrix(req.get("x_test", []), f)
    if len(x_test):
        c = booster.predict(x_test, pred_contrib=True).reshape(len(x_test), k, f + 1)
        out["shap"] = np.abs(c[:, :, :f]).mean(axis=0).sum(axis=0).tolist()
    return out


def linear(req):
    coef = matrix(req["coef"])
    intercept = np.asarray(req["intercept"], dtype=np.float64)
    f = coef.shape[1]
    x_train = matrix(req["x_train"], f)
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0, ddof=0)
    out = {
        "mean": mean.tolist(),
        "std": std.tolist(),
        "importance": (np.abs(coef) * std).sum(axis=0).tolist(),
    }
    x = matrix(req.get("x", []), f)
    explain = []
    for row in x:
        per_output = []
        for c, b in zip(coef, intercept):
            per_output.append(
                {
                    "base": float(b + c @ mean),
                    "contributions": (c * (row - mean)).tolist(),
                    "output": float(b + c @ row),
                }
            )
        explain.append(per_output)
    out["explain"] = explain
    if req.get("y_train") is not None:
        y = np.asarray(req["y_train"], dtype=np.float64)
        a = np.column_stack([np.ones(len(y)), x_train])
        w, *_ = np.linalg.lstsq(a, y, rcond=None)
        out["lstsq"] = {"intercept": float(w[0]), "coef": [float(v) for v in w[1:]]}
    return out


def main():
    req = json.load(sys.stdin)
    mode = req["mode"]
    if mode == "classification":
        out = classification(req)
    elif mode == "regression":
        out = regression(req)
    elif mode == "lightgbm":
        out = lightgbm(req)
    elif mode == "linear":
        out = linear(req)
    else:
        raise SystemExit(f"unknown mode {mode}")
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
