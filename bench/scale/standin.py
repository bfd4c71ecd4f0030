# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stand-in services of the scale harness (bench/bench_scale.py): the service
of N simulated app hosts in ONE asyncio process, each on its own loopback port.

Why one process: N=1000 real processes (about 10 MB each for a Python HTTP
server) would cost 10 GB and 1000 schedulable tasks on a 2-core machine that
also runs the controller under test; one event loop with N listeners costs
about 40 MB and answers what a host's service must answer:

  GET /, /version   200, JSON {"host", "version", "started"}, header X-Demoapp-Version
  GET /healthz      200 "ok"

Each host's version is read from ITS release root when its service (re)starts:
HOSTS_DIR/<host>/current/release.json, the file scripts/build-release.sh puts
in every release (the `current` link the release module switches). So a
switched but not restarted host still serves the old version, as a real one
does, and a restart really happens: the host's listening socket is closed (its
port refuses connections, HAProxy's checks see it), open connections are
dropped, the "start" takes --start-seconds, then the port is opened again and
serves the version `current` names now.

Control (the stand-in systemctl, bench/scale/bin/systemctl, talks to it) on
127.0.0.1:--control-port:

  GET /restart?host=H   restart H's service, answer when it is up (or failed)
  GET /stop?host=H      close H's port
  GET /state?host=H     ActiveState=...\\nSubState=...
  GET /stats            JSON: per host version, restarts, up; totals

Hosts are given as NAME:PORT lines in --hosts-file. Bounded: the process
exits by itself after --max-seconds, or when --stop-file appears.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from urllib.parse import parse_qs, urlsplit


class Host:
    def __init__(self, name, port, root):
        self.name = name
        self.port = port
        self.root = root
        self.server = None
        self.version = None
        self.state = ("inactive", "dead")
        self.restarts = 0
        self.started = 0.0
        self.transports = set()
        self.lock = asyncio.Lock()
        self.served = 0

    def read_version(self):
        path = os.path.join(self.root, "current", "release.json")
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return str(data["version"])


def response(status, body, extra=b"", ctype=b"text/plain"):
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 500: b"Internal Server Error"}.get(status, b"?")
    head = (b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n%s\r\n"
            % (status, reason, ctype, len(body), extra))
    return head + body


class AppProtocol(asyncio.Protocol):
    """One connection to a host's service: read the request head, answer, close."""

    def __init__(self, host):
        self.host = host
        self.buf = b""
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.host.transports.add(transport)

    def connection_lost(self, exc):
        self.host.transports.discard(self.transport)

    def data_received(self, data):
        self.buf += data
        if b"\r\n\r\n" not in self.buf and len(self.buf) < 65536:
            return
        line = self.buf.split(b"\r\n", 1)[0].split()
        path = line[1].decode("latin-1") if len(line) > 1 else "/"
        path = path.split("?", 1)[0]
        host = self.host
        host.served += 1
        version = host.version.encode()
        if path == "/healthz":
            out = response(200, b"ok\n", b"X-Demoapp-Version: " + version + b"\r\n")
        elif path in ("/", "/version"):
            body = json.dumps({"host": host.name, "version": host.version, "started": host.started}).encode()
            out = response(200, body + b"\n", b"X-Demoapp-Version: " + version + b"\r\n", b"application/json")
        else:
            out = response(404, b"not found\n")
        self.transport.write(out)
        self.transport.close()


class Fleet:
    def __init__(self, hosts, start_seconds):
        self.hosts = hosts
        self.by_name = {h.name: h for h in hosts}
        self.start_seconds = start_seconds
        self.loop = None

    async def start(self, host):
        host.state = ("activating", "start")
        try:
            host.version = host.read_version()
        except (OSError, ValueError, KeyError) as exc:
            host.state = ("failed", "failed")
            return "cannot read %s: %s" % (os.path.join(host.root, "current", "release.json"), exc)
        await asyncio.sleep(self.start_seconds)
        try:
            host.server = await self.loop.create_server(lambda: AppProtocol(host), "127.0.0.1", host.port,
                                                        reuse_address=True, backlog=64)
        except OSError as exc:
            host.state = ("failed", "failed")
            return "cannot listen on 127.0.0.1:%d: %s" % (host.port, exc)
        host.started = time.time()
        host.state = ("active", "running")
        return ""

    async def stop(self, host):
        host.state = ("deactivating", "stop-sigterm")
        if host.server is not None:
            host.server.close()   # the port refuses connections from here on
            host.server = None
        for transport in list(host.transports):
            transport.abort()
        host.transports.clear()
        host.state = ("inactive", "dead")

    async def restart(self, host):
        async with host.lock:
            await self.stop(host)
            error = await self.start(host)
            host.restarts += 1
            return error

    def stats(self):
        versions = {}
        for h in self.hosts:
            versions[h.version] = versions.get(h.version, 0) + 1
        return {"hosts": len(self.hosts), "versions": versions,
                "restarts": sum(h.restarts for h in self.hosts),
                "up": sum(1 for h in self.hosts if h.state[0] == "active"),
                "served": sum(h.served for h in self.hosts),
                "per_host": {h.name: {"version": h.version, "restarts": h.restarts, "state": h.state[0]}
                             for h in self.hosts}}


