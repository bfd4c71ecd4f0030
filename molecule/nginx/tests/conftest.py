# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers of the nginx scenario: run the collection's nginx modules on the ngx-* fleet
(inventory/hosts.yml) as a user does, and read the balancers' real state. Every wait is bounded."""
import hashlib
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIO = os.path.dirname(HERE)
REPO = os.path.abspath(os.path.join(SCENARIO, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "molecule", "shared", "files"))
from fleet_test import InContainer, ansible_env, docker  # noqa: E402  pylint: disable=wrong-import-position

INVENTORY = os.path.join(SCENARIO, "inventory", "hosts.yml")
APPS = ["ngx-app1", "ngx-app2", "ngx-app3"]
UPSTREAM_FILE = "/etc/nginx/grayrelease/demoapp.conf"
CANARY_LOG = "/var/log/nginx/canary.log"
LOAD = os.path.join(REPO, "scripts", "load.py")


def module(host, name, args, check=False, timeout=180):
    """One module run on one host (ad-hoc, JSON callback) -> its result dict (with 'failed' when it failed)."""
    env = ansible_env()
    env.update(ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json")
    cmd = ["ansible", "-i", INVENTORY, host, "-m", "grayrelease.canary.%s" % name, "-a", json.dumps(args)]
    if check:
        cmd.append("--check")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    try:
        return json.loads(res.stdout)["plays"][0]["tasks"][0]["hosts"][host]
    except (ValueError, KeyError, IndexError):
        raise AssertionError("no result from %s on %s: %s %s" % (name, host, res.stdout[-2000:], res.stderr[-2000:]))


def server(host, args, check=False):
    return module(host, "nginx_server", dict({"backend": "demoapp"}, **args), check=check)


def info(host):
    result = module(host, "nginx_info", {"backend": "demoapp", "access_log": CANARY_LOG})
    assert not result.get("failed"), result
    return result


def file_hash(host, path=UPSTREAM_FILE):
    return hashlib.sha256(docker("exec", host, "cat", path).stdout.encode()).hexdigest()


def nginx_pids(host):
    """Master and worker pids from ps: a reload changes the workers."""
    out = docker("exec", host, "ps", "-eo", "pid,args").stdout
    return sorted(line.split(None, 1)[0] for line in out.splitlines() if "nginx: " in line)


def curl_ok(host):
    res = docker("exec", host, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1/healthz",
                 check=False, timeout=20)
    return res.stdout.strip() == "200"


class Requests(InContainer):
    """scripts/load.py inside a balancer against its own nginx, bounded by count and time; result()
    waits until it ends by itself."""

    def __init__(self, container, count, rate=100, duration=120, name="ngxreq"):
        super(Requests, self).__init__(container, LOAD, name, "--url", "http://127.0.0.1/", "--rate", str(rate),
                                       "--duration", str(duration), "--max-requests", str(count))
        self.duration = duration

    def result(self):
        deadline = time.monotonic() + self.duration + 30
        while time.monotonic() < deadline:
            res = docker("exec", self.container, "cat", self.out, check=False)
            if res.returncode == 0 and res.stdout.strip():
                docker("exec", self.container, "rm", "-f", self.out, self.stop_file)
                return json.loads(res.stdout)
            time.sleep(0.5)
        return self.stop()
