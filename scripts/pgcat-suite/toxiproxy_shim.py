#!/usr/bin/env python3
"""Minimal Toxiproxy-compatible server used by scripts/pgcat-suite.sh.

Implements only the subset of Toxiproxy's HTTP API (default 127.0.0.1:8474)
that pgcat's CI script and Ruby specs use:

  GET    /version
  POST   /reset                      re-enable all proxies, drop all toxics
  GET    /proxies                    {name: proxy}
  POST   /proxies                    create (409 if the name exists)
  POST   /populate                   [proxy, ...] create or replace
  GET    /proxies/<name>
  POST   /proxies/<name>             update (enabled / listen / upstream)
  DELETE /proxies/<name>
  GET    /proxies/<name>/toxics
  POST   /proxies/<name>/toxics      add a toxic
  GET    /proxies/<name>/toxics/<t>
  POST   /proxies/<name>/toxics/<t>  update a toxic's attributes
  DELETE /proxies/<name>/toxics/<t>

Toxics: latency (latency, jitter ms), limit_data (bytes), timeout (timeout ms),
reset_peer (timeout ms), bandwidth (rate KB/s), slow_close (delay ms, accepted
as a no-op). A disabled proxy closes its listener and drops every connection
(this is what Toxiproxy's `down` does).

Single process, asyncio, no third-party dependency.
"""
import argparse
import asyncio
import json
import random
import signal
import socket
import sys
import time

VERSION = "2.5.0-pgcat-suite-shim"
KNOWN_TOXICS = {"latency", "limit_data", "timeout", "reset_peer", "bandwidth", "slow_close", "slicer"}


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


class HttpError(Exception):
    def __init__(self, status, msg):
        super().__init__(msg)
        self.status = status
        self.msg = msg


class Toxic:
    def __init__(self, d):
        self.type = d.get("type")
        if self.type not in KNOWN_TOXICS:
            raise HttpError(400, f"invalid toxic type: {self.type}")
        self.stream = d.get("stream") or "downstream"
        if self.stream not in ("upstream", "downstream"):
            raise HttpError(400, f"invalid stream: {self.stream}")
        self.name = d.get("name") or f"{self.type}_{self.stream}"
        tox = d.get("toxicity")
        self.toxicity = 1.0 if tox is None else float(tox)
        self.attributes = dict(d.get("attributes") or {})
        # per-connection state for stateful toxics (limit_data)
        self.state = {}

    def attr(self, key, default=0):
        v = self.attributes.get(key, default)
        try:
            return float(v)
        except (TypeError, ValueError):
            return default

    def to_json(self):
        return {"name": self.name, "type": self.type, "stream": self.stream,
                "toxicity": self.toxicity, "attributes": self.attributes}


