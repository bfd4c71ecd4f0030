# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The nginx balancer driver behind grayrelease.canary.nginx_server / nginx_info.

Stdlib only: this file is shipped to the balancer hosts and runs there
(Python 3.9+). Open-source nginx has no runtime API: its upstream servers, their
weights and ``down`` come from the configuration, so every change is a new
upstream file, ``nginx -t`` and one graceful reload.

The collection owns one file per upstream (default
``/etc/nginx/grayrelease/<upstream>.conf``, included from nginx's ``http``
block). It holds the whole ``upstream`` block; every ``server`` line carries
its record as a trailing comment, so the configuration and the record (the
server's name, its initial weight, its admin state) are written by one
rename and can never disagree:

    # grayrelease.canary nginx upstream: written by grayrelease.canary.nginx_server; edit it with that module
    upstream demoapp {
        server 172.18.0.3:8080 weight=1; # grayrelease: name=app1 initial_weight=1 weight=1 admin_state=ready
        server 172.18.0.4:8080 weight=1 down; # grayrelease: name=app2 initial_weight=1 weight=1 admin_state=drain
    }

nginx has no weight 0 and no drain: weight 0 renders ``down`` with the admin
state still ``ready``; ``drain`` and ``maint`` both render ``down`` (the
record tells them apart). Other lines of the block (``keepalive``,
``least_conn``, ...) and other parameters of a server line (``max_fails=``,
...) are kept as they are.

Facts about nginx (checked against Debian's 1.22) that the code depends on:

* ``nginx -s reload`` only signals the master and returns. The master then
  reads the configuration and starts new workers; the old ones stop taking
  connections, finish their requests and exit. Their title meanwhile is
  ``nginx: worker process is shutting down``; ``worker_shutdown_timeout``
  bounds how long they may linger (without it a stuck request keeps them
  forever). A drain is proven when the workers from before the reload have
  exited, or when no connection from this balancer to the drained servers is
  established any more (after the reload only old workers can hold one).
* A reload that the master cannot apply (a port it cannot bind, ...) keeps
  the old workers: no new worker appears, which is how it is detected.
* Passive checks only (``max_fails``): nginx cannot say whether a server is
  up (``up`` is None); the collection's probe is the health evidence.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import time

from ansible_collections.grayrelease.canary.plugins.module_utils._balancer import BalancerError, validate_name
from ansible_collections.grayrelease.canary.plugins.module_utils._drivers import capabilities
from ansible_collections.grayrelease.canary.plugins.module_utils._weights import MAX_WEIGHT

# host:port, [v6]:port; a unix: socket has no TCP connection to count and is refused.
ADDRESS_RE = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}\Z")
STATES = ("ready", "drain", "maint")

MARKER = "# grayrelease.canary nginx upstream"
HEADER = MARKER + ": written by grayrelease.canary.nginx_server; edit it with that module\n"
RECORD_RE = re.compile(
    r"^(?P<indent>\s*)server\s+(?P<address>\S+)(?P<params>(?:\s+[^\s;#]+)*)\s*;\s*"
    r"#\s*grayrelease:\s*name=(?P<name>\S+)\s+initial_weight=(?P<initial>\d+)\s+weight=(?P<weight>\d+)"
    r"\s+admin_state=(?P<state>\w+)\s*\Z")
UPSTREAM_RE = re.compile(r"^\s*upstream\s+(?P<name>[A-Za-z0-9_.:-]+)\s*\{\s*\Z")

DEFAULT_DIR = "/etc/nginx/grayrelease"
COUNTERS_DIR = "/var/lib/grayrelease-canary/nginx"
LOG_FORMAT_NAME = "grayrelease_canary"
# Only values nginx itself produces, no text a client controls, so a line cannot forge another.
LOG_FORMAT = ("log_format %s '$msec $status \"$upstream_addr\" \"$upstream_status\" "
              "\"$upstream_response_time\" $request_time';" % LOG_FORMAT_NAME)

SHUTTING_DOWN = "nginx: worker process is shutting down"
WORKER = "nginx: worker process"
MASTER = "nginx: master process"


def default_upstream_file(upstream):
    return os.path.join(DEFAULT_DIR, "%s.conf" % upstream)


# ---------------------------------------------------------------- the upstream file

def parse_upstream(text, path="<upstream file>"):
    """The collection's upstream file -> {'upstream', 'servers': {name: record}, 'lines'}.

    A record: address, weight (the record's: 0 for a ready server at weight 0),
    initial_weight, admin_state, params (other parameters of the line).
    'lines' keeps every line, a server line as its name, for render().
    A file that is not the collection's, or a server line that disagrees with
    its record (edited by hand), is refused (kind 'not_ours')."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith(MARKER):
        raise BalancerError(
            "%s is not an upstream file of grayrelease.canary (its first line is not %r): the nginx driver "
            "changes only files it owns; see docs/nginx.md for their format" % (path, MARKER), kind="not_ours")
    upstream = None
    servers = {}
    kept = [lines[0]]
    closed = False
    for number, line in enumerate(lines[1:], 2):
        stripped = line.strip()
        if upstream is None:
            match = UPSTREAM_RE.match(line)
            if match:
                upstream = match.group("name")
            elif stripped and not stripped.startswith("#"):
                raise BalancerError("%s line %d: expected 'upstream NAME {', found %r" % (path, number, stripped),
                                    kind="not_ours")
            kept.append(line)
            continue
        if closed:
            if stripped and not stripped.startswith("#"):
                raise BalancerError("%s line %d: text after the upstream block: %r" % (path, number, stripped),
                                    kind="not_ours")
            kept.append(line)
            continue
        if stripped == "}":
            closed = True
            kept.append(line)
            continue
        if re.match(r"^server\s", stripped):
            record = _parse_server_line(line, path, number)
            if record["name"] in servers:
                raise BalancerError("%s line %d: server name %s appears twice" % (path, number, record["name"]),
                                    kind="not_ours")
            servers[record["name"]] = record
            kept.append(record["name"])
            continue
        kept.append(line)
    if upstream is None or not closed:
        raise BalancerError("%s has no complete 'upstream NAME { ... }' block" % path, kind="not_ours")
    return {"upstream": upstream, "servers": servers, "lines": kept}


def _parse_server_line(line, path, number):
    match = RECORD_RE.match(line)
    if not match:
        raise BalancerError(
            "%s line %d: a server line without its grayrelease record (edited by hand?): %r; nothing was changed"
            % (path, number, line.strip()), kind="not_ours")
    params = match.group("params").split()
    weight_param, down = None, False
    other = []
    for param in params:
        if param.startswith("weight="):
            weight_param = int(param[7:]) if param[7:].isdigit() else -1
        elif param == "down":
            down = True
        else:
            other.append(param)
    record = {
        "name": match.group("name"), "address": match.group("address"), "indent": match.group("indent"),
        "initial_weight": int(match.group("initial")), "weight": int(match.group("weight")),
        "admin_state": match.group("state"), "params": other,
    }
    validate_name("server", record["name"])
    if record["admin_state"] not in STATES:
        raise BalancerError("%s line %d: admin_state=%s is not one of %s"
                            % (path, number, record["admin_state"], ", ".join(STATES)), kind="not_ours")
    # What nginx runs must be what the record says, else someone edited the line.
    want_down = record["admin_state"] != "ready" or record["weight"] == 0
    want_weight = record["weight"] or record["initial_weight"] or 1
    if down != want_down or (weight_param or 1) != want_weight:
        raise BalancerError(
            "%s line %d: the server line (weight=%s%s) disagrees with its record (weight=%d admin_state=%s): "
            "edited by hand? Fix the line or its record; nothing was changed"
            % (path, number, weight_param or 1, " down" if down else "", record["weight"], record["admin_state"]),
            kind="not_ours")
    return record


def server_line(record):
    params = ["weight=%d" % (record["weight"] or record["initial_weight"] or 1)] + list(record.get("params") or [])
    if record["admin_state"] != "ready" or record["weight"] == 0:
        params.append("down")
    return "%sserver %s %s; # grayrelease: name=%s initial_weight=%d weight=%d admin_state=%s" % (
        record.get("indent", "    "), record["address"], " ".join(params), record["name"],
        record["initial_weight"], record["weight"], record["admin_state"])


def render(parsed):
    out = []
    for line in parsed["lines"]:
        out.append(server_line(parsed["servers"][line]) if line in parsed["servers"] else line)
    return "\n".join(out) + "\n"


def new_upstream(upstream, servers, extra_lines=()):
    """The text of a new upstream file: servers is a list of {name, address, weight}; each starts ready."""
    validate_name("upstream", upstream)
    lines = [HEADER.rstrip("\n"), "upstream %s {" % upstream]
    for line in extra_lines:
        lines.append("    %s" % line)
    parsed = {"upstream": upstream, "servers": {}, "lines": lines}
    for server in servers:
        validate_name("server", server["name"])
        if not ADDRESS_RE.match(server["address"]):
            raise BalancerError("invalid address %r of server %s: expected HOST:PORT"
                                % (server["address"], server["name"]), kind="bad_input")
        weight = int(server.get("weight", 1))
        parsed["servers"][server["name"]] = {"name": server["name"], "address": server["address"], "indent": "    ",
                                             "initial_weight": weight, "weight": weight, "admin_state": "ready",
                                             "params": list(server.get("params") or [])}
        lines.append(server["name"])
    lines.append("}")
    return render(parsed)


def apply_ops(parsed, ops):
    """A copy of parsed with ops [(server, 'state'|'weight', value)] applied."""
    out = dict(parsed, servers=dict((n, dict(r)) for n, r in parsed["servers"].items()))
    for server, what, value in ops:
        if server not in out["servers"]:
            raise BalancerError("unknown server %r in upstream %s; its servers are: %s"
                                % (server, parsed["upstream"], ", ".join(sorted(parsed["servers"]))),
                                kind="unknown_server")
        if what == "state":
            if value not in STATES:
                raise BalancerError("invalid state %r: expected one of %s" % (value, ", ".join(STATES)),
                                    kind="bad_input")
            out["servers"][server]["admin_state"] = value
        elif what == "weight":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_WEIGHT:
                raise BalancerError("invalid weight %r for server %s: must be an integer 0-%d"
                                    % (value, server, MAX_WEIGHT), kind="bad_weight")
            out["servers"][server]["weight"] = value
        else:
            raise BalancerError("unknown operation %r on server %s" % (what, server), kind="bad_input")
    return out


def write_atomically(path, text):
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
    mode = 0o644
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------- nginx -T

def strip_comment(line):
    quote = None
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#":
            return line[:index]
    return line


def config_facts(text):
    """What the driver needs from ``nginx -T``: the files nginx reads, worker_shutdown_timeout, the pid file,
    and whether the canary log format is defined."""
    files = []
    body = []
    for line in text.splitlines():
        if line.startswith("# configuration file ") and line.rstrip().endswith(":"):
            files.append(line[len("# configuration file "):].rstrip()[:-1])
            continue
        body.append(strip_comment(line))
    joined = "\n".join(body)
    facts = {"files": files, "worker_shutdown_timeout": None, "pid": "/run/nginx.pid",
             "log_format": re.search(r"(?:^|[;{}\s])log_format\s+%s\s" % LOG_FORMAT_NAME, joined) is not None}
    match = re.search(r"(?:^|[;{}\s])worker_shutdown_timeout\s+([^;\s]+)\s*;", joined)
    if match:
        facts["worker_shutdown_timeout"] = match.group(1)
    match = re.search(r"(?:^|[;{}\s])pid\s+([^;\s]+)\s*;", joined)
    if match:
        facts["pid"] = match.group(1)
    return facts


def nginx_messages(text):
    """nginx's own error lines ([emerg], [alert], ...), or the whole text when it has none."""
    picked = [line.strip() for line in text.splitlines() if re.search(r"\[(emerg|alert|crit|error)\]", line)]
    return "; ".join(picked) or " ".join(text.split()) or "(no output)"


# ---------------------------------------------------------------- processes and connections

def parse_ps(text):
    """``ps -eo pid,ppid,args`` output -> [(pid, ppid, title)]."""
    procs = []
    for line in text.splitlines():
        fields = line.split(None, 2)
        if len(fields) >= 3 and fields[0].isdigit() and fields[1].isdigit():
            procs.append((int(fields[0]), int(fields[1]), fields[2].strip()))
    return procs


def list_processes(proc="/proc"):
    """[(pid, ppid, title)] of every process, from /proc (no ps needed)."""
    procs = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "cmdline"), "rb") as handle:
                title = handle.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
            with open(os.path.join(proc, entry, "stat"), "rb") as handle:
                stat = handle.read().decode("utf-8", "replace")
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'.
        rest = stat[stat.rfind(")") + 2:].split()
        if len(rest) >= 2 and rest[1].isdigit():
            procs.append((int(entry), int(rest[1]), title))
    return procs


