#!/usr/bin/env python3
"""The client side of benches/read_your_writes.sh (run by it, not by hand).

  read_your_writes.py lag --kind on|off --dsn DSN ...
      through pgmlcat, one connection (psycopg 3, autocommit): WRITES times,
      INSERT a row, then from the moment the INSERT returned read it back
      with `select count(*), pg_is_in_recovery() from t where id = $1`
      (first read at once, then every POLL_US microseconds) until a replica
      answers one; records, per write, when that first replica-served read
      was sent, how many reads it took, and every read that found no row
      (stale).
  read_your_writes.py lag --kind floor --primary DSN --replica DSN --replica DSN
      the floor: the INSERT directly on the primary, then the replicas
      polled directly, in turn, every POLL_US microseconds, until one of
      them has the row.
  read_your_writes.py report
      the markdown report, from the files the shell script wrote (paths and
      facts in the environment).

One JSON object per write is appended to --out.
"""

import argparse
import datetime
import json
import math
import os
import platform
import random
import statistics
import sys
import time

READ_SQL = "select count(*), pg_is_in_recovery() from t where id = %s"
FLOOR_SQL = "select count(*) from t where id = %s"
INSERT_SQL = "insert into t (id) values (%s)"
DIAG_PRIMARY_SQL = ("select pg_current_wal_insert_lsn()::text, pg_current_wal_lsn()::text, "
                    "pg_current_wal_flush_lsn()::text, "
                    "((pg_current_wal_insert_lsn() - '0/0'::pg_lsn) % 8192)::int8")
DIAG_REPLICA_SQL = ("select pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, "
                    "((pg_last_wal_replay_lsn() - '0/0'::pg_lsn) %% 8192)::int8, "
                    "(%s::pg_lsn - pg_last_wal_replay_lsn())::int8")


def now_ms():
    return time.perf_counter_ns() / 1e6


# ---------------------------------------------------------------- lag
def lag(a):
    import psycopg

    poll = a.poll_us / 1e6
    out = open(a.out, "a")
    total = a.warmup + a.writes
    if a.kind == "floor":
        w = psycopg.connect(a.primary, autocommit=True)
        rs = [psycopg.connect(d, autocommit=True) for d in a.replica]
    else:
        c = psycopg.connect(a.dsn, autocommit=True)
        # Direct connections, idle but for a write still waiting for a
        # replica after DIAG_MS: then the servers' WAL positions are noted.
        dp = psycopg.connect(a.diag_primary, autocommit=True) if a.diag_primary else None
        drs = [psycopg.connect(d, autocommit=True) for d in a.diag_replica]

    def positions():
        """The primary's insert/write/flush positions and each replica's
        receive/replay positions, and where in its 8 kB WAL page each is."""
        if dp is None:
            return None
        snap = {"at_ms": round(now_ms() - t0, 3)}
        row = dp.execute(DIAG_PRIMARY_SQL).fetchone()
        snap["primary"] = dict(zip(("insert", "write", "flush", "insert_in_page"), row))
        snap["replicas"] = [dict(zip(("receive", "replay", "replay_in_page", "behind_insert"),
                                     r.execute(DIAG_REPLICA_SQL, (row[0],)).fetchone())) for r in drs]
        return snap

    rnd = random.Random(a.id_base)
    for k in range(total):
        id_ = a.id_base + k
        # A random pause first, so that writes do not fall into step with
        # pgmlcat's 5 ms sampling rounds (the loop would otherwise write
        # right after the round that let it read a replica).
        time.sleep(rnd.uniform(0, a.gap_ms) / 1000)
        rec = {"kind": a.kind, "round": a.round, "load": a.load, "id": id_}
        if a.kind == "floor":
            t_ins = now_ms()
            w.execute(INSERT_SQL, (id_,))
            t0 = now_ms()
            polls, seen = 0, None
            while seen is None:
                for i, r in enumerate(rs):
                    ts = now_ms()
                    n = r.execute(FLOOR_SQL, (id_,)).fetchone()[0]
                    polls += 1
                    if n:
                        seen = (i, ts - t0)
                        break
                if seen is None:
                    if now_ms() - t0 > a.timeout_ms:
                        break
                    time.sleep(poll)
            rec.update(insert_ms=t0 - t_ins, reads=polls, timeout=seen is None,
                       t_ms=seen[1] if seen else None, replica=seen[0] if seen else None)
        else:
            t_ins = now_ms()
            c.execute(INSERT_SQL, (id_,))
            t0 = now_ms()
            reads, stale_at, t_rep, first_stale, diag = 0, [], None, None, []
            while True:
                ts = now_ms()
                if not diag and ts - t0 > a.diag_ms:
                    diag.append(positions())
                n, in_recovery = c.execute(READ_SQL, (id_,)).fetchone()
                reads += 1
                if first_stale is None:
                    first_stale = n == 0
                if n == 0:
                    stale_at.append([round(ts - t0, 3), bool(in_recovery)])
                if in_recovery:
                    t_rep = ts - t0
                    break
                if ts - t0 > a.timeout_ms:
                    break
                time.sleep(poll)
            if diag:
                diag.append(positions())
            rec.update(insert_ms=t0 - t_ins, reads=reads, timeout=t_rep is None, t_ms=t_rep,
                       stale=len(stale_at), stale_at=stale_at, first_stale=first_stale)
            if diag and diag[0] is not None:
                rec["diag"] = diag
        if k >= a.warmup:
            out.write(json.dumps(rec) + "\n")
    out.close()