class Link:
    """One proxied client connection (client <-> upstream)."""

    def __init__(self, proxy, creader, cwriter):
        self.proxy = proxy
        self.creader, self.cwriter = creader, cwriter
        self.ureader = self.uwriter = None
        self.closed = False
        self.tasks = []

    def close(self):
        if self.closed:
            return
        self.closed = True
        for w in (self.cwriter, self.uwriter):
            if w is not None:
                try:
                    w.transport.abort()
                except Exception:
                    pass
        for t in self.tasks:
            if t is not asyncio.current_task():
                t.cancel()
        self.proxy.links.discard(self)

    async def run(self):
        host, port = self.proxy.upstream_addr()
        try:
            self.ureader, self.uwriter = await asyncio.open_connection(host, port)
        except Exception as e:
            log(f"[{self.proxy.name}] upstream {host}:{port} connect failed: {e}")
            self.close()
            return
        up_q, down_q = asyncio.Queue(), asyncio.Queue()
        self.tasks = [
            asyncio.ensure_future(self.reader(self.creader, up_q, "upstream")),
            asyncio.ensure_future(self.writer(up_q, self.uwriter)),
            asyncio.ensure_future(self.reader(self.ureader, down_q, "downstream")),
            asyncio.ensure_future(self.writer(down_q, self.cwriter)),
        ]
        try:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        finally:
            self.close()

    async def reader(self, rd, q, stream):
        try:
            while not self.closed:
                data = await rd.read(32768)
                if not data:
                    break
                now = time.monotonic()
                delay = 0.0
                close_after = False
                stall = None
                for tox in list(self.proxy.toxics.values()):
                    if tox.stream != stream:
                        continue
                    if tox.toxicity < 1.0 and random.random() >= tox.toxicity:
                        continue
                    if tox.type == "latency":
                        lat = tox.attr("latency") / 1000.0
                        jit = tox.attr("jitter") / 1000.0
                        if jit:
                            lat += random.uniform(-jit, jit)
                        delay += max(lat, 0.0)
                    elif tox.type == "bandwidth":
                        rate = tox.attr("rate")  # KB/s
                        if rate > 0:
                            delay += len(data) / (rate * 1000.0)
                    elif tox.type == "limit_data":
                        limit = int(tox.attr("bytes"))
                        sent = tox.state.get(id(self), 0)
                        remaining = max(limit - sent, 0)
                        if len(data) > remaining:
                            data = data[:remaining]
                        tox.state[id(self)] = sent + len(data)
                        if sent + len(data) >= limit:
                            close_after = True
                    elif tox.type == "timeout":
                        stall = tox.attr("timeout")
                    elif tox.type == "reset_peer":
                        stall = tox.attr("timeout")
                if stall is not None:
                    # Stop forwarding; close after `timeout` ms (0 = never).
                    if stall > 0:
                        await asyncio.sleep(stall / 1000.0)
                        break
                    while not self.closed:
                        await asyncio.sleep(3600)
                    return
                if data:
                    await q.put((now + delay, data))
                if close_after:
                    break
        except (asyncio.CancelledError, ConnectionError, OSError):
            pass
        await q.put(None)

    async def writer(self, q, wr):
        try:
            while not self.closed:
                item = await q.get()
                if item is None:
                    break
                due, data = item
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                wr.write(data)
                await wr.drain()
        except (asyncio.CancelledError, ConnectionError, OSError):
            pass
        self.close()


class Proxy:
    def __init__(self, d):
        self.name = d.get("name")
        if not self.name:
            raise HttpError(400, "missing required field: name")
        self.listen = d.get("listen") or "127.0.0.1:0"
        self.upstream = d.get("upstream")
        if not self.upstream:
            raise HttpError(400, "missing required field: upstream")
        en = d.get("enabled")
        self.enabled = True if en is None else bool(en)
        self.toxics = {}
        self.links = set()
        self.server = None

    def upstream_addr(self):
        host, _, port = self.upstream.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)

    async def start(self):
        host, _, port = self.listen.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        try:
            self.server = await asyncio.start_server(self.accept, host, int(port), reuse_address=True)
        except OSError as e:
            raise HttpError(500, f"listen {self.listen}: {e}")
        sport = self.server.sockets[0].getsockname()[1]
        self.listen = f"{host}:{sport}"
        self.enabled = True
        log(f"[{self.name}] listening on {self.listen} -> {self.upstream}")

    async def stop(self):
        if self.server is not None:
            self.server.close()
            try:
                await asyncio.wait_for(self.server.wait_closed(), 2)
            except Exception:
                pass
            self.server = None
        for link in list(self.links):
            link.close()
        self.enabled = False

    async def accept(self, reader, writer):
        if not self.enabled:
            writer.transport.abort()
            return
        link = Link(self, reader, writer)
        self.links.add(link)
        await link.run()

    def to_json(self):
        return {"name": self.name, "listen": self.listen, "upstream": self.upstream,
                "enabled": self.enabled, "toxics": [t.to_json() for t in self.toxics.values()]}