def nginx_processes(procs, master=None):
    """{'master', 'workers' (current generation), 'shutting_down'} of one nginx master (the only one,
    or ``master``'s pid)."""
    masters = [pid for pid, _ppid, title in procs if title.startswith(MASTER)]
    if master is None:
        master = masters[0] if len(masters) == 1 else None
    elif master not in masters:
        master = None
    workers, shutting = [], []
    for pid, ppid, title in procs:
        if master is None or ppid != master:
            continue
        if title.startswith(SHUTTING_DOWN):
            shutting.append(pid)
        elif title.startswith(WORKER):
            workers.append(pid)
    return {"master": master, "workers": sorted(workers), "shutting_down": sorted(shutting)}


def _hex_address(text):
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    # Each 32-bit word is in host (little-endian) order.
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw)
    else:
        ip = socket.inet_ntop(socket.AF_INET6, raw)
        if ip.startswith("::ffff:") and "." in ip:
            ip = ip[7:]
    return ip, int(port, 16)


def parse_proc_net_tcp(text):
    """/proc/net/tcp or tcp6 -> [(local (ip, port), remote (ip, port), established)]."""
    rows = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        try:
            rows.append((_hex_address(fields[1]), _hex_address(fields[2]), fields[3] == "01"))
        except ValueError:
            continue
    return rows


