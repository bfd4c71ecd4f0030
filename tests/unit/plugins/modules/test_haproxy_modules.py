# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The haproxy_server / haproxy_info modules as Ansible runs them (JSON args in, JSON out)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _haproxy_fixture import running_lab  # noqa: E402

pytestmark = [pytest.mark.haproxy]
MODULES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "plugins", "modules")


lab = pytest.fixture(scope="module")(running_lab)


def run(tmp_path, module, args, check=False, diff=False):
    args = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    # The module imports its module_utils as ansible_collections.grayrelease.canary.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, os.path.join(MODULES, module + ".py"), str(path)],
                          check=False, capture_output=True, text=True, timeout=120, env=env)
    return json.loads(proc.stdout)


def test_server_module_check_diff_apply(lab, tmp_path):
    args = {"socket": lab.admin, "backend": "web", "servers": ["s1"], "state": "maint", "weight": "200%"}
    res = run(tmp_path, "haproxy_server", args, check=True, diff=True)
    assert res["changed"] is True and res["servers"]["s1"] == dict(res["before"]["s1"], admin_state="maint",
                                                                   status="MAINT", weight=2)
    assert res["diff"]["after"] == "web/s1: admin_state=maint weight=2\n"
    assert lab.stat()["s1"] == "UP"  # check mode changed nothing
    res = run(tmp_path, "haproxy_server", args)
    assert res["changed"] is True and lab.stat()["s1"] == "MAINT"
    assert run(tmp_path, "haproxy_server", args)["changed"] is False
    res = run(tmp_path, "haproxy_server", dict(args, state="ready", weight="100%", health_timeout=10))
    assert res["changed"] is True and res["servers"]["s1"]["status"] == "UP" and "failed" not in res


def test_server_module_failures(lab, tmp_path):
    res = run(tmp_path, "haproxy_server", {"socket": lab.user, "backend": "web", "servers": ["s1"], "state": "drain"})
    assert res["failed"] is True and res["error_kind"] == "not_admin" and res["changed"] is False
    res = run(tmp_path, "haproxy_server", {"socket": lab.admin, "backend": "web", "servers": ["s1;x"]})
    assert res["failed"] is True and res["error_kind"] == "invalid_name"
    res = run(tmp_path, "haproxy_server", {"socket": lab.admin, "backend": "web", "servers": ["bad"],
                                           "state": "ready", "health_timeout": 1})
    assert res["failed"] is True and res["error_kind"] == "health_timeout" and res["servers"]["bad"]["status"] == "DOWN"


def test_info_module(lab, tmp_path):
    for _attempt in range(4):
        lab.get("/")
    res = run(tmp_path, "haproxy_info", {"socket": lab.user, "backend": "web"}, check=True)
    assert res["changed"] is False and set(res["backends"]["web"]) == {"s1", "s2", "s3", "bad"}
    assert sum(s["req_tot"] for s in res["backends"]["web"].values()) >= 4
    assert res["initial_weights"] == {"web": {"s1": 1, "s2": 1, "s3": 10, "bad": 1}}
    # The process that answered: what a rollout compares to notice a restart.
    assert res["process"]["pid"] == lab.proc.pid and res["process"]["uptime_sec"] >= 0
    res = run(tmp_path, "haproxy_info", {"socket": lab.admin, "backend": "other"})
    assert res["failed"] is True and "web" in res["msg"]
