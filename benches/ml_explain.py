"""Data, measurements, the Python baseline and the report of
benches/ml_explain.sh (issue #19). Run by it, not by hand:

    python3 ml_explain.py gen                      # tables on the cluster ($DIRECT_DSN)
    python3 ml_explain.py prep                     # the models E and V use (trained through pgmlcat)
    python3 ml_explain.py run SECTION SIDE ROUND   # one measured run -> a JSON line in $OUT
    python3 ml_explain.py pyeval DSN RELATION LABEL MODEL_ID THREADS
                                                   # the Python side of V (timed as a process)
    python3 ml_explain.py pyshap DSN PROJECT RELATION THREADS REPEAT
                                                   # LightGBM's own predict vs pred_contrib in Python (E)
    python3 ml_explain.py report                   # $OUT -> markdown ($MD_OUT)

Sections (sizes from the environment, see benches/ml_explain.sh):
  E  ex (E_ROWS rows, f1..f10 float4): `SELECT pgml.explain('ex_lgb', ARRAY[f1..f10]) FROM ex`
     against `SELECT pgml.predict('ex_lgb', ARRAY[f1..f10]) FROM ex` (a LightGBM model of
     E_ITERATIONS rounds trained on ex_train, E_TRAIN_ROWS rows), and the same for a linear
     model ('ex_lin'). Target: explain <= 10x predict (wall and proxy CPU). For comparison,
     `pyshap`: Python's lightgbm predict against predict(pred_contrib=True) on the same model
     text and rows (LightGBM's own TreeSHAP cost).
  V  ev (V_ROWS rows, f1..f10 float4, y float4): `SELECT * FROM pgml.evaluate('ev_lgb', 'ev')`
     (LightGBM regression, V_ITERATIONS rounds, trained on ev_train, V_TRAIN_ROWS rows)
     against `pyeval`: psycopg binary COPY straight from Postgres -> numpy -> the model text
     pgmlcat stored in pgml.files loaded into lightgbm.Booster -> predict -> scikit-learn's
     r2 / MAE / MSE / explained variance. Target: pgmlcat <= 0.5x Python's wall time.
  A  am (A_ROWS rows, f1..f10 float4, y float4 with noise): pgml.train(..., 'auto',
     search_args => '{"time_budget_s": A_BUDGET}') against every single regression algorithm
     with default hyperparameters (A_SINGLES; svm is left out by default: its cost grows with
     the square of the rows, and AutoML itself skips it above 10,000 training rows).
     Test r2 of each (the same default split), and auto's wall time against its budget.

Per run: wall time at the client; CPU (user + sys) of pgmlcat (all threads, /proc/<pid>/stat
utime + stime before and after), of the PostgreSQL cluster (postmaster, live children, reaped
children) and, for a process side, of that process (wait4's rusage); the share of the machine's
CPU other work took meanwhile.
"""

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from ml_proc import builds_running, cluster_ticks, postmaster_pid, proc_ticks, system_ticks

E = os.environ
TICK = os.sysconf("SC_CLK_TCK")
FEATS = [f"f{i}" for i in range(1, 11)]
ARRAY = "ARRAY[" + ", ".join(FEATS) + "]"
REGRESSION = ["linear", "ridge", "lasso", "elastic_net", "svm", "lightgbm", "knn"]

SIDES = {
    "E": ("lgb-explain", "lgb-predict", "lin-explain", "lin-predict"),
    "V": ("pgmlcat", "python"),
}


def a_sides():
    return ["auto"] + [f"single-{a}" for a in E.get("A_SINGLES", "linear ridge lasso elastic_net lightgbm knn").split()]