def read_tcp_table(paths=("/proc/net/tcp", "/proc/net/tcp6")):
    rows = []
    for path in paths:
        try:
            with open(path) as handle:
                rows.extend(parse_proc_net_tcp(handle.read()))
        except OSError:
            continue
    return rows


def resolve_address(address):
    """'host:port' -> set of (ip, port) it resolves to on this host, as nginx resolved it."""
    host, _sep, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), 0, socket.SOCK_STREAM)
    except (socket.gaierror, ValueError):
        return set()
    return set((info[4][0], info[4][1]) for info in infos)


def log_address(ip, port):
    """How nginx writes an address in $upstream_addr."""
    return "[%s]:%d" % (ip, port) if ":" in ip else "%s:%d" % (ip, port)


def count_connections(rows, targets):
    """targets: server -> set of (ip, port). -> server -> established connections from here to it."""
    counts = dict((server, 0) for server in targets)
    for _local, remote, established in rows:
        if not established:
            continue
        for server, addresses in targets.items():
            if remote in addresses:
                counts[server] += 1
    return counts


# ---------------------------------------------------------------- the access log

LOG_RE = re.compile(
    r'^(?P<msec>\d+\.\d{3}) (?P<status>\d{3}) "(?P<addr>[^"]*)" "(?P<ustatus>[^"]*)" "(?P<utime>[^"]*)" '
    r'(?P<rtime>\d+\.\d{3})\s*\Z', re.ASCII)
