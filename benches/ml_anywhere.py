"""Measurements and report of benches/ml_anywhere.sh (run by it, not by hand).

    python3 ml_anywhere.py check    # agreement checks, before measuring
    python3 ml_anywhere.py measure  # the interleaved A/B runs -> $OUT (JSON)
    python3 ml_anywhere.py report   # $OUT -> markdown ($MD_OUT)

Every statement goes as one simple-protocol Query (psycopg 3, autocommit, no
parameters), as psql would send it. A result set is read whole by libpq and
discarded (rows are not converted to Python objects inside the timing).

Per run: wall time at the client; CPU (user + sys) of pgmlcat (every
thread), of the PostgreSQL cluster (postmaster, its live children and the
children it reaped, from /proc/<pid>/stat) and of this client; the share of
the machine's CPU that other work took meanwhile (from /proc/stat, a noise
indicator); and, from the cluster's log (log_min_duration_statement = 0),
the duration of every statement the server ran, so pgmlcat's general
method splits into its phases: setup (BEGIN and the helper functions),
collection of the features (server time, which includes streaming them to
pgmlcat as fast as it reads them), CREATE TEMP TABLE, the prediction in
pgmlcat (the gap between the memo's creation and the start of its COPY),
COPY into the memo, CREATE INDEX, the statement with lookups, COMMIT.
"""

import datetime
import json
import os
import re
import resource
import statistics
import sys
import time

import psycopg
from ml_proc import builds_running, stat_fields, cluster_ticks, system_ticks

E = os.environ
FEATURES = ", ".join(f"f{i}" for i in range(1, 11))
ARR = f"ARRAY[{FEATURES}]"
PLAIN_SUM = " + ".join(f"f{i}" for i in range(1, 11))
TICK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


def log(msg):
    print(f"[ml_anywhere {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ /proc


def proxy_ticks():
    r = stat_fields(int(E["PGMLCAT_PID"]))
    return int(r[11]) + int(r[12])


def postmaster_pid():
    with open(os.path.join(E["PGDATA"], "postmaster.pid")) as f:
        return int(f.readline())


def client_seconds():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


NOTES = []


def wait_for_builds(label):
    """No measurement while a cargo build runs on this shared machine."""
    limit = float(E.get("BUILD_WAIT", "1800"))
    started = time.time()
    first = True
    while True:
        b = builds_running()
        if not b:
            if not first:
                log(f"builds done after {time.time() - started:.0f}s")
            return
        if first:
            log(f"waiting (up to {limit:.0f}s) for a build to end before {label}: {' '.join(b[:4])}")
            first = False
        if time.time() - started > limit:
            NOTES.append(f"{label}: measured while a cargo build ran ({' '.join(b[:3])})")
            log(f"WARNING: still building after {limit:.0f}s; measuring anyway")
            return
        time.sleep(5)


# ------------------------------------------------------------------ log
LOG_RE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) \S+ \[(\d+)\] LOG:  duration: ([\d.]+) ms  "
    r"(statement|parse|bind|execute)[^:]*: (.*)$"
)


def log_offset():
    return os.path.getsize(E["PG_LOG"])


