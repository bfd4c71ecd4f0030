# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""grayrelease.canary.health_check run on a balancer against the app hosts,
the way the rollout probes them (issue 3: health_check on the real fleet)."""

from __future__ import annotations

import json
import os

import testinfra

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
APPS = ["app%d" % i for i in range(1, 7)]


def health_check_from_lb1(**args):
    host = testinfra.get_host("ansible://lb1", ansible_inventory=INVENTORY)
    # Module arguments as JSON: ansible's -a takes it, and lists stay lists.
    return host.ansible("grayrelease.canary.health_check", json.dumps(args), check=False)


def test_every_app_host_is_healthy_seen_from_a_balancer():
    urls = ["http://%s:8080/healthz" % app for app in APPS]
    res = health_check_from_lb1(targets=urls, rise=2, interval=0.5, deadline=20)
    assert res.get("failed") is not True, res
    assert res["healthy"] == urls and res["unhealthy"] == []
    for url in urls:
        assert res["results"][url]["ok"] is True
        assert res["results"][url]["attempts"] >= 2
        assert res["results"][url]["latency_ms"]["max"] > 0


def test_version_json_query_and_a_closed_port_are_judged_per_target():
    targets = [{"url": "http://app1:8080/version", "json_query": "version", "json_expect": "v1"},
               {"url": "http://app2:8080/version", "json_query": "version", "json_expect": "v999"},
               "http://app3:9/healthz"]
    res = health_check_from_lb1(targets=targets, rise=1, interval=0.5, deadline=4, timeout=2,
                                fail_on_unhealthy=False)
    assert res["healthy"] == ["http://app1:8080/version"]
    assert sorted(res["unhealthy"]) == ["http://app2:8080/version", "http://app3:9/healthz"]
    assert "v999" in res["results"]["http://app2:8080/version"]["last_error"]
    assert "refused" in res["results"]["http://app3:9/healthz"]["last_error"]