SEPARATOR_RE = re.compile(r", | : ")


def _number(text, convert):
    try:
        return convert(text)
    except ValueError:
        return None


def parse_log_line(line):
    """A line of the grayrelease_canary log_format -> {time, status, request_time, attempts:
    [(address, upstream status or None, response seconds or None)]}, or None when it is not one.

    A request nginx passed to several servers (proxy_next_upstream) lists each attempt:
    each server is counted with its own answer. An attempt that is not HOST:PORT (the
    upstream's name when no server was live) is kept with its text."""
    match = LOG_RE.match(line)
    if not match:
        return None
    addrs = SEPARATOR_RE.split(match.group("addr"))
    statuses = SEPARATOR_RE.split(match.group("ustatus"))
    times = SEPARATOR_RE.split(match.group("utime"))
    attempts = []
    if match.group("addr") not in ("", "-"):
        for index, addr in enumerate(addrs):
            status = statuses[index] if index < len(statuses) else "-"
            seconds = times[index] if index < len(times) else "-"
            attempts.append((addr, _number(status, int), _number(seconds, float)))
    return {"time": float(match.group("msec")), "status": int(match.group("status")),
            "request_time": float(match.group("rtime")), "attempts": attempts}


def _attempt_is_5xx(status):
    # No status at all: nginx got no answer (connection refused, timed out): the server failed it.
    return status is None or status >= 500


