# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers of the ssh scenario: run the collection's playbooks over SSH (the
inventory molecule/ssh/sshd.yml wrote in .build/ssh/) as the unprivileged
user `deploy` with become through sudo, and read the fleet's real state from
the containers. Every wait is bounded."""
import json
import os
import re
import subprocess
import sys
import time

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(REPO, "molecule", "shared", "files"))
from fleet_test import (  # noqa: E402  pylint: disable=wrong-import-position,unused-import
    Load, ansible_env, build_release, capacity_monitor, docker, haproxy_state, version_of)

SSH_DIR = os.path.join(REPO, ".build", "ssh")
INVENTORY = os.path.join(SSH_DIR, "inventory.yml")
APPS = ["ssh-app1", "ssh-app2", "ssh-app3"]
BALANCERS = ["ssh-lb1"]
HOSTS = BALANCERS + APPS


def ssh_env():
    """ansible_env() with host key checking on: the inventory's known_hosts holds every host's key."""
    env = ansible_env()
    # Plain output to read (molecule's verifier environment forces colour).
    env.update(ANSIBLE_HOST_KEY_CHECKING="true", ANSIBLE_FORCE_COLOR="false", ANSIBLE_NOCOLOR="1", PY_COLORS="0")
    return env


def inventory():
    with open(INVENTORY, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def run_playbook(name, *extra, timeout=600, control_dir=None):
    """ansible-playbook grayrelease.canary.NAME over SSH; .seconds is its wall time.
    A fresh control_dir makes the run open its own SSH connections (none reused from an earlier run)."""
    cmd = ["ansible-playbook", "-i", INVENTORY, "grayrelease.canary.%s" % name] + list(extra)
    if control_dir:
        cmd += ["-e", "ansible_control_path_dir=%s" % control_dir]
    t0 = time.monotonic()
    res = subprocess.run(cmd, check=False, env=ssh_env(), capture_output=True, text=True, timeout=timeout)
    res.seconds = round(time.monotonic() - t0, 1)
    print(res.stdout[-5000:])
    print(res.stderr[-2000:])
    return res


def ssh_logins(host, user="deploy"):
    """Accepted SSH logins of `user` in the host's sshd journal so far."""
    out = docker("exec", host, "journalctl", "-u", "ssh", "--no-pager", "-o", "cat", timeout=30).stdout
    return len(re.findall(r"^Accepted publickey for %s from " % re.escape(user), out, re.M))


def releases_on(host):
    return sorted(docker("exec", host, "ls", "/opt/demoapp/releases").stdout.split())


def read_report(directory):
    with open(os.path.join(str(directory), "report.json"), encoding="utf-8") as handle:
        return json.load(handle)


def assert_fleet_serving(version):
    for host in APPS:
        assert version_of(host) == version, "%s runs %s, expected %s" % (host, version_of(host), version)
        assert docker("exec", host, "systemctl", "is-active", "demoapp", check=False).stdout.strip() == "active"
    for lb in BALANCERS:
        state = haproxy_state(lb)
        for host in APPS:
            server = state[host]
            assert server["admin_state"] == "ready" and server["status"] == "UP", (lb, host, server)
            assert server["weight"] == server["initial_weight"], (lb, host, server)


def record(name, **figures):
    """Append figures to .build/ssh-measurements.jsonl (for closing notes)."""
    path = os.path.join(REPO, ".build", "ssh-measurements.jsonl")
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(dict(figures, test=name, time=time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                            time.gmtime()))) + "\n")


@pytest.fixture(scope="session")
def report_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ssh-reports")
