# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The scale harness's stand-ins (bench/scale): a host's service serves the
version its `current` release names only after a restart, a restart through
the stand-in systemctl really closes and reopens the host's port, and the
systemctl refuses what it does not simulate instead of pretending."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SCALE = os.path.join(REPO, "bench", "scale")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_root(root, versions, current):
    for version in versions:
        os.makedirs(os.path.join(root, "releases", version))
        with open(os.path.join(root, "releases", version, "release.json"), "w", encoding="utf-8") as handle:
            json.dump({"version": version}, handle)
    link = os.path.join(root, "current")
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(os.path.join("releases", current), link)


def get(port, path="/"):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as resp:
        return resp.status, resp.read().decode()


@pytest.fixture
def fleet(tmp_path):
    hosts_dir = tmp_path / "hosts"
    ports = {"h1": free_port(), "h2": free_port()}
    for name in ports:
        make_root(str(hosts_dir / name), ["v1", "v2"], "v1")
    hosts_file = tmp_path / "hosts.txt"
    hosts_file.write_text("".join("%s:%d\n" % kv for kv in ports.items()))
    control = free_port()
    ready = tmp_path / "ready"
    stop = tmp_path / "stop"
    proc = subprocess.Popen([sys.executable, os.path.join(SCALE, "standin.py"), "--hosts-file", str(hosts_file),
                             "--hosts-dir", str(hosts_dir), "--control-port", str(control), "--start-seconds", "0.1",
                             "--max-seconds", "60", "--stop-file", str(stop), "--ready-file", str(ready)])
    deadline = time.monotonic() + 20
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "stand-in did not start"
        time.sleep(0.05)
    env = dict(os.environ, SCALE_CONTROL_PORT=str(control))
    yield {"ports": ports, "hosts_dir": hosts_dir, "control": control, "env": env}
    stop.write_text("")
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def systemctl(fleet, host, *args):
    env = dict(fleet["env"], SCALE_HOST=host) if host else fleet["env"]
    return subprocess.run([os.path.join(SCALE, "bin", "systemctl")] + list(args),
                          capture_output=True, text=True, env=env, timeout=30, check=False)


def test_version_changes_only_with_a_restart_of_that_host(fleet):
    ports = fleet["ports"]
    status, body = get(ports["h1"])
    assert status == 200 and json.loads(body)["version"] == "v1"
    make_root_switch = os.path.join(str(fleet["hosts_dir"]), "h1", "current")
    os.unlink(make_root_switch)
    os.symlink("releases/v2", make_root_switch)
    # Switched, not restarted: still the old version, as a real service.
    assert json.loads(get(ports["h1"])[1])["version"] == "v1"
    res = systemctl(fleet, "h1", "restart", "scale-app")
    assert res.returncode == 0, res.stderr
    assert json.loads(get(ports["h1"])[1])["version"] == "v2"
    assert json.loads(get(ports["h2"])[1])["version"] == "v1"
    assert get(ports["h1"], "/healthz") == (200, "ok\n")
    show = systemctl(fleet, "h1", "show", "scale-app", "--property=ActiveState", "--property=SubState")
    assert show.returncode == 0 and "ActiveState=active" in show.stdout and "SubState=running" in show.stdout
    with urllib.request.urlopen("http://127.0.0.1:%d/stats" % fleet["control"], timeout=5) as resp:
        stats = json.loads(resp.read())
    assert stats["restarts"] == 1 and stats["versions"] == {"v1": 1, "v2": 1}


def test_a_stopped_host_refuses_connections(fleet):
    assert systemctl(fleet, "h2", "stop", "scale-app").returncode == 0
    with pytest.raises(OSError):
        get(fleet["ports"]["h2"])
    show = systemctl(fleet, "h2", "show", "scale-app")
    assert "ActiveState=inactive" in show.stdout
    assert systemctl(fleet, "h2", "start", "scale-app").returncode == 0
    assert get(fleet["ports"]["h2"])[0] == 200


def test_a_restart_whose_release_is_broken_fails(fleet):
    os.unlink(os.path.join(str(fleet["hosts_dir"]), "h1", "releases", "v1", "release.json"))
    res = systemctl(fleet, "h1", "restart", "scale-app")
    assert res.returncode == 1 and "release.json" in res.stderr
    assert "ActiveState=failed" in systemctl(fleet, "h1", "show", "scale-app").stdout


def test_systemctl_refuses_what_it_does_not_simulate(fleet):
    res = systemctl(fleet, "h1", "enable", "scale-app")
    assert res.returncode == 2 and "not simulated" in res.stderr
    res = systemctl(fleet, "", "restart", "scale-app")
    assert res.returncode == 2 and "SCALE_HOST" in res.stderr
    res = systemctl(fleet, "nosuchhost", "restart", "scale-app")
    assert res.returncode == 1 and "nosuchhost" in res.stderr
