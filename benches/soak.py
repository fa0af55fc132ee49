#!/usr/bin/env python3
"""benches/soak.sh's Python side: the workloads pgbench cannot run, the
checks at the end, and the report. Run by soak.sh; each subcommand reads
its settings from the environment soak.sh exports (see `env()` below).

  writer  transactions of known rows (ids and values), each recorded as
          acknowledged (COMMIT answered), unknown (COMMIT sent, no answer:
          the commit was in flight when the server went away) or failed
          (an error before COMMIT: certainly rolled back)
  ml      pgml.train in a loop (linear and LightGBM, deployed each time),
          and pgml.predict in two loops (extended protocol, psycopg's
          prepared statements; simple protocol, values interpolated)
  vanish  clients that vanish: BEGIN, an INSERT, then the socket closed with
          no Terminate (FIN, or RST, idle in transaction; FIN while the
          statement runs; RST half-way through a message). Their rows must
          never appear.
  storm   N asyncpg clients at once: each connects, waits until all are
          connected (or have failed), runs SELECT 1 (half simple, half
          extended protocol), disconnects
  pools   polls SHOW POOLS on the admin console until the pool is idle
  verify  straight to the servers (not through pgmlcat): the rows the
          writer and the vanishing clients left, pgbench's invariants, and
          the replicas' copies; what the servers hold per state
  report  everything above into benches/results/soak-<date>.md; exits 1
          when a check failed

Every worker appends JSON lines to its own file as it goes (so a worker
killed because it is stuck still leaves its record): {"kind": "error",
"t", "src", "target", "sqlstate", "msg"}, {"kind": "op", ...} counters at the
end, {"kind": "stuck", ...} for an operation that took longer than
STUCK_SECONDS or a thread that did not end.
"""
import asyncio
import collections
import datetime
import hashlib
import json
import os
import platform
import random
import re
import socket
import statistics
import struct
import sys
import threading
import time

# The value of row `id`: rows are checked one by one, not only summed.
VAL_MOD = 1000003
VAL_MUL = 7919


def val_of(i: int) -> int:
    return (i * VAL_MUL) % VAL_MOD


def env(name, default=None, cast=str):
    v = os.environ.get(name)
    if v is None or v == "":
        if default is None:
            sys.exit(f"soak.py: {name} is not set")
        return cast(default)
    return cast(v)


def proxy_dsn(**extra):
    d = dict(host="127.0.0.1", port=env("PGMLCAT_PORT"), user=env("DB_USER"),
             password=env("DB_PASS"), dbname=env("DB"), connect_timeout="10",
             application_name="soak")
    d.update(extra)
    return " ".join(f"{k}={v}" for k, v in d.items())


def direct_dsn(port):
    return (f"host=127.0.0.1 port={port} user={env('DB_USER')} password={env('DB_PASS')} "
            f"dbname={env('DB')} connect_timeout=10")


# --------------------------------------------------------------- errors
# SQLSTATEs of the messages pgbench prints (it prints no codes): pgmlcat's
# own errors (src/errors.rs) and the server's that a soak can meet.
MESSAGE_CLASSES = [
    (r"server connection lost|could not connect to server \S+: ", "08006"),
    (r"the pool is exhausted", "58000"),
    (r"checkout failure limit reached", "58000"),
    (r"too many client connections", "53300"),
    (r"pgmlcat is shutting down", "57P01"),
    (r"terminating connection due to (administrator command|unexpected postmaster exit)", "57P01"),
    (r"terminating connection because of crash of another server process", "57P02"),
    (r"the database system is (shutting down|starting up|in recovery mode|not yet accepting)", "57P03"),
    (r"conflict with recovery|could not serialize access", "40001"),
    (r"deadlock detected", "40P01"),
    (r"read-only transaction", "25006"),
    (r"protocol violation", "08P01"),
    (r"idle-in-transaction timeout", "25P03"),
]
NO_SQLSTATE = "none"


def class_of_message(msg: str) -> str:
    for pat, code in MESSAGE_CLASSES:
        if re.search(pat, msg):
            return code
    return NO_SQLSTATE


def short(msg, n=200) -> str:
    msg = " ".join(str(msg).split())
    return msg[:n]


class Recorder:
    """JSON lines, one writer per process, flushed line by line."""

    def __init__(self, path):
        self.f = open(path, "a", buffering=1)
        self.lock = threading.Lock()

    def write(self, **rec):
        rec.setdefault("t", time.time())
        line = json.dumps(rec, separators=(",", ":"))
        with self.lock:
            self.f.write(line + "\n")


class Watch:
    """What each thread is doing since when, for the stuck-client checks."""

    def __init__(self, rec, src, stuck_s):
        self.rec, self.src, self.stuck_s = rec, src, stuck_s
        self.ops = {}  # thread name -> [op, since, reported]
        self.lock = threading.Lock()
        self.max_latency = collections.defaultdict(float)

    def begin(self, op):
        with self.lock:
            self.ops[threading.current_thread().name] = [op, time.time(), False]

    def end(self):
        with self.lock:
            op = self.ops.pop(threading.current_thread().name, None)
        if op:
            took = time.time() - op[1]
            self.max_latency[op[0]] = max(self.max_latency[op[0]], took)
            if took > self.stuck_s and not op[2]:
                self.rec.write(kind="stuck", src=self.src, op=op[0], since=op[1], took=took)

    def scan(self):
        now = time.time()
        with self.lock:
            for name, op in self.ops.items():
                if not op[2] and now - op[1] > self.stuck_s:
                    op[2] = True
                    self.rec.write(kind="stuck", src=self.src, thread=name, op=op[0], since=op[1],
                                   took=now - op[1], still_running=True)


