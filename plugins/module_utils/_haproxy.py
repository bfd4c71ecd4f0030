# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HAProxy runtime API client and the server state machine behind
grayrelease.canary.haproxy_server / haproxy_info.

Stdlib only: this file is shipped to the balancer hosts and runs there.

Facts about HAProxy (checked against 2.6) that the code depends on:

* One command per connection: without ``prompt`` HAProxy answers and closes,
  so a reply is "read until EOF"; nothing can be left half-read between two
  commands. A ``;`` or newline in a command starts another command, which is
  why every name is validated before it is put on the wire.
* ``show servers state`` column ``srv_admin_state`` is a bit field:
  FMAINT 0x01, IMAINT 0x02 (inherited from a tracked server), CMAINT 0x04
  (``disabled`` in the config), FDRAIN 0x08, IDRAIN 0x10 (inherited),
  RMAINT 0x20 (DNS resolution failed), HMAINT 0x40 (FQDN set from the CLI:
  not a maintenance state despite its name).
* Leaving maintenance HAProxy sets the check health to exactly ``rise`` and
  reports the server UP (``UP 1/2`` with fall 2) before any new check runs,
  with the check status of the last check before maintenance. A first passing
  check raises health above ``rise``; a first failing one drops it below and
  the server goes DOWN. ``srv_check_state`` bit 0x01 is "check in progress",
  0x08 "checks paused" (maintenance).