class State:
    def __init__(self):
        self.proxies = {}

    def get(self, name):
        p = self.proxies.get(name)
        if p is None:
            raise HttpError(404, "proxy not found")
        return p

    async def create(self, d, replace=False):
        name = d.get("name")
        old = self.proxies.get(name)
        if old is not None:
            if not replace:
                raise HttpError(409, "proxy already exists")
            same = (old.listen == d.get("listen") or d.get("listen") is None) and old.upstream == d.get("upstream")
            if same:
                if d.get("enabled", True) and not old.enabled:
                    await old.start()
                return old
            await old.stop()
            del self.proxies[name]
        p = Proxy(d)
        want_enabled = p.enabled
        if want_enabled:
            await p.start()
        self.proxies[p.name] = p
        return p

    async def handle(self, method, path, body):
        parts = [x for x in path.split("?")[0].split("/") if x]
        data = None
        if body:
            try:
                data = json.loads(body)
            except ValueError:
                raise HttpError(400, "bad json")
        if parts == ["version"]:
            return 200, VERSION
        if parts == ["reset"] and method == "POST":
            for p in self.proxies.values():
                p.toxics.clear()
                if not p.enabled:
                    await p.start()
            return 204, None
        if parts == ["populate"] and method == "POST":
            if isinstance(data, dict):
                data = data.get("proxies", [])
            out = []
            for d in data or []:
                out.append((await self.create(d, replace=True)).to_json())
            return 201, {"proxies": out}
        if parts == ["proxies"]:
            if method == "GET":
                return 200, {n: p.to_json() for n, p in self.proxies.items()}
            if method == "POST":
                return 201, (await self.create(data or {})).to_json()
        if len(parts) == 2 and parts[0] == "proxies":
            p = self.get(parts[1])
            if method == "GET":
                return 200, p.to_json()
            if method in ("POST", "PATCH"):
                data = data or {}
                relisten = ("listen" in data and data["listen"] != p.listen) or \
                           ("upstream" in data and data["upstream"] != p.upstream)
                if relisten and p.enabled:
                    await p.stop()
                p.listen = data.get("listen", p.listen)
                p.upstream = data.get("upstream", p.upstream)
                want = data.get("enabled", True if relisten else p.enabled)
                if want and (not p.enabled or p.server is None):
                    await p.start()
                elif not want and p.enabled:
                    await p.stop()
                log(f"[{p.name}] enabled={p.enabled}")
                return 200, p.to_json()
            if method == "DELETE":
                await p.stop()
                del self.proxies[p.name]
                log(f"[{p.name}] deleted")
                return 204, None
        if len(parts) == 3 and parts[0] == "proxies" and parts[2] == "toxics":
            p = self.get(parts[1])
            if method == "GET":
                return 200, [t.to_json() for t in p.toxics.values()]
            if method == "POST":
                t = Toxic(data or {})
                if t.name in p.toxics:
                    raise HttpError(409, "toxic already exists")
                p.toxics[t.name] = t
                log(f"[{p.name}] toxic added {t.to_json()}")
                return 200, t.to_json()
        if len(parts) == 4 and parts[0] == "proxies" and parts[2] == "toxics":
            p = self.get(parts[1])
            t = p.toxics.get(parts[3])
            if t is None:
                raise HttpError(404, "toxic not found")
            if method == "GET":
                return 200, t.to_json()
            if method in ("POST", "PATCH"):
                data = data or {}
                t.attributes.update(data.get("attributes") or {})
                if data.get("toxicity") is not None:
                    t.toxicity = float(data["toxicity"])
                return 200, t.to_json()
            if method == "DELETE":
                del p.toxics[t.name]
                log(f"[{p.name}] toxic removed {t.name}")
                return 204, None
        raise HttpError(404, "not found")


REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request",
           404: "Not Found", 409: "Conflict", 500: "Internal Server Error"}


async def http_conn(state, reader, writer):
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            try:
                method, path, _ = line.decode().split(" ", 2)
            except ValueError:
                break
            headers = {}
            while True:
                h = await reader.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode().partition(":")
                headers[k.strip().lower()] = v.strip()
            body = b""
            n = int(headers.get("content-length", "0") or 0)
            if n:
                body = await reader.readexactly(n)
            try:
                status, payload = await state.handle(method.upper(), path, body)
            except HttpError as e:
                status, payload = e.status, {"error": e.msg, "status": e.status}
            except Exception as e:  # pragma: no cover
                status, payload = 500, {"error": repr(e), "status": 500}
            if payload is None:
                out = b""
            elif isinstance(payload, str):
                out = payload.encode()
            else:
                out = json.dumps(payload).encode()
            close = headers.get("connection", "").lower() == "close"
            head = (f"HTTP/1.1 {status} {REASONS.get(status, 'OK')}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(out)}\r\n"
                    f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n")
            writer.write(head.encode() + out)
            await writer.drain()
            if close:
                break
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-host", "--host", default="127.0.0.1")
    ap.add_argument("-port", "--port", type=int, default=8474)
    args = ap.parse_args()
    state = State()
    srv = await asyncio.start_server(lambda r, w: http_conn(state, r, w), args.host, args.port,
                                     reuse_address=True)
    log(f"toxiproxy shim API on {args.host}:{args.port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    await stop.wait()
    srv.close()
    for p in list(state.proxies.values()):
        await p.stop()


if __name__ == "__main__":
    asyncio.run(main())