def log_entries(offset):
    with open(E["PG_LOG"], "rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    out = []
    for line in text.splitlines():
        m = LOG_RE.match(line)
        if not m:
            continue
        end = datetime.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S.%f").timestamp()
        ms = float(m[3])
        out.append(dict(end=end, start=end - ms / 1000, ms=ms, kind=m[4], sql=m[5]))
    return out


def phase_of(sql):
    s = sql.lstrip()
    u = s[:40].upper()
    if "__pgml_miss" in s and "CREATE OR REPLACE FUNCTION" in s:
        return "setup"
    if u.startswith("CREATE TEMP TABLE PG_TEMP.__PGML_M"):
        return "memo_create"
    if u.startswith("COPY PG_TEMP.__PGML_M"):
        return "copy"
    if u.startswith("CREATE INDEX ON PG_TEMP.__PGML_M"):
        return "index"
    if u.startswith(("COMMIT", "ROLLBACK", "END")):
        return "commit"
    if u.startswith("BEGIN"):
        return "setup"
    if "__pgml_m" in s:
        return "final"
    if re.match(r"(?is)^(WITH .*)?SELECT \(.*\) AS k\b", s):
        return "collect"
    return "statement"


PHASES = ["setup", "collect", "memo_create", "predict", "copy", "index", "final", "commit", "statement"]


def phases(entries):
    """Server milliseconds per phase; `predict` is the gap in which the
    server waited for pgmlcat between the memo's creation and its COPY."""
    out = {}
    memo_end = copy_start = None
    for e in entries:
        p = phase_of(e["sql"])
        out[p] = out.get(p, 0.0) + e["ms"]
        if p == "memo_create":
            memo_end = e["end"]
        if p == "copy" and e["kind"] in ("statement", "execute") and copy_start is None:
            copy_start = e["start"]
    if memo_end is not None and copy_start is not None:
        out["predict"] = max(0.0, (copy_start - memo_end) * 1000)
    return out


# ------------------------------------------------------------------ runs
class Bench:
    def __init__(self):
        self.proxy = psycopg.connect(E["PROXY_DSN"], autocommit=True)
        self.direct = psycopg.connect(E["DIRECT_DSN"], autocommit=True)
        self.pm = postmaster_pid()
        self.runs = []

    def conn(self, where):
        return self.proxy if where == "proxy" else self.direct

    def reset(self):
        """Same starting state before every UPDATE run: dead tuples gone,
        dirty pages written."""
        self.direct.execute("VACUUM t")
        self.direct.execute("CHECKPOINT")

    def run(self, item, case, pair, where, sql, reset=False, keep=False):
        if reset:
            self.reset()
        time.sleep(0.2)
        off = log_offset()
        s0, p0, c0, k0 = system_ticks(), proxy_ticks(), cluster_ticks(self.pm), client_seconds()
        t0 = time.perf_counter()
        err = None
        rows = None
        cur = None
        try:
            cur = self.conn(where).execute(sql)
            rows = cur.rowcount
        except psycopg.Error as e:
            err = f"{type(e).__name__}: {e}".strip()
        wall = time.perf_counter() - t0
        k1, c1, p1, s1 = client_seconds(), cluster_ticks(self.pm), proxy_ticks(), system_ticks()
        time.sleep(0.1)
        entries = log_entries(off)
        result = None
        if keep and cur is not None and err is None and cur.description is not None:
            result = cur.fetchall()
        ours = (p1 - p0) + (c1 - c0) + (k1 - k0) * TICK
        other = max(0.0, (s1[1] - s0[1]) - ours) / max(1, s1[0] - s0[0])
        r = dict(
            item=item, case=case, pair=pair, where=where, sql=sql, wall=wall, rows=rows, error=err,
            proxy_cpu=(p1 - p0) / TICK, pg_cpu=(c1 - c0) / TICK, client_cpu=k1 - k0,
            other_busy=round(100 * other, 1), phases=phases(entries),
            server_ms=sum(e["ms"] for e in entries),
        )
        self.runs.append(r)
        msg = (f"{item} pair {pair} {case}: {wall:.3f}s (cpu proxy {r['proxy_cpu']:.2f}s, "
               f"postgres {r['pg_cpu']:.2f}s, client {r['client_cpu']:.2f}s; other work {r['other_busy']}%)")
        if err:
            msg += f" ERROR {err}"
        log(msg)
        return r, result

    def checksum(self, upto=None):
        where = f" WHERE id <= {upto}" if upto else ""
        row = self.direct.execute(f"SELECT count(score), sum(score::float8) FROM t{where}").fetchone()
        return [row[0], row[1]]


def slice_where(n, rows):
    return "" if n >= rows else f" WHERE id <= {n}"


def measure():
    rows = int(E["ROWS"])
    plpy_rows = int(E["PLPY_ROWS"])
    pairs = int(E["PAIRS"])
    plpy_pairs = int(E["PLPY_PAIRS"])
    items = set(E.get("ITEMS", "1 2 3").split())
    b = Bench()
    checks = {}
    update_plain = f"UPDATE t SET score = {PLAIN_SUM}"
    update_pgmlcat = f"UPDATE t SET score = pgml.predict('p', {ARR})"
    agg_pgmlcat = f"SELECT region, avg(pgml.predict('p', {ARR})) FROM t GROUP BY region ORDER BY region"
    stream = f"SELECT pgml.predict('p', {ARR}) FROM t"

    if "1" in items:
        wait_for_builds("item 1 warm-up")
        log("item 1 warm-up: one UPDATE of each kind (not measured)")
        b.run("warmup", "plain UPDATE", 0, "proxy", update_plain, reset=True)
        b.run("warmup", "pgmlcat UPDATE", 0, "proxy", update_pgmlcat, reset=True)
        for i in range(1, pairs + 1):
            wait_for_builds(f"item 1 pair {i}")
            b.run("1", "plain UPDATE", i, "proxy", update_plain, reset=True)
            b.run("1", "pgmlcat UPDATE", i, "proxy", update_pgmlcat, reset=True)
        checks["update_full_checksum"] = b.checksum()

    if "2" in items:
        b.reset()
        wait_for_builds("item 2 warm-up")
        b.run("warmup", "stream", 0, "proxy", stream)
        for i in range(1, pairs + 1):
            wait_for_builds(f"item 2 pair {i}")
            _, streamed = b.run("2", "stream predictions", i, "proxy", stream, keep=(i == 1))
            if streamed is not None:
                checks["stream_sum"] = [len(streamed), sum(float(v[0]) for v in streamed if v[0] is not None)]
                del streamed
            _, agg = b.run("2", "pgmlcat aggregate", i, "proxy", agg_pgmlcat, keep=(i == 1))
            if agg is not None:
                checks["aggregate_full"] = [[g, float(a)] for g, a in agg]

    if "3" in items:
        w = slice_where(plpy_rows, rows)
        up_pgmlcat = f"UPDATE t SET score = pgml.predict('p', {ARR}){w}"
        up_plpy = f"UPDATE t SET score = pgml_plpy.predict('p', {ARR}){w}"
        ag_pgmlcat = f"SELECT region, avg(pgml.predict('p', {ARR})) FROM t{w} GROUP BY region ORDER BY region"
        ag_plpy = f"SELECT region, avg(pgml_plpy.predict('p', {ARR})) FROM t{w} GROUP BY region ORDER BY region"
        # The PL/Python backend loads its booster once, before timing.
        b.direct.execute("SELECT * FROM pgml_plpy.booster_info('p')")
        for i in range(1, plpy_pairs + 1):
            wait_for_builds(f"item 3 pair {i}")
            b.run("3", "pgmlcat UPDATE", i, "proxy", up_pgmlcat, reset=True)
            if i == 1:
                checks["update_slice_pgmlcat"] = b.checksum(plpy_rows)
            b.run("3", "PL/Python UPDATE", i, "direct", up_plpy, reset=True)
            if i == 1:
                checks["update_slice_plpython"] = b.checksum(plpy_rows)
            _, a1 = b.run("3", "pgmlcat aggregate", i, "proxy", ag_pgmlcat, keep=(i == 1))
            _, a2 = b.run("3", "PL/Python aggregate", i, "direct", ag_plpy, keep=(i == 1))
            if a1 is not None and a2 is not None:
                checks["aggregate_slice_pgmlcat"] = [[g, float(a)] for g, a in a1]
                checks["aggregate_slice_plpython"] = [[g, float(a)] for g, a in a2]

    with open(E["OUT"], "w") as f:
        json.dump(dict(runs=b.runs, checks=checks, notes=NOTES), f, indent=1)


# ------------------------------------------------------------------ diagnostics
# pgmlcat's helper functions (src/ml/predict/memo.rs), so the lookups below
# are the ones its statement makes.
MEMO_FUNCTIONS = """\
CREATE OR REPLACE FUNCTION pg_temp.__pgml_miss(k anyelement, r anycompatible) RETURNS anycompatible \
LANGUAGE plpgsql AS $pgml$ BEGIN \
IF k IS NULL THEN RETURN NULL; END IF; \
RAISE EXCEPTION USING ERRCODE = '40001', MESSAGE = 'pgml.predict: the features changed'; \
END $pgml$; \
CREATE OR REPLACE FUNCTION pg_temp.__pgml_fail(c text, e text, r anycompatible) RETURNS anycompatible \
LANGUAGE plpgsql AS $pgml$ BEGIN RAISE EXCEPTION USING ERRCODE = c, MESSAGE = e; END $pgml$"""
LOOKUP = ("coalesce((SELECT coalesce(__pgml_v, pg_temp.__pgml_fail(__pgml_c, __pgml_e, NULL::real)) "
          f"FROM pg_temp.__pgml_m0 WHERE __pgml_k = (({ARR})) LIMIT 1), pg_temp.__pgml_miss(({ARR}), NULL::real))")

DIAG_VARIANTS = [
    # name, session options, memo row order, index, statement form. pgmlcat
    # COPYs the memo from a hash set: its rows are in hash order, not in the
    # order the statement meets their keys.
    ("as pgmlcat: memo in hash order, btree, lookup per row", "", "hash", "btree", "lookup"),
    ("same, temp_buffers = 1GB", "-c temp_buffers=1GB", "hash", "btree", "lookup"),
    ("memo in the collection's order (t's heap order), btree, lookup per row", "", "scan", "btree", "lookup"),
    ("memo in hash order, hash index, lookup per row", "", "hash", "hash", "lookup"),
    ("memo in the collection's order, hash index, lookup per row", "", "scan", "hash", "lookup"),
    ("memo in hash order, no index, joined (hash join; no miss check)", "", "hash", None, "join"),
    ("same, work_mem = 256MB", "-c work_mem=256MB", "hash", None, "join"),
    ("memo keyed by the row's ctid instead of its features, joined on it (no index)", "", "scan", None, "tidjoin"),
]


def diag():
    """The general method's server side rebuilt inside Postgres, with the
    memo filled by SQL (predictions replaced by f1 + ... + f10), so that
    the cost of the memo's index and of the statement with lookups can be
    compared across settings and forms without pgmlcat."""
    out = []
    items = set(E.get("DIAG_ITEMS", "update aggregate").split())
    base = psycopg.connect(E["DIRECT_DSN"], autocommit=True)
    pm = postmaster_pid()
    forms = []
    if "update" in items:
        forms.append(("UPDATE", {
            "lookup": f"UPDATE t SET score = {LOOKUP}",
            "join": f"UPDATE t SET score = m.__pgml_v FROM pg_temp.__pgml_m0 m WHERE m.__pgml_k = {ARR}",
            "tidjoin": "UPDATE t SET score = m.__pgml_v FROM pg_temp.__pgml_m0 m WHERE m.__pgml_t = t.ctid",
        }))
    if "aggregate" in items:
        forms.append(("aggregate", {
            "lookup": f"SELECT region, avg({LOOKUP}) FROM t GROUP BY region",
            "join": f"SELECT region, avg(m.__pgml_v) FROM t JOIN pg_temp.__pgml_m0 m ON m.__pgml_k = {ARR} "
                    "GROUP BY region",
            "tidjoin": "SELECT region, avg(m.__pgml_v) FROM t JOIN pg_temp.__pgml_m0 m ON m.__pgml_t = t.ctid "
                       "GROUP BY region",
        }))
    orders = {"hash": " ORDER BY hashint8(id)", "scan": ""}
    for kind, stmts in forms:
        for name, options, order, index, form in DIAG_VARIANTS:
            wait_for_builds(f"diagnostic {kind}: {name}")
            base.execute("VACUUM t")
            base.execute("CHECKPOINT")
            conn = psycopg.connect(E["DIRECT_DSN"], options=options, autocommit=True) if options else \
                psycopg.connect(E["DIRECT_DSN"], autocommit=True)
            times = {}

            def timed(key, sql):
                t0 = time.perf_counter()
                conn.execute(sql)
                times[key] = times.get(key, 0.0) + time.perf_counter() - t0

            s0, c0 = system_ticks(), cluster_ticks(pm)
            try:
                timed("setup", "BEGIN")
                timed("setup", MEMO_FUNCTIONS)
                if form == "tidjoin":
                    timed("setup", "CREATE TEMP TABLE pg_temp.__pgml_m0 (__pgml_t tid, __pgml_v real) ON COMMIT DROP")
                    timed("fill", f"INSERT INTO pg_temp.__pgml_m0 SELECT ctid, ({PLAIN_SUM})::real FROM t{orders[order]}")
                else:
                    timed("setup", "CREATE TEMP TABLE pg_temp.__pgml_m0 (__pgml_k real[], __pgml_v real, "
                                   "__pgml_c text, __pgml_e text) ON COMMIT DROP")
                    timed("fill", f"INSERT INTO pg_temp.__pgml_m0 SELECT {ARR}, ({PLAIN_SUM})::real FROM t{orders[order]}")
                if index:
                    timed("index", f"CREATE INDEX ON pg_temp.__pgml_m0 USING {index} (__pgml_k)")
                timed("statement", stmts[form])
                timed("commit", "COMMIT")
                err = None
            except psycopg.Error as e:
                err = f"{type(e).__name__}: {e}".strip()
                conn.execute("ROLLBACK")
            c1, s1 = cluster_ticks(pm), system_ticks()
            conn.close()
            other = max(0.0, (s1[1] - s0[1]) - (c1 - c0)) / max(1, s1[0] - s0[0])
            r = dict(kind=kind, name=name, error=err, other_busy=round(100 * other, 1),
                     **{k: round(v, 3) for k, v in times.items()})
            log(f"diagnostic {kind}: {name}: {r}")
            out.append(r)
    with open(E["DIAG_OUT"], "w") as f:
        json.dump(out, f, indent=1)


# ------------------------------------------------------------------ checks
def check():
    """pgmlcat's predictions (fast path and general method) against
    PL/Python's LightGBM on the first CHECK_ROWS rows."""
    n = int(E.get("CHECK_ROWS", "1000"))
    proxy = psycopg.connect(E["PROXY_DSN"], autocommit=True)
    direct = psycopg.connect(E["DIRECT_DSN"], autocommit=True)
    fast = dict(proxy.execute(f"SELECT id, pgml.predict('p', {ARR}) FROM t WHERE id <= {n}").fetchall())
    plpy = dict(direct.execute(f"SELECT id, pgml_plpy.predict('p', {ARR}) FROM t WHERE id <= {n}").fetchall())
    proxy.execute(f"UPDATE t SET score = pgml.predict('p', {ARR}) WHERE id <= {n}")
    general = dict(direct.execute(f"SELECT id, score FROM t WHERE id <= {n}").fetchall())
    direct.execute(f"UPDATE t SET score = NULL WHERE id <= {n}")
    info = direct.execute("SELECT * FROM pgml_plpy.booster_info('p')").fetchone()
    ids = sorted(fast)
    assert len(ids) == n and set(plpy) == set(ids) and set(general) == set(ids), "row sets differ"
    diff = [abs(fast[i] - plpy[i]) for i in ids]
    same_plpy = sum(1 for i in ids if fast[i] == plpy[i])
    same_general = sum(1 for i in ids if fast[i] == general[i])
    rel = max(d / max(1.0, abs(plpy[i])) for d, i in zip(diff, ids))
    out = dict(rows=n, equal_plpython=same_plpy, equal_general=same_general, max_abs_diff=max(diff),
               max_rel_diff=rel, plpython_model_id=info[0], plpython_trees=info[1], lightgbm=info[2],
               sample=[[i, fast[i], plpy[i], general[i]] for i in ids[:3]])
    print(json.dumps(out))
    ok = same_general == n and rel <= 1e-6
    if not ok:
        log(f"predictions disagree: {out}")
        sys.exit(1)


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
    data = json.load(open(E["OUT"]))
    runs = [r for r in data["runs"] if r["item"] != "warmup"]
    rows, plpy_rows = int(E["ROWS"]), int(E["PLPY_ROWS"])
    scale = rows / plpy_rows

    def sel(item, case):
        return [r for r in runs if r["item"] == item and r["case"] == case]

    def stat(item, case, key="wall"):
        return med([r[key] for r in sel(item, case) if not r["error"]])

    def pair_ratios(item, a, b, key="wall"):
        """b / a per pair."""
        ra = {r["pair"]: r for r in sel(item, a) if not r["error"]}
        rb = {r["pair"]: r for r in sel(item, b) if not r["error"]}
        return [rb[p][key] / ra[p][key] for p in sorted(ra) if p in rb and ra[p][key] > 0]

    def cpu(item, case):
        return [fmt(stat(item, case, k)) for k in ("proxy_cpu", "pg_cpu", "client_cpu")]

    def total_cpu(item, case):
        return med([r["proxy_cpu"] + r["pg_cpu"] for r in sel(item, case) if not r["error"]])

    def comparison(item, a, b, target, better_low=True, label_ratio=None):
        wa, wb = stat(item, a), stat(item, b)
        pr = pair_ratios(item, a, b)
        ratio = med(pr)
        ca, cb = total_cpu(item, a), total_cpu(item, b)
        rows_ = [
            [a, fmt(wa, "{:.3f}"), *cpu(item, a), fmt(ca), "1.00", "1.00"],
            [b, fmt(wb, "{:.3f}"), *cpu(item, b), fmt(cb), fmt(ratio),
             fmt(cb / ca if ca and cb else None)],
        ]
        return rows_, ratio, pr

    def errors(item):
        return [r for r in runs if r["item"] == item and r["error"]]

    head = ["statement", "wall s (median)", "pgmlcat CPU s", "Postgres CPU s", "client CPU s",
            "pgmlcat+Postgres CPU s", "wall ratio (median of pairs)", "CPU ratio"]
    md = []
    targets = []
    E_ = E
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    md.append(f"""# pgml.predict anywhere (the general method): UPDATE and aggregates

- date: {now}
- host: {os.uname().nodename} ({NCPU} CPUs); load average at the end: {E_['LOADAVG']}
- PostgreSQL {E_['PG_VERSION']} (fsync off, shared_buffers 256MB, temp_buffers {E_['TEMP_BUFFERS']}, other settings default),
  pgmlcat {E_['PGMLCAT_VERSION']} (pool_size {E_['POOL_SIZE']})
- data: t({rows:,} rows: id bigint primary key, f1..f10 float4 uniform in [0, 1), region text with 10 values,
  score real), autovacuum off on t; `VACUUM t; CHECKPOINT` before every UPDATE run, either side
- model: `pgml.train('p', 'regression', 'train_set', 'y', algorithm => 'lightgbm', hyperparams =>
  '{{"n_estimators": 100}}')` through pgmlcat on {int(E_['TRAIN_ROWS']):,} other rows of the same
  distribution, in {E_['TRAIN_S']} s: {E_['MODEL_INFO']}
- every statement is one simple-protocol Query from psycopg 3 (autocommit), result rows read whole by
  libpq and discarded; runs interleaved A B A B, {E_['PAIRS']} pairs for items 1-2, {E_['PLPY_PAIRS']} for item 3;
  medians shown. CPU is user + sys from /proc: pgmlcat's process, the PostgreSQL cluster's processes
  (postmaster and its children), the client's own
""")
    for n in data.get("notes", []):
        md.append(f"- WARNING: {n}")

    # item 1
    r1, ratio1, pr1 = comparison("1", "plain UPDATE", "pgmlcat UPDATE", 2.0)
    md.append(f"""
## 1. UPDATE with a prediction per row

A: `UPDATE t SET score = f1 + ... + f10`; B: `UPDATE t SET score = pgml.predict('p', ARRAY[f1, ..., f10])`,
both through pgmlcat ({rows:,} rows).

{table(head, r1)}

per-pair ratios: {', '.join(fmt(x) for x in pr1)}
""")
    targets.append(f"1. pgmlcat UPDATE / plain UPDATE = {fmt(ratio1)} (target <= 2: "
                   f"{'met' if ratio1 is not None and ratio1 <= 2 else 'NOT met'})")

    # item 2
    r2, ratio2, pr2 = comparison("2", "stream predictions", "pgmlcat aggregate", 1.5)
    md.append(f"""
## 2. Aggregate over predictions

A: `SELECT pgml.predict('p', ARRAY[f1, ..., f10]) FROM t` (the SELECT-list fast path, {rows:,} rows streamed
to the client); B: `SELECT region, avg(pgml.predict('p', ARRAY[f1, ..., f10])) FROM t GROUP BY region ORDER
BY region` (the general method), both through pgmlcat.

{table(head, r2)}

per-pair ratios: {', '.join(fmt(x) for x in pr2)}
""")
    targets.append(f"2. pgmlcat aggregate / streamed predictions = {fmt(ratio2)} (target <= 1.5: "
                   f"{'met' if ratio2 is not None and ratio2 <= 1.5 else 'NOT met'})")

    # item 3
    r3u, ratio3u, pr3u = comparison("3", "pgmlcat UPDATE", "PL/Python UPDATE", 10)
    r3a, ratio3a, pr3a = comparison("3", "pgmlcat aggregate", "PL/Python aggregate", 10)
    slice_txt = (f"the first {plpy_rows:,} rows (`WHERE id <= {plpy_rows}`; both sides the same statement "
                 f"but for the function)" if plpy_rows < rows else f"all {rows:,} rows")
    # Extrapolated: PL/Python on the slice scaled to all rows, against pgmlcat on all rows.
    ext_u = ext_a = None
    pu, pa = stat("3", "PL/Python UPDATE"), stat("3", "PL/Python aggregate")
    fu, fa = stat("1", "pgmlcat UPDATE"), stat("2", "pgmlcat aggregate")
    if pu and fu:
        ext_u = pu * scale / fu
    if pa and fa:
        ext_a = pa * scale / fa
    plpy_per_row = [fmt(stat("3", c) / plpy_rows * 1e6 if stat("3", c) else None, "{:.1f}")
                    for c in ("PL/Python UPDATE", "PL/Python aggregate")]
    md.append(f"""
## 3. Against in-database PL/Python

`pgml_plpy.predict(text, real[]) RETURNS real` (benches/ml_anywhere_plpython.sql): plpython3u with
LightGBM's Python package, the deployed model loaded once per backend from pgml.files into PL/Python's GD,
`Booster.predict` on one row per call (`num_threads=1`), run straight on Postgres. pgmlcat: the same
statements with `pgml.predict`, through pgmlcat. On {slice_txt}. A is pgmlcat; the ratio is
PL/Python / pgmlcat (higher is better for pgmlcat).

{table(head, r3u)}

per-pair ratios: {', '.join(fmt(x) for x in pr3u)}

{table(head, r3a)}

per-pair ratios: {', '.join(fmt(x) for x in pr3a)}

PL/Python per row: {plpy_per_row[0]} µs (UPDATE), {plpy_per_row[1]} µs (aggregate).
""")
    if plpy_rows < rows:
        md.append(f"""Scaled to {rows:,} rows (PL/Python's slice time x {scale:g}, linear in rows, against pgmlcat's
full-table medians of items 1 and 2): UPDATE {fmt(ext_u)}x, aggregate {fmt(ext_a)}x.
""")
    targets.append(f"3. PL/Python / pgmlcat, UPDATE = {fmt(ratio3u)}, aggregate = {fmt(ratio3a)} on {plpy_rows:,} rows"
                   + (f"; scaled to {rows:,} rows: {fmt(ext_u)}, {fmt(ext_a)}" if plpy_rows < rows else "")
                   + f" (target >= 10: {'met' if ratio3u and ratio3a and ratio3u >= 10 and ratio3a >= 10 else 'NOT met'})")

    # phases
    gen = [("1", "pgmlcat UPDATE"), ("2", "pgmlcat aggregate"), ("3", "pgmlcat UPDATE"), ("3", "pgmlcat aggregate")]
    ph_rows = []
    for item, case in gen:
        rs = [r for r in sel(item, case) if not r["error"]]
        if not rs:
            continue
        cells = [f"{case} (item {item})", fmt(med([r["wall"] * 1000 for r in rs]), "{:,.0f}")]
        for p in ["setup", "collect", "memo_create", "predict", "copy", "index", "final", "commit"]:
            cells.append(fmt(med([r["phases"].get(p, 0.0) for r in rs]), "{:,.0f}"))
        unaccounted = med([r["wall"] * 1000 - r["server_ms"] - r["phases"].get("predict", 0.0) for r in rs])
        cells.append(fmt(unaccounted, "{:,.0f}"))
        ph_rows.append(cells)
    md.append(f"""
## Where the general method's time goes

From the cluster's log (`log_min_duration_statement = 0`, `log_line_prefix = '%m [%p] '`), medians in ms.
collect: the server's time for the collection query `SELECT (ARRAY[f1, ..., f10]) AS k FROM t ...`,
streaming the vectors to pgmlcat as fast as it takes them (so it includes pgmlcat's reading and
de-duplicating them); predict: the gap between the end of the memo's CREATE TEMP TABLE and the start of its
COPY (pgmlcat decoding the keys, predicting, encoding the COPY payload); copy: COPY of (features,
prediction) into the memo (binary, from pgmlcat); index: CREATE INDEX on the memo's key; final: the
client's statement with each call a lookup in the memo; rest: wall time not covered by any of them
(round trips, client).

{table(["statement", "wall", "setup", "collect", "memo create", "predict", "copy", "index", "final", "commit", "rest"], ph_rows)}
""")

    # diagnostics
    if E.get("DIAG_OUT") and os.path.exists(E["DIAG_OUT"]):
        drows = []
        for d in json.load(open(E["DIAG_OUT"])):
            total = sum(d.get(k, 0.0) for k in ("setup", "fill", "index", "statement", "commit"))
            drows.append([d["kind"], d["name"], *(fmt(d.get(k) * 1000 if d.get(k) is not None else None, "{:,.0f}")
                                                 for k in ("fill", "index", "statement", "commit")),
                          fmt(total * 1000, "{:,.0f}"), fmt(d.get("other_busy"), "{:.0f}"), d["error"] or ""])
        md.append(f"""
### The server side alone, by settings and forms

The memo rebuilt inside Postgres without pgmlcat (straight on Postgres, one transaction per row below, once
each, `VACUUM t; CHECKPOINT` before): `CREATE TEMP TABLE pg_temp.__pgml_m0` as pgmlcat makes it, filled by
`INSERT ... SELECT ARRAY[f1, ..., f10], (f1 + ... + f10)::real FROM t` ({rows:,} keys, as many as pgmlcat's
memo has; the fill is not pgmlcat's COPY) either in hash order (`ORDER BY hashint8(id)`: as pgmlcat's memo,
COPYed from a hash set, whose rows are in no relation to the order the statement meets their keys) or in
the collection's order (t's heap order, the order the statement scans t in), its index, then the
statement: with pgmlcat's lookup
`coalesce((SELECT coalesce(__pgml_v, fail(...)) FROM memo WHERE __pgml_k = (ARRAY[...]) LIMIT 1), miss(...))`,
or joined to the memo (`UPDATE t SET score = m.__pgml_v FROM memo m WHERE m.__pgml_k = ARRAY[...]`, or `t JOIN
memo`: a hash join, which has no miss check and is only a bound), or, last, a memo of (ctid, value) joined on
`m.__pgml_t = t.ctid` (a key that is stable within the statement's REPEATABLE READ snapshot for reads and
under the collection's FOR UPDATE for writes; not what pgmlcat does). Settings are the session's, from
its startup (temp_buffers must be set before a session's first temporary table). Milliseconds.

{table(["statement", "variant", "fill", "index", "statement", "commit", "total", "other work %", "error"], drows)}
""")

    # item 4
    md.append("\n## 4. The existing pgml.predict bench\n\n" + E.get("ITEM4", "not run (ML_PREDICT=0)") + "\n")

    # checks
    c = data["checks"]
    chk = json.loads(E["CHECK_JSON"]) if E.get("CHECK_JSON") else {}
    lines = []
    if chk:
        lines.append(f"- first {chk['rows']:,} rows: pgmlcat's SELECT-list predictions equal PL/Python's (as real) on "
                     f"{chk['equal_plpython']:,}, max abs difference {chk['max_abs_diff']:.3g} (max relative "
                     f"{chk['max_rel_diff']:.3g}); the general method's UPDATE wrote exactly the fast path's "
                     f"predictions on {chk['equal_general']:,}. PL/Python loaded model {chk['plpython_model_id']} "
                     f"with {chk['plpython_trees']} trees (LightGBM {chk['lightgbm']} for Debian's python3). "
                     f"Sample (id, fast path, PL/Python, general): {chk['sample']}")
    if "update_full_checksum" in c and "stream_sum" in c:
        lines.append(f"- full table: sum(score) after pgmlcat's UPDATE {c['update_full_checksum'][1]:.6f} over "
                     f"{c['update_full_checksum'][0]:,} rows; sum of the streamed predictions {c['stream_sum'][1]:.6f} "
                     f"over {c['stream_sum'][0]:,} rows")
    if "update_slice_pgmlcat" in c:
        lines.append(f"- slice: sum(score) after pgmlcat's UPDATE {c['update_slice_pgmlcat'][1]:.6f}, after "
                     f"PL/Python's {c['update_slice_plpython'][1]:.6f} ({c['update_slice_pgmlcat'][0]:,} rows)")
    if "aggregate_slice_pgmlcat" in c:
        d = max(abs(a[1] - b[1]) for a, b in zip(c["aggregate_slice_pgmlcat"], c["aggregate_slice_plpython"]))
        lines.append(f"- slice aggregate: per-region averages of pgmlcat and PL/Python differ by at most {d:.3g}")
    if "aggregate_full" in c:
        lines.append("- full aggregate (pgmlcat): " + ", ".join(f"{g} {a:.5f}" for g, a in c["aggregate_full"]))
    md.append("\n## Agreement\n\n" + "\n".join(lines) + "\n")

    errs = [r for r in runs if r["error"]]
    if errs:
        md.append("\n## Errors\n\n" + "\n".join(f"- item {r['item']} {r['case']} pair {r['pair']}: `{r['sql']}`: "
                                                f"{r['error']}" for r in errs) + "\n")

    md.append("\n## Against the targets\n\n" + "\n".join(f"- {t}" for t in targets) + "\n")

    every = []
    for r in data["runs"]:
        every.append([r["item"], r["pair"], r["case"], fmt(r["wall"], "{:.3f}"), fmt(r["proxy_cpu"]),
                      fmt(r["pg_cpu"]), fmt(r["client_cpu"]), fmt(r["other_busy"], "{:.0f}"),
                      "error" if r["error"] else ""])
    md.append("\n## Every run\n\n" + table(["item", "pair", "statement", "wall s", "pgmlcat CPU s",
                                            "Postgres CPU s", "client CPU s", "other work %", ""], every) + "\n")
    text = "\n".join(md)
    with open(E["MD_OUT"], "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    {"measure": measure, "check": check, "diag": diag, "report": report}[sys.argv[1]]()