"""

from __future__ import annotations

import csv
import errno
import io
import re
import socket
import time

from ansible_collections.grayrelease.canary.plugins.module_utils import _claims
from ansible_collections.grayrelease.canary.plugins.module_utils._health import HealthError, check_urls
from ansible_collections.grayrelease.canary.plugins.module_utils._redact import redact, redact_url
from ansible_collections.grayrelease.canary.plugins.module_utils._weights import parse_percent

NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]+\Z")

ADMF_FMAINT = 0x01
ADMF_IMAINT = 0x02
ADMF_CMAINT = 0x04
ADMF_FDRAIN = 0x08
ADMF_IDRAIN = 0x10
ADMF_RMAINT = 0x20
ADMF_MAINT_MASK = ADMF_FMAINT | ADMF_IMAINT | ADMF_CMAINT | ADMF_RMAINT
ADMF_DRAIN_MASK = ADMF_FDRAIN | ADMF_IDRAIN

CHK_ST_INPROGRESS = 0x01
CHK_ST_CONFIGURED = 0x02
CHK_ST_PAUSED = 0x08

STATES = ("ready", "drain", "maint")
PASSING_CHECKS = ("L4OK", "L6OK", "L7OK", "L7OKC")
MAX_WEIGHT = 256

# Counters returned by haproxy_info; an empty CSV cell (not applicable, e.g.
# hrsp_* on a TCP backend) becomes 0 so callers can subtract snapshots.
INFO_NUMBERS = (
    "req_tot", "hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx",
    "hrsp_other", "econ", "eresp", "rtime", "ttime", "qtime", "ctime", "scur",
    "smax", "stot", "weight", "chkfail", "chkdown", "lastchg", "downtime",
    "wretr", "wredis", "cli_abrt", "srv_abrt", "bin", "bout", "lbtot",
    "qcur", "rtime_max", "ttime_max", "rate",
)


class HAProxyError(Exception):
    """A failure with a message meant for the user.

    ``kind`` lets callers and tests tell the causes apart; ``result`` carries
    whatever was known (e.g. ``before``) when the failure happened.
    """

    def __init__(self, msg, kind="error", result=None):
        super(HAProxyError, self).__init__(msg)
        self.msg = msg
        self.kind = kind
        self.result = result or {}


def validate_name(what, name):
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise HAProxyError(
            "invalid %s name %r: only the characters [A-Za-z0-9_.:-] are allowed "
            "(nothing was sent to HAProxy)" % (what, name), kind="invalid_name")
    return name


def _to_int(value):
    if value is None or value == "" or value == "-":
        return 0
    try:
        return int(value)
    except ValueError:
        try:
            return int(float(value))
        except ValueError:
            return 0


class RuntimeAPI(object):
    """Minimal HAProxy runtime API client: one command per connection."""

    def __init__(self, spec, timeout=10.0):
        self.spec = spec
        self.timeout = timeout
        if spec.startswith("tcp:"):
            host, sep, port = spec[4:].rpartition(":")
            if not sep or not host or not port.isdigit():
                raise HAProxyError("invalid socket %r: expected a unix socket path or tcp:HOST:PORT" % spec,
                                   kind="bad_socket")
            self.address = (host.strip("[]"), int(port))
            self.family = "tcp"
        else:
            if not spec.startswith("/"):
                raise HAProxyError("invalid socket %r: expected an absolute unix socket path or tcp:HOST:PORT"
                                   % spec, kind="bad_socket")
            self.address = spec
            self.family = "unix"
        self._level = None

    def _connect(self):
        try:
            if self.family == "tcp":
                return socket.create_connection(self.address, timeout=self.timeout)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.address)
            except Exception:
                sock.close()
                raise
            return sock
        except FileNotFoundError:
            raise HAProxyError(
                "HAProxy runtime socket %s does not exist: is HAProxy running, and does its global "
                "section have 'stats socket %s level admin'?" % (self.spec, self.spec), kind="missing_socket")
        except ConnectionRefusedError:
            raise HAProxyError(
                "HAProxy runtime socket %s refused the connection: nothing is listening there "
                "(HAProxy stopped, or a stale socket file)" % self.spec, kind="refused")
        except PermissionError:
            raise HAProxyError(
                "no permission to open HAProxy runtime socket %s: run with become, or fix the "
                "socket's mode/user in the 'stats socket' line" % self.spec, kind="permission")
        except socket.timeout:
            raise HAProxyError("timed out connecting to HAProxy runtime socket %s" % self.spec, kind="timeout")
        except OSError as exc:
            if exc.errno == errno.ENOTSOCK or exc.errno == errno.ECONNREFUSED:
                raise HAProxyError("%s is not a listening HAProxy runtime socket: %s" % (self.spec, exc),
                                   kind="refused")
            raise HAProxyError("cannot connect to HAProxy runtime socket %s: %s" % (self.spec, exc),
                               kind="connect")

    def command(self, cmd):
        if "\n" in cmd or "\r" in cmd or ";" in cmd:
            # Belt and braces: names are validated earlier; this guards future callers.
            raise HAProxyError("refusing to send a command containing ';' or a newline: %r" % cmd,
                               kind="invalid_name")
        sock = self._connect()
        try:
            sock.sendall(cmd.encode("ascii") + b"\n")
            chunks = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except socket.timeout:
            raise HAProxyError("timed out waiting for HAProxy's answer to %r on %s" % (cmd, self.spec),
                               kind="timeout")
        except OSError as exc:
            raise HAProxyError("error talking to HAProxy on %s: %s" % (self.spec, exc), kind="connect")
        finally:
            sock.close()
        return b"".join(chunks).decode("utf-8", "replace")

    def level(self):
        """'admin', 'operator' or 'user'; None when HAProxy is too old to say."""
        if self._level is None:
            out = self.command("show cli level").strip()
            self._level = out if out in ("admin", "operator", "user") else ""
        return self._level or None

    def require_admin(self):
        level = self.level()
        if level is not None and level != "admin":
            raise HAProxyError(
                "HAProxy runtime socket %s is at level '%s', not admin: changing servers needs "
                "'stats socket %s level admin' in HAProxy's global section" % (self.spec, level, self.spec),
                kind="not_admin")

    def set_command(self, cmd):
        """Run a state-changing command; HAProxy answers nothing on success."""
        out = self.command(cmd).strip()
        if not out:
            return
        if "Permission denied" in out:
            raise HAProxyError(
                "HAProxy refused %r on %s: permission denied (the socket is not at level admin)"
                % (cmd, self.spec), kind="not_admin")
        raise HAProxyError("HAProxy rejected %r: %s" % (cmd, out.replace("\n", " ")), kind="rejected")

    def show_stat(self):
        return parse_show_stat(self._checked_show("show stat -1 4 -1"))

    def process(self):
        """{pid, uptime_sec} of the HAProxy process answering: a new pid means a
        restart or reload, which loses runtime changes unless server-state-file
        is set up."""
        return parse_show_info(self._checked_show("show info"))

    def show_servers_state(self):
        return parse_servers_state(self._checked_show("show servers state"))

    def _checked_show(self, cmd):
        out = self.command(cmd)
        if "Permission denied" in out[:200]:
            raise HAProxyError("HAProxy refused %r on %s: permission denied" % (cmd, self.spec), kind="not_admin")
        if out.startswith("Unknown command"):
            raise HAProxyError("HAProxy on %s does not know %r (HAProxy too old? 1.8+ needed)" % (self.spec, cmd),
                               kind="rejected")
        return out


def parse_show_info(text):
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return {"pid": _to_int(fields.get("Pid")), "uptime_sec": _to_int(fields.get("Uptime_sec"))}


def parse_show_stat(text):
    """Parse ``show stat`` CSV into a list of dicts (raw string values)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        raise HAProxyError("unexpected answer to 'show stat': %r" % text[:200], kind="parse")
    lines[0] = lines[0][2:]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    return [dict((k, v) for k, v in row.items() if k) for row in reader]


