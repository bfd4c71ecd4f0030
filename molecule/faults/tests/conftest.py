"""Helpers for the faults scenario: run playbooks against the flt-* fleet
(molecule/faults/inventory/hosts.yml), lose a host in the middle (docker pause), and
read the fleet's real state from the containers. Every wait is bounded."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIO = os.path.dirname(HERE)
REPO = os.path.abspath(os.path.join(SCENARIO, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "molecule", "shared", "files"))
from fleet_test import (  # noqa: E402  pylint: disable=wrong-import-position,unused-import
    HAPROXY_STAT, Load, ansible_env, docker, haproxy_state, path_exists, pause_container, reseed_fleet, run_timed,
    version_of)
from fleet_test import capacity_monitor as shared_capacity_monitor  # noqa: E402  pylint: disable=wrong-import-position

INVENTORY = os.path.join(SCENARIO, "inventory", "hosts.yml")
APPS = ["flt-app%d" % i for i in range(1, 5)]
BALANCERS = ["flt-lb1", "flt-lb2"]
LOCK = "/var/lib/grayrelease-canary/demoapp.lock"
MATRIX = os.path.join(REPO, ".build", "fault-matrix.jsonl")


def service_active(host):
    return docker("exec", host, "systemctl", "is-active", "demoapp", check=False, timeout=10).stdout.strip() == "active"


def lock_present(balancer):
    return path_exists(balancer, LOCK)


def haproxy_command(balancer, command):
    """One runtime API command on a balancer's admin socket, as an operator
    would type it into socat (the fleet has no socat: python3 does it)."""
    code = ("import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect('/run/haproxy/admin.sock')\n"
            "s.sendall(sys.argv[1].encode() + b'\\n'); out = b''\n"
            "while True:\n"
            "    chunk = s.recv(65536)\n"
            "    if not chunk:\n"
            "        break\n"
            "    out += chunk\n"
            "sys.stdout.write(out.decode())\n")
    return docker("exec", balancer, "python3", "-c", code, command, timeout=15).stdout


def operator_sets(balancers, server, state):
    """An operator's `set server demoapp/SERVER state STATE` on each of `balancers`."""
    for balancer in balancers:
        answer = haproxy_command(balancer, "set server demoapp/%s state %s" % (server, state))
        assert not answer.strip(), (balancer, server, state, answer)
        assert haproxy_state(balancer)[server]["admin_state"] == state, (balancer, server, state)


def user_weights(balancer, backend="demoapp"):
    """server -> (weight set through the runtime API (srv_uweight), initial weight) from
    `show servers state`: the weight an operator sets, whatever a drain or maintenance
    makes of the effective weight `show stat` shows."""
    weights = {}
    for line in haproxy_command(balancer, "show servers state %s" % backend).splitlines()[1:]:
        fields = line.split()
        if len(fields) > 8 and not fields[0].startswith("#"):
            weights[fields[3]] = (int(fields[7]), int(fields[8]))
    assert sorted(weights) == APPS, (balancer, weights)
    return weights


def service_start(host):
    """(MainPID, ActiveEnterTimestamp) of demoapp: changes with every restart."""
    out = docker("exec", host, "systemctl", "show", "-p", "MainPID", "-p", "ActiveEnterTimestamp", "demoapp",
                 timeout=10).stdout
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert props.get("MainPID", "0") != "0", (host, out)
    return props["MainPID"], props.get("ActiveEnterTimestamp")


def releases_on(host):
    return sorted(docker("exec", host, "ls", "/opt/demoapp/releases", timeout=10).stdout.split())


def fleet_snapshot():
    """host -> (version, (MainPID, ActiveEnterTimestamp), releases): what a run that changes
    nothing leaves exactly as it was."""
    return dict((h, (version_of(h), service_start(h), releases_on(h))) for h in APPS)


def run_playbook(playbook, *extra, timeout=600):
    cmd = ["ansible-playbook", "-i", INVENTORY, playbook] + list(extra)
    return run_timed(cmd, timeout, stdout_tail=5000, stderr_tail=2000)


def progress_env():
    # The rollout's own progress lines ("HALTED (...)", rollback groups) in
    # the output, each stamped by the reader: the timeline of a case.
    return dict(ansible_env(), ANSIBLE_CALLBACKS_ENABLED="grayrelease.canary.rollout_progress")