class LogCounters(object):
    """Cumulative per-server requests and 5xx from the access log, read from where the last
    read stopped (offset and counters kept in ``state_path``), so each read costs only the
    lines written since. The first read starts at the log's end (counters 0), as HAProxy's
    counters start at its start. A rotated (new inode) or truncated log is read from its
    start; lines written to the old file after the last read are not counted.

    ``rate``: requests per second over the last RATE_SECONDS seen in the log."""

    RATE_SECONDS = 10

    def __init__(self, log_path, state_path, clock=time.time):
        self.log_path = log_path
        self.state_path = state_path
        self.clock = clock

    def _load(self):
        try:
            with open(self.state_path) as handle:
                state = json.load(handle)
            if isinstance(state, dict) and state.get("log") == self.log_path:
                return state
        except (OSError, ValueError):
            pass
        return None

    def read(self, save=True):
        """-> {address: {requests, errors_5xx, rate}} plus under None the requests with no server."""
        try:
            handle = open(self.log_path, "rb")
        except OSError as exc:
            raise BalancerError("cannot read the access log %s: %s (set access_log to the file of the "
                                "'access_log ... %s' line, see docs/nginx.md)"
                                % (self.log_path, exc.strerror, LOG_FORMAT_NAME), kind="access_log")
        with handle:
            stat = os.fstat(handle.fileno())
            state = self._load()
            if state is None:
                state = {"log": self.log_path, "inode": stat.st_ino, "offset": stat.st_size, "servers": {},
                         "recent": {}, "unparsed": 0}
            elif state.get("inode") != stat.st_ino or state.get("offset", 0) > stat.st_size:
                state.update(inode=stat.st_ino, offset=0)
            handle.seek(state["offset"])
            data = handle.read()
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        servers = state["servers"]
        recent = state["recent"]
        for raw in data[:end].decode("utf-8", "replace").splitlines():
            entry = parse_log_line(raw)
            if entry is None:
                state["unparsed"] = state.get("unparsed", 0) + 1
                continue
            second = str(int(entry["time"]))
            for address, status, _seconds in entry["attempts"]:
                item = servers.setdefault(address, {"requests": 0, "errors_5xx": 0})
                item["requests"] += 1
                if _attempt_is_5xx(status):
                    item["errors_5xx"] += 1
                per = recent.setdefault(address, {})
                per[second] = per.get(second, 0) + 1
        state["offset"] += end
        horizon = self.clock() - self.RATE_SECONDS
        for address in list(recent):
            recent[address] = dict((s, n) for s, n in recent[address].items() if int(s) >= horizon)
        if save:
            self._save(state)
        out = {}
        for address, item in servers.items():
            seen = sum(recent.get(address, {}).values())
            out[address] = dict(item, rate=int(round(seen / float(self.RATE_SECONDS))))
        return out

    def _save(self, state):
        directory = os.path.dirname(self.state_path) or "."
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o700)
        write_atomically(self.state_path, json.dumps(state, sort_keys=True))