def parse_servers_state(text):
    """Parse ``show servers state`` into {(backend, server): {column: value}}."""
    lines = text.splitlines()
    header = None
    rows = {}
    for line in lines:
        if not line.strip():
            continue
        if line.startswith("#"):
            header = line[1:].split()
            continue
        if header is None:
            continue  # the format version line ("1")
        fields = line.split()
        if len(fields) < 7:
            continue
        row = dict(zip(header, fields))
        rows[(row.get("be_name"), row.get("srv_name"))] = row
    if header is None:
        raise HAProxyError("unexpected answer to 'show servers state': %r" % text[:200], kind="parse")
    return rows


def admin_state_from_bits(bits):
    """Map srv_admin_state bits to exactly 'maint', 'drain' or 'ready'."""
    bits = _to_int(bits)
    if bits & ADMF_MAINT_MASK:
        return "maint"
    if bits & ADMF_DRAIN_MASK:
        return "drain"
    return "ready"


def _status_admin_state(status):
    # Fallback when 'show servers state' has no row (HAProxy < 1.6).
    status = (status or "").upper()
    if status.startswith("MAINT"):
        return "maint"
    if status.startswith("DRAIN"):
        return "drain"
    return "ready"


def snapshot(api):
    """{backend: {server: info}} merged from show stat and show servers state."""
    stat = api.show_stat()
    try:
        state = api.show_servers_state()
    except HAProxyError as exc:
        if exc.kind in ("not_admin", "parse", "rejected"):
            state = {}
        else:
            raise
    backends = {}
    for row in stat:
        backend, server = row.get("pxname"), row.get("svname")
        if not backend or not server or server in ("FRONTEND", "BACKEND"):
            continue
        st = state.get((backend, server))
        info = dict((name, _to_int(row.get(name))) for name in INFO_NUMBERS)
        info["status"] = row.get("status", "")
        # While a check runs HAProxy prefixes the last result with "* " (management guide, show stat):
        # the result is what health waits judge and status shows.
        check_status = row.get("check_status", "")
        info["check_status"] = check_status[2:] if check_status.startswith("* ") else check_status
        info["check_desc"] = row.get("check_desc", "")
        info["last_chk"] = row.get("last_chk", "")
        info["check_duration"] = row.get("check_duration", "")
        info["check_health"] = _to_int(row.get("check_health"))
        info["check_rise"] = _to_int(row.get("check_rise"))
        info["check_fall"] = _to_int(row.get("check_fall"))
        if st is not None:
            bits = _to_int(st.get("srv_admin_state"))
            info["admin_state"] = admin_state_from_bits(bits)
            info["admin_bits"] = bits
            info["weight"] = _to_int(st.get("srv_uweight"))
            info["initial_weight"] = _to_int(st.get("srv_iweight"))
            info["op_state"] = _to_int(st.get("srv_op_state"))
            info["check_state"] = _to_int(st.get("srv_check_state"))
        else:
            info["admin_state"] = _status_admin_state(info["status"])
            info["admin_bits"] = None
            info["initial_weight"] = info["weight"]
            info["op_state"] = None
            info["check_state"] = None
        backends.setdefault(backend, {})[server] = info
    return backends


