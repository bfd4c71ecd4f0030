# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The balancer role against 4 real HAProxy balancers on loopback, through
ansible-playbook: on-self mode (the role on the balancers themselves, in
parallel) and delegate mode (from localhost). The real state of every
balancer is read afterwards with raw runtime API commands, independently of
the code under test."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _balancer_lab import open_fleet, role_play, run_playbook  # noqa: E402
from _decisions_helpers import closed_port  # noqa: E402

pytestmark = [pytest.mark.haproxy, pytest.mark.slow]

LBS = ["lb1", "lb2", "lb3", "lb4"]
# Delegate mode: each lab has its own socket, the delegated balancer's
# (item is undefined while the role's arguments are validated).
PER_BALANCER_SOCKET = {"balancer_socket": "{{ hostvars[item | default('lb1')].canary_haproxy_socket }}"}


@pytest.fixture(scope="module")
def fleet():
    yield from open_fleet(4)


@pytest.fixture
def clean(fleet):
    fleet.reset()
    return fleet


def play(fleet, name, plays, inventory=None):
    return run_playbook(inventory or fleet.inventory(), fleet.write(name + ".json", plays))


def column(fleet, server, names=None):
    return dict((n, fleet.state(n)[server]) for n in names or LBS)


def test_on_self_drain_then_ready_on_four_balancers(clean):
    fleet = clean
    threads = fleet.hold_sessions_until_drained("s1", after=1.0)
    res = play(fleet, "drain", [role_play("balancers", "drain", ["s1"], {"balancer_drain_timeout": 20})])
    assert res.rc == 0, res.explain()
    # One haproxy_server task per balancer, on the balancer itself: no delegation, no read-back loop.
    acted = res.results("On this balancer")
    assert sorted(acted) == LBS
    assert all("_ansible_delegated_vars" not in r for r in acted.values())
    for name in LBS:
        assert acted[name]["drain"]["waited"] >= 0.5, acted[name]["drain"]  # it waited for the held session
        assert acted[name]["servers"]["s1"]["admin_state"] == "drain"
    assert column(fleet, "s1") == dict((n, ("drain", 1, "DRAIN")) for n in LBS)
    for t in threads:
        t.join(60)
    # Every balancer holds every balancer's result (the fact shape of delegate mode).
    facts = res.results("Gather what every balancer")
    for name in LBS:
        result = facts[name]["ansible_facts"]["balancer_result"]
        assert sorted(result) == LBS
        assert set(result["lb2"]) == {"changed", "before", "commands", "servers", "drain", "health", "failed", "msg"}
        assert result["lb3"]["commands"] == ["set server web/s1 state drain"]
        assert result["lb4"]["failed"] is False

    res = play(fleet, "ready", [role_play("balancers", "ready", ["s1"], {"balancer_weight": "50%"}),
                                role_play("balancers", "weight", ["s3"], {"balancer_weights": {"s3": 4}})])
    assert res.rc == 0, res.explain()
    assert column(fleet, "s1") == dict((n, ("ready", 1, "UP")) for n in LBS)  # 50% of 1 rounds to 1
    assert column(fleet, "s3") == dict((n, ("ready", 4, "UP")) for n in LBS)
    ready = res.results("On this balancer, with the wait for sessions (drain, maint) or health (ready): ready")
    assert all("health" in ready[n] for n in LBS)


def test_on_self_one_balancer_acts_alone(clean):
    fleet = clean
    res = play(fleet, "one", [role_play("lb2", "maint", ["s2"])])
    assert res.rc == 0, res.explain()
    assert column(fleet, "s2") == {"lb1": ("ready", 1, "UP"), "lb2": ("maint", 1, "MAINT"),
                                   "lb3": ("ready", 1, "UP"), "lb4": ("ready", 1, "UP")}


def test_on_self_disagreement_fails_every_balancer_naming_it(clean):
    fleet = clean
    fleet.labs["lb4"].raw("set server web/s3 weight 5")
    res = play(fleet, "disagree", [role_play("balancers", "drain", ["s2", "s3"])])
    assert res.rc != 0
    failures = res.failures()
    assert sorted(failures) == LBS, res.explain()
    for msg in failures.values():
        assert msg.startswith("balancers disagree: s3: ")
        assert "lb1 admin_state=drain weight=10" in msg and "lb4 admin_state=drain weight=5" in msg
        assert "s2" not in msg  # s2 agrees everywhere
    # The drain itself was applied everywhere (the check comes after the action).
    assert column(fleet, "s3") == {"lb1": ("drain", 10, "DRAIN"), "lb2": ("drain", 10, "DRAIN"),
                                   "lb3": ("drain", 10, "DRAIN"), "lb4": ("drain", 5, "DRAIN")}


def test_on_self_broken_socket_fails_only_that_balancer_with_the_cause(clean):
    fleet = clean
    inventory = fleet.inventory(sockets={"lb3": os.path.join(fleet.tmp, "missing", "admin.sock"),
                                         "lb4": fleet.stale_socket()})
    res = play(fleet, "broken", [role_play("balancers", "drain", ["s2"])], inventory=inventory)
    assert res.rc != 0
    failures = res.failures()
    assert sorted(failures) == ["lb3", "lb4"], res.explain()
    assert "does not exist" in failures["lb3"] and "missing/admin.sock" in failures["lb3"]
    assert "refused the connection" in failures["lb4"]
    assert not any("One or more items failed" in m for m in failures.values())
    assert res.stats["lb1"]["failures"] == 0 and res.stats["lb2"]["failures"] == 0
    # The healthy balancers acted and agreed; their result names the broken ones and why.
    assert column(fleet, "s2", ["lb1", "lb2"]) == {"lb1": ("drain", 1, "DRAIN"), "lb2": ("drain", 1, "DRAIN")}
    assert column(fleet, "s2", ["lb3", "lb4"]) == {"lb3": ("ready", 1, "UP"), "lb4": ("ready", 1, "UP")}
    result = res.results("Gather what every balancer")["lb1"]["ansible_facts"]["balancer_result"]
    assert result["lb2"]["failed"] is False
    assert result["lb3"]["failed"] is True and "does not exist" in result["lb3"]["msg"]
    assert result["lb4"]["failed"] is True and "refused" in result["lb4"]["msg"]


