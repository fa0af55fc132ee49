#!/usr/bin/env python3
"""Memory per idle client: opens N asyncpg connections to a pooler, runs
one query on each (so every client has been active once), lets them sit
idle, and reports the pooler's RSS growth per client.

Usage: idle_clients.py PID PORT N [USER PASSWORD DB]
Prints one line: `rss_before_kb rss_after_kb per_client_bytes`.
The pooler must be freshly started (nothing connected yet) so that its RSS
before is its idle baseline.
"""
import asyncio
import sys

import asyncpg


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def main() -> None:
    pid, port, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    user, password, db = (sys.argv[4:7] + ["app", "app_pw", "app"][len(sys.argv[4:7]):])[:3]
    # Warm the pooler's own structures (one server connection, one client)
    # so the baseline is a pooler ready to serve, not one that never did.
    warm = await asyncpg.connect(host="127.0.0.1", port=port, user=user,
                                 password=password, database=db)
    await warm.fetchval("select 1")
    await warm.close()
    await asyncio.sleep(0.5)
    before = rss_kb(pid)
    conns = []
    # Connect in batches: a thousand simultaneous handshakes measure the
    # handshake, not the idle client.
    for start in range(0, n, 50):
        batch = [asyncpg.connect(host="127.0.0.1", port=port, user=user,
                                 password=password, database=db,
                                 statement_cache_size=0)
                 for _ in range(start, min(n, start + 50))]
        conns.extend(await asyncio.gather(*batch))
    # Every client active once, then idle.
    for start in range(0, n, 50):
        await asyncio.gather(*(c.fetchval("select 1") for c in conns[start:start + 50]))
    await asyncio.sleep(2.0)
    after = rss_kb(pid)
    print(f"{before} {after} {(after - before) * 1024 // n}")
    await asyncio.gather(*(c.close() for c in conns))


asyncio.run(main())