# With the traffic counters, a canary's ready is also the snapshot its analysis starts from.
PUBLIC_KEYS = ("admin_state", "status", "weight", "initial_weight", "scur", "check_status", "req_tot", "hrsp_5xx")


def public(info):
    return dict((k, info.get(k)) for k in PUBLIC_KEYS)


def info_view(info):
    """The haproxy_info shape: counters as numbers plus state strings."""
    out = dict((name, info.get(name)) for name in INFO_NUMBERS)
    for key in ("status", "check_status", "admin_state", "initial_weight", "check_desc"):
        out[key] = info.get(key)
    return out


def gather_info(api, backend=None):
    if backend is not None:
        validate_name("backend", backend)
    backends = snapshot(api)
    if backend is not None:
        if backend not in backends:
            raise HAProxyError("unknown backend %r; HAProxy on %s has backends with servers: %s"
                               % (backend, api.spec, ", ".join(sorted(backends)) or "(none)"),
                               kind="unknown_backend")
        backends = {backend: backends[backend]}
    return dict((b, dict((s, info_view(i)) for s, i in servers.items())) for b, servers in backends.items())


def resolve_weight(spec, initial, server=None):
    """An absolute weight 0-256 from an int or "N%" of the initial weight.

    "N%" is computed here, not by HAProxy, so the result can be compared with
    the current weight (idempotence) and shown in check mode:
    round-half-up(initial * N / 100).
    """
    where = " for server %s" % server if server else ""
    if isinstance(spec, bool):
        raise HAProxyError("invalid weight %r%s" % (spec, where), kind="bad_weight")
    if isinstance(spec, int):
        value = spec
    else:
        text = str(spec).strip()
        if text.endswith("%"):
            pct = parse_percent(text)
            if pct is None:
                raise HAProxyError("invalid weight %r%s: expected 0-256 or 'N%%' with N a number >= 0"
                                   % (spec, where), kind="bad_weight")
            # Compared before int(): a huge N% (or initial * N) is infinite
            # as a float, and int() of that raises OverflowError.
            exact = initial * pct / 100.0 + 0.5
            if exact >= MAX_WEIGHT + 1:
                raise HAProxyError("weight %r%s of initial weight %d is above HAProxy's maximum %d"
                                   % (spec, where, initial, MAX_WEIGHT), kind="bad_weight")
            return int(exact)
        # int() alone would also take '1_0' and other scripts' digits.
        if not (text.isascii() and text.isdigit()):
            raise HAProxyError("invalid weight %r%s: expected 0-256 or 'N%%'" % (spec, where), kind="bad_weight")
        value = int(text)
    if value < 0 or value > MAX_WEIGHT:
        raise HAProxyError("invalid weight %r%s: must be between 0 and %d" % (spec, where, MAX_WEIGHT),
                           kind="bad_weight")
    return value