def test_delegate_from_localhost_drain_ready_and_agreement(clean):
    fleet = clean
    res = play(fleet, "delegate", [role_play("localhost", "drain", ["s1"], PER_BALANCER_SOCKET)])
    assert res.rc == 0, res.explain()
    assert column(fleet, "s1") == dict((n, ("drain", 1, "DRAIN")) for n in LBS)
    calls = res.results("On every balancer")["localhost"]["results"]
    assert [c["item"] for c in calls] == LBS  # one call per balancer, waits included
    assert all("drain" in c for c in calls)

    res = play(fleet, "delegate-ready", [role_play("localhost", "ready", ["s1"], PER_BALANCER_SOCKET)])
    assert res.rc == 0, res.explain()
    assert column(fleet, "s1") == dict((n, ("ready", 1, "UP")) for n in LBS)

    fleet.labs["lb2"].raw("set server web/s3 weight 7")
    res = play(fleet, "delegate-disagree", [role_play("localhost", "ready", ["s3"], PER_BALANCER_SOCKET)])
    assert res.rc != 0
    assert res.failures()["localhost"].startswith("balancers disagree: s3: "), res.explain()
    assert "lb2 admin_state=ready weight=7" in res.failures()["localhost"]


def test_delegate_names_each_failed_or_unreachable_balancer(clean):
    fleet = clean
    inventory = fleet.inventory(sockets={"lb3": fleet.stale_socket()})
    with open(inventory) as fh:
        text = fh.read()
    # lb4 unreachable: ssh to a closed loopback port.
    text = text.replace("lb4 ansible_connection=local",
                        "lb4 ansible_connection=ssh ansible_host=127.0.0.1 ansible_port=%d" % closed_port())
    with open(inventory, "w") as fh:
        fh.write(text)
    res = play(fleet, "delegate-broken", [role_play("localhost", "drain", ["s2"], PER_BALANCER_SOCKET)],
               inventory=inventory)
    assert res.rc != 0
    assert res.stats["localhost"]["unreachable"] == 0  # the calling host fails, it is not UNREACHABLE
    msg = res.failures()["localhost"]
    assert msg.startswith("drain failed on lb3, lb4: "), msg
    assert "refused the connection" in msg and "lb4: unreachable: " in msg
    assert column(fleet, "s2", ["lb1", "lb2"]) == {"lb1": ("drain", 1, "DRAIN"), "lb2": ("drain", 1, "DRAIN")}


def status_inventory(fleet, sockets=None):
    """The 4 balancers plus app hosts a1..a3 (servers s1..s3) whose `current` links point at v5."""
    inventory = fleet.inventory(sockets=sockets)
    lines = ["", "[all:vars]", "canary_service=demo", "", "[app]"]
    for i in (1, 2, 3):
        root = os.path.join(fleet.tmp, "a%d" % i)
        os.makedirs(os.path.join(root, "releases", "v5"), exist_ok=True)
        if not os.path.islink(os.path.join(root, "current")):
            os.symlink(os.path.join(root, "releases", "v5"), os.path.join(root, "current"))
        lines.append("a%d ansible_connection=local canary_root=%s canary_server=s%d" % (i, root, i))
    with open(inventory, "a") as fh:
        fh.write("\n".join(lines) + "\n")
    return inventory


def test_status_playbook_one_line_per_app_host(clean):
    fleet = clean
    fleet.labs["lb2"].raw("set server web/s2 state drain")
    res = run_playbook(status_inventory(fleet), "grayrelease.canary.status")
    assert res.rc == 0, res.explain()
    reads = res.results("Status | read the backend")
    assert sorted(reads) == LBS  # one task, every balancer on its own socket
    lines = res.results("Status | one line per app host")["localhost"]["results"]
    msgs = [r["msg"] for r in lines]
    assert [m.split(";")[0] for m in msgs] == ["a1: version v5", "a2: version v5", "a3: version v5"]
    assert "lb1: ready UP, weight 1/1, check L7OK, 0 sessions" in msgs[1]
    assert "lb2: drain DRAIN, weight 1/1" in msgs[1]
    assert "lb4: ready UP, weight 10/10" in msgs[2]


def test_status_playbook_names_an_unreadable_balancer_and_fails(clean):
    fleet = clean
    res = run_playbook(status_inventory(fleet, sockets={"lb3": fleet.stale_socket()}), "grayrelease.canary.status")
    assert res.rc != 0
    msgs = [r["msg"] for r in res.results("Status | one line per app host")["localhost"]["results"]]
    assert msgs[0].startswith("a1: version v5;")
    assert "lb3: cannot read (HAProxy runtime socket" in msgs[0] and "refused" in msgs[0]
    assert "lb4: ready UP" in msgs[0]
    assert res.failures()["localhost"] == "could not read: lb3 (see above)"
