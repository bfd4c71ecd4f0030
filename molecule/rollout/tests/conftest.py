"""Helpers for the rollout scenario: run playbooks against the local fleet and
read its real state (release links, HAProxy runtime state) from the containers."""
import json
import os
import subprocess
import time

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
INVENTORY = os.path.join(REPO, "inventory", "local-fleet", "hosts.yml")
APPS = ["app%d" % i for i in range(1, 7)]
BALANCERS = ["lb1", "lb2"]
# Reads both `show stat` and `show servers state` so admin state (drain/maint)
# and weights are checked as HAProxy itself reports them.
HAPROXY_STATE = r'''
import csv, json, socket
def ask(cmd):
    s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect("/run/haproxy/admin.sock")
    s.sendall(cmd.encode() + b"\n"); out = b""
    while True:
        c = s.recv(65536)
        if not c: break
        out += c
    s.close(); return out.decode()
stat = {r["svname"]: r for r in csv.DictReader(ask("show stat").lstrip("# ").splitlines()) if r["pxname"] == "demoapp"}
lines = [l.split() for l in ask("show servers state demoapp").splitlines()[2:] if l.strip() and not l.startswith("#")]
out = {}
for f in lines:
    admin = int(f[6])
    out[f[3]] = {"status": stat[f[3]]["status"], "admin": "maint" if admin & 0x27 else ("drain" if admin & 0x18 else "ready"),
                 "weight": int(f[7]), "initial_weight": int(f[8]), "req_tot": int(stat[f[3]]["req_tot"] or 0)}
print(json.dumps(out))
'''


def docker(*args, check=True, input_text=None, timeout=60):
    return subprocess.run(["docker"] + list(args), check=check, capture_output=True, text=True,
                          input=input_text, timeout=timeout)


def version_of(host):
    res = docker("exec", host, "readlink", "/opt/demoapp/current", check=False)
    return os.path.basename(res.stdout.strip()) if res.returncode == 0 else None


def releases_on(host):
    return sorted(docker("exec", host, "ls", "/opt/demoapp/releases").stdout.split())


def haproxy_state(balancer):
    return json.loads(docker("exec", "-i", balancer, "python3", "-", input_text=HAPROXY_STATE).stdout)


def ansible_env():
    env = dict(os.environ)
    # molecule's own ansible.cfg points at its generated inventory; the
    # playbooks here run the way a user runs them, with the repo's inventory.
    for key in ("ANSIBLE_CONFIG", "ANSIBLE_INVENTORY", "ANSIBLE_ROLES_PATH", "ANSIBLE_LIBRARY",
                "ANSIBLE_FILTER_PLUGINS", "ANSIBLE_CALLBACK_PLUGINS"):
        env.pop(key, None)
    env.update(ANSIBLE_FORKS="10", ANSIBLE_HOST_KEY_CHECKING="false", ANSIBLE_NOCOLOR="1",
               ANSIBLE_DISPLAY_SKIPPED_HOSTS="false", ANSIBLE_PYTHON_INTERPRETER="auto_silent",
               ANSIBLE_PIPELINING="true")
    return env


def run_playbook(name, *extra, timeout=900, background=False):
    cmd = ["ansible-playbook", "-i", INVENTORY, "grayrelease.canary.%s" % name] + list(extra)
    if background:
        return subprocess.Popen(cmd, env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    t0 = time.monotonic()
    res = subprocess.run(cmd, check=False, env=ansible_env(), capture_output=True, text=True, timeout=timeout)
    res.seconds = round(time.monotonic() - t0, 1)
    print(res.stdout[-6000:])
    print(res.stderr[-3000:])
    return res


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
