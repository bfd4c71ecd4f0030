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
    # The read-back carries the traffic counters (a canary's analysis starts from them),
    # the same numbers haproxy_info reports.
    info = run(tmp_path, "haproxy_info", {"socket": lab.admin, "backend": "web"})["backends"]["web"]["s1"]
    assert isinstance(res["servers"]["s1"]["req_tot"], int) and isinstance(res["servers"]["s1"]["hrsp_5xx"], int)
    assert (res["servers"]["s1"]["req_tot"], res["servers"]["s1"]["hrsp_5xx"]) == (info["req_tot"], info["hrsp_5xx"])


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
    # With probe: the health checks from here come along; an unhealthy URL does not fail it.
    good = "http://127.0.0.1:%d/healthz" % lab.apps["s1"].port
    bad = "http://probe:s3cret@127.0.0.1:%d/healthz" % lab.apps["bad"].port
    res = run(tmp_path, "haproxy_info", {"socket": lab.user, "backend": "web",
                                         "probe": {"urls": [good, bad], "rise": 1, "deadline": 0.5}})
    assert "failed" not in res and set(res["backends"]["web"]) == {"s1", "s2", "s3", "bad"}
    assert res["probe"]["healthy"] == [good]
    assert res["probe"]["unhealthy"] == ["http://***@127.0.0.1:%d/healthz" % lab.apps["bad"].port]
    assert "s3cret" not in json.dumps(dict(res, invocation=None))


def test_server_module_probes_before_the_ready_and_changes_nothing_when_unhealthy(lab, tmp_path):
    drained = {"socket": lab.admin, "backend": "web", "state": "drain"}
    run(tmp_path, "haproxy_server", dict(drained, servers=["s1", "bad"]))
    ready = {"socket": lab.admin, "backend": "web", "state": "ready", "health_timeout": 10}
    url = "http://127.0.0.1:%d/healthz"
    # bad answers 503: probed from here before any change; it stays drained, the task fails.
    res = run(tmp_path, "haproxy_server", dict(ready, servers=["bad"], then_drain=["s2"],
                                               probe={"urls": [url % lab.apps["bad"].port], "deadline": 1}))
    assert res["failed"] is True and res["error_kind"] == "unhealthy" and res["changed"] is False
    assert res["msg"].startswith("not readied: unhealthy as probed from this host: 1 of 1 targets unhealthy")
    assert "503" in res["msg"]
    # Rounds 0.25 s apart until the 1 s deadline: 4 probes, none passed.
    assert res["probe"]["unhealthy"] == [url % lab.apps["bad"].port]
    assert res["probe"]["results"][url % lab.apps["bad"].port]["attempts"] == 4
    # Nothing readied, nothing drained.
    assert admin_states(tmp_path, lab) == {"s1": "drain", "s2": "ready", "s3": "ready", "bad": "drain"}
    # Credentials in a URL never reach the result (printed when the task fails).
    secret = "http://probe:s3cret@127.0.0.1:%d/healthz" % lab.apps["bad"].port
    res = run(tmp_path, "haproxy_server", dict(ready, servers=["bad"], probe={"urls": [secret], "deadline": 0.5}))
    assert res["failed"] is True and res["error_kind"] == "unhealthy"
    assert "s3cret" not in json.dumps(dict(res, invocation=None)), res
    assert res["probe"]["unhealthy"] == ["http://***@127.0.0.1:%d/healthz" % lab.apps["bad"].port]
    res = run(tmp_path, "haproxy_server", dict(ready, servers=["bad"], probe={"urls": ["ftp://u:s3cret@x/"]}))
    assert res["failed"] is True and "s3cret" not in res["msg"] and "ftp://***@x/" in res["msg"]
    # s1 answers: two passing probes 0.25 s apart, then the ready.
    res = run(tmp_path, "haproxy_server", dict(ready, servers=["s1"], probe={"urls": [url % lab.apps["s1"].port]}))
    assert "failed" not in res and res["changed"] is True
    assert res["probe"]["healthy"] == [url % lab.apps["s1"].port] and res["probe"]["unhealthy"] == []
    assert res["probe"]["results"][url % lab.apps["s1"].port]["attempts"] == 2
    assert 0.2 <= res["probe"]["elapsed"] < 5 and lab.stat()["s1"] == "UP"
    # Bad input is refused before any probe or change.
    res = run(tmp_path, "haproxy_server", dict(drained, servers=["s1"], probe={"urls": [url % lab.apps["s1"].port]}))
    assert res["failed"] is True and res["msg"] == "probe needs state=ready, not state=drain"
    res = run(tmp_path, "haproxy_server", dict(ready, servers=["nope"], probe={"urls": ["http://127.0.0.1:9/"]}))
    assert res["failed"] is True and res["error_kind"] == "unknown_server" and "probe" not in res
    res = run(tmp_path, "haproxy_server", dict(ready, servers=["bad"], probe={"urls": ["ftp://x/"]}))
    assert res["failed"] is True and res["error_kind"] == "bad_input" and "ftp://x/" in res["msg"]
    assert admin_states(tmp_path, lab) == {"s1": "ready", "s2": "ready", "s3": "ready", "bad": "drain"}
    run(tmp_path, "haproxy_server", dict(ready, servers=["bad"], wait_healthy=False))


def admin_states(tmp_path, lab):
    servers = run(tmp_path, "haproxy_info", {"socket": lab.user, "backend": "web"})["backends"]["web"]
    return dict((name, server["admin_state"]) for name, server in servers.items())
