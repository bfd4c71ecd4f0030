# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Real state of the local test fleet after `molecule converge -s default`."""

from __future__ import annotations

import json
import os

import pytest
import testinfra.utils.ansible_runner

RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
BALANCERS = RUNNER.get_hosts("balancers")
APPS = RUNNER.get_hosts("app")
STAT_SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "files", "haproxy_stat.py")
SOCKET = "/run/haproxy/admin.sock"
BACKEND = "demoapp"
VERSION = "v1"


def host(name):
    return testinfra.get_host("ansible://" + name, ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


def test_fleet_has_two_balancers_and_six_app_hosts():
    assert sorted(BALANCERS) == ["lb1", "lb2"]
    assert sorted(APPS) == ["app%d" % i for i in range(1, 7)]


@pytest.mark.parametrize("name", BALANCERS)
def test_haproxy_is_active_and_enabled(name):
    service = host(name).service("haproxy")
    assert service.is_running and service.is_enabled


@pytest.mark.parametrize("name", BALANCERS)
def test_every_backend_server_is_up_through_the_runtime_socket(name):
    with open(STAT_SCRIPT, encoding="utf-8") as handle:
        code = handle.read()
    servers = json.loads(host(name).check_output("python3 -c %s %s %s", code, SOCKET, BACKEND))
    assert sorted(servers) == sorted(APPS)
    assert {server: state["status"] for server, state in servers.items()} == {server: "UP" for server in APPS}
    # No explicit weight in the config: HAProxy's default weight 1 everywhere.
    assert {state["weight"] for state in servers.values()} == {1}


@pytest.mark.parametrize("name", BALANCERS)
def test_demoapp_answers_v1_through_the_balancer(name):
    balancer = host(name)
    served = set()
    # Two rounds of roundrobin reach every app server at least once.
    for _request in range(2 * len(APPS)):
        body = balancer.check_output("curl -fsS -m 5 http://127.0.0.1:80/version")
        reply = json.loads(body)
        assert reply["version"] == VERSION
        served.add(reply["host"])
    assert served == set(APPS)
    for _request in range(len(APPS)):
        assert "demoapp %s on " % VERSION in balancer.check_output("curl -fsS -m 5 http://127.0.0.1:80/")


@pytest.mark.parametrize("name", APPS)
def test_demoapp_runs_release_v1_from_current(name):
    app = host(name)
    assert app.service("demoapp").is_running and app.service("demoapp").is_enabled
    assert not app.service("haproxy").is_running
    current = app.file("/opt/demoapp/current")
    assert current.is_symlink
    assert os.path.basename(current.linked_to) == VERSION
    assert app.file("/opt/demoapp/releases/%s/release.json" % VERSION).is_file
    assert json.loads(app.check_output("curl -fsS -m 5 http://127.0.0.1:8080/version"))["version"] == VERSION
    assert app.check_output("curl -fsS -m 5 http://127.0.0.1:8080/healthz") == "ok"
