# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollout (grayrelease.canary.rollout) with canary_balancer_driver=nginx on the
ngx-* fleet: 2 real nginx balancers, 3 app hosts under systemd, mixed load (fast
requests plus 3 s requests that only a real drain saves) through ngx-lb1, and a
capacity monitor on each balancer reading the upstream file every 100 ms.
Runs after test_nginx_fleet.py (file order), from the fleet on v1."""
from __future__ import annotations

import json
import os
import subprocess
import time

from conftest import APPS, INVENTORY, SCENARIO, UPSTREAM_FILE, file_hash
from fleet_test import InContainer, Load, ansible_env, build_release, docker, pause_container, version_of

BALANCERS = ("ngx-lb1", "ngx-lb2")
MONITOR = os.path.join(SCENARIO, "files", "capacity_nginx.py")
# The release of the lost-balancer run and of the run that repairs it (another name to re-run those
# two tests alone on a fleet that has it already).
LOST_VERSION = os.environ.get("NGX_LOST_VERSION", "v7")
SETTINGS = {"canary_balancer_driver": "nginx", "canary_nginx_access_log": "/var/log/nginx/canary.log",
            "canary_analysis_count": 3, "canary_analysis_interval": 5, "canary_max_unavailable": 1,
            "canary_steps": [1, "100%"], "canary_traffic_percent": 25, "canary_drain_timeout": 30}


def command(tmp_path, version, artifact, **extra):
    settings = dict(SETTINGS, canary_version=version, canary_artifact=artifact,
                    canary_report_dir=str(tmp_path / "reports"))
    settings.update(extra)
    return ["ansible-playbook", "-i", INVENTORY, "grayrelease.canary.rollout", "-e", json.dumps(settings)]


def report_of(tmp_path):
    path = tmp_path / "reports" / "report.json"
    return json.loads(path.read_text()) if path.exists() else None


def rollout(tmp_path, version, artifact, **extra):
    t0 = time.monotonic()
    res = subprocess.run(command(tmp_path, version, artifact, **extra), env=ansible_env(), capture_output=True,
                         text=True, timeout=900, check=False)
    print(res.stdout[-4000:], res.stderr[-2000:])
    print("%s in %.1f s" % (version, time.monotonic() - t0))
    return res, report_of(tmp_path)


def down_servers(balancer):
    text = docker("exec", balancer, "cat", UPSTREAM_FILE).stdout
    return sorted(line.split("name=")[1].split()[0] for line in text.splitlines()
                  if "name=" in line and " down" in line.split("#")[0])


class Watched(object):
    """Mixed load through ngx-lb1 and the capacity monitor on each balancer, for one rollout."""

    def __enter__(self):
        self.load = Load("ngx-lb1", rate=20, duration=400, name="ngx-rollout-load", slow_rate=0.5, slow_seconds=3)
        self.monitors = dict((lb, InContainer(lb, MONITOR, "ngx-capmon", "--duration", "400")) for lb in BALANCERS)
        return self

    def __exit__(self, *exc):
        self.traffic = self.load.stop(wait=60)
        self.capacity = {}
        for lb, monitor in self.monitors.items():
            try:
                self.capacity[lb] = monitor.stop(wait=60)
            except AssertionError:
                self.capacity[lb] = None  # a paused balancer's monitor cannot answer
        print("load", json.dumps(self.traffic)[:800])
        print("capacity", json.dumps(self.capacity))
        return False

    def max_out(self):
        return max(c["max_out"] for c in self.capacity.values() if c)


def drain_evidence(report):
    return [batch.get("drain") for step in report["steps"] for batch in step.get("batches", []) if batch.get("drain")]


def test_promote_under_load_with_drain_evidence_and_never_more_than_the_cap_out(tmp_path):
    artifact = build_release("v2")
    with Watched() as watched:
        res, report = rollout(tmp_path, "v2", artifact)
    assert res.returncode == 0, res.stdout[-3000:]
    assert report["decision"] == "promoted"
    assert [version_of(h) for h in APPS] == ["v2"] * 3
    assert watched.traffic["failed"] == 0, watched.traffic
    assert watched.traffic["slow"]["requests"] > 0 and watched.traffic["slow"]["failed"] == 0
    assert watched.max_out() <= 1, watched.capacity
    evidence = json.dumps(drain_evidence(report))
    assert "proof" in evidence, evidence[:2000]
    assert [down_servers(lb) for lb in BALANCERS] == [[], []]


def test_a_5xx_canary_is_judged_failed_and_rolled_back(tmp_path):
    artifact = build_release("v3", "--error-rate", "0.5")
    with Watched() as watched:
        res, report = rollout(tmp_path, "v3", artifact)
    assert res.returncode != 0
    assert report["decision"] == "rolled_back", report["reason"]
    assert "judged" in report["reason"], report["reason"]
    assert [version_of(h) for h in APPS] == ["v2"] * 3
    # Only the canary's own requests fail: at most its error rate times its share of the traffic.
    total, failed = watched.traffic["requests"], watched.traffic["failed"]
    assert failed <= 0.5 * 0.25 * total * 1.5 + 5, watched.traffic
    assert watched.max_out() <= 1, watched.capacity
    assert [down_servers(lb) for lb in BALANCERS] == [[], []]


def test_a_crash_on_start_is_rolled_back_with_no_failed_request(tmp_path):
    artifact = build_release("v4", "--crash-on-start")
    with Watched() as watched:
        res, report = rollout(tmp_path, "v4", artifact)
    assert res.returncode != 0
    assert report["decision"] == "rolled_back", report["reason"]
    assert [version_of(h) for h in APPS] == ["v2"] * 3
    assert watched.traffic["failed"] == 0, watched.traffic
    assert watched.max_out() <= 1, watched.capacity
    assert [down_servers(lb) for lb in BALANCERS] == [[], []]


def test_a_configuration_nginx_refuses_changes_nothing(tmp_path):
    """An nginx whose configuration fails its test (an upstream host nobody can resolve, put
    there by someone else) refuses the first drain on it; no host is switched and every
    server ends in rotation, the upstream file on that balancer untouched."""
    bad = "/etc/nginx/conf.d/broken.conf"
    docker("exec", "ngx-lb2", "sh", "-c", "echo 'upstream broken { server no-such-host.invalid:80; }' > %s" % bad)
    before = file_hash("ngx-lb2")
    try:
        artifact = build_release("v5")
        res, report = rollout(tmp_path, "v5", artifact)
    finally:
        docker("exec", "ngx-lb2", "rm", "-f", bad)
    assert res.returncode != 0
    assert "no-such-host.invalid" in report["reason"] or "nginx" in report["reason"], report["reason"]
    assert [version_of(h) for h in APPS] == ["v2"] * 3
    assert file_hash("ngx-lb2") == before
    assert [down_servers(lb) for lb in BALANCERS] == [[], []]


def test_a_balancer_lost_mid_run_leaves_the_fleet_serving_through_the_other(tmp_path):
    artifact = build_release(LOST_VERSION)
    proc = None
    with Watched() as watched:
        proc = subprocess.Popen(command(tmp_path, LOST_VERSION, artifact), env=ansible_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            # Lose ngx-lb2 once the first drain is in place on it (bounded wait).
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and not down_servers("ngx-lb2"):
                time.sleep(0.2)
            assert down_servers("ngx-lb2"), "the rollout never drained a server on ngx-lb2"
            pause_container("ngx-lb2")
            out, _err = proc.communicate(timeout=600)
        finally:
            subprocess.run(["docker", "unpause", "ngx-lb2"], check=False, capture_output=True)
            if proc.poll() is None:
                proc.kill()
    print(out[-4000:])
    report = report_of(tmp_path)
    assert proc.returncode != 0
    assert "ngx-lb2" in report["lost"], report["lost"]
    # Through the balancer that stayed: every request answered, and nothing left out of rotation.
    assert watched.traffic["failed"] == 0, watched.traffic
    assert down_servers("ngx-lb1") == []
    assert watched.capacity["ngx-lb1"]["max_out"] <= 1, watched.capacity


def test_the_next_run_repairs_what_the_lost_balancer_kept_and_promotes(tmp_path):
    """What ngx-lb2 held when it was lost (a drain this run claimed) is repaired by the next run,
    which then finishes the rollout: every server in rotation on both balancers, one version."""
    with Watched() as watched:
        res, report = rollout(tmp_path, LOST_VERSION, build_release(LOST_VERSION))
    assert res.returncode == 0, res.stdout[-3000:]
    assert report["decision"] == "promoted"
    assert [version_of(h) for h in APPS] == [LOST_VERSION] * 3
    assert [down_servers(lb) for lb in BALANCERS] == [[], []]
    assert watched.traffic["failed"] == 0, watched.traffic
    assert watched.max_out() <= 1, watched.capacity