def plan_changes(current, servers, state=None, weight=None, weights=None):
    """[(server, 'weight'|'state', value)] needed to reach the target.

    Order matters: going to ready, weights first so a canary never gets a
    moment of full weight; going to drain/maint, state first so traffic
    stops before anything else.
    """
    weights = weights or {}
    weight_ops, state_ops = [], []
    for server in servers:
        info = current[server]
        spec = weights.get(server, weight)
        if spec is not None:
            target = resolve_weight(spec, info["initial_weight"], server)
            if target != info["weight"]:
                weight_ops.append((server, "weight", target))
        if state is not None and info["admin_state"] != state:
            state_ops.append((server, "state", state))
    if state == "ready":
        return weight_ops + state_ops
    return state_ops + weight_ops


def predict(current, ops):
    after = dict((s, dict(i)) for s, i in current.items())
    for server, what, value in ops:
        if what == "weight":
            after[server]["weight"] = value
        else:
            after[server]["admin_state"] = value
            after[server]["status"] = {"maint": "MAINT", "drain": "DRAIN"}.get(value, after[server]["status"])
    return after


def diff_text(backend, servers, infos):
    return "".join("%s/%s: admin_state=%s weight=%s\n" % (backend, s, infos[s]["admin_state"], infos[s]["weight"])
                   for s in servers)