def collect(lines, names, since, until=None, max_samples=10000):
    """Per-server figures of the requests accepted in [since, until], in the shape of
    _haproxy_log.collect: {servers: name -> {requests, response_ms, total_ms, statuses,
    errors_5xx}, matched, skipped_unparsed, first, last}. ``names``: address -> server name;
    attempts to other addresses are left out. The time nginx logs is the request's end:
    its start is time - request_time."""
    found = {}
    matched = unparsed = 0
    first = last = None
    for line in lines:
        entry = parse_log_line(line)
        if entry is None:
            unparsed += 1
            continue
        start = entry["time"] - entry["request_time"]
        if start < since or (until is not None and start > until):
            continue
        counted = False
        for address, status, seconds in entry["attempts"]:
            name = names.get(address)
            if name is None:
                continue
            counted = True
            item = found.setdefault(name, {"requests": 0, "response_ms": [], "total_ms": [], "statuses": {},
                                           "errors_5xx": 0})
            item["requests"] += 1
            klass = "%dxx" % (status // 100) if status is not None and status >= 100 else "other"
            item["statuses"][klass] = item["statuses"].get(klass, 0) + 1
            if _attempt_is_5xx(status):
                item["errors_5xx"] += 1
            if seconds is not None:
                item["response_ms"].append(int(round(seconds * 1000)))
            item["total_ms"].append(int(round(entry["request_time"] * 1000)))
        if counted:
            matched += 1
            first = start if first is None else min(first, start)
            last = start if last is None else max(last, start)
    for item in found.values():
        for key in ("response_ms", "total_ms"):
            if len(item[key]) > max_samples:
                step = len(item[key]) / float(max_samples)
                item[key] = [item[key][int(i * step)] for i in range(max_samples)]
    return {"servers": found, "matched": matched, "skipped_unparsed": unparsed, "first": first, "last": last}


# ---------------------------------------------------------------- the driver

def run_command(argv, timeout=60):
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, check=False)
    except FileNotFoundError:
        raise BalancerError("%s not found: set nginx_binary to nginx's path" % argv[0], kind="missing_nginx")
    except subprocess.TimeoutExpired:
        raise BalancerError("%s did not finish within %ss" % (" ".join(argv), timeout), kind="timeout")
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


