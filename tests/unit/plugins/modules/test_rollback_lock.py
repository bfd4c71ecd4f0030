# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The grayrelease.canary.rollback playbook and the rollout lock, through real
ansible-playbook runs: a real HAProxy on loopback (its servers s1, s2 are the
app hosts), release layouts and the lock in temporary directories, every host
reached with the local connection (one app host by an ssh port that answers
nobody, to lose it). The fleet's state is read afterwards without the code
under test: the links, the lock file, HAProxy's runtime API."""

from __future__ import annotations

import json
import os
import re
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _balancer_lab import run_playbook  # noqa: E402
from _decisions_helpers import closed_port  # noqa: E402
from _haproxy_fixture import running_lab  # noqa: E402

from ansible_collections.grayrelease.canary.plugins.module_utils import _lock  # noqa: E402

pytestmark = [pytest.mark.haproxy, pytest.mark.slow]

APPS = ("s1", "s2")
ROLLOUT_OWNER = "alice@ctl-1 pid 4242 run 7f3c09ab"


@pytest.fixture
def lab():
    yield from running_lab()


class Site(object):
    """Two app hosts on v2 (previous v1) behind the lab's HAProxy, and the lock's place."""

    def __init__(self, lab, tmp_path, lost=()):
        self.lab = lab
        self.lock = str(tmp_path / "lock" / "web.lock")
        self.roots = dict((h, str(tmp_path / "opt" / h)) for h in APPS)
        for root in self.roots.values():
            for version in ("v1", "v2"):
                os.makedirs(os.path.join(root, "releases", version))
            os.symlink("releases/v2", os.path.join(root, "current"))
            os.symlink("releases/v1", os.path.join(root, "previous"))
        apps = {}
        for host in APPS:
            apps[host] = {"canary_root": self.roots[host],
                          "canary_health_url": "http://127.0.0.1:%d/healthz" % lab.apps[host].port}
            if host in lost:
                apps[host].update(ansible_connection="ssh", ansible_host="127.0.0.1", ansible_port=closed_port(),
                                  ansible_ssh_common_args="-o ConnectTimeout=3 -o ConnectionAttempts=1")
        inventory = {"all": {
            "vars": {
                "canary_backend": "web", "canary_service": "demoapp", "canary_haproxy_socket": lab.admin,
                "canary_lock_path": self.lock, "canary_max_unavailable": 1, "canary_drain_timeout": 5,
                # No systemd here: the switch only (a first rollback always switches).
                "rollback_restart": False, "rollback_daemon_reload": False, "rollback_settle_seconds": 0,
                "rollback_health_deadline": 15,
                "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            },
            "children": {"balancers": {"hosts": {"lb1": {}}}, "app": {"hosts": apps}},
        }}
        self.inventory = str(tmp_path / "hosts.json")
        with open(self.inventory, "w") as handle:
            json.dump(inventory, handle)

    def run(self, *args):
        return run_playbook(self.inventory, "grayrelease.canary.rollback", list(args), timeout=240)

    def version(self, host):
        return os.path.basename(os.readlink(os.path.join(self.roots[host], "current")))

    def admin_states(self):
        """server -> admin state (ready, drain, maint) from HAProxy itself."""
        states = {}
        for line in self.lab.raw("show servers state web").splitlines():
            fields = line.split()
            if len(fields) > 6 and fields[1] == "web" and fields[3] in APPS:
                admin = int(fields[6])
                states[fields[3]] = "maint" if admin & 0x01 else "drain" if admin & 0x08 else "ready"
        return states

    def hold_as_rollout(self):
        """The lock as a live rollout run from another controller holds it; returns its bytes."""
        _lock.acquire(self.lock, ROLLOUT_OWNER, ttl=600, now=lambda: time.time() - 95, host="lb-a", pid=977,
                      info={"controller": "ctl-1", "controller_pid": 4242, "version": "v3", "run": "7f3c09ab"})
        with open(self.lock, "rb") as handle:
            return handle.read()


def lock_results(run, name_part):
    """Results of every run of a lock task (the first take, then each batch's refresh), in order."""
    return [res for task in run.tasks() if name_part in task["task"]["name"]
            for res in task["hosts"].values() if not res.get("skipped")]


def test_rollback_is_refused_while_a_rollout_holds_the_lock(lab, tmp_path):
    site = Site(lab, tmp_path)
    held = site.hold_as_rollout()
    run = site.run()
    assert run.rc != 0, run.explain()
    msg = " ".join(run.failures().values())
    assert "held by owner %r" % ROLLOUT_OWNER in msg and "rolling version v3" in msg, msg
    age = int(re.search(r"\) for (\d+)s, ttl 600s", msg).group(1))
    assert 95 <= age < 95 + 60, msg  # planted 95 s ago, the run's start in between
    assert "-e canary_lock_takeover=true" in msg, msg
    # refused before anything changed: no drain, no switch, the rollout's lock as it was
    assert not lock_results(run, "drain the host"), run.explain()
    assert site.admin_states() == {"s1": "ready", "s2": "ready"}
    assert [site.version(h) for h in APPS] == ["v2", "v2"]
    with open(site.lock, "rb") as handle:
        assert handle.read() == held


def test_rollback_holds_its_own_lock_for_the_run_and_releases_it(lab, tmp_path):
    site = Site(lab, tmp_path)
    run = site.run()
    assert run.rc == 0, run.explain()
    assert [site.version(h) for h in APPS] == ["v1", "v1"]
    assert site.admin_states() == {"s1": "ready", "s2": "ready"}
    taken = lock_results(run, "take (or refresh) the rollout lock")
    # taken once before the batches, refreshed before each of the two one-host batches, by one owner
    assert len(taken) == 3, taken
    assert taken[0]["acquired"] and not taken[0]["refreshed"] and not taken[0]["took_over"]
    assert all(res["refreshed"] for res in taken[1:])
    owner = taken[0]["lock"]["owner"]
    assert owner.startswith("rollback ") and " run " in owner and {res["lock"]["owner"] for res in taken} == {owner}
    info = taken[0]["lock"]
    assert info["action"] == "rollback" and isinstance(info["controller_pid"], int)
    assert info["controller_boot"] and isinstance(info["controller_start"], int)
    released = lock_results(run, "Unlock | release the rollout lock")
    assert len(released) == 1 and released[0]["released"] and released[0]["previous_owner"] == owner
    assert not os.path.exists(site.lock)


def test_rollback_takes_over_with_canary_lock_takeover_and_releases(lab, tmp_path):
    site = Site(lab, tmp_path)
    site.hold_as_rollout()
    run = site.run("-e", "canary_lock_takeover=true")
    assert run.rc == 0, run.explain()
    taken = lock_results(run, "take (or refresh) the rollout lock")
    assert taken[0]["took_over"] and taken[0]["previous_owner"] == ROLLOUT_OWNER
    # only the first take forces; the refreshes are the run's own
    assert not any(res["took_over"] for res in taken[1:])
    assert [site.version(h) for h in APPS] == ["v1", "v1"]
    assert not os.path.exists(site.lock)


def test_a_failing_batch_releases_the_lock_and_stops_the_run_with_its_cause(lab, tmp_path):
    """s2 cannot be reached (its batch is only itself): the rescue releases the lock, the run stops there."""
    site = Site(lab, tmp_path, lost=("s2",))
    run = site.run()
    assert run.rc != 0, run.explain()
    failures = run.failures()
    assert "s2" in failures and "unreachable" in failures["s2"], failures
    assert "nothing was switched there" in failures["s2"], failures
    assert site.version("s1") == "v1" and site.version("s2") == "v2"
    released = lock_results(run, "Unlock | release the rollout lock")
    assert len(released) == 1 and released[0]["released"], run.explain()
    assert not os.path.exists(site.lock)
    # the batch's drain stays for the operator to see (the report says so); the run stopped at it
    assert site.admin_states() == {"s1": "ready", "s2": "drain"}
    plays = [play["play"]["name"] for play in run.data["plays"]]  # one entry per batch
    assert plays[-1] == "Roll the fleet back to the previous release" and "Release the rollout lock" not in plays