class Background(object):
    """ansible-playbook in the background; every output line kept with its time."""

    def __init__(self, playbook, *extra):
        cmd = ["ansible-playbook", "-i", INVENTORY, playbook] + list(extra)
        self.started = time.monotonic()
        self.started_epoch = time.time()
        self.proc = subprocess.Popen(cmd, env=progress_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait(self, timeout, tail=150):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
            raise AssertionError("ansible-playbook still running after %s s; stopped it" % timeout)
        finally:
            self.reader.join(timeout=10)
            self.ended = time.monotonic()
            print("\n".join(line for dummy, line in self.lines[-tail:]))
        return self.proc.returncode

    def text(self):
        return "\n".join(line for dummy, line in self.lines)

    def kill(self):
        """SIGKILL the whole ansible-playbook process group: a controller that dies without cleaning up."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.reader.join(timeout=10)
        self.ended = time.monotonic()

    def first_line_after(self, since, *words):
        for stamp, line in self.lines:
            if stamp >= since and all(w in line for w in words):
                return stamp, line
        return None, None

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)


def wait_for(what, predicate, timeout, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out after %s s waiting for %s" % (timeout, what))


def mixed_load(container="flt-lb1", duration=300):
    """Fast 20 req/s plus slow 3 s requests at 1 req/s through the balancer."""
    return Load(container, rate=20, duration=duration, name="faults-load", slow_rate=1, slow_seconds=3)


def capacity_monitor(container, duration=300):
    return shared_capacity_monitor(container, duration=duration, name="faults-capmon")


def build_release(version, *knobs):
    subprocess.run([os.path.join(REPO, "scripts", "build-release.sh"), version, "--out",
                    os.path.join(REPO, "dist")] + list(knobs), check=True, capture_output=True, text=True,
                   timeout=120)
    return os.path.join(REPO, "dist", "demoapp-%s.tar.gz" % version)


def reseed():
    return reseed_fleet(APPS, BALANCERS)


def read_report(directory):
    with open(os.path.join(str(directory), "report.json")) as handle:
        return json.load(handle)


# One id per pytest session: scripts/fault-matrix.py shows the latest run's rows.
RUN_ID = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def record(case, **figures):
    os.makedirs(os.path.dirname(MATRIX), exist_ok=True)
    with open(MATRIX, "a") as handle:
        handle.write(json.dumps(dict(figures, case=case, run=RUN_ID,
                                     time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
                                sort_keys=True) + "\n")


# Docker now and then loses the output of a quick exec (moby/moby#27289,
# docker/docker-py#2042). Through community.docker.docker_api (flt-lb2,
# flt-app4) that is the `id -u && id -g` it runs before a file transfer, or
# the `mkdir` of the task's remote temporary directory (seen in a run beside
# the rollout scenario: the pre-staging on flt-app4 failed with it), and the
# task fails: a fault of the test fleet's transport, not one the case put
# there. Case.result() raises DockerExecOutputLost when a run met one, and
# such a case, and only such a case, is run once more.
LOST_UID_GID = "Error while determining user and group ID of current user in container"
LOST_TMPDIR = "failed to resolve remote temporary directory from ansible-tmp-"


def docker_exec_output_lost(text):
    """Did a run's output meet Docker losing an exec's output (the tmp-dir form: its command returned nothing)?"""
    return LOST_UID_GID in text or (LOST_TMPDIR in text and "returned empty string" in text)


class DockerExecOutputLost(Exception):
    pass


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.flaky(reruns=1, only_rerun=["DockerExecOutputLost"]))


def pytest_terminal_summary(terminalreporter):
    """The fault matrix of this run, after the test results (molecule verify shows it)."""
    res = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "fault-matrix.py"), "--run", RUN_ID,
                          MATRIX], capture_output=True, text=True, check=False, timeout=60)
    terminalreporter.write_sep("=", "fault matrix (%s)" % MATRIX)
    terminalreporter.write(res.stdout + res.stderr)


@pytest.fixture(scope="session")
def report_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("faults-reports")


@pytest.fixture(scope="session")
def artifact():
    return build_release("v2")


def assert_clean_balancers(held=None):
    """Every server ready, UP, at its initial weight on every balancer; but
    for the servers an operator set (`held`: balancer -> server -> (admin
    state, user weight) as the operator left them), which must still be
    exactly that."""
    held = held or {}
    for balancer in BALANCERS:
        state = haproxy_state(balancer)
        assert sorted(state) == APPS, (balancer, state)
        mine = held.get(balancer, {})
        weights = user_weights(balancer) if mine else {}
        for server, info in state.items():
            if server in mine:
                admin_state, weight = mine[server]
                assert (info["admin_state"], weights[server][0]) == (admin_state, weight), \
                    ("the operator's server was changed", balancer, server, info, weights[server], mine[server])
                continue
            assert info["admin_state"] == "ready", (balancer, server, info)
            assert info["status"] == "UP", (balancer, server, info)
            assert info["weight"] == info["initial_weight"], (balancer, server, info)
