# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Several real HAProxy balancers on loopback, an inventory for them, and a
runner for ansible-playbook with the JSON callback.

Shared by tests/unit/plugins/roles/test_balancer_parallel.py and
bench/bench_balancers.py. Each balancer is an ``HAProxyLab`` from
_haproxy_fixture.py (own config, admin sockets, small HTTP servers on
127.0.0.1); the inventory reaches them with ansible_connection=local and a
per-host ``canary_haproxy_socket``. Loopback only, every wait bounded.
"""

from __future__ import annotations

import json
import shutil
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _haproxy_fixture import MISSING_MSG, HAProxyLab, find_haproxy  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
COLLECTIONS = os.path.join(REPO, ".build", "collections")
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")


def open_fleet(count):
    """A module fixture's body: a BalancerFleet of ``count`` balancers, closed
    afterwards; the test is skipped when haproxy is not installed."""
    if find_haproxy() is None:
        pytest.skip(MISSING_MSG)
    fleet = BalancerFleet(count)
    try:
        yield fleet
    finally:
        fleet.close()


class BalancerFleet(object):
    """``count`` HAProxy labs named lb1..lbN, plus a temp dir for inventories and plays."""

    def __init__(self, count=4, inter_ms=200):
        binary = find_haproxy()
        if binary is None:
            raise RuntimeError("haproxy not installed")
        self.tmp = tempfile.mkdtemp(prefix="gr-balancers-")
        self.labs = {}
        try:
            for i in range(1, count + 1):
                self.labs["lb%d" % i] = HAProxyLab(binary, inter_ms=inter_ms)
        except Exception:
            self.close()
            raise
        self.names = sorted(self.labs)

    # --- state, read independently of the code under test -------------------

    def state(self, name):
        """server -> (admin_state, weight, status) from raw 'show servers state' / 'show stat'."""
        lab = self.labs[name]
        out = {}
        header = None
        for line in lab.raw("show servers state web").splitlines():
            if line.startswith("#"):
                header = line[1:].split()
                continue
            fields = line.split()
            if header is None or len(fields) < len(header) - 2:
                continue
            row = dict(zip(header, fields))
            bits = int(row["srv_admin_state"])
            admin = "maint" if bits & 0x27 else ("drain" if bits & 0x18 else "ready")
            out[row["srv_name"]] = (admin, int(row["srv_uweight"]))
        status = lab.stat()
        return dict((s, (a, w, status.get(s))) for s, (a, w) in out.items())

    def reset(self):
        """Every server ready at its configured weight, on every balancer (raw commands)."""
        for lab in self.labs.values():
            for app in lab.apps.values():
                app.release.clear()
            for server, weight in HAProxyLab.SERVERS:
                lab.raw("set server web/%s weight %d" % (server, weight))
                lab.raw("set server web/%s state ready" % server)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all(all(self.labs[n].stat().get(s, "").startswith("UP") for s in ("s1", "s2", "s3"))
                   for n in self.names):
                return
            time.sleep(0.05)
        raise RuntimeError("servers not UP again after reset")

    def hold_sessions(self, server, seconds, names=None):
        """A request of ``seconds`` on ``server`` through each balancer; returns the threads."""
        return [self.labs[n].hold_session(server, seconds)[0] for n in (names or self.names)]

    def hold_sessions_until_drained(self, server, after, limit=60.0):
        """A request on ``server`` through each balancer that ends ``after`` seconds
        after that balancer has put ``server`` in drain (at the latest ``limit`` s).

        A drain test then sees a wait of about ``after`` however long
        ansible-playbook takes to reach the drain on a busy machine; a fixed
        hold races it (the clean-clone CI run's hold of 8 s ended first).
        Returns the threads: the held requests' and the watcher's.
        """
        names = list(self.names)
        held = self.hold_sessions(server, limit, names)

        def watch():
            deadline = time.monotonic() + limit
            waiting = set(names)
            while waiting and time.monotonic() < deadline:
                for name in sorted(waiting):
                    if self.state(name)[server][0] == "drain":
                        waiting.discard(name)
                        threading.Timer(after, self.labs[name].apps[server].release.set).start()
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        return held + [watcher]

    # --- ansible -------------------------------------------------------------

    def inventory(self, sockets=None, only=None):
        """Inventory file: group balancers with lb1..lbN, local connection, own socket each.

        ``sockets`` overrides a balancer's socket (name -> path), to break one;
        ``only`` lists the balancers to put in the group (default all).
        """
        sockets = sockets or {}
        lines = ["[balancers]"]
        for name in only or self.names:
            lines.append("%s ansible_connection=local canary_haproxy_socket=%s"
                         % (name, sockets.get(name, self.labs[name].admin)))
        lines += ["", "[all:vars]", "ansible_python_interpreter=%s" % sys.executable, "canary_backend=web",
                  "ansible_pipelining=true", "",
                  "[local]", "localhost ansible_connection=local"]
        path = os.path.join(self.tmp, "inventory-%d.ini" % int(time.monotonic() * 1e6))
        with open(path, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        return path

    def write(self, name, data):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as fh:
            json.dump(data, fh, indent=1)
        return path

    def stale_socket(self):
        """A unix socket file with nothing listening: connecting is refused."""
        path = os.path.join(self.tmp, "stale-%d.sock" % int(time.monotonic() * 1e6))
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
        sock.close()
        return path

    def close(self):
        for lab in self.labs.values():
            lab.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def ansible_env(extra=None):
    env = dict(os.environ)
    for key in ("ANSIBLE_CONFIG", "ANSIBLE_INVENTORY", "ANSIBLE_ROLES_PATH"):
        env.pop(key, None)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="true",
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_HOST_KEY_CHECKING="false",
        ANSIBLE_FORKS="10", ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="false",
        ANSIBLE_DEPRECATION_WARNINGS="false",
    )
    env.update(extra or {})
    return env


class PlaybookRun(object):
    """Outcome of one ansible-playbook run with the JSON callback."""

    def __init__(self, proc, wall):
        self.rc = proc.returncode
        self.wall = wall
        self.stderr = proc.stderr
        self.stdout = proc.stdout
        start = proc.stdout.find("{")
        try:
            self.data = json.loads(proc.stdout[start:]) if start >= 0 else {}
        except ValueError:  # another stdout callback (debugging)
            self.data = {}
        self.stats = self.data.get("stats", {})

    def tasks(self):
        for play in self.data.get("plays", []):
            yield from play.get("tasks", [])

    def results(self, name_part):
        """host -> result of the last task whose name contains ``name_part`` (skipped ones ignored)."""
        out = {}
        for task in self.tasks():
            if name_part in task["task"]["name"]:
                for host, res in task["hosts"].items():
                    if not res.get("skipped"):
                        out[host] = res
        return out

    def failures(self):
        """host -> msg of its failing (not ignored, not rescued) task."""
        out = {}
        for task in self.tasks():
            for host, res in task["hosts"].items():
                if (res.get("failed") or res.get("unreachable")) and not res.get("_ansible_ignore_errors"):
                    out[host] = res.get("msg", "")
        return out

    def marker_seconds(self, first="BENCH start", last="BENCH end"):
        """Seconds between the end of the task named ``first`` and the start of ``last``."""
        def ts(value):
            return datetime.fromisoformat(value.rstrip("Z")).timestamp()
        t0 = t1 = None
        for task in self.tasks():
            name, dur = task["task"]["name"], task["task"].get("duration", {})
            if name == first:
                t0 = ts(dur["end"])
            elif name == last:
                t1 = ts(dur["start"])
        if t0 is None or t1 is None:
            raise AssertionError("markers %r/%r not found; rc=%s stderr=%s" % (first, last, self.rc, self.stderr[-2000:]))
        return t1 - t0

    def explain(self):
        return "rc=%s failures=%s stats=%s stderr=%s" % (self.rc, self.failures(), self.stats, self.stderr[-1500:])


def run_playbook(inventory, playbook, args=(), timeout=300, env=None):
    cmd = [ANSIBLE_PLAYBOOK, "-i", inventory, playbook] + list(args)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, env=ansible_env(env), cwd=REPO)
    return PlaybookRun(proc, time.monotonic() - t0)


def role_play(hosts, action, servers, extra_vars=None, name=None):
    """One play applying grayrelease.canary.balancer once (a dict for a JSON playbook)."""
    role_vars = {"balancer_action": action, "balancer_servers": servers}
    role_vars.update(extra_vars or {})
    return {
        "name": name or "%s %s" % (action, ",".join(servers)),
        "hosts": hosts,
        "gather_facts": False,
        "tasks": [{"name": "Role %s" % action,
                   "ansible.builtin.include_role": {"name": "grayrelease.canary.balancer"},
                   "vars": role_vars}],
    }