def psycopg_error(exc, notices):
    """(sqlstate, message) of a psycopg exception. A FATAL the server (or
    pgmlcat) sent while the client was idle reaches libpq's notice
    processor, and the next statement only finds the connection closed:
    that FATAL's code is the one the client saw."""
    code = getattr(exc, "sqlstate", None)
    msg = short(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    if code:
        return code, msg
    for n in reversed(notices):
        if n[0] in ("FATAL", "PANIC", "ERROR") and n[1]:
            return n[1], f"(sent while idle) {n[2]}; then: {msg}"
    code = class_of_message(str(exc))
    return code, msg


def run_threads(rec, watch, until, targets):
    """Starts the threads, waits until the deadline, then for each thread
    at most STUCK_SECONDS more. Exits 3 when one did not end."""
    threads = [threading.Thread(target=f, name=name, daemon=True) for name, f in targets]
    for t in threads:
        t.start()
    stuck_s = env("STUCK_SECONDS", 60, float)
    while time.time() < until + stuck_s and any(t.is_alive() for t in threads):
        watch.scan()
        time.sleep(0.5)
    alive = [t.name for t in threads if t.is_alive()]
    watch.scan()
    for name, took in watch.max_latency.items():
        rec.write(kind="latency", src=watch.src, op=name, max_s=round(took, 3))
    if alive:
        rec.write(kind="stuck", src=watch.src, threads=alive, op="thread did not end",
                  since=until, took=time.time() - until, still_running=True)
        rec.f.flush()
        os._exit(3)


# --------------------------------------------------------------- writer
def cmd_writer():
    import psycopg

    until = env("UNTIL", cast=float)
    threads = env("WRITER_THREADS", 2, int)
    pause = env("WRITER_PAUSE", 0.002, float)
    rec = Recorder(os.path.join(env("OUT_DIR"), "writer.jsonl"))
    watch = Watch(rec, "writer", env("STUCK_SECONDS", 60, float))
    rows_per = 10

    def worker(idx):
        # Thread 0 never prepares (unnamed statements), the others always do
        # (named statements, shared on the servers by pgmlcat).
        prepare = None if idx == 0 else 0
        base = (idx + 1) * 10**12
        seq = 0
        conn = None
        notices = []
        counts = collections.Counter()
        while time.time() < until:
            phase = "connect"
            ids = None
            try:
                if conn is None:
                    watch.begin("connect")
                    notices.clear()
                    try:
                        conn = psycopg.connect(proxy_dsn())
                    finally:
                        watch.end()
                    conn.prepare_threshold = prepare
                    conn.add_notice_handler(
                        lambda d: notices.append((d.severity_nonlocalized or d.severity, d.sqlstate,
                                                  short(d.message_primary))))
                first = base + seq
                seq += rows_per
                ids = (first, rows_per)
                phase = "write"
                watch.begin("write")
                try:
                    half = rows_per // 2
                    params = []
                    for i in range(first, first + half):
                        params += [i, idx, val_of(i)]
                    with conn.cursor() as cur:
                        cur.execute("INSERT INTO soak_rows (id, writer, val) VALUES "
                                    + ", ".join(["(%s, %s, %s)"] * half), params)
                        rest = list(range(first + half, first + rows_per))
                        cur.execute("INSERT INTO soak_rows (id, writer, val) "
                                    "SELECT i, %s, (i * %s) %% %s FROM unnest(%s::int8[]) AS i",
                                    [idx, VAL_MUL, VAL_MOD, rest])
                    phase = "commit"
                    conn.commit()
                finally:
                    watch.end()
                rec.write(kind="txn", status="acked", first=first, n=rows_per)
                counts["acked"] += 1
            except Exception as e:  # noqa: BLE001 - every failure is recorded
                code, msg = psycopg_error(e, notices)
                rec.write(kind="error", src="writer", target="primary", sqlstate=code, msg=msg,
                          phase=phase, exc=type(e).__name__)
                if ids:
                    status = "unknown" if phase == "commit" else "failed"
                    rec.write(kind="txn", status=status, first=ids[0], n=ids[1], sqlstate=code)
                    counts[status] += 1
                try:
                    if conn is not None:
                        conn.close()
                except Exception:  # noqa: BLE001
                    pass
                conn = None
                time.sleep(0.2)
            if pause:
                time.sleep(pause)
        if conn is not None:
            conn.close()
        rec.write(kind="op", src="writer", thread=idx, **counts)

    run_threads(rec, watch, until, [(f"writer-{i}", (lambda i=i: worker(i))) for i in range(threads)])


# --------------------------------------------------------------- ml
def cmd_ml():
    import psycopg

    until = env("UNTIL", cast=float)
    rec = Recorder(os.path.join(env("OUT_DIR"), "ml.jsonl"))
    watch = Watch(rec, "ml", env("STUCK_SECONDS", 60, float))
    train_rows = env("TRAIN_ROWS", 2000, int)
    train_pause = env("TRAIN_PAUSE", 1.0, float)

    def loop(name, target, step, pause):
        conn = None
        notices = []
        counts = collections.Counter()
        n = 0
        while time.time() < until:
            try:
                if conn is None:
                    watch.begin("connect")
                    notices.clear()
                    try:
                        conn = psycopg.connect(proxy_dsn(), autocommit=True)
                    finally:
                        watch.end()
                    conn.add_notice_handler(
                        lambda d: notices.append((d.severity_nonlocalized or d.severity, d.sqlstate,
                                                  short(d.message_primary))))
                watch.begin(name)
                try:
                    step(conn, n)
                finally:
                    watch.end()
                counts["ok"] += 1
            except Exception as e:  # noqa: BLE001
                code, msg = psycopg_error(e, notices)
                rec.write(kind="error", src=name, target=target, sqlstate=code, msg=msg, exc=type(e).__name__)
                counts["failed"] += 1
                try:
                    if conn is not None:
                        conn.close()
                except Exception:  # noqa: BLE001
                    pass
                conn = None
                time.sleep(0.2)
            n += 1
            notices.clear()
            if pause:
                time.sleep(pause)
        if conn is not None:
            conn.close()
        rec.write(kind="op", src=name, **counts)

    def train(conn, n):
        algo = ("linear", "lightgbm")[n % 2]
        hp = ", hyperparams => '{\"n_estimators\": 25}'" if algo == "lightgbm" else ""
        row = conn.execute(f"SELECT * FROM pgml.train('soak', 'regression', 'soak_features', 'y', "
                           f"algorithm => '{algo}'{hp})").fetchone()
        if row is None:
            raise RuntimeError("pgml.train returned no row")

    def predict_extended(conn, n):
        if n % 50 == 49:
            rows = conn.execute("SELECT id, pgml.predict('soak', ARRAY[x1, x2, x3]) FROM soak_train "
                                "WHERE id <= %s", [500], prepare=True).fetchall()
            if len(rows) != min(500, train_rows):
                raise RuntimeError(f"batch prediction returned {len(rows)} rows")
        else:
            i = random.randint(1, train_rows)
            row = conn.execute("SELECT id, pgml.predict('soak', ARRAY[x1, x2, x3]) FROM soak_train "
                               "WHERE id = %s", [i], prepare=True).fetchone()
            if row is None or row[0] != i or row[1] is None:
                raise RuntimeError(f"prediction for id {i}: {row}")

    def predict_simple(conn, n):
        i = random.randint(1, train_rows)
        with psycopg.ClientCursor(conn) as cur:
            cur.execute("SELECT id, pgml.predict('soak', ARRAY[x1, x2, x3]) FROM soak_train "
                        "WHERE id = %s", [i])
            row = cur.fetchone()
        if row is None or row[0] != i or row[1] is None:
            raise RuntimeError(f"prediction for id {i}: {row}")
        if n % 10 == 0:  # constant features: answered without a server
            v = conn.execute("SELECT pgml.predict('soak', ARRAY[0.5, 0.5, 0.5])").fetchone()[0]
            if v is None:
                raise RuntimeError("constant prediction is NULL")

    pause = env("PREDICT_PAUSE", 0.005, float)
    run_threads(rec, watch, until, [
        ("train", lambda: loop("train", "any", train, train_pause)),
        ("predict-extended", lambda: loop("predict-extended", "replica", predict_extended, pause)),
        ("predict-simple", lambda: loop("predict-simple", "replica", predict_simple, pause)),
    ])


# --------------------------------------------------------------- vanish
class PgError(Exception):
    def __init__(self, fields):
        self.fields = fields
        super().__init__(f"{fields.get('S', '?')} {fields.get('C', '?')}: {fields.get('M', '')}")

    @property
    def sqlstate(self):
        return self.fields.get("C")


class Raw:
    """The least of a Postgres client over a plain socket: startup, md5 or
    cleartext password, simple Query; and ways to vanish."""

    def __init__(self, host, port, user, password, db, timeout):
        self.s = socket.create_connection((host, int(port)), timeout=timeout)
        body = struct.pack("!i", 196608) + b"user\0" + user.encode() + b"\0database\0" + db.encode() + b"\0\0"
        self.s.sendall(struct.pack("!i", len(body) + 4) + body)
        while True:
            t, p = self.read()
            if t == b"R":
                code = struct.unpack("!i", p[:4])[0]
                if code == 5:
                    inner = hashlib.md5((password + user).encode()).hexdigest()
                    outer = "md5" + hashlib.md5(inner.encode() + p[4:8]).hexdigest()
                    self.send(b"p", outer.encode() + b"\0")
                elif code == 3:
                    self.send(b"p", password.encode() + b"\0")
                elif code != 0:
                    raise RuntimeError(f"authentication method {code} not supported here")
            elif t == b"E":
                raise PgError(self.fields(p))
            elif t == b"Z":
                return

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        return buf

    def read(self):
        h = self.recv_exact(5)
        n = struct.unpack("!i", h[1:])[0]
        return h[:1], self.recv_exact(n - 4)

    @staticmethod
    def fields(p):
        out = {}
        for part in p.split(b"\0"):
            if part:
                out[chr(part[0])] = part[1:].decode(errors="replace")
        return out

    def send(self, tag, payload):
        self.s.sendall(tag + struct.pack("!i", len(payload) + 4) + payload)

    def query(self, sql):
        """Runs a simple Query; returns the transaction status, raises the first error."""
        self.send(b"Q", sql.encode() + b"\0")
        err = None
        while True:
            t, p = self.read()
            if t == b"E" and err is None:
                err = PgError(self.fields(p))
            elif t == b"Z":
                if err:
                    raise err
                return p[:1]

    def vanish(self, rst):
        if rst:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.s.close()


def cmd_vanish():
    until = env("UNTIL", cast=float)
    every = env("VANISH_EVERY", 1.0, float)
    stuck_s = env("STUCK_SECONDS", 60, float)
    rec = Recorder(os.path.join(env("OUT_DIR"), "vanish.jsonl"))
    watch = Watch(rec, "vanish", stuck_s)
    variants = ["fin-idle-in-transaction", "rst-idle-in-transaction", "fin-mid-statement",
                "rst-mid-message"]

    def worker():
        n = 0
        counts = collections.Counter()
        while time.time() < until:
            variant = variants[n % len(variants)]
            n += 1
            rid = n
            phase = "connect"
            watch.begin("vanish " + variant)
            try:
                c = Raw("127.0.0.1", env("PGMLCAT_PORT"), env("DB_USER"), env("DB_PASS"), env("DB"), stuck_s)
                phase = "begin"
                c.query("BEGIN")
                if variant == "fin-mid-statement":
                    # The INSERT runs, then the statement sleeps: gone meanwhile.
                    phase = "mid-statement"
                    c.send(b"Q", f"INSERT INTO soak_vanished VALUES ({rid}, {val_of(rid)}); "
                                 f"SELECT pg_sleep(2)".encode() + b"\0")
                    time.sleep(0.3)
                    c.vanish(rst=False)
                else:
                    phase = "insert"
                    status = c.query(f"INSERT INTO soak_vanished VALUES ({rid}, {val_of(rid)})")
                    if status != b"T":
                        raise RuntimeError(f"after INSERT the transaction status is {status!r}, not T")
                    if variant == "rst-mid-message":
                        msg = f"INSERT INTO soak_vanished VALUES ({rid + 10**9}, 0)".encode() + b"\0"
                        whole = b"Q" + struct.pack("!i", len(msg) + 4) + msg
                        c.s.sendall(whole[: len(whole) // 2])
                        time.sleep(0.05)
                    c.vanish(rst=variant.startswith("rst"))
                rec.write(kind="vanish", id=rid, variant=variant)
                counts[variant] += 1
            except Exception as e:  # noqa: BLE001
                code = getattr(e, "sqlstate", None) or class_of_message(str(e))
                rec.write(kind="error", src="vanish", target="primary", sqlstate=code, msg=short(e),
                          phase=phase, exc=type(e).__name__)
                counts["failed"] += 1
                # Its row may have been sent: it must be absent all the same.
                rec.write(kind="vanish", id=rid, variant=variant + " (failed before vanishing)")
            finally:
                watch.end()
            time.sleep(every)
        rec.write(kind="op", src="vanish", **counts)

    run_threads(rec, watch, until, [("vanish", worker)])


# --------------------------------------------------------------- storm
def cmd_probe():
    """Three raw clients around the primary's restart, each message they get
    recorded: A has a statement in flight (in a transaction), B is idle in a
    transaction, C is between transactions. The README: A and B get FATAL
    08006 and are closed (or the server's own FATAL, passed through): one
    error, as a direct connection would get; C notices nothing."""
    out_dir = env("OUT_DIR")
    rec = Recorder(os.path.join(out_dir, "probe.jsonl"))
    ready, restarted = os.path.join(out_dir, "probe.ready"), os.path.join(out_dir, "probe.restarted")
    stuck_s = env("STUCK_SECONDS", 60, float)
    connect = lambda: Raw("127.0.0.1", env("PGMLCAT_PORT"), env("DB_USER"), env("DB_PASS"), env("DB"), stuck_s)  # noqa: E731
    try:
        a, b, c = connect(), connect(), connect()
        for x in (a, b):
            x.query("BEGIN")
            x.query("SELECT txid_current()")  # not known read-only: on the primary
        c.query("SELECT txid_current()")
        a.send(b"Q", b"SELECT pg_sleep(60)\0")
        time.sleep(0.5)
    except Exception as e:  # noqa: BLE001
        rec.write(kind="error", src="probe", target="primary", sqlstate=getattr(e, "sqlstate", None)
                  or class_of_message(str(e)), msg=short(e), phase="setup")
        open(ready, "w").close()
        return
    open(ready, "w").close()
    deadline = time.time() + 130
    while not os.path.exists(restarted) and time.time() < deadline:
        time.sleep(0.1)

    def drain(x, label, target, then=None):
        """What the client is told: first whatever is already there, then
        (if it is still connected) the answer to `then`, until the
        connection ends or a ReadyForQuery."""
        got = []

        def read_until_end(timeout):
            x.s.settimeout(timeout)
            while True:
                t, p = x.read()
                if t == b"E":
                    f = x.fields(p)
                    got.append(("E", f.get("S"), f.get("C"), short(f.get("M"), 120)))
                elif t == b"Z":
                    got.append(("Z", p[:1].decode()))
                    return
                elif t in (b"C", b"T", b"D", b"N"):
                    got.append((t.decode(),))

        try:
            try:
                read_until_end(1.0)
            except socket.timeout:
                pass
            if not any(g[0] == "Z" for g in got):
                if then:
                    x.send(b"Q", then)
                try:
                    read_until_end(stuck_s)
                except socket.timeout:
                    got.append(("stuck", f"no answer in {stuck_s:.0f} s"))
                    rec.write(kind="stuck", src="probe", op=label, since=time.time() - stuck_s, took=stuck_s)
        except (ConnectionError, OSError) as e:
            got.append(("closed", type(e).__name__))
        errs = [g for g in got if g[0] == "E"]
        rec.write(kind="probe", client=label, messages=got)
        if len(errs) > 1:
            rec.write(kind="error", src="probe", target=target,
                      sqlstate="+".join(e[2] for e in errs),
                      msg=short(f"{len(errs)} ErrorResponses for one statement ({label}): "
                                + "; ".join(f"{e[1]} {e[2]} {e[3]}" for e in errs)), phase=label)
        elif errs:
            rec.write(kind="error", src="probe", target=target, sqlstate=errs[0][2],
                      msg=short(f"({label}) {errs[0][1]} {errs[0][3]}"), phase=label)
        elif got and got[-1][0] == "closed":
            rec.write(kind="error", src="probe", target=target, sqlstate=NO_SQLSTATE,
                      msg=f"({label}) connection closed with no error message", phase=label)

    drain(a, "statement in flight at the restart", "primary")
    drain(b, "idle in a transaction at the restart", "primary", then=b"SELECT 1\0")
    # A client between transactions is promised nothing at all: no window
    # allows an error for it.
    drain(c, "between transactions at the restart", "between-transactions", then=b"SELECT txid_current()\0")
    for x in (a, b, c):
        try:
            x.s.close()
        except OSError:
            pass


def cmd_storm():
    import asyncpg

    n = env("STORM_CLIENTS", 2000, int)
    stuck_s = env("STUCK_SECONDS", 60, float)
    out_dir = env("OUT_DIR")
    rec = Recorder(os.path.join(out_dir, "storm.jsonl"))
    port = int(env("PGMLCAT_PORT"))

    async def main():
        connected = 0
        settled = 0
        all_settled = asyncio.Event()
        peak = 0
        live = 0
        results = collections.Counter()
        latencies = []

        def settle():
            nonlocal settled
            settled += 1
            if settled == n:
                all_settled.set()

        async def one(i):
            nonlocal connected, live, peak
            t0 = time.monotonic()
            conn = None
            did_settle = False
            phase = "connect"
            try:
                conn = await asyncpg.connect(host="127.0.0.1", port=port, user=env("DB_USER"),
                                             password=env("DB_PASS"), database=env("DB"),
                                             timeout=stuck_s)
                connected += 1
                live += 1
                peak = max(peak, live)
                settle()
                did_settle = True
                phase = "wait for the others"
                try:
                    await asyncio.wait_for(all_settled.wait(), 30)
                except asyncio.TimeoutError:
                    pass
                phase = "query"
                if i % 2:
                    v = await conn.fetchval("SELECT 1")  # extended protocol, a named statement
                else:
                    v = (await conn.execute("SELECT 1"))  # simple protocol
                    v = 1 if v == "SELECT 1" else v
                if v != 1:
                    raise RuntimeError(f"SELECT 1 returned {v!r}")
                phase = "close"
                await conn.close(timeout=10)
                live -= 1
                conn = None
                results["ok"] += 1
                latencies.append(time.monotonic() - t0)
            except asyncpg.PostgresError as e:
                results["failed"] += 1
                rec.write(kind="error", src="storm", target="replica", sqlstate=e.sqlstate or NO_SQLSTATE,
                          msg=short(e), phase=phase, exc=type(e).__name__)
            except Exception as e:  # noqa: BLE001
                results["failed"] += 1
                rec.write(kind="error", src="storm", target="replica", sqlstate=class_of_message(str(e)),
                          msg=short(f"{type(e).__name__}: {e}"), phase=phase, exc=type(e).__name__)
            finally:
                if not did_settle:
                    settle()
                if conn is not None:
                    live -= 1
                    conn.terminate()

        t0 = time.time()
        tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
        done, pending = await asyncio.wait(tasks, timeout=stuck_s * 2 + 30)
        for t in pending:
            t.cancel()
        if pending:
            rec.write(kind="stuck", src="storm", op=f"{len(pending)} storm clients not done",
                      since=t0, took=time.time() - t0, still_running=True)
        lat = sorted(latencies)
        pct = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 3) if lat else None  # noqa: E731
        summary = dict(kind="storm", clients=n, ok=results["ok"], failed=results["failed"],
                       stuck=len(pending), connected=connected, peak_connected=peak,
                       began=t0, wall_s=round(time.time() - t0, 3),
                       p50_s=pct(0.5), p99_s=pct(0.99), max_s=round(lat[-1], 3) if lat else None)
        rec.write(**summary)
        print(json.dumps(summary))

    asyncio.run(main())


# --------------------------------------------------------------- pools
def cmd_pools():
    import psycopg

    port = env("PGMLCAT_PORT")
    wait_s = env("POOL_IDLE_WAIT", 30, float)
    out = os.path.join(env("OUT_DIR"), "pools.json")
    deadline = time.time() + wait_s
    t0 = time.time()
    last = None
    err = None
    idle = False
    while True:
        try:
            with psycopg.connect(f"host=127.0.0.1 port={port} user={env('ADMIN_USER')} "
                                 f"password={env('ADMIN_PASS')} dbname=pgbouncer connect_timeout=10",
                                 autocommit=True) as c:
                cur = c.execute("SHOW POOLS")
                cols = [d.name for d in cur.description]
                pools = [dict(zip(cols, r)) for r in cur.fetchall()]
                cur = c.execute("SHOW SERVERS")
                cols = [d.name for d in cur.description]
                servers = [dict(zip(cols, r)) for r in cur.fetchall()]
            last = dict(pools=pools, servers=servers)
            err = None
            app = [p for p in pools if p["database"] == env("DB")]
            idle = bool(app) and all(int(p["cl_active"]) == 0 and int(p["cl_waiting"]) == 0
                                     and int(p["sv_active"]) == 0 for p in app)
        except Exception as e:  # noqa: BLE001
            err = short(e)
        if idle or time.time() > deadline:
            break
        time.sleep(1)
    json.dump(dict(idle=idle, waited_s=round(time.time() - t0, 1), last=last, error=err),
              open(out, "w"), default=str, indent=1)
    print(f"pools idle: {idle} after {time.time() - t0:.1f}s")


# --------------------------------------------------------------- verify
def read_jsonl(path):
    if not os.path.exists(path):
        return []
    out = []
    for line in open(path, errors="replace"):
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line cut by a kill
    return out


def backends_of(c):
    """The pool user's backends on a server by state. pgmlcat's own
    monitor queries it every second, so a backend seen busy once may be
    that: up to 10 looks, the first with none busy wins."""
    for _ in range(10):
        got = dict(c.execute(
            "SELECT coalesce(state, '?'), count(*) FROM pg_stat_activity WHERE usename = %s "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY 1",
            [env("DB_USER")]).fetchall())
        if set(got) <= {"idle"}:
            break
        time.sleep(0.5)
    return got


def cmd_verify():
    import psycopg

    out_dir = env("OUT_DIR")
    primary = env("PG_PORT")
    replicas = env("REPLICA_PORT_LIST").split()
    txns = [r for r in read_jsonl(os.path.join(out_dir, "writer.jsonl")) if r.get("kind") == "txn"]
    vanished = [r for r in read_jsonl(os.path.join(out_dir, "vanish.jsonl")) if r.get("kind") == "vanish"]
    res = {}
    with psycopg.connect(direct_dsn(primary), autocommit=True) as c:
        # The writer's record into a table of the primary, compared there.
        c.execute("CREATE TEMP TABLE soak_claims (first int8, n int, status text)")
        with c.cursor().copy("COPY soak_claims FROM STDIN") as cp:
            for r in txns:
                cp.write_row((r["first"], r["n"], r["status"]))
        c.execute("CREATE TEMP TABLE soak_claimed AS SELECT i AS id, status FROM soak_claims, "
                  "generate_series(first, first + n - 1) AS i")
        c.execute("CREATE INDEX ON soak_claimed (id)")
        q = lambda sql: c.execute(sql).fetchone()  # noqa: E731
        res["acked_txns"], res["acked_rows"], res["acked_sum"] = q(
            "SELECT (SELECT count(*) FROM soak_claims WHERE status = 'acked'), count(*), "
            f"coalesce(sum((id * {VAL_MUL}) % {VAL_MOD}), 0) FROM soak_claimed WHERE status = 'acked'")
        res["unknown_txns"], res["failed_txns"] = q(
            "SELECT count(*) FILTER (WHERE status = 'unknown'), count(*) FILTER (WHERE status = 'failed') "
            "FROM soak_claims")
        res["found_rows"], res["found_sum"] = q("SELECT count(*), coalesce(sum(val), 0) FROM soak_rows")
        res["acked_missing"] = q("SELECT count(*) FROM soak_claimed c WHERE status = 'acked' "
                                 "AND NOT EXISTS (SELECT 1 FROM soak_rows r WHERE r.id = c.id)")[0]
        res["failed_present"] = q("SELECT count(*) FROM soak_claimed c JOIN soak_rows r USING (id) "
                                  "WHERE c.status = 'failed'")[0]
        res["unknown_present_rows"], res["unknown_present_sum"] = q(
            "SELECT count(*), coalesce(sum(r.val), 0) FROM soak_claimed c JOIN soak_rows r USING (id) "
            "WHERE c.status = 'unknown'")
        # Whole transactions or nothing: an unknown commit's rows all there or none.
        res["unknown_committed"], res["unknown_partial"] = q(
            "SELECT count(*) FILTER (WHERE k = s.n), count(*) FILTER (WHERE k > 0 AND k < s.n) FROM "
            "(SELECT s.first, s.n, (SELECT count(*) FROM soak_rows r WHERE r.id BETWEEN s.first "
            "AND s.first + s.n - 1) AS k FROM soak_claims s WHERE status = 'unknown') s")
        res["unclaimed_rows"] = q("SELECT count(*) FROM soak_rows r WHERE NOT EXISTS "
                                  "(SELECT 1 FROM soak_claimed c WHERE c.id = r.id)")[0]
        res["bad_values"] = q(f"SELECT count(*) FROM soak_rows WHERE val <> (id * {VAL_MUL}) % {VAL_MOD}")[0]
        res["expected_rows"] = res["acked_rows"] + res["unknown_present_rows"]
        res["expected_sum"] = int(res["acked_sum"]) + int(res["unknown_present_sum"])
        res["found_sum"] = int(res["found_sum"])
        res["acked_sum"] = int(res["acked_sum"])
        res["unknown_present_sum"] = int(res["unknown_present_sum"])
        res["vanished_clients"] = len(vanished)
        res["vanished_rows_present"] = q("SELECT count(*) FROM soak_vanished")[0]
        # pgbench's TPC-B invariant: every committed transaction moved the same
        # delta in all four tables.
        a, b, t, h, hn = q("SELECT (SELECT sum(abalance) FROM pgbench_accounts), "
                           "(SELECT sum(bbalance) FROM pgbench_branches), "
                           "(SELECT sum(tbalance) FROM pgbench_tellers), "
                           "(SELECT coalesce(sum(delta), 0) FROM pgbench_history), "
                           "(SELECT count(*) FROM pgbench_history)")
        res["pgbench_sums"] = dict(accounts=int(a), branches=int(b), tellers=int(t), history=int(h))
        res["pgbench_history_rows"] = int(hn)
        lsn = q("SELECT pg_current_wal_lsn()")[0]
        res["primary_lsn"] = str(lsn)
        # What each server holds for the pool's user (pgmlcat's connections).
        res["backends"] = {}
        res["backends"]["primary"] = backends_of(c)
    res["replicas"] = {}
    for i, port in enumerate(replicas, 1):
        name = f"replica{i}"
        try:
            with psycopg.connect(direct_dsn(port), autocommit=True) as c:
                deadline = time.time() + 60
                while True:
                    caught_up = c.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                          [res["primary_lsn"]]).fetchone()[0]
                    if caught_up or time.time() > deadline:
                        break
                    time.sleep(0.5)
                rows, s = c.execute("SELECT count(*), coalesce(sum(val), 0) FROM soak_rows").fetchone()
                van = c.execute("SELECT count(*) FROM soak_vanished").fetchone()[0]
                backends = backends_of(c)
            res["replicas"][name] = dict(caught_up=bool(caught_up), rows=rows, sum=int(s), vanished=van)
            res["backends"][name] = backends
        except Exception as e:  # noqa: BLE001
            res["replicas"][name] = dict(error=short(e))
    json.dump(res, open(os.path.join(out_dir, "verify.json"), "w"), indent=1, default=str)
    print(json.dumps({k: v for k, v in res.items() if k != "backends"}, default=str))


# --------------------------------------------------------------- report
def parse_pgbench(out_dir):
    """Segments of both pgbench loops: counts per script, failures, aborted
    clients, exit codes, and every error line with its time and class."""
    res = {}
    errors = []
    for mode in ("simple", "prepared"):
        d = os.path.join(out_dir, f"pgbench-{mode}")
        segs = []
        tsv = os.path.join(d, "segments.tsv")
        if os.path.exists(tsv):
            for line in open(tsv):
                seg, rc, t0, t1, dur = line.split()
                segs.append((int(seg), int(rc), float(t0), float(t1), int(dur)))
        tot = collections.Counter()
        rcs = collections.Counter()
        for seg, rc, t0, t1, dur in segs:
            rcs[rc] += 1
            path = os.path.join(d, f"seg-{seg}.log")
            if not os.path.exists(path):
                continue
            script = None
            loose = []
            aborted = set()
            for raw in open(path, errors="replace"):
                raw = raw.rstrip("\n")
                ts, _, l = raw.partition(" ")
                try:
                    t = float(ts)
                except ValueError:
                    t, l = t1, raw
                m = re.match(r"number of transactions actually processed: (\d+)", l)
                if m:
                    tot["processed"] += int(m.group(1))
                    continue
                m = re.match(r"number of failed transactions: (\d+)", l)
                if m:
                    tot["failed"] += int(m.group(1))
                    continue
                m = re.match(r"SQL script (\d+): <builtin: (.*)>", l)
                if m:
                    script = "tpcb-like" if m.group(2).startswith("TPC-B") else "select-only"
                    continue
                m = re.match(r" - (\d+) transactions \(", l)
                if m and script:
                    tot[f"{script} processed"] += int(m.group(1))
                    continue
                m = re.match(r" - number of failed transactions: (\d+)", l)
                if m and script:
                    tot[f"{script} failed"] += int(m.group(1))
                    continue
                if "Run was aborted" in l:
                    continue
                m = re.match(r"pgbench: error: client (\d+) script (\d+) aborted in command \d+ query \d+: (.*)", l)
                if m:
                    aborted.add(int(m.group(1)))
                    sc = int(m.group(2))
                    tot[f"{('tpcb-like', 'select-only')[sc]} aborted"] += 1
                    errors.append(dict(t=t, src=f"pgbench-{mode}", target=("primary", "replica")[sc],
                                       sqlstate=class_of_message(m.group(3)), msg=short(m.group(3))))
                    continue
                m = re.match(r"pgbench: error: client (\d+) aborted in command \d+ \((\w+)\) of script (\d+); (.*)", l)
                if m:
                    aborted.add(int(m.group(1)))
                    sc = int(m.group(3))
                    tot[f"{('tpcb-like', 'select-only')[sc]} aborted"] += 1
                    cause = loose.pop(0) if loose else (t, f"connection closed, no message ({m.group(4)})")
                    errors.append(dict(t=t, src=f"pgbench-{mode}", target=("primary", "replica")[sc],
                                       sqlstate=class_of_message(cause[1]), msg=short(cause[1])))
                    continue
                if l.startswith("pgbench: error:") or l.startswith("pgbench: fatal:"):
                    errors.append(dict(t=t, src=f"pgbench-{mode}", target="any",
                                       sqlstate=class_of_message(l), msg=short(l)))
                    continue
                if re.match(r"(FATAL|ERROR|PANIC):|server closed|connection to server|could not|SSL|"
                            r"lost synchronization", l):
                    loose.append((t, l))
            for t, l in loose:  # printed, no client aborted on it
                errors.append(dict(t=t, src=f"pgbench-{mode}", target="any",
                                   sqlstate=class_of_message(l), msg=short("(no abort) " + l)))
            tot["aborted clients"] += len(aborted)
        res[mode] = dict(segments=len(segs), exit_codes=dict(rcs), **tot)
    return res, errors


def window_rules(events, grace):
    """The faults' windows: (name, begin, end, targets, classes, reference)."""
    by = collections.defaultdict(dict)
    for t, name, phase, _detail in events:
        by[name][phase] = t
    rules = []
    gone = "README, How pooling behaves, *Restarts and failovers*; Replicas, *Health*"
    if "primary_restart" in by:
        b = by["primary_restart"].get("begin")
        e = by["primary_restart"].get("end", b)
        # Reads count too: a client's reads right after its own write go
        # to the primary until a replica replayed it (README, Reads that
        # see your writes), and pgbench's clients both write and read.
        rules.append(("primary restart", b - 1, e + grace, {"primary", "replica", "any"}, {"08006"},
                      f"FATAL 08006 for a client in a transaction, or with a statement in flight, when its server died ({gone})"))
        rules.append(("primary restart", b - 1, e + grace, {"primary", "replica", "any"}, {"57P01"},
                      "Postgres's own FATAL 57P01 (fast shutdown) for a statement it was running or a transaction "
                      "left open, passed through as the one error (README, *Restarts and failovers*)"))
    if "replica_stop" in by:
        b = by["replica_stop"].get("begin")
        e = by["replica_stop"].get("stopped", b)
        rules.append(("replica stop", b - 1, e + grace, {"replica", "any"}, {"08006"},
                      f"FATAL 08006 for a read in flight on the replica stopped ({gone})"))
        rules.append(("replica stop", b - 1, e + grace, {"replica", "any"}, {"57P01"},
                      "the replica's own FATAL 57P01 (fast shutdown) for a statement it was running, passed through"))
    if "storm" in by:
        b = by["storm"].get("begin")
        e = by["storm"].get("end", b)
        rules.append(("storm", b, e + grace, {"primary", "replica", "any"}, {"58000"},
                      "58000 pool exhausted: no free server within checkout_timeout (README, Errors clients see)"))
    return rules


def cmd_report():
    out_dir = env("OUT_DIR")
    md_out = env("MD_OUT")
    start, end = env("START", cast=float), env("END", cast=float)
    grace = env("GRACE", 10, float)
    rss_slack = env("RSS_SLACK", 0.10, float)
    checks = []  # (name, ok, detail)

    events = []
    for line in open(os.path.join(out_dir, "events.tsv")):
        parts = line.rstrip("\n").split("\t")
        if len(parts) >= 3:
            events.append((float(parts[0]), parts[1], parts[2], parts[3] if len(parts) > 3 else ""))
    rel = lambda t: t - start  # noqa: E731

    # ---- records of every client
    recs = {}
    for name in ("writer", "ml", "vanish", "storm", "probe"):
        recs[name] = read_jsonl(os.path.join(out_dir, f"{name}.jsonl"))
    pgb, pgb_errors = parse_pgbench(out_dir)
    errors = pgb_errors[:]
    stuck = []
    for name, rs in recs.items():
        for r in rs:
            if r.get("kind") == "error":
                errors.append(r)
            elif r.get("kind") == "stuck":
                stuck.append(r)

    # ---- error classes against the faults' windows
    rules = window_rules(events, grace)
    unexpected = []
    by_class = collections.defaultdict(lambda: dict(n=0, src=collections.Counter(), why=collections.Counter(),
                                                    unexpected=0, example=None))
    for e in sorted(errors, key=lambda e: e["t"]):
        code = e.get("sqlstate") or NO_SQLSTATE
        b = by_class[code]
        b["n"] += 1
        b["src"][e["src"]] += 1
        if b["example"] is None:
            b["example"] = e
        rule = next((r for r in rules if r[1] <= e["t"] <= r[2] and e.get("target", "any") in r[3]
                     and code in r[4]), None)
        if rule:
            b["why"][rule[0]] += 1
        else:
            b["unexpected"] += 1
            unexpected.append(e)
    checks.append(("no unexpected error class", not unexpected,
                   f"{len(unexpected)} error(s) outside what the faults injected explain" if unexpected
                   else f"{len(errors)} error(s), each explained by a fault"))

    # ---- stuck clients
    workers = {}
    p = os.path.join(out_dir, "workers.tsv")
    if os.path.exists(p):
        for line in open(p):
            name, rc, how = line.rstrip("\n").split("\t")
            workers[name] = (int(rc), how)
    stuck_workers = [f"{n} ({how}, exit {rc})" for n, (rc, how) in workers.items() if how != "exited" or rc != 0]
    killed_segments = sum(v["exit_codes"].get(137, 0) + v["exit_codes"].get(124, 0) for v in pgb.values())
    no_stuck = not stuck and not stuck_workers and killed_segments == 0
    storm = next((r for r in recs["storm"] if r.get("kind") == "storm"), None)
    checks.append(("no stuck client", no_stuck,
                   f"{len(stuck)} operation(s) over STUCK_SECONDS; clients and faults that did not end cleanly: "
                   f"{', '.join(stuck_workers) or 'none'}; "
                   f"pgbench runs killed by their timeout: {killed_segments}"))

    # ---- pools
    pools = json.load(open(os.path.join(out_dir, "pools.json"))) if os.path.exists(
        os.path.join(out_dir, "pools.json")) else dict(idle=False, error="not checked")
    verify = json.load(open(os.path.join(out_dir, "verify.json"))) if os.path.exists(
        os.path.join(out_dir, "verify.json")) else {}
    busy_backends = {s: {k: v for k, v in b.items() if k not in ("idle",)}
                     for s, b in verify.get("backends", {}).items()}
    busy_backends = {s: b for s, b in busy_backends.items() if b}
    checks.append(("no server connection leaked", bool(pools.get("idle")) and not busy_backends,
                   f"SHOW POOLS idle (cl_active = cl_waiting = sv_active = 0) after {pools.get('waited_s')} s: "
                   f"{pools.get('idle')}; server backends of {env('DB_USER')} not idle: {busy_backends or 'none'}"))

    # ---- RSS
    rss = []
    p = os.path.join(out_dir, "rss.tsv")
    if os.path.exists(p):
        for line in open(p):
            try:
                t, kb = line.split()
                rss.append((float(t), int(kb)))
            except ValueError:
                pass
    mid = (start + end) / 2
    first = [kb for t, kb in rss if start <= t < mid]
    last = [kb for t, kb in rss if mid <= t <= end]
    peak = max((kb for _, kb in rss), default=0)
    final = rss[-1][1] if rss else 0
    rss_ok = bool(first and last) and max(last) <= max(first) * (1 + rss_slack)
    slope = None
    if len(last) > 2:
        ts = [t for t, kb in rss if mid <= t <= end]
        mt, mk = statistics.mean(ts), statistics.mean(last)
        den = sum((t - mt) ** 2 for t in ts)
        slope = sum((t - mt) * (k - mk) for t, k in zip(ts, last)) / den * 60 if den else 0.0
    checks.append(("RSS bounded", rss_ok,
                   f"max over the last half {max(last, default=0) / 1024:.1f} MiB <= max over the first half "
                   f"{max(first, default=0) / 1024:.1f} MiB x {1 + rss_slack:.2f}"))

    # ---- nothing lost
    v = verify
    lost_ok = bool(v) and (v.get("acked_missing") == 0 and v.get("failed_present") == 0
                           and v.get("unclaimed_rows") == 0 and v.get("bad_values") == 0
                           and v.get("unknown_partial") == 0
                           and v.get("found_rows") == v.get("expected_rows")
                           and v.get("found_sum") == v.get("expected_sum")
                           and v.get("vanished_rows_present") == 0)
    reps = v.get("replicas", {})
    reps_ok = bool(reps) and all(r.get("caught_up") and r.get("rows") == v.get("found_rows")
                                 and r.get("sum") == v.get("found_sum") and r.get("vanished") == 0
                                 for r in reps.values())
    sums = v.get("pgbench_sums", {})
    pgb_ok = bool(sums) and len(set(sums.values())) == 1
    tpcb_done = sum(pgb[m].get("tpcb-like processed", 0) for m in pgb)
    tpcb_unknown = sum(pgb[m].get("tpcb-like aborted", 0) for m in pgb)
    hist = v.get("pgbench_history_rows", -1)
    # Each aborted client may have had its COMMIT in flight; a segment killed
    # by its timeout reports nothing, which the stuck check already fails.
    hist_ok = tpcb_done <= hist <= tpcb_done + tpcb_unknown
    checks.append(("nothing lost (writer's checksum)", lost_ok,
                   f"expected {v.get('expected_rows')} rows / sum {v.get('expected_sum')}, found "
                   f"{v.get('found_rows')} / {v.get('found_sum')}; acknowledged missing {v.get('acked_missing')}, "
                   f"rolled back present {v.get('failed_present')}, vanished clients' rows present "
                   f"{v.get('vanished_rows_present')}"))
    checks.append(("replicas hold the same rows", reps_ok,
                   "; ".join(f"{n}: {r}" for n, r in reps.items())))
    checks.append(("pgbench's TPC-B sums agree", pgb_ok and hist_ok,
                   f"sum(abalance) = sum(bbalance) = sum(tbalance) = sum(delta): {sums}; history rows {hist}, "
                   f"TPC-B transactions reported {tpcb_done} (+ at most {tpcb_unknown} with an unknown outcome)"))

    # ---- pgmlcat itself
    alive = env("PGMLCAT_ALIVE", "0") == "1"
    panics = env("PGMLCAT_PANICS", 0, int)
    reloads_sent = sum(1 for e in events if e[1] == "reload")
    reloads_failed = sum(1 for e in events if e[1] == "reload" and e[2] != "ok")
    reloaded_log = env("RELOADS_LOGGED", 0, int)
    rejected_log = env("RELOADS_REJECTED", 0, int)
    checks.append(("pgmlcat alive, no panic", alive and panics == 0, f"alive at the end: {alive}, panics logged: {panics}"))
    checks.append(("every reload applied", reloads_failed == 0 and rejected_log == 0 and reloaded_log >= reloads_sent,
                   f"{reloads_sent} sent, {reloads_failed} failed, {reloaded_log} logged as reloaded, "
                   f"{rejected_log} rejected"))
    if storm is not None:
        storm_ok = storm["ok"] + sum(1 for e in recs["storm"] if e.get("kind") == "error"
                                     and e.get("sqlstate") == "58000") == storm["clients"]
        checks.append(("storm: every client served (or told 58000)", storm_ok,
                       f"{storm['ok']}/{storm['clients']} ok"))
    else:
        checks.append(("storm: every client served (or told 58000)", False, "the storm left no summary"))

    # ---- markdown
    L = []
    ok_all = all(c[1] for c in checks)
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    L.append(f"# Soak under faults: {'PASS' if ok_all else 'FAIL'}")
    L.append("")
    L.append(f"- date: {now}; host: {platform.node()} ({os.cpu_count()} CPUs); load average at the end: "
             f"{env('LOADAVG', '?')}")
    L.append(f"- pgmlcat {env('PGMLCAT_VERSION', '?')}; PostgreSQL {env('PG_VERSION', '?')}")
    L.append(f"- {env('MINUTES')} minute(s) of load through pgmlcat on one pool: a primary and two streaming replicas "
             f"(pg_basebackup -R), transaction mode, read/write splitting, pool_size {env('POOL_SIZE')} "
             f"(reloads toggle it with {env('POOL_SIZE_ALT')}), ban_time {env('BAN_TIME')} s")
    L.append(f"- load: pgbench -M simple and -M prepared ({env('PGBENCH_CLIENTS')} clients each, "
             f"`-b tpcb-like@3 -b select-only@1 --max-tries=1 --failures-detailed`, scale {env('SCALE')}, runs of "
             f"{env('PGBENCH_SEGMENT')} s started again at once); the writer ({env('WRITER_THREADS', 2)} threads, "
             f"10 rows a transaction); pgml.train (linear / LightGBM, {env('TRAIN_ROWS', 2000)} rows) and pgml.predict "
             f"(simple and extended) loops; a vanishing client every {env('VANISH_EVERY', 1)} s")
    L.append("")
    L.append("## Checks")
    L.append("")
    L.append("| check | result | detail |")
    L.append("|---|---|---|")
    for name, ok, detail in checks:
        L.append(f"| {name} | {'ok' if ok else '**FAIL**'} | {detail} |")
    L.append("")
    L.append("## Faults (seconds from the start)")
    L.append("")
    L.append("| t | event | detail |")
    L.append("|---:|---|---|")
    for t, name, phase, detail in events:
        if name == "reload":
            continue
        L.append(f"| {rel(t):.1f} | {name} {phase} | {detail} |")
    L.append(f"| | reloads | {reloads_sent} every {env('RELOAD_EVERY')} s (SIGHUP and admin RELOAD in turn, pool_size "
             f"toggled), {reloads_failed} failed |")
    L.append("")
    L.append("## Transactions")
    L.append("")
    L.append("| client | done | failed / aborted | detail |")
    L.append("|---|---:|---:|---|")
    for mode, r in pgb.items():
        L.append(f"| pgbench -M {mode} | {r.get('processed', 0):,} | {r.get('failed', 0)} failed, "
                 f"{r.get('aborted clients', 0)} clients aborted | TPC-B {r.get('tpcb-like processed', 0):,}, "
                 f"select-only {r.get('select-only processed', 0):,}; {r['segments']} runs, exit codes "
                 f"{r['exit_codes']} |")
    wcount = collections.Counter()
    for r in recs["writer"]:
        if r.get("kind") == "txn":
            wcount[r["status"]] += 1
    L.append(f"| writer | {wcount['acked']:,} | {wcount['failed']} failed, {wcount['unknown']} unknown | "
             f"acknowledged commits; failed = error before COMMIT (rolled back), unknown = COMMIT in flight |")
    mlc = collections.defaultdict(collections.Counter)
    for r in recs["ml"]:
        if r.get("kind") == "op":
            mlc[r["src"]].update({k: r.get(k, 0) for k in ("ok", "failed")})
    for src in ("train", "predict-extended", "predict-simple"):
        L.append(f"| pgml {src} | {mlc[src]['ok']:,} | {mlc[src]['failed']} | |")
    vc = collections.Counter(r["variant"] for r in recs["vanish"] if r.get("kind") == "vanish")
    L.append(f"| vanishing clients | {sum(vc.values())} | | " + ", ".join(f"{k}: {n}" for k, n in sorted(vc.items()))
             + " |")
    if storm:
        L.append(f"| storm | {storm['ok']:,} / {storm['clients']:,} | {storm['failed']} | {storm['peak_connected']} "
                 f"connected at once; connect + SELECT 1 + close: p50 {storm['p50_s']} s, p99 {storm['p99_s']} s, "
                 f"max {storm['max_s']} s; all done in {storm['wall_s']} s |")
    L.append("")
    L.append("## Errors by class (SQLSTATE)")
    L.append("")
    if by_class:
        L.append("| SQLSTATE | count | unexpected | explained by | from | first seen |")
        L.append("|---|---:|---:|---|---|---|")
        for code, b in sorted(by_class.items()):
            ex = b["example"]
            L.append(f"| {code} | {b['n']} | {b['unexpected']} | "
                     + (", ".join(f"{k} {n}" for k, n in b["why"].items()) or "-") + " | "
                     + ", ".join(f"{k} {n}" for k, n in b["src"].most_common()) + " | "
                     + f"t={rel(ex['t']):.1f} {ex['src']}: {ex['msg'].replace('|', '/')} |")
    else:
        L.append("none")
    L.append("")
    L.append(f"Allowed (each only in its fault's window, from {1:.0f} s before it to {grace:.0f} s after it ended, and "
             "only for clients whose server it hit: reads for a replica, writes for the primary):")
    L.append("")
    seen = set()
    for name, b, e, targets, classes, ref in rules:
        key = (name, tuple(sorted(classes)))
        if key in seen:
            continue
        seen.add(key)
        L.append(f"- {name} ({rel(b):.0f}-{rel(e):.0f} s): {'/'.join(sorted(classes))}: {ref}")
    if unexpected:
        L.append("")
        L.append("Unexpected errors (first 30):")
        L.append("")
        for e in unexpected[:30]:
            L.append(f"- t={rel(e['t']):.1f} {e['src']} ({e.get('target', '?')}"
                     f"{', ' + e['phase'] if e.get('phase') else ''}): {e.get('sqlstate')} {e['msg']}")
    if stuck:
        L.append("")
        L.append("Stuck:")
        L.append("")
        for s in stuck[:30]:
            L.append(f"- {s}")
    L.append("")
    probes = [r for r in recs["probe"] if r.get("kind") == "probe"]
    if probes:
        L.append("## What clients placed at the primary's restart were told")
        L.append("")
        L.append("Raw protocol clients (soak.py probe), every message after the restart: E = ErrorResponse "
                 "(severity, SQLSTATE, message), Z = ReadyForQuery, closed = the connection ended. The README "
                 "promises one FATAL (the server's own 57P01 when it sent one, else 08006) to the first two and nothing to the third; Postgres itself sends one "
                 "FATAL and closes.")
        L.append("")
        for r in probes:
            msgs = "; ".join(" ".join(str(x) for x in m) for m in r["messages"])
            L.append(f"- {r['client']}: {msgs.replace('|', '/')}")
        L.append("")
    L.append("## Memory (pgmlcat VmRSS, sampled every second)")
    L.append("")
    L.append("| peak | final | max, first half | max, last half | bound | last half trend |")
    L.append("|---:|---:|---:|---:|---|---:|")
    L.append(f"| {peak / 1024:.1f} MiB | {final / 1024:.1f} MiB | {max(first, default=0) / 1024:.1f} MiB | "
             f"{max(last, default=0) / 1024:.1f} MiB | last <= first x {1 + rss_slack:.2f} | "
             + (f"{slope / 1024:+.2f} MiB/min" if slope is not None else "-") + " |")
    L.append("")
    L.append("## Nothing lost")
    L.append("")
    if v:
        L.append("| | transactions | rows | sum(val) |")
        L.append("|---|---:|---:|---:|")
        L.append(f"| acknowledged commits | {v['acked_txns']:,} | {v['acked_rows']:,} | {v['acked_sum']:,} |")
        L.append(f"| unknown commits (COMMIT in flight), committed / not | {v['unknown_committed']} / "
                 f"{v['unknown_txns'] - v['unknown_committed']} | {v['unknown_present_rows']:,} | "
                 f"{v['unknown_present_sum']:,} |")
        L.append(f"| **expected** (acknowledged + unknown found committed) | | {v['expected_rows']:,} | "
                 f"{v['expected_sum']:,} |")
        L.append(f"| **found** on the primary | | {v['found_rows']:,} | {v['found_sum']:,} |")
        for n, r in reps.items():
            L.append(f"| found on {n} | | {r.get('rows', '?')} | {r.get('sum', r.get('error', '?'))} |")
        L.append("")
        L.append(f"Acknowledged rows missing: {v['acked_missing']}; rows of transactions that failed before COMMIT "
                 f"present: {v['failed_present']} (of {v['failed_txns']} transactions); rows nobody wrote: "
                 f"{v['unclaimed_rows']}; rows with a wrong value: {v['bad_values']}; unknown commits half "
                 f"there: {v['unknown_partial']}; vanished clients' rows present: "
                 f"{v['vanished_rows_present']} (of {v['vanished_clients']} clients).")
        L.append("")
        L.append(f"pgbench: sums {sums}; pgbench_history rows {hist:,} against {tpcb_done:,} TPC-B transactions "
                 f"reported and {tpcb_unknown} aborted mid-transaction.")
    else:
        L.append("not verified")
    L.append("")
    L.append("## Pools at the end")
    L.append("")
    last_pools = (pools.get("last") or {})
    for p in last_pools.get("pools", []):
        if p["database"] == env("DB"):
            L.append(f"- SHOW POOLS {p['database']}/{p['user']}: cl_active {p['cl_active']}, cl_waiting "
                     f"{p['cl_waiting']}, sv_active {p['sv_active']}, sv_idle {p['sv_idle']}, cl_pinned "
                     f"{p.get('cl_pinned')}, maxwait {p['maxwait']}")
    servers = collections.Counter((s.get("database"), s.get("port"), s.get("state")) for s in last_pools.get("servers", []))
    for (db, port, state), n in sorted(servers.items(), key=str):
        L.append(f"- SHOW SERVERS {db} port {port}: {n} {state}")
    sv_listed_active = sum(1 for s in last_pools.get("servers", []) if s.get("state") == "active")
    sv_active = sum(int(p["sv_active"]) for p in last_pools.get("pools", []))
    if last_pools and sv_listed_active != sv_active:
        L.append(f"- note: SHOW SERVERS lists {sv_listed_active} connection(s) as active where SHOW POOLS counts "
                 f"sv_active {sv_active} and the servers' pg_stat_activity (below) has none busy: SHOW SERVERS' "
                 f"state disagrees with SHOW POOLS (not counted as a leak)")
    for s, b in v.get("backends", {}).items():
        L.append(f"- pg_stat_activity on {s}, user {env('DB_USER')}: {b or 'no backends'}")
    if pools.get("error"):
        L.append(f"- admin console error: {pools['error']}")
    text = "\n".join(L) + "\n"
    open(md_out, "w").write(text)
    print(text)
    sys.exit(0 if ok_all else 1)


if __name__ == "__main__":
    cmds = dict(writer=cmd_writer, ml=cmd_ml, vanish=cmd_vanish, storm=cmd_storm, probe=cmd_probe, pools=cmd_pools,
                verify=cmd_verify, report=cmd_report)
    if len(sys.argv) != 2 or sys.argv[1] not in cmds:
        sys.exit(f"usage: soak.py {{{'|'.join(cmds)}}} (run by benches/soak.sh)")
    cmds[sys.argv[1]]()