# ---------------------------------------------------------------- report
def pct(vals, p):
    """Nearest-rank percentile."""
    if not vals:
        return None
    s = sorted(vals)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def f(v, digits=1):
    return "n/a" if v is None else f"{v:.{digits}f}"


def md_table(header, rows, left=1):
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join(["---"] * left + ["---:"] * (len(header) - left)) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def report(_a):
    env = os.environ
    lines = []
    w = lines.append
    rounds = int(env["ROUNDS"])
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    w("# Read-your-writes: how soon a writer's reads use replicas again, and what it costs\n")
    w(f"- date: {now}; host {platform.node()} ({env['NPROC']} CPUs, shared with other work; "
      f"the run held /tmp/cargo.lock)")
    w(f"- PostgreSQL {env['PG_VERSION']}: a primary and two streaming replicas (pg_basebackup -R -X stream, "
      "hot standby), all on this host, `synchronous_commit = on` (no synchronous standby: a commit waits for "
      "its local WAL flush only; `fsync = off`, as in the other benches)")
    w(f"- pgmlcat {env['PGMLCAT_VERSION']}; two processes over the same three servers, identical but for "
      "`read_your_writes` (true on one port, false on the other): one pool, transaction mode, "
      "query_parser_enabled, query_parser_read_write_splitting, primary_reads_enabled = false, "
      f"default_role = \"any\", pool_size {env['POOL_SIZE']}")
    w(f"- {rounds} interleaved round(s); knobs: WRITES={env['WRITES']} per kind and round, "
      f"POLL_US={env['POLL_US']}, GAP_MS={env['GAP_MS']}, SECONDS={env['RUN_SECONDS']}, CLIENTS={env['CLIENTS']}, SCALE={env['SCALE']}")
    notes = [n for n in env.get("QUIET_NOTES", "").split("\n") if n]
    for n in notes:
        w(f"- note: {n}")
    w("")
    head_len = len(lines)
    summary = []

    # ------------------------------------------------------------ part 1
    recs = []
    if os.path.exists(env["LAG_OUT"]):
        recs = [json.loads(l) for l in open(env["LAG_OUT"]) if l.strip()]
    by = {}
    for r in recs:
        by.setdefault((r["kind"], r.get("load", "idle")), []).append(r)
    loads = [l for l in ("idle", "loaded") if any(k[1] == l for k in by)]
    load_name = {"idle": "idle servers",
                 "loaded": f"under a write load ({env['LOAD_CLIENTS']} pgbench clients updating pgbench_accounts "
                           "directly on the primary)"}
    names = {"floor": "floor (direct: primary, then replicas polled)",
             "on": "pgmlcat, read_your_writes = true",
             "off": "pgmlcat, read_your_writes = false"}

    def times(kind, load, rnd=None):
        return [r["t_ms"] for r in by.get((kind, load), [])
                if r["t_ms"] is not None and (rnd is None or r["round"] == rnd)]

    if recs:
        w("## 1. Time until a writer's reads use replicas again\n")
        w(f"One client (psycopg {env.get('PSYCOPG_VERSION', '?')}, autocommit, one connection) INSERTs a row "
          f"through pgmlcat (after a random pause of 0 to {env['GAP_MS']} ms, so that the writes do not fall "
          "into step with pgmlcat's 5 ms sampling), then reads it back with "
          "`select count(*), pg_is_in_recovery() from t where id = $1` (the first read at once, then every "
          f"{env['POLL_US']} µs plus a round trip) until a replica answers. The time is from the INSERT's "
          "return to the sending of the first read a replica answered. A read that finds no row is stale. "
          "The floor: the INSERT directly on the primary, then each replica polled directly in turn (same "
          "pause) until one has the row: the replication visibility lag, within the polling's resolution "
          "(a round trip, ~0.1-0.2 ms). "
          f"{env['WARMUP']} unrecorded writes first in each run. Each round runs the three on idle servers, "
          "then again under a write load. Percentiles are over every write of every round (nearest rank); "
          "times in ms.\n")
        header = ["run", "writes", "p50", "p90", "p99", "max", "reads per write (mean)",
                  "stale reads", "writes whose first read was stale",
                  f"no replica within {env['TIMEOUT_MS']} ms", "INSERT p50"]
        for load in loads:
            w(f"### {load_name[load].capitalize()}\n")
            rows = []
            for kind in ("floor", "on", "off"):
                rs = by.get((kind, load), [])
                if not rs:
                    continue
                ts = times(kind, load)
                rows.append([names[kind], len(rs), f(pct(ts, 50), 2), f(pct(ts, 90), 2), f(pct(ts, 99), 2),
                             f(max(ts) if ts else None, 2),
                             f(statistics.mean(r["reads"] for r in rs), 2),
                             sum(r.get("stale", 0) for r in rs) if kind != "floor" else "-",
                             sum(1 for r in rs if r.get("first_stale")) if kind != "floor" else "-",
                             sum(1 for r in rs if r["timeout"]),
                             f(pct([r["insert_ms"] for r in rs], 50), 2)])
            floor_ts = times("floor", load)
            over50 = sum(1 for t in floor_ts if t > 50)
            rows.append(["pgcat (modelled, not run): db_activity_based_routing, table_mutation_cache_ms_ttl = 50",
                         "-", "≈ 50", "≈ 50", "≈ 50", "≈ 50", "-",
                         f"{over50} of {len(floor_ts)} floor writes took > 50 ms" if floor_ts else "-",
                         "-", "-", "-"])
            w(md_table(header, rows))
            w("")
            on = times("on", load)
            if on:
                edges = list(range(0, 16))
                counts = [sum(1 for t in on if lo <= t < lo + 1) for lo in edges]
                rest = sum(1 for t in on if t >= edges[-1] + 1)
                w("Distribution of the read_your_writes = true times (writes per 1 ms bucket):\n")
                w(md_table([f"{lo}-{lo + 1}" for lo in edges] + [f"≥ {edges[-1] + 1}"],
                           [counts + [rest]], left=0))
                w("")
            if on and floor_ts:
                w(f"pgmlcat with read_your_writes waits {pct(on, 50) - pct(floor_ts, 50):+.2f} ms over the floor "
                  f"at the median ({pct(on, 50):.2f} vs {pct(floor_ts, 50):.2f}) and "
                  f"{pct(on, 99) - pct(floor_ts, 99):+.2f} ms at p99. pgcat's rule would hold this client on the "
                  f"primary for ≈ 50 ms after every write, {50 / pct(on, 50):.0f}x pgmlcat's median here, and "
                  "serve a stale read whenever replication took longer than that "
                  f"({over50} of {len(floor_ts)} floor measurements did).\n")
            off = by.get(("off", load), [])
            n_on = len(by.get(("on", load), []))
            summary.append(
                f"- {load_name[load]}: a writer's reads were back on a replica {f(pct(on, 50), 2)} ms after "
                f"the INSERT returned at p50, {f(pct(on, 99), 2)} ms at p99, max {f(max(on) if on else None, 2)} "
                f"(floor, the replication visibility lag measured directly: p50 {f(pct(floor_ts, 50), 2)}, "
                f"p90 {f(pct(floor_ts, 90), 2)}, p99 {f(pct(floor_ts, 99), 2)} ms; pgcat: ≈ 50 ms); stale reads "
                f"with read_your_writes = true: {sum(r.get('stale', 0) for r in by.get(('on', load), []))} "
                f"in {n_on} writes; with false: "
                f"{sum(1 for r in off if r.get('first_stale'))} of {len(off)} writes read back stale")
            if off:
                st = [s[0] for r in off for s in r.get("stale_at", [])]
                w(f"With read_your_writes = false the first read goes to a replica at once (hence its times of "
                  f"0): {sum(1 for r in off if r.get('first_stale'))} of {len(off)} writes were read back stale.\n")
        rounds_n = sorted({r["round"] for r in recs})
        header = ["run"] + [f"round {i}" for i in rounds_n]
        rows = []
        for load in loads:
            for kind in ("floor", "on", "off"):
                if (kind, load) not in by:
                    continue
                rows.append([f"{kind}, {load}"] + [
                    f"{f(pct(times(kind, load, i), 50), 2)} / {f(pct(times(kind, load, i), 99), 2)}"
                    for i in rounds_n])
        w("Per round, p50 / p99 (ms):\n")
        w(md_table(header, rows))
        w("")
        w("pgcat, for comparison (modelled from its source, postgresml/pgcat 5b03881, not run): with "
          "`db_activity_based_routing = true` (off by default) a write records its tables in a cache whose "
          "entries live `table_mutation_cache_ms_ttl` (default 50 ms), one cache for every client, filled when "
          "the write is routed (before it runs, let alone commits); a read of a table in the cache goes to "
          "the primary. So a writer's reads of that table stay on the primary ≈ 50 ms after the write was "
          "routed whatever the replicas' lag, and a read after that goes to a replica whether or not it has "
          "replayed the write.\n")
        slow = [r for r in recs if r["kind"] != "floor" and (r["timeout"] or r["t_ms"] > float(env["DIAG_MS"]))]
        if slow:
            w(f"### Writes whose reads reached a replica only after {env['DIAG_MS']} ms\n")
            w(f"For these the client noted, directly on each server, the WAL positions {env['DIAG_MS']} ms after "
              "the INSERT returned and again when a replica answered: the primary's "
              "`pg_current_wal_insert_lsn()` (what pgmlcat's sampler reads; its offset in its 8 kB WAL page), "
              "and each replica's `pg_last_wal_replay_lsn()` (its offset in its page, and how many bytes it "
              "is short of that insert position).\n")
            rows = []
            page_edge = 0
            for r in slow:
                d = r.get("diag") or []
                def fmt(snap):
                    if not snap:
                        return "n/a"
                    pr = snap["primary"]
                    reps = "; ".join(f"replay {x['replay']} (+{x['replay_in_page']}), short {x['behind_insert']} B"
                                     for x in snap["replicas"])
                    return (f"at {snap['at_ms']:.0f} ms: insert {pr['insert']} (+{pr['insert_in_page']}), "
                            f"flush {pr['flush']}; {reps}")
                first = d[0] if d else None
                edge = bool(first and first["primary"]["insert_in_page"] in (24, 40) and all(
                    x["behind_insert"] == first["primary"]["insert_in_page"] and x["replay_in_page"] == 0
                    for x in first["replicas"]))
                page_edge += edge
                rows.append([r["kind"], r.get("load", "idle"), r["round"], r["id"],
                             "timeout" if r["timeout"] else f"{r['t_ms']:.1f}",
                             "yes" if edge else "no", fmt(first), fmt(d[1] if len(d) > 1 else None)])
            w(md_table(["read_your_writes", "load", "round", "id", "ms to a replica",
                        "insert LSN just past a page header, replicas at that page's start",
                        f"positions at {env['DIAG_MS']} ms", "positions when a replica answered"], rows, left=8))
            w("")
            if page_edge:
                w(f"**{page_edge} of these {len(slow)} waits are the WAL page edge**: the last record before the "
                  "sample ended exactly at an 8 kB page boundary, so `pg_current_wal_insert_lsn()` points past the "
                  "next page's header (+24 bytes, +40 at a segment start; where the next record would begin), "
                  "while a replica that replayed everything reports the record's end, the boundary itself. "
                  "The replicas can never reach the sampled position until some other WAL is written, so the "
                  "client reads from the primary until then (fresh, but not on a replica). About one commit in "
                  "a thousand ends at a page boundary (8-byte alignment in 8 kB pages). On a busy primary other "
                  "WAL soon follows; on a quiet one the wait lasts until the next unrelated WAL record "
                  "(autovacuum, the 15 s standby snapshot, a checkpoint). An insert position at a page start "
                  "plus its header's size denotes the same point as the page start, so mapping such a sample back "
                  "to the page start (offset 24 of a page, 40 of a segment's first page) would close this; "
                  "reads stay fresh either way.\n")
        bad = [r for r in by.get(("on", "idle"), []) + by.get(("on", "loaded"), []) if r.get("stale")]
        if bad:
            w(f"**BUG: {sum(r['stale'] for r in bad)} stale read(s) with read_your_writes = true**, in "
              f"{len(bad)} write(s); the first ones (id, round, load, [ms after the INSERT returned, answered "
              "by a replica]):\n")
            for r in bad[:20]:
                w(f"- id {r['id']} round {r['round']} {r.get('load', 'idle')}: {r['stale_at']}")
            w("")
        else:
            n_on = len(by.get(("on", "idle"), [])) + len(by.get(("on", "loaded"), []))
            w(f"No stale read with read_your_writes = true ({n_on} writes, "
              f"{sum(r['reads'] for k in loads for r in by.get(('on', k), []))} reads).\n")

    # ------------------------------------------------------------ part 2
    rows_tsv = []
    if os.path.exists(env["PGBENCH_OUT"]):
        for l in open(env["PGBENCH_OUT"]):
            p = l.rstrip("\n").split("\t")
            if len(p) < 18:
                continue
            (rnd, wl, mode, setting, tps, txns, failed, rc, ut, st, settled, secs) = p[:12]
            idx = list(map(int, p[12:15]))
            mon = list(map(int, p[15:18]))
            rows_tsv.append(dict(round=int(rnd), wl=wl, mode=mode, setting=setting,
                                 tps=None if tps == "NA" else float(tps), txns=int(txns), failed=int(failed),
                                 rc=int(rc), cpu_ticks=int(ut) + int(st), settled=settled == "1",
                                 secs=float(secs), idx=idx, mon=mon))
    if rows_tsv:
        tick_us = 1e6 / int(env["CLK_TCK"])
        w("## 2. Throughput cost (pgbench through pgmlcat, read_your_writes true vs false)\n")
        w(f"`pgbench -n -c {env['CLIENTS']} -j 2 -T {env['RUN_SECONDS']}`, scale {env['SCALE']}, against the "
          "pgmlcat with the setting on or the one with it off; in each round every workload runs on and off "
          "back to back, the order alternating. (a) `-S`, select-only: no writes, so read-your-writes has "
          "nothing to do. (b) a custom script, every statement its own (autocommit) transaction, so each "
          "SELECT follows the same client's write:\n")
        w("```\n\\set aid random(1, 100000 * :scale)\n"
          "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n"
          "SELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n```\n")
        w("A transaction below is one pgbench transaction (one SELECT in (a); UPDATE + SELECT in (b)). "
          "CPU is pgmlcat's own utime + stime from /proc/<pid>/stat over the run, divided by the "
          "transactions. Ratios are medians of the per-round on/off ratios.\n")
        w("Where the SELECTs ran: pg_stat_statements is not installed, so each server's "
          "`pg_stat_user_tables.idx_scan` of pgbench_accounts is read before and after each run (a hot "
          "standby counts its own scans). Every UPDATE and every SELECT is one index scan of it, and nothing "
          "else scans it, so a replica's delta is the SELECTs it answered and the primary's delta minus the "
          "transactions (the UPDATEs, in (b)) is the SELECTs it answered. Postgres flushes a backend's counts "
          "at most once a second and an idle backend's after 10 s, so after each run the script waits (up to "
          f"SETTLE = {env['SETTLE']} s) until the three deltas add up to exactly the statements pgbench ran; "
          "`counts exact` says whether they did.\n")
        w("The servers' side of the 5 ms sampler: the CPU used during each run by the backends of pgmlcat's "
          "monitor connections (application_name pgmlcat-monitor, found in pg_stat_activity; "
          "/proc/<pid>/stat utime + stime), which run the health check every second and, while a client "
          "needs it, the freshness sample every 5 ms; both pgmlcat processes' monitors are summed (the one "
          "not under test only checks once a second). (`pg_stat_database.xact_commit` cannot count these "
          "queries: Postgres 15 flushes a backend's commit count only with table statistics, and the "
          "monitor's query reads no table.)\n")
        workloads = [("a", "(a) -S select-only"), ("b", "(b) UPDATE then SELECT")]
        header = ["workload", "-M", "TPS on", "TPS off", "TPS on/off", "CPU µs/tx on", "CPU µs/tx off",
                  "CPU on/off", "SELECTs on replicas, on", "SELECTs on replicas, off", "counts exact",
                  "failed / bad exits"]
        rows = []
        detail = []
        other_rows = []
        for wl, label in workloads:
            for mode in sorted({r["mode"] for r in rows_tsv if r["wl"] == wl}):
                sel = [r for r in rows_tsv if r["wl"] == wl and r["mode"] == mode]
                def per(setting):
                    return {r["round"]: r for r in sel if r["setting"] == setting}
                on, off = per("on"), per("off")

                def med(d, key):
                    v = [key(r) for r in d.values() if key(r) is not None]
                    return statistics.median(v) if v else None

                def cpu(r):
                    return r["cpu_ticks"] * tick_us / r["txns"] if r["txns"] else None

                def rep_share(r):
                    sels = r["txns"]  # one SELECT per transaction in both workloads
                    if not sels:
                        return None
                    return (r["idx"][1] + r["idx"][2]) / sels

                ratios_tps = [on[i]["tps"] / off[i]["tps"] for i in on if i in off and on[i]["tps"] and off[i]["tps"]]
                ratios_cpu = [cpu(on[i]) / cpu(off[i]) for i in on if i in off and cpu(on[i]) and cpu(off[i])]
                exact = sum(1 for r in sel if r["settled"])
                fails = sum(r["failed"] for r in sel)
                bad = sum(1 for r in sel if r["rc"] != 0 or r["tps"] is None)
                rs_on, rs_off = med(on, rep_share), med(off, rep_share)
                mon_on = [statistics.mean(r["mon"]) * tick_us / 1000 / r["secs"] for r in on.values() if r["secs"]]
                summary.append(
                    f"- {label}, -M {mode}: TPS on/off {f(statistics.median(ratios_tps), 3) if ratios_tps else 'n/a'}"
                    f", pgmlcat CPU per transaction on/off {f(statistics.median(ratios_cpu), 3) if ratios_cpu else 'n/a'}"
                    f" ({f(med(on, cpu), 1)} vs {f(med(off, cpu), 1)} µs); SELECTs answered by replicas: "
                    f"{'n/a' if rs_on is None else f'{rs_on * 100:.1f}%'} on, "
                    f"{'n/a' if rs_off is None else f'{rs_off * 100:.1f}%'} off"
                    + (f"; pgmlcat's monitor backends (health check + 5 ms sampler) used {statistics.median(mon_on):.1f} ms of CPU per second "
                       "on each server (median)" if wl == "b" and mon_on else ""))
                rows.append([label, mode, f(med(on, lambda r: r["tps"]), 0), f(med(off, lambda r: r["tps"]), 0),
                             f(statistics.median(ratios_tps), 3) if ratios_tps else "n/a",
                             f(med(on, cpu), 1), f(med(off, cpu), 1),
                             f(statistics.median(ratios_cpu), 3) if ratios_cpu else "n/a",
                             "n/a" if rs_on is None else f"{rs_on * 100:.1f}%",
                             "n/a" if rs_off is None else f"{rs_off * 100:.1f}%",
                             f"{exact} of {len(sel)}", f"{fails} / {bad}"])
                for setting, d in (("on", on), ("off", off)):
                    for i in sorted(d):
                        r = d[i]
                        stmts_per = 2 if wl == "b" else 1
                        sel_primary = r["idx"][0] - (r["txns"] if wl == "b" else 0)
                        detail.append([label, mode, setting, i, f(r["tps"], 0), f(cpu(r), 1),
                                       sel_primary, r["idx"][1], r["idx"][2],
                                       f"{(r['idx'][1] + r['idx'][2]) / r['txns'] * 100:.1f}%" if r["txns"] else "n/a",
                                       "yes" if r["settled"] else
                                       f"no ({sum(r['idx'])} scans for {r['txns'] * stmts_per} statements)"])
                        mon = [r["mon"][k] * tick_us / 1000 / r["secs"] if r["secs"] else 0 for k in range(3)]
                        other_rows.append([label, mode, setting, i] + [f"{m:.1f}" for m in mon])
        w(md_table(header, rows, left=2))
        w("")
        w("pgcat for comparison (modelled, not run): with `db_activity_based_routing` its 50 ms timer is "
          "per table and shared by every client, started when a write is routed; in (b) some client writes "
          "pgbench_accounts every fraction of a millisecond, so every SELECT of it by every client, (a)'s "
          "too if it ran beside (b), would go to the primary.\n")
        w("Every run (SELECTs answered by each server, from the idx_scan deltas):\n")
        w(md_table(["workload", "-M", "read_your_writes", "round", "TPS", "CPU µs/tx",
                    "SELECTs primary", "SELECTs replica 1", "SELECTs replica 2", "on replicas", "counts exact"],
                   detail, left=3))
        w("")
        w("CPU of pgmlcat's monitor backends on each server, ms per second of run (health checks + "
          "freshness sampler):\n")
        w(md_table(["workload", "-M", "read_your_writes", "round", "primary", "replica 1", "replica 2"],
                   other_rows, left=3))
        w("")
    if summary:
        lines[head_len:head_len] = ["## Summary\n"] + summary + [""]
    text = "\n".join(lines)
    with open(env["MD_OUT"], "w") as fh:
        fh.write(text)
    print(text)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("lag")
    p.add_argument("--kind", choices=["on", "off", "floor"], required=True)
    p.add_argument("--dsn")
    p.add_argument("--primary")
    p.add_argument("--replica", action="append", default=[])
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--load", default="idle")
    p.add_argument("--writes", type=int, default=300)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--id-base", type=int, required=True)
    p.add_argument("--poll-us", type=int, default=500)
    p.add_argument("--timeout-ms", type=float, default=2000)
    p.add_argument("--gap-ms", type=float, default=10)
    p.add_argument("--diag-ms", type=float, default=100)
    p.add_argument("--diag-primary")
    p.add_argument("--diag-replica", action="append", default=[])
    p.add_argument("--out", required=True)
    sub.add_parser("report")
    a = ap.parse_args()
    if a.cmd == "lag":
        lag(a)
    else:
        report(a)


if __name__ == "__main__":
    sys.exit(main())