class ControlProtocol(asyncio.Protocol):
    """One control request (GET TARGET), answered once the action is done."""

    def __init__(self, fleet):
        self.fleet = fleet
        self.buf = b""
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        if b"\r\n\r\n" in self.buf or len(self.buf) > 65536:
            line = self.buf.split(b"\r\n", 1)[0].split()
            self.buf = b""
            self.fleet.loop.create_task(self.handle(line[1].decode("latin-1") if len(line) > 1 else "/"))

    async def handle(self, target):
        self.transport.write(await self.answer(target))
        self.transport.close()

    async def answer(self, target):
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        if parts.path == "/stats":
            return response(200, json.dumps(self.fleet.stats()).encode(), ctype=b"application/json")
        name = (query.get("host") or [""])[0]
        host = self.fleet.by_name.get(name)
        if host is None:
            return response(404, ("unit of host %r not found\n" % name).encode())
        if parts.path == "/restart":
            error = await self.fleet.restart(host)
            return response(500 if error else 200, (error or "restarted").encode() + b"\n")
        if parts.path == "/stop":
            async with host.lock:
                await self.fleet.stop(host)
            return response(200, b"stopped\n")
        if parts.path == "/state":
            return response(200, ("ActiveState=%s\nSubState=%s\n" % host.state).encode())
        return response(404, b"not found\n")


async def main_async(args):
    hosts = []
    with open(args.hosts_file, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line:
                name, port = line.rsplit(":", 1)
                hosts.append(Host(name, int(port), os.path.join(args.hosts_dir, name)))
    fleet = Fleet(hosts, args.start_seconds)
    fleet.loop = asyncio.get_running_loop()
    # Every host starts at once (the start delay overlaps).
    errors = [e for e in await asyncio.gather(*(fleet.start(h) for h in hosts)) if e]
    if errors:
        print("standin: %d hosts failed to start, first: %s" % (len(errors), errors[0]), file=sys.stderr, flush=True)
        return 1
    control = await fleet.loop.create_server(lambda: ControlProtocol(fleet), "127.0.0.1", args.control_port,
                                             reuse_address=True, backlog=256)
    print("standin: %d hosts up (ports %d-%d), control on 127.0.0.1:%d"
          % (len(hosts), min(h.port for h in hosts), max(h.port for h in hosts), args.control_port), flush=True)
    if args.ready_file:
        with open(args.ready_file, "w", encoding="utf-8") as handle:
            handle.write("%d\n" % os.getpid())
    deadline = time.monotonic() + args.max_seconds
    while time.monotonic() < deadline and not (args.stop_file and os.path.exists(args.stop_file)):
        await asyncio.sleep(0.5)
    control.close()
    for h in hosts:
        if h.server is not None:
            h.server.close()
    if args.stats_out:
        with open(args.stats_out, "w", encoding="utf-8") as handle:
            json.dump(fleet.stats(), handle)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts-file", required=True, help="NAME:PORT per line")
    ap.add_argument("--hosts-dir", required=True, help="HOSTS_DIR/NAME is the release root of host NAME")
    ap.add_argument("--control-port", type=int, required=True)
    ap.add_argument("--start-seconds", type=float, default=0.3, help="how long a (re)start takes")
    ap.add_argument("--max-seconds", type=float, default=3600, help="hard stop")
    ap.add_argument("--stop-file", default="")
    ap.add_argument("--ready-file", default="")
    ap.add_argument("--stats-out", default="")
    args = ap.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
