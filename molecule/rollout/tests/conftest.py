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
    HAPROXY_STAT, ansible_env, docker, haproxy_state, run_timed, version_of)

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


class Load(object):
    """Bounded client load from inside lb1 against its own HAProxy."""

    def __init__(self, rate=30, duration=600):
        script = open(os.path.join(REPO, "scripts", "load.py")).read()
        docker("exec", "-i", "lb1", "sh", "-c", "cat > /tmp/load.py", input_text=script)
        docker("exec", "-d", "lb1", "python3", "/tmp/load.py", "--url", "http://127.0.0.1/", "--rate", str(rate),
               "--duration", str(duration), "--stop-file", "/tmp/load.stop", "--out", "/tmp/load.json")

    def stop(self, wait=30):
        docker("exec", "lb1", "touch", "/tmp/load.stop")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            res = docker("exec", "lb1", "cat", "/tmp/load.json", check=False)
            if res.returncode == 0 and res.stdout.strip():
                docker("exec", "lb1", "rm", "-f", "/tmp/load.json", "/tmp/load.stop")
                return json.loads(res.stdout)
            time.sleep(0.5)
        raise AssertionError("load client did not report within %s s" % wait)


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
