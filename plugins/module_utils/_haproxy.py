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
import socket
import time

from ansible_collections.grayrelease.canary.plugins.module_utils._balancer import (
    BalancerError as HAProxyError,
    Control,
    hand_over as _hand_over,
    probe_before_ready as _probe_before_ready,
    validate_name,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._drivers import capabilities

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

PASSING_CHECKS = ("L4OK", "L6OK", "L7OK", "L7OKC")

# Counters returned by haproxy_info; an empty CSV cell (not applicable, e.g.
# hrsp_* on a TCP backend) becomes 0 so callers can subtract snapshots.
INFO_NUMBERS = (
    "req_tot", "hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx",
    "hrsp_other", "econ", "eresp", "rtime", "ttime", "qtime", "ctime", "scur",
    "smax", "stot", "weight", "chkfail", "chkdown", "lastchg", "downtime",
    "wretr", "wredis", "cli_abrt", "srv_abrt", "bin", "bout", "lbtot",
    "qcur", "rtime_max", "ttime_max", "rate",
)


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


class HAProxyDriver(object):
    """One backend of one HAProxy, over its runtime API (see _balancer.py for the interface)."""

    name = "haproxy"
    capabilities = dict(capabilities("haproxy"), shutdown_sessions=True)

    def __init__(self, api, backend):
        self.api = api
        self.backend = validate_name("backend", backend)

    def read(self):
        backends = snapshot(self.api)
        if self.backend not in backends:
            raise HAProxyError(
                "unknown backend %r; HAProxy on %s has backends with servers: %s"
                % (self.backend, self.api.spec, ", ".join(sorted(backends)) or "(none)"), kind="unknown_backend")
        return backends[self.backend]

    def require_writable(self):
        self.api.require_admin()

    def public(self, info):
        return public(info)

    def process(self):
        return self.api.process()

    def command(self, server, what, value):
        if what == "weight":
            return "set server %s/%s weight %d" % (self.backend, server, value)
        return "set server %s/%s state %s" % (self.backend, server, value)

    def apply(self, ops):
        """One runtime command per op, in order; a failure says what was applied before it."""
        applied = []
        try:
            for op in ops:
                self.api.set_command(self.command(*op))
                applied.append(op)
        except HAProxyError as exc:
            exc.result["changed"] = bool(applied)
            exc.msg = "%s (applied before the failure: %s)" % (
                exc.msg, ", ".join(self.command(*op) for op in applied) or "nothing")
            exc.args = (exc.msg,)
            raise
        return [self.command(*op) for op in ops]

    def verify(self, after, ops):
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

    def drain_state(self, servers):
        """Done when no drained server has a session left (HAProxy's scur)."""
        now = self.read()
        busy = dict((s, now[s]["scur"]) for s in servers if now[s]["scur"] > 0)
        return not busy, {"busy": busy}

    def shutdown_sessions(self, busy):
        for server in busy:
            self.api.set_command("shutdown sessions server %s/%s" % (self.backend, server))
        return dict(busy)

    def drain_timeout_message(self, timeout, evidence, killed):
        left = ", ".join("%s: %d" % (s, n) for s, n in sorted(evidence["busy"].items()))
        if killed:
            return "sessions still open after 'shutdown sessions' on %s: %s" % (self.backend, left)
        return ("drain timeout: after %ss these servers of %s still have current sessions (%s); "
                "set shutdown_sessions=true to kill them at the timeout" % (timeout, self.backend, left))

    def wait_healthy(self, control, timeout, left_maint, after, result):
        """Wait until each server is UP on a check that completed after the change.

        Servers that just left maintenance show HAProxy's optimistic UP with
        the pre-maintenance check result, so for them a completed check must
        be observed: check health above rise (a passing check), a different
        check duration/description, a failed-check counter that moved, or the
        in-progress bit seen set and then cleared.
        """
        start = control.clock()
        deadline = start + float(timeout)
        servers = control.servers
        base = dict((s, after[s]) for s in servers)
        fresh = dict((s, s not in left_maint) for s in servers)
        seen_running = dict((s, False) for s in servers)
        fast = any(base[s]["check_fall"] <= 1 for s in left_maint)
        while True:
            cur = control.read()
            pending = {}
            for s in servers:
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
                reason = self._unhealthy_reason(s, info, fresh[s], control.warnings)
                if reason:
                    pending[s] = reason
            if not pending:
                return {"waited": round(control.clock() - start, 3)}
            if control.clock() >= deadline:
                partial = dict(result)
                partial["servers"] = dict((s, public(cur[s])) for s in servers)
                raise HAProxyError(
                    "health timeout: after %ss these servers of %s are not healthy: %s"
                    % (timeout, self.backend, "; ".join("%s (%s)" % (s, r) for s, r in sorted(pending.items()))),
                    kind="health_timeout", result=partial)
            control.sleep(0.05 if fast else 0.2)

    @staticmethod
    def _unhealthy_reason(server, info, fresh, warnings):
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
            if msg not in warnings:
                warnings.append(msg)
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


class ServerControl(Control):
    """What haproxy_server does, without Ansible: the balancer Control over HAProxy's driver."""

    def __init__(self, api, backend, servers, clock=time.monotonic, sleep=time.sleep, **control_args):
        self.api = api
        super(ServerControl, self).__init__(HAProxyDriver(api, backend), servers, clock, sleep, **control_args)


def probe_before_ready(api, backend, servers, probe, check=None):
    """_balancer.probe_before_ready on this HAProxy's backend."""
    return _probe_before_ready(HAProxyDriver(api, backend), servers, probe, check)


def hand_over(api, backend, servers, then_drain, run_args=None, drain_args=None, control_args=None, check_mode=False,
              want_diff=False, clock=time.monotonic, sleep=time.sleep):
    """_balancer.hand_over on this HAProxy's backend."""
    def make_control(names):
        return ServerControl(api, backend, names, clock, sleep, **(control_args or {}))
    return _hand_over(make_control, servers, then_drain, run_args, drain_args, check_mode, want_diff, clock)
