# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The role grayrelease.canary.haproxy_setup on a real HAProxy (lb2): a balancer
put back to the fleet's own configuration (no admin socket, no server state, no
checks, no drop-in) is prepared by the role as a user prepares one: check mode
reports the changes and changes nothing, the first run prepares it, the second
run changes nothing (changed=0), and what it set up works: the admin socket,
health checks on every server, and a drain kept across a reload."""

import os
import re
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(REPO, "molecule", "shared", "files"))
from fleet_test import haproxy_state, run_timed  # noqa: E402  pylint: disable=wrong-import-position

testinfra_hosts = ["lb2"]

INVENTORY = os.path.join(REPO, "inventory", "local-fleet", "hosts.yml")
PLAYBOOK = os.path.join(REPO, "molecule", "balancer", "haproxy-setup.yml")
CONFIG = "/etc/haproxy/haproxy.cfg"
DROPIN = "/etc/systemd/system/haproxy.service.d/grayrelease-canary.conf"
SAVER = "/usr/local/libexec/grayrelease-canary"
STATE = "/var/lib/haproxy/server-state"
SOCKET = "/run/haproxy/admin.sock"
APPS = ["app%d" % i for i in range(1, 7)]


def run_setup(*extra):
    res = run_timed(["ansible-playbook", "-i", INVENTORY, PLAYBOOK, "-l", "lb2"] + list(extra), timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    recap = re.search(r"^lb2\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", res.stdout, re.M)
    assert recap, res.stdout[-2000:]
    res.changed = int(recap.group(2))
    return res


def fingerprint(host):
    """What the role may change on the balancer, and the HAProxy process."""
    out = host.run("sha256sum %s; ls -la %s %s 2>&1; systemctl show -p MainPID -p ExecReload haproxy"
                   % (CONFIG, os.path.dirname(DROPIN), SAVER))
    assert out.rc == 0, out.stderr
    return out.stdout


def ask(host, command):
    code = ("import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
            "s.sendall(sys.argv[2].encode() + b'\\n'); print(s.makefile().read())")
    out = host.run("python3 -c %s %s %s" % (_quote(code), SOCKET, _quote(command)))
    assert out.rc == 0, out.stderr
    return out.stdout


def _quote(text):
    return "'" + text.replace("'", "'\\''") + "'"


def wait_all_up(deadline=60):
    """Every server UP on lb2 with a passing health check (so each has one)."""
    end = time.monotonic() + deadline
    while True:
        state = haproxy_state("lb2")
        if sorted(state) == APPS and all(s["status"] == "UP" and s["check_status"].startswith("L7OK")
                                         for s in state.values()):
            return state
        assert time.monotonic() < end, state
        time.sleep(1)


def test_haproxy_setup_prepares_an_unprepared_balancer_idempotently(host):
    # Unprepare lb2: the fleet's configuration as its template renders it
    # (converge keeps that copy), without the role's drop-in, saver or state.
    out = host.run("cp /etc/haproxy/haproxy.cfg.fleet %s && rm -f %s %s && rm -rf %s "
                   "&& systemctl daemon-reload && systemctl restart haproxy"
                   % (CONFIG, DROPIN, STATE, SAVER))
    assert out.rc == 0, out.stderr
    assert "grayrelease.canary haproxy_setup" not in host.file(CONFIG).content_string
    assert not host.socket("unix://%s" % SOCKET).is_listening

    before = fingerprint(host)
    check = run_setup("--check", "--diff")
    print("check mode on the unprepared balancer: changed=%d in %s s" % (check.changed, check.seconds))
    # saver dir, saver, drop-in, global block, backend block, reload handler
    assert check.changed >= 5, check.stdout[-3000:]
    assert "+    stats socket %s mode 660 level admin" % SOCKET in check.stdout
    assert "+    default-server check inter 1s fall 2 rise 2" in check.stdout
    assert fingerprint(host) == before, "check mode changed the balancer"
    assert not host.socket("unix://%s" % SOCKET).is_listening

    first = run_setup("--diff")
    print("first run: changed=%d in %s s" % (first.changed, first.seconds))
    assert first.changed >= 5, first.stdout[-3000:]
    second = run_setup()
    print("second run: changed=%d in %s s" % (second.changed, second.seconds))
    assert second.changed == 0, second.stdout[-3000:]
    again = run_setup("--check", "--diff")
    assert again.changed == 0, again.stdout[-3000:]

    # What it set up works: the admin socket, a check on every server (the
    # fleet's server lines have none of their own), the drop-in in the unit.
    assert ask(host, "show cli level").strip() == "admin"
    wait_all_up()
    assert "haproxy_save_state.py %s %s" % (SOCKET, STATE) in host.run("systemctl show -p ExecReload haproxy").stdout

    # A drain set through the admin socket survives a reload (saved first by the drop-in).
    ask(host, "set server demoapp/app3 state drain")
    pid = host.run("systemctl show -p MainPID --value haproxy").stdout.strip()
    out = host.run("systemctl reload haproxy")
    assert out.rc == 0, out.stderr
    time.sleep(1)
    assert haproxy_state("lb2")["app3"]["admin_state"] == "drain"
    assert host.file(STATE).exists and "app3" in host.file(STATE).content_string
    assert host.run("systemctl show -p MainPID --value haproxy").stdout.strip() == pid  # a reload, not a restart
    ask(host, "set server demoapp/app3 state ready")
    state = wait_all_up()
    assert all(s["admin_state"] == "ready" for s in state.values()), state
