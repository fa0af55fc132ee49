"""Runs, the Python reference and the report of benches/ml_drift.sh
(issue #20: pgml.drift and the serving sample). Run by it, not by hand:

    python3 ml_drift.py prep                  # t_shift; project 'p' trained through "on"
    python3 ml_drift.py measure               # sections $SECTIONS -> JSON lines in $OUT
    python3 ml_drift.py pydrift DSN PROJECT [RELATION]
                                              # the Python side of (b), a process of its own
    python3 ml_drift.py report                # $OUT -> markdown ($MD_OUT)

Two pgmlcat processes on one cluster: "on" ([ml] serving_sample_rows left
at its default, 10000) at $PROXY_ON_DSN (pid $PID_ON) and "off"
(serving_sample_rows = 0) at $PROXY_OFF_DSN (pid $PID_OFF).

  a  pgbench against each in turn: single-row pgml.predict (-c CLIENTS -j 2)
     and a BATCH_LIMIT-row batch (-c 1), -M PROTOCOL, DURATION s; TPS and
     each pgmlcat's CPU per transaction (/proc/<pid>/stat utime + stime).
  b  pgml.drift('p') and pgml.drift('p', 't_shift') through "on" against
     `pydrift`: the snapshot statistics, a binary COPY of f1..f10 into
     numpy, the same bins and statistics (README, "Has the data moved").
  c  pgml.drift('p', 'serving') through "on" after a (its sample full),
     C_CALLS calls; through "off" it must fail with 55000.

CPU: /proc/<pid>/stat (pgmlcat: all its threads; the cluster: the
postmaster, its live and reaped children; pgbench and pydrift: wait4's
rusage); "other work": the machine's busy ticks minus all of these.
"""

import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

from ml_proc import builds_running, cluster_ticks, postmaster_pid, proc_ticks, system_ticks

E = os.environ
TICK = os.sysconf("SC_CLK_TCK")
FEATS = [f"f{i}" for i in range(1, 11)]
ARRAY = "ARRAY[" + ", ".join(FEATS) + "]"
BINS = 20
FLOOR = 1e-4
DEFAULT_THRESHOLDS = {"psi": 0.2, "ks": 0.1, "linf": 0.3, "missing": 0.05}
# t_shift: t with three features moved (a shift, a scale, a reshape) and
# seven as they were.
SHIFT = {"f1": "f1 + 0.1", "f2": "f2 * 0.8", "f3": "f3 * f3"}


