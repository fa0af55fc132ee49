"""Reference figures for tests/it/ml_drift.rs (issue #20: pgml.drift),
computed independently of pgmlcat with numpy, from the raw rows read
straight from Postgres. The tests put .tools/py first on PYTHONPATH
(scripts/setup.sh installs numpy there).

Reads one JSON request on stdin and writes one JSON answer on stdout.

  {"features": [{"name": "x1", "kind": "numeric" | "text" | "array",
                 "train": [value...], "relation": [value...]}...],
   "thresholds": {"psi": 0.2, ...} (optional: overrides of the defaults)}

Values are Postgres text forms (numbers as `x::float8::text`, so "NaN"
and "Infinity" travel too) or null for NULL. `train` holds the feature's
values on the TRAINING rows of the split, `relation` on the rows drift is
measured on.

  -> {"rows": [{"feature", "statistic", "value" (null when undefined),
                "threshold", "drifted" (null when value is null)}...],
      "training": {feature: {"min", "max", "histogram", "missing"}
                            (numeric) or {"categories", "missing"} (text)}}

The contract (the spec of pgml.drift):
- Per feature, in request order; numeric: psi, ks, missing; text: linf,
  missing; array: missing.
- Numeric bins: lo, hi = min, max of the training values (NaN counts as
  NULL); width = (hi - lo) / 20; bin(x) = min(max(floor((x - lo) / width),
  0), 19) in float64; with width 0: bin 0 when x <= lo, else 19. The
  training histogram is the same binning of the training values.
- p_i, q_i: training and relation bin proportions over non-missing values.
  psi = sum (q'_i - p'_i) ln(q'_i / p'_i) with p' = max(p, 1e-4),
  q' = max(q, 1e-4); ks = max_k |P_k - Q_k| over the cumulative sums of the
  unfloored proportions.
- linf: max over the union of categories of |p(c) - q(c)|, frequencies over
  the non-NULL values of each side.
- missing: relation missing / relation rows - training missing / training
  rows (signed); null for an empty relation.
- psi/ks/linf null (drifted null) when either side has no non-missing value.
- drifted: value > threshold (missing: |value| > threshold).
"""
import json
import math
import sys

import numpy as np

BINS = 20
FLOOR = 1e-4
DEFAULT_THRESHOLDS = {"psi": 0.2, "ks": 0.1, "linf": 0.3, "missing": 0.05}


def parse_number(v):
    """A Postgres text form of a float8 (or null) -> float, NaN for missing."""
    if v is None:
        return math.nan
    return float(v)


def numbers(values):
    """(present float64 array, missing count, row count)."""
    a = np.array([parse_number(v) for v in values], dtype=np.float64)
    present = a[~np.isnan(a)]
    return present, int(len(a) - len(present)), int(len(a))


def bins(x, lo, width):
    if width == 0.0:
        return np.where(x <= lo, 0, BINS - 1).astype(np.int64)
    b = np.floor((x - lo) / width)
    return np.minimum(np.maximum(b, 0), BINS - 1).astype(np.int64)


def histogram(x, lo, width):
    return np.bincount(bins(x, lo, width), minlength=BINS).astype(np.int64)


def psi_ks(p_counts, q_counts):
    p = p_counts / p_counts.sum()
    q = q_counts / q_counts.sum()
    pf = np.maximum(p, FLOOR)
    qf = np.maximum(q, FLOOR)
    psi = float(np.sum((qf - pf) * np.log(qf / pf)))
    ks = float(np.max(np.abs(np.cumsum(p) - np.cumsum(q))))
    return psi, ks


def missing_diff(rel_missing, rel_rows, train_missing, train_rows):
    if rel_rows == 0:
        return None
    train_rate = train_missing / train_rows if train_rows else 0.0
    return rel_missing / rel_rows - train_rate


def row(feature, statistic, value, thresholds):
    threshold = thresholds[statistic]
    if value is None:
        drifted = None
    elif statistic == "missing":
        drifted = abs(value) > threshold
    else:
        drifted = value > threshold
    return {
        "feature": feature,
        "statistic": statistic,
        "value": value,
        "threshold": threshold,
        "drifted": drifted,
    }


def numeric(f, thresholds, training):
    train, train_missing, train_rows = numbers(f["train"])
    rel, rel_missing, rel_rows = numbers(f["relation"])
    out = []
    if len(train):
        lo, hi = float(train.min()), float(train.max())
        width = (hi - lo) / BINS
        p_counts = histogram(train, lo, width)
        training[f["name"]] = {
            "min": lo,
            "max": hi,
            "histogram": p_counts.tolist(),
            "missing": train_missing,
        }
    else:
        training[f["name"]] = {"min": None, "max": None,
                               "histogram": [0] * BINS, "missing": train_missing}
    if len(train) and len(rel):
        q_counts = histogram(rel, lo, width)
        psi, ks = psi_ks(p_counts, q_counts)
    else:
        psi = ks = None
    out.append(row(f["name"], "psi", psi, thresholds))
    out.append(row(f["name"], "ks", ks, thresholds))
    out.append(row(f["name"], "missing",
                   missing_diff(rel_missing, rel_rows, train_missing, train_rows),
                   thresholds))
    return out


def frequencies(values):
    present = [v for v in values if v is not None]
    counts = {}
    for v in present:
        counts[v] = counts.get(v, 0) + 1
    return counts, len(values) - len(present), len(values)


def text(f, thresholds, training):
    p_counts, train_missing, train_rows = frequencies(f["train"])
    q_counts, rel_missing, rel_rows = frequencies(f["relation"])
    training[f["name"]] = {"categories": p_counts, "missing": train_missing}
    p_total, q_total = sum(p_counts.values()), sum(q_counts.values())
    if p_total and q_total:
        linf = max(abs(p_counts.get(c, 0) / p_total - q_counts.get(c, 0) / q_total)
                   for c in set(p_counts) | set(q_counts))
    else:
        linf = None
    return [
        row(f["name"], "linf", linf, thresholds),
        row(f["name"], "missing",
            missing_diff(rel_missing, rel_rows, train_missing, train_rows), thresholds),
    ]


def array(f, thresholds, training):
    train_missing = sum(v is None for v in f["train"])
    rel_missing = sum(v is None for v in f["relation"])
    training[f["name"]] = {"missing": train_missing}
    return [row(f["name"], "missing",
                missing_diff(rel_missing, len(f["relation"]), train_missing, len(f["train"])),
                thresholds)]


def main():
    request = json.load(sys.stdin)
    thresholds = dict(DEFAULT_THRESHOLDS)
    thresholds.update(request.get("thresholds") or {})
    rows, training = [], {}
    for f in request["features"]:
        kind = f["kind"]
        if kind == "numeric":
            rows.extend(numeric(f, thresholds, training))
        elif kind == "text":
            rows.extend(text(f, thresholds, training))
        elif kind == "array":
            rows.extend(array(f, thresholds, training))
        else:
            raise SystemExit(f"unknown kind {kind!r}")
    json.dump({"rows": rows, "training": training}, sys.stdout)


if __name__ == "__main__":
    main()
