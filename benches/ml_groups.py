"""Data, measurements, the Python baseline and the report of
benches/ml_groups.sh (issue #18). Run by it, not by hand:

    python3 ml_groups.py gen SECTIONS            # tables on the clusters ($SHARD_DSNS)
    python3 ml_groups.py sql SECTION SIDE        # prints the pgml.train call of a side
    python3 ml_groups.py run SECTION SIDE ROUND  # one measured run -> a JSON line in $OUT
    python3 ml_groups.py pygroups DSN RELATION LABEL GROUP THREADS ITERATIONS TEST_SIZE
                                                 # the Python side of B (timed as a process)
    python3 ml_groups.py report                  # $OUT -> markdown ($MD_OUT)
    python3 ml_groups.py diag-a                  # A's pushdown statement in variants on shard 0 (appends to $MD_OUT)

Sections (sizes from the environment, see benches/ml_groups.sh):
  A  lin (A_ROWS rows, x1..x10 float8, y = 1.5 + A_COEFS . x + noise) split by
     id % 2 over two clusters; pgml.train(algorithm => 'linear') through a
     2-shard pgmlcat with hyperparams {"pushdown": true} against {"pushdown": false}.
  B  grp (N_GROUPS groups x GROUP_ROWS rows, g int4, f1..f10 float4, y float4 with a
     per-group relation) on shard 0; pgml.train(algorithm => 'lightgbm',
     group_by => 'g', test_sampling => 'last', test_size => 0.25) against
     `pygroups` (psycopg binary COPY -> pandas groupby -> one lightgbm.train
     per group on the first 75% of the group's rows, same parameters and threads).
  C  big (C_ROWS rows, f1..f10 float4, y float4) on shard 0; LightGBM with
     {"streaming": true} against {"streaming": false}, a fresh pgmlcat per run
     so its VmHWM is that run's peak RSS.

Per run: wall time at the client; CPU (user + sys) of pgmlcat (all threads),
of every PostgreSQL cluster (postmaster, live children, reaped children) and,
for a process side, of that process; bytes the proxy (or the Python process)
received from the databases, summed over its TCP connections to the
clusters' ports from the kernel's per-socket counters (`ss -ti`
bytes_received, sampled every SS_INTERVAL seconds so connections closed
during the run are counted up to their last sample), and pgmlcat's
/proc/<pid>/io rchar for comparison; pgmlcat's VmHWM and VmRSS after the run;
the NOTICEs of the call; the share of the machine's CPU other work took.
"""

import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from ml_proc import builds_running, cluster_ticks, postmaster_pid, proc_ticks, system_ticks

E = os.environ
TICK = os.sysconf("SC_CLK_TCK")
FEATS = [f"f{i}" for i in range(1, 11)]
XS = [f"x{i}" for i in range(1, 11)]
# Section A's true model: y = A_INTERCEPT + sum(A_COEFS[i] * x_{i+1}) + U(-0.05, 0.05).
A_INTERCEPT = 1.5
A_COEFS = [1.0, -2.0, 3.0, -4.0, 5.0, 0.5, -0.5, 2.5, -1.5, 0.25]

SIDES = {
    "A": ("pushdown", "pull"),
    "B": ("pgmlcat", "python"),
    "C": ("streaming", "in-memory"),
}


def log(msg):
    print(f"[ml_groups {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def env_int(name, default):
    return int(E.get(name, default))


# ------------------------------------------------------------------ /proc


def proc_kv(path):
    out = {}
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k.strip()] = v.strip()
    except OSError:
        pass
    return out


def rchar(pid):
    return int(proc_kv(f"/proc/{pid}/io").get("rchar", "0"))


def status_kb(pid, key):
    v = proc_kv(f"/proc/{pid}/status").get(key)
    return int(v.split()[0]) if v else None


def wait_for_builds(label):
    """No measurement while a cargo build runs on this shared 2-core machine."""
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
            log(f"waiting (up to {limit:.0f}s) for a build to end before {label}: {' '.join(b[:4])}")
            first = False
        if time.time() - started > limit:
            log(f"WARNING: still building after {limit:.0f}s; measuring anyway")
            return f"measured while a cargo build ran ({' '.join(b[:3])})"
        time.sleep(5)


# ------------------------------------------------------------------ server log
# The clusters log every statement of 100 ms or more (log_min_duration_statement);
# the report lists those of 1 s or more.
LOG_RE = re.compile(r"LOG:  duration: ([\d.]+) ms  (?:statement|execute[^:]*): (.*)$")


def log_offsets():
    return [os.path.getsize(p) if os.path.exists(p) else 0 for p in E.get("PG_LOGS", "").split(",") if p]


def slow_statements(offsets):
    """[(shard, seconds, statement's first 160 characters)] logged since offsets (100 ms or more)."""
    out = []
    for shard, (path, off) in enumerate(zip([p for p in E.get("PG_LOGS", "").split(",") if p], offsets)):
        try:
            with open(path, "rb") as f:
                f.seek(off)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        for line in text.splitlines():
            m = LOG_RE.search(line)
            if m:
                out.append((shard, float(m[1]) / 1000, m[2][:160]))
    return out


# ------------------------------------------------------------------ socket bytes
SS_ADDR = re.compile(r"^\s*\d+\s+\d+\s+(\S+)\s+(\S+)")


