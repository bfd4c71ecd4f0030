# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Same drain -> ready cycle with community.general.haproxy and with
grayrelease.canary.haproxy_server, against one real HAProxy on loopback.

Cycle 1: a request holding a session on s1 for HOLD seconds; drain+maint
(each module's "wait for sessions" mode), then ready with waiting.
Cycle 2: s1 breaks while in maintenance (its /healthz fails), then ready:
does the module report a server healthy that HAProxy is about to mark DOWN?

Run: .venv/bin/python bench/compare_haproxy.py   (needs haproxy, the venv's ansible)
Everything is loopback and bounded (ready waits <= 10 s, drains <= 30 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "unit", "plugins"))
from _haproxy_fixture import MISSING_MSG, HAProxyLab, find_haproxy  # noqa: E402

HOLD = 4.0


def tasks(impl, sock, step):
    if impl == "community.general.haproxy":
        common = {"socket": sock, "backend": "web", "host": "s1", "wait": True, "wait_interval": 1}
        if step == "drain":
            return dict(common, state="disabled", drain=True, wait_retries=30)
        return dict(common, state="enabled", wait_retries=10)
    common = {"socket": sock, "backend": "web", "servers": ["s1"]}
    if step == "drain":
        return dict(common, state="maint", drain_timeout=30)
    return dict(common, state="ready", health_timeout=10)


def run_step(impl, sock, step):
    play = [{"hosts": "localhost", "gather_facts": False,
             "tasks": [{"name": step, impl: tasks(impl, sock, step), "register": "r"},
                       {"ansible.builtin.debug": {"var": "r"}}]}]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as fh:
        json.dump(play, fh)
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    start = time.monotonic()
    proc = subprocess.run([os.path.join(REPO, ".venv", "bin", "ansible-playbook"), fh.name],
                          check=False, capture_output=True, text=True, env=env, timeout=120)
    elapsed = time.monotonic() - start
    os.unlink(fh.name)
    return elapsed, proc.returncode == 0


def main():
    binary = find_haproxy()
    if binary is None:
        print(MISSING_MSG)
        return 2
    rows = []
    for impl in ("community.general.haproxy", "grayrelease.canary.haproxy_server"):
        lab = HAProxyLab(binary, inter_ms=1000)
        try:
            thread, outcome = lab.hold_session("s1", HOLD)
            held_from = time.monotonic()
            t_drain, ok_drain = run_step(impl, lab.admin, "drain")
            session_alive = thread.is_alive()
            waited = ok_drain and not session_alive and time.monotonic() - held_from >= HOLD - 0.5
            thread.join(HOLD + 30)
            t_ready, ok_ready = run_step(impl, lab.admin, "ready")
            # cycle 2: broken while in maintenance
            run_step(impl, lab.admin, "drain")
            lab.apps["s1"].healthy = False
            t_bad, ok_bad = run_step(impl, lab.admin, "ready")
            time.sleep(2.5)
            final = lab.stat()["s1"]
            rows.append((impl, t_drain, waited, ok_drain, t_ready, ok_ready, t_bad, ok_bad, final))
        finally:
            lab.close()
    print("held session: %.0f s on s1; HAProxy check inter 1s rise 2 fall 2; times include ansible-playbook start"
          % HOLD)
    print("%-34s %8s %10s %8s %10s %22s"
          % ("module", "drain s", "waited?", "ready s", "ready ok", "broken server: ready"))
    for impl, t_drain, waited, ok_drain, t_ready, ok_ready, t_bad, ok_bad, final in rows:
        verdict = ("reported OK, HAProxy then says %s" % final) if ok_bad else ("failed (correct), %s" % final)
        print("%-34s %8.2f %10s %8.2f %10s   %.2f s %s"
              % (impl, t_drain, "yes" if waited else "NO", t_ready, ok_ready, t_bad, verdict))
    return 0


if __name__ == "__main__":
    sys.exit(main())