class NginxDriver(object):
    """One upstream of one nginx, through the collection's upstream file (the interface: _balancer.py)."""

    name = "nginx"
    capabilities = dict(capabilities("nginx"), batched_changes=True, shutdown_sessions=False)

    def __init__(self, backend, upstream_file=None, nginx_binary="nginx", access_log=None, counters_file=None,
                 reload_timeout=15.0, run=None, processes=None, tcp_table=None, resolve=None,
                 clock=time.monotonic, sleep=time.sleep, save_counters=True):
        self.backend = validate_name("backend", backend)
        self.path = upstream_file or default_upstream_file(backend)
        self.nginx = nginx_binary
        self.access_log = access_log
        self.counters_file = counters_file or os.path.join(COUNTERS_DIR, "%s.counters.json" % backend)
        self.save_counters = save_counters
        self.reload_timeout = float(reload_timeout)
        self.run = run or run_command
        self.processes = processes or list_processes
        self.tcp_table = tcp_table or read_tcp_table
        self.resolve = resolve or resolve_address
        self.clock = clock
        self.sleep = sleep
        self.last_reload = None
        self._facts = None
        self._digest = None

    def describe(self):
        return "nginx upstream %s in %s" % (self.backend, self.path)

    # -- the file

    def _load(self):
        try:
            with open(self.path) as handle:
                text = handle.read()
        except OSError as exc:
            raise BalancerError(
                "cannot read the upstream file %s: %s (create it in the collection's format, docs/nginx.md, and "
                "include it in nginx's http block)" % (self.path, exc.strerror), kind="missing_file")
        parsed = parse_upstream(text, self.path)
        if parsed["upstream"] != self.backend:
            raise BalancerError("unknown upstream %r: %s holds upstream %r (set upstream_file to the file of %r)"
                                % (self.backend, self.path, parsed["upstream"], self.backend),
                                kind="unknown_backend")
        self._digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
        return text, parsed

    # -- nginx itself

    def facts(self):
        """nginx -T, checked: it passes, it includes our file, worker_shutdown_timeout is set."""
        if self._facts is None:
            rc, out, err = self.run([self.nginx, "-T"])
            if rc != 0:
                raise BalancerError("nginx's configuration fails its test before any change (nginx -T): %s; "
                                    "nothing was changed" % nginx_messages(err + out), kind="config")
            facts = config_facts(out)
            if os.path.realpath(self.path) not in [os.path.realpath(f) for f in facts["files"]]:
                raise BalancerError(
                    "nginx does not read %s (nginx -T lists no such configuration file): include it in the http "
                    "block ('include %s;'); nothing was changed" % (self.path, self.path), kind="prerequisite")
            if not facts["worker_shutdown_timeout"]:
                raise BalancerError(
                    "worker_shutdown_timeout is not set in nginx's configuration: without it a reload's old workers "
                    "may never exit and a drain could not be proven; add e.g. 'worker_shutdown_timeout 60s;' to the "
                    "main context of nginx.conf; nothing was changed", kind="prerequisite")
            self._facts = facts
        return self._facts

    def require_writable(self):
        self.facts()

    def _master_pid(self):
        pid_file = (self._facts or {}).get("pid", "/run/nginx.pid")
        try:
            with open(pid_file) as handle:
                text = handle.read().strip()
            return int(text) if text.isdigit() else None
        except OSError:
            return None

    def _processes(self):
        return nginx_processes(self.processes(), self._master_pid())

    def process(self):
        """The master (``pid``: a restart changes it), its current and shutting-down workers, and the
        generation: master pid and the upstream file's hash. A reload that changes nothing keeps the
        generation: nginx's state is the file, a reload loses nothing."""
        proc = self._processes()
        if self._digest is None:
            self._load()
        generation = "%s-%s" % (proc["master"] if proc["master"] is not None else "stopped", self._digest)
        return {"pid": proc["master"], "workers": proc["workers"], "shutting_down": proc["shutting_down"],
                "generation": generation}

    # -- the interface

    def read(self):
        """{server: info}: admin_state, weight, initial_weight, status, up (None: nginx cannot tell), scur
        (established connections from this host), address, and with the access log req_tot, hrsp_5xx, rate."""
        _text, parsed = self._load()
        targets = dict((n, self.resolve(r["address"])) for n, r in parsed["servers"].items())
        conns = count_connections(self.tcp_table(), targets)
        counters = None
        if self.access_log:
            counters = LogCounters(self.access_log, self.counters_file).read(save=self.save_counters)
        servers = {}
        for name, record in parsed["servers"].items():
            status = {"drain": "DRAIN", "maint": "MAINT"}.get(record["admin_state"], "UP")
            info = {"admin_state": record["admin_state"], "weight": record["weight"],
                    "initial_weight": record["initial_weight"], "status": status, "up": None,
                    "scur": conns[name], "address": record["address"]}
            if counters is not None:
                # nginx logs the address it connected to: the record's, or what its name resolved to.
                keys = set([record["address"]]) | set(log_address(ip, port) for ip, port in targets[name])
                items = [counters[k] for k in keys if k in counters]
                info.update(req_tot=sum(i["requests"] for i in items), hrsp_5xx=sum(i["errors_5xx"] for i in items),
                            rate=sum(i["rate"] for i in items))
            servers[name] = info
        return servers

    def public(self, info):
        return dict((k, info[k]) for k in PUBLIC_KEYS if k in info)

    def command(self, server, what, value):
        return "server %s %s %s" % (server, what, value)

    def apply(self, ops):
        """All ops in one new file, nginx -t, one graceful reload. Returns what was done."""
        if not ops:
            return []
        self.facts()
        text, parsed = self._load()
        new_text = render(apply_ops(parsed, ops))
        if new_text == text:
            return []
        before = self._processes()
        if before["master"] is None:
            raise BalancerError("nginx is not running (no master process for pid file %s): a change could not "
                                "take effect; nothing was changed" % self._facts.get("pid"), kind="not_running")
        write_atomically(self.path, new_text)
        rc, out, err = self.run([self.nginx, "-t"])
        if rc != 0:
            write_atomically(self.path, text)
            raise BalancerError("nginx -t refused the new upstream file: %s; the previous file is back and nginx "
                                "was not reloaded, nothing was changed" % nginx_messages(err + out),
                                kind="config", result={"changed": False})
        rc, out, err = self.run([self.nginx, "-s", "reload"])
        if rc != 0:
            write_atomically(self.path, text)
            raise BalancerError("nginx -s reload failed: %s; the previous file is back, nothing was changed"
                                % nginx_messages(err + out), kind="reload", result={"changed": False})
        self._wait_reloaded(before, text)
        self._digest = hashlib.sha256(new_text.encode("utf-8")).hexdigest()[:12]
        return [self.command(*op) for op in ops] + ["%s -t" % self.nginx, "%s -s reload" % self.nginx]

    def _wait_reloaded(self, before, old_text):
        """Until the master runs workers none of which ran before: the new configuration is live."""
        old = set(before["workers"])
        deadline = self.clock() + self.reload_timeout
        while True:
            now = self._processes()
            fresh = [p for p in now["workers"] if p not in old]
            if fresh and not old & set(now["workers"]):
                self.last_reload = {"old_workers": sorted(old | set(before["shutting_down"])), "at": self.clock(),
                                    "master": now["master"]}
                return
            if now["master"] is None or self.clock() >= deadline:
                write_atomically(self.path, old_text)
                raise BalancerError(
                    "nginx did not start new workers within %ss of the reload (master %s; see its error.log): the "
                    "previous upstream file is back" % (self.reload_timeout, now["master"]), kind="reload",
                    result={"changed": False})
            self.sleep(0.05)

    def verify(self, after, ops):
        wrong = []
        for server, what, value in ops:
            got = after[server]["admin_state"] if what == "state" else after[server]["weight"]
            if got != value:
                wrong.append("%s %s is %s, not %s" % (server, what, got, value))
        if wrong:
            raise BalancerError("the upstream file %s does not show the change: %s (written by someone else "
                                "meanwhile?)" % (self.path, "; ".join(wrong)), kind="not_applied",
                                result={"changed": True})

    def drain_state(self, servers):
        """(done, {'busy', 'extra': {'evidence'}}): done when every worker from before the last reload
        has exited, or when no established connection from this host reaches a drained server."""
        _text, parsed = self._load()
        proc = self._processes()
        alive = set(proc["shutting_down"])
        if self.last_reload:
            alive |= set(p for p in self.last_reload["old_workers"] if p in proc["workers"])
        targets = dict((s, self.resolve(parsed["servers"][s]["address"])) for s in servers)
        conns = count_connections(self.tcp_table(), targets)
        evidence = {"old_workers": sorted(alive), "connections": conns, "proof": None}
        not_down = [s for s in servers if parsed["servers"][s]["admin_state"] == "ready"
                    and parsed["servers"][s]["weight"] != 0]
        if not_down:
            evidence["not_down"] = not_down
        elif not alive:
            evidence["proof"] = "old workers exited"
        elif not any(conns.values()):
            evidence["proof"] = "no connections"
        busy = dict((s, n) for s, n in conns.items() if n > 0)
        return evidence["proof"] is not None, {"busy": busy, "extra": {"evidence": evidence}}

    def shutdown_sessions(self, busy):
        return {}

    def drain_timeout_message(self, timeout, evidence, killed):
        ev = evidence["extra"]["evidence"]
        if ev.get("not_down"):
            return ("drain timeout: %s of upstream %s are not down in %s (changed by someone else meanwhile?)"
                    % (", ".join(ev["not_down"]), self.backend, self.path))
        return ("drain not proven after %ss: old nginx workers %s still running and connections to the drained "
                "servers of %s still open (%s); the servers stay down. worker_shutdown_timeout (%s) ends the old "
                "workers: wait longer or raise drain_timeout"
                % (timeout, ", ".join(str(p) for p in ev["old_workers"]), self.backend,
                   ", ".join("%s: %d" % (s, n) for s, n in sorted(ev["connections"].items())),
                   (self._facts or {}).get("worker_shutdown_timeout")))

    def wait_healthy(self, control, timeout, left_maint, after, result):
        # No active health checks in open-source nginx: the probe is the only health signal.
        return None


# What a module result shows per server (the engine's names: _drivers.py).
PUBLIC_KEYS = ("admin_state", "status", "weight", "initial_weight", "scur", "req_tot", "hrsp_5xx", "rate", "up",
               "address")


def gather_info(driver):
    """nginx_info: the upstream's servers and the process."""
    servers = driver.read()
    return dict((s, driver.public(i)) for s, i in servers.items()), driver.process()
