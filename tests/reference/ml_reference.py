"""Reference figures for tests/ml_train.rs, computed once with Python's
lightgbm and scikit-learn (pip install lightgbm scikit-learn numpy).

The tests train through pgmlcat on the same data in the same row order with
test_sampling => 'last' (the tail is the test set), so both sides use the
same split. Row i of the scikit-learn dataset goes to position (i*37) % n.
Postgres stores the features as REAL, so they are rounded to float32 here too.
"""
import math

import lightgbm as lgb
import numpy as np
from sklearn import datasets
from sklearn.linear_model import LinearRegression
from sklearn.metrics import f1_score, r2_score


def mixed(x, y):
    n = len(y)
    order = sorted(range(n), key=lambda i: (i * 37) % n)
    return x[order], y[order]


def split(x, y, test_size=0.25):
    n = len(y)
    n_test = int(math.floor(n * test_size + 0.5))
    return x[: n - n_test], x[n - n_test :], y[: n - n_test], y[n - n_test :]


def f32(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def lgb_params(extra):
    p = {"verbosity": -1, "num_threads": 1, "seed": 0, "deterministic": True}
    p.update(extra)
    return p


iris = datasets.load_iris()
xtr, xte, ytr, yte = split(*mixed(f32(iris.data), iris.target))
b = lgb.train(lgb_params({"objective": "multiclass", "num_class": 3}), lgb.Dataset(xtr, ytr), num_boost_round=100)
print("iris lightgbm f1", f1_score(yte, b.predict(xte).argmax(axis=1), average="macro"))

bc = datasets.load_breast_cancer()
y = (bc.target == 0).astype(int)  # PostgresML's `malignant`
xtr, xte, ytr, yte = split(*mixed(f32(bc.data), y))
b = lgb.train(lgb_params({"objective": "binary"}), lgb.Dataset(xtr, ytr), num_boost_round=100)
print("breast_cancer lightgbm f1", f1_score(yte, (b.predict(xte) > 0.5).astype(int), average="macro"))

d = datasets.load_diabetes()
xtr, xte, ytr, yte = split(*mixed(f32(d.data), f32(d.target)))
b = lgb.train(lgb_params({"objective": "regression"}), lgb.Dataset(xtr, ytr), num_boost_round=100)
print("diabetes lightgbm r2", r2_score(yte, b.predict(xte)))
lr = LinearRegression().fit(xtr, ytr)
print("diabetes linear r2", r2_score(yte, lr.predict(xte)))
