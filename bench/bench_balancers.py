# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Balancers in parallel: the balancer role on 1 vs 4 real HAProxy balancers.

Starts 4 HAProxy instances on loopback (tests/unit/plugins/_haproxy_fixture.py,
each with a backend of small loopback HTTP servers), writes an inventory of 4
hosts lb1..lb4 (ansible_connection=local, each with its own admin socket),
holds a session of HOLD seconds on server s1 through every balancer in use,
and times with ansible-playbook a drain then a ready of s1:

  on-self   the role runs on the balancers themselves (play hosts: lb1, or
            hosts: balancers): one haproxy_server call per balancer, in
            parallel through forks;
  delegate  the role runs on localhost and delegates to every balancer of
            the group, one after the other.

Seconds are the role part only: between two marker tasks of the playbook,
read from the JSON callback's task timings (ansible-playbook's start-up and
inventory parsing are left out). The held sessions start when the playbook
reaches the markers, so every run waits for the same sessions.

With --baseline REV the role as it was at git revision REV (apply on every
balancer, then wait on every balancer, then read every balancer back) is timed
too, from localhost, for comparison.

Run: make bench-balancers, or .venv/bin/python bench/bench_balancers.py [--runs N] [--baseline REV]
Everything is loopback and bounded (drains <= 20 s, health <= 20 s, runs <= 120 s).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "unit", "plugins"))
from _balancer_lab import ANSIBLE_PLAYBOOK, BalancerFleet, PlaybookRun, ansible_env  # noqa: E402
from _haproxy_fixture import MISSING_MSG, find_haproxy  # noqa: E402

HOLD = 2.0
SERVER = "s1"


def playbook(fleet, name, role_hosts, delegate):
    """Markers on localhost, the role's drain + ready of s1 in between."""
    ready_file = os.path.join(fleet.tmp, name + ".ready")
    go_file = os.path.join(fleet.tmp, name + ".go")
    role_vars = {}
    if delegate:
        # Each lab has its own socket; in delegate mode the socket is the
        # delegated balancer's (item is undefined while the role's arguments
        # are validated, hence the default).
        role_vars["balancer_socket"] = "{{ hostvars[item | default(groups['balancers'][0])].canary_haproxy_socket }}"

    def role(action, extra):
        return {"name": "Role %s" % action, "ansible.builtin.include_role": {"name": "grayrelease.canary.balancer"},
                "vars": dict(role_vars, balancer_action=action, balancer_servers=[SERVER], **extra)}

    plays = [
        {"name": "markers", "hosts": "localhost", "gather_facts": False, "tasks": [
            {"name": "BENCH ready", "ansible.builtin.copy": {"dest": ready_file, "content": "ready\n", "mode": "0644"}},
            {"name": "BENCH wait", "ansible.builtin.wait_for": {"path": go_file, "timeout": 30}},
            {"name": "BENCH start", "ansible.builtin.debug": {"msg": "start"}},
        ]},
        {"name": "role", "hosts": role_hosts, "gather_facts": False, "tasks": [
            role("drain", {"balancer_drain_timeout": 20}),
            role("ready", {"balancer_health_timeout": 20}),
        ]},
        {"name": "end", "hosts": "localhost", "gather_facts": False, "tasks": [
            {"name": "BENCH end", "ansible.builtin.debug": {"msg": "end"}},
        ]},
    ]
    return fleet.write(name + ".json", plays), ready_file, go_file


def run(fleet, label, lbs, delegate, collections=None):
    """One timed drain + ready; returns the role seconds."""
    names = fleet.names[:lbs]
    inventory = fleet.inventory(only=names)
    role_hosts = "localhost" if delegate else ",".join(names)
    name = "%s-%d-%d" % (label, lbs, int(time.monotonic() * 1000))
    path, ready_file, go_file = playbook(fleet, name, role_hosts, delegate)
    env = ansible_env({"ANSIBLE_COLLECTIONS_PATH": collections} if collections else None)
    proc = subprocess.Popen([ANSIBLE_PLAYBOOK, "-i", inventory, path], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(ready_file):
        if proc.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    threads = fleet.hold_sessions(SERVER, HOLD, names) if os.path.exists(ready_file) else []
    with open(go_file, "w") as fh:
        fh.write("go\n")
    out, err = proc.communicate(timeout=120)
    result = PlaybookRun(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), 0)
    for t in threads:
        t.join(HOLD + 30)
    if result.rc != 0:
        raise SystemExit("%s on %d balancer(s) failed: %s" % (label, lbs, result.explain()))
    state = dict((n, fleet.state(n)[SERVER][:2]) for n in names)
    if any(s != ("ready", 1) for s in state.values()):
        raise SystemExit("%s: s1 not back ready at weight 1: %s" % (label, state))
    return result.marker_seconds()


def baseline_collections(rev):
    """A collections dir holding the collection as it was at git revision ``rev``."""
    root = tempfile.mkdtemp(prefix="gr-baseline-")
    dest = os.path.join(root, "ansible_collections", "grayrelease", "canary")
    os.makedirs(dest)
    archive = subprocess.run(["git", "-C", REPO, "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    return root


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per cell (median shown)")
    parser.add_argument("--baseline", help="git revision whose balancer role to time too (delegate only)")
    args = parser.parse_args()
    if find_haproxy() is None:
        print(MISSING_MSG)
        return 2
    cases = [("on-self", False, None), ("delegate", True, None)]
    baseline_root = None
    if args.baseline:
        baseline_root = baseline_collections(args.baseline)
        cases.append(("delegate @%s" % args.baseline, True, baseline_root))
    fleet = BalancerFleet(4)
    table = []
    try:
        for label, delegate, collections in cases:
            cells = {}
            for lbs in (1, 4):
                secs = []
                for _run in range(args.runs):
                    fleet.reset()
                    secs.append(run(fleet, label.split()[0], lbs, delegate, collections))
                cells[lbs] = statistics.median(secs)
            table.append((label, cells[1], cells[4]))
    finally:
        fleet.close()
        if baseline_root:
            shutil.rmtree(baseline_root, ignore_errors=True)
    print("balancer role: drain (a %.0f s session held on %s through every balancer) then ready of %s;"
          % (HOLD, SERVER, SERVER))
    print("wall seconds of the role part (between marker tasks), median of %d runs, forks 10, loopback HAProxy %s"
          % (args.runs, "x4"))
    print("%-22s %10s %10s %12s" % ("mode", "1 LB s", "4 LB s", "4LB / 1LB"))
    for label, one, four in table:
        print("%-22s %10.2f %10.2f %11.2fx" % (label, one, four, four / one))
    return 0


if __name__ == "__main__":
    sys.exit(main())
