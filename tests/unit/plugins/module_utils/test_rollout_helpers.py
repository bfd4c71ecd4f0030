"""Unit tests for _rollout (balancer consensus, judge metrics) and _sample."""
import pytest

from ansible_collections.grayrelease.canary.plugins.module_utils import _rollout, _sample
from ansible_collections.grayrelease.canary.plugins.module_utils._health import HealthError, build_targets


def info(**servers):
    return {"backends": {"web": servers}}


def srv(admin="ready", weight=1, initial=1, status="UP", req=0, e5=0):
    return {"admin_state": admin, "weight": weight, "initial_weight": initial, "status": status,
            "req_tot": req, "hrsp_5xx": e5, "check_status": "L7OK"}


def test_consensus_all_agree():
    res = _rollout.balancer_consensus({"lb1": info(a=srv(), b=srv()), "lb2": info(a=srv(), b=srv())}, "web", ["a", "b"])
    assert res["missing"] == {} and res["disagree"] == [] and res["not_ready"] == [] and res["down"] == []
    assert res["servers"]["a"]["initial_weight"] == 1


def test_consensus_reports_disagreement_drain_down_and_missing():
    res = _rollout.balancer_consensus(
        {"lb1": info(a=srv(admin="drain"), b=srv(status="DOWN")), "lb2": info(a=srv())}, "web", ["a", "b"])
    assert res["missing"] == {"lb2": ["b"]}
    assert res["disagree"] == ["a: lb1 admin_state=drain weight=1, lb2 admin_state=ready weight=1"]
    assert res["not_ready"] == ["a"]
    assert res["down"] == ["b"]


def test_consensus_weight_off_initial_is_not_ready():
    res = _rollout.balancer_consensus({"lb1": info(a=srv(weight=5, initial=1))}, "web", ["a"])
    assert res["not_ready"] == ["a"]


def test_consensus_unknown_backend_names_it():
    with pytest.raises(_rollout.RolloutError, match="'nope'"):
        _rollout.balancer_consensus({"lb1": info(a=srv())}, "nope", ["a"])


def test_traffic_deltas_sum_balancers_and_survive_counter_reset():
    before = {"lb1": info(a=srv(req=100, e5=1), b=srv(req=50)), "lb2": info(a=srv(req=10), b=srv(req=5))}
    after = {"lb1": info(a=srv(req=130, e5=4), b=srv(req=80)), "lb2": info(a=srv(req=3), b=srv(req=9))}
    # lb2's counter for a went backwards (reload): counts from zero -> 3.
    assert _rollout.traffic_deltas(before, after, "web", ["a"]) == {"total": 33, "errors": 3}
    assert _rollout.traffic_deltas(before, after, "web", ["b"]) == {"total": 34, "errors": 0}


def test_traffic_deltas_reject_different_balancer_sets():
    with pytest.raises(_rollout.RolloutError, match="lb2"):
        _rollout.traffic_deltas({"lb1": info()}, {"lb1": info(), "lb2": info()}, "web", [])


def test_canary_metrics_builds_three_metrics_from_rounds():
    snap = {"lb1": info(a=srv(req=0), b=srv(req=0))}
    snap2 = {"lb1": info(a=srv(req=40, e5=20), b=srv(req=400, e5=0))}
    rounds = [
        {"http://a/": {"latencies_ms": [1.0, 2.0], "errors": 1, "total": 2},
         "http://b/": {"latencies_ms": [1.5], "errors": 0, "total": 1}},
        {"http://a/": {"latencies_ms": [3.0], "errors": 0, "total": 1},
         "http://b/": {"latencies_ms": [2.5], "errors": 0, "total": 1}},
    ]
    built = _rollout.canary_metrics(snap, snap2, "web", ["a"], ["b"], rounds, ["http://a/"], ["http://b/"], 5)
    metrics = {m["name"]: m for m in built}
    assert metrics["http_5xx_ratio"]["canary"] == {"total": 40, "errors": 20}
    assert metrics["http_5xx_ratio"]["baseline"] == {"total": 400, "errors": 0}
    assert metrics["probe_error_ratio"]["canary"] == {"errors": 1, "total": 3}
    assert metrics["probe_error_ratio"]["critical"] is True
    assert metrics["probe_latency_ms"]["canary"] == [1.0, 2.0, 3.0]
    assert metrics["probe_latency_ms"]["baseline"] == [1.5, 2.5]
    assert all(m["min_samples"] == 5 for m in metrics.values())


def test_canary_metrics_missing_probe_url_is_named():
    snap = {"lb1": info(a=srv())}
    with pytest.raises(_rollout.RolloutError, match="http://gone/"):
        _rollout.canary_metrics(snap, snap, "web", ["a"], [], [{}], ["http://gone/"], [])


class FakeClock(object):
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def _targets(*urls):
    defaults = dict(status_codes=[200], body_regex=None, json_query=None, json_expect=None, max_latency_ms=None,
                    rise=1, timeout=1.0, headers=None, validate_certs=True, ca_path=None)
    return build_targets(list(urls), defaults)


def test_sample_counts_every_outcome_and_spreads_rounds():
    clock = FakeClock()
    answers = {"http://a/": [(200, None, 5.0), (500, "status 500", 6.0), (None, "connection refused", None)],
               "http://b/": [(200, None, 1.0)] * 3}

    def fake_probe(target, timeout):
        return answers[target.url].pop(0)

    out = _sample.sample(_targets("http://a/", "http://b/"), count=3, duration=6.0, clock=clock,
                         sleep=clock.sleep, probe_func=fake_probe)
    assert out["http://a/"] == {"total": 3, "errors": 2, "latencies_ms": [5.0, 6.0],
                                "statuses": {"200": 1, "500": 1, "-": 1},
                                "reasons": ["status 500", "connection refused"]}
    assert out["http://b/"]["errors"] == 0 and out["http://b/"]["total"] == 3
    # Rounds 2 s apart over 6 s; no sleep after the last round.
    assert clock.sleeps == [2.0, 2.0]


def test_sample_starts_each_round_with_the_next_target():
    # The first request of a round is the slow one (thread start-up): each
    # target must take that place in turn, not the first one listed (the
    # canary, in the engine's and the verify role's lists) every time.
    clock = FakeClock()
    calls = []

    def fake_probe(target, timeout):
        calls.append(target.url)
        return (200, None, float(len(calls)))

    urls = ("http://canary/", "http://base1/", "http://base2/")
    # One worker: requests run in the order they were submitted.
    out = _sample.sample(_targets(*urls), count=4, duration=4.0, concurrency=1, clock=clock,
                         sleep=clock.sleep, probe_func=fake_probe)
    rounds = [calls[i:i + 3] for i in range(0, 12, 3)]
    assert [r[0] for r in rounds] == ["http://canary/", "http://base1/", "http://base2/", "http://canary/"], calls
    assert all(sorted(r) == sorted(urls) for r in rounds), calls
    # Each latency still lands with its own target, in the order it was measured.
    for url in urls:
        assert out[url]["latencies_ms"] == [float(i + 1) for i, called in enumerate(calls) if called == url]


@pytest.mark.parametrize("count,duration,needle", [(0, 1, "count 0"), (True, 1, "count True"), (1, -1, "duration -1")])
def test_sample_rejects_bad_arguments(count, duration, needle):
    with pytest.raises(HealthError, match=needle):
        _sample.sample(_targets("http://a/"), count=count, duration=duration)
