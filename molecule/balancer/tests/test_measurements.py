# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verifier of the balancer scenario: what converge measured through lb1 (the
load goes through lb1 only, so that is where the figures are written)."""

import json

testinfra_hosts = ["lb1"]


def test_measurements(host):
    data = json.loads(host.file("/tmp/balancer-scenario.json").content_string)
    share = 100.0 * data["canary_delta"] / data["total_delta"]
    print("canary share %.2f %% of %d requests (target %s %%)" % (share, data["total_delta"], data["percent"]))
    assert data["total_delta"] >= 2000 and data["failed_requests"] == 0
    assert abs(share - data["percent"]) <= 3
    # the drain had a request held on frozen app1: it had to wait for it
    assert data["drain_waited"] >= 2
    assert data["health_waited"] > 0