class ServerControl(object):
    """What haproxy_server does, without Ansible: plan, apply, wait, report."""

    def __init__(self, api, backend, servers, clock=time.monotonic, sleep=time.sleep, claims=None, owner='',
                 max_unavailable=None, fleet=None):
        self.api = api
        # A drain that would leave more than max_unavailable of fleet (default: every server of the
        # backend) out of rotation here is refused before anything changes.
        self.max_unavailable = max_unavailable
        self.fleet = fleet
        # Where this balancer keeps what runs of this collection set (_claims), and this run's name there.
        self.claims = claims
        self.owner = owner
        self.backend = validate_name("backend", backend)
        if not servers:
            raise HAProxyError("servers must list at least one server", kind="bad_input")
        seen = []
        for server in servers:
            validate_name("server", server)
            if server not in seen:
                seen.append(server)
        self.servers = seen
        self.clock = clock
        self.sleep = sleep
        self.warnings = []

    def read(self):
        backends = snapshot(self.api)
        if self.backend not in backends:
            raise HAProxyError(
                "unknown backend %r; HAProxy on %s has backends with servers: %s"
                % (self.backend, self.api.spec, ", ".join(sorted(backends)) or "(none)"), kind="unknown_backend")
        servers = backends[self.backend]
        unknown = [s for s in self.servers if s not in servers]
        if unknown:
            raise HAProxyError(
                "unknown server(s) %s in backend %r; its servers are: %s"
                % (", ".join(unknown), self.backend, ", ".join(sorted(servers))), kind="unknown_server")
        return servers

    def run(self, state=None, weight=None, weights=None, drain_timeout=60, shutdown_sessions=False,
            wait_healthy=True, health_timeout=60, wait=True, check_mode=False, want_diff=False):
        if state is not None and state not in STATES:
            raise HAProxyError("invalid state %r: expected one of %s" % (state, ", ".join(STATES)), kind="bad_input")
        weights = dict(weights or {})
        for name in weights:
            validate_name("server", name)
            if name not in self.servers:
                self.servers.append(name)
        current = self.read()
        if not check_mode:
            # Before anything changes, so a user-level socket fails cleanly.
            self.api.require_admin()
        before = dict((s, current[s]) for s in self.servers)
        ops = plan_changes(current, self.servers, state, weight, weights)
        result = {"changed": bool(ops), "before": dict((s, public(i)) for s, i in before.items())}
        result["commands"] = [self._command(*op) for op in ops]
        if self.max_unavailable is not None and state in ("drain", "maint"):
            self._check_room(current, ops)
        if check_mode:
            after = predict(before, ops)
        else:
            if self.claims and ops:
                # Claimed before the change: a run killed right after it still leaves its claim.
                self._claims(_claims.claim, predict(before, ops), current, self.owner, time.time())
            left_maint = set(s for s, what, value in ops
                             if what == "state" and before[s]["admin_state"] == "maint")
            applied = []
            try:
                for op in ops:
                    self.api.set_command(self._command(*op))
                    applied.append(op)
            except HAProxyError as exc:
                exc.result.update(result)
                exc.result["changed"] = bool(applied)
                exc.msg = "%s (applied before the failure: %s)" % (
                    exc.msg, ", ".join(self._command(*op) for op in applied) or "nothing")
                exc.args = (exc.msg,)
                raise
            after = self.read()
            self._verify(after, state, ops)
            if wait and state in ("drain", "maint"):
                result["drain"] = self._wait_drained(drain_timeout, shutdown_sessions, result)
                after = self.read()
            if wait and state == "ready" and wait_healthy:
                result["health"] = self._wait_healthy(health_timeout, left_maint, after, result)
                after = self.read()
            if self.claims:
                try:
                    self._claims(_claims.release, after)
                except HAProxyError as exc:
                    # The change is made; a claim left on a normal server is dropped by the next claim.
                    self.warnings.append(exc.msg)
        result["servers"] = dict((s, public(after[s])) for s in self.servers)
        result["process"] = self.api.process()
        if want_diff:
            result["diff"] = {
                "before_header": "%s (before)" % self.backend,
                "after_header": "%s (after)" % self.backend,
                "before": diff_text(self.backend, self.servers, before),
                "after": diff_text(self.backend, self.servers, after),
            }
        return result

    def _check_room(self, current, ops):
        fleet = [s for s in (self.fleet or sorted(current)) if s in current]
        planned = predict(dict((s, current[s]) for s in fleet), [op for op in ops if op[0] in fleet])
        out = _claims.out_of_rotation(planned)
        if len(out) > self.max_unavailable:
            raise HAProxyError(
                "draining %s would leave %d servers of backend %s out of rotation here, more than max_unavailable=%d: "
                "%s; nothing was changed" % (", ".join(self.servers), len(out), self.backend, self.max_unavailable,
                                             ", ".join("%s (%s)" % (s, why) for s, why in sorted(out.items()))),
                kind="capacity")

    def _claims(self, change, *args):
        try:
            change(self.claims, self.backend, *args)
        except (OSError, _claims.ClaimsError) as exc:
            raise HAProxyError("could not record this run's claims on its servers in %s: %s" % (self.claims, exc),
                               kind="claims")

    def _command(self, server, what, value):
        if what == "weight":
            return "set server %s/%s weight %d" % (self.backend, server, value)
        return "set server %s/%s state %s" % (self.backend, server, value)

    def _verify(self, after, state, ops):
        wrong = []
        for server, what, value in ops:
            got = after[server]["admin_state"] if what == "state" else after[server]["weight"]
            if got != value:
                why = ""
                bits = after[server].get("admin_bits") or 0
                if bits & (ADMF_IMAINT | ADMF_IDRAIN):
                    why = " (inherited from a tracked server: change that server instead)"
                elif bits & ADMF_RMAINT:
                    why = " (HAProxy cannot resolve its address)"
                wrong.append("%s %s is %s, not %s%s" % (server, what, got, value, why))
        if wrong:
            raise HAProxyError("HAProxy accepted the commands but: %s" % "; ".join(wrong), kind="not_applied",
                               result={"changed": True})

    def _wait_drained(self, timeout, shutdown_sessions, result):
        start = self.clock()
        deadline = start + float(timeout)
        killed = {}
        while True:
            now_servers = self.read()
            busy = dict((s, now_servers[s]["scur"]) for s in self.servers if now_servers[s]["scur"] > 0)
            if not busy:
                return {"waited": round(self.clock() - start, 3), "timed_out": bool(killed),
                        "shutdown": killed, "sessions_left": 0}
            if self.clock() >= deadline:
                if not shutdown_sessions or killed:
                    left = ", ".join("%s: %d" % (s, n) for s, n in sorted(busy.items()))
                    msg = ("drain timeout: after %ss these servers of %s still have current sessions (%s); "
                           "set shutdown_sessions=true to kill them at the timeout"
                           % (timeout, self.backend, left)) if not killed else (
                        "sessions still open after 'shutdown sessions' on %s: %s" % (self.backend, left))
                    partial = dict(result)
                    partial["drain"] = {"waited": round(self.clock() - start, 3), "timed_out": True,
                                        "shutdown": killed, "sessions_left": sum(busy.values())}
                    partial["servers"] = dict((s, public(now_servers[s])) for s in self.servers)
                    raise HAProxyError(msg, kind="drain_timeout", result=partial)
                for server, count in busy.items():
                    self.api.set_command("shutdown sessions server %s/%s" % (self.backend, server))
                    killed[server] = count
                # Killing is asynchronous inside HAProxy; give it a short grace.
                deadline = self.clock() + 10
            self.sleep(0.2)

    def _wait_healthy(self, timeout, left_maint, after, result):
        """Wait until each server is UP on a check that completed after the change.

        Servers that just left maintenance show HAProxy's optimistic UP with
        the pre-maintenance check result, so for them a completed check must
        be observed: check health above rise (a passing check), a different
        check duration/description, a failed-check counter that moved, or the
        in-progress bit seen set and then cleared.
        """
        start = self.clock()
        deadline = start + float(timeout)
        base = dict((s, after[s]) for s in self.servers)
        fresh = dict((s, s not in left_maint) for s in self.servers)
        seen_running = dict((s, False) for s in self.servers)
        fast = any(base[s]["check_fall"] <= 1 for s in left_maint)
        while True:
            cur = self.read()
            pending = {}
            for s in self.servers:
                info, b = cur[s], base[s]
                cstate = info.get("check_state") or 0
                if cstate & CHK_ST_INPROGRESS:
                    seen_running[s] = True
                elif seen_running[s]:
                    fresh[s] = True
                if (info["check_health"] > b["check_health"] or info["chkfail"] != b["chkfail"]
                        or info["chkdown"] != b["chkdown"] or info["check_duration"] != b["check_duration"]
                        or info["last_chk"] != b["last_chk"]):
                    fresh[s] = True
                reason = self._unhealthy_reason(s, info, fresh[s])
                if reason:
                    pending[s] = reason
            if not pending:
                return {"waited": round(self.clock() - start, 3)}
            if self.clock() >= deadline:
                partial = dict(result)
                partial["servers"] = dict((s, public(cur[s])) for s in self.servers)
                raise HAProxyError(
                    "health timeout: after %ss these servers of %s are not healthy: %s"
                    % (timeout, self.backend, "; ".join("%s (%s)" % (s, r) for s, r in sorted(pending.items()))),
                    kind="health_timeout", result=partial)
            self.sleep(0.05 if fast else 0.2)

    def _unhealthy_reason(self, server, info, fresh):
        status = info["status"] or ""
        cstate = info.get("check_state")
        no_check = status == "no check" or (
            cstate is not None and not cstate & CHK_ST_CONFIGURED and not info["check_status"])
        if info["admin_state"] != "ready":
            return "admin state %s" % info["admin_state"]
        if no_check:
            if status.startswith("DOWN"):
                return "status %s" % status
            msg = "server %s has no health check: HAProxy cannot confirm it is healthy" % server
            if msg not in self.warnings:
                self.warnings.append(msg)
            return None
        desc = info.get("check_desc") or info.get("last_chk") or ""
        detail = "status %s, check %s%s" % (status, info["check_status"] or "-", (": " + desc) if desc else "")
        if status != "UP":
            return detail
        if info["check_status"] not in PASSING_CHECKS:
            return detail
        if not fresh:
            return "no health check has completed since it left maintenance yet (%s)" % detail
        return None


