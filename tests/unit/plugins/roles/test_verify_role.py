# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The verify role (DESIGN.md: health_check on the hosts, then, at the canary
stage, samples from haproxy_info deltas and probe latencies fed to
canary_judge) through ansible-playbook, against a real HAProxy on loopback
and its app servers. The rollout role judges through the engine; this role is
the building block for playbooks of one's own, and this is its test."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _balancer_lab import open_fleet, run_playbook  # noqa: E402
from _decisions_helpers import closed_port  # noqa: E402

pytestmark = [pytest.mark.haproxy, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab():
    yield from open_fleet(1)


def url(lab, server, path="/healthz"):
    return "http://127.0.0.1:%d%s" % (lab.labs["lb1"].apps[server].port, path)


def verify(lab, name, stage, role_vars):
    """The role once from localhost (the probe host), then its fact printed."""
    fact = "verify_health" if stage == "health" else "verify_judgement"
    play = {"name": name, "hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "Role verify", "ansible.builtin.include_role": {"name": "grayrelease.canary.verify"},
         "vars": dict(role_vars, verify_stage=stage, verify_probe_from="localhost")},
        {"name": "The fact", "ansible.builtin.debug": {"var": fact}}]}
    res = run_playbook(lab.inventory(), lab.write(name + ".json", [play]))
    return res, res.results("The fact").get("localhost", {}).get(fact)


def test_health_stage_passes_healthy_hosts_and_names_an_unhealthy_one(lab):
    res, health = verify(lab, "healthy", "health", {
        "verify_health_urls": [url(lab, "s1"), url(lab, "s2")], "verify_health_deadline": 10})
    assert res.rc == 0, res.explain()
    assert sorted(health["healthy"]) == sorted([url(lab, "s1"), url(lab, "s2")]) and health["unhealthy"] == []

    dead = "http://127.0.0.1:%d/healthz" % closed_port()
    res, health = verify(lab, "unhealthy", "health", {
        "verify_health_urls": [url(lab, "s1"), url(lab, "bad"), dead], "verify_health_deadline": 3})
    assert res.rc != 0 and health is None, health   # the role stops the play before the fact is printed
    failure = res.failures()["localhost"]
    # Each unhealthy target named, the healthy one not.
    assert url(lab, "bad") in failure and dead in failure and url(lab, "s1") not in failure, failure


@pytest.mark.parametrize("canary,verdicts", [("bad", {"fail"}), ("s3", {"pass", "marginal", "inconclusive"})])
def test_analysis_stage_judges_the_canary_against_the_baseline(lab, canary, verdicts):
    # The canary's samples answer 503 ("bad": its /healthz fails) or 200 like the baseline's.
    res, judgement = verify(lab, "analysis-" + canary, "analysis", {
        "verify_balancers": ["lb1"], "verify_socket": lab.labs["lb1"].admin, "verify_backend": "web",
        "verify_canary_servers": [canary], "verify_baseline_servers": ["s1", "s2"],
        "verify_canary_urls": [url(lab, canary)], "verify_baseline_urls": [url(lab, "s1"), url(lab, "s2")],
        "verify_interval": 1, "verify_count": 2, "verify_samples_per_interval": 6, "verify_min_samples": 6})
    assert res.rc == 0, res.explain()
    assert judgement["verdict"] in verdicts, judgement
    # The probes' error ratio is what tells them apart (no traffic went through HAProxy: nodata there).
    probe_errors = judgement["metrics"]["probe_error_ratio"]["reason"]
    assert ("FAILED" in probe_errors) == (canary == "bad"), probe_errors
    assert "nodata" in judgement["metrics"]["http_5xx_ratio"]["reason"], judgement["metrics"]["http_5xx_ratio"]
