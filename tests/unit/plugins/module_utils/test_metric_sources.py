"""Unit tests for _rollout's metric sources: settings, the analysis act's
queries, request-log timings, dry-run and must-have-data judgement."""
import re

import pytest

from ansible_collections.grayrelease.canary.plugins.module_utils import _rollout as ro

APP_ERRORS = {"name": "app_errors", "kind": "ratio", "critical": True, "must_have_data": "yes",
              "errors_query": 'sum(increase(x_total{instance=~"$instances",code=~"5.."}[$window]))',
              "total_query": 'sum(increase(x_total{instance=~"$instances"}[$window]))'}
P50 = {"name": "p50", "query": 'q{server=~"$servers",proxy="$backend"}[$interval]', "step": 2}


def settings(**raw):
    errors = []
    got = ro.check_metric_settings(raw, errors)
    return got, errors


def test_metric_settings_defaults_are_off():
    got, errors = settings()
    assert errors == [] and got == {"haproxy_log": "", "prometheus_url": "", "prometheus_metrics": [],
                                    "metric_options": {}}


def test_metric_settings_normalised():
    got, errors = settings(canary_haproxy_log="/var/log/haproxy.log", canary_prometheus_url="http://prom:9090",
                           canary_prometheus_metrics=[APP_ERRORS, P50],
                           canary_metric_options={"probe_latency_ms": {"dry_run": "true", "tolerance": 0.5}})
    assert errors == []
    assert got["prometheus_metrics"][0]["options"] == {"critical": True, "must_have_data": True}
    assert got["prometheus_metrics"][1] == {"name": "p50", "kind": "samples", "query": P50["query"], "step": 2,
                                            "options": {}}
    assert got["metric_options"] == {"probe_latency_ms": {"dry_run": True, "tolerance": 0.5}}


@pytest.mark.parametrize("raw,word", [
    ({"canary_haproxy_log": "haproxy.log"}, "canary_haproxy_log='haproxy.log'"),
    ({"canary_prometheus_url": "prom:9090"}, "canary_prometheus_url: Prometheus URL 'prom:9090'"),
    ({"canary_prometheus_metrics": [P50]}, "canary_prometheus_url is not"),
    ({"canary_prometheus_url": "http://p", "canary_prometheus_metrics": [dict(P50, query='x{a="$instance"}')]},
     r"'p50': query: .*unknown placeholder \$instance "),
    ({"canary_prometheus_url": "http://p", "canary_prometheus_metrics": [dict(P50, kind="histogram")]},
     "kind 'histogram'"),
    ({"canary_prometheus_url": "http://p",
      "canary_prometheus_metrics": [{"name": "r", "kind": "ratio", "errors_query": "e"}]},
     "'r': total_query: query None"),
    ({"canary_prometheus_url": "http://p", "canary_prometheus_metrics": [dict(P50, name="probe_latency_ms")]},
     "'probe_latency_ms' is already used"),
    ({"canary_prometheus_url": "http://p", "canary_prometheus_metrics": [dict(P50, step=0)]}, "step 0"),
    ({"canary_prometheus_url": "http://p", "canary_prometheus_metrics": [dict(P50, colour=1)]},
     "unknown option 'colour'"),
    ({"canary_metric_options": {"http_5xx_ratio": {"dry_run": "maybe"}}}, "dry_run='maybe' must be true or false"),
    ({"canary_metric_options": ["x"]}, "canary_metric_options must be a dict"),
])
def test_metric_settings_errors_name_the_bad_value(raw, word):
    _got, errors = settings(**raw)
    assert len(errors) == 1 and re.search(word, errors[0]), errors


def test_analysis_sources_fill_placeholders_per_side():
    metric_settings, errors = settings(canary_haproxy_log="/var/log/haproxy.log",
                                       canary_prometheus_url="http://prom:9090",
                                       canary_prometheus_metrics=[APP_ERRORS, P50])
    assert errors == []
    canary = [("app1", "10.0.0.1:8080")]
    baseline = [("app2", "app2:8080"), ("app3", "app3:8080")]
    got = ro.analysis_sources(metric_settings, "web", canary, baseline, interval=10, count=3)
    assert got["log"] == {"path": "/var/log/haproxy.log", "window": 31.0, "servers": ["app1", "app2", "app3"]}
    queries = dict((q["name"], q) for q in got["prometheus"]["queries"])
    assert got["prometheus"]["window"] == 30.0 and len(queries) == 6
    assert queries["app_errors|canary|errors"] == {
        "name": "app_errors|canary|errors", "type": "instant",
        "query": 'sum(increase(x_total{instance=~"10[.]0[.]0[.]1:8080",code=~"5.."}[30s]))'}
    assert queries["app_errors|baseline|total"]["query"] == 'sum(increase(x_total{instance=~"app2:8080|app3:8080"}[30s]))'
    assert queries["p50|baseline"] == {"name": "p50|baseline", "type": "range", "step": 2,
                                       "query": 'q{server=~"app2|app3",proxy="web"}[10s]'}


def test_prometheus_instance_from_setting_or_sample_url():
    assert ro.prometheus_instance({"sample_url": "http://u:p@app1:8080/x"}) == "app1:8080"
    assert ro.prometheus_instance({"sample_url": "http://a/", "prometheus_instance": "a:9100"}) == "a:9100"


def log_result(**servers):
    return {"servers": dict((s, {"requests": len(v), "errors_5xx": 0, "response_ms": v, "total_ms": v})
                            for s, v in servers.items())}