def log(msg):
    print(f"[ml_explain {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def env_int(name, default):
    return int(E.get(name, default))


# ------------------------------------------------------------------ /proc


def status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def wait_for_builds(label):
    """No measurement while a cargo build (or cargo test) runs on this shared machine."""
    limit = float(E.get("BUILD_WAIT", "3600"))
    started = time.time()
    first = True
    while True:
        b = builds_running()
        if not b:
            if not first:
                log(f"builds done after {time.time() - started:.0f}s")
            return None
        if first:
            log(f"waiting (up to {limit:.0f}s) for cargo/rustc to end before {label}: {' '.join(b[:4])}")
            first = False
        if time.time() - started > limit:
            log(f"WARNING: cargo/rustc still running after {limit:.0f}s; measuring anyway")
            return f"measured while cargo/rustc ran ({' '.join(b[:3])})"
        time.sleep(5)


# ------------------------------------------------------------------ data
def table_sql(name, rows, seed, noise):
    """f1..f10 uniform [0, 1) float4, y a nonlinear function of f1..f9 plus
    `noise` * U(-1, 1) (f10 is irrelevant)."""
    fs = ", ".join(f"random()::float4 AS {f}" for f in FEATS)
    return f"""
SELECT setseed({seed});
DROP TABLE IF EXISTS {name};
CREATE UNLOGGED TABLE {name} WITH (autovacuum_enabled = off) AS
SELECT {", ".join(FEATS)},
       (3 * f1 - 2 * f2 + 4 * f3 * f4 + sin(6 * f5) + (f6 > 0.5)::int
        + 0.5 * f7 * f7 - f8 * f9 + {noise} * (2 * random() - 1))::float4 AS y
FROM (SELECT {fs} FROM generate_series(1, {rows})) s;
VACUUM (FREEZE, ANALYZE) {name};
"""


SQL_WARM = """
DROP TABLE IF EXISTS warm;
CREATE TABLE warm AS SELECT random() AS x1, random() AS y FROM generate_series(1, 100);
"""


def sections():
    return E.get("SECTIONS", "E V A").split()


def gen():
    import psycopg

    jobs = [("warm", SQL_WARM)]
    if "E" in sections():
        jobs += [("ex_train", table_sql("ex_train", env_int("E_TRAIN_ROWS", 20000), 0.11, 0.1)),
                 ("ex", table_sql("ex", env_int("E_ROWS", 10000), 0.12, 0.1))]
    if "V" in sections():
        jobs += [("ev_train", table_sql("ev_train", env_int("V_TRAIN_ROWS", 200000), 0.21, 0.1)),
                 ("ev", table_sql("ev", env_int("V_ROWS", 1000000), 0.22, 0.1))]
    if "A" in sections():
        jobs += [("am", table_sql("am", env_int("A_ROWS", 200000), 0.31, float(E.get("A_NOISE", "1.0"))))]
    with psycopg.connect(E["DIRECT_DSN"], autocommit=True) as conn:
        for name, sql in jobs:
            t0 = time.perf_counter()
            for stmt in (x.strip() for x in sql.split(";")):
                if stmt:
                    conn.execute(stmt)
            n, size = conn.execute(f"SELECT count(*), pg_size_pretty(pg_total_relation_size('{name}')) FROM {name}").fetchone()
            log(f"{name}: {n} rows, {size}, in {time.perf_counter() - t0:.1f}s")


def proxy():
    import psycopg

    return psycopg.connect(E["PROXY_DSN"], autocommit=True)


def prep():
    """The models E and V measure with (unmeasured), and checks of what they answer."""
    import psycopg

    checks = {}
    with proxy() as conn:
        conn.execute("SELECT * FROM pgml.train('warm', 'regression', 'warm', 'y', algorithm => 'linear')").fetchall()
        if "E" in sections():
            it = env_int("E_ITERATIONS", 100)
            for sql in (f"SELECT * FROM pgml.train('ex_lgb', 'regression', 'ex_train', 'y', algorithm => 'lightgbm', "
                        f"hyperparams => '{{\"num_iterations\": {it}}}')",
                        "SELECT * FROM pgml.train('ex_lin', 'regression', 'ex_train', 'y', algorithm => 'linear')"):
                t0 = time.perf_counter()
                conn.execute(sql).fetchall()
                log(f"{sql[:70]}...: {time.perf_counter() - t0:.1f}s")
            # Additivity on the first rows: base + sum(contributions) = the prediction.
            for p in ("ex_lgb", "ex_lin"):
                rows = conn.execute(f"SELECT pgml.predict('{p}', {ARRAY}), pgml.explain('{p}', {ARRAY}) "
                                    f"FROM (SELECT * FROM ex LIMIT 200) t").fetchall()
                worst = max(abs(float(pred) - (ex["base"] + sum(ex["contributions"].values()))) for pred, ex in rows)
                checks[p] = dict(rows=len(rows), max_additivity_error=worst,
                                 features=len(rows[0][1]["contributions"]))
                log(f"{p}: |predict - (base + sum)| <= {worst:.2e} over {len(rows)} rows")
        if "V" in sections():
            it = env_int("V_ITERATIONS", 100)
            sql = (f"SELECT * FROM pgml.train('ev_lgb', 'regression', 'ev_train', 'y', algorithm => 'lightgbm', "
                   f"hyperparams => '{{\"num_iterations\": {it}}}')")
            t0 = time.perf_counter()
            conn.execute(sql).fetchall()
            log(f"ev_lgb trained in {time.perf_counter() - t0:.1f}s")
    with psycopg.connect(E["DIRECT_DSN"], autocommit=True) as d:
        for p in ("ex_lgb", "ex_lin", "ev_lgb"):
            row = d.execute("SELECT id FROM pgml.deployed_models WHERE name = %s", (p,)).fetchone()
            if row:
                checks.setdefault(p, {})["model_id"] = row[0]
    with open(E["OUT"] + ".prep.json", "w") as f:
        json.dump(checks, f)


def prep_info():
    try:
        with open(E["OUT"] + ".prep.json") as f:
            return json.load(f)
    except OSError:
        return {}


# ------------------------------------------------------------------ the calls
def sql_of(section, side):
    if section == "E":
        model, fn = side.split("-")
        return f"SELECT pgml.{fn}('ex_{model}', {ARRAY}) FROM ex"
    if section == "V":
        return "SELECT * FROM pgml.evaluate('ev_lgb', 'ev')"
    if section == "A":
        if side == "auto":
            budget = E.get("A_BUDGET", "60")
            return (f"SELECT * FROM pgml.train('am_auto', 'regression', 'am', 'y', 'auto', "
                    f"search_args => '{{\"time_budget_s\": {budget}}}')")
        alg = side.removeprefix("single-")
        return f"SELECT * FROM pgml.train('am_{alg}', 'regression', 'am', 'y', '{alg}')"
    raise SystemExit(f"unknown section {section}")


def last_model(conn, project):
    return conn.execute(
        "SELECT m.id, m.algorithm, m.hyperparams, m.metrics FROM pgml.models m "
        "JOIN pgml.projects p ON p.id = m.project_id WHERE p.name = %s ORDER BY m.id DESC LIMIT 1",
        (project,)).fetchone()


def run(section, side, rnd):
    import psycopg
    from psycopg.types.string import TextLoader

    pm = postmaster_pid(E["PG_DATADIR"])
    pgmlcat = int(E["PGMLCAT_PID"])
    note = wait_for_builds(f"{section} {side} round {rnd}")
    is_process = section == "V" and side == "python"
    sql = None if is_process else sql_of(section, side)
    notices = []  # [seconds since the call started, message]
    t_start = [time.perf_counter()]
    conn = None
    if not is_process:
        conn = psycopg.connect(E["PROXY_DSN"], autocommit=True)
        # jsonb as text: the client does not parse 10,000 JSON objects in the measured time.
        conn.adapters.register_loader("jsonb", TextLoader)
        conn.add_notice_handler(lambda d: notices.append([round(time.perf_counter() - t_start[0], 2), d.message_primary]))
    time.sleep(0.3)
    s0, p0, c0 = system_ticks(), proc_ticks(pgmlcat), cluster_ticks(pm)
    t0 = t_start[0] = time.perf_counter()
    err, result, child, child_cpu, rows, chars = None, None, None, None, None, None
    if is_process:
        dsn, label = E["DIRECT_DSN"], "y"
        model_id = str(prep_info().get("ev_lgb", {}).get("model_id", ""))
        argv = [sys.executable, os.path.abspath(__file__), "pyeval", dsn, "ev", label, model_id, E["THREADS"]]
        env = dict(E)
        if E.get("PY_PATH"):
            env["PYTHONPATH"] = E["PY_PATH"] + (":" + E["PYTHONPATH"] if E.get("PYTHONPATH") else "")
        with open(E["OUT"] + ".child.out", "w+b") as fo, open(E["OUT"] + ".child.err", "w+b") as fe:
            p = subprocess.Popen(argv, stdout=fo, stderr=fe, env=env)
            _, status, ru = os.wait4(p.pid, 0)
            code = os.waitstatus_to_exitcode(status)
            child_cpu = ru.ru_utime + ru.ru_stime
            fo.seek(0)
            fe.seek(0)
            out, errout = fo.read(), fe.read()
        if code != 0:
            err = f"pyeval exited {code}: {errout.decode(errors='replace')[-2000:]}"
        else:
            try:
                child = json.loads(out.decode().strip().splitlines()[-1])
            except (ValueError, IndexError) as e:
                err = f"pyeval printed no JSON ({e}): {out[-500:]!r}"
    else:
        try:
            cur = conn.execute(sql)
            got = cur.fetchall()
            rows = len(got)
            if section == "E":
                chars = sum(len(str(r[0])) for r in got)
            else:
                cols = [d.name for d in cur.description]
                result = [dict(zip(cols, [v if isinstance(v, (int, float)) else str(v) for v in r])) for r in got]
        except psycopg.Error as e:
            err = f"[{getattr(e, 'sqlstate', None)}] {type(e).__name__}: {e}".strip()
    wall = time.perf_counter() - t0
    c1 = cluster_ticks(pm)
    alive = os.path.exists(f"/proc/{pgmlcat}")
    p1 = proc_ticks(pgmlcat) if alive else p0
    s1 = system_ticks()
    hwm = status_kb(pgmlcat, "VmHWM") if alive else None
    if conn is not None:
        conn.close()
    ours = (p1 - p0) + (c1 - c0) + (child_cpu or 0) * TICK
    other = max(0.0, (s1[1] - s0[1]) - ours) / max(1, s1[0] - s0[0])
    r = dict(section=section, side=side, round=rnd, sql=sql, wall=wall, error=err, result=result, rows=rows,
             chars=chars, notices=notices, proxy_cpu=(p1 - p0) / TICK, pg_cpu=(c1 - c0) / TICK,
             child_cpu=child_cpu, child=child, vm_hwm_kb=hwm, proxy_alive=alive,
             other_busy=round(100 * other, 1), note=note)
    if not alive:
        r["error"] = (err or "") + " (pgmlcat died during the run)"
    if section == "A" and r["error"] is None:
        with psycopg.connect(E["DIRECT_DSN"], autocommit=True) as d:
            m = last_model(d, "am_" + ("auto" if side == "auto" else side.removeprefix("single-")))
            if m:
                r["model_id"], r["algorithm"], r["hyperparams"], r["metrics"] = m
    with open(E["OUT"], "a") as f:
        f.write(json.dumps(r) + "\n")
    msg = (f"{section} round {rnd} {side}: {wall:.3f}s (cpu proxy {r['proxy_cpu']:.2f}s, postgres {r['pg_cpu']:.2f}s"
           + (f", python {child_cpu:.2f}s" if child_cpu is not None else "")
           + f"; other work {r['other_busy']}%)")
    if section == "A" and r.get("metrics"):
        msg += f" {r['algorithm']} r2 {r['metrics'].get('r2')}"
    if r["error"]:
        msg += f" ERROR {r['error']}"
    log(msg)
    if r["error"] is not None:
        return 3
    return 4 if r["other_busy"] > float(E.get("NOISY_BUSY", "25")) else 0


# ------------------------------------------------------------------ Python baseline (V)
def pyeval(dsn, relation, label, model_id, threads):
    """Binary COPY straight from Postgres -> numpy -> the stored LightGBM
    model -> scikit-learn's metrics (the ones pgml.evaluate returns)."""
    t_start = time.perf_counter()
    import lightgbm as lgb
    import numpy as np
    import psycopg
    from psycopg import sql
    from sklearn import metrics as skm

    t_import = time.perf_counter()
    threads = int(threads)
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as cur:
            text = cur.execute(
                "SELECT convert_from(string_agg(data, ''::bytea ORDER BY part), 'UTF8') FROM pgml.files "
                "WHERE model_id = %s AND path = 'model'", (int(model_id),)).fetchone()[0]
            t_model_read = time.perf_counter()
            cols = FEATS + [label]
            q = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT BINARY)").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in cols), sql.Identifier(relation))
            buf = bytearray()
            with cur.copy(q) as copy:
                for chunk in copy:
                    buf += chunk
    t_copy = time.perf_counter()
    # PGCOPY: 11-byte signature, int32 flags, int32 extension length; then per
    # row int16 field count and per field int32 length + value (float4 here).
    start = 19 + int.from_bytes(buf[15:19], "big")
    fields = [("n", ">i2")]
    for i in range(len(cols)):
        fields += [(f"l{i}", ">i4"), (f"v{i}", ">f4")]
    rowtype = np.dtype(fields)
    body = len(buf) - start - 2
    if body % rowtype.itemsize:
        raise SystemExit("unexpected COPY layout (NULLs?)")
    rec = np.frombuffer(buf, dtype=rowtype, count=body // rowtype.itemsize, offset=start)
    if not (rec["n"] == len(cols)).all() or any((rec[f"l{i}"] != 4).any() for i in range(len(cols))):
        raise SystemExit("unexpected COPY layout (NULLs?)")
    x = np.column_stack([rec[f"v{i}"].astype(np.float64) for i in range(len(FEATS))])
    y = rec[f"v{len(FEATS)}"].astype(np.float64)
    copy_bytes = len(buf)
    del rec, buf
    t_numpy = time.perf_counter()
    booster = lgb.Booster(model_str=text)
    t_load = time.perf_counter()
    pred = booster.predict(x, num_threads=threads)
    t_predict = time.perf_counter()
    out = dict(r2=skm.r2_score(y, pred), mean_absolute_error=skm.mean_absolute_error(y, pred),
               mean_squared_error=skm.mean_squared_error(y, pred),
               explained_variance=skm.explained_variance_score(y, pred))
    t_metrics = time.perf_counter()
    print(json.dumps(dict(rows=len(y), copy_bytes=copy_bytes, metrics={k: float(v) for k, v in out.items()},
                          phases=dict(imports=t_import - t_start, model_read=t_model_read - t_import,
                                      copy=t_copy - t_model_read, numpy=t_numpy - t_copy,
                                      booster=t_load - t_numpy, predict=t_predict - t_load,
                                      metrics=t_metrics - t_predict),
                          total_s=time.perf_counter() - t_start, lightgbm=lgb.__version__, numpy=np.__version__)))


# ------------------------------------------------------------------ Python reference (E)
def pyshap(dsn, project, relation, threads, repeat):
    """LightGBM's own cost of the same two things in Python: predict and
    predict(pred_contrib=True) (TreeSHAP) of the model pgmlcat stored, on
    the same rows, num_threads as pgmlcat's; medians of `repeat` calls."""
    import lightgbm as lgb
    import numpy as np
    import psycopg

    wait_for_builds("the Python reference of E")
    with psycopg.connect(dsn) as conn:
        model_id = conn.execute("SELECT id FROM pgml.deployed_models WHERE name = %s", (project,)).fetchone()[0]
        text = conn.execute(
            "SELECT convert_from(string_agg(data, ''::bytea ORDER BY part), 'UTF8') FROM pgml.files "
            "WHERE model_id = %s AND path = 'model'", (model_id,)).fetchone()[0]
        x = np.array(conn.execute(f"SELECT {', '.join(FEATS)} FROM {relation}").fetchall(), dtype=np.float64)
    booster = lgb.Booster(model_str=text)
    out = dict(rows=len(x), trees=booster.num_trees(), threads=int(threads), lightgbm=lgb.__version__)
    for kind in ("predict", "contrib"):
        times = []
        for _ in range(int(repeat)):
            t0 = time.perf_counter()
            booster.predict(x, num_threads=int(threads), pred_contrib=kind == "contrib")
            times.append(time.perf_counter() - t0)
        out[kind] = statistics.median(times)
        out[kind + "_runs"] = times
    print(json.dumps(out))


# ------------------------------------------------------------------ report
def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, f="{:.2f}"):
    return "-" if v is None else f.format(v)


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def report():
    every = [json.loads(line) for line in open(E["OUT"]) if line.strip()]
    last = {}
    for i, r in enumerate(every):
        last[(r["section"], r["side"], r["round"])] = i
    # Round 0 is the unmeasured warm-up pass.
    runs = [r for i, r in enumerate(every) if last[(r["section"], r["side"], r["round"])] == i and r["round"] > 0]
    redone = [r for i, r in enumerate(every) if last[(r["section"], r["side"], r["round"])] != i and r["round"] > 0]
    by = {}
    for r in runs:
        by.setdefault((r["section"], r["side"]), []).append(r)

    def ok(section, side):
        return [r for r in by.get((section, side), []) if not r["error"]]

    def walls_text(section, side, f="{:.2f}"):
        return ", ".join(f.format(r["wall"]) + ("!" if r["error"] else "") for r in by.get((section, side), []))

    def per_round(section, a, b, key="wall"):
        ra = {r["round"]: r[key] for r in ok(section, a)}
        rb = {r["round"]: r[key] for r in ok(section, b)}
        return [ra[k] / rb[k] for k in sorted(ra) if k in rb and rb[k]]

    def ratio_text(vals):
        if not vals:
            return "-"
        return f"{statistics.median(vals):.2f} (rounds: {', '.join(f'{v:.2f}' for v in vals)})"

    info = prep_info()
    body, targets, err_lines = [], [], []
    for (sec, side), rs in sorted(by.items()):
        for r in rs:
            if r["error"]:
                err_lines.append(f"- {sec} {side} round {r['round']}: `{r['error'].strip()[:1500]}`")
    busy = [f"{r['section']} {r['side']} round {r['round']}: {r['other_busy']}%" for r in runs if r["other_busy"] > 10]
    notes = sorted({r["note"] for r in runs if r.get("note")})

    if "E" in sections():
        rows = []
        for side in SIDES["E"]:
            rs = ok("E", side)
            rows.append([f"`{sql_of('E', side)}`", fmt(med([r["wall"] for r in rs]), "{:.3f}"),
                         walls_text("E", side, "{:.3f}"), fmt(med([r["proxy_cpu"] for r in rs])),
                         fmt(med([r["pg_cpu"] for r in rs])), fmt(med([r["rows"] for r in rs]), "{:,.0f}"),
                         fmt(med([(r["chars"] or 0) / 1e6 for r in rs]), "{:.2f} MB")])
        ratios = {}
        for model in ("lgb", "lin"):
            w = per_round("E", f"{model}-explain", f"{model}-predict")
            c = per_round("E", f"{model}-explain", f"{model}-predict", "proxy_cpu")
            ratios[model] = (w, c)
            wm = med(w)
            if wm is not None:
                targets.append(f"E ({'LightGBM' if model == 'lgb' else 'linear'}): explain / predict wall "
                               f"{wm:.2f}x, proxy CPU {fmt(med(c))}x (target <= 10x): "
                               f"{'met' if wm <= 10 else 'NOT met'}")
        py_ref = "-"
        try:
            with open(E["OUT"] + ".pyshap.json") as f:
                ps = json.load(f)
            py_ref = (f"Python lightgbm {ps['lightgbm']} on the same model text and rows ({ps['trees']} trees, "
                      f"num_threads {ps['threads']}): predict {ps['predict']:.3f} s, predict(pred_contrib=True) "
                      f"{ps['contrib']:.3f} s: {ps['contrib'] / ps['predict']:.1f}x (TreeSHAP's own cost)")
        except (OSError, ValueError, KeyError, ZeroDivisionError):
            pass
        checks = "; ".join(f"{p}: {v.get('features')} contributions per row, |predict - (base + sum)| <= "
                           f"{v.get('max_additivity_error', float('nan')):.1e} on the first {v.get('rows')} rows"
                           for p, v in info.items() if p.startswith("ex_"))
        body.append(f"""## E. pgml.explain against pgml.predict, {env_int('E_ROWS', 10000):,} rows

`ex`: {env_int('E_ROWS', 10000):,} rows x 10 float4 features (uniform, seeded); the models were trained on `ex_train`
({env_int('E_TRAIN_ROWS', 20000):,} rows, the same generator): `ex_lgb` LightGBM regression with num_iterations
{env_int('E_ITERATIONS', 100)}, `ex_lin` linear regression. The query's every row is fetched by psycopg (jsonb kept
as text, not parsed, so the client's share is small); wall at the client; proxy CPU = pgmlcat's utime + stime.

{table(["statement", "wall s (median)", "runs", "proxy CPU s", "postgres CPU s", "rows", "result text"], rows)}

- LightGBM: explain / predict wall per round {ratio_text(ratios['lgb'][0])}; proxy CPU {ratio_text(ratios['lgb'][1])}
- linear: explain / predict wall per round {ratio_text(ratios['lin'][0])}; proxy CPU {ratio_text(ratios['lin'][1])}
- LightGBM's own ratio, for comparison: {py_ref}
- checks: {checks or '-'}
""")

    if "V" in sections():
        pg = ok("V", "pgmlcat")
        py = ok("V", "python")
        w = per_round("V", "pgmlcat", "python")
        wm = med(w)
        if wm is not None:
            targets.append(f"V: pgml.evaluate / Python wall {wm:.2f}x (target <= 0.5x): {'met' if wm <= 0.5 else 'NOT met'}")
        pg_metrics = None
        if pg and pg[-1].get("result"):
            m = pg[-1]["result"][0].get("metrics")
            pg_metrics = json.loads(m) if isinstance(m, str) else m
        py_metrics = py[-1]["child"]["metrics"] if py and py[-1].get("child") else None
        diff = "-"
        if pg_metrics and py_metrics:
            diff = ", ".join(f"{k} {abs(pg_metrics.get(k, float('nan')) - v):.1e}" for k, v in py_metrics.items())
        phases = "-"
        if py:
            keys = py[-1]["child"]["phases"].keys()
            phases = ", ".join(f"{k} {med([r['child']['phases'][k] for r in py]):.2f}" for k in keys)
        rows = [["pgmlcat `SELECT * FROM pgml.evaluate('ev_lgb', 'ev')`", fmt(med([r["wall"] for r in pg])),
                 walls_text("V", "pgmlcat"), fmt(med([r["proxy_cpu"] for r in pg])), fmt(med([r["pg_cpu"] for r in pg])),
                 fmt(med([(r.get("vm_hwm_kb") or 0) / 1024 for r in pg]), "{:,.0f} MiB")],
                ["Python: binary COPY -> numpy -> lightgbm.Booster(model_str) -> sklearn.metrics (whole process)",
                 fmt(med([r["wall"] for r in py])), walls_text("V", "python"),
                 fmt(med([r["child_cpu"] for r in py])) + " (Python)", fmt(med([r["pg_cpu"] for r in py])), "-"]]
        inproc = med([r["child"]["total_s"] - r["child"]["phases"]["imports"] for r in py]) if py else None
        body.append(f"""## V. pgml.evaluate over {env_int('V_ROWS', 1000000):,} rows against Python

`ev`: {env_int('V_ROWS', 1000000):,} rows x 10 float4 features + float4 label; `ev_lgb`: LightGBM regression,
num_iterations {env_int('V_ITERATIONS', 100)}, trained on `ev_train` ({env_int('V_TRAIN_ROWS', 200000):,} rows, the same
generator). Python (`pyeval`, a process of its own, timed whole: imports, connect, reading the model text from
pgml.files, `COPY (SELECT f1..f10, y FROM ev) TO STDOUT (FORMAT BINARY)` straight from Postgres, np.frombuffer,
`lightgbm.Booster(model_str=...)`, `predict(num_threads={E.get('THREADS')})`, sklearn's r2 / MAE / MSE / explained
variance); pgmlcat's `[ml] threads = {E.get('THREADS')}`. CPU: pgmlcat's process or the Python process.

{table(["side", "wall s (median)", "runs", "CPU s (proxy or Python)", "postgres CPU s", "proxy VmHWM"], rows)}

- pgmlcat / Python wall per round: {ratio_text(w)}
- Python without its imports (in-process time, median): {fmt(inproc)} s; pgmlcat / that: {fmt(med([r['wall'] for r in pg]) / inproc if pg and inproc else None)}
- Python phases (median s): {phases}
- metrics, pgmlcat: {json.dumps(pg_metrics)}; Python: {json.dumps(py_metrics)}; |difference|: {diff}
""")

    if "A" in sections():
        budget = float(E.get("A_BUDGET", "60"))
        rows = []
        best = None
        for side in a_sides():
            rs = ok("A", side)
            r2s = [r["metrics"].get("r2") for r in rs if r.get("metrics")]
            algs = sorted({r.get("algorithm") for r in rs if r.get("algorithm")})
            if side != "auto" and r2s:
                m = med(r2s)
                if best is None or m > best[1]:
                    best = (side.removeprefix("single-"), m)
            rows.append([side, fmt(med([r["wall"] for r in rs])), walls_text("A", side),
                         fmt(med([r["proxy_cpu"] for r in rs])), ", ".join(algs) or "-",
                         ", ".join(f"{v:.4f}" for v in r2s) or "-"])
        auto = ok("A", "auto")
        auto_r2 = med([r["metrics"].get("r2") for r in auto if r.get("metrics")])
        over = [r["wall"] - budget for r in auto]
        board = auto[-1]["metrics"].get("search_results") if auto and auto[-1].get("metrics") else None
        board_rows = []
        if board:
            for e in board.get("results", []):
                board_rows.append([e.get("algorithm"), f"`{json.dumps(e.get('hyperparams'))}`",
                                   fmt(e.get("mean_cv_score"), "{:.4f}"), fmt(e.get("std_cv_score"), "{:.4f}"),
                                   fmt(e.get("fit_time")), e.get("status")])
        if auto_r2 is not None and best:
            targets.append(f"A: auto test r2 {auto_r2:.4f} against the best single algorithm ({best[0]}) "
                           f"{best[1]:.4f}: difference {auto_r2 - best[1]:+.4f}; auto wall median "
                           f"{med([r['wall'] for r in auto]):.1f} s for a {budget:.0f} s budget")
        timeline = "-"
        if auto and auto[-1].get("notices"):
            timeline = "; ".join(f"{t:.1f} `{m[:90]}`" if isinstance(n, list) else f"`{n}`"
                                 for n in auto[-1]["notices"] for t, m in [n if isinstance(n, list) else (0, n)])
        left_out = [a for a in REGRESSION if f"single-{a}" not in a_sides()]
        body.append(f"""## A. AutoML on {env_int('A_ROWS', 200000):,} rows

`am`: {env_int('A_ROWS', 200000):,} rows x 10 float4 features, y = the nonlinear function of E and V plus
{E.get('A_NOISE', '1.0')} * U(-1, 1) noise. `SELECT * FROM pgml.train('am_auto', 'regression', 'am', 'y', 'auto',
search_args => '{{"time_budget_s": {budget:.0f}}}')` against `pgml.train('am_<algorithm>', 'regression', 'am', 'y',
'<algorithm>')` with default hyperparameters; every training uses the default split (test_size 0.25, random,
the same seed), so the test r2 are on the same rows. pgmlcat `[ml] threads = {E.get('THREADS')}`.
{"Not trained alone: " + ", ".join(left_out) + " (cost growing with the square of the rows; AutoML skips svm above 10,000 training rows and knn above 20,000 too)." if left_out else ""}

{table(["side", "wall s (median)", "runs", "proxy CPU s", "algorithm chosen", "test r2 per run"], rows)}

- auto: wall minus budget per run: {', '.join(f'{v:+.1f}' for v in over) or '-'} s; search elapsed_s per run:
  {', '.join(fmt(r['metrics'].get('search_results', {}).get('elapsed_s')) for r in auto if r.get('metrics')) or '-'}
- auto test r2 (median) {fmt(auto_r2, '{:.4f}')}; best single algorithm {best[0] if best else '-'} {fmt(best[1] if best else None, '{:.4f}')}
- the last auto run's NOTICEs (seconds since the call began): {timeline}

Leaderboard of the last auto run (`metrics->'search_results'`):

{table(["algorithm", "hyperparams", "mean cv r2", "std", "fit s", "status"], board_rows) if board_rows else '-'}
""")

    head = f"""# Issue #19 benchmarks: pgml.explain, pgml.evaluate, AutoML

- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S} UTC; benches/ml_explain.sh, one run, sides interleaved
  (order rotating by round), medians of {E.get('REPEAT')} rounds
- host: {platform.node()} ({os.cpu_count()} CPUs, {platform.machine()}); load average at the end: {E.get('LOADAVG')}
- PostgreSQL {E.get('PG_VERSION')} (shared_buffers {E.get('SHARED_BUFFERS')}), pgmlcat {E.get('PGMLCAT_VERSION')},
  `[ml] threads = {E.get('THREADS')}`, pool_size {E.get('POOL_SIZE')}
- CPU: user + sys from /proc/<pid>/stat (postgres: the postmaster, its live and reaped children);
  a run during which other work took more than {E.get('NOISY_BUSY', '25')}% of the CPU is run again (once)
"""
    if busy:
        head += f"- other work took more than 10% of the CPU during: {'; '.join(busy)}\n"
    if redone:
        head += "- run again (not counted): " + "; ".join(
            f"{r['section']} {r['side']} round {r['round']} ({r['wall']:.2f} s, other work {r['other_busy']}%)" for r in redone) + "\n"
    for n in notes:
        head += f"- {n}\n"
    md = head + "\n## Targets\n\n" + ("\n".join(f"- {t}" for t in targets) or "-") + "\n\n" + "\n".join(body)
    if err_lines:
        md += "\n## Errors\n\n" + "\n".join(err_lines) + "\n"
    with open(E["MD_OUT"], "w") as f:
        f.write(md)
    print(md)


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "gen":
        gen()
    elif cmd == "prep":
        prep()
    elif cmd == "run":
        sys.exit(run(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    elif cmd == "pyeval":
        pyeval(*sys.argv[2:7])
    elif cmd == "pyshap":
        pyshap(*sys.argv[2:7])
    elif cmd == "report":
        report()
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
