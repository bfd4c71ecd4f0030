# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""grayrelease.canary.haproxy_route run as Ansible runs it, against a fake runtime API on a unix socket."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "module_utils"))
from test_routing import SPEC, FakeHAProxy  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.grayrelease.canary.plugins.module_utils._routing import (  # noqa: E402
    map_files, map_text, parse_spec, plan)

MODULE = os.path.join(HERE, "..", "..", "..", "..", "plugins", "modules", "haproxy_route.py")


@pytest.fixture
def balancer(tmp_path):
    """A unix socket answering like HAProxy 2.6 (one command per connection), maps at state stable."""
    spec = dict(SPEC, map_dir=str(tmp_path))
    routing = parse_spec(spec)
    start = plan(routing, "stable")
    str_map, ip_map = map_files(routing)
    for path, entries in ((str_map, start["str"]), (ip_map, start["ip"])):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(map_text(entries))
    fake = FakeHAProxy({str_map: start["str"], ip_map: start["ip"]})
    path = str(tmp_path / "admin.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _addr = server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                cmd = data.decode().strip()
                conn.sendall(("admin\n" if cmd == "show cli level" else fake.command(cmd)).encode())
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield {"spec": spec, "socket": path, "fake": fake, "maps": (str_map, ip_map)}
    stop.set()
    server.close()


def run(tmp_path, args, check=False, diff=False):
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=check, _ansible_diff=diff)}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, MODULE, str(path)], check=False, capture_output=True, text=True,
                          timeout=60, env=env)
    return json.loads(proc.stdout)


def test_module_check_diff_then_apply(balancer, tmp_path):
    str_map = balancer["maps"][0]
    before = open(str_map, encoding="utf-8").read()
    args = {"socket": balancer["socket"], "routing": balancer["spec"], "state": "step", "step": 3}
    checked = run(tmp_path, args, check=True, diff=True)
    assert checked["changed"] and not checked.get("failed"), checked
    assert open(str_map, encoding="utf-8").read() == before
    assert any(d["after"].startswith("=mode step\n=limit 5000\n") for d in checked["diff"]), checked["diff"]
    done = run(tmp_path, args)
    assert done["changed"] and done["percent"] == 50.0 and "diff" not in done, done
    assert "=limit 5000\n" in open(str_map, encoding="utf-8").read()
    assert ("=limit", "5000") in balancer["fake"].maps[str_map]
    assert not run(tmp_path, args)["changed"]


@pytest.mark.parametrize("changes,needle", [
    ({"step": 9}, "step 9 is not a step of routing.steps: give 1..4"),
    ({"routing": dict(SPEC, steps=[{"group": "nobody"}])}, "'nobody', which is not an opt-in group"),
    ({"routing": dict(SPEC, backend="shop")}, "has no map loaded from"),
])
def test_module_refuses_with_nothing_changed(balancer, tmp_path, changes, needle):
    str_map = balancer["maps"][0]
    before = open(str_map, encoding="utf-8").read()
    args = dict({"socket": balancer["socket"], "routing": balancer["spec"], "state": "step", "step": 2}, **changes)
    if "routing" in changes:
        args["routing"] = dict(changes["routing"], map_dir=balancer["spec"]["map_dir"])
    result = run(tmp_path, args)
    assert result.get("failed") and needle in result["msg"], result
    assert open(str_map, encoding="utf-8").read() == before
    assert not [c for c in balancer["fake"].sent if not c.startswith("show")]
