"""Helpers for the judge scenario: rollouts against the jdg-* fleet
(molecule/judge/inventory/hosts.yml) under bounded load, and its reports."""
import json
import os
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIO = os.path.dirname(HERE)
REPO = os.path.abspath(os.path.join(SCENARIO, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "molecule", "shared", "files"))
from fleet_test import Load, haproxy_state, reseed_fleet, run_timed, version_of  # noqa: E402  pylint: disable=wrong-import-position

INVENTORY = os.path.join(SCENARIO, "inventory", "hosts.yml")
APPS = ["jdg-app%d" % i for i in range(1, 4)]
BALANCER = "jdg-lb1"
MEASUREMENTS = os.path.join(REPO, ".build", "judge-measurements.jsonl")


def run_playbook(playbook, *extra, timeout=300):
    return run_timed(["ansible-playbook", "-i", INVENTORY, playbook] + list(extra), timeout)


def reseed():
    reseed_fleet(APPS, [BALANCER])
    for app in APPS:
        assert version_of(app) == "v1", app
    state = haproxy_state(BALANCER)
    assert all(s["admin_state"] == "ready" and s["weight"] == s["initial_weight"] for s in state.values()), state


def build_release(version, *flags):
    subprocess.run([os.path.join(REPO, "scripts", "build-release.sh"), version, "--out",
                    os.path.join(REPO, "dist")] + list(flags), check=True, capture_output=True, text=True,
                   timeout=120)
    return os.path.join(REPO, "dist", "demoapp-%s.tar.gz" % version)


def rollout(report_dir, version, artifact, settings, load_rate=40):
    """Reseed, then roll `version` out under load; returns (exit code, report, seconds)."""
    reseed()
    load = Load(BALANCER, rate=load_rate, duration=180, name="judge-load")
    try:
        time.sleep(2)  # traffic on every server before the canary's window
        res = run_playbook("grayrelease.canary.rollout", "-e", "canary_version=%s" % version,
                           "-e", "canary_artifact=%s" % artifact, "-e", "canary_report_dir=%s" % report_dir,
                           "-e", json.dumps(settings))
    finally:
        summary = load.stop()
    print("load:", json.dumps(summary)[:400])
    with open(os.path.join(str(report_dir), "report.json"), encoding="utf-8") as handle:
        report = json.load(handle)
    return res.returncode, report, res.seconds


def record(case, **figures):
    os.makedirs(os.path.dirname(MEASUREMENTS), exist_ok=True)
    with open(MEASUREMENTS, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(dict(figures, case=case, time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
                                sort_keys=True) + "\n")


@pytest.fixture
def report_dir(tmp_path):
    return tmp_path / "reports"
