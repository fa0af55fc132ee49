-- In-database prediction for benches/ml_anywhere.sh: what a database
-- without pgmlcat (and without PostgresML's extension) can do with
-- PL/Python and LightGBM's own Python package.
--
-- pgml_plpy.predict(project, features) predicts with the deployed model of
-- `project` as pgmlcat stored it (pgml.deployed_models -> pgml.files, path
-- 'model', LightGBM's text model format, in parts ordered by `part`). Each
-- backend loads the booster once, on its first call, and keeps it in
-- PL/Python's GD (one Booster per project per backend; a redeploy is not
-- noticed until the backend ends, which is enough for a benchmark).
--
-- The lightgbm and numpy packages are imported from Debian's python3 (the
-- one plpython3u links), with the directory named by the custom setting
-- pgml_plpy.site_packages put first on sys.path when set (the bench
-- installs them there with `pip install --target`, leaving the system's
-- packages alone), e.g.
--   ALTER DATABASE app SET pgml_plpy.site_packages = '/var/cache/pgmlcat-bench/plpython3';
--
-- STRICT like pgml.predict: NULL features give NULL. Predictions are
-- LightGBM's float64 output cast to real, as pgmlcat returns them.

CREATE EXTENSION IF NOT EXISTS plpython3u;
CREATE SCHEMA IF NOT EXISTS pgml_plpy;

-- Defines the per-backend loader (GD['pgml_plpy_load']) and the booster
-- cache (GD['pgml_plpy_boosters']); called once per backend.
CREATE OR REPLACE FUNCTION pgml_plpy.init()
RETURNS void
LANGUAGE plpython3u AS $$
import sys
site = plpy.execute("SELECT current_setting('pgml_plpy.site_packages', true) AS p")[0]["p"]
if site and site not in sys.path:
    sys.path.insert(0, site)
import lightgbm
import numpy

boosters = GD.setdefault('pgml_plpy_boosters', {})
files = plpy.prepare(
    "SELECT d.id, f.data FROM pgml.deployed_models d "
    "JOIN pgml.files f ON f.model_id = d.id AND f.path = 'model' "
    "WHERE d.name = $1 ORDER BY f.part", ["text"])

def load(name):
    rows = plpy.execute(files, [name])
    if len(rows) == 0:
        plpy.error("pgml_plpy: no deployed model for project %r" % name)
    text = b"".join(bytes(r["data"]) for r in rows).decode()
    boosters[name] = (rows[0]["id"], lightgbm.Booster(model_str=text), numpy)
    return boosters[name]

GD['pgml_plpy_load'] = load
$$;

-- Not PARALLEL SAFE: a parallel worker cannot load the model (plpy.execute
-- runs in a subtransaction, which a parallel worker may not start: "cannot
-- start subtransactions during a parallel operation"), so queries calling
-- it run in one process.
CREATE OR REPLACE FUNCTION pgml_plpy.predict(project text, features real[])
RETURNS real
LANGUAGE plpython3u STRICT AS $$
entry = GD.get('pgml_plpy_boosters', {}).get(project)
if entry is None:
    if 'pgml_plpy_load' not in GD:
        plpy.execute("SELECT pgml_plpy.init()")
    entry = GD['pgml_plpy_load'](project)
booster, np = entry[1], entry[2]
return float(booster.predict(np.asarray(features, dtype=np.float64).reshape(1, -1), num_threads=1)[0])
$$;

-- What a backend loaded for `project`: model id, trees, LightGBM's version.
CREATE OR REPLACE FUNCTION pgml_plpy.booster_info(project text)
RETURNS TABLE (model_id bigint, num_trees int, lightgbm_version text)
LANGUAGE plpython3u STRICT AS $$
entry = GD.get('pgml_plpy_boosters', {}).get(project)
if entry is None:
    if 'pgml_plpy_load' not in GD:
        plpy.execute("SELECT pgml_plpy.init()")
    entry = GD['pgml_plpy_load'](project)
import lightgbm
return [(entry[0], entry[1].num_trees(), lightgbm.__version__)]
$$;