def test_request_log_metric_and_report_merge_balancers():
    merged = ro.merge_logs({"lb1": log_result(app1=[300, 310], app2=[1, 2]), "lb2": log_result(app1=[305], app3=[2])},
                           ["app1", "app2", "app3"])
    assert merged["app1"]["response_ms"] == [300, 310, 305] and merged["app1"]["requests"] == 3
    report = ro.traffic_report(merged, ["app1"])
    assert report["app1"]["role"] == "canary" and report["app2"]["role"] == "baseline"
    assert report["app1"]["response_ms"] == {"count": 3, "p50": 305, "p95": 310, "max": 310}
    assert report["app1"]["response_ms_samples"] == [300, 310, 305]
    metrics = ro.analysis_metrics([], logs=merged, canary_servers=["app1"], baseline_servers=["app2", "app3"])
    assert metrics == [{"name": "traffic_latency_ms", "kind": "samples", "direction": "increase", "tolerance": 0.25,
                        "weight": 2, "min_samples": 20, "source": "haproxy_log",
                        "baseline": [1, 2, 2], "canary": [300, 310, 305]}]


def test_prometheus_metrics_from_answers():
    metric_settings, _errors = settings(canary_prometheus_url="http://p", canary_prometheus_metrics=[APP_ERRORS, P50])
    answers = {"app_errors|canary|errors": {"values": [4.7]}, "app_errors|canary|total": {"values": [60.2, 40.1]},
               "app_errors|baseline|errors": {"values": []}, "app_errors|baseline|total": {"values": [399.6]},
               "p50|canary": {"values": [1.0, 2.0]}}
    metrics = ro.analysis_metrics([], prometheus=answers, prometheus_specs=metric_settings["prometheus_metrics"])
    assert metrics[0] == {"name": "app_errors", "kind": "ratio", "source": "prometheus", "critical": True,
                          "must_have_data": True, "canary": {"errors": 5, "total": 100},
                          "baseline": {"errors": 0, "total": 400}}
    assert metrics[1]["canary"] == [1.0, 2.0] and metrics[1]["baseline"] == [] and metrics[1]["min_samples"] == 10


BASE = [{"name": "http_5xx_ratio", "kind": "ratio", "baseline": {"errors": 0, "total": 500},
         "canary": {"errors": 50, "total": 100}},
        {"name": "probe_latency_ms", "kind": "samples", "baseline": [1.0] * 30, "canary": [1.1] * 30}]


def test_options_disable_and_dry_run_builtin_metrics():
    metrics = ro.analysis_metrics(BASE, options={"http_5xx_ratio": {"dry_run": True},
                                                 "probe_latency_ms": {"enabled": False}})
    assert [(m["name"], m.get("dry_run"), m["source"]) for m in metrics] == [("http_5xx_ratio", True, "haproxy")]


def test_dry_run_is_observed_and_reported_not_judged():
    metrics = ro.analysis_metrics(BASE, options={"http_5xx_ratio": {"dry_run": True}})
    verdict = ro.judge_analysis(metrics)
    assert verdict["verdict"] == "pass" and verdict["score"] == 100
    observed = verdict["metrics"]["http_5xx_ratio"]
    assert observed["dry_run"] and observed["would_fail"] and not observed["failed"]
    assert observed["reason"].startswith("dry run, not judged: http_5xx_ratio: FAILED")
    assert verdict["sources"] == {"http_5xx_ratio": "haproxy", "probe_latency_ms": "probe"}
    # Judged, the same metric fails the canary.
    assert ro.judge_analysis(ro.analysis_metrics(BASE))["verdict"] == "fail"


def test_must_have_data_fails_a_metric_without_data_and_the_verdict():
    empty = {"name": "checkout", "kind": "ratio", "baseline": {"errors": 0, "total": 0},
             "canary": {"errors": 0, "total": 0}}
    passing = [BASE[1]]
    assert ro.judge_analysis(passing + [empty])["verdict"] == "pass"
    verdict = ro.judge_analysis(ro.analysis_metrics(passing + [empty], options={"checkout": {"must_have_data": True}}))
    assert verdict["verdict"] == "fail" and verdict["reason"].startswith("metric(s) without enough data, "
                                                                         "must_have_data: checkout")
    item = verdict["metrics"]["checkout"]
    assert item["classification"] == "nodata" and item["failed"] and item["must_have_data"]
    assert "checkout" in verdict["failed_metrics"]


def test_custom_metrics_join_and_are_checked():
    custom = [{"name": "queue", "kind": "samples", "baseline": [1] * 20, "canary": [1] * 20, "dry_run": "no"}]
    metrics = ro.analysis_metrics(BASE, custom=custom)
    assert metrics[-1] == dict(custom[0], dry_run=False, source="custom")
    assert ro.judge_analysis(metrics)["metrics"]["queue"]["classification"] == "pass"
    with pytest.raises(ro.RolloutError, match="already used"):
        ro.analysis_metrics(BASE, custom=[dict(custom[0], name="probe_latency_ms")])
    with pytest.raises(ro.RolloutError, match=r"canary_custom_metrics\[0\] must be a metric dict"):
        ro.analysis_metrics(BASE, custom=["queue"])
    with pytest.raises(ro.RolloutError, match="must_have_data=2 must be true or false"):
        ro.analysis_metrics(BASE, custom=[dict(custom[0], must_have_data=2)])


def test_everything_dry_run_is_inconclusive():
    verdict = ro.judge_analysis(ro.analysis_metrics(BASE[1:], options={"probe_latency_ms": {"dry_run": True}}))
    assert verdict["verdict"] == "inconclusive" and "dry-run" in verdict["reason"]
    assert verdict["metrics"]["probe_latency_ms"]["dry_run"]
