"""Helpers for the routing scenario: the routing state set through
grayrelease.canary.haproxy_route (files/route.yml), rounds of thousands of
users (files/users_load.py inside rte-lb1) and HAProxy's own view."""
import importlib.util
import json
import os
import sys
import tempfile
import time

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIO = os.path.dirname(HERE)
REPO = os.path.abspath(os.path.join(SCENARIO, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "molecule", "shared", "files"))
from fleet_test import docker, run_timed  # noqa: E402  pylint: disable=wrong-import-position

INVENTORY = os.path.join(SCENARIO, "inventory", "hosts.yml")
ROUTE = os.path.join(SCENARIO, "files", "route.yml")
CLIENT = os.path.join(SCENARIO, "files", "users_load.py")
BALANCER = "rte-lb1"
STR_MAP = "/etc/haproxy/routing/demoapp.map"
NET_MAP = "/etc/haproxy/routing/demoapp.net.map"
MEASUREMENTS = os.path.join(REPO, ".build", "routing-measurements.jsonl")

with open(os.path.join(SCENARIO, "files", "routing.yml"), encoding="utf-8") as _handle:
    SPEC = yaml.safe_load(_handle)["routing_spec"]

# The collection's routing plan, loaded from its file (stdlib only): the test
# predicts every user's route with the same hash HAProxy computes.
_spec = importlib.util.spec_from_file_location("routing_plan", os.path.join(REPO, "plugins", "module_utils",
                                                                            "_routing.py"))
routing = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(routing)


def route(state="step", step=None, percent=None, spec=None, flags=()):
    """Run grayrelease.canary.haproxy_route on rte-lb1; (exit code, module result or None, seconds, output)."""
    extra = {"route_state": state}
    if step is not None:
        extra["route_step"] = step
    if percent is not None:
        extra["route_percent"] = percent
    if spec is not None:
        extra["route_spec"] = spec
    with tempfile.TemporaryDirectory() as tmp:
        extra["route_out"] = os.path.join(tmp, "result.json")
        res = run_timed(["ansible-playbook", "-i", INVENTORY, ROUTE, "-e", json.dumps(extra)] + list(flags), 120,
                        stdout_tail=1500, stderr_tail=1500)
        result = None
        if os.path.exists(extra["route_out"]):
            with open(extra["route_out"], encoding="utf-8") as handle:
                result = json.load(handle)
    return res.returncode, result, res.seconds, res.stdout + res.stderr


def put(container, path, text):
    docker("exec", "-i", container, "sh", "-c", "cat > %s" % path, input_text=text)


def read(container, path):
    return docker("exec", container, "cat", path, timeout=15).stdout


class Users(object):
    """A population of users with their cookie jar in rte-lb1."""

    def __init__(self, name, users):
        self.name, self.users = name, users
        self.jar = "/tmp/%s.jar.json" % name
        put(BALANCER, "/tmp/%s.users.json" % name, json.dumps(users))
        docker("exec", BALANCER, "rm", "-f", self.jar)

    def args(self, out, requests, port, pause, duration, path="/version"):
        return ["python3", "/tmp/users_load.py", "--users", "/tmp/%s.users.json" % self.name, "--jar", self.jar,
                "--requests", str(requests), "--port", str(port), "--pause", str(pause), "--duration",
                str(duration), "--path", path, "--out", out]

    def round(self, requests=2, port=80, pause=0.0, duration=120, path="/version"):
        """Every user sends `requests` requests (GET `path`); returns the client's summary."""
        out = "/tmp/%s.round.json" % self.name
        docker("exec", BALANCER, "rm", "-f", out)
        docker(*(["exec", BALANCER] + self.args(out, requests, port, pause, duration, path)), timeout=duration + 30)
        return json.loads(read(BALANCER, out))

    def start(self, requests, pause, duration=120):
        """The same in the background; finish() returns the summary."""
        self.bg_out = "/tmp/%s.bg.json" % self.name
        docker("exec", BALANCER, "rm", "-f", self.bg_out)
        docker(*(["exec", "-d", BALANCER] + self.args(self.bg_out, requests, 80, pause, duration)))
        self.bg_deadline = time.monotonic() + duration + 30

    def finish(self):
        while time.monotonic() < self.bg_deadline:
            res = docker("exec", BALANCER, "cat", self.bg_out, check=False)
            if res.returncode == 0 and res.stdout.strip():
                return json.loads(res.stdout)
            time.sleep(0.5)
        raise AssertionError("the background round of %s did not finish" % self.name)


def record(case, **figures):
    os.makedirs(os.path.dirname(MEASUREMENTS), exist_ok=True)
    with open(MEASUREMENTS, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(dict(figures, case=case, time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
                                sort_keys=True) + "\n")


@pytest.fixture(scope="session", autouse=True)
def client():
    with open(CLIENT, encoding="utf-8") as handle:
        put(BALANCER, "/tmp/users_load.py", handle.read())