def ss_snapshot(ports):
    """{(local, peer): bytes_received} of the established TCP connections to
    one of `ports` (the client ends: peer port in ports)."""
    flt = " or ".join(f"dport = :{p}" for p in ports)
    try:
        text = subprocess.run(["ss", "-tinH", "state", "established", f"( {flt} )"],
                              capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    out, key = {}, None
    for line in text.splitlines():
        m = SS_ADDR.match(line)
        if m and not line.startswith(("\t", " " * 8)):
            key = (m[1], m[2])
            out.setdefault(key, 0)
            continue
        if key is not None:
            b = re.search(r"bytes_received:(\d+)", line)
            if b:
                out[key] = int(b[1])
    return out


class Monitor:
    """Samples the sockets' bytes_received (and a pid's VmRSS) until stopped."""

    def __init__(self, ports, pid=None):
        self.ports, self.pid = ports, pid
        self.before = ss_snapshot(ports)
        self.seen = dict(self.before)
        self.rss_max = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _sample(self):
        for k, v in ss_snapshot(self.ports).items():
            if v > self.seen.get(k, -1):
                self.seen[k] = v
        if self.pid:
            self.rss_max = max(self.rss_max, status_kb(self.pid, "VmRSS") or 0)
        self.samples += 1

    def _loop(self):
        interval = float(E.get("SS_INTERVAL", "0.5"))
        while not self._stop.wait(interval):
            self._sample()

    def stop(self):
        self._stop.set()
        self._thread.join()
        self._sample()
        gone = [k for k in self.before if k not in ss_snapshot(self.ports)]
        return sum(v - self.before.get(k, 0) for k, v in self.seen.items()), len(gone)


# ------------------------------------------------------------------ data
def sql_a(shard):
    xs = ", ".join(f"(random() * 2 - 1) AS {x}" for x in XS)
    lin = " + ".join(f"({c}) * {x}" for c, x in zip(A_COEFS, XS))
    start = 2 if shard == 0 else 1  # rows split by id % 2: shard 0 even ids, shard 1 odd ids
    n = env_int("A_ROWS", 10_000_000)
    return f"""
SELECT setseed({0.1 + 0.2 * shard});
DROP VIEW IF EXISTS lin_view; DROP TABLE IF EXISTS lin;
CREATE UNLOGGED TABLE lin WITH (autovacuum_enabled = off) AS
SELECT id, {", ".join(XS)}, ({A_INTERCEPT} + {lin} + 0.1 * (random() - 0.5))::float8 AS y
FROM (SELECT g::bigint AS id, {xs} FROM generate_series({start}, {n}, 2) g) s;
CREATE VIEW lin_view AS SELECT {", ".join(XS)}, y FROM lin;
VACUUM (FREEZE, ANALYZE) lin;
"""


def sql_b():
    groups, per = env_int("N_GROUPS", 1000), env_int("GROUP_ROWS", 2000)
    fs = ", ".join(f"random()::float4 AS {f}" for f in FEATS)
    # Each group its own relation: slope of f1, phase of the sine, weight of f5.
    return f"""
SELECT setseed(0.5);
DROP VIEW IF EXISTS grp_view; DROP TABLE IF EXISTS grp;
CREATE UNLOGGED TABLE grp WITH (autovacuum_enabled = off) AS
SELECT id, g, {", ".join(FEATS)},
       (((g % 7) - 3) * f1 + sin(6 * f2 + (g % 5)) + 2 * f3 * f4 - (g % 3) * f5 + 0.5 * f6 * f6
        - f7 * f8 + 0.1 * random())::float4 AS y
FROM (SELECT i::bigint AS id, (i % {groups})::int AS g, {fs}
      FROM generate_series(0, {groups * per - 1}) i) s;
CREATE VIEW grp_view AS SELECT g, {", ".join(FEATS)}, y FROM grp;
VACUUM (FREEZE, ANALYZE) grp;
"""


def sql_c():
    fs = ", ".join(f"random()::float4 AS {f}" for f in FEATS)
    return f"""
SELECT setseed(0.42);
DROP TABLE IF EXISTS big;
CREATE UNLOGGED TABLE big WITH (autovacuum_enabled = off) AS
SELECT {", ".join(FEATS)},
       (3 * f1 - 2 * f2 + 4 * f3 * f4 + sin(6 * f5) + (f6 > 0.5)::int
        + 0.5 * f7 * f7 - f8 * f9 + 0.1 * random())::float4 AS y
FROM (SELECT {fs} FROM generate_series(1, {env_int("C_ROWS", 20_000_000)})) s;
VACUUM (FREEZE, ANALYZE) big;
"""


# A 100-row table on every shard: the first pgml.train through a new pool
# creates the catalog; done before the measured runs.
SQL_WARM = """
DROP TABLE IF EXISTS warm;
CREATE TABLE warm AS SELECT random() AS x1, random() AS y FROM generate_series(1, 100);
"""


def gen(sections):
    import psycopg

    dsns = E["SHARD_DSNS"].split("|")
    jobs = {i: [("warm", SQL_WARM)] for i in range(len(dsns))}
    if "A" in sections:
        for i in range(min(2, len(dsns))):
            jobs[i].append(("lin", sql_a(i)))
    if "B" in sections:
        jobs[0].append(("grp", sql_b()))
    if "C" in sections:
        jobs[0].append(("big", sql_c()))
    errors = []

    def work(i):
        try:
            with psycopg.connect(dsns[i], autocommit=True) as conn:
                for name, sql in jobs[i]:
                    t0 = time.perf_counter()
                    for stmt in (x.strip() for x in sql.split(";")):
                        if stmt:
                            conn.execute(stmt)
                    size = conn.execute(
                        "SELECT pg_size_pretty(pg_total_relation_size(%s::regclass)), "
                        "(SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass)",
                        (name, name)).fetchone()
                    log(f"shard {i}: {name} ready in {time.perf_counter() - t0:.1f}s ({size[1]} rows, {size[0]})")
                    if name != "warm":
                        conn.execute(f"SELECT count(*) FROM {name}")  # into the OS cache
        except Exception as e:  # noqa: BLE001
            errors.append(f"shard {i}: {e}")

    threads = [threading.Thread(target=work, args=(i,)) for i in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit("data generation failed: " + "; ".join(errors))


# ------------------------------------------------------------------ the calls
def train_sql(section, side):
    override = E.get(f"SQL_{section}_{side.replace('-', '_').upper()}")
    if override:  # e.g. SQL_C_IN_MEMORY='SELECT * FROM pgml.train(...)' (same project name)
        return override
    if section == "A":
        push = "true" if side == "pushdown" else "false"
        return (f"SELECT * FROM pgml.train('lin_{side}', 'regression', 'lin_view', 'y', algorithm => 'linear', "
                f"hyperparams => '{{\"pushdown\": {push}}}')")
    if section == "B":
        it = env_int("B_ITERATIONS", 100)
        return (f"SELECT * FROM pgml.train('grp_lgb', 'regression', 'grp_view', 'y', algorithm => 'lightgbm', "
                f"hyperparams => '{{\"num_iterations\": {it}}}', test_size => 0.25, test_sampling => 'last', "
                f"group_by => 'g')")
    if section == "C":
        it = env_int("C_ITERATIONS", 50)
        st = "true" if side == "streaming" else "false"
        name = "big_stream" if side == "streaming" else "big_memory"
        return (f"SELECT * FROM pgml.train('{name}', 'regression', 'big', 'y', algorithm => 'lightgbm', "
                f"hyperparams => '{{\"num_iterations\": {it}, \"streaming\": {st}}}', test_size => 0.25, "
                f"test_sampling => 'last')")
    raise SystemExit(f"unknown section {section}")


def project_of(section, side):
    m = re.search(r"pgml\.train\('([^']+)'", train_sql(section, side))
    return m[1]


def last_model(conn, project):
    """The newest model row of the project that is not one group's model:
    (id, metrics, number of per-group rows pointing at it)."""
    try:
        row = conn.execute(
            "SELECT m.id, m.metrics, (SELECT count(*) FROM pgml.models c WHERE c.group_of = m.id) "
            "FROM pgml.models m JOIN pgml.projects p ON p.id = m.project_id "
            "WHERE p.name = %s AND m.group_of IS NULL ORDER BY m.id DESC LIMIT 1", (project,)).fetchone()
    except Exception:  # noqa: BLE001 - a catalog without group_of
        conn.rollback() if not conn.autocommit else None
        row = conn.execute(
            "SELECT m.id, m.metrics, NULL FROM pgml.models m JOIN pgml.projects p ON p.id = m.project_id "
            "WHERE p.name = %s ORDER BY m.id DESC LIMIT 1", (project,)).fetchone()
    return row


def model_bytes(conn, model_id):
    """Bytes of pgml.files the training stored: its model and its group models'."""
    try:
        return conn.execute(
            "SELECT coalesce(sum(octet_length(f.data)), 0) FROM pgml.files f WHERE f.model_id = %s "
            "OR f.model_id IN (SELECT id FROM pgml.models WHERE group_of = %s)", (model_id, model_id)).fetchone()[0]
    except Exception:  # noqa: BLE001 - a catalog without group_of
        return conn.execute("SELECT coalesce(sum(octet_length(data)), 0) FROM pgml.files WHERE model_id = %s",
                            (model_id,)).fetchone()[0]


def linear_coefs(conn, model_id):
    try:
        row = conn.execute(
            "SELECT convert_from(string_agg(data, ''::bytea ORDER BY part), 'UTF8') FROM pgml.files "
            "WHERE model_id = %s AND path = 'model'", (model_id,)).fetchone()
        d = json.loads(row[0])
        out = d["outputs"][0]
        return dict(intercept=out["intercept"], coefs=out["params"]["data"])
    except Exception as e:  # noqa: BLE001
        return dict(error=f"{type(e).__name__}: {e}")


def finding(text):
    path = E.get("FINDINGS")
    if not path:
        return
    with open(path, "a") as f:
        f.write(text.rstrip() + "\n")


def run(section, side, rnd):
    import psycopg

    ports = [int(p) for p in E["PG_PORTS_CSV"].split(",")]
    pms = [postmaster_pid(d) for d in E["PG_DATADIRS"].split(",")]
    pgmlcat = int(E["PGMLCAT_PID"])
    build_note = wait_for_builds(f"{section} {side} round {rnd}")
    is_process = section == "B" and side == "python"
    sql = None if is_process else train_sql(section, side)
    notices = []  # [seconds since the call started, message]
    t_start = [time.perf_counter()]
    time.sleep(0.3)

    conn = None
    if not is_process:
        conn = psycopg.connect(E["PROXY_DSN"], autocommit=True)
        conn.add_notice_handler(lambda d: notices.append([round(time.perf_counter() - t_start[0], 3), d.message_primary]))
    child_pid = None
    mon = Monitor(ports, pgmlcat)
    s0, p0, r0 = system_ticks(), proc_ticks(pgmlcat), rchar(pgmlcat)
    c0 = [cluster_ticks(pm) for pm in pms]
    logs0 = log_offsets()
    t0 = t_start[0] = time.perf_counter()
    err, result, child, child_ru, child_maxrss_kb = None, None, None, None, None
    if is_process:
        argv = [sys.executable, os.path.abspath(__file__), "pygroups", E["DIRECT_DSN"], "grp_view", "y", "g",
                E["THREADS"], str(env_int("B_ITERATIONS", 100)), "0.25"]
        env = dict(E)
        if E.get("PY_PATH"):
            env["PYTHONPATH"] = E["PY_PATH"] + (":" + E["PYTHONPATH"] if E.get("PYTHONPATH") else "")
        with open(E["OUT"] + ".child.out", "w+b") as fo, open(E["OUT"] + ".child.err", "w+b") as fe:
            p = subprocess.Popen(argv, stdout=fo, stderr=fe, env=env)
            child_pid = p.pid
            # wait4 for the child's own rusage (the sampler's `ss` runs are children too).
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            child_ru = ru.ru_utime + ru.ru_stime
            child_maxrss_kb = ru.ru_maxrss
            fo.seek(0)
            fe.seek(0)
            out, errout = fo.read(), fe.read()
        if p.returncode != 0:
            err = f"pygroups exited {p.returncode}: {errout.decode(errors='replace')[-2000:]}"
        else:
            try:
                child = json.loads(out.decode().strip().splitlines()[-1])
            except (ValueError, IndexError) as e:
                err = f"pygroups printed no JSON ({e}): {out[-500:]!r}"
    else:
        try:
            cur = conn.execute(sql)
            if cur.description is not None:
                cols = [d.name for d in cur.description]
                result = [dict(zip(cols, [str(v) for v in row])) for row in cur.fetchall()]
        except psycopg.Error as e:
            err = f"{type(e).__name__}: {e}".strip()
            if getattr(e, "sqlstate", None):
                err = f"[{e.sqlstate}] {err}"
    wall = time.perf_counter() - t0
    c1 = [cluster_ticks(pm) for pm in pms]
    alive = os.path.exists(f"/proc/{pgmlcat}")
    p1 = proc_ticks(pgmlcat) if alive else p0
    r1 = rchar(pgmlcat) if alive else r0
    s1 = system_ticks()
    hwm = status_kb(pgmlcat, "VmHWM") if alive else None
    rss = status_kb(pgmlcat, "VmRSS") if alive else None
    received, closed = mon.stop()
    time.sleep(0.2)
    slow = slow_statements(logs0)
    if conn is not None:
        conn.close()
    child_cpu = child_ru if is_process else None
    pg_cpu = sum(b - a for a, b in zip(c0, c1)) / TICK
    ours = (p1 - p0) + sum(b - a for a, b in zip(c0, c1)) + (child_cpu or 0) * TICK
    other = max(0.0, (s1[1] - s0[1]) - ours) / max(1, s1[0] - s0[0])

    r = dict(section=section, side=side, round=rnd, sql=sql, wall=wall, error=err, result=result,
             notices=notices, proxy_cpu=(p1 - p0) / TICK, pg_cpu=pg_cpu,
             pg_cpu_each=[(b - a) / TICK for a, b in zip(c0, c1)], child_cpu=child_cpu,
             bytes_received=received, sockets_closed=closed, ss_samples=mon.samples,
             proxy_rchar=r1 - r0, vm_hwm_kb=hwm, vm_rss_kb=rss, rss_sampled_max_kb=mon.rss_max,
             proxy_alive=alive, other_busy=round(100 * other, 1), note=build_note, child=child, slow=slow,
             child_maxrss_kb=child_maxrss_kb)
    if not alive:
        r["error"] = (err or "") + " (pgmlcat died during the run)"

    if not is_process and r["error"] is None:
        try:
            with psycopg.connect(E["DIRECT_DSN"], autocommit=True) as d:
                m = last_model(d, project_of(section, side))
                if m:
                    r["model_id"], r["metrics"], r["group_rows"] = m[0], m[1], m[2]
                    if section == "A":
                        r["coefs"] = linear_coefs(d, m[0])
                    r["model_bytes"] = model_bytes(d, m[0])
        except Exception as e:  # noqa: BLE001
            r["catalog_error"] = f"{type(e).__name__}: {e}"

    with open(E["OUT"], "a") as f:
        f.write(json.dumps(r) + "\n")
    msg = (f"{section} round {rnd} {side}: {wall:.2f}s (cpu proxy {r['proxy_cpu']:.1f}s, postgres {pg_cpu:.1f}s"
           + (f", python {child_cpu:.1f}s" if child_cpu is not None else "")
           + f"; received {received / 1e6:.1f} MB; proxy VmHWM {(hwm or 0) / 1024:.0f} MiB; "
           f"other work {r['other_busy']}%)")
    if r["error"]:
        msg += f" ERROR {r['error']}"
        finding(f"- {datetime.datetime.now():%Y-%m-%d %H:%M:%S} section {section} ({side}), round {rnd}: "
                f"`{sql or 'pygroups'}` failed:\n\n  ```\n  {r['error']}\n  ```")
    log(msg)
    if child_pid is None and r["error"] is None and r.get("metrics"):
        log(f"  model {r.get('model_id')}: r2 {r['metrics'].get('r2')}, groups {r['metrics'].get('groups')}")
    if r["error"] is not None:
        return 3
    # Another process took the CPU: benches/ml_groups.sh may run this side again (the report keeps the last).
    return 4 if r["other_busy"] > float(E.get("NOISY_BUSY", "25")) else 0


# ------------------------------------------------------------------ Python baseline (B)
def pygroups(dsn, relation, label, group, threads, iterations, test_size):
    t_start = time.perf_counter()
    import lightgbm as lgb
    import numpy as np
    import pandas as pd
    import psycopg
    from psycopg import sql

    t_import = time.perf_counter()
    threads, iterations, test_size = int(threads), int(iterations), float(test_size)
    dtypes = {20: ">i8", 21: ">i2", 23: ">i4", 700: ">f4", 701: ">f8"}
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(sql.Identifier(relation)))
            cols = [(d.name, d.type_code) for d in cur.description]
            for name, oid in cols:
                if oid not in dtypes:
                    raise SystemExit(f"column {name}: type oid {oid} not handled")
            buf = bytearray()
            q = sql.SQL("COPY (SELECT * FROM {}) TO STDOUT (FORMAT BINARY)").format(sql.Identifier(relation))
            with cur.copy(q) as copy:
                for chunk in copy:
                    buf += chunk
    # PGCOPY header: 11-byte signature, int32 flags, int32 extension length;
    # then per row int16 field count and per field int32 length + value.
    start = 19 + int.from_bytes(buf[15:19], "big")
    fields = [("n", ">i2")]
    for i, (_, oid) in enumerate(cols):
        fields += [(f"l{i}", ">i4"), (f"v{i}", dtypes[oid])]
    row = np.dtype(fields)
    body = len(buf) - start - 2
    copy_bytes = len(buf)
    if body % row.itemsize:
        raise SystemExit("unexpected COPY layout (NULLs?)")
    rec = np.frombuffer(buf, dtype=row, count=body // row.itemsize, offset=start)
    df = pd.DataFrame({name: rec[f"v{i}"].astype(rec[f"v{i}"].dtype.newbyteorder("=")) for i, (name, _) in
                       enumerate(cols)})
    del rec, buf
    t_load = time.perf_counter()

    features = [c for c, _ in cols if c not in (label, group)]
    params = {"objective": "regression", "num_iterations": iterations, "num_threads": threads, "verbosity": -1}
    fit_s = score_s = 0.0
    ys, preds = [], []
    n_groups = 0
    for _, part in df.groupby(group, sort=False):
        t0 = time.perf_counter()
        n = len(part)
        n_test = min(max(int(np.floor(n * test_size + 0.5)), 1), n - 1)
        n_train = n - n_test
        x = part[features].to_numpy(dtype=np.float32)
        y = part[label].to_numpy(dtype=np.float32)
        booster = lgb.train(params, lgb.Dataset(x[:n_train], y[:n_train], params=params))
        t1 = time.perf_counter()
        preds.append(booster.predict(x[n_train:], num_threads=threads))
        ys.append(y[n_train:].astype(np.float64))
        score_s += time.perf_counter() - t1
        fit_s += t1 - t0
        n_groups += 1
    y_all, p_all = np.concatenate(ys), np.concatenate(preds)
    r2 = 1.0 - np.sum((y_all - p_all) ** 2) / np.sum((y_all - y_all.mean()) ** 2)
    print(json.dumps(dict(rows=len(df), groups=n_groups, copy_bytes=copy_bytes, import_s=t_import - t_start, load_s=t_load - t_import,
                          fit_s=fit_s, score_s=score_s, total_s=time.perf_counter() - t_start, r2=float(r2),
                          pandas=pd.__version__, lightgbm=lgb.__version__)))


# ------------------------------------------------------------------ diagnostics of A's pushdown
SPLIT_RE = re.compile(r"\(\((?:hashtext\((\w+)::text\)|hash_record\((\w+)\)) & 2147483647\) % 10000\) < (\d+)")


def diag_a():
    """pgmlcat's pushdown aggregate (the last one shard 0 logged) run straight
    on shard 0 in variants, to see where its time goes. Appends a markdown
    section to $MD_OUT."""
    import psycopg

    path = E["PG_LOGS"].split(",")[0]
    stmt = None
    with open(path, errors="replace") as f:
        for line in f:
            m = re.search(r"LOG:  duration: [\d.]+ ms  (?:statement|execute[^:]*): (SELECT .*count\(\*\).*)$", line)
            if m and SPLIT_RE.search(m[1]):
                stmt = m[1].strip()
    if stmt is None:
        log("diag A: no pushdown statement in the shard 0 log")
        return
    m = SPLIT_RE.search(stmt)
    row, cut = m[1] or m[2], m[3]
    by_text = f"((hashtext({row}::text) & 2147483647) % 10000) < {cut}"
    by_record = f"((hash_record({row}) & 2147483647) % 10000) < {cut}"
    split_as_ran = m[0]
    variants = [("pgmlcat's statement as it ran", "", stmt),
                ("same, jit = off", "SET jit = off", stmt),
                ("split by hashtext(row::text)", "", SPLIT_RE.sub(lambda _: by_text, stmt)),
                ("split by hash_record(row)", "", SPLIT_RE.sub(lambda _: by_record, stmt)),
                ("no split (t = false: the aggregates alone)", "", SPLIT_RE.sub("false", stmt)),
                ("no split, jit = off", "SET jit = off", SPLIT_RE.sub("false", stmt))]
    rel = re.search(r"FROM (\S+) AS (\w+)\)", stmt)
    if rel:
        variants.append((f"the split alone, as it ran: count(*) GROUP BY `{split_as_ran}`", "",
                         f"SELECT t, count(*) FROM (SELECT {split_as_ran} AS t FROM {rel[1]} AS {rel[2]}) s GROUP BY t"))
        variants.append(("a plain scan: count(*)", "", f"SELECT count(*) FROM {rel[1]}"))
    rows = []
    for name, setup, sql in variants:
        times = []
        for _ in range(int(E.get("DIAG_REPEAT", "2"))):
            wait_for_builds(f"diag A: {name}")
            with psycopg.connect(E["DIRECT_DSN"], autocommit=True) as conn:
                if setup:
                    conn.execute(setup)
                t0 = time.perf_counter()
                try:
                    conn.execute(sql).fetchall()
                    times.append(time.perf_counter() - t0)
                except psycopg.Error as e:
                    times = None
                    name += f" (error: {e})"
                    break
        rows.append([name, fmt(med(times) if times else None), ", ".join(f"{t:.2f}" for t in times or [])])
        log(f"diag A: {name}: {rows[-1][1]} s")
    md = f"""
## Diagnostics of A's pushdown (shard 0 alone, {env_int('A_ROWS', 10_000_000) // 2:,} rows, straight on Postgres)

pgmlcat's aggregate statement, taken from shard 0's log, run again on shard 0 without pgmlcat and
without shard 1 running, in variants (`python3 benches/ml_groups.py diag-a`; medians of {E.get('DIAG_REPEAT', '2')} runs):

{table(["variant", "s (median)", "runs"], rows)}
"""
    with open(E["MD_OUT"], "a") as f:
        f.write(md)
    print(md)


# ------------------------------------------------------------------ report
def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, f="{:.2f}"):
    return "-" if v is None else f.format(v)


def mb(v):
    if v is None:
        return "-"
    if v < 1e6:
        return f"{v / 1e3:.1f} kB"
    return f"{v / 1e6:,.1f} MB"


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def metric(r, key):
    m = r.get("metrics") or {}
    v = m.get(key)
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def notice_texts(r):
    return [(n[0], n[1]) if isinstance(n, list) else (None, n) for n in r.get("notices") or []]


def peak_notice(r):
    for _, n in reversed(notice_texts(r)):
        if re.search(r"peak|memory|RSS", n, re.I):
            return n
    return None


def read_notice_at(r):
    """Seconds from the call's start to its NOTICE 'read N rows ...' (the pull's end)."""
    for t, n in notice_texts(r):
        if t is not None and re.search(r"\bread \d+ rows", n):
            return t
    return None


def report():
    every = [json.loads(line) for line in open(E["OUT"]) if line.strip()]
    # A side's round run again (the machine was busy with other work) counts once: its last run.
    last = {}
    for i, r in enumerate(every):
        last[(r["section"], r["side"], r["round"])] = i
    runs = [r for i, r in enumerate(every) if last[(r["section"], r["side"], r["round"])] == i]
    redone = [r for i, r in enumerate(every) if last[(r["section"], r["side"], r["round"])] != i]
    by = {}
    for r in runs:
        by.setdefault((r["section"], r["side"]), []).append(r)

    def ok(section, side):
        return [r for r in by.get((section, side), []) if not r["error"]]

    def errors(section, side):
        return [r for r in by.get((section, side), []) if r["error"]]

    def walls(section, side):
        return med([r["wall"] for r in ok(section, side)])

    def runs_text(section, side):
        return ", ".join(f"{r['wall']:.2f}" + ("!" if r["error"] else "") for r in by.get((section, side), []))

    def pair_ratios(section, a, b):
        """Ratio a/b round by round (the runs of one round ran back to back)."""
        ra = {r["round"]: r["wall"] for r in ok(section, a)}
        rb = {r["round"]: r["wall"] for r in ok(section, b)}
        return [ra[k] / rb[k] for k in sorted(ra) if k in rb and rb[k] > 0]

    def ratio_text(vals):
        if not vals:
            return "-"
        return f"{statistics.median(vals):.2f} (rounds: {', '.join(f'{v:.2f}' for v in vals)})"

    def slow_text(section, side):
        rs = ok(section, side)
        if not rs:
            return "-"
        sl = [x for x in rs[-1].get("slow") or [] if x[1] >= 1.0]
        if not sl:
            return "none"
        return "; ".join(f"shard {sh}: {sec:.2f} s `{st[:110].replace('|', '/')}`" for sh, sec, st in sl[:6])

    sections = E.get("SECTIONS", "A B C").split()
    targets, err_lines, body = [], [], []
    for (sec, side), rs in sorted(by.items()):
        for r in rs:
            if r["error"]:
                err_lines.append(f"- {sec} {side} round {r['round']}: `{r['error'].strip()[:1500]}`")

    if "A" in sections:
        rows = []
        for side in SIDES["A"]:
            rs = ok("A", side)
            coef_err = []
            for r in rs:
                c = r.get("coefs") or {}
                if "coefs" in c:
                    coef_err.append(max([abs(c["intercept"] - A_INTERCEPT)] +
                                        [abs(x - t) for x, t in zip(c["coefs"], A_COEFS)]))
            rows.append([
                f"`{{\"pushdown\": {'true' if side == 'pushdown' else 'false'}}}`",
                fmt(walls("A", side)), runs_text("A", side),
                mb(med([r["bytes_received"] for r in rs])),
                fmt(med([r["proxy_cpu"] for r in rs])), fmt(med([r["pg_cpu"] for r in rs])),
                fmt(med([metric(r, "fit_time") for r in rs])) + " / " + fmt(med([metric(r, "score_time") for r in rs])),
                fmt(med([metric(r, "r2") for r in rs]), "{:.6f}"), fmt(med(coef_err), "{:.2e}"),
            ])
        pr = pair_ratios("A", "pull", "pushdown")
        coef_diff = None
        cp = [(r.get("coefs") or {}) for r in ok("A", "pushdown")]
        cl = [(r.get("coefs") or {}) for r in ok("A", "pull")]
        cp = [c for c in cp if "coefs" in c]
        cl = [c for c in cl if "coefs" in c]
        if cp and cl:
            a, b = cp[-1], cl[-1]
            coef_diff = max([abs(a["intercept"] - b["intercept"])] +
                            [abs(x - y) for x, y in zip(a["coefs"], b["coefs"])])
        body.append(f"""## A. Linear regression on 2 shards: pushdown against pull-and-fit

{env_int('A_ROWS', 10_000_000):,} rows x 10 float8 features + float8 label (`y = {A_INTERCEPT} + {' + '.join(f'{c}*x{i + 1}' for i, c in enumerate(A_COEFS))} + U(-0.05, 0.05)`, x uniform in [-1, 1]),
rows split by `id % 2` over two PostgreSQL clusters (shards 0 and 1 of one pgmlcat pool, `default_shard = "all"`);
`SELECT * FROM pgml.train('lin_<side>', 'regression', 'lin_view', 'y', algorithm => 'linear', hyperparams => '{{"pushdown": true|false}}')`
(test_size default 0.25; the split rules differ: pushdown by the row hash in SQL, pull by the default sampling).

{table(["hyperparams", "wall s (median)", "runs", "bytes DB -> proxy", "proxy CPU s", "postgres CPU s (both)", "fit / score s (metrics)", "test r2", "max abs coef error vs truth"], rows)}

- pull / pushdown wall time, per round: {ratio_text(pr)}
- largest difference between the pushdown and pull coefficients (last run of each): {fmt(coef_diff, '{:.2e}')}
- server statements of 1 s or more, last pushdown run: {slow_text("A", "pushdown")}
- server statements of 1 s or more, last pull run: {slow_text("A", "pull")}
""")
        if pr:
            v = statistics.median(pr)
            targets.append(f"A: pushdown is {v:.2f}x faster than pull-and-fit (target >= 5x: {'met' if v >= 5 else 'NOT met'}); "
                           f"bytes DB -> proxy {mb(med([r['bytes_received'] for r in ok('A', 'pushdown')]))} vs "
                           f"{mb(med([r['bytes_received'] for r in ok('A', 'pull')]))}")
        else:
            targets.append("A: no ratio (a side failed; see the errors)")

    if "B" in sections:
        rows = []
        for side in SIDES["B"]:
            rs = ok("B", side)
            if side == "pgmlcat":
                groups = med([float(r["result"][0].get("groups")) if r.get("result") and
                              r["result"][0].get("groups") not in (None, "None") else None for r in rs])
                cat = med([r.get("group_rows") for r in rs])
                r2 = med([metric(r, "r2") for r in rs])
                cpu_side = fmt(med([r["proxy_cpu"] for r in rs]))
                read_at = med([read_notice_at(r) for r in rs])
                phases = "-" if read_at is None or walls("B", side) is None else (
                    f"pulled (the 'read ... rows' NOTICE) at {fmt(read_at)}, then training and storing "
                    f"{fmt(walls('B', side) - read_at)}")
                label = "pgmlcat `pgml.train(..., group_by => 'g')`"
            else:
                groups = med([r["child"]["groups"] for r in rs if r.get("child")])
                cat = None
                r2 = med([r["child"]["r2"] for r in rs if r.get("child")])
                cpu_side = fmt(med([r["child_cpu"] for r in rs]))
                ph = {k: med([r["child"][k] for r in rs if r.get("child")]) for k in
                      ("import_s", "load_s", "fit_s", "score_s")}
                phases = ", ".join(f"{k[:-2]} {fmt(v)}" for k, v in ph.items())
                label = "Python: COPY -> pandas groupby -> lightgbm.train per group"
            if side == "python":
                got = mb(med([r["child"].get("copy_bytes") for r in rs if r.get("child")])) + " (COPY data)"
            else:
                got = mb(med([r["bytes_received"] for r in rs]))
            stored = med([r.get("model_bytes") for r in rs]) if side == "pgmlcat" else None
            peak = max([(r.get("vm_hwm_kb") if side == "pgmlcat" else r.get("child_maxrss_kb")) or 0 for r in rs] or [0])
            rows.append([label, fmt(walls("B", side)), runs_text("B", side), cpu_side,
                         fmt(med([r["pg_cpu"] for r in rs])), got, mb(peak * 1024 if peak else None), mb(stored),
                         fmt(groups, "{:.0f}") + ("" if cat is None else f" ({cat:.0f} model rows)"), fmt(r2, "{:.4f}"), phases])
        pr = pair_ratios("B", "pgmlcat", "python")
        body.append(f"""## B. One LightGBM model per group: pgmlcat against Python

{env_int('N_GROUPS', 1000):,} groups x {env_int('GROUP_ROWS', 2000):,} rows (g int4 interleaved, f1..f10 float4, y float4 with a relation of its own per group), one cluster;
LightGBM regression, num_iterations {env_int('B_ITERATIONS', 100)}, {E.get('THREADS')} threads on both sides (pgmlcat `[ml] threads = {E.get('THREADS')}`);
each group's last 25% rows (scan order) are its test set on both sides (`test_sampling => 'last', test_size => 0.25`).
pgmlcat wall: the whole `pgml.train` call at the client; Python wall: the whole process (imports, connect, binary COPY,
DataFrame, groupby, one `lightgbm.train` per group, test predictions). CPU: pgmlcat's process, or the Python process.
Peak RSS: pgmlcat's VmHWM (one pgmlcat serves all of B's runs, so the largest since it started), or the Python process's.

{table(["side", "wall s (median)", "runs", "CPU s (proxy or Python)", "postgres CPU s", "bytes DB -> client", "peak RSS", "models stored (pgml.files)", "groups", "pooled test r2", "phases s"], rows)}

- pgmlcat / Python wall time, per round: {ratio_text(pr)}
""")
        if pr:
            v = statistics.median(pr)
            targets.append(f"B: pgmlcat / Python wall time = {v:.2f} (target <= 0.5: {'met' if v <= 0.5 else 'NOT met'})")
        else:
            targets.append("B: no ratio (a side failed; see the errors)")

    if "C" in sections:
        rows = []
        for side in SIDES["C"]:
            rs = ok("C", side)
            hwm = [r["vm_hwm_kb"] * 1024 if r.get("vm_hwm_kb") else None for r in by.get(("C", side), [])]
            note = next((peak_notice(r) for r in rs if peak_notice(r)), None)
            rows.append([f"`{{\"streaming\": {'true' if side == 'streaming' else 'false'}}}`",
                         fmt(walls("C", side)), runs_text("C", side),
                         mb(med([h for h, r in zip(hwm, by.get(("C", side), [])) if not r["error"]])),
                         ", ".join(mb(h) for h in hwm),
                         fmt(med([r["proxy_cpu"] for r in rs])), fmt(med([r["pg_cpu"] for r in rs])),
                         mb(med([r["bytes_received"] for r in rs])),
                         fmt(med([metric(r, "fit_time") for r in rs])) + " / " + fmt(med([metric(r, "score_time") for r in rs])),
                         fmt(med([metric(r, "r2") for r in rs]), "{:.4f}"),
                         (note or "-").replace("|", "/")])
        pr = pair_ratios("C", "streaming", "in-memory")
        hs = [r["vm_hwm_kb"] * 1024 for r in ok("C", "streaming") if r.get("vm_hwm_kb")]
        hm = [r["vm_hwm_kb"] * 1024 for r in ok("C", "in-memory") if r.get("vm_hwm_kb")]
        body.append(f"""## C. LightGBM on {env_int('C_ROWS', 20_000_000):,} rows: streaming against in-memory

{env_int('C_ROWS', 20_000_000):,} rows x 10 float4 features + float4 label, one cluster;
`pgml.train('big_<side>', 'regression', 'big', 'y', algorithm => 'lightgbm', hyperparams => '{{"num_iterations": {env_int('C_ITERATIONS', 50)}, "streaming": true|false}}', test_size => 0.25, test_sampling => 'last')`,
a freshly started pgmlcat for every run; peak RSS = pgmlcat's VmHWM (/proc/<pid>/status) right after the call.

{table(["hyperparams", "wall s (median)", "runs", "peak RSS (median)", "peak RSS per run", "proxy CPU s", "postgres CPU s", "bytes DB -> proxy", "fit / score s (metrics)", "test r2", "NOTICE on memory (first run)"], rows)}

- streaming / in-memory wall time, per round: {ratio_text(pr)}
- server statements of 1 s or more, last streaming run: {slow_text("C", "streaming")}
- server statements of 1 s or more, last in-memory run: {slow_text("C", "in-memory")}
""")
        if hs:
            targets.append(f"C: streaming peak RSS {mb(max(hs))} (max of its runs; target <= 1 GB: "
                           f"{'met' if max(hs) <= 1e9 else 'NOT met'}); in-memory path {mb(max(hm)) if hm else '-'}")
        if pr:
            v = statistics.median(pr)
            targets.append(f"C: streaming / in-memory wall time = {v:.2f} (target <= 1.1: {'met' if v <= 1.1 else 'NOT met'})")
        elif not hs:
            targets.append("C: no figures (a side failed; see the errors)")

    notes = sorted({r["note"] for r in runs if r.get("note")})
    busy = [f"{r['section']} {r['side']} round {r['round']}: {r['other_busy']}%" for r in runs if r["other_busy"] > 10]
    redone_text = "; ".join(f"{r['section']} {r['side']} round {r['round']} ({r['wall']:.2f} s, other work "
                            f"{r['other_busy']}%)" for r in redone)
    try:
        import lightgbm
        lgb_version = lightgbm.__version__
    except ImportError:
        lgb_version = "?"
    mem = proc_kv("/proc/meminfo").get("MemTotal", "?")
    rchar_max = max([r.get("proxy_rchar") or 0 for r in runs if r["side"] != "python"] or [0])
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    md = f"""# Issue #18 benchmarks: pushdown linear regression, per-group LightGBM, bounded-memory LightGBM

- date: {now}; benches/ml_groups.sh, one run, sides interleaved (order alternating by round), medians of {E.get('REPEAT')} rounds
  unless a section says otherwise
- host: {platform.node()} ({os.cpu_count()} CPUs, {platform.machine()}, MemTotal {mem}); load average at the end: {E.get('LOADAVG')}
- PostgreSQL {E.get('PG_VERSION')} (two clusters, shared_buffers {E.get('SHARED_BUFFERS')}, jit {E.get('PG_JIT')}),
  pgmlcat {E.get('PGMLCAT_VERSION')}, `[ml] threads = {E.get('THREADS')}`, pool_size {E.get('POOL_SIZE')};
  Python lightgbm {lgb_version}
- bytes DB -> proxy: the kernel's per-socket `bytes_received` (`ss -ti`) summed over the TCP connections to
  the clusters' ports, sampled every {E.get('SS_INTERVAL', '0.5')} s during the run (pgmlcat's pooled connections
  outlive the call, so their counters hold every byte). pgmlcat's /proc/<pid>/io rchar does not see them: it
  counts read()/readv(), and pgmlcat reads sockets with recv() (rchar grew by at most {rchar_max:,} bytes in any
  run here). CPU: user + sys from /proc/<pid>/stat (postgres: postmasters, live and reaped children).
""" + "".join(f"- WARNING: {n}\n" for n in notes) + (
        f"- other work took more than 10% of the CPU during: {'; '.join(busy)}\n" if busy else "") + (
        f"- run again because other work took more than {E.get('NOISY_BUSY', '25')}% of the CPU (not counted): "
        f"{redone_text}\n" if redone else "") + "\n" + \
        "\n".join(body) + "\n## Against the targets\n\n" + "\n".join(f"- {t}" for t in targets) + "\n"
    if err_lines:
        md += "\n## Errors\n\n" + "\n".join(err_lines) + "\n"
    with open(E["MD_OUT"], "w") as f:
        f.write(md)
    print(md)


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    cmd = sys.argv[1]
    if cmd == "gen":
        gen(sys.argv[2].split())
    elif cmd == "sql":
        print(train_sql(sys.argv[2], sys.argv[3]))
    elif cmd == "run":
        sys.exit(run(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    elif cmd == "pygroups":
        pygroups(*sys.argv[2:9])
    elif cmd == "report":
        report()
    elif cmd == "diag-a":
        diag_a()
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