# The probe option of haproxy_server and haproxy_info (docs: doc_fragments/haproxy_probe.py).
PROBE_SPEC = dict(type='dict', options=dict(
    urls=dict(type='list', elements='str', required=True),
    rise=dict(type='int', default=2),
    interval=dict(type='float', default=0.25),
    deadline=dict(type='float', default=60),
    timeout=dict(type='float', default=5),
))


def run_probe(probe, check=None):
    """The checks of a module's ``probe`` option from this host, URL credentials redacted."""
    check = check or check_urls
    # The spec's defaults for what the caller left out (a module fills them in itself).
    settings = dict((key, probe[key] if probe.get(key) is not None else spec['default'])
                    for key, spec in PROBE_SPEC['options'].items() if key != 'urls')
    try:
        report = check(probe['urls'], **settings)
    except HealthError as exc:
        raise HAProxyError("probe: %s" % redact_url(str(exc)), kind="bad_input")
    # Health URLs may carry user:password@; the result is printed when a task fails.
    return redact(report)


def probe_before_ready(api, backend, servers, probe, check=None):
    """Before a ready: every URL of ``probe`` answers healthy from this host,
    where HAProxy probes from. Unknown names fail first; an unhealthy URL
    raises HAProxyError (kind ``unhealthy``) with the probe's report under
    ``probe``, and nothing has been changed. Returns the report, its URLs'
    credentials redacted."""
    ServerControl(api, backend, servers).read()
    report = run_probe(probe, check)
    if report["unhealthy"]:
        raise HAProxyError("not readied: unhealthy as probed from this host: %s" % report["msg"],
                           kind="unhealthy", result={"changed": False, "probe": report})
    return report


