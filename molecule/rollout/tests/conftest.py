"""Helpers for the rollout scenario: run playbooks against the local fleet and
read its real state (release links, HAProxy runtime state) from the containers."""
import json
import os
import subprocess
import sys
import time

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(REPO, "molecule", "shared", "files"))
from fleet_test import (  # noqa: E402  pylint: disable=wrong-import-position,unused-import
    HAPROXY_STAT, Load, ansible_env, capacity_monitor, docker, haproxy_state, path_exists, run_timed, version_of)

INVENTORY = os.path.join(REPO, "inventory", "local-fleet", "hosts.yml")
APPS = ["app%d" % i for i in range(1, 7)]
BALANCERS = ["lb1", "lb2"]


def releases_on(host):
    return sorted(docker("exec", host, "ls", "/opt/demoapp/releases").stdout.split())


def run_playbook(name, *extra, timeout=900, background=False):
    cmd = ["ansible-playbook", "-i", INVENTORY, "grayrelease.canary.%s" % name] + list(extra)
    if background:
        return subprocess.Popen(cmd, env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    return run_timed(cmd, timeout)


def build_release(version, *flags):
    subprocess.run([os.path.join(REPO, "scripts", "build-release.sh"), version] + list(flags), check=True,
                   capture_output=True, text=True)
    return os.path.join(REPO, "dist", "demoapp-%s.tar.gz" % version)


def mixed_load(rate=30, duration=600):
    """Fast requests plus a steady 3 s request every 2 s, from inside lb1
    against its own HAProxy: only a real drain keeps the slow ones alive."""
    return Load("lb1", rate=rate, duration=duration, name="rollout-load", slow_rate=0.5, slow_seconds=3)


class CapacityWatch(object):
    """capacity_monitor on every balancer for the length of a rollout."""

    def __init__(self, duration=600):
        self.monitors = dict((lb, capacity_monitor(lb, duration=duration, name="rollout-capmon")) for lb in BALANCERS)

    def stop(self):
        return dict((lb, monitor.stop()) for lb, monitor in self.monitors.items())


def assert_capacity(watch, allowed):
    """Never more servers out of rotation than allowed, rollback included, and none left out."""
    for lb, seen in watch.items():
        assert seen["samples"] > 50, (lb, seen)
        assert seen["max_out"] <= allowed, "%s: %d servers out at once (%s at %s s), allowed %d" % (
            lb, seen["max_out"], seen["max_out_servers"], seen["max_out_at"], allowed)
        assert seen["final_out"] == [], "%s: left out of rotation: %s" % (lb, seen["final_out"])


@pytest.fixture(scope="session")
def report_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("canary-reports")


def record(name, **figures):
    """Append figures to .build/rollout-measurements.jsonl (for closing notes)."""
    path = os.path.join(REPO, ".build", "rollout-measurements.jsonl")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(dict(figures, test=name, time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))) + "\n")


def read_report(directory):
    with open(os.path.join(str(directory), "report.json")) as fh:
        return json.load(fh)


def haproxy_command(balancer, command):
    """One runtime API command on a balancer's admin socket (as an operator would)."""
    code = ("import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock')\n"
            "s.sendall(sys.argv[1].encode() + b'\\n'); print(s.recv(65536).decode())\n")
    return docker("exec", "-i", balancer, "python3", "-c", code, command).stdout


def pytest_collection_modifyitems(items):
    """The README's first rollout (molecule/default/tests, run here as well:
    molecule.yml) leaves the fleet on the README's version, and the rollout
    files start from v1: it runs last. The default scenario's fleet checks
    (v1 everywhere, nothing rolled yet) keep their place, first."""
    items.sort(key=lambda item: os.path.basename(str(item.fspath)) == "test_readme_first_rollout.py")