def log(msg):
    print(f"[ml_drift {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def env_int(name, default):
    return int(E.get(name, default))


# ------------------------------------------------------------------ the machine
def others_running():
    """cargo/rustc (ml_proc) and the integration tests' own processes."""
    names = builds_running()
    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and (b"target/debug/deps/it-" in argv[0] or any(b"/pgmlcat-it" in a for a in argv[:3])):
            names.append(f"{os.path.basename(argv[0].decode(errors='replace'))[:24]}[{d}]")
    return names


def wait_for_others(label):
    """No measurement while a cargo build or test run goes on this shared machine."""
    limit = float(E.get("BUILD_WAIT", "3600"))
    started = time.time()
    first = True
    while True:
        b = others_running()
        if not b:
            if not first:
                log(f"builds/tests done after {time.time() - started:.0f}s")
            return None
        if first:
            log(f"waiting (up to {limit:.0f}s) for builds/tests to end before {label}: {' '.join(b[:4])}")
            first = False
        if time.time() - started > limit:
            log(f"WARNING: builds/tests still running after {limit:.0f}s; measuring anyway")
            return f"builds/tests ran when it started ({' '.join(b[:3])})"
        time.sleep(5)


def pg_bytes_received():
    """Bytes Postgres has sent on the established sockets to its port, read
    from the client ends' counters (`ss -ti`); None without ss."""
    try:
        out = subprocess.run(["ss", "-tinH", "state", "established", "dst", f"127.0.0.1:{E['PG_PORT']}"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sum(int(m) for m in re.findall(r"bytes_received:(\d+)", out))


class Meter:
    """CPU ticks of both pgmlcats, the cluster and the machine around a run."""

    def __init__(self):
        self.pm = postmaster_pid(E["PG_DATADIR"])
        self.pids = {"on": int(E["PID_ON"]), "off": int(E["PID_OFF"])}

    def snap(self):
        return dict(sys=system_ticks(), pg=cluster_ticks(self.pm),
                    **{k: proc_ticks(p) for k, p in self.pids.items()})

    def delta(self, s0, s1, child_cpu=0.0):
        d = {k: (s1[k] - s0[k]) / TICK for k in ("pg", "on", "off")}
        ours = (d["pg"] + d["on"] + d["off"] + child_cpu) * TICK
        other = max(0.0, (s1["sys"][1] - s0["sys"][1]) - ours) / max(1, s1["sys"][0] - s0["sys"][0])
        return dict(cpu_on=d["on"], cpu_off=d["off"], cpu_pg=d["pg"], other_busy=round(100 * other, 1))

    def alive(self):
        return all(os.path.exists(f"/proc/{p}") for p in self.pids.values())


def record(r):
    with open(E["OUT"], "a") as f:
        f.write(json.dumps(r) + "\n")


# ------------------------------------------------------------------ prep
def prep():
    import psycopg

    rows = env_int("ROWS", 1000000)
    with psycopg.connect(E["DIRECT_DSN"], autocommit=True) as d:
        t0 = time.perf_counter()
        cols = ", ".join(f"({SHIFT[f]})::float4 AS {f}" if f in SHIFT else f for f in FEATS)
        d.execute("DROP TABLE IF EXISTS t_shift")
        d.execute(f"CREATE TABLE t_shift AS SELECT id, {cols}, y FROM t")
        d.execute("VACUUM (FREEZE, ANALYZE) t_shift")
        d.execute("VACUUM (FREEZE, ANALYZE) t")
        log(f"t_shift ({', '.join(f'{k} -> {v}' for k, v in SHIFT.items())}) in {time.perf_counter() - t0:.1f}s")
    with psycopg.connect(E["PROXY_ON_DSN"], autocommit=True) as c:
        t0 = time.perf_counter()
        c.execute("SELECT * FROM pgml.train('p', 'regression', 't_features_view', 'y', algorithm => 'lightgbm')").fetchall()
        train_s = time.perf_counter() - t0
    with psycopg.connect(E["DIRECT_DSN"], autocommit=True) as d:
        mid, r2, train_rows = d.execute(
            "SELECT m.id, (m.metrics->>'r2')::float8, s.analysis->>'train_rows' FROM pgml.deployed_models dm "
            "JOIN pgml.models m ON m.id = dm.id JOIN pgml.snapshots s ON s.id = m.snapshot_id "
            "WHERE dm.name = 'p'").fetchone()
        sizes = dict(d.execute("SELECT relname, pg_total_relation_size(oid) FROM pg_class "
                               "WHERE relname IN ('t', 't_shift')").fetchall())
    log(f"'p' trained through 'on' in {train_s:.1f}s (model {mid}, r2 {r2:.4f}, {train_rows} training rows)")
    record(dict(section="prep", rows=rows, train_s=train_s, model_id=mid, r2=r2, train_rows=train_rows, sizes=sizes))


# ------------------------------------------------------------------ (a)
def scripts():
    d = os.path.join(E["TMP_DIR"], "scripts")
    os.makedirs(d, exist_ok=True)
    out = {}
    for kind, text in (
        ("single", f"\\set id random(1, {env_int('ROWS', 1000000)})\n"
                   f"SELECT pgml.predict('p', {ARRAY}) FROM t WHERE id = :id;\n"),
        ("batch", f"SELECT id, pgml.predict('p', {ARRAY}) FROM t LIMIT {env_int('BATCH_LIMIT', 10000)};\n"),
    ):
        out[kind] = os.path.join(d, f"{kind}.sql")
        with open(out[kind], "w") as f:
            f.write(text)
    return out


def pgbench(script, side, kind, seconds, out_path):
    clients = env_int("CLIENTS", 8) if kind == "single" else 1
    port = E["PORT_ON"] if side == "on" else E["PORT_OFF"]
    argv = [os.path.join(E["PG_BIN"], "pgbench"), "-n", "-f", script, "-T", str(seconds), "-c", str(clients),
            "-j", str(min(2, clients)), "-M", E.get("PROTOCOL", "prepared"), "-h", "127.0.0.1", "-p", port,
            "-U", E["DB_USER"], E["DB"]]
    with open(out_path, "w+") as fo:
        p = subprocess.Popen(argv, stdout=fo, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        fo.seek(0)
        text = fo.read()
    return os.waitstatus_to_exitcode(status), ru.ru_utime + ru.ru_stime, text, clients


def parse_pgbench(text):
    def num(pattern):
        m = re.search(pattern, text, re.M)
        return float(m.group(1)) if m else None

    tps = num(r"^tps = ([0-9.]+) \(without initial connection time\)") or num(r"^tps = ([0-9.]+)")
    return dict(tps=tps, txns=num(r"^number of transactions actually processed: (\d+)"),
                lat_ms=num(r"^latency average = ([0-9.]+) ms"),
                failed=int(num(r"^number of failed transactions: (\d+)") or 0))


def run_a(meter, paths, kind, side, rnd):
    r = None
    attempts = env_int("NOISY_RETRIES", 1) + 1
    for attempt in range(attempts):
        note = wait_for_others(f"a {kind} {side} round {rnd}")
        out_path = os.path.join(E["TMP_DIR"], f"a-{kind}-{side}-{rnd}-{attempt}.log")
        time.sleep(0.5)
        s0 = meter.snap()
        t0 = time.perf_counter()
        rc, bench_cpu, text, clients = pgbench(paths[kind], side, kind, env_int("DURATION", 10), out_path)
        wall = time.perf_counter() - t0
        s1 = meter.snap()
        r = dict(section="a", kind=kind, side=side, round=rnd, attempt=attempt, rc=rc, wall=wall, clients=clients,
                 pgbench_cpu=bench_cpu, note=note, **parse_pgbench(text), **meter.delta(s0, s1, bench_cpu))
        if rc != 0 or not r["txns"]:
            r["error"] = " | ".join(l for l in text.splitlines() if re.search("error|ERROR|FATAL|abort", l))[:1000] or f"pgbench rc {rc}"
        else:
            r["error"] = None
            r["proxy_us_per_txn"] = 1e6 * r[f"cpu_{side}"] / r["txns"]
            r["pg_us_per_txn"] = 1e6 * r["cpu_pg"] / r["txns"]
        record(r)
        log(f"a round {rnd} {kind:6} {side:3}: tps {r['tps'] or 0:,.1f}, {r.get('proxy_us_per_txn') or 0:.1f} us proxy CPU/txn "
            f"({r['cpu_' + side]:.2f}s), pg {r.get('pg_us_per_txn') or 0:.1f} us/txn, other work {r['other_busy']}%"
            + (f" ERROR {r['error']}" if r["error"] else ""))
        if r["error"] or r["other_busy"] <= float(E.get("NOISY_BUSY", "25")) or attempt + 1 == attempts:
            break
        log(f"a round {rnd} {kind} {side}: other work took the CPU meanwhile; running it again")
    if not meter.alive():
        raise SystemExit("a pgmlcat died during section a")
    return r


def section_a(meter):
    paths = scripts()
    log("a: warm-up (models into both processes' caches, the serving sample of 'on' filled)")
    for side in ("on", "off"):
        for kind in ("batch", "single"):
            rc, _, text, _ = pgbench(paths[kind], side, kind, 3, os.path.join(E["TMP_DIR"], f"a-warm-{kind}-{side}.log"))
            if rc != 0:
                raise SystemExit(f"warm-up pgbench {kind} against {side} failed: {text[-1500:]}")
    rounds = env_int("ROUNDS", 5)
    log(f"a: {rounds} rounds x 4 runs of {E.get('DURATION', '10')}s")
    for rnd in range(1, rounds + 1):
        sides = ("on", "off") if rnd % 2 else ("off", "on")
        for kind in ("single", "batch"):
            for side in sides:
                run_a(meter, paths, kind, side, rnd)


# ------------------------------------------------------------------ (c)
def section_c(meter):
    import psycopg

    calls = env_int("C_CALLS", 20)
    wait_for_others("c")
    sql = "SELECT * FROM pgml.drift('p', 'serving')"
    with psycopg.connect(E["PROXY_ON_DSN"], autocommit=True) as c:
        c.execute(sql).fetchall()  # unmeasured: the baselines' catalog rows warm
        time.sleep(0.3)
        walls = []
        s0 = meter.snap()
        for _ in range(calls):
            t0 = time.perf_counter()
            rows = c.execute(sql).fetchall()
            walls.append(time.perf_counter() - t0)
        s1 = meter.snap()
    off_state = None
    with psycopg.connect(E["PROXY_OFF_DSN"], autocommit=True) as c:
        try:
            c.execute(sql).fetchall()
            off_state = "answered (a sample was kept!)"
        except psycopg.Error as e:
            off_state = f"{e.sqlstate}: {str(e).strip()[:160]}"
    drifted = sorted({f for f, s, v, th, dr in rows if dr})
    psi = {f: v for f, s, v, th, dr in rows if s == "psi"}
    r = dict(section="c", calls=calls, walls=walls, rows=len(rows), drifted=drifted,
             max_psi=max(psi.values()) if psi else None, off=off_state, **meter.delta(s0, s1))
    record(r)
    log(f"c: pgml.drift('p', 'serving') median {1e3 * statistics.median(walls):.2f} ms over {calls} calls "
        f"({len(rows)} rows, max psi {r['max_psi']}, drifted {drifted or 'none'}); 'off': {off_state}")


# ------------------------------------------------------------------ (b)
def run_b_pgmlcat(meter, relation, rnd):
    import psycopg

    note = wait_for_others(f"b pgmlcat {relation} round {rnd}")
    sql = "SELECT * FROM pgml.drift('p')" if relation == "default" else f"SELECT * FROM pgml.drift('p', '{relation}')"
    conn = psycopg.connect(E["PROXY_ON_DSN"], autocommit=True)
    time.sleep(0.3)
    b0 = pg_bytes_received()
    s0 = meter.snap()
    t0 = time.perf_counter()
    err, rows = None, None
    try:
        rows = conn.execute(sql).fetchall()
    except psycopg.Error as e:
        err = f"[{e.sqlstate}] {e}".strip()
    wall = time.perf_counter() - t0
    s1 = meter.snap()
    b1 = pg_bytes_received()
    conn.close()
    d = meter.delta(s0, s1)
    return dict(section="b", side="pgmlcat", relation=relation, round=rnd, sql=sql, wall=wall, error=err, note=note,
                cpu=d["cpu_on"], cpu_total=d["cpu_on"] + d["cpu_pg"],
                bytes_from_pg=None if b0 is None or b1 is None else b1 - b0,
                result=[list(r) for r in rows] if rows else None, **d)


def run_b_python(meter, relation, rnd):
    note = wait_for_others(f"b python {relation} round {rnd}")
    argv = [sys.executable, os.path.abspath(__file__), "pydrift", E["DIRECT_DSN"], "p"]
    if relation != "default":
        argv.append(relation)
    out_path = os.path.join(E["TMP_DIR"], "pydrift.out")
    time.sleep(0.3)
    s0 = meter.snap()
    t0 = time.perf_counter()
    with open(out_path, "w+b") as fo, open(out_path + ".err", "w+b") as fe:
        p = subprocess.Popen(argv, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        s1 = meter.snap()
        fo.seek(0)
        fe.seek(0)
        out, errout = fo.read(), fe.read()
    child_cpu = ru.ru_utime + ru.ru_stime
    d = meter.delta(s0, s1, child_cpu)
    err, child = None, None
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        err = f"pydrift exited {code}: {errout.decode(errors='replace')[-1500:]}"
    else:
        try:
            child = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError) as e:
            err = f"pydrift printed no JSON ({e})"
    return dict(section="b", side="python", relation=relation, round=rnd, wall=wall, error=err, note=note,
                cpu=child_cpu, cpu_total=child_cpu + d["cpu_pg"], child=child,
                bytes_from_pg=child["copy_bytes"] if child else None, **d)


def section_b(meter):
    rounds = env_int("B_ROUNDS", env_int("ROUNDS", 5))
    sides = [("pgmlcat", "default"), ("python", "default"), ("pgmlcat", "t_shift"), ("python", "t_shift")]
    log("b: warm-up (t and t_shift into the OS cache and shared buffers)")
    for side, rel in sides:
        (run_b_pgmlcat if side == "pgmlcat" else run_b_python)(meter, rel, 0)
    log(f"b: {rounds} rounds x {len(sides)} runs")
    for rnd in range(1, rounds + 1):
        order = sides[rnd - 1:] + sides[:rnd - 1]  # rotating
        for side, rel in order:
            r = None
            attempts = env_int("NOISY_RETRIES", 1) + 1
            for attempt in range(attempts):
                r = (run_b_pgmlcat if side == "pgmlcat" else run_b_python)(meter, rel, rnd)
                r["attempt"] = attempt
                record(r)
                log(f"b round {rnd} {side:7} {rel:7}: {r['wall']:.3f}s, CPU {r['cpu']:.2f}s + postgres {r['cpu_pg']:.2f}s, "
                    f"{(r['bytes_from_pg'] or 0) / 1e6:.3f} MB from Postgres, other work {r['other_busy']}%"
                    + (f" ERROR {r['error']}" if r["error"] else ""))
                if r["error"] or r["other_busy"] <= float(E.get("NOISY_BUSY", "25")) or attempt + 1 == attempts:
                    break
                log("  other work took the CPU meanwhile; running it again")
    if not meter.alive():
        raise SystemExit("a pgmlcat died during section b")


def measure():
    meter = Meter()
    secs = E.get("SECTIONS", "a b c").split()
    # c needs a's predictions (the sample full); b is independent of both.
    if "a" in secs:
        section_a(meter)
    if "c" in secs:
        section_c(meter)
    if "b" in secs:
        section_b(meter)


# ------------------------------------------------------------------ the Python reference (b)
def pydrift(dsn, project, relation=None):
    """pgml.drift's work done the usual way: the training side from the
    snapshot's stored statistics, the relation's rows pulled with a binary
    COPY into numpy and binned there. Prints one JSON line."""
    t_start = time.perf_counter()
    import numpy as np
    import psycopg

    t_import = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as cur:
            rel_name, columns, thresholds = cur.execute(
                "SELECT s.relation_name, s.columns, coalesce(p.drift_thresholds, '{}'::jsonb) FROM pgml.projects p "
                "JOIN LATERAL (SELECT d.model_id FROM pgml.deployments d WHERE d.project_id = p.id "
                "ORDER BY d.created_at DESC, d.id DESC LIMIT 1) d ON true "
                "JOIN pgml.models m ON m.id = d.model_id JOIN pgml.snapshots s ON s.id = m.snapshot_id "
                "WHERE p.name = %s", (project,)).fetchone()
            th = dict(DEFAULT_THRESHOLDS, **thresholds)
            feats = [c for c in columns if not c.get("label") and "histogram" in (c.get("statistics") or {})]
            names = [c["name"] for c in feats]
            if names != FEATS:
                raise SystemExit(f"expected features {FEATS}, the snapshot has {names}")
            t_catalog = time.perf_counter()
            rel = relation or rel_name
            buf = bytearray()
            # The relation name is the benchmark's own (t_features_view or t_shift).
            with cur.copy(f"COPY (SELECT {', '.join(names)} FROM {rel}) TO STDOUT (FORMAT BINARY)") as copy:
                for chunk in copy:
                    buf += chunk
    t_copy = time.perf_counter()
    # PGCOPY: 11-byte signature, int32 flags, int32 extension length; then per
    # row int16 field count and per field int32 length + value (float4; a
    # NULL would be length -1 and no value, which t and t_shift do not have).
    start = 19 + int.from_bytes(buf[15:19], "big")
    fields = [("n", ">i2")]
    for i in range(len(names)):
        fields += [(f"l{i}", ">i4"), (f"v{i}", ">f4")]
    rowtype = np.dtype(fields)
    body = len(buf) - start - 2
    if body % rowtype.itemsize:
        raise SystemExit("unexpected COPY layout (NULLs?)")
    rec = np.frombuffer(buf, dtype=rowtype, count=body // rowtype.itemsize, offset=start)
    if not (rec["n"] == len(names)).all() or any((rec[f"l{i}"] != 4).any() for i in range(len(names))):
        raise SystemExit("unexpected COPY layout (NULLs?)")
    t_numpy = time.perf_counter()
    results = []
    for i, c in enumerate(feats):
        s = c["statistics"]
        x = rec[f"v{i}"].astype(np.float64)
        rows = len(x)
        present = x[~np.isnan(x)]
        lo, hi = float(s["min"]), float(s["max"])
        width = (hi - lo) / BINS
        if width > 0:
            b = np.minimum(np.maximum(np.floor((present - lo) / width), 0), BINS - 1).astype(np.int64)
        else:
            b = np.where(present <= lo, 0, BINS - 1)
        q_counts = np.bincount(b, minlength=BINS).astype(np.float64)
        p_counts = np.array(s["histogram"], dtype=np.float64)
        train_rows = p_counts.sum() + s["missing"]
        p, q = p_counts / p_counts.sum(), q_counts / q_counts.sum()
        pf, qf = np.maximum(p, FLOOR), np.maximum(q, FLOOR)
        psi = float(np.sum((qf - pf) * np.log(qf / pf)))
        ks = float(np.max(np.abs(np.cumsum(p) - np.cumsum(q))))
        missing = (rows - len(present)) / rows - s["missing"] / train_rows
        for stat, v in (("psi", psi), ("ks", ks), ("missing", missing)):
            drifted = abs(v) > th[stat] if stat == "missing" else v > th[stat]
            results.append([c["name"], stat, v, th[stat], bool(drifted)])
    t_stats = time.perf_counter()
    print(json.dumps(dict(rows=len(rec), copy_bytes=len(buf), relation=rel, result=results,
                          phases=dict(imports=t_import - t_start, catalog=t_catalog - t_import, copy=t_copy - t_catalog,
                                      numpy=t_numpy - t_copy, stats=t_stats - t_numpy),
                          total_s=time.perf_counter() - t_start, numpy=np.__version__,
                          psycopg=f"{psycopg.__version__} ({psycopg.pq.__impl__})")))


# ------------------------------------------------------------------ report
def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, f="{:.2f}"):
    return "-" if v is None else f.format(v)


def us(v):
    """CPU microseconds per transaction, in us or ms."""
    if v is None:
        return "-"
    return f"{v:,.1f} us" if v < 1000 else f"{v / 1000:,.2f} ms"


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def report():
    every = [json.loads(line) for line in open(E["OUT"]) if line.strip()]
    prep_r = next((r for r in every if r["section"] == "prep"), {})

    def key(r):
        return (r["section"], r.get("kind") or r.get("relation"), r.get("side"), r.get("round"))

    # The last attempt of each run counts, unless it was noisy too: then the least noisy one.
    noisy = float(E.get("NOISY_BUSY", "25"))
    last = {}
    for i, r in enumerate(every):
        if r["section"] not in ("a", "b"):
            continue
        j = last.get(key(r))
        if j is None or every[j]["other_busy"] <= noisy or r["other_busy"] <= noisy or r["other_busy"] < every[j]["other_busy"]:
            last[key(r)] = i
    runs = [r for i, r in enumerate(every) if r["section"] in ("a", "b") and last[key(r)] == i and r["round"] > 0]
    redone = [r for i, r in enumerate(every) if r["section"] in ("a", "b") and last[key(r)] != i and r["round"] > 0]
    errors = [r for r in runs if r.get("error")]

    def ok(**kw):
        return [r for r in runs if not r.get("error") and all(r.get(k) == v for k, v in kw.items())]

    def per_round(field, a, b):
        ra = {r["round"]: r[field] for r in a}
        rb = {r["round"]: r[field] for r in b}
        return [ra[k] / rb[k] for k in sorted(ra) if k in rb and rb[k]]

    def ratio_text(vals):
        return "-" if not vals else f"{statistics.median(vals):.3f} (rounds: {', '.join(f'{v:.3f}' for v in vals)})"

    targets, body = [], []
    secs = E.get("SECTIONS", "a b c").split()

    if "a" in secs:
        rows, ratios = [], []
        for kind in ("single", "batch"):
            on, off = ok(section="a", kind=kind, side="on"), ok(section="a", kind=kind, side="off")
            tps_r = per_round("tps", on, off)
            cpu_r = per_round("proxy_us_per_txn", on, off)
            m_tps_on, m_tps_off = med([r["tps"] for r in on]), med([r["tps"] for r in off])
            m_cpu_on, m_cpu_off = med([r["proxy_us_per_txn"] for r in on]), med([r["proxy_us_per_txn"] for r in off])
            unit = "{:,.0f}" if kind == "single" else "{:,.1f}"
            rows.append([kind, fmt(m_tps_off, unit), fmt(m_tps_on, unit), fmt(med(tps_r), "{:.3f}"),
                         us(m_cpu_off), us(m_cpu_on), fmt(med(cpu_r), "{:.3f}"),
                         us(med([r["pg_us_per_txn"] for r in off])), us(med([r["pg_us_per_txn"] for r in on])),
                         f"{sum(r['failed'] for r in off)}/{sum(r['failed'] for r in on)}"])
            ratios.append((kind, tps_r, cpu_r, m_tps_on, m_tps_off, m_cpu_on, m_cpu_off))
            if tps_r:
                t, c = med(tps_r), med(cpu_r)
                targets.append(f"(a) {kind}: on / off TPS {t:.3f} (target >= 0.97: {'met' if t >= 0.97 else 'NOT met'}); "
                               f"on / off proxy CPU per transaction {fmt(c, '{:.3f}')} "
                               f"(target <= 1.05: {'met' if c is not None and c <= 1.05 else 'NOT met'})")
        lines = []
        for kind, tps_r, cpu_r, a, b, c, d in ratios:
            lines.append(f"- {kind}: on / off TPS per round {ratio_text(tps_r)}; ratio of the medians "
                         f"{fmt(a / b if a and b else None, '{:.3f}')}")
            lines.append(f"- {kind}: on / off proxy CPU per transaction per round {ratio_text(cpu_r)}; ratio of the medians "
                         f"{fmt(c / d if c and d else None, '{:.3f}')}")
        body.append(f"""## (a) The serving sample on the prediction hot path

Two pgmlcat processes in front of the same cluster, the same binary and configuration but `[ml]
serving_sample_rows`: **off** = 0 (no sample), **on** = left out (the default, 10000 rows per project, a
reservoir sample). Project `p` ({int(E.get('ROWS', 1000000)):,} rows x 10 float4 features, LightGBM regression
trained once through "on" in {fmt(prep_r.get('train_s'), '{:.1f}')} s, test r2 {fmt(prep_r.get('r2'), '{:.4f}')}),
warm in both. pgbench `-M {E.get('PROTOCOL')}`, {E.get('DURATION')} s per run, sides alternating first by round:

- single: `\\set id random(1, {E.get('ROWS')})` `SELECT pgml.predict('p', ARRAY[f1, ..., f10]) FROM t WHERE id = :id`,
  `-c {E.get('CLIENTS')} -j 2`
- batch: `SELECT id, pgml.predict('p', ARRAY[f1, ..., f10]) FROM t LIMIT {E.get('BATCH_LIMIT')}`, `-c 1`

Proxy CPU per transaction: the measured pgmlcat's utime + stime (/proc/<pid>/stat, all threads) over the
run divided by pgbench's transactions; postgres: the whole cluster's likewise.

{table(["", "off TPS", "on TPS", "on / off TPS", "off proxy CPU/txn", "on proxy CPU/txn", "on / off CPU",
        "off postgres CPU/txn", "on postgres CPU/txn", "failed off/on"], rows)}

(ratios: medians of the per-round ratios, each round's two runs back to back)

""" + "\n".join(lines) + "\n")

    if "c" in secs:
        c = next((r for r in every if r["section"] == "c"), None)
        if c:
            w = [1e3 * v for v in c["walls"]]
            body.append(f"""## (c) pgml.drift(project, 'serving'), the sample full

`SELECT * FROM pgml.drift('p', 'serving')` through "on" after (a) (it predicted
{int(sum((r.get('txns') or 0) * (1 if r['kind'] == 'single' else int(E.get('BATCH_LIMIT', 10000))) for r in runs if r['section'] == 'a' and r['side'] == 'on')):,}
rows in the measured runs alone; its reservoir holds 10,000), {c['calls']} calls on one connection:
median **{statistics.median(w):.2f} ms** (min {min(w):.2f}, max {max(w):.2f}); pgmlcat CPU {1e3 * c['cpu_on'] / c['calls']:.2f} ms,
postgres {1e3 * c['cpu_pg'] / c['calls']:.2f} ms per call. {c['rows']} rows; max PSI {fmt(c['max_psi'], '{:.4f}')}
(the served rows are t's own: nothing should drift), drifted: {', '.join(c['drifted']) or 'none'}.
The same call through "off": `{c['off']}`.
""")

    if "b" in secs:
        rows, comp = [], []
        for rel in ("default", "t_shift"):
            pg, py = ok(section="b", side="pgmlcat", relation=rel), ok(section="b", side="python", relation=rel)
            for side, rs in (("pgmlcat", pg), ("python", py)):
                drifted = "-"
                res = rs[-1].get("result") if side == "pgmlcat" and rs else (rs[-1]["child"]["result"] if rs else None)
                if res:
                    drifted = ", ".join(sorted({x[0] for x in res if x[4]})) or "none"
                rows.append([f"{side}: " + (f"`{rs[0]['sql']}`" if side == "pgmlcat" and rs else
                                            f"pydrift ({'t_features_view' if rel == 'default' else rel})"),
                             fmt(med([r["wall"] for r in rs]), "{:.3f}"),
                             ", ".join(f"{r['wall']:.3f}" for r in rs) or "-",
                             fmt(med([r["cpu"] for r in rs])), fmt(med([r["cpu_pg"] for r in rs])),
                             fmt(med([r["cpu_total"] for r in rs])),
                             fmt(med([r["bytes_from_pg"] for r in rs]), "{:,.0f}"), drifted])
            w, c = per_round("wall", pg, py), per_round("cpu_total", pg, py)
            diffs = []
            if pg and py and pg[-1].get("result") and py[-1].get("child"):
                a = {(x[0], x[1]): x[2] for x in pg[-1]["result"]}
                b = {(x[0], x[1]): x[2] for x in py[-1]["child"]["result"]}
                diffs = [abs(float(a[k]) - b[k]) for k in b if k in a and a[k] is not None]
                mism = [k for k in b if k not in a] + [k for k in a if k not in b]
            phases = "-"
            if py:
                keys = py[-1]["child"]["phases"].keys()
                phases = ", ".join(f"{k} {med([r['child']['phases'][k] for r in py]):.3f}" for k in keys)
            inproc = med([r["child"]["total_s"] - r["child"]["phases"]["imports"] for r in py]) if py else None
            comp.append(f"- {rel}: pgmlcat / Python wall per round {ratio_text(w)}; CPU (with postgres') {ratio_text(c)}; "
                        f"pgmlcat / Python in-process time (imports left out, {fmt(inproc, '{:.3f}')} s): "
                        f"{fmt(med([r['wall'] for r in pg]) / inproc if pg and inproc else None, '{:.3f}')}")
            comp.append(f"  - Python phases (median s): {phases}")
            if diffs:
                comp.append(f"  - values: {len(diffs)} statistics, max |pgmlcat (real) - Python (float8)| = {max(diffs):.2e}"
                            + (f"; rows only one side has: {mism}" if mism else ""))
            if w:
                targets.append(f"(b) pgml.drift {rel}: pgmlcat / Python wall {med(w):.3f}, CPU {fmt(med(c), '{:.3f}')} "
                               f"(pgmlcat {med([r['wall'] for r in pg]):.3f} s)")
        psy = next((r["child"].get("psycopg") for r in runs if r.get("child")), "-")
        body.append(f"""## (b) pgml.drift over {int(E.get('ROWS', 1000000)):,} rows against Python

`pgml.drift('p')` reads the training relation as it is now (`t_features_view`, the view training read),
`pgml.drift('p', 't_shift')` a copy of t with {', '.join(f'{k} -> {v}' for k, v in SHIFT.items())} (the rest as is);
both through "on", one query on a connection made before the timer starts. Python (`pydrift`, a process of
its own timed whole, psycopg {psy}): imports, connect, the deployed model's snapshot `columns` statistics
(min, max, 20-bin histogram, missing), `COPY (SELECT f1..f10 FROM relation) TO STDOUT (FORMAT BINARY)`
straight from Postgres, np.frombuffer, the same bins (`floor((x - min) / ((max - min) / 20))` clamped
to 0..19), PSI with the 1e-4 floor, KS over the cumulative proportions, the missing-rate difference.
CPU: pgmlcat's or the Python process's, and the cluster's. Bytes from Postgres: for pgmlcat the byte
counters of the established sockets to Postgres' port (`ss -ti`, client ends) over the call; for Python
the COPY stream's size.

{table(["side", "wall s (median)", "runs", "CPU s (pgmlcat or Python)", "postgres CPU s", "together", "bytes from Postgres", "drifted"], rows)}

""" + "\n".join(comp) + "\n")

    busy = [f"{r['section']} {r.get('kind') or r.get('relation')} {r['side']} round {r['round']}: {r['other_busy']}%"
            for r in runs if r["other_busy"] > 10]
    noted = [r for r in runs if r.get("note")]
    head = f"""# Issue #20 benchmarks: the serving sample's cost, pgml.drift against Python

- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S} UTC; benches/ml_drift.sh, one run, sides interleaved,
  medians of {E.get('ROUNDS')} rounds (b: {E.get('B_ROUNDS')})
- host: {platform.node()} ({os.cpu_count()} CPUs, {platform.machine()}); load average at the end: {E.get('LOADAVG')}
- PostgreSQL {E.get('PG_VERSION')} (shared_buffers {E.get('SHARED_BUFFERS')}), pgmlcat {E.get('PGMLCAT_VERSION')},
  pool_size {E.get('POOL_SIZE')}, worker_threads {E.get('WORKER_THREADS')}, `[ml] threads = {E.get('ML_THREADS')}`
- data: t, {int(E.get('ROWS', 1000000)):,} rows x 10 float4 features + label ({fmt((prep_r.get('sizes') or {}).get('t', 0) / 2**20, '{:.0f}')} MiB);
  model {prep_r.get('model_id')} ({prep_r.get('train_rows')} training rows)
- CPU: user + sys from /proc/<pid>/stat; a run during which other work took more than {E.get('NOISY_BUSY', '25')}% of the
  CPU is run again (up to {E.get('NOISY_RETRIES', '1')} time(s)); runs wait (up to {E.get('BUILD_WAIT')} s) for cargo/rustc and
  test binaries to end
"""
    if busy:
        head += f"- other work took more than 10% of the CPU during: {'; '.join(busy)}\n"
    if redone:
        head += "- run again (this attempt not counted): " + "; ".join(
            f"{r['section']} {r.get('kind') or r.get('relation')} {r['side']} round {r['round']} (other work {r['other_busy']}%)"
            for r in redone) + "\n"
    if noted:
        head += (f"- WARNING: {len(noted)} run(s) started while builds/tests still ran after the wait, e.g. "
                 f"{noted[0]['note']}\n")
    md = head + "\n## Targets\n\n" + ("\n".join(f"- {t}" for t in targets) or "-") + "\n\n" + "\n".join(body)

    detail = []
    for r in runs:
        if r["section"] == "a":
            detail.append([f"a {r['kind']} {r['side']}", r["round"], fmt(r.get("tps"), "{:,.1f}"),
                           us(r.get("proxy_us_per_txn")), fmt(r["cpu_" + r["side"]]),
                           fmt(r.get("lat_ms"), "{:.3f}"), r["other_busy"]])
        else:
            detail.append([f"b {r['side']} {r['relation']}", r["round"], fmt(r["wall"], "{:.3f} s"), "-",
                           fmt(r["cpu"]), "-", r["other_busy"]])
    md += "\n## Every run\n\n" + table(["run", "round", "TPS or wall", "proxy CPU/txn", "CPU s (measured side)",
                                         "latency ms", "other work %"], detail) + "\n"
    if errors:
        md += "\n## Errors\n\n" + "\n".join(
            f"- {r['section']} {r.get('kind') or r.get('relation')} {r['side']} round {r['round']}: `{r['error'][:800]}`"
            for r in errors) + "\n"
    with open(E["MD_OUT"], "w") as f:
        f.write(md)
    print(md)


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "prep":
        prep()
    elif cmd == "measure":
        measure()
    elif cmd == "pydrift":
        pydrift(*sys.argv[2:5])
    elif cmd == "report":
        report()
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