def hand_over(api, backend, servers, then_drain, run_args=None, drain_args=None, control_args=None, check_mode=False,
              want_diff=False, clock=time.monotonic, sleep=time.sleep):
    """Ready ``servers`` and, once they are healthy, drain ``then_drain``: a rolling
    update hands over from one batch to the next with one call to this balancer.
    With ``run_args['state']`` None the first part only sets weights (a canary's
    weights restored after its analysis), then drains.

    The drain starts only after the ready (and its health wait) succeeded here,
    so this balancer never has both batches out of rotation at once; a failed
    ready drains nothing. Returns (result, warnings): the ready's result with
    ``then_drain`` (the drain's result plus its ``seconds``). A failing drain
    raises HAProxyError whose result is the ready's plus ``then_drain.failed``.
    """
    run_args = dict({"state": "ready"}, **(run_args or {}))
    if run_args["state"] not in ("ready", None):
        raise HAProxyError("then_drain needs state=ready or no state, not state=%s" % run_args["state"],
                           kind="bad_input")
    # Weights only, a server may be re-weighted and then drained (the canary's
    # weights restored on every server, then the next batch drained).
    overlap = sorted(set(servers) & set(then_drain or [])) if run_args["state"] else []
    if overlap:
        raise HAProxyError("then_drain names servers that are readied in the same call: %s" % ", ".join(overlap),
                           kind="bad_input")
    readied = ServerControl(api, backend, servers, clock, sleep, **(control_args or {}))
    drained = ServerControl(api, backend, then_drain, clock, sleep, **(control_args or {}))
    # Unknown names fail here, before the ready changes anything.
    drained.read()
    result = readied.run(check_mode=check_mode, want_diff=want_diff, **run_args)
    start = clock()
    try:
        part = drained.run(state="drain", check_mode=check_mode, **(drain_args or {}))
    except HAProxyError as exc:
        part = dict(exc.result, failed=True, msg=exc.msg, seconds=round(clock() - start, 3))
        exc.result = dict(result, changed=result["changed"] or bool(exc.result.get("changed")), then_drain=part)
        exc.msg = "%s %s; then draining %s failed: %s" % ("readied" if run_args["state"] else "re-weighted",
                                                          ", ".join(servers), ", ".join(then_drain), exc.msg)
        exc.args = (exc.msg,)
        raise
    part["seconds"] = round(clock() - start, 3)
    result["then_drain"] = part
    result["changed"] = result["changed"] or part["changed"]
    return result, readied.warnings + drained.warnings
